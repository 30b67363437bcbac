//! Generated gRPC types for the contracts kube-apiserver uses to reach local plugins.
#![allow(missing_docs)]

/// KMS v2 (`package v2`): `KeyManagementService`.
pub mod kms_v2 {
    tonic::include_proto!("v2");
}

/// External JWT signer, GA package (`package v1`): `ExternalJWTSigner` (kube-apiserver ≥ 1.36).
pub mod externaljwt_v1 {
    tonic::include_proto!("v1");
}

/// External JWT signer, alpha package (`package v1alpha1`) used by kube-apiserver 1.32–1.35.
pub mod externaljwt_v1alpha1 {
    tonic::include_proto!("v1alpha1");
}
