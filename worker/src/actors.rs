//! Actors, as their callers and the cluster see them: handles, options, creation, calls in
//! submission order, `get_actor`, `kill`, and the actor manager that starts, watches and
//! restarts them.
//!
//! Creation: the creator sends an [`ActorSpec`] to the actor manager (on the head node, beside
//! the GCS), which registers the actor in the GCS (claiming its name), then in the background
//! takes a *dedicated* lease from the raylet (a worker held for the actor's life), starts the
//! actor in it (`StartActor`), and records it `Alive` with its address. When the worker dies
//! the manager learns it at once (`WatchLease`); the GCS decides between `Restarting` (restarts
//! left) and `Dead`, and the manager starts a new incarnation or stops.
//!
//! Calls: each process has one client per actor, its logic the sans-IO [`state::ActorClientCore`]
//! (Ray's actor task submitter). It resolves each call's arguments, numbers the call in
//! submission order, and sends it straight to the actor's worker, numbered within the current
//! incarnation and caller epoch (`seq` from 0); the actor runs a caller's calls in `seq` order,
//! so calls from one caller run in submission order even though they travel concurrently. A call
//! whose incarnation dies fails with `ActorDied`, or is sent again to the next incarnation, in
//! submission order and ahead of later calls, while it has `max_task_retries` left.
//!
//! Lifetime: a non-detached actor's handles share one hidden object owned by the creator; when
//! it is freed (no handle left anywhere, and no call made through one still undecided: a client
//! holds it meanwhile) the creator kills the actor, as Ray does.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use manta_actor::{ActorAddress, ActorRef, AskError};
use manta_gcs::requests::GetNamedActor;
use manta_gcs::wire::{ActorInfo, ActorState};
use manta_gcs::{ActorId, GcsError};
use manta_raylet::SchedulingStrategy;
use parking_lot::Mutex;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::core::{self, CoreWorker};
use crate::error::{ActorError, TaskError};
use crate::executor::{Executor, EXECUTOR_NAME};
use crate::objects::{FreeHook, ObjectRef, RawRef, State, Value};
use crate::submit::{complete_returns, resolve_args, resolve_now, ArgSpec};
use crate::wire::{
    ActorCall, ActorSpec, CreateActor, CreateActorError, KillActor, TaskArg, TaskFailure, TaskOutput,
    WatchActor,
};
use manta_objectstore::ObjectId;
use state::{ActorClientCore, CallError, CallNo, ClientConfig, Command, Located};

pub use manta_gcs::ACTOR_MANAGER_NAME;

pub mod state;

/// A class of actors: implemented by `#[manta::actor]` on an `impl` block.
pub trait ActorClass: Send + Sync + 'static {
    /// The registered name: the module path and the type's name.
    const NAME: &'static str;
    /// Whether any method is `async` (then calls default to running concurrently, up to 1000,
    /// as Ray's async actors; otherwise one at a time).
    const ASYNC: bool;
    /// The concurrency groups the class declares (`#[manta::actor(concurrency_groups(io = 2))]`),
    /// with how many calls each runs at once.
    const CONCURRENCY_GROUPS: &'static [(&'static str, u32)] = &[];
    /// The methods placed in a group (`#[manta(concurrency_group = "io")]`): (method, group).
    const METHOD_GROUPS: &'static [(&'static str, &'static str)] = &[];
    /// The generated type with one method per actor method.
    type Methods: Clone + Send + Sync;
    /// Wraps an untyped handle.
    fn methods(raw: RawActorHandle) -> Self::Methods;
}

/// Options for creating an actor (`Class::options()...`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ActorOptions {
    /// A name, unique among live actors of its namespace (`get_actor` finds it).
    pub name: Option<String>,
    /// The namespace of the name (default: the cluster's, `"default"`).
    pub namespace: Option<String>,
    /// Whether the actor outlives its handles (then only `kill` or the cluster's end stop it).
    pub detached: bool,
    /// Restarts after its worker dies (default 0; -1 for unlimited).
    pub max_restarts: i64,
    /// Retries of a call whose actor died and restarted (default 0; -1 for unlimited).
    pub max_task_retries: i64,
    /// Calls running at once (default 1; 1000 for classes with `async` methods), in the
    /// default concurrency group (the methods not placed in a named group).
    pub max_concurrency: Option<u32>,
    /// The named concurrency groups and their sizes, in place of the ones the class declares
    /// (Ray's `concurrency_groups` option). Every group a method is placed in must be there.
    pub concurrency_groups: Option<Vec<(String, u32)>>,
    /// CPUs held for the actor's life. `None` (the default): as in Ray, 1 CPU must be free to
    /// place the actor, and it holds none while it runs (unless GPUs or custom resources are
    /// given, which then decide its placement alone).
    pub num_cpus: Option<f64>,
    /// GPUs held for the actor's life.
    pub num_gpus: f64,
    /// Custom resources held for the actor's life.
    pub resources: Vec<(String, f64)>,
    /// Where it should run (default: Ray's hybrid policy).
    pub scheduling_strategy: SchedulingStrategy,
    /// Get-or-create by name: when a live actor already has the name, a handle to it (the
    /// constructor's arguments are then ignored). Atomic in the GCS: concurrent creators all
    /// get the one actor.
    pub get_if_exists: bool,
    /// Lives in a placement group's bundle, on its resources only.
    pub placement_group: Option<crate::placement::InGroup>,
}

/// An untyped handle to an actor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RawActorHandle {
    actor_id: ActorId,
    class: String,
    max_task_retries: i64,
    /// Shared by the non-detached actor's handles; its freeing kills the actor.
    lifetime: Option<ObjectRef<()>>,
}

impl RawActorHandle {
    /// The actor's id: the same typed id the state API lists (it prints as hex).
    pub fn id(&self) -> ActorId {
        self.actor_id
    }

    /// The actor's class.
    pub fn class(&self) -> &str {
        &self.class
    }

    /// Calls `method` with `args`; the result arrives in the returned object.
    pub fn call(&self, method: &'static str, args: Vec<ArgSpec>) -> RawRef {
        let [result] = self.call_returning::<1>(method, args);
        result
    }

    /// Calls `method`, which returns `N` values (`#[manta(num_returns = N)]`): one ref per
    /// value, in order.
    pub fn call_returning<const N: usize>(&self, method: &'static str, args: Vec<ArgSpec>) -> [RawRef; N] {
        const { assert!(N >= 1 && N <= u32::MAX as usize, "a call returns at least one value") };
        // Without `manta::init` the results' `get`s report `NotInitialized`.
        let Ok(core) = core::current() else { return std::array::from_fn(|_| RawRef::uninitialized()) };
        let refs: [RawRef; N] = core.create_pending_returns::<N>();
        client(&core, self).submit(
            &core,
            method,
            args,
            (refs[0].id, N as u32),
            // Unlimited (-1) is as many retries as a call can be counted.
            u32::try_from(self.max_task_retries).unwrap_or(u32::MAX),
            self.lifetime.as_ref(),
        );
        refs
    }
}

/// A handle to an actor of class `A`: call its methods directly (`handle.method(args)`), each
/// returning an [`ObjectRef`]. Cheap to clone; pass it to tasks and other actors.
pub struct ActorHandle<A: ActorClass> {
    raw: RawActorHandle,
    methods: A::Methods,
}

impl<A: ActorClass> ActorHandle<A> {
    pub(crate) fn new(raw: RawActorHandle) -> Self {
        ActorHandle { methods: A::methods(raw.clone()), raw }
    }

    /// The untyped handle.
    pub fn raw(&self) -> &RawActorHandle {
        &self.raw
    }

    /// The actor's id: the same typed id [`list_actors`](crate::state::list_actors) returns.
    /// (Not `id`, which an actor's own method may be called.)
    pub fn actor_id(&self) -> ActorId {
        self.raw.actor_id
    }
}

impl<A: ActorClass> Clone for ActorHandle<A> {
    fn clone(&self) -> Self {
        ActorHandle { raw: self.raw.clone(), methods: self.methods.clone() }
    }
}

impl<A: ActorClass> std::fmt::Debug for ActorHandle<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ActorHandle<{}>({})", A::NAME, self.raw.id())
    }
}

impl<A: ActorClass> std::ops::Deref for ActorHandle<A> {
    type Target = A::Methods;

    fn deref(&self) -> &A::Methods {
        &self.methods
    }
}

impl<A: ActorClass> Serialize for ActorHandle<A> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.raw.serialize(serializer)
    }
}

impl<'de, A: ActorClass> Deserialize<'de> for ActorHandle<A> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = RawActorHandle::deserialize(deserializer)?;
        if raw.class != A::NAME {
            return Err(serde::de::Error::custom(format!("a handle to a {}, not a {}", raw.class, A::NAME)));
        }
        Ok(ActorHandle::new(raw))
    }
}

/// The concurrency groups an actor of class `A` gets: `given` (the options') or the class's,
/// checked: sizes of at least 1, names unique and not blank, and every group a method is placed
/// in among them.
fn concurrency_groups<A: ActorClass>(
    given: Option<&[(String, u32)]>,
) -> Result<Vec<(String, u32)>, ActorError> {
    let groups: Vec<(String, u32)> = match given {
        Some(groups) => groups.to_vec(),
        None => A::CONCURRENCY_GROUPS.iter().map(|(name, size)| ((*name).to_owned(), *size)).collect(),
    };
    let mut seen = std::collections::HashSet::new();
    for (name, size) in &groups {
        check_name("concurrency group", name)?;
        if *size == 0 {
            return Err(ActorError::Invalid(format!("concurrency group {name:?} must run at least 1 call")));
        }
        if !seen.insert(name.as_str()) {
            return Err(ActorError::Invalid(format!("concurrency group {name:?} is given twice")));
        }
    }
    if let Some((method, group)) = A::METHOD_GROUPS.iter().find(|(_, group)| !seen.contains(group)) {
        return Err(ActorError::Invalid(format!(
            "method {method} is in concurrency group {group:?}, which the actor's concurrency groups lack"
        )));
    }
    Ok(groups)
}

/// Creates an actor of class `A` (what `A::remote(...)` and `A::options()...remote(...)` call).
/// Returns once the actor is registered (its name claimed); it starts in the background, and
/// calls made meanwhile wait for it.
pub fn create_actor<A: ActorClass>(
    options: ActorOptions,
    args: Vec<ArgSpec>,
) -> Result<ActorHandle<A>, ActorError> {
    let core = core::current().map_err(|_| ActorError::NotInitialized)?;
    if options.get_if_exists && options.name.is_none() {
        return Err(ActorError::Invalid("get_if_exists needs the actor's name".into()));
    }
    if options.max_concurrency == Some(0) {
        return Err(ActorError::Invalid("max_concurrency must be at least 1".into()));
    }
    for (what, count) in
        [("max_restarts", options.max_restarts), ("max_task_retries", options.max_task_retries)]
    {
        if count < -1 {
            return Err(ActorError::Invalid(format!("{what} must be -1 (unlimited) or more, got {count}")));
        }
    }
    let concurrency_groups = concurrency_groups::<A>(options.concurrency_groups.as_deref())?;
    let amounts = [("num_cpus", options.num_cpus.unwrap_or(0.0)), ("num_gpus", options.num_gpus)];
    let custom = options.resources.iter().map(|(name, amount)| (name.as_str(), *amount));
    crate::submit::check_amounts(amounts.into_iter().chain(custom)).map_err(ActorError::Invalid)?;
    if let Some(name) = &options.name {
        check_name("name", name)?;
    }
    if let Some(namespace) = &options.namespace {
        check_name("namespace", namespace)?;
    }
    let (in_group, capture, strategy) =
        crate::placement::resolve(options.placement_group, &options.scheduling_strategy);
    let in_group = match &in_group {
        None => None,
        Some(group) => {
            let mut demand = vec![
                ("CPU".to_owned(), options.num_cpus.unwrap_or(0.0)),
                ("GPU".to_owned(), options.num_gpus),
            ];
            demand.extend(options.resources.iter().cloned());
            Some(group.demand(&demand).map_err(ActorError::Invalid)?)
        }
    };
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&core.new_object_id().0[..8]);
    bytes[8..].copy_from_slice(&core.new_object_id().0[12..20]);
    let actor_id = ActorId(bytes);
    let namespace = options.namespace.clone().unwrap_or_else(|| core.namespace.clone());
    let info = ActorInfo {
        actor_id,
        job_id: core.job,
        class: A::NAME.to_owned(),
        max_task_retries: options.max_task_retries,
        name: options.name.clone(),
        namespace: namespace.clone(),
        detached: options.detached,
        state: ActorState::PendingCreation,
        node_id: None,
        address: None,
        max_restarts: options.max_restarts,
        restarts: 0,
        death_cause: None,
    };
    let max_concurrency = options.max_concurrency.unwrap_or(if A::ASYNC { 1000 } else { 1 });
    let manager = core.actor_manager.clone();
    let (resolver, arbiter) = (core.clone(), core.arbiter.clone());
    let outcome = core.block_on(async move {
        let (args, holds) = resolve_args(&resolver, A::NAME, args)
            .await
            .map_err(|error| ActorError::Invalid(error.to_string()))?;
        // Ray's default actor resources: placed as if it needed a CPU, run holding none.
        let defaults = options.num_cpus.is_none() && options.num_gpus == 0.0 && options.resources.is_empty();
        let (num_cpus, num_gpus, resources, placement_cpus) = match in_group {
            // In a placement group: its amounts of the group's resources (and a little of the
            // bundle's marker, so that even an actor that holds nothing lands on the bundle).
            Some(resources) => (0.0, 0.0, resources, 0.0),
            None => (
                options.num_cpus.unwrap_or(0.0),
                options.num_gpus,
                options.resources.clone(),
                if defaults { 1.0 } else { 0.0 },
            ),
        };
        let spec = ActorSpec {
            info,
            args,
            num_cpus,
            num_gpus,
            resources,
            placement_cpus,
            max_concurrency,
            concurrency_groups,
            scheduling_strategy: strategy,
            capture_group: capture,
        };
        let created = create_patiently(&manager, spec).await?;
        // Every incarnation is constructed from the same arguments: hold their objects until
        // the actor is dead.
        if !holds.is_empty() {
            let manager = manager.clone();
            arbiter.spawn(async move {
                let mut known = None;
                while let Ok(Some(info)) = manager.ask_unbounded(WatchActor { actor_id, known }).await {
                    if info.state == ActorState::Dead {
                        break;
                    }
                    known = Some(info.restarts);
                }
                drop(holds);
            });
        }
        created.map_err(|error| match error {
            CreateActorError::Refused(GcsError::NameTaken { namespace, name }) => {
                ActorError::NameTaken { namespace, name }
            }
            other => ActorError::Runtime(other.to_string()),
        })
    });
    match outcome {
        // The name's holder won: get it (its class checked).
        Err(ActorError::NameTaken { namespace, name }) if options.get_if_exists => {
            return get_actor_in::<A>(&name, &namespace);
        }
        other => other?,
    }
    let lifetime = (!options.detached).then(|| {
        let id = core.new_object_id();
        core.objects.create_owned(
            id,
            State::Ready(Value::Inline(bytes::Bytes::from(
                crate::codec::encode(&()).map(|encoded| encoded.to_vec()).unwrap_or_default(),
            ))),
            Vec::new(),
        );
        core.objects.set_on_free(id, FreeHook::KillActor(actor_id));
        ObjectRef::from_raw(RawRef::from_counted(&core, id, None))
    });
    Ok(ActorHandle::new(RawActorHandle {
        actor_id,
        class: A::NAME.to_owned(),
        max_task_retries: options.max_task_retries,
        lifetime,
    }))
}

/// The live actor named `name` in the default namespace, as a handle of class `A`.
pub fn get_actor<A: ActorClass>(name: &str) -> Result<ActorHandle<A>, ActorError> {
    let namespace = core::current().map_err(|_| ActorError::NotInitialized)?.namespace.clone();
    get_actor_in::<A>(name, &namespace)
}

/// An actor name or namespace must say something (Ray: `ValueError` for an empty one).
fn check_name(what: &str, value: &str) -> Result<(), ActorError> {
    if value.trim().is_empty() {
        return Err(ActorError::Invalid(format!(
            "an actor {what} must not be empty or blank, got {value:?}"
        )));
    }
    Ok(())
}

/// The live actor named `name` in `namespace`, as a handle of class `A`.
pub fn get_actor_in<A: ActorClass>(name: &str, namespace: &str) -> Result<ActorHandle<A>, ActorError> {
    check_name("name", name)?;
    check_name("namespace", namespace)?;
    let core = core::current().map_err(|_| ActorError::NotInitialized)?;
    let gcs = core.gcs.clone();
    let request = GetNamedActor { namespace: namespace.to_owned(), name: name.to_owned() };
    let found = core
        .block_on(async move { gcs.ask(request).await })
        .map_err(|error| ActorError::Runtime(error.to_string()))?
        .map_err(|error| ActorError::Runtime(error.to_string()))?;
    let Some(info) = found else {
        return Err(ActorError::NotFound { namespace: namespace.to_owned(), name: name.to_owned() });
    };
    if info.class != A::NAME {
        return Err(ActorError::WrongClass {
            name: name.to_owned(),
            expected: A::NAME.to_owned(),
            found: info.class,
        });
    }
    Ok(ActorHandle::new(RawActorHandle {
        actor_id: info.actor_id,
        class: info.class,
        max_task_retries: info.max_task_retries,
        lifetime: None,
    }))
}

/// Kills the actor at once, without restarting it (Ray's `ray.kill`). Calls in flight and later
/// calls fail with [`TaskError::ActorDied`]. Returns whether the actor was known.
pub fn kill<A: ActorClass>(handle: &ActorHandle<A>) -> Result<bool, ActorError> {
    let core = core::current().map_err(|_| ActorError::NotInitialized)?;
    let manager = core.actor_manager.clone();
    let request = KillActor { actor_id: handle.raw.actor_id, cause: "killed by manta::kill".into() };
    core.block_on(async move { manager.ask(request).await })
        .map_err(|error| ActorError::Runtime(error.to_string()))
}

/// Ends the actor whose method calls it, on purpose (Ray's `ray.actor.exit_actor()`): the method
/// does not return (its stack unwinds; in a build with `panic = "abort"` the worker aborts);
/// its caller, and the callers of every call not yet started, get [`TaskError::ActorDied`]
/// saying the actor exited; calls running concurrently finish first; the actor is not
/// restarted, whatever its `max_restarts`. Outside an actor's method it is an error.
pub fn exit_actor() -> Result<std::convert::Infallible, ActorError> {
    if !crate::context::in_actor() {
        return Err(ActorError::Invalid(
            "manta::exit_actor() can only be called from an actor's method".into(),
        ));
    }
    std::panic::resume_unwind(Box::new(crate::registry::ExitActor))
}

/// The last handle of a non-detached actor is gone: kill it.
pub(crate) fn kill_when_out_of_scope(core: &Arc<CoreWorker>, actor_id: ActorId) {
    let manager = core.actor_manager.clone();
    core.arbiter.spawn(async move {
        let request = KillActor { actor_id, cause: "every handle to it was dropped".into() };
        let _ = manager.ask(request).await;
    });
}

// ---- the caller side: one client per actor per process ----

/// A call's payload, kept by the shell while the client's core decides its fate.
struct Payload {
    method: &'static str,
    /// The arguments once resolved, and the refs that keep their objects alive meanwhile.
    args: Vec<TaskArg>,
    holds: Arc<Vec<RawRef>>,
    return_id: ObjectId,
    /// How many values it returns (`num_returns`; the others' ids follow `return_id`).
    returns: u32,
}

/// This process's client of one actor: the sans-IO [`ActorClientCore`] (numbering, incarnations,
/// retries in order) and the shell that performs its commands. A call goes out from the
/// calling thread itself when nothing stands in its way; sends happen under the client's lock,
/// so they reach the actor in the order the core numbered them.
pub(crate) struct ActorClient {
    actor_id: ActorId,
    /// How errors name the actor; shared, not copied, by every call's answer callback.
    label: Arc<str>,
    /// This process's caller id base: the actor sees `caller ^ epoch` (the actor runs each
    /// caller's calls in `seq` order).
    caller: u64,
    /// The origin of the core's clock.
    origin: Instant,
    inner: Mutex<ClientInner>,
    /// Signalled when the caller epoch changes (the drain abandons stale sends).
    epoch_ended: tokio::sync::Notify,
}

/// The core and what the shell keeps beside it, under one lock.
struct ClientInner {
    core: ActorClientCore,
    next_call: CallNo,
    payloads: HashMap<CallNo, Payload>,
    /// The executor of each incarnation the core may send to, by `restarts`.
    executors: HashMap<u64, ActorRef<Executor>>,
    /// Sends waiting for room on the connection, in order; while any wait (`draining`), later
    /// sends queue behind them.
    outbox: VecDeque<Outgoing>,
    draining: bool,
    /// The core's next timeout a wake-up is armed for.
    timer: Option<Duration>,
    /// A non-detached actor's lifetime, held while calls are undecided: an actor whose last
    /// handle is dropped right after a call still runs it (Ray's semantics).
    lifetime: Option<ObjectRef<()>>,
}

impl ClientInner {
    /// The lifetime to let go of, once no call is undecided.
    fn idle_lifetime(&mut self) -> Option<ObjectRef<()>> {
        if self.core.undecided() == 0 {
            self.lifetime.take()
        } else {
            None
        }
    }
}

/// A send that found no room at once.
struct Outgoing {
    executor: ActorRef<Executor>,
    request: ActorCall,
    on_answer: Box<dyn FnOnce(Reply) + Send>,
    /// The caller epoch it was numbered in: once that is over, the send is dropped.
    epoch: u64,
}

/// What the shell does outside the lock for a command of the core.
enum Effect {
    Locate,
    Watch(u64),
    Complete(ObjectId, u32, Result<TaskOutput, TaskError>),
    Drain,
    WakeAt(Duration),
}

type Reply = Result<Result<TaskOutput, TaskFailure>, AskError>;

/// This process's actor clients.
pub(crate) type ActorClients = Mutex<HashMap<ActorId, Arc<ActorClient>>>;

fn client(core: &Arc<CoreWorker>, handle: &RawActorHandle) -> Arc<ActorClient> {
    let mut clients = core.actor_clients.lock();
    if let Some(client) = clients.get(&handle.actor_id) {
        return client.clone();
    }
    let caller = core.new_object_id().counter() ^ (u64::from(std::process::id()) << 32);
    let client = Arc::new(ActorClient {
        actor_id: handle.actor_id,
        label: format!("{}({})", handle.class, &handle.id().to_string()[..8]).into(),
        caller,
        origin: Instant::now(),
        epoch_ended: tokio::sync::Notify::new(),
        inner: Mutex::new(ClientInner {
            core: ActorClientCore::new(ClientConfig { verdict_wait: crate::submit::DEATH_VERDICT_WAIT }),
            next_call: 0,
            payloads: HashMap::new(),
            executors: HashMap::new(),
            outbox: VecDeque::new(),
            draining: false,
            timer: None,
            lifetime: None,
        }),
    });
    clients.insert(handle.actor_id, client.clone());
    client
}

impl ActorClient {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    /// Takes a call: numbered now; sent now when its arguments need no resolving and the actor
    /// is located, else once they are.
    fn submit(
        self: &Arc<Self>,
        core: &Arc<CoreWorker>,
        method: &'static str,
        args: Vec<ArgSpec>,
        (return_id, returns): (ObjectId, u32),
        retries: u32,
        lifetime: Option<&ObjectRef<()>>,
    ) {
        let mut args = Some(args);
        let ready = resolve_now(core, &mut args);
        let call = self.drive(core, |inner, _| {
            if inner.lifetime.is_none() {
                inner.lifetime = lifetime.cloned();
            }
            let call = inner.next_call;
            inner.next_call += 1;
            let (resolved, holds) = ready.map_or_else(Default::default, |(args, holds)| (args, holds));
            let ready = args.is_none();
            inner
                .payloads
                .insert(call, Payload { method, args: resolved, holds: Arc::new(holds), return_id, returns });
            inner.core.submit(call, retries, ready);
            call
        });
        let Some(args) = args else { return };
        // Its arguments wait for objects or go to the store first: resolved on the core's
        // arbiter; the calls after it wait their turn in the core.
        let (client, core) = (self.clone(), core.clone());
        core.arbiter.clone().spawn(async move {
            let function = format!("{}.{method}", client.label);
            let resolution = resolve_args(&core, &function, args).await;
            let failed = client.drive(&core, |inner, _| match resolution {
                Ok((args, holds)) => {
                    if let Some(payload) = inner.payloads.get_mut(&call) {
                        payload.args = args;
                        payload.holds = Arc::new(holds);
                    }
                    inner.core.resolved(call);
                    None
                }
                Err(error) => {
                    inner.core.abandon(call);
                    inner.payloads.remove(&call);
                    Some(error)
                }
            });
            if let Some(error) = failed {
                complete_returns(&core, return_id, returns, Err(error));
            }
        });
    }

    /// Feeds one event to the core under the lock, performs its sends there (in order), then
    /// performs the other effects after the lock is released.
    fn drive<T>(
        self: &Arc<Self>,
        core: &Arc<CoreWorker>,
        event: impl FnOnce(&mut ClientInner, Duration) -> T,
    ) -> T {
        let now = self.now();
        let (output, effects, idle) = {
            let mut inner = self.inner.lock();
            let epoch = inner.core.current_epoch();
            let output = event(&mut inner, now);
            let effects = self.effects(core, &mut inner);
            if epoch.is_some() && inner.core.current_epoch() != epoch {
                self.epoch_ended.notify_waiters();
            }
            (output, effects, inner.idle_lifetime())
        };
        for effect in effects {
            self.perform(core, effect);
        }
        // After the completions: an actor killed for being out of scope has answered first.
        drop(idle);
        output
    }

    /// Turns the core's commands into sends (started here, under the lock, so they keep their
    /// order) and effects.
    fn effects(self: &Arc<Self>, core: &Arc<CoreWorker>, inner: &mut ClientInner) -> Vec<Effect> {
        let mut effects = Vec::new();
        for command in inner.core.poll_commands() {
            match command {
                Command::Locate => effects.push(Effect::Locate),
                Command::Watch { restarts } => effects.push(Effect::Watch(restarts)),
                Command::Fail { call, error } => {
                    let Some(payload) = inner.payloads.remove(&call) else { continue };
                    let actor = self.label.to_string();
                    let error = match error {
                        CallError::ActorDied { cause } => TaskError::ActorDied { actor, cause },
                        CallError::ManagerUnreachable { cause } => {
                            TaskError::unreachable(actor, "the actor manager", cause)
                        }
                    };
                    effects.push(Effect::Complete(payload.return_id, payload.returns, Err(error)));
                }
                Command::Send { call, restarts, epoch, seq, retries_left } => {
                    let Some(executor) = inner.executors.get(&restarts) else {
                        // No address for that incarnation (its end was just learnt): the send
                        // never happens, and the call waits for the next one like any other.
                        let cause = "the incarnation's address is gone".to_owned();
                        inner.core.broken(self.now(), epoch, seq, cause, false);
                        continue;
                    };
                    // No payload: the call was decided already.
                    let Some(payload) = inner.payloads.get_mut(&call) else { continue };
                    // The arguments are kept only for a retry.
                    let args = if retries_left > 0 {
                        payload.args.clone()
                    } else {
                        std::mem::take(&mut payload.args)
                    };
                    let request = ActorCall {
                        actor_id: self.actor_id,
                        method: payload.method.to_owned(),
                        args,
                        caller: self.caller ^ epoch,
                        seq,
                        return_id: payload.return_id,
                        more_returns: payload.returns - 1,
                        owner: (seq == 0).then_some(core.owner_address),
                    };
                    let on_answer = self.on_answer(core, epoch, seq);
                    if inner.draining {
                        inner.outbox.push_back(Outgoing {
                            executor: executor.clone(),
                            request,
                            on_answer: Box::new(on_answer),
                            epoch,
                        });
                    } else if let Err((request, on_answer)) = executor.try_start_ask_with(request, on_answer)
                    {
                        // No room or no connection yet: it and every later send wait their
                        // turn on the client's drain.
                        let executor = executor.clone();
                        inner.outbox.push_back(Outgoing {
                            executor,
                            request,
                            on_answer: Box::new(on_answer),
                            epoch,
                        });
                        inner.draining = true;
                        effects.push(Effect::Drain);
                    }
                }
            }
        }
        if let Some(due) = inner.core.poll_timeout() {
            if inner.timer.is_none_or(|armed| due < armed) {
                inner.timer = Some(due);
                effects.push(Effect::WakeAt(due));
            }
        }
        effects
    }

    /// A call's outcome arrived: its payload, unless the core decided it already, and the
    /// actor's lifetime to let go of (after completing it) when no call is left.
    fn outcome_arrived(&self, epoch: u64, seq: u64) -> (Option<Payload>, Option<ObjectRef<()>>) {
        let mut inner = self.inner.lock();
        let payload = inner.core.answered(epoch, seq).and_then(|call| inner.payloads.remove(&call));
        (payload, inner.idle_lifetime())
    }

    /// The callback that takes a call's answer where it arrives (the transport's thread),
    /// without a wake-up of the caller's runtime.
    fn on_answer(
        self: &Arc<Self>,
        core: &Arc<CoreWorker>,
        epoch: u64,
        seq: u64,
    ) -> impl FnOnce(Reply) + Send + 'static {
        let (client, core) = (self.clone(), core.clone());
        move |reply: Reply| match reply {
            Ok(answer) => {
                // `None`: decided already (its incarnation ended first).
                let (Some(payload), idle) = client.outcome_arrived(epoch, seq) else { return };
                let outcome = match answer {
                    Ok(output) => Ok(output),
                    Err(failure) => Err(failure.into()),
                };
                drop(payload.holds);
                complete_returns(&core, payload.return_id, payload.returns, outcome);
                drop(idle);
            }
            // How a dead worker shows on its connection, often before the actor manager
            // knows: the call waits for the manager's word on the incarnation. A connection
            // that could not even be opened surely carried nothing.
            Err(error @ (AskError::Unreachable(_) | AskError::NoSuchActor { .. })) => {
                let cause = error.to_string();
                client.drive(&core, |inner, now| inner.core.broken(now, epoch, seq, cause, false));
            }
            Err(AskError::ActorDied { cause, .. }) => {
                client.drive(&core, |inner, now| inner.core.broken(now, epoch, seq, cause, true));
            }
            Err(error @ (AskError::ConnectionLost(_) | AskError::Timeout(_))) => {
                let cause = error.to_string();
                client.drive(&core, |inner, now| inner.core.broken(now, epoch, seq, cause, true));
            }
            // The call itself is at fault (its message does not encode or exceeds the frame
            // limit) or was refused: another incarnation would fare no better.
            Err(error) => {
                let (Some(payload), idle) = client.outcome_arrived(epoch, seq) else { return };
                let function = format!("{}.{}", client.label, payload.method);
                let error = match error {
                    AskError::Codec(reason) => TaskError::Invalid { function, reason },
                    other => TaskError::unreachable(function, "the actor", other),
                };
                complete_returns(&core, payload.return_id, payload.returns, Err(error));
                drop(idle);
            }
        }
    }

    /// Performs one effect, outside the lock.
    fn perform(self: &Arc<Self>, core: &Arc<CoreWorker>, effect: Effect) {
        let (client, worker) = (self.clone(), core.clone());
        match effect {
            Effect::Complete(return_id, returns, outcome) => {
                complete_returns(core, return_id, returns, outcome)
            }
            Effect::Locate => {
                core.arbiter.spawn(async move {
                    let answer = worker
                        .actor_manager
                        .ask_unbounded(WatchActor { actor_id: client.actor_id, known: None })
                        .await;
                    let located = client.located(&worker, answer);
                    if located == Located::Restarting {
                        // Not alive and not dead (the manager does not follow it): ask again soon.
                        tokio::time::sleep(LOCATE_AGAIN).await;
                    }
                    client.drive(&worker, |inner, now| inner.core.located(now, located));
                });
            }
            Effect::Watch(restarts) => {
                core.arbiter.spawn(async move {
                    let watch = WatchActor { actor_id: client.actor_id, known: Some(restarts) };
                    match worker.actor_manager.ask_unbounded(watch).await {
                        Ok(answer) => {
                            let located = client.located(&worker, Ok(answer));
                            client.drive(&worker, |inner, now| {
                                inner.executors.remove(&restarts);
                                inner.core.ended(now, restarts, located);
                            });
                        }
                        Err(_) => client.drive(&worker, |inner, _| inner.core.watch_failed(restarts)),
                    }
                });
            }
            Effect::Drain => {
                core.arbiter.spawn(async move {
                    loop {
                        let next = {
                            let mut inner = client.inner.lock();
                            let next = inner.outbox.pop_front();
                            inner.draining = next.is_some();
                            next
                        };
                        let Some(Outgoing { executor, request, on_answer, epoch }) = next else { break };
                        // A send for an epoch that is over is stale (its call was decided); one
                        // still connecting to a worker that died is abandoned when the epoch
                        // ends, so that sends to the next incarnation do not wait behind it.
                        let ended = client.epoch_ended.notified();
                        tokio::pin!(ended);
                        ended.as_mut().enable();
                        if client.inner.lock().core.current_epoch() != Some(epoch) {
                            continue;
                        }
                        tokio::select! {
                            () = executor.start_ask_with(request, on_answer) => {}
                            () = ended => {}
                        }
                    }
                });
            }
            Effect::WakeAt(due) => {
                let at = self.origin + due;
                core.arbiter.spawn(async move {
                    tokio::time::sleep_until(at.into()).await;
                    client.drive(&worker, |inner, now| {
                        if inner.timer == Some(due) {
                            inner.timer = None;
                        }
                        inner.core.handle_timeout(now);
                    });
                });
            }
        }
    }

    /// Reads the manager's answer about the actor; an alive incarnation's executor is
    /// remembered for the sends to it.
    fn located(&self, worker: &CoreWorker, answer: Result<Option<ActorInfo>, AskError>) -> Located {
        let info = match answer {
            Ok(Some(info)) => info,
            Ok(None) => return Located::Dead { cause: "it is not known to the cluster".to_owned() },
            Err(error) => return Located::Unreachable { cause: error.to_string() },
        };
        match info.state {
            ActorState::Alive => {
                let Some(address) = info.address.as_deref().and_then(|address| address.parse().ok()) else {
                    let cause = "the actor manager reported it alive without an address".to_owned();
                    return Located::Unreachable { cause };
                };
                let executor = worker.node.actor(ActorAddress::new(address, EXECUTOR_NAME));
                self.inner.lock().executors.insert(info.restarts, executor);
                Located::Alive { restarts: info.restarts }
            }
            ActorState::Dead => {
                Located::Dead { cause: info.death_cause.unwrap_or_else(|| "it died".to_owned()) }
            }
            _ => Located::Restarting,
        }
    }
}

/// How long a client waits before asking again where an actor that is neither alive nor dead
/// lives (only when the manager does not follow it; one it follows answers when it settles).
const LOCATE_AGAIN: Duration = Duration::from_millis(50);

/// How long a creation waits for the actor manager while it cannot be reached (the GCS
/// restarting): Ray's clients wait 60 s for a GCS to come back.
const CREATE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(45);

/// Asks the actor manager to create the actor, asking again while its connection is lost or it
/// cannot be reached (a restarted GCS: a call sent on its previous life's connection is lost).
/// Asking twice is safe: the manager answers a creation of an actor it already has as done.
async fn create_patiently(
    manager: &manta_actor::ServiceRef<manta_proto::worker::ActorManager>,
    spec: ActorSpec,
) -> Result<Result<(), CreateActorError>, ActorError> {
    let started = std::time::Instant::now();
    loop {
        match manager.ask(CreateActor(spec.clone())).await {
            Err(
                error @ (manta_actor::AskError::ConnectionLost(_) | manta_actor::AskError::Unreachable(_)),
            ) if started.elapsed() < CREATE_PATIENCE => {
                tracing::debug!(%error, "the actor manager was not reached; asking again");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            outcome => return outcome.map_err(|error| ActorError::Runtime(error.to_string())),
        }
    }
}
