//! The rollback service end to end: auth, release, rollback, router and gateway in one process,
//! demo apps v1 and v2 behind the router, real traffic, on the backend chosen by
//! `RELEASE_PILOT_TEST_BACKEND`.

mod analysis;
mod api;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use demo_app::{DemoApp, Knobs};
use release_pilot::{Role, testing::TestSystem};
use rp_proto::{
    release::v1::{self as release_pb, release_service_client::ReleaseServiceClient},
    rollback::v1::{self as pb, rollback_service_client::RollbackServiceClient},
};
use rp_runtime::CancellationToken;
use rp_test_support::{TestEnv, authed, eventually};
use tonic::transport::Channel;

pub const WAIT: Duration = Duration::from_secs(30);
pub const APP: &str = "shop";
pub const ENV: &str = "staging";

/// One request the traffic generator made.
#[derive(Debug, Clone)]
pub struct Hit {
    pub at: Instant,
    pub version: String,
    pub status: u16,
}

/// Sends requests through the router until dropped, and remembers every answer.
pub struct Traffic {
    pub hits: Arc<Mutex<Vec<Hit>>>,
    _stop: tokio_util::sync::DropGuard,
}

impl Traffic {
    pub fn start(url: String, workers: usize, pause: Duration) -> Self {
        let hits = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let client = reqwest::Client::builder().pool_max_idle_per_host(workers).build().unwrap();
        for _ in 0..workers {
            let (hits, stop, client, url) = (hits.clone(), stop.clone(), client.clone(), url.clone());
            tokio::spawn(async move {
                while !stop.is_cancelled() {
                    if let Ok(response) = client.get(&url).timeout(Duration::from_secs(2)).send().await {
                        let version = response
                            .headers()
                            .get("x-rp-version")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        let hit = Hit { at: Instant::now(), version, status: response.status().as_u16() };
                        hits.lock().unwrap().push(hit);
                    }
                    tokio::time::sleep(pause).await;
                }
            });
        }
        Self { hits, _stop: stop.drop_guard() }
    }

    /// The answers since `since`.
    pub fn since(&self, since: Instant) -> Vec<Hit> {
        self.hits.lock().unwrap().iter().filter(|h| h.at >= since).cloned().collect()
    }
}

/// The whole system with two demo app versions behind the router.
pub struct Stack {
    pub system: TestSystem,
    pub admin: String,
    pub release: ReleaseServiceClient<Channel>,
    pub rollback: RollbackServiceClient<Channel>,
    pub v1: DemoApp,
    pub v2: DemoApp,
}

/// Settings that make the loop fast enough for tests: samples every 100 ms, evaluation at
/// least every 100 ms, leases of 2 s.
const FAST: &[(&str, &str)] = &[
    ("RP_ROUTER__STATS_INTERVAL_MS", "100"),
    ("RP_ROUTER__HEALTH_CHECK_INTERVAL_MS", "100"),
    ("RP_ROUTER__HEALTH_CHECK_TIMEOUT_MS", "200"),
    ("RP_ROLLBACK__EVALUATION_INTERVAL_MS", "100"),
    ("RP_ROLLBACK__LEASE_SECS", "2"),
    ("RP_ROLLBACK__RECORD_INTERVAL_MS", "1000"),
    ("RP_ROLLBACK__POLL_INTERVAL_MS", "100"),
    ("RP_RELEASE__ENGINE_TICK_MS", "50"),
    // For the tests that run the notifier too: a webhook receiver on loopback.
    ("RP_NOTIFIER__ALLOWED_PRIVATE_NETWORKS", "127.0.0.0/8"),
    ("RP_NOTIFIER__DISPATCH_INTERVAL_MS", "50"),
];

pub async fn stack() -> Stack {
    stack_with(&[Role::Auth, Role::Release, Role::Rollback, Role::Router, Role::Gateway]).await
}

/// The stack with `roles`; without the rollback role, `rollback` must be pointed at a replica.
pub async fn stack_with(roles: &[Role]) -> Stack {
    let env = TestEnv::with_env(FAST);
    let system = TestSystem::start(env.config.clone(), roles).await.unwrap().hold(env);
    let admin = system.admin_token().await;
    let release = ReleaseServiceClient::connect(system.grpc_endpoint("release")).await.unwrap();
    let rollback = match system.app.service("rollback") {
        Some(_) => RollbackServiceClient::connect(system.grpc_endpoint("rollback")).await.unwrap(),
        None => RollbackServiceClient::new(Channel::from_static("http://127.0.0.1:9").connect_lazy()),
    };
    let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
    let v1 = demo_app::spawn("1.0.0", any_port, Knobs::default()).await.unwrap();
    let v2 = demo_app::spawn("2.0.0", any_port, Knobs::default()).await.unwrap();
    let stack = Stack { system, admin, release, rollback, v1, v2 };
    stack.setup().await;
    stack
}

impl Stack {
    /// Environment, app, router target, releases 1.0.0 and 2.0.0, and 1.0.0 serving.
    async fn setup(&self) {
        let mut release = self.release.clone();
        let token = &self.admin;
        release
            .create_environment(authed(
                token,
                release_pb::CreateEnvironmentRequest { name: ENV.into(), ..Default::default() },
            ))
            .await
            .unwrap();
        release
            .create_app(authed(
                token,
                release_pb::CreateAppRequest { name: APP.into(), ..Default::default() },
            ))
            .await
            .unwrap();
        let driver = serde_json::json!({
            "route": {"path_prefix": "/"},
            "upstreams": {"1.0.0": [self.v1.addr.to_string()], "2.0.0": [self.v2.addr.to_string()]}
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
            ))
            .await
            .unwrap();
        for version in ["1.0.0", "2.0.0"] {
            release
                .create_release(authed(
                    token,
                    release_pb::CreateReleaseRequest {
                        app: APP.into(),
                        version: version.into(),
                        commits: vec![release_pb::Commit {
                            sha: format!("{:0>40}", version.replace('.', "")),
                            message: format!("feat: version {version}"),
                            author: "dev".into(),
                            timestamp: None,
                        }],
                        ..Default::default()
                    },
                ))
                .await
                .unwrap();
        }
        let first = self.deploy(release_pb::CreateDeploymentRequest {
            version: "1.0.0".into(),
            strategy: "all_at_once".into(),
            verification_seconds: 1,
            ..Default::default()
        });
        let first = first.await;
        self.wait_state(&first.id, "succeeded").await;
        // The router serves v1.
        let url = self.system.app.service("router").map(|s| format!("http://{}/", s.primary_addr)).unwrap();
        let http = reqwest::Client::new();
        eventually(WAIT, "the router to serve 1.0.0", || async {
            let response = http.get(&url).send().await.ok()?;
            (response.headers().get("x-rp-version")?.to_str().ok()? == "1.0.0").then_some(())
        })
        .await;
    }

    pub fn router_url(&self) -> String {
        let router = self.system.app.service("router").expect("router runs");
        format!("http://{}/", router.primary_addr)
    }

    /// Creates a deployment of APP in ENV.
    pub async fn deploy(&self, request: release_pb::CreateDeploymentRequest) -> release_pb::Deployment {
        let request =
            release_pb::CreateDeploymentRequest { app: APP.into(), environment: ENV.into(), ..request };
        self.release.clone().create_deployment(authed(&self.admin, request)).await.unwrap().into_inner()
    }

    pub async fn deployment(&self, id: &str) -> release_pb::Deployment {
        self.release
            .clone()
            .get_deployment(authed(&self.admin, release_pb::GetDeploymentRequest { id: id.into() }))
            .await
            .unwrap()
            .into_inner()
    }

    pub async fn wait_state(&self, id: &str, state: &str) -> release_pb::Deployment {
        eventually(WAIT, &format!("deployment {id} to be {state}"), || async {
            let deployment = self.deployment(id).await;
            (deployment.state == state).then_some(deployment)
        })
        .await
    }

    /// The rules every test starts from: fast router rules, plus Alertmanager.
    pub async fn fast_policy(&self) {
        let rules = serde_json::json!([
            {"name": "error rate above 5%", "metric": "error_rate", "source": {"kind": "router"},
             "operator": "gt", "threshold": 5.0, "window_seconds": 2, "for_seconds": 0, "min_samples": 20,
             "severity": "critical", "action": "rollback"},
            {"name": "alert firing", "metric": "alert", "source": {"kind": "alertmanager"},
             "operator": "gte", "threshold": 1.0, "window_seconds": 60, "severity": "critical", "action": "rollback"}
        ]);
        self.put_policy(&rules.to_string()).await.unwrap();
    }

    pub async fn put_policy(&self, rules_json: &str) -> Result<pb::Policy, tonic::Status> {
        self.rollback
            .clone()
            .put_policy(authed(
                &self.admin,
                pb::PutPolicyRequest {
                    app: APP.into(),
                    environment: ENV.into(),
                    rules_json: rules_json.into(),
                },
            ))
            .await
            .map(|r| r.into_inner())
    }

    pub async fn analysis_of(&self, deployment_id: &str) -> Option<pb::Analysis> {
        self.rollback
            .clone()
            .get_analysis(authed(
                &self.admin,
                pb::GetAnalysisRequest {
                    deployment_id: deployment_id.into(),
                    measurements: 1000,
                    ..Default::default()
                },
            ))
            .await
            .ok()
            .map(|r| r.into_inner())
    }

    pub async fn wait_analysis(&self, deployment_id: &str, status: &str) -> pb::Analysis {
        eventually(WAIT, &format!("the analysis of {deployment_id} to be {status}"), || async {
            self.analysis_of(deployment_id).await.filter(|a| a.status == status)
        })
        .await
    }

    pub async fn incidents(&self) -> Vec<pb::Incident> {
        self.rollback
            .clone()
            .list_incidents(authed(&self.admin, pb::ListIncidentsRequest::default()))
            .await
            .unwrap()
            .into_inner()
            .incidents
    }

    pub async fn rollbacks(&self) -> Vec<pb::RollbackRecord> {
        self.rollback
            .clone()
            .list_rollbacks(authed(&self.admin, pb::ListRollbacksRequest::default()))
            .await
            .unwrap()
            .into_inner()
            .rollbacks
    }

    pub fn fail_v2(&self, error_rate: f64) {
        self.v2.set(Knobs { error_rate, ..Knobs::default() });
    }
}
