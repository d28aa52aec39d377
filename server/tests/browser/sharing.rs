//! One stream per browser, however many tabs (issue 21): the tabs of one browser that
//! join the shared counter hold one stream between them. The tab that holds the Web
//! Lock (the `leader`) opens it and passes every event to the others (`follower`) over a
//! `BroadcastChannel`; when it goes, or its connection does, the stream comes back after
//! the last id the tabs saw, and no tab misses or repeats a change. `?share=0` gives a
//! tab a stream of its own.
//!
//! The handovers are timed from the moment just before the test acts (closes the tab,
//! navigates it, cuts the connection) to the moment the server opened the next stream,
//! by the server's own log line, so that the time is the browsers' and the server's,
//! not the test's polling.

use crate::harness::{log_time_ms, now_ms, Harness, Setup, Tab, WAIT};
use crate::support::poll_until;
use std::ops::RangeInclusive;

/// Room for every increment the scenarios make at once (the default is 10 a second).
const FAST: [&str; 2] = ["--publish-rate", "1000"];

/// Opens `n` tabs on `path`, each recording what its panel's value, state and role
/// show, joins in each, and waits for each to be `open`.
async fn tabs_joined(h: &Harness, n: usize, path: &str) -> Vec<Tab> {
    let mut tabs = Vec::new();
    for i in 0..n {
        tabs.push(if i == 0 {
            h.tab().await
        } else {
            h.new_tab().await
        });
        h.load(path).await;
        for testid in ["shared-value", "shared-state", "shared-role"] {
            h.observe(testid).await;
        }
        h.click("shared-join").await;
        h.wait_text("shared-state", "open").await;
    }
    tabs
}

/// Each tab's role, read tab by tab.
async fn roles(h: &Harness, tabs: &[Tab]) -> Vec<String> {
    let mut out = Vec::new();
    for tab in tabs {
        h.switch_to(tab).await;
        out.push(h.text("shared-role").await);
    }
    out
}

/// Waits until exactly one of `tabs` leads and the others follow; the leader's index.
async fn the_leader(h: &Harness, tabs: &[Tab]) -> usize {
    poll_until(WAIT, "one leader and the rest followers", async || {
        let roles = roles(h, tabs).await;
        let leaders: Vec<usize> = (0..roles.len()).filter(|&i| roles[i] == "leader").collect();
        let followers = roles.iter().filter(|r| *r == "follower").count();
        match leaders.as_slice() {
            [one] if followers == tabs.len() - 1 => Ok(*one),
            _ => Err(roles),
        }
    })
    .await
}

/// The numbers the current tab's shared value showed, in order.
async fn values_seen(h: &Harness) -> Vec<u64> {
    h.seen_texts("shared-value")
        .await
        .iter()
        .filter_map(|t| t.parse().ok())
        .collect()
}

/// How long a handover may take, from the leader's tab closing, navigating away or
/// losing its connection to the next stream being open on the server (issue 21).
const HANDOVER_MS: u64 = 1_000;

/// How many lines the server has logged so far: a mark for [`reopened`].
fn log_mark(h: &Harness) -> usize {
    h.server_log().lines().count()
}

/// The value of `key=` in a log line, up to the next space.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let needle = format!(" {key}=");
    let (_, rest) = line.split_once(&needle)?;
    rest.split_whitespace().next()
}

/// The shared stream that is open now among those the server opened after the log's
/// first `mark` lines: how many ms after `at` (ms since the epoch) it opened, and its
/// log line. Waits until exactly one of them has not ended (a navigation may open one
/// more for a moment, see below).
async fn reopened(h: &Harness, mark: usize, at: u64) -> (u64, String) {
    poll_until(
        WAIT,
        "one shared stream opened since the mark and still open",
        async || {
            let log = h.server_log();
            let after: Vec<&str> = log.lines().skip(mark).collect();
            let ended: Vec<&str> = after
                .iter()
                .filter(|l| l.contains("stream ended") || l.contains("client dropped the stream"))
                .filter_map(|l| field(l, "stream"))
                .collect();
            let open: Vec<&str> = after
                .iter()
                .copied()
                .filter(|l| l.contains("shared stream opened"))
                .filter(|l| field(l, "stream").is_some_and(|id| !ended.contains(&id)))
                .collect();
            match open.as_slice() {
                [line] => {
                    let opened = log_time_ms(line)
                        .unwrap_or_else(|| panic!("no timestamp in the log line {line:?}"));
                    Ok((opened.saturating_sub(at), (*line).to_owned()))
                }
                _ => Err(after.join("\n")),
            }
        },
    )
    .await
}

/// Makes the changes `values` (straight to the server), then waits until every tab has
/// the last of them.
async fn increment_until_all_see(h: &Harness, tabs: &[Tab], values: RangeInclusive<u64>) {
    let last = *values.end();
    for want in values {
        assert_eq!(h.increment().await, want);
    }
    for tab in tabs {
        h.switch_to(tab).await;
        h.wait_text("shared-last-event-id", &last.to_string()).await;
    }
}

/// Waits in every tab for the last event id `last`, then checks that each showed every
/// value from `first` to `last` once, in order.
async fn every_tab_saw(h: &Harness, tabs: &[Tab], first: u64, last: u64) {
    let want: Vec<u64> = (first..=last).collect();
    for (i, tab) in tabs.iter().enumerate() {
        h.switch_to(tab).await;
        h.wait_text("shared-last-event-id", &last.to_string()).await;
        assert_eq!(
            values_seen(h).await,
            want,
            "tab {}: every change once, in order",
            i + 1
        );
    }
}

/// Over HTTP/1.1, where a browser holds at most six connections to an origin, ten tabs
/// joined to the shared counter hold exactly one stream on the server, and all ten show
/// each of 30 changes, in order; a `+1` in a follower works too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_tabs_over_http1_hold_one_stream_and_all_see_every_change() {
    Harness::scenario(Setup::http().args(FAST), async |h| {
        let tabs = tabs_joined(h, 10, "/").await;
        let leader = the_leader(h, &tabs).await;
        assert_eq!(leader, 0, "the first tab to join leads");
        h.wait_metric("sse_active_streams", 1.0).await;
        assert_eq!(h.metric("sse_shared_subscribers").await, 1.0);
        for want in 1..=30 {
            assert_eq!(h.increment().await, want);
        }
        every_tab_saw(h, &tabs, 0, 30).await;
        // One stream, the whole time: the server never opened another.
        assert_eq!(h.metric("sse_streams_total").await, 1.0);
        assert_eq!(h.metric("sse_active_streams").await, 1.0);
        // +1 from the last tab, a follower, reaches the first.
        h.switch_to(&tabs[9]).await;
        h.click("shared-increment").await;
        h.switch_to(&tabs[0]).await;
        h.wait_text("shared-last-event-id", "31").await;
        h.switch_to(&tabs[9]).await;
        h.wait_text("shared-last-event-id", "31").await;
        assert_eq!(h.text("shared-increment-error").await, "");
        if h.takes_screenshots() {
            let streams = h.metric("sse_active_streams").await;
            let (width, height) = h.window_size().await;
            h.set_window_size(700, height).await;
            let mut tiles = Vec::new();
            for (i, tab) in tabs.iter().enumerate() {
                h.switch_to(tab).await;
                let [role, state] = h.texts(["shared-role", "shared-state"]).await;
                // The panel without its explanations, so that ten fit in one picture.
                h.client
                    .execute(
                        "document.querySelectorAll('section.shared .fine')\
                         .forEach((p) => { p.hidden = true; });",
                        vec![],
                    )
                    .await
                    .expect("hiding the fine print");
                let png = h
                    .shot_of("section.shared")
                    .await
                    .expect("screenshots wanted");
                tiles.push((format!("tab {}: {state}, {role}", i + 1), png));
            }
            h.set_window_size(width, height).await;
            h.composite(
                "tabs-shared-http1",
                &format!(
                    "HTTP/1.1: ten tabs joined to the shared counter, one stream on the \
                     server (sse_active_streams {streams})"
                ),
                2,
                &tiles,
            )
            .await;
        }
    })
    .await;
}

/// The leader tab is closed while changes are being made: another tab takes the lock
/// within a second and resumes after the last id the tabs saw; every remaining tab
/// shows every change once, in order. Then the new leader navigates away, and the same
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_leader_tab_closes_another_takes_over_with_no_gap_or_repeat() {
    Harness::scenario(Setup::http().args(FAST), async |h| {
        let mut tabs = tabs_joined(h, 4, "/").await;
        assert_eq!(the_leader(h, &tabs).await, 0);
        increment_until_all_see(h, &tabs, 1..=5).await;
        h.switch_to(&tabs[0]).await;
        let mark = log_mark(h);
        let closed = now_ms();
        h.close_tab().await;
        tabs.remove(0);
        // Changes go on while the lock changes hands.
        for want in 6..=10 {
            assert_eq!(h.increment().await, want);
        }
        let leader = the_leader(h, &tabs).await;
        h.switch_to(&tabs[leader]).await;
        let took = h
            .seen("shared-role")
            .await
            .into_iter()
            .find(|(role, _)| role == "leader")
            .map(|(_, at)| at)
            .expect("the new leader showed its role");
        let led = took.saturating_sub(closed);
        every_tab_saw(h, &tabs, 0, 10).await;
        for (i, tab) in tabs.iter().enumerate() {
            h.switch_to(tab).await;
            assert_eq!(
                h.seen_texts("shared-state").await,
                ["idle", "connecting", "open"],
                "tab {}: the takeover shows in no panel",
                i + 2
            );
        }
        h.wait_metric("sse_active_streams", 1.0).await;
        assert_eq!(h.metric("sse_streams_total").await, 2.0);
        let (open, line) = reopened(h, mark, closed).await;
        eprintln!(
            "{}: the leader closed; the next tab led after {led} ms, its stream was open \
             on the server after {open} ms",
            h.engine.name()
        );
        assert!(
            ["5", "6", "7"].contains(&field(&line, "last_event_id").unwrap_or("")),
            "the new stream did not resume where the tabs were: {line}"
        );
        assert!(
            open <= HANDOVER_MS,
            "the next stream opened {open} ms after the leader's tab closed: {line}"
        );
        // The new leader navigates away (it loads the page again, not joined): the next
        // tab takes over in the same way.
        h.switch_to(&tabs[leader]).await;
        let mark = log_mark(h);
        let navigated = now_ms();
        h.load("/").await;
        let gone = tabs.remove(leader);
        for want in 11..=15 {
            assert_eq!(h.increment().await, want);
        }
        the_leader(h, &tabs).await;
        every_tab_saw(h, &tabs, 0, 15).await;
        h.wait_metric("sse_active_streams", 1.0).await;
        // A navigation stops the page's loads before it hides: the leader's stream fails,
        // and its browser may reopen it for a moment on the way out (an extra stream
        // that sends nothing; the other tabs show `reconnecting` until the new leader's
        // opens). Either way the new leader's stream resumed after 10.
        let log = h.server_log();
        let resumed = log
            .lines()
            .filter(|l| l.contains("shared stream opened") && l.contains("last_event_id=10 "))
            .count();
        assert!((1..=2).contains(&resumed), "the streams after 10:\n{log}");
        assert!(h.metric("sse_streams_total").await <= 4.0);
        let (open, line) = reopened(h, mark, navigated).await;
        eprintln!(
            "{}: the leader navigated away; the next stream was open on the server after \
             {open} ms",
            h.engine.name()
        );
        assert_eq!(field(&line, "last_event_id"), Some("10"), "{line}");
        assert!(
            open <= HANDOVER_MS,
            "the next stream opened {open} ms after the leader navigated away: {line}"
        );
        h.switch_to(&gone).await;
        assert_eq!(h.text("shared-state").await, "idle");
    })
    .await;
}

/// The leader's own connection is cut (the proxy closes it, and every other): the
/// leader reopens its stream after the last id, every tab shows `reconnecting` then
/// `open`, and all catch up on what was made meanwhile, with no gap or repeat. Once
/// while the proxy refuses new connections for a while (the quick reopen fails, the
/// browser retries), then once timed: the stream is open again within [`HANDOVER_MS`]
/// of the cut with the server's default `retry` of 3 s, because the page reopens a
/// dropped stream by itself, after less than a second, instead of waiting for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_leaders_connection_drops_every_tab_catches_up() {
    let setup = Setup::http().proxied().args(FAST).retry_ms(3_000);
    Harness::scenario(setup, async |h| {
        let tabs = tabs_joined(h, 3, "/").await;
        assert_eq!(the_leader(h, &tabs).await, 0);
        increment_until_all_see(h, &tabs, 1..=2).await;
        h.proxy().refuse(true);
        h.proxy().cut();
        for want in 3..=5 {
            assert_eq!(h.increment().await, want);
        }
        h.proxy().refuse(false);
        every_tab_saw(h, &tabs, 0, 5).await;
        for (i, tab) in tabs.iter().enumerate() {
            h.switch_to(tab).await;
            assert_eq!(
                h.seen_texts("shared-state").await,
                ["idle", "connecting", "open", "reconnecting", "open"],
                "tab {}",
                i + 1
            );
            assert_eq!(h.text("shared-reconnects").await, "1", "tab {}", i + 1);
        }
        assert_eq!(the_leader(h, &tabs).await, 0, "the leader stayed");
        h.wait_metric("sse_active_streams", 1.0).await;
        let log = h.server_log();
        assert!(
            log.lines()
                .any(|l| l.contains("shared stream opened") && l.contains("last_event_id=2 ")),
            "no stream resumed after 2:\n{log}"
        );
        // Timed: a cut, and the changes made while the leader reconnects.
        let mark = log_mark(h);
        let cut = now_ms();
        h.proxy().cut();
        for want in 6..=8 {
            assert_eq!(h.increment().await, want);
        }
        every_tab_saw(h, &tabs, 0, 8).await;
        h.wait_metric("sse_active_streams", 1.0).await;
        let (open, line) = reopened(h, mark, cut).await;
        eprintln!(
            "{}: the leader's connection was cut; its stream was open on the server again \
             after {open} ms",
            h.engine.name()
        );
        assert_eq!(field(&line, "last_event_id"), Some("5"), "{line}");
        assert!(
            open <= HANDOVER_MS,
            "the stream opened again {open} ms after the cut: {line}"
        );
        for (i, tab) in tabs.iter().enumerate() {
            h.switch_to(tab).await;
            assert_eq!(h.text("shared-reconnects").await, "2", "tab {}", i + 1);
        }
        assert_eq!(the_leader(h, &tabs).await, 0, "the leader stayed");
    })
    .await;
}

/// `?share=0`: each such tab holds a stream of its own (`own`), next to the shared one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn share_0_gives_a_tab_its_own_stream() {
    Harness::scenario(Setup::http().args(FAST), async |h| {
        let own = tabs_joined(h, 2, "/?share=0").await;
        h.new_tab().await;
        let shared = tabs_joined(h, 1, "/").await;
        assert_eq!(roles(h, &own).await, ["own", "own"]);
        assert_eq!(roles(h, &shared).await, ["leader"]);
        h.wait_metric("sse_active_streams", 3.0).await;
        assert_eq!(h.increment().await, 1);
        for tab in own.iter().chain(&shared) {
            h.switch_to(tab).await;
            h.wait_text("shared-last-event-id", "1").await;
            assert_eq!(values_seen(h).await, [0, 1]);
        }
    })
    .await;
}
