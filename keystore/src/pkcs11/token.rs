//! The token: module loading, finding the slot by label, login, a pool of open sessions, and
//! running an operation on one with recovery.
//!
//! Everything here blocks; callers run it on `spawn_blocking` threads. A PKCS#11 login is
//! shared by every session of the process on one token, so a session is logged in when it is
//! opened (`CKR_USER_ALREADY_LOGGED_IN` counts as success), and closing the last one logs out.
//!
//! Many modules (SoftHSM2 among them, and the clients of several network HSMs) enumerate tokens
//! when they are initialised, so a token that went away and came back is only seen again after
//! C_Finalize and C_Initialize. [`Token::recover`] does that, at most once per
//! [`REINIT_INTERVAL`], while holding the module's gate exclusively: no other call is inside
//! the module, whichever user of it (KMS root key, JWT signer) made it; the module is shared
//! per process ([`Module`]).

use super::error::token_not_found;
use super::module::{Module, initialize, lock};
use super::read_pin;
use crate::KeyStoreError;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::MechanismType;
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::RawAuthPin;
use kms_config::Pkcs11Backend;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLockReadGuard};
use std::time::{Duration, Instant};

/// Least time between two re-initialisations of the module.
pub const REINIT_INTERVAL: Duration = Duration::from_secs(1);

/// An initialised PKCS#11 module and the token found by its label.
///
/// Every `Token` of a process on one module shares that module's handle and gate
/// ([`Module::load`]), so [`Token::recover`] finalises the module only while no call of any
/// user is inside it. Logs go to this module's target; the users log their own calls under
/// theirs.
pub struct Token {
    module: Arc<Module>,
    label: String,
    pin: RawAuthPin,
    slot: Mutex<Option<Slot>>,
    idle: Mutex<Vec<Session>>,
    /// Set once the token rejected the PIN: no further login is tried, so a wrong PIN cannot
    /// exhaust the token's retry counter and lock the user out.
    pin_rejected: AtomicBool,
}

impl Token {
    /// Reads the PIN, takes the process's module (loading and initialising it if no one holds
    /// it yet) and checks that the token is present. Blocks.
    pub fn open(config: &Pkcs11Backend) -> Result<Self, KeyStoreError> {
        let pin = read_pin(&config.pin)?;
        let module = Module::load(&config.module)?;
        let token = Self {
            module,
            label: config.token_label.to_owned(),
            pin,
            slot: Mutex::new(None),
            idle: Mutex::new(Vec::new()),
            pin_rejected: AtomicBool::new(false),
        };
        token.find_slot()?;
        Ok(token)
    }

    /// [`Token::open`], then [`Token::require_mechanism`] for each `(mechanism, name)`: a token
    /// that cannot do what the caller needs is refused before any key is touched. Blocks.
    pub fn open_for(
        config: &Pkcs11Backend,
        mechanisms: &[(MechanismType, &'static str)],
    ) -> Result<Self, KeyStoreError> {
        let token = Self::open(config)?;
        for &(mechanism, name) in mechanisms {
            token.require_mechanism(mechanism, name)?;
        }
        Ok(token)
    }

    /// The slot holding the token labelled `self.label`, searched afresh.
    fn find_slot(&self) -> Result<Slot, KeyStoreError> {
        for slot in self.module.ctx.get_slots_with_token()? {
            let Ok(info) = self.module.ctx.get_token_info(slot) else {
                continue;
            };
            if info.label().trim_end() == self.label {
                *lock(&self.slot) = Some(slot);
                return Ok(slot);
            }
        }
        Err(token_not_found(&self.label))
    }

    /// Fails unless the token offers `mechanism` (named `name` in the error).
    pub fn require_mechanism(
        &self,
        mechanism: MechanismType,
        name: &'static str,
    ) -> Result<(), KeyStoreError> {
        let cached = *lock(&self.slot);
        let slot = match cached {
            Some(slot) => slot,
            None => self.find_slot()?,
        };
        // Asked for this one mechanism: listing them all would make the cryptoki crate log an
        // ERROR for every vendor or newer mechanism it has no name for (about 30 on SoftHSM2).
        match self.module.ctx.get_mechanism_info(slot, mechanism) {
            Ok(_) => Ok(()),
            Err(CkError::Pkcs11(RvError::MechanismInvalid, _)) => Err(
                KeyStoreError::configuration(format!("the PKCS#11 token does not offer {name}")),
            ),
            Err(other) => Err(other.into()),
        }
    }

    /// Opens a read-write session on the token and logs the user in.
    fn open_session(&self) -> Result<Session, KeyStoreError> {
        let cached = *lock(&self.slot);
        let slot = match cached {
            Some(slot) => slot,
            None => self.find_slot()?,
        };
        if self.pin_rejected.load(Ordering::Relaxed) {
            return Err(self.pin_rejected_error());
        }
        tracing::debug!(backend = "pkcs11", op = "open_session", "remote call");
        let session = self.module.ctx.open_rw_session(slot)?;
        match session.login_with_raw(UserType::User, &self.pin) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
            Err(CkError::Pkcs11(
                rv @ (RvError::PinIncorrect
                | RvError::PinLocked
                | RvError::PinExpired
                | RvError::PinInvalid),
                _,
            )) => {
                self.pin_rejected.store(true, Ordering::Relaxed);
                tracing::error!(token = %self.label, %rv, "the token rejected the PIN; no further login is tried until restart");
                Err(self.pin_rejected_error())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The token rejected the PIN; logins stop until the process restarts (to spare the token's
    /// retry counter).
    fn pin_rejected_error(&self) -> KeyStoreError {
        KeyStoreError::denied(format!(
            "the PKCS#11 token {:?} rejected the PIN; fix pin_file/pin_env and restart the plugin",
            self.label
        ))
    }

    /// An idle session from the pool, or a newly opened one.
    pub fn take(&self) -> Result<Session, KeyStoreError> {
        let idle = lock(&self.idle).pop();
        match idle {
            Some(session) => Ok(session),
            None => self.open_session(),
        }
    }

    /// Returns a healthy session to the pool.
    pub fn give_back(&self, session: Session) {
        lock(&self.idle).push(session);
    }

    /// Shared access to the module; hold it across a call (see [`Token::recover`]).
    pub fn gate(&self) -> RwLockReadGuard<'_, ()> {
        self.module.shared()
    }

    /// The process's module this token is on (shared with every other token on it).
    pub fn module(&self) -> &Arc<Module> {
        &self.module
    }

    /// After the token dropped a session or went away: forgets every pooled session and the
    /// slot, and re-initialises the module when the token is no longer listed. Must be called
    /// without holding [`Token::gate`].
    pub fn recover(&self) -> Result<(), KeyStoreError> {
        let _exclusive = self.module.exclusive();
        let stale = std::mem::take(&mut *lock(&self.idle));
        // Closing a session the token already dropped fails harmlessly; the handles are gone.
        for session in stale {
            let _ = session.close();
        }
        *lock(&self.slot) = None;
        match self.find_slot() {
            Err(error) if error.is_session_lost() => {}
            found => return found.map(drop),
        }
        {
            let mut last = lock(&self.module.last_reinit);
            if last.is_some_and(|at| at.elapsed() < REINIT_INTERVAL) {
                return Err(token_not_found(&self.label));
            }
            *last = Some(Instant::now());
        }
        tracing::warn!(token = %self.label, "PKCS#11 token not listed; re-initialising the module");
        // Nothing else is inside the module (the gate is held exclusively) and every session
        // of the old initialisation was closed above.
        let _ = self.module.ctx.clone().finalize();
        initialize(&self.module.ctx)?;
        self.find_slot().map(drop)
    }

    /// Runs `op` on a pooled session. When the token dropped the session or the login (or went
    /// away), recovers ([`Token::recover`]), runs `reopened` on a fresh session (to find key
    /// handles again: they may have changed) and runs `op` once more on it. A session whose
    /// operation failed otherwise goes back to the pool (PKCS#11 §5.2 leaves it usable, and
    /// keeping it keeps the login alive).
    pub fn with_session<T>(
        &self,
        op: impl Fn(&Session) -> Result<T, KeyStoreError>,
        reopened: impl FnOnce(&Session) -> Result<(), KeyStoreError>,
    ) -> Result<T, KeyStoreError> {
        let first = {
            let _shared = self.gate();
            self.take()
                .and_then(|session| self.run_and_give_back(session, &op))
        };
        match first {
            Err(error) if error.is_session_lost() => {
                tracing::warn!(token = %self.label, %error, "PKCS#11 session lost; reopening it and retrying once");
                self.recover()?;
                let _shared = self.gate();
                let session = self.take()?;
                self.run_and_give_back(session, |session| {
                    reopened(session)?;
                    op(session)
                })
            }
            other => other,
        }
    }

    /// Runs `op` on `session` and pools the session again unless the token dropped it.
    fn run_and_give_back<T>(
        &self,
        session: Session,
        op: impl FnOnce(&Session) -> Result<T, KeyStoreError>,
    ) -> Result<T, KeyStoreError> {
        let result = op(&session);
        if !matches!(&result, Err(error) if error.is_session_lost()) {
            self.give_back(session);
        }
        result
    }
}
