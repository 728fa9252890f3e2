//! Fuzzes what a process finds when it maps an object store arena that others write: a
//! header and slot table of arbitrary bytes (opening must refuse what is bad), and a live
//! store whose shared index a misbehaving peer scribbles over (readers' pins must give a view
//! inside the mapping or nothing, and the store's own operations must return errors, never
//! panic).
#![no_main]

use std::os::unix::fs::FileExt;

use libfuzzer_sys::fuzz_target;
use manta_objectstore::{ObjectId, ObjectLocation, ObjectStore, StoreReader};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, data)) = data.split_first() else { return };
    if mode % 2 == 0 {
        raw_header(data);
    } else {
        scribbled_store(data);
    }
});

/// An arena file of arbitrary bytes.
fn raw_header(data: &[u8]) {
    let file = memfd();
    file.write_all_at(data, 0).expect("writing the arena");
    file.set_len(data.len() as u64 + 64 * 1024).expect("sizing the arena");
    let Ok(reader) = StoreReader::open(&fd_path(&file)) else { return };
    pin_all(&reader, data);
}

/// A live store with three objects, whose header and index get `(offset, byte)` patches.
fn scribbled_store(data: &[u8]) {
    let mut store = ObjectStore::create(16, 64 * 1024).expect("a small store");
    for n in 0..3u8 {
        store.put(ObjectId([n; 20]), &[n; 300]).expect("room for three objects");
    }
    let path = store.reader().arena().peer_path();
    let file = std::fs::OpenOptions::new().read(true).write(true).open(&path).expect("the arena");
    // The header and the slot table take the first 4 KiB (16 slots).
    for patch in data.chunks_exact(3) {
        let offset = u64::from(u16::from_le_bytes([patch[0], patch[1]]) % 4096);
        file.write_all_at(&[patch[2]], offset).expect("patching the arena");
    }
    if let Ok(reader) = StoreReader::open(&path) {
        pin_all(&reader, data);
    }
    for n in 0..3u8 {
        let _ = store.get(ObjectId([n; 20]));
        let _ = store.delete(ObjectId([n; 20]));
    }
    store.reclaim();
    let _ = store.put(ObjectId([9; 20]), &[9; 100]);
}

/// Pins the locations the input names (slot, generation) and reads each view in full.
fn pin_all(reader: &StoreReader, data: &[u8]) {
    for location in data.chunks_exact(8).take(16) {
        let slot = u32::from_le_bytes(location[..4].try_into().expect("4 bytes")) % 32;
        let generation = u32::from_le_bytes(location[4..].try_into().expect("4 bytes")) % 8;
        if let Some(view) = reader.pin(ObjectLocation { slot, generation }) {
            std::hint::black_box(view.iter().fold(0u8, |sum, byte| sum.wrapping_add(*byte)));
        }
    }
}

fn memfd() -> std::fs::File {
    // SAFETY: a valid NUL-terminated name; the result is checked.
    let fd = unsafe { libc::memfd_create(c"fuzz-arena".as_ptr(), 0) };
    assert!(fd >= 0, "memfd_create");
    // SAFETY: a fresh descriptor owned by nobody else.
    std::fs::File::from(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

fn fd_path(file: &std::fs::File) -> std::path::PathBuf {
    format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(file)).into()
}
