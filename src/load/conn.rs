//! One connection's task: keeps an HTTP/1 keep-alive connection (reopening it when it breaks),
//! paces requests (closed loop or its share of the open-loop schedule), times each one and
//! records it into its own [`Recorder`]. Nothing shared is locked per request.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper::header::{CONNECTION, HOST};
use hyper::{Request, http::response::Parts};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep, sleep_until, timeout_at};

use super::plan::{Mode, Plan, Stop};
use super::stats::{Completed, ErrorKind, Recorder};

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

struct Conn {
    sender: SendRequest<Full<Bytes>>,
    driver: Pin<Box<Connection<TokioIo<TcpStream>, Full<Bytes>>>>,
    /// The driver finished or the server said `Connection: close`: do not reuse.
    dead: bool,
}

enum Failure {
    /// The connection was found closed before the request went out: reopen and retry.
    NotSent,
    Kind(ErrorKind),
}

enum Outcome {
    Done(Exchange, Instant),
    Failed(ErrorKind),
    /// The timeout or the run's deadline fired first.
    GaveUp,
}

struct Exchange {
    status: u16,
    head_at: Instant,
    bytes: u64,
}

fn classify(e: &hyper::Error) -> ErrorKind {
    if e.is_parse() || e.is_parse_status() || e.is_parse_too_large() {
        ErrorKind::Protocol
    } else if e.is_incomplete_message() || e.is_closed() || e.is_canceled() {
        ErrorKind::Closed
    } else {
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            if let Some(io) = s.downcast_ref::<std::io::Error>() {
                use std::io::ErrorKind as K;
                return match io.kind() {
                    K::ConnectionReset
                    | K::ConnectionAborted
                    | K::BrokenPipe
                    | K::UnexpectedEof => ErrorKind::Closed,
                    _ => ErrorKind::Other,
                };
            }
            source = s.source();
        }
        ErrorKind::Other
    }
}

async fn connect(plan: &Plan) -> std::io::Result<Conn> {
    let stream = TcpStream::connect(plan.target.addr()).await?;
    // Requests are small and latency is what we measure: never wait for Nagle.
    stream.set_nodelay(true)?;
    let (sender, driver) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    Ok(Conn {
        sender,
        driver: Box::pin(driver),
        dead: false,
    })
}

/// Bytes of the response head as HTTP/1.1 puts them on the wire (status line, headers, blank
/// line): hyper hands us the parsed head, and this reconstruction is exact for usual servers.
fn head_bytes(parts: &Parts) -> u64 {
    let reason = parts.status.canonical_reason().unwrap_or("").len();
    let mut n = 9 + 3 + 1 + reason + 2 + 2;
    for (name, value) in &parts.headers {
        n += name.as_str().len() + 2 + value.len() + 2;
    }
    n as u64
}

fn build_request(plan: &Plan) -> Request<Full<Bytes>> {
    let mut req = Request::new(Full::new(plan.body.clone()));
    *req.method_mut() = plan.method.clone();
    *req.uri_mut() = plan.target.path().clone();
    let headers = req.headers_mut();
    headers.insert(HOST, plan.target.host_header().clone());
    for (name, value) in &plan.headers {
        headers.append(name, value.clone());
    }
    req
}

/// Sends one request and reads the whole response, driving the connection in this same task
/// (no hand-off to a separate connection task per request).
async fn exchange(conn: &mut Conn, req: Request<Full<Bytes>>) -> Result<Exchange, Failure> {
    let Conn {
        sender,
        driver,
        dead,
    } = conn;
    if sender.is_closed() {
        return Err(Failure::NotSent);
    }
    let talk = async {
        sender.ready().await.map_err(|_| Failure::NotSent)?;
        let kind = |e: hyper::Error| Failure::Kind(classify(&e));
        let resp = sender.send_request(req).await.map_err(kind)?;
        let head_at = Instant::now();
        let (parts, mut body) = resp.into_parts();
        let close = parts
            .headers
            .get(CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        let mut bytes = head_bytes(&parts);
        while let Some(frame) = body.frame().await {
            if let Some(data) = frame.map_err(kind)?.data_ref() {
                bytes += data.len() as u64;
            }
        }
        Ok((
            Exchange {
                status: parts.status.as_u16(),
                head_at,
                bytes,
            },
            close,
        ))
    };
    tokio::pin!(talk);
    let outcome = tokio::select! {
        biased;
        r = &mut talk => r,
        ended = driver.as_mut() => {
            // The connection ended; whatever it delivered before ending is still readable.
            *dead = true;
            match (talk.await, ended) {
                (Err(Failure::Kind(_)), Err(e)) => Err(Failure::Kind(classify(&e))),
                (r, _) => r,
            }
        }
    };
    match outcome {
        Ok((ex, close)) => {
            *dead |= close;
            Ok(ex)
        }
        Err(f) => {
            *dead = true;
            Err(f)
        }
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

/// Runs one connection until its share of the plan is done; returns what it recorded.
pub async fn drive(shared: Arc<Shared>, index: usize) -> Recorder {
    let plan = &shared.plan;
    let mode = plan.mode;
    let connections = u64::from(mode.connections());
    // Open loop: global slot g is intended at start + g / rate; connection i owns the slots
    // i, i + C, i + 2C... Slots before `first_measured` fall in the warm-up.
    let first_measured = match mode {
        Mode::Open { rate, .. } => (plan.warmup.as_secs_f64() * rate).ceil() as u64,
        Mode::Closed { .. } => 0,
    };
    let mut rec = Recorder::new(matches!(mode, Mode::Open { .. }));
    let mut conn: Option<Conn> = None;
    let mut timer = Box::pin(sleep_until(Instant::now() + plan.timeout));
    let mut slot = index as u64;
    loop {
        let (intended, measured) = match mode {
            Mode::Closed { stop, .. } => {
                let now = Instant::now();
                if shared.deadline.is_some_and(|d| now >= d) {
                    break;
                }
                let measured = now >= shared.measure_start;
                if let (true, Stop::Count(n)) = (measured, stop) {
                    if shared.tickets.fetch_add(1, Ordering::Relaxed) >= n {
                        break;
                    }
                }
                (now, measured)
            }
            Mode::Open { rate, stop, .. } => {
                let g = slot;
                slot += connections;
                let at = shared.start + Duration::from_secs_f64(g as f64 / rate);
                if shared.deadline.is_some_and(|d| at >= d) {
                    break;
                }
                let measured = g >= first_measured;
                if let (true, Stop::Count(n)) = (measured, stop) {
                    if g - first_measured >= n {
                        break;
                    }
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
                (origin, measured)
            }
        };
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
                match timeout_at(give_up(Instant::now()), connect(plan)).await {
                    Ok(Ok(c)) => {
                        rec.connections_opened += 1;
                        conn = Some(c);
                    }
                    Ok(Err(_)) => break Outcome::Failed(ErrorKind::Connect),
                    Err(_) if shared.deadline.is_some_and(|d| Instant::now() >= d) => {
                        break Outcome::GaveUp;
                    }
                    // A connect that outlasts the request timeout is a connect error.
                    Err(_) => break Outcome::Failed(ErrorKind::Connect),
                }
            }
            let c = conn.as_mut().expect("connected above");
            let sent_at = Instant::now();
            match within(
                give_up(sent_at),
                &mut timer,
                exchange(c, build_request(plan)),
            )
            .await
            {
                Ok(Ok(ex)) => break Outcome::Done(ex, sent_at),
                Ok(Err(Failure::NotSent)) if !retried => retried = true,
                Ok(Err(Failure::NotSent)) => break Outcome::Failed(ErrorKind::Closed),
                Ok(Err(Failure::Kind(kind))) => break Outcome::Failed(kind),
                Err(_) => {
                    // The connection has a request in flight: it cannot be reused.
                    conn = None;
                    break Outcome::GaveUp;
                }
            }
        };
        let now = Instant::now();
        let past_deadline = shared.deadline.is_some_and(|d| now >= d);
        let connect_failed = matches!(outcome, Outcome::Failed(ErrorKind::Connect));
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
                Outcome::GaveUp if past_deadline => rec.aborted(),
                Outcome::GaveUp => rec.timed_out(now - intended, second(now)),
                Outcome::Failed(kind) => rec.failed(kind, second(now)),
            }
            let live = &shared.live[index];
            live.finished.store(rec.sent, Ordering::Relaxed);
            live.failed
                .store(rec.timeouts + rec.errors.total(), Ordering::Relaxed);
        }
        if past_deadline {
            break;
        }
        if connect_failed {
            let until = Instant::now() + CONNECT_BACKOFF;
            sleep_until(shared.deadline.map_or(until, |d| d.min(until))).await;
        }
    }
    rec.finish()
}
