//! Batch prediction with tasks (the seed's first program): each task loads the model itself and
//! predicts one shard of the data set, in a worker process.
//!
//! `cargo run --release --example batch_tasks` (on a running cluster: `MANTA_ADDRESS=auto`, and
//! it prints how the shards spread over the nodes)

#[path = "batch_common/mod.rs"]
mod batch_common;

use batch_common::{check, report_nodes, shards, this_node, Model};

/// Loads the model and predicts one shard; says on which node.
#[manta::remote]
fn predict_shard(shard: manta::Buffer<f32>) -> (Vec<u8>, String) {
    (Model::load().predict(&shard), this_node())
}

#[manta::main]
fn main() -> anyhow::Result<()> {
    manta::init_logging();
    let _cluster = manta::init()?;
    // The shards go into the object store once; each task reads its shard in place.
    let shards: Vec<_> = shards().into_iter().map(manta::put).collect::<Result<_, _>>()?;
    let started = std::time::Instant::now();
    let predictions: Vec<_> = shards.iter().map(predict_shard::remote).collect();
    let (predictions, nodes): (Vec<Vec<u8>>, Vec<String>) = manta::get_all(&predictions)?.into_iter().unzip();
    check("batch_tasks", &predictions, started.elapsed());
    report_nodes("batch_tasks", &nodes);
    Ok(())
}
