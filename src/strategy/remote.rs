//! `remote`: each request is forwarded over pooled keep-alive HTTP to one of several
//! `offload compute` services, the Rust microservice of the seed.
//!
//! The gateway queues instead of bouncing. Each backend gets no more requests at once than
//! its limit: the capacity it reports on `/health`, lowered while the backend says its own
//! queue runs long (see [`gate::Limit`]). The rest wait in the gateway, in arrival order,
//! under the same deadline admission as the pool: a request predicted not to finish in time
//! is refused at once with 503 and a `Retry-After` from the prediction. A waiting request
//! goes to the backend with the most free room the moment one frees up.
//!
//! Failures: a backend that refuses the connection or does not take it within the connect
//! timeout (nothing was sent) is marked down and the request goes to another, if one is up.
//! A backend's 503 (nothing ran; another gateway may share it) halves its limit and the
//! request waits its turn again, first in line, while its deadline allows.
//!
//! No request is left on a dead host. The work is pure, so a request may run twice. When its
//! backend is marked down while it is in flight (by the health checker, which finds a silent
//! host within an interval and a check's wait, 2 s by default; or because another request to
//! it failed), or when its own connection breaks after sending (reset, closed, any transport
//! error), the gateway drops its connection, which tells the compute service to stop the
//! work, and sends it again at once, first in line, to another backend that is up. If none
//! is up it answers 502 at once, as for a refused connection: the gateway does not hold
//! requests for a host that may never come back, and a new request would get 502 just the
//! same. A request is sent again at most [`MAX_RESENDS`] times, so that one that kills its
//! host cannot go on to kill every other. Only a failure that is not the transport's (an
//! unreadable answer, a status other than 200, 503 and 504) answers 502 without another try.
//! A backend marked down gets no traffic until the health checker sees it answer `/health`
//! again; at the deadline the gateway stops waiting (504) and drops the connection.

mod gate;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::watch;

use self::gate::Gate;
use super::{About, Done, ExecError, Helper, RETRY_AFTER_SECS};
use prometheus_client::encoding::EncodeLabelSet;

use crate::metrics::{
    Counter, Family, FloatGauge, Gauge, Histogram, Latencies, Registry, latencies,
};
use crate::work::Work;

/// What `remote` declares of itself (see [`About`]).
pub(super) const ABOUT: About = About {
    name: "remote",
    helper: Some(Helper::Compute),
    routes: false,
    on_runtime: false,
    in_flood: true,
    in_mix: false,
    advice: "When the work needs machines of its own, or must scale apart from the service.",
};

/// Settings of the remote strategy.
#[derive(Debug, Clone)]
pub struct RemoteConfig {
    /// Base URLs of the compute services, e.g. `http://127.0.0.1:3001`.
    pub backends: Vec<Uri>,
    /// How often each backend's `/health` is checked.
    pub health_interval: Duration,
    /// How long a connection attempt may take before the backend counts as down (and the
    /// requests in flight on it go elsewhere).
    pub connect_timeout: Duration,
    /// Hard cap on requests waiting in the gateway (the deadline decides first).
    pub max_queue: usize,
}

/// One compute service and what the gateway knows of it.
#[derive(Debug)]
pub struct Backend {
    base: String,
    compute: Uri,
    health: Uri,
    up: AtomicBool,
    /// Counts the times the backend was marked down; requests in flight on it watch it.
    downs: watch::Sender<u64>,
    /// Its label in `/metrics`; the counters and the histogram are its series.
    label: BackendLabel,
    ok: Counter,
    failed: Counter,
    refused: Counter,
    overloaded: Counter,
    /// Requests in flight when the backend was lost (marked down, or their connection broke).
    lost: Counter,
    latency: Histogram,
}

/// Forwards work to compute services.
#[derive(Debug, Clone)]
pub struct Remote {
    backends: Arc<[Backend]>,
    client: Client<HttpConnector, Full<Bytes>>,
    gate: Arc<Gate>,
    metrics: BackendMetrics,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabel {
    backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendOutcome {
    backend: String,
    outcome: &'static str,
}

/// The per-backend families: the gauges are set from the gate at each scrape.
#[derive(Debug, Clone)]
struct BackendMetrics {
    requests: Family<BackendOutcome, Counter>,
    latency: Latencies<BackendLabel>,
    up: Family<BackendLabel, Gauge>,
    outstanding: Family<BackendLabel, Gauge>,
    limit: Family<BackendLabel, FloatGauge>,
    capacity: Family<BackendLabel, Gauge>,
}

/// Times a request may be sent again after losing its backend mid-flight: enough for a host
/// and then a second one lost under it (partitions, restarts), and a bound on the hosts that
/// a request which kills its host can take down with it.
const MAX_RESENDS: u32 = 2;

/// The least time a health check waits for `/health`. The answer takes a round trip on a
/// kept-alive connection and two on a new one (600 ms at a 300 ms cross-datacenter RTT), plus
/// whatever a busy host or gateway adds before it is scheduled. A shorter wait would mark a
/// healthy far or busy host down, and a mark sends every request in flight on it elsewhere.
const HEALTH_TIMEOUT_MIN: Duration = Duration::from_secs(1);

/// The first pause before a request refused by a busy backend asks again; doubles per try.
const RETRY_PAUSE: Duration = Duration::from_millis(10);
/// The longest pause between such tries.
const RETRY_PAUSE_MAX: Duration = Duration::from_millis(500);

impl Remote {
    /// Builds the client and starts the health checker on the current runtime.
    ///
    /// # Errors
    /// A message when a URL is not `http://host:port` or no backend is given.
    pub fn start(config: RemoteConfig) -> Result<Remote, String> {
        if config.backends.is_empty() {
            return Err("at least one compute URL is needed".into());
        }
        let metrics = BackendMetrics {
            requests: Family::default(),
            latency: latencies(),
            up: Family::default(),
            outstanding: Family::default(),
            limit: Family::default(),
            capacity: Family::default(),
        };
        let mut backends = Vec::new();
        for uri in &config.backends {
            if uri.scheme_str() != Some("http") || uri.authority().is_none() {
                return Err(format!(
                    "{uri}: a compute URL must look like http://host:port"
                ));
            }
            let base = uri.to_string().trim_end_matches('/').to_string();
            let parse = |path: &str| {
                format!("{base}{path}")
                    .parse::<Uri>()
                    .map_err(|e| format!("{uri}: {e}"))
            };
            let request = |outcome| {
                let backend = base.clone();
                metrics
                    .requests
                    .get_or_create_owned(&BackendOutcome { backend, outcome })
            };
            let label = BackendLabel {
                backend: base.clone(),
            };
            backends.push(Backend {
                compute: parse("/compute")?,
                health: parse("/health")?,
                up: AtomicBool::new(true),
                downs: watch::Sender::new(0),
                latency: metrics.latency.get_or_create_owned(&label),
                label,
                ok: request("ok"),
                failed: request("failed"),
                refused: request("refused"),
                overloaded: request("overloaded"),
                lost: request("lost"),
                base,
            });
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.connect_timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        let backends: Arc<[Backend]> = backends.into();
        let gate = Arc::new(Gate::new(backends.clone(), config.max_queue));
        let remote = Remote {
            backends,
            client,
            gate,
            metrics,
        };
        for i in 0..remote.backends.len() {
            tokio::spawn(remote.clone().check_health(i, config.health_interval));
        }
        Ok(remote)
    }

    /// The backends, in the order given.
    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }

    /// The predicted wait of a request arriving now.
    pub fn predicted_wait(&self) -> Duration {
        self.gate.predicted_wait()
    }

    /// # Errors
    /// [`ExecError::Late`] when it is predicted to miss its deadline; [`ExecError::Overloaded`]
    /// at the gateway queue's cap, or when backends stayed busy until too close to the
    /// deadline; [`ExecError::BadGateway`] when no backend could be reached, one failed, or
    /// the request lost its backend with no other up (or a third time);
    /// [`ExecError::Expired`] past the deadline.
    pub async fn run(&self, work: Work, deadline: Instant) -> Result<Done, ExecError> {
        let body = Bytes::from(work.to_json().to_string());
        let cost = work.cost(self.gate.classes());
        // Counted in the model until this request ends, however it ends.
        let _admitted = self.gate.admit(cost, deadline)?;
        let mut pause = RETRY_PAUSE;
        let mut resends = 0;
        let mut first_in_line = false;
        loop {
            let slot = self
                .gate
                .enqueue(first_in_line)
                .take()
                .await
                .ok_or(ExecError::ShuttingDown)?;
            let i = slot.backend;
            let start = Instant::now();
            match self.forward(i, body.clone(), deadline).await {
                Ok(done) => {
                    self.gate.answered(&slot, cost, start.elapsed(), done);
                    return Ok(done);
                }
                // Nothing was sent: another backend may take it, if one is up.
                Err(Attempt::Refused(e)) => {
                    drop(slot);
                    if !self.other_up(i) {
                        return Err(ExecError::BadGateway(e));
                    }
                    self.gate.retried.inc();
                }
                // It may have run, or be running still on a host we cannot reach; the work
                // is pure, so another backend runs it again.
                Err(Attempt::Lost(e)) => {
                    drop(slot);
                    resends += 1;
                    if resends > MAX_RESENDS || !self.other_up(i) {
                        return Err(ExecError::BadGateway(e));
                    }
                    self.gate.resent.inc();
                }
                // Nothing ran: the backend is busier than its limit said (it may be shared).
                Err(Attempt::Overloaded(retry)) => {
                    self.gate.overloaded(&slot);
                    drop(slot);
                    if Instant::now() + pause >= deadline {
                        return Err(ExecError::Overloaded {
                            retry_after_secs: retry,
                        });
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(RETRY_PAUSE_MAX);
                    self.gate.retried.inc();
                }
                Err(e) => return Err(e.into_exec()),
            }
            first_in_line = true;
        }
    }

    /// Whether a backend other than `i` takes traffic.
    fn other_up(&self, i: usize) -> bool {
        self.backends
            .iter()
            .enumerate()
            .any(|(j, b)| j != i && b.is_up())
    }

    /// One try on backend `i`, until its answer, the deadline, or the backend is lost.
    async fn forward(&self, i: usize, body: Bytes, deadline: Instant) -> Result<Done, Attempt> {
        let b = &self.backends[i];
        let start = Instant::now();
        let req = Request::post(b.compute.clone())
            .header("content-type", "application/json")
            .body(Full::new(body))
            .map_err(|e| Attempt::Failed(e.to_string()))?;
        // Watched from before the check, so a mark between the two is not missed.
        let mut downs = b.downs.subscribe();
        if !b.is_up() && self.other_up(i) {
            // Marked down since this place was handed out; the line goes to one that is up.
            return Err(Attempt::Refused(format!("{}: marked down", b.base)));
        }
        let marked_down = async move {
            // The sender lives as long as the backend, so this ends only on a mark.
            if downs.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        // Transport errors as (nothing was sent, message).
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| (not_sent(&e), e.to_string()))?;
            let status = resp.status();
            let retry = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| (false, e.to_string()))?
                .to_bytes();
            Ok::<_, (bool, String)>((status, retry, bytes))
        };
        let answer = tokio::time::timeout_at(deadline.into(), exchange);
        // Dropping the exchange on either branch closes its connection.
        let outcome = tokio::select! {
            biased;
            answer = answer => answer,
            () = marked_down => {
                b.lost.inc();
                // The mark itself was logged once; this is one line per request.
                tracing::debug!(backend = %b.base, "request lost with its compute service");
                return Err(Attempt::Lost(format!("{}: marked down mid-request", b.base)));
            }
        };
        let outcome = match outcome {
            Err(_) => {
                b.failed.inc();
                return Err(Attempt::Expired);
            }
            Ok(Err((true, e))) => {
                b.refused.inc();
                if b.mark_down() {
                    tracing::warn!(backend = %b.base, error = %e, "compute service unreachable; marked down");
                }
                return Err(Attempt::Refused(format!("{}: {e}", b.base)));
            }
            Ok(Err((false, e))) => {
                b.lost.inc();
                if b.mark_down() {
                    tracing::warn!(backend = %b.base, error = %e, "compute service failed mid-request; marked down");
                }
                return Err(Attempt::Lost(format!("{}: {e}", b.base)));
            }
            Ok(Ok(o)) => o,
        };
        b.latency.observe(start.elapsed().as_secs_f64());
        match outcome {
            (StatusCode::OK, _, bytes) => {
                b.ok.inc();
                parse_done(&bytes)
                    .ok_or_else(|| Attempt::Failed(format!("{}: unreadable answer", b.base)))
            }
            (StatusCode::SERVICE_UNAVAILABLE, retry, _) => {
                b.overloaded.inc();
                Err(Attempt::Overloaded(retry.unwrap_or(RETRY_AFTER_SECS)))
            }
            (StatusCode::GATEWAY_TIMEOUT, _, _) => {
                b.failed.inc();
                Err(Attempt::Expired)
            }
            (status, _, bytes) => {
                b.failed.inc();
                let text = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
                Err(Attempt::Failed(format!(
                    "{} answered {status}: {text}",
                    b.base
                )))
            }
        }
    }

    /// Checks backend `i`'s `/health` each `interval`: up when it answers 200 within the
    /// interval (at least [`HEALTH_TIMEOUT_MIN`]), down on any other outcome. So a silent host
    /// is marked down within an interval plus that (2 s by default). One task per backend, so
    /// that a silent one does not hold up the checks of the others.
    async fn check_health(self, i: usize, interval: Duration) {
        let b = &self.backends[i];
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let req = Request::get(b.health.clone()).body(Full::new(Bytes::new()));
            let Ok(req) = req else { continue };
            let answer = async {
                let r = self.client.request(req).await.ok()?;
                if r.status() != StatusCode::OK {
                    return None;
                }
                let bytes = r.into_body().collect().await.ok()?.to_bytes();
                let h: Option<crate::api::Health> = serde_json::from_slice(&bytes).ok();
                Some(h.and_then(|h| {
                    let probe = probe_of(&h);
                    Some((h.capacity?, h.threads.unwrap_or(1), probe))
                }))
            };
            let answer = tokio::time::timeout(interval.max(HEALTH_TIMEOUT_MIN), answer)
                .await
                .ok()
                .flatten();
            let ok = answer.is_some();
            if let Some(Some((capacity, threads, probe))) = answer {
                self.gate.set_capacity(i, capacity, threads, &probe);
            }
            if ok && !b.up.swap(true, Relaxed) {
                tracing::info!(backend = %b.base, up = true, "compute service health changed");
                self.gate.backend_up();
            } else if !ok && b.mark_down() {
                tracing::info!(backend = %b.base, up = false, "compute service health changed");
            }
        }
    }

    /// Registers the per-backend requests by outcome, latency, health and outstanding
    /// requests, and the gate's metrics.
    pub fn register(&self, registry: &mut Registry) {
        let m = &self.metrics;
        registry.register(
            "offload_backend_up",
            "1 when the compute service is taking traffic",
            m.up.clone(),
        );
        registry.register(
            "offload_backend_outstanding",
            "Requests sent to the compute service and not yet answered",
            m.outstanding.clone(),
        );
        registry.register(
            "offload_backend_limit",
            "Requests the gateway sends the compute service at once (latency-adjusted)",
            m.limit.clone(),
        );
        registry.register(
            "offload_backend_capacity",
            "Requests the compute service said it admits at once (/health)",
            m.capacity.clone(),
        );
        self.gate.register(registry);
        registry.register(
            "offload_backend_requests",
            "Requests to compute services by outcome",
            m.requests.clone(),
        );
        registry.register(
            "offload_backend_latency_seconds",
            "Latency of answered requests to compute services",
            m.latency.clone(),
        );
    }

    /// Sets the gauges read from the backends and the gate, before a scrape.
    pub fn refresh_metrics(&self) {
        let m = &self.metrics;
        for (b, r) in self.backends.iter().zip(self.gate.rooms()) {
            m.up.get_or_create(&b.label).set(b.is_up().into());
            m.outstanding
                .get_or_create(&b.label)
                .set(r.outstanding as i64);
            m.limit.get_or_create(&b.label).set(r.limit);
            m.capacity.get_or_create(&b.label).set(r.capacity as i64);
        }
        self.gate.refresh_metrics();
    }
}

impl Backend {
    /// The backend's base URL.
    pub fn url(&self) -> &str {
        &self.base
    }
    /// Whether the backend takes traffic now.
    pub fn is_up(&self) -> bool {
        self.up.load(Relaxed)
    }

    /// Marks the backend down and, if it was up, tells the requests in flight on it; true
    /// when it was up.
    fn mark_down(&self) -> bool {
        let was_up = self.up.swap(false, Relaxed);
        if was_up {
            self.downs.send_modify(|n| *n += 1);
        }
        was_up
    }
}

/// How one forwarding attempt ended, when it did not give a result.
enum Attempt {
    /// The connection was refused or never made: nothing was sent, so another backend may try.
    Refused(String),
    /// The backend was lost with the request on it: marked down, or the connection broke
    /// after sending. The request may have run; being pure, it may run again elsewhere.
    Lost(String),
    /// Not the transport's fault: an unreadable answer or an unexpected status.
    Failed(String),
    Overloaded(u64),
    Expired,
}

impl Attempt {
    fn into_exec(self) -> ExecError {
        match self {
            Attempt::Refused(e) | Attempt::Lost(e) | Attempt::Failed(e) => ExecError::BadGateway(e),
            Attempt::Overloaded(retry_after_secs) => ExecError::Overloaded { retry_after_secs },
            Attempt::Expired => ExecError::Expired,
        }
    }
}

/// Whether a client error happened before any of the request was sent: the connection was
/// refused, or a pooled keep-alive connection turned out closed (its peer died) before the
/// request went out. Only then is a retry on another backend safe.
fn not_sent(e: &hyper_util::client::legacy::Error) -> bool {
    e.is_connect()
        || std::error::Error::source(e)
            .and_then(|s| s.downcast_ref::<hyper::Error>())
            .is_some_and(hyper::Error::is_canceled)
}

/// The `secs_per_unit` a compute service reports on `/health`, by class.
fn probe_of(health: &crate::api::Health) -> Vec<(crate::work::Kind, f64)> {
    let Some(secs) = &health.secs_per_unit else {
        return Vec::new();
    };
    crate::work::Kind::ALL
        .iter()
        .filter_map(|k| {
            let v = *secs.get(k.name())?;
            (v.is_finite() && v > 0.0).then_some((*k, v))
        })
        .collect()
}

/// Reads the compute service's answer: the same [`crate::api::HeavyAnswer`] `/heavy` gives.
fn parse_done(bytes: &[u8]) -> Option<Done> {
    let a: crate::api::HeavyAnswer = serde_json::from_slice(bytes).ok()?;
    Some(Done {
        result: a.result,
        wait: Duration::from_micros(a.wait_us),
        run: Duration::from_micros(a.run_us),
    })
}
