//! The scale simulation: a run is a function of its workload, policy and seed (the digest says
//! so); placement groups are reserved all or nothing and their work runs inside them; nodes
//! join and die and the work goes on; a run that cannot finish is a failure that names its
//! seed and step and replays exactly.

use manta_sim::scale::{simulate, ScaleConfig};
use manta_sim::workload::Workload;

fn config(policy: &str, seed: u64) -> ScaleConfig {
    ScaleConfig { policy: policy.into(), seed, ..ScaleConfig::default() }
}

#[test]
fn the_same_seed_gives_the_same_run_and_another_seed_another() {
    let workload = Workload::uniform(200, 4, 4_000, 10);
    for policy in ["hybrid", "binpack", "locality"] {
        let first = simulate(&workload, &config(policy, 7)).unwrap_or_else(|failure| panic!("{failure}"));
        let again = simulate(&workload, &config(policy, 7)).unwrap_or_else(|failure| panic!("{failure}"));
        assert_eq!(first, again, "{policy}: the same seed replays exactly");
        assert_eq!(first.finished, 4_000, "{policy}: {:?}", first.failed);
        assert_eq!(first.tasks_per_node.iter().sum::<u64>(), 4_000);
        let other = simulate(&workload, &config(policy, 8)).unwrap_or_else(|failure| panic!("{failure}"));
        assert_ne!(first.digest, other.digest, "{policy}: another seed, another run");
    }
}

#[test]
fn policies_decide_differently_on_the_same_workload() {
    // A quarter of the cluster's CPUs in use at a time: room to spread, or to pack.
    let text =
        "nodes count=100 cpu=4\ndrivers count=10\ntasks count=3000 cpu=1 duration=100..200 at=0..6000\n\
                tasks count=300 cpu=1 duration=100..200 at=0..6000 args=64MB";
    let workload = Workload::parse(text).unwrap();
    let hybrid = simulate(&workload, &config("hybrid", 3)).unwrap();
    let binpack = simulate(&workload, &config("binpack", 3)).unwrap();
    let locality = simulate(&workload, &config("locality", 3)).unwrap();
    // Hybrid spreads over the cluster; bin packing keeps work on fewer nodes.
    assert!(hybrid.spread().0 > 80, "hybrid spreads: {:?}", hybrid.spread());
    assert!(
        binpack.spread().0 * 2 < hybrid.spread().0,
        "binpack {:?}, hybrid {:?}",
        binpack.spread(),
        hybrid.spread()
    );
    // Locality first reads fewer argument bytes from other nodes than the default does.
    assert!(
        locality.remote_bytes < hybrid.remote_bytes,
        "locality {} bytes remote, hybrid {}",
        locality.remote_bytes,
        hybrid.remote_bytes
    );
}

const GROUPS: &str = "
nodes count=4 cpu=4
nodes count=2 cpu=4 gpu=2 labels=kind:gpu
drivers count=2
network latency=1..10 loss=0.01
# The four strategies; a STRICT_SPREAD group with more bundles than nodes stays pending;
# a STRICT_PACK group larger than any node stays pending.
group name=packed at=0 strategy=pack bundles=2*cpu:2
group name=spread at=0 strategy=spread bundles=3*cpu:1
group name=strict at=10 strategy=strict_spread bundles=4*cpu:1
group name=gpus at=10 strategy=strict_pack bundles=2*gpu:1/cpu:1
group name=toomany at=20 strategy=strict_spread bundles=7*cpu:1
group name=toobig at=20 strategy=strict_pack bundles=3*cpu:2
# Work inside groups, in any bundle and in a given one.
tasks count=200 cpu=1 duration=20..80 at=0..500 strategy=group:packed
tasks count=200 cpu=1 duration=20..80 at=0..500 strategy=group:spread:2
tasks count=100 gpu=1 duration=20..80 at=0..500 strategy=group:gpus
# Removed while its work runs: what is left of it fails, saying so.
group name=doomed at=0 strategy=pack bundles=cpu:1 remove=1500
tasks count=300 cpu=1 duration=10..30 at=0..2500 strategy=group:doomed retries=0
# Ordinary work beside the groups.
tasks count=2000 cpu=1 duration=10..100 at=0..2000
# A node dies: its bundles are placed again, its tasks retried.
kill at=700 node=4
";

#[test]
fn placement_groups_are_reserved_all_or_nothing_and_their_work_runs_inside_them() {
    let workload = Workload::parse(GROUPS).unwrap();
    for seed in 0..8 {
        for policy in ["hybrid", "binpack"] {
            let outcome =
                simulate(&workload, &config(policy, seed)).unwrap_or_else(|failure| panic!("{failure}"));
            // packed, spread, strict, gpus, doomed; not toomany nor toobig.
            assert_eq!(outcome.groups_created, 5, "{policy} seed {seed}");
            assert_eq!(outcome.groups_pending, 2, "{policy} seed {seed}");
            let failed: usize = outcome.failed.values().sum();
            assert_eq!(outcome.finished + failed, 2_800, "{policy} seed {seed}");
            // Only the removed group's work (which has no retries) fails: refused once it is
            // gone, killed with it, or lost with the node that died.
            assert!(
                failed > 0 && failed <= 300 && outcome.finished >= 2_500,
                "{policy} seed {seed}: {:?}",
                outcome.failed
            );
            assert!(
                outcome.failed.keys().all(|why| ["its group was removed", "worker died", "node died"]
                    .iter()
                    .any(|known| why.contains(known))),
                "{policy} seed {seed}: {:?}",
                outcome.failed
            );
        }
    }
}

const CHURN: &str = "
nodes count=8 cpu=4
drivers count=2
tasks count=3000 cpu=1 duration=50..150 at=0..3000 retries=5
# Work only the nodes that join later can run: it waits for them.
tasks count=50 res.accelerator=1 duration=10..50 at=100 function=accelerated
actors count=10 cpu=1 at=0..200 lifetime=2000 restarts=3
join at=1500 count=4 cpu=4 res.accelerator=2
kill at=800 nodes=5..6
kill at=2500 node=9
partition at=1000 until=1800 nodes=2..3
";

#[test]
fn nodes_join_and_die_and_the_work_goes_on() {
    let workload = Workload::parse(CHURN).unwrap();
    for seed in 0..8 {
        let outcome =
            simulate(&workload, &config("hybrid", seed)).unwrap_or_else(|failure| panic!("{failure}"));
        assert_eq!(outcome.finished, 3_050, "seed {seed}: {:?}", outcome.failed);
        assert_eq!(outcome.nodes, 12);
        // Nothing ran on a node after it died; the accelerated work ran on the joined nodes.
        assert!(outcome.tasks_per_node[8..].iter().sum::<u64>() >= 50, "seed {seed}");
        assert_eq!(outcome.actors_completed, 10, "seed {seed}: {:?}", outcome.actors_failed);
    }
}

#[test]
fn a_run_that_cannot_finish_fails_naming_its_seed_and_step_and_replays_exactly() {
    // Work no node can ever run waits for one (as in Ray): the run cannot finish.
    let text = "nodes count=20 cpu=2\ndrivers count=2\ntasks count=300 cpu=1 duration=10..100 at=0..500\n\
                tasks count=3 res.unobtainium=1 at=200";
    let workload = Workload::parse(text).unwrap();
    let stuck = config("hybrid", 11);
    let failure = simulate(&workload, &stuck).expect_err("three tasks can never run");
    assert!(failure.invariant.contains("stuck") && failure.invariant.contains("3 tasks open"), "{failure}");
    let shown = failure.to_string();
    assert!(shown.contains("seed 11") && shown.contains("--seed 11"), "{shown}");
    assert!(!failure.trace.is_empty());
    let again = simulate(&workload, &stuck).expect_err("the same seed fails the same way");
    assert_eq!((failure.time_ms, failure.events), (again.time_ms, again.events));
    assert_eq!(failure.trace, again.trace);
}

#[test]
fn workloads_the_simulator_cannot_model_are_refused_with_a_reason() {
    let kills_a_driver = Workload::parse("nodes count=4 cpu=2\ndrivers count=2\nkill at=10 node=2").unwrap();
    let error = simulate(&kills_a_driver, &config("hybrid", 1)).expect_err("node 2 runs driver 1");
    assert!(error.invariant.contains("driver 1"), "{error}");
    let unknown =
        simulate(&Workload::uniform(4, 2, 10, 1), &config("fastest", 1)).expect_err("no such policy");
    assert!(unknown.invariant.contains("hybrid"), "{unknown}");
}
