//! Channels across instances, against a real `redis-server`: a publish on one instance
//! reaches the subscribers of every instance with the same id; history survives an
//! instance's restart; after `kill -9` of an instance its clients resume on another by
//! `Last-Event-ID` with no gap and no repeat; a Redis restart loses no acknowledged
//! publish, and one made while Redis is down is refused `503` `store_unavailable` with
//! `Retry-After`; `FLUSHALL` resets every subscriber with `ahead`.

mod support;

use eventsource_stream::Event;
use reqwest::StatusCode;
use serde_json::{json, Value};
use shared::channels::{ChannelReset, EventId, Published};
use shared::{events, ResetReason, UnavailableReason};
use support::binary::Binary;
use support::cluster::{instance, publisher_token, Redis, SecretFile, BUSY_LIMIT};
use support::{poll_until, Endpoint, Reply, Sse};

const SECRET: &[u8] = b"a cluster test secret, thirty-two bytes or more";

type Keys = SecretFile;

fn secret_file() -> Keys {
    SecretFile::new(SECRET)
}

fn token() -> String {
    publisher_token(SECRET)
}

async fn node(redis: &Redis, keys: &Keys) -> Binary {
    let i = instance(
        &redis.url(),
        &[
            "--jwt-secret-file",
            &keys.file,
            "--channel-publish-rate",
            "1000000",
            // Public for the delivery tests; `private/*` stays private for revocation.
            "--public-channel",
            "rooms/*,a,b",
        ],
    )
    .await
    .with_limit(BUSY_LIMIT);
    poll_until(BUSY_LIMIT, "/healthz to say shared ok", async || {
        let health = i.fetch("/healthz").await.json();
        if health["shared"] == "ok" {
            Ok(())
        } else {
            Err(health)
        }
    })
    .await;
    i
}

/// Publishes on `channel` through `at`: the whole answer.
async fn publish_reply(at: &Binary, channel: &str, data: Value) -> Reply {
    let req = at
        .client()
        .post(at.url(shared::paths::PUBLISH))
        .bearer_auth(token())
        .header("content-type", "application/json")
        .body(json!({"channel": channel, "data": data}).to_string());
    at.send(req, "POST publish").await
}

/// Publishes on `channel` through `at`: (status, id if 200).
async fn publish(at: &Binary, channel: &str, data: Value) -> (StatusCode, Option<String>) {
    let reply = publish_reply(at, channel, data).await;
    let id = (reply.status == StatusCode::OK).then(|| reply.json_as::<Published>().id);
    (reply.status, id)
}

/// `reply` is the refusal of a publish while the store is down: `503` with the JSON
/// error body, reason `store_unavailable`, and a `Retry-After` in seconds.
fn assert_store_unavailable(reply: &Reply) {
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.text()
    );
    assert_eq!(
        reply.error_body().reason,
        Some(UnavailableReason::StoreUnavailable),
        "{}",
        reply.text()
    );
    let retry_after: u64 = reply
        .header("retry-after")
        .expect("Retry-After on a 503")
        .parse()
        .expect("Retry-After in seconds");
    assert!(retry_after >= 1, "{retry_after}");
}

async fn ok_publish(at: &Binary, channel: &str, data: Value) -> String {
    let (status, id) = publish(at, channel, data).await;
    assert_eq!(status, StatusCode::OK);
    id.unwrap()
}

fn path(channels: &[&str]) -> String {
    let q: Vec<String> = channels.iter().map(|c| format!("channel={c}")).collect();
    format!("{}?{}", shared::paths::EVENTS, q.join("&"))
}

async fn next(sse: &mut Sse) -> Event {
    sse.next_except(&[events::HEARTBEAT])
        .await
        .expect("an event, not the end of the body")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_on_one_instance_reaches_every_instance_with_the_same_id_and_survives_restarts() {
    let redis = Redis::start().await;
    let keys = secret_file();
    let a = node(&redis, &keys).await;
    let b = node(&redis, &keys).await;
    let mut on_a = a.sse(&path(&["rooms/x", "rooms/y"]), &[]).await;
    let mut on_b = b.sse(&path(&["rooms/x", "rooms/y"]), &[]).await;
    a.wait_for_metric("sse_channel_subscriptions", 2.0).await;
    b.wait_for_metric("sse_channel_subscriptions", 2.0).await;
    let x = ok_publish(&a, "rooms/x", json!({"from": "a"})).await;
    let y = ok_publish(&b, "rooms/y", json!({"from": "b"})).await;
    for sse in [&mut on_a, &mut on_b] {
        let first = next(sse).await;
        let second = next(sse).await;
        assert_eq!(
            (first.id.as_str(), second.id.as_str()),
            (x.as_str(), y.as_str())
        );
        let data: Value = serde_json::from_str(&second.data).unwrap();
        assert_eq!(data["data"], json!({"from": "b"}));
        assert_eq!(data["from"], "backend");
    }
    // An instance started now replays the history from Redis.
    let c = node(&redis, &keys).await;
    let mut on_c = c
        .sse(
            &format!("{}&last_event_id=earliest", path(&["rooms/x", "rooms/y"])),
            &[],
        )
        .await;
    assert_eq!(next(&mut on_c).await.id, x);
    assert_eq!(next(&mut on_c).await.id, y);
    let mut resumed = c.sse(&path(&["rooms/y"]), &[("Last-Event-ID", &x)]).await;
    assert_eq!(next(&mut resumed).await.id, y, "an id of A's resumes on C");
    assert_eq!(a.metric("sse_channel_published_total").await, 1.0);
    assert_eq!(b.metric("sse_channel_published_total").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_of_an_instance_its_clients_resume_on_another_with_no_gap_and_no_repeat() {
    let redis = Redis::start().await;
    let keys = secret_file();
    let mut victim = node(&redis, &keys).await;
    let survivor = node(&redis, &keys).await;
    let mut sse = victim.sse(&path(&["a"]), &[]).await;
    victim
        .wait_for_metric("sse_channel_subscriptions", 1.0)
        .await;
    let mut sent = Vec::new();
    for i in 0..5 {
        sent.push(ok_publish(&survivor, "a", json!(i)).await);
    }
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(next(&mut sse).await.id);
    }
    victim.signal("KILL");
    victim.exit().await;
    // Published while the client is away.
    for i in 5..8 {
        sent.push(ok_publish(&survivor, "a", json!(i)).await);
    }
    // The browser's reconnect: the last id it saw, to another instance.
    let last = got.last().unwrap().clone();
    let mut again = survivor
        .sse(&path(&["a"]), &[("Last-Event-ID", &last)])
        .await;
    while got.len() < sent.len() {
        got.push(next(&mut again).await.id);
    }
    assert_eq!(got, sent, "every event once, in order, across the move");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_loses_no_acknowledged_publish_and_flushall_resets_with_ahead() {
    let mut redis = Redis::start().await;
    let keys = secret_file();
    let a = node(&redis, &keys).await;
    let mut sse = a.sse(&path(&["a", "b"]), &[]).await;
    a.wait_for_metric("sse_channel_subscriptions", 2.0).await;
    let before = ok_publish(&a, "a", json!("before")).await;
    assert_eq!(next(&mut sse).await.id, before);
    redis.kill().await;
    // While Redis is down a publish is refused: 503 `store_unavailable`, `Retry-After`.
    let down = publish_reply(&a, "b", json!("lost")).await;
    assert_store_unavailable(&down);
    redis.start_again().await;
    // Publishes answer the same 503 until the instance has Redis back, then 200.
    let after = poll_until(BUSY_LIMIT, "a publish answered 200 again", async || {
        let reply = publish_reply(&a, "b", json!("after")).await;
        if reply.status == StatusCode::OK {
            return Ok(reply.json_as::<Published>().id);
        }
        assert_store_unavailable(&reply);
        Err(reply.status)
    })
    .await;
    let got = next(&mut sse).await;
    assert_eq!(got.id, after, "no gap, no repeat across the restart");
    assert_eq!(
        EventId::parse(&after).unwrap().seq,
        EventId::parse(&before).unwrap().seq + 1,
        "the acknowledged event kept its place"
    );
    // The data lost: every subscriber is told, naming every listed channel.
    redis.flush().await;
    let reset = next(&mut sse).await;
    assert_eq!(reset.event, events::RESET);
    let r: ChannelReset = serde_json::from_str(&reset.data).unwrap();
    assert_eq!(
        r,
        ChannelReset {
            reason: ResetReason::Ahead,
            channels: vec!["a".into(), "b".into()]
        }
    );
    let fresh = ok_publish(&a, "a", json!("fresh")).await;
    assert_ne!(
        EventId::parse(&fresh).unwrap().epoch,
        EventId::parse(&before).unwrap().epoch,
        "new data, new epoch"
    );
    assert_eq!(next(&mut sse).await.id, fresh);
    // An old id is recognised as another epoch's.
    let mut old = a.sse(&path(&["a"]), &[("Last-Event-ID", &before)]).await;
    let reset = next(&mut old).await;
    assert!(reset.data.contains("\"ahead\""), "{reset:?}");
    assert_eq!(
        next(&mut old).await.id,
        fresh,
        "then what the new data holds"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_nginx_kill_9_of_an_instance_and_its_subscribers_resume_on_the_other() {
    use std::collections::BTreeMap;
    use support::cluster::{Nginx, Resuming};
    let redis = Redis::start().await;
    let keys = secret_file();
    let a = node(&redis, &keys).await;
    let b = node(&redis, &keys).await;
    let nginx = Nginx::start(&[a.addr, b.addr]).await;
    // 40 browsers through nginx on two channels, spread over both instances by nginx.
    let stream = path(&["rooms/x", "rooms/y"]);
    let mut clients: Vec<Resuming> = (0..40)
        .map(|_| Resuming::on(&nginx, &stream, None))
        .collect();
    for c in &mut clients {
        c.connect().await;
    }
    poll_until(
        BUSY_LIMIT,
        "every stream joined on some instance",
        async || {
            let n = a.metric("sse_channel_subscriptions").await
                + b.metric("sse_channel_subscriptions").await;
            if n == 80.0 {
                Ok(())
            } else {
                Err(n)
            }
        },
    )
    .await;
    let on_a = a.metric("sse_channel_subscriptions").await;
    let (mut victim, survivor) = if on_a >= 40.0 { (a, b) } else { (b, a) };
    let mut sent = Vec::new();
    for i in 0..10 {
        let ch = if i % 2 == 0 { "rooms/x" } else { "rooms/y" };
        sent.push(ok_publish(&survivor, ch, json!(i)).await);
    }
    let mut seen: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for (i, c) in clients.iter_mut().enumerate() {
        for _ in 0..5 {
            seen.entry(i)
                .or_default()
                .push(c.next_raw().await.id.expect("an id"));
        }
    }
    victim.signal("KILL");
    victim.exit().await;
    for i in 10..20 {
        let ch = if i % 2 == 0 { "rooms/x" } else { "rooms/y" };
        sent.push(ok_publish(&survivor, ch, json!(i)).await);
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let got = seen.get_mut(&i).unwrap();
        while got.len() < sent.len() {
            got.push(c.next_raw().await.id.expect("an id"));
        }
        assert_eq!(got, &sent, "browser {i}: every event once, in order");
    }
    let moved: u32 = clients.iter().map(|c| c.reconnects).sum();
    assert!(moved >= 20, "the victim's half reconnected: {moved}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_on_one_instance_ends_a_sessions_hundred_streams_on_both_and_spares_others() {
    use shared::channels::Revoked;
    use std::time::Duration;
    let redis = Redis::start().await;
    let keys = secret_file();
    let a = node(&redis, &keys).await;
    let b = node(&redis, &keys).await;
    // Both instances listen for revocations before one is made.
    poll_until(
        BUSY_LIMIT,
        "both instances subscribed to revocations",
        async || {
            let mut conn = redis.conn().await;
            let (_, n): (String, u64) = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(server::store::redis::keys::REVOKE)
                .query_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            if n == 2 {
                Ok(())
            } else {
                Err(n.to_string())
            }
        },
    )
    .await;
    let sign = |sid: &str, revoke: bool| {
        let mut c = support::tokens::claims("u", 600, &[], &["private/*"]);
        c.sid = Some(sid.into());
        c.sse.revoke = revoke;
        support::tokens::sign(SECRET, &c)
    };
    let (doomed, spared, admin) = (
        sign("doomed", false),
        sign("spared", false),
        sign("ops", true),
    );
    let stream = path(&["private/a"]);
    let auth = |t: &str| format!("Bearer {t}");
    let mut ending = Vec::new();
    for i in 0..100 {
        let at = if i % 2 == 0 { &a } else { &b };
        ending.push(at.sse(&stream, &[("authorization", &auth(&doomed))]).await);
    }
    let mut others = vec![
        a.sse(&stream, &[("authorization", &auth(&spared))]).await,
        b.sse(&stream, &[("authorization", &auth(&spared))]).await,
    ];
    a.wait_for_metric("sse_channel_subscriptions", 51.0).await;
    b.wait_for_metric("sse_channel_subscriptions", 51.0).await;
    // The contract's second counts from the revoke request: its answer is part of it.
    let started = std::time::Instant::now();
    let req = a
        .client()
        .post(a.url(shared::paths::REVOKE))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body(r#"{"sid":"doomed"}"#);
    let reply = a.send(req, "revoke").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        reply.json_as::<Revoked>(),
        Revoked { ended: 50 },
        "those on this instance"
    );
    let ends = futures_util::future::join_all(ending.iter_mut().map(|sse| async move {
        let end = next(sse).await;
        assert_eq!(end.event, events::END);
        assert!(end.data.contains("\"revoked\""), "{end:?}");
    }));
    // Within 1 s, as the contract says, on both instances: the other one's 50 learn it
    // through Redis pub/sub, which takes milliseconds.
    support::within_for(
        Duration::from_secs(1).saturating_sub(started.elapsed()),
        "all 100 streams ended within 1 s of the revoke",
        ends,
    )
    .await;
    eprintln!(
        "100 streams on two instances ended {:?} after the revoke was sent",
        started.elapsed()
    );
    let id = ok_publish(&a, "private/a", json!("still here")).await;
    for sse in &mut others {
        assert_eq!(next(sse).await.id, id, "the other session goes on");
    }
    for at in [&a, &b] {
        let res = at
            .get_with(&stream, &[("authorization", &auth(&doomed))])
            .await;
        assert_eq!(
            res.status(),
            StatusCode::UNAUTHORIZED,
            "refused on every instance"
        );
    }
    // An instance that was not listening when the revocation went out (here: not
    // started yet) learns it from the set kept in Redis, once it is subscribed.
    let c = node(&redis, &keys).await;
    poll_until(
        BUSY_LIMIT,
        "the new instance to refuse the revoked session",
        async || {
            let res = c
                .get_with(&stream, &[("authorization", &auth(&doomed))])
                .await;
            match res.status() {
                StatusCode::UNAUTHORIZED => Ok(()),
                other => Err(other),
            }
        },
    )
    .await;
    let mut spared_on_c = c.sse(&stream, &[("authorization", &auth(&spared))]).await;
    let id = ok_publish(&a, "private/a", json!("and on c")).await;
    assert_eq!(
        next(&mut spared_on_c).await.id,
        id,
        "the other session opens on c"
    );
}
