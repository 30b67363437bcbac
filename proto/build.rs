//! Compiles the `.proto` contracts with a pure-Rust protobuf compiler, so a fresh
//! `cargo build` needs no system `protoc`.
//!
//! The external JWT signer's `v1alpha1` package is the `v1` contract under its alpha package
//! name: it is written here from `externaljwt/v1/api.proto`, so the contract has one source.

use prost::Message;
use std::path::{Path, PathBuf};

const PROTOS: &[&str] = &[
    "kms/v2/api.proto",
    "externaljwt/v1/api.proto",
    "externaljwt/v1alpha1/api.proto",
];

/// The GA contract, the source of the alpha one.
const SIGNER_V1: &str = "proto/externaljwt/v1/api.proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?);
    let generated = out_dir.join("proto");
    write_signer_v1alpha1(&generated)?;
    let includes = [PathBuf::from("proto"), generated];
    let descriptors = protox::compile(PROTOS, &includes)?;
    let descriptor_path = out_dir.join("descriptors.bin");
    std::fs::write(&descriptor_path, descriptors.encode_to_vec())?;
    tonic_prost_build::configure()
        .skip_protoc_run()
        .file_descriptor_set_path(&descriptor_path)
        .compile_protos(PROTOS, &["proto"])?;
    Ok(())
}

/// Writes `externaljwt/v1alpha1/api.proto` under `root`: [`SIGNER_V1`] with `package v1alpha1`.
fn write_signer_v1alpha1(root: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let v1 = std::fs::read_to_string(SIGNER_V1)?;
    let renamed = v1
        .replacen("(package v1).", "(package v1alpha1).", 1)
        .replacen("\npackage v1;\n", "\npackage v1alpha1;\n", 1);
    if !renamed.contains("\npackage v1alpha1;\n") {
        return Err(format!("{SIGNER_V1} has no `package v1;` line to rename").into());
    }
    let dir = root.join("externaljwt/v1alpha1");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("api.proto"), renamed)?;
    Ok(())
}
