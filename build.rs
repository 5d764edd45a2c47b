//! Compiles the gRPC transport's protocol (`proto/pushbench.proto`) into Rust with a vendored
//! `protoc`, so building needs nothing installed beyond Rust.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        // The server is served by pushbench's own HTTP/2 loop, and the client speaks over
        // pushbench's own connections: no tonic transport.
        .build_transport(false)
        .compile_with_config(config, &["proto/pushbench.proto"], &["proto"])?;
    Ok(())
}
