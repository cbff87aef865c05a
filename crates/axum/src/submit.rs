//! What a client asks of the job its request may become, read from two request headers:
//! - `Idempotency-Key` (IETF httpapi draft "The Idempotency-Key HTTP Header Field"): submit
//!   once. A request that repeats a key with the same work gets the job the first one stored;
//!   with other work, 422.
//! - `Job-Deadline: SECONDS`: the job is worth nothing after this many seconds from now (a
//!   decimal, such as `30` or `2.5`). A job not started by then ends `expired` without
//!   running, and a run still going then is stopped.
//! - `Job-Delay: SECONDS`: no claim takes the job before this many seconds from now.
//! - `Job-Priority: P`: 0 (the default, most urgent) to 9; a job of priority `P` is claimed as
//!   if it became due `P` seconds later ([`offload_queue::PRIORITY_STEP`]).
//! - `traceparent` (W3C Trace Context): stored with the job, so that its runs continue the
//!   caller's trace ([`offload_queue::TraceParent`]). One that is not a valid version-00
//!   context is ignored, as the W3C spec asks, not refused.
//!
//! The deadline is a header rather than a field of the work so that it applies to `GET` and
//! `POST` alike and is not part of what an idempotency key compares (a resent request whose
//! deadline moved is still the same work). It is relative, as gRPC's `grpc-timeout` is,
//! because an absolute time would carry the skew between the client's clock and the
//! server's; the server fixes it on its own clock when the request arrives.

use std::time::Duration;

use axum::http::HeaderMap;
use offload_queue::{JobKey, NewJob, TraceParent};

use crate::Error;

/// The idempotency key's header.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// The deadline's header.
pub const JOB_DEADLINE: &str = "job-deadline";
/// The delay's header.
pub const JOB_DELAY: &str = "job-delay";
/// The priority's header.
pub const JOB_PRIORITY: &str = "job-priority";
/// The W3C trace context's header.
pub const TRACEPARENT: &str = "traceparent";
/// The longest deadline: a day. A job a client will wait longer for needs no deadline.
pub const MAX_DEADLINE: Duration = Duration::from_secs(86_400);
/// The longest delay: 30 days. Work planned further ahead belongs in a scheduler; a delayed
/// job holds its place in the backlog all the while.
pub const MAX_DELAY: Duration = Duration::from_secs(30 * 86_400);

/// A request's `Idempotency-Key` and `Job-Deadline`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Submit {
    /// Store the job at most once under this key.
    pub key: Option<JobKey>,
    /// The job's deadline, from the request's arrival.
    pub deadline: Option<Duration>,
    /// How long from the request's arrival no claim takes the job.
    pub delay: Option<Duration>,
    /// The job's priority, 0 to [`offload_queue::MAX_PRIORITY`].
    pub priority: u8,
    /// The caller's trace context, carried to the job's runs.
    pub trace: Option<TraceParent>,
}

impl Submit {
    /// Reads the two headers. The key may be sent as the draft writes it, a structured-field
    /// string (`"abc"`), or bare (`abc`).
    ///
    /// # Errors
    /// [`Error::BadKey`] for a key that is empty, over 255 characters, not printable ASCII, or
    /// sent twice; [`Error::BadDeadline`] for a deadline that is not a positive number of
    /// seconds up to [`MAX_DEADLINE`], or sent twice; [`Error::BadSchedule`] for a delay that
    /// is not 0 to [`MAX_DELAY`] seconds or a priority that is not 0 to 9.
    pub fn from_headers(headers: &HeaderMap) -> Result<Submit, Error> {
        let key = match one(headers, IDEMPOTENCY_KEY).map_err(Error::BadKey)? {
            None => None,
            Some(raw) => Some(key(raw)?),
        };
        let deadline = match one(headers, JOB_DEADLINE).map_err(Error::BadDeadline)? {
            None => None,
            Some(raw) => Some(deadline(raw)?),
        };
        let delay = match one(headers, JOB_DELAY).map_err(Error::BadSchedule)? {
            None => None,
            Some(raw) => Some(delay(raw)?),
        };
        let priority = match one(headers, JOB_PRIORITY).map_err(Error::BadSchedule)? {
            None => 0,
            Some(raw) => priority(raw)?,
        };
        // A context sent twice, or not valid, is ignored (W3C Trace Context, 4.2.2: the
        // receiver starts a trace of its own).
        let trace = one(headers, TRACEPARENT)
            .ok()
            .flatten()
            .and_then(TraceParent::parse);
        Ok(Submit {
            key,
            deadline,
            delay,
            priority,
            trace,
        })
    }

    /// `job` with the key and the deadline (from now) set.
    pub fn apply(&self, mut job: NewJob) -> NewJob {
        if let Some(key) = &self.key {
            job = job.key(key.clone());
        }
        if let Some(d) = self.deadline {
            job = job.expires_in(d);
        }
        if let Some(d) = self.delay {
            job = job.delay(d);
        }
        if let Some(t) = &self.trace {
            job = job.trace(t.clone());
        }
        job.priority(self.priority)
    }
}

/// The value of a header sent at most once, as text.
fn one<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, String> {
    let mut values = headers.get_all(name).iter();
    let Some(v) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(format!("{name} is sent more than once"));
    }
    v.to_str()
        .map(Some)
        .map_err(|_| format!("{name} is not printable ASCII"))
}

fn key(raw: &str) -> Result<JobKey, Error> {
    let raw = raw.trim();
    let unquoted = raw
        .strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .unwrap_or(raw);
    JobKey::new(unquoted).map_err(|e| Error::BadKey(e.to_string()))
}

fn deadline(raw: &str) -> Result<Duration, Error> {
    seconds(raw, false, MAX_DEADLINE).map_err(|_| {
        Error::BadDeadline(format!(
            "Job-Deadline must be seconds from now, above 0 and at most {}: got {:?}",
            MAX_DEADLINE.as_secs(),
            shown(raw)
        ))
    })
}

fn delay(raw: &str) -> Result<Duration, Error> {
    seconds(raw, true, MAX_DELAY).map_err(|_| {
        Error::BadSchedule(format!(
            "Job-Delay must be seconds from now, 0 to {}: got {:?}",
            MAX_DELAY.as_secs(),
            shown(raw)
        ))
    })
}

/// A decimal number of seconds, above 0 (or from 0 with `zero`) and at most `max`.
fn seconds(raw: &str, zero: bool, max: Duration) -> Result<Duration, ()> {
    let secs: f64 = raw.trim().parse().map_err(|_| ())?;
    let low_ok = if zero { secs >= 0.0 } else { secs > 0.0 };
    if !secs.is_finite() || !low_ok || secs > max.as_secs_f64() {
        return Err(());
    }
    Ok(Duration::from_secs_f64(secs))
}

/// At most this much of a client's value is echoed in an error message.
fn shown(raw: &str) -> String {
    raw.chars().take(32).collect()
}

fn priority(raw: &str) -> Result<u8, Error> {
    raw.trim()
        .parse::<u8>()
        .ok()
        .filter(|p| *p <= offload_queue::MAX_PRIORITY)
        .ok_or_else(|| {
            Error::BadSchedule(format!(
                "Job-Priority must be a whole number from 0 (most urgent) to 9: got {:?}",
                shown(raw)
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn keys_quoted_or_bare_and_deadlines_in_seconds() {
        let s = Submit::from_headers(&headers(&[
            ("idempotency-key", "\"8e03978e-40d5\""),
            ("job-deadline", "2.5"),
        ]))
        .unwrap();
        assert_eq!(s.key.unwrap().as_str(), "8e03978e-40d5");
        assert_eq!(s.deadline, Some(Duration::from_millis(2500)));
        let s = Submit::from_headers(&headers(&[("idempotency-key", "order 7")])).unwrap();
        assert_eq!(s.key.unwrap().as_str(), "order 7");
        assert_eq!(
            Submit::from_headers(&HeaderMap::new()).unwrap(),
            Submit::default()
        );
    }

    #[test]
    fn bad_keys_and_deadlines_are_refused() {
        let long = "k".repeat(256);
        for bad in ["", "\"\"", long.as_str()] {
            let e = Submit::from_headers(&headers(&[("idempotency-key", bad)])).unwrap_err();
            assert!(matches!(e, Error::BadKey(_)), "{bad:?}: {e:?}");
        }
        let twice = headers(&[("idempotency-key", "a"), ("idempotency-key", "b")]);
        assert!(matches!(
            Submit::from_headers(&twice),
            Err(Error::BadKey(_))
        ));
        for bad in ["0", "-1", "abc", "NaN", "inf", "86401", ""] {
            let e = Submit::from_headers(&headers(&[("job-deadline", bad)])).unwrap_err();
            assert!(matches!(e, Error::BadDeadline(_)), "{bad:?}: {e:?}");
        }
        for (header, bad) in [
            ("job-delay", "-1"),
            ("job-delay", "2592001"),
            ("job-delay", "later"),
            ("job-priority", "10"),
            ("job-priority", "-1"),
            ("job-priority", "high"),
        ] {
            let e = Submit::from_headers(&headers(&[(header, bad)])).unwrap_err();
            assert!(
                matches!(e, Error::BadSchedule(_)),
                "{header}: {bad:?}: {e:?}"
            );
        }
        let s = Submit::from_headers(&headers(&[("job-delay", "0"), ("job-priority", "9")]));
        assert_eq!(
            s.map(|s| (s.delay, s.priority)).unwrap(),
            (Some(Duration::ZERO), 9)
        );
    }
}
