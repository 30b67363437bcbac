//! Shared helpers for cross-crate integration tests.
