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
}

/// A byte-keyed table store. Implementations must be durable at least for as long as they
/// claim (the in-memory one: the life of the process).
pub trait Storage: Send + Unpin {
    /// The value under `key`.
    fn get(&self, table: Table, key: &[u8]) -> Option<Vec<u8>>;
    /// Stores `value` under `key`, replacing any previous one.
    fn put(&mut self, table: Table, key: &[u8], value: Vec<u8>);
    /// Removes `key`; returns whether it was there.
    fn delete(&mut self, table: Table, key: &[u8]) -> bool;
    /// Every entry whose key starts with `prefix`, in key order.
    fn scan(&self, table: Table, prefix: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)>;
}

/// Tables in memory: the default, for embedded clusters and tests.
#[derive(Debug, Default)]
pub struct MemoryStorage {
    tables: BTreeMap<(Table, Vec<u8>), Vec<u8>>,
}

impl Storage for MemoryStorage {
    fn get(&self, table: Table, key: &[u8]) -> Option<Vec<u8>> {
        self.tables.get(&(table, key.to_vec())).cloned()
    }

    fn put(&mut self, table: Table, key: &[u8], value: Vec<u8>) {
        self.tables.insert((table, key.to_vec()), value);
    }

    fn delete(&mut self, table: Table, key: &[u8]) -> bool {
        self.tables.remove(&(table, key.to_vec())).is_some()
    }

    fn scan(&self, table: Table, prefix: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.tables
            .range((table, prefix.to_vec())..)
            .take_while(|((entry_table, key), _)| *entry_table == table && key.starts_with(prefix))
            .map(|((_, key), value)| (key.clone(), value.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_stays_in_its_table_and_prefix() {
        let mut storage = MemoryStorage::default();
        storage.put(Table::Kv, b"ns\0a", b"1".to_vec());
        storage.put(Table::Kv, b"ns\0b", b"2".to_vec());
        storage.put(Table::Kv, b"nt\0a", b"3".to_vec());
        storage.put(Table::Nodes, b"ns\0c", b"4".to_vec());
        let found: Vec<Vec<u8>> =
            storage.scan(Table::Kv, b"ns\0").into_iter().map(|(_, value)| value).collect();
        assert_eq!(found, vec![b"1".to_vec(), b"2".to_vec()]);
        assert!(storage.delete(Table::Kv, b"ns\0a"));
        assert!(!storage.delete(Table::Kv, b"ns\0a"));
        assert_eq!(storage.get(Table::Kv, b"ns\0b"), Some(b"2".to_vec()));
    }
}
