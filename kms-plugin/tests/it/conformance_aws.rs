//! The conformance suite against the AWS KMS backend on moto's KMS server.
//! Needs moto (fails, never skips, without it): `bash .ci/provision-moto.sh`.
#![cfg(feature = "aws")]

use crate::conformance;

conformance::suite!(conformance::aws::Aws:
    contract_limits, round_trips, tamper, restart_durability, rotation_while_serving,
    concurrency, failed_unwraps_are_remembered, remote_call_economy, startup_refusal, fault_cases);
