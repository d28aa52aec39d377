//! Ten tabs of the page in one browser, each streaming a counter. Over HTTPS the
//! browser speaks HTTP/2 and every stream shares one connection: all ten advance. Over
//! plain HTTP/1.1 a browser opens at most six connections to one origin, and an SSE
//! stream holds its connection for as long as it lasts: six advance, and the seventh
//! tab's stream waits in `connecting` until one of the six is closed. The HTTP test
//! fails should Chromium ever change that limit.
//!
//! The tabs load the page first and then press Connect, which is what
//! `/?count=1000&interval_ms=200&autoconnect=1` does on load. Loaded with that link one
//! after the other, the seventh tab over HTTP/1.1 would not even load its page (the
//! document's request queues behind the six streams too), and WebDriver could not read
//! it.

use crate::harness::{Harness, Scheme, Setup, Tab, QUIET};

const TABS: usize = 10;
/// Chromium's connections per origin (host and port) over HTTP/1.1.
const HTTP1_CONNECTIONS: usize = 6;
const PAGE: &str = "/?count=1000&interval_ms=200";
/// The window's width for the screenshots of each tab.
const TILE_WIDTH: u32 = 700;

/// Opens [`TABS`] tabs on [`PAGE`], then presses Connect in each, in order.
async fn ten_tabs_connected(h: &Harness) -> Vec<Tab> {
    let mut tabs = vec![h.tab().await];
    h.load(PAGE).await;
    for _ in 1..TABS {
        tabs.push(h.new_tab().await);
        h.load(PAGE).await;
    }
    for tab in &tabs {
        h.switch_to(tab).await;
        h.click("connect").await;
    }
    tabs
}

/// Each tab's counter (`None` while it shows none) and state, read tab by tab.
async fn read_tabs(h: &Harness, tabs: &[Tab]) -> Vec<(Option<u64>, String)> {
    let mut out = Vec::new();
    for tab in tabs {
        h.switch_to(tab).await;
        let [counter, state] = h.texts(["counter", "state"]).await;
        out.push((counter.parse().ok(), state));
    }
    out
}

/// Which tabs (numbered from 1) advanced between two readings.
fn advancing(before: &[(Option<u64>, String)], after: &[(Option<u64>, String)]) -> Vec<usize> {
    before
        .iter()
        .zip(after)
        .enumerate()
        .filter(|(_, ((b, _), (a, _)))| a.is_some() && a > b)
        .map(|(i, _)| i + 1)
        .collect()
}

/// Screenshots of each tab's counter, captioned, composed into `name`.
async fn composite(h: &Harness, tabs: &[Tab], name: &str, title: &str) {
    if !h.takes_screenshots() {
        return;
    }
    // Narrow tabs (the page keeps its two columns down to 640 px), so that the tiles
    // are shown at about their size.
    let (width, height) = h.window_size().await;
    h.set_window_size(TILE_WIDTH, height).await;
    let mut tiles = Vec::new();
    for (i, tab) in tabs.iter().enumerate() {
        h.switch_to(tab).await;
        let png = h.shot_of("section.live").await.expect("screenshots wanted");
        let [state] = h.texts(["state"]).await;
        tiles.push((format!("tab {}: {state}", i + 1), png));
    }
    h.set_window_size(width, height).await;
    h.composite(name, title, 2, &tiles).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_https_ten_tabs_all_advance() {
    Harness::scenario(Setup::new(Scheme::Https), async |h| {
        let tabs = ten_tabs_connected(h).await;
        h.wait_metric("sse_active_streams", TABS as f64).await;
        let before = read_tabs(h, &tabs).await;
        tokio::time::sleep(QUIET).await;
        let after = read_tabs(h, &tabs).await;
        assert_eq!(
            advancing(&before, &after),
            (1..=TABS).collect::<Vec<_>>(),
            "{before:?} then {after:?}"
        );
        assert!(after.iter().all(|(_, state)| state == "open"), "{after:?}");
        composite(
            h,
            &tabs,
            "tabs-https",
            "HTTPS (HTTP/2): ten tabs, ten streams on one connection, all live",
        )
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http1_only_six_tabs_advance_and_the_seventh_waits() {
    Harness::scenario(Setup::http(), async |h| {
        let tabs = ten_tabs_connected(h).await;
        h.wait_metric("sse_active_streams", HTTP1_CONNECTIONS as f64)
            .await;
        let before = read_tabs(h, &tabs).await;
        tokio::time::sleep(QUIET).await;
        let after = read_tabs(h, &tabs).await;
        assert_eq!(
            advancing(&before, &after),
            (1..=HTTP1_CONNECTIONS).collect::<Vec<_>>(),
            "{before:?} then {after:?}"
        );
        for (i, (counter, state)) in after.iter().enumerate().skip(HTTP1_CONNECTIONS) {
            assert_eq!(
                (counter, state.as_str()),
                (&None, "connecting"),
                "tab {}",
                i + 1
            );
        }
        // The server never saw the other four.
        assert_eq!(
            h.metric("sse_streams_total").await,
            HTTP1_CONNECTIONS as f64
        );
        composite(
            h,
            &tabs,
            "tabs-http1",
            "HTTP/1.1: six connections per origin, so tabs 7 to 10 wait in connecting",
        )
        .await;
        // The seventh waits for a connection, not for the server: close one stream and
        // it gets that connection.
        h.switch_to(&tabs[0]).await;
        h.click("close").await;
        h.switch_to(&tabs[HTTP1_CONNECTIONS]).await;
        h.wait_text("state", "open").await;
        h.wait_text("counter", "2").await;
        h.switch_to(&tabs[HTTP1_CONNECTIONS + 1]).await;
        assert_eq!(h.text("state").await, "connecting");
    })
    .await;
}
