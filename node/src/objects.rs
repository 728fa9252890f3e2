//! The object manager: a node's store service (`node/store`), which lets processes other than
//! the store's create, seal and delete objects, and moves objects between nodes.
//!
//! A pull (Ray's object manager, reduced to its protocol): a reader on this node whose object
//! is in another node's store asks this node's manager ([`PullObject`]); pulls of one object
//! are merged, and an object already here is answered at once. The manager asks the holder's
//! manager to send it ([`SendObject`]); the holder pins the object and writes its bytes over a
//! bulk stream of their own ([`ObjectTransfer`], in [`CHUNK_BYTES`] writes, QUIC's flow control
//! bounding the bytes in flight) straight into a new object of this store, which the receiving
//! end seals. The copy is secondary: its owner is told ([`AddObjectCopy`]) and deletes it with
//! the object; an owner that no longer has the object answers `false` (or cannot be asked: it
//! died, and its objects with it), and the copy goes at once. The store evicts secondary
//! copies no reader pins, least recently used first, when an allocation needs their room (a
//! later reader here pulls the object again from its primary).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use manta_actor::{
    spawn, Actor, AsyncContext, Context, Handler, Message, MessageResult, Node, RegisterError,
    ResponseFuture, Routes, ServiceRef, SpawnOptions,
};
use manta_objectstore::{ObjectId, ObjectStore, StoreError};
use manta_proto::worker::{
    AddObjectCopy, CreateStoreObject, DeleteStoreObject, GetStoreStats, NodeLocation, ObjectTransfer, Owner,
    PullError, PullObject, SealStoreObject, SendObject, Store, StoreFigures, StoreRefusal, WireLocation,
};
use manta_proto::{NodeId, OwnerAddress, Protocol};
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tracing::debug;

/// The bytes of one write of a transfer (Ray's object chunks are 5 MiB too).
pub const CHUNK_BYTES: usize = 5 * 1024 * 1024;

/// A store error as it travels to the writer that asked.
pub fn refusal(error: StoreError) -> StoreRefusal {
    match error {
        StoreError::Full { requested, free, largest_free, capacity } => {
            StoreRefusal::Full { requested, free, largest_free, capacity }
        }
        other => StoreRefusal::Other(other.to_string()),
    }
}

type Waiter = oneshot::Sender<Result<WireLocation, PullError>>;

/// The object manager actor.
struct ObjectManager {
    store: Arc<Mutex<ObjectStore>>,
    node: Node,
    /// Pulls under way, by object, with the readers waiting for each.
    pulls: HashMap<ObjectId, Vec<Waiter>>,
}

impl Actor for ObjectManager {
    type Context = Context<Self>;
}

/// Starts the object manager of `node`'s `store` and registers it (messages and transfers).
pub(crate) fn start(node: &Node, store: Arc<Mutex<ObjectStore>>) -> Result<(), RegisterError> {
    let manager = spawn(node.arbiter(), SpawnOptions::named(Store::NAME).max_restarts(u32::MAX), {
        let (store, node) = (store.clone(), node.clone());
        move || ObjectManager { store: store.clone(), node: node.clone(), pulls: HashMap::new() }
    });
    node.register(
        Store::NAME,
        Routes::new(manager)
            .message::<CreateStoreObject>()
            .message::<SealStoreObject>()
            .message::<DeleteStoreObject>()
            .message::<PullObject>()
            .message::<SendObject>()
            .message::<GetStoreStats>(),
    )?;
    node.register_bulk(Store::NAME, move |peer, transfer: ObjectTransfer, body| {
        receive(store.clone(), peer, transfer.id, body)
    })
}

/// Writes a transfer's body into a new object of `store`, and seals it.
async fn receive(
    store: Arc<Mutex<ObjectStore>>,
    peer: NodeId,
    id: ObjectId,
    mut body: manta_transport::BulkBody,
) -> Result<WireLocation, StoreRefusal> {
    let len = body.remaining();
    let mut writer = store.lock().create_object(id, len).map_err(refusal)?;
    let mut written = 0usize;
    let outcome = loop {
        match body.next_chunk().await {
            Ok(Some(chunk)) => {
                // The body never carries more than announced (the transport checks).
                writer.as_mut_slice()[written..written + chunk.len()].copy_from_slice(&chunk);
                written += chunk.len();
            }
            Ok(None) => break Ok(()),
            Err(error) => break Err(error),
        }
    };
    let mut store = store.lock();
    match outcome {
        Ok(()) => {
            let sealed = store.seal(writer).map_err(refusal)?;
            // A copy pulled here: secondary, evictable when the store needs its room.
            store.mark_secondary(id);
            Ok(sealed.into())
        }
        Err(error) => {
            debug!(%peer, %id, %error, "an object transfer broke off");
            let _ = store.abort(writer);
            Err(StoreRefusal::Other(format!("the transfer broke off: {error}")))
        }
    }
}

impl Handler<CreateStoreObject> for ObjectManager {
    type Result = Result<WireLocation, StoreRefusal>;

    fn handle(&mut self, request: CreateStoreObject, _: &mut Context<Self>) -> Self::Result {
        self.store.lock().create_for_peer(request.id, request.len).map(Into::into).map_err(refusal)
    }
}

impl Handler<SealStoreObject> for ObjectManager {
    type Result = Result<WireLocation, StoreRefusal>;

    fn handle(&mut self, request: SealStoreObject, _: &mut Context<Self>) -> Self::Result {
        self.store.lock().seal_id(request.id).map(Into::into).map_err(refusal)
    }
}

impl Handler<DeleteStoreObject> for ObjectManager {
    type Result = ();

    fn handle(&mut self, request: DeleteStoreObject, _: &mut Context<Self>) {
        let _ = self.store.lock().delete(request.id);
    }
}

impl Handler<GetStoreStats> for ObjectManager {
    type Result = MessageResult<GetStoreStats>;

    fn handle(&mut self, _: GetStoreStats, _: &mut Context<Self>) -> Self::Result {
        let mut store = self.store.lock();
        store.reclaim();
        MessageResult(StoreFigures {
            used_bytes: store.used_bytes(),
            capacity: store.capacity(),
            objects: store.len() as u64,
            resident_bytes: store.reader().arena().resident_bytes(),
            evicted: store.evicted(),
        })
    }
}

/// A pull ended (the holder's answer to [`SendObject`]).
struct Pulled {
    id: ObjectId,
    outcome: Result<WireLocation, PullError>,
    owner: OwnerAddress,
}

impl Message for Pulled {
    type Result = ();
}

impl Handler<PullObject> for ObjectManager {
    type Result = ResponseFuture<Result<WireLocation, PullError>>;

    fn handle(&mut self, request: PullObject, ctx: &mut Context<Self>) -> Self::Result {
        let PullObject { id, from, owner } = request;
        // Here already: the primary copy, or one pulled before (used now: evicted last).
        let mut store = self.store.lock();
        if let Some(location) = store.locate(id) {
            store.touch(id);
            return Box::pin(std::future::ready(Ok(location.into())));
        }
        drop(store);
        if from.node == self.node.node_id() {
            return Box::pin(std::future::ready(Err(PullError::Gone { node: from.node })));
        }
        let (waiter, answer) = oneshot::channel();
        let merged = self.pulls.contains_key(&id);
        self.pulls.entry(id).or_default().push(waiter);
        if !merged {
            let holder: ServiceRef<Store> = self.node.service(from.store);
            let (me, node) = (ctx.address(), self.node.local_addr());
            tokio::spawn(async move {
                let outcome = match holder.ask_unbounded(SendObject { id, at: from.at, to: node }).await {
                    Ok(outcome) => outcome,
                    Err(error) => Err(PullError::Transfer { node: from.node, reason: error.to_string() }),
                };
                me.do_send(Pulled { id, outcome, owner });
            });
        }
        Box::pin(async move {
            answer.await.unwrap_or_else(|_| {
                Err(PullError::Transfer {
                    node: from.node,
                    reason: "the object manager restarted".to_owned(),
                })
            })
        })
    }
}

impl Handler<Pulled> for ObjectManager {
    type Result = ();

    fn handle(&mut self, Pulled { id, mut outcome, owner }: Pulled, _: &mut Context<Self>) {
        if outcome.is_err() {
            // A pull of the same object that raced this one may have put it here.
            if let Some(location) = self.store.lock().locate(id) {
                outcome = Ok(location.into());
            }
        }
        if let Ok(at) = outcome {
            // The owner deletes the copy with the object; if it has none any more (or is gone,
            // and its objects with it), the copy goes.
            let size = self.store.lock().reader().pin(at.into()).map_or(0, |bytes| bytes.len() as u64);
            let copy = NodeLocation { node: self.node.node_id(), store: self.node.local_addr(), at, size };
            let owner_service: ServiceRef<Owner> = self.node.service(owner.0);
            let store = self.store.clone();
            tokio::spawn(async move {
                if !matches!(owner_service.ask(AddObjectCopy { id, copy }).await, Ok(true)) {
                    let _ = store.lock().delete(id);
                }
            });
        }
        for waiter in self.pulls.remove(&id).unwrap_or_default() {
            let _ = waiter.send(outcome.clone());
        }
    }
}

impl Handler<SendObject> for ObjectManager {
    type Result = ResponseFuture<Result<WireLocation, PullError>>;

    fn handle(&mut self, request: SendObject, _: &mut Context<Self>) -> Self::Result {
        let SendObject { id, at, to } = request;
        let me = self.node.node_id();
        let Some(bytes) = self.store.lock().reader().pin(at.into()) else {
            return Box::pin(std::future::ready(Err(PullError::Gone { node: me })));
        };
        let node = self.node.clone();
        Box::pin(async move { send(&node, id, bytes, to).await })
    }
}

/// Writes `bytes` (pinned in this store) to the object manager at `to`.
async fn send(
    node: &Node,
    id: ObjectId,
    bytes: bytes::Bytes,
    to: SocketAddr,
) -> Result<WireLocation, PullError> {
    let broke = |error: manta_actor::AskError| PullError::Transfer {
        node: node.node_id(),
        reason: error.to_string(),
    };
    let mut transfer =
        node.open_bulk(to, Store::NAME, &ObjectTransfer { id }, bytes.len() as u64).await.map_err(broke)?;
    let mut offset = 0;
    while offset < bytes.len() {
        let end = (offset + CHUNK_BYTES).min(bytes.len());
        if let Err(error) = transfer.write(bytes.slice(offset..end)).await {
            // The receiver may have refused the object (no room) before reading it: its
            // answer says why, better than the broken stream does.
            return match transfer.early_answer().await {
                Ok(Err(refusal)) => Err(PullError::NoRoom(refusal)),
                _ => Err(broke(error)),
            };
        }
        offset = end;
    }
    match transfer.finish().await.map_err(broke)? {
        Ok(location) => Ok(location),
        Err(refusal) => Err(PullError::NoRoom(refusal)),
    }
}
