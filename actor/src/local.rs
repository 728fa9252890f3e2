//! Local actors: spawning under a supervisor, bounded mailboxes, and [`LocalRef`].
//!
//! Lifecycle of a supervised actor (checked on every transition by `Life::transition`):
//!
//! ```text
//! Starting --(constructed)--> Alive --(handler panicked, restarts left)--> Starting
//!    |                          |
//!    +--(constructor panicked)--+--(stopped, or panicked with no restarts left)--> Dead
//! ```
//! Each `Starting -> Alive` begins a new incarnation with a fresh actor value and a fresh actix
//! mailbox. A panic is caught around the actor's whole future on its arbiter (actix itself
//! does not catch panics; tokio would drop the actor silently), so the supervisor can record the
//! cause before anyone asks: callers whose message was queued or in flight get
//! [`AskError::ActorDied`] with the panic message, later callers reach the next incarnation.
//!
//! The mailbox bound is enforced here, not by actix: every message holds a permit of the actor's
//! semaphore from the moment it is enqueued until it has been handled. A caller that finds no
//! permit waits (backpressure); [`LocalRef::try_admit`] lets the transport's dispatcher hand
//! messages over synchronously, in arrival order, and defer only when the actor is full.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use actix::{Actor, Addr, AsyncContext, Context, Handler, MailboxError, Message};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tracing::{error, warn};

use crate::error::AskError;

/// How a local actor is run.
#[derive(Debug, Clone)]
pub struct SpawnOptions {
    /// The actor's name, used in errors and logs.
    pub name: String,
    /// Messages queued or being handled at most; further senders wait.
    pub mailbox_capacity: usize,
    /// Restarts after a panic before the actor is declared dead.
    pub max_restarts: u32,
    /// Deadline of [`LocalRef::ask`].
    pub ask_timeout: Duration,
}

impl SpawnOptions {
    /// Defaults for an actor called `name`: 1024 messages, 3 restarts, 30 s asks.
    pub fn named(name: impl Into<String>) -> Self {
        SpawnOptions {
            name: name.into(),
            mailbox_capacity: 1024,
            max_restarts: 3,
            ask_timeout: Duration::from_secs(30),
        }
    }

    /// Sets the mailbox bound.
    pub fn mailbox_capacity(mut self, capacity: usize) -> Self {
        self.mailbox_capacity = capacity.max(1);
        self
    }

    /// Sets the restart limit.
    pub fn max_restarts(mut self, restarts: u32) -> Self {
        self.max_restarts = restarts;
        self
    }

    /// Sets the ask deadline.
    pub fn ask_timeout(mut self, timeout: Duration) -> Self {
        self.ask_timeout = timeout;
        self
    }
}

/// One point in an actor's lifecycle.
enum Phase<A: Actor> {
    Starting,
    Alive(Addr<A>),
    Dead(String),
}

struct Life<A: Actor> {
    incarnation: u64,
    phase: Phase<A>,
    /// Why the previous incarnation ended, for callers whose messages it took down.
    last_crash: Option<String>,
}

impl<A: Actor> Life<A> {
    fn transition(&mut self, next: Phase<A>) {
        let allowed = matches!(
            (&self.phase, &next),
            (Phase::Starting, Phase::Alive(_))
                | (Phase::Starting, Phase::Dead(_))
                | (Phase::Alive(_), Phase::Starting)
                | (Phase::Alive(_), Phase::Dead(_))
        );
        assert!(
            allowed,
            "actor lifecycle: illegal transition from {} to {}",
            self.phase_name(),
            phase_name(&next)
        );
        if let (Phase::Starting, Phase::Alive(_)) = (&self.phase, &next) {
            self.incarnation += 1;
        }
        self.phase = next;
    }

    fn phase_name(&self) -> &'static str {
        phase_name(&self.phase)
    }
}

fn phase_name<A: Actor>(phase: &Phase<A>) -> &'static str {
    match phase {
        Phase::Starting => "Starting",
        Phase::Alive(_) => "Alive",
        Phase::Dead(_) => "Dead",
    }
}

struct Slot<A: Actor> {
    options: SpawnOptions,
    life: watch::Sender<Life<A>>,
    permits: Arc<Semaphore>,
}

/// A handle to a local actor. Cloning is cheap; the actor stops when the last handle (and any
/// registration of it on a node) is dropped. It stays valid across restarts.
pub struct LocalRef<A: Actor> {
    slot: Arc<Slot<A>>,
}

impl<A: Actor> Clone for LocalRef<A> {
    fn clone(&self) -> Self {
        LocalRef { slot: self.slot.clone() }
    }
}

impl<A: Actor> std::fmt::Debug for LocalRef<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let life = self.slot.life.borrow();
        f.debug_struct("LocalRef")
            .field("name", &self.slot.options.name)
            .field("incarnation", &life.incarnation)
            .field("phase", &life.phase_name())
            .finish()
    }
}

/// Spawns an actor on `arbiter` under a supervisor that restarts it with `factory` after a
/// panic, up to `options.max_restarts` times. `factory` runs on the arbiter's thread, so the
/// actor itself need not be `Send`.
pub fn spawn<A, F>(arbiter: &actix_rt::ArbiterHandle, options: SpawnOptions, factory: F) -> LocalRef<A>
where
    A: Actor<Context = Context<A>>,
    F: Fn() -> A + Send + 'static,
{
    let (life, _) = watch::channel(Life { incarnation: 0, phase: Phase::Starting, last_crash: None });
    let slot =
        Arc::new(Slot { permits: Arc::new(Semaphore::new(options.mailbox_capacity.max(1))), options, life });
    let weak = Arc::downgrade(&slot);
    let spawned = arbiter.spawn_fn(move || {
        actix_rt::spawn(supervise(weak, factory));
    });
    if !spawned {
        slot.life.send_modify(|life| life.transition(Phase::Dead("its arbiter is not running".to_owned())));
    }
    LocalRef { slot }
}

async fn supervise<A, F>(slot: Weak<Slot<A>>, factory: F)
where
    A: Actor<Context = Context<A>>,
    F: Fn() -> A,
{
    let mut restarts = 0u32;
    loop {
        let actor = match std::panic::catch_unwind(AssertUnwindSafe(&factory)) {
            Ok(actor) => actor,
            Err(panic) => {
                let cause = format!("its constructor panicked: {}", panic_message(&*panic));
                if let Some(slot) = slot.upgrade() {
                    error!(actor = %slot.options.name, %cause, "actor could not be started");
                    slot.life.send_modify(|life| life.transition(Phase::Dead(cause)));
                }
                return;
            }
        };
        let mut context = Context::new();
        // The real bound is the slot's semaphore; actix's own must never park a sender, or
        // messages could overtake each other.
        context.set_mailbox_capacity(usize::MAX >> 4);
        let addr = context.address();
        let Some(strong) = slot.upgrade() else { return };
        strong.life.send_modify(|life| life.transition(Phase::Alive(addr)));
        let max_restarts = strong.options.max_restarts;
        drop(strong);

        let outcome = CatchUnwind(Box::pin(context.into_future(actor))).await;
        let Some(slot) = slot.upgrade() else { return };
        let name = &slot.options.name;
        match outcome {
            Ok(()) => {
                slot.life.send_modify(|life| life.transition(Phase::Dead("stopped".to_owned())));
                return;
            }
            Err(panic) => {
                let message = panic_message(&*panic);
                if restarts >= max_restarts {
                    let cause = format!("panicked: {message} (restarts exhausted: {max_restarts})");
                    error!(actor = %name, %cause, "actor is dead");
                    slot.life.send_modify(|life| {
                        life.last_crash = Some(format!("panicked: {message}"));
                        life.transition(Phase::Dead(cause));
                    });
                    return;
                }
                restarts += 1;
                warn!(actor = %name, restart = restarts, max_restarts, panic = %message, "actor panicked; restarting");
                slot.life.send_modify(|life| {
                    life.last_crash = Some(format!("panicked: {message}"));
                    life.transition(Phase::Starting);
                });
            }
        }
    }
}

/// Polls a future inside `catch_unwind`. After a panic the future is dropped, never polled again.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

/// The message of a caught panic (its `&str` or `String` payload).
pub fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "a non-string panic payload".to_owned()
    }
}

/// A place in an actor's mailbox, held from before the message is enqueued until it has been
/// handled. Obtained from [`LocalRef::admit`] or [`LocalRef::try_admit`].
pub struct Admitted<A: Actor> {
    permit: OwnedSemaphorePermit,
    addr: Addr<A>,
    incarnation: u64,
    slot: Arc<Slot<A>>,
}

impl<A: Actor<Context = Context<A>>> Admitted<A> {
    /// Enqueues `message` now and returns a future of the answer. The mailbox place is held
    /// until the answer arrives.
    pub fn ask<M>(self, message: M) -> impl Future<Output = Result<M::Result, AskError>> + Send + 'static
    where
        A: Handler<M>,
        M: Message + Send + 'static,
        M::Result: Send,
    {
        self.ask_holding(message, true)
    }

    /// Enqueues a parked message (see [`crate::WireMessage::PARKS`]) now and returns a future
    /// of the answer; the mailbox place is given back at once, since the answer waits on
    /// events, not on the actor.
    pub fn ask_parked<M>(
        self,
        message: M,
    ) -> impl Future<Output = Result<M::Result, AskError>> + Send + 'static
    where
        A: Handler<M>,
        M: Message + Send + 'static,
        M::Result: Send,
    {
        self.ask_holding(message, false)
    }

    /// Enqueues `message`, as [`Admitted::ask`] when `hold` (the place is kept until the
    /// answer) and as [`Admitted::ask_parked`] otherwise.
    pub(crate) fn ask_holding<M>(
        self,
        message: M,
        hold: bool,
    ) -> impl Future<Output = Result<M::Result, AskError>> + Send + 'static
    where
        A: Handler<M>,
        M: Message + Send + 'static,
        M::Result: Send,
    {
        let request = self.addr.send(message);
        let Admitted { permit, incarnation, slot, .. } = self;
        let permit = if hold { Some(permit) } else { None };
        async move {
            let outcome = request.await;
            drop(permit);
            match outcome {
                Ok(answer) => Ok(answer),
                Err(MailboxError::Closed) => Err(died_during(&slot, incarnation).await),
                Err(MailboxError::Timeout) => Err(AskError::Timeout(slot.options.ask_timeout)),
            }
        }
    }
}

/// The error for a caller whose message was lost with incarnation `incarnation`. Waits briefly
/// for the supervisor to record why: it does so on the actor's thread right after the panic.
async fn died_during<A: Actor>(slot: &Arc<Slot<A>>, incarnation: u64) -> AskError {
    let mut watcher = slot.life.subscribe();
    let recorded =
        watcher.wait_for(|life| life.incarnation > incarnation || !matches!(life.phase, Phase::Alive(_)));
    let _ = tokio::time::timeout(Duration::from_secs(1), recorded).await;
    let life = slot.life.borrow();
    let cause = match (&life.phase, &life.last_crash) {
        (Phase::Dead(cause), _) => cause.clone(),
        (_, Some(crash)) => crash.clone(),
        _ => "its mailbox closed".to_owned(),
    };
    AskError::ActorDied { actor: slot.options.name.clone(), cause }
}

impl<A: Actor<Context = Context<A>>> LocalRef<A> {
    /// The actor's name.
    pub fn name(&self) -> &str {
        &self.slot.options.name
    }

    /// How many times the actor has been started (1 before any restart).
    pub fn incarnation(&self) -> u64 {
        self.slot.life.borrow().incarnation
    }

    /// Why the actor is dead, if it is.
    pub fn death(&self) -> Option<String> {
        match &self.slot.life.borrow().phase {
            Phase::Dead(cause) => Some(cause.clone()),
            _ => None,
        }
    }

    fn dead(&self, cause: &str) -> AskError {
        AskError::ActorDied { actor: self.slot.options.name.clone(), cause: cause.to_owned() }
    }

    /// A mailbox place if one is free and the actor is alive now; `None` when the caller would
    /// have to wait (mailbox full, or the actor is starting).
    pub fn try_admit(&self) -> Option<Result<Admitted<A>, AskError>> {
        let permit = match self.slot.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                // A dead actor frees nothing: say so now instead of deferring forever.
                return self.death().map(|cause| Err(self.dead(&cause)));
            }
        };
        let life = self.slot.life.borrow();
        match &life.phase {
            Phase::Alive(addr) => Some(Ok(Admitted {
                permit,
                addr: addr.clone(),
                incarnation: life.incarnation,
                slot: self.slot.clone(),
            })),
            Phase::Starting => None,
            Phase::Dead(cause) => Some(Err(self.dead(cause))),
        }
    }

    /// Waits for a mailbox place and for the actor to be alive.
    pub async fn admit(&self) -> Result<Admitted<A>, AskError> {
        let permit = self.slot.permits.clone().acquire_owned().await.map_err(|_| self.dead("closed"))?;
        let mut watcher = self.slot.life.subscribe();
        let life = watcher
            .wait_for(|life| !matches!(life.phase, Phase::Starting))
            .await
            .map_err(|_| self.dead("its supervisor is gone"))?;
        match &life.phase {
            Phase::Alive(addr) => Ok(Admitted {
                permit,
                addr: addr.clone(),
                incarnation: life.incarnation,
                slot: self.slot.clone(),
            }),
            Phase::Dead(cause) => Err(self.dead(cause)),
            Phase::Starting => unreachable!("waited until the actor left Starting"),
        }
    }

    /// Sends `message` and waits for the answer, at most the actor's `ask_timeout`.
    pub async fn ask<M>(&self, message: M) -> Result<M::Result, AskError>
    where
        A: Handler<M>,
        M: Message + Send + 'static,
        M::Result: Send,
    {
        self.ask_timeout(message, self.slot.options.ask_timeout).await
    }

    /// Sends `message` and waits for the answer, at most `timeout` (waiting for a mailbox place
    /// included).
    pub async fn ask_timeout<M>(&self, message: M, timeout: Duration) -> Result<M::Result, AskError>
    where
        A: Handler<M>,
        M: Message + Send + 'static,
        M::Result: Send,
    {
        self.ask_holding_timeout(message, true, timeout).await
    }

    /// [`LocalRef::ask_timeout`] for a parked message (see [`crate::WireMessage::PARKS`]):
    /// the mailbox place is held only until the message is enqueued.
    pub async fn ask_parked_timeout<M>(&self, message: M, timeout: Duration) -> Result<M::Result, AskError>
    where
        A: Handler<M>,
        M: Message + Send + 'static,
        M::Result: Send,
    {
        self.ask_holding_timeout(message, false, timeout).await
    }

    async fn ask_holding_timeout<M>(
        &self,
        message: M,
        hold: bool,
        timeout: Duration,
    ) -> Result<M::Result, AskError>
    where
        A: Handler<M>,
        M: Message + Send + 'static,
        M::Result: Send,
    {
        let exchange = async { self.admit().await?.ask_holding(message, hold).await };
        tokio::time::timeout(timeout, exchange).await.unwrap_or(Err(AskError::Timeout(timeout)))
    }

    /// The actor's default ask timeout.
    pub fn ask_timeout_default(&self) -> Duration {
        self.slot.options.ask_timeout
    }

    /// Sends `message` without waiting for it to be handled. Waits only for a mailbox place.
    /// Must be called within a tokio runtime (any actix arbiter qualifies).
    pub async fn tell<M>(&self, message: M) -> Result<(), AskError>
    where
        A: Handler<M>,
        M: Message + Send + 'static,
        M::Result: Send,
    {
        let answer = self.admit().await?.ask(message);
        // The mailbox place is held until the message is handled; nobody waits for the answer.
        tokio::spawn(answer);
        Ok(())
    }
}
