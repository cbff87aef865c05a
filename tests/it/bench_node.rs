//! `offload bench --quick --node`: the seed's Node servers, each right after its offload
//! counterpart, with exact results, a drained BullMQ queue, a comparison of each pair, and
//! no process left behind (Node's and Redis's included); without node on PATH, `--node`
//! fails before anything runs. Without node, npm and redis-server the run says loudly that
//! it did not run; with `OFFLOAD_REQUIRE_NODE=1` (as in CI) it fails instead.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::bench::{render_in_chromium, run_quick_bench_with};

/// Whether `name` is a program on PATH.
/// Whether the tests run as root (who may raise a thread's priority).
fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
}

/// node, npm and redis-server present; else a loud skip, or a failure under
/// `OFFLOAD_REQUIRE_NODE=1`.
fn node_present(test: &str) -> bool {
    let missing: Vec<&str> = ["node", "npm", "redis-server"]
        .into_iter()
        .filter(|p| !on_path(p))
        .collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var("OFFLOAD_REQUIRE_NODE").is_ok_and(|v| v == "1") {
        panic!(
            "OFFLOAD_REQUIRE_NODE=1 but {} not on PATH ({test})",
            missing.join(", ")
        );
    }
    crate::support::did_not_run(&format!("{} not on PATH: {test}", missing.join(", ")));
    false
}

/// Each offload row and its Node counterpart, in the order they run: pool and piscina twice,
/// at nice 0 and both at nice 10.
const PAIRS: [(&str, &str); 6] = [
    ("inline", "node:inline"),
    ("spawn", "node:worker"),
    ("pool", "node:piscina"),
    ("pool, nice 10", "node:piscina, nice 10"),
    ("remote", "node:remote"),
    ("queue", "node:bullmq"),
];

#[test]
fn node_bench_runs_every_seed_server_beside_its_counterpart() {
    if !node_present("node_bench_runs_every_seed_server_beside_its_counterpart") {
        return;
    }
    let _serial = crate::support::exclusive_blocking();
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let (results, stdout, _) =
        run_quick_bench_with(dir.path(), "inline,spawn,pool,remote,queue", &["--node"]);
    eprintln!(
        "--quick --node took {:.0}s",
        started.elapsed().as_secs_f64()
    );

    let schema: Value = serde_json::from_str(offload::bench::RESULTS_SCHEMA).unwrap();
    assert_eq!(
        crate::load::schema::validate(&schema, &results),
        Vec::<String>::new()
    );
    let runs = results["runs"].as_array().unwrap();
    let names: Vec<&str> = runs
        .iter()
        .map(|r| r["strategy"].as_str().unwrap())
        .collect();
    let expected: Vec<&str> = PAIRS.iter().flat_map(|(o, n)| [*o, *n]).collect();
    assert_eq!(names, expected, "each Node row right after its counterpart");
    let run = |name: &str| runs.iter().find(|r| r["strategy"] == name).unwrap();
    let node = &results["node"];

    // Exact results: one answer of each Node server (node:bullmq: its job's stored result)
    // against offload's for count:2000000.
    let checks = node["checks"].as_array().unwrap();
    let checked: Vec<&str> = checks
        .iter()
        .map(|c| c["strategy"].as_str().unwrap())
        .collect();
    assert_eq!(checked, PAIRS.map(|(_, n)| n));
    for c in checks {
        assert_eq!(c["expected"], 2_000_000, "{c}");
        assert_eq!(c["result"], 2_000_000, "{c}");
    }

    // The threads that answer requests run alike on both sides of each pair, as the kernel
    // reports them: each Node server's event loop was given its counterpart's runtime
    // threads' niceness and slice.
    for (offload, name) in PAIRS {
        let (ours, theirs) = (&run(offload)["serving"], &run(name)["serving"]);
        assert!(ours.is_object(), "{offload}: serving threads not read");
        assert_eq!(ours, theirs, "{offload} / {name}: serving threads differ");
    }
    // inline's runtime threads run the work, so they keep nice 0; pool's are raised where the
    // bench may raise them (as root here), and its slice is serve's default 0.1 ms.
    assert_eq!(run("inline")["serving"]["nice"], 0);
    if is_root() {
        assert_eq!(run("node:piscina")["serving"]["nice"], -10);
    }
    assert_eq!(run("node:piscina")["serving"]["slice_ns"], 100_000);
    assert!(
        stdout.contains("Serving threads (--serving raised:"),
        "{stdout}"
    );
    for (offload, name) in PAIRS {
        let r = run(name);
        // A Worker per request may finish nothing in a 2 s window: at -c 50 it starts a
        // hundred threads at once (the article's "0 requests in 10 s"). Its answer was
        // checked above; the others must have done work.
        if name != "node:worker" {
            assert!(
                r["completed"].as_u64().unwrap() > 0,
                "{name} completed nothing"
            );
        }
        assert!(
            r["peak_threads"].as_u64().unwrap() > 0,
            "{name} was not sampled"
        );
        assert!(
            stdout.lines().any(|l| l.starts_with(name)),
            "no table row for {name}:\n{stdout}"
        );
        let q = &r["heavy"]["requests"];
        assert_eq!(q["errors"], 0, "{name}: {q}");
        if name != "node:bullmq" {
            assert_eq!(q["non_2xx"], 0, "{name} answered errors: {q}");
        }
        let cal = node["calibrations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["strategy"] == name);
        if name == "node:remote" {
            // Its work runs in `offload compute`: held against offload's own limit, the
            // bench's calibrations around it, as `remote` is; no Node calibration.
            assert!(cal.is_none(), "node:remote was calibrated on Node's loop");
            assert_eq!(
                r["limit"]["before"],
                run(offload)["limit"]["after"],
                "node:remote's limit opens with the calibration after remote"
            );
            continue;
        }
        // Held against Node's own loop, calibrated right before and after it.
        let cal = cal.unwrap_or_else(|| panic!("no Node calibration around {name}"));
        assert_eq!(r["limit"]["before"], cal["before"], "{name}");
        assert_eq!(r["limit"]["after"], cal["after"], "{name}");
        assert_ne!(
            r["limit"]["before"],
            run(offload)["limit"]["before"],
            "{name} must not use offload's calibration"
        );
    }
    // Every process sampled: Node's gateway, the compute service, BullMQ's workers, Redis.
    let roles = |name: &str| -> Vec<String> {
        run(name)["processes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["role"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(roles("node:piscina"), ["gateway"]);
    assert_eq!(roles("node:remote"), ["compute", "gateway"]);
    let bullmq = roles("node:bullmq");
    assert_eq!(
        bullmq.first().map(String::as_str),
        Some("redis"),
        "{bullmq:?}"
    );
    assert_eq!(
        bullmq.last().map(String::as_str),
        Some("gateway"),
        "{bullmq:?}"
    );
    assert_eq!(
        bullmq.iter().filter(|r| *r == "worker").count(),
        offload::cli::cores(),
        "one BullMQ worker process per core: {bullmq:?}"
    );
    // Node's Worker threads are threads of its gateway: a request's threads show in its count.
    assert!(
        run("node:worker")["peak_threads"].as_u64().unwrap()
            > run("node:inline")["peak_threads"].as_u64().unwrap(),
        "node:worker's per-request threads were not seen"
    );

    // The BullMQ queue followed like offload's: every accepted job finished.
    let q = &run("node:bullmq")["queue"];
    assert_eq!(q["drained"], true, "{q}");
    assert_eq!(q["jobs_failed"], 0, "{q}");
    let phase = &q["accept_phase"];
    assert_eq!(phase["accepted"], phase["requests"], "{phase}");
    let last = q["backlog"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["accepted"], last["finished"], "drained: {last}");
    assert!(
        q["enqueue_to_done_ms"]["count"].as_u64().unwrap() > 0,
        "{q}"
    );

    // The comparison: a line per pair in the terminal, in results.json and on the page.
    assert!(
        stdout.contains("offload beside the seed's Node servers, measured in this run"),
        "{stdout}"
    );
    let pairs = node["pairs"].as_array().unwrap();
    assert_eq!(pairs.len(), 6, "{pairs:?}");
    for (p, (offload, name)) in pairs.iter().zip(PAIRS) {
        assert_eq!(
            (p["offload"].as_str(), p["node"].as_str()),
            (Some(offload), Some(name))
        );
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&format!("{offload} / {name} "))),
            "no comparison for {offload} / {name}:\n{stdout}"
        );
        let figures: Vec<&str> = p["figures"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["figure"].as_str().unwrap())
            .collect();
        for f in ["%limit", "/health p99 ms", "RSS MiB", "threads"] {
            assert!(figures.contains(&f), "{offload}: {figures:?}");
        }
        let rate: &[&str] = if offload == "queue" {
            &["accepted/s", "done/s", "drain s"]
        } else {
            &["req/s"]
        };
        for f in rate {
            assert!(figures.contains(f), "{offload}: {figures:?}");
        }
        // A ratio is the two figures of the same run, divided.
        for f in p["figures"].as_array().unwrap() {
            let (o, n) = (f["offload"].as_f64().unwrap(), f["node"].as_f64().unwrap());
            if n > 0.0 {
                assert!((f["ratio"].as_f64().unwrap() - o / n).abs() < 1e-9, "{f}");
            }
        }
    }
    let csv = std::fs::read_to_string(dir.path().join("timeline.csv")).unwrap();
    for (_, name) in PAIRS {
        assert!(
            csv.lines().any(|l| l.starts_with(&format!("{name},"))),
            "no {name} in the CSV"
        );
    }
    let html = std::fs::read_to_string(dir.path().join("index.html")).unwrap();
    assert!(
        html.contains("<h2 id=\"node\">"),
        "no comparison on the page"
    );
    assert!(html.contains("<td>pool / node:piscina</td>"));
    assert!(html.contains("<td>pool, nice 10 / node:piscina, nice 10</td>"));
    assert!(
        stdout.contains(
            "Priority: both sides of each pair run their work threads at the same niceness"
        ),
        "{stdout}"
    );
    for (_, name) in PAIRS {
        assert!(
            html.contains(&format!("<tr><td>{name}</td>")),
            "no table row for {name}"
        );
    }
    // Eight charts for every run, and a backlog chart for each queue.
    assert!(html.contains("id=\"chart-queue-backlog-node-bullmq\""));
    assert_eq!(html.matches("<svg class=\"chart\"").count(), 10);
    render_in_chromium(&dir.path().join("index.html"), 10);

    node_servers_refuse_bad_input(Path::new(node["folder"].as_str().unwrap()));
}

/// A Node server as installed by the bench answers bad input as offload does: 400 with
/// `{"error": {"code", "message"}}` and the same code, and good input with the exact result.
fn node_servers_refuse_bad_input(folder: &Path) {
    let mut child = Command::new("node")
        .arg(folder.join("inline.js"))
        .args(["--port", "0"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start node inline.js");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let addr = offload::api::Listening::parse(&line)
        .unwrap_or_else(|| panic!("not a listening line: {line:?}"))
        .addr;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for (query, code) in [
            ("?n=0", "invalid_n"),
            ("?n=abc", "invalid_n"),
            ("?work=count", "missing_n"),
            ("?work=bogus&n=5", "unknown_work"),
            ("?n=1&n=2", "duplicate_field"),
            ("?x=1", "unknown_field"),
            ("?n=2000000001", "n_too_large"),
        ] {
            let r = crate::support::get(addr, &format!("/heavy{query}")).await;
            assert_eq!(r.status, 400, "{query}");
            let e: offload::api::ErrorBody = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(e.error.code, code, "{query}");
        }
        let r = crate::support::post_json(addr, "{\"n\": 5").await;
        assert_eq!((r.status, r.code()), (400, "malformed_json".to_owned()));
        let r = crate::support::post_json(addr, r#"{"work": "count", "n": 1234567}"#).await;
        assert_eq!(r.status, 200);
        let a: offload::api::HeavyAnswer = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            (a.strategy.as_str(), a.n, a.result),
            ("node:inline", 1_234_567, 1_234_567)
        );
    });
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn node_flag_without_node_fails_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let empty = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_offload"))
        .args(["bench", "--quick", "--node", "--out"])
        .arg(dir.path().join("report"))
        .env("PATH", empty.path())
        .output()
        .expect("run offload bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("--node needs Node.js 20 or later and npm on PATH")
            && stderr.contains("apt-get install nodejs npm"),
        "{stderr}"
    );
    assert!(!stderr.contains("calibrating"), "it started: {stderr}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(!dir.path().join("report").join("results.json").exists());
}
