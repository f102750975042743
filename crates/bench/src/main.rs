//! `rp-bench`: the benchmarks that need Release Pilot in-process or synthetic load. Driven by
//! `scripts/bench.sh` (`just bench`), which writes the results to `bench/results/`.
//!
//! - `reaction`: time from a failing canary's error rate crossing its rule's threshold to all
//!   traffic on the stable version, as the traffic generator sees it;
//! - `router`: the router alone with a fixed 90/10 route, for the comparison with nginx;
//! - `scale`: 1,000 canaries' traffic fed to one rollback replica (a separate process);
//! - `notify`: deployment events to a webhook receiver through the notifier, latency and rate.

mod notify;
mod reaction;
mod router;
mod scale;

/// mimalloc instead of glibc malloc: under load, allocation was about a fifth of the CPU the
/// services used (perf; see docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "rp-bench", about = "Release Pilot benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Rollback reaction time over several failing canaries.
    Reaction {
        #[arg(long, default_value_t = 20)]
        runs: usize,
        /// Concurrent request loops of the traffic generator.
        #[arg(long, default_value_t = 8)]
        workers: usize,
        /// Result file (JSON).
        #[arg(long)]
        out: PathBuf,
    },
    /// Run the router alone with a fixed route: `weight`% to `canary`, the rest to `stable`.
    Router {
        #[arg(long)]
        listen: std::net::SocketAddr,
        #[arg(long)]
        admin: std::net::SocketAddr,
        #[arg(long)]
        stable: String,
        #[arg(long)]
        canary: String,
        #[arg(long, default_value_t = 10)]
        weight: i32,
    },
    /// Deployment events to a local webhook receiver through the notifier: latency of `events`
    /// paced events (200/s), then deliveries per second for `events` more. Backend from RP_….
    Notify {
        #[arg(long, default_value_t = 1000)]
        events: usize,
        #[arg(long)]
        out: PathBuf,
    },
    /// Feed `canaries` running canaries' traffic at 1 s resolution to a rollback replica and
    /// measure its CPU, memory and decision lag. Configuration (bus, database) from RP_… like
    /// the replica's own.
    Scale {
        #[arg(long, default_value_t = 1000)]
        canaries: usize,
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// The rollback replica's process id.
        #[arg(long)]
        pid: u32,
        /// The replica's admin URL (for /metrics).
        #[arg(long)]
        admin: String,
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Reaction { runs, workers, out } => reaction::run(runs, workers, &out).await,
            Command::Router { listen, admin, stable, canary, weight } => {
                router::run(listen, admin, stable, canary, weight).await
            }
            Command::Notify { events, out } => notify::run(events, &out).await,
            Command::Scale { canaries, seconds, pid, admin, out } => {
                scale::run(canaries, seconds, pid, &admin, &out).await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Writes the report `value` to `path` as pretty JSON and to stdout, where `scripts/bench.sh`
/// shows it.
#[allow(clippy::print_stdout)] // stdout is this tool's output
fn write_report(path: &std::path::Path, value: &serde_json::Value) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let pretty = serde_json::to_string_pretty(value)?;
    std::fs::write(path, format!("{pretty}\n"))?;
    println!("{pretty}");
    Ok(())
}

/// The `q` quantile (0-1) of `values` (nearest rank).
fn quantile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}
