//! `pki sign-csr`'s CSR parser and signer policy: `parse_csr` on arbitrary PEM text, then
//! `check_rules` for every signer with the requested, the default and a hostile usage set.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pki::csr::{Signer, check_rules, parse_csr};
use std::collections::BTreeSet;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(req) = parse_csr(text) else { return };
    for signer in [
        Signer::KubeletClient,
        Signer::KubeletServing,
        Signer::ApiserverClient,
    ] {
        let requested: BTreeSet<String> = req.usages.iter().cloned().collect();
        let defaults: BTreeSet<String> = signer.default_usages().into_iter().collect();
        let hostile: BTreeSet<String> = ["cert sign".to_owned()].into();
        let _ = check_rules(signer, &req, &requested);
        let _ = check_rules(signer, &req, &defaults);
        assert!(
            check_rules(signer, &req, &hostile).is_err(),
            "cert sign is never allowed"
        );
        if req.wants_ca {
            assert!(
                check_rules(signer, &req, &defaults).is_err(),
                "CA requests are refused"
            );
        }
    }
});
