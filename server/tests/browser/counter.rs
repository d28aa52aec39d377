//! The per-client counter in the browser, over HTTP/1.1 and over HTTPS (HTTP/2): a
//! normal run ends with `end`, close-on-error stops the browser's reconnects, without it
//! the browser resumes with `Last-Event-ID`, Close frees the stream, and a shutdown
//! finishes the page. Each scenario is written once and run over both schemes.

use crate::harness::{Harness, Scheme, Setup, QUIET};
use std::time::Duration;

/// Runs each scenario named over plain HTTP (`counter::http::NAME`) and over HTTPS
/// (`counter::https::NAME`).
macro_rules! over_http_and_https {
    ($($name:ident),* $(,)?) => {
        mod http {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::Harness::scenario(super::Setup::new(super::Scheme::Http), super::$name)
                        .await;
                }
            )*
        }
        mod https {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    // The README's screenshots come from the plain-HTTP runs.
                    let setup = super::Setup::new(super::Scheme::Https).without_screenshots();
                    super::Harness::scenario(setup, super::$name).await;
                }
            )*
        }
    };
}

over_http_and_https!(
    count_three_finishes_without_reconnecting,
    close_on_error_suppresses_the_reconnect,
    without_close_on_error_the_browser_resumes,
    close_button_stops_the_stream,
    server_shutdown_finishes_the_page,
);

/// Scenario 1: a normal run ends with `end`, and the page does not reconnect.
async fn count_three_finishes_without_reconnecting(h: &mut Harness) {
    h.open_page().await;
    h.shot("idle").await;
    h.connect(3, 200, None, true).await;
    h.wait_text("state", "finished").await;
    h.shot("finished").await;
    assert_eq!(h.text("counter").await, "3");
    assert_eq!(h.counter_history().await, ["1", "2", "3"]);
    assert_eq!(h.metric("sse_streams_total").await, 1.0);
    tokio::time::sleep(QUIET).await;
    assert_eq!(
        h.metric("sse_streams_total").await,
        1.0,
        "the page reconnected"
    );
    assert_eq!(h.text("state").await, "finished");
    assert_eq!(h.text("reconnects").await, "0");
}

/// Scenario 2: a dropped connection with close-on-error on is not retried.
async fn close_on_error_suppresses_the_reconnect(h: &mut Harness) {
    h.open_page().await;
    h.connect(10, 150, Some(2), true).await;
    h.wait_text("state", "closed-on-error").await;
    h.shot("closed-on-error").await;
    assert_eq!(h.text("counter").await, "2");
    assert_eq!(h.metric("sse_streams_total").await, 1.0);
    tokio::time::sleep(QUIET).await;
    assert_eq!(
        h.metric("sse_streams_total").await,
        1.0,
        "the browser reconnected although the page closed on error"
    );
    assert_eq!(h.text("counter").await, "2");
    assert_eq!(h.text("state").await, "closed-on-error");
    assert_eq!(
        h.metric("sse_disconnects_total{reason=\"fault\"}").await,
        1.0
    );
}

/// Scenario 3, the control: with close-on-error off the browser reconnects by itself,
/// sends `Last-Event-ID`, and the server resumes with no gap and no repeat.
async fn without_close_on_error_the_browser_resumes(h: &mut Harness) {
    h.open_page().await;
    h.connect(5, 150, Some(2), false).await;
    if h.takes_screenshots() {
        // The reconnecting state lasts one retry delay: worth a picture, not an
        // assertion.
        h.wait_text("state", "reconnecting").await;
        h.shot("reconnecting").await;
    }
    h.wait_text("state", "finished").await;
    h.shot("resumed-finished").await;
    assert_eq!(h.counter_history().await, ["1", "2", "3", "4", "5"]);
    // A repeated tick would not change the counter's text, but would be counted.
    assert_eq!(h.text("events-received").await, "5");
    assert_eq!(h.text("reconnects").await, "2");
    assert_eq!(h.metric("sse_streams_total").await, 3.0);
    let log = h.server_log();
    assert!(
        log.contains("resume_after=2"),
        "no resume after 2 in:\n{log}"
    );
    assert!(
        log.contains("resume_after=4"),
        "no resume after 4 in:\n{log}"
    );
    tokio::time::sleep(QUIET).await;
    assert_eq!(
        h.metric("sse_streams_total").await,
        3.0,
        "a fourth stream opened"
    );
}

/// Scenario 4: the Close button ends the stream, and the server frees it.
async fn close_button_stops_the_stream(h: &mut Harness) {
    h.open_page().await;
    h.connect(1000, 100, None, true).await;
    // At least 2, not exactly: at 10 a second a busy machine may poll after the
    // counter has moved on (seen: the first look came at 149).
    h.wait_until("counter", "a count of 2 or more", |t| {
        t.parse::<u64>().is_ok_and(|n| n >= 2)
    })
    .await;
    h.shot("open").await;
    h.click("close").await;
    h.wait_text("state", "closed-by-user").await;
    h.shot("closed-by-user").await;
    let at_close = h.text("counter").await;
    h.wait_metric("sse_active_streams", 0.0).await;
    assert_eq!(
        h.metric("sse_disconnects_total{reason=\"client\"}").await,
        1.0
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(h.text("counter").await, at_close, "the counter kept going");
    assert!(
        h.server_log().contains("client dropped the stream"),
        "the server did not log the drop"
    );
}

/// Scenario 5: SIGTERM mid-stream: the server ends the stream with reason `shutdown`,
/// the page shows `finished` and does not try to reconnect.
async fn server_shutdown_finishes_the_page(h: &mut Harness) {
    h.open_page().await;
    h.connect(1000, 100, None, false).await;
    // At least 2: a busy machine may poll after the counter has moved on.
    h.wait_until("counter", "a count of 2 or more", |t| {
        t.parse::<u64>().is_ok_and(|n| n >= 2)
    })
    .await;
    let mut server = h.server.take().expect("server running");
    server.sigterm();
    h.wait_text("state", "finished").await;
    h.shot("shutdown-finished").await;
    let log = h.text("log").await;
    assert!(log.contains("shutdown"), "the page does not say why: {log}");
    let exit = server.exit().await;
    assert!(exit.success(), "server exited with {exit}");
    tokio::time::sleep(QUIET).await;
    assert_eq!(h.text("state").await, "finished");
    assert_eq!(h.text("reconnects").await, "0");
}
