//! The node's object store: create, seal, get, delete over the shared arena.
//!
//! [`ObjectStore`] is the owner (the raylet's store actor holds it): it allocates memory and
//! slots and decides when bytes are reused. [`StoreReader`] is what any process that mapped the
//! arena uses to pin sealed objects and read them in place; the owner reads through one too.
//!
//! Object lifecycle (see `index.rs`): created (writer has exclusive bytes) -> sealed (immutable,
//! pinnable) -> deleting (no new pins) -> freed (bytes and slot reusable), or created -> aborted.

use std::collections::HashMap;
use std::fmt;
use std::ptr::NonNull;
use std::sync::Arc;

use bytes::Bytes;

use crate::allocator::{Block, OffsetAllocator};
use crate::arena::{Arena, ArenaError};

pub use manta_proto::ObjectId;

/// Where a sealed object is: enough for any process that maps the arena to pin it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectLocation {
    /// The slot in the shared index.
    pub slot: u32,
    /// The slot's generation when the object was created.
    pub generation: u32,
}

impl From<ObjectLocation> for manta_proto::worker::WireLocation {
    fn from(location: ObjectLocation) -> Self {
        manta_proto::worker::WireLocation { slot: location.slot, generation: location.generation }
    }
}

impl From<manta_proto::worker::WireLocation> for ObjectLocation {
    fn from(location: manta_proto::worker::WireLocation) -> Self {
        ObjectLocation { slot: location.slot, generation: location.generation }
    }
}

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Not enough contiguous free memory for the object.
    #[error(
        "object store full: {requested} bytes requested, {free} free ({largest_free} in the largest block) of {capacity}"
    )]
    Full {
        /// Bytes asked for.
        requested: u64,
        /// Bytes free in all.
        free: u64,
        /// The largest object that would fit now.
        largest_free: u64,
        /// The store's size.
        capacity: u64,
    },
    /// Every slot of the index is in use.
    #[error("object store has no free slot ({slots} objects)")]
    OutOfSlots {
        /// Slots in the index.
        slots: usize,
    },
    /// An object with this id exists already.
    #[error("object {0} already exists")]
    AlreadyExists(ObjectId),
    /// No object with this id.
    #[error("object {0} not found")]
    NotFound(ObjectId),
    /// The arena could not be created or mapped.
    #[error(transparent)]
    Arena(#[from] ArenaError),
    /// A slot of the shared index is not in the state the store left it in: a process that maps
    /// the arena wrote to it. The slot is never used again and the object's memory is not
    /// reused (a reader may still hold it); the store goes on with the others.
    #[error("object store index slot {slot} was changed behind the store's back ({what})")]
    IndexCorrupted {
        /// The slot.
        slot: u32,
        /// What was found.
        what: &'static str,
    },
}

struct Entry {
    location: ObjectLocation,
    block: Block,
    sealed: bool,
}

/// Free blocks at least this large give their pages back to the kernel on [`ObjectStore::trim`].
const RELEASE_PAGES_MIN: u64 = 1 << 20;

/// The owner of the node's object memory.
pub struct ObjectStore {
    reader: StoreReader,
    allocator: OffsetAllocator,
    free_slots: Vec<u32>,
    objects: HashMap<ObjectId, Entry>,
    /// Deleted objects whose bytes readers still pin: freed by [`ObjectStore::reclaim`].
    deleting: Vec<Entry>,
    /// Bytes of large blocks freed since the last [`ObjectStore::trim`] (still resident).
    freed_since_trim: u64,
    /// Objects created since the store was last asked whether it was idle.
    created_since_check: u64,
    /// Secondary copies (pulled from another node's store, whose primary stays there), by
    /// object, with the tick of their last use: an allocation that does not fit evicts the
    /// least recently used of them that no reader pins (Ray's object manager evicts
    /// secondary copies the same way; primaries are never evicted).
    secondary: HashMap<ObjectId, u64>,
    /// The clock of `secondary` (one tick per use).
    ticks: u64,
    /// Secondary copies evicted so far.
    evicted: u64,
}

impl fmt::Debug for ObjectStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectStore")
            .field("objects", &self.objects.len())
            .field("used_bytes", &self.used_bytes())
            .field("capacity", &self.capacity())
            .finish()
    }
}

/// An object being written: exclusive access to its bytes until [`ObjectStore::seal`].
#[derive(Debug)]
pub struct ObjectWriter {
    id: ObjectId,
    ptr: NonNull<u8>,
    len: usize,
    _arena: Arc<Arena>,
}

// SAFETY: the writer has exclusive access to its block until sealed (the block is allocated to
// it alone and no reader can pin an unsealed slot).
unsafe impl Send for ObjectWriter {}

impl ObjectWriter {
    /// The object's id.
    pub fn id(&self) -> ObjectId {
        self.id
    }

    /// The object's bytes, to fill before sealing.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `ptr..ptr+len` is this writer's block of the live arena (kept alive by
        // `_arena`), and nothing else can access it before the seal.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl ObjectStore {
    /// A store with `slot_count` objects at most and `data_bytes` of memory.
    pub fn create(slot_count: usize, data_bytes: u64) -> Result<ObjectStore, StoreError> {
        let arena = Arc::new(Arena::create(slot_count, data_bytes)?);
        let slots = u32::try_from(slot_count).map_err(|_| ArenaError::Invalid("too many slots".into()))?;
        Ok(ObjectStore {
            allocator: OffsetAllocator::new(arena.data_bytes()),
            free_slots: (0..slots).rev().collect(),
            objects: HashMap::new(),
            deleting: Vec::new(),
            freed_since_trim: 0,
            created_since_check: 0,
            secondary: HashMap::new(),
            ticks: 0,
            evicted: 0,
            reader: StoreReader { arena },
        })
    }

    /// The reader for this store's arena (for in-process reads; other processes open their own
    /// from [`Arena::peer_path`]).
    pub fn reader(&self) -> &StoreReader {
        &self.reader
    }

    /// Starts an object of `len` bytes.
    pub fn create_object(&mut self, id: ObjectId, len: u64) -> Result<ObjectWriter, StoreError> {
        self.created_since_check += 1;
        if self.objects.contains_key(&id) {
            return Err(StoreError::AlreadyExists(id));
        }
        self.reclaim();
        // Room (memory and a slot) is made by evicting secondary copies, least recently used
        // first, while any can go.
        let block = loop {
            match self.allocator.allocate(len) {
                Some(block) if !self.free_slots.is_empty() => break block,
                Some(block) => {
                    self.allocator.free(block.offset);
                    if !self.evict_one() {
                        return Err(StoreError::OutOfSlots { slots: self.reader.arena.slot_count() });
                    }
                }
                None if self.evict_one() => {}
                None => {
                    return Err(StoreError::Full {
                        requested: len,
                        free: self.allocator.capacity() - self.allocator.used_bytes(),
                        largest_free: self.allocator.largest_free(),
                        capacity: self.allocator.capacity(),
                    })
                }
            }
        };
        let slot = self.free_slots.pop().expect("a free slot was checked for");
        let index = &self.reader.arena.slots()[slot as usize];
        let Some(generation) = index.claim() else {
            // Free on the owner's list but not in shared memory: quarantined (not pushed back).
            self.allocator.free(block.offset);
            return Err(StoreError::IndexCorrupted { slot, what: "a free slot was in use" });
        };
        index.place(block.offset, len);
        let ptr =
            self.reader.arena.data_ptr(block.offset, len).expect("allocated blocks lie inside the arena");
        self.objects
            .insert(id, Entry { location: ObjectLocation { slot, generation }, block, sealed: false });
        let len = usize::try_from(len).expect("an allocated block fits in the address space");
        Ok(ObjectWriter { id, ptr, len, _arena: self.reader.arena.clone() })
    }

    /// Makes a written object immutable and readable by every process.
    pub fn seal(&mut self, writer: ObjectWriter) -> Result<ObjectLocation, StoreError> {
        self.seal_id(writer.id)
    }

    /// Starts an object of `len` bytes that another process writes: it opens the returned
    /// location with [`StoreReader::open_writer`], fills it, and asks the store to
    /// [`ObjectStore::seal_id`] (or [`ObjectStore::delete`] to give up).
    pub fn create_for_peer(&mut self, id: ObjectId, len: u64) -> Result<ObjectLocation, StoreError> {
        let writer = self.create_object(id, len)?;
        let location = self.objects[&writer.id].location;
        drop(writer);
        Ok(location)
    }

    /// Seals an object by id (one created with [`ObjectStore::create_for_peer`]).
    pub fn seal_id(&mut self, id: ObjectId) -> Result<ObjectLocation, StoreError> {
        let entry = self.objects.get_mut(&id).ok_or(StoreError::NotFound(id))?;
        if entry.sealed {
            return Ok(entry.location);
        }
        let slot = entry.location.slot;
        if !self.reader.arena.slots()[slot as usize].seal(entry.location.generation) {
            // Lost: its slot is quarantined and its memory leaked (see `IndexCorrupted`).
            self.objects.remove(&id);
            return Err(StoreError::IndexCorrupted { slot, what: "sealing found another generation" });
        }
        entry.sealed = true;
        Ok(entry.location)
    }

    /// Creates, fills and seals an object in one step.
    pub fn put(&mut self, id: ObjectId, bytes: &[u8]) -> Result<ObjectLocation, StoreError> {
        let mut writer = self.create_object(id, bytes.len() as u64)?;
        writer.as_mut_slice().copy_from_slice(bytes);
        self.seal(writer)
    }

    /// Drops an object that was created but not sealed (its writer failed).
    pub fn abort(&mut self, writer: ObjectWriter) -> Result<(), StoreError> {
        if let Some(entry) = self.objects.remove(&writer.id) {
            let aborted =
                self.reader.arena.slots()[entry.location.slot as usize].abort(entry.location.generation);
            if !aborted {
                // Quarantined: neither the slot nor the memory is reused.
                let slot = entry.location.slot;
                return Err(StoreError::IndexCorrupted { slot, what: "aborting found another generation" });
            }
            self.allocator.free(entry.block.offset);
            self.free_slots.push(entry.location.slot);
        }
        Ok(())
    }

    /// Marks a sealed object as a secondary copy (pulled from another node's store): the
    /// store may evict it to make room when no reader pins it.
    pub fn mark_secondary(&mut self, id: ObjectId) {
        if self.objects.get(&id).is_some_and(|entry| entry.sealed) {
            self.ticks += 1;
            self.secondary.insert(id, self.ticks);
        }
    }

    /// Records a use of a secondary copy (it is evicted after those used less recently).
    pub fn touch(&mut self, id: ObjectId) {
        if let Some(tick) = self.secondary.get_mut(&id) {
            self.ticks += 1;
            *tick = self.ticks;
        }
    }

    /// Secondary copies evicted to make room so far.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Evicts the least recently used secondary copy that no reader pins, freeing its memory
    /// and slot at once. `false` if none can go.
    fn evict_one(&mut self) -> bool {
        let mut candidates: Vec<(u64, ObjectId)> =
            self.secondary.iter().map(|(id, tick)| (*tick, *id)).collect();
        candidates.sort_unstable();
        for (_, id) in candidates {
            let Some(entry) = self.objects.get(&id) else {
                self.secondary.remove(&id);
                continue;
            };
            if self.reader.arena.slots()[entry.location.slot as usize].pins() > 0 {
                continue;
            }
            let entry = self.objects.remove(&id).expect("looked up just above");
            self.secondary.remove(&id);
            match self.reader.arena.slots()[entry.location.slot as usize].delete(entry.location.generation) {
                Some(true) => {
                    self.release(entry);
                    self.evicted += 1;
                    return true;
                }
                // A reader pinned it in between: its memory goes once the reader is done.
                Some(false) => {
                    self.deleting.push(entry);
                    self.evicted += 1;
                }
                // Quarantined, as `delete` does.
                None => {}
            }
        }
        false
    }

    /// Where a sealed object is.
    pub fn locate(&self, id: ObjectId) -> Option<ObjectLocation> {
        self.objects.get(&id).filter(|entry| entry.sealed).map(|entry| entry.location)
    }

    /// A zero-copy view of a sealed object, pinned until the view (and its clones) are dropped.
    pub fn get(&self, id: ObjectId) -> Option<Bytes> {
        self.reader.pin(self.locate(id)?)
    }

    /// Deletes an object. Its bytes are reused once the last reader's view is dropped.
    pub fn delete(&mut self, id: ObjectId) -> Result<(), StoreError> {
        let entry = self.objects.remove(&id).ok_or(StoreError::NotFound(id))?;
        self.secondary.remove(&id);
        let slot = &self.reader.arena.slots()[entry.location.slot as usize];
        if !entry.sealed {
            // An unsealed object's writer is gone (else it would be passed to `abort`).
            slot.abort(entry.location.generation);
            self.release(entry);
            return Ok(());
        }
        match slot.delete(entry.location.generation) {
            Some(true) => self.release(entry),
            Some(false) => self.deleting.push(entry),
            None => {
                let slot = entry.location.slot;
                return Err(StoreError::IndexCorrupted { slot, what: "deleting found another generation" });
            }
        }
        Ok(())
    }

    fn release(&mut self, entry: Entry) {
        self.allocator.free(entry.block.offset);
        self.free_slots.push(entry.location.slot);
        if entry.block.len >= RELEASE_PAGES_MIN {
            self.freed_since_trim += entry.block.len;
        }
    }

    /// Gives the pages of large free blocks back to the kernel (they read as zeros until
    /// written again). Freed memory stays resident until then, so a burst of puts and frees
    /// reuses warm pages (a fresh page costs a fault and a zeroing: 1 GB puts ran at 1.9 GB/s
    /// into punched memory against 10 GB/s into warm memory); the store's host calls this once
    /// the store has been idle a moment ([`ObjectStore::idle_since_last_check`]). Returns the
    /// bytes given back.
    pub fn trim(&mut self) -> u64 {
        if self.freed_since_trim == 0 {
            return 0;
        }
        self.freed_since_trim = 0;
        let free: Vec<(u64, u64)> = self.allocator.free_blocks_at_least(RELEASE_PAGES_MIN);
        free.into_iter().map(|(offset, len)| self.reader.arena.release_pages(offset, len)).sum()
    }

    /// Whether no object was created since the last call (the host's cue to [`trim`]).
    ///
    /// [`trim`]: ObjectStore::trim
    pub fn idle_since_last_check(&mut self) -> bool {
        std::mem::take(&mut self.created_since_check) == 0
    }

    /// Frees the memory of deleted objects whose readers are done. Called by `create_object`;
    /// call it to have `used_bytes` reflect released views.
    pub fn reclaim(&mut self) {
        let mut index = 0;
        while index < self.deleting.len() {
            let entry = &self.deleting[index];
            if self.reader.arena.slots()[entry.location.slot as usize]
                .finish_delete(entry.location.generation)
            {
                let entry = self.deleting.swap_remove(index);
                self.release(entry);
            } else {
                index += 1;
            }
        }
    }

    /// Bytes of object memory in use (objects and deleted ones still pinned).
    pub fn used_bytes(&self) -> u64 {
        self.allocator.used_bytes()
    }

    /// Bytes of object memory in all.
    pub fn capacity(&self) -> u64 {
        self.allocator.capacity()
    }

    /// Objects stored (not counting deleted ones still pinned).
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// Whether the store holds no object.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }
}

/// Reads sealed objects of an arena in place. Cheap to clone.
#[derive(Debug, Clone)]
pub struct StoreReader {
    arena: Arc<Arena>,
}

impl StoreReader {
    /// Maps an arena another process created (its [`Arena::peer_path`]).
    pub fn open(path: &std::path::Path) -> Result<StoreReader, StoreError> {
        Ok(StoreReader { arena: Arc::new(Arena::open(path)?) })
    }

    /// The mapped arena.
    pub fn arena(&self) -> &Arena {
        &self.arena
    }

    /// Opens the unsealed object at `location` for writing, in a process other than the store's
    /// (see [`ObjectStore::create_for_peer`]). `None` if the slot no longer holds it unsealed.
    ///
    /// # Safety
    /// The caller must be the one process the store granted `location` to, and must write
    /// through one writer at a time: the bytes are exclusive to that writer until the seal.
    pub unsafe fn open_writer(&self, id: ObjectId, location: ObjectLocation) -> Option<ObjectWriter> {
        let slot = self.arena.slots().get(location.slot as usize)?;
        let (offset, len) = slot.creating(location.generation)?;
        let ptr = self.arena.data_ptr(offset, len)?;
        let len = usize::try_from(len).ok()?;
        Some(ObjectWriter { id, ptr, len, _arena: self.arena.clone() })
    }

    /// Pins the object at `location` and returns its bytes, zero-copy; the pin is released when
    /// the last clone of the returned `Bytes` is dropped. `None` if the location no longer holds
    /// a sealed object, or names a slot or bytes outside the arena (a bad location from a peer).
    pub fn pin(&self, location: ObjectLocation) -> Option<Bytes> {
        let slot = self.arena.slots().get(location.slot as usize)?;
        let (offset, len) = slot.pin(location.generation)?;
        let Some(ptr) = self.arena.data_ptr(offset, len) else {
            slot.unpin();
            return None;
        };
        let len = usize::try_from(len).expect("a block inside the mapping fits in the address space");
        Some(Bytes::from_owner(PinnedBytes { arena: self.arena.clone(), slot: location.slot, ptr, len }))
    }
}

/// The owner of a pinned object's bytes behind a `Bytes`: unpins on drop.
struct PinnedBytes {
    arena: Arc<Arena>,
    slot: u32,
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the bytes are immutable while pinned and the pin is released through an atomic.
unsafe impl Send for PinnedBytes {}
// SAFETY: as above: shared read-only access.
unsafe impl Sync for PinnedBytes {}

impl AsRef<[u8]> for PinnedBytes {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: the range lies in the arena (checked in `pin`), the arena is alive (`Arc`), and
        // the object is sealed and pinned, so nobody writes or reuses these bytes.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for PinnedBytes {
    fn drop(&mut self) {
        self.arena.slots()[self.slot as usize].unpin();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a misbehaving peer can do: every process of the node maps the index writable.
    fn scribble(store: &ObjectStore, slot: u32) {
        let word = store.reader.arena.slots()[slot as usize].word_for_tests();
        word.store(u64::MAX, std::sync::atomic::Ordering::Release);
    }

    #[test]
    fn an_index_slot_changed_behind_the_stores_back_is_an_error_not_a_panic() {
        let mut store = ObjectStore::create(8, 1 << 20).unwrap();
        let sealed = store.put(ObjectId([1; 20]), b"kept").unwrap();
        scribble(&store, sealed.slot);
        assert!(matches!(store.delete(ObjectId([1; 20])), Err(StoreError::IndexCorrupted { .. })));

        let unsealed = store.create_for_peer(ObjectId([2; 20]), 16).unwrap();
        scribble(&store, unsealed.slot);
        assert!(matches!(store.seal_id(ObjectId([2; 20])), Err(StoreError::IndexCorrupted { .. })));

        // The damaged slots are never handed out again; the store goes on with the others.
        for n in 3..9 {
            let location = store.put(ObjectId([n; 20]), b"fine").unwrap();
            assert!(location.slot != sealed.slot && location.slot != unsealed.slot);
        }
        assert_eq!(&store.get(ObjectId([8; 20])).unwrap()[..], b"fine");
    }

    #[test]
    fn room_is_made_by_evicting_unpinned_secondary_copies_least_recently_used_first() {
        let mb = 1u64 << 20;
        let mut store = ObjectStore::create(16, 4 * mb).unwrap();
        let object = |n: u8| ObjectId([n; 20]);
        let fill = |store: &mut ObjectStore, n: u8| {
            let mut writer = store.create_object(object(n), mb).unwrap();
            writer.as_mut_slice().fill(n);
            store.seal(writer).unwrap();
        };
        // A primary and three copies fill the store.
        fill(&mut store, 1);
        for n in 2..=4 {
            fill(&mut store, n);
            store.mark_secondary(object(n));
        }
        store.touch(object(2));
        let pinned = store.get(object(3)).unwrap();
        // Copy 3 is pinned, copy 2 was used after copy 4: copy 4 goes.
        fill(&mut store, 5);
        assert_eq!(store.evicted(), 1);
        assert!(store.locate(object(4)).is_none());
        assert!(store.locate(object(2)).is_some() && store.locate(object(3)).is_some());
        // Then copy 2; then nothing can go (the primaries stay, copy 3 is pinned).
        fill(&mut store, 6);
        assert!(store.locate(object(2)).is_none());
        assert!(matches!(store.create_object(object(7), mb), Err(StoreError::Full { .. })));
        assert_eq!(&pinned[..8], &[3; 8], "a pinned copy is read whole");
        drop(pinned);
        fill(&mut store, 7);
        assert_eq!((store.evicted(), store.len()), (3, 4));
        for n in [1, 5, 6, 7] {
            assert_eq!(store.get(object(n)).unwrap()[0], n, "primaries are never evicted");
        }
    }

    #[test]
    fn a_slot_is_made_by_evicting_a_secondary_copy() {
        let mut store = ObjectStore::create(2, 1 << 20).unwrap();
        store.put(ObjectId([1; 20]), b"primary").unwrap();
        store.put(ObjectId([2; 20]), b"copy").unwrap();
        store.mark_secondary(ObjectId([2; 20]));
        store.put(ObjectId([3; 20]), b"new").unwrap();
        assert!(store.locate(ObjectId([2; 20])).is_none());
        assert!(matches!(store.put(ObjectId([4; 20]), b"x"), Err(StoreError::OutOfSlots { .. })));
    }
}
