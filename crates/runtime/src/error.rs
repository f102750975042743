//! The error type of every gRPC service and its status codes, in one place: callers get a
//! stable code and a safe message, the log gets the cause.

use tonic::{Code, Status, metadata::MetadataValue};

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{message}")]
    Throttled { message: String, retry_after_secs: u64 },
    #[error("{0}")]
    Precondition(String),
    /// Lost a race (optimistic concurrency): read again and retry.
    #[error("{0}")]
    Aborted(String),
    /// A dependency (a deployer, a driver) is not answering.
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<sea_orm::DbErr> for ServiceError {
    fn from(err: sea_orm::DbErr) -> Self {
        // Overload is not a bug: no connection free in time (every one busy, or SQLite's single
        // writer holding the lock past its busy timeout) tells the caller to retry shortly.
        let busy = matches!(err, sea_orm::DbErr::ConnectionAcquire(_))
            || err.to_string().contains("database is locked");
        if busy {
            ServiceError::Unavailable("the database is busy; retry shortly".into())
        } else {
            ServiceError::Internal(err.to_string())
        }
    }
}

impl From<rp_identity::AuthError> for ServiceError {
    fn from(err: rp_identity::AuthError) -> Self {
        match err {
            rp_identity::AuthError::Forbidden(_) => ServiceError::Forbidden(err.to_string()),
            rp_identity::AuthError::Unavailable(_) => ServiceError::Internal(err.to_string()),
            _ => ServiceError::Unauthenticated(err.to_string()),
        }
    }
}

impl From<ServiceError> for Status {
    fn from(err: ServiceError) -> Self {
        match err {
            ServiceError::Invalid(m) => Status::invalid_argument(m),
            ServiceError::NotFound(m) => Status::not_found(m),
            ServiceError::Conflict(m) => Status::already_exists(m),
            ServiceError::Unauthenticated(m) => Status::unauthenticated(m),
            ServiceError::Forbidden(m) => Status::permission_denied(m),
            ServiceError::Precondition(m) => Status::failed_precondition(m),
            ServiceError::Aborted(m) => Status::aborted(m),
            ServiceError::Unavailable(m) => Status::unavailable(m),
            ServiceError::Throttled { message, retry_after_secs } => {
                let mut status = Status::new(Code::ResourceExhausted, message);
                if let Ok(value) = MetadataValue::try_from(retry_after_secs.to_string()) {
                    status.metadata_mut().insert("retry-after", value);
                }
                status
            }
            ServiceError::Internal(detail) => {
                // The cause goes to the log; the caller gets a stable, safe message.
                tracing::error!(error = %detail, "internal error");
                Status::internal("internal error")
            }
        }
    }
}

pub type ServiceResult<T> = std::result::Result<T, ServiceError>;
