//! Ownership and borrowing as a state machine (Ray's `ReferenceCounter`): the objects one
//! process owns or borrows, with their counts; events in (a handle cloned or dropped, a task's
//! outcome, a borrower added or removed, a ref arriving inside a value), commands out (delete
//! a stored copy, tell an owner a borrow ended, run a hook). No lock, no clock, no socket: the
//! shell in `objects.rs` wraps it in a lock with the waiters, and performs the commands.
//!
//! The counts of an entry (see ARCHITECTURE.md "Ownership"):
//! - `local`: handles alive in this process (including those a submitted task holds for its
//!   arguments until it ends);
//! - `borrowers` (owned entries): other processes registered as borrowers, and objects that
//!   contain a ref to it (each holds one borrow until it is freed), counted per *holder*: the
//!   process the borrow is held for (the borrower; the owner of the containing object).
//!
//! An owned entry is freed when both are zero; a borrowed one when `local` is zero, and then
//! it unregisters from its owner if it had registered. A count never goes below zero: a
//! release with nothing to release is an error ([`RefError`]), and changes nothing. A holder
//! that dies gives back every borrow held for it ([`RefTable::holder_died`]): the table asks
//! the shell to watch each other process that holds a borrow ([`RefCommand::WatchHolder`]).

use std::collections::HashMap;

use bytes::Bytes;
use manta_objectstore::{ObjectId, ObjectLocation};
use manta_proto::OwnerAddress;

use crate::error::TaskError;
use manta_proto::worker::RefWire;

/// Where a ready object's bytes are.
#[derive(Debug, Clone)]
pub enum Value {
    /// In this process's memory (small objects, or fetched copies).
    Inline(Bytes),
    /// In this node's shared-memory store.
    Shared(ObjectLocation),
    /// In another node's store: pulled into this node's before it is read.
    Remote(manta_proto::worker::NodeLocation),
}

impl Value {
    /// The stored copy a freed object's owner deletes: `Some(None)` in this node's store,
    /// `Some(Some(at))` in another's, `None` for an inline value.
    fn stored(&self) -> Option<Option<manta_proto::worker::NodeLocation>> {
        match self {
            Value::Inline(_) => None,
            Value::Shared(_) => Some(None),
            Value::Remote(at) => Some(Some(*at)),
        }
    }
}

/// An object's state as this process knows it.
#[derive(Debug, Clone)]
pub enum State {
    /// Its task has not finished (owned), or its value has not arrived (borrowed).
    Pending,
    /// Its value.
    Ready(Value),
    /// Why there is no value.
    Failed(TaskError),
}

/// Something to do when an owned object is freed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FreeHook {
    /// The object stands for an actor's handles: kill the actor (Ray kills a non-detached
    /// actor once every handle to it is gone).
    KillActor(manta_proto::ActorId),
}

/// What the shell must do.
#[derive(Debug, Clone)]
pub enum RefCommand {
    /// Delete an object's stored copy (and every copy pulled to other nodes).
    DeleteStored {
        /// The object.
        id: ObjectId,
        /// Where its primary copy is: this node's store (`None`), or another node's.
        at: Option<manta_proto::worker::NodeLocation>,
    },
    /// Tell `owner` that one borrow of `id` held here ended (this process's registration, or
    /// an object here that contained the ref).
    RemoveBorrow {
        /// The object.
        id: ObjectId,
        /// Its owner.
        owner: OwnerAddress,
    },
    /// Run a freed object's hook.
    Hook(FreeHook),
    /// Watch `holder`, a process that now holds borrows of objects owned here, and call
    /// [`RefTable::holder_died`] when it dies (or [`RefTable::holder_alive`] now and then).
    WatchHolder {
        /// The process.
        holder: OwnerAddress,
    },
}

/// A count asked to go below zero, or an entry that is not there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefError {
    /// No entry for the object (already freed, or never known here).
    #[error("object {0} is not known here")]
    Unknown(ObjectId),
    /// A borrow released that was never added (a peer's duplicate or stray message).
    #[error("object {0} has no borrower to remove")]
    NotBorrowed(ObjectId),
    /// A handle released that was never taken.
    #[error("object {0} has no handle to release")]
    NoHandle(ObjectId),
}

/// Hashes object ids in a few instructions: an id is already a random per-process prefix and a
/// counter, so mixing its words (FxHash's step, then a finaliser) with a random per-table key
/// spreads them. SipHash cost several percent of a `put`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IdHashing(u64);

impl Default for IdHashing {
    fn default() -> Self {
        IdHashing(std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), 0u64))
    }
}

impl std::hash::BuildHasher for IdHashing {
    type Hasher = IdHasher;

    fn build_hasher(&self) -> IdHasher {
        IdHasher(self.0)
    }
}

/// See [`IdHashing`].
#[derive(Debug)]
pub(crate) struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(0x517c_c1b7_2722_0a95);
        }
    }

    fn finish(&self) -> u64 {
        // The multiplications carry low bits up, never down, and the table indexes by the low
        // bits: fold the high half in (MurmurHash3's finaliser).
        let mut hash = self.0;
        hash ^= hash >> 33;
        hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
        hash ^ (hash >> 33)
    }
}

#[derive(Debug)]
struct Entry {
    /// `None`: owned by this process.
    owner: Option<OwnerAddress>,
    local: u32,
    /// The borrows, in all (owned entries).
    borrowers: u32,
    /// The borrows per holder (owned entries); they sum to `borrowers`.
    holders: Vec<(OwnerAddress, u32)>,
    /// Borrowed entries: whether this process registered with the owner.
    registered: bool,
    /// Borrowed entries: whether a fetch from the owner is under way.
    fetching: bool,
    state: State,
    /// Refs inside the value, each holding one borrow at its owner while this entry lives.
    contains: Vec<RefWire>,
    on_free: Option<FreeHook>,
}

/// The values a streaming task has sent so far, as its owner keeps them until the consumer
/// takes them.
#[derive(Debug, Default)]
struct Stream {
    /// Values received: indices `0..received`.
    received: u64,
    /// Values taken by the consumer.
    taken: u64,
    /// Values received and not taken at most before the producer waits (`None`: no limit).
    window: Option<u64>,
    /// Received, not taken yet; each holds one local count.
    ready: std::collections::VecDeque<ObjectId>,
}

/// What the producer of a stream is told about the value it sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamAck {
    /// Go on.
    Now,
    /// Wait: the consumer is `window` values behind (answer once [`RefTable::stream_has_room`]).
    Later,
    /// Stop: nobody reads the stream any more.
    Stop,
}

/// What a stream's consumer finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamNext {
    /// The next value (taken: its one local count is the consumer's).
    Item(ObjectId),
    /// Nothing yet, and the task goes on.
    Pending,
    /// The task ended and every value was taken.
    Ended,
    /// The task failed after the values taken (its own object holds the error).
    Failed,
}

/// Every object one process owns or borrows.
#[derive(Debug)]
pub struct RefTable {
    /// This process's address as owners are named: refs with it are owned here.
    own: OwnerAddress,
    entries: HashMap<ObjectId, Entry, IdHashing>,
    commands: Vec<RefCommand>,
    /// The other processes watched as holders of borrows.
    watched: std::collections::HashSet<OwnerAddress>,
    /// The borrows held for each other process, in all.
    held_for: HashMap<OwnerAddress, u64>,
    /// The streams of this process's streaming tasks, by task.
    streams: HashMap<ObjectId, Stream, IdHashing>,
}

impl RefTable {
    /// An empty table of the process at `own`.
    pub fn new(own: OwnerAddress) -> RefTable {
        RefTable {
            own,
            entries: HashMap::default(),
            commands: Vec::new(),
            watched: Default::default(),
            held_for: HashMap::new(),
            streams: HashMap::default(),
        }
    }

    /// The commands to perform, oldest first.
    pub fn take_commands(&mut self) -> Vec<RefCommand> {
        std::mem::take(&mut self.commands)
    }

    /// A new owned object with one local handle. An id already here is a bug of the caller
    /// (ids are unique); the old entry is kept and `false` returned.
    pub fn create_owned(&mut self, id: ObjectId, state: State, contains: Vec<RefWire>) -> bool {
        if self.entries.contains_key(&id) {
            debug_assert!(false, "object ids are unique: {id} created twice");
            return false;
        }
        let entry = Entry {
            owner: None,
            local: 1,
            borrowers: 0,
            holders: Vec::new(),
            registered: false,
            fetching: false,
            state,
            contains,
            on_free: None,
        };
        self.entries.insert(id, entry);
        true
    }

    /// Sets what to do when the owned object `id` is freed.
    pub fn set_on_free(&mut self, id: ObjectId, hook: FreeHook) {
        if let Some(entry) = self.entries.get_mut(&id) {
            entry.on_free = Some(hook);
        }
    }

    /// An owned object's task finished. If every ref was dropped meanwhile, or it was already
    /// settled, the value is nobody's: what it holds is released.
    pub fn complete(&mut self, id: ObjectId, outcome: Result<(Value, Vec<RefWire>), TaskError>) {
        match self.entries.get_mut(&id) {
            Some(entry) if matches!(entry.state, State::Pending) => match outcome {
                Ok((value, contains)) => {
                    entry.state = State::Ready(value);
                    entry.contains = contains;
                }
                Err(error) => entry.state = State::Failed(error),
            },
            settled => {
                // Completing an object twice is a bug (a freed one's task may still finish); in a
                // release build the late outcome is dropped (and its value released) rather
                // than taking the process down.
                let freed = settled
                    .as_ref()
                    .is_some_and(|entry| matches!(entry.state, State::Failed(TaskError::ObjectFreed { .. })));
                debug_assert!(
                    settled.is_none() || freed,
                    "object lifecycle: {id} completed twice (was {settled:?})"
                );
                if let Ok((value, contains)) = outcome {
                    self.discard(id, value, contains);
                }
            }
        }
    }

    /// A value nobody owns any more (a late or duplicate result): its store copy and the
    /// borrows its refs hold are released.
    pub fn discard(&mut self, id: ObjectId, value: Value, contains: Vec<RefWire>) {
        if let Some(at) = value.stored() {
            self.commands.push(RefCommand::DeleteStored { id, at });
        }
        self.release_contained(contains);
    }

    /// A borrowed object's value (or the failure to get it) arrived from its owner.
    pub fn fetched(&mut self, id: ObjectId, state: State) {
        if let Some(entry) = self.entries.get_mut(&id) {
            entry.fetching = false;
            if matches!(entry.state, State::Pending) {
                entry.state = state;
            }
        }
    }

    /// A handle was cloned.
    pub fn add_local(&mut self, id: ObjectId) -> Result<(), RefError> {
        let entry = self.entries.get_mut(&id).ok_or(RefError::Unknown(id))?;
        entry.local += 1;
        Ok(())
    }

    /// A handle was dropped.
    pub fn release_local(&mut self, id: ObjectId) -> Result<(), RefError> {
        let entry = self.entries.get_mut(&id).ok_or(RefError::Unknown(id))?;
        entry.local = entry.local.checked_sub(1).ok_or(RefError::NoHandle(id))?;
        self.free_if_unused(id);
        Ok(())
    }

    /// Another process (or an object) borrows an owned object, held for `holder`. `false` if
    /// it is gone, or not owned here.
    pub fn add_borrower(&mut self, id: ObjectId, holder: OwnerAddress) -> bool {
        match self.entries.get_mut(&id) {
            Some(entry) if entry.owner.is_none() => {
                entry.borrowers += 1;
                match entry.holders.iter_mut().find(|(known, _)| *known == holder) {
                    Some((_, count)) => *count += 1,
                    None => entry.holders.push((holder, 1)),
                }
                if holder != self.own {
                    *self.held_for.entry(holder).or_default() += 1;
                    if self.watched.insert(holder) {
                        self.commands.push(RefCommand::WatchHolder { holder });
                    }
                }
                true
            }
            _ => false,
        }
    }

    /// A borrow of an owned object held for `holder` ended.
    pub fn remove_borrower(&mut self, id: ObjectId, holder: OwnerAddress) -> Result<(), RefError> {
        let entry = self.entries.get_mut(&id).ok_or(RefError::Unknown(id))?;
        if entry.owner.is_some() {
            return Err(RefError::Unknown(id));
        }
        let index =
            entry.holders.iter().position(|(known, _)| *known == holder).ok_or(RefError::NotBorrowed(id))?;
        entry.holders[index].1 -= 1;
        if entry.holders[index].1 == 0 {
            entry.holders.swap_remove(index);
        }
        entry.borrowers -= 1;
        if let Some(held) = self.held_for.get_mut(&holder) {
            *held -= 1;
        }
        self.free_if_unused(id);
        Ok(())
    }

    /// `holder` died: every borrow held for it ends (Ray releases a dead borrower's refs).
    pub fn holder_died(&mut self, holder: OwnerAddress) {
        self.watched.remove(&holder);
        if self.held_for.remove(&holder).unwrap_or(0) == 0 {
            return;
        }
        let mut released = Vec::new();
        for (id, entry) in &mut self.entries {
            if let Some(index) = entry.holders.iter().position(|(known, _)| *known == holder) {
                let (_, count) = entry.holders.swap_remove(index);
                entry.borrowers -= count;
                released.push(*id);
            }
        }
        for id in released {
            self.free_if_unused(id);
        }
    }

    /// `holder` is alive: whether to go on watching it (it still holds a borrow here).
    pub fn holder_alive(&mut self, holder: OwnerAddress) -> bool {
        let holds = self.held_for.get(&holder).is_some_and(|held| *held > 0);
        if !holds {
            self.watched.remove(&holder);
            self.held_for.remove(&holder);
        }
        holds
    }

    /// Frees `id`'s value now, whoever still refers to it (Ray's `ray.internal.free`): an owned
    /// object's stored copy is deleted and every later `get` fails with
    /// [`TaskError::ObjectFreed`]; the entry and its counts stay until its refs go. For a
    /// borrowed object, the owner to ask (`Ok(Some(owner))`); the local copy is dropped too.
    pub fn free(&mut self, id: ObjectId) -> Result<Option<OwnerAddress>, RefError> {
        let entry = self.entries.get_mut(&id).ok_or(RefError::Unknown(id))?;
        let freed = State::Failed(TaskError::ObjectFreed { object: id.to_string() });
        match entry.owner {
            None => {
                if let State::Ready(value) = &entry.state {
                    if let Some(at) = value.stored() {
                        self.commands.push(RefCommand::DeleteStored { id, at });
                    }
                }
                // A task still running finishes into a freed object: its value is dropped.
                entry.state = freed;
                Ok(None)
            }
            Some(owner) => {
                if !matches!(entry.state, State::Pending) {
                    entry.state = freed;
                }
                Ok(Some(owner))
            }
        }
    }

    fn free_if_unused(&mut self, id: ObjectId) {
        let Some(entry) = self.entries.get(&id) else { return };
        if entry.local > 0 || entry.borrowers > 0 {
            return;
        }
        let Some(entry) = self.entries.remove(&id) else { return };
        match entry.owner {
            None => {
                if let State::Ready(value) = &entry.state {
                    if let Some(at) = value.stored() {
                        self.commands.push(RefCommand::DeleteStored { id, at });
                    }
                }
                self.release_contained(entry.contains);
                if let Some(hook) = entry.on_free {
                    self.commands.push(RefCommand::Hook(hook));
                }
            }
            Some(owner) if entry.registered => self.commands.push(RefCommand::RemoveBorrow { id, owner }),
            Some(_) => {}
        }
    }

    /// Ends the borrows a freed value's refs held: locally for the refs owned here, by a
    /// message to their owners for the others.
    fn release_contained(&mut self, contains: Vec<RefWire>) {
        for wire in contains {
            if wire.owner == self.own {
                // Owned here: its count is ours to lower (an error only if it was freed
                // already, which the property tests rule out).
                let own = self.own;
                let _ = self.remove_borrower(wire.id, own);
            } else {
                self.commands.push(RefCommand::RemoveBorrow { id: wire.id, owner: wire.owner });
            }
        }
    }

    /// Opens the stream of streaming task `task` (owned here): at most `window` values
    /// received and not yet taken before the producer waits.
    pub fn open_stream(&mut self, task: ObjectId, window: Option<u64>) {
        self.streams.insert(task, Stream { window, ..Stream::default() });
    }

    /// Value `index` of `task`'s stream arrived, to be owned here as `task.following(1 +
    /// index)`. A value sent again (a retried task starts over) or to a closed stream is
    /// released.
    pub fn stream_item(
        &mut self,
        task: ObjectId,
        index: u64,
        value: Value,
        contains: Vec<RefWire>,
    ) -> StreamAck {
        let Some(stream) = self.streams.get_mut(&task) else {
            self.discard(task.following(1 + index), value, contains);
            return StreamAck::Stop;
        };
        if index != stream.received {
            // Received already (or, out of protocol, ahead of a value not received).
            let ack = if index < stream.received { StreamAck::Now } else { StreamAck::Stop };
            self.discard(task.following(1 + index), value, contains);
            return ack;
        }
        let id = task.following(1 + index);
        stream.received += 1;
        stream.ready.push_back(id);
        let full = stream.window.is_some_and(|window| stream.received - stream.taken >= window);
        self.create_owned(id, State::Ready(value), contains);
        if full {
            StreamAck::Later
        } else {
            StreamAck::Now
        }
    }

    /// The consumer's next value of `task`'s stream, taken; or why there is none.
    pub fn take_stream_item(&mut self, task: ObjectId) -> StreamNext {
        let next = self.peek_stream(task);
        if let (StreamNext::Item(_), Some(stream)) = (next, self.streams.get_mut(&task)) {
            stream.ready.pop_front();
            stream.taken += 1;
        }
        next
    }

    /// What [`Self::take_stream_item`] would give, without taking it.
    pub fn peek_stream(&self, task: ObjectId) -> StreamNext {
        if let Some(id) = self.streams.get(&task).and_then(|stream| stream.ready.front()) {
            return StreamNext::Item(*id);
        }
        match self.state(task) {
            Some(State::Pending) => StreamNext::Pending,
            Some(State::Ready(_)) => StreamNext::Ended,
            Some(State::Failed(_)) | None => StreamNext::Failed,
        }
    }

    /// Whether `task`'s producer may go on (the consumer is less than a window behind).
    pub fn stream_has_room(&self, task: ObjectId) -> bool {
        self.streams
            .get(&task)
            .is_some_and(|stream| stream.window.is_none_or(|window| stream.received - stream.taken < window))
    }

    /// The consumer is gone: the values it did not take are released, and later ones are
    /// refused.
    pub fn close_stream(&mut self, task: ObjectId) {
        let Some(stream) = self.streams.remove(&task) else { return };
        for id in stream.ready {
            let _ = self.release_local(id);
        }
    }

    /// A ref arrived inside a value: one more handle. Returns whether this process now borrows
    /// it for the first time (the caller registers it with the owner, then calls
    /// [`Self::registered`]).
    pub fn adopt(&mut self, id: ObjectId, owner: Option<OwnerAddress>) -> bool {
        if let Some(entry) = self.entries.get_mut(&id) {
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
        self.entries.insert(
            id,
            Entry {
                owner,
                local: 1,
                borrowers: 0,
                holders: Vec::new(),
                registered: false,
                fetching: false,
                state,
                contains: Vec::new(),
                on_free: None,
            },
        );
        owner.is_some()
    }

    /// The owner counted this process as a borrower of `id`. If the entry is gone meanwhile
    /// (every handle dropped before the owner answered), the borrow is given back at once.
    pub fn registered(&mut self, id: ObjectId, owner: OwnerAddress) {
        match self.entries.get_mut(&id) {
            Some(entry) if entry.owner.is_some() && !entry.registered => entry.registered = true,
            _ => self.commands.push(RefCommand::RemoveBorrow { id, owner }),
        }
    }

    /// Borrowed entries among `ids` not yet registered with their owners.
    pub fn unregistered(&self, ids: &[ObjectId]) -> Vec<(ObjectId, OwnerAddress)> {
        ids.iter()
            .filter_map(|id| {
                let entry = self.entries.get(id)?;
                match &entry.owner {
                    Some(owner) if !entry.registered => Some((*id, *owner)),
                    _ => None,
                }
            })
            .collect()
    }

    /// The state of `id`, if it is here.
    pub fn state(&self, id: ObjectId) -> Option<&State> {
        self.entries.get(&id).map(|entry| &entry.state)
    }

    /// Who owns `id` (this process included), if it is here.
    pub fn owner(&self, id: ObjectId) -> Option<OwnerAddress> {
        self.entries.get(&id).map(|entry| entry.owner.unwrap_or(self.own))
    }

    /// For a borrowed pending entry not being fetched: marks it fetching and returns its owner.
    pub fn start_fetch(&mut self, id: ObjectId) -> Option<OwnerAddress> {
        let entry = self.entries.get_mut(&id)?;
        if entry.fetching || !matches!(entry.state, State::Pending) {
            return None;
        }
        let owner = entry.owner?;
        entry.fetching = true;
        Some(owner)
    }

    /// The counts of `id`: (local handles, borrowers), if it is here.
    pub fn counts_of(&self, id: ObjectId) -> Option<(u32, u32)> {
        self.entries.get(&id).map(|entry| (entry.local, entry.borrowers))
    }

    /// Objects here: (owned, borrowed).
    pub fn counts(&self) -> (usize, usize) {
        let owned = self.entries.values().filter(|entry| entry.owner.is_none()).count();
        (owned, self.entries.len() - owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(index: u64) -> ObjectId {
        ObjectId::from_parts([0; 12], index)
    }

    fn address(process: usize) -> OwnerAddress {
        format!("127.0.0.1:{}", 1000 + process).parse().unwrap()
    }

    fn inline() -> Value {
        Value::Inline(Bytes::from_static(b"v"))
    }

    #[test]
    fn each_other_process_holding_borrows_is_watched_while_it_holds_one() {
        let mut table = RefTable::new(address(0));
        table.create_owned(id(1), State::Ready(inline()), Vec::new());
        let watches = |table: &mut RefTable| {
            table
                .take_commands()
                .iter()
                .filter(|command| matches!(command, RefCommand::WatchHolder { .. }))
                .count()
        };
        assert!(table.add_borrower(id(1), address(0)));
        assert_eq!(watches(&mut table), 0, "this process is not watched");
        assert!(table.add_borrower(id(1), address(2)) && table.add_borrower(id(1), address(2)));
        assert_eq!(watches(&mut table), 1, "watched once");
        assert_eq!(
            table.remove_borrower(id(1), address(3)),
            Err(RefError::NotBorrowed(id(1))),
            "not its borrow"
        );
        table.remove_borrower(id(1), address(2)).unwrap();
        assert!(table.holder_alive(address(2)), "one borrow left");
        table.remove_borrower(id(1), address(2)).unwrap();
        assert!(!table.holder_alive(address(2)), "none left: the watch ends");
        assert!(table.add_borrower(id(1), address(2)));
        assert_eq!(watches(&mut table), 1, "watched again");
        // Its death ends its borrows, and only its.
        table.release_local(id(1)).unwrap();
        table.holder_died(address(2));
        assert_eq!(table.counts_of(id(1)), Some((0, 1)), "this process's own borrow stays");
        table.remove_borrower(id(1), address(0)).unwrap();
        assert_eq!(table.counts(), (0, 0));
    }

    #[test]
    fn a_stream_keeps_each_value_once_in_order_and_releases_what_nobody_takes() {
        let mut table = RefTable::new(address(0));
        let task = id(100);
        table.create_owned(task, State::Pending, Vec::new());
        table.open_stream(task, Some(2));
        let shared = || Value::Shared(ObjectLocation { slot: 3, generation: 1 });
        let deleted = |table: &mut RefTable| {
            table
                .take_commands()
                .iter()
                .filter(|command| matches!(command, RefCommand::DeleteStored { .. }))
                .count()
        };
        assert_eq!(table.peek_stream(task), StreamNext::Pending);
        assert_eq!(table.stream_item(task, 0, shared(), Vec::new()), StreamAck::Now);
        // A retried task sends its values again: the copy is released, the producer goes on.
        assert_eq!(table.stream_item(task, 0, shared(), Vec::new()), StreamAck::Now);
        assert_eq!(deleted(&mut table), 1);
        assert_eq!(table.stream_item(task, 5, inline(), Vec::new()), StreamAck::Stop, "out of order");
        assert_eq!(table.stream_item(task, 1, shared(), Vec::new()), StreamAck::Later, "a window behind");
        assert!(!table.stream_has_room(task));
        assert_eq!(table.take_stream_item(task), StreamNext::Item(task.following(1)));
        assert!(table.stream_has_room(task));
        // The consumer owns what it took; the stream keeps the rest until it closes.
        assert_eq!(table.counts_of(task.following(1)), Some((1, 0)));
        table.release_local(task.following(1)).unwrap();
        assert_eq!(deleted(&mut table), 1);
        table.close_stream(task);
        assert_eq!(deleted(&mut table), 1, "the value nobody took");
        assert_eq!(table.stream_item(task, 2, shared(), Vec::new()), StreamAck::Stop, "closed");
        assert_eq!(deleted(&mut table), 1);
        table.complete(task, Ok((inline(), Vec::new())));
        assert_eq!(table.peek_stream(task), StreamNext::Ended);
    }

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

    proptest! {
        /// Against a model of the counts: an owned object is freed exactly once, exactly when
        /// its last local handle and last borrow are gone; a freed object takes no new count;
        /// and a release below zero is refused without changing anything.
        #[test]
        fn owned_objects_are_freed_once_when_the_last_reference_goes(ops in proptest::collection::vec(op(), 0..200)) {
            let mut table = RefTable::new(address(0));
            // Model: (local, borrowers, pending, alive) per object; each starts with one handle.
            let mut model = [(1u32, 0u32, true, true); 4];
            for index in 0..4 {
                table.create_owned(id(index as u64), State::Pending, Vec::new());
            }
            let freed = |table: &mut RefTable| table.take_commands().iter().filter(|command| matches!(command, RefCommand::DeleteStored { .. })).count();
            for op in ops {
                match op {
                    Op::AddLocal(index) => {
                        let added = table.add_local(id(index as u64));
                        prop_assert_eq!(added.is_ok(), model[index].3);
                        if model[index].3 { model[index].0 += 1; }
                    }
                    Op::ReleaseLocal(index) => {
                        let released = table.release_local(id(index as u64));
                        if !model[index].3 {
                            prop_assert_eq!(released, Err(RefError::Unknown(id(index as u64))));
                        } else if model[index].0 == 0 {
                            prop_assert_eq!(released, Err(RefError::NoHandle(id(index as u64))));
                        } else {
                            prop_assert!(released.is_ok());
                            model[index].0 -= 1;
                            if model[index].0 == 0 && model[index].1 == 0 {
                                model[index].3 = false;
                                // A ready object's store copy is deleted with it.
                                prop_assert_eq!(freed(&mut table), usize::from(!model[index].2));
                            }
                        }
                    }
                    Op::AddBorrower(index) => {
                        prop_assert_eq!(table.add_borrower(id(index as u64), address(0)), model[index].3);
                        if model[index].3 { model[index].1 += 1; }
                    }
                    Op::RemoveBorrower(index) => {
                        let removed = table.remove_borrower(id(index as u64), address(0));
                        if model[index].3 && model[index].1 > 0 {
                            prop_assert!(removed.is_ok());
                            model[index].1 -= 1;
                            if model[index].0 == 0 && model[index].1 == 0 {
                                model[index].3 = false;
                                prop_assert_eq!(freed(&mut table), usize::from(!model[index].2));
                            }
                        } else {
                            prop_assert!(removed.is_err(), "a count went below zero");
                        }
                    }
                    Op::Complete(index) => {
                        if model[index].2 {
                            let shared = Value::Shared(ObjectLocation { slot: 0, generation: 1 });
                            table.complete(id(index as u64), Ok((shared, Vec::new())));
                            // A completion nobody waits for any more is released at once.
                            prop_assert_eq!(freed(&mut table), usize::from(!model[index].3));
                            model[index].2 = false;
                        }
                    }
                }
                prop_assert!(table.take_commands().is_empty());
                let alive = model.iter().filter(|entry| entry.3).count();
                prop_assert_eq!(table.counts(), (alive, 0));
                for (index, entry) in model.iter().enumerate() {
                    if entry.3 {
                        prop_assert_eq!(table.counts_of(id(index as u64)), Some((entry.0, entry.1)));
                    }
                }
            }
        }
    }

    /// Ids of one process differ only in their counter's bytes: the table indexes by a hash's
    /// low bits, which must still spread (a hash without its finaliser put them all in a few
    /// buckets, and `get` of an object holding 10,000 refs went 12x slower).
    #[test]
    fn consecutive_ids_spread_over_the_low_bits_of_their_hash() {
        use std::hash::BuildHasher;
        let hashing = IdHashing::default();
        let prefix = [0x5a_u8; 12];
        let buckets: std::collections::HashSet<u64> = (0..4096u64)
            .map(|counter| hashing.hash_one(ObjectId::from_parts(prefix, counter)) & 4095)
            .collect();
        // A uniform hash fills about 63% of 4096 buckets with 4096 keys.
        assert!(buckets.len() > 2_300, "only {} of 4096 buckets used", buckets.len());
    }

    #[test]
    fn a_freed_object_fails_its_gets_and_gives_its_stored_copy_back_at_once() {
        let location = ObjectLocation { slot: 1, generation: 1 };
        let mut table = RefTable::new(address(0));
        table.create_owned(id(1), State::Ready(Value::Shared(location)), Vec::new());
        table.create_owned(id(2), State::Pending, Vec::new());
        assert_eq!(table.free(id(1)), Ok(None));
        assert!(
            matches!(table.take_commands()[..], [RefCommand::DeleteStored { id: deleted, .. }] if deleted == id(1))
        );
        assert!(matches!(table.state(id(1)), Some(State::Failed(TaskError::ObjectFreed { .. }))));
        // A task still running finishes into the freed object: its value is dropped.
        assert_eq!(table.free(id(2)), Ok(None));
        table.complete(id(2), Ok((Value::Shared(location), Vec::new())));
        assert!(
            matches!(table.take_commands()[..], [RefCommand::DeleteStored { id: deleted, .. }] if deleted == id(2))
        );
        assert!(matches!(table.state(id(2)), Some(State::Failed(TaskError::ObjectFreed { .. }))));
        // The entries stay until their refs go, and then nothing is deleted twice.
        table.release_local(id(1)).unwrap();
        assert!(table.take_commands().is_empty());
        // A borrowed object names its owner.
        table.adopt(id(3), Some(address(9)));
        assert_eq!(table.free(id(3)), Ok(Some(address(9))));
        assert_eq!(table.free(id(4)), Err(RefError::Unknown(id(4))));
    }

    #[test]
    fn a_borrowed_entry_unregisters_only_if_it_registered() {
        let owner = address(9);
        let mut table = RefTable::new(address(0));
        assert!(table.adopt(id(1), Some(owner)), "first sight of a borrowed ref");
        assert!(!table.adopt(id(1), Some(owner)), "second sight only counts");
        assert_eq!(table.unregistered(&[id(1)]).len(), 1);
        table.registered(id(1), owner);
        assert!(table.unregistered(&[id(1)]).is_empty());
        table.release_local(id(1)).unwrap();
        table.release_local(id(1)).unwrap();
        let commands = table.take_commands();
        assert!(
            matches!(commands[..], [RefCommand::RemoveBorrow { id: freed, owner: told }] if freed == id(1) && told == owner)
        );
        // Never registered: nothing to tell the owner, until a late registration is given back.
        table.adopt(id(2), Some(owner));
        table.release_local(id(2)).unwrap();
        assert!(table.take_commands().is_empty());
        table.registered(id(2), owner);
        assert!(matches!(table.take_commands()[..], [RefCommand::RemoveBorrow { .. }]));
    }

    /// The borrower protocol between processes, each with its own table, over a network that
    /// delivers messages in any order: one object, owned by process 0, passed to tasks in
    /// other processes (inside their arguments), put inside other objects, cloned and dropped.
    #[derive(Debug, Clone)]
    enum Step {
        Clone(usize),
        Drop(usize),
        /// Pass the ref from one process to another inside a task's argument.
        Send(usize, usize),
        /// Put a value containing the ref in this process.
        Contain(usize),
        /// Drop a container.
        Uncontain(usize),
        /// Deliver the message at this index (modulo those in flight).
        Deliver(usize),
        /// A process other than the owner dies (for good).
        Die(usize),
    }

    #[derive(Debug)]
    enum Message {
        /// A task's argument carries the ref; `from` holds a handle until told `Done`.
        Carry { from: usize, to: usize },
        /// To the owner: count a borrow (`then`: what the borrower does once counted).
        AddBorrower { from: usize, then: AfterAdd },
        /// From the owner: counted (or not: the object is gone).
        Added { to: usize, counted: bool, then: AfterAdd },
        /// To the owner: a borrow held for `holder` ended.
        RemoveBorrower { holder: usize },
        /// To the owner: its watch on `holder` failed (the process is dead).
        HolderDied { holder: usize },
        /// To a sender: the task is over; its hold on the argument ends.
        Done { to: usize },
    }

    #[derive(Debug, Clone, Copy)]
    enum AfterAdd {
        /// A registration for a carried ref: then the sender's task may end.
        Registered { sender: usize },
        /// A container's borrow: then the container is made and the hold released.
        Contained,
    }

    const OWNER: usize = 0;
    const PROCESSES: usize = 3;

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            1 => (0..PROCESSES).prop_map(Step::Clone),
            2 => (0..PROCESSES).prop_map(Step::Drop),
            2 => (0..PROCESSES, 0..PROCESSES).prop_map(|(from, to)| Step::Send(from, to)),
            1 => (0..PROCESSES).prop_map(Step::Contain),
            1 => (0..PROCESSES).prop_map(Step::Uncontain),
            5 => (0..64usize).prop_map(Step::Deliver),
            1 => (1..PROCESSES).prop_map(Step::Die),
        ]
    }

    struct World {
        tables: Vec<RefTable>,
        /// Handles of the object user code keeps in each process.
        handles: [u32; PROCESSES],
        /// Handles tasks and puts hold in each process until a peer has counted its borrow.
        holds: [u32; PROCESSES],
        /// Containers alive in each process.
        containers: [Vec<ObjectId>; PROCESSES],
        in_flight: Vec<Message>,
        deleted: u32,
        next_container: u64,
        dead: [bool; PROCESSES],
    }

    const OBJECT: u64 = 1;

    impl World {
        fn new() -> World {
            let mut tables: Vec<RefTable> =
                (0..PROCESSES).map(|process| RefTable::new(address(process))).collect();
            let location = Value::Shared(ObjectLocation { slot: 1, generation: 1 });
            tables[OWNER].create_owned(id(OBJECT), State::Ready(location), Vec::new());
            World {
                tables,
                handles: [1, 0, 0],
                holds: [0; PROCESSES],
                containers: Default::default(),
                in_flight: Vec::new(),
                deleted: 0,
                next_container: 100,
                dead: [false; PROCESSES],
            }
        }

        fn wire(&self) -> RefWire {
            RefWire { id: id(OBJECT), owner: address(OWNER) }
        }

        /// Performs the commands each table left.
        fn perform(&mut self) {
            for process in 0..PROCESSES {
                for command in self.tables[process].take_commands() {
                    match command {
                        RefCommand::DeleteStored { id: deleted, .. } => {
                            assert_eq!(deleted, id(OBJECT), "only the object is stored");
                            self.deleted += 1;
                        }
                        RefCommand::RemoveBorrow { owner, .. } => {
                            assert_eq!(owner, address(OWNER));
                            self.in_flight.push(Message::RemoveBorrower { holder: process });
                        }
                        RefCommand::Hook(_) => unreachable!("no hooks here"),
                        RefCommand::WatchHolder { holder } => {
                            assert_eq!(process, OWNER, "only the owner counts borrows");
                            let holder = (0..PROCESSES).find(|index| address(*index) == holder).unwrap();
                            // A watch on a dead process fails at once; a live one's waits.
                            if self.dead[holder] {
                                self.in_flight.push(Message::HolderDied { holder });
                            }
                        }
                    }
                }
            }
        }

        fn take(&mut self, process: usize) -> Result<(), RefError> {
            self.tables[process].add_local(id(OBJECT))?;
            self.handles[process] += 1;
            Ok(())
        }

        fn release(&mut self, process: usize) -> Result<(), RefError> {
            self.handles[process] -= 1;
            self.tables[process].release_local(id(OBJECT))
        }

        fn hold(&mut self, process: usize) -> Result<(), RefError> {
            self.tables[process].add_local(id(OBJECT))?;
            self.holds[process] += 1;
            Ok(())
        }

        fn unhold(&mut self, process: usize) -> Result<(), RefError> {
            self.holds[process] -= 1;
            self.tables[process].release_local(id(OBJECT))
        }

        fn make_container(&mut self, process: usize) {
            self.next_container += 1;
            let container = id(self.next_container);
            let wire = self.wire();
            self.tables[process].create_owned(container, State::Ready(inline()), vec![wire]);
            self.containers[process].push(container);
        }

        fn deliver(&mut self, message: Message) -> Result<(), RefError> {
            match message {
                Message::Carry { from, to } => {
                    let owner = self.tables[to].owner_key_of(address(OWNER));
                    self.tables[to].adopt(id(OBJECT), owner);
                    self.handles[to] += 1;
                    if self.tables[to].unregistered(&[id(OBJECT)]).is_empty() {
                        self.in_flight.push(Message::Done { to: from });
                    } else {
                        let then = AfterAdd::Registered { sender: from };
                        self.in_flight.push(Message::AddBorrower { from: to, then });
                    }
                }
                Message::AddBorrower { from, then } => {
                    let counted = self.tables[OWNER].add_borrower(id(OBJECT), address(from));
                    // The answer to a dead process is lost.
                    if !self.dead[from] {
                        self.in_flight.push(Message::Added { to: from, counted, then });
                    }
                }
                Message::Added { to, counted, then } => {
                    // The protocol keeps the object alive while a borrow is being added.
                    assert!(counted, "the owner freed the object while {to} was adding a borrow");
                    match then {
                        AfterAdd::Registered { sender } => {
                            self.tables[to].registered(id(OBJECT), address(OWNER));
                            self.in_flight.push(Message::Done { to: sender });
                        }
                        AfterAdd::Contained => {
                            self.make_container(to);
                            self.unhold(to)?;
                        }
                    }
                }
                Message::RemoveBorrower { holder } => {
                    let removed = self.tables[OWNER].remove_borrower(id(OBJECT), address(holder));
                    // A dead holder's late release finds its borrows already ended.
                    if !self.dead[holder] {
                        removed?;
                    }
                }
                Message::HolderDied { holder } => self.tables[OWNER].holder_died(address(holder)),
                // A task's end told to a dead sender: nobody to tell.
                Message::Done { to } if self.dead[to] => {}
                Message::Done { to } => self.unhold(to)?,
            }
            Ok(())
        }

        /// Process `process` dies: its handles, holds and containers are gone with it; the
        /// tasks that carried the ref to it end (their holds on the argument go); the tasks it
        /// submitted die with it (Ray's fate sharing: a worker running a dead owner's task is
        /// killed), so their arguments never arrive, and a process still registering for one
        /// dies too; its other messages are still delivered; the owner's watch on it will fail.
        fn die(&mut self, process: usize) {
            if self.dead[process] {
                return;
            }
            let running_its_task: Vec<usize> = self
                .in_flight
                .iter()
                .filter_map(|message| match message {
                    Message::AddBorrower { from: worker, then: AfterAdd::Registered { sender } }
                    | Message::Added { to: worker, then: AfterAdd::Registered { sender }, .. }
                        if *sender == process =>
                    {
                        Some(*worker)
                    }
                    _ => None,
                })
                .collect();
            self.in_flight
                .retain(|message| !matches!(message, Message::Carry { from, .. } if *from == process));
            self.dead[process] = true;
            self.tables[process] = RefTable::new(address(process));
            self.handles[process] = 0;
            self.holds[process] = 0;
            self.containers[process].clear();
            let mut ended = Vec::new();
            self.in_flight.retain(|message| match message {
                Message::Carry { from, to } if *to == process => {
                    ended.push(*from);
                    false
                }
                Message::Added { to, then, .. } if *to == process => {
                    if let AfterAdd::Registered { sender } = then {
                        ended.push(*sender);
                    }
                    false
                }
                Message::AddBorrower { from, then: AfterAdd::Registered { sender } } if *from == process => {
                    // Its answer will be lost: the sender's task ends with the process.
                    ended.push(*sender);
                    true
                }
                Message::Done { to } => *to != process,
                _ => true,
            });
            for sender in ended {
                if !self.dead[sender] {
                    self.in_flight.push(Message::Done { to: sender });
                }
            }
            self.in_flight.push(Message::HolderDied { holder: process });
            for worker in running_its_task {
                if worker != OWNER {
                    self.die(worker);
                }
            }
        }

        /// Safety: while anything holds the object, its owner has it; each process's count is
        /// its handles.
        fn check(&self) -> Result<(), TestCaseError> {
            let held = self.handles.iter().chain(&self.holds).sum::<u32>()
                + self.containers.iter().map(Vec::len).sum::<usize>() as u32;
            let owned = self.tables[OWNER].counts_of(id(OBJECT));
            if held > 0 {
                prop_assert!(
                    owned.is_some(),
                    "freed while held: handles {:?}, containers {:?}",
                    self.handles,
                    self.containers
                );
            }
            for process in 0..PROCESSES {
                let held = self.handles[process] + self.holds[process];
                if held > 0 {
                    let (local, _) =
                        self.tables[process].counts_of(id(OBJECT)).expect("a held object has an entry");
                    prop_assert_eq!(local, held);
                }
            }
            prop_assert!(self.deleted <= 1, "deleted twice");
            prop_assert_eq!(self.deleted == 1, owned.is_none(), "deleted exactly when freed");
            Ok(())
        }
    }

    impl RefTable {
        fn owner_key_of(&self, owner: OwnerAddress) -> Option<OwnerAddress> {
            (owner != self.own).then_some(owner)
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Whatever order the messages arrive in: the owner never frees the object while a
        /// handle or a container anywhere holds it, no count goes below zero, and once every
        /// handle is dropped and every message delivered, the object is freed (its store copy
        /// deleted once) and no process keeps an entry.
        #[test]
        fn the_borrower_protocol_frees_exactly_when_nothing_holds_the_object(
            steps in proptest::collection::vec(step(), 1..200),
        ) {
            let mut world = World::new();
            for step in steps {
                match step {
                    Step::Clone(process) if world.handles[process] > 0 => world.take(process)?,
                    Step::Drop(process) if world.handles[process] > 0 => world.release(process)?,
                    Step::Send(from, to) if world.handles[from] > 0 && !world.dead[to] => {
                        // The task holds the argument's ref until it is over.
                        world.hold(from)?;
                        world.in_flight.push(Message::Carry { from, to });
                    }
                    Step::Contain(process) if world.handles[process] > 0 => {
                        if process == OWNER {
                            prop_assert!(world.tables[OWNER].add_borrower(id(OBJECT), address(OWNER)));
                            world.make_container(process);
                        } else {
                            // Held while the owner counts the container's borrow.
                            world.hold(process)?;
                            world.in_flight.push(Message::AddBorrower { from: process, then: AfterAdd::Contained });
                        }
                    }
                    Step::Uncontain(process) if !world.containers[process].is_empty() => {
                        let container = world.containers[process].remove(0);
                        world.tables[process].release_local(container)?;
                    }
                    Step::Deliver(pick) if !world.in_flight.is_empty() => {
                        let message = world.in_flight.remove(pick % world.in_flight.len());
                        world.deliver(message)?;
                    }
                    Step::Die(process) if !world.dead[process] => world.die(process),
                    _ => {}
                }
                world.perform();
                world.check()?;
            }
            // Everything dropped, everything delivered.
            loop {
                if let Some(process) = (0..PROCESSES).find(|process| !world.containers[*process].is_empty()) {
                    let container = world.containers[process].remove(0);
                    world.tables[process].release_local(container)?;
                } else if !world.in_flight.is_empty() {
                    let message = world.in_flight.remove(0);
                    world.deliver(message)?;
                } else if let Some(process) = (0..PROCESSES).find(|process| world.handles[*process] > 0) {
                    world.release(process)?;
                } else {
                    break;
                }
                world.perform();
                world.check()?;
            }
            prop_assert_eq!(world.deleted, 1, "freed once at the end");
            for table in &world.tables {
                prop_assert_eq!(table.counts(), (0, 0), "entries left behind");
            }
        }
    }
}
