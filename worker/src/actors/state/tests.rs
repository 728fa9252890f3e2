//! The actor-call client's behaviours one by one, then a property test against a model actor
//! that dies, restarts, loses links and answers in any order.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use proptest::prelude::*;

use super::*;

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

fn alive(restarts: u64) -> Located {
    Located::Alive { restarts }
}

fn send(call: CallNo, restarts: u64, epoch: u64, seq: u64, retries_left: u32) -> Command {
    Command::Send { call, restarts, epoch, seq, retries_left }
}

fn died(call: CallNo, cause: &str) -> Command {
    Command::Fail { call, error: CallError::ActorDied { cause: cause.to_owned() } }
}

/// A client whose actor is alive in incarnation 0 (epoch 1), commands drained.
fn located_client() -> ActorClientCore {
    let mut core = ActorClientCore::new(ClientConfig::default());
    core.submit(0, 0, true);
    assert_eq!(core.poll_commands(), vec![Command::Locate]);
    core.located(ms(0), alive(0));
    assert_eq!(core.poll_commands(), vec![Command::Watch { restarts: 0 }, send(0, 0, 1, 0, 0)]);
    assert_eq!(core.answered(1, 0), Some(0));
    core
}

#[test]
fn the_first_call_locates_the_actor_and_calls_go_out_in_order() {
    let mut core = ActorClientCore::new(ClientConfig::default());
    core.submit(0, 0, true);
    core.submit(1, 2, true);
    assert_eq!(core.poll_commands(), vec![Command::Locate], "one locate for any number of calls");
    core.located(ms(0), alive(3));
    assert_eq!(
        core.poll_commands(),
        vec![Command::Watch { restarts: 3 }, send(0, 3, 1, 0, 0), send(1, 3, 1, 1, 2)]
    );
    core.submit(2, 0, true);
    assert_eq!(core.poll_commands(), vec![send(2, 3, 1, 2, 0)], "sent at once once located");
    assert_eq!(core.answered(1, 1), Some(1));
    assert_eq!(core.answered(1, 1), None, "decided once");
    assert_eq!(core.answered(7, 0), None, "another epoch's answer is not this one's");
    assert_eq!(core.undecided(), 2);
}

#[test]
fn a_call_waiting_for_its_arguments_holds_back_the_calls_after_it() {
    let mut core = located_client();
    core.submit(1, 0, false);
    core.submit(2, 0, true);
    core.submit(3, 0, false);
    assert_eq!(core.poll_commands(), vec![], "call 2 waits behind call 1");
    core.resolved(3);
    assert_eq!(core.poll_commands(), vec![]);
    core.resolved(1);
    assert_eq!(core.poll_commands(), vec![send(1, 0, 1, 1, 0), send(2, 0, 1, 2, 0), send(3, 0, 1, 3, 0)]);
    core.submit(4, 0, false);
    core.submit(5, 0, true);
    core.abandon(4);
    assert_eq!(core.poll_commands(), vec![send(5, 0, 1, 4, 0)], "an abandoned call no longer holds");
}

#[test]
fn at_an_incarnations_end_retries_keep_their_order_ahead_of_later_calls() {
    let mut core = located_client();
    core.submit(1, 1, true);
    core.submit(2, 0, true);
    core.submit(3, 1, true);
    core.poll_commands();
    assert_eq!(core.answered(1, 1), Some(1));
    // Call 1 answered; 2 and 3 are in flight when the worker dies.
    core.ended(ms(5), 0, Located::Restarting);
    assert_eq!(core.poll_commands(), vec![died(2, "its worker died"), Command::Locate]);
    core.submit(4, 0, true);
    assert_eq!(core.poll_commands(), vec![], "calls wait while the actor restarts");
    core.located(ms(9), alive(1));
    assert_eq!(
        core.poll_commands(),
        vec![Command::Watch { restarts: 1 }, send(3, 1, 2, 0, 0), send(4, 1, 2, 1, 0)],
        "the retried call goes first, numbered again from 0 in a new epoch"
    );
}

#[test]
fn an_end_that_names_the_next_incarnation_goes_straight_to_it() {
    let mut core = located_client();
    core.submit(1, 3, true);
    core.poll_commands();
    core.ended(ms(1), 0, alive(1));
    assert_eq!(core.poll_commands(), vec![Command::Watch { restarts: 1 }, send(1, 1, 2, 0, 2)]);
}

#[test]
fn a_dead_actor_fails_every_call_now_and_later() {
    let mut core = located_client();
    core.submit(1, 5, true);
    core.submit(2, 0, false);
    core.poll_commands();
    core.ended(ms(1), 0, Located::Dead { cause: "killed".into() });
    assert_eq!(core.poll_commands(), vec![died(1, "killed"), died(2, "killed")], "in submission order");
    core.submit(3, 0, true);
    assert_eq!(core.poll_commands(), vec![died(3, "killed")]);
    assert_eq!(core.undecided(), 0);
}

#[test]
fn a_broken_link_waits_for_the_managers_word_and_takes_its_cause() {
    let mut core = located_client();
    core.submit(1, 0, true);
    core.submit(2, 1, true);
    core.poll_commands();
    core.broken(ms(10), 1, 1, "connection lost".into(), true);
    core.broken(ms(11), 1, 2, "connection lost".into(), true);
    assert_eq!(core.poll_commands(), vec![], "nothing decided on a broken link alone");
    assert_eq!(core.poll_timeout(), Some(ms(10) + ClientConfig::default().verdict_wait));
    core.ended(ms(20), 0, Located::Dead { cause: "the worker was killed by signal 9".into() });
    assert_eq!(
        core.poll_commands(),
        vec![died(1, "the worker was killed by signal 9"), died(2, "the worker was killed by signal 9")]
    );
    assert_eq!(core.poll_timeout(), None);
}

#[test]
fn a_broken_link_without_word_ends_the_epoch_and_locates_again() {
    let mut core = located_client();
    core.submit(1, 0, true);
    core.submit(2, 1, true);
    core.poll_commands();
    core.broken(ms(10), 1, 1, "connection lost".into(), true);
    let deadline = core.poll_timeout().expect("a verdict deadline");
    core.handle_timeout(deadline - ms(1));
    assert_eq!(core.poll_commands(), vec![], "not yet");
    core.handle_timeout(deadline);
    assert_eq!(core.poll_commands(), vec![died(1, "connection lost"), Command::Locate]);
    core.located(deadline, alive(0));
    assert_eq!(
        core.poll_commands(),
        vec![send(2, 0, 2, 0, 0)],
        "same incarnation, a new epoch (a fresh caller id), no second watch"
    );
    assert_eq!(core.answered(1, 2), None, "the old epoch's late answer is ignored");
    core.ended(ms(40_000), 0, alive(1));
    assert_eq!(core.poll_commands(), vec![died(2, "its worker died"), Command::Watch { restarts: 1 }]);
}

#[test]
fn a_call_that_never_reached_a_dead_incarnation_waits_for_the_next_without_using_a_retry() {
    let mut core = located_client();
    core.submit(1, 0, true);
    core.submit(2, 0, true);
    core.poll_commands();
    // The worker died after call 1 arrived; call 2 found no one to connect to.
    core.broken(ms(10), 1, 1, "connection lost".into(), true);
    core.broken(ms(10), 1, 2, "no process serves the address".into(), false);
    core.ended(ms(12), 0, Located::Restarting);
    assert_eq!(core.poll_commands(), vec![died(1, "its worker died"), Command::Locate]);
    core.located(ms(50), alive(1));
    assert_eq!(core.poll_commands(), vec![Command::Watch { restarts: 1 }, send(2, 1, 2, 0, 0)]);
}

#[test]
fn an_unreachable_manager_fails_the_waiting_calls_and_the_next_call_asks_again() {
    let mut core = ActorClientCore::new(ClientConfig::default());
    core.submit(0, 2, true);
    core.submit(1, 0, false);
    core.poll_commands();
    core.located(ms(0), Located::Unreachable { cause: "no route".into() });
    let unreachable =
        |call| Command::Fail { call, error: CallError::ManagerUnreachable { cause: "no route".into() } };
    assert_eq!(core.poll_commands(), vec![unreachable(0), unreachable(1)]);
    core.resolved(1);
    assert_eq!(core.poll_commands(), vec![], "a failed call stays failed");
    core.submit(2, 0, true);
    assert_eq!(core.poll_commands(), vec![Command::Locate]);
}

#[test]
fn a_stale_end_changes_nothing() {
    let mut core = located_client();
    core.submit(1, 0, true);
    core.poll_commands();
    core.ended(ms(1), 7, Located::Restarting);
    core.located(ms(1), alive(9));
    assert_eq!(core.poll_commands(), vec![], "neither an unknown incarnation's end nor an unasked locate");
    assert_eq!(core.answered(1, 1), Some(1));
}

// ---- the property test ----

#[derive(Debug, Clone)]
enum Step {
    Submit {
        ready: bool,
        retries: u32,
    },
    Resolve(usize),
    Abandon(usize),
    /// The actor receives the oldest send in flight.
    Deliver,
    /// The client receives the oldest answer or broken link.
    Reply,
    /// The alive incarnation's worker dies.
    Crash,
    /// The link to the actor breaks while it lives: what is on the way is lost.
    Sever,
    /// A restarting actor's next incarnation is up.
    Restart,
    AnswerLocate {
        unreachable: bool,
    },
    AnswerWatch,
    Tick(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (any::<bool>(), 0..3u32).prop_map(|(ready, retries)| Step::Submit { ready: ready || retries == 1, retries }),
        2 => any::<usize>().prop_map(Step::Resolve),
        1 => any::<usize>().prop_map(Step::Abandon),
        6 => Just(Step::Deliver),
        6 => Just(Step::Reply),
        1 => Just(Step::Crash),
        1 => Just(Step::Sever),
        2 => Just(Step::Restart),
        2 => (0..20u32).prop_map(|roll| Step::AnswerLocate { unreachable: roll == 0 }),
        2 => Just(Step::AnswerWatch),
        1 => (1..40_000u64).prop_map(Step::Tick),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Life {
    Alive,
    Restarting,
    Dead,
}

/// The actor and the network, as the client's property test sees them.
#[derive(Debug, Default)]
struct World {
    now: u64,
    restarts: u64,
    life: Option<Life>,
    restarts_left: u32,
    retries: HashMap<CallNo, u32>,
    resolving: Vec<CallNo>,
    /// Sends on their way to the actor, in order: (call, restarts, epoch, seq).
    wire: VecDeque<(CallNo, u64, u64, u64)>,
    /// What comes back: (epoch, seq, broken, restarts, delivered).
    replies: VecDeque<(u64, u64, bool, u64, bool)>,
    /// The actor's next expected seq and parked calls, per (restarts, epoch).
    parked: HashMap<(u64, u64), (u64, BTreeMap<u64, CallNo>)>,
    /// Calls run, per incarnation and caller epoch, in the order they ran.
    ran: BTreeMap<(u64, u64), Vec<CallNo>>,
    runs: HashMap<CallNo, u32>,
    locating: bool,
    watches: BTreeSet<u64>,
    decided: BTreeSet<CallNo>,
}

impl World {
    fn life(&self) -> Life {
        self.life.unwrap_or(Life::Alive)
    }

    fn located(&self) -> Option<Located> {
        match self.life() {
            Life::Alive => Some(alive(self.restarts)),
            Life::Restarting => None,
            Life::Dead => Some(Located::Dead { cause: "dead".into() }),
        }
    }

    fn perform(&mut self, core: &mut ActorClientCore) -> Result<(), TestCaseError> {
        for command in core.poll_commands() {
            match command {
                Command::Locate => {
                    prop_assert!(!self.locating, "one locate at a time");
                    self.locating = true;
                }
                Command::Watch { restarts } => {
                    prop_assert!(self.watches.insert(restarts), "one watch per incarnation");
                }
                Command::Send { call, restarts, epoch, seq, retries_left } => {
                    prop_assert!(!self.decided.contains(&call), "a decided call is not sent");
                    prop_assert!(retries_left <= self.retries[&call]);
                    self.wire.push_back((call, restarts, epoch, seq));
                }
                Command::Fail { call, .. } => {
                    prop_assert!(self.decided.insert(call), "call {} decided twice", call)
                }
            }
        }
        Ok(())
    }

    /// The actor receives a send: it runs a caller epoch's calls in `seq` order.
    fn deliver(&mut self) {
        let Some((call, restarts, epoch, seq)) = self.wire.pop_front() else { return };
        if restarts != self.restarts || self.life() != Life::Alive {
            // Nobody to connect to: it never arrived.
            self.replies.push_back((epoch, seq, true, restarts, false));
            return;
        }
        let (next, parked) = self.parked.entry((restarts, epoch)).or_default();
        parked.insert(seq, call);
        while let Some(call) = parked.remove(next) {
            self.ran.entry((restarts, epoch)).or_default().push(call);
            *self.runs.entry(call).or_default() += 1;
            self.replies.push_back((epoch, *next, false, restarts, true));
            *next += 1;
        }
    }

    fn sever(&mut self) {
        for (_, restarts, epoch, seq) in std::mem::take(&mut self.wire) {
            // Lost on the way: whether it arrived is not known to the caller.
            self.replies.push_back((epoch, seq, true, restarts, true));
        }
        for reply in &mut self.replies {
            reply.2 = true;
        }
    }

    fn crash(&mut self) {
        if self.life() != Life::Alive {
            return;
        }
        // Answers the dead worker had not sent are lost: their links break.
        let dead = self.restarts;
        for reply in self.replies.iter_mut().filter(|reply| reply.3 == dead) {
            reply.2 = true;
        }
        if self.restarts_left > 0 {
            self.restarts_left -= 1;
            self.life = Some(Life::Restarting);
        } else {
            self.life = Some(Life::Dead);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Whatever the actor and the network do: every call is decided exactly once (answered,
    /// failed, or abandoned), runs at most once more than its retries, and each incarnation
    /// runs the calls of each caller epoch in submission order (retries from an earlier
    /// incarnation before later calls); once the world goes quiet, nothing is left undecided.
    #[test]
    fn every_call_is_decided_once_and_runs_in_submission_order(
        steps in proptest::collection::vec(step(), 1..250),
        restarts_left in 0..4u32,
    ) {
        let mut core = ActorClientCore::new(ClientConfig { verdict_wait: ms(30_000) });
        let mut world = World { restarts_left, ..World::default() };
        let mut next_call: CallNo = 0;
        for step in steps {
            let now = ms(world.now);
            match step {
                Step::Submit { ready, retries } => {
                    world.retries.insert(next_call, retries);
                    if !ready {
                        world.resolving.push(next_call);
                    }
                    core.submit(next_call, retries, ready);
                    next_call += 1;
                }
                Step::Resolve(pick) if !world.resolving.is_empty() => {
                    let call = world.resolving.remove(pick % world.resolving.len());
                    core.resolved(call);
                }
                Step::Abandon(pick) if !world.resolving.is_empty() => {
                    let call = world.resolving.remove(pick % world.resolving.len());
                    if !world.decided.contains(&call) {
                        world.decided.insert(call);
                        core.abandon(call);
                    }
                }
                Step::Deliver => world.deliver(),
                Step::Reply => {
                    if let Some((epoch, seq, broken, _, delivered)) = world.replies.pop_front() {
                        if broken {
                            core.broken(now, epoch, seq, "connection lost".into(), delivered);
                        } else if let Some(call) = core.answered(epoch, seq) {
                            prop_assert!(world.decided.insert(call), "call {} decided twice", call);
                        }
                    }
                }
                Step::Crash => world.crash(),
                Step::Sever => world.sever(),
                Step::Restart if world.life() == Life::Restarting => {
                    world.restarts += 1;
                    world.life = Some(Life::Alive);
                }
                Step::AnswerLocate { unreachable } if world.locating => {
                    if unreachable {
                        world.locating = false;
                        core.located(now, Located::Unreachable { cause: "no route".into() });
                    } else if let Some(located) = world.located() {
                        world.locating = false;
                        core.located(now, located);
                    }
                }
                Step::AnswerWatch => {
                    let over = world.watches.iter().copied().find(|restarts| {
                        *restarts < world.restarts || world.life() != Life::Alive
                    });
                    if let Some(restarts) = over {
                        world.watches.remove(&restarts);
                        let located = world.located().unwrap_or(Located::Restarting);
                        core.ended(now, restarts, located);
                    }
                }
                Step::Tick(millis) => {
                    world.now += millis;
                    core.handle_timeout(ms(world.now));
                }
                _ => {}
            }
            world.perform(&mut core)?;
        }

        // The world goes quiet: arguments resolve, the actor comes back up (or stays dead),
        // everything in flight arrives and every question is answered.
        for call in std::mem::take(&mut world.resolving) {
            core.resolved(call);
        }
        world.perform(&mut core)?;
        for _ in 0..10_000 {
            if world.life() == Life::Restarting {
                world.restarts += 1;
                world.life = Some(Life::Alive);
            }
            let now = ms(world.now);
            if !world.wire.is_empty() {
                world.deliver();
            } else if let Some((epoch, seq, broken, _, delivered)) = world.replies.pop_front() {
                if broken {
                    core.broken(now, epoch, seq, "connection lost".into(), delivered);
                } else if let Some(call) = core.answered(epoch, seq) {
                    prop_assert!(world.decided.insert(call), "call {} decided twice", call);
                }
            } else if let Some(restarts) = world.watches.iter().copied().find(|restarts| {
                *restarts < world.restarts || world.life() != Life::Alive
            }) {
                world.watches.remove(&restarts);
                core.ended(now, restarts, world.located().expect("not restarting"));
            } else if world.locating {
                world.locating = false;
                core.located(now, world.located().expect("not restarting"));
            } else if let Some(deadline) = core.poll_timeout() {
                world.now = world.now.max(deadline.as_millis() as u64);
                core.handle_timeout(ms(world.now));
            } else {
                break;
            }
            world.perform(&mut core)?;
        }
        prop_assert_eq!(core.undecided(), 0, "nothing left undecided");
        prop_assert_eq!(world.decided.len() as u64, next_call, "every call decided");
        for (call, runs) in &world.runs {
            prop_assert!(*runs <= world.retries[call] + 1, "call {} ran {} times", call, runs);
        }
        for (incarnation, ran) in &world.ran {
            prop_assert!(ran.windows(2).all(|pair| pair[0] < pair[1]), "{:?} ran {:?}", incarnation, ran);
        }
    }
}
