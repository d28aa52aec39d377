//! A wake-up that many streams wait for across runtimes, relayed by one task per
//! runtime.
//!
//! Waking a task of another current-thread runtime costs that runtime an `eventfd`
//! write; a change woken straight to ten thousand subscribers spread over the runtimes
//! would cost one per subscriber. Here each runtime's streams wait on a `Notify` of
//! their own runtime, and a change wakes one relay task per runtime, which wakes them.
// Bench: `cargo xtask bench` fan-out, `write(2)` calls per second (perf stat).

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use tokio::runtime::{self, Handle};
use tokio::sync::futures::OwnedNotified;
use tokio::sync::Notify;

/// Like a [`Notify`] used only through `notify_waiters` and `notified_owned`.
pub struct Signal {
    /// Distinguishes signals in each thread's cache of its runtime's `Notify`s.
    id: u64,
    /// One per runtime whose streams wait for this signal.
    rooms: Mutex<Vec<Room>>,
    /// For waiters outside any runtime (unit tests polling by hand).
    outside: Arc<Notify>,
}

struct Room {
    runtime: runtime::Id,
    /// What the runtime's streams wait on; gone once the runtime dropped its relay.
    local: Weak<Notify>,
    /// Tells the relay task to wake `local`'s waiters.
    relay: Arc<Notify>,
}

impl Signal {
    pub fn new() -> Signal {
        static IDS: AtomicU64 = AtomicU64::new(0);
        Signal {
            id: IDS.fetch_add(1, Ordering::Relaxed),
            rooms: Mutex::new(Vec::new()),
            outside: Arc::new(Notify::new()),
        }
    }

    /// Wakes every waiter of every runtime, through each runtime's relay task.
    pub fn notify_waiters(&self) {
        let mut rooms = self.rooms.lock().unwrap_or_else(PoisonError::into_inner);
        rooms.retain(|room| room.local.strong_count() > 0);
        for room in rooms.iter() {
            // A permit is kept if the relay is busy: no change is lost.
            room.relay.notify_one();
        }
        drop(rooms);
        self.outside.notify_waiters();
    }

    /// A future woken by the next [`Signal::notify_waiters`], on the current runtime.
    pub fn notified_owned(&self) -> OwnedNotified {
        let Ok(handle) = Handle::try_current() else {
            return Arc::clone(&self.outside).notified_owned();
        };
        let runtime = handle.id();
        // Each thread keeps its runtime's `Notify`, so that waiting (once per event
        // delivered) takes no lock shared with the other threads.
        thread_local! {
            static LOCAL: RefCell<Vec<(u64, runtime::Id, Weak<Notify>)>> =
                const { RefCell::new(Vec::new()) };
        }
        let cached = LOCAL.with_borrow(|local| {
            local
                .iter()
                .find(|(signal, rt, _)| *signal == self.id && *rt == runtime)
                .and_then(|(_, _, notify)| notify.upgrade())
        });
        if let Some(local) = cached {
            return local.notified_owned();
        }
        let local = self.local(&handle);
        LOCAL.with_borrow_mut(|cache| {
            cache.retain(|(signal, _, notify)| *signal != self.id && notify.strong_count() > 0);
            cache.push((self.id, runtime, Arc::downgrade(&local)));
        });
        local.notified_owned()
    }

    /// The `Notify` of `handle`'s runtime, made with its relay task on first use.
    fn local(&self, handle: &Handle) -> Arc<Notify> {
        let id = handle.id();
        let mut rooms = self.rooms.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(local) = rooms
            .iter()
            .find(|room| room.runtime == id)
            .and_then(|room| room.local.upgrade())
        {
            return local;
        }
        rooms.retain(|room| room.runtime != id);
        let local = Arc::new(Notify::new());
        let relay = Arc::new(Notify::new());
        rooms.push(Room {
            runtime: id,
            local: Arc::downgrade(&local),
            relay: Arc::clone(&relay),
        });
        handle.spawn({
            let local = Arc::clone(&local);
            async move {
                loop {
                    relay.notified().await;
                    local.notify_waiters();
                }
            }
        });
        local
    }
}

impl Default for Signal {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn waiters_of_two_runtimes_and_none_are_all_woken() {
        let signal = Arc::new(Signal::new());
        let here = signal.notified_owned();
        let outside = std::thread::spawn({
            let signal = Arc::clone(&signal);
            move || signal.notified_owned()
        })
        .join()
        .unwrap();
        let (ready, other) = std::sync::mpsc::channel();
        let there = std::thread::spawn({
            let signal = Arc::clone(&signal);
            move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    let mut notified = std::pin::pin!(signal.notified_owned());
                    notified.as_mut().enable();
                    ready.send(()).unwrap();
                    tokio::time::timeout(Duration::from_secs(5), notified)
                        .await
                        .expect("the other runtime's waiter is woken");
                });
            }
        });
        other.recv().unwrap();
        let mut here = std::pin::pin!(here);
        here.as_mut().enable();
        let mut outside = std::pin::pin!(outside);
        outside.as_mut().enable();
        signal.notify_waiters();
        tokio::time::timeout(Duration::from_secs(5), here)
            .await
            .expect("this runtime's waiter is woken");
        tokio::time::timeout(Duration::from_secs(5), outside)
            .await
            .expect("the waiter outside a runtime is woken");
        there.join().unwrap();
    }
}
