//! The actor manager's logic as a state machine: events in (an actor registered, a lease's
//! outcome, a start's outcome, a lease's end, the GCS's verdict on a failure, a kill), commands
//! out (ask the raylet for a lease, start the actor, watch or return the lease, tell the GCS).
//! No clock, no socket: the shell in `actor_manager.rs` performs the commands and feeds their
//! answers back, and tests drive it in any order the network could.
//!
//! One actor's life:
//!
//! ```text
//! Leasing --granted--> Starting --started--> Alive --worker died--> AwaitingVerdict
//!    ^                    |                                              |
//!    +----------------------------- Restarting (GCS) ---------------------+
//! any --kill, infeasible, constructor failed, GCS says Dead--> Dead
//! ```

use std::collections::HashMap;

use manta_proto::gcs::wire::ActorState;
use manta_proto::raylet::requests::{LeaseOutcome, RequestLease};
use manta_proto::worker::{ActorSpec, StartActor, TaskFailure};
use manta_proto::ActorId;

/// Where an actor's life stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for a dedicated lease.
    Leasing,
    /// A worker is leased; the actor is being constructed in it.
    Starting {
        /// The lease.
        lease: u64,
        /// The worker's address.
        address: String,
        /// The worker's pid (for error messages).
        pid: u32,
    },
    /// Constructed and serving.
    Alive {
        /// The lease.
        lease: u64,
        /// The worker's pid.
        pid: u32,
    },
    /// Its worker died; the GCS decides between a restart and death.
    AwaitingVerdict,
    /// Dead for good.
    Dead,
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Ask a raylet for a dedicated lease; answer with [`ManagerCore::lease_outcome`].
    RequestLease {
        /// For whom.
        actor: ActorId,
        /// The request.
        request: RequestLease,
        /// The raylet to ask: the manager's own (`None`), or the one a spillback named.
        raylet: Option<String>,
    },
    /// Construct the actor in the leased worker; answer with [`ManagerCore::start_outcome`].
    StartActor {
        /// The lease it runs under.
        lease: u64,
        /// The worker's address.
        address: String,
        /// The message.
        start: StartActor,
    },
    /// Watch the lease; answer with [`ManagerCore::lease_ended`] when it ends.
    WatchLease {
        /// For whom.
        actor: ActorId,
        /// The lease.
        lease: u64,
        /// The raylet that granted it (`None`: the manager's own).
        raylet: Option<String>,
    },
    /// Give a lease back; its worker is killed, never reused (it held the actor's state).
    ReturnLease {
        /// The lease.
        lease: u64,
        /// The raylet that granted it (`None`: the manager's own).
        raylet: Option<String>,
    },
    /// Tell the GCS the actor is alive at `address`.
    ReportStarted {
        /// The actor.
        actor: ActorId,
        /// Its worker's address.
        address: String,
        /// The raylet whose node it runs on (`None`: the manager's own).
        raylet: Option<String>,
    },
    /// Tell the GCS the actor's worker died; answer with [`ManagerCore::verdict`].
    ReportFailed {
        /// The actor.
        actor: ActorId,
        /// Why.
        cause: String,
    },
    /// Tell the GCS the actor is dead for good.
    MarkDead {
        /// The actor.
        actor: ActorId,
        /// Why.
        cause: String,
    },
}

/// What a kill found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Killed {
    /// Killed now.
    Now,
    /// Killed before.
    Already,
    /// Not an actor this manager knows.
    Unknown,
}

struct Entry {
    spec: ActorSpec,
    phase: Phase,
    killed: bool,
    /// The raylet its lease is asked of or held from (`None`: the manager's own); a spillback
    /// moves it, and each new incarnation starts again from the manager's own.
    raylet: Option<String>,
}

/// The actor manager's state: every actor it started, and the commands not yet taken.
#[derive(Default)]
pub struct ManagerCore {
    actors: HashMap<ActorId, Entry>,
    commands: Vec<Command>,
}

impl ManagerCore {
    /// An empty manager.
    pub fn new() -> Self {
        ManagerCore::default()
    }

    /// The commands produced since the last call, in order.
    pub fn poll_commands(&mut self) -> Vec<Command> {
        std::mem::take(&mut self.commands)
    }

    /// Where `actor`'s life stands.
    pub fn phase(&self, actor: ActorId) -> Option<&Phase> {
        self.actors.get(&actor).map(|entry| &entry.phase)
    }

    /// The GCS registered the actor (its name is claimed): start its first incarnation.
    pub fn registered(&mut self, spec: ActorSpec) {
        let actor = spec.info.actor_id;
        self.actors.insert(actor, Entry { spec, phase: Phase::Leasing, killed: false, raylet: None });
        self.request_lease(actor, None);
    }

    fn request_lease(&mut self, actor: ActorId, spilled_to: Option<String>) {
        let Some(entry) = self.actors.get_mut(&actor) else { return };
        let spilled = spilled_to.is_some();
        entry.raylet = spilled_to;
        let spec = &entry.spec;
        let request = RequestLease {
            cpus: spec.num_cpus,
            gpus: spec.num_gpus,
            resources: spec.resources.clone(),
            dedicated: true,
            strategy: spec.scheduling_strategy.clone(),
            // The manager lives with the GCS: its requests outlive any worker.
            requester: None,
            placement_cpus: spec.placement_cpus,
            job: Some(spec.info.job_id),
            spilled,
            remote_requester: None,
            warn: None,
            arguments: Vec::new(),
        };
        let raylet = entry.raylet.clone();
        self.commands.push(Command::RequestLease { actor, request, raylet });
    }

    /// The raylet `from` (`None`: the manager's own) answered a lease request (`Err`: it could
    /// not be asked).
    pub fn lease_outcome(
        &mut self,
        actor: ActorId,
        from: Option<String>,
        outcome: Result<LeaseOutcome, String>,
    ) {
        let Some(entry) = self.actors.get_mut(&actor) else {
            if let Ok(LeaseOutcome::Granted { lease, .. }) = outcome {
                self.commands.push(Command::ReturnLease { lease, raylet: from });
            }
            return;
        };
        if entry.phase != Phase::Leasing || entry.killed || entry.raylet != from {
            // Killed (or dead) while it waited, or an answer of a raylet no longer asked:
            // nobody will use this worker.
            if let Ok(LeaseOutcome::Granted { lease, .. }) = outcome {
                self.commands.push(Command::ReturnLease { lease, raylet: from });
            }
            return;
        }
        let cause = match outcome {
            Ok(LeaseOutcome::Granted { lease, address, pid }) => {
                let start = StartActor {
                    actor_id: actor,
                    class: entry.spec.info.class.clone(),
                    args: entry.spec.args.clone(),
                    max_concurrency: entry.spec.max_concurrency,
                    concurrency_groups: entry.spec.concurrency_groups.clone(),
                    resources: held_resources(&entry.spec),
                    capture_group: entry.spec.capture_group,
                };
                entry.phase = Phase::Starting { lease, address: address.clone(), pid };
                self.commands.push(Command::StartActor { lease, address, start });
                self.commands.push(Command::WatchLease { actor, lease, raylet: from });
                return;
            }
            // Another node fits better (at most once: a spilled request waits where it went).
            Ok(LeaseOutcome::Spillback { address, .. }) if from.is_none() => {
                self.request_lease(actor, Some(address));
                return;
            }
            Ok(LeaseOutcome::Infeasible { demand }) => format!("infeasible: no node has {demand}"),
            Ok(LeaseOutcome::WorkerStartFailed { exit }) => format!("no worker could be started ({exit})"),
            Ok(LeaseOutcome::Invalid { reason }) => format!("its resources are invalid: {reason}"),
            Ok(LeaseOutcome::Spillback { node, .. }) => {
                format!("spilled back twice (last to node {node}): the cluster's view keeps changing")
            }
            Err(error) => format!("the raylet could not be asked: {error}"),
        };
        self.die(actor, cause);
    }

    /// The worker answered `StartActor` for `lease` (`Err`: it could not be asked).
    pub fn start_outcome(
        &mut self,
        actor: ActorId,
        lease: u64,
        outcome: Result<Result<(), TaskFailure>, String>,
    ) {
        let Some(entry) = self.actors.get_mut(&actor) else { return };
        let Phase::Starting { lease: starting, address, pid } = &entry.phase else { return };
        if *starting != lease || entry.killed {
            return;
        }
        let (address, pid) = (address.clone(), *pid);
        let raylet = entry.raylet.clone();
        match outcome {
            Ok(Ok(())) => {
                entry.phase = Phase::Alive { lease, pid };
                self.commands.push(Command::ReportStarted { actor, address, raylet });
            }
            Ok(Err(failure)) => {
                // The constructor returned an error or panicked: a permanent death (Ray).
                self.commands.push(Command::ReturnLease { lease, raylet });
                self.die(actor, format!("its constructor failed: {}", failure.message));
            }
            Err(error) => {
                self.commands.push(Command::ReturnLease { lease, raylet });
                self.failed(actor, format!("its worker pid {pid} was lost while it started ({error})"));
            }
        }
    }

    /// `lease` ended: its worker died with `exit`, or (`None`) the lease was returned.
    pub fn lease_ended(&mut self, actor: ActorId, lease: u64, exit: Option<String>) {
        let Some(entry) = self.actors.get(&actor) else { return };
        if entry.killed {
            return;
        }
        let exit = exit.unwrap_or_else(|| "its lease ended".to_owned());
        match entry.phase {
            Phase::Starting { lease: current, pid, .. } if current == lease => {
                self.failed(actor, format!("its worker pid {pid} died while it started ({exit})"));
            }
            Phase::Alive { lease: current, pid } if current == lease => {
                self.failed(actor, format!("its worker pid {pid} died ({exit})"));
            }
            // An earlier incarnation's lease, already dealt with.
            _ => {}
        }
    }

    /// The GCS's verdict on a reported failure (`None`: the GCS could not be asked, and the
    /// actor is given up rather than restarted behind its back).
    pub fn verdict(&mut self, actor: ActorId, state: Option<ActorState>) {
        let Some(entry) = self.actors.get_mut(&actor) else { return };
        if entry.phase != Phase::AwaitingVerdict || entry.killed {
            return;
        }
        if state == Some(ActorState::Restarting) {
            entry.phase = Phase::Leasing;
            self.request_lease(actor, None);
        } else {
            entry.phase = Phase::Dead;
        }
    }

    /// Kills the actor for good (`manta::kill`, or its last handle gone).
    pub fn kill(&mut self, actor: ActorId, cause: String) -> Killed {
        let Some(entry) = self.actors.get_mut(&actor) else { return Killed::Unknown };
        if entry.killed {
            return Killed::Already;
        }
        entry.killed = true;
        if let Phase::Starting { lease, .. } | Phase::Alive { lease, .. } = entry.phase {
            self.commands.push(Command::ReturnLease { lease, raylet: entry.raylet.clone() });
        }
        let dead = entry.phase == Phase::Dead;
        entry.phase = Phase::Dead;
        if !dead {
            self.commands.push(Command::MarkDead { actor, cause });
        }
        Killed::Now
    }

    fn failed(&mut self, actor: ActorId, cause: String) {
        if let Some(entry) = self.actors.get_mut(&actor) {
            entry.phase = Phase::AwaitingVerdict;
            self.commands.push(Command::ReportFailed { actor, cause });
        }
    }

    fn die(&mut self, actor: ActorId, cause: String) {
        if let Some(entry) = self.actors.get_mut(&actor) {
            entry.phase = Phase::Dead;
            self.commands.push(Command::MarkDead { actor, cause });
        }
    }
}

/// What an actor holds for its life, as its methods see it assigned.
fn held_resources(spec: &ActorSpec) -> Vec<(String, f64)> {
    let mut held = Vec::new();
    for (name, amount) in [("CPU", spec.num_cpus), ("GPU", spec.num_gpus)] {
        if amount > 0.0 {
            held.push((name.to_owned(), amount));
        }
    }
    held.extend(spec.resources.iter().filter(|(_, amount)| *amount > 0.0).cloned());
    held
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use manta_proto::gcs::wire::ActorInfo;
    use manta_proto::JobId;
    use proptest::prelude::*;

    use super::*;

    fn spec(n: u8) -> ActorSpec {
        ActorSpec {
            scheduling_strategy: Default::default(),
            capture_group: None,
            info: ActorInfo {
                actor_id: ActorId([n; 16]),
                job_id: JobId(1),
                class: "tests::Counter".into(),
                max_task_retries: 0,
                name: None,
                namespace: "default".into(),
                detached: false,
                state: ActorState::PendingCreation,
                node_id: None,
                address: None,
                max_restarts: 1,
                restarts: 0,
                death_cause: None,
            },
            args: Vec::new(),
            num_cpus: 0.0,
            num_gpus: 0.0,
            resources: Vec::new(),
            placement_cpus: 1.0,
            max_concurrency: 1,
            concurrency_groups: Vec::new(),
        }
    }

    fn granted(lease: u64) -> Result<LeaseOutcome, String> {
        Ok(LeaseOutcome::Granted {
            lease,
            address: format!("127.0.0.1:{}", 9000 + lease),
            pid: 100 + lease as u32,
        })
    }

    const A: ActorId = ActorId([1; 16]);

    #[test]
    fn an_actor_is_leased_started_and_restarted_after_its_worker_dies() {
        let mut core = ManagerCore::new();
        core.registered(spec(1));
        let commands = core.poll_commands();
        let [Command::RequestLease { actor: A, request, raylet: None }] = &commands[..] else {
            panic!("{commands:?}")
        };
        assert_eq!((request.cpus, request.placement_cpus), (0.0, 1.0), "placed on a CPU, holding none");
        core.lease_outcome(A, None, granted(7));
        let commands = core.poll_commands();
        assert!(matches!(
            commands[..],
            [Command::StartActor { lease: 7, .. }, Command::WatchLease { actor: A, lease: 7, raylet: None }]
        ));
        core.start_outcome(A, 7, Ok(Ok(())));
        assert_eq!(
            core.poll_commands(),
            vec![Command::ReportStarted { actor: A, address: "127.0.0.1:9007".into(), raylet: None }]
        );
        core.lease_ended(A, 7, Some("killed by signal 9".into()));
        assert_eq!(
            core.poll_commands(),
            vec![Command::ReportFailed {
                actor: A,
                cause: "its worker pid 107 died (killed by signal 9)".into()
            }]
        );
        core.verdict(A, Some(ActorState::Restarting));
        assert!(matches!(core.poll_commands()[..], [Command::RequestLease { actor: A, .. }]));
        core.lease_ended(A, 7, Some("late news of the old worker".into()));
        assert!(core.poll_commands().is_empty(), "an earlier incarnation's lease is ignored");
        assert_eq!(core.phase(A), Some(&Phase::Leasing));
    }

    #[test]
    fn a_spillback_moves_the_lease_to_the_named_raylet_once() {
        let mut core = ManagerCore::new();
        core.registered(spec(1));
        core.poll_commands();
        let elsewhere = "127.0.0.2:7000".to_owned();
        let spillback =
            |node: &str| Ok(LeaseOutcome::Spillback { node: node.into(), address: "127.0.0.2:7000".into() });
        core.lease_outcome(A, None, spillback("b"));
        let commands = core.poll_commands();
        let [Command::RequestLease { actor: A, request, raylet: Some(raylet) }] = &commands[..] else {
            panic!("{commands:?}")
        };
        assert!(request.spilled, "the raylet it goes to keeps it");
        assert_eq!(raylet, &elsewhere);
        // A late grant from the manager's own raylet is given back to it.
        core.lease_outcome(A, None, granted(4));
        assert_eq!(core.poll_commands(), vec![Command::ReturnLease { lease: 4, raylet: None }]);
        // The named raylet's grant is watched and, at a kill, returned there.
        core.lease_outcome(A, Some(elsewhere.clone()), granted(5));
        let commands = core.poll_commands();
        assert!(commands.contains(&Command::WatchLease {
            actor: A,
            lease: 5,
            raylet: Some(elsewhere.clone())
        }));
        core.kill(A, "killed".into());
        assert!(core.poll_commands().contains(&Command::ReturnLease { lease: 5, raylet: Some(elsewhere) }));

        // A second spillback (the spilled-to raylet spills again) is a death that says so.
        const B: ActorId = ActorId([2; 16]);
        let mut spec_b = spec(1);
        spec_b.info.actor_id = B;
        core.registered(spec_b);
        core.lease_outcome(B, None, spillback("b"));
        core.lease_outcome(B, Some("127.0.0.2:7000".into()), spillback("c"));
        assert_eq!(core.phase(B), Some(&Phase::Dead));
    }

    #[test]
    fn a_constructor_that_fails_is_a_permanent_death_and_its_worker_is_returned() {
        let mut core = ManagerCore::new();
        core.registered(spec(1));
        core.lease_outcome(A, None, granted(3));
        core.poll_commands();
        let failure = TaskFailure::new("tests::Counter.new".into(), 103, "boom".into());
        core.start_outcome(A, 3, Ok(Err(failure)));
        assert_eq!(
            core.poll_commands(),
            vec![
                Command::ReturnLease { lease: 3, raylet: None },
                Command::MarkDead { actor: A, cause: "its constructor failed: boom".into() }
            ]
        );
        assert_eq!(core.phase(A), Some(&Phase::Dead));
    }

    #[test]
    fn a_kill_while_leasing_returns_the_lease_that_arrives_later() {
        let mut core = ManagerCore::new();
        core.registered(spec(1));
        core.poll_commands();
        assert_eq!(core.kill(A, "killed by manta::kill".into()), Killed::Now);
        assert_eq!(
            core.poll_commands(),
            vec![Command::MarkDead { actor: A, cause: "killed by manta::kill".into() }]
        );
        core.lease_outcome(A, None, granted(5));
        assert_eq!(core.poll_commands(), vec![Command::ReturnLease { lease: 5, raylet: None }]);
        assert_eq!(core.kill(A, "again".into()), Killed::Already);
        assert_eq!(core.kill(ActorId([9; 16]), "who".into()), Killed::Unknown);
    }

    #[test]
    fn an_infeasible_actor_dies_saying_so() {
        let mut core = ManagerCore::new();
        core.registered(spec(1));
        core.poll_commands();
        core.lease_outcome(A, None, Ok(LeaseOutcome::Infeasible { demand: "1 GPU".into() }));
        assert_eq!(
            core.poll_commands(),
            vec![Command::MarkDead { actor: A, cause: "infeasible: no node has 1 GPU".into() }]
        );
    }

    #[derive(Debug, Clone)]
    enum Event {
        /// Answer the oldest lease request: granted or not.
        AnswerLease(bool),
        /// Answer the oldest start: ok, constructor failure, or no answer (error).
        AnswerStart(u8),
        /// The worker of the oldest watched lease dies.
        WorkerDies,
        /// Answer the oldest failure report: restart or not.
        Verdict(bool),
        /// Kill the actor.
        Kill,
    }

    fn any_event() -> impl Strategy<Value = Event> {
        prop_oneof![
            any::<bool>().prop_map(Event::AnswerLease),
            (0u8..3).prop_map(Event::AnswerStart),
            Just(Event::WorkerDies),
            any::<bool>().prop_map(Event::Verdict),
            Just(Event::Kill),
        ]
    }

    proptest! {
        /// Under any order of answers, deaths and kills: every lease granted is either
        /// returned once or ended by its worker's death, never both, never twice; an actor
        /// holds one lease at most; a dead actor asks for no lease and starts nothing.
        #[test]
        fn leases_are_never_leaked_or_returned_twice(events in proptest::collection::vec(any_event(), 1..60)) {
            let mut core = ManagerCore::new();
            core.registered(spec(1));
            let mut next_lease = 1;
            let (mut lease_requests, mut starts, mut watches, mut reports) = (0usize, Vec::new(), Vec::new(), 0usize);
            let mut granted: BTreeSet<u64> = BTreeSet::new();
            let mut ended: BTreeMap<u64, &'static str> = BTreeMap::new();
            let mut dead_seen = false;
            for event in events {
                match event {
                    Event::AnswerLease(grant) if lease_requests > 0 => {
                        lease_requests -= 1;
                        if grant {
                            granted.insert(next_lease);
                            core.lease_outcome(A, None, self::granted(next_lease));
                            next_lease += 1;
                        } else {
                            core.lease_outcome(A, None, Err("unreachable".into()));
                        }
                    }
                    Event::AnswerStart(kind) if !starts.is_empty() => {
                        let lease = starts.remove(0);
                        let outcome = match kind {
                            0 => Ok(Ok(())),
                            1 => Ok(Err(TaskFailure::new("f".into(), 1, "boom".into()))),
                            _ => Err("connection lost".into()),
                        };
                        core.start_outcome(A, lease, outcome);
                    }
                    Event::WorkerDies if !watches.is_empty() => {
                        let lease: u64 = watches.remove(0);
                        ended.entry(lease).or_insert("died");
                        core.lease_ended(A, lease, Some("killed by signal 9".into()));
                    }
                    Event::Verdict(restart) if reports > 0 => {
                        reports -= 1;
                        core.verdict(A, Some(if restart { ActorState::Restarting } else { ActorState::Dead }));
                    }
                    Event::Kill => {
                        core.kill(A, "killed".into());
                    }
                    _ => {}
                }
                for command in core.poll_commands() {
                    match command {
                        Command::RequestLease { .. } => {
                            prop_assert!(!dead_seen, "a dead actor asked for a lease");
                            lease_requests += 1;
                        }
                        Command::StartActor { lease, .. } => {
                            prop_assert!(!dead_seen, "a dead actor was started");
                            starts.push(lease);
                        }
                        Command::WatchLease { lease, .. } => watches.push(lease),
                        Command::ReturnLease { lease, .. } => {
                            prop_assert!(granted.contains(&lease), "returned a lease never granted");
                            prop_assert!(ended.insert(lease, "returned").is_none(), "lease {} ended twice", lease);
                        }
                        Command::ReportFailed { .. } => reports += 1,
                        Command::MarkDead { .. } | Command::ReportStarted { .. } => {}
                    }
                }
                dead_seen |= core.phase(A) == Some(&Phase::Dead);
                let held = granted.iter().filter(|lease| !ended.contains_key(lease)).count();
                prop_assert!(held <= 1, "{} leases held at once", held);
                if dead_seen {
                    prop_assert_eq!(held, 0, "a dead actor holds a lease");
                }
            }
        }
    }
}
