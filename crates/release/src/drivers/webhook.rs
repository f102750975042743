//! The webhook driver: a signed POST of the desired state to an external deployer. 2xx means
//! done; 202 means accepted (completion by callback, or by polling the `status_url` the body
//! names); 408, 429, 5xx and network errors are retried with backoff; other 4xx fail at once.

use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use super::{DesiredState, Driver, DriverError, Outcome, PollResult};

const NAME: &str = "webhook";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub url: String,
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
}

fn default_timeout() -> u64 {
    10
}

fn default_attempts() -> u32 {
    3
}

impl Config {
    pub fn parse(json: &str) -> Result<Self, String> {
        let config: Config =
            serde_json::from_str(json).map_err(|e| format!("webhook driver settings: {e}"))?;
        let url = reqwest::Url::parse(&config.url).map_err(|e| format!("webhook url: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("webhook url must be http or https".into());
        }
        if !(1..=120).contains(&config.timeout_seconds) || !(1..=10).contains(&config.max_attempts) {
            return Err("webhook timeout_seconds must be 1-120 and max_attempts 1-10".into());
        }
        Ok(config)
    }
}

pub struct WebhookDriver {
    config: Config,
    secret: Option<String>,
    http: reqwest::Client,
}

impl WebhookDriver {
    pub fn from_config(json: &str, secret: Option<&str>, http: reqwest::Client) -> Result<Self, DriverError> {
        let config = Config::parse(json).map_err(|message| DriverError { driver: NAME, message })?;
        Ok(Self { config, secret: secret.map(str::to_owned), http })
    }

    fn error(message: impl Into<String>) -> DriverError {
        DriverError { driver: NAME, message: message.into() }
    }
}

#[derive(Deserialize, Default)]
struct Accepted {
    status_url: Option<String>,
}

#[derive(Deserialize)]
struct Status {
    status: String,
    #[serde(default)]
    message: String,
}

/// The first characters of a response body, for error messages.
fn excerpt(body: &str) -> String {
    let trimmed: String = body.chars().take(200).collect();
    trimmed.replace(['\n', '\r'], " ")
}

#[async_trait]
impl Driver for WebhookDriver {
    async fn apply(&self, desired: &DesiredState) -> Result<Outcome, DriverError> {
        let body = serde_json::to_vec(desired).map_err(|e| Self::error(e.to_string()))?;
        // Stable per step and revision: a retried delivery carries the same id.
        let id = format!("msg_{}_{}_{}", desired.deployment_id, desired.step, desired.revision);
        let mut last_error = String::new();
        for attempt in 1..=self.config.max_attempts {
            let timestamp = chrono::Utc::now().timestamp();
            let mut request = self
                .http
                .post(&self.config.url)
                .timeout(Duration::from_secs(self.config.timeout_seconds))
                .header("content-type", "application/json")
                .header(rp_webhooks::HEADER_ID, &id)
                .header(rp_webhooks::HEADER_TIMESTAMP, timestamp.to_string())
                .body(body.clone());
            if let Some(secret) = &self.secret {
                let signature = rp_webhooks::sign(secret, &id, timestamp, &body)
                    .map_err(|e| Self::error(e.to_string()))?;
                request = request.header(rp_webhooks::HEADER_SIGNATURE, signature);
            }
            let retryable = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    let text = response.text().await.unwrap_or_default();
                    if status.as_u16() == 202 {
                        let accepted: Accepted = serde_json::from_str(&text).unwrap_or_default();
                        return Ok(Outcome::Accepted { status_url: accepted.status_url });
                    }
                    if status.is_success() {
                        return Ok(Outcome::Done);
                    }
                    last_error = format!("{} answered {status}: {}", self.config.url, excerpt(&text));
                    status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429
                }
                Err(err) => {
                    last_error = format!("{} unreachable: {err}", self.config.url);
                    true
                }
            };
            if !retryable || attempt == self.config.max_attempts {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250 * 2u64.pow(attempt - 1))).await;
        }
        Err(Self::error(format!("{last_error} (after {} attempt(s))", self.config.max_attempts)))
    }

    async fn poll(&self, status_url: &str) -> Result<PollResult, DriverError> {
        let response = self
            .http
            .get(status_url)
            .timeout(Duration::from_secs(self.config.timeout_seconds))
            .send()
            .await
            .map_err(|e| Self::error(format!("status {status_url} unreachable: {e}")))?;
        if !response.status().is_success() {
            return Err(Self::error(format!("status {status_url} answered {}", response.status())));
        }
        let status: Status =
            response.json().await.map_err(|e| Self::error(format!("status {status_url}: {e}")))?;
        Ok(match status.status.as_str() {
            "succeeded" => PollResult::Succeeded,
            "failed" => PollResult::Failed(if status.message.is_empty() {
                "the deployer reported failure".into()
            } else {
                status.message
            }),
            _ => PollResult::InProgress,
        })
    }
}
