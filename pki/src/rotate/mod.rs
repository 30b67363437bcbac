//! `rotate`: replace the cluster CA, front-proxy CA, etcd CA or service-account key without
//! downtime, in three resumable phases.
//!
//! | phase | trust anchors (`ca.crt`, kubeconfig CA data, `sa.pub` ...) | leaves | signing key |
//! |---|---|---|---|
//! | before | old | old CA | old |
//! | `start` | old + new | old CA | old (`ca-signer.*` = old, single certificate) |
//! | `switch` | new + old | new CA | new (`ca-signer.*` = new) |
//! | `finish` | new | new CA | new (`ca-signer.*` removed) |
//!
//! The first entry of a bundle always belongs to the key beside it (`ca.crt` ↔ `ca.key`,
//! `sa.pub` ↔ `sa.key`), so the other subcommands keep working mid-rotation.
//!
//! Everything lives under `<cert dir>/.rotation` (mode 0700): `state.json` (the progress, with
//! per-step markers), `staged/<target>/` (old and new CA or key) and
//! `backups/<ts>-<target>-<phase>/` (a copy of every file the rotation may change, taken before
//! each phase). `abort` restores the backup taken before `start`.
//!
//! A command reads like its procedure: [`run`] (one phase) and [`abort`] take the lock
//! (`session`), ask `admission` whether the state file admits them, check what must hold first
//! (`precheck`), back up ([`backup`]), then carry out the phase's steps from the table in
//! `steps`, each one applied by `apply` from the staged `material`. [`status`] only reads.
//!
//! `--dry-run` ([`dry_run`]) runs a phase on a scratch copy of every directory it writes and
//! reports the files it would create, change or remove.
//!
//! Several control-plane nodes: the new CA (key) is generated once (`start --export FILE`) and
//! carried to the other nodes in the encrypted [`shared`] file (`start --join FILE`, see
//! `join`); every node then re-issues only its own leaves and kubeconfigs, from their own
//! subjects and SANs.

mod abort;
mod admission;
mod anchor;
mod apply;
pub mod backup;
pub mod coordinator;
mod dry_run;
mod join;
pub mod manifests;
mod material;
mod options;
mod outcome;
pub mod plan;
mod precheck;
mod relocate;
pub mod restart;
mod run;
mod session;
pub mod shared;
pub mod state;
pub mod status;
mod steps;
pub mod worker;

pub use abort::abort;
pub use coordinator::{Coordinator, LocalOnly, Move, NodeReport};
pub use dry_run::{DryRun, dry_run};
pub use options::{DEFAULT_MAX_TOKEN_LIFETIME, FAIL_AFTER_STEP_ENV, Options, StepHook};
pub use outcome::Outcome;
pub use plan::{Phase, Plan, Target};
pub use restart::RestartStep;
pub use run::run;
pub use shared::CertificateKey;
