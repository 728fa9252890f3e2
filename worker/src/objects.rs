//! Objects as one process sees them: the table of objects it owns or borrows, with their
//! reference counts, and [`ObjectRef`], the RAII handle users hold.
//!
//! Ownership (Ray's model, see ARCHITECTURE.md "Ownership"): the process that creates a ref
//! (`remote()` or `put`) owns the object. It counts
//! - `local`: handles ([`RawRef`]s) alive in this process, including the ones a submitted task
//!   holds for its arguments until the task ends;
//! - `borrowers`: other processes that registered as borrowers, and objects that contain a ref to
//!   it (each containing object holds one borrow until it is freed).
//!
//! An owned object is freed when both counts are zero. A borrowed entry (owned elsewhere) is
//! dropped when its `local` count reaches zero, and then unregisters from the owner.
//!
//! Object lifecycle, as the owner sees it (asserted in [`ObjectTable::complete`]):
//!
//! ```text
//! Pending --> Ready(value) --> freed
//!    |
//!    +-----> Failed(error) --> freed
//! ```

use std::collections::HashMap;
use std::marker::PhantomData;
use std::time::{Duration, Instant};

use bytes::Bytes;
use manta_objectstore::{ObjectId, ObjectLocation};
use manta_proto::OwnerAddress;
use parking_lot::{Condvar, Mutex};
use serde::de::{DeserializeOwned, Error as _};
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::codec;
use crate::core;
use crate::error::TaskError;

pub use manta_proto::worker::RefWire;

/// Where a ready object's bytes are.
#[derive(Debug, Clone)]
pub(crate) enum Value {
    /// In this process's memory (small objects, or fetched copies).
    Inline(Bytes),
    /// In the node's shared-memory store.
    Shared(ObjectLocation),
}

#[derive(Debug, Clone)]
pub(crate) enum State {
    Pending,
    Ready(Value),
    Failed(TaskError),
}

/// Something to do when an owned object is freed.
#[derive(Debug, Clone)]
pub(crate) enum FreeHook {
    /// The object stands for an actor's handles: kill the actor (Ray kills a non-detached
    /// actor once every handle to it is gone).
    KillActor(manta_gcs::ActorId),
}

#[derive(Debug)]
struct Entry {
    /// `None`: owned by this process.
    owner: Option<OwnerAddress>,
    local: u32,
    borrowers: u32,
    /// Borrowed entries: whether this process registered with the owner.
    registered: bool,
    /// Borrowed entries: whether a fetch from the owner is under way.
    fetching: bool,
    state: State,
    /// Refs inside the value, each holding one borrow at its owner while this entry lives.
    contains: Vec<RefWire>,
    on_free: Option<FreeHook>,
}

/// What must happen after an entry is removed (done outside the table's lock).
#[derive(Debug)]
pub(crate) struct Freed {
    pub(crate) id: ObjectId,
    /// Owned: the value to delete from the store, refs to release, hook to run.
    pub(crate) shared: Option<ObjectLocation>,
    pub(crate) contains: Vec<RefWire>,
    pub(crate) on_free: Option<FreeHook>,
    /// Borrowed and registered: the owner to unregister from.
    pub(crate) unregister_from: Option<OwnerAddress>,
}

impl Freed {
    /// What a value nobody owns any more holds: its store copy and the borrows of its refs.
    pub(crate) fn orphan(id: ObjectId, value: Value, contains: Vec<RefWire>) -> Freed {
        Freed {
            id,
            shared: match value {
                Value::Shared(location) => Some(location),
                Value::Inline(_) => None,
            },
            contains,
            on_free: None,
            unregister_from: None,
        }
    }
}

/// Every object this process owns or borrows.
#[derive(Debug, Default)]
pub(crate) struct ObjectTable {
    entries: Mutex<HashMap<ObjectId, Entry>>,
    changed: Condvar,
    notify: tokio::sync::Notify,
}

impl ObjectTable {
    /// A new owned object with one local handle.
    pub(crate) fn create_owned(&self, id: ObjectId, state: State, contains: Vec<RefWire>) {
        let entry = Entry {
            owner: None,
            local: 1,
            borrowers: 0,
            registered: false,
            fetching: false,
            state,
            contains,
            on_free: None,
        };
        let previous = self.entries.lock().insert(id, entry);
        assert!(previous.is_none(), "object ids are unique: {id} created twice");
    }

    pub(crate) fn set_on_free(&self, id: ObjectId, hook: FreeHook) {
        if let Some(entry) = self.entries.lock().get_mut(&id) {
            entry.on_free = Some(hook);
        }
    }

    /// An owned object's task finished. If every ref was dropped meanwhile, returns what to
    /// clean up (the value is nobody's).
    pub(crate) fn complete(
        &self,
        id: ObjectId,
        outcome: Result<(Value, Vec<RefWire>), TaskError>,
    ) -> Option<Freed> {
        let mut entries = self.entries.lock();
        let leftover = match entries.get_mut(&id) {
            Some(entry) if matches!(entry.state, State::Pending) => {
                match outcome {
                    Ok((value, contains)) => {
                        entry.state = State::Ready(value);
                        entry.contains = contains;
                    }
                    Err(error) => entry.state = State::Failed(error),
                }
                None
            }
            settled => {
                // Completing an object twice is a bug; in a release build the late outcome is
                // dropped (and its value released) rather than taking the process down.
                debug_assert!(settled.is_none(), "object lifecycle: {id} completed twice (was {settled:?})");
                outcome.ok().map(|(value, contains)| Freed::orphan(id, value, contains))
            }
        };
        drop(entries);
        self.wake();
        leftover
    }

    /// A borrowed object's value arrived from its owner.
    pub(crate) fn fetched(&self, id: ObjectId, state: State) {
        if let Some(entry) = self.entries.lock().get_mut(&id) {
            entry.fetching = false;
            if matches!(entry.state, State::Pending) {
                entry.state = state;
            }
        }
        self.wake();
    }

    fn wake(&self) {
        self.changed.notify_all();
        self.notify.notify_waiters();
    }

    pub(crate) fn add_local(&self, id: ObjectId) {
        if let Some(entry) = self.entries.lock().get_mut(&id) {
            entry.local += 1;
        }
    }

    pub(crate) fn release_local(&self, id: ObjectId) -> Option<Freed> {
        let mut entries = self.entries.lock();
        let entry = entries.get_mut(&id)?;
        entry.local = entry.local.saturating_sub(1);
        Self::free_if_unused(&mut entries, id)
    }

    /// Another process (or an object) borrows an owned object. `false` if it is gone.
    pub(crate) fn add_borrower(&self, id: ObjectId) -> bool {
        match self.entries.lock().get_mut(&id) {
            Some(entry) if entry.owner.is_none() => {
                entry.borrowers += 1;
                true
            }
            _ => false,
        }
    }

    pub(crate) fn remove_borrower(&self, id: ObjectId) -> Option<Freed> {
        let mut entries = self.entries.lock();
        let entry = entries.get_mut(&id)?;
        entry.borrowers = entry.borrowers.saturating_sub(1);
        Self::free_if_unused(&mut entries, id)
    }

    fn free_if_unused(entries: &mut HashMap<ObjectId, Entry>, id: ObjectId) -> Option<Freed> {
        let entry = entries.get(&id)?;
        if entry.local > 0 || entry.borrowers > 0 {
            return None;
        }
        let entry = entries.remove(&id).expect("just looked up");
        Some(match entry.owner {
            None => Freed {
                id,
                shared: match entry.state {
                    State::Ready(Value::Shared(location)) => Some(location),
                    _ => None,
                },
                contains: entry.contains,
                on_free: entry.on_free,
                unregister_from: None,
            },
            Some(owner) => Freed {
                id,
                shared: None,
                contains: Vec::new(),
                on_free: None,
                unregister_from: entry.registered.then_some(owner),
            },
        })
    }

    /// A ref arrived inside a value. Returns whether this process now borrows it for the first
    /// time (the caller must register it with the owner).
    pub(crate) fn adopt(&self, id: ObjectId, owner: Option<OwnerAddress>) -> bool {
        let mut entries = self.entries.lock();
        if let Some(entry) = entries.get_mut(&id) {
            entry.local += 1;
            return false;
        }
        let state = match owner {
            Some(_) => State::Pending,
            // Our own object, already freed: the ref outlived the object (a protocol error).
            None => State::Failed(TaskError::ObjectLost {
                object: id.to_string(),
                reason: "its owner had already freed it".into(),
            }),
        };
        let new_borrow = owner.is_some();
        entries.insert(
            id,
            Entry {
                owner,
                local: 1,
                borrowers: 0,
                registered: false,
                fetching: false,
                state,
                contains: Vec::new(),
                on_free: None,
            },
        );
        new_borrow
    }

    /// Marks a borrowed entry registered; `false` if it is gone (the caller unregisters).
    pub(crate) fn registered(&self, id: ObjectId) -> bool {
        match self.entries.lock().get_mut(&id) {
            Some(entry) => {
                entry.registered = true;
                true
            }
            None => false,
        }
    }

    /// Borrowed entries of `ids` not yet registered with their owners.
    pub(crate) fn unregistered(&self, ids: &[ObjectId]) -> Vec<(ObjectId, OwnerAddress)> {
        let entries = self.entries.lock();
        ids.iter()
            .filter_map(|id| {
                let entry = entries.get(id)?;
                match &entry.owner {
                    Some(owner) if !entry.registered => Some((*id, *owner)),
                    _ => None,
                }
            })
            .collect()
    }

    pub(crate) fn state(&self, id: ObjectId) -> Option<State> {
        self.entries.lock().get(&id).map(|entry| entry.state.clone())
    }

    /// For a borrowed pending entry not being fetched: marks it fetching and returns its owner.
    pub(crate) fn start_fetch(&self, id: ObjectId) -> Option<OwnerAddress> {
        let mut entries = self.entries.lock();
        let entry = entries.get_mut(&id)?;
        if entry.fetching || !matches!(entry.state, State::Pending) {
            return None;
        }
        let owner = entry.owner?;
        entry.fetching = true;
        Some(owner)
    }

    /// Blocks until `id` is no longer pending, or the deadline passes (`None` then).
    pub(crate) fn wait_blocking(&self, id: ObjectId, deadline: Option<Instant>) -> Option<State> {
        let mut entries = self.entries.lock();
        loop {
            match entries.get(&id).map(|entry| &entry.state) {
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
                None => self.changed.wait(&mut entries),
                Some(deadline) => {
                    if self.changed.wait_until(&mut entries, deadline).timed_out() {
                        let state = entries.get(&id).map(|entry| entry.state.clone());
                        return match state {
                            Some(State::Pending) | None => None,
                            other => other,
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

    /// Waits (blocking) until any state changes or the deadline passes.
    pub(crate) fn wait_any_change(&self, deadline: Option<Instant>) {
        let mut entries = self.entries.lock();
        match deadline {
            None => self.changed.wait(&mut entries),
            Some(deadline) => {
                let _ = self.changed.wait_until(&mut entries, deadline);
            }
        }
    }

    /// Counts for tests and stats: (owned, borrowed).
    pub(crate) fn counts(&self) -> (usize, usize) {
        let entries = self.entries.lock();
        let owned = entries.values().filter(|entry| entry.owner.is_none()).count();
        (owned, entries.len() - owned)
    }
}

/// An untyped handle that keeps an object alive (one `local` count).
#[derive(Debug)]
pub struct RawRef {
    pub(crate) id: ObjectId,
    /// `None` when this process owns it.
    pub(crate) owner: Option<OwnerAddress>,
}

impl RawRef {
    /// A ref made without a runtime (`manta::init` was not called): every `get` of it fails
    /// with [`TaskError::NotInitialized`].
    pub(crate) fn uninitialized() -> Self {
        RawRef { id: ObjectId([0; 20]), owner: None }
    }

    /// Wraps an entry whose count the caller already took.
    pub(crate) fn from_counted(id: ObjectId, owner: Option<OwnerAddress>) -> Self {
        RawRef { id, owner }
    }

    pub(crate) fn wire(&self) -> Option<RefWire> {
        let owner = match self.owner {
            Some(owner) => owner,
            None => core::try_get()?.owner_address,
        };
        Some(RefWire { id: self.id, owner })
    }
}

impl Clone for RawRef {
    fn clone(&self) -> Self {
        if let Some(core) = core::try_get() {
            core.objects.add_local(self.id);
        }
        RawRef { id: self.id, owner: self.owner }
    }
}

impl Drop for RawRef {
    fn drop(&mut self) {
        if let Some(core) = core::try_get() {
            if let Some(freed) = core.objects.release_local(self.id) {
                core.clean_up(freed);
            }
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
        let core = core::get()?;
        let state = core.wait_ready(&self.raw, None)?.expect("an unbounded wait returns a settled state");
        core.decode_blocking(self.raw.id, state)
    }

    /// Waits for the value at most `timeout`; [`TaskError::Timeout`] after that.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, TaskError> {
        let core = core::get()?;
        let state = core.wait_ready(&self.raw, Some(Instant::now() + timeout))?;
        core.decode_blocking(self.raw.id, state.ok_or(TaskError::Timeout(timeout))?)
    }

    /// Whether the value (or an error) is there, without waiting.
    pub fn is_ready(&self) -> bool {
        core::try_get()
            .and_then(|core| {
                core.start_fetch_if_borrowed(&self.raw);
                core.objects.state(self.raw.id)
            })
            .is_some_and(|state| !matches!(state, State::Pending))
    }

    /// Waits asynchronously for the value (what `.await` does).
    pub async fn get_async(&self) -> Result<T, TaskError> {
        let core = core::get()?;
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
        let core = core::try_get().ok_or_else(|| D::Error::custom("manta::init was not called"))?;
        let raw = core.adopt(&wire);
        codec::record_decoded_ref(raw.clone());
        Ok(ObjectRef::from_raw(raw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        AddLocal(usize),
        ReleaseLocal(usize),
        AddBorrower(usize),
        RemoveBorrower(usize),
        Complete(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..4usize).prop_map(Op::AddLocal),
            (0..4usize).prop_map(Op::ReleaseLocal),
            (0..4usize).prop_map(Op::AddBorrower),
            (0..4usize).prop_map(Op::RemoveBorrower),
            (0..4usize).prop_map(Op::Complete),
        ]
    }

    fn id(index: usize) -> ObjectId {
        let mut bytes = [0u8; 20];
        bytes[19] = index as u8;
        ObjectId(bytes)
    }

    proptest! {
        /// Against a model of the counts: an owned object is freed exactly once, exactly when its
        /// last local handle and last borrow are gone, and a freed object takes no new count.
        #[test]
        fn owned_objects_are_freed_once_when_the_last_reference_goes(ops in proptest::collection::vec(op(), 0..200)) {
            let table = ObjectTable::default();
            // Model: (local, borrowers, pending, alive) per object; each starts with one handle.
            let mut model = [(1u32, 0u32, true, true); 4];
            for index in 0..4 {
                table.create_owned(id(index), State::Pending, Vec::new());
            }
            for op in ops {
                match op {
                    Op::AddLocal(index) => {
                        // A handle can only be cloned from a live one.
                        if model[index].3 && model[index].0 > 0 {
                            table.add_local(id(index));
                            model[index].0 += 1;
                        }
                    }
                    Op::ReleaseLocal(index) => {
                        if model[index].3 && model[index].0 > 0 {
                            let freed = table.release_local(id(index));
                            model[index].0 -= 1;
                            let now_free = model[index].0 == 0 && model[index].1 == 0;
                            prop_assert_eq!(freed.is_some(), now_free);
                            if now_free { model[index].3 = false; }
                        }
                    }
                    Op::AddBorrower(index) => {
                        prop_assert_eq!(table.add_borrower(id(index)), model[index].3);
                        if model[index].3 { model[index].1 += 1; }
                    }
                    Op::RemoveBorrower(index) => {
                        if model[index].3 && model[index].1 > 0 {
                            let freed = table.remove_borrower(id(index));
                            model[index].1 -= 1;
                            let now_free = model[index].0 == 0 && model[index].1 == 0;
                            prop_assert_eq!(freed.is_some(), now_free);
                            if now_free { model[index].3 = false; }
                        }
                    }
                    Op::Complete(index) => {
                        if model[index].2 {
                            let leftover = table.complete(id(index), Ok((Value::Inline(Bytes::from_static(b"v")), Vec::new())));
                            // A completion nobody waits for any more is handed back for cleanup.
                            prop_assert_eq!(leftover.is_some(), !model[index].3);
                            model[index].2 = false;
                        }
                    }
                }
                let alive = model.iter().filter(|entry| entry.3).count();
                prop_assert_eq!(table.counts(), (alive, 0));
            }
        }
    }

    #[test]
    fn a_borrowed_entry_unregisters_only_if_it_registered() {
        let table = ObjectTable::default();
        let owner: OwnerAddress = "127.0.0.1:1".parse().unwrap();
        assert!(table.adopt(id(1), Some(owner)), "first sight of a borrowed ref");
        assert!(!table.adopt(id(1), Some(owner)), "second sight only counts");
        assert_eq!(table.unregistered(&[id(1)]).len(), 1);
        assert!(table.registered(id(1)));
        assert!(table.release_local(id(1)).is_none());
        let freed = table.release_local(id(1)).unwrap();
        assert_eq!(freed.unregister_from, Some(owner));
        // Never registered: nothing to tell the owner.
        table.adopt(id(2), Some(owner));
        assert!(table.release_local(id(2)).unwrap().unregister_from.is_none());
    }
}
