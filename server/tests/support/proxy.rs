//! A TCP proxy for chaos: it sits between a client (a browser, say) and a server on
//! `127.0.0.1:0`, forwards bytes both ways, and on the test's command cuts every
//! connection it holds, refuses new ones, or goes silent (forwards nothing, closes
//! nothing) as a dead network path behind a NAT would.

use super::within;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the proxy does with the bytes and connections it gets.
#[derive(Debug, Clone, Copy, Default)]
struct Control {
    /// Close each new connection as soon as it is accepted.
    refuse: bool,
    /// Forward nothing, in either direction, on any connection; close nothing either.
    silent: bool,
    /// Moves on at each [`Proxy::cut`]; a connection accepted before the move closes.
    cuts: u64,
}

/// A running proxy; dropping it stops accepting and closes every connection.
pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    control: watch::Sender<Control>,
    /// Connections closed on arrival by [`Proxy::refuse`].
    refused: Arc<AtomicU64>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// A proxy on `127.0.0.1:0` to `upstream`, forwarding.
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = within("binding the proxy", TcpListener::bind("127.0.0.1:0"))
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let (control, _) = watch::channel(Control::default());
        let rx = control.subscribe();
        let refused = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&refused);
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if rx.borrow().refuse {
                    drop(client);
                    counted.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                tokio::spawn(connection(client, upstream, rx.clone()));
            }
        });
        Proxy {
            addr,
            control,
            refused,
            accept,
        }
    }

    /// Closes every connection the proxy holds now, as a network failure would; new
    /// ones are served as before (unless [`Proxy::refuse`] says otherwise).
    pub fn cut(&self) {
        self.control.send_modify(|c| c.cuts += 1);
    }

    /// Whether new connections are closed as soon as they are accepted.
    pub fn refuse(&self, on: bool) {
        self.control.send_modify(|c| c.refuse = on);
    }

    /// How many connections [`Proxy::refuse`] has closed on arrival.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Whether the proxy forwards nothing (on every connection, old and new) while
    /// keeping every connection open. Bytes read before or during the silence are
    /// delivered when it ends.
    pub fn silence(&self, on: bool) {
        self.control.send_modify(|c| c.silent = on);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.control.send_modify(|c| {
            c.refuse = true;
            c.cuts += 1;
        });
    }
}

/// Serves one client until either side closes, or a cut.
async fn connection(client: TcpStream, upstream: SocketAddr, rx: watch::Receiver<Control>) {
    let mut cuts = rx.clone();
    let born = cuts.borrow().cuts;
    let forward = async move {
        wait_while_silent(&mut rx.clone()).await;
        let Ok(server) = TcpStream::connect(upstream).await else {
            return;
        };
        let (client_read, client_write) = client.into_split();
        let (server_read, server_write) = server.into_split();
        // Either direction ending ends both: a browser never half-closes a connection.
        tokio::select! {
            () = pump(client_read, server_write, rx.clone()) => {}
            () = pump(server_read, client_write, rx) => {}
        }
    };
    tokio::select! {
        // Dropping the sockets closes both sides.
        _ = cuts.wait_for(|c| c.cuts != born) => {}
        () = forward => {}
    }
}

/// Copies `from` to `to` until either fails or `from` ends, holding bytes while silent.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut rx: watch::Receiver<Control>) {
    let mut buf = vec![0; 16 * 1024];
    loop {
        wait_while_silent(&mut rx).await;
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        wait_while_silent(&mut rx).await;
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

async fn wait_while_silent(rx: &mut watch::Receiver<Control>) {
    // The sender lives as long as the proxy, and the proxy outlives its connections'
    // use; should it be gone, there is nothing left to wait for.
    let _ = rx.wait_for(|c| !c.silent).await;
}
