//! `demo-app --version 1.2.0 --port 9001 [--error-rate 0.1] [--latency-ms 50]`

use std::net::{IpAddr, SocketAddr};

use clap::Parser;

#[derive(Parser)]
#[command(name = "demo-app", about = "A tiny service to deploy with Release Pilot")]
struct Args {
    /// The version this instance reports.
    #[arg(long)]
    version: String,
    #[arg(long, default_value_t = 9001)]
    port: u16,
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// Share of requests answered 500 (0.0-1.0); change at runtime with POST /admin/knobs.
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    /// Added latency per request, milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let knobs =
        demo_app::Knobs { error_rate: args.error_rate, latency_ms: args.latency_ms, health_failing: false };
    let app = demo_app::spawn(&args.version, SocketAddr::new(args.bind, args.port), knobs).await?;
    eprintln!("demo-app {} listening on http://{}", app.version, app.addr);
    tokio::signal::ctrl_c().await?;
    Ok(())
}
