//! How values become object bytes and back: MessagePack with out-of-band buffers (the idea of
//! pickle protocol 5, which Ray uses for numpy arrays).
//!
//! An object's bytes are an *envelope*:
//!
//! ```text
//! version u8 | 0 u8 | buffer count u16 | body length u32 | (offset u64, length u64) per buffer
//! | MessagePack body | padding to 64 | buffer 0 (64-aligned) | padding | buffer 1 ...
//! ```
//!
//! A [`Buffer`](crate::Buffer) inside a value is not copied into the MessagePack body: the body
//! holds its index, and its bytes follow, aligned, so that a reader of the object store gets a
//! `&[f32]` straight out of shared memory. Encoding writes each buffer once, into its final place.
//!
//! The same pass collects the [`ObjectRef`](crate::ObjectRef)s inside a value (the owner must
//! know which objects an object keeps alive), and decoding hands back the refs it created, so
//! that the caller registers this process as their borrower before the thing that carried them
//! is released (see ARCHITECTURE.md, "Ownership").

use std::cell::RefCell;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::objects::RefWire;

const VERSION: u8 = 1;
const FIXED_HEADER: usize = 8;
const ALIGN: usize = 64;

/// A value did not encode or decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// serde failed while encoding.
    #[error("does not encode: {0}")]
    Encode(String),
    /// The bytes are not a value of the expected type.
    #[error("does not decode: {0}")]
    Decode(String),
    /// The bytes are not an envelope of this version.
    #[error("not a Manta object: {0}")]
    Envelope(String),
}

/// A value ready to be written: everything but the buffers, plus the buffers.
#[derive(Debug)]
pub(crate) struct Encoded {
    /// Header, buffer table, body and padding.
    head: Vec<u8>,
    buffers: Vec<Bytes>,
    /// The refs inside the value.
    pub(crate) refs: Vec<RefWire>,
    len: usize,
}

impl Encoded {
    /// Total bytes of the envelope.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Writes the envelope into `out`, which is exactly [`Encoded::len`] bytes.
    pub(crate) fn write_to(&self, out: &mut [u8]) {
        assert_eq!(out.len(), self.len, "an envelope is written into exactly its length");
        out[..self.head.len()].copy_from_slice(&self.head);
        let mut at = self.head.len();
        for buffer in &self.buffers {
            let start = at.next_multiple_of(ALIGN);
            out[at..start].fill(0);
            copy_large(&mut out[start..start + buffer.len()], buffer);
            at = start + buffer.len();
        }
    }

    /// The envelope as one vector.
    pub(crate) fn to_vec(&self) -> Vec<u8> {
        let mut out = vec![0; self.len];
        self.write_to(&mut out);
        out
    }
}

/// Copies below this size stay on the calling thread (a thread start costs ~20 µs; 8 MiB takes
/// ~1.5 ms at one core's 5.3 GB/s).
const PARALLEL_COPY_BYTES_MIN: usize = 8 << 20;

/// Most threads one copy uses: memory bandwidth, not cores, is the limit past a few.
const COPY_THREADS_MAX: usize = 4;

/// `dst.copy_from_slice(src)`, split over several threads for large copies. One core does not
/// saturate memory bandwidth: on the 2-vCPU dev machine an 800 MiB copy into touched memory runs
/// at 5.3 GB/s on one thread and 10.5 GB/s on two (`/tmp` experiment recorded in ARCHITECTURE.md);
/// Ray's object store copies large puts with several threads for the same reason.
pub(crate) fn copy_large(dst: &mut [u8], src: &[u8]) {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let cores = *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, usize::from));
    let threads = cores.min(COPY_THREADS_MAX).min(src.len() / (PARALLEL_COPY_BYTES_MIN / 2)).max(1);
    if threads == 1 || src.len() < PARALLEL_COPY_BYTES_MIN {
        dst.copy_from_slice(src);
        return;
    }
    // Parts are whole multiples of 4 KiB, so threads rarely share a page. Each thread takes
    // parts until none is left, so a thread that cannot be started only costs speed.
    let part = src.len().div_ceil(threads).next_multiple_of(4096);
    let parts = parking_lot::Mutex::new(dst.chunks_mut(part).zip(src.chunks(part)).collect::<Vec<_>>());
    let work = || loop {
        // Taken in a statement of its own: a guard in a `while let` would live through the copy.
        let next = parts.lock().pop();
        let Some((to, from)) = next else { break };
        to.copy_from_slice(from);
    };
    std::thread::scope(|scope| {
        for _ in 1..threads {
            let _ = std::thread::Builder::new().name("manta-copy".to_owned()).spawn_scoped(scope, work);
        }
        work();
    });
}

#[derive(Default)]
struct EncodeContext {
    buffers: Vec<Bytes>,
    refs: Vec<RefWire>,
}

pub(crate) struct DecodeContext {
    source: Bytes,
    table: Vec<(usize, usize)>,
    /// Refs created while decoding.
    pub(crate) refs: Vec<crate::objects::RawRef>,
}

thread_local! {
    static ENCODING: RefCell<Vec<EncodeContext>> = const { RefCell::new(Vec::new()) };
    static DECODING: RefCell<Vec<DecodeContext>> = const { RefCell::new(Vec::new()) };
}

/// Encodes `value` into an envelope.
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Encoded, CodecError> {
    ENCODING.with(|stack| stack.borrow_mut().push(EncodeContext::default()));
    let body = rmp_serde::to_vec(value);
    let context = ENCODING.with(|stack| stack.borrow_mut().pop()).expect("pushed above");
    let body = body.map_err(|error| CodecError::Encode(error.to_string()))?;
    let count = u16::try_from(context.buffers.len())
        .map_err(|_| CodecError::Encode("more than 65535 buffers in one value".into()))?;
    let body_len = u32::try_from(body.len()).map_err(|_| CodecError::Encode("a body over 4 GiB".into()))?;
    let table_end = FIXED_HEADER + 16 * context.buffers.len();
    let mut head = Vec::with_capacity(table_end + body.len() + ALIGN);
    head.push(VERSION);
    head.push(0);
    head.extend_from_slice(&count.to_le_bytes());
    head.extend_from_slice(&body_len.to_le_bytes());
    let mut at = table_end + body.len();
    for buffer in &context.buffers {
        let start = at.next_multiple_of(ALIGN);
        head.extend_from_slice(&(start as u64).to_le_bytes());
        head.extend_from_slice(&(buffer.len() as u64).to_le_bytes());
        at = start + buffer.len();
    }
    head.extend_from_slice(&body);
    Ok(Encoded { head, buffers: context.buffers, refs: context.refs, len: at })
}

/// Decodes an envelope; returns the value and the refs that decoding created.
pub(crate) fn decode<T: DeserializeOwned>(
    source: Bytes,
) -> Result<(T, Vec<crate::objects::RawRef>), CodecError> {
    let envelope = |why: &str| CodecError::Envelope(why.to_owned());
    if source.len() < FIXED_HEADER || source[0] != VERSION {
        return Err(envelope("bad header"));
    }
    let count = usize::from(u16::from_le_bytes([source[2], source[3]]));
    let body_len = u32::from_le_bytes([source[4], source[5], source[6], source[7]]) as usize;
    let table_end = FIXED_HEADER + 16 * count;
    let body_end = table_end.checked_add(body_len).ok_or_else(|| envelope("body length"))?;
    if body_end > source.len() {
        return Err(envelope("truncated"));
    }
    let mut table = Vec::with_capacity(count);
    for index in 0..count {
        let entry = &source[FIXED_HEADER + 16 * index..FIXED_HEADER + 16 * index + 16];
        let offset = u64::from_le_bytes(entry[..8].try_into().expect("8 bytes"));
        let len = u64::from_le_bytes(entry[8..].try_into().expect("8 bytes"));
        let (Ok(offset), Ok(len)) = (usize::try_from(offset), usize::try_from(len)) else {
            return Err(envelope("buffer out of range"));
        };
        if offset < body_end || offset.checked_add(len).is_none_or(|end| end > source.len()) {
            return Err(envelope("buffer out of range"));
        }
        table.push((offset, len));
    }
    let body = source.slice(table_end..body_end);
    DECODING.with(|stack| stack.borrow_mut().push(DecodeContext { source, table, refs: Vec::new() }));
    let value = rmp_serde::from_slice::<T>(&body);
    let context = DECODING.with(|stack| stack.borrow_mut().pop()).expect("pushed above");
    let value = value.map_err(|error| CodecError::Decode(error.to_string()))?;
    Ok((value, context.refs))
}

/// Adds `buffer` to the value being encoded; `None` outside [`encode`].
pub(crate) fn push_buffer(buffer: Bytes) -> Option<u32> {
    ENCODING.with(|stack| {
        let mut stack = stack.borrow_mut();
        let context = stack.last_mut()?;
        context.buffers.push(buffer);
        Some((context.buffers.len() - 1) as u32)
    })
}

/// Records a ref inside the value being encoded; `false` outside [`encode`].
pub(crate) fn push_ref(reference: RefWire) -> bool {
    ENCODING.with(|stack| match stack.borrow_mut().last_mut() {
        Some(context) => {
            context.refs.push(reference);
            true
        }
        None => false,
    })
}

/// Buffer `index` of the envelope being decoded, zero-copy; `None` outside [`decode`],
/// `Some(None)` for an index out of range.
pub(crate) fn buffer(index: u32) -> Option<Option<Bytes>> {
    DECODING.with(|stack| {
        let stack = stack.borrow();
        let context = stack.last()?;
        Some(
            context
                .table
                .get(index as usize)
                .map(|(offset, len)| context.source.slice(*offset..*offset + *len)),
        )
    })
}

/// Whether a value is being decoded on this thread.
pub(crate) fn decoding() -> bool {
    DECODING.with(|stack| !stack.borrow().is_empty())
}

/// Hands a ref created while decoding to the decoder's caller.
pub(crate) fn record_decoded_ref(reference: crate::objects::RawRef) {
    DECODING.with(|stack| {
        if let Some(context) = stack.borrow_mut().last_mut() {
            context.refs.push(reference);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Buffer;

    #[test]
    fn large_copies_split_over_threads_copy_every_byte() {
        for len in [PARALLEL_COPY_BYTES_MIN - 1, PARALLEL_COPY_BYTES_MIN, 3 * PARALLEL_COPY_BYTES_MIN + 4097]
        {
            let src: Vec<u8> = (0..len).map(|index| (index % 251) as u8).collect();
            let mut dst = vec![0u8; len];
            copy_large(&mut dst, &src);
            assert!(dst == src, "a copy of {len} bytes differs");
        }
    }

    #[test]
    fn values_round_trip_with_buffers_out_of_band_and_aligned() {
        let value = (
            7u32,
            Buffer::<f32>::from(vec![1.0f32, 2.0, 3.5]),
            "text".to_owned(),
            Buffer::from(vec![9u8; 100]),
        );
        let encoded = encode(&value).unwrap();
        let bytes = Bytes::from(encoded.to_vec());
        // Copy into 64-aligned memory, as the object store's blocks are.
        let mut aligned = Vec::<u64>::with_capacity(bytes.len() / 8 + 16);
        let start = aligned.as_mut_ptr() as usize;
        let aligned_bytes = {
            aligned.resize(bytes.len() / 8 + 16, 0);
            let offset = start.next_multiple_of(64) - start;
            // SAFETY: the vector holds enough bytes past `offset` for the envelope.
            let slice = unsafe {
                std::slice::from_raw_parts_mut((aligned.as_mut_ptr() as *mut u8).add(offset), bytes.len())
            };
            slice.copy_from_slice(&bytes);
            Bytes::copy_from_slice(slice)
        };
        let (decoded, refs): ((u32, Buffer<f32>, String, Buffer<u8>), _) = decode(aligned_bytes).unwrap();
        assert!(refs.is_empty());
        assert_eq!(decoded.0, 7);
        assert_eq!(&decoded.1[..], &[1.0, 2.0, 3.5]);
        assert_eq!(decoded.2, "text");
        assert_eq!(&decoded.3[..], &[9u8; 100][..]);
        drop(aligned);
    }

    #[test]
    fn bad_envelopes_are_errors_not_panics() {
        for bytes in [vec![], vec![9; 8], vec![1, 0, 1, 0, 0, 0, 0, 0], vec![1, 0, 0, 0, 255, 255, 255, 255]]
        {
            assert!(decode::<u32>(Bytes::from(bytes)).is_err());
        }
        let encoded = encode(&Buffer::from(vec![1u8; 10])).unwrap().to_vec();
        assert!(decode::<Buffer<u8>>(Bytes::from(encoded[..encoded.len() - 1].to_vec())).is_err());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(0u8..=255, 0..200)) {
            let _ = decode::<(u32, Buffer<u8>, String)>(Bytes::from(bytes));
        }
    }
}
