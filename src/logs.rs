//! Logs that cannot flood: an error that repeats (one per refused request while a store is
//! out of reach, one per failed accept while the process is out of files) is written at most
//! once a second per kind, with the number of lines held back since the last one. Every
//! occurrence is counted, and `/metrics` shows the counts by kind
//! (`offload_log_events_total`), so nothing is lost by writing less.
//!
//! ```ignore
//! crate::throttled!("queue_unavailable", error, error = %e, "request failed");
//! ```

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{LazyLock, OnceLock};
use std::time::Instant;

use crate::metrics::{Counter, Family, Kind, Registry};

/// At most one line a second per kind.
const EVERY_MS: u64 = 1_000;

/// One kind of repeated event: a call site of [`throttled!`](crate::throttled).
#[derive(Debug)]
pub struct Site {
    kind: &'static str,
    /// This kind's series of [`EVENTS`], found on the first event.
    total: OnceLock<Counter>,
    held_back: AtomicU64,
    /// Milliseconds since [`epoch`] before which no line is written.
    next_ms: AtomicU64,
}

/// Events by kind. One for the process, as the call sites are: every server's registry shows
/// it.
static EVENTS: LazyLock<Family<Kind, Counter>> = LazyLock::new(Family::default);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl Site {
    pub const fn new(kind: &'static str) -> Site {
        Site {
            kind,
            total: OnceLock::new(),
            held_back: AtomicU64::new(0),
            next_ms: AtomicU64::new(0),
        }
    }

    /// Counts one event; `Some(held back)` when it may be written now, with the number of
    /// events of this kind not written since the last line.
    pub fn admit(&'static self) -> Option<u64> {
        self.total().inc();
        let now = epoch().elapsed().as_millis() as u64;
        let next = self.next_ms.load(Relaxed);
        if now >= next
            && self
                .next_ms
                .compare_exchange(next, now + EVERY_MS, Relaxed, Relaxed)
                .is_ok()
        {
            Some(self.held_back.swap(0, Relaxed))
        } else {
            self.held_back.fetch_add(1, Relaxed);
            None
        }
    }

    fn total(&self) -> &Counter {
        self.total
            .get_or_init(|| EVENTS.get_or_create_owned(&Kind { kind: self.kind }))
    }
}

/// Writes an event at most once a second per call site, with `held_back`: how many were
/// not written since the last line. `kind` names the event in `/metrics`.
#[macro_export]
macro_rules! throttled {
    ($kind:literal, $level:ident, $($rest:tt)+) => {{
        static SITE: $crate::logs::Site = $crate::logs::Site::new($kind);
        if let Some(held_back) = SITE.admit() {
            ::tracing::$level!(kind = %$kind, held_back, $($rest)+);
        }
    }};
}

/// Counts the queue crate's warnings (its worker's failed claims, heartbeats, completions) in
/// the same series as offload's own, under their kinds. Called once at start-up.
pub fn count_queue_events() {
    offload_queue::events(|kind| {
        EVENTS.get_or_create_owned(&Kind { kind }).inc();
    });
}

/// Registers `offload_log_events_total{kind}`: every event of each kind seen so far, written
/// or not.
pub fn register(registry: &mut Registry) {
    registry.register(
        "offload_log_events",
        "Errors and warnings by kind, each counted though repeats are written at most once a second",
        EVENTS.clone(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_writes_one_line_and_counts_every_event() {
        static SITE: Site = Site::new("test_burst");
        let written: Vec<Option<u64>> = (0..1_000).map(|_| SITE.admit()).collect();
        assert_eq!(written[0], Some(0), "the first event is written at once");
        // The burst takes far less than a second, so the rest are held back.
        assert!(written[1..].iter().all(Option::is_none));
        assert_eq!(SITE.total().get(), 1_000);
        // A second later the next line carries the count held back.
        SITE.next_ms.store(0, Relaxed);
        assert_eq!(SITE.admit(), Some(999));
        let mut registry = Registry::default();
        register(&mut registry);
        let out = crate::metrics::encode(&registry);
        assert!(out.contains("offload_log_events_total{kind=\"test_burst\"} 1001"));
    }
}
