//! JSON shapes of the REST API (and their OpenAPI schemas), converted from the gRPC messages.

use chrono::{DateTime, Utc};
use rp_identity::Role;
use rp_proto::{auth::v1 as auth, release::v1 as release};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

mod check;
mod notifier;
mod policy;
mod releases;
mod rollback;

pub use check::{slug as check_slug, token as check_token};
pub use notifier::*;
pub use policy::*;
pub use releases::*;
pub use rollback::*;

/// Times as chrono's own `Serialize` writes them (RFC 3339, `Z`, fractional seconds only when
/// there are some: 3, 6 or 9 digits), formatted into a buffer first. chrono's `Serialize` goes
/// through serde_json's `collect_str`, which runs the escaping writer once per character it
/// writes: that was 11 % of the instructions of a page of 50 releases (docs/benchmarks.md, stop 16).
pub(crate) mod rfc3339 {
    use chrono::{DateTime, Datelike as _, SecondsFormat, Timelike as _, Utc};
    use serde::Serializer;

    pub fn required<S: Serializer>(time: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
        let mut buffer = [0u8; 32];
        match write(time, &mut buffer) {
            Some(len) => serializer.serialize_str(std::str::from_utf8(&buffer[..len]).unwrap_or_default()),
            // Years outside 0–9999 and leap seconds: chrono's own formatting.
            None => serializer.serialize_str(&time.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
        }
    }

    pub fn option<S: Serializer>(time: &Option<DateTime<Utc>>, serializer: S) -> Result<S::Ok, S::Error> {
        match time {
            Some(time) => required(time, serializer),
            None => serializer.serialize_none(),
        }
    }

    /// `YYYY-MM-DDTHH:MM:SS[.fff|.ffffff|.fffffffff]Z`; its length, or `None` for a year outside
    /// 0–9999 or a leap second.
    fn write(time: &DateTime<Utc>, buffer: &mut [u8; 32]) -> Option<usize> {
        let nanos = time.nanosecond();
        let year = u32::try_from(time.year()).ok().filter(|year| *year <= 9999)?;
        if nanos >= 1_000_000_000 {
            return None;
        }
        buffer[..20].copy_from_slice(b"0000-00-00T00:00:00.");
        for (at, width, value) in [
            (0, 4, year),
            (5, 2, time.month()),
            (8, 2, time.day()),
            (11, 2, time.hour()),
            (14, 2, time.minute()),
            (17, 2, time.second()),
        ] {
            digits(&mut buffer[at..at + width], value);
        }
        let (fraction, width) = match nanos {
            0 => (0, 0),
            n if n % 1_000_000 == 0 => (n / 1_000_000, 3),
            n if n % 1_000 == 0 => (n / 1_000, 6),
            n => (n, 9),
        };
        let mut len = 19;
        if width > 0 {
            digits(&mut buffer[20..20 + width], fraction);
            len = 20 + width;
        }
        buffer[len] = b'Z';
        Some(len + 1)
    }

    fn digits(out: &mut [u8], mut value: u32) {
        for digit in out.iter_mut().rev() {
            *digit = b'0' + (value % 10) as u8;
            value /= 10;
        }
    }
}

fn time(ts: Option<rp_proto::Timestamp>) -> Option<DateTime<Utc>> {
    ts.and_then(|t| DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
}

fn roles(values: &[i32]) -> Vec<Role> {
    values.iter().filter_map(|v| Role::from_proto(*v)).collect()
}

pub fn roles_to_pb(roles: &[Role]) -> Vec<i32> {
    roles.iter().map(|r| r.to_proto() as i32).collect()
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    #[schema(example = "admin@example.com", min_length = 1, max_length = 254)]
    pub email: String,
    #[schema(format = Password, min_length = 1, max_length = 1024)]
    pub password: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    #[schema(min_length = 1, max_length = 512)]
    pub refresh_token: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    /// Short-lived JWT (EdDSA) to send as `Authorization: Bearer`.
    pub access_token: String,
    /// Single-use token for `POST /api/v1/auth/refresh`; rotated on every use.
    pub refresh_token: String,
    /// Access-token lifetime in seconds.
    pub expires_in: i64,
    /// Always `Bearer`.
    pub token_type: String,
}

impl From<auth::TokenPair> for TokenResponse {
    fn from(pair: auth::TokenPair) -> Self {
        Self {
            access_token: pair.access_token,
            refresh_token: pair.refresh_token,
            expires_in: pair.expires_in,
            token_type: pair.token_type,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct User {
    pub id: String,
    pub email: String,
    pub display_name: String,
    pub roles: Vec<Role>,
    pub disabled: bool,
    #[serde(serialize_with = "crate::dto::rfc3339::option")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "crate::dto::rfc3339::option")]
    pub updated_at: Option<DateTime<Utc>>,
}

impl From<auth::User> for User {
    fn from(user: auth::User) -> Self {
        Self {
            id: user.id,
            email: user.email,
            display_name: user.display_name,
            roles: roles(&user.roles),
            disabled: user.disabled,
            created_at: time(user.created_at),
            updated_at: time(user.updated_at),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUserRequest {
    #[schema(
        pattern = r"^[^@\s\u0000-\u001f\u007f-\u009f]+@[^@\s.\u0000-\u001f\u007f-\u009f][^@\s\u0000-\u001f\u007f-\u009f]*$",
        max_length = 254,
        example = "dev@example.com"
    )]
    pub email: String,
    /// Defaults to the part of the e-mail before `@`.
    #[serde(default)]
    #[schema(max_length = 100, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub display_name: String,
    /// At least `auth.password_min_length` characters (12 by default).
    #[schema(format = Password, min_length = 12, max_length = 1024)]
    pub password: String,
    /// Defaults to `[viewer]`.
    #[serde(default)]
    pub roles: Vec<Role>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUserRequest {
    #[schema(
        max_length = 100,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub display_name: Option<String>,
    /// Replaces the user's roles.
    #[schema(min_items = 1)]
    pub roles: Option<Vec<Role>>,
    pub disabled: Option<bool>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordRequest {
    /// Required when changing your own password.
    #[serde(default)]
    #[schema(format = Password, max_length = 1024)]
    pub current_password: String,
    /// At least `auth.password_min_length` characters (12 by default).
    #[schema(format = Password, min_length = 12, max_length = 1024)]
    pub new_password: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserPage {
    pub items: Vec<User>,
    /// Pass as `page_token` for the next page; absent on the last page.
    pub next_page_token: Option<String>,
}

/// A page size outside 1-200 is a client error, not something to clamp silently.
pub fn check_page_size(page_size: Option<i32>) -> Result<i32, crate::problem::Problem> {
    match page_size {
        None => Ok(0),
        Some(n) if (1..=200).contains(&n) => Ok(n),
        Some(n) => {
            Err(crate::problem::Problem::validation(format!("page_size must be between 1 and 200, not {n}")))
        }
    }
}

/// A page token is the id of the last item seen; an empty one is a client error.
pub fn check_page_token(token: Option<String>) -> Result<String, crate::problem::Problem> {
    match token {
        None => Ok(String::new()),
        Some(token) if uuid::Uuid::parse_str(&token).is_ok() => Ok(token),
        Some(_) => Err(crate::problem::Problem::validation(
            "page_token must be the next_page_token of a previous page",
        )),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// 1-200, default 50.
    #[param(minimum = 1, maximum = 200)]
    pub page_size: Option<i32>,
    /// `next_page_token` of the previous page.
    #[param(format = Uuid)]
    pub page_token: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApiToken {
    pub id: String,
    pub name: String,
    /// First characters of the secret.
    pub prefix: String,
    pub roles: Vec<Role>,
    pub owner_id: String,
    #[serde(serialize_with = "crate::dto::rfc3339::option")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "crate::dto::rfc3339::option")]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "crate::dto::rfc3339::option")]
    pub last_used_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "crate::dto::rfc3339::option")]
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<auth::ApiToken> for ApiToken {
    fn from(token: auth::ApiToken) -> Self {
        Self {
            id: token.id,
            name: token.name,
            prefix: token.prefix,
            roles: roles(&token.roles),
            owner_id: token.owner_id,
            created_at: time(token.created_at),
            expires_at: time(token.expires_at),
            last_used_at: time(token.last_used_at),
            revoked_at: time(token.revoked_at),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiTokenRequest {
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub name: String,
    /// Must be roles you hold yourself.
    #[schema(min_items = 1)]
    pub roles: Vec<Role>,
    /// Lifetime in seconds, at most ten years; omit (or 0) for a token that does not expire.
    #[serde(default, deserialize_with = "whole_number")]
    #[schema(minimum = 0, maximum = 315_360_000)]
    pub ttl_seconds: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedApiToken {
    pub token: ApiToken,
    /// The token itself. Shown only in this response: store it now.
    pub secret: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TokenListQuery {
    #[serde(default)]
    pub include_revoked: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApiTokenList {
    pub items: Vec<ApiToken>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SigningKey {
    pub kid: String,
    pub algorithm: String,
    #[serde(serialize_with = "crate::dto::rfc3339::option")]
    pub created_at: Option<DateTime<Utc>>,
}

impl From<auth::RotateSigningKeyResponse> for SigningKey {
    fn from(key: auth::RotateSigningKeyResponse) -> Self {
        Self { kid: key.kid, algorithm: key.algorithm, created_at: time(key.created_at) }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct App {
    pub id: String,
    pub name: String,
    pub description: String,
    pub owner_team: String,
    #[serde(serialize_with = "crate::dto::rfc3339::option")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "crate::dto::rfc3339::option")]
    pub updated_at: Option<DateTime<Utc>>,
}

impl From<release::App> for App {
    fn from(app: release::App) -> Self {
        Self {
            id: app.id,
            name: app.name,
            description: app.description,
            owner_team: app.owner_team,
            created_at: time(app.created_at),
            updated_at: time(app.updated_at),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAppRequest {
    /// 2-63 lowercase letters, digits and inner dashes.
    #[schema(example = "checkout", pattern = "^[a-z0-9][a-z0-9-]{0,61}[a-z0-9]$")]
    pub name: String,
    #[serde(default)]
    #[schema(max_length = 2000, pattern = r"^[^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]*$")]
    pub description: String,
    #[serde(default)]
    #[schema(max_length = 100, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$")]
    pub owner_team: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AppPage {
    pub items: Vec<App>,
    pub next_page_token: Option<String>,
}

/// JSON Schema's `integer` includes `5.0`: accept integral numbers written as floats.
fn whole_number<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    let number = serde_json::Number::deserialize(deserializer)?;
    integral(&number).map_err(serde::de::Error::custom)
}

/// The integer a JSON number stands for, if it is one (`5` or `5.0`).
fn integral(number: &serde_json::Number) -> Result<i64, String> {
    if let Some(n) = number.as_i64() {
        return Ok(n);
    }
    match number.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(f as i64),
        _ => Err(format!("expected a whole number, got {number}")),
    }
}

/// Empty string → absent.
pub fn next_token(token: String) -> Option<String> {
    Some(token).filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, NaiveDate, Utc};
    use serde::Serialize;

    #[derive(Serialize)]
    struct Fast {
        #[serde(serialize_with = "super::rfc3339::required")]
        at: DateTime<Utc>,
        #[serde(serialize_with = "super::rfc3339::option")]
        maybe: Option<DateTime<Utc>>,
    }

    #[derive(Serialize)]
    struct Chrono {
        at: DateTime<Utc>,
        maybe: Option<DateTime<Utc>>,
    }

    #[test]
    fn times_serialize_exactly_as_chrono_writes_them() {
        let leap = NaiveDate::from_ymd_opt(2016, 12, 31)
            .and_then(|d| d.and_hms_nano_opt(23, 59, 59, 1_500_000_000))
            .map(|t| t.and_utc())
            .expect("a leap second");
        let mut times = vec![leap, DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC, DateTime::UNIX_EPOCH];
        for (seconds, nanos) in [
            (1_764_969_600, 0),
            (1_764_969_600, 120_000_000),
            (1_764_969_600, 123_456_000),
            (1_764_969_600, 123_456_789),
            (1, 1),
            (-62_135_596_800, 999_999_999),
            (253_402_300_799, 500),
            (951_782_400, 7_000),
            (-1, 999_000_000),
            (-62_167_219_200, 0),
            (-62_167_219_201, 0),
        ] {
            times.push(DateTime::from_timestamp(seconds, nanos).expect("in range"));
        }
        // And a spread over years 0–9999 with every kind of fraction (a fixed LCG: repeatable).
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..20_000 {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let seconds = (state >> 11) as i64 % 315_537_897_600 - 62_167_219_200;
            let nanos = match state % 4 {
                0 => 0,
                1 => (state >> 7) as u32 % 1000 * 1_000_000,
                2 => (state >> 7) as u32 % 1_000_000 * 1000,
                _ => (state >> 7) as u32 % 1_000_000_000,
            };
            times.push(DateTime::from_timestamp(seconds, nanos).expect("in range"));
        }
        for at in times {
            for maybe in [None, Some(at)] {
                let fast = serde_json::to_string(&Fast { at, maybe }).expect("serializes");
                let chrono = serde_json::to_string(&Chrono { at, maybe }).expect("serializes");
                assert_eq!(fast, chrono);
            }
        }
    }
}
