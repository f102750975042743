//! Metric names of the auth service.

use metrics::describe_counter;

pub const LOGIN_ATTEMPTS_TOTAL: &str = "rp_auth_login_attempts_total";
pub const TOKENS_ISSUED_TOTAL: &str = "rp_auth_tokens_issued_total";

pub fn describe() {
    describe_counter!(LOGIN_ATTEMPTS_TOTAL, "Login attempts, by result (success|failure|throttled)");
    describe_counter!(TOKENS_ISSUED_TOTAL, "Access tokens issued, by grant (password|refresh)");
}
