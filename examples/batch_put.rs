//! Batch prediction passing the model by reference (the seed's third program): the driver loads
//! the model once and `manta::put`s it; every task gets a reference, resolved to the model before
//! it runs, read in place from the shared-memory object store instead of being copied to it.
//!
//! `cargo run --release --example batch_put` (on a running cluster: `MANTA_ADDRESS=auto`)

#[path = "batch_common/mod.rs"]
mod batch_common;

use batch_common::{check, report_nodes, shards, this_node, Model};

/// Predicts one shard with the model it is given.
#[manta::remote]
fn predict_with(model: Model, shard: manta::Buffer<f32>) -> (Vec<u8>, bool, String) {
    (model.predict(&shard), manta::is_in_object_store(model.w1.as_bytes()), this_node())
}

#[manta::main]
fn main() -> anyhow::Result<()> {
    manta::init_logging();
    let _cluster = manta::init()?;
    let model = manta::put(Model::load())?;
    let shards: Vec<_> = shards().into_iter().map(manta::put).collect::<Result<_, _>>()?;
    let started = std::time::Instant::now();
    let results: Vec<_> = shards.iter().map(|shard| predict_with::remote(&model, shard)).collect();
    let results = manta::get_all(&results)?;
    let elapsed = started.elapsed();
    assert!(results.iter().all(|(_, zero_copy, _)| *zero_copy), "the workers read the model in place");
    let nodes: Vec<String> = results.iter().map(|(_, _, node)| node.clone()).collect();
    let predictions: Vec<Vec<u8>> = results.into_iter().map(|(predictions, ..)| predictions).collect();
    check("batch_put", &predictions, elapsed);
    report_nodes("batch_put", &nodes);
    Ok(())
}
