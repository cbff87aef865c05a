//! Hostile and careless clients against the gateway and the compute service: slow heads,
//! idle keep-alives, more sockets than the process has files, and a store partition that
//! would write a log line per refused request.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{Proc, exclusive, get, metric, offload_command};

/// `offload` with its open-file limit (soft and hard, so it cannot raise it) set to `n`, as
/// `prlimit --nofile=n:n` would.
fn with_open_files(n: u64) -> Command {
    let mut cmd = offload_command();
    // SAFETY: setrlimit is async-signal-safe, and the closure touches nothing else.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    cmd
}

/// Raises this test process's soft open-file limit to its hard limit, to hold thousands of
/// sockets; returns it.
fn raise_own_open_files() -> u64 {
    offload::gateway::conns::raise_open_files()
}

/// A client that sends part of a request head and never finishes it.
async fn slow_head(addr: SocketAddr) -> Option<TcpStream> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    s.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n")
        .await
        .ok()?;
    Some(s)
}

/// Whether the server has closed `s` (EOF or reset), without waiting.
fn closed(s: &TcpStream) -> bool {
    let mut b = [0u8; 1];
    match s.try_read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
        Err(_) => true,
    }
}

/// `/health` on a fresh connection, timed from the connect to the whole answer.
async fn timed_health(addr: SocketAddr) -> (Duration, u16) {
    let t = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(5), get(addr, "/health")).await;
    (t.elapsed(), r.map_or(0, |r| r.status))
}

fn rss_kib(pid: u32) -> u64 {
    crate::support::proc_status_kib(pid, "VmRSS").unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twice_the_file_limit_in_slow_sockets_leaves_health_answering() {
    let _x = exclusive().await;
    assert!(
        raise_own_open_files() >= 4_000,
        "the test needs 4,000 open files for its own sockets"
    );
    // The usual default of 1,024 files, and a header timeout longer than the test, so only
    // the cap and the evictions keep the gateway reachable.
    let g = Proc::start_with(
        with_open_files(1_024),
        &["serve", "--strategy", "pool", "--header-timeout", "60s"],
    );
    let max = metric(g.addr, "offload_connections_max").await as usize;
    assert_eq!(
        metric(g.addr, "offload_open_files_limit").await,
        1_024.0,
        "the limit in force is shown"
    );
    assert!(max < 1_024, "the cap {max} is below the open-file limit");
    let rss_before = rss_kib(g.pid());

    // Twice the cap in slowloris sockets, each dripping a header line every second.
    let mut slow = Vec::new();
    for _ in 0..2 * max {
        if let Some(s) = slow_head(g.addr).await {
            slow.push(s);
        }
    }
    assert_eq!(slow.len(), 2 * max, "every slow socket connected");
    let drip = tokio::spawn(async move {
        for _ in 0..20 {
            for s in slow.iter_mut() {
                let _ = s.try_write(b"x-drip: 1\r\n");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        slow
    });

    let mut times = Vec::new();
    for _ in 0..40 {
        let (took, status) = timed_health(g.addr).await;
        assert_eq!(status, 200, "/health answered (after {took:?})");
        times.push(took);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let slow = drip.await.expect("drip");
    times.sort();
    let open = metric(g.addr, "offload_connections_open").await as usize;
    let evicted = metric(
        g.addr,
        "offload_connections_closed_total{reason=\"evicted\"}",
    )
    .await;
    let still_open = slow.iter().filter(|s| !closed(s)).count();
    eprintln!(
        "slow sockets: {} sent, {still_open} still open on the client, gateway holds {open} \
         (cap {max}), {evicted} evicted; /health from a fresh connection: median {:?}, max {:?}; \
         gateway RSS {} KiB before, {} KiB after",
        slow.len(),
        times[times.len() / 2],
        times[times.len() - 1],
        rss_before,
        rss_kib(g.pid())
    );
    assert!(
        open <= max + 1,
        "the gateway holds {open}, over its cap {max}"
    );
    assert!(evicted >= max as f64, "the oldest slow sockets made room");
    assert!(
        times[times.len() - 1] < Duration::from_millis(100),
        "every /health answered within 100 ms: {times:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_connection_busy_health_still_gets_in() {
    let _x = exclusive().await;
    raise_own_open_files();
    let g = Proc::start_with(
        with_open_files(1_024),
        &["serve", "--strategy", "pool", "--threads", "2"],
    );
    let max = metric(g.addr, "offload_connections_max").await as usize;
    // More connections than the cap (fewer than its room past the cap), each with a request
    // of ~50 ms of work in service (the pool's queue holds them): nothing is idle to close.
    let n = crate::support::count_n_for(Duration::from_millis(50));
    let target = format!("http://{}/heavy?work=count&n={n}", g.addr);
    let conns = (max + offload::gateway::conns::ROOM_PAST_CAP / 2).to_string();
    let load = std::thread::spawn(move || {
        offload_command()
            .args([
                "load",
                "-c",
                &conns,
                "-d",
                "6s",
                "--timeout",
                "30s",
                "--json",
                &target,
            ])
            .stdout(std::process::Stdio::null())
            .status()
            .expect("run offload load")
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut times = Vec::new();
    for _ in 0..10 {
        let (took, status) = timed_health(g.addr).await;
        assert_eq!(status, 200, "/health answered (after {took:?})");
        times.push(took);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let open = metric(g.addr, "offload_connections_open").await as usize;
    let refused = metric(g.addr, "offload_connections_refused_total").await;
    let _ = load.join();
    times.sort();
    eprintln!(
        "{open} connections open (cap {max}), {refused} refused at once; /health median {:?}, max {:?}",
        times[times.len() / 2],
        times[times.len() - 1]
    );
    assert!(open <= max + offload::gateway::conns::ROOM_PAST_CAP + 1);
}

/// More closed-loop clients than the cap and its room past it: the excess are refused, and
/// reconnect at once. The accept loop pauses after each refusal, so they cannot turn it into a
/// storm (before the pause: 81,705 refusals in 13 s from 900 clients against 768 + 32).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_cannot_spin() {
    let _x = exclusive().await;
    let g = Proc::start(&[
        "serve",
        "--strategy",
        "pool",
        "--threads",
        "2",
        "--max-connections",
        "40",
    ]);
    let n = crate::support::count_n_for(Duration::from_millis(20));
    let target = format!("http://{}/heavy?work=count&n={n}", g.addr);
    // 40 + 32 let in; 128 more reconnect as fast as they are closed.
    let status = offload_command()
        .args([
            "load",
            "-c",
            "200",
            "-d",
            "4s",
            "--timeout",
            "30s",
            "--json",
            &target,
        ])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run offload load");
    assert!(status.success());
    let refused = metric(g.addr, "offload_connections_refused_total").await;
    let per_s = refused / 4.0;
    eprintln!("refused_connections_cannot_spin: {refused} refused in 4 s ({per_s:.0}/s)");
    assert!(
        refused > 0.0,
        "nothing was refused: the test did not reach the cap"
    );
    // At least 1 ms between two refusals: at most 1,000 a second.
    assert!(per_s <= 1_000.0, "{per_s:.0} refusals a second");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_head_is_closed_after_the_header_timeout_and_an_idle_one_after_the_idle_timeout()
{
    for role in ["serve", "compute"] {
        let g = Proc::start(&[role, "--header-timeout", "1s", "--idle-timeout", "3s"]);

        // A head that drips one byte every 200 ms never completes: closed at about 1 s.
        let mut s = TcpStream::connect(g.addr).await.expect("connect");
        let t = Instant::now();
        let mut closed_after = None;
        for b in b"GET /health HTTP/1.1\r\nhost: x\r\nx-slow: 1234567890" {
            if s.write_all(&[*b]).await.is_err() || closed(&s) {
                closed_after = Some(t.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let closed_after = closed_after.expect("the dripping head was never closed");
        assert!(
            closed_after >= Duration::from_millis(900)
                && closed_after < Duration::from_millis(2_500),
            "{role}: a dripping head was closed after {closed_after:?}, for a 1 s header timeout"
        );

        // A keep-alive connection that sent a request and then waits: the header timeout
        // does not apply between requests; the idle timeout does.
        let mut k = TcpStream::connect(g.addr).await.expect("connect");
        k.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .expect("send");
        let mut buf = vec![0u8; 4096];
        let n = k.read(&mut buf).await.expect("an answer");
        assert!(
            buf[..n].starts_with(b"HTTP/1.1 200"),
            "{role}: /health answered"
        );
        let t = Instant::now();
        let eof = tokio::time::timeout(Duration::from_secs(6), k.read(&mut buf)).await;
        let idle_for = t.elapsed();
        assert!(
            matches!(eof, Ok(Ok(0)) | Ok(Err(_))),
            "{role}: the idle connection was not closed"
        );
        assert!(
            idle_for >= Duration::from_millis(2_800) && idle_for < Duration::from_millis(4_500),
            "{role}: an idle keep-alive was closed after {idle_for:?}, for a 3 s idle timeout"
        );
        let header = metric(
            g.addr,
            "offload_connections_closed_total{reason=\"header_timeout\"}",
        )
        .await;
        let idle = metric(
            g.addr,
            "offload_connections_closed_total{reason=\"idle_timeout\"}",
        )
        .await;
        assert!(
            header >= 1.0 && idle >= 1.0,
            "{role}: counted ({header} header, {idle} idle)"
        );
    }
}

#[tokio::test]
async fn a_head_past_the_size_limit_is_refused_with_431() {
    let g = Proc::start(&["serve", "--strategy", "pool"]);
    let mut s = TcpStream::connect(g.addr).await.expect("connect");
    let mut head = b"GET /health HTTP/1.1\r\nhost: x\r\n".to_vec();
    for i in 0..2_000 {
        head.extend_from_slice(format!("x-filler-{i}: {}\r\n", "y".repeat(40)).as_bytes());
    }
    head.extend_from_slice(b"\r\n");
    // The server may answer and close before it has read all of it.
    let _ = s.write_all(&head).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer)).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 431"),
        "an oversized head: {:?}",
        String::from_utf8_lossy(&answer[..answer.len().min(80)])
    );
    assert_eq!(get(g.addr, "/health").await.status, 200);
}

#[test]
fn a_connection_cap_the_file_limit_cannot_hold_is_refused_at_start() {
    let out = with_open_files(1_024)
        .args([
            "serve",
            "--strategy",
            "pool",
            "--port",
            "0",
            "--max-connections",
            "5000",
        ])
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run offload");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--max-connections 5000") && err.contains("open-file limit (1024)"),
        "a clear error: {err}"
    );
}

/// A private redis-server on a free port, for a test that stops it.
struct PrivateRedis {
    child: std::process::Child,
    port: u16,
}

impl PrivateRedis {
    fn start() -> PrivateRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("a free port")
            .local_addr()
            .expect("addr")
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start redis-server (is it installed?)");
        let end = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < end, "redis-server did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        PrivateRedis { child, port }
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.signal(libc::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_second_store_partition_writes_about_ten_lines_per_kind() {
    let test = "a_ten_second_store_partition_writes_about_ten_lines_per_kind";
    if !offload_queue::testing::Backend::Redis.configured(test) {
        return;
    }
    let _x = exclusive().await;
    let redis = PrivateRedis::start();
    let log = tempfile::NamedTempFile::new().expect("log file");
    let mut cmd = offload_command();
    cmd.stderr(log.reopen().expect("log file"));
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let g = Proc::start_with(
        cmd,
        &[
            "serve",
            "--strategy",
            "queue",
            "--queue",
            &url,
            "--queue-name",
            "partition",
        ],
    );
    // A closed loop of 20 connections, for 14 s: 2 s before, 10 s of partition, 2 s after.
    let load = std::thread::spawn({
        let target = format!("http://{}/heavy?work=count&n=1000", g.addr);
        move || {
            offload_command()
                .args([
                    "load",
                    "-c",
                    "20",
                    "-d",
                    "14s",
                    "--timeout",
                    "5s",
                    "--json",
                    &target,
                ])
                .stdout(std::process::Stdio::null())
                .status()
                .expect("run offload load")
        }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    redis.signal(libc::SIGSTOP);
    tokio::time::sleep(Duration::from_secs(10)).await;
    redis.signal(libc::SIGCONT);
    let _ = load.join();
    let events = metric(
        g.addr,
        "offload_log_events_total{kind=\"queue_unavailable\"}",
    )
    .await;
    drop(g);

    let mut text = String::new();
    log.reopen()
        .expect("log")
        .read_to_string(&mut text)
        .expect("read log");
    let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
    {
        let kind = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("kind="))
            .map(|k| k.trim_matches('"'))
            .map_or_else(|| line.chars().skip(28).take(80).collect(), str::to_string);
        *by_kind.entry(kind).or_default() += 1;
    }
    eprintln!("lines by kind: {by_kind:?}; queue_unavailable events counted: {events}");
    assert!(
        events > 100.0,
        "the partition refused many requests ({events}), or this test proves nothing"
    );
    for (kind, n) in &by_kind {
        assert!(*n <= 13, "{n} lines of {kind} for a 10 s partition");
    }
    let _ = std::io::stderr().flush();
}
