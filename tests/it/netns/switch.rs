//! The test network's switch: one TAP device per host (its `eth0`, inside its namespace) and
//! threads in this process that carry Ethernet frames between them, each link with its own
//! delay, jitter and loss, and pairs of hosts that can be cut off from each other.
//!
//! Why not veth and `tc netem`: the kernels these tests run on may be built without netem (the
//! CI VM's is), and then there is no delay or loss to be had from `tc`. A switch in user space
//! needs only TUN/TAP, and the hosts still talk real TCP through their own kernel stacks. A TAP
//! that is not made persistent disappears with its file descriptor, so a killed test run leaves
//! no link behind.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What a link does to the frames crossing it (both ways), like `netem delay D J loss L`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Link {
    /// Added to every frame, each way.
    pub delay: Duration,
    /// Each frame's delay is drawn uniformly from `delay ± jitter`.
    pub jitter: Duration,
    /// Fraction of frames dropped, each way (0.01 is 1 %).
    pub loss: f64,
}

/// How long a reader waits for a frame before it looks at the stop flag again.
const POLL_MS: i32 = 50;
/// Largest frame a TAP without offloads hands over (MTU 1500 plus headers), with room.
const FRAME_MAX: usize = 65_536;

/// One host's place on the switch.
#[derive(Debug)]
struct Port {
    tap: File,
    link: Mutex<Link>,
    /// Frames waiting out their delay.
    out: Mutex<Outbox>,
    ready: Condvar,
}

/// The frames on their way to one port.
#[derive(Debug, Default)]
struct Outbox {
    /// By due time, then by arrival (equal times keep their order).
    frames: BTreeMap<(Instant, u64), Vec<u8>>,
    /// The due time of the last frame from each port. A frame never overtakes an earlier one
    /// from the same host, as on a wire; but it does not wait behind another host's: frames
    /// from a fast host reach this one while a slow host's are still on their way (a single
    /// queue per port held every host's answers to the gateway behind the slowest one's).
    last: HashMap<usize, Instant>,
    next: u64,
}

#[derive(Debug, Default)]
struct Shared {
    ports: Vec<Port>,
    /// Which port each source MAC address was seen on.
    macs: Mutex<HashMap<[u8; 6], usize>>,
    /// Pairs of ports (lower first) that cannot reach each other.
    cut: Mutex<HashSet<(usize, usize)>>,
    stop: AtomicBool,
    rng: AtomicU64,
    /// Frames dropped by loss, for the test's figures.
    lost: AtomicU64,
}

/// The switch; its threads stop, and its TAP devices vanish, when it is dropped.
#[derive(Debug)]
pub struct Switch {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Switch {
    /// Starts carrying frames between `taps` (port `i` is `taps[i]`).
    pub fn start(taps: Vec<File>) -> Switch {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        let shared = Arc::new(Shared {
            ports: taps
                .into_iter()
                .map(|tap| Port {
                    tap,
                    link: Mutex::new(Link::default()),
                    out: Mutex::new(Outbox::default()),
                    ready: Condvar::new(),
                })
                .collect(),
            rng: AtomicU64::new(seed),
            ..Shared::default()
        });
        let mut threads = Vec::new();
        for port in 0..shared.ports.len() {
            let s = Arc::clone(&shared);
            threads.push(std::thread::spawn(move || s.read(port)));
            let s = Arc::clone(&shared);
            threads.push(std::thread::spawn(move || s.deliver(port)));
        }
        Switch { shared, threads }
    }

    /// Sets what port `port`'s link does to frames from now on.
    pub fn set_link(&self, port: usize, link: Link) {
        *self.shared.ports[port].link.lock().unwrap() = link;
    }

    /// Cuts (`true`) or restores the path between two ports.
    pub fn set_cut(&self, a: usize, b: usize, cut: bool) {
        let pair = (a.min(b), a.max(b));
        let mut set = self.shared.cut.lock().unwrap();
        if cut {
            set.insert(pair);
        } else {
            set.remove(&pair);
        }
    }

    /// Frames dropped by loss so far.
    pub fn lost(&self) -> u64 {
        self.shared.lost.load(Ordering::Relaxed)
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for p in &self.shared.ports {
            p.ready.notify_all();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Shared {
    /// A uniform draw in [0, 1) (xorshift: the switch needs speed, not quality).
    fn uniform(&self) -> f64 {
        let mut x = self.rng.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.store(x, Ordering::Relaxed);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    /// One way across `port`'s link: its delay, or `None` if the frame is lost.
    fn cross(&self, port: usize) -> Option<Duration> {
        let link = *self.ports[port].link.lock().unwrap();
        if link.loss > 0.0 && self.uniform() < link.loss {
            self.lost.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let spread = link.jitter.as_secs_f64() * (2.0 * self.uniform() - 1.0);
        Some(Duration::from_secs_f64(
            (link.delay.as_secs_f64() + spread).max(0.0),
        ))
    }

    /// Reads frames from `port`'s TAP and queues them on the ports they are for.
    fn read(&self, port: usize) {
        let mut buf = vec![0u8; FRAME_MAX];
        let fd = self.ports[port].tap.as_raw_fd();
        while !self.stop.load(Ordering::Relaxed) {
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd for the duration of the call.
            if unsafe { libc::poll(&mut pfd, 1, POLL_MS) } <= 0 {
                continue;
            }
            let n = match (&self.ports[port].tap).read(&mut buf) {
                Ok(n) if n >= 14 => n,
                _ => continue,
            };
            let frame = &buf[..n];
            let dst: [u8; 6] = frame[0..6].try_into().unwrap();
            let src: [u8; 6] = frame[6..12].try_into().unwrap();
            let known = {
                let mut macs = self.macs.lock().unwrap();
                macs.insert(src, port);
                macs.get(&dst).copied()
            };
            let targets: Vec<usize> = match known {
                Some(to) if dst[0] & 1 == 0 => vec![to],
                _ => (0..self.ports.len()).collect(),
            };
            let now = Instant::now();
            for to in targets.into_iter().filter(|&to| to != port) {
                if self
                    .cut
                    .lock()
                    .unwrap()
                    .contains(&(port.min(to), port.max(to)))
                {
                    continue;
                }
                let (Some(out), Some(into)) = (self.cross(port), self.cross(to)) else {
                    continue;
                };
                let target = &self.ports[to];
                let mut q = target.out.lock().unwrap();
                let due = (now + out + into).max(q.last.get(&port).copied().unwrap_or(now));
                q.last.insert(port, due);
                let k = q.next;
                q.next += 1;
                q.frames.insert((due, k), frame.to_vec());
                target.ready.notify_one();
            }
        }
    }

    /// Writes `port`'s frames to its TAP as they fall due. A write to a host whose link is
    /// down fails, and the frame is gone, as on a cut cable.
    fn deliver(&self, port: usize) {
        let p = &self.ports[port];
        let mut q = p.out.lock().unwrap();
        while !self.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            match q.frames.first_key_value() {
                Some(((due, _), _)) if *due <= now => {
                    let (_, frame) = q.frames.pop_first().unwrap();
                    drop(q);
                    let _ = (&p.tap).write(&frame);
                    q = p.out.lock().unwrap();
                }
                Some(((due, _), _)) => {
                    let wait = *due - now;
                    q = p.ready.wait_timeout(q, wait).unwrap().0;
                }
                None => {
                    q = p
                        .ready
                        .wait_timeout(q, Duration::from_millis(POLL_MS as u64))
                        .unwrap()
                        .0;
                }
            }
        }
    }
}
