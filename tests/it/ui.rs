//! The gateway's live page (`/ui`) and who may press its buttons, with real processes:
//! `offload serve --strategy queue` on a SQLite queue in a temp dir and `offload worker`.
//! - Over HTTP: on a non-loopback bind with no admin token, cancel and retry answer 401 and
//!   change nothing, reading stays open, and the start says so; with the token (here from
//!   `OFFLOAD_ADMIN_TOKEN`) they work, and a wrong one is a 401, counted.
//! - In headless Chromium at 1280 px, driven by `tests/ui/drive.mjs` (playwright-core with the
//!   system's chromium): the page loads and its charts draw, a job failed on purpose is listed,
//!   Retry without the token shows the 401's message, with it requeues the job and the page
//!   follows it to done; no console errors; a screenshot is written and read. Without chromium,
//!   node or the driver's package (`npm ci` in `tests/ui`) it says loudly that it did not run;
//!   with `OFFLOAD_REQUIRE_CHROMIUM=1` or `OFFLOAD_REQUIRE_NODE=1` (as in CI) it fails.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::queue_faults::{enqueue, job};
use crate::support::{Proc, exclusive, get, metric, offload_command, request};

/// The admin token of these tests' gateways.
const TOKEN: &str = "ui-test-token-0123456789abcdef";

/// A SQLite queue in `dir`.
fn sqlite(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}", dir.path().join("jobs.db").display())
}

/// Polls a job until its status is `status`; panics after `within`.
async fn wait_status(addr: SocketAddr, id: &str, status: &str, within: Duration) -> Value {
    let end = Instant::now() + within;
    loop {
        let j = job(addr, id).await;
        if j["status"] == status {
            return j;
        }
        assert!(Instant::now() < end, "job {id} never became {status}: {j}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `method path` with `auth` as its `Authorization` header (none when empty).
async fn change(addr: SocketAddr, method: &str, path: &str, auth: &str) -> crate::support::Resp {
    let headers: &[(&str, &str)] = if auth.is_empty() {
        &[]
    } else {
        &[("authorization", auth)]
    };
    request(addr, method, path, headers, "").await
}

#[tokio::test]
async fn changes_on_a_non_loopback_bind_need_the_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite(&dir);
    let serve = [
        "serve",
        "--strategy",
        "queue",
        "--queue",
        &url,
        "--bind",
        "0.0.0.0",
    ];
    // No token: the start says what is open, and every change is a 401.
    let log = dir.path().join("serve.log");
    let mut cmd = offload_command();
    cmd.stderr(std::fs::File::create(&log).unwrap());
    let open = Proc::start_with(cmd, &serve);
    let addr = SocketAddr::from(([127, 0, 0, 1], open.addr.port()));
    let id = enqueue(addr, "/heavy?n=1000").await; // no worker: it stays queued
    let (cancel, retry) = (format!("/jobs/{id}"), format!("/jobs/{id}/retry"));
    for (method, path) in [("DELETE", &cancel), ("POST", &retry)] {
        for auth in ["", "Bearer ui-test-token-0123456789abcdef"] {
            let r = change(addr, method, path, auth).await;
            assert_eq!(
                (r.status, r.code().as_str()),
                (401, "unauthorized"),
                "{method} {auth:?}"
            );
            assert_eq!(r.headers["www-authenticate"], "Bearer");
            let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
            assert!(message.contains("no admin token"), "{message}");
        }
    }
    assert_eq!(job(addr, &id).await["status"], "queued", "nothing changed");
    for path in [
        "/health",
        "/metrics",
        "/jobs",
        "/jobs?status=queued",
        &cancel,
        "/ui",
        "/ui/state",
    ] {
        assert_eq!(get(addr, path).await.status, 200, "{path} is open to read");
    }
    let state = get(addr, "/ui/state").await.json();
    assert_eq!(state["changes"], "closed");
    assert_eq!(state["strategy"], "queue");
    assert_eq!(state["queue"]["counts"]["queued"], 1, "{state}");
    assert_eq!(state["requests"]["accepted"], 1, "{state}");
    let queue = state["queue"].as_object().unwrap();
    let backlog = queue["backlog_seconds"].as_f64();
    assert!(
        backlog.is_some_and(|s| s > 0.0),
        "one job queued: a backlog in seconds of work above 0: {state}"
    );
    drop(open);
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(
        said.contains("reading is open") && said.contains("(/health, /metrics, /jobs, /ui)"),
        "no warning of what is open:\n{said}"
    );
    assert!(said.contains("cancel and retry answer 401"), "{said}");

    // The token, from the environment: a wrong one is a 401, counted; the right one works.
    let mut cmd = offload_command();
    cmd.env("OFFLOAD_ADMIN_TOKEN", TOKEN);
    let guarded = Proc::start_with(cmd, &serve);
    let addr = SocketAddr::from(([127, 0, 0, 1], guarded.addr.port()));
    let right = format!("Bearer {TOKEN}");
    let wrong = "Bearer ui-test-token-0123456789abcdeF";
    for auth in ["", wrong] {
        let r = change(addr, "DELETE", &cancel, auth).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (401, "unauthorized"),
            "{auth:?}"
        );
    }
    assert_eq!(job(addr, &id).await["status"], "queued", "nothing changed");
    let r = change(addr, "DELETE", &cancel, &right).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.json()["status"], "cancelled");
    let r = change(addr, "POST", &retry, wrong).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.headers["www-authenticate"],
        r#"Bearer error="invalid_token""#
    );
    assert_eq!(
        job(addr, &id).await["status"],
        "cancelled",
        "nothing changed"
    );
    let r = change(addr, "POST", &retry, &right).await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    assert_eq!(job(addr, &id).await["status"], "queued");
    let wrongs = metric(addr, "offload_log_events_total{kind=\"admin_token_wrong\"}").await;
    assert_eq!(wrongs, 2.0, "each wrong token counted");
    assert_eq!(get(addr, "/ui/state").await.json()["changes"], "token");
}

/// A program on PATH, as a full path.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Whether `var` is `1`.
fn required(var: &str) -> bool {
    std::env::var(var).is_ok_and(|v| v == "1")
}

/// The browser and node for the driver, with its package installed; else a loud skip, or a
/// failure when required.
fn driver_tools() -> Option<(PathBuf, PathBuf)> {
    let chromium = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find_map(on_path);
    let Some(chromium) = chromium else {
        assert!(
            !required("OFFLOAD_REQUIRE_CHROMIUM"),
            "OFFLOAD_REQUIRE_CHROMIUM=1 but no chromium is on PATH"
        );
        crate::support::did_not_run("chromium is not installed: the live page's test");
        return None;
    };
    let node = on_path("node");
    let package = ui_dir().join("node_modules/playwright-core/package.json");
    let why = match &node {
        None => "node is not on PATH".to_owned(),
        Some(_) if !package.is_file() => {
            format!("{} is missing: run `npm ci` in tests/ui", package.display())
        }
        Some(node) => return Some((chromium, node.clone())),
    };
    assert!(
        !required("OFFLOAD_REQUIRE_NODE"),
        "OFFLOAD_REQUIRE_NODE=1 but {why}"
    );
    crate::support::did_not_run(&format!("{why}: the live page's test"));
    None
}

fn ui_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui")
}

/// The width and height of a PNG, from its header; `None` if it is not one.
fn png_size(bytes: &[u8]) -> Option<(u32, u32)> {
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    if bytes.len() < 24 || &bytes[..8] != SIGNATURE || &bytes[12..16] != b"IHDR" {
        return None;
    }
    let be = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    Some((be(16), be(20)))
}

#[tokio::test]
async fn the_live_page_draws_lists_a_failed_job_and_its_retry_needs_the_token() {
    let Some((chromium, node)) = driver_tools() else {
        return;
    };
    // A browser and a debug build share two cores: the timing tests wait for this one.
    let _serial = exclusive().await;
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite(&dir);
    let gw = Proc::start(&[
        "serve",
        "--strategy",
        "queue",
        "--queue",
        &url,
        "--admin-token",
        TOKEN,
    ]);
    // Failed on purpose: over this worker's size limit (a fatal error, no retry), within the
    // next one's, so that a Retry from the page ends done.
    let strict = Proc::start_worker(&["--queue", &url, "--max-count", "1000"]);
    let failed = enqueue(gw.addr, "/heavy?n=5000").await;
    let j = wait_status(gw.addr, &failed, "failed", Duration::from_secs(20)).await;
    assert!(
        j["error"].as_str().unwrap().contains("over the limit"),
        "{j}"
    );
    strict.kill();
    let _worker = Proc::start_worker(&["--queue", &url]);
    // Some traffic for the charts while the page runs.
    let addr = gw.addr;
    let traffic = tokio::spawn(async move {
        loop {
            enqueue(addr, "/heavy?n=20000").await;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshot.png");
    let _ = std::fs::remove_file(&screenshot);
    let mut cmd = std::process::Command::new(node);
    cmd.arg("drive.mjs")
        .current_dir(ui_dir())
        .env("OFFLOAD_UI_URL", format!("http://{}", gw.addr))
        .env("OFFLOAD_UI_JOB", &failed)
        .env("OFFLOAD_UI_TOKEN", TOKEN)
        .env("OFFLOAD_UI_SCREENSHOT", &screenshot)
        .env("CHROMIUM", &chromium)
        .stderr(std::process::Stdio::inherit());
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("run node"))
        .await
        .unwrap();
    traffic.abort();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the driver failed ({}): {stdout}",
        out.status
    );
    let seen: Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    eprintln!("the page as the driver saw it: {seen}");

    assert_eq!(seen["strategy"], "queue");
    let backlog = seen["backlog"].as_str().unwrap_or_default();
    assert!(backlog.ends_with(" s of work"), "the backlog: {backlog:?}");
    for chart in ["throughput", "health"] {
        let c = &seen["canvases"][chart];
        assert!(c["points"].as_u64().unwrap() >= 3, "{chart}: {c}");
        assert!(
            c["painted"].as_u64().unwrap() > 1_000,
            "{chart} is blank: {c}"
        );
    }
    assert_eq!(seen["listed"]["status"], "failed");
    assert!(
        seen["listed"]["error"]
            .as_str()
            .unwrap()
            .contains("over the limit")
    );
    let refused = seen["refused"].as_str().unwrap();
    assert!(
        refused.contains("401") && refused.contains("admin token"),
        "{refused}"
    );
    assert_eq!(
        seen["after_refusal"], "failed",
        "a refused Retry changed nothing"
    );
    assert!(seen["requeued"].as_str().unwrap().starts_with("Requeued"));
    assert!(
        seen["tracked"].as_str().unwrap().ends_with("is done"),
        "{seen}"
    );
    assert_eq!(
        seen["token_kept"], true,
        "the token stays in the tab's sessionStorage"
    );
    // Chromium reports the refused fetch itself as a console error; it is the only one allowed.
    let retry_url = format!("http://{}/jobs/{failed}/retry", gw.addr);
    let errors = seen["console_errors"].as_array().unwrap();
    let unexpected: Vec<&Value> = errors
        .iter()
        .filter(|e| {
            !(e["url"] == retry_url.as_str() && e["text"].as_str().unwrap().contains("401"))
        })
        .collect();
    assert!(unexpected.is_empty(), "console errors: {unexpected:?}");
    assert!(errors.len() <= 1, "{errors:?}");

    let png = std::fs::read(&screenshot).expect("the screenshot was written");
    let (width, height) = png_size(&png).expect("a PNG");
    eprintln!(
        "screenshot of /ui: {} ({width}x{height}, {} bytes)",
        screenshot.display(),
        png.len()
    );
    assert_eq!(width, 1280);
    assert!(height >= 600, "{height}");
    assert!(
        png.len() > 20_000,
        "a page of text and charts: {} bytes",
        png.len()
    );

    let j = job(gw.addr, &failed).await;
    assert_eq!(
        (j["status"].as_str(), j["result"]["result"].as_u64()),
        (Some("done"), Some(5000))
    );
}
