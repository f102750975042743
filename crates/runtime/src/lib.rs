//! What every Release Pilot service process shares: signal handling and graceful shutdown, the
//! admin HTTP server (`/health`, `/ready`, `/live`, `/health/detailed`, `/metrics`), gRPC server
//! assembly (health checking, reflection v1 and v1alpha, telemetry) and the service kit that
//! opens a service's database, migrates it and runs its outbox relay.

pub mod admin;
pub mod error;
pub mod grpc;
pub mod health;
pub mod in_process;
pub mod service;
pub mod shutdown;
pub mod validate;

pub use admin::AdminState;
pub use error::{ServiceError, ServiceResult};
pub use health::Health;
pub use service::{Listeners, RunningService, ServiceKit};
pub use tokio_util::sync::CancellationToken;
