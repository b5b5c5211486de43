//! Producer ids for InitProducerId: handed out in blocks, each block's end
//! persisted before any id in it is used, so ids are never reused across restarts.

use std::sync::Mutex;

use crate::error::EngineError;

/// Hands out producer ids in blocks, persisting each block's end before using it,
/// so ids are never reused across restarts.
pub struct ProducerIdAllocator {
    path: std::path::PathBuf,
    state: Mutex<(u64, u64)>,
}

const PRODUCER_ID_BLOCK: u64 = 1000;

impl ProducerIdAllocator {
    pub(super) fn open(data_dir: &std::path::Path) -> Result<Self, EngineError> {
        let path = crate::meta::data_dir::producer_id_block_path(data_dir);
        let next = match std::fs::read_to_string(&path) {
            Ok(s) => s
                .trim()
                .parse::<u64>()
                .map_err(|e| EngineError::Storage(format!("{}: {e}", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e.into()),
        };
        Ok(ProducerIdAllocator {
            path,
            state: Mutex::new((next, next)),
        })
    }

    pub fn allocate(&self) -> Result<u64, EngineError> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.0 == st.1 {
            let end = st.1 + PRODUCER_ID_BLOCK;
            crate::log::index::write_file_atomically(&self.path, format!("{end}\n").as_bytes())?;
            st.1 = end;
        }
        st.0 += 1;
        Ok(st.0 - 1)
    }
}
