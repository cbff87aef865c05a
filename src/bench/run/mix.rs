//! The mixed scenario: light and heavy requests on the same endpoint, drawn by weight from
//! `--mix` with a fixed seed, sent in an open loop at a fixed share of the mix's all-core
//! limit, to `pool`, `queue` and `auto` in turn, and the light part alone to `pool` as the
//! baseline. Per kind of work it reports how the requests were answered (200, 202, 503,
//! 504), the answers' latency, and for those stored as jobs when they were done. On a mix the
//! figures that matter are the light requests' p99 and the heavy jobs' completion.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::calibrate::CalibrationPlan;
use crate::bench::ProgressLine;
use crate::bench::draw::mix::{brief, reading};
use crate::bench::model::{MaxSizes, MixPart, MixResults, MixRun, PartRun, RowId, Settings};
use crate::load::{self, Mode, Plan, Stop, Target};
use crate::strategy::Name;
use crate::work::Work;
use anyhow::Context;

/// The mix the default run adds beside the uniform scenario: nine light requests (about a
/// millisecond of counting) to one heavy, the seed's example. The heavy part given here is
/// its size on the machine this was written on; a run without `--mix` sizes it on its own
/// machine ([`sized_default`]).
pub const DEFAULT_MIX: &str = "count:2000000=90,count:2000000000=10";

/// The default mix's light part and weights, beside the heavy part [`sized_default`] sizes.
const DEFAULT_LIGHT: &str = "count:2000000";
const DEFAULT_LIGHT_WEIGHT: u32 = 90;
const DEFAULT_HEAVY_WEIGHT: u32 = 10;

/// The default mix's heavy part takes this many of `auto`'s wait budgets split over all the
/// cores (the pool splits one request over its threads): well past the budget on any machine,
/// so `auto` queues it however many cores share it. A fixed size would not do: a heavy part
/// that takes 1 s on 2 cores takes 30 ms on 64, and on a quick 2-core machine it came within
/// the 250 ms budget and ran in the pool.
pub const HEAVY_BUDGETS: u32 = 4;

/// `serve --auto-wait`'s default, which the bench's `auto` runs with unless `--auto-wait`.
pub const AUTO_WAIT_DEFAULT: Duration = Duration::from_millis(250);

/// The work timed on one thread to size the default mix when the uniform work is not `count`.
pub const COUNT_SAMPLE: &str = "count:20000000";

/// The default mix on this machine: `DEFAULT_LIGHT` and a heavy `count` that takes
/// [`HEAVY_BUDGETS`] x `budget` split over `cores` threads, at `per_unit_s` seconds per unit
/// on one thread; rounded to two significant digits.
pub fn sized_default(per_unit_s: f64, cores: usize, budget: Duration) -> String {
    let units = f64::from(HEAVY_BUDGETS) * budget.as_secs_f64() * cores.max(1) as f64
        / per_unit_s.max(1e-15);
    let heavy = round2(units.clamp(1e6, 1e15)) as u64;
    format!("{DEFAULT_LIGHT}={DEFAULT_LIGHT_WEIGHT},count:{heavy}={DEFAULT_HEAVY_WEIGHT}")
}

/// `x` rounded to two significant digits.
fn round2(x: f64) -> f64 {
    let scale = 10f64.powi(x.log10().floor() as i32 - 1);
    (x / scale).round() * scale
}

/// Share of the mix's all-core limit sent: a load the machine can carry, so the figures are
/// latency and completion, not a queue that only grows.
pub const MIX_LOAD: f64 = 0.5;

/// The strategies compared on the mix, in the bench's order: those that declare it
/// ([`Name::in_mix`]).
pub fn strategies() -> impl Iterator<Item = Name> {
    Name::GATEWAY.into_iter().filter(|n| n.in_mix())
}

/// The strategy the mix's baseline (its lightest part alone) runs on: the mix's one that
/// answers within the request, in the gateway's own process (`pool`).
fn baseline() -> Name {
    strategies()
        .find(|n| n.in_process())
        .expect("a strategy on the mix runs its work in-process")
}

/// Parses `kind:n=weight,...` with `parse_work` for each `kind:n`.
///
/// # Errors
/// A part that is not `kind:n=weight`, a weight that is not a whole number, no weight above 0.
pub fn parse(
    spec: &str,
    parse_work: impl Fn(&str) -> anyhow::Result<(Work, MaxSizes)>,
) -> anyhow::Result<(Vec<MixPart>, MaxSizes)> {
    let mut parts = Vec::new();
    let mut sizes = MaxSizes::default();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (work, weight) = item.rsplit_once('=').with_context(|| {
            format!("--mix {item:?}: expected kind:n=weight, like count:2000000=90")
        })?;
        let weight: u32 = weight
            .trim()
            .parse()
            .with_context(|| format!("--mix {item:?}: the weight must be a whole number"))?;
        let (w, more) = parse_work(work.trim()).with_context(|| format!("--mix {item:?}"))?;
        sizes = sizes.max(more);
        parts.push(MixPart {
            work: w.label(),
            query: w.query(),
            weight,
            units: w.n(),
            sample: Some(w),
        });
    }
    if parts.is_empty() || parts.iter().all(|p| p.weight == 0) {
        anyhow::bail!("--mix {spec:?}: give at least one kind:n=weight with a weight above 0");
    }
    if parts.len() > 16 {
        anyhow::bail!("--mix: at most 16 kinds of work");
    }
    Ok((parts, sizes))
}

/// The mix's all-core limit in requests per second: each kind's limit from one all-core
/// calibration of that kind (the smallest size of it in the mix, scaled by units), combined
/// by weight.
async fn limit(parts: &[MixPart], plan: CalibrationPlan, cores: usize) -> anyhow::Result<f64> {
    let total: f64 = parts.iter().map(|p| f64::from(p.weight)).sum();
    let mut secs_per_unit: BTreeMap<&str, f64> = BTreeMap::new();
    for p in parts {
        let work = p.sample.expect("parsed");
        let kind = work.kind().name();
        let smallest = parts
            .iter()
            .filter(|q| q.sample.is_some_and(|w| w.kind() == work.kind()))
            .min_by_key(|q| q.units)
            .expect("itself");
        if secs_per_unit.contains_key(kind) {
            continue;
        }
        let c = plan
            .all_cores(smallest.sample.expect("parsed"), cores)
            .await?;
        secs_per_unit.insert(
            kind,
            1.0 / (c.limit_per_s * smallest.units as f64).max(1e-12),
        );
    }
    // Seconds of the whole machine per request, on average over the mix.
    let per_request: f64 = parts
        .iter()
        .map(|p| {
            let kind = p.sample.expect("parsed").kind().name();
            f64::from(p.weight) / total * secs_per_unit[kind] * p.units as f64
        })
        .sum();
    Ok(1.0 / per_request.max(1e-12))
}

/// Runs the mixed scenario on [`strategies`], whatever `--strategies` says.
///
/// # Errors
/// A calibration that cannot run; a strategy that fails is reported in its place and the
/// rest still run.
pub async fn run(
    s: &Settings,
    parts: &[MixPart],
    cores: usize,
    progress: &ProgressLine,
) -> anyhow::Result<MixResults> {
    progress.note("mix: calibrating its kinds of work on all cores");
    let limit_per_s = limit(parts, CalibrationPlan::new(s.quick), cores).await?;
    let rate = s.mix_rate.unwrap_or(limit_per_s * MIX_LOAD);
    let spec = parts
        .iter()
        .map(|p| format!("{}={}", p.work, p.weight))
        .collect::<Vec<_>>()
        .join(",");
    progress.done(&format!(
        "mix {spec}: all-core limit {limit_per_s:.1} req/s; sending {rate:.1} req/s ({:.0}%)",
        rate / limit_per_s.max(1e-9) * 100.0
    ));
    let mut runs = Vec::new();
    let chosen: Vec<Name> = strategies().collect();
    let lightest = parts
        .iter()
        .filter(|p| p.weight > 0)
        .min_by_key(|p| p.units)
        .expect("a part");
    let total: f64 = parts.iter().map(|p| f64::from(p.weight)).sum();
    let mut rows: Vec<(RowId, Name, Vec<MixPart>, f64)> = chosen
        .iter()
        .map(|n| (RowId::Offload(*n), *n, parts.to_vec(), rate))
        .collect();
    let alone = vec![MixPart {
        weight: 1,
        ..lightest.clone()
    }];
    rows.push((
        RowId::LightAlone,
        baseline(),
        alone,
        rate * f64::from(lightest.weight) / total,
    ));
    for (label, name, parts, rate) in rows {
        progress.note(&format!("mix: {label}: starting"));
        match one(s, label, name, &parts, rate).await {
            Ok(r) => {
                progress.done(&format!("mix: {label}: {}", brief(&r)));
                runs.push(r);
            }
            Err(e) => progress.done(&format!("mix: {label}: failed: {e:#}")),
        }
    }
    let reading = reading(&runs, &lightest.work);
    Ok(MixResults {
        spec,
        seed: MIX_SEED,
        rate,
        limit_per_s,
        load_fraction: rate / limit_per_s.max(1e-9),
        runs,
        reading,
    })
}

/// The seed of the mix's draws: fixed, so every run sends the same sequence.
pub const MIX_SEED: u64 = 1;

async fn one(
    s: &Settings,
    label: RowId,
    name: Name,
    parts: &[MixPart],
    rate: f64,
) -> anyhow::Result<MixRun> {
    // Jobs of this run only: its own SQLite file or its own queue name.
    let slug: String = label
        .as_str()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let mut own = s.own_queue(&format!("mix-{slug}"))?;
    // Nothing refused for a full backlog: the mix is sent below the limit.
    own.max_backlog = own.max_backlog.max(100_000);
    let procs = super::scenario::start(name, &own).await?;
    let gateway = procs.last().expect("a gateway").addr();
    for p in procs.iter().filter(|p| p.addr.is_some()) {
        super::scenario::wait_healthy(p.addr(), &p.role).await?;
    }
    let paths: Vec<String> = parts
        .iter()
        .map(|p| format!("/heavy?{}", p.query))
        .collect();
    let weighted: Vec<(&str, u32)> = paths
        .iter()
        .map(String::as_str)
        .zip(parts.iter().map(|p| p.weight))
        .collect();
    let mix_plan = Plan::new(
        Target::parse(&format!("http://{gateway}{}", paths[0]), false)?,
        Mode::Open {
            rate,
            connections: s.connections,
            stop: Stop::Duration(s.duration),
        },
    )?
    .with_mix(&weighted, MIX_SEED)?
    // No warm-up: its jobs would be counted with the measured ones. The servers start from
    // their startup calibration, as after a deploy.
    .with_timeout(s.timeout)?;
    let probe_plan = super::scenario::probe_plan(gateway, s)?;
    let began = Instant::now();
    let (mixed, probe) = tokio::join!(load::run_mix(&mix_plan, None), load::run(&probe_plan, None));
    let (_, by_part) = mixed.context("the mixed load")?;
    let probe = probe.context("the /health probe")?;
    let queued = name.helper() == Some(crate::strategy::Helper::Worker);
    let (drain_s, drained, summary) = if queued {
        let load_end = Instant::now();
        let end = load_end + s.drain_timeout;
        let drained = loop {
            let c = super::scenario::job_counts(gateway).await?;
            if c.queued + c.running == 0 {
                break true;
            }
            if Instant::now() >= end {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let summary = super::scenario::jobs_summary(gateway, "/jobs?latency=100000").await?;
        (
            Some(load_end.elapsed().as_secs_f64()),
            drained,
            Some(summary),
        )
    } else {
        (None, true, None)
    };
    let span = began.elapsed().as_secs_f64();
    for p in procs.into_iter().rev() {
        p.stop(Duration::from_secs(5));
    }
    let parts = parts
        .iter()
        .zip(by_part)
        .map(|(p, r)| {
            let spread = summary
                .as_ref()
                .and_then(|j| j.by_work.get(&p.work))
                .cloned();
            PartRun::new(p, &r, spread, span)
        })
        .collect();
    Ok(MixRun {
        strategy: label,
        rate,
        parts,
        health: probe.latency_with_timeouts,
        drain_s,
        drained,
    })
}

/// The goals of the mix, read off the runs: the light requests' p99 under `auto` against the
/// light work alone at the same rate, and the heavy jobs' completion against `queue`'s.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::work::Kind;

    /// The strategies that declare they belong on the mix, in the bench's order, and the
    /// baseline's.
    #[test]
    fn the_mix_compares_pool_queue_and_auto_with_pool_as_its_baseline() {
        let names: Vec<&str> = strategies().map(Name::as_str).collect();
        assert_eq!(names, ["pool", "queue", "auto"]);
        assert_eq!(baseline().as_str(), "pool");
    }

    fn parse_work(spec: &str) -> anyhow::Result<(Work, MaxSizes)> {
        let (k, n) = spec.split_once(':').context("kind:n")?;
        anyhow::ensure!(k == "count", "count only here");
        let n: u64 = n.parse()?;
        let sizes = MaxSizes::default().raised(Kind::Count, n);
        Ok((Work::new(Kind::Count, n, &sizes.limits())?, sizes))
    }

    #[test]
    fn the_default_heavy_part_takes_four_budgets_over_all_cores_on_any_machine() {
        // 2.4e-10 s per unit (this 2-core VM): 4 x 250 ms x 2 cores = 2 s of one thread.
        let spec = sized_default(2.425e-10, 2, Duration::from_millis(250));
        assert_eq!(spec, "count:2000000=90,count:8200000000=10");
        // 64 cores: 32 times the units, still a second of the whole machine.
        let spec = sized_default(2.425e-10, 64, Duration::from_millis(250));
        assert_eq!(spec, "count:2000000=90,count:260000000000=10");
        // A machine twice as fast: twice the units, the same time.
        let spec = sized_default(1.2125e-10, 2, Duration::from_millis(250));
        assert_eq!(spec, "count:2000000=90,count:16000000000=10");
        // A longer budget grows it in step.
        let spec = sized_default(2.425e-10, 2, Duration::from_secs(1));
        assert_eq!(spec, "count:2000000=90,count:33000000000=10");
        assert!(parse(&spec, crate::bench::parse_work).is_ok());
    }

    #[test]
    fn a_mix_spec_is_parsed_with_its_weights_and_size_flags() {
        let (parts, sizes) = parse(DEFAULT_MIX, parse_work).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(
            (parts[0].work.as_str(), parts[0].weight),
            ("count:2000000", 90)
        );
        assert_eq!(parts[1].query, "work=count&n=2000000000");
        assert_eq!(
            sizes,
            MaxSizes::default(),
            "no part is above the servers' bounds"
        );
        for bad in ["", "count:5", "count:5=x", "count:5=0", "primes:5=1"] {
            assert!(parse(bad, parse_work).is_err(), "{bad:?}");
        }
    }
}
