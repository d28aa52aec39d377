//! What a stream's access allows: until when (the token's `exp`), and whether its
//! session (`sid`) was revoked.
//!
//! [`Revocations`] keeps, per session, a cancel handle of each open stream opened with
//! it, the last second any of its tokens seen here is accepted (its `exp` and the
//! leeway), and the sessions revoked until their tokens expire (a token of a revoked
//! session is refused: `401`). Revoking a session trips every handle: each stream's
//! body sees it at its next poll (the handle wakes it) and ends with `end`
//! `{"reason":"revoked"}`.
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
    /// Per session, the last UNIX second at which a token of it seen here is accepted:
    /// how long a revocation must last to refuse every one of them.
    accepted_until: HashMap<String, u64>,
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

    /// A valid token of `sid`, accepted until the UNIX second `accepted_until` (its
    /// `exp` and the leeway), was presented: whether `sid` is revoked. Either way the
    /// session's horizon is remembered: a later revocation lasts until then, and a
    /// revocation that holds now is extended to it, so this token is refused for as
    /// long as it would otherwise be accepted.
    pub fn presented(&self, sid: &str, accepted_until: u64, now_secs: u64) -> bool {
        let mut inner = self.lock();
        match inner.accepted_until.get_mut(sid) {
            Some(until) => *until = (*until).max(accepted_until),
            None => {
                // Sessions whose tokens have all expired are dropped now and then.
                if inner.accepted_until.len() % 1024 == 1023 {
                    inner.accepted_until.retain(|_, &mut u| u >= now_secs);
                }
                inner.accepted_until.insert(sid.to_owned(), accepted_until);
            }
        }
        match inner.revoked.get_mut(sid) {
            Some(until) if *until >= now_secs => {
                *until = (*until).max(accepted_until);
                true
            }
            _ => false,
        }
    }

    /// Whether `sid` was revoked (and its tokens have not expired yet).
    pub fn is_revoked(&self, sid: &str, now_secs: u64) -> bool {
        let inner = self.lock();
        inner.revoked.get(sid).is_some_and(|&exp| exp >= now_secs)
    }

    /// The last UNIX second at which a token of `sid` seen here is accepted, if one was
    /// seen and is still accepted at `now_secs`.
    pub fn accepted_until(&self, sid: &str, now_secs: u64) -> Option<u64> {
        let inner = self.lock();
        inner
            .accepted_until
            .get(sid)
            .copied()
            .filter(|&u| u >= now_secs)
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

    /// Revokes `sid` until `exp_secs`, or until the last second a token of it seen here
    /// is accepted if that is later: every open stream of it ends, and its tokens are
    /// refused until then. Returns how many streams of it were open here.
    pub fn revoke(&self, sid: &str, exp_secs: u64, now_secs: u64) -> u64 {
        let mut inner = self.lock();
        inner.revoked.retain(|_, &mut exp| exp >= now_secs);
        let known = inner.accepted_until.get(sid).copied().unwrap_or(0);
        let until = inner.revoked.entry(sid.to_owned()).or_insert(exp_secs);
        *until = (*until).max(exp_secs).max(known);
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

    #[test]
    fn a_revocation_lasts_as_long_as_the_sessions_tokens_are_accepted() {
        let r = Revocations::new();
        assert!(!r.presented("s", 120, 50), "not revoked yet");
        assert_eq!(r.accepted_until("s", 50), Some(120));
        assert_eq!(r.accepted_until("s", 121), None, "every token has expired");
        assert_eq!(r.accepted_until("t", 50), None, "never seen");
        // Revoked until a second sooner than the token seen here is accepted: here it
        // lasts until that token's, as it does on an instance that saw it (through Redis).
        r.revoke("s", 60, 50);
        assert!(
            r.presented("s", 120, 61),
            "refused past the revoker's figure"
        );
        assert!(r.is_revoked("s", 120));
        assert!(!r.is_revoked("s", 121), "and not past the token's");
        // A token of a revoked session seen first now: refused for as long as it would
        // be accepted.
        r.revoke("u", 70, 50);
        assert!(r.presented("u", 200, 55));
        assert!(r.is_revoked("u", 200) && !r.is_revoked("u", 201));
        // A revocation that has lapsed refuses nothing, and a token seen then does not
        // bring it back.
        assert!(!r.presented("s", 300, 130));
        assert!(!r.is_revoked("s", 131));
    }
}
