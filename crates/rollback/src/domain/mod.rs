//! Rollback domain rules, independent of storage and transport.

pub mod alertmanager;
pub mod evaluate;
pub mod policy;
