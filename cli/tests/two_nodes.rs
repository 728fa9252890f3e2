//! Two nodes on one host, each its own `manta start` (its own session directory and local
//! channel scope, so everything between them goes over QUIC): tasks spill back to the other
//! node, pinned work runs where its resource is, objects move between the nodes' stores in both
//! directions (and their copies go with the object), and actors live on either node. The other
//! node fetches the driver's binary as a node on another host must (`--fetch-binaries`), keeps
//! it in its cache, and fetches it again for a later job when the cached copy was tampered with.
//! A driver that dies holding a lease on the other node does not keep its resources.
//!
//! One test in this file: a worker re-executes this binary, and must only become a worker.

use std::path::PathBuf;
use std::process::Command;

use std::time::Duration;

use manta::cluster_utils::{Cluster, NodeSpec};
use support::eventually;

mod support;

/// Where it ran.
#[manta::remote]
fn node_of() -> String {
    manta::get_runtime_context().unwrap().node_id.to_string()
}

/// Where it ran, after a pause (so that one worker cannot run them all back to back).
#[manta::remote]
fn node_after(pause_ms: u64) -> String {
    std::thread::sleep(Duration::from_millis(pause_ms));
    node_of_here()
}

/// Says it runs (creates `marker`), then holds its lease for minutes.
#[manta::remote]
fn hold(marker: String) -> bool {
    std::fs::write(&marker, b"running").is_ok() && {
        std::thread::sleep(Duration::from_secs(600));
        true
    }
}

/// Sums a large byte array (an argument that lives in some node's store), and says where.
#[manta::remote]
fn weigh(bytes: Vec<u8>) -> (u64, String) {
    (bytes.iter().map(|byte| u64::from(*byte)).sum(), node_of_here())
}

fn node_of_here() -> String {
    manta::get_runtime_context().unwrap().node_id.to_string()
}

/// A large value made where the task runs.
#[manta::remote]
fn make(len: usize, fill: u8) -> Vec<u8> {
    vec![fill; len]
}

/// One step of a chain whose value is large enough to live in a store.
#[manta::remote]
fn inc(mut value: Vec<u8>) -> Vec<u8> {
    value[0] = value[0].wrapping_add(1);
    value
}

/// Finds the named keeper (wherever it lives) and asks it for its sum, from where this runs.
#[manta::remote]
fn ask_keeper(name: String) -> (u64, String) {
    let keeper = manta::get_actor::<Keeper>(&name).unwrap();
    (keeper.sum().get().unwrap(), node_of_here())
}

/// The object count of the store of the node this task runs on.
#[manta::remote]
fn stored_objects() -> u64 {
    manta::object_store_stats().map_or(u64::MAX, |stats| stats.objects as u64)
}

#[manta::actor]
struct Keeper {
    kept: Vec<u8>,
}

#[manta::actor]
impl Keeper {
    fn new(kept: Vec<u8>) -> Self {
        Keeper { kept }
    }

    fn sum(&self) -> u64 {
        self.kept.iter().map(|byte| u64::from(*byte)).sum()
    }

    fn node(&self) -> String {
        node_of_here()
    }
}

#[test]
fn two_nodes_share_tasks_objects_and_actors_over_quic() {
    if manta::is_worker_process() {
        let _ = manta::init();
        unreachable!("init never returns in a worker");
    }
    if std::env::var_os(SECOND_DRIVER).is_some() {
        // A later job of the same program, started by the test below.
        let config = manta::Config { address: Some("auto".to_owned()), ..manta::Config::default() };
        let _driver = manta::init_with(config).unwrap();
        let ran = node_of::options().resources([("other", 1.0)]).remote().get().unwrap();
        println!("second driver ran on {ran}");
        // Its objects are its own, even on the node where the first driver's live.
        let first = manta::put(vec![4u8; 1 << 20]).unwrap();
        println!("second driver's first object: {}", first.id());
        std::process::exit(0);
    }
    if std::env::var_os(ORPHANING_DRIVER).is_some() {
        // A driver that dies holding a lease on the other node (its task runs for minutes).
        let config = manta::Config { address: Some("auto".to_owned()), ..manta::Config::default() };
        let _driver = manta::init_with(config).unwrap();
        let marker = std::env::temp_dir().join(format!("manta-orphaning-{}", std::process::id()));
        let _long = hold::options().resources([("other", 4.0)]).remote(marker.display().to_string());
        eventually("the held task runs", || marker.exists());
        let _ = std::fs::remove_file(&marker);
        println!("orphaning driver: holding the lease");
        std::process::abort();
    }
    let mut cluster = Cluster::start(env!("CARGO_BIN_EXE_manta"), NodeSpec::new().num_cpus(1)).unwrap();
    let other = cluster
        .add_node(NodeSpec::new().num_cpus(1).resource("other", 4.0).args(["--fetch-binaries"]))
        .unwrap();
    let (head_id, other_id) = (cluster.head().id.to_string(), other.id.to_string());
    assert_ne!(head_id, other_id);
    cluster.wait_for_nodes(2, Duration::from_secs(60)).unwrap();

    // SAFETY (of the environment): set before any other thread of this test reads it.
    std::env::set_var("MANTA_TEMP_DIR", &cluster.head().root);
    let config = manta::Config { address: Some("auto".to_owned()), ..manta::Config::default() };
    let _driver = manta::init_with(config).unwrap();
    let alive: std::collections::BTreeSet<String> = manta::nodes()
        .unwrap()
        .into_iter()
        .filter(|node| node.state == manta::state::NodeState::Alive)
        .map(|node| node.node_id.to_string())
        .collect();
    assert_eq!(alive, [head_id.clone(), other_id.clone()].into_iter().collect(), "manta::nodes()");

    // Pinned by a resource only the other node has: it runs there, leased from that node's
    // raylet after the head's spilled it back (once the head has heard of the other node).
    let pinned = || node_of::options().resources([("other", 1.0)]).remote();
    assert_eq!(pinned().get().unwrap(), other_id);
    // Spread over the nodes: both run some.
    let spread: Vec<_> = (0..20)
        .map(|_| node_after::options().scheduling_strategy(manta::SchedulingStrategy::Spread).remote(20))
        .collect();
    let ran: std::collections::BTreeSet<String> = manta::get_all(&spread).unwrap().into_iter().collect();
    assert_eq!(ran, [head_id.clone(), other_id.clone()].into_iter().collect());

    // An object put here (the head's store) read by a task on the other node: pulled there.
    let len = 8 << 20;
    let data = manta::put(vec![3u8; len]).unwrap();
    let (sum, at) = weigh::options().resources([("other", 1.0)]).remote(&data).get().unwrap();
    assert_eq!((sum, at), (3 * len as u64, other_id.clone()));
    // Read again there: the copy pulled before serves it.
    let (sum, _) = weigh::options().resources([("other", 1.0)]).remote(&data).get().unwrap();
    assert_eq!(sum, 3 * len as u64);
    // A task with no placement of its own goes where its arguments are: a value only the other
    // node holds draws it there (Ray's locality-aware leases), with no pull. (Made with no CPU,
    // so that the other node's one CPU is free for the task even while the maker's lease
    // lingers: a busy node would rightly spill the task back.)
    let far = make::options().resources([("other", 1.0)]).num_cpus(0.0).remote(len, 6);
    manta::wait(std::slice::from_ref(&far), 1, None).unwrap();
    let (sum, at) = weigh::remote(&far).get().unwrap();
    assert_eq!((sum, at), (6 * len as u64, other_id.clone()), "the task ran where its argument is");
    // A value made on the other node, read here: pulled into the head's store.
    let made = make::options().resources([("other", 1.0)]).remote(len, 5);
    let value = made.get().unwrap();
    assert_eq!((value.len(), value[len - 1]), (len, 5));
    // And read by a task on the head (its own node holds the copy now).
    let (sum, at) = weigh::options()
        .resources([("CPU", 1.0)])
        .scheduling_strategy(manta::SchedulingStrategy::NodeAffinity {
            node: head_id.parse().unwrap(),
            soft: false,
        })
        .remote(&made)
        .get()
        .unwrap();
    assert_eq!((sum, at), (5 * len as u64, head_id.clone()));

    // A chain whose value crosses between the nodes at every step.
    let on_head = manta::SchedulingStrategy::NodeAffinity { node: head_id.parse().unwrap(), soft: false };
    let mut value = manta::put(vec![0u8; 200 * 1024]).unwrap();
    for step in 0..100 {
        value = if step % 2 == 0 {
            inc::options().resources([("other", 1.0)]).remote(&value)
        } else {
            inc::options().scheduling_strategy(&on_head).remote(&value)
        };
    }
    assert_eq!(value.get().unwrap()[0], 100);

    // An actor on the other node, built from an argument this node's store holds.
    let keeper = Keeper::options().resources([("other", 1.0)]).remote(&data).unwrap();
    assert_eq!(keeper.node().get().unwrap(), other_id);
    assert_eq!(keeper.sum().get().unwrap(), 3 * len as u64);

    // Every copy goes with its object: once the refs are dropped, both stores empty out.
    drop((data, made, far, value, keeper));
    let on_other = || stored_objects::options().resources([("other", 1.0)]).remote().get().unwrap();
    eventually("the other node's store emptied", || on_other() == 0);
    eventually("the head's store emptied", || manta::object_store_stats().unwrap().objects == 0);

    // A third node. An object made here and read there and on the other node at once: one copy
    // is pulled to each, and every copy goes with the object.
    let third = cluster.add_node(NodeSpec::new().num_cpus(1).resource("third", 4.0)).unwrap();
    cluster.wait_for_nodes(3, Duration::from_secs(60)).unwrap();
    let big = 200_000_000;
    let data = manta::put(vec![1u8; big]).unwrap();
    let readers: Vec<_> = ["other", "third", "other", "third"]
        .into_iter()
        .map(|node| weigh::options().resources([(node, 1.0)]).remote(&data))
        .collect();
    let sums: Vec<u64> = manta::get_all(&readers).unwrap().into_iter().map(|(sum, _)| sum).collect();
    assert_eq!(sums, vec![big as u64; 4]);
    let on_third = || stored_objects::options().resources([("third", 1.0)]).remote().get().unwrap();
    assert_eq!((on_other(), on_third()), (1, 1), "one copy on each node");
    // A named actor on the other node, found and called from a task on the third.
    let keeper = Keeper::options().name("keeper").resources([("other", 1.0)]).remote(vec![2u8; 10]).unwrap();
    let (sum, asked_from) =
        ask_keeper::options().resources([("third", 1.0)]).remote("keeper".to_owned()).get().unwrap();
    assert_eq!((sum, asked_from), (20, third.id.to_string()));
    drop((data, readers, keeper));
    eventually("every node's store emptied", || {
        (on_other(), on_third(), manta::object_store_stats().unwrap().objects) == (0, 0, 0)
    });

    // The other node runs this program from the copy it was sent, kept under its hash.
    let cache = other.root.join("session_latest/binaries");
    let kept: Vec<PathBuf> = std::fs::read_dir(&cache).unwrap().map(|entry| entry.unwrap().path()).collect();
    let [binary] = &kept[..] else { panic!("one binary in the cache: {kept:?}") };
    assert_eq!(std::fs::read(binary).unwrap(), std::fs::read("/proc/self/exe").unwrap());
    // Tampered with (replaced: the running workers keep the file busy), the copy is found out
    // at the next job and fetched again.
    std::fs::remove_file(binary).unwrap();
    std::fs::write(binary, b"#!/bin/sh\necho tampered\n").unwrap();
    let held = manta::put(vec![5u8; 1 << 20]).unwrap();
    let second = Command::new(std::env::current_exe().unwrap())
        .args(["two_nodes_share_tasks_objects_and_actors_over_quic", "--exact", "--nocapture"])
        .env(SECOND_DRIVER, "1")
        .env("MANTA_TEMP_DIR", &cluster.head().root)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&second.stdout);
    assert!(second.status.success() && said.contains(&format!("second driver ran on {other_id}")), "{said}");
    assert_eq!(std::fs::read(binary).unwrap(), std::fs::read("/proc/self/exe").unwrap(), "fetched again");
    // Two drivers of one node never make the same object ids (each its own id prefix).
    let theirs = said.lines().find_map(|line| line.strip_prefix("second driver's first object: ")).unwrap();
    assert_ne!(theirs[..24], held.id()[..24], "{theirs} and {}", held.id());
    assert_eq!(held.get().unwrap()[0], 5);

    // A driver dies holding a lease of every `other` the other node has: that node's raylet
    // watches requesters of other nodes, ends the dead one's lease, and the resources serve
    // the next task.
    let orphaning = Command::new(std::env::current_exe().unwrap())
        .args(["two_nodes_share_tasks_objects_and_actors_over_quic", "--exact", "--nocapture"])
        .env(ORPHANING_DRIVER, "1")
        .env("MANTA_TEMP_DIR", &cluster.head().root)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&orphaning.stdout);
    assert!(!orphaning.status.success() && said.contains("holding the lease"), "{said}");
    let next = node_of::options().resources([("other", 4.0)]).remote();
    assert_eq!(next.get_timeout(Duration::from_secs(60)).unwrap(), other_id, "the dead driver's lease ended");
}

/// Set for the driver that dies holding a lease.
const ORPHANING_DRIVER: &str = "MANTA_TEST_ORPHANING_DRIVER";

/// Set for the second driver this test starts.
const SECOND_DRIVER: &str = "MANTA_TEST_SECOND_DRIVER";
