//! How the threads that run heavy work share the CPU with the server's own threads and with
//! other processes (Linux; elsewhere these are no-ops).
//!
//! Two aims pull apart. Light requests (`/health`) must not wait for a busy core's time slice,
//! so the runtime thread that answers one should preempt heavy work at once. And on a shared
//! box, the pool should get its fair share beside a busy neighbour, not give way to every other
//! process. A high niceness for the work gets the first and loses the second (nice 10 weighs
//! about a tenth of nice 0). [`Policy::Batch`] keeps the work at the caller's priority but
//! marks it CPU-bound (`SCHED_BATCH`: the scheduler does not let it preempt others on wake-up),
//! and [`set_slice`] asks for a short EEVDF time slice for the runtime threads (Linux 6.12+),
//! which lets a woken runtime thread preempt a thread on a longer slice.

use std::time::Duration;

/// The scheduling policy of a thread that runs heavy work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// `SCHED_OTHER`: the default time sharing.
    Normal,
    /// `SCHED_BATCH`: time sharing for CPU-bound threads; they never preempt on wake-up.
    Batch,
}

/// How a pool's threads are scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Priority {
    /// Niceness added to the process's own (0: the caller's; the sum is capped at 19), so
    /// that a server started under `nice` keeps its pool that much nicer than itself.
    pub nice: i32,
    /// The scheduling policy.
    pub policy: Policy,
}

impl Priority {
    /// The caller's own priority: nothing changes.
    pub const SAME: Priority = Priority {
        nice: 0,
        policy: Policy::Normal,
    };

    /// Applies this priority to the calling thread; a failure is logged, not fatal.
    pub fn apply(self) {
        #[cfg(target_os = "linux")]
        {
            if self.policy == Policy::Batch {
                let param = libc::sched_param { sched_priority: 0 };
                // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param that
                // outlives the call. SCHED_BATCH needs no privilege.
                let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
                if rc != 0 {
                    tracing::warn!(error = %std::io::Error::last_os_error(), "could not set SCHED_BATCH on a pool thread");
                }
            }
            if self.nice != 0 {
                // SAFETY: getpid and gettid have no preconditions; getpriority of our own
                // process reads the main thread's niceness (a -1 that is an error reads as -1,
                // and the sum below is then a little less nice); setpriority on our own thread id
                // reports failure by -1.
                let rc = unsafe {
                    let own = libc::getpriority(libc::PRIO_PROCESS, libc::getpid() as libc::id_t);
                    let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
                    libc::setpriority(libc::PRIO_PROCESS, tid, (own + self.nice).min(19))
                };
                if rc != 0 {
                    tracing::warn!(nice = self.nice, error = %std::io::Error::last_os_error(), "could not lower pool thread priority");
                }
            }
        }
    }
}

/// Sets the calling thread's niceness to `nice` (negative raises its priority, which needs
/// `CAP_SYS_NICE` or an `RLIMIT_NICE` that allows it). Returns whether it was allowed.
pub fn set_nice(nice: i32) -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid has no preconditions; setpriority on our own thread id reports
        // failure (EPERM, EACCES) by -1 and changes nothing then.
        unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, nice) == 0
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = nice;
        false
    }
}

/// The scheduling of threads that answer light requests next to heavy work: a short time
/// slice, and a higher priority where the process may raise it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Urgent {
    /// The EEVDF slice asked for (`None`: the kernel's default).
    pub slice: Option<Duration>,
    /// The niceness asked for (0: unchanged).
    pub nice: i32,
}

impl Urgent {
    /// What the runtime threads of a server get by default, and a light probe of the bench.
    pub const DEFAULT: Urgent = Urgent {
        slice: Some(Duration::from_micros(100)),
        nice: -10,
    };

    /// Applies it to the calling thread; returns whether the niceness was allowed (a slice
    /// the kernel does not know is ignored by it).
    pub fn apply(self) -> bool {
        if let Some(s) = self.slice {
            set_slice(s);
        }
        self.nice == 0 || set_nice(self.nice)
    }

    /// Applies it to thread `tid`, which may be another process's (its main thread's id is the
    /// process's id): a benchmark gives another server's serving thread what offload's runtime
    /// threads get, so the two compare at the same priority. Needs the right to change that
    /// thread (the same user, or `CAP_SYS_NICE`) and, for a negative niceness, the right to
    /// raise it. Returns whether both the niceness and the slice were taken.
    pub fn apply_to(self, tid: u32) -> bool {
        #[cfg(target_os = "linux")]
        {
            // SAFETY: setpriority reports failure (ESRCH, EPERM, EACCES) by -1 and changes
            // nothing then.
            let niced = self.nice == 0
                || unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, self.nice) }
                    == 0;
            // The slice after the niceness: sched_setattr carries the niceness it read.
            let sliced = self.slice.is_none_or(|s| set_slice_of(tid as i32, s));
            niced && sliced
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = tid;
            false
        }
    }
}

/// `struct sched_attr` of sched_setattr(2) and sched_getattr(2), version 1 (56 bytes).
#[cfg(target_os = "linux")]
#[repr(C)]
#[derive(Default)]
struct SchedAttr {
    size: u32,
    sched_policy: u32,
    sched_flags: u64,
    sched_nice: i32,
    sched_priority: u32,
    sched_runtime: u64,
    sched_deadline: u64,
    sched_period: u64,
    sched_util_min: u32,
    sched_util_max: u32,
}

/// How thread `tid` (of any process) is scheduled now: its niceness and its time slice (the
/// kernel's default one where none was asked for; `None` on a kernel that reports none). A
/// benchmark reads it to check that two servers' serving threads run alike. `None` when the
/// thread is not there.
pub fn of_thread(tid: u32) -> Option<Urgent> {
    #[cfg(target_os = "linux")]
    {
        let mut attr = SchedAttr::default();
        // SAFETY: `attr` is a writable sched_attr of the size passed; the kernel writes at
        // most that many bytes, and a tid that is not there is refused (ESRCH).
        let rc = unsafe {
            libc::syscall(
                libc::SYS_sched_getattr,
                tid as libc::pid_t,
                &mut attr,
                std::mem::size_of::<SchedAttr>() as u32,
                0u32,
            )
        };
        if rc != 0 {
            return None;
        }
        Some(Urgent {
            slice: (attr.sched_runtime > 0).then(|| Duration::from_nanos(attr.sched_runtime)),
            nice: attr.sched_nice,
        })
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = tid;
        None
    }
}

/// Asks for an EEVDF time slice of `slice` for the calling thread (Linux 6.12+; the kernel
/// clamps it to 0.1-100 ms). A thread on a shorter slice than the one running preempts it
/// when it wakes. Returns whether the kernel took it (older kernels ignore the field).
pub fn set_slice(slice: Duration) -> bool {
    set_slice_of(0, slice)
}

/// [`set_slice`] for the thread `tid` (0: the calling thread), which may be another
/// process's: its niceness is kept.
fn set_slice_of(tid: i32, slice: Duration) -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: getpriority has no preconditions; an error reads as -1 (a niceness the
        // sched_setattr below then asks for, and may be refused).
        let nice = unsafe {
            let tid = if tid == 0 {
                libc::syscall(libc::SYS_gettid) as libc::id_t
            } else {
                tid as libc::id_t
            };
            libc::getpriority(libc::PRIO_PROCESS, tid)
        };
        let attr = SchedAttr {
            size: std::mem::size_of::<SchedAttr>() as u32,
            sched_policy: libc::SCHED_OTHER as u32,
            sched_nice: nice,
            sched_runtime: slice.as_nanos() as u64,
            ..SchedAttr::default()
        };
        // SAFETY: `attr` is a valid, fully initialised sched_attr whose `size` says how much
        // the kernel may read; a tid that is not there is refused (ESRCH).
        let rc = unsafe { libc::syscall(libc::SYS_sched_setattr, tid, &attr, 0) };
        if rc != 0 {
            tracing::debug!(tid, error = %std::io::Error::last_os_error(), "could not set a thread's time slice");
            return false;
        }
        true
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (tid, slice);
        false
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The niceness of thread `tid` of this process, from `/proc` (field 19 of its stat).
    fn nice_of(tid: u32) -> i32 {
        let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
        // Fields after the command's closing parenthesis start at field 3 (the state).
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        after.split(' ').nth(16).unwrap().parse().unwrap()
    }

    #[test]
    fn another_threads_priority_is_set_from_outside_it() {
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            let tid = unsafe { libc::syscall(libc::SYS_gettid) } as u32;
            tid_tx.send(tid).unwrap();
            done_rx.recv().unwrap();
        });
        let tid = tid_rx.recv().unwrap();
        assert_eq!(nice_of(tid), 0);
        // A higher niceness needs no privilege, so this runs as any user.
        let lower = Urgent {
            slice: Some(Duration::from_micros(100)),
            nice: 5,
        };
        let before = of_thread(tid).expect("the thread is there");
        assert_eq!(before.nice, 0);
        assert!(lower.apply_to(tid), "apply_to was refused");
        assert_eq!(nice_of(tid), 5, "the slice kept the niceness just set");
        let after = of_thread(tid).unwrap();
        eprintln!("scheduling before {before:?}, after {after:?}");
        assert_eq!(after.nice, 5);
        // A kernel that reports slices (6.12+) reports the one asked for.
        if before.slice.is_some() {
            assert_eq!(after.slice, lower.slice, "before: {before:?}");
        }
        done_tx.send(()).unwrap();
        thread.join().unwrap();
        assert!(!lower.apply_to(u32::MAX >> 2), "a thread that is not there");
        assert_eq!(of_thread(u32::MAX >> 2), None);
    }
}
