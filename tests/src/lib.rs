//! Shared helpers for cross-crate integration tests: reading the files under `deploy/`
//! ([`files`]), walking their YAML ([`yaml`]), pods and their mounts ([`pod`]), command lines
//! ([`command_line`]), systemd units ([`unit`]), tmpfiles.d entries ([`tmpfiles`]) and what the
//! deployment files need to know of the plugin configuration ([`plugin`]).
//!
//! Every helper panics with the file and the value at fault, so a test that uses it names the
//! drift without further checks.

pub mod command_line;
pub mod files;
pub mod plugin;
pub mod pod;
pub mod tmpfiles;
pub mod unit;
pub mod yaml;
