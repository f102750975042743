//! The gateway's own middleware: trust proxy (client IP), rate limits, request-id hygiene, HTTP
//! metrics and the per-request span. CORS, compression, body limits, timeouts, security headers
//! and request ids come from tower-http (see `lib.rs`).

use std::{
    net::{IpAddr, SocketAddr},
    num::NonZeroU32,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    extract::{ConnectInfo, MatchedPath, Request, State},
    http::{HeaderValue, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ipnet::IpNet;
use sha2::{Digest, Sha256};
use tracing::Instrument as _;

use crate::problem::Problem;

/// The client's address after the trust-proxy rules.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

/// Trust proxy: the peer is the client unless it is a trusted proxy, in which case
/// `X-Forwarded-For` is walked from the right, skipping trusted hops; the first untrusted
/// address is the client. Spoofed entries to the left of a real hop are never believed.
pub fn client_ip(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let Some(chain) = forwarded_for else { return peer };
    let mut client = peer;
    for hop in chain.rsplit(',') {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !is_trusted(&ip) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    client
}

#[derive(Clone)]
pub struct TrustProxy(pub Arc<Vec<IpNet>>);

pub async fn trust_proxy(State(trusted): State<TrustProxy>, mut request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let forwarded = request.headers().get("x-forwarded-for").and_then(|v| v.to_str().ok());
    let ip = client_ip(peer, forwarded, &trusted.0);
    request.extensions_mut().insert(ClientIp(ip));
    next.run(request).await
}

/// Per-IP and per-token token buckets (GCRA, from `governor`).
pub struct RateLimits {
    per_ip: DefaultKeyedRateLimiter<IpAddr>,
    per_token: DefaultKeyedRateLimiter<[u8; 32]>,
}

impl RateLimits {
    pub fn new(config: &rp_config::RateLimitConfig) -> Self {
        let quota = |rate: u32, burst: u32| {
            Quota::per_second(NonZeroU32::new(rate).unwrap_or(NonZeroU32::MIN))
                .allow_burst(NonZeroU32::new(burst.max(rate)).unwrap_or(NonZeroU32::MIN))
        };
        Self {
            per_ip: RateLimiter::keyed(quota(config.per_ip_per_second, config.per_ip_burst)),
            per_token: RateLimiter::keyed(quota(config.per_token_per_second, config.per_token_burst)),
        }
    }

    /// Forgets idle keys so memory stays bounded.
    pub fn prune(&self) {
        self.per_ip.retain_recent();
        self.per_token.retain_recent();
        self.per_ip.shrink_to_fit();
        self.per_token.shrink_to_fit();
    }

    fn check(&self, ip: IpAddr, token: Option<&str>) -> Result<(), (Duration, &'static str)> {
        // A clock only when a limit is hit: creating one reads the CPU's features (cpuid), which
        // showed in profiles when done on every request.
        let now = || governor::clock::Clock::now(&governor::clock::DefaultClock::default());
        if let Err(not_until) = self.per_ip.check_key(&ip) {
            return Err((not_until.wait_time_from(now()), "ip"));
        }
        if let Some(token) = token {
            let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
            if let Err(not_until) = self.per_token.check_key(&digest) {
                return Err((not_until.wait_time_from(now()), "token"));
            }
        }
        Ok(())
    }
}

pub async fn rate_limit(State(limits): State<Arc<RateLimits>>, request: Request, next: Next) -> Response {
    let ip = request.extensions().get::<ClientIp>().map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0);
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(rp_identity::bearer);
    match limits.check(ip, token) {
        Ok(()) => next.run(request).await,
        Err((wait, key)) => {
            metrics::counter!(rp_telemetry::metric_names::RATE_LIMITED_TOTAL, "key" => key).increment(1);
            let retry_after = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let whom = if key == "ip" { "your address" } else { "this token" };
            Problem::too_many_requests(
                format!("too many requests from {whom}; retry after {retry_after}s"),
                retry_after,
            )
            .into_response()
        }
    }
}

/// Drops an incoming `x-request-id` that is not a short token of safe characters, so callers
/// cannot inject text into logs; tower-http then generates a fresh one.
pub async fn sanitize_request_id(mut request: Request, next: Next) -> Response {
    let valid = request.headers().get("x-request-id").and_then(|v| v.to_str().ok()).is_none_or(|id| {
        !id.is_empty()
            && id.len() <= 64
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    if !valid {
        request.headers_mut().remove("x-request-id");
    }
    next.run(request).await
}

/// Where the inner router writes the matched route template for the outer `observe` layer
/// (which wraps the router and so cannot see `MatchedPath` itself).
#[derive(Clone, Default)]
struct RouteSlot(Arc<std::sync::OnceLock<String>>);

/// Route layer: records the matched route template.
pub async fn remember_route(request: Request, next: Next) -> Response {
    if let (Some(slot), Some(path)) =
        (request.extensions().get::<RouteSlot>(), request.extensions().get::<MatchedPath>())
    {
        let _ = slot.0.set(path.as_str().to_owned());
    }
    next.run(request).await
}

/// One span per request (child of an incoming `traceparent`), one log line per response, and
/// `http_server_requests_total` / `http_server_request_duration_seconds` by route template.
pub async fn observe(mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let slot = RouteSlot::default();
    request.extensions_mut().insert(slot.clone());
    let request_id =
        request.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let client = request.extensions().get::<ClientIp>().map(|c| c.0.to_string()).unwrap_or_default();
    let span = tracing::info_span!(
        "http.request",
        otel.name = tracing::field::Empty,
        otel.kind = "server",
        http.request.method = %method,
        http.route = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
        client.address = %client,
        request_id = %request_id,
    );
    rp_telemetry::propagation::set_remote_parent(
        &span,
        rp_telemetry::propagation::extract_headers(request.headers()),
    );
    let response = next.run(request).instrument(span.clone()).await;
    let route = slot.0.get().cloned().unwrap_or_else(|| "unmatched".to_owned());
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    span.record("otel.name", format!("{method} {route}"));
    span.record("http.route", route.as_str());
    span.record("http.response.status_code", status);
    span.in_scope(|| {
        tracing::info!(status, latency_ms = elapsed.as_secs_f64() * 1000.0, "{method} {route}");
    });
    metrics::counter!(rp_telemetry::metric_names::HTTP_SERVER_REQUESTS_TOTAL,
        "method" => method.to_string(), "route" => route.clone(), "status" => status.to_string())
    .increment(1);
    metrics::histogram!(rp_telemetry::metric_names::HTTP_SERVER_REQUEST_DURATION_SECONDS,
        "method" => method.to_string(), "route" => route)
    .record(elapsed.as_secs_f64());
    response
}

/// Helmet-style security headers, set unless a handler set its own (built once: every response
/// reads them).
pub static SECURITY_HEADERS: std::sync::LazyLock<Vec<(header::HeaderName, HeaderValue)>> =
    std::sync::LazyLock::new(|| {
        vec![
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
            (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
            (
                header::STRICT_TRANSPORT_SECURITY,
                HeaderValue::from_static("max-age=63072000; includeSubDomains"),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'self'; base-uri 'self'; frame-ancestors 'none'; object-src 'none'; \
                 img-src 'self' data:; style-src 'self' 'unsafe-inline'; connect-src 'self'",
                ),
            ),
            (
                header::HeaderName::from_static("cross-origin-opener-policy"),
                HeaderValue::from_static("same-origin"),
            ),
            (
                header::HeaderName::from_static("cross-origin-resource-policy"),
                HeaderValue::from_static("same-origin"),
            ),
            (header::HeaderName::from_static("x-dns-prefetch-control"), HeaderValue::from_static("off")),
            (
                header::HeaderName::from_static("x-permitted-cross-domain-policies"),
                HeaderValue::from_static("none"),
            ),
            (
                header::HeaderName::from_static("permissions-policy"),
                HeaderValue::from_static("camera=(), microphone=(), geolocation=(), payment=()"),
            ),
        ]
    });

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn untrusted_peers_are_the_client_whatever_they_claim() {
        let ip = client_ip("203.0.113.9".parse().unwrap(), Some("1.2.3.4"), &nets(&["127.0.0.1/32"]));
        assert_eq!(ip.to_string(), "203.0.113.9");
    }

    #[test]
    fn trusted_hops_are_skipped_from_the_right() {
        let trusted = nets(&["127.0.0.1/32", "10.0.0.0/8"]);
        let ip = client_ip("127.0.0.1".parse().unwrap(), Some("6.6.6.6, 198.51.100.7, 10.1.2.3"), &trusted);
        assert_eq!(ip.to_string(), "198.51.100.7", "the spoofed left-most entry is ignored");
        let ip = client_ip("127.0.0.1".parse().unwrap(), None, &trusted);
        assert_eq!(ip.to_string(), "127.0.0.1");
        let ip = client_ip("127.0.0.1".parse().unwrap(), Some("garbage"), &trusted);
        assert_eq!(ip.to_string(), "127.0.0.1");
    }

    #[test]
    fn limits_refuse_beyond_the_burst_with_a_wait() {
        let limits = RateLimits::new(&rp_config::RateLimitConfig {
            per_ip_per_second: 1,
            per_ip_burst: 2,
            per_token_per_second: 1,
            per_token_burst: 1,
        });
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(limits.check(ip, None).is_ok());
        assert!(limits.check(ip, None).is_ok());
        let (wait, key) = limits.check(ip, None).unwrap_err();
        assert_eq!(key, "ip");
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1));
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(limits.check(other, Some("t1")).is_ok());
        assert_eq!(limits.check("192.0.2.3".parse().unwrap(), Some("t1")).unwrap_err().1, "token");
    }
}
