//! Batch prediction with actors (the seed's second program): each actor loads the model once in
//! its constructor, and an `ActorPool` hands the shards to whichever actor is free.
//!
//! `cargo run --release --example batch_actors` (on a running cluster: `MANTA_ADDRESS=auto`)

#[path = "batch_common/mod.rs"]
mod batch_common;

use batch_common::{check, report_nodes, shards, this_node, Model};

#[manta::actor]
struct Predictor {
    model: Model,
}

#[manta::actor]
impl Predictor {
    /// Loads the model, once per actor.
    fn new() -> Self {
        Predictor { model: Model::load() }
    }

    fn predict(&self, shard: manta::Buffer<f32>) -> (Vec<u8>, String) {
        (self.model.predict(&shard), this_node())
    }
}

#[manta::main]
fn main() -> anyhow::Result<()> {
    manta::init_logging();
    let _cluster = manta::init()?;
    let shards: Vec<_> = shards().into_iter().map(manta::put).collect::<Result<_, _>>()?;
    let started = std::time::Instant::now();
    let actors =
        (0..2).map(|_| Predictor::options().num_cpus(1.0).remote()).collect::<Result<Vec<_>, _>>()?;
    let mut pool = manta::util::ActorPool::new(actors);
    let results: Vec<(Vec<u8>, String)> =
        pool.map(|actor, shard| actor.predict(shard), shards).into_iter().collect::<Result<_, _>>()?;
    let (predictions, nodes): (Vec<Vec<u8>>, Vec<String>) = results.into_iter().unzip();
    check("batch_actors", &predictions, started.elapsed());
    report_nodes("batch_actors", &nodes);
    Ok(())
}
