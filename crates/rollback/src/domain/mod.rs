//! Rollback domain rules, independent of storage and transport.

pub mod evaluate;
pub mod policy;
