//! The result of a run: counts that add up, latency and throughput statistics, a per-second
//! timeline. Serialised as is for `--json`, and read back as is (offload's bench keeps reports
//! in its `results.json`); `report.schema.json` beside this file describes it.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::plan::{Mode, Plan, Stop};
use super::stats::{ErrorCounts, Recorder, TimeoutCounts};

/// Version of the JSON layout; bumped when a field changes meaning or goes away.
pub const SCHEMA_VERSION: u32 = 2;

/// How timeouts enter the latency figures; printed and carried in the JSON.
pub const TIMEOUT_NOTE: &str = "latency covers completed responses (any status); timed-out \
requests are not in it but are counted, and latency_with_timeouts adds each one at the time it \
was given up on (a lower bound on its true latency)";
/// How deadline-aborted requests are treated.
pub const ABORT_NOTE: &str = "requests still in flight at the -d deadline are counted as \
aborted_at_deadline, and in an open loop requests that fell due but could not be sent (their \
connection still waiting) as unsent_at_deadline; neither is in latency or the error counts, \
both are in latency_with_timeouts at the time they had waited when the run ended (a lower bound)";

/// How `--honor-retry-after` counts; carried in the notes when it was given.
pub const RETRY_NOTE: &str = "Retry-After honoured: after a 503 or 429 with Retry-After, its \
connection sent nothing for that long (capped at the end of the run); the waits are in \
retry_after.waited_s, not in any latency, and in an open loop the requests that fell due \
during a wait are retry_after.skipped, not part of sent";

/// Everything one run measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Version of this JSON layout ([`SCHEMA_VERSION`]).
    pub schema_version: u32,
    /// The target URL as given.
    pub url: String,
    /// The HTTP method of every request.
    pub method: String,
    /// `closed` or `open`.
    pub mode: String,
    /// Number of connections (each with at most one request in flight).
    pub connections: u32,
    /// Threads the connections ran on (each with its own event loop).
    pub threads: usize,
    /// Open loop: the target rate (requests per second in total).
    pub rate: Option<f64>,
    /// `-d` in seconds, if the run was time-bound.
    pub duration_s: Option<f64>,
    /// `-a`, if the run was count-bound.
    pub amount: Option<u64>,
    /// Warm-up before the measured phase, in seconds (requests sent in it are not counted).
    pub warmup_s: f64,
    /// Per-request timeout, in seconds.
    pub timeout_s: f64,
    /// Wall-clock start of the measured phase, milliseconds since the Unix epoch.
    pub started_at_unix_ms: u64,
    /// Length of the measured phase in seconds.
    pub elapsed_s: f64,
    /// Request outcomes in the measured phase.
    pub requests: Requests,
    /// Connection errors by kind (they add up to `requests.errors`).
    pub errors: ErrorCounts,
    /// TCP connections successfully opened, including reconnects.
    pub connections_opened: u64,
    /// Connections opened beyond the first one per connection slot (breaks and timeouts).
    pub reconnects: u64,
    /// Completed responses, from the intended send time (coordinated omission corrected in an
    /// open loop; the same as `latency_uncorrected` in a closed loop).
    pub latency: LatencyStats,
    /// Completed responses, from the actual send time.
    pub latency_uncorrected: LatencyStats,
    /// `latency` plus each timed-out request at the time it was given up on.
    pub latency_with_timeouts: LatencyStats,
    /// Time from the actual send to the response head.
    pub first_byte: LatencyStats,
    /// Completed requests per second, sampled each whole second of the measured phase.
    pub requests_per_s: RateStats,
    /// Response bytes (head and body) per second, sampled likewise.
    pub bytes_per_s: RateStats,
    /// Bytes of completed responses on the wire (head, body and chunk framing), in total.
    pub bytes_read: u64,
    /// The answers that asked the client to wait (`Retry-After`), and what it did.
    pub retry_after: RetryAfterStats,
    /// One entry per second of the measured phase, by completion time.
    pub timeline: Vec<Second>,
    /// How timeouts and aborted requests are treated, in words.
    pub notes: Vec<String>,
}

/// Request outcomes. `sent = completed + timeouts + errors + aborted_at_deadline`, and
/// `completed = status_2xx + non_2xx`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Requests {
    /// Requests issued in the measured phase (a failed connect counts as an issued request).
    pub sent: u64,
    /// Full responses received, any status.
    pub completed: u64,
    /// Completed responses with a 2xx status.
    pub status_2xx: u64,
    /// Completed responses with any other status.
    pub non_2xx: u64,
    /// Completed responses by status code.
    pub by_status: BTreeMap<String, u64>,
    /// Requests with no complete answer within the per-request timeout.
    pub timeouts: u64,
    /// The timeouts by how far the answer had got (they add up to `timeouts`).
    pub timeouts_by_stage: TimeoutCounts,
    /// Connection errors (sum of `errors`).
    pub errors: u64,
    /// In flight at the `-d` deadline.
    pub aborted_at_deadline: u64,
    /// Open loop: due before the deadline but never sent (not part of `sent`).
    pub unsent_at_deadline: u64,
    /// Completed per second over the whole measured phase.
    pub throughput: f64,
    /// 2xx answers that arrived in the measured phase to requests sent during the warm-up
    /// (closed loop): not in `sent` or the latencies, but work finished inside the window.
    pub carried_over_2xx: u64,
    /// 2xx answers that arrived in the measured phase, whenever sent, per second: the rate at
    /// which the server finished work. `status_2xx / elapsed_s` undercounts it by about one
    /// latency's worth of answers (those sent near the end are cut off by the deadline,
    /// and nothing makes up for them); this counts the ones the warm-up sent instead.
    pub answered_2xx_per_s: f64,
}

/// `Retry-After` on 503 and 429 answers in the measured phase.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RetryAfterStats {
    /// `--honor-retry-after`: each connection waited as asked before it sent again.
    pub honoured: bool,
    /// 503 and 429 answers that carried a `Retry-After` (whether or not it was honoured).
    pub asked: u64,
    /// Of those, a value that was neither delta-seconds nor an HTTP-date: never waited for.
    pub unparseable: u64,
    /// Total time the connections spent waiting as asked, in seconds, each wait capped at
    /// the end of a time-bound run (0 when not honoured).
    pub waited_s: f64,
    /// `waited_s` over the connections' time in the measured phase (connections x
    /// elapsed_s): the share of the client's time spent waiting.
    pub waited_fraction: f64,
    /// Open loop: requests that fell due while their connection waited as asked. Not sent,
    /// so not in `requests.sent`; counted here, never dropped silently.
    pub skipped: u64,
}

/// Latency statistics in milliseconds (microsecond resolution).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LatencyStats {
    /// Number of values recorded.
    pub count: u64,
    /// 2.5th percentile, in ms.
    pub p2_5: f64,
    /// Median, in ms.
    pub p50: f64,
    /// 97.5th percentile, in ms.
    pub p97_5: f64,
    /// 99th percentile, in ms.
    pub p99: f64,
    /// 99.9th percentile, in ms.
    pub p99_9: f64,
    /// Mean, in ms.
    pub avg: f64,
    /// Standard deviation, in ms.
    pub stdev: f64,
    /// Smallest value, in ms.
    pub min: f64,
    /// Largest value, in ms.
    pub max: f64,
}

impl LatencyStats {
    fn from_histogram(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        if h.is_empty() {
            return Self {
                count: 0,
                p2_5: 0.0,
                p50: 0.0,
                p97_5: 0.0,
                p99: 0.0,
                p99_9: 0.0,
                avg: 0.0,
                stdev: 0.0,
                min: 0.0,
                max: 0.0,
            };
        }
        let q = |p: f64| ms(h.value_at_quantile(p));
        Self {
            count: h.len(),
            p2_5: q(0.025),
            p50: q(0.5),
            p97_5: q(0.975),
            p99: q(0.99),
            p99_9: q(0.999),
            avg: h.mean() / 1000.0,
            stdev: h.stdev() / 1000.0,
            min: ms(h.min()),
            max: ms(h.max()),
        }
    }
}

/// Per-second rate statistics (autocannon's Req/Sec and Bytes/Sec columns).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RateStats {
    /// Whole seconds sampled.
    pub samples: u64,
    /// 1st percentile (nearest rank), per second.
    pub p1: f64,
    /// 2.5th percentile (nearest rank), per second.
    pub p2_5: f64,
    /// Median (nearest rank), per second.
    pub p50: f64,
    /// 97.5th percentile (nearest rank), per second.
    pub p97_5: f64,
    /// Mean of the samples, per second.
    pub avg: f64,
    /// Population standard deviation of the samples, per second.
    pub stdev: f64,
    /// Lowest sample, per second.
    pub min: f64,
    /// Highest sample, per second.
    pub max: f64,
}

impl RateStats {
    fn from_samples(samples: &[f64]) -> Self {
        if samples.is_empty() {
            return Self {
                samples: 0,
                p1: 0.0,
                p2_5: 0.0,
                p50: 0.0,
                p97_5: 0.0,
                avg: 0.0,
                stdev: 0.0,
                min: 0.0,
                max: 0.0,
            };
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        // Nearest-rank percentile, as HdrHistogram (and so autocannon) reports them.
        let pct = |p: f64| sorted[((p / 100.0 * n as f64).ceil() as usize).clamp(1, n) - 1];
        let avg = sorted.iter().sum::<f64>() / n as f64;
        let var = sorted.iter().map(|x| (x - avg).powi(2)).sum::<f64>() / n as f64;
        Self {
            samples: n as u64,
            p1: pct(1.0),
            p2_5: pct(2.5),
            p50: pct(50.0),
            p97_5: pct(97.5),
            avg,
            stdev: var.sqrt(),
            min: sorted[0],
            max: sorted[n - 1],
        }
    }
}

/// One second of the timeline.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Second {
    /// Seconds since the measured phase began (this entry covers [second, second + span_s)).
    pub second: u64,
    /// 1, or less for the last, partial second of a count-bound run.
    pub span_s: f64,
    /// Responses completed in this second, any status.
    pub completed: u64,
    /// Of those, responses with a 2xx status.
    pub status_2xx: u64,
    /// Requests given up on (timed out) in this second.
    pub timeouts: u64,
    /// Requests that failed with a connection error in this second.
    pub errors: u64,
    /// Bytes of the responses completed in this second (head, body and chunk framing).
    pub bytes: u64,
    /// Latency of the responses completed in this second (1% precision); null if none.
    pub p50_ms: Option<f64>,
    /// 99th percentile latency of the responses completed in this second, in ms (1%
    /// precision); null if none.
    pub p99_ms: Option<f64>,
}

/// Builds the report from the merged recorder. `elapsed` is the measured phase's length.
pub fn build(plan: &Plan, rec: &Recorder, elapsed: Duration, started: SystemTime) -> Report {
    let mode = plan.mode();
    let (duration, amount) = match mode.stop() {
        Stop::Duration(d) => (Some(d.as_secs_f64()), None),
        Stop::Count(n) => (None, Some(n)),
    };
    let elapsed_s = elapsed.as_secs_f64();
    let mut by_status = BTreeMap::new();
    let mut status_2xx = 0;
    for &(status, n) in &rec.status {
        if (200..300).contains(&status) {
            status_2xx += n;
        }
        *by_status.entry(status.to_string()).or_insert(0) += n;
    }
    let mut timeline: Vec<Second> = Vec::new();
    let seconds = (elapsed_s.ceil() as usize).max(rec.timeline.len());
    for i in 0..seconds {
        let span = (elapsed_s - i as f64).clamp(0.0, 1.0);
        let b = rec.timeline.get(i);
        let q = |p: f64| {
            b.filter(|b| !b.latency.is_empty())
                .map(|b| b.latency.value_at_quantile(p) as f64 / 1000.0)
        };
        timeline.push(Second {
            second: i as u64,
            span_s: if span > 0.0 { span } else { 1.0 },
            completed: b.map_or(0, |b| b.completed),
            status_2xx: b.map_or(0, |b| b.ok),
            timeouts: b.map_or(0, |b| b.timeouts),
            errors: b.map_or(0, |b| b.errors),
            bytes: b.map_or(0, |b| b.bytes),
            p50_ms: q(0.5),
            p99_ms: q(0.99),
        });
    }
    // Rates are sampled over whole seconds only; a run shorter than a second gets one sample
    // scaled from its partial second.
    let whole: Vec<&Second> = timeline.iter().filter(|s| s.span_s >= 0.999).collect();
    let (reqs, bytes): (Vec<f64>, Vec<f64>) = if whole.is_empty() {
        timeline
            .iter()
            .map(|s| (s.completed as f64 / s.span_s, s.bytes as f64 / s.span_s))
            .unzip()
    } else {
        whole
            .iter()
            .map(|s| (s.completed as f64, s.bytes as f64))
            .unzip()
    };
    let connections = mode.connections();
    let mut notes = vec![TIMEOUT_NOTE.to_string()];
    if duration.is_some() {
        notes.push(ABORT_NOTE.to_string());
    }
    if plan.honors_retry_after() {
        notes.push(RETRY_NOTE.to_string());
    }
    if let Mode::Open { .. } = mode {
        notes.push(
            "open loop: a request whose connection was still busy at its scheduled send time \
             is timed from that scheduled time (coordinated omission corrected); one sent on \
             time is timed from the timer's wake-up (~1 ms timer granularity is the \
             generator's, not the server's); latency_uncorrected is from the actual send"
                .into(),
        );
    }
    Report {
        schema_version: SCHEMA_VERSION,
        url: plan.target().url().to_string(),
        method: plan.method().to_string(),
        mode: match mode {
            Mode::Closed { .. } => "closed",
            Mode::Open { .. } => "open",
        }
        .to_owned(),
        connections,
        threads: plan.threads().min(connections as usize),
        rate: mode.rate(),
        duration_s: duration,
        amount,
        warmup_s: plan.warmup().as_secs_f64(),
        timeout_s: plan.timeout().as_secs_f64(),
        started_at_unix_ms: started
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        elapsed_s,
        requests: Requests {
            sent: rec.sent,
            completed: rec.completed,
            status_2xx,
            non_2xx: rec.completed - status_2xx,
            by_status,
            timeouts: rec.timeouts,
            timeouts_by_stage: rec.timeouts_by_stage,
            errors: rec.errors.total(),
            aborted_at_deadline: rec.aborted,
            unsent_at_deadline: rec.unsent,
            throughput: if elapsed_s > 0.0 {
                rec.completed as f64 / elapsed_s
            } else {
                0.0
            },
            carried_over_2xx: rec.carried_2xx,
            answered_2xx_per_s: if elapsed_s > 0.0 {
                (status_2xx + rec.carried_2xx) as f64 / elapsed_s
            } else {
                0.0
            },
        },
        errors: rec.errors,
        connections_opened: rec.connections_opened,
        reconnects: rec
            .connections_opened
            .saturating_sub(u64::from(connections)),
        latency: LatencyStats::from_histogram(&rec.latency),
        latency_uncorrected: LatencyStats::from_histogram(rec.uncorrected()),
        latency_with_timeouts: LatencyStats::from_histogram(&rec.with_timeouts()),
        first_byte: LatencyStats::from_histogram(&rec.first_byte),
        requests_per_s: RateStats::from_samples(&reqs),
        bytes_per_s: RateStats::from_samples(&bytes),
        bytes_read: rec.bytes,
        retry_after: RetryAfterStats {
            honoured: plan.honors_retry_after(),
            asked: rec.retry_asked,
            unparseable: rec.retry_unparseable,
            waited_s: rec.retry_waited.as_secs_f64(),
            waited_fraction: if elapsed_s > 0.0 {
                rec.retry_waited.as_secs_f64() / (elapsed_s * f64::from(connections))
            } else {
                0.0
            },
            skipped: rec.retry_skipped,
        },
        timeline,
        notes,
    }
}

/// What a planted report holds: for other parts' report tests, which need a [`Report`] with
/// known figures and no server behind it (the feature `planted`, for tests only).
#[cfg(any(test, feature = "planted"))]
#[derive(Debug, Clone, Default)]
pub struct Planted {
    /// Full answers, each (status, latency), spread evenly over the window.
    pub answers: Vec<(u16, Duration)>,
    /// Requests given up on at the plan's timeout.
    pub timeouts: u64,
    /// Requests still in flight at the deadline, each having waited `cut_after`.
    pub unfinished: u64,
    /// How long each unfinished request had waited at the deadline.
    pub cut_after: Duration,
}

/// A report of `p`'s figures over `elapsed`, recorded and built as a run records and builds
/// them, so every derived figure (percentiles, the timeline, `latency_with_timeouts`) is
/// what a run with those outcomes reports.
#[cfg(any(test, feature = "planted"))]
pub fn planted(plan: &Plan, p: &Planted, elapsed: Duration) -> Report {
    use super::stats::Completed;
    let mut rec = Recorder::new(matches!(plan.mode(), Mode::Open { .. }));
    let seconds = (elapsed.as_secs_f64().ceil() as usize).max(1);
    let n = p.answers.len().max(1);
    for (i, &(status, latency)) in p.answers.iter().enumerate() {
        let done = Completed {
            status,
            latency,
            uncorrected: latency,
            first_byte: latency,
            bytes: 100,
        };
        rec.completed(done, i * seconds / n);
    }
    for _ in 0..p.timeouts {
        rec.timed_out(plan.timeout(), seconds - 1, super::wire::Stage::Nothing);
    }
    for _ in 0..p.unfinished {
        rec.aborted(p.cut_after);
    }
    build(plan, &rec.finish(), elapsed, SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_percentiles_use_nearest_rank() {
        let s = RateStats::from_samples(&[10.0, 20.0, 30.0, 40.0]);
        assert_eq!(
            (s.p1, s.p50, s.p97_5, s.min, s.max),
            (10.0, 20.0, 40.0, 10.0, 40.0)
        );
        assert_eq!(s.avg, 25.0);
        assert_eq!(RateStats::from_samples(&[]).samples, 0);
    }
}
