//! Bulk transfers on the bus: a message type as a transfer's metadata, its raw body on a stream
//! of its own (QUIC's flow control pacing the sender), and the handler's typed answer. What the
//! object manager moves objects between nodes with; small messages keep using asks.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use manta_transport::{BulkBody, BulkSender, DispatchFuture, Incoming, NodeId, RemoteError, RemoteErrorKind};

use crate::error::AskError;
use crate::wire::{self, WireMessage};

/// A bulk handler as the registry keeps it.
pub(crate) type BulkRoute = Arc<dyn Fn(Incoming, BulkBody) -> DispatchFuture + Send + Sync>;

/// Wraps a typed handler of transfers described by `M` into a route.
pub(crate) fn route<M, F, Fut>(handler: F) -> BulkRoute
where
    M: WireMessage,
    F: Fn(NodeId, M, BulkBody) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = M::Result> + Send + 'static,
{
    Arc::new(move |incoming: Incoming, body: BulkBody| -> DispatchFuture {
        if incoming.method != M::ID {
            let error = RemoteError::new(
                RemoteErrorKind::UnknownMethod,
                format!(
                    "{} takes bulk transfers of message {} only, not {}",
                    incoming.target,
                    M::ID,
                    incoming.method
                ),
            );
            return Box::pin(std::future::ready(Err(error)));
        }
        let meta: M = match wire::decode(&incoming.body) {
            Ok(meta) => meta,
            Err(error) => {
                let error = RemoteError::new(RemoteErrorKind::BadMessage, error.to_string());
                return Box::pin(std::future::ready(Err(error)));
            }
        };
        let answer = handler(incoming.peer, meta, body);
        Box::pin(async move { wire::encode(&answer.await).map_err(|error| error.to_remote()) })
    })
}

/// An open bulk transfer to a handler of `M`: write exactly the announced bytes, then
/// [`finish`](OutgoingBulk::finish) for the handler's answer.
pub struct OutgoingBulk<M: WireMessage> {
    sender: BulkSender,
    target: String,
    _meta: std::marker::PhantomData<fn() -> M>,
}

impl<M: WireMessage> OutgoingBulk<M> {
    /// Opens a transfer of `len` bytes described by `meta` to `target` on the node at `node`.
    pub(crate) async fn open(
        transport: &manta_transport::Transport,
        node: SocketAddr,
        target: &str,
        meta: &M,
        len: u64,
    ) -> Result<Self, AskError> {
        let failed = |error| AskError::from_call(error, &node.to_string(), target);
        let connection = transport.connect(node).await.map_err(AskError::Unreachable)?;
        let meta = wire::encode(meta)?;
        let sender = connection.open_bulk(target, M::ID, &meta, len).await.map_err(failed)?;
        Ok(OutgoingBulk { sender, target: target.to_owned(), _meta: std::marker::PhantomData })
    }

    /// Bytes still to write.
    pub fn remaining(&self) -> u64 {
        self.sender.remaining()
    }

    /// Writes the next part of the body; waits while the receiver's window is full.
    pub fn write(
        &mut self,
        chunk: bytes::Bytes,
    ) -> Pin<Box<dyn Future<Output = Result<(), AskError>> + Send + '_>> {
        Box::pin(async move {
            let target = self.target.clone();
            self.sender
                .write(chunk)
                .await
                .map_err(|error| AskError::from_call(error, "the bulk peer", &target))
        })
    }

    /// After a [`write`](OutgoingBulk::write) failed: the handler's answer, if it gave one
    /// before reading the whole body (a handler that refuses a transfer answers at once).
    pub async fn early_answer(self) -> Result<M::Result, AskError> {
        let target = self.target;
        let answer = self
            .sender
            .early_answer()
            .await
            .map_err(|error| AskError::from_call(error, "the bulk peer", &target))?;
        wire::decode(&answer)
    }

    /// Ends the body and waits for the handler's answer.
    pub async fn finish(self) -> Result<M::Result, AskError> {
        let target = self.target;
        let answer = self
            .sender
            .finish()
            .await
            .map_err(|error| AskError::from_call(error, "the bulk peer", &target))?;
        wire::decode(&answer)
    }
}

impl<M: WireMessage> std::fmt::Debug for OutgoingBulk<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutgoingBulk")
            .field("target", &self.target)
            .field("remaining", &self.remaining())
            .finish()
    }
}
