//! The simulation's actor callers: every driver calls every actor through the core worker's
//! own actor-call client (`manta_worker::cores::actor_client::ActorClientCore`), against actors
//! run by the real actor manager core that crash, restart, fail to construct and are killed.
//!
//! The shell here plays the actor manager's `WatchActor` from the GCS's records (a locate
//! waits while the actor is between incarnations; a watch answers when the incarnation it names
//! is over) and the actor's executor on its worker (a caller epoch's calls run in `seq` order;
//! a reply is lost with its worker; a link breaks now and then). Checked: every call is decided
//! exactly once, runs at most once more than its retries, each worker runs each caller epoch's
//! calls in submission order, and at the end no call is left undecided.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use manta_gcs::wire::ActorState;
use manta_gcs::ActorId;
use manta_raylet::{RandomSource, WorkerId};
use manta_worker::cores::actor_client::{ActorClientCore, CallNo, ClientConfig, Command, Located};

use crate::{Event, Submitter, World};

/// How long a caller waits for the manager's word on a broken link (the real default is 30 s;
/// shorter here so runs that need it stay short).
const VERDICT_WAIT_MS: u64 = 5_000;

/// One driver's client of one actor, and the shell's books on it.
pub(crate) struct SimCaller {
    core: ActorClientCore,
    /// The worker each located incarnation lives on (`None`: alive in the GCS, but its worker
    /// is gone already; sends to it break).
    executors: HashMap<u64, Option<WorkerId>>,
    /// Each call's retries, by number.
    retries: Vec<u32>,
    decided: Vec<bool>,
    /// A locate waiting for the actor to settle.
    locating: bool,
    /// Watches waiting for their incarnation's end.
    watches: BTreeSet<u64>,
    /// The wake-up armed, ms.
    timer: Option<u64>,
}

impl SimCaller {
    /// Calls made and not decided.
    pub(crate) fn undecided(&self) -> usize {
        self.core.undecided()
    }

    pub(crate) fn new() -> Self {
        SimCaller {
            core: ActorClientCore::new(ClientConfig {
                verdict_wait: std::time::Duration::from_millis(VERDICT_WAIT_MS),
            }),
            executors: HashMap::new(),
            retries: Vec::new(),
            decided: Vec::new(),
            locating: false,
            watches: BTreeSet::new(),
            timer: None,
        }
    }
}

/// A caller epoch as one worker sees it: the next `seq` to run, the calls parked until then,
/// and the last call it ran (the order check).
#[derive(Default)]
pub(crate) struct Hosted {
    next_seq: u64,
    parked: BTreeMap<u64, CallNo>,
    last_ran: Option<CallNo>,
}

/// An actor call's events.
#[derive(Debug, Clone)]
pub(crate) enum CallEvent {
    /// The driver makes its next call (`ready`: no argument to resolve).
    Make {
        ready: bool,
        retries: u32,
    },
    /// A call's arguments are resolved.
    Resolved {
        call: CallNo,
    },
    /// A send reaches the worker it was addressed to.
    Arrives {
        worker: Option<WorkerId>,
        epoch: u64,
        seq: u64,
        call: CallNo,
    },
    /// A reply (or the news that its link broke) reaches the caller.
    Reply {
        worker: WorkerId,
        epoch: u64,
        seq: u64,
    },
    Broken {
        epoch: u64,
        seq: u64,
    },
    /// The manager's answer to a locate or a watch arrives.
    Located {
        located: Located,
        worker: Option<WorkerId>,
    },
    Ended {
        restarts: u64,
        located: Located,
        worker: Option<WorkerId>,
    },
    /// The caller's wake-up.
    Timer,
}

impl World {
    /// Schedules each driver's calls to each actor over the run's first seconds.
    pub(crate) fn plan_actor_calls(&mut self) {
        for submitter in 0..self.config.submitters {
            for index in 0..self.actor_ids.len() {
                let actor = self.actor_ids[index];
                self.callers.insert((submitter, actor), SimCaller::new());
                for _ in 0..self.config.calls_per_actor {
                    let delay = self.random.below(3_000) as u64;
                    let ready = self.random.below(4) != 0;
                    let retries = self.random.below(3) as u32;
                    self.schedule(
                        delay,
                        Event::Call { submitter, actor, event: CallEvent::Make { ready, retries } },
                    );
                }
            }
        }
    }

    fn latency(&mut self) -> u64 {
        let (low, high) = self.config.latency_ms;
        low + self.random.below((high - low + 1) as usize) as u64
    }

    /// The worker an alive incarnation runs on, as the GCS and the head node see it.
    fn actor_worker(&self, actor: ActorId) -> Option<WorkerId> {
        self.actor_workers
            .iter()
            .filter(|(worker, (held_by, _))| *held_by == actor && self.nodes[0].workers.contains_key(worker))
            .map(|(worker, _)| *worker)
            .min()
    }

    /// What the manager's `WatchActor` would say now: `None` while the actor is between
    /// incarnations (the watch stays parked).
    fn actor_now(&self, actor: ActorId) -> Option<(Located, Option<WorkerId>)> {
        let info = self.gcs.actor(actor).ok().flatten()?;
        match info.state {
            ActorState::Alive => Some((Located::Alive { restarts: info.restarts }, self.actor_worker(actor))),
            ActorState::Dead => {
                let cause = info.death_cause.unwrap_or_else(|| "it died".to_owned());
                Some((Located::Dead { cause }, None))
            }
            _ => None,
        }
    }

    /// Answers the locates and watches whose answer is known now (the manager's watch fires
    /// when the actor's state changes; here it is looked at after each event that may change an actor or ask).
    pub(crate) fn answer_watches(&mut self) {
        if !std::mem::take(&mut self.watches_dirty) {
            return;
        }
        let keys: Vec<(Submitter, ActorId)> = self.callers.keys().copied().collect();
        for (submitter, actor) in keys {
            let Some((located, worker)) = self.actor_now(actor) else { continue };
            let caller = self.callers.get_mut(&(submitter, actor)).expect("listed");
            let locate = std::mem::take(&mut caller.locating);
            let ended: Vec<u64> = caller
                .watches
                .iter()
                .copied()
                .filter(|restarts| match &located {
                    Located::Alive { restarts: now } => now != restarts,
                    _ => true,
                })
                .collect();
            for restarts in &ended {
                caller.watches.remove(restarts);
            }
            if locate {
                let delay = self.latency();
                let event = CallEvent::Located { located: located.clone(), worker };
                self.schedule(delay, Event::Call { submitter, actor, event });
            }
            for restarts in ended {
                let delay = self.latency();
                let event = CallEvent::Ended { restarts, located: located.clone(), worker };
                self.schedule(delay, Event::Call { submitter, actor, event });
            }
        }
    }

    pub(crate) fn call_event(&mut self, submitter: Submitter, actor: ActorId, event: CallEvent) {
        let now = self.time();
        let Some(caller) = self.callers.get_mut(&(submitter, actor)) else { return };
        match event {
            CallEvent::Make { ready, retries } => {
                let call = caller.retries.len() as CallNo;
                caller.retries.push(retries);
                caller.decided.push(false);
                caller.core.submit(call, retries, ready);
                if !ready {
                    let delay = self.random.below(50) as u64;
                    self.schedule(
                        delay,
                        Event::Call { submitter, actor, event: CallEvent::Resolved { call } },
                    );
                }
            }
            CallEvent::Resolved { call } => caller.core.resolved(call),
            CallEvent::Arrives { worker, epoch, seq, call } => {
                let hosts = worker.filter(|worker| {
                    self.actor_workers.get(worker).is_some_and(|(held_by, _)| *held_by == actor)
                        && self.nodes[0].workers.contains_key(worker)
                });
                let Some(worker) = hosts else {
                    // Nobody there: the connection fails.
                    let delay = self.latency();
                    self.schedule(
                        delay,
                        Event::Call { submitter, actor, event: CallEvent::Broken { epoch, seq } },
                    );
                    return;
                };
                let hosted = self.hosted.entry((worker, submitter, epoch)).or_default();
                hosted.parked.insert(seq, call);
                let mut ran = Vec::new();
                while let Some(call) = hosted.parked.remove(&hosted.next_seq) {
                    if hosted.last_ran.is_some_and(|last| last >= call) {
                        self.violation = Some(format!(
                            "driver {submitter}'s calls to actor {actor} ran out of order on {worker:?}: {call} after {:?}",
                            hosted.last_ran
                        ));
                    }
                    hosted.last_ran = Some(call);
                    ran.push((hosted.next_seq, call));
                    hosted.next_seq += 1;
                }
                for (seq, call) in ran {
                    let runs = self.call_runs.entry((submitter, actor, call)).or_default();
                    *runs += 1;
                    let allowed = self.callers[&(submitter, actor)].retries[call as usize] + 1;
                    if *runs > allowed {
                        self.violation = Some(format!(
                            "driver {submitter}'s call {call} to actor {actor} ran {runs} times"
                        ));
                    }
                    let delay = 1 + self.random.below(20) as u64 + self.latency();
                    self.schedule(
                        delay,
                        Event::Call { submitter, actor, event: CallEvent::Reply { worker, epoch, seq } },
                    );
                }
            }
            CallEvent::Reply { worker, epoch, seq } => {
                let alive = self.nodes[0].workers.contains_key(&worker);
                if !alive || self.random.below(1000) < self.config.link_break_per_mille as usize {
                    // Lost with its worker, or its link broke.
                    self.report.faults += 1;
                    let caller = self.callers.get_mut(&(submitter, actor)).expect("looked up");
                    caller.core.broken(now, epoch, seq, "connection lost".into(), true);
                } else if let Some(call) = caller.core.answered(epoch, seq) {
                    self.decide(submitter, actor, call, true);
                }
            }
            // Nobody served the address: the call never arrived.
            CallEvent::Broken { epoch, seq } => {
                caller.core.broken(now, epoch, seq, "no process serves the address".into(), false)
            }
            CallEvent::Located { located, worker } => {
                if let Located::Alive { restarts } = &located {
                    caller.executors.insert(*restarts, worker);
                }
                caller.core.located(now, located);
            }
            CallEvent::Ended { restarts, located, worker } => {
                if let Located::Alive { restarts } = &located {
                    caller.executors.insert(*restarts, worker);
                }
                caller.core.ended(now, restarts, located);
            }
            CallEvent::Timer => {
                caller.timer = None;
                caller.core.handle_timeout(now);
            }
        }
        self.drive_caller(submitter, actor);
    }

    fn decide(&mut self, submitter: Submitter, actor: ActorId, call: CallNo, answered: bool) {
        let caller = self.callers.get_mut(&(submitter, actor)).expect("deciding a known caller's call");
        let decided = &mut caller.decided[call as usize];
        if *decided {
            self.violation =
                Some(format!("driver {submitter}'s call {call} to actor {actor} was decided twice"));
        }
        *decided = true;
        if answered {
            self.report.actor_calls_answered += 1;
        } else {
            self.report.actor_calls_failed += 1;
        }
    }

    /// Performs a caller core's commands, then arms its wake-up.
    fn drive_caller(&mut self, submitter: Submitter, actor: ActorId) {
        let caller = self.callers.get_mut(&(submitter, actor)).expect("driving a known caller");
        let commands = caller.core.poll_commands();
        let due = caller.core.poll_timeout().map(|due| due.as_millis() as u64);
        for command in commands {
            let caller = self.callers.get_mut(&(submitter, actor)).expect("driving a known caller");
            match command {
                Command::Locate => {
                    caller.locating = true;
                    self.watches_dirty = true;
                }
                Command::Watch { restarts } => {
                    caller.watches.insert(restarts);
                    self.watches_dirty = true;
                }
                Command::Send { call, restarts, epoch, seq, .. } => {
                    let worker = caller.executors.get(&restarts).copied().flatten();
                    let delay = self.latency();
                    let event = CallEvent::Arrives { worker, epoch, seq, call };
                    self.schedule(delay, Event::Call { submitter, actor, event });
                }
                Command::Fail { call, .. } => self.decide(submitter, actor, call, false),
            }
        }
        let caller = self.callers.get_mut(&(submitter, actor)).expect("driving a known caller");
        if let Some(due) = due {
            if caller.timer.is_none_or(|armed| due < armed) {
                caller.timer = Some(due);
                let after = due.saturating_sub(self.now);
                self.schedule(after, Event::Call { submitter, actor, event: CallEvent::Timer });
            }
        }
    }

    /// Every call made has been decided.
    pub(crate) fn calls_settled(&self) -> bool {
        self.callers.values().all(|caller| caller.core.undecided() == 0)
    }

    /// Every planned call was made and decided, and the callers' books agree with their cores.
    pub(crate) fn check_calls_at_end(&self) -> Option<String> {
        for ((submitter, actor), caller) in &self.callers {
            if caller.retries.len() != self.config.calls_per_actor {
                return Some(format!(
                    "driver {submitter} made {} calls to actor {actor}",
                    caller.retries.len()
                ));
            }
            if let Some(call) = caller.decided.iter().position(|decided| !decided) {
                return Some(format!("driver {submitter}'s call {call} to actor {actor} was never decided"));
            }
        }
        None
    }
}
