//! Kubeconfig reading: `parse`, `client_is_embedded` and `rewrite_embedded` (CA only) on
//! arbitrary YAML. File references resolve under a directory that does not exist.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pki::kubeconfig;
use std::path::Path;

const CA: &str = "-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----\n";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/nonexistent/fuzz/admin.conf");
    let _ = kubeconfig::parse(text, path);
    let _ = kubeconfig::client_is_embedded(text, path);
    let _ = kubeconfig::rewrite_embedded(text, path, CA, None);
});
