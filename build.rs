//! Compiles proto/ with protox (pure Rust): no `protoc` is needed on the machine.

use std::{env, fs, path::PathBuf};

use prost::Message as _;

const PROTOS: &[&str] = &[
    "proto/zsc/v1/types.proto",
    "proto/zsc/v1/user_service.proto",
    "proto/zsc/v1/key_service.proto",
    "proto/zsc/v1/access_service.proto",
    "proto/zsc/v1/audit_service.proto",
    "proto/zsc/v1/operations_service.proto",
    "proto/zsc/v1/confirmation_service.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // tonic-prost-build does not emit rerun triggers on the compile_fds path.
    println!("cargo:rerun-if-changed=proto");

    let fds = protox::compile(PROTOS, ["proto"])?;

    // compile_fds ignores file_descriptor_set_path, so the reflection service's
    // descriptor set is written here and loaded with include_file_descriptor_set!.
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out_dir.join("zsc_descriptor.bin"), fds.encode_to_vec())?;

    // Our codec makes a request that is not valid protobuf INVALID_ARGUMENT (src/proto/codec.rs).
    tonic_prost_build::configure()
        .codec_path("crate::proto::codec::ZscCodec")
        .compile_fds(fds)?;
    Ok(())
}
