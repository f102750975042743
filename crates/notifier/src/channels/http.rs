//! HTTP for webhook, Slack and PagerDuty channels, behind the SSRF guard: host names resolve
//! through a resolver that drops refused addresses (so the address checked is the address
//! connected to), literal addresses are checked before sending, and redirects are not followed.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::{Answer, SendError};
use crate::domain::ssrf;

/// The guard's refusal, recognisable in reqwest's error chain.
#[derive(Debug, thiserror::Error)]
#[error("refused by the SSRF guard: {0}")]
pub struct Refused(pub String);

struct GuardedResolver {
    allowed: Arc<Vec<IpNet>>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allowed = self.allowed.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let (kept, refused): (Vec<SocketAddr>, Vec<SocketAddr>) =
                addrs.into_iter().partition(|addr| ssrf::check(addr.ip(), &allowed).is_ok());
            if kept.is_empty() {
                let reason = match refused.first() {
                    Some(addr) => ssrf::check(addr.ip(), &allowed).err().unwrap_or_default(),
                    None => format!("{host} does not resolve"),
                };
                return Err(Box::new(Refused(format!("{host}: {reason}")))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(kept.into_iter()) as Addrs)
        })
    }
}

/// Checks that `host` resolves only to addresses the guard accepts.
pub async fn check_host(host: &str, allowed: &[IpNet]) -> Result<(), String> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<IpAddr>() {
        return ssrf::check(ip, allowed).map_err(|e| format!("{host}: {e}"));
    }
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, 0))
        .await
        .map_err(|e| format!("{host} does not resolve: {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("{host} does not resolve"));
    }
    for addr in addrs {
        ssrf::check(addr.ip(), allowed).map_err(|e| format!("{host} resolves to {e}"))?;
    }
    Ok(())
}

/// Checks an http(s) URL: its scheme, and its host against the guard.
pub async fn check_url(url: &str, allowed: &[IpNet]) -> Result<reqwest::Url, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("{url:?} must be an http or https URL"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("URLs must not carry credentials; use the channel's secrets".into());
    }
    let host = parsed.host_str().ok_or_else(|| format!("{url:?} has no host"))?;
    check_host(host, allowed).await?;
    Ok(parsed)
}

/// The guarded client.
#[derive(Clone)]
pub struct GuardedHttp {
    client: reqwest::Client,
    allowed: Arc<Vec<IpNet>>,
    excerpt_bytes: usize,
}

impl GuardedHttp {
    pub fn new(allowed: Vec<IpNet>, timeout: Duration, excerpt_bytes: usize) -> anyhow::Result<Self> {
        let allowed = Arc::new(allowed);
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolver { allowed: allowed.clone() }))
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("ReleasePilot-Notifier/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { client, allowed, excerpt_bytes })
    }

    pub fn allowed(&self) -> &[IpNet] {
        &self.allowed
    }

    /// POSTs `body` to `url` with `headers`; any answer is an [`Answer`], no answer an error.
    pub async fn post(
        &self,
        url: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> Result<Answer, SendError> {
        let parsed = reqwest::Url::parse(url).map_err(|e| SendError::Permanent(format!("bad URL: {e}")))?;
        if let Some(host) = parsed.host_str() {
            let literal = host.trim_start_matches('[').trim_end_matches(']');
            if let Ok(ip) = literal.parse::<IpAddr>() {
                ssrf::check(ip, &self.allowed).map_err(SendError::Refused)?;
            }
        }
        let mut request = self.client.post(parsed).body(body);
        for (name, value) in headers {
            request = request.header(*name, value.as_str());
        }
        let started = Instant::now();
        let response = request.send().await.map_err(|err| match refusal(&err) {
            Some(reason) => SendError::Refused(reason),
            None => SendError::Transient(error_chain(&err)),
        })?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = response.bytes().await.unwrap_or_default();
        let cut = bytes.len().min(self.excerpt_bytes);
        Ok(Answer {
            status_code: status,
            excerpt: String::from_utf8_lossy(&bytes[..cut]).into_owned(),
            retry_after,
            latency: started.elapsed(),
        })
    }
}

fn refusal(err: &reqwest::Error) -> Option<String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(current) = source {
        if let Some(refused) = current.downcast_ref::<Refused>() {
            return Some(refused.0.clone());
        }
        source = current.source();
    }
    None
}

/// An error with its causes, for the delivery log (never secrets: URLs are left out).
pub fn error_chain(err: &reqwest::Error) -> String {
    let mut text = if err.is_timeout() {
        "timed out".to_owned()
    } else if err.is_connect() {
        "cannot connect".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn names_and_literals_resolving_inside_are_refused_before_connecting() {
        let http = GuardedHttp::new(Vec::new(), Duration::from_secs(1), 64).unwrap();
        for url in ["http://localhost:9/x", "http://127.0.0.1:9/x", "http://[::1]:9/x", "http://10.0.0.1/x"] {
            match http.post(url, &[], b"{}".to_vec()).await {
                Err(SendError::Refused(reason)) => assert!(reason.contains("address"), "{url}: {reason}"),
                other => panic!("{url}: {other:?}"),
            }
        }
        assert!(check_url("http://localhost:9/x", &[]).await.unwrap_err().contains("loopback"));
        assert!(check_url("file:///etc/passwd", &[]).await.is_err());
        assert!(check_url("http://user:pw@example.com/", &[]).await.unwrap_err().contains("credentials"));
        let allowed: Vec<IpNet> = vec!["127.0.0.0/8".parse().unwrap()];
        assert!(check_url("http://127.0.0.1:9/x", &allowed).await.is_ok());
    }
}
