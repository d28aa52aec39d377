//! Ten tabs of the page in one browser, each streaming a counter. Over HTTPS the
//! browser speaks HTTP/2 and every stream shares one connection: all ten advance. Over
//! plain HTTP/1.1 a browser opens at most six connections to one origin, and an SSE
//! stream holds its connection for as long as it lasts: six advance, and the seventh
//! tab's stream waits in `connecting` until one of the six is closed. The HTTP test
//! fails should Chromium or Firefox ever change that limit. Which waiting tab gets the
//! connection that a closed stream gives back differs: Chromium's queue is in the order
//! the tabs asked (tab 7), Firefox's is not (tab 8 in every run so far), so the test
//! asserts tab 7 in Chromium and exactly one waiting tab in Firefox.
//!
//! The tabs load the page first and then press Connect, which is what
//! `/?count=1000&interval_ms=200&autoconnect=1` does on load. Loaded with that link one
//! after the other, the seventh tab over HTTP/1.1 would not even load its page (the
//! document's request queues behind the six streams too), and WebDriver could not read
//! it.

use crate::harness::{Engine, Harness, Scheme, Setup, Tab, QUIET, WAIT};
use crate::support::poll_until;
use std::time::Duration;

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

/// Each tab's connection state.
async fn tab_states(h: &Harness, tabs: &[Tab]) -> Vec<String> {
    read_tabs(h, tabs)
        .await
        .into_iter()
        .map(|(_, state)| state)
        .collect()
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
        // The waiting tabs wait for a connection, not for the server: close one stream
        // and one of them gets that connection.
        h.switch_to(&tabs[0]).await;
        h.click("close").await;
        let waiting = &tabs[HTTP1_CONNECTIONS..];
        let (opened, states) = poll_until(WAIT, "one waiting tab to open", async || {
            let states: Vec<String> = read_tabs(h, waiting)
                .await
                .into_iter()
                .map(|(_, state)| state)
                .collect();
            let open: Vec<usize> = (0..states.len()).filter(|&i| states[i] == "open").collect();
            match open.as_slice() {
                [one] => Ok((HTTP1_CONNECTIONS + one + 1, states)),
                _ => Err(states),
            }
        })
        .await;
        eprintln!(
            "{}: the freed connection went to tab {opened}",
            h.engine.name()
        );
        if h.engine == Engine::Chromium {
            assert_eq!(
                opened,
                HTTP1_CONNECTIONS + 1,
                "Chromium serves the first to ask"
            );
        }
        h.switch_to(&tabs[opened - 1]).await;
        // It counts (from 1: reading the waiting tabs may take longer than a tick).
        h.wait_until("counter", "a count", |t| {
            t.parse::<u64>().is_ok_and(|n| n >= 1)
        })
        .await;
        let others: Vec<&String> = states.iter().filter(|s| *s != "open").collect();
        assert!(others.iter().all(|s| *s == "connecting"), "{states:?}");
        assert_eq!(others.len(), TABS - HTTP1_CONNECTIONS - 1, "{states:?}");
        h.wait_metric("sse_active_streams", HTTP1_CONNECTIONS as f64)
            .await;
    })
    .await;
}

/// How long a tab may take to load the page before it counts as not loading.
const LOAD_LIMIT: Duration = Duration::from_secs(8);

/// Over HTTP/1.1 with six streams open, more tabs load the page, which connects at once.
/// Chromium does not load a seventh: its document waits for a connection too, and the
/// server sees six streams. Firefox loads up to three more (a tab's document may pass
/// the limit of six), and never a tenth; a stream of those either waits in `connecting`
/// or, reusing the connection its page was loaded on, opens (on a quiet machine tabs 7 to
/// 9 loaded and all three opened in every run: nine streams).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http1_tabs_opened_behind_six_streams_do_not_load_or_wait() {
    Harness::scenario(Setup::http().without_screenshots(), async |h| {
        let page = format!("{PAGE}&autoconnect=1");
        for i in 0..HTTP1_CONNECTIONS {
            if i > 0 {
                h.new_tab().await;
            }
            h.load(&page).await;
            h.wait_text("state", "open").await;
        }
        h.wait_metric("sse_active_streams", HTTP1_CONNECTIONS as f64)
            .await;
        let mut loaded = Vec::new();
        let mut extra = Vec::new();
        while loaded.len() < TABS - HTTP1_CONNECTIONS {
            extra.push(h.new_tab().await);
            let ok = h.load_within(&page, LOAD_LIMIT).await;
            loaded.push(ok);
            if !ok {
                break;
            }
        }
        let passed = loaded.iter().filter(|ok| **ok).count();
        match h.engine {
            Engine::Chromium => assert_eq!(loaded, [false], "whether tab 7 loaded"),
            // Tabs 7 to 9 load on a quiet machine; a busy one may take longer than the
            // limit for some. Never a tenth.
            Engine::Firefox => assert!(
                passed <= 3 && loaded.last() == Some(&false),
                "whether tabs 7, 8, ... loaded: {loaded:?}"
            ),
        }
        // Those that loaded have made their stream; each is open or waits, and the
        // server counts one stream for each that is open. A tab that did not load
        // within the limit may still load later (Firefox, on a busy machine) and open
        // its stream too, so the server counts at least six plus the open ones of those
        // that loaded, and at most one more for each tab that did not; never more than
        // nine in Firefox, six in Chromium. The tabs are read twice around the gauge, so
        // that the three readings are of one moment.
        let late = extra.len() - passed;
        extra.truncate(passed);
        let (states, streams) = poll_until(
            WAIT,
            "sse_active_streams to match the open tabs",
            async || {
                let before = tab_states(h, &extra).await;
                let streams = h.metric("sse_active_streams").await as usize;
                let after = tab_states(h, &extra).await;
                let open = after.iter().filter(|s| *s == "open").count();
                let counted = HTTP1_CONNECTIONS + open..=HTTP1_CONNECTIONS + open + late;
                if before == after && counted.contains(&streams) {
                    Ok((after, streams))
                } else {
                    Err((before, streams, after))
                }
            },
        )
        .await;
        assert!(
            states.iter().all(|s| s == "open" || s == "connecting"),
            "{states:?}"
        );
        let most = match h.engine {
            Engine::Chromium => HTTP1_CONNECTIONS,
            Engine::Firefox => HTTP1_CONNECTIONS + 3,
        };
        assert!(streams <= most, "{streams} streams");
        eprintln!(
            "{}: tabs 7 to 10 loaded {loaded:?}, their streams {states:?}, {streams} on the server",
            h.engine.name()
        );
    })
    .await;
}
