//! The placement-group manager (Ray's `gcs_placement_group_manager`): beside the GCS, it
//! records groups and reserves their bundles on the raylets by two-phase commit.
//!
//! Callers reach it as `ServiceRef<manta_proto::placement::PlacementGroups>`. The logic is the
//! state machine in [`state`] ([`PlacementCore`]); this shell reads the GCS's cluster view
//! every [`VIEW_PERIOD`] (nodes, their free resources, deaths), performs the core's commands
//! (asks to the raylets) and feeds the answers back, and answers the callers parked in
//! `WaitPlacementGroupReady`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use manta_actor::{
    spawn, Actor, AsyncContext, Context, Handler, LocalRef, Message, MessageResult, Node, RegisterError,
    ResponseFuture, Routes, ServiceRef, SpawnOptions,
};
use manta_proto::gcs::requests::GetClusterView;
use manta_proto::gcs::wire::NodeLoad;
use manta_proto::gcs::Gcs;
use manta_proto::placement::{
    CancelBundles, CommitBundles, CreatePlacementGroup, GetNamedPlacementGroup, GetPlacementGroup,
    ListPlacementGroups, PlacementGroupError, PlacementGroupState, PlacementGroups, PrepareBundles,
    RemovePlacementGroup, WaitPlacementGroupReady,
};
use manta_proto::raylet::Raylet;
use manta_proto::{NodeId, PlacementGroupId, Protocol};
use manta_raylet::policies::{policy_named, BoxedPolicy};
use manta_raylet::NodeView;
use tokio::sync::oneshot;
use tracing::{debug, info};

pub mod state;

pub use state::{Command, PlacementCore};

/// The name the manager is registered under beside the GCS.
pub const PLACEMENT_GROUPS_NAME: &str = <PlacementGroups as Protocol>::NAME;

/// How often the manager reads the cluster view (Ray's resource broadcasts are 100 ms apart).
pub const VIEW_PERIOD: Duration = Duration::from_millis(100);

type Waiter = oneshot::Sender<Result<(), PlacementGroupError>>;

/// The placement-group manager actor.
pub struct PlacementGroupManager {
    core: PlacementCore<BoxedPolicy>,
    node: Node,
    gcs: ServiceRef<Gcs>,
    /// Each live node's raylet address, from the view.
    raylets: HashMap<NodeId, SocketAddr>,
    /// Callers parked until a group is created (or removed).
    waiters: HashMap<PlacementGroupId, Vec<Waiter>>,
    view_asked: bool,
    started: Instant,
    /// Jobs whose driver is watched (their groups that are not detached end with it).
    watched_jobs: std::collections::HashSet<manta_proto::JobId>,
}

impl Actor for PlacementGroupManager {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(VIEW_PERIOD, |manager, ctx| manager.ask_for_view(ctx));
    }
}

impl PlacementGroupManager {
    /// Starts the manager on `node` (beside the GCS at `gcs`), placing bundles with the policy
    /// registered as `scheduler`, and registers it as [`PLACEMENT_GROUPS_NAME`].
    pub fn start(
        node: &Node,
        gcs: ServiceRef<Gcs>,
        scheduler: &str,
    ) -> Result<LocalRef<PlacementGroupManager>, RegisterError> {
        // Checked by the caller; a name nobody registered places bundles as the default does.
        let scheduler = scheduler.to_owned();
        let actor_node = node.clone();
        let manager =
            spawn(node.arbiter(), SpawnOptions::named(PLACEMENT_GROUPS_NAME).max_restarts(3), move || {
                PlacementGroupManager {
                    core: PlacementCore::new(
                        policy_named(&scheduler)
                            .unwrap_or_else(|_| Box::new(manta_raylet::DefaultPolicy::default())),
                    ),
                    node: actor_node.clone(),
                    gcs: gcs.clone(),
                    raylets: HashMap::new(),
                    waiters: HashMap::new(),
                    view_asked: false,
                    started: Instant::now(),
                    watched_jobs: std::collections::HashSet::new(),
                }
            });
        node.register(
            PLACEMENT_GROUPS_NAME,
            Routes::new(manager.clone())
                .message::<CreatePlacementGroup>()
                .message::<RemovePlacementGroup>()
                .message::<GetPlacementGroup>()
                .message::<GetNamedPlacementGroup>()
                .message::<ListPlacementGroups>()
                .message::<WaitPlacementGroupReady>(),
        )?;
        Ok(manager)
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn ask_for_view(&mut self, ctx: &mut Context<Self>) {
        let now = self.now_ms();
        self.core.tick(now);
        self.perform(ctx);
        if self.view_asked {
            return;
        }
        self.view_asked = true;
        let (gcs, me) = (self.gcs.clone(), ctx.address());
        tokio::spawn(async move {
            let view = match gcs.ask(GetClusterView).await {
                Ok(Ok(view)) => Some(view),
                outcome => {
                    debug!(?outcome, "no cluster view from the GCS this time");
                    None
                }
            };
            me.do_send(ViewArrived(view));
        });
    }

    /// Performs the core's commands: asks to the raylets (answers come back as messages), and
    /// the waiters' answers.
    fn perform(&mut self, ctx: &mut Context<Self>) {
        self.perform_cancels_awaited(ctx);
    }

    /// [`perform`](Self::perform), returning the cancels sent (a removal waits for them).
    fn perform_cancels_awaited(&mut self, ctx: &mut Context<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        let mut cancels = Vec::new();
        for command in self.core.poll_commands() {
            match command {
                Command::Prepare { group, round, node, bundles } => {
                    let answered = move |answer| Answered::Prepare(group, node, answer);
                    self.ask_raylet(node, PrepareBundles { group, round, bundles }, answered, ctx);
                }
                Command::Commit { group, round, node, indices } => {
                    let answered = move |answer| Answered::Commit(group, node, answer);
                    self.ask_raylet(node, CommitBundles { group, round, indices }, answered, ctx);
                }
                Command::Cancel { group, round, node, indices } => {
                    if let Some(raylet) = self.raylet(node) {
                        cancels.push(tokio::spawn(async move {
                            // An ask, not a tell: it is retried by nobody, so its failure is logged.
                            if let Err(error) = raylet.ask(CancelBundles { group, round, indices }).await {
                                debug!(%group, %node, %error, "a raylet could not be told to give bundles back");
                            }
                        }));
                    }
                }
                Command::Created { group } => {
                    info!(%group, "placement group created");
                    for waiter in self.waiters.remove(&group).unwrap_or_default() {
                        let _ = waiter.send(Ok(()));
                    }
                }
                Command::Removed { group, cause } => {
                    info!(%group, %cause, "placement group removed");
                    for waiter in self.waiters.remove(&group).unwrap_or_default() {
                        let _ = waiter
                            .send(Err(PlacementGroupError::Removed { id: group, cause: cause.clone() }));
                    }
                }
            }
        }
        cancels
    }

    /// Watches `job`'s driver (once per job): when it dies, the job's groups that are not
    /// detached are removed (Ray removes them with their job). A driver in this very process
    /// (the embedded cluster's) ends with it, and needs no watch.
    fn watch_job(&mut self, job: manta_proto::JobId, ctx: &mut Context<Self>) {
        if !self.watched_jobs.insert(job) {
            return;
        }
        let (gcs, node, me) = (self.gcs.clone(), self.node.clone(), ctx.address());
        tokio::spawn(async move {
            let driver = match gcs.ask(manta_proto::gcs::requests::GetJob(job)).await {
                Ok(Ok(Some(info))) => info.driver_address.parse::<SocketAddr>().ok(),
                _ => None,
            };
            let Some(driver) = driver.filter(|driver| *driver != node.local_addr()) else { return };
            let owner: ServiceRef<manta_proto::worker::Owner> = node.service(driver);
            // Answered every so often while the driver lives; an ask that fails is its death.
            while owner.ask_unbounded(manta_proto::worker::AwaitExit).await.is_ok() {}
            me.do_send(JobEnded(job));
        });
    }

    /// Asks `node`'s raylet `message` (a prepare or a commit); its answer (or why there is
    /// none) comes back to this actor as `answered(answer)`.
    fn ask_raylet<M>(
        &self,
        node: NodeId,
        message: M,
        answered: impl FnOnce(Result<(), String>) -> Answered + Send + 'static,
        ctx: &mut Context<Self>,
    ) where
        M: manta_proto::WireMessage<Result = Result<(), String>> + Send + 'static,
        Raylet: manta_proto::Accepts<M>,
    {
        let me = ctx.address();
        let Some(raylet) = self.raylet(node) else {
            me.do_send(answered(Err(format!("node {node} has no known address"))));
            return;
        };
        tokio::spawn(async move {
            let answer = match raylet.ask(message).await {
                Ok(answer) => answer,
                Err(error) => Err(format!("its raylet could not be asked: {error}")),
            };
            me.do_send(answered(answer));
        });
    }

    fn raylet(&self, node: NodeId) -> Option<ServiceRef<Raylet>> {
        self.raylets.get(&node).map(|address| self.node.service(*address))
    }
}

/// The view a GCS ask brought (none: the ask failed).
struct ViewArrived(Option<Vec<NodeLoad>>);

impl Message for ViewArrived {
    type Result = ();
}

impl Handler<ViewArrived> for PlacementGroupManager {
    type Result = ();

    fn handle(&mut self, ViewArrived(view): ViewArrived, ctx: &mut Context<Self>) {
        self.view_asked = false;
        let Some(view) = view else { return };
        let mut nodes = Vec::with_capacity(view.len());
        for load in view {
            if let Ok(address) = load.address.parse() {
                self.raylets.insert(load.node_id, address);
            }
            nodes.push(NodeView::from_load(load));
        }
        let now = self.now_ms();
        self.core.set_view(nodes, now);
        self.perform(ctx);
    }
}

/// A watched job's driver died.
struct JobEnded(manta_proto::JobId);

impl Message for JobEnded {
    type Result = ();
}

impl Handler<JobEnded> for PlacementGroupManager {
    type Result = ();

    fn handle(&mut self, JobEnded(job): JobEnded, ctx: &mut Context<Self>) {
        info!(%job, "a job's driver died: its placement groups that are not detached are removed");
        self.watched_jobs.remove(&job);
        self.core.job_finished(job);
        self.perform(ctx);
    }
}

/// A raylet's answer to a prepare or a commit.
enum Answered {
    Prepare(PlacementGroupId, NodeId, Result<(), String>),
    Commit(PlacementGroupId, NodeId, Result<(), String>),
}

impl Message for Answered {
    type Result = ();
}

impl Handler<Answered> for PlacementGroupManager {
    type Result = ();

    fn handle(&mut self, answer: Answered, ctx: &mut Context<Self>) {
        let now = self.now_ms();
        match answer {
            Answered::Prepare(group, node, answer) => {
                if let Err(reason) = &answer {
                    debug!(%group, %node, %reason, "a bundle prepare was refused");
                }
                self.core.prepare_answered(group, node, answer, now);
            }
            Answered::Commit(group, node, answer) => self.core.commit_answered(group, node, answer, now),
        }
        self.perform(ctx);
    }
}

impl Handler<CreatePlacementGroup> for PlacementGroupManager {
    type Result = Result<(), PlacementGroupError>;

    fn handle(
        &mut self,
        CreatePlacementGroup(spec): CreatePlacementGroup,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        let now = self.now_ms();
        let job = spec.job.filter(|_| !spec.detached);
        let created = self.core.create(spec, now);
        if let (Ok(()), Some(job)) = (&created, job) {
            self.watch_job(job, ctx);
        }
        self.perform(ctx);
        created
    }
}

impl Handler<RemovePlacementGroup> for PlacementGroupManager {
    type Result = ResponseFuture<Result<(), PlacementGroupError>>;

    /// Answered once every live node gave the group's bundles back (their workers killed), or
    /// could not be asked: when `remove_placement_group` returns, the resources are free.
    fn handle(
        &mut self,
        RemovePlacementGroup(id): RemovePlacementGroup,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        let removed = self.core.remove(id, "removed by remove_placement_group");
        let cancels = self.perform_cancels_awaited(ctx);
        Box::pin(async move {
            for cancel in cancels {
                let _ = cancel.await;
            }
            removed
        })
    }
}

impl Handler<GetPlacementGroup> for PlacementGroupManager {
    type Result = MessageResult<GetPlacementGroup>;

    fn handle(&mut self, GetPlacementGroup(id): GetPlacementGroup, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.core.info(id))
    }
}

impl Handler<GetNamedPlacementGroup> for PlacementGroupManager {
    type Result = MessageResult<GetNamedPlacementGroup>;

    fn handle(&mut self, request: GetNamedPlacementGroup, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.core.named(&request.namespace, &request.name))
    }
}

impl Handler<ListPlacementGroups> for PlacementGroupManager {
    type Result = MessageResult<ListPlacementGroups>;

    fn handle(&mut self, _: ListPlacementGroups, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.core.list())
    }
}

impl Handler<WaitPlacementGroupReady> for PlacementGroupManager {
    type Result = ResponseFuture<Result<(), PlacementGroupError>>;

    /// Answered at once for a created or removed group; parked otherwise.
    fn handle(
        &mut self,
        WaitPlacementGroupReady(id): WaitPlacementGroupReady,
        _: &mut Context<Self>,
    ) -> Self::Result {
        let ready = match self.core.info(id) {
            None => Some(Err(PlacementGroupError::Unknown(id))),
            Some(info) => match info.state {
                PlacementGroupState::Created => Some(Ok(())),
                PlacementGroupState::Removed => {
                    Some(Err(PlacementGroupError::Removed { id, cause: info.removal.unwrap_or_default() }))
                }
                PlacementGroupState::Pending | PlacementGroupState::Rescheduling => None,
            },
        };
        if let Some(ready) = ready {
            return Box::pin(std::future::ready(ready));
        }
        let (waiter, answer) = oneshot::channel();
        self.waiters.entry(id).or_default().push(waiter);
        Box::pin(async move {
            answer.await.unwrap_or_else(|_| {
                Err(PlacementGroupError::Removed {
                    id,
                    cause: "the placement group manager restarted".to_owned(),
                })
            })
        })
    }
}
