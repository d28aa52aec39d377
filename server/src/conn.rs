//! What a connection (or, under HTTP/2, one stream of it) tells the routes and the
//! stream permits about itself: who the peer is, and whether it stalled.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Shared between a connection's IO and the streams it carries (through the request's
/// extensions), so a stream closed for stalling is counted as such.
#[derive(Debug, Default)]
pub struct ConnInfo {
    stalled: AtomicBool,
    /// The client's address as the socket sees it.
    pub peer: Option<std::net::SocketAddr>,
    /// For one HTTP/2 stream: its connection, which stalls as a whole too.
    parent: Option<Arc<ConnInfo>>,
}

impl ConnInfo {
    pub fn new(peer: std::net::SocketAddr) -> Self {
        ConnInfo {
            stalled: AtomicBool::new(false),
            peer: Some(peer),
            parent: None,
        }
    }

    /// The info of one HTTP/2 stream of the connection `parent`: it stalls alone (its
    /// window stayed shut) or with its connection.
    pub fn for_stream(parent: &Arc<ConnInfo>) -> Self {
        ConnInfo {
            stalled: AtomicBool::new(false),
            peer: parent.peer,
            parent: Some(Arc::clone(parent)),
        }
    }

    pub fn mark_stalled(&self) {
        self.stalled.store(true, Ordering::Release);
    }

    pub fn stalled(&self) -> bool {
        self.stalled.load(Ordering::Acquire) || self.parent.as_ref().is_some_and(|p| p.stalled())
    }
}
