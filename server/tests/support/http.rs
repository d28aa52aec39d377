//! Requests over reqwest with finite answers, and [`Endpoint`]: what a test can ask of
//! any running server, the in-process one and the binary alike, whatever its scheme.

use super::prom::Scrape;
use super::raw::{Answer, Dial, RawConn, STALLED_RECV_BUFFER};
use super::sse::Sse;
use super::{within_for, Metrics, TIMEOUT};
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use std::net::SocketAddr;
use std::time::Duration;

/// A reqwest client that ignores proxy settings of the environment.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("build reqwest client")
}

/// A running server as a test talks to it. Implementors name where it listens and the
/// client to use (so an HTTPS server comes with a client that trusts it); every request
/// below follows from that, each await bounded by [`Endpoint::limit`].
pub trait Endpoint {
    /// The socket the server listens on.
    fn addr(&self) -> SocketAddr;

    /// `scheme://host:port`, no trailing slash.
    fn base(&self) -> &str;

    /// The client requests go through.
    fn client(&self) -> &reqwest::Client;

    /// How long any one wait on this server may take: a network step, or a condition
    /// polled with [`Endpoint::wait_for_metric`].
    fn limit(&self) -> Duration {
        TIMEOUT
    }

    /// Where `/metrics` answers.
    fn metrics_url(&self) -> String {
        self.url(shared::paths::METRICS)
    }

    /// The absolute URL of `path_and_query`, which starts with `/`.
    fn url(&self, path_and_query: &str) -> String {
        format!("{}{path_and_query}", self.base())
    }

    /// The value a same-origin page sends as `Origin`, and the `Host` reqwest sends.
    fn origin(&self) -> String {
        self.base().to_owned()
    }

    /// `GET path`; the response head only.
    async fn get(&self, path: &str) -> reqwest::Response {
        self.get_with(path, &[]).await
    }

    /// `GET path` with extra headers; the response head only.
    async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut req = self.client().get(self.url(path));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        within_for(
            self.limit(),
            &format!("response head of GET {path}"),
            req.send(),
        )
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// Sends a request and reads its whole (finite) body.
    async fn send(&self, req: reqwest::RequestBuilder, what: &str) -> Reply {
        send_within(self.limit(), req, what).await
    }

    /// `GET path` and its whole (finite) body.
    async fn fetch(&self, path: &str) -> Reply {
        self.send(self.client().get(self.url(path)), &format!("GET {path}"))
            .await
    }

    /// `POST path` with an empty body, and the whole answer.
    async fn post(&self, path: &str) -> Reply {
        self.send(self.client().post(self.url(path)), &format!("POST {path}"))
            .await
    }

    /// Opens an SSE stream with this server's client.
    async fn sse(&self, path: &str, headers: &[(&str, &str)]) -> Sse {
        Sse::new(self.get_with(path, headers).await).with_limit(self.limit())
    }

    /// A raw TCP connection to the server.
    async fn raw(&self) -> RawConn {
        let dial = Dial {
            limit: self.limit(),
            ..Dial::default()
        };
        RawConn::dial(self.addr(), dial).await
    }

    /// A client that asks for `target` and then never reads: with a tiny receive window
    /// ([`STALLED_RECV_BUFFER`]), the server's socket fills within moments.
    async fn stalled_client(&self, target: &str) -> RawConn {
        let dial = Dial {
            limit: self.limit(),
            recv_buffer: Some(STALLED_RECV_BUFFER),
        };
        let mut conn = RawConn::dial(self.addr(), dial).await;
        conn.get(target, &[]).await;
        conn
    }

    /// Writes `request` as it is on a fresh connection and reads the answer as text.
    async fn exchange(&self, request: &[u8]) -> Answer {
        self.raw().await.exchange(request).await
    }

    /// The server's Prometheus exposition, read with its client and limit.
    fn prom(&self) -> Scrape {
        Scrape::new(self.client().clone(), self.metrics_url(), self.limit())
    }

    /// `/metrics`, parsed.
    async fn metrics(&self) -> Metrics {
        self.prom().metrics().await
    }

    /// One sample of `/metrics`, e.g. `sse_disconnects_total{reason="client"}`.
    async fn metric(&self, key: &str) -> f64 {
        self.prom().metric(key).await
    }

    /// Polls `/metrics` until `key` equals `value`; fails after [`Endpoint::limit`].
    async fn wait_for_metric(&self, key: &str, value: f64) {
        self.prom().wait_for(key, value).await
    }
}

/// Sends `req` and reads its whole (finite) answer, each step within `limit`.
pub async fn send_within(limit: Duration, req: reqwest::RequestBuilder, what: &str) -> Reply {
    let res = within_for(limit, &format!("response head of {what}"), req.send())
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    Reply::read_within(limit, res, what).await
}

/// A finished response: status, headers and the whole body.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    /// Reads the rest of `res` within [`TIMEOUT`].
    pub async fn read(res: reqwest::Response, what: &str) -> Reply {
        Reply::read_within(TIMEOUT, res, what).await
    }

    pub async fn read_within(limit: Duration, res: reqwest::Response, what: &str) -> Reply {
        let status = res.status();
        let headers = res.headers().clone();
        let body = within_for(limit, &format!("body of {what}"), res.bytes())
            .await
            .unwrap_or_else(|e| panic!("body of {what}: {e}"))
            .to_vec();
        Reply {
            status,
            headers,
            body,
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ascii header"))
    }

    /// The body as the JSON error shape, checking the content type on the way.
    pub fn error_body(&self) -> shared::ErrorBody {
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "error answers are JSON: {}",
            self.text()
        );
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("error body {:?} is not an ErrorBody: {e}", self.text()))
    }

    /// The body as JSON of any shape.
    pub fn json(&self) -> serde_json::Value {
        self.json_as()
    }

    /// The body as `T`, e.g. a payload type of `shared`.
    pub fn json_as<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body {:?} is not the JSON expected: {e}", self.text()))
    }
}
