//! Placement groups' bundles on this node: the raylet's half of the two-phase commit the
//! placement-group manager runs (`docs/decisions/placement_groups.md`).
//!
//! ```text
//! bundle:  (absent) --prepare--> Prepared --commit--> Committed
//!              ^                     |                    |
//!              +------cancel---------+--------cancel------+
//! ```
//!
//! Prepare takes the bundle's resources out of the free ones (they are held, usable by no
//! lease); commit adds the group's resources (`CPU_group_2_<id>`, `CPU_group_<id>`, the
//! markers) to the node's total and free resources; cancel undoes whichever was done, killing
//! first the workers leased on a committed bundle's resources. A cancel of the whole group
//! (no indices: the group was removed) also remembers the group, so that a late prepare is
//! refused and work asking for its resources fails with a reason instead of waiting forever.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use manta_proto::placement::{committed_resources, group_of_resource, Bundle};
use manta_proto::PlacementGroupId;

use super::{Command, LeaseManager, LeaseReply, SchedulingPolicy, WorkerState};
use crate::resources::ResourceSet;

/// Removed groups remembered at most (the oldest are forgotten first).
const REMOVED_KEPT: usize = 10_000;

/// One bundle held here.
#[derive(Debug, Clone)]
struct Held {
    /// The round of two-phase commit that prepared it.
    round: u64,
    /// What it took from the node's own resources.
    original: ResourceSet,
    /// What committing it added (in the group's names), once committed.
    added: Option<ResourceSet>,
}

/// The bundles held here, and the groups removed.
#[derive(Debug, Default)]
pub(super) struct Bundles {
    held: BTreeMap<(PlacementGroupId, u32), Held>,
    removed: BTreeSet<PlacementGroupId>,
    removed_order: VecDeque<PlacementGroupId>,
}

impl Bundles {
    /// Why a request for `demand` can never be met here, if it asks for a removed group's
    /// resources.
    pub(super) fn refusal(&self, demand: &ResourceSet) -> Option<String> {
        let mut removed = None;
        demand.any_named(|name| {
            removed = group_of_resource(name).filter(|group| self.removed.contains(group));
            removed.is_some()
        });
        removed.map(|group| format!("its placement group {group} was removed"))
    }

    fn forget_group(&mut self, group: PlacementGroupId) {
        if self.removed.insert(group) {
            self.removed_order.push_back(group);
            if self.removed_order.len() > REMOVED_KEPT {
                if let Some(oldest) = self.removed_order.pop_front() {
                    self.removed.remove(&oldest);
                }
            }
        }
    }
}

impl<P: SchedulingPolicy> LeaseManager<P> {
    /// Phase one of `round`: holds `bundles` of `group` (taken from the free resources, all or
    /// none). A bundle held already is kept (and now belongs to `round`).
    pub fn prepare_bundles(
        &mut self,
        group: PlacementGroupId,
        round: u64,
        bundles: &[(u32, Bundle)],
    ) -> Result<(), String> {
        if self.bundles.removed.contains(&group) {
            return Err(format!("placement group {group} was removed"));
        }
        let mut wanted = Vec::new();
        let mut sum = ResourceSet::new();
        for (index, bundle) in bundles {
            if let Some(held) = self.bundles.held.get_mut(&(group, *index)) {
                // Held already, by this round or an earlier one whose cancel is still on its
                // way: this round takes it over (that cancel, naming the earlier round, then
                // changes nothing).
                held.round = round;
                continue;
            }
            let set =
                ResourceSet::from_amounts(bundle).map_err(|error| format!("bundle {index}: {error}"))?;
            sum.add(&set);
            wanted.push((*index, set));
        }
        if !self.resources.available.try_acquire(&sum) {
            return Err(format!(
                "the bundles do not fit here now (asked for {}, free {})",
                describe(&sum),
                describe(&self.resources.available)
            ));
        }
        for (index, original) in wanted {
            self.bundles.held.insert((group, index), Held { round, original, added: None });
        }
        Ok(())
    }

    /// Phase two: the bundles `indices` of `group` that `round` prepared become its resources
    /// here.
    pub fn commit_bundles(
        &mut self,
        now_ms: u64,
        group: PlacementGroupId,
        round: u64,
        indices: &[u32],
    ) -> Result<(), String> {
        for index in indices {
            let Some(held) = self.bundles.held.get(&(group, *index)).filter(|held| held.round == round)
            else {
                return Err(format!(
                    "bundle {index} of placement group {group} is not prepared here by round {round}"
                ));
            };
            if held.added.is_some() {
                continue;
            }
            let bundle: Bundle =
                held.original.iter().map(|(name, quantity)| (name.to_owned(), quantity.as_f64())).collect();
            let added = ResourceSet::from_amounts(&committed_resources(&bundle, group, *index))
                .map_err(|error| format!("bundle {index}: {error}"))?;
            self.resources.total.add(&added);
            self.resources.available.add(&added);
            if let Some(held) = self.bundles.held.get_mut(&(group, *index)) {
                held.added = Some(added);
            }
        }
        // Work waiting for these resources may run now.
        let total = self.resources.total.clone();
        let (fits, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.infeasible)
            .into_iter()
            .partition(|queued| total.contains(&queued.placement));
        self.infeasible = rest.into();
        self.queue.extend(fits);
        self.dispatch(now_ms);
        Ok(())
    }

    /// Gives back bundles `indices` of `group` held here for `round`, prepared or committed; no
    /// indices: every bundle of the group, which is gone for good. Workers leased on a committed
    /// bundle's resources are killed and their leases fail first, as Ray does.
    pub fn cancel_bundles(&mut self, now_ms: u64, group: PlacementGroupId, round: u64, indices: &[u32]) {
        let whole = indices.is_empty();
        let cancelled: Vec<u32> = if whole {
            self.bundles.held.range((group, 0)..=(group, u32::MAX)).map(|((_, index), _)| *index).collect()
        } else {
            // Only what that round holds: a later round may hold the same bundle now.
            let held = &self.bundles.held;
            indices
                .iter()
                .copied()
                .filter(|index| held.get(&(group, *index)).is_some_and(|held| held.round == round))
                .collect()
        };
        let reason = format!("its placement group {group} was removed");
        if cancelled
            .iter()
            .any(|index| self.bundles.held.get(&(group, *index)).is_some_and(|held| held.added.is_some()))
        {
            self.end_leases_of(group, &reason);
        }
        for index in cancelled {
            let Some(held) = self.bundles.held.remove(&(group, index)) else { continue };
            if let Some(added) = held.added {
                self.resources.total.saturating_take(&added);
                self.resources.available.saturating_take(&added);
            }
            let total = self.resources.total.clone();
            // What was taken at prepare goes back (never beyond the total, which it is part of).
            if self.resources.available.release(&held.original, &total).is_err() {
                self.resources.available = total;
            }
        }
        if whole {
            self.bundles.forget_group(group);
            // Work waiting for the group's resources can never run.
            self.refuse_waiting(&reason, |demand| {
                demand.any_named(|name| group_of_resource(name) == Some(group))
            });
        }
        self.dispatch(now_ms);
    }

    /// Ends every lease holding resources of `group` (its worker killed, its requester told).
    fn end_leases_of(&mut self, group: PlacementGroupId, reason: &str) {
        let in_group = |set: &ResourceSet| set.any_named(|name| group_of_resource(name) == Some(group));
        let ended: Vec<_> = self
            .granted
            .iter()
            .filter(|(_, (worker, held))| in_group(held) || self.blocked.get(worker).is_some_and(in_group))
            .map(|(lease, (worker, _))| (*lease, *worker))
            .collect();
        for (lease, worker) in ended {
            let Some((_, held)) = self.granted.remove(&lease) else { continue };
            self.release(&held);
            self.blocked.remove(&worker);
            self.dedicated.remove(&worker);
            if matches!(self.workers.get(&worker), Some(WorkerState::Leased { .. })) {
                self.forget(worker);
                self.commands.push(Command::KillWorker { worker });
            }
            self.reply(lease, LeaseReply::WorkerDied { worker, exit: reason.to_owned() });
        }
    }

    /// Refuses, with `reason`, every waiting request whose demand `test` picks.
    fn refuse_waiting(&mut self, reason: &str, test: impl Fn(&ResourceSet) -> bool) {
        for list in [&mut self.queue, &mut self.infeasible] {
            let (refused, kept): (Vec<_>, Vec<_>) =
                std::mem::take(list).into_iter().partition(|queued| test(&queued.placement));
            *list = kept.into();
            for queued in refused {
                self.commands.push(Command::Reply {
                    lease: queued.lease,
                    reply: LeaseReply::Refused { reason: reason.to_owned() },
                });
            }
        }
    }

    /// The bundles held here: (group, index, committed).
    pub fn held_bundles(&self) -> Vec<(PlacementGroupId, u32, bool)> {
        self.bundles
            .held
            .iter()
            .map(|((group, index), held)| (*group, *index, held.added.is_some()))
            .collect()
    }
}

fn describe(set: &ResourceSet) -> String {
    let parts: Vec<String> = set.iter().map(|(name, quantity)| format!("{quantity} {name}")).collect();
    if parts.is_empty() {
        "nothing".to_owned()
    } else {
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use manta_proto::placement::{bundle_resource, demand_in_group};
    use manta_proto::{JobId, LeaseId, WorkerId};
    use manta_transport::NodeId;

    use super::super::{Command, LeaseManager, LeaseReply, PoolConfig};
    use crate::policy::{DefaultPolicy, SchedulingStrategy, SplitMix64};
    use crate::resources::{Quantity, ResourceSet, CPU};

    const GROUP: manta_proto::PlacementGroupId = manta_proto::PlacementGroupId([7; 16]);

    fn cpus(n: u64) -> ResourceSet {
        ResourceSet::new().with(CPU, Quantity::units(n))
    }

    fn bundle(cpus: f64) -> Vec<(String, f64)> {
        vec![(CPU.to_owned(), cpus)]
    }

    fn ask(leases: &mut LeaseManager<DefaultPolicy>, lease: u64, demand: &[(String, f64)]) {
        let demand = ResourceSet::from_amounts(demand).unwrap();
        leases.request_lease(
            0,
            LeaseId(lease),
            demand,
            SchedulingStrategy::Hybrid,
            false,
            &mut SplitMix64(1),
        );
    }

    #[test]
    fn bundles_are_held_then_committed_then_given_back_with_their_leases() {
        let mut leases =
            LeaseManager::new(NodeId([1; 16]), cpus(4), DefaultPolicy::default(), PoolConfig::default());
        // Phase one holds the resources: all bundles or none.
        assert!(
            leases.prepare_bundles(GROUP, 1, &[(0, bundle(2.0)), (1, bundle(3.0))]).is_err(),
            "5 CPUs of 4"
        );
        assert_eq!(leases.resources().available, cpus(4), "a refused prepare holds nothing");
        leases.prepare_bundles(GROUP, 1, &[(0, bundle(2.0)), (1, bundle(1.0))]).unwrap();
        assert_eq!(leases.resources().available, cpus(1));
        leases.prepare_bundles(GROUP, 1, &[(0, bundle(2.0))]).unwrap();
        assert_eq!(leases.resources().available, cpus(1), "preparing again changes nothing");
        // Phase two adds the group's resources.
        leases.commit_bundles(0, GROUP, 1, &[0, 1]).unwrap();
        let total = &leases.resources().total;
        assert_eq!(total.get(&bundle_resource(CPU, GROUP, Some(0))), Quantity::units(2));
        assert_eq!(total.get(&bundle_resource(CPU, GROUP, None)), Quantity::units(3));
        assert_eq!(total.get(CPU), Quantity::units(4));
        // A task in bundle 0 runs on it.
        ask(&mut leases, 1, &demand_in_group(&[(CPU.to_owned(), 1.0)], GROUP, Some(0)));
        assert_eq!(leases.poll_commands(), vec![Command::StartWorker { worker: WorkerId(1), job: JobId(0) }]);
        assert!(leases.worker_registered(0, WorkerId(1)));
        assert_eq!(
            leases.poll_commands(),
            vec![Command::Reply { lease: LeaseId(1), reply: LeaseReply::Granted { worker: WorkerId(1) } }]
        );
        assert_eq!(
            leases.resources().available.get(CPU),
            Quantity::units(1),
            "the task takes none of the rest"
        );
        // Work for a bundle that is not here waits (another node may hold it).
        ask(&mut leases, 2, &demand_in_group(&[(CPU.to_owned(), 1.0)], GROUP, Some(5)));
        assert!(leases.poll_commands().is_empty());
        // The group is removed: its lease ends (worker killed), waiting work is refused, and
        // every resource is back.
        leases.cancel_bundles(0, GROUP, 0, &[]);
        let commands = leases.poll_commands();
        assert!(commands.contains(&Command::KillWorker { worker: WorkerId(1) }), "{commands:?}");
        assert!(commands.iter().any(|command| matches!(command,
            Command::Reply { lease: LeaseId(1), reply: LeaseReply::WorkerDied { exit, .. } } if exit.contains("removed"))));
        assert!(commands.iter().any(|command| matches!(
            command,
            Command::Reply { lease: LeaseId(2), reply: LeaseReply::Refused { .. } }
        )));
        assert_eq!(leases.resources().total, cpus(4));
        assert_eq!(leases.resources().available, cpus(4));
        assert!(leases.held_bundles().is_empty());
        // A late prepare of the removed group, and new work for it, are refused.
        assert!(leases.prepare_bundles(GROUP, 1, &[(0, bundle(1.0))]).is_err());
        ask(&mut leases, 3, &demand_in_group(&[(CPU.to_owned(), 1.0)], GROUP, None));
        assert!(matches!(
            leases.poll_commands()[..],
            [Command::Reply { lease: LeaseId(3), reply: LeaseReply::Refused { .. } }]
        ));
    }

    #[test]
    fn work_in_a_group_not_yet_placed_waits_then_runs_once_its_bundle_is_committed() {
        let mut leases =
            LeaseManager::new(NodeId([1; 16]), cpus(2), DefaultPolicy::default(), PoolConfig::default());
        ask(&mut leases, 1, &demand_in_group(&[(CPU.to_owned(), 1.0)], GROUP, None));
        assert!(leases.poll_commands().is_empty(), "no failure, no warning: it waits");
        leases.prepare_bundles(GROUP, 1, &[(0, bundle(1.0))]).unwrap();
        leases.commit_bundles(0, GROUP, 1, &[0]).unwrap();
        assert_eq!(leases.poll_commands(), vec![Command::StartWorker { worker: WorkerId(1), job: JobId(0) }]);
    }

    #[test]
    fn a_failed_round_gives_back_only_the_bundles_it_names() {
        let mut leases =
            LeaseManager::new(NodeId([1; 16]), cpus(4), DefaultPolicy::default(), PoolConfig::default());
        leases.prepare_bundles(GROUP, 1, &[(0, bundle(1.0)), (1, bundle(1.0))]).unwrap();
        leases.cancel_bundles(0, GROUP, 1, &[1]);
        assert_eq!(leases.resources().available, cpus(3));
        assert_eq!(leases.held_bundles(), vec![(GROUP, 0, false)]);
        // The group is not gone: it may prepare again.
        leases.prepare_bundles(GROUP, 1, &[(1, bundle(1.0))]).unwrap();
        assert_eq!(leases.resources().available, cpus(2));
        assert!(leases.commit_bundles(0, GROUP, 1, &[2]).is_err(), "bundle 2 was never prepared here");
        // A later round takes over a bundle held by an earlier one, whose late cancel then
        // changes nothing, and whose commit is refused.
        leases.prepare_bundles(GROUP, 2, &[(0, bundle(1.0))]).unwrap();
        leases.cancel_bundles(0, GROUP, 1, &[0, 1]);
        assert_eq!(
            leases.held_bundles(),
            vec![(GROUP, 0, false)],
            "round 1's bundle 1 went, round 2's stays"
        );
        assert!(leases.commit_bundles(0, GROUP, 1, &[0]).is_err());
        leases.commit_bundles(0, GROUP, 2, &[0]).unwrap();
        assert_eq!(leases.resources().available.get(CPU), Quantity::units(3));
    }
}
