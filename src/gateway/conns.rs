//! Connections: the accept loop and what it does against slow, idle and too many clients,
//! after nginx and HAProxy.
//!
//! - A request's head must arrive within the header timeout (nginx `client_header_timeout`,
//!   HAProxy `timeout http-request`), counted from the accept for a connection's first
//!   request and from the first byte of each later one. A client that drips one header line
//!   every few seconds (slowloris) is closed when it runs out.
//! - A keep-alive connection with no request for the idle timeout is closed (nginx
//!   `keepalive_timeout`, HAProxy `timeout http-keep-alive`).
//! - At most `max` connections are open. A new connection past it closes the oldest ones
//!   that have no request in service (idle, or still sending their head), as nginx drains
//!   its reusable connections, so a fresh `/health` or `/metrics` still gets in while
//!   thousands of slow sockets wait. When every connection has a request in service, up to
//!   [`ROOM_PAST_CAP`] more are let in (a `/health` probe is answered in a millisecond and
//!   leaves); past that the new one is closed at once, and the loop accepts nothing for
//!   `REFUSED_PAUSE`: a closed-loop client that reconnects at once waits in the kernel's
//!   listen queue (which costs no file of ours) instead of turning refusals into a storm of
//!   tens of thousands a second. `max` is kept below the open-file
//!   limit, which is raised to its hard limit at start ([`raise_open_files`]), so the accept
//!   itself does not fail.
//! - Accept errors are counted by kind in `/metrics` and logged at most once a second.
//!
//! Per request this costs two atomic writes and a clock read; the timeouts are enforced by
//! one sweep over the connections a few times a second, not a timer per connection.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tower_service::Service as _;

use crate::metrics::{ConstGauge, Counter, Family, Gauge, Kind, Reason, Registry};

/// Default header timeout: a head takes one round trip from any client that means to send
/// it; 10 s is HAProxy's usual `timeout http-request` (nginx's default is 60 s).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default idle timeout: nginx's `keepalive_timeout` (75 s), longer than the 60 s idle
/// timeout of common load balancers, so the balancer, not offload, closes an idle
/// connection first and never sends a request into one being closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(75);
/// Default cap when the open-file limit allows more: an idle connection costs about 20 KiB
/// here (socket buffers, hyper's buffers, a task), so 65,536 stay near 1.3 GiB.
pub const DEFAULT_MAX_CONNECTIONS: usize = 65_536;
/// Connections let in past the cap when every open one has a request in service, so that a
/// health check still gets an answer from a server whose every connection is busy. Taken from
/// the files kept free below the open-file limit (at least 64, see [`ConnLimits::reserve`]).
pub const ROOM_PAST_CAP: usize = 32;
/// After closing a connection it had no room for, the accept loop waits this long before it
/// accepts again: at most 1,000 such refusals a second, however fast clients reconnect (900
/// closed-loop clients against a cap of 768 + 32 were refused 10,000 times a second without
/// it, and the churn took a seventh of the machine's work). Not longer: the listen queue is
/// first come, first served, so a health check that arrives behind E reconnecting clients
/// waits about E pauses before its turn (100 ms behind a hundred).
const REFUSED_PAUSE: Duration = Duration::from_millis(1);
/// A connection that has waited less than this (since its accept, or since its last answer)
/// is never closed to make room: a new one has not had the time to send its request (a
/// health check's whole life is about a millisecond), and a keep-alive client in a closed
/// loop sends its next request well within it. Only the stalled and the idle go.
const MIN_WAIT_TO_EVICT_MS: u64 = 50;
/// Largest request head (and read buffer) per connection: nginx's
/// `large_client_header_buffers` is 4 × 8 KiB; past it, 431.
pub const MAX_HEAD_BYTES: usize = 32 * 1024;

/// The bounds on a server's connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max: usize,
}

impl ConnLimits {
    /// Files kept free below the open-file limit for everything that is not a client
    /// connection: the store's connections, connections to compute services, files, the
    /// runtime's own descriptors.
    pub fn reserve(open_files: u64) -> usize {
        (open_files / 4).clamp(64, 4_096) as usize
    }

    /// The default cap for an open-file limit.
    pub fn default_max(open_files: u64) -> usize {
        (open_files as usize)
            .saturating_sub(ConnLimits::reserve(open_files))
            .clamp(1, DEFAULT_MAX_CONNECTIONS)
    }

    /// `max` as asked, or the default; an error when it leaves no room below the limit.
    ///
    /// # Errors
    /// A cap of zero, or one that the open-file limit cannot hold with its reserve.
    pub fn resolve(asked: Option<usize>, open_files: u64) -> anyhow::Result<usize> {
        let room = (open_files as usize).saturating_sub(ConnLimits::reserve(open_files));
        match asked {
            None => Ok(ConnLimits::default_max(open_files)),
            Some(0) => anyhow::bail!("--max-connections must be at least 1"),
            Some(n) if n > room => anyhow::bail!(
                "--max-connections {n} is more than the open-file limit ({open_files}) leaves \
                 for connections ({room}, keeping {} for the store and other files); raise \
                 the hard limit (`ulimit -Hn`, systemd's LimitNOFILE) or lower the cap",
                ConnLimits::reserve(open_files)
            ),
            Some(n) => Ok(n),
        }
    }
}

/// Raises the soft open-file limit to the hard one and returns the limit in force: offload-axum's
/// [`raise_open_files`](offload_axum::raise_open_files), the same an embedding service calls.
pub fn raise_open_files() -> u64 {
    offload_axum::raise_open_files()
}

/// Why the server closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closed {
    HeaderTimeout = 0,
    IdleTimeout = 1,
    Evicted = 2,
}

const CLOSED: [&str; 3] = ["header_timeout", "idle_timeout", "evicted"];

/// What a connection is doing when no request is in service.
const WAITING_HEAD: u8 = 0; // since the accept, or since the first byte of a later head
const IDLE: u8 = 1; // between requests
const CLOSING: u8 = 2; // told to close

/// One open connection, as the sweep and the evictions see it.
#[derive(Debug)]
struct Slot {
    /// Requests in service (handler running).
    busy: AtomicU32,
    state: AtomicU8,
    /// When the current wait began, in ms since the server's epoch.
    since_ms: AtomicU64,
    /// Why it was told to close (an index into [`CLOSED`]).
    reason: AtomicU8,
    close: Notify,
}

impl Slot {
    fn tell_close(&self, why: Closed) -> bool {
        let s = self.state.load(Relaxed);
        if s == CLOSING || self.busy.load(Relaxed) > 0 {
            return false;
        }
        if self
            .state
            .compare_exchange(s, CLOSING, Relaxed, Relaxed)
            .is_err()
        {
            return false;
        }
        self.reason.store(why as u8, Relaxed);
        self.close.notify_one();
        true
    }
}

/// Every open connection of one server, and its counters.
#[derive(Debug)]
pub struct Conns {
    limits: ConnLimits,
    open_files: u64,
    epoch: Instant,
    next_id: AtomicU64,
    slots: Mutex<HashMap<u64, Arc<Slot>>>,
    /// Connections told to close whose tasks have not ended yet.
    closing: AtomicUsize,
    /// `slots`' length, kept beside it so a scrape does not take the lock.
    open: Gauge,
    accepted: Counter,
    /// By reason; `closed` holds its series, indexed by [`Closed`].
    closed_by: Family<Reason, Counter>,
    closed: [Counter; 3],
    /// New connections closed at once: the cap was reached and every connection had a
    /// request in service.
    refused: Counter,
    /// By kind; `accept_errors` holds its series, indexed as [`ACCEPT_ERRORS`].
    accept_errors_by: Family<Kind, Counter>,
    accept_errors: [Counter; 3],
}

const ACCEPT_ERRORS: [&str; 3] = ["open_files", "memory", "other"];

impl Conns {
    pub fn new(limits: ConnLimits, open_files: u64) -> Conns {
        let closed_by = Family::default();
        let accept_errors_by = Family::default();
        Conns {
            limits,
            open_files,
            epoch: Instant::now(),
            next_id: AtomicU64::new(0),
            slots: Mutex::default(),
            closing: AtomicUsize::new(0),
            open: Gauge::default(),
            accepted: Counter::default(),
            closed: CLOSED.map(|reason| closed_by.get_or_create_owned(&Reason { reason })),
            closed_by,
            refused: Counter::default(),
            accept_errors: ACCEPT_ERRORS
                .map(|kind| accept_errors_by.get_or_create_owned(&Kind { kind })),
            accept_errors_by,
        }
    }

    pub fn limits(&self) -> ConnLimits {
        self.limits
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Open connections not yet told to close.
    fn live(&self) -> usize {
        let open = self.slots.lock().expect("conns").len();
        open.saturating_sub(self.closing.load(Relaxed))
    }

    fn add(&self) -> (u64, Arc<Slot>) {
        let id = self.next_id.fetch_add(1, Relaxed);
        let now = self.now_ms();
        let slot = Arc::new(Slot {
            busy: AtomicU32::new(0),
            state: AtomicU8::new(WAITING_HEAD),
            since_ms: AtomicU64::new(now),
            reason: AtomicU8::new(0),
            close: Notify::new(),
        });
        self.slots
            .lock()
            .expect("conns")
            .insert(id, Arc::clone(&slot));
        self.open.inc();
        self.accepted.inc();
        (id, slot)
    }

    fn remove(&self, id: u64, slot: &Slot) {
        self.slots.lock().expect("conns").remove(&id);
        self.open.dec();
        if slot.state.load(Relaxed) == CLOSING {
            self.closing.fetch_sub(1, Relaxed);
            self.closed[slot.reason.load(Relaxed) as usize].inc();
        }
    }

    /// Tells up to `n` of the connections without a request in service, oldest wait
    /// first, to close; returns how many.
    fn evict(&self, n: usize) -> usize {
        let waited_since = self.now_ms().saturating_sub(MIN_WAIT_TO_EVICT_MS);
        let mut waiting: Vec<(u64, Arc<Slot>)> = {
            let slots = self.slots.lock().expect("conns");
            slots
                .values()
                .filter(|s| {
                    s.busy.load(Relaxed) == 0
                        && s.state.load(Relaxed) != CLOSING
                        && s.since_ms.load(Relaxed) <= waited_since
                })
                .map(|s| (s.since_ms.load(Relaxed), Arc::clone(s)))
                .collect()
        };
        if waiting.len() > n {
            waiting.select_nth_unstable_by_key(n, |(since, _)| *since);
            waiting.truncate(n);
        }
        let mut told = 0;
        for (_, s) in waiting {
            if s.tell_close(Closed::Evicted) {
                self.closing.fetch_add(1, Relaxed);
                told += 1;
            }
        }
        told
    }

    /// Tells every connection past its header or idle timeout to close.
    fn sweep(&self) {
        let now = self.now_ms();
        let header = self.limits.header_timeout.as_millis() as u64;
        let idle = self.limits.idle_timeout.as_millis() as u64;
        let slots: Vec<Arc<Slot>> = self
            .slots
            .lock()
            .expect("conns")
            .values()
            .cloned()
            .collect();
        for s in slots {
            if s.busy.load(Relaxed) > 0 {
                continue;
            }
            let waited = now.saturating_sub(s.since_ms.load(Relaxed));
            let why = match s.state.load(Relaxed) {
                WAITING_HEAD if waited >= header => Closed::HeaderTimeout,
                IDLE if waited >= idle => Closed::IdleTimeout,
                _ => continue,
            };
            if s.tell_close(why) {
                self.closing.fetch_add(1, Relaxed);
            }
        }
    }

    /// How many connections a full server closes at once to make room: a batch, so the
    /// scan that finds the oldest is paid once per batch of new connections, not per one.
    fn eviction_batch(&self) -> usize {
        (self.limits.max / 64).max(1)
    }

    fn accept_failed(&self, e: &io::Error) {
        let kind = match e.raw_os_error() {
            Some(libc::EMFILE | libc::ENFILE) => 0,
            Some(libc::ENOBUFS | libc::ENOMEM) => 1,
            _ => 2,
        };
        self.accept_errors[kind].inc();
        crate::throttled!(
            "accept_failed",
            error,
            error = %e,
            open_files = self.open_files,
            "accepting a connection failed"
        );
    }

    /// Registers the connection gauges and counters (`offload_connections_*`, accept errors).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "offload_connections_open",
            "Client connections open now",
            self.open.clone(),
        );
        registry.register(
            "offload_connections_max",
            "Most client connections kept open (--max-connections)",
            ConstGauge::new(self.limits.max as u64),
        );
        registry.register(
            "offload_open_files_limit",
            "The process's open-file limit in force",
            ConstGauge::new(self.open_files),
        );
        registry.register(
            "offload_connections_accepted",
            "Client connections accepted",
            self.accepted.clone(),
        );
        registry.register(
            "offload_connections_closed",
            "Client connections the server closed, by reason (a head too slow, idle too long, \
             closed to make room for a new one)",
            self.closed_by.clone(),
        );
        registry.register(
            "offload_connections_refused",
            "New connections closed at once: past the cap and its room, with a request in service \
             on every one",
            self.refused.clone(),
        );
        registry.register(
            "offload_accept_errors",
            "Failed accepts by kind (open_files: the process or system is out of files)",
            self.accept_errors_by.clone(),
        );
    }
}

/// The socket, watched for the first byte of a new request head.
struct Watched {
    inner: TcpStream,
    slot: Arc<Slot>,
    conns: Arc<Conns>,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before && this.slot.state.load(Relaxed) == IDLE {
            // The next request's head has begun: its header timeout runs from now.
            this.slot.since_ms.store(this.conns.now_ms(), Relaxed);
            let _ = this
                .slot
                .state
                .compare_exchange(IDLE, WAITING_HEAD, Relaxed, Relaxed);
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Marks a request in service for as long as its handler runs, however it ends.
struct InService {
    slot: Arc<Slot>,
    conns: Arc<Conns>,
}

impl InService {
    fn enter(slot: &Arc<Slot>, conns: &Arc<Conns>) -> InService {
        slot.busy.fetch_add(1, Relaxed);
        InService {
            slot: Arc::clone(slot),
            conns: Arc::clone(conns),
        }
    }
}

impl Drop for InService {
    fn drop(&mut self) {
        self.slot.since_ms.store(self.conns.now_ms(), Relaxed);
        let _ = self
            .slot
            .state
            .compare_exchange(WAITING_HEAD, IDLE, Relaxed, Relaxed);
        self.slot.busy.fetch_sub(1, Relaxed);
    }
}

/// Serves one connection until it ends, is told to close, or shutdown finishes it.
async fn serve_one(
    stream: TcpStream,
    router: Router,
    conns: Arc<Conns>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (id, slot) = conns.add();
    let io = TokioIo::new(Watched {
        inner: stream,
        slot: Arc::clone(&slot),
        conns: Arc::clone(&conns),
    });
    let service = {
        let (slot, conns) = (Arc::clone(&slot), Arc::clone(&conns));
        hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let guard = InService::enter(&slot, &conns);
            let mut router = router.clone();
            async move {
                let resp = router.call(req).await;
                drop(guard);
                resp
            }
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .max_buf_size(MAX_HEAD_BYTES)
        .serve_connection(io, service);
    tokio::pin!(conn);
    let mut draining = *shutdown.borrow();
    if draining {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            _ = conn.as_mut() => break,
            () = slot.close.notified() => {
                if slot.busy.load(Relaxed) == 0 {
                    break;
                }
                conn.as_mut().graceful_shutdown();
            }
            r = shutdown.changed(), if !draining => {
                draining = true;
                if r.is_err() || slot.busy.load(Relaxed) == 0 {
                    break;
                }
                conn.as_mut().graceful_shutdown();
            }
        }
    }
    conns.remove(id, &slot);
}

/// Accepts connections on `listener` and serves `router` on each until `shutdown`
/// completes; then closes idle connections, lets requests in service finish for up to
/// `grace`, and returns.
///
/// # Errors
/// None today: accept errors are counted and logged, and the loop carries on.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    conns: Arc<Conns>,
    grace: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let sweeper = {
        let conns = Arc::clone(&conns);
        let limits = conns.limits;
        let every = (limits.header_timeout.min(limits.idle_timeout) / 10)
            .clamp(Duration::from_millis(50), Duration::from_secs(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                conns.sweep();
            }
        })
    };
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = &mut shutdown => break,
        };
        match accepted {
            Ok((stream, _)) => {
                let live = conns.live();
                if live >= conns.limits.max
                    && conns.evict(conns.eviction_batch()) == 0
                    && live >= conns.limits.max + ROOM_PAST_CAP
                {
                    conns.refused.inc();
                    drop(stream);
                    tokio::select! {
                        () = tokio::time::sleep(REFUSED_PAUSE) => {}
                        () = &mut shutdown => break,
                    }
                    continue;
                }
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve_one(
                    stream,
                    router.clone(),
                    Arc::clone(&conns),
                    stop_rx.clone(),
                ));
            }
            Err(e) => {
                conns.accept_failed(&e);
                let out_of_files = matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
                if !(out_of_files && conns.evict(conns.eviction_batch()) > 0) {
                    // Nothing to free: wait a little rather than spin on the same error.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                } else {
                    tokio::task::yield_now().await;
                }
            }
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let end = tokio::time::Instant::now() + grace;
    while !conns.slots.lock().expect("conns").is_empty() && tokio::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sweeper.abort();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_cap_leaves_a_reserve_below_the_open_file_limit() {
        assert_eq!(ConnLimits::default_max(1_024), 768);
        assert_eq!(ConnLimits::default_max(20_000), 15_904);
        assert_eq!(ConnLimits::default_max(1 << 20), DEFAULT_MAX_CONNECTIONS);
        assert_eq!(ConnLimits::default_max(100), 36);
        assert!(ConnLimits::resolve(Some(900), 1_024).is_err());
        assert_eq!(ConnLimits::resolve(Some(500), 1_024).unwrap(), 500);
        assert!(ConnLimits::resolve(Some(0), 1_024).is_err());
    }
}
