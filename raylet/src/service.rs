//! The raylet as an actor on the bus (`node/raylet`): the [`LeaseManager`] plus the I/O it asks
//! for: starting worker processes (this same binary, re-executed in worker mode), noticing their
//! exit at once (`SIGCHLD`, then a non-blocking wait on each child), killing them, and answering
//! submitters.
//!
//! A worker costs this process one descriptor, its connection: no pipe (a worker learns of this
//! process's death from the kernel, `PR_SET_PDEATHSIG`), no process descriptor (one `SIGCHLD`
//! stream reaps them all). At 3 descriptors per worker, 20,000 open files capped a node at
//! about 6,600 workers.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use manta_actor::{
    spawn, Actor, AsyncContext, Context, Handler, LocalRef, Message, Node, Recipient, RegisterError,
    ResponseFuture, Routes, SpawnOptions,
};
use manta_proto::gcs::requests::IssueJoinTokens;
use manta_proto::gcs::requests::{ReportWorker, ReportWorkerExit};
use manta_proto::gcs::wire::WorkerInfo;
use manta_proto::worker::{BinaryTransfer, SendBinary};
use manta_transport::{Admission, TokenUse};
use std::os::unix::process::CommandExt;
use std::process::Command as Process;
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use crate::leases::LeaseRequest;
use crate::leases::{Command, LeaseId, LeaseManager, LeaseReply, PoolConfig, WorkerId};
use crate::policies::BoxedPolicy;
use crate::policy::{DefaultPolicy, SplitMix64};
use crate::requests::{LeaseOutcome, RegisterWorker, RequestLease, ReturnLease, WatchLease, WorkerBlocked};
use crate::resources::{Quantity, ResourceSet, CPU, GPU};
use manta_proto::placement::{CancelBundles, CommitBundles, PrepareBundles};

/// The name the raylet is registered under on its node.
pub const RAYLET_NAME: &str = <manta_proto::raylet::Raylet as manta_proto::Protocol>::NAME;

/// Environment variables a worker process is started with.
pub mod worker_env {
    /// The worker's id at its raylet.
    pub const WORKER_ID: &str = "MANTA_WORKER_ID";
    /// The raylet's transport address.
    pub const RAYLET_ADDRESS: &str = "MANTA_RAYLET_ADDRESS";
    /// A one-time join token for the worker's certificate.
    pub const JOIN_TOKEN: &str = "MANTA_JOIN_TOKEN";
    /// The raylet's process id: the worker's parent, whose death ends the worker.
    pub const RAYLET_PID: &str = "MANTA_RAYLET_PID";
    /// Where the worker joins with its token (default: the raylet's address).
    pub const JOIN_ADDRESS: &str = "MANTA_JOIN_ADDRESS";
    /// The GCS's (and the actor manager's) address (default: the raylet's address).
    pub const GCS_ADDRESS: &str = "MANTA_GCS_ADDRESS";
    /// The path of the node's object store, which the worker maps.
    pub const STORE_PATH: &str = "MANTA_STORE_PATH";
    /// The job the worker serves.
    pub const JOB_ID: &str = "MANTA_JOB_ID";
    /// The id of the node (raylet) the worker belongs to, as hex.
    pub const NODE_ID: &str = "MANTA_NODE_ID";
    /// The local channel's scope of the worker's node (`TransportConfig::local_scope`), on a
    /// node of a running cluster.
    pub const LOCAL_SCOPE: &str = "MANTA_LOCAL_SCOPE";
    /// Set when the worker's stdout and stderr go to its raylet, which forwards them to the
    /// driver: the worker then marks what it runs (`manta_proto::worker::OUTPUT_ORIGIN_MARK`).
    pub const OUTPUT_PIPED: &str = "MANTA_OUTPUT_PIPED";
}

/// The policy named `name`; the default one (and an error in the log) for a name nobody
/// registered (callers check names before they start a raylet).
fn policy(name: &str) -> BoxedPolicy {
    crate::policies::policy_named(name).unwrap_or_else(|error| {
        tracing::error!(%error, "using the default scheduling policy");
        Box::new(DefaultPolicy::default())
    })
}

/// The local channel's scope of a cluster node's processes: the raylet's node id, so that
/// processes of two nodes on one host talk QUIC, as nodes on two hosts do.
pub fn local_scope(node: manta_transport::NodeId) -> String {
    node.to_string()
}

/// How one job's workers start.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The executable: `/proc/self/exe` for the raylet's own job (it reaches the binary even
    /// after its file was replaced by a rebuild), the driver's `/proc/<pid>/exe` on its host.
    pub exe: std::path::PathBuf,
    /// The workers' `argv[0]`.
    pub name: std::path::PathBuf,
    /// The registry fingerprint its workers must report (the same code as the driver).
    pub fingerprint: u64,
    /// Environment for its workers.
    pub env: Vec<(String, String)>,
    /// Where its workers' output goes, line by line (the driver's owner service), if anywhere;
    /// else the workers write to this raylet's own output.
    pub output_to: Option<std::net::SocketAddr>,
}

impl Launch {
    /// The raylet's own job: workers run this very executable with `env`.
    pub fn this_binary(fingerprint: u64, env: Vec<(String, String)>) -> Launch {
        let exe = std::path::PathBuf::from("/proc/self/exe");
        let name = std::env::current_exe().unwrap_or_else(|_| exe.clone());
        Launch { exe, name, fingerprint, env, output_to: None }
    }
}

/// Where a raylet's workers get the one-time join tokens for their certificates.
#[derive(Debug, Clone)]
pub enum WorkerAdmission {
    /// The cluster's CA is in this process (an embedded head): tokens are made on the spot,
    /// and workers join at the raylet's own address.
    Local(Admission),
    /// A node of a running cluster: tokens come from the admission service beside the GCS at
    /// this address, in batches, and workers join there.
    Cluster {
        /// The GCS's address.
        gcs: std::net::SocketAddr,
        /// With no health check from the GCS for this long, the node gives up on the cluster:
        /// the raylet ends its process (SIGTERM to itself), and its workers with it (Ray's
        /// `gcs_rpc_server_reconnect_timeout_s`, 60 s).
        gcs_timeout: Duration,
        /// Where its jobs' binaries come from.
        binaries: crate::binary::Binaries,
    },
}

/// Tokens asked of the cluster's admission service at once (more when more workers wait).
const TOKEN_BATCH: u32 = 8;

/// How long workers wait for join tokens while the GCS cannot be asked (within the lease
/// manager's 60 s start timeout).
const TOKENS_WAIT: Duration = Duration::from_secs(45);

/// What a node reports: its free resources, its waiting lease requests by demand, its total.
type Report = (Vec<(String, f64)>, Vec<(String, u32)>, Vec<(String, f64)>);

/// How often a node of a running cluster tells the GCS its free resources, when they changed
/// (Ray: 100 ms).
const RESOURCE_REPORT: Duration = Duration::from_millis(100);

/// A report is sent this often even when nothing changed.
const RESOURCE_REPORT_FORCED: Duration = Duration::from_secs(1);

/// Where a raylet reports its workers' starts and exits (the GCS's worker table).
#[derive(Debug, Clone)]
pub struct WorkerReports {
    /// Receives a record when a worker starts and when it registers.
    pub reported: Recipient<ReportWorker>,
    /// Receives a worker's exit.
    pub exited: Recipient<ReportWorkerExit>,
}

/// How often idle workers are reaped.
const TICK: Duration = Duration::from_millis(200);

/// How long a worker asked to end (SIGTERM) has before it is killed (SIGKILL).
const KILL_GRACE: Duration = Duration::from_secs(2);

/// Kinds of infeasible demand warned about at most (the warnings stay bounded).
const WARNED_INFEASIBLE_MAX: usize = 1024;

struct WorkerProcess {
    pid: u32,
    address: Option<String>,
}

/// The raylet actor.
pub struct RayletActor {
    leases: LeaseManager<BoxedPolicy>,
    /// Where its workers' join tokens come from.
    admission: WorkerAdmission,
    /// Tokens from the cluster's admission service not used yet.
    tokens: std::collections::VecDeque<manta_transport::JoinToken>,
    /// Workers waiting for a token while a batch is asked for.
    awaiting_tokens: Vec<(WorkerId, manta_proto::JobId)>,
    /// Since when asking for join tokens has failed (the GCS is away: it is asked again).
    tokens_failing_since: Option<std::time::Instant>,
    /// The free resources and pending demand last reported to the GCS, and when (ms).
    reported: (Option<Report>, u64),
    /// When the GCS was last heard (a health check), and whether the node gave up on it.
    heard_gcs: (Instant, bool),
    raylet_address: String,
    /// The job whose workers start from this process's own binary (an embedded driver's).
    own_job: Option<Launch>,
    /// The jobs of a running cluster's drivers, learnt from the GCS.
    launches: HashMap<manta_proto::JobId, Launch>,
    /// Workers waiting for their job's launch to be learnt.
    awaiting_launch: HashMap<manta_proto::JobId, Vec<WorkerId>>,
    /// Environment every worker of this node gets (the store's path, the node's id).
    node_env: Vec<(String, String)>,
    reports: Option<WorkerReports>,
    node_id: manta_transport::NodeId,
    /// This node's presence on the bus (to ask workers).
    node: Node,
    workers: HashMap<WorkerId, WorkerProcess>,
    /// Worker processes started and not reaped yet, by pid (killed ones stay until reaped).
    children: HashMap<u32, WorkerId>,
    /// Without a `SIGCHLD` stream, children are reaped at each tick instead.
    reap_each_tick: bool,
    waiting: HashMap<LeaseId, (oneshot::Sender<LeaseOutcome>, String, Option<std::net::SocketAddr>)>,
    /// Demands already warned about as waiting for a node that fits.
    warned_infeasible: std::collections::HashSet<(String, Option<std::net::SocketAddr>)>,
    next_lease: u64,
    /// Submitters waiting to hear if a granted lease's worker dies.
    watchers: HashMap<LeaseId, Vec<oneshot::Sender<Option<String>>>>,
    /// Leases granted and not yet ended.
    live_leases: std::collections::HashSet<LeaseId>,
    /// How recently ended leases' workers died, for watchers that ask late (bounded).
    deaths: std::collections::VecDeque<(LeaseId, String)>,
    /// The worker that asked for each lease, when a worker asked.
    requested_by: HashMap<LeaseId, WorkerId>,
    /// The process of another node that asked for each lease, when one did.
    requested_from: HashMap<LeaseId, std::net::SocketAddr>,
    /// Processes of other nodes watched as requesters (until they die).
    watched_requesters: std::collections::HashSet<std::net::SocketAddr>,
    /// The other nodes' raylets, by node, as the last cluster view gave them (where a spilled
    /// request is sent).
    peers: HashMap<manta_transport::NodeId, String>,
    /// Whether a cluster view was asked for and not answered yet.
    view_asked: bool,
    random: SplitMix64,
    started: Instant,
}

/// The cluster's resource view, from the GCS (`None`: the ask failed; the last view stays).
struct ViewArrived(Option<Vec<manta_proto::gcs::wire::NodeLoad>>);

impl Message for ViewArrived {
    type Result = ();
}

impl Handler<ViewArrived> for RayletActor {
    type Result = ();

    fn handle(&mut self, ViewArrived(view): ViewArrived, ctx: &mut Context<Self>) {
        self.view_asked = false;
        let Some(view) = view else { return };
        let mut peers = Vec::with_capacity(view.len());
        self.peers.clear();
        for node in view.into_iter().filter(|node| node.node_id != self.node_id) {
            if node.state == manta_proto::gcs::wire::NodeState::Alive {
                self.peers.insert(node.node_id, node.address.clone());
            }
            peers.push(crate::policy::NodeView::from_load(node));
        }
        self.leases.set_peers(peers);
        self.leases.reconsider_queue(&mut self.random);
        self.perform(ctx);
    }
}

/// A worker process ended (found by [`Reap`]).
struct WorkerExited {
    worker: WorkerId,
    exit: String,
}

impl Message for WorkerExited {
    type Result = ();
}

/// How a job's workers start, learnt from the GCS (or why they cannot start here).
struct LaunchLearnt {
    job: manta_proto::JobId,
    launch: Result<Launch, String>,
}

impl Message for LaunchLearnt {
    type Result = ();
}

impl Handler<LaunchLearnt> for RayletActor {
    type Result = ();

    fn handle(&mut self, LaunchLearnt { job, launch }: LaunchLearnt, ctx: &mut Context<Self>) {
        let waiting = self.awaiting_launch.remove(&job).unwrap_or_default();
        match launch {
            Ok(launch) => {
                info!(%job, exe = %launch.exe.display(), "a job's workers start here");
                self.launches.insert(job, launch);
                for worker in waiting {
                    self.start_worker(worker, job, ctx);
                }
            }
            Err(reason) => {
                warn!(%job, %reason, "a job's workers cannot start here");
                for worker in waiting {
                    ctx.address().do_send(WorkerExited { worker, exit: format!("not started: {reason}") });
                }
            }
        }
    }
}

/// A batch of join tokens arrived from the cluster's admission service (or why not).
struct TokensArrived(Result<Vec<String>, String>);

impl Message for TokensArrived {
    type Result = ();
}

impl Handler<TokensArrived> for RayletActor {
    type Result = ();

    fn handle(&mut self, TokensArrived(answer): TokensArrived, ctx: &mut Context<Self>) {
        let waiting = std::mem::take(&mut self.awaiting_tokens);
        let failing = self.tokens_failing_since.get_or_insert_with(std::time::Instant::now).elapsed();
        match answer {
            // The GCS is away (restarting): the workers wait for it, within their start timeout.
            Err(error) if failing < TOKENS_WAIT => {
                debug!(%error, "no join tokens yet; asking the GCS again");
                self.awaiting_tokens = waiting;
                ctx.run_later(Duration::from_millis(500), |raylet, ctx| {
                    if let WorkerAdmission::Cluster { gcs, .. } = &raylet.admission {
                        let gcs = *gcs;
                        raylet.send_token_ask(gcs, ctx);
                    }
                });
            }
            Ok(tokens) => {
                self.tokens_failing_since = None;
                self.tokens.extend(tokens.iter().filter_map(|token| token.parse().ok()));
                for (worker, job) in waiting {
                    self.start_worker(worker, job, ctx);
                }
            }
            Err(error) => {
                warn!(%error, "no join tokens for new workers");
                for (worker, _) in waiting {
                    let exit = format!("not started: no join token: {error}");
                    ctx.address().do_send(WorkerExited { worker, exit });
                }
            }
        }
    }
}

/// A child process changed state (`SIGCHLD`): reap those that exited.
struct Reap;

/// A worker's answer to `MayExit` (or `true` when it could not answer).
struct Retired {
    worker: WorkerId,
    may_exit: bool,
}

impl Message for Retired {
    type Result = ();
}

impl Handler<Retired> for RayletActor {
    type Result = ();

    fn handle(&mut self, answer: Retired, ctx: &mut Context<Self>) {
        let now = self.now_ms();
        self.leases.retire_answered(now, answer.worker, answer.may_exit);
        self.perform(ctx);
    }
}

/// How long an idle worker has to say whether it may exit.
const MAY_EXIT_WAIT: Duration = Duration::from_secs(5);

impl Message for Reap {
    type Result = ();
}

impl Handler<Reap> for RayletActor {
    type Result = ();

    fn handle(&mut self, _: Reap, ctx: &mut Context<Self>) {
        use std::os::unix::process::ExitStatusExt;
        let mut exited = Vec::new();
        for (&pid, &worker) in &self.children {
            let mut status = 0;
            // SAFETY: a non-blocking wait for one child this raylet started and has not reaped;
            // a valid out-pointer. Children of the rest of the program are left alone.
            let reaped = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG) };
            if reaped == pid as libc::pid_t {
                exited.push((pid, worker, describe_exit(std::process::ExitStatus::from_raw(status))));
            } else if reaped < 0 {
                let error = std::io::Error::last_os_error();
                exited.push((pid, worker, format!("could not be waited for: {error}")));
            }
        }
        for (pid, worker, exit) in exited {
            self.children.remove(&pid);
            ctx.address().do_send(WorkerExited { worker, exit });
        }
    }
}

impl RayletActor {
    /// Starts the raylet of `node` with `total` resources on the node's arbiter and registers it
    /// as [`RAYLET_NAME`]. Workers it starts join with one-time tokens from `admission`; those
    /// of `own_job` start from this binary, those of other jobs as the GCS says (a driver on a
    /// running cluster), each with `node_env` too.
    pub fn start(
        node: &Node,
        admission: WorkerAdmission,
        total: ResourceSet,
        pool: PoolConfig,
        own_job: Option<Launch>,
        node_env: Vec<(String, String)>,
        reports: Option<WorkerReports>,
    ) -> Result<LocalRef<RayletActor>, RegisterError> {
        crate::limits::raise_open_files_limit();
        let node_id = node.node_id();
        let raylet_address = node.local_addr().to_string();
        // Held as the actor manager holds it: the node lives as long as its services.
        let bus = node.clone();
        let binary_cache = match &admission {
            WorkerAdmission::Cluster { binaries, .. } => Some(binaries.cache.clone()),
            WorkerAdmission::Local(_) => None,
        };
        let raylet =
            spawn(node.arbiter(), SpawnOptions::named(RAYLET_NAME).max_restarts(0), move || RayletActor {
                leases: LeaseManager::new(node_id, total.clone(), policy(&pool.scheduler), pool.clone()),
                admission: admission.clone(),
                tokens: Default::default(),
                awaiting_tokens: Vec::new(),
                tokens_failing_since: None,
                reported: (None, 0),
                heard_gcs: (Instant::now(), false),
                raylet_address: raylet_address.clone(),
                own_job: own_job.clone(),
                launches: HashMap::new(),
                awaiting_launch: HashMap::new(),
                node_env: node_env.clone(),
                reports: reports.clone(),
                node_id,
                node: bus.clone(),
                workers: HashMap::new(),
                children: HashMap::new(),
                reap_each_tick: false,
                waiting: HashMap::new(),
                warned_infeasible: Default::default(),
                next_lease: 1,
                watchers: HashMap::new(),
                live_leases: std::collections::HashSet::new(),
                deaths: std::collections::VecDeque::new(),
                requested_by: HashMap::new(),
                requested_from: HashMap::new(),
                watched_requesters: Default::default(),
                peers: HashMap::new(),
                view_asked: false,
                random: SplitMix64(u64::from(std::process::id())),
                started: Instant::now(),
            });
        if let Some(cache) = binary_cache {
            node.register_bulk(RAYLET_NAME, move |peer, transfer: BinaryTransfer, body| {
                receive_binary(cache.clone(), peer, transfer.sha256, body)
            })?;
        }
        node.register(
            RAYLET_NAME,
            Routes::new(raylet.clone())
                .message::<RequestLease>()
                .message::<ReturnLease>()
                .message::<WatchLease>()
                .message::<WorkerBlocked>()
                .message::<RegisterWorker>()
                .message::<crate::requests::HealthCheck>()
                .message::<PrepareBundles>()
                .message::<CommitBundles>()
                .message::<CancelBundles>(),
        )?;
        Ok(raylet)
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Performs what the lease manager asked for.
    fn perform(&mut self, ctx: &mut Context<Self>) {
        for command in self.leases.poll_commands() {
            match command {
                Command::StartWorker { worker, job } => self.start_worker(worker, job, ctx),
                Command::RetireWorker { worker } => {
                    let address = self.workers.get(&worker).and_then(|process| process.address.clone());
                    let executor = address
                        .and_then(|address| address.parse().ok())
                        .map(|address| self.node.service::<manta_proto::worker::Executor>(address));
                    let raylet = ctx.address();
                    tokio::spawn(async move {
                        // A worker that cannot answer is not serving anything worth keeping.
                        let may_exit = match executor {
                            Some(executor) => executor
                                .ask_timeout(manta_proto::worker::MayExit, MAY_EXIT_WAIT)
                                .await
                                .unwrap_or(true),
                            None => true,
                        };
                        raylet.do_send(Retired { worker, may_exit });
                    });
                }
                Command::WaitingInfeasible { lease } => {
                    let Some((_, demand, tell)) = self.waiting.get(&lease) else { continue };
                    let (demand, tell) = (demand.clone(), *tell);
                    // Once per kind of demand and requester (a thousand such tasks warn once), as
                    // Ray's "cannot be scheduled right now" warning.
                    if self.warned_infeasible.len() < WARNED_INFEASIBLE_MAX
                        && self.warned_infeasible.insert((demand.clone(), tell))
                    {
                        warn!(
                            %demand,
                            "a request no node can meet is waiting for a node that has {demand} to join \
                             (set Config::fail_infeasible to fail such requests at once)"
                        );
                        if let Some(requester) = tell {
                            self.warn_requester(requester, &demand);
                        }
                    }
                }
                Command::KillWorker { worker } => {
                    if let Some(process) = self.workers.remove(&worker) {
                        // SIGTERM first: the worker ends through `exit`, which removes its socket
                        // files (SIGKILL left them behind); SIGKILL if it is still there after
                        // the grace period. Only a child not reaped yet is signalled, so the pid
                        // is still ours.
                        let pid = process.pid;
                        // SAFETY: a signal to a child process we started and have not reaped.
                        unsafe {
                            libc::kill(pid as libc::pid_t, libc::SIGTERM);
                        }
                        ctx.run_later(KILL_GRACE, move |raylet, _| {
                            if raylet.children.contains_key(&pid) {
                                // SAFETY: as above; still a child of ours, not reaped.
                                unsafe {
                                    libc::kill(pid as libc::pid_t, libc::SIGKILL);
                                }
                            }
                        });
                    }
                }
                Command::Reply { lease, reply } => {
                    let outcome = match reply {
                        LeaseReply::Granted { worker } => match self.workers.get(&worker).inspect(|_| {
                            self.live_leases.insert(lease);
                        }) {
                            Some(WorkerProcess { pid, address: Some(address) }) => {
                                LeaseOutcome::Granted { lease: lease.0, address: address.clone(), pid: *pid }
                            }
                            // A registered worker always has an address.
                            _ => unreachable!("granted worker {worker:?} has no address"),
                        },
                        LeaseReply::Spillback { node } => match self.peers.get(&node) {
                            Some(address) => {
                                LeaseOutcome::Spillback { node: node.to_string(), address: address.clone() }
                            }
                            // The policy chose from the view, which names every live node.
                            None => LeaseOutcome::Invalid {
                                reason: format!("spilled back to node {node}, whose address is unknown"),
                            },
                        },
                        LeaseReply::Infeasible => LeaseOutcome::Infeasible {
                            demand: self
                                .waiting
                                .get(&lease)
                                .map(|(_, demand, _)| demand.clone())
                                .unwrap_or_default(),
                        },
                        LeaseReply::WorkerStartFailed { exit } => LeaseOutcome::WorkerStartFailed { exit },
                        LeaseReply::Refused { reason } => LeaseOutcome::Invalid { reason },
                        LeaseReply::WorkerDied { exit, .. } => {
                            self.requested_by.remove(&lease);
                            self.requested_from.remove(&lease);
                            self.end_lease(lease, Some(exit));
                            continue;
                        }
                    };
                    if !matches!(outcome, LeaseOutcome::Granted { .. }) {
                        self.requested_by.remove(&lease);
                        self.requested_from.remove(&lease);
                    }
                    if let Some((waiter, ..)) = self.waiting.remove(&lease) {
                        let _ = waiter.send(outcome);
                    }
                }
            }
        }
    }

    /// The launch of `job`'s workers, if known here.
    fn launch_of(&self, job: manta_proto::JobId) -> Option<&Launch> {
        self.launches.get(&job).or(self.own_job.as_ref())
    }

    fn start_worker(&mut self, worker: WorkerId, job: manta_proto::JobId, ctx: &mut Context<Self>) {
        let Some(launch) = self.launch_of(job).cloned() else {
            // A job of a running cluster: its launch is asked of the GCS once.
            let waiting = self.awaiting_launch.entry(job).or_default();
            waiting.push(worker);
            if waiting.len() == 1 {
                self.learn_launch(job, ctx);
            }
            return;
        };
        if let Some(limit) = crate::limits::worker_start_refusal() {
            warn!(%limit, "not starting a worker");
            ctx.address().do_send(WorkerExited { worker, exit: format!("not started: {limit}") });
            return;
        }
        let (token, join_address, gcs_address) = match &self.admission {
            WorkerAdmission::Local(admission) => {
                match admission.tokens.create(&admission.ca, TokenUse::OneTime) {
                    Ok(token) => (token, self.raylet_address.clone(), self.raylet_address.clone()),
                    Err(error) => {
                        ctx.address().do_send(WorkerExited { worker, exit: format!("not started: {error}") });
                        return;
                    }
                }
            }
            WorkerAdmission::Cluster { gcs, .. } => match self.tokens.pop_front() {
                Some(token) => (token, gcs.to_string(), gcs.to_string()),
                None => {
                    // Started once a batch of tokens arrives.
                    self.awaiting_tokens.push((worker, job));
                    self.ask_for_tokens(*gcs, ctx);
                    return;
                }
            },
        };
        let raylet_pid = std::process::id();
        let mut command = Process::new(&launch.exe);
        command
            .arg0(&launch.name)
            .envs(self.node_env.iter().map(|(key, value)| (key, value)))
            .envs(launch.env.iter().map(|(key, value)| (key, value)))
            .env(worker_env::JOB_ID, job.0.to_string())
            .env(worker_env::WORKER_ID, worker.0.to_string())
            .env(worker_env::RAYLET_ADDRESS, &self.raylet_address)
            .env(worker_env::JOIN_TOKEN, token.to_string())
            .env(worker_env::JOIN_ADDRESS, join_address)
            .env(worker_env::GCS_ADDRESS, gcs_address)
            .env(worker_env::RAYLET_PID, raylet_pid.to_string())
            .stdin(Stdio::null());
        if launch.output_to.is_some() {
            command.stdout(Stdio::piped()).stderr(Stdio::piped()).env(worker_env::OUTPUT_PIPED, "1");
        }
        // SAFETY: between fork and exec the closure makes only async-signal-safe calls (prctl,
        // getppid, _exit) and touches no lock or allocation.
        unsafe {
            command.pre_exec(move || {
                // The kernel sends the worker SIGTERM when the thread that started it ends: this
                // arbiter's, which lives as long as this process.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // This process died before the line above: no signal will come, and no driver
                // waits for this worker.
                if libc::getppid() as u32 != raylet_pid {
                    libc::_exit(0);
                }
                Ok(())
            });
        }
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(error) => {
                ctx.address().do_send(WorkerExited { worker, exit: format!("not started: {error}") });
                return;
            }
        };
        let pid = child.id();
        if let Some(driver) = launch.output_to {
            let owner: manta_actor::ServiceRef<manta_proto::worker::Owner> = self.node.service(driver);
            let stdout = child.stdout.take().map(std::os::fd::OwnedFd::from);
            let stderr = child.stderr.take().map(std::os::fd::OwnedFd::from);
            for (stream, is_stderr) in [(stdout, false), (stderr, true)] {
                if let Some(stream) = stream {
                    tokio::spawn(crate::output::forward(
                        stream,
                        is_stderr,
                        (self.node_id, pid),
                        owner.clone(),
                    ));
                }
            }
        }
        // Reaped on SIGCHLD by `Reap`; the handle itself holds nothing.
        drop(child);
        info!(worker = worker.0, pid, "started a worker process");
        self.workers.insert(worker, WorkerProcess { pid, address: None });
        self.children.insert(pid, worker);
        self.report(worker.0, pid, None);
    }
}

impl RayletActor {
    /// Tells a requester, on its stderr, that its request waits for a node that has
    /// `demand` (best effort: a requester that is gone or of an older build misses it).
    fn warn_requester(&self, requester: std::net::SocketAddr, demand: &str) {
        let owner: manta_actor::ServiceRef<manta_proto::worker::Owner> = self.node.service(requester);
        let warning = manta_proto::worker::WorkerOutput {
            node_id: self.node_id,
            pid: std::process::id(),
            stderr: true,
            origin: "scheduler".to_owned(),
            lines: vec![format!(
                "Warning: the following resource request cannot be scheduled right now: {{{demand}}}. \
                 No node of the cluster has these resources: it waits for a node that has them to join."
            )],
        };
        tokio::spawn(async move {
            let _ = owner.tell(warning).await;
        });
    }

    /// On a node of a running cluster: ends this process once the GCS has been silent (no
    /// health check) for its timeout, rather than serving a cluster that is gone.
    fn give_up_on_a_silent_gcs(&mut self) {
        let WorkerAdmission::Cluster { gcs, gcs_timeout, .. } = self.admission else { return };
        let (heard, gave_up) = self.heard_gcs;
        if gave_up || heard.elapsed() < gcs_timeout {
            return;
        }
        self.heard_gcs.1 = true;
        tracing::error!(%gcs, ?gcs_timeout, "the GCS has not checked this node's health for its timeout: leaving");
        // SAFETY: a signal to this very process; its handler (the daemon's) ends it in order.
        unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
    }

    /// Tells the GCS this node's free resources when they changed (and every
    /// [`RESOURCE_REPORT_FORCED`] regardless, so a restarted GCS hears them).
    fn report_resources(&mut self, gcs: &manta_actor::ServiceRef<manta_proto::gcs::Gcs>) {
        let available: Vec<(String, f64)> = self
            .leases
            .resources()
            .available
            .iter()
            .map(|(name, quantity)| (name.to_owned(), quantity.as_f64()))
            .collect();
        let mut pending: std::collections::BTreeMap<String, u32> = std::collections::BTreeMap::new();
        for (_, demand, _) in self.waiting.values() {
            *pending.entry(demand.clone()).or_default() += 1;
        }
        let pending: Vec<(String, u32)> = pending.into_iter().collect();
        // The total changes too: placement groups' committed bundles add their resources.
        let total: Vec<(String, f64)> = self
            .leases
            .resources()
            .total
            .iter()
            .map(|(name, quantity)| (name.to_owned(), quantity.as_f64()))
            .collect();
        let now = self.now_ms();
        let due = now.saturating_sub(self.reported.1) >= RESOURCE_REPORT_FORCED.as_millis() as u64;
        let report = (available, pending, total);
        if self.reported.0.as_ref() == Some(&report) && !due {
            return;
        }
        self.reported = (Some(report.clone()), now);
        let (available, pending, total) = report;
        let request = manta_proto::gcs::requests::ReportResources {
            node_id: self.node_id,
            available,
            pending,
            total: Some(total),
        };
        let gcs = gcs.clone();
        tokio::spawn(async move {
            if let Ok(Err(error)) = gcs.ask(request).await {
                debug!(%error, "the GCS refused this node's resource report");
            }
        });
    }

    /// Asks the GCS for the cluster's resource view (the other nodes' policies' input), unless
    /// an ask is still out.
    fn ask_for_view(
        &mut self,
        gcs: &manta_actor::ServiceRef<manta_proto::gcs::Gcs>,
        ctx: &mut Context<Self>,
    ) {
        if self.view_asked {
            return;
        }
        self.view_asked = true;
        let (gcs, raylet) = (gcs.clone(), ctx.address());
        tokio::spawn(async move {
            match gcs.ask(manta_proto::gcs::requests::GetClusterView).await {
                Ok(Ok(view)) => raylet.do_send(ViewArrived(Some(view))),
                outcome => {
                    debug!(?outcome, "no cluster view from the GCS this time");
                    // Asked again at the next report.
                    raylet.do_send(ViewArrived(None));
                }
            }
        });
    }

    /// Learns how `job`'s workers start from the GCS, and checks the driver's binary here.
    fn learn_launch(&mut self, job: manta_proto::JobId, ctx: &mut Context<Self>) {
        let raylet = ctx.address();
        let WorkerAdmission::Cluster { gcs, binaries, .. } = &self.admission else {
            let reason = format!("job {job} is not this raylet's, and it belongs to no cluster to ask");
            raylet.do_send(LaunchLearnt { job, launch: Err(reason) });
            return;
        };
        let gcs: manta_actor::ServiceRef<manta_proto::gcs::Gcs> = self.node.service(*gcs);
        let (node, binaries, here) = (self.node.clone(), binaries.clone(), self.node.local_addr());
        tokio::spawn(async move {
            let launch = match gcs.ask(manta_proto::gcs::requests::GetJob(job)).await {
                Ok(Ok(Some(info))) => match (info.launch, info.driver_address.parse()) {
                    (Some(launch), Ok(driver)) => {
                        let output_to = Some(driver).filter(|_| launch.log_to_driver);
                        find_binary(&node, job, launch, (driver, here), binaries)
                            .await
                            .map(|found| Launch { output_to, ..found })
                    }
                    (None, _) => Err(format!("job {job} has no launch (its driver is embedded elsewhere)")),
                    (_, Err(_)) => {
                        Err(format!("job {job}'s driver address {:?} does not parse", info.driver_address))
                    }
                },
                Ok(Ok(None)) => Err(format!("the GCS knows no job {job}")),
                Ok(Err(error)) => Err(error.to_string()),
                Err(error) => Err(format!("the GCS could not be asked about job {job}: {error}")),
            };
            raylet.do_send(LaunchLearnt { job, launch });
        });
    }

    /// Asks the cluster's admission service for a batch of join tokens (once at a time).
    fn ask_for_tokens(&mut self, gcs: std::net::SocketAddr, ctx: &mut Context<Self>) {
        if self.awaiting_tokens.len() > 1 {
            return; // a batch is on its way: the first waiting worker asked for it
        }
        self.send_token_ask(gcs, ctx);
    }

    fn send_token_ask(&mut self, gcs: std::net::SocketAddr, ctx: &mut Context<Self>) {
        let count = TOKEN_BATCH.max(self.awaiting_tokens.len() as u32);
        let service: manta_actor::ServiceRef<manta_proto::gcs::Admission> = self.node.service(gcs);
        let raylet = ctx.address();
        tokio::spawn(async move {
            let answer = match service.ask(IssueJoinTokens { count }).await {
                Ok(Ok(tokens)) => Ok(tokens),
                Ok(Err(error)) => Err(error.to_string()),
                Err(error) => Err(error.to_string()),
            };
            raylet.do_send(TokensArrived(answer));
        });
    }

    /// Tells the GCS a worker's record (no-op without reports).
    fn report(&self, worker: u64, pid: u32, address: Option<String>) {
        let Some(reports) = &self.reports else { return };
        let info = WorkerInfo { node_id: self.node_id, worker, pid, address, alive: true, exit: None };
        let reported = reports.reported.clone();
        tokio::spawn(async move {
            let _ = reported.tell(ReportWorker(info)).await;
        });
    }

    /// A granted lease ended: tell its watchers whether its worker died.
    fn end_lease(&mut self, lease: LeaseId, death: Option<String>) {
        self.live_leases.remove(&lease);
        for watcher in self.watchers.remove(&lease).unwrap_or_default() {
            let _ = watcher.send(death.clone());
        }
        if let Some(exit) = death {
            self.deaths.push_back((lease, exit));
            if self.deaths.len() > DEATHS_REMEMBERED {
                self.deaths.pop_front();
            }
        }
    }
}

/// Ended leases whose worker death is remembered for late watchers.
const DEATHS_REMEMBERED: usize = 1024;

fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => "ended".to_owned(),
    }
}

/// How long a driver has to send its binary.
const BINARY_FETCH_WAIT: Duration = Duration::from_secs(600);

/// Where `job`'s workers start from on this node: the driver's own binary on this host, else the
/// cache, else fetched from the driver (at `driver`) into the cache. Off the raylet's thread.
async fn find_binary(
    node: &Node,
    job: manta_proto::JobId,
    launch: manta_proto::gcs::wire::JobLaunch,
    (driver, here): (std::net::SocketAddr, std::net::SocketAddr),
    binaries: crate::binary::Binaries,
) -> Result<Launch, String> {
    let platform = manta_proto::gcs::wire::this_platform();
    if !launch.platform.is_empty() && launch.platform != platform {
        return Err(format!("job {job}'s binary is built for {}; this node is {platform}", launch.platform));
    }
    let blocking = |work: Box<dyn FnOnce() -> Result<Option<Launch>, String> + Send>| async move {
        tokio::task::spawn_blocking(work)
            .await
            .unwrap_or_else(|error| Err(format!("checking a binary: {error}")))
    };
    let mut not_local = String::new();
    if binaries.local {
        let launch = launch.clone();
        match blocking(Box::new(move || crate::binary::find_driver_binary(job, launch).map(Some))).await {
            Ok(found) => return found.ok_or_else(String::new),
            Err(why) => not_local = why,
        }
    }
    let cached = {
        let (cache, launch) = (binaries.cache.clone(), launch.clone());
        move || {
            Ok(crate::binary::cached_binary(&cache, &launch)?
                .map(|exe| crate::binary::launch_from(exe, launch)))
        }
    };
    if let Some(found) = blocking(Box::new(cached.clone())).await? {
        return Ok(found);
    }
    debug!(%job, %not_local, "fetching the job's binary from its driver");
    let owner: manta_actor::ServiceRef<manta_proto::worker::Owner> = node.service(driver);
    let request = SendBinary { sha256: launch.binary_sha256.clone(), to: here };
    match owner.ask_timeout(request, BINARY_FETCH_WAIT).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => return Err(format!("job {job}'s driver could not send its binary: {error}")),
        Err(error) => return Err(format!("job {job}'s driver could not be asked for its binary: {error}")),
    }
    blocking(Box::new(cached))
        .await?
        .ok_or_else(|| format!("job {job}'s binary was sent but is not in {}", binaries.cache.display()))
}

/// Takes a driver's binary sent to this node: at most [`crate::binary::BINARY_BYTES_MAX`],
/// checked against its hash before it is kept in `cache`.
async fn receive_binary(
    cache: std::path::PathBuf,
    peer: manta_transport::NodeId,
    sha256: String,
    mut body: manta_transport::BulkBody,
) -> Result<(), String> {
    let len = body.remaining();
    if len > crate::binary::BINARY_BYTES_MAX {
        return Err(format!(
            "a binary of {len} bytes is over the limit of {}",
            crate::binary::BINARY_BYTES_MAX
        ));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    while let Some(chunk) =
        body.next_chunk().await.map_err(|error| format!("receiving the binary: {error}"))?
    {
        bytes.extend_from_slice(&chunk);
    }
    let kept = tokio::task::spawn_blocking(move || crate::binary::keep_binary(&cache, &sha256, &bytes))
        .await
        .unwrap_or_else(|error| Err(format!("keeping the binary: {error}")))?;
    info!(%peer, path = %kept.display(), "a job's binary arrived");
    Ok(())
}

impl Actor for RayletActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // One stream for every child's exit, registered before the first child starts.
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()) {
            Ok(mut children) => {
                let raylet = ctx.address();
                tokio::spawn(async move {
                    while children.recv().await.is_some() {
                        raylet.do_send(Reap);
                    }
                });
            }
            Err(error) => {
                warn!(%error, "no SIGCHLD stream: worker exits are noticed at each tick only");
                self.reap_each_tick = true;
            }
        }
        ctx.run_interval(TICK, |raylet, ctx| {
            if raylet.reap_each_tick {
                ctx.address().do_send(Reap);
            }
            let now = raylet.now_ms();
            raylet.leases.tick(now);
            raylet.perform(ctx);
            raylet.give_up_on_a_silent_gcs();
        });
        match self.admission {
            WorkerAdmission::Cluster { gcs, .. } => {
                let gcs: manta_actor::ServiceRef<manta_proto::gcs::Gcs> = self.node.service(gcs);
                ctx.run_interval(RESOURCE_REPORT, move |raylet, ctx| {
                    raylet.report_resources(&gcs);
                    raylet.ask_for_view(&gcs, ctx);
                });
            }
            // An embedded head's GCS is on this very node: it hears this node's resources too
            // (`available_resources`, the placement-group manager's view); there is no other
            // node to see.
            WorkerAdmission::Local(_) if self.reports.is_some() => {
                let gcs: manta_actor::ServiceRef<manta_proto::gcs::Gcs> =
                    self.node.service(self.node.local_addr());
                ctx.run_interval(RESOURCE_REPORT, move |raylet, _| raylet.report_resources(&gcs));
            }
            WorkerAdmission::Local(_) => {}
        }
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        for process in self.workers.values() {
            // SAFETY: as in `perform`: a signal to a child we started.
            unsafe {
                libc::kill(process.pid as libc::pid_t, libc::SIGKILL);
            }
        }
    }
}

impl Handler<RequestLease> for RayletActor {
    type Result = ResponseFuture<LeaseOutcome>;

    fn handle(&mut self, request: RequestLease, ctx: &mut Context<Self>) -> Self::Result {
        let mut demand = ResourceSet::new();
        let amounts = [(CPU, request.cpus), (GPU, request.gpus)];
        for (name, amount) in amounts
            .iter()
            .map(|(name, amount)| (*name, *amount))
            .chain(request.resources.iter().map(|(name, amount)| (name.as_str(), *amount)))
        {
            match Quantity::from_f64(name, amount) {
                Ok(quantity) => demand.set(name, quantity),
                Err(error) => {
                    let outcome = LeaseOutcome::Invalid { reason: error.to_string() };
                    return Box::pin(std::future::ready(outcome));
                }
            }
        }
        let mut placement = demand.clone();
        if request.placement_cpus > request.cpus {
            match Quantity::from_f64(CPU, request.placement_cpus) {
                Ok(cpus) => placement.set(CPU, cpus),
                Err(error) => {
                    return Box::pin(std::future::ready(LeaseOutcome::Invalid { reason: error.to_string() }));
                }
            }
        }
        let lease = LeaseId(self.next_lease);
        self.next_lease += 1;
        let (waiter, answer) = oneshot::channel();
        // What it asks for, as `manta status` and the warnings show it: "1 CPU, 2 gpu_farm"
        // (amounts of zero left out).
        let amounts = [(CPU, request.cpus), (GPU, request.gpus)].into_iter();
        let parts: Vec<String> = amounts
            .chain(request.resources.iter().map(|(name, amount)| (name.as_str(), *amount)))
            .filter(|(_, amount)| *amount != 0.0)
            .map(|(name, amount)| format!("{amount} {name}"))
            .collect();
        let description = if parts.is_empty() { "nothing".to_owned() } else { parts.join(", ") };
        self.waiting.insert(lease, (waiter, description.clone(), request.warn));
        if let Some(requester) = request.requester {
            self.requested_by.insert(lease, WorkerId(requester));
        }
        if let Some(requester) = request.remote_requester {
            self.requested_from.insert(lease, requester);
            self.watch_requester(requester, ctx);
        }
        let now = self.now_ms();
        let request_kind = LeaseRequest {
            demand,
            placement,
            strategy: request.strategy,
            dedicated: request.dedicated,
            job: request.job.unwrap_or(manta_proto::JobId(0)),
            spilled: request.spilled,
            arguments: request.arguments,
        };
        self.leases.request_lease_placed(now, lease, request_kind, &mut self.random);
        self.perform(ctx);
        Box::pin(async move {
            answer.await.unwrap_or(LeaseOutcome::Invalid {
                reason: format!("the raylet dropped the request for {description}"),
            })
        })
    }
}

impl Handler<ReturnLease> for RayletActor {
    type Result = ();

    fn handle(&mut self, request: ReturnLease, ctx: &mut Context<Self>) {
        self.requested_by.remove(&LeaseId(request.lease));
        self.requested_from.remove(&LeaseId(request.lease));
        self.end_lease(LeaseId(request.lease), None);
        let now = self.now_ms();
        self.leases.return_lease(now, LeaseId(request.lease), request.reusable);
        self.perform(ctx);
    }
}

impl Handler<WatchLease> for RayletActor {
    type Result = ResponseFuture<Option<String>>;

    fn handle(&mut self, request: WatchLease, _: &mut Context<Self>) -> Self::Result {
        let lease = LeaseId(request.lease);
        if let Some((_, exit)) = self.deaths.iter().find(|(dead, _)| *dead == lease) {
            let exit = exit.clone();
            return Box::pin(std::future::ready(Some(exit)));
        }
        if !self.live_leases.contains(&lease) {
            return Box::pin(std::future::ready(None));
        }
        let (watcher, death) = oneshot::channel();
        self.watchers.entry(lease).or_default().push(watcher);
        Box::pin(async move { death.await.unwrap_or(None) })
    }
}

impl Handler<RegisterWorker> for RayletActor {
    type Result = bool;

    fn handle(&mut self, request: RegisterWorker, ctx: &mut Context<Self>) -> bool {
        let worker = WorkerId(request.worker);
        let expected =
            self.leases.job_of(worker).and_then(|job| self.launch_of(job)).map(|launch| launch.fingerprint);
        if expected != Some(request.registry_fingerprint) {
            warn!(
                worker = request.worker,
                "refusing a worker built from other code (registry fingerprint differs)"
            );
            return false;
        }
        let Some(process) = self.workers.get_mut(&worker) else { return false };
        process.address = Some(request.address.clone());
        let pid = process.pid;
        self.report(request.worker, pid, Some(request.address));
        let now = self.now_ms();
        let accepted = self.leases.worker_registered(now, worker);
        self.perform(ctx);
        accepted
    }
}

impl Handler<WorkerExited> for RayletActor {
    type Result = ();

    fn handle(&mut self, message: WorkerExited, ctx: &mut Context<Self>) {
        info!(worker = message.worker.0, exit = %message.exit, "a worker process ended");
        let pid = self.workers.remove(&message.worker).map_or(0, |process| process.pid);
        if let Some(reports) = &self.reports {
            let exited = reports.exited.clone();
            let report = ReportWorkerExit {
                node_id: self.node_id,
                worker: message.worker.0,
                pid,
                exit: message.exit.clone(),
            };
            tokio::spawn(async move {
                let _ = exited.tell(report).await;
            });
        }
        let now = self.now_ms();
        self.leases.worker_exited(now, message.worker, &message.exit);
        self.perform(ctx);
        // What the dead worker asked for: nobody will use or return it.
        let orphans: Vec<LeaseId> = self
            .requested_by
            .iter()
            .filter(|(_, requester)| **requester == message.worker)
            .map(|(lease, _)| *lease)
            .collect();
        self.end_orphans(orphans, ctx);
    }
}

/// A process of another node that asked this raylet for leases died.
struct RequesterGone(std::net::SocketAddr);

impl Message for RequesterGone {
    type Result = ();
}

impl Handler<RequesterGone> for RayletActor {
    type Result = ();

    fn handle(&mut self, RequesterGone(requester): RequesterGone, ctx: &mut Context<Self>) {
        self.watched_requesters.remove(&requester);
        let orphans: Vec<LeaseId> = self
            .requested_from
            .iter()
            .filter(|(_, from)| **from == requester)
            .map(|(lease, _)| *lease)
            .collect();
        if !orphans.is_empty() {
            info!(%requester, leases = orphans.len(), "a requester on another node died: its leases end");
        }
        self.end_orphans(orphans, ctx);
    }
}

impl RayletActor {
    /// Ends the requests and leases of a requester that died: nobody will use or return them.
    fn end_orphans(&mut self, orphans: Vec<LeaseId>, ctx: &mut Context<Self>) {
        for lease in orphans {
            self.requested_by.remove(&lease);
            self.requested_from.remove(&lease);
            self.waiting.remove(&lease);
            let now = self.now_ms();
            if self.leases.cancel(now, lease) {
                debug!(lease = lease.0, "ended a lease whose requester died");
                self.end_lease(lease, None);
            }
            self.perform(ctx);
        }
    }

    /// Watches a requester of another node (once): a parked `AwaitExit` it answers now and
    /// then, asked again while it lives; the ask fails when it dies.
    fn watch_requester(&mut self, requester: std::net::SocketAddr, ctx: &mut Context<Self>) {
        if !self.watched_requesters.insert(requester) {
            return;
        }
        let owner: manta_actor::ServiceRef<manta_proto::worker::Owner> = self.node.service(requester);
        let raylet = ctx.address();
        tokio::spawn(async move {
            while owner.ask_unbounded(manta_proto::worker::AwaitExit).await.is_ok() {}
            raylet.do_send(RequesterGone(requester));
        });
    }
}

impl Handler<crate::requests::HealthCheck> for RayletActor {
    type Result = ();

    fn handle(&mut self, _: crate::requests::HealthCheck, _: &mut Context<Self>) {
        self.heard_gcs.0 = Instant::now();
    }
}

impl Handler<PrepareBundles> for RayletActor {
    type Result = Result<(), String>;

    /// Phase one of a placement group's two-phase commit (see `leases/bundles.rs`).
    fn handle(&mut self, request: PrepareBundles, ctx: &mut Context<Self>) -> Self::Result {
        let prepared = self.leases.prepare_bundles(request.group, request.round, &request.bundles);
        debug!(group = %request.group, bundles = request.bundles.len(), ok = prepared.is_ok(), "prepare bundles");
        self.perform(ctx);
        prepared
    }
}

impl Handler<CommitBundles> for RayletActor {
    type Result = Result<(), String>;

    /// Phase two: the prepared bundles become the group's resources here.
    fn handle(&mut self, request: CommitBundles, ctx: &mut Context<Self>) -> Self::Result {
        let now = self.now_ms();
        let committed = self.leases.commit_bundles(now, request.group, request.round, &request.indices);
        self.perform(ctx);
        committed
    }
}

impl Handler<CancelBundles> for RayletActor {
    type Result = ();

    /// A failed round's bundles, or a removed group's, go back.
    fn handle(&mut self, request: CancelBundles, ctx: &mut Context<Self>) {
        let now = self.now_ms();
        self.leases.cancel_bundles(now, request.group, request.round, &request.indices);
        self.perform(ctx);
    }
}

impl Handler<WorkerBlocked> for RayletActor {
    type Result = ();

    fn handle(&mut self, message: WorkerBlocked, ctx: &mut Context<Self>) {
        let now = self.now_ms();
        self.leases.worker_blocked(now, WorkerId(message.worker), message.blocked);
        self.perform(ctx);
    }
}
