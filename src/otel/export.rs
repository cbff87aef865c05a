//! Sends finished spans to the collector: a thread of its own gathers them (up to
//! [`MAX_BATCH`], or what came within [`EVERY`]) and POSTs each batch to the endpoint as one
//! OTLP/HTTP protobuf request. The spans wait in a bounded channel ([`MAX_WAITING`]); when the
//! collector is slow or gone, new spans are dropped and counted, never held without bound, and
//! the serving threads never wait for it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use super::Finished;
use crate::metrics::{Counter, Family, Outcome, Registry};

/// Most spans sent in one request.
const MAX_BATCH: usize = 512;
/// Longest a finished span waits before it is sent.
const EVERY: Duration = Duration::from_secs(1);
/// Most spans waiting to be sent; past it new ones are dropped.
const MAX_WAITING: usize = 8_192;
/// Longest a connect, a write or a read of one export may take.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Spans by what became of them: `exported` or `dropped` (the channel was full, or the
/// collector refused or did not answer).
static SPANS: LazyLock<Family<Outcome, Counter>> = LazyLock::new(Family::default);

fn count(outcome: &'static str, n: usize) {
    SPANS.get_or_create(&Outcome { outcome }).inc_by(n as u64);
}

/// Registers `offload_otlp_spans_total{outcome}`.
pub fn register(registry: &mut Registry) {
    registry.register(
        "offload_otlp_spans",
        "Spans for the OTLP collector: exported, or dropped (its queue full, or the collector refused or did not answer)",
        SPANS.clone(),
    );
}

/// Where spans go: an `http://HOST:PORT` URL, to which `/v1/traces` (OTLP/HTTP's path) is
/// added when it names no path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    host: String,
    port: u16,
    path: String,
}

impl Endpoint {
    /// Parses `--otlp-endpoint`.
    ///
    /// # Errors
    /// A message for a URL that is not `http://HOST[:PORT][/PATH]` (https is not spoken:
    /// run the collector beside the process, as its agent).
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            format!("expected http://HOST:PORT (https is not supported: send to a collector beside the process), not {url:?}")
        })?;
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
                h,
                p.parse::<u16>()
                    .map_err(|_| format!("bad port {p:?} in {url:?}"))?,
            ),
            _ => (authority, 80),
        };
        if host.is_empty() {
            return Err(format!("no host in {url:?}"));
        }
        let path = match path {
            "" | "/" => "/v1/traces".to_owned(),
            p => p.to_owned(),
        };
        Ok(Endpoint {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
            path,
        })
    }

    fn addr(&self) -> std::io::Result<SocketAddr> {
        (self.host.as_str(), self.port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| std::io::Error::other(format!("{} resolves to nothing", self.host)))
    }
}

enum Msg {
    Span(Finished),
    /// Send what is waiting now, then say so.
    Flush(SyncSender<()>),
}

/// The layer's end of the channel.
#[derive(Debug)]
pub(super) struct Sender {
    tx: SyncSender<Msg>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Msg::Span(_) => "Span",
            Msg::Flush(_) => "Flush",
        })
    }
}

/// The running exporter's channel, for [`flush`].
static RUNNING: Mutex<Option<SyncSender<Msg>>> = Mutex::new(None);

impl Sender {
    pub(super) fn send(&self, span: Finished) {
        match self.tx.try_send(Msg::Span(span)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => count("dropped", 1),
        }
    }
}

/// Starts the exporting thread.
pub(super) fn start(endpoint: Endpoint, service: String) -> std::io::Result<Sender> {
    let (tx, rx) = mpsc::sync_channel(MAX_WAITING);
    std::thread::Builder::new()
        .name("offload-otlp".into())
        .spawn(move || run(&endpoint, &service, &rx))?;
    *RUNNING.lock().expect("not poisoned") = Some(tx.clone());
    Ok(Sender { tx })
}

/// Sends every span finished so far, waiting at most `within`: before a process exits.
pub fn flush(within: Duration) {
    let Some(tx) = RUNNING.lock().expect("not poisoned").clone() else {
        return;
    };
    let (done_tx, done) = mpsc::sync_channel(1);
    if tx.send_timeout_compat(Msg::Flush(done_tx), within) {
        let _ = done.recv_timeout(within);
    }
}

/// `SyncSender::send` with a bound on the wait (std has none): tries for `within`.
trait SendTimeout {
    fn send_timeout_compat(&self, msg: Msg, within: Duration) -> bool;
}

impl SendTimeout for SyncSender<Msg> {
    fn send_timeout_compat(&self, mut msg: Msg, within: Duration) -> bool {
        let end = Instant::now() + within;
        loop {
            match self.try_send(msg) {
                Ok(()) => return true,
                Err(TrySendError::Disconnected(_)) => return false,
                Err(TrySendError::Full(m)) if Instant::now() < end => {
                    msg = m;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(TrySendError::Full(_)) => return false,
            }
        }
    }
}

fn run(endpoint: &Endpoint, service: &str, rx: &Receiver<Msg>) {
    let mut batch: Vec<Finished> = Vec::with_capacity(MAX_BATCH);
    let mut since = Instant::now();
    loop {
        let wait = EVERY.saturating_sub(since.elapsed());
        let flushed = match rx.recv_timeout(wait) {
            Ok(Msg::Span(s)) => {
                batch.push(s);
                if batch.len() < MAX_BATCH {
                    continue;
                }
                None
            }
            Ok(Msg::Flush(done)) => Some(done),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        if !batch.is_empty() {
            let n = batch.len();
            match post(endpoint, &super::proto::export_request(service, &batch)) {
                Ok(()) => count("exported", n),
                Err(e) => {
                    count("dropped", n);
                    crate::throttled!("otlp_export_failed", warn, error = %e, spans = n, "could not export spans");
                }
            }
            batch.clear();
        }
        since = Instant::now();
        if let Some(done) = flushed {
            let _ = done.send(());
        }
    }
}

/// POSTs one request body, and reads the answer: a 2xx is success.
fn post(endpoint: &Endpoint, body: &[u8]) -> std::io::Result<()> {
    let mut conn = TcpStream::connect_timeout(&endpoint.addr()?, IO_TIMEOUT)?;
    conn.set_write_timeout(Some(IO_TIMEOUT))?;
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        endpoint.path,
        endpoint.host,
        endpoint.port,
        body.len()
    );
    conn.write_all(head.as_bytes())?;
    conn.write_all(body)?;
    let mut reader = BufReader::new(conn);
    let mut status = String::new();
    reader.read_line(&mut status)?;
    let code: u16 = status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {status:?}")))?;
    // Drain the rest (bounded), so the collector sees its answer read.
    let _ = reader.take(64 * 1024).read_to_end(&mut Vec::new());
    if (200..300).contains(&code) {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "the collector answered {}",
            status.trim()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_get_the_traces_path_unless_they_name_one() {
        let e = Endpoint::parse("http://127.0.0.1:4318").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.path.as_str()),
            ("127.0.0.1", 4318, "/v1/traces")
        );
        let e = Endpoint::parse("http://collector/custom/path").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.path.as_str()),
            ("collector", 80, "/custom/path")
        );
        let e = Endpoint::parse("http://[::1]:4318/").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 4318));
        for bad in ["https://x:4318", "x:4318", "http://:4318", "http://x:port"] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }
}
