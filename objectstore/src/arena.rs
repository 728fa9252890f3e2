//! The arena: one shared-memory mapping per node, created once by the store and mapped once by
//! every process that reads objects.
//!
//! It is an anonymous `memfd` (nothing to clean up in /dev/shm if the node dies), sized once and
//! never grown. Other processes of the same user map it through `/proc/<pid>/fd/<fd>`
//! ([`Arena::peer_path`]). Layout: a header, the slot table (the shared index), then the data
//! region that the offset allocator manages.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

use crate::index::{Slot, SLOT_BYTES};

const MAGIC: [u8; 8] = *b"MANTAOBJ";
const LAYOUT_VERSION: u32 = 1;
const HEADER_BYTES: usize = 64;

/// Opening or creating an arena failed.
#[derive(Debug, thiserror::Error)]
pub enum ArenaError {
    /// A system call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The operating system's error.
        source: io::Error,
    },
    /// The file is not an arena of this layout version.
    #[error("not a Manta object arena: {0}")]
    Invalid(String),
}

fn os_error(what: &'static str) -> ArenaError {
    ArenaError::Io { what, source: io::Error::last_os_error() }
}

/// A shared mapping of the node's object memory.
#[derive(Debug)]
pub struct Arena {
    base: NonNull<u8>,
    len: usize,
    slot_count: usize,
    data_offset: usize,
    file: File,
}

// SAFETY: the mapping is shared memory whose concurrent access follows the index protocol:
// slot words are atomics; an object's bytes are written only by its creator before the seal
// and are immutable while any reader holds a pin. `Arena` itself is only a pointer and a length.
unsafe impl Send for Arena {}
// SAFETY: as above; no method hands out `&mut` to shared bytes without the index's exclusion.
unsafe impl Sync for Arena {}

impl Arena {
    /// Creates an arena with `slot_count` object slots and `data_bytes` of object memory.
    pub fn create(slot_count: usize, data_bytes: u64) -> Result<Arena, ArenaError> {
        let data_offset = (HEADER_BYTES + slot_count * SLOT_BYTES).next_multiple_of(4096);
        let len = data_offset as u64 + data_bytes;
        let len_usize =
            usize::try_from(len).map_err(|_| ArenaError::Invalid("larger than the address space".into()))?;
        // SAFETY: a valid NUL-terminated name and flags; the result is checked.
        let fd = unsafe { libc::memfd_create(c"manta-objects".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(os_error("memfd_create"));
        }
        // SAFETY: `fd` was just returned by memfd_create and is owned by nobody else.
        let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        file.set_len(len).map_err(|source| ArenaError::Io { what: "sizing the arena", source })?;
        let base = map(&file, len_usize)?;
        // SAFETY: the mapping is `len` bytes long, writable, and nobody else has it yet.
        unsafe {
            let header = base.as_ptr();
            std::ptr::copy_nonoverlapping(MAGIC.as_ptr(), header, 8);
            header.add(8).cast::<u32>().write_unaligned(LAYOUT_VERSION);
            header.add(12).cast::<u32>().write_unaligned(slot_count as u32);
            header.add(16).cast::<u64>().write_unaligned(data_offset as u64);
        }
        Ok(Arena { base, len: len_usize, slot_count, data_offset, file })
    }

    /// Maps an arena created by another process (from [`Arena::peer_path`]).
    pub fn open(path: &Path) -> Result<Arena, ArenaError> {
        let file = File::options()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| ArenaError::Io { what: "opening the arena", source })?;
        let len =
            file.metadata().map_err(|source| ArenaError::Io { what: "sizing the arena", source })?.len();
        let len =
            usize::try_from(len).map_err(|_| ArenaError::Invalid("larger than the address space".into()))?;
        if len < HEADER_BYTES {
            return Err(ArenaError::Invalid(format!("{len} bytes is too small")));
        }
        let base = map(&file, len)?;
        // SAFETY: the mapping is at least HEADER_BYTES long.
        let (magic, version, slot_count, data_offset) = unsafe {
            let header = base.as_ptr();
            let mut magic = [0u8; 8];
            std::ptr::copy_nonoverlapping(header, magic.as_mut_ptr(), 8);
            (
                magic,
                header.add(8).cast::<u32>().read_unaligned(),
                header.add(12).cast::<u32>().read_unaligned() as usize,
                header.add(16).cast::<u64>().read_unaligned(),
            )
        };
        let arena = Arena { base, len, slot_count, data_offset: data_offset as usize, file };
        if magic != MAGIC || version != LAYOUT_VERSION {
            return Err(ArenaError::Invalid(format!("magic {magic:?}, layout version {version}")));
        }
        if data_offset as usize > len || HEADER_BYTES + slot_count * SLOT_BYTES > data_offset as usize {
            return Err(ArenaError::Invalid(format!(
                "{slot_count} slots and data at {data_offset} in {len} bytes"
            )));
        }
        Ok(arena)
    }

    /// The path another process of this user opens to map the same arena.
    pub fn peer_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/fd/{}", std::process::id(), self.file.as_raw_fd()))
    }

    /// Bytes of object memory.
    pub fn data_bytes(&self) -> u64 {
        (self.len - self.data_offset) as u64
    }

    /// Number of object slots.
    pub fn slot_count(&self) -> usize {
        self.slot_count
    }

    /// The slot table in shared memory.
    pub(crate) fn slots(&self) -> &[Slot] {
        // SAFETY: the table lies inside the mapping (checked at open/create), is aligned (the
        // mapping is page-aligned and HEADER_BYTES is a multiple of Slot's 64-byte alignment),
        // and every bit pattern is a valid `Slot` (three atomics; a new memfd is zeroed).
        unsafe {
            std::slice::from_raw_parts(self.base.as_ptr().add(HEADER_BYTES).cast::<Slot>(), self.slot_count)
        }
    }

    /// A pointer to `len` bytes of object memory at data offset `offset`, if in bounds.
    pub(crate) fn data_ptr(&self, offset: u64, len: u64) -> Option<NonNull<u8>> {
        let end = offset.checked_add(len)?;
        if end > self.data_bytes() {
            return None;
        }
        // SAFETY: in bounds of the mapping, as just checked.
        Some(unsafe { NonNull::new_unchecked(self.base.as_ptr().add(self.data_offset + offset as usize)) })
    }

    /// Gives the whole pages inside `len` bytes of object memory at data offset `offset` back
    /// to the kernel (the memory reads as zeros afterwards). Only for a range nobody uses: a
    /// freed block with no reader left. Returns the bytes given back.
    pub(crate) fn release_pages(&self, offset: u64, len: u64) -> u64 {
        const PAGE: u64 = 4096;
        let Some(end) = offset.checked_add(len).filter(|end| *end <= self.data_bytes()) else { return 0 };
        let start = (self.data_offset as u64 + offset).next_multiple_of(PAGE);
        let end = (self.data_offset as u64 + end) / PAGE * PAGE;
        if end <= start {
            return 0;
        }
        // SAFETY: punching a hole in a memfd we own, inside its size (KEEP_SIZE): the mapping
        // stays valid and reads zeros there; the caller guarantees no one uses those bytes.
        let punched = unsafe {
            libc::fallocate(
                self.file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                start as libc::off_t,
                (end - start) as libc::off_t,
            )
        };
        if punched == 0 {
            end - start
        } else {
            0
        }
    }

    /// Bytes of shared memory the arena holds now (its pages in use, header included).
    pub fn resident_bytes(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        self.file.metadata().map_or(0, |metadata| metadata.blocks() * 512)
    }

    /// Whether `ptr` points into this arena's object memory (for zero-copy checks).
    pub fn contains(&self, ptr: *const u8) -> bool {
        let start = self.base.as_ptr() as usize + self.data_offset;
        (start..self.base.as_ptr() as usize + self.len).contains(&(ptr as usize))
    }
}

fn map(file: &File, len: usize) -> Result<NonNull<u8>, ArenaError> {
    // SAFETY: mapping a regular file descriptor we own, shared, for its whole length.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(os_error("mmap"));
    }
    NonNull::new(ptr.cast::<u8>()).ok_or_else(|| ArenaError::Invalid("mmap returned null".into()))
}

impl Drop for Arena {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping made in `map`; views hold an `Arc<Arena>`, so
        // nothing points into it any more.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.len);
        }
    }
}
