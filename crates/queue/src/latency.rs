//! Enqueue-to-done times as a histogram each store keeps up to date as jobs finish, so that
//! reading them costs the same with a hundred jobs stored as with a million: a fixed set of
//! log-scale buckets per job label, bumped in the same transaction or script that marks a job
//! done (SQLite and Postgres: one row per label and bucket; Redis: one hash field).
//!
//! # Buckets
//! Bucket 0 holds 0 ms (and negative times from a clock step); bucket `b ≥ 1` holds the whole
//! milliseconds `m` with `2^((b-1)/16) ≤ m < 2^(b/16)`: each bucket about 4.4 % wide, so a
//! percentile read from its bucket's middle is within about 2.2 % of the true one (and exact
//! below 23 ms, where a bucket holds one whole millisecond at most). Times of 2^27 ms (37 h)
//! or more share the top bucket. Every bucket also keeps the largest time it holds, so `max`
//! is exact.
//!
//! # Labels
//! A job carries a label (the gateway's work, `count:2000000`) chosen by whoever enqueued it,
//! so a client could make any number of them. Each queue keeps at most [`MAX_LABELS`] labels;
//! a job with another label once they are taken is counted under [`OTHER`]. A job with no
//! label counts in the total only.
//!
//! The histogram lives as long as the queue: it is not trimmed by the retention (finished jobs
//! are), and it goes when the queue is destroyed (Redis, Postgres) or its file deleted (SQLite).

use std::collections::BTreeMap;

/// Buckets per doubling: 16 gives buckets 4.4 % wide, a resolution finer than the run-to-run
/// noise of the times it measures, in a few hundred buckets at most.
pub const PER_OCTAVE: u32 = 16;
/// The top bucket: times from 2^27 ms (37 h, past any retention this queue is run with) up.
pub const TOP_BUCKET: u32 = 1 + PER_OCTAVE * 27;
/// Labels kept per queue: enough for every work a bench or a deployment runs, few enough that
/// reading the histogram stays a few thousand rows at the very most.
pub const MAX_LABELS: usize = 32;
/// The label of jobs whose own label came after the first [`MAX_LABELS`].
pub const OTHER: &str = "other";

/// The bucket of `ms` milliseconds: `1 + floor(log2(ms) * 16 + 1e-9)`, where the `1e-9` keeps
/// exact powers of two (whose `log2` may come out a hair low) in their own bucket. Postgres
/// and Redis compute the same in SQL ([`sql_bucket`]) and Lua ([`lua_bucket`]), from the same
/// constants; SQLite's is computed here.
pub fn bucket(ms: i64) -> u32 {
    if ms < 1 {
        return 0;
    }
    let b =
        1.0 + ((ms as f64).ln() / std::f64::consts::LN_2 * f64::from(PER_OCTAVE) + 1e-9).floor();
    (b as u32).min(TOP_BUCKET)
}

/// [`bucket`] as a Postgres expression over a `bigint` expression `ms`.
pub fn sql_bucket(ms: &str) -> String {
    format!(
        "(CASE WHEN {ms} < 1 THEN 0 ELSE least(1 + floor(ln(({ms})::float8) / ln(2.0) * {PER_OCTAVE} \
         + 1e-9)::int, {TOP_BUCKET}) END)"
    )
}

/// [`bucket`] as a Lua function `bucket_of`, and the label bound, for the Redis scripts.
pub fn lua_bucket() -> String {
    format!(
        "local function bucket_of(ms)\n\
         \x20 if ms < 1 then return 0 end\n\
         \x20 return math.min(1 + math.floor(math.log(ms) / math.log(2) * {PER_OCTAVE} + 1e-9), {TOP_BUCKET})\n\
         end\n\
         local MAX_LABELS, OTHER = {MAX_LABELS}, '{OTHER}'\n"
    )
}

/// The whole milliseconds bucket `b` holds, as `(first, last)`.
fn range(b: u32) -> (f64, f64) {
    if b == 0 {
        return (0.0, 0.0);
    }
    let lo = 2f64.powf(f64::from(b - 1) / f64::from(PER_OCTAVE));
    let first = (lo - 1e-9).ceil();
    if b >= TOP_BUCKET {
        return (first, f64::INFINITY);
    }
    let hi = 2f64.powf(f64::from(b) / f64::from(PER_OCTAVE));
    (first, ((hi - 1e-9).ceil() - 1.0).max(first))
}

/// The time a bucket stands for: the geometric middle of its range, rounded to a whole
/// millisecond and kept within the whole milliseconds it holds.
fn middle(b: u32) -> f64 {
    if b == 0 {
        return 0.0;
    }
    let (first, last) = range(b);
    let mid = 2f64.powf((f64::from(b) - 0.5) / f64::from(PER_OCTAVE));
    mid.round().clamp(first, last)
}

/// One label's times: jobs per bucket and the largest time seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    counts: BTreeMap<u32, u64>,
    max_ms: u64,
}

impl Histogram {
    /// Adds `n` jobs to bucket `b`, and a largest time of `max_ms` (Redis keeps it apart from
    /// the buckets, so it may come with `n` zero).
    pub fn add(&mut self, b: u32, n: u64, max_ms: u64) {
        if n > 0 {
            *self.counts.entry(b.min(TOP_BUCKET)).or_default() += n;
        }
        self.max_ms = self.max_ms.max(max_ms);
    }

    /// Adds one job that took `ms`.
    pub fn record(&mut self, ms: i64) {
        self.add(bucket(ms), 1, ms.max(0) as u64);
    }

    /// Adds every job of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        for (&b, &n) in &other.counts {
            self.add(b, n, 0);
        }
        self.max_ms = self.max_ms.max(other.max_ms);
    }

    /// Jobs counted.
    pub fn count(&self) -> u64 {
        self.counts.values().sum()
    }

    /// The longest time counted, exactly.
    pub fn max_ms(&self) -> u64 {
        self.max_ms
    }

    /// The time below which a fraction `p` of the jobs finished: the job at rank
    /// `ceil(p * count)` (as a sorted list would give), read from its bucket's middle and never
    /// above the exact maximum. `None` when empty.
    pub fn quantile(&self, p: f64) -> Option<f64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = ((p * n as f64).ceil() as u64).clamp(1, n);
        let mut seen = 0;
        for (&b, &k) in &self.counts {
            seen += k;
            if seen >= rank {
                return Some(middle(b).min(self.max_ms as f64));
            }
        }
        Some(self.max_ms as f64)
    }
}

/// A queue's histograms by label (`""`: jobs enqueued with none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Latency {
    /// Each label's histogram: the first [`MAX_LABELS`] labels, later ones under [`OTHER`].
    pub by_label: BTreeMap<String, Histogram>,
}

impl Latency {
    /// Every job's times together.
    pub fn total(&self) -> Histogram {
        let mut all = Histogram::default();
        for h in self.by_label.values() {
            all.merge(h);
        }
        all
    }

    /// Adds a row as the stores keep them: `n` jobs of `label` in bucket `b`, the largest
    /// `max_ms`.
    pub fn add(&mut self, label: &str, b: u32, n: u64, max_ms: u64) {
        self.by_label
            .entry(label.to_owned())
            .or_default()
            .add(b, n, max_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_grow_by_a_sixteenth_of_an_octave() {
        assert_eq!(bucket(-5), 0);
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(1), 1);
        assert_eq!(bucket(2), 1 + PER_OCTAVE);
        assert_eq!(bucket(1024), 1 + 10 * PER_OCTAVE);
        assert_eq!(bucket(1023), 10 * PER_OCTAVE);
        assert_eq!(bucket(i64::MAX), TOP_BUCKET);
        assert_eq!(bucket(1 << 27), TOP_BUCKET);
        assert_eq!(bucket((1 << 27) - 1), TOP_BUCKET - 1);
        // Every whole millisecond lies in the range its bucket says it holds.
        for ms in (1..5000).chain((1..200).map(|i| i * 997_331)) {
            let (first, last) = range(bucket(ms));
            assert!(
                first <= ms as f64 && ms as f64 <= last,
                "{ms} in bucket {} = {first}..={last}",
                bucket(ms)
            );
        }
    }

    #[test]
    fn a_bucket_stands_for_a_time_within_a_few_percent() {
        for ms in (1..100_000).step_by(7) {
            let mid = middle(bucket(ms));
            let err = (mid - ms as f64).abs() / ms as f64;
            assert!(err <= 0.045, "{ms} read as {mid}");
            if ms < 23 {
                assert_eq!(mid, ms as f64, "below 23 ms a bucket is one ms");
            }
        }
    }

    #[test]
    fn quantiles_match_a_sorted_list_within_the_resolution() {
        let times: Vec<i64> = (0..1000).map(|i| 5 + i * i / 3).collect();
        let mut h = Histogram::default();
        for &t in &times {
            h.record(t);
        }
        assert_eq!(h.count(), 1000);
        assert_eq!(h.max_ms(), *times.last().unwrap() as u64);
        for p in [0.5, 0.9, 0.99] {
            let exact = times[((p * 1000.0_f64).ceil() as usize) - 1] as f64;
            let got = h.quantile(p).unwrap();
            assert!(
                (got - exact).abs() / exact <= 0.045,
                "p{p}: {got} vs {exact}"
            );
        }
        assert_eq!(h.quantile(1.0), Some(h.max_ms() as f64));
        assert_eq!(Histogram::default().quantile(0.5), None);
    }

    #[test]
    fn no_quantile_is_above_the_maximum() {
        let mut h = Histogram::default();
        h.record(1000);
        assert_eq!(h.quantile(0.5), Some(1000.0));
        let mut l = Latency::default();
        l.add("a", bucket(3), 2, 3);
        l.add("b", bucket(40), 1, 40);
        let all = l.total();
        assert_eq!((all.count(), all.max_ms()), (3, 40));
        assert_eq!(all.quantile(0.5), Some(3.0));
    }
}
