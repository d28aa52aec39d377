//! Reads a process's CPU time and resident memory from `/proc`, Linux only.

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Clock ticks per second of `utime`/`stime` in `/proc/PID/stat`. Linux exports
/// these in USER_HZ, which is 100 on every architecture it runs on; reading it with
/// `sysconf(_SC_CLK_TCK)` would need unsafe code for a constant.
pub const CLOCK_TICKS_PER_SEC: u64 = 100;

/// One look at a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcSample {
    /// User plus system CPU of the whole process, threads that have exited included,
    /// in microseconds at clock-tick (10 ms) resolution.
    pub cpu_us_ticks: u64,
    /// The same from the scheduler, summed over the live threads, in nanoseconds:
    /// precise, but misses threads that exited between two samples.
    pub cpu_ns_sched: Option<u64>,
    /// Resident set size, in KiB.
    pub rss_kib: u64,
}

impl ProcSample {
    /// CPU microseconds between two samples: from the scheduler when both have it,
    /// unless its figure falls well short of the ticks' (a thread exited in between and
    /// took its time with it), else from the ticks.
    pub fn cpu_us_since(&self, before: &ProcSample) -> f64 {
        let ticks = self.cpu_us_ticks.saturating_sub(before.cpu_us_ticks) as f64;
        match (self.cpu_ns_sched, before.cpu_ns_sched) {
            (Some(after), Some(b)) if after >= b => {
                let sched = (after - b) as f64 / 1000.0;
                // Ticks are sampled, so they stray by a few ticks either way; a shortfall
                // beyond 10 % and 50 ms is a thread gone, not sampling noise.
                if sched < 0.9 * ticks - 50_000.0 {
                    ticks
                } else {
                    sched
                }
            }
            _ => ticks,
        }
    }
}

/// Samples process `pid`.
pub fn sample(pid: u32) -> anyhow::Result<ProcSample> {
    let dir = Path::new("/proc").join(pid.to_string());
    let stat = std::fs::read_to_string(dir.join("stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat (is the process running?)"))?;
    let status = std::fs::read_to_string(dir.join("status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    let (utime, stime) = parse_stat_cpu(&stat).context("unexpected /proc/PID/stat format")?;
    // An exited process not yet reaped (a zombie) still has a status, without VmRSS.
    let rss_kib = parse_status_kib(&status, "VmRSS")
        .with_context(|| format!("no VmRSS in /proc/{pid}/status: the process has exited"))?;
    Ok(ProcSample {
        cpu_us_ticks: (utime + stime) * (1_000_000 / CLOCK_TICKS_PER_SEC),
        cpu_ns_sched: sched_sum(&dir.join("task")),
        rss_kib,
    })
}

/// The scheduler's run time summed over every thread under `task_dir`.
fn sched_sum(task_dir: &Path) -> Option<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(task_dir).ok()? {
        let path = entry.ok()?.path().join("schedstat");
        // A thread may exit between the listing and the read: skip it.
        if let Ok(text) = std::fs::read_to_string(path) {
            total += parse_schedstat_ns(&text)?;
        }
    }
    Some(total)
}

/// The calling thread's CPU time in nanoseconds (for the floor, which writes from one
/// thread).
pub fn thread_cpu_ns() -> anyhow::Result<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat")
        .context("cannot read /proc/thread-self/schedstat")?;
    parse_schedstat_ns(&text).context("unexpected schedstat format")
}

/// `utime` and `stime` (fields 14 and 15) of `/proc/PID/stat`, in clock ticks. The
/// command name (field 2) sits in parentheses and may hold spaces or parentheses
/// itself, so fields are counted from the last `)`.
pub fn parse_stat_cpu(stat: &str) -> Option<(u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After the name come field 3 (state) onwards: utime is field 14, the 12th here.
    let utime = fields.nth(11)?.parse().ok()?;
    let stime = fields.next()?.parse().ok()?;
    Some((utime, stime))
}

/// A `Name:   1234 kB` line of `/proc/PID/status`, in KiB.
pub fn parse_status_kib(status: &str, name: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(':')?;
        let mut parts = value.split_whitespace();
        let n = parts.next()?.parse().ok()?;
        (parts.next()? == "kB").then_some(n)
    })
}

/// The first field of a `schedstat` file: time spent running, in nanoseconds.
pub fn parse_schedstat_ns(text: &str) -> Option<u64> {
    text.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_cpu_fields_are_counted_after_the_name() {
        // A real line, with a command name holding a space and a parenthesis.
        let stat = "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 3156 0 0 0 \
                    1234 567 0 0 20 0 3 0 123456 123456789 2048 18446744073709551615 \
                    1 1 0 0 0 0 0 4096 17634 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(parse_stat_cpu(stat), Some((1234, 567)));
        assert_eq!(parse_stat_cpu("garbage"), None);
        assert_eq!(parse_stat_cpu("1 (x) S 1 2"), None);
    }

    #[test]
    fn status_lines_are_read_in_kib() {
        let status = "Name:\tsse-counter\nVmPeak:\t  999 kB\nVmRSS:\t   20480 kB\nThreads:\t3\n";
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(20480));
        assert_eq!(parse_status_kib(status, "VmPeak"), Some(999));
        assert_eq!(parse_status_kib(status, "Threads"), None);
        assert_eq!(parse_status_kib(status, "VmSwap"), None);
    }

    #[test]
    fn schedstat_gives_nanoseconds() {
        assert_eq!(parse_schedstat_ns("123456789 5000 42\n"), Some(123_456_789));
        assert_eq!(parse_schedstat_ns(""), None);
    }

    #[test]
    fn this_process_can_be_sampled() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_kib > 0);
        assert!(s.cpu_ns_sched.is_some());
        assert!(thread_cpu_ns().unwrap() > 0);
    }

    #[test]
    fn cpu_prefers_the_scheduler_unless_a_thread_left() {
        let at = |ticks_ms: u64, sched_ms: u64| ProcSample {
            cpu_us_ticks: ticks_ms * 1000,
            cpu_ns_sched: Some(sched_ms * 1_000_000),
            rss_kib: 0,
        };
        // Close figures: the precise one wins.
        assert_eq!(at(1_010, 1_003).cpu_us_since(&at(0, 0)), 1_003_000.0);
        // The scheduler's sum fell far short: a thread exited, so trust the ticks.
        assert_eq!(at(5_000, 1_000).cpu_us_since(&at(0, 0)), 5_000_000.0);
        let no_sched = ProcSample {
            cpu_ns_sched: None,
            ..at(300, 0)
        };
        assert_eq!(no_sched.cpu_us_since(&at(100, 0)), 200_000.0);
    }
}
