//! Release Pilot configuration.
//!
//! Sources, later ones winning: built-in defaults (the `Default` impls below) → an optional TOML
//! file → environment variables prefixed `RP_`, with `__` separating nesting levels
//! (`RP_DATABASE__URL`, `RP_AUTH__BOOTSTRAP_ADMIN__EMAIL`). Tests build a [`Config`] through
//! [`Config::load`] with an explicit variable map instead of touching the process environment.

mod secret;

use std::{collections::HashMap, net::SocketAddr, path::PathBuf};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

pub use secret::{Secret, UrlWithCredentials};

/// Keys whose environment value is a comma-separated list.
const LIST_KEYS: &[&str] =
    &["gateway.cors_allowed_origins", "gateway.trusted_proxies", "notifier.allowed_private_networks"];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid configuration: {0}")]
    Invalid(#[from] config::ConfigError),
    #[error("invalid configuration: {0}")]
    Rule(String),
}

/// The effective configuration of one process.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Directory for embedded-mode state (SQLite files).
    pub data_dir: PathBuf,
    pub database: DatabaseConfig,
    pub nats: NatsConfig,
    pub telemetry: TelemetryConfig,
    pub shutdown: ShutdownConfig,
    pub outbox: OutboxConfig,
    /// Where each service's gRPC API is reached by the others.
    pub endpoints: Endpoints,
    pub identity: IdentityConfig,
    pub gateway: GatewayConfig,
    pub auth: AuthConfig,
    pub release: ReleaseConfig,
    pub rollback: RollbackConfig,
    pub notifier: NotifierConfig,
    pub router: RouterConfig,
}

impl Config {
    /// Loads defaults, then `file` if given, then the `RP_`-prefixed entries of `env`.
    pub fn load(file: Option<&std::path::Path>, env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(path) = file {
            builder = builder.add_source(config::File::from(path).required(true));
        }
        let mut environment = config::Environment::with_prefix("RP")
            .prefix_separator("_")
            .separator("__")
            .list_separator(",")
            .try_parsing(true)
            .source(Some(env.clone()));
        for key in LIST_KEYS {
            environment = environment.with_list_parse_key(key);
        }
        let config: Config = builder.add_source(environment).build()?.try_deserialize()?;
        config.validate()?;
        Ok(config)
    }

    /// Loads from the real process environment (used by `main` only).
    pub fn from_process_env(file: Option<&std::path::Path>) -> Result<Self, ConfigError> {
        let env: HashMap<String, String> = std::env::vars().collect();
        Self::load(file, &env)
    }

    /// The effective configuration as TOML, secrets redacted.
    pub fn dump(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|err| format!("# cannot render: {err}"))
    }

    /// True when the database is PostgreSQL rather than embedded SQLite.
    pub fn is_distributed_db(&self) -> bool {
        self.database.url.is_some()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let rule = |ok: bool, msg: &str| {
            if ok { Ok(()) } else { Err(ConfigError::Rule(msg.to_owned())) }
        };
        rule(
            self.database.min_connections <= self.database.max_connections,
            "database.min_connections must not exceed database.max_connections",
        )?;
        rule(self.database.max_connections > 0, "database.max_connections must be positive")?;
        rule(self.database.read_connections <= 1000, "database.read_connections must be at most 1000")?;
        if let Some(url) = &self.database.url {
            rule(
                url.expose().starts_with("postgres://") || url.expose().starts_with("postgresql://"),
                "database.url must be a postgres:// URL (leave it unset for embedded SQLite)",
            )?;
        }
        if let Some(url) = &self.nats.url {
            rule(
                url.expose().starts_with("nats://") || url.expose().starts_with("tls://"),
                "nats.url must be a nats:// URL (leave it unset for the in-process bus)",
            )?;
        }
        rule(
            self.database.schema_prefix.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "database.schema_prefix may only contain letters, digits and underscores",
        )?;
        rule(
            matches!(self.telemetry.log_format.as_str(), "pretty" | "json"),
            "telemetry.log_format must be \"pretty\" or \"json\"",
        )?;
        rule(
            (0.0..=1.0).contains(&self.telemetry.trace_sample_ratio),
            "telemetry.trace_sample_ratio must be between 0 and 1",
        )?;
        rule(self.auth.access_token_ttl_secs >= 30, "auth.access_token_ttl_secs must be at least 30")?;
        rule(
            self.auth.refresh_token_ttl_secs > self.auth.access_token_ttl_secs,
            "auth.refresh_token_ttl_secs must exceed auth.access_token_ttl_secs",
        )?;
        rule(self.auth.password_min_length >= 8, "auth.password_min_length must be at least 8")?;
        if let Some(password) = &self.auth.bootstrap_admin.password {
            rule(
                password.expose().chars().count() >= self.auth.password_min_length,
                "auth.bootstrap_admin.password is shorter than auth.password_min_length",
            )?;
        }
        rule(
            self.auth.bootstrap_admin.password.is_none() || self.auth.bootstrap_admin.email.is_some(),
            "auth.bootstrap_admin.password is set but auth.bootstrap_admin.email is not",
        )?;
        rule(
            matches!(self.router.balancing.as_str(), "round_robin" | "least_connections" | "weighted"),
            "router.balancing must be round_robin, least_connections or weighted",
        )?;
        rule(self.router.stats_interval_ms >= 50, "router.stats_interval_ms must be at least 50")?;
        rule(
            self.router.health_check_interval_ms >= 50,
            "router.health_check_interval_ms must be at least 50",
        )?;
        rule(self.release.engine_tick_ms >= 10, "release.engine_tick_ms must be at least 10")?;
        rule(self.release.step_lease_secs >= 1, "release.step_lease_secs must be at least 1")?;
        rule(
            semver_like(&self.release.initial_version),
            "release.initial_version must be a semantic version such as 0.1.0",
        )?;
        rule(self.gateway.body_limit_bytes >= 1024, "gateway.body_limit_bytes must be at least 1024")?;
        rule(
            self.gateway.rate_limit.per_ip_per_second > 0 && self.gateway.rate_limit.per_token_per_second > 0,
            "gateway.rate_limit rates must be positive",
        )?;
        Ok(())
    }
}

fn semver_like(text: &str) -> bool {
    let core = text.split(['-', '+']).next().unwrap_or_default();
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3 && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// PostgreSQL URL. Unset: one SQLite file per service under `data_dir`.
    pub url: Option<UrlWithCredentials>,
    /// Prefix of the per-service PostgreSQL schemas (`<prefix>auth`, `<prefix>release`, …).
    pub schema_prefix: String,
    pub min_connections: u32,
    pub max_connections: u32,
    pub idle_timeout_secs: u64,
    pub connect_timeout_secs: u64,
    pub acquire_timeout_secs: u64,
    /// PostgreSQL only: connections (beside the pool) for the hottest read-only statements,
    /// such as a page of releases; 0 runs them on the pool.
    pub read_connections: u32,
    /// Apply pending migrations when a service starts (otherwise run `release-pilot migrate`).
    pub run_migrations: bool,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        // Pool sizing follows the original project's settings: min 5, max 20, idle 10 s.
        Self {
            url: None,
            schema_prefix: String::new(),
            min_connections: 5,
            max_connections: 20,
            idle_timeout_secs: 10,
            connect_timeout_secs: 5,
            acquire_timeout_secs: 5,
            read_connections: 4,
            run_migrations: true,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsConfig {
    /// NATS URL. Unset: the in-process event bus.
    pub url: Option<UrlWithCredentials>,
    /// JetStream stream holding every event.
    pub stream: String,
    /// Prepended to every subject (`<prefix>rp.deployment.started`); isolates tests and tenants.
    pub subject_prefix: String,
    pub connect_timeout_secs: u64,
    /// JetStream de-duplication window for `Nats-Msg-Id`.
    pub duplicate_window_secs: u64,
    /// How long the stream keeps events.
    pub max_age_hours: u64,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            url: None,
            stream: "RP_EVENTS".into(),
            subject_prefix: String::new(),
            connect_timeout_secs: 5,
            duplicate_window_secs: 120,
            max_age_hours: 24 * 7,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// `pretty` for people, `json` for log shippers.
    pub log_format: String,
    /// `tracing` env-filter directives.
    pub log_filter: String,
    /// OTLP/gRPC collector endpoint, e.g. `http://127.0.0.1:4317`. Unset: no trace export.
    pub otlp_endpoint: Option<String>,
    pub service_name: String,
    pub trace_sample_ratio: f64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_format: "pretty".into(),
            log_filter: "info,sqlx=warn,sea_orm=warn,sea_orm_migration=warn,h2=warn,tower=warn,hyper=warn,async_nats=warn".into(),
            otlp_endpoint: None,
            service_name: "release-pilot".into(),
            trace_sample_ratio: 1.0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// After SIGTERM, in-flight work gets this long before the process exits anyway.
    pub grace_period_secs: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self { grace_period_secs: 20 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboxConfig {
    /// Backstop poll interval; commits wake the relay immediately within a process.
    pub poll_interval_ms: u64,
    pub batch_size: u64,
    /// Delay before retrying after the bus refused a publish.
    pub retry_backoff_ms: u64,
    /// Published rows older than this are deleted.
    pub retention_hours: u64,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self { poll_interval_ms: 1000, batch_size: 100, retry_backoff_ms: 500, retention_hours: 24 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Endpoints {
    pub auth: String,
    pub release: String,
    pub rollback: String,
    pub notifier: String,
}

impl Default for Endpoints {
    fn default() -> Self {
        Self {
            auth: "http://127.0.0.1:50051".into(),
            release: "http://127.0.0.1:50052".into(),
            rollback: "http://127.0.0.1:50053".into(),
            notifier: "http://127.0.0.1:50054".into(),
        }
    }
}

/// How services verify callers: the JWKS cache and the API-token cache.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdentityConfig {
    /// Refresh the cached JWKS this often even when no unknown key id was seen.
    pub jwks_refresh_secs: u64,
    /// Minimum time between two fetches triggered by unknown key ids; a request meeting an
    /// unknown key id waits at most this long for a fresh JWKS, so forged ids cannot flood auth.
    pub jwks_min_refetch_ms: u64,
    /// How long a verified API token is trusted before auth is asked again.
    pub api_token_cache_secs: u64,
    /// Tolerated clock skew when checking `exp` and `nbf`.
    pub leeway_secs: u64,
    pub issuer: String,
    pub audience: String,
    /// Credential the roles use to call each other (the router reading routes, the rollback
    /// service rolling back). Unset: generated at start and shared by the roles of the process;
    /// set it (the same value everywhere) when roles run as separate processes.
    pub internal_token: Option<Secret>,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            jwks_refresh_secs: 300,
            jwks_min_refetch_ms: 200,
            api_token_cache_secs: 30,
            leeway_secs: 5,
            issuer: "release-pilot".into(),
            audience: "release-pilot".into(),
            internal_token: None,
        }
    }
}

/// Listen addresses of a gRPC service.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    pub grpc_addr: SocketAddr,
    pub admin_addr: SocketAddr,
}

impl ServiceConfig {
    fn local(grpc_port: u16, admin_port: u16) -> Self {
        Self {
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], grpc_port)),
            admin_addr: SocketAddr::from(([127, 0, 0, 1], admin_port)),
        }
    }
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self::local(0, 0)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    pub http_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// Browser origins allowed by CORS. Empty: same-origin only.
    pub cors_allowed_origins: Vec<String>,
    /// Peers whose `X-Forwarded-For` is believed (load balancers, ingress).
    pub trusted_proxies: Vec<IpNet>,
    pub body_limit_bytes: usize,
    pub request_timeout_secs: u64,
    /// Deadline of each gRPC call to a service.
    pub grpc_deadline_ms: u64,
    /// Call services that run in this same process in memory (same protobuf, metadata and
    /// server stack, no TCP or HTTP/2) instead of over loopback.
    pub in_process_calls: bool,
    pub rate_limit: RateLimitConfig,
    /// Built dashboard served at `/`.
    pub web_dir: PathBuf,
    /// Public base URL of the dashboard, used in links.
    pub public_url: String,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 9100)),
            cors_allowed_origins: Vec::new(),
            trusted_proxies: vec!["127.0.0.1/32".parse().expect("valid"), "::1/128".parse().expect("valid")],
            body_limit_bytes: 1024 * 1024,
            request_timeout_secs: 30,
            grpc_deadline_ms: 5000,
            in_process_calls: true,
            rate_limit: RateLimitConfig::default(),
            web_dir: PathBuf::from("web/dist"),
            public_url: "http://127.0.0.1:8080".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Sustained requests per second from one client IP.
    pub per_ip_per_second: u32,
    pub per_ip_burst: u32,
    /// Sustained requests per second with one bearer token.
    pub per_token_per_second: u32,
    pub per_token_burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self { per_ip_per_second: 100, per_ip_burst: 200, per_token_per_second: 200, per_token_burst: 400 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    pub grpc_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub access_token_ttl_secs: u64,
    pub refresh_token_ttl_secs: u64,
    /// Create a new signing key this often (0: only on request). Old keys verify until their tokens expire.
    pub signing_key_rotation_days: u64,
    pub password_min_length: usize,
    pub throttle: ThrottleConfig,
    pub bootstrap_admin: BootstrapAdmin,
}

impl Default for AuthConfig {
    fn default() -> Self {
        let local = ServiceConfig::local(50051, 9101);
        Self {
            grpc_addr: local.grpc_addr,
            admin_addr: local.admin_addr,
            access_token_ttl_secs: 15 * 60,
            refresh_token_ttl_secs: 30 * 24 * 3600,
            signing_key_rotation_days: 30,
            password_min_length: 12,
            throttle: ThrottleConfig::default(),
            bootstrap_admin: BootstrapAdmin::default(),
        }
    }
}

impl AuthConfig {
    pub fn service(&self) -> ServiceConfig {
        ServiceConfig { grpc_addr: self.grpc_addr, admin_addr: self.admin_addr }
    }
}

/// Failed-login limits; beyond them logins are refused until the window has passed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThrottleConfig {
    pub max_failures_per_account: u32,
    pub max_failures_per_ip: u32,
    pub window_secs: u64,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self { max_failures_per_account: 5, max_failures_per_ip: 30, window_secs: 15 * 60 }
    }
}

/// The first administrator, created when the user table is empty.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BootstrapAdmin {
    pub email: Option<String>,
    /// Unset: a random password is generated and printed once.
    pub password: Option<Secret>,
}

/// The rollback service: health analysis of running deployments.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RollbackConfig {
    pub grpc_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// Prometheus base URL for the default memory, DB-pool and business-metric rules.
    pub prometheus_url: Option<String>,
    /// Rules are evaluated when a traffic sample arrives, and at least this often.
    pub evaluation_interval_ms: u64,
    /// A replica watching a deployment holds it this long between renewals; when it dies,
    /// another replica takes over after at most this long.
    pub lease_secs: u64,
    /// A rule's decision record is stored when its verdict changes, when it acts, and at least
    /// this often while it stays the same (0: every evaluation).
    pub record_interval_ms: u64,
    /// Prometheus queries and HTTP probes run this often per watched deployment.
    pub poll_interval_ms: u64,
    /// Decision records older than this are deleted.
    pub measurement_retention_days: u64,
}

impl Default for RollbackConfig {
    fn default() -> Self {
        Self {
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 50053)),
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 9103)),
            prometheus_url: None,
            evaluation_interval_ms: 500,
            lease_secs: 5,
            record_interval_ms: 10_000,
            poll_interval_ms: 2_000,
            measurement_retention_days: 14,
        }
    }
}

/// The router (data plane): a weighted reverse proxy whose routes come from the release service.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouterConfig {
    /// Where applications' traffic arrives.
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// `round_robin`, `least_connections` or `weighted` (address weights: `host:port*3`).
    pub balancing: String,
    /// Active health checks: GET this path on every upstream this often.
    pub health_check_path: String,
    pub health_check_interval_ms: u64,
    pub health_check_timeout_ms: u64,
    /// Consecutive failed checks that take an upstream out, and successes that bring it back.
    pub unhealthy_threshold: u32,
    pub healthy_threshold: u32,
    /// Passive detection: consecutive failed requests (connection errors, 502-504) that eject an
    /// upstream for `ejection_secs`.
    pub passive_failure_threshold: u32,
    pub ejection_secs: u64,
    /// Sticky sessions: cookie remembering a client's track (canary or stable) per app.
    pub sticky_cookie: String,
    /// Per-version traffic samples are sent to the rollback service this often.
    pub stats_interval_ms: u64,
    pub upstream_timeout_secs: u64,
    pub upstream_idle_timeout_secs: u64,
    pub upstream_max_idle_per_host: usize,
    /// Speak HTTP/2 (prior knowledge, h2c) to upstreams instead of HTTP/1.1.
    pub upstream_http2: bool,
    /// Threads serving proxied connections, each with its own upstream pool (0 = one per CPU).
    pub proxy_threads: usize,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            proxy_addr: SocketAddr::from(([127, 0, 0, 1], 8000)),
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 9105)),
            balancing: "round_robin".into(),
            health_check_path: "/health".into(),
            health_check_interval_ms: 1000,
            health_check_timeout_ms: 1000,
            unhealthy_threshold: 3,
            healthy_threshold: 2,
            passive_failure_threshold: 5,
            ejection_secs: 10,
            sticky_cookie: "rp_track".into(),
            stats_interval_ms: 250,
            upstream_timeout_secs: 30,
            upstream_idle_timeout_secs: 90,
            upstream_max_idle_per_host: 256,
            upstream_http2: false,
            proxy_threads: 0,
        }
    }
}

/// The release service: listen addresses, deployment engine and versioning policy.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReleaseConfig {
    pub grpc_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// How often the deployment engine looks for due work (it is also woken on every change).
    pub engine_tick_ms: u64,
    /// A replica that claims a step owns it this long; after a crash another replica takes over.
    pub step_lease_secs: u64,
    /// How long an external deployer may take to report an accepted step.
    pub driver_timeout_secs: u64,
    /// How often an accepted step's status URL is polled.
    pub driver_poll_ms: u64,
    /// First version computed for an app without releases.
    pub initial_version: String,
    /// Before 1.0.0, a breaking change bumps the minor version (else it makes 1.0.0).
    pub pre_major_breaking_bumps_minor: bool,
    /// Before 1.0.0, a feature bumps the patch version (else the minor).
    pub pre_major_feature_bumps_patch: bool,
    /// Public base URL of the API, used in driver callback URLs.
    pub callback_base_url: String,
}

impl Default for ReleaseConfig {
    fn default() -> Self {
        let local = ServiceConfig::local(50052, 9102);
        Self {
            grpc_addr: local.grpc_addr,
            admin_addr: local.admin_addr,
            engine_tick_ms: 250,
            step_lease_secs: 30,
            driver_timeout_secs: 600,
            driver_poll_ms: 2000,
            initial_version: "0.1.0".into(),
            pre_major_breaking_bumps_minor: true,
            pre_major_feature_bumps_patch: false,
            callback_base_url: "http://127.0.0.1:8080".into(),
        }
    }
}

/// The notifier: routed, grouped, escalating notifications with delivery guarantees.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotifierConfig {
    pub grpc_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// Networks that webhook, Slack, PagerDuty and SMTP hosts may resolve to although private
    /// (loopback, RFC 1918, link-local, unique-local, CGNAT). Everything else private is refused.
    pub allowed_private_networks: Vec<IpNet>,
    /// Key that encrypts channel secrets at rest (at least 32 characters; every replica needs
    /// the same one). Unset: a random key is generated once into `<data_dir>/notifier-secret.key`.
    pub secret_key: Option<Secret>,
    /// Waits between delivery attempts (`5s,5m,30m,2h,5h,10h,10h`: eight attempts over about
    /// 33 hours); after the last one the delivery becomes a dead letter.
    pub retry_schedule: String,
    /// Random spread of each wait: 0.2 waits between 80 % and 120 % of the scheduled time.
    pub retry_jitter: f64,
    /// Longest `Retry-After` (seconds) a receiver answering 429 or 503 is obeyed for.
    pub max_retry_after_secs: u64,
    /// Timeout of one delivery attempt (connect, send and read the answer).
    pub request_timeout_ms: u64,
    /// A replica claiming an attempt owns it this long; if it dies, another replica retries it
    /// (same `webhook-id`) after this. Must exceed `request_timeout_ms`.
    pub delivery_lease_ms: u64,
    /// The dispatcher is woken by new work in this process and looks for due work at least this often.
    pub dispatch_interval_ms: u64,
    /// Attempts in flight at once per replica.
    pub max_in_flight: usize,
    /// Bytes of each answer kept in the delivery log.
    pub response_excerpt_bytes: usize,
    /// After a webhook secret rotation the previous secret keeps signing (second signature) this long.
    pub secret_rotation_overlap_secs: u64,
    /// Base URL of acknowledge links in escalation messages (`<base>/<token>`). Unset: the
    /// notifier's own admin port (`http://<admin_addr>/ack`).
    pub ack_base_url: Option<String>,
    /// Finished deliveries (with their attempt log), dead letters and ended escalations are
    /// deleted after this many days.
    pub retention_days: u64,
}

impl Default for NotifierConfig {
    fn default() -> Self {
        let local = ServiceConfig::local(50054, 9104);
        Self {
            grpc_addr: local.grpc_addr,
            admin_addr: local.admin_addr,
            allowed_private_networks: Vec::new(),
            secret_key: None,
            retry_schedule: "5s,5m,30m,2h,5h,10h,10h".into(),
            retry_jitter: 0.2,
            max_retry_after_secs: 3600,
            request_timeout_ms: 15_000,
            delivery_lease_ms: 60_000,
            dispatch_interval_ms: 1000,
            max_in_flight: 32,
            response_excerpt_bytes: 512,
            secret_rotation_overlap_secs: 24 * 3600,
            ack_base_url: None,
            retention_days: 30,
        }
    }
}

impl NotifierConfig {
    pub fn service(&self) -> ServiceConfig {
        ServiceConfig { grpc_addr: self.grpc_addr, admin_addr: self.admin_addr }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data"),
            database: DatabaseConfig::default(),
            nats: NatsConfig::default(),
            telemetry: TelemetryConfig::default(),
            shutdown: ShutdownConfig::default(),
            outbox: OutboxConfig::default(),
            endpoints: Endpoints::default(),
            identity: IdentityConfig::default(),
            gateway: GatewayConfig::default(),
            auth: AuthConfig::default(),
            release: ReleaseConfig::default(),
            rollback: RollbackConfig::default(),
            notifier: NotifierConfig::default(),
            router: RouterConfig::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_are_embedded_mode_on_standard_ports() {
        let config = Config::load(None, &HashMap::new()).unwrap();
        assert!(config.database.url.is_none());
        assert!(config.nats.url.is_none());
        assert_eq!(config.gateway.http_addr.port(), 8080);
        assert_eq!(config.auth.grpc_addr.port(), 50051);
        assert_eq!(config.release.grpc_addr.port(), 50052);
        assert_eq!(config.rollback.grpc_addr.port(), 50053);
        assert_eq!(config.notifier.grpc_addr.port(), 50054);
        assert_eq!(config.gateway.admin_addr.port(), 9100);
        assert_eq!(config.notifier.admin_addr.port(), 9104);
        assert_eq!((config.database.min_connections, config.database.max_connections), (5, 20));
        assert_eq!(config.database.idle_timeout_secs, 10);
    }

    #[test]
    fn environment_overrides_file_and_nests_with_double_underscore() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("rp.toml");
        std::fs::write(&file, "[database]\nmax_connections = 7\n[nats]\nstream = \"FROM_FILE\"\n").unwrap();
        let config = Config::load(
            Some(&file),
            &env(&[
                ("RP_NATS__STREAM", "FROM_ENV"),
                ("RP_AUTH__BOOTSTRAP_ADMIN__EMAIL", "admin@example.com"),
                ("RP_AUTH__BOOTSTRAP_ADMIN__PASSWORD", "correct-horse-battery"),
                ("RP_GATEWAY__CORS_ALLOWED_ORIGINS", "https://a.example,https://b.example"),
                ("UNRELATED", "ignored"),
            ]),
        )
        .unwrap();
        assert_eq!(config.database.max_connections, 7);
        assert_eq!(config.nats.stream, "FROM_ENV");
        assert_eq!(config.auth.bootstrap_admin.email.as_deref(), Some("admin@example.com"));
        assert_eq!(config.auth.bootstrap_admin.password.as_ref().unwrap().expose(), "correct-horse-battery");
        assert_eq!(config.gateway.cors_allowed_origins, vec!["https://a.example", "https://b.example"]);
    }

    #[test]
    fn numeric_looking_secrets_stay_strings() {
        let config = Config::load(
            None,
            &env(&[
                ("RP_AUTH__BOOTSTRAP_ADMIN__EMAIL", "a@b.c"),
                ("RP_AUTH__BOOTSTRAP_ADMIN__PASSWORD", "123456789012"),
            ]),
        )
        .unwrap();
        assert_eq!(config.auth.bootstrap_admin.password.unwrap().expose(), "123456789012");
    }

    #[test]
    fn dump_redacts_secrets_and_url_passwords() {
        let config = Config::load(
            None,
            &env(&[
                ("RP_DATABASE__URL", "postgres://rp:s3cr3t-pw@db:5432/rp"),
                ("RP_NATS__URL", "nats://user:natspw@nats:4222"),
                ("RP_AUTH__BOOTSTRAP_ADMIN__EMAIL", "admin@example.com"),
                ("RP_AUTH__BOOTSTRAP_ADMIN__PASSWORD", "very-secret-password"),
            ]),
        )
        .unwrap();
        let dump = config.dump();
        assert!(!dump.contains("s3cr3t-pw"), "{dump}");
        assert!(!dump.contains("natspw"), "{dump}");
        assert!(!dump.contains("very-secret-password"), "{dump}");
        assert!(dump.contains("postgres://rp:***@db:5432/rp"), "{dump}");
        assert!(dump.contains("admin@example.com"));
        let debug = format!("{config:?}");
        assert!(!debug.contains("s3cr3t-pw") && !debug.contains("very-secret-password"));
    }

    #[test]
    fn invalid_values_are_refused_with_the_key_named() {
        let err = Config::load(None, &env(&[("RP_DATABASE__URL", "mysql://x")])).unwrap_err();
        assert!(err.to_string().contains("database.url"), "{err}");
        let err = Config::load(None, &env(&[("RP_DATABASE__MAX_CONNECTIONS", "lots")])).unwrap_err();
        assert!(err.to_string().contains("max_connections"), "{err}");
        let err = Config::load(None, &env(&[("RP_TELEMETRY__LOG_FORMAT", "xml")])).unwrap_err();
        assert!(err.to_string().contains("log_format"), "{err}");
    }

    #[test]
    fn unknown_keys_in_a_file_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("rp.toml");
        std::fs::write(&file, "[databse]\nurl = \"postgres://x\"\n").unwrap();
        let err = Config::load(Some(&file), &HashMap::new()).unwrap_err();
        assert!(err.to_string().contains("databse"), "{err}");
    }
}
