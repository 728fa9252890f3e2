//! The daemons of a running cluster, each in a process of its own (`manta gcs`, `manta raylet`,
//! started by `manta start`): the GCS holds the cluster's CA and admits newcomers with a
//! long-lived join token; a raylet joins with that token, starts its node's store and raylet,
//! and registers the node. See docs/decisions/cluster.md.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

pub use manta_raylet::binary::Binaries;

use manta_actor::{spawn, Actor, Context, Handler, LocalRef, Node, Routes, ServiceRef, SpawnOptions};
use manta_gcs::{ActorManager, GcsActor, MemoryStorage, RedbStorage, Storage};
use manta_objectstore::{ObjectStore, StoreReader};
use manta_proto::gcs::requests::{GetAllNodes, IssueJoinTokens, MarkNodeDead, RegisterNode};
use manta_proto::gcs::wire::{NodeInfo, NodeState};
use manta_proto::gcs::Gcs;
use manta_proto::gcs::{Admission as AdmissionProtocol, GcsError};
use manta_proto::raylet::requests::HealthCheck;
use manta_proto::raylet::Raylet;
use manta_proto::NodeId;
use manta_proto::Protocol as _;
use manta_raylet::{worker_env, PoolConfig, RayletActor};
use manta_transport::{
    join_blocking, Admission, ClusterCa, IdentityError, JoinToken, TokenRegistry, TokenUse, Transport,
    TransportConfig,
};
use parking_lot::Mutex;

use crate::{start_store, total_resources, NodeConfig, NodeError};

/// The GCS daemon: the cluster's CA, the GCS, and the token that admits its nodes and clients.
pub struct GcsDaemon {
    /// The node (transport and registry) the GCS is registered on.
    pub node: Node,
    /// The long-lived join token of this cluster's nodes, drivers and CLI.
    pub token: JoinToken,
    _gcs: LocalRef<GcsActor<Box<dyn Storage>>>,
}

/// How the GCS checks that its nodes live (Ray's `health_check_*` settings and defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthChecks {
    /// Before the first round.
    pub initial_delay: Duration,
    /// Between rounds.
    pub period: Duration,
    /// How long one check may take.
    pub timeout: Duration,
    /// Misses in a row that make a node dead.
    pub failure_threshold: u32,
}

impl Default for HealthChecks {
    fn default() -> Self {
        HealthChecks {
            initial_delay: Duration::from_secs(5),
            period: Duration::from_secs(3),
            timeout: Duration::from_secs(10),
            failure_threshold: 5,
        }
    }
}

/// What a GCS with storage keeps of its cluster's identity, in `DIR/identity` (readable by its
/// user only: the CA's key admits members).
struct KeptIdentity {
    ca: Vec<u8>,
    token: JoinToken,
    node_id: NodeId,
    address: SocketAddr,
}

impl KeptIdentity {
    const FILE: &'static str = "identity";

    fn failed(path: &std::path::Path, what: impl std::fmt::Display) -> NodeError {
        NodeError::Storage(manta_gcs::StorageError(format!(
            "the cluster's identity in {}: {what}",
            path.display()
        )))
    }

    /// The identity kept in `directory`, if any.
    fn read(directory: &std::path::Path) -> Result<Option<KeptIdentity>, NodeError> {
        let path = directory.join(Self::FILE);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(Self::failed(&path, error)),
        };
        // The CA's bytes, length first, then text lines.
        let (ca, text) = bytes
            .split_first_chunk::<4>()
            .map(|(length, rest)| (u32::from_be_bytes(*length) as usize, rest))
            .filter(|(length, rest)| *length <= rest.len())
            .map(|(length, rest)| rest.split_at(length))
            .ok_or_else(|| Self::failed(&path, "cut short"))?;
        let text = std::str::from_utf8(text).map_err(|_| Self::failed(&path, "not UTF-8"))?;
        let mut lines = text.lines();
        let mut field = |name: &str| {
            lines
                .next()
                .and_then(|line| line.strip_prefix(name))
                .map(str::to_owned)
                .ok_or_else(|| Self::failed(&path, format!("no {name}line")))
        };
        let token = field("token ")?.parse().map_err(|error| Self::failed(&path, error))?;
        let node_id = field("node ")?.parse().map_err(|error| Self::failed(&path, error))?;
        let address = field("address ")?.parse().map_err(|error| Self::failed(&path, error))?;
        Ok(Some(KeptIdentity { ca: ca.to_vec(), token, node_id, address }))
    }

    /// Keeps it in `directory`, whole or not at all (written aside, then renamed).
    fn write(&self, directory: &std::path::Path) -> Result<(), NodeError> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = directory.join(Self::FILE);
        let aside = directory.join(format!("{}.new", Self::FILE));
        let text = format!("token {}\nnode {}\naddress {}\n", self.token, self.node_id, self.address);
        let mut bytes = (self.ca.len() as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(&self.ca);
        bytes.extend_from_slice(text.as_bytes());
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&aside)
            .map_err(|error| Self::failed(&aside, error))?;
        file.write_all(&bytes).and_then(|()| file.sync_all()).map_err(|error| Self::failed(&aside, error))?;
        std::fs::rename(&aside, &path).map_err(|error| Self::failed(&path, error))
    }
}

impl GcsDaemon {
    /// Starts a new cluster's GCS listening on `bind` (port 0: any free port), checking its
    /// nodes' health as `health` says; placement groups' bundles are placed by the policy
    /// registered as `scheduler`. Its tables are kept in `storage` (a directory: on disk, and
    /// found again by a GCS started later on the same directory), or in memory.
    pub fn start(
        bind: SocketAddr,
        health: HealthChecks,
        scheduler: &str,
        storage: Option<&std::path::Path>,
    ) -> Result<GcsDaemon, NodeError> {
        manta_raylet::policies::policy_named(scheduler).map_err(NodeError::Scheduler)?;
        let durable = storage.map(RedbStorage::open).transpose().map_err(NodeError::Storage)?;
        let mut admission_tables = durable.clone();
        // A restarted GCS actor (after a panic) reopens nothing: it shares the open database.
        let tables = move || -> Box<dyn Storage> {
            match &durable {
                Some(tables) => Box::new(tables.clone()),
                None => Box::new(MemoryStorage::default()),
            }
        };
        // With storage, the cluster's identity is kept beside its tables: a GCS started again
        // there is the same cluster (its CA, token, node id and address), so its members'
        // connections to it come back by themselves.
        let kept = storage.map(KeptIdentity::read).transpose()?.flatten();
        let (ca, node_id, bind) = match &kept {
            // Where its members look for it, whatever `bind` says.
            Some(kept) => (ClusterCa::from_bytes(&kept.ca)?, kept.node_id, kept.address),
            None => (ClusterCa::generate("manta")?, NodeId::random().map_err(IdentityError::from)?, bind),
        };
        let ca = Arc::new(ca);
        let admission = Admission { ca: ca.clone(), tokens: Arc::new(TokenRegistry::default()) };
        if let (Some(tables), Some(_)) = (&mut admission_tables, &kept) {
            readmit_kept_tokens(tables, &admission.tokens)?;
        }
        let identity = ca.issue(node_id)?;
        let node = Node::start(
            Transport::builder(identity)
                .bind(bind)
                .admission(admission.clone())
                // The same for the same cluster: a restarted GCS resets its previous life's
                // connections, so their peers connect again at once.
                .reset_key(ca.derived_secret("stateless reset"))
                .config(TransportConfig::cluster(None)),
        )?;
        let gcs = GcsActor::start(&node, tables(), tables)?;
        let token = match &kept {
            Some(kept) => {
                admission.tokens.insert(&kept.token, TokenUse::LongLived);
                kept.token.clone()
            }
            None => admission.tokens.create(&ca, TokenUse::LongLived)?,
        };
        if let (Some(directory), None) = (storage, &kept) {
            let identity =
                KeptIdentity { ca: ca.to_bytes(), token: token.clone(), node_id, address: node.local_addr() };
            identity.write(directory)?;
        }
        let issuer =
            spawn(node.arbiter(), SpawnOptions::named(AdmissionProtocol::NAME).max_restarts(u32::MAX), {
                let admission = admission.clone();
                move || AdmissionService { admission: admission.clone(), kept: admission_tables.clone() }
            });
        node.register(AdmissionProtocol::NAME, Routes::new(issuer).message::<IssueJoinTokens>())?;
        node.arbiter().spawn(check_health(node.clone(), health));
        node.arbiter().spawn(start_actor_manager(node.clone()));
        manta_gcs::PlacementGroupManager::start(&node, node.service(node.local_addr()), scheduler)?;
        Ok(GcsDaemon { node, token, _gcs: gcs })
    }

    /// Where nodes and clients reach it.
    pub fn address(&self) -> SocketAddr {
        self.node.local_addr()
    }
}

/// Issues one-time join tokens for the workers raylets start (beside the GCS, which holds the
/// CA). With storage, it keeps the hash of each token it issues, so that a GCS started again
/// admits the workers raylets start with tokens from before.
struct AdmissionService {
    admission: Admission,
    kept: Option<RedbStorage>,
}

/// How long a kept one-time token stays good across a restart: a worker not joined by then
/// was given up by its raylet (`register_timeout_ms`, 60 s).
const KEPT_TOKEN_MS: u64 = 120_000;

/// Admits again the one-time tokens a previous GCS on `tables` issued recently (a token
/// redeemed just before the restart is good once more: the price of not writing every join),
/// and forgets the older ones.
fn readmit_kept_tokens(tables: &mut RedbStorage, tokens: &TokenRegistry) -> Result<(), NodeError> {
    use manta_gcs::Table;
    let now = now_ms();
    let mut stale = Vec::new();
    for (hash, issued) in tables.scan(Table::Admission, b"")? {
        let issued = <[u8; 8]>::try_from(issued.as_slice()).map(u64::from_be_bytes).unwrap_or(0);
        match <[u8; 32]>::try_from(hash.as_slice()) {
            Ok(secret_hash) if now.saturating_sub(issued) < KEPT_TOKEN_MS => {
                tokens.insert_hash(secret_hash, TokenUse::OneTime)
            }
            _ => stale.push(manta_gcs::Write::Delete { table: Table::Admission, key: hash }),
        }
    }
    tables.apply(stale)?;
    Ok(())
}

impl Actor for AdmissionService {
    type Context = Context<Self>;
}

impl Handler<IssueJoinTokens> for AdmissionService {
    type Result = Result<Vec<String>, GcsError>;

    fn handle(&mut self, request: IssueJoinTokens, _: &mut Context<Self>) -> Self::Result {
        let tokens = (0..request.count.min(IssueJoinTokens::MAX))
            .map(|_| {
                self.admission
                    .tokens
                    .create(&self.admission.ca, TokenUse::OneTime)
                    .map_err(|error| GcsError::Token(error.to_string()))
            })
            .collect::<Result<Vec<JoinToken>, GcsError>>()?;
        if let Some(tables) = &mut self.kept {
            let issued = now_ms().to_be_bytes().to_vec();
            let writes = tokens
                .iter()
                .map(|token| manta_gcs::Write::Put {
                    table: manta_gcs::Table::Admission,
                    key: token.secret_hash().to_vec(),
                    value: issued.clone(),
                })
                .collect();
            // Kept before they are handed out: a token a raylet holds is one a restart honours.
            tables.apply(writes).map_err(|error| GcsError::Storage(error.0))?;
        }
        Ok(tokens.iter().map(ToString::to_string).collect())
    }
}

/// A node of a running cluster: its transport, store and raylet, registered with the GCS.
pub struct RayletDaemon {
    /// The node (transport and registry).
    pub node: Node,
    /// Its record, as registered with the GCS.
    pub info: NodeInfo,
    /// Where other processes of this host map its store.
    pub store_path: std::path::PathBuf,
    /// The GCS.
    pub gcs: ServiceRef<Gcs>,
    gcs_address: SocketAddr,
    _store: (Arc<Mutex<ObjectStore>>, StoreReader),
}

impl RayletDaemon {
    /// Joins the cluster whose GCS is at `gcs_address` with `token`, listens on `ip` (any free
    /// port), starts the store and the raylet, and registers the node with `labels`. The node
    /// leaves (its process ends) once the GCS has been silent for `gcs_timeout`.
    pub fn start(
        (gcs_address, gcs_timeout): (SocketAddr, Duration),
        token: &JoinToken,
        ip: IpAddr,
        (config, binaries): (&NodeConfig, Binaries),
        labels: Vec<(String, String)>,
    ) -> Result<RayletDaemon, NodeError> {
        manta_raylet::policies::policy_named(&config.scheduler).map_err(NodeError::Scheduler)?;
        let identity = join_blocking(gcs_address, token, &TransportConfig::default())?;
        let node_id = identity.node_id();
        let scope = manta_raylet::local_scope(node_id);
        let transport_config = TransportConfig::cluster(Some(scope.clone()));
        let node =
            Node::start(Transport::builder(identity).bind(SocketAddr::new(ip, 0)).config(transport_config))?;
        let (store, reader, store_path) = start_store(&node, config)?;
        let total = total_resources(config)?;
        let pool = PoolConfig {
            workers_max: config.num_cpus.max(1) * 2,
            start_concurrency_max: config.num_cpus.max(1),
            wait_when_infeasible: true,
            labels: labels.clone(),
            scheduler: config.scheduler.clone(),
            ..PoolConfig::default()
        };
        let admission = manta_raylet::WorkerAdmission::Cluster { gcs: gcs_address, gcs_timeout, binaries };
        let node_env = vec![
            (worker_env::STORE_PATH.to_owned(), store_path.display().to_string()),
            (worker_env::NODE_ID.to_owned(), node_id.to_string()),
            (worker_env::LOCAL_SCOPE.to_owned(), scope),
        ];
        RayletActor::start(&node, admission, total.clone(), pool, None, node_env, None)?;
        let info = NodeInfo {
            node_id,
            address: node.local_addr().to_string(),
            resources: total.iter().map(|(name, quantity)| (name.to_owned(), quantity.as_f64())).collect(),
            state: NodeState::Alive,
            registered_ms: now_ms(),
            death_cause: None,
            labels,
        };
        let gcs: ServiceRef<Gcs> = node.service(gcs_address);
        ask_gcs(&node, &gcs, gcs_address, RegisterNode(info.clone()))?;
        Ok(RayletDaemon { node, info, store_path, gcs, gcs_address, _store: (store, reader) })
    }

    /// Tells the GCS this node is leaving (`manta stop`); bounded by the ask's timeout.
    pub fn deregister(&self, cause: &str) -> Result<(), NodeError> {
        let request = MarkNodeDead { node_id: self.info.node_id, cause: cause.to_owned() };
        ask_gcs(&self.node, &self.gcs, self.gcs_address, request).map(drop)
    }
}

/// A client of a running cluster (`manta status`): joins with the token and asks the GCS.
pub struct ClusterClient {
    node: Node,
    gcs: ServiceRef<Gcs>,
    address: SocketAddr,
}

impl ClusterClient {
    /// Joins the cluster whose GCS is at `address` with `token`.
    pub fn connect(address: SocketAddr, token: &JoinToken) -> Result<ClusterClient, NodeError> {
        let identity = join_blocking(address, token, &TransportConfig::default())?;
        let node = Node::start(Transport::builder(identity))?;
        let gcs = node.service(address);
        Ok(ClusterClient { node, gcs, address })
    }

    /// Every node with its resources now (total, free, pending demand), alive or dead.
    pub fn view(&self) -> Result<Vec<manta_proto::gcs::wire::NodeLoad>, NodeError> {
        self.ask(manta_proto::gcs::requests::GetClusterView)
    }

    /// Every node the GCS knows, alive or dead.
    pub fn nodes(&self) -> Result<Vec<NodeInfo>, NodeError> {
        self.ask(GetAllNodes)
    }

    /// Every actor the GCS knows, in any state.
    pub fn actors(&self) -> Result<Vec<manta_gcs::ActorInfo>, NodeError> {
        self.ask(manta_proto::gcs::requests::ListActors)
    }

    /// Asks the GCS, blocking this thread for the answer.
    fn ask<M, T>(&self, request: M) -> Result<T, NodeError>
    where
        M: manta_proto::WireMessage<Result = Result<T, GcsError>>,
        Gcs: manta_proto::Accepts<M>,
        T: Send + 'static,
    {
        ask_gcs(&self.node, &self.gcs, self.address, request)
    }
}

/// Asks the GCS at `address` from `node`'s arbiter, blocking this (non-arbiter) thread for the
/// answer; a refusal or an unanswered ask (bounded by the ask's timeout) is the error.
fn ask_gcs<M, T>(node: &Node, gcs: &ServiceRef<Gcs>, address: SocketAddr, request: M) -> Result<T, NodeError>
where
    M: manta_proto::WireMessage<Result = Result<T, GcsError>>,
    Gcs: manta_proto::Accepts<M>,
    T: Send + 'static,
{
    let refused = |reason: String| NodeError::Gcs { address, reason };
    let (ask, answer) = std::sync::mpsc::sync_channel(1);
    let gcs = gcs.clone();
    node.arbiter().spawn(async move {
        let _ = ask.send(gcs.ask(request).await);
    });
    match answer.recv() {
        Ok(Ok(Ok(answer))) => Ok(answer),
        Ok(Ok(Err(error))) => Err(refused(error.to_string())),
        Ok(Err(error)) => Err(refused(error.to_string())),
        Err(_) => Err(refused("the node's arbiter stopped".to_owned())),
    }
}

/// Starts the actor manager beside the GCS once a node has registered: it places actors on
/// that node's raylet (placing them across nodes comes with the cluster's resource view,
/// docs/decisions/cluster.md).
async fn start_actor_manager(node: Node) {
    let gcs: ServiceRef<Gcs> = node.service(node.local_addr());
    loop {
        if let Ok(Ok(nodes)) = gcs.ask(GetAllNodes).await {
            let first = nodes.into_iter().find(|info| info.state == NodeState::Alive);
            if let Some((info, address)) =
                first.and_then(|info| Some((info.clone(), info.address.parse().ok()?)))
            {
                let raylet: ServiceRef<Raylet> = node.service(address);
                if let Err(error) = ActorManager::start(&node, gcs.clone(), raylet, info.node_id) {
                    tracing::error!(%error, "the actor manager could not start");
                }
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Checks every alive node's raylet each period; a node that misses `failure_threshold` checks
/// in a row is marked dead (the GCS publishes it).
async fn check_health(node: Node, health: HealthChecks) {
    let gcs: ServiceRef<Gcs> = node.service(node.local_addr());
    let mut misses: HashMap<NodeId, u32> = HashMap::new();
    tokio::time::sleep(health.initial_delay).await;
    let mut rounds = tokio::time::interval(health.period);
    rounds.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        rounds.tick().await;
        let Ok(Ok(nodes)) = gcs.ask(GetAllNodes).await else { continue };
        let mut checks = tokio::task::JoinSet::new();
        for info in nodes.into_iter().filter(|info| info.state == NodeState::Alive) {
            let Ok(address) = info.address.parse::<SocketAddr>() else { continue };
            let raylet: ServiceRef<Raylet> = node.service(address);
            checks.spawn(async move {
                (info.node_id, raylet.ask_timeout(HealthCheck, health.timeout).await.is_ok())
            });
        }
        let mut checked = std::collections::HashSet::new();
        while let Some(Ok((node_id, answered))) = checks.join_next().await {
            checked.insert(node_id);
            if answered {
                misses.remove(&node_id);
                continue;
            }
            let missed = misses.entry(node_id).or_default();
            *missed += 1;
            if *missed >= health.failure_threshold {
                misses.remove(&node_id);
                let cause = format!(
                    "missed {} health checks in a row ({:?} apart, {:?} each)",
                    health.failure_threshold, health.period, health.timeout
                );
                tracing::warn!(%node_id, %cause, "a node is dead");
                let _ = gcs.ask(MarkNodeDead { node_id, cause }).await;
            }
        }
        misses.retain(|node_id, _| checked.contains(node_id));
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}
