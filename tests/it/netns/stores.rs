//! The store host's servers: a Redis and a PostgreSQL of their own, started inside the store's
//! namespace, bound to its address, run in the foreground as children of the test so that they
//! go with the [`Net`].

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::Net;

/// How long a store may take to start on a slow, shared machine.
const START_WITHIN: Duration = Duration::from_secs(60);

/// A server process the network runs for a test; killed (and its files removed) when dropped.
#[derive(Debug)]
pub(super) struct Server {
    child: Child,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The PostgreSQL binaries (`initdb`, `postgres`, `pg_isready`) of the newest installed
/// version, Debian's layout.
fn postgres_bin() -> Option<std::path::PathBuf> {
    let mut versions: Vec<(u32, std::path::PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|d| {
            let v = d.file_name().to_str()?.parse().ok()?;
            let bin = d.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// The uid and gid of user `name`.
fn user(name: &str) -> Option<(u32, u32)> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: getpwnam returns a pointer to static storage or null; read at once.
    let pw = unsafe { libc::getpwnam(c.as_ptr()) };
    if pw.is_null() {
        return None;
    }
    // SAFETY: non-null, just returned by getpwnam.
    Some(unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

/// Polls `check` every 50 ms until it holds; panics after [`START_WITHIN`].
fn wait_until(what: &str, child: &mut Child, check: impl Fn() -> bool) {
    let end = Instant::now() + START_WITHIN;
    while !check() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited while starting: {status}");
        }
        assert!(Instant::now() < end, "{what} did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Net {
    /// Starts Redis on host `name` (port 6379 at its address) and returns its URL.
    pub fn redis(&mut self, name: &str) -> String {
        let ip = self.host(name).ip;
        let mut child = self
            .command(name, "redis-server", None)
            .args(["--bind", &ip.to_string(), "--port", "6379"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("start redis-server (is it installed?)");
        let addr = SocketAddr::from((ip, 6379));
        wait_until("redis-server", &mut child, || {
            let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
                return false;
            };
            let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
            let mut buf = [0u8; 5];
            s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG"
        });
        self.servers.push(Server { child, _dir: None });
        format!("redis://{addr}")
    }

    /// Starts PostgreSQL on host `name` (a fresh cluster in a temp dir, trust auth, port 5432
    /// at its address) and returns its URL; `None`, loudly, if PostgreSQL is not installed
    /// (a failure when `OFFLOAD_REQUIRE_POSTGRES=1` or `OFFLOAD_REQUIRE_NETNS=1`).
    pub fn postgres(&mut self, test: &str, name: &str) -> Option<String> {
        let (Some(bin), Some(pg)) = (postgres_bin(), user("postgres")) else {
            let required = ["OFFLOAD_REQUIRE_POSTGRES", "OFFLOAD_REQUIRE_NETNS"]
                .iter()
                .any(|v| std::env::var(v).is_ok_and(|v| v == "1"));
            assert!(
                !required,
                "PostgreSQL (/usr/lib/postgresql/*/bin, user postgres) is required ({test})"
            );
            crate::support::did_not_run(&format!(
                "PostgreSQL is not installed: network test `{test}` on Postgres"
            ));
            return None;
        };
        let ip = self.host(name).ip;
        // Named after our pid, so a killed run's directory is found and removed by the sweep.
        let dir = tempfile::Builder::new()
            .prefix(&format!("{}{}-pg", super::PREFIX, std::process::id()))
            .tempdir()
            .expect("temp dir");
        std::os::unix::fs::chown(dir.path(), Some(pg.0), Some(pg.1)).expect("chown");
        let data = dir.path().join("data");
        let out = Command::new(bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"])
            .uid(pg.0)
            .gid(pg.1)
            .current_dir(dir.path())
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Clients come from the other hosts' addresses, not from loopback.
        let mut hba = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("pg_hba.conf"))
            .expect("pg_hba.conf");
        writeln!(hba, "host all all 0.0.0.0/0 trust").expect("write pg_hba.conf");
        let mut child = self
            .command(name, bin.join("postgres").to_str().unwrap(), Some(pg))
            .arg("-D")
            .arg(&data)
            .args(["-p", "5432", "-c", &format!("listen_addresses={ip}")])
            .arg("-k")
            .arg(dir.path())
            // A test store: speed over durability.
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off", "-c", "shared_buffers=16MB"])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start postgres");
        let isready = bin.join("pg_isready");
        let host = ip.to_string();
        wait_until("postgres", &mut child, || {
            Command::new(&isready)
                .args(["-q", "-h", &host, "-p", "5432", "-U", "postgres"])
                .status()
                .is_ok_and(|s| s.success())
        });
        self.servers.push(Server {
            child,
            _dir: Some(dir),
        });
        Some(format!("postgres://postgres@{ip}:5432/postgres"))
    }
}
