//! What a run measured: the raw figures of one worker (mergeable across processes) and
//! the report made from them, as JSON or as a table for a person; and what the floor
//! measured.
//!
//! These types are the interface between the programs and `cargo xtask bench`, which
//! reads them back: every type a reader sees refuses unknown fields, and every optional
//! figure must be present (as `null` when it has no value), so a renamed field fails to
//! deserialise instead of reading as "not measured".

use crate::stats::{Histogram, Summary};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// What the streams carry, and so how their events are checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamKind {
    /// Each stream its own counter (`GET /api/counter`): ticks
    /// `{"num":n,"sent_at_us":t}` with `num` from 1, one per interval.
    #[default]
    Counter,
    /// Every stream subscribed to one shared counter (`GET /api/shared`): changes
    /// `{"value":v,"sent_at_us":t}`, checked from the first value a stream sees;
    /// `heartbeat` events are skipped and a `reset` restarts the check at its value.
    Shared,
    /// Streams of `GET /api/events?channel=..`: events `id: <epoch>-<seq>` with data
    /// `{"channel":c,"data":{"n":k},...}` (sse-bench's publisher numbers each channel's
    /// events from 1; the channel `counter` is checked by its `value`). Seqs must rise
    /// and each channel's `n` go up by one ([`crate::stats::ChannelCheck`]);
    /// `heartbeat` is skipped and a `reset` restarts the channels it names.
    Channels,
}

impl StreamKind {
    /// The kind a path serves: the shared counter's, or else a per-client counter.
    pub fn for_path(path_and_query: &str) -> StreamKind {
        let path = path_and_query.split('?').next().unwrap_or_default();
        match path {
            shared::paths::SHARED => StreamKind::Shared,
            shared::paths::EVENTS => StreamKind::Channels,
            _ => StreamKind::Counter,
        }
    }
}

impl std::str::FromStr for StreamKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "counter" => Ok(StreamKind::Counter),
            "shared" => Ok(StreamKind::Shared),
            "channels" => Ok(StreamKind::Channels),
            other => Err(format!(
                "{other:?} is not `counter`, `shared` or `channels`"
            )),
        }
    }
}

/// How the streams reach the server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// `http://`: one HTTP/1.1 connection per stream, as a browser's EventSource.
    #[default]
    Http1,
    /// `https://`: one HTTP/1.1 connection per stream over TLS (ALPN `http/1.1`).
    Https1,
    /// `https://` with `--http2`: the streams multiplexed over a few TLS connections
    /// (ALPN `h2`).
    Http2,
}

impl Transport {
    /// How a report names it.
    pub fn label(self) -> &'static str {
        match self {
            Transport::Http1 => "HTTP/1.1",
            Transport::Https1 => "HTTPS HTTP/1.1",
            Transport::Http2 => "HTTP/2 (TLS)",
        }
    }
}

/// Streams that did not open, or did not stay open, by why.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Failures {
    /// The TCP connection or the HTTP handshake failed (refused, no ports, no files).
    pub connect: u64,
    /// The server answered with a status other than 200.
    pub status: u64,
    /// No connection or no headers within the connect timeout.
    pub timeout: u64,
    /// The connection broke after it was made (reset, or the request failed on it).
    pub reset: u64,
    /// The server closed the stream before the run ended without an `end` event.
    pub closed: u64,
    /// The body was not a well-formed SSE stream of ticks.
    pub protocol: u64,
}

impl Failures {
    pub fn total(&self) -> u64 {
        self.connect + self.status + self.timeout + self.reset + self.closed + self.protocol
    }

    fn add(&mut self, o: &Failures) {
        self.connect += o.connect;
        self.status += o.status;
        self.timeout += o.timeout;
        self.reset += o.reset;
        self.closed += o.closed;
        self.protocol += o.protocol;
    }
}

/// The raw figures of one load process; workers send these to the parent as JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerResult {
    /// Streams this worker was asked to open.
    pub streams: u64,
    /// Streams that got a 200 with headers.
    pub established: u64,
    /// Connections made (TCP, then TLS and HTTP/2 where the run uses them): one per
    /// stream over HTTP/1.1, `--connections` over HTTP/2.
    pub connections: u64,
    /// Streams still open when the steady window closed.
    pub open_at_window_end: u64,
    pub failed: Failures,
    /// Streams the server ended with its `end` event (not a failure, but a sign that
    /// `count` was too small for the run).
    pub ended: u64,
    pub events_total: u64,
    pub events_in_window: u64,
    pub gaps: u64,
    pub repeats: u64,
    /// `reset` events on shared and channel streams: the server could not continue a
    /// stream's count.
    pub resets: u64,
    /// From the start of the TCP connect to the response headers, in µs.
    pub time_to_headers: Histogram,
    /// From the start of the TCP connect to the first tick, in µs.
    pub time_to_first_event: Histogram,
    /// Client receive time minus `sent_at_us`, for ticks in the window, in µs.
    pub latency: Histogram,
    /// Seconds from the first connect to the last stream settled (open or failed).
    pub setup_secs: f64,
    /// The first few distinct error messages, for diagnosis.
    pub errors: Vec<String>,
}

/// How many distinct error messages a result keeps.
pub const MAX_ERRORS: usize = 8;

impl WorkerResult {
    pub fn merge(&mut self, o: &WorkerResult) {
        self.streams += o.streams;
        self.established += o.established;
        self.connections += o.connections;
        self.open_at_window_end += o.open_at_window_end;
        self.failed.add(&o.failed);
        self.ended += o.ended;
        self.events_total += o.events_total;
        self.events_in_window += o.events_in_window;
        self.gaps += o.gaps;
        self.repeats += o.repeats;
        self.resets += o.resets;
        self.time_to_headers.merge(&o.time_to_headers);
        self.time_to_first_event.merge(&o.time_to_first_event);
        self.latency.merge(&o.latency);
        self.setup_secs = self.setup_secs.max(o.setup_secs);
        for e in &o.errors {
            self.note_error(e);
        }
    }

    pub fn note_error(&mut self, e: &str) {
        if self.errors.len() < MAX_ERRORS && !self.errors.iter().any(|x| x == e) {
            self.errors.push(e.to_owned());
        }
    }
}

/// The server's cost, from `/proc`, when its PID was given. Given several (the
/// instances of one deployment), every figure is the sum over them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerFigures {
    /// The first server process measured.
    pub pid: u32,
    /// How many server processes the figures sum (1 for a single server).
    pub processes: u32,
    /// Server CPU time during the steady window, in µs.
    pub cpu_us_window: f64,
    /// Server CPU per tick delivered in the window, in µs.
    #[serde(deserialize_with = "Option::deserialize")]
    pub cpu_us_per_event: Option<f64>,
    /// Cores the server kept busy during the window.
    pub cpu_cores: f64,
    /// Resident memory before any stream was opened, in KiB.
    pub rss_before_kib: u64,
    /// Resident memory in the middle of the window, in KiB.
    pub rss_steady_kib: u64,
    /// (steady − before) / streams open, in bytes.
    #[serde(deserialize_with = "Option::deserialize")]
    pub rss_per_stream_bytes: Option<f64>,
}

/// The cost of the store behind the servers (Redis), from `/proc`, when its PID was
/// given: what the servers' own figures leave out.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreFigures {
    pub pid: u32,
    /// Its CPU time during the steady window, in µs: summed from the scheduler's
    /// per-thread figures, as the servers' is.
    pub cpu_us_window: f64,
    /// The same from `utime + stime` of `/proc/PID/stat`, in µs, at clock-tick (10 ms)
    /// resolution: a cross-check, coarse for a store that works a few ms a second.
    pub cpu_us_ticks_window: f64,
    /// Its CPU per increment taken in the window (`PublishFigures::ok_in_window`), in
    /// µs; everything it did in the window counts, its own housekeeping included.
    #[serde(deserialize_with = "Option::deserialize")]
    pub cpu_us_per_increment: Option<f64>,
}

/// What the publisher did: `POST`s to the shared counter's increment path or to
/// `/api/publish`, at a fixed rate or as fast as its connections allow, from the
/// streams' opening to the window's end.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishFigures {
    /// Increments asked per second (0 when flooding).
    pub rate: f64,
    /// Keep-alive connections that each sent the next request as soon as the last was
    /// answered (`--publish-flood`); 0 for a paced publisher, whose one connection per
    /// server waits for its schedule.
    pub flood_connections: u32,
    /// The path `POST`ed to.
    pub path: String,
    pub sent: u64,
    /// Answered with a 2xx.
    pub ok: u64,
    /// Of those, the ones sent within the steady window.
    pub ok_in_window: u64,
    /// Answered with another status (a 404 where the route is missing, a 429 past a
    /// rate limit).
    pub refused: u64,
    /// Lost to a connection error or a timeout.
    pub failed: u64,
    /// The first few distinct statuses and errors that were not a 2xx.
    pub errors: Vec<String>,
}

impl PublishFigures {
    pub fn note_error(&mut self, e: &str) {
        if self.errors.len() < MAX_ERRORS && !self.errors.iter().any(|x| x == e) {
            self.errors.push(e.to_owned());
        }
    }
}

/// The result of a run, as printed with `--json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    pub url: String,
    pub kind: StreamKind,
    pub transport: Transport,
    pub streams: u64,
    pub procs: u32,
    pub established: u64,
    /// Connections the streams were carried over.
    pub connections: u64,
    pub open_at_window_end: u64,
    pub failed_total: u64,
    pub failed: Failures,
    pub ended: u64,
    pub window_secs: f64,
    pub events_in_window: u64,
    pub events_per_sec: f64,
    /// What the streams open at the window's end should deliver per second.
    #[serde(deserialize_with = "Option::deserialize")]
    pub expected_events_per_sec: Option<f64>,
    pub gaps: u64,
    pub repeats: u64,
    pub resets: u64,
    pub time_to_headers_us: Summary,
    pub time_to_first_event_us: Summary,
    pub latency_us: Summary,
    pub setup_secs: f64,
    #[serde(deserialize_with = "Option::deserialize")]
    pub server: Option<ServerFigures>,
    /// Present when the run drove the shared counter itself.
    #[serde(deserialize_with = "Option::deserialize")]
    pub publish: Option<PublishFigures>,
    /// Present when the store's PID was given.
    #[serde(deserialize_with = "Option::deserialize")]
    pub store: Option<StoreFigures>,
    pub errors: Vec<String>,
}

impl Report {
    /// `events_per_stream_per_sec` is the tick rate asked of the server, if known.
    /// The transport is HTTP/1.1 until the caller says otherwise, as with `publish`.
    pub fn new(
        url: &str,
        kind: StreamKind,
        procs: u32,
        r: &WorkerResult,
        window_secs: f64,
        events_per_stream_per_sec: Option<f64>,
        server: Option<ServerFigures>,
    ) -> Report {
        Report {
            url: url.to_owned(),
            kind,
            transport: Transport::default(),
            streams: r.streams,
            procs,
            established: r.established,
            connections: r.connections,
            open_at_window_end: r.open_at_window_end,
            failed_total: r.failed.total(),
            failed: r.failed,
            ended: r.ended,
            window_secs,
            events_in_window: r.events_in_window,
            events_per_sec: if window_secs > 0.0 {
                r.events_in_window as f64 / window_secs
            } else {
                0.0
            },
            expected_events_per_sec: events_per_stream_per_sec
                .map(|rate| rate * r.open_at_window_end as f64),
            gaps: r.gaps,
            repeats: r.repeats,
            resets: r.resets,
            time_to_headers_us: r.time_to_headers.summary(),
            time_to_first_event_us: r.time_to_first_event.summary(),
            latency_us: r.latency.summary(),
            setup_secs: r.setup_secs,
            server,
            publish: None,
            store: None,
            errors: r.errors.clone(),
        }
    }

    /// The report as an aligned table for a terminal.
    pub fn table(&self) -> String {
        let mut rows: Vec<(String, String)> = Vec::new();
        let mut row = |k: &str, v: String| rows.push((k.to_owned(), v));
        row("target", self.url.clone());
        row(
            "streams",
            format!(
                "{} asked, {} established, {} open at window end ({} process{})",
                self.streams,
                self.established,
                self.open_at_window_end,
                self.procs,
                if self.procs == 1 { "" } else { "es" }
            ),
        );
        row(
            "connections",
            format!("{} over {}", self.connections, self.transport.label()),
        );
        let f = &self.failed;
        row(
            "failed",
            format!(
                "{} (connect {}, status {}, timeout {}, reset {}, closed {}, protocol {})",
                self.failed_total, f.connect, f.status, f.timeout, f.reset, f.closed, f.protocol
            ),
        );
        if self.ended > 0 {
            row("ended by server", self.ended.to_string());
        }
        row("setup", format!("{:.2} s", self.setup_secs));
        let expected = self
            .expected_events_per_sec
            .map(|e| format!(" (expected {e:.0})"))
            .unwrap_or_default();
        row(
            "events/s",
            format!(
                "{:.0}{expected} over a {:.1} s window, {} events",
                self.events_per_sec, self.window_secs, self.events_in_window
            ),
        );
        row(
            "gaps / repeats",
            format!("{} / {}", self.gaps, self.repeats),
        );
        if self.kind != StreamKind::Counter {
            row("resets", self.resets.to_string());
        }
        if let Some(p) = &self.publish {
            let how = if p.flood_connections > 0 {
                format!(
                    "as fast as {} connection{} allow",
                    p.flood_connections,
                    if p.flood_connections == 1 { "" } else { "s" }
                )
            } else {
                format!("at {}/s", p.rate)
            };
            row(
                "published",
                format!(
                    "{} to {} {how}: {} ok ({} in the window, {:.0}/s), {} refused, {} failed",
                    p.sent,
                    p.path,
                    p.ok,
                    p.ok_in_window,
                    p.ok_in_window as f64 / self.window_secs.max(f64::MIN_POSITIVE),
                    p.refused,
                    p.failed
                ),
            );
            for e in &p.errors {
                row("publish error", e.clone());
            }
        }
        row("time to headers", summary_ms(&self.time_to_headers_us));
        row(
            "time to first event",
            summary_ms(&self.time_to_first_event_us),
        );
        row("delivery latency", summary_ms(&self.latency_us));
        if let Some(s) = &self.server {
            row(
                "server CPU",
                format!(
                    "{} per event; {:.2} cores over the window ({})",
                    s.cpu_us_per_event
                        .map(|c| format!("{c:.2} µs"))
                        .unwrap_or_else(|| "n/a".into()),
                    s.cpu_cores,
                    match s.processes {
                        1 => format!("pid {}", s.pid),
                        n => format!("{n} processes summed, pid {} first", s.pid),
                    }
                ),
            );
            row(
                "server memory",
                format!(
                    "{} per stream; RSS {} KiB before, {} KiB steady",
                    s.rss_per_stream_bytes
                        .map(|b| format!("{:.2} KiB", b / 1024.0))
                        .unwrap_or_else(|| "n/a".into()),
                    s.rss_before_kib,
                    s.rss_steady_kib
                ),
            );
        }
        if let Some(st) = &self.store {
            row(
                "store CPU",
                format!(
                    "{} per increment; {:.1} ms over the window ({:.0} ms by utime+stime; pid {})",
                    st.cpu_us_per_increment
                        .map(|c| format!("{c:.1} µs"))
                        .unwrap_or_else(|| "n/a".into()),
                    st.cpu_us_window / 1000.0,
                    st.cpu_us_ticks_window / 1000.0,
                    st.pid
                ),
            );
        }
        for e in &self.errors {
            row("error seen", e.clone());
        }
        let width = rows
            .iter()
            .map(|(k, _)| k.chars().count())
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for (k, v) in rows {
            let _ = writeln!(out, "{k:<width$}  {v}");
        }
        out
    }
}

/// What `floor --json` prints: the CPU cost of one tick-sized write to a loopback socket.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Floor {
    /// Connected socket pairs written to round-robin.
    pub pairs: u64,
    pub writes: u64,
    pub bytes_per_write: u64,
    /// CPU of the writing thread per write, in µs.
    pub cpu_us_per_write: f64,
    /// Wall-clock time per write, in µs.
    pub wall_us_per_write: f64,
}

fn summary_ms(s: &Summary) -> String {
    let ms = |v: Option<u64>| {
        v.map(|us| format!("{:.3} ms", us as f64 / 1000.0))
            .unwrap_or_else(|| "n/a".into())
    };
    format!(
        "p50 {}, p99 {}, max {} ({} samples)",
        ms(s.p50),
        ms(s.p99),
        ms(s.max),
        s.count
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_adds_counts_and_keeps_the_slowest_setup() {
        let mut a = WorkerResult {
            streams: 10,
            established: 9,
            connections: 9,
            failed: Failures {
                connect: 1,
                ..Failures::default()
            },
            events_in_window: 90,
            gaps: 1,
            setup_secs: 1.5,
            errors: vec!["refused".into()],
            ..WorkerResult::default()
        };
        a.latency.record(100);
        let mut b = WorkerResult {
            streams: 10,
            established: 10,
            connections: 2,
            events_in_window: 100,
            repeats: 2,
            setup_secs: 0.5,
            errors: vec!["refused".into(), "reset".into()],
            ..WorkerResult::default()
        };
        b.latency.record(300);
        a.merge(&b);
        assert_eq!((a.streams, a.established, a.failed.total()), (20, 19, 1));
        assert_eq!(a.connections, 11);
        assert_eq!((a.events_in_window, a.gaps, a.repeats), (190, 1, 2));
        assert_eq!(a.setup_secs, 1.5);
        assert_eq!(a.errors, ["refused", "reset"]);
        assert_eq!(a.latency.count(), 2);
        let r = Report::new(
            "http://127.0.0.1:1/",
            StreamKind::Counter,
            2,
            &a,
            10.0,
            Some(1.0),
            None,
        );
        assert_eq!(r.events_per_sec, 19.0);
        assert!(r
            .table()
            .lines()
            .any(|l| l.starts_with("gaps / repeats") && l.ends_with("  1 / 2")));
    }

    /// A report with every optional figure present.
    fn full_report() -> Report {
        let mut w = WorkerResult {
            streams: 2,
            established: 2,
            connections: 1,
            open_at_window_end: 2,
            events_in_window: 20,
            ..WorkerResult::default()
        };
        for us in [100, 200] {
            w.latency.record(us);
            w.time_to_headers.record(us);
            w.time_to_first_event.record(us);
        }
        let server = ServerFigures {
            pid: 7,
            processes: 1,
            cpu_us_window: 100.0,
            cpu_us_per_event: Some(5.0),
            cpu_cores: 0.01,
            rss_before_kib: 1000,
            rss_steady_kib: 1100,
            rss_per_stream_bytes: Some(51_200.0),
        };
        let mut r = Report::new(
            "http://127.0.0.1:1/api/shared",
            StreamKind::Shared,
            1,
            &w,
            1.0,
            Some(10.0),
            Some(server),
        );
        r.transport = Transport::Http2;
        r.publish = Some(PublishFigures {
            rate: 10.0,
            sent: 10,
            ok: 10,
            ok_in_window: 8,
            ..PublishFigures::default()
        });
        r.store = Some(StoreFigures {
            pid: 8,
            cpu_us_window: 800.0,
            cpu_us_ticks_window: 0.0,
            cpu_us_per_increment: Some(100.0),
        });
        r
    }

    /// Renames the key at `path` in a JSON object to `new`.
    fn rename(v: &mut serde_json::Value, path: &[&str], new: &str) {
        let (last, parents) = path.split_last().unwrap();
        let obj = parents
            .iter()
            .fold(v, |v, k| &mut v[*k])
            .as_object_mut()
            .unwrap();
        let moved = obj.remove(*last).expect("the field exists");
        obj.insert(new.to_owned(), moved);
    }

    #[test]
    fn a_report_reads_back_as_itself() {
        let r = full_report();
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Report>(&json).unwrap(), r);
    }

    #[test]
    fn a_renamed_field_fails_to_read_back_instead_of_reading_as_missing() {
        let json = serde_json::to_value(full_report()).unwrap();
        for path in [
            &["latency_us"][..],
            &["expected_events_per_sec"],
            &["server"],
            &["server", "cpu_us_per_event"],
            &["server", "rss_per_stream_bytes"],
            &["time_to_headers_us", "p99"],
            &["failed", "status"],
            &["publish", "refused"],
            &["publish", "ok_in_window"],
            &["publish", "flood_connections"],
            &["server", "processes"],
            &["store"],
            &["store", "cpu_us_per_increment"],
            &["kind"],
            &["transport"],
            &["connections"],
        ] {
            let mut v = json.clone();
            rename(&mut v, path, "renamed");
            let err = serde_json::from_value::<Report>(v)
                .expect_err(&format!("{path:?} renamed still reads"))
                .to_string();
            assert!(err.contains("renamed"), "{path:?}: {err}");
        }
    }

    #[test]
    fn an_optional_figure_must_be_there_even_when_it_has_no_value() {
        let json = serde_json::to_value(full_report()).unwrap();
        let mut v = json.clone();
        v["server"]["cpu_us_per_event"] = serde_json::Value::Null;
        let r: Report = serde_json::from_value(v).unwrap();
        assert_eq!(r.server.unwrap().cpu_us_per_event, None);
        let mut v = json.clone();
        v["server"]
            .as_object_mut()
            .unwrap()
            .remove("cpu_us_per_event");
        let err = serde_json::from_value::<Report>(v).unwrap_err().to_string();
        assert!(err.contains("missing field `cpu_us_per_event`"), "{err}");
        let mut v = json;
        v.as_object_mut().unwrap().remove("server");
        assert!(serde_json::from_value::<Report>(v).is_err());
    }

    #[test]
    fn the_kind_of_stream_follows_the_path() {
        assert_eq!(StreamKind::for_path("/api/shared"), StreamKind::Shared);
        assert_eq!(
            StreamKind::for_path("/api/shared?last_event_id=3"),
            StreamKind::Shared
        );
        assert_eq!(
            StreamKind::for_path("/api/counter?count=5"),
            StreamKind::Counter
        );
        assert_eq!(StreamKind::for_path("/streaming"), StreamKind::Counter);
        assert_eq!("shared".parse(), Ok(StreamKind::Shared));
        assert_eq!(
            StreamKind::for_path("/api/events?channel=a&channel=b"),
            StreamKind::Channels
        );
        assert_eq!("channels".parse(), Ok(StreamKind::Channels));
        assert!("fanout".parse::<StreamKind>().is_err());
    }

    #[test]
    fn a_floor_with_a_renamed_field_fails_to_read_back() {
        let floor = Floor {
            pairs: 1000,
            writes: 10,
            bytes_per_write: 63,
            cpu_us_per_write: 7.0,
            wall_us_per_write: 8.0,
        };
        let mut v = serde_json::to_value(floor).unwrap();
        assert_eq!(serde_json::from_value::<Floor>(v.clone()).unwrap(), floor);
        rename(&mut v, &["cpu_us_per_write"], "cpu_per_write");
        assert!(serde_json::from_value::<Floor>(v).is_err());
    }
}
