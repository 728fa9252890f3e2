//! An authenticated connection to one peer.
//!
//! After the hello/ack, one long-lived bidirectional stream carries every request, response and
//! one-way message in both directions, matched by call id; that keeps the hot path free of
//! per-call stream setup (47 µs per opened stream against 22 µs on a long-lived one, measured in
//! stack.md). A writer task drains a bounded queue and writes whatever is queued as one vectored
//! write, which batches small frames under load without delaying a lone one. Bulk transfers get
//! streams of their own (see `bulk.rs`), so a large body never blocks small calls.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use crate::error::StreamError;
use crate::throttle::warn_throttled;
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, warn};

use crate::bulk::{BulkBody, BulkSender};
use crate::config::TransportConfig;
use crate::error::CallError;
use crate::frame::{self, Frame, FrameDecoder, FrameError, Header, RemoteError, RemoteErrorKind, Status};
use crate::id::NodeId;
use crate::local::{LocalLink, ReadHalf, WriteHalf};
use crate::pending::PendingCalls;

/// Application close codes of a QUIC connection.
pub(crate) mod close_code {
    /// Orderly shutdown.
    pub(crate) const SHUTDOWN: u32 = 0;
    /// The peer broke the framing or the protocol.
    pub(crate) const PROTOCOL: u32 = 1;
    /// The peer was refused at the hello or join step.
    pub(crate) const REFUSED: u32 = 2;
    /// The peer did not finish the hello or join in time.
    pub(crate) const HANDSHAKE_TIMEOUT: u32 = 3;
}

/// Largest chunk read from a stream at once.
pub(crate) const READ_CHUNK_BYTES: usize = 256 * 1024;

/// Frames taken from the queue per write at most.
const WRITE_BATCH_FRAMES: usize = 512;

/// Frames shorter than this are copied into the current batch instead of written on their own.
const COPY_FRAME_BYTES_MAX: usize = 16 * 1024;

/// What a handler's answer resolves to: the reply body, or why the call failed.
pub type DispatchFuture = Pin<Box<dyn Future<Output = Result<Bytes, RemoteError>> + Send>>;

/// A message received from an authenticated peer.
#[derive(Debug)]
pub struct Incoming {
    /// The peer's certified id.
    pub peer: NodeId,
    /// Who it is for on this node.
    pub target: String,
    /// Which message type the body holds.
    pub method: u32,
    /// The message, raw.
    pub body: Bytes,
    /// Whether the sender waits for an answer (a request) or not (a one-way message).
    pub expects_reply: bool,
}

/// What [`Dispatcher::dispatch`] did with a message.
pub enum Dispatched {
    /// The message was handed to its handler; the future resolves to the answer.
    Accepted(DispatchFuture),
    /// The handler cannot take it yet (its mailbox is full, or it is restarting). The future
    /// resolves, to the answer future, once the message was handed over. Later messages for the
    /// same target wait behind it, in order; the connection keeps reading everything else.
    Deferred(Pin<Box<dyn Future<Output = DispatchFuture> + Send>>),
}

impl Dispatched {
    /// An immediate answer, without involving any handler.
    pub fn answer(outcome: Result<Bytes, RemoteError>) -> Self {
        Dispatched::Accepted(Box::pin(std::future::ready(outcome)))
    }
}

/// The answer to one request (or the end of one one-way message), to be sent from any thread:
/// a dispatcher that takes it (see [`Dispatcher::dispatch_answering`]) lets the handler send
/// the answer where it has it, so the transport's thread is not woken to send it. Holds the
/// message's place among the connection's messages in dispatch until sent. Dropped unsent, it
/// answers with an error, so a caller never waits for an answer nobody will send.
pub struct Answer {
    connection: Connection,
    /// `None` for a one-way message, and once sent.
    call_id: Option<u64>,
    _permit: OwnedSemaphorePermit,
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answer")
            .field("peer", &self.connection.peer())
            .field("call_id", &self.call_id)
            .finish()
    }
}

impl Answer {
    /// Whether the sender waits for this answer (a request) or not (a one-way message).
    pub fn expected(&self) -> bool {
        self.call_id.is_some()
    }

    /// Sends the answer (nothing for a one-way message, where an error is only logged).
    pub fn send(mut self, outcome: Result<Bytes, RemoteError>) {
        self.finish(outcome);
    }

    fn finish(&mut self, outcome: Result<Bytes, RemoteError>) {
        let Some(call_id) = self.call_id.take() else {
            if let Err(error) = outcome {
                debug!(peer = %self.connection.peer(), %error, "one-way message failed");
            }
            return;
        };
        let connection = &self.connection;
        let frame = response_frame(call_id, outcome, connection.inner.config.frame_bytes_max);
        match connection.inner.outgoing.try_reserve() {
            Ok(permit) => connection.push(frame, permit),
            Err(mpsc::error::TrySendError::Full(())) => {
                // Wait for room on the transport's thread, not here.
                let connection = connection.clone();
                connection.inner.runtime.clone().spawn(async move {
                    let _ = connection.enqueue(frame).await;
                });
            }
            // The connection is gone, and its caller has been told.
            Err(mpsc::error::TrySendError::Closed(())) => {}
        }
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        if self.call_id.is_some() {
            let error = RemoteError::new(RemoteErrorKind::Internal, "the request was dropped unanswered");
            self.finish(Err(error));
        }
    }
}

/// Receives messages for this node; implemented by the actor layer's router.
///
/// `dispatch` is called on the transport's thread, for each target in the order the frames
/// arrived on their connection, and must not block: it hands the message over at once or defers
/// (see [`Dispatched`]), so that messages from one connection reach each handler in order.
pub trait Dispatcher: Send + Sync + 'static {
    /// Hands over a request or a one-way message.
    fn dispatch(&self, message: Incoming) -> Dispatched;

    /// Hands over a request or a one-way message together with its [`Answer`]: `Ok` when the
    /// handler took the answer and sends it itself (from whatever thread it runs on); otherwise
    /// the answer comes back with what [`Dispatcher::dispatch`] did, and the transport sends
    /// what the handler's future resolves to. The default always does the latter.
    fn dispatch_answering(&self, message: Incoming, answer: Answer) -> Result<(), (Dispatched, Answer)> {
        Err((self.dispatch(message), answer))
    }

    /// Hands over a bulk transfer: `message.body` is its metadata, `body` streams the payload.
    fn dispatch_bulk(&self, message: Incoming, body: BulkBody) -> DispatchFuture {
        drop(body);
        let error = RemoteError::new(
            RemoteErrorKind::UnknownMethod,
            format!("{} does not accept bulk transfers", message.target),
        );
        Box::pin(std::future::ready(Err(error)))
    }
}

/// What a call's answer goes to: a channel its caller awaits, or a callback run where the answer
/// arrives (on the transport's thread), which saves the caller's runtime a wake-up per call.
enum Waiter {
    Channel(oneshot::Sender<Result<Bytes, CallError>>),
    Callback(Box<dyn FnOnce(Result<Bytes, CallError>) + Send>),
}

impl Waiter {
    fn send(self, outcome: Result<Bytes, CallError>) {
        match self {
            Waiter::Channel(sender) => {
                let _ = sender.send(outcome);
            }
            Waiter::Callback(callback) => callback(outcome),
        }
    }
}

/// A live, authenticated connection; cheap to clone, usable from any thread or runtime.
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

/// What carries a connection: QUIC, or the local channel to a peer on the same host.
pub(crate) enum Link {
    Quic(quinn::Connection),
    Local(LocalLink),
}

struct Inner {
    link: Link,
    peer: NodeId,
    outgoing: mpsc::Sender<Bytes>,
    /// The local link's socket, written by the writer task and, when nothing is queued, by
    /// senders themselves; `None` over QUIC.
    direct: Option<Arc<DirectWriter>>,
    /// The transport thread's runtime, for the sends that must wait.
    runtime: tokio::runtime::Handle,
    pending: PendingCalls<Waiter>,
    config: Arc<TransportConfig>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("peer", &self.inner.peer)
            .field("remote", &self.remote_addr())
            .field("local", &self.is_local())
            .finish_non_exhaustive()
    }
}

/// A place on a connection's send queue, held by [`Connection::try_reserve`].
pub struct CallSlot<'a> {
    connection: &'a Connection,
    permit: mpsc::Permit<'a, Bytes>,
}

impl CallSlot<'_> {
    /// [`Connection::start_call_with`] in the reserved place: queues the request at once, and
    /// `on_answer` runs exactly once, as there (with the error before this returns when the
    /// request cannot be sent, for instance when it is too large).
    pub fn start_call_with(
        self,
        target: &str,
        method: u32,
        body: &[u8],
        on_answer: Box<dyn FnOnce(Result<Bytes, CallError>) + Send>,
    ) {
        let inner = &self.connection.inner;
        let call_id = match inner.pending.insert(Waiter::Callback(on_answer)) {
            Ok(call_id) => call_id,
            Err(waiter) => return waiter.send(Err(self.connection.lost())),
        };
        let header = Header::Request { call_id, target: target.to_owned(), method };
        match frame::encode(&header, body, inner.config.frame_bytes_max) {
            Ok(frame) => self.connection.push(frame, self.permit),
            Err(error) => {
                if let Some(waiter) = inner.pending.take(call_id) {
                    waiter.send(Err(error.into()));
                }
            }
        }
    }
}

/// Takes a call's waiter out of the table if the call is abandoned (timeout, or the caller's
/// future dropped), so the table never holds waiters nobody listens to.
struct PendingGuard<'a> {
    pending: &'a PendingCalls<Waiter>,
    call_id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.pending.take(self.call_id);
    }
}

/// Like [`PendingGuard`], for a call whose answer is awaited after the caller's borrow ends.
struct OwnedPendingGuard {
    inner: Arc<Inner>,
    call_id: u64,
}

impl Drop for OwnedPendingGuard {
    fn drop(&mut self) {
        self.inner.pending.take(self.call_id);
    }
}

impl Connection {
    /// The peer's certified node id.
    pub fn peer(&self) -> NodeId {
        self.inner.peer
    }

    /// The peer's UDP address.
    pub fn remote_addr(&self) -> SocketAddr {
        match &self.inner.link {
            Link::Quic(quic) => quic.remote_address(),
            Link::Local(link) => link.remote,
        }
    }

    /// Whether the connection runs over the local channel (a Unix socket to a peer on this
    /// host) rather than QUIC.
    pub fn is_local(&self) -> bool {
        matches!(self.inner.link, Link::Local(_))
    }

    /// Whether the connection has been closed (by either side or by a failure).
    pub fn is_closed(&self) -> bool {
        self.close_reason().is_some()
    }

    fn close_reason(&self) -> Option<String> {
        match &self.inner.link {
            Link::Quic(quic) => quic.close_reason().map(|reason| reason.to_string()),
            Link::Local(link) => link.close_reason(),
        }
    }

    /// Closes the connection; calls in flight fail with [`CallError::ConnectionLost`].
    pub fn close(&self, reason: &str) {
        self.close_with(close_code::SHUTDOWN, reason);
    }

    fn close_with(&self, code: u32, reason: &str) {
        match &self.inner.link {
            Link::Quic(quic) => quic.close(quinn::VarInt::from_u32(code), reason.as_bytes()),
            Link::Local(link) => link.close(reason),
        }
    }

    /// Whether `self` and `other` are the same connection (not merely to the same peer).
    pub(crate) fn same(&self, other: &Connection) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    fn lost(&self) -> CallError {
        CallError::ConnectionLost(
            self.close_reason().unwrap_or_else(|| "the connection's writer stopped".to_owned()),
        )
    }

    /// Sends a request to `target` and waits for its answer, at most `timeout` (the configured
    /// `call_timeout` when `None`).
    pub async fn call(
        &self,
        target: &str,
        method: u32,
        body: &[u8],
        timeout: Option<Duration>,
    ) -> Result<Bytes, CallError> {
        let timeout = timeout.unwrap_or(self.inner.config.call_timeout);
        let (waiter, answer) = oneshot::channel();
        let call_id = self.inner.pending.insert(Waiter::Channel(waiter)).map_err(|_| self.lost())?;
        let _guard = PendingGuard { pending: &self.inner.pending, call_id };
        let header = Header::Request { call_id, target: target.to_owned(), method };
        let frame = frame::encode(&header, body, self.inner.config.frame_bytes_max)?;
        let exchange = async {
            self.enqueue(frame).await?;
            answer.await.map_err(|_| self.lost())?
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(outcome) => outcome,
            Err(_) => Err(CallError::Timeout(timeout)),
        }
    }

    /// Sends a request and waits for its answer with no deadline: for requests answered when
    /// something happens (a lease granted, a task finished after an hour). The wait still ends
    /// when the connection is lost: a dead peer's local socket breaks at once, and a silent
    /// QUIC peer is given up after the idle timeout (its keep-alives stop).
    pub async fn call_unbounded(&self, target: &str, method: u32, body: &[u8]) -> Result<Bytes, CallError> {
        let (waiter, answer) = oneshot::channel();
        let call_id = self.inner.pending.insert(Waiter::Channel(waiter)).map_err(|_| self.lost())?;
        let _guard = PendingGuard { pending: &self.inner.pending, call_id };
        let header = Header::Request { call_id, target: target.to_owned(), method };
        let frame = frame::encode(&header, body, self.inner.config.frame_bytes_max)?;
        self.enqueue(frame).await?;
        answer.await.map_err(|_| self.lost())?
    }

    /// Sends a request to `target` now and returns the future of its answer (at most `timeout`,
    /// the configured `call_timeout` when `None`). Returns once the frame is queued: requests
    /// started one after another go out, and reach the peer's dispatcher, in that order.
    pub async fn start_call(
        &self,
        target: &str,
        method: u32,
        body: &[u8],
        timeout: Option<Duration>,
    ) -> Result<impl std::future::Future<Output = Result<Bytes, CallError>> + Send + 'static, CallError> {
        let timeout = timeout.unwrap_or(self.inner.config.call_timeout);
        let (waiter, answer) = oneshot::channel();
        let call_id = self.inner.pending.insert(Waiter::Channel(waiter)).map_err(|_| self.lost())?;
        let guard = OwnedPendingGuard { inner: self.inner.clone(), call_id };
        let header = Header::Request { call_id, target: target.to_owned(), method };
        let frame = frame::encode(&header, body, self.inner.config.frame_bytes_max)?;
        self.enqueue(frame).await?;
        let connection = self.clone();
        Ok(async move {
            let _guard = guard;
            match tokio::time::timeout(timeout, answer).await {
                Ok(Ok(outcome)) => outcome,
                Ok(Err(_)) => Err(connection.lost()),
                Err(_) => Err(CallError::Timeout(timeout)),
            }
        })
    }

    /// Sends a request to `target` now; `on_answer` runs exactly once: with the answer (on the
    /// transport's thread), with [`CallError::ConnectionLost`] when the connection closes first,
    /// or with the error that kept the request from being sent (before this returns). There is
    /// no deadline: the caller keeps its own if it wants one. `on_answer` must be short and must
    /// not block, since it runs where every connection's frames are read. Returns once the frame
    /// is queued, so requests started one after another go out in that order.
    pub async fn start_call_with(
        &self,
        target: &str,
        method: u32,
        body: &[u8],
        on_answer: Box<dyn FnOnce(Result<Bytes, CallError>) + Send>,
    ) {
        let call_id = match self.inner.pending.insert(Waiter::Callback(on_answer)) {
            Ok(call_id) => call_id,
            Err(waiter) => return waiter.send(Err(self.lost())),
        };
        let header = Header::Request { call_id, target: target.to_owned(), method };
        let queued = match frame::encode(&header, body, self.inner.config.frame_bytes_max) {
            Ok(frame) => self.enqueue(frame).await,
            Err(error) => Err(error.into()),
        };
        if let Err(error) = queued {
            // Unless closing the connection has run it already.
            if let Some(waiter) = self.inner.pending.take(call_id) {
                waiter.send(Err(error));
            }
        }
    }

    /// Room for one request on the send queue, taken without waiting: `None` while the queue is
    /// full or the connection is closed. Lets a caller on any thread send without an `await`
    /// when nothing stands in the way (and take its slow path otherwise).
    pub fn try_reserve(&self) -> Option<CallSlot<'_>> {
        if self.is_closed() {
            return None;
        }
        let permit = self.inner.outgoing.try_reserve().ok()?;
        Some(CallSlot { connection: self, permit })
    }

    /// Sends a one-way message. Returns once it is queued for sending; waits while the queue is
    /// full (backpressure). A connection known to be closed is an error; like any one-way
    /// message on a network, one queued just before the connection fails is lost unreported.
    pub async fn notify(&self, target: &str, method: u32, body: &[u8]) -> Result<(), CallError> {
        if self.is_closed() {
            return Err(self.lost());
        }
        let header = Header::Notify { target: target.to_owned(), method };
        let frame = frame::encode(&header, body, self.inner.config.frame_bytes_max)?;
        self.enqueue(frame).await
    }

    /// Sends `frame`: written at once when nothing is queued before it (local link), else
    /// queued for the writer task; waits while the queue is full.
    async fn enqueue(&self, frame: Bytes) -> Result<(), CallError> {
        let permit = self.inner.outgoing.reserve().await.map_err(|_| self.lost())?;
        self.push(frame, permit);
        Ok(())
    }

    /// Sends `frame` in the place `permit` holds on the queue, from any thread. On a local link
    /// with nothing queued, a sender on another thread than the transport's writes the frame to
    /// the socket itself (no wake-up of the transport thread: one hop between threads less);
    /// what the socket does not take at once is left to the writer task, ahead of anything
    /// queued later. On the transport's own thread the frame is queued: waking the writer task
    /// there costs no hop, and it gathers a burst of frames into one write.
    fn push(&self, frame: Bytes, permit: mpsc::Permit<'_, Bytes>) {
        let Some(direct) = &self.inner.direct else { return permit.send(frame) };
        let foreign = !ON_TRANSPORT_THREAD.try_with(std::cell::Cell::get).unwrap_or(false);
        let mut state = direct.state.lock();
        if foreign && state.queued == 0 {
            match direct.half.try_write(&frame) {
                Ok(written) if written == frame.len() => return,
                Ok(written) => {
                    state.leftover = Some(frame.slice(written..));
                    state.queued += 1;
                    direct.leftover_ready.notify_one();
                    return;
                }
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(error) => {
                    // The reader ends too, and the calls waiting on the link fail.
                    drop(state);
                    if let Link::Local(link) = &self.inner.link {
                        link.close(&format!("writing to the local socket failed: {error}"));
                    }
                    return;
                }
            }
        }
        state.queued += 1;
        permit.send(frame);
    }

    /// Opens a bulk stream to `target`: `meta` travels in the first frame, then exactly
    /// `body_bytes` raw bytes written through the returned sender.
    pub async fn open_bulk(
        &self,
        target: &str,
        method: u32,
        meta: &[u8],
        body_bytes: u64,
    ) -> Result<BulkSender, CallError> {
        let header = Header::Bulk { target: target.to_owned(), method, body_bytes };
        let frame = frame::encode(&header, meta, self.inner.config.frame_bytes_max)?;
        let (mut send, recv) = match &self.inner.link {
            Link::Quic(quic) => {
                let (send, recv) =
                    quic.open_bi().await.map_err(|error| CallError::ConnectionLost(error.to_string()))?;
                (WriteHalf::Quic(send), ReadHalf::Quic(recv))
            }
            Link::Local(link) => self.open_local_bulk(link).await?,
        };
        send.write_chunk(frame).await?;
        Ok(BulkSender::new(send, recv, body_bytes, self.inner.config.clone()))
    }

    /// Opens a bulk stream to a local peer: a socket connection of its own, announced by a
    /// `LocalHello` with `bulk` set.
    async fn open_local_bulk(&self, link: &LocalLink) -> Result<(WriteHalf, ReadHalf), CallError> {
        let Some(path) = &link.path else {
            return Err(CallError::Bulk(
                "bulk streams over a local connection are opened by the side that dialled it".to_owned(),
            ));
        };
        if self.is_closed() {
            return Err(self.lost());
        }
        let config = &self.inner.config;
        let hello = crate::local::LocalHello {
            node_id: link.local_node,
            cluster: link.cluster,
            listen: link.local_addr,
            bulk: true,
        };
        let exchange = async {
            let (recv, send, _, node_id) = crate::local::hello(path, hello, config.frame_bytes_max).await?;
            if node_id == self.peer() {
                Ok((send, recv))
            } else {
                Err(StreamError::WrongPeer { served: node_id, expected: self.peer() })
            }
        };
        tokio::time::timeout(config.handshake_timeout, exchange)
            .await
            .map_err(|_| CallError::Timeout(config.handshake_timeout))?
            .map_err(CallError::from)
    }
}

/// Everything a new connection needs to start serving.
pub(crate) struct ConnectionParts {
    pub(crate) link: Link,
    pub(crate) peer: NodeId,
    pub(crate) send: WriteHalf,
    pub(crate) recv: ReadHalf,
    /// Bytes already read past the handshake.
    pub(crate) decoder: FrameDecoder,
    pub(crate) dispatcher: Arc<dyn Dispatcher>,
    pub(crate) config: Arc<TransportConfig>,
    /// Called once when the connection is gone.
    pub(crate) on_close: Box<dyn FnOnce(&Connection) + Send>,
}

/// Starts the writer, the reader and the bulk acceptor of a freshly authenticated connection on
/// the current runtime (the transport's thread).
pub(crate) fn start(parts: ConnectionParts) -> Connection {
    ON_TRANSPORT_THREAD.with(|on| on.set(true));
    let (outgoing, queue) = mpsc::channel(parts.config.send_queue_frames_max.max(1));
    let (send, direct) = match parts.send {
        WriteHalf::Local(half) => {
            let direct = Arc::new(DirectWriter {
                half,
                state: parking_lot::Mutex::new(DirectState { queued: 0, leftover: None }),
                leftover_ready: tokio::sync::Notify::new(),
            });
            (None, Some(direct))
        }
        quic => (Some(quic), None),
    };
    let connection = Connection {
        inner: Arc::new(Inner {
            link: parts.link,
            peer: parts.peer,
            outgoing,
            direct: direct.clone(),
            runtime: tokio::runtime::Handle::current(),
            pending: PendingCalls::new(),
            config: parts.config,
        }),
    };
    let closing = match &connection.inner.link {
        Link::Quic(quic) => {
            actix_rt::spawn(accept_bulk_loop(connection.clone(), quic.clone(), parts.dispatcher.clone()));
            None
        }
        Link::Local(link) => Some(link.closing()),
    };
    match (send, direct) {
        (Some(send), _) => actix_rt::spawn(write_loop(send, queue, closing.clone())),
        (None, Some(direct)) => actix_rt::spawn(write_local_loop(direct, queue, closing.clone())),
        (None, None) => unreachable!("a connection has a writing half"),
    };
    let reader = connection.clone();
    let on_close = parts.on_close;
    actix_rt::spawn(async move {
        let outcome = match closing {
            None => read_loop(&reader, parts.recv, parts.decoder, parts.dispatcher).await,
            Some(closing) => tokio::select! {
                outcome = read_loop(&reader, parts.recv, parts.decoder, parts.dispatcher) => outcome,
                () = crate::local::closed(closing) => {
                    Err(ReadError::Lost(reader.close_reason().unwrap_or_default()))
                }
            },
        };
        let reason = match outcome {
            Ok(()) => "the peer closed the connection".to_owned(),
            Err(ReadError::Frame(error)) => {
                warn_throttled!(peer = %reader.peer(), remote = %reader.remote_addr(), %error, "closing connection: bad frame");
                reader.close_with(close_code::PROTOCOL, &error.to_string());
                error.to_string()
            }
            Err(ReadError::Protocol(what)) => {
                warn_throttled!(peer = %reader.peer(), remote = %reader.remote_addr(), what, "closing connection: protocol violation");
                reader.close_with(close_code::PROTOCOL, what);
                what.to_owned()
            }
            Err(ReadError::Lost(reason)) => {
                debug!(peer = %reader.peer(), %reason, "connection lost");
                reason
            }
        };
        if let Link::Local(link) = &reader.inner.link {
            // Stops the writer too, and makes `is_closed` true.
            link.close(&reason);
        }
        for waiter in reader.inner.pending.close() {
            waiter.send(Err(CallError::ConnectionLost(reason.clone())));
        }
        on_close(&reader);
    });
    connection
}

async fn write_loop(
    mut send: WriteHalf,
    mut queue: mpsc::Receiver<Bytes>,
    closing: Option<tokio::sync::watch::Receiver<bool>>,
) {
    match closing {
        None => write_frames(&mut send, &mut queue).await,
        Some(closing) => {
            tokio::select! {
                () = write_frames(&mut send, &mut queue) => {}
                () = crate::local::closed(closing) => {}
            }
        }
    }
    // Every sender is gone (the connection is being dropped) or the link closed.
    let _ = send.finish().await;
}

async fn write_frames(send: &mut WriteHalf, queue: &mut mpsc::Receiver<Bytes>) {
    // quinn keeps every written chunk as a segment and walks them when it builds packets, so
    // thousands of tiny chunks cost far more than their bytes (seen in a profile: 40% of the
    // transport thread in `write_stream_frames`). Small frames are therefore copied into one
    // contiguous batch per write; large frames go through as they are, without a copy.
    let mut frames = Vec::with_capacity(WRITE_BATCH_FRAMES);
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut small = bytes::BytesMut::new();
    while queue.recv_many(&mut frames, WRITE_BATCH_FRAMES).await > 0 {
        gather(&mut frames, &mut small, &mut chunks);
        if let Err(error) = send.write_chunks(&mut chunks).await {
            debug!(%error, "connection writer stopped");
            return;
        }
    }
}

thread_local! {
    /// Whether this thread runs a transport (its connections' readers and writers).
    static ON_TRANSPORT_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The writing half of a local link's message socket, shared by the writer task and the
/// senders that write a frame themselves (see [`Connection::push`]).
struct DirectWriter {
    half: tokio::net::unix::OwnedWriteHalf,
    state: parking_lot::Mutex<DirectState>,
    /// Tells the writer task that a sender left part of a frame for it.
    leftover_ready: tokio::sync::Notify,
}

/// What keeps the local socket's byte stream whole. Every write to the socket by a sender
/// happens under this lock with `queued == 0`; the writer task writes only frames counted in
/// `queued`, which it lowers once they are written whole. So a sender never writes while the
/// writer task has anything left to write, and the writer task never writes while a sender
/// does.
struct DirectState {
    /// Frames (and the leftover) handed to the writer task and not yet written whole.
    queued: usize,
    /// The rest of a frame a sender could only partly write: written before anything else.
    leftover: Option<Bytes>,
}

async fn write_local_loop(
    direct: Arc<DirectWriter>,
    mut queue: mpsc::Receiver<Bytes>,
    closing: Option<tokio::sync::watch::Receiver<bool>>,
) {
    let closing = closing.expect("a local link has a closing signal");
    tokio::select! {
        () = write_local_frames(&direct, &mut queue) => {}
        () = crate::local::closed(closing) => {}
    }
    // Every sender is gone (the connection is being dropped) or the link closed.
    use std::os::fd::AsRawFd;
    let socket: &tokio::net::UnixStream = direct.half.as_ref();
    // SAFETY: the descriptor is open for as long as `direct` holds its half.
    unsafe { libc::shutdown(socket.as_raw_fd(), libc::SHUT_WR) };
}

async fn write_local_frames(direct: &DirectWriter, queue: &mut mpsc::Receiver<Bytes>) {
    if let Err(error) = write_local_queue(direct, queue).await {
        debug!(%error, "connection writer stopped");
    }
}

/// Writes what senders left and what they queued, in that order, until every sender is gone.
async fn write_local_queue(direct: &DirectWriter, queue: &mut mpsc::Receiver<Bytes>) -> std::io::Result<()> {
    let mut frames = Vec::with_capacity(WRITE_BATCH_FRAMES);
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut small = bytes::BytesMut::new();
    loop {
        let leftover = direct.state.lock().leftover.take();
        if let Some(rest) = leftover {
            write_whole(&direct.half, &rest).await?;
            direct.state.lock().queued -= 1;
            continue;
        }
        let received = tokio::select! {
            biased;
            () = direct.leftover_ready.notified() => continue,
            received = queue.recv_many(&mut frames, WRITE_BATCH_FRAMES) => received,
        };
        if received == 0 {
            return Ok(());
        }
        gather(&mut frames, &mut small, &mut chunks);
        for chunk in chunks.drain(..) {
            write_whole(&direct.half, &chunk).await?;
        }
        direct.state.lock().queued -= received;
    }
}

/// Turns a batch of frames into the chunks to write: small frames copied together into one,
/// large ones as they are, in order.
fn gather(frames: &mut Vec<Bytes>, small: &mut bytes::BytesMut, chunks: &mut Vec<Bytes>) {
    for frame in frames.drain(..) {
        if frame.len() >= COPY_FRAME_BYTES_MAX {
            if !small.is_empty() {
                chunks.push(small.split().freeze());
            }
            chunks.push(frame);
        } else {
            small.extend_from_slice(&frame);
        }
    }
    if !small.is_empty() {
        chunks.push(small.split().freeze());
    }
}

/// Writes all of `bytes` through a shared half, waiting while the socket is full.
async fn write_whole(half: &tokio::net::unix::OwnedWriteHalf, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        match half.try_write(bytes) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(written) => bytes = &bytes[written..],
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => half.writable().await?,
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

enum ReadError {
    Frame(FrameError),
    Protocol(&'static str),
    Lost(String),
}

async fn read_loop(
    connection: &Connection,
    mut recv: ReadHalf,
    mut decoder: FrameDecoder,
    dispatcher: Arc<dyn Dispatcher>,
) -> Result<(), ReadError> {
    let router = Router {
        connection: connection.clone(),
        dispatcher,
        permits: Arc::new(Semaphore::new(connection.inner.config.inflight_dispatch_max.max(1))),
        backlogs: Rc::new(RefCell::new(HashMap::new())),
    };
    loop {
        while let Some(frame) = decoder.next_frame().map_err(ReadError::Frame)? {
            router.route(frame).await?;
        }
        match recv.read_chunk(READ_CHUNK_BYTES).await {
            Ok(Some(chunk)) => decoder.push(&chunk),
            Ok(None) => return decoder.finish().map_err(ReadError::Frame),
            Err(error) => return Err(ReadError::Lost(error.to_string())),
        }
    }
}

/// A request or one-way message waiting, in order, behind a deferred one for the same target.
struct Queued {
    message: Incoming,
    answer: Answer,
}

/// Routes the frames read from one connection. Lives on the transport thread (hence `Rc`).
///
/// Responses complete pending calls at once. Requests and one-way messages go to the
/// dispatcher in arrival order. When the dispatcher defers one (its actor is full or
/// restarting), a backlog is opened for that target: later messages for it queue behind the
/// deferred one, in order, while the reader goes on reading responses and messages for other
/// targets. So an actor that waits on a remote answer cannot block that answer behind messages
/// queued for itself. Every message in flight holds one of `inflight_dispatch_max` permits; when
/// none is left the reader stops, and QUIC flow control slows the sender.
struct Router {
    connection: Connection,
    dispatcher: Arc<dyn Dispatcher>,
    permits: Arc<Semaphore>,
    backlogs: Rc<RefCell<HashMap<String, mpsc::UnboundedSender<Queued>>>>,
}

impl Router {
    async fn route(&self, frame: Frame) -> Result<(), ReadError> {
        let (target, method, reply_to) = match frame.header {
            Header::Response { call_id, status } => {
                let outcome = match status {
                    Status::Ok => Ok(frame.body),
                    Status::Err(error) => Err(CallError::Remote(error)),
                };
                match self.connection.inner.pending.take(call_id) {
                    Some(waiter) => {
                        waiter.send(outcome);
                    }
                    None => debug!(call_id, "dropping the answer to a call nobody waits for"),
                }
                return Ok(());
            }
            Header::Request { call_id, target, method } => (target, method, Some(call_id)),
            Header::Notify { target, method } => (target, method, None),
            Header::Handshake => return Err(ReadError::Protocol("handshake frame after the handshake")),
            Header::Bulk { .. } => return Err(ReadError::Protocol("bulk frame on the message stream")),
        };
        let permit =
            self.permits.clone().acquire_owned().await.map_err(|_| ReadError::Protocol("dispatch closed"))?;
        let message = Incoming {
            peer: self.connection.inner.peer,
            target,
            method,
            body: frame.body,
            expects_reply: reply_to.is_some(),
        };
        let answer = Answer { connection: self.connection.clone(), call_id: reply_to, _permit: permit };
        let queued = Queued { message, answer };
        let queued = match self.backlogs.borrow().get(&queued.message.target) {
            Some(backlog) => match backlog.send(queued) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::SendError(queued)) => queued,
            },
            None => queued,
        };
        let target = queued.message.target.clone();
        match self.dispatcher.dispatch_answering(queued.message, queued.answer) {
            Ok(()) => {}
            Err((Dispatched::Accepted(handled), answer)) => answer_when_done(handled, answer),
            Err((Dispatched::Deferred(handed_over), answer)) => {
                let (backlog, waiting) = mpsc::unbounded_channel();
                self.backlogs.borrow_mut().insert(target.clone(), backlog);
                let router = self.clone_handle();
                actix_rt::spawn(async move {
                    answer_when_done(handed_over.await, answer);
                    router.drain_backlog(target, waiting).await;
                });
            }
        }
        Ok(())
    }

    /// Hands the backlog of `target` over one message at a time, then closes it. Checking for
    /// the next message and removing the backlog happen without an await in between, so the
    /// reader (on the same thread) never queues into a backlog nobody drains.
    async fn drain_backlog(&self, target: String, mut waiting: mpsc::UnboundedReceiver<Queued>) {
        loop {
            let Ok(queued) = waiting.try_recv() else {
                self.backlogs.borrow_mut().remove(&target);
                return;
            };
            match self.dispatcher.dispatch_answering(queued.message, queued.answer) {
                Ok(()) => {}
                Err((Dispatched::Accepted(handled), answer)) => answer_when_done(handled, answer),
                Err((Dispatched::Deferred(handed_over), answer)) => {
                    answer_when_done(handed_over.await, answer)
                }
            }
        }
    }

    fn clone_handle(&self) -> Router {
        Router {
            connection: self.connection.clone(),
            dispatcher: self.dispatcher.clone(),
            permits: self.permits.clone(),
            backlogs: self.backlogs.clone(),
        }
    }
}

/// Waits for the handler's answer off the reader's path and sends it back if asked for.
fn answer_when_done(handled: DispatchFuture, answer: Answer) {
    actix_rt::spawn(async move { answer.send(handled.await) });
}

/// Encodes the answer to `call_id`; an answer too large for a frame becomes an error answer.
pub(crate) fn response_frame(
    call_id: u64,
    outcome: Result<Bytes, RemoteError>,
    frame_bytes_max: usize,
) -> Bytes {
    let (status, body) = match outcome {
        Ok(body) => (Status::Ok, body),
        Err(error) => (Status::Err(error), Bytes::new()),
    };
    match frame::encode(&Header::Response { call_id, status }, &body, frame_bytes_max) {
        Ok(frame) => frame,
        Err(error) => {
            let status =
                Status::Err(RemoteError::new(RemoteErrorKind::Internal, format!("reply not sent: {error}")));
            // An empty error answer is far below any sane frame limit.
            frame::encode(&Header::Response { call_id, status }, &[], usize::MAX)
                .expect("small frames encode")
        }
    }
}

async fn accept_bulk_loop(connection: Connection, quic: quinn::Connection, dispatcher: Arc<dyn Dispatcher>) {
    while let Ok((send, recv)) = quic.accept_bi().await {
        let connection = connection.clone();
        let dispatcher = dispatcher.clone();
        actix_rt::spawn(async move {
            let peer = connection.peer();
            let (send, recv) = (WriteHalf::Quic(send), ReadHalf::Quic(recv));
            if let Err(error) =
                crate::bulk::serve(connection.inner.peer, send, recv, &dispatcher, &connection.inner.config)
                    .await
            {
                warn!(%peer, %error, "bulk stream failed");
            }
        });
    }
}

/// Reads one whole frame from `recv`, with whatever follows it left in `decoder`.
pub(crate) async fn read_frame(
    recv: &mut ReadHalf,
    decoder: &mut FrameDecoder,
) -> Result<Frame, StreamError> {
    loop {
        if let Some(frame) = decoder.next_frame()? {
            return Ok(frame);
        }
        match recv.read_chunk(READ_CHUNK_BYTES).await? {
            Some(chunk) => decoder.push(&chunk),
            None => return Err(StreamError::Truncated { buffered: decoder.buffered() }),
        }
    }
}
