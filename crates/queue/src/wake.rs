//! A wake-up across processes for the SQLite backend: inotify on the folder that holds the
//! queue file, ticking whenever any process writes the file's WAL (every commit does). An idle
//! worker waits on the tick instead of polling, so a job stored by a gateway is picked up within
//! a wake-up's latency (microseconds) rather than a poll period.
//!
//! The folder is watched, not the WAL file itself: SQLite may delete and recreate the WAL when
//! the last connection closes, and a watch on a deleted file's inode would go quiet.

use std::io;
use std::path::Path;
use std::sync::Arc;

use tokio::sync::watch;

/// Ticks (a counter in a watch channel) on each write to one file while someone waits for one.
/// Dropping it stops the watch.
///
/// The folder is watched only while a [`Subscription`] is alive: a process that writes the file
/// but never waits on it (a gateway), or a worker busy with jobs, is not woken by its own
/// writes or by anyone else's. Under load a store sees hundreds of commits a second, and each
/// one would otherwise wake every process that has the queue open.
#[derive(Debug)]
pub(crate) struct FileWake {
    ticks: watch::Receiver<u64>,
    watch: Arc<imp::Watch>,
    task: tokio::task::JoinHandle<()>,
}

impl FileWake {
    /// Prepares a watch on `file` (which need not exist yet) from inside a tokio runtime.
    ///
    /// # Errors
    /// If inotify is not available (not Linux, or out of instances).
    pub(crate) fn watch(file: &Path) -> io::Result<FileWake> {
        let (tx, ticks) = watch::channel(0u64);
        let (watch, task) = imp::spawn(file, tx)?;
        Ok(FileWake { ticks, watch, task })
    }

    /// A subscription whose [`Subscription::changed`] resolves on the next write after this
    /// call. The folder is watched from here until the last subscription is dropped.
    ///
    /// # Errors
    /// If the folder cannot be watched (the watch limit is reached, or it is gone).
    pub(crate) fn subscribe(&self) -> io::Result<Subscription> {
        let mut rx = self.ticks.clone();
        self.watch.add()?;
        rx.mark_unchanged();
        Ok(Subscription {
            rx,
            watch: Arc::clone(&self.watch),
        })
    }
}

impl Drop for FileWake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One waiter's hold on the watch; see [`FileWake::subscribe`].
#[derive(Debug)]
pub(crate) struct Subscription {
    rx: watch::Receiver<u64>,
    watch: Arc<imp::Watch>,
}

impl Subscription {
    /// Resolves on the next write to the file (or at once if one came since the last call).
    pub(crate) async fn changed(&mut self) {
        // The sender lives as long as the `FileWake`; without it, wait forever like a quiet file.
        if self.rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.watch.remove();
    }
}

#[cfg(target_os = "linux")]
mod imp {
    use std::ffi::CString;
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    use std::path::Path;
    use std::sync::{Arc, Mutex};

    use tokio::io::unix::AsyncFd;
    use tokio::sync::watch;

    /// Size of `struct inotify_event` before its name.
    const HEADER: usize = std::mem::size_of::<libc::inotify_event>();

    /// The inotify descriptor, the folder, and the watch on it while anyone waits.
    #[derive(Debug)]
    pub(super) struct Watch {
        fd: Arc<AsyncFd<OwnedFd>>,
        dir: CString,
        /// The watch descriptor while the folder is watched, and how many wait on it.
        pub(super) held: Mutex<(Option<i32>, usize)>,
    }

    impl Watch {
        /// One more waiter; the first one starts the watch.
        pub(super) fn add(&self) -> io::Result<()> {
            let mut held = self.held.lock().expect("watch lock");
            if held.0.is_none() {
                // SAFETY: `fd` is an inotify descriptor and `dir` a NUL-terminated path.
                let wd = unsafe {
                    libc::inotify_add_watch(
                        self.fd.get_ref().as_raw_fd(),
                        self.dir.as_ptr(),
                        libc::IN_MODIFY | libc::IN_CREATE,
                    )
                };
                if wd < 0 {
                    return Err(io::Error::last_os_error());
                }
                held.0 = Some(wd);
            }
            held.1 += 1;
            Ok(())
        }

        /// One waiter fewer; the last one stops the watch.
        pub(super) fn remove(&self) {
            let mut held = self.held.lock().expect("watch lock");
            held.1 = held.1.saturating_sub(1);
            if held.1 == 0
                && let Some(wd) = held.0.take()
            {
                // SAFETY: plain syscall on our own descriptors; an error (the folder is gone,
                // so the watch is too) leaves nothing to undo.
                unsafe { libc::inotify_rm_watch(self.fd.get_ref().as_raw_fd(), wd) };
            }
        }
    }

    pub(super) fn spawn(
        file: &Path,
        tx: watch::Sender<u64>,
    ) -> io::Result<(Arc<Watch>, tokio::task::JoinHandle<()>)> {
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
        let dir = CString::new(dir.as_os_str().as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: the `OwnedFd` moves into the `AsyncFd` and stays open, unchanged, until the
        // `AsyncFd` is dropped.
        let fd = Arc::new(unsafe { AsyncFd::register(fd) }?);
        let watch = Arc::new(Watch {
            fd: Arc::clone(&fd),
            dir,
            held: Mutex::new((None, 0)),
        });
        // The folder must be one we can watch: try once now, so a bad path fails at open.
        watch.add()?;
        watch.remove();
        let task = tokio::spawn(async move {
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
        });
        Ok((watch, task))
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

    #[derive(Debug)]
    pub(super) struct Watch;

    impl Watch {
        pub(super) fn add(&self) -> io::Result<()> {
            Ok(())
        }
        pub(super) fn remove(&self) {}
    }

    pub(super) fn spawn(
        _file: &Path,
        _tx: watch::Sender<u64>,
    ) -> io::Result<(std::sync::Arc<Watch>, tokio::task::JoinHandle<()>)> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "file-change wake-ups need Linux inotify",
        ))
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::io::Write;
    use std::time::Duration;

    use super::FileWake;

    fn append(path: &std::path::Path) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(b"x").unwrap();
    }

    #[tokio::test]
    async fn a_write_wakes_a_subscriber_and_nobody_is_woken_without_one() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("q.db-wal");
        let wake = FileWake::watch(&file).unwrap();

        // Nobody waits: the folder is not watched, so writes tick nothing.
        for _ in 0..3 {
            append(&file);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(*wake.ticks.borrow(), 0, "a write ticked with no subscriber");

        // A subscriber is woken by the next write, and by no other file in the folder.
        let mut sub = wake.subscribe().unwrap();
        append(&dir.path().join("other"));
        let early = tokio::time::timeout(Duration::from_millis(100), sub.changed()).await;
        assert!(early.is_err(), "another file's write woke the subscriber");
        append(&file);
        tokio::time::timeout(Duration::from_secs(5), sub.changed())
            .await
            .expect("the write woke the subscriber");

        // Two subscribers share one watch; it stops with the last one.
        let second = wake.subscribe().unwrap();
        drop(sub);
        assert!(wake.watch.held.lock().unwrap().0.is_some());
        drop(second);
        assert!(wake.watch.held.lock().unwrap().0.is_none());
        tokio::time::sleep(Duration::from_millis(50)).await;
        let before = *wake.ticks.borrow();
        append(&file);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            *wake.ticks.borrow(),
            before,
            "a write ticked after the last subscriber left"
        );
    }
}
