//! Logs that cannot flood: a warning that repeats (a claim failing every poll while the store is
//! out of reach) is written at most once a second per call site, with the number of lines held
//! back since the last one. Every occurrence can still be counted: [`events`] installs a
//! function that hears each one by kind (offload's binary counts them in `/metrics`).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

/// At most one line a second per call site.
const EVERY_MS: u64 = 1_000;

static HOOK: OnceLock<fn(&'static str)> = OnceLock::new();

/// Installs `hook`, called once for every warning the queue and the worker log (written or held
/// back), with its kind (such as `"worker_claim_failed"`), so a service can count them. The first
/// call wins; later calls are ignored and answer `false`.
pub fn events(hook: fn(&'static str)) -> bool {
    HOOK.set(hook).is_ok()
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// One call site of a throttled log line: [`Site::admit`] says whether to write it now.
#[derive(Debug)]
pub struct Site {
    kind: &'static str,
    held_back: AtomicU64,
    /// Milliseconds since [`epoch`] before which no line is written.
    next_ms: AtomicU64,
}

impl Site {
    /// A site whose events are of `kind` (what the [`events`] hook hears).
    pub const fn new(kind: &'static str) -> Site {
        Site {
            kind,
            held_back: AtomicU64::new(0),
            next_ms: AtomicU64::new(0),
        }
    }

    /// Counts one event; `Some(held back)` when it may be written now, with the number of
    /// events not written since the last line.
    pub fn admit(&self) -> Option<u64> {
        if let Some(hook) = HOOK.get() {
            hook(self.kind);
        }
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
}

/// Writes an event at most once a second per call site, with `held_back`.
macro_rules! throttled {
    ($kind:literal, $level:ident, $($rest:tt)+) => {{
        static SITE: $crate::log::Site = $crate::log::Site::new($kind);
        if let Some(held_back) = SITE.admit() {
            ::tracing::$level!(kind = %$kind, held_back, $($rest)+);
        }
    }};
}
pub(crate) use throttled;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_writes_one_line() {
        static SITE: Site = Site::new("test_burst");
        let written: Vec<Option<u64>> = (0..1_000).map(|_| SITE.admit()).collect();
        assert_eq!(written[0], Some(0), "the first event is written at once");
        assert!(written[1..].iter().all(Option::is_none));
        SITE.next_ms.store(0, Relaxed);
        assert_eq!(SITE.admit(), Some(999));
    }
}
