//! Auth domain logic, independent of gRPC.

pub mod keys;
pub mod passwords;
pub mod secrets;
pub mod validate;
