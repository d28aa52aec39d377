//! The `channels` scenario (issue 19): what channels cost next to the shared counter
//! they grew from, each case a fresh sse-counter, all cases in turn in every repeat so
//! that every ratio is of one run. Subscribers of one channel against `/api/shared`
//! under the same load; 1,000 channels against one; 32 channels a stream against one
//! (memory); publishes a second over HTTP/1.1 keep-alive against increments; and the
//! same through Redis (one instance on `--redis-url`, from `cluster::Cluster`). sse-bench
//! publishes `{"n": k}` per channel with a token `sse-counter token` minted for the run,
//! and every subscriber checks its ids and each channel's `n` for gaps and repeats.

use super::figures::{
    fmt, med, ratio, signed, status, thousands, Figure, Row, CPU, EVENTS_PER_SEC, FAILED, GAPS,
    LATENCY_P50_MS, LATENCY_P99_MS, MEM_KIB, REPEATS, TAKEN_PER_SEC,
};
use super::load;
use super::peers::{self, ready};
use super::scenarios::{Load, Scenario};
use super::sides::{self, Side};
use crate::cluster::{Cluster, Options};
use ::bench::report::Report;
use anyhow::Context as _;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The name `--only` selects it by.
pub const NAME: &str = "channels";

/// The size the targets are stated at: subscribers, and the channels they spread over.
const TARGET_SUBSCRIBERS: u64 = 10_000;
const TARGET_CHANNELS: u64 = 1_000;
/// Channels a stream lists in the memory case (the server's default limit).
const WIDE: u64 = 32;
/// The targets: one channel's CPU per delivery against `/api/shared`'s, 1,000 channels'
/// against one's, a 32-channel subscriber's extra memory (KiB), publishes against
/// increments.
const ONE_VS_SHARED: f64 = 1.05;
const MANY_VS_ONE: f64 = 1.2;
const WIDE_EXTRA_KIB: f64 = 1.0;
const PUBLISH_VS_INCREMENT: f64 = 0.8;

/// Flags of every server in this scenario besides `PEERS`' own: publishing on, and
/// limits far above what sse-bench sends, so that the figures are the server's
/// work and never its rate limiter's refusals.
const SERVER_ARGS: [&str; 4] = [
    "--channel-publish-rate",
    "1000000",
    "--publish-rate",
    "1000000",
];

/// The load of every case.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The subscriber cases: streams, ramp, warm-up, window, client processes; one
    /// event every `interval_ms` on the one-channel and shared cases.
    pub subscribers: Scenario,
    /// The publishing cases (no subscribers): warm-up and window.
    pub flood: Scenario,
    /// Channels the many-channels case spreads its subscribers and publishes over.
    pub channels: u64,
    /// Publishes a second in the many-channels case, spread over its channels.
    pub many_rate: f64,
    /// Connections the publishing cases send over, each the next request as soon as
    /// the last is answered.
    pub flood_connections: u32,
}

impl Plan {
    pub fn title(&self) -> String {
        format!(
            "Channels: {} subscribers on one channel and over {} channels against \
             `/api/shared`, 32 channels a stream, publishing with no subscribers, and Redis",
            thousands(self.subscribers.streams),
            thousands(self.channels)
        )
    }

    fn at_size(&self) -> bool {
        self.subscribers.streams >= TARGET_SUBSCRIBERS && self.channels >= TARGET_CHANNELS
    }
}

/// 10,000 subscribers over 1,000 channels at full size; 2,000 over 200 with `--quick`,
/// so that a channel has 10 subscribers and a publish is delivered 10 times in both.
pub fn plan(quick: bool) -> Plan {
    let subscribers = Scenario {
        name: NAME,
        load: Load::Counter,
        streams: TARGET_SUBSCRIBERS,
        interval_ms: 100,
        ramp: 2000.0,
        warmup: 3.0,
        window: 15.0,
        // 10,000 client sockets in two processes, as in `fan-out`.
        procs: 2,
    };
    let flood = Scenario {
        streams: 0,
        ramp: 0.0,
        warmup: 2.0,
        window: 10.0,
        procs: 1,
        ..subscribers.clone()
    };
    if quick {
        return Plan {
            subscribers: Scenario {
                streams: 2_000,
                warmup: 2.0,
                window: 5.0,
                procs: 1,
                ..subscribers
            },
            flood: Scenario {
                warmup: 1.0,
                window: 3.0,
                ..flood
            },
            channels: 200,
            many_rate: 200.0,
            flood_connections: 4,
        };
    }
    Plan {
        subscribers,
        flood,
        channels: TARGET_CHANNELS,
        many_rate: 1000.0,
        flood_connections: 4,
    }
}

/// One case of the scenario: a row of its table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    /// `/api/shared`, its counter driven at the plan's rate: the yardstick of `One`.
    Shared,
    /// Every subscriber on one channel, published at the same rate.
    One,
    /// Subscribers spread over the plan's channels, publishes spread over them.
    Many,
    /// Every subscriber listing one channel, nothing published: memory.
    Narrow,
    /// Every subscriber listing 32 channels, nothing published: memory.
    Wide,
    /// `POST /api/shared/increment` as fast as it is answered, no subscribers.
    IncrementRate,
    /// `POST /api/publish` as fast as it is answered, no subscribers.
    PublishRate,
    /// `PublishRate` on an instance whose store is Redis.
    RedisPublishRate,
    /// `One` on an instance whose store is Redis.
    RedisOne,
    /// The yardstick's broadcast to every subscriber at `One`'s rate: no publish to
    /// answer, one `write` per delivery.
    YardstickOne,
    /// The yardstick's broadcast dealt over as many groups as `Many` has channels, at
    /// `Many`'s rate, each broadcast to one group: what `Many`'s fan-out costs the least
    /// server, with no publish to answer.
    YardstickMany,
}

impl Side for Case {
    const ALL: &'static [Case] = &[
        Case::Shared,
        Case::One,
        Case::Many,
        Case::Narrow,
        Case::Wide,
        Case::IncrementRate,
        Case::PublishRate,
        Case::RedisPublishRate,
        Case::RedisOne,
        Case::YardstickOne,
        Case::YardstickMany,
    ];

    fn slug(self) -> &'static str {
        match self {
            Case::Shared => "shared",
            Case::One => "one",
            Case::Many => "many",
            Case::Narrow => "narrow",
            Case::Wide => "wide",
            Case::IncrementRate => "increment-rate",
            Case::PublishRate => "publish-rate",
            Case::RedisPublishRate => "redis-publish-rate",
            Case::RedisOne => "redis-one",
            Case::YardstickOne => "yardstick-one",
            Case::YardstickMany => "yardstick-many",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Case::Shared => "`/api/shared`",
            Case::One => "one channel",
            Case::Many => "many channels",
            Case::Narrow => "1 channel a stream",
            Case::Wide => "32 channels a stream",
            Case::IncrementRate => "increments, no subscribers",
            Case::PublishRate => "publishes, no subscribers",
            Case::RedisPublishRate => "publishes on Redis",
            Case::RedisOne => "one channel on Redis",
            Case::YardstickOne => "yardstick, one group",
            Case::YardstickMany => "yardstick, many groups",
        }
    }
}

impl Case {
    /// Whether streams are open in the case (the publishing cases have none).
    fn subscribers(self) -> bool {
        !matches!(
            self,
            Case::IncrementRate | Case::PublishRate | Case::RedisPublishRate
        )
    }

    fn redis(self) -> bool {
        matches!(self, Case::RedisPublishRate | Case::RedisOne)
    }

    fn yardstick(self) -> bool {
        matches!(self, Case::YardstickOne | Case::YardstickMany)
    }

    /// The yardstick's `--broadcast-interval-ms` and `--groups` for the case.
    fn yardstick_args(self, plan: &Plan) -> [String; 4] {
        let (interval_ms, groups) = match self {
            Case::YardstickMany => (
                (1000.0 / plan.many_rate).round().max(1.0) as u64,
                plan.channels,
            ),
            _ => (plan.subscribers.interval_ms, 1),
        };
        [
            "--broadcast-interval-ms".to_owned(),
            interval_ms.to_string(),
            "--groups".to_owned(),
            groups.to_string(),
        ]
    }

    /// What the case asks of the server, for its table.
    fn load(self, plan: &Plan) -> String {
        let n = thousands(plan.subscribers.streams);
        let rate = plan.subscribers.rate();
        let flood = format!(
            "{} connections, as fast as answered",
            plan.flood_connections
        );
        match self {
            Case::Shared => format!("{n} subscribers, {rate} increments/s"),
            Case::One | Case::RedisOne => format!("{n} subscribers, {rate} events/s"),
            Case::Many => format!(
                "{n} subscribers over {} channels, {} events/s over them",
                thousands(plan.channels),
                plan.many_rate
            ),
            Case::Narrow => format!("{n} streams of 1 channel, idle"),
            Case::Wide => format!("{n} streams of {WIDE} channels, idle"),
            Case::IncrementRate | Case::PublishRate | Case::RedisPublishRate => flood,
            Case::YardstickOne => format!("{n} subscribers, {rate} broadcasts/s"),
            Case::YardstickMany => format!(
                "{n} subscribers over {} groups, {} broadcasts/s over them",
                thousands(plan.channels),
                plan.many_rate
            ),
        }
    }
}

/// What the scenario measured, by case.
pub type Outcome = sides::Outcome<Plan, Case>;

/// The run's HS256 secret and a token that may publish on every channel, as files only
/// this user may read: the token reaches sse-bench by its path, never on a command line.
struct Credentials {
    secret: PathBuf,
    token: PathBuf,
}

impl Credentials {
    fn make(root: &Path, dir: &Path) -> anyhow::Result<Credentials> {
        use std::io::Read as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        std::fs::create_dir_all(dir)?;
        let mut random = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut random))
            .context("cannot read /dev/urandom for the run's JWT secret")?;
        let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let private = |path: &Path, text: &[u8]| -> anyhow::Result<()> {
            let _ = std::fs::remove_file(path);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            std::io::Write::write_all(&mut f, text)?;
            Ok(())
        };
        let secret = dir.join("jwt-secret");
        private(&secret, hex.as_bytes())?;
        let out = Command::new(root.join("target/release/sse-counter"))
            .args([
                "token",
                "--publish",
                "*",
                "--sub",
                "sse-bench",
                "--ttl-secs",
                "86400",
            ])
            .arg("--jwt-secret-file")
            .arg(&secret)
            .output()
            .context("cannot run `sse-counter token`")?;
        anyhow::ensure!(
            out.status.success(),
            "`sse-counter token` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let token = dir.join("publish-token");
        private(&token, &out.stdout)?;
        Ok(Credentials { secret, token })
    }
}

/// Runs the plan `repeats` times, the cases in turn, each on a fresh server (and a
/// fresh Redis for the Redis cases).
pub fn run(
    root: &Path,
    plan: Plan,
    repeats: usize,
    logs: &Path,
    nofile: u64,
    failures: &mut Vec<String>,
) -> Outcome {
    let creds = match Credentials::make(root, &logs.join(NAME)) {
        Ok(c) => c,
        Err(e) => {
            failures.push(format!("{NAME}: {e:#}"));
            let none = Case::ALL.iter().map(|_| vec![None; repeats]).collect();
            return Outcome::new(plan, none);
        }
    };
    sides::repeat(NAME, plan, repeats, failures, |plan, case: Case, rep| {
        run_one(root, plan, case, logs, rep, nofile, &creds)
    })
}

fn run_one(
    root: &Path,
    plan: &Plan,
    case: Case,
    logs: &Path,
    rep: usize,
    nofile: u64,
    creds: &Credentials,
) -> anyhow::Result<Report> {
    let secret = creds
        .secret
        .to_str()
        .context("a secret path that is not UTF-8")?;
    let mut server_args: Vec<String> = SERVER_ARGS.map(str::to_owned).to_vec();
    server_args.extend(["--jwt-secret-file".to_owned(), secret.to_owned()]);
    // The load generator subscribes without a token: its channels are public.
    server_args.extend(["--public-channel".to_owned(), "bench/*".to_owned()]);
    let sc = if case.subscribers() {
        &plan.subscribers
    } else {
        &plan.flood
    };
    let log = logs.join(format!("{NAME}-{}-{rep}.log", case.slug()));
    // The server is kept until sse-bench is done: dropping it stops it.
    let (base, pid, _server): (String, u32, Box<dyn std::any::Any>) = if case.yardstick() {
        let args = case.yardstick_args(plan);
        let extra: Vec<&str> = args.iter().map(String::as_str).collect();
        let server = peers::yardstick().start_with(root, sc, &log, &extra)?;
        (server.base.clone(), server.child.id(), Box::new(server))
    } else if case.redis() {
        let run_dir = logs.join(format!("{NAME}-{}-{rep}", case.slug()));
        let mut instance_args: Vec<String> = ["--max-streams", "20000"].map(str::to_owned).to_vec();
        instance_args.extend(server_args);
        let cluster = Cluster::start(&Options::bench(root, 1, run_dir, instance_args))?;
        let base = format!("http://{}", cluster.instances[0]);
        (base, cluster.instance_pids[0], Box::new(cluster))
    } else {
        let extra: Vec<&str> = server_args.iter().map(String::as_str).collect();
        let server = peers::ours().start_with(root, sc, &log, &extra)?;
        (server.base.clone(), server.child.id(), Box::new(server))
    };
    ready(&base)?;
    let events = shared::paths::EVENTS;
    let url = match case {
        Case::Shared | Case::YardstickOne | Case::YardstickMany => {
            format!("{base}{}", shared::paths::SHARED)
        }
        Case::Many => format!("{base}{events}?channel=bench/{{i}}"),
        Case::Wide => {
            let list: Vec<String> = (0..WIDE).map(|i| format!("channel=bench/{i}")).collect();
            format!("{base}{events}?{}", list.join("&"))
        }
        _ => format!("{base}{events}?channel=bench/0"),
    };
    let mut cmd = load::sse_bench(root, sc, &[url], nofile);
    cmd.args(["--server-pid", &pid.to_string()]);
    let token = creds
        .token
        .to_str()
        .context("a token path that is not UTF-8")?;
    let publish = [
        "--publish-path",
        shared::paths::PUBLISH,
        "--publish-token-file",
        token,
    ];
    let rate = plan.subscribers.rate().to_string();
    let flood = plan.flood_connections.to_string();
    match case {
        Case::Shared => {
            cmd.args(["--kind", "shared", "--publish-rate", &rate]);
        }
        Case::One | Case::RedisOne => {
            cmd.args(["--publish-rate", &rate]).args(publish);
        }
        Case::Many => {
            cmd.args(["--channels", &plan.channels.to_string()])
                .args(["--publish-rate", &plan.many_rate.to_string()])
                .args(publish);
        }
        Case::YardstickOne | Case::YardstickMany => {
            // Self-timed: the yardstick broadcasts on its own clock, each group's
            // subscribers hearing every interval × groups; ids are the group's values.
            let [_, interval, _, groups] = case.yardstick_args(plan);
            let period = interval.parse::<u64>()? * groups.parse::<u64>()?;
            cmd.args(["--kind", "shared", "--interval-ms", &period.to_string()]);
        }
        Case::Narrow | Case::Wide => {}
        Case::IncrementRate => {
            cmd.args(["--publish-flood", &flood]);
        }
        Case::PublishRate | Case::RedisPublishRate => {
            cmd.args(["--publish-flood", &flood]).args(publish);
        }
    }
    let report = load::run_sse_bench(root, &mut cmd, &log)?;
    eprintln!(
        "  {}: {} established, {} failed, {:.0} events/s, {} gaps, {} repeats, {} µs CPU/event, \
         {} KiB/stream, latency p50 {} ms p99 {} ms, {} requests/s taken",
        case.label(),
        report.established,
        report.failed_total,
        report.events_per_sec,
        report.gaps,
        report.repeats,
        fmt((CPU.get)(&report), 2),
        fmt((MEM_KIB.get)(&report), 2),
        fmt((LATENCY_P50_MS.get)(&report), 3),
        fmt((LATENCY_P99_MS.get)(&report), 3),
        fmt((TAKEN_PER_SEC.get)(&report), 0),
    );
    Ok(report)
}

/// The server's CPU per request taken in the window (a publish, an increment), in µs,
/// in a run without subscribers (with them, it would be their deliveries' too).
const CPU_PER_REQUEST: Figure = Figure {
    label: "server CPU per request taken",
    unit: "µs",
    get: |r| {
        let taken = r.publish.as_ref()?.ok_in_window;
        (taken > 0 && r.established == 0)
            .then(|| r.server.as_ref().map(|s| s.cpu_us_window / taken as f64))?
    },
    decimals: 1,
    ratio: false,
};

/// How much of the many-channels case's CPU per delivered event its publishes would
/// take at the cost one publish has without subscribers: where one channel's case
/// takes one publish per subscriber count of deliveries, it takes one per ten.
fn publishing_share(outcome: &Outcome) -> Option<f64> {
    let per_publish = outcome.med(Case::PublishRate, CPU_PER_REQUEST)?;
    let runs = outcome.runs(Case::Many);
    let publishes = med(runs, TAKEN_PER_SEC)?;
    let deliveries = med(runs, EVENTS_PER_SEC)?;
    (deliveries > 0.0).then(|| per_publish * publishes / deliveries)
}

/// `times × the other` as a target: the figures, their ratio and the verdict.
fn times(
    outcome: &Outcome,
    (case, other): (Case, Case),
    figure: Figure,
    limit: f64,
    at_most: bool,
) -> (String, String) {
    let (v, o) = (outcome.med(case, figure), outcome.med(other, figure));
    let d = figure.decimals;
    let unit = figure.unit;
    let measured = format!(
        "{} {unit} against {} {unit} for {}: {}",
        fmt(v, d),
        fmt(o, d),
        other.label(),
        ratio(v, o)
    );
    let met = v.zip(o).map(|(v, o)| {
        if at_most {
            v <= limit * o
        } else {
            v >= limit * o
        }
    });
    let gap = format!(
        "{}, {} {limit}×",
        ratio(v, o),
        if at_most { "above" } else { "below" }
    );
    (measured, status(met, gap, outcome.plan.at_size()))
}

/// The scenario's rows in the report's targets table.
pub fn target_rows(outcome: &Outcome) -> Vec<Row> {
    let n = thousands(TARGET_SUBSCRIBERS);
    let mut rows = Vec::new();
    let mut push = |target: String, (measured, status): (String, String)| {
        rows.push(Row {
            target,
            measured,
            status,
        })
    };
    let cpu = Figure {
        label: "server CPU per delivered event",
        ..CPU
    };
    push(
        format!(
            "one channel, {n} subscribers at 10 events/s: server CPU per delivered event ≤ \
             {ONE_VS_SHARED}× `/api/shared`'s under the same load"
        ),
        times(outcome, (Case::One, Case::Shared), cpu, ONE_VS_SHARED, true),
    );
    let (measured, verdict) = times(outcome, (Case::Many, Case::One), cpu, MANY_VS_ONE, true);
    push(
        format!(
            "{} channels, {n} subscribers on one each, 1,000 events/s spread over them: server \
             CPU per delivered event ≤ {MANY_VS_ONE}× one channel's",
            thousands(TARGET_CHANNELS)
        ),
        (
            format!(
                "{measured} ({} channels; publishing itself, at the cost of a publish without \
                 subscribers, about {} µs of it; the yardstick, with no publish to answer, \
                 dealing the same fan-out: {} µs against {} µs, {})",
                thousands(outcome.plan.channels),
                fmt(publishing_share(outcome), 2),
                fmt(outcome.med(Case::YardstickMany, cpu), 2),
                fmt(outcome.med(Case::YardstickOne, cpu), 2),
                ratio(
                    outcome.med(Case::YardstickMany, cpu),
                    outcome.med(Case::YardstickOne, cpu)
                )
            ),
            verdict,
        ),
    );
    let (wide, narrow) = (
        outcome.med(Case::Wide, MEM_KIB),
        outcome.med(Case::Narrow, MEM_KIB),
    );
    let extra = wide.zip(narrow).map(|(w, n)| w - n);
    push(
        format!(
            "memory per subscriber of {WIDE} channels ≤ {WIDE_EXTRA_KIB} KiB more than of one \
             channel"
        ),
        (
            format!(
                "{} KiB more ({} KiB a stream of {WIDE}, {} KiB of 1) at {} streams",
                signed(extra, 2),
                fmt(wide, 2),
                fmt(narrow, 2),
                thousands(outcome.plan.subscribers.streams)
            ),
            status(
                extra.map(|e| e <= WIDE_EXTRA_KIB),
                format!("{} KiB more", signed(extra, 2)),
                outcome.plan.at_size(),
            ),
        ),
    );
    push(
        format!(
            "publishes per second over HTTP/1.1 keep-alive, no subscribers: ≥ \
             {PUBLISH_VS_INCREMENT}× the rate of `POST /api/shared/increment`"
        ),
        times(
            outcome,
            (Case::PublishRate, Case::IncrementRate),
            TAKEN_PER_SEC,
            PUBLISH_VS_INCREMENT,
            false,
        ),
    );
    let added = |figure: Figure| {
        Some(outcome.med(Case::RedisOne, figure)? - outcome.med(Case::One, figure)?)
    };
    let (on_redis, embedded) = (
        outcome.med(Case::RedisPublishRate, TAKEN_PER_SEC),
        outcome.med(Case::PublishRate, TAKEN_PER_SEC),
    );
    push(
        "through Redis: publishes per second, and the publish-to-delivery latency it adds \
         (one channel, the subscribers above)"
            .to_owned(),
        (
            format!(
                "{} publishes/s ({} the embedded store's {}); latency added p50 {} ms, p99 {} ms",
                fmt(on_redis, 0),
                ratio(on_redis, embedded),
                fmt(embedded, 0),
                signed(added(LATENCY_P50_MS), 2),
                signed(added(LATENCY_P99_MS), 2)
            ),
            "reported (no target)".to_owned(),
        ),
    );
    let reports: Vec<&Report> = Case::ALL
        .iter()
        .flat_map(|c| outcome.runs(*c).iter().flatten())
        .collect();
    let gaps: u64 = reports.iter().map(|r| r.gaps).sum();
    let repeats: u64 = reports.iter().map(|r| r.repeats).sum();
    let failed: u64 = reports.iter().map(|r| r.failed_total).sum();
    let all_ran = outcome.all_runs().iter().flatten().all(Option::is_some);
    push(
        "0 gaps and 0 repeats in every case".to_owned(),
        (
            format!(
                "{gaps} gaps, {repeats} repeats, {failed} streams failed, over {} runs",
                reports.len()
            ),
            status(
                all_ran.then_some(gaps + repeats == 0),
                format!("{gaps} gaps, {repeats} repeats"),
                outcome.plan.at_size(),
            ),
        ),
    );
    rows
}

/// The scenario's section of the report: a row per case.
pub fn section(md: &mut String, outcome: &Outcome) -> anyhow::Result<()> {
    let plan = &outcome.plan;
    let sc = &plan.subscribers;
    writeln!(md, "## {}\n", plan.title())?;
    writeln!(
        md,
        "Every case is a fresh sse-counter (the Redis cases: one instance on a fresh Redis, \
         `appendfsync always`, reached straight, not through nginx), run in turn in every \
         repeat, so each ratio is of one run. sse-bench publishes `{{\"channel\": \"bench/<i>\", \
         \"data\": {{\"n\": k}}}}` to `/api/publish` with a bearer token minted by `sse-counter \
         token` for the run (read from a file), request i on channel i mod the channels, k \
         counting each channel's events; every subscriber checks that its ids' seqs rise and \
         that each channel's `n` goes up by one. `/api/shared` is driven by increments at the \
         same rate. The many-channels case delivers each publish to {} subscribers where the \
         one-channel case delivers it to all {}: what a publish and its wake-up cost is shared \
         by that few deliveries there, not by thousands. CPU per delivered event is the \
         server's CPU over the window divided by the events the subscribers got in it; memory per stream is (RSS in the window − RSS \
         before the first connect) / streams open; publishing rates are requests answered \
         2xx in the window per second, over {} keep-alive connections each sending the next \
         as soon as the last is answered, with no subscribers. Subscriber cases: {} client \
         process{}, opened at {}/s, {} s warm-up, {} s window; publishing cases: {} s \
         warm-up, {} s window.\n",
        thousands(sc.streams / plan.channels.max(1)),
        thousands(sc.streams),
        plan.flood_connections,
        sc.procs,
        if sc.procs == 1 { "" } else { "es" },
        sc.ramp,
        sc.warmup,
        sc.window,
        plan.flood.warmup,
        plan.flood.window,
    )?;
    let columns: [(&str, Figure); 9] = [
        ("server CPU per delivered event (µs)", CPU),
        ("server CPU per request taken (µs)", CPU_PER_REQUEST),
        ("memory per stream (KiB)", MEM_KIB),
        ("requests taken per second", TAKEN_PER_SEC),
        ("latency p50 (ms)", LATENCY_P50_MS),
        ("latency p99 (ms)", LATENCY_P99_MS),
        ("events/s (expected)", EVENTS_PER_SEC),
        ("gaps / repeats", GAPS),
        ("failed", FAILED),
    ];
    write!(md, "| case | load")?;
    for (head, _) in &columns {
        write!(md, " | {head}")?;
    }
    writeln!(md, " |")?;
    writeln!(md, "| --- | ---{} |", " | ---:".repeat(columns.len()))?;
    for &case in Case::ALL {
        let runs = outcome.runs(case);
        write!(md, "| {} | {}", case.label(), case.load(plan))?;
        for (head, figure) in &columns {
            let mut cell = fmt(med(runs, *figure), figure.decimals);
            if head.starts_with("events/s") {
                let expected = Figure {
                    get: |r| r.expected_events_per_sec,
                    ..*figure
                };
                if let Some(e) = med(runs, expected) {
                    write!(cell, " ({e:.0})")?;
                }
            }
            if head.starts_with("gaps") {
                write!(cell, " / {}", fmt(med(runs, REPEATS), 0))?;
            }
            write!(md, " | {cell}")?;
        }
        writeln!(md, " |")?;
    }
    writeln!(md)?;
    for row in target_rows(outcome) {
        writeln!(md, "- {}: {} — {}.", row.target, row.measured, row.status)?;
    }
    let notes = outcome.notes("requests");
    if !notes.is_empty() {
        writeln!(md)?;
        for n in notes {
            writeln!(md, "- {n}")?;
        }
    }
    outcome.spread_lines(
        md,
        &[
            ("CPU per event", CPU),
            ("memory per stream", MEM_KIB),
            ("requests/s", TAKEN_PER_SEC),
        ],
    )?;
    writeln!(md)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::sides::column;
    use crate::bench::tests::report_with;
    use ::bench::report::PublishFigures;

    /// One run per case, from `figures(case)`: (CPU µs per event, KiB per stream,
    /// requests taken in a 1 s window, latency p50 ms); 50 µs of CPU per request taken.
    fn outcome(quick: bool, figures: impl Fn(Case) -> (f64, f64, u64, f64)) -> Outcome {
        let runs = Case::ALL
            .iter()
            .map(|&case| {
                let (cpu, kib, taken, p50) = figures(case);
                vec![Some(report_with(|r| {
                    let s = r.server.as_mut().unwrap();
                    s.cpu_us_per_event = Some(cpu);
                    s.cpu_us_window = 50.0 * taken as f64;
                    if case.subscribers() {
                        r.established = 2_000;
                    } else {
                        r.established = 0;
                    }
                    s.rss_per_stream_bytes = Some(kib * 1024.0);
                    r.window_secs = 1.0;
                    r.latency_us.p50 = Some((p50 * 1000.0) as u64);
                    r.latency_us.p99 = Some((p50 * 2000.0) as u64);
                    r.publish = Some(PublishFigures {
                        sent: taken,
                        ok: taken,
                        ok_in_window: taken,
                        ..PublishFigures::default()
                    });
                }))]
            })
            .collect();
        Outcome::new(plan(quick), runs)
    }

    fn even(case: Case) -> (f64, f64, u64, f64) {
        match case {
            Case::Shared => (4.0, 10.0, 10, 1.0),
            Case::One => (4.1, 10.0, 10, 1.0),
            Case::Many => (4.9, 10.0, 1000, 1.0),
            Case::Narrow => (0.0, 10.0, 0, 0.0),
            Case::Wide => (0.0, 10.9, 0, 0.0),
            Case::IncrementRate => (0.0, 0.0, 10_000, 0.0),
            Case::PublishRate => (0.0, 0.0, 8_000, 0.0),
            Case::RedisPublishRate => (0.0, 0.0, 2_000, 0.0),
            Case::RedisOne => (4.5, 10.0, 10, 3.5),
            Case::YardstickOne => (3.0, 0.1, 0, 1.0),
            Case::YardstickMany => (7.5, 0.1, 0, 1.0),
        }
    }

    #[test]
    fn the_full_plan_is_the_targets_size_and_quick_is_small() {
        let full = plan(false);
        assert!(full.at_size());
        assert_eq!((full.subscribers.streams, full.channels), (10_000, 1_000));
        assert_eq!((full.subscribers.rate(), full.many_rate), (10.0, 1000.0));
        // Each client process within a 20,000 open-files limit.
        assert!(full.subscribers.streams / u64::from(full.subscribers.procs) < 19_900);
        assert_eq!(full.flood.streams, 0);
        let quick = plan(true);
        assert!(!quick.at_size());
        assert!(quick.subscribers.streams <= 2_000);
    }

    #[test]
    fn targets_at_their_limits_are_met_and_past_them_not() {
        let rows = target_rows(&outcome(false, even));
        let statuses: Vec<&str> = rows.iter().map(|r| r.status.as_str()).collect();
        assert_eq!(
            statuses,
            [
                "**met**",
                "**met**",
                "**met**",
                "**met**",
                "reported (no target)",
                "**met**"
            ],
            "{rows:#?}"
        );
        assert_eq!(
            rows[0].measured,
            "4.10 µs against 4.00 µs for `/api/shared`: 1.02×"
        );
        assert!(
            rows[2].measured.starts_with("+0.90 KiB more"),
            "{}",
            rows[2].measured
        );
        // 50 µs a publish without subscribers, 1,000 publishes a second for 19,900
        // deliveries.
        assert!(
            rows[1].measured.ends_with(
                "(1,000 channels; publishing itself, at the cost of a publish without \
                 subscribers, about 2.51 µs of it; the yardstick, with no publish to answer, \
                 dealing the same fan-out: 7.50 µs against 3.00 µs, 2.50×)"
            ),
            "{}",
            rows[1].measured
        );
        assert_eq!(
            rows[4].measured,
            "2000 publishes/s (0.25× the embedded store's 8000); latency added p50 +2.50 ms, \
             p99 +5.00 ms"
        );
        let worse = |case: Case| {
            let (cpu, kib, taken, p50) = even(case);
            match case {
                Case::One => (4.3, kib, taken, p50),
                Case::Wide => (cpu, 11.1, taken, p50),
                Case::PublishRate => (cpu, kib, 7_900, p50),
                _ => (cpu, kib, taken, p50),
            }
        };
        let rows = target_rows(&outcome(false, worse));
        assert_eq!(rows[0].status, "**not met**: 1.07×, above 1.05×");
        // 4.9 against 4.3 is within 1.2×.
        assert_eq!(rows[1].status, "**met**");
        assert!(
            rows[2].status.starts_with("**not met**: +1.10 KiB"),
            "{}",
            rows[2].status
        );
        assert_eq!(rows[3].status, "**not met**: 0.79×, below 0.8×");
    }

    #[test]
    fn a_gap_or_a_failed_run_keeps_the_clean_target_from_being_met() {
        let mut o = outcome(false, even);
        let clean = target_rows(&o).pop().unwrap();
        assert_eq!(clean.status, "**met**");
        let mut runs = o.all_runs().to_vec();
        runs[column(Case::Many)][0].as_mut().unwrap().gaps = 3;
        o = Outcome::new(plan(false), runs.clone());
        let row = target_rows(&o).pop().unwrap();
        assert_eq!(row.status, "**not met**: 3 gaps, 0 repeats");
        runs[column(Case::Many)][0] = None;
        let row = target_rows(&Outcome::new(plan(false), runs)).pop().unwrap();
        assert_eq!(row.status, "not measured (a run failed)");
    }

    #[test]
    fn the_section_has_a_row_per_case_and_the_page_its_targets() {
        let o = outcome(true, even);
        let mut md = String::new();
        section(&mut md, &o).unwrap();
        for case in Case::ALL {
            assert!(md.contains(&format!("\n| {} | ", case.label())), "{md}");
        }
        assert!(
            md.contains(
                "| one channel | 2,000 subscribers, 10 events/s | 4.10 | n/a | 10.00 | 10 |"
            ),
            "{md}"
        );
        let mut res = crate::bench::results::Results::new(0);
        res.channels = Some(o);
        let meta = crate::bench::tests::quick_meta("cargo xtask bench --quick --only 'channels'");
        let page = crate::bench::page::render(&[], &res, &meta).unwrap();
        let targets = page
            .lines()
            .filter(|l| l.starts_with("| one channel, 10,000 subscribers"))
            .count();
        assert_eq!(targets, 1, "{page}");
        assert!(page.contains(&format!("## {}", plan(true).title())));
    }
}
