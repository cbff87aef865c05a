//! `offload bench`: every strategy side by side on this machine. For each it starts the
//! processes it needs (this same executable), loads `/heavy` while probing `/health`,
//! samples CPU, memory and threads, follows queued jobs until they are done, stops
//! everything, and writes a report: a table on the terminal and a folder with raw data,
//! a Markdown summary and a self-contained HTML page. The limit each strategy is held
//! against is the work alone on all cores, calibrated before the first strategy and after
//! each one (see `limit`).

mod draw;
#[cfg(test)]
mod imports;
mod model;
#[cfg(test)]
mod planted;
mod run;

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;

use crate::load::Progress;
use crate::work::{Kind, Work};

use draw::{compare, flood as draw_flood, folder, mix as draw_mix, node as draw_node, verdict};
pub use model::{
    AllCore, Bracket, Calibration, LimitWarning, Machine, MaxSizes, NodeServer, QueueRun, Results,
    RowId, RunFlag, SCHEMA as RESULTS_SCHEMA, Serving, Settings, SingleThread, StrategyRun,
};
use run::calibrate::CalibrationPlan;
pub use run::calibrate::{CalibrationError, calibrate_all_cores, calibrate_single_thread};
use run::node;
pub use run::node::with_node;
pub use run::{flood, mix};

/// `offload bench --compare A B`: the comparison of two report folders, as printed.
///
/// # Errors
/// When a folder has no readable `results.json`.
pub fn compare_folders(a: &std::path::Path, b: &std::path::Path) -> anyhow::Result<String> {
    let changes = compare::compare(a, b)?;
    Ok(compare::render(a, b, &changes))
}

/// `YYYYMMDD-HHMMSS` in UTC, for report folder names.
pub fn timestamp() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A fresh report folder name: `offload-report/<date-time>`.
pub fn default_out() -> PathBuf {
    PathBuf::from("offload-report").join(timestamp())
}

/// Parses `kind:n` into work, with the size bounds the servers need to accept it: their
/// defaults, raised to n for its kind.
///
/// # Errors
/// Not `kind:n`, an unknown kind, or n out of range.
pub fn parse_work(spec: &str) -> anyhow::Result<(Work, MaxSizes)> {
    let (kind, n) = spec
        .split_once(':')
        .with_context(|| format!("--work {spec:?}: expected kind:n, like count:20000000"))?;
    let n: u64 = n
        .replace('_', "")
        .parse()
        .with_context(|| format!("--work {spec:?}: n must be a whole number"))?;
    let kind = match Kind::from_name(kind) {
        Some(kind) if kind != Kind::Fault => kind,
        _ => anyhow::bail!("--work: unknown kind {kind:?}: expected count, primes or hash"),
    };
    let sizes = MaxSizes::default().raised(kind, n);
    let work =
        Work::new(kind, n, &sizes.limits()).map_err(|e| anyhow::anyhow!("--work {spec:?}: {e}"))?;
    Ok((work, sizes))
}

/// Queues handed out by [`Settings::own_queue`] in this process: numbers them apart.
static OWN_QUEUES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Settings {
    /// These settings with a queue of one run's own, so that the job counts and the
    /// enqueue-to-done times the gateway reports (a histogram of every job the queue ever
    /// did) are this run's jobs only: the name `{queue_name}-{n}-{slug}` (`n` numbers this
    /// process's queues; cut to the longest name allowed), and for the embedded queue the file
    /// `queue-{slug}.db` beside the configured one, emptied first.
    ///
    /// # Errors
    /// Never for a `slug` of letters, digits and `-`; other characters become `-`.
    pub(crate) fn own_queue(&self, slug: &str) -> anyhow::Result<Settings> {
        let n = OWN_QUEUES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name: String = format!("{}-{n}-{slug}", self.queue_name)
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .take(crate::queue::MAX_NAME_LEN)
            .collect();
        let mut own = self.clone();
        own.queue_name = crate::queue::QueueName::new(name).context("a run's queue name")?;
        if let Some(path) = self.queue_url.strip_prefix("sqlite://") {
            let file = std::path::Path::new(path).with_file_name(format!("queue-{slug}.db"));
            remove_queue_file(&file);
            own.queue_url = format!("sqlite://{}", file.display());
        }
        Ok(own)
    }
}

/// The bench's SQLite queue files, deleted when the bench ends (the guard is dropped): the
/// runs' own `queue-*.db` beside the configured file, and the configured file itself when it
/// is the default one in the report folder. A file the user named with `--queue` stays.
struct QueueFiles {
    url: String,
    default: PathBuf,
}

impl Drop for QueueFiles {
    fn drop(&mut self) {
        let Some(path) = self.url.strip_prefix("sqlite://").map(std::path::Path::new) else {
            return;
        };
        if path == self.default {
            remove_queue_file(path);
        }
        let dir = path.parent().unwrap_or(std::path::Path::new("."));
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let ours = name.starts_with("queue-")
                && [".db", ".db-wal", ".db-shm"]
                    .iter()
                    .any(|e| name.ends_with(e));
            if ours {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// Deletes an embedded queue's file and its WAL and shared-memory files, if there.
pub(crate) fn remove_queue_file(file: &std::path::Path) {
    for ext in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", file.display()));
    }
}

/// Sizes the default mix's heavy part on this machine ([`mix::sized_default`]) from the
/// single-thread calibration of `count` (run here when the uniform work is another kind),
/// and raises the servers' size bound to it.
fn size_default_mix(
    settings: &mut Settings,
    work: &Work,
    single: &SingleThread,
    cores: usize,
    progress: &ProgressLine,
) -> anyhow::Result<()> {
    let per_unit_s = if work.kind() == Kind::Count {
        single.median_ms / 1e3 / work.n().max(1) as f64
    } else {
        let (sample, _) = parse_work(mix::COUNT_SAMPLE)?;
        let plan = CalibrationPlan::new(settings.quick);
        calibrate_single_thread(&sample, plan.single_thread_reps).median_ms
            / 1e3
            / sample.n().max(1) as f64
    };
    let budget = settings.auto_wait.unwrap_or(mix::AUTO_WAIT_DEFAULT);
    let spec = mix::sized_default(per_unit_s, cores, budget);
    let (parts, sizes) = mix::parse(&spec, parse_work)?;
    settings.max_sizes = settings.max_sizes.max(sizes);
    progress.done(&format!(
        "mix: its heavy part sized to about {:.1} s of all {cores} cores ({}x auto's {} ms budget): {spec}",
        mix::HEAVY_BUDGETS as f64 * budget.as_secs_f64(),
        mix::HEAVY_BUDGETS,
        budget.as_millis()
    ));
    settings.mix = parts;
    Ok(())
}

/// Of each strategy's runs, the one whose throughput is nearest the median (the lower middle
/// of an even count), in the strategies' first-run order.
fn nearest_median(runs: Vec<StrategyRun>) -> Vec<StrategyRun> {
    let mut order: Vec<RowId> = Vec::new();
    for r in &runs {
        if !order.contains(&r.measured.strategy) {
            order.push(r.measured.strategy);
        }
    }
    let mut out = Vec::new();
    for name in order {
        let mut mine: Vec<StrategyRun> = runs
            .iter()
            .filter(|r| r.measured.strategy == name)
            .cloned()
            .collect();
        mine.sort_by(|a, b| {
            a.measured
                .completed_per_s
                .total_cmp(&b.measured.completed_per_s)
        });
        out.push(mine.swap_remove((mine.len() - 1) / 2));
    }
    out
}

/// Runs the bench with validated `settings` on `work`, writing the report to `out`.
///
/// # Errors
/// A report folder that cannot be written, or a runtime that cannot start.
pub fn run(settings: Settings, work: Work, out: PathBuf) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    // A report folder used again holds no embedded queue of an earlier bench (each run's own
    // queue file, `queue-{run}.db`, is emptied before it starts: see `Settings::own_queue`),
    // and the queue files of this one go when it ends, however it ends.
    remove_queue_file(&out.join("queue.db"));
    let _queue_files = QueueFiles {
        url: settings.queue_url.clone(),
        default: out.join("queue.db"),
    };
    let machine = Machine::read();
    let cores = machine.cores;
    let plan = CalibrationPlan::new(settings.quick);
    let progress = ProgressLine::new();
    // Node, npm and Redis are checked (and the servers installed) before anything runs.
    let mut node = if settings.node {
        Some(node::prepare(&settings, &work, &progress)?)
    } else {
        None
    };
    progress.note(&format!("calibrating {} on one idle thread", settings.work));
    let single = calibrate_single_thread(&work, plan.single_thread_reps);
    progress.done(&format!(
        "one idle thread: {} takes {:.2} ms ({cores} cores x that would be {:.0} req/s; not the limit)",
        settings.work,
        single.median_ms,
        cores as f64 / (single.median_ms / 1e3).max(1e-12)
    ));
    let mut settings = settings;
    if settings.mix_default {
        size_default_mix(&mut settings, &work, &single, cores, &progress)?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores.max(2))
        .enable_all()
        .build()
        .context("building the async runtime")?;
    // Interleaved: every strategy once, then every strategy again, so a slow minute of a
    // shared machine falls on all of them alike.
    let order: Vec<RowId> = (0..settings.repeat)
        .flat_map(|_| settings.strategies.iter().copied())
        .collect();
    let n = order.len();
    // Children are started from this (main) thread inside block_on, so their parent-death
    // signal is tied to the bench process's life.
    let outcome = runtime.block_on(async {
        let interrupted = || anyhow::anyhow!("interrupted; all child processes stopped");
        let calibrate = |label: String| {
            progress.note(&format!("calibrating on all {cores} cores {label}"));
            plan.all_cores(work, cores)
        };
        let mut before = tokio::select! {
            r = calibrate("before the first strategy".into()) => r?,
            _ = tokio::signal::ctrl_c() => return Err(interrupted()),
        };
        progress.done(&format!("all-core limit: {}", show(&before)));
        let mut all_core = vec![before.clone()];
        let mut runs = Vec::new();
        let mut failures = Vec::new();
        for (i, &strategy) in order.iter().enumerate() {
            progress.note(&format!("[{}/{n}] {strategy}: starting", i + 1));
            // A Node row whose work runs in JavaScript comes with its own bracket: Node's
            // loop, calibrated around it.
            let (measured, node_bracket) = tokio::select! {
                r = run::node::run_strategy(node.as_mut(), strategy, &settings, &progress) => r?,
                _ = tokio::signal::ctrl_c() => return Err(interrupted()),
            };
            // Every strategy, failed or not, is followed by a calibration: it closes this
            // strategy's bracket and opens the next one's.
            let after = tokio::select! {
                r = calibrate(format!("after {strategy}")) => r?,
                _ = tokio::signal::ctrl_c() => return Err(interrupted()),
            };
            all_core.push(after.clone());
            match measured {
                Ok(m) => {
                    let bracket = node_bracket.unwrap_or_else(|| Bracket::new(before, after.clone()));
                    let run = StrategyRun::new(m, bracket);
                    progress.done(&format!(
                        "[{}/{n}] {strategy}: {:.0} req/s = {:.0}% of {:.0} req/s ({}all-core before {:.0}, after {:.0}){}",
                        i + 1,
                        run.measured.completed_per_s,
                        run.limit_fraction * 100.0,
                        run.limit.limit_per_s,
                        if strategy.node().is_some_and(NodeServer::on_node_loop) { "Node's " } else { "" },
                        run.limit.before.limit_per_s,
                        run.limit.after.limit_per_s,
                        if run.limit_warnings.is_empty() { "" } else { "; NOT RELIABLE, see the reading" }
                    ));
                    runs.push(run);
                }
                Err(e) => {
                    progress.done(&format!("[{}/{n}] {strategy}: failed: {e:#}; all-core after: {}", i + 1, show(&after)));
                    failures.push(model::Failure { strategy, error: format!("{e:#}") });
                }
            }
            before = after;
        }
        let mixed = if settings.mix.is_empty() {
            None
        } else {
            tokio::select! {
                r = mix::run(&settings, &settings.mix, cores, &progress) => Some(r?),
                _ = tokio::signal::ctrl_c() => return Err(interrupted()),
            }
        };
        let flooded = if settings.flood.is_empty() {
            None
        } else {
            // Every run of every round, not only those nearest the median: the flood's row at
            // the uniform -c takes them as its repeats.
            tokio::select! {
                r = flood::run(&settings, work, cores, &runs, &progress) => Some(r?),
                _ = tokio::signal::ctrl_c() => return Err(interrupted()),
            }
        };
        Ok((runs, failures, all_core, mixed, flooded))
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    let (all_runs, failures, all_core, mixed, flooded) = outcome?;
    let (runs, repeats) = if settings.repeat > 1 {
        let repeats = model::repeats(&all_runs);
        (nearest_median(all_runs), repeats)
    } else {
        (all_runs, Vec::new())
    };
    let calibration = Calibration::new(cores, single, all_core);
    let mut results = Results::new(
        machine,
        settings,
        calibration,
        runs,
        failures,
        started.elapsed(),
        repeats,
    );
    results.reading = draw::reading::read(&results);
    results.mix = mixed;
    results.flood = flooded;
    results.node = node.map(|setup| model::with_pairs(setup.report, &results.runs));
    let table = draw::text::table(&results);
    println!("{table}");
    for line in &results.reading {
        println!("- {line}");
    }
    for line in compare::repeat_lines(&results.repeats) {
        println!("- {line}");
    }
    if let Some(m) = &results.mix {
        println!("\n{}", draw_mix::table(m));
        for line in &m.reading {
            println!("- {line}");
        }
    }
    if let Some(f) = &results.flood {
        println!("\n{}", draw_flood::table(f));
        for line in &f.reading {
            println!("- {line}");
        }
    }
    if let Some(section) = draw_node::text(&results) {
        println!("\n{section}");
    }
    println!("\nverdict:");
    for line in verdict::verdict(&results) {
        println!("- {line}");
    }
    folder::write(&out, &results)
        .with_context(|| format!("writing the report to {}", out.display()))?;
    println!(
        "\nreport: {}/index.html (results.json, timeline.csv, README.md beside it); wall time {:.0}s",
        out.display(),
        results.wall_s
    );
    Ok(if results.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// One all-core calibration in a few words, for progress lines.
fn show(c: &AllCore) -> String {
    let readings: Vec<String> = c.readings_per_s.iter().map(|v| format!("{v:.0}")).collect();
    format!(
        "{:.0} req/s (median of {})",
        c.limit_per_s,
        readings.join(", ")
    )
}

/// How long the bench waits for one of its own requests (readiness, job counts, checks).
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// A GET on a fresh connection: (status, body).
///
/// # Errors
/// When the server cannot be reached or answers garbage within 5 s.
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, Vec<u8>)> {
    let r = crate::client::get(addr, path, HTTP_TIMEOUT).await?;
    Ok((r.status, r.body.to_vec()))
}

/// The progress display on stderr: a live line on a terminal, plain lines otherwise.
#[derive(Debug)]
pub struct ProgressLine {
    tty: bool,
}

impl ProgressLine {
    fn new() -> ProgressLine {
        ProgressLine {
            tty: std::io::stderr().is_terminal(),
        }
    }

    /// A passing note: overwritten on a terminal, its own line otherwise.
    pub fn note(&self, text: &str) {
        let mut e = std::io::stderr().lock();
        if self.tty {
            let _ = write!(e, "\r\x1b[2K{text}");
        } else {
            let _ = writeln!(e, "{text}");
        }
        let _ = e.flush();
    }

    /// A passing note shown on a terminal only (frequent updates would flood a pipe).
    pub fn live(&self, text: &str) {
        if self.tty {
            self.note(text);
        }
    }

    /// A line that stays.
    pub fn done(&self, text: &str) {
        let mut e = std::io::stderr().lock();
        if self.tty {
            let _ = writeln!(e, "\r\x1b[2K{text}");
        } else {
            let _ = writeln!(e, "{text}");
        }
    }

    /// Shows the heavy load's progress (elapsed, live req/s) until it ends. On a pipe it
    /// stays quiet: the per-strategy lines say enough.
    pub fn follow(
        &self,
        strategy: &str,
        mut rx: tokio::sync::watch::Receiver<Progress>,
    ) -> tokio::task::JoinHandle<()> {
        let (tty, strategy) = (self.tty, strategy.to_string());
        tokio::spawn(async move {
            let (mut last_n, mut last_t) = (0u64, Instant::now());
            let mut rate = 0.0;
            while rx.changed().await.is_ok() {
                let p = rx.borrow().clone();
                if p.done {
                    break;
                }
                let dt = last_t.elapsed().as_secs_f64();
                if dt >= 0.5 {
                    rate = (p.finished.saturating_sub(last_n)) as f64 / dt;
                    (last_n, last_t) = (p.finished, Instant::now());
                }
                if tty {
                    let phase = if p.warming_up {
                        "warming up"
                    } else {
                        "measuring"
                    };
                    eprint!(
                        "\r\x1b[2K{strategy}: {phase} {:.1}s, {:.0} req/s, {} done, {} failed",
                        p.elapsed.as_secs_f64(),
                        rate,
                        p.finished,
                        p.failed
                    );
                }
            }
        })
    }
}
