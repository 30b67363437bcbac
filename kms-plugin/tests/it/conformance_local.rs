//! The conformance suite against the local backend (root key files in a state directory).
//!
//! `fault_cases` is N/A: the local backend has no remote side to lose. `startup_refusal` covers
//! its failure mode instead: a corrupt state directory is refused with a message naming the file.

use crate::conformance;

conformance::suite!(conformance::local::Local:
    contract_limits, round_trips, tamper, restart_durability, rotation_while_serving,
    concurrency, failed_unwraps_are_remembered, remote_call_economy, startup_refusal);
