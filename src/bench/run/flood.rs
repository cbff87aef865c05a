//! The flood scenario: past the machine's limit, where does its time go? The seed's load is
//! a closed loop that resends at once, so a cheap refusal comes straight back. For each of
//! `--flood-strategies` it runs the uniform scenario's harness (processes, warm-up, the
//! `/health` probe, /proc sampling, the queue's accept phase) at each `--flood` connection
//! count, plus the largest count with a client that honours `Retry-After`, and reports per
//! row the goodput (work done per second in the load window), the refusals per second and
//! the CPU the gateway spent meanwhile. With `--repeat N` every row runs N times, in rounds,
//! and shows its repeat with the median goodput beside the spread of all of them.

use std::time::Duration;

use super::calibrate::CalibrationPlan;
use crate::bench::ProgressLine;
use crate::bench::draw::flood::{brief, honour_label, round_label};
use crate::bench::draw::flood_reading::reading;
use crate::bench::model::{
    Bracket, FloodFailure, FloodResults, FloodRow, Measured, RowId, Settings, StrategyRun,
    median_of, reusable,
};
use crate::load::MAX_CONNECTIONS;
use crate::strategy::Name;
use crate::work::Work;
use anyhow::Context;

/// The connection counts of the default flood: the seed's `-c 100`, and ten times that.
pub const DEFAULT_FLOOD: &str = "100,1000";

/// The strategies flooded by default, in the bench's order: those that declare it
/// ([`Name::in_flood`]), the ones that refuse when full (`pool`, `remote`, `queue`) and the
/// one that should not have to (`auto`). `inline`, `spawn` and `blocking` never refuse: a
/// flood only makes them slower, which the uniform scenario already shows.
pub fn strategies() -> impl Iterator<Item = Name> {
    Name::GATEWAY.into_iter().filter(|n| n.in_flood())
}

/// Parses `--flood`: comma-separated connection counts, each from 1 to the load generator's
/// maximum; returned sorted, without repeats.
///
/// # Errors
/// A count that is not a whole number in range, or none at all.
pub fn parse(spec: &str) -> anyhow::Result<Vec<u32>> {
    let mut counts = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let c: u32 = item
            .parse()
            .ok()
            .filter(|c| (1..=MAX_CONNECTIONS).contains(c))
            .with_context(|| {
                format!(
                    "--flood {item:?}: expected connection counts from 1 to {MAX_CONNECTIONS}, like {DEFAULT_FLOOD}, or none"
                )
            })?;
        counts.push(c);
    }
    anyhow::ensure!(
        !counts.is_empty(),
        "--flood {spec:?}: give at least one connection count, or none"
    );
    counts.sort_unstable();
    counts.dedup();
    Ok(counts)
}

/// The flood's rows of one strategy, in the order they run: each count, then the largest
/// with the honouring client.
fn row_plan(counts: &[u32]) -> Vec<(u32, bool)> {
    let top = counts.iter().copied().max().unwrap_or(1);
    counts
        .iter()
        .map(|c| (*c, false))
        .chain([(top, true)])
        .collect()
}

/// Runs the flood on `s.flood_strategies`, `s.repeat` rounds of every row. Rows at the
/// uniform scenario's `-c` reuse its runs of that strategy when it has one per round (its
/// round r is the row's round r). The all-core limit is calibrated before the first strategy
/// and after each one's rows in each round.
///
/// # Errors
/// A calibration that cannot run; a row that fails is reported in its place and the rest
/// still run.
pub async fn run(
    s: &Settings,
    work: Work,
    cores: usize,
    uniform: &[StrategyRun],
    progress: &ProgressLine,
) -> anyhow::Result<FloodResults> {
    let plan = CalibrationPlan::new(s.quick);
    let calibrate = |label: String| {
        progress.note(&format!("flood: calibrating on all {cores} cores {label}"));
        plan.all_cores(work, cores)
    };
    let mut before = calibrate("before it".into()).await?;
    let rows_of = row_plan(&s.flood);
    let rounds = s.repeat.max(1);
    let n = rows_of.len() * s.flood_strategies.len() * rounds as usize;
    // Each row's repeats (round, row), strategy by strategy, each in `rows_of` order.
    let mut measured: Vec<Vec<(u32, FloodRow)>> =
        vec![Vec::new(); rows_of.len() * s.flood_strategies.len()];
    let mut failures = Vec::new();
    let mut i = 0;
    // Interleaved as the uniform scenario's strategies are: every row once, then every row
    // again, so a slow minute of a shared machine falls on all rows alike.
    for round in 1..=rounds {
        for (k, strategy) in s.flood_strategies.iter().enumerate() {
            let strategy = *strategy;
            let reused = reusable(uniform, strategy, rounds);
            // (row index, connections, honour, measured here or reused)
            let mut got: Vec<(usize, u32, bool, Result<Measured, &StrategyRun>)> = Vec::new();
            for (j, &(c, honour)) in rows_of.iter().enumerate() {
                i += 1;
                let label = format!(
                    "[{i}/{n}] {strategy} -c {c}{}{}",
                    honour_label(honour),
                    round_label(round, rounds)
                );
                if let (false, true, Some(runs)) = (honour, c == s.connections, &reused) {
                    progress.done(&format!(
                        "flood: {label}: the uniform scenario's run, reused"
                    ));
                    got.push((j, c, honour, Err(runs[round as usize - 1])));
                    continue;
                }
                progress.note(&format!("flood: {label}: starting"));
                match one(s, strategy, c, honour, progress).await {
                    Ok(m) => got.push((j, c, honour, Ok(m))),
                    Err(e) => {
                        progress.done(&format!("flood: {label}: failed: {e:#}"));
                        failures.push(FloodFailure {
                            strategy,
                            connections: c,
                            honor_retry_after: honour,
                            round,
                            error: format!("{e:#}"),
                        });
                    }
                }
            }
            let bracket = if got.iter().any(|(.., m)| m.is_ok()) {
                let after = calibrate(format!("after {strategy}")).await?;
                let b = Bracket::new(before, after.clone());
                before = after;
                Some(b)
            } else {
                None
            };
            for (j, c, honour, m) in got {
                let row = match m {
                    Ok(m) => {
                        let b = bracket.clone().expect("calibrated after a measured row");
                        FloodRow::new(&StrategyRun::new(m, b), honour, false, cores)
                    }
                    Err(run) => FloodRow::new(run, false, true, cores),
                };
                progress.done(&format!(
                    "flood: {strategy} -c {c}{}{}: {}",
                    honour_label(honour),
                    round_label(round, rounds),
                    brief(&row)
                ));
                measured[k * rows_of.len() + j].push((round, row));
            }
        }
    }
    Ok(gather(&s.flood, rounds, cores, measured, failures))
}

/// The flood's results from each row's repeats `(round, row)`, in the order the rows ran:
/// each row shows its repeat with the median goodput, with the spread of them all.
pub(crate) fn gather(
    counts: &[u32],
    repeat: u32,
    cores: usize,
    measured: Vec<Vec<(u32, FloodRow)>>,
    failures: Vec<FloodFailure>,
) -> FloodResults {
    let rows: Vec<FloodRow> = measured.into_iter().filter_map(median_of).collect();
    FloodResults {
        connections: counts.to_vec(),
        honour_connections: counts.iter().copied().max().unwrap_or(0),
        cores,
        repeat,
        reading: reading(&rows, counts, repeat),
        rows,
        failures,
    }
}

/// `, round r of N` with `--repeat`, nothing without.
async fn one(
    s: &Settings,
    strategy: RowId,
    c: u32,
    honour: bool,
    progress: &ProgressLine,
) -> anyhow::Result<Measured> {
    let slug = format!("{strategy}-c{c}{}", if honour { "-ra" } else { "" });
    let mut own = s.own_queue(&format!("flood-{slug}"))?;
    own.connections = c;
    own.honor_retry_after = honour;
    let file = own
        .queue_url
        .strip_prefix("sqlite://")
        .map(std::path::PathBuf::from);
    if file.is_some() {
        own.drain_timeout = Duration::ZERO;
    }
    let measured = super::scenario::run(strategy, &own, progress).await;
    if let Some(file) = &file {
        crate::bench::remove_queue_file(file);
    }
    measured
}

/// A rate for a sentence: whole numbers from 10 up, one decimal below (3 refusals in a 10 s
/// window are 0.3/s, not 0).
#[cfg(test)]
mod tests {
    use super::*;

    /// The strategies that declare they belong in the flood, in the bench's order.
    #[test]
    fn the_flood_runs_those_that_refuse_when_full_and_auto() {
        let names: Vec<&str> = strategies().map(Name::as_str).collect();
        assert_eq!(names, ["pool", "remote", "queue", "auto"]);
    }

    #[test]
    fn flood_counts_parse_sorted_and_in_range() {
        assert_eq!(parse(DEFAULT_FLOOD).unwrap(), [100, 1000]);
        assert_eq!(parse(" 1000, 50,50 ").unwrap(), [50, 1000]);
        for bad in ["", "0", "x", "100,-1", "20000", "1.5"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            row_plan(&[50, 200]),
            [(50, false), (200, false), (200, true)]
        );
    }
}
