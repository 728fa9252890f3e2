//! Placement groups in the user's API (Ray's `ray.util.placement_group`): reserve bundles of
//! resources across the cluster at once, then run tasks and actors in them
//! (`.placement_group(&pg, Some(index))`). The placement-group manager beside the GCS reserves
//! the bundles by two-phase commit (`docs/decisions/placement_groups.md`).
//!
//! ```ignore
//! let pg = manta::placement_group([[("CPU", 1.0)], [("CPU", 1.0)]], PlacementStrategy::Spread)?;
//! pg.ready().get()?;
//! let on_first = work::options().placement_group(&pg, Some(0)).remote(x);
//! manta::remove_placement_group(&pg)?;
//! ```

use std::sync::Arc;
use std::time::Duration;

use manta_proto::placement::{
    Bundle, CreatePlacementGroup, GetNamedPlacementGroup, GetPlacementGroup, ListPlacementGroups,
    PlacementGroupError, PlacementGroupInfo, PlacementGroupSpec, RemovePlacementGroup,
    WaitPlacementGroupReady,
};
pub use manta_proto::placement::{PlacementGroupState, PlacementStrategy};
use manta_proto::PlacementGroupId;
use serde::{Deserialize, Serialize};

use crate::core::{self, CoreWorker};
use crate::objects::{ObjectRef, RawRef, State, Value};
use crate::{SchedulingStrategy, TaskError};

/// A placement group: cheap to clone, and it travels inside task arguments (a task can place
/// its own work in the group it was given).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementGroup {
    id: PlacementGroupId,
    bundles: u32,
}

/// Whether a group lives with the job that made it (Ray's default) or until removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Lifetime {
    /// Removed when its job ends.
    #[default]
    Job,
    /// Outlives its job (Ray's `lifetime="detached"`).
    Detached,
}

/// The options of [`placement_group_with`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlacementGroupOptions {
    /// A name, unique among live groups of its namespace (empty: none).
    pub name: String,
    /// The namespace of the name (default: the job's).
    pub namespace: Option<String>,
    /// With the job, or detached.
    pub lifetime: Lifetime,
    /// Conditions on the labels of each bundle's node, by bundle index (Ray's
    /// `bundle_label_selector`; missing or empty: any node).
    pub bundle_labels: Vec<Vec<crate::LabelMatch>>,
}

/// Reserves `bundles` (each a map of resource amounts: `[("CPU", 2.0), ("GPU", 1.0)]`) under
/// `strategy`. Returns once the group is recorded; [`PlacementGroup::ready`] resolves once
/// every bundle is reserved (a group no set of nodes can hold stays pending until one joins).
pub fn placement_group<B, N>(
    bundles: impl IntoIterator<Item = B>,
    strategy: PlacementStrategy,
) -> Result<PlacementGroup, TaskError>
where
    B: IntoIterator<Item = (N, f64)>,
    N: Into<String>,
{
    placement_group_with(bundles, strategy, PlacementGroupOptions::default())
}

/// [`placement_group`] with a name, a namespace or a lifetime.
pub fn placement_group_with<B, N>(
    bundles: impl IntoIterator<Item = B>,
    strategy: PlacementStrategy,
    options: PlacementGroupOptions,
) -> Result<PlacementGroup, TaskError>
where
    B: IntoIterator<Item = (N, f64)>,
    N: Into<String>,
{
    let core = core::current()?;
    let bundles: Vec<Bundle> = bundles
        .into_iter()
        .map(|bundle| bundle.into_iter().map(|(name, amount)| (name.into(), amount)).collect())
        .collect();
    let count = u32::try_from(bundles.len()).map_err(|_| invalid("more than 2^32 bundles".to_owned()))?;
    let id = PlacementGroupId::random().map_err(|error| invalid(error.to_string()))?;
    let spec = PlacementGroupSpec {
        id,
        name: options.name,
        namespace: options.namespace.unwrap_or_else(|| core.namespace.clone()),
        strategy,
        bundles,
        job: Some(core.job),
        detached: options.lifetime == Lifetime::Detached,
        bundle_labels: options.bundle_labels,
    };
    let manager = core.placement_groups.clone();
    core.block_on(async move { manager.ask(CreatePlacementGroup(spec)).await })
        .map_err(|error| unreachable("placement_group", error))?
        .map_err(refused)?;
    known(id, count);
    Ok(PlacementGroup { id, bundles: count })
}

/// Bundle counts of the groups this process made or looked up (to check a bundle index named
/// by a `PlacementGroup` scheduling strategy at the call).
static KNOWN: parking_lot::Mutex<Option<std::collections::HashMap<PlacementGroupId, u32>>> =
    parking_lot::Mutex::new(None);

fn known(id: PlacementGroupId, bundles: u32) {
    KNOWN.lock().get_or_insert_with(Default::default).insert(id, bundles);
}

/// Where work goes, given its `.placement_group(..)` option and its strategy: the option; a
/// [`SchedulingStrategy::PlacementGroup`] (then scheduled as the default would, on the group's
/// resources); or, for work that names no strategy, the group the running task or actor
/// captures its children in (Ray's `capture_child_tasks`). Also returns the group the work
/// itself captures its children in, and the strategy to send.
pub(crate) fn resolve(
    explicit: Option<InGroup>,
    strategy: &SchedulingStrategy,
) -> (Option<InGroup>, Option<PlacementGroupId>, SchedulingStrategy) {
    match (explicit, strategy) {
        (Some(group), _) => (Some(group), None, strategy.clone()),
        (None, SchedulingStrategy::PlacementGroup { group, bundle, capture_child_tasks }) => {
            let bundles =
                KNOWN.lock().as_ref().and_then(|known| known.get(group).copied()).unwrap_or(u32::MAX);
            let in_group = InGroup { group: *group, bundle: *bundle, bundles };
            (Some(in_group), capture_child_tasks.then_some(*group), SchedulingStrategy::Hybrid)
        }
        (None, SchedulingStrategy::Hybrid) => match crate::context::capture_group() {
            Some(group) => {
                let in_group = InGroup { group, bundle: None, bundles: u32::MAX };
                (Some(in_group), Some(group), SchedulingStrategy::Hybrid)
            }
            None => (None, None, SchedulingStrategy::Hybrid),
        },
        (None, other) => (None, None, other.clone()),
    }
}

/// Removes `group`: its bundles are given back on every node, the workers running in it are
/// killed (their tasks fail, saying so), and work asking for it later fails.
pub fn remove_placement_group(group: &PlacementGroup) -> Result<(), TaskError> {
    let core = core::current()?;
    let (manager, id) = (core.placement_groups.clone(), group.id);
    core.block_on(async move { manager.ask(RemovePlacementGroup(id)).await })
        .map_err(|error| unreachable("remove_placement_group", error))?
        .map_err(refused)
}

/// The live group named `name` in this job's namespace (Ray's `get_placement_group`).
pub fn get_placement_group(name: &str) -> Result<PlacementGroup, TaskError> {
    let core = core::current()?;
    let (manager, namespace) = (core.placement_groups.clone(), core.namespace.clone());
    let request = GetNamedPlacementGroup { namespace: namespace.clone(), name: name.to_owned() };
    let info = core
        .block_on(async move { manager.ask(request).await })
        .map_err(|error| unreachable("get_placement_group", error))?;
    match info {
        Some(info) => {
            let bundles = info.spec.bundles.len() as u32;
            known(info.spec.id, bundles);
            Ok(PlacementGroup { id: info.spec.id, bundles })
        }
        None => Err(invalid(format!("no placement group named {name:?} in namespace {namespace:?}"))),
    }
}

/// Every placement group the cluster knows (Ray's `ray.util.state.list_placement_groups`):
/// its spec, state and each bundle's node.
pub fn list_placement_groups() -> Result<Vec<PlacementGroupInfo>, TaskError> {
    let core = core::current()?;
    let manager = core.placement_groups.clone();
    core.block_on(async move { manager.ask(ListPlacementGroups).await })
        .map_err(|error| unreachable("list_placement_groups", error))
}

impl PlacementGroup {
    /// Its id.
    pub fn id(&self) -> PlacementGroupId {
        self.id
    }

    /// How many bundles it has.
    pub fn bundle_count(&self) -> u32 {
        self.bundles
    }

    /// Resolves (to `()`) once every bundle is reserved; fails if the group is removed first.
    /// An object ref like a task's: `get`, `get_timeout`, `.await`, and `manta::wait` take it.
    pub fn ready(&self) -> Result<ObjectRef<()>, TaskError> {
        let core = core::current()?;
        let id = core.new_object_id();
        core.objects.create_owned(id, State::Pending, Vec::new());
        let ready = ObjectRef::from_raw(RawRef::from_counted(&core, id, None));
        let (manager, group, waiter) = (core.placement_groups.clone(), self.id, Arc::downgrade(&core));
        core.arbiter.spawn(async move {
            let answer = manager.ask_unbounded(WaitPlacementGroupReady(group)).await;
            let Some(core) = waiter.upgrade() else { return };
            let outcome = match answer {
                Ok(Ok(())) => crate::codec::encode(&())
                    .map(|encoded| (Value::Inline(bytes::Bytes::from(encoded.to_vec())), Vec::new()))
                    .map_err(|error| TaskError::Encode { reason: error.to_string() }),
                Ok(Err(error)) => Err(refused(error)),
                Err(error) => Err(unreachable("placement_group.ready", error)),
            };
            complete(&core, id, outcome);
        });
        Ok(ready)
    }

    /// Waits up to `timeout` for the group to be ready: `true` once it is, `false` if the time
    /// ran out first (Ray's `pg.wait(timeout_seconds)`).
    pub fn wait(&self, timeout: Duration) -> Result<bool, TaskError> {
        match self.ready()?.get_timeout(timeout) {
            Ok(()) => Ok(true),
            Err(TaskError::Timeout(_)) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// The scheduling strategy that places work in bundle `bundle` (`None`: any), its
    /// children too when `capture_child_tasks` (Ray's `PlacementGroupSchedulingStrategy`). A
    /// bundle index out of range is an error here.
    pub fn strategy(
        &self,
        bundle: Option<u32>,
        capture_child_tasks: bool,
    ) -> Result<SchedulingStrategy, TaskError> {
        InGroup::new(self, bundle).demand(&[]).map_err(invalid)?;
        Ok(SchedulingStrategy::PlacementGroup { group: self.id, bundle, capture_child_tasks })
    }

    /// Its record now: state, strategy, bundles and each bundle's node.
    pub fn info(&self) -> Result<PlacementGroupInfo, TaskError> {
        let core = core::current()?;
        let (manager, id) = (core.placement_groups.clone(), self.id);
        core.block_on(async move { manager.ask(GetPlacementGroup(id)).await })
            .map_err(|error| unreachable("placement_group.info", error))?
            .ok_or_else(|| invalid(format!("unknown placement group {id}")))
    }
}

fn complete(
    core: &Arc<CoreWorker>,
    id: manta_proto::ObjectId,
    outcome: Result<(Value, Vec<crate::RefWire>), TaskError>,
) {
    core.clean_up(core.objects.complete(id, outcome));
}

fn invalid(reason: String) -> TaskError {
    TaskError::Invalid { function: "placement_group".to_owned(), reason }
}

fn refused(error: PlacementGroupError) -> TaskError {
    invalid(error.to_string())
}

fn unreachable(function: &str, error: impl std::fmt::Display) -> TaskError {
    TaskError::unreachable(function, "the placement-group manager", error)
}

/// Where a task or an actor goes in a group: its id, the bundle (`None`: any), and how many
/// bundles the group has (to check the index at the call).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InGroup {
    pub(crate) group: PlacementGroupId,
    pub(crate) bundle: Option<u32>,
    pub(crate) bundles: u32,
}

impl InGroup {
    /// In `group`, bundle `bundle` (`None`: any of its bundles).
    pub fn new(group: &PlacementGroup, bundle: Option<u32>) -> InGroup {
        InGroup { group: group.id, bundle, bundles: group.bundles }
    }

    /// The demand rewritten into the group's resources, or why the bundle index is wrong.
    pub(crate) fn demand(&self, demand: &[(String, f64)]) -> Result<Vec<(String, f64)>, String> {
        if let Some(index) = self.bundle {
            if index >= self.bundles {
                return Err(format!(
                    "bundle index {index} is out of range: placement group {} has {} bundles",
                    self.group, self.bundles
                ));
            }
        }
        Ok(manta_proto::placement::demand_in_group(demand, self.group, self.bundle))
    }
}
