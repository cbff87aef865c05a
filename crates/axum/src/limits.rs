//! The process's limits that a server meets first under many clients.

/// Raises the process's soft open-file limit to its hard one (as nginx's `worker_rlimit_nofile`
/// and HAProxy do) and returns the limit in force (1,024 where it cannot be read).
///
/// Call it at start in a server that may hold many connections: each is an open file, and a
/// soft limit of 1,024 (the default of many Linux shells and services, whose hard limit is
/// far higher) makes accept fail with EMFILE under a thousand clients, which axum's `serve`
/// answers by not accepting for a second. Does nothing where the soft limit is the hard one.
pub fn raise_open_files() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass and reads nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1_024;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    lim.rlim_cur
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_soft_open_file_limit_is_raised_to_the_hard_one() {
        let limit = super::raise_open_files();
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct we pass.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        assert_eq!(
            lim.rlim_cur, lim.rlim_max,
            "the soft limit stayed below the hard"
        );
        assert_eq!(limit, lim.rlim_cur);
    }
}
