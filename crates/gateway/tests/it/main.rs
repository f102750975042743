//! The HTTP gateway in front of the real services, on the backend chosen by
//! `RELEASE_PILOT_TEST_BACKEND`.

mod notifications;
mod release;
mod rollback;

use release_pilot::{Role, testing::TestSystem};
use reqwest::{Method, StatusCode, header};
use rp_test_support::TestEnv;
use serde_json::{Value, json};

async fn system() -> TestSystem {
    system_with(&[]).await
}

async fn system_with(extra: &[(&str, &str)]) -> TestSystem {
    {
        let env = TestEnv::with_env(extra);
        TestSystem::start(env.config.clone(), &[]).await.expect("system starts").hold(env)
    }
}

/// One API call as `token`; `body` as JSON when given.
async fn call(
    system: &TestSystem,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = system.http.request(method, system.url(path)).bearer_auth(token);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

/// Asserts `status` and returns the JSON body.
async fn expect(response: reqwest::Response, status: u16) -> Value {
    let url = response.url().to_string();
    let actual = response.status().as_u16();
    let text = response.text().await.unwrap();
    assert_eq!(actual, status, "{url}: {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// Asserts a problem+json response and returns its body.
async fn problem(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status().as_u16(), status, "status of {}", response.url());
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/problem+json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status);
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["type"], format!("urn:release-pilot:problem:{code}"));
    assert!(body["title"].is_string() && body["instance"].is_string(), "{body}");
    assert!(body["request_id"].is_string(), "{body}");
    body
}

#[tokio::test]
async fn login_returns_tokens_and_me_returns_the_caller() {
    let system = system().await;
    let response = system
        .http
        .post(system.url("/api/v1/auth/login"))
        .json(&json!({"email": release_pilot::testing::ADMIN_EMAIL, "password": release_pilot::testing::ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let tokens: Value = response.json().await.unwrap();
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 900);
    let access = tokens["access_token"].as_str().unwrap();
    let me: Value = system
        .http
        .get(system.url("/api/v1/me"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["email"], release_pilot::testing::ADMIN_EMAIL);
    assert_eq!(me["roles"], json!(["admin"]));

    let refreshed = system
        .http
        .post(system.url("/api/v1/auth/refresh"))
        .json(&json!({"refresh_token": tokens["refresh_token"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(refreshed.status(), 200);
    let reused = system
        .http
        .post(system.url("/api/v1/auth/refresh"))
        .json(&json!({"refresh_token": tokens["refresh_token"]}))
        .send()
        .await
        .unwrap();
    problem(reused, 401, "unauthenticated").await;
    let logout = system
        .http
        .post(system.url("/api/v1/auth/logout"))
        .json(&json!({"refresh_token": "anything"}))
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 204);

    let wrong = system
        .http
        .post(system.url("/api/v1/auth/login"))
        .json(&json!({"email": release_pilot::testing::ADMIN_EMAIL, "password": "nope"}))
        .send()
        .await
        .unwrap();
    let body = problem(wrong, 401, "unauthenticated").await;
    assert_eq!(body["detail"], "invalid email or password");
}

#[tokio::test]
async fn bad_input_gets_a_problem_document_that_says_what_is_wrong() {
    let system = system().await;
    let login = system.url("/api/v1/auth/login");
    let malformed = system
        .http
        .post(&login)
        .header(header::CONTENT_TYPE, "application/json")
        .body("{\"email\":")
        .send()
        .await
        .unwrap();
    problem(malformed, 400, "bad_request").await;
    let wrong_type =
        system.http.post(&login).json(&json!({"email": 5, "password": "x"})).send().await.unwrap();
    let body = problem(wrong_type, 422, "validation_failed").await;
    assert!(body["detail"].as_str().unwrap().contains("email"), "{body}");
    let unknown_field = system
        .http
        .post(&login)
        .json(&json!({"email": "a@b.c", "password": "x", "admin": true}))
        .send()
        .await
        .unwrap();
    let body = problem(unknown_field, 422, "validation_failed").await;
    assert!(body["detail"].as_str().unwrap().contains("admin"), "{body}");
    let no_content_type = system.http.post(&login).body("{}").send().await.unwrap();
    problem(no_content_type, 415, "unsupported_media_type").await;
    let empty = system.http.post(&login).json(&json!({"email": "", "password": ""})).send().await.unwrap();
    problem(empty, 422, "validation_failed").await;

    let admin = system.admin_token().await;
    let bad_user = system
        .http
        .post(system.url("/api/v1/users"))
        .bearer_auth(&admin)
        .json(&json!({"email": "not-an-email", "password": "long-enough-password"}))
        .send()
        .await
        .unwrap();
    let body = problem(bad_user, 422, "validation_failed").await;
    assert!(body["detail"].as_str().unwrap().contains("not a valid e-mail"), "{body}");
    let bad_role = system
        .http
        .post(system.url("/api/v1/users"))
        .bearer_auth(&admin)
        .json(&json!({"email": "x@example.com", "password": "long-enough-password", "roles": ["root"]}))
        .send()
        .await
        .unwrap();
    problem(bad_role, 422, "validation_failed").await;
    let bad_page =
        system.http.get(system.url("/api/v1/users?page_size=lots")).bearer_auth(&admin).send().await.unwrap();
    problem(bad_page, 422, "validation_failed").await;
    let bad_id =
        system.http.get(system.url("/api/v1/users/not-a-uuid")).bearer_auth(&admin).send().await.unwrap();
    problem(bad_id, 422, "validation_failed").await;
}

#[tokio::test]
async fn unauthenticated_forbidden_not_found_and_method_not_allowed_are_problems() {
    let system = system().await;
    let anonymous = system.http.get(system.url("/api/v1/me")).send().await.unwrap();
    assert_eq!(anonymous.headers()[header::WWW_AUTHENTICATE], "Bearer realm=\"release-pilot\"");
    problem(anonymous, 401, "unauthenticated").await;
    let garbage = system.http.get(system.url("/api/v1/me")).bearer_auth("garbage").send().await.unwrap();
    problem(garbage, 401, "unauthenticated").await;
    let basic = system
        .http
        .get(system.url("/api/v1/me"))
        .header(header::AUTHORIZATION, "Basic YTpi")
        .send()
        .await
        .unwrap();
    problem(basic, 401, "unauthenticated").await;

    let viewer = system.user_token("viewer@example.com", &["viewer"]).await;
    let forbidden = system.http.get(system.url("/api/v1/users")).bearer_auth(&viewer).send().await.unwrap();
    let body = problem(forbidden, 403, "forbidden").await;
    assert!(body["detail"].as_str().unwrap().contains("admin"));

    let admin = system.admin_token().await;
    let no_route =
        system.http.get(system.url("/api/v1/nothing-here")).bearer_auth(&admin).send().await.unwrap();
    problem(no_route, 404, "not_found").await;
    let no_user = system
        .http
        .get(system.url(&format!("/api/v1/users/{}", uuid::Uuid::now_v7())))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    problem(no_user, 404, "not_found").await;

    let wrong_method = system.http.delete(system.url("/api/v1/me")).bearer_auth(&admin).send().await.unwrap();
    assert!(wrong_method.headers()[header::ALLOW].to_str().unwrap().contains("GET"));
    let body = problem(wrong_method, 405, "method_not_allowed").await;
    assert!(body["detail"].as_str().unwrap().contains("GET"));
}

#[tokio::test]
async fn an_oversized_body_is_refused_with_413() {
    let system = system_with(&[("RP_GATEWAY__BODY_LIMIT_BYTES", "2048")]).await;
    let big = json!({"email": "a@b.c", "password": "x".repeat(4096)});
    let response = system.http.post(system.url("/api/v1/auth/login")).json(&big).send().await.unwrap();
    problem(response, 413, "payload_too_large").await;
    // Without a Content-Length (streamed) the limit holds too.
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> =
        (0..8).map(|_| Ok(bytes::Bytes::from(vec![b' '; 1024]))).collect();
    let streamed = system
        .http
        .post(system.url("/api/v1/auth/login"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    problem(streamed, 413, "payload_too_large").await;
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after_per_ip_and_per_token() {
    let system = system_with(&[
        ("RP_GATEWAY__RATE_LIMIT__PER_IP_PER_SECOND", "1"),
        ("RP_GATEWAY__RATE_LIMIT__PER_IP_BURST", "3"),
    ])
    .await;
    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..5 {
        let response = system.http.get(system.url("/api/openapi.json")).send().await.unwrap();
        statuses.push(response.status().as_u16());
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(response);
        }
    }
    assert_eq!(&statuses[..3], &[200, 200, 200], "{statuses:?}");
    let limited = limited.expect("the burst is exhausted");
    let retry_after: u64 = limited.headers()[header::RETRY_AFTER].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after));
    problem(limited, 429, "rate_limited").await;

    let per_token = system_with(&[
        ("RP_GATEWAY__RATE_LIMIT__PER_TOKEN_PER_SECOND", "1"),
        ("RP_GATEWAY__RATE_LIMIT__PER_TOKEN_BURST", "2"),
    ])
    .await;
    let codes: Vec<u16> = futures::future::join_all(
        (0..4).map(|_| per_token.http.get(per_token.url("/api/v1/me")).bearer_auth("same-token").send()),
    )
    .await
    .into_iter()
    .map(|r| r.unwrap().status().as_u16())
    .collect();
    assert_eq!(codes.iter().filter(|c| **c == 429).count(), 2, "{codes:?}");
}

#[tokio::test]
async fn repeated_failed_logins_become_429_with_retry_after() {
    let system = system_with(&[("RP_AUTH__THROTTLE__MAX_FAILURES_PER_ACCOUNT", "2")]).await;
    let attempt = || {
        system
            .http
            .post(system.url("/api/v1/auth/login"))
            .json(&json!({"email": release_pilot::testing::ADMIN_EMAIL, "password": "wrong-password"}))
            .send()
    };
    problem(attempt().await.unwrap(), 401, "unauthenticated").await;
    problem(attempt().await.unwrap(), 401, "unauthenticated").await;
    let throttled = attempt().await.unwrap();
    let retry_after: u64 = throttled.headers()[header::RETRY_AFTER].to_str().unwrap().parse().unwrap();
    assert!(retry_after > 800, "{retry_after}");
    let body = problem(throttled, 429, "rate_limited").await;
    assert!(body["detail"].as_str().unwrap().contains("too many failed logins"), "{body}");
}

#[tokio::test]
async fn every_response_carries_security_headers_and_a_request_id() {
    let system = system().await;
    for (path, expected) in [("/api/openapi.json", 200), ("/api/v1/me", 401), ("/nope", 404)] {
        let response = system.http.get(system.url(path)).send().await.unwrap();
        assert_eq!(response.status().as_u16(), expected, "{path}");
        let headers = response.headers();
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(headers["x-frame-options"], "DENY");
        assert_eq!(headers["referrer-policy"], "no-referrer");
        assert!(headers["strict-transport-security"].to_str().unwrap().contains("max-age="));
        assert!(headers["content-security-policy"].to_str().unwrap().contains("frame-ancestors 'none'"));
        assert_eq!(headers["cross-origin-opener-policy"], "same-origin");
        assert!(uuid::Uuid::parse_str(headers["x-request-id"].to_str().unwrap()).is_ok());
    }
    let echoed = system
        .http
        .get(system.url("/api/v1/me"))
        .header("x-request-id", "trace-me-123")
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.headers()["x-request-id"], "trace-me-123");
    let body: Value = echoed.json().await.unwrap();
    assert_eq!(body["request_id"], "trace-me-123");
    let injected = system
        .http
        .get(system.url("/api/v1/me"))
        .header("x-request-id", "bad id\" with quotes")
        .send()
        .await
        .unwrap();
    assert!(
        uuid::Uuid::parse_str(injected.headers()["x-request-id"].to_str().unwrap()).is_ok(),
        "unsafe ids are replaced"
    );
    // No allowed origins configured (the default): a cross-origin preflight is granted nothing.
    let preflight = system
        .http
        .request(Method::OPTIONS, system.url("/api/v1/apps"))
        .header(header::ORIGIN, "https://dash.example.com")
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status().as_u16(), 405);
    assert!(preflight.headers().get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
    assert_eq!(preflight.headers()["x-content-type-options"], "nosniff");
}

#[tokio::test]
async fn cors_preflight_allows_listed_origins_only() {
    let system = system_with(&[("RP_GATEWAY__CORS_ALLOWED_ORIGINS", "https://dash.example.com")]).await;
    let preflight = |origin: &'static str| {
        system
            .http
            .request(Method::OPTIONS, system.url("/api/v1/apps"))
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "authorization,content-type,idempotency-key")
            .send()
    };
    let allowed = preflight("https://dash.example.com").await.unwrap();
    assert!(allowed.status().is_success());
    assert_eq!(allowed.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://dash.example.com");
    assert!(allowed.headers()[header::ACCESS_CONTROL_ALLOW_METHODS].to_str().unwrap().contains("POST"));
    assert!(
        allowed.headers()[header::ACCESS_CONTROL_ALLOW_HEADERS].to_str().unwrap().contains("idempotency-key")
    );
    let refused = preflight("https://evil.example.com").await.unwrap();
    assert!(refused.headers().get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
    let simple = system
        .http
        .get(system.url("/api/openapi.json"))
        .header(header::ORIGIN, "https://dash.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(simple.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://dash.example.com");
}

#[tokio::test]
async fn the_openapi_document_is_3_1_and_describes_the_api() {
    let system = system().await;
    let response = system
        .http
        .get(system.url("/api/openapi.json"))
        .header(header::ACCEPT_ENCODING, "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()[header::CONTENT_ENCODING], "gzip", "responses are compressed");
    let plain = system.http.get(system.url("/api/openapi.json")).send().await.unwrap();
    let doc: Value = plain.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{}", doc["openapi"]);
    for path in [
        "/api/v1/auth/login",
        "/api/v1/auth/refresh",
        "/api/v1/auth/logout",
        "/api/v1/me",
        "/api/v1/users",
        "/api/v1/users/{id}",
        "/api/v1/api-tokens",
        "/api/v1/apps",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing");
    }
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    assert!(doc["components"]["schemas"].get("Problem").is_some());
    let docs = system.http.get(system.url("/api/docs")).send().await.unwrap();
    assert_eq!(docs.status(), 200);
    assert!(docs.headers()[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/html"));
    assert!(docs.text().await.unwrap().contains("Release Pilot API"), "the page embeds the document");
    let jwks: Value =
        system.http.get(system.url("/.well-known/jwks.json")).send().await.unwrap().json().await.unwrap();
    assert_eq!(jwks["keys"][0]["alg"], "EdDSA");
}

#[tokio::test]
async fn admins_manage_users_and_api_tokens_over_http() {
    let system = system().await;
    let admin = system.admin_token().await;
    let created = system
        .http
        .post(system.url("/api/v1/users"))
        .bearer_auth(&admin)
        .json(&json!({"email": "qa@example.com", "display_name": "Quinn", "password": "qa-password-123", "roles": ["qa"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let user: Value = created.json().await.unwrap();
    let patched: Value = system
        .http
        .patch(system.url(&format!("/api/v1/users/{}", user["id"].as_str().unwrap())))
        .bearer_auth(&admin)
        .json(&json!({"roles": ["qa", "developer"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(patched["roles"], json!(["developer", "qa"]));
    let page: Value = system
        .http
        .get(system.url("/api/v1/users?page_size=1"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert!(page["next_page_token"].is_string());

    let qa = system.login("qa@example.com", "qa-password-123").await.unwrap();
    let token_response = system
        .http
        .post(system.url("/api/v1/api-tokens"))
        .bearer_auth(&qa)
        .json(&json!({"name": "pipeline", "roles": ["qa"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(token_response.status(), 201);
    assert_eq!(token_response.headers()[header::CACHE_CONTROL], "no-store");
    let token: Value = token_response.json().await.unwrap();
    let secret = token["secret"].as_str().unwrap();
    let me: Value = system
        .http
        .get(system.url("/api/v1/me"))
        .bearer_auth(secret)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["roles"], json!(["qa"]));
    let listed: Value = system
        .http
        .get(system.url("/api/v1/api-tokens"))
        .bearer_auth(&qa)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"][0]["name"], "pipeline");
    assert!(listed.to_string().find(&secret[12..]).is_none());
    let revoke = system
        .http
        .delete(system.url(&format!("/api/v1/api-tokens/{}", token["token"]["id"].as_str().unwrap())))
        .bearer_auth(&qa)
        .send()
        .await
        .unwrap();
    assert_eq!(revoke.status(), 200);
    problem(
        system.http.get(system.url("/api/v1/me")).bearer_auth(secret).send().await.unwrap(),
        401,
        "unauthenticated",
    )
    .await;
}

#[tokio::test]
async fn a_service_outage_is_a_503_without_internal_details() {
    let mut env = TestEnv::new();
    let closed = rp_test_support::closed_port();
    env.config.endpoints.auth = format!("http://127.0.0.1:{}", closed.port);
    let system = TestSystem::start(env.config.clone(), &[Role::Gateway]).await.unwrap().hold(env);
    let response = system
        .http
        .post(system.url("/api/v1/auth/login"))
        .json(&json!({"email": "a@example.com", "password": "whatever-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    let body = problem(response, 503, "unavailable").await;
    let text = body.to_string();
    assert!(!text.contains("127.0.0.1") && !text.contains("tcp") && !text.contains("transport"), "{text}");
    let ready = system.http.get(system.admin_url("gateway", "/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 503, "the gateway is not ready without its services");
}
