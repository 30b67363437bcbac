//! PKCS#11 tokens: the module, the token found by its label, the PIN, sessions and recovery.
//!
//! [`Token`] is the connection: it loads the module, finds the token, logs in with the PIN read
//! from the configured [`kms_config::SecretSource`] ([`read_pin`]), pools sessions, and
//! [`Token::with_session`] runs an operation on one, reopening the session (and re-initialising
//! the module when the token went away) and retrying once when the token dropped it. Every call
//! blocks; [`Workers`] runs them on worker threads, at most `max_sessions` at once. What the
//! users do in a session (AES-GCM wrapping, ECDSA signing, finding their key objects) stays
//! with them. One [`Module`] per module path is shared by every token of the process, so
//! the recovery of one user never finalises the library under another's calls. Cryptoki errors convert into [`KeyStoreError`](crate::KeyStoreError) with `?`.

mod error;
mod module;
mod pin;
mod token;
mod workers;

pub use error::{decrypt_error, worker_failed};
pub use module::Module;
pub use pin::read_pin;
pub use token::{REINIT_INTERVAL, Token};
pub use workers::{Workers, blocking};
