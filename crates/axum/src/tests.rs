//! The router as a user builds it, called with `oneshot` (no socket), over a real pool and a
//! SQLite queue in a temp dir, with no worker unless a test starts one: what is stored stays
//! queued.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::FromRef;
use axum::http::{Request, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use offload_pool::admission::Cost;
use offload_pool::{Pool, PoolConfig};
use offload_queue::{JobContext, JobError, QueueOptions};
use serde::{Deserialize, Serialize};
use tower::ServiceExt;

use super::*;

mod admin;

#[derive(Serialize, Deserialize)]
struct Square {
    x: i64,
}
/// A thousand units whatever `x`, a prior that makes them cheap (a microsecond).
impl Job for Square {
    const NAME: &'static str = "square";
    type Output = i64;
    const SECS_PER_UNIT: Option<f64> = Some(1e-9);
    fn units(&self) -> u64 {
        1_000
    }
}

/// Sleeps [`NAP_PER_UNIT`] a unit: a type with no prior.
#[derive(Serialize, Deserialize)]
struct Nap {
    units: u64,
}
impl Job for Nap {
    const NAME: &'static str = "nap";
    type Output = u64;
    fn units(&self) -> u64 {
        self.units
    }
}

/// A nap's run time per unit.
const NAP_PER_UNIT: Duration = Duration::from_micros(200);

/// A type whose prior says a millisecond a unit.
#[derive(Serialize, Deserialize)]
struct Priced {
    n: u64,
}
impl Job for Priced {
    const NAME: &'static str = "priced";
    type Output = u64;
    const SECS_PER_UNIT: Option<f64> = Some(1e-3);
    fn units(&self) -> u64 {
        self.n
    }
}

/// A cheap type by its prior, whose handler spins until it is told to stop.
#[derive(Serialize, Deserialize)]
struct Spin;
impl Job for Spin {
    const NAME: &'static str = "spin";
    type Output = u64;
    const SECS_PER_UNIT: Option<f64> = Some(1e-6);
}

/// A type with no handler registered.
#[derive(Serialize, Deserialize)]
struct Orphan;
impl Job for Orphan {
    const NAME: &'static str = "orphan";
    type Output = ();
}

struct App {
    router: Router,
    offload: Offload,
    /// Runs of each handler, by job name.
    runs: Arc<Runs>,
    _dir: tempfile::TempDir,
}

#[derive(Default)]
struct Runs {
    nap: AtomicUsize,
    priced: AtomicUsize,
    /// A spin started, and when it saw its stop check turn true.
    spin_started: std::sync::atomic::AtomicBool,
    spin_stopped: std::sync::Mutex<Option<std::time::Instant>>,
}

impl App {
    /// "As if a run had measured it": `secs` a unit for `J` (a prior would not replace its
    /// `SECS_PER_UNIT`; a measured run does).
    fn measured<J: Job>(&self, secs: f64) {
        let model = self.offload.pool().model();
        model.observe(self.offload.class::<J>(), 1, Duration::from_secs_f64(secs));
    }
}

/// A one-thread pool holding `max_queue` requests, a queue of `max_backlog` jobs.
async fn app(max_queue: usize, max_backlog: u64) -> App {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("q.db").display());
    let options = QueueOptions {
        max_backlog,
        ..QueueOptions::default()
    };
    let queue = offload_queue::open(&url, options).await.unwrap();
    let pool = Pool::new(PoolConfig {
        threads: 1,
        max_queue,
        ..PoolConfig::default()
    });
    let runs = Arc::new(Runs::default());
    let (nap_runs, priced_runs, spin_runs) = (runs.clone(), runs.clone(), runs.clone());
    let handlers = Handlers::new()
        .on(|s: Square| match s.x {
            x if x < 0 => Err(JobError::fatal("no negatives")),
            x => Ok(x * x),
        })
        .on(move |nap: Nap| {
            nap_runs.nap.fetch_add(1, Ordering::SeqCst);
            let units = u32::try_from(nap.units).expect("a nap of a sane length");
            std::thread::sleep(NAP_PER_UNIT * units);
            Ok(nap.units)
        })
        .on(move |p: Priced| {
            priced_runs.priced.fetch_add(1, Ordering::SeqCst);
            Ok(p.n)
        })
        .on_with(move |_: Spin, cx: &JobContext| {
            spin_runs.spin_started.store(true, Ordering::SeqCst);
            let end = std::time::Instant::now() + Duration::from_secs(10);
            while !cx.stopped() && std::time::Instant::now() < end {
                std::thread::sleep(Duration::from_millis(1));
            }
            *spin_runs.spin_stopped.lock().unwrap() = Some(std::time::Instant::now());
            Ok(0)
        });
    let offload = Offload::new(Arc::new(pool.unwrap()), queue, handlers);
    let router = service(&offload).with_state(offload.clone());
    App {
        router,
        offload,
        runs,
        _dir: dir,
    }
}

/// The service's routes, for any state that gives an `Offload`, with the jobs route beside
/// them, as a user writes them.
fn service<S>(offload: &Offload) -> Router<S>
where
    Offload: FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route(
            "/square",
            post(|auto: Auto, Json(s): Json<Square>| auto.run(s)),
        )
        .route("/nap", post(|auto: Auto, Json(n): Json<Nap>| auto.run(n)))
        .route(
            "/priced",
            post(|auto: Auto, Json(p): Json<Priced>| auto.run(p)),
        )
        .route("/orphan", post(|auto: Auto| auto.run(Orphan)))
        .route("/spin", post(|auto: Auto| auto.run(Spin)))
        .merge(offload.routes())
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", |v| v.to_str().unwrap())
    }
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

async fn call(app: &App, method: &str, uri: &str, prefer: &str, body: &str) -> Answer {
    let prefer = [("prefer", prefer)];
    let headers = if prefer[0].1.is_empty() {
        &[][..]
    } else {
        &prefer[..]
    };
    call_with(app, method, uri, headers, body).await
}

#[tokio::test]
async fn light_work_answers_200_and_the_rest_is_stored_with_its_location() {
    let app = app(64, 100).await;
    let r = call(&app, "POST", "/square", "wait=5", r#"{"x": 7}"#).await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "49"));
    assert_eq!(r.header("content-type"), "application/json");
    assert_eq!(r.header("preference-applied"), "wait=5");
    // A measured class cannot finish within `wait=0`.
    app.measured::<Square>(1e-6);
    let r = call(
        &app,
        "POST",
        "/square",
        "respond-async, wait=0",
        r#"{"x": 3}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(r.header("preference-applied"), "respond-async, wait=0");
    let location = r.header("location").to_owned();
    let body = r.json();
    assert_eq!(body["status_url"], location.as_str());
    assert_eq!(body["status"], "queued");
    assert!(body["pool_finish_us"].as_u64().unwrap() > 0, "{body}");
    let job = call(&app, "GET", &location, "", "").await;
    assert_eq!(job.status, StatusCode::OK);
    assert_eq!(job.json()["status"], "queued", "no worker runs it");
    assert_eq!(job.json()["id"], body["id"]);
    // The handler's refusal, in the pool.
    let r = call(&app, "POST", "/square", "", r#"{"x": -1}"#).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.json()["error"]["code"], "job_failed");
}

#[tokio::test]
async fn client_mistakes_are_4xx_json_and_a_missing_handler_is_a_500() {
    let app = app(64, 100).await;
    let r = call(&app, "POST", "/square", "wait=1.5", r#"{"x": 7}"#).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"]["code"], "invalid_prefer");
    let r = call(&app, "GET", "/jobs/not-an-id", "", "").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"]["code"], "invalid_job_id");
    let unknown = format!("/jobs/{}", "ab".repeat(16));
    let r = call(&app, "GET", &unknown, "wait=1", "").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json()["error"]["code"], "job_not_found");
    let r = call(&app, "POST", "/orphan", "", "").await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(r.json()["error"]["code"], "internal");
}

/// `GET /jobs` counts the jobs by state (and times the done ones when asked); a query it
/// cannot act on is a 400 in the same error shape.
#[tokio::test]
async fn the_jobs_summary_counts_what_is_stored_and_refuses_an_unknown_parameter() {
    let app = app(64, 100).await;
    let r = call(&app, "GET", "/jobs", "", "").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.json()["counts"]["queued"], 0);
    assert!(r.json().get("enqueue_to_done_ms").is_none(), "{}", r.body);
    app.measured::<Square>(1e-6);
    let r = call(
        &app,
        "POST",
        "/square",
        "respond-async, wait=0",
        r#"{"x": 3}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let r = call(&app, "GET", "/jobs?latency=1", "", "").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let summary: JobsSummary = serde_json::from_str(&r.body).unwrap();
    assert_eq!((summary.counts.queued, summary.counts.done), (1, 0));
    assert_eq!(summary.enqueue_to_done_ms, None, "none done yet");
    for bad in ["/jobs?latency=x", "/jobs?status=bogus&latency=1"] {
        let r = call(&app, "GET", bad, "", "").await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.body);
        assert_eq!(r.json()["error"]["code"], "invalid_query", "{bad}");
    }
}

/// `DELETE /jobs/{id}` cancels a stored job, and `POST /jobs/{id}/retry` queues it again,
/// through the routes a service merges; the wrong status is a 409, in the same error shape.
#[tokio::test]
async fn a_stored_job_is_cancelled_and_retried_through_the_routes() {
    let app = app(64, 100).await;
    app.measured::<Square>(1e-6);
    let r = call(
        &app,
        "POST",
        "/square",
        "respond-async, wait=0",
        r#"{"x": 3}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let location = r.header("location").to_owned();
    let retry = format!("{location}/retry");
    let r = call(&app, "POST", &retry, "", "").await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "job_not_retryable");
    let r = call(&app, "DELETE", &location, "", "").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.json()["status"], "cancelled");
    let r = call(&app, "DELETE", &location, "", "").await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "job_finished");
    let r = call(&app, "POST", &retry, "", "").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(r.header("location"), location);
    assert_eq!(r.json()["status"], "queued");
    let unknown = format!("/jobs/{}", "ab".repeat(16));
    let r = call(&app, "DELETE", &unknown, "", "").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = call(&app, "POST", "/jobs/nope/retry", "", "").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"]["code"], "invalid_job_id");
}

/// Once the store has failed, the jobs routes answer 503 `queue_unavailable` at once, with a
/// `Retry-After`, until the store answers again.
#[tokio::test]
async fn a_store_out_of_reach_is_a_503_at_once_until_it_answers() {
    let app = app(64, 100).await;
    let routes = app.offload.job_routes().clone();
    let reach = offload_queue::Reach::new(app.offload.queue().clone());
    let routes = routes.reach(reach.clone());
    let router: Router = routes.router();
    reach.failed(&offload_queue::QueueError::Timeout(
        "a test",
        Duration::ZERO,
    ));
    let req = Request::get("/jobs/".to_owned() + &"ab".repeat(16))
        .body(Body::empty())
        .unwrap();
    let started = std::time::Instant::now();
    let resp = router.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "refused at once"
    );
    assert_eq!(resp.headers()["retry-after"], "1");
    assert_eq!(body_json(resp).await["error"]["code"], "queue_unavailable");
    // The background check finds the store (it never was down) and lets calls through.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while reach.is_down() {
        assert!(
            std::time::Instant::now() < deadline,
            "the check never cleared"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let req = Request::get("/jobs").body(Body::empty()).unwrap();
    assert_eq!(router.oneshot(req).await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn a_full_queue_sends_the_work_to_the_pool_and_503_comes_only_when_both_refuse() {
    // The queue takes nothing: over-budget work runs in the pool, late but answered.
    let spill = app(64, 0).await;
    spill.measured::<Square>(1e-6);
    let r = call(&spill, "POST", "/square", "wait=0", r#"{"x": 4}"#).await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "16"));
    assert_eq!(r.header("preference-applied"), "", "the wait was not kept");
    // Neither the pool (no room at all) nor the queue takes it: it waits in the queue's line
    // for room until shortly before its deadline (300 ms here), then 503.
    let mut full = app(0, 0).await;
    full.offload = full.offload.clone().deadline(Duration::from_millis(300));
    full.router = service(&full.offload).with_state(full.offload.clone());
    let t = std::time::Instant::now();
    let r = call(&full, "POST", "/square", "", r#"{"x": 4}"#).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.json()["error"]["code"], "overloaded");
    assert_eq!(r.header("retry-after"), "1");
    assert!(
        t.elapsed() >= std::time::Duration::from_millis(250),
        "{:?}",
        t.elapsed()
    );
    let line = full.offload.waiting_line().stats();
    assert_eq!(
        (line.ran_out, line.stored, line.waiting),
        (1, 0, 0),
        "{line:?}"
    );
    // The first refusal goes at once; the pacer counted it.
    assert_eq!(full.offload.refusals().stats().refused, 1);
}

/// A service's own state, which gives `auto` its `Offload`.
#[derive(Clone)]
struct AppState {
    offload: Offload,
}

impl FromRef<AppState> for Offload {
    fn from_ref(state: &AppState) -> Offload {
        state.offload.clone()
    }
}

#[tokio::test]
async fn a_nested_router_points_its_202s_under_its_prefix_and_answers_there() {
    let app = app(64, 100).await;
    app.measured::<Square>(1e-6);
    let App { offload, _dir, .. } = app;
    // The same service nested twice, once under a parameter, over the user's own state; and
    // once more with the jobs elsewhere.
    let state = AppState {
        offload: offload.clone(),
    };
    let tasks = offload.clone().jobs_path("tasks/");
    let router = Router::new()
        .nest("/api", service(&offload).with_state(state.clone()))
        .nest("/t/{tenant}", service(&offload).with_state(state))
        .nest("/v2", service(&tasks).with_state(tasks.clone()));
    let nested = App {
        router,
        offload,
        runs: Arc::default(),
        _dir,
    };
    for (post_to, jobs_under) in [
        ("/api/square", "/api/jobs/"),
        ("/t/acme/square", "/t/acme/jobs/"),
        ("/v2/square", "/v2/tasks/"),
    ] {
        let r = call(
            &nested,
            "POST",
            post_to,
            "respond-async, wait=0",
            r#"{"x": 3}"#,
        )
        .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{post_to}: {}", r.body);
        let accepted: AcceptedBody = serde_json::from_str(&r.body).unwrap();
        let location = r.header("location");
        assert_eq!(
            location,
            format!("{jobs_under}{}", accepted.id),
            "{post_to}"
        );
        assert_eq!(accepted.status_url, location);
        assert_eq!(accepted.status, offload_queue::JobStatus::Queued);
        let job = call(&nested, "GET", location, "", "").await;
        assert_eq!(job.status, StatusCode::OK, "{location}: {}", job.body);
        let job: JobBody = serde_json::from_str(&job.body).unwrap();
        assert_eq!(job.id, accepted.id, "{location}");
        // The prefix is needed: the outer router serves no jobs of its own.
        let bare = format!("/jobs/{}", accepted.id);
        assert_eq!(
            call(&nested, "GET", &bare, "", "").await.status,
            StatusCode::NOT_FOUND
        );
    }
    // Under a parameterised nest, a bad id is still the jobs route's JSON answer.
    let r = call(&nested, "GET", "/t/acme/jobs/nope", "", "").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"]["code"], "invalid_job_id");
}

/// The whole body of an answer, as JSON.
async fn body_json(resp: axum::response::Response) -> serde_json::Value {
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX);
    serde_json::from_slice(&body.await.unwrap()).unwrap()
}

#[tokio::test]
async fn error_response_answers_in_the_shape_of_offloads_own_errors() {
    let error = Error::JobNotFound("ab".into());
    let ours = error_response(StatusCode::NOT_FOUND, "job_not_found", error.to_string());
    let theirs = error.into_response();
    assert_eq!(ours.status(), theirs.status());
    assert_eq!(ours.headers()["content-type"], "application/json");
    assert_eq!(theirs.headers()["content-type"], "application/json");
    let expected = serde_json::json!({
        "error": {"code": "job_not_found", "message": "no job ab (unknown, or finished and past its retention)"}
    });
    assert_eq!(body_json(theirs).await, expected);
    assert_eq!(body_json(ours).await, expected);
    let typed = ErrorBody {
        error: ErrorDetail {
            code: "job_not_found".into(),
            message: "x".into(),
        },
    };
    let json = serde_json::to_value(&typed).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"error": {"code": "job_not_found", "message": "x"}})
    );
    assert_eq!(serde_json::from_value::<ErrorBody>(json).unwrap(), typed);
}

/// `GET` a job with a long-poll until it is no longer queued or running: its body.
async fn settled(app: &App, location: &str) -> serde_json::Value {
    for _ in 0..10 {
        let job = call(app, "GET", location, "wait=10", "").await;
        assert_eq!(job.status, StatusCode::OK, "{}", job.body);
        let job = job.json();
        if !matches!(job["status"].as_str(), Some("queued" | "running")) {
            return job;
        }
    }
    panic!("{location} still not done after 100 s");
}

#[tokio::test]
async fn a_type_the_pool_cannot_predict_is_stored_however_small_and_never_run_on_faith() {
    let app = app(64, 100).await;
    let class = app.offload.class::<Nap>();
    assert_eq!(app.offload.pool().model().secs_per_unit(class), None);
    // One unit and a billion (two days' nap): both stored, neither run, as the pool knows
    // nothing of naps; the idle pool and the 250 ms budget change nothing.
    for units in [1, 1_000_000_000] {
        let r = call(
            &app,
            "POST",
            "/nap",
            "",
            &format!(r#"{{"units": {units}}}"#),
        )
        .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{units}: {}", r.body);
        let job = call(&app, "GET", r.header("location"), "", "").await;
        assert_eq!(job.json()["status"], "queued", "no worker runs it");
    }
    // Even when the queue is full: the request waits in the line, and is refused when its
    // wait runs out, but the pool does not take it on faith.
    let full = app_with_deadline(0, Duration::from_millis(300)).await;
    let r = call(&full, "POST", "/nap", "", r#"{"units": 1}"#).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "overloaded");
    for app in [&app, &full] {
        assert_eq!(
            app.runs.nap.load(Ordering::SeqCst),
            0,
            "a nap ran in the pool"
        );
        assert_eq!(app.offload.pool().stats().submitted, 0);
    }
}

/// [`app`] with a queue of `max_backlog` jobs, a roomy pool, and a deadline of `deadline`.
async fn app_with_deadline(max_backlog: u64, deadline: Duration) -> App {
    let mut app = app(64, max_backlog).await;
    app.offload = app.offload.clone().deadline(deadline);
    app.router = service(&app.offload).with_state(app.offload.clone());
    app
}

#[tokio::test]
async fn a_types_prior_is_in_the_model_from_the_start_and_its_units_decide() {
    let app = app(64, 100).await;
    let class = app.offload.class::<Priced>();
    assert_eq!(
        app.offload.pool().model().secs_per_unit(class),
        Some(1e-3),
        "Offload::new gave the model Priced::SECS_PER_UNIT"
    );
    // `Priced::units` is `n`: 1,000 units are predicted at 1 s, past the 250 ms budget...
    let r = call(&app, "POST", "/priced", "", r#"{"n": 1000}"#).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let predicted = r.json()["pool_finish_us"].as_u64().unwrap();
    assert!(
        (1_000_000..1_100_000).contains(&predicted),
        "1,000 units at 1 ms: {predicted} us"
    );
    assert_eq!(app.runs.priced.load(Ordering::SeqCst), 0, "stored, not run");
    // ...and 10 at 10 ms, within it: run in the pool.
    let r = call(&app, "POST", "/priced", "", r#"{"n": 10}"#).await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "10"));
    assert_eq!(app.runs.priced.load(Ordering::SeqCst), 1);
    // That run (microseconds) replaced the prior.
    let learnt = app.offload.pool().model().secs_per_unit(class);
    assert!(learnt.is_some_and(|s| s < 1e-3), "{learnt:?}");
}

#[tokio::test]
async fn a_services_own_pool_work_has_its_own_class_beside_the_job_types() {
    let app = app(64, 100).await;
    let model = app.offload.pool().model();
    let priced = app.offload.class::<Priced>();
    // The job types are classes named as the types, each its own.
    let names: Vec<_> = model.classes().into_iter().map(|(_, n)| n).collect();
    for name in ["nap", "priced", "spin", "square"] {
        assert!(names.contains(&name), "{name} not among {names:?}");
    }
    assert_ne!(app.offload.class::<Nap>(), priced);
    assert_eq!(model.find("priced"), Some(priced));
    // The service's own work on the same pool, named otherwise: another class, so its runs
    // and its backlog never move a job type's figure, whatever order things were named in.
    let own = model.class("thumbnail").unwrap();
    assert_ne!(own, priced);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let done = app
        .offload
        .pool()
        .submit_one(deadline, Cost::new(own, 1), |_| {
            std::thread::sleep(Duration::from_millis(20));
        });
    done.unwrap().await.unwrap();
    assert!(model.measured(own), "the pool timed the service's own run");
    assert_eq!(
        model.secs_per_unit(priced),
        Some(1e-3),
        "Priced's prior stands"
    );
    assert!(!model.measured(priced));
    // A job type without a handler is no class: never predicted, so never run in the pool.
    assert_eq!(
        app.offload.class::<Orphan>(),
        offload_pool::admission::Class::NONE
    );
}

#[tokio::test]
async fn the_in_process_workers_runs_teach_the_model_so_the_next_job_runs_in_the_pool() {
    let app = app(64, 100).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(offload_queue::worker::run(
        app.offload.queue().clone(),
        app.offload.executor(),
        offload_queue::worker::WorkerConfig::default(),
        async move {
            let _ = stopped.await;
        },
    ));
    // Untried: stored, and the worker runs it (100 units, 20 ms).
    let r = call(&app, "POST", "/nap", "", r#"{"units": 100}"#).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let job = settled(&app, r.header("location")).await;
    assert_eq!(
        (&job["status"], &job["result"]),
        (&"done".into(), &100.into())
    );
    // The worker's run taught the model its time per unit, from `Nap::units` (a run counted
    // as one unit would read 20 ms).
    let class = app.offload.class::<Nap>();
    let learnt = app.offload.pool().model().secs_per_unit(class);
    let per_unit = NAP_PER_UNIT.as_secs_f64();
    assert!(
        learnt.is_some_and(|s| s >= per_unit && s < 5.0 * per_unit),
        "{learnt:?} s a unit, {per_unit} expected"
    );
    // Now predicted at about 20 ms, the same job runs in the pool and answers at once.
    let r = call(&app, "POST", "/nap", "", r#"{"units": 100}"#).await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "100"));
    assert_eq!(app.offload.pool().stats().completed, 1);
    assert_eq!(app.runs.nap.load(Ordering::SeqCst), 2);
    stop.send(()).unwrap();
    worker.await.unwrap();
}

async fn call_with(
    app: &App,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .header("content-type", "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap();
    let resp = app.router.clone().oneshot(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

/// Jobs stored, as `GET /jobs` counts them.
async fn stored(app: &App) -> u64 {
    let c = call(app, "GET", "/jobs", "", "").await.json()["counts"].clone();
    [
        "queued",
        "running",
        "done",
        "failed",
        "cancelled",
        "expired",
    ]
    .iter()
    .map(|k| c[k].as_u64().unwrap())
    .sum()
}

/// A worker in this process until the returned sender is dropped or sent to.
fn worker(
    app: &App,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn({
        let run = offload_queue::worker::run(
            app.offload.queue().clone(),
            app.offload.executor(),
            offload_queue::worker::WorkerConfig::default(),
            async move {
                let _ = stopped.await;
            },
        );
        async move {
            run.await;
        }
    });
    (stop, worker)
}

/// With an `Idempotency-Key`, even work the pool would run at once is stored, once: fifty
/// repeats sent together get the same job, other work under the key is a 422, and once the job
/// is done a repeat gets its result. Bad keys and deadlines are 400s and store nothing.
#[tokio::test]
async fn a_keyed_request_stores_one_job_and_a_repeat_gets_it() {
    let app = app(64, 100).await;
    let key = [("idempotency-key", "\"square-4\"")];
    let first = call_with(&app, "POST", "/square", &key, r#"{"x": 4}"#).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.body);
    let location = first.header("location").to_owned();
    let app = Arc::new(app);
    let mut repeats = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let app = Arc::clone(&app);
        repeats.spawn(async move {
            let key = [("idempotency-key", "square-4")];
            let r = call_with(&app, "POST", "/square", &key, r#"{"x": 4}"#).await;
            (r.status, r.header("location").to_owned())
        });
    }
    for (status, at) in repeats.join_all().await {
        assert_eq!(
            (status, at.as_str()),
            (StatusCode::ACCEPTED, location.as_str())
        );
    }
    assert_eq!(stored(&app).await, 1);
    let other = call_with(&app, "POST", "/square", &key, r#"{"x": 5}"#).await;
    assert_eq!(
        other.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        other.body
    );
    assert_eq!(other.json()["error"]["code"], "idempotency_key_reused");
    let long = "k".repeat(256);
    for (header, value, code) in [
        ("idempotency-key", long.as_str(), "invalid_idempotency_key"),
        ("idempotency-key", "", "invalid_idempotency_key"),
        ("job-deadline", "-1", "invalid_deadline"),
        ("job-deadline", "soon", "invalid_deadline"),
    ] {
        let r = call_with(&app, "POST", "/square", &[(header, value)], r#"{"x": 6}"#).await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{header}: {value:?}: {}",
            r.body
        );
        assert_eq!(r.json()["error"]["code"], code);
    }
    assert_eq!(stored(&app).await, 1, "nothing stored by a refused request");
    // Done: a repeat answers the result, and says where the job is.
    let (stop, worker) = worker(&app);
    let job = settled(&app, &location).await;
    assert_eq!(job["result"], 16);
    let again = call_with(&app, "POST", "/square", &key, r#"{"x": 4}"#).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(again.header("content-location"), location);
    assert_eq!(
        (&again.json()["status"], &again.json()["result"]),
        (&"done".into(), &16.into())
    );
    stop.send(()).unwrap();
    worker.await.unwrap();
}

/// `Job-Deadline` is the stored job's deadline: a job still queued when it passes ends
/// `expired` and its handler never runs.
#[tokio::test]
async fn a_job_not_started_by_its_deadline_expires_unrun() {
    let app = app(64, 100).await;
    let r = call_with(
        &app,
        "POST",
        "/nap",
        &[("job-deadline", "0.2")],
        r#"{"units": 1}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let location = r.header("location").to_owned();
    let job = call(&app, "GET", &location, "", "").await.json();
    let (enqueued, expires) = (
        job["enqueued_at"].as_u64().unwrap(),
        job["expires_at"].as_u64(),
    );
    assert!(
        expires.is_some_and(|e| e >= enqueued + 150 && e <= enqueued + 250),
        "{job}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (stop, worker) = worker(&app);
    let job = settled(&app, &location).await;
    assert_eq!(job["status"], "expired", "{job}");
    assert_eq!(app.runs.nap.load(Ordering::SeqCst), 0, "never ran");
    let r = call(&app, "POST", &format!("{location}/retry"), "", "").await;
    assert_eq!(
        r.status,
        StatusCode::ACCEPTED,
        "an expired job can be retried: {}",
        r.body
    );
    let job = settled(&app, &location).await;
    assert_eq!(
        (&job["status"], &job["result"]),
        (&"done".into(), &1.into())
    );
    stop.send(()).unwrap();
    worker.await.unwrap();
}

/// `GET /jobs?status=...` pages through one status's jobs, newest first, following `next`;
/// every bad parameter is a 400 `invalid_query` that reads nothing.
#[tokio::test]
async fn jobs_are_listed_by_status_a_page_at_a_time() {
    let app = app(64, 100).await;
    let mut stored = Vec::new();
    for units in 1..=3 {
        let r = call(
            &app,
            "POST",
            "/nap",
            "",
            &format!(r#"{{"units": {units}}}"#),
        )
        .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
        stored.push(r.json()["id"].as_str().unwrap().to_owned());
    }
    let r = call(&app, "DELETE", &format!("/jobs/{}", stored[0]), "", "").await;
    assert_eq!(r.status, StatusCode::OK);
    let mut listed = Vec::new();
    let mut uri = "/jobs?status=queued&limit=1".to_owned();
    loop {
        let page = call(&app, "GET", &uri, "", "").await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let page: JobList = serde_json::from_str(&page.body).unwrap();
        assert!(page.jobs.len() <= 1);
        listed.extend(page.jobs.iter().map(|j| j.id.clone()));
        match page.next {
            Some(next) => uri = format!("/jobs?status=queued&limit=1&after={next}"),
            None => break,
        }
    }
    assert_eq!(
        listed,
        [stored[2].clone(), stored[1].clone()],
        "newest first"
    );
    let page: JobList = serde_json::from_str(
        &call(&app, "GET", "/jobs?status=cancelled", "", "")
            .await
            .body,
    )
    .unwrap();
    assert_eq!(page.jobs.len(), 1);
    assert_eq!(page.jobs[0].id, stored[0]);
    assert_eq!(page.next, None);
    for bad in [
        "status=lost",
        "status=queued&limit=0",
        "status=queued&limit=1001",
        "status=queued&limit=ten",
        "status=queued&after=zz",
        "status=queued&after=1.x",
        "limit=5",
        "after=1.2",
        "status=done&latency=1",
    ] {
        let r = call(&app, "GET", &format!("/jobs?{bad}"), "", "").await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.body);
        assert_eq!(r.json()["error"]["code"], "invalid_query", "{bad}");
    }
}

/// `Job-Delay` holds a stored job back, `Job-Priority` is kept with it, and either out of its
/// range is a 400 `invalid_schedule` that stores nothing.
#[tokio::test]
async fn a_delayed_job_waits_and_a_bad_schedule_is_refused() {
    let app = app(64, 100).await;
    let (stop, worker) = worker(&app);
    let headers = [("job-delay", "0.4"), ("job-priority", "3")];
    let r = call_with(&app, "POST", "/nap", &headers, r#"{"units": 1}"#).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let location = r.header("location").to_owned();
    let job = settled(&app, &location).await;
    assert_eq!(
        (&job["status"], &job["priority"]),
        (&"done".into(), &3.into()),
        "{job}"
    );
    let waited = job["started_at"].as_u64().unwrap() - job["enqueued_at"].as_u64().unwrap();
    assert!(waited >= 395, "started {waited} ms after it was stored");
    for (header, value) in [
        ("job-delay", "-1"),
        ("job-delay", "soon"),
        ("job-priority", "10"),
        ("job-priority", "urgent"),
    ] {
        let r = call_with(&app, "POST", "/nap", &[(header, value)], r#"{"units": 1}"#).await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{header}: {value}: {}",
            r.body
        );
        assert_eq!(r.json()["error"]["code"], "invalid_schedule");
    }
    assert_eq!(stored(&app).await, 1);
    stop.send(()).unwrap();
    worker.await.unwrap();
}

/// A job running in the pool for a request whose client goes away (the request's future is
/// dropped) is told to stop: its handler's `JobContext::stopped()` turns true at once, and its
/// thread is free again.
#[tokio::test]
async fn a_pool_run_is_told_to_stop_when_its_client_goes_away() {
    let app = Arc::new(app(64, 100).await);
    let request = tokio::spawn({
        let app = Arc::clone(&app);
        async move { call(&app, "POST", "/spin", "", "").await.status }
    });
    let end = std::time::Instant::now() + Duration::from_secs(5);
    while !app.runs.spin_started.load(Ordering::SeqCst) {
        assert!(
            std::time::Instant::now() < end,
            "the spin never started in the pool"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let gone = std::time::Instant::now();
    request.abort();
    let stopped = loop {
        if let Some(at) = *app.runs.spin_stopped.lock().unwrap() {
            break at;
        }
        assert!(
            std::time::Instant::now() < end,
            "the handler was never told to stop"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let told = stopped.duration_since(gone);
    assert!(
        told < Duration::from_millis(500),
        "told to stop {told:?} after the client left"
    );
}
