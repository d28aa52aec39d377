//! The harness of the real-browser tests: a headless browser session (fantoccini) in
//! each engine, Chromium through chromedriver and Firefox through geckodriver, the real `sse-counter` binary serving the real trunk-built page over
//! HTTP or HTTPS, optionally behind the test support's TCP proxy, or several instances
//! sharing the counter through a real Redis behind a real nginx that serves the page
//! over HTTPS ([`Cluster`]); and what a scenario does with them: open tabs, read and
//! wait for the page's `data-testid` elements, record what an element showed over time,
//! take screenshots.

use crate::support::binary::{launch, Binary, Launch, START_LIMIT};
use crate::support::cluster::{Nginx, Redis};
use crate::support::http::send_within;
use crate::support::prom::Scrape;
use crate::support::proxy::Proxy;
use crate::support::{poll_until, within_for, TempDir};
use base64::Engine as _;
use fantoccini::wd::{TimeoutConfiguration, WindowHandle};
use fantoccini::{ClientBuilder, Locator};
use futures_util::FutureExt as _;
use serde_json::{json, Value};
use std::fmt::Display;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::Semaphore;

/// Each scenario runs a browser, its driver and a server at once: two scenarios side
/// by side keep the suite short without starving the pages of the CPU that their timing
/// (a reconnect within [`QUIET`], say) depends on.
static BROWSERS: Semaphore = Semaphore::const_new(2);

/// How long any one condition may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(15);
/// The window in which nothing more may happen (no reconnect, no new stream).
pub const QUIET: Duration = Duration::from_secs(1);

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

/// Whether `cargo xtask screenshots` asked for pictures (a directory to put them in).
fn screenshot_dir() -> Option<PathBuf> {
    std::env::var_os("SSE_COUNTER_SCREENSHOTS").map(PathBuf::from)
}

/// Milliseconds since the epoch, on the clock the browser's `Date.now()` reads too.
pub fn now_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("a clock after 1970");
    u64::try_from(since.as_millis()).expect("milliseconds fit")
}

/// Awaits one WebDriver command within [`WAIT`]; `what` says which, should it hang or
/// fail.
async fn drive<T, E: Display>(what: &str, command: impl Future<Output = Result<T, E>>) -> T {
    within_for(WAIT, what, command)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// A browser engine the scenarios run in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// Debian's `chromium`, through `chromedriver`.
    Chromium,
    /// Debian's `firefox-esr`, through `geckodriver` (from crates.io).
    Firefox,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Chromium => "chromium",
            Engine::Firefox => "firefox",
        }
    }

    /// The engines every scenario runs in: both, unless `SSE_COUNTER_BROWSERS` names
    /// some (`chromium`, `firefox`, comma-separated), to run one engine while working.
    fn all() -> Vec<Engine> {
        let wanted = std::env::var("SSE_COUNTER_BROWSERS").unwrap_or_default();
        let all = [Engine::Chromium, Engine::Firefox];
        if wanted.trim().is_empty() {
            return all.to_vec();
        }
        let engines: Vec<Engine> = all
            .into_iter()
            .filter(|e| wanted.split(',').any(|w| w.trim() == e.name()))
            .collect();
        assert!(
            !engines.is_empty(),
            "SSE_COUNTER_BROWSERS={wanted:?} names no engine (chromium, firefox)"
        );
        engines
    }

    /// The driver program, its flag for a free port, and the start-up line's words that
    /// come just before the port.
    fn driver(self) -> (String, &'static str, &'static str) {
        match self {
            Engine::Chromium => (
                std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into()),
                "--port=0",
                "started successfully on port ",
            ),
            Engine::Firefox => (
                std::env::var("GECKODRIVER").unwrap_or_else(|_| "geckodriver".into()),
                "--port=0",
                "Listening on 127.0.0.1:",
            ),
        }
    }
}

/// A WebDriver server (chromedriver or geckodriver) on a free port, stopped with SIGTERM
/// (then SIGKILL) when dropped so that it can close the browsers it started.
struct Driver {
    child: Child,
    /// `http://127.0.0.1:PORT`, where it takes WebDriver commands.
    url: String,
}

impl Driver {
    /// With `--port=0` chromedriver binds 127.0.0.1 on a free port and then [::1] on the
    /// same one, which now and then is taken on a busy machine: it then exits, and
    /// another try picks another port. geckodriver binds 127.0.0.1 only.
    async fn start(engine: Engine) -> Driver {
        let (program, port_flag, marker) = engine.driver();
        for _ in 0..5 {
            let mut child = Command::new(&program)
                .arg(port_flag)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot start {program} ({e}); `cargo xtask test` installs it")
                });
            let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
            let started = within_for(
                START_LIMIT,
                "the WebDriver server to say it started",
                async {
                    while let Ok(Some(line)) = lines.next_line().await {
                        if line.contains(marker) {
                            return Some(line);
                        }
                    }
                    None
                },
            )
            .await;
            let Some(line) = started else {
                // It exited without starting: try again on another port.
                continue;
            };
            // Keep its stdout empty, so that it never blocks on a full pipe.
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            let port: String = line
                .split_once(marker)
                .map(|(_, rest)| rest.chars().take_while(char::is_ascii_digit).collect())
                .expect("a port after the driver's start-up words");
            return Driver {
                child,
                url: format!("http://127.0.0.1:{port}"),
            };
        }
        panic!("{program} exited five times without starting")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let Some(pid) = self.child.id() else {
            return;
        };
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        // A short blocking wait at the end of a scenario; SIGKILL (kill_on_drop) follows
        // if it has not exited by then.
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// How the page reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP/1.1: Chromium opens at most six connections to the origin.
    Http,
    /// HTTPS with the server's self-signed certificate (Chromium is told to accept it),
    /// where ALPN picks HTTP/2 and every request shares one connection.
    Https,
}

/// What a scenario needs: the scheme, the server's flags beyond the harness's own,
/// whether the browser goes through a [`Proxy`], and whether one server or a
/// [`Cluster`] serves it.
#[derive(Debug, Clone)]
pub struct Setup {
    scheme: Scheme,
    args: Vec<String>,
    proxied: bool,
    /// Whether this scenario's pictures go to the screenshot directory.
    screenshots: bool,
    /// `Some(n)`: n instances on Redis behind nginx instead of one server.
    instances: Option<usize>,
    /// The server's `--retry-ms`: short by default, so that the browser's own reconnects
    /// do not slow the tests down.
    retry_ms: u64,
}

impl Setup {
    pub fn new(scheme: Scheme) -> Setup {
        Setup {
            scheme,
            args: Vec::new(),
            proxied: false,
            screenshots: true,
            instances: None,
            retry_ms: 200,
        }
    }

    /// `instances` servers sharing the counter through Redis, behind nginx with
    /// `deploy/nginx.conf`: the browser opens nginx over HTTPS (HTTP/2), nginx serves
    /// the page and passes the API to the instances over plain HTTP/1.1.
    pub fn cluster(instances: usize) -> Setup {
        assert!(instances > 0, "a cluster needs an instance");
        Setup {
            instances: Some(instances),
            ..Setup::new(Scheme::Https)
        }
    }

    pub fn http() -> Setup {
        Setup::new(Scheme::Http)
    }

    /// Adds server flags; the harness already passes `--retry-ms` ([`Setup::retry_ms`]),
    /// `--allow-fault-injection`, `--shutdown-grace-secs`, `--metrics-addr`,
    /// `--static-dir` and the TLS flag, which clap refuses twice.
    pub fn args<const N: usize>(mut self, args: [&str; N]) -> Setup {
        self.args.extend(args.iter().map(|a| (*a).to_owned()));
        self
    }

    /// The server's `--retry-ms` instead of the harness's 200 ms (the server's default is
    /// 3000), for a scenario that must hold without a short `retry`.
    pub fn retry_ms(mut self, ms: u64) -> Setup {
        self.retry_ms = ms;
        self
    }

    /// The browser talks to the server through a [`Proxy`] ([`Harness::proxy`]).
    pub fn proxied(mut self) -> Setup {
        assert!(
            self.instances.is_none(),
            "a cluster has nginx in front, not a proxy"
        );
        self.proxied = true;
        self
    }

    /// Takes no screenshots, even for `cargo xtask screenshots` (a scenario that runs
    /// twice keeps the pictures of one run).
    pub fn without_screenshots(mut self) -> Setup {
        self.screenshots = false;
        self
    }

    /// How the binary is started; a restart uses the same, on the same port. An
    /// instance of a cluster is reached over plain HTTP (nginx holds the TLS), and is
    /// given its Redis with [`Setup::instance_launch`].
    fn launch(&self) -> Launch {
        let mut launch = launch()
            .arg("--retry-ms")
            .arg(self.retry_ms.to_string())
            .args(["--allow-fault-injection", "--shutdown-grace-secs", "5"])
            // On its own address, so that the test reads it over plain HTTP whatever
            // the page's scheme (reqwest here speaks no TLS).
            .args(["--metrics-addr", "127.0.0.1:0"])
            .arg("--static-dir")
            .arg(dist_dir())
            .args(&self.args)
            .env("SSE_COUNTER_LOG", "info");
        if self.scheme == Scheme::Https && self.instances.is_none() {
            launch = launch.arg("--tls-self-signed");
        }
        launch
    }

    /// How an instance of a cluster is started: as [`Setup::launch`] says, its shared
    /// counter in Redis at `redis_url`.
    fn instance_launch(&self, redis_url: &str) -> Launch {
        self.launch().args(["--redis-url", redis_url])
    }
}

/// Starts the binary as `launch` says, and the scrape of its metrics address.
async fn start_server(launch: Launch) -> (Binary, Scrape) {
    let server = launch.start().await.with_limit(WAIT);
    const LINE: &str = "metrics served on their own address";
    server.wait_for_log(LINE).await;
    let log = server.log();
    let addr: SocketAddr = log
        .lines()
        .find(|l| l.contains(LINE))
        .and_then(|l| l.split_once("addr="))
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no metrics address in the log:\n{log}"));
    let prom = Scrape::new(
        crate::support::client(),
        format!("http://{addr}/metrics"),
        WAIT,
    );
    (server, prom)
}

/// Several instances of the binary sharing the counter through a real `redis-server`,
/// behind a real nginx (`deploy/nginx.conf`) that serves the built page over HTTPS and
/// passes the API on to them. Every process stops when this is dropped, whatever the
/// outcome (nginx with SIGTERM, the others killed), nginx first and Redis last.
pub struct Cluster {
    pub nginx: Nginx,
    /// Each instance with the scrape of its metrics, in the order nginx lists them.
    pub instances: Vec<(Binary, Scrape)>,
    pub redis: Redis,
}

impl Cluster {
    /// Starts Redis, `n` instances of `setup`'s binary on it, and nginx in front of
    /// them serving the built page; returns once every instance has read Redis.
    async fn start(setup: &Setup, n: usize) -> Cluster {
        let redis = Redis::start().await;
        let mut instances = Vec::new();
        for _ in 0..n {
            instances.push(start_server(setup.instance_launch(&redis.url())).await);
        }
        for (_, prom) in &instances {
            prom.wait_for("sse_shared_store_up", 1.0).await;
        }
        let addrs: Vec<SocketAddr> = instances.iter().map(|(b, _)| b.addr).collect();
        let nginx = Nginx::serving(&addrs, &dist_dir()).await;
        Cluster {
            nginx,
            instances,
            redis,
        }
    }

    /// Each instance's `sse_shared_subscribers`, read once they add up to `total`
    /// (a stream that a tab closed is noticed by its instance a moment later).
    pub async fn subscribers(&self, total: f64) -> Vec<f64> {
        poll_until(
            WAIT,
            &format!("{total} shared subscribers over the instances"),
            async || {
                let mut each = Vec::new();
                for (_, prom) in &self.instances {
                    each.push(prom.metric("sse_shared_subscribers").await);
                }
                if each.iter().sum::<f64>() == total {
                    Ok(each)
                } else {
                    Err(each)
                }
            },
        )
        .await
    }

    /// The same metric of every instance, in order.
    pub async fn metric(&self, name: &str) -> Vec<f64> {
        let mut each = Vec::new();
        for (_, prom) in &self.instances {
            each.push(prom.metric(name).await);
        }
        each
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // The instances print their own logs when a test fails; nginx's is in a file.
        if std::thread::panicking() {
            eprintln!("--- nginx error log ---\n{}", self.nginx.error_log());
        }
    }
}

/// One tab of the browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tab(WindowHandle);

pub struct Harness {
    pub engine: Engine,
    pub scheme: Scheme,
    /// `scheme://HOST:PORT` the browser opens: the server's, the proxy's or nginx's.
    pub base: String,
    /// How the server was started, for a restart.
    launch: Launch,
    /// The server; a scenario may take it to stop it. `None` with a cluster.
    pub server: Option<Binary>,
    /// The server's `/metrics`; `None` with a cluster (see [`Cluster::metric`]).
    prom: Option<Scrape>,
    /// Between the browser and the server, when the setup asked for it.
    proxy: Option<Proxy>,
    /// Redis, the instances and nginx, when the setup asked for a cluster.
    cluster: Option<Cluster>,
    /// Where screenshots go, if this scenario takes them.
    screenshots: Option<PathBuf>,
    pub client: fantoccini::Client,
    http: reqwest::Client,
    driver: Driver,
    /// How the scenario was set up, for a second browser.
    setup: Setup,
    /// The browser's profile; declared last, so that it is removed after the browser and
    /// its driver have stopped.
    profile: TempDir,
}

impl Harness {
    async fn start(engine: Engine, setup: Setup) -> Harness {
        let launch = setup.launch();
        let (server, prom, proxy, cluster, base) = match setup.instances {
            Some(n) => {
                let cluster = Cluster::start(&setup, n).await;
                let base = format!("https://{}", cluster.nginx.addr);
                (None, None, None, Some(cluster), base)
            }
            None => {
                let (server, prom) = start_server(launch.clone()).await;
                let proxy = if setup.proxied {
                    Some(Proxy::start(server.addr).await)
                } else {
                    None
                };
                let base = match &proxy {
                    Some(p) => {
                        let scheme = server.base.split_once("://").map_or("http", |(s, _)| s);
                        format!("{scheme}://{}", p.addr)
                    }
                    None => server.base.clone(),
                };
                (Some(server), Some(prom), proxy, None, base)
            }
        };
        let Browser {
            client,
            driver,
            profile,
        } = Browser::start(engine, &setup).await;
        Harness {
            engine,
            scheme: setup.scheme,
            base,
            launch,
            server,
            prom,
            proxy,
            cluster,
            // The README's pictures are Chromium's.
            screenshots: screenshot_dir()
                .filter(|_| setup.screenshots && engine == Engine::Chromium),
            client,
            http: crate::support::client(),
            driver,
            profile,
            setup,
        }
    }
}

/// A browser: its WebDriver session, its driver and its profile (its own cookies).
/// [`Harness::second_browser`] makes another one, for a second person.
pub struct Browser {
    client: fantoccini::Client,
    driver: Driver,
    profile: TempDir,
}

impl Browser {
    async fn start(engine: Engine, setup: &Setup) -> Browser {
        let driver = Driver::start(engine).await;
        let profile = TempDir::new(engine.name());
        let caps = match engine {
            Engine::Chromium => chromium_capabilities(setup, &profile),
            Engine::Firefox => firefox_capabilities(setup),
        };
        let client = within_for(
            Duration::from_secs(60),
            &format!("starting a {} session", engine.name()),
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(caps)
                .connect(&driver.url),
        )
        .await
        .unwrap_or_else(|e| panic!("the driver could not start {}: {e}", engine.name()));
        Browser {
            client,
            driver,
            profile,
        }
    }

    /// Ends the session (its driver and profile go when this is dropped).
    pub async fn close(self) {
        let _ = tokio::time::timeout(Duration::from_secs(10), self.client.close()).await;
    }
}

/// A fresh headless Chromium: its own profile, nothing fetched in the background.
fn chromium_capabilities(setup: &Setup, profile: &TempDir) -> serde_json::Map<String, Value> {
    let mut args = vec![
        "--headless".to_owned(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--no-first-run".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-sync".into(),
        "--window-size=1200,900".into(),
        format!("--user-data-dir={}", profile.path().display()),
    ];
    if setup.scheme == Scheme::Https {
        // The certificate is the server's own, made at start: no authority signed it.
        args.push("--ignore-certificate-errors".into());
    }
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
    caps.as_object().expect("an object").clone()
}

/// A headless Firefox in a fresh profile (geckodriver makes a temporary one for each
/// session), accepting the server's self-signed certificate.
fn firefox_capabilities(setup: &Setup) -> serde_json::Map<String, Value> {
    let mut firefox = json!({
        "args": ["-headless", "-width=1200", "-height=900"],
    });
    let bin = std::env::var("FIREFOX_BIN").ok().or_else(|| {
        // Debian's package is `firefox-esr`; geckodriver looks for `firefox`.
        ["/usr/bin/firefox-esr", "/usr/bin/firefox"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .map(str::to_owned)
    });
    if let Some(bin) = bin {
        firefox["binary"] = json!(bin);
    }
    let caps = json!({
        "browserName": "firefox",
        "acceptInsecureCerts": setup.scheme == Scheme::Https,
        "moz:firefoxOptions": firefox,
    });
    caps.as_object().expect("an object").clone()
}

impl Harness {
    /// Runs one scenario in each engine ([`Engine::all`]), one after the other, each with
    /// a fresh server and browser; the browser is closed and (in Chromium) its console
    /// checked whatever the scenario did. Should it fail, the server's log is printed as
    /// the server is dropped, and the engine is named.
    pub async fn scenario<F>(setup: Setup, body: F)
    where
        F: for<'a> AsyncFn(&'a mut Harness),
    {
        for engine in Engine::all() {
            Harness::scenario_in(engine, setup.clone(), &body).await;
        }
    }

    /// Runs one scenario in one engine.
    pub async fn scenario_in<F>(engine: Engine, setup: Setup, body: &F)
    where
        F: for<'a> AsyncFn(&'a mut Harness),
    {
        let _permit = BROWSERS.acquire().await.expect("semaphore never closes");
        let mut h = Harness::start(engine, setup).await;
        let outcome = std::panic::AssertUnwindSafe(body(&mut h))
            .catch_unwind()
            .await;
        let console = h.console_errors().await;
        let _ = tokio::time::timeout(Duration::from_secs(10), h.client.clone().close()).await;
        if let Err(panic) = outcome {
            eprintln!("--- the scenario failed in {} ---", engine.name());
            std::panic::resume_unwind(panic);
        }
        // Checked in every scenario: the page throws nothing.
        assert!(
            console.is_empty(),
            "uncaught errors in the page's console ({}): {console:#?}",
            engine.name()
        );
    }

    /// SEVERE console entries that are not the network's own reports (a dropped stream
    /// is logged by Chromium as a network error, which is the point of some scenarios).
    /// geckodriver has no log endpoint (it is not in the W3C protocol): for Firefox, what
    /// each open tab recorded since it was loaded (errors while a page starts, before
    /// [`Harness::load`] can listen, are not seen).
    async fn console_errors(&self) -> Vec<Value> {
        if self.engine == Engine::Firefox {
            return within_for(WAIT, "reading the pages' errors", self.page_errors()).await;
        }
        let Ok(Some(session)) = self.client.session_id().await else {
            return vec![json!("no session")];
        };
        let url = format!("{}/session/{session}/se/log", self.driver.url);
        let req = self
            .http
            .post(&url)
            .header("content-type", "application/json")
            .body(json!({"type": "browser"}).to_string());
        let body: Value = send_within(WAIT, req, "reading the browser log")
            .await
            .json();
        body["value"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e["level"] == "SEVERE" && e["source"] != "network")
            .collect()
    }

    /// What every open tab recorded in `window.__errors`.
    async fn page_errors(&self) -> Vec<Value> {
        let mut errors = Vec::new();
        let Ok(windows) = self.client.windows().await else {
            return vec![json!("no windows")];
        };
        for window in windows {
            if self.client.switch_to_window(window).await.is_err() {
                continue;
            }
            let seen = self
                .client
                .execute("return window.__errors || [];", vec![])
                .await;
            if let Ok(Value::Array(seen)) = seen {
                errors.extend(seen);
            }
        }
        errors
    }

    /// Another browser of the same engine, with its own profile (no cookie, lock or
    /// `BroadcastChannel` shared with this one): a second person. Commands go to it
    /// after [`Harness::swap_browser`].
    pub async fn second_browser(&self) -> Browser {
        Browser::start(self.engine, &self.setup).await
    }

    /// Makes `other` the browser the commands go to, and this one `other`.
    pub fn swap_browser(&mut self, other: &mut Browser) {
        std::mem::swap(&mut self.client, &mut other.client);
        std::mem::swap(&mut self.driver, &mut other.driver);
        std::mem::swap(&mut self.profile, &mut other.profile);
    }

    /// Redis, the instances and nginx.
    pub fn cluster(&self) -> &Cluster {
        self.cluster
            .as_ref()
            .expect("the scenario's setup has no cluster")
    }

    /// The proxy between the browser and the server.
    pub fn proxy(&self) -> &Proxy {
        self.proxy
            .as_ref()
            .expect("the scenario's setup has no proxy")
    }

    // --- Tabs ---------------------------------------------------------------------------

    /// The tab the commands go to now.
    pub async fn tab(&self) -> Tab {
        Tab(drive("the current window", self.client.window()).await)
    }

    /// Opens a new tab (a WebDriver new window) and makes it current.
    pub async fn new_tab(&self) -> Tab {
        let new = drive("opening a tab", self.client.new_window(true)).await;
        let tab = Tab(new.handle);
        self.switch_to(&tab).await;
        tab
    }

    /// Closes the current tab; make another current before the next command.
    pub async fn close_tab(&self) {
        drive("closing the tab", self.client.close_window()).await;
    }

    /// Makes `tab` current.
    pub async fn switch_to(&self, tab: &Tab) {
        drive(
            "switching tabs",
            self.client.switch_to_window(tab.0.clone()),
        )
        .await;
    }

    // --- The page -----------------------------------------------------------------------

    /// Loads `path_and_query` in the current tab and waits for the wasm module to have
    /// rendered (the HTML alone leaves the detail line empty).
    pub async fn load(&self, path_and_query: &str) {
        let url = format!("{}{path_and_query}", self.base);
        drive(&format!("loading {url}"), self.client.goto(&url)).await;
        poll_until(WAIT, "the page's module to start", async || {
            let detail = self.text("state-detail").await;
            if detail.is_empty() {
                Err(detail)
            } else {
                Ok(())
            }
        })
        .await;
        self.record_page_errors().await;
    }

    /// From now on, records the page's uncaught errors and unhandled rejections (a
    /// panic in the page's Rust is one) in `window.__errors`, for the engine whose
    /// console the harness cannot read (see [`Harness::console_errors`]).
    async fn record_page_errors(&self) {
        if self.engine != Engine::Firefox {
            return;
        }
        let js = r#"
            if (!window.__errors) {
                const errors = (window.__errors = []);
                window.addEventListener("error", (e) => errors.push(String(e.message)));
                window.addEventListener("unhandledrejection", (e) =>
                    errors.push(`unhandled rejection: ${e.reason}`));
            }
        "#;
        drive(
            "recording the page's errors",
            self.client.execute(js, vec![]),
        )
        .await;
    }

    /// Loads `path_and_query` in the current tab if the browser loads it, and its module
    /// starts, within `limit`; whether it did. Past the limit WebDriver stops waiting for
    /// the navigation (its page-load timeout), for a page that the browser cannot load.
    pub async fn load_within(&self, path_and_query: &str, limit: Duration) -> bool {
        let timeouts = |page_load| TimeoutConfiguration::new(None, Some(page_load), None);
        drive(
            "setting the page-load timeout",
            self.client.update_timeouts(timeouts(limit)),
        )
        .await;
        let url = format!("{}{path_and_query}", self.base);
        let loaded = within_for(
            limit + WAIT,
            &format!("loading {url}"),
            self.client.goto(&url),
        )
        .await
        .is_ok();
        drive(
            "restoring the page-load timeout",
            self.client
                .update_timeouts(timeouts(Duration::from_secs(60))),
        )
        .await;
        let started = loaded && !self.text("state-detail").await.is_empty();
        if started {
            self.record_page_errors().await;
        }
        started
    }

    /// Loads the page with nothing connected, and records the counter's values.
    pub async fn open_page(&self) {
        self.load("/").await;
        self.wait_text("state-detail", "Not connected yet.").await;
        assert_eq!(self.text("state").await, "idle");
        // Record every value the counter shows, so gaps and repeats can be seen.
        self.observe("counter").await;
    }

    /// From now on, records each text the element shows, with the browser's
    /// `Date.now()` when it showed it (the text at this call first).
    pub async fn observe(&self, testid: &str) {
        let js = r#"
            const [id] = arguments;
            const seen = (window.__seen = window.__seen || {});
            const log = (seen[id] = []);
            const el = document.querySelector(`[data-testid="${id}"]`);
            const note = () => log.push([el.textContent.trim(), Date.now()]);
            note();
            new MutationObserver(note)
                .observe(el, { childList: true, characterData: true, subtree: true });
        "#;
        drive(
            &format!("observing {testid}"),
            self.client.execute(js, vec![json!(testid)]),
        )
        .await;
    }

    /// What an observed element showed, in order, and when (ms since the epoch); a text
    /// is recorded again only after another one.
    pub async fn seen(&self, testid: &str) -> Vec<(String, u64)> {
        let v = drive(
            &format!("reading what {testid} showed"),
            self.client
                .execute("return window.__seen[arguments[0]];", vec![json!(testid)]),
        )
        .await;
        let entries: Vec<(String, u64)> =
            serde_json::from_value(v).unwrap_or_else(|e| panic!("{testid} not observed: {e}"));
        let mut out: Vec<(String, u64)> = Vec::new();
        for (text, at) in entries {
            if out.last().is_none_or(|(last, _)| *last != text) {
                out.push((text, at));
            }
        }
        out
    }

    /// The texts an observed element showed, in order, without the times.
    pub async fn seen_texts(&self, testid: &str) -> Vec<String> {
        self.seen(testid)
            .await
            .into_iter()
            .map(|(t, _)| t)
            .collect()
    }

    /// The counter values the page showed, in order.
    pub async fn counter_history(&self) -> Vec<String> {
        self.seen_texts("counter")
            .await
            .into_iter()
            .filter(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()))
            .collect()
    }

    async fn el(&self, testid: &str) -> fantoccini::elements::Element {
        let css = format!("[data-testid=\"{testid}\"]");
        drive(
            &format!("element {testid}"),
            self.client.wait().for_element(Locator::Css(&css)),
        )
        .await
    }

    pub async fn text(&self, testid: &str) -> String {
        let el = self.el(testid).await;
        drive(&format!("text of {testid}"), el.text())
            .await
            .trim()
            .to_owned()
    }

    /// The texts of several elements at one instant, read by one script, so that a
    /// tab's counter and state are seen together.
    pub async fn texts<const N: usize>(&self, testids: [&str; N]) -> [String; N] {
        let js = r#"
            return arguments[0].map((id) => {
                const el = document.querySelector(`[data-testid="${id}"]`);
                return el ? el.textContent.trim() : null;
            });
        "#;
        let v = drive(
            "reading the page",
            self.client.execute(js, vec![json!(testids.as_slice())]),
        )
        .await;
        let texts: Vec<Option<String>> = serde_json::from_value(v).expect("texts or nulls");
        let texts: Vec<String> = texts
            .into_iter()
            .zip(testids)
            .map(|(t, id)| t.unwrap_or_else(|| panic!("no element {id} in the page")))
            .collect();
        texts.try_into().expect("one text per id")
    }

    pub async fn fill(&self, testid: &str, value: &str) {
        let el = self.el(testid).await;
        drive("clear input", el.clear()).await;
        if !value.is_empty() {
            drive("type into input", el.send_keys(value)).await;
        }
    }

    pub async fn set_checkbox(&self, testid: &str, on: bool) {
        let el = self.el(testid).await;
        if drive("checkbox state", el.is_selected()).await != on {
            drive("click checkbox", el.click()).await;
        }
    }

    pub async fn click(&self, testid: &str) {
        let el = self.el(testid).await;
        drive(&format!("click {testid}"), el.click()).await;
    }

    /// Fills the form and clicks Connect.
    pub async fn connect(
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
    pub async fn wait_text(&self, testid: &str, want: &str) {
        self.wait_until(testid, &format!("{want:?}"), |t| t == want)
            .await;
    }

    /// Waits until the element's text passes `ok`; `what` describes the text wanted.
    pub async fn wait_until(&self, testid: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
        poll_until(WAIT, &format!("{testid} to show {what}"), async || {
            let last = self.text(testid).await;
            if ok(&last) {
                Ok(last)
            } else {
                Err(last)
            }
        })
        .await
    }

    // --- The server ---------------------------------------------------------------------

    /// The one server's metrics (a cluster's are [`Cluster::metric`]).
    fn prom(&self) -> &Scrape {
        self.prom
            .as_ref()
            .expect("one server's metrics: with a cluster, ask Harness::cluster")
    }

    pub async fn metric(&self, name: &str) -> f64 {
        self.prom().metric(name).await
    }

    pub async fn wait_metric(&self, name: &str, want: f64) {
        self.prom().wait_for(name, want).await
    }

    pub fn server(&self) -> &Binary {
        self.server.as_ref().expect("the server is running")
    }

    pub fn server_log(&self) -> String {
        self.server.as_ref().map(Binary::log).unwrap_or_default()
    }

    /// `POST /api/shared/increment` straight to the server (past any proxy); the value
    /// it made.
    pub async fn increment(&self) -> u64 {
        assert_eq!(
            self.scheme,
            Scheme::Http,
            "the test's client speaks no TLS: increment from the page"
        );
        let server = self.server();
        let url = format!("{}{}", server.base, shared::paths::SHARED_INCREMENT);
        let reply = send_within(WAIT, self.http.post(&url), "POST increment").await;
        assert_eq!(reply.status, 200, "POST increment: {}", reply.text());
        let inc: shared::Incremented = serde_json::from_str(&reply.text()).expect("increment JSON");
        inc.value
    }

    /// `POST /api/publish` as a backend would, with `token` as a bearer; the event's id.
    pub async fn publish(&self, token: &str, channel: &str, data: Value) -> String {
        assert_eq!(
            self.scheme,
            Scheme::Http,
            "the test's client speaks no TLS: publish from the page"
        );
        let url = format!("{}{}", self.server().base, shared::paths::PUBLISH);
        let body = json!({"channel": channel, "type": "message", "data": data});
        let req = self
            .http
            .post(&url)
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_string());
        let reply = send_within(WAIT, req, "POST publish").await;
        assert_eq!(reply.status, 200, "POST publish: {}", reply.text());
        let published: shared::channels::Published =
            serde_json::from_str(&reply.text()).expect("publish JSON");
        published.id
    }

    /// SIGTERM, and waits for the server to exit by itself (with 0); it is returned for
    /// its log.
    pub async fn stop_server(&mut self) -> Binary {
        let mut server = self.server.take().expect("the server is running");
        server.sigterm();
        let status = server.exit().await;
        assert!(status.success(), "the server exited with {status}");
        server
    }

    /// Starts the server again as before, on `addr` (the port it had, say).
    pub async fn start_server_on(&mut self, addr: SocketAddr) {
        assert!(self.server.is_none(), "a server is running already");
        let launch = self.launch.clone().args(["--addr", &addr.to_string()]);
        let (server, prom) = start_server(launch).await;
        assert_eq!(server.addr, addr);
        self.server = Some(server);
        self.prom = Some(prom);
    }

    // --- Screenshots --------------------------------------------------------------------

    /// Whether this scenario saves screenshots (`cargo xtask screenshots`).
    pub fn takes_screenshots(&self) -> bool {
        self.screenshots.is_some()
    }

    /// Saves a screenshot of the page as `docs/screenshots/<name>.png` when
    /// `SSE_COUNTER_SCREENSHOTS` names a directory (`cargo xtask screenshots` does).
    pub async fn shot(&self, name: &str) {
        if self.screenshots.is_none() {
            return;
        }
        let png = drive("screenshot", self.client.screenshot()).await;
        self.save_png(name, &png);
    }

    /// A screenshot of the element `css` in the current tab, scrolled to the top of the
    /// window, when screenshots are wanted; a tile for [`Harness::composite`].
    pub async fn shot_of(&self, css: &str) -> Option<Vec<u8>> {
        self.screenshots.as_ref()?;
        let el = drive(
            &format!("element {css}"),
            self.client.find(Locator::Css(css)),
        )
        .await;
        drive(
            &format!("scrolling to {css}"),
            self.client.execute(
                "document.querySelector(arguments[0]).scrollIntoView({ block: 'start' });",
                vec![json!(css)],
            ),
        )
        .await;
        Some(drive(&format!("screenshot of {css}"), el.screenshot()).await)
    }

    /// The browser window's outer size.
    pub async fn window_size(&self) -> (u32, u32) {
        let (w, h) = drive("the window size", self.client.get_window_size()).await;
        (
            u32::try_from(w).expect("a sane width"),
            u32::try_from(h).expect("a sane height"),
        )
    }

    /// Resizes the browser window (all its tabs).
    pub async fn set_window_size(&self, width: u32, height: u32) {
        drive(
            "resizing the window",
            self.client.set_window_size(width, height),
        )
        .await;
    }

    /// Saves, when screenshots are wanted, one picture of several tiles (captioned
    /// screenshots of tabs, say) laid out `columns` wide: drawn in a new blank tab,
    /// which needs no connection, with the window made tall enough to show it whole.
    pub async fn composite(
        &self,
        name: &str,
        title: &str,
        columns: usize,
        tiles: &[(String, Vec<u8>)],
    ) {
        if self.screenshots.is_none() || tiles.is_empty() {
            return;
        }
        let back = self.tab().await;
        self.new_tab().await;
        let tiles: Vec<Value> = tiles
            .iter()
            .map(|(caption, png)| {
                json!({
                    "caption": caption,
                    "src": format!(
                        "data:image/png;base64,{}",
                        base64::engine::general_purpose::STANDARD.encode(png)
                    ),
                })
            })
            .collect();
        let js = r#"
            const [title, columns, tiles] = arguments;
            document.body.innerHTML = "";
            document.body.style.cssText = "margin:0";
            const board = document.createElement("div");
            board.id = "board";
            board.style.cssText =
                "padding:16px;background:#eef1f6;font:15px system-ui,sans-serif;color:#1c2330";
            const h = document.createElement("h2");
            h.textContent = title;
            h.style.cssText = "margin:0 0 12px;font-size:20px";
            const grid = document.createElement("div");
            grid.style.cssText =
                `display:grid;grid-template-columns:repeat(${columns},1fr);gap:12px;align-items:start`;
            board.append(h, grid);
            document.body.append(board);
            const loads = tiles.map(({ caption, src }) => {
                const fig = document.createElement("figure");
                fig.style.cssText = "margin:0;background:#fff;border-radius:8px;padding:8px";
                const img = document.createElement("img");
                img.src = src;
                img.style.cssText = "width:100%;display:block";
                const cap = document.createElement("figcaption");
                cap.textContent = caption;
                cap.style.cssText = "padding-top:6px;font-weight:600";
                fig.append(img, cap);
                grid.append(fig);
                return img.decode();
            });
            return Promise.all(loads).then(() => [
                Math.ceil(board.getBoundingClientRect().height),
                window.outerHeight - window.innerHeight,
            ]);
        "#;
        let sizes = drive(
            "drawing the composite",
            self.client
                .execute(js, vec![json!(title), json!(columns), json!(tiles)]),
        )
        .await;
        let [board, chrome]: [u32; 2] =
            serde_json::from_value(sizes).expect("the board's height and the window's chrome");
        let (width, height) = self.window_size().await;
        self.set_window_size(width, board + chrome + 8).await;
        let el = drive("the composite", self.client.find(Locator::Css("#board"))).await;
        let png = drive("screenshot of the composite", el.screenshot()).await;
        self.save_png(name, &png);
        self.set_window_size(width, height).await;
        drive("closing the composite", self.client.close_window()).await;
        self.switch_to(&back).await;
    }

    /// Writes `<name>.png` into the screenshot directory.
    fn save_png(&self, name: &str, png: &[u8]) {
        let Some(dir) = &self.screenshots else {
            return;
        };
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }
}

// --- Appended helpers: the server's log on the clock, and a proxy that withholds `end` ---

/// When the server wrote a log line, in milliseconds since the epoch: the line's first
/// word, the `tracing` timestamp (`2026-12-02T03:31:23.123456Z`, UTC), read on the
/// clock that [`now_ms`] reads. `None` for a line that does not start with one.
pub fn log_time_ms(line: &str) -> Option<u64> {
    let stamp = line.split_whitespace().next()?.strip_suffix('Z')?;
    let (date, time) = stamp.split_once('T')?;
    let mut ymd = date.splitn(3, '-').map(str::parse::<i64>);
    let (y, m, d) = (ymd.next()?.ok()?, ymd.next()?.ok()?, ymd.next()?.ok()?);
    let mut hms = time.splitn(3, ':');
    let (hh, mm) = (
        hms.next()?.parse::<u64>().ok()?,
        hms.next()?.parse::<u64>().ok()?,
    );
    let (ss, fraction) = hms.next()?.split_once('.')?;
    let ss: u64 = ss.parse().ok()?;
    // The first three digits of the fraction are the milliseconds.
    let ms: u64 = format!("{fraction:0<3}").get(..3)?.parse().ok()?;
    // Days from 1970-01-01 to the civil date (Howard Hinnant's `days_from_civil`).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = u64::try_from(era * 146_097 + doe - 719_468).ok()?;
    Some((days * 86_400 + hh * 3_600 + mm * 60 + ss) * 1_000 + ms)
}

/// A TCP proxy between the browser and the server that closes a connection just before
/// the server's `end` event would reach the browser, as a network that fails right
/// after a stream's last event would: the browser has the stream's last id and
/// reconnects with it. Everything else passes as it is. It keeps the head (request line
/// and headers) of every request that came through it, to count the browser's requests.
pub struct EndCutter {
    /// Where the browser connects.
    pub addr: SocketAddr,
    heads: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// Closes every connection when the proxy is dropped.
    stop: tokio::sync::watch::Sender<bool>,
    accept: tokio::task::JoinHandle<()>,
}

/// What [`EndCutter`] withholds, and every byte after it on that connection.
const END_EVENT: &[u8] = b"event: end";
/// The header value that makes an answer one [`EndCutter`] watches (the page's own
/// files may hold the words of [`END_EVENT`]).
const EVENT_STREAM: &[u8] = b"content-type: text/event-stream";

/// Where `needle` first starts in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

impl EndCutter {
    /// A proxy on `127.0.0.1:0` to `upstream`.
    pub async fn start(upstream: SocketAddr) -> EndCutter {
        let listener = within_for(
            WAIT,
            "binding the end cutter",
            tokio::net::TcpListener::bind("127.0.0.1:0"),
        )
        .await
        .expect("bind the end cutter");
        let addr = listener.local_addr().expect("the end cutter's address");
        let heads = std::sync::Arc::default();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let kept = std::sync::Arc::clone(&heads);
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (kept, mut stopped) = (std::sync::Arc::clone(&kept), stopped.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        _ = stopped.wait_for(|s| *s) => {}
                        () = Self::serve(client, upstream, kept) => {}
                    }
                });
            }
        });
        EndCutter {
            addr,
            heads,
            stop,
            accept,
        }
    }

    /// The heads of the requests that came through so far, in the order they came.
    pub fn requests(&self) -> Vec<String> {
        self.heads.lock().expect("heads lock").clone()
    }

    /// One connection, until either side closes or `end` comes.
    async fn serve(
        client: tokio::net::TcpStream,
        upstream: SocketAddr,
        heads: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    ) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
            return;
        };
        let (mut from_client, mut to_client) = client.into_split();
        let (mut from_server, mut to_server) = server.into_split();
        let up = async {
            let mut pending = Vec::new();
            let mut buf = vec![0u8; 16 * 1024];
            while let Ok(n @ 1..) = from_client.read(&mut buf).await {
                pending.extend_from_slice(&buf[..n]);
                Self::keep_heads(&mut pending, &heads);
                if to_server.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        };
        let down = async {
            // Whether the answer on this connection is an event stream (then it is the
            // connection's last), and the last bytes looked at, in case a marker spans
            // two reads.
            let mut streaming = false;
            let mut tail: Vec<u8> = Vec::new();
            let mut buf = vec![0u8; 16 * 1024];
            while let Ok(n @ 1..) = from_server.read(&mut buf).await {
                let mut window = tail.clone();
                window.extend_from_slice(&buf[..n]);
                let from = if streaming {
                    Some(0)
                } else {
                    find(&window, EVENT_STREAM)
                };
                streaming = from.is_some();
                let end =
                    from.and_then(|from| find(&window[from..], END_EVENT).map(|at| from + at));
                if let Some(at) = end {
                    let keep = at.saturating_sub(tail.len());
                    let _ = to_client.write_all(&buf[..keep]).await;
                    return;
                }
                if to_client.write_all(&buf[..n]).await.is_err() {
                    return;
                }
                let keep = EVENT_STREAM.len().max(END_EVENT.len()) - 1;
                tail = window[window.len().saturating_sub(keep)..].to_vec();
            }
        };
        // Either direction ending ends both, and dropping the halves closes the sockets.
        tokio::select! {
            () = up => {}
            () = down => {}
        }
    }

    /// Moves each complete request head in `pending` to `heads`, and skips its body
    /// (`Content-Length`; the page sends no chunked request).
    fn keep_heads(pending: &mut Vec<u8>, heads: &std::sync::Mutex<Vec<String>>) {
        while let Some(end) = find(pending, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..end]).into_owned();
            let body: usize = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse().ok())
                .unwrap_or(0);
            if pending.len() < end + 4 + body {
                return;
            }
            pending.drain(..end + 4 + body);
            heads.lock().expect("heads lock").push(head);
        }
    }
}

impl Drop for EndCutter {
    fn drop(&mut self) {
        self.accept.abort();
        let _ = self.stop.send(true);
    }
}

#[cfg(test)]
mod tests {
    use super::log_time_ms;

    #[test]
    fn log_time_ms_reads_the_tracing_timestamp() {
        let at = |stamp: &str| log_time_ms(&format!("{stamp}  INFO server: shared stream opened"));
        assert_eq!(at("2026-12-02T03:31:23.123456Z"), Some(1_796_182_283_123));
        assert_eq!(at("2024-02-29T23:59:59.999000Z"), Some(1_709_251_199_999));
        assert_eq!(at("1970-01-01T00:00:00.000000Z"), Some(0));
        assert_eq!(at("not a time"), None);
    }
}
