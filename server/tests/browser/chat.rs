//! The "Channels" panel (issue 20), in real browsers: people sign in with the demo
//! sign-in, whose token the browser keeps in the `HttpOnly` cookie `sse_token` and sends
//! with the stream and the publishes. Two people in two browsers (separate profiles)
//! chat in `rooms/lobby`; a direct message shows only for its recipient; another user's
//! channel is refused; signing out in one tab ends the stream in another within a
//! second, and nothing reconnects; a 3 s session refreshes itself and keeps streaming;
//! markup in a message shows as text. And (issue 21) the tabs of one browser hold one
//! chat stream between them: a tab that joins a room makes the leader reopen it once,
//! for the union of the rooms, with no gap and no repeat; and the shared counter rides
//! on that same stream, so two tabs with both panels in use hold one stream.

use crate::harness::{now_ms, Harness, Setup, Tab, QUIET, WAIT};
use crate::support::{poll_until, tokens, TempDir};
use serde::Deserialize;
use serde_json::json;

/// The HS256 secret a backend signs its tokens with in the scenarios that publish.
const SECRET: &[u8] = b"a chat test secret of more than 32 bytes";

/// The demo sign-in on, with publishes fast enough for the scenarios.
const DEMO: [&str; 3] = ["--demo-login", "--channel-publish-rate", "1000"];

/// One message as the panel shows it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
struct Shown {
    id: String,
    channel: String,
    from: String,
    text: String,
    /// Child elements inside the message's text (markup would make some).
    elements: usize,
}

/// The current tab's messages, in order.
async fn messages(h: &Harness) -> Vec<Shown> {
    let js = r#"
        return [...document.querySelectorAll('[data-testid="chat-messages"] > *')].map((li) => {
            const text = li.querySelector(".text");
            return {
                id: li.dataset.id, channel: li.dataset.channel, from: li.dataset.from,
                text: text ? text.textContent : "", elements: text ? text.children.length : -1,
            };
        });
    "#;
    let v = h
        .client
        .execute(js, vec![])
        .await
        .expect("read the messages");
    serde_json::from_value(v).expect("messages")
}

/// Waits until the current tab shows `n` messages; returns them.
async fn wait_messages(h: &Harness, n: usize) -> Vec<Shown> {
    poll_until(WAIT, &format!("{n} messages in the chat"), async || {
        let shown = messages(h).await;
        if shown.len() >= n {
            Ok(shown)
        } else {
            Err(shown)
        }
    })
    .await
}

/// Signs in as `name` in the current tab and waits for the stream to be open.
async fn sign_in(h: &Harness, name: &str) {
    h.observe("chat-state").await;
    h.fill("chat-name", name).await;
    h.click("chat-sign-in").await;
    h.wait_text("chat-user", name).await;
    h.wait_text("chat-state", "open").await;
}

/// Sends `text` (to user `to`, or the current room when empty) from the current tab and
/// waits for the server's acceptance (the message box empties).
async fn send(h: &Harness, text: &str, to: &str) {
    h.fill("chat-to", to).await;
    h.fill("chat-input", text).await;
    h.click("chat-send").await;
    poll_until(WAIT, "the publish to be accepted", async || {
        let [error] = h.texts(["chat-error"]).await;
        let value: String = serde_json::from_value(
            h.client
                .execute(
                    r#"return document.querySelector('[data-testid="chat-input"]').value;"#,
                    vec![],
                )
                .await
                .expect("read the message box"),
        )
        .expect("a string");
        if value.is_empty() {
            Ok(())
        } else {
            Err((value, error))
        }
    })
    .await;
}

/// What a `fetch` from the current page answers: status and body. The browser sends
/// the page's cookie with it; the page itself cannot read the cookie.
async fn fetch(h: &Harness, path: &str) -> (u16, String) {
    let js = r#"
        const [path, done] = arguments;
        const ac = new AbortController();
        fetch(path, { signal: ac.signal }).then(async (r) => {
            // A stream that opens is answered 200 and never ends: read its status only.
            if (r.ok) { ac.abort(); done([r.status, ""]); } else { done([r.status, await r.text()]); }
        }, (e) => done([0, String(e)]));
    "#;
    let v = h
        .client
        .execute_async(js, vec![json!(path)])
        .await
        .expect("fetch from the page");
    serde_json::from_value(v).expect("status and body")
}

/// [`SECRET`] in a file of a temp dir (removed when the dir is dropped), and the file's
/// path for `--jwt-secret-file`: the demo sign-in then signs with it too.
fn backend_key() -> (TempDir, String) {
    let dir = TempDir::new("chat-secret");
    let key = dir.path().join("secret");
    std::fs::write(&key, SECRET).expect("write the secret");
    let path = key.display().to_string();
    (dir, path)
}

/// A backend's token for publishing to the rooms, signed with [`SECRET`].
fn backend_token() -> String {
    tokens::sign(SECRET, &tokens::claims("bot", 60, &["rooms/*"], &[]))
}

/// Signs in as `name` in the current tab, opens a second tab of the same browser (signed
/// in by the cookie) and waits for its panel to be open and observed; returns the first
/// tab, the second being current.
async fn two_tabs_signed_in(h: &Harness, name: &str) -> Tab {
    let first = h.tab().await;
    h.load("/").await;
    sign_in(h, name).await;
    h.new_tab().await;
    h.load("/").await;
    h.observe("chat-state").await;
    h.wait_text("chat-user", name).await;
    h.wait_text("chat-state", "open").await;
    first
}

/// Waits for the current tab (whose `chat-state` is observed) to show `signed-out`,
/// and checks that it did within a second of `clicked` (ms since the epoch).
async fn signed_out_within_a_second(h: &Harness, clicked: u64, what: &str) {
    h.wait_text("chat-state", "signed-out").await;
    let ended = h
        .seen("chat-state")
        .await
        .into_iter()
        .find(|(s, _)| s == "signed-out")
        .map(|(_, at)| at)
        .unwrap_or_else(|| panic!("{what} showed no signed-out"));
    let took = ended.saturating_sub(clicked);
    assert!(
        took < 1_000,
        "{what} was signed out {took} ms after the click"
    );
}

fn texts(shown: &[Shown]) -> Vec<&str> {
    shown.iter().map(|m| m.text.as_str()).collect()
}

/// Two people, each in a browser of their own: a room, a direct message, another
/// user's channel refused, markup shown as text, the cookie out of the page's reach.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_people_chat_and_a_direct_message_shows_only_for_its_recipient() {
    Harness::scenario(Setup::http().args(DEMO), async |h| {
        h.load("/").await;
        assert_eq!(h.text("chat-state").await, "signed-out");
        assert_eq!(h.text("chat-user").await, "");
        sign_in(h, "ann").await;
        let mut bob = h.second_browser().await;
        h.swap_browser(&mut bob);
        h.load("/").await;
        assert_eq!(
            h.text("chat-state").await,
            "signed-out",
            "another browser has no cookie"
        );
        sign_in(h, "bob").await;
        send(h, "hello ann", "").await;
        let markup =
            "<b>bold</b><img src=x onerror=\"window.__pwned=1\"><script>window.__pwned=1</script>";
        send(h, markup, "").await;
        send(h, "psst, just you", "ann").await;
        let bobs = wait_messages(h, 2).await;
        h.swap_browser(&mut bob);
        let anns = wait_messages(h, 3).await;
        assert_eq!(texts(&anns), ["hello ann", markup, "psst, just you"]);
        assert!(anns.iter().all(|m| m.from == "bob"), "{anns:?}");
        assert_eq!(anns[0].channel, "rooms/lobby");
        assert_eq!(anns[2].channel, "users/ann");
        assert_eq!(anns[1].elements, 0, "markup is shown as text: {anns:?}");
        let pwned = h
            .client
            .execute("return window.__pwned === undefined;", vec![])
            .await
            .expect("read the page");
        assert_eq!(pwned, json!(true), "no script of a message ran");
        // Bob saw the room's messages, with the same ids, and not his direct message.
        h.swap_browser(&mut bob);
        let bob_shot = h.shot_of("section.chat").await;
        let bobs_now = messages(h).await;
        assert_eq!(bobs_now.len(), 2, "{bobs_now:?}");
        assert_eq!(bobs_now, bobs);
        assert_eq!(
            bobs.iter().map(|m| &m.id).collect::<Vec<_>>(),
            anns[..2].iter().map(|m| &m.id).collect::<Vec<_>>()
        );
        h.swap_browser(&mut bob);
        let ann_shot = h.shot_of("section.chat").await;
        // Ann's cookie is HttpOnly: the page cannot read it; the browser sends it.
        let cookie = h
            .client
            .execute("return document.cookie;", vec![])
            .await
            .expect("read document.cookie");
        assert!(
            !cookie.as_str().unwrap_or("").contains("sse_token"),
            "{cookie}"
        );
        // Bob's channel is refused to Ann's cookie, naming the channel; Ann's own is not.
        let (status, body) = fetch(h, "/api/events?channel=users%2Fbob").await;
        assert_eq!(status, 403, "{body}");
        assert!(body.contains("users/bob"), "{body}");
        assert_eq!(fetch(h, "/api/events?channel=users%2Fann").await.0, 200);
        if let (Some(ann_shot), Some(bob_shot)) = (ann_shot, bob_shot) {
            let tiles = [
                ("ann's browser".to_owned(), ann_shot),
                ("bob's browser (another profile)".to_owned(), bob_shot),
            ];
            h.composite(
                "chat-two-people",
                "two people in rooms/lobby; bob's direct message shows only for ann",
                2,
                &tiles,
            )
            .await;
        }
        bob.close().await;
    })
    .await;
}

/// Signing out in one tab revokes the session: the other tab's stream ends with
/// `revoked` within a second, the panel says signed out, and nothing reconnects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_out_in_one_tab_ends_the_stream_in_another_within_a_second() {
    // `?share=0`: each tab holds its own stream, so the other tab's ends by revocation
    // and not because a shared stream's leader went.
    Harness::scenario(Setup::http().args(DEMO), async |h| {
        let first = h.tab().await;
        h.load("/?share=0").await;
        sign_in(h, "ann").await;
        let second = h.new_tab().await;
        h.load("/?share=0").await;
        h.observe("chat-state").await;
        h.wait_text("chat-user", "ann").await;
        h.wait_text("chat-state", "open").await;
        h.wait_metric("sse_channel_subscriptions", 4.0).await;
        send(h, "signing out in my other tab now", "").await;
        wait_messages(h, 1).await;
        let before = h.shot_of("section.chat").await;
        let revoked_before = h.metric("sse_disconnects_total{reason=\"revoked\"}").await;
        h.switch_to(&first).await;
        let clicked = now_ms();
        h.click("chat-sign-out").await;
        h.wait_text("chat-state", "signed-out").await;
        h.switch_to(&second).await;
        signed_out_within_a_second(h, clicked, "the other tab").await;
        assert_eq!(h.text("chat-user").await, "");
        if let (Some(before), Some(after)) = (before, h.shot_of("section.chat").await) {
            let tiles = [
                ("ann's second tab, open".to_owned(), before),
                (
                    "the same tab, after ann signed out in her first: revoked, signed out"
                        .to_owned(),
                    after,
                ),
            ];
            h.composite(
                "chat-signed-out",
                "signing out in one tab ends the stream in another within a second",
                2,
                &tiles,
            )
            .await;
        }
        h.wait_metric("sse_channel_subscriptions", 0.0).await;
        assert!(
            h.metric("sse_disconnects_total{reason=\"revoked\"}").await > revoked_before,
            "the server ended the stream as revoked"
        );
        // Nothing reconnects: the panel stays signed out and the server holds no stream.
        let streams = h.metric("sse_streams_total").await;
        tokio::time::sleep(QUIET).await;
        assert_eq!(h.metric("sse_streams_total").await, streams);
        assert_eq!(
            h.seen_texts("chat-state").await.last().map(String::as_str),
            Some("signed-out")
        );
    })
    .await;
}

/// A session of 3 s: the page refreshes it before each `exp`, each stream ends with
/// `expired` at its token's `exp`, and the page reopens after the last id with the new
/// cookie: every message arrives once, in order, across three token lives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_second_session_refreshes_itself_and_keeps_streaming() {
    let (_secret, key_arg) = backend_key();
    let setup = Setup::http().args(DEMO).args([
        "--demo-session-ttl-secs",
        "3",
        "--jwt-secret-file",
        &key_arg,
    ]);
    Harness::scenario(setup, async |h| {
        h.load("/").await;
        sign_in(h, "ann").await;
        // A backend publishes to the lobby with a token of its own, steadily, for about
        // three token lives.
        let token = backend_token();
        let start = now_ms();
        let mut sent = Vec::new();
        let mut n = 0;
        while now_ms() - start < 8_000 {
            n += 1;
            let text = format!("tick {n}");
            h.publish(&token, "rooms/lobby", json!({"text": text}))
                .await;
            sent.push(text);
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
        let shown = wait_messages(h, sent.len()).await;
        assert_eq!(texts(&shown), sent, "every message once, in order");
        assert!(
            h.metric("sse_disconnects_total{reason=\"expired\"}").await >= 2.0,
            "streams ended at their tokens' exp"
        );
        assert_eq!(h.text("chat-user").await, "ann");
        h.wait_text("chat-state", "open").await;
        // Signed out before the sign-in only; never closed.
        let states = h.seen_texts("chat-state").await;
        assert!(
            states[1..]
                .iter()
                .all(|s| s != "signed-out" && s != "closed"),
            "{states:?}"
        );
        assert!(
            states.iter().filter(|s| *s == "reconnecting").count() >= 2,
            "each token's end showed as a reconnect: {states:?}"
        );
    })
    .await;
}

/// Two tabs of one browser share one chat stream; when one joins a room, the leader
/// reopens the stream once for the union, after the last id: while a backend publishes
/// to the lobby throughout, both tabs show every message once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tab_that_joins_a_room_makes_one_reopen_with_no_gap() {
    let (_secret, key_arg) = backend_key();
    let setup = Setup::http()
        .args(DEMO)
        .args(["--jwt-secret-file", &key_arg]);
    Harness::scenario(setup, async |h| {
        let token = backend_token();
        let first = two_tabs_signed_in(h, "ann").await;
        h.wait_text("chat-role", "follower").await;
        h.wait_metric("sse_channel_subscriptions", 2.0).await;
        let opened = h.metric("sse_streams_total").await;
        let mut sent = Vec::new();
        for n in 1..=20 {
            if n == 8 {
                h.fill("chat-room", "games").await;
                h.click("chat-join").await;
            }
            let text = format!("lobby {n}");
            h.publish(&token, "rooms/lobby", json!({"text": text}))
                .await;
            sent.push(text);
        }
        h.publish(&token, "rooms/games", json!({"text": "games 1"}))
            .await;
        let mut all = sent.clone();
        all.push("games 1".into());
        let in_second = wait_messages(h, all.len()).await;
        assert_eq!(texts(&in_second), all, "the joining tab");
        h.switch_to(&first).await;
        let in_first = wait_messages(h, sent.len()).await;
        assert_eq!(
            texts(&in_first),
            sent,
            "the first tab shows its own rooms only, though the stream carries both"
        );
        // One stream for the two tabs (three channels), opened once more for the union.
        h.wait_metric("sse_channel_subscriptions", 3.0).await;
        assert_eq!(h.metric("sse_active_streams").await, 1.0);
        assert_eq!(h.metric("sse_streams_total").await, opened + 1.0);
    })
    .await;
}

/// The numbers the current tab's shared value showed, in order (an observed element
/// records a text again only after another, so a repeated value shows as going back).
async fn values_seen(h: &Harness) -> Vec<u64> {
    h.seen_texts("shared-value")
        .await
        .iter()
        .filter_map(|t| t.parse().ok())
        .collect()
}

/// The shared counter and the chat in two tabs of one browser: one group, so one
/// stream on the server for the counter and every channel. A tab joining a room makes
/// exactly one reopen, and while the counter changes and a backend publishes to the
/// lobby throughout, both tabs show every value and every message once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_counter_and_the_chat_share_one_stream_and_a_room_joined_reopens_it_once() {
    let (_secret, key_arg) = backend_key();
    let setup =
        Setup::http()
            .args(DEMO)
            .args(["--jwt-secret-file", &key_arg, "--publish-rate", "1000"]);
    Harness::scenario(setup, async |h| {
        let token = backend_token();
        let first = h.tab().await;
        h.load("/?shared=1").await;
        h.observe("shared-value").await;
        h.wait_text("shared-state", "open").await;
        sign_in(h, "ann").await;
        h.new_tab().await;
        h.load("/?shared=1").await;
        h.observe("shared-value").await;
        h.observe("chat-state").await;
        h.wait_text("shared-state", "open").await;
        h.wait_text("chat-user", "ann").await;
        h.wait_text("chat-state", "open").await;
        h.wait_text("shared-role", "follower").await;
        h.wait_text("chat-role", "follower").await;
        // The handover from `/api/shared` to `/api/events` is over: one stream for the
        // browser, with the counter, the lobby and ann's own channel.
        h.wait_metric("sse_active_streams", 1.0).await;
        h.wait_metric("sse_channel_subscriptions", 3.0).await;
        let opened = h.metric("sse_streams_total").await;
        let mut sent = Vec::new();
        let mut last = 0;
        for n in 1..=20 {
            if n == 8 {
                h.fill("chat-room", "games").await;
                h.click("chat-join").await;
            }
            last = h.increment().await;
            let text = format!("lobby {n}");
            h.publish(&token, "rooms/lobby", json!({"text": text}))
                .await;
            sent.push(text);
        }
        h.publish(&token, "rooms/games", json!({"text": "games 1"}))
            .await;
        let mut all = sent.clone();
        all.push("games 1".into());
        let in_second = wait_messages(h, all.len()).await;
        assert_eq!(texts(&in_second), all, "the joining tab");
        h.wait_text("shared-value", &last.to_string()).await;
        let values = values_seen(h).await;
        assert_eq!(
            values,
            (values[0]..=last).collect::<Vec<_>>(),
            "the joining tab: every value once, in order"
        );
        h.switch_to(&first).await;
        let in_first = wait_messages(h, sent.len()).await;
        assert_eq!(
            texts(&in_first),
            sent,
            "the first tab shows its own rooms only"
        );
        h.wait_text("shared-value", &last.to_string()).await;
        assert_eq!(
            values_seen(h).await,
            (0..=last).collect::<Vec<_>>(),
            "the first tab: every value once, in order, across the handover and the reopen"
        );
        // Still one stream (four channels now), opened once more for the union.
        h.wait_metric("sse_channel_subscriptions", 4.0).await;
        assert_eq!(h.metric("sse_active_streams").await, 1.0);
        assert_eq!(h.metric("sse_streams_total").await, opened + 1.0);
    })
    .await;
}

/// A network loss (the proxy cuts every connection and refuses new ones for a while):
/// the leader's browser reconnects with `Last-Event-ID`, and both tabs catch up on what
/// was published meanwhile, with no gap and no repeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_network_loss_the_chat_catches_up_with_no_gap_or_repeat() {
    let (_secret, key_arg) = backend_key();
    let setup = Setup::http()
        .proxied()
        .args(DEMO)
        .args(["--jwt-secret-file", &key_arg]);
    Harness::scenario(setup, async |h| {
        let token = backend_token();
        let first = two_tabs_signed_in(h, "ann").await;
        let mut sent = Vec::new();
        for n in 1..=9 {
            if n == 4 {
                h.proxy().refuse(true);
                h.proxy().cut();
            }
            if n == 7 {
                h.proxy().refuse(false);
            }
            let text = format!("m {n}");
            h.publish(&token, "rooms/lobby", json!({"text": text}))
                .await;
            sent.push(text);
        }
        for tab in [h.tab().await, first] {
            h.switch_to(&tab).await;
            let shown = wait_messages(h, sent.len()).await;
            assert_eq!(texts(&shown), sent, "every message once, in order");
            h.wait_text("chat-state", "open").await;
            assert!(
                h.seen_texts("chat-state")
                    .await
                    .contains(&"reconnecting".to_owned()),
                "the loss showed"
            );
        }
    })
    .await;
}

/// A stream the server refuses (here `503`: every stream of `--max-streams` is taken)
/// is given up by the browser for good; the page, still signed in, retries by itself
/// after a wait that doubles while it fails, and opens once a stream is free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_chat_stream_is_retried_by_the_page_until_it_opens() {
    let (_secret, key_arg) = backend_key();
    let setup =
        Setup::http()
            .args(DEMO)
            .args(["--jwt-secret-file", &key_arg, "--max-streams", "2"]);
    Harness::scenario(setup, async |h| {
        // Both streams taken by someone else.
        let url = format!("{}{}", h.server().base, shared::paths::SHARED);
        let client = crate::support::client();
        let mut taken = Vec::new();
        for _ in 0..2 {
            let res = client.get(&url).send().await.expect("a stream");
            assert_eq!(res.status(), 200);
            taken.push(res);
        }
        h.wait_metric("sse_active_streams", 2.0).await;
        h.load("/").await;
        h.observe("chat-state").await;
        h.fill("chat-name", "ann").await;
        h.click("chat-sign-in").await;
        h.wait_text("chat-user", "ann").await;
        h.wait_until("chat-state", "the page waiting to retry", |s| {
            s == "reconnecting"
        })
        .await;
        drop(taken.pop());
        h.wait_text("chat-state", "open").await;
        let id = h
            .publish(&backend_token(), "rooms/lobby", json!({"text": "through"}))
            .await;
        let shown = wait_messages(h, 1).await;
        assert_eq!(
            (shown[0].id.as_str(), shown[0].text.as_str()),
            (id.as_str(), "through")
        );
        let states = h.seen_texts("chat-state").await;
        assert!(
            states.contains(&"closed".to_owned()),
            "the browser gave up once: {states:?}"
        );
    })
    .await;
}

/// With the stream shared, the sign-out may come from the tab that holds it (the
/// leader, whose stream closes with its sign-out) or from a follower (whose leader's
/// stream the server ends as `revoked`): either way every other tab of the browser shows
/// `signed-out` within a second, and no stream is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_out_in_a_shared_tab_signs_out_every_tab_within_a_second() {
    Harness::scenario(Setup::http().args(DEMO), async |h| {
        for out_of in ["leader", "follower"] {
            let first = two_tabs_signed_in(h, "ann").await;
            let second = h.tab().await;
            let roles = [(&first, "leader"), (&second, "follower")];
            for (tab, role) in roles {
                h.switch_to(tab).await;
                h.wait_text("chat-role", role).await;
            }
            let (leaving, staying) = if out_of == "leader" {
                (&first, &second)
            } else {
                (&second, &first)
            };
            h.switch_to(staying).await;
            h.observe("chat-state").await;
            h.switch_to(leaving).await;
            let clicked = now_ms();
            h.click("chat-sign-out").await;
            h.switch_to(staying).await;
            let what = format!("after a sign-out in the {out_of}, the other tab");
            signed_out_within_a_second(h, clicked, &what).await;
            h.wait_metric("sse_channel_subscriptions", 0.0).await;
            // The next round starts from a fresh pair of tabs.
            h.switch_to(leaving).await;
            h.close_tab().await;
            h.switch_to(staying).await;
        }
    })
    .await;
}
