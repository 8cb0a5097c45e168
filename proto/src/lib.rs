//! Generated gRPC/protobuf types for herd. No logic lives here.

pub mod supervisor {
    tonic::include_proto!("herd.supervisor");
}

pub mod cluster {
    tonic::include_proto!("herd.cluster");
}
