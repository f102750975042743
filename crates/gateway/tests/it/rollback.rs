//! The rollback service through the REST API: health policies, a failing canary rolled back
//! automatically with its evidence (analysis, decision records, incident, rollback record),
//! manual rollbacks, and Alertmanager's webhook — with real traffic through the router to two
//! demo app versions.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use demo_app::{DemoApp, Knobs};
use release_pilot::testing::TestSystem;
use reqwest::{Method, header};
use rp_runtime::CancellationToken;
use rp_test_support::eventually;
use serde_json::{Value, json};

use super::{call, expect, problem, system, system_with};

const WAIT: Duration = Duration::from_secs(30);
const APP: &str = "shop";
const ENV: &str = "staging";
const POLICY: &str = "/api/v1/apps/shop/environments/staging/policy";

/// Samples every 100 ms, evaluation at least every 100 ms, leases of 2 s: fast enough for tests.
const FAST: &[(&str, &str)] = &[
    ("RP_ROUTER__STATS_INTERVAL_MS", "100"),
    ("RP_ROUTER__HEALTH_CHECK_INTERVAL_MS", "100"),
    ("RP_ROUTER__HEALTH_CHECK_TIMEOUT_MS", "200"),
    ("RP_ROLLBACK__EVALUATION_INTERVAL_MS", "100"),
    ("RP_ROLLBACK__LEASE_SECS", "2"),
    ("RP_ROLLBACK__RECORD_INTERVAL_MS", "1000"),
    ("RP_RELEASE__ENGINE_TICK_MS", "50"),
];

/// Sends requests through the router until dropped; remembers which version answered, how.
struct Traffic {
    hits: Arc<Mutex<Vec<(Instant, String, u16)>>>,
    _stop: tokio_util::sync::DropGuard,
}

impl Traffic {
    fn start(url: String, workers: usize, pause: Duration) -> Self {
        let hits = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let client = reqwest::Client::new();
        for _ in 0..workers {
            let (hits, stop, client, url) = (hits.clone(), stop.clone(), client.clone(), url.clone());
            tokio::spawn(async move {
                while !stop.is_cancelled() {
                    if let Ok(response) = client.get(&url).timeout(Duration::from_secs(2)).send().await {
                        let version = response
                            .headers()
                            .get("x-rp-version")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        hits.lock().unwrap().push((Instant::now(), version, response.status().as_u16()));
                    }
                    tokio::time::sleep(pause).await;
                }
            });
        }
        Self { hits, _stop: stop.drop_guard() }
    }

    /// Waits until every answer of the last 500 ms came from `version`, without errors.
    async fn wait_all_on(&self, version: &str) {
        eventually(WAIT, &format!("all traffic on {version}"), || async {
            let since = Instant::now() - Duration::from_millis(500);
            let hits = self.hits.lock().unwrap();
            let recent: Vec<_> = hits.iter().filter(|(at, ..)| *at >= since).collect();
            (recent.len() >= 10 && recent.iter().all(|(_, v, status)| v == version && *status == 200))
                .then_some(())
        })
        .await;
    }
}

/// The whole system with demo apps 1.0.0 and 2.0.0 behind the router, 1.0.0 serving in
/// `staging`, all set up through the REST API.
struct Stack {
    system: TestSystem,
    admin: String,
    _v1: DemoApp,
    v2: DemoApp,
}

impl Stack {
    async fn start() -> Self {
        let system = system_with(FAST).await;
        let admin = system.admin_token().await;
        let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
        let v1 = demo_app::spawn("1.0.0", any_port, Knobs::default()).await.unwrap();
        let v2 = demo_app::spawn("2.0.0", any_port, Knobs::default()).await.unwrap();
        let stack = Self { system, admin, _v1: v1, v2 };
        stack.post("/api/v1/environments", json!({"name": ENV}), 201).await;
        stack.post("/api/v1/apps", json!({"name": APP}), 201).await;
        let target = json!({
            "driver": "router",
            "driver_config": {
                "route": {"path_prefix": "/"},
                "upstreams": {"1.0.0": [stack._v1.addr.to_string()], "2.0.0": [stack.v2.addr.to_string()]},
            },
            "default_strategy": "canary",
        });
        let path = format!("/api/v1/apps/{APP}/targets/{ENV}");
        expect(call(&stack.system, Method::PUT, &path, &stack.admin, Some(target), &[]).await, 200).await;
        for version in ["1.0.0", "2.0.0"] {
            stack.post(&format!("/api/v1/apps/{APP}/releases"), json!({"version": version}), 201).await;
        }
        let first = stack
            .deploy(json!({"version": "1.0.0", "strategy": "all_at_once", "verification_seconds": 1}))
            .await;
        stack.wait_state(&first, "succeeded").await;
        let http = reqwest::Client::new();
        let url = stack.router_url();
        eventually(WAIT, "the router to serve 1.0.0", || async {
            let response = http.get(&url).send().await.ok()?;
            (response.headers().get("x-rp-version")?.to_str().ok()? == "1.0.0").then_some(())
        })
        .await;
        stack
    }

    fn router_url(&self) -> String {
        format!("http://{}/", self.system.app.service("router").expect("the router runs").primary_addr)
    }

    async fn post(&self, path: &str, body: Value, status: u16) -> Value {
        expect(call(&self.system, Method::POST, path, &self.admin, Some(body), &[]).await, status).await
    }

    async fn get(&self, path: &str) -> Value {
        expect(call(&self.system, Method::GET, path, &self.admin, None, &[]).await, 200).await
    }

    /// Deploys `body` (with the app and environment filled in); returns the deployment's id.
    async fn deploy(&self, mut body: Value) -> String {
        body["app"] = APP.into();
        body["environment"] = ENV.into();
        let deployment = self.post("/api/v1/deployments", body, 201).await;
        deployment["id"].as_str().unwrap().to_owned()
    }

    async fn wait_state(&self, id: &str, state: &str) -> Value {
        let path = format!("/api/v1/deployments/{id}");
        eventually(WAIT, &format!("deployment {id} to be {state}"), || async {
            let deployment = self.get(&path).await;
            (deployment["state"] == state).then_some(deployment)
        })
        .await
    }

    /// Waits for the analysis of deployment `id` to be `status`; with every decision record.
    async fn wait_analysis(&self, id: &str, status: &str) -> Value {
        let path = format!("/api/v1/deployments/{id}/analysis?measurements=1000");
        eventually(WAIT, &format!("the analysis of {id} to be {status}"), || async {
            let response = call(&self.system, Method::GET, &path, &self.admin, None, &[]).await;
            let analysis: Value = response.json().await.ok()?;
            (analysis["status"] == status).then_some(analysis)
        })
        .await
    }

    /// Error rate above 5% over 2 s rolls back; so does a matching Alertmanager alert.
    async fn fast_policy(&self) {
        let rules = json!({"rules": [
            {"name": "error rate above 5%", "metric": "error_rate", "source": {"kind": "router"},
             "operator": "gt", "threshold": 5.0, "window_seconds": 2, "min_samples": 20,
             "severity": "critical", "action": "rollback"},
            {"name": "alert firing", "metric": "alert", "source": {"kind": "alertmanager"},
             "operator": "gte", "threshold": 1, "window_seconds": 60, "severity": "critical",
             "action": "rollback"}
        ]});
        let response = call(&self.system, Method::PUT, POLICY, &self.admin, Some(rules), &[]).await;
        let policy = expect(response, 200).await;
        assert_eq!(policy["default"], false);
    }

    /// A canary of 2.0.0 holding each `(weight, seconds)` step with analysis.
    async fn canary(&self, steps: &[(u32, u32)]) -> String {
        let steps: serde_json::Map<String, Value> = steps
            .iter()
            .map(|(weight, hold)| (weight.to_string(), json!({"hold_seconds": hold, "analysis": true})))
            .collect();
        self.deploy(json!({"version": "2.0.0", "strategy": "canary", "steps": steps})).await
    }
}

async fn put(system: &TestSystem, token: &str, body: Value) -> reqwest::Response {
    call(system, Method::PUT, POLICY, token, Some(body), &[]).await
}

async fn post_rollback(system: &TestSystem, token: &str, body: Value) -> reqwest::Response {
    call(system, Method::POST, "/api/v1/rollbacks", token, Some(body), &[]).await
}

fn at(value: &Value) -> DateTime<Utc> {
    value.as_str().and_then(|t| t.parse().ok()).unwrap_or_else(|| panic!("not a time: {value}"))
}

fn ids(value: &Value) -> Vec<String> {
    value.as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn policies_round_trip_over_http_and_only_rules_that_can_work_are_stored() {
    let system = system().await;
    let admin = system.admin_token().await;
    let manager = system.user_token("manager@example.com", &["release_manager"]).await;
    let developer = system.user_token("dev@example.com", &["developer"]).await;

    // Without a policy, the built-in trigger matrix applies.
    let default = expect(call(&system, Method::GET, POLICY, &developer, None, &[]).await, 200).await;
    assert_eq!((default["app"].as_str(), default["environment"].as_str()), (Some(APP), Some(ENV)));
    assert_eq!(default["default"], true);
    assert!(default["updated_at"].is_null());
    let errors = default["rules"].as_array().unwrap().iter().find(|r| r["name"] == "error rate above 2%");
    let errors = errors.expect("the trigger matrix's error-rate rule");
    assert_eq!(errors["source"], json!({"kind": "router"}));
    assert_eq!((errors["threshold"].as_f64(), errors["for_seconds"].as_i64()), (Some(2.0), Some(120)));
    assert_eq!(errors["action"], "rollback");

    let p99 = json!({"name": "p99 above 800 ms", "metric": "latency_p99", "source": {"kind": "router"},
        "operator": "gt", "threshold": 800, "window_seconds": 30, "for_seconds": 10, "min_samples": 50,
        "no_data": "pause", "severity": "high", "action": "pause", "weights": [50, 1]});
    let forbidden = put(&system, &developer, json!({"rules": [p99]})).await;
    let forbidden = problem(forbidden, 403, "forbidden").await;
    assert!(forbidden["detail"].as_str().unwrap().contains("release_manager"), "{forbidden}");

    // Rules that could not work are refused, saying which and why.
    let with = |key: &str, value: Value| {
        let mut rule = p99.clone();
        rule[key] = value;
        json!({"rules": [rule]})
    };
    for (bad, why) in [
        (with("source", json!({"kind": "alertmanager"})), "does not come from a alertmanager source"),
        (with("metric", json!("query")), "does not come from a router source"),
        (with("window_seconds", json!(7200)), "at most 3600"),
        (with("window_seconds", json!(0)), "window_seconds must be between 1 and 86400"),
        (with("metric", json!("vibes")), "unknown variant `vibes`"),
        (with("weights", json!([0, 120])), "weights must be between 0 and 100"),
        (with("source", json!({"kind": "http_probe", "url": "ftp://probe"})), "does not come from"),
        (with("treshold", json!(1)), "unknown field `treshold`"),
        (
            json!({"rules": [{"name": "q", "metric": "query", "operator": "gt", "threshold": 1,
            "source": {"kind": "prometheus", "url": "ftp://prometheus", "query": "up"},
            "window_seconds": 60, "severity": "low", "action": "alert"}]}),
            "http(s) URL",
        ),
        (json!({"rules": vec![p99.clone(); 51]}), "at most 50 rules"),
    ] {
        let refused = problem(put(&system, &manager, bad.clone()).await, 422, "validation_failed").await;
        assert!(refused["detail"].as_str().unwrap().contains(why), "{bad}: {refused}");
    }
    let twice =
        problem(put(&system, &manager, json!({"rules": [p99, p99]})).await, 409, "already_exists").await;
    assert!(twice["detail"].as_str().unwrap().contains("p99 above 800 ms"), "{twice}");
    let unchanged = expect(call(&system, Method::GET, POLICY, &admin, None, &[]).await, 200).await;
    assert_eq!(unchanged["default"], true, "nothing was stored");

    // Every kind of source; defaults filled in, the weight range in order.
    let rules = json!([
        p99,
        {"name": "business metric off stable", "metric": "query", "comparison": "relative_to_stable",
         "source": {"kind": "prometheus", "url": "http://prometheus:9090",
                    "query": "sum(rate(orders_total{app=\"{app}\",version=\"{version}\"}[5m]))"},
         "operator": "gt", "threshold": 50, "window_seconds": 300, "for_seconds": 300,
         "severity": "medium", "action": "alert"},
        {"name": "probe", "metric": "health_check_failures",
         "source": {"kind": "http_probe", "url": "http://{app}-canary:8080/health"},
         "operator": "gte", "threshold": 3, "window_seconds": 10, "severity": "critical", "action": "rollback"},
        {"name": "paged", "metric": "alert", "source": {"kind": "alertmanager", "alertname": "CheckoutDown"},
         "operator": "gte", "threshold": 1, "window_seconds": 60, "severity": "critical", "action": "rollback"}
    ]);
    let stored = expect(put(&system, &manager, json!({"rules": rules})).await, 200).await;
    assert_eq!(stored["default"], false);
    assert!(at(&stored["updated_at"]) <= Utc::now());
    assert_eq!(stored["rules"].as_array().unwrap().len(), 4);
    assert_eq!(stored["rules"][0]["weights"], json!([1, 50]), "the range is put in order");
    assert_eq!(stored["rules"][0]["no_data"], "pause");
    assert_eq!(stored["rules"][1]["comparison"], "relative_to_stable");
    assert_eq!(stored["rules"][2]["comparison"], "absolute", "the default");
    assert_eq!(stored["rules"][2]["no_data"], "extend", "the default");
    assert_eq!(stored["rules"][2]["source"]["timeout_ms"], 2000, "the default");
    assert_eq!(stored["rules"][3]["source"], json!({"kind": "alertmanager", "alertname": "CheckoutDown"}));
    assert!(stored["rules"][3].get("weights").is_none());
    let read = expect(call(&system, Method::GET, POLICY, &developer, None, &[]).await, 200).await;
    assert_eq!(read, stored);

    // An empty list restores the defaults.
    let reset = expect(put(&system, &admin, json!({"rules": []})).await, 200).await;
    assert_eq!(reset["default"], true);
    assert_eq!(reset["rules"], default["rules"]);

    let bad_app = "/api/v1/apps/Not_A_Name/environments/staging/policy";
    problem(call(&system, Method::GET, bad_app, &admin, None, &[]).await, 422, "validation_failed").await;
    let anonymous = system.http.get(system.url(POLICY)).send().await.unwrap();
    problem(anonymous, 401, "unauthenticated").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_canary_is_rolled_back_and_the_evidence_is_visible_over_rest() {
    let stack = Stack::start().await;
    stack.fast_policy().await;
    let traffic = Traffic::start(stack.router_url(), 2, Duration::from_millis(10));
    stack.v2.set(Knobs { error_rate: 0.5, ..Knobs::default() });
    let id = stack.canary(&[(20, 60), (50, 60)]).await;

    let rolled = stack.wait_state(&id, "rolled_back").await;
    assert!(rolled["failure_reason"].as_str().unwrap().contains("error rate above 5%"), "{rolled}");
    traffic.wait_all_on("1.0.0").await;

    // The analysis failed, and says why.
    let analysis = stack.wait_analysis(&id, "failed").await;
    let analysis_id = analysis["id"].as_str().unwrap().to_owned();
    assert_eq!(
        (analysis["version"].as_str(), analysis["stable_version"].as_str()),
        (Some("2.0.0"), Some("1.0.0"))
    );
    assert!(analysis["reason"].as_str().unwrap().starts_with("error rate above 5%: "), "{analysis}");
    assert!(analysis["ended_at"].is_string());
    let by_id = stack.get(&format!("/api/v1/analyses/{analysis_id}?measurements=1000")).await;
    assert_eq!(by_id["deployment_id"], id.as_str());
    assert_eq!(by_id["measurements"], analysis["measurements"]);
    let failed = stack.get("/api/v1/analyses?app=shop&environment=staging&status=failed").await;
    let listed = &failed["items"].as_array().unwrap()[..];
    assert!(listed.iter().any(|a| a["id"] == analysis_id.as_str()), "{failed}");
    assert!(listed.iter().all(|a| a["status"] == "failed" && a["measurements"] == json!([])));
    // Only the first deployment (1.0.0) passed its analysis.
    let passed = stack.get("/api/v1/analyses?app=shop&status=passed").await;
    let versions: Vec<&Value> = passed["items"].as_array().unwrap().iter().map(|a| &a["version"]).collect();
    assert_eq!(versions, [&json!("1.0.0")], "{passed}");

    // The decision records: only breaches when asked; the failing ones saw real traffic.
    let breaches =
        stack.get(&format!("/api/v1/analyses/{analysis_id}?breaches_only=true&measurements=1000")).await;
    let records = breaches["measurements"].as_array().unwrap();
    assert!(!records.is_empty() && records.iter().all(|m| m["verdict"] != "healthy"), "{breaches}");
    let failing: Vec<&Value> = records.iter().filter(|m| m["verdict"] == "failed").collect();
    assert!(!failing.is_empty(), "{breaches}");
    for record in &failing {
        assert_eq!(record["rule"], "error rate above 5%");
        assert_eq!(
            (record["metric"].as_str(), record["operator"].as_str()),
            (Some("error_rate"), Some("gt"))
        );
        assert_eq!((record["threshold"].as_f64(), record["action"].as_str()), (Some(5.0), Some("rollback")));
        assert!(
            record["value"].as_f64().unwrap() > 5.0 && record["samples"].as_u64().unwrap() >= 20,
            "{record}"
        );
        assert!(record["query"].as_str().unwrap().contains("2.0.0"), "{record}");
    }

    // The incident: severity, a timeline in order, MTTR, and the evidence.
    let incident = eventually(WAIT, "the incident", || async {
        let page = stack.get("/api/v1/incidents?app=shop&status=open").await;
        page["items"].as_array().unwrap().first().cloned()
    })
    .await;
    let incident_id = incident["id"].as_str().unwrap().to_owned();
    assert_eq!(stack.get(&format!("/api/v1/incidents/{incident_id}")).await, incident);
    assert_eq!(
        (incident["severity"].as_str(), incident["version"].as_str()),
        (Some("critical"), Some("2.0.0"))
    );
    assert_eq!(
        (incident["deployment_id"].as_str(), incident["environment"].as_str()),
        (Some(id.as_str()), Some(ENV))
    );
    let timeline = incident["timeline"].as_array().unwrap();
    let steps: Vec<&str> = timeline.iter().map(|t| t["what"].as_str().unwrap()).collect();
    assert_eq!(steps.len(), 3, "{steps:?}");
    assert_eq!(steps[0], "first bad sample");
    assert!(steps[1].starts_with("decision: error rate above 5%"), "{steps:?}");
    assert_eq!(steps[2], "traffic restored to 1.0.0");
    let times: Vec<DateTime<Utc>> = timeline.iter().map(|t| at(&t["at"])).collect();
    assert!(times[0] <= times[1] && times[1] <= times[2], "{times:?}");
    let mttr = incident["mttr_seconds"].as_f64().unwrap();
    assert!(mttr > 0.0 && mttr < 20.0, "MTTR {mttr}");
    let restore = (times[2] - times[0]).num_milliseconds() as f64 / 1000.0;
    assert!((mttr - restore).abs() < 0.01, "MTTR {mttr} is first bad sample → traffic restored ({restore})");
    let evidence = ids(&incident["measurement_ids"]);
    assert!(!evidence.is_empty());
    for id in &evidence {
        assert!(failing.iter().any(|m| m["id"] == id.as_str()), "{id} is a failed decision record");
    }

    // The rollback record ties it together.
    let rollbacks = stack.get("/api/v1/rollbacks?app=shop&environment=staging").await;
    let items = rollbacks["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{rollbacks}");
    let rollback = &items[0];
    assert_eq!(incident["rollback_id"], rollback["id"]);
    assert_eq!(rollback["incident_id"], incident_id.as_str());
    assert_eq!(
        (rollback["trigger"].as_str(), rollback["requested_by"].as_str()),
        (Some("error rate above 5%"), Some("system"))
    );
    assert_eq!(
        (rollback["version"].as_str(), rollback["restored_version"].as_str()),
        (Some("2.0.0"), Some("1.0.0"))
    );
    assert_eq!(ids(&rollback["measurement_ids"]), evidence);
    assert!(at(&rollback["decided_at"]) <= at(&rollback["traffic_restored_at"]));

    // Responders resolve it, once; the note ends the timeline.
    let resolve = format!("/api/v1/incidents/{incident_id}/resolve");
    let note = json!({"note": "bad config in 2.0.0"});
    let developer = stack.system.user_token("dev@example.com", &["developer"]).await;
    let refused = call(&stack.system, Method::POST, &resolve, &developer, Some(note.clone()), &[]).await;
    problem(refused, 403, "forbidden").await;
    let commander = stack.system.user_token("ic@example.com", &["incident_commander"]).await;
    let resolved =
        expect(call(&stack.system, Method::POST, &resolve, &commander, Some(note.clone()), &[]).await, 200)
            .await;
    assert_eq!(resolved["status"], "resolved");
    let last = resolved["timeline"].as_array().unwrap().last().unwrap();
    assert_eq!(last["what"], "resolved by ic@example.com: bad config in 2.0.0");
    let lag = at(&resolved["resolved_at"]) - at(&last["at"]);
    assert!((0..1000).contains(&lag.num_microseconds().unwrap()), "the timeline keeps milliseconds");
    let again =
        expect(call(&stack.system, Method::POST, &resolve, &commander, Some(json!({})), &[]).await, 200)
            .await;
    assert_eq!(again, resolved, "resolving again changes nothing");
    let open = stack.get("/api/v1/incidents?status=open").await;
    assert_eq!(open["items"], json!([]));
    let bad_note =
        call(&stack.system, Method::POST, &resolve, &commander, Some(json!({"note": "a\u{0}b"})), &[]).await;
    problem(bad_note, 422, "validation_failed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_rollback_asked_for_twice_is_one_rollback_with_one_record() {
    let stack = Stack::start().await;
    stack.fast_policy().await;
    let id = stack.canary(&[(20, 120)]).await;
    stack.wait_analysis(&id, "running").await;
    let manager = stack.system.user_token("manager@example.com", &["release_manager"]).await;
    let viewer = stack.system.user_token("viewer@example.com", &["viewer"]).await;

    // Bad requests are refused before anything happens.
    for bad in [
        json!({}),
        json!({"app": APP}),
        json!({"deployment_id": id, "app": APP, "environment": ENV}),
        json!({"deployment_id": "not-an-id"}),
        json!({"app": "Shop", "environment": ENV}),
        json!({"deployment_id": id, "reason": "line\nbreak"}),
        json!({"deployment_id": id, "why": "unknown field"}),
    ] {
        problem(post_rollback(&stack.system, &manager, bad).await, 422, "validation_failed").await;
    }
    problem(post_rollback(&stack.system, &viewer, json!({"deployment_id": id})).await, 403, "forbidden")
        .await;
    assert_eq!(stack.get(&format!("/api/v1/deployments/{id}")).await["state"], "in_progress");

    let body = json!({"deployment_id": id, "reason": "checkout looks wrong"});
    let first = expect(post_rollback(&stack.system, &manager, body.clone()).await, 201).await;
    assert_eq!(
        (first["trigger"].as_str(), first["restored_version"].as_str()),
        (Some("manual"), Some("1.0.0"))
    );
    assert_eq!(
        (first["deployment_id"].as_str(), first["version"].as_str()),
        (Some(id.as_str()), Some("2.0.0"))
    );
    assert_eq!(first["requested_by"], "manager@example.com");
    assert_eq!(first["reason"], "checkout looks wrong");
    assert!(first["incident_id"].is_null() && first["measurement_ids"] == json!([]));
    let second = expect(post_rollback(&stack.system, &manager, body).await, 200).await;
    assert_eq!(second["id"], first["id"], "the same rollback");

    stack.wait_state(&id, "rolled_back").await;
    stack.wait_analysis(&id, "stopped").await;
    let records = stack.get("/api/v1/rollbacks?app=shop").await;
    assert_eq!(records["items"].as_array().unwrap().len(), 1, "{records}");
    assert_eq!(records["items"][0]["id"], first["id"]);
    let deployments = stack.get("/api/v1/deployments?app=shop").await;
    let restores =
        deployments["items"].as_array().unwrap().iter().filter(|d| d["strategy"] == "rollback").count();
    assert_eq!(restores, 1, "traffic was moved once");
    let incidents = stack.get("/api/v1/incidents?app=shop").await;
    assert_eq!(incidents["items"], json!([]), "no incident for a rollback people asked for");
    // 1.0.0 serves again and is the first release here: nothing left to roll back to.
    let nothing = post_rollback(&stack.system, &manager, json!({"app": APP, "environment": ENV})).await;
    problem(nothing, 409, "failed_precondition").await;
}

/// An Alertmanager notification (webhook version 4) with one alert.
fn notification(status: &str, app: &str) -> Value {
    json!({
        "version": "4", "groupKey": "{}:{alertname=\"CheckoutErrors\"}", "truncatedAlerts": 0,
        "status": status, "receiver": "release-pilot",
        "groupLabels": {"alertname": "CheckoutErrors"}, "commonLabels": {"app": app},
        "commonAnnotations": {"summary": "checkout errors"}, "externalURL": "http://alertmanager:9093",
        "alerts": [{
            "status": status,
            "labels": {"alertname": "CheckoutErrors", "app": app, "environment": ENV, "version": "2.0.0",
                       "severity": "critical"},
            "annotations": {"summary": "5xx above 5%"},
            "startsAt": "2026-11-27T10:00:00.123Z", "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph", "fingerprint": format!("fp-{app}")
        }]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alertmanager_alert_about_the_canary_rolls_it_back() {
    let stack = Stack::start().await;
    stack.fast_policy().await;
    let _traffic = Traffic::start(stack.router_url(), 1, Duration::from_millis(20));
    let id = stack.canary(&[(20, 120)]).await;
    stack.wait_analysis(&id, "running").await;

    // Alertmanager authenticates with an incident commander's API token.
    let commander = stack.system.user_token("ic@example.com", &["incident_commander"]).await;
    let token = json!({"name": "alertmanager", "roles": ["incident_commander"]});
    let created = expect(
        call(&stack.system, Method::POST, "/api/v1/api-tokens", &commander, Some(token), &[]).await,
        201,
    )
    .await;
    let secret = created["secret"].as_str().unwrap().to_owned();
    let webhook = |token: Option<&str>, body: Value| {
        let mut request =
            stack.system.http.post(stack.system.url("/api/v1/alertmanager/webhook")).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    problem(webhook(None, notification("firing", APP)).await.unwrap(), 401, "unauthenticated").await;
    let viewer = stack.system.user_token("viewer@example.com", &["viewer"]).await;
    problem(webhook(Some(&viewer), notification("firing", APP)).await.unwrap(), 403, "forbidden").await;

    // An alert about another app changes nothing.
    let other = expect(webhook(Some(&secret), notification("firing", "billing")).await.unwrap(), 200).await;
    assert_eq!(other, json!({"alerts": 1, "matched": 0}));
    assert_eq!(stack.get(&format!("/api/v1/deployments/{id}")).await["state"], "in_progress");

    let ours = expect(webhook(Some(&secret), notification("firing", APP)).await.unwrap(), 200).await;
    assert_eq!(ours, json!({"alerts": 1, "matched": 1}));
    let rolled = stack.wait_state(&id, "rolled_back").await;
    assert!(rolled["failure_reason"].as_str().unwrap().starts_with("alert firing"), "{rolled}");
    // The rollback service records the rollback once the release service has rolled back.
    let rollbacks = eventually(WAIT, "the rollback record", || async {
        let rollbacks = stack.get("/api/v1/rollbacks?app=shop").await;
        (!rollbacks["items"][0].is_null()).then_some(rollbacks)
    })
    .await;
    assert_eq!(rollbacks["items"][0]["trigger"], "alert firing");
    assert_eq!(rollbacks["items"][0]["deployment_id"], id.as_str());
    let analysis = stack.wait_analysis(&id, "failed").await;
    let alert = analysis["measurements"].as_array().unwrap().iter().find(|m| m["verdict"] == "failed");
    assert_eq!(alert.expect("the alert's decision record")["metric"], "alert");
}

#[tokio::test]
async fn a_webhook_body_that_is_not_an_alertmanager_notification_is_a_422_problem() {
    let system = system().await;
    let admin = system.admin_token().await;
    let post = |body: &str, content_type: &str| {
        system
            .http
            .post(system.url("/api/v1/alertmanager/webhook"))
            .bearer_auth(&admin)
            .header(header::CONTENT_TYPE, content_type)
            .body(body.to_owned())
            .send()
    };
    let json_type = "application/json";
    let with = |change: &dyn Fn(&mut Value)| {
        let mut body = notification("firing", APP);
        change(&mut body);
        body.to_string()
    };
    for (body, why) in [
        ("{\"alerts\": 3}".to_owned(), "alerts"),
        (with(&|b| b["version"] = json!("3")), "version"),
        (with(&|b| b["status"] = json!("burning")), "status"),
        (with(&|b| b["alerts"][0].as_object_mut().unwrap().remove("labels").map(drop).unwrap()), "labels"),
        (with(&|b| b["alerts"][0]["labels"]["app"] = json!(7)), "labels"),
        (with(&|b| b["alerts"][0]["endsAt"] = json!("yesterday")), "RFC 3339"),
        ("[]".to_owned(), "expected struct"),
    ] {
        let refused = problem(post(&body, json_type).await.unwrap(), 422, "validation_failed").await;
        assert!(refused["detail"].as_str().unwrap().contains(why), "{body}: {refused}");
    }
    problem(post("{", json_type).await.unwrap(), 400, "bad_request").await;
    problem(post(&with(&|_| ()), "text/plain").await.unwrap(), 415, "unsupported_media_type").await;

    // What Grafana adds is ignored; resolved alerts and alerts without labels that name an app
    // are taken (and match nothing).
    let mut body = notification("resolved", APP);
    body["orgId"] = json!(1);
    body["alerts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"status": "firing", "labels": {"alertname": "NodeDown"},
        "valueString": "[ var='A' value=1 ]"}));
    let received =
        expect(post(&body.to_string(), "application/json; charset=utf-8").await.unwrap(), 200).await;
    assert_eq!(received, json!({"alerts": 2, "matched": 0}));
}

#[tokio::test]
async fn the_openapi_document_describes_the_rollback_api() {
    let system = system().await;
    let doc: Value =
        system.http.get(system.url("/api/openapi.json")).send().await.unwrap().json().await.unwrap();
    for (path, method, tag) in [
        ("/api/v1/apps/{app}/environments/{environment}/policy", "get", "policies"),
        ("/api/v1/apps/{app}/environments/{environment}/policy", "put", "policies"),
        ("/api/v1/analyses", "get", "analyses"),
        ("/api/v1/analyses/{id}", "get", "analyses"),
        ("/api/v1/deployments/{id}/analysis", "get", "analyses"),
        ("/api/v1/incidents/{id}/resolve", "post", "incidents"),
        ("/api/v1/rollbacks", "get", "rollbacks"),
        ("/api/v1/rollbacks", "post", "rollbacks"),
        ("/api/v1/alertmanager/webhook", "post", "alerts"),
    ] {
        let operation = &doc["paths"][path][method];
        assert_eq!(operation["tags"], json!([tag]), "{method} {path}");
        assert_eq!(operation["security"][0]["bearer"], json!([]), "{method} {path} needs a token");
    }
    let created = &doc["paths"]["/api/v1/rollbacks"]["post"]["responses"];
    assert!(created.get("201").is_some() && created.get("200").is_some(), "{created}");
    let schemas = &doc["components"]["schemas"];
    let fits = schemas["Rule"]["allOf"][1]["anyOf"].as_array().unwrap();
    let kinds: Vec<&Value> =
        fits.iter().map(|f| &f["properties"]["source"]["properties"]["kind"]["enum"][0]).collect();
    assert_eq!(
        kinds,
        [
            &json!("router"),
            &json!("router"),
            &json!("prometheus"),
            &json!("http_probe"),
            &json!("alertmanager")
        ]
    );
    let sources: Vec<&Value> = schemas["RuleSource"]["oneOf"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["properties"]["kind"]["enum"][0])
        .collect();
    assert_eq!(
        sources,
        [&json!("router"), &json!("prometheus"), &json!("http_probe"), &json!("alertmanager")]
    );
    for name in [
        "Metric",
        "RuleOperator",
        "Comparison",
        "NoData",
        "Severity",
        "RuleAction",
        "Verdict",
        "AnalysisStatus",
    ] {
        assert!(schemas[name]["enum"].is_array(), "{name} is an enum");
    }
    assert_eq!(schemas["CreateRollbackRequest"]["oneOf"].as_array().unwrap().len(), 2);
    assert_eq!(
        schemas["AlertmanagerWebhook"]["properties"]["version"]["$ref"],
        "#/components/schemas/AlertmanagerVersion"
    );
}
