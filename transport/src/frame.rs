//! Framing: every message on a stream is a length-prefixed frame with a versioned header.
//!
//! ```text
//! frame := frame_len:u32be | version:u8 | header_len:u16be | header | body
//! ```
//! `frame_len` counts the bytes after itself. The header is MessagePack (small, self-describing,
//! versioned by the byte before it); the body is raw bytes, never re-encoded, so bulk payloads
//! cost no MessagePack work. A frame over `frame_bytes_max`, an unknown version or a header that
//! does not decode is a [`FrameError`]: the connection that sent it is closed, nothing else.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

/// The version byte of every frame this build writes and the only one it reads.
pub const PROTOCOL_VERSION: u8 = 1;

/// Bytes before the header: length, version, header length.
const PREFIX_BYTES: usize = 4 + 1 + 2;

/// The routing and correlation part of a frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Header {
    /// A handshake message (hello, ack, join); the body is a [`crate::handshake::Handshake`].
    Handshake,
    /// A call that wants an answer: `call_id` comes back in the matching [`Header::Response`].
    Request {
        /// Correlates the response with this request on this connection.
        call_id: u64,
        /// Who handles it on the receiving node (an actor's registered name).
        target: String,
        /// Which message type the body holds (a stable id).
        method: u32,
    },
    /// A one-way message: no response is sent, errors are only logged by the receiver.
    Notify {
        /// Who handles it on the receiving node.
        target: String,
        /// Which message type the body holds.
        method: u32,
    },
    /// The answer to a [`Header::Request`].
    Response {
        /// The request's `call_id`.
        call_id: u64,
        /// Success (the body is the reply) or why not (the body is empty).
        status: Status,
    },
    /// The first frame of a bulk stream: `body_bytes` raw bytes follow the frame on the stream.
    Bulk {
        /// Who handles it on the receiving node.
        target: String,
        /// Which message type the frame's body (metadata) holds.
        method: u32,
        /// Exact number of raw bytes that follow this frame.
        body_bytes: u64,
    },
}

/// Outcome of a request, as carried in a [`Header::Response`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// The handler answered; the body is its reply.
    Ok,
    /// The call failed on the remote side.
    Err(RemoteError),
}

/// A failure reported by the remote side of a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct RemoteError {
    /// What kind of failure, for callers that branch on it.
    pub kind: RemoteErrorKind,
    /// A human-readable explanation.
    pub message: String,
}

impl RemoteError {
    /// Builds a remote error.
    pub fn new(kind: RemoteErrorKind, message: impl Into<String>) -> Self {
        RemoteError { kind, message: message.into() }
    }
}

/// The kinds of remote failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RemoteErrorKind {
    /// No actor or service is registered under the target name.
    NoSuchTarget,
    /// The target exists but does not handle this message id.
    UnknownMethod,
    /// The body did not decode as the message type the id names.
    BadMessage,
    /// The handler's actor stopped or crashed while the call was in flight.
    ActorDied,
    /// The handler's mailbox or the node is full; retry later.
    Overloaded,
    /// The handler ran and reported a failure.
    Handler,
    /// Something unexpected went wrong on the remote node.
    Internal,
}

/// A decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Routing and correlation.
    pub header: Header,
    /// The payload, raw.
    pub body: Bytes,
}

/// A frame could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The frame is larger than the configured maximum.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Its length.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// The version byte is not [`PROTOCOL_VERSION`].
    #[error("unsupported frame version {got} (this build speaks {PROTOCOL_VERSION})")]
    Version {
        /// The version byte received.
        got: u8,
    },
    /// The lengths inside the frame contradict each other.
    #[error("malformed frame: {0}")]
    Malformed(&'static str),
    /// The header bytes are not a valid header.
    #[error("frame header does not decode: {0}")]
    Header(String),
    /// The stream ended in the middle of a frame.
    #[error("the stream ended inside a frame ({buffered} bytes buffered)")]
    Truncated {
        /// Bytes of the partial frame.
        buffered: usize,
    },
}

/// Encodes one frame. Fails only when the frame would exceed `frame_bytes_max`.
pub fn encode(header: &Header, body: &[u8], frame_bytes_max: usize) -> Result<Bytes, FrameError> {
    let mut out = BytesMut::with_capacity(PREFIX_BYTES + 32 + body.len());
    out.put_bytes(0, PREFIX_BYTES);
    // Writing into a BytesMut cannot fail, and every Header variant is serialisable.
    rmp_serde::encode::write(&mut (&mut out).writer(), header).expect("header encodes into memory");
    let header_len = out.len() - PREFIX_BYTES;
    let header_len_u16 = u16::try_from(header_len)
        .map_err(|_| FrameError::TooLarge { len: header_len as u64, max: usize::from(u16::MAX) })?;
    out.extend_from_slice(body);
    let frame_len = out.len() - 4;
    if frame_len > frame_bytes_max {
        return Err(FrameError::TooLarge { len: frame_len as u64, max: frame_bytes_max });
    }
    let frame_len = u32::try_from(frame_len)
        .map_err(|_| FrameError::TooLarge { len: frame_len as u64, max: u32::MAX as usize })?;
    out[0..4].copy_from_slice(&frame_len.to_be_bytes());
    out[4] = PROTOCOL_VERSION;
    out[5..7].copy_from_slice(&header_len_u16.to_be_bytes());
    Ok(out.freeze())
}

/// Incremental decoder: feed it bytes as they arrive, in chunks of any size, and take out whole
/// frames. It never buffers more than one frame beyond `frame_bytes_max`.
#[derive(Debug)]
pub struct FrameDecoder {
    buffer: BytesMut,
    frame_bytes_max: usize,
}

impl FrameDecoder {
    /// A decoder that refuses frames over `frame_bytes_max` bytes.
    pub fn new(frame_bytes_max: usize) -> Self {
        FrameDecoder { buffer: BytesMut::new(), frame_bytes_max }
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// Bytes received but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// The next whole frame, `Ok(None)` when more bytes are needed, or the error that makes the
    /// stream unusable. The length is checked before the frame's bytes are awaited, so an
    /// oversized frame is refused at once rather than buffered.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if self.buffer.len() < 4 {
            return Ok(None);
        }
        let frame_len =
            u32::from_be_bytes([self.buffer[0], self.buffer[1], self.buffer[2], self.buffer[3]]) as usize;
        if frame_len > self.frame_bytes_max {
            return Err(FrameError::TooLarge { len: frame_len as u64, max: self.frame_bytes_max });
        }
        if frame_len < PREFIX_BYTES - 4 {
            return Err(FrameError::Malformed("frame shorter than its fixed header"));
        }
        if self.buffer.len() >= 5 && self.buffer[4] != PROTOCOL_VERSION {
            return Err(FrameError::Version { got: self.buffer[4] });
        }
        if self.buffer.len() < 4 + frame_len {
            return Ok(None);
        }
        let mut frame = self.buffer.split_to(4 + frame_len);
        frame.advance(5);
        let header_len = usize::from(frame.get_u16());
        if header_len > frame.len() {
            return Err(FrameError::Malformed("header length exceeds the frame"));
        }
        let header_bytes = frame.split_to(header_len);
        let header: Header =
            rmp_serde::from_slice(&header_bytes).map_err(|error| FrameError::Header(error.to_string()))?;
        Ok(Some(Frame { header, body: frame.freeze() }))
    }

    /// Takes the bytes buffered past the last whole frame (the start of a raw body).
    pub(crate) fn take_buffered(&mut self) -> Bytes {
        self.buffer.split().freeze()
    }

    /// Call at end of stream: an error if a partial frame is left over.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.buffer.is_empty() {
            Ok(())
        } else {
            Err(FrameError::Truncated { buffered: self.buffer.len() })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAX: usize = 1 << 20;

    fn any_error_kind() -> impl Strategy<Value = RemoteErrorKind> {
        prop_oneof![
            Just(RemoteErrorKind::NoSuchTarget),
            Just(RemoteErrorKind::UnknownMethod),
            Just(RemoteErrorKind::BadMessage),
            Just(RemoteErrorKind::ActorDied),
            Just(RemoteErrorKind::Overloaded),
            Just(RemoteErrorKind::Handler),
            Just(RemoteErrorKind::Internal),
        ]
    }

    pub(crate) fn any_header() -> impl Strategy<Value = Header> {
        prop_oneof![
            Just(Header::Handshake),
            (any::<u64>(), ".{0,40}", any::<u32>()).prop_map(|(call_id, target, method)| Header::Request {
                call_id,
                target,
                method
            }),
            (".{0,40}", any::<u32>()).prop_map(|(target, method)| Header::Notify { target, method }),
            any::<u64>().prop_map(|call_id| Header::Response { call_id, status: Status::Ok }),
            (any::<u64>(), any_error_kind(), ".{0,80}").prop_map(|(call_id, kind, message)| {
                Header::Response { call_id, status: Status::Err(RemoteError { kind, message }) }
            }),
            (".{0,40}", any::<u32>(), any::<u64>()).prop_map(|(target, method, body_bytes)| Header::Bulk {
                target,
                method,
                body_bytes
            }),
        ]
    }

    fn any_frame() -> impl Strategy<Value = Frame> {
        (any_header(), proptest::collection::vec(any::<u8>(), 0..2048))
            .prop_map(|(header, body)| Frame { header, body: Bytes::from(body) })
    }

    proptest! {
        #[test]
        fn frames_survive_any_split_and_concatenation(
            frames in proptest::collection::vec(any_frame(), 1..8),
            cuts in proptest::collection::vec(1usize..300, 1..40),
        ) {
            let mut wire = Vec::new();
            for frame in &frames {
                wire.extend_from_slice(&encode(&frame.header, &frame.body, MAX).unwrap());
            }
            let mut decoder = FrameDecoder::new(MAX);
            let mut decoded = Vec::new();
            let mut rest = &wire[..];
            let mut cut = cuts.iter().cycle();
            while !rest.is_empty() {
                let take = (*cut.next().unwrap()).min(rest.len());
                decoder.push(&rest[..take]);
                rest = &rest[take..];
                while let Some(frame) = decoder.next_frame().unwrap() {
                    decoded.push(frame);
                }
            }
            prop_assert!(decoder.finish().is_ok());
            prop_assert_eq!(decoded, frames);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut decoder = FrameDecoder::new(256);
            decoder.push(&bytes);
            while let Ok(Some(_)) = decoder.next_frame() {}
        }
    }

    #[test]
    fn oversized_frame_is_refused_before_its_body_arrives() {
        let frame = encode(&Header::Notify { target: "a".into(), method: 1 }, &[0u8; 600], MAX).unwrap();
        let mut decoder = FrameDecoder::new(512);
        decoder.push(&frame[..8]);
        assert!(matches!(decoder.next_frame(), Err(FrameError::TooLarge { max: 512, .. })));
        assert!(matches!(
            encode(&Header::Handshake, &[0u8; 600], 512),
            Err(FrameError::TooLarge { max: 512, .. })
        ));
    }

    #[test]
    fn bad_version_and_bad_header_are_errors() {
        let mut frame = encode(&Header::Handshake, b"x", MAX).unwrap().to_vec();
        frame[4] = 9;
        let mut decoder = FrameDecoder::new(MAX);
        decoder.push(&frame);
        assert_eq!(decoder.next_frame(), Err(FrameError::Version { got: 9 }));

        // A header length pointing past the end of the frame.
        let mut decoder = FrameDecoder::new(MAX);
        decoder.push(&[0, 0, 0, 4, PROTOCOL_VERSION, 0, 200, 0]);
        assert!(matches!(decoder.next_frame(), Err(FrameError::Malformed(_))));

        // A header that is not MessagePack of a Header.
        let mut decoder = FrameDecoder::new(MAX);
        decoder.push(&[0, 0, 0, 5, PROTOCOL_VERSION, 0, 2, 0xc1, 0xc1]);
        assert!(matches!(decoder.next_frame(), Err(FrameError::Header(_))));

        // Truncated.
        let mut decoder = FrameDecoder::new(MAX);
        decoder.push(&[0, 0, 0, 50, PROTOCOL_VERSION]);
        assert_eq!(decoder.next_frame(), Ok(None));
        assert_eq!(decoder.finish(), Err(FrameError::Truncated { buffered: 5 }));
    }

    #[test]
    fn bodies_are_raw_bytes() {
        let body = vec![7u8; 1000];
        let frame = encode(&Header::Notify { target: "t".into(), method: 3 }, &body, MAX).unwrap();
        assert!(frame.len() < body.len() + 32, "body must not be re-encoded: {} bytes", frame.len());
    }
}
