//! `cargo xtask cluster [--instances N]`: installs what is missing, then starts Redis,
//! N instances sharing the counter through it, and nginx in front of them with TLS and
//! HTTP/2, all on loopback and configured from `deploy/`; prints the URL and stops them
//! all on Ctrl-C.
//!
//! [`Cluster`] is the same from code (the benchmark, say): [`Cluster::start`] with
//! [`Options`] (nginx left out if it is not wanted), and everything stops when it is
//! dropped.

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
        }
    }
}

/// Redis, the instances and nginx, running; each is stopped when this is dropped.
pub struct Cluster {
    /// `https://localhost:PORT`, nginx's address (where nothing listens without nginx).
    pub url: String,
    pub redis_url: String,
    /// Redis's process id, for measuring what it costs.
    pub redis_pid: u32,
    /// Each instance's own address (plain HTTP, straight to it).
    pub instances: Vec<SocketAddr>,
    /// Each instance's process id, in the order of `instances`.
    pub instance_pids: Vec<u32>,
    pub run_dir: PathBuf,
    /// Stopped in reverse: nginx first, Redis last.
    processes: Vec<Process>,
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
        std::fs::create_dir_all(dir.join("redis"))
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let mut cluster = Cluster {
            url: format!("https://localhost:{}", options.listen.port()),
            redis_url: String::new(),
            redis_pid: 0,
            instances: Vec::new(),
            instance_pids: Vec::new(),
            run_dir: dir.clone(),
            processes: Vec::new(),
        };

        let redis_port = deploy::free_port()?;
        cluster.redis_url = format!("redis://127.0.0.1:{redis_port}");
        let redis = deploy::redis_command(
            &program("redis-server")?,
            redis_port,
            &dir.join("redis"),
            &dir.join("redis.log"),
        )
        .spawn()
        .context("cannot start redis-server")?;
        cluster.redis_pid = redis.id();
        let mut redis = Process::new("redis-server", redis);
        let up = wait_until(&mut redis, &dir.join("redis.log"), || {
            redis_ping(redis_port)
        });
        cluster.processes.push(redis);
        up?;

        for n in 1..=options.instances {
            let log = dir.join(format!("instance-{n}.log"));
            let mut child = Command::new(&options.server)
                .args(["--addr", "127.0.0.1:0", "--redis-url", &cluster.redis_url])
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
        ..Options::new(usize::from(args.instances), args.listen)
    };
    step(format!(
        "starting Redis, {} instances and nginx (logs in {})",
        options.instances,
        options.run_dir.display()
    ));
    let mut cluster = Cluster::start(&options)?;
    println!();
    println!(
        "  the cluster is up: open {}/ (a self-signed certificate: the browser asks once)",
        cluster.url
    );
    println!("  Redis:             {}", cluster.redis_url);
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
