//! Release service over gRPC beside a real auth service and a local deployer (an HTTP receiver
//! speaking the webhook driver's protocol), on the backend chosen by `RELEASE_PILOT_TEST_BACKEND`.

mod apps;
mod audit;
mod concurrency;
mod deployments;
mod gates;
mod identity;
mod receiver;
mod releases;

use std::{sync::Arc, time::Duration};

use rp_config::Config;
use rp_identity::{Claims, Role};
use rp_proto::{
    auth::v1::{self as auth_pb, auth_service_client::AuthServiceClient},
    release::v1::{self as pb, release_service_client::ReleaseServiceClient},
};
use rp_runtime::{CancellationToken, Listeners, RunningService};
use rp_test_support::{TestEnv, authed, eventually};
use sea_orm::{EntityTrait as _, QueryOrder as _};
use tonic::transport::Channel;

pub const ADMIN_EMAIL: &str = "root@example.com";
pub const ADMIN_PASSWORD: &str = "root-password-123";
pub const PASSWORD: &str = "user-password-123";
pub const WAIT: Duration = Duration::from_secs(30);

pub struct Stack {
    pub env: TestEnv,
    pub config: Arc<Config>,
    pub auth: AuthServiceClient<Channel>,
    pub release: ReleaseServiceClient<Channel>,
    pub bus: rp_events::SharedBus,
    release_service: Option<RunningService>,
    release_shutdown: CancellationToken,
    _stop: tokio_util::sync::DropGuard,
}

pub async fn stack() -> Stack {
    let mut env = TestEnv::with_env(&[
        ("RP_AUTH__BOOTSTRAP_ADMIN__EMAIL", ADMIN_EMAIL),
        ("RP_AUTH__BOOTSTRAP_ADMIN__PASSWORD", ADMIN_PASSWORD),
        ("RP_RELEASE__ENGINE_TICK_MS", "50"),
        ("RP_RELEASE__DRIVER_POLL_MS", "100"),
        ("RP_RELEASE__DRIVER_TIMEOUT_SECS", "5"),
        ("RP_RELEASE__STEP_LEASE_SECS", "2"),
        ("RP_IDENTITY__API_TOKEN_CACHE_SECS", "0"),
    ]);
    let auth_listeners =
        Listeners::bind(env.config.auth.grpc_addr, env.config.auth.admin_addr).await.unwrap();
    env.config.endpoints.auth = format!("http://{}", auth_listeners.primary_addr());
    let config = Arc::new(env.config.clone());
    let bus = rp_events::connect(&config.nats).await.unwrap();
    let shutdown = CancellationToken::new();
    let auth = rp_auth::start(config.clone(), bus.clone(), auth_listeners, shutdown.clone()).await.unwrap();
    let release_shutdown = shutdown.child_token();
    let (release_service, release) = start_release(&config, &bus, release_shutdown.clone()).await;
    Stack {
        env,
        config,
        auth: AuthServiceClient::connect(format!("http://{}", auth.primary_addr)).await.unwrap(),
        release,
        bus,
        release_service: Some(release_service),
        release_shutdown,
        _stop: shutdown.drop_guard(),
    }
}

async fn start_release(
    config: &Arc<Config>,
    bus: &rp_events::SharedBus,
    shutdown: CancellationToken,
) -> (RunningService, ReleaseServiceClient<Channel>) {
    let listeners = Listeners::bind(config.release.grpc_addr, config.release.admin_addr).await.unwrap();
    let service = rp_release::start(config.clone(), bus.clone(), listeners, shutdown).await.unwrap();
    let client = ReleaseServiceClient::connect(format!("http://{}", service.primary_addr)).await.unwrap();
    (service, client)
}

/// Tokens of the people a scenario needs.
pub struct People {
    pub admin: String,
    pub developer: String,
    pub qa: String,
    pub manager: String,
    pub other_manager: String,
    pub commander: String,
    pub viewer: String,
}

impl Stack {
    pub async fn login(&self, email: &str, password: &str) -> String {
        self.auth
            .clone()
            .login(auth_pb::LoginRequest { email: email.into(), password: password.into() })
            .await
            .unwrap()
            .into_inner()
            .access_token
    }

    pub async fn admin(&self) -> String {
        self.login(ADMIN_EMAIL, ADMIN_PASSWORD).await
    }

    pub async fn user(&self, email: &str, roles: &[Role]) -> String {
        let admin = self.admin().await;
        self.auth
            .clone()
            .create_user(authed(
                &admin,
                auth_pb::CreateUserRequest {
                    email: email.into(),
                    display_name: String::new(),
                    password: PASSWORD.into(),
                    roles: roles.iter().map(|r| r.to_proto() as i32).collect(),
                },
            ))
            .await
            .unwrap();
        self.login(email, PASSWORD).await
    }

    pub async fn people(&self) -> People {
        People {
            admin: self.admin().await,
            developer: self.user("dev@example.com", &[Role::Developer]).await,
            qa: self.user("qa@example.com", &[Role::Qa]).await,
            manager: self.user("rm@example.com", &[Role::ReleaseManager]).await,
            other_manager: self.user("rm2@example.com", &[Role::ReleaseManager]).await,
            commander: self.user("ic@example.com", &[Role::IncidentCommander]).await,
            viewer: self.user("viewer@example.com", &[Role::Viewer]).await,
        }
    }

    pub async fn list_apps(&self, token: &str) -> Result<pb::ListAppsResponse, tonic::Status> {
        self.release
            .clone()
            .list_apps(authed(token, pb::ListAppsRequest::default()))
            .await
            .map(|r| r.into_inner())
    }

    /// The current signing key, read from auth's own tables: lets a test forge tokens that are
    /// correctly signed but wrong in another way.
    pub async fn signing_key(&self) -> (String, jsonwebtoken::EncodingKey) {
        let db = rp_db::connect(&self.env.config, "auth").await.unwrap();
        let key = rp_auth::store::signing_keys::Entity::find()
            .order_by_desc(rp_auth::store::signing_keys::Column::CreatedAt)
            .one(&db.conn)
            .await
            .unwrap()
            .unwrap();
        (key.kid, rp_auth::domain::keys::encoding_key(&key.private_key).unwrap())
    }

    pub fn claims(&self, exp_offset: i64) -> Claims {
        let now = chrono::Utc::now().timestamp();
        Claims {
            iss: self.env.config.identity.issuer.clone(),
            aud: self.env.config.identity.audience.clone(),
            sub: uuid::Uuid::now_v7().to_string(),
            exp: now + exp_offset,
            iat: now - 10,
            nbf: now - 10,
            jti: uuid::Uuid::now_v7().to_string(),
            email: "forged@example.com".into(),
            roles: vec!["admin".into()],
            kind: "user".into(),
        }
    }

    /// Stops the release service (as a crash or a rolling restart would) and starts a new one on
    /// the same data.
    pub async fn restart_release(&mut self) {
        self.release_shutdown.cancel();
        if let Some(service) = self.release_service.take() {
            service.task.await.unwrap().unwrap();
        }
        self.release_shutdown = CancellationToken::new();
        let (service, client) = start_release(&self.config, &self.bus, self.release_shutdown.clone()).await;
        self.release_service = Some(service);
        self.release = client;
    }

    pub async fn deployment(&self, token: &str, id: &str) -> pb::Deployment {
        self.release
            .clone()
            .get_deployment(authed(token, pb::GetDeploymentRequest { id: id.into() }))
            .await
            .unwrap()
            .into_inner()
    }

    /// Polls until the deployment satisfies `done`.
    pub async fn wait_for(
        &self,
        token: &str,
        id: &str,
        what: &str,
        done: impl Fn(&pb::Deployment) -> bool,
    ) -> pb::Deployment {
        eventually(WAIT, what, || async {
            let deployment = self.deployment(token, id).await;
            done(&deployment).then_some(deployment)
        })
        .await
    }

    pub async fn wait_state(&self, token: &str, id: &str, state: &str) -> pb::Deployment {
        let what = format!("deployment {id} to be {state}");
        self.wait_for(token, id, &what, |d| {
            assert!(
                d.state == state || !is_final(&d.state),
                "deployment ended {} ({}) while waiting for {state}",
                d.state,
                d.failure_reason
            );
            d.state == state
        })
        .await
    }

    /// dev → staging → prod, an app `shop` with a webhook target per environment pointing at
    /// `receiver`, and the people.
    pub async fn pipeline(&self, receiver: &receiver::Receiver) -> People {
        let people = self.people().await;
        let mut release = self.release.clone();
        let env = |name: &str, production: bool, thresholds: Vec<pb::QualityThreshold>| {
            pb::CreateEnvironmentRequest {
                name: name.into(),
                production,
                required_approvals: i32::from(production),
                quality_thresholds: thresholds,
                ..Default::default()
            }
        };
        release.create_environment(authed(&people.manager, env("dev", false, vec![]))).await.unwrap();
        let coverage = pb::QualityThreshold { check: "coverage".into(), operator: "gte".into(), value: 90.0 };
        release
            .create_environment(authed(&people.manager, env("staging", false, vec![coverage])))
            .await
            .unwrap();
        release.create_environment(authed(&people.manager, env("prod", true, vec![]))).await.unwrap();
        release
            .create_app(authed(
                &people.manager,
                pb::CreateAppRequest { name: "shop".into(), ..Default::default() },
            ))
            .await
            .unwrap();
        for env in ["dev", "staging", "prod"] {
            self.webhook_target(&people.manager, "shop", env, receiver).await;
        }
        people
    }

    pub async fn webhook_target(&self, token: &str, app: &str, env: &str, receiver: &receiver::Receiver) {
        self.release
            .clone()
            .put_target(authed(
                token,
                pb::PutTargetRequest {
                    app: app.into(),
                    environment: env.into(),
                    driver: "webhook".into(),
                    driver_config_json: serde_json::json!({"url": receiver.deploy_url(), "timeout_seconds": 2, "max_attempts": 2})
                        .to_string(),
                    default_strategy: "all_at_once".into(),
                    canary_steps: vec![],
                    webhook_secret: receiver.secret.clone(),
                },
            ))
            .await
            .unwrap();
    }

    /// Creates release `version` of `app` with one feature commit.
    pub async fn release_version(&self, token: &str, app: &str, version: &str) -> pb::Release {
        self.release
            .clone()
            .create_release(authed(
                token,
                pb::CreateReleaseRequest {
                    app: app.into(),
                    version: version.into(),
                    commits: vec![pb::Commit {
                        sha: format!("{:0>40}", version.replace('.', "")),
                        message: format!("feat: version {version}"),
                        author: "dev".into(),
                        timestamp: Some(rp_proto::timestamp(
                            std::time::SystemTime::now() - Duration::from_secs(3600),
                        )),
                    }],
                    artifact_image: format!("registry.example.com/{app}:{version}"),
                    artifact_digest: format!("sha256:{}", "a".repeat(64)),
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner()
    }

    /// Deploys all-at-once with a short verification and waits for success.
    pub async fn deploy_ok(&self, token: &str, app: &str, env: &str, version: &str) -> pb::Deployment {
        let created = self
            .release
            .clone()
            .create_deployment(authed(token, quick(app, env, version)))
            .await
            .unwrap()
            .into_inner();
        self.wait_state(token, &created.id, "succeeded").await
    }
}

/// An all-at-once deployment request with a one-second verification window.
pub fn quick(app: &str, env: &str, version: &str) -> pb::CreateDeploymentRequest {
    pb::CreateDeploymentRequest {
        app: app.into(),
        environment: env.into(),
        version: version.into(),
        strategy: "all_at_once".into(),
        verification_seconds: 1,
        ..Default::default()
    }
}

pub fn is_final(state: &str) -> bool {
    matches!(state, "succeeded" | "failed" | "rolled_back" | "aborted" | "superseded")
}
