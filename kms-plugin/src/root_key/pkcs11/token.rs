//! The token: module loading, finding the slot by label, login, and a pool of open sessions.
//!
//! Everything here blocks; callers run it on `spawn_blocking` threads. A PKCS#11 login is
//! shared by every session of the process on one token, so a session is logged in when it is
//! opened (`CKR_USER_ALREADY_LOGGED_IN` counts as success), and closing the last one logs out.

use super::error::Pkcs11Error;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::RawAuthPin;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

/// An initialised PKCS#11 module and the token found by its label.
pub struct Token {
    ctx: Pkcs11,
    label: String,
    pin: RawAuthPin,
    slot: Mutex<Option<Slot>>,
    idle: Mutex<Vec<Session>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl Token {
    /// Loads `module`, initialises it (once per process) and checks that the token is present.
    pub fn open(module: &Path, label: &str, pin: RawAuthPin) -> Result<Self, Pkcs11Error> {
        let module_error = |reason: String| Pkcs11Error::Module { module: module.display().to_string(), reason };
        let ctx = Pkcs11::new(module).map_err(|e| module_error(e.to_string()))?;
        match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(e) => return Err(module_error(e.to_string())),
        }
        let token = Self {
            ctx,
            label: label.to_owned(),
            pin,
            slot: Mutex::new(None),
            idle: Mutex::new(Vec::new()),
        };
        token.find_slot()?;
        Ok(token)
    }

    /// The slot holding the token labelled `self.label`, searched afresh.
    fn find_slot(&self) -> Result<Slot, Pkcs11Error> {
        for slot in self.ctx.get_slots_with_token()? {
            let Ok(info) = self.ctx.get_token_info(slot) else { continue };
            if info.label().trim_end() == self.label {
                *lock(&self.slot) = Some(slot);
                return Ok(slot);
            }
        }
        Err(Pkcs11Error::TokenNotFound(self.label.clone()))
    }

    /// Opens a read-write session on the token and logs the user in.
    fn open_session(&self) -> Result<Session, Pkcs11Error> {
        let cached = *lock(&self.slot);
        let slot = match cached {
            Some(slot) => slot,
            None => self.find_slot()?,
        };
        tracing::debug!(target: "kms_plugin::root_key::remote", backend = "pkcs11", op = "open_session", "remote call");
        let session = self.ctx.open_rw_session(slot)?;
        match session.login_with_raw(UserType::User, &self.pin) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
            Err(e) => Err(e.into()),
        }
    }

    /// An idle session from the pool, or a newly opened one.
    pub fn take(&self) -> Result<Session, Pkcs11Error> {
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

    /// Forgets every pooled session and the slot, after the token dropped them.
    pub fn reset(&self) {
        let stale = std::mem::take(&mut *lock(&self.idle));
        // Closing a session the token already dropped fails harmlessly; the handles are gone.
        for session in stale {
            let _ = session.close();
        }
        *lock(&self.slot) = None;
    }
}
