//! A wake-up across processes for the SQLite backend: inotify on the folder that holds the
//! queue file, ticking whenever any process writes the file's WAL (every commit does). An idle
//! worker waits on the tick instead of polling, so a job stored by a gateway is picked up within
//! a wake-up's latency (microseconds) rather than a poll period.
//!
//! The folder is watched, not the WAL file itself: SQLite may delete and recreate the WAL when
//! the last connection closes, and a watch on a deleted file's inode would go quiet.

use std::io;
use std::path::Path;

use tokio::sync::watch;

/// Ticks (a counter in a watch channel) on each write to one file. Dropping it stops the watch.
#[derive(Debug)]
pub(crate) struct FileWake {
    ticks: watch::Receiver<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl FileWake {
    /// Watches `file` (which need not exist yet) from inside a tokio runtime.
    ///
    /// # Errors
    /// If inotify is not available (not Linux, or the watch limit is reached) or the folder
    /// cannot be watched.
    pub(crate) fn watch(file: &Path) -> io::Result<FileWake> {
        let (tx, ticks) = watch::channel(0u64);
        let task = imp::spawn(file, tx)?;
        Ok(FileWake { ticks, task })
    }

    /// A receiver whose `changed()` resolves on the next write after this call.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        let mut rx = self.ticks.clone();
        rx.mark_unchanged();
        rx
    }
}

impl Drop for FileWake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(target_os = "linux")]
mod imp {
    use std::ffi::CString;
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    use std::path::Path;

    use tokio::io::unix::AsyncFd;
    use tokio::sync::watch;

    /// Size of `struct inotify_event` before its name.
    const HEADER: usize = std::mem::size_of::<libc::inotify_event>();

    pub(super) fn spawn(
        file: &Path,
        tx: watch::Sender<u64>,
    ) -> io::Result<tokio::task::JoinHandle<()>> {
        let dir = match file.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let name = file
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?
            .as_bytes()
            .to_vec();
        // SAFETY: plain syscall; the result is checked before use.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let cdir = CString::new(dir.as_os_str().as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: `fd` is an inotify descriptor and `cdir` a NUL-terminated path.
        let wd = unsafe {
            libc::inotify_add_watch(
                fd.as_raw_fd(),
                cdir.as_ptr(),
                libc::IN_MODIFY | libc::IN_CREATE,
            )
        };
        if wd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the `OwnedFd` moves into the `AsyncFd` and stays open, unchanged, until the
        // `AsyncFd` is dropped.
        let fd = unsafe { AsyncFd::register(fd) }?;
        Ok(tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let Ok(mut ready) = fd.readable().await else {
                    return;
                };
                // SAFETY: reads into a buffer we own, of the length given.
                let n = unsafe {
                    libc::read(fd.get_ref().as_raw_fd(), buf.as_mut_ptr().cast(), buf.len())
                };
                if n < 0 {
                    let e = io::Error::last_os_error();
                    if e.kind() == io::ErrorKind::WouldBlock {
                        ready.clear_ready();
                        continue;
                    }
                    tracing::warn!(error = %e, "inotify read failed; the wake-up stops");
                    return;
                }
                if names_file(&buf[..n as usize], &name) {
                    tx.send_modify(|t| *t = t.wrapping_add(1));
                }
            }
        }))
    }

    /// Whether any event in `events` (a run of `inotify_event` records) names `name`, or
    /// overflowed (events were lost, so assume ours was among them).
    fn names_file(events: &[u8], name: &[u8]) -> bool {
        let mut at = 0;
        while at + HEADER <= events.len() {
            let field = |off: usize| {
                u32::from_ne_bytes(events[at + off..at + off + 4].try_into().expect("4 bytes"))
            };
            let (mask, len) = (field(4), field(12) as usize);
            if mask & libc::IN_Q_OVERFLOW != 0 {
                return true;
            }
            let raw =
                &events[(at + HEADER).min(events.len())..(at + HEADER + len).min(events.len())];
            let got = raw.split(|b| *b == 0).next().unwrap_or(&[]);
            if got == name {
                return true;
            }
            at += HEADER + len;
        }
        false
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use std::io;
    use std::path::Path;

    use tokio::sync::watch;

    pub(super) fn spawn(
        _file: &Path,
        _tx: watch::Sender<u64>,
    ) -> io::Result<tokio::task::JoinHandle<()>> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "file-change wake-ups need Linux inotify",
        ))
    }
}
