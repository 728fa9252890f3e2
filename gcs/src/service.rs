//! The GCS as an actor on the bus: registered as `gcs` on its node, it answers the requests in
//! [`requests`] with the core and sends each subscriber its publications, in order.
//!
//! It is a light, non-blocking actor, so it runs on the node's transport arbiter: a request
//! crosses no thread between the network and the tables.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use manta_actor::{
    spawn, Actor, ActorAddress, Context, Handler, LocalRef, Node, Recipient, RegisterError, Routes,
    SpawnOptions,
};
use tokio::sync::mpsc;
use tracing::warn;

use crate::core::{GcsCore, GcsError, SubscriberId};
use crate::requests::*;
use crate::storage::Storage;
use crate::wire::Change;

/// The name the GCS is registered under on its node.
pub const GCS_NAME: &str = <manta_proto::gcs::Gcs as manta_proto::Protocol>::NAME;

/// Publications queued for one subscriber at most; a subscriber that falls this far behind is
/// dropped (and logged) rather than let the GCS's memory grow without bound.
pub const SUBSCRIBER_QUEUE_MAX: usize = 10_000;

/// The GCS actor.
pub struct GcsActor<S: Storage + 'static> {
    core: GcsCore<S>,
    node: Node,
    subscribers: HashMap<SubscriberId, mpsc::Sender<Change>>,
    next_subscriber: u64,
}

impl<S: Storage + 'static> Actor for GcsActor<S> {
    type Context = Context<Self>;
}

impl<S: Storage + 'static> GcsActor<S> {
    /// Starts the GCS over `storage` on `node`'s arbiter and registers it as [`GCS_NAME`].
    /// `storage` is consumed by the first incarnation; a restarted incarnation (after a panic)
    /// starts from `fallback` storage (an empty in-memory store for the embedded GCS).
    pub fn start(
        node: &Node,
        storage: S,
        fallback: impl Fn() -> S + Send + 'static,
    ) -> Result<LocalRef<GcsActor<S>>, RegisterError>
    where
        S: Send,
    {
        let first = std::sync::Mutex::new(Some(storage));
        let actor_node = node.clone();
        let gcs = spawn(node.arbiter(), SpawnOptions::named(GCS_NAME).max_restarts(3), move || {
            // The first incarnation takes the given storage; a lock held here cannot be poisoned
            // by anyone else (only this factory touches it, on one thread).
            let storage = first.lock().ok().and_then(|mut slot| slot.take()).unwrap_or_else(&fallback);
            GcsActor {
                core: GcsCore::new(storage),
                node: actor_node.clone(),
                subscribers: HashMap::new(),
                next_subscriber: 1,
            }
        });
        let routes = Routes::new(gcs.clone())
            .message::<RegisterNode>()
            .message::<MarkNodeDead>()
            .message::<GetAllNodes>()
            .message::<ReportWorker>()
            .message::<ReportWorkerExit>()
            .message::<GetAllWorkers>()
            .message::<ListActors>()
            .message::<AddJob>()
            .message::<GetJob>()
            .message::<ReportResources>()
            .message::<GetClusterView>()
            .message::<FinishJob>()
            .message::<RegisterActor>()
            .message::<ActorStarted>()
            .message::<ActorFailed>()
            .message::<KillActor>()
            .message::<GetActor>()
            .message::<GetNamedActor>()
            .message::<ListNamedActors>()
            .message::<KvPut>()
            .message::<KvGet>()
            .message::<KvDelete>()
            .message::<KvKeys>()
            .message::<Subscribe>()
            .message::<Unsubscribe>();
        node.register(GCS_NAME, routes)?;
        Ok(gcs)
    }

    /// Hands the publications of the last request to their subscribers' queues.
    fn flush(&mut self) {
        for publication in self.core.take_publications() {
            let Some(queue) = self.subscribers.get(&publication.subscriber) else { continue };
            if queue.try_send(publication.change).is_err() {
                warn!(
                    subscriber = publication.subscriber.0,
                    "dropping a subscriber that fell behind or went away"
                );
                self.subscribers.remove(&publication.subscriber);
                self.core.unsubscribe_all(publication.subscriber);
            }
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// Implements a request handler: run `$body` with the core, then flush publications.
macro_rules! handle {
    ($message:ty, |$core:ident, $request:ident| $body:expr) => {
        impl<S: Storage + 'static> Handler<$message> for GcsActor<S> {
            type Result = manta_actor::MessageResult<$message>;

            fn handle(&mut self, $request: $message, _: &mut Context<Self>) -> Self::Result {
                let $core = &mut self.core;
                let reply = $body;
                self.flush();
                manta_actor::MessageResult(reply)
            }
        }
    };
}

handle!(RegisterNode, |core, request| core.register_node(request.0));
handle!(MarkNodeDead, |core, request| core.mark_node_dead(request.node_id, &request.cause));
handle!(GetAllNodes, |core, _request| core.nodes());
handle!(ReportWorker, |core, request| {
    // A report has no answer: a record that could not be stored is logged, and the next
    // report of the worker stores it again.
    if let Err(error) = core.worker_reported(request.0) {
        warn!(%error, "a worker's report was not stored");
    }
});
handle!(ReportWorkerExit, |core, request| core.worker_exited(
    request.node_id,
    request.worker,
    request.pid,
    &request.exit
));
handle!(GetAllWorkers, |core, _request| core.workers());
handle!(ListActors, |core, _request| core.actors());
handle!(AddJob, |core, request| core.add_job_launched(&request.driver_address, request.launch, now_ms()));
handle!(GetJob, |core, request| core.job(request.0));
handle!(ReportResources, |core, request| core.report_resources(
    request.node_id,
    request.available,
    request.pending,
    request.total
));
handle!(GetClusterView, |core, _request| core.cluster_view());
handle!(FinishJob, |core, request| core.finish_job(request.job_id, now_ms()));
handle!(RegisterActor, |core, request| core.register_actor(request.0));
handle!(ActorStarted, |core, request| core.actor_started(
    request.actor_id,
    request.node_id,
    &request.address
));
handle!(ActorFailed, |core, request| {
    core.incarnation_failed(request.actor_id, &request.cause, request.incarnation)
});
handle!(KillActor, |core, request| core.kill_actor(request.actor_id, &request.cause));
handle!(GetActor, |core, request| core.actor(request.0));
handle!(GetNamedActor, |core, request| core.named_actor(&request.namespace, &request.name));
handle!(ListNamedActors, |core, request| core.named_actors(&request.namespace));
handle!(KvPut, |core, request| core.kv_put(
    &request.namespace,
    &request.key,
    request.value.into_vec(),
    request.overwrite
));
handle!(KvGet, |core, request| core
    .kv_get(&request.namespace, &request.key)
    .map(|value| value.map(serde_bytes::ByteBuf::from)));
handle!(KvDelete, |core, request| core.kv_delete(&request.namespace, &request.key));
handle!(KvKeys, |core, request| core.kv_keys(&request.namespace, &request.prefix));

impl<S: Storage + 'static> Handler<Subscribe> for GcsActor<S> {
    type Result = manta_actor::MessageResult<Subscribe>;

    fn handle(&mut self, request: Subscribe, _: &mut Context<Self>) -> Self::Result {
        let address: ActorAddress = match request.subscriber.parse() {
            Ok(address) => address,
            Err(_) => return manta_actor::MessageResult(Err(GcsError::BadAddress(request.subscriber))),
        };
        let id = SubscriberId(self.next_subscriber);
        self.next_subscriber += 1;
        let recipient: Recipient<Published> = Recipient::remote(self.node.transport().clone(), address);
        let (queue, mut pending) = mpsc::channel(SUBSCRIBER_QUEUE_MAX);
        // One forwarding task per subscriber keeps its publications in order.
        tokio::spawn(async move {
            while let Some(change) = pending.recv().await {
                if let Err(error) = recipient.tell(Published(change)).await {
                    warn!(subscriber = ?recipient, %error, "a subscriber is unreachable; stopping its publications");
                    return;
                }
            }
        });
        self.subscribers.insert(id, queue);
        for channel in request.channels {
            self.core.subscribe(id, channel);
        }
        manta_actor::MessageResult(Ok(id))
    }
}

impl<S: Storage + 'static> Handler<Unsubscribe> for GcsActor<S> {
    type Result = ();

    fn handle(&mut self, request: Unsubscribe, _: &mut Context<Self>) {
        self.subscribers.remove(&request.0);
        self.core.unsubscribe_all(request.0);
    }
}
