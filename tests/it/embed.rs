//! The pool crate as a user embeds it: `crates/pool/examples/axum.rs`, driven with
//! `offload load`, answers every request, and exactly. ([`example`] finds any example's
//! executable; the queue crate's is tested in `custom_job.rs`.)

use std::path::PathBuf;
use std::time::Duration;

use crate::support::{Proc, exclusive, get, offload_command};

/// An example's executable: beside the `offload` binary, under `examples/`. Plain `cargo test`
/// builds the examples of the workspace's default members; `cargo test --test it` does not,
/// and then this fails saying how to build it.
pub(crate) fn example(name: &str) -> PathBuf {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_offload"));
    let path = bin
        .parent()
        .expect("a target dir")
        .join("examples")
        .join(name);
    assert!(
        path.is_file(),
        "{} is missing: build it with `cargo build --example {name}` in the workspace's root, so \
         that its crate has the features offload enables (plain `cargo test` builds it)",
        path.display()
    );
    path
}

/// `GET /count?n=N` of the example, checked for the exact count.
async fn count_exactly(app: &Proc, n: u64) {
    let r = get(app.addr, &format!("/count?n={n}")).await;
    let body = String::from_utf8_lossy(&r.body);
    assert_eq!((r.status, body.as_ref()), (200, format!("{n}\n").as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_axum_example_answers_every_request_exactly_under_load() {
    let _x = exclusive().await;
    let app = Proc::start_program(&example("axum"), &["127.0.0.1:0"]);
    assert_eq!(get(app.addr, "/health").await.status, 200);
    assert_eq!(get(app.addr, "/count?n=many").await.status, 400);
    for n in [0, 1, 999_983] {
        count_exactly(&app, n).await;
    }
    // 400 requests of about a millisecond each over 4 connections: far inside the example's
    // 2 s deadline, so admission must take every one.
    let url = format!("http://{}/count?n=1000000", app.addr);
    let load = tokio::task::spawn_blocking(move || {
        offload_command()
            .args([
                "load",
                "-c",
                "4",
                "-a",
                "400",
                "--timeout",
                "30s",
                "--json",
                &url,
            ])
            .output()
            .expect("run offload load")
    });
    // Exact answers while the load runs, too.
    tokio::time::sleep(Duration::from_millis(100)).await;
    for n in [12_345, 2_000_000] {
        count_exactly(&app, n).await;
    }
    let out = load.await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("load's JSON");
    let requests = &report["requests"];
    assert_eq!(requests["sent"], 400, "{requests:#}");
    assert_eq!(requests["by_status"]["200"], 400, "{requests:#}");
    assert_eq!(requests["non_2xx"], 0, "{requests:#}");
    assert_eq!(requests["timeouts"], 0, "{requests:#}");
}

/// Crates a service embedding the pool must not be made to build: storage, HTTP, the CLI,
/// metrics, password hashing, the bench's histograms, and an async runtime (a pool's `Handle`
/// is a future any executor awaits, or a blocking wait).
const NOT_IN_THE_POOL: [&str; 10] = [
    "rusqlite",
    "redis",
    "tokio-postgres",
    "hyper",
    "hyper-util",
    "clap",
    "prometheus-client",
    "argon2",
    "hdrhistogram",
    "tokio",
];

#[test]
fn the_pool_crate_pulls_in_nothing_heavy() {
    // The cargo running the tests, else the one that built them.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_string());
    let out = std::process::Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "tree",
            "-p",
            "offload-pool",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .args(["--offline", "--locked"])
        .output()
        .expect("run cargo tree");
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Lines are `name vX.Y.Z [(path)] [(*)]`.
    let names: std::collections::BTreeSet<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(names.contains("offload-pool"), "{tree}");
    let heavy: Vec<&str> = NOT_IN_THE_POOL
        .into_iter()
        .filter(|c| names.contains(c))
        .collect();
    assert!(
        heavy.is_empty(),
        "offload-pool depends on {heavy:?}:\n{tree}"
    );
    eprintln!("offload-pool's crates: {names:?}");
}

/// The README's "Use it in your service" shows the example as it is, not as it once was.
#[test]
fn the_readme_shows_the_example_as_it_is() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = std::fs::read_to_string(root.join("crates/pool/examples/axum.rs")).unwrap();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let code = &example[example.find("use std::").expect("the example's first use")..];
    assert!(
        readme.contains(&format!("```rust\n{code}```")),
        "README.md's \"Use it in your service\" no longer shows crates/pool/examples/axum.rs \
         from its first `use` on: copy it over"
    );
}
