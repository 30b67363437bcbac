//! Reading the service-account trust anchor (`sa.pub`): the public keys it publishes, in order.
//! (CA bundles are read with [`crate::inspect::parse_bundle`].)

use std::path::Path;

use crate::error::{Error, Result};

/// PEM label of a DER SubjectPublicKeyInfo.
const PUBLIC_KEY_LABEL: &str = "PUBLIC KEY";

/// The DER SubjectPublicKeyInfos of the `PUBLIC KEY` blocks of a PEM text, in file order; other
/// blocks are skipped. A malformed PEM block is an error naming `origin`.
pub(crate) fn public_keys(text: &str, origin: &Path) -> Result<Vec<Vec<u8>>> {
    let blocks = pem::parse_many(text).map_err(|e| Error::parse(origin, e))?;
    Ok(blocks
        .into_iter()
        .filter(|b| b.tag() == PUBLIC_KEY_LABEL)
        .map(pem::Pem::into_contents)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_keys_in_order_other_blocks_skipped() -> Result<()> {
        let text = "-----BEGIN PUBLIC KEY-----\nAQID\n-----END PUBLIC KEY-----\n\
                    -----BEGIN CERTIFICATE-----\nBAUG\n-----END CERTIFICATE-----\n\
                    -----BEGIN PUBLIC KEY-----\nBwgJ\n-----END PUBLIC KEY-----\n";
        let origin = Path::new("sa.pub");
        assert_eq!(public_keys(text, origin)?, [vec![1, 2, 3], vec![7, 8, 9]]);
        assert!(public_keys("", origin)?.is_empty());
        let damaged = "-----BEGIN PUBLIC KEY-----\n%%%\n-----END PUBLIC KEY-----\n";
        assert!(matches!(
            public_keys(damaged, origin),
            Err(Error::Parse { .. })
        ));
        Ok(())
    }
}
