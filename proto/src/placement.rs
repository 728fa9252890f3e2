//! Placement groups (Ray's `ray.util.placement_group`): bundles of resources reserved across the
//! cluster at once by the placement-group manager beside the GCS, with a two-phase commit over
//! the raylets (ids 400-409 for the manager's requests, 206-208 for the raylets'). The design:
//! `docs/decisions/placement_groups.md`.

use serde::{Deserialize, Serialize};

use crate::{wire_message, JobId, NodeId, PlacementGroupId};

/// One bundle: amounts by resource name (`[("CPU", 2.0), ("GPU", 1.0)]`).
pub type Bundle = Vec<(String, f64)>;

/// How a group's bundles are spread over nodes (Ray's four strategies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum PlacementStrategy {
    /// As few nodes as possible (best effort).
    #[default]
    Pack,
    /// Over as many nodes as possible (best effort).
    Spread,
    /// All bundles on one node, or none.
    StrictPack,
    /// Each bundle on a node of its own, or none.
    StrictSpread,
}

impl std::fmt::Display for PlacementStrategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PlacementStrategy::Pack => "PACK",
            PlacementStrategy::Spread => "SPREAD",
            PlacementStrategy::StrictPack => "STRICT_PACK",
            PlacementStrategy::StrictSpread => "STRICT_SPREAD",
        })
    }
}

/// Where a group is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PlacementGroupState {
    /// Waiting to be placed, or its two-phase commit is under way.
    Pending,
    /// Every bundle is reserved.
    Created,
    /// A node holding some of its bundles died: those are being placed again.
    Rescheduling,
    /// Removed (by its owner, or with its job); its resources are back.
    Removed,
}

/// What a caller asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlacementGroupSpec {
    /// Its id, chosen by the caller (random).
    pub id: PlacementGroupId,
    /// Its name in `namespace` (empty: none).
    pub name: String,
    /// The namespace of its name.
    pub namespace: String,
    /// How its bundles spread.
    pub strategy: PlacementStrategy,
    /// The bundles, in index order.
    pub bundles: Vec<Bundle>,
    /// The job that made it: it is removed when the job ends, unless `detached`.
    pub job: Option<JobId>,
    /// It outlives its job (removed only by `remove_placement_group`).
    pub detached: bool,
    /// Conditions on the labels of each bundle's node, by bundle index (Ray's
    /// `bundle_label_selector`; missing or empty: any node).
    #[serde(default)]
    pub bundle_labels: Vec<Vec<crate::raylet::LabelMatch>>,
}

/// A group as `get_placement_group` and `list_placement_groups` show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlacementGroupInfo {
    /// What was asked for.
    pub spec: PlacementGroupSpec,
    /// Where it is in its life.
    pub state: PlacementGroupState,
    /// Each bundle's node, once reserved there.
    pub nodes: Vec<Option<NodeId>>,
    /// Why it was removed, once removed.
    pub removal: Option<String>,
}

/// A placement-group request that cannot be carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum PlacementGroupError {
    /// The request is malformed (no bundle, an empty bundle, a bad amount).
    #[error("invalid placement group: {0}")]
    Invalid(String),
    /// Another live group has this name in this namespace.
    #[error("a placement group named {name:?} already exists in namespace {namespace:?}")]
    NameTaken {
        /// The namespace.
        namespace: String,
        /// The name.
        name: String,
    },
    /// No such group.
    #[error("unknown placement group {0}")]
    Unknown(PlacementGroupId),
    /// The group was removed.
    #[error("placement group {id} was removed: {cause}")]
    Removed {
        /// The group.
        id: PlacementGroupId,
        /// Why.
        cause: String,
    },
}

/// Creates a group; answered once it is recorded (not placed: see
/// [`WaitPlacementGroupReady`]).
#[derive(Debug, Serialize, Deserialize)]
pub struct CreatePlacementGroup(pub PlacementGroupSpec);
wire_message!(CreatePlacementGroup => Result<(), PlacementGroupError>, id = 400);

/// Removes a group: its bundles are returned on every node, the actors in it are killed and
/// the tasks in it fail.
#[derive(Debug, Serialize, Deserialize)]
pub struct RemovePlacementGroup(pub PlacementGroupId);
wire_message!(RemovePlacementGroup => Result<(), PlacementGroupError>, id = 401);

/// A group by id.
#[derive(Debug, Serialize, Deserialize)]
pub struct GetPlacementGroup(pub PlacementGroupId);
wire_message!(GetPlacementGroup => Option<PlacementGroupInfo>, id = 402);

/// A live group by name.
#[derive(Debug, Serialize, Deserialize)]
pub struct GetNamedPlacementGroup {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}
wire_message!(GetNamedPlacementGroup => Option<PlacementGroupInfo>, id = 403);

/// Every group (removed ones included, the most recent kept).
#[derive(Debug, Serialize, Deserialize)]
pub struct ListPlacementGroups;
wire_message!(ListPlacementGroups => Vec<PlacementGroupInfo>, id = 404);

/// Parked until the group is created (`Ok`), or removed (`Err`).
#[derive(Debug, Serialize, Deserialize)]
pub struct WaitPlacementGroupReady(pub PlacementGroupId);
wire_message!(WaitPlacementGroupReady => Result<(), PlacementGroupError>, id = 405, parks);

/// Phase one at a raylet: hold these bundles' resources (taken from the free ones) for the
/// group, or refuse (they are not free).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrepareBundles {
    /// The group.
    pub group: PlacementGroupId,
    /// The round of two-phase commit (the manager's counter): a commit or a cancel names the
    /// round it belongs to, so that a late message of an earlier round cannot undo a later one.
    pub round: u64,
    /// The bundles to hold here, with their indices.
    pub bundles: Vec<(u32, Bundle)>,
}
wire_message!(PrepareBundles => Result<(), String>, id = 206);

/// Phase two at a raylet: the prepared bundles become the group's resources here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommitBundles {
    /// The group.
    pub group: PlacementGroupId,
    /// The round that prepared them.
    pub round: u64,
    /// The bundles, prepared here before.
    pub indices: Vec<u32>,
}
wire_message!(CommitBundles => Result<(), String>, id = 207);

/// Gives back bundles held here, prepared or committed (a failed round, a removed group):
/// workers leased on a committed bundle's resources are killed first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CancelBundles {
    /// The group.
    pub group: PlacementGroupId,
    /// The round whose bundles go back (ignored when `indices` is empty: all of them).
    pub round: u64,
    /// The bundles (none: every bundle of the group held here).
    pub indices: Vec<u32>,
}
wire_message!(CancelBundles => (), id = 208);

crate::service::protocol!(
    /// The placement-group manager, beside the GCS (`head/placement-groups`).
    PlacementGroups = "placement-groups": CreatePlacementGroup, RemovePlacementGroup, GetPlacementGroup,
    GetNamedPlacementGroup, ListPlacementGroups, WaitPlacementGroupReady,
);

/// The marker resource every committed bundle of a group carries (1000 units), in the bundle's
/// own form (`index`) or the group's (`None`): work in a group asks for a little of it, so even
/// work that needs no resource lands on a node of the group.
pub const BUNDLE_MARKER: &str = "bundle";

/// How much of the marker each bundle carries, and how much work in it asks for.
pub const BUNDLE_MARKER_UNITS: f64 = 1000.0;

/// How much of the marker a task or actor in a group asks for.
pub const BUNDLE_MARKER_DEMAND: f64 = 0.001;

/// The name a bundle's resource takes on its node once committed (Ray's names):
/// `CPU_group_2_<group>` for bundle 2, `CPU_group_<group>` for any bundle of the group.
pub fn bundle_resource(resource: &str, group: PlacementGroupId, index: Option<u32>) -> String {
    match index {
        Some(index) => format!("{resource}_group_{index}_{group}"),
        None => format!("{resource}_group_{group}"),
    }
}

/// A demand rewritten for a group: each resource as the bundle's (or the group's), and a little
/// of the bundle marker.
pub fn demand_in_group(demand: &[(String, f64)], group: PlacementGroupId, index: Option<u32>) -> Bundle {
    let mut rewritten: Bundle = demand
        .iter()
        .filter(|(_, amount)| *amount > 0.0)
        .map(|(name, amount)| (bundle_resource(name, group, index), *amount))
        .collect();
    rewritten.push((bundle_resource(BUNDLE_MARKER, group, index), BUNDLE_MARKER_DEMAND));
    rewritten
}

/// What committing bundle `index` of `group` adds to its node's resources: each of its
/// resources in the bundle's and the group's form, and the markers.
pub fn committed_resources(bundle: &[(String, f64)], group: PlacementGroupId, index: u32) -> Bundle {
    let mut added = Bundle::new();
    for (name, amount) in bundle.iter().filter(|(_, amount)| *amount > 0.0) {
        added.push((bundle_resource(name, group, Some(index)), *amount));
        added.push((bundle_resource(name, group, None), *amount));
    }
    added.push((bundle_resource(BUNDLE_MARKER, group, Some(index)), BUNDLE_MARKER_UNITS));
    added.push((bundle_resource(BUNDLE_MARKER, group, None), BUNDLE_MARKER_UNITS));
    added
}

/// The group a resource name belongs to, if it is a bundle's (`CPU_group_2_<id>` or
/// `CPU_group_<id>`).
pub fn group_of_resource(name: &str) -> Option<PlacementGroupId> {
    let (_, tail) = name.rsplit_once("_group_")?;
    let id = tail.rsplit('_').next()?;
    id.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_resources_are_named_as_ray_names_them_and_parse_back() {
        let group = PlacementGroupId([0xab; 16]);
        let hex = "ab".repeat(16);
        assert_eq!(bundle_resource("CPU", group, Some(2)), format!("CPU_group_2_{hex}"));
        assert_eq!(bundle_resource("CPU", group, None), format!("CPU_group_{hex}"));
        assert_eq!(group_of_resource(&format!("CPU_group_2_{hex}")), Some(group));
        assert_eq!(group_of_resource(&format!("my_res_group_{hex}")), Some(group));
        assert_eq!(group_of_resource("CPU"), None);
        let demand = demand_in_group(&[("CPU".into(), 1.0), ("GPU".into(), 0.0)], group, None);
        assert_eq!(
            demand,
            vec![(format!("CPU_group_{hex}"), 1.0), (format!("bundle_group_{hex}"), BUNDLE_MARKER_DEMAND)]
        );
        let added = committed_resources(&[("CPU".into(), 2.0)], group, 0);
        assert_eq!(added.len(), 4);
        assert!(added.contains(&(format!("bundle_group_0_{hex}"), BUNDLE_MARKER_UNITS)));
    }
}
