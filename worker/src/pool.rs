//! [`ActorPool`]: a fixed set of actors shared by a stream of work items (Ray's
//! `ray.util.ActorPool`). Each item goes to an idle actor; items wait while every actor is busy.

use std::collections::{HashMap, VecDeque};

use serde::de::DeserializeOwned;

use crate::actors::{ActorClass, ActorHandle};
use crate::error::TaskError;
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
    next_submitted: usize,
    next_returned: usize,
}

impl<A: ActorClass, R: DeserializeOwned + Send + 'static> ActorPool<A, R> {
    /// A pool over `actors`.
    pub fn new(actors: Vec<ActorHandle<A>>) -> Self {
        ActorPool {
            idle: actors.into(),
            running: HashMap::new(),
            waiting: VecDeque::new(),
            done: HashMap::new(),
            next_submitted: 0,
            next_returned: 0,
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
        self.next_returned < self.next_submitted
    }

    /// Whether an actor is idle.
    pub fn has_free(&self) -> bool {
        !self.idle.is_empty() && self.waiting.is_empty()
    }

    /// Adds an actor to the pool.
    pub fn push(&mut self, actor: ActorHandle<A>) {
        self.idle.push_back(actor);
        self.start_waiting();
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

    /// Waits for any running item to finish; records its result and frees its actor.
    fn finish_one(&mut self) -> Option<usize> {
        if self.running.is_empty() {
            return None;
        }
        let mut indices: Vec<usize> = self.running.keys().copied().collect();
        indices.sort_unstable();
        let refs: Vec<ObjectRef<R>> = indices.iter().map(|index| self.running[index].0.clone()).collect();
        let (ready, _) = match crate::api::wait(&refs, 1, None) {
            Ok(split) => split,
            Err(error) => {
                // Cannot wait (no runtime): fail the oldest item.
                let index = indices[0];
                let (_, actor) = self.running.remove(&index).expect("listed");
                self.done.insert(index, Err(error));
                self.idle.push_back(actor);
                self.start_waiting();
                return Some(index);
            }
        };
        let position =
            refs.iter().position(|reference| *reference == ready[0]).expect("ready is one of refs");
        let index = indices[position];
        let (result, actor) = self.running.remove(&index).expect("listed");
        self.done.insert(index, result.get());
        self.idle.push_back(actor);
        self.start_waiting();
        Some(index)
    }

    /// The next result in submission order, waiting for it; `None` when all were returned.
    pub fn get_next(&mut self) -> Option<Result<R, TaskError>> {
        if !self.has_next() {
            return None;
        }
        let index = self.next_returned;
        while !self.done.contains_key(&index) {
            self.finish_one()?;
        }
        self.next_returned += 1;
        self.done.remove(&index)
    }

    /// The next result to finish, whatever its order; `None` when all were returned.
    pub fn get_next_unordered(&mut self) -> Option<Result<R, TaskError>> {
        if !self.has_next() {
            return None;
        }
        let index = match self.done.keys().next().copied() {
            Some(index) => index,
            None => self.finish_one()?,
        };
        self.next_returned += 1;
        self.done.remove(&index)
    }

    /// Runs `call(actor, value)` for every value over the pool; results in input order.
    pub fn map<V, F>(&mut self, call: F, values: impl IntoIterator<Item = V>) -> Vec<Result<R, TaskError>>
    where
        V: Send + 'static,
        F: Fn(&ActorHandle<A>, V) -> ObjectRef<R> + Clone + Send + 'static,
    {
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
        for value in values {
            self.submit(call.clone(), value);
        }
        std::iter::from_fn(|| self.get_next_unordered()).collect()
    }
}
