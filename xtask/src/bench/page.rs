//! `docs/benchmarks.md` from what a run measured: the machine, the targets table, a
//! section per scenario (those of `http2`, `cluster`, `channels` and `sentinel` written
//! by their modules), and
//! how it is measured. It is the top of the task's modules: it uses the others, and
//! none uses it.

use super::figures::{
    fmt, med, ratio, spread, Figure, CPU, HEADERS_P99_MS, LATENCY_P99_MS, MEM_KIB, ROWS,
};
use super::peers::{Peer, PeerId, EXPRESS_VERSION, PEERS};
use super::results::{Meta, Results};
use super::scenarios::Scenario;
use super::targets;
use crate::util::{machine, output};
use std::fmt::Write as _;
use std::process::Command;

/// The peers sse-counter is compared with, in table order.
fn others() -> impl Iterator<Item = &'static Peer> {
    PEERS.iter().filter(|p| p.id != PeerId::Ours)
}

pub fn render(plan: &[Scenario], res: &Results, meta: &Meta) -> anyhow::Result<String> {
    let floor = res.floor_us();
    let mut md = String::new();
    writeln!(md, "# Benchmarks\n")?;
    writeln!(
        md,
        "sse-counter against the least an SSE server can do and what a user would otherwise run, \
         on the same machine in the same run: the yardstick \
         ([`bench/src/bin/yardstick.rs`](../bench/src/bin/yardstick.rs): one thread, one epoll, one \
         `write` per event in chunked framing), the seed's Express handler \
         ([`bench/peers/express/`](../bench/peers/express/server.js)), the straightforward warp \
         server ([`bench/src/bin/warp-naive.rs`](../bench/src/bin/warp-naive.rs)), and the floor: the \
         CPU cost of one tick-sized `write` to a loopback TCP socket \
         ([`bench/src/bin/floor.rs`](../bench/src/bin/floor.rs)). The load comes from \
         [`sse-bench`](../bench/src/bin/sse-bench.rs) on the same machine. Written by the command \
         below; every figure is the median of the repeats.\n"
    )?;
    writeln!(md, "```\n{}\n```\n", meta.command)?;
    machine_section(&mut md, meta)?;

    writeln!(md, "## Targets\n")?;
    writeln!(md, "| target | sse-counter measured | status |")?;
    writeln!(md, "| --- | --- | --- |")?;
    let http2_rows = res.http2.iter().flat_map(super::http2::target_rows);
    let cluster_rows = res.cluster.iter().flat_map(super::cluster::target_rows);
    let channels_rows = res.channels.iter().flat_map(super::channels::target_rows);
    let sentinel_rows = res.sentinel.iter().flat_map(super::sentinel::target_rows);
    for row in targets::rows(plan, res)
        .into_iter()
        .chain(http2_rows)
        .chain(cluster_rows)
        .chain(channels_rows)
        .chain(sentinel_rows)
    {
        writeln!(md, "| {} | {} | {} |", row.target, row.measured, row.status)?;
    }
    writeln!(md)?;
    writeln!(
        md,
        "Why a target is not met, where the time and memory go (profiles, with the commands \
         that made them): [performance.md](performance.md).\n"
    )?;
    // The chart is drawn only when a steady scenario ran (`--only http2` has none).
    if plan.iter().any(Scenario::steady) {
        writeln!(
            md,
            "![Server CPU per delivered event and resident memory per open stream](benchmarks.svg)\n"
        )?;
    }

    for (si, sc) in plan.iter().enumerate() {
        scenario_section(&mut md, si, sc, res, floor)?;
    }
    if let Some(outcome) = &res.http2 {
        super::http2::section(&mut md, outcome)?;
    }
    if let Some(outcome) = &res.cluster {
        super::cluster::section(&mut md, outcome)?;
    }
    if let Some(outcome) = &res.channels {
        super::channels::section(&mut md, outcome)?;
    }
    if let Some(outcome) = &res.sentinel {
        super::sentinel::section(&mut md, outcome)?;
    }
    if !res.failures.is_empty() {
        writeln!(md, "## Runs that failed\n")?;
        for f in &res.failures {
            writeln!(md, "- {f}")?;
        }
        writeln!(md)?;
    }
    how_it_is_measured(&mut md, res.floors.first().map(|f| f.bytes_per_write))?;
    Ok(md)
}

fn machine_section(md: &mut String, meta: &Meta) -> anyhow::Result<()> {
    writeln!(md, "## Machine\n")?;
    let version = |prog: &str, arg: &str| {
        output(Command::new(prog).arg(arg))
            .map_or_else(|| "unknown".into(), |s| s.trim().to_owned())
    };
    writeln!(md, "- {}", machine())?;
    writeln!(
        md,
        "- {}; node {} (the seed names node 10.16.3; express {EXPRESS_VERSION} as pinned)",
        version("rustc", "--version"),
        version("node", "--version")
    )?;
    writeln!(
        md,
        "- server built from {} (release profile)",
        meta.server_tree
    )?;
    writeln!(
        md,
        "- load average {} before, {} after; the run took {:.0} s with {} repeat{} per scenario and server",
        meta.load.0,
        meta.load.1,
        meta.took.as_secs_f64(),
        meta.repeats,
        if meta.repeats == 1 { "" } else { "s" }
    )?;
    let busy = |load: &str| {
        load.split_whitespace()
            .next()
            .and_then(|l| l.parse::<f64>().ok())
            .is_some_and(|l| l > 1.0)
    };
    if busy(&meta.load.0) || busy(&meta.load.1) {
        writeln!(
            md,
            "- **the machine was busy with other work during the run** (load average above 1 on \
             {} cores): the figures are noisy, latency and time to headers most of all; see the \
             spread over the repeats under each table.",
            cores()
        )?;
    }
    if meta.quick {
        writeln!(
            md,
            "- **--quick**: smaller scenarios and one repeat, to check the harness; the targets at full \
             size need `cargo xtask bench`."
        )?;
    }
    writeln!(md)?;
    Ok(())
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get())
}

fn scenario_section(
    md: &mut String,
    si: usize,
    sc: &Scenario,
    res: &Results,
    floor: Option<f64>,
) -> anyhow::Result<()> {
    let ours = res.runs(si, PeerId::Ours);
    writeln!(md, "## {}\n", sc.title())?;
    writeln!(
        md,
        "{} client process{}, {} s warm-up, {} s steady window.\n",
        sc.procs,
        if sc.procs == 1 { "" } else { "es" },
        sc.warmup,
        sc.window
    )?;
    let mut head = String::from("|");
    let mut rule = String::from("| ---");
    for p in &PEERS {
        write!(head, " | {}", p.label)?;
        rule.push_str(" | ---:");
    }
    head.push_str(" | floor");
    rule.push_str(" | ---:");
    for p in others() {
        write!(head, " | ours / {}", p.short)?;
        rule.push_str(" | ---:");
    }
    writeln!(md, "{head} |")?;
    writeln!(md, "{rule} |")?;
    for row in ROWS {
        let mut line = format!("| {}", row.label);
        for p in &PEERS {
            write!(
                line,
                " | {}",
                fmt(med(res.runs(si, p.id), row), row.decimals)
            )?;
        }
        let floor_cell = if row.label == CPU.label {
            fmt(floor, 2)
        } else {
            String::new()
        };
        write!(line, " | {floor_cell}")?;
        for p in others() {
            let cell = if row.ratio {
                ratio(med(ours, row), med(res.runs(si, p.id), row))
            } else {
                String::new()
            };
            write!(line, " | {cell}")?;
        }
        writeln!(md, "{line} |")?;
    }
    let yardstick = med(res.runs(si, PeerId::Yardstick), CPU);
    match (med(ours, CPU), yardstick, floor) {
        (Some(c), Some(y), Some(f)) => writeln!(
            md,
            "\nsse-counter's CPU per event is {} the yardstick's and {} the bare-write floor.",
            ratio(Some(c), Some(y)),
            ratio(Some(c), Some(f))
        )?,
        (Some(c), None, Some(f)) => writeln!(
            md,
            "\nsse-counter's CPU per event is {} the bare-write floor.",
            ratio(Some(c), Some(f))
        )?,
        _ => {}
    }
    let mut notes = Vec::new();
    for p in &PEERS {
        if let Some(why) = res.why_not_run(si, p.id) {
            notes.push(format!("{}: not run, {why}.", p.label));
        }
        for (rep, r) in res.runs(si, p.id).iter().enumerate() {
            let Some(r) = r else { continue };
            if let Some(pf) = &r.publish {
                let errors = if pf.errors.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", pf.errors.join("; "))
                };
                notes.push(format!(
                    "{}, run {}: sse-bench published {} increments at {}/s: {} taken, {} refused, {} lost{errors}.",
                    p.label,
                    rep + 1,
                    pf.sent,
                    pf.rate,
                    pf.ok,
                    pf.refused,
                    pf.failed
                ));
            }
            if r.resets > 0 {
                notes.push(format!(
                    "{}, run {}: {} reset events.",
                    p.label,
                    rep + 1,
                    r.resets
                ));
            }
        }
    }
    if !notes.is_empty() {
        writeln!(md)?;
        for n in notes {
            writeln!(md, "- {n}")?;
        }
    }
    if ours.len() > 1 {
        writeln!(md, "\nSpread over the repeats (min–max):\n")?;
        for p in &PEERS {
            let runs = res.runs(si, p.id);
            let spread = |figure: Figure, decimals: usize| spread(runs, figure, decimals);
            writeln!(
                md,
                "- {}: CPU per event {} µs, memory per stream {} KiB, latency p99 {} ms, time to headers p99 {} ms",
                p.label,
                spread(CPU, 1),
                spread(MEM_KIB, 1),
                spread(LATENCY_P99_MS, 1),
                spread(HEADERS_P99_MS, 1),
            )?;
        }
    }
    let errors: Vec<String> = PEERS
        .iter()
        .flat_map(|p| {
            res.runs(si, p.id)
                .iter()
                .flatten()
                .flat_map(move |r| r.errors.iter().map(move |e| format!("{}: {e}", p.label)))
        })
        .collect();
    if !errors.is_empty() {
        writeln!(md, "\nErrors the clients saw (first few per run):\n")?;
        for e in errors.iter().take(12) {
            writeln!(md, "- `{e}`")?;
        }
    }
    writeln!(md)?;
    Ok(())
}

fn how_it_is_measured(md: &mut String, frame_bytes: Option<u64>) -> anyhow::Result<()> {
    writeln!(md, "## How it is measured\n")?;
    writeln!(
        md,
        "- Each run starts a fresh server process, waits for its `listening on` line, and runs \
         `sse-bench` with `--server-pid`. Servers run in the order {}, repeated, so drift in the \
         machine's load falls on all of them alike. The floor runs before each round.\n\
         - sse-bench opens the streams at the ramp rate over source addresses 127.0.0.1–127.0.0.16 \
         (one client process, or two, each with its share), waits until every stream is open or \
         failed, waits the warm-up, then counts ticks for the window. It parses every stream with a \
         conforming SSE parser (eventsource-stream) and checks each stream's `num` for gaps and \
         repeats.\n\
         - **CPU per event**: the server's CPU time over the window (summed from \
         `/proc/PID/task/*/schedstat`, cross-checked with utime+stime of `/proc/PID/stat`) divided by \
         the ticks the clients received in the window. **Memory per stream**: VmRSS in the middle of \
         the window minus VmRSS before the first connect, divided by the streams open. \
         **Latency**: the client's wall clock at parse time minus the tick's `sent_at_us`; the client \
         and the server share the machine's {} cores, so it includes the client's own scheduling.\n\
         - **Yardstick**: the least an SSE server can do, a yardstick and not a product. One thread, \
         one epoll (mio); it reads each request up to the blank line, writes the response head, and \
         then each event as one `write(2)` of one HTTP/1.1 chunk, as hyper sends it. Per-client \
         streams tick on their own schedule, one interval after they opened, with sse-counter's \
         payload; on `/api/shared` it writes one frame, encoded once, to every subscriber each \
         interval. Where the floor is the write alone, the yardstick adds what every server pays \
         per event: its own wake-up, the reader's, and the framing. sse-counter's figures are \
         given as multiples of both.\n\
         - **Floor**: one thread writes a {} tick frame round-robin to 1,000 connected loopback \
         sockets (Nagle off) while a tokio runtime on another thread reads them; the writer's CPU \
         (schedstat) divided by the writes.\n\
         - **Fan-out**: every stream subscribes to `/api/shared`; sse-bench checks each change's \
         `value` for gaps and repeats from the first one a stream sees, and the latency is publish \
         to delivery (the change's `sent_at_us`). sse-counter's counter is driven by sse-bench \
         itself, which `POST`s to `/api/shared/increment` at the scenario's rate from the streams' \
         opening to the window's end (the notes under the table say how many were taken); the \
         yardstick changes its own every interval. A server that does not answer \
         `GET /api/shared` with 200 is reported as not available, not as a failure; Express and \
         naive warp have no shared counter.\n\
         - Express runs the seed's handler as it is, one `setInterval` per client and a \
         `console.log` per closed stream, so its events/s falls below the expected rate as timers \
         drift. Its first connections also pay V8's warm-up.\n\
         - The load generator, the servers and whatever else runs on the machine share its cores: \
         latency and time to headers are the first figures to suffer when something else runs, \
         CPU per event and memory per stream the least.\n\
         - Server logs and the raw JSON of every run are in `target/bench/`.",
        PEERS.iter().map(|p| p.label).collect::<Vec<_>>().join(", "),
        cores(),
        frame_bytes.map_or_else(|| "sse-counter-sized".into(), |b| format!("{b}-byte")),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::tests::report_with;

    #[test]
    fn every_scenario_gets_a_table_with_every_peer_and_every_figure() {
        let plan = crate::bench::scenarios::scenarios(true);
        let mut res = Results::new(plan.len());
        for (si, sc) in plan.iter().enumerate() {
            for p in &PEERS {
                if sc.load == crate::bench::scenarios::Load::Fanout && p.fanout.is_none() {
                    res.not_run(si, p.id, "it has no shared counter".into());
                } else {
                    res.push(si, p.id, Some(report_with(|_| {})));
                }
            }
        }
        let meta = crate::bench::tests::quick_meta("cargo xtask bench --quick");
        let md = render(&plan, &res, &meta).unwrap();
        assert!(md.contains(
            "| | sse-counter | yardstick | Express (seed) | naive warp | floor | ours / yardstick \
             | ours / Express | ours / naive |"
        ));
        for sc in &plan {
            assert!(md.contains(&format!("## {}", sc.title())));
        }
        for row in ROWS {
            let lines = md
                .lines()
                .filter(|l| l.starts_with(&format!("| {} |", row.label)));
            assert_eq!(lines.count(), plan.len(), "{}", row.label);
        }
        assert!(md.contains(
            "| server CPU per event (µs) | 1.00 | 1.00 | 1.00 | 1.00 | n/a | 1.00× | 1.00× | 1.00× |"
        ));
        // A peer a scenario did not run against is named under its table, with why.
        assert!(md.contains("- Express (seed): not run, it has no shared counter."));
        assert!(!md.contains("## Runs that failed"));
    }
}
