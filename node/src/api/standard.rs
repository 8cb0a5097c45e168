//! The standard gRPC services herd serves beside its own on the socket and the TCP API:
//! health (`grpc.health.v1.Health`, for `grpc_health_probe` and load balancers) and server
//! reflection (`grpc.reflection.v1`, for `grpcurl list/describe`), from the descriptors the
//! proto crate embeds.

use anyhow::Context;

/// The services health reports on: the whole server (`""`) and each of herd's.
pub const SERVICES: [&str; 5] = [
    "",
    "herd.supervisor.Supervisor",
    "herd.supervisor.ClusterAdmin",
    "herd.supervisor.Access",
    "herd.supervisor.Hooks",
];

/// The reflection service over every herd service's descriptors.
pub fn reflection() -> anyhow::Result<
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(herd_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("cannot build the gRPC reflection service from herd's descriptors")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflection_builds_from_the_embedded_descriptors() {
        reflection().expect("descriptors decode");
    }

    #[test]
    fn every_service_health_names_is_in_the_descriptors() {
        let text = String::from_utf8_lossy(herd_proto::FILE_DESCRIPTOR_SET);
        for full in SERVICES.iter().filter(|s| !s.is_empty()) {
            let (package, service) = full.rsplit_once('.').expect("package.service");
            assert!(text.contains(package), "{package}");
            assert!(text.contains(service), "{service}");
        }
    }
}
