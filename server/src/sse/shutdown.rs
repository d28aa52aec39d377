//! The signal that tells every open stream the server is stopping.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Waker};
use tokio::sync::futures::OwnedNotified;
use tokio::sync::Notify;

/// Set once when shutdown begins; every open stream waits on it.
#[derive(Default)]
pub struct Shutdown {
    flag: AtomicBool,
    notify: Arc<Notify>,
}

impl Shutdown {
    pub fn new() -> Arc<Self> {
        Arc::new(Shutdown::default())
    }

    pub fn is_set(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    /// A future that resolves when [`Shutdown::begin`] is called after it was made.
    /// Check [`Shutdown::is_set`] after polling it, for a call that came before.
    pub fn notified(&self) -> OwnedNotified {
        Arc::clone(&self.notify).notified_owned()
    }

    /// A watch of this signal for one task, polled on each of its wake-ups.
    pub fn watch(self: &Arc<Self>) -> ShutdownWatch {
        ShutdownWatch {
            notified: Box::pin(self.notified()),
            shutdown: Arc::clone(self),
            waker: None,
        }
    }

    /// Tells every open stream to end. The flag is set before the wake-up, and a stream
    /// checks the flag after it starts waiting, so no stream can miss both.
    pub fn begin(&self) {
        self.flag.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }
}

/// One task's wait for [`Shutdown::begin`], made to be asked on every poll of the task.
///
/// Polling a `Notified` takes the `Notify`'s lock each time, and a task's waker rarely
/// changes: the watch polls it again only for another waker.
// Bench: `cargo xtask bench` 1 Hz, CPU per event (callgrind instructions).
pub struct ShutdownWatch {
    shutdown: Arc<Shutdown>,
    /// Made with the watch, so a `begin` after that is seen even before the first poll.
    notified: Pin<Box<OwnedNotified>>,
    /// The waker `notified` was last polled with; it keeps that one.
    waker: Option<Waker>,
}

impl ShutdownWatch {
    /// Whether shutdown has begun; if not, `cx` is woken when it does.
    pub fn poll_begun(&mut self, cx: &mut Context<'_>) -> bool {
        if self.shutdown.is_set() {
            return true;
        }
        if self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            return false;
        }
        self.waker = Some(cx.waker().clone());
        self.notified.as_mut().poll(cx).is_ready()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::task::{waker, ArcWake};
    use std::sync::atomic::AtomicUsize;

    #[derive(Default)]
    struct Count(AtomicUsize);

    impl ArcWake for Count {
        fn wake_by_ref(this: &Arc<Self>) {
            this.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_watch_is_woken_once_and_then_says_begun() {
        let shutdown = Shutdown::new();
        let (a, b) = (Arc::new(Count::default()), Arc::new(Count::default()));
        let (wa, wb) = (waker(Arc::clone(&a)), waker(Arc::clone(&b)));
        let mut watch = shutdown.watch();
        assert!(!watch.poll_begun(&mut Context::from_waker(&wa)));
        assert!(!watch.poll_begun(&mut Context::from_waker(&wa)));
        // Another waker replaces the first.
        assert!(!watch.poll_begun(&mut Context::from_waker(&wb)));
        shutdown.begin();
        assert_eq!(b.0.load(Ordering::SeqCst), 1, "the last waker is woken");
        assert!(watch.poll_begun(&mut Context::from_waker(&wa)));
        // A watch made before `begin` but never polled sees it too.
        let shutdown = Shutdown::new();
        let mut late = shutdown.watch();
        shutdown.begin();
        assert!(late.poll_begun(&mut Context::from_waker(&wa)));
    }
}
