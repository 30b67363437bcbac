//! The root key id reported to kube-apiserver.

use std::fmt;
use std::sync::Arc;

/// Most bytes kube-apiserver accepts in a `key_id`.
pub(super) const MAX_KEY_ID_LEN: usize = 1024;

/// Names one root key version. Cheap to clone; compared byte for byte.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(Arc<str>);

impl KeyId {
    /// Wraps a key id string; `None` when empty or longer than kube-apiserver allows.
    pub fn new(id: &str) -> Option<Self> {
        if id.is_empty() || id.len() > MAX_KEY_ID_LEN {
            return None;
        }
        Some(Self(Arc::from(id)))
    }

    /// The key id as sent on the wire.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
