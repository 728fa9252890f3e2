//! The object API: `put`, `get_all`, `wait`, `cancel`, and the store's figures.

use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::core::{self, StoreStats};
use crate::error::TaskError;
use crate::objects::state::RefTable;
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

/// The values of `refs`, in order. Fails fast, as Ray's `get` of a list: the first ref (in
/// list order) found failed is the error, as soon as it fails, without waiting for the others.
pub fn get_all<T: DeserializeOwned>(refs: &[ObjectRef<T>]) -> Result<Vec<T>, TaskError> {
    if let Ok(core) = core::current() {
        for reference in refs {
            core.start_fetch_if_borrowed(&reference.raw);
        }
        let settled = |table: &RefTable, reference: &ObjectRef<T>| {
            !matches!(table.state(reference.raw.id), Some(State::Pending))
        };
        let failed = |table: &RefTable, reference: &ObjectRef<T>| {
            matches!(table.state(reference.raw.id), Some(State::Failed(_)))
        };
        core.wait_for_reporting(None, |table| {
            refs.iter().all(|reference| settled(table, reference))
                || refs.iter().any(|reference| failed(table, reference))
        });
        if let Some(State::Failed(error)) = refs
            .iter()
            .map(|reference| core.objects.state(reference.raw.id))
            .find(|state| matches!(state, Some(State::Failed(_))))
            .flatten()
        {
            return Err(error);
        }
    }
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
    let invalid = |reason: String| TaskError::Invalid { function: "wait".to_owned(), reason };
    // Ray: an empty list is ready at once, whatever `num_returns` says.
    if refs.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    if num_returns > refs.len() {
        return Err(invalid(format!(
            "num_returns ({num_returns}) exceeds the number of refs ({})",
            refs.len()
        )));
    }
    let mut seen = std::collections::HashSet::with_capacity(refs.len());
    if let Some(twice) = refs.iter().find(|reference| !seen.insert(reference.raw.id)) {
        return Err(invalid(format!(
            "the refs must be unique: object {} appears more than once",
            twice.raw.id
        )));
    }
    for reference in refs {
        core.start_fetch_if_borrowed(&reference.raw);
    }
    let deadline = timeout.map(|timeout| Instant::now() + timeout);
    let ready = |table: &RefTable, reference: &ObjectRef<T>| {
        table.state(reference.raw.id).is_none_or(|state| !matches!(state, State::Pending))
    };
    core.wait_for_reporting(deadline, |table| {
        refs.iter().filter(|reference| ready(table, reference)).count() >= num_returns
    });
    // A ref that became ready since the wait ended may be counted: states only leave `Pending`.
    let mut taken = 0;
    let (mut done, mut pending) = (Vec::new(), Vec::new());
    for reference in refs {
        let is_ready =
            core.objects.state(reference.raw.id).is_none_or(|state| !matches!(state, State::Pending));
        if is_ready && taken < num_returns {
            taken += 1;
            done.push(reference.clone());
        } else {
            pending.push(reference.clone());
        }
    }
    Ok((done, pending))
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
    list_actors_as("list_actors")
}

/// A live named actor, as [`list_named_actors`] lists it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NamedActor {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

/// The live (not dead) named actors of this job's namespace, or of every namespace (Ray's
/// `ray.util.list_named_actors(all_namespaces)`), sorted.
pub fn list_named_actors(all_namespaces: bool) -> Result<Vec<NamedActor>, TaskError> {
    let namespace = core::current()?.namespace.clone();
    let mut named: Vec<NamedActor> = list_actors_as("list_named_actors")?
        .into_iter()
        .filter(|info| info.state != manta_gcs::wire::ActorState::Dead)
        .filter(|info| all_namespaces || info.namespace == namespace)
        .filter_map(|info| info.name.map(|name| NamedActor { namespace: info.namespace, name }))
        .collect();
    named.sort();
    Ok(named)
}

fn list_actors_as(function: &str) -> Result<Vec<manta_gcs::wire::ActorInfo>, TaskError> {
    let core = core::current()?;
    let gcs = core.gcs.clone();
    core.block_on(async move { gcs.ask(manta_gcs::requests::ListActors).await })
        .map_err(|error| TaskError::unreachable(function, "the GCS", error))?
        .map_err(|error| TaskError::unreachable(function, "the GCS", error))
}
