//! Paced refusals: the schedule is [`offload_pool::pace`]'s [`Pacer`], the same a service
//! embedding the crates gets (offload-axum's `PaceRefusals` and `Auto`). This file holds a
//! refusal until its slot and turns the pacer's counts into `/metrics` series.

use std::sync::{Arc, Mutex};

pub use offload_pool::pace::{DEFAULT_MAX_HOLD, DEFAULT_REFUSALS_PER_CORE, PaceStats, Pacer};

use crate::metrics::{Counter, FloatCounter, Registry};

/// Holds a refusal made now until its slot on `pacer`'s schedule.
pub async fn pace(pacer: &Pacer) {
    let hold = pacer.hold();
    if !hold.is_zero() {
        tokio::time::sleep(hold).await;
    }
}

/// A pacer's series (`offload_refusals_*`), brought up to its counts before each scrape.
#[derive(Debug)]
pub struct PaceMetrics {
    pacer: Arc<Pacer>,
    refused: Counter,
    held: Counter,
    held_secs: FloatCounter,
    /// The counts at the last scrape; one refresh at a time.
    last: Mutex<PaceStats>,
}

impl PaceMetrics {
    pub fn new(pacer: Arc<Pacer>) -> PaceMetrics {
        PaceMetrics {
            pacer,
            refused: Counter::default(),
            held: Counter::default(),
            held_secs: FloatCounter::default(),
            last: Mutex::new(PaceStats::default()),
        }
    }

    /// Registers the refusal counters.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "offload_refusals",
            "503s for overload (full, late, store out of reach), paced or not",
            self.refused.clone(),
        );
        registry.register(
            "offload_refusals_held",
            "Refusals held for a slot on the refusal schedule",
            self.held.clone(),
        );
        registry.register(
            "offload_refusals_held_seconds",
            "Time refusals were held, summed",
            self.held_secs.clone(),
        );
    }

    /// Brings the counters up to the pacer's counts.
    pub fn refresh(&self) {
        let mut last = self.last.lock().expect("pace metrics lock");
        let now = self.pacer.stats();
        self.refused
            .inc_by(now.refused.saturating_sub(last.refused));
        self.held.inc_by(now.held.saturating_sub(last.held));
        self.held_secs
            .inc_by(now.held_for.saturating_sub(last.held_for).as_secs_f64());
        *last = now;
    }
}
