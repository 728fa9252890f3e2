//! The raylet's messages (lease requests and their outcomes, worker registration) and the
//! scheduling strategy a request carries.

pub mod requests;

use requests::*;

use crate::NodeId;

/// Where the user asked a task or actor to run (Ray's `scheduling_strategy`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
pub enum SchedulingStrategy {
    #[default]
    /// Ray's default: pack onto lightly used nodes (the local one first), spread once busy.
    Hybrid,
    /// Spread over the nodes with room, round robin.
    Spread,
    /// A given node. `soft`: fall back to the default when it cannot take the work.
    NodeAffinity {
        /// The node asked for.
        node: NodeId,
        /// Whether another node will do if that one cannot.
        soft: bool,
    },
    /// In a placement group's bundle (`None`: any of its bundles), on the bundle's resources
    /// only (Ray's `PlacementGroupSchedulingStrategy`). `capture_child_tasks`: the tasks and
    /// actors it creates without a strategy of their own go in the group too. The submitter
    /// turns it into the group's resources: a raylet schedules those as the default does.
    PlacementGroup {
        /// The group.
        group: crate::PlacementGroupId,
        /// The bundle, or any.
        bundle: Option<u32>,
        /// Its children go in the group too.
        capture_child_tasks: bool,
    },
    /// Nodes by their labels (`manta start --labels k=v,...`; Ray's
    /// `NodeLabelSchedulingStrategy`): only nodes that match every `hard` condition, those
    /// that also match every `soft` one first. No live node matching `hard`: infeasible.
    NodeLabels {
        /// Conditions a node must meet.
        hard: Vec<LabelMatch>,
        /// Conditions a node should meet (preferred among those that meet `hard`).
        soft: Vec<LabelMatch>,
    },
}

/// One condition on a node's labels (Ray's label selector operators).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum LabelMatch {
    /// The node has label `key`, with one of `values`.
    In {
        /// The label.
        key: String,
        /// The values that match.
        values: Vec<String>,
    },
    /// The node lacks label `key`, or has it with none of `values`.
    NotIn {
        /// The label.
        key: String,
        /// The values that do not match.
        values: Vec<String>,
    },
    /// The node has label `key` (any value).
    Exists {
        /// The label.
        key: String,
    },
    /// The node lacks label `key`.
    DoesNotExist {
        /// The label.
        key: String,
    },
}

impl LabelMatch {
    /// `key` has one of `values`.
    pub fn is_in<K: Into<String>, V: Into<String>>(key: K, values: impl IntoIterator<Item = V>) -> Self {
        LabelMatch::In { key: key.into(), values: values.into_iter().map(Into::into).collect() }
    }

    /// `key` is absent or has none of `values`.
    pub fn not_in<K: Into<String>, V: Into<String>>(key: K, values: impl IntoIterator<Item = V>) -> Self {
        LabelMatch::NotIn { key: key.into(), values: values.into_iter().map(Into::into).collect() }
    }

    /// Whether a node with `labels` meets the condition.
    pub fn matches(&self, labels: &[(String, String)]) -> bool {
        let value = |key: &str| labels.iter().find(|(name, _)| name == key).map(|(_, value)| value);
        match self {
            LabelMatch::In { key, values } => value(key).is_some_and(|value| values.contains(value)),
            LabelMatch::NotIn { key, values } => !value(key).is_some_and(|value| values.contains(value)),
            LabelMatch::Exists { key } => value(key).is_some(),
            LabelMatch::DoesNotExist { key } => value(key).is_none(),
        }
    }
}

impl From<&SchedulingStrategy> for SchedulingStrategy {
    /// A strategy used for many calls is passed by reference: `.scheduling_strategy(&spread)`.
    fn from(strategy: &SchedulingStrategy) -> Self {
        strategy.clone()
    }
}

impl SchedulingStrategy {
    /// Whether a node with `labels` may run work of this strategy at all (only label
    /// scheduling's hard conditions exclude nodes by their labels).
    pub fn labels_allow(&self, labels: &[(String, String)]) -> bool {
        match self {
            SchedulingStrategy::NodeLabels { hard, .. } => {
                hard.iter().all(|condition| condition.matches(labels))
            }
            _ => true,
        }
    }
}

crate::service::protocol!(
    /// A node's raylet (`node/raylet`): leases and the workers that serve them.
    Raylet = "raylet": RequestLease, ReturnLease, RegisterWorker, WatchLease, WorkerBlocked, HealthCheck,
    crate::placement::PrepareBundles, crate::placement::CommitBundles, crate::placement::CancelBundles,
);
