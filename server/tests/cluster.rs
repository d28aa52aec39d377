//! More than one instance: instances of the binary sharing the live counter through a
//! real `redis-server`, behind a real nginx configured from `deploy/`. Every increment
//! reaches every subscriber of every instance once, in order; a killed instance's
//! clients continue on another through nginx; Redis going away (open streams wait, new
//! ones and increments `503`), coming back or losing its data is survived as the README
//! says.
//!
//! The page itself through nginx, two tabs on different instances seeing each other's
//! `+1` (issue 12's last test), is a browser test: `server/tests/browser/cluster.rs`.

mod support;

use eventsource_stream::Event;
use reqwest::StatusCode;
use shared::{Reset, ResetReason, SharedValue, UnavailableReason};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::binary::{launch, Binary};
use support::cluster::{
    free_port, instance, post_increment, value, within_busy, Nginx, Redis, Resuming, BUSY_LIMIT,
};
use support::sse::data;
use support::{now_us, poll_until, within, Endpoint, Sse};
use tokio::sync::watch;

const SHARED: &str = shared::paths::SHARED;
const INCREMENT: &str = shared::paths::SHARED_INCREMENT;

/// Waits until the instance has read Redis (its `/healthz` says `"shared":"ok"`).
async fn ready(instance: &Binary) {
    poll_until(BUSY_LIMIT, "/healthz to say shared ok", async || {
        let health = instance.fetch("/healthz").await.json();
        if health["shared"] == "ok" {
            Ok(())
        } else {
            Err(health)
        }
    })
    .await
}

/// Waits until `/healthz` says `"shared":"unavailable"` (and is still 200).
async fn unavailable(instance: &Binary) {
    poll_until(
        BUSY_LIMIT,
        "/healthz to say shared unavailable",
        async || {
            let reply = instance.fetch("/healthz").await;
            assert_eq!(reply.status, StatusCode::OK, "healthz stays 200");
            let health = reply.json();
            if health["shared"] == "unavailable" {
                Ok(())
            } else {
                Err(health)
            }
        },
    )
    .await
}

/// `POST /api/shared/increment` on `instance`, answered 200: the new value.
async fn increment(instance: &Binary) -> u64 {
    let reply = instance.post(INCREMENT).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    reply.json_as::<shared::Incremented>().value
}

/// The next event that is not a heartbeat: heartbeats keep coming, so the wait is
/// bounded as a whole, not only each read.
async fn event(sse: &mut Sse) -> Event {
    within_busy(
        "the next event that is not a heartbeat",
        sse.next_except(&[shared::events::HEARTBEAT]),
    )
    .await
    .unwrap_or_else(|finish| panic!("the stream ended: {finish:?}"))
}

/// The next event, which must be a value.
async fn next_value(sse: &mut Sse) -> SharedValue {
    let event = event(sse).await;
    assert_eq!(event.event, "message", "a value: {event:?}");
    let v: SharedValue = data(&event);
    assert_eq!(event.id, v.value.to_string(), "id is the value");
    v
}

/// The next event, which must be a reset.
async fn next_reset(sse: &mut Sse) -> Reset {
    let event = event(sse).await;
    assert_eq!(event.event, shared::events::RESET, "a reset: {event:?}");
    data(&event)
}

/// Reads values until the one `until` names (once it names one), checking each id.
async fn collect(mut sse: Sse, mut until: watch::Receiver<Option<u64>>) -> Vec<u64> {
    let mut seen = Vec::new();
    loop {
        let target = *until.borrow_and_update();
        if target.is_some_and(|t| seen.last() >= Some(&t)) {
            return seen;
        }
        tokio::select! {
            v = next_value(&mut sse) => seen.push(v.value),
            _ = until.changed() => {}
        }
    }
}

/// `seen` is `from..=to`, each once, in order.
fn assert_every_value_once_in_order(seen: &[u64], from: u64, to: u64, who: &str) {
    let want: Vec<u64> = (from..=to).collect();
    if seen != want {
        let gaps: Vec<_> = seen.windows(2).filter(|w| w[1] != w[0] + 1).collect();
        panic!(
            "{who}: {} values from {:?} to {:?}, gaps or repeats at {gaps:?}; want {from}..={to}",
            seen.len(),
            seen.first(),
            seen.last()
        );
    }
}

#[tokio::test]
async fn an_increment_on_one_instance_reaches_the_subscribers_of_another() {
    let redis = Redis::start().await;
    let a = instance(&redis.url(), &[]).await;
    let b = instance(&redis.url(), &[]).await;
    ready(&a).await;
    ready(&b).await;
    let mut on_b = b.sse(SHARED, &[]).await;
    assert_eq!(next_value(&mut on_b).await.value, 0);
    let mut on_a = a.sse(SHARED, &[]).await;
    assert_eq!(next_value(&mut on_a).await.value, 0);

    let since = now_us();
    assert_eq!(increment(&a).await, 1);
    let one = next_value(&mut on_b).await;
    assert_eq!(one.value, 1, "made on A, seen on B");
    assert_eq!(
        next_value(&mut on_a).await,
        one,
        "and on A, the same change"
    );
    assert!(
        one.sent_at_us >= since && one.sent_at_us <= now_us(),
        "sent_at_us is when A published it: {one:?}"
    );
    assert_eq!(increment(&b).await, 2);
    let two = next_value(&mut on_a).await;
    assert_eq!(two.value, 2, "made on B, seen on A");
    assert_eq!(next_value(&mut on_b).await, two);

    // A third instance, started now, replays from Redis at once.
    let c = instance(&redis.url(), &[]).await;
    ready(&c).await;
    let mut on_c = c.sse(SHARED, &[("Last-Event-ID", "0")]).await;
    assert_eq!(next_value(&mut on_c).await, one, "replayed from the stream");
    assert_eq!(next_value(&mut on_c).await, two);
    let mut fresh = c.sse(SHARED, &[]).await;
    assert_eq!(next_value(&mut fresh).await, two, "the current value");

    // Each instance counts what it published; all have the value.
    assert_eq!(a.metric("sse_shared_published_total").await, 1.0);
    assert_eq!(b.metric("sse_shared_published_total").await, 1.0);
    for i in [&a, &b, &c] {
        assert_eq!(i.metric("sse_shared_value").await, 2.0);
        assert_eq!(i.metric("sse_shared_store_up").await, 1.0);
    }
    assert_eq!(redis.value().await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_a_hundred_subscribers_each_two_hundred_increments_from_both() {
    let redis = Redis::start().await;
    let a = Arc::new(instance(&redis.url(), &[]).await.with_limit(BUSY_LIMIT));
    let b = Arc::new(instance(&redis.url(), &[]).await.with_limit(BUSY_LIMIT));
    ready(&a).await;
    ready(&b).await;
    let (done, until) = watch::channel(None);
    let mut readers = Vec::new();
    for (name, server) in [("A", &a), ("B", &b)] {
        for i in 0..100 {
            let mut sse = server.sse(SHARED, &[]).await;
            assert_eq!(next_value(&mut sse).await.value, 0);
            let until = until.clone();
            readers.push((
                format!("subscriber {i} of {name}"),
                tokio::spawn(collect(sse, until)),
            ));
        }
    }
    let publishers: Vec<_> = [&a, &a, &b, &b]
        .into_iter()
        .map(|server| {
            let server = Arc::clone(server);
            tokio::spawn(async move {
                let mut got = Vec::new();
                for _ in 0..50 {
                    got.push(increment(&server).await);
                }
                got
            })
        })
        .collect();
    let mut answered = BTreeSet::new();
    for p in publishers {
        for v in within_busy("a publisher", p).await.expect("publisher task") {
            assert!(answered.insert(v), "value {v} answered twice");
        }
    }
    assert_eq!(
        answered,
        (1..=200).collect(),
        "each increment its own value"
    );
    done.send(Some(200)).expect("readers listen");
    for (who, reader) in readers {
        let seen = within_busy(&who, reader).await.expect("reader task");
        assert_every_value_once_in_order(&seen, 1, 200, &who);
    }
    let published =
        a.metric("sse_shared_published_total").await + b.metric("sse_shared_published_total").await;
    assert_eq!(published, 200.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_an_instance_behind_nginx_and_its_subscribers_continue_on_the_other() {
    let redis = Redis::start().await;
    let a = instance(&redis.url(), &[]).await.with_limit(BUSY_LIMIT);
    let b = instance(&redis.url(), &[]).await.with_limit(BUSY_LIMIT);
    ready(&a).await;
    ready(&b).await;
    let nginx = Arc::new(Nginx::start(&[a.addr, b.addr]).await);

    // 400 browsers through nginx, which spreads them over both instances.
    let (done, until) = watch::channel(None::<u64>);
    let mut readers = Vec::new();
    for i in 0..400 {
        let mut client = Resuming::new(&nginx, None);
        assert_eq!(value(&client.next().await), 0);
        let mut until = until.clone();
        readers.push((
            format!("browser {i}"),
            tokio::spawn(async move {
                let mut seen = Vec::new();
                loop {
                    let target = *until.borrow_and_update();
                    if target.is_some_and(|t| seen.last() >= Some(&t)) {
                        return (seen, client.reconnects);
                    }
                    tokio::select! {
                        e = client.next() => seen.push(value(&e)),
                        _ = until.changed() => {}
                    }
                }
            }),
        ));
    }
    let on_a = a.metric("sse_shared_subscribers").await;
    let on_b = b.metric("sse_shared_subscribers").await;
    assert_eq!(on_a + on_b, 400.0);
    // The one holding 200 or more goes.
    let (victim, survivor, on_victim) = if on_a >= on_b {
        (a, b, on_a)
    } else {
        (b, a, on_b)
    };
    assert!(on_victim >= 200.0, "{on_a} on A, {on_b} on B");

    // Increments through nginx, before, during and after the kill.
    let statuses = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (nginx, statuses, stop) =
            (Arc::clone(&nginx), Arc::clone(&statuses), Arc::clone(&stop));
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let answer = nginx.increment().await;
                statuses.lock().expect("statuses").push(answer);
                // A steady pace, as people clicking: not a wait for anything.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let answered = async |n: usize| {
        poll_until(
            BUSY_LIMIT,
            &format!("{n} increments answered 200"),
            async || {
                let ok = statuses
                    .lock()
                    .expect("statuses")
                    .iter()
                    .filter(|s| s.0 == 200)
                    .count();
                if ok >= n {
                    Ok(())
                } else {
                    Err(ok)
                }
            },
        )
        .await
    };
    answered(50).await;
    victim.signal("KILL");
    // Its browsers come back through nginx, all of them onto the survivor.
    survivor
        .wait_for_metric("sse_shared_subscribers", 400.0)
        .await;
    answered(150).await;
    stop.store(true, Ordering::Relaxed);
    within_busy("the publisher to stop", publisher)
        .await
        .expect("publisher");

    let last = redis.value().await;
    done.send(Some(last)).expect("readers listen");
    let mut reconnected = 0;
    for (who, reader) in readers {
        let (seen, reconnects) = within_busy(&who, reader).await.expect("reader task");
        assert_every_value_once_in_order(&seen, 1, last, &who);
        if reconnects > 0 {
            reconnected += 1;
        }
    }
    assert!(
        reconnected as f64 >= on_victim,
        "every browser of the killed instance reconnected: {reconnected} of {on_victim}"
    );
    let statuses = statuses.lock().expect("statuses").clone();
    let ok: BTreeSet<u64> = statuses.iter().filter_map(|s| s.1).collect();
    assert!(ok.iter().all(|v| *v <= last), "every 200 is in the log");
    // Only an increment in flight when the instance died may fail (502), and nginx
    // sends the rest to the survivor.
    let failed = statuses.iter().filter(|s| s.0 != 200).count();
    assert!(failed <= 3, "{failed} increments failed: {statuses:?}");
    assert!(
        !nginx.error_log().contains("[emerg]"),
        "{}",
        nginx.error_log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_mid_stream_no_gap_503_meanwhile_and_no_200_lost() {
    let mut redis = Redis::start().await;
    let a = Arc::new(instance(&redis.url(), &[]).await.with_limit(BUSY_LIMIT));
    let b = Arc::new(instance(&redis.url(), &[]).await.with_limit(BUSY_LIMIT));
    ready(&a).await;
    ready(&b).await;
    let (done, until) = watch::channel(None);
    let mut readers = Vec::new();
    for (name, server) in [("A", &a), ("B", &b)] {
        for i in 0..20 {
            let mut sse = server.sse(SHARED, &[]).await;
            assert_eq!(next_value(&mut sse).await.value, 0);
            readers.push((
                format!("subscriber {i} of {name}"),
                tokio::spawn(collect(sse, until.clone())),
            ));
        }
    }
    // Increments on both, all the time: (status, value when 200, reason when 503).
    type Answer = (StatusCode, Option<u64>, Option<UnavailableReason>, bool);
    let answers: Arc<Mutex<Vec<Answer>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (a, b, answers, stop) = (
            Arc::clone(&a),
            Arc::clone(&b),
            Arc::clone(&answers),
            Arc::clone(&stop),
        );
        tokio::spawn(async move {
            for n in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let server = if n % 2 == 0 { &a } else { &b };
                let reply = server.post(INCREMENT).await;
                let answer = match reply.status {
                    StatusCode::OK => (
                        reply.status,
                        Some(reply.json_as::<shared::Incremented>().value),
                        None,
                        true,
                    ),
                    _ => (
                        reply.status,
                        None,
                        reply.error_body().reason,
                        reply.header("retry-after").is_some(),
                    ),
                };
                answers.lock().expect("answers").push(answer);
                // A steady pace: not a wait for anything.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let count = |status: StatusCode| {
        answers
            .lock()
            .expect("answers")
            .iter()
            .filter(|a| a.0 == status)
            .count()
    };
    let wait_for = async |status: StatusCode, n: usize| {
        poll_until(BUSY_LIMIT, &format!("{n} answers {status}"), async || {
            let seen = count(status);
            if seen >= n {
                Ok(())
            } else {
                Err(seen)
            }
        })
        .await
    };
    wait_for(StatusCode::OK, 50).await;
    redis.kill().await;
    unavailable(&a).await;
    unavailable(&b).await;
    wait_for(StatusCode::SERVICE_UNAVAILABLE, 10).await;
    // A new stream is not served from the copy meanwhile: 503, and when to come back.
    for server in [&a, &b] {
        let res = server.get(SHARED).await;
        assert_eq!(
            res.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "a new stream"
        );
        assert!(res.headers().contains_key("retry-after"), "a 503 says when");
        let reply = support::Reply::read_within(BUSY_LIMIT, res, "the 503's body").await;
        assert_eq!(
            reply.error_body().reason,
            Some(UnavailableReason::StoreUnavailable)
        );
    }
    let ok_before = count(StatusCode::OK);
    redis.restart().await;
    ready(&a).await;
    ready(&b).await;
    wait_for(StatusCode::OK, ok_before + 50).await;
    stop.store(true, Ordering::Relaxed);
    within_busy("the publisher to stop", publisher)
        .await
        .expect("publisher");

    let answers = answers.lock().expect("answers").clone();
    for (status, _, reason, retry_after) in &answers {
        match *status {
            StatusCode::OK => {}
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(*reason, Some(UnavailableReason::StoreUnavailable));
                assert!(retry_after, "a 503 says when to retry");
            }
            other => panic!("an increment answered {other}"),
        }
    }
    let last = redis.value().await;
    let ok: BTreeSet<u64> = answers.iter().filter_map(|a| a.1).collect();
    assert_eq!(ok.len(), count_ok(&answers), "no value answered twice");
    assert!(
        ok.iter().all(|v| *v <= last),
        "a value answered 200 is missing from Redis after the restart: {:?} > {last}",
        ok.last()
    );
    done.send(Some(last)).expect("readers listen");
    for (who, reader) in readers {
        let seen = within_busy(&who, reader).await.expect("reader task");
        // The streams stayed open through the outage, and nothing answered 200 is
        // missing from them.
        assert_every_value_once_in_order(&seen, 1, last, &who);
    }
    for (name, server) in [("A", &a), ("B", &b)] {
        let log = server.log();
        assert_eq!(
            log.matches("redis is unavailable").count(),
            1,
            "{name} says it once per outage:\n{log}"
        );
        assert_eq!(log.matches("redis is back").count(), 1, "{name}:\n{log}");
    }
}

fn count_ok(answers: &[(StatusCode, Option<u64>, Option<UnavailableReason>, bool)]) -> usize {
    answers.iter().filter(|a| a.0 == StatusCode::OK).count()
}

#[tokio::test]
async fn a_redis_url_pointing_nowhere_starts_serves_the_rest_and_recovers() {
    let port = free_port();
    let server = launch()
        .args(["--redis-url", &format!("redis://127.0.0.1:{port}")])
        .env("SSE_COUNTER_LOG", "info,server::store=debug")
        .start()
        .await;
    let health = server.fetch("/healthz").await;
    assert_eq!(health.status, StatusCode::OK);
    let health = health.json();
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["shared"], "unavailable", "{health}");

    for reply in [server.fetch(SHARED).await, server.post(INCREMENT).await] {
        assert_eq!(
            reply.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            reply.text()
        );
        assert!(reply.header("retry-after").is_some(), "Retry-After");
        assert_eq!(
            reply.error_body().reason,
            Some(UnavailableReason::StoreUnavailable)
        );
    }
    // Everything else is served.
    let mut counter = server.sse("/api/counter?count=1&interval_ms=1", &[]).await;
    assert_eq!(counter.tick().await.num, 1);

    // It keeps trying, and says so once, not at every attempt.
    poll_until(BUSY_LIMIT, "three attempts to reconnect", async || {
        let log = server.log();
        if log.matches("redis still unavailable").count() >= 2 {
            Ok(())
        } else {
            Err(log)
        }
    })
    .await;
    assert_eq!(server.log().matches("redis is unavailable").count(), 1);

    // Redis comes: the instance takes it up.
    let redis = Redis::start_on(Some(port)).await;
    ready(&server).await;
    assert_eq!(increment(&server).await, 1);
    let mut sse = server.sse(SHARED, &[]).await;
    assert_eq!(next_value(&mut sse).await.value, 1);
    assert_eq!(redis.value().await, 1);
    let log = server.log();
    assert!(log.contains("redis is back"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

#[tokio::test]
async fn redis_losing_its_data_resets_every_subscriber_with_ahead() {
    let redis = Redis::start().await;
    let a = instance(&redis.url(), &[]).await;
    let b = instance(&redis.url(), &[]).await;
    ready(&a).await;
    ready(&b).await;
    let mut on_a = a.sse(SHARED, &[]).await;
    let mut on_b = b.sse(SHARED, &[]).await;
    assert_eq!(next_value(&mut on_a).await.value, 0);
    assert_eq!(next_value(&mut on_b).await.value, 0);
    for _ in 0..5 {
        increment(&a).await;
    }
    for sse in [&mut on_a, &mut on_b] {
        for v in 1..=5 {
            assert_eq!(next_value(sse).await.value, v);
        }
    }
    redis.flush().await;
    let lost = Reset {
        value: 0,
        reason: ResetReason::Ahead,
    };
    for sse in [&mut on_a, &mut on_b] {
        assert_eq!(next_reset(sse).await, lost, "every live subscriber resets");
    }
    assert_eq!(increment(&b).await, 1, "the count starts again");
    for sse in [&mut on_a, &mut on_b] {
        assert_eq!(next_value(sse).await.value, 1, "then live");
    }
    // A browser that comes back with an id from before the loss resets too.
    let mut back = a.sse(SHARED, &[("Last-Event-ID", "5")]).await;
    assert_eq!(
        next_reset(&mut back).await,
        Reset {
            value: 1,
            reason: ResetReason::Ahead
        }
    );
}

#[tokio::test]
async fn nginx_streams_over_https_and_http2_unbuffered_and_resumes_by_last_event_id() {
    let redis = Redis::start().await;
    let a = instance(&redis.url(), &[]).await;
    ready(&a).await;
    let nginx = Nginx::start(&[a.addr]).await;
    increment(&a).await;
    increment(&a).await;

    // HTTP/2 by ALPN, as a browser gets it.
    let tls = nginx
        .tls_from([127, 0, 0, 1].into(), &[b"h2", b"http/1.1"])
        .await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (send, conn) = within("the HTTP/2 handshake", h2::client::handshake(tls))
        .await
        .expect("HTTP/2 handshake");
    let _driver = tokio::spawn(conn);
    let mut send = within("room for a stream", send.ready())
        .await
        .expect("HTTP/2 connection usable");
    let req = http::Request::get(format!("https://localhost:{}{SHARED}", nginx.addr.port()))
        .header("last-event-id", "1")
        .header("accept-encoding", "gzip")
        .body(())
        .expect("request");
    let (response, _) = send.send_request(req, true).expect("send the request");
    let response = within("the response head through nginx", response)
        .await
        .expect("response head");
    assert_eq!(response.status(), 200);
    let headers = response.headers();
    assert_eq!(headers["content-type"], "text/event-stream");
    assert!(
        headers.get("content-encoding").is_none(),
        "never compressed: {headers:?}"
    );
    let mut body = response.into_body();
    let mut text = String::new();
    let mut read_until = async |needle: &str| {
        while !text.contains(needle) {
            let chunk = within(&format!("{needle:?} through nginx"), body.data())
                .await
                .expect("more of the body")
                .expect("body data");
            let _ = body.flow_control().release_capacity(chunk.len());
            text.push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
        }
        text.clone()
    };
    let so_far = read_until(
        "id: 2
",
    )
    .await;
    assert!(
        !so_far.contains("id: 1\n"),
        "resumed after Last-Event-ID 1: {text}"
    );
    // A change made now comes through at once: nginx does not hold it back.
    let (status, made) = nginx.increment().await;
    assert_eq!((status, made), (200, Some(3)));
    read_until("id: 3\n").await;

    // The rest of the API passes through; the metrics do not.
    for (path, status) in [("/healthz", 200), ("/metrics", 404)] {
        let mut conn = nginx.https1().await;
        conn.get(path, &[("Connection", b"close")]).await;
        let head = conn.head().await;
        assert_eq!(head.status, status, "{path}: {}", head.raw);
        let body = conn.body(&head).await;
        if path == "/healthz" {
            let health: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
            assert_eq!(health["shared"], "ok");
        }
    }
    let errors = nginx.error_log();
    assert!(
        !errors.contains("[emerg]") && !errors.contains("[crit]"),
        "{errors}"
    );
}

/// The page's own `+1` through nginx: the browser's `POST` carries
/// `Origin: https://<host>:<port>`, which an instance takes as the page's own only if
/// nginx passes the Host on with its port (with `$host` it did not, and the page's
/// increments were refused with 403). Over HTTP/2, as a browser gets it, where the
/// host comes in `:authority`, and over HTTP/1.1.
#[tokio::test]
async fn behind_nginx_the_pages_own_increment_is_same_origin_and_another_sites_is_refused() {
    let redis = Redis::start().await;
    let a = instance(&redis.url(), &[]).await;
    ready(&a).await;
    let nginx = Nginx::start(&[a.addr]).await;
    let authority = format!("localhost:{}", nginx.addr.port());
    let page = format!("https://{authority}");
    let cases = [(page.as_str(), 200), ("https://elsewhere.example", 403)];

    let tls = nginx.tls_from([127, 0, 0, 1].into(), &[b"h2"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) = within("the HTTP/2 handshake", h2::client::handshake(tls))
        .await
        .expect("HTTP/2 handshake");
    let _driver = tokio::spawn(conn);
    for (origin, status) in cases {
        send = within("room for a stream", send.ready())
            .await
            .expect("HTTP/2 connection usable");
        let req = http::Request::post(format!("https://{authority}{INCREMENT}"))
            .header("origin", origin)
            .header("content-length", "0")
            .body(())
            .expect("request");
        let (response, _) = send.send_request(req, true).expect("send the request");
        let response = within("the answer through nginx", response)
            .await
            .expect("response head");
        assert_eq!(response.status(), status, "HTTP/2, Origin {origin}");
    }

    for (origin, status) in cases {
        let mut conn = nginx.https1().await;
        let headers = [
            ("Content-Length", &b"0"[..]),
            ("Connection", b"close"),
            ("Origin", origin.as_bytes()),
        ];
        conn.request("POST", INCREMENT, &authority, &headers).await;
        let head = conn.head().await;
        assert_eq!(
            head.status, status,
            "HTTP/1.1, Origin {origin}: {}",
            head.raw
        );
    }
    assert_eq!(redis.value().await, 2, "one increment taken per transport");
}

#[tokio::test]
async fn behind_nginx_the_rate_limit_counts_each_client_not_the_proxy() {
    let redis = Redis::start().await;
    // Bursts of 2, then 1 a second; 127.0.0.1 (nginx) is trusted.
    let a = instance(
        &redis.url(),
        &["--publish-rate", "1", "--trusted-proxy", "127.0.0.1"],
    )
    .await;
    ready(&a).await;
    let nginx = Nginx::start(&[a.addr]).await;
    let from = |last: u8| std::net::IpAddr::from([127, 0, 0, last]);
    let post = async |client: u8, claim: &str| {
        let mut conn = nginx.https1_from(from(client)).await;
        post_increment(&mut conn, &[("X-Forwarded-For", claim.as_bytes())])
            .await
            .0
    };
    // A client that claims to be someone else each time is still itself.
    assert_eq!(post(2, "198.51.100.1").await, 200);
    assert_eq!(post(2, "198.51.100.2").await, 200);
    assert_eq!(
        post(2, "198.51.100.3").await,
        429,
        "127.0.0.2's burst is spent"
    );
    // Another client has its own.
    assert_eq!(post(3, "198.51.100.1").await, 200);
    // Without --trusted-proxy, nginx is the client: everyone shares one budget.
    let b = instance(&redis.url(), &["--publish-rate", "1"]).await;
    ready(&b).await;
    let nginx = Nginx::start(&[b.addr]).await;
    let post = async |client: u8| {
        let mut conn = nginx.https1_from(from(client)).await;
        post_increment(&mut conn, &[]).await.0
    };
    assert_eq!(post(2).await, 200);
    assert_eq!(post(3).await, 200);
    assert_eq!(post(4).await, 429, "one budget for all: the proxy's");
}
