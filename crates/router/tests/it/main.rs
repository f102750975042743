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
