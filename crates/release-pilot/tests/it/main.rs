//! The whole system: every role in one process, admin endpoints, gRPC health and reflection,
//! and the binary itself (config dump, migrate, traces, graceful shutdown).

mod otlp;
mod process;

use release_pilot::{Role, testing::TestSystem};
use rp_test_support::TestEnv;
use tonic::transport::Channel;

const SERVICES: [(&str, &str); 4] = [
    ("auth", rp_auth::SERVICE_NAME),
    ("release", rp_release::SERVICE_NAME),
    ("rollback", rp_rollback::SERVICE_NAME),
    ("notifier", rp_notifier::SERVICE_NAME),
];

async fn system() -> TestSystem {
    {
        let env = TestEnv::new();
        TestSystem::start(env.config.clone(), &[]).await.expect("system starts").hold(env)
    }
}

#[tokio::test]
async fn every_admin_port_serves_health_readiness_liveness_details_and_metrics() {
    let system = system().await;
    // Make some traffic so the metrics exist.
    let admin = system.admin_token().await;
    let me = system.http.get(system.url("/api/v1/me")).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(me.status(), 200);
    for name in ["gateway", "auth", "release", "rollback", "notifier"] {
        for path in ["/live", "/ready", "/health"] {
            let response = system.http.get(system.admin_url(name, path)).send().await.unwrap();
            assert_eq!(response.status(), 200, "{name}{path}");
        }
        let detailed: serde_json::Value = system
            .http
            .get(system.admin_url(name, "/health/detailed"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(detailed["service"], name);
        assert_eq!(detailed["status"], "ok");
        let checks = detailed["checks"].as_array().unwrap();
        assert!(!checks.is_empty(), "{name} reports its dependencies");
        for check in checks {
            assert_eq!(check["status"], "ok", "{name}: {check}");
            assert!(check["latency_ms"].as_f64().unwrap() >= 0.0);
        }
        let metrics = system.http.get(system.admin_url(name, "/metrics")).send().await.unwrap();
        assert!(metrics.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
        let text = metrics.text().await.unwrap();
        assert!(text.contains("http_server_requests_total"), "{name} /metrics");
        assert!(text.contains("grpc_server_handled_total{grpc_service=\"releasepilot.auth.v1.AuthService\""));
    }
    let database_checks: serde_json::Value = system
        .http
        .get(system.admin_url("release", "/health/detailed"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> =
        database_checks["checks"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"database") && names.iter().any(|n| n.starts_with("event_bus")), "{names:?}");
    let gateway_checks: serde_json::Value = system
        .http
        .get(system.admin_url("gateway", "/health/detailed"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(gateway_checks["checks"].as_array().unwrap().len(), 4, "the gateway checks every service");
}

#[tokio::test]
async fn every_grpc_service_reports_serving_and_lists_itself_through_reflection_v1_and_v1alpha() {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    use tonic_reflection::pb::{v1, v1alpha};
    let system = system().await;
    for (name, service) in SERVICES {
        let channel = Channel::from_shared(system.grpc_endpoint(name)).unwrap().connect().await.unwrap();
        let health = HealthClient::new(channel.clone())
            .check(HealthCheckRequest { service: service.into() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(health.status(), ServingStatus::Serving, "{name}");

        let request = v1alpha::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(v1alpha::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            )),
        };
        let mut stream = v1alpha::server_reflection_client::ServerReflectionClient::new(channel.clone())
            .server_reflection_info(tokio_stream::iter(vec![request]))
            .await
            .unwrap()
            .into_inner();
        let response = stream.message().await.unwrap().unwrap();
        let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
            response.message_response
        else {
            panic!("{name}: unexpected reflection answer");
        };
        let listed: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        assert!(listed.iter().any(|s| s == service), "{name} v1alpha lists {listed:?}");
        assert!(listed.iter().any(|s| s == "grpc.health.v1.Health"));

        let request = v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(String::new())),
        };
        let mut stream = v1::server_reflection_client::ServerReflectionClient::new(channel)
            .server_reflection_info(tokio_stream::iter(vec![request]))
            .await
            .unwrap()
            .into_inner();
        let response = stream.message().await.unwrap().unwrap();
        let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
            response.message_response
        else {
            panic!("{name}: unexpected v1 reflection answer");
        };
        assert!(list.service.iter().any(|s| s.name == service), "{name} v1");
    }
}

#[tokio::test]
async fn serve_with_roles_runs_only_those_roles() {
    let system = {
        let env = TestEnv::new();
        TestSystem::start(env.config.clone(), &[Role::Auth, Role::Release]).await.unwrap().hold(env)
    };
    let mut names: Vec<&str> = system.app.services.iter().map(|s| s.name).collect();
    names.sort();
    assert_eq!(names, ["auth", "release"]);
    // Release reaches the auth running beside it.
    let release = system.app.service("release").unwrap().admin_addr;
    let ready = system.http.get(format!("http://{release}/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
}

#[tokio::test]
async fn a_second_start_on_the_same_data_keeps_users_and_keys() {
    let env = TestEnv::new();
    let first = TestSystem::start(env.config.clone(), &[]).await.unwrap();
    let token = first.admin_token().await;
    first.stop().await;
    let second = TestSystem::start(env.config.clone(), &[]).await.unwrap();
    let me = second.http.get(second.url("/api/v1/me")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(me.status(), 200, "a token from before the restart still verifies");
}
