//! `ActorRef`: a reference to an actor that is either in this process or behind the transport.
//! The sender's code is the same either way; only wire messages can be sent through it, so a
//! reference can always be swapped for a remote one.

use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Context, Handler};
use manta_transport::{Connection, Transport};
use parking_lot::Mutex;

use crate::address::ActorAddress;
use crate::error::AskError;
use crate::local::LocalRef;
use crate::wire::{self, WireMessage};

/// A location-transparent reference to an actor of type `A`.
pub struct ActorRef<A: Actor> {
    target: Target<A>,
}

enum Target<A: Actor> {
    Local(LocalRef<A>),
    Remote(Arc<RemoteTarget>),
}

pub(crate) struct RemoteTarget {
    transport: Transport,
    address: ActorAddress,
    /// The node and the name as errors name them, shared by every call's answer callback.
    node: Arc<str>,
    name: Arc<str>,
    connection: Mutex<Option<Connection>>,
}

impl<A: Actor> Clone for ActorRef<A> {
    fn clone(&self) -> Self {
        let target = match &self.target {
            Target::Local(local) => Target::Local(local.clone()),
            Target::Remote(remote) => Target::Remote(remote.clone()),
        };
        ActorRef { target }
    }
}

impl<A: Actor> std::fmt::Debug for ActorRef<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.target {
            Target::Local(local) => f.debug_tuple("ActorRef::Local").field(local).finish(),
            Target::Remote(remote) => f.debug_tuple("ActorRef::Remote").field(&remote.address).finish(),
        }
    }
}

impl RemoteTarget {
    pub(crate) fn new(transport: Transport, address: ActorAddress) -> Self {
        let node = address.node.to_string().into();
        let name = address.name.as_str().into();
        RemoteTarget { transport, address, node, name, connection: Mutex::new(None) }
    }

    /// Sends `message` and waits for the answer, at most `timeout` (`None`: until the answer
    /// or the connection's loss).
    pub(crate) async fn ask<M: WireMessage>(
        &self,
        message: M,
        timeout: Option<Duration>,
    ) -> Result<M::Result, AskError> {
        let body = wire::encode(&message)?;
        let exchange = async {
            let connection = self.connection().await?;
            let reply = match timeout {
                Some(timeout) => connection.call(&self.address.name, M::ID, &body, Some(timeout)).await,
                None => connection.call_unbounded(&self.address.name, M::ID, &body).await,
            };
            reply.map_err(|error| AskError::from_call(error, &self.node, &self.address.name))
        };
        let reply = match timeout {
            Some(timeout) => {
                tokio::time::timeout(timeout, exchange).await.unwrap_or(Err(AskError::Timeout(timeout)))?
            }
            None => exchange.await?,
        };
        wire::decode(&reply)
    }

    /// Sends a one-way `message`; returns once it is queued.
    pub(crate) async fn tell<M: WireMessage>(&self, message: M) -> Result<(), AskError> {
        let body = wire::encode(&message)?;
        let connection = self.connection().await?;
        connection
            .notify(&self.address.name, M::ID, &body)
            .await
            .map_err(|error| AskError::from_call(error, &self.node, &self.address.name))
    }

    pub(crate) fn address(&self) -> &ActorAddress {
        &self.address
    }

    /// The transport's configured call timeout.
    pub(crate) fn call_timeout(&self) -> Duration {
        self.transport.config().call_timeout
    }

    /// The connection in use, if it is up (no dial, no wait).
    fn open_connection(&self) -> Option<Connection> {
        self.connection.lock().as_ref().filter(|connection| !connection.is_closed()).cloned()
    }

    /// The transport-level answer callback for `on_answer`: decodes the reply, or names the
    /// error after this target.
    fn decoding<R: serde::de::DeserializeOwned>(
        &self,
        on_answer: impl FnOnce(Result<R, AskError>) + Send + 'static,
    ) -> Box<dyn FnOnce(Result<bytes::Bytes, manta_transport::CallError>) + Send> {
        let (node, name) = (self.node.clone(), self.name.clone());
        Box::new(move |reply| {
            on_answer(
                reply
                    .map_err(|error| AskError::from_call(error, &node, &name))
                    .and_then(|reply| wire::decode(&reply)),
            )
        })
    }

    async fn connection(&self) -> Result<Connection, AskError> {
        if let Some(connection) = self.connection.lock().as_ref().filter(|connection| !connection.is_closed())
        {
            return Ok(connection.clone());
        }
        let connection = self.transport.connect(self.address.node).await?;
        *self.connection.lock() = Some(connection.clone());
        Ok(connection)
    }
}

/// The answer to a message sent with [`ActorRef::start_ask`].
pub type AnswerFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, AskError>> + Send>>;

impl<A: Actor<Context = Context<A>>> ActorRef<A> {
    /// A reference to a local actor.
    pub fn local(actor: LocalRef<A>) -> Self {
        ActorRef { target: Target::Local(actor) }
    }

    /// A reference to the actor at `address`, reached through `transport`.
    pub fn remote(transport: Transport, address: ActorAddress) -> Self {
        ActorRef { target: Target::Remote(Arc::new(RemoteTarget::new(transport, address))) }
    }

    /// Whether the actor lives in this process.
    pub fn is_local(&self) -> bool {
        matches!(self.target, Target::Local(_))
    }

    /// Sends `message` and waits for the answer, at most the transport's call timeout (remote)
    /// or the actor's ask timeout (local).
    pub async fn ask<M>(&self, message: M) -> Result<M::Result, AskError>
    where
        A: Handler<M>,
        M: WireMessage,
    {
        match &self.target {
            Target::Local(local) if M::PARKS => {
                local.ask_parked_timeout(message, local.ask_timeout_default()).await
            }
            Target::Local(local) => local.ask(message).await,
            Target::Remote(remote) => {
                let timeout = remote.transport.config().call_timeout;
                remote.ask(message, Some(timeout)).await
            }
        }
    }

    /// Sends `message` and waits for the answer, at most `timeout`.
    pub async fn ask_timeout<M>(&self, message: M, timeout: Duration) -> Result<M::Result, AskError>
    where
        A: Handler<M>,
        M: WireMessage,
    {
        match &self.target {
            Target::Local(local) if M::PARKS => local.ask_parked_timeout(message, timeout).await,
            Target::Local(local) => local.ask_timeout(message, timeout).await,
            Target::Remote(remote) => remote.ask(message, Some(timeout)).await,
        }
    }

    /// Sends `message` and waits for its answer with no deadline: for requests answered when
    /// something happens, not within a known time (a lease granted once resources free up, a
    /// watched actor's next incarnation, a task or a constructor that runs for hours). The
    /// wait is bounded by the peer's life instead: it ends with [`AskError::ActorDied`] when a
    /// local actor dies, and with a lost connection when a remote one's process dies (at once
    /// on the local channel; after the transport's idle timeout over QUIC).
    pub async fn ask_unbounded<M>(&self, message: M) -> Result<M::Result, AskError>
    where
        A: Handler<M>,
        M: WireMessage,
    {
        match &self.target {
            Target::Local(local) => local.admit().await?.ask_holding(message, !M::PARKS).await,
            Target::Remote(remote) => remote.ask(message, None).await,
        }
    }

    /// Sends `message` now and returns the future of its answer (at most `timeout`). Returns
    /// once the message is queued (remote) or in the mailbox (local): messages started one after
    /// another reach the actor in that order, while their answers are awaited concurrently.
    pub async fn start_ask<M>(
        &self,
        message: M,
        timeout: Duration,
    ) -> Result<AnswerFuture<M::Result>, AskError>
    where
        A: Handler<M>,
        M: WireMessage,
    {
        match &self.target {
            Target::Local(local) => {
                let answer = local.admit().await?.ask_holding(message, !M::PARKS);
                Ok(Box::pin(async move {
                    tokio::time::timeout(timeout, answer).await.unwrap_or(Err(AskError::Timeout(timeout)))
                }))
            }
            Target::Remote(remote) => {
                let body = wire::encode(&message)?;
                let connection = remote.connection().await?;
                let (node, name) = (remote.node.clone(), remote.name.clone());
                let answer = connection
                    .start_call(&name, M::ID, &body, Some(timeout))
                    .await
                    .map_err(|error| AskError::from_call(error, &node, &name))?;
                Ok(Box::pin(async move {
                    let reply = answer.await.map_err(|error| AskError::from_call(error, &node, &name))?;
                    wire::decode(&reply)
                }))
            }
        }
    }

    /// Like [`ActorRef::start_ask`], with the answer handed to `on_answer` instead of a future:
    /// it runs exactly once, with the answer or the error. For a remote actor it runs on the
    /// transport's thread as the answer arrives (no wake-up of the caller's runtime), so it must
    /// be short and must not block; there is no deadline (see
    /// [`manta_transport::Connection::start_call_with`]). Returns once the message is queued:
    /// messages started one after another are sent in that order.
    pub async fn start_ask_with<M>(
        &self,
        message: M,
        on_answer: impl FnOnce(Result<M::Result, AskError>) + Send + 'static,
    ) where
        A: Handler<M>,
        M: WireMessage,
    {
        match &self.target {
            Target::Local(local) => match local.admit().await {
                Ok(admitted) => {
                    let answer = admitted.ask_holding(message, !M::PARKS);
                    tokio::spawn(async move { on_answer(answer.await) });
                }
                Err(error) => on_answer(Err(error)),
            },
            Target::Remote(remote) => {
                let body = match wire::encode(&message) {
                    Ok(body) => body,
                    Err(error) => return on_answer(Err(error)),
                };
                let connection = match remote.connection().await {
                    Ok(connection) => connection,
                    Err(error) => return on_answer(Err(error)),
                };
                let on_reply = remote.decoding(on_answer);
                connection.start_call_with(&remote.address.name, M::ID, &body, on_reply).await;
            }
        }
    }

    /// [`ActorRef::start_ask_with`] without waiting, for callers outside any runtime: sends
    /// `message` when that needs no wait (a remote actor whose connection is up and whose send
    /// queue has room) and returns `Ok`; then `on_answer` runs exactly once, as there. Otherwise
    /// gives both back untouched, for the caller's slow path. Messages sent this way and with
    /// `start_ask_with` go out in the order the calls returned.
    pub fn try_start_ask_with<M, F>(&self, message: M, on_answer: F) -> Result<(), (M, F)>
    where
        A: Handler<M>,
        M: WireMessage,
        F: FnOnce(Result<M::Result, AskError>) + Send + 'static,
    {
        let Target::Remote(remote) = &self.target else { return Err((message, on_answer)) };
        let Some(connection) = remote.open_connection() else { return Err((message, on_answer)) };
        let Some(slot) = connection.try_reserve() else { return Err((message, on_answer)) };
        let body = match wire::encode(&message) {
            Ok(body) => body,
            Err(error) => {
                on_answer(Err(error));
                return Ok(());
            }
        };
        slot.start_call_with(&remote.address.name, M::ID, &body, remote.decoding(on_answer));
        Ok(())
    }

    /// Sends `message` one way. Returns once it is queued (remote) or in the mailbox (local);
    /// waits while the way is full (backpressure). Failures of the handler are not reported.
    pub async fn tell<M>(&self, message: M) -> Result<(), AskError>
    where
        A: Handler<M>,
        M: WireMessage,
    {
        match &self.target {
            Target::Local(local) => local.tell(message).await,
            Target::Remote(remote) => remote.tell(message).await,
        }
    }
}
