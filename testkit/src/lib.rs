//! Test support shared by the integration tests and benches of every crate in the workspace.
//!
//! Only what more than one crate's tests need lives here: running an external program (the
//! binary under test, openssl, softhsm2-util, python3) and insisting on its outcome, with the
//! command line and its output in the panic message; a scratch directory for the files a test
//! works on. A crate's own fixtures stay in that crate's `tests/it/common`.

pub mod process;
pub mod scratch;

pub use process::{assert_failed, assert_succeeded, expect_failure, expect_success, output_of};
pub use scratch::{entry_names, scratch_path};
