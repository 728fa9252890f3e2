//! [`ActorPool`]: a fixed set of actors shared by a stream of work items (Ray's
//! `ray.util.ActorPool`). Each item goes to an idle actor; items wait while every actor is busy.
//!
//! As in Ray: `map` and `map_unordered` return only their own results (results of earlier
//! `submit`s not yet taken are dropped, without waiting for them); `get_next` can give up after a
//! timeout and then skip that item for good (`ignore_if_timedout`); an actor can be in the pool
//! once.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use crate::actors::{ActorClass, ActorHandle};
use crate::error::{ActorError, TaskError};
use crate::objects::ObjectRef;

type Start<A, R> = Box<dyn FnOnce(&ActorHandle<A>) -> ObjectRef<R> + Send>;

/// A pool of actors of class `A` producing results of type `R`.
///
/// ```ignore
/// let mut pool = ActorPool::new(vec![Model::remote()?, Model::remote()?]);
/// let predictions = pool.map(|model, shard| model.predict(shard), shards);  // in input order
/// ```
pub struct ActorPool<A: ActorClass, R> {
    idle: VecDeque<ActorHandle<A>>,
    running: HashMap<usize, (ObjectRef<R>, ActorHandle<A>)>,
    waiting: VecDeque<(usize, Start<A, R>)>,
    done: HashMap<usize, Result<R, TaskError>>,
    /// Items whose results are still to be returned, by submission number.
    outstanding: BTreeSet<usize>,
    /// Items whose results are dropped when they finish (skipped after a timeout, or left
    /// behind by `map`).
    ignored: HashSet<usize>,
    next_submitted: usize,
}

/// How a wait for a running item ended.
enum Finished {
    /// An item finished (its result is in `done`, unless it was ignored).
    One,
    /// Nothing is running.
    Idle,
    /// The deadline passed first.
    TimedOut,
}

impl<A: ActorClass, R: DeserializeOwned + Send + 'static> ActorPool<A, R> {
    /// A pool over `actors`.
    pub fn new(actors: Vec<ActorHandle<A>>) -> Self {
        ActorPool {
            idle: actors.into(),
            running: HashMap::new(),
            waiting: VecDeque::new(),
            done: HashMap::new(),
            outstanding: BTreeSet::new(),
            ignored: HashSet::new(),
            next_submitted: 0,
        }
    }

    /// Schedules `call(actor, value)` on the next idle actor (now, or when one frees up).
    pub fn submit<V, F>(&mut self, call: F, value: V)
    where
        V: Send + 'static,
        F: FnOnce(&ActorHandle<A>, V) -> ObjectRef<R> + Send + 'static,
    {
        let index = self.next_submitted;
        self.next_submitted += 1;
        self.outstanding.insert(index);
        let start: Start<A, R> = Box::new(move |actor| call(actor, value));
        match self.idle.pop_front() {
            Some(actor) => {
                let result = start(&actor);
                self.running.insert(index, (result, actor));
            }
            None => self.waiting.push_back((index, start)),
        }
    }

    /// Whether results are still to be returned.
    pub fn has_next(&self) -> bool {
        !self.outstanding.is_empty()
    }

    /// Whether an actor is idle.
    pub fn has_free(&self) -> bool {
        !self.idle.is_empty() && self.waiting.is_empty()
    }

    /// Adds an actor to the pool; an actor already in it (idle or busy) is an error, as in Ray.
    pub fn push(&mut self, actor: ActorHandle<A>) -> Result<(), ActorError> {
        let id = actor.actor_id();
        let busy = self.running.values().map(|(_, actor)| actor);
        if self.idle.iter().chain(busy).any(|member| member.actor_id() == id) {
            return Err(ActorError::Invalid(format!("actor {id} is already in this pool")));
        }
        self.idle.push_back(actor);
        self.start_waiting();
        Ok(())
    }

    /// Takes an idle actor out of the pool.
    pub fn pop_idle(&mut self) -> Option<ActorHandle<A>> {
        self.idle.pop_front()
    }

    fn start_waiting(&mut self) {
        while !self.idle.is_empty() {
            let Some((index, start)) = self.waiting.pop_front() else { return };
            let actor = self.idle.pop_front().expect("checked non-empty");
            let result = start(&actor);
            self.running.insert(index, (result, actor));
        }
    }

    /// Waits (until `deadline`, if any) for any running item to finish; records its result,
    /// unless ignored, and frees its actor.
    fn finish_one(&mut self, deadline: Option<Instant>) -> Finished {
        if self.running.is_empty() {
            return Finished::Idle;
        }
        let mut indices: Vec<usize> = self.running.keys().copied().collect();
        indices.sort_unstable();
        let refs: Vec<ObjectRef<R>> = indices.iter().map(|index| self.running[index].0.clone()).collect();
        let timeout = deadline.map(|deadline| deadline.saturating_duration_since(Instant::now()));
        let index = match crate::api::wait(&refs, 1, timeout) {
            Ok((ready, _)) if ready.is_empty() => return Finished::TimedOut,
            Ok((ready, _)) => {
                let position =
                    refs.iter().position(|reference| *reference == ready[0]).expect("ready is one of refs");
                indices[position]
            }
            // Cannot wait (no runtime): the oldest item fails with the reason.
            Err(error) => {
                let index = indices[0];
                let (_, actor) = self.running.remove(&index).expect("listed");
                self.record(index, Err(error));
                self.idle.push_back(actor);
                self.start_waiting();
                return Finished::One;
            }
        };
        let (result, actor) = self.running.remove(&index).expect("listed");
        let value = result.get();
        self.record(index, value);
        self.idle.push_back(actor);
        self.start_waiting();
        Finished::One
    }

    fn record(&mut self, index: usize, result: Result<R, TaskError>) {
        if !self.ignored.remove(&index) {
            self.done.insert(index, result);
        }
    }

    /// Gives up on item `index`: its result is dropped whenever it comes.
    fn ignore(&mut self, index: usize) {
        self.outstanding.remove(&index);
        if self.done.remove(&index).is_none() {
            self.ignored.insert(index);
        }
    }

    /// The next result in submission order, waiting for it; `None` when all were returned.
    pub fn get_next(&mut self) -> Option<Result<R, TaskError>> {
        self.next_ordered(None, false)
    }

    /// Like [`get_next`](Self::get_next), waiting at most `timeout`: then
    /// `Some(Err(TaskError::Timeout))`, and with `ignore_if_timedout` that item is skipped for
    /// good (its result dropped when it comes), as Ray's `get_next(timeout, ignore_if_timedout)`.
    pub fn get_next_timeout(
        &mut self,
        timeout: Duration,
        ignore_if_timedout: bool,
    ) -> Option<Result<R, TaskError>> {
        self.next_ordered(Some(timeout), ignore_if_timedout)
    }

    fn next_ordered(
        &mut self,
        timeout: Option<Duration>,
        ignore_if_timedout: bool,
    ) -> Option<Result<R, TaskError>> {
        let index = *self.outstanding.first()?;
        let deadline = timeout.map(|timeout| Instant::now() + timeout);
        while !self.done.contains_key(&index) {
            match self.finish_one(deadline) {
                Finished::One => {}
                Finished::Idle => unreachable!("an outstanding item is running, waiting or done"),
                Finished::TimedOut => {
                    if ignore_if_timedout {
                        self.ignore(index);
                    }
                    return Some(Err(TaskError::Timeout(timeout.unwrap_or_default())));
                }
            }
        }
        self.outstanding.remove(&index);
        self.done.remove(&index)
    }

    /// The next result to finish, whatever its order; `None` when all were returned.
    pub fn get_next_unordered(&mut self) -> Option<Result<R, TaskError>> {
        self.next_unordered(None)
    }

    /// Like [`get_next_unordered`](Self::get_next_unordered), waiting at most `timeout` (then
    /// `Some(Err(TaskError::Timeout))`, and every item stays outstanding).
    pub fn get_next_unordered_timeout(&mut self, timeout: Duration) -> Option<Result<R, TaskError>> {
        self.next_unordered(Some(timeout))
    }

    fn next_unordered(&mut self, timeout: Option<Duration>) -> Option<Result<R, TaskError>> {
        if !self.has_next() {
            return None;
        }
        let deadline = timeout.map(|timeout| Instant::now() + timeout);
        loop {
            if let Some(index) = self.done.keys().min().copied() {
                self.outstanding.remove(&index);
                return self.done.remove(&index);
            }
            match self.finish_one(deadline) {
                Finished::One => {}
                Finished::Idle => unreachable!("an outstanding item is running, waiting or done"),
                Finished::TimedOut => return Some(Err(TaskError::Timeout(timeout.unwrap_or_default()))),
            }
        }
    }

    /// Drops the results of earlier submissions not yet taken (without waiting for them), as
    /// Ray's `map` does, so that a map returns only its own.
    fn leave_earlier_behind(&mut self) {
        let earlier: Vec<usize> = self.outstanding.iter().copied().collect();
        for index in earlier {
            self.ignore(index);
        }
    }

    /// Runs `call(actor, value)` for every value over the pool; its own results, in input order.
    pub fn map<V, F>(&mut self, call: F, values: impl IntoIterator<Item = V>) -> Vec<Result<R, TaskError>>
    where
        V: Send + 'static,
        F: Fn(&ActorHandle<A>, V) -> ObjectRef<R> + Clone + Send + 'static,
    {
        self.leave_earlier_behind();
        for value in values {
            self.submit(call.clone(), value);
        }
        std::iter::from_fn(|| self.get_next()).collect()
    }

    /// Like [`ActorPool::map`], results in the order they finish.
    pub fn map_unordered<V, F>(
        &mut self,
        call: F,
        values: impl IntoIterator<Item = V>,
    ) -> Vec<Result<R, TaskError>>
    where
        V: Send + 'static,
        F: Fn(&ActorHandle<A>, V) -> ObjectRef<R> + Clone + Send + 'static,
    {
        self.leave_earlier_behind();
        for value in values {
            self.submit(call.clone(), value);
        }
        std::iter::from_fn(|| self.get_next_unordered()).collect()
    }
}
