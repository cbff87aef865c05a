//! What the parts' metrics share: the latency buckets, the label sets, and the Prometheus text
//! of a server's [`Registry`]. The metrics are `prometheus-client`'s: each part keeps the
//! handles it records to and registers them once, at start, in its server's registry. A
//! family's series with a fixed set of labels are made at start (`get_or_create_owned`): each
//! shows from the first scrape (a count of zero is an answer), and recording to one is an
//! atomic add, with no lookup.

use std::hash::Hash;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
pub use prometheus_client::metrics::counter::Counter;
pub use prometheus_client::metrics::family::Family;
pub use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
pub use prometheus_client::metrics::histogram::Histogram;
pub use prometheus_client::registry::Registry;

/// Upper bounds of the histogram buckets in seconds: 50 µs to 60 s, about 2.5x apart,
/// covering a pool hand-off at the bottom and a deadline-bound heavy request at the top.
pub const BUCKETS: [f64; 18] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0, 60.0,
];

/// Prometheus text, version 0.0.4: what [`encode`] writes.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// A gauge of a fraction or a time in seconds.
pub type FloatGauge = Gauge<f64, AtomicU64>;
/// A counter of time in seconds.
pub type FloatCounter = Counter<f64, AtomicU64>;
/// Latency histograms on [`BUCKETS`], by label set.
pub type Latencies<S> = Family<S, Histogram, fn() -> Histogram>;

/// A latency histogram on [`BUCKETS`].
pub fn latency() -> Histogram {
    Histogram::new(BUCKETS)
}

/// An empty family of latency histograms on [`BUCKETS`].
pub fn latencies<S: Clone + Hash + Eq>() -> Latencies<S> {
    Family::new_with_constructor(latency)
}

/// The registry's metrics as Prometheus text, version 0.0.4 rather than OpenMetrics: the same
/// text `/metrics` has always served (a counter's HELP and TYPE name it with its `_total`, no
/// `# EOF`), so scrapers and the tests' line parser read it as before.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::with_capacity(16 * 1024);
    // Writing to a String does not fail, nor do the metrics' own encoders.
    prometheus_client::encoding::prometheus_text::encode(&mut out, registry)
        .expect("metrics encode to a String");
    out
}

// Label sets, one key each. The values are a fixed set known at build time, so a label is a
// `&'static str` and recording allocates nothing.

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Kind {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Route {
    pub route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct State {
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Work {
    pub work: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_keep_the_buckets_and_counters_their_names() {
        let mut registry = Registry::default();
        let h = latencies::<Route>();
        registry.register("x_seconds", "Latency", h.clone());
        let c = Family::<Outcome, Counter>::default();
        let ok = c.get_or_create_owned(&Outcome { outcome: "ok" });
        registry.register("x_requests", "Requests", c);
        let a = h.get_or_create_owned(&Route { route: "/a" });
        a.observe(30e-6);
        a.observe(3e-3);
        a.observe(100.0);
        ok.inc_by(2);
        let s = encode(&registry);
        for line in [
            "# TYPE x_seconds histogram\n",
            "x_seconds_bucket{route=\"/a\",le=\"5e-05\"} 1\n",
            "x_seconds_bucket{route=\"/a\",le=\"0.005\"} 2\n",
            "x_seconds_bucket{route=\"/a\",le=\"60\"} 2\n",
            "x_seconds_bucket{route=\"/a\",le=\"+Inf\"} 3\n",
            "x_seconds_count{route=\"/a\"} 3\n",
            "# HELP x_requests_total Requests.\n",
            "# TYPE x_requests_total counter\n",
            "x_requests_total{outcome=\"ok\"} 2\n",
        ] {
            assert!(s.contains(line), "no {line:?} in\n{s}");
        }
        assert!(!s.contains("# EOF"), "{s}");
    }
}
