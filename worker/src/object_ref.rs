//! `ObjectRef<T>` and the owner's store of small results.
//!
//! The process that submitted a task owns its result: the result comes back inline in the
//! task's reply and waits in this store until `get` takes it. A `get` never hangs silently: it
//! returns the value, the task's error, or `Timeout` when a deadline was given.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use crate::error::TaskError;

/// What the owner knows of one object.
#[derive(Debug, Clone)]
enum Slot {
    Pending,
    Ready(Arc<Vec<u8>>),
    Failed(TaskError),
}

/// Results owned by this process, by object id.
#[derive(Debug, Default)]
pub(crate) struct OwnerStore {
    slots: Mutex<HashMap<u64, Slot>>,
    changed: Condvar,
    next_id: AtomicU64,
}

impl OwnerStore {
    pub(crate) fn create(&self) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        self.lock().insert(id, Slot::Pending);
        id
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Slot>> {
        // A panic while holding this lock cannot leave the map half-changed (single inserts),
        // so a poisoned lock is still usable.
        self.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn complete(&self, id: u64, outcome: Result<Vec<u8>, TaskError>) {
        let slot = match outcome {
            Ok(bytes) => Slot::Ready(Arc::new(bytes)),
            Err(error) => Slot::Failed(error),
        };
        if let Some(entry) = self.lock().get_mut(&id) {
            *entry = slot;
        }
        self.changed.notify_all();
    }

    fn wait(&self, id: u64, timeout: Option<Duration>) -> Result<Arc<Vec<u8>>, TaskError> {
        let deadline = timeout.map(|timeout| Instant::now() + timeout);
        let mut slots = self.lock();
        loop {
            match slots.get(&id) {
                Some(Slot::Ready(bytes)) => return Ok(bytes.clone()),
                Some(Slot::Failed(error)) => return Err(error.clone()),
                None => return Err(TaskError::Released),
                Some(Slot::Pending) => {}
            }
            slots = match deadline {
                None => self.changed.wait(slots).unwrap_or_else(std::sync::PoisonError::into_inner),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(TaskError::Timeout(timeout.unwrap_or_default()));
                    }
                    self.changed
                        .wait_timeout(slots, left)
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .0
                }
            };
        }
    }

    fn release(&self, id: u64) {
        self.lock().remove(&id);
    }
}

/// A reference to the result of a task. Dropping the last reference frees the result.
pub struct ObjectRef<T> {
    id: u64,
    store: Arc<OwnerStore>,
    _value: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for ObjectRef<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ObjectRef({})", self.id)
    }
}

impl<T: DeserializeOwned> ObjectRef<T> {
    pub(crate) fn new(id: u64, store: Arc<OwnerStore>) -> Self {
        ObjectRef { id, store, _value: PhantomData }
    }

    /// Waits for the value. Blocks the calling thread: call it from the driver's code, not from
    /// inside an actor's handler.
    pub fn get(&self) -> Result<T, TaskError> {
        self.decode(self.store.wait(self.id, None)?)
    }

    /// Waits for the value at most `timeout`.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, TaskError> {
        self.decode(self.store.wait(self.id, Some(timeout))?)
    }

    fn decode(&self, bytes: Arc<Vec<u8>>) -> Result<T, TaskError> {
        rmp_serde::from_slice(&bytes).map_err(|error| TaskError::Codec(error.to_string()))
    }
}

impl<T> Drop for ObjectRef<T> {
    fn drop(&mut self) {
        self.store.release(self.id);
    }
}
