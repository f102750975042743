//! The release service through the REST API: environments, targets, releases computed from
//! commits, gated deployments with approvals, live updates, status, freezes, audit and DORA.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use release_pilot::testing::TestSystem;
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};

use super::{call, expect, problem, system};

const WAIT: Duration = Duration::from_secs(30);

/// A local deployer for the webhook driver: answers 200 to every POST and keeps the bodies.
struct Deployer {
    url: String,
    calls: Arc<Mutex<Vec<Value>>>,
}

impl Deployer {
    async fn start() -> Self {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let kept = calls.clone();
        let app = axum::Router::new().route(
            "/deploy",
            axum::routing::post(move |body: axum::body::Bytes| async move {
                kept.lock().unwrap().push(serde_json::from_slice(&body).unwrap_or(Value::Null));
                (axum::http::StatusCode::OK, "applied")
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/deploy", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, calls }
    }

    fn calls(&self) -> Vec<Value> {
        self.calls.lock().unwrap().clone()
    }
}

/// Polls a deployment until `done` holds for it.
async fn wait_for(system: &TestSystem, token: &str, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let response =
            call(system, Method::GET, &format!("/api/v1/deployments/{id}"), token, None, &[]).await;
        let deployment = expect(response, 200).await;
        if done(&deployment) {
            return deployment;
        }
        assert!(tokio::time::Instant::now() < deadline, "deployment never got there: {deployment}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads a Server-Sent Events stream to its end; returns (event name, data) pairs.
async fn read_events(mut response: reqwest::Response) -> Vec<(String, Value)> {
    let mut text = String::new();
    let read = async {
        while let Some(chunk) = response.chunk().await.unwrap() {
            text.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    };
    tokio::time::timeout(WAIT, read).await.expect("the event stream ends");
    text.split("\n\n")
        .filter_map(|block| {
            let field = |name: &str| {
                block.lines().find_map(|line| line.strip_prefix(name)).map(|v| v.trim_start().to_owned())
            };
            Some((field("event:")?, serde_json::from_str(&field("data:")?).unwrap()))
        })
        .collect()
}

struct People {
    manager: String,
    other_manager: String,
    developer: String,
}

async fn people(system: &TestSystem) -> People {
    People {
        manager: system.user_token("manager@example.com", &["release_manager"]).await,
        other_manager: system.user_token("second-manager@example.com", &["release_manager"]).await,
        developer: system.user_token("dev@example.com", &["developer"]).await,
    }
}

/// dev → prod, the app `checkout` and a webhook target per environment pointing at `deployer`.
async fn pipeline(system: &TestSystem, manager: &str, deployer: &Deployer) {
    let env = |body: Value| call(system, Method::POST, "/api/v1/environments", manager, Some(body), &[]);
    let dev = expect(env(json!({"name": "dev"})).await, 201).await;
    assert_eq!(dev["required_approvals"], 0);
    assert_eq!(dev["deployer_roles"], json!(["developer", "release_manager"]));
    let prod = expect(env(json!({"name": "prod", "production": true})).await, 201).await;
    assert_eq!(prod["required_approvals"], 1, "production needs an approval by default");
    assert_eq!(prod["deployer_roles"], json!(["release_manager"]));
    let listed =
        expect(call(system, Method::GET, "/api/v1/environments", manager, None, &[]).await, 200).await;
    let names: Vec<&str> =
        listed["items"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["dev", "prod"], "pipeline order");

    let app = json!({"name": "checkout", "owner_team": "payments"});
    expect(call(system, Method::POST, "/api/v1/apps", manager, Some(app), &[]).await, 201).await;
    for environment in ["dev", "prod"] {
        let target = json!({
            "driver": "webhook",
            "driver_config": {"url": deployer.url, "timeout_seconds": 5, "max_attempts": 2},
            "default_strategy": "all_at_once",
        });
        let path = format!("/api/v1/apps/checkout/targets/{environment}");
        let response = call(system, Method::PUT, &path, manager, Some(target.clone()), &[]).await;
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
        let put = expect(response, 200).await;
        assert!(put["generated_secret"].as_str().unwrap().starts_with("whsec_"), "{put}");
        assert_eq!(put["target"]["has_secret"], true);
        assert_eq!(put["target"]["driver_config"]["url"], deployer.url.as_str());
        // Replacing the target keeps the secret, and does not show it again.
        let again = expect(call(system, Method::PUT, &path, manager, Some(target), &[]).await, 200).await;
        assert!(again.get("generated_secret").is_none(), "{again}");
        assert_eq!(again["target"]["has_secret"], true);
    }
    let targets =
        expect(call(system, Method::GET, "/api/v1/apps/checkout/targets", manager, None, &[]).await, 200)
            .await;
    assert_eq!(targets["items"].as_array().unwrap().len(), 2);
    assert!(!targets.to_string().contains("whsec_"), "secrets are never returned: {targets}");
}

#[tokio::test]
async fn a_release_goes_from_commits_through_dev_to_production_behind_gates_and_four_eyes() {
    let system = system().await;
    let people = people(&system).await;
    let deployer = Deployer::start().await;
    pipeline(&system, &people.manager, &deployer).await;
    let (manager, other_manager, developer) = (&people.manager, &people.other_manager, &people.developer);

    // A developer creates a release from commits; the version is computed.
    let commits = json!({"commits": [
        {"sha": "a1b2c3d", "message": "feat(cart): keep the basket across sessions", "author": "dev@example.com",
         "timestamp": "2026-11-20T10:00:00Z"},
        {"sha": "b2c3d4e", "message": "Tidy up the basket code"},
    ]});
    let preview_path = "/api/v1/apps/checkout/releases/preview";
    let preview =
        expect(call(&system, Method::POST, preview_path, developer, Some(commits.clone()), &[]).await, 200)
            .await;
    assert_eq!(preview["ignored_commits"], 1, "{preview}");
    let created = expect(
        call(&system, Method::POST, "/api/v1/apps/checkout/releases", developer, Some(commits), &[]).await,
        201,
    )
    .await;
    let version = created["version"].as_str().unwrap().to_owned();
    assert_eq!(version, preview["version"].as_str().unwrap());
    assert_eq!(created["bump"], "minor");
    assert!(created["changelog"].as_str().unwrap().contains("keep the basket across sessions"), "{created}");
    let page =
        expect(call(&system, Method::GET, "/api/v1/releases?app=checkout", developer, None, &[]).await, 200)
            .await;
    assert_eq!(page["items"][0]["version"], version.as_str());
    assert_eq!(page["items"][0]["commit_count"], 2);
    let check = json!({"name": "coverage", "status": "passed", "value": 91.5});
    let check_path = format!("/api/v1/apps/checkout/releases/{version}/quality-checks");
    expect(call(&system, Method::POST, &check_path, developer, Some(check), &[]).await, 201).await;
    let release_path = format!("/api/v1/apps/checkout/releases/{version}");
    let release = expect(call(&system, Method::GET, &release_path, developer, None, &[]).await, 200).await;
    assert_eq!(release["quality_checks"][0]["name"], "coverage");
    assert_eq!(release["commits"].as_array().unwrap().len(), 2);

    // The developer deploys it to dev; a retry with the same Idempotency-Key is the same deployment.
    let key = [("idempotency-key", "deploy-dev-1")];
    let body = json!({"app": "checkout", "environment": "dev", "version": version,
        "strategy": "all_at_once", "verification_seconds": 1});
    let response =
        call(&system, Method::POST, "/api/v1/deployments", developer, Some(body.clone()), &key).await;
    assert!(response.headers().contains_key(header::ETAG));
    let to_dev = expect(response, 201).await;
    let id = to_dev["id"].as_str().unwrap().to_owned();
    let retried =
        expect(call(&system, Method::POST, "/api/v1/deployments", developer, Some(body), &key).await, 201)
            .await;
    assert_eq!(retried["id"], id.as_str());

    // Live updates until the deployment is final.
    let events =
        call(&system, Method::GET, &format!("/api/v1/deployments/{id}/events"), developer, None, &[]).await;
    assert_eq!(events.status(), 200);
    assert!(events.headers()[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/event-stream"));
    let events = read_events(events).await;
    assert!(!events.is_empty() && events.iter().all(|(name, _)| name == "deployment"), "{events:?}");
    assert_eq!(events.last().unwrap().1["state"], "succeeded", "{events:?}");
    let done = wait_for(&system, developer, &id, |d| d["state"] == "succeeded").await;
    assert_eq!(done["weight"], 100);
    assert!(deployer.calls().iter().any(|c| c["deployment_id"] == id.as_str()), "the deployer was called");

    // Production: developers may not deploy there; the gate says why.
    let body = |seconds: u64| {
        json!({"app": "checkout", "environment": "prod", "version": version,
            "strategy": "all_at_once", "verification_seconds": seconds})
    };
    let refused = call(&system, Method::POST, "/api/v1/deployments", developer, Some(body(600)), &[]).await;
    let refusal = problem(refused, 403, "forbidden").await;
    assert!(refusal["detail"].as_str().unwrap().contains("gate authority"), "{refusal}");

    // A release manager's production deployment waits for a second release manager.
    let to_prod =
        expect(call(&system, Method::POST, "/api/v1/deployments", manager, Some(body(600)), &[]).await, 201)
            .await;
    assert_eq!(to_prod["state"], "awaiting_approval");
    let prod_id = to_prod["id"].as_str().unwrap().to_owned();
    let approvals = format!("/api/v1/deployments/{prod_id}/approvals");
    let approve = json!({"decision": "approved", "comment": "looks good"});
    let own = call(&system, Method::POST, &approvals, manager, Some(approve.clone()), &[]).await;
    let own = problem(own, 403, "forbidden").await;
    assert!(own["detail"].as_str().unwrap().contains("four-eyes"), "{own}");
    let approved =
        expect(call(&system, Method::POST, &approvals, other_manager, Some(approve), &[]).await, 200).await;
    assert_eq!(approved["approvals"][0]["approver_email"], "second-manager@example.com");
    assert_ne!(approved["state"], "awaiting_approval");

    // Acting on a revision that is no longer current is a conflict.
    let holding = wait_for(&system, manager, &prod_id, |d| {
        d["state"] == "in_progress" && matches!(d["phase"].as_str(), Some("holding" | "analyzing"))
    })
    .await;
    let revision = holding["revision"].as_i64().unwrap();
    let pause = format!("/api/v1/deployments/{prod_id}/pause");
    let stale = format!("\"{}\"", revision - 1);
    let reason = json!({"reason": "checking dashboards"});
    let conflict =
        call(&system, Method::POST, &pause, manager, Some(reason.clone()), &[("if-match", stale.as_str())])
            .await;
    problem(conflict, 409, "conflict").await;
    let current = format!("\"{revision}\"");
    let response =
        call(&system, Method::POST, &pause, manager, Some(reason), &[("if-match", current.as_str())]).await;
    let etag = response.headers()[header::ETAG].to_str().unwrap().to_owned();
    let paused = expect(response, 200).await;
    assert_eq!(paused["phase"], "paused");
    assert_eq!(etag, format!("\"{}\"", paused["revision"]));
    let resume = format!("/api/v1/deployments/{prod_id}/resume");
    let resumed = expect(
        call(&system, Method::POST, &resume, manager, None, &[("if-match", etag.as_str())]).await,
        200,
    )
    .await;
    assert_ne!(resumed["phase"], "paused");
    // Nothing ran in production before: there is nothing to roll back to.
    let rollback = json!({"app": "checkout", "environment": "prod", "reason": "drill"});
    let nothing = call(&system, Method::POST, "/api/v1/rollbacks", manager, Some(rollback), &[]).await;
    problem(nothing, 409, "failed_precondition").await;
    let abort = format!("/api/v1/deployments/{prod_id}/abort");
    let aborted = expect(call(&system, Method::POST, &abort, manager, Some(json!({})), &[]).await, 200).await;
    assert_eq!(aborted["state"], "aborted");

    // What runs where.
    let status =
        expect(call(&system, Method::GET, "/api/v1/status?app=checkout", developer, None, &[]).await, 200)
            .await;
    let dev = status["items"].as_array().unwrap().iter().find(|e| e["environment"] == "dev").unwrap();
    assert_eq!(dev["version"], version.as_str(), "{status}");
    assert!(dev["deployed_at"].is_string());

    // A freeze stops everything but hotfixes, until it is lifted.
    let freeze = json!({"environment": "dev", "duration_seconds": 3600, "reason": "holiday"});
    let window =
        expect(call(&system, Method::POST, "/api/v1/freeze-windows", manager, Some(freeze), &[]).await, 201)
            .await;
    assert_eq!(window["environment"], "dev");
    let frozen = call(
        &system,
        Method::POST,
        "/api/v1/deployments",
        developer,
        Some(json!({
        "app": "checkout", "environment": "dev", "version": version})),
        &[],
    )
    .await;
    let frozen = problem(frozen, 409, "failed_precondition").await;
    assert!(frozen["detail"].as_str().unwrap().contains("gate freeze"), "{frozen}");
    let windows =
        expect(call(&system, Method::GET, "/api/v1/freeze-windows", developer, None, &[]).await, 200).await;
    assert_eq!(windows["items"].as_array().unwrap().len(), 1);
    let lift = format!("/api/v1/freeze-windows/{}", window["id"].as_str().unwrap());
    let lifted = call(&system, Method::DELETE, &lift, manager, None, &[]).await;
    assert_eq!(lifted.status(), StatusCode::NO_CONTENT);

    // The audit trail, for release managers.
    let audit =
        expect(call(&system, Method::GET, "/api/v1/audit?page_size=1000", manager, None, &[]).await, 200)
            .await;
    let actions: Vec<&str> =
        audit["items"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    for action in ["environment.create", "target.put", "release.create", "deployment.aborted"] {
        assert!(actions.contains(&action), "{action} missing from {actions:?}");
    }
    let releases_only = expect(
        call(&system, Method::GET, "/api/v1/audit?resource_type=release", manager, None, &[]).await,
        200,
    )
    .await;
    assert!(releases_only["items"].as_array().unwrap().iter().all(|e| e["resource_type"] == "release"));
    problem(call(&system, Method::GET, "/api/v1/audit", developer, None, &[]).await, 403, "forbidden").await;
    let verified =
        expect(call(&system, Method::GET, "/api/v1/audit/verify", manager, None, &[]).await, 200).await;
    assert_eq!(verified["valid"], true, "{verified}");
    assert!(verified["entries_checked"].as_i64().unwrap() >= actions.len() as i64);

    let dora = expect(
        call(&system, Method::GET, "/api/v1/dora?app=checkout&environment=dev", developer, None, &[]).await,
        200,
    )
    .await;
    assert_eq!(dora["window_days"], 30);
    assert_eq!(dora["deployments"], 1, "{dora}");
    assert!(dora["lead_time_seconds"].as_f64().unwrap() > 0.0, "{dora}");
    let listed = expect(
        call(&system, Method::GET, "/api/v1/deployments?app=checkout&state=succeeded", developer, None, &[])
            .await,
        200,
    )
    .await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn the_release_api_refuses_bad_input_with_422_and_duplicates_with_409() {
    let system = system().await;
    let people = people(&system).await;
    let deployer = Deployer::start().await;
    pipeline(&system, &people.manager, &deployer).await;
    let (manager, developer) = (&people.manager, &people.developer);
    let post = |path: &'static str, token: &str, body: Value| {
        let request = system.http.post(system.url(path)).bearer_auth(token).json(&body);
        async move { request.send().await.unwrap() }
    };

    let created =
        expect(post("/api/v1/apps/checkout/releases", developer, json!({"version": "v1.2.0"})).await, 201)
            .await;
    assert_eq!(created["version"], "1.2.0");
    assert_eq!(created["bump"], "explicit");
    let duplicate = post("/api/v1/apps/checkout/releases", developer, json!({"version": "1.2.0"})).await;
    let body = problem(duplicate, 409, "already_exists").await;
    assert!(body["detail"].as_str().unwrap().contains("1.2.0"), "{body}");

    let invalid = [
        ("/api/v1/environments", json!({"name": "Not A Slug"}), "name"),
        ("/api/v1/environments", json!({"name": "qa", "required_approvals": 11}), "required_approvals"),
        (
            "/api/v1/environments",
            json!({"name": "qa", "quality_thresholds": [{"check": "coverage", "operator": "approx"}]}),
            "operator",
        ),
        ("/api/v1/environments", json!({"name": "qa", "owner": "me"}), "owner"),
        ("/api/v1/apps/checkout/releases", json!({"version": "banana"}), "semantic version"),
        ("/api/v1/apps/checkout/releases", json!({}), "commits"),
        (
            "/api/v1/apps/checkout/releases",
            json!({"version": "2.0.0", "artifact_digest": "sha256:abc"}),
            "artifact_digest",
        ),
        (
            "/api/v1/apps/checkout/releases/preview",
            json!({"commits": [{"message": "feat: x"}], "pre_release": "01"}),
            "pre_release",
        ),
        (
            "/api/v1/deployments",
            json!({"app": "checkout", "environment": "dev", "version": "1.2.0", "steps": {"0": {}}}),
            "1 to 100",
        ),
        (
            "/api/v1/deployments",
            json!({"app": "checkout", "environment": "dev", "version": "1.2.0", "strategy": "yolo"}),
            "strategy",
        ),
        (
            "/api/v1/deployments",
            json!({"app": "checkout", "environment": "dev", "version": "1.2.0", "verification_seconds": -1}),
            "verification_seconds",
        ),
        ("/api/v1/freeze-windows", json!({"duration_seconds": 0}), "duration_seconds"),
    ];
    for (path, body, mentions) in invalid {
        let response = post(path, manager, body.clone()).await;
        let problem = problem(response, 422, "validation_failed").await;
        assert!(problem["detail"].as_str().unwrap().contains(mentions), "{body} → {problem}");
    }
    let targets = [
        (json!({"driver": "ftp", "driver_config": {}}), "driver"),
        (json!({"driver": "webhook", "driver_config": {"url": "ftp://deployer"}}), "url"),
        (
            json!({"driver": "webhook", "driver_config": {"url": deployer.url, "max_attempts": 11}}),
            "max_attempts",
        ),
        (json!({"driver": "router", "driver_config": {"upstreams": {"1.2.0": ["no-port"]}}}), "host:port"),
        (
            json!({"driver": "router", "driver_config": {"upstreams": {}}, "webhook_secret": "whsec_AAAA"}),
            "webhook_secret",
        ),
    ];
    for (body, mentions) in targets {
        let response =
            call(&system, Method::PUT, "/api/v1/apps/checkout/targets/dev", manager, Some(body.clone()), &[])
                .await;
        let problem = problem(response, 422, "validation_failed").await;
        assert!(problem["detail"].as_str().unwrap().contains(mentions), "{body} → {problem}");
    }
    let router = json!({"driver": "router", "driver_config": {"route": {"host": "shop.example.com"},
        "upstreams": {"1.2.0": ["10.0.0.7:8080"]}}, "canary_steps": {"10": {"hold_seconds": 60}, "50": {}}});
    let put = expect(
        call(&system, Method::PUT, "/api/v1/apps/checkout/targets/dev", manager, Some(router), &[]).await,
        200,
    )
    .await;
    assert_eq!(
        put["target"]["canary_steps"],
        json!({"10": {"hold_seconds": 60, "analysis": false}, "50": {"hold_seconds": 0, "analysis": false}})
    );
    assert_eq!(put["target"]["default_strategy"], "canary");

    let unknown = uuid::Uuid::now_v7();
    let pause = format!("/api/v1/deployments/{unknown}/pause");
    let bad_revision =
        call(&system, Method::POST, &pause, manager, Some(json!({})), &[("if-match", "W/\"3\"")]).await;
    problem(bad_revision, 422, "validation_failed").await;
    let missing =
        call(&system, Method::POST, &pause, manager, Some(json!({})), &[("if-match", "\"3\"")]).await;
    problem(missing, 404, "not_found").await;
    let bad_key = call(
        &system,
        Method::POST,
        &pause,
        manager,
        Some(json!({})),
        &[("idempotency-key", &"k".repeat(201))],
    )
    .await;
    problem(bad_key, 422, "validation_failed").await;
    let not_an_id = call(&system, Method::GET, "/api/v1/deployments/not-an-id", manager, None, &[]).await;
    problem(not_an_id, 422, "validation_failed").await;
    for query in [
        "/api/v1/dora?app=checkout&window_days=0",
        "/api/v1/audit?page_token=abc",
        "/api/v1/releases",
        "/api/v1/deployments?state=sleeping",
    ] {
        problem(call(&system, Method::GET, query, manager, None, &[]).await, 422, "validation_failed").await;
    }
    let no_production = call(&system, Method::GET, "/api/v1/dora?app=checkout", manager, None, &[]).await;
    assert_eq!(no_production.status(), 200, "prod is the production environment");
    problem(
        call(&system, Method::GET, "/api/v1/releases?app=nope", manager, None, &[]).await,
        404,
        "not_found",
    )
    .await;
    let anonymous = system.http.get(system.url("/api/v1/deployments")).send().await.unwrap();
    problem(anonymous, 401, "unauthenticated").await;
}

#[tokio::test]
async fn the_openapi_document_describes_the_release_api() {
    let system = system().await;
    let doc: Value =
        system.http.get(system.url("/api/openapi.json")).send().await.unwrap().json().await.unwrap();
    let tags: Vec<&str> =
        doc["tags"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    for tag in ["environments", "releases", "deployments", "audit", "dora"] {
        assert!(tags.contains(&tag), "tag {tag} missing");
    }
    for (path, method) in [
        ("/api/v1/environments", "post"),
        ("/api/v1/environments/{environment}", "patch"),
        ("/api/v1/apps/{app}/targets/{environment}", "put"),
        ("/api/v1/releases", "get"),
        ("/api/v1/apps/{app}/releases", "post"),
        ("/api/v1/apps/{app}/releases/preview", "post"),
        ("/api/v1/apps/{app}/releases/{version}/quality-checks", "post"),
        ("/api/v1/deployments", "post"),
        ("/api/v1/deployments/{id}/approvals", "post"),
        ("/api/v1/deployments/{id}/driver-result", "post"),
        ("/api/v1/rollbacks", "post"),
        ("/api/v1/status", "get"),
        ("/api/v1/freeze-windows/{id}", "delete"),
        ("/api/v1/audit/verify", "get"),
        ("/api/v1/dora", "get"),
    ] {
        let operation = &doc["paths"][path][method];
        assert!(operation.is_object(), "{method} {path} missing");
        assert_eq!(operation["security"][0]["bearer"], json!([]), "{method} {path} needs a token");
    }
    let events = &doc["paths"]["/api/v1/deployments/{id}/events"]["get"]["responses"]["200"]["content"];
    assert!(events.get("text/event-stream").is_some(), "{events}");
    let pause = &doc["paths"]["/api/v1/deployments/{id}/pause"]["post"];
    let headers: Vec<&str> =
        pause["parameters"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert!(headers.contains(&"If-Match") && headers.contains(&"Idempotency-Key"), "{headers:?}");
    assert!(pause["responses"].get("409").is_some());
    let schemas = &doc["components"]["schemas"];
    assert_eq!(schemas["CanarySteps"]["propertyNames"]["pattern"], "^([1-9][0-9]?|100)$");
    assert_eq!(
        schemas["DeploymentState"]["enum"],
        json!([
            "pending",
            "awaiting_approval",
            "in_progress",
            "succeeded",
            "failed",
            "rolled_back",
            "aborted",
            "superseded"
        ])
    );
}
