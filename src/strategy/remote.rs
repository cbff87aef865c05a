//! `remote`: each request is forwarded over pooled keep-alive HTTP to one of several
//! `offload compute` services, the Rust microservice of the seed.
//!
//! Balancing: least outstanding requests, ties broken round-robin. Heavy requests differ in
//! cost and backends in speed; counting what each backend still owes adapts to both, where
//! plain round-robin keeps feeding a slow or overloaded backend its full share.
//!
//! Failures: a backend that refuses the connection (nothing was sent) is marked down and the
//! request is retried once on another, as is one that answered 503 (nothing ran); any other transport error answers 502 (the request
//! may have run). A backend marked down gets no traffic until the health checker sees it
//! answer `/health` again. When no other backend can take it, a backend's 503 passes through with its `Retry-After`; at the
//! deadline the gateway stops waiting (504) and drops the connection, which tells the compute
//! service to stop the work.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

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
}

/// One compute service and what the gateway knows of it.
#[derive(Debug)]
pub struct Backend {
    base: String,
    compute: Uri,
    health: Uri,
    up: AtomicBool,
    outstanding: AtomicUsize,
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
    next: Arc<AtomicUsize>,
}

/// Decrements a backend's outstanding count however the request ends.
struct Outstanding<'a>(&'a Backend);

impl Drop for Outstanding<'_> {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Relaxed);
    }
}

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
                outstanding: AtomicUsize::new(0),
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
        let remote = Remote {
            backends: backends.into(),
            client,
            next: Arc::new(AtomicUsize::new(0)),
        };
        tokio::spawn(remote.clone().check_health(config.health_interval));
        Ok(remote)
    }

    /// The backends, in the order given.
    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }

    /// # Errors
    /// [`ExecError::BadGateway`] when no backend could be reached or one failed;
    /// [`ExecError::Overloaded`] when the backend said 503; [`ExecError::Expired`] past
    /// the deadline.
    pub async fn run(&self, work: Work, deadline: Instant) -> Result<Done, ExecError> {
        let body = Bytes::from(work.to_json().to_string());
        let first = self.pick(None);
        match self.forward(first, body.clone(), deadline).await {
            // Nothing ran: one more try on another backend, if there is one.
            Err(e @ (Attempt::Refused(_) | Attempt::Overloaded(_))) => {
                let second = self.pick(Some(first));
                if second == first {
                    return Err(e.into_exec());
                }
                self.forward(second, body, deadline)
                    .await
                    .map_err(Attempt::into_exec)
            }
            other => other.map_err(Attempt::into_exec),
        }
    }

    /// Least outstanding among the backends that are up (all of them if none is), skipping
    /// `avoid`; ties go round-robin.
    fn pick(&self, avoid: Option<usize>) -> usize {
        let n = self.backends.len();
        let start = self.next.fetch_add(1, Relaxed);
        let any_up = self
            .backends
            .iter()
            .enumerate()
            .any(|(i, b)| Some(i) != avoid && b.up.load(Relaxed));
        (0..n)
            .map(|k| (start + k) % n)
            .filter(|&i| Some(i) != avoid || n == 1)
            .filter(|&i| !any_up || self.backends[i].up.load(Relaxed))
            .min_by_key(|&i| self.backends[i].outstanding.load(Relaxed))
            .unwrap_or(0)
    }

    async fn forward(&self, i: usize, body: Bytes, deadline: Instant) -> Result<Done, Attempt> {
        let b = &self.backends[i];
        b.outstanding.fetch_add(1, Relaxed);
        let _out = Outstanding(b);
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
            for b in self.backends.iter() {
                let req = Request::get(b.health.clone()).body(Full::new(Bytes::new()));
                let Ok(req) = req else { continue };
                let ok = matches!(
                    tokio::time::timeout(interval.max(Duration::from_millis(100)), self.client.request(req)).await,
                    Ok(Ok(r)) if r.status() == StatusCode::OK
                );
                if ok != b.up.swap(ok, Relaxed) {
                    tracing::info!(backend = %b.base, up = ok, "compute service health changed");
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
        for b in self.backends.iter() {
            sample(
                out,
                "offload_backend_outstanding",
                &format!("backend=\"{}\"", b.base),
                b.outstanding.load(Relaxed),
            );
        }
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

/// Reads the compute service's answer: the same JSON `/heavy` gives.
fn parse_done(bytes: &[u8]) -> Option<Done> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    Some(Done {
        result: v["result"].as_u64()?,
        wait: Duration::from_micros(v["wait_us"].as_u64()?),
        run: Duration::from_micros(v["run_us"].as_u64()?),
    })
}
