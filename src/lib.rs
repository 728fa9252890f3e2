//! Manta: Ray, rebuilt in Rust. Stateless tasks, stateful actors and immutable objects over a
//! cluster whose every component is an actor talking over mutually authenticated QUIC.
//!
//! ```ignore
//! #[manta::remote]
//! fn add(a: i64, b: i64) -> i64 { a + b }
//!
//! #[manta::actor]
//! struct Counter { n: i64 }
//! #[manta::actor]
//! impl Counter {
//!     fn new(start: i64) -> Self { Counter { n: start } }
//!     fn incr(&mut self, by: i64) -> i64 { self.n += by; self.n }
//! }
//!
//! #[manta::main]
//! fn main() -> anyhow::Result<()> {
//!     let _cluster = manta::init()?;                    // embedded cluster, workers are this binary
//!     let sum = add::remote(1, 2);                      // ObjectRef<i64>
//!     let counter = Counter::remote(0)?;                // ActorHandle<Counter>
//!     assert_eq!(counter.incr(&sum).get()?, 3);         // a ref argument is resolved first
//!     let weights = manta::put(manta::Buffer::from(vec![0.5f32; 1 << 20]))?;
//!     let view = weights.get()?;                        // zero-copy from shared memory
//!     Ok(())
//! }
//! ```
//!
//! - [`remote`], [`actor`], [`main`]: the attribute macros.
//! - [`init`] / [`init_with`]: the embedded cluster (GCS, raylet, object store, actor manager
//!   inside the driver; workers are this binary re-executed).
//! - [`ObjectRef`], [`put`], [`get_all`], [`wait`], [`cancel`], [`Buffer`]: objects.
//! - [`ActorHandle`], [`get_actor`], [`kill`], [`util::ActorPool`]: actors.
//! - [`actor`](mod@actor) (the module) and [`transport`]: the location-transparent actor bus and QUIC
//!   transport every component talks over.
//! - [`init_logging`]: the logging set-up every Manta process shares.
//! - [`cluster_utils`]: a cluster of real processes on this host, for tests (Ray's
//!   `ray.cluster_utils.Cluster`).

// The macros name `::manta::...`; this lets the crate use them on itself.
extern crate self as manta;

pub mod cluster_utils;

pub use manta_actor as actor;
pub use manta_macros::{actor, main, remote};
pub use manta_transport as transport;
pub use manta_worker::registry;
pub use manta_worker::{
    available_resources, cancel, cancel_force, cancel_with, cluster_resources, create_actor, exit_actor,
    free, get_actor, get_actor_in, get_all, get_placement_group, get_runtime_context, is_cancelled,
    is_in_object_store, is_worker_process, kill, local_object_counts, nodes, object_store_stats,
    placement_group, placement_group_with, put, remove_placement_group, wait, ActorClass, ActorError,
    ActorHandle, ActorOptions, Arg, Buffer, CancelOptions, Cluster, Config, Element, InitError, IntoArg,
    LabelMatch, Lifetime, ObjectRef, ObjectRefGenerator, PlacementGroup, PlacementGroupOptions,
    PlacementGroupState, PlacementStrategy, RawActorHandle, RawRef, RuntimeContext, SchedulingStrategy,
    StoreStats, TaskError, TaskOptions, ADDRESS_ENV, TOKEN_ENV,
};

/// Whether `main` is marked `#[manta::main]` (which calls [`enter_worker_if_spawned`] first).
static MAIN_MARKED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// In a worker process started by a raylet: become the worker (never returns). In any other
/// process: nothing. `#[manta::main]` calls it first, so that a worker never runs `main`.
#[doc(hidden)]
pub fn enter_worker_if_spawned() {
    MAIN_MARKED.store(true, std::sync::atomic::Ordering::Relaxed);
    if is_worker_process() {
        init_logging();
        manta_worker::enter_worker_if_spawned();
    }
}

/// Starts Manta with the default [`Config`]: the embedded cluster in this process. In a worker
/// process this never returns. Installs Manta's log subscriber ([`init_logging`]: warnings and
/// errors, [`LOG_ENV`] to change) unless the program installed its own before.
pub fn init() -> Result<Cluster, InitError> {
    init_with(Config::default())
}

/// Starts Manta with `config`; otherwise as [`init`].
pub fn init_with(config: Config) -> Result<Cluster, InitError> {
    init_logging();
    if !is_worker_process() {
        warn_if_main_unmarked();
    }
    manta_worker::init_with(config)
}

/// Says once, clearly, that a driver's `main` lacks `#[manta::main]`: its workers are this
/// binary re-executed, and each would run `main`'s code up to `init()` again. Called from the
/// main thread only: `init` called from another thread (a test harness runs each test on a
/// thread of its own) is not `main`'s code.
fn warn_if_main_unmarked() {
    let marked = MAIN_MARKED.load(std::sync::atomic::Ordering::Relaxed);
    if !marked && std::thread::current().name() == Some("main") {
        tracing::warn!(
            "fn main is not marked #[manta::main]: each worker process re-runs this binary and \
             repeats what main does before manta::init(); add #[manta::main] above fn main"
        );
    }
}

pub use manta_worker::state;

/// Scheduling policies: the trait a policy implements, what it decides on, the policies Manta
/// ships (`hybrid`, `binpack`, `locality`) and the registry by name that `Config::scheduler`
/// and `manta start --scheduler` pick from. Register one's own with [`register_policy!`].
pub mod scheduling {
    pub use manta_raylet::policies::{
        policy_named, policy_names, BinPackPolicy, BoxedPolicy, LocalityPolicy, PolicyEntry,
    };
    pub use manta_raylet::{
        place_bundles, ClusterView, Decision, DefaultPolicy, NodeResources, NodeView, PlacementStrategy,
        PolicyConfig, Quantity, RandomSource, Request, ResourceSet, SchedulingPolicy, SchedulingStrategy,
        SharedNodes, SplitMix64,
    };
}

pub use manta_raylet::register_policy;

/// Utilities over actors and tasks.
pub mod util {
    pub use manta_worker::pool::ActorPool;
}

/// What the macros expand to refers to; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use inventory;
    pub use manta_worker::__export::RwLock;
    pub use manta_worker::registry::{
        catch_unwind, output, outputs, run_blocking, ActorCell, ActorClassEntry, Invocation, InvokeError,
        MethodFuture, Output, RemoteFunction, Returned, ReturnedText, ReturnedValue,
    };
    pub use manta_worker::stream::{stream, submit_streaming};
    pub use manta_worker::{actor_option_methods, arg, submit, submit_returning, task_option_methods};
}

/// The environment variable holding the log filter, in `tracing-subscriber`'s `EnvFilter`
/// syntax (for example `MANTA_LOG=info,manta_transport=debug`). Unset means `warn`.
pub const LOG_ENV: &str = "MANTA_LOG";

/// Installs Manta's log subscriber: lines on stderr, each with the time and the process id (so
/// the interleaved output of a cluster's processes can be told apart), filtered by
/// [`LOG_ENV`]. Does nothing if a global subscriber is already installed. A filter that does not
/// parse falls back to `warn` and says so.
pub fn init_logging() {
    use tracing_subscriber::EnvFilter;

    let (filter, bad_filter) = match std::env::var(LOG_ENV) {
        Ok(text) => match EnvFilter::try_new(&text) {
            Ok(filter) => (filter, None),
            Err(error) => (EnvFilter::new("warn"), Some((text, error))),
        },
        Err(_) => (EnvFilter::new("warn"), None),
    };
    let installed = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_timer(TimeAndPid)
        .with_thread_names(true)
        .try_init()
        .is_ok();
    if let (true, Some((text, error))) = (installed, bad_filter) {
        tracing::warn!(filter = %text, %error, "{LOG_ENV} does not parse; logging at warn");
    }
}

/// Formats each line's prefix as `<UTC time> pid=<pid>`.
struct TimeAndPid;

impl tracing_subscriber::fmt::time::FormatTime for TimeAndPid {
    fn format_time(&self, writer: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        tracing_subscriber::fmt::time::SystemTime.format_time(writer)?;
        write!(writer, " pid={}", std::process::id())
    }
}
