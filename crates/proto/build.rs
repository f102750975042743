//! Generates Rust code for every `.proto` file under `proto/` without a `protoc` binary:
//! protox parses the files, tonic-prost-build writes messages, clients and servers.

use std::{env, fs, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [
        "releasepilot/auth/v1/auth.proto",
        "releasepilot/release/v1/release.proto",
        "releasepilot/rollback/v1/rollback.proto",
        "releasepilot/notifier/v1/notifier.proto",
        "releasepilot/events/v1/events.proto",
    ];
    let descriptors = protox::compile(files, [&root])?;

    // Reflection needs the descriptor set; compile_fds does not write it.
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out_dir.join("descriptor.bin"), descriptors.encode_to_vec())?;

    tonic_prost_build::configure()
        // Event payloads travel as JSON (CloudEvents `data`), so they derive serde.
        .type_attribute(
            ".releasepilot.events.v1",
            "#[derive(serde::Serialize, serde::Deserialize)] #[serde(default)]",
        )
        .compile_fds(descriptors)?;

    println!("cargo:rerun-if-changed={}", root.display());
    Ok(())
}
