//! `Recipient<M>`: anything that accepts one-way messages of type `M`, local or remote, without
//! naming its actor type. Pub/sub publishers use it: they know the message, not the subscriber.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use actix::{Actor, Context, Handler};
use manta_transport::Transport;

use crate::address::ActorAddress;
use crate::error::AskError;
use crate::remote::ActorRef;
use crate::wire::WireMessage;

type TellFuture = Pin<Box<dyn Future<Output = Result<(), AskError>> + Send>>;

/// A destination for one-way messages of type `M`. Cheap to clone.
pub struct Recipient<M: WireMessage> {
    tell: Arc<dyn Fn(M) -> TellFuture + Send + Sync>,
    description: Arc<str>,
}

impl<M: WireMessage> Clone for Recipient<M> {
    fn clone(&self) -> Self {
        Recipient { tell: self.tell.clone(), description: self.description.clone() }
    }
}

impl<M: WireMessage> std::fmt::Debug for Recipient<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Recipient<{}>({})", std::any::type_name::<M>(), self.description)
    }
}

/// Stands in for the unknown actor type behind a remote recipient: only its name is used.
struct Untyped;

impl Actor for Untyped {
    type Context = Context<Self>;
}

impl<M: WireMessage + actix::Message<Result = ()>> Handler<M> for Untyped {
    type Result = ();

    fn handle(&mut self, _: M, _: &mut Context<Self>) {
        unreachable!("Untyped only names remote actors; it is never started");
    }
}

impl<M> Recipient<M>
where
    M: WireMessage + actix::Message<Result = ()>,
{
    /// The actor at `address`, whatever its type, reached through `transport`. Messages that
    /// it does not accept are reported to the sender's log by the receiving node, not here.
    pub fn remote(transport: Transport, address: ActorAddress) -> Self {
        let description: Arc<str> = address.to_string().into();
        let target: ActorRef<Untyped> = ActorRef::remote(transport, address);
        Recipient {
            tell: Arc::new(move |message| {
                let target = target.clone();
                Box::pin(async move { target.tell(message).await })
            }),
            description,
        }
    }
}

impl<M: WireMessage> Recipient<M> {
    /// The actor behind `actor` (local or remote).
    pub fn of<A>(actor: ActorRef<A>) -> Self
    where
        A: Actor<Context = Context<A>> + Handler<M>,
    {
        let description: Arc<str> = format!("{actor:?}").into();
        Recipient {
            tell: Arc::new(move |message| {
                let actor = actor.clone();
                Box::pin(async move { actor.tell(message).await })
            }),
            description,
        }
    }

    /// Sends `message` one way (see [`ActorRef::tell`]).
    pub async fn tell(&self, message: M) -> Result<(), AskError> {
        (self.tell)(message).await
    }
}
