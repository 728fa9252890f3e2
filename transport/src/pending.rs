//! The table of calls awaiting a response on one connection.
//!
//! Callers on any thread insert a waiter and get a call id; the connection's reader takes the
//! waiter out when the response arrives; a timeout takes it out to give up; a lost connection
//! drains them all and closes the table. Invariant: every inserted waiter is taken out exactly
//! once (by `take` or by `close`), and nothing can be inserted after `close`, so no caller waits
//! on a connection that is gone. A call id carries a generation next to its slab key, so a late
//! response for a call that timed out can never reach a newer call that reused the slot.

use slab::Slab;

use crate::sync::Mutex;

/// Pending waiters of type `W`, keyed by call id.
#[derive(Debug)]
pub(crate) struct PendingCalls<W> {
    state: Mutex<State<W>>,
}

#[derive(Debug)]
struct State<W> {
    calls: Slab<(u32, W)>,
    generation: u32,
    closed: bool,
}

impl<W> PendingCalls<W> {
    pub(crate) fn new() -> Self {
        PendingCalls { state: Mutex::new(State { calls: Slab::new(), generation: 0, closed: false }) }
    }

    /// Registers a waiter; gives it back if the table is closed.
    pub(crate) fn insert(&self, waiter: W) -> Result<u64, W> {
        let mut state = self.state.lock();
        if state.closed {
            return Err(waiter);
        }
        state.generation = state.generation.wrapping_add(1);
        let generation = state.generation;
        let key = state.calls.insert((generation, waiter));
        let key = u32::try_from(key).expect("fewer than 2^32 calls are ever in flight on one connection");
        Ok((u64::from(generation) << 32) | u64::from(key))
    }

    /// Takes the waiter of `call_id` out, if it is still waiting.
    pub(crate) fn take(&self, call_id: u64) -> Option<W> {
        let key = (call_id & u64::from(u32::MAX)) as usize;
        let generation = (call_id >> 32) as u32;
        let mut state = self.state.lock();
        match state.calls.get(key) {
            Some((current, _)) if *current == generation => {
                state.calls.try_remove(key).map(|(_, waiter)| waiter)
            }
            _ => None,
        }
    }

    /// Closes the table and returns every waiter still in it.
    pub(crate) fn close(&self) -> Vec<W> {
        let mut state = self.state.lock();
        state.closed = true;
        state.calls.drain().map(|(_, waiter)| waiter).collect()
    }

    /// Calls waiting now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.state.lock().calls.len()
    }
}

#[cfg(all(test, not(manta_loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn stale_ids_do_not_reach_newer_calls() {
        let table = PendingCalls::new();
        let first = table.insert("first").unwrap();
        assert_eq!(table.take(first), Some("first"));
        let second = table.insert("second").unwrap();
        assert_eq!(first & 0xffff_ffff, second & 0xffff_ffff, "the slot is reused");
        assert_eq!(table.take(first), None, "a late answer to the first call is dropped");
        assert_eq!(table.take(second), Some("second"));
    }

    #[test]
    fn close_drains_and_refuses_new_waiters() {
        let table = PendingCalls::new();
        table.insert(1).unwrap();
        table.insert(2).unwrap();
        let mut drained = table.close();
        drained.sort();
        assert_eq!(drained, vec![1, 2]);
        assert_eq!(table.insert(3), Err(3));
    }

    proptest! {
        /// Against a model: any sequence of inserts and takes leaves exactly the untaken waiters.
        #[test]
        fn matches_a_model(ops in proptest::collection::vec((any::<bool>(), 0usize..16), 0..200)) {
            let table = PendingCalls::new();
            let mut live: Vec<(u64, usize)> = Vec::new();
            for (index, (insert, pick)) in ops.into_iter().enumerate() {
                if insert || live.is_empty() {
                    live.push((table.insert(index).unwrap(), index));
                } else {
                    let (id, value) = live.remove(pick % live.len());
                    prop_assert_eq!(table.take(id), Some(value));
                    prop_assert_eq!(table.take(id), None);
                }
            }
            prop_assert_eq!(table.len(), live.len());
            let mut drained = table.close();
            drained.sort();
            let mut expected: Vec<usize> = live.into_iter().map(|(_, value)| value).collect();
            expected.sort();
            prop_assert_eq!(drained, expected);
        }
    }
}

#[cfg(all(test, manta_loom))]
mod loom_models {
    use super::*;
    use loom::sync::atomic::{AtomicU64, Ordering};
    use loom::sync::Arc;

    /// A caller registering while the connection's reader answers what it can and then, as it
    /// exits, closes the table: every waiter comes out exactly once (answered, drained by the
    /// close, or refused back to the caller), so no caller is left waiting on a dead connection.
    #[test]
    fn every_waiter_is_released_exactly_once() {
        loom::model(|| {
            let table = Arc::new(PendingCalls::new());
            let published = Arc::new(AtomicU64::new(0));

            let caller = {
                let (table, published) = (table.clone(), published.clone());
                loom::thread::spawn(move || match table.insert(7u32) {
                    Ok(id) => {
                        published.store(id, Ordering::SeqCst);
                        0
                    }
                    Err(_) => 1,
                })
            };
            let reader = {
                let (table, published) = (table.clone(), published.clone());
                loom::thread::spawn(move || {
                    let id = published.load(Ordering::SeqCst);
                    let answered = usize::from(id != 0 && table.take(id).is_some());
                    answered + table.close().len()
                })
            };
            let refused = caller.join().unwrap();
            let released = reader.join().unwrap();
            assert_eq!(refused + released, 1, "a waiter was lost or released twice");
        });
    }
}
