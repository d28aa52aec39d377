//! A wake-up that many streams wait for across runtimes: each stream registers once per
//! signal, and a change wakes its own runtime's streams directly and every other
//! runtime's through one relay task there.
//!
//! A stream waits with one [`Waiter`] (its task's waker, in an `AtomicWaker`) for all
//! the signals it listens to, and is registered with each for as long as it listens: a
//! slot holding its `Arc<Waiter>` in the signal's *room* of its runtime. Waiting anew
//! after an event is a waker update in the one `Waiter`, not a registration per signal,
//! and a subscriber of 32 channels holds 32 [`Key`]s, not 32 futures.
//!
//! Waking a task of another current-thread runtime costs that runtime an `eventfd`
//! write; a change woken straight to ten thousand subscribers spread over the runtimes
//! would cost one per subscriber. So the waiters of the runtime the change is made on
//! (the publish's own) are woken directly, and each other runtime's through one relay
//! task of its own, which wakes them there: one `eventfd` write per runtime. A room of
//! another runtime with a single waiter is woken directly too: that is one write either
//! way, without the relay task's turn.
// Bench: `cargo xtask bench` fan-out, `write(2)` calls per second (perf stat);
// `cargo xtask bench --only channels`, memory per stream of 32 channels.

use futures_util::task::AtomicWaker;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Waker;
use tokio::runtime::{self, Handle};
use tokio::sync::Notify;

/// Other runtimes' rooms with at most this many waiters are woken directly, without
/// their relay task: one cross-thread wake-up either way.
const DIRECT_AT_MOST: usize = 1;

/// What one stream waits with, for every signal it is registered with.
pub struct Waiter {
    waker: AtomicWaker,
    /// The runtime it was made on (its stream's), whose room it is registered in.
    runtime: Option<runtime::Id>,
}

impl Waiter {
    /// A waiter for a stream of the current runtime (or of none).
    pub fn new() -> Waiter {
        Waiter {
            waker: AtomicWaker::new(),
            runtime: Handle::try_current().ok().map(|h| h.id()),
        }
    }

    /// Wakes `waker` at the next change of any signal this waiter is registered with.
    /// Call it before reading what the signals announce, so that no change between the
    /// read and the wait is missed.
    pub fn register(&self, waker: &Waker) {
        self.waker.register(waker);
    }

    fn wake(&self) {
        self.waker.wake();
    }
}

impl Default for Waiter {
    fn default() -> Self {
        Self::new()
    }
}

/// A waiter's slot in its runtime's room of a signal, given back to
/// [`Signal::unregister`]. Four bytes: a stream holds one per channel it lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key(u32);

/// Like a [`Notify`] used only through `notify_waiters`, with waiters registered once.
pub struct Signal {
    /// One per runtime whose streams are registered (and one for waiters outside any
    /// runtime: unit tests polling by hand).
    rooms: Mutex<Vec<Arc<Room>>>,
}

struct Room {
    /// `None`: waiters outside any runtime.
    runtime: Option<runtime::Id>,
    /// Whether a relay task runs on the runtime (none outside one, or for waiters
    /// registered from another runtime than their own: they are woken directly).
    relayed: bool,
    waiters: Mutex<Slots>,
    /// Tells the relay task to wake the waiters, or to end.
    relay: Notify,
    /// Set when the room is dropped from its signal (or the signal is): the relay task
    /// ends (a channel's signal goes with the channel, and its relays must not outlive
    /// it).
    closed: AtomicBool,
}

/// Slots a room allocates at a time. In fixed chunks, a room that grows to thousands
/// of waiters is never copied whole while its lock is held, and leaves no smaller
/// copies of itself behind as a doubling vector does.
const CHUNK: usize = 64;

/// The registered waiters of a room; a freed slot is reused.
#[derive(Default)]
struct Slots {
    // Boxed on purpose: a vector of the arrays themselves would be one buffer again,
    // copied whole as it grows.
    #[allow(clippy::vec_box)]
    chunks: Vec<Box<[Option<Arc<Waiter>>; CHUNK]>>,
    /// Slots handed out so far (freed ones included).
    len: usize,
    free: Vec<u32>,
    live: usize,
}

impl Slots {
    fn wake_all(&self) {
        for chunk in &self.chunks {
            for waiter in chunk.iter().flatten() {
                waiter.wake();
            }
        }
    }

    fn get_mut(&mut self, slot: usize) -> Option<&mut Option<Arc<Waiter>>> {
        self.chunks.get_mut(slot / CHUNK)?.get_mut(slot % CHUNK)
    }

    /// A free slot (a freed one first), holding nothing yet.
    fn take_free(&mut self) -> u32 {
        if let Some(slot) = self.free.pop() {
            return slot;
        }
        if self.len % CHUNK == 0 {
            self.chunks.push(Box::new([const { None }; CHUNK]));
        }
        self.len += 1;
        u32::try_from(self.len - 1).expect("fewer than 2^32 waiters")
    }
}

impl Room {
    fn lock(&self) -> MutexGuard<'_, Slots> {
        // Every change is made in one step: a panic elsewhere leaves the slots whole.
        self.waiters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.relay.notify_one();
    }
}

impl Signal {
    pub fn new() -> Signal {
        Signal {
            rooms: Mutex::new(Vec::new()),
        }
    }

    fn rooms(&self) -> MutexGuard<'_, Vec<Arc<Room>>> {
        self.rooms.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes every registered waiter: those of the current runtime (or of none) and
    /// lone ones directly, each other runtime's through its relay task.
    pub fn notify_waiters(&self) {
        let rooms = self.rooms();
        if rooms.is_empty() {
            return;
        }
        let here = Handle::try_current().ok().map(|h| h.id());
        for room in rooms.iter() {
            if !room.relayed || room.runtime == here {
                room.lock().wake_all();
                continue;
            }
            let waiters = room.lock();
            if waiters.live <= DIRECT_AT_MOST {
                waiters.wake_all();
            } else {
                drop(waiters);
                // A permit is kept if the relay is busy: no change is lost.
                room.relay.notify_one();
            }
        }
    }

    /// Registers `waiter` in the room of its runtime until [`Signal::unregister`]: it
    /// is woken by every later [`Signal::notify_waiters`].
    pub fn register(&self, waiter: &Arc<Waiter>) -> Key {
        let runtime = waiter.runtime;
        let mut rooms = self.rooms();
        let room = match rooms.iter().find(|r| r.runtime == runtime) {
            Some(room) => Arc::clone(room),
            None => {
                // A room no stream is registered in any more (of a runtime that shut
                // down, or went idle) goes, with its relay.
                rooms.retain(|r| {
                    let keep = r.lock().live > 0;
                    if !keep {
                        r.close();
                    }
                    keep
                });
                let handle = Handle::try_current()
                    .ok()
                    .filter(|h| Some(h.id()) == runtime);
                let room = new_room(runtime, handle.as_ref());
                rooms.push(Arc::clone(&room));
                room
            }
        };
        let mut slots = room.lock();
        slots.live += 1;
        let slot = slots.take_free();
        *slots.get_mut(slot as usize).expect("a slot just made") = Some(Arc::clone(waiter));
        Key(slot)
    }

    /// Ends what [`Signal::register`] began for `waiter`. (Its room stays while it is
    /// registered: only rooms with none are dropped.)
    pub fn unregister(&self, waiter: &Waiter, key: Key) {
        let rooms = self.rooms();
        let Some(room) = rooms.iter().find(|r| r.runtime == waiter.runtime) else {
            return;
        };
        let mut slots = room.lock();
        if let Some(slot) = slots.get_mut(key.0 as usize) {
            if slot.take().is_some() {
                slots.live -= 1;
                slots.free.push(key.0);
            }
        }
    }
}

/// A room for the waiters of `runtime`, with its relay task on `handle` (without one,
/// its waiters are always woken directly).
fn new_room(runtime: Option<runtime::Id>, handle: Option<&Handle>) -> Arc<Room> {
    let room = Arc::new(Room {
        runtime,
        relayed: handle.is_some(),
        waiters: Mutex::new(Slots::default()),
        relay: Notify::new(),
        closed: AtomicBool::new(false),
    });
    if let Some(handle) = handle {
        let room = Arc::clone(&room);
        handle.spawn(async move {
            loop {
                room.relay.notified().await;
                if room.closed.load(Ordering::Acquire) {
                    break;
                }
                room.lock().wake_all();
            }
        });
    }
    room
}

impl Drop for Signal {
    fn drop(&mut self) {
        let rooms = self.rooms.get_mut().unwrap_or_else(PoisonError::into_inner);
        for room in rooms.iter() {
            room.close();
        }
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

    struct Flag(AtomicBool);

    impl futures_util::task::ArcWake for Flag {
        fn wake_by_ref(this: &Arc<Self>) {
            this.0.store(true, Ordering::Release);
        }
    }

    /// A waiter registered with `signal` here, waiting with a waker that sets a flag.
    fn waiting(signal: &Signal) -> (Arc<Flag>, Arc<Waiter>, Key) {
        let waiter = Arc::new(Waiter::new());
        let key = signal.register(&waiter);
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        waiter.register(&futures_util::task::waker(Arc::clone(&flag)));
        (flag, waiter, key)
    }

    fn set(flag: &Flag) -> bool {
        flag.0.load(Ordering::Acquire)
    }

    /// Registers `n` waiters on a runtime of another thread, says so on `ready`, then
    /// either drives that runtime until they are woken (`drive`) or blocks without it
    /// for `hold`, and reports which were woken.
    fn on_another_runtime(
        signal: &Arc<Signal>,
        n: usize,
        drive: bool,
        ready: std::sync::mpsc::Sender<()>,
        hold: std::sync::mpsc::Receiver<()>,
    ) -> std::thread::JoinHandle<Vec<bool>> {
        let signal = Arc::clone(signal);
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let flags: Vec<_> = (0..n).map(|_| waiting(&signal).0).collect();
                ready.send(()).unwrap();
                if drive {
                    let all = async {
                        while !flags.iter().all(|f| set(f)) {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                    };
                    let _ = tokio::time::timeout(Duration::from_secs(5), all).await;
                } else {
                    hold.recv().unwrap();
                }
                flags.iter().map(|f| set(f)).collect()
            })
        })
    }

    #[tokio::test]
    async fn waiters_of_this_runtime_another_and_none_are_all_woken() {
        let signal = Arc::new(Signal::new());
        let (outside, _, _) = std::thread::spawn({
            let signal = Arc::clone(&signal);
            move || waiting(&signal)
        })
        .join()
        .unwrap();
        let (ready, other) = std::sync::mpsc::channel();
        let (_hold, held) = std::sync::mpsc::channel();
        // Two there: woken through that runtime's relay task.
        let there = on_another_runtime(&signal, 2, true, ready, held);
        other.recv().unwrap();
        let (here, _, _) = waiting(&signal);
        signal.notify_waiters();
        assert!(set(&here), "this runtime's waiter is woken directly");
        assert!(set(&outside), "so is the one outside any runtime");
        assert_eq!(there.join().unwrap(), [true, true], "the other runtime's");
    }

    #[tokio::test]
    async fn a_lone_waiter_of_another_runtime_is_woken_directly() {
        let signal = Arc::new(Signal::new());
        let (ready, other) = std::sync::mpsc::channel();
        let (hold, held) = std::sync::mpsc::channel();
        // That runtime is not driven until the end: no relay task could run there.
        let there = on_another_runtime(&signal, 1, false, ready, held);
        other.recv().unwrap();
        signal.notify_waiters();
        hold.send(()).unwrap();
        assert_eq!(there.join().unwrap(), [true]);
    }

    #[tokio::test]
    async fn unregistered_waiters_are_not_woken_and_slots_are_reused() {
        let signal = Signal::new();
        let (gone, waiter, key) = waiting(&signal);
        let (stays, _, _) = waiting(&signal);
        signal.unregister(&waiter, key);
        let (_, other, again) = waiting(&signal);
        assert_eq!(again, key, "a freed slot is reused");
        signal.unregister(&other, again);
        signal.notify_waiters();
        assert!(!set(&gone) && set(&stays));
    }

    #[tokio::test]
    async fn waiters_over_several_chunks_are_all_woken() {
        let signal = Signal::new();
        let all: Vec<_> = (0..2 * CHUNK + 1).map(|_| waiting(&signal)).collect();
        let (_, waiter, key) = &all[CHUNK];
        signal.unregister(waiter, *key);
        signal.notify_waiters();
        for (i, (flag, _, _)) in all.iter().enumerate() {
            assert_eq!(set(flag), i != CHUNK, "waiter {i}");
        }
    }

    #[tokio::test]
    async fn a_dropped_signals_relay_task_ends() {
        let signal = Signal::new();
        let (_, waiter, key) = waiting(&signal);
        signal.unregister(&waiter, key);
        let room = Arc::clone(&signal.rooms()[0]);
        let tasks = || {
            tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks()
        };
        assert_eq!(tasks(), 1, "one relay task");
        drop(signal);
        assert!(room.closed.load(Ordering::Acquire));
        tokio::time::timeout(Duration::from_secs(5), async {
            while tasks() > 0 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the relay task ends with its signal");
    }
}
