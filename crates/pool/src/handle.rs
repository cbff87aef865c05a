//! The one-shot channel a task's result comes back on: a [`Future`] for async callers and a
//! blocking [`Handle::wait`] for threads, with no runtime behind either. Ours rather than
//! tokio's oneshot so the crate needs no async runtime at all.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};

use crate::TaskError;

/// What a task sends back: its value, type-erased, or why there is none.
pub(crate) type Reply = Result<Box<dyn std::any::Any + Send>, TaskError>;

enum Slot {
    /// No reply yet; the waker of the last poll, if any, and whether a thread blocks in
    /// [`Handle::wait`] (only then is the condition variable notified: a notify is a system
    /// call, and an async caller, the usual one, never blocks on it).
    Waiting(Option<Waker>, bool),
    Ready(Reply),
    /// The reply was taken, or the sender dropped without one.
    Done,
}

struct Channel {
    slot: Mutex<Slot>,
    ready: Condvar,
    /// The receiver is gone: read without the lock by a task's stop check, which may poll it
    /// often.
    closed: AtomicBool,
}

/// The pool's end: sends at most once; dropped unsent, the handle sees [`TaskError::Stopped`].
pub(crate) struct Sender(Arc<Channel>);

pub(crate) fn channel<T>() -> (Sender, Handle<T>) {
    let ch = Arc::new(Channel {
        slot: Mutex::new(Slot::Waiting(None, false)),
        ready: Condvar::new(),
        closed: AtomicBool::new(false),
    });
    let handle = Handle {
        ch: ch.clone(),
        _t: std::marker::PhantomData,
    };
    (Sender(ch), handle)
}

impl Sender {
    /// Whether the caller stopped waiting (dropped its [`Handle`]).
    pub(crate) fn is_closed(&self) -> bool {
        self.0.closed.load(Ordering::Acquire)
    }

    pub(crate) fn send(self, reply: Reply) {
        self.put(Some(reply));
    }

    fn put(&self, reply: Option<Reply>) {
        let mut slot = self.0.slot.lock().expect("handle lock");
        if let Slot::Waiting(waker, blocked) = &mut *slot {
            let (waker, blocked) = (waker.take(), *blocked);
            *slot = match reply {
                Some(r) => Slot::Ready(r),
                None => Slot::Done,
            };
            drop(slot);
            if blocked {
                self.0.ready.notify_all();
            }
            if let Some(w) = waker {
                w.wake();
            }
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        // After `send` the slot is no longer `Waiting` and this does nothing.
        self.put(None);
    }
}

/// The result of one submitted task: `.await` it, or [`Handle::wait`] for it on a thread.
/// Dropping it before the task starts means the task never runs; a running task sees it
/// through its stop check.
pub struct Handle<T> {
    ch: Arc<Channel>,
    _t: std::marker::PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for Handle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle").finish_non_exhaustive()
    }
}

impl<T: Send + 'static> Handle<T> {
    /// Blocks the calling thread until the task's result is in. Not for an async runtime's
    /// threads: `.await` the handle there.
    ///
    /// # Errors
    /// [`TaskError`] when the task expired, panicked or was stopped.
    pub fn wait(self) -> Result<T, TaskError> {
        let mut slot = self.ch.slot.lock().expect("handle lock");
        while let Slot::Waiting(_, blocked) = &mut *slot {
            *blocked = true;
            slot = self.ch.ready.wait(slot).expect("handle lock");
        }
        let reply = std::mem::replace(&mut *slot, Slot::Done);
        drop(slot);
        Self::open(reply)
    }

    fn open(slot: Slot) -> Result<T, TaskError> {
        match slot {
            Slot::Ready(Ok(any)) => Ok(*any
                .downcast::<T>()
                .expect("a handle gets its own task's type")),
            Slot::Ready(Err(e)) => Err(e),
            // The sender went without replying: only on a pool that shut down.
            Slot::Done | Slot::Waiting(..) => Err(TaskError::Stopped),
        }
    }
}

impl<T: Send + 'static> Future for Handle<T> {
    type Output = Result<T, TaskError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut slot = self.ch.slot.lock().expect("handle lock");
        match &mut *slot {
            Slot::Waiting(waker, _) => {
                match waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => *waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
            other => Poll::Ready(Self::open(std::mem::replace(other, Slot::Done))),
        }
    }
}

impl<T> Drop for Handle<T> {
    fn drop(&mut self) {
        self.ch.closed.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_gets_the_value_and_a_dropped_sender_means_stopped() {
        let (tx, rx) = channel::<u32>();
        std::thread::spawn(move || tx.send(Ok(Box::new(7u32))));
        assert_eq!(rx.wait(), Ok(7));
        let (tx, rx) = channel::<u32>();
        drop(tx);
        assert_eq!(rx.wait(), Err(TaskError::Stopped));
    }

    #[test]
    fn the_sender_sees_a_dropped_handle() {
        let (tx, rx) = channel::<()>();
        assert!(!tx.is_closed());
        drop(rx);
        assert!(tx.is_closed());
    }
}
