//! Release domain rules, independent of storage and transport.

pub mod audit;
pub mod dora;
pub mod gates;
pub mod plan;
pub mod versioning;
