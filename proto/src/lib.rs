//! Generated gRPC/protobuf types for herd. No logic lives here.

pub mod supervisor {
    tonic::include_proto!("herd.supervisor");
}
