//! Canary analysis end to end: promotion, automatic rollback with its evidence, blue-green
//! switch-back, Alertmanager, lease takeover, and idempotent rollbacks.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use rp_proto::{release::v1 as release_pb, rollback::v1 as pb};
use rp_runtime::{CancellationToken, Listeners};
use rp_test_support::{KillableReplica, authed, eventually};

use release_pilot::Role;

use crate::{APP, ENV, Traffic, WAIT, stack, stack_with};

fn canary(steps: &[(i32, i64)]) -> release_pb::CreateDeploymentRequest {
    release_pb::CreateDeploymentRequest {
        version: "2.0.0".into(),
        strategy: "canary".into(),
        steps: steps
            .iter()
            .map(|(weight, hold)| release_pb::CanaryStep {
                weight: *weight,
                hold_seconds: *hold,
                analysis: true,
            })
            .collect(),
        ..Default::default()
    }
}

/// Waits until every answer of the last 500 ms came from `version`, and returns when that began.
async fn wait_all_traffic_on(traffic: &Traffic, version: &str) {
    eventually(WAIT, &format!("all traffic on {version}"), || async {
        let since = Instant::now() - Duration::from_millis(500);
        let recent = traffic.since(since);
        (recent.len() >= 10 && recent.iter().all(|h| h.version == version && h.status == 200)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_canary_is_promoted_with_its_decision_records() {
    let stack = stack().await;
    stack.fast_policy().await;
    let traffic = Traffic::start(stack.router_url(), 2, Duration::from_millis(10));
    let deployment = stack.deploy(canary(&[(20, 2), (50, 2)])).await;
    let analysis = stack.wait_analysis(&deployment.id, "running").await;
    assert_eq!((analysis.version.as_str(), analysis.stable_version.as_str()), ("2.0.0", "1.0.0"));
    stack.wait_state(&deployment.id, "succeeded").await;
    let analysis = stack.wait_analysis(&deployment.id, "passed").await;
    wait_all_traffic_on(&traffic, "2.0.0").await;

    // Decision records: the router rule saw real traffic of 2.0.0 and judged it healthy.
    let router_records: Vec<&pb::Measurement> =
        analysis.measurements.iter().filter(|m| m.rule == "error rate above 5%").collect();
    assert!(!router_records.is_empty(), "{:?}", analysis.measurements);
    let healthy = router_records.iter().find(|m| m.verdict == "healthy").expect("a healthy verdict");
    assert!(healthy.samples >= 20, "{healthy:?}");
    assert_eq!(healthy.value, Some(0.0));
    assert_eq!((healthy.operator.as_str(), healthy.threshold), ("gt", 5.0));
    assert!(healthy.query.contains("2.0.0"), "{}", healthy.query);
    assert!(router_records.iter().all(|m| m.verdict != "failed"));
    assert!(stack.incidents().await.is_empty());
    assert!(stack.rollbacks().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_canary_is_rolled_back_automatically_and_the_incident_keeps_the_evidence() {
    let stack = stack().await;
    stack.fast_policy().await;
    let traffic = Traffic::start(stack.router_url(), 2, Duration::from_millis(10));
    stack.fail_v2(0.5);
    let deployment = stack.deploy(canary(&[(20, 60), (50, 60)])).await;

    let rolled = stack.wait_state(&deployment.id, "rolled_back").await;
    wait_all_traffic_on(&traffic, "1.0.0").await;
    assert!(rolled.failure_reason.contains("error rate above 5%"), "{}", rolled.failure_reason);

    let analysis = stack.wait_analysis(&deployment.id, "failed").await;
    assert!(analysis.reason.starts_with("error rate above 5%: "), "{}", analysis.reason);
    let incident =
        eventually(WAIT, "the incident", || async { stack.incidents().await.into_iter().next() }).await;
    assert_eq!((incident.app.as_str(), incident.environment.as_str()), (APP, ENV));
    assert_eq!((incident.status.as_str(), incident.severity.as_str()), ("open", "critical"));
    assert_eq!(
        (incident.deployment_id.as_str(), incident.version.as_str()),
        (deployment.id.as_str(), "2.0.0")
    );
    let steps: Vec<&str> = incident.timeline.iter().map(|t| t.what.as_str()).collect();
    assert_eq!(steps.len(), 3, "{steps:?}");
    assert_eq!(steps[0], "first bad sample");
    assert!(steps[1].starts_with("decision: error rate above 5%"), "{steps:?}");
    assert_eq!(steps[2], "traffic restored to 1.0.0");
    let at = |i: usize| {
        let t = incident.timeline[i].at.unwrap();
        t.seconds as f64 + t.nanos as f64 / 1e9
    };
    assert!(at(0) <= at(1) && at(1) <= at(2), "timeline in order");
    assert!(incident.mttr_seconds > 0.0 && incident.mttr_seconds < 20.0, "MTTR {}", incident.mttr_seconds);
    assert!((incident.mttr_seconds - (at(2) - at(0))).abs() < 0.01);

    // The rollback carries the decision records that caused it.
    let rollbacks = stack.rollbacks().await;
    assert_eq!(rollbacks.len(), 1);
    let rollback = &rollbacks[0];
    assert_eq!(
        (rollback.trigger.as_str(), rollback.restored_version.as_str()),
        ("error rate above 5%", "1.0.0")
    );
    assert_eq!(rollback.incident_id, incident.id);
    assert_eq!(rollback.measurement_ids, incident.measurement_ids);
    assert!(!rollback.measurement_ids.is_empty());
    let failed = analysis.measurements.iter().filter(|m| m.verdict == "failed").count();
    assert_eq!(failed, rollback.measurement_ids.len(), "nothing is evaluated after the decision");
    for id in &rollback.measurement_ids {
        let record = analysis.measurements.iter().find(|m| &m.id == id).expect("the evidence is on record");
        assert_eq!(record.verdict, "failed");
        assert!(record.value.unwrap() > 5.0 && record.samples >= 20, "{record:?}");
    }
    let breaches = stack
        .rollback
        .clone()
        .get_analysis(authed(
            &stack.admin,
            pb::GetAnalysisRequest { id: analysis.id.clone(), breaches_only: true, ..Default::default() },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(
        breaches.measurements.iter().all(|m| m.verdict != "healthy") && !breaches.measurements.is_empty()
    );

    // Resolving the incident closes its timeline, once.
    let resolve = || {
        authed(
            &stack.admin,
            pb::ResolveIncidentRequest { id: incident.id.clone(), note: "bad config in 2.0.0".into() },
        )
    };
    let resolved = stack.rollback.clone().resolve_incident(resolve()).await.unwrap().into_inner();
    assert_eq!(resolved.status, "resolved");
    assert!(resolved.timeline.last().unwrap().what.ends_with("bad config in 2.0.0"));
    let again = stack.rollback.clone().resolve_incident(resolve()).await.unwrap().into_inner();
    assert_eq!((again.timeline.len(), again.resolved_at), (resolved.timeline.len(), resolved.resolved_at));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_switches_back_when_the_new_version_fails_after_the_switch() {
    let stack = stack().await;
    stack.fast_policy().await;
    let traffic = Traffic::start(stack.router_url(), 2, Duration::from_millis(10));
    stack.fail_v2(0.3);
    let deployment = stack
        .deploy(release_pb::CreateDeploymentRequest {
            version: "2.0.0".into(),
            strategy: "blue_green".into(),
            pre_promotion_seconds: 1,
            rollback_window_seconds: 60,
            ..Default::default()
        })
        .await;
    // Green takes all traffic at the switch, fails, and blue comes back.
    eventually(WAIT, "the switch to green", || async {
        let since = Instant::now() - Duration::from_millis(300);
        traffic.since(since).iter().any(|h| h.version == "2.0.0").then_some(())
    })
    .await;
    let rolled = stack.wait_state(&deployment.id, "rolled_back").await;
    assert!(rolled.failure_reason.contains("error rate above 5%"), "{}", rolled.failure_reason);
    wait_all_traffic_on(&traffic, "1.0.0").await;
    let analysis = stack.wait_analysis(&deployment.id, "failed").await;
    let failed = analysis.measurements.iter().find(|m| m.verdict == "failed").expect("the failing record");
    assert_eq!(failed.weight, 100, "the failure was seen after the switch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alertmanager_alert_about_the_canary_rolls_it_back() {
    let stack = stack().await;
    stack.fast_policy().await;
    let _traffic = Traffic::start(stack.router_url(), 1, Duration::from_millis(20));
    let deployment = stack.deploy(canary(&[(20, 120)])).await;
    stack.wait_analysis(&deployment.id, "running").await;
    let alert = |status: &str, app: &str| {
        serde_json::json!({
            "version": "4", "status": status, "receiver": "release-pilot",
            "alerts": [{"status": status, "fingerprint": format!("fp-{app}"),
                "labels": {"alertname": "CheckoutErrors", "app": app, "environment": ENV, "version": "2.0.0",
                           "severity": "critical"}}]
        })
        .to_string()
    };
    let mut client = stack.rollback.clone();
    // An alert about another app changes nothing.
    let other = client
        .receive_alerts(authed(
            &stack.admin,
            pb::ReceiveAlertsRequest { payload_json: alert("firing", "billing") },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((other.alerts, other.matched), (1, 0));
    let bad = client
        .receive_alerts(authed(
            &stack.admin,
            pb::ReceiveAlertsRequest { payload_json: "{\"alerts\": 3}".into() },
        ))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert_eq!(stack.deployment(&deployment.id).await.state, "in_progress");

    let ours = client
        .receive_alerts(authed(&stack.admin, pb::ReceiveAlertsRequest { payload_json: alert("firing", APP) }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((ours.alerts, ours.matched), (1, 1));
    let rolled = stack.wait_state(&deployment.id, "rolled_back").await;
    assert!(rolled.failure_reason.starts_with("alert firing"), "{}", rolled.failure_reason);
    // The rollback's record is written after the state change (traffic first, then the state,
    // then the record), so it may arrive a moment later.
    let rollback =
        eventually(WAIT, "the rollback record", || async { stack.rollbacks().await.into_iter().next() })
            .await;
    assert_eq!(rollback.trigger, "alert firing");
}

/// A rollback replica in its own runtime, so it can die without cleaning up: no lease is
/// released, nothing is flushed.
struct Replica(KillableReplica);

impl Replica {
    fn start(config: Arc<rp_config::Config>, bus: rp_events::SharedBus) -> Self {
        Self(KillableReplica::start(move || async move {
            let any = SocketAddr::from(([127, 0, 0, 1], 0));
            let listeners = Listeners::bind(any, any).await.unwrap();
            let service = rp_rollback::start(config, bus, listeners, CancellationToken::new()).await.unwrap();
            (service.primary_addr, service)
        }))
    }

    fn kill(self) {
        self.0.kill();
    }

    async fn client(&self) -> pb::rollback_service_client::RollbackServiceClient<tonic::transport::Channel> {
        pb::rollback_service_client::RollbackServiceClient::connect(format!("http://{}", self.0.addr))
            .await
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_replica_holding_the_lease_dies_another_takes_over_and_finishes_the_decision() {
    // The system without its own rollback role: two replicas of their own, sharing its
    // database and bus.
    let mut stack = stack_with(&[Role::Auth, Role::Release, Role::Router, Role::Gateway]).await;
    let config = stack.system.app.config.clone();
    let bus = stack.system.app.bus.clone();
    let first = Replica::start(config.clone(), bus.clone());
    stack.rollback = first.client().await;
    let rules = serde_json::json!([
        {"name": "error rate above 5% for 3s", "metric": "error_rate", "source": {"kind": "router"},
         "operator": "gt", "threshold": 5.0, "window_seconds": 2, "for_seconds": 3, "min_samples": 20,
         "severity": "critical", "action": "rollback"}
    ]);
    stack.put_policy(&rules.to_string()).await.unwrap();
    let traffic = Traffic::start(stack.router_url(), 2, Duration::from_millis(10));
    let deployment = stack.deploy(canary(&[(30, 120)])).await;
    let held = eventually(WAIT, "the first replica to hold the lease", || async {
        stack.analysis_of(&deployment.id).await.filter(|a| !a.lease_holder.is_empty())
    })
    .await;
    let second = Replica::start(config, bus);

    stack.fail_v2(0.5);
    eventually(WAIT, "the breach to be seen", || async {
        let analysis = stack.analysis_of(&deployment.id).await?;
        analysis.measurements.iter().any(|m| m.verdict == "breaching").then_some(())
    })
    .await;
    first.kill();
    stack.rollback = second.client().await;

    let rolled = stack.wait_state(&deployment.id, "rolled_back").await;
    assert_eq!(rolled.state, "rolled_back");
    wait_all_traffic_on(&traffic, "1.0.0").await;
    let analysis = stack.wait_analysis(&deployment.id, "failed").await;
    assert!(!analysis.lease_holder.is_empty());
    assert_ne!(analysis.lease_holder, held.lease_holder, "the surviving replica decided");
    assert_eq!(stack.rollbacks().await.len(), 1);
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_requested_twice_acts_once() {
    let stack = stack().await;
    stack.fast_policy().await;
    let deployment = stack.deploy(canary(&[(20, 120)])).await;
    stack.wait_analysis(&deployment.id, "running").await;
    let request = || {
        authed(
            &stack.admin,
            pb::TriggerRollbackRequest {
                deployment_id: deployment.id.clone(),
                reason: "checkout looks wrong".into(),
                ..Default::default()
            },
        )
    };
    let (mut a, mut b) = (stack.rollback.clone(), stack.rollback.clone());
    let (first, second) = tokio::join!(a.trigger_rollback(request()), b.trigger_rollback(request()));
    let (first, second) = (first.unwrap().into_inner(), second.unwrap().into_inner());
    assert_eq!(first.id, second.id);
    assert_eq!((first.trigger.as_str(), first.restored_version.as_str()), ("manual", "1.0.0"));
    assert_eq!(first.requested_by, rp_identity_admin_email());
    let again = stack.rollback.clone().trigger_rollback(request()).await.unwrap().into_inner();
    assert_eq!(again.id, first.id);
    stack.wait_state(&deployment.id, "rolled_back").await;
    assert_eq!(stack.rollbacks().await.len(), 1);
    let deployments = stack
        .release
        .clone()
        .list_deployments(authed(
            &stack.admin,
            release_pb::ListDeploymentsRequest { app: APP.into(), ..Default::default() },
        ))
        .await
        .unwrap()
        .into_inner()
        .deployments;
    assert_eq!(deployments.iter().filter(|d| d.strategy == "rollback").count(), 1);
    stack.wait_analysis(&deployment.id, "stopped").await;
    // No incident for a rollback people asked for.
    assert!(stack.incidents().await.is_empty());

    // Bad requests are refused before anything happens.
    let malformed = stack
        .rollback
        .clone()
        .trigger_rollback(authed(
            &stack.admin,
            pb::TriggerRollbackRequest { deployment_id: "nope".into(), ..Default::default() },
        ))
        .await
        .unwrap_err();
    assert_eq!(malformed.code(), tonic::Code::InvalidArgument);
}

fn rp_identity_admin_email() -> &'static str {
    release_pilot::testing::ADMIN_EMAIL
}

/// A stand-in for Prometheus's instant-query API and an app's health endpoint, both driven by
/// the test.
struct Signals {
    addr: SocketAddr,
    /// The value `/api/v1/query` answers for queries naming 2.0.0 (1.0.0 gets 100).
    value: Arc<std::sync::Mutex<f64>>,
    /// Whether `/health` answers 503.
    failing: Arc<std::sync::atomic::AtomicBool>,
    queries: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Signals {
    async fn start() -> Self {
        use axum::{extract::Query, routing::get};
        let value = Arc::new(std::sync::Mutex::new(100.0));
        let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let queries = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (v, f, q) = (value.clone(), failing.clone(), queries.clone());
        let app = axum::Router::new()
            .route(
                "/api/v1/query",
                get(move |Query(params): Query<std::collections::HashMap<String, String>>| {
                    let (v, q) = (v.clone(), q.clone());
                    async move {
                        let query = params.get("query").cloned().unwrap_or_default();
                        q.lock().unwrap().push(query.clone());
                        let value = if query.contains("2.0.0") { *v.lock().unwrap() } else { 100.0 };
                        axum::Json(serde_json::json!({"status": "success", "data": {"resultType": "vector",
                            "result": [{"metric": {"app": APP}, "value": [1.0, value.to_string()]}]}}))
                    }
                }),
            )
            .route(
                "/health",
                get(move || {
                    let f = f.clone();
                    async move {
                        if f.load(std::sync::atomic::Ordering::SeqCst) {
                            axum::http::StatusCode::SERVICE_UNAVAILABLE
                        } else {
                            axum::http::StatusCode::OK
                        }
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, value, failing, queries }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_queries_relative_to_stable_and_http_probes_decide_too() {
    let stack = stack().await;
    let signals = Signals::start().await;
    let base = format!("http://{}", signals.addr);
    let rules = serde_json::json!([
        {"name": "checkouts 50% off stable", "metric": "query",
         "source": {"kind": "prometheus", "url": base,
                    "query": "sum(rate(checkouts_total{app=\"{app}\",env=\"{environment}\",version=\"{version}\"}[1m]))"},
         "operator": "gt", "threshold": 50.0, "comparison": "relative_to_stable", "window_seconds": 60,
         "min_samples": 1, "severity": "high", "action": "pause"},
        {"name": "health probe failing", "metric": "health_check_failures",
         "source": {"kind": "http_probe", "url": format!("{base}/health?app={{app}}&v={{version}}"), "timeout_ms": 500},
         "operator": "gte", "threshold": 3.0, "window_seconds": 10, "severity": "critical", "action": "rollback"}
    ]);
    stack.put_policy(&rules.to_string()).await.unwrap();
    let deployment = stack.deploy(canary(&[(20, 120)])).await;
    stack.wait_analysis(&deployment.id, "running").await;

    // Prometheus: 2.0.0's value is 100% off stable's → the deployment pauses.
    *signals.value.lock().unwrap() = 210.0;
    let paused = eventually(WAIT, "the canary to pause", || async {
        let d = stack.deployment(&deployment.id).await;
        (d.phase == "paused").then_some(d)
    })
    .await;
    assert_eq!(paused.state, "in_progress");
    let analysis = stack.analysis_of(&deployment.id).await.unwrap();
    let record = analysis
        .measurements
        .iter()
        .find(|m| m.rule == "checkouts 50% off stable" && m.verdict == "failed")
        .expect("the pausing record");
    assert_eq!((record.value, record.baseline), (Some(210.0), Some(100.0)));
    assert!((record.compared.unwrap() - 110.0).abs() < 1e-9, "{record:?}");
    assert!(
        record.query.contains("version=\"2.0.0\"") && record.query.contains("env=\"staging\""),
        "{}",
        record.query
    );
    let queries = signals.queries.lock().unwrap().clone();
    assert!(
        queries.iter().any(|q| q.contains("version=\"1.0.0\"")),
        "the stable version is queried for the baseline"
    );

    // The probe: three consecutive failures roll back.
    signals.failing.store(true, std::sync::atomic::Ordering::SeqCst);
    let rolled = stack.wait_state(&deployment.id, "rolled_back").await;
    assert!(rolled.failure_reason.starts_with("health probe failing"), "{}", rolled.failure_reason);
    let analysis = stack.wait_analysis(&deployment.id, "failed").await;
    let probe = analysis
        .measurements
        .iter()
        .find(|m| m.rule == "health probe failing" && m.verdict == "failed")
        .expect("the probe's record");
    assert!(probe.value.unwrap() >= 3.0, "{probe:?}");
    assert!(probe.query.starts_with("GET http://") && probe.query.contains("v=2.0.0"), "{}", probe.query);
}

/// A pause decided while the release service cannot pause yet (the step is still with its
/// driver) is not lost: it is asked again and lands once the step holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_refused_while_the_step_is_applied_lands_once_the_step_holds() {
    let stack = stack().await;
    let signals = Signals::start().await;
    *signals.value.lock().unwrap() = 210.0;
    // An external deployer that accepts each step and reports completion later.
    let deployer = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let deployer_url = format!("http://{}/deploy", deployer.local_addr().unwrap());
    let app = axum::Router::new()
        .route("/deploy", axum::routing::post(|| async { axum::http::StatusCode::ACCEPTED }));
    tokio::spawn(async move { axum::serve(deployer, app).await });
    stack
        .release
        .clone()
        .put_target(authed(
            &stack.admin,
            release_pb::PutTargetRequest {
                app: APP.into(),
                environment: ENV.into(),
                driver: "webhook".into(),
                driver_config_json: serde_json::json!({"url": deployer_url}).to_string(),
                default_strategy: "canary".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let rules = serde_json::json!([
        {"name": "checkouts 50% off stable", "metric": "query",
         "source": {"kind": "prometheus", "url": format!("http://{}", signals.addr),
                    "query": "checkouts{version=\"{version}\"}"},
         "operator": "gt", "threshold": 50.0, "comparison": "relative_to_stable", "window_seconds": 60,
         "min_samples": 1, "severity": "high", "action": "pause"}
    ]);
    stack.put_policy(&rules.to_string()).await.unwrap();
    let deployment = stack.deploy(canary(&[(20, 120)])).await;

    // The rule fails while the deployer still holds the step: the pause is refused.
    let waiting = eventually(WAIT, "the rule to fail while the step is with the deployer", || async {
        let analysis = stack.analysis_of(&deployment.id).await?;
        analysis.measurements.iter().any(|m| m.verdict == "failed").then_some(())?;
        let d = stack.deployment(&deployment.id).await;
        (d.phase == "awaiting_driver").then_some(d)
    })
    .await;
    assert_eq!(waiting.state, "in_progress");

    // The deployer reports the step done; the pause asked again now lands.
    stack
        .release
        .clone()
        .report_driver_result(authed(
            &stack.admin,
            release_pb::DriverResultRequest {
                deployment_id: deployment.id.clone(),
                step: waiting.current_step,
                status: "succeeded".into(),
                message: String::new(),
            },
        ))
        .await
        .unwrap();
    let paused = eventually(WAIT, "the canary to pause", || async {
        let d = stack.deployment(&deployment.id).await;
        (d.phase == "paused").then_some(d)
    })
    .await;
    assert_eq!((paused.state.as_str(), paused.weight), ("in_progress", 20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_incident_timeline_records_when_people_were_notified() {
    use rp_proto::notifier::v1::{self as notifier_pb, notifier_service_client::NotifierServiceClient};
    let stack =
        stack_with(&[Role::Auth, Role::Release, Role::Rollback, Role::Router, Role::Gateway, Role::Notifier])
            .await;
    stack.fast_policy().await;

    // On-call's webhook, told about every opened incident at once.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/oncall", listener.local_addr().unwrap());
    let told = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = told.clone();
    let app = axum::Router::new().route(
        "/oncall",
        axum::routing::post(move || {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { "ok" }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    let mut notifier = NotifierServiceClient::connect(stack.system.grpc_endpoint("notifier")).await.unwrap();
    let channel = notifier
        .create_channel(authed(
            &stack.admin,
            notifier_pb::CreateChannelRequest {
                name: "on-call".into(),
                kind: "webhook".into(),
                config_json: serde_json::json!({"url": hook}).to_string(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .channel
        .unwrap();
    let rule = notifier_pb::RoutingRuleInput {
        name: "incidents to on-call".into(),
        event_types: vec!["rp.incident.opened".into()],
        channel_ids: vec![channel.id],
        group_wait_ms: Some(0),
        ..Default::default()
    };
    notifier.create_routing_rule(authed(&stack.admin, rule)).await.unwrap();

    let traffic = Traffic::start(stack.router_url(), 2, Duration::from_millis(10));
    stack.fail_v2(0.5);
    let deployment = stack.deploy(canary(&[(20, 60), (50, 60)])).await;
    stack.wait_state(&deployment.id, "rolled_back").await;
    wait_all_traffic_on(&traffic, "1.0.0").await;

    let incident = eventually(WAIT, "the notification on the incident's timeline", || async {
        let incident = stack.incidents().await.into_iter().next()?;
        incident.timeline.iter().any(|t| t.what.starts_with("notification sent")).then_some(incident)
    })
    .await;
    assert!(told.load(std::sync::atomic::Ordering::SeqCst) >= 1, "the receiver was told");
    let steps: Vec<&str> = incident.timeline.iter().map(|t| t.what.as_str()).collect();
    assert_eq!(steps[..3], ["first bad sample", steps[1], "traffic restored to 1.0.0"], "{steps:?}");
    assert_eq!(steps[3], "notification sent via webhook \"on-call\"", "{steps:?}");
    let at = |i: usize| incident.timeline[i].at.unwrap().seconds;
    assert!(at(3) >= at(2), "told after the traffic was back");
}
