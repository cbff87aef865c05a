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
}

/// Asks for an EEVDF time slice of `slice` for the calling thread (Linux 6.12+; the kernel
/// clamps it to 0.1-100 ms). A thread on a shorter slice than the one running preempts it
/// when it wakes. Returns whether the kernel took it (older kernels ignore the field).
pub fn set_slice(slice: Duration) -> bool {
    #[cfg(target_os = "linux")]
    {
        /// `struct sched_attr` of sched_setattr(2), version 1 (56 bytes).
        #[repr(C)]
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
        // SAFETY: getpriority on our own thread id has no preconditions.
        let nice = unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::getpriority(libc::PRIO_PROCESS, tid)
        };
        let attr = SchedAttr {
            size: std::mem::size_of::<SchedAttr>() as u32,
            sched_policy: libc::SCHED_OTHER as u32,
            sched_flags: 0,
            sched_nice: nice,
            sched_priority: 0,
            sched_runtime: slice.as_nanos() as u64,
            sched_deadline: 0,
            sched_period: 0,
            sched_util_min: 0,
            sched_util_max: 0,
        };
        // SAFETY: pid 0 is the calling thread; `attr` is a valid, fully initialised
        // sched_attr whose `size` says how much the kernel may read.
        let rc = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr, 0) };
        if rc != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "could not set a thread's time slice");
            return false;
        }
        true
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = slice;
        false
    }
}
