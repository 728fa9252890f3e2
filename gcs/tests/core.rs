//! The GCS core through its public API: tables, actor lifecycle, names, jobs, node death,
//! publications, and carrying on over the same storage (a restart).

use manta_gcs::wire::{ActorId, ActorInfo, ActorState, Change, Channel, JobId, NodeInfo, NodeState};
use manta_gcs::{GcsCore, GcsError, MemoryStorage, SubscriberId};
use manta_transport::NodeId;
use proptest::prelude::*;

fn node(n: u8) -> NodeInfo {
    NodeInfo {
        node_id: NodeId([n; 16]),
        address: format!("127.0.0.{n}:7400"),
        resources: vec![("CPU".into(), 2.0)],
        state: NodeState::Alive,
        registered_ms: 0,
        death_cause: None,
        labels: Vec::new(),
    }
}

fn actor(n: u8, job: JobId, name: Option<&str>, max_restarts: i64) -> ActorInfo {
    ActorInfo {
        actor_id: ActorId([n; 16]),
        job_id: job,
        class: "tests::Counter".into(),
        max_task_retries: 0,
        name: name.map(str::to_owned),
        namespace: "default".into(),
        detached: false,
        state: ActorState::PendingCreation,
        node_id: None,
        address: None,
        max_restarts,
        restarts: 0,
        death_cause: None,
    }
}

#[test]
fn a_worker_that_dies_while_the_constructor_runs_counts_as_a_restart() {
    let mut gcs = GcsCore::new(MemoryStorage::default());
    gcs.register_node(node(1)).unwrap();
    let job = gcs.add_job("driver", 10).unwrap().job_id;
    gcs.register_actor(actor(1, job, None, 2)).unwrap();
    // Its first worker dies before the constructor returns, then its second.
    assert_eq!(gcs.actor_failed(ActorId([1; 16]), "died while starting").unwrap(), ActorState::Restarting);
    assert_eq!(gcs.actor_failed(ActorId([1; 16]), "died while starting").unwrap(), ActorState::Restarting);
    assert_eq!(gcs.actor(ActorId([1; 16])).unwrap().unwrap().restarts, 2);
    gcs.actor_started(ActorId([1; 16]), NodeId([1; 16]), "127.0.0.1:9000").unwrap();
    assert_eq!(gcs.actor_failed(ActorId([1; 16]), "crashed").unwrap(), ActorState::Dead, "budget spent");
    // Without restarts, a death while starting is final.
    gcs.register_actor(actor(2, job, None, 0)).unwrap();
    assert_eq!(gcs.actor_failed(ActorId([2; 16]), "died while starting").unwrap(), ActorState::Dead);
}

#[test]
fn an_actor_restarts_until_its_budget_is_spent_and_then_frees_its_name() {
    let mut gcs = GcsCore::new(MemoryStorage::default());
    gcs.register_node(node(1)).unwrap();
    let job = gcs.add_job("driver", 10).unwrap().job_id;
    gcs.register_actor(actor(1, job, Some("counter"), 1)).unwrap();
    assert_eq!(
        gcs.register_actor(actor(2, job, Some("counter"), 0)),
        Err(GcsError::NameTaken { namespace: "default".into(), name: "counter".into() })
    );
    gcs.actor_started(ActorId([1; 16]), NodeId([1; 16]), "127.0.0.1:9000").unwrap();
    assert_eq!(gcs.named_actor("default", "counter").unwrap().unwrap().state, ActorState::Alive);

    assert_eq!(gcs.actor_failed(ActorId([1; 16]), "worker crashed").unwrap(), ActorState::Restarting);
    assert_eq!(
        gcs.named_actor("default", "counter").unwrap().unwrap().restarts,
        1,
        "the name stays while restarting"
    );
    gcs.actor_started(ActorId([1; 16]), NodeId([1; 16]), "127.0.0.1:9001").unwrap();
    assert_eq!(gcs.actor_failed(ActorId([1; 16]), "worker crashed again").unwrap(), ActorState::Dead);
    let dead = gcs.actor(ActorId([1; 16])).unwrap().unwrap();
    assert_eq!(dead.death_cause.as_deref(), Some("worker crashed again"));
    assert_eq!(dead.address, None);

    // Dead: the name is free again, and a dead actor never comes back.
    assert!(gcs.named_actor("default", "counter").unwrap().is_none());
    gcs.register_actor(actor(2, job, Some("counter"), 0)).unwrap();
    assert!(matches!(
        gcs.actor_started(ActorId([1; 16]), NodeId([1; 16]), "x"),
        Err(GcsError::IllegalTransition { from: ActorState::Dead, to: ActorState::Alive, .. })
    ));
}

#[test]
fn a_finished_job_takes_its_actors_but_not_detached_ones() {
    let mut gcs = GcsCore::new(MemoryStorage::default());
    let job = gcs.add_job("driver", 0).unwrap().job_id;
    let other = gcs.add_job("driver-2", 0).unwrap().job_id;
    assert_eq!((job, other), (JobId(1), JobId(2)));
    gcs.register_actor(actor(1, job, Some("owned"), -1)).unwrap();
    let mut detached = actor(2, job, Some("service"), 0);
    detached.detached = true;
    gcs.register_actor(detached).unwrap();
    gcs.register_actor(actor(3, other, None, 0)).unwrap();
    assert_eq!(gcs.finish_job(job, 50).unwrap(), vec![ActorId([1; 16])]);
    assert_eq!(gcs.actor(ActorId([1; 16])).unwrap().unwrap().state, ActorState::Dead);
    assert_eq!(gcs.actor(ActorId([2; 16])).unwrap().unwrap().state, ActorState::PendingCreation);
    assert_eq!(gcs.actor(ActorId([3; 16])).unwrap().unwrap().state, ActorState::PendingCreation);
    assert_eq!(gcs.job(job).unwrap().unwrap().end_ms, Some(50));
    assert_eq!(gcs.register_actor(actor(4, job, None, 0)), Err(GcsError::JobFinished(job)));
    assert_eq!(gcs.named_actors("default").unwrap(), vec![("service".to_owned(), ActorId([2; 16]))]);
}

#[test]
fn a_dead_node_takes_its_actors_and_never_comes_back() {
    let mut gcs = GcsCore::new(MemoryStorage::default());
    gcs.register_node(node(1)).unwrap();
    gcs.register_node(node(2)).unwrap();
    let job = gcs.add_job("driver", 0).unwrap().job_id;
    gcs.register_actor(actor(1, job, None, 3)).unwrap();
    gcs.register_actor(actor(2, job, None, 0)).unwrap();
    gcs.actor_started(ActorId([1; 16]), NodeId([1; 16]), "a").unwrap();
    gcs.actor_started(ActorId([2; 16]), NodeId([1; 16]), "b").unwrap();
    let affected = gcs.mark_node_dead(NodeId([1; 16]), "missed heartbeats").unwrap();
    assert_eq!(affected.len(), 2);
    assert_eq!(gcs.actor(ActorId([1; 16])).unwrap().unwrap().state, ActorState::Restarting);
    assert_eq!(gcs.actor(ActorId([2; 16])).unwrap().unwrap().state, ActorState::Dead);
    assert_eq!(gcs.register_node(node(1)), Err(GcsError::NodeDead(NodeId([1; 16]))));
    assert_eq!(
        gcs.actor_started(ActorId([1; 16]), NodeId([1; 16]), "a"),
        Err(GcsError::NodeDead(NodeId([1; 16])))
    );
    // The actor manager learns of the same death from its lease: that incarnation's failure was
    // counted already, and is not counted again (one restart of the three, not two).
    assert_eq!(
        gcs.incarnation_failed(ActorId([1; 16]), "its worker died", Some(0)),
        Ok(ActorState::Restarting)
    );
    assert_eq!(gcs.actor(ActorId([1; 16])).unwrap().unwrap().restarts, 1);
    gcs.actor_started(ActorId([1; 16]), NodeId([2; 16]), "c").unwrap();
    assert_eq!(gcs.nodes().unwrap().iter().filter(|node| node.state == NodeState::Alive).count(), 1);
    // A failure of the incarnation now running counts.
    assert_eq!(
        gcs.incarnation_failed(ActorId([1; 16]), "its worker died", Some(1)),
        Ok(ActorState::Restarting)
    );
    assert_eq!(gcs.actor(ActorId([1; 16])).unwrap().unwrap().restarts, 2);
}

#[test]
fn subscribers_get_each_change_of_their_channels_in_order() {
    let mut gcs = GcsCore::new(MemoryStorage::default());
    gcs.subscribe(SubscriberId(1), Channel::Nodes);
    gcs.subscribe(SubscriberId(2), Channel::Actors);
    gcs.subscribe(SubscriberId(2), Channel::Nodes);
    gcs.register_node(node(1)).unwrap();
    let job = gcs.add_job("driver", 0).unwrap().job_id;
    gcs.register_actor(actor(1, job, None, 0)).unwrap();
    let seen: Vec<(u64, Channel)> = gcs
        .take_publications()
        .into_iter()
        .map(|publication| (publication.subscriber.0, publication.change.channel()))
        .collect();
    assert_eq!(seen, vec![(1, Channel::Nodes), (2, Channel::Nodes), (2, Channel::Actors)]);
    assert!(gcs.take_publications().is_empty());
    gcs.unsubscribe_all(SubscriberId(2));
    gcs.mark_node_dead(NodeId([1; 16]), "gone").unwrap();
    let publications = gcs.take_publications();
    assert_eq!(publications.len(), 1);
    assert!(matches!(&publications[0].change, Change::Node(info) if info.state == NodeState::Dead));
}

#[test]
fn the_key_value_store_keeps_namespaces_apart() {
    let mut gcs = GcsCore::new(MemoryStorage::default());
    assert!(gcs.kv_put("fn", "pkg::add", b"one".to_vec(), false).unwrap());
    assert!(!gcs.kv_put("fn", "pkg::add", b"two".to_vec(), false).unwrap(), "no overwrite asked");
    assert!(gcs.kv_put("fn", "pkg::mul", b"three".to_vec(), true).unwrap());
    assert!(gcs.kv_put("other", "pkg::add", b"four".to_vec(), true).unwrap());
    assert_eq!(gcs.kv_get("fn", "pkg::add").unwrap(), Some(b"one".to_vec()));
    assert_eq!(gcs.kv_keys("fn", "pkg::").unwrap(), vec!["pkg::add".to_owned(), "pkg::mul".to_owned()]);
    assert!(gcs.kv_delete("fn", "pkg::add").unwrap());
    assert_eq!(gcs.kv_get("fn", "pkg::add").unwrap(), None);
    assert_eq!(gcs.kv_get("other", "pkg::add").unwrap(), Some(b"four".to_vec()));
    assert!(matches!(gcs.kv_put("a\0b", "k", vec![], true), Err(GcsError::BadName(_))));
}

#[test]
fn a_core_rebuilt_over_the_same_storage_carries_on() {
    let mut gcs = GcsCore::new(MemoryStorage::default());
    gcs.register_node(node(1)).unwrap();
    let job = gcs.add_job("driver", 0).unwrap().job_id;
    gcs.register_actor(actor(1, job, Some("kept"), 0)).unwrap();
    gcs.kv_put("ns", "k", b"v".to_vec(), true).unwrap();

    let mut restarted = GcsCore::new(gcs.into_storage());
    assert_eq!(restarted.nodes().unwrap().len(), 1);
    assert_eq!(restarted.named_actor("default", "kept").unwrap().unwrap().actor_id, ActorId([1; 16]));
    assert_eq!(restarted.kv_get("ns", "k").unwrap(), Some(b"v".to_vec()));
    assert_eq!(restarted.add_job("driver-2", 1).unwrap().job_id, JobId(2), "job ids continue");
}

#[derive(Debug, Clone)]
enum Op {
    Register(u8, u8),
    Start(u8),
    Fail(u8),
    Kill(u8),
}

fn any_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..8, 0u8..3).prop_map(|(actor, name)| Op::Register(actor, name)),
        (0u8..8).prop_map(Op::Start),
        (0u8..8).prop_map(Op::Fail),
        (0u8..8).prop_map(Op::Kill),
    ]
}

proptest! {
    /// Whatever happens to actors, each name in use belongs to exactly one actor that is not
    /// dead and carries that name, and every actor's state is one its lifecycle allows.
    #[test]
    fn names_always_point_at_live_holders(ops in proptest::collection::vec(any_op(), 1..80)) {
        let mut gcs = GcsCore::new(MemoryStorage::default());
        gcs.register_node(node(1)).unwrap();
        let job = gcs.add_job("driver", 0).unwrap().job_id;
        let names = ["a", "b", "c"];
        for op in ops {
            let _ = match op {
                Op::Register(n, name) => gcs.register_actor(actor(n, job, Some(names[name as usize]), 1)).map(drop),
                Op::Start(n) => gcs.actor_started(ActorId([n; 16]), NodeId([1; 16]), "addr"),
                Op::Fail(n) => gcs.actor_failed(ActorId([n; 16]), "crash").map(drop),
                Op::Kill(n) => gcs.kill_actor(ActorId([n; 16]), "killed"),
            };
            for (name, id) in gcs.named_actors("default").unwrap() {
                let holder = gcs.actor(id).unwrap().unwrap();
                prop_assert_ne!(holder.state, ActorState::Dead);
                prop_assert_eq!(holder.name.as_deref(), Some(name.as_str()));
            }
            for info in gcs.actors().unwrap() {
                prop_assert_eq!(info.address.is_some(), info.state == ActorState::Alive);
            }
        }
    }
}

#[test]
fn workers_are_recorded_from_start_to_exit_and_published() {
    use manta_gcs::wire::WorkerInfo;
    let mut gcs = GcsCore::new(MemoryStorage::default());
    gcs.subscribe(SubscriberId(1), Channel::Workers);
    let node_id = NodeId([3; 16]);
    let started = WorkerInfo { node_id, worker: 7, pid: 4242, address: None, alive: true, exit: None };
    gcs.worker_reported(started.clone()).unwrap();
    gcs.worker_reported(WorkerInfo { address: Some("127.0.0.1:9000".into()), ..started.clone() }).unwrap();
    assert_eq!(gcs.worker(node_id, 7).unwrap().unwrap().address.as_deref(), Some("127.0.0.1:9000"));
    gcs.worker_exited(node_id, 7, 4242, "killed by signal 9").unwrap();
    let dead = gcs.worker(node_id, 7).unwrap().unwrap();
    assert!(!dead.alive);
    assert_eq!(dead.exit.as_deref(), Some("killed by signal 9"));
    // An exit whose start report was lost is still recorded.
    gcs.worker_exited(node_id, 8, 4343, "exited with code 1").unwrap();
    assert_eq!(gcs.workers().unwrap().len(), 2);
    let published = gcs.take_publications();
    assert_eq!(published.len(), 4, "every change reaches the subscriber");
    assert!(published.iter().all(|publication| matches!(publication.change, Change::Worker(_))));
}

/// Bytes read back from storage are input like any other: a record that does not decode (a
/// damaged or foreign backend) is a typed error for the caller, never a panic of the GCS.
#[test]
fn a_record_that_does_not_decode_is_an_error_not_a_panic() {
    use manta_gcs::{Storage, Table};
    let mut storage = MemoryStorage::default();
    storage.put(Table::Actors, &[9; 16], b"\xc1 not msgpack".to_vec()).unwrap();
    storage.put(Table::ActorNames, b"default\0broken", vec![1, 2, 3]).unwrap();
    storage.put(Table::Jobs, b"\x00\x01", vec![]).unwrap();
    let mut gcs = GcsCore::new(storage);
    assert!(matches!(gcs.actor(ActorId([9; 16])), Err(GcsError::BadRecord { .. })));
    assert!(matches!(gcs.actors(), Err(GcsError::BadRecord { .. })));
    assert!(matches!(gcs.named_actor("default", "broken"), Err(GcsError::BadRecord { .. })));
    assert!(matches!(gcs.named_actors("default"), Err(GcsError::BadRecord { .. })));
    assert!(matches!(gcs.add_job("driver", 0), Err(GcsError::BadRecord { .. })));
    // The rest of the GCS still works.
    gcs.register_node(node(1)).unwrap();
    assert_eq!(gcs.nodes().unwrap().len(), 1);
}

#[test]
fn the_resource_view_shows_what_each_node_last_reported() {
    let mut gcs = GcsCore::new(MemoryStorage::default());
    gcs.register_node(node(1)).unwrap();
    gcs.register_node(node(2)).unwrap();
    let view = gcs.cluster_view().unwrap();
    assert_eq!(view.len(), 2);
    assert_eq!(view[0].available, view[0].total, "a node that never reported is all free");
    gcs.report_resources(NodeId([1; 16]), vec![("CPU".into(), 0.5)], vec![("2 CPU".into(), 3)], None)
        .unwrap();
    let view = gcs.cluster_view().unwrap();
    let first = view.iter().find(|load| load.node_id == NodeId([1; 16])).unwrap();
    assert_eq!(first.available, vec![("CPU".to_owned(), 0.5)]);
    assert_eq!(first.pending, vec![("2 CPU".to_owned(), 3)]);
    assert_eq!(first.total, view[1].total, "as registered");
    // A total that changed (a placement group's bundle committed there) is the view's.
    let grown = vec![("CPU".to_owned(), 4.0), ("CPU_group_x".to_owned(), 1.0)];
    gcs.report_resources(NodeId([1; 16]), Vec::new(), Vec::new(), Some(grown.clone())).unwrap();
    let view = gcs.cluster_view().unwrap();
    assert_eq!(view.iter().find(|load| load.node_id == NodeId([1; 16])).unwrap().total, grown);
    assert_eq!(
        gcs.report_resources(NodeId([9; 16]), Vec::new(), Vec::new(), None),
        Err(GcsError::UnknownNode(NodeId([9; 16])))
    );
    gcs.mark_node_dead(NodeId([2; 16]), "gone").unwrap();
    assert_eq!(
        gcs.report_resources(NodeId([2; 16]), Vec::new(), Vec::new(), None),
        Err(GcsError::NodeDead(NodeId([2; 16])))
    );
    let dead = gcs.cluster_view().unwrap().into_iter().find(|load| load.node_id == NodeId([2; 16])).unwrap();
    assert_eq!(dead.state, NodeState::Dead);
}

#[test]
fn the_records_of_the_dead_are_bounded_oldest_first_and_across_a_restart() {
    let mut gcs = GcsCore::new(MemoryStorage::default());
    gcs.keep_dead_actors(3);
    let job = gcs.add_job("driver", 1).unwrap().job_id;
    let alive = actor(100, job, Some("stays"), 0);
    gcs.register_actor(alive.clone()).unwrap();
    for n in 1..=5 {
        gcs.register_actor(actor(n, job, None, 0)).unwrap();
        gcs.kill_actor(ActorId([n; 16]), "killed").unwrap();
    }
    let ids = |gcs: &GcsCore<MemoryStorage>| {
        let mut ids: Vec<u8> = gcs.actors().unwrap().iter().map(|info| info.actor_id.0[0]).collect();
        ids.sort();
        ids
    };
    // The two oldest deaths are forgotten; the living are never.
    assert_eq!(ids(&gcs), vec![3, 4, 5, 100]);
    assert!(gcs.actor(ActorId([1; 16])).unwrap().is_none());
    // A restarted GCS knows its dead again, and goes on forgetting the oldest.
    let mut gcs = GcsCore::new(gcs.into_storage());
    gcs.keep_dead_actors(3);
    gcs.register_actor(actor(6, job, None, 0)).unwrap();
    gcs.kill_actor(ActorId([6; 16]), "killed").unwrap();
    assert_eq!(ids(&gcs), vec![4, 5, 6, 100]);
    assert_eq!(gcs.named_actor("default", "stays").unwrap().map(|info| info.actor_id), Some(alive.actor_id));
}
