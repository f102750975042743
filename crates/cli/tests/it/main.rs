//! `rpctl` as people and pipelines run it, against a whole Release Pilot in the test process and
//! a local deployer, on the backend chosen by `RELEASE_PILOT_TEST_BACKEND`.

use std::{path::Path, process::Command};

use release_pilot::testing::{ADMIN_EMAIL, ADMIN_PASSWORD, TestSystem};
use rp_proto::{
    auth::v1::{self as auth_pb, auth_service_client::AuthServiceClient},
    release::v1::{self as pb, release_service_client::ReleaseServiceClient},
};
use rp_test_support::{TestEnv, authed};

const RPCTL: &str = env!("CARGO_BIN_EXE_rpctl");

struct Cli {
    system: TestSystem,
    credentials: tempfile::TempDir,
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Cli {
    fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, &[])
    }

    fn run_with(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        // The system under test runs in this runtime: block a worker of its own, not the runtime.
        let output = tokio::task::block_in_place(|| {
            Command::new(RPCTL)
                .args(args)
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env("RPCTL_AUTH_ENDPOINT", self.system.grpc_endpoint("auth"))
                .env("RPCTL_RELEASE_ENDPOINT", self.system.grpc_endpoint("release"))
                .env("RPCTL_NOTIFIER_ENDPOINT", self.system.grpc_endpoint("notifier"))
                .env("RPCTL_CREDENTIALS", self.credentials.path().join("credentials.json"))
                .envs(env.iter().copied())
                .output()
        })
        .expect("rpctl runs");
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    fn ok(&self, args: &[&str]) -> String {
        let run = self.run(args);
        assert_eq!(run.code, 0, "rpctl {args:?} failed:\n{}\n{}", run.stdout, run.stderr);
        run.stdout
    }
}

/// A deployer that accepts every step.
async fn deployer() -> String {
    let app = axum::Router::new().route("/deploy", axum::routing::post(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/deploy", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// A system with dev and prod, an app `shop` with webhook targets, and a second release manager.
async fn setup() -> (Cli, String) {
    let env = TestEnv::new();
    let system = TestSystem::start(env.config.clone(), &[]).await.unwrap().hold(env);
    let admin = system.admin_token().await;
    let mut release = ReleaseServiceClient::connect(system.grpc_endpoint("release")).await.unwrap();
    for (name, production) in [("dev", false), ("prod", true)] {
        release
            .create_environment(authed(
                &admin,
                pb::CreateEnvironmentRequest {
                    name: name.into(),
                    production,
                    required_approvals: i32::from(production),
                    ..Default::default()
                },
            ))
            .await
            .unwrap();
    }
    release
        .create_app(authed(&admin, pb::CreateAppRequest { name: "shop".into(), ..Default::default() }))
        .await
        .unwrap();
    let url = deployer().await;
    for env in ["dev", "prod"] {
        release
            .put_target(authed(
                &admin,
                pb::PutTargetRequest {
                    app: "shop".into(),
                    environment: env.into(),
                    driver: "webhook".into(),
                    driver_config_json: serde_json::json!({ "url": url }).to_string(),
                    default_strategy: "all_at_once".into(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap();
    }
    let mut auth = AuthServiceClient::connect(system.grpc_endpoint("auth")).await.unwrap();
    auth.create_user(authed(
        &admin,
        auth_pb::CreateUserRequest {
            email: "rm2@example.com".into(),
            display_name: String::new(),
            password: "second-manager-password".into(),
            roles: vec![rp_identity::Role::ReleaseManager.to_proto() as i32],
        },
    ))
    .await
    .unwrap();
    let second = system.login("rm2@example.com", "second-manager-password").await.unwrap();
    (Cli { system, credentials: tempfile::tempdir().unwrap() }, second)
}

fn git(repo: &Path, args: &[&str]) {
    let status = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .env("GIT_AUTHOR_NAME", "Dev")
        .env("GIT_AUTHOR_EMAIL", "dev@example.com")
        .env("GIT_COMMITTER_NAME", "Dev")
        .env("GIT_COMMITTER_EMAIL", "dev@example.com")
        .status()
        .unwrap();
    assert!(status.success(), "git {args:?}");
}

fn commit(repo: &Path, message: &str) {
    git(repo, &["commit", "--allow-empty", "-q", "-m", message]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_then_release_from_git_deploy_with_watch_status_and_rollback() {
    let (cli, _) = setup().await;
    let denied = cli.run(&["status"]);
    assert_ne!(denied.code, 0);
    assert!(denied.stderr.contains("not logged in"), "{}", denied.stderr);
    let wrong = cli.run(&["login", "--email", ADMIN_EMAIL, "--password", "nope"]);
    assert!(wrong.stderr.contains("not authenticated: invalid email or password"), "{}", wrong.stderr);
    assert!(
        cli.ok(&["login", "--email", ADMIN_EMAIL, "--password", ADMIN_PASSWORD]).contains("logged in as")
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode =
            std::fs::metadata(cli.credentials.path().join("credentials.json")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the stored tokens are private");
    }

    // A repository with a release tag and Conventional Commits after it.
    let repo = tempfile::tempdir().unwrap();
    git(repo.path(), &["init", "-q"]);
    commit(repo.path(), "feat: first storefront");
    git(repo.path(), &["tag", "v0.0.1"]);
    commit(repo.path(), "feat(cart): saved carts");
    commit(repo.path(), "fix: rounding\n\nCloses #12");
    commit(repo.path(), "docs: readme");
    let repo_path = repo.path().to_str().unwrap();
    let preview =
        cli.ok(&["release", "create", "--app", "shop", "--from-git", "--repo", repo_path, "--dry-run"]);
    assert!(preview.contains("→ 0.1.0") || preview.contains("0.1.0"), "{preview}");
    let created = cli.ok(&[
        "-o",
        "json",
        "release",
        "create",
        "--app",
        "shop",
        "--from-git",
        "--repo",
        repo_path,
        "--tag",
    ]);
    let created: serde_json::Value = serde_json::from_str(&created).unwrap();
    assert_eq!(created["version"], "0.1.0", "first release of the app: the initial version");
    assert_eq!(created["commits"], 3, "only the commits since the tag");
    assert!(created["changelog"].as_str().unwrap().contains("saved carts"));
    let tags = Command::new("git").arg("-C").arg(repo.path()).args(["tag", "--list"]).output().unwrap();
    assert!(String::from_utf8_lossy(&tags.stdout).contains("v0.1.0"));
    commit(repo.path(), "feat: wishlist");
    let next =
        cli.ok(&["-o", "json", "release", "create", "--app", "shop", "--from-git", "--repo", repo_path]);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&next).unwrap()["version"], "0.2.0");
    let nothing = cli.run(&["release", "create", "--app", "shop", "--version", "0.2.0"]);
    assert!(nothing.stderr.contains("already exists"), "{}", nothing.stderr);

    let watched = cli.run(&[
        "deploy",
        "--app",
        "shop",
        "--env",
        "dev",
        "--version",
        "0.1.0",
        "--strategy",
        "canary",
        "--steps",
        "50:1s",
        "--watch",
    ]);
    assert_eq!(watched.code, 0, "{}\n{}", watched.stdout, watched.stderr);
    assert!(watched.stdout.contains("shop 0.1.0 is live in dev"), "{}", watched.stdout);
    assert!(
        watched.stderr.contains("in_progress · step 1/2 · 50%"),
        "live progress per step: {}",
        watched.stderr
    );
    let second = cli.run(&[
        "-o",
        "json",
        "deploy",
        "--app",
        "shop",
        "--env",
        "dev",
        "--version",
        "0.2.0",
        "--verification",
        "1s",
        "--watch",
    ]);
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&second.stdout).unwrap()["state"], "succeeded");

    let status: serde_json::Value = serde_json::from_str(&cli.ok(&["-o", "json", "status"])).unwrap();
    let dev = status.as_array().unwrap().iter().find(|e| e["environment"] == "dev").unwrap();
    assert_eq!(dev["version"], "0.2.0");
    let table = cli.ok(&["status", "--app", "shop"]);
    assert!(table.contains("APP") && table.contains("0.2.0"), "{table}");

    let rolled =
        cli.ok(&["-o", "json", "rollback", "--app", "shop", "--env", "dev", "--reason", "broken cart"]);
    let rolled: serde_json::Value = serde_json::from_str(&rolled).unwrap();
    assert_eq!((rolled["state"].as_str(), rolled["version"].as_str()), (Some("rolled_back"), Some("0.2.0")));
    let status: serde_json::Value =
        serde_json::from_str(&cli.ok(&["-o", "json", "status", "--app", "shop"])).unwrap();
    assert_eq!(
        status.as_array().unwrap().iter().find(|e| e["environment"] == "dev").unwrap()["version"],
        "0.1.0"
    );

    cli.ok(&["logout"]);
    assert!(cli.run(&["status"]).stderr.contains("not logged in"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_promote_pause_and_abort_from_the_command_line() {
    let (cli, second_manager) = setup().await;
    cli.ok(&["login", "--email", ADMIN_EMAIL, "--password", ADMIN_PASSWORD]);
    cli.ok(&["release", "create", "--app", "shop", "--version", "1.0.0"]);
    let watched = cli.run(&[
        "deploy",
        "--app",
        "shop",
        "--env",
        "dev",
        "--version",
        "1.0.0",
        "--verification",
        "1s",
        "--watch",
    ]);
    assert_eq!(watched.code, 0, "{}", watched.stderr);

    let created: serde_json::Value = serde_json::from_str(&cli.ok(&[
        "-o",
        "json",
        "deploy",
        "--app",
        "shop",
        "--env",
        "prod",
        "--version",
        "1.0.0",
        "--strategy",
        "canary",
        "--steps",
        "10:10m,50:10m",
    ]))
    .unwrap();
    assert_eq!(created["state"], "awaiting_approval");
    let id = created["id"].as_str().unwrap();
    let own = cli.run(&["approve", id]);
    assert!(own.stderr.contains("four-eyes"), "{}", own.stderr);
    let approved = cli.run_with(
        &["-o", "json", "approve", id, "--comment", "ship it"],
        &[("RPCTL_TOKEN", second_manager.as_str())],
    );
    assert_eq!(approved.code, 0, "{}", approved.stderr);

    let holding =
        rp_test_support::eventually(std::time::Duration::from_secs(20), "the first step", || async {
            let shown: serde_json::Value = serde_json::from_str(&cli.ok(&["-o", "json", "get", id])).ok()?;
            (shown["weight"] == 10).then_some(shown)
        })
        .await;
    assert_eq!(holding["phase"], "analyzing");
    assert!(cli.ok(&["pause", id, "--reason", "checking dashboards"]).contains("paused"));
    assert!(cli.ok(&["resume", id]).contains("analyzing"));
    cli.ok(&["promote", id]);
    rp_test_support::eventually(std::time::Duration::from_secs(20), "the second step", || async {
        let shown: serde_json::Value = serde_json::from_str(&cli.ok(&["-o", "json", "get", id])).ok()?;
        (shown["weight"] == 50).then_some(())
    })
    .await;
    let aborted: serde_json::Value =
        serde_json::from_str(&cli.ok(&["-o", "json", "abort", id, "--reason", "metrics look off"])).unwrap();
    assert_eq!(
        (aborted["state"].as_str(), aborted["failure_reason"].as_str()),
        (Some("aborted"), Some("metrics look off"))
    );
    let again = cli.run(&["abort", id]);
    assert!(again.stderr.contains("not possible now"), "{}", again.stderr);

    // A pipeline uses an API token instead of a login.
    let mut auth = AuthServiceClient::connect(cli.system.grpc_endpoint("auth")).await.unwrap();
    let admin = cli.system.admin_token().await;
    let token = auth
        .create_api_token(authed(
            &admin,
            auth_pb::CreateApiTokenRequest {
                name: "ci".into(),
                roles: vec![rp_identity::Role::Developer.to_proto() as i32],
                ttl_seconds: 0,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .secret;
    let ci = cli.run_with(
        &["release", "create", "--app", "shop", "--version", "1.1.0"],
        &[("RPCTL_TOKEN", token.as_str()), ("RPCTL_CREDENTIALS", "/nonexistent")],
    );
    assert_eq!(ci.code, 0, "{}", ci.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_stops_the_escalation_of_an_incident() {
    use rp_proto::{
        events::v1 as events,
        notifier::v1::{self as notifier_pb, notifier_service_client::NotifierServiceClient},
    };
    let (cli, _) = setup().await;
    cli.ok(&["login", "--email", ADMIN_EMAIL, "--password", ADMIN_PASSWORD]);
    let admin = cli.system.admin_token().await;
    let mut notifier = NotifierServiceClient::connect(cli.system.grpc_endpoint("notifier")).await.unwrap();

    // The seeded escalation policy escalates critical incidents; the notifier's consumer takes
    // new events only, so publish incidents until one is escalated.
    let incident = rp_test_support::eventually(std::time::Duration::from_secs(30), "an escalation", || {
        let (system, admin, mut notifier) = (&cli.system, admin.clone(), notifier.clone());
        async move {
            let id = uuid::Uuid::now_v7().to_string();
            let payload = events::IncidentChanged {
                incident_id: id.clone(),
                app: "shop".into(),
                environment: "prod".into(),
                severity: "critical".into(),
                summary: "error rate above 2% on shop 2.0.0".into(),
                status: "open".into(),
                production: true,
                ..Default::default()
            };
            let event =
                rp_events::Event::new("rollback", "rp.incident.opened", format!("incidents/{id}"), &payload);
            system.app.bus.publish(&event).await.unwrap();
            for _ in 0..10 {
                let request =
                    notifier_pb::ListEscalationsRequest { status: String::new(), incident_id: id.clone() };
                let list = notifier.list_escalations(authed(&admin, request)).await.unwrap().into_inner();
                if !list.escalations.is_empty() {
                    return Some(id);
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            None
        }
    })
    .await;

    let out = cli.ok(&["-o", "json", "ack", "--incident", &incident, "--note", "looking"]);
    let acked: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (acked["incident_id"].as_str(), acked["status"].as_str()),
        (Some(incident.as_str()), Some("acknowledged"))
    );
    assert_eq!(acked["acknowledged_by"], format!("{ADMIN_EMAIL}: looking"), "who, and the note");
    let request = notifier_pb::GetEscalationRequest { id: acked["id"].as_str().unwrap().into() };
    let stored = notifier.get_escalation(authed(&admin, request)).await.unwrap().into_inner();
    assert!(stored.acknowledged_at.is_some());
    assert_eq!(stored.status, "acknowledged");

    // Nothing left to acknowledge for that incident: a clear error and a failing exit code.
    let again = cli.run(&["ack", "--incident", &incident]);
    assert_ne!(again.code, 0);
    assert!(again.stderr.contains("no active escalation"), "{}", again.stderr);
    let table = cli.ok(&["ack", acked["id"].as_str().unwrap()]);
    assert!(table.contains("acknowledged"), "{table}");
}
