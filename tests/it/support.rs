//! Test support: start `offload` subcommands as real processes on free ports, and speak
//! HTTP/1.1 to them with `offload::client` (a new connection per request, unless a [`Conn`]
//! or a [`crowd`] keeps one), panicking on anything but an answer.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hyper::body::Bytes;
use offload::client;
use serde_json::Value;

/// Tests whose assertions depend on timing or on a steady load take this lock, so they do
/// not run at the same time as each other on a 2-core machine (the others still run in
/// parallel). A test that failed while holding it does not block the rest.
pub async fn exclusive() -> tokio::sync::MutexGuard<'static, ()> {
    LOCK.lock().await
}

/// [`exclusive`] for tests that are not async.
pub fn exclusive_blocking() -> tokio::sync::MutexGuard<'static, ()> {
    LOCK.blocking_lock()
}

static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The `offload` executable under test, logging warnings to the test's stderr.
pub fn offload_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_offload"));
    cmd.env("RUST_LOG", "warn").stderr(Stdio::inherit());
    cmd
}

/// Starts `cmd <args>` and waits (at most 20 s) for the first stdout line that `ready`
/// accepts; keeps reading stdout afterwards so the child never blocks on a full pipe.
fn spawn_until(
    mut cmd: Command,
    args: &[&str],
    ready: fn(&str) -> Option<SocketAddr>,
) -> (Child, SocketAddr) {
    let mut child = cmd
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start offload");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = ready(&line) {
                let _ = tx.send(addr);
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(addr) => (child, addr),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("offload {args:?} did not say it is ready");
        }
    }
}

/// A running `offload` child process, killed when dropped.
pub struct Proc {
    child: Child,
    pub addr: SocketAddr,
}

impl Proc {
    /// Starts `offload <args>` (on `--port 0` unless args name a port) and waits for its
    /// "listening on http://ADDR" line.
    pub fn start(args: &[&str]) -> Proc {
        Proc::start_with(offload_command(), args)
    }

    /// [`Proc::start`] with a prepared command (another network namespace, stderr elsewhere).
    pub fn start_with(cmd: Command, args: &[&str]) -> Proc {
        let port: &[&str] = if args.contains(&"--port") {
            &[]
        } else {
            &["--port", "0"]
        };
        let args: Vec<&str> = args.iter().chain(port).copied().collect();
        let (child, addr) = spawn_until(cmd, &args, |line| {
            let rest = line.split("listening on http://").nth(1)?;
            rest.split_whitespace().next()?.parse().ok()
        });
        Proc { child, addr }
    }

    /// Starts another program (an example of the workspace) with `args` and waits for its
    /// "listening on http://ADDR" line.
    pub fn start_program(program: &std::path::Path, args: &[&str]) -> Proc {
        let mut cmd = Command::new(program);
        cmd.stderr(Stdio::inherit());
        let (child, addr) = spawn_until(cmd, args, |line| {
            line.strip_prefix("listening on http://")?
                .trim()
                .parse()
                .ok()
        });
        Proc { child, addr }
    }

    /// Starts another program's worker (`cmd`, an example of the workspace, with its
    /// environment set) with `args` and waits for its "... worker: running" line (a worker
    /// listens on no port, so `addr` is `0.0.0.0:0`).
    pub fn start_program_worker(cmd: Command, args: &[&str]) -> Proc {
        let (child, addr) = spawn_until(cmd, args, |line| {
            line.contains(" worker: running")
                .then(|| SocketAddr::from(([0, 0, 0, 0], 0)))
        });
        Proc { child, addr }
    }

    /// Sends SIGTERM and waits for the process to exit, returning whether it exited cleanly.
    pub fn terminate(mut self, within: Duration) -> bool {
        // SAFETY: kill(2) on our own child's pid, which we have not yet reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let end = Instant::now() + within;
        while Instant::now() < end {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Proc {
    /// Starts `offload worker <args>` and waits for its "offload worker: running" line (a worker
    /// listens on no port, so `addr` is `0.0.0.0:0`).
    pub fn start_worker(args: &[&str]) -> Proc {
        Proc::start_worker_with(offload_command(), args)
    }

    /// [`Proc::start_worker`] with a prepared command.
    pub fn start_worker_with(cmd: Command, args: &[&str]) -> Proc {
        let args: Vec<&str> = std::iter::once("worker")
            .chain(args.iter().copied())
            .collect();
        let (child, addr) = spawn_until(cmd, &args, |line| {
            line.starts_with("offload worker: running")
                .then(|| SocketAddr::from(([0, 0, 0, 0], 0)))
        });
        Proc { child, addr }
    }

    /// Starts `offload worker <args> --metrics-addr 0` and waits for its "metrics at" line;
    /// `addr` is where its `/metrics` is served.
    pub fn start_worker_with_metrics(args: &[&str]) -> Proc {
        let args: Vec<&str> = std::iter::once("worker")
            .chain(args.iter().copied())
            .chain(["--metrics-addr", "0"])
            .collect();
        let (child, addr) = spawn_until(offload_command(), &args, |line| {
            let rest = line.strip_prefix("offload worker: metrics at http://")?;
            rest.strip_suffix("/metrics")?.parse().ok()
        });
        Proc { child, addr }
    }

    /// Starts `offload serve --strategy queue` on `place`'s queue (its URL and name), with
    /// `extra` flags added.
    pub fn start_queue_gateway(place: &offload_queue::testing::Place, extra: &[&str]) -> Proc {
        let mut args = vec!["serve", "--strategy", "queue", "--queue", place.url()];
        args.extend(["--queue-name", place.name().as_str()]);
        args.extend_from_slice(extra);
        Proc::start(&args)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, no goodbye.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How long a test waits for one answer: far past any deadline a test sets, so a hung
/// server fails the test instead of hanging it.
const ANSWER_WAIT: Duration = Duration::from_secs(300);

/// An HTTP response as a test sees it.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl From<client::Response> for Resp {
    fn from(r: client::Response) -> Resp {
        Resp {
            status: r.status,
            headers: r.headers,
            body: r.body,
        }
    }
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
    /// The stable error code of a JSON error body.
    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or("<no code>")
            .to_string()
    }
}

/// Sends one request on a fresh connection.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Resp {
    let mut req = client::Request::new(method.parse().expect("a method"), path).body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    client::request(addr, &req, ANSWER_WAIT)
        .await
        .unwrap_or_else(|e| panic!("no response: {e}"))
        .into()
}

pub async fn get(addr: SocketAddr, path: &str) -> Resp {
    request(addr, "GET", path, &[], Bytes::new()).await
}

/// One keep-alive connection, for requests in a row without a new connection each.
pub struct Conn(client::Conn);

impl Conn {
    pub async fn open(addr: SocketAddr) -> Conn {
        Conn(
            client::Conn::open(addr, ANSWER_WAIT)
                .await
                .expect("connect"),
        )
    }

    /// `GET path` on this connection.
    pub async fn get(&mut self, path: &str) -> Resp {
        self.0
            .send(&client::Request::get(path), ANSWER_WAIT)
            .await
            .unwrap_or_else(|e| panic!("no response: {e}"))
            .into()
    }
}

pub async fn post_json(addr: SocketAddr, body: &str) -> Resp {
    request(
        addr,
        "POST",
        "/heavy",
        &[("content-type", "application/json")],
        body.to_string(),
    )
    .await
}

/// One sample's value from Prometheus text, e.g. `offload_pool_tasks_total{outcome="started"}`.
pub async fn metric(addr: SocketAddr, series: &str) -> f64 {
    let text = String::from_utf8(get(addr, "/metrics").await.body.to_vec()).expect("utf-8 metrics");
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .unwrap_or_else(|| panic!("no series {series} in metrics:\n{text}"))
        .trim()
        .parse()
        .expect("a number")
}

/// `n` for a `count` that takes about `target` of one core's time in this build, measured
/// here by the thread's own CPU time: a busy machine that gives this thread a tenth of a core
/// does not make the work it sizes ten times too small.
pub fn count_n_for(target: Duration) -> u64 {
    use offload::work::{Kind, Limits, Work};
    let probe = 20_000_000;
    let w = Work::new(Kind::Count, probe, &Limits::default()).unwrap();
    let mut best = Duration::MAX;
    for _ in 0..3 {
        let t = thread_cpu_time();
        w.run(&|| false).unwrap();
        best = best.min(thread_cpu_time().saturating_sub(t));
    }
    ((probe as f64) * target.as_secs_f64() / best.as_secs_f64().max(1e-6)) as u64
}

/// The calling thread's CPU time.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill; the clock always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// What a crowd of keep-alive clients saw.
#[derive(Debug, Default)]
pub struct Crowd {
    /// Answers by status.
    pub statuses: std::collections::BTreeMap<u16, u64>,
    /// 200 answers whose result was not the `n` asked for, and failed exchanges.
    pub wrong: Vec<String>,
    /// The slowest answer of each status.
    pub slowest: std::collections::BTreeMap<u16, Duration>,
}

/// How long a [`crowd`] client waits for a connection or an answer.
const CROWD_WAIT: Duration = Duration::from_secs(60);

/// `conns` clients at once, each on one keep-alive connection, each sending `per_conn`
/// `GET /heavy?n=...` in a row; the `i`th request overall asks for `n_of(i)`, and every 200
/// must carry that exact result.
pub async fn crowd(
    addr: SocketAddr,
    conns: usize,
    per_conn: usize,
    n_of: impl Fn(usize) -> u64 + Send + Sync + 'static,
) -> Crowd {
    let n_of = std::sync::Arc::new(n_of);
    let mut tasks = Vec::new();
    for c in 0..conns {
        let n_of = n_of.clone();
        tasks.push(tokio::spawn(async move {
            let mut seen = Crowd::default();
            let mut conn = match client::Conn::open(addr, CROWD_WAIT).await {
                Ok(c) => c,
                Err(e) => {
                    seen.wrong.push(e.to_string());
                    return seen;
                }
            };
            for k in 0..per_conn {
                let n = n_of(c * per_conn + k);
                let req = client::Request::get(format!("/heavy?n={n}"));
                let t = Instant::now();
                match conn.send(&req, CROWD_WAIT).await {
                    Ok(r) => {
                        let took = t.elapsed();
                        *seen.statuses.entry(r.status).or_default() += 1;
                        let slow = seen.slowest.entry(r.status).or_default();
                        *slow = (*slow).max(took);
                        let v: Value = serde_json::from_slice(&r.body).unwrap_or_default();
                        if r.status == 200 && v["result"].as_u64() != Some(n) {
                            seen.wrong.push(format!("n={n}: {v}"));
                        }
                    }
                    Err(e) => {
                        seen.wrong.push(format!("n={n}: {e}"));
                        return seen;
                    }
                }
            }
            seen
        }));
    }
    let mut all = Crowd::default();
    for t in tasks {
        let one = t.await.expect("client task");
        for (s, k) in one.statuses {
            *all.statuses.entry(s).or_default() += k;
        }
        for (s, d) in one.slowest {
            let slow = all.slowest.entry(s).or_default();
            *slow = (*slow).max(d);
        }
        all.wrong.extend(one.wrong);
    }
    all
}

/// A splitmix64 stream: a test's random choices, from one seed (which the test prints, so
/// that a failure's choices can be drawn again).
pub struct Dice(pub u64);

impl Dice {
    /// The next number of the stream.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// A time in `0..=d`, in whole ms.
    pub fn within(&mut self, d: Duration) -> Duration {
        Duration::from_millis(self.next() % (d.as_millis() as u64 + 1))
    }
}

/// Whether CPUs 0 and 1 and `taskset` are here; without them a loud skip, in CI a failure.
pub fn two_cpus_and_taskset(test: &str) -> bool {
    let have_taskset = std::process::Command::new("taskset")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if have_taskset && cpus >= 2 {
        return true;
    }
    let why = format!("{test} needs 2 CPUs (have {cpus}) and taskset (found: {have_taskset})");
    assert!(std::env::var_os("CI").is_none(), "{why}");
    did_not_run(&why);
    false
}

/// Says loudly, straight to stderr, in one write, that a check did not run and why.
pub use offload_queue::testing::did_not_run;

/// A busy loop pinned to one CPU, killed when dropped, even when a test fails.
pub struct BusyLoop(pub std::process::Child);

impl Drop for BusyLoop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl BusyLoop {
    /// Starts `sh -c 'while :; do :; done'` on `cpu` alone, at this test process's own
    /// niceness, set rather than inherited: a neighbour as strong as the tests themselves and
    /// the servers they start, whatever `nice` they were started under.
    pub fn on(cpu: usize) -> BusyLoop {
        use std::os::unix::process::CommandExt;
        let nice = own_niceness();
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", &cpu.to_string(), "sh", "-c", "while :; do :; done"])
            .stdin(std::process::Stdio::null());
        // SAFETY: setpriority is async-signal-safe and touches only the child being started.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setpriority(libc::PRIO_PROCESS, 0, nice) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        BusyLoop(cmd.spawn().expect("start a busy loop"))
    }
}

/// This process's niceness (0 unless the tests run under `nice`).
fn own_niceness() -> i32 {
    // SAFETY: getpriority has no preconditions; a -1 that is an error reads as -1, which no
    // test under `nice` has.
    unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
}

/// A `kB` line of `/proc/{pid}/status` (`VmRSS`, `VmHWM`), in KiB; `None` once the process
/// has exited (a zombie's status has no memory lines).
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
