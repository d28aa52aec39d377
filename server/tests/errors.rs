//! Bad input to `GET /api/counter` and requests no route takes: 400 JSON naming the
//! parameter, 405 with `Allow`, 404 JSON under `/api/`; never a 5xx.

mod support;

use proptest::prelude::*;
use reqwest::{Method, StatusCode};
use server::Config;
use support::{config, raw_get, spawn, Endpoint as _, Reply, TestServer};

/// Checks a 400 that names `param`, and returns its body.
fn assert_bad_request(reply: &Reply, param: &str, what: &str) -> shared::ErrorBody {
    assert_eq!(
        reply.status,
        StatusCode::BAD_REQUEST,
        "{what}: {}",
        reply.text()
    );
    let body = reply.error_body();
    assert_eq!(body.param.as_deref(), Some(param), "{what}: {body:?}");
    assert!(!body.error.is_empty(), "{what}: {body:?}");
    body
}

async fn get_query(server: &TestServer, query: &str) -> Reply {
    server.fetch(&format!("/api/counter?{query}")).await
}

#[tokio::test]
async fn each_kind_of_bad_query_is_a_400_naming_the_parameter() {
    let server = spawn(config()).await;
    let cases = [
        // Not a number.
        ("count=abc", "count"),
        ("interval_ms=fast", "interval_ms"),
        ("count=", "count"),
        ("count", "count"),
        ("count=-1", "count"),
        ("count=%2B5", "count"),
        ("count=5.0", "count"),
        ("count=1e3", "count"),
        ("count=0x10", "count"),
        ("count=%20", "count"),
        ("count=%FF", "count"),
        ("last_event_id=abc", "last_event_id"),
        ("last_event_id=-1", "last_event_id"),
        // Out of range, just past each bound.
        ("count=0", "count"),
        ("count=1000001", "count"),
        ("interval_ms=0", "interval_ms"),
        ("interval_ms=3600001", "interval_ms"),
        // Overflow.
        ("count=18446744073709551616", "count"),
        ("count=99999999999999999999999999999999999999", "count"),
        ("interval_ms=18446744073709551616", "interval_ms"),
        ("last_event_id=18446744073709551616", "last_event_id"),
        (
            "last_event_id=999999999999999999999999999999",
            "last_event_id",
        ),
        // Repeated and unknown.
        ("count=1&count=2", "count"),
        ("count=1&interval_ms=5&interval_ms=5", "interval_ms"),
        ("last_event_id=1&last_event_id=1", "last_event_id"),
        ("cuont=5", "cuont"),
        ("count=5&Count=6", "Count"),
        // Fault injection is off on this server, whatever the value.
        ("drop_after=2", "drop_after"),
        ("count=5&drop_after=1", "drop_after"),
    ];
    for (query, param) in cases {
        let reply = get_query(&server, query).await;
        let body = assert_bad_request(&reply, param, query);
        assert_eq!(
            reply.header("cache-control"),
            Some("no-store"),
            "{query}: errors are not cached"
        );
        if query == "count=abc" {
            assert_eq!(
                serde_json::to_string(&body).unwrap(),
                r#"{"error":"count must be a whole number from 1 to 1000000","param":"count","value":"abc"}"#
            );
        }
        if query.starts_with("drop_after") {
            assert!(body.error.contains("not enabled"), "{body:?}");
        }
    }
    // None of them opened a stream.
    assert_eq!(server.metric("sse_streams_total").await, 0.0);
}

/// The bounds themselves are accepted (the stream answers 200).
#[tokio::test]
async fn the_bounds_themselves_are_accepted() {
    let server = spawn(config()).await;
    for query in [
        "count=1&interval_ms=1",
        "count=1000000&interval_ms=3600000",
        "count=1&last_event_id=0&interval_ms=1",
        "count=1&last_event_id=&interval_ms=1",
    ] {
        let res = server.get(&format!("/api/counter?{query}")).await;
        assert_eq!(res.status(), StatusCode::OK, "{query}");
    }
}

#[tokio::test]
async fn a_bad_last_event_id_header_is_a_400() {
    let server = spawn(config()).await;
    for value in [
        "abc",
        "-1",
        "+1",
        " 1x",
        "1.5",
        "18446744073709551616",
        "99999999999999999999999999999999",
    ] {
        let reply = server
            .send(
                server
                    .client
                    .get(server.url("/api/counter?count=5&interval_ms=20"))
                    .header("Last-Event-ID", value),
                &format!("Last-Event-ID: {value}"),
            )
            .await;
        assert_bad_request(&reply, "Last-Event-ID", value);
    }

    // Bytes that are not UTF-8, which reqwest would not send.
    let (head, body) = raw_get(
        server.addr,
        "/api/counter?count=5&interval_ms=20",
        &[("Last-Event-ID", b"\xff\xfe1")],
    )
    .await;
    assert_eq!(head.status, 400, "{}", head.raw);
    assert_eq!(head.header("content-type"), Some("application/json"));
    let body: shared::ErrorBody = serde_json::from_slice(&body).expect("JSON error body");
    assert_eq!(body.param.as_deref(), Some("Last-Event-ID"), "{body:?}");

    // Given twice.
    let (head, body) = raw_get(
        server.addr,
        "/api/counter?count=5&interval_ms=20",
        &[("Last-Event-ID", b"1"), ("Last-Event-ID", b"2")],
    )
    .await;
    assert_eq!(head.status, 400, "{}", head.raw);
    let body: shared::ErrorBody = serde_json::from_slice(&body).expect("JSON error body");
    assert_eq!(body.param.as_deref(), Some("Last-Event-ID"), "{body:?}");

    assert_eq!(server.metric("sse_streams_total").await, 0.0);
}

/// A bad header is refused even when the query alone would be fine, and vice versa.
#[tokio::test]
async fn header_and_query_are_each_checked() {
    let server = spawn(config()).await;
    let reply = server
        .send(
            server
                .client
                .get(server.url("/api/counter?last_event_id=2"))
                .header("Last-Event-ID", "x"),
            "bad header, good query",
        )
        .await;
    assert_bad_request(&reply, "Last-Event-ID", "bad header, good query");
    let reply = server
        .send(
            server
                .client
                .get(server.url("/api/counter?last_event_id=x"))
                .header("Last-Event-ID", "2"),
            "good header, bad query",
        )
        .await;
    assert_bad_request(&reply, "last_event_id", "good header, bad query");
}

/// With fault injection allowed, `drop_after` is still checked like any number.
#[tokio::test]
async fn drop_after_is_validated_when_allowed() {
    let server = spawn(Config {
        allow_fault_injection: true,
        ..config()
    })
    .await;
    for query in [
        "drop_after=0",
        "drop_after=x",
        "drop_after=1000001",
        "drop_after=1&drop_after=1",
    ] {
        let reply = get_query(&server, query).await;
        assert_bad_request(&reply, "drop_after", query);
    }
}

#[tokio::test]
async fn wrong_methods_are_405_with_allow() {
    let server = spawn(config()).await;
    for method in [
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::HEAD,
    ] {
        let reply = server
            .send(
                server
                    .client
                    .request(method.clone(), server.url("/api/counter?count=1")),
                &format!("{method} /api/counter"),
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method}: {}",
            reply.text()
        );
        assert_eq!(reply.header("allow"), Some("GET, OPTIONS"), "{method}");
        if method != Method::HEAD {
            let body = reply.error_body();
            assert_eq!(body.error, "method not allowed");
        }
    }
    let reply = server
        .send(server.client.post(server.url("/metrics")), "POST /metrics")
        .await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.header("allow"), Some("GET"));
    reply.error_body();
    let reply = server
        .send(
            server.client.delete(server.url("/healthz")),
            "DELETE /healthz",
        )
        .await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.header("allow"), Some("GET"));
    reply.error_body();
    assert_eq!(server.metric("sse_streams_total").await, 0.0);
}

#[tokio::test]
async fn unknown_api_paths_are_404_json() {
    let server = spawn(config()).await;
    for path in [
        "/api",
        "/api/",
        "/api/nope",
        "/api/counter/extra",
        "/api/counters",
        "/api/v2/counter?count=1",
    ] {
        let reply = server.fetch(path).await;
        assert_eq!(
            reply.status,
            StatusCode::NOT_FOUND,
            "{path}: {}",
            reply.text()
        );
        let body = reply.error_body();
        assert_eq!(body.error, "not found", "{path}");
        // Whatever the method.
        let reply = server
            .send(
                server.client.post(server.url(path)),
                &format!("POST {path}"),
            )
            .await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "POST {path}");
        reply.error_body();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Whatever the value of a parameter or of `Last-Event-ID`, the answer is 200, 204
    /// or a 400 naming it: never a 5xx.
    #[test]
    fn any_value_gets_a_definite_answer(
        key in prop::sample::select(vec!["count", "interval_ms", "last_event_id", "drop_after", "x"]),
        value in prop::collection::vec(any::<u8>(), 0..24),
        header in prop::option::of("[ -~]{0,24}"),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let server = spawn(config()).await;
            let encoded: String = value.iter().map(|b| format!("%{b:02X}")).collect();
            // A short interval keeps a 200 harmless; the stream is dropped unread.
            let path = format!("/api/counter?{key}={encoded}");
            let mut req = server.client.get(server.url(&path));
            if let Some(h) = &header {
                req = req.header("Last-Event-ID", h.as_str());
            }
            let res = support::within("an answer", req.send()).await.expect("a response");
            let status = res.status();
            assert!(
                [StatusCode::OK, StatusCode::NO_CONTENT, StatusCode::BAD_REQUEST].contains(&status),
                "{path} {header:?}: {status}"
            );
            if status == StatusCode::BAD_REQUEST {
                let reply = Reply::read(res, &path).await;
                let body = reply.error_body();
                let param = body.param.expect("a 400 names its parameter");
                assert!(param == key || param == "Last-Event-ID", "{path} {header:?}: {param}");
            }
        });
    }
}
