//! The token: module loading, finding the slot by label, login, and a pool of open sessions.
//!
//! Everything here blocks; callers run it on `spawn_blocking` threads. A PKCS#11 login is
//! shared by every session of the process on one token, so a session is logged in when it is
//! opened (`CKR_USER_ALREADY_LOGGED_IN` counts as success), and closing the last one logs out.
//!
//! Many modules (SoftHSM2 among them, and the clients of several network HSMs) enumerate tokens
//! when they are initialised, so a token that went away and came back is only seen again after
//! C_Finalize and C_Initialize. [`Token::recover`] does that, at most once per
//! [`REINIT_INTERVAL`], while holding the gate exclusively: no other call is inside the module.

use super::error::Pkcs11Error;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::MechanismType;
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::RawAuthPin;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

/// Least time between two re-initialisations of the module.
pub const REINIT_INTERVAL: Duration = Duration::from_secs(1);

/// An initialised PKCS#11 module and the token found by its label.
///
/// A process should hold one `Token` per module while it serves: [`Token::recover`] finalises
/// the module for the whole process, and only this value's calls wait for it. (A second,
/// short-lived instance, as in `kms-plugin rotate` or tests, is fine while no recovery runs.)
pub struct Token {
    ctx: Pkcs11,
    label: String,
    pin: RawAuthPin,
    slot: Mutex<Option<Slot>>,
    idle: Mutex<Vec<Session>>,
    /// Held shared by every call into the module, exclusively while it is re-initialised.
    gate: RwLock<()>,
    last_reinit: Mutex<Option<Instant>>,
    /// Set once the token rejected the PIN: no further login is tried, so a wrong PIN cannot
    /// exhaust the token's retry counter and lock the user out.
    pin_rejected: AtomicBool,
}

fn initialize(ctx: &Pkcs11) -> Result<(), CkError> {
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(()),
        Err(e) => Err(e),
    }
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
        let module_error = |reason: String| Pkcs11Error::Module {
            module: module.display().to_string(),
            reason,
        };
        let ctx = Pkcs11::new(module).map_err(|e| module_error(e.to_string()))?;
        initialize(&ctx).map_err(|e| module_error(e.to_string()))?;
        let token = Self {
            ctx,
            label: label.to_owned(),
            pin,
            slot: Mutex::new(None),
            idle: Mutex::new(Vec::new()),
            gate: RwLock::new(()),
            last_reinit: Mutex::new(None),
            pin_rejected: AtomicBool::new(false),
        };
        token.find_slot()?;
        Ok(token)
    }

    /// The slot holding the token labelled `self.label`, searched afresh.
    fn find_slot(&self) -> Result<Slot, Pkcs11Error> {
        for slot in self.ctx.get_slots_with_token()? {
            let Ok(info) = self.ctx.get_token_info(slot) else {
                continue;
            };
            if info.label().trim_end() == self.label {
                *lock(&self.slot) = Some(slot);
                return Ok(slot);
            }
        }
        Err(Pkcs11Error::TokenNotFound(self.label.clone()))
    }

    /// Fails unless the token offers `mechanism` (named `name` in the error).
    pub fn require_mechanism(
        &self,
        mechanism: MechanismType,
        name: &'static str,
    ) -> Result<(), Pkcs11Error> {
        let cached = *lock(&self.slot);
        let slot = match cached {
            Some(slot) => slot,
            None => self.find_slot()?,
        };
        if self.ctx.get_mechanism_list(slot)?.contains(&mechanism) {
            Ok(())
        } else {
            Err(Pkcs11Error::MissingMechanism(name))
        }
    }

    /// Opens a read-write session on the token and logs the user in.
    fn open_session(&self) -> Result<Session, Pkcs11Error> {
        let cached = *lock(&self.slot);
        let slot = match cached {
            Some(slot) => slot,
            None => self.find_slot()?,
        };
        if self.pin_rejected.load(Ordering::Relaxed) {
            return Err(Pkcs11Error::PinRejected(self.label.clone()));
        }
        tracing::debug!(target: "kms_plugin::root_key::remote", backend = "pkcs11", op = "open_session", "remote call");
        let session = self.ctx.open_rw_session(slot)?;
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
                Err(Pkcs11Error::PinRejected(self.label.clone()))
            }
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

    /// Shared access to the module; hold it across a call (see [`Token::recover`]).
    pub fn gate(&self) -> RwLockReadGuard<'_, ()> {
        match self.gate.read() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// After the token dropped a session or went away: forgets every pooled session and the
    /// slot, and re-initialises the module when the token is no longer listed. Must be called
    /// without holding [`Token::gate`].
    pub fn recover(&self) -> Result<(), Pkcs11Error> {
        let _exclusive = match self.gate.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let stale = std::mem::take(&mut *lock(&self.idle));
        // Closing a session the token already dropped fails harmlessly; the handles are gone.
        for session in stale {
            let _ = session.close();
        }
        *lock(&self.slot) = None;
        match self.find_slot() {
            Err(Pkcs11Error::TokenNotFound(_)) => {}
            found => return found.map(drop),
        }
        {
            let mut last = lock(&self.last_reinit);
            if last.is_some_and(|at| at.elapsed() < REINIT_INTERVAL) {
                return Err(Pkcs11Error::TokenNotFound(self.label.clone()));
            }
            *last = Some(Instant::now());
        }
        tracing::warn!(token = %self.label, "PKCS#11 token not listed; re-initialising the module");
        // Nothing else is inside the module (the gate is held exclusively) and every session
        // of the old initialisation was closed above.
        let _ = self.ctx.clone().finalize();
        initialize(&self.ctx)?;
        self.find_slot().map(drop)
    }
}
