//! `release-pilot`: serve, migrate, config dump, healthcheck, openapi, demo.

/// mimalloc instead of glibc malloc: under load, allocation was about a fifth of the CPU the
/// services used (perf; see docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use release_pilot::{App, Role};
use rp_config::Config;
use rp_runtime::CancellationToken;

#[derive(Parser)]
#[command(name = "release-pilot", version, about = "Release management control plane")]
struct Cli {
    /// TOML configuration file (environment variables RP_… override it).
    #[arg(long, short, global = true, env = "RP_CONFIG_FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run services (all of them unless --role is given). The default command.
    Serve {
        /// Run only this role; repeat for several.
        #[arg(long = "role", value_enum)]
        roles: Vec<Role>,
    },
    /// Apply database migrations and exit.
    Migrate {
        #[arg(long = "role", value_enum)]
        roles: Vec<Role>,
    },
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Print the HTTP API's OpenAPI 3.1 document.
    Openapi,
    /// Run everything with demo app v1 and v2 behind the router and live traffic; a canary of v2
    /// starts failing and is rolled back automatically, shown live. Then keeps running.
    Demo {
        /// Requests per second through the router.
        #[arg(long, default_value_t = 50)]
        rps: u32,
        /// Share of v2's requests that fail once it breaks (0-1).
        #[arg(long, default_value_t = 0.3)]
        error_rate: f64,
        /// Seconds of healthy canary before v2 breaks.
        #[arg(long, default_value_t = 7)]
        healthy_seconds: u64,
        /// Exit after the rollback instead of running until Ctrl-C.
        #[arg(long)]
        exit: bool,
    },
    /// Exit 0 when every role's admin /ready endpoint answers 200 (for container health checks).
    Healthcheck {
        #[arg(long = "role", value_enum)]
        roles: Vec<Role>,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration, secrets redacted.
    Dump,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Some(Command::Openapi)) {
        // Needs no configuration: the document describes the code.
        return print_openapi();
    }
    let config = match Config::from_process_env(cli.config.as_deref()) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(cli.command.unwrap_or(Command::Serve { roles: Vec::new() }), config))
}

async fn run(command: Command, config: Config) -> ExitCode {
    match command {
        Command::Config { command: ConfigCommand::Dump } => {
            // The dump is the command's output, not a log line.
            #[allow(clippy::print_stdout)]
            {
                print!("{}", config.dump());
            }
            ExitCode::SUCCESS
        }
        Command::Openapi => print_openapi(),
        Command::Demo { rps, error_rate, healthy_seconds, exit } => {
            if !(0.0..=1.0).contains(&error_rate) || rps == 0 {
                eprintln!("error: --error-rate must be within 0-1 and --rps above 0");
                return ExitCode::from(2);
            }
            // Quiet logs unless asked: the demo's output is the show.
            let mut telemetry_config = config.telemetry.clone();
            if telemetry_config.log_filter == rp_config::TelemetryConfig::default().log_filter {
                telemetry_config.log_filter = "error".into();
            }
            let telemetry = match rp_telemetry::init(&telemetry_config) {
                Ok(guard) => guard,
                Err(err) => return fail(&err),
            };
            let shutdown = CancellationToken::new();
            rp_runtime::shutdown::cancel_on_signal(shutdown.clone());
            let options = release_pilot::demo::DemoOptions {
                requests_per_second: rps,
                error_rate,
                healthy_seconds,
                exit_after_rollback: exit,
            };
            let result = release_pilot::demo::run(config, options, shutdown).await;
            telemetry.shutdown();
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => fail(&err),
            }
        }
        Command::Healthcheck { roles } => {
            let failing = release_pilot::healthcheck(&config, &roles).await;
            for (role, reason) in &failing {
                eprintln!("{} not ready: {reason}", role.name());
            }
            if failing.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
        Command::Migrate { roles } => {
            let _telemetry = match rp_telemetry::init(&config.telemetry) {
                Ok(guard) => guard,
                Err(err) => return fail(&err),
            };
            match release_pilot::migrate(&config, &roles).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => fail(&err),
            }
        }
        Command::Serve { roles } => {
            let telemetry = match rp_telemetry::init(&config.telemetry) {
                Ok(guard) => guard,
                Err(err) => return fail(&err),
            };
            let shutdown = CancellationToken::new();
            rp_runtime::shutdown::cancel_on_signal(shutdown.clone());
            let started = std::time::Instant::now();
            let app = match App::start(config, &roles, shutdown).await {
                Ok(app) => app,
                Err(err) => return fail(&err),
            };
            if let Some(gateway) = app.service("gateway") {
                tracing::info!(
                    url = %format!("http://{}", gateway.primary_addr),
                    ready_in_ms = started.elapsed().as_millis() as u64,
                    "release pilot is ready"
                );
            }
            let result = app.run_until_stopped().await;
            telemetry.shutdown();
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => fail(&err),
            }
        }
    }
}

fn print_openapi() -> ExitCode {
    match rp_gateway::openapi().to_pretty_json() {
        Ok(json) => {
            // The document is the command's output.
            #[allow(clippy::print_stdout)]
            {
                println!("{json}");
            }
            ExitCode::SUCCESS
        }
        Err(err) => fail(&err),
    }
}

fn fail(err: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("error: {err:#}");
    ExitCode::FAILURE
}
