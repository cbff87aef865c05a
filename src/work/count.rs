//! `count`: the seed's workload, n increments of a counter.

use std::hint::black_box;
use std::ops::Range;

use super::Stopped;

/// Iterations between two stop checks: about a millisecond of work.
const CHECK_EVERY: u64 = 1 << 20;

/// Counts through `range`, one increment per unit. `black_box` keeps the compiler from
/// replacing the loop with its result, so the time scales with the length of the range.
pub(super) fn run(range: Range<u64>, stop: &dyn Fn() -> bool) -> Result<u64, Stopped> {
    let mut counter = 0u64;
    let mut left = range.end.saturating_sub(range.start);
    while left > 0 {
        let block = left.min(CHECK_EVERY);
        for _ in 0..block {
            counter = black_box(counter + 1);
        }
        left -= block;
        if left > 0 && stop() {
            return Err(Stopped);
        }
    }
    Ok(counter)
}
