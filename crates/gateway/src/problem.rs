//! RFC 9457 problem details: the one error format of the HTTP API. Every error — from a handler,
//! a service's gRPC status, an extractor, a middleware or the router itself — leaves the
//! gateway as `application/problem+json` with a stable `code`, and never with internals.

use axum::{
    body::Body,
    extract::Request,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use serde::Serialize;
use utoipa::ToSchema;

pub const CONTENT_TYPE: &str = "application/problem+json";

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// URI identifying the problem type: `urn:release-pilot:problem:<code>`.
    #[serde(rename = "type")]
    pub problem_type: String,
    /// Short summary of the problem type.
    pub title: String,
    /// HTTP status code.
    pub status: u16,
    /// What went wrong with this request, in words the caller can act on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Path of the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Stable machine-readable code (`validation_failed`, `not_found`, `rate_limited`, …).
    pub code: String,
    /// Request id, for support and log correlation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(skip)]
    headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl Problem {
    pub fn new(status: StatusCode, code: &str, detail: impl Into<String>) -> Self {
        Self {
            problem_type: format!("urn:release-pilot:problem:{code}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: Some(detail.into()).filter(|d: &String| !d.is_empty()),
            instance: None,
            code: code.to_owned(),
            request_id: None,
            headers: Vec::new(),
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", detail)
    }

    pub fn validation(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", detail)
            .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"release-pilot\""))
    }

    pub fn too_many_requests(detail: impl Into<String>, retry_after_secs: u64) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", detail)
            .with_header(header::RETRY_AFTER, HeaderValue::from(retry_after_secs.max(1)))
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "an unexpected error occurred; it has been logged",
        )
    }

    pub fn with_header(mut self, name: header::HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// Maps a service's gRPC status. Internal details never leave: 5xx carry a generic message.
    pub fn from_status(status: &tonic::Status) -> Self {
        use tonic::Code;
        let message = status.message().to_owned();
        match status.code() {
            Code::InvalidArgument | Code::OutOfRange => Self::validation(message),
            Code::NotFound => Self::new(StatusCode::NOT_FOUND, "not_found", message),
            Code::AlreadyExists => Self::new(StatusCode::CONFLICT, "already_exists", message),
            Code::FailedPrecondition => Self::new(StatusCode::CONFLICT, "failed_precondition", message),
            Code::Aborted => Self::new(StatusCode::CONFLICT, "conflict", message),
            Code::Unauthenticated => Self::unauthorized(message),
            Code::PermissionDenied => Self::new(StatusCode::FORBIDDEN, "forbidden", message),
            Code::ResourceExhausted => {
                let retry_after = status
                    .metadata()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1);
                Self::too_many_requests(message, retry_after)
            }
            Code::Unimplemented => {
                Self::new(StatusCode::NOT_IMPLEMENTED, "not_implemented", "not implemented")
            }
            Code::Unavailable => {
                tracing::warn!(error = %message, "upstream service unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "a service is temporarily unavailable",
                )
                .with_header(header::RETRY_AFTER, HeaderValue::from_static("1"))
            }
            Code::DeadlineExceeded | Code::Cancelled => {
                Self::new(StatusCode::GATEWAY_TIMEOUT, "timeout", "a service did not answer in time")
            }
            _ => {
                tracing::error!(code = ?status.code(), error = %message, "upstream service error");
                Self::internal()
            }
        }
    }
}

impl From<tonic::Status> for Problem {
    fn from(status: tonic::Status) -> Self {
        Self::from_status(&status)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = Response::new(Body::from(body));
        *response.status_mut() = status;
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        for (name, value) in self.headers {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

fn code_for(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthenticated",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::NOT_ACCEPTABLE => "not_acceptable",
        StatusCode::REQUEST_TIMEOUT => "timeout",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "validation_failed",
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        s if s.is_server_error() => "internal",
        _ => "error",
    }
}

fn detail_for(status: StatusCode, headers: &HeaderMap) -> String {
    match status {
        StatusCode::NOT_FOUND => "no such resource".into(),
        StatusCode::METHOD_NOT_ALLOWED => match headers.get(header::ALLOW).and_then(|v| v.to_str().ok()) {
            Some(allow) => format!("method not allowed; use one of: {allow}"),
            None => "method not allowed".into(),
        },
        StatusCode::PAYLOAD_TOO_LARGE => "request body is larger than the configured limit".into(),
        StatusCode::REQUEST_TIMEOUT => "the request took too long".into(),
        s if s.is_server_error() => "an unexpected error occurred; it has been logged".into(),
        s => s.canonical_reason().unwrap_or("error").to_lowercase(),
    }
}

/// Rewrites every error response that is not already problem+json (router 404/405, body-limit
/// 413, timeout 408, panics) into one, keeping headers such as `Allow`, and stamps `instance`
/// and `request_id` on all problems.
pub async fn normalize_errors(request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let request_id = request.headers().get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(CONTENT_TYPE.as_bytes()));
    let (mut parts, body) = response.into_parts();
    let mut problem_json = if is_problem {
        match axum::body::to_bytes(body, 64 * 1024).await.ok().and_then(|b| serde_json::from_slice(&b).ok()) {
            Some(value) => value,
            None => serde_json::to_value(Problem::internal()).unwrap_or_default(),
        }
    } else {
        serde_json::to_value(Problem::new(status, code_for(status), detail_for(status, &parts.headers)))
            .unwrap_or_default()
    };
    if let serde_json::Value::Object(map) = &mut problem_json {
        map.entry("instance").or_insert_with(|| serde_json::Value::String(path));
        if let Some(id) = request_id {
            map.entry("request_id").or_insert_with(|| serde_json::Value::String(id));
        }
    }
    let body = serde_json::to_vec(&problem_json).unwrap_or_default();
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}
