//! Deployment drivers: how a step's desired state reaches the world. `webhook` signs and POSTs it
//! to an external deployer (CI job, Argo CD, script); `router` publishes the route to Release
//! Pilot's own router through the outbox, in the transaction that records the step.

pub mod router;
pub mod webhook;

use async_trait::async_trait;
use rp_events::Event;
use serde::{Deserialize, Serialize};

/// A version as deployers need it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionRef {
    pub version: String,
    pub image: String,
    pub digest: String,
}

/// What a step wants running: the body of a webhook call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DesiredState {
    pub deployment_id: String,
    pub app: String,
    pub environment: String,
    pub strategy: String,
    pub step: i32,
    pub steps: i32,
    /// "weight", "switch" or "restore" (rollbacks and aborts).
    pub action: String,
    /// The version serving before the deployment; absent for a first deployment.
    pub stable: Option<VersionRef>,
    /// The version being deployed.
    pub canary: VersionRef,
    /// Percent of traffic for `canary`; the rest goes to `stable`.
    pub canary_weight: i32,
    pub revision: i64,
    /// Where an asynchronous deployer reports completion (`POST`, signed the same way).
    pub callback_url: String,
}

/// How a driver answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The desired state is in place.
    Done,
    /// Accepted; completion comes by callback, or by polling `status_url`.
    Accepted { status_url: Option<String> },
    /// In place once this event (committed with the step) reaches its consumers.
    Publish(Box<Event>),
}

/// What a poll of an accepted step found.
#[derive(Debug, Clone, PartialEq)]
pub enum PollResult {
    Succeeded,
    Failed(String),
    InProgress,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
#[error("{driver} driver: {message}")]
pub struct DriverError {
    pub driver: &'static str,
    pub message: String,
}

#[async_trait]
pub trait Driver: Send + Sync {
    /// Applies `desired`. Must be idempotent: a step can be applied again after a crash.
    async fn apply(&self, desired: &DesiredState) -> Result<Outcome, DriverError>;

    /// Asks how an accepted step is going.
    async fn poll(&self, status_url: &str) -> Result<PollResult, DriverError>;
}

/// Builds the driver a target names, from its JSON settings.
pub fn from_target(
    driver: &str,
    config_json: &str,
    secret: Option<&str>,
    http: &reqwest::Client,
) -> Result<Box<dyn Driver>, DriverError> {
    match driver {
        "webhook" => Ok(Box::new(webhook::WebhookDriver::from_config(config_json, secret, http.clone())?)),
        "router" => Ok(Box::new(router::RouterDriver::from_config(config_json)?)),
        other => Err(DriverError { driver: "unknown", message: format!("unknown driver {other:?}") }),
    }
}

/// Checks a target's driver settings when they are saved.
pub fn validate_config(driver: &str, config_json: &str) -> Result<(), String> {
    match driver {
        "webhook" => webhook::Config::parse(config_json).map(|_| ()),
        "router" => router::Config::parse(config_json).map(|_| ()),
        other => Err(format!("unknown driver {other:?}; use webhook or router")),
    }
}
