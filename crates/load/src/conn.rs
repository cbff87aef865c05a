//! One connection's task: keeps an HTTP/1 keep-alive connection (reopening it when it breaks),
//! paces requests (closed loop or its share of the open-loop schedule), times each one and
//! records it into its own [`Recorder`]. Nothing shared is locked per request.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::{Instant, Sleep, sleep_until, timeout_at};

use super::plan::{Mode, Plan, Stop};
use super::stats::{Completed, ErrorKind, Recorder};
use super::wire::{Answer, RetryAfter, Stage, WireConn, WireError, encode_requests};

/// Pause after a failed connect before the next attempt, so a dead target yields a steady
/// count of connect errors rather than a busy loop that starves the runtime.
const CONNECT_BACKOFF: Duration = Duration::from_millis(10);

/// Live totals one task publishes for the progress bar: a plain store by its single writer,
/// padded to a cache line so two connections' counters never share one.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct Live {
    pub finished: AtomicU64,
    pub failed: AtomicU64,
}

/// What every connection task of one run shares (read-only apart from `tickets` and `live`).
#[derive(Debug)]
pub struct Shared {
    pub plan: Plan,
    /// Open-loop schedule origin and warm-up start.
    pub start: Instant,
    /// End of warm-up: requests intended before it are not recorded.
    pub measure_start: Instant,
    /// Duration mode only: nothing is sent at or after it; in-flight requests are aborted.
    pub deadline: Option<Instant>,
    /// Closed loop with a count: measured requests claimed so far.
    pub tickets: AtomicU64,
    pub live: Box<[Live]>,
}

enum Outcome {
    Done(Answer, Instant),
    Failed(ErrorKind),
    /// The timeout or the run's deadline fired first, with the answer this far.
    GaveUp(Stage),
}

fn classify(e: WireError) -> ErrorKind {
    match e {
        WireError::Stale | WireError::Closed => ErrorKind::Closed,
        WireError::Protocol(v) => ErrorKind::Protocol(v),
        WireError::Io => ErrorKind::Other,
    }
}

/// Awaits `work` until `limit`, like `timeout_at`, but on a timer owned by the connection
/// that is only moved when it fires early or must fire sooner: arming a fresh timer for every
/// request costs a timer-wheel insert and removal each time, measurable at 100k req/s.
async fn within<F: Future>(
    limit: Instant,
    timer: &mut Pin<Box<Sleep>>,
    work: F,
) -> Result<F::Output, ()> {
    if timer.deadline() > limit {
        timer.as_mut().reset(limit);
    }
    tokio::pin!(work);
    loop {
        tokio::select! {
            biased;
            out = &mut work => return Ok(out),
            () = timer.as_mut() => {
                if Instant::now() >= limit {
                    return Err(());
                }
                // Armed for an earlier request that has finished: re-arm for this one.
                timer.as_mut().reset(limit);
            }
        }
    }
}

/// Runs one connection until its share of the plan is done; returns what it recorded, one
/// recorder per part of the plan's mix (one without a mix).
pub async fn drive(shared: Arc<Shared>, index: usize) -> Vec<Recorder> {
    let plan = &shared.plan;
    let mode = plan.mode;
    let connections = u64::from(mode.connections());
    // Open loop: global slot g is intended at start + g / rate; connection i owns the slots
    // i, i + C, i + 2C... Slots before `first_measured` fall in the warm-up.
    let first_measured = match mode {
        Mode::Open { rate, .. } => (plan.warmup.as_secs_f64() * rate).ceil() as u64,
        Mode::Closed { .. } => 0,
    };
    let open_loop = matches!(mode, Mode::Open { .. });
    let mut recs: Vec<Recorder> = (0..plan.parts())
        .map(|_| Recorder::new(open_loop))
        .collect();
    let mut conn: Option<WireConn> = None;
    let requests = encode_requests(plan);
    // Closed loop: this connection's own request count, for the mix's draws.
    let mut sent_here = 0u64;
    let head_only = plan.method == http::Method::HEAD;
    let mut timer = Box::pin(sleep_until(Instant::now() + plan.timeout));
    let mut slot = index as u64;
    loop {
        let (intended, measured, part) = match mode {
            Mode::Closed { stop, .. } => {
                let now = Instant::now();
                if shared.deadline.is_some_and(|d| now >= d) {
                    break;
                }
                let measured = now >= shared.measure_start;
                if let (true, Stop::Count(n)) = (measured, stop)
                    && shared.tickets.fetch_add(1, Ordering::Relaxed) >= n
                {
                    break;
                }
                sent_here += 1;
                (now, measured, plan.pick((index as u64) << 40 | sent_here))
            }
            Mode::Open { rate, stop, .. } => {
                let g = slot;
                slot += connections;
                let at = shared.start + Duration::from_secs_f64(g as f64 / rate);
                if shared.deadline.is_some_and(|d| at >= d) {
                    break;
                }
                let measured = g >= first_measured;
                if let (true, Stop::Count(n)) = (measured, stop)
                    && g - first_measured >= n
                {
                    break;
                }
                // Behind schedule (the last answer came after `at`): time it from `at`, which
                // charges the server for the wait it caused. On time: time it from when the
                // timer woke us, as the timer's ~1 ms granularity is ours, not the server's.
                let origin = if Instant::now() >= at {
                    at
                } else {
                    sleep_until(at).await;
                    Instant::now()
                };
                (origin, measured, plan.pick(g))
            }
        };
        let request = &requests[part];
        let rec = &mut recs[part];
        // Completion second in the measured phase; an answer landing a hair past the deadline
        // belongs to the last second, not to a stray extra one.
        let second = |now: Instant| {
            let s = now
                .saturating_duration_since(shared.measure_start)
                .as_secs() as usize;
            match mode.stop() {
                Stop::Duration(d) => s.min((d.as_secs_f64().ceil() as usize).max(1) - 1),
                Stop::Count(_) => s,
            }
        };
        // Timeouts run from the actual send; the deadline cuts every wait short.
        let give_up = |from: Instant| {
            let t = from + plan.timeout;
            shared.deadline.map_or(t, |d| d.min(t))
        };
        let mut retried = false;
        let outcome = loop {
            if conn.as_ref().is_none_or(|c| c.dead) {
                conn = None;
                match timeout_at(
                    give_up(Instant::now()),
                    WireConn::connect(plan.target.addr()),
                )
                .await
                {
                    Ok(Ok(c)) => {
                        rec.connections_opened += 1;
                        conn = Some(c);
                    }
                    Ok(Err(_)) => break Outcome::Failed(ErrorKind::Connect),
                    Err(_) if shared.deadline.is_some_and(|d| Instant::now() >= d) => {
                        break Outcome::GaveUp(Stage::Nothing);
                    }
                    // A connect that outlasts the request timeout is a connect error.
                    Err(_) => break Outcome::Failed(ErrorKind::Connect),
                }
            }
            let c = conn.as_mut().expect("connected above");
            let sent_at = Instant::now();
            match within(give_up(sent_at), &mut timer, c.exchange(request, head_only)).await {
                Ok(Ok(answer)) => break Outcome::Done(answer, sent_at),
                // The server closed the idle connection: reopen and send again, once.
                Ok(Err(WireError::Stale)) if !retried => retried = true,
                Ok(Err(e)) => break Outcome::Failed(classify(e)),
                Err(()) => {
                    let stage = c.stage();
                    // The connection has a request in flight: it cannot be reused.
                    conn = None;
                    break Outcome::GaveUp(stage);
                }
            }
        };
        let now = Instant::now();
        let past_deadline = shared.deadline.is_some_and(|d| now >= d);
        let connect_failed = matches!(outcome, Outcome::Failed(ErrorKind::Connect));
        let retry_after = match &outcome {
            Outcome::Done(ex, _) => ex.retry_after,
            _ => None,
        };
        if measured {
            match outcome {
                Outcome::Done(ex, sent_at) => rec.completed(
                    Completed {
                        status: ex.status,
                        latency: now - intended,
                        uncorrected: now - sent_at,
                        first_byte: ex.head_at - sent_at,
                        bytes: ex.bytes,
                    },
                    second(now),
                ),
                // At the deadline a request given up on is an abort, not a timeout.
                Outcome::GaveUp(_) if past_deadline => rec.aborted(now - intended),
                Outcome::GaveUp(stage) => rec.timed_out(now - intended, second(now), stage),
                Outcome::Failed(kind) => rec.failed(kind, second(now)),
            }
            if let Some(asked) = retry_after {
                rec.retry_asked += 1;
                rec.retry_unparseable += u64::from(asked == RetryAfter::Unparseable);
            }
            let live = &shared.live[index];
            let (sent, failed) = recs.iter().fold((0, 0), |(s, f), r| {
                (s + r.sent, f + r.timeouts + r.errors.total())
            });
            live.finished.store(sent, Ordering::Relaxed);
            live.failed.store(failed, Ordering::Relaxed);
        } else if let Outcome::Done(ex, _) = &outcome
            && (200..300).contains(&ex.status)
            && now >= shared.measure_start
            && !past_deadline
        {
            rec.carried_2xx += 1;
        }
        if past_deadline {
            // Open loop: the slots that fell due while this connection waited are requests
            // the server never got to see; count them, and what they had waited by the end.
            if let (Mode::Open { rate, .. }, Some(deadline)) = (mode, shared.deadline) {
                loop {
                    let at = shared.start + Duration::from_secs_f64(slot as f64 / rate);
                    if at >= deadline {
                        break;
                    }
                    if slot >= first_measured {
                        recs[plan.pick(slot)].unsent(deadline - at);
                    }
                    slot += connections;
                }
            }
            break;
        }
        if plan.honor_retry_after
            && let Some(RetryAfter::Wait(delay)) = retry_after
            && !delay.is_zero()
        {
            let now = Instant::now();
            let until = shared.deadline.map_or(now + delay, |d| d.min(now + delay));
            if measured {
                recs[part].retry_waited += until - now;
            }
            match mode {
                Mode::Closed { .. } => sleep_until(until).await,
                // This connection's slots that fall due during the wait are skipped, and
                // counted as such: the client chose not to send them.
                Mode::Open { rate, stop, .. } => loop {
                    let at = shared.start + Duration::from_secs_f64(slot as f64 / rate);
                    let beyond_count = matches!(stop, Stop::Count(n)
                        if slot >= first_measured && slot - first_measured >= n);
                    if at >= until || beyond_count {
                        break;
                    }
                    if slot >= first_measured {
                        recs[plan.pick(slot)].retry_skipped += 1;
                    }
                    slot += connections;
                },
            }
        }
        if connect_failed {
            let until = Instant::now() + CONNECT_BACKOFF;
            sleep_until(shared.deadline.map_or(until, |d| d.min(until))).await;
        }
    }
    recs.into_iter().map(Recorder::finish).collect()
}
