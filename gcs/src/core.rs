//! The GCS as a plain state machine: calls in, records and publications out. No clock (times
//! are passed in), no socket; the actor shell around it moves messages and sends publications.
//! All state lives in the [`Storage`], so a core rebuilt over the same storage carries on where
//! the previous one stopped (the basis of a GCS restart without loss).

use std::collections::{BTreeMap, BTreeSet};

use manta_transport::NodeId;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::storage::{Storage, StorageError, Table, Write};
use crate::wire::{
    ActorId, ActorInfo, ActorState, Change, Channel, JobId, JobInfo, NodeInfo, NodeState, WorkerInfo,
};
pub use manta_proto::gcs::{GcsError, SubscriberId};

/// A change to deliver to one subscriber.
#[derive(Debug, Clone, PartialEq)]
pub struct Publication {
    /// Who.
    pub subscriber: SubscriberId,
    /// What changed.
    pub change: Change,
}

/// The global control store's logic over a storage backend.
#[derive(Debug)]
pub struct GcsCore<S: Storage> {
    storage: S,
    subscriptions: BTreeMap<Channel, BTreeSet<SubscriberId>>,
    outbox: Vec<Publication>,
    /// Each node's free resources as it last reported them (not stored: a restarted GCS hears
    /// them again within a report period).
    loads: BTreeMap<NodeId, Load>,
    /// The nodes' records as stored, decoded once (every raylet reads the cluster view ten
    /// times a second, and every report names its node); `None` if the stored table did not
    /// decode, and then read from storage each time (its error reaches the caller).
    node_cache: Option<BTreeMap<NodeId, NodeInfo>>,
    /// Dead actors whose records are kept, oldest death first (rebuilt from the table at start,
    /// in its order); beyond [`GcsCore::dead_actors_kept`] the oldest record is forgotten.
    dead_actors: std::collections::VecDeque<ActorId>,
    dead_actors_kept: usize,
}

/// Dead actors' records kept at most (Ray's `maximum_gcs_destroyed_actor_cached_count`).
pub const DEAD_ACTORS_KEPT: usize = 100_000;

/// A node's last report: its free resources, its waiting lease requests by demand, and its
/// total when that changed since it registered.
type Load = (Vec<(String, f64)>, Vec<(String, u32)>, Option<Vec<(String, f64)>>);

fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    // Records are plain data; encoding into memory cannot fail.
    rmp_serde::to_vec(record).expect("GCS records encode into memory")
}

/// Bytes read back from storage: only this module writes these tables, so a record that does
/// not decode means a damaged or foreign backend. An error for the caller, never a panic.
fn decode<T: DeserializeOwned>(table: Table, bytes: &[u8]) -> Result<T, GcsError> {
    rmp_serde::from_slice(bytes)
        .map_err(|error| GcsError::BadRecord { table: format!("{table:?}"), detail: error.to_string() })
}

fn actor_id_of(bytes: Vec<u8>) -> Result<ActorId, GcsError> {
    let len = bytes.len();
    bytes.try_into().map(ActorId).map_err(|_| GcsError::BadRecord {
        table: format!("{:?}", Table::ActorNames),
        detail: format!("an actor id of {len} bytes"),
    })
}

impl From<StorageError> for GcsError {
    fn from(error: StorageError) -> Self {
        GcsError::Storage(error.0)
    }
}

fn joined_key(namespace: &str, name: &str) -> Result<Vec<u8>, GcsError> {
    for part in [namespace, name] {
        if part.contains('\0') {
            return Err(GcsError::BadName(part.to_owned()));
        }
    }
    Ok([namespace.as_bytes(), b"\0", name.as_bytes()].concat())
}

impl<S: Storage> GcsCore<S> {
    /// A core over `storage` (empty, or left by a previous core).
    pub fn new(storage: S) -> Self {
        let mut core = GcsCore {
            storage,
            subscriptions: BTreeMap::new(),
            outbox: Vec::new(),
            loads: BTreeMap::new(),
            node_cache: None,
            dead_actors: std::collections::VecDeque::new(),
            dead_actors_kept: DEAD_ACTORS_KEPT,
        };
        core.dead_actors = core
            .read_all::<ActorInfo>(Table::Actors)
            .map(|actors| {
                actors
                    .into_iter()
                    .filter(|info| info.state == ActorState::Dead)
                    .map(|info| info.actor_id)
                    .collect()
            })
            .unwrap_or_default();
        core.node_cache = core
            .read_all::<NodeInfo>(Table::Nodes)
            .ok()
            .map(|nodes| nodes.into_iter().map(|info| (info.node_id, info)).collect());
        core
    }

    fn store_node(&mut self, info: &NodeInfo) -> Result<(), GcsError> {
        self.storage.put(Table::Nodes, &info.node_id.0, encode(info))?;
        if let Some(cache) = &mut self.node_cache {
            cache.insert(info.node_id, info.clone());
        }
        Ok(())
    }

    /// Gives the storage back (to rebuild a core over it, as after a restart).
    pub fn into_storage(self) -> S {
        self.storage
    }

    fn read<T: DeserializeOwned>(&self, table: Table, key: &[u8]) -> Result<Option<T>, GcsError> {
        self.storage.get(table, key)?.map(|bytes| decode(table, &bytes)).transpose()
    }

    fn read_all<T: DeserializeOwned>(&self, table: Table) -> Result<Vec<T>, GcsError> {
        self.storage.scan(table, b"")?.iter().map(|(_, bytes)| decode(table, bytes)).collect()
    }

    fn publish(&mut self, change: Change) {
        if let Some(subscribers) = self.subscriptions.get(&change.channel()) {
            for subscriber in subscribers {
                self.outbox.push(Publication { subscriber: *subscriber, change: change.clone() });
            }
        }
    }

    /// Subscribes to a channel.
    pub fn subscribe(&mut self, subscriber: SubscriberId, channel: Channel) {
        self.subscriptions.entry(channel).or_default().insert(subscriber);
    }

    /// Drops every subscription of `subscriber` (it disconnected).
    pub fn unsubscribe_all(&mut self, subscriber: SubscriberId) {
        for subscribers in self.subscriptions.values_mut() {
            subscribers.remove(&subscriber);
        }
    }

    /// The publications produced since the last call, in order.
    pub fn take_publications(&mut self) -> Vec<Publication> {
        std::mem::take(&mut self.outbox)
    }

    // ---- nodes ----

    /// Registers (or re-registers) a live node.
    pub fn register_node(&mut self, mut info: NodeInfo) -> Result<(), GcsError> {
        if let Some(known) = self.node(info.node_id)? {
            if known.state == NodeState::Dead {
                return Err(GcsError::NodeDead(info.node_id));
            }
        }
        info.state = NodeState::Alive;
        info.death_cause = None;
        self.store_node(&info)?;
        self.publish(Change::Node(info));
        Ok(())
    }

    /// Declares a node dead. Its actors restart elsewhere if they may, else die. Returns them.
    pub fn mark_node_dead(&mut self, node_id: NodeId, cause: &str) -> Result<Vec<ActorId>, GcsError> {
        let mut info = self.node(node_id)?.ok_or(GcsError::UnknownNode(node_id))?;
        if info.state == NodeState::Dead {
            return Ok(Vec::new());
        }
        info.state = NodeState::Dead;
        self.loads.remove(&node_id);
        info.death_cause = Some(cause.to_owned());
        self.store_node(&info)?;
        self.publish(Change::Node(info));
        let affected: Vec<ActorId> = self
            .actors()?
            .into_iter()
            .filter(|actor| actor.node_id == Some(node_id) && actor.state == ActorState::Alive)
            .map(|actor| actor.actor_id)
            .collect();
        for actor in &affected {
            self.actor_failed(*actor, &format!("its node {node_id} died: {cause}"))?;
        }
        Ok(affected)
    }

    /// A node's record.
    pub fn node(&self, node_id: NodeId) -> Result<Option<NodeInfo>, GcsError> {
        match &self.node_cache {
            Some(cache) => Ok(cache.get(&node_id).cloned()),
            None => self.read(Table::Nodes, &node_id.0),
        }
    }

    /// Every node's record, alive or dead.
    pub fn nodes(&self) -> Result<Vec<NodeInfo>, GcsError> {
        match &self.node_cache {
            // In the storage's key order (the node id's bytes), as the table reads.
            Some(cache) => Ok(cache.values().cloned().collect()),
            None => self.read_all(Table::Nodes),
        }
    }

    /// A node's free resources now.
    pub fn report_resources(
        &mut self,
        node_id: NodeId,
        available: Vec<(String, f64)>,
        pending: Vec<(String, u32)>,
        total: Option<Vec<(String, f64)>>,
    ) -> Result<(), GcsError> {
        match self.node(node_id)? {
            None => Err(GcsError::UnknownNode(node_id)),
            Some(info) if info.state == NodeState::Dead => Err(GcsError::NodeDead(node_id)),
            Some(_) => {
                self.loads.insert(node_id, (available, pending, total));
                Ok(())
            }
        }
    }

    /// Every node with its resources now (a node that never reported: all free).
    pub fn cluster_view(&self) -> Result<Vec<crate::wire::NodeLoad>, GcsError> {
        Ok(self
            .nodes()?
            .into_iter()
            .map(|info| crate::wire::NodeLoad {
                available: self
                    .loads
                    .get(&info.node_id)
                    .map_or_else(|| info.resources.clone(), |(available, ..)| available.clone()),
                pending: self
                    .loads
                    .get(&info.node_id)
                    .map(|(_, pending, _)| pending.clone())
                    .unwrap_or_default(),
                total: match self.loads.get(&info.node_id) {
                    Some((_, _, Some(total))) => total.clone(),
                    _ => info.resources,
                },
                node_id: info.node_id,
                address: info.address,
                state: info.state,
                labels: info.labels,
            })
            .collect())
    }

    // ---- workers ----

    fn worker_key(node_id: NodeId, worker: u64) -> Vec<u8> {
        let mut key = node_id.0.to_vec();
        key.extend_from_slice(&worker.to_be_bytes());
        key
    }

    /// A worker process started or registered (its record replaces an earlier one).
    pub fn worker_reported(&mut self, info: WorkerInfo) -> Result<(), GcsError> {
        self.storage.put(Table::Workers, &Self::worker_key(info.node_id, info.worker), encode(&info))?;
        self.publish(Change::Worker(info));
        Ok(())
    }

    /// A worker process ended. Unknown workers are recorded dead (the start report may be lost).
    pub fn worker_exited(
        &mut self,
        node_id: NodeId,
        worker: u64,
        pid: u32,
        exit: &str,
    ) -> Result<(), GcsError> {
        let mut info = self.worker(node_id, worker)?.unwrap_or(WorkerInfo {
            node_id,
            worker,
            pid,
            address: None,
            alive: false,
            exit: None,
        });
        info.alive = false;
        info.exit = Some(exit.to_owned());
        self.worker_reported(info)
    }

    /// A worker's record.
    pub fn worker(&self, node_id: NodeId, worker: u64) -> Result<Option<WorkerInfo>, GcsError> {
        self.read(Table::Workers, &Self::worker_key(node_id, worker))
    }

    /// Every worker's record, alive or dead, by node.
    pub fn workers(&self) -> Result<Vec<WorkerInfo>, GcsError> {
        self.read_all(Table::Workers)
    }

    // ---- jobs ----

    /// Starts a job for the driver at `driver_address`.
    pub fn add_job(&mut self, driver_address: &str, now_ms: u64) -> Result<JobInfo, GcsError> {
        self.add_job_launched(driver_address, None, now_ms)
    }

    /// Registers a job whose workers start as `launch` says (a driver on a running cluster).
    pub fn add_job_launched(
        &mut self,
        driver_address: &str,
        launch: Option<crate::wire::JobLaunch>,
        now_ms: u64,
    ) -> Result<JobInfo, GcsError> {
        let last = self.storage.scan(Table::Jobs, b"")?.last().map(|(key, _)| key.clone());
        let next = match last {
            None => 1,
            Some(key) => match <[u8; 4]>::try_from(key.as_slice()) {
                Ok(key) => u32::from_be_bytes(key) + 1,
                Err(_) => {
                    let detail = format!("a job key of {} bytes", key.len());
                    return Err(GcsError::BadRecord { table: format!("{:?}", Table::Jobs), detail });
                }
            },
        };
        let job = JobInfo {
            job_id: JobId(next),
            driver_address: driver_address.to_owned(),
            finished: false,
            start_ms: now_ms,
            end_ms: None,
            launch,
        };
        self.storage.put(Table::Jobs, &next.to_be_bytes(), encode(&job))?;
        self.publish(Change::Job(job.clone()));
        Ok(job)
    }

    /// A job's record.
    pub fn job(&self, job_id: JobId) -> Result<Option<JobInfo>, GcsError> {
        self.read(Table::Jobs, &job_id.0.to_be_bytes())
    }

    /// Ends a job: its actors die, except detached ones. Returns the actors it killed.
    pub fn finish_job(&mut self, job_id: JobId, now_ms: u64) -> Result<Vec<ActorId>, GcsError> {
        let mut job = self.job(job_id)?.ok_or(GcsError::UnknownJob(job_id))?;
        if job.finished {
            return Ok(Vec::new());
        }
        job.finished = true;
        job.end_ms = Some(now_ms);
        self.storage.put(Table::Jobs, &job_id.0.to_be_bytes(), encode(&job))?;
        self.publish(Change::Job(job));
        let owned: Vec<ActorId> = self
            .actors()?
            .into_iter()
            .filter(|actor| actor.job_id == job_id && !actor.detached && actor.state != ActorState::Dead)
            .map(|actor| actor.actor_id)
            .collect();
        for actor in &owned {
            self.set_actor_state(*actor, ActorState::Dead, Some("its job finished"))?;
        }
        Ok(owned)
    }

    // ---- actors ----

    /// Registers a new actor (in `PendingCreation`), claiming its name if it has one.
    pub fn register_actor(&mut self, mut info: ActorInfo) -> Result<(), GcsError> {
        if self.actor(info.actor_id)?.is_some() {
            return Err(GcsError::DuplicateActor(info.actor_id));
        }
        let job = self.job(info.job_id)?.ok_or(GcsError::UnknownJob(info.job_id))?;
        if job.finished {
            return Err(GcsError::JobFinished(info.job_id));
        }
        // The actor and its name are written together: never a name without its actor.
        let mut writes = Vec::with_capacity(2);
        if let Some(name) = &info.name {
            let key = joined_key(&info.namespace, name)?;
            if self.storage.get(Table::ActorNames, &key)?.is_some() {
                return Err(GcsError::NameTaken { namespace: info.namespace.clone(), name: name.clone() });
            }
            writes.push(Write::Put { table: Table::ActorNames, key, value: info.actor_id.0.to_vec() });
        }
        info.state = ActorState::PendingCreation;
        info.restarts = 0;
        info.death_cause = None;
        writes.push(Write::Put { table: Table::Actors, key: info.actor_id.0.to_vec(), value: encode(&info) });
        self.storage.apply(writes)?;
        self.publish(Change::Actor(info));
        Ok(())
    }

    /// The actor's worker is up at `address` on `node_id`.
    pub fn actor_started(
        &mut self,
        actor_id: ActorId,
        node_id: NodeId,
        address: &str,
    ) -> Result<(), GcsError> {
        let node = self.node(node_id)?.ok_or(GcsError::UnknownNode(node_id))?;
        if node.state == NodeState::Dead {
            return Err(GcsError::NodeDead(node_id));
        }
        let mut info = self.actor(actor_id)?.ok_or(GcsError::UnknownActor(actor_id))?;
        check_transition(&info, ActorState::Alive)?;
        info.state = ActorState::Alive;
        info.node_id = Some(node_id);
        info.address = Some(address.to_owned());
        self.storage.put(Table::Actors, &actor_id.0, encode(&info))?;
        self.publish(Change::Actor(info));
        Ok(())
    }

    /// The actor's worker died, while it ran or while its constructor ran: it restarts if it
    /// has restarts left (each attempt counts, as in Ray), else it is dead. Returns the state it
    /// is in now.
    pub fn actor_failed(&mut self, actor_id: ActorId, cause: &str) -> Result<ActorState, GcsError> {
        self.incarnation_failed(actor_id, cause, None)
    }

    /// [`actor_failed`](Self::actor_failed) for incarnation `incarnation` (the restart count it
    /// started with): when the actor has restarted since (its node's death was counted first),
    /// the failure is not counted again, and the state it is in now is the verdict.
    pub fn incarnation_failed(
        &mut self,
        actor_id: ActorId,
        cause: &str,
        incarnation: Option<u64>,
    ) -> Result<ActorState, GcsError> {
        let info = self.actor(actor_id)?.ok_or(GcsError::UnknownActor(actor_id))?;
        if incarnation.is_some_and(|started| info.restarts > started) {
            return Ok(info.state);
        }
        let may_restart = info.max_restarts < 0 || info.restarts < info.max_restarts as u64;
        if may_restart && info.state != ActorState::Dead {
            self.set_actor_state(actor_id, ActorState::Restarting, Some(cause))?;
            Ok(ActorState::Restarting)
        } else {
            self.set_actor_state(actor_id, ActorState::Dead, Some(cause))?;
            Ok(ActorState::Dead)
        }
    }

    /// Kills an actor for good (`manta::kill`).
    pub fn kill_actor(&mut self, actor_id: ActorId, cause: &str) -> Result<(), GcsError> {
        self.set_actor_state(actor_id, ActorState::Dead, Some(cause))
    }

    fn set_actor_state(
        &mut self,
        actor_id: ActorId,
        next: ActorState,
        cause: Option<&str>,
    ) -> Result<(), GcsError> {
        let mut info = self.actor(actor_id)?.ok_or(GcsError::UnknownActor(actor_id))?;
        check_transition(&info, next)?;
        if next == ActorState::Restarting {
            info.restarts += 1;
        }
        if matches!(next, ActorState::Restarting | ActorState::Dead) {
            info.node_id = None;
            info.address = None;
            info.death_cause = cause.map(str::to_owned);
        }
        // The actor's new state and its name's release are written together.
        let mut writes = Vec::with_capacity(2);
        if next == ActorState::Dead {
            // A dead actor's name is free for a new actor (Ray's semantics).
            if let Some(name) = &info.name {
                let key = joined_key(&info.namespace, name)?;
                if self.storage.get(Table::ActorNames, &key)?.as_deref() == Some(&info.actor_id.0[..]) {
                    writes.push(Write::Delete { table: Table::ActorNames, key });
                }
            }
        }
        info.state = next;
        writes.push(Write::Put { table: Table::Actors, key: actor_id.0.to_vec(), value: encode(&info) });
        // The history of the dead is bounded: the oldest record goes with this death's write.
        let forgotten = (next == ActorState::Dead && self.dead_actors.len() >= self.dead_actors_kept)
            .then(|| self.dead_actors.front().copied())
            .flatten();
        if let Some(oldest) = forgotten {
            writes.push(Write::Delete { table: Table::Actors, key: oldest.0.to_vec() });
        }
        self.storage.apply(writes)?;
        if next == ActorState::Dead {
            if forgotten.is_some() {
                self.dead_actors.pop_front();
            }
            self.dead_actors.push_back(actor_id);
        }
        self.publish(Change::Actor(info));
        Ok(())
    }

    /// Keeps the records of at most `kept` dead actors (default [`DEAD_ACTORS_KEPT`]); the
    /// oldest deaths are forgotten first, as more actors die.
    pub fn keep_dead_actors(&mut self, kept: usize) {
        self.dead_actors_kept = kept.max(1);
    }

    /// An actor's record.
    pub fn actor(&self, actor_id: ActorId) -> Result<Option<ActorInfo>, GcsError> {
        self.read(Table::Actors, &actor_id.0)
    }

    /// Every actor's record.
    pub fn actors(&self) -> Result<Vec<ActorInfo>, GcsError> {
        self.read_all(Table::Actors)
    }

    /// The live actor named `name` in `namespace`.
    pub fn named_actor(&self, namespace: &str, name: &str) -> Result<Option<ActorInfo>, GcsError> {
        let key = joined_key(namespace, name)?;
        match self.storage.get(Table::ActorNames, &key)? {
            Some(id) => self.actor(actor_id_of(id)?),
            None => Ok(None),
        }
    }

    /// The names in use in `namespace`, with their actors, in name order.
    pub fn named_actors(&self, namespace: &str) -> Result<Vec<(String, ActorId)>, GcsError> {
        let prefix = joined_key(namespace, "")?;
        self.storage
            .scan(Table::ActorNames, &prefix)?
            .into_iter()
            .map(|(key, id)| {
                let name = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
                Ok((name, actor_id_of(id)?))
            })
            .collect()
    }

    // ---- internal key-value store ----

    /// Stores `value` under `key`; with `overwrite` false an existing value is kept. Returns
    /// whether the value was stored.
    pub fn kv_put(
        &mut self,
        namespace: &str,
        key: &str,
        value: Vec<u8>,
        overwrite: bool,
    ) -> Result<bool, GcsError> {
        let key = joined_key(namespace, key)?;
        if !overwrite && self.storage.get(Table::Kv, &key)?.is_some() {
            return Ok(false);
        }
        self.storage.put(Table::Kv, &key, value)?;
        Ok(true)
    }

    /// The value under `key`.
    pub fn kv_get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, GcsError> {
        Ok(self.storage.get(Table::Kv, &joined_key(namespace, key)?)?)
    }

    /// Deletes `key`; returns whether it existed.
    pub fn kv_delete(&mut self, namespace: &str, key: &str) -> Result<bool, GcsError> {
        Ok(self.storage.delete(Table::Kv, &joined_key(namespace, key)?)?)
    }

    /// The keys in `namespace` starting with `prefix`, in order.
    pub fn kv_keys(&self, namespace: &str, prefix: &str) -> Result<Vec<String>, GcsError> {
        let start = joined_key(namespace, "")?;
        let scan = joined_key(namespace, prefix)?;
        Ok(self
            .storage
            .scan(Table::Kv, &scan)?
            .into_iter()
            .map(|(key, _)| String::from_utf8_lossy(&key[start.len()..]).into_owned())
            .collect())
    }
}

fn check_transition(info: &ActorInfo, next: ActorState) -> Result<(), GcsError> {
    if info.state.can_become(next) {
        Ok(())
    } else {
        Err(GcsError::IllegalTransition { actor: info.actor_id, from: info.state, to: next })
    }
}
