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

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::plan::Plan;

/// Headers parsed per response; a response with more is refused (`too_many_headers`). Real
/// answers carry a dozen or two; 64 is hyper's default for a server too.
const MAX_HEADERS: usize = 64;
/// Initial read buffer: one read takes a typical head and many small answers whole.
const READ_BUF: usize = 16 * 1024;
/// The most a connection's read buffer grows to, whatever the server sends: a response head
/// must fit in it, and so must a chunk-size line and each trailer line (bodies are skipped
/// through it, never kept). This is the memory bound of a connection's reading.
///
/// Why 64 KiB: a load target's answers have a few hundred bytes of head; nginx as a proxy
/// refuses an upstream head over 4 or 8 KiB by default ("upstream sent too big header"),
/// Node refuses heads over 16 KiB, and browsers allow up to 256 KiB. 64 KiB is eight times
/// nginx's default, and at the most connections a run may have (10,000) still 640 MiB in
/// the worst case (1 MiB, as before, would be 10 GiB).
pub const MAX_HEAD: usize = 64 * 1024;
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

fn encode_request_to(plan: &Plan, path: &http::Uri) -> Bytes {
    let mut out = Vec::with_capacity(256 + plan.body.len());
    out.extend_from_slice(plan.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.to_string().as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(plan.target.host_header().as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut has_length = false;
    for (name, value) in &plan.headers {
        has_length |= name == http::header::CONTENT_LENGTH;
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// The connection ended before any byte of the answer, on a connection that had already
    /// served a request: the server closed it while idle. The request may be retried.
    Stale,
    /// The connection was closed or reset mid-answer.
    Closed,
    /// The answer was not valid HTTP/1.1, in the way named.
    Protocol(Violation),
    /// Any other I/O error.
    Io,
}

/// How an answer broke HTTP/1.1. Each is counted under its own name (the `snake_case` of the
/// variant) in the report, so a user can tell a broken server's fault from a slow one's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// The head (status line and headers) did not end within [`MAX_HEAD`] bytes.
    HeadTooLarge,
    /// More than [`MAX_HEADERS`] header lines.
    TooManyHeaders,
    /// The status line or a header line is not HTTP/1.x syntax (garbage, another protocol's
    /// greeting, a header name with a space...).
    BadHead,
    /// A `Content-Length` that is not a decimal number, overflows 64 bits, or disagrees with
    /// another one in the same head.
    BadLength,
    /// Broken chunked framing: a chunk-size line that is not hex, overflows 64 bits, does not
    /// end in CRLF or runs past [`MAX_HEAD`]; chunk data not followed by CRLF; a trailer line
    /// past [`MAX_HEAD`].
    BadChunk,
    /// Bytes past the end of the answer, before the next request was sent: a body longer than
    /// its `Content-Length` or its chunks said, or an answer nobody asked for.
    ExtraBytes,
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

/// How far the current answer has got: what a request given up on was still waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Not one byte of the answer.
    Nothing,
    /// Part of the head (or only interim 1xx answers).
    Head,
    /// The head; the body has not ended (or, if it runs to the end of the stream, the stream).
    Body,
}

/// Where the parser is in the current answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Head,
    /// Body bytes still to come.
    Length(u64),
    /// The body runs to the end of the stream.
    UntilClose,
    ChunkSize,
    /// Bytes of the current chunk still to come.
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    Trailers,
    Done,
}

/// What [`Parser::parse`] got to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// It needs more bytes: read into [`Parser::space`].
    More,
    /// The final head has just been parsed (the time to stamp the first byte); call again.
    Head,
    /// The answer is complete.
    Done(Parsed),
}

/// A complete answer, as parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parsed {
    pub status: u16,
    /// Bytes of the answer on the wire (heads, body and any chunk framing).
    pub wire: u64,
    /// Bytes of the body (without chunk framing).
    pub body: u64,
    /// The connection must not be reused (`connection: close`, HTTP/1.0, a 101).
    pub close: bool,
    /// The `Retry-After` of a 503 or 429 answer; not looked for on any other status.
    pub retry_after: Option<RetryAfter>,
}

/// The response parser of one connection, free of I/O so any byte sequence, split any way,
/// can be fed to it in tests: bytes are read into [`Parser::space`], committed with
/// [`Parser::filled`], and [`Parser::parse`] goes as far as they allow. Heads are parsed in
/// place with `httparse`; bodies are counted and dropped, never kept, so the buffer never
/// grows past [`MAX_HEAD`] whatever the server sends.
#[derive(Debug)]
pub struct Parser {
    buf: Vec<u8>,
    /// Unconsumed bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    /// `buf[start..scanned]` holds no line end: where the search for one resumes, so a head
    /// or a line that arrives a byte at a time is scanned once, not once per read.
    scanned: usize,
    phase: Phase,
    head_only: bool,
    status: u16,
    wire: u64,
    body: u64,
    close: bool,
    retry_after: Option<RetryAfter>,
}

impl Default for Parser {
    fn default() -> Self {
        Self {
            buf: vec![0; READ_BUF],
            start: 0,
            end: 0,
            scanned: 0,
            phase: Phase::Done,
            head_only: false,
            status: 0,
            wire: 0,
            body: 0,
            close: false,
            retry_after: None,
        }
    }
}

impl Parser {
    /// Starts on the answer to a request just sent; `head_only` for `HEAD` requests. Bytes
    /// left from before (there should be none: see [`Violation::ExtraBytes`]) are dropped.
    pub fn begin(&mut self, head_only: bool) {
        self.start = 0;
        self.end = 0;
        self.scanned = 0;
        self.phase = Phase::Head;
        self.head_only = head_only;
        self.status = 0;
        self.wire = 0;
        self.body = 0;
        self.close = false;
        self.retry_after = None;
    }

    /// True when bytes are buffered that no answer has used.
    pub fn has_unread(&self) -> bool {
        self.start != self.end
    }

    /// The buffer's size: at most [`MAX_HEAD`].
    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// True while not one byte of the current answer has arrived.
    pub fn nothing_yet(&self) -> bool {
        self.phase == Phase::Head && self.wire == 0 && self.end == self.start
    }

    /// What the current answer is still waiting for.
    pub fn stage(&self) -> Stage {
        match self.phase {
            _ if self.nothing_yet() => Stage::Nothing,
            Phase::Head => Stage::Head,
            _ => Stage::Body,
        }
    }

    /// Free space to read into, never empty after [`Parser::parse`] returned [`Step::More`]:
    /// moves the unconsumed bytes to the front, or grows the buffer (a partial head or line
    /// under [`MAX_HEAD`] fills it; `parse` refuses one that reaches the bound).
    pub fn space(&mut self) -> &mut [u8] {
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.scanned -= self.start;
                self.start = 0;
            } else {
                let len = (self.buf.len() * 2).clamp(READ_BUF, MAX_HEAD);
                self.buf.resize(len, 0);
            }
        }
        &mut self.buf[self.end..]
    }

    /// `n` bytes were read into the front of [`Parser::space`].
    pub fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// Uses `n` bytes of the answer; an emptied buffer restarts at its front.
    fn consume(&mut self, n: usize) {
        self.start += n;
        self.wire += n as u64;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        self.scanned = self.start;
    }

    /// The position of the next `\n` in the unconsumed bytes, scanning only bytes not
    /// scanned before.
    fn line_end(&mut self) -> Option<usize> {
        match self.buf[self.scanned..self.end]
            .iter()
            .position(|&b| b == b'\n')
        {
            Some(i) => Some(self.scanned + i),
            None => {
                self.scanned = self.end;
                None
            }
        }
    }

    /// More bytes are needed to finish a head or a line: refused as `too_large` once it
    /// fills [`MAX_HEAD`].
    fn more(&self, too_large: Violation) -> Result<Step, WireError> {
        if self.end - self.start >= MAX_HEAD {
            return Err(WireError::Protocol(too_large));
        }
        Ok(Step::More)
    }

    /// Parses as far as the buffered bytes allow.
    ///
    /// # Errors
    /// [`WireError::Protocol`] with what was wrong; the connection is then out of step.
    pub fn parse(&mut self) -> Result<Step, WireError> {
        loop {
            let avail = self.end - self.start;
            match self.phase {
                Phase::Head => {
                    // httparse would only say Partial again until another line has ended.
                    if self.line_end().is_none() {
                        return self.more(Violation::HeadTooLarge);
                    }
                    if self.head()? {
                        return Ok(Step::Head);
                    }
                    if self.phase == Phase::Head && self.scanned == self.end {
                        return self.more(Violation::HeadTooLarge);
                    }
                }
                Phase::Length(left) | Phase::ChunkData(left) => {
                    let take = (avail as u64).min(left);
                    self.consume(take as usize);
                    self.body += take;
                    let left = left - take;
                    self.phase = match (self.phase, left) {
                        (Phase::Length(_), 0) => Phase::Done,
                        (Phase::Length(_), _) => Phase::Length(left),
                        (_, 0) => Phase::ChunkEnd,
                        _ => Phase::ChunkData(left),
                    };
                    if left > 0 {
                        return Ok(Step::More);
                    }
                }
                Phase::UntilClose => {
                    self.consume(avail);
                    self.body += avail as u64;
                    return Ok(Step::More);
                }
                Phase::ChunkSize => {
                    let Some(nl) = self.line_end() else {
                        return self.more(Violation::BadChunk);
                    };
                    let line = &self.buf[self.start..=nl];
                    match httparse::parse_chunk_size(line) {
                        Ok(httparse::Status::Complete((len, size))) if len == line.len() => {
                            self.consume(len);
                            self.phase = if size == 0 {
                                Phase::Trailers
                            } else {
                                Phase::ChunkData(size)
                            };
                        }
                        // Not hex, over 16 hex digits, or a line ending in a bare LF.
                        _ => return Err(WireError::Protocol(Violation::BadChunk)),
                    }
                }
                Phase::ChunkEnd => match self.buf[self.start..self.end] {
                    [] | [b'\r'] => return Ok(Step::More),
                    [b'\r', b'\n', ..] => {
                        self.consume(2);
                        self.phase = Phase::ChunkSize;
                    }
                    [b'\n', ..] => {
                        self.consume(1);
                        self.phase = Phase::ChunkSize;
                    }
                    _ => return Err(WireError::Protocol(Violation::BadChunk)),
                },
                Phase::Trailers => {
                    // Skipped line by line, so only a partial line is ever buffered.
                    let Some(nl) = self.line_end() else {
                        return self.more(Violation::BadChunk);
                    };
                    let empty = matches!(&self.buf[self.start..nl], [] | [b'\r']);
                    self.consume(nl + 1 - self.start);
                    if empty {
                        self.phase = Phase::Done;
                    }
                }
                Phase::Done => {
                    // No request is pipelined, so nothing may follow an answer.
                    if avail > 0 {
                        return Err(WireError::Protocol(Violation::ExtraBytes));
                    }
                    return Ok(Step::Done(Parsed {
                        status: self.status,
                        wire: self.wire,
                        body: self.body,
                        close: self.close,
                        retry_after: self.retry_after,
                    }));
                }
            }
        }
    }

    /// Tries to parse a head from the buffered bytes: `Ok(true)` once the final (non-1xx)
    /// head is in, `Ok(false)` after an interim 1xx head or when more bytes are needed.
    fn head(&mut self) -> Result<bool, WireError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        let len = match response.parse(&self.buf[self.start..self.end]) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => {
                self.scanned = self.end;
                return Ok(false);
            }
            Err(httparse::Error::TooManyHeaders) => {
                return Err(WireError::Protocol(Violation::TooManyHeaders));
            }
            Err(_) => return Err(WireError::Protocol(Violation::BadHead)),
        };
        let status = response.code.unwrap_or(0);
        let mut close = response.version == Some(0) || status == 101;
        let mut length = None;
        let mut chunked = false;
        let mut retry_after = None;
        // Only refusals are searched for it, so a 200 costs nothing more.
        let refused = status == 503 || status == 429;
        for h in response.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                let n = parse_content_length(h.value)
                    .ok_or(WireError::Protocol(Violation::BadLength))?;
                if length.is_some_and(|l| l != n) {
                    return Err(WireError::Protocol(Violation::BadLength));
                }
                length = Some(n);
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
        self.consume(len);
        if (100..200).contains(&status) && status != 101 {
            return Ok(false);
        }
        self.status = status;
        self.close = close;
        self.retry_after = retry_after;
        self.phase = if self.head_only || status == 204 || status == 304 || status == 101 {
            Phase::Length(0)
        } else if chunked {
            Phase::ChunkSize
        } else if let Some(n) = length {
            Phase::Length(n)
        } else {
            Phase::UntilClose
        };
        Ok(true)
    }

    /// The stream ended: the answer is complete if its body runs to the end of the stream.
    ///
    /// # Errors
    /// [`WireError::Closed`] if the answer was not complete.
    pub fn eof(&mut self) -> Result<Parsed, WireError> {
        if self.phase != Phase::UntilClose {
            return Err(WireError::Closed);
        }
        self.phase = Phase::Done;
        self.close = true;
        match self.parse()? {
            Step::Done(parsed) => Ok(parsed),
            _ => Err(WireError::Closed),
        }
    }
}

/// A `Content-Length` value: decimal digits, or a list of equal ones (`5, 5`, which a
/// proxy may make of two equal headers; RFC 9110, section 8.6). `None` for anything else,
/// including a value over `u64::MAX`.
fn parse_content_length(value: &[u8]) -> Option<u64> {
    let mut length = None;
    for part in value.split(|&b| b == b',') {
        let digits = part.trim_ascii();
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = std::str::from_utf8(digits).ok()?.parse::<u64>().ok()?;
        if length.is_some_and(|l| l != n) {
            return None;
        }
        length = Some(n);
    }
    length
}

/// A keep-alive connection.
#[derive(Debug)]
pub struct WireConn {
    stream: TcpStream,
    parser: Parser,
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
            parser: Parser::default(),
            served: 0,
            dead: false,
        })
    }

    /// What the answer in progress is waiting for: for a request given up on, how far its
    /// answer had got.
    pub fn stage(&self) -> Stage {
        self.parser.stage()
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
        if self.parser.has_unread() {
            // Bytes nobody asked for: the connection is out of step.
            return Err(WireError::Protocol(Violation::ExtraBytes));
        }
        self.parser.begin(head_only);
        if let Err(e) = self.stream.write_all(request).await {
            return Err(if self.served > 0 {
                WireError::Stale
            } else {
                io_kind(e)
            });
        }
        let mut head_at = None;
        let parsed = loop {
            match self.parser.parse()? {
                Step::More => {}
                Step::Head => {
                    head_at = Some(Instant::now());
                    continue;
                }
                Step::Done(parsed) => break parsed,
            }
            let idle_close = self.parser.nothing_yet() && self.served > 0;
            match self.stream.read(self.parser.space()).await {
                Ok(0) if idle_close => return Err(WireError::Stale),
                Ok(0) => break self.parser.eof()?,
                Ok(n) => self.parser.filled(n),
                Err(_) if idle_close => return Err(WireError::Stale),
                Err(e) => return Err(io_kind(e)),
            }
        };
        self.dead |= parsed.close;
        self.served += 1;
        Ok(Answer {
            status: parsed.status,
            head_at: head_at.unwrap_or_else(Instant::now),
            bytes: parsed.wire,
            retry_after: parsed.retry_after,
        })
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
        assert_eq!(err, WireError::Protocol(Violation::BadHead));
    }

    /// Feeds `pieces` to a fresh parser as reads of those sizes would arrive, each cut to
    /// the space the parser offers, checking the buffer's bound after every read; then the
    /// end of the stream. Returns the outcome and how many bytes were never read.
    fn feed(pieces: &[&[u8]], head_only: bool) -> (Result<Parsed, WireError>, usize) {
        let mut p = Parser::default();
        p.begin(head_only);
        let mut rest = pieces.iter().copied().filter(|x| !x.is_empty());
        let mut piece: &[u8] = &[];
        let unread = |piece: &[u8], rest: &mut dyn Iterator<Item = &[u8]>| {
            piece.len() + rest.map(<[u8]>::len).sum::<usize>()
        };
        loop {
            match p.parse() {
                Ok(Step::More) => {}
                Ok(Step::Head) => continue,
                Ok(Step::Done(parsed)) => return (Ok(parsed), unread(piece, &mut rest)),
                Err(e) => return (Err(e), unread(piece, &mut rest)),
            }
            if piece.is_empty() {
                match rest.next() {
                    Some(next) => piece = next,
                    None => return (p.eof(), 0),
                }
            }
            let space = p.space();
            assert!(!space.is_empty(), "no room to read into");
            let n = space.len().min(piece.len());
            space[..n].copy_from_slice(&piece[..n]);
            p.filled(n);
            piece = &piece[n..];
            assert!(p.capacity() <= MAX_HEAD, "buffer grew to {}", p.capacity());
        }
    }

    /// `bytes` cut at `cuts` (positions taken modulo its length).
    fn split<'a>(bytes: &'a [u8], cuts: &[prop::sample::Index]) -> Vec<&'a [u8]> {
        let mut at: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
        at.push(0);
        at.push(bytes.len());
        at.sort_unstable();
        at.windows(2).map(|w| &bytes[w[0]..w[1]]).collect()
    }

    fn whole(bytes: &[u8]) -> Result<Parsed, WireError> {
        feed(&[bytes], false).0
    }

    fn violation(bytes: &[u8]) -> Option<Violation> {
        match whole(bytes) {
            Err(WireError::Protocol(v)) => Some(v),
            _ => None,
        }
    }

    /// One byte per read: the slowest a server can send.
    fn bytewise(bytes: &[u8]) -> Result<Parsed, WireError> {
        let pieces: Vec<&[u8]> = bytes.chunks(1).collect();
        feed(&pieces, false).0
    }

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\n";

    fn cat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    #[test]
    fn each_broken_answer_is_named() {
        let many_headers = cat(&[OK, &b"x-h: 1\r\n".repeat(MAX_HEADERS + 1)]);
        let huge_header = cat(&[OK, b"x-big: ", &vec![b'a'; MAX_HEAD], b"\r\n\r\n"]);
        let cases: Vec<(&str, Vec<u8>, Violation)> = vec![
            (
                "not HTTP",
                b"SMTP ready\r\n\r\n".to_vec(),
                Violation::BadHead,
            ),
            (
                "bad header name",
                cat(&[OK, b"a b: c\r\n\r\n"]),
                Violation::BadHead,
            ),
            // The head has not even ended: refused as soon as the 65th header starts.
            ("65 headers", many_headers, Violation::TooManyHeaders),
            ("a 64 KiB header", huge_header, Violation::HeadTooLarge),
            (
                "length not a number",
                cat(&[OK, b"content-length: 1e3\r\n\r\n"]),
                Violation::BadLength,
            ),
            (
                "length with a sign",
                cat(&[OK, b"content-length: +5\r\n\r\n"]),
                Violation::BadLength,
            ),
            (
                "length over 64 bits",
                cat(&[OK, b"content-length: 18446744073709551616\r\n\r\n"]),
                Violation::BadLength,
            ),
            (
                "two lengths",
                cat(&[OK, b"content-length: 5\r\ncontent-length: 6\r\n\r\nhello"]),
                Violation::BadLength,
            ),
            (
                "chunk size not hex",
                cat(&[OK, b"transfer-encoding: chunked\r\n\r\nzz\r\n"]),
                Violation::BadChunk,
            ),
            (
                "chunk size over 64 bits",
                cat(&[
                    OK,
                    b"transfer-encoding: chunked\r\n\r\n1ffffffffffffffff\r\n",
                ]),
                Violation::BadChunk,
            ),
            (
                "chunk not ended by CRLF",
                cat(&[
                    OK,
                    b"transfer-encoding: chunked\r\n\r\n3\r\nabcd\r\n0\r\n\r\n",
                ]),
                Violation::BadChunk,
            ),
            (
                "chunk line past the bound",
                cat(&[
                    OK,
                    b"transfer-encoding: chunked\r\n\r\n1;",
                    &vec![b'e'; MAX_HEAD],
                ]),
                Violation::BadChunk,
            ),
            (
                "trailer line past the bound",
                cat(&[
                    OK,
                    b"transfer-encoding: chunked\r\n\r\n0\r\nx: ",
                    &vec![b't'; MAX_HEAD],
                ]),
                Violation::BadChunk,
            ),
            (
                "body longer than declared",
                cat(&[OK, b"content-length: 2\r\n\r\nhello"]),
                Violation::ExtraBytes,
            ),
            (
                "bytes after the last chunk",
                cat(&[OK, b"transfer-encoding: chunked\r\n\r\n0\r\n\r\nHTTP/1.1"]),
                Violation::ExtraBytes,
            ),
            (
                "a body on an answer that has none",
                b"HTTP/1.1 204 No Content\r\ncontent-length: 3\r\n\r\nabc".to_vec(),
                Violation::ExtraBytes,
            ),
        ];
        for (what, bytes, want) in &cases {
            assert_eq!(violation(bytes), Some(*want), "{what}");
            // The same verdict however slowly the bytes come (extra bytes that arrive after
            // the answer are read with the next one, so that case is only seen whole).
            if *want != Violation::ExtraBytes {
                assert_eq!(
                    bytewise(bytes),
                    Err(WireError::Protocol(*want)),
                    "{what}, bytewise"
                );
            }
        }
    }

    #[test]
    fn awkward_but_valid_answers_are_read() {
        let ok = |bytes: &[u8]| whole(bytes).map(|p| (p.status, p.body));
        assert_eq!(
            ok(&cat(&[OK, b"content-length: 5, 5\r\n\r\nhello"])),
            Ok((200, 5))
        );
        assert_eq!(
            ok(&cat(&[OK, b"Content-Length:  3 \r\n\r\nabc"])),
            Ok((200, 3))
        );
        // Bare LF line ends, chunk extensions, trailers, upper-case hex.
        assert_eq!(
            ok(&cat(&[
                OK,
                b"transfer-encoding: chunked\n\nA;x=1\r\n0123456789\n0\r\nt: 1\n\r\n"
            ])),
            Ok((200, 10))
        );
        // The largest chunk size httparse reads (16 hex digits, u64::MAX): no overflow, just
        // a body that never ends, here cut by the end of the stream.
        assert_eq!(
            whole(&cat(&[
                OK,
                b"transfer-encoding: chunked\r\n\r\nffffffffffffffff\r\nabc"
            ])),
            Err(WireError::Closed)
        );
        assert_eq!(
            ok(&cat(&[OK, b"connection: close\r\n\r\nuntil the end"])),
            Ok((200, 13))
        );
    }

    #[test]
    fn memory_stays_bounded_and_stages_are_told() {
        // A body that never ends: a huge length, or chunks forever. Skipped as it comes.
        let mut p = Parser::default();
        p.begin(false);
        assert_eq!(p.stage(), Stage::Nothing);
        let head = cat(&[OK, b"content-length: 18446744073709551615\r\n\r\n"]);
        let (a, b) = head.split_at(5);
        for (piece, stage) in [(a, Stage::Head), (b, Stage::Body)] {
            p.space()[..piece.len()].copy_from_slice(piece);
            p.filled(piece.len());
            while p.parse() == Ok(Step::Head) {}
            assert_eq!(p.stage(), stage);
        }
        for _ in 0..1000 {
            let space = p.space();
            let n = space.len();
            space.fill(b'x');
            p.filled(n);
            assert_eq!(p.parse(), Ok(Step::More));
        }
        assert_eq!(p.capacity(), READ_BUF, "a body never grows the buffer");
        assert_eq!(p.stage(), Stage::Body);
        assert_eq!(p.eof(), Err(WireError::Closed));

        let forever = cat(&[
            OK,
            b"transfer-encoding: chunked\r\n\r\n",
            &b"5\r\nhello\r\n".repeat(50_000),
        ]);
        let pieces: Vec<&[u8]> = forever.chunks(1000).collect();
        assert_eq!(feed(&pieces, false).0, Err(WireError::Closed));

        // A head sent a byte at a time until it passes the bound: scanned once, refused at
        // exactly the bound.
        let endless = cat(&[OK, b"x-big: ", &vec![b'a'; 2 * MAX_HEAD]]);
        let mut p = Parser::default();
        p.begin(false);
        let mut fed = 0;
        let err = loop {
            match p.parse() {
                Ok(Step::More) => {}
                other => break other,
            }
            p.space()[0] = endless[fed];
            p.filled(1);
            fed += 1;
        };
        assert_eq!(err, Err(WireError::Protocol(Violation::HeadTooLarge)));
        assert_eq!((fed, p.capacity()), (MAX_HEAD, MAX_HEAD));
    }

    /// How a generated answer frames its body.
    #[derive(Debug, Clone)]
    enum Framing {
        Length,
        /// Chunk boundaries, upper-case hex, an extension on each size line, a trailer.
        Chunked(Vec<prop::sample::Index>, bool, bool, bool),
        UntilClose,
    }

    /// A well-formed answer, with the status and body length it must be read as.
    fn answer() -> impl Strategy<Value = (Vec<u8>, u16, usize)> {
        let status =
            (200u16..600).prop_filter("204 and 304 carry no body", |s| *s != 204 && *s != 304);
        let framing = prop_oneof![
            Just(Framing::Length),
            (
                vec(any::<prop::sample::Index>(), 0..6),
                any::<bool>(),
                any::<bool>(),
                any::<bool>()
            )
                .prop_map(|(cuts, upper, ext, trailer)| Framing::Chunked(
                    cuts, upper, ext, trailer
                )),
            Just(Framing::UntilClose),
        ];
        (
            status,
            any::<bool>(),
            vec(("x-[a-zA-Z0-9-]{1,15}", "[!-~]([ -~]{0,30}[!-~])?"), 0..8),
            vec(any::<u8>(), 0..600),
            framing,
        )
            .prop_map(|(status, interim, headers, body, framing)| {
                let mut out = Vec::new();
                if interim {
                    out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                }
                out.extend_from_slice(format!("HTTP/1.1 {status} Whatever\r\n").as_bytes());
                for (name, value) in &headers {
                    out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
                }
                match &framing {
                    Framing::Length => {
                        out.extend_from_slice(
                            format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes(),
                        );
                        out.extend_from_slice(&body);
                    }
                    Framing::UntilClose => {
                        out.extend_from_slice(b"connection: close\r\n\r\n");
                        out.extend_from_slice(&body);
                    }
                    Framing::Chunked(cuts, upper, ext, trailer) => {
                        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                        for chunk in split(&body, cuts).into_iter().filter(|c| !c.is_empty()) {
                            let size = if *upper {
                                format!("{:X}", chunk.len())
                            } else {
                                format!("{:x}", chunk.len())
                            };
                            out.extend_from_slice(size.as_bytes());
                            if *ext {
                                out.extend_from_slice(b";name=\"v\"");
                            }
                            out.extend_from_slice(b"\r\n");
                            out.extend_from_slice(chunk);
                            out.extend_from_slice(b"\r\n");
                        }
                        out.extend_from_slice(b"0\r\n");
                        if *trailer {
                            out.extend_from_slice(b"x-trailer: done\r\n");
                        }
                        out.extend_from_slice(b"\r\n");
                    }
                }
                (out, status, body.len())
            })
    }

    use proptest::collection::vec;
    use proptest::prelude::*;

    proptest! {
        /// Any bytes, read in any pieces: an answer or an error, never a panic, and the
        /// buffer within its bound (checked by `feed` after every read).
        #[test]
        fn any_bytes_end_in_an_answer_or_an_error(
            bytes in vec(any::<u8>(), 0..2048),
            cuts in vec(any::<prop::sample::Index>(), 0..16),
            head_only in any::<bool>(),
        ) {
            let _ = feed(&split(&bytes, &cuts), head_only);
        }

        /// Answers that are nearly right (a few bytes changed, some cut off), which get past
        /// the status line into the framing code far more often than random bytes do.
        #[test]
        fn damaged_answers_end_in_an_answer_or_an_error(
            (mut bytes, _, _) in answer(),
            edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
            keep in any::<prop::sample::Index>(),
            cuts in vec(any::<prop::sample::Index>(), 0..16),
        ) {
            for (at, byte) in &edits {
                let i = at.index(bytes.len());
                bytes[i] = *byte;
            }
            bytes.truncate(keep.index(bytes.len() + 1));
            let _ = feed(&split(&bytes, &cuts), false);
        }

        /// Well-formed answers, read in any pieces: the right status, body length and bytes
        /// on the wire, with nothing left over.
        #[test]
        fn well_formed_answers_are_read_right(
            (bytes, status, body) in answer(),
            cuts in vec(any::<prop::sample::Index>(), 0..16),
        ) {
            let (parsed, unread) = feed(&split(&bytes, &cuts), false);
            let parsed = parsed.map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
            prop_assert_eq!(parsed.status, status);
            prop_assert_eq!(parsed.body, body as u64);
            prop_assert_eq!(parsed.wire, bytes.len() as u64);
            prop_assert_eq!(unread, 0);
        }

        /// Heads, chunk-size lines and trailer lines of any length up to three times the
        /// bound, in any pieces: read if they fit, refused by name if not, and the buffer
        /// never past the bound.
        #[test]
        fn long_lines_are_bounded(
            len in 0..3 * MAX_HEAD,
            place in 0..3u8,
            cuts in vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let filler = vec![b'a'; len];
            let chunked: &[u8] = b"transfer-encoding: chunked\r\n\r\n";
            let (bytes, too_long) = match place {
                0 => (cat(&[OK, b"x: ", &filler, b"\r\ncontent-length: 0\r\n\r\n"]), Violation::HeadTooLarge),
                1 => (cat(&[OK, chunked, b"1;", &filler, b"\r\nx\r\n0\r\n\r\n"]), Violation::BadChunk),
                _ => (cat(&[OK, chunked, b"0\r\nx: ", &filler, b"\r\n\r\n"]), Violation::BadChunk),
            };
            match feed(&split(&bytes, &cuts), false).0 {
                Ok(parsed) => prop_assert_eq!(parsed.status, 200),
                Err(e) => {
                    prop_assert_eq!(e, WireError::Protocol(too_long));
                    prop_assert!(len > MAX_HEAD - 100, "refused at {} bytes", len);
                }
            }
        }
    }
}
