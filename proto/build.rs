//! Compiles the `.proto` files with protox (pure Rust), so no system `protoc` is needed.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/supervisor.proto", "proto/cluster.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    // The descriptors themselves, for gRPC server reflection (`grpcurl list` against herd).
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("herd_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    // Messages that carry a secret's value get no Debug: a stray `{:?}` cannot print it.
    tonic_prost_build::configure()
        .skip_debug([
            "herd.supervisor.PutSecretRequest",
            "herd.supervisor.SecretValue",
        ])
        .compile_fds(fds)?;
    Ok(())
}
