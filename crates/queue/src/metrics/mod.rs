//! What a worker does, as Prometheus metrics: [`WorkerMetrics`], with the cargo feature
//! `metrics` (without it the type counts nothing and the crate builds no `prometheus-client`).
//! Give one to a worker ([`WorkerConfig::metrics`](crate::worker::WorkerConfig::metrics)) and
//! register it on the service's own registry (`WorkerMetrics::register`); `offload worker
//! --metrics-addr` serves the same series.
//!
//! Series by job type are made the first time a type is claimed and kept from then on; the
//! type is read from the stored job's envelope ([`Job::NAME`](crate::Job::NAME)), and jobs
//! stored as plain text count as `untyped`. At most `MAX_JOB_TYPES` (64) types get series of
//! their own: the rest count as `other`, so a store full of strange names cannot grow a scrape
//! without bound. Recording to a series is an atomic add; a job's series are found once, when
//! it is claimed.

use std::sync::Arc;

#[cfg(feature = "metrics")]
mod prom;
#[cfg(feature = "metrics")]
pub use self::prom::*;

#[cfg(not(feature = "metrics"))]
mod off;
#[cfg(not(feature = "metrics"))]
pub use self::off::*;

/// How a claimed job left the worker's hands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// Stored with its result.
    Done,
    /// Its run failed and it waits for another attempt.
    Retried,
    /// Out of attempts, or a fatal error.
    Failed,
    /// Past its deadline.
    Expired,
    /// Cancelled while this worker held it: its run was told to stop.
    Cancelled,
    /// Its lease went (a long pause, a partition) or its outcome could not be stored: it runs
    /// again, here or elsewhere.
    Lost,
    /// Given back unrun at shutdown.
    Released,
}

impl Ended {
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) const ALL: [Ended; 7] = [
        Ended::Done,
        Ended::Retried,
        Ended::Failed,
        Ended::Expired,
        Ended::Cancelled,
        Ended::Lost,
        Ended::Released,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Ended::Done => "done",
            Ended::Retried => "retried",
            Ended::Failed => "failed",
            Ended::Expired => "expired",
            Ended::Cancelled => "cancelled",
            Ended::Lost => "lost",
            Ended::Released => "released",
        }
    }
}

/// A store call the worker makes, for its errors' label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Claim,
    Complete,
    Heartbeat,
    Release,
    Get,
    Reap,
    Prune,
}

#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
impl Op {
    pub(crate) const ALL: [Op; 7] = [
        Op::Claim,
        Op::Complete,
        Op::Heartbeat,
        Op::Release,
        Op::Get,
        Op::Reap,
        Op::Prune,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Op::Claim => "claim",
            Op::Complete => "complete",
            Op::Heartbeat => "heartbeat",
            Op::Release => "release",
            Op::Get => "get",
            Op::Reap => "reap",
            Op::Prune => "prune",
        }
    }
}

/// What a lease renewal found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Renewal {
    /// Renewed.
    Renewed,
    /// The job was no longer this worker's (cancelled, or the lease had lapsed).
    Refused,
    /// The store did not answer.
    Failed,
}

/// The job type a stored payload names, read from its envelope without parsing the rest
/// (`{"job":"NAME",...`, as [`NewJob::of`](crate::NewJob::of) writes it); `untyped` for any
/// other text.
pub(crate) fn job_type(payload: &str) -> &str {
    payload
        .strip_prefix(r#"{"job":""#)
        .and_then(|rest| rest.split_once('"'))
        .map(|(name, _)| name)
        .filter(|name| !name.is_empty() && !name.contains('\\'))
        .unwrap_or("untyped")
}

tokio::task_local! {
    /// The meter of the run whose executor is being called.
    pub(crate) static METER: Arc<RunMeter>;
}

/// The meter of the run being handed to an executor now, if the worker has metrics: taken by
/// [`Handlers`](crate::Handlers)' executor, which then owns the timing.
pub(crate) fn take_meter() -> Option<Arc<RunMeter>> {
    METER
        .try_with(|m| {
            m.take();
            Arc::clone(m)
        })
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_job_type_is_read_from_the_envelope_alone() {
        assert_eq!(job_type(r#"{"job":"resize","payload":{"w":3}}"#), "resize");
        assert_eq!(job_type(r#"{"job":"a\"b","payload":1}"#), "untyped");
        assert_eq!(job_type(r#"{"job":"","payload":1}"#), "untyped");
        assert_eq!(job_type("count:20"), "untyped");
        assert_eq!(job_type(r#"{"payload":1,"job":"x"}"#), "untyped");
    }
}
