//! Fuzzes the object envelope decoder (header, buffer table, MessagePack body, out-of-band
//! buffers, refs): the bytes a reader finds in the store or gets from an owner. It must return
//! a value or an error, never panic or read out of bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    manta_worker::fuzzing::decode_envelope(data);
});
