//! `init()`: the embedded cluster in the driver, or the worker loop in a worker process; and
//! task submission through Ray's lease protocol.
//!
//! Driver: `init()` starts a node (the QUIC transport, with the cluster CA and admission), the
//! GCS and the raylet inside this process; the raylet starts worker processes by re-executing
//! this binary. Worker: the same `init()` call finds the raylet's environment variables, joins
//! the cluster with its one-time token, registers its executor with the raylet, serves tasks,
//! and exits when the raylet's end of its stdin closes; it never returns to the user's `main`.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use manta_actor::{
    spawn, start_arbiter, ActorAddress, ActorRef, ArbiterHandle, AskError, Node, Routes, SpawnOptions, System,
};
use manta_gcs::{GcsActor, MemoryStorage};
use manta_raylet::requests::{LeaseOutcome, RegisterWorker, RequestLease, ReturnLease, WatchLease};
use manta_raylet::{worker_env, PoolConfig, Quantity, RayletActor, ResourceSet, CPU, RAYLET_NAME};
use manta_transport::{
    join_blocking, Admission, ClusterCa, NodeId, TokenRegistry, Transport, TransportConfig,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_bytes::ByteBuf;
use tracing::{debug, info};

use crate::error::TaskError;
use crate::executor::{Executor, PushTask, TaskFailure, EXECUTOR_NAME};
use crate::object_ref::{ObjectRef, OwnerStore};
use crate::registry;

/// Starting the runtime failed.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// Two remote functions share a name.
    #[error(transparent)]
    Registry(#[from] registry::RegistryError),
    /// The node could not start.
    #[error("starting the node: {0}")]
    Node(String),
    /// `init` was called twice.
    #[error("manta::init was already called in this process")]
    AlreadyInitialized,
}

/// Settings of the embedded cluster.
#[derive(Debug, Clone)]
pub struct Config {
    /// CPUs the local node offers (default: the machine's).
    pub num_cpus: usize,
    /// Worker processes at most.
    pub max_workers: usize,
    /// Retries of a task whose worker dies (Ray's default: 3).
    pub max_retries: u32,
}

impl Default for Config {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        Config { num_cpus: cpus, max_workers: cpus.max(1) * 2, max_retries: 3 }
    }
}

struct Runtime {
    store: Arc<OwnerStore>,
    raylet: ActorRef<RayletActor>,
    node: Node,
    submitter: ArbiterHandle,
    max_retries: u32,
}

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// A handle to the embedded cluster; `shutdown` (or the end of the process) stops its workers.
#[derive(Debug)]
pub struct Cluster {
    _private: (),
}

impl Cluster {
    /// The address of this driver's node.
    pub fn address(&self) -> Option<std::net::SocketAddr> {
        RUNTIME.get().map(|runtime| runtime.node.local_addr())
    }
}

/// Starts Manta with the default [`Config`]. In a worker process this never returns.
pub fn init() -> Result<Cluster, InitError> {
    init_with(Config::default())
}

/// Starts Manta with `config`. In a worker process this never returns.
pub fn init_with(config: Config) -> Result<Cluster, InitError> {
    let fingerprint = {
        registry::check()?;
        registry::fingerprint()
    };
    if std::env::var_os(worker_env::WORKER_ID).is_some() {
        // Only the first caller becomes the worker; any other thread that calls `init` (a test
        // harness runs tests in parallel) waits here for ever, as `init` never returns in a worker.
        static WORKER: std::sync::Once = std::sync::Once::new();
        WORKER.call_once(|| worker_main(fingerprint));
        unreachable!("worker_main exits the process");
    }
    if RUNTIME.get().is_some() {
        return Err(InitError::AlreadyInitialized);
    }
    let node_error = |error: &dyn std::fmt::Display| InitError::Node(error.to_string());
    let ca = Arc::new(ClusterCa::generate("embedded").map_err(|error| node_error(&error))?);
    let tokens = Arc::new(TokenRegistry::default());
    let admission = Admission { ca: ca.clone(), tokens };
    let identity = ca
        .issue(NodeId::random().map_err(|error| node_error(&error))?)
        .map_err(|error| node_error(&error))?;
    let node = Node::start(Transport::builder(identity).admission(admission.clone()))
        .map_err(|error| node_error(&error))?;
    GcsActor::start(&node, MemoryStorage::default(), MemoryStorage::default)
        .map_err(|error| node_error(&error))?;
    let total = ResourceSet::new().with(CPU, Quantity::units(config.num_cpus as u64));
    let pool = PoolConfig { workers_max: config.max_workers, ..PoolConfig::default() };
    let raylet =
        RayletActor::start(&node, admission, total, pool, fingerprint).map_err(|error| node_error(&error))?;
    let submitter = start_arbiter("manta-submitter").map_err(|error| node_error(&error))?;
    let runtime = Runtime {
        store: Arc::new(OwnerStore::default()),
        raylet: ActorRef::local(raylet),
        node,
        submitter,
        max_retries: config.max_retries,
    };
    RUNTIME.set(runtime).map_err(|_| InitError::AlreadyInitialized)?;
    info!("embedded cluster started");
    Ok(Cluster { _private: () })
}

/// The worker process's life: join, register, serve until the raylet goes away, exit.
fn worker_main(fingerprint: u64) -> ! {
    let outcome = (|| -> Result<(), String> {
        let worker: u64 = std::env::var(worker_env::WORKER_ID)
            .map_err(|error| error.to_string())?
            .parse()
            .map_err(|_| "bad worker id")?;
        let raylet_address: std::net::SocketAddr = std::env::var(worker_env::RAYLET_ADDRESS)
            .map_err(|error| error.to_string())?
            .parse()
            .map_err(|_| "bad raylet address")?;
        let token = std::env::var(worker_env::JOIN_TOKEN)
            .map_err(|error| error.to_string())?
            .parse()
            .map_err(|error| format!("{error}"))?;
        let identity = join_blocking(raylet_address, &token, &TransportConfig::default())
            .map_err(|error| error.to_string())?;
        let node = Node::start_local(identity).map_err(|error| error.to_string())?;
        let executor =
            spawn(node.arbiter(), SpawnOptions::named(EXECUTOR_NAME).max_restarts(u32::MAX), || Executor);
        node.register(EXECUTOR_NAME, Routes::new(executor).message::<PushTask>())
            .map_err(|error| error.to_string())?;
        let raylet: ActorRef<RayletActor> = node.actor(ActorAddress::new(raylet_address, RAYLET_NAME));
        let registration = RegisterWorker {
            worker,
            address: node.local_addr().to_string(),
            registry_fingerprint: fingerprint,
        };
        let accepted = System::new().block_on(raylet.ask(registration)).map_err(|error| error.to_string())?;
        if !accepted {
            return Err("the raylet refused this worker".to_owned());
        }
        debug!(worker, pid = std::process::id(), "worker serving");
        // Serve until the raylet's end of our stdin closes (its process is gone or killed us).
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        Ok(())
    })();
    match outcome {
        Ok(()) => std::process::exit(0),
        Err(error) => {
            eprintln!("manta worker {}: {error}", std::process::id());
            std::process::exit(1)
        }
    }
}

/// Submits `function` with `arguments` (what `f::remote(...)` calls). Returns at once.
///
/// # Panics
/// If `manta::init` was not called: a programming error.
pub fn submit<R: DeserializeOwned, A: Serialize>(function: &'static str, arguments: &A) -> ObjectRef<R> {
    let runtime = RUNTIME.get().expect("call manta::init() before submitting tasks");
    let id = runtime.store.create();
    let object = ObjectRef::new(id, runtime.store.clone());
    let outcome = registry::encode_arguments(arguments);
    let store = runtime.store.clone();
    let arguments = match outcome {
        Ok(bytes) => bytes,
        Err(error) => {
            store.complete(
                id,
                Err(TaskError::Failed {
                    function: function.to_owned(),
                    pid: std::process::id(),
                    message: format!("arguments do not encode: {error}"),
                }),
            );
            return object;
        }
    };
    let raylet = runtime.raylet.clone();
    let node = runtime.node.clone();
    let max_retries = runtime.max_retries;
    runtime.submitter.spawn(async move {
        let outcome = run_task(&node, &raylet, function, arguments, max_retries).await;
        store.complete(id, outcome);
    });
    object
}

async fn run_task(
    node: &Node,
    raylet: &ActorRef<RayletActor>,
    function: &'static str,
    arguments: Vec<u8>,
    max_retries: u32,
) -> Result<Vec<u8>, TaskError> {
    let runtime_error = |message: String| TaskError::Runtime { function: function.to_owned(), message };
    let mut attempts = 0;
    loop {
        attempts += 1;
        let lease =
            raylet.ask_timeout(RequestLease { cpus: 1.0, gpus: 0.0 }, Duration::from_secs(3600)).await;
        let (lease, address, pid) = match lease.map_err(|error| runtime_error(error.to_string()))? {
            LeaseOutcome::Granted { lease, address, pid } => (lease, address, pid),
            LeaseOutcome::Infeasible { demand } => {
                return Err(TaskError::Infeasible { function: function.to_owned(), demand })
            }
            LeaseOutcome::Spillback { node } => {
                return Err(runtime_error(format!(
                    "spilled back to {node}, which a single-node cluster cannot reach"
                )))
            }
            LeaseOutcome::Invalid { reason } => return Err(runtime_error(reason)),
        };
        let address = address
            .parse()
            .map_err(|_| runtime_error(format!("the raylet sent a bad worker address {address}")))?;
        let executor: ActorRef<Executor> = node.actor(ActorAddress::new(address, EXECUTOR_NAME));
        let task = PushTask { function: function.to_owned(), arguments: ByteBuf::from(arguments.clone()) };
        // The raylet sees a worker die at once (it waits on the process); the connection to a
        // killed process would only time out. So watch the lease while the task runs.
        let call = executor.ask_timeout(task, Duration::from_secs(24 * 3600));
        tokio::pin!(call);
        let reply = tokio::select! {
            reply = &mut call => reply,
            death = raylet.ask_timeout(WatchLease { lease }, Duration::from_secs(24 * 3600)) => match death {
                Ok(Some(exit)) => Err(AskError::ActorDied { actor: format!("worker pid {pid}"), cause: exit }),
                // Not a death (or the watch itself failed): the executor's answer decides.
                _ => call.await,
            },
        };
        match reply {
            Ok(Ok(output)) => {
                let _ = raylet.tell(ReturnLease { lease, reusable: true }).await;
                return Ok(output.into_vec());
            }
            Ok(Err(TaskFailure { function, pid, message })) => {
                let _ = raylet.tell(ReturnLease { lease, reusable: true }).await;
                return Err(TaskError::Failed { function, pid, message });
            }
            Err(
                error @ (AskError::ConnectionLost(_) | AskError::Unreachable(_) | AskError::ActorDied { .. }),
            ) => {
                let exit = match error {
                    AskError::ActorDied { cause, .. } => cause,
                    other => other.to_string(),
                };
                if attempts > max_retries {
                    return Err(TaskError::WorkerDied { function: function.to_owned(), pid, exit, attempts });
                }
                debug!(function, pid, attempts, %exit, "worker died; retrying");
            }
            Err(error) => return Err(runtime_error(error.to_string())),
        }
    }
}
