//! `floor`: the CPU cost of one tick-sized (~70-byte) `write` to a loopback TCP socket
//! on the machine it runs on, the physical limit per delivered event that a server is
//! measured against.
//!
//! It opens `--pairs` connected socket pairs, writes one tick frame to each in turn
//! from one thread (Nagle off, as a streaming server would), and divides that thread's
//! CPU time (from the scheduler, in ns) by the writes. The receiving ends are read by a
//! tokio runtime on another thread, as a client's event loop would, so each write pays
//! the wake-up of a waiting reader just as a server's does.

use anyhow::Context as _;
use bench::report::Floor;
use clap::Parser;
use std::io::Write as _;
use std::net::{TcpListener, TcpStream};
use std::time::Instant;
use tokio::io::AsyncReadExt as _;

/// Measures the CPU cost of one small write to a loopback TCP socket.
#[derive(Debug, Parser)]
#[command(name = "floor", version)]
struct Cli {
    /// Connected socket pairs written to round-robin.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=8000))]
    pairs: u64,
    /// Writes to measure (after one warm-up write per socket).
    #[arg(long, default_value_t = 200_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    writes: u64,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    bench::raise_nofile_limit().context("cannot raise the open-files limit")?;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let mut writers = Vec::new();
    let mut readers = Vec::new();
    for _ in 0..cli.pairs {
        let w = TcpStream::connect(addr).context("cannot open a socket pair")?;
        let (r, _) = listener.accept()?;
        w.set_nodelay(true)?;
        r.set_nonblocking(true)?;
        writers.push(w);
        readers.push(r);
    }
    let reader = std::thread::spawn(move || read_all(readers));
    // A tick as sse-counter frames it: `id` and JSON data with a 16-digit timestamp.
    let frame = b"id: 123456\ndata: {\"num\":123456,\"sent_at_us\":1760000000000000}\n\n";
    for w in &mut writers {
        w.write_all(frame)?;
    }
    let cpu0 = bench::procfs::thread_cpu_ns()?;
    let wall0 = Instant::now();
    let n = writers.len();
    for i in 0..cli.writes as usize {
        writers[i % n].write_all(frame)?;
    }
    let cpu_ns = bench::procfs::thread_cpu_ns()? - cpu0;
    let wall = wall0.elapsed();
    drop(writers);
    reader
        .join()
        .map_err(|_| anyhow::anyhow!("the reader thread panicked"))??;
    let floor = Floor {
        pairs: cli.pairs,
        writes: cli.writes,
        bytes_per_write: frame.len() as u64,
        cpu_us_per_write: cpu_ns as f64 / 1000.0 / cli.writes as f64,
        wall_us_per_write: wall.as_secs_f64() * 1e6 / cli.writes as f64,
    };
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&floor)?);
    } else {
        println!(
            "one {}-byte write to a loopback TCP socket: {:.2} µs CPU ({:.2} µs wall), {} writes over {} sockets",
            floor.bytes_per_write, floor.cpu_us_per_write, floor.wall_us_per_write, floor.writes, floor.pairs
        );
    }
    Ok(())
}

/// Reads every receiving end until its writer closes, as a client's event loop would.
fn read_all(readers: Vec<TcpStream>) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for r in readers {
            let mut r = tokio::net::TcpStream::from_std(r)?;
            tasks.spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = r.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        anyhow::Ok(())
    })
}
