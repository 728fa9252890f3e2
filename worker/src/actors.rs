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
//! Calls: each process has one client per actor. The client resolves each call's arguments in
//! submission order, numbers the call within the current incarnation (`seq` from 0) and sends
//! it straight to the actor's worker; the actor runs a caller's calls in `seq` order, so calls
//! from one caller run in submission order even though they travel concurrently. A call whose
//! incarnation dies fails with `ActorDied`, or is sent again to the next incarnation while it
//! has `max_task_retries` left.
//!
//! Lifetime: a non-detached actor's handles share one hidden object owned by the creator; when
//! it is freed (no handle left anywhere) the creator kills the actor, as Ray does.

use std::collections::HashMap;
use std::sync::Arc;

use manta_actor::{ActorAddress, ActorRef, AskError};
use manta_gcs::requests::GetNamedActor;
use manta_gcs::wire::{ActorInfo, ActorState};
use manta_gcs::{ActorId, GcsError};
use manta_raylet::SchedulingStrategy;
use parking_lot::Mutex;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio::sync::{mpsc, watch};
use tracing::debug;

use crate::calls::CallTable;
use crate::core::{self, CoreWorker};
use crate::error::{ActorError, TaskError};
use crate::executor::{Executor, EXECUTOR_NAME};
use crate::objects::{FreeHook, ObjectRef, RawRef, State, Value};
use crate::submit::{output_value, resolve_args, resolve_now, ArgSpec};
use crate::wire::{
    ActorCall, ActorSpec, CreateActor, CreateActorError, KillActor, TaskArg, TaskFailure, TaskOutput,
    WatchActor,
};

pub use manta_gcs::ACTOR_MANAGER_NAME;

/// A class of actors: implemented by `#[manta::actor]` on an `impl` block.
pub trait ActorClass: Send + Sync + 'static {
    /// The registered name: the module path and the type's name.
    const NAME: &'static str;
    /// Whether any method is `async` (then calls default to running concurrently, up to 1000,
    /// as Ray's async actors; otherwise one at a time).
    const ASYNC: bool;
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
    /// Retries of a call whose actor died and restarted (default 0).
    pub max_task_retries: u32,
    /// Calls running at once (default 1; 1000 for classes with `async` methods).
    pub max_concurrency: Option<u32>,
    /// CPUs held for the actor's life (default 0, Ray's running default).
    pub num_cpus: f64,
    /// GPUs held for the actor's life.
    pub num_gpus: f64,
    /// Custom resources held for the actor's life.
    pub resources: Vec<(String, f64)>,
    /// Where it should run (default: Ray's hybrid policy).
    pub scheduling_strategy: SchedulingStrategy,
}

/// An untyped handle to an actor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RawActorHandle {
    actor_id: ActorId,
    class: String,
    max_task_retries: u32,
    /// Shared by the non-detached actor's handles; its freeing kills the actor.
    lifetime: Option<ObjectRef<()>>,
}

impl RawActorHandle {
    /// The actor's id, as hex.
    pub fn id(&self) -> String {
        self.actor_id.0.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    /// The actor's class.
    pub fn class(&self) -> &str {
        &self.class
    }

    /// Calls `method` with `args`; the result arrives in the returned object.
    pub fn call(&self, method: &'static str, args: Vec<ArgSpec>) -> RawRef {
        // Without `manta::init` the result's `get` reports `NotInitialized`.
        let Ok(core) = core::current() else { return RawRef::uninitialized() };
        let result = core.create_pending();
        let call = PendingCall {
            method,
            args: Some(args),
            resolved: None,
            return_id: result.id,
            retries_left: self.max_task_retries,
        };
        client(&core, self).submit(&core, call);
        result
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

/// Creates an actor of class `A` (what `A::remote(...)` and `A::options()...remote(...)` call).
/// Returns once the actor is registered (its name claimed); it starts in the background, and
/// calls made meanwhile wait for it.
pub fn create_actor<A: ActorClass>(
    options: ActorOptions,
    args: Vec<ArgSpec>,
) -> Result<ActorHandle<A>, ActorError> {
    let core = core::current().map_err(|_| ActorError::NotInitialized)?;
    if options.max_concurrency == Some(0) {
        return Err(ActorError::Invalid("max_concurrency must be at least 1".into()));
    }
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
        let spec = ActorSpec {
            info,
            args,
            num_cpus: options.num_cpus,
            num_gpus: options.num_gpus,
            resources: options.resources.clone(),
            max_concurrency,
            scheduling_strategy: options.scheduling_strategy,
        };
        let created =
            manager.ask(CreateActor(spec)).await.map_err(|error| ActorError::Runtime(error.to_string()))?;
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
    outcome?;
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

/// The live actor named `name` in `namespace`, as a handle of class `A`.
pub fn get_actor_in<A: ActorClass>(name: &str, namespace: &str) -> Result<ActorHandle<A>, ActorError> {
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

/// The last handle of a non-detached actor is gone: kill it.
pub(crate) fn kill_when_out_of_scope(core: &Arc<CoreWorker>, actor_id: ActorId) {
    let manager = core.actor_manager.clone();
    core.arbiter.spawn(async move {
        let request = KillActor { actor_id, cause: "every handle to it was dropped".into() };
        let _ = manager.ask(request).await;
    });
}

// ---- the caller side: one client per actor per process ----

struct PendingCall {
    method: &'static str,
    args: Option<Vec<ArgSpec>>,
    resolved: Option<(Vec<TaskArg>, Arc<Vec<RawRef>>)>,
    return_id: manta_objectstore::ObjectId,
    retries_left: u32,
}

/// This process's client of one actor. A call goes out from the calling thread itself when
/// nothing stands in its way (its arguments are plain values, the actor's incarnation and the
/// connection to it are up, no earlier call is still queued); otherwise it is queued for the
/// client's task, which waits for argument objects and incarnations. Either way calls are
/// numbered and sent in submission order.
pub(crate) struct ActorClient {
    actor_id: ActorId,
    /// How errors name the actor; shared, not copied, by every call's answer callback.
    label: Arc<str>,
    /// This process's id as the actor's caller (the actor runs each caller's calls in `seq`
    /// order).
    caller: u64,
    sender: mpsc::UnboundedSender<PendingCall>,
    state: Mutex<ClientState>,
}

struct ClientState {
    /// The incarnation calls go to, once known.
    current: Option<Incarnation>,
    /// Calls handed to the client's task and not sent yet: while there are any, new calls
    /// queue behind them.
    queued: usize,
}

/// This process's actor clients.
pub(crate) type ActorClients = Mutex<HashMap<ActorId, Arc<ActorClient>>>;

fn client(core: &Arc<CoreWorker>, handle: &RawActorHandle) -> Arc<ActorClient> {
    let mut clients = core.actor_clients.lock();
    if let Some(client) = clients.get(&handle.actor_id) {
        return client.clone();
    }
    let (sender, receiver) = mpsc::unbounded_channel();
    let caller = u64::from_be_bytes(core.new_object_id().0[4..12].try_into().expect("8 bytes"))
        ^ u64::from(std::process::id());
    let client = Arc::new(ActorClient {
        actor_id: handle.actor_id,
        label: format!("{}({})", handle.class, &handle.id()[..8]).into(),
        caller,
        sender,
        state: Mutex::new(ClientState { current: None, queued: 0 }),
    });
    clients.insert(handle.actor_id, client.clone());
    core.arbiter.spawn(run_client(core.clone(), client.clone(), receiver));
    client
}

/// The incarnation of an actor a client sends to.
struct Incarnation {
    restarts: u64,
    executor: ActorRef<Executor>,
    /// Becomes `Some(info)` when this incarnation is over.
    over: watch::Receiver<Option<ActorInfo>>,
    /// Its calls awaiting an answer (numbered, decided once each).
    calls: Arc<Mutex<CallTable<Flight>>>,
}

impl Incarnation {
    fn is_over(&self) -> bool {
        self.over.borrow().is_some()
    }
}

/// A call sent to an incarnation, kept until its answer (or the incarnation's end) decides it.
struct Flight {
    call: PendingCall,
    /// Its arguments, kept for a retry (empty when it has none left).
    args: Vec<TaskArg>,
    holds: Arc<Vec<RawRef>>,
}

type Reply = Result<Result<TaskOutput, TaskFailure>, AskError>;

impl ActorClient {
    /// Takes a call: sends it now, from the calling thread, when nothing stands in the way;
    /// else queues it for the client's task.
    fn submit(self: &Arc<Self>, core: &Arc<CoreWorker>, call: PendingCall) {
        if let Err(call) = self.try_send_now(core, call) {
            self.enqueue(call);
        }
    }

    /// Queues a call for the client's task.
    fn enqueue(&self, call: PendingCall) {
        self.state.lock().queued += 1;
        if self.sender.send(call).is_err() {
            unreachable!("an actor client's task runs for the life of the process");
        }
    }

    /// Sends `call` without waiting for anything, or gives it back.
    fn try_send_now(
        self: &Arc<Self>,
        core: &Arc<CoreWorker>,
        mut call: PendingCall,
    ) -> Result<(), PendingCall> {
        let mut state = self.state.lock();
        if state.queued > 0 {
            return Err(call);
        }
        let Some(incarnation) = state.current.as_mut().filter(|incarnation| !incarnation.is_over()) else {
            return Err(call);
        };
        let (args, holds) = match call.resolved.take() {
            Some(resolved) => resolved,
            None => match resolve_now(core, &mut call.args) {
                Some((args, holds)) => (args, Arc::new(holds)),
                None => return Err(call),
            },
        };
        let (seq, request, on_answer) = match self.register(core, incarnation, call, args, holds) {
            Ok(registered) => registered,
            // Over since it was chosen: the client's task takes it to the next incarnation.
            Err(call) => return Err(*call),
        };
        let Err((request, _)) = incarnation.executor.try_start_ask_with(request, on_answer) else {
            return Ok(());
        };
        // No room or no connection: take the call back (unless the incarnation's end has
        // already taken it) and leave it to the client's task. The arguments come back with the
        // unsent message: the in-flight table keeps a copy only for a call with retries left.
        let Some(flight) = incarnation.calls.lock().take_back(seq) else {
            return Ok(());
        };
        let Flight { mut call, holds, .. } = flight;
        call.resolved = Some((request.args, holds));
        Err(call)
    }

    /// Numbers a call in `incarnation`, records it as in flight, and builds its message and
    /// the callback that decides it. Gives the call back, unsent and with its arguments, when
    /// the incarnation ended since it was chosen (its end took the table): it goes to the next
    /// incarnation without using up a retry, since it never reached this one.
    fn register(
        self: &Arc<Self>,
        core: &Arc<CoreWorker>,
        incarnation: &mut Incarnation,
        call: PendingCall,
        args: Vec<TaskArg>,
        holds: Arc<Vec<RawRef>>,
    ) -> Result<(u64, ActorCall, impl FnOnce(Reply) + Send + 'static), Box<PendingCall>> {
        let restarts = incarnation.restarts;
        let (return_id, method) = (call.return_id, call.method);
        // The arguments are kept only for a retry.
        let kept = if call.retries_left > 0 { args.clone() } else { Vec::new() };
        let seq = match incarnation.calls.lock().register(Flight { call, args: kept, holds }) {
            Ok(seq) => seq,
            Err(Flight { mut call, holds, .. }) => {
                call.resolved = Some((args, holds));
                return Err(Box::new(call));
            }
        };
        let request = ActorCall {
            actor_id: self.actor_id,
            method: method.to_owned(),
            args,
            caller: self.caller,
            seq,
            return_id,
        };
        let (calls, over, client) = (incarnation.calls.clone(), incarnation.over.clone(), self.clone());
        let core = core.clone();
        // The answer is handled where it arrives (the transport's thread), without a wake-up
        // of the caller's runtime or of the client's task.
        let on_answer = move |reply: Reply| {
            let taken = calls.lock().answer(seq);
            let Some(flight) = taken else {
                // Already decided by the end of the incarnation.
                return;
            };
            match reply {
                Ok(Ok(output)) => complete(&core, return_id, Ok(output_value(output))),
                Ok(Err(TaskFailure { function, pid, message })) => {
                    complete(&core, return_id, Err(TaskError::Failed { function, pid, message }))
                }
                Err(error) => {
                    let failing = core.clone();
                    core.arbiter.spawn(async move {
                        let cause = death_cause(error, over).await;
                        fail_call(&failing, flight, &client, restarts, cause);
                    });
                }
            }
        };
        Ok((seq, request, on_answer))
    }

    /// Sends a queued call: waits for its argument objects and for a live incarnation.
    async fn send_queued(self: &Arc<Self>, core: &Arc<CoreWorker>, mut call: PendingCall) {
        if call.resolved.is_none() {
            let function = format!("{}.{}", self.label, call.method);
            match resolve_args(core, &function, call.args.take().unwrap_or_default()).await {
                Ok((args, holds)) => call.resolved = Some((args, Arc::new(holds))),
                Err(error) => return complete(core, call.return_id, Err(error)),
            }
        }
        loop {
            let live = {
                let mut state = self.state.lock();
                if state.current.as_ref().is_some_and(Incarnation::is_over) {
                    state.current = None;
                }
                state.current.is_some()
            };
            if !live {
                match self.next_incarnation(core).await {
                    Ok(incarnation) => self.state.lock().current = Some(incarnation),
                    Err(error) => return complete(core, call.return_id, Err(error)),
                }
            }
            let (args, holds) = call.resolved.take().expect("resolved above");
            let prepared = {
                let mut state = self.state.lock();
                let incarnation = state.current.as_mut().expect("set above");
                let executor = incarnation.executor.clone();
                self.register(core, incarnation, call, args, holds)
                    .map(|(_, request, on_answer)| (executor, request, on_answer))
            };
            // Sent in `seq` order (no call is sent from a calling thread while one is queued):
            // the worker receives a caller's calls in order, so none waits for one stuck behind.
            match prepared {
                Ok((executor, request, on_answer)) => {
                    return executor.start_ask_with(request, on_answer).await
                }
                // That incarnation ended meanwhile: on to the next.
                Err(returned) => call = *returned,
            }
        }
    }

    /// Waits for the actor to be alive and starts following that incarnation's end.
    async fn next_incarnation(self: &Arc<Self>, core: &Arc<CoreWorker>) -> Result<Incarnation, TaskError> {
        let actor_id = self.actor_id;
        match core.actor_manager.ask_unbounded(WatchActor { actor_id, known: None }).await {
            Ok(Some(info)) if info.state == ActorState::Alive => {
                let Some(address) = info.address.as_deref().and_then(|address| address.parse().ok()) else {
                    let reason = "the actor manager reported it alive without an address";
                    return Err(TaskError::unreachable(self.label.to_string(), "the actor", reason));
                };
                let (over_sender, over) = watch::channel(None);
                let calls = Arc::new(Mutex::new(CallTable::new()));
                let manager = core.actor_manager.clone();
                let restarts = info.restarts;
                let (ended, client, watcher) = (calls.clone(), self.clone(), core.clone());
                core.arbiter.spawn(async move {
                    if let Ok(next) =
                        manager.ask_unbounded(WatchActor { actor_id, known: Some(restarts) }).await
                    {
                        let next = next.unwrap_or(info);
                        let cause = next.death_cause.clone().unwrap_or_else(|| "its worker died".into());
                        let _ = over_sender.send(Some(next));
                        // The incarnation is over: decide every call still waiting on it.
                        let orphans = ended.lock().end();
                        for flight in orphans {
                            fail_call(&watcher, flight, &client, restarts, cause.clone());
                        }
                    }
                });
                Ok(Incarnation {
                    restarts,
                    executor: core.node.actor(ActorAddress::new(address, EXECUTOR_NAME)),
                    over,
                    calls,
                })
            }
            Ok(info) => {
                let cause = info
                    .and_then(|info| info.death_cause)
                    .unwrap_or_else(|| "it is not known to the cluster".to_owned());
                Err(TaskError::ActorDied { actor: self.label.to_string(), cause })
            }
            Err(error) => Err(TaskError::unreachable(self.label.to_string(), "the actor manager", error)),
        }
    }
}

/// Decides a call whose incarnation failed it: sent again to the next incarnation while it has
/// retries left, else failed with `ActorDied`.
fn fail_call(core: &Arc<CoreWorker>, mut flight: Flight, client: &ActorClient, restarts: u64, cause: String) {
    if flight.call.retries_left > 0 {
        debug!(actor = %client.label, restarts, %cause, "actor call failed; retrying on the next incarnation");
        flight.call.retries_left -= 1;
        flight.call.resolved = Some((flight.args, flight.holds));
        return client.enqueue(flight.call);
    }
    let actor = client.label.to_string();
    complete(core, flight.call.return_id, Err(TaskError::ActorDied { actor, cause }));
}

fn complete(
    core: &Arc<CoreWorker>,
    id: manta_objectstore::ObjectId,
    outcome: Result<(Value, Vec<crate::objects::RefWire>), TaskError>,
) {
    core.clean_up(core.objects.complete(id, outcome));
}

/// The client's task: sends the calls that could not go out at once, one after another.
async fn run_client(
    core: Arc<CoreWorker>,
    client: Arc<ActorClient>,
    mut receiver: mpsc::UnboundedReceiver<PendingCall>,
) {
    while let Some(call) = receiver.recv().await {
        client.send_queued(&core, call).await;
        client.state.lock().queued -= 1;
    }
}

/// Why a call failed: the error's own cause, or, when the link to the worker broke (which is
/// how a dead worker shows on a local connection, often before the actor manager knows), the
/// manager's verdict on the incarnation: the real cause, and a retry then goes to the next
/// incarnation instead of the dead one. The wait for the verdict is bounded.
async fn death_cause(error: AskError, mut over: watch::Receiver<Option<ActorInfo>>) -> String {
    match error {
        AskError::ActorDied { cause, .. } => cause,
        broken @ (AskError::ConnectionLost(_) | AskError::Unreachable(_)) => {
            let verdict =
                tokio::time::timeout(crate::submit::DEATH_VERDICT_WAIT, over.wait_for(Option::is_some)).await;
            match verdict {
                Ok(Ok(info)) => info.clone().and_then(|info| info.death_cause),
                _ => None,
            }
            .unwrap_or_else(|| broken.to_string())
        }
        other => other.to_string(),
    }
}
