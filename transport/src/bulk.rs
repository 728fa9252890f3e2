//! Bulk transfers: a stream of their own per transfer, a header frame, then exactly the announced
//! number of raw bytes, with QUIC's per-stream flow control pacing the sender to the receiver.
//! The answer comes back as one response frame on the same stream.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::config::TransportConfig;
use crate::connection::{read_frame, response_frame, Dispatcher, Incoming, READ_CHUNK_BYTES};
use crate::error::CallError;
use crate::error::StreamError;
use crate::frame::{FrameDecoder, Header, RemoteError, RemoteErrorKind, Status};
use crate::id::NodeId;
use crate::local::{ReadHalf, WriteHalf};

/// The sending half of a bulk transfer.
pub struct BulkSender {
    send: WriteHalf,
    recv: ReadHalf,
    remaining: u64,
    config: Arc<TransportConfig>,
}

impl BulkSender {
    pub(crate) fn new(
        send: WriteHalf,
        recv: ReadHalf,
        body_bytes: u64,
        config: Arc<TransportConfig>,
    ) -> Self {
        BulkSender { send, recv, remaining: body_bytes, config }
    }

    /// Bytes still to be written.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// Writes the next part of the body; waits while the receiver's window is full.
    pub async fn write(&mut self, chunk: Bytes) -> Result<(), CallError> {
        let len = chunk.len() as u64;
        if len > self.remaining {
            return Err(CallError::Bulk(format!(
                "{len} bytes written with only {} announced left",
                self.remaining
            )));
        }
        self.send.write_chunk(chunk).await?;
        self.remaining -= len;
        Ok(())
    }

    /// After a write failed: the receiver's answer, if it gave one before reading the whole
    /// body (a handler that refuses a transfer answers at once and stops the body's stream).
    pub async fn early_answer(mut self) -> Result<Bytes, CallError> {
        self.send.reset();
        self.read_answer().await
    }

    async fn read_answer(&mut self) -> Result<Bytes, CallError> {
        let timeout = self.config.call_timeout;
        let mut decoder = FrameDecoder::new(self.config.frame_bytes_max);
        let frame = tokio::time::timeout(timeout, read_frame(&mut self.recv, &mut decoder))
            .await
            .map_err(|_| CallError::Timeout(timeout))??;
        match frame.header {
            Header::Response { status: Status::Ok, .. } => Ok(frame.body),
            Header::Response { status: Status::Err(error), .. } => Err(CallError::Remote(error)),
            _ => Err(CallError::ConnectionLost("the bulk answer is not a response frame".to_owned())),
        }
    }

    /// Ends the body and waits for the receiver's answer.
    pub async fn finish(mut self) -> Result<Bytes, CallError> {
        if self.remaining != 0 {
            self.send.reset();
            return Err(CallError::Bulk(format!(
                "finished with {} announced bytes unwritten",
                self.remaining
            )));
        }
        self.send.finish().await?;
        self.read_answer().await
    }
}

impl std::fmt::Debug for BulkSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BulkSender").field("remaining", &self.remaining).finish_non_exhaustive()
    }
}

/// The receiving half of a bulk transfer, handed to [`Dispatcher::dispatch_bulk`].
pub struct BulkBody {
    recv: ReadHalf,
    prefetched: Option<Bytes>,
    remaining: u64,
}

impl BulkBody {
    /// Bytes of the body not yet returned.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// The next part of the body, `None` once all announced bytes were returned. A stream that
    /// ends early or carries more than announced is an error.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, CallError> {
        if let Some(chunk) = self.prefetched.take() {
            return self.account(chunk).map(Some);
        }
        if self.remaining == 0 {
            return match self.recv.read_chunk(1).await {
                Ok(None) => Ok(None),
                Ok(Some(_)) => Err(CallError::Bulk("more bytes than announced".to_owned())),
                Err(error) => Err(error.into()),
            };
        }
        let max = usize::try_from(self.remaining).unwrap_or(usize::MAX).min(READ_CHUNK_BYTES);
        match self.recv.read_chunk(max).await {
            Ok(Some(chunk)) => self.account(chunk).map(Some),
            Ok(None) => Err(CallError::Bulk(format!("the stream ended {} bytes early", self.remaining))),
            Err(error) => Err(error.into()),
        }
    }

    fn account(&mut self, chunk: Bytes) -> Result<Bytes, CallError> {
        let len = chunk.len() as u64;
        if len > self.remaining {
            return Err(CallError::Bulk("more bytes than announced".to_owned()));
        }
        self.remaining -= len;
        Ok(chunk)
    }

    /// Reads the whole body into one buffer.
    pub async fn read_all(mut self) -> Result<Bytes, CallError> {
        let capacity =
            usize::try_from(self.remaining).map_err(|_| CallError::Bulk("body too large".to_owned()))?;
        let mut body = BytesMut::with_capacity(capacity);
        while let Some(chunk) = self.next_chunk().await? {
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    }
}

impl std::fmt::Debug for BulkBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BulkBody").field("remaining", &self.remaining).finish_non_exhaustive()
    }
}

/// Serves one bulk stream opened by `peer`.
pub(crate) async fn serve(
    peer: NodeId,
    mut send: WriteHalf,
    mut recv: ReadHalf,
    dispatcher: &Arc<dyn Dispatcher>,
    config: &TransportConfig,
) -> Result<(), StreamError> {
    let mut decoder = FrameDecoder::new(config.frame_bytes_max);
    let frame = tokio::time::timeout(config.handshake_timeout, read_frame(&mut recv, &mut decoder))
        .await
        .map_err(|_| StreamError::Timeout("bulk header"))??;
    let Header::Bulk { target, method, body_bytes } = frame.header else {
        return Err(StreamError::NotBulkHeader);
    };
    let outcome = if body_bytes > config.bulk_bytes_max {
        recv.stop();
        Err(RemoteError::new(
            RemoteErrorKind::Overloaded,
            format!("bulk body of {body_bytes} bytes exceeds the limit of {} bytes", config.bulk_bytes_max),
        ))
    } else {
        let prefetched = decoder.take_buffered();
        let body = BulkBody {
            recv,
            prefetched: if prefetched.is_empty() { None } else { Some(prefetched) },
            remaining: body_bytes,
        };
        let incoming = Incoming { peer, target, method, body: frame.body, expects_reply: true };
        dispatcher.dispatch_bulk(incoming, body).await
    };
    let answer = response_frame(0, outcome, config.frame_bytes_max);
    send.write_chunk(answer).await?;
    send.finish().await?;
    // Wait for the peer to read the answer before the stream is dropped.
    send.stopped().await;
    Ok(())
}
