//! `cargo xtask cluster [--instances N] [--sentinel]`: installs what is missing, then
//! starts Redis, N instances sharing the counter through it, and nginx in front of them
//! with TLS and HTTP/2, all on loopback and configured from `deploy/`; prints the URL
//! and stops them all on Ctrl-C. With `--sentinel`, Redis is a primary, two replicas
//! and three Sentinels (`deploy/sentinel.conf`), and the instances follow the primary
//! the Sentinels name.
//!
//! [`Cluster`] is the same from code (the benchmark, say): [`Cluster::start`] with
//! [`Options`] (nginx left out if it is not wanted), and everything stops when it is
//! dropped. Under Sentinel it also kills and restarts a Redis node and says when the
//! Sentinels agree on a primary and its replicas again ([`Cluster::wait_settled`]).

use crate::setup;
use crate::util::{cargo, find_program, project_root, run, step};
use ::bench::deploy;
use anyhow::{bail, Context as _};
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// How many instances of sse-counter to run behind nginx.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    instances: u16,
    /// Where nginx listens for HTTPS (HTTP/2 and HTTP/1.1).
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// Do not build the page (nginx then serves whatever web/dist holds).
    #[arg(long)]
    no_page: bool,
    /// Redis under Sentinel: a primary, 2 replicas and 3 Sentinels (deploy/sentinel.conf);
    /// the instances get `--redis-sentinel` for each and `--redis-master-name`.
    #[arg(long)]
    sentinel: bool,
    /// Flags for every instance, after `--` (e.g. `-- --publish-rate 1000`).
    #[arg(last = true)]
    instance_args: Vec<String>,
}

/// What [`Cluster::start`] starts.
#[derive(Debug, Clone)]
pub struct Options {
    /// Instances of the server behind nginx (at least one).
    pub instances: usize,
    /// nginx's HTTPS address.
    pub listen: SocketAddr,
    /// The `sse-counter` binary.
    pub server: PathBuf,
    /// The built page nginx serves.
    pub static_dir: PathBuf,
    /// Where configurations, data and logs go; emptied first.
    pub run_dir: PathBuf,
    /// Flags given to every instance besides those the cluster sets.
    pub instance_args: Vec<String>,
    /// Whether nginx is started in front of the instances (the benchmark talks to them
    /// directly).
    pub nginx: bool,
    /// Redis under Sentinel ([`deploy::REPLICAS`] replicas, [`deploy::SENTINELS`]
    /// Sentinels), rather than one Redis.
    pub sentinel: bool,
}

impl Options {
    /// The defaults of `cargo xtask cluster`: the release binary, web/dist, and
    /// target/cluster for everything else.
    pub fn new(instances: usize, listen: SocketAddr) -> Options {
        let root = project_root();
        Options {
            instances,
            listen,
            server: root.join("target/release/sse-counter"),
            static_dir: root.join("web/dist"),
            run_dir: root.join("target/cluster"),
            instance_args: Vec::new(),
            nginx: true,
            sentinel: false,
        }
    }

    /// What a benchmark starts: `instances` of the release binary under `root` with
    /// `instance_args`, no nginx (the load goes straight to the instances) and no page.
    pub fn bench(
        root: &Path,
        instances: usize,
        run_dir: PathBuf,
        instance_args: Vec<String>,
    ) -> Options {
        Options {
            instances,
            // Without nginx nothing listens there.
            listen: ([127, 0, 0, 1], 0).into(),
            server: root.join("target/release/sse-counter"),
            // No page is served in a benchmark; the server only warns about it.
            static_dir: "/nonexistent".into(),
            run_dir,
            instance_args,
            nginx: false,
            sentinel: false,
        }
    }
}

/// Redis, the instances and nginx, running; each is stopped when this is dropped.
pub struct Cluster {
    /// `https://localhost:PORT`, nginx's address (where nothing listens without nginx).
    pub url: String,
    /// The (first) primary's URL.
    pub redis_url: String,
    /// The (first) primary's process id, for measuring what it costs.
    pub redis_pid: u32,
    /// Every Redis node's port, the first primary first, then its replicas.
    pub redis_ports: Vec<u16>,
    /// The Sentinels' ports (none without Sentinel).
    pub sentinel_ports: Vec<u16>,
    /// Each instance's own address (plain HTTP, straight to it).
    pub instances: Vec<SocketAddr>,
    /// Each instance's process id, in the order of `instances`.
    pub instance_pids: Vec<u32>,
    pub run_dir: PathBuf,
    /// Stopped in reverse: nginx first, Redis last.
    processes: Vec<Process>,
    /// Where the node on each of `redis_ports` is in `processes`.
    redis_slots: Vec<usize>,
}

/// A child process that is stopped (SIGTERM, then SIGKILL) when dropped.
struct Process {
    name: String,
    child: Child,
    /// Set once it was seen to have exited (and that was said).
    exited: bool,
}

impl Process {
    fn new(name: impl Into<String>, child: Child) -> Process {
        Process {
            name: name.into(),
            child,
            exited: false,
        }
    }

    /// Whether it is still running; says once when it has stopped.
    fn running(&mut self) -> bool {
        if self.exited {
            return false;
        }
        match self.child.try_wait() {
            Ok(None) => true,
            Ok(Some(status)) => {
                step(format!("{} exited ({status})", self.name));
                self.exited = true;
                false
            }
            Err(_) => {
                self.exited = true;
                false
            }
        }
    }

    /// `kill -9`, as in a crash, and waits until it is gone.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.exited = true;
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        // SIGTERM: nginx's master stops its workers, an instance ends its streams,
        // Redis flushes its log. A SIGKILL only if that takes too long.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Cluster {
    /// Starts Redis, the instances and nginx, each once it has seen the one before
    /// answer. Fails with the piece's log if one does not start.
    pub fn start(options: &Options) -> anyhow::Result<Cluster> {
        anyhow::ensure!(options.instances > 0, "a cluster needs an instance");
        let dir = &options.run_dir;
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut cluster = Cluster {
            url: format!("https://localhost:{}", options.listen.port()),
            redis_url: String::new(),
            redis_pid: 0,
            redis_ports: Vec::new(),
            sentinel_ports: Vec::new(),
            instances: Vec::new(),
            instance_pids: Vec::new(),
            run_dir: dir.clone(),
            processes: Vec::new(),
            redis_slots: Vec::new(),
        };

        let primary = cluster.start_redis(None)?;
        cluster.redis_url = format!("redis://127.0.0.1:{primary}");
        cluster.redis_pid = cluster.processes[0].child.id();
        let store_args = if options.sentinel {
            for _ in 0..deploy::REPLICAS {
                cluster.start_redis(Some(primary))?;
            }
            for _ in 0..deploy::SENTINELS {
                cluster.start_sentinel(primary)?;
            }
            cluster.wait_settled(SETTLE_LIMIT)?;
            sentinel_args(&cluster.sentinel_ports)
        } else {
            vec!["--redis-url".to_owned(), cluster.redis_url.clone()]
        };

        for n in 1..=options.instances {
            let log = dir.join(format!("instance-{n}.log"));
            let mut child = Command::new(&options.server)
                .args(["--addr", "127.0.0.1:0"])
                .args(&store_args)
                // nginx, on this machine, names the client in X-Forwarded-For.
                .args(["--trusted-proxy", "127.0.0.1"])
                .arg("--static-dir")
                .arg(&options.static_dir)
                .args(&options.instance_args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(std::fs::File::create(&log)?)
                .spawn()
                .with_context(|| format!("cannot start {}", options.server.display()))?;
            let stdout = child.stdout.take().context("no stdout from the server")?;
            let pid = child.id();
            cluster
                .processes
                .push(Process::new(format!("instance {n}"), child));
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line)?;
            let addr = line
                .trim()
                .strip_prefix("listening on http://")
                .and_then(|a| a.parse().ok());
            let Some(addr) = addr else {
                bail!(
                    "instance {n} did not start:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            };
            cluster.instances.push(addr);
            cluster.instance_pids.push(pid);
        }
        if !options.nginx {
            return Ok(cluster);
        }

        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        self_signed(&cert, &key)?;
        let nginx = deploy::Nginx {
            listen: options.listen,
            instances: &cluster.instances,
            cert: &cert,
            key: &key,
            static_dir: &options.static_dir,
            run_dir: dir,
        };
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, nginx.render()?)?;
        let nginx = nginx
            .command(&program("nginx")?, &conf)
            .spawn()
            .context("cannot start nginx")?;
        let mut nginx = Process::new("nginx", nginx);
        let listen = options.listen;
        let up = wait_until(&mut nginx, &dir.join("error.log"), || {
            TcpStream::connect(listen).is_ok()
        });
        cluster.processes.push(nginx);
        up?;
        Ok(cluster)
    }

    /// Starts a Redis node with `deploy/redis.conf` on a free port, a replica of
    /// `primary` if given, and waits until it answers; its port.
    fn start_redis(&mut self, primary: Option<u16>) -> anyhow::Result<u16> {
        let port = deploy::free_port()?;
        self.redis_ports.push(port);
        self.redis_slots.push(self.processes.len());
        self.spawn_redis(self.redis_ports.len() - 1, primary.map(loopback))?;
        Ok(port)
    }

    /// (Re)starts the node `n` of `redis_ports` from its directory, a replica of
    /// `primary` if given, and waits until it answers `PING`.
    fn spawn_redis(&mut self, n: usize, primary: Option<SocketAddr>) -> anyhow::Result<()> {
        let port = self.redis_ports[n];
        let name = if n == 0 {
            "redis-server".to_owned()
        } else {
            format!("redis-server {}", n + 1)
        };
        let data = self.run_dir.join(format!("redis-{}", n + 1));
        std::fs::create_dir_all(&data)?;
        let log = self.run_dir.join(format!("redis-{}.log", n + 1));
        let program = program("redis-server")?;
        let mut cmd = match primary {
            Some(primary) => deploy::replica_command(&program, port, &data, &log, primary)?,
            None => deploy::redis_command(&program, port, &data, &log)?,
        };
        let child = cmd.spawn().context("cannot start redis-server")?;
        let mut process = Process::new(name, child);
        let up = wait_until(&mut process, &log, || redis_ping(port));
        let slot = self.redis_slots[n];
        if slot == self.processes.len() {
            self.processes.push(process);
        } else {
            self.processes[slot] = process;
        }
        up
    }

    /// Starts a Sentinel with `deploy/sentinel.conf` watching `primary`, on a free port,
    /// and waits until it answers `PING`.
    fn start_sentinel(&mut self, primary: u16) -> anyhow::Result<()> {
        let n = self.sentinel_ports.len() + 1;
        let port = deploy::free_port()?;
        let dir = self.run_dir.join(format!("sentinel-{n}"));
        std::fs::create_dir_all(&dir)?;
        let conf = deploy::Sentinel {
            port,
            dir: &dir,
            master_name: deploy::MASTER_NAME,
            primary: loopback(primary),
            quorum: deploy::QUORUM,
        };
        let path = dir.join("sentinel.conf");
        std::fs::write(&path, conf.render()?)?;
        let child = deploy::Sentinel::command(&program("redis-sentinel")?, &path)
            .spawn()
            .context("cannot start redis-sentinel")?;
        self.sentinel_ports.push(port);
        let mut process = Process::new(format!("sentinel {n}"), child);
        let up = wait_until(&mut process, &dir.join("sentinel.log"), || redis_ping(port));
        self.processes.push(process);
        up
    }

    /// The port of the primary that every Sentinel names, once each knows it, the
    /// other Sentinels and [`deploy::REPLICAS`] replicas that are up, and the primary
    /// has them all connected; `None` until then (a failover under way, a node
    /// restarted and not yet seen).
    pub fn settled(&self) -> anyhow::Result<Option<u16>> {
        let mut named = None;
        for &sentinel in &self.sentinel_ports {
            let master = deploy::MASTER_NAME;
            let Some(addr) = redis_cli(sentinel, &["SENTINEL", "get-master-addr-by-name", master])
            else {
                return Ok(None);
            };
            let port: Option<u16> = addr.lines().nth(1).and_then(|p| p.trim().parse().ok());
            if port.is_none() || (named.is_some() && named != port) {
                return Ok(None);
            }
            named = port;
            let replicas = redis_cli(sentinel, &["SENTINEL", "replicas", master]);
            let others = redis_cli(sentinel, &["SENTINEL", "sentinels", master]);
            let up = replicas.as_deref().map_or(0, healthy_replicas);
            let peers = others.as_deref().map_or(0, |o| fields(o, "name").len());
            if up < deploy::REPLICAS || peers < self.sentinel_ports.len() - 1 {
                return Ok(None);
            }
        }
        let Some(primary) = named else {
            return Ok(None);
        };
        let info = redis_cli(primary, &["INFO", "replication"]).unwrap_or_default();
        let online = info
            .lines()
            .filter(|l| l.starts_with("slave") && l.contains("state=online"))
            .count();
        anyhow::ensure!(
            self.redis_ports.contains(&primary),
            "the Sentinels name a primary on port {primary}, which is none of this cluster's"
        );
        Ok((online >= deploy::REPLICAS && info.contains("role:master")).then_some(primary))
    }

    /// Waits until the Sentinels agree on a primary with every replica
    /// ([`Cluster::settled`]), within `limit`; its port. Sentinel tells no one when it
    /// has seen a replica come back, so this asks every 100 ms.
    pub fn wait_settled(&self, limit: Duration) -> anyhow::Result<u16> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(primary) = self.settled()? {
                return Ok(primary);
            }
            if Instant::now() > deadline {
                bail!(
                    "the Sentinels did not agree on a primary with {} replicas within {limit:?} \
                     (logs in {})",
                    deploy::REPLICAS,
                    self.run_dir.display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The primary that at least [`deploy::QUORUM`] Sentinels name, if they do.
    pub fn primary(&self) -> Option<u16> {
        let named: Vec<u16> = self
            .sentinel_ports
            .iter()
            .filter_map(|&s| {
                let addr = redis_cli(
                    s,
                    &["SENTINEL", "get-master-addr-by-name", deploy::MASTER_NAME],
                )?;
                addr.lines().nth(1)?.trim().parse().ok()
            })
            .collect();
        named
            .iter()
            .copied()
            .find(|p| named.iter().filter(|q| *q == p).count() >= deploy::QUORUM)
    }

    /// Waits until the Sentinels name a primary other than `old` ([`Cluster::primary`]),
    /// within `limit`; its port. Asks every 100 ms, as [`Cluster::wait_settled`] does.
    pub fn wait_primary_other_than(&self, old: u16, limit: Duration) -> anyhow::Result<u16> {
        let deadline = Instant::now() + limit;
        loop {
            match self.primary() {
                Some(p) if p != old => return Ok(p),
                _ if Instant::now() > deadline => {
                    bail!("the Sentinels named no primary other than {old} within {limit:?}")
                }
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// `kill -9` of the Redis node on `port`, as in a crash; returns once it is gone.
    pub fn kill_redis(&mut self, port: u16) -> anyhow::Result<()> {
        let n = self.node(port)?;
        self.processes[self.redis_slots[n]].kill();
        Ok(())
    }

    /// Starts the Redis node on `port` again, from its data, as a replica of the
    /// primary on `primary` (which Sentinel would make of it anyway).
    pub fn restart_redis(&mut self, port: u16, primary: u16) -> anyhow::Result<()> {
        let n = self.node(port)?;
        self.spawn_redis(n, Some(loopback(primary)))
    }

    fn node(&self, port: u16) -> anyhow::Result<usize> {
        self.redis_ports
            .iter()
            .position(|p| *p == port)
            .with_context(|| format!("no Redis node of this cluster on port {port}"))
    }

    /// The process id of the Redis node on `port`.
    pub fn redis_pid_on(&self, port: u16) -> anyhow::Result<u32> {
        Ok(self.processes[self.redis_slots[self.node(port)?]]
            .child
            .id())
    }

    /// How many of Redis, the instances and nginx are still running (and says once of
    /// each that stopped).
    pub fn running(&mut self) -> usize {
        let mut running = 0;
        for p in &mut self.processes {
            running += usize::from(p.running());
        }
        running
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        while let Some(p) = self.processes.pop() {
            drop(p);
        }
    }
}

/// Waits until `ready` says so, as long as `process` runs; its log is the error
/// otherwise.
fn wait_until(
    process: &mut Process,
    log: &Path,
    mut ready: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if ready() {
            return Ok(());
        }
        if !process.running() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!(
        "{} did not start:\n{}",
        process.name,
        std::fs::read_to_string(log).unwrap_or_default()
    )
}

/// How long the Sentinels may take to find the replicas and each other (their hello
/// messages go every 2 s) before the cluster is taken as up.
const SETTLE_LIMIT: Duration = Duration::from_secs(60);

/// `127.0.0.1:port`.
fn loopback(port: u16) -> SocketAddr {
    ([127, 0, 0, 1], port).into()
}

/// An instance's flags for the Sentinels on `ports`.
fn sentinel_args(ports: &[u16]) -> Vec<String> {
    let mut args = Vec::new();
    for port in ports {
        args.push("--redis-sentinel".to_owned());
        args.push(loopback(*port).to_string());
    }
    args.extend([
        "--redis-master-name".to_owned(),
        deploy::MASTER_NAME.to_owned(),
    ]);
    args
}

/// What `redis-cli` prints for `args` sent to the Redis or Sentinel on `port` (one
/// element a line, as it prints to a pipe); `None` if it cannot connect or Redis
/// answers an error.
fn redis_cli(port: u16, args: &[&str]) -> Option<String> {
    let out = Command::new(find_program("redis-cli")?)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.success() && !text.starts_with("ERR") && !text.contains("Could not connect"))
        .then_some(text)
}

/// The values of `key` in a list of `key`, `value` lines (`SENTINEL replicas` and
/// `SENTINEL sentinels`, as `redis-cli` prints them to a pipe).
fn fields<'a>(lines: &'a str, key: &str) -> Vec<&'a str> {
    let lines: Vec<&str> = lines.lines().map(str::trim).collect();
    lines
        .chunks_exact(2)
        .filter(|pair| pair[0] == key)
        .map(|pair| pair[1])
        .collect()
}

/// The replicas in `SENTINEL replicas`' answer that are up (flags `slave` alone, not
/// `s_down` or `disconnected`) and linked to their primary.
fn healthy_replicas(answer: &str) -> usize {
    let flags = fields(answer, "flags");
    let linked = fields(answer, "master-link-status");
    let up = flags.iter().filter(|f| **f == "slave").count();
    let ok = linked.iter().filter(|s| **s == "ok").count();
    up.min(ok)
}

/// Whether Redis on `port` answers PING.
fn redis_ping(port: u16) -> bool {
    let Ok(mut conn) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
    let mut answer = [0u8; 7];
    conn.write_all(b"PING\r\n").is_ok()
        && conn.read_exact(&mut answer).is_ok()
        && &answer == b"+PONG\r\n"
}

/// `program`'s path, or a hint to install it.
fn program(name: &str) -> anyhow::Result<PathBuf> {
    find_program(name).with_context(|| format!("{name} is missing: run `cargo xtask cluster` as root, or `sudo apt-get install -y redis-server nginx openssl`"))
}

/// A self-signed certificate for localhost and 127.0.0.1, valid 30 days.
fn self_signed(cert: &Path, key: &Path) -> anyhow::Result<()> {
    let status = Command::new(program("openssl")?)
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "30", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(key)
        .arg("-out")
        .arg(cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("cannot run openssl")?;
    anyhow::ensure!(status.success(), "openssl could not make a certificate");
    Ok(())
}

pub fn run_cluster(args: Args) -> anyhow::Result<()> {
    setup::cluster_tools()?;
    if !args.no_page {
        setup::page_tools()?;
        setup::build_page()?;
    }
    step("building the server (release)");
    run(cargo().args(["build", "--release", "-p", "server"]))?;
    let options = Options {
        instance_args: args.instance_args,
        sentinel: args.sentinel,
        ..Options::new(usize::from(args.instances), args.listen)
    };
    step(format!(
        "starting {}, {} instances and nginx (logs in {})",
        if options.sentinel {
            "a Redis primary, 2 replicas and 3 Sentinels"
        } else {
            "Redis"
        },
        options.instances,
        options.run_dir.display()
    ));
    let mut cluster = Cluster::start(&options)?;
    println!();
    println!(
        "  the cluster is up: open {}/ (a self-signed certificate: the browser asks once)",
        cluster.url
    );
    if options.sentinel {
        print_sentinel(&cluster)?;
    } else {
        println!("  Redis:             {}", cluster.redis_url);
    }
    for (n, addr) in cluster.instances.iter().enumerate() {
        println!("  instance {}:        http://{addr}", n + 1);
    }
    println!(
        "  the raw stream:    curl -kN {}/api/shared   (+1: curl -k -X POST {}/api/shared/increment)",
        cluster.url, cluster.url
    );
    println!("  logs and data:     {}", cluster.run_dir.display());
    println!("  stop it all with Ctrl-C");
    println!();
    let _ = std::io::stdout().flush();
    // Ctrl-C reaches every process of the terminal's group: Redis, the instances and
    // nginx stop themselves, as does this task. Until then, say when a piece stops (one
    // killed to see what happens, say); the rest runs on.
    while cluster.running() > 0 {
        std::thread::sleep(Duration::from_millis(500));
    }
    step("everything stopped");
    Ok(())
}

/// The Redis nodes and Sentinels of a cluster under Sentinel, and how to watch a
/// failover.
fn print_sentinel(cluster: &Cluster) -> anyhow::Result<()> {
    for (n, port) in cluster.redis_ports.iter().enumerate() {
        let role = if n == 0 { "primary" } else { "replica" };
        println!(
            "  Redis {}:           redis://127.0.0.1:{port}   ({role} at the start, pid {})",
            n + 1,
            cluster.redis_pid_on(*port)?
        );
    }
    let sentinels: Vec<String> = cluster
        .sentinel_ports
        .iter()
        .map(|p| loopback(*p).to_string())
        .collect();
    println!(
        "  Sentinels:         {}   (master name {})",
        sentinels.join(", "),
        deploy::MASTER_NAME
    );
    println!(
        "  a failover:        kill -9 {}   (the primary), then watch `curl -k {}/healthz` \
         name the new one within a few seconds",
        cluster.redis_pid, cluster.url
    );
    println!(
        "  which is primary:  redis-cli -p {} SENTINEL get-master-addr-by-name {}",
        cluster.sentinel_ports[0],
        deploy::MASTER_NAME
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn parse(argv: &[&str]) -> Result<Args, clap::Error> {
        Cli::try_parse_from(std::iter::once("cluster").chain(argv.iter().copied())).map(|c| c.args)
    }

    #[test]
    fn sentinel_is_a_flag_and_instance_flags_follow_the_double_dash() {
        let plain = parse(&[]).unwrap();
        assert!(!plain.sentinel);
        assert_eq!(plain.instances, 2);
        let args = parse(&[
            "--sentinel",
            "--instances",
            "3",
            "--",
            "--redis-wait-ms",
            "500",
        ])
        .unwrap();
        assert!(args.sentinel);
        assert_eq!(args.instances, 3);
        assert_eq!(args.instance_args, ["--redis-wait-ms", "500"]);
        assert!(parse(&["--sentinel=yes"]).is_err());
    }

    #[test]
    fn instances_follow_every_sentinel_by_the_deployed_master_name() {
        assert_eq!(
            sentinel_args(&[26379, 26380, 26381]),
            [
                "--redis-sentinel",
                "127.0.0.1:26379",
                "--redis-sentinel",
                "127.0.0.1:26380",
                "--redis-sentinel",
                "127.0.0.1:26381",
                "--redis-master-name",
                "sse-counter",
            ]
        );
    }

    /// `redis-cli SENTINEL replicas sse-counter` to a pipe (Redis 7.0), trimmed: one
    /// replica up, one down since the primary lost it.
    const REPLICAS: &str = "name\n127.0.0.1:7001\nip\n127.0.0.1\nport\n7001\nflags\nslave\n\
        master-link-status\nok\nname\n127.0.0.1:7002\nip\n127.0.0.1\nport\n7002\n\
        flags\ns_down,slave,disconnected\nmaster-link-status\nerr\n";

    #[test]
    fn a_replica_is_healthy_only_when_up_and_linked() {
        assert_eq!(fields(REPLICAS, "port"), ["7001", "7002"]);
        assert_eq!(healthy_replicas(REPLICAS), 1);
        let both = REPLICAS
            .replace("s_down,slave,disconnected", "slave")
            .replace("err", "ok");
        assert_eq!(healthy_replicas(&both), 2);
        // Up, but still syncing from the new primary.
        let syncing = both.replacen("\nok\n", "\nerr\n", 1);
        assert_eq!(healthy_replicas(&syncing), 1);
        assert_eq!(healthy_replicas(""), 0);
    }
}
