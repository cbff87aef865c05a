//! Test hosts: a small network made on this machine out of network namespaces, one per host,
//! each with its own `eth0` on a switch in this process ([`switch`]) whose links add delay,
//! jitter and loss and can be cut. The test itself sits on the switch too (a TAP in the root
//! namespace), so the plain HTTP helpers of `support` reach every host by its address.
//!
//! Everything is named `ofl<pid>-...`, so parallel and earlier runs never clash. Dropping a
//! [`Net`] kills every process in its namespaces, stops the switch (its TAP devices vanish with
//! their descriptors) and deletes the namespaces. A run that was killed before it could do
//! that leaves namespaces, processes and Postgres directories named after a dead pid: the
//! first [`Net`] of the next run removes them.
//!
//! Needs root, iproute2's `ip` and `/dev/net/tun`. Without them each test says loudly that it
//! did not run; with `OFFLOAD_REQUIRE_NETNS=1` (CI) it fails instead.

mod queue;
mod remote;
mod stores;
mod switch;

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

pub use self::switch::Link;
use crate::support::Proc;

/// Where `ip netns add` keeps its namespaces.
const NETNS_DIR: &str = "/var/run/netns";
/// Every name this harness makes starts with this and the creating process's pid.
const PREFIX: &str = "ofl";

/// Whether this machine can make test hosts; otherwise a loud line, or a panic when
/// `OFFLOAD_REQUIRE_NETNS=1`.
fn available(test: &str) -> bool {
    let missing = if unsafe { libc::geteuid() } != 0 {
        Some("not running as root")
    } else if !Command::new("ip")
        .arg("-V")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        Some("iproute2's `ip` is not installed")
    } else if !std::path::Path::new("/dev/net/tun").exists() {
        Some("/dev/net/tun is missing")
    } else {
        None
    };
    let Some(why) = missing else { return true };
    if std::env::var("OFFLOAD_REQUIRE_NETNS").is_ok_and(|v| v == "1") {
        panic!("OFFLOAD_REQUIRE_NETNS=1 but {why} ({test})");
    }
    crate::support::did_not_run(&format!("{why}: network test `{test}`"));
    false
}

/// Runs `ip <args>`, panicking with its stderr if it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `ip <args>` and returns its stdout, empty if it fails.
fn ip_out(args: &[&str]) -> String {
    Command::new("ip")
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let exists = unsafe { libc::kill(pid, 0) } == 0;
    exists || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// The pid in a name `ofl<pid>-...`, if it is one of ours.
fn owner(name: &str) -> Option<i32> {
    let rest = name.strip_prefix(PREFIX)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    rest[digits.len()..].starts_with('-').then_some(())?;
    digits.parse().ok()
}

/// SIGKILLs every process in namespace `ns` and deletes it.
fn remove_namespace(ns: &str) {
    for _ in 0..50 {
        let pids: Vec<i32> = ip_out(&["netns", "pids", ns])
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        if pids.is_empty() {
            break;
        }
        for pid in pids {
            // SAFETY: kill(2) on a process inside a namespace this harness made.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = Command::new("ip")
        .args(["netns", "delete", ns])
        .stderr(Stdio::null())
        .status();
}

/// Removes what killed runs left: namespaces (and the processes in them), Postgres
/// directories and worker logs named after a pid that no longer exists. Once per test process.
fn sweep() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for ns in ip_out(&["netns", "list"]).lines() {
            let ns = ns.split_whitespace().next().unwrap_or_default();
            if owner(ns).is_some_and(|pid| !alive(pid)) {
                eprintln!("netns: removing {ns}, left by a killed run");
                remove_namespace(ns);
            }
        }
        if let Ok(dirs) = std::fs::read_dir(std::env::temp_dir()) {
            for d in dirs.flatten() {
                let name = d.file_name().to_string_lossy().into_owned();
                if owner(&name).is_some_and(|pid| !alive(pid)) {
                    let _ = match d.file_type() {
                        Ok(t) if t.is_dir() => std::fs::remove_dir_all(d.path()),
                        _ => std::fs::remove_file(d.path()),
                    };
                }
            }
        }
    });
}

/// Opens a TAP device named `name` in the network namespace at `ns_path` (the root namespace
/// for `None`). A thread of its own enters the namespace, since `setns` moves only the thread
/// that calls it; the device stays where it was made.
fn tap(ns_path: Option<String>, name: &str) -> File {
    let name = name.to_string();
    std::thread::spawn(move || {
        if let Some(path) = ns_path {
            let ns = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            // SAFETY: setns(2) on this thread only, with a namespace descriptor we hold.
            let r = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns {path}: {}", std::io::Error::last_os_error());
        }
        let tun = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
            .expect("open /dev/net/tun");
        /// `struct ifreq` as TUNSETIFF reads it: the name, then the flags.
        #[repr(C)]
        struct IfReq {
            name: [u8; 16],
            flags: libc::c_short,
            _pad: [u8; 22],
        }
        let mut req = IfReq {
            name: [0; 16],
            flags: (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
        // SAFETY: TUNSETIFF reads an ifreq, which `req` is laid out as.
        let r = unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETIFF, &mut req) };
        assert_eq!(
            r,
            0,
            "TUNSETIFF {name}: {}",
            std::io::Error::last_os_error()
        );
        tun
    })
    .join()
    .expect("tap thread")
}

/// A temp file named after this process, so that the sweep finds it if the run is killed.
pub fn temp_log() -> tempfile::NamedTempFile {
    tempfile::Builder::new()
        .prefix(&format!("{PREFIX}{}-log", std::process::id()))
        .tempfile()
        .expect("temp file")
}

/// One test host: a namespace with `eth0` at `ip`.
#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    pub ns: String,
    pub ip: Ipv4Addr,
    port: usize,
}

/// A test network: hosts on one switch, and the test on it too (port 0, no delay).
#[derive(Debug)]
pub struct Net {
    hosts: Vec<Host>,
    switch: Option<switch::Switch>,
    /// Servers the network runs for the test (Redis, Postgres), stopped before it goes.
    servers: Vec<stores::Server>,
    /// Namespace descriptors held for commands: a child enters its namespace by descriptor
    /// just before exec (close-on-exec, so the program does not inherit it).
    ns_files: std::sync::Mutex<Vec<File>>,
}

impl Net {
    /// Makes hosts named `names` (at 10.X.Y.10, .11, ...), or `None` with a loud line if this
    /// machine cannot.
    pub fn new(test: &str, names: &[&str]) -> Option<Net> {
        if !available(test) {
            return None;
        }
        sweep();
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let pid = std::process::id();
        let k = NEXT.fetch_add(1, Ordering::Relaxed);
        let subnet = free_subnet(pid, k);
        let client = format!("{PREFIX}{pid}c{k}");
        let mut taps = vec![tap(None, &client)];
        ip(&[
            "addr",
            "add",
            &format!("{}/24", subnet_ip(subnet, 1)),
            "dev",
            &client,
        ]);
        ip(&["link", "set", &client, "up"]);
        let mut net = Net {
            hosts: Vec::new(),
            switch: None,
            servers: Vec::new(),
            ns_files: Default::default(),
        };
        for (i, name) in names.iter().enumerate() {
            let ns = format!("{PREFIX}{pid}-{k}-{name}");
            ip(&["netns", "add", &ns]);
            // Recorded at once, so a failure below still deletes it.
            net.hosts.push(Host {
                name: name.to_string(),
                ns: ns.clone(),
                ip: subnet_ip(subnet, 10 + i as u8),
                port: i + 1,
            });
            taps.push(tap(Some(format!("{NETNS_DIR}/{ns}")), "eth0"));
            let host = net.hosts.last().unwrap();
            let cidr = format!("{}/24", host.ip);
            ip(&["-n", &ns, "addr", "add", &cidr, "dev", "eth0"]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        net.switch = Some(switch::Switch::start(taps));
        Some(net)
    }

    /// The host named `name`.
    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name}"))
    }

    fn switch(&self) -> &switch::Switch {
        self.switch.as_ref().expect("switch running")
    }

    /// Sets what host `name`'s link does to its frames, both ways.
    pub fn set_link(&self, name: &str, link: Link) {
        self.switch().set_link(self.host(name).port, link);
    }

    /// Sets every host's link (not the test's own).
    pub fn set_all_links(&self, link: Link) {
        for h in &self.hosts {
            self.switch().set_link(h.port, link);
        }
    }

    /// Frames the links have dropped so far.
    pub fn frames_lost(&self) -> u64 {
        self.switch().lost()
    }

    /// `ip link set eth0 down` in host `name`: its cable is out.
    pub fn cut(&self, name: &str) {
        ip(&["-n", &self.host(name).ns, "link", "set", "eth0", "down"]);
    }

    /// `ip link set eth0 up` in host `name`.
    pub fn restore(&self, name: &str) {
        ip(&["-n", &self.host(name).ns, "link", "set", "eth0", "up"]);
    }

    /// Hosts `a` and `b` can no longer reach each other (both still reach everyone else).
    pub fn partition(&self, a: &str, b: &str) {
        self.switch()
            .set_cut(self.host(a).port, self.host(b).port, true);
    }

    /// Undoes [`Net::partition`].
    pub fn heal(&self, a: &str, b: &str) {
        self.switch()
            .set_cut(self.host(a).port, self.host(b).port, false);
    }

    /// `program` ready to run inside host `name`'s namespace: the same as `ip netns exec`,
    /// done in the child itself so that it can also drop to `user` (Postgres refuses root)
    /// and die with the test's thread that started it (`PR_SET_PDEATHSIG`), even if the test
    /// process is killed.
    pub fn command(&self, name: &str, program: &str, user: Option<(u32, u32)>) -> Command {
        let path = format!("{NETNS_DIR}/{}", self.host(name).ns);
        let ns = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        let mut cmd = Command::new(program);
        let fd = ns.as_raw_fd();
        self.ns_files.lock().unwrap().push(ns);
        // SAFETY: only async-signal-safe system calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some((uid, gid)) = user
                    && (libc::setgroups(0, std::ptr::null()) != 0
                        || libc::setgid(gid) != 0
                        || libc::setuid(uid) != 0)
                {
                    return Err(std::io::Error::last_os_error());
                }
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        cmd.env("RUST_LOG", "warn");
        cmd
    }

    /// `offload <args>` on host `name`, listening on its address (`serve`, `compute`).
    pub fn offload(&self, name: &str, args: &[&str]) -> Proc {
        let ip = self.host(name).ip.to_string();
        let mut all = args.to_vec();
        all.extend(["--bind", &ip]);
        Proc::start_with(self.offload_command(name), &all)
    }

    /// `offload worker <args>` on host `name`, its log (warnings and up) into `log`.
    pub fn worker(&self, name: &str, args: &[&str], log: Option<&File>) -> Proc {
        let mut cmd = self.offload_command(name);
        if let Some(log) = log {
            cmd.stderr(log.try_clone().expect("log file"));
        }
        Proc::start_worker_with(cmd, args)
    }

    fn offload_command(&self, name: &str) -> Command {
        let mut cmd = self.command(name, env!("CARGO_BIN_EXE_offload"), None);
        cmd.stderr(Stdio::inherit());
        cmd
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Everything in the namespaces first (servers, and their own children such as the
        // Postgres backends), then the servers' handles and directories.
        for h in &self.hosts {
            remove_namespace(&h.ns);
        }
        self.servers.clear();
        self.switch = None;
        self.ns_files.lock().unwrap().clear();
    }
}

fn subnet_ip(subnet: (u8, u8), host: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, subnet.0, subnet.1, host)
}

/// A /24 in 10.0.0.0/8 that no route of this machine covers yet, starting from one derived
/// from our pid and `k`, so that two test processes at once pick different ones.
fn free_subnet(pid: u32, k: u32) -> (u8, u8) {
    let routes = ip_out(&["-4", "route", "show", "table", "all"]);
    for i in 0..1000u32 {
        let x = 100 + ((pid + i) % 100) as u8;
        let y = ((k * 7 + i) % 256) as u8;
        if !routes.contains(&format!("10.{x}.{y}.")) {
            return (x, y);
        }
    }
    panic!("no free 10.x.y.0/24 for the test network");
}
