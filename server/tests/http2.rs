//! HTTPS: HTTP/2 and HTTP/1.1 by ALPN on one port, every route over HTTP/2, one stream
//! reset without touching its neighbours (fault injection, a stalled reader), shutdown
//! with `end` then `GOAWAY`, the rapid-reset flood, and bad input at the TLS layer.

mod support;

use std::time::Duration;
use support::binary::launch;
use support::tls::{spawn_tls, tls_config, H2End, TlsServer};
use support::{within, within_for, Endpoint as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

async fn server_with(f: impl FnOnce(&mut server::Config)) -> TlsServer {
    let (mut config, cert) = tls_config();
    f(&mut config);
    spawn_tls(config, cert).await
}

fn ids(frames: &[String]) -> Vec<u64> {
    frames
        .iter()
        .filter_map(|f| f.lines().find_map(|l| l.strip_prefix("id: ")))
        .map(|id| id.parse().unwrap())
        .collect()
}

#[tokio::test]
async fn alpn_offers_h2_and_http1_and_both_serve_the_counter() {
    let server = server_with(|_| {}).await;
    let mut h2 = server.h2().await;
    let mut res = h2.get("/api/counter?count=3&interval_ms=10").await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("content-type"), Some("text/event-stream"));
    assert_eq!(res.header("cache-control"), Some("no-cache, no-transform"));
    let (frames, end) = res.frames_to_end().await;
    assert_eq!(frames[0], "retry: 3000\n\n");
    assert_eq!(ids(&frames), [1, 2, 3]);
    assert_eq!(
        frames.last().unwrap(),
        "event: end\ndata: {\"reason\":\"complete\",\"last\":3}\n\n"
    );
    assert_eq!(end, H2End::Closed);

    let mut h1 = server.https1().await;
    h1.get("/api/counter?count=2&interval_ms=10", &[]).await;
    let head = h1.head().await;
    assert_eq!(head.status, 200);
    assert_eq!(h1.frame().await.unwrap(), "retry: 3000\n\n");
    assert!(h1.frame().await.unwrap().starts_with("id: 1\n"));
}

#[tokio::test]
async fn every_route_and_refusal_answers_over_http2() {
    let server = server_with(|c| {
        c.cors_origins = vec!["https://app.example".into()];
        c.publish_rate = 1;
    })
    .await;
    let mut h2 = server.h2().await;
    let get = |path: &str| path.to_owned();
    for (path, status) in [
        (get("/healthz"), 200),
        (get("/metrics"), 200),
        (get("/api/nope"), 404),
        (get("/api/counter?count=abc"), 400),
        (get("/api/shared?x=1"), 400),
        (get("/"), 404),
    ] {
        let mut res = h2.get(&path).await;
        assert_eq!(res.status, status, "{path}");
        let body = res.text().await;
        if path.starts_with("/api/") {
            assert!(body.starts_with("{\"error\":"), "{path}: {body}");
        }
    }
    // 204 for a resume past the end.
    let req = h2
        .request("GET", "/api/counter?count=3")
        .header("last-event-id", "3")
        .body(())
        .unwrap();
    assert_eq!(h2.send(req).await.status, 204);
    // 405 with Allow.
    let req = h2.request("DELETE", "/api/counter").body(()).unwrap();
    let res = h2.send(req).await;
    assert_eq!(
        (res.status.as_u16(), res.header("allow")),
        (405, Some("GET, OPTIONS"))
    );
    // CORS: an allowed origin is echoed, another refused.
    let req = h2
        .request("GET", "/api/counter?count=1&interval_ms=1")
        .header("origin", "https://app.example")
        .body(())
        .unwrap();
    let res = h2.send(req).await;
    assert_eq!(
        res.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    let req = h2
        .request("POST", "/api/shared/increment")
        .header("origin", "https://evil.example")
        .body(())
        .unwrap();
    assert_eq!(h2.send(req).await.status, 403);
    // The shared counter and its increment, with the same-origin `Origin` of HTTPS.
    let mut shared = h2.get("/api/shared").await;
    assert_eq!(shared.status, 200);
    assert!(shared.frame().await.unwrap().starts_with("retry: "));
    assert!(shared.frame().await.unwrap().starts_with("id: 0\n"));
    let origin = format!("https://localhost:{}", server.addr.port());
    for expected in [200, 200, 429] {
        let req = h2
            .request("POST", "/api/shared/increment")
            .header("origin", origin.as_str())
            .body(())
            .unwrap();
        let mut res = h2.send(req).await;
        let status = res.status;
        assert_eq!(status, expected, "{}", res.text().await);
        if expected == 429 {
            assert!(res.header("retry-after").is_some());
        }
    }
    assert!(shared.frame().await.unwrap().starts_with("id: 1\n"));
    assert!(shared.frame().await.unwrap().starts_with("id: 2\n"));
    // 413 from the declared length, without the body.
    let req = h2
        .request("POST", "/api/shared/increment")
        .header("content-length", "5000")
        .body(())
        .unwrap();
    let (response, _body) = h2.send.send_request(req, false).unwrap();
    let res = within("the 413", response).await.unwrap();
    assert_eq!(res.status(), 413);
}

#[tokio::test]
async fn many_streams_share_one_connection() {
    let server = server_with(|_| {}).await;
    let h2 = server.h2().await;
    let mut tasks = Vec::new();
    for _ in 0..60 {
        // Every task sends on the same connection.
        let mut send = h2.send.clone();
        let authority = format!("localhost:{}", server.addr.port());
        tasks.push(tokio::spawn(async move {
            send = within("room", send.ready()).await.unwrap();
            let req = http::Request::get(format!(
                "https://{authority}/api/counter?count=5&interval_ms=20"
            ))
            .body(())
            .unwrap();
            let (res, _) = send.send_request(req, true).unwrap();
            let res = within("head", res).await.unwrap();
            let mut body = res.into_body();
            let mut text = Vec::new();
            while let Some(data) = within("data", body.data()).await {
                let data = data.unwrap();
                let _ = body.flow_control().release_capacity(data.len());
                text.extend_from_slice(&data);
            }
            String::from_utf8(text).unwrap()
        }));
    }
    for t in tasks {
        let text = within_for(Duration::from_secs(10), "a stream", t)
            .await
            .unwrap();
        let frames: Vec<String> = text.split_inclusive("\n\n").map(str::to_owned).collect();
        assert_eq!(ids(&frames), [1, 2, 3, 4, 5]);
        assert!(text.ends_with("event: end\ndata: {\"reason\":\"complete\",\"last\":5}\n\n"));
    }
    assert!(!h2.driver.is_finished(), "one connection carried them all");
}

#[tokio::test]
async fn drop_after_resets_only_its_own_stream() {
    let server = server_with(|c| c.allow_fault_injection = true).await;
    let mut h2 = server.h2().await;
    let mut dropped = h2
        .get("/api/counter?count=10&interval_ms=20&drop_after=2")
        .await;
    let mut neighbour = h2.get("/api/counter?count=6&interval_ms=20").await;
    let (frames, end) = dropped.frames_to_end().await;
    assert_eq!(ids(&frames), [1, 2]);
    assert_eq!(
        end,
        H2End::Reset(Some(h2::Reason::INTERNAL_ERROR)),
        "RST_STREAM"
    );
    let (frames, end) = neighbour.frames_to_end().await;
    assert_eq!(
        ids(&frames),
        [1, 2, 3, 4, 5, 6],
        "the neighbour runs to its end"
    );
    assert_eq!(end, H2End::Closed);
    assert!(!h2.driver.is_finished(), "the connection lives on");
}

#[tokio::test]
async fn a_stream_whose_reader_stops_is_reset_as_stalled_and_its_neighbour_goes_on() {
    let server = server_with(|c| c.stall_timeout = Duration::from_secs(1)).await;
    // A small window per stream, a large one for the connection: the stalled stream
    // closes its own window only.
    let mut builder = h2::client::Builder::new();
    builder
        .initial_window_size(8 * 1024)
        .initial_connection_window_size(8 * 1024 * 1024);
    let mut h2 = server.h2_with(builder).await;
    let stalled = h2.get("/api/counter?count=1000000&interval_ms=1").await;
    // Never read: its window fills and stays shut.
    let mut stalled_body = stalled.into_body();
    let mut neighbour = h2.get("/api/counter?count=150&interval_ms=10").await;
    let (frames, end) = neighbour.frames_to_end().await;
    assert_eq!(ids(&frames), (1..=150).collect::<Vec<_>>());
    assert_eq!(end, H2End::Closed);
    // Now the stalled stream: what it was sent, then a reset.
    let mut got = 0usize;
    let reset = within_for(
        Duration::from_secs(10),
        "the stalled stream's reset",
        async {
            loop {
                match stalled_body.data().await {
                    Some(Ok(d)) => got += d.len(),
                    Some(Err(e)) => return e.reason(),
                    None => return None,
                }
            }
        },
    )
    .await;
    assert_eq!(reset, Some(h2::Reason::CANCEL), "RST_STREAM(CANCEL)");
    assert!(
        got <= 8 * 1024 + 64,
        "only what the window allowed: {got} bytes"
    );
    let mut m = h2.get("/metrics").await;
    let text = m.text().await;
    assert!(
        text.contains("sse_disconnects_total{reason=\"stalled\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn shutdown_ends_every_stream_then_goaway() {
    let mut server = server_with(|_| {}).await;
    let mut h2 = server.h2().await;
    let mut a = h2.get("/api/counter?count=100&interval_ms=60000").await;
    let mut b = h2.get("/api/shared").await;
    assert!(a.frame().await.unwrap().starts_with("retry:"));
    assert!(b.frame().await.unwrap().starts_with("retry:"));
    assert!(b.frame().await.unwrap().starts_with("id: 0"));
    server.stop_within(Duration::from_secs(6)).await.unwrap();
    for res in [&mut a, &mut b] {
        let (frames, end) = res.frames_to_end().await;
        let last = frames.last().expect("frames before the end");
        assert!(
            last.contains("event: end\ndata: {\"reason\":\"shutdown\""),
            "{frames:?}"
        );
        assert_eq!(end, H2End::Closed);
    }
    let closed = within("the connection to close", h2.driver).await.unwrap();
    assert!(
        closed.is_ok(),
        "closed with GOAWAY, not an error: {closed:?}"
    );
}

#[tokio::test]
async fn a_rapid_reset_flood_is_cut_off_and_others_keep_streaming() {
    let server = server_with(|_| {}).await;
    let mut good = server.h2().await;
    let mut steady = good.get("/api/counter?count=1000&interval_ms=10").await;
    assert!(steady.frame().await.unwrap().starts_with("retry:"));

    let mut flood = server.h2().await;
    let mut opened = 0u32;
    let cut_off = within_for(Duration::from_secs(20), "the flood to be cut off", async {
        for _ in 0..5000 {
            let Ok(send) = flood.send.clone().ready().await else {
                return true;
            };
            flood.send = send;
            let req = flood
                .request("GET", "/api/counter?count=5&interval_ms=1000")
                .body(())
                .unwrap();
            let Ok((_response, mut body)) = flood.send.send_request(req, false) else {
                return true;
            };
            body.send_reset(h2::Reason::CANCEL);
            opened += 1;
            tokio::task::yield_now().await;
        }
        false
    })
    .await;
    assert!(cut_off, "5000 resets went unpunished");
    assert!(opened < 5000, "{opened}");
    // The server sent GOAWAY(ENHANCE_YOUR_CALM) and closed: the client sees one or
    // the other first, depending on whether it was writing.
    let ended = within("the flood connection to end", flood.driver)
        .await
        .unwrap();
    let err = ended.expect_err("the server cut the flood off");
    assert!(
        err.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM) || err.is_io(),
        "{err:?}"
    );
    // The steady stream kept ticking, and a new connection works.
    let mut last = 0;
    for _ in 0..5 {
        let f = steady.frame().await.unwrap();
        let id: u64 = f
            .lines()
            .find_map(|l| l.strip_prefix("id: "))
            .unwrap()
            .parse()
            .unwrap();
        assert!(id > last);
        last = id;
    }
    let mut again = server.h2().await;
    let mut res = again.get("/api/counter?count=2&interval_ms=5").await;
    let (frames, end) = res.frames_to_end().await;
    assert_eq!((ids(&frames), end), (vec![1, 2], H2End::Closed));
    // Nothing of the flood stays open: only the steady stream is.
    support::poll_until(
        Duration::from_secs(5),
        "only the steady stream open",
        async || {
            let health = good.get("/healthz").await.text().await;
            if health.contains("\"active_streams\":1,") {
                Ok(())
            } else {
                Err(health)
            }
        },
    )
    .await;
}

#[tokio::test]
async fn plain_http_or_a_silent_client_on_the_tls_port_is_closed_in_time() {
    let server = server_with(|c| c.header_read_timeout = Duration::from_secs(1)).await;
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = within(
        "the server to close a plain-HTTP connection",
        tcp.read_to_end(&mut buf),
    )
    .await;
    // Closed: an end of stream, or a reset when the server closed with the request
    // unread; anything else is an error of the test's own socket.
    if let Err(e) = read {
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
    }
    // What came back before the close is a TLS alert record (content type 21) or
    // nothing: never an HTTP answer.
    assert!(
        buf.is_empty() || buf[0] == 21,
        "not a TLS alert: {:?}",
        String::from_utf8_lossy(&buf)
    );

    let mut silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let start = std::time::Instant::now();
    let mut buf = [0u8; 16];
    let n = within_for(
        Duration::from_secs(5),
        "a silent client to be dropped",
        silent.read(&mut buf),
    )
    .await
    .unwrap_or(0);
    assert_eq!(n, 0, "closed without a byte");
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn bad_certificate_files_stop_the_start_with_exit_2_naming_the_file() {
    let dir = support::TempDir::new("tls-bad");
    let missing = dir.path().join("missing.pem");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let (source, _) = server::serve::tls::self_signed().unwrap();
    let (other, _) = server::serve::tls::self_signed().unwrap();
    let (server::serve::TlsSource::Pem { cert, .. }, server::serve::TlsSource::Pem { key, .. }) =
        (source, other)
    else {
        unreachable!()
    };
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_file, cert).unwrap();
    std::fs::write(&key_file, key).unwrap();
    for (cert, key, names) in [
        (&missing, &key_file, "missing.pem"),
        (&garbage, &key_file, "garbage.pem"),
        (&cert_file, &garbage, "garbage.pem"),
        (&cert_file, &key_file, "key.pem"),
    ] {
        let out = launch()
            .arg("--tls-cert")
            .arg(cert)
            .arg("--tls-key")
            .arg(key)
            .output()
            .await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{names}: {stderr}");
        assert!(stderr.contains(names), "{names} named in: {stderr}");
        assert!(out.stdout.is_empty(), "no `listening on`");
    }
}

#[tokio::test]
async fn the_binary_serves_https_with_a_self_signed_certificate() {
    let bin = launch().arg("--tls-self-signed").start().await;
    assert!(bin.base().starts_with("https://"), "{}", bin.base());
    // stderr is read as it comes: wait for the lines rather than read it at once.
    bin.wait_for_log("SHA-256 fingerprint").await;
    bin.wait_for_log("development only").await;
}

#[tokio::test]
async fn a_publish_and_its_delivery_and_a_refusal_over_http2() {
    const SECRET: &[u8] = b"an http2 test secret, thirty-two bytes or more";
    let mut server = server_with(|c| {
        c.auth = Some(std::sync::Arc::new(
            server::auth::Verifier::from_secret(SECRET, server::auth::Rules::default()).unwrap(),
        ));
        c.public_channels = vec![shared::Pattern::any()];
    })
    .await;
    let mut h2 = server.h2().await;
    let events = format!("{}?channel=a&channel=b", shared::paths::EVENTS);
    let mut sse = h2.get(&events).await;
    assert_eq!(sse.status, 200);
    assert_eq!(sse.header("content-type"), Some("text/event-stream"));
    assert_eq!(sse.header("cache-control"), Some("no-cache, no-transform"));
    assert_eq!(sse.frame().await, Ok("retry: 3000\n\n".to_owned()));
    support::poll_until(
        Duration::from_secs(5),
        "the h2 subscription to be counted",
        async || {
            let text = h2.get("/metrics").await.text().await;
            if text.contains("\nsse_channel_subscriptions 2\n") {
                Ok(())
            } else {
                Err(text
                    .lines()
                    .find(|l| l.starts_with("sse_channel_subscriptions "))
                    .map(str::to_owned))
            }
        },
    )
    .await;
    let publish = |h2: &support::tls::H2Conn, token: Option<&str>, channel: &str| {
        let mut req = h2
            .request("POST", shared::paths::PUBLISH)
            .header("content-type", "application/json");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let body = serde_json::json!({"channel": channel, "data": {"over": "h2"}, "type": "note"});
        (req.body(()).unwrap(), bytes::Bytes::from(body.to_string()))
    };
    let token = support::tokens::sign(SECRET, &support::tokens::claims("ann", 600, &["b"], &[]));
    let (req, body) = publish(&h2, Some(&token), "b");
    let mut res = h2.send_body(req, body).await;
    let text = res.text().await;
    assert_eq!(res.status, 200, "{text}");
    let id = serde_json::from_str::<shared::channels::Published>(&text)
        .expect("the publish answer")
        .id;
    let frame = sse.frame().await.expect("the event over h2");
    // One field a line, in whatever order the encoder writes them.
    let field = |name: &str| {
        let prefix = format!("{name}: ");
        let mut all = frame
            .lines()
            .filter_map(|l| l.strip_prefix(prefix.as_str()));
        let value = all.next().map(str::to_owned);
        assert!(all.next().is_none(), "{name} twice in {frame:?}");
        value
    };
    assert_eq!(field("id"), Some(id.clone()), "{frame:?}");
    assert_eq!(field("event").as_deref(), Some("note"), "{frame:?}");
    let data: serde_json::Value =
        serde_json::from_str(&field("data").expect("a data line")).unwrap();
    assert_eq!(data["channel"], "b");
    assert_eq!(data["data"], serde_json::json!({"over": "h2"}));
    // Refusals over h2: no token, then a token that does not grant the channel.
    let (req, body) = publish(&h2, None, "b");
    let mut res = h2.send_body(req, body).await;
    let text = res.text().await;
    assert_eq!(res.status, 401, "{text}");
    assert_eq!(res.header("www-authenticate"), Some("Bearer"));
    assert_eq!(res.header("content-type"), Some("application/json"));
    serde_json::from_str::<shared::ErrorBody>(&text).expect("the JSON error body");
    let (req, body) = publish(&h2, Some(&token), "a");
    let mut res = h2.send_body(req, body).await;
    let text = res.text().await;
    assert_eq!(res.status, 403, "{text}");
    serde_json::from_str::<shared::ErrorBody>(&text).expect("the JSON error body");
    // The stream lives on, on the same connection, and got nothing of the refusals.
    let (req, body) = publish(&h2, Some(&token), "b");
    let mut res = h2.send_body(req, body).await;
    let text = res.text().await;
    assert_eq!(res.status, 200, "{text}");
    let next = serde_json::from_str::<shared::channels::Published>(&text)
        .unwrap()
        .id;
    let frame = sse.frame().await.expect("the second event over h2");
    assert!(
        frame.lines().any(|l| l == format!("id: {next}")),
        "{frame:?}"
    );
    assert!(!h2.driver.is_finished(), "one connection carried it all");
    server.stop_within(Duration::from_secs(10)).await.unwrap();
}
