//! Objects as one process sees them: the table of objects it owns or borrows, and
//! [`ObjectRef`], the RAII handle users hold.
//!
//! Ownership (Ray's model, see ARCHITECTURE.md "Ownership"): the process that creates a ref
//! (`remote()` or `put`) owns the object and counts its handles and borrowers; the counting is
//! the sans-IO [`RefTable`] in `objects/state.rs`, with its own property tests (the borrower
//! protocol between processes included). This file is its shell: the table under a lock, the
//! waiters of `get` and `wait`, and the handles whose clone and drop feed it.
//!
//! Object lifecycle, as the owner sees it (asserted in [`RefTable::complete`]):
//!
//! ```text
//! Pending --> Ready(value) --> freed
//!    |
//!    +-----> Failed(error) --> freed
//! ```

use std::marker::PhantomData;
use std::time::{Duration, Instant};

use std::sync::Arc;

use manta_objectstore::ObjectId;
use manta_proto::OwnerAddress;
use parking_lot::{Condvar, Mutex};
use serde::de::{DeserializeOwned, Error as _};
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::codec;
use crate::core::{self, CoreWorker};
use crate::error::TaskError;

pub use manta_proto::worker::RefWire;

pub mod state;

pub(crate) use state::{FreeHook, State, Value};
use state::{RefCommand, RefError, RefTable, StreamAck, StreamNext};

/// Commands from the table, to perform once its lock is released ([`CoreWorker::clean_up`]).
///
/// [`CoreWorker::clean_up`]: crate::core::CoreWorker::clean_up
#[must_use = "what a freed object held must be released"]
#[derive(Debug, Default)]
pub(crate) struct Released(pub(crate) Vec<RefCommand>);

/// Every object this process owns or borrows: the [`RefTable`] under a lock, with the waiters
/// of `get` and `wait`.
#[derive(Debug)]
pub(crate) struct ObjectTable {
    table: Mutex<RefTable>,
    changed: Condvar,
    notify: tokio::sync::Notify,
    /// Objects that failed so far (counted under the table's lock): a waiter for many refs
    /// looks for a failure among them only when this moved.
    failures: std::sync::atomic::AtomicU64,
}

impl ObjectTable {
    /// The table of the process at `own`.
    pub(crate) fn new(own: OwnerAddress) -> ObjectTable {
        ObjectTable {
            table: Mutex::new(RefTable::new(own)),
            changed: Condvar::new(),
            notify: tokio::sync::Notify::new(),
            failures: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// A new owned object with one local handle.
    pub(crate) fn create_owned(&self, id: ObjectId, state: State, contains: Vec<RefWire>) {
        self.table.lock().create_owned(id, state, contains);
    }

    pub(crate) fn set_on_free(&self, id: ObjectId, hook: FreeHook) {
        self.table.lock().set_on_free(id, hook);
    }

    /// An owned object's task finished. If every ref was dropped meanwhile, what the value
    /// holds is released.
    pub(crate) fn complete(
        &self,
        id: ObjectId,
        outcome: Result<(Value, Vec<RefWire>), TaskError>,
    ) -> Released {
        let failed = outcome.is_err();
        let released = self.with(|table| {
            table.complete(id, outcome);
            if failed {
                self.failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
        self.wake();
        released
    }

    /// Frees `id`'s value now (`manta::free`): its waiters wake to `ObjectFreed`. For a
    /// borrowed object, the owner to tell.
    pub(crate) fn free(&self, id: ObjectId) -> (Released, Option<OwnerAddress>) {
        let mut owner = None;
        let released = self.with(|table| owner = table.free(id).ok().flatten());
        self.wake();
        (released, owner)
    }

    /// A value nobody waits for (a late reply): releases what it holds.
    pub(crate) fn discard(&self, id: ObjectId, value: Value, contains: Vec<RefWire>) -> Released {
        self.with(|table| table.discard(id, value, contains))
    }

    /// A borrowed object's value arrived from its owner.
    pub(crate) fn fetched(&self, id: ObjectId, state: State) {
        let failed = matches!(state, State::Failed(_));
        let mut table = self.table.lock();
        table.fetched(id, state);
        if failed {
            self.failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        drop(table);
        self.wake();
    }

    /// Objects that failed so far; read under the table's lock (in a [`wait_for`] condition)
    /// it is exact.
    ///
    /// [`wait_for`]: ObjectTable::wait_for
    pub(crate) fn failures(&self) -> u64 {
        self.failures.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn wake(&self) {
        self.changed.notify_all();
        self.notify.notify_waiters();
    }

    /// Runs `change` on the table and takes the commands it left.
    fn with(&self, change: impl FnOnce(&mut RefTable)) -> Released {
        let mut table = self.table.lock();
        change(&mut table);
        Released(table.take_commands())
    }

    /// Runs a change that may be refused (a count below zero), logging the refusal: it comes
    /// from a stray or repeated message, and changes nothing.
    fn with_checked(&self, change: impl FnOnce(&mut RefTable) -> Result<(), RefError>) -> Released {
        let mut refused = None;
        let released = self.with(|table| refused = change(table).err());
        if let Some(error) = refused {
            tracing::debug!(%error, "reference count left unchanged");
        }
        released
    }

    pub(crate) fn add_local(&self, id: ObjectId) {
        let _ = self.table.lock().add_local(id);
    }

    pub(crate) fn release_local(&self, id: ObjectId) -> Released {
        self.with_checked(|table| table.release_local(id))
    }

    /// Another process (or an object) borrows an owned object, held for `holder`. `false` if
    /// it is gone.
    pub(crate) fn add_borrower(&self, id: ObjectId, holder: OwnerAddress) -> (bool, Released) {
        let mut added = false;
        let released = self.with(|table| added = table.add_borrower(id, holder));
        (added, released)
    }

    pub(crate) fn remove_borrower(&self, id: ObjectId, holder: OwnerAddress) -> Released {
        self.with_checked(|table| table.remove_borrower(id, holder))
    }

    /// Opens the stream of a streaming task owned here.
    pub(crate) fn open_stream(&self, task: ObjectId, window: Option<u64>) {
        self.table.lock().open_stream(task, window);
    }

    /// A value of a stream arrived; its consumer wakes.
    pub(crate) fn stream_item(
        &self,
        task: ObjectId,
        index: u64,
        value: Value,
        contains: Vec<RefWire>,
    ) -> (StreamAck, Released) {
        let mut ack = StreamAck::Stop;
        let released = self.with(|table| ack = table.stream_item(task, index, value, contains));
        self.wake();
        (ack, released)
    }

    /// Takes the next value of a stream, or says why there is none.
    pub(crate) fn take_stream_item(&self, task: ObjectId) -> StreamNext {
        self.table.lock().take_stream_item(task)
    }

    /// Whether a stream's producer may go on.
    pub(crate) fn stream_has_room(&self, task: ObjectId) -> bool {
        self.table.lock().stream_has_room(task)
    }

    /// A stream's consumer is gone.
    pub(crate) fn close_stream(&self, task: ObjectId) -> Released {
        self.with(|table| table.close_stream(task))
    }

    /// `holder` died: the borrows held for it end.
    pub(crate) fn holder_died(&self, holder: OwnerAddress) -> Released {
        let released = self.with(|table| table.holder_died(holder));
        self.wake();
        released
    }

    /// `holder` answered a watch: whether to go on watching it.
    pub(crate) fn holder_alive(&self, holder: OwnerAddress) -> bool {
        self.table.lock().holder_alive(holder)
    }

    /// A ref arrived inside a value. Returns whether this process now borrows it for the first
    /// time (the caller must register it with the owner).
    pub(crate) fn adopt(&self, id: ObjectId, owner: Option<OwnerAddress>) -> bool {
        self.table.lock().adopt(id, owner)
    }

    /// The owner counted this process as a borrower (given back at once if the entry is gone).
    pub(crate) fn registered(&self, id: ObjectId, owner: OwnerAddress) -> Released {
        self.with(|table| table.registered(id, owner))
    }

    /// Borrowed entries of `ids` not yet registered with their owners.
    pub(crate) fn unregistered(&self, ids: &[ObjectId]) -> Vec<(ObjectId, OwnerAddress)> {
        self.table.lock().unregistered(ids)
    }

    pub(crate) fn state(&self, id: ObjectId) -> Option<State> {
        self.table.lock().state(id).cloned()
    }

    /// Who owns `id` (this process included), if it is here.
    pub(crate) fn owner(&self, id: ObjectId) -> Option<OwnerAddress> {
        self.table.lock().owner(id)
    }

    /// For a borrowed pending entry not being fetched: marks it fetching and returns its owner.
    pub(crate) fn start_fetch(&self, id: ObjectId) -> Option<OwnerAddress> {
        self.table.lock().start_fetch(id)
    }

    /// Blocks until `id` is no longer pending, or the deadline passes (`None` then).
    pub(crate) fn wait_blocking(&self, id: ObjectId, deadline: Option<Instant>) -> Option<State> {
        let mut table = self.table.lock();
        loop {
            match table.state(id) {
                None => {
                    return Some(State::Failed(TaskError::ObjectLost {
                        object: id.to_string(),
                        reason: "no reference to it is held here".into(),
                    }))
                }
                Some(State::Pending) => {}
                Some(state) => return Some(state.clone()),
            }
            match deadline {
                None => self.changed.wait(&mut table),
                Some(deadline) => {
                    if self.changed.wait_until(&mut table, deadline).timed_out() {
                        return match table.state(id) {
                            Some(State::Pending) | None => None,
                            Some(state) => Some(state.clone()),
                        };
                    }
                }
            }
        }
    }

    /// Waits (async) until `id` is no longer pending.
    pub(crate) async fn wait_async(&self, id: ObjectId) -> State {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.state(id) {
                None => {
                    return State::Failed(TaskError::ObjectLost {
                        object: id.to_string(),
                        reason: "no reference to it is held here".into(),
                    })
                }
                Some(State::Pending) => notified.await,
                Some(state) => return state,
            }
        }
    }

    /// Blocks until `done` holds of the table or the deadline passes; returns whether it holds.
    /// `done` is checked under the table's lock, so no change between a check and the wait is
    /// missed.
    pub(crate) fn wait_for(
        &self,
        deadline: Option<Instant>,
        mut done: impl FnMut(&RefTable) -> bool,
    ) -> bool {
        let mut table = self.table.lock();
        loop {
            if done(&table) {
                return true;
            }
            match deadline {
                None => self.changed.wait(&mut table),
                Some(deadline) => {
                    if self.changed.wait_until(&mut table, deadline).timed_out() {
                        return done(&table);
                    }
                }
            }
        }
    }

    /// Counts for tests and stats: (owned, borrowed).
    pub(crate) fn counts(&self) -> (usize, usize) {
        self.table.lock().counts()
    }
}

/// An untyped handle that keeps an object alive (one `local` count).
pub struct RawRef {
    pub(crate) id: ObjectId,
    /// `None` when this process owns it.
    pub(crate) owner: Option<OwnerAddress>,
    /// The core worker whose table counts this handle: it lives while the handle does (a
    /// handle's drop is a count to give back). `None` for a ref made without a runtime.
    core: Option<Arc<CoreWorker>>,
}

impl std::fmt::Debug for RawRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawRef").field("id", &self.id).field("owner", &self.owner).finish()
    }
}

impl RawRef {
    /// A ref made without a runtime (`manta::init` was not called): every `get` of it fails
    /// with [`TaskError::NotInitialized`].
    pub(crate) fn uninitialized() -> Self {
        RawRef { id: ObjectId([0; 20]), owner: None, core: None }
    }

    /// Wraps an entry of `core`'s table whose count the caller already took.
    pub(crate) fn from_counted(core: &Arc<CoreWorker>, id: ObjectId, owner: Option<OwnerAddress>) -> Self {
        RawRef { id, owner, core: Some(core.clone()) }
    }

    /// The core worker that counts this handle.
    pub(crate) fn core(&self) -> Option<&Arc<CoreWorker>> {
        self.core.as_ref()
    }

    pub(crate) fn wire(&self) -> Option<RefWire> {
        let owner = match self.owner {
            Some(owner) => owner,
            None => self.core()?.owner_address,
        };
        Some(RefWire { id: self.id, owner })
    }
}

impl Clone for RawRef {
    fn clone(&self) -> Self {
        if let Some(core) = self.core() {
            core.objects.add_local(self.id);
        }
        RawRef { id: self.id, owner: self.owner, core: self.core.clone() }
    }
}

impl Drop for RawRef {
    fn drop(&mut self) {
        if let Some(core) = self.core() {
            core.clean_up(core.objects.release_local(self.id));
        }
    }
}

/// A reference to an object: the future result of a task or actor call, or a value `put` in
/// the object store. Cloning and dropping it drive Manta's distributed reference counting; the
/// object is freed when no reference to it is left anywhere.
///
/// `get()` blocks; `.await` waits asynchronously. Refs are `Serialize`: pass them to tasks and
/// actors (at the top level of an argument list they are resolved to their values first, as in
/// Ray; nested inside a value they stay refs).
pub struct ObjectRef<T> {
    pub(crate) raw: RawRef,
    _value: PhantomData<fn() -> T>,
}

impl<T> Clone for ObjectRef<T> {
    fn clone(&self) -> Self {
        ObjectRef { raw: self.raw.clone(), _value: PhantomData }
    }
}

impl<T> std::fmt::Debug for ObjectRef<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ObjectRef({})", self.raw.id)
    }
}

impl<T> PartialEq for ObjectRef<T> {
    fn eq(&self, other: &Self) -> bool {
        self.raw.id == other.raw.id
    }
}

impl<T> Eq for ObjectRef<T> {}

impl<T> std::hash::Hash for ObjectRef<T> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.raw.id.hash(state);
    }
}

impl<T> ObjectRef<T> {
    pub(crate) fn from_raw(raw: RawRef) -> Self {
        ObjectRef { raw, _value: PhantomData }
    }

    #[doc(hidden)]
    pub fn __from_raw(raw: RawRef) -> Self {
        ObjectRef::from_raw(raw)
    }

    /// The object's id, as hex.
    pub fn id(&self) -> String {
        self.raw.id.to_string()
    }

    /// The untyped handle.
    pub fn raw(&self) -> &RawRef {
        &self.raw
    }
}

impl<T: DeserializeOwned> ObjectRef<T> {
    /// Waits for the value. Blocks the calling thread (use `.await` in async code).
    pub fn get(&self) -> Result<T, TaskError> {
        let core = self.raw.core().ok_or(TaskError::NotInitialized)?;
        let state = core.wait_ready(&self.raw, None)?.expect("an unbounded wait returns a settled state");
        core.decode_blocking(self.raw.id, state)
    }

    /// Waits for the value at most `timeout`; [`TaskError::Timeout`] after that.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, TaskError> {
        let core = self.raw.core().ok_or(TaskError::NotInitialized)?;
        let state = core.wait_ready(&self.raw, Some(Instant::now() + timeout))?;
        core.decode_blocking(self.raw.id, state.ok_or(TaskError::Timeout(timeout))?)
    }

    /// Whether the value (or an error) is there, without waiting.
    pub fn is_ready(&self) -> bool {
        self.raw
            .core()
            .and_then(|core| {
                core.start_fetch_if_borrowed(&self.raw);
                core.objects.state(self.raw.id)
            })
            .is_some_and(|state| !matches!(state, State::Pending))
    }

    /// Waits asynchronously for the value (what `.await` does).
    pub async fn get_async(&self) -> Result<T, TaskError> {
        let core = self.raw.core().ok_or(TaskError::NotInitialized)?;
        core.start_fetch_if_borrowed(&self.raw);
        let state = core.objects.wait_async(self.raw.id).await;
        core.decode_async(self.raw.id, state).await
    }
}

impl<T: DeserializeOwned + Send + 'static> std::future::IntoFuture for ObjectRef<T> {
    type Output = Result<T, TaskError>;
    type IntoFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move { self.get_async().await })
    }
}

impl<'a, T: DeserializeOwned + Send + 'static> std::future::IntoFuture for &'a ObjectRef<T> {
    type Output = Result<T, TaskError>;
    type IntoFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Self::Output> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.get_async())
    }
}

impl<T> Serialize for ObjectRef<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let wire = self.raw.wire().ok_or_else(|| S::Error::custom("manta::init was not called"))?;
        if !codec::push_ref(wire.clone()) {
            return Err(S::Error::custom(
                "an ObjectRef can only be serialised by Manta (as part of a task argument or an object)",
            ));
        }
        wire.serialize(serializer)
    }
}

impl<'de, T> Deserialize<'de> for ObjectRef<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = RefWire::deserialize(deserializer)?;
        if !codec::decoding() {
            return Err(D::Error::custom("an ObjectRef can only be deserialised by Manta"));
        }
        let core = core::try_current().ok_or_else(|| D::Error::custom("manta::init was not called"))?;
        let raw = core.adopt(&wire);
        codec::record_decoded_ref(raw.clone());
        Ok(ObjectRef::from_raw(raw))
    }
}
