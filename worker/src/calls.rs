//! The calls an actor client has sent to one incarnation of an actor and not yet decided, as a
//! plain data structure: numbering (`seq` from 0, consecutive), taking a call back that could
//! not be sent, the answer that decides a call, and the incarnation's end that decides the rest.
//! Whoever takes a call out of the table decides it, exactly once: its answer, the sender that
//! takes it back, or the end. After the end nothing registers (a call chosen for an incarnation
//! that ended meanwhile is given back, to go to the next one).
//!
//! No lock, no clock, no socket: the actor client holds it behind a mutex shared with the
//! transport thread (answers) and the task that learns of the incarnation's end.

use std::collections::BTreeMap;

/// The undecided calls of one incarnation.
#[derive(Debug)]
pub(crate) struct CallTable<C> {
    /// `None` once the incarnation is over.
    calls: Option<BTreeMap<u64, C>>,
    next_seq: u64,
}

impl<C> CallTable<C> {
    /// The table of a new incarnation: nothing sent yet.
    pub(crate) fn new() -> Self {
        CallTable { calls: Some(BTreeMap::new()), next_seq: 0 }
    }

    /// Numbers `call` and records it as in flight; gives it back when the incarnation is over.
    pub(crate) fn register(&mut self, call: C) -> Result<u64, C> {
        let Some(calls) = self.calls.as_mut() else { return Err(call) };
        let seq = self.next_seq;
        calls.insert(seq, call);
        self.next_seq += 1;
        Ok(seq)
    }

    /// Takes back the call just registered as `seq`, which could not be sent: its number is
    /// free again, so the next call takes it and the actor sees no gap. `None` when the
    /// incarnation's end took it first (then the end decided it), or when `seq` is not the
    /// newest number (only the newest can be taken back: later calls were numbered after it).
    pub(crate) fn take_back(&mut self, seq: u64) -> Option<C> {
        if seq + 1 != self.next_seq {
            return None;
        }
        let call = self.calls.as_mut()?.remove(&seq)?;
        self.next_seq = seq;
        Some(call)
    }

    /// The answer to `seq` arrived: the call, unless the incarnation's end decided it already.
    pub(crate) fn answer(&mut self, seq: u64) -> Option<C> {
        self.calls.as_mut()?.remove(&seq)
    }

    /// The incarnation is over: every call still waiting, in `seq` order (retries keep their
    /// order); nothing registers afterwards.
    pub(crate) fn end(&mut self) -> Vec<C> {
        self.calls.take().map(|calls| calls.into_values().collect()).unwrap_or_default()
    }

    /// Whether the incarnation is over.
    #[cfg(test)]
    pub(crate) fn is_over(&self) -> bool {
        self.calls.is_none()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn calls_are_numbered_decided_once_and_the_rest_end_in_order() {
        let mut table = CallTable::new();
        assert_eq!(table.register("a"), Ok(0));
        assert_eq!(table.register("b"), Ok(1));
        assert_eq!(table.register("c"), Ok(2));
        assert_eq!(table.take_back(1), None, "only the newest can be taken back");
        assert_eq!(table.take_back(2), Some("c"));
        assert_eq!(table.register("d"), Ok(2), "no gap: the number is reused");
        assert_eq!(table.answer(0), Some("a"));
        assert_eq!(table.answer(0), None, "decided once");
        assert_eq!(table.end(), vec!["b", "d"]);
        assert!(table.is_over());
        assert_eq!(table.answer(1), None, "the end decided it");
        assert_eq!(table.register("e"), Err("e"), "nothing registers after the end");
        assert_eq!(table.take_back(2), None);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Register,
        TakeBackNewest,
        Answer(u8),
        End,
    }

    fn any_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => Just(Op::Register),
            1 => Just(Op::TakeBackNewest),
            3 => (0u8..32).prop_map(Op::Answer),
            1 => Just(Op::End),
        ]
    }

    proptest! {
        /// Under any interleaving: every call registered is decided exactly once (answered,
        /// taken back, or ended), the numbers the actor sees are consecutive from 0, and the
        /// end hands back what is left in number order.
        #[test]
        fn every_call_is_decided_exactly_once(ops in proptest::collection::vec(any_op(), 1..80)) {
            let mut table = CallTable::new();
            let mut next_call = 0u32;
            let mut newest: Option<u64> = None;
            let mut registered = BTreeSet::new();
            let mut decided = BTreeSet::new();
            let mut sent_seqs: Vec<u64> = Vec::new();
            for op in ops {
                match op {
                    Op::Register => match table.register(next_call) {
                        Ok(seq) => {
                            prop_assert_eq!(seq, sent_seqs.len() as u64, "numbers are consecutive");
                            sent_seqs.push(seq);
                            registered.insert(next_call);
                            newest = Some(seq);
                            next_call += 1;
                        }
                        Err(call) => {
                            prop_assert!(table.is_over());
                            prop_assert_eq!(call, next_call);
                            next_call += 1;
                        }
                    },
                    Op::TakeBackNewest => {
                        if let Some(seq) = newest.take() {
                            if let Some(call) = table.take_back(seq) {
                                prop_assert!(decided.insert(call), "decided twice");
                                sent_seqs.pop();
                            }
                        }
                    }
                    Op::Answer(seq) => {
                        if let Some(call) = table.answer(u64::from(seq)) {
                            prop_assert!(decided.insert(call), "decided twice");
                        }
                        newest = None;
                    }
                    Op::End => {
                        let rest = table.end();
                        let mut sorted = rest.clone();
                        sorted.sort_unstable();
                        prop_assert_eq!(&rest, &sorted, "the end hands calls back in order");
                        for call in rest {
                            prop_assert!(decided.insert(call), "decided twice");
                        }
                    }
                }
            }
            for call in table.end() {
                prop_assert!(decided.insert(call), "decided twice");
            }
            prop_assert_eq!(registered, decided, "every registered call is decided");
        }
    }
}
