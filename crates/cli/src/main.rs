//! `rpctl`: the Release Pilot command line. Talks gRPC to the auth and release services.
// A command-line tool's output is stdout.
#![allow(clippy::print_stdout)]

mod git;
mod output;
mod session;
mod watch;

use std::{io::BufRead as _, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use output::Format;
use rp_proto::{notifier::v1 as notifier_pb, release::v1 as pb};
use session::{Connection, authed};

#[derive(Parser)]
#[command(name = "rpctl", version, about = "Release Pilot command line")]
struct Cli {
    #[command(flatten)]
    connection: Connection,
    /// Output for people (table) or scripts (json).
    #[arg(long, short, global = true, value_enum, default_value = "table")]
    output: Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Log in; the tokens are stored for the next commands.
    Login {
        #[arg(long)]
        email: String,
        /// Read from standard input when omitted.
        #[arg(long, env = "RPCTL_PASSWORD", hide_env_values = true)]
        password: Option<String>,
    },
    /// Forget the stored login and revoke its session.
    Logout,
    /// Releases.
    Release {
        #[command(subcommand)]
        command: ReleaseCommand,
    },
    /// Deploy a release to an environment.
    Deploy(DeployArgs),
    /// Approve (or reject) a deployment waiting for approval.
    Approve {
        id: String,
        #[arg(long)]
        reject: bool,
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Move a deployment to its next step (or to 100% with --full).
    Promote {
        id: String,
        #[arg(long)]
        full: bool,
    },
    /// Pause a deployment's progress.
    Pause {
        id: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Resume a paused deployment.
    Resume { id: String },
    /// Stop a deployment; traffic returns to the stable version.
    Abort {
        id: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Roll back a deployment (or what runs in --app/--env) to the last good release or --to.
    Rollback {
        /// Deployment id; or give --app and --env.
        id: Option<String>,
        #[arg(long)]
        app: Option<String>,
        #[arg(long)]
        env: Option<String>,
        /// An earlier successful version.
        #[arg(long)]
        to: Option<String>,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// What runs where: app × environment → version.
    Status {
        #[arg(long)]
        app: Option<String>,
    },
    /// Show one deployment.
    Get { id: String },
    /// Acknowledge an escalation: no later level pages anyone. Give the escalation id, or
    /// --incident for the active escalation of an incident.
    Ack {
        /// Escalation id.
        #[arg(required_unless_present = "incident", conflicts_with = "incident")]
        id: Option<String>,
        /// Incident id: acknowledge its active escalation.
        #[arg(long)]
        incident: Option<String>,
        #[arg(long, default_value = "")]
        note: String,
    },
}

#[derive(Subcommand)]
enum ReleaseCommand {
    /// Create a release with an explicit version, or from the Conventional Commits since the
    /// last release tag (--from-git).
    Create {
        #[arg(long)]
        app: String,
        #[arg(long, conflicts_with = "from_git")]
        version: Option<String>,
        /// Compute the version from the commits since the last tag matching --tag-prefix.
        #[arg(long)]
        from_git: bool,
        #[arg(long, default_value = ".")]
        repo: PathBuf,
        #[arg(long, default_value = "v")]
        tag_prefix: String,
        /// Pre-release identifier, e.g. rc → 1.3.0-rc.1.
        #[arg(long)]
        pre_release: Option<String>,
        #[arg(long, default_value = "")]
        image: String,
        #[arg(long, default_value = "")]
        digest: String,
        /// Show the version and changelog without creating anything.
        #[arg(long)]
        dry_run: bool,
        /// Tag HEAD with <tag-prefix><version> after creating the release.
        #[arg(long)]
        tag: bool,
    },
    /// Show a release.
    Get {
        #[arg(long)]
        app: String,
        version: String,
    },
}

#[derive(clap::Args)]
struct DeployArgs {
    #[arg(long)]
    app: String,
    #[arg(long)]
    env: String,
    #[arg(long)]
    version: String,
    /// all_at_once, canary, blue_green or hotfix (default: the target's).
    #[arg(long)]
    strategy: Option<String>,
    /// Canary steps, e.g. 5:10m,25:30m,75:1h (weight:hold).
    #[arg(long)]
    steps: Option<String>,
    /// Verification window after 100% (all_at_once, hotfix), e.g. 5m.
    #[arg(long)]
    verification: Option<humantime::Duration>,
    /// Blue-green: analysis at 0%, approval before the switch, how long blue stays warm.
    #[arg(long)]
    pre_promotion: Option<humantime::Duration>,
    #[arg(long)]
    approve_switch: bool,
    #[arg(long)]
    rollback_window: Option<humantime::Duration>,
    /// Follow the deployment live until it ends; the exit code says how it ended.
    #[arg(long)]
    watch: bool,
    /// Make retries safe: the same key returns the first deployment.
    #[arg(long)]
    idempotency_key: Option<String>,
}

/// Turns a gRPC status into a message for people.
pub fn status_error(status: tonic::Status) -> anyhow::Error {
    let code = match status.code() {
        tonic::Code::Unauthenticated => "not authenticated",
        tonic::Code::PermissionDenied => "refused",
        tonic::Code::NotFound => "not found",
        tonic::Code::InvalidArgument => "invalid",
        tonic::Code::FailedPrecondition => "not possible now",
        tonic::Code::AlreadyExists => "already exists",
        tonic::Code::Aborted => "changed concurrently",
        tonic::Code::Unavailable => "unavailable",
        tonic::Code::ResourceExhausted => "too many requests",
        _ => "error",
    };
    anyhow::anyhow!("{code}: {}", status.message())
}

fn parse_steps(text: &str) -> anyhow::Result<Vec<pb::CanaryStep>> {
    text.split(',')
        .map(|part| {
            let (weight, hold) = part
                .trim()
                .split_once(':')
                .with_context(|| format!("step {part:?} must be weight:hold, e.g. 25:30m"))?;
            let weight: i32 = weight
                .trim()
                .trim_end_matches('%')
                .parse()
                .with_context(|| format!("weight {weight:?} is not a number"))?;
            let hold: humantime::Duration =
                hold.trim().parse().with_context(|| format!("hold {hold:?} is not a duration"))?;
            Ok(pb::CanaryStep { weight, hold_seconds: Duration::from(hold).as_secs() as i64, analysis: true })
        })
        .collect()
}

fn seconds(duration: Option<humantime::Duration>) -> i64 {
    duration.map(|d| Duration::from(d).as_secs() as i64).unwrap_or(0)
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let connection = &cli.connection;
    let format = cli.output;
    match cli.command {
        Command::Login { email, password } => {
            let password = match password {
                Some(p) => p,
                None => {
                    eprint!("password for {email}: ");
                    let mut line = String::new();
                    std::io::stdin().lock().read_line(&mut line)?;
                    line.trim_end_matches(['\r', '\n']).to_owned()
                }
            };
            let credentials = session::login(connection, &email, &password).await?;
            match format {
                Format::Json => output::print_json(
                    &serde_json::json!({"email": credentials.email, "auth_endpoint": credentials.auth_endpoint}),
                )?,
                Format::Table => println!("logged in as {}", credentials.email),
            }
        }
        Command::Logout => {
            session::logout(connection).await?;
            if format == Format::Table {
                println!("logged out");
            }
        }
        Command::Release { command } => release(connection, format, command).await?,
        Command::Deploy(args) => return deploy(connection, format, args).await,
        Command::Status { app } => {
            let token = session::bearer(connection).await?;
            let status = session::release_client(connection)
                .await?
                .get_status(authed(&token, pb::GetStatusRequest { app: app.unwrap_or_default() })?)
                .await
                .map_err(status_error)?
                .into_inner();
            output::print_status(format, &status)?;
        }
        Command::Get { id } => {
            let token = session::bearer(connection).await?;
            let deployment = session::release_client(connection)
                .await?
                .get_deployment(authed(&token, pb::GetDeploymentRequest { id })?)
                .await
                .map_err(status_error)?
                .into_inner();
            output::print_deployment(format, &deployment)?;
        }
        Command::Ack { id, incident, note } => {
            let escalation = acknowledge(connection, id, incident, note).await?;
            output::print_escalation(format, &escalation)?;
        }
        command => {
            let deployment = operate(connection, command).await?;
            output::print_deployment(format, &deployment)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn operate(connection: &Connection, command: Command) -> anyhow::Result<pb::Deployment> {
    let token = session::bearer(connection).await?;
    let mut client = session::release_client(connection).await?;
    let action =
        |id: String, reason: String| pb::DeploymentActionRequest { id, reason, ..Default::default() };
    let response = match command {
        Command::Approve { id, reject, comment } => {
            let decision = if reject { "rejected" } else { "approved" };
            client
                .approve_deployment(authed(
                    &token,
                    pb::ApproveDeploymentRequest {
                        id,
                        decision: decision.into(),
                        comment,
                        ..Default::default()
                    },
                )?)
                .await
        }
        Command::Promote { id, full } => {
            client
                .promote_deployment(authed(
                    &token,
                    pb::PromoteDeploymentRequest { id, full, ..Default::default() },
                )?)
                .await
        }
        Command::Pause { id, reason } => client.pause_deployment(authed(&token, action(id, reason))?).await,
        Command::Resume { id } => client.resume_deployment(authed(&token, action(id, String::new()))?).await,
        Command::Abort { id, reason } => client.abort_deployment(authed(&token, action(id, reason))?).await,
        Command::Rollback { id, app, env, to, reason } => {
            if id.is_none() && (app.is_none() || env.is_none()) {
                bail!("give a deployment id, or --app and --env");
            }
            let request = pb::RollbackRequest {
                deployment_id: id.unwrap_or_default(),
                app: app.unwrap_or_default(),
                environment: env.unwrap_or_default(),
                target_version: to.unwrap_or_default(),
                reason,
                trigger: "manual".into(),
                ..Default::default()
            };
            client.rollback_deployment(authed(&token, request)?).await
        }
        _ => unreachable!("handled by run"),
    };
    Ok(response.map_err(status_error)?.into_inner())
}

/// Acknowledges an escalation, named or found by its incident.
async fn acknowledge(
    connection: &Connection,
    id: Option<String>,
    incident: Option<String>,
    note: String,
) -> anyhow::Result<notifier_pb::Escalation> {
    let token = session::bearer(connection).await?;
    let mut client = session::notifier_client(connection).await?;
    let id = match (id, incident) {
        (Some(id), _) => id,
        (None, Some(incident)) => {
            let request = notifier_pb::ListEscalationsRequest {
                status: "active".into(),
                incident_id: incident.clone(),
            };
            let list =
                client.list_escalations(authed(&token, request)?).await.map_err(status_error)?.into_inner();
            match list.escalations.into_iter().next() {
                Some(escalation) => escalation.id,
                None => bail!("incident {incident} has no active escalation"),
            }
        }
        (None, None) => bail!("give an escalation id or --incident"),
    };
    let request = notifier_pb::AcknowledgeEscalationRequest { id, note };
    Ok(client.acknowledge_escalation(authed(&token, request)?).await.map_err(status_error)?.into_inner())
}

async fn release(connection: &Connection, format: Format, command: ReleaseCommand) -> anyhow::Result<()> {
    let token = session::bearer(connection).await?;
    let mut client = session::release_client(connection).await?;
    match command {
        ReleaseCommand::Create {
            app,
            version,
            from_git,
            repo,
            tag_prefix,
            pre_release,
            image,
            digest,
            dry_run,
            tag,
        } => {
            let (commits, since) = if from_git {
                let since = git::last_release_tag(&repo, &tag_prefix)?;
                (git::commits_since(&repo, since.as_deref())?, since)
            } else {
                (Vec::new(), None)
            };
            if !from_git && version.is_none() {
                bail!("give --version, or --from-git to compute it from Conventional Commits");
            }
            if from_git && format == Format::Table {
                eprintln!(
                    "{} commit(s) since {}",
                    commits.len(),
                    since.as_deref().unwrap_or("the beginning")
                );
            }
            let request = pb::CreateReleaseRequest {
                app: app.clone(),
                version: version.unwrap_or_default(),
                commits,
                artifact_image: image,
                artifact_digest: digest,
                pre_release: pre_release.unwrap_or_default(),
                idempotency_key: String::new(),
            };
            if dry_run {
                let preview = client
                    .preview_release(authed(&token, request)?)
                    .await
                    .map_err(status_error)?
                    .into_inner();
                match format {
                    Format::Json => output::print_json(&serde_json::json!({
                        "version": preview.version, "previous_version": preview.previous_version, "bump": preview.bump,
                        "changelog": preview.changelog, "ignored_commits": preview.ignored_commits,
                    }))?,
                    Format::Table => println!(
                        "{} → {} ({})\n\n{}",
                        preview.previous_version,
                        preview.version,
                        preview.bump,
                        preview.changelog.trim_end()
                    ),
                }
                return Ok(());
            }
            let created =
                client.create_release(authed(&token, request)?).await.map_err(status_error)?.into_inner();
            if tag {
                git::tag(&repo, &format!("{tag_prefix}{}", created.version))?;
            }
            output::print_release(format, &created)?;
        }
        ReleaseCommand::Get { app, version } => {
            let release = client
                .get_release(authed(&token, pb::GetReleaseRequest { app, version, id: String::new() })?)
                .await
                .map_err(status_error)?
                .into_inner();
            output::print_release(format, &release)?;
        }
    }
    Ok(())
}

async fn deploy(connection: &Connection, format: Format, args: DeployArgs) -> anyhow::Result<ExitCode> {
    let token = session::bearer(connection).await?;
    let mut client = session::release_client(connection).await?;
    let request = pb::CreateDeploymentRequest {
        app: args.app,
        environment: args.env,
        version: args.version,
        release_id: String::new(),
        strategy: args.strategy.unwrap_or_default(),
        steps: match &args.steps {
            Some(text) => parse_steps(text)?,
            None => Vec::new(),
        },
        verification_seconds: seconds(args.verification),
        pre_promotion_seconds: seconds(args.pre_promotion),
        approval_before_switch: args.approve_switch,
        rollback_window_seconds: seconds(args.rollback_window),
        idempotency_key: args.idempotency_key.unwrap_or_default(),
    };
    let created =
        client.create_deployment(authed(&token, request)?).await.map_err(status_error)?.into_inner();
    if !args.watch {
        output::print_deployment(format, &created)?;
        return Ok(ExitCode::SUCCESS);
    }
    let stream = client
        .watch_deployment(authed(&token, pb::GetDeploymentRequest { id: created.id.clone() })?)
        .await
        .map_err(status_error)?
        .into_inner();
    let last = watch::follow(stream, format).await?;
    if format == Format::Json {
        output::print_deployment(format, &last)?;
    }
    Ok(match last.state.as_str() {
        "succeeded" => ExitCode::SUCCESS,
        _ => ExitCode::from(2),
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("rpctl: {err:#}");
            ExitCode::FAILURE
        }
    }
}
