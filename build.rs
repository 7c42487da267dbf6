//! Generates the KEDA external scaler service with protox: no system `protoc` needed.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fds = protox::compile(["proto/externalscaler.proto"], ["proto"])?;
    // Small per-stream buffers: KEDA holds a stream open per ScaledObject (src/codec.rs).
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .codec_path("crate::codec::SmallBuffers")
        .compile_fds(fds)?;
    println!("cargo:rerun-if-changed=proto/externalscaler.proto");
    Ok(())
}
