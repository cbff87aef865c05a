//! `offload bench --quick` end to end: a row per strategy, a results.json that matches its
//! committed schema, an HTML page, and no process left behind; and the calibration of the
//! limit against a machine that gets busier.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use offload::bench::{AllCore, Bracket, LimitWarning, SingleThread};
use offload::work::{Kind, Limits, Work};

use serde_json::Value;

/// Processes (other than us) whose environment carries `mark`.
fn processes_with(mark: &str) -> Vec<String> {
    let needle = format!("OFFLOAD_BENCH_TEST_MARK={mark}");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let pid = entry.file_name().to_string_lossy().to_string();
        if !pid.bytes().all(|b| b.is_ascii_digit()) || pid == std::process::id().to_string() {
            continue;
        }
        if let Ok(env) = std::fs::read(Path::new("/proc").join(&pid).join("environ"))
            && env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes())
        {
            found.push(pid);
        }
    }
    found
}

pub fn run_quick_bench(out: &Path, strategies: &str) -> (Value, String) {
    let (results, stdout, _) = run_quick_bench_with(out, strategies, &[]);
    (results, stdout)
}

/// [`run_quick_bench`] with more flags; also gives the progress lines (stderr).
pub fn run_quick_bench_with(
    out: &Path,
    strategies: &str,
    extra: &[&str],
) -> (Value, String, String) {
    let mark = format!("{}-{}", std::process::id(), out.display());
    let output = Command::new(env!("CARGO_BIN_EXE_offload"))
        .args([
            "bench",
            "--quick",
            "--strategies",
            strategies,
            "--work",
            "count:2000000",
            "-c",
            "50",
        ])
        .args(extra)
        .arg("--out")
        .arg(out)
        .env("OFFLOAD_BENCH_TEST_MARK", &mark)
        .output()
        .expect("run offload bench");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "bench failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        processes_with(&mark),
        Vec::<String>::new(),
        "the bench left processes behind"
    );
    // Its queue files go with the run: the folder holds the report only.
    let left: Vec<String> = std::fs::read_dir(out)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.contains(".db"))
        .collect();
    assert_eq!(left, Vec::<String>::new(), "queue files left in the report");
    let results: Value =
        serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    (
        results,
        stdout,
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

#[test]
fn quick_bench_reports_every_strategy_and_cleans_up() {
    let _serial = crate::support::exclusive_blocking();
    let dir = tempfile::tempdir().unwrap();
    let strategies = ["inline", "spawn", "blocking", "pool", "remote", "queue"];
    let (results, stdout) = run_quick_bench(dir.path(), &strategies.join(","));

    let schema: Value = serde_json::from_str(offload::bench::RESULTS_SCHEMA).unwrap();
    assert_eq!(
        crate::load::schema::validate(&schema, &results),
        Vec::<String>::new()
    );
    let load_schema: Value = serde_json::from_str(offload::load::REPORT_SCHEMA).unwrap();
    let runs = results["runs"].as_array().unwrap();
    check_limits(&results, &stdout);
    let names: Vec<&str> = runs
        .iter()
        .map(|r| r["strategy"].as_str().unwrap())
        .collect();
    assert_eq!(names, strategies);
    // The schema no longer lists names: each must be a strategy the code knows.
    for name in &names {
        assert!(offload::strategy::Name::parse(name).is_some(), "{name}");
    }
    for run in runs {
        let name = run["strategy"].as_str().unwrap();
        assert!(
            stdout.lines().any(|l| l.starts_with(name)),
            "no table row for {name}:\n{stdout}"
        );
        assert!(
            run["completed"].as_u64().unwrap() > 0,
            "{name} completed nothing"
        );
        for report in ["heavy", "bystander"] {
            assert_eq!(
                crate::load::schema::validate(&load_schema, &run[report]),
                Vec::<String>::new(),
                "{name} {report}"
            );
        }
        assert!(
            run["peak_threads"].as_u64().unwrap() > 0,
            "{name} was not sampled"
        );
        // Every request sent is in the row: the unfinished ones beside the rest.
        let q = &run["heavy"]["requests"];
        let n = |k: &str| q[k].as_u64().unwrap();
        assert_eq!(
            run["unfinished"].as_u64(),
            Some(n("aborted_at_deadline") + n("unsent_at_deadline")),
            "{name}"
        );
        assert_eq!(
            n("sent"),
            n("completed") + n("timeouts") + n("errors") + n("aborted_at_deadline"),
            "{name}"
        );
    }
    assert!(stdout.contains("err/timeout/!2xx/unfinished"), "{stdout}");
    let p99 = |name: &str| {
        runs.iter().find(|r| r["strategy"] == name).unwrap()["bystander"]["latency_with_timeouts"]["p99"]
            .as_f64()
            .unwrap()
    };
    assert!(
        p99("inline") > 5.0 * p99("pool") && p99("inline") > 20.0,
        "inline /health p99 {} ms vs pool {} ms",
        p99("inline"),
        p99("pool")
    );

    for file in ["README.md", "timeline.csv", "index.html"] {
        assert!(
            dir.path().join(file).metadata().unwrap().len() > 100,
            "{file} is missing or empty"
        );
    }
    let html = std::fs::read_to_string(dir.path().join("index.html")).unwrap();
    // Eight charts for every run (CPU and memory per second among them), and the queue's
    // backlog over time.
    assert_eq!(html.matches("<svg class=\"chart\"").count(), 9);
    assert!(
        html.contains("id=\"chart-timeline-cpu\"") && html.contains("id=\"chart-timeline-memory\"")
    );
    assert!(html.contains("id=\"chart-queue-backlog\""));

    // The queue's story: an accept phase the cap cannot bind (all 202), then cumulative
    // accepted and finished jobs that meet at the end of the drain.
    let q = &runs.iter().find(|r| r["strategy"] == "queue").unwrap()["queue"];
    let phase = &q["accept_phase"];
    assert_eq!(phase["accepted"], phase["requests"], "{phase}");
    assert_eq!(phase["refused"], 0, "{phase}");
    assert!(phase["accepted_per_s"].as_f64().unwrap() > 0.0);
    let backlog = q["backlog"].as_array().unwrap();
    assert!(backlog.len() >= 4, "{} backlog readings", backlog.len());
    let last = backlog.last().unwrap();
    assert_eq!(q["drained"], true);
    assert_eq!(
        last["accepted"], last["finished"],
        "drained: every accepted job finished ({last})"
    );
    assert!(
        last["accepted"].as_u64().unwrap() >= phase["accepted"].as_u64().unwrap(),
        "the accept phase's jobs are in the count"
    );
    assert!(
        stdout.contains("while its backlog had room"),
        "the reading gives the unbound accept rate:\n{stdout}"
    );

    // A person's view: the verdict first, a real table with a row per strategy.
    assert!(stdout.contains("\nverdict:\n"), "{stdout}");
    // inline stalls /health by design (asserted above): its line in the verdict says so.
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("- inline: ") && l.contains("It stalls light requests")),
        "{stdout}"
    );
    assert!(html.contains("<h2>Verdict for this machine and this work</h2>"));
    assert!(html.contains("<table class=\"runs\">"));
    for name in strategies {
        assert!(
            html.contains(&format!("<tr><td>{name}</td>")),
            "no table row for {name}"
        );
    }
    render_in_chromium(&dir.path().join("index.html"), 9);

    // --compare of a folder with itself: every figure unchanged.
    let same = compare(dir.path(), dir.path());
    assert!(
        same.contains("no figure changed beyond the run-to-run spread"),
        "{same}"
    );
    assert!(!same.contains("yes:"), "{same}");
    assert!(same.contains("pool      req/s"), "{same}");
    // A planted 2x in pool's throughput is flagged, and nothing else.
    let planted = tempfile::tempdir().unwrap();
    let mut doubled = results.clone();
    for run in doubled["runs"].as_array_mut().unwrap() {
        if run["strategy"] == "pool" {
            let v = run["completed_per_s"].as_f64().unwrap();
            run["completed_per_s"] = serde_json::json!(v * 2.0);
        }
    }
    std::fs::write(
        planted.path().join("results.json"),
        serde_json::to_vec(&doubled).unwrap(),
    )
    .unwrap();
    let diff = compare(dir.path(), planted.path());
    let flagged: Vec<&str> = diff.lines().filter(|l| l.contains("yes:")).collect();
    assert_eq!(flagged.len(), 1, "{diff}");
    assert!(
        flagged[0].starts_with("pool      req/s") && flagged[0].contains("+100%"),
        "{diff}"
    );
    assert!(
        diff.contains("1 figure(s) changed beyond the run-to-run spread"),
        "{diff}"
    );
    assert!(
        !html.contains("http://") || !html.contains("<script src"),
        "the page must not load anything"
    );
}

/// The limit as the bench must report it: an all-core calibration before the first strategy
/// and after each, each strategy against the mean of the two around it, flags shown.
fn check_limits(results: &Value, stdout: &str) {
    let calibration = &results["calibration"];
    let all_core = calibration["all_core"].as_array().unwrap();
    let runs = results["runs"].as_array().unwrap();
    assert_eq!(
        all_core.len(),
        runs.len() + 1,
        "one calibration before, one after each"
    );
    assert!(calibration["single_thread"]["median_ms"].as_f64().unwrap() > 0.0);
    assert!(
        stdout.contains(" ms on one idle thread; all-core limit "),
        "no headline:\n{stdout}"
    );
    let limit = |c: &Value| c["limit_per_s"].as_f64().unwrap();
    for (i, run) in runs.iter().enumerate() {
        let name = run["strategy"].as_str().unwrap();
        let (before, after) = (
            limit(&run["limit"]["before"]),
            limit(&run["limit"]["after"]),
        );
        assert!(before > 0.0 && after > 0.0, "{name}");
        assert_eq!(before, limit(&all_core[i]), "{name} before");
        assert_eq!(after, limit(&all_core[i + 1]), "{name} after");
        let mean = (before + after) / 2.0;
        assert!((limit(&run["limit"]) - mean).abs() < 1e-9, "{name} limit");
        let fraction = run["completed_per_s"].as_f64().unwrap() / mean;
        assert!((run["limit_fraction"].as_f64().unwrap() - fraction).abs() < 1e-9);
        let flags = run["limit_warnings"].as_array().unwrap();
        let disagrees = before.max(after) / before.min(after) > 1.10;
        assert_eq!(
            flags.contains(&Value::from("calibration_disagrees")),
            disagrees,
            "{name}: {flags:?}, before {before}, after {after}"
        );
        assert_eq!(flags.contains(&Value::from("over_limit")), fraction > 1.05);
        let row = stdout.lines().find(|l| l.starts_with(name)).unwrap();
        assert_eq!(row.contains('!'), !flags.is_empty(), "{row}");
    }
    let flagged = runs
        .iter()
        .any(|r| !r["limit_warnings"].as_array().unwrap().is_empty());
    assert_eq!(
        stdout.contains("! %limit not reliable"),
        flagged,
        "{stdout}"
    );
}

/// The CPUs this process may run on.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity writes at most its size into it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// The single-thread calibration on a thread of its own, pinned to `cpu`.
fn single_thread_on(cpu: usize, work: Work) -> SingleThread {
    std::thread::spawn(move || {
        // SAFETY: as above; pid 0 is the calling thread, which is this new one only.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            let rc = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
            assert_eq!(rc, 0, "pinning to CPU {cpu}");
        }
        offload::bench::calibrate_single_thread(&work, 25)
    })
    .join()
    .unwrap()
}

fn all_cores(work: &Work) -> AllCore {
    offload::bench::calibrate_all_cores(work, offload::cli::cores(), 3, Duration::from_millis(500))
        .unwrap()
}

#[test]
fn a_busy_core_lowers_the_all_core_limit_but_not_one_idle_core() {
    let _serial = crate::support::exclusive_blocking();
    let cpus = allowed_cpus();
    let have_taskset = Command::new("taskset")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !(cpus.contains(&0) && cpus.contains(&1) && have_taskset) {
        let why = format!("needs CPUs 0 and 1 (have {cpus:?}) and taskset (found: {have_taskset})");
        // In CI this machine has both: a missing one is a broken set-up, not a skip.
        assert!(std::env::var_os("CI").is_none(), "{why}");
        crate::support::did_not_run(&format!("the calibration test {why}"));
        return;
    }
    // A few milliseconds per run in a test build: hundreds of runs per reading, and short
    // enough that some single-thread runs fit between a neighbour's time slices.
    let work = Work::new(Kind::Count, 200_000, &Limits::default()).unwrap();
    // One idle core's speed: the fastest run, which a neighbour's time slices did not cut.
    let fastest = |s: &SingleThread| s.runs_ms.iter().copied().fold(f64::INFINITY, f64::min);
    // The machine is shared (builds, other tests' processes): a neighbour that comes and goes
    // can spoil one attempt's "quiet" figures, so the drop must show in one of five.
    let mut seen = Vec::new();
    for _ in 0..5 {
        let quiet_all = all_cores(&work);
        let quiet_single = single_thread_on(1, work);
        let (busy_all, busy_single) = {
            let _busy = crate::support::BusyLoop::on(0);
            std::thread::sleep(Duration::from_millis(100));
            (all_cores(&work), single_thread_on(1, work))
        };
        let all_ratio = busy_all.limit_per_s / quiet_all.limit_per_s;
        let single_ratio = fastest(&busy_single) / fastest(&quiet_single);
        seen.push(format!(
            "all-core {:.0} -> {:.0} req/s ({all_ratio:.2}x), one thread on CPU 1 {:.3} -> {:.3} ms ({single_ratio:.2}x; medians {:.3} -> {:.3})",
            quiet_all.limit_per_s,
            busy_all.limit_per_s,
            fastest(&quiet_single),
            fastest(&busy_single),
            quiet_single.median_ms,
            busy_single.median_ms
        ));
        if all_ratio < 0.85 && single_ratio < 1.3 {
            // The bench puts the two calibrations around a strategy: this one is flagged.
            // At exactly its limit, a strategy is flagged for the disagreement alone.
            let bracket = Bracket::new(quiet_all, busy_all);
            let flags = bracket.flags(1.0);
            assert!(
                flags.contains(&LimitWarning::CalibrationDisagrees),
                "not flagged: {flags:?}, {bracket:?}"
            );
            eprintln!("{}", seen.join("\n"));
            return;
        }
    }
    panic!(
        "a busy CPU 0 should cut the all-core limit below 0.85x and leave one thread on CPU 1 within 1.3x:\n{}",
        seen.join("\n")
    );
}

/// Renders the report in headless Chromium at 1280 px and checks what a person would see:
/// every chart drew, nothing is wider than the window (the table fits), and no text of a chart
/// leaves it or covers other text (the page's script measures each, and the failure names the
/// chart and the text). Keeps a screenshot in `target/tmp` for a look. Without Chromium it says loudly that it did not run, and with
/// `OFFLOAD_REQUIRE_CHROMIUM=1` (as in CI) it fails.
pub(crate) fn render_in_chromium(page: &std::path::Path, charts: usize) {
    let browser = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            std::process::Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        });
    let Some(browser) = browser else {
        if std::env::var("OFFLOAD_REQUIRE_CHROMIUM").is_ok_and(|v| v == "1") {
            panic!("OFFLOAD_REQUIRE_CHROMIUM=1 but no chromium is on PATH");
        }
        crate::support::did_not_run("chromium is not installed: the report rendering check");
        return;
    };
    let url = format!("file://{}", page.display());
    let profile = tempfile::tempdir().unwrap();
    let common = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--virtual-time-budget=3000",
    ];
    let dom = std::process::Command::new(browser)
        .args(common)
        .arg("--window-size=1280,2400")
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .expect("run chromium");
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.contains(&format!("data-charts=\"{charts}/{charts}\"")),
        "not every chart drew: {}",
        dom.lines()
            .find(|l| l.contains("<body"))
            .unwrap_or("no <body>")
    );
    assert!(
        dom.contains("data-overflow=\"0\""),
        "the page is wider than 1280 px: {}",
        dom.lines()
            .find(|l| l.contains("<body"))
            .unwrap_or("no <body>")
    );
    let glitches = dom
        .split_once("data-glitches=\"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(said, _)| said.replace("&quot;", "\"").replace("&amp;", "&"));
    assert_eq!(
        glitches.as_deref(),
        Some(""),
        "text leaves its chart or covers other text (None: the page's check did not run)"
    );
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-report.png");
    // Tall enough for the verdict, the tables and the charts.
    let _ = std::process::Command::new(browser)
        .args(common)
        .arg("--window-size=1280,3400")
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(&url)
        .output();
}

/// `offload bench --compare A B`'s output.
fn compare(a: &Path, b: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_offload"))
        .args(["bench", "--compare"])
        .arg(a)
        .arg(b)
        .output()
        .expect("run offload bench --compare");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// `--repeat 3` runs each strategy three times, interleaved, and reports each figure's median
/// and min-max over the runs; the table keeps one row per strategy. Two such folders compare
/// by their spreads.
#[test]
fn repeat_reports_median_and_spread() {
    let _serial = crate::support::exclusive_blocking();
    let dir = tempfile::tempdir().unwrap();
    let (results, stdout, progress) =
        run_quick_bench_with(dir.path(), "pool,blocking", &["--repeat", "3"]);
    let schema: Value = serde_json::from_str(offload::bench::RESULTS_SCHEMA).unwrap();
    assert_eq!(
        crate::load::schema::validate(&schema, &results),
        Vec::<String>::new()
    );
    // Interleaved: pool, blocking, pool, blocking, pool, blocking.
    let starts: Vec<&str> = progress
        .lines()
        .filter_map(|l| l.strip_suffix(": starting"))
        .collect();
    assert_eq!(
        starts,
        [
            "[1/6] pool",
            "[2/6] blocking",
            "[3/6] pool",
            "[4/6] blocking",
            "[5/6] pool",
            "[6/6] blocking"
        ]
    );
    assert_eq!(
        results["runs"].as_array().unwrap().len(),
        2,
        "one row per strategy"
    );
    let reps = results["repeats"].as_array().unwrap();
    assert_eq!(reps.len(), 2);
    for r in reps {
        assert_eq!(r["runs"], 3, "{r}");
        let rps = &r["figures"]["completed_per_s"];
        let vals: Vec<f64> = rps["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(vals.len(), 3);
        let (lo, hi) = (rps["min"].as_f64().unwrap(), rps["max"].as_f64().unwrap());
        let med = rps["median"].as_f64().unwrap();
        assert!(lo <= med && med <= hi, "{rps}");
        // The row shown is the run nearest the median.
        let row = results["runs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["strategy"] == r["strategy"])
            .unwrap();
        assert_eq!(row["completed_per_s"].as_f64().unwrap(), med, "{r}");
    }
    assert!(
        stdout.contains("pool: median (min-max) over 3 runs: req/s "),
        "{stdout}"
    );
    let same = compare(dir.path(), dir.path());
    assert!(
        same.contains("no figure changed beyond the run-to-run spread"),
        "{same}"
    );
    assert!(
        same.contains("no\n")
            || same.contains("no\r\n")
            || same.lines().any(|l| l.ends_with("  no")),
        "{same}"
    );
}

/// `--flood` with `--repeat 2`: every row runs in each round (the row at the uniform -c takes
/// the uniform scenario's two runs), shows its repeat with the median goodput beside the range
/// of both, and the folder compares with itself flood row by flood row.
#[test]
fn a_flood_with_repeat_measures_every_row_in_each_round() {
    let _serial = crate::support::exclusive_blocking();
    let dir = tempfile::tempdir().unwrap();
    let (results, stdout, progress) = run_quick_bench_with(
        dir.path(),
        "pool",
        &[
            "--flood",
            "50",
            "--flood-strategies",
            "pool",
            "--repeat",
            "2",
        ],
    );
    let schema: Value = serde_json::from_str(offload::bench::RESULTS_SCHEMA).unwrap();
    assert_eq!(
        crate::load::schema::validate(&schema, &results),
        Vec::<String>::new()
    );
    let f = &results["flood"];
    assert_eq!(f["repeat"], 2);
    assert_eq!(f["failures"], serde_json::json!([]), "{stdout}");
    // In rounds: both rows once, then both again.
    let flood_lines: Vec<&str> = progress
        .lines()
        .filter(|l| l.starts_with("flood: [") && !l.ends_with(": starting"))
        .collect();
    assert_eq!(
        flood_lines,
        [
            "flood: [1/4] pool -c 50, round 1 of 2: the uniform scenario's run, reused",
            "flood: [3/4] pool -c 50, round 2 of 2: the uniform scenario's run, reused",
        ],
        "{progress}"
    );
    let starts: Vec<&str> = progress
        .lines()
        .filter(|l| l.starts_with("flood: [") && l.ends_with(": starting"))
        .collect();
    assert_eq!(
        starts,
        [
            "flood: [2/4] pool -c 50, honouring Retry-After, round 1 of 2: starting",
            "flood: [4/4] pool -c 50, honouring Retry-After, round 2 of 2: starting",
        ],
        "{progress}"
    );
    let rows = f["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{f}");
    let values = |v: &Value| -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    for r in rows {
        assert_eq!(r["runs"], 2, "{r}");
        let rounds: Vec<u64> = r["repeats"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["round"].as_u64().unwrap())
            .collect();
        assert_eq!(rounds, [1, 2], "{r}");
        let goodput = values(&r["spread"]["goodput_per_s"]["values"]);
        let per_repeat: Vec<f64> = r["repeats"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["goodput_per_s"].as_f64().unwrap())
            .collect();
        assert_eq!(goodput, per_repeat, "{r}");
        // The row shown is the lower of the two, as the uniform scenario picks its runs.
        let low = goodput.iter().copied().fold(f64::INFINITY, f64::min);
        assert_eq!(r["goodput_per_s"].as_f64().unwrap(), low, "{r}");
    }
    // The reused row's repeats are the uniform scenario's two runs, in order.
    assert_eq!(rows[0]["from_uniform"], true);
    assert_eq!(rows[1]["from_uniform"], false);
    assert_eq!(
        values(&rows[0]["spread"]["health_p99_ms"]["values"]),
        values(&results["repeats"][0]["figures"]["health_p99_ms"]["values"])
    );
    assert!(
        stdout.contains("- Each figure below is the median of 2 repeats of its row."),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "(min-max) beside goodput/s and %limit: the lowest and highest of the row's 2 repeats"
        ),
        "{stdout}"
    );
    let same = compare(dir.path(), dir.path());
    assert!(
        same.lines()
            .any(|l| l.starts_with("pool         50 Retry-After goodput/s")
                && l.ends_with("+0%  no")),
        "{same}"
    );
}

#[test]
fn a_mix_is_reported_per_kind_for_pool_queue_and_auto() {
    let _serial = crate::support::exclusive_blocking();
    let dir = tempfile::tempdir().unwrap();
    // Light: a few ms in a test build; heavy: seconds, over `auto`'s 1 s budget even when
    // split over two threads.
    let light = "count:100000";
    let heavy = "count:100000000";
    let mix = format!("{light}=90,{heavy}=10");
    let (results, stdout, _) = run_quick_bench_with(
        dir.path(),
        "pool",
        &[
            "--mix",
            &mix,
            "--mix-rate",
            "10",
            "-d",
            "3",
            "--auto-wait",
            "200ms",
        ],
    );
    let schema: Value = serde_json::from_str(offload::bench::RESULTS_SCHEMA).unwrap();
    assert_eq!(
        crate::load::schema::validate(&schema, &results),
        Vec::<String>::new()
    );
    let m = &results["mix"];
    assert_eq!(m["spec"], mix.as_str());
    let runs = m["runs"].as_array().unwrap();
    let names: Vec<&str> = runs
        .iter()
        .map(|r| r["strategy"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["pool", "queue", "auto", "pool, light alone"],
        "{stdout}"
    );
    let part = |strategy: &str, work: &str| -> Value {
        let run = runs.iter().find(|r| r["strategy"] == strategy).unwrap();
        run["parts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["work"] == work)
            .unwrap_or_else(|| panic!("{strategy} has no {work}"))
            .clone()
    };
    // How each kind was answered, by status: only the one named, but for requests still
    // waiting when the load stopped (a light one behind heavy work in `pool`, say).
    let only = |p: &Value, status: &str| {
        let mut answered = p["answered"].as_object().unwrap().clone();
        let unfinished = answered
            .remove("unfinished")
            .map_or(0, |v| v.as_u64().unwrap());
        let sent = p["sent"].as_u64().unwrap();
        assert!(sent > 0, "{p}");
        if unfinished < sent {
            assert_eq!(
                answered.keys().collect::<Vec<_>>(),
                [status],
                "{p}\n{stdout}"
            );
            assert_eq!(answered[status].as_u64(), Some(sent - unfinished), "{p}");
        }
        unfinished
    };
    // `pool` may not finish the heavy ones (seconds each here) before the load stops.
    only(&part("pool", light), "200");
    only(&part("pool", heavy), "200");
    only(&part("queue", light), "202");
    only(&part("queue", heavy), "202");
    // `auto` and `queue` answer at once: at most the last request or two is cut off.
    assert!(only(&part("auto", light), "200") <= 2);
    assert!(only(&part("auto", heavy), "202") <= 1);
    only(&part("pool, light alone", light), "200");
    // Every job stored was done and is counted under its own kind.
    for (strategy, work) in [("queue", light), ("queue", heavy), ("auto", heavy)] {
        let p = part(strategy, work);
        assert_eq!(
            p["jobs_done"], p["answered"]["202"],
            "{strategy} {work}: {p}"
        );
        assert_eq!(p["enqueue_to_done_ms"]["count"], p["answered"]["202"]);
    }
    assert_eq!(part("auto", light)["jobs_done"], 0);
    assert!(stdout.contains("mix count:100000=90"), "{stdout}");
    assert!(
        stdout.contains("light (count:100000) p99: auto"),
        "{stdout}"
    );
    let page = std::fs::read_to_string(dir.path().join("index.html")).unwrap();
    assert!(page.contains("<h2>Mixed workload</h2>"));
    let readme = std::fs::read_to_string(dir.path().join("README.md")).unwrap();
    assert!(readme.contains("## Mixed workload"));
}

/// `--flood` in a quick run: per strategy a row at each connection count and one with a
/// client that honours Retry-After, with goodput, refusals and the gateway's CPU; the row at
/// the uniform scenario's -c is its run, reused.
#[test]
fn a_flood_reports_goodput_refusals_and_gateway_cpu() {
    let _serial = crate::support::exclusive_blocking();
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    // The uniform scenario runs pool at -c 50 (run_quick_bench_with's -c).
    let (results, stdout, _) = run_quick_bench_with(
        dir.path(),
        "pool",
        &["--flood", "200,50", "--flood-strategies", "pool,queue,auto"],
    );
    let schema: Value = serde_json::from_str(offload::bench::RESULTS_SCHEMA).unwrap();
    assert_eq!(
        crate::load::schema::validate(&schema, &results),
        Vec::<String>::new()
    );
    let load_schema: Value = serde_json::from_str(offload::load::REPORT_SCHEMA).unwrap();
    let f = &results["flood"];
    assert_eq!(f["connections"], serde_json::json!([50, 200]));
    assert_eq!(f["honour_connections"], 200);
    assert_eq!(f["failures"], serde_json::json!([]), "{stdout}");
    let rows = f["rows"].as_array().unwrap();
    let keys: Vec<(&str, u64, bool)> = rows
        .iter()
        .map(|r| {
            (
                r["strategy"].as_str().unwrap(),
                r["connections"].as_u64().unwrap(),
                r["honor_retry_after"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        keys,
        [
            ("pool", 50, false),
            ("pool", 200, false),
            ("pool", 200, true),
            ("queue", 50, false),
            ("queue", 200, false),
            ("queue", 200, true),
            ("auto", 50, false),
            ("auto", 200, false),
            ("auto", 200, true),
        ]
    );
    let uniform_pool = &results["runs"][0];
    let cores = results["machine"]["cores"].as_f64().unwrap();
    let single_ms = results["calibration"]["single_thread"]["runs_ms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .fold(f64::INFINITY, f64::min);
    for r in rows {
        let name = format!(
            "{} -c {} honour {}",
            r["strategy"], r["connections"], r["honor_retry_after"]
        );
        let num = |k: &str| {
            r[k].as_f64()
                .unwrap_or_else(|| panic!("{name}: no {k}: {r}"))
        };
        let window = num("window_s");
        assert!(window > 1.9, "{name}");
        assert!((num("goodput_per_s") - num("goodput") / window).abs() < 1e-9);
        assert!((num("refused_per_s") - num("refused") / window).abs() < 1e-9);
        assert!(num("goodput_per_s") > 0.0, "{name} did no work: {r}");
        // Against the limit around it, flagged when over it; and physically possible: no
        // faster than every core running the work at one idle thread's best speed (with
        // room for that calibration's own noise on a shared machine).
        let limit = r["limit"]["limit_per_s"].as_f64().unwrap();
        assert!((num("limit_fraction") - num("goodput_per_s") / limit).abs() < 1e-9);
        let flags = r["limit_warnings"].as_array().unwrap();
        assert_eq!(
            flags.contains(&Value::from("over_limit")),
            num("limit_fraction") > 1.05,
            "{name}"
        );
        assert!(
            num("goodput_per_s") < 1.5 * cores / (single_ms / 1e3),
            "{name}: goodput {} with {cores} cores at {single_ms} ms",
            num("goodput_per_s")
        );
        let cpu = num("gateway_cpu_fraction");
        assert!(cpu > 0.0 && cpu <= 1.05, "{name}: gateway CPU {cpu}");
        assert_eq!(
            r["gateway_cpu_s_per_refusal"].is_number(),
            num("refused") > 0.0,
            "{name}"
        );
        assert!(num("health_p99_ms") > 0.0, "{name}");
        assert!(r["unfinished"].is_u64(), "{name}");
        assert_eq!(
            r["retry_after"]["honoured"], r["honor_retry_after"],
            "{name}"
        );
        for report in ["heavy", "bystander"] {
            assert_eq!(
                crate::load::schema::validate(&load_schema, &r[report]),
                Vec::<String>::new(),
                "{name} {report}"
            );
        }
        if r["strategy"] == "queue" {
            // Goodput is jobs finished in the window, not the 202s.
            assert_eq!(r["goodput"], r["jobs_finished"], "{name}");
            assert!(r["backlog_at_stop"].is_u64(), "{name}");
        } else if r["strategy"] == "auto" {
            // The pool's 200s and the worker's jobs.
            let ok = (num("ok_per_s") * window).round() as u64;
            let jobs = r["jobs_finished"].as_u64().unwrap();
            assert_eq!(r["goodput"].as_u64().unwrap(), ok + jobs, "{name}");
        } else {
            assert!(r["jobs_finished"].is_null(), "{name}");
        }
        eprintln!(
            "{name}: goodput {:.1}/s ({:.0}%), 503 {:.0}/s, 202 {:.0}/s, gateway CPU {:.0}%, /health p99 {:.1} ms, unfinished {}, waited {:.0}%",
            num("goodput_per_s"),
            num("limit_fraction") * 100.0,
            num("refused_per_s"),
            num("accepted_per_s"),
            cpu * 100.0,
            num("health_p99_ms"),
            r["unfinished"],
            r["retry_after"]["waited_fraction"].as_f64().unwrap() * 100.0
        );
    }
    // One round: each row is its one repeat.
    assert_eq!(f["repeat"], 1);
    for r in rows {
        assert_eq!(r["runs"], 1, "{r}");
        assert_eq!(r["repeats"].as_array().unwrap().len(), 1, "{r}");
        assert_eq!(r["repeats"][0]["goodput_per_s"], r["goodput_per_s"], "{r}");
        assert_eq!(r["spread"]["goodput_per_s"]["median"], r["goodput_per_s"]);
    }
    // The uniform scenario's pool at -c 50 is reused, not run again.
    assert_eq!(rows[0]["from_uniform"], true);
    assert!(rows[1..].iter().all(|r| r["from_uniform"] == false));
    assert_eq!(rows[0]["heavy"], uniform_pool["heavy"]);
    // The flood's own queue files are gone.
    let left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("queue-flood-"))
        .collect();
    assert_eq!(left, Vec::<String>::new());
    assert!(
        stdout.contains("flood: closed loop at -c 50, 200 on each strategy"),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("pool") && l.contains("Retry-After")),
        "{stdout}"
    );
    // Each strategy's honouring row is read: what it changed, or that nothing was refused.
    for name in ["pool", "queue", "auto"] {
        assert!(
            stdout.contains(&format!(
                "- {name} at -c 200 with a client that honours Retry-After: "
            )) || stdout.contains(&format!("- {name} refused nothing at -c 200, so a client")),
            "{name}: {stdout}"
        );
    }
    let readme = std::fs::read_to_string(dir.path().join("README.md")).unwrap();
    assert!(readme.contains("## Flood"));
    let page = std::fs::read_to_string(dir.path().join("index.html")).unwrap();
    assert!(page.contains("<h2>Flood</h2>"));
    // The uniform scenario's eight charts drew, and the flood's table fits the window.
    render_in_chromium(&dir.path().join("index.html"), 8);
    eprintln!(
        "{stdout}\nwall time {:.0} s",
        started.elapsed().as_secs_f64()
    );
}

/// `auto`'s CPU per request is read over the window its `completed` counts (the load's): with
/// the drain's CPU charged to the load's requests it printed 23.86 and 58.68 ms a request
/// against 6-12 ms for every other row (issue 30). The same work on the same cores costs about
/// the same a request, whether the pool or the in-process worker runs it.
#[test]
fn autos_cpu_per_request_is_that_of_the_work_it_counts() {
    let _x = crate::support::exclusive_blocking();
    let dir = tempfile::tempdir().unwrap();
    let (results, stdout) = run_quick_bench(dir.path(), "pool,auto");
    let per_request = |name: &str| {
        let run = results["runs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["strategy"] == name)
            .unwrap_or_else(|| panic!("no {name} run:\n{stdout}"));
        let completed = run["completed"].as_u64().unwrap();
        assert!(completed > 0, "{name} completed nothing:\n{stdout}");
        run["cpu_s"].as_f64().unwrap() * 1e3 / completed as f64
    };
    let (pool, auto) = (per_request("pool"), per_request("auto"));
    eprintln!("CPU ms a request: pool {pool:.2}, auto {auto:.2}");
    assert!(
        auto <= 2.0 * pool,
        "auto {auto:.2} ms a request against pool's {pool:.2}:\n{stdout}"
    );
}
