//! The library server in the test's own runtime: [`server::run`] (or
//! [`server::run_with_metrics`]) in a task, on `127.0.0.1:0`, shut down through a oneshot.

use super::http::{client, Endpoint};
use super::{no_page_dir, within, within_for, TIMEOUT};
use server::Config;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A [`Config`] for tests: no page directory, everything else as the defaults.
pub fn config() -> Config {
    Config {
        static_dir: no_page_dir(),
        ..Config::default()
    }
}

/// A server running [`server::run`] in a task of the test's runtime.
pub struct TestServer {
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub base: String,
    /// The address of `/metrics` when it is served on its own listener.
    pub metrics_addr: Option<SocketAddr>,
    /// Resolves the shutdown future given to `run`. Dropping it shuts the server down too.
    pub shutdown: Option<oneshot::Sender<()>>,
    pub handle: JoinHandle<std::io::Result<()>>,
    pub client: reqwest::Client,
    /// See [`Endpoint::limit`].
    limit: Duration,
}

/// Binds `127.0.0.1:0` and spawns `server::run` on it with `config`.
pub async fn spawn(config: Config) -> TestServer {
    start(config, false).await
}

/// [`spawn`], with `/metrics` on a listener of its own (also on `127.0.0.1:0`).
pub async fn spawn_with_metrics_listener(config: Config) -> TestServer {
    start(config, true).await
}

async fn bind() -> TcpListener {
    within("binding 127.0.0.1:0", TcpListener::bind("127.0.0.1:0"))
        .await
        .expect("bind 127.0.0.1:0")
}

async fn start(config: Config, separate_metrics: bool) -> TestServer {
    let listener = bind().await;
    let addr = listener.local_addr().expect("local_addr");
    let metrics = if separate_metrics {
        Some(bind().await)
    } else {
        None
    };
    let metrics_addr = metrics
        .as_ref()
        .map(|l| l.local_addr().expect("local_addr"));
    let (tx, rx) = oneshot::channel::<()>();
    let shutdown = async move {
        // A dropped sender shuts down as well, so a forgotten server does not linger.
        let _ = rx.await;
    };
    let handle = match metrics {
        None => tokio::spawn(server::run(listener, config, shutdown)),
        Some(metrics) => tokio::spawn(server::run_with_metrics(
            listener,
            Some(metrics),
            config,
            shutdown,
        )),
    };
    TestServer {
        addr,
        base: format!("http://{addr}"),
        metrics_addr,
        shutdown: Some(tx),
        handle,
        client: client(),
        limit: TIMEOUT,
    }
}

impl TestServer {
    /// The same server, with waits on it bounded by `limit` instead of [`TIMEOUT`]: for
    /// tests that load the machine, or wait for the server's own timeouts.
    pub fn with_limit(mut self, limit: Duration) -> TestServer {
        self.limit = limit;
        self
    }

    /// Resolves the shutdown future and waits for `run` to return, within `limit`.
    pub async fn stop_within(&mut self, limit: Duration) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        within_for(
            limit,
            "server::run to return after shutdown",
            &mut self.handle,
        )
        .await
        .expect("the server task panicked")
    }

    /// Shuts the server down; `run` must return `Ok` within [`Endpoint::limit`].
    pub async fn stop(mut self) {
        let limit = self.limit;
        self.stop_within(limit)
            .await
            .expect("server::run returns Ok");
    }
}

impl Endpoint for TestServer {
    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn base(&self) -> &str {
        &self.base
    }

    fn client(&self) -> &reqwest::Client {
        &self.client
    }

    fn limit(&self) -> Duration {
        self.limit
    }

    fn metrics_url(&self) -> String {
        match self.metrics_addr {
            Some(addr) => format!("http://{addr}{}", shared::paths::METRICS),
            None => self.url(shared::paths::METRICS),
        }
    }
}
