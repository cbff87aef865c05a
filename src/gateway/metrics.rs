//! Request metrics for `/metrics`: count and latency by route and status, and heavy requests
//! in flight, recorded by one middleware around every route.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use super::AppState;
use crate::metrics::{Counter, Gauge, Histogram, header, sample};

/// Per (route, status) latency histograms, plus the in-flight gauge.
#[derive(Debug, Default)]
pub struct RequestMetrics {
    by_route: Mutex<BTreeMap<(String, u16), Arc<Histogram>>>,
    in_flight: Gauge,
    /// Heavy requests whose (valid) work was handed to the strategy.
    handed_off: Counter,
}

/// Decrements the in-flight gauge when the request ends, however it ends.
#[derive(Debug)]
pub struct InFlight<'a>(&'a Gauge);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl RequestMetrics {
    /// Counts a heavy request handed to its strategy; the guard tracks it while in flight.
    pub fn in_flight(&self) -> InFlight<'_> {
        self.handed_off.add(1);
        self.in_flight.inc();
        InFlight(&self.in_flight)
    }

    fn record(&self, route: &str, status: u16, start: Instant) {
        let h = {
            // Held only to find or insert the histogram; recording is lock-free.
            let mut map = self.by_route.lock().expect("metrics lock");
            map.entry((route.to_string(), status)).or_default().clone()
        };
        h.record(start.elapsed());
    }

    pub fn render(&self, out: &mut String) {
        header(
            out,
            "offload_http_in_flight",
            "gauge",
            "Heavy requests being worked on now.",
        );
        sample(out, "offload_http_in_flight", "", self.in_flight.get());
        header(
            out,
            "offload_work_handed_off_total",
            "counter",
            "Heavy requests with valid work handed to the strategy.",
        );
        sample(
            out,
            "offload_work_handed_off_total",
            "",
            self.handed_off.get(),
        );
        let map = self.by_route.lock().expect("metrics lock").clone();
        header(
            out,
            "offload_http_requests_total",
            "counter",
            "HTTP requests by route and status.",
        );
        for ((route, status), h) in &map {
            sample(
                out,
                "offload_http_requests_total",
                &format!("route=\"{route}\",status=\"{status}\""),
                h.count(),
            );
        }
        header(
            out,
            "offload_http_request_duration_seconds",
            "histogram",
            "HTTP request latency by route and status.",
        );
        for ((route, status), h) in &map {
            h.render(
                out,
                "offload_http_request_duration_seconds",
                &format!("route=\"{route}\",status=\"{status}\""),
            );
        }
    }
}

/// The middleware: times the request and files it under its matched route (or `unmatched`,
/// so a scan of random paths cannot grow the label set without bound).
pub(super) async fn track(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    let resp = next.run(req).await;
    app.metrics.record(&route, resp.status().as_u16(), start);
    resp
}
