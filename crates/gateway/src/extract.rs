//! Extractors: the caller context forwarded to services, and JSON bodies whose rejections are
//! problem documents.

use axum::{
    extract::{FromRequest, FromRequestParts, Request, rejection::JsonRejection},
    http::{StatusCode, header, request::Parts},
};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use tonic::metadata::MetadataValue;

use crate::{middleware::ClientIp, problem::Problem};

/// What a service needs to know about the HTTP caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub authorization: Option<String>,
    pub request_id: Option<String>,
    pub client_ip: Option<String>,
}

impl Caller {
    /// Wraps `body` in a gRPC request carrying the caller's credentials, request id and address.
    pub fn grpc<T>(&self, body: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(body);
        let metadata = request.metadata_mut();
        let pairs = [
            ("authorization", &self.authorization),
            ("x-request-id", &self.request_id),
            ("x-rp-client-ip", &self.client_ip),
        ];
        for (key, value) in pairs {
            if let Some(value) = value.as_deref().and_then(|v| MetadataValue::try_from(v).ok()) {
                metadata.insert(key, value);
            }
        }
        request
    }

    /// Refuses anonymous calls early, with the right status and header.
    pub fn require_token(&self) -> Result<(), Problem> {
        match &self.authorization {
            Some(value) if rp_identity::bearer(value).is_some() => Ok(()),
            Some(_) => Err(Problem::unauthorized("the Authorization header must be \"Bearer <token>\"")),
            None => Err(Problem::unauthorized("this endpoint needs a bearer token")),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        Ok(Self {
            authorization: header(header::AUTHORIZATION.as_str()),
            request_id: header("x-request-id"),
            client_ip: parts.extensions.get::<ClientIp>().map(|c| c.0.to_string()),
        })
    }
}

/// `Json<T>` whose rejections are problem+json with a precise message.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_problem(rejection)),
        }
    }
}

/// Like `ApiJson`, and keeps the body as it came, to pass on unchanged.
pub struct RawJson<T> {
    pub value: T,
    pub raw: Bytes,
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for RawJson<T> {
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let content_type = request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
        if !content_type.is_some_and(is_json) {
            return Err(not_json());
        }
        let raw = Bytes::from_request(request, state).await.map_err(|err| {
            if err.status() == StatusCode::PAYLOAD_TOO_LARGE {
                too_large()
            } else {
                Problem::bad_request(err.body_text())
            }
        })?;
        match axum::Json::<T>::from_bytes(&raw) {
            Ok(axum::Json(value)) => Ok(Self { value, raw }),
            Err(rejection) => Err(json_problem(rejection)),
        }
    }
}

/// `application/json` or `application/<anything>+json`, parameters aside (what `Json` accepts).
fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence
        .strip_prefix("application/")
        .is_some_and(|subtype| subtype == "json" || (subtype.ends_with("+json") && subtype.len() > 5))
}

fn not_json() -> Problem {
    Problem::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        "send the body as JSON with Content-Type: application/json",
    )
}

fn too_large() -> Problem {
    Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "request body is too large")
}

/// The problem document for a JSON body that could not be read.
fn json_problem(rejection: JsonRejection) -> Problem {
    match rejection {
        JsonRejection::JsonDataError(err) => Problem::validation(err.body_text()),
        JsonRejection::JsonSyntaxError(err) => Problem::bad_request(err.body_text()),
        JsonRejection::MissingJsonContentType(_) => not_json(),
        JsonRejection::BytesRejection(err) if err.status() == StatusCode::PAYLOAD_TOO_LARGE => too_large(),
        other => Problem::bad_request(other.body_text()),
    }
}

#[cfg(test)]
mod tests {
    use super::is_json;

    #[test]
    fn json_content_types() {
        for yes in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
            "application/problem+json",
        ] {
            assert!(is_json(yes), "{yes}");
        }
        for no in ["text/plain", "application/jsonx", "application/+json", "json", ""] {
            assert!(!is_json(no), "{no}");
        }
    }
}
