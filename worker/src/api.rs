//! The object API: `put`, `get_all`, `wait`, `cancel`, and the store's figures.

use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::core::{self, StoreStats};
use crate::error::TaskError;
use crate::objects::{ObjectRef, State};

/// Stores `value` as an immutable object owned by this process and returns a ref to it. Small
/// values live in this process; large ones go to the node's shared-memory store (a
/// [`Buffer`](crate::Buffer) inside is written once, into place).
pub fn put<T: Serialize>(value: T) -> Result<ObjectRef<T>, TaskError> {
    let core = core::current()?;
    let encoded =
        crate::codec::encode(&value).map_err(|error| TaskError::Encode { reason: error.to_string() })?;
    Ok(ObjectRef::from_raw(core.put_encoded(encoded)?))
}

/// The values of `refs`, in order; the first error if any failed.
pub fn get_all<T: DeserializeOwned>(refs: &[ObjectRef<T>]) -> Result<Vec<T>, TaskError> {
    refs.iter().map(ObjectRef::get).collect()
}

/// What [`wait`] returns: the ready refs and the others.
pub type WaitResult<T> = (Vec<ObjectRef<T>>, Vec<ObjectRef<T>>);

/// Waits until `num_returns` of `refs` are ready (have a value or an error) or `timeout`
/// passes. Returns `(ready, not_ready)`, each in the order of `refs`; `ready` holds at most
/// `num_returns` refs.
pub fn wait<T>(
    refs: &[ObjectRef<T>],
    num_returns: usize,
    timeout: Option<Duration>,
) -> Result<WaitResult<T>, TaskError> {
    let core = core::current()?;
    if num_returns > refs.len() {
        let reason = format!("num_returns ({num_returns}) exceeds the number of refs ({})", refs.len());
        return Err(TaskError::Invalid { function: "wait".to_owned(), reason });
    }
    for reference in refs {
        core.start_fetch_if_borrowed(&reference.raw);
    }
    let deadline = timeout.map(|timeout| Instant::now() + timeout);
    loop {
        let ready: Vec<bool> = refs
            .iter()
            .map(|reference| {
                core.objects.state(reference.raw.id).is_none_or(|state| !matches!(state, State::Pending))
            })
            .collect();
        let count = ready.iter().filter(|ready| **ready).count();
        let expired = deadline.is_some_and(|deadline| Instant::now() >= deadline);
        if count >= num_returns || expired {
            let mut taken = 0;
            let (mut done, mut pending) = (Vec::new(), Vec::new());
            for (reference, ready) in refs.iter().zip(ready) {
                if ready && taken < num_returns {
                    taken += 1;
                    done.push(reference.clone());
                } else {
                    pending.push(reference.clone());
                }
            }
            return Ok((done, pending));
        }
        core.wait_any_change_reporting(deadline);
    }
}

/// Cancels the task producing `reference` if it has not started running; its `get` then fails
/// with [`TaskError::Cancelled`]. Returns whether it was cancelled.
pub fn cancel<T>(reference: &ObjectRef<T>) -> bool {
    crate::submit::cancel(&reference.raw, false)
}

/// Cancels the task producing `reference`, killing its worker if it is running (Ray's
/// `force=True`). Returns whether it was cancelled.
pub fn cancel_force<T>(reference: &ObjectRef<T>) -> bool {
    crate::submit::cancel(&reference.raw, true)
}

/// The node's object store figures (in the process that hosts it: the driver of an embedded
/// cluster); `None` elsewhere.
pub fn object_store_stats() -> Option<StoreStats> {
    core::try_current()?.store_stats()
}

/// Whether `bytes` lie in the node's shared-memory object store (a zero-copy view).
pub fn is_in_object_store(bytes: &[u8]) -> bool {
    core::try_current().is_some_and(|core| core.store.reader().arena().contains(bytes.as_ptr()))
}

/// Objects this process owns and borrows right now (for tests and diagnostics).
pub fn local_object_counts() -> (usize, usize) {
    core::try_current().map_or((0, 0), |core| core.objects.counts())
}

/// Every worker process the cluster has started, alive or dead, from the GCS's worker table
/// (Ray's `ray.util.state.list_workers`).
pub fn list_workers() -> Result<Vec<manta_gcs::wire::WorkerInfo>, TaskError> {
    let core = core::current()?;
    let gcs = core.gcs.clone();
    core.block_on(async move { gcs.ask(manta_gcs::requests::GetAllWorkers).await })
        .map_err(|error| TaskError::unreachable("list_workers", "the GCS", error))?
        .map_err(|error| TaskError::unreachable("list_workers", "the GCS", error))
}

/// Every actor's record in the GCS (Ray's `ray.util.state.list_actors`).
pub fn list_actors() -> Result<Vec<manta_gcs::wire::ActorInfo>, TaskError> {
    let core = core::current()?;
    let gcs = core.gcs.clone();
    core.block_on(async move { gcs.ask(manta_gcs::requests::ListActors).await })
        .map_err(|error| TaskError::unreachable("list_actors", "the GCS", error))?
        .map_err(|error| TaskError::unreachable("list_actors", "the GCS", error))
}
