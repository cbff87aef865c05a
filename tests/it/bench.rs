//! `offload bench --quick` end to end: a row per strategy, a results.json that matches its
//! committed schema, an HTML page, and no process left behind.

use std::path::Path;
use std::process::Command;

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
            "--out",
        ])
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
    let results: Value =
        serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    (results, stdout)
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
    let names: Vec<&str> = runs
        .iter()
        .map(|r| r["strategy"].as_str().unwrap())
        .collect();
    assert_eq!(names, strategies);
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
    }
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
    assert_eq!(html.matches("<svg class=\"chart\"").count(), 6);
    assert!(
        !html.contains("http://") || !html.contains("<script src"),
        "the page must not load anything"
    );
}
