//! Operations over real sockets: `/metrics`, `/healthz`, CORS on the API, and graceful
//! shutdown ending every open stream.

mod support;

use reqwest::{Method, StatusCode};
use server::Config;
use shared::EndReason;
use std::time::Duration;
use support::{config, spawn, within, BodyEnd, Endpoint as _, Finish};

const REASONS: [&str; 4] = ["complete", "shutdown", "client", "fault"];

fn disconnects(reason: &str) -> String {
    format!("sse_disconnects_total{{reason=\"{reason}\"}}")
}

#[tokio::test]
async fn metrics_are_prometheus_text_from_zero() {
    let server = spawn(config()).await;
    let reply = server.fetch("/metrics").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = reply.text();
    for line in [
        "# TYPE sse_active_streams gauge",
        "# TYPE sse_streams_total counter",
        "# TYPE sse_events_sent_total counter",
        "# TYPE sse_disconnects_total counter",
        "# TYPE sse_store_failovers_total counter",
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} in:\n{text}");
    }
    let metrics = support::Metrics::parse(&text);
    assert_eq!(metrics.get("sse_active_streams"), 0.0);
    assert_eq!(metrics.get("sse_streams_total"), 0.0);
    assert_eq!(metrics.get("sse_events_sent_total"), 0.0);
    assert_eq!(metrics.get("sse_store_failovers_total"), 0.0);
    for reason in REASONS {
        assert_eq!(metrics.get(&disconnects(reason)), 0.0, "{reason}");
    }
}

#[tokio::test]
async fn metrics_follow_the_streams() {
    let server = spawn(config()).await;

    // A stream that completes: three ticks and `end` are four events.
    let mut sse = server.sse("/api/counter?count=3&interval_ms=20", &[]).await;
    sse.until_end().await;
    server.wait_for_metric(&disconnects("complete"), 1.0).await;
    let metrics = server.metrics().await;
    assert_eq!(metrics.get("sse_streams_total"), 1.0);
    assert_eq!(metrics.get("sse_events_sent_total"), 4.0);
    assert_eq!(metrics.get("sse_active_streams"), 0.0);

    // A resumed stream counts only what it sends: ticks 3 and 4 and `end`.
    let mut sse = server
        .sse(
            "/api/counter?count=4&interval_ms=20",
            &[("Last-Event-ID", "2")],
        )
        .await;
    sse.until_end().await;
    server.wait_for_metric(&disconnects("complete"), 2.0).await;
    assert_eq!(server.metric("sse_events_sent_total").await, 7.0);

    // An open stream is active until its client leaves.
    let open = server
        .sse("/api/counter?count=3&interval_ms=60000", &[])
        .await;
    let metrics = server.metrics().await;
    assert_eq!(metrics.get("sse_active_streams"), 1.0);
    assert_eq!(metrics.get("sse_streams_total"), 3.0);
    drop(open);
    server.wait_for_metric(&disconnects("client"), 1.0).await;
    let metrics = server.metrics().await;
    assert_eq!(metrics.get("sse_active_streams"), 0.0);
    assert_eq!(metrics.get(&disconnects("shutdown")), 0.0);
    assert_eq!(metrics.get(&disconnects("fault")), 0.0);
}

#[tokio::test]
async fn healthz_is_ok_json() {
    let server = spawn(Config {
        max_streams: 7,
        ..config()
    })
    .await;
    let reply = server.fetch("/healthz").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let json = reply.json();
    assert_eq!(json["status"], "ok", "{json}");
    assert_eq!(json["active_streams"], 0, "{json}");
    assert_eq!(json["max_streams"], 7, "{json}");
    assert_eq!(
        json["shared"], "ok",
        "the embedded store is always there: {json}"
    );

    let _open = server
        .sse("/api/counter?count=3&interval_ms=60000", &[])
        .await;
    let json = server.fetch("/healthz").await.json();
    assert_eq!(json["active_streams"], 1, "{json}");
}

#[tokio::test]
async fn without_cors_origins_only_same_origin_is_served() {
    let server = spawn(config()).await;
    let path = "/api/counter?count=1&interval_ms=1";

    let reply = server
        .send(
            server
                .client
                .get(server.url(path))
                .header("Origin", "http://evil.example"),
            "a cross-origin GET",
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.text());
    assert_eq!(reply.error_body().error, "origin not allowed");
    assert_eq!(reply.header("access-control-allow-origin"), None);

    let res = server.get(path).await;
    assert_eq!(res.status(), StatusCode::OK, "no Origin: same-origin");
    assert!(res.headers().get("access-control-allow-origin").is_none());

    // A page of this very server: `Origin` equals `http://` + `Host`.
    let origin = server.origin();
    let res = server.get_with(path, &[("Origin", &origin)]).await;
    assert_eq!(res.status(), StatusCode::OK, "same origin {origin}");
    assert!(res.headers().get("access-control-allow-origin").is_none());

    // Another port of the same host is another origin.
    let other = format!("http://127.0.0.1:{}", server.addr.port() ^ 1);
    let reply = server
        .send(
            server.client.get(server.url(path)).header("Origin", &other),
            "another port",
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{other}");

    // A preflight from elsewhere is refused as well.
    let reply = server
        .send(
            server
                .client
                .request(Method::OPTIONS, server.url("/api/counter"))
                .header("Origin", "http://evil.example")
                .header("Access-Control-Request-Method", "GET"),
            "a cross-origin preflight",
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.header("access-control-allow-origin"), None);
    assert_eq!(server.metric("sse_streams_total").await, 2.0);
}

/// The allowed origin of `configured_origins_get_cors_headers`, echoed back.
fn assert_allows_app(allow_origin: Option<&str>) {
    assert_eq!(allow_origin, Some("http://app.example"));
}

#[tokio::test]
async fn configured_origins_get_cors_headers() {
    let server = spawn(Config {
        cors_origins: vec!["http://app.example".into()],
        ..config()
    })
    .await;
    let path = "/api/counter?count=2&interval_ms=20";

    let mut sse = server.sse(path, &[("Origin", "http://app.example")]).await;
    assert_eq!(sse.status, StatusCode::OK);
    assert_allows_app(sse.header("access-control-allow-origin"));
    assert_eq!(sse.header("vary"), Some("Origin"));
    assert_eq!(sse.header("content-type"), Some("text/event-stream"));
    let (ticks, end, _) = sse.until_end().await;
    assert_eq!((ticks.len(), end.last), (2, 2));

    // A resume past the end from that origin: the 204 is readable there too.
    let reply = server
        .send(
            server
                .client
                .get(server.url(path))
                .header("Origin", "http://app.example")
                .header("Last-Event-ID", "2"),
            "an allowed cross-origin resume past the end",
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_allows_app(reply.header("access-control-allow-origin"));

    // An error answered to that origin is readable there too.
    let reply = server
        .send(
            server
                .client
                .get(server.url("/api/counter?count=abc"))
                .header("Origin", "http://app.example"),
            "an allowed cross-origin bad request",
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_allows_app(reply.header("access-control-allow-origin"));

    // The preflight a browser sends before a GET with `Last-Event-ID`.
    let reply = server
        .send(
            server
                .client
                .request(Method::OPTIONS, server.url("/api/counter"))
                .header("Origin", "http://app.example")
                .header("Access-Control-Request-Method", "GET")
                .header("Access-Control-Request-Headers", "last-event-id"),
            "an allowed preflight",
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert!(reply.body.is_empty());
    assert_allows_app(reply.header("access-control-allow-origin"));
    assert_eq!(reply.header("vary"), Some("Origin"));
    let methods = reply
        .header("access-control-allow-methods")
        .expect("allow-methods");
    assert!(methods.split(',').any(|m| m.trim() == "GET"), "{methods}");
    let headers = reply
        .header("access-control-allow-headers")
        .expect("allow-headers")
        .to_ascii_lowercase();
    assert!(
        headers.split(',').any(|h| h.trim() == "last-event-id"),
        "{headers}"
    );

    // Other origins are still refused, for the GET and for the preflight.
    let reply = server
        .send(
            server
                .client
                .get(server.url(path))
                .header("Origin", "http://evil.example"),
            "a refused GET",
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.header("access-control-allow-origin"), None);
    let reply = server
        .send(
            server
                .client
                .request(Method::OPTIONS, server.url("/api/counter"))
                .header("Origin", "http://evil.example")
                .header("Access-Control-Request-Method", "GET"),
            "a refused preflight",
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.header("access-control-allow-origin"), None);
    assert_eq!(reply.header("access-control-allow-methods"), None);

    // Without Origin nothing is added.
    let res = server.get(path).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers().get("access-control-allow-origin").is_none());
}

/// Shutdown sends every open stream `end` with reason `shutdown` and the last id it was
/// sent, ends each body cleanly, and `run` returns well before the grace period.
#[tokio::test]
async fn shutdown_ends_every_open_stream() {
    // A long grace: `run` returning within the test's short timeout proves the streams
    // ended by themselves, not that the grace ran out on them.
    let mut server = spawn(Config {
        shutdown_grace: Duration::from_secs(60),
        ..config()
    })
    .await;
    let idle = server
        .sse("/api/counter?count=5&interval_ms=60000", &[])
        .await;
    let resumed = server
        .sse(
            "/api/counter?count=9&interval_ms=60000",
            &[("Last-Event-ID", "4")],
        )
        .await;
    let mut ticking = server
        .sse("/api/counter?count=100000&interval_ms=20", &[])
        .await;
    assert_eq!(ticking.tick().await.num, 1);
    assert_eq!(ticking.tick().await.num, 2);
    let mut raw = server.raw().await;
    raw.get("/api/counter?count=5&interval_ms=60000", &[]).await;
    assert_eq!(raw.head().await.status, 200);
    assert_eq!(raw.frame().await, Ok("retry: 3000\n\n".to_owned()));
    // An idle keep-alive connection in reqwest's pool must not hold shutdown either.
    assert_eq!(server.fetch("/healthz").await.status, StatusCode::OK);
    assert_eq!(server.metric("sse_active_streams").await, 4.0);

    server
        .shutdown
        .take()
        .expect("sender")
        .send(())
        .expect("run is waiting");

    for (mut sse, last) in [(idle, Some(0)), (resumed, Some(4)), (ticking, None)] {
        let (ticks, end, finish) = sse.until_end().await;
        assert_eq!(end.reason, EndReason::Shutdown);
        // For the ticking stream, `last` is whatever tick came just before the end.
        let expected = last.unwrap_or_else(|| ticks.last().map_or(2, |t| t.num));
        assert_eq!(end.last, expected, "ticks before end: {ticks:?}");
        assert_eq!(finish, Finish::Closed, "the body ends cleanly after `end`");
    }
    // Before its `end`, a new reconnection delay within the configured spread.
    let retry = raw.frame().await.expect("a retry frame before the end");
    let ms: u64 = retry
        .strip_prefix("retry: ")
        .and_then(|r| r.strip_suffix("\n\n"))
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("a retry field, got {retry:?}"));
    assert!(
        (3000..=13_000).contains(&ms),
        "retry {ms} within 3000..=13000"
    );
    assert_eq!(
        raw.frame().await,
        Ok("event: end\ndata: {\"reason\":\"shutdown\",\"last\":0}\n\n".to_owned())
    );
    assert_eq!(
        raw.frame().await,
        Err(BodyEnd::Terminated),
        "then the terminating chunk"
    );
    assert!(
        raw.closed().await,
        "and the server closes the connection cleanly"
    );

    let result = server.stop_within(Duration::from_secs(10)).await;
    assert!(result.is_ok(), "run returns Ok: {result:?}");
    let refused = within(
        "connecting after shutdown",
        tokio::net::TcpStream::connect(server.addr),
    )
    .await;
    assert!(refused.is_err(), "the listener is closed after shutdown");
}

/// Shutdown with no stream open returns at once.
#[tokio::test]
async fn shutdown_with_nothing_open_returns_ok() {
    let mut server = spawn(Config {
        shutdown_grace: Duration::from_secs(60),
        ..config()
    })
    .await;
    assert_eq!(server.fetch("/healthz").await.status, StatusCode::OK);
    let result = server.stop_within(Duration::from_secs(10)).await;
    assert!(result.is_ok(), "{result:?}");
}
