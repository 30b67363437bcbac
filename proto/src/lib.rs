//! Generated gRPC types for the contracts kube-apiserver uses to reach local plugins.
#![forbid(unsafe_code)]
#![allow(missing_docs)]

/// KMS v2 (`package v2`): `KeyManagementService`.
pub mod kms_v2 {
    tonic::include_proto!("v2");
}
