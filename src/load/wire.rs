//! A minimal HTTP/1.1 client connection for the load generator: the request is encoded once
//! per run and written as is; responses are parsed in place with `httparse` (what hyper uses)
//! and their bodies skipped by length, chunked framing or end of stream.
//!
//! Why not hyper's client connection: measured on 2 shared cores against a trivial endpoint,
//! hyper's per-request machinery (request channel, response oneshot, body channel, wakers)
//! cost about twice wrk's CPU per request, and the server loses what the generator spends.
//! A generator only needs to send one fixed request and read each answer to its end.

use std::io;
use std::time::{Duration, SystemTime};

use hyper::body::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::plan::Plan;

/// Headers parsed per response; a response with more is a protocol error for this tool.
const MAX_HEADERS: usize = 64;
/// Initial read buffer; grows for larger heads, compacts between responses.
const READ_BUF: usize = 16 * 1024;
/// A response head larger than this is refused (a broken or hostile server).
const MAX_HEAD: usize = 1024 * 1024;

/// The request as bytes on the wire: request line, `Host`, the plan's headers, a
/// `Content-Length` when there is a body (or the method usually carries one), and the body.
pub fn encode_request(plan: &Plan) -> Bytes {
    encode_request_to(plan, plan.target.path())
}

/// The requests a connection sends, one per part of the plan's mix (or the one request).
pub fn encode_requests(plan: &Plan) -> Vec<Bytes> {
    if plan.mix.is_empty() {
        return vec![encode_request(plan)];
    }
    plan.mix
        .iter()
        .map(|(path, _)| encode_request_to(plan, path))
        .collect()
}

fn encode_request_to(plan: &Plan, path: &hyper::Uri) -> Bytes {
    let mut out = Vec::with_capacity(256 + plan.body.len());
    out.extend_from_slice(plan.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.to_string().as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(plan.target.host_header().as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut has_length = false;
    for (name, value) in &plan.headers {
        has_length |= name == hyper::header::CONTENT_LENGTH;
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let wants_length =
        !plan.body.is_empty() || matches!(plan.method.as_str(), "POST" | "PUT" | "PATCH");
    if wants_length && !has_length {
        out.extend_from_slice(format!("content-length: {}\r\n", plan.body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&plan.body);
    Bytes::from(out)
}

/// How an exchange failed.
#[derive(Debug)]
pub enum WireError {
    /// The connection ended before any byte of the answer, on a connection that had already
    /// served a request: the server closed it while idle. The request may be retried.
    Stale,
    /// The connection was closed or reset mid-answer.
    Closed,
    /// The answer was not valid HTTP/1.
    Protocol,
    /// Any other I/O error.
    Io,
}

fn io_kind(e: io::Error) -> WireError {
    use io::ErrorKind as K;
    match e.kind() {
        K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof => {
            WireError::Closed
        }
        _ => WireError::Io,
    }
}

/// One answer, read to its end.
#[derive(Debug, Clone, Copy)]
pub struct Answer {
    pub status: u16,
    pub head_at: Instant,
    /// Bytes of the answer on the wire (head, body and any chunk framing).
    pub bytes: u64,
    /// The `Retry-After` of a 503 or 429 answer; not looked for on any other status.
    pub retry_after: Option<RetryAfter>,
}

/// What a `Retry-After` header asked for (RFC 9110, section 10.2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAfter {
    /// Wait this long: delta-seconds, or the time left until an HTTP-date (zero when it is
    /// already past).
    Wait(Duration),
    /// Neither delta-seconds nor an HTTP-date: counted, never waited for.
    Unparseable,
}

/// Parses a `Retry-After` value: delta-seconds (`120`) or an HTTP-date
/// (`Fri, 31 Dec 1999 23:59:59 GMT`), measured from `now`.
pub fn parse_retry_after(value: &[u8], now: SystemTime) -> RetryAfter {
    let Ok(text) = std::str::from_utf8(value) else {
        return RetryAfter::Unparseable;
    };
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        // Too many digits for a u64 is not a delay anyone means.
        return text.parse::<u64>().map_or(RetryAfter::Unparseable, |s| {
            RetryAfter::Wait(Duration::from_secs(s))
        });
    }
    match httpdate::parse_http_date(text) {
        Ok(at) => RetryAfter::Wait(at.duration_since(now).unwrap_or(Duration::ZERO)),
        Err(_) => RetryAfter::Unparseable,
    }
}

/// How the body of an answer ends.
enum Body {
    Length(u64),
    Chunked,
    UntilClose,
}

/// A keep-alive connection.
#[derive(Debug)]
pub struct WireConn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Unconsumed bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    served: u64,
    /// Must not be reused (server said close, body ran to end of stream, or an error).
    pub dead: bool,
}

impl WireConn {
    /// Connects with `TCP_NODELAY` (requests are small and latency is what is measured).
    ///
    /// # Errors
    /// The connect's I/O error.
    pub async fn connect(addr: std::net::SocketAddr) -> io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: vec![0; READ_BUF],
            start: 0,
            end: 0,
            served: 0,
            dead: false,
        })
    }

    /// Reads more bytes into the buffer; `Ok(0)` at end of stream.
    async fn fill(&mut self) -> io::Result<usize> {
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                let len = self.buf.len() * 2;
                self.buf.resize(len, 0);
            }
        }
        let end = self.end;
        let n = self.stream.read(&mut self.buf[end..]).await?;
        self.end += n;
        Ok(n)
    }

    /// Sends `request` and reads the whole answer. `head_only` for `HEAD` requests.
    ///
    /// # Errors
    /// See [`WireError`]. On any error the connection is marked dead.
    pub async fn exchange(&mut self, request: &[u8], head_only: bool) -> Result<Answer, WireError> {
        let result = self.exchange_inner(request, head_only).await;
        if result.is_err() {
            self.dead = true;
        }
        result
    }

    async fn exchange_inner(
        &mut self,
        request: &[u8],
        head_only: bool,
    ) -> Result<Answer, WireError> {
        if self.start != self.end {
            // Bytes nobody asked for: the connection is out of step.
            return Err(WireError::Protocol);
        }
        self.start = 0;
        self.end = 0;
        if let Err(e) = self.stream.write_all(request).await {
            return Err(if self.served > 0 {
                WireError::Stale
            } else {
                io_kind(e)
            });
        }
        let mut wire = 0u64;
        // The head, skipping any 1xx interim answers.
        let (status, body, close, head_at, retry_after) = loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(&self.buf[self.start..self.end]) {
                Ok(httparse::Status::Complete(len)) => {
                    let status = response.code.unwrap_or(0);
                    let mut close = response.version == Some(0);
                    let mut length = None;
                    let mut chunked = false;
                    let mut retry_after = None;
                    // Only refusals are searched for it, so a 200 costs nothing more.
                    let refused = status == 503 || status == 429;
                    for h in response.headers.iter() {
                        if h.name.eq_ignore_ascii_case("content-length") {
                            let text =
                                std::str::from_utf8(h.value).map_err(|_| WireError::Protocol)?;
                            length = Some(
                                text.trim()
                                    .parse::<u64>()
                                    .map_err(|_| WireError::Protocol)?,
                            );
                        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                            chunked = h.value.trim_ascii().eq_ignore_ascii_case(b"chunked")
                                || h.value.to_ascii_lowercase().ends_with(b"chunked");
                        } else if h.name.eq_ignore_ascii_case("connection") {
                            let v = h.value.to_ascii_lowercase();
                            if v.windows(5).any(|w| w == b"close") {
                                close = true;
                            } else if v.windows(10).any(|w| w == b"keep-alive") {
                                close = false;
                            }
                        } else if refused && h.name.eq_ignore_ascii_case("retry-after") {
                            retry_after = Some(parse_retry_after(h.value, SystemTime::now()));
                        }
                    }
                    self.start += len;
                    wire += len as u64;
                    if (100..200).contains(&status) && status != 101 {
                        continue;
                    }
                    let body = if head_only || status == 204 || status == 304 || status == 101 {
                        Body::Length(0)
                    } else if chunked {
                        Body::Chunked
                    } else if let Some(n) = length {
                        Body::Length(n)
                    } else {
                        Body::UntilClose
                    };
                    break (status, body, close, Instant::now(), retry_after);
                }
                Ok(httparse::Status::Partial) => {
                    if self.end - self.start > MAX_HEAD {
                        return Err(WireError::Protocol);
                    }
                    match self.fill().await {
                        Ok(0) if self.end == 0 && self.served > 0 => return Err(WireError::Stale),
                        Ok(0) => return Err(WireError::Closed),
                        Ok(_) => {}
                        Err(_) if self.end == 0 && self.served > 0 => return Err(WireError::Stale),
                        Err(e) => return Err(io_kind(e)),
                    }
                }
                Err(_) => return Err(WireError::Protocol),
            }
        };
        wire += match body {
            Body::Length(n) => self.skip(n).await?,
            Body::Chunked => self.skip_chunked().await?,
            Body::UntilClose => {
                self.dead = true;
                let mut n = (self.end - self.start) as u64;
                self.start = self.end;
                loop {
                    self.start = 0;
                    self.end = 0;
                    match self.fill().await.map_err(io_kind)? {
                        0 => break n,
                        k => n += k as u64,
                    }
                }
            }
        };
        self.dead |= close;
        self.served += 1;
        Ok(Answer {
            status,
            head_at,
            bytes: wire,
            retry_after,
        })
    }

    /// Consumes exactly `n` body bytes.
    async fn skip(&mut self, n: u64) -> Result<u64, WireError> {
        let mut left = n;
        loop {
            let have = (self.end - self.start) as u64;
            let take = have.min(left);
            self.start += take as usize;
            left -= take;
            if left == 0 {
                return Ok(n);
            }
            self.start = 0;
            self.end = 0;
            if self.fill().await.map_err(io_kind)? == 0 {
                return Err(WireError::Closed);
            }
        }
    }

    /// Consumes a chunked body, trailers included; returns its bytes on the wire.
    async fn skip_chunked(&mut self) -> Result<u64, WireError> {
        let mut wire = 0u64;
        loop {
            let size = loop {
                match httparse::parse_chunk_size(&self.buf[self.start..self.end]) {
                    Ok(httparse::Status::Complete((len, size))) => {
                        self.start += len;
                        wire += len as u64;
                        break size;
                    }
                    Ok(httparse::Status::Partial) => {
                        if self.fill().await.map_err(io_kind)? == 0 {
                            return Err(WireError::Closed);
                        }
                    }
                    Err(_) => return Err(WireError::Protocol),
                }
            };
            if size == 0 {
                // Trailers, then an empty line.
                loop {
                    let rest = &self.buf[self.start..self.end];
                    if let Some(pos) = rest.windows(2).position(|w| w == b"\r\n") {
                        self.start += pos + 2;
                        wire += pos as u64 + 2;
                        if pos == 0 {
                            return Ok(wire);
                        }
                    } else if self.fill().await.map_err(io_kind)? == 0 {
                        return Err(WireError::Closed);
                    }
                }
            }
            wire += self.skip(size + 2).await?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncBufReadExt;

    /// Serves `answers` in order, one per request read, on one connection.
    async fn canned(answers: Vec<&'static [u8]>) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut stream = tokio::io::BufReader::new(stream);
            for answer in answers {
                let mut line = String::new();
                loop {
                    line.clear();
                    if stream.read_line(&mut line).await.unwrap() == 0 {
                        return;
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                // Written in two pieces so the parser meets a partial head and body.
                let (a, b) = answer.split_at(answer.len() / 2);
                stream.get_mut().write_all(a).await.unwrap();
                stream.get_mut().flush().await.unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                stream.get_mut().write_all(b).await.unwrap();
            }
        });
        addr
    }

    #[tokio::test]
    async fn reads_length_chunked_interim_and_bodyless_answers() {
        let answers: Vec<&'static [u8]> = vec![
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ntransfer-encoding: chunked\r\n\r\n\
              3;ext=1\r\nabc\r\n4\r\ndefg\r\n0\r\nx-trailer: 1\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\n\r\n",
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 2\r\nconnection: close\r\n\r\nno",
        ];
        let expected: Vec<(u16, usize)> = answers.iter().map(|a| (0, a.len())).collect();
        let addr = canned(answers).await;
        let mut conn = WireConn::connect(addr).await.unwrap();
        let request = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n";
        let mut got = Vec::new();
        for _ in 0..4 {
            let answer = conn.exchange(request, false).await.unwrap();
            got.push((answer.status, answer.bytes as usize));
        }
        let statuses: Vec<u16> = got.iter().map(|g| g.0).collect();
        assert_eq!(statuses, [200, 201, 204, 503]);
        let bytes: Vec<usize> = got.iter().map(|g| g.1).collect();
        assert_eq!(
            bytes,
            expected.iter().map(|e| e.1).collect::<Vec<_>>(),
            "every byte counted"
        );
        assert!(conn.dead, "connection: close is honoured");
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777); // 06 Nov 1994 08:49:37
        let wait = |s: u64| RetryAfter::Wait(Duration::from_secs(s));
        assert_eq!(parse_retry_after(b"1", now), wait(1));
        assert_eq!(parse_retry_after(b" 120 ", now), wait(120));
        assert_eq!(
            parse_retry_after(b"Sun, 06 Nov 1994 08:49:47 GMT", now),
            wait(10)
        );
        assert_eq!(
            parse_retry_after(b"Sun, 06 Nov 1994 08:49:27 GMT", now),
            wait(0),
            "a date in the past: no wait"
        );
        for bad in [
            &b""[..],
            b"-1",
            b"1.5",
            b"soon",
            b"99999999999999999999999",
            b"\xff",
        ] {
            assert_eq!(
                parse_retry_after(bad, now),
                RetryAfter::Unparseable,
                "{bad:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_retry_after_is_read_on_refusals_only() {
        let answers: Vec<&'static [u8]> = vec![
            b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 2\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: later\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nretry-after: 2\r\ncontent-length: 0\r\n\r\n",
        ];
        let addr = canned(answers).await;
        let mut conn = WireConn::connect(addr).await.unwrap();
        let request = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n";
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(conn.exchange(request, false).await.unwrap().retry_after);
        }
        assert_eq!(
            got,
            [
                Some(RetryAfter::Wait(Duration::from_secs(2))),
                Some(RetryAfter::Unparseable),
                None
            ]
        );
    }

    #[tokio::test]
    async fn a_truncated_answer_is_closed_and_garbage_is_protocol() {
        let addr = canned(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 50\r\n\r\nshort"]).await;
        let mut conn = WireConn::connect(addr).await.unwrap();
        let err = conn
            .exchange(b"GET / HTTP/1.1\r\n\r\n", false)
            .await
            .unwrap_err();
        assert!(matches!(err, WireError::Closed), "{err:?}");
        assert!(conn.dead);

        let addr = canned(vec![b"SMTP ready\r\n\r\n"]).await;
        let mut conn = WireConn::connect(addr).await.unwrap();
        let err = conn
            .exchange(b"GET / HTTP/1.1\r\n\r\n", false)
            .await
            .unwrap_err();
        assert!(matches!(err, WireError::Protocol), "{err:?}");
    }
}
