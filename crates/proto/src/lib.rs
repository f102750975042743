//! gRPC contracts (`releasepilot.<service>.v1`) and event payloads (`releasepilot.events.v1`).

/// Encoded `FileDescriptorSet` of every proto file, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));

pub mod auth {
    pub mod v1 {
        tonic::include_proto!("releasepilot.auth.v1");
    }
}

pub mod release {
    pub mod v1 {
        tonic::include_proto!("releasepilot.release.v1");
    }
}

pub mod rollback {
    pub mod v1 {
        tonic::include_proto!("releasepilot.rollback.v1");
    }
}

pub mod notifier {
    pub mod v1 {
        tonic::include_proto!("releasepilot.notifier.v1");
    }
}

pub mod events {
    pub mod v1 {
        tonic::include_proto!("releasepilot.events.v1");
    }
}

pub use prost_types::Timestamp;

/// Converts a UTC time to a protobuf timestamp.
pub fn timestamp(time: impl Into<std::time::SystemTime>) -> Timestamp {
    Timestamp::from(time.into())
}
