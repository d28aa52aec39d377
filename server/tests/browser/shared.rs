//! The shared counter in the browser: one counter for every tab, whose stream is meant
//! to come back by itself. A `+1` in one tab shows in another; a dropped connection
//! resumes with no gap; a refusal for capacity is retried once a stream is free; a
//! server restarted on its port is rejoined; a silent network path is noticed by the
//! missing heartbeats and recovered.

use crate::harness::{now_ms, Harness, Setup, WAIT};
use crate::support::poll_until;

/// Loads `path` in the current tab, records what the panel's value and state show,
/// joins, and waits for the stream to open.
pub(crate) async fn join(h: &Harness, path: &str) {
    h.load(path).await;
    h.observe("shared-value").await;
    h.observe("shared-state").await;
    h.click("shared-join").await;
    h.wait_text("shared-state", "open").await;
}

/// When the observed element first showed `text` (ms since the epoch).
async fn first_shown(h: &Harness, testid: &str, text: &str) -> u64 {
    let seen = h.seen(testid).await;
    seen.iter()
        .find(|(t, _)| t == text)
        .map(|(_, at)| *at)
        .unwrap_or_else(|| panic!("{testid} never showed {text:?}: {seen:?}"))
}

/// When the observed element last began to show `text`.
async fn last_shown(h: &Harness, testid: &str, text: &str) -> u64 {
    let seen = h.seen(testid).await;
    seen.iter()
        .rev()
        .find(|(t, _)| t == text)
        .map(|(_, at)| *at)
        .unwrap_or_else(|| panic!("{testid} never showed {text:?}: {seen:?}"))
}

/// Whether the server logged opening a shared stream that resumed after `id`.
fn resumed_after(log: &str, id: u64) -> bool {
    let field = format!("last_event_id={id} ");
    log.lines()
        .any(|l| l.contains("shared stream opened") && l.contains(&field))
}

/// The states a panel went through when it joined, lost its stream once and got it
/// back (however many tries that took: they all read `reconnecting`).
const DROPPED_ONCE: [&str; 5] = ["idle", "connecting", "open", "reconnecting", "open"];

/// Issue 10: a `+1` in one tab shows in the other within a second, both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plus_one_in_one_tab_shows_in_the_other_within_a_second() {
    Harness::scenario(Setup::http(), async |h| {
        let a = h.tab().await;
        join(h, "/").await;
        h.wait_text("shared-value", "0").await;
        let b = h.new_tab().await;
        join(h, "/").await;
        h.wait_text("shared-value", "0").await;
        for (from, to, value) in [(&a, &b, "1"), (&b, &a, "2")] {
            h.switch_to(from).await;
            let clicked = now_ms();
            h.click("shared-increment").await;
            h.wait_text("shared-value", value).await;
            h.switch_to(to).await;
            h.wait_text("shared-value", value).await;
            let shown = first_shown(h, "shared-value", value).await;
            assert!(
                shown.saturating_sub(clicked) < 1_000,
                "{value} showed in the other tab {} ms after the click",
                shown.saturating_sub(clicked)
            );
        }
        // Narrow tabs, so that the panels are shown at about their size.
        let (width, height) = h.window_size().await;
        h.set_window_size(700, height).await;
        let mut tiles = Vec::new();
        for (tab, name) in [(&a, "tab A"), (&b, "tab B")] {
            h.switch_to(tab).await;
            assert_eq!(h.seen_texts("shared-value").await, ["–", "0", "1", "2"]);
            assert_eq!(h.text("shared-last-event-id").await, "2");
            assert_eq!(h.text("shared-reconnects").await, "0");
            if let Some(png) = h.shot_of("section.shared").await {
                tiles.push((format!("{name}: open, 2"), png));
            }
        }
        h.set_window_size(width, height).await;
        h.composite(
            "shared-two-tabs",
            "Two tabs joined to the shared counter: a +1 in either shows in both",
            2,
            &tiles,
        )
        .await;
    })
    .await;
}

/// Issue 10: a tab whose connection is cut, and whose browser is turned away when it
/// tries again, comes back by itself once the network does and catches up: every
/// change made meanwhile, in order, none missed, resumed from its last id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tab_cut_off_reconnects_and_catches_up_with_no_gap() {
    Harness::scenario(Setup::http().proxied(), async |h| {
        join(h, "/").await;
        for want in 1..=2 {
            assert_eq!(h.increment().await, want);
        }
        h.wait_text("shared-last-event-id", "2").await;
        // The network goes: every connection cut, and none let through for now.
        h.proxy().refuse(true);
        h.proxy().cut();
        h.wait_text("shared-state", "reconnecting").await;
        for want in 3..=5 {
            assert_eq!(h.increment().await, want);
        }
        // The browser tries again by itself, and is turned away.
        poll_until(
            WAIT,
            "the browser to try again through the proxy",
            async || match h.proxy().refused() {
                0 => Err(0),
                n => Ok(n),
            },
        )
        .await;
        assert_eq!(h.text("shared-state").await, "reconnecting");
        assert_eq!(h.text("shared-value").await, "2", "heard while cut off");
        h.proxy().refuse(false);
        h.wait_text("shared-value", "5").await;
        assert_eq!(h.text("shared-state").await, "open");
        assert_eq!(h.text("shared-last-event-id").await, "5");
        assert_eq!(
            h.seen_texts("shared-value").await,
            ["–", "0", "1", "2", "3", "4", "5"],
            "every change once, in order"
        );
        assert_eq!(h.seen_texts("shared-state").await, DROPPED_ONCE);
        assert_eq!(h.text("shared-reconnects").await, "1");
        let log = h.server_log();
        assert!(
            resumed_after(&log, 2),
            "no shared stream resumed after 2 in:\n{log}"
        );
    })
    .await;
}

/// Issue 14: with room for one stream, a second tab is refused and shows
/// `reconnecting`; when the first leaves, the second opens by itself within the
/// server's `Retry-After` and the page's backoff.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tab_refused_for_capacity_opens_by_itself_once_a_stream_is_free() {
    Harness::scenario(Setup::http().args(["--max-streams", "1"]), async |h| {
        // Each tab with a stream of its own: tabs that share would hold one.
        let a = h.tab().await;
        join(h, "/?share=0").await;
        h.new_tab().await;
        h.load("/?share=0").await;
        h.observe("shared-state").await;
        h.click("shared-join").await;
        h.wait_text("shared-state", "reconnecting").await;
        let error = h
            .wait_until("shared-error", "the refusal", |t| !t.is_empty())
            .await;
        assert!(
            error.contains("(HTTP 503, capacity)") && error.contains("again in 1 s"),
            "{error}"
        );
        let b = h.tab().await;
        h.switch_to(&a).await;
        let left = now_ms();
        h.click("shared-leave").await;
        h.wait_text("shared-state", "closed").await;
        h.switch_to(&b).await;
        h.wait_text("shared-state", "open").await;
        // `--retry-ms 200` makes Retry-After 1 s; the page waits that plus up to half
        // again, doubled if a second refusal came before the leave: at most 3 s, and a
        // second for timers of a tab in the background.
        let waited = last_shown(h, "shared-state", "open")
            .await
            .saturating_sub(left);
        assert!(
            waited <= 4_000,
            "opened {waited} ms after the other tab left"
        );
        assert_eq!(
            h.seen_texts("shared-state").await,
            ["idle", "connecting", "reconnecting", "open"]
        );
        assert_eq!(h.text("shared-value").await, "0");
        assert_eq!(h.text("shared-error").await, "", "the refusal still shows");
    })
    .await;
}

/// Issue 14: the server is stopped (SIGTERM, and it exits) while a tab is joined, and
/// started again on the same port only once the tab has tried and found nobody there;
/// the tab comes back `open` by itself and shows the new server's value (its store
/// starts at 0 again, so the page's last id is ahead of it: a `reset`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joined_tab_comes_back_after_the_server_restarts_on_its_port() {
    // A small spread: the browser comes back within 0.2–0.5 s of each try.
    let setup = Setup::http().args(["--shutdown-retry-spread-ms", "300"]);
    Harness::scenario(setup, async |h| {
        join(h, "/?retry_ms=200").await;
        for want in 1..=3 {
            assert_eq!(h.increment().await, want);
        }
        h.wait_text("shared-last-event-id", "3").await;
        let old = h.stop_server().await;
        // The server ended the stream with `end`, after a `retry:` from its spread; the
        // browser reconnects by itself after it, and again after each failed try, while
        // the page shows `reconnecting` (nothing refused it: no error to show).
        h.wait_text("shared-state", "reconnecting").await;
        assert!(
            h.text("log")
                .await
                .contains("the browser reconnects after the server's retry"),
            "the page does not say who reconnects"
        );
        h.start_server_on(old.addr).await;
        h.wait_text("shared-state", "open").await;
        h.wait_text("shared-value", "0").await;
        let log = h.server_log();
        assert!(
            resumed_after(&log, 3),
            "the new server saw no resume after 3:\n{log}"
        );
        let page_log = h.text("log").await;
        assert!(
            page_log.contains("ahead of the server"),
            "the page does not say why the value went back: {page_log}"
        );
        // And it goes on from there, live.
        assert_eq!(h.increment().await, 1);
        h.wait_text("shared-last-event-id", "1").await;
        assert_eq!(h.text("shared-value").await, "1");
        assert_eq!(
            h.seen_texts("shared-value").await,
            ["–", "0", "1", "2", "3", "0", "1"]
        );
        assert_eq!(h.seen_texts("shared-state").await, DROPPED_ONCE);
        assert_eq!(h.text("shared-reconnects").await, "1");
        assert_eq!(
            h.text("shared-error").await,
            "",
            "the page still says it is down"
        );
    })
    .await;
}

/// Issue 14, chaos: the network path goes silent (the proxy forwards nothing and
/// closes nothing). With heartbeats every second, the page counts the stream dead
/// within two of them, and is back `open` once the path carries bytes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_path_is_noticed_within_two_heartbeats_and_recovered() {
    let setup = Setup::http().proxied().args(["--keep-alive-secs", "1"]);
    Harness::scenario(setup, async |h| {
        join(h, "/?heartbeat_ms=1000").await;
        h.observe("shared-heartbeats").await;
        h.wait_until("shared-heartbeats", "a heartbeat", |t| t != "0")
            .await;
        h.proxy().silence(true);
        let silent = now_ms();
        h.wait_text("shared-state", "reconnecting").await;
        let noticed = last_shown(h, "shared-state", "reconnecting").await;
        // Heartbeats are the only events here: the page gives up two heartbeat periods
        // after the last one, not one, and not three.
        let last_beat = h
            .seen("shared-heartbeats")
            .await
            .into_iter()
            .map(|(_, at)| at)
            .filter(|at| *at <= noticed)
            .max()
            .expect("a heartbeat before the silence");
        let gap = noticed - last_beat;
        assert!(
            (1_900..3_000).contains(&gap),
            "gave up {gap} ms after the last heartbeat"
        );
        // That is within two heartbeats of the silence, and a second for a busy machine.
        let after = noticed.saturating_sub(silent);
        assert!(after <= 3_000, "the silence was noticed after {after} ms");
        let page_log = h.text("log").await;
        assert!(
            page_log.contains("counts as dead"),
            "the page does not say why it reconnects: {page_log}"
        );
        assert_eq!(h.text("shared-reconnects").await, "0");
        h.proxy().silence(false);
        h.wait_text("shared-state", "open").await;
        assert_eq!(h.text("shared-reconnects").await, "1");
        let beats: u64 = h.text("shared-heartbeats").await.parse().unwrap();
        h.wait_until("shared-heartbeats", "heartbeats again", |t| {
            t.parse::<u64>().is_ok_and(|n| n > beats)
        })
        .await;
        assert_eq!(h.seen_texts("shared-state").await, DROPPED_ONCE);
        let log = h.server_log();
        assert!(
            resumed_after(&log, 0),
            "no shared stream resumed after 0 in:\n{log}"
        );
    })
    .await;
}
