//! Components whose renewed certificates are on disk but not yet loaded
//! (`<cert dir>/.autopilot/pending-restarts.json`): recorded right after renewal and cleared
//! one component at a time, so a pass that stopped early (a failed restart, a crash) restarts
//! them on the next pass even though nothing is due any more.

use std::collections::BTreeSet;
use std::path::Path;

use crate::error::{Error, Result};
use crate::store;

/// Loads the set (absent: empty).
pub fn load(path: &Path) -> Result<BTreeSet<String>> {
    match store::read_optional(path)? {
        None => Ok(BTreeSet::new()),
        Some(t) => serde_json::from_str(&t).map_err(|e| Error::parse(path, e)),
    }
}

/// Saves the set atomically.
pub fn save(path: &Path, set: &BTreeSet<String>) -> Result<()> {
    let text = serde_json::to_string(set).map_err(|e| Error::parse(path, e))?;
    store::write_atomic(path, text.as_bytes(), store::MODE_SECRET)
}
