//! The metadata quorum's wire and disk codec (`cluster::codec`): whatever
//! bytes a peer sends, decoding returns an error or a message that encodes
//! back to exactly those bytes — it never panics, and no declared count
//! allocates more than the input could hold.
#![no_main]

use brook_engine::cluster::codec::{decode_message, encode_message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    if let Ok(m) = decode_message(input) {
        let again = encode_message(&m);
        // Flags are bytes: any non-zero reads as true and re-encodes as 1.
        if again.len() != input.len() {
            panic!("re-encoded length {} != input {}", again.len(), input.len());
        }
        assert_eq!(decode_message(&again).as_ref(), Ok(&m));
    }
});
