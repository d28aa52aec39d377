//! Channels over real sockets with a conforming SSE parser: delivery to overlapping sets
//! of channels from several publishers, replay (header, query, `earliest`), `reset`,
//! every refusal of a publish and of a subscription, the counter on both routes,
//! heartbeats and shutdown, the stall timeout, `--max-streams`, the headers of
//! `/api/shared`, and the publish rate of an address.

mod support;

use eventsource_stream::Event;
use reqwest::StatusCode;
use serde_json::{json, Value};
use server::auth::{Rules, Verifier};
use server::Config;
use shared::channels::{ChannelEnd, ChannelReset, EventId, Published};
use shared::{events, EndReason, Pattern, ResetReason};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use support::tokens::{claims, now_secs, sign};
use support::{config, spawn, within, within_for, Endpoint as _, Finish, Sse, TestServer};

const SECRET: &[u8] = b"a test secret of at least thirty-two bytes";
const EVENTS: &str = shared::paths::EVENTS;
const PUBLISH: &str = shared::paths::PUBLISH;

fn verifier() -> Verifier {
    Verifier::from_secret(SECRET, Rules::default()).unwrap()
}

/// A token from `SECRET` for `sub` that may publish on `publish`.
fn token(sub: &str, publish: &[&str]) -> String {
    sign(SECRET, &claims(sub, 600, publish, &[]))
}

fn channels_config() -> Config {
    Config {
        auth: Some(Arc::new(verifier())),
        // Subscribing to private channels is tests/private.rs's.
        public_channels: vec![Pattern::any()],
        channel_publish_rate: 1_000_000,
        publish_rate: 1_000_000,
        ..config()
    }
}

/// `POST /api/publish` of `body` with `token`: status and body.
async fn post(server: &TestServer, token: Option<&str>, body: &Value) -> (StatusCode, String) {
    let mut req = server
        .client
        .post(server.url(PUBLISH))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let reply = server.send(req, "POST publish").await;
    (reply.status, reply.text())
}

/// Publishes `data` on `channel`, answered 200: the id.
async fn publish(server: &TestServer, token: &str, channel: &str, data: Value) -> String {
    let (status, body) = post(
        server,
        Some(token),
        &json!({"channel": channel, "data": data}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    serde_json::from_str::<Published>(&body)
        .expect("publish answer")
        .id
}

fn events_path(channels: &[&str]) -> String {
    let q: Vec<String> = channels.iter().map(|c| format!("channel={c}")).collect();
    format!("{EVENTS}?{}", q.join("&"))
}

/// The next event that is not a heartbeat.
async fn next(sse: &mut Sse) -> Event {
    sse.next_except(&[events::HEARTBEAT])
        .await
        .expect("an event, not the end of the body")
}

/// A channel event: (id, channel, data).
fn channel_event(event: &Event) -> (String, String, Value) {
    let v: Value = serde_json::from_str(&event.data).expect("JSON data");
    (
        event.id.clone(),
        v["channel"].as_str().expect("channel").to_owned(),
        v["data"].clone(),
    )
}

fn seq(id: &str) -> u64 {
    EventId::parse(id).expect("an id of ours").seq
}

#[tokio::test]
async fn twenty_subscribers_of_overlapping_channels_get_exactly_theirs_once_in_one_order() {
    let server = Arc::new(spawn(channels_config()).await);
    let all = ["c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7"];
    let mut readers = Vec::new();
    let mut wanted: Vec<BTreeSet<&str>> = Vec::new();
    for i in 0..20 {
        let set: Vec<&str> = (0..5).map(|k| all[(i + k * 3) % all.len()]).collect();
        let set: BTreeSet<&str> = set.into_iter().collect();
        let sse = server
            .sse(&events_path(&set.iter().copied().collect::<Vec<_>>()), &[])
            .await;
        assert_eq!(sse.status, StatusCode::OK);
        assert_eq!(sse.header("content-type"), Some("text/event-stream"));
        wanted.push(set);
        readers.push(sse);
    }
    // Every stream is open and joined: what is published now reaches all of them.
    server
        .wait_for_metric("sse_channel_subscriptions", 100.0)
        .await;
    let publishers: Vec<_> = (0..4)
        .map(|p| {
            let server = Arc::clone(&server);
            tokio::spawn(async move {
                let token = token(&format!("pub{p}"), &["*"]);
                let mut sent = Vec::new();
                for n in 0..125 {
                    let channel = all[(p * 7 + n) % all.len()];
                    let id = publish(&server, &token, channel, json!({"p": p, "n": n})).await;
                    sent.push((id, channel));
                }
                sent
            })
        })
        .collect();
    let mut published: BTreeMap<u64, &str> = BTreeMap::new();
    for p in publishers {
        for (id, channel) in within("a publisher", p).await.unwrap() {
            assert!(published.insert(seq(&id), channel).is_none(), "{id} twice");
        }
    }
    assert_eq!(published.len(), 500);
    let readers: Vec<_> = readers
        .into_iter()
        .zip(wanted)
        .map(|(mut sse, set)| {
            let expect: Vec<u64> = published
                .iter()
                .filter(|(_, c)| set.contains(*c))
                .map(|(s, _)| *s)
                .collect();
            tokio::spawn(async move {
                let mut got = Vec::new();
                while got.len() < expect.len() {
                    let (id, channel, _) = channel_event(&next(&mut sse).await);
                    assert!(set.contains(channel.as_str()), "{channel} is not listed");
                    got.push(seq(&id));
                }
                (got, expect)
            })
        })
        .collect();
    for r in readers {
        let (got, expect) = within_for(Duration::from_secs(30), "a subscriber", r)
            .await
            .unwrap();
        assert_eq!(
            got, expect,
            "its channels' events, once each, in the store's order"
        );
    }
    assert_eq!(server.metric("sse_channel_published_total").await, 500.0);
    assert_eq!(server.metric("sse_history_events").await, 500.0);
}

#[tokio::test]
async fn replay_by_header_by_query_and_from_the_earliest_then_live() {
    let server = spawn(channels_config()).await;
    let t = token("ann", &["rooms/*"]);
    let mut ids = Vec::new();
    for (i, ch) in ["rooms/a", "rooms/b", "rooms/a", "rooms/c", "rooms/b"]
        .iter()
        .enumerate()
    {
        ids.push(publish(&server, &t, ch, json!(i)).await);
    }
    let path = events_path(&["rooms/a", "rooms/b"]);
    let mut by_header = server.sse(&path, &[("Last-Event-ID", &ids[0])]).await;
    let mut by_query = server
        .sse(&format!("{path}&last_event_id={}", ids[1]), &[])
        .await;
    let mut both = server
        .sse(
            &format!("{path}&last_event_id={}", ids[0]),
            &[("Last-Event-ID", &ids[2])],
        )
        .await;
    let mut earliest = server
        .sse(&format!("{path}&last_event_id=earliest"), &[])
        .await;
    let ids_of = |evs: Vec<Event>| evs.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
    let mut read = Vec::new();
    for _ in 0..3 {
        read.push(next(&mut by_header).await);
    }
    assert_eq!(
        ids_of(read),
        [ids[1].clone(), ids[2].clone(), ids[4].clone()]
    );
    let mut read = Vec::new();
    for _ in 0..2 {
        read.push(next(&mut by_query).await);
    }
    assert_eq!(ids_of(read), [ids[2].clone(), ids[4].clone()]);
    assert_eq!(
        next(&mut both).await.id,
        ids[4],
        "the header wins over the query"
    );
    let mut read = Vec::new();
    for _ in 0..4 {
        read.push(next(&mut earliest).await);
    }
    assert_eq!(
        ids_of(read),
        [
            ids[0].clone(),
            ids[1].clone(),
            ids[2].clone(),
            ids[4].clone()
        ]
    );
    let live = publish(&server, &t, "rooms/b", json!("live")).await;
    for sse in [&mut by_header, &mut by_query, &mut both, &mut earliest] {
        let (id, channel, data) = channel_event(&next(sse).await);
        assert_eq!(
            (id.as_str(), channel.as_str(), data),
            (live.as_str(), "rooms/b", json!("live"))
        );
    }
}

#[tokio::test]
async fn an_event_carries_its_type_data_and_publisher_and_each_id_is_safe_and_unique() {
    let server = spawn(channels_config()).await;
    let mut sse = server.sse(&events_path(&["a"]), &[]).await;
    server
        .wait_for_metric("sse_channel_subscriptions", 1.0)
        .await;
    let t = token("ann", &["a"]);
    let body = json!({"channel": "a", "data": {"text": "<b>hi</b>\r\nthere", "n": [1, 2.5, null]}, "type": "message"});
    let (status, answer) = post(&server, Some(&t), &body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let id = serde_json::from_str::<Published>(&answer).unwrap().id;
    let event = next(&mut sse).await;
    assert_eq!(event.event, "message");
    assert_eq!(event.id, id, "the id the publisher was given");
    assert!(
        id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b)),
        "{id}"
    );
    let data: Value = serde_json::from_str(&event.data).unwrap();
    assert_eq!(data["channel"], "a");
    assert_eq!(data["data"], body["data"], "the published value, exactly");
    assert_eq!(data["from"], "ann", "the token's sub");
    assert!(data["sent_at_us"].as_u64().unwrap() > 0);
    let second = publish(&server, &t, "a", json!(1)).await;
    assert_ne!(second, id);
    assert!(seq(&second) > seq(&id));
}

#[tokio::test]
async fn reset_names_only_the_channels_that_lost_events_and_ahead_for_another_epoch() {
    let server = spawn(Config {
        history: 3,
        ..channels_config()
    })
    .await;
    let t = token("ann", &["*"]);
    let mut ids = Vec::new();
    for ch in ["a", "b", "b", "b"] {
        ids.push(publish(&server, &t, ch, json!(ch)).await);
    }
    // The history holds the three b's: a's only event (ids[0]) is gone.
    let path = events_path(&["a", "b"]);
    let mut sse = server.sse(&path, &[("Last-Event-ID", &ids[0])]).await;
    let first = next(&mut sse).await;
    assert_eq!(
        first.event, "message",
        "nothing of a or b after ids[0] is gone: {first:?}"
    );
    // Before ids[0]: a lost its event, b lost nothing.
    let (epoch, _) = ids[0].rsplit_once('-').unwrap();
    let before = format!("{epoch}-0");
    let mut sse = server.sse(&path, &[("Last-Event-ID", &before)]).await;
    let reset = next(&mut sse).await;
    assert_eq!(reset.event, events::RESET);
    assert_eq!(reset.id, before, "continue from the id the client had");
    let r: ChannelReset = serde_json::from_str(&reset.data).unwrap();
    assert_eq!(
        r,
        ChannelReset {
            reason: ResetReason::HistoryExceeded,
            channels: vec!["a".into()]
        }
    );
    for want in &ids[1..] {
        assert_eq!(&next(&mut sse).await.id, want, "then what remains");
    }
    // An id of another epoch (another store, or one that lost its data).
    let mut sse = server
        .sse(&path, &[("Last-Event-ID", "0123456789abcdef-2")])
        .await;
    let reset = next(&mut sse).await;
    let r: ChannelReset = serde_json::from_str(&reset.data).unwrap();
    assert_eq!(
        r,
        ChannelReset {
            reason: ResetReason::Ahead,
            channels: vec!["a".into(), "b".into()]
        }
    );
    for want in &ids[1..] {
        assert_eq!(
            &next(&mut sse).await.id,
            want,
            "all this store holds is new to it"
        );
    }
    // Ahead of the store.
    let mut sse = server
        .sse(&path, &[("Last-Event-ID", &format!("{epoch}-99"))])
        .await;
    let reset = next(&mut sse).await;
    assert!(reset.data.contains("\"ahead\""), "{reset:?}");
    let live = publish(&server, &t, "a", json!("live")).await;
    assert_eq!(next(&mut sse).await.id, live);
}

#[tokio::test]
async fn a_subscriber_that_falls_out_of_the_history_is_cut_off_as_lagged() {
    let server = spawn(Config {
        history: 10,
        send_buffer: Some(4096),
        stall_timeout: Duration::from_secs(60),
        ..channels_config()
    })
    .await;
    let t = token("ann", &["*"]);
    let mut slow = server.stalled_client(&events_path(&["a"])).await;
    server
        .wait_for_metric("sse_channel_subscriptions", 1.0)
        .await;
    // 30 events of 8 KB: far more than the slow side's buffers and the history hold.
    let big = "x".repeat(8_000);
    for _ in 0..30 {
        publish(&server, &t, "a", json!(big)).await;
    }
    // It reads again: what was buffered, then the server finds the next event gone.
    let received = within_for(
        Duration::from_secs(20),
        "the slow side's end",
        slow.read_to_close("the cut-off"),
    )
    .await;
    assert!(
        received.len() < 30 * 8_000,
        "not every event: {}",
        received.len()
    );
    server
        .wait_for_metric("sse_disconnects_total{reason=\"lagged\"}", 1.0)
        .await;
    server
        .wait_for_metric("sse_channel_subscriptions", 0.0)
        .await;
}

#[tokio::test]
async fn every_refusal_of_a_publish() {
    let server = spawn(Config {
        max_event_bytes: 1024,
        channel_publish_rate: 1,
        ..channels_config()
    })
    .await;
    let ok = token("ann", &["rooms/*"]);
    let body = json!({"channel": "rooms/a", "data": 1});
    let mut old = claims("ann", 0, &["*"], &[]);
    old.exp = now_secs() - 60;
    let expired = sign(SECRET, &old);
    let other_key = Verifier::from_secret(
        b"another secret, also thirty-two bytes long",
        Rules::default(),
    )
    .unwrap()
    .sign(
        &serde_json::from_value(json!({"exp": now_secs() + 60, "sse": {"publish": ["*"]}}))
            .unwrap(),
    )
    .unwrap();
    let b64 = |s: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    };
    let alg_none = format!(
        "{}.{}.",
        b64(r#"{"alg":"none","typ":"JWT"}"#),
        b64(&json!({"exp": now_secs() + 60, "sse": {"publish": ["*"]}}).to_string())
    );
    for (what, tok, want) in [
        ("no token", None, StatusCode::UNAUTHORIZED),
        ("expired", Some(expired.as_str()), StatusCode::UNAUTHORIZED),
        (
            "another key",
            Some(other_key.as_str()),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "alg none",
            Some(alg_none.as_str()),
            StatusCode::UNAUTHORIZED,
        ),
        ("garbage", Some("not.a.token"), StatusCode::UNAUTHORIZED),
    ] {
        let (status, text) = post(&server, tok, &body).await;
        assert_eq!(status, want, "{what}: {text}");
        let err: shared::ErrorBody = serde_json::from_str(&text).expect("JSON error body");
        assert!(!err.error.is_empty());
    }
    let reply = server
        .send(
            server
                .client
                .post(server.url(PUBLISH))
                .header("content-type", "application/json")
                .body(body.to_string()),
            "no token",
        )
        .await;
    assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
    let reply = server
        .send(
            server
                .client
                .post(server.url(PUBLISH))
                .header("content-type", "application/json")
                .bearer_auth(&expired)
                .body(body.to_string()),
            "expired",
        )
        .await;
    assert_eq!(
        reply.header("www-authenticate"),
        Some("Bearer error=\"invalid_token\"")
    );
    for (what, body, want) in [
        (
            "not granted",
            json!({"channel": "users/a", "data": 1}),
            StatusCode::FORBIDDEN,
        ),
        (
            "counter",
            json!({"channel": "counter", "data": 1}),
            StatusCode::FORBIDDEN,
        ),
        (
            "missing data",
            json!({"channel": "rooms/a"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "missing channel",
            json!({"data": 1}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "unknown field",
            json!({"channel": "rooms/a", "data": 1, "x": 1}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "bad channel",
            json!({"channel": "rooms//a", "data": 1}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "bad type",
            json!({"channel": "rooms/a", "data": 1, "type": "End"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "reserved type",
            json!({"channel": "rooms/a", "data": 1, "type": "reset"}),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let (status, text) = post(&server, Some(&ok), &body).await;
        assert_eq!(status, want, "{what}: {text}");
        serde_json::from_str::<shared::ErrorBody>(&text).expect("JSON error body");
    }
    let send =
        |req: reqwest::RequestBuilder| async { server.send(req.bearer_auth(&ok), "publish").await };
    let malformed = send(
        server
            .client
            .post(server.url(PUBLISH))
            .header("content-type", "application/json")
            .body("{\"channel\":"),
    )
    .await;
    assert_eq!(
        malformed.status,
        StatusCode::BAD_REQUEST,
        "{}",
        malformed.text()
    );
    let text = send(
        server
            .client
            .post(server.url(PUBLISH))
            .header("content-type", "text/plain")
            .body(body.to_string()),
    )
    .await;
    assert_eq!(text.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let big = json!({"channel": "rooms/a", "data": "x".repeat(2000)}).to_string();
    let too_big = send(
        server
            .client
            .post(server.url(PUBLISH))
            .header("content-type", "application/json")
            .body(big.clone()),
    )
    .await;
    assert_eq!(too_big.status, StatusCode::PAYLOAD_TOO_LARGE);
    // Chunked (no length): read up to the limit, no further.
    let stream = futures_util::stream::iter(
        big.into_bytes()
            .chunks(100)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let chunked = send(
        server
            .client
            .post(server.url(PUBLISH))
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(stream)),
    )
    .await;
    assert_eq!(chunked.status, StatusCode::PAYLOAD_TOO_LARGE);
    let get = server
        .send(server.client.get(server.url(PUBLISH)), "GET publish")
        .await;
    assert_eq!(get.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(get.header("allow"), Some("POST, OPTIONS"));
    // The rate: 1 a second, bursts of 2, for the token's sub.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(post(&server, Some(&ok), &body).await.0);
    }
    assert!(
        statuses[..2].iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    let limited = server
        .send(
            server
                .client
                .post(server.url(PUBLISH))
                .header("content-type", "application/json")
                .bearer_auth(&ok)
                .body(body.to_string()),
            "limited",
        )
        .await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.header("retry-after").is_some());
    assert!(
        server
            .metric("sse_channel_publish_rejected_total{reason=\"auth\"}")
            .await
            >= 5.0
    );
    assert!(
        server
            .metric("sse_channel_publish_rejected_total{reason=\"forbidden\"}")
            .await
            >= 2.0
    );
    assert!(
        server
            .metric("sse_channel_publish_rejected_total{reason=\"body\"}")
            .await
            >= 9.0
    );
    assert!(
        server
            .metric("sse_channel_publish_rejected_total{reason=\"rate\"}")
            .await
            >= 1.0
    );
}

#[tokio::test]
async fn without_a_key_publishing_is_off() {
    let server = spawn(config()).await;
    let (status, text) = post(
        &server,
        Some(&token("ann", &["*"])),
        &json!({"channel": "a", "data": 1}),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(text.contains("publishing is off"), "{text}");
}

#[tokio::test]
async fn every_refusal_of_a_subscription_and_the_channel_limit() {
    let server = spawn(channels_config()).await;
    for (what, path, param) in [
        ("no channel", EVENTS.to_owned(), "channel"),
        ("repeated", events_path(&["a", "a"]), "channel=a"),
        ("bad name", events_path(&["a/"]), "channel"),
        ("unknown", format!("{}&x=1", events_path(&["a"])), "x"),
        (
            "bad id",
            format!("{}&last_event_id=zz", events_path(&["a"])),
            "last_event_id",
        ),
    ] {
        let reply = server.fetch(&path).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{what}");
        assert_eq!(reply.error_body().param.as_deref(), Some(param), "{what}");
    }
    let reply = server
        .send(
            server
                .client
                .get(server.url(&events_path(&["a"])))
                .header("Last-Event-ID", "nope"),
            "bad header",
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let names: Vec<String> = (0..33).map(|i| format!("c{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let reply = server.fetch(&events_path(&refs)).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let mut sse = server.sse(&events_path(&refs[..32]), &[]).await;
    assert_eq!(sse.status, StatusCode::OK, "32 channels on one stream");
    server
        .wait_for_metric("sse_channel_subscriptions", 32.0)
        .await;
    let t = token("ann", &["*"]);
    let id = publish(&server, &t, "c31", json!(31)).await;
    assert_eq!(next(&mut sse).await.id, id);
    drop(sse);
    server
        .wait_for_metric("sse_channel_subscriptions", 0.0)
        .await;
}

#[tokio::test]
async fn the_counter_is_a_channel_on_both_routes() {
    let server = spawn(channels_config()).await;
    let mut shared = server.sse(shared::paths::SHARED, &[]).await;
    let mut channel = server.sse(&events_path(&["counter", "a"]), &[]).await;
    let first = next(&mut shared).await;
    assert_eq!(first.id, "0", "/api/shared starts with the current value");
    server
        .wait_for_metric("sse_channel_subscriptions", 2.0)
        .await;
    let inc = server.post(shared::paths::SHARED_INCREMENT).await;
    assert_eq!(inc.status, StatusCode::OK);
    let v = next(&mut shared).await;
    assert_eq!((v.id.as_str(), v.event.as_str()), ("1", "message"));
    let (id, ch, data) = channel_event(&next(&mut channel).await);
    assert_eq!(
        (ch.as_str(), data),
        ("counter", json!({"value": 1})),
        "only changes, no current value first"
    );
    assert!(EventId::parse(&id).is_ok());
}

#[tokio::test]
async fn an_idle_stream_gets_heartbeats_and_shutdown_ends_it_with_its_last_id() {
    let mut server = spawn(Config {
        keep_alive: Duration::from_millis(200),
        shutdown_retry_spread: Duration::ZERO,
        ..channels_config()
    })
    .await;
    let mut sse = server.sse(&events_path(&["a"]), &[]).await;
    let beat = sse.next().await.expect("a heartbeat");
    assert_eq!(beat.event, events::HEARTBEAT);
    server
        .wait_for_metric("sse_channel_subscriptions", 1.0)
        .await;
    let id = publish(&server, &token("ann", &["a"]), "a", json!(1)).await;
    assert_eq!(next(&mut sse).await.id, id);
    let stopping = tokio::spawn(async move { server.stop_within(Duration::from_secs(10)).await });
    let end = next(&mut sse).await;
    assert_eq!(end.event, events::END);
    let end: ChannelEnd = serde_json::from_str(&end.data).unwrap();
    assert_eq!(
        end,
        ChannelEnd {
            reason: EndReason::Shutdown,
            last: Some(id)
        }
    );
    assert_eq!(sse.next().await.unwrap_err(), Finish::Closed);
    within("shutdown", stopping).await.unwrap().unwrap();
}

#[tokio::test]
async fn a_subscriber_that_stops_reading_is_closed_as_stalled_and_slows_no_one() {
    let wait = Duration::from_secs(20);
    let server = spawn(Config {
        stall_timeout: Duration::from_secs(1),
        send_buffer: Some(8 * 1024),
        ..channels_config()
    })
    .await
    .with_limit(wait);
    let stalled = server.stalled_client(&events_path(&["a"])).await;
    let mut reader = server.sse(&events_path(&["a"]), &[]).await;
    server
        .wait_for_metric("sse_channel_subscriptions", 2.0)
        .await;
    // 100 events of 2 KB: far more than the stalled side's buffers (4 KiB + 8 KiB) hold,
    // far less than the history does, so it is cut off as stalled, not as lagged.
    let t = token("ann", &["a"]);
    let big = "x".repeat(2_000);
    let mut sent = Vec::new();
    for n in 0..100 {
        sent.push(publish(&server, &t, "a", json!({"n": n, "pad": big})).await);
    }
    let mut got = Vec::new();
    while got.len() < sent.len() {
        got.push(next(&mut reader).await.id);
    }
    assert_eq!(
        got, sent,
        "every event once, in order, beside a stalled reader"
    );
    server
        .wait_for_metric("sse_disconnects_total{reason=\"stalled\"}", 1.0)
        .await;
    server
        .wait_for_metric("sse_channel_subscriptions", 1.0)
        .await;
    for reason in ["lagged", "client"] {
        let key = format!("sse_disconnects_total{{reason=\"{reason}\"}}");
        assert_eq!(server.metric(&key).await, 0.0, "{key}");
    }
    // The reader is still live after the cut-off.
    let live = publish(&server, &t, "a", json!("live")).await;
    assert_eq!(next(&mut reader).await.id, live);
    drop(stalled);
    drop(reader);
    server.stop().await;
}

#[tokio::test]
async fn past_max_streams_a_subscription_is_refused_503_until_one_closes() {
    let server = spawn(Config {
        max_streams: 1,
        ..channels_config()
    })
    .await;
    let first = server.sse(&events_path(&["a"]), &[]).await;
    assert_eq!(first.status, StatusCode::OK);
    let reply = server.fetch(&events_path(&["b"])).await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.text()
    );
    let retry_after: u64 = reply
        .header("retry-after")
        .expect("Retry-After on a 503")
        .parse()
        .expect("Retry-After in seconds");
    assert!(retry_after >= 1, "{retry_after}");
    assert_eq!(
        reply.error_body().reason,
        Some(shared::UnavailableReason::Capacity)
    );
    // The counter's stream counts against the same limit.
    let reply = server.fetch(shared::paths::SHARED).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    drop(first);
    server.wait_for_metric("sse_active_streams", 0.0).await;
    let mut again = server.sse(&events_path(&["b"]), &[]).await;
    assert_eq!(
        again.status,
        StatusCode::OK,
        "admitted once the first closed"
    );
    server
        .wait_for_metric("sse_channel_subscriptions", 1.0)
        .await;
    let id = publish(&server, &token("ann", &["b"]), "b", json!(1)).await;
    assert_eq!(next(&mut again).await.id, id);
    drop(again);
    server.stop().await;
}

#[tokio::test]
async fn the_stream_has_the_shared_routes_headers_starts_with_retry_and_ends_with_a_spread_retry() {
    let spread = Duration::from_millis(10_000);
    let mut server = spawn(Config {
        shutdown_retry_spread: spread,
        ..channels_config()
    })
    .await;
    let mut events = server.raw().await;
    events.get(&events_path(&["a", "b"]), &[]).await;
    let events_head = events.head().await;
    let mut shared = server.raw().await;
    shared.get(shared::paths::SHARED, &[]).await;
    let shared_head = shared.head().await;
    assert_eq!((events_head.status, shared_head.status), (200, 200));
    // Every header but the clock's, names and values alike.
    let headers = |head: &support::raw::Head| {
        let mut all: Vec<(String, String)> = head
            .headers
            .iter()
            .filter(|(name, _)| name != "date")
            .cloned()
            .collect();
        all.sort();
        all
    };
    assert_eq!(
        headers(&events_head),
        headers(&shared_head),
        "the same headers as /api/shared:\n{}\n---\n{}",
        events_head.raw,
        shared_head.raw
    );
    for (name, value) in [
        ("content-type", "text/event-stream"),
        ("cache-control", "no-cache, no-transform"),
        ("x-accel-buffering", "no"),
    ] {
        assert_eq!(events_head.header(name), Some(value), "{name}");
    }
    let retry = format!("retry: {}\n\n", server::Config::default().retry_ms);
    assert_eq!(events.frame().await, Ok(retry.clone()), "retry: first");
    assert_eq!(shared.frame().await, Ok(retry));
    server
        .wait_for_metric("sse_channel_subscriptions", 2.0)
        .await;
    let id = publish(&server, &token("ann", &["a"]), "a", json!(1)).await;
    let frame = events.frame().await.expect("the event");
    assert!(frame.starts_with(&format!("id: {id}\n")), "{frame:?}");

    let stopping = tokio::spawn(async move { server.stop_within(Duration::from_secs(10)).await });
    // Before its `end`, a new reconnection delay within the configured spread.
    let retry = events.frame().await.expect("a retry frame before the end");
    let ms: u64 = retry
        .strip_prefix("retry: ")
        .and_then(|r| r.strip_suffix("\n\n"))
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("a retry field, got {retry:?}"));
    let base = server::Config::default().retry_ms;
    let top = base + spread.as_millis() as u64;
    assert!(
        (base..=top).contains(&ms),
        "retry {ms} within {base}..={top}"
    );
    let end = events.frame().await.expect("the end event");
    let data = end
        .strip_prefix("event: end\ndata: ")
        .and_then(|d| d.strip_suffix("\n\n"))
        .unwrap_or_else(|| panic!("an end event, got {end:?}"));
    let end: ChannelEnd = serde_json::from_str(data).expect("end data");
    assert_eq!(
        end,
        ChannelEnd {
            reason: EndReason::Shutdown,
            last: Some(id)
        }
    );
    assert_eq!(
        events.frame().await,
        Err(support::BodyEnd::Terminated),
        "then the terminating chunk"
    );
    within("shutdown", stopping).await.unwrap().unwrap();
}

#[tokio::test]
async fn tokens_without_a_sub_share_the_budget_of_their_address() {
    let server = spawn(Config {
        channel_publish_rate: 1,
        ..channels_config()
    })
    .await;
    let anonymous = || {
        let mut c = claims("", 600, &["*"], &[]);
        c.sub = None;
        sign(SECRET, &c)
    };
    let (first, second) = (anonymous(), anonymous());
    let body = json!({"channel": "a", "data": 1});
    // 1 a second, bursts of 2: the first token spends the address's whole burst.
    for _ in 0..2 {
        let (status, text) = post(&server, Some(&first), &body).await;
        assert_eq!(status, StatusCode::OK, "{text}");
    }
    // Another token without `sub`, from the same address: the same, spent, budget.
    let limited = server
        .send(
            server
                .client
                .post(server.url(PUBLISH))
                .header("content-type", "application/json")
                .bearer_auth(&second)
                .body(body.to_string()),
            "a publish past the address's budget",
        )
        .await;
    assert_eq!(
        limited.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        limited.text()
    );
    let retry_after: u64 = limited
        .header("retry-after")
        .expect("Retry-After on a 429")
        .parse()
        .expect("Retry-After in seconds");
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    assert!(!limited.error_body().error.is_empty());
    // A token with a `sub` has a budget of its own, whatever its address.
    let (status, text) = post(&server, Some(&token("ann", &["*"])), &body).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(
        server
            .metric("sse_channel_publish_rejected_total{reason=\"rate\"}")
            .await,
        1.0
    );
    server.stop().await;
}
