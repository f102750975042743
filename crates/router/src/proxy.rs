//! The request path: route lookup, track choice (header override, sticky cookie, weight),
//! upstream choice, forwarding with streaming bodies over pooled keep-alive connections, passive
//! failure detection and statistics.

use std::{
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{Arc, atomic::Ordering},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, header, uri::PathAndQuery};
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo},
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::table::{Balancing, Pool, Route, Routes, Upstream};

/// Header that forces a track: `canary` or `stable`.
pub const TRACK_HEADER: &str = "x-rp-track";
/// Response header naming the version that answered (for people and load generators).
pub const VERSION_HEADER: &str = "x-rp-version";

pub type ProxyBody = Either<Tracked<Incoming>, Full<Bytes>>;

/// Settings of the request path.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    pub balancing: Balancing,
    pub sticky_cookie: String,
    pub passive_failure_threshold: u32,
    pub ejection: Duration,
    pub upstream_timeout: Duration,
}

pub struct Proxy {
    routes: Arc<Routes>,
    client: Client<HttpConnector, Incoming>,
    settings: ProxySettings,
}

/// Decrements an upstream's in-flight count when the response body is done (or dropped).
pub struct InFlight(Arc<Upstream>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A streamed upstream body that keeps its upstream counted as busy until it ends.
pub struct Tracked<B> {
    inner: B,
    _in_flight: InFlight,
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

fn plain(status: StatusCode, message: &'static str) -> Response<ProxyBody> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::from_static(message.as_bytes()))));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) never cross the proxy.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if let Some(listed) = headers.get(header::CONNECTION).and_then(|v| v.to_str().ok()).map(str::to_owned) {
        for name in listed.split(',') {
            if let Ok(name) = HeaderName::from_bytes(name.trim().as_bytes()) {
                headers.remove(name);
            }
        }
    }
    for name in [
        header::CONNECTION,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Track {
    Stable,
    Canary,
}

impl Track {
    fn as_str(self) -> &'static str {
        match self {
            Track::Stable => "stable",
            Track::Canary => "canary",
        }
    }
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<Track> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key == name).then_some(match value {
                "canary" => Some(Track::Canary),
                "stable" => Some(Track::Stable),
                _ => None,
            })?
        })
}

impl Proxy {
    pub fn new(
        routes: Arc<Routes>,
        settings: ProxySettings,
        idle_timeout: Duration,
        max_idle_per_host: usize,
        http2: bool,
    ) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_keepalive(Some(Duration::from_secs(60)));
        connector.set_connect_timeout(Some(Duration::from_secs(3)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(idle_timeout)
            .pool_max_idle_per_host(max_idle_per_host)
            .http2_only(http2)
            .build(connector);
        Self { routes, client, settings }
    }

    /// The sticky cookie of `route`'s app: `<router.sticky_cookie>_<app>`.
    fn cookie_name(&self, route: &Route) -> String {
        format!("{}_{}", self.settings.sticky_cookie, route.app)
    }

    /// Chooses a track: the header, then the sticky cookie while both versions take traffic,
    /// then the weight. Falls back to the other track when the chosen one has no upstream left.
    fn choose<'a>(&self, route: &'a Route, headers: &HeaderMap) -> Option<(Track, &'a Arc<Pool>, bool)> {
        let now = now_ms();
        let weight = route.canary_weight;
        let split = route.stable.is_some() && route.canary.is_some() && weight > 0 && weight < 100;
        let forced = headers.get(TRACK_HEADER).and_then(|v| v.to_str().ok()).and_then(|v| match v {
            "canary" => Some(Track::Canary),
            "stable" => Some(Track::Stable),
            _ => None,
        });
        // The cookie is only looked for while both versions take traffic.
        let sticky = if split { cookie(headers, &self.cookie_name(route)) } else { None };
        let mut new_cookie = false;
        let wanted = match (forced, sticky) {
            (Some(track), _) => track,
            (None, Some(track)) => track,
            (None, None) => {
                new_cookie = split;
                match (&route.stable, &route.canary) {
                    (None, Some(_)) => Track::Canary,
                    (Some(_), None) => Track::Stable,
                    _ if weight >= 100 => Track::Canary,
                    _ if weight == 0 => Track::Stable,
                    _ => {
                        if rand::random::<u32>() % 100 < weight {
                            Track::Canary
                        } else {
                            Track::Stable
                        }
                    }
                }
            }
        };
        let pool_of = |track: Track| match track {
            Track::Canary => route.canary.as_ref(),
            Track::Stable => route.stable.as_ref(),
        };
        let other = match wanted {
            Track::Canary => Track::Stable,
            Track::Stable => Track::Canary,
        };
        match pool_of(wanted) {
            Some(pool) if pool.has_available(now) => Some((wanted, pool, new_cookie)),
            _ => pool_of(other).filter(|p| p.has_available(now)).map(|p| (other, p, false)),
        }
    }

    pub async fn handle(
        self: Arc<Self>,
        mut request: Request<Incoming>,
        client: IpAddr,
    ) -> Response<ProxyBody> {
        let started = Instant::now();
        let table = self.routes.snapshot();
        // A header value is a cheap handle (shared bytes); a String would be one more allocation.
        let host_value = request
            .headers()
            .get(header::HOST)
            .cloned()
            .or_else(|| request.uri().host().and_then(|host| HeaderValue::from_str(host).ok()));
        let host = host_value.as_ref().and_then(|v| v.to_str().ok()).unwrap_or_default();
        let Some(route) = table.find(host, request.uri().path()).cloned() else {
            return plain(StatusCode::NOT_FOUND, "no route for this host and path\n");
        };
        let Some((track, pool, set_cookie)) = self.choose(&route, request.headers()) else {
            return plain(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream\n");
        };
        let pool = pool.clone();
        let Some(upstream) = pool.pick(self.settings.balancing, now_ms()) else {
            pool.stats.record(503, started.elapsed());
            return plain(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream\n");
        };

        let Some(authority) = upstream.authority.clone() else {
            pool.stats.record(502, started.elapsed());
            return plain(StatusCode::BAD_GATEWAY, "invalid upstream address\n");
        };
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(http::uri::Scheme::HTTP);
        parts.authority = Some(authority);
        parts.path_and_query =
            Some(request.uri().path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/")));
        let Ok(uri) = http::Uri::from_parts(parts) else {
            return plain(StatusCode::BAD_REQUEST, "invalid request target\n");
        };
        *request.uri_mut() = uri;
        *request.version_mut() = http::Version::HTTP_11;
        let headers = request.headers_mut();
        strip_hop_by_hop(headers);
        let forwarded_for = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(existing) => format!("{existing}, {client}"),
            None => client.to_string(),
        };
        if let Ok(value) = HeaderValue::from_str(&forwarded_for) {
            headers.insert("x-forwarded-for", value);
        }
        headers.entry("x-forwarded-proto").or_insert(HeaderValue::from_static("http"));
        if let Some(value) = host_value {
            headers.entry("x-forwarded-host").or_insert(value);
        }

        upstream.in_flight.fetch_add(1, Ordering::Relaxed);
        let in_flight = InFlight(upstream.clone());
        let answer = tokio::time::timeout(self.settings.upstream_timeout, self.client.request(request)).await;
        let mut response = match answer {
            Ok(Ok(response)) => {
                let status = response.status();
                if matches!(status.as_u16(), 502..=504) {
                    self.failed(&upstream);
                } else {
                    upstream.request_failures.store(0, Ordering::Relaxed);
                }
                pool.stats.record(status.as_u16(), started.elapsed());
                response.map(|body| Either::Left(Tracked { inner: body, _in_flight: in_flight }))
            }
            Ok(Err(err)) => {
                drop(in_flight);
                self.failed(&upstream);
                tracing::debug!(upstream = %upstream.address, error = %err, "upstream request failed");
                pool.stats.record(502, started.elapsed());
                plain(StatusCode::BAD_GATEWAY, "upstream unavailable\n")
            }
            Err(_) => {
                drop(in_flight);
                self.failed(&upstream);
                pool.stats.record(504, started.elapsed());
                plain(StatusCode::GATEWAY_TIMEOUT, "upstream timed out\n")
            }
        };
        let headers = response.headers_mut();
        strip_hop_by_hop(headers);
        if let Some(value) = &pool.version_header {
            headers.insert(VERSION_HEADER, value.clone());
        }
        if set_cookie {
            let value = format!(
                "{}={}; Path=/; Max-Age=3600; HttpOnly; SameSite=Lax",
                self.cookie_name(&route),
                track.as_str()
            );
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.append(header::SET_COOKIE, value);
            }
        }
        response
    }

    /// Passive detection: enough consecutive failures eject the upstream for a while.
    fn failed(&self, upstream: &Upstream) {
        let failures = upstream.request_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= self.settings.passive_failure_threshold {
            upstream
                .ejected_until_ms
                .store(now_ms() + self.settings.ejection.as_millis() as u64, Ordering::Relaxed);
            upstream.request_failures.store(0, Ordering::Relaxed);
            tracing::warn!(upstream = %upstream.address, "upstream ejected after consecutive failures");
        }
    }
}

/// Accepts connections until `shutdown` and hands them round-robin to one thread per proxy,
/// each serving HTTP/1.1 and HTTP/2 on its own single-threaded runtime.
///
/// Why not the shared work-stealing runtime: a proxied request crosses two connections, and
/// with hyper's pooled client the upstream connection is driven by a task of its own. On a
/// work-stealing runtime the two tasks land on different threads, so every request pays for
/// cross-thread wake-ups. Here a connection, its requests and the upstream connections they
/// use stay on one thread (each proxy has its own pool), the way nginx's workers run.
pub async fn serve(listener: TcpListener, proxies: Vec<Arc<Proxy>>, shutdown: CancellationToken) {
    let mut workers = Vec::with_capacity(proxies.len());
    let mut finished = Vec::with_capacity(proxies.len());
    for (index, proxy) in proxies.into_iter().enumerate() {
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        let (done, done_receiver) = tokio::sync::oneshot::channel();
        let shutdown = shutdown.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("rp-proxy-{index}"))
            .spawn(move || serve_on_this_thread(proxy, receiver, shutdown, done));
        match spawned {
            Ok(_) => {
                workers.push(sender);
                finished.push(done_receiver);
            }
            Err(err) => tracing::error!(error = %err, "could not start a proxy thread"),
        }
    }
    if workers.is_empty() {
        tracing::error!("no proxy thread could start; the router serves nothing");
        shutdown.cancelled().await;
        return;
    }
    let mut next = 0;
    loop {
        let (stream, peer): (tokio::net::TcpStream, SocketAddr) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        // Moved between runtimes as a std socket: it is registered again on the worker's.
        let Ok(stream) = stream.into_std() else { continue };
        let _ = workers[next % workers.len()].send((stream, peer));
        next = next.wrapping_add(1);
    }
    drop(workers);
    // Each thread lets its in-flight requests finish (bounded by the process grace period).
    for done in finished {
        let _ = done.await;
    }
}

type Accepted = (std::net::TcpStream, SocketAddr);

fn serve_on_this_thread(
    proxy: Arc<Proxy>,
    mut connections: tokio::sync::mpsc::UnboundedReceiver<Accepted>,
    shutdown: CancellationToken,
    done: tokio::sync::oneshot::Sender<()>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::error!(error = %err, "could not start a proxy thread's runtime");
            return;
        }
    };
    runtime.block_on(async move {
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        loop {
            let (stream, peer) = tokio::select! {
                _ = shutdown.cancelled() => break,
                next = connections.recv() => match next {
                    Some(accepted) => accepted,
                    None => break,
                },
            };
            let Ok(stream) = tokio::net::TcpStream::from_std(stream) else { continue };
            let proxy = proxy.clone();
            let service = hyper::service::service_fn(move |request| {
                let proxy = proxy.clone();
                async move { Ok::<_, std::convert::Infallible>(proxy.handle(request, peer.ip()).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let connection = builder.serve_connection(TokioIo::new(stream), service).into_owned();
            tokio::spawn(graceful.watch(connection));
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), graceful.shutdown()).await;
    });
    let _ = done.send(());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-secret"));
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        headers.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key("x-keep"));
    }

    #[test]
    fn sticky_cookies_are_read_per_app() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; rp_track_shop=canary; rp_track_web=stable"),
        );
        assert_eq!(cookie(&headers, "rp_track_shop"), Some(Track::Canary));
        assert_eq!(cookie(&headers, "rp_track_web"), Some(Track::Stable));
        assert_eq!(cookie(&headers, "rp_track_api"), None);
    }
}
