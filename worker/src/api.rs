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
        // Amortised over the wake-ups: the refs before `cursor` are settled for good, and the
        // whole list is searched for a failure only when some object failed since the last look.
        let (mut cursor, mut failures_seen, mut failed_at) = (0, None, None);
        core.wait_for_reporting(None, |table| {
            let failures = core.objects.failures();
            if failures_seen != Some(failures) {
                failures_seen = Some(failures);
                failed_at = refs.iter().position(|reference| failed(table, reference));
                if failed_at.is_some() {
                    return true;
                }
            }
            while cursor < refs.len() && settled(table, &refs[cursor]) {
                cursor += 1;
            }
            cursor == refs.len()
        });
        // A failed object stays failed: its `get` is the error.
        if let Some(Err(error)) = failed_at.map(|index| refs[index].get()) {
            return Err(error);
        }
    }
    refs.iter().map(ObjectRef::get).collect()
}

/// Frees the objects of `refs` now, whoever still refers to them (Ray's `ray.internal.free`):
/// their shared-memory copies are deleted, and every later `get`, and every task that takes one
/// as an argument, fails with [`TaskError::ObjectFreed`]. A borrowed ref asks its owner.
pub fn free<T>(refs: &[ObjectRef<T>]) -> Result<(), TaskError> {
    let core = core::current()?;
    for reference in refs {
        let (released, owner) = core.objects.free(reference.raw.id);
        core.clean_up(released);
        if let Some(owner) = owner {
            let (owner, id) = (core.owner_of(owner), reference.raw.id);
            core.arbiter.spawn(async move {
                let _ = owner.tell(manta_proto::worker::FreeObject { id }).await;
            });
        }
    }
    Ok(())
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
    // The ids' own cheap hash: `wait` over 1,000 refs is called 1,000 times in a row.
    let mut seen = std::collections::HashSet::with_capacity_and_hasher(
        refs.len(),
        crate::objects::state::IdHashing::default(),
    );
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
    // Each wake-up looks only at the refs not seen ready yet.
    let mut pending: Vec<usize> = (0..refs.len()).collect();
    core.wait_for_reporting(deadline, |table| {
        pending.retain(|index| !ready(table, &refs[*index]));
        refs.len() - pending.len() >= num_returns
    });
    // Split as the last look under the lock saw them (`pending` kept their order).
    let mut taken = 0;
    let mut not_ready = pending.into_iter().peekable();
    let (mut done, mut rest) = (Vec::new(), Vec::new());
    for (index, reference) in refs.iter().enumerate() {
        let is_ready = not_ready.next_if_eq(&index).is_none();
        if is_ready && taken < num_returns {
            taken += 1;
            done.push(reference.clone());
        } else {
            rest.push(reference.clone());
        }
    }
    Ok((done, rest))
}

/// Cancels the task producing `reference` (Ray's `ray.cancel`, with its defaults: not forced,
/// recursive): its `get` fails with [`TaskError::Cancelled`] at once, and tasks that take it
/// fail too. One not running yet never runs; a running one goes on on its worker, which is
/// told ([`is_cancelled`](crate::is_cancelled) turns true there, so a long task may stop
/// early), and its result is dropped; the tasks it submitted are cancelled the same way (and
/// any it submits after). Works from any process holding the ref (a borrower asks the owner).
/// Returns whether it was cancelled (`false` once the task is over).
pub fn cancel<T>(reference: &ObjectRef<T>) -> bool {
    cancel_with(reference, CancelOptions::default())
}

/// Cancels the task producing `reference`, killing its worker if it is running (Ray's
/// `force=True`); the tasks it submitted lose their owner with it and end too. Returns whether
/// it was cancelled.
pub fn cancel_force<T>(reference: &ObjectRef<T>) -> bool {
    cancel_with(reference, CancelOptions { force: true, ..CancelOptions::default() })
}

/// How [`cancel_with`] cancels (Ray's `ray.cancel` arguments).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CancelOptions {
    /// Kill the task's worker if it is running (default `false`).
    pub force: bool,
    /// Cancel the tasks it submitted too (default `true`).
    pub recursive: bool,
}

impl Default for CancelOptions {
    fn default() -> Self {
        CancelOptions { force: false, recursive: true }
    }
}

/// [`cancel`] with Ray's `force` and `recursive` given.
pub fn cancel_with<T>(reference: &ObjectRef<T>, options: CancelOptions) -> bool {
    crate::submit::cancel(&reference.raw, options.force, options.recursive)
}

/// The figures of this process's node's object store (asked of the store's process when it is
/// another); `None` before `init` or when the store cannot be asked. Never call it on the core
/// worker's own thread.
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

/// Every node of the cluster, alive or dead, with its address, resources and labels (Ray's
/// `ray.nodes()`).
pub fn nodes() -> Result<Vec<manta_gcs::wire::NodeInfo>, TaskError> {
    let core = core::current()?;
    let gcs = core.gcs.clone();
    core.block_on(async move { gcs.ask(manta_gcs::requests::GetAllNodes).await })
        .map_err(|error| TaskError::unreachable("nodes", "the GCS", error))?
        .map_err(|error| TaskError::unreachable("nodes", "the GCS", error))
}

/// The resources of the cluster's live nodes, summed by name (Ray's `ray.cluster_resources`):
/// placement groups' bundle resources (`CPU_group_<id>`) included once committed.
pub fn cluster_resources() -> Result<std::collections::BTreeMap<String, f64>, TaskError> {
    summed_view("cluster_resources", |load| &load.total)
}

/// The resources free now on the cluster's live nodes, summed by name, as the nodes last
/// reported them (Ray's `ray.available_resources`).
pub fn available_resources() -> Result<std::collections::BTreeMap<String, f64>, TaskError> {
    summed_view("available_resources", |load| &load.available)
}

fn summed_view(
    function: &str,
    amounts: impl Fn(&manta_gcs::wire::NodeLoad) -> &Vec<(String, f64)>,
) -> Result<std::collections::BTreeMap<String, f64>, TaskError> {
    let core = core::current()?;
    let gcs = core.gcs.clone();
    let view = core
        .block_on(async move { gcs.ask(manta_gcs::requests::GetClusterView).await })
        .map_err(|error| TaskError::unreachable(function, "the GCS", error))?
        .map_err(|error| TaskError::unreachable(function, "the GCS", error))?;
    let mut summed = std::collections::BTreeMap::new();
    for load in view.iter().filter(|load| load.state == manta_gcs::wire::NodeState::Alive) {
        for (name, amount) in amounts(load) {
            *summed.entry(name.clone()).or_insert(0.0) += amount;
        }
    }
    Ok(summed)
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
