//! The actor manager (Ray's `gcs_actor_manager`): beside the GCS on the head node, it creates
//! actors (registering them in the GCS, which claims their names), takes a *dedicated* lease
//! for each from a raylet (a worker held for the actor's life), starts the actor in it, watches
//! the lease, and on the worker's death asks the GCS whether to restart (restarts left) or not.
//! Its path to the raylets is the one placement groups' two-phase commit will take.
//!
//! Callers reach it as `ServiceRef<manta_proto::worker::ActorManager>`: `CreateActor`,
//! `WatchActor` (parked until the actor's state changes) and `KillActor`.

use std::collections::HashMap;
use std::sync::Arc;

use manta_actor::{
    spawn, Actor, Context, Handler, LocalRef, Node, RegisterError, ResponseFuture, Routes, ServiceRef,
    SpawnOptions,
};
use manta_proto::gcs::requests::{
    ActorFailed, ActorStarted, GetActor, KillActor as GcsKillActor, RegisterActor,
};
use manta_proto::gcs::wire::{ActorInfo, ActorState};
use manta_proto::gcs::Gcs;
use manta_proto::raylet::requests::{LeaseOutcome, RequestLease, ReturnLease, WatchLease};
use manta_proto::raylet::Raylet;
use manta_proto::worker::{
    ActorSpec, CreateActor, CreateActorError, Executor, KillActor, StartActor, WatchActor,
};
use manta_proto::{ActorId, NodeId, Protocol};
use parking_lot::Mutex;
use tokio::sync::watch;
use tracing::{debug, warn};

/// The name the actor manager is registered under on the head node.
pub const ACTOR_MANAGER_NAME: &str = <manta_proto::worker::ActorManager as Protocol>::NAME;

struct Managed {
    spec: ActorSpec,
    watch: watch::Sender<ActorInfo>,
    lease: Option<u64>,
    killed: bool,
}

type Table = Arc<Mutex<HashMap<ActorId, Managed>>>;

/// Starts, watches and restarts actors; lives beside the GCS.
pub struct ActorManager {
    shell: Shell,
}

impl Actor for ActorManager {
    type Context = Context<Self>;
}

impl ActorManager {
    /// Starts the manager on `node` and registers it as [`ACTOR_MANAGER_NAME`].
    pub fn start(
        node: &Node,
        gcs: ServiceRef<Gcs>,
        raylet: ServiceRef<Raylet>,
        node_id: NodeId,
    ) -> Result<LocalRef<ActorManager>, RegisterError> {
        let shell = Shell { gcs, raylet, node: node.clone(), node_id, actors: Table::default() };
        let manager = spawn(
            node.arbiter(),
            SpawnOptions::named(ACTOR_MANAGER_NAME).max_restarts(u32::MAX),
            move || ActorManager { shell: shell.clone() },
        );
        node.register(
            ACTOR_MANAGER_NAME,
            Routes::new(manager.clone())
                .message::<CreateActor>()
                .message::<WatchActor>()
                .message::<KillActor>(),
        )?;
        Ok(manager)
    }
}

/// What the manager's flows need: the GCS, the raylet, the node and the table of actors.
#[derive(Clone)]
struct Shell {
    gcs: ServiceRef<Gcs>,
    raylet: ServiceRef<Raylet>,
    node: Node,
    node_id: NodeId,
    actors: Table,
}

impl Shell {
    async fn refresh(&self, actor_id: ActorId) -> Option<ActorInfo> {
        let info = self.gcs.ask(GetActor(actor_id)).await.ok()?.ok()??;
        if let Some(managed) = self.actors.lock().get(&actor_id) {
            managed.watch.send_replace(info.clone());
        }
        Some(info)
    }

    async fn mark_dead(&self, actor_id: ActorId, cause: String) {
        let _ = self.gcs.ask(GcsKillActor { actor_id, cause }).await;
        self.refresh(actor_id).await;
    }

    /// Runs an actor's incarnations until it is dead.
    async fn run(self, actor_id: ActorId) {
        loop {
            let Some(spec) = self.actors.lock().get(&actor_id).map(|managed| managed.spec.clone()) else {
                return;
            };
            let label = spec.info.class.clone();
            let request = RequestLease {
                cpus: spec.num_cpus,
                gpus: spec.num_gpus,
                resources: spec.resources.clone(),
                dedicated: true,
                strategy: spec.scheduling_strategy,
                // The actor manager lives with the raylet: its requests outlive any worker.
                requester: None,
            };
            let (lease, address, pid) = match self.raylet.ask_unbounded(request).await {
                Ok(LeaseOutcome::Granted { lease, address, pid }) => (lease, address, pid),
                Ok(LeaseOutcome::Infeasible { demand }) => {
                    return self.mark_dead(actor_id, format!("infeasible: no node has {demand}")).await;
                }
                Ok(LeaseOutcome::WorkerStartFailed { exit }) => {
                    return self.mark_dead(actor_id, format!("no worker could be started ({exit})")).await;
                }
                Ok(other) => return self.mark_dead(actor_id, format!("no worker: {other:?}")).await,
                Err(error) => return self.mark_dead(actor_id, format!("the raylet: {error}")).await,
            };
            let kept = match self.actors.lock().get_mut(&actor_id) {
                Some(managed) if !managed.killed => {
                    managed.lease = Some(lease);
                    true
                }
                _ => false,
            };
            if !kept {
                let _ = self.raylet.tell(ReturnLease { lease, reusable: false }).await;
                return;
            }
            let executor: ServiceRef<Executor> = match address.parse() {
                Ok(socket) => self.node.service(socket),
                Err(_) => return self.mark_dead(actor_id, format!("bad worker address {address}")).await,
            };
            let death = self.raylet.ask_unbounded(WatchLease { lease });
            tokio::pin!(death);
            let start = StartActor {
                actor_id,
                class: spec.info.class.clone(),
                args: spec.args.clone(),
                max_concurrency: spec.max_concurrency,
            };
            let started = tokio::select! {
                started = executor.ask_unbounded(start) => Some(started),
                _ = &mut death => None,
            };
            let exit = match started {
                Some(Ok(Ok(()))) => {
                    let _ = self
                        .gcs
                        .ask(ActorStarted { actor_id, node_id: self.node_id, address: address.clone() })
                        .await;
                    self.refresh(actor_id).await;
                    debug!(actor = %label, pid, "actor started");
                    match death.await {
                        Ok(Some(exit)) => exit,
                        // The lease was returned: the actor was killed.
                        _ => return,
                    }
                }
                Some(Ok(Err(failure))) => {
                    let _ = self.raylet.tell(ReturnLease { lease, reusable: false }).await;
                    return self
                        .mark_dead(actor_id, format!("its constructor failed: {}", failure.message))
                        .await;
                }
                Some(Err(error)) => {
                    warn!(actor = %label, %error, "starting an actor failed");
                    let _ = self.raylet.tell(ReturnLease { lease, reusable: false }).await;
                    error.to_string()
                }
                None => "its worker died while it started".to_owned(),
            };
            if self.actors.lock().get(&actor_id).is_none_or(|managed| managed.killed) {
                return;
            }
            let cause = format!("its worker pid {pid} died ({exit})");
            match self.gcs.ask(ActorFailed { actor_id, cause }).await {
                Ok(Ok(ActorState::Restarting)) => {
                    self.refresh(actor_id).await;
                    debug!(actor = %label, "restarting actor");
                }
                _ => {
                    self.refresh(actor_id).await;
                    return;
                }
            }
        }
    }
}

impl Handler<CreateActor> for ActorManager {
    type Result = ResponseFuture<Result<(), CreateActorError>>;

    fn handle(&mut self, request: CreateActor, _: &mut Context<Self>) -> Self::Result {
        let shell = self.shell.clone();
        Box::pin(async move {
            let spec = request.0;
            let actor_id = spec.info.actor_id;
            match shell.gcs.ask(RegisterActor(spec.info.clone())).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => return Err(CreateActorError::Refused(error)),
                Err(error) => return Err(CreateActorError::GcsUnreachable(error.to_string())),
            }
            let info = shell
                .gcs
                .ask(GetActor(actor_id))
                .await
                .ok()
                .and_then(Result::ok)
                .flatten()
                .unwrap_or_else(|| spec.info.clone());
            let (watch, _) = watch::channel(info);
            shell.actors.lock().insert(actor_id, Managed { spec, watch, lease: None, killed: false });
            tokio::spawn(shell.run(actor_id));
            Ok(())
        })
    }
}

impl Handler<WatchActor> for ActorManager {
    type Result = ResponseFuture<Option<ActorInfo>>;

    fn handle(&mut self, request: WatchActor, _: &mut Context<Self>) -> Self::Result {
        let receiver =
            self.shell.actors.lock().get(&request.actor_id).map(|managed| managed.watch.subscribe());
        let gcs = self.shell.gcs.clone();
        Box::pin(async move {
            let Some(mut receiver) = receiver else {
                return gcs.ask(GetActor(request.actor_id)).await.ok().and_then(Result::ok).flatten();
            };
            let settled = receiver
                .wait_for(|info| {
                    info.state == ActorState::Dead
                        || (info.state == ActorState::Alive && Some(info.restarts) != request.known)
                })
                .await
                .map(|info| info.clone());
            settled.ok()
        })
    }
}

impl Handler<KillActor> for ActorManager {
    type Result = ResponseFuture<bool>;

    fn handle(&mut self, request: KillActor, _: &mut Context<Self>) -> Self::Result {
        let lease = match self.shell.actors.lock().get_mut(&request.actor_id) {
            Some(managed) if !managed.killed => {
                managed.killed = true;
                Some(managed.lease.take())
            }
            Some(_) => return Box::pin(std::future::ready(true)),
            None => None,
        };
        let shell = self.shell.clone();
        Box::pin(async move {
            let Some(lease) = lease else { return false };
            shell.mark_dead(request.actor_id, request.cause).await;
            if let Some(lease) = lease {
                let _ = shell.raylet.tell(ReturnLease { lease, reusable: false }).await;
            }
            true
        })
    }
}
