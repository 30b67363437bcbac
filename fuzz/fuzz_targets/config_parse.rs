//! The plugin's YAML configuration: `PluginConfig::parse` then `validate`.
#![no_main]

use kms_config::PluginConfig;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = PluginConfig::parse(text, Path::new("/nonexistent/fuzz.yaml")) {
        let _ = config.validate("fuzz");
    }
});
