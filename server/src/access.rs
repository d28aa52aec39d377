//! What a stream's access allows: until when (the token's `exp`), and whether its
//! session (`sid`) was revoked.
//!
//! [`Revocations`] keeps, per session, a cancel handle of each open stream opened with
//! it, and the sessions revoked until their tokens expire (a token of a revoked session
//! is refused: `401`). Revoking a session trips every handle: each stream's body sees it
//! at its next poll (the handle wakes it) and ends with `end` `{"reason":"revoked"}`.
//! With Redis the store relays a revocation to every instance
//! (`crate::store::Store::revoke`), which calls [`Revocations::revoke`] there too.

use futures_util::task::AtomicWaker;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::Context;
use tokio::time::Instant;

/// One stream's cancel handle.
#[derive(Default)]
pub struct Cancel {
    tripped: AtomicBool,
    waker: AtomicWaker,
}

impl Cancel {
    /// Whether the session was revoked; registers `cx` to be woken when it is.
    pub fn poll_tripped(&self, cx: &mut Context<'_>) -> bool {
        if self.tripped.load(Ordering::Acquire) {
            return true;
        }
        self.waker.register(cx.waker());
        self.tripped.load(Ordering::Acquire)
    }

    fn trip(&self) {
        self.tripped.store(true, Ordering::Release);
        self.waker.wake();
    }
}

/// The limits of one stream opened with a token: its `exp` and its session.
pub struct Access {
    /// When the token expires: the stream ends then (`expired`).
    pub until: Instant,
    /// The session's cancel handle, if the token has a `sid`.
    pub cancel: Option<Arc<Cancel>>,
}

#[derive(Default)]
struct Inner {
    /// Open streams per session.
    streams: HashMap<String, Vec<Weak<Cancel>>>,
    /// Revoked sessions, until the UNIX second their tokens expire.
    revoked: HashMap<String, u64>,
}

/// Sessions: their open streams and those revoked.
#[derive(Default)]
pub struct Revocations {
    inner: Mutex<Inner>,
}

impl Revocations {
    pub fn new() -> Arc<Revocations> {
        Arc::new(Revocations::default())
    }

    /// Whether `sid` was revoked (and its tokens have not expired yet).
    pub fn is_revoked(&self, sid: &str, now_secs: u64) -> bool {
        let inner = self.lock();
        inner.revoked.get(sid).is_some_and(|&exp| exp >= now_secs)
    }

    /// A cancel handle for a stream of `sid`, tripped when it is revoked.
    pub fn watch(&self, sid: &str) -> Arc<Cancel> {
        let cancel = Arc::new(Cancel::default());
        let mut inner = self.lock();
        let list = inner.streams.entry(sid.to_owned()).or_default();
        list.retain(|w| w.strong_count() > 0);
        list.push(Arc::downgrade(&cancel));
        // Sessions whose streams have all gone are dropped now and then.
        if inner.streams.len() % 1024 == 0 {
            inner
                .streams
                .retain(|_, l| l.iter().any(|w| w.strong_count() > 0));
        }
        cancel
    }

    /// Revokes `sid` until `exp_secs`: every open stream of it ends, and its tokens are
    /// refused until then. Returns how many streams of it were open here.
    pub fn revoke(&self, sid: &str, exp_secs: u64, now_secs: u64) -> u64 {
        let mut inner = self.lock();
        inner.revoked.retain(|_, &mut exp| exp >= now_secs);
        let until = inner.revoked.entry(sid.to_owned()).or_insert(exp_secs);
        *until = (*until).max(exp_secs);
        let streams = inner.streams.remove(sid).unwrap_or_default();
        drop(inner);
        let mut ended = 0;
        for cancel in streams.iter().filter_map(Weak::upgrade) {
            cancel.trip();
            ended += 1;
        }
        ended
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::task::noop_waker_ref;

    #[test]
    fn revoking_trips_the_sessions_open_streams_only_and_refuses_it_until_exp() {
        let r = Revocations::new();
        let a1 = r.watch("a");
        let a2 = r.watch("a");
        let b = r.watch("b");
        let gone = r.watch("a");
        drop(gone);
        let mut cx = Context::from_waker(noop_waker_ref());
        assert!(!a1.poll_tripped(&mut cx));
        assert_eq!(r.revoke("a", 100, 50), 2, "the two open streams of a");
        assert!(a1.poll_tripped(&mut cx) && a2.poll_tripped(&mut cx));
        assert!(!b.poll_tripped(&mut cx));
        assert!(r.is_revoked("a", 100));
        assert!(!r.is_revoked("a", 101), "not past its tokens' exp");
        assert!(!r.is_revoked("b", 60));
        assert_eq!(r.revoke("a", 90, 50), 0);
        assert!(
            r.is_revoked("a", 100),
            "a later, shorter revoke keeps the longer"
        );
    }
}
