//! `remote`: each request is forwarded over pooled keep-alive HTTP to one of several
//! `offload compute` services, the Rust microservice of the seed.
//!
//! The gateway queues instead of bouncing. Each backend gets no more requests at once than
//! its limit: the capacity it reports on `/health`, lowered while the backend says its own
//! queue runs long (see [`Limit`]). The rest wait in the gateway, in arrival order, under the
//! same deadline admission as the pool: a request predicted not to finish in time is refused
//! at once with 503 and a `Retry-After` from the prediction. A waiting request goes to the
//! backend with the most free room the moment one frees up.
//!
//! Failures: a backend that refuses the connection (nothing was sent) is marked down and the
//! request goes to another, if one is up. A backend's 503 (nothing ran; another gateway may
//! share it) halves its limit and the request waits its turn again, first in line, while its
//! deadline allows. Any other transport error answers 502 (the request may have run). A
//! backend marked down gets no traffic until the health checker sees it answer `/health`
//! again; at the deadline the gateway stops waiting (504) and drops the connection, which
//! tells the compute service to stop the work.

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

use self::gate::Gate;
use super::{Done, ExecError, RETRY_AFTER_SECS};
use crate::metrics::{Counter, Histogram, header, sample};
use crate::work::Work;

/// Settings of the remote strategy.
#[derive(Debug, Clone)]
pub struct RemoteConfig {
    /// Base URLs of the compute services, e.g. `http://127.0.0.1:3001`.
    pub backends: Vec<Uri>,
    /// How often each backend's `/health` is checked.
    pub health_interval: Duration,
    /// How long a connection attempt may take before the backend counts as down.
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
    ok: Counter,
    failed: Counter,
    refused: Counter,
    overloaded: Counter,
    latency: Histogram,
}

/// Forwards work to compute services.
#[derive(Debug, Clone)]
pub struct Remote {
    backends: Arc<[Backend]>,
    client: Client<HttpConnector, Full<Bytes>>,
    gate: Arc<Gate>,
}

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
            backends.push(Backend {
                compute: parse("/compute")?,
                health: parse("/health")?,
                base,
                up: AtomicBool::new(true),
                ok: Counter::default(),
                failed: Counter::default(),
                refused: Counter::default(),
                overloaded: Counter::default(),
                latency: Histogram::default(),
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
        };
        tokio::spawn(remote.clone().check_health(config.health_interval));
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
    /// deadline; [`ExecError::BadGateway`] when no backend could be reached or one failed;
    /// [`ExecError::Expired`] past the deadline.
    pub async fn run(&self, work: Work, deadline: Instant) -> Result<Done, ExecError> {
        let body = Bytes::from(work.to_json().to_string());
        let cost = work.cost();
        // Counted in the model until this request ends, however it ends.
        let _admitted = self.gate.admit(cost, deadline)?;
        let mut pause = RETRY_PAUSE;
        let mut first_in_line = false;
        loop {
            let slot = self
                .gate
                .enqueue(first_in_line)
                .take()
                .await
                .ok_or(ExecError::ShuttingDown)?;
            let start = Instant::now();
            match self.forward(slot.backend, body.clone(), deadline).await {
                Ok(done) => {
                    self.gate.answered(&slot, cost, start.elapsed(), done);
                    return Ok(done);
                }
                // Nothing was sent: another backend may take it, if one is up.
                Err(Attempt::Refused(e)) => {
                    let i = slot.backend;
                    drop(slot);
                    if !self
                        .backends
                        .iter()
                        .enumerate()
                        .any(|(j, b)| j != i && b.is_up())
                    {
                        return Err(ExecError::BadGateway(e));
                    }
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
                }
                Err(e) => return Err(e.into_exec()),
            }
            self.gate.retried.add(1);
            first_in_line = true;
        }
    }

    async fn forward(&self, i: usize, body: Bytes, deadline: Instant) -> Result<Done, Attempt> {
        let b = &self.backends[i];
        let start = Instant::now();
        let req = Request::post(b.compute.clone())
            .header("content-type", "application/json")
            .body(Full::new(body))
            .map_err(|e| Attempt::Failed(e.to_string()))?;
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
        let outcome = match tokio::time::timeout_at(deadline.into(), exchange).await {
            Err(_) => {
                b.failed.add(1);
                return Err(Attempt::Expired);
            }
            Ok(Err((true, e))) => {
                b.refused.add(1);
                b.up.store(false, Relaxed);
                tracing::warn!(backend = %b.base, error = %e, "compute service unreachable; marked down");
                return Err(Attempt::Refused(format!("{}: {e}", b.base)));
            }
            Ok(Err((false, e))) => {
                b.failed.add(1);
                b.up.store(false, Relaxed);
                tracing::warn!(backend = %b.base, error = %e, "compute service failed mid-request; marked down");
                return Err(Attempt::Failed(format!("{}: {e}", b.base)));
            }
            Ok(Ok(o)) => o,
        };
        b.latency.record(start.elapsed());
        match outcome {
            (StatusCode::OK, _, bytes) => {
                b.ok.add(1);
                parse_done(&bytes)
                    .ok_or_else(|| Attempt::Failed(format!("{}: unreadable answer", b.base)))
            }
            (StatusCode::SERVICE_UNAVAILABLE, retry, _) => {
                b.overloaded.add(1);
                Err(Attempt::Overloaded(retry.unwrap_or(RETRY_AFTER_SECS)))
            }
            (StatusCode::GATEWAY_TIMEOUT, _, _) => {
                b.failed.add(1);
                Err(Attempt::Expired)
            }
            (status, _, bytes) => {
                b.failed.add(1);
                let text = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
                Err(Attempt::Failed(format!(
                    "{} answered {status}: {text}",
                    b.base
                )))
            }
        }
    }

    /// Checks every backend's `/health` each `interval`; one that answers 200 within the
    /// interval is up, any other outcome marks it down.
    async fn check_health(self, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            for (i, b) in self.backends.iter().enumerate() {
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
                let answer = tokio::time::timeout(interval.max(Duration::from_millis(100)), answer)
                    .await
                    .ok()
                    .flatten();
                let ok = answer.is_some();
                if let Some(Some((capacity, threads, probe))) = answer {
                    self.gate.set_capacity(i, capacity, threads, &probe);
                }
                if ok != b.up.swap(ok, Relaxed) {
                    tracing::info!(backend = %b.base, up = ok, "compute service health changed");
                    self.gate.backend_up();
                }
            }
        }
    }

    /// Per-backend requests by outcome, latency, health and outstanding requests.
    pub fn render_metrics(&self, out: &mut String) {
        header(
            out,
            "offload_backend_up",
            "gauge",
            "1 when the compute service is taking traffic.",
        );
        for b in self.backends.iter() {
            sample(
                out,
                "offload_backend_up",
                &format!("backend=\"{}\"", b.base),
                u8::from(b.up.load(Relaxed)),
            );
        }
        header(
            out,
            "offload_backend_outstanding",
            "gauge",
            "Requests sent to the compute service and not yet answered.",
        );
        let room = self.gate.rooms();
        for (b, r) in self.backends.iter().zip(&room) {
            sample(
                out,
                "offload_backend_outstanding",
                &format!("backend=\"{}\"", b.base),
                r.outstanding,
            );
        }
        header(
            out,
            "offload_backend_limit",
            "gauge",
            "Requests the gateway sends the compute service at once (latency-adjusted).",
        );
        for (b, r) in self.backends.iter().zip(&room) {
            sample(
                out,
                "offload_backend_limit",
                &format!("backend=\"{}\"", b.base),
                format!("{:.2}", r.limit),
            );
        }
        header(
            out,
            "offload_backend_capacity",
            "gauge",
            "Requests the compute service said it admits at once (/health).",
        );
        for (b, r) in self.backends.iter().zip(&room) {
            sample(
                out,
                "offload_backend_capacity",
                &format!("backend=\"{}\"", b.base),
                r.capacity,
            );
        }
        self.gate.render_metrics(out);
        header(
            out,
            "offload_backend_requests_total",
            "counter",
            "Requests to compute services by outcome.",
        );
        for b in self.backends.iter() {
            for (outcome, c) in [
                ("ok", &b.ok),
                ("failed", &b.failed),
                ("refused", &b.refused),
                ("overloaded", &b.overloaded),
            ] {
                sample(
                    out,
                    "offload_backend_requests_total",
                    &format!("backend=\"{}\",outcome=\"{outcome}\"", b.base),
                    c.get(),
                );
            }
        }
        header(
            out,
            "offload_backend_latency_seconds",
            "histogram",
            "Latency of answered requests to compute services.",
        );
        for b in self.backends.iter() {
            b.latency.render(
                out,
                "offload_backend_latency_seconds",
                &format!("backend=\"{}\"", b.base),
            );
        }
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
}

/// How one forwarding attempt ended, when it did not give a result.
enum Attempt {
    /// The connection was refused or never made: nothing was sent, so another backend may try.
    Refused(String),
    Failed(String),
    Overloaded(u64),
    Expired,
}

impl Attempt {
    fn into_exec(self) -> ExecError {
        match self {
            Attempt::Refused(e) | Attempt::Failed(e) => ExecError::BadGateway(e),
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
fn probe_of(health: &crate::api::Health) -> Vec<(usize, f64)> {
    let Some(secs) = &health.secs_per_unit else {
        return Vec::new();
    };
    crate::work::Kind::ALL
        .iter()
        .filter_map(|k| {
            let v = *secs.get(k.name())?;
            (v.is_finite() && v > 0.0).then_some((k.class(), v))
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
