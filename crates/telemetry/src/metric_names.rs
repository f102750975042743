//! Names of the metrics shared by every service. Dashboards and alert rules use exactly these.

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

pub const HTTP_SERVER_REQUESTS_TOTAL: &str = "http_server_requests_total";
pub const HTTP_SERVER_REQUEST_DURATION_SECONDS: &str = "http_server_request_duration_seconds";
pub const GRPC_SERVER_HANDLED_TOTAL: &str = "grpc_server_handled_total";
pub const GRPC_SERVER_HANDLING_SECONDS: &str = "grpc_server_handling_seconds";
pub const DB_POOL_CONNECTIONS: &str = "db_pool_connections";
pub const EVENTS_PUBLISHED_TOTAL: &str = "rp_events_published_total";
pub const EVENTS_CONSUMED_TOTAL: &str = "rp_events_consumed_total";
pub const OUTBOX_PENDING: &str = "rp_outbox_pending";
pub const RATE_LIMITED_TOTAL: &str = "rp_http_rate_limited_total";

pub(crate) fn describe_all() {
    describe_counter!(HTTP_SERVER_REQUESTS_TOTAL, "HTTP requests served, by method, route and status");
    describe_histogram!(
        HTTP_SERVER_REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "HTTP request latency, by method and route"
    );
    describe_counter!(GRPC_SERVER_HANDLED_TOTAL, "gRPC calls completed, by service, method and code");
    describe_histogram!(
        GRPC_SERVER_HANDLING_SECONDS,
        Unit::Seconds,
        "gRPC call latency, by service and method"
    );
    describe_gauge!(DB_POOL_CONNECTIONS, "Database pool connections, by service and state (idle|in_use|max)");
    describe_counter!(EVENTS_PUBLISHED_TOTAL, "Events published to the bus, by service and type");
    describe_counter!(EVENTS_CONSUMED_TOTAL, "Events handled by consumers, by consumer and result");
    describe_gauge!(OUTBOX_PENDING, "Outbox rows committed but not yet published, by service");
    describe_counter!(RATE_LIMITED_TOTAL, "Requests refused by the gateway rate limiter, by key kind");
}
