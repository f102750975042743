//! A whole Release Pilot in the test process, on the backend the test run targets. Used by the
//! integration tests of this crate and of the gateway.

use std::net::SocketAddr;

use rp_config::Config;
use rp_runtime::CancellationToken;

use crate::{App, Role};

pub const ADMIN_EMAIL: &str = "admin@example.com";
pub const ADMIN_PASSWORD: &str = "admin-password-for-tests";

/// A running system; stopping it (or dropping it) cancels every role.
pub struct TestSystem {
    pub app: App,
    pub http: reqwest::Client,
    /// Values that must live as long as the system (the test environment's directory).
    guards: Vec<Box<dyn std::any::Any + Send>>,
}

impl TestSystem {
    /// Starts `roles` (all when empty) with a bootstrap admin.
    pub async fn start(mut config: Config, roles: &[Role]) -> anyhow::Result<Self> {
        config.auth.bootstrap_admin.email = Some(ADMIN_EMAIL.into());
        config.auth.bootstrap_admin.password = Some(rp_config::Secret::new(ADMIN_PASSWORD));
        let app = App::start(config, roles, CancellationToken::new()).await?;
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
        Ok(Self { app, http, guards: Vec::new() })
    }

    /// Keeps `guard` (e.g. the test environment owning the data directory) alive with the system.
    pub fn hold(mut self, guard: impl std::any::Any + Send) -> Self {
        self.guards.push(Box::new(guard));
        self
    }

    fn addr(&self, name: &str, admin: bool) -> SocketAddr {
        let service = self.app.service(name).unwrap_or_else(|| panic!("{name} is not running"));
        if admin { service.admin_addr } else { service.primary_addr }
    }

    /// `http://<gateway>` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr("gateway", false))
    }

    /// `http://<admin port of name>` + `path`.
    pub fn admin_url(&self, name: &str, path: &str) -> String {
        format!("http://{}{path}", self.addr(name, true))
    }

    /// `http://<grpc port of name>`.
    pub fn grpc_endpoint(&self, name: &str) -> String {
        format!("http://{}", self.addr(name, false))
    }

    /// Logs in through the gateway; returns the access token.
    pub async fn login(&self, email: &str, password: &str) -> anyhow::Result<String> {
        let response = self
            .http
            .post(self.url("/api/v1/auth/login"))
            .json(&serde_json::json!({ "email": email, "password": password }))
            .send()
            .await?;
        anyhow::ensure!(response.status().is_success(), "login failed: {}", response.text().await?);
        let body: serde_json::Value = response.json().await?;
        Ok(body["access_token"].as_str().unwrap_or_default().to_owned())
    }

    pub async fn admin_token(&self) -> String {
        self.login(ADMIN_EMAIL, ADMIN_PASSWORD).await.expect("admin login")
    }

    /// Creates a user with `roles` (via the API, as admin) and returns their access token.
    pub async fn user_token(&self, email: &str, roles: &[&str]) -> String {
        let admin = self.admin_token().await;
        let password = "user-password-for-tests";
        let response = self
            .http
            .post(self.url("/api/v1/users"))
            .bearer_auth(&admin)
            .json(&serde_json::json!({ "email": email, "password": password, "roles": roles }))
            .send()
            .await
            .expect("create user");
        assert_eq!(response.status(), 201, "{}", response.text().await.unwrap_or_default());
        self.login(email, password).await.expect("user login")
    }

    /// Stops every role and waits for them.
    pub async fn stop(mut self) {
        self.app.stop().await;
    }
}

impl Drop for TestSystem {
    fn drop(&mut self) {
        self.app.shutdown.cancel();
    }
}
