//! What the page does where the browser will not do its part. Where Web Locks are
//! missing (a page served over plain HTTP from an address that is not loopback is not a
//! secure context, and `navigator.locks` exists only in one), the tabs cannot share a
//! stream, and each joined tab holds its own (`own`). And where the server answers a
//! resume with `204 No Content`, the browser stops the per-client counter's stream for
//! good: no reconnect, ever.
//!
//! The other fallback, Web Locks present but `BroadcastChannel` missing, has no real
//! browser to run in: both engines have `BroadcastChannel` in every context, and
//! neither has a switch that removes it (only a script that deletes it would), so the
//! state machine's unit tests cover it alone.

use crate::harness::{EndCutter, Harness, Setup, Tab, WAIT};
use crate::support::within_for;
use serde_json::{json, Value};

/// This machine's own address that is not loopback (192.0.2.2 on the machines this ran
/// on), with port 0: plain HTTP from it is not a secure context. The address the kernel
/// would send from to a documentation address (a UDP `connect` sends nothing), else the
/// first global address `ip` lists; a machine with neither fails here, saying so.
fn not_loopback() -> String {
    let routed = std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("198.51.100.1:9").map(|()| s))
        .and_then(|s| s.local_addr())
        .ok()
        .map(|a| a.ip())
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified());
    let listed = || {
        let out = std::process::Command::new("ip")
            .args(["-4", "-o", "addr", "show", "scope", "global"])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let cidr = text
            .split_whitespace()
            .skip_while(|w| *w != "inet")
            .nth(1)?;
        cidr.split('/').next()?.parse::<std::net::IpAddr>().ok()
    };
    let ip = routed
        .or_else(listed)
        .expect("this test needs an IPv4 address that is not loopback (none found)");
    format!("{ip}:0")
}

/// What the page says when the browser closed the EventSource by itself.
const GAVE_UP: &str =
    "The browser gave up by itself (an HTTP error or a 204 answer): no reconnect.";

/// Runs `script` in the current tab; what it returns.
async fn run(h: &Harness, what: &str, script: &str, args: Vec<Value>) -> Value {
    within_for(WAIT, what, h.client.execute(script, args))
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// Served over plain HTTP from an address that is not loopback, the page is not a secure context: there is no
/// `navigator.locks` (there is a `BroadcastChannel`), so three tabs joined to the shared
/// counter hold a stream each, all three `own`, and each shows every change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn where_web_locks_are_missing_each_tab_holds_its_own_stream() {
    let addr = not_loopback();
    let setup = Setup::http().args(["--addr", &addr, "--publish-rate", "1000"]);
    Harness::scenario(setup, async |h| {
        assert!(
            !h.base.starts_with("http://127.") && !h.base.starts_with("http://localhost"),
            "{}",
            h.base
        );
        let mut tabs: Vec<Tab> = Vec::new();
        for i in 0..3 {
            tabs.push(if i == 0 {
                h.tab().await
            } else {
                h.new_tab().await
            });
            h.load("/").await;
            let apis = run(
                h,
                "what the page has of the APIs",
                "return [window.isSecureContext, typeof navigator.locks, typeof BroadcastChannel];",
                vec![],
            )
            .await;
            assert_eq!(
                apis,
                json!([false, "undefined", "function"]),
                "tab {}: secure context, navigator.locks, BroadcastChannel",
                i + 1
            );
            h.observe("shared-value").await;
            h.click("shared-join").await;
            h.wait_text("shared-state", "open").await;
            assert_eq!(h.text("shared-role").await, "own", "tab {}", i + 1);
        }
        h.wait_metric("sse_active_streams", 3.0).await;
        assert_eq!(h.metric("sse_shared_subscribers").await, 3.0);
        for want in 1..=3 {
            assert_eq!(h.increment().await, want);
        }
        for (i, tab) in tabs.iter().enumerate() {
            h.switch_to(tab).await;
            h.wait_text("shared-last-event-id", "3").await;
            let values: Vec<u64> = h
                .seen_texts("shared-value")
                .await
                .iter()
                .filter_map(|t| t.parse().ok())
                .collect();
            assert_eq!(values, [0, 1, 2, 3], "tab {}: every change once", i + 1);
            assert_eq!(h.text("shared-role").await, "own", "tab {}", i + 1);
        }
        assert_eq!(h.metric("sse_streams_total").await, 3.0);
        assert_eq!(h.metric("sse_active_streams").await, 3.0);
    })
    .await;
}

/// The per-client counter's connection fails right after its last tick, before `end`
/// (a proxy withholds `end` and closes the connection): the browser, close-on-error
/// off, reconnects with `Last-Event-ID: 3`, the server answers `204 No Content`, and
/// the browser closes the EventSource for good. The page shows `closed-on-error`, says
/// the browser gave up, and names the 204 (it asked the server why); the server saw
/// that one resume and never another, over a window of three of the engine's own
/// reconnection delays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_204_the_browser_never_reconnects() {
    Harness::scenario(Setup::http(), async |h| {
        let cutter = EndCutter::start(h.server().addr).await;
        h.base = format!("http://{}", cutter.addr);
        h.open_page().await;
        h.connect(3, 100, None, false).await;
        h.wait_text("state", "closed-on-error").await;
        assert_eq!(h.text("state-detail").await, GAVE_UP);
        // The page then asks the server why, and shows its answer.
        let error = h
            .wait_until("error", "the server's 204", |t| {
                t.contains("204 No Content")
            })
            .await;
        assert!(error.contains("after id 3"), "{error}");
        reconnection_delays(h, 3).await;
        // The stream's own requests: the first, and the one resume. (The page's question
        // carries its id in the query, not in the header, and goes by a URL of its own.)
        let stream = "GET /api/counter?count=3&interval_ms=100 HTTP/1.1";
        let resumes: Vec<Option<String>> = cutter
            .requests()
            .iter()
            .filter(|head| head.lines().next() == Some(stream))
            .map(|head| {
                head.lines()
                    .filter_map(|l| l.split_once(':'))
                    .find(|(k, _)| k.trim().eq_ignore_ascii_case("last-event-id"))
                    .map(|(_, v)| v.trim().to_owned())
            })
            .collect();
        assert_eq!(
            resumes,
            [None, Some("3".to_owned())],
            "the stream's requests, by their Last-Event-ID: {:#?}",
            cutter.requests()
        );
        let opened = h
            .server_log()
            .lines()
            .filter(|l| l.contains("stream opened") && l.contains(" count=3 "))
            .count();
        assert_eq!(opened, 1, "a 204 opens no stream");
        assert_eq!(h.counter_history().await, ["1", "2", "3"]);
        let [state, detail, reconnects] = h.texts(["state", "state-detail", "reconnects"]).await;
        assert_eq!(
            (state.as_str(), detail.as_str()),
            ("closed-on-error", GAVE_UP)
        );
        assert_eq!(reconnects, "0");
    })
    .await;
}

/// Waits until an EventSource of the current tab's own (not the page's), which the
/// server drops after each event (`drop_after=1`), has reconnected `n` times: each
/// reconnect comes after the same delay as any other EventSource's of this engine (the
/// server's `retry`), so the window is at least `n` such delays long, bounded by events
/// the server logs rather than by a sleep.
async fn reconnection_delays(h: &Harness, n: u64) {
    let url = "/api/counter?count=1000&interval_ms=20&drop_after=1";
    run(
        h,
        "opening the control EventSource",
        "window.__control = new EventSource(arguments[0]);",
        vec![json!(url)],
    )
    .await;
    h.server()
        .wait_for_log(&format!("count=1000 interval_ms=20 resume_after={n} "))
        .await;
    run(
        h,
        "closing the control EventSource",
        "window.__control.close();",
        vec![],
    )
    .await;
}
