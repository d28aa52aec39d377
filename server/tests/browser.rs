//! Real-browser tests: headless Chromium driven through chromedriver, against the real
//! `sse-counter` binary serving the real trunk-built page. They show what the project is
//! about: EventSource reconnects by itself after an error, and the page stops that by
//! closing on error or on the `end` event.
//!
//! Needs the page built (`cargo xtask test` builds it; or `trunk build --release`) and
//! Debian's `chromium` and `chromium-driver` (`cargo xtask test` installs them).

mod prom;

use fantoccini::{ClientBuilder, Locator};
use futures_util::FutureExt as _;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::{timeout, Instant};

/// Two browsers at a time are plenty on a two-core machine.
static BROWSERS: Semaphore = Semaphore::const_new(2);

/// How long any one condition may take before the test fails.
const WAIT: Duration = Duration::from_secs(15);
/// The window in which nothing more may happen (no reconnect, no new stream).
const QUIET: Duration = Duration::from_secs(1);

fn dist_dir() -> PathBuf {
    let dir = std::env::var_os("SSE_COUNTER_DIST")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../web/dist"));
    assert!(
        dir.join("index.html").is_file(),
        "the page is not built in {}: run `cargo xtask test` (it builds it) or `trunk build --release`",
        dir.display()
    );
    dir
}

/// A child process killed (SIGTERM, then SIGKILL) when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.0.try_wait() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a program and returns it with the first stdout line that contains `marker`,
/// or `None` if it exits (closes its stdout) without printing one.
fn try_spawn_and_read(mut cmd: Command, marker: &str, what: &str) -> Option<(Child, String)> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what} ({e}); `cargo xtask test` installs it"));
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    let wanted = marker.to_owned();
    std::thread::spawn(move || {
        let mut found = false;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if !found && line.contains(&wanted) {
                found = true;
                let _ = tx.send(line);
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(line) => Some((child, line)),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            let _ = child.kill();
            let _ = child.wait();
            None
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what} did not print {marker:?} within 30 s")
        }
    }
}

fn spawn_and_read(cmd: Command, marker: &str, what: &str) -> (Child, String) {
    try_spawn_and_read(cmd, marker, what)
        .unwrap_or_else(|| panic!("{what} exited without printing {marker:?}"))
}

/// Starts chromedriver on a free port. With `--port=0` it binds 127.0.0.1 on a free port
/// and then [::1] on the same one, which now and then is taken on a busy machine: it
/// then exits, and another try picks another port.
fn start_chromedriver() -> (Child, String) {
    let chromedriver = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
    for _ in 0..5 {
        let mut cmd = Command::new(&chromedriver);
        cmd.arg("--port=0").stderr(Stdio::null());
        if let Some(started) =
            try_spawn_and_read(cmd, "started successfully on port", "chromedriver")
        {
            return started;
        }
    }
    panic!("chromedriver exited five times without starting")
}

struct Harness {
    base: String,
    server: Option<Proc>,
    server_log: Arc<Mutex<String>>,
    client: fantoccini::Client,
    driver_url: String,
    _driver: Proc,
    profile: PathBuf,
    http: reqwest::Client,
}

impl Harness {
    async fn start() -> Harness {
        let dist = dist_dir();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sse-counter"));
        cmd.args(["--addr", "127.0.0.1:0", "--retry-ms", "200"])
            .args(["--allow-fault-injection", "--shutdown-grace-secs", "5"])
            .arg("--static-dir")
            .arg(&dist)
            .env("SSE_COUNTER_LOG", "info")
            .stderr(Stdio::piped());
        let (mut server, line) = spawn_and_read(cmd, "listening on ", "the server");
        let base = line.trim_start_matches("listening on ").trim().to_owned();
        let server_log = Arc::new(Mutex::new(String::new()));
        let mut stderr = server.stderr.take().expect("piped stderr");
        let log = Arc::clone(&server_log);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                log.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });

        let (driver, line) = start_chromedriver();
        let port = line
            .trim_end_matches('.')
            .rsplit(' ')
            .next()
            .expect("a port at the end of chromedriver's line");
        let driver_url = format!("http://127.0.0.1:{port}");

        let profile = std::env::temp_dir().join(format!(
            "sse-counter-chromium-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&profile).unwrap();
        let mut args = vec![
            "--headless".to_owned(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--window-size=1200,900".into(),
            format!("--user-data-dir={}", profile.display()),
        ];
        if let Ok(extra) = std::env::var("SSE_COUNTER_CHROMIUM_ARGS") {
            args.extend(extra.split_whitespace().map(str::to_owned));
        }
        let mut chrome = json!({ "args": args });
        if let Ok(bin) = std::env::var("CHROME_BIN") {
            chrome["binary"] = json!(bin);
        }
        let caps = json!({
            "goog:chromeOptions": chrome,
            "goog:loggingPrefs": { "browser": "ALL" },
        });
        let caps = caps.as_object().unwrap().clone();
        let client = timeout(
            Duration::from_secs(60),
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(caps)
                .connect(&driver_url),
        )
        .await
        .expect("starting a Chromium session hung")
        .expect("chromedriver could not start Chromium");
        Harness {
            base,
            server: Some(Proc(server)),
            server_log,
            client,
            driver_url,
            _driver: Proc(driver),
            profile,
            http: reqwest::Client::new(),
        }
    }

    /// Runs one scenario with a fresh server and browser; the browser is closed and its
    /// console checked whatever the scenario did.
    async fn scenario<F>(body: F)
    where
        F: for<'a> AsyncFnOnce(&'a mut Harness),
    {
        let _permit = BROWSERS.acquire().await.expect("semaphore never closes");
        let mut h = Harness::start().await;
        let outcome = std::panic::AssertUnwindSafe(body(&mut h))
            .catch_unwind()
            .await;
        let console = h.console_errors().await;
        let log = h.server_log.lock().unwrap().clone();
        let _ = timeout(Duration::from_secs(10), h.client.clone().close()).await;
        let _ = std::fs::remove_dir_all(&h.profile);
        if let Err(panic) = outcome {
            eprintln!("--- server log ---\n{log}");
            std::panic::resume_unwind(panic);
        }
        // Scenario 6 of the issue, checked in every scenario: the page throws nothing.
        assert!(
            console.is_empty(),
            "uncaught errors in the page's console: {console:#?}"
        );
    }

    /// SEVERE console entries that are not the network's own reports (a dropped stream
    /// is logged by Chromium as a network error, which is the point of some scenarios).
    async fn console_errors(&self) -> Vec<Value> {
        let Ok(Some(session)) = self.client.session_id().await else {
            return vec![json!("no session")];
        };
        let url = format!("{}/session/{session}/se/log", self.driver_url);
        let res = timeout(
            WAIT,
            self.http
                .post(&url)
                .header("content-type", "application/json")
                .body(json!({"type": "browser"}).to_string())
                .send(),
        )
        .await
        .expect("reading the browser log hung")
        .expect("reading the browser log failed");
        let text = res.text().await.expect("browser log body");
        let body: Value = serde_json::from_str(&text).expect("browser log is JSON");
        body["value"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e["level"] == "SEVERE" && e["source"] != "network")
            .collect()
    }

    async fn open_page(&self) {
        timeout(WAIT, self.client.goto(&format!("{}/", self.base)))
            .await
            .expect("loading the page hung")
            .expect("loading the page failed");
        // The HTML alone already says idle; the detail line appears only once the wasm
        // module has started and rendered.
        self.wait_text("state-detail", "Not connected yet.").await;
        assert_eq!(self.text("state").await, "idle");
        // Record every value the counter shows, so gaps and repeats can be seen.
        let js = r#"
            window.__counterSeen = [];
            const el = document.querySelector('[data-testid="counter"]');
            new MutationObserver(() => window.__counterSeen.push(el.textContent.trim()))
                .observe(el, { childList: true, characterData: true, subtree: true });
        "#;
        self.client
            .execute(js, vec![])
            .await
            .expect("observer installs");
    }

    async fn el(&self, testid: &str) -> fantoccini::elements::Element {
        let css = format!("[data-testid=\"{testid}\"]");
        timeout(WAIT, self.client.wait().for_element(Locator::Css(&css)))
            .await
            .unwrap_or_else(|_| panic!("element {testid} never appeared"))
            .unwrap_or_else(|e| panic!("element {testid}: {e}"))
    }

    async fn text(&self, testid: &str) -> String {
        let el = self.el(testid).await;
        el.text()
            .await
            .unwrap_or_else(|e| panic!("text of {testid}: {e}"))
            .trim()
            .to_owned()
    }

    async fn fill(&self, testid: &str, value: &str) {
        let el = self.el(testid).await;
        el.clear().await.expect("clear input");
        if !value.is_empty() {
            el.send_keys(value).await.expect("type into input");
        }
    }

    async fn set_checkbox(&self, testid: &str, on: bool) {
        let el = self.el(testid).await;
        if el.is_selected().await.expect("checkbox state") != on {
            el.click().await.expect("click checkbox");
        }
    }

    async fn click(&self, testid: &str) {
        self.el(testid).await.click().await.expect("click");
    }

    /// Fills the form and clicks Connect.
    async fn connect(
        &self,
        count: u64,
        interval_ms: u64,
        drop_after: Option<u64>,
        close_on_error: bool,
    ) {
        self.fill("count", &count.to_string()).await;
        self.fill("interval", &interval_ms.to_string()).await;
        self.fill(
            "drop-after",
            &drop_after.map(|d| d.to_string()).unwrap_or_default(),
        )
        .await;
        self.set_checkbox("close-on-error", close_on_error).await;
        self.click("connect").await;
    }

    /// Waits until the element's text equals `want`.
    async fn wait_text(&self, testid: &str, want: &str) {
        let deadline = Instant::now() + WAIT;
        let mut last = String::new();
        while Instant::now() < deadline {
            last = self.text(testid).await;
            if last == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("{testid} never showed {want:?} (last: {last:?})");
    }

    /// The counter values the page showed, in order, with consecutive duplicates kept.
    async fn counter_history(&self) -> Vec<String> {
        let v = self
            .client
            .execute("return window.__counterSeen;", vec![])
            .await
            .expect("read history");
        v.as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s.as_str())
            .filter(|s| s.chars().all(|c| c.is_ascii_digit()) && !s.is_empty())
            .map(str::to_owned)
            .collect()
    }

    async fn metric(&self, name: &str) -> f64 {
        let body = timeout(WAIT, async {
            self.http
                .get(format!("{}/metrics", self.base))
                .send()
                .await?
                .text()
                .await
        })
        .await
        .expect("GET /metrics hung")
        .expect("GET /metrics failed");
        prom::value(&body, name)
    }

    async fn wait_metric(&self, name: &str, want: f64) {
        prom::wait_for(name, want, WAIT, async || self.metric(name).await).await;
    }

    /// Saves a screenshot of the page as `docs/screenshots/<name>.png` when
    /// `SSE_COUNTER_SCREENSHOTS` names a directory (`cargo xtask screenshots` does).
    async fn shot(&self, name: &str) {
        let Some(dir) = std::env::var_os("SSE_COUNTER_SCREENSHOTS") else {
            return;
        };
        let png = timeout(WAIT, self.client.screenshot())
            .await
            .expect("screenshot hung")
            .expect("screenshot failed");
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    fn server_log(&self) -> String {
        self.server_log.lock().unwrap().clone()
    }
}

/// Scenario 1: a normal run ends with `end`, and the page does not reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_three_finishes_without_reconnecting() {
    Harness::scenario(async |h| {
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
    })
    .await;
}

/// Scenario 2: a dropped connection with close-on-error on is not retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_on_error_suppresses_the_reconnect() {
    Harness::scenario(async |h| {
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
    })
    .await;
}

/// Scenario 3, the control: with close-on-error off the browser reconnects by itself,
/// sends `Last-Event-ID`, and the server resumes with no gap and no repeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_close_on_error_the_browser_resumes() {
    Harness::scenario(async |h| {
        h.open_page().await;
        h.connect(5, 150, Some(2), false).await;
        if std::env::var_os("SSE_COUNTER_SCREENSHOTS").is_some() {
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
    })
    .await;
}

/// Scenario 4: the Close button ends the stream, and the server frees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_button_stops_the_stream() {
    Harness::scenario(async |h| {
        h.open_page().await;
        h.connect(1000, 100, None, true).await;
        h.wait_text("counter", "2").await;
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
    })
    .await;
}

/// Scenario 5: SIGTERM mid-stream: the server ends the stream with reason `shutdown`,
/// the page shows `finished` and does not try to reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_shutdown_finishes_the_page() {
    Harness::scenario(async |h| {
        h.open_page().await;
        h.connect(1000, 100, None, false).await;
        h.wait_text("counter", "2").await;
        let mut server = h.server.take().expect("server running");
        let pid = server.0.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(status.success());
        h.wait_text("state", "finished").await;
        h.shot("shutdown-finished").await;
        let log = h.text("log").await;
        assert!(log.contains("shutdown"), "the page does not say why: {log}");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let exit = loop {
            if let Some(code) = server.0.try_wait().unwrap() {
                break code;
            }
            assert!(std::time::Instant::now() < deadline, "server did not exit");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(exit.success(), "server exited with {exit}");
        tokio::time::sleep(QUIET).await;
        assert_eq!(h.text("state").await, "finished");
        assert_eq!(h.text("reconnects").await, "0");
    })
    .await;
}
