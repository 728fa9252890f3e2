//! The registry of remote functions compiled into this binary.
//!
//! `#[manta::remote]` submits one [`RemoteFunction`] per function through `inventory`; a worker
//! process of the same binary looks a task's function up by name. Two pitfalls are guarded:
//! the linker drops the registrations of a crate the binary never references (so the facade's
//! tests assert the registry holds what they define), and two binaries built from different code
//! must not exchange tasks (so [`fingerprint`] names the registry's exact contents, to be compared
//! when a worker or node joins).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// One registered function: its name and the shim that decodes its arguments, calls it and
/// encodes its output.
#[derive(Debug)]
pub struct RemoteFunction {
    /// `module::path::function#signature-hash`.
    pub name: &'static str,
    /// Runs the function.
    pub invoke: fn(&mut Invocation) -> Result<Output, InvokeError>,
}

inventory::collect!(RemoteFunction);

/// A type-erased actor instance (an `Arc<tokio::sync::RwLock<Class>>`).
pub type ActorCell = std::sync::Arc<dyn std::any::Any + Send + Sync>;

/// A running actor method.
pub type MethodFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Output, InvokeError>>>>;

/// One registered actor class: how to construct it and dispatch calls to its methods.
#[derive(Debug)]
pub struct ActorClassEntry {
    /// `module::path::Type`.
    pub name: &'static str,
    /// Runs the constructor.
    pub construct: fn(&mut Invocation) -> Result<ActorCell, InvokeError>,
    /// Starts method `method` on the instance; `None` for an unknown method.
    pub dispatch: fn(&ActorCell, &str, Invocation) -> Option<MethodFuture>,
    /// The methods placed in a named concurrency group: (method, group).
    pub method_groups: &'static [(&'static str, &'static str)],
}

inventory::collect!(ActorClassEntry);

/// The arguments of one call, decoded one by one by the generated code.
#[derive(Debug)]
pub struct Invocation {
    function: &'static str,
    args: std::vec::IntoIter<bytes::Bytes>,
    index: usize,
    /// Ids of refs that decoding created (the executor registers the ones still alive).
    pub(crate) decoded: std::sync::Arc<parking_lot::Mutex<Vec<manta_objectstore::ObjectId>>>,
}

impl Invocation {
    pub(crate) fn new(function: &'static str, args: Vec<bytes::Bytes>) -> Self {
        Invocation { function, args: args.into_iter(), index: 0, decoded: Default::default() }
    }

    /// Decodes the next argument as a `T`.
    pub fn arg<T: DeserializeOwned>(&mut self) -> Result<T, InvokeError> {
        let index = self.index;
        self.index += 1;
        let bytes = self.args.next().ok_or_else(|| InvokeError::Arguments {
            function: self.function,
            reason: format!("argument {index} is missing"),
        })?;
        let (value, refs) = crate::codec::decode(bytes).map_err(|error| InvokeError::Arguments {
            function: self.function,
            reason: format!("argument {index}: {error}"),
        })?;
        self.decoded.lock().extend(refs.iter().map(|reference| reference.id));
        Ok(value)
    }
}

/// An encoded output, ready to be stored or sent, with handles on the refs inside it (taken
/// while the function's value still held them, so they outlive the value); for a function with
/// several returns, the first, with the others in `more`.
#[derive(Debug)]
pub struct Output {
    pub(crate) value: crate::codec::Encoded,
    pub(crate) holds: Vec<crate::objects::RawRef>,
    pub(crate) more: Vec<Output>,
}

/// Joins the encoded returns of a function with several (`num_returns`), in order.
pub fn outputs(function: &'static str, parts: Vec<Output>) -> Result<Output, InvokeError> {
    let mut parts = parts.into_iter();
    let Some(mut first) = parts.next() else {
        return Err(InvokeError::Output { function, reason: "a function returns at least one value".into() });
    };
    first.more.extend(parts);
    Ok(first)
}

/// Running a registered function failed before, in or after the function itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvokeError {
    /// The arguments did not decode as the function's parameter types.
    #[error("{function}: arguments do not decode: {reason}")]
    Arguments {
        /// The function.
        function: &'static str,
        /// Why.
        reason: String,
    },
    /// The output could not be encoded.
    #[error("{function}: output does not encode: {reason}")]
    Output {
        /// The function.
        function: &'static str,
        /// Why.
        reason: String,
    },
    /// The function returned `Err`.
    #[error("{message}")]
    Returned {
        /// The error's `Display`.
        message: String,
        /// The error itself, when its type serialises (the caller reads it back with
        /// [`TaskError::user_error`](crate::TaskError::user_error)).
        error: Option<Box<manta_proto::worker::UserError>>,
    },
    /// The function panicked.
    #[error("panicked: {message}")]
    Panicked {
        /// The panic message.
        message: String,
    },
    /// An actor's method called [`exit_actor`](crate::exit_actor).
    #[error("the actor exited: manta::exit_actor() was called")]
    ActorExit,
}

/// The payload [`exit_actor`](crate::exit_actor) unwinds an actor's method with.
pub(crate) struct ExitActor;

/// What a caught panic means: an actor's requested exit, or a panic.
fn unwound(panic: Box<dyn std::any::Any + Send>) -> InvokeError {
    if panic.is::<ExitActor>() {
        InvokeError::ActorExit
    } else {
        InvokeError::Panicked { message: manta_actor::panic_message(&*panic) }
    }
}

/// The registry is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// Two functions (or actor classes) share a name.
    #[error("remote function or actor class {0} is registered twice")]
    Duplicate(&'static str),
}

/// Encodes a function's output (used by the generated code).
pub fn output<T: Serialize>(function: &'static str, value: &T) -> Result<Output, InvokeError> {
    let encoded = crate::codec::encode(value)
        .map_err(|error| InvokeError::Output { function, reason: error.to_string() })?;
    let holds = match crate::core::try_current() {
        Some(core) => encoded.refs.iter().map(|wire| core.adopt(wire)).collect(),
        None => Vec::new(),
    };
    Ok(Output { value: encoded, holds, more: Vec::new() })
}

/// An `Err` a function returned, on its way to becoming the task's error. Which of
/// [`ReturnedValue`] and [`ReturnedText`] applies is chosen where the error's type is known
/// (the generated code; autoref specialisation): an error type that serialises is carried as a
/// value and as its `Display` text, any other as its text alone.
pub struct Returned<E>(pub E);

/// An error type that serialises: carried as a value and as text.
pub trait ReturnedValue {
    /// The task's error.
    fn invoke_error(&self) -> InvokeError;
}

impl<E: std::fmt::Display + Serialize> ReturnedValue for Returned<E> {
    fn invoke_error(&self) -> InvokeError {
        let error = manta_proto::worker::UserError::encode(&self.0);
        InvokeError::Returned { message: self.0.to_string(), error }
    }
}

/// Any other error type: carried as its `Display` text.
pub trait ReturnedText {
    /// The task's error.
    fn invoke_error(&self) -> InvokeError;
}

impl<E: std::fmt::Display> ReturnedText for &Returned<E> {
    fn invoke_error(&self) -> InvokeError {
        InvokeError::Returned { message: self.0.to_string(), error: None }
    }
}

thread_local! {
    /// Set on the thread of an actor that runs one call at a time: its synchronous methods run
    /// right there (nothing else could run meanwhile), saving two thread hops per call.
    static RUN_INLINE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks the current thread as one whose synchronous methods run inline.
pub(crate) fn run_inline_on_this_thread(inline: bool) {
    RUN_INLINE.with(|flag| flag.set(inline));
}

/// Runs `body` on the blocking pool (or inline on a one-call-at-a-time actor's own thread),
/// catching a panic (used for synchronous actor methods).
pub async fn run_blocking<F>(body: F) -> Result<Output, InvokeError>
where
    F: FnOnce() -> Result<Output, InvokeError> + Send + 'static,
{
    if RUN_INLINE.with(std::cell::Cell::get) {
        return match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
            Ok(result) => result,
            Err(panic) => Err(unwound(panic)),
        };
    }
    let call = crate::context::current_call();
    let blocking = move || {
        crate::context::in_blocking_call(call, || {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(body))
        })
    };
    match tokio::task::spawn_blocking(blocking).await {
        Ok(Ok(result)) => result,
        Ok(Err(panic)) => Err(unwound(panic)),
        Err(error) => Err(InvokeError::Panicked { message: error.to_string() }),
    }
}

/// Awaits `future`, turning a panic while polling it into an error (for `async` methods).
pub async fn catch_unwind<F: std::future::Future>(future: F) -> Result<F::Output, InvokeError> {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(move |context| {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| future.as_mut().poll(context))) {
            Ok(std::task::Poll::Ready(output)) => std::task::Poll::Ready(Ok(output)),
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Err(panic) => std::task::Poll::Ready(Err(unwound(panic))),
        }
    })
    .await
}

/// Encodes a value as Manta encodes arguments and results (for running a function by hand).
pub fn encode_value<T: Serialize>(value: &T) -> Result<Vec<u8>, crate::CodecError> {
    crate::codec::encode(value).map(|encoded| encoded.to_vec())
}

/// Decodes a value encoded by [`encode_value`] or returned by [`invoke_local`] (values holding
/// no `ObjectRef`).
pub fn decode_value<T: DeserializeOwned>(bytes: Vec<u8>) -> Result<T, crate::CodecError> {
    crate::codec::decode(bytes::Bytes::from(bytes)).map(|(value, _)| value)
}

/// Runs a registered function in this process on arguments encoded one by one with
/// [`encode_value`]; returns its encoded output (the first, for a function with several
/// returns: see [`invoke_local_returns`]).
pub fn invoke_local(function: &RemoteFunction, args: Vec<Vec<u8>>) -> Result<Vec<u8>, InvokeError> {
    invoke_local_returns(function, args).map(|mut returns| returns.swap_remove(0))
}

/// [`invoke_local`] for a function with several returns: each encoded output, in order.
pub fn invoke_local_returns(
    function: &RemoteFunction,
    args: Vec<Vec<u8>>,
) -> Result<Vec<Vec<u8>>, InvokeError> {
    let mut invocation = Invocation::new(function.name, args.into_iter().map(bytes::Bytes::from).collect());
    let output = (function.invoke)(&mut invocation)?;
    Ok(std::iter::once(output.value.to_vec())
        .chain(output.more.iter().map(|part| part.value.to_vec()))
        .collect())
}

/// The actor class registered under `name`.
pub fn actor_class(name: &str) -> Option<&'static ActorClassEntry> {
    inventory::iter::<ActorClassEntry>.into_iter().find(|class| class.name == name)
}

fn table() -> &'static Result<BTreeMap<&'static str, &'static RemoteFunction>, RegistryError> {
    static TABLE: OnceLock<Result<BTreeMap<&'static str, &'static RemoteFunction>, RegistryError>> =
        OnceLock::new();
    TABLE.get_or_init(|| {
        let mut table = BTreeMap::new();
        for function in inventory::iter::<RemoteFunction> {
            if table.insert(function.name, function).is_some() {
                return Err(RegistryError::Duplicate(function.name));
            }
        }
        let mut classes = std::collections::BTreeSet::new();
        for class in inventory::iter::<ActorClassEntry> {
            if !classes.insert(class.name) {
                return Err(RegistryError::Duplicate(class.name));
            }
        }
        Ok(table)
    })
}

/// Checks the registry (no duplicate names); call once at start-up.
pub fn check() -> Result<usize, RegistryError> {
    table().as_ref().map(BTreeMap::len).map_err(Clone::clone)
}

/// The function registered under `name`.
pub fn lookup(name: &str) -> Option<&'static RemoteFunction> {
    table().as_ref().ok()?.get(name).copied()
}

/// Every registered name (functions, then actor classes), in order.
pub fn names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> =
        table().as_ref().map(|table| table.keys().copied().collect()).unwrap_or_default();
    let mut classes: Vec<&'static str> =
        inventory::iter::<ActorClassEntry>.into_iter().map(|class| class.name).collect();
    classes.sort_unstable();
    names.extend(classes);
    names
}

/// A 64-bit FNV-1a hash of the sorted registered names (which include signature hashes): equal
/// for two binaries exactly when they register the same functions with the same signatures.
pub fn fingerprint() -> u64 {
    names().iter().fold(0xcbf2_9ce4_8422_2325u64, |hash, name| {
        name.bytes()
            .chain([0])
            .fold(hash, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
    })
}
