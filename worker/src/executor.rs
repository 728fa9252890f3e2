//! The executor: the actor in each worker process that runs tasks pushed by lease holders.
//! A task runs on the blocking pool, never on the actor's arbiter, inside `catch_unwind`, so a
//! panicking task becomes a [`TaskFailure`] and the worker lives on.

use manta_actor::{panic_message, wire_message, Actor, Context, Handler, ResponseFuture};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::registry;

/// The name the executor is registered under in a worker process.
pub const EXECUTOR_NAME: &str = "executor";

/// Runs the registered function `function` on `arguments` (a MessagePack tuple).
#[derive(Debug, Serialize, Deserialize)]
pub struct PushTask {
    /// The function's registered name.
    pub function: String,
    /// Its arguments, encoded.
    pub arguments: ByteBuf,
}
wire_message!(PushTask => Result<ByteBuf, TaskFailure>, id = 300);

/// A task ran but did not produce a value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("task {function} failed in worker pid {pid}: {message}")]
pub struct TaskFailure {
    /// The function's registered name.
    pub function: String,
    /// The worker's process id.
    pub pid: u32,
    /// What happened: the panic message, or why the arguments or output did not (de)serialise.
    pub message: String,
}

/// The executor actor.
#[derive(Debug, Default)]
pub struct Executor;

impl Actor for Executor {
    type Context = Context<Self>;
}

impl Handler<PushTask> for Executor {
    type Result = ResponseFuture<Result<ByteBuf, TaskFailure>>;

    fn handle(&mut self, task: PushTask, _: &mut Context<Self>) -> Self::Result {
        Box::pin(async move {
            let pid = std::process::id();
            let failure = |message: String| TaskFailure { function: task.function.clone(), pid, message };
            let Some(function) = registry::lookup(&task.function) else {
                return Err(failure(format!(
                    "{} is not registered in this worker's binary (is it the same build as the driver?)",
                    task.function
                )));
            };
            let arguments = task.arguments.into_vec();
            let ran = tokio::task::spawn_blocking(move || {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (function.invoke)(&arguments)))
            })
            .await;
            match ran {
                Ok(Ok(Ok(output))) => Ok(ByteBuf::from(output)),
                Ok(Ok(Err(error))) => Err(failure(error.to_string())),
                Ok(Err(panic)) => Err(failure(format!("panicked: {}", panic_message(&*panic)))),
                Err(error) => Err(failure(format!("the task's thread failed: {error}"))),
            }
        })
    }
}
