//! What the three batch-prediction examples share: a small MLP classifier with fixed weights
//! (a deterministic "checkpoint"), a generated data set, and the single-process reference the
//! distributed predictions are checked against.

#![allow(dead_code, missing_docs)]

use serde::{Deserialize, Serialize};

/// Features per row.
pub(crate) const INPUTS: usize = 64;
/// Hidden units.
pub(crate) const HIDDEN: usize = 1024;
/// Classes.
pub(crate) const CLASSES: usize = 10;
/// Rows in the data set.
pub(crate) const ROWS: usize = 20_000;
/// Rows per shard (one task or actor call each).
pub(crate) const SHARD_ROWS: usize = 2_000;

/// A two-layer perceptron: `argmax(W2 · relu(W1 · x + b1) + b2)`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Model {
    pub(crate) w1: manta::Buffer<f32>,
    pub(crate) b1: manta::Buffer<f32>,
    pub(crate) w2: manta::Buffer<f32>,
    pub(crate) b2: manta::Buffer<f32>,
}

/// A deterministic generator (SplitMix64), so every process builds the same model and data.
pub(crate) struct Random(u64);

impl Random {
    pub(crate) fn new(seed: u64) -> Self {
        Random(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [-scale, scale).
    pub(crate) fn uniform(&mut self, scale: f32) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
    }
}

impl Model {
    /// "Loads" the model: builds its weights from the fixed checkpoint seed (1 MiB of floats).
    pub(crate) fn load() -> Model {
        let mut random = Random::new(0x5eed);
        let mut weights = |count: usize, scale: f32| -> manta::Buffer<f32> {
            manta::Buffer::from((0..count).map(|_| random.uniform(scale)).collect::<Vec<f32>>())
        };
        Model {
            w1: weights(HIDDEN * INPUTS, 0.125),
            b1: weights(HIDDEN, 0.1),
            w2: weights(CLASSES * HIDDEN, 0.03),
            b2: weights(CLASSES, 0.1),
        }
    }

    /// The class of each row of `rows` (`INPUTS` features per row).
    pub(crate) fn predict(&self, rows: &[f32]) -> Vec<u8> {
        let mut hidden = vec![0f32; HIDDEN];
        rows.chunks_exact(INPUTS)
            .map(|row| {
                for (unit, value) in hidden.iter_mut().enumerate() {
                    let weights = &self.w1[unit * INPUTS..(unit + 1) * INPUTS];
                    let sum: f32 = weights.iter().zip(row).map(|(w, x)| w * x).sum::<f32>() + self.b1[unit];
                    *value = sum.max(0.0);
                }
                let mut best = (0u8, f32::NEG_INFINITY);
                for class in 0..CLASSES {
                    let weights = &self.w2[class * HIDDEN..(class + 1) * HIDDEN];
                    let score: f32 =
                        weights.iter().zip(&hidden).map(|(w, h)| w * h).sum::<f32>() + self.b2[class];
                    if score > best.1 {
                        best = (class as u8, score);
                    }
                }
                best.0
            })
            .collect()
    }
}

/// The data set, as shards of `SHARD_ROWS` rows.
pub(crate) fn shards() -> Vec<manta::Buffer<f32>> {
    let mut random = Random::new(0xda7a);
    (0..ROWS / SHARD_ROWS)
        .map(|_| {
            manta::Buffer::from((0..SHARD_ROWS * INPUTS).map(|_| random.uniform(1.0)).collect::<Vec<f32>>())
        })
        .collect()
}

/// Checks distributed predictions against one process computing them all; prints a summary.
/// The node this code runs on (a task's or an actor's), as its short name.
pub(crate) fn this_node() -> String {
    manta::get_runtime_context()
        .map_or_else(|_| "?".to_owned(), |context| context.node_id.to_string()[..8].to_owned())
}

/// Prints where the shards were predicted: on a cluster, the work spreads over its nodes.
pub(crate) fn report_nodes(label: &str, nodes: &[String]) {
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for node in nodes {
        *counts.entry(node.as_str()).or_default() += 1;
    }
    let spread: Vec<String> = counts.iter().map(|(node, shards)| format!("{node}: {shards}")).collect();
    println!("{label}: shards per node ({} node(s)): {}", counts.len(), spread.join(", "));
}

pub(crate) fn check(label: &str, predictions: &[Vec<u8>], elapsed: std::time::Duration) {
    let model = Model::load();
    let expected: Vec<Vec<u8>> = shards().iter().map(|shard| model.predict(shard)).collect();
    assert_eq!(predictions, expected.as_slice(), "{label}: predictions differ from the single-process run");
    let mut histogram = [0usize; CLASSES];
    for class in predictions.iter().flatten() {
        histogram[usize::from(*class)] += 1;
    }
    println!(
        "{label}: {} rows in {} shards predicted in {elapsed:?}, identical to a single-process run; classes {histogram:?}",
        ROWS,
        predictions.len()
    );
}
