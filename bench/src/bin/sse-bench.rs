//! `sse-bench`: opens many SSE streams against a loopback server and reports what it
//! delivered and, given its PID, what it cost (see `sse-bench --help`).

use anyhow::{bail, ensure, Context as _};
use bench::load::{Load, LoadConfig, Target, Window};
use bench::procfs::{self, ProcSample};
use bench::publish::{publish, Body, Pace, PublishConfig};
use bench::report::{
    PublishFigures, Report, ServerFigures, StoreFigures, StreamKind, Transport, WorkerResult,
};
use clap::Parser;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};

/// Most streams one run may open, over all its processes.
const MAX_STREAMS: u64 = 50_000;
/// Longest run allowed.
const MAX_DURATION_SECS: u64 = 3_600;
/// HTTP/2 streams per connection when --connections is not given: sse-counter's
/// default `--h2-max-streams`, and what most servers allow.
const DEFAULT_STREAMS_PER_H2_CONNECTION: u64 = 100;

/// Load generator for SSE servers on this machine's loopback.
///
/// Opens --streams streams at --ramp per second, spread over source addresses
/// 127.0.0.1..=127.0.0.K, waits until all are open (or failed), waits --warmup, then
/// counts ticks for --window seconds and closes everything. Ticks are SSE events whose
/// data is JSON with `num` (1, 2, ...) and `sent_at_us` (the server's wall clock); on
/// the shared counter (`--kind shared`) they carry `value` instead, counted from the
/// first a stream sees, and --publish-rate drives the changes.
///
/// An https:// URL is reached over TLS (any certificate is accepted: the target is on
/// this machine), with HTTP/1.1, one connection per stream; with --http2 the streams
/// are multiplexed over --connections HTTP/2 connections.
///
/// Several URLs (the instances of one deployment) share the streams, stream i on URL
/// i mod K, and the increments, in turn; give each server's PID with --server-pid to
/// have their costs summed, and the store's (Redis) with --store-pid.
///
/// Channels (`/api/events?channel=..`, `--kind channels`): `{i}` in the URL is stream
/// i's channel index, i mod --channels, so `?channel=bench/{i}` with `--channels 1000`
/// spreads the streams over 1,000 channels. With `--publish-path /api/publish` the
/// publisher sends `{"channel": <--publish-channel, {i} its index>, "data": {"n": k}}`,
/// request i to channel i mod --channels, k counting each channel's events from 1,
/// with the bearer token read from --publish-token-file (never given on the command
/// line, so it stays out of process lists and logs); every stream checks that its ids
/// rise and that each channel's n goes up by one.
#[derive(Debug, Parser)]
#[command(name = "sse-bench", version)]
struct Cli {
    /// The stream's URL, http:// or https://, or several; only loopback (127.x.y.z,
    /// localhost) is accepted.
    #[arg(required = true)]
    urls: Vec<String>,
    /// Multiplex the streams over HTTP/2 (ALPN `h2`; needs an https:// URL).
    #[arg(long)]
    http2: bool,
    /// HTTP/2 connections to spread the streams over, stream i on connection
    /// i % K (default: one per 100 streams, rounded up). Each must be allowed that
    /// many streams at once: the server's SETTINGS_MAX_CONCURRENT_STREAMS
    /// (sse-counter's --h2-max-streams).
    #[arg(long, requires = "http2", value_parser = clap::value_parser!(u64).range(1..))]
    connections: Option<u64>,
    /// Each HTTP/2 stream's receive window, in bytes: what the server may send on it
    /// before the client has read it (HTTP/2's default; a small one shows whether the
    /// reads give it back).
    #[arg(long, requires = "http2", default_value_t = 65_535,
          value_parser = clap::value_parser!(u32).range(1..=2_147_483_647))]
    h2_stream_window: u32,
    /// Streams to open (0: none, to measure publishing alone).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(0..=MAX_STREAMS))]
    streams: u64,
    /// Channels `{i}` in the URL and --publish-channel counts over: stream i asks for
    /// channel i mod N, publish i goes to channel i mod N.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    channels: u64,
    /// Streams opened per second; 0 opens them all as fast as possible.
    #[arg(long, default_value_t = 1000.0)]
    ramp: f64,
    /// Seconds to wait, once all are open, before the steady window.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Length of the steady window in seconds.
    #[arg(long, default_value_t = 10.0)]
    window: f64,
    /// Hard limit on the whole run in seconds; a run planned longer is refused, and a
    /// run that overruns it is ended.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=MAX_DURATION_SECS))]
    duration: u64,
    /// Seconds allowed for a TCP connect, and again for the response headers.
    #[arg(long, default_value_t = 10.0)]
    connect_timeout: f64,
    /// Spread client sockets over 127.0.0.1..=127.0.0.K.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u8).range(1..=250))]
    source_ips: u8,
    /// Load processes: this one spawns K workers of itself, each with a share of the
    /// streams (one process may hold only as many sockets as its open-files limit).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=16))]
    procs: u32,
    /// The server's PID: adds its CPU per event and memory per stream (from /proc).
    /// Repeat it for several servers: the figures are their sums.
    #[arg(long)]
    server_pid: Vec<u32>,
    /// The PID of the store the servers share (Redis): adds its CPU over the window
    /// and per increment taken in it (from /proc).
    #[arg(long)]
    store_pid: Option<u32>,
    /// The tick interval the URL asks for, in ms, for the expected event rate (read
    /// from `interval_ms=` in the URL when not given).
    #[arg(long)]
    interval_ms: Option<u64>,
    /// What the streams carry: `counter` (ticks with `num` from 1), `shared` (changes
    /// of the shared counter with `value`) or `channels` (events of /api/events); by
    /// default the one the path serves.
    #[arg(long)]
    kind: Option<StreamKind>,
    /// Increments per second to `POST` to --publish-path once the streams are open, until
    /// the window ends (0: none; the server changes the counter by itself), to each
    /// URL's server in turn.
    #[arg(long, default_value_t = 0.0)]
    publish_rate: f64,
    /// Instead of --publish-rate: this many keep-alive connections to the first URL's
    /// server, each sending the next request as soon as the last is answered, until
    /// the window ends (what the server takes per second).
    #[arg(long, conflicts_with = "publish_rate", value_parser = clap::value_parser!(u32).range(1..=64))]
    publish_flood: Option<u32>,
    /// The path to `POST` to, on the URLs' servers: the shared counter's increment,
    /// or /api/publish (channels: needs --publish-token-file).
    #[arg(long, default_value = shared::paths::SHARED_INCREMENT)]
    publish_path: String,
    /// The channel publishes go to, `{i}` replaced by the channel's index (0 to
    /// --channels - 1).
    #[arg(long, default_value = "bench/{i}")]
    publish_channel: String,
    /// A file holding the bearer token for /api/publish (e.g. from `sse-counter token`).
    #[arg(long, env = "SSE_BENCH_PUBLISH_TOKEN_FILE", value_name = "PATH")]
    publish_token_file: Option<std::path::PathBuf>,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Internal: run as a worker of a parent sse-bench (talks over stdin/stdout).
    #[arg(long, hide = true)]
    worker: bool,
    /// Internal: this worker opens streams first-index, first-index + procs, ...
    #[arg(long, hide = true, default_value_t = 0)]
    first_index: u64,
}

impl Cli {
    /// `connections` is this process's share of the HTTP/2 connections.
    fn load_config(
        &self,
        targets: Vec<Target>,
        streams: u64,
        connections: u64,
        first_index: u64,
    ) -> anyhow::Result<LoadConfig> {
        Ok(LoadConfig {
            kind: self.stream_kind(&targets[0]),
            transport: LoadConfig::transport_for(&targets, self.http2)?,
            connections,
            h2_stream_window: self.h2_stream_window,
            targets,
            streams,
            channels: self.channels,
            ramp_per_sec: self.ramp / f64::from(self.procs),
            first_index,
            index_step: u64::from(self.procs),
            source_ips: self.source_ips,
            connect_timeout: Duration::from_secs_f64(self.connect_timeout),
        })
    }

    /// HTTP/2 connections of the whole run (none over HTTP/1.1).
    fn connections(&self) -> u64 {
        if !self.http2 {
            return 0;
        }
        self.connections
            .unwrap_or_else(|| self.streams.div_ceil(DEFAULT_STREAMS_PER_H2_CONNECTION))
    }

    /// How long the opening may take before the run goes on without the stragglers.
    fn settle_limit(&self) -> Duration {
        let ramp = if self.ramp > 0.0 {
            self.streams as f64 / self.ramp
        } else {
            0.0
        };
        // Two timeouts: one for the connect, one for the headers.
        Duration::from_secs_f64(ramp + 2.0 * self.connect_timeout + 1.0)
    }

    fn planned_secs(&self) -> f64 {
        self.settle_limit().as_secs_f64() + self.warmup + self.window + 1.0
    }

    fn window(&self) -> Window {
        Window::from_now(
            Duration::from_secs_f64(self.warmup),
            Duration::from_secs_f64(self.window),
        )
    }

    fn stream_kind(&self, target: &Target) -> StreamKind {
        self.kind
            .unwrap_or_else(|| StreamKind::for_path(&target.path_and_query))
    }

    /// Events each stream should get per second: from --interval-ms, else the publish
    /// rate (over channels spread by `{i}`, its share), else `interval_ms=` in the URL.
    fn tick_rate(&self, target: &Target) -> Option<f64> {
        if self.interval_ms.is_none() && self.publish_rate > 0.0 {
            let spread = target.path_for(0, 1) != target.path_for(1, 2);
            let share = if spread { self.channels as f64 } else { 1.0 };
            return Some(self.publish_rate / share);
        }
        if self.publish_flood.is_some() {
            return None;
        }
        let ms = self.interval_ms.or_else(|| {
            target
                .path_and_query
                .split(['?', '&'])
                .find_map(|kv| kv.strip_prefix("interval_ms=")?.parse().ok())
        })?;
        (ms > 0).then(|| 1000.0 / ms as f64)
    }
}

/// The URLs as targets; the first gives the stream kind and the tick rate.
fn targets(urls: &[String]) -> anyhow::Result<Vec<Target>> {
    urls.iter().map(|u| Target::parse(u)).collect()
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let targets = targets(&cli.urls)?;
    ensure!(
        cli.ramp >= 0.0 && cli.ramp.is_finite(),
        "--ramp must be 0 or more"
    );
    ensure!(
        cli.window > 0.0 && cli.warmup >= 0.0 && cli.connect_timeout > 0.0,
        "--window and --connect-timeout must be above 0, --warmup not below"
    );
    ensure!(
        cli.planned_secs() <= cli.duration as f64,
        "this run may take up to {:.0} s (ramp, connect timeouts, warmup, window), more than --duration {}",
        cli.planned_secs(),
        cli.duration
    );
    ensure!(
        cli.procs == 1 || u64::from(cli.procs) <= cli.streams,
        "--procs may not exceed --streams"
    );
    let transport = LoadConfig::transport_for(&targets, cli.http2)?;
    // A worker is given its share of the connections, which may be below --procs.
    if transport == Transport::Http2 && !cli.worker {
        ensure!(
            cli.connections() <= cli.streams,
            "--connections may not exceed --streams"
        );
        ensure!(
            cli.connections() >= u64::from(cli.procs),
            "each process needs a connection of its own: --connections may not be below --procs"
        );
    }
    ensure!(
        cli.publish_rate >= 0.0 && cli.publish_rate <= 10_000.0,
        "--publish-rate must be from 0 to 10000"
    );
    ensure!(
        cli.publish_path.starts_with('/'),
        "--publish-path must start with /"
    );
    let limit = bench::raise_nofile_limit().context("cannot raise the open-files limit")?;
    let per_proc = cli.streams.div_ceil(u64::from(cli.procs));
    if per_proc + 64 > limit {
        bail!(
            "{per_proc} streams per process need more than this process's {limit} open files: use --procs {}",
            cli.streams.div_ceil(limit.saturating_sub(64).max(1))
        );
    }
    // One thread keeps the client's share of the machine's cores, which the server under
    // test needs too, small and predictable; --procs gives more when one is not enough.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Whatever happens, the run ends by itself.
    let cap = Duration::from_secs(cli.duration);
    std::thread::spawn(move || {
        std::thread::sleep(cap + Duration::from_secs(5));
        eprintln!("sse-bench: the run overran --duration; stopping");
        std::process::exit(2);
    });
    if cli.worker {
        return rt.block_on(worker(&cli, targets));
    }
    let report = rt.block_on(parent(&cli, targets))?;
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

/// A worker: opens its share, says `ready`, reads the window from stdin, prints its
/// figures as one JSON line.
async fn worker(cli: &Cli, targets: Vec<Target>) -> anyhow::Result<()> {
    let load = Load::open(
        cli.load_config(targets, cli.streams, cli.connections(), cli.first_index)?,
        cli.settle_limit(),
    )
    .await?;
    let mut stdout = tokio::io::stdout();
    stdout.write_all(b"ready\n").await?;
    stdout.flush().await?;
    let mut line = String::new();
    BufReader::new(tokio::io::stdin())
        .read_line(&mut line)
        .await?;
    let window = parse_window_line(&line).context("expected `window START_US END_US` on stdin")?;
    let result = load.measure(window).await;
    let json = serde_json::to_string(&result)? + "\n";
    stdout.write_all(json.as_bytes()).await?;
    stdout.flush().await?;
    Ok(())
}

fn parse_window_line(line: &str) -> Option<Window> {
    let mut parts = line.split_whitespace();
    (parts.next()? == "window").then_some(())?;
    Some(Window {
        start_us: parts.next()?.parse().ok()?,
        end_us: parts.next()?.parse().ok()?,
    })
}

async fn parent(cli: &Cli, targets: Vec<Target>) -> anyhow::Result<Report> {
    let before = cli
        .server_pid
        .iter()
        .map(|&pid| procfs::sample(pid))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let transport = LoadConfig::transport_for(&targets, cli.http2)?;
    let over = match transport {
        Transport::Http2 => format!("over {} HTTP/2 connections", cli.connections()),
        other => format!("over {}", other.label()),
    };
    let urls: Vec<&str> = targets.iter().map(|t| t.url.as_str()).collect();
    eprintln!(
        "sse-bench: opening {} streams to {} {over} at {} ({} process{})",
        cli.streams,
        urls.join(" and "),
        if cli.ramp > 0.0 {
            format!("{}/s", cli.ramp)
        } else {
            "once".into()
        },
        cli.procs,
        if cli.procs == 1 { "" } else { "es" }
    );
    let publisher = publisher(cli, &targets)?;
    let (result, window, samples, published) = if cli.procs == 1 {
        let load = Load::open(
            cli.load_config(targets.clone(), cli.streams, cli.connections(), 0)?,
            cli.settle_limit(),
        )
        .await?;
        eprintln!("sse-bench: {} established", load.established());
        let window = cli.window();
        let (result, samples, published) = tokio::join!(
            load.measure(window),
            sample_processes(cli, window),
            publish_until(publisher.as_ref(), window)
        );
        (result, window, samples?, published)
    } else {
        with_workers(cli, publisher.as_ref()).await?
    };
    let server = (!samples.servers.is_empty()).then(|| {
        let cpu: f64 = samples
            .servers
            .iter()
            .map(|(start, _, end)| end.cpu_us_since(start))
            .sum();
        let rss_before: u64 = before.iter().map(|b| b.rss_kib).sum();
        let rss_steady: u64 = samples.servers.iter().map(|(_, mid, _)| mid.rss_kib).sum();
        let open = result.open_at_window_end;
        ServerFigures {
            pid: cli.server_pid[0],
            processes: samples.servers.len() as u32,
            cpu_us_window: cpu,
            cpu_us_per_event: (result.events_in_window > 0)
                .then(|| cpu / result.events_in_window as f64),
            cpu_cores: cpu / 1e6 / window.secs(),
            rss_before_kib: rss_before,
            rss_steady_kib: rss_steady,
            rss_per_stream_bytes: (open > 0)
                .then(|| (rss_steady as f64 - rss_before as f64) * 1024.0 / open as f64),
        }
    });
    let store = cli.store_pid.zip(samples.store).map(|(pid, (start, end))| {
        let cpu = end.cpu_us_since(&start);
        let increments = published.as_ref().map_or(0, |p| p.ok_in_window);
        StoreFigures {
            pid,
            cpu_us_window: cpu,
            cpu_us_ticks_window: end.cpu_us_ticks.saturating_sub(start.cpu_us_ticks) as f64,
            cpu_us_per_increment: (increments > 0).then(|| cpu / increments as f64),
        }
    });
    let mut report = Report::new(
        &urls.join(" "),
        cli.stream_kind(&targets[0]),
        cli.procs,
        &result,
        window.secs(),
        cli.tick_rate(&targets[0]),
        server,
    );
    report.transport = transport;
    report.publish = published;
    report.store = store;
    Ok(report)
}

/// The publisher the flags ask for, if any; the token is read here, once.
fn publisher(cli: &Cli, targets: &[Target]) -> anyhow::Result<Option<PublishConfig>> {
    let pace = match (cli.publish_flood, cli.publish_rate) {
        (Some(k), _) => Pace::Flood(k),
        (None, rate) if rate > 0.0 => Pace::Rate(rate),
        (None, _) => return Ok(None),
    };
    let body = if cli.publish_path == shared::paths::PUBLISH {
        let path = cli.publish_token_file.as_ref().context(
            "publishing to /api/publish needs --publish-token-file (or SSE_BENCH_PUBLISH_TOKEN_FILE)",
        )?;
        let token = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the token file {}", path.display()))?
            .trim()
            .to_owned();
        ensure!(
            !token.is_empty(),
            "the token file {} is empty",
            path.display()
        );
        Body::Channel {
            token,
            channel: cli.publish_channel.clone(),
            channels: cli.channels,
        }
    } else {
        Body::Empty
    };
    Ok(Some(PublishConfig {
        targets: targets.to_vec(),
        path: cli.publish_path.clone(),
        body,
        pace,
    }))
}

/// Publishes from now until the window ends, when there is a publisher.
async fn publish_until(cfg: Option<&PublishConfig>, window: Window) -> Option<PublishFigures> {
    Some(publish(cfg?, window).await)
}

/// The processes measured, looked at over the window.
#[derive(Debug, Default)]
struct Samples {
    /// Each server's at the window's start, middle and end (CPU from start to end,
    /// memory in the middle, away from the opening and the closing), in the order of
    /// `--server-pid`.
    servers: Vec<(ProcSample, ProcSample, ProcSample)>,
    /// The store's at the window's start and end.
    store: Option<(ProcSample, ProcSample)>,
}

/// Samples the servers and the store over the window; nothing when no PID was given.
async fn sample_processes(cli: &Cli, window: Window) -> anyhow::Result<Samples> {
    if cli.server_pid.is_empty() && cli.store_pid.is_none() {
        return Ok(Samples::default());
    }
    let servers = || -> anyhow::Result<Vec<ProcSample>> {
        cli.server_pid
            .iter()
            .map(|&pid| procfs::sample(pid))
            .collect()
    };
    let store = || cli.store_pid.map(procfs::sample).transpose();
    tokio::time::sleep(Window::until(window.start_us)).await;
    let (start, store_start) = (servers()?, store()?);
    tokio::time::sleep(Window::until(window.start_us / 2 + window.end_us / 2)).await;
    let mid = servers()?;
    tokio::time::sleep(Window::until(window.end_us)).await;
    let (end, store_end) = (servers()?, store()?);
    Ok(Samples {
        servers: start
            .into_iter()
            .zip(mid)
            .zip(end)
            .map(|((s, m), e)| (s, m, e))
            .collect(),
        store: store_start.zip(store_end),
    })
}

/// Runs the load in `--procs` worker processes and merges their figures; the publisher,
/// when there is one, runs here.
async fn with_workers(
    cli: &Cli,
    publisher: Option<&PublishConfig>,
) -> anyhow::Result<(WorkerResult, Window, Samples, Option<PublishFigures>)> {
    let exe = std::env::current_exe().context("cannot find this program to spawn workers")?;
    let procs = u64::from(cli.procs);
    let mut workers = Vec::new();
    for i in 0..procs {
        // Worker i opens streams i, i + procs, ...: its share, rounded as that falls.
        let share = cli.streams / procs + u64::from(i < cli.streams % procs);
        let mut cmd = tokio::process::Command::new(&exe);
        if cli.http2 {
            // Its connections, numbered i, i + procs, ... as its streams are.
            let connections = cli.connections();
            let conn_share = connections / procs + u64::from(i < connections % procs);
            cmd.arg("--http2")
                .args(["--connections", &conn_share.to_string()])
                .args(["--h2-stream-window", &cli.h2_stream_window.to_string()]);
        }
        cmd.args(&cli.urls)
            .args(["--streams", &share.to_string()])
            .args(["--channels", &cli.channels.to_string()])
            .args(["--ramp", &cli.ramp.to_string()])
            .args(["--procs", &cli.procs.to_string()])
            .args(["--first-index", &i.to_string()])
            .args(["--connect-timeout", &cli.connect_timeout.to_string()])
            .args(["--source-ips", &cli.source_ips.to_string()])
            .args(["--warmup", &cli.warmup.to_string()])
            .args(["--window", &cli.window.to_string()])
            .args(["--duration", &cli.duration.to_string()])
            .args([
                "--kind",
                kind_arg(cli.stream_kind(&Target::parse(&cli.urls[0])?)),
            ])
            .arg("--worker")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().context("cannot start a worker")?;
        let stdin = child.stdin.take().context("worker without stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("worker without stdout")?);
        workers.push((child, stdin, stdout.lines()));
    }
    for (_, _, lines) in &mut workers {
        let line = tokio::time::timeout(
            cli.settle_limit() + Duration::from_secs(5),
            lines.next_line(),
        )
        .await
        .context("a worker did not finish opening its streams in time")??;
        ensure!(
            line.as_deref() == Some("ready"),
            "a worker said {line:?} instead of `ready`"
        );
    }
    let window = cli.window();
    for (_, stdin, _) in &mut workers {
        stdin
            .write_all(format!("window {} {}\n", window.start_us, window.end_us).as_bytes())
            .await?;
        stdin.flush().await?;
    }
    let collect = async {
        let mut merged = WorkerResult::default();
        for (child, _, lines) in &mut workers {
            let line = lines
                .next_line()
                .await?
                .context("a worker ended without its figures")?;
            let r: WorkerResult =
                serde_json::from_str(&line).context("a worker's figures are not JSON")?;
            merged.merge(&r);
            let status = child.wait().await?;
            ensure!(status.success(), "a worker exited with {status}");
        }
        anyhow::Ok(merged)
    };
    let (merged, samples, published) = tokio::join!(
        collect,
        sample_processes(cli, window),
        publish_until(publisher, window)
    );
    Ok((merged?, window, samples?, published))
}

/// `--kind`'s value for a kind.
fn kind_arg(kind: StreamKind) -> &'static str {
    match kind {
        StreamKind::Counter => "counter",
        StreamKind::Shared => "shared",
        StreamKind::Channels => "channels",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_streams_expect_their_channels_share_of_the_publishes() {
        let spread = "http://127.0.0.1:1/api/events?channel=bench/{i}";
        let cli = Cli::parse_from([
            "sse-bench",
            spread,
            "--channels",
            "1000",
            "--publish-rate",
            "1000",
        ]);
        let target = Target::parse(spread).unwrap();
        assert_eq!(cli.stream_kind(&target), StreamKind::Channels);
        assert_eq!(cli.tick_rate(&target), Some(1.0));
        let one = "http://127.0.0.1:1/api/events?channel=bench/0";
        let cli = Cli::parse_from(["sse-bench", one, "--publish-rate", "10"]);
        assert_eq!(cli.tick_rate(&Target::parse(one).unwrap()), Some(10.0));
        let cli = Cli::parse_from(["sse-bench", one, "--streams", "0", "--publish-flood", "4"]);
        assert_eq!(cli.tick_rate(&Target::parse(one).unwrap()), None);
        assert!(Cli::try_parse_from([
            "sse-bench",
            one,
            "--publish-flood",
            "4",
            "--publish-rate",
            "1"
        ])
        .is_err());
    }

    #[test]
    fn publishing_to_channels_needs_a_token_file_and_reads_it() {
        let url = "http://127.0.0.1:1/api/events?channel=bench/0";
        let targets = targets(&[url.to_owned()]).unwrap();
        let cli = Cli::parse_from([
            "sse-bench",
            url,
            "--publish-rate",
            "5",
            "--publish-path",
            "/api/publish",
        ]);
        if std::env::var_os("SSE_BENCH_PUBLISH_TOKEN_FILE").is_none() {
            let err = publisher(&cli, &targets).unwrap_err().to_string();
            assert!(err.contains("--publish-token-file"), "{err}");
        }
        let file = std::env::temp_dir().join(format!("sse-bench-token-{}", std::process::id()));
        std::fs::write(&file, "abc.def.ghi\n").unwrap();
        let cli = Cli::parse_from([
            "sse-bench",
            url,
            "--publish-flood",
            "2",
            "--publish-path",
            "/api/publish",
            "--publish-token-file",
            file.to_str().unwrap(),
            "--channels",
            "3",
        ]);
        let p = publisher(&cli, &targets).unwrap().unwrap();
        std::fs::remove_file(&file).unwrap();
        assert_eq!(p.pace, Pace::Flood(2));
        match p.body {
            Body::Channel {
                token, channels, ..
            } => assert_eq!((token.as_str(), channels), ("abc.def.ghi", 3)),
            Body::Empty => panic!("a channel body was expected"),
        }
        let cli = Cli::parse_from(["sse-bench", url, "--publish-rate", "5"]);
        assert!(matches!(
            publisher(&cli, &targets).unwrap().unwrap().body,
            Body::Empty
        ));
        let cli = Cli::parse_from(["sse-bench", url]);
        assert!(publisher(&cli, &targets).unwrap().is_none());
    }

    #[test]
    fn window_lines_round_trip() {
        assert_eq!(
            parse_window_line("window 10 20\n"),
            Some(Window {
                start_us: 10,
                end_us: 20
            })
        );
        assert_eq!(parse_window_line("ready\n"), None);
        assert_eq!(parse_window_line("window 10"), None);
    }

    #[test]
    fn http2_spreads_the_streams_over_one_connection_per_hundred_unless_told() {
        let url = "https://127.0.0.1:1/api/counter";
        let cli = Cli::parse_from(["sse-bench", url, "--streams", "1001", "--http2"]);
        assert_eq!(cli.connections(), 11);
        let cli = Cli::parse_from(["sse-bench", url, "--http2", "--connections", "4"]);
        assert_eq!(cli.connections(), 4);
        let cli = Cli::parse_from(["sse-bench", url, "--streams", "1001"]);
        assert_eq!(cli.connections(), 0);
        assert!(Cli::try_parse_from(["sse-bench", url, "--connections", "4"]).is_err());
    }

    #[test]
    fn the_tick_rate_is_read_from_the_url() {
        let cli = Cli::parse_from(["sse-bench", "http://127.0.0.1:1/x?count=5&interval_ms=250"]);
        let target = Target::parse(&cli.urls[0]).unwrap();
        assert_eq!(cli.tick_rate(&target), Some(4.0));
    }

    #[test]
    fn several_urls_and_server_pids_are_taken_the_store_pid_once() {
        let cli = Cli::parse_from([
            "sse-bench",
            "http://127.0.0.1:1/api/shared",
            "http://127.0.0.1:2/api/shared",
            "--server-pid",
            "10",
            "--server-pid",
            "11",
            "--store-pid",
            "12",
        ]);
        assert_eq!(cli.urls.len(), 2);
        assert_eq!(cli.server_pid, [10, 11]);
        assert_eq!(cli.store_pid, Some(12));
        assert!(Cli::try_parse_from(["sse-bench", "--streams", "1"]).is_err());
    }

    #[test]
    fn a_shared_stream_expects_the_publish_rate_unless_told_an_interval() {
        let url = "http://127.0.0.1:1/api/shared";
        let target = Target::parse(url).unwrap();
        let cli = Cli::parse_from(["sse-bench", url, "--publish-rate", "10"]);
        assert_eq!(cli.stream_kind(&target), StreamKind::Shared);
        assert_eq!(cli.tick_rate(&target), Some(10.0));
        let cli = Cli::parse_from(["sse-bench", url, "--interval-ms", "200"]);
        assert_eq!(cli.tick_rate(&target), Some(5.0));
        let cli = Cli::parse_from(["sse-bench", url, "--kind", "counter"]);
        assert_eq!(cli.stream_kind(&target), StreamKind::Counter);
        for kind in [
            StreamKind::Counter,
            StreamKind::Shared,
            StreamKind::Channels,
        ] {
            assert_eq!(kind_arg(kind).parse(), Ok(kind));
        }
    }
}
