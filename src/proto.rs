//! The generated `zsc.v1` types, clients and servers, and the descriptor set served by
//! reflection. Clients (tests, the Verifier, other crates) use these directly.

pub mod codec;

tonic::include_proto!("zsc.v1");

/// Every zsc.v1 file, encoded, for the reflection service.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("zsc_descriptor");
