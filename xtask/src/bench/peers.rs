//! The servers every scenario runs against, as one table, and how each is started.

use super::scenarios::{Load, Scenario, COUNT};
use crate::util::{display, has, project_root, step};
use anyhow::{bail, Context as _};
use std::io::{BufRead, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The express version the seed names; package-lock.json pins it.
pub const EXPRESS_VERSION: &str = "4.17.1";

/// Which server a peer is; the report compares sse-counter with each of the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerId {
    Ours,
    Yardstick,
    Express,
    Naive,
}

/// One server under test.
#[derive(Debug)]
pub struct Peer {
    pub id: PeerId,
    /// The column heading in the report.
    pub label: &'static str,
    /// Its name in the heading of an "ours / peer" column.
    pub short: &'static str,
    /// The name in log file names.
    pub slug: &'static str,
    pub program: Program,
    /// The path of the per-client counter stream.
    pub counter_path: &'static str,
    /// Whether the count and interval go in the query (`count=..&interval_ms=..`);
    /// otherwise they go in the environment at start (`COUNT`, `INTERVAL_MS`).
    pub counter_in_query: bool,
    /// How it serves the fan-out scenario; `None`: it has no shared counter.
    pub fanout: Option<Fanout>,
}

/// How a peer serves one counter to many subscribers.
#[derive(Debug)]
pub enum Fanout {
    /// `path` streams the shared counter; sse-bench changes it by `POST`ing to its
    /// increment path at the scenario's rate. `start_args` are added at start when the
    /// server's `--help` names the first of them.
    Driven {
        path: &'static str,
        start_args: &'static [&'static str],
    },
    /// `path` streams a counter the peer changes by itself, every interval given to
    /// `interval_flag` at start.
    SelfTimed {
        path: &'static str,
        interval_flag: &'static str,
    },
}

impl Fanout {
    pub fn path(&self) -> &'static str {
        match self {
            Fanout::Driven { path, .. } | Fanout::SelfTimed { path, .. } => path,
        }
    }
}

/// How a peer is started; each prints `listening on http://ADDR` on stdout first.
#[derive(Debug)]
pub enum Program {
    /// A binary of this workspace's release build, with its arguments.
    Release(&'static str, &'static [&'static str]),
    /// A script under `node`, told its port by `PORT`.
    Node(&'static str),
}

/// sse-counter, the peer the scenarios of sse-counter alone (`http2`, `cluster`) run.
pub fn ours() -> &'static Peer {
    PEERS
        .iter()
        .find(|p| p.id == PeerId::Ours)
        .expect("sse-counter is a peer")
}

/// Every peer, in the order each scenario runs them (and the report's columns):
/// alternating over the repeats, so drift in the machine's load falls on all of them
/// alike.
/// The yardstick.
pub fn yardstick() -> &'static Peer {
    PEERS
        .iter()
        .find(|p| p.id == PeerId::Yardstick)
        .expect("the yardstick is a peer")
}

pub const PEERS: [Peer; 4] = [
    Peer {
        id: PeerId::Ours,
        label: "sse-counter",
        short: "ours",
        slug: "ours",
        // No page is served in a benchmark; the server only warns about it.
        program: Program::Release(
            "sse-counter",
            &[
                "--addr",
                "127.0.0.1:0",
                "--max-streams",
                "20000",
                "--static-dir",
                "/nonexistent",
            ],
        ),
        counter_path: shared::paths::COUNTER,
        counter_in_query: true,
        fanout: Some(Fanout::Driven {
            path: shared::paths::SHARED,
            // sse-bench publishes from one address; the default limit per address
            // equals the fan-out's rate, and timer jitter must not make it refuse one.
            start_args: &["--publish-rate", "100"],
        }),
    },
    Peer {
        id: PeerId::Yardstick,
        label: "yardstick",
        short: "yardstick",
        slug: "yardstick",
        program: Program::Release("yardstick", &["--addr", "127.0.0.1:0"]),
        counter_path: shared::paths::COUNTER,
        counter_in_query: true,
        fanout: Some(Fanout::SelfTimed {
            path: shared::paths::SHARED,
            interval_flag: "--broadcast-interval-ms",
        }),
    },
    Peer {
        id: PeerId::Express,
        label: "Express (seed)",
        short: "Express",
        slug: "express",
        program: Program::Node("bench/peers/express/server.js"),
        counter_path: "/streaming",
        counter_in_query: false,
        fanout: None,
    },
    Peer {
        id: PeerId::Naive,
        label: "naive warp",
        short: "naive",
        slug: "warp-naive",
        program: Program::Release("warp-naive", &["--addr", "127.0.0.1:0"]),
        counter_path: shared::paths::COUNTER,
        counter_in_query: true,
        fanout: None,
    },
];

impl Peer {
    /// The URL of the counter stream a scenario asks of this peer at `base`.
    pub fn counter_url(&self, base: &str, sc: &Scenario) -> String {
        if self.counter_in_query {
            format!(
                "{base}{}?count={COUNT}&interval_ms={}",
                self.counter_path, sc.interval_ms
            )
        } else {
            format!("{base}{}", self.counter_path)
        }
    }

    /// Starts this peer for `sc`, its stderr to `log` and its stdout (after the
    /// `listening on` line) next to it.
    pub fn start(&self, root: &Path, sc: &Scenario, log: &Path) -> anyhow::Result<Server> {
        self.start_with(root, sc, log, &[])
    }

    /// [`Peer::start`] with `extra` arguments after the peer's own (a binary's only).
    pub fn start_with(
        &self,
        root: &Path,
        sc: &Scenario,
        log: &Path,
        extra: &[&str],
    ) -> anyhow::Result<Server> {
        let mut cmd = match self.program {
            Program::Release(bin, args) => {
                let mut c = Command::new(root.join("target/release").join(bin));
                c.args(args).args(extra);
                c
            }
            Program::Node(script) => {
                let mut c = Command::new("node");
                c.arg(root.join(script)).env("PORT", "0");
                c
            }
        };
        if !self.counter_in_query {
            cmd.env("INTERVAL_MS", sc.interval_ms.to_string())
                .env("COUNT", COUNT.to_string());
        }
        if sc.load == Load::Fanout {
            match self.fanout {
                Some(Fanout::Driven { start_args, .. })
                    if start_args
                        .first()
                        .is_some_and(|flag| self.knows_flag(root, flag)) =>
                {
                    cmd.args(start_args);
                }
                Some(Fanout::SelfTimed { interval_flag, .. }) => {
                    cmd.args([interval_flag, &sc.interval_ms.to_string()]);
                }
                _ => {}
            }
        }
        let err_log = std::fs::File::create(log)?;
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::from(err_log))
            .spawn()
            .with_context(|| format!("cannot start {}", display(&cmd)))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        let out_log = log.with_extension("stdout.log");
        // Reads the `listening on` line, then keeps draining: a server blocks once a pipe
        // nobody reads is full (Express logs every closed stream).
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next().and_then(Result::ok);
            let _ = tx.send(first);
            if let Ok(mut f) = std::fs::File::create(out_log) {
                for line in lines.map_while(Result::ok) {
                    let _ = std::io::Write::write_all(&mut f, format!("{line}\n").as_bytes());
                }
            }
        });
        // From here the server is killed on every way out.
        let mut server = Server {
            child,
            base: String::new(),
        };
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .ok()
            .flatten()
            .with_context(|| {
                format!(
                    "{} did not say where it listens (see {})",
                    self.label,
                    log.display()
                )
            })?;
        server.base = line
            .strip_prefix("listening on ")
            .with_context(|| format!("{} printed {line:?}", self.label))?
            .to_owned();
        Ok(server)
    }
}

impl Peer {
    /// Whether the peer's `--help` names `flag`, so a flag that another branch of the
    /// server has not landed yet is left out instead of failing the start.
    fn knows_flag(&self, root: &Path, flag: &str) -> bool {
        let Program::Release(bin, _) = self.program else {
            return false;
        };
        crate::util::output(Command::new(root.join("target/release").join(bin)).arg("--help"))
            .is_some_and(|help| help.split_whitespace().any(|w| w.trim_matches(',') == flag))
    }
}

/// Asks `base` for `path` the way a subscriber would and says whether it answers 200:
/// the fan-out scenario runs only against a server that has the route.
pub fn probe(base: &str, path: &str) -> Result<(), String> {
    let line = status_line(base, "GET", path)?;
    let status = line.split_once(' ').map_or("", |(_, s)| s);
    if status.starts_with("200") {
        Ok(())
    } else {
        Err(format!("GET {path} answered {status:?}"))
    }
}

/// The status of an empty `POST path` to `base` on a fresh connection (an increment,
/// say): the `sentinel` scenario's failover clock.
pub fn post_status(base: &str, path: &str) -> Result<u16, String> {
    let line = status_line(base, "POST", path)?;
    line.split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("POST {path}: no status in {line:?}"))
}

/// The status line of `METHOD path` on a fresh connection to `base`
/// (`http://ADDR`), within 5 s. Only that line is read: a stream that answers 200 never
/// ends.
fn status_line(base: &str, method: &str, path: &str) -> Result<String, String> {
    let addr: SocketAddr = base
        .strip_prefix("http://")
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| format!("cannot read an address from {base:?}"))?;
    let timeout = Duration::from_secs(5);
    let mut tcp = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let body = if method == "GET" {
        "Accept: text/event-stream"
    } else {
        "Content-Length: 0"
    };
    write!(
        tcp,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{body}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n") && head.len() < 256 {
        match tcp.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            Ok(_) => break,
            Err(e) => return Err(format!("{method} {path}: {e}")),
        }
    }
    Ok(String::from_utf8_lossy(&head).trim_end().to_owned())
}

/// Waits until the server at `base` serves the shared counter (an instance on Redis
/// answers 503 until its reader has connected).
pub fn ready(base: &str) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match probe(base, shared::paths::SHARED) {
            Ok(()) => return Ok(()),
            Err(why) if std::time::Instant::now() > deadline => {
                anyhow::bail!("{base} does not serve the shared counter: {why}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// A server under test, killed when dropped.
pub struct Server {
    pub child: Child,
    /// `http://ADDR` (or `https://ADDR`), as the server printed it.
    pub base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `version` of an npm package's `package.json`; nothing else is read.
#[derive(serde::Deserialize)]
struct PackageJson {
    version: String,
}

/// Installs the Express peer's locked dependencies unless they are already there.
pub fn express_installed() -> anyhow::Result<()> {
    if !has("node") || !has("npm") {
        bail!("node and npm are needed for the Express peer: install them (e.g. `apt-get install nodejs npm`), then run again");
    }
    let dir = project_root().join("bench/peers/express");
    let installed = std::fs::read_to_string(dir.join("node_modules/express/package.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<PackageJson>(&t).ok())
        .map(|p| p.version);
    if installed.as_deref() == Some(EXPRESS_VERSION) {
        return Ok(());
    }
    step(format!(
        "installing the Express peer's dependencies (express {EXPRESS_VERSION}, from package-lock.json)"
    ));
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&dir)
        .status()
        .context("cannot run npm")?;
    anyhow::ensure!(status.success(), "`npm ci` in bench/peers/express failed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::scenarios::scenarios;

    fn peer(id: PeerId) -> &'static Peer {
        PEERS.iter().find(|p| p.id == id).unwrap()
    }

    #[test]
    fn every_peer_id_has_one_row_and_distinct_names() {
        for id in [
            PeerId::Ours,
            PeerId::Yardstick,
            PeerId::Express,
            PeerId::Naive,
        ] {
            assert_eq!(PEERS.iter().filter(|p| p.id == id).count(), 1);
        }
        let mut slugs: Vec<_> = PEERS.iter().map(|p| p.slug).collect();
        slugs.sort_unstable();
        slugs.dedup();
        assert_eq!(slugs.len(), PEERS.len());
    }

    #[test]
    fn counter_urls_carry_the_interval_where_the_peer_reads_it() {
        let sc = scenarios(false)
            .into_iter()
            .find(|s| s.name == "10 Hz")
            .expect("a 10 Hz scenario");
        let sc = &sc;
        assert_eq!(
            peer(PeerId::Ours).counter_url("http://127.0.0.1:9", sc),
            "http://127.0.0.1:9/api/counter?count=1000000&interval_ms=100"
        );
        assert_eq!(
            peer(PeerId::Express).counter_url("http://127.0.0.1:9", sc),
            "http://127.0.0.1:9/streaming"
        );
    }

    #[test]
    fn the_probe_reads_the_status_line() {
        use std::net::TcpListener;
        let serve = |answer: &'static str| {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let base = format!("http://{}", listener.local_addr().unwrap());
            std::thread::spawn(move || {
                let (mut s, _) = listener.accept().unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
                let _ = s.write_all(answer.as_bytes());
                // Held open, as a stream would be.
                std::thread::sleep(Duration::from_millis(200));
            });
            base
        };
        let ok = serve("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n");
        assert_eq!(probe(&ok, "/api/shared"), Ok(()));
        let missing = serve("HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n");
        assert_eq!(
            probe(&missing, "/api/shared"),
            Err("GET /api/shared answered \"404 Not Found\"".into())
        );
        let busy = serve("HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\n\r\n");
        assert_eq!(post_status(&busy, "/api/shared/increment"), Ok(503));
        let junk = serve("SSH-2.0-OpenSSH\r\n");
        assert!(post_status(&junk, "/api/shared/increment").is_err());
    }
}
