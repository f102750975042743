//! Auth uses the shared service error type.

pub use rp_runtime::error::ServiceError as AuthServiceError;

pub type Result<T> = rp_runtime::ServiceResult<T>;
