//! kubeadm configuration files (ClusterConfiguration with Init-/JoinConfiguration and other
//! documents) through `kubeadm_config::parse`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pki::kubeadm_config;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = kubeadm_config::parse(text, Path::new("/nonexistent/kubeadm.yaml"));
});
