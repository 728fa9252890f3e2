//! The GCS served on the bus: another node registers a node, a job and a named actor, uses the
//! KV store, and receives the publications of its subscription in order.

use std::time::{Duration, Instant};

use manta_actor::{
    spawn, start_arbiter, wire_message, Actor, ActorAddress, ActorRef, Context, Handler, MessageResult, Node,
    Routes, SpawnOptions, System,
};
use manta_gcs::requests::*;
use manta_gcs::wire::{ActorId, ActorInfo, ActorState, Change, Channel, NodeInfo, NodeState};
use manta_gcs::{GcsActor, GcsError, MemoryStorage, GCS_NAME};
use manta_transport::{ClusterCa, NodeId};
use serde::{Deserialize, Serialize};

/// Collects what the GCS publishes to it.
struct Watcher(Vec<Change>);
impl Actor for Watcher {
    type Context = Context<Self>;
}
impl Handler<Published> for Watcher {
    type Result = ();
    fn handle(&mut self, message: Published, _: &mut Context<Self>) {
        self.0.push(message.0);
    }
}

#[derive(Serialize, Deserialize)]
struct Seen;
wire_message!(Seen => Vec<Change>, id = 1);
impl Handler<Seen> for Watcher {
    type Result = MessageResult<Seen>;
    fn handle(&mut self, _: Seen, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.0.clone())
    }
}

type Gcs = GcsActor<MemoryStorage>;

#[test]
fn the_gcs_answers_over_the_bus_and_publishes_in_order() {
    let ca = ClusterCa::generate("gcs").unwrap();
    let head = Node::start_local(ca.issue(NodeId::random().unwrap()).unwrap()).unwrap();
    GcsActor::start(&head, MemoryStorage::default(), MemoryStorage::default).unwrap();
    let member = Node::start_local(ca.issue(NodeId::random().unwrap()).unwrap()).unwrap();
    let watcher =
        spawn(&start_arbiter("watcher").unwrap(), SpawnOptions::named("watcher"), || Watcher(Vec::new()));
    member
        .register("watcher", Routes::new(watcher.clone()).message::<Published>().message::<Seen>())
        .unwrap();

    let gcs: ActorRef<Gcs> = member.actor(ActorAddress::new(head.local_addr(), GCS_NAME));
    let member_id = member.node_id();
    System::new().block_on(async {
        let subscriber = ActorAddress::new(member.local_addr(), "watcher").to_string();
        gcs.ask(Subscribe { subscriber, channels: vec![Channel::Nodes, Channel::Actors] })
            .await
            .unwrap()
            .unwrap();
        let bad = gcs.ask(Subscribe { subscriber: "nowhere".into(), channels: vec![] }).await.unwrap();
        assert!(matches!(bad, Err(GcsError::BadAddress(_))));

        let node = NodeInfo {
            node_id: member_id,
            address: member.local_addr().to_string(),
            resources: vec![("CPU".into(), 2.0)],
            state: NodeState::Alive,
            registered_ms: 0,
            death_cause: None,
            labels: Vec::new(),
        };
        gcs.ask(RegisterNode(node)).await.unwrap().unwrap();
        let job = gcs.ask(AddJob { driver_address: "driver".into(), launch: None }).await.unwrap().unwrap();
        let actor = ActorInfo {
            actor_id: ActorId([7; 16]),
            job_id: job.job_id,
            class: "tests::Counter".into(),
            max_task_retries: 0,
            name: Some("counter".into()),
            namespace: "default".into(),
            detached: false,
            state: ActorState::PendingCreation,
            node_id: None,
            address: None,
            max_restarts: 0,
            restarts: 0,
            death_cause: None,
        };
        gcs.ask(RegisterActor(actor.clone())).await.unwrap().unwrap();
        let taken = gcs.ask(RegisterActor(ActorInfo { actor_id: ActorId([8; 16]), ..actor })).await.unwrap();
        assert!(matches!(taken, Err(GcsError::NameTaken { .. })));
        gcs.ask(ActorStarted { actor_id: ActorId([7; 16]), node_id: member_id, address: "w1".into() })
            .await
            .unwrap()
            .unwrap();
        let found =
            gcs.ask(GetNamedActor { namespace: "default".into(), name: "counter".into() }).await.unwrap();
        assert_eq!(found.unwrap().unwrap().address.as_deref(), Some("w1"));
        assert_eq!(gcs.ask(GetAllNodes).await.unwrap().unwrap().len(), 1);

        let put =
            KvPut { namespace: "fn".into(), key: "add".into(), value: vec![1, 2, 3].into(), overwrite: true };
        assert!(gcs.ask(put).await.unwrap().unwrap());
        let value = gcs.ask(KvGet { namespace: "fn".into(), key: "add".into() }).await.unwrap().unwrap();
        assert_eq!(value.map(|bytes| bytes.into_vec()), Some(vec![1, 2, 3]));

        gcs.ask(MarkNodeDead { node_id: member_id, cause: "test".into() }).await.unwrap().unwrap();

        // Publications arrive one way; wait for all of them, then check their order.
        let watcher: ActorRef<Watcher> = ActorRef::local(watcher);
        let deadline = Instant::now() + Duration::from_secs(20);
        let seen = loop {
            let seen = watcher.ask(Seen).await.unwrap();
            if seen.len() >= 5 || Instant::now() > deadline {
                break seen;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let summary: Vec<String> = seen
            .iter()
            .map(|change| match change {
                Change::Node(node) => format!("node {:?}", node.state),
                Change::Actor(actor) => format!("actor {:?}", actor.state),
                Change::Job(_) => "job".to_owned(),
                Change::Worker(worker) => format!("worker {}", worker.worker),
            })
            .collect();
        assert_eq!(
            summary,
            ["node Alive", "actor PendingCreation", "actor Alive", "node Dead", "actor Dead"]
        );
    });
}
