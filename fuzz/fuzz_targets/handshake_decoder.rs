//! Fuzzes the handshake message decoder (hello, ack, join request and reply): it must never
//! panic, and any message it accepts must survive an encode/decode round trip unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use manta_transport::handshake::Handshake;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = Handshake::decode(data) {
        assert_eq!(Handshake::decode(&message.encode()), Ok(message));
    }
});
