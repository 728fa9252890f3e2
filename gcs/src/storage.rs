//! Where the GCS keeps its tables: a byte-keyed store behind a trait, so that an embedded
//! persistent backend can replace the in-memory one (for a GCS restart without loss) without
//! touching the tables' logic.

use std::collections::BTreeMap;

/// The tables of the GCS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// Nodes by id.
    Nodes,
    /// Jobs by id.
    Jobs,
    /// Actors by id.
    Actors,
    /// Named actors: `namespace \0 name` to actor id.
    ActorNames,
    /// The internal key-value store: `namespace \0 key` to value.
    Kv,
    /// Worker processes: `node id | worker id (big-endian)` to record.
    Workers,
    /// One-time join tokens issued for new workers: the SHA-256 of the secret to when it was
    /// issued (ms since the epoch, big-endian), so that a restarted GCS admits the workers its
    /// raylets started with tokens from before.
    Admission,
}

/// A write that failed, or a read the backend could not do (a full disk, a damaged file, a
/// store that went away): the GCS reports it and goes on; the record is not lost silently.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the GCS's storage failed: {0}")]
pub struct StorageError(pub String);

/// Entries of a table: (key, value), in key order.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// One write of a batch ([`Storage::apply`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Stores `value` under `key`, replacing any previous one.
    Put {
        /// The table.
        table: Table,
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Removes `key` if it is there.
    Delete {
        /// The table.
        table: Table,
        /// The key.
        key: Vec<u8>,
    },
}

/// A byte-keyed table store. Implementations must be durable at least for as long as they
/// claim (the in-memory one: the life of the process), and a batch is applied whole or not at
/// all.
pub trait Storage: Send + Unpin {
    /// The value under `key`.
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;
    /// Applies `writes` together: after a crash, all of them or none are there.
    fn apply(&mut self, writes: Vec<Write>) -> Result<(), StorageError>;
    /// Every entry whose key starts with `prefix`, in key order.
    fn scan(&self, table: Table, prefix: &[u8]) -> Result<Entries, StorageError>;

    /// Stores `value` under `key`, replacing any previous one.
    fn put(&mut self, table: Table, key: &[u8], value: Vec<u8>) -> Result<(), StorageError> {
        self.apply(vec![Write::Put { table, key: key.to_vec(), value }])
    }

    /// Removes `key`; returns whether it was there.
    fn delete(&mut self, table: Table, key: &[u8]) -> Result<bool, StorageError> {
        let existed = self.get(table, key)?.is_some();
        if existed {
            self.apply(vec![Write::Delete { table, key: key.to_vec() }])?;
        }
        Ok(existed)
    }
}

impl<S: Storage + ?Sized> Storage for Box<S> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        (**self).get(table, key)
    }

    fn apply(&mut self, writes: Vec<Write>) -> Result<(), StorageError> {
        (**self).apply(writes)
    }

    fn scan(&self, table: Table, prefix: &[u8]) -> Result<Entries, StorageError> {
        (**self).scan(table, prefix)
    }
}

/// Tables in memory: the default, for embedded clusters and tests.
#[derive(Debug, Default)]
pub struct MemoryStorage {
    tables: BTreeMap<(Table, Vec<u8>), Vec<u8>>,
}

impl Storage for MemoryStorage {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.tables.get(&(table, key.to_vec())).cloned())
    }

    fn apply(&mut self, writes: Vec<Write>) -> Result<(), StorageError> {
        for write in writes {
            match write {
                Write::Put { table, key, value } => {
                    self.tables.insert((table, key), value);
                }
                Write::Delete { table, key } => {
                    self.tables.remove(&(table, key));
                }
            }
        }
        Ok(())
    }

    fn scan(&self, table: Table, prefix: &[u8]) -> Result<Entries, StorageError> {
        Ok(self
            .tables
            .range((table, prefix.to_vec())..)
            .take_while(|((entry_table, key), _)| *entry_table == table && key.starts_with(prefix))
            .map(|((_, key), value)| (key.clone(), value.clone()))
            .collect())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn scan_stays_in_its_table_and_prefix() {
        let mut storage = MemoryStorage::default();
        scans_stay_in_their_table_and_prefix(&mut storage);
    }

    /// What every backend must do (the durable one runs it too).
    pub(crate) fn scans_stay_in_their_table_and_prefix(storage: &mut dyn Storage) {
        storage.put(Table::Kv, b"ns\0a", b"1".to_vec()).unwrap();
        storage.put(Table::Kv, b"ns\0b", b"2".to_vec()).unwrap();
        storage.put(Table::Kv, b"nt\0a", b"3".to_vec()).unwrap();
        storage.put(Table::Nodes, b"ns\0c", b"4".to_vec()).unwrap();
        let found: Vec<Vec<u8>> =
            storage.scan(Table::Kv, b"ns\0").unwrap().into_iter().map(|(_, value)| value).collect();
        assert_eq!(found, vec![b"1".to_vec(), b"2".to_vec()]);
        assert!(storage.delete(Table::Kv, b"ns\0a").unwrap());
        assert!(!storage.delete(Table::Kv, b"ns\0a").unwrap());
        assert_eq!(storage.get(Table::Kv, b"ns\0b").unwrap(), Some(b"2".to_vec()));
        // A batch: a put and a delete together.
        let batch = vec![
            Write::Put { table: Table::Actors, key: b"x".to_vec(), value: b"5".to_vec() },
            Write::Delete { table: Table::Kv, key: b"ns\0b".to_vec() },
        ];
        storage.apply(batch).unwrap();
        assert_eq!(storage.get(Table::Actors, b"x").unwrap(), Some(b"5".to_vec()));
        assert_eq!(storage.get(Table::Kv, b"ns\0b").unwrap(), None);
        assert_eq!(storage.get(Table::Kv, b"nt\0a").unwrap(), Some(b"3".to_vec()));
    }
}
