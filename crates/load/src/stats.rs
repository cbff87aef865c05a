//! Per-connection recording: each connection task owns one `Recorder` (histograms, counters,
//! a per-second timeline) and touches nothing shared per request; recorders merge at the end.

use std::time::Duration;

use hdrhistogram::Histogram;

use super::wire::{Stage, Violation};

/// Significant figures of the whole-run histograms: 0.1% value precision, microsecond units,
/// every request recorded (no sampling). Auto-resizing, so no upper bound to guess.
const SIGFIG: u8 = 3;
/// Per-second histograms only feed a timeline plot of p50/p99; 1% precision keeps the
/// thousands of them (connections x seconds) small.
const TIMELINE_SIGFIG: u8 = 2;

/// How a request that got no complete answer failed on its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// TCP connect refused, unreachable, or timed out.
    Connect,
    /// The server closed or reset the connection before the response was complete.
    Closed,
    /// The response was not valid HTTP/1, in the way named.
    Protocol(Violation),
    /// Anything else (local I/O errors).
    Other,
}

/// Counts of connection errors by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ErrorCounts {
    /// TCP connect refused, unreachable, or timed out.
    pub connect: u64,
    /// The server closed or reset the connection before the response was complete.
    pub closed: u64,
    /// Responses that were not valid HTTP/1 (the sum of `protocol_by_kind`).
    pub protocol: u64,
    /// Anything else (local I/O errors).
    pub other: u64,
    /// The protocol errors by what was wrong.
    pub protocol_by_kind: ProtocolCounts,
}

/// Protocol errors by `Violation`, each under its `snake_case` name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProtocolCounts {
    /// The head (status line and headers) did not end within [`MAX_HEAD`](crate::MAX_HEAD)
    /// bytes (64 KiB).
    pub head_too_large: u64,
    /// More than 64 header lines.
    pub too_many_headers: u64,
    /// The status line or a header line is not HTTP/1.x syntax.
    pub bad_head: u64,
    /// A `Content-Length` that is not a decimal number, overflows 64 bits, or disagrees with
    /// another one in the same head.
    pub bad_length: u64,
    /// Broken chunked framing: a bad or oversized chunk-size line, chunk data not followed by
    /// CRLF, or a trailer line over 64 KiB.
    pub bad_chunk: u64,
    /// Bytes past the end of the answer: a body longer than declared, or an answer nobody
    /// asked for.
    pub extra_bytes: u64,
}

impl ProtocolCounts {
    /// Each kind's name (as in the JSON) and count, in a fixed order.
    pub fn named(&self) -> [(&'static str, u64); 6] {
        [
            ("head_too_large", self.head_too_large),
            ("too_many_headers", self.too_many_headers),
            ("bad_head", self.bad_head),
            ("bad_length", self.bad_length),
            ("bad_chunk", self.bad_chunk),
            ("extra_bytes", self.extra_bytes),
        ]
    }

    fn add(&mut self, v: Violation) {
        let n = match v {
            Violation::HeadTooLarge => &mut self.head_too_large,
            Violation::TooManyHeaders => &mut self.too_many_headers,
            Violation::BadHead => &mut self.bad_head,
            Violation::BadLength => &mut self.bad_length,
            Violation::BadChunk => &mut self.bad_chunk,
            Violation::ExtraBytes => &mut self.extra_bytes,
        };
        *n += 1;
    }

    fn merge(&mut self, o: &ProtocolCounts) {
        self.head_too_large += o.head_too_large;
        self.too_many_headers += o.too_many_headers;
        self.bad_head += o.bad_head;
        self.bad_length += o.bad_length;
        self.bad_chunk += o.bad_chunk;
        self.extra_bytes += o.extra_bytes;
    }
}

impl ErrorCounts {
    /// All connection errors: `connect + closed + protocol + other`.
    pub fn total(&self) -> u64 {
        self.connect + self.closed + self.protocol + self.other
    }

    fn add(&mut self, kind: ErrorKind) {
        match kind {
            ErrorKind::Connect => self.connect += 1,
            ErrorKind::Closed => self.closed += 1,
            ErrorKind::Protocol(v) => {
                self.protocol += 1;
                self.protocol_by_kind.add(v);
            }
            ErrorKind::Other => self.other += 1,
        }
    }

    fn merge(&mut self, o: &ErrorCounts) {
        self.connect += o.connect;
        self.closed += o.closed;
        self.protocol += o.protocol;
        self.other += o.other;
        self.protocol_by_kind.merge(&o.protocol_by_kind);
    }
}

/// Timeouts by how far the answer had got when the request was given up on: a slow server
/// sends nothing, a trickling or stuck one stops mid-head or mid-body (a body that never
/// ends is the last).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TimeoutCounts {
    /// Not one byte of the answer had arrived.
    pub no_response: u64,
    /// Part of the head had arrived.
    pub head_incomplete: u64,
    /// The head had arrived; the body had not ended.
    pub body_incomplete: u64,
}

impl TimeoutCounts {
    fn add(&mut self, stage: Stage) {
        match stage {
            Stage::Nothing => self.no_response += 1,
            Stage::Head => self.head_incomplete += 1,
            Stage::Body => self.body_incomplete += 1,
        }
    }

    fn merge(&mut self, o: &TimeoutCounts) {
        self.no_response += o.no_response;
        self.head_incomplete += o.head_incomplete;
        self.body_incomplete += o.body_incomplete;
    }
}

/// One second of the measured phase, by completion time.
#[derive(Debug, Clone)]
pub struct Bucket {
    pub completed: u64,
    pub ok: u64,
    pub timeouts: u64,
    pub errors: u64,
    pub bytes: u64,
    pub latency: Histogram<u64>,
}

impl Bucket {
    fn new() -> Self {
        Self {
            completed: 0,
            ok: 0,
            timeouts: 0,
            errors: 0,
            bytes: 0,
            latency: Histogram::new(TIMELINE_SIGFIG).expect("valid sigfig"),
        }
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new(SIGFIG).expect("valid sigfig")
}

/// Records `value`, growing the histogram as needed. (`saturating_record` would clamp to the
/// initial range, about 2 ms, without growing: it silently hides exactly the slow requests.)
fn put(h: &mut Histogram<u64>, value: u64) {
    if h.record(value).is_err() {
        h.saturating_record(value);
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// What one connection task saw. All durations in microseconds.
#[derive(Debug, Clone)]
pub struct Recorder {
    /// Completed responses (any status), from the intended send time (= actual in closed loop).
    pub latency: Histogram<u64>,
    /// Completed responses from the actual send time; recorded in an open loop only (in a
    /// closed loop it would equal `latency`, and every record costs a cache miss).
    pub latency_uncorrected: Option<Histogram<u64>>,
    /// Timed-out requests, each at the time it was given up on (from its intended send).
    pub timed_out: Histogram<u64>,
    /// Requests the deadline cut short (in flight, or due but never sent), each at how long
    /// it had waited from its intended send when the run ended.
    pub cut_short: Histogram<u64>,
    /// Time from the actual send to the response head.
    pub first_byte: Histogram<u64>,
    pub sent: u64,
    pub completed: u64,
    pub status: Vec<(u16, u64)>,
    pub timeouts: u64,
    pub timeouts_by_stage: TimeoutCounts,
    pub aborted: u64,
    /// Open loop: requests due before the deadline that could not be sent, their connection
    /// still waiting for an earlier answer.
    pub unsent: u64,
    pub errors: ErrorCounts,
    pub bytes: u64,
    pub connections_opened: u64,
    /// 2xx answers that arrived in the measured phase to requests sent during the warm-up:
    /// not in the latency figures (their send fell outside), but work the server finished
    /// inside the window.
    pub carried_2xx: u64,
    /// Measured 503 and 429 answers that carried a `Retry-After`.
    pub retry_asked: u64,
    /// Of those, a value that could not be read (never waited for).
    pub retry_unparseable: u64,
    /// Time this connection spent waiting as asked, capped at the run's end.
    pub retry_waited: Duration,
    /// Open loop: requests that fell due while their connection waited as asked; not sent.
    pub retry_skipped: u64,
    pub timeline: Vec<Bucket>,
    /// Latencies not yet in the histograms (see [`BATCH`]).
    pending: Vec<Sample>,
}

/// Completed requests buffered before they go into the histograms. One connection's
/// histograms are tens of kB; with a hundred connections taking turns, recording straight
/// into them costs a cache miss per value (measured: ~5% of the generator's CPU at 100k
/// req/s). Appending to a short buffer and flushing it in one go keeps that memory hot.
/// Every value is still recorded: this batches, it does not sample.
const BATCH: usize = 256;

#[derive(Debug, Clone, Copy)]
struct Sample {
    latency: u64,
    uncorrected: u64,
    first_byte: u64,
    second: usize,
}

impl Recorder {
    /// A recorder; `open_loop` also keeps the uncorrected latency.
    pub fn new(open_loop: bool) -> Self {
        Self {
            latency: histogram(),
            latency_uncorrected: open_loop.then(histogram),
            timed_out: histogram(),
            cut_short: histogram(),
            first_byte: histogram(),
            sent: 0,
            completed: 0,
            status: Vec::new(),
            timeouts: 0,
            timeouts_by_stage: TimeoutCounts::default(),
            aborted: 0,
            unsent: 0,
            errors: ErrorCounts::default(),
            bytes: 0,
            connections_opened: 0,
            carried_2xx: 0,
            retry_asked: 0,
            retry_unparseable: 0,
            retry_waited: Duration::ZERO,
            retry_skipped: 0,
            timeline: Vec::new(),
            pending: Vec::with_capacity(BATCH),
        }
    }

    /// Moves the buffered latencies into the histograms. Called when the buffer is full and
    /// by [`Recorder::finish`].
    fn flush(&mut self) {
        let mut pending = std::mem::take(&mut self.pending);
        for s in pending.drain(..) {
            put(&mut self.latency, s.latency);
            if let Some(h) = &mut self.latency_uncorrected {
                put(h, s.uncorrected);
            }
            put(&mut self.first_byte, s.first_byte);
            put(&mut self.timeline[s.second].latency, s.latency);
        }
        self.pending = pending;
    }

    /// Flushes buffered values: call once the connection is done, before [`Recorder::merge`].
    pub fn finish(mut self) -> Self {
        self.flush();
        self
    }

    fn bucket(&mut self, second: usize) -> &mut Bucket {
        if self.timeline.len() <= second {
            self.timeline.resize_with(second + 1, Bucket::new);
        }
        &mut self.timeline[second]
    }

    /// A response arrived in full. `second` is its completion second in the measured phase.
    pub fn completed(&mut self, r: Completed, second: usize) {
        self.sent += 1;
        self.completed += 1;
        self.bytes += r.bytes;
        match self.status.iter_mut().find(|(s, _)| *s == r.status) {
            Some((_, n)) => *n += 1,
            None => self.status.push((r.status, 1)),
        }
        let b = self.bucket(second);
        b.completed += 1;
        b.ok += u64::from((200..300).contains(&r.status));
        b.bytes += r.bytes;
        self.pending.push(Sample {
            latency: micros(r.latency),
            uncorrected: micros(r.uncorrected),
            first_byte: micros(r.first_byte),
            second,
        });
        if self.pending.len() >= BATCH {
            self.flush();
        }
    }

    /// A request was given up on after `waited` (from its intended send time), its answer
    /// having got as far as `stage`.
    pub fn timed_out(&mut self, waited: Duration, second: usize, stage: Stage) {
        self.sent += 1;
        self.timeouts += 1;
        self.timeouts_by_stage.add(stage);
        put(&mut self.timed_out, micros(waited));
        self.bucket(second).timeouts += 1;
    }

    /// A request failed on its connection.
    pub fn failed(&mut self, kind: ErrorKind, second: usize) {
        self.sent += 1;
        self.errors.add(kind);
        self.bucket(second).errors += 1;
    }

    /// A request was still in flight at the run's deadline, having waited `waited`.
    pub fn aborted(&mut self, waited: Duration) {
        self.sent += 1;
        self.aborted += 1;
        put(&mut self.cut_short, micros(waited));
    }

    /// An open-loop request was due `waited` before the deadline but never sent.
    pub fn unsent(&mut self, waited: Duration) {
        self.unsent += 1;
        put(&mut self.cut_short, micros(waited));
    }

    /// Latency from the actual send: the open-loop record, or `latency` in a closed loop.
    pub fn uncorrected(&self) -> &Histogram<u64> {
        self.latency_uncorrected.as_ref().unwrap_or(&self.latency)
    }

    /// `latency` plus every timeout at the time it was given up on, and every request the
    /// deadline cut short at the time it had waited: nothing that was due is left out.
    pub fn with_timeouts(&self) -> Histogram<u64> {
        let mut h = self.latency.clone();
        let _ = h.add(&self.timed_out);
        let _ = h.add(&self.cut_short);
        h
    }

    /// Adds `other` into `self`; both must be [`finish`](Recorder::finish)ed.
    pub fn merge(&mut self, other: &Recorder) {
        debug_assert!(
            self.pending.is_empty() && other.pending.is_empty(),
            "merge before finish"
        );
        // Auto-resizing histograms cannot fail to add.
        let _ = self.latency.add(&other.latency);
        if let (Some(mine), Some(theirs)) =
            (&mut self.latency_uncorrected, &other.latency_uncorrected)
        {
            let _ = mine.add(theirs);
        }
        let _ = self.timed_out.add(&other.timed_out);
        let _ = self.cut_short.add(&other.cut_short);
        self.unsent += other.unsent;
        let _ = self.first_byte.add(&other.first_byte);
        self.sent += other.sent;
        self.completed += other.completed;
        for &(s, n) in &other.status {
            match self.status.iter_mut().find(|(x, _)| *x == s) {
                Some((_, m)) => *m += n,
                None => self.status.push((s, n)),
            }
        }
        self.timeouts += other.timeouts;
        self.timeouts_by_stage.merge(&other.timeouts_by_stage);
        self.aborted += other.aborted;
        self.errors.merge(&other.errors);
        self.bytes += other.bytes;
        self.connections_opened += other.connections_opened;
        self.carried_2xx += other.carried_2xx;
        self.retry_asked += other.retry_asked;
        self.retry_unparseable += other.retry_unparseable;
        self.retry_waited += other.retry_waited;
        self.retry_skipped += other.retry_skipped;
        for (i, b) in other.timeline.iter().enumerate() {
            let mine = self.bucket(i);
            mine.completed += b.completed;
            mine.ok += b.ok;
            mine.timeouts += b.timeouts;
            mine.errors += b.errors;
            mine.bytes += b.bytes;
            let _ = mine.latency.add(&b.latency);
        }
    }
}

/// One completed exchange.
#[derive(Debug, Clone, Copy)]
pub struct Completed {
    pub status: u16,
    pub latency: Duration,
    pub uncorrected: Duration,
    pub first_byte: Duration,
    pub bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(status: u16, ms: u64) -> Completed {
        let d = Duration::from_millis(ms);
        Completed {
            status,
            latency: d,
            uncorrected: d,
            first_byte: d,
            bytes: 10,
        }
    }

    #[test]
    fn merge_adds_everything() {
        let mut a = Recorder::new(false);
        a.completed(done(200, 5), 0);
        a.timed_out(Duration::from_secs(1), 1, Stage::Body);
        let mut b = Recorder::new(false);
        b.completed(done(500, 7), 2);
        b.failed(ErrorKind::Closed, 2);
        b.failed(ErrorKind::Protocol(Violation::BadChunk), 2);
        b.aborted(Duration::from_millis(300));
        b.unsent(Duration::from_millis(100));
        let mut a = a.finish();
        a.merge(&b.finish());
        assert_eq!(
            (a.sent, a.completed, a.timeouts, a.aborted, a.unsent),
            (6, 2, 1, 1, 1)
        );
        assert_eq!(a.errors.closed, 1);
        assert_eq!(
            (a.errors.protocol, a.errors.protocol_by_kind.bad_chunk),
            (1, 1)
        );
        assert_eq!(a.errors.total(), 2);
        assert_eq!(a.timeouts_by_stage.body_incomplete, 1);
        assert_eq!(a.latency.len(), 2);
        assert_eq!(a.with_timeouts().len(), 5);
        assert_eq!(a.status.len(), 2);
        assert_eq!(a.timeline.len(), 3);
        assert_eq!(a.timeline[2].completed, 1);
        assert_eq!(a.timeline[0].ok, 1);
        assert_eq!(a.bytes, 20);
    }

    #[test]
    fn slow_requests_are_not_clamped() {
        let mut r = Recorder::new(false);
        r.completed(done(200, 30_000), 0);
        r.timed_out(Duration::from_secs(10), 0, Stage::Nothing);
        let r = r.finish();
        assert!(r.latency.max() >= 29_900_000, "{}", r.latency.max());
        assert!(r.with_timeouts().max() >= 9_990_000);
    }
}
