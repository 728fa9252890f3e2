//! `ServiceRef<P>`: a client of a service, typed by its [`Protocol`] rather than by the
//! server's actor type. A caller holds `ServiceRef<Gcs>`, not `ActorRef<GcsActor<Storage>>`: it
//! needs neither the server's crate nor its storage type, and the compiler still refuses a
//! message the protocol does not [`Accepts`].
//!
//! A service on another node is reached over the transport, as an [`ActorRef`] would. A service
//! registered on this very node is reached through the node's registry with the same encoded
//! message and the same routes a peer's message takes (mailbox or inline), so the two paths
//! cannot drift apart; the cost is one encode and one decode per call, on control paths only.
//!
//! [`ActorRef`]: crate::ActorRef

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use manta_proto::{Accepts, Protocol};
use manta_transport::{Dispatched, Incoming, NodeId, RemoteError};

use crate::error::AskError;
use crate::node::Registry;
use crate::remote::RemoteTarget;
use crate::wire::{self, WireMessage};

/// A reference to the service `P` at some node; cheap to clone.
pub struct ServiceRef<P: Protocol> {
    target: ServiceTarget,
    _protocol: PhantomData<fn() -> P>,
}

#[derive(Clone)]
enum ServiceTarget {
    Local { registry: Arc<Registry>, node: NodeId, ask_timeout: Duration },
    Remote(Arc<RemoteTarget>),
}

impl<P: Protocol> Clone for ServiceRef<P> {
    fn clone(&self) -> Self {
        ServiceRef { target: self.target.clone(), _protocol: PhantomData }
    }
}

impl<P: Protocol> std::fmt::Debug for ServiceRef<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.target {
            ServiceTarget::Local { node, .. } => write!(f, "ServiceRef::Local({node}/{})", P::NAME),
            ServiceTarget::Remote(remote) => write!(f, "ServiceRef::Remote({:?})", remote.address()),
        }
    }
}

impl<P: Protocol> ServiceRef<P> {
    pub(crate) fn local(registry: Arc<Registry>, node: NodeId, ask_timeout: Duration) -> Self {
        ServiceRef { target: ServiceTarget::Local { registry, node, ask_timeout }, _protocol: PhantomData }
    }

    pub(crate) fn remote(remote: RemoteTarget) -> Self {
        ServiceRef { target: ServiceTarget::Remote(Arc::new(remote)), _protocol: PhantomData }
    }

    /// Whether the service is on this process's node.
    pub fn is_local(&self) -> bool {
        matches!(self.target, ServiceTarget::Local { .. })
    }

    /// Sends `message` and waits for the answer, at most the transport's call timeout.
    pub async fn ask<M>(&self, message: M) -> Result<M::Result, AskError>
    where
        P: Accepts<M>,
        M: WireMessage,
    {
        let timeout = match &self.target {
            ServiceTarget::Local { ask_timeout, .. } => *ask_timeout,
            ServiceTarget::Remote(remote) => remote.call_timeout(),
        };
        self.ask_timeout(message, timeout).await
    }

    /// Sends `message` and waits for the answer, at most `timeout`.
    pub async fn ask_timeout<M>(&self, message: M, timeout: Duration) -> Result<M::Result, AskError>
    where
        P: Accepts<M>,
        M: WireMessage,
    {
        match &self.target {
            ServiceTarget::Local { .. } => tokio::time::timeout(timeout, self.ask_local(message, true))
                .await
                .unwrap_or(Err(AskError::Timeout(timeout))),
            ServiceTarget::Remote(remote) => remote.ask(message, Some(timeout)).await,
        }
    }

    /// Sends `message` and waits for its answer with no deadline; the wait ends with the
    /// service's death instead (see [`crate::ActorRef::ask_unbounded`]).
    pub async fn ask_unbounded<M>(&self, message: M) -> Result<M::Result, AskError>
    where
        P: Accepts<M>,
        M: WireMessage,
    {
        match &self.target {
            ServiceTarget::Local { .. } => self.ask_local(message, true).await,
            ServiceTarget::Remote(remote) => remote.ask(message, None).await,
        }
    }

    /// Sends a one-way `message`: returns once it is handed over (queued for the network, or
    /// in the local server's mailbox), so messages told one after another arrive in order.
    pub async fn tell<M>(&self, message: M) -> Result<(), AskError>
    where
        P: Accepts<M>,
        M: WireMessage,
    {
        match &self.target {
            ServiceTarget::Local { .. } => {
                let answer = self.hand_over(&message, false)?.await;
                // The handling goes on without us; only the hand-over is awaited.
                tokio::spawn(answer);
                Ok(())
            }
            ServiceTarget::Remote(remote) => remote.tell(message).await,
        }
    }

    async fn ask_local<M: WireMessage>(
        &self,
        message: M,
        expects_reply: bool,
    ) -> Result<M::Result, AskError> {
        let answer = self.hand_over(&message, expects_reply)?.await;
        let reply = answer.await.map_err(|error| self.local_error(error))?;
        wire::decode(&reply)
    }

    /// Dispatches `message` to the local server as a peer's message would be; resolves once it
    /// is handed over, to the future of its answer.
    fn hand_over<M: WireMessage>(
        &self,
        message: &M,
        expects_reply: bool,
    ) -> Result<impl std::future::Future<Output = manta_transport::DispatchFuture>, AskError> {
        let ServiceTarget::Local { registry, node, .. } = &self.target else {
            unreachable!("only called for a local service")
        };
        let body = wire::encode(message)?;
        let incoming =
            Incoming { peer: *node, target: P::NAME.to_owned(), method: M::ID, body, expects_reply };
        let dispatched = registry.dispatch_local(incoming);
        // Resolves to the answer's future once handed over (the node's own dispatcher does the
        // same with a peer's message).
        #[allow(clippy::async_yields_async)]
        Ok(async move {
            match dispatched {
                Dispatched::Accepted(answer) => answer,
                Dispatched::Deferred(handed_over) => handed_over.await,
            }
        })
    }

    fn local_error(&self, error: RemoteError) -> AskError {
        let node = match &self.target {
            ServiceTarget::Local { node, .. } => node.to_string(),
            ServiceTarget::Remote(remote) => remote.address().node.to_string(),
        };
        AskError::from_call(manta_transport::CallError::Remote(error), &node, P::NAME)
    }
}
