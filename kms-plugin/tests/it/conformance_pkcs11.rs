//! The conformance suite against the PKCS#11 backend on a SoftHSM2 token.
//! Needs SoftHSM2 (fails, never skips, without it): `bash .ci/provision-softhsm.sh`.
#![cfg(feature = "pkcs11")]

use crate::conformance;

conformance::suite!(conformance::pkcs11::Pkcs11:
    contract_limits, round_trips, tamper, restart_durability, rotation_while_serving,
    concurrency, failed_unwraps_are_remembered, remote_call_economy, startup_refusal, fault_cases);
