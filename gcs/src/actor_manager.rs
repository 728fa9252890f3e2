//! The actor manager (Ray's `gcs_actor_manager`): beside the GCS on the head node, it creates
//! actors (registering them in the GCS, which claims their names), takes a *dedicated* lease
//! for each from a raylet (a worker held for the actor's life), starts the actor in it, watches
//! the lease, and on the worker's death asks the GCS whether to restart (restarts left) or not.
//! Its path to the raylets is the one placement groups' two-phase commit will take.
//!
//! Callers reach it as `ServiceRef<manta_proto::worker::ActorManager>`: `CreateActor`,
//! `WatchActor` (parked until the actor's state changes) and `KillActor`. The logic is the
//! state machine in [`state`] ([`ManagerCore`]); this shell performs its commands (asks to the
//! raylet, the workers and the GCS) and feeds their answers back.

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
use manta_proto::raylet::requests::{LeaseOutcome, ReturnLease, WatchLease};
use manta_proto::raylet::Raylet;
use manta_proto::worker::{CreateActor, CreateActorError, Executor, KillActor, WatchActor};
use manta_proto::{ActorId, NodeId, Protocol};
use parking_lot::Mutex;
use tokio::sync::watch;
use tracing::debug;

pub mod state;

pub use state::{Command, Killed, ManagerCore, Phase};

/// The name the actor manager is registered under on the head node.
pub const ACTOR_MANAGER_NAME: &str = <manta_proto::worker::ActorManager as Protocol>::NAME;

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
        let shell = Shell {
            gcs,
            raylet,
            node: node.clone(),
            node_id,
            core: Arc::new(Mutex::new(ManagerCore::new())),
            watches: Arc::default(),
            nodes: Arc::default(),
            incarnations: Arc::default(),
        };
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

/// What performing the core's commands needs: the GCS, the raylet, the node, the core itself,
/// and the actors' records as watchers see them.
#[derive(Clone)]
struct Shell {
    gcs: ServiceRef<Gcs>,
    raylet: ServiceRef<Raylet>,
    node: Node,
    node_id: NodeId,
    core: Arc<Mutex<ManagerCore>>,
    watches: Arc<Mutex<HashMap<ActorId, watch::Sender<ActorInfo>>>>,
    /// Other nodes' raylets, as spillbacks named them: address to node.
    nodes: Arc<Mutex<HashMap<String, NodeId>>>,
    /// Each started actor's incarnation (its restart count when it started), until it fails.
    incarnations: Arc<Mutex<HashMap<ActorId, u64>>>,
}

impl Shell {
    /// The node of the raylet at `address` (`None`: the manager's own).
    fn node_of(&self, address: Option<&str>) -> Option<NodeId> {
        match address {
            None => Some(self.node_id),
            Some(address) => self.nodes.lock().get(address).copied(),
        }
    }

    /// How to name the raylet at `address` in an error: its node, where known.
    fn describe(&self, address: Option<&str>) -> String {
        match (self.node_of(address), address) {
            (Some(node), Some(address)) => format!("node {node} (raylet at {address})"),
            (Some(node), None) => format!("node {node}"),
            (None, Some(address)) => format!("the raylet at {address}"),
            (None, None) => "the raylet".to_owned(),
        }
    }

    /// The raylet at `address` (`None`: the manager's own).
    fn raylet_at(&self, address: Option<&str>) -> Result<ServiceRef<Raylet>, String> {
        match address {
            None => Ok(self.raylet.clone()),
            Some(address) => address
                .parse()
                .map(|socket| self.node.service(socket))
                .map_err(|_| format!("the raylet address {address:?} does not parse")),
        }
    }

    /// Publishes the GCS's record of `actor` to its watchers.
    async fn refresh(&self, actor_id: ActorId) -> Option<ActorInfo> {
        let info = self.gcs.ask(GetActor(actor_id)).await.ok().and_then(Result::ok).flatten()?;
        if let Some(watch) = self.watches.lock().get(&actor_id) {
            watch.send_replace(info.clone());
        }
        Some(info)
    }

    /// Performs the commands the core produced, each in a task of its own; their answers go
    /// back into the core, and what that produces is performed in turn.
    fn perform(&self) {
        let commands = self.core.lock().poll_commands();
        for command in commands {
            let shell = self.clone();
            tokio::spawn(async move { shell.run(command).await });
        }
    }

    async fn run(&self, command: Command) {
        match command {
            Command::RequestLease { actor, request, raylet } => {
                let outcome = match self.raylet_at(raylet.as_deref()) {
                    Ok(to) => to.ask_unbounded(request).await.map_err(|error| error.to_string()),
                    Err(error) => Err(error),
                };
                if let Ok(LeaseOutcome::Spillback { node, address }) = &outcome {
                    if let Ok(node) = node.parse() {
                        self.nodes.lock().insert(address.clone(), node);
                    }
                }
                self.core.lock().lease_outcome(actor, raylet, outcome);
            }
            Command::StartActor { lease, address, start } => {
                let actor = start.actor_id;
                let outcome = match address.parse() {
                    Ok(socket) => {
                        let executor: ServiceRef<Executor> = self.node.service(socket);
                        executor.ask_unbounded(start).await.map_err(|error| error.to_string())
                    }
                    Err(_) => Err(format!("the raylet gave a bad worker address {address:?}")),
                };
                self.core.lock().start_outcome(actor, lease, outcome);
            }
            Command::WatchLease { actor, lease, raylet } => {
                let asked = match self.raylet_at(raylet.as_deref()) {
                    Ok(to) => to.ask_unbounded(WatchLease { lease }).await.map_err(|error| error.to_string()),
                    Err(error) => Err(error),
                };
                let exit = match asked {
                    Ok(exit) => exit,
                    Err(error) => {
                        Some(format!("{} could not be asked: {error}", self.describe(raylet.as_deref())))
                    }
                };
                self.core.lock().lease_ended(actor, lease, exit);
            }
            Command::ReturnLease { lease, raylet } => {
                if let Ok(to) = self.raylet_at(raylet.as_deref()) {
                    let _ = to.tell(ReturnLease { lease, reusable: false }).await;
                }
            }
            Command::ReportStarted { actor, address, raylet } => {
                let node_id = self.node_of(raylet.as_deref()).unwrap_or(self.node_id);
                let _ = self.gcs.ask(ActorStarted { actor_id: actor, node_id, address }).await;
                if let Some(info) = self.refresh(actor).await {
                    self.incarnations.lock().insert(actor, info.restarts);
                }
                debug!(actor = ?actor, "actor started");
            }
            Command::ReportFailed { actor, cause } => {
                let incarnation = self.incarnations.lock().remove(&actor);
                let verdict = self.gcs.ask(ActorFailed { actor_id: actor, cause, incarnation }).await;
                let state = match verdict {
                    Ok(Ok(state)) => Some(state),
                    _ => None,
                };
                self.refresh(actor).await;
                if state == Some(ActorState::Restarting) {
                    debug!(actor = ?actor, "restarting actor");
                }
                self.core.lock().verdict(actor, state);
            }
            Command::MarkDead { actor, cause } => {
                self.incarnations.lock().remove(&actor);
                let _ = self.gcs.ask(GcsKillActor { actor_id: actor, cause }).await;
                self.refresh(actor).await;
            }
        }
        self.perform();
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
                // Asked again (the first answer was lost with a connection): it is this
                // manager's already, and goes on as it was.
                Ok(Err(crate::GcsError::DuplicateActor(_)))
                    if shell.watches.lock().contains_key(&actor_id) =>
                {
                    return Ok(());
                }
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
            shell.watches.lock().insert(actor_id, watch::channel(info).0);
            shell.core.lock().registered(spec);
            shell.perform();
            Ok(())
        })
    }
}

impl Handler<WatchActor> for ActorManager {
    type Result = ResponseFuture<Option<ActorInfo>>;

    fn handle(&mut self, request: WatchActor, _: &mut Context<Self>) -> Self::Result {
        let receiver = self.shell.watches.lock().get(&request.actor_id).map(watch::Sender::subscribe);
        let gcs = self.shell.gcs.clone();
        Box::pin(async move {
            let Some(mut receiver) = receiver else {
                return gcs.ask(GetActor(request.actor_id)).await.ok().and_then(Result::ok).flatten();
            };
            // `known: Some(r)`: incarnation `r` is over as soon as the actor is dead or counts
            // another restart (it is then `Restarting`: callers hold new calls until it is up).
            // `None`: once it is alive or dead at all.
            let settled = receiver
                .wait_for(|info| match request.known {
                    Some(known) => info.state == ActorState::Dead || info.restarts != known,
                    None => matches!(info.state, ActorState::Alive | ActorState::Dead),
                })
                .await
                .map(|info| info.clone());
            settled.ok()
        })
    }
}

impl Handler<KillActor> for ActorManager {
    type Result = ResponseFuture<bool>;

    /// Answers once the GCS records the actor dead (so a `get_actor` right after fails).
    fn handle(&mut self, request: KillActor, _: &mut Context<Self>) -> Self::Result {
        let killed = self.shell.core.lock().kill(request.actor_id, request.cause);
        let commands = self.shell.core.lock().poll_commands();
        let shell = self.shell.clone();
        Box::pin(async move {
            for command in commands {
                match command {
                    // Awaited: the caller learns of the death only once it is recorded.
                    mark_dead @ Command::MarkDead { .. } => shell.run(mark_dead).await,
                    other => {
                        let shell = shell.clone();
                        tokio::spawn(async move { shell.run(other).await });
                    }
                }
            }
            killed != Killed::Unknown
        })
    }
}
