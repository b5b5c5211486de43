//! Random identifiers: topic ids, group member ids, the cluster id. A leaf
//! module, so that the catalog, the groups and the data directory can all use
//! it without importing each other.

use std::hash::{BuildHasher, Hasher};

/// A random version-4 UUID as 32 lowercase hex digits (the cluster id, a log
/// directory's identity).
pub fn random_hex_id() -> String {
    random_uuid().iter().map(|b| format!("{b:02x}")).collect()
}

/// A random version-4 UUID, as 16 bytes.
pub fn random_uuid() -> [u8; 16] {
    let mut id = [0u8; 16];
    for chunk in id.chunks_mut(8) {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
        );
        chunk.copy_from_slice(&h.finish().to_le_bytes());
    }
    id[6] = (id[6] & 0x0f) | 0x40;
    id[8] = (id[8] & 0x3f) | 0x80;
    id
}
