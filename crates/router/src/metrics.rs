//! Metric names of the router.

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

pub const REQUESTS_TOTAL: &str = "rp_router_requests_total";
pub const REQUEST_DURATION_SECONDS: &str = "rp_router_request_duration_seconds";
pub const ROUTES: &str = "rp_router_routes";
pub const ROUTE_UPDATES_TOTAL: &str = "rp_router_route_updates_total";

pub fn describe() {
    describe_counter!(REQUESTS_TOTAL, "Requests proxied, by app, env, version and status class");
    describe_histogram!(
        REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "Time to the upstream's first byte, by app, env and version"
    );
    describe_gauge!(ROUTES, "Routes in the table");
    describe_counter!(ROUTE_UPDATES_TOTAL, "Route updates applied");
}
