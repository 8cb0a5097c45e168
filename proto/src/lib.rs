//! Generated gRPC/protobuf types for herd. No logic lives here.

pub mod supervisor {
    tonic::include_proto!("herd.supervisor");
}

pub mod cluster {
    tonic::include_proto!("herd.cluster");
}

/// Every service's file descriptors (encoded `FileDescriptorSet`), for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/herd_descriptor.bin"));

// prost requires Debug on every message; these carry a secret's value, so theirs hides it.
impl std::fmt::Debug for supervisor::PutSecretRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PutSecretRequest")
            .field("name", &self.name)
            .field("value", &"<redacted>")
            .finish()
    }
}

impl std::fmt::Debug for supervisor::SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretValue")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("value", &"<redacted>")
            .finish()
    }
}
