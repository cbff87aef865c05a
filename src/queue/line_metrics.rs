//! The line's `/metrics` series (`offload_queue_line_*`). The [`Line`] itself is
//! [`offload_queue::line`]'s, the same a service embedding the crate gets; it counts, and this
//! file turns its counts into offload's `prometheus-client` series at each scrape.

use std::sync::Mutex;

use super::{Line, LineStats};
use crate::metrics::{Counter, Family, FloatGauge, Gauge, Outcome, Registry};

/// A line's series, brought up to its own counts before each scrape.
#[derive(Debug)]
pub struct LineMetrics {
    line: Line,
    waiting: Gauge,
    drain: FloatGauge,
    /// Requests by outcome: stored, wait_ran_out, refused.
    outcomes: Family<Outcome, Counter>,
    /// The counts at the last scrape, and one refresh at a time: two racing scrapes would each
    /// add the same increase.
    last: Mutex<LineStats>,
}

impl LineMetrics {
    /// The series of `line`, each shown from the first scrape.
    pub fn new(line: Line) -> LineMetrics {
        let outcomes = Family::default();
        for outcome in ["stored", "wait_ran_out", "refused"] {
            let _ = outcomes.get_or_create(&Outcome { outcome });
        }
        LineMetrics {
            line,
            waiting: Gauge::default(),
            drain: FloatGauge::default(),
            outcomes,
            last: Mutex::new(LineStats::default()),
        }
    }

    /// Registers the line's gauges and counters.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "offload_queue_line_waiting",
            "Requests waiting for room in a full backlog",
            self.waiting.clone(),
        );
        registry.register(
            "offload_queue_line_drain_per_second",
            "Jobs stored per second from the line while requests waited (0 until measured)",
            self.drain.clone(),
        );
        registry.register(
            "offload_queue_line",
            "Requests that waited in the line, by outcome: stored, their wait ran out, or \
             refused on arrival (line full or too long for their wait)",
            self.outcomes.clone(),
        );
    }

    /// Sets the gauges and brings the counters up to the line's counts.
    pub fn refresh(&self) {
        let mut last = self.last.lock().expect("line metrics lock");
        let now = self.line.stats();
        self.waiting.set(now.waiting as i64);
        self.drain.set(now.drain_per_second.unwrap_or(0.0));
        for (outcome, was, is) in [
            ("stored", last.stored, now.stored),
            ("wait_ran_out", last.ran_out, now.ran_out),
            ("refused", last.refused, now.refused),
        ] {
            self.outcomes
                .get_or_create(&Outcome { outcome })
                .inc_by(is.saturating_sub(was));
        }
        *last = now;
    }
}
