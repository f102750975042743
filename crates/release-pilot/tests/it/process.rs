//! The `release-pilot` binary as users run it.

use std::{
    collections::HashMap,
    process::{Child, Command, Stdio},
    time::Duration,
};

use rp_test_support::{TestEnv, eventually, free_port};
use tokio_util::sync::CancellationToken;

const BINARY: &str = env!("CARGO_BIN_EXE_release-pilot");

/// The test environment's variables plus fixed ports for the gateway and its admin port.
fn process_env(env: &TestEnv, extra: &[(&str, &str)]) -> (HashMap<String, String>, u16, u16) {
    let mut vars = env.vars.clone();
    let (http, admin) = (free_port(), free_port());
    vars.insert("RP_GATEWAY__HTTP_ADDR".into(), format!("127.0.0.1:{http}"));
    vars.insert("RP_GATEWAY__ADMIN_ADDR".into(), format!("127.0.0.1:{admin}"));
    vars.insert("RP_AUTH__BOOTSTRAP_ADMIN__EMAIL".into(), "admin@example.com".into());
    vars.insert("RP_AUTH__BOOTSTRAP_ADMIN__PASSWORD".into(), "admin-password-for-tests".into());
    vars.insert("RP_TELEMETRY__LOG_FORMAT".into(), "json".into());
    for (key, value) in extra {
        vars.insert((*key).into(), (*value).into());
    }
    (vars, http, admin)
}

fn spawn(vars: &HashMap<String, String>, args: &[&str]) -> Child {
    Command::new(BINARY)
        .args(args)
        .env_clear()
        .envs(vars)
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("release-pilot binary runs")
}

async fn wait_ready(admin_port: u16) {
    let client = reqwest::Client::new();
    eventually(Duration::from_secs(30), "the gateway to be ready", || {
        let client = client.clone();
        async move {
            let response = client.get(format!("http://127.0.0.1:{admin_port}/ready")).send().await.ok()?;
            response.status().is_success().then_some(())
        }
    })
    .await;
}

fn terminate(child: &Child) {
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

async fn wait_exit(mut child: Child, within: Duration) -> (std::process::ExitStatus, String) {
    let status = eventually(within, "the process to exit", || {
        let exited = child.try_wait().unwrap();
        async move { exited }
    })
    .await;
    let mut output = String::new();
    use std::io::Read as _;
    if let Some(mut err) = child.stderr.take() {
        err.read_to_string(&mut output).unwrap();
    }
    if let Some(mut out) = child.stdout.take() {
        out.read_to_string(&mut output).unwrap();
    }
    (status, output)
}

#[tokio::test]
async fn config_dump_prints_the_effective_configuration_without_secrets() {
    let env = TestEnv::new();
    let (mut vars, ..) = process_env(&env, &[]);
    vars.insert("RP_DATABASE__URL".into(), "postgres://rp:db-secret-pw@db.internal:5432/rp".into());
    let output = Command::new(BINARY).args(["config", "dump"]).env_clear().envs(&vars).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let dump = String::from_utf8(output.stdout).unwrap();
    assert!(dump.contains("postgres://rp:***@db.internal:5432/rp"), "{dump}");
    assert!(!dump.contains("db-secret-pw") && !dump.contains("admin-password-for-tests"), "{dump}");
    assert!(dump.contains("[gateway]") && dump.contains("max_connections"));

    let bad = Command::new(BINARY)
        .args(["config", "dump"])
        .env_clear()
        .env("RP_DATABASE__MAX_CONNECTIONS", "many")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("max_connections"));
}

#[tokio::test]
async fn migrate_then_serve_without_migrations_then_sigterm_stops_gracefully() {
    let env = TestEnv::new();
    let (vars, http, admin) = process_env(&env, &[]);
    let migrate = Command::new(BINARY).arg("migrate").env_clear().envs(&vars).output().unwrap();
    assert!(migrate.status.success(), "{}", String::from_utf8_lossy(&migrate.stderr));

    let (mut serve_vars, ..) = (vars.clone(), 0, 0);
    serve_vars.insert("RP_DATABASE__RUN_MIGRATIONS".into(), "false".into());
    let child = spawn(&serve_vars, &["serve"]);
    wait_ready(admin).await;
    let login = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{http}/api/v1/auth/login"))
        .json(&serde_json::json!({"email": "admin@example.com", "password": "admin-password-for-tests"}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200, "the migrated schema serves logins");
    let health = Command::new(BINARY)
        .args(["healthcheck", "--role", "gateway"])
        .env_clear()
        .envs(&serve_vars)
        .status()
        .unwrap();
    assert!(health.success(), "healthcheck sees the gateway ready");

    terminate(&child);
    let (status, output) = wait_exit(child, Duration::from_secs(15)).await;
    assert!(status.success(), "exit on SIGTERM is clean: {status:?}\n{output}");
    for service in ["gateway", "auth", "release", "rollback", "notifier"] {
        assert!(
            output.contains(&format!("\"service\":\"{service}\"")) && output.contains("service stopped"),
            "{service}: {output}"
        );
    }
    let down = Command::new(BINARY)
        .args(["healthcheck", "--role", "gateway"])
        .env_clear()
        .envs(&serve_vars)
        .status()
        .unwrap();
    assert!(!down.success(), "healthcheck fails once stopped");
}

#[tokio::test]
async fn one_request_is_one_trace_from_the_gateway_into_auth() {
    let stop = CancellationToken::new();
    let (collector, receiver) = super::otlp::start(stop.clone()).await;
    let env = TestEnv::new();
    let endpoint = format!("http://{collector}");
    let (vars, http, admin) =
        process_env(&env, &[("RP_TELEMETRY__OTLP_ENDPOINT", &endpoint), ("OTEL_BSP_SCHEDULE_DELAY", "100")]);
    let child = spawn(&vars, &["serve"]);
    wait_ready(admin).await;

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let login = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{http}/api/v1/auth/login"))
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .json(&serde_json::json!({"email": "admin@example.com", "password": "admin-password-for-tests"}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);

    let spans = eventually(Duration::from_secs(20), "gateway and auth spans of the request", || {
        let spans = receiver.spans.lock().unwrap().clone();
        async move {
            let of_trace: Vec<_> = spans.into_iter().filter(|s| s.trace_id == trace_id).collect();
            let gateway = of_trace
                .iter()
                .any(|s| s.name == "http.request" || s.name.starts_with("POST /api/v1/auth/login"));
            let auth = of_trace
                .iter()
                .any(|s| s.attribute("rpc.service") == Some("releasepilot.auth.v1.AuthService"));
            (gateway && auth).then_some(of_trace)
        }
    })
    .await;
    let auth_span = spans
        .iter()
        .find(|s| s.attribute("rpc.service") == Some("releasepilot.auth.v1.AuthService"))
        .unwrap();
    assert_eq!(auth_span.attribute("rpc.method"), Some("Login"));
    terminate(&child);
    let (status, _) = wait_exit(child, Duration::from_secs(15)).await;
    assert!(status.success());
    stop.cancel();
}

#[tokio::test]
async fn the_demo_shows_a_failing_canary_rolled_back_live_and_exits_when_asked() {
    let env = TestEnv::new();
    let (mut vars, ..) = process_env(&env, &[]);
    // Every port chosen by the system, so the demo runs beside anything.
    for role in ["GATEWAY__HTTP", "GATEWAY__ADMIN", "ROUTER__PROXY", "ROUTER__ADMIN"]
        .into_iter()
        .map(str::to_owned)
        .chain(
            ["AUTH", "RELEASE", "ROLLBACK", "NOTIFIER"]
                .iter()
                .flat_map(|s| [format!("{s}__GRPC"), format!("{s}__ADMIN")]),
        )
    {
        vars.insert(format!("RP_{role}_ADDR"), "127.0.0.1:0".into());
    }
    let child = spawn(&vars, &["demo", "--exit", "--rps", "80", "--healthy-seconds", "3"]);
    let (status, output) = wait_exit(child, Duration::from_secs(90)).await;
    assert!(status.success(), "{output}");
    assert!(output.contains("1.1.0 starts failing 30% of its requests"), "{output}");
    assert!(output.contains("✔ Rolled back automatically: error rate above 5%"), "{output}");
    assert!(output.contains("traffic restored to 1.0.0") && output.contains("MTTR"), "{output}");
    assert!(output.contains("query: router: error_rate of shop 1.1.0 in staging"), "{output}");
    assert!(!output.contains("admin-password-for-tests"), "the given admin password is never printed");
}
