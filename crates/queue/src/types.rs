//! The queue's nouns: job ids, the job view the gateway returns, claims, outcomes and errors.
//! Shared by both backends so that they answer with the same values.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Bytes of randomness in a job id: 128 bits cannot be guessed or enumerated.
const ID_BYTES: usize = 16;

/// A job id: 128 random bits from the OS RNG, written as 32 lowercase hex characters.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(String);

impl JobId {
    /// A fresh random id.
    ///
    /// # Panics
    /// If the OS RNG fails, which on the supported platforms means the system is broken.
    pub fn random() -> JobId {
        JobId(hex(&random_bytes::<ID_BYTES>()))
    }

    /// Parses an id as given by a client.
    ///
    /// # Errors
    /// [`IdError`] if `s` is not exactly 32 hex characters (case-insensitive).
    pub fn parse(s: &str) -> Result<JobId, IdError> {
        if s.len() == ID_BYTES * 2 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(JobId(s.to_ascii_lowercase()))
        } else {
            Err(IdError)
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for JobId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<JobId, IdError> {
        JobId::parse(s)
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JobId({})", self.0)
    }
}

impl Serialize for JobId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// Longest idempotency key: the IETF draft leaves the length to the server; 255 holds a UUID
/// with room for a client's own prefix, and bounds what a client can make the store index.
pub const MAX_KEY_LEN: usize = 255;

/// A job's idempotency key ([`NewJob::key()`]): 1 to [`MAX_KEY_LEN`] printable ASCII
/// characters (space to `~`), as an HTTP header can carry it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JobKey(String);

impl JobKey {
    /// Checks `key` against the rule.
    ///
    /// # Errors
    /// [`KeyError`] if it is empty, longer than [`MAX_KEY_LEN`], or has another character.
    pub fn new(key: impl Into<String>) -> Result<JobKey, KeyError> {
        let key = key.into();
        if (1..=MAX_KEY_LEN).contains(&key.len()) && key.bytes().all(|b| (0x20..0x7f).contains(&b))
        {
            Ok(JobKey(key))
        } else {
            Err(KeyError)
        }
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A string that is not a usable idempotency key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid idempotency key: use 1 to 255 printable ASCII characters")]
pub struct KeyError;

/// A string that is not a job id (as opposed to an id that names no job).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed job id: expected 32 hex characters")]
pub struct IdError;

/// Longest queue name: room for a prefix and a run's own suffix, short enough for a key.
pub const MAX_NAME_LEN: usize = 64;

/// A queue's name: 1 to [`MAX_NAME_LEN`] ASCII letters, digits, `_` or `-`. It becomes part of
/// Redis keys (inside a `{}` hash tag, and in the pattern `destroy` scans) and a Postgres
/// column value, so it is checked once, here, and no other string can reach a key: a name such
/// as `a*` would be a glob matching every queue whose name starts with `a`. Read back (from a
/// report that keeps it) through the same check.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct QueueName(String);

impl QueueName {
    /// Checks `name` against the rule.
    ///
    /// # Errors
    /// [`NameError`] if it is empty, longer than [`MAX_NAME_LEN`], or has another character.
    pub fn new(name: impl Into<String>) -> Result<QueueName, NameError> {
        let name = name.into();
        let allowed = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
        if (1..=MAX_NAME_LEN).contains(&name.len()) && name.bytes().all(allowed) {
            Ok(QueueName(name))
        } else {
            Err(NameError(name.chars().take(MAX_NAME_LEN + 8).collect()))
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for QueueName {
    fn default() -> QueueName {
        QueueName(super::DEFAULT_QUEUE_NAME.to_owned())
    }
}

impl FromStr for QueueName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<QueueName, NameError> {
        QueueName::new(s)
    }
}

impl TryFrom<String> for QueueName {
    type Error = NameError;
    fn try_from(s: String) -> Result<QueueName, NameError> {
        QueueName::new(s)
    }
}

impl fmt::Display for QueueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for QueueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "QueueName({})", self.0)
    }
}

impl Serialize for QueueName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// A string that is not a valid queue name (the rejected text, cut short).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid queue name {0:?}: use 1 to 64 characters, each an ASCII letter, a digit, `_` or `-` \
     ([A-Za-z0-9_-]{{1,64}})"
)]
pub struct NameError(pub String);

/// The name a worker claims under: host, process id and a random suffix, so two workers never
/// share one (a shared Redis consumer name would mix their pending entries).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WorkerId(String);

impl WorkerId {
    /// A fresh, unique worker name.
    pub fn new() -> WorkerId {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "host".to_owned());
        let suffix = hex(&random_bytes::<6>());
        WorkerId(format!("{host}-{}-{suffix}", std::process::id()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for WorkerId {
    fn default() -> WorkerId {
        WorkerId::new()
    }
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Waiting to run, or waiting for its next retry.
    Queued,
    /// Held by a worker under a lease.
    Running,
    /// Finished with a result.
    Done,
    /// Out of attempts, or failed with an error that must not be retried.
    Failed,
    /// Cancelled before it finished ([`JobQueue::cancel`](crate::JobQueue::cancel)): it never
    /// runs again, and a run in progress is told to stop.
    Cancelled,
    /// Its deadline ([`NewJob::expires_at`]) passed before it finished: it was not started
    /// after the deadline, and a run in progress at the deadline was told to stop.
    Expired,
}

impl JobStatus {
    /// The lowercase name stored by both backends.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Done => "done",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
            JobStatus::Expired => "expired",
        }
    }

    /// Whether the job has ended (done, failed, cancelled or expired): it will not change
    /// again unless retried.
    pub fn is_finished(self) -> bool {
        !matches!(self, JobStatus::Queued | JobStatus::Running)
    }

    /// Every status, in the order of a job's life.
    pub const ALL: [JobStatus; 6] = [
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Done,
        JobStatus::Failed,
        JobStatus::Cancelled,
        JobStatus::Expired,
    ];

    /// Parses a stored name.
    pub fn from_name(s: &str) -> Option<JobStatus> {
        Some(match s {
            "queued" => JobStatus::Queued,
            "running" => JobStatus::Running,
            "done" => JobStatus::Done,
            "failed" => JobStatus::Failed,
            "cancelled" => JobStatus::Cancelled,
            "expired" => JobStatus::Expired,
            _ => return None,
        })
    }
}

/// What `GET /jobs/{id}` shows: one lookup in either backend. Times are unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobView {
    /// The job's id.
    pub id: JobId,
    /// Where the job is.
    pub status: JobStatus,
    /// Runs started so far, not counting those lost with their worker (stalls).
    pub attempts: u32,
    /// Runs allowed before the job fails.
    pub max_attempts: u32,
    /// Runs lost with their worker (the lease lapsed): not failures, counted apart.
    pub stalls: u32,
    /// Stalls allowed before the job fails.
    pub max_stalls: u32,
    /// The job's result (opaque JSON text) once done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// The error once failed, or the last error while a retry is pending.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the job was accepted.
    pub enqueued_at: u64,
    /// When its latest run started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<u64>,
    /// When it reached `done`, `failed`, `cancelled` or `expired`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<u64>,
    /// Its deadline, if it has one ([`NewJob::expires_at`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    /// Its priority, 0 (most urgent) to [`MAX_PRIORITY`].
    #[serde(skip_serializing_if = "is_zero")]
    pub priority: u8,
    /// What the job is ([`NewJob::label`]): its type's name for a typed job; offload's
    /// gateway writes the work and its size (`count:2000000`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

fn is_zero(p: &u8) -> bool {
    *p == 0
}

/// A job to enqueue: an opaque payload (JSON text), its attempt budget and the label its
/// enqueue-to-done time is counted under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob {
    /// Opaque to the queue: handed unchanged to the executor.
    pub payload: String,
    /// Runs allowed; `None` takes the queue's default.
    pub max_attempts: Option<u32>,
    /// What the job is, for the latency histogram's `by_work` (the gateway sets the work,
    /// `count:2000000`); `None` counts in the total only. At most [`MAX_LABEL_LEN`] bytes.
    pub label: Option<String>,
    /// Submit once: while a job stored under this key is within its retention, enqueueing
    /// the same payload under it again answers that job's id and stores nothing, and a
    /// different payload is refused ([`EnqueueError::KeyReused`](crate::EnqueueError::KeyReused)).
    pub key: Option<JobKey>,
    /// The caller's deadline, unix ms: a job not started by then ends `expired` without
    /// running, and a run still going then is told to stop and ends `expired`.
    pub expires_at: Option<u64>,
    /// Not claimed before this time, unix ms (`None`: at once).
    pub run_at: Option<u64>,
    /// 0 (the default, most urgent) to [`MAX_PRIORITY`]: claims take the job as if it became
    /// due `priority` × [`PRIORITY_STEP`] later than it did. See [`PRIORITY_STEP`].
    pub priority: u8,
    /// The trace context of what stored the job, handed to its runs ([`Claimed::trace`]):
    /// not part of the work (a keyed job sent again with another context is the same job).
    pub trace: Option<crate::TraceParent>,
}

/// The least urgent priority.
pub const MAX_PRIORITY: u8 = 9;

/// How much later a job of priority `p` is claimed than one of priority 0 due at the same
/// time: `p` × this. Claims take due jobs in order of their due time plus this handicap (then
/// in the order stored), so a job of priority `p` waits behind urgent jobs that became due up
/// to `p` seconds after it, and is claimed before any that became due later: under a stream of
/// urgent jobs that keeps every worker busy, a low-priority job is still claimed within
/// `p` seconds plus the time the workers take to run the urgent jobs ahead of it. Aging, in
/// one number that the store orders by: no scan for old jobs, no share of claims to tune.
pub const PRIORITY_STEP: Duration = Duration::from_secs(1);

/// Longest job label kept; a longer one is cut (labels name kinds of work, not jobs).
pub const MAX_LABEL_LEN: usize = 64;

impl NewJob {
    /// A job with the queue's default attempt budget and no label.
    pub fn new(payload: impl Into<String>) -> NewJob {
        NewJob {
            payload: payload.into(),
            max_attempts: None,
            label: None,
            key: None,
            expires_at: None,
            run_at: None,
            priority: 0,
            trace: None,
        }
    }

    /// Carries the trace context `trace` to the job's runs: see the field `trace`.
    pub fn trace(mut self, trace: crate::TraceParent) -> NewJob {
        self.trace = Some(trace);
        self
    }

    /// Holds the job back for `d`: no claim takes it before.
    pub fn delay(mut self, d: Duration) -> NewJob {
        self.run_at = Some(now_ms().saturating_add(d.as_millis() as u64));
        self
    }

    /// Sets the priority, cut to [`MAX_PRIORITY`]: see the field `priority`.
    pub fn priority(mut self, priority: u8) -> NewJob {
        self.priority = priority.min(MAX_PRIORITY);
        self
    }

    /// Stores the job at most once under `key`: see the field `key`.
    pub fn key(mut self, key: JobKey) -> NewJob {
        self.key = Some(key);
        self
    }

    /// Gives the job a deadline `within` from now: see the field `expires_at`.
    pub fn expires_in(mut self, within: Duration) -> NewJob {
        self.expires_at = Some(now_ms().saturating_add(within.as_millis() as u64));
        self
    }

    /// Sets the label its enqueue-to-done time is counted under, cut to [`MAX_LABEL_LEN`]
    /// bytes; an empty label is none.
    pub fn label(mut self, label: impl Into<String>) -> NewJob {
        let mut label = label.into();
        if label.len() > MAX_LABEL_LEN {
            let mut end = MAX_LABEL_LEN;
            while !label.is_char_boundary(end) {
                end -= 1;
            }
            label.truncate(end);
        }
        self.label = (!label.is_empty()).then_some(label);
        self
    }

    /// Sets the attempt budget (at least 1).
    pub fn max_attempts(mut self, n: u32) -> NewJob {
        self.max_attempts = Some(n.max(1));
        self
    }
}

/// A job held under a lease. Only the holder of the current lease can heartbeat, complete or
/// release it: a worker whose lease expired and whose job was claimed again is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    /// The job's id.
    pub id: JobId,
    /// The payload given at enqueue.
    pub payload: String,
    /// This run's number, from 1.
    pub attempt: u32,
    /// Runs allowed.
    pub max_attempts: u32,
    /// The job's deadline, unix ms: the worker stops the run then.
    pub expires_at: Option<u64>,
    /// The trace context the job was stored with ([`NewJob::trace`]).
    pub trace: Option<crate::TraceParent>,
    /// Random token naming this lease; stored with the job while the lease is current.
    pub(crate) token: String,
    /// SQLite only: the job's row (`seq`), by which the lease's later statements find it
    /// without a search of the ids' index (0 elsewhere).
    pub(crate) row: i64,
    /// Redis only: the stream entry that delivered the job.
    pub(crate) entry: String,
    /// Redis only: the consumer (worker) that holds the entry.
    pub(crate) consumer: String,
}

/// Why a job's run did not produce a result, and whether running it again may help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct JobError {
    /// Shown as the job's error.
    pub message: String,
    /// `false`: fail at once, whatever attempts remain (a bad payload will not improve).
    pub retry: bool,
}

impl JobError {
    /// An error worth another attempt (a timeout, a lost dependency).
    pub fn retry(message: impl Into<String>) -> JobError {
        JobError {
            message: message.into(),
            retry: true,
        }
    }

    /// An error that another attempt would repeat.
    pub fn fatal(message: impl Into<String>) -> JobError {
        JobError {
            message: message.into(),
            retry: false,
        }
    }
}

/// What `complete` did with an outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// The result is stored; the job is `done`.
    Done,
    /// The error is stored and the job is queued again after a backoff.
    Retrying,
    /// The job is `failed` with the error.
    Failed,
    /// The run failed at or past the job's deadline (it was stopped there, or a retry would
    /// come too late): the job is `expired`.
    Expired,
    /// The caller no longer holds the lease; nothing was written.
    Refused,
}

/// Jobs by state, for metrics. `done` and `failed` count finished jobs still within retention.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Waiting, including those waiting for a retry.
    pub queued: u64,
    /// Held by workers.
    pub running: u64,
    /// Finished with a result.
    pub done: u64,
    /// Finished with an error.
    pub failed: u64,
    /// Cancelled before they finished.
    #[serde(default)]
    pub cancelled: u64,
    /// Past their deadline before they finished.
    #[serde(default)]
    pub expired: u64,
    /// Runs lost with their worker, ever, in this queue (a counter, never reset).
    pub stalls: u64,
}

/// The delay before retry number `attempt` (1 = first retry): exponential from `base`, capped at
/// `max`, with "equal jitter" (half fixed, half random) so that jobs that failed together do not
/// retry together.
pub fn backoff(attempt: u32, base: Duration, max: Duration) -> Duration {
    let exp = base
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
        .min(max);
    let half = exp / 2;
    let r = u64::from_le_bytes(random_bytes::<8>());
    let jitter_ms = if half.as_millis() == 0 {
        0
    } else {
        r % (half.as_millis() as u64 + 1)
    };
    half + Duration::from_millis(jitter_ms)
}

/// Now as unix milliseconds.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A random lease token (64 bits: only needs to differ between claims of one job).
pub(crate) fn lease_token() -> String {
    hex(&random_bytes::<8>())
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).expect("the OS random number generator failed");
    buf
}

/// Lowercase hex, two digits a byte: by table, since an id is made for every job stored and
/// `write!` per byte cost more than the rest of making it (callgrind).
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_32_hex_and_distinct() {
        let a = JobId::random();
        let b = JobId::random();
        assert_eq!(a.as_str().len(), 32);
        assert_ne!(a, b);
        assert_eq!(JobId::parse(a.as_str()), Ok(a.clone()));
        assert_eq!(JobId::parse(&a.as_str().to_uppercase()), Ok(a));
    }

    #[test]
    fn hex_is_two_lowercase_digits_a_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(hex(&[]), "");
    }

    #[test]
    fn malformed_ids_are_rejected() {
        for bad in [
            "",
            "abc",
            "zz000000000000000000000000000000",
            &"a".repeat(33),
            "../etc/passwd",
        ] {
            assert_eq!(JobId::parse(bad), Err(IdError), "{bad:?}");
        }
    }

    #[test]
    fn queue_names_match_the_rule() {
        for good in ["a", "offload", "A-b_9", &"x".repeat(MAX_NAME_LEN)] {
            assert_eq!(QueueName::new(good).unwrap().as_str(), good);
        }
        for bad in [
            "",
            "a*",
            "a?",
            "[ab]",
            "{a}",
            "a:b",
            "a b",
            "é",
            "a\\",
            &"x".repeat(MAX_NAME_LEN + 1),
        ] {
            let e = bad.parse::<QueueName>().unwrap_err();
            assert!(e.to_string().contains("[A-Za-z0-9_-]{1,64}"), "{e}");
        }
    }

    #[test]
    fn labels_are_cut_at_a_char_boundary() {
        let long = "é".repeat(MAX_LABEL_LEN);
        let job = NewJob::new("{}").label(long);
        let label = job.label.unwrap();
        assert!(label.len() <= MAX_LABEL_LEN && label.chars().all(|c| c == 'é'));
        assert_eq!(NewJob::new("{}").label("").label, None);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        for attempt in 1..10 {
            let d = backoff(attempt, base, max);
            let exp = (base * (1 << (attempt - 1))).min(max);
            assert!(d >= exp / 2 && d <= exp, "attempt {attempt}: {d:?}");
        }
    }
}

/// Most jobs one page of [`JobQueue::list`](crate::JobQueue::list) holds: a page is one bounded
/// read, small enough to answer in milliseconds, large enough to page through thousands.
pub const MAX_PAGE: usize = 1000;

/// Where a page of [`JobQueue::list`](crate::JobQueue::list) ends: the next page starts after
/// it. Opaque to clients (written as text by `Display`, read back by [`Cursor::parse`]): a time
/// and a tie-break that the store orders by (its insertion order, or its own id), so it stays
/// valid while jobs are added or change status.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    /// The last job's time on the list's clock, unix ms.
    pub(crate) t: u64,
    /// The last job's tie-break among jobs of the same ms.
    pub(crate) tie: String,
}

impl Cursor {
    /// Longest tie-break kept: a store's sequence number, a job id or a stream entry id.
    const MAX_TIE: usize = 48;

    /// Reads a cursor as written by `Display`.
    ///
    /// # Errors
    /// [`CursorError`] for anything else.
    pub fn parse(s: &str) -> Result<Cursor, CursorError> {
        let (t, tie) = s.split_once('.').ok_or(CursorError)?;
        let t = t.parse().map_err(|_| CursorError)?;
        let ok = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b) || b == b'-';
        if tie.is_empty() || tie.len() > Cursor::MAX_TIE || !tie.bytes().all(ok) {
            return Err(CursorError);
        }
        Ok(Cursor {
            t,
            tie: tie.to_owned(),
        })
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.t, self.tie)
    }
}

/// A string that is not a cursor given out by a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed cursor: pass back the `next` of the page before")]
pub struct CursorError;

/// Which jobs [`JobQueue::list`](crate::JobQueue::list) pages through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListFilter {
    /// Jobs with this status.
    pub status: JobStatus,
    /// At most this many (1 to [`MAX_PAGE`]; outside that, cut to it).
    pub limit: usize,
    /// After this cursor (the `next` of the page before); `None`: from the newest.
    pub after: Option<Cursor>,
}

impl ListFilter {
    /// The SQL stores' keyset: the time and sequence number the page starts below (a cursor's,
    /// or the largest values, from the newest). A tie-break that is not a number (another
    /// store's cursor) starts the cursor's ms from its newest job.
    #[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
    pub(crate) fn keyset(&self) -> (i64, i64) {
        match &self.after {
            Some(c) => (
                i64::try_from(c.t).unwrap_or(i64::MAX),
                c.tie.parse().unwrap_or(i64::MAX),
            ),
            None => (i64::MAX, i64::MAX),
        }
    }
}

/// One page of jobs, newest first: finished jobs by when they finished, queued and running ones
/// by when they last became due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobPage {
    /// The jobs, newest first.
    pub jobs: Vec<JobView>,
    /// Where the next page starts; `None` when this one reached the oldest.
    pub next: Option<Cursor>,
}

/// What [`JobQueue::cancel`](crate::JobQueue::cancel) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancel {
    /// The job was `queued` (or waiting for a retry) or `running`, and is now `cancelled`. A
    /// run in progress loses its lease: its worker's next heartbeat tells it to stop, and its
    /// outcome is refused.
    Cancelled {
        /// Where it was.
        was: JobStatus,
    },
    /// The job had already finished (`done`, `failed` or `cancelled`): nothing changed.
    Finished(JobStatus),
    /// No such job (never stored, or finished and past its retention).
    NotFound,
}

/// What [`JobQueue::retry`](crate::JobQueue::retry) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// The job was `failed`, `cancelled` or `expired`, and is `queued` again with fresh
    /// attempts and stalls and no deadline (its last error kept until it runs).
    Queued {
        /// Where it was.
        was: JobStatus,
    },
    /// The job is `queued`, `running` or `done`: nothing changed.
    NotRetryable(JobStatus),
    /// The backlog is at its cap: nothing changed (try again later).
    Full(u64),
    /// No such job (never stored, or finished and past its retention).
    NotFound,
}
