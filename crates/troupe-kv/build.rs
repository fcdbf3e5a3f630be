//! Compiles the etcd v3 protocol files (written for troupe, see `proto/`)
//! into server stubs, with the protoc shipped by `protoc-bin-vendored` so the
//! build needs no system package.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .bytes(".")
        .compile_protos(
            &[
                "proto/etcdserverpb/rpc.proto",
                "proto/mvccpb/kv.proto",
                "proto/v3lockpb/v3lock.proto",
                "proto/v3electionpb/v3election.proto",
                "proto/troupepb/admin.proto",
            ],
            &["proto"],
        )?;
    Ok(())
}
