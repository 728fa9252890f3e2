//! `manta-node`: composes a node's daemons. A head node runs the GCS with the actor manager
//! beside it, and every node a raylet and its object store (with the store service that lets
//! processes other than the store's write into it). `manta::init()` composes an embedded head
//! inside the driver; `manta start` (next) composes the same daemons in their own processes.
//!
//! Starting is two steps, because what the raylet hands its workers (the job, settings) is known
//! only once the driver has registered with the GCS: [`Head::start`] brings up the node, the
//! GCS and the store; [`Head::start_raylet`] the raylet and the actor manager.

use std::path::PathBuf;
use std::sync::Arc;

use manta_actor::{ActorRef, Node, RegisterError, ServiceRef};
use manta_gcs::{ActorManager, GcsActor, MemoryStorage};
use manta_objectstore::{ObjectStore, StoreError, StoreReader};
use manta_proto::gcs::wire::NodeInfo;
use manta_proto::gcs::Gcs;
use manta_proto::NodeId;
use manta_raylet::{PoolConfig, Quantity, RayletActor, ResourceError, ResourceSet, WorkerReports, CPU, GPU};
use manta_transport::{Admission, ClusterCa, IdentityError, JoinError, StartError, TokenRegistry, Transport};
pub use objects::refusal;

pub mod cluster;
pub mod objects;
pub mod session;

pub use manta_proto::gcs::wire::NodeState;
use parking_lot::Mutex;

/// How long the object store must go without a new object before freed memory goes back to
/// the kernel.
pub const STORE_TRIM_PERIOD: std::time::Duration = std::time::Duration::from_secs(2);

/// What a node offers and how its store is sized.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// CPUs offered.
    pub num_cpus: usize,
    /// GPUs offered.
    pub num_gpus: usize,
    /// Custom resources offered.
    pub resources: Vec<(String, f64)>,
    /// Bytes of shared memory for the object store.
    pub object_store_bytes: u64,
    /// Object slots in the store's index.
    pub object_slots: usize,
    /// The scheduling policy, by its registered name (`manta_raylet::policies`; `hybrid`).
    pub scheduler: String,
}

/// Starting a node's daemons failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The cluster's identity (CA, node id, certificate) could not be made.
    #[error("making the cluster's identity: {0}")]
    Identity(#[from] IdentityError),
    /// The node's transport could not start.
    #[error("starting the transport: {0}")]
    Transport(#[from] StartError),
    /// A daemon could not be registered on the node (a name already taken).
    #[error("registering a daemon: {0}")]
    Register(#[from] RegisterError),
    /// A configured resource amount is invalid.
    #[error("the configured resources: {0}")]
    Resources(#[from] ResourceError),
    /// The object store could not be created.
    #[error("creating the object store: {0}")]
    Store(#[from] StoreError),
    /// No scheduling policy has the configured name.
    #[error("{0}")]
    Scheduler(String),
    /// The GCS's storage could not be opened.
    #[error("{0}")]
    Storage(#[from] manta_gcs::StorageError),
    /// Joining the cluster failed (a wrong token, another cluster, nobody at the address).
    #[error("joining the cluster: {0}")]
    Join(#[from] JoinError),
    /// The GCS refused or could not be asked.
    #[error("the GCS at {address}: {reason}")]
    Gcs {
        /// Its address.
        address: std::net::SocketAddr,
        /// Why.
        reason: String,
    },
}

/// A head node's daemons, running on their node's transport thread.
pub struct Head {
    /// The node (transport and registry) the daemons are registered on.
    pub node: Node,
    /// The node's id.
    pub node_id: NodeId,
    /// The cluster's CA and join tokens (the raylet admits its workers with them).
    pub admission: Admission,
    /// The object store, hosted in this process.
    pub store: Arc<Mutex<ObjectStore>>,
    /// This process's view of the store's memory.
    pub store_reader: StoreReader,
    /// Where other processes of this host map the store.
    pub store_path: PathBuf,
    /// The resources this node offers.
    pub total: ResourceSet,
    /// The GCS, as every caller reaches it.
    pub gcs: ServiceRef<Gcs>,
    gcs_actor: ActorRef<GcsActor<MemoryStorage>>,
}

impl Head {
    /// Starts a head node: a new cluster CA, the node's identity and transport, the GCS (in
    /// memory) and the object store with its service.
    pub fn start(config: &NodeConfig) -> Result<Head, NodeError> {
        let ca = Arc::new(ClusterCa::generate("embedded")?);
        let admission = Admission { ca: ca.clone(), tokens: Arc::new(TokenRegistry::default()) };
        let node_id = NodeId::random().map_err(IdentityError::from)?;
        let identity = ca.issue(node_id)?;
        let node = Node::start(Transport::builder(identity).admission(admission.clone()))?;
        let gcs_actor =
            ActorRef::local(GcsActor::start(&node, MemoryStorage::default(), MemoryStorage::default)?);
        let gcs = node.service(node.local_addr());

        let (store, store_reader, store_path) = start_store(&node, config)?;
        let total = total_resources(config)?;
        Ok(Head { node, node_id, admission, store, store_reader, store_path, total, gcs, gcs_actor })
    }

    /// This node's record for the GCS (registered by whoever drives the start).
    pub fn node_info(&self, now_ms: u64) -> NodeInfo {
        NodeInfo {
            node_id: self.node_id,
            address: self.node.local_addr().to_string(),
            resources: self
                .total
                .iter()
                .map(|(name, quantity)| (name.to_owned(), quantity.as_f64()))
                .collect(),
            state: NodeState::Alive,
            registered_ms: now_ms,
            death_cause: None,
            labels: Vec::new(),
        }
    }

    /// Starts the raylet (whose workers get `worker_env`, and must be built from the code
    /// `registry_fingerprint` names) and the actor manager beside the GCS.
    pub fn start_raylet(
        &self,
        pool: PoolConfig,
        registry_fingerprint: u64,
        worker_env: Vec<(String, String)>,
    ) -> Result<(), NodeError> {
        let reports = WorkerReports {
            reported: manta_actor::Recipient::of(self.gcs_actor.clone()),
            exited: manta_actor::Recipient::of(self.gcs_actor.clone()),
        };
        // Both are registered on the node, which keeps them alive; everyone reaches them as
        // services.
        let scheduler = pool.scheduler.clone();
        RayletActor::start(
            &self.node,
            manta_raylet::WorkerAdmission::Local(self.admission.clone()),
            self.total.clone(),
            pool,
            Some(manta_raylet::Launch::this_binary(registry_fingerprint, worker_env)),
            Vec::new(),
            Some(reports),
        )?;
        let here = self.node.local_addr();
        ActorManager::start(&self.node, self.gcs.clone(), self.node.service(here), self.node_id)?;
        manta_gcs::PlacementGroupManager::start(&self.node, self.gcs.clone(), &scheduler)?;
        Ok(())
    }
}

/// The resources a node with `config` offers.
pub(crate) fn total_resources(config: &NodeConfig) -> Result<ResourceSet, NodeError> {
    let mut total = ResourceSet::new()
        .with(CPU, Quantity::units(config.num_cpus as u64))
        .with(GPU, Quantity::units(config.num_gpus as u64));
    for (name, amount) in &config.resources {
        total.set(name, Quantity::from_f64(name, *amount)?);
    }
    Ok(total)
}

/// Creates the node's object store, registers its service on `node`, and keeps trimming it.
pub(crate) fn start_store(
    node: &Node,
    config: &NodeConfig,
) -> Result<(Arc<Mutex<ObjectStore>>, StoreReader, PathBuf), NodeError> {
    let store = ObjectStore::create(config.object_slots, config.object_store_bytes)?;
    let store_reader = store.reader().clone();
    let store_path = store_reader.arena().peer_path();
    let store = Arc::new(Mutex::new(store));
    objects::start(node, store.clone())?;
    // Freed memory is kept warm while the store is busy, and given back once it has been idle
    // for a trim period (see `ObjectStore::trim`).
    let trimmed = Arc::downgrade(&store);
    node.arbiter().spawn(async move {
        let mut period = tokio::time::interval(STORE_TRIM_PERIOD);
        period.tick().await;
        loop {
            period.tick().await;
            let Some(store) = trimmed.upgrade() else { return };
            let mut store = store.lock();
            if store.idle_since_last_check() {
                store.reclaim();
                store.trim();
            }
        }
    });
    Ok((store, store_reader, store_path))
}
