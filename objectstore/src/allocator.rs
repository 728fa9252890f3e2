//! The offset allocator: which byte ranges of the arena are free.
//!
//! Best fit over a size-ordered set of free blocks, with neighbours merged on free, so a store
//! that is emptied returns to one free block. O(log n) per operation in the number of free
//! blocks. The allocator only hands out offsets: it never touches the arena's memory, so its
//! metadata lives outside shared memory where a misbehaving worker cannot corrupt it.

use std::collections::{BTreeMap, BTreeSet};

/// Every allocation starts on this boundary, so any numeric element type can be viewed in place.
pub(crate) const ALIGN_BYTES: u64 = 64;

/// A range handed out by [`OffsetAllocator::allocate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Block {
    pub(crate) offset: u64,
    pub(crate) len: u64,
}

#[derive(Debug)]
pub(crate) struct OffsetAllocator {
    capacity: u64,
    /// Free blocks by offset, with their lengths.
    free_by_offset: BTreeMap<u64, u64>,
    /// The same free blocks by (length, offset), for best fit.
    free_by_len: BTreeSet<(u64, u64)>,
    /// Lengths of the blocks handed out, by offset.
    used: BTreeMap<u64, u64>,
    used_bytes: u64,
}

fn round_up(bytes: u64) -> Option<u64> {
    bytes.max(1).checked_add(ALIGN_BYTES - 1).map(|padded| padded / ALIGN_BYTES * ALIGN_BYTES)
}

impl OffsetAllocator {
    /// An allocator over `capacity` bytes (rounded down to the alignment).
    pub(crate) fn new(capacity: u64) -> Self {
        let capacity = capacity / ALIGN_BYTES * ALIGN_BYTES;
        let mut allocator = OffsetAllocator {
            capacity,
            free_by_offset: BTreeMap::new(),
            free_by_len: BTreeSet::new(),
            used: BTreeMap::new(),
            used_bytes: 0,
        };
        if capacity > 0 {
            allocator.insert_free(0, capacity);
        }
        allocator
    }

    fn insert_free(&mut self, offset: u64, len: u64) {
        self.free_by_offset.insert(offset, len);
        self.free_by_len.insert((len, offset));
    }

    fn remove_free(&mut self, offset: u64, len: u64) {
        self.free_by_offset.remove(&offset);
        self.free_by_len.remove(&(len, offset));
    }

    /// A block of at least `bytes` (a zero-byte object still takes one aligned unit, so every
    /// object has a distinct offset), or `None` when no free block is large enough.
    pub(crate) fn allocate(&mut self, bytes: u64) -> Option<Block> {
        let len = round_up(bytes)?;
        let &(free_len, offset) = self.free_by_len.range((len, 0)..).next()?;
        self.remove_free(offset, free_len);
        if free_len > len {
            self.insert_free(offset + len, free_len - len);
        }
        self.used.insert(offset, len);
        self.used_bytes += len;
        Some(Block { offset, len })
    }

    /// Returns the block at `offset` and merges it with free neighbours. Returns its length,
    /// or `None` if nothing is allocated there (a double free is refused, not corrupting).
    pub(crate) fn free(&mut self, offset: u64) -> Option<u64> {
        let len = self.used.remove(&offset)?;
        self.used_bytes -= len;
        let mut start = offset;
        let mut merged = len;
        if let Some((&before, &before_len)) = self.free_by_offset.range(..offset).next_back() {
            if before + before_len == offset {
                self.remove_free(before, before_len);
                start = before;
                merged += before_len;
            }
        }
        let end = offset + len;
        if let Some(&after_len) = self.free_by_offset.get(&end) {
            self.remove_free(end, after_len);
            merged += after_len;
        }
        self.insert_free(start, merged);
        Some(len)
    }

    /// Bytes handed out (after rounding).
    pub(crate) fn used_bytes(&self) -> u64 {
        self.used_bytes
    }

    /// Bytes managed in all.
    pub(crate) fn capacity(&self) -> u64 {
        self.capacity
    }

    /// The free blocks of at least `len` bytes, as (offset, length).
    pub(crate) fn free_blocks_at_least(&self, len: u64) -> Vec<(u64, u64)> {
        self.free_by_len.range((len, 0)..).map(|&(len, offset)| (offset, len)).collect()
    }

    /// The largest block that could be allocated now.
    pub(crate) fn largest_free(&self) -> u64 {
        self.free_by_len.iter().next_back().map_or(0, |&(len, _)| len)
    }

    #[cfg(test)]
    fn free_blocks(&self) -> usize {
        self.free_by_offset.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn emptied_allocator_is_one_block_again() {
        let mut allocator = OffsetAllocator::new(1 << 20);
        let blocks: Vec<Block> = (1..50).map(|index| allocator.allocate(index * 100).unwrap()).collect();
        for block in blocks.iter().step_by(2).chain(blocks.iter().skip(1).step_by(2)) {
            assert_eq!(allocator.free(block.offset), Some(block.len));
        }
        assert_eq!(allocator.used_bytes(), 0);
        assert_eq!(allocator.free_blocks(), 1);
        assert_eq!(allocator.largest_free(), 1 << 20);
    }

    #[test]
    fn full_and_double_free() {
        let mut allocator = OffsetAllocator::new(1024);
        let block = allocator.allocate(1000).unwrap();
        assert_eq!(block.len, 1024);
        assert_eq!(allocator.allocate(1), None);
        assert_eq!(allocator.free(block.offset), Some(1024));
        assert_eq!(allocator.free(block.offset), None, "a double free is refused");
        assert_eq!(allocator.allocate(u64::MAX), None);
    }

    proptest! {
        /// Any sequence of allocations and frees: blocks never overlap, stay in bounds and
        /// aligned, the byte count matches, and freeing everything leaves one free block.
        #[test]
        fn blocks_never_overlap(ops in proptest::collection::vec((any::<bool>(), 0u64..5000, any::<usize>()), 1..300)) {
            let capacity = 64 * 1024;
            let mut allocator = OffsetAllocator::new(capacity);
            let mut live: Vec<Block> = Vec::new();
            for (allocate, bytes, pick) in ops {
                if allocate || live.is_empty() {
                    match allocator.allocate(bytes) {
                        Some(block) => {
                            prop_assert_eq!(block.offset % ALIGN_BYTES, 0);
                            prop_assert!(block.len >= bytes.max(1));
                            prop_assert!(block.offset + block.len <= capacity);
                            for other in &live {
                                prop_assert!(block.offset + block.len <= other.offset || other.offset + other.len <= block.offset);
                            }
                            live.push(block);
                        }
                        None => prop_assert!(allocator.largest_free() < round_up(bytes).unwrap()),
                    }
                } else {
                    let block = live.swap_remove(pick % live.len());
                    prop_assert_eq!(allocator.free(block.offset), Some(block.len));
                }
                prop_assert_eq!(allocator.used_bytes(), live.iter().map(|block| block.len).sum::<u64>());
            }
            for block in live {
                allocator.free(block.offset);
            }
            prop_assert_eq!(allocator.free_blocks(), 1);
            prop_assert_eq!(allocator.largest_free(), capacity);
        }
    }
}
