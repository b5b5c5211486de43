//! The metadata quorum's wire and disk codec (`cluster::codec`): whatever
//! bytes a peer sends — a Raft message between voters or an observer's
//! fetch, proposal or reply — decoding returns an error or a frame that
//! encodes back to exactly those bytes; it never panics, and no declared
//! count allocates more than the input could hold.
#![no_main]

use brook_engine::cluster::codec::{decode_frame, encode_frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    if let Ok(f) = decode_frame(input) {
        let again = encode_frame(&f);
        // Flags are bytes: any non-zero reads as true and re-encodes as 1.
        if again.len() != input.len() {
            panic!("re-encoded length {} != input {}", again.len(), input.len());
        }
        assert_eq!(decode_frame(&again).as_ref(), Ok(&f));
    }
});
