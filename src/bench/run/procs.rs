//! The bench's child processes: the same `offload` executable started with a subcommand on
//! a free loopback port, read for its "listening on" line, and always stopped: on drop, on
//! error, on Ctrl-C, and (Linux) when the bench itself dies, through the parent-death signal.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::child::ChildSpec;

/// How long a child may take to say where it listens.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A running child of the bench.
#[derive(Debug)]
pub struct ChildProc {
    pub role: String,
    pub addr: Option<SocketAddr>,
    child: Child,
}

impl ChildProc {
    /// Starts this executable as `spec` says; a server is waited for until it prints its
    /// "listening on http://ADDR" line, a worker until it runs.
    ///
    /// # Errors
    /// When the executable cannot be started, exits early, or does not get ready in time.
    pub fn start(spec: &ChildSpec) -> anyhow::Result<ChildProc> {
        let exe = std::env::current_exe().context("finding the offload executable")?;
        ChildProc::start_program(
            spec.role(),
            Command::new(exe).args(spec.args()),
            spec.listens(),
        )
    }

    /// [`ChildProc::start`] for any program (the Node servers, Redis): `cmd` with its
    /// arguments and environment set, started and stopped under the same rules.
    ///
    /// # Errors
    /// As [`ChildProc::start`].
    pub fn start_program(
        role: &str,
        cmd: &mut Command,
        wait_listen: bool,
    ) -> anyhow::Result<ChildProc> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "warn");
        }
        die_with_parent(cmd);
        let mut child = cmd.spawn().with_context(|| format!("starting {role}"))?;
        let stdout = child.stdout.take().context("child stdout")?;
        let stderr = child.stderr.take().context("child stderr")?;
        let (tx, rx) = mpsc::channel();
        let role_name = role.to_string();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(l) = crate::api::Listening::parse(&line) {
                    let _ = tx.send(l.addr.to_string());
                }
            }
        });
        // Children's logs go to our stderr only at warn and above, prefixed with their role.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[{role_name}] {line}");
            }
        });
        let mut proc = ChildProc {
            role: role.to_string(),
            addr: None,
            child,
        };
        if wait_listen {
            let end = Instant::now() + READY_TIMEOUT;
            loop {
                if let Ok(addr) = rx.recv_timeout(Duration::from_millis(50)) {
                    proc.addr = Some(
                        addr.parse()
                            .with_context(|| format!("{role} printed a bad address {addr:?}"))?,
                    );
                    break;
                }
                if let Some(status) = proc.child.try_wait()? {
                    bail!("{role} exited before it was ready ({status})");
                }
                if Instant::now() > end {
                    bail!("{role} did not get ready within {READY_TIMEOUT:?}");
                }
            }
        } else if let Some(status) = proc.child.try_wait()? {
            bail!("{role} exited at once ({status})");
        }
        Ok(proc)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The listening address (servers only).
    ///
    /// # Panics
    /// When called on a child started without `wait_listen`.
    pub fn addr(&self) -> SocketAddr {
        self.addr.expect("a server child has an address")
    }

    /// Asks the child to stop (SIGTERM), waits up to `grace`, then kills it.
    pub fn stop(mut self, grace: Duration) {
        self.stop_in_place(grace);
    }

    fn stop_in_place(&mut self, grace: Duration) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        #[cfg(unix)]
        // SAFETY: kill(2) on our own, not yet reaped child.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let end = Instant::now() + grace;
        while Instant::now() < end {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        self.stop_in_place(Duration::from_secs(3));
    }
}

/// On Linux, the child gets SIGKILL when the thread that started it dies, so even a killed
/// bench leaves no orphans. Children are started from the bench's main thread.
fn die_with_parent(cmd: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe and touches only the new process.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cmd;
}
