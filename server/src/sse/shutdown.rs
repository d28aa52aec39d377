//! The signal that tells every open stream the server is stopping.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
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

    /// Tells every open stream to end. The flag is set before the wake-up, and a stream
    /// checks the flag after it starts waiting, so no stream can miss both.
    pub fn begin(&self) {
        self.flag.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }
}
