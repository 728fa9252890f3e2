//! The actor-call client's logic as a state machine (Ray's `ActorTaskSubmitter`): one per actor
//! per calling process. Calls in, sends and verdicts out. No clock, no socket, no lock: the
//! shell in `actors.rs` performs the commands and feeds their answers back, the simulator
//! (`manta-sim`) drives it over a simulated network, and the tests below in any order a network
//! could.
//!
//! Calls are numbered in submission order ([`CallNo`]) and sent in that order: a call whose
//! arguments are not resolved yet holds back the calls after it, so the actor runs one caller's
//! calls in the order they were made. Each *incarnation* of the actor (its `restarts` count)
//! gets the calls numbered again from `seq` 0 per *epoch* (a fresh caller id: one per
//! incarnation, and one more whenever the client stops trusting a link and locates the actor
//! again), and the actor runs them in `seq` order.
//!
//! When an incarnation ends (the actor manager's word, or a broken link and no word within
//! `verdict_wait`), every call still waiting on it is decided at once, in submission order: sent
//! again to the next incarnation while it has retries left, ahead of every later call, else
//! failed. A call that surely never reached the incarnation (no connection could be opened)
//! goes to the next one without using up a retry: a call made while the actor restarts waits
//! for the new incarnation. A call's life (each submitted call gets exactly one answer or [`Command::Fail`], or
//! is abandoned by the shell when its arguments fail):
//!
//! ```text
//! Resolving --resolved--> Waiting --sent--> Sent --answered--> (the shell completes it)
//!                           ^                 |  \--link broke--> Broken --+
//!                           +-- incarnation over, retries left <-----------+
//!                                             +-- retries spent, or the actor dead --> Fail
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

/// A call, numbered by the client in submission order.
pub type CallNo = u64;

/// The client's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClientConfig {
    /// How long calls whose link broke wait for the actor manager's word on the incarnation
    /// before the client gives up on it and locates the actor again.
    pub verdict_wait: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig { verdict_wait: Duration::from_secs(30) }
    }
}

/// Where the actor manager says the actor is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Located {
    /// Alive in its incarnation `restarts`.
    Alive {
        /// How many times it has restarted (names the incarnation).
        restarts: u64,
    },
    /// Between incarnations: its worker died and a new one is being started.
    Restarting,
    /// Dead for good.
    Dead {
        /// Why.
        cause: String,
    },
    /// The actor manager could not be asked.
    Unreachable {
        /// Why.
        cause: String,
    },
}

/// Why the client failed a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The actor died (for good, or with no retries left for this call).
    ActorDied {
        /// Why it died.
        cause: String,
    },
    /// The actor manager could not be asked where the actor is.
    ManagerUnreachable {
        /// Why.
        cause: String,
    },
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Ask the actor manager for the actor's live incarnation (waiting while it restarts);
    /// answer with [`ActorClientCore::located`].
    Locate,
    /// Ask the actor manager for the end of incarnation `restarts`; answer with
    /// [`ActorClientCore::ended`].
    Watch {
        /// The incarnation.
        restarts: u64,
    },
    /// Send the call to incarnation `restarts` as `seq` of caller epoch `epoch`. Sends must
    /// reach the actor in the order they are commanded. Answer with
    /// [`ActorClientCore::answered`] or [`ActorClientCore::broken`].
    Send {
        /// The call.
        call: CallNo,
        /// The incarnation it goes to.
        restarts: u64,
        /// The caller epoch (the shell derives the caller id the actor sees from it).
        epoch: u64,
        /// Its number in the epoch.
        seq: u64,
        /// Whether the call may be sent again (its arguments must then be kept).
        retries_left: u32,
    },
    /// The call failed: complete it with this error.
    Fail {
        /// The call.
        call: CallNo,
        /// Why.
        error: CallError,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Its arguments are being resolved.
    Resolving,
    /// Ready, waiting for its turn and an incarnation.
    Waiting,
    /// Sent in the current epoch as `seq`.
    Sent,
}

#[derive(Debug)]
struct Call {
    retries_left: u32,
    stage: Stage,
}

#[derive(Debug)]
enum Target {
    /// No incarnation known and none asked for (before the first call, or after the manager
    /// could not be reached).
    Unknown,
    /// A `Locate` is out.
    Locating,
    /// Calls go to this incarnation.
    Alive(Epoch),
    /// Dead for good.
    Dead { cause: String },
}

/// Sending to one incarnation under one caller id.
#[derive(Debug)]
struct Epoch {
    restarts: u64,
    epoch: u64,
    next_seq: u64,
    /// Calls sent and not decided, by `seq` (which follows submission order).
    sent: BTreeMap<u64, CallNo>,
    /// When a link first broke in this epoch, and how: the calls wait for the manager's word.
    broken: Option<(Duration, String)>,
    /// Calls (by `seq`) that never reached the incarnation.
    undelivered: BTreeSet<u64>,
}

/// One actor's client (see the module doc).
#[derive(Debug)]
pub struct ActorClientCore {
    config: ClientConfig,
    calls: HashMap<CallNo, Call>,
    /// Calls not sent (resolving or waiting), in submission order: the first one goes next.
    unsent: BTreeSet<CallNo>,
    target: Target,
    epochs: u64,
    /// Whether a `Watch` is out for the current incarnation.
    watching: Option<u64>,
    commands: Vec<Command>,
}

impl ActorClientCore {
    /// A client that has made no call yet.
    pub fn new(config: ClientConfig) -> Self {
        ActorClientCore {
            config,
            calls: HashMap::new(),
            unsent: BTreeSet::new(),
            target: Target::Unknown,
            epochs: 0,
            watching: None,
            commands: Vec::new(),
        }
    }

    /// The commands produced since the last poll, in order.
    pub fn poll_commands(&mut self) -> Vec<Command> {
        std::mem::take(&mut self.commands)
    }

    /// Appends the commands produced since the last poll to `out` (no allocation when there
    /// are none).
    pub fn drain_commands(&mut self, out: &mut Vec<Command>) {
        out.append(&mut self.commands);
    }

    /// The caller epoch sends go to now, if any (a send queued for an earlier one is stale:
    /// its call was decided when that epoch ended).
    pub fn current_epoch(&self) -> Option<u64> {
        match &self.target {
            Target::Alive(epoch) => Some(epoch.epoch),
            _ => None,
        }
    }

    /// Calls not yet decided.
    pub fn undecided(&self) -> usize {
        self.calls.len()
    }

    /// A new call, numbered by the shell in submission order (each number above the last);
    /// `ready` when its arguments need no resolving.
    pub fn submit(&mut self, call: CallNo, retries_left: u32, ready: bool) {
        debug_assert!(self.unsent.last().is_none_or(|last| *last < call), "calls are numbered in order");
        let stage = if ready { Stage::Waiting } else { Stage::Resolving };
        self.calls.insert(call, Call { retries_left, stage });
        self.unsent.insert(call);
        match &self.target {
            Target::Dead { cause } => {
                let error = CallError::ActorDied { cause: cause.clone() };
                self.unsent.remove(&call);
                self.calls.remove(&call);
                self.commands.push(Command::Fail { call, error });
            }
            Target::Unknown => {
                self.target = Target::Locating;
                self.commands.push(Command::Locate);
            }
            Target::Locating => {}
            Target::Alive(_) => self.pump(),
        }
    }

    /// The call's arguments are resolved.
    pub fn resolved(&mut self, call: CallNo) {
        if let Some(entry) = self.calls.get_mut(&call) {
            if entry.stage == Stage::Resolving {
                entry.stage = Stage::Waiting;
                self.pump();
            }
        }
    }

    /// The call's arguments failed to resolve: the shell completes it with that error, and the
    /// client forgets it (the calls after it go on).
    pub fn abandon(&mut self, call: CallNo) {
        if self.calls.get(&call).is_some_and(|entry| entry.stage == Stage::Resolving) {
            self.calls.remove(&call);
            self.unsent.remove(&call);
            self.pump();
        }
    }

    /// The answer to a `Locate`.
    pub fn located(&mut self, now: Duration, located: Located) {
        if !matches!(self.target, Target::Locating) {
            return;
        }
        self.settle(now, located);
    }

    /// The answer to `Watch { restarts }`: that incarnation is over, and this is what the
    /// manager knows now.
    pub fn ended(&mut self, now: Duration, restarts: u64, now_located: Located) {
        if self.watching == Some(restarts) {
            self.watching = None;
        }
        let current = matches!(&self.target, Target::Alive(epoch) if epoch.restarts == restarts);
        if !current {
            // Stale: the client moved on already (a broken link, then a new locate).
            return;
        }
        let cause = match &now_located {
            Located::Dead { cause } => cause.clone(),
            _ => "its worker died".to_owned(),
        };
        // The manager's word: calls that never arrived may go on for free.
        self.end_epoch(&cause, true);
        match now_located {
            // The manager answered while it still thought this incarnation alive (it never
            // does; treated as a restart in progress).
            Located::Alive { restarts: next } if next == restarts => self.locate(),
            other => self.settle(now, other),
        }
    }

    /// The `Watch { restarts }` could not be answered (the manager was unreachable): a later
    /// locate watches that incarnation again.
    pub fn watch_failed(&mut self, restarts: u64) {
        if self.watching == Some(restarts) {
            self.watching = None;
        }
    }

    /// The outcome of a call sent in `epoch` as `seq` (its value, the error its method returned,
    /// or an error of the call itself, such as arguments too large to send): the call to
    /// complete, unless the client decided it already.
    pub fn answered(&mut self, epoch: u64, seq: u64) -> Option<CallNo> {
        let Target::Alive(current) = &mut self.target else { return None };
        if current.epoch != epoch {
            return None;
        }
        let call = current.sent.remove(&seq)?;
        self.calls.remove(&call);
        Some(call)
    }

    /// The link broke before the call sent in `epoch` as `seq` was answered (how a dead
    /// worker shows, often before the manager knows); `delivered` is false when the call surely
    /// never reached the actor (no connection could be opened). The call waits for the
    /// manager's word on the incarnation, at most `verdict_wait` from the first break.
    pub fn broken(&mut self, now: Duration, epoch: u64, seq: u64, cause: String, delivered: bool) {
        let Target::Alive(current) = &mut self.target else { return };
        if current.epoch != epoch || !current.sent.contains_key(&seq) {
            return;
        }
        if !delivered {
            current.undelivered.insert(seq);
        }
        if current.broken.is_none() {
            current.broken = Some((now, cause));
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) should run next, if ever.
    pub fn poll_timeout(&self) -> Option<Duration> {
        match &self.target {
            Target::Alive(Epoch { broken: Some((since, _)), .. }) => Some(*since + self.config.verdict_wait),
            _ => None,
        }
    }

    /// Time passed: a broken link whose incarnation the manager has not declared over within
    /// `verdict_wait` ends the epoch (its calls decided with the link's error) and the client
    /// locates the actor again, under a new caller id.
    pub fn handle_timeout(&mut self, now: Duration) {
        let Target::Alive(Epoch { broken: Some((since, cause)), .. }) = &self.target else { return };
        if now < *since + self.config.verdict_wait {
            return;
        }
        let cause = cause.clone();
        // No word from the manager: the incarnation may live on, unreachable from here, so
        // every call uses up a retry (or fails), and a client never loops on it.
        self.end_epoch(&cause, false);
        self.locate();
    }

    fn locate(&mut self) {
        self.target = Target::Locating;
        self.commands.push(Command::Locate);
    }

    /// Acts on what the manager says about the actor now.
    fn settle(&mut self, _now: Duration, located: Located) {
        match located {
            Located::Alive { restarts } => {
                self.epochs += 1;
                self.target = Target::Alive(Epoch {
                    restarts,
                    epoch: self.epochs,
                    next_seq: 0,
                    sent: BTreeMap::new(),
                    broken: None,
                    undelivered: BTreeSet::new(),
                });
                if self.watching != Some(restarts) {
                    self.watching = Some(restarts);
                    self.commands.push(Command::Watch { restarts });
                }
                self.pump();
            }
            Located::Restarting => self.locate(),
            Located::Dead { cause } => {
                self.fail_unsent(|| CallError::ActorDied { cause: cause.clone() });
                self.target = Target::Dead { cause };
            }
            Located::Unreachable { cause } => {
                // Every call waiting fails; the next call asks again.
                self.fail_unsent(|| CallError::ManagerUnreachable { cause: cause.clone() });
                self.target = Target::Unknown;
            }
        }
    }

    /// Fails every call not sent, in submission order.
    fn fail_unsent(&mut self, error: impl Fn() -> CallError) {
        for call in std::mem::take(&mut self.unsent) {
            self.calls.remove(&call);
            self.commands.push(Command::Fail { call, error: error() });
        }
    }

    /// Decides every call sent in the current epoch, in submission order: back to the unsent
    /// (ahead of every later call, since they were made earlier) while retries are left, or
    /// when it never arrived and the manager declared the incarnation over (`free_undelivered`);
    /// else failed.
    fn end_epoch(&mut self, cause: &str, free_undelivered: bool) {
        let Target::Alive(epoch) = std::mem::replace(&mut self.target, Target::Unknown) else { return };
        for (seq, call) in epoch.sent {
            let Some(entry) = self.calls.get_mut(&call) else { continue };
            let arrived = !(free_undelivered && epoch.undelivered.contains(&seq));
            if !arrived || entry.retries_left > 0 {
                if arrived {
                    entry.retries_left -= 1;
                }
                entry.stage = Stage::Waiting;
                self.unsent.insert(call);
            } else {
                self.calls.remove(&call);
                let error = CallError::ActorDied { cause: cause.to_owned() };
                self.commands.push(Command::Fail { call, error });
            }
        }
    }

    /// Sends the unsent calls in order, up to the first whose arguments are not resolved.
    fn pump(&mut self) {
        let Target::Alive(epoch) = &mut self.target else { return };
        while let Some(&call) = self.unsent.first() {
            let entry = self.calls.get_mut(&call).expect("every unsent call is undecided");
            if entry.stage == Stage::Resolving {
                break;
            }
            self.unsent.pop_first();
            entry.stage = Stage::Sent;
            let seq = epoch.next_seq;
            epoch.next_seq += 1;
            epoch.sent.insert(seq, call);
            self.commands.push(Command::Send {
                call,
                restarts: epoch.restarts,
                epoch: epoch.epoch,
                seq,
                retries_left: entry.retries_left,
            });
        }
    }
}

#[cfg(test)]
mod tests;
