//! `release-pilot demo`: the whole system on the embedded default, demo app v1 and v2 behind the
//! router, live traffic, and a canary of v2 that starts failing and is rolled back automatically
//! — shown in the terminal as it happens. Then it keeps running for the user to explore.

use std::{
    collections::HashMap,
    io::Write as _,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use demo_app::{DemoApp, Knobs};
use rp_config::Config;
use rp_proto::{
    release::v1::{self as release_pb, release_service_client::ReleaseServiceClient},
    rollback::v1::{self as rollback_pb, rollback_service_client::RollbackServiceClient},
};
use rp_runtime::CancellationToken;
use tonic::transport::Channel;

use crate::App;

/// The demo's app and environment.
pub const APP: &str = "shop";
pub const ENV: &str = "staging";
const DEMO_EMAIL: &str = "admin@demo.local";

/// What the demo does.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Requests per second the traffic generator sends through the router.
    pub requests_per_second: u32,
    /// Share of v2's answers that fail once it "breaks".
    pub error_rate: f64,
    /// Seconds of healthy canary before v2 breaks.
    pub healthy_seconds: u64,
    /// Stop after the rollback instead of running until Ctrl-C.
    pub exit_after_rollback: bool,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self { requests_per_second: 50, error_rate: 0.3, healthy_seconds: 7, exit_after_rollback: false }
    }
}

/// Per-version answers of the current second.
#[derive(Default)]
struct Tally {
    by_version: HashMap<String, (u64, u64)>,
}

struct Screen;

impl Screen {
    fn line(&self, text: impl AsRef<str>) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", text.as_ref());
        let _ = out.flush();
    }
}

/// `body` with a bearer token.
pub fn authed<T>(token: &str, body: T) -> anyhow::Result<tonic::Request<T>> {
    let mut request = tonic::Request::new(body);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse()?);
    Ok(request)
}

fn random_password() -> String {
    use std::fmt::Write as _;
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes).expect("the operating system provides randomness");
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// Runs the demo until Ctrl-C (or until the rollback, with `exit_after_rollback`).
pub async fn run(
    mut config: Config,
    options: DemoOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let (email, password, generated) = match (
        config.auth.bootstrap_admin.email.clone(),
        config.auth.bootstrap_admin.password.as_ref().map(|p| p.expose().to_owned()),
    ) {
        (Some(email), Some(password)) => (email, password, false),
        _ => {
            let password = random_password();
            config.auth.bootstrap_admin.email = Some(DEMO_EMAIL.into());
            config.auth.bootstrap_admin.password = Some(rp_config::Secret::new(password.clone()));
            (DEMO_EMAIL.to_owned(), password, true)
        }
    };
    let mut scratch = None;
    if !config.is_distributed_db() {
        // A fresh embedded store per demo: the demo's users and releases never mix with real data.
        let dir = std::env::temp_dir().join(format!("release-pilot-demo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        config.data_dir = dir.clone();
        scratch = Some(dir);
    }
    let result = show(config, options, shutdown, email, password, generated).await;
    if let Some(dir) = scratch {
        let _ = std::fs::remove_dir_all(dir);
    }
    result
}

async fn show(
    mut config: Config,
    options: DemoOptions,
    shutdown: CancellationToken,
    email: String,
    password: String,
    generated: bool,
) -> anyhow::Result<()> {
    let screen = Screen;
    // React quickly: the demo's point is the sub-second loop.
    config.router.stats_interval_ms = config.router.stats_interval_ms.min(250);
    config.rollback.evaluation_interval_ms = config.rollback.evaluation_interval_ms.min(250);

    screen.line("Release Pilot demo — starting every service on the embedded default…");
    let mut app = App::start(config, &[], shutdown.clone()).await?;
    let gateway = app.service("gateway").context("gateway not running")?.primary_addr;
    let router = app.service("router").context("router not running")?.primary_addr;
    let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
    let v1 = demo_app::spawn("1.0.0", any_port, Knobs::default()).await?;
    let v2 = demo_app::spawn("1.1.0", any_port, Knobs::default()).await?;
    screen.line(format!("  gateway   http://{gateway}   (API docs: http://{gateway}/api/docs)"));
    screen.line(format!("  router    http://{router}    (the demo app, through Release Pilot's router)"));
    screen.line(format!("  demo app  1.0.0 at {}, 1.1.0 at {}", v1.addr, v2.addr));
    if generated {
        screen.line(format!("  sign in   {email} / {password}   (generated for this demo)"));
    } else {
        screen.line(format!("  sign in   {email} (your RP_AUTH__BOOTSTRAP_ADMIN__* admin)"));
    }

    let token = login(&format!("http://{gateway}"), &email, &password).await?;
    let release_channel = Channel::from_shared(app.config.endpoints.release.clone())?.connect().await?;
    let mut release = ReleaseServiceClient::new(release_channel);
    let rollback_channel = Channel::from_shared(app.config.endpoints.rollback.clone())?.connect().await?;
    let mut rollback = RollbackServiceClient::new(rollback_channel);
    setup(&mut release, &mut rollback, &token, &v1, &v2).await?;

    // Traffic through the router, counted per version.
    let tally = Arc::new(Mutex::new(Tally::default()));
    spawn_traffic(format!("http://{router}/"), options.requests_per_second, tally.clone(), shutdown.clone());

    let first = deploy(&mut release, &token, "1.0.0", "all_at_once", vec![]).await?;
    screen.line("\n1.0.0 goes live (all at once)…");
    wait_for(&mut release, &token, &first.id, |d| d.state == "succeeded", &shutdown).await?;

    let canary_steps = vec![(20, 5), (50, 5), (80, 5)];
    let canary = deploy(&mut release, &token, "1.1.0", "canary", canary_steps).await?;
    screen.line(format!(
        "\nCanary of 1.1.0: 20% → 50% → 80% → 100%, 5 s per step. Policy: roll back when the error rate of \
         1.1.0 is above 5% over 5 s (at least 20 requests). 1.1.0 breaks after {} s.\n",
        options.healthy_seconds
    ));
    let started = Instant::now();
    let mut broken = false;
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let finished = loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = ticker.tick() => {}
        }
        if !broken && started.elapsed() >= Duration::from_secs(options.healthy_seconds) {
            v2.set(Knobs { error_rate: options.error_rate, ..Knobs::default() });
            broken = true;
            screen.line(format!(
                "  ⚠  1.1.0 starts failing {:.0}% of its requests",
                options.error_rate * 100.0
            ));
        }
        let deployment = release
            .get_deployment(authed(&token, release_pb::GetDeploymentRequest { id: canary.id.clone() })?)
            .await?
            .into_inner();
        let counts = std::mem::take(&mut tally.lock().unwrap_or_else(|p| p.into_inner()).by_version);
        let traffic: Vec<String> = ["1.0.0", "1.1.0"]
            .iter()
            .map(|v| {
                let (requests, errors) = counts.get(*v).copied().unwrap_or_default();
                let rate = if requests > 0 { errors as f64 * 100.0 / requests as f64 } else { 0.0 };
                format!("{v}: {requests:>3} req {rate:>5.1}% err")
            })
            .collect();
        screen.line(format!(
            "  t={:>3}s  {:<11} step {}/{}  weight {:>3}%  │ {}",
            started.elapsed().as_secs(),
            if deployment.phase.is_empty() { deployment.state.clone() } else { deployment.phase.clone() },
            (deployment.current_step + 1).min(deployment.steps.len() as i32),
            deployment.steps.len(),
            deployment.weight,
            traffic.join(" │ ")
        ));
        if !matches!(deployment.state.as_str(), "pending" | "awaiting_approval" | "in_progress") {
            break deployment;
        }
    };

    screen.line("");
    if finished.state == "rolled_back" {
        report_rollback(&screen, &mut rollback, &token, &finished).await?;
    } else {
        screen.line(format!("The canary ended {} ({}).", finished.state, finished.failure_reason));
    }
    let endpoints = &app.config.endpoints;
    screen.line(format!(
        "\nStill running. Explore:\n  curl http://{router}/                      (served by 1.0.0 again)\n  \
         http://{gateway}/api/docs                 (REST API; sign in with the account above)\n  \
         rpctl --auth-endpoint {} --release-endpoint {} login --email {email}\n\nCtrl-C stops the demo.",
        endpoints.auth, endpoints.release
    ));
    if options.exit_after_rollback {
        shutdown.cancel();
    }
    shutdown.cancelled().await;
    app.stop().await;
    Ok(())
}

/// Signs in through the gateway; returns the access token.
pub async fn login(gateway: &str, email: &str, password: &str) -> anyhow::Result<String> {
    let response = reqwest::Client::new()
        .post(format!("{gateway}/api/v1/auth/login"))
        .json(&serde_json::json!({ "email": email, "password": password }))
        .send()
        .await?;
    anyhow::ensure!(
        response.status().is_success(),
        "cannot sign in as {email}: {} (is RP_AUTH__BOOTSTRAP_ADMIN__PASSWORD the admin's current password?)",
        response.status()
    );
    let body: serde_json::Value = response.json().await?;
    Ok(body["access_token"].as_str().unwrap_or_default().to_owned())
}

/// Environment, app, router target, two releases (the second computed from its commits), and
/// the health policy the demo shows.
pub async fn setup(
    release: &mut ReleaseServiceClient<Channel>,
    rollback: &mut RollbackServiceClient<Channel>,
    token: &str,
    v1: &DemoApp,
    v2: &DemoApp,
) -> anyhow::Result<()> {
    release
        .create_environment(authed(
            token,
            release_pb::CreateEnvironmentRequest { name: ENV.into(), ..Default::default() },
        )?)
        .await?;
    release
        .create_app(authed(token, release_pb::CreateAppRequest { name: APP.into(), ..Default::default() })?)
        .await?;
    let driver = serde_json::json!({
        "route": {"path_prefix": "/"},
        "upstreams": {"1.0.0": [v1.addr.to_string()], "1.1.0": [v2.addr.to_string()]}
    });
    release
        .put_target(authed(
            token,
            release_pb::PutTargetRequest {
                app: APP.into(),
                environment: ENV.into(),
                driver: "router".into(),
                driver_config_json: driver.to_string(),
                default_strategy: "canary".into(),
                ..Default::default()
            },
        )?)
        .await?;
    let commit = |sha: &str, message: &str| release_pb::Commit {
        sha: sha.repeat(40 / sha.len()),
        message: message.into(),
        author: "demo".into(),
        timestamp: None,
    };
    release
        .create_release(authed(
            token,
            release_pb::CreateReleaseRequest {
                app: APP.into(),
                version: "1.0.0".into(),
                commits: vec![commit("a1", "feat: checkout")],
                ..Default::default()
            },
        )?)
        .await?;
    let second = release
        .create_release(authed(
            token,
            release_pb::CreateReleaseRequest {
                app: APP.into(),
                commits: vec![
                    commit("b2", "feat(cart): express checkout"),
                    commit("c3", "fix: rounding of totals"),
                ],
                ..Default::default()
            },
        )?)
        .await?
        .into_inner();
    anyhow::ensure!(second.version == "1.1.0", "expected 1.1.0 from the commits, got {}", second.version);
    let rules = serde_json::json!([
        {"name": "error rate above 5%", "metric": "error_rate", "source": {"kind": "router"},
         "operator": "gt", "threshold": 5.0, "window_seconds": 5, "for_seconds": 0, "min_samples": 20,
         "severity": "critical", "action": "rollback"},
        {"name": "p95 latency above 500 ms", "metric": "latency_p95", "source": {"kind": "router"},
         "operator": "gt", "threshold": 500.0, "window_seconds": 10, "for_seconds": 5, "min_samples": 20,
         "severity": "high", "action": "pause"}
    ]);
    rollback
        .put_policy(authed(
            token,
            rollback_pb::PutPolicyRequest {
                app: APP.into(),
                environment: ENV.into(),
                rules_json: rules.to_string(),
            },
        )?)
        .await?;
    Ok(())
}

/// Creates a deployment of `version` of the demo app.
pub async fn deploy(
    release: &mut ReleaseServiceClient<Channel>,
    token: &str,
    version: &str,
    strategy: &str,
    steps: Vec<(i32, i64)>,
) -> anyhow::Result<release_pb::Deployment> {
    let request = release_pb::CreateDeploymentRequest {
        app: APP.into(),
        environment: ENV.into(),
        version: version.into(),
        strategy: strategy.into(),
        steps: steps
            .into_iter()
            .map(|(weight, hold_seconds)| release_pb::CanaryStep { weight, hold_seconds, analysis: true })
            .collect(),
        verification_seconds: 1,
        ..Default::default()
    };
    Ok(release.create_deployment(authed(token, request)?).await?.into_inner())
}

async fn wait_for(
    release: &mut ReleaseServiceClient<Channel>,
    token: &str,
    id: &str,
    done: impl Fn(&release_pb::Deployment) -> bool,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    loop {
        let deployment = release
            .get_deployment(authed(token, release_pb::GetDeploymentRequest { id: id.into() })?)
            .await?
            .into_inner();
        if done(&deployment) {
            return Ok(());
        }
        anyhow::ensure!(
            !matches!(deployment.state.as_str(), "failed" | "aborted" | "rolled_back"),
            "deployment {id} ended {}: {}",
            deployment.state,
            deployment.failure_reason
        );
        tokio::select! {
            _ = shutdown.cancelled() => anyhow::bail!("stopped"),
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

fn spawn_traffic(url: String, per_second: u32, tally: Arc<Mutex<Tally>>, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let client = reqwest::Client::new();
        let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(per_second.max(1))));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let (client, url, tally) = (client.clone(), url.clone(), tally.clone());
            tokio::spawn(async move {
                let Ok(response) = client.get(&url).timeout(Duration::from_secs(2)).send().await else {
                    return;
                };
                let version = response
                    .headers()
                    .get("x-rp-version")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("?")
                    .to_owned();
                let failed = response.status().is_server_error();
                let mut tally = tally.lock().unwrap_or_else(|p| p.into_inner());
                let entry = tally.by_version.entry(version).or_default();
                entry.0 += 1;
                entry.1 += u64::from(failed);
            });
        }
    });
}

/// Prints the decision, its evidence, and the incident.
async fn report_rollback(
    screen: &Screen,
    rollback: &mut RollbackServiceClient<Channel>,
    token: &str,
    deployment: &release_pb::Deployment,
) -> anyhow::Result<()> {
    screen.line(format!("✔ Rolled back automatically: {}", deployment.failure_reason));
    // The incident is recorded right after traffic is restored.
    let mut incident = None;
    for _ in 0..50 {
        let list = rollback
            .list_incidents(authed(
                token,
                rollback_pb::ListIncidentsRequest { app: APP.into(), ..Default::default() },
            )?)
            .await?
            .into_inner();
        if let Some(found) = list.incidents.into_iter().find(|i| i.deployment_id == deployment.id) {
            incident = Some(found);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let Some(incident) = incident else {
        screen.line("  (the incident is not recorded yet)");
        return Ok(());
    };
    screen.line(format!(
        "  incident {} — {} — MTTR {:.2} s",
        incident.id, incident.severity, incident.mttr_seconds
    ));
    let first = incident.timeline.first().and_then(|t| t.at).map(|t| t.seconds as f64 + t.nanos as f64 / 1e9);
    for entry in &incident.timeline {
        let at = entry.at.map(|t| t.seconds as f64 + t.nanos as f64 / 1e9).unwrap_or_default();
        screen.line(format!("    +{:>6.3} s  {}", at - first.unwrap_or(at), entry.what));
    }
    let analysis = rollback
        .get_analysis(authed(
            token,
            rollback_pb::GetAnalysisRequest {
                deployment_id: deployment.id.clone(),
                breaches_only: true,
                measurements: 50,
                ..Default::default()
            },
        )?)
        .await?
        .into_inner();
    screen.line("  evidence (decision records):");
    for record in analysis.measurements.iter().filter(|m| incident.measurement_ids.contains(&m.id)) {
        screen.line(format!(
            "    {} — {} = {:.2} {} {} over {} requests → {}",
            record.rule,
            record.metric,
            record.value.unwrap_or_default(),
            record.operator,
            record.threshold,
            record.samples,
            record.verdict
        ));
        screen.line(format!("      query: {}", record.query));
    }
    Ok(())
}
