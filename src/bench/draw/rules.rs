//! The thresholds by which the bench reads a run: what counts as keeping up and what counts as
//! a stall. Shared by the verdict ([`super::summary`]) and the reading under the table
//! ([`super::report`]), so the two never disagree; each is tested in `summary`'s tests and
//! written out in docs/bench.md ("How the verdict is read").

/// A strategy's `/health` p99 this many times the best one's (and over [`STALL_MS`]) is a
/// stall worth warning about: strategies that keep the runtime free land within a few times
/// of each other (0.28-3.09 ms in the README's run of 2026-12-07), those that block it hundreds of
/// times off (inline's 3.78 s there).
pub(crate) const STALL_RATIO: f64 = 10.0;
/// Below this `/health` p99 no one notices, whatever the ratio: half the ~100 ms at which a
/// person starts to see a delay, and far above the few ms a busy machine's scheduler adds.
pub(crate) const STALL_MS: f64 = 50.0;
/// Throughput at or above this fraction of the fastest comparable in-process strategy's
/// counts as keeping up, and among those `/health` decides. A fifth is wider than the
/// run-to-run spread of one strategy on a quiet machine (a few percent to ~10%), so noise
/// does not pick the winner, and a strategy that loses more than a fifth of the machine's
/// work is not made up for by a faster `/health`.
pub(crate) const KEEPS_UP: f64 = 0.8;

/// Whether a `/health` p99 of `p99` beside the best strategy's `best` is a stall: over
/// [`STALL_MS`] and over [`STALL_RATIO`] times the best.
pub(crate) fn stalls(p99: f64, best: f64) -> bool {
    p99 > STALL_MS && p99 > STALL_RATIO * best
}
