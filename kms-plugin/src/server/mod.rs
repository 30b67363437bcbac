//! The gRPC server.
pub mod authority;
