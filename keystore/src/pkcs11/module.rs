//! One loaded PKCS#11 module per process, shared by every [`Token`](super::Token) on it.
//!
//! C_Initialize and C_Finalize act on the whole process. When the KMS root key and the JWT
//! signer use the same module, they must share its handle, the gate that keeps calls out while
//! it is re-initialised, and the re-initialisation throttle; otherwise the recovery of one
//! would finalise the library under the other's calls in flight. [`Module::load`] hands out
//! that one shared value per module path (the registry holds it weakly: the module is
//! finalised once its last user is gone).

use crate::KeyStoreError;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{
    Arc, Mutex, MutexGuard, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak,
};
use std::time::Instant;

/// A loaded, initialised PKCS#11 module.
pub struct Module {
    pub(super) ctx: Pkcs11,
    path: PathBuf,
    /// Held shared by every call into the module, exclusively while it is re-initialised.
    gate: RwLock<()>,
    pub(super) last_reinit: Mutex<Option<Instant>>,
}

/// Modules loaded by this process, by canonical path.
fn registry() -> &'static Mutex<HashMap<PathBuf, Weak<Module>>> {
    static REGISTRY: OnceLock<Mutex<HashMap<PathBuf, Weak<Module>>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// C_Initialize; a module another user of the library already initialised is fine.
pub(super) fn initialize(ctx: &Pkcs11) -> Result<(), CkError> {
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(()),
        Err(e) => Err(e),
    }
}

impl Module {
    /// The process's module at `path`, loading and initialising it if no one holds it. Blocks.
    pub fn load(path: &Path) -> Result<Arc<Self>, KeyStoreError> {
        let module_error = |reason: String| {
            KeyStoreError::configuration(format!(
                "cannot load PKCS#11 module {}: {reason}",
                path.display()
            ))
        };
        let key = path
            .canonicalize()
            .map_err(|e| module_error(e.to_string()))?;
        let mut modules = lock(registry());
        if let Some(module) = modules.get(&key).and_then(Weak::upgrade) {
            return Ok(module);
        }
        let ctx = Pkcs11::new(&key).map_err(|e| module_error(e.to_string()))?;
        initialize(&ctx).map_err(|e| module_error(e.to_string()))?;
        let module = Arc::new(Self {
            ctx,
            path: key.clone(),
            gate: RwLock::new(()),
            last_reinit: Mutex::new(None),
        });
        modules.retain(|_, weak| weak.strong_count() > 0);
        modules.insert(key, Arc::downgrade(&module));
        Ok(module)
    }

    /// The module's canonical path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Shared access: held across every call into the module.
    pub(super) fn shared(&self) -> RwLockReadGuard<'_, ()> {
        match self.gate.read() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Exclusive access: no other call of any user is inside the module.
    pub(super) fn exclusive(&self) -> RwLockWriteGuard<'_, ()> {
        match self.gate.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOFTHSM: &str = "/usr/lib/softhsm/libsofthsm2.so";

    #[test]
    fn one_module_per_path_while_held() {
        if !Path::new(SOFTHSM).exists() {
            panic!("SoftHSM2 is not installed at {SOFTHSM}");
        }
        let first = Module::load(Path::new(SOFTHSM)).expect("load");
        let second = Module::load(Path::new(SOFTHSM)).expect("load again");
        assert!(Arc::ptr_eq(&first, &second), "one handle per module");
        let weak = Arc::downgrade(&first);
        drop((first, second));
        assert!(weak.upgrade().is_none(), "released with its last user");
        let third = Module::load(Path::new(SOFTHSM)).expect("reload");
        assert_eq!(
            third.path(),
            Path::new(SOFTHSM).canonicalize().expect("canonical")
        );
    }
}
