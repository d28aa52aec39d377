//! Accepting connections: the accept loop, the socket options every connection gets,
//! and the [`Handshake`] seam where a protocol layer (TLS) slots in before HTTP.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

/// Which HTTP version to speak on a connection once its handshake is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
}

/// What happens between accepting a TCP connection and speaking HTTP on it.
pub trait Handshake: Clone + Send + Sync + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// Makes the stream HTTP is spoken over, and says which HTTP.
    fn handshake(
        &self,
        tcp: TcpStream,
    ) -> impl Future<Output = io::Result<(Self::Io, Protocol)>> + Send;
}

/// Plain TCP: HTTP/1.1 straight away.
#[derive(Debug, Clone, Copy)]
pub struct Plain;

impl Handshake for Plain {
    type Io = TcpStream;

    async fn handshake(&self, tcp: TcpStream) -> io::Result<(TcpStream, Protocol)> {
        Ok((tcp, Protocol::Http1))
    }
}

/// Socket options every accepted connection gets.
#[derive(Debug, Clone, Copy)]
pub struct SocketOptions {
    /// See [`crate::Config::send_buffer`].
    pub send_buffer: Option<usize>,
}

impl SocketOptions {
    fn apply(&self, tcp: &TcpStream, peer: SocketAddr) {
        // Each event is one small write that should leave at once, not wait for an ACK.
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(%err, %peer, "set_nodelay failed");
        }
        if let Some(size) = self.send_buffer {
            if let Err(err) = socket2::SockRef::from(tcp).set_send_buffer_size(size) {
                tracing::debug!(%err, %peer, "setting the send buffer failed");
            }
        }
    }
}

/// Accepts connections until `stop` resolves, handing each, tuned, to `serve`.
pub async fn accept_until(
    listener: &TcpListener,
    options: SocketOptions,
    stop: impl Future<Output = ()>,
    mut serve: impl FnMut(TcpStream, SocketAddr),
) {
    tokio::pin!(stop);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    // Out of file descriptors and the like: keep serving the open streams
                    // and try again shortly rather than spin or exit.
                    tracing::warn!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => return,
        };
        options.apply(&tcp, peer);
        serve(tcp, peer);
    }
}
