//! The router driver: publishes the desired route (`rp.router.route_updated`, see
//! `releasepilot.events.v1.RouteUpdated`) through the outbox, in the same transaction as the step,
//! so every router replica applies it within milliseconds and none misses it.

use std::collections::BTreeMap;

use async_trait::async_trait;
use rp_events::Event;
use rp_proto::events::v1 as ev;
use serde::Deserialize;

use super::{DesiredState, Driver, DriverError, Outcome, PollResult};

const NAME: &str = "router";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    #[serde(default)]
    pub host: String,
    #[serde(default = "root")]
    pub path_prefix: String,
}

fn root() -> String {
    "/".into()
}

impl Default for RouteMatch {
    /// Every host, every path: what a target without `route` gets.
    fn default() -> Self {
        Self { host: String::new(), path_prefix: root() }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub route: RouteMatch,
    /// Upstream addresses (`host:port`) of each version.
    pub upstreams: BTreeMap<String, Vec<String>>,
}

impl Config {
    pub fn parse(json: &str) -> Result<Self, String> {
        let config: Config =
            serde_json::from_str(json).map_err(|e| format!("router driver settings: {e}"))?;
        if !config.route.path_prefix.starts_with('/') {
            return Err("router route.path_prefix must start with /".into());
        }
        for (version, addresses) in &config.upstreams {
            if addresses.is_empty() {
                return Err(format!("router upstreams of {version} are empty"));
            }
            for address in addresses {
                if address.parse::<std::net::SocketAddr>().is_err() && !address.contains(':') {
                    return Err(format!("router upstream {address:?} must be host:port"));
                }
            }
        }
        Ok(config)
    }
}

pub struct RouterDriver {
    config: Config,
}

impl RouterDriver {
    pub fn from_config(json: &str) -> Result<Self, DriverError> {
        Ok(Self { config: Config::parse(json).map_err(|message| DriverError { driver: NAME, message })? })
    }

    fn backend(&self, version: &str) -> Result<ev::RouteBackend, DriverError> {
        let addresses = self.config.upstreams.get(version).cloned().ok_or_else(|| DriverError {
            driver: NAME,
            message: format!("no upstreams configured for version {version}"),
        })?;
        Ok(ev::RouteBackend { version: version.to_owned(), addresses })
    }
}

#[async_trait]
impl Driver for RouterDriver {
    async fn apply(&self, desired: &DesiredState) -> Result<Outcome, DriverError> {
        let mut backends = vec![self.backend(&desired.canary.version)?];
        if let Some(stable) = &desired.stable
            && stable.version != desired.canary.version
        {
            backends.push(self.backend(&stable.version)?);
        }
        let route = ev::RouteUpdated {
            app: desired.app.clone(),
            environment: desired.environment.clone(),
            r#match: Some(ev::RouteMatch {
                host: self.config.route.host.clone(),
                path_prefix: self.config.route.path_prefix.clone(),
            }),
            backends,
            stable_version: desired.stable.as_ref().map(|s| s.version.clone()).unwrap_or_default(),
            canary_version: desired.canary.version.clone(),
            canary_weight: desired.canary_weight,
            deployment_id: desired.deployment_id.clone(),
            // Across deployments (a rollback is a deployment of its own) only time orders
            // updates; one active deployment per app and environment makes it unambiguous.
            revision: chrono::Utc::now().timestamp_micros(),
        };
        let subject = format!("routes/{}/{}", desired.app, desired.environment);
        Ok(Outcome::Publish(Box::new(Event::new("release", "rp.router.route_updated", subject, &route))))
    }

    async fn poll(&self, _status_url: &str) -> Result<PollResult, DriverError> {
        Ok(PollResult::Succeeded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_without_a_route_serves_every_path() {
        let config = Config::parse(r#"{"upstreams": {"1.0.0": ["127.0.0.1:9001"]}}"#).unwrap();
        assert_eq!((config.route.host.as_str(), config.route.path_prefix.as_str()), ("", "/"));
        let partial = Config::parse(r#"{"route": {"host": "shop.example.com"}, "upstreams": {}}"#).unwrap();
        assert_eq!(partial.route.path_prefix, "/");
        assert!(Config::parse(r#"{"route": {"path_prefix": "shop"}, "upstreams": {}}"#).is_err());
    }
}
