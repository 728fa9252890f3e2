//! The shared-memory index: one slot per object, at the start of the arena, read and pinned by
//! every process that maps the arena, without a round trip to the store.
//!
//! Each slot's state is one 64-bit word, changed only by compare-and-swap:
//!
//! ```text
//! bits 32..64 generation   bumped each time the slot is freed, so a stale handle never pins
//!                          the next object to use the slot
//! bits 30..32 state        Free -> Creating -> Sealed -> Free
//! bit  29     deleting     set by the owner; no new pins once set
//! bits  0..29 pins         readers holding the object's bytes
//! ```
//! Lifecycle (owner = the store; readers = any process):
//! `Free --claim--> Creating --seal--> Sealed --delete--> Sealed+deleting --(pins = 0)--> Free`,
//! and `Creating --abort--> Free`. Invariant: the owner reuses an object's bytes only after the
//! word went to `Free`, which needs `pins == 0` with `deleting` set, and a pin needs `deleting`
//! clear: so no reader can hold bytes the owner reuses. The loom model below checks it.

use crate::sync::atomic::{AtomicU64, Ordering};

const PINS_MASK: u64 = (1 << 29) - 1;
const DELETING: u64 = 1 << 29;
const STATE_SHIFT: u32 = 30;
const STATE_MASK: u64 = 0b11 << STATE_SHIFT;
const FREE: u64 = 0;
const CREATING: u64 = 1 << STATE_SHIFT;
const SEALED: u64 = 2 << STATE_SHIFT;

fn generation(word: u64) -> u32 {
    (word >> 32) as u32
}

fn with_generation(generation: u32, state: u64) -> u64 {
    (u64::from(generation) << 32) | state
}

/// One slot: the state word, then where the object's bytes are. `offset` and `len` are written
/// by the owner before the `seal` store (Release) and read by readers after a successful pin
/// (Acquire), so a reader that pinned sees them.
#[repr(C, align(64))]
#[derive(Debug)]
pub(crate) struct Slot {
    word: AtomicU64,
    offset: AtomicU64,
    len: AtomicU64,
}

/// Bytes one slot takes in the arena.
pub(crate) const SLOT_BYTES: usize = std::mem::size_of::<Slot>();

impl Slot {
    #[cfg(any(test, manta_loom))]
    pub(crate) fn new() -> Self {
        Slot { word: AtomicU64::new(0), offset: AtomicU64::new(0), len: AtomicU64::new(0) }
    }

    /// The state word, for tests that play a misbehaving peer.
    #[cfg(test)]
    pub(crate) fn word_for_tests(&self) -> &AtomicU64 {
        &self.word
    }

    /// Owner: takes a free slot for a new object; returns the generation that names it.
    pub(crate) fn claim(&self) -> Option<u32> {
        let word = self.word.load(Ordering::Acquire);
        if word & STATE_MASK != FREE {
            return None;
        }
        let generation = generation(word);
        self.word
            .compare_exchange(
                word,
                with_generation(generation, CREATING),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .ok()
            .map(|_| generation)
    }

    /// Owner: records where the object's bytes are (while creating).
    pub(crate) fn place(&self, offset: u64, len: u64) {
        self.offset.store(offset, Ordering::Relaxed);
        self.len.store(len, Ordering::Relaxed);
    }

    /// Writer in another process: where the object being created under `generation` is, if the
    /// slot still holds it unsealed.
    pub(crate) fn creating(&self, generation_wanted: u32) -> Option<(u64, u64)> {
        let word = self.word.load(Ordering::Acquire);
        (generation(word) == generation_wanted && word & STATE_MASK == CREATING)
            .then(|| (self.offset.load(Ordering::Relaxed), self.len.load(Ordering::Relaxed)))
    }

    /// Owner: the object's bytes are complete and immutable from now on.
    pub(crate) fn seal(&self, generation: u32) -> bool {
        self.word
            .compare_exchange(
                with_generation(generation, CREATING),
                with_generation(generation, SEALED),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }

    /// Owner: gives up an object that was never sealed.
    pub(crate) fn abort(&self, generation: u32) -> bool {
        self.word
            .compare_exchange(
                with_generation(generation, CREATING),
                with_generation(generation.wrapping_add(1), FREE),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }

    /// Reader: pins the sealed object of `generation`; returns `(offset, len)`, or `None` if the
    /// slot holds something else now, is being deleted, or has too many pins.
    pub(crate) fn pin(&self, generation_wanted: u32) -> Option<(u64, u64)> {
        let mut word = self.word.load(Ordering::Acquire);
        loop {
            if generation(word) != generation_wanted
                || word & STATE_MASK != SEALED
                || word & DELETING != 0
                || word & PINS_MASK == PINS_MASK
            {
                return None;
            }
            match self.word.compare_exchange_weak(word, word + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    return Some((self.offset.load(Ordering::Relaxed), self.len.load(Ordering::Relaxed)))
                }
                Err(current) => word = current,
            }
        }
    }

    /// Reader: releases a pin taken with [`Slot::pin`]. Release ordering: the reader's reads of
    /// the bytes happen before the owner can see the pin gone.
    /// A word with no pin left (a peer wrote over the slot) is left alone: a decrement would
    /// borrow from the state bits. The reader's view stays valid either way (its mapping holds).
    pub(crate) fn unpin(&self) {
        let _ = self.word.fetch_update(Ordering::Release, Ordering::Relaxed, |word| {
            (word & PINS_MASK > 0).then(|| word - 1)
        });
    }

    /// Owner: starts deleting the object of `generation`; no pin succeeds afterwards. Returns
    /// `true` if the slot is now free (no reader held it), `false` if readers still hold pins (call
    /// [`Slot::finish_delete`] later), and `None` if the slot no longer holds that object.
    pub(crate) fn delete(&self, generation_wanted: u32) -> Option<bool> {
        let mut word = self.word.load(Ordering::Acquire);
        loop {
            if generation(word) != generation_wanted || word & STATE_MASK != SEALED {
                return None;
            }
            if word & DELETING != 0 {
                break;
            }
            match self.word.compare_exchange_weak(word, word | DELETING, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(current) => word = current,
            }
        }
        Some(self.finish_delete(generation_wanted))
    }

    /// Owner: frees a slot whose delete was started, once its last pin is gone. Returns whether
    /// the slot (and so the object's bytes) is free now.
    pub(crate) fn finish_delete(&self, generation_wanted: u32) -> bool {
        let deleting = with_generation(generation_wanted, SEALED) | DELETING;
        self.word
            .compare_exchange(
                deleting,
                with_generation(generation_wanted.wrapping_add(1), FREE),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }

    /// Readers holding the object now (a snapshot: a reader may pin right after).
    pub(crate) fn pins(&self) -> u64 {
        self.word.load(Ordering::Acquire) & PINS_MASK
    }
}

#[cfg(all(test, not(manta_loom)))]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_and_stale_generations() {
        let slot = Slot::new();
        let generation = slot.claim().unwrap();
        assert_eq!(slot.claim(), None, "a claimed slot is not free");
        slot.place(128, 10);
        assert_eq!(slot.pin(generation), None, "not sealed yet");
        assert!(slot.seal(generation));
        assert_eq!(slot.pin(generation), Some((128, 10)));
        assert_eq!(slot.pin(generation.wrapping_add(1)), None, "another generation");
        assert_eq!(slot.delete(generation), Some(false), "a reader still holds it");
        assert_eq!(slot.pin(generation), None, "no new pins while deleting");
        assert!(!slot.finish_delete(generation));
        slot.unpin();
        assert!(slot.finish_delete(generation));
        assert_eq!(slot.pins(), 0);
        // The next object in this slot has a new generation; the old handle pins nothing.
        let next = slot.claim().unwrap();
        assert_ne!(next, generation);
        assert!(slot.seal(next));
        assert_eq!(slot.pin(generation), None);
        assert_eq!(slot.delete(next), Some(true));
    }

    #[test]
    fn abort_frees_an_unsealed_slot() {
        let slot = Slot::new();
        let generation = slot.claim().unwrap();
        assert!(slot.abort(generation));
        assert_eq!(slot.delete(generation), None);
        assert!(slot.claim().is_some());
    }
}

#[cfg(all(test, manta_loom))]
mod loom_models {
    use super::*;
    use loom::cell::UnsafeCell;
    use loom::sync::Arc;

    /// A reader pinning and reading an object while the owner deletes it and then reuses its
    /// bytes. The bytes are a loom `UnsafeCell`, so loom checks that every reuse (a write by the
    /// owner) happens-after every read by a reader that pinned, in every interleaving: the
    /// reader's unpin (Release) must be what the owner's free (AcqRel) synchronises with.
    #[test]
    fn bytes_are_never_reused_while_pinned() {
        loom::model(|| {
            let slot = Arc::new(Slot::new());
            let bytes = Arc::new(UnsafeCell::new(42u64));
            let generation = slot.claim().unwrap();
            slot.place(64, 8);
            // SAFETY (model): the owner writes the object before sealing it.
            bytes.with_mut(|value| unsafe { *value = 7 });
            assert!(slot.seal(generation));

            let reader = {
                let (slot, bytes) = (slot.clone(), bytes.clone());
                loom::thread::spawn(move || {
                    if let Some((offset, len)) = slot.pin(generation) {
                        assert_eq!((offset, len), (64, 8));
                        // SAFETY (model): reading a pinned, sealed object.
                        let value = bytes.with(|value| unsafe { *value });
                        assert_eq!(value, 7, "a pinned object changed under its reader");
                        slot.unpin();
                    }
                })
            };

            let mut free_now = slot.delete(generation).expect("the owner's object");
            while !free_now {
                loom::thread::yield_now();
                free_now = slot.finish_delete(generation);
            }
            // The bytes are the owner's again: reuse them for another object.
            // SAFETY (model): this is exactly what the index must make race-free.
            bytes.with_mut(|value| unsafe { *value = 0 });
            reader.join().unwrap();
            assert_eq!(slot.pins(), 0);
        });
    }
}
