//! Paced refusals. A 503 for overload is cheap to send, and a closed-loop client sends the
//! next request the moment it arrives: unpaced, a thousand such clients turn a full server
//! into tens of thousands of refusals a second, and the CPU that answers them is taken from
//! the work. The pacer gives each refusal a slot on a schedule of at most `rate` a second and
//! holds it until then (at most `max_hold`). A lone refusal on a
//! quiet server goes out at once; a storm is spread out, so a client cannot spin on it
//! whatever its number of connections (beyond `max_hold`, the rate is connections over
//! `max_hold`). Holding costs no thread: the request is a parked future.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::metrics::{Counter, FloatCounter, Registry};

/// Refusals a second per core, past which they are held. A refusal costs a runtime thread tens
/// of microseconds (parse, route, answer; about 0.1 ms here with its timer), so 100 a second per
/// core is about 1% of the machine on any core count, and still tells a hundred clients a
/// second per core to come back.
pub const DEFAULT_REFUSALS_PER_CORE: u32 = 100;
/// Longest a refusal is held. Past `rate x max_hold` connections, each connection gets one
/// refusal per `max_hold`: at 2 s, a thousand closed-loop connections cost 500 refusals a
/// second (about 2.5% of 2 cores here), and a client that honours `Retry-After` (at least
/// 1 s) never notices.
pub const DEFAULT_MAX_HOLD: Duration = Duration::from_secs(2);

/// The refusal schedule of one server.
#[derive(Debug)]
pub struct Pacer {
    epoch: Instant,
    /// The next free slot, in µs since `epoch`.
    next_us: AtomicU64,
    /// µs between slots (0: no pacing).
    gap_us: u64,
    max_hold: Duration,
    refused: Counter,
    held: Counter,
    held_secs: FloatCounter,
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
            refused: Counter::default(),
            held: Counter::default(),
            held_secs: FloatCounter::default(),
        }
    }

    /// How long to hold a refusal made now: until its slot on the schedule, at most
    /// `max_hold`. Taking a slot moves the schedule on.
    pub fn hold(&self) -> Duration {
        self.refused.inc();
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
                        self.held.inc();
                        self.held_secs.inc_by(hold as f64 / 1e6);
                    }
                    return Duration::from_micros(hold);
                }
                Err(seen) => next = seen,
            }
        }
    }

    /// Holds a refusal made now until its slot. Not capped by the request's deadline: a
    /// client asking `Prefer: wait=0` must not be able to spin either, and a refusal is no
    /// later for it than the `max_hold` it is capped at.
    pub async fn pace(&self) {
        let hold = self.hold();
        if !hold.is_zero() {
            tokio::time::sleep(hold).await;
        }
    }

    /// Registers the refusal counters (`offload_refusals_*`).
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
    }

    #[test]
    fn no_rate_means_no_pacing() {
        let p = Pacer::new(0, Duration::from_secs(1));
        assert!((0..100).all(|_| p.hold().is_zero()));
    }
}
