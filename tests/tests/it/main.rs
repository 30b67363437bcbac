//! Tests that cross crate boundaries, one test binary (linked once) with a module per subject:
//! [`deploy`], the deployment files against each other and the plugin's real config loader.

mod deploy;
