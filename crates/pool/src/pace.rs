//! Paced refusals. A refusal for overload (HTTP 503) is cheap to send, and a closed-loop client
//! sends its next request the moment the refusal arrives: unpaced, a thousand such clients turn
//! a full server into tens of thousands of refusals a second, and the CPU that answers them is
//! taken from the work the server admitted. A [`Pacer`] gives each refusal a slot on a schedule
//! of at most `per_second` refusals a second, and says how long to hold it until then (at most
//! `max_hold`). A lone refusal on a quiet server goes out at once; a storm is spread out, so a
//! client cannot spin on refusals whatever its number of connections (beyond
//! `per_second x max_hold` connections, each gets one refusal per `max_hold`).
//!
//! The pacer only computes the hold: the caller waits it out the way its runtime waits (in
//! tokio, `tokio::time::sleep(pacer.hold()).await`), which costs no thread. offload-axum's
//! `PaceRefusals` layer does this for every 503 a router answers, and its `Auto` for its own.
//!
//! ```
//! use std::time::Duration;
//! use offload_pool::pace::Pacer;
//!
//! let pacer = Pacer::new(100, Duration::from_secs(2)); // a slot every 10 ms
//! assert_eq!(pacer.hold(), Duration::ZERO); // a lone refusal goes at once
//! assert!(pacer.hold() > Duration::ZERO); // the next waits for its slot
//! assert_eq!(pacer.stats().refused, 2);
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Refusals a second per core, past which they are held. A refusal costs a runtime thread tens
/// of microseconds (parse, route, answer; about 0.1 ms on a 2-core VM with its timer), so 100 a
/// second per core is about 1% of the machine on any core count, and still tells a hundred
/// clients a second per core to come back.
pub const DEFAULT_REFUSALS_PER_CORE: u32 = 100;

/// Longest a refusal is held. Past `rate x max_hold` connections, each connection gets one
/// refusal per `max_hold`: at 2 s, a thousand closed-loop connections cost 500 refusals a
/// second, and a client that honours `Retry-After` (at least 1 s) never notices.
pub const DEFAULT_MAX_HOLD: Duration = Duration::from_secs(2);

/// The refusal schedule of one server. Shared by reference (`Arc`) among its handlers.
#[derive(Debug)]
pub struct Pacer {
    epoch: Instant,
    /// The next free slot, in µs since `epoch`.
    next_us: AtomicU64,
    /// µs between slots (0: no pacing).
    gap_us: u64,
    max_hold: Duration,
    refused: AtomicU64,
    held: AtomicU64,
    held_us: AtomicU64,
}

/// What a [`Pacer`] has done since it was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PaceStats {
    /// Refusals it was asked about.
    pub refused: u64,
    /// Refusals it held for a slot.
    pub held: u64,
    /// Time it held them, summed.
    pub held_for: Duration,
}

impl Default for Pacer {
    /// [`DEFAULT_REFUSALS_PER_CORE`] on each of the machine's cores
    /// (`std::thread::available_parallelism`), each held at most [`DEFAULT_MAX_HOLD`].
    fn default() -> Pacer {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
        Pacer::new(
            u64::from(DEFAULT_REFUSALS_PER_CORE) * cores,
            DEFAULT_MAX_HOLD,
        )
    }
}

impl Pacer {
    /// A pacer allowing `per_second` refusals a second (0: no pacing), each held at most
    /// `max_hold`.
    pub fn new(per_second: u64, max_hold: Duration) -> Pacer {
        Pacer {
            epoch: Instant::now(),
            next_us: AtomicU64::new(0),
            gap_us: 1_000_000u64
                .checked_div(per_second)
                .map_or(0, |gap| gap.max(1)),
            max_hold,
            refused: AtomicU64::new(0),
            held: AtomicU64::new(0),
            held_us: AtomicU64::new(0),
        }
    }

    /// How long to hold a refusal made now: until its slot on the schedule, at most
    /// `max_hold`. Taking a slot moves the schedule on. Not capped by the request's own
    /// deadline: a client that will wait 0 s must not be able to spin either, and a refusal
    /// held `max_hold` is no later for it than any other answer.
    pub fn hold(&self) -> Duration {
        self.refused.fetch_add(1, Ordering::Relaxed);
        if self.gap_us == 0 {
            return Duration::ZERO;
        }
        let now = self.epoch.elapsed().as_micros() as u64;
        let cap = self.max_hold.as_micros() as u64;
        let mut next = self.next_us.load(Ordering::Relaxed);
        loop {
            let slot = next.max(now);
            // The schedule never runs more than `max_hold` ahead, so when refusals come faster
            // than connections over `max_hold` can send them, each is held `max_hold`.
            let after = (slot + self.gap_us).min(now + cap);
            match self.next_us.compare_exchange_weak(
                next,
                after,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    let hold = (slot - now).min(cap);
                    if hold > 0 {
                        self.held.fetch_add(1, Ordering::Relaxed);
                        self.held_us.fetch_add(hold, Ordering::Relaxed);
                    }
                    return Duration::from_micros(hold);
                }
                Err(seen) => next = seen,
            }
        }
    }

    /// The counts since the pacer was made.
    pub fn stats(&self) -> PaceStats {
        PaceStats {
            refused: self.refused.load(Ordering::Relaxed),
            held: self.held.load(Ordering::Relaxed),
            held_for: Duration::from_micros(self.held_us.load(Ordering::Relaxed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lone_refusal_goes_at_once_and_a_burst_is_spread_up_to_the_cap() {
        let p = Pacer::new(100, Duration::from_millis(50)); // a slot every 10 ms
        assert_eq!(p.hold(), Duration::ZERO);
        let holds: Vec<_> = (0..10).map(|_| p.hold()).collect();
        // The burst takes the next slots, 10 ms apart, up to the 50 ms cap.
        assert!(holds[0] >= Duration::from_millis(9), "{holds:?}");
        assert!(holds[1] >= Duration::from_millis(19), "{holds:?}");
        assert!(
            holds.iter().all(|h| *h <= Duration::from_millis(50)),
            "{holds:?}"
        );
        // The cap: the tail of the burst is held about 50 ms (the clock moves between calls).
        assert!(holds[9] >= Duration::from_millis(49), "{holds:?}");
        let s = p.stats();
        assert_eq!((s.refused, s.held), (11, 10));
        assert!(s.held_for >= Duration::from_millis(300), "{s:?}");
    }

    #[test]
    fn no_rate_means_no_pacing() {
        let p = Pacer::new(0, Duration::from_secs(1));
        assert!((0..100).all(|_| p.hold().is_zero()));
        assert_eq!(p.stats().held, 0);
    }
}
