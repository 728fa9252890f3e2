//! The GCS's tables on disk: [`RedbStorage`], an embedded, crash-safe database file
//! (`gcs.redb` in the directory given to `manta start --head --storage DIR`), so that a GCS
//! killed with `kill -9` and started again on the same directory finds every record it had
//! acknowledged.
//!
//! Why redb: it is pure Rust (no C toolchain, no second build system, nothing to install on a
//! fresh machine), its transactions are ACID with a copy-on-write B-tree and checksummed
//! commits (a crash mid-commit leaves the previous commit), and a batch of writes is one
//! transaction, which is what [`Storage::apply`] promises. SQLite would do as well on
//! durability, at the price of compiling its C sources into every build. Each batch is
//! committed durably (fsync) before the GCS answers the request that made it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, TableDefinition};

use crate::storage::{Entries, Storage, StorageError, Table, Write};

/// Tables in a redb database file, one redb table per GCS table. Cloning shares the open
/// database (a restarted GCS actor in the same process reopens nothing).
#[derive(Clone)]
pub struct RedbStorage {
    database: Arc<Database>,
    path: PathBuf,
}

impl std::fmt::Debug for RedbStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStorage").field("path", &self.path).finish()
    }
}

fn definition(table: Table) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
    TableDefinition::new(match table {
        Table::Nodes => "nodes",
        Table::Jobs => "jobs",
        Table::Actors => "actors",
        Table::ActorNames => "actor_names",
        Table::Kv => "kv",
        Table::Workers => "workers",
        Table::Admission => "admission",
    })
}

fn failed(what: &str, path: &Path, error: impl std::fmt::Display) -> StorageError {
    StorageError(format!("{what} {}: {error}", path.display()))
}

impl RedbStorage {
    /// The file the tables live in, in `directory`.
    pub const FILE: &'static str = "gcs.redb";

    /// Opens the tables in `directory` (created if missing), or creates them.
    pub fn open(directory: &Path) -> Result<RedbStorage, StorageError> {
        std::fs::create_dir_all(directory).map_err(|error| failed("creating", directory, error))?;
        let path = directory.join(Self::FILE);
        let database = Database::create(&path).map_err(|error| failed("opening", &path, error))?;
        Ok(RedbStorage { database: Arc::new(database), path })
    }

    /// Where the tables are.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Storage for RedbStorage {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let read = self.database.begin_read().map_err(|error| failed("reading", &self.path, error))?;
        let opened = match read.open_table(definition(table)) {
            Ok(opened) => opened,
            // Never written: empty.
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(error) => return Err(failed("reading", &self.path, error)),
        };
        let value = opened.get(key).map_err(|error| failed("reading", &self.path, error))?;
        Ok(value.map(|value| value.value().to_vec()))
    }

    fn apply(&mut self, writes: Vec<Write>) -> Result<(), StorageError> {
        let write = self.database.begin_write().map_err(|error| failed("writing", &self.path, error))?;
        for change in &writes {
            let table = match change {
                Write::Put { table, .. } | Write::Delete { table, .. } => *table,
            };
            let mut opened =
                write.open_table(definition(table)).map_err(|error| failed("writing", &self.path, error))?;
            let outcome = match change {
                Write::Put { key, value, .. } => opened.insert(key.as_slice(), value.as_slice()).map(drop),
                Write::Delete { key, .. } => opened.remove(key.as_slice()).map(drop),
            };
            outcome.map_err(|error| failed("writing", &self.path, error))?;
        }
        // Dropping an uncommitted transaction (an error above) aborts it: nothing is written.
        write.commit().map_err(|error| failed("committing to", &self.path, error))
    }

    fn scan(&self, table: Table, prefix: &[u8]) -> Result<Entries, StorageError> {
        let read = self.database.begin_read().map_err(|error| failed("reading", &self.path, error))?;
        let opened = match read.open_table(definition(table)) {
            Ok(opened) => opened,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(error) => return Err(failed("reading", &self.path, error)),
        };
        let range = opened.range(prefix..).map_err(|error| failed("reading", &self.path, error))?;
        let mut found = Vec::new();
        for entry in range {
            let (key, value) = entry.map_err(|error| failed("reading", &self.path, error))?;
            if !key.value().starts_with(prefix) {
                break;
            }
            found.push((key.value().to_vec(), value.value().to_vec()));
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::GcsCore;
    use crate::wire::{ActorInfo, ActorState, NodeInfo, NodeState};
    use crate::ActorId;
    use manta_transport::NodeId;

    fn directory(name: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("manta-gcs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        path
    }

    #[test]
    fn the_durable_backend_keeps_the_storage_contract() {
        let path = directory("contract");
        let mut storage = RedbStorage::open(&path).unwrap();
        crate::storage::tests::scans_stay_in_their_table_and_prefix(&mut storage);
        drop(storage);
        std::fs::remove_dir_all(&path).unwrap();
    }

    #[test]
    fn a_gcs_over_the_same_directory_finds_every_record_again() {
        let path = directory("reopen");
        let node = NodeId([7; 16]);
        let actor = ActorId([9; 16]);
        {
            let mut core = GcsCore::new(RedbStorage::open(&path).unwrap());
            core.register_node(NodeInfo {
                node_id: node,
                address: "127.0.0.1:7000".into(),
                resources: vec![("CPU".into(), 4.0)],
                state: NodeState::Alive,
                registered_ms: 1,
                death_cause: None,
                labels: vec![("zone".into(), "a".into())],
            })
            .unwrap();
            let job = core.add_job("driver", 2).unwrap().job_id;
            core.register_actor(ActorInfo {
                actor_id: actor,
                job_id: job,
                class: "Counter".into(),
                max_task_retries: 0,
                name: Some("counter".into()),
                namespace: "ns".into(),
                detached: true,
                state: ActorState::PendingCreation,
                node_id: None,
                address: None,
                max_restarts: 2,
                restarts: 0,
                death_cause: None,
            })
            .unwrap();
            core.actor_started(actor, node, "127.0.0.1:7001/worker").unwrap();
            core.kv_put("ns", "key", b"value".to_vec(), true).unwrap();
            // Dropped without any shutdown, as a killed process would leave it.
        }
        let core = GcsCore::new(RedbStorage::open(&path).unwrap());
        let nodes = core.nodes().unwrap();
        assert_eq!(nodes.len(), 1);
        assert_eq!(nodes[0].labels, vec![("zone".to_owned(), "a".to_owned())]);
        let found = core.named_actor("ns", "counter").unwrap().expect("the named actor is found again");
        assert_eq!((found.actor_id, found.state), (actor, ActorState::Alive));
        assert_eq!(found.address.as_deref(), Some("127.0.0.1:7001/worker"));
        assert_eq!(core.kv_get("ns", "key").unwrap(), Some(b"value".to_vec()));
        assert!(core.job(found.job_id).unwrap().is_some());
        drop(core);
        std::fs::remove_dir_all(&path).unwrap();
    }

    /// Storage whose writes fail while `broken` is set (a full disk, a database gone away).
    #[derive(Default)]
    struct Flaky {
        inner: crate::MemoryStorage,
        broken: bool,
    }

    impl Storage for Flaky {
        fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
            self.inner.get(table, key)
        }

        fn apply(&mut self, writes: Vec<Write>) -> Result<(), StorageError> {
            if self.broken {
                return Err(StorageError("no space left on device".into()));
            }
            self.inner.apply(writes)
        }

        fn scan(&self, table: Table, prefix: &[u8]) -> Result<Entries, StorageError> {
            self.inner.scan(table, prefix)
        }
    }

    #[test]
    fn a_failed_write_is_an_error_that_changes_nothing_and_the_gcs_goes_on() {
        let mut core = GcsCore::new(Flaky::default());
        let job = core.add_job("driver", 1).unwrap().job_id;
        let actor = |id: u8, name: &str| ActorInfo {
            actor_id: ActorId([id; 16]),
            job_id: job,
            class: "Counter".into(),
            max_task_retries: 0,
            name: Some(name.into()),
            namespace: "ns".into(),
            detached: false,
            state: ActorState::PendingCreation,
            node_id: None,
            address: None,
            max_restarts: 0,
            restarts: 0,
            death_cause: None,
        };
        let flaky = |core: &mut GcsCore<Flaky>, broken: bool| {
            let storage = std::mem::replace(core, GcsCore::new(Flaky::default())).into_storage();
            *core = GcsCore::new(Flaky { broken, ..storage });
        };
        flaky(&mut core, true);
        let error = core.register_actor(actor(1, "a")).expect_err("the disk is full");
        assert!(matches!(&error, crate::GcsError::Storage(why) if why.contains("no space")), "{error}");
        assert!(matches!(core.kv_put("ns", "k", b"v".to_vec(), true), Err(crate::GcsError::Storage(_))));
        // Nothing half-written: neither the actor nor its name.
        assert!(core.actor(ActorId([1; 16])).unwrap().is_none());
        assert!(core.named_actor("ns", "a").unwrap().is_none());
        // The disk has room again: the same requests succeed.
        flaky(&mut core, false);
        core.register_actor(actor(1, "a")).unwrap();
        assert_eq!(core.named_actor("ns", "a").unwrap().map(|info| info.actor_id), Some(ActorId([1; 16])));
    }

    #[test]
    fn a_directory_that_cannot_hold_the_tables_is_a_typed_error() {
        let path = directory("file");
        std::fs::write(&path, b"a file, not a directory").unwrap();
        let error = RedbStorage::open(&path).expect_err("a file is not a directory");
        assert!(error.to_string().contains(&path.display().to_string()), "{error}");
        std::fs::remove_file(&path).unwrap();
        // A file that is not a database.
        let path = directory("garbage");
        std::fs::create_dir_all(&path).unwrap();
        std::fs::write(path.join(RedbStorage::FILE), vec![0x5a; 4096]).unwrap();
        let error = RedbStorage::open(&path).expect_err("not a redb file");
        assert!(error.to_string().contains(RedbStorage::FILE), "{error}");
        std::fs::remove_dir_all(&path).unwrap();
    }
}
