//! The broker's own small metadata files (dynamic broker settings, SCRAM
//! credentials, ACLs): JSON, read whole, written atomically (temp file,
//! fsync, rename) before the change they hold is answered.

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::EngineError;

/// The value stored at `path`, or the default when there is no file yet.
pub fn load<T: DeserializeOwned + Default>(path: &Path) -> Result<T, EngineError> {
    match std::fs::read(path) {
        Ok(text) => serde_json::from_slice(&text)
            .map_err(|e| EngineError::Storage(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(e.into()),
    }
}

pub fn store<T: Serialize>(path: &Path, value: &T) -> Result<(), EngineError> {
    let text = serde_json::to_vec_pretty(value).map_err(|e| EngineError::Storage(e.to_string()))?;
    crate::log::index::write_file_atomically(path, &text)?;
    Ok(())
}
