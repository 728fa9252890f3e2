//! Streaming tasks (Ray's streaming generators, `num_returns="streaming"`): a task that yields
//! values one by one, each an object of its own, owned by the caller, which iterates refs to
//! them as they are made.
//!
//! The protocol, for a task `X` (its own return's id):
//! - the caller reserves ids `X.following(1..=STREAM_VALUES_MAX)` when it submits `X` (one
//!   counter range, so no id is told to anyone) and opens `X`'s stream in its object table;
//! - the worker runs the function's iterator on the task thread; for value `i` it stores the
//!   value (inline, or in the node's store under `X.following(1 + i)`), takes the borrows of
//!   the refs inside it for the caller, and asks the caller's owner service to take it
//!   ([`StreamItem`]); the answer says go on (at once, or once the consumer is less than
//!   `generator_backpressure` values behind) or stop (the consumer is gone);
//! - when the iterator ends, the task's own value is the number of values; its reply comes
//!   after every value was taken in, so the consumer that sees `X` ready has seen them all. A
//!   failure (a panic, an `Err` item, the worker's death after retries) fails `X`: the consumer
//!   gets, after the values sent before it, one ref whose `get` is the error;
//! - a retried task sends its values again from 0: the caller keeps the first copy of each.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use manta_actor::{Context, Handler, ResponseFuture};
use manta_objectstore::ObjectId;
use serde::Serialize;

use crate::core::{self, CoreWorker, OwnerService};
use crate::error::TaskError;
use crate::objects::state::{StreamAck, StreamNext};
use crate::objects::{ObjectRef, RawRef};
use crate::registry::{InvokeError, Output};
use crate::submit::{ArgSpec, TaskOptions};
use crate::wire::{ReturnPart, StreamItem};

/// The most values one streaming task can yield (its reserved ids).
pub const STREAM_VALUES_MAX: u64 = (1 << 32) - 1;

/// The refs to the values of a streaming task (`#[manta::remote(streaming)]`), in the order it
/// yields them: an [`Iterator`] whose `next` blocks until the next value is made, and ends
/// when the task does. A task that fails gives, after the values it made, one ref whose `get`
/// is the error. Dropping the generator releases the values not taken and tells the task to
/// stop at its next value.
pub struct ObjectRefGenerator<T> {
    /// The task's own object: pending while it runs; its value is the number of values.
    task: RawRef,
    /// Whether the failure's ref was given.
    failure_given: bool,
    _value: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for ObjectRefGenerator<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectRefGenerator").field("task", &self.task.id).finish()
    }
}

impl<T> ObjectRefGenerator<T> {
    #[doc(hidden)]
    pub fn __from_raw(task: RawRef) -> Self {
        ObjectRefGenerator { task, failure_given: false, _value: PhantomData }
    }

    /// The task's own ref: ready, with the number of values, once it ended; failed as it did.
    /// `manta::cancel` of it cancels the task.
    pub fn completed(&self) -> ObjectRef<u64> {
        ObjectRef::from_raw(self.task.clone())
    }

    /// The next value's ref, waiting at most `timeout` for it: `Ok(None)` once the task ended
    /// and every value was given, [`TaskError::Timeout`] when none came in time.
    pub fn next_timeout(&mut self, timeout: Duration) -> Result<Option<ObjectRef<T>>, TaskError> {
        self.next_until(Some(Instant::now() + timeout)).ok_or(TaskError::Timeout(timeout))
    }

    /// The next value's ref, waiting until `deadline`; `None` when the deadline passed.
    fn next_until(&mut self, deadline: Option<Instant>) -> Option<Option<ObjectRef<T>>> {
        let task = self.task.id;
        let Some(core) = self.task.core().cloned() else {
            // Made without `manta::init`: its one ref says so.
            return Some(self.failure());
        };
        loop {
            match core.objects.take_stream_item(task) {
                StreamNext::Item(id) => {
                    release_parked(&core, task);
                    return Some(Some(ObjectRef::from_raw(RawRef::from_counted(&core, id, None))));
                }
                StreamNext::Ended => return Some(None),
                StreamNext::Failed => return Some(self.failure()),
                StreamNext::Pending => {
                    let moved = |table: &crate::objects::state::RefTable| {
                        table.peek_stream(task) != StreamNext::Pending
                    };
                    if !core.wait_for_reporting(deadline, moved) {
                        return None;
                    }
                }
            }
        }
    }

    /// The task's failure as one last ref (its `get` is the error), then the end.
    fn failure(&mut self) -> Option<ObjectRef<T>> {
        if std::mem::replace(&mut self.failure_given, true) {
            return None;
        }
        Some(ObjectRef::from_raw(self.task.clone()))
    }
}

impl<T> Iterator for ObjectRefGenerator<T> {
    type Item = ObjectRef<T>;

    fn next(&mut self) -> Option<ObjectRef<T>> {
        self.next_until(None).flatten()
    }
}

impl<T> Drop for ObjectRefGenerator<T> {
    fn drop(&mut self) {
        let Some(core) = self.task.core().cloned() else { return };
        core.clean_up(core.objects.close_stream(self.task.id));
        let parked = core.submitter.stream_acks.lock().remove(&self.task.id);
        if let Some(parked) = parked {
            let _ = parked.send(false);
        }
    }
}

/// Lets a producer waiting for room go on, if there is room now.
fn release_parked(core: &Arc<CoreWorker>, task: ObjectId) {
    let mut parked = core.submitter.stream_acks.lock();
    if parked.contains_key(&task) && core.objects.stream_has_room(task) {
        if let Some(parked) = parked.remove(&task) {
            let _ = parked.send(true);
        }
    }
}

/// Submits the streaming function `function` (what `f::remote(...)` calls for a
/// `#[manta::remote(streaming)]` function). Returns at once.
pub fn submit_streaming(function: &'static str, args: Vec<ArgSpec>, options: &TaskOptions) -> RawRef {
    crate::submit::submit_stream(function, args, options)
}

/// Runs a streaming function's values out to its caller, from inside the running task (what
/// the generated code of a `#[manta::remote(streaming)]` function calls with its iterator).
/// Each value is stored, its refs' borrows taken for the caller, and handed to the caller
/// before the next is made. An `Err` item ends the task with that error. Returns the task's own
/// output: the number of values.
pub fn stream<T, I>(function: &'static str, values: I) -> Result<Output, InvokeError>
where
    T: Serialize,
    I: IntoIterator<Item = Result<T, InvokeError>>,
{
    let outside = |reason: &str| InvokeError::Output { function, reason: reason.to_owned() };
    let core: Arc<CoreWorker> = core::current()
        .map_err(|_| outside("a streaming function runs as a task of a cluster"))?
        .into_owned();
    let (task, owner) = crate::context::current_task_and_owner()
        .ok_or_else(|| outside("a streaming function runs as a task, not called in place"))?;
    let service = core.owner_of(owner);
    let mut count = 0u64;
    for value in values {
        if crate::context::is_cancelled() {
            break;
        }
        if count == STREAM_VALUES_MAX {
            return Err(outside("a streaming task yields at most 2^32 - 1 values"));
        }
        let value = value?;
        let Output { value: encoded, holds, .. } = crate::registry::output(function, &value)?;
        drop(value);
        let (id, index, core) = (task.following(1 + count), count, core.clone());
        let service = service.clone();
        let sent = core.clone().block_on(async move {
            let stored = core.store_value(id, &encoded).await?;
            core.hold_contained(&encoded.refs, owner).await;
            drop(holds);
            let part =
                ReturnPart { value: crate::submit::return_value(&core, stored), contains: encoded.refs };
            // Parked by the caller while its consumer is a window behind.
            Ok::<_, TaskError>(service.ask_unbounded(StreamItem { task, index, part }).await.unwrap_or(false))
        });
        count += 1;
        match sent {
            Ok(true) => {}
            // Nobody reads the stream any more (or its owner is gone): stop early.
            Ok(false) => break,
            Err(error) => return Err(outside(&error.to_string())),
        }
    }
    crate::registry::output(function, &count)
}

impl Handler<StreamItem> for OwnerService {
    type Result = ResponseFuture<bool>;

    /// A value of one of this process's streaming tasks.
    fn handle(&mut self, item: StreamItem, _: &mut Context<Self>) -> Self::Result {
        let Some(core) = self.core.upgrade() else { return Box::pin(std::future::ready(false)) };
        let StreamItem { task, index, part } = item;
        let (value, contains) = crate::submit::part_value(&core, part);
        let (ack, released) = core.objects.stream_item(task, index, value, contains);
        core.clean_up(released);
        match ack {
            StreamAck::Now => Box::pin(std::future::ready(true)),
            StreamAck::Stop => Box::pin(std::future::ready(false)),
            StreamAck::Later => {
                let (sender, answer) = tokio::sync::oneshot::channel();
                core.submitter.stream_acks.lock().insert(task, sender);
                // The consumer may have taken values meanwhile.
                release_parked(&core, task);
                Box::pin(async move { answer.await.unwrap_or(false) })
            }
        }
    }
}
