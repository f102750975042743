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
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    connections::{Connections, Lent},
    http1::{self, IdleConnections},
    table::{Balancing, Pool, Route, Routes, Upstream},
};

/// Header that forces a track: `canary` or `stable`.
pub const TRACK_HEADER: &str = "x-rp-track";
/// Response header naming the version that answered (for people and load generators).
pub const VERSION_HEADER: &str = "x-rp-version";

// Header names used on every request, made once: a `&str` name is parsed and validated at
// each use.
const TRACK: HeaderName = HeaderName::from_static(TRACK_HEADER);
const VERSION: HeaderName = HeaderName::from_static(VERSION_HEADER);
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

pub type ProxyBody = Either<Tracked, Full<Bytes>>;

/// The client at the other end of a downstream connection.
pub struct Peer {
    ip: IpAddr,
    /// `x-forwarded-for` for requests that bring none, made once per connection.
    pub(crate) forwarded_for: HeaderValue,
}

impl Peer {
    pub fn new(ip: IpAddr) -> Self {
        let forwarded_for =
            HeaderValue::from_str(&ip.to_string()).expect("an IP address is a valid header value");
        Self { ip, forwarded_for }
    }
}

/// Settings of the request path.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    pub balancing: Balancing,
    pub passive_failure_threshold: u32,
    pub ejection: Duration,
    pub upstream_timeout: Duration,
}

pub struct Proxy {
    routes: Arc<Routes>,
    /// Upstream connections of the hyper path (HTTP/2 clients, HTTP/2 upstreams).
    connections: Arc<Connections>,
    /// Upstream connections of the HTTP/1 path (`http1`).
    pub(crate) idle: IdleConnections,
    pub(crate) settings: ProxySettings,
}

/// Where a request goes: its route, track and upstream.
pub struct Selection {
    pub route: Arc<Route>,
    pub track: Track,
    pub pool: Arc<Pool>,
    pub upstream: Arc<Upstream>,
    /// The client gets a sticky cookie for `track` with the answer.
    pub set_cookie: bool,
}

impl Selection {
    /// The `Set-Cookie` value for the answer, if one is due.
    pub fn cookie(&self) -> Option<&HeaderValue> {
        self.set_cookie.then(|| match self.track {
            Track::Stable => &self.route.set_cookie_stable,
            Track::Canary => &self.route.set_cookie_canary,
        })
    }
}

/// Decrements an upstream's in-flight count when the response body is done (or dropped).
pub struct InFlight(pub(crate) Arc<Upstream>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A streamed upstream body that keeps its upstream counted as busy until it ends, and hands
/// its HTTP/1 connection back for the next request when it ended cleanly.
pub struct Tracked {
    inner: Incoming,
    in_flight: InFlight,
    connection: Option<(Arc<Connections>, Lent)>,
    ended: bool,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Some((connections, sender)) = self.connection.take()
            && (self.ended || self.inner.is_end_stream())
        {
            connections.put(&self.in_flight.0.address, sender);
        }
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
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    KEEP_ALIVE,
    PROXY_CONNECTION,
];

/// Removes the hop-by-hop headers, and those the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages have none. Comparing the few names present is cheaper than nine removals,
    // each of which hashes its name and probes the map.
    if !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return;
    }
    if let Some(listed) = headers.get(header::CONNECTION).and_then(|v| v.to_str().ok()).map(str::to_owned) {
        for name in listed.split(',') {
            if let Ok(name) = HeaderName::from_bytes(name.trim().as_bytes()) {
                headers.remove(name);
            }
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Track {
    Stable,
    Canary,
}

/// The track an `x-rp-track` value forces.
pub fn forced_track(value: &[u8]) -> Option<Track> {
    match value {
        b"canary" => Some(Track::Canary),
        b"stable" => Some(Track::Stable),
        _ => None,
    }
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<Track> {
    cookie_track(headers.get_all(header::COOKIE).iter().map(HeaderValue::as_bytes), name)
}

/// The track the sticky cookie `name` names in `Cookie` field values.
pub fn cookie_track<'v>(values: impl Iterator<Item = &'v [u8]>, name: &str) -> Option<Track> {
    values.filter_map(|v| std::str::from_utf8(v).ok()).flat_map(|v| v.split(';')).find_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        (key == name).then(|| forced_track(value.as_bytes()))?
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
        let connections = Arc::new(Connections::new(http2, idle_timeout, max_idle_per_host));
        let idle = IdleConnections::new(idle_timeout, max_idle_per_host);
        Self { routes, connections, idle, settings }
    }

    /// Route, track and upstream for a request, or the router's own answer refusing it.
    pub(crate) fn select(
        &self,
        host: &str,
        path: &str,
        forced: Option<Track>,
        sticky: impl FnOnce(&str) -> Option<Track>,
        started: Instant,
    ) -> Result<Selection, (StatusCode, &'static str)> {
        let table = self.routes.snapshot();
        let route =
            table.find(host, path).ok_or((StatusCode::NOT_FOUND, "no route for this host and path\n"))?;
        let now = now_ms();
        let (track, pool, set_cookie) = self
            .choose(route, forced, sticky, now)
            .ok_or((StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream\n"))?;
        let Some(upstream) = pool.pick(self.settings.balancing, now) else {
            pool.stats.record(503, started.elapsed());
            return Err((StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream\n"));
        };
        Ok(Selection { route: route.clone(), track, pool: pool.clone(), upstream, set_cookie })
    }

    /// Statistics and passive failure detection for an answer from the upstream.
    pub(crate) fn answered(&self, selection: &Selection, status: u16, started: Instant) {
        let upstream = &selection.upstream;
        if matches!(status, 502..=504) {
            self.failed(upstream);
        } else if upstream.request_failures.load(Ordering::Relaxed) != 0 {
            // Read first: a store on every request would bounce the line between threads.
            upstream.request_failures.store(0, Ordering::Relaxed);
        }
        selection.pool.stats.record(status, started.elapsed());
    }

    /// Statistics and passive failure detection for an upstream that did not answer; the
    /// router answers `status` in its place.
    pub(crate) fn unanswered(&self, selection: &Selection, status: u16, started: Instant) {
        self.failed(&selection.upstream);
        selection.pool.stats.record(status, started.elapsed());
    }

    /// Chooses a track: the header, then the sticky cookie while both versions take traffic,
    /// then the weight. Falls back to the other track when the chosen one has no upstream left.
    fn choose<'a>(
        &self,
        route: &'a Route,
        forced: Option<Track>,
        sticky: impl FnOnce(&str) -> Option<Track>,
        now: u64,
    ) -> Option<(Track, &'a Arc<Pool>, bool)> {
        let weight = route.canary_weight;
        let split = route.stable.is_some() && route.canary.is_some() && weight > 0 && weight < 100;
        // The cookie is only looked for while both versions take traffic.
        let sticky = if split { sticky(&route.sticky_cookie) } else { None };
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
        client: &Peer,
    ) -> Response<ProxyBody> {
        let started = Instant::now();
        // A header value is a cheap handle (shared bytes); a String would be one more allocation.
        let host_value = request
            .headers()
            .get(header::HOST)
            .cloned()
            .or_else(|| request.uri().host().and_then(|host| HeaderValue::from_str(host).ok()));
        let host = host_value.as_ref().and_then(|v| v.to_str().ok()).unwrap_or_default();
        let forced = request.headers().get(&TRACK).and_then(|v| forced_track(v.as_bytes()));
        let headers = request.headers();
        let selection =
            match self.select(host, request.uri().path(), forced, |name| cookie(headers, name), started) {
                Ok(selection) => selection,
                Err((status, message)) => return plain(status, message),
            };
        let (pool, upstream) = (&selection.pool, &selection.upstream);

        let path_and_query =
            request.uri().path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
        if self.connections.is_http2() {
            // HTTP/2 carries the authority in the request target.
            let Some(authority) = upstream.authority.clone() else {
                pool.stats.record(502, started.elapsed());
                return plain(StatusCode::BAD_GATEWAY, "invalid upstream address\n");
            };
            let mut parts = http::uri::Parts::default();
            parts.scheme = Some(http::uri::Scheme::HTTP);
            parts.authority = Some(authority);
            parts.path_and_query = Some(path_and_query);
            let Ok(uri) = http::Uri::from_parts(parts) else {
                return plain(StatusCode::BAD_REQUEST, "invalid request target\n");
            };
            *request.uri_mut() = uri;
        } else {
            // HTTP/1.1 upstreams get the origin form; the host travels in `Host`.
            *request.uri_mut() = http::Uri::from(path_and_query);
        }
        *request.version_mut() = http::Version::HTTP_11;
        let headers = request.headers_mut();
        strip_hop_by_hop(headers);
        let forwarded_for = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(existing) => HeaderValue::from_str(&format!("{existing}, {}", client.ip)).ok(),
            None => Some(client.forwarded_for.clone()),
        };
        if let Some(value) = forwarded_for {
            headers.insert(X_FORWARDED_FOR, value);
        }
        headers.entry(X_FORWARDED_PROTO).or_insert(HeaderValue::from_static("http"));
        if let Some(value) = host_value {
            if !self.connections.is_http2() && !headers.contains_key(header::HOST) {
                // A request that came over HTTP/2 names its host only in the target.
                headers.insert(header::HOST, value.clone());
            }
            headers.entry(X_FORWARDED_HOST).or_insert(value);
        }

        upstream.in_flight.fetch_add(1, Ordering::Relaxed);
        let in_flight = InFlight(upstream.clone());
        let answer = tokio::time::timeout(
            self.settings.upstream_timeout,
            self.connections.send(&upstream.address, request),
        )
        .await;
        let mut response = match answer {
            Ok(Ok((response, connection))) => {
                self.answered(&selection, response.status().as_u16(), started);
                let connection = connection.map(|sender| (self.connections.clone(), sender));
                response
                    .map(|body| Either::Left(Tracked { inner: body, in_flight, connection, ended: false }))
            }
            Ok(Err(err)) => {
                drop(in_flight);
                tracing::debug!(upstream = %upstream.address, error = %err, "upstream request failed");
                self.unanswered(&selection, 502, started);
                plain(StatusCode::BAD_GATEWAY, "upstream unavailable\n")
            }
            Err(_) => {
                drop(in_flight);
                self.unanswered(&selection, 504, started);
                plain(StatusCode::GATEWAY_TIMEOUT, "upstream timed out\n")
            }
        };
        let headers = response.headers_mut();
        strip_hop_by_hop(headers);
        if let Some(value) = &pool.version_header {
            headers.insert(VERSION, value.clone());
        }
        if let Some(cookie) = selection.cookie() {
            headers.append(header::SET_COOKIE, cookie.clone());
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
/// the upstream connection is driven by a task of its own. On a
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
    // Each idle client connection waits on the token, and a wait registers in a list behind the
    // token's lock: one token per thread keeps that lock to its thread (the parent cancels it).
    let shutdown = shutdown.child_token();
    runtime.block_on(async move {
        let tasks = tokio_util::task::TaskTracker::new();
        loop {
            let (stream, peer) = tokio::select! {
                _ = shutdown.cancelled() => break,
                next = connections.recv() => match next {
                    Some(accepted) => accepted,
                    None => break,
                },
            };
            let Ok(stream) = tokio::net::TcpStream::from_std(stream) else { continue };
            let (proxy, peer, shutdown) = (proxy.clone(), Peer::new(peer.ip()), shutdown.clone());
            if proxy.connections.is_http2() {
                // HTTP/2 upstreams: hyper on both sides, whichever version the client speaks.
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let service = service(proxy, Arc::new(peer));
                let connection = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                tasks.spawn(until_done(connection, shutdown));
            } else {
                tasks.spawn(async move {
                    if let http1::Served::Http2(stream) = http1::serve(&proxy, stream, &peer, &shutdown).await
                    {
                        let builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                        let connection =
                            builder.serve_connection(TokioIo::new(stream), service(proxy, Arc::new(peer)));
                        until_done(connection, shutdown).await;
                    }
                });
            }
        }
        // In-flight requests finish (bounded by the process grace period); idle connections close.
        tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(10), tasks.wait()).await;
    });
    let _ = done.send(());
}

/// The hyper service of one client connection.
fn service(
    proxy: Arc<Proxy>,
    peer: Arc<Peer>,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<ProxyBody>,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<Response<ProxyBody>, std::convert::Infallible>> + Send,
> + Clone {
    hyper::service::service_fn(move |request| {
        let (proxy, peer) = (proxy.clone(), peer.clone());
        async move { Ok::<_, std::convert::Infallible>(proxy.handle(request, &peer).await) }
    })
}

/// Drives a hyper connection to its end, or to a graceful end once `shutdown` fires.
async fn until_done<C>(connection: C, shutdown: CancellationToken)
where
    C: hyper_util::server::graceful::GracefulConnection,
    C::Error: std::fmt::Display,
{
    let mut connection = std::pin::pin!(connection);
    let ended = tokio::select! {
        ended = connection.as_mut() => ended,
        () = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(err) = ended {
        tracing::debug!(error = %err, "client connection ended");
    }
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

        // Only `proxy-connection` (a non-standard name) among ordinary ones.
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("shop"));
        headers.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.keys().collect::<Vec<_>>(), [header::HOST]);
        // Nothing to remove: left as it was.
        headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 2);
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
