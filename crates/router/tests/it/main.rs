//! The router in front of real demo apps, fed with route updates through the bus (in-process or
//! JetStream, per `RELEASE_PILOT_TEST_BACKEND`).

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use demo_app::{DemoApp, Knobs};
use futures::StreamExt as _;
use rp_events::{Event, SharedBus};
use rp_proto::events::v1 as ev;
use rp_runtime::{CancellationToken, Listeners, RunningService};
use rp_test_support::{TestEnv, eventually};

const WAIT: Duration = Duration::from_secs(20);

struct Harness {
    _env: TestEnv,
    bus: SharedBus,
    router: RunningService,
    http: reqwest::Client,
    revision: std::sync::atomic::AtomicI64,
    _stop: tokio_util::sync::DropGuard,
}

async fn harness(extra: &[(&str, &str)]) -> Harness {
    let mut vars = vec![
        ("RP_ROUTER__HEALTH_CHECK_INTERVAL_MS", "100"),
        ("RP_ROUTER__HEALTH_CHECK_TIMEOUT_MS", "200"),
        ("RP_ROUTER__STATS_INTERVAL_MS", "100"),
        ("RP_ROUTER__EJECTION_SECS", "30"),
        ("RP_ROUTER__PASSIVE_FAILURE_THRESHOLD", "2"),
    ];
    vars.extend_from_slice(extra);
    let env = TestEnv::with_env(&vars);
    let config = Arc::new(env.config.clone());
    let bus = rp_events::connect(&config.nats).await.unwrap();
    let shutdown = CancellationToken::new();
    let listeners = Listeners::bind(config.router.proxy_addr, config.router.admin_addr).await.unwrap();
    let router = rp_router::start(config, bus.clone(), listeners, shutdown.clone()).await.unwrap();
    Harness {
        _env: env,
        bus,
        router,
        http: reqwest::Client::builder().pool_max_idle_per_host(32).build().unwrap(),
        revision: std::sync::atomic::AtomicI64::new(0),
        _stop: shutdown.drop_guard(),
    }
}

async fn app(version: &str) -> DemoApp {
    demo_app::spawn(version, SocketAddr::from(([127, 0, 0, 1], 0)), Knobs::default()).await.unwrap()
}

impl Harness {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.router.primary_addr)
    }

    /// Publishes a route (as the release service's router driver does) and waits until the router
    /// serves it.
    async fn route(&self, stable: Option<&[&DemoApp]>, canary: &[&DemoApp], weight: i32) {
        let backend = |apps: &[&DemoApp]| {
            (apps[0].version.clone(), apps.iter().map(|a| a.addr.to_string()).collect::<Vec<_>>())
        };
        self.route_to(stable.map(backend), backend(canary), weight).await;
    }

    /// Publishes a route to `(version, addresses)` backends and waits until the router serves it.
    async fn route_to(
        &self,
        stable: Option<(String, Vec<String>)>,
        canary: (String, Vec<String>),
        weight: i32,
    ) {
        let revision = self.revision.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let stable_version = stable.as_ref().map(|s| s.0.clone()).unwrap_or_default();
        let canary_version = canary.0.clone();
        let backends = std::iter::once(canary)
            .chain(stable)
            .map(|(version, addresses)| ev::RouteBackend { version, addresses })
            .collect();
        let update = ev::RouteUpdated {
            app: "shop".into(),
            environment: "prod".into(),
            r#match: Some(ev::RouteMatch { host: String::new(), path_prefix: "/".into() }),
            backends,
            stable_version,
            canary_version,
            canary_weight: weight,
            deployment_id: "d1".into(),
            revision,
        };
        self.bus
            .publish(&Event::new("release", "rp.router.route_updated", "routes/shop/prod", &update))
            .await
            .unwrap();
        let admin = format!("http://{}/metrics", self.router.admin_addr);
        eventually(WAIT, "the router to apply the route", || async {
            let text = self.http.get(&admin).send().await.ok()?.text().await.ok()?;
            let applied = text
                .lines()
                .find(|l| l.starts_with("rp_router_route_updates_total"))
                .and_then(|l| l.split_whitespace().last()?.parse::<f64>().ok());
            // Any progress counts; callers check the behaviour itself.
            applied.is_some().then_some(())
        })
        .await;
    }

    async fn version_of(&self, request: reqwest::RequestBuilder) -> (u16, String) {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let version = response
            .headers()
            .get("x-rp-version")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        (status, version)
    }

    /// Versions answering `n` plain requests.
    async fn spread(&self, n: usize) -> HashMap<String, usize> {
        let mut seen = HashMap::new();
        for _ in 0..n {
            let (_, version) = self.version_of(self.http.get(self.url("/"))).await;
            *seen.entry(version).or_insert(0) += 1;
        }
        seen
    }

    async fn wait_for_spread(
        &self,
        what: &str,
        check: impl Fn(&HashMap<String, usize>) -> bool,
    ) -> HashMap<String, usize> {
        eventually(WAIT, what, || async {
            let spread = self.spread(40).await;
            check(&spread).then_some(spread)
        })
        .await
    }
}

#[tokio::test]
async fn traffic_splits_by_weight_and_follows_route_updates_within_milliseconds() {
    let h = harness(&[]).await;
    let (v1, v2) = (app("1.0.0").await, app("2.0.0").await);
    h.route(None, &[&v1], 100).await;
    h.wait_for_spread("v1 only", |s| s.get("1.0.0") == Some(&40)).await;

    h.route(Some(&[&v1]), &[&v2], 30).await;
    h.wait_for_spread("a split", |s| s.contains_key("2.0.0")).await;
    let spread = h.spread(2000).await;
    let canary = *spread.get("2.0.0").unwrap_or(&0) as f64 / 2000.0;
    assert!((0.25..=0.35).contains(&canary), "30% to the canary, got {spread:?}");

    // A rollback-style update: measure how fast the last canary answer disappears.
    let published = Instant::now();
    h.route(Some(&[&v1]), &[&v2], 0).await;
    let applied = eventually(WAIT, "all traffic on stable", || async {
        let (_, version) = h.version_of(h.http.get(h.url("/"))).await;
        (version == "1.0.0").then(|| published.elapsed())
    })
    .await;
    assert!(applied < Duration::from_secs(1), "route updates apply in well under a second ({applied:?})");
    assert_eq!(h.spread(200).await.get("1.0.0"), Some(&200));
}

#[tokio::test]
async fn the_track_header_overrides_and_sticky_cookies_keep_clients_on_their_version() {
    let h = harness(&[]).await;
    let (v1, v2) = (app("1.0.0").await, app("2.0.0").await);
    h.route(Some(&[&v1]), &[&v2], 50).await;
    h.wait_for_spread("a split", |s| s.len() == 2).await;
    for _ in 0..20 {
        assert_eq!(h.version_of(h.http.get(h.url("/")).header("x-rp-track", "canary")).await.1, "2.0.0");
        assert_eq!(h.version_of(h.http.get(h.url("/")).header("x-rp-track", "stable")).await.1, "1.0.0");
    }
    let first = h.http.get(h.url("/")).send().await.unwrap();
    let cookie = first.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let version = first.headers()["x-rp-version"].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("rp_track_shop="), "{cookie}");
    for _ in 0..30 {
        let response = h.http.get(h.url("/")).header("cookie", &cookie).send().await.unwrap();
        assert_eq!(response.headers()["x-rp-version"], version.as_str(), "sticky");
        assert!(response.headers().get("set-cookie").is_none(), "set once");
    }
    // Once the split ends the cookie no longer matters: weight 0 means stable for everyone.
    h.route(Some(&[&v1]), &[&v2], 0).await;
    h.wait_for_spread("stable only", |s| s.get("1.0.0") == Some(&40)).await;
    let canary_cookie = cookie.replace("stable", "canary");
    assert_eq!(h.version_of(h.http.get(h.url("/")).header("cookie", canary_cookie)).await.1, "1.0.0");
}

#[tokio::test]
async fn failing_health_checks_take_upstreams_out_and_passive_failures_eject_them() {
    let h = harness(&[]).await;
    let (v1, v2a, v2b) = (app("1.0.0").await, app("2.0.0").await, app("2.0.0").await);
    h.route(Some(&[&v1]), &[&v2a, &v2b], 100).await;
    let instances: std::collections::HashSet<String> = futures::future::join_all((0..20).map(|_| async {
        let body: serde_json::Value = h.http.get(h.url("/")).send().await.unwrap().json().await.unwrap();
        body["instance"].as_str().unwrap().to_owned()
    }))
    .await
    .into_iter()
    .collect();
    assert_eq!(instances.len(), 2, "round robin uses both upstreams");

    v2a.set(Knobs { health_failing: true, ..Default::default() });
    v2b.set(Knobs { health_failing: true, ..Default::default() });
    // Three failed checks (100 ms apart) later the canary is out and stable takes the traffic.
    h.wait_for_spread("the unhealthy canary out of rotation", |s| s.get("1.0.0") == Some(&40)).await;
    v2a.set(Knobs::default());
    h.wait_for_spread("the recovered upstream back", |s| s.contains_key("2.0.0")).await;

    // Passive: an upstream that refuses connections is ejected after two failures.
    let closed = rp_test_support::closed_port();
    let dead = format!("127.0.0.1:{}", closed.port);
    let revision = 1_000;
    let update = ev::RouteUpdated {
        app: "shop".into(),
        environment: "prod".into(),
        r#match: Some(ev::RouteMatch { host: String::new(), path_prefix: "/".into() }),
        backends: vec![ev::RouteBackend {
            version: "1.0.0".into(),
            addresses: vec![v1.addr.to_string(), dead],
        }],
        canary_version: "1.0.0".into(),
        canary_weight: 100,
        deployment_id: "d1".into(),
        revision,
        ..Default::default()
    };
    h.bus
        .publish(&Event::new("release", "rp.router.route_updated", "routes/shop/prod", &update))
        .await
        .unwrap();
    let statuses = eventually(WAIT, "the dead upstream ejected", || async {
        let statuses: Vec<u16> = futures::future::join_all(
            (0..10).map(|_| async { h.http.get(h.url("/")).send().await.unwrap().status().as_u16() }),
        )
        .await;
        statuses.iter().all(|s| *s == 200).then_some(statuses)
    })
    .await;
    assert_eq!(statuses.len(), 10);
}

#[tokio::test]
async fn bodies_stream_and_forwarding_headers_and_trace_context_reach_the_app() {
    let h = harness(&[]).await;
    let v1 = app("1.0.0").await;
    h.route(None, &[&v1], 100).await;
    h.wait_for_spread("the route", |s| s.get("1.0.0") == Some(&40)).await;
    // 8 MiB streamed in 64 KiB chunks, echoed back intact.
    let chunk = bytes::Bytes::from(vec![7u8; 64 * 1024]);
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = (0..128).map(|_| Ok(chunk.clone())).collect();
    let response = h
        .http
        .post(h.url("/echo"))
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut received = 0usize;
    let mut body = response.bytes_stream();
    while let Some(part) = body.next().await {
        let part = part.unwrap();
        assert!(part.iter().all(|b| *b == 7));
        received += part.len();
    }
    assert_eq!(received, 8 * 1024 * 1024);

    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let seen: serde_json::Value = h
        .http
        .get(h.url("/headers"))
        .header("host", "shop.example.com")
        .header("traceparent", traceparent)
        .header("x-forwarded-for", "203.0.113.7")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "secret")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(seen["traceparent"], traceparent);
    assert_eq!(seen["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(seen["x-forwarded-host"], "shop.example.com");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert!(seen.get("x-hop").is_none(), "headers named in Connection do not cross the proxy");

    // HTTP/2 from the client side.
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let response = h2.get(h.url("/")).send().await.unwrap();
    assert_eq!((response.status().as_u16(), response.version()), (200, reqwest::Version::HTTP_2));
    let missing = h.http.get(h.url("/")).header("host", "other.example.com").send().await.unwrap();
    assert_eq!(missing.status(), 200, "a host-less route matches any host");
}

#[tokio::test]
async fn per_version_statistics_reach_metrics_and_the_telemetry_channel() {
    let h = harness(&[]).await;
    let (v1, v2) = (app("1.0.0").await, app("2.0.0").await);
    v2.set(Knobs { error_rate: 1.0, ..Default::default() });
    let mut samples = h.bus.subscribe_ephemeral("traffic.shop.>").await.unwrap();
    h.route(Some(&[&v1]), &[&v2], 50).await;
    h.wait_for_spread("a split", |s| s.len() == 2).await;
    for _ in 0..100 {
        h.http.get(h.url("/")).send().await.unwrap();
    }
    let metrics = h
        .http
        .get(format!("http://{}/metrics", h.router.admin_addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("rp_router_requests_total")
                && l.contains("version=\"2.0.0\"")
                && l.contains("class=\"5xx\"")
        })
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(line.contains("app=\"shop\"") && line.contains("env=\"prod\""));
    assert!(metrics.contains("rp_router_request_duration_seconds_bucket"));

    let (mut stable_requests, mut canary_errors) = (0u64, 0u64);
    tokio::time::timeout(WAIT, async {
        while stable_requests == 0 || canary_errors == 0 {
            let (topic, payload) = samples.next().await.unwrap();
            assert_eq!(topic, "traffic.shop.prod");
            let sample: ev::TrafficSample = serde_json::from_slice(&payload).unwrap();
            assert_eq!(sample.latency_buckets.len(), 19);
            match sample.track.as_str() {
                "stable" => {
                    assert_eq!(sample.errors, 0);
                    stable_requests += sample.requests;
                }
                _ => {
                    assert_eq!(sample.version, "2.0.0");
                    assert_eq!(sample.errors, sample.requests, "every canary request failed");
                    canary_errors += sample.errors;
                }
            }
        }
    })
    .await
    .expect("samples of both tracks");
}

/// An upstream that counts the connections that carried proxied requests (health checks aside)
/// and answers `/close` with `Connection: close`. Serves HTTP/1.1 and HTTP/2 (prior knowledge).
async fn counting_upstream() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let serving = Arc::new(AtomicUsize::new(0));
    let counter = serving.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let (counter, counted) = (counter.clone(), Arc::new(AtomicBool::new(false)));
            let service = hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                if request.uri().path() != "/health" && !counted.swap(true, Ordering::SeqCst) {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
                let mut response =
                    http::Response::new(http_body_util::Full::new(bytes::Bytes::from_static(b"ok")));
                if request.uri().path() == "/close" {
                    response.headers_mut().insert("connection", http::HeaderValue::from_static("close"));
                }
                async move { Ok::<_, std::convert::Infallible>(response) }
            });
            tokio::spawn(async move {
                let builder =
                    hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
                let _ = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service).await;
            });
        }
    });
    (address, serving)
}

async fn upstream_connections_case(h: &Harness, expected_connections: usize) {
    use std::sync::atomic::Ordering;
    let (address, serving) = counting_upstream().await;
    h.route_to(None, ("1.0.0".into(), vec![address]), 100).await;
    eventually(WAIT, "the route to the counting upstream", || async {
        let response = h.http.get(h.url("/ready")).send().await.ok()?;
        (response.text().await.ok()? == "ok").then_some(())
    })
    .await;
    let before = serving.load(Ordering::SeqCst);
    for _ in 0..20 {
        let response = h.http.get(h.url("/x")).send().await.unwrap();
        assert_eq!((response.status().as_u16(), response.text().await.unwrap().as_str()), (200, "ok"));
    }
    assert_eq!(
        serving.load(Ordering::SeqCst) - before,
        0,
        "one client connection: its proxy thread reuses the upstream connection it already has"
    );
    // An upstream closing connections: no request may fail because its pooled connection went away.
    for round in 0..10 {
        for path in ["/close", "/x"] {
            let response = h.http.get(h.url(path)).send().await.unwrap();
            assert_eq!(response.status().as_u16(), 200, "round {round}, {path}");
        }
    }
    assert_eq!(serving.load(Ordering::SeqCst), expected_connections, "connections that carried requests");
}

#[tokio::test]
async fn upstream_connections_are_kept_alive_and_a_closed_one_is_replaced_without_failing_a_request() {
    let h = harness(&[]).await;
    // 1 connection for the warm-up and the 20, then a new one after each of the 10 closes.
    upstream_connections_case(&h, 11).await;
}

#[tokio::test]
async fn http2_upstreams_carry_every_request_on_one_connection() {
    let h = harness(&[("RP_ROUTER__UPSTREAM_HTTP2", "true")]).await;
    // `Connection: close` means nothing in HTTP/2: the one connection carries every request.
    upstream_connections_case(&h, 1).await;
}

/// An upstream speaking HTTP/1.1 byte for byte as scripted, to test framing the way the router
/// sees it on the wire. `/chunked`, `/until-close`, `/no-content` and `/continue` answer what
/// their names say, `POST /early` answers 413 and reads nothing more until `release` is
/// notified; any other path answers the request it received (head and body) as its body.
async fn scripted_upstream() -> (String, Arc<tokio::sync::Notify>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let release = Arc::new(tokio::sync::Notify::new());
    let released = release.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            let released = released.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let Some(head_end) = read_until(&mut stream, &mut buf, 0, b"\r\n\r\n").await else {
                        return;
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
                    let lower = head.to_ascii_lowercase();
                    if head.starts_with("POST /early ") {
                        // Refuses the body at once and reads none of it for a while: a proxy that
                        // sends the whole body before it reads the answer waits forever.
                        let refusal = b"HTTP/1.1 413 Content Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
                        let _ = stream.write_all(refusal).await;
                        released.notified().await;
                        let _ = stream.shutdown().await;
                        let mut sink = [0u8; 65536];
                        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                        return;
                    }
                    let length = lower
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                    let body_end = if lower.contains("transfer-encoding: chunked") {
                        // The bodies sent here end at their first empty line (no CRLFCRLF in data).
                        match read_until(&mut stream, &mut buf, head_end, b"\r\n\r\n").await {
                            Some(end) => end,
                            None => return,
                        }
                    } else {
                        while buf.len() < head_end + length {
                            let mut more = [0u8; 4096];
                            match stream.read(&mut more).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&more[..n]),
                            }
                        }
                        head_end + length
                    };
                    let request: Vec<u8> = buf.drain(..body_end).collect();
                    let path = head.split(' ').nth(1).unwrap_or_default().to_owned();
                    let answer: Vec<u8> = match path.as_str() {
                        "/chunked" => {
                            b"HTTP/1.1 200 OK\r\nx-rp-version: spoofed\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
                                .to_vec()
                        }
                        "/until-close" => b"HTTP/1.1 200 OK\r\n\r\nread until the end".to_vec(),
                        "/no-content" => b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n".to_vec(),
                        "/continue" => {
                            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec()
                        }
                        _ => {
                            let mut answer =
                                format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", request.len()).into_bytes();
                            if !head.starts_with("HEAD ") {
                                answer.extend_from_slice(&request);
                            }
                            answer
                        }
                    };
                    if stream.write_all(&answer).await.is_err() || path == "/until-close" {
                        return;
                    }
                }
            });
        }
    });
    (address, release)
}

/// Reads until `buf` holds `marker` at or after `from`; returns the offset just past it.
async fn read_until(
    stream: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
    from: usize,
    marker: &[u8],
) -> Option<usize> {
    use tokio::io::AsyncReadExt as _;
    loop {
        if let Some(at) = buf.get(from..).and_then(|b| b.windows(marker.len()).position(|w| w == marker)) {
            return Some(from + at + marker.len());
        }
        let mut more = [0u8; 4096];
        match tokio::time::timeout(WAIT, stream.read(&mut more)).await {
            Ok(Ok(0) | Err(_)) | Err(_) => return None,
            Ok(Ok(n)) => buf.extend_from_slice(&more[..n]),
        }
    }
}

/// A raw client connection to the router.
struct Raw {
    stream: tokio::net::TcpStream,
    buf: Vec<u8>,
}

/// An answer as a raw client sees it: status, head (lower case) and body (de-chunked).
#[derive(Debug)]
struct RawAnswer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Raw {
    async fn connect(h: &Harness) -> Self {
        Self { stream: tokio::net::TcpStream::connect(h.router.primary_addr).await.unwrap(), buf: Vec::new() }
    }

    async fn send(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt as _;
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Reads one answer, framed by its head; `head_request` answers have no body.
    async fn answer(&mut self, head_request: bool) -> RawAnswer {
        use tokio::io::AsyncReadExt as _;
        let end = read_until(&mut self.stream, &mut self.buf, 0, b"\r\n\r\n").await.expect("an answer head");
        let head = String::from_utf8_lossy(&self.buf[..end]).to_ascii_lowercase();
        self.buf.drain(..end);
        let status = head[9..12].parse().unwrap();
        let header = |name: &str| head.lines().find_map(|l| l.strip_prefix(name)).map(str::trim);
        let body = if head_request || status == 204 || status == 100 {
            Vec::new()
        } else if header("transfer-encoding:") == Some("chunked") {
            let mut body = Vec::new();
            loop {
                let line_end = read_until(&mut self.stream, &mut self.buf, 0, b"\r\n").await.unwrap();
                let size = usize::from_str_radix(std::str::from_utf8(&self.buf[..line_end - 2]).unwrap(), 16)
                    .unwrap();
                self.buf.drain(..line_end);
                while self.buf.len() < size + 2 {
                    let mut more = [0u8; 4096];
                    let n = self.stream.read(&mut more).await.unwrap();
                    assert!(n > 0, "chunked body cut short");
                    self.buf.extend_from_slice(&more[..n]);
                }
                if size == 0 {
                    self.buf.drain(..2);
                    break body;
                }
                body.extend(self.buf.drain(..size));
                self.buf.drain(..2);
            }
        } else if let Some(length) = header("content-length:") {
            let length: usize = length.parse().unwrap();
            while self.buf.len() < length {
                let mut more = [0u8; 4096];
                let n = self.stream.read(&mut more).await.unwrap();
                assert!(n > 0, "body cut short");
                self.buf.extend_from_slice(&more[..n]);
            }
            self.buf.drain(..length).collect()
        } else {
            self.stream.read_to_end(&mut self.buf).await.unwrap();
            std::mem::take(&mut self.buf)
        };
        RawAnswer { status, head, body }
    }

    /// Whether the router closed the connection (after any bytes still buffered).
    async fn closed(&mut self) -> bool {
        use tokio::io::AsyncReadExt as _;
        let mut rest = Vec::new();
        matches!(tokio::time::timeout(WAIT, self.stream.read_to_end(&mut rest)).await, Ok(Ok(0)))
            && self.buf.is_empty()
    }
}

#[tokio::test]
async fn http1_messages_are_framed_as_the_rfc_says_on_both_sides() {
    let h = harness(&[]).await;
    let (upstream, release) = scripted_upstream().await;
    h.route_to(None, ("1.0.0".into(), vec![upstream]), 100).await;
    eventually(WAIT, "the route to the scripted upstream", || async {
        let response = h.http.get(h.url("/ready")).send().await.ok()?;
        (response.headers().get("x-rp-version")? == "1.0.0").then_some(())
    })
    .await;

    // Pipelined requests on one connection, each answered in order: a chunked answer, a 204,
    // a HEAD (no body follows its Content-Length) and a chunked request body.
    let mut raw = Raw::connect(&h).await;
    raw.send(
        b"GET /chunked HTTP/1.1\r\nHost: shop\r\n\r\n\
          GET /no-content HTTP/1.1\r\nHost: shop\r\n\r\n\
          HEAD /head HTTP/1.1\r\nHost: shop\r\n\r\n\
          POST /body HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nx-sum: 1\r\n\r\n",
    )
    .await;
    let chunked = raw.answer(false).await;
    assert_eq!((chunked.status, chunked.body.as_slice()), (200, &b"hello world"[..]), "{chunked:?}");
    assert!(chunked.head.contains("x-rp-version: 1.0.0") && !chunked.head.contains("spoofed"), "{chunked:?}");
    let no_content = raw.answer(false).await;
    assert_eq!(no_content.status, 204);
    let head = raw.answer(true).await;
    assert_eq!(head.status, 200);
    assert!(head.head.contains("content-length: "), "{head:?}");
    let echoed = raw.answer(false).await;
    let seen = String::from_utf8_lossy(&echoed.body).to_ascii_lowercase();
    assert!(seen.starts_with("post /body http/1.1\r\n"), "{seen}");
    assert!(
        seen.ends_with("\r\n\r\n3;x=y\r\nabc\r\n0\r\nx-sum: 1\r\n\r\n"),
        "the chunked body crosses as sent: {seen}"
    );
    assert!(seen.contains("transfer-encoding: chunked") && seen.contains("x-forwarded-for: 127.0.0.1"));

    // Expect: 100-continue is answered by the router; the upstream never sees it.
    raw.send(b"PUT /upload HTTP/1.1\r\nHost: shop\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        .await;
    assert_eq!(raw.answer(false).await.status, 100);
    raw.send(b"data").await;
    let upload = raw.answer(false).await;
    let seen = String::from_utf8_lossy(&upload.body).to_ascii_lowercase();
    assert!(seen.ends_with("\r\n\r\ndata") && !seen.contains("expect"), "{seen}");
    // An upstream's own 100 Continue is not passed on.
    raw.send(b"GET /continue HTTP/1.1\r\nHost: shop\r\n\r\n").await;
    let continued = raw.answer(false).await;
    assert_eq!((continued.status, continued.body.as_slice()), (200, &b"ok"[..]));

    // The absolute form: the upstream gets the origin form and the authority as Host.
    raw.send(b"GET http://shop.example.com/abs?q=1 HTTP/1.1\r\nHost: ignored\r\n\r\n").await;
    let seen = String::from_utf8_lossy(&raw.answer(false).await.body).to_ascii_lowercase();
    assert!(seen.starts_with("get /abs?q=1 http/1.1\r\n"), "{seen}");
    assert!(seen.contains("host: shop.example.com\r\n") && !seen.contains("ignored"), "{seen}");

    // An answer delimited by the upstream closing ends the client's connection too.
    raw.send(b"GET /until-close HTTP/1.1\r\nHost: shop\r\n\r\n").await;
    let until_close = raw.answer(false).await;
    assert!(until_close.head.contains("connection: close"), "{until_close:?}");
    assert_eq!(until_close.body, b"read until the end");

    // HTTP/1.0 clients get chunked answers without the framing, then the connection closes.
    let mut old = Raw::connect(&h).await;
    old.send(b"GET /chunked HTTP/1.0\r\nHost: shop\r\nConnection: keep-alive\r\n\r\n").await;
    let answer = old.answer(false).await;
    assert!(!answer.head.contains("transfer-encoding"), "{answer:?}");
    assert_eq!(answer.body, b"hello world");

    // Requests the router refuses, each with its status and a closed connection.
    for (request, status) in [
        (
            &b"GET / HTTP/1.1\r\nHost: shop\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            400,
        ),
        (b"GET / HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: shop\r\nContent-Length: 1, 2\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
        (b"NOT HTTP AT ALL\r\n\r\n", 400),
        (b"CONNECT shop:443 HTTP/1.1\r\nHost: shop:443\r\n\r\n", 405),
    ] {
        let mut raw = Raw::connect(&h).await;
        raw.send(request).await;
        let answer = raw.answer(false).await;
        assert_eq!(answer.status, status, "{}", String::from_utf8_lossy(request));
        assert!(answer.head.contains("connection: close"));
        assert!(raw.closed().await, "{}", String::from_utf8_lossy(request));
    }
    let mut raw = Raw::connect(&h).await;
    let huge = format!("GET / HTTP/1.1\r\nHost: shop\r\nx-big: {}\r\n\r\n", "a".repeat(70 * 1024));
    raw.send(huge.as_bytes()).await;
    assert_eq!(raw.answer(false).await.status, 431);

    // An upstream that answers before reading the body: its answer reaches the client, whose
    // connection then closes (the rest of its body was never read).
    let mut raw = Raw::connect(&h).await;
    // More than the socket buffers between client, router and upstream can hold.
    raw.send(b"POST /early HTTP/1.1\r\nHost: shop\r\nContent-Length: 64000000\r\n\r\n").await;
    let (mut reader, mut writer) = raw.stream.into_split();
    let body = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt as _;
        let _ = writer.write_all(&vec![1u8; 64_000_000]).await;
        writer
    });
    let mut received = Vec::new();
    let end = loop {
        use tokio::io::AsyncReadExt as _;
        let mut more = [0u8; 4096];
        let n = tokio::time::timeout(WAIT, reader.read(&mut more)).await.expect("an answer in time").unwrap();
        assert!(n > 0, "the answer came: {}", String::from_utf8_lossy(&received));
        received.extend_from_slice(&more[..n]);
        if let Some(at) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
    };
    let head = String::from_utf8_lossy(&received[..end]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 413 "), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    body.abort();
    release.notify_one();

    // A malformed chunked body is refused and nothing after it is taken for a request.
    let mut raw = Raw::connect(&h).await;
    raw.send(b"POST /x HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").await;
    assert_eq!(raw.answer(false).await.status, 400);
    assert!(raw.closed().await);
}
