//! HTTPS for the tests: the library server with a self-signed certificate, a TLS
//! client that trusts it (ALPN chosen by the test), and an HTTP/2 client (the `h2`
//! crate) with a reader of SSE frames per stream.

use super::raw::RawConn;
use super::{no_page_dir, within, within_for, TIMEOUT};
use bytes::Bytes;
use h2::client::SendRequest;
use h2::RecvStream;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use server::serve::TlsSource;
use server::Config;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// A [`Config`] with a fresh self-signed certificate, and that certificate's PEM.
pub fn tls_config() -> (Config, String) {
    let (source, _fingerprint) = server::serve::tls::self_signed().expect("self-signed");
    let TlsSource::Pem { cert, .. } = &source else {
        unreachable!("self_signed gives PEM text")
    };
    let cert = cert.clone();
    (
        Config {
            static_dir: no_page_dir(),
            tls: Some(source),
            ..Config::default()
        },
        cert,
    )
}

/// The library server over TLS in a task of the test's runtime.
pub struct TlsServer {
    pub addr: SocketAddr,
    /// The certificate clients must trust (PEM).
    pub cert: String,
    pub shutdown: Option<oneshot::Sender<()>>,
    pub handle: JoinHandle<std::io::Result<()>>,
}

/// Spawns `server::run` with `config` (which must carry TLS) on `127.0.0.1:0`.
pub async fn spawn_tls(config: Config, cert: String) -> TlsServer {
    let listener = within("binding", tokio::net::TcpListener::bind("127.0.0.1:0"))
        .await
        .expect("bind");
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(server::run(listener, config, async move {
        let _ = rx.await;
    }));
    TlsServer {
        addr,
        cert,
        shutdown: Some(tx),
        handle,
    }
}

impl TlsServer {
    /// A TLS connection offering exactly `alpn`.
    pub async fn tls(&self, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
        tls_connect(self.addr, &self.cert, alpn).await
    }

    /// An HTTP/1.1 client over TLS (ALPN `http/1.1`).
    pub async fn https1(&self) -> RawConn<TlsStream<TcpStream>> {
        let tls = self.tls(&[b"http/1.1"]).await;
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
        RawConn::over(tls, self.addr.to_string(), TIMEOUT)
    }

    /// An HTTP/2 connection with default client settings.
    pub async fn h2(&self) -> H2Conn {
        self.h2_with(h2::client::Builder::new()).await
    }

    /// An HTTP/2 connection made with `builder`.
    pub async fn h2_with(&self, builder: h2::client::Builder) -> H2Conn {
        let tls = self.tls(&[b"h2"]).await;
        assert_eq!(
            tls.get_ref().1.alpn_protocol(),
            Some(&b"h2"[..]),
            "ALPN chose h2"
        );
        let (send, conn) = within("the HTTP/2 handshake", builder.handshake(tls))
            .await
            .expect("HTTP/2 handshake");
        let driver = tokio::spawn(conn);
        H2Conn {
            send,
            driver,
            authority: format!("localhost:{}", self.addr.port()),
        }
    }

    /// Resolves the shutdown future and waits for `run` to return within `limit`.
    pub async fn stop_within(&mut self, limit: Duration) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        within_for(limit, "server::run to return", &mut self.handle)
            .await
            .expect("the server task panicked")
    }
}

/// A TLS connection to `addr` that trusts `cert_pem` for `localhost`.
pub async fn tls_connect(addr: SocketAddr, cert_pem: &str, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("certificate PEM");
    roots.add(cert).expect("add the certificate");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = TlsConnector::from(Arc::new(config));
    let tcp = within("connecting", TcpStream::connect(addr))
        .await
        .expect("connect");
    let name = ServerName::try_from("localhost").unwrap();
    within("the TLS handshake", connector.connect(name, tcp))
        .await
        .expect("TLS handshake")
}

/// One HTTP/2 connection of the test.
pub struct H2Conn {
    pub send: SendRequest<Bytes>,
    /// The connection's own future; it ends when the connection does.
    pub driver: JoinHandle<Result<(), h2::Error>>,
    authority: String,
}

impl H2Conn {
    /// A request to `path_and_query` on this server.
    pub fn request(&self, method: &str, path_and_query: &str) -> http::request::Builder {
        http::Request::builder()
            .method(method)
            .uri(format!("https://{}{path_and_query}", self.authority))
    }

    /// Sends `req` with no body; its response.
    pub async fn send(&mut self, req: http::Request<()>) -> H2Response {
        let ready = within("room for a new stream", self.send.clone().ready())
            .await
            .expect("connection usable");
        self.send = ready;
        let (response, _body) = self.send.send_request(req, true).expect("send request");
        let res = within("the response head", response)
            .await
            .expect("response head");
        H2Response::new(res)
    }

    /// Sends `req` with `body` as its whole body; its response.
    pub async fn send_body(&mut self, req: http::Request<()>, body: Bytes) -> H2Response {
        let ready = within("room for a new stream", self.send.clone().ready())
            .await
            .expect("connection usable");
        self.send = ready;
        let (response, mut stream) = self.send.send_request(req, false).expect("send request");
        stream.send_data(body, true).expect("send the body");
        let res = within("the response head", response)
            .await
            .expect("response head");
        H2Response::new(res)
    }

    /// `GET path_and_query`.
    pub async fn get(&mut self, path_and_query: &str) -> H2Response {
        let req = self.request("GET", path_and_query).body(()).unwrap();
        self.send(req).await
    }
}

/// An HTTP/2 response: the head, and a reader of its body.
pub struct H2Response {
    pub status: http::StatusCode,
    pub headers: http::HeaderMap,
    body: RecvStream,
    buf: Vec<u8>,
}

/// How a stream's body ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum H2End {
    /// END_STREAM.
    Closed,
    /// `RST_STREAM` with this reason, or the connection went (`None`).
    Reset(Option<h2::Reason>),
}

impl H2Response {
    fn new(res: http::Response<RecvStream>) -> Self {
        let (parts, body) = res.into_parts();
        H2Response {
            status: parts.status,
            headers: parts.headers,
            body,
            buf: Vec::new(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// More body bytes, releasing the window they used.
    async fn more(&mut self) -> Result<bool, H2End> {
        match within("HTTP/2 body data", self.body.data()).await {
            None => Ok(false),
            Some(Ok(data)) => {
                let _ = self.body.flow_control().release_capacity(data.len());
                self.buf.extend_from_slice(&data);
                Ok(true)
            }
            Some(Err(err)) => Err(H2End::Reset(err.reason())),
        }
    }

    /// The next SSE frame (up to its blank line), or how the body ended.
    pub async fn frame(&mut self) -> Result<String, H2End> {
        loop {
            if let Some(at) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let frame: Vec<u8> = self.buf.drain(..at + 2).collect();
                return Ok(String::from_utf8(frame).expect("UTF-8 frames"));
            }
            if !self.more().await? {
                return Err(H2End::Closed);
            }
        }
    }

    /// The whole body, as text.
    pub async fn text(&mut self) -> String {
        while self.more().await.expect("a complete body") {}
        String::from_utf8(std::mem::take(&mut self.buf)).expect("UTF-8 body")
    }

    /// Frames up to the end of the body, and how it ended.
    pub async fn frames_to_end(&mut self) -> (Vec<String>, H2End) {
        let mut frames = Vec::new();
        loop {
            match self.frame().await {
                Ok(f) => frames.push(f),
                Err(end) => return (frames, end),
            }
        }
    }

    /// The body's stream, for a test that reads it its own way (or not at all).
    pub fn into_body(self) -> RecvStream {
        self.body
    }
}
