//! Fuzzes the frame decoder with arbitrary bytes delivered in arbitrary pieces: it must never
//! panic, never return more bytes than it was given, and any frame it accepts must re-encode to
//! a frame that decodes to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use manta_transport::frame::{encode, FrameDecoder};

const FRAME_BYTES_MAX: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let Some((&piece, bytes)) = data.split_first() else { return };
    let piece = usize::from(piece).max(1);
    let mut decoder = FrameDecoder::new(FRAME_BYTES_MAX);
    let mut consumed = 0usize;
    for chunk in bytes.chunks(piece) {
        decoder.push(chunk);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    consumed += frame.body.len();
                    assert!(consumed <= bytes.len());
                    let again =
                        encode(&frame.header, &frame.body, usize::MAX).expect("a decoded frame re-encodes");
                    let mut check = FrameDecoder::new(usize::MAX);
                    check.push(&again);
                    assert_eq!(check.next_frame().expect("re-encoded frames decode"), Some(frame));
                }
                Ok(None) => break,
                // A bad stream: the connection would be closed here.
                Err(_) => return,
            }
        }
    }
    let _ = decoder.finish();
});
