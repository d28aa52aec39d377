//! The deployment of several instances as `deploy/` describes it, for whoever starts
//! one on this machine: `cargo xtask cluster` and `cargo xtask bench --only cluster`
//! (`xtask/src/cluster.rs`), and the server's cluster and browser tests
//! (`server/tests/support/cluster.rs`). One rendering of `deploy/nginx.conf`, one way to
//! start Redis and nginx from `deploy/`, one search for their programs; each caller
//! keeps only how it waits for them (threads in xtask, tokio in the tests).
//!
//! std only: `cargo xtask` builds it without tokio.

use anyhow::Context as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The deployment files: `nginx.conf` (a template) and `redis.conf`.
pub fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// How nginx treats an instance that refuses connections: skipped for 2 s after one
/// failure (the README's failure table says so).
pub const UPSTREAM_FAILS: &str = "max_fails=1 fail_timeout=2s";

/// What fills the placeholders of `deploy/nginx.conf`.
#[derive(Debug, Clone)]
pub struct Nginx<'a> {
    /// `${LISTEN}`: where nginx serves HTTPS.
    pub listen: SocketAddr,
    /// `${INSTANCES}`: the upstream servers.
    pub instances: &'a [SocketAddr],
    /// `${CERT}`, `${KEY}`: PEM files.
    pub cert: &'a Path,
    pub key: &'a Path,
    /// `${STATIC_DIR}`: the built page.
    pub static_dir: &'a Path,
    /// `${RUN_DIR}`: nginx's pid, logs and temp files.
    pub run_dir: &'a Path,
}

impl Nginx<'_> {
    /// `deploy/nginx.conf` with every placeholder filled in; an error names one it
    /// does not know.
    pub fn render(&self) -> anyhow::Result<String> {
        let path = deploy_dir().join("nginx.conf");
        let template = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        self.fill(&template)
    }

    fn fill(&self, template: &str) -> anyhow::Result<String> {
        let servers: Vec<String> = self
            .instances
            .iter()
            .map(|a| format!("server {a} {UPSTREAM_FAILS};"))
            .collect();
        let conf = template
            .replace("${LISTEN}", &self.listen.to_string())
            .replace("${INSTANCES}", &servers.join("\n        "))
            .replace("${CERT}", &self.cert.display().to_string())
            .replace("${KEY}", &self.key.display().to_string())
            .replace("${STATIC_DIR}", &self.static_dir.display().to_string())
            .replace("${RUN_DIR}", &self.run_dir.display().to_string());
        if let Some(line) = conf.lines().find(|l| l.contains("${")) {
            anyhow::bail!("deploy/nginx.conf has a placeholder that is not filled in: {line}");
        }
        Ok(conf)
    }

    /// nginx in the foreground with the configuration written to `conf`, its
    /// prefix and error log in `run_dir`.
    pub fn command(&self, program: &Path, conf: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.arg("-p")
            .arg(self.run_dir)
            .arg("-e")
            .arg(self.run_dir.join("error.log"))
            .arg("-c")
            .arg(conf)
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null());
        cmd
    }
}

/// `redis-server` with `deploy/redis.conf` on `127.0.0.1:port`, its data in `dir` and
/// its log in `log`.
pub fn redis_command(program: &Path, port: u16, dir: &Path, log: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.arg(deploy_dir().join("redis.conf"))
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(log)
        .stdin(Stdio::null());
    cmd
}

/// Where `program` is: on PATH, or in the sbin directories that a user's PATH often
/// lacks (Debian installs nginx in /usr/sbin).
pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// A loopback port that nothing listens on at this moment (another program may take
/// it before the one it is for binds it: callers that can, try again).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nginx<'a>(instances: &'a [SocketAddr]) -> Nginx<'a> {
        Nginx {
            listen: ([127, 0, 0, 1], 8443).into(),
            instances,
            cert: Path::new("/run/cert.pem"),
            key: Path::new("/run/key.pem"),
            static_dir: Path::new("/page"),
            run_dir: Path::new("/run"),
        }
    }

    #[test]
    fn the_deployed_template_is_filled_in_whole() {
        let instances: [SocketAddr; 2] =
            [([127, 0, 0, 1], 3001).into(), ([127, 0, 0, 1], 3002).into()];
        let conf = nginx(&instances).render().unwrap();
        assert!(conf.contains("server 127.0.0.1:3001 max_fails=1 fail_timeout=2s;"));
        assert!(conf.contains("server 127.0.0.1:3002 max_fails=1 fail_timeout=2s;"));
        assert!(conf.contains("listen 127.0.0.1:8443 ssl http2;"), "{conf}");
        assert!(conf.contains("ssl_certificate /run/cert.pem;"), "{conf}");
        assert!(!conf.contains("${"));
    }

    #[test]
    fn an_unknown_placeholder_is_an_error_naming_it() {
        let err = nginx(&[]).fill("a ${LISTEN};\nb ${NEW};").unwrap_err();
        assert!(err.to_string().contains("b ${NEW};"), "{err}");
    }
}
