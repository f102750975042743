//! `release-pilot`: serve, migrate, config dump, healthcheck.

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
