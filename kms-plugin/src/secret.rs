//! Key material: fixed size, no `Clone`, no `Debug` that shows bytes, zeroized on drop.

use std::fmt;
use zeroize::Zeroizing;

/// Length in bytes of every AES-256 key this crate handles.
pub const AES_KEY_LEN: usize = 32;

/// An AES-256 key held in memory (a local KEK or a local root key version).
///
/// The bytes live on the heap so moves do not leave copies on the stack, and are zeroized when
/// the value is dropped. `Debug` prints only the type name.
pub struct AesKey(Box<Zeroizing<[u8; AES_KEY_LEN]>>);

impl AesKey {
    /// A fresh key from the operating system's CSPRNG.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut key = Self(Box::new(Zeroizing::new([0u8; AES_KEY_LEN])));
        getrandom::fill(&mut key.0[..])?;
        Ok(key)
    }

    /// Copies a key out of `bytes`; `None` unless exactly 32 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != AES_KEY_LEN {
            return None;
        }
        let mut key = Self(Box::new(Zeroizing::new([0u8; AES_KEY_LEN])));
        key.0[..].copy_from_slice(bytes);
        Some(key)
    }

    /// The raw key bytes, for handing to a cipher. Never log or persist them unwrapped.
    pub fn expose(&self) -> &[u8; AES_KEY_LEN] {
        &self.0
    }

    /// Constant-time equality, for self-tests that compare a round-tripped key.
    pub fn ct_eq(&self, other: &Self) -> bool {
        self.0
            .iter()
            .zip(other.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl fmt::Debug for AesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AesKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_bytes() {
        let key = AesKey::from_slice(&[0xAB; 32]).expect("32 bytes");
        let shown = format!("{key:?}");
        assert!(!shown.to_lowercase().contains("ab"), "{shown}");
    }

    #[test]
    fn from_slice_requires_exact_length() {
        assert!(AesKey::from_slice(&[0; 31]).is_none());
        assert!(AesKey::from_slice(&[0; 33]).is_none());
        let a = AesKey::from_slice(&[7; 32]).expect("32 bytes");
        let b = AesKey::from_slice(&[7; 32]).expect("32 bytes");
        let c = AesKey::generate().expect("rng");
        assert!(a.ct_eq(&b));
        assert!(!a.ct_eq(&c));
    }
}
