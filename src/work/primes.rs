//! `primes`: how many primes lie in a range, by a segmented sieve of Eratosthenes, so a
//! chunk needs only the primes up to the square root of its end, plus one segment of memory.

use std::ops::Range;

use super::Stopped;

/// Numbers per segment: 64 KiB of flags stays in a core's L2 cache.
const SEGMENT: u64 = 1 << 16;

/// Counts the primes `p` with `range.start <= p < range.end`.
pub(super) fn count_in(range: Range<u64>, stop: &dyn Fn() -> bool) -> Result<u64, Stopped> {
    let (lo, hi) = (range.start.max(2), range.end);
    if lo >= hi {
        return Ok(0);
    }
    let base = small_primes(isqrt(hi - 1));
    let mut flags = vec![true; SEGMENT as usize];
    let mut total = 0;
    let mut seg = lo;
    while seg < hi {
        let end = (seg + SEGMENT).min(hi);
        let flags = &mut flags[..(end - seg) as usize];
        flags.fill(true);
        for &p in &base {
            if p * p >= end {
                break;
            }
            let first = (p * p).max(seg.div_ceil(p) * p);
            let mut m = first;
            while m < end {
                flags[(m - seg) as usize] = false;
                m += p;
            }
        }
        total += flags.iter().filter(|&&f| f).count() as u64;
        seg = end;
        if seg < hi && stop() {
            return Err(Stopped);
        }
    }
    Ok(total)
}

/// The primes up to and including `limit`, by a plain sieve (limit is at most ~45,000).
fn small_primes(limit: u64) -> Vec<u64> {
    let limit = limit as usize;
    let mut is = vec![true; limit + 1];
    let mut out = Vec::new();
    for i in 2..=limit {
        if is[i] {
            out.push(i as u64);
            let mut m = i * i;
            while m <= limit {
                is[m] = false;
                m += i;
            }
        }
    }
    out
}

/// The integer square root, exact for all u64.
fn isqrt(n: u64) -> u64 {
    let mut r = (n as f64).sqrt() as u64;
    while r.checked_mul(r).is_none_or(|sq| sq > n) {
        r -= 1;
    }
    while (r + 1).checked_mul(r + 1).is_some_and(|sq| sq <= n) {
        r += 1;
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_add_up() {
        let whole = count_in(0..100_000, &|| false).unwrap();
        let a = count_in(0..31_337, &|| false).unwrap();
        let b = count_in(31_337..100_000, &|| false).unwrap();
        assert_eq!(whole, 9_592);
        assert_eq!(a + b, whole);
    }

    #[test]
    fn isqrt_is_exact() {
        for n in [0, 1, 3, 4, 15, 16, 17, u32::MAX as u64, u64::MAX] {
            let r = isqrt(n);
            assert!(
                r * r <= n && (r + 1).checked_mul(r + 1).is_none_or(|s| s > n),
                "{n}"
            );
        }
    }
}
