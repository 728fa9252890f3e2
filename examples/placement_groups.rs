//! Placement groups: reserve one CPU on each of three nodes at once (a `SPREAD` group), run an
//! actor in each bundle, see where each landed, and give the reservation back.
//!
//! With the `manta` binary built beside this example (`cargo build --release --bin manta
//! --examples`), it starts a three-node cluster of this host (`manta::cluster_utils`, each node
//! its own `manta start`), so the bundles spread over three nodes; with `MANTA_ADDRESS` set it
//! joins that cluster instead; otherwise it runs on the embedded single node.
//!
//! `cargo build --release --bin manta --examples && target/release/examples/placement_groups`

use std::collections::BTreeSet;
use std::time::Duration;

use manta::cluster_utils::{Cluster, NodeSpec};
use manta::PlacementStrategy;

/// Holds its bundle's CPU for its life, and says where it lives.
#[manta::actor]
struct Shard {
    index: u32,
}

#[manta::actor]
impl Shard {
    fn new(index: u32) -> Self {
        Shard { index }
    }

    fn whereabouts(&self) -> (u32, String) {
        (self.index, manta::get_runtime_context().unwrap().node_id.to_string())
    }
}

/// A three-node cluster of this host, when the `manta` binary is beside this example.
fn local_cluster() -> anyhow::Result<Option<Cluster>> {
    if std::env::var_os(manta::ADDRESS_ENV).is_some() {
        return Ok(None);
    }
    let exe = std::env::current_exe()?;
    let Some(manta_bin) = exe.parent().and_then(|examples| examples.parent()).map(|dir| dir.join("manta"))
    else {
        return Ok(None);
    };
    if !manta_bin.exists() {
        println!("no `manta` binary beside this example: one embedded node (build it to see three)");
        return Ok(None);
    }
    let mut cluster = Cluster::start(&manta_bin, NodeSpec::new().num_cpus(2)).map_err(anyhow::Error::msg)?;
    for _ in 0..2 {
        cluster.add_node(NodeSpec::new().num_cpus(2)).map_err(anyhow::Error::msg)?;
    }
    cluster.wait_for_nodes(3, Duration::from_secs(60)).map_err(anyhow::Error::msg)?;
    // SAFETY (of the environment): set before the driver (or any other thread) reads it.
    std::env::set_var("MANTA_TEMP_DIR", &cluster.head().root);
    std::env::set_var(manta::ADDRESS_ENV, "auto");
    println!("started a three-node cluster of this host");
    Ok(Some(cluster))
}

#[manta::main]
fn main() -> anyhow::Result<()> {
    let _cluster = local_cluster()?;
    let _driver = manta::init()?;

    let bundles = [[("CPU", 1.0)], [("CPU", 1.0)], [("CPU", 1.0)]];
    let group = manta::placement_group(bundles, PlacementStrategy::Spread)?;
    if !group.wait(Duration::from_secs(60))? {
        anyhow::bail!("the group was not placed within a minute: {:?}", group.info()?);
    }
    println!("reserved {} bundles: {:?}", group.bundle_count(), group.info()?.state);

    let shards = (0..group.bundle_count())
        .map(|index| Shard::options().placement_group(&group, Some(index)).remote(index))
        .collect::<Result<Vec<_>, _>>()?;
    let mut nodes = BTreeSet::new();
    for shard in &shards {
        let (index, node) = shard.whereabouts().get()?;
        println!("bundle {index}: an actor on node {}", &node[..8]);
        nodes.insert(node);
    }
    println!("{} bundles over {} nodes", shards.len(), nodes.len());

    manta::remove_placement_group(&group)?;
    println!("removed the group: its actors are gone and its CPUs are free again");
    Ok(())
}
