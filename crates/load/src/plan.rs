//! A validated load plan: the target (resolved, loopback-checked), the request, and the mode
//! (closed or open loop) with its stop condition. Nothing runs until a `Plan` exists.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Uri};

/// Why a plan was refused. Each message names the flag or value at fault.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The URL did not parse or is not an `http://host[:port]/path` URL.
    #[error("malformed URL {url:?}: {reason}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The host name did not resolve.
    #[error("cannot resolve {host:?}: {reason}")]
    Resolve {
        /// The host name, without brackets.
        host: String,
        /// The resolver's error, or `no address`.
        reason: String,
    },
    /// The target is not a loopback address and `--allow-remote` was not given.
    #[error(
        "refusing to load {host:?} ({addr}): not a loopback address; pass --allow-remote if you \
         mean to load another machine"
    )]
    Remote {
        /// The host as given in the URL, without brackets.
        host: String,
        /// The first address it resolved to that is not loopback.
        addr: IpAddr,
    },
    /// A header was not `name: value`, or the name or value is not valid HTTP.
    #[error("bad header {0:?}: expected 'name: value'")]
    BadHeader(String),
    /// The method is not a valid HTTP method token.
    #[error("bad method {0:?}")]
    BadMethod(String),
    /// Zero connections, a non-positive rate, zero duration or count, zero timeout.
    #[error("{0}")]
    Invalid(String),
}

/// Where the load goes: the URL as given, the one address every connection dials, and the
/// `Host` header and origin-form path each request carries.
#[derive(Debug, Clone)]
pub struct Target {
    url: Uri,
    addr: SocketAddr,
    host: HeaderValue,
    path: Uri,
}

impl Target {
    /// Parses `url` (`http://` only), resolves its host once, and checks it is loopback
    /// (127.0.0.0/8, ::1 or a name that resolves only to those) unless `allow_remote`.
    ///
    /// Resolution uses the system resolver and blocks; call it before the load starts.
    ///
    /// # Errors
    /// [`PlanError::BadUrl`], [`PlanError::Resolve`], [`PlanError::Remote`].
    pub fn parse(url: &str, allow_remote: bool) -> Result<Self, PlanError> {
        let bad = |reason: &str| PlanError::BadUrl {
            url: url.to_string(),
            reason: reason.into(),
        };
        let uri: Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => return Err(bad("https is not supported; use http://")),
            Some(_) => return Err(bad("the scheme must be http://")),
            None => return Err(bad("expected http://host[:port]/path")),
        }
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        let host = authority.host();
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = authority.port_u16().unwrap_or(80);
        // `[::1]` arrives with its brackets; the resolver wants them off.
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = if bare.eq_ignore_ascii_case("localhost") {
            // Accepted by name: `localhost` is loopback by definition (RFC 6761), whatever
            // /etc/hosts says; IPv4 first, as most servers bind 127.0.0.1.
            vec![SocketAddr::from(([127, 0, 0, 1], port))]
        } else if let Ok(ip) = bare.parse::<IpAddr>() {
            vec![SocketAddr::new(ip, port)]
        } else {
            (bare, port)
                .to_socket_addrs()
                .map_err(|e| PlanError::Resolve {
                    host: bare.into(),
                    reason: e.to_string(),
                })?
                .collect()
        };
        let first = *addrs.first().ok_or_else(|| PlanError::Resolve {
            host: bare.into(),
            reason: "no address".into(),
        })?;
        if !allow_remote {
            // Every address must be loopback: a name that resolves to both is not safe to load.
            if let Some(remote) = addrs.iter().find(|a| !is_loopback(a.ip())) {
                return Err(PlanError::Remote {
                    host: bare.into(),
                    addr: remote.ip(),
                });
            }
        }
        let path = uri
            .path_and_query()
            .map(|p| p.as_str())
            .filter(|p| !p.is_empty())
            .unwrap_or("/")
            .parse::<Uri>()
            .map_err(|e| bad(&e.to_string()))?;
        let host_value =
            HeaderValue::from_str(authority.as_str()).map_err(|e| bad(&e.to_string()))?;
        Ok(Self {
            url: uri,
            addr: first,
            host: host_value,
            path,
        })
    }

    /// The URL as given.
    pub fn url(&self) -> &Uri {
        &self.url
    }

    /// The socket address every connection dials.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub(crate) fn host_header(&self) -> &HeaderValue {
        &self.host
    }

    pub(crate) fn path(&self) -> &Uri {
        &self.path
    }
}

/// A 64-bit mix of `x` (splitmix64's finaliser): uniform enough for weighted draws.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// True for 127.0.0.0/8, ::1 and IPv4-mapped 127.x.
fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// When a run's measured phase ends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stop {
    /// After this long. Requests still in flight then are counted as aborted at the deadline.
    Duration(Duration),
    /// After exactly this many requests have been issued and have finished (any outcome).
    Count(u64),
}

/// How requests are paced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Each connection sends its next request as soon as the last one finished (autocannon,
    /// wrk). Latency is measured from the actual send.
    Closed {
        /// Number of connections, each with one request in flight at a time.
        connections: u32,
        /// When the measured phase ends.
        stop: Stop,
    },
    /// `rate` requests per second in total, on a fixed schedule spread evenly over the
    /// connections (wrk2). A request whose connection is still busy at its *scheduled* send
    /// time is timed from that time, so a stalled server cannot hide behind requests the
    /// generator could not send; one sent on time is timed from the timer's wake-up.
    Open {
        /// Target rate: requests per second in total, over all connections.
        rate: f64,
        /// Number of connections the schedule is spread over, each with at most one request
        /// in flight.
        connections: u32,
        /// When the measured phase ends.
        stop: Stop,
    },
}

impl Mode {
    /// Number of connections (each has at most one request in flight).
    pub fn connections(&self) -> u32 {
        match *self {
            Mode::Closed { connections, .. } | Mode::Open { connections, .. } => connections,
        }
    }

    /// The stop condition.
    pub fn stop(&self) -> Stop {
        match *self {
            Mode::Closed { stop, .. } | Mode::Open { stop, .. } => stop,
        }
    }

    /// The open-loop rate, if any.
    pub fn rate(&self) -> Option<f64> {
        match *self {
            Mode::Open { rate, .. } => Some(rate),
            Mode::Closed { .. } => None,
        }
    }
}

/// Default per-request timeout: autocannon's 10 s, so runs compare.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Upper bound on connections: each is a task with its own histograms and a socket; past this
/// the generator itself is the bottleneck on any machine this tool targets.
pub const MAX_CONNECTIONS: u32 = 10_000;

/// Default load threads: one per core, as wrk's usual `-t`.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A validated plan. Build with [`Plan::new`] and the `with_*` methods, or from CLI flags
/// with `Plan::try_from(&LoadArgs)`.
#[derive(Debug, Clone)]
pub struct Plan {
    pub(crate) target: Target,
    pub(crate) method: Method,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) mode: Mode,
    pub(crate) warmup: Duration,
    pub(crate) timeout: Duration,
    pub(crate) threads: usize,
    /// A mix: each request is one of these paths, drawn by weight (empty: the target's path).
    pub(crate) mix: Vec<(Uri, u32)>,
    /// Seed of the draws, so a mixed run sends the same sequence each time.
    pub(crate) seed: u64,
    /// After a 503 or 429 with `Retry-After`, the connection waits that long before it sends
    /// again (see [`Plan::with_honor_retry_after`]).
    pub(crate) honor_retry_after: bool,
    /// Run the load's threads as [`offload_pool::priority::Urgent::DEFAULT`].
    pub(crate) urgent: bool,
}

impl Plan {
    /// A `GET` plan with no warm-up and the default timeout.
    ///
    /// # Errors
    /// [`PlanError::Invalid`] for zero or too many connections, a rate that is not a positive
    /// finite number, a zero duration or a zero count.
    pub fn new(target: Target, mode: Mode) -> Result<Self, PlanError> {
        let connections = mode.connections();
        if connections == 0 {
            return Err(PlanError::Invalid("connections must be at least 1".into()));
        }
        if connections > MAX_CONNECTIONS {
            return Err(PlanError::Invalid(format!(
                "connections must be at most {MAX_CONNECTIONS}"
            )));
        }
        if let Some(rate) = mode.rate()
            && !(rate.is_finite() && rate > 0.0)
        {
            return Err(PlanError::Invalid(format!(
                "rate must be above 0, got {rate}"
            )));
        }
        match mode.stop() {
            Stop::Duration(d) if d.is_zero() => {
                return Err(PlanError::Invalid("duration must be more than 0".into()));
            }
            Stop::Count(0) => return Err(PlanError::Invalid("amount must be at least 1".into())),
            _ => {}
        }
        Ok(Self {
            target,
            method: Method::GET,
            headers: HeaderMap::new(),
            body: Bytes::new(),
            mode,
            warmup: Duration::ZERO,
            timeout: DEFAULT_TIMEOUT,
            threads: default_threads(),
            mix: Vec::new(),
            seed: 0,
            honor_retry_after: false,
            urgent: false,
        })
    }

    /// Sends a mix instead of the target's path: each request draws one of `paths`
    /// (origin-form, like `/heavy?n=5`) with probability proportional to its weight, from a
    /// sequence fixed by `seed`. Each path is recorded apart as well ([`super::run_mix`]).
    ///
    /// # Errors
    /// [`PlanError::Invalid`] for no paths, a zero total weight, or a path that is not an
    /// origin-form URI.
    pub fn with_mix(mut self, paths: &[(&str, u32)], seed: u64) -> Result<Self, PlanError> {
        if paths.is_empty() || paths.iter().all(|(_, w)| *w == 0) {
            return Err(PlanError::Invalid(
                "a mix needs a path of weight above 0".into(),
            ));
        }
        self.mix = paths
            .iter()
            .map(|(path, w)| {
                let uri: Uri = path
                    .parse()
                    .ok()
                    .filter(|u: &Uri| u.scheme().is_none() && path.starts_with('/'))
                    .ok_or_else(|| PlanError::Invalid(format!("bad mix path {path:?}")))?;
                Ok((uri, *w))
            })
            .collect::<Result<_, PlanError>>()?;
        self.seed = seed;
        Ok(self)
    }

    /// The parts of the mix: 1 without one.
    pub fn parts(&self) -> usize {
        self.mix.len().max(1)
    }

    /// Which part of the mix request `i` of a connection (or slot `i` of an open loop) sends:
    /// a hash of the seed and `i` against the cumulative weights, the same on every run.
    pub(crate) fn pick(&self, i: u64) -> usize {
        if self.mix.len() <= 1 {
            return 0;
        }
        let total: u64 = self.mix.iter().map(|(_, w)| u64::from(*w)).sum();
        let mut r = splitmix64(self.seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15)) % total;
        for (k, (_, w)) in self.mix.iter().enumerate() {
            let w = u64::from(*w);
            if r < w {
                return k;
            }
            r -= w;
        }
        self.mix.len() - 1
    }

    /// Sets the HTTP method.
    ///
    /// # Errors
    /// [`PlanError::BadMethod`] if `method` is not a valid token.
    pub fn with_method(mut self, method: &str) -> Result<Self, PlanError> {
        self.method = Method::from_bytes(method.to_ascii_uppercase().as_bytes())
            .map_err(|_| PlanError::BadMethod(method.into()))?;
        Ok(self)
    }

    /// Adds a header from `name: value`.
    ///
    /// # Errors
    /// [`PlanError::BadHeader`] if it is not `name: value` or either part is invalid.
    pub fn with_header(mut self, line: &str) -> Result<Self, PlanError> {
        let bad = || PlanError::BadHeader(line.into());
        let (name, value) = line.split_once(':').ok_or_else(bad)?;
        let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| bad())?;
        let value = HeaderValue::from_str(value.trim()).map_err(|_| bad())?;
        self.headers.append(name, value);
        Ok(self)
    }

    /// Sets the request body (sent with a `Content-Length`).
    pub fn with_body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// Requests in the first `warmup` are sent but not counted.
    pub fn with_warmup(mut self, warmup: Duration) -> Self {
        self.warmup = warmup;
        self
    }

    /// A request with no complete answer after `timeout` counts as a timeout.
    ///
    /// # Errors
    /// [`PlanError::Invalid`] if `timeout` is zero.
    pub fn with_timeout(mut self, timeout: Duration) -> Result<Self, PlanError> {
        if timeout.is_zero() {
            return Err(PlanError::Invalid("timeout must be more than 0".into()));
        }
        self.timeout = timeout;
        Ok(self)
    }

    /// Honours `Retry-After`: when an answer is 503 or 429 with a `Retry-After` header
    /// (delta-seconds or an HTTP-date), its connection sends nothing for that long, capped at
    /// the end of a time-bound run, then resumes. In an open loop the connection's requests
    /// that fall due meanwhile are not sent and are counted as skipped. Without it the header
    /// is still counted, but the next request goes out at once (autocannon's behaviour).
    pub fn with_honor_retry_after(mut self, honor: bool) -> Self {
        self.honor_retry_after = honor;
        self
    }

    /// Whether connections wait as `Retry-After` asks.
    pub fn honors_retry_after(&self) -> bool {
        self.honor_retry_after
    }

    /// Runs the load's threads on a short time slice and, where the process may, at nice -10:
    /// for a light probe beside a saturating load on the same machine, so that it measures the
    /// server's delay rather than its own wait for a core.
    pub fn with_urgent(mut self, urgent: bool) -> Self {
        self.urgent = urgent;
        self
    }

    /// Runs the connections on `threads` threads (at least 1; never more than connections).
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    /// Threads the connections are spread over.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The target.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The HTTP method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The warm-up time.
    pub fn warmup(&self) -> Duration {
        self.warmup
    }

    /// The per-request timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_targets_are_accepted() {
        for url in [
            "http://127.0.0.1:3000/x",
            "http://localhost/",
            "http://[::1]:8/a?b=c",
            "http://127.9.9.9",
        ] {
            Target::parse(url, false).unwrap_or_else(|e| panic!("{url}: {e}"));
        }
        let t = Target::parse("http://127.0.0.1:3000/heavy?n=5", false).unwrap();
        assert_eq!(t.path().to_string(), "/heavy?n=5");
        assert_eq!(t.addr(), "127.0.0.1:3000".parse().unwrap());
        assert_eq!(t.host_header(), "127.0.0.1:3000");
        assert_eq!(
            Target::parse("http://localhost", false)
                .unwrap()
                .path()
                .to_string(),
            "/"
        );
    }

    #[test]
    fn remote_targets_need_allow_remote() {
        let err = Target::parse("http://192.0.2.1/", false).unwrap_err();
        assert!(matches!(err, PlanError::Remote { .. }), "{err}");
        assert!(err.to_string().contains("--allow-remote"));
        assert!(Target::parse("http://192.0.2.1/", true).is_ok());
    }

    #[test]
    fn malformed_urls_are_refused() {
        for url in [
            "",
            "127.0.0.1:3000",
            "ftp://127.0.0.1/",
            "https://127.0.0.1/",
            "http://",
            "http//x",
        ] {
            let err = Target::parse(url, false).unwrap_err();
            assert!(matches!(err, PlanError::BadUrl { .. }), "{url}: {err}");
        }
    }

    #[test]
    fn plan_rejects_zero_and_nonsense() {
        let t = Target::parse("http://127.0.0.1:1/", false).unwrap();
        let closed = |c, stop| Mode::Closed {
            connections: c,
            stop,
        };
        assert!(Plan::new(t.clone(), closed(0, Stop::Count(1))).is_err());
        assert!(Plan::new(t.clone(), closed(1, Stop::Count(0))).is_err());
        assert!(Plan::new(t.clone(), closed(1, Stop::Duration(Duration::ZERO))).is_err());
        let open = Mode::Open {
            rate: 0.0,
            connections: 1,
            stop: Stop::Count(1),
        };
        assert!(Plan::new(t.clone(), open).is_err());
        let plan = Plan::new(t, closed(1, Stop::Count(1))).unwrap();
        assert!(plan.clone().with_header("nocolon").is_err());
        assert!(plan.clone().with_method("BAD METHOD").is_err());
        assert!(plan.clone().with_timeout(Duration::ZERO).is_err());
        let plan = plan.with_header("content-type: application/json").unwrap();
        assert_eq!(plan.headers["content-type"], "application/json");
    }
}
