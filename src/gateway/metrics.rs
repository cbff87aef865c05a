//! Request metrics for `/metrics`: count and latency by route and status, and heavy requests
//! in flight, recorded by one middleware around every route.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};

use super::AppState;
use crate::metrics::{Counter, Family, Gauge, Latencies, Registry, latencies};

/// Requests by route and status, the in-flight gauge, and the work handed off.
#[derive(Debug)]
pub struct RequestMetrics {
    requests: Family<RouteStatus, Counter>,
    latency: Latencies<RouteStatus>,
    in_flight: Gauge,
    /// Heavy requests whose (valid) work was handed to the strategy.
    handed_off: Counter,
    /// `/heavy`'s answers by kind, for `/ui`: the same counts as `requests`, without a walk
    /// over its series.
    heavy: [AtomicU64; 3],
}

/// `/heavy`'s answers since start, as `/ui/state` shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HeavyTotals {
    /// 200: the work ran and here is its result.
    pub answered: u64,
    /// 202: stored as a job.
    pub accepted: u64,
    /// 503: refused (full, late, store out of reach).
    pub refused: u64,
    /// Heavy requests being worked on now.
    pub in_flight: u64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteStatus {
    route: RoutePath,
    status: u16,
}

/// A request's matched route, or `unmatched`, so that a scan of random paths cannot grow the
/// label set without bound. It holds axum's `MatchedPath` (an `Arc<str>`): a request's label
/// costs a reference count, not a `String`.
#[derive(Clone, Debug)]
struct RoutePath(Option<MatchedPath>);

impl RoutePath {
    fn as_str(&self) -> &str {
        self.0.as_ref().map_or("unmatched", MatchedPath::as_str)
    }
}

impl PartialEq for RoutePath {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for RoutePath {}

impl Hash for RoutePath {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl EncodeLabelValue for RoutePath {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        self.as_str().encode(encoder)
    }
}

/// Decrements the in-flight gauge when the request ends, however it ends.
#[derive(Debug)]
pub struct InFlight<'a>(&'a Gauge);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Default for RequestMetrics {
    fn default() -> Self {
        RequestMetrics {
            requests: Family::default(),
            latency: latencies(),
            in_flight: Gauge::default(),
            handed_off: Counter::default(),
            heavy: Default::default(),
        }
    }
}

impl RequestMetrics {
    /// Counts a heavy request handed to its strategy; the guard tracks it while in flight.
    pub fn in_flight(&self) -> InFlight<'_> {
        self.handed_off.inc();
        self.in_flight.inc();
        InFlight(&self.in_flight)
    }

    /// `/heavy`'s answers since start, and those in flight.
    pub fn heavy(&self) -> HeavyTotals {
        let [answered, accepted, refused] = self.heavy.each_ref().map(|c| c.load(Relaxed));
        HeavyTotals {
            answered,
            accepted,
            refused,
            in_flight: self.in_flight.get().max(0) as u64,
        }
    }

    /// Registers the request metrics (`offload_http_*`, `offload_work_handed_off_total`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "offload_http_in_flight",
            "Heavy requests being worked on now",
            self.in_flight.clone(),
        );
        registry.register(
            "offload_work_handed_off",
            "Heavy requests with valid work handed to the strategy",
            self.handed_off.clone(),
        );
        registry.register(
            "offload_http_requests",
            "HTTP requests by route and status",
            self.requests.clone(),
        );
        registry.register(
            "offload_http_request_duration_seconds",
            "HTTP request latency by route and status",
            self.latency.clone(),
        );
    }
}

/// The middleware: times the request and files it under its matched route.
/// A request under its span: its context handed on as the request's `traceparent`, its status
/// recorded.
async fn traced(span: tracing::Span, mut req: Request, next: Next) -> Response {
    if let Some(context) = crate::otel::context_of(&span)
        && let Ok(v) = axum::http::HeaderValue::from_str(context.as_str())
    {
        req.headers_mut().insert("traceparent", v);
    }
    let resp = tracing::Instrument::instrument(next.run(req), span.clone()).await;
    span.record("http.response.status_code", resp.status().as_u16());
    resp
}

pub(super) async fn track(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = RoutePath(req.extensions().get::<MatchedPath>().cloned());
    // The request's span, made only when spans are exported (crate::otel): it continues the
    // caller's `traceparent`, and hands its own context on as the request's, so that a job
    // the request stores carries it and its run is this span's child.
    let span = tracing::trace_span!(
        target: "offload::http",
        "http.request",
        otel.kind = "server",
        http.request.method = %req.method(),
        http.route = route.as_str(),
        traceparent = req
            .headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .unwrap_or(""),
        http.response.status_code = tracing::field::Empty,
    );
    let resp = if span.is_disabled() {
        next.run(req).await
    } else {
        // Boxed: the traced path's state stays out of every request's future.
        Box::pin(traced(span, req, next)).await
    };
    let labels = RouteStatus {
        route,
        status: resp.status().as_u16(),
    };
    let m = &app.metrics;
    if labels.route.as_str() == "/heavy" {
        let kind = match labels.status {
            200 => Some(0),
            202 => Some(1),
            503 => Some(2),
            _ => None,
        };
        if let Some(k) = kind {
            m.heavy[k].fetch_add(1, Relaxed);
        }
    }
    m.requests.get_or_create(&labels).inc();
    m.latency
        .get_or_create(&labels)
        .observe(start.elapsed().as_secs_f64());
    resp
}
