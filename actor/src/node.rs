//! A node of the bus: the transport plus the registry of named local actors that peers address
//! as `node/name`. The registry is the transport's [`Dispatcher`]: it decodes a message by its
//! wire id and hands it to the actor, in the order the frames arrived.

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::Arc;

use actix::{Actor, Context, Handler};
use bytes::Bytes;
use manta_transport::{
    Answer, DispatchFuture, Dispatched, Dispatcher, Incoming, NodeId, NodeIdentity, RemoteError,
    RemoteErrorKind, StartError, Transport, TransportBuilder,
};
use parking_lot::RwLock;
use serde::Serialize;

use crate::address::ActorAddress;
use crate::error::{AskError, RegisterError};
use crate::local::LocalRef;
use crate::remote::ActorRef;
use crate::wire::{self, WireMessage};

type RouteFn<A> = fn(&LocalRef<A>, Incoming) -> Dispatched;

/// How one message type is handled: through the actor's mailbox, or at once where it arrives.
enum Method<A: Actor> {
    Mailbox(RouteFn<A>),
    Inline(Box<dyn Fn(Incoming) -> Dispatched + Send + Sync>),
    Answering(Box<dyn Fn(Incoming, ReplyTo) + Send + Sync>),
}

/// The typed answer to a message taken by [`Routes::inline_answering`]: send it from wherever
/// the answer is known (any thread). Dropped unsent, the sender gets an error answer.
pub struct Reply<R> {
    to: ReplyTo,
    _answer: PhantomData<fn(R)>,
}

enum ReplyTo {
    /// Written straight to the connection the message came from.
    Wire(Answer),
    /// Handed to the transport's future (a message dispatched without its answer).
    Channel(tokio::sync::oneshot::Sender<Result<Bytes, RemoteError>>),
}

impl ReplyTo {
    fn expected(&self) -> bool {
        match self {
            ReplyTo::Wire(answer) => answer.expected(),
            ReplyTo::Channel(_) => true,
        }
    }

    fn send(self, outcome: Result<Bytes, RemoteError>) {
        match self {
            ReplyTo::Wire(answer) => answer.send(outcome),
            ReplyTo::Channel(sender) => {
                let _ = sender.send(outcome);
            }
        }
    }
}

impl<R: Serialize> Reply<R> {
    /// Sends `value` as the answer (nothing for a one-way message).
    pub fn send(self, value: R) {
        let outcome = if self.to.expected() {
            wire::encode(&value).map_err(|error| error.to_remote())
        } else {
            Ok(Bytes::new())
        };
        self.to.send(outcome);
    }
}

impl<R> std::fmt::Debug for Reply<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.to {
            ReplyTo::Wire(answer) => f.debug_tuple("Reply").field(answer).finish(),
            ReplyTo::Channel(_) => f.write_str("Reply(channel)"),
        }
    }
}

/// The wire messages a registered actor accepts, by id.
pub struct Routes<A: Actor> {
    actor: LocalRef<A>,
    methods: HashMap<u32, Method<A>>,
}

impl<A: Actor<Context = Context<A>>> Routes<A> {
    /// Routes for `actor`; add each message type it accepts from the network with [`Routes::message`].
    pub fn new(actor: LocalRef<A>) -> Self {
        Routes { actor, methods: HashMap::new() }
    }

    /// Accepts `M` from the network.
    ///
    /// # Panics
    /// If another message of this actor has the same wire id: a programming error.
    pub fn message<M>(self) -> Self
    where
        A: Handler<M>,
        M: WireMessage,
    {
        self.insert(M::ID, Method::Mailbox(route_message::<A, M>))
    }

    /// Accepts `M` from the network and handles it with `handler` where it arrives (on the
    /// transport's thread), without the actor's mailbox: a hop between threads less per message.
    /// For messages whose handling only hands work over to another thread: `handler` must be
    /// short and must not block, since every connection's frames are read where it runs; the
    /// future it returns is awaited off the reader's path. Such messages are not ordered with
    /// the ones that go through the mailbox.
    ///
    /// # Panics
    /// If another message of this actor has the same wire id: a programming error.
    pub fn inline<M, F, Fut>(self, handler: F) -> Self
    where
        M: WireMessage,
        F: Fn(M) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = M::Result> + Send + 'static,
    {
        let route = move |incoming: Incoming| {
            let message: M = match decode_message(&incoming) {
                Ok(message) => message,
                Err(error) => return Dispatched::answer(Err(error)),
            };
            let handled = handler(message);
            Dispatched::Accepted(answer(async move { Ok(handled.await) }, incoming.expects_reply))
        };
        self.insert(M::ID, Method::Inline(Box::new(route)))
    }

    /// Accepts `M` from the network and hands it, with its [`Reply`], to `handler` where it
    /// arrives (on the transport's thread), without the actor's mailbox; whoever ends up with
    /// the answer sends it through the reply, from any thread, and the transport's thread is
    /// not woken for it. As [`Routes::inline`], `handler` must be short and must not block.
    ///
    /// # Panics
    /// If another message of this actor has the same wire id: a programming error.
    pub fn inline_answering<M, F>(self, handler: F) -> Self
    where
        M: WireMessage,
        F: Fn(M, Reply<M::Result>) + Send + Sync + 'static,
    {
        let route = move |incoming: Incoming, to: ReplyTo| match decode_message::<M>(&incoming) {
            Ok(message) => handler(message, Reply { to, _answer: PhantomData }),
            Err(error) => to.send(Err(error)),
        };
        self.insert(M::ID, Method::Answering(Box::new(route)))
    }

    fn insert(mut self, id: u32, method: Method<A>) -> Self {
        let previous = self.methods.insert(id, method);
        assert!(previous.is_none(), "two messages of actor {} share wire id {id}", self.actor.name());
        self
    }
}

trait Route: Send + Sync {
    fn dispatch(&self, incoming: Incoming) -> Dispatched;
    fn dispatch_answering(&self, incoming: Incoming, answer: Answer) -> Result<(), (Dispatched, Answer)>;
    fn local(&self) -> &(dyn Any + Send + Sync);
}

impl<A: Actor<Context = Context<A>>> Route for Routes<A> {
    fn dispatch(&self, incoming: Incoming) -> Dispatched {
        match self.methods.get(&incoming.method) {
            Some(Method::Mailbox(route)) => route(&self.actor, incoming),
            Some(Method::Inline(route)) => route(incoming),
            Some(Method::Answering(route)) => {
                // Without the connection's answer (a message that waited behind another): the
                // reply goes through the transport's future.
                let (sender, receiver) = tokio::sync::oneshot::channel();
                let expects_reply = incoming.expects_reply;
                route(incoming, ReplyTo::Channel(sender));
                Dispatched::Accepted(Box::pin(async move {
                    match receiver.await {
                        Ok(outcome) => outcome,
                        Err(_) if !expects_reply => Ok(Bytes::new()),
                        Err(_) => Err(RemoteError::new(
                            RemoteErrorKind::Internal,
                            "the request was dropped unanswered",
                        )),
                    }
                }))
            }
            None => Dispatched::answer(Err(RemoteError::new(
                RemoteErrorKind::UnknownMethod,
                format!("actor {:?} does not accept message id {}", incoming.target, incoming.method),
            ))),
        }
    }

    fn dispatch_answering(&self, incoming: Incoming, answer: Answer) -> Result<(), (Dispatched, Answer)> {
        match self.methods.get(&incoming.method) {
            Some(Method::Answering(route)) => {
                route(incoming, ReplyTo::Wire(answer));
                Ok(())
            }
            _ => Err((self.dispatch(incoming), answer)),
        }
    }

    fn local(&self) -> &(dyn Any + Send + Sync) {
        &self.actor
    }
}

fn route_message<A, M>(actor: &LocalRef<A>, incoming: Incoming) -> Dispatched
where
    A: Actor<Context = Context<A>> + Handler<M>,
    M: WireMessage,
{
    let message: M = match decode_message(&incoming) {
        Ok(message) => message,
        Err(error) => return Dispatched::answer(Err(error)),
    };
    let expects_reply = incoming.expects_reply;
    match actor.try_admit() {
        Some(Ok(admitted)) => {
            Dispatched::Accepted(answer(admitted.ask_holding(message, !M::PARKS), expects_reply))
        }
        Some(Err(error)) => Dispatched::answer(Err(error.to_remote())),
        None => {
            let actor = actor.clone();
            // Resolves to the answer future once the message is in the mailbox; the transport
            // awaits that hand-over before reading on, and the answer afterwards.
            #[allow(clippy::async_yields_async)]
            Dispatched::Deferred(Box::pin(async move {
                match actor.admit().await {
                    Ok(admitted) => answer(admitted.ask_holding(message, !M::PARKS), expects_reply),
                    Err(error) => Box::pin(std::future::ready(Err(error.to_remote()))) as DispatchFuture,
                }
            }))
        }
    }
}

fn decode_message<M: WireMessage>(incoming: &Incoming) -> Result<M, RemoteError> {
    wire::decode(&incoming.body).map_err(|error| {
        RemoteError::new(
            RemoteErrorKind::BadMessage,
            format!("{} (id {}): {error}", std::any::type_name::<M>(), M::ID),
        )
    })
}

fn answer<R: Serialize>(
    handled: impl Future<Output = Result<R, AskError>> + Send + 'static,
    expects_reply: bool,
) -> DispatchFuture {
    Box::pin(async move {
        let reply = handled.await.map_err(|error| error.to_remote())?;
        if expects_reply {
            wire::encode(&reply).map_err(|error| error.to_remote())
        } else {
            Ok(Bytes::new())
        }
    })
}

#[derive(Default)]
pub(crate) struct Registry {
    routes: RwLock<HashMap<String, Arc<dyn Route>>>,
    /// Handlers of bulk transfers, by target name.
    bulk: RwLock<HashMap<String, crate::bulk::BulkRoute>>,
}

impl Registry {
    /// Dispatches a message from this very process, as a peer's would be.
    pub(crate) fn dispatch_local(&self, incoming: Incoming) -> Dispatched {
        self.dispatch(incoming)
    }
}

impl Dispatcher for Registry {
    fn dispatch_bulk(&self, incoming: Incoming, body: manta_transport::BulkBody) -> DispatchFuture {
        let route = self.bulk.read().get(&incoming.target).cloned();
        match route {
            Some(route) => route(incoming, body),
            None => Box::pin(std::future::ready(Err(RemoteError::new(
                RemoteErrorKind::NoSuchTarget,
                format!("nothing named {:?} takes bulk transfers", incoming.target),
            )))),
        }
    }

    fn dispatch_answering(&self, incoming: Incoming, answer: Answer) -> Result<(), (Dispatched, Answer)> {
        let route = self.routes.read().get(&incoming.target).cloned();
        match route {
            Some(route) => route.dispatch_answering(incoming, answer),
            None => Err((self.dispatch(incoming), answer)),
        }
    }

    fn dispatch(&self, incoming: Incoming) -> Dispatched {
        let route = self.routes.read().get(&incoming.target).cloned();
        match route {
            Some(route) => route.dispatch(incoming),
            None => Dispatched::answer(Err(RemoteError::new(
                RemoteErrorKind::NoSuchTarget,
                format!("no actor named {:?}", incoming.target),
            ))),
        }
    }
}

/// A process's presence on the bus. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    inner: Arc<NodeInner>,
}

struct NodeInner {
    transport: Transport,
    registry: Arc<Registry>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("transport", &self.inner.transport).finish_non_exhaustive()
    }
}

impl Node {
    /// Starts a node on the transport `transport` describes (identity, address, limits,
    /// admission). The node installs its registry as the transport's dispatcher, replacing any
    /// the builder had.
    pub fn start(transport: TransportBuilder) -> Result<Node, StartError> {
        let registry = Arc::new(Registry::default());
        let transport = transport.dispatcher(registry.clone()).start()?;
        Ok(Node { inner: Arc::new(NodeInner { transport, registry }) })
    }

    /// Starts a node with the default transport settings on an ephemeral loopback port.
    pub fn start_local(identity: NodeIdentity) -> Result<Node, StartError> {
        Node::start(Transport::builder(identity))
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.inner.transport.node_id()
    }

    /// The address peers reach this node at.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.transport.local_addr()
    }

    /// The arbiter of this node's transport thread, for light actors that should answer the
    /// network without a thread hop (see [`Transport::arbiter`]).
    pub fn arbiter(&self) -> &actix_rt::ArbiterHandle {
        self.inner.transport.arbiter()
    }

    /// The underlying transport.
    pub fn transport(&self) -> &Transport {
        &self.inner.transport
    }

    /// Makes an actor reachable from peers as `this-node/name`. The registration keeps the
    /// actor alive until [`Node::unregister`].
    pub fn register<A: Actor<Context = Context<A>>>(
        &self,
        name: &str,
        routes: Routes<A>,
    ) -> Result<(), RegisterError> {
        let mut table = self.inner.registry.routes.write();
        if table.contains_key(name) {
            return Err(RegisterError::NameTaken(name.to_owned()));
        }
        table.insert(name.to_owned(), Arc::new(routes));
        Ok(())
    }

    /// Takes bulk transfers described by `M` for `name` on this node: `handler` gets the
    /// sender's node, the metadata and the body (read it through), and its answer goes back to
    /// the sender. It runs on the transport's thread: it must only await, never block.
    pub fn register_bulk<M, F, Fut>(&self, name: &str, handler: F) -> Result<(), RegisterError>
    where
        M: WireMessage,
        F: Fn(NodeId, M, manta_transport::BulkBody) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = M::Result> + Send + 'static,
    {
        let mut table = self.inner.registry.bulk.write();
        if table.contains_key(name) {
            return Err(RegisterError::NameTaken(name.to_owned()));
        }
        table.insert(name.to_owned(), crate::bulk::route(handler));
        Ok(())
    }

    /// Opens a bulk transfer of `len` bytes described by `meta` to `name` on the node at
    /// `node` (always over the transport, even to this very node).
    pub async fn open_bulk<M: WireMessage>(
        &self,
        node: SocketAddr,
        name: &str,
        meta: &M,
        len: u64,
    ) -> Result<crate::bulk::OutgoingBulk<M>, AskError> {
        crate::bulk::OutgoingBulk::open(&self.inner.transport, node, name, meta, len).await
    }

    /// Removes a registration; returns whether there was one.
    pub fn unregister(&self, name: &str) -> bool {
        self.inner.registry.routes.write().remove(name).is_some()
    }

    /// The service `P` on the node at `node` (registered there as `P::NAME`): through this
    /// node's registry when `node` is this node, over the transport otherwise.
    pub fn service<P: manta_proto::Protocol>(&self, node: SocketAddr) -> crate::ServiceRef<P> {
        if node == self.local_addr() {
            let timeout = self.inner.transport.config().call_timeout;
            return crate::ServiceRef::local(self.inner.registry.clone(), self.node_id(), timeout);
        }
        let address = ActorAddress::new(node, P::NAME);
        crate::ServiceRef::remote(crate::remote::RemoteTarget::new(self.inner.transport.clone(), address))
    }

    /// The actor at `address`: a direct local reference when the address is this node's own,
    /// a remote one otherwise. Either way the caller's code is the same.
    pub fn actor<A: Actor<Context = Context<A>>>(&self, address: ActorAddress) -> ActorRef<A> {
        if address.node == self.local_addr() {
            let route = self.inner.registry.routes.read().get(&address.name).cloned();
            if let Some(local) = route.as_ref().and_then(|route| route.local().downcast_ref::<LocalRef<A>>())
            {
                return ActorRef::local(local.clone());
            }
        }
        ActorRef::remote(self.inner.transport.clone(), address)
    }
}
