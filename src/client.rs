//! A small HTTP/1.1 client for one request at a time: the bench's readiness checks and job
//! reads, and the integration tests. One-shot requests on a fresh connection ([`request`],
//! [`get`]) and a keep-alive [`Conn`] for requests in a row, each under a timeout, with a
//! typed [`Error`]. Not for load: the load generator (`load`) has its own engine.

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{HeaderMap, Method};
use tokio::net::TcpStream;

/// A request: method, path (with its query), extra headers and body. `Host` is set from the
/// address it goes to.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Request {
    /// `method path` with no headers and no body.
    pub fn new(method: Method, path: impl Into<String>) -> Request {
        Request {
            method,
            path: path.into(),
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    /// `GET path`.
    pub fn get(path: impl Into<String>) -> Request {
        Request::new(Method::GET, path)
    }

    /// This request with one more header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Request {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// This request with `body`.
    pub fn body(mut self, body: impl Into<Bytes>) -> Request {
        self.body = body.into();
        self
    }

    /// The hyper request to `addr`.
    fn to_hyper(&self, addr: SocketAddr) -> Result<hyper::Request<Full<Bytes>>, Error> {
        let mut req = hyper::Request::builder()
            .method(self.method.clone())
            .uri(self.path.as_str())
            .header(hyper::header::HOST, addr.to_string());
        for (k, v) in &self.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        req.body(Full::new(self.body.clone()))
            .map_err(|e| Error::BadRequest(e.to_string()))
    }
}

/// An answer, read whole.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request cannot be written (a bad method, path or header).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// No TCP connection to the server.
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The connection failed before, during or after the request: closed, reset, or an
    /// answer that is not HTTP/1.1.
    #[error("{what} on {addr}: {source}")]
    Exchange {
        what: String,
        addr: SocketAddr,
        source: hyper::Error,
    },
    /// No whole answer within the timeout.
    #[error("{what} on {addr}: no answer within {timeout:?}")]
    Timeout {
        what: String,
        addr: SocketAddr,
        timeout: Duration,
    },
}

/// Sends `req` to `addr` on a fresh connection and reads the whole answer, all within
/// `timeout` (connecting included).
///
/// # Errors
/// A bad request, no connection, a failed exchange, or no whole answer in time.
pub async fn request(
    addr: SocketAddr,
    req: &Request,
    timeout: Duration,
) -> Result<Response, Error> {
    let exchange = async {
        let mut conn = Conn::connect(addr).await?;
        conn.exchange(req).await
    };
    within(timeout, addr, || what(req), exchange).await
}

/// `fut` if it ends within `timeout`, else [`Error::Timeout`] for `what` (the exchange or the
/// connection it was) on `addr`.
async fn within<T>(
    timeout: Duration,
    addr: SocketAddr,
    what: impl FnOnce() -> String,
    fut: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| Error::Timeout {
            what: what(),
            addr,
            timeout,
        })?
}

/// `GET path` on a fresh connection, within `timeout`.
///
/// # Errors
/// As [`request`].
pub async fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<Response, Error> {
    request(addr, &Request::get(path), timeout).await
}

/// One keep-alive connection, for requests in a row without a new connection each.
#[derive(Debug)]
pub struct Conn {
    addr: SocketAddr,
    send: SendRequest<Full<Bytes>>,
}

impl Conn {
    /// Connects to `addr` within `timeout`.
    ///
    /// # Errors
    /// No connection, or no HTTP/1.1 handshake, in time.
    pub async fn open(addr: SocketAddr, timeout: Duration) -> Result<Conn, Error> {
        within(timeout, addr, || "connecting".into(), Conn::connect(addr)).await
    }

    /// Sends `req` on this connection and reads the whole answer within `timeout`.
    ///
    /// # Errors
    /// A bad request, a failed exchange (the connection is then of no further use), or no
    /// whole answer in time.
    pub async fn send(&mut self, req: &Request, timeout: Duration) -> Result<Response, Error> {
        let addr = self.addr;
        within(timeout, addr, || what(req), self.exchange(req)).await
    }

    /// The server this connection goes to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The connection and its HTTP/1.1 handshake; the connection is driven by a task of its
    /// own until either side closes it.
    async fn connect(addr: SocketAddr) -> Result<Conn, Error> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|source| Error::Connect { addr, source })?;
        let (send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|source| Error::Exchange {
                    what: "handshake".into(),
                    addr,
                    source,
                })?;
        tokio::spawn(conn);
        Ok(Conn { addr, send })
    }

    async fn exchange(&mut self, req: &Request) -> Result<Response, Error> {
        let addr = self.addr;
        let failed = |source| Error::Exchange {
            what: what(req),
            addr,
            source,
        };
        let hyper_req = req.to_hyper(addr)?;
        self.send.ready().await.map_err(failed)?;
        let resp = self.send.send_request(hyper_req).await.map_err(failed)?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.map_err(failed)?.to_bytes();
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

/// A request in a few words, for errors: `GET /jobs?latency=100`, cut at 80 characters.
fn what(req: &Request) -> String {
    let path: String = req.path.chars().take(80).collect();
    format!("{} {path}", req.method)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serves `answers` raw HTTP responses, one per request, on one connection.
    async fn server(answers: Vec<&'static str>) -> SocketAddr {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            for answer in answers {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = s.read(&mut buf).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                s.write_all(answer.as_bytes()).await.unwrap();
            }
            // Hold the connection open: a request past the answers waits.
            tokio::time::sleep(Duration::from_secs(60)).await;
        });
        addr
    }

    #[tokio::test]
    async fn a_keep_alive_connection_reads_answers_in_a_row() {
        let addr = server(vec![
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-a: 1\r\n\r\nhi",
            "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n",
        ])
        .await;
        let t = Duration::from_secs(5);
        let mut conn = Conn::open(addr, t).await.unwrap();
        let r = conn.send(&Request::get("/a"), t).await.unwrap();
        assert_eq!((r.status, &r.body[..]), (200, &b"hi"[..]));
        assert_eq!(r.headers["x-a"], "1");
        let r = conn.send(&Request::get("/b"), t).await.unwrap();
        assert_eq!((r.status, r.body.len()), (503, 0));
        let err = conn
            .send(&Request::get("/c"), Duration::from_millis(50))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            format!("GET /c on {addr}: no answer within 50ms")
        );
    }

    #[tokio::test]
    async fn a_closed_port_is_a_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = get(addr, "/health", Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Connect { .. }), "{err}");
    }

    #[tokio::test]
    async fn a_bad_header_is_refused_before_sending() {
        let addr = server(vec![]).await;
        let req = Request::get("/").header("bad header", "x");
        let err = request(addr, &req, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::BadRequest(_)), "{err}");
    }
}
