//! The HTTP gateway: REST/JSON under `/api/v1`, OpenAPI 3.1 at `/api/openapi.json`, interactive
//! docs at `/api/docs`, the JWKS at `/.well-known/jwks.json` and the dashboard at `/`. It owns
//! no data: every call becomes a gRPC call, with the caller's token, request id, address and
//! trace context, to the service that owns the data (which verifies the token itself).
//!
//! Middleware, outermost first (the seed's pipeline): request id → trust proxy → request span,
//! log and metrics → panic guard → security headers → CORS → compression → problem+json
//! normaliser → rate limits (per IP, per token) → body limit → timeout → routes.

mod clients;
pub mod dto;
mod extract;
mod json;
pub mod middleware;
pub mod problem;
mod routes;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::Request,
    http::{HeaderValue, Method, StatusCode, header},
    middleware::{Next, from_fn, from_fn_with_state},
    response::{Html, IntoResponse, Response},
    routing::get,
};

use crate::json::Json;
use futures::FutureExt as _;
use rp_config::Config;
use rp_runtime::{AdminState, CancellationToken, Health, Listeners, RunningService};
use tower::ServiceBuilder;
use tower_http::{
    catch_panic::CatchPanicLayer,
    compression::CompressionLayer,
    cors::{AllowOrigin, CorsLayer},
    limit::RequestBodyLimitLayer,
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    services::{ServeDir, ServeFile},
    timeout::TimeoutLayer,
};
use utoipa::{
    Modify, OpenApi,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};

pub use clients::Clients;
use middleware::{RateLimits, TrustProxy};
use problem::Problem;
use routes::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Release Pilot API",
        description = "Release management control plane: apps, releases, deployments, rollbacks, notifications.\n\n\
            Authenticate with `POST /api/v1/auth/login` and send the access token as `Authorization: Bearer <token>`, \
            or use an API token (`rp_…`) the same way. Errors are RFC 9457 problem documents.",
        license(name = "Apache-2.0")
    ),
    tags(
        (name = "auth", description = "Login, tokens and your own account"),
        (name = "users", description = "User management (administrators)"),
        (name = "api-tokens", description = "API tokens for CI"),
        (name = "apps", description = "Applications under release management, and their targets"),
        (name = "environments", description = "The promotion pipeline, and freeze windows"),
        (name = "releases", description = "Versions from Conventional Commits, changelogs, quality checks"),
        (name = "deployments", description = "Gated deployments, approvals, live updates, rollbacks, status"),
        (name = "audit", description = "The hash-chained audit log"),
        (name = "dora", description = "DORA metrics"),
        (name = "policies", description = "Health policies: the rules canary analysis judges deployments by"),
        (name = "analyses", description = "Canary analyses and their decision records"),
        (name = "incidents", description = "Incidents opened by automatic rollbacks: timeline, MTTR, evidence"),
        (name = "rollbacks", description = "Rollback records, automatic and manual; manual rollbacks"),
        (name = "alerts", description = "Alertmanager's webhook: alerts about a canary feed its alert rules"),
        (name = "notifications", description = "Notifications: channels (signed webhooks, Slack, e-mail, PagerDuty), routing rules, deliveries and their attempt log, dead letters, escalation policies and acknowledgements"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT or rp_ API token")
                    .build(),
            ),
        );
    }
}

/// Documents the error responses every operation can give, so clients (and schemathesis) know
/// every status code: each is a problem document.
struct ProblemResponses;

impl Modify for ProblemResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let problem = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    problem::CONTENT_TYPE,
                    ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build(),
                )
                .build()
        };
        for (path, item) in openapi.paths.paths.iter_mut() {
            let has_path_params = path.contains('{');
            let operations =
                [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch];
            for operation in operations.into_iter().flatten() {
                let mut codes = vec![
                    ("400", "Malformed request"),
                    ("422", "Invalid input; `detail` says which field and why"),
                    ("429", "Rate limited; retry after `Retry-After` seconds"),
                    ("500", "Unexpected error (logged; no internals are returned)"),
                    ("503", "A service is temporarily unavailable"),
                    ("504", "A service did not answer in time"),
                ];
                if operation.security.is_some() {
                    codes.push(("401", "Missing, invalid or expired token"));
                    codes.push(("403", "Authenticated, but without a role this needs"));
                }
                if operation.request_body.is_some() {
                    codes.push(("409", "Conflicts with the current state; `detail` says how"));
                    codes.push(("413", "Body larger than the configured limit"));
                    codes.push(("415", "Body is not JSON"));
                }
                if has_path_params {
                    codes.push(("404", "No such resource"));
                }
                for (code, description) in codes {
                    operation
                        .responses
                        .responses
                        .entry(code.to_owned())
                        .or_insert_with(|| problem(description).into());
                }
            }
        }
    }
}

/// The OpenAPI document, as served at `/api/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, api) = routes::router().split_for_parts();
    complete(api)
}

/// Merges the routes' paths into the document, then applies the modifiers (which need the paths).
fn complete(paths: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.merge(paths);
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    BearerAuth.modify(&mut doc);
    ProblemResponses.modify(&mut doc);
    doc
}

/// Builds the whole HTTP application.
pub fn app(
    config: &Config,
    clients: Clients,
    limits: Arc<RateLimits>,
    shutdown: CancellationToken,
) -> Router {
    let (api_router, api) = routes::router().split_for_parts();
    let doc = Arc::new(complete(api));
    let docs_html = utoipa_scalar::Scalar::new(doc.as_ref().clone()).title("Release Pilot API").to_html();

    let state = AppState { clients, shutdown };
    let routes = api_router
        .route("/.well-known/jwks.json", get(routes::auth::jwks))
        .route("/api/openapi.json", get(move || async move { Json(doc.as_ref().clone()) }))
        .route("/api/docs", get(move || async move { docs_page(docs_html.clone()) }))
        .route_layer(from_fn(middleware::remember_route))
        .with_state(state)
        .fallback_service(web_service(&config.gateway.web_dir));

    let gateway = &config.gateway;
    let trusted = TrustProxy(Arc::new(gateway.trusted_proxies.clone()));
    let middleware = ServiceBuilder::new()
        .layer(from_fn(middleware::sanitize_request_id))
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(from_fn_with_state(trusted, middleware::trust_proxy))
        .layer(from_fn(middleware::observe))
        .layer(CatchPanicLayer::custom(|_| Problem::internal().into_response()))
        .layer(from_fn(security_headers))
        // Without allowed origins a CORS layer answers nothing, and it would still be cloned
        // (with its lists) for every request: none then, and browsers refuse cross-origin calls.
        .option_layer((!gateway.cors_allowed_origins.is_empty()).then(|| cors(&gateway.cors_allowed_origins)))
        .layer(CompressionLayer::new())
        .layer(from_fn(problem::normalize_errors))
        .layer(from_fn_with_state(limits, middleware::rate_limit))
        .layer(RequestBodyLimitLayer::new(gateway.body_limit_bytes))
        .layer(axum::extract::DefaultBodyLimit::max(gateway.body_limit_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(gateway.request_timeout_secs),
        ));
    // Wrapping the router as one service (not `routes.layer`, which layers each route) lets the
    // middleware see the finished response, including the `Allow` header of a 405.
    Router::new().fallback_service(routes).layer(middleware)
}

fn cors(origins: &[String]) -> CorsLayer {
    let origins: Vec<HeaderValue> = origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_MATCH,
            header::HeaderName::from_static("idempotency-key"),
            header::HeaderName::from_static("x-request-id"),
        ])
        .expose_headers([header::HeaderName::from_static("x-request-id"), header::RETRY_AFTER, header::ETAG])
        .max_age(Duration::from_secs(600))
}

async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in middleware::SECURITY_HEADERS.iter() {
        if !headers.contains_key(name) {
            headers.insert(name.clone(), value.clone());
        }
    }
    response
}

/// The docs page loads Scalar from its CDN, so it carries its own, wider CSP.
fn docs_page(html: String) -> Response {
    let csp = "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; \
               style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; \
               font-src 'self' data: https://cdn.jsdelivr.net https://fonts.gstatic.com; img-src 'self' data: https:; \
               connect-src 'self'; frame-ancestors 'none'";
    ([(header::CONTENT_SECURITY_POLICY, csp)], Html(html)).into_response()
}

/// The dashboard (`web/dist`) when built, with index.html for client-side routes; a plain page
/// pointing at the API otherwise. Unknown `/api/…` paths are 404 problems either way.
fn web_service(web_dir: &std::path::Path) -> Router {
    let index = web_dir.join("index.html");
    let api_not_found = || async { Problem::new(StatusCode::NOT_FOUND, "not_found", "no such API endpoint") };
    let router = Router::new().route("/api/{*rest}", axum::routing::any(api_not_found));
    if index.exists() {
        router.fallback_service(ServeDir::new(web_dir).fallback(ServeFile::new(index)))
    } else {
        router
            .route("/", get(|| async { Html(LANDING_PAGE) }))
            .fallback(|| async { Problem::new(StatusCode::NOT_FOUND, "not_found", "no such resource") })
    }
}

const LANDING_PAGE: &str = "<!doctype html><html lang=en><meta charset=utf-8><title>Release Pilot</title>\
<body style=\"font-family:system-ui;max-width:40rem;margin:4rem auto\"><h1>Release Pilot</h1>\
<p>The API is running. The dashboard has not been built (<code>cd web &amp;&amp; npm ci &amp;&amp; npm run build</code>).</p>\
<ul><li><a href=\"/api/docs\">API reference</a></li><li><a href=\"/api/openapi.json\">OpenAPI document</a></li></ul>";

/// Starts the gateway on `listeners` (HTTP API + admin) until `shutdown`.
pub async fn start(
    config: Arc<Config>,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> anyhow::Result<RunningService> {
    let clients = Clients::new(&config)?;
    let health = Health::new("gateway");
    for (name, channel) in clients.channels.clone() {
        health.add_check(format!("{name} (grpc)"), move || {
            let channel = channel.clone();
            async move {
                let started = std::time::Instant::now();
                let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
                let response = client
                    .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
                    .await
                    .map_err(|s| s.message().to_owned())?;
                match response.into_inner().status() {
                    tonic_health::pb::health_check_response::ServingStatus::Serving => Ok(started.elapsed()),
                    other => Err(format!("{other:?}")),
                }
            }
            .boxed()
        });
    }
    let limits = Arc::new(RateLimits::new(&config.gateway.rate_limit));
    let app = app(&config, clients, limits.clone(), shutdown.clone());

    let primary_addr = listeners.primary_addr();
    let admin_addr = listeners.admin_addr();
    let task = tokio::spawn(async move {
        let admin = tokio::spawn(rp_runtime::admin::serve(
            listeners.admin,
            AdminState::new(health.clone()),
            shutdown.clone(),
        ));
        let pruner = {
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_secs(60)) => limits.prune(),
                    }
                }
            })
        };
        health.set_ready(true);
        tracing::info!(service = "gateway", http = %primary_addr, admin = %admin_addr, "service started");
        let served = axum::serve(listeners.primary, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .await;
        health.set_ready(false);
        let _ = pruner.await;
        let _ = tokio::time::timeout(Duration::from_secs(5), admin).await;
        tracing::info!(service = "gateway", "service stopped");
        served.map_err(anyhow::Error::from)
    });
    Ok(RunningService { name: "gateway", primary_addr, admin_addr, task })
}
