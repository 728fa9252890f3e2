//! Tests of the actor bus in one process: supervision, backpressure, and two nodes talking
//! through real QUIC connections on loopback.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use manta_actor::{
    spawn, start_arbiter, wire_message, Actor, ActorAddress, ActorRef, AskError, AtomicResponse, Context,
    Handler, LocalRef, Message, Node, RegisterError, Routes, SpawnOptions, WireMessage, WrapFuture,
};
use manta_transport::{ClusterCa, NodeId};
use serde::{Deserialize, Serialize};

struct Counter {
    total: i64,
    log: Vec<u64>,
}

#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "i64")]
struct Add(i64);
impl WireMessage for Add {
    const ID: u32 = 1;
}

#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
struct Record(u64);
impl WireMessage for Record {
    const ID: u32 = 2;
}

#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "Vec<u64>")]
struct Log;
impl WireMessage for Log {
    const ID: u32 = 3;
}

#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "()")]
struct Boom(String);
impl WireMessage for Boom {
    const ID: u32 = 4;
}

/// Registered on nobody's routes: sending it remotely is an unknown message.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "i64")]
struct Unrouted;
impl WireMessage for Unrouted {
    const ID: u32 = 99;
}

/// Blocks the actor's thread for a while (local only).
#[derive(Message)]
#[rtype(result = "()")]
struct Stall(Duration);

impl Actor for Counter {
    type Context = Context<Self>;
}

impl Handler<Add> for Counter {
    type Result = i64;
    fn handle(&mut self, message: Add, _: &mut Context<Self>) -> i64 {
        self.total += message.0;
        self.total
    }
}

impl Handler<Record> for Counter {
    type Result = ();
    fn handle(&mut self, message: Record, _: &mut Context<Self>) {
        self.log.push(message.0);
    }
}

impl Handler<Log> for Counter {
    type Result = Vec<u64>;
    fn handle(&mut self, _: Log, _: &mut Context<Self>) -> Vec<u64> {
        self.log.clone()
    }
}

impl Handler<Boom> for Counter {
    type Result = ();
    fn handle(&mut self, message: Boom, _: &mut Context<Self>) {
        panic!("{}", message.0);
    }
}

impl Handler<Unrouted> for Counter {
    type Result = i64;
    fn handle(&mut self, _: Unrouted, _: &mut Context<Self>) -> i64 {
        0
    }
}

impl Handler<Stall> for Counter {
    type Result = ();
    fn handle(&mut self, message: Stall, _: &mut Context<Self>) {
        std::thread::sleep(message.0);
    }
}

fn counter(options: SpawnOptions) -> LocalRef<Counter> {
    let arbiter = start_arbiter("test-actor").unwrap();
    spawn(&arbiter, options, || Counter { total: 0, log: Vec::new() })
}

fn routes(actor: &LocalRef<Counter>) -> Routes<Counter> {
    Routes::new(actor.clone()).message::<Add>().message::<Record>().message::<Log>().message::<Boom>()
}

fn run<F: std::future::Future>(future: F) -> F::Output {
    manta_actor::System::new().block_on(future)
}

#[test]
fn a_panicking_actor_is_restarted_and_its_caller_gets_a_typed_error() {
    let actor = counter(SpawnOptions::named("counter").max_restarts(1));
    run(async {
        assert_eq!(actor.ask(Add(5)).await.unwrap(), 5);
        match actor.ask(Boom("boom-1".into())).await {
            Err(AskError::ActorDied { actor, cause }) => {
                assert_eq!(actor, "counter");
                assert!(cause.contains("boom-1"), "{cause}");
            }
            other => panic!("expected ActorDied, got {other:?}"),
        }
        // The next incarnation starts from a fresh value.
        assert_eq!(actor.ask(Add(1)).await.unwrap(), 1);
        assert_eq!(actor.incarnation(), 2);

        // The second panic exhausts max_restarts = 1: the actor is dead, and says why at once.
        assert!(matches!(actor.ask(Boom("boom-2".into())).await, Err(AskError::ActorDied { .. })));
        match actor.ask(Add(1)).await {
            Err(AskError::ActorDied { cause, .. }) => {
                assert!(cause.contains("restarts exhausted"), "{cause}")
            }
            other => panic!("expected a dead actor, got {other:?}"),
        }
        assert!(actor.death().is_some());
    });
}

#[test]
fn messages_queued_behind_a_panic_fail_instead_of_hanging() {
    let actor = counter(SpawnOptions::named("queued").max_restarts(5));
    run(async {
        actor.ask(Add(0)).await.unwrap();
        // Enqueued now, in this order, into one incarnation's mailbox.
        let stall = actor.try_admit().unwrap().unwrap().ask(Stall(Duration::from_millis(100)));
        let boom = actor.try_admit().unwrap().unwrap().ask(Boom("boom".into()));
        let queued = actor.try_admit().unwrap().unwrap().ask(Add(1));
        let (stall, boom, queued) = tokio::join!(stall, boom, queued);
        assert!(stall.is_ok());
        assert!(matches!(boom, Err(AskError::ActorDied { .. })));
        // Queued behind the panic in the same mailbox: lost with it, and told so.
        assert!(matches!(queued, Err(AskError::ActorDied { .. })), "{queued:?}");
        assert_eq!(actor.ask(Add(2)).await.unwrap(), 2);
    });
}

#[test]
fn a_full_mailbox_makes_senders_wait() {
    let actor = counter(SpawnOptions::named("small").mailbox_capacity(2));
    run(async {
        actor.ask(Add(0)).await.unwrap();
        let first = actor.try_admit().unwrap().unwrap().ask(Stall(Duration::from_millis(200)));
        let second = actor.try_admit().unwrap().unwrap().ask(Add(1));
        assert!(actor.try_admit().is_none(), "a third message must wait for a place");
        let waiting = actor.ask(Add(10));
        let (first, second, waiting) = tokio::join!(first, second, waiting);
        assert!(first.is_ok());
        assert_eq!(second.unwrap(), 1);
        assert_eq!(waiting.unwrap(), 11);
        assert!(actor.try_admit().is_some());
    });
}

fn node(ca: &ClusterCa) -> Node {
    Node::start_local(ca.issue(NodeId::random().unwrap()).unwrap()).unwrap()
}

#[test]
fn remote_asks_and_tells_keep_the_senders_order_through_a_tiny_mailbox() {
    let ca = ClusterCa::generate("bus").unwrap();
    let server = node(&ca);
    let client = node(&ca);
    // A mailbox of 4 forces most of the 2000 tells through the deferred path.
    let actor = counter(SpawnOptions::named("ordered").mailbox_capacity(4));
    server.register("ordered", routes(&actor)).unwrap();
    assert_eq!(server.register("ordered", routes(&actor)), Err(RegisterError::NameTaken("ordered".into())));

    let remote: ActorRef<Counter> = client.actor(ActorAddress::new(server.local_addr(), "ordered"));
    assert!(!remote.is_local());
    run(async {
        for index in 0..2000u64 {
            remote.tell(Record(index)).await.unwrap();
            if index % 500 == 0 {
                remote.ask(Add(1)).await.unwrap();
            }
        }
        let log = remote.ask(Log).await.unwrap();
        assert_eq!(log, (0..2000).collect::<Vec<_>>());
    });
}

#[test]
fn remote_errors_are_typed() {
    let ca = ClusterCa::generate("bus").unwrap();
    let server = node(&ca);
    let client = node(&ca);
    let actor = counter(SpawnOptions::named("errors").max_restarts(3));
    server.register("errors", routes(&actor)).unwrap();
    let remote: ActorRef<Counter> = client.actor(ActorAddress::new(server.local_addr(), "errors"));
    let nobody: ActorRef<Counter> = client.actor(ActorAddress::new(server.local_addr(), "nobody"));
    run(async {
        assert!(matches!(remote.ask(Unrouted).await, Err(AskError::UnknownMessage(_))));
        assert!(matches!(nobody.ask(Add(1)).await, Err(AskError::NoSuchActor { .. })));
        match remote.ask(Boom("remote boom".into())).await {
            Err(AskError::ActorDied { cause, .. }) => assert!(cause.contains("remote boom"), "{cause}"),
            other => panic!("expected ActorDied, got {other:?}"),
        }
        assert_eq!(remote.ask(Add(3)).await.unwrap(), 3, "restarted remotely, fresh state");
    });
}

#[test]
fn a_body_that_does_not_decode_is_a_codec_error_not_a_crash() {
    let ca = ClusterCa::generate("bus").unwrap();
    let server = node(&ca);
    let client = node(&ca);
    let actor = counter(SpawnOptions::named("codec"));
    server.register("codec", routes(&actor)).unwrap();
    run(async {
        let connection = client.transport().connect(server.local_addr()).await.unwrap();
        // Message id 1 is Add(i64); send a string instead.
        let body = rmp_serde::to_vec(&"not a number").unwrap();
        let outcome = connection.call("codec", Add::ID, &body, None).await;
        match outcome {
            Err(manta_transport::CallError::Remote(error)) => {
                assert_eq!(error.kind, manta_transport::RemoteErrorKind::BadMessage)
            }
            other => panic!("expected BadMessage, got {other:?}"),
        }
        let remote: ActorRef<Counter> = client.actor(ActorAddress::new(server.local_addr(), "codec"));
        assert_eq!(remote.ask(Add(2)).await.unwrap(), 2);
    });
}

#[test]
fn an_address_on_this_node_resolves_to_a_local_reference() {
    let ca = ClusterCa::generate("bus").unwrap();
    let server = node(&ca);
    let actor = counter(SpawnOptions::named("here"));
    server.register("here", routes(&actor)).unwrap();
    let reference: ActorRef<Counter> = server.actor(ActorAddress::new(server.local_addr(), "here"));
    assert!(reference.is_local());
    run(async {
        assert_eq!(reference.ask(Add(4)).await.unwrap(), 4);
    });
    assert!(server.unregister("here"));
    assert!(!server.unregister("here"));
}

#[test]
fn an_actor_stops_when_its_last_reference_is_dropped() {
    static DROPPED: AtomicUsize = AtomicUsize::new(0);
    struct Droppy;
    impl Actor for Droppy {
        type Context = Context<Self>;
        fn stopped(&mut self, _: &mut Context<Self>) {
            DROPPED.fetch_add(1, Ordering::SeqCst);
        }
    }
    impl Handler<Add> for Droppy {
        type Result = i64;
        fn handle(&mut self, message: Add, _: &mut Context<Self>) -> i64 {
            message.0
        }
    }
    let arbiter = start_arbiter("droppy").unwrap();
    let actor = spawn(&arbiter, SpawnOptions::named("droppy"), || Droppy);
    assert_eq!(run(actor.ask(Add(7))).unwrap(), 7);
    assert_eq!(DROPPED.load(Ordering::SeqCst), 0);
    let clone = Arc::new(actor.clone());
    drop(actor);
    drop(clone);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while DROPPED.load(Ordering::SeqCst) == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(DROPPED.load(Ordering::SeqCst), 1);
}

/// Holds its mailbox closed while it waits for a remote answer (an `AtomicResponse`).
struct Relay {
    node: Node,
    seen: u64,
}
impl Actor for Relay {
    type Context = Context<Self>;
}

#[derive(Serialize, Deserialize)]
struct Forward(String);
wire_message!(Forward => i64, id = 20);

#[derive(Serialize, Deserialize)]
struct Note;
wire_message!(Note => (), id = 21);

#[derive(Serialize, Deserialize)]
struct Seen;
wire_message!(Seen => u64, id = 22);

impl Handler<Forward> for Relay {
    type Result = AtomicResponse<Self, i64>;
    fn handle(&mut self, message: Forward, _: &mut Context<Self>) -> Self::Result {
        let target: ActorRef<Counter> = self.node.actor(message.0.parse().expect("a valid address"));
        AtomicResponse::new(Box::pin(
            async move { target.ask_timeout(Add(1), Duration::from_secs(20)).await.unwrap_or(-1) }
                .into_actor(self),
        ))
    }
}
impl Handler<Note> for Relay {
    type Result = ();
    fn handle(&mut self, _: Note, _: &mut Context<Self>) {
        self.seen += 1;
    }
}
impl Handler<Seen> for Relay {
    type Result = u64;
    fn handle(&mut self, _: Seen, _: &mut Context<Self>) -> u64 {
        self.seen
    }
}

#[test]
fn an_actor_waiting_on_a_remote_answer_gets_it_while_its_own_mailbox_is_full() {
    let ca = ClusterCa::generate("bus").unwrap();
    let near = node(&ca);
    let far = node(&ca);
    let relay_node = near.clone();
    let relay = spawn(
        &start_arbiter("relay").unwrap(),
        SpawnOptions::named("relay").mailbox_capacity(1),
        move || Relay { node: relay_node.clone(), seen: 0 },
    );
    near.register("relay", Routes::new(relay).message::<Forward>().message::<Note>().message::<Seen>())
        .unwrap();
    let counter = counter(SpawnOptions::named("far-counter"));
    far.register("far-counter", routes(&counter)).unwrap();

    let relay: ActorRef<Relay> = far.actor(ActorAddress::new(near.local_addr(), "relay"));
    let far_counter = ActorAddress::new(far.local_addr(), "far-counter").to_string();
    run(async {
        // The relay takes Forward and, holding its mailbox, asks back over the same connection.
        // The notes queue up behind it on `near`; the answer it waits for arrives behind them
        // on the same stream and must still get through.
        let forwarded = relay.ask_timeout(Forward(far_counter), Duration::from_secs(30));
        let notes = async {
            for _ in 0..50 {
                relay.tell(Note).await.unwrap();
            }
        };
        let (forwarded, ()) = tokio::join!(forwarded, notes);
        assert_eq!(forwarded.unwrap(), 1);
        assert_eq!(relay.ask(Seen).await.unwrap(), 50);
    });
}

/// Answered by an inline route, never by the actor: the actor's handler would say -1.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "i64")]
struct Double(i64);
impl WireMessage for Double {
    const ID: u32 = 5;
}

impl Handler<Double> for Counter {
    type Result = i64;
    fn handle(&mut self, _: Double, _: &mut Context<Self>) -> i64 {
        -1
    }
}

/// Blocks the actor's thread until the sender is dropped or sends (local only).
#[derive(Message)]
#[rtype(result = "()")]
struct Hold(std::sync::Mutex<std::sync::mpsc::Receiver<()>>);

impl Handler<Hold> for Counter {
    type Result = ();
    fn handle(&mut self, message: Hold, _: &mut Context<Self>) {
        let _ = message.0.lock().unwrap().recv();
    }
}

#[test]
fn an_inline_route_answers_where_the_message_arrives_even_while_the_actor_is_busy() {
    let ca = ClusterCa::generate("bus").unwrap();
    let server = node(&ca);
    let client = node(&ca);
    let actor = counter(SpawnOptions::named("inline"));
    let handled = Arc::new(AtomicUsize::new(0));
    let seen = handled.clone();
    let routes = routes(&actor).inline(move |message: Double| {
        seen.fetch_add(1, Ordering::SeqCst);
        async move { message.0 * 2 }
    });
    server.register("inline", routes).unwrap();
    let remote: ActorRef<Counter> = client.actor(ActorAddress::new(server.local_addr(), "inline"));
    run(async {
        // The actor's thread is blocked until the answers are in: the inline route does not
        // need it (through the mailbox, this would wait forever).
        let (release, held) = std::sync::mpsc::channel();
        let local = actor.clone();
        let holding = tokio::spawn(async move { local.ask(Hold(std::sync::Mutex::new(held))).await });
        for value in 0..100 {
            assert_eq!(remote.ask(Double(value)).await.unwrap(), value * 2);
        }
        assert_eq!(handled.load(Ordering::SeqCst), 100);
        release.send(()).unwrap();
        holding.await.unwrap().unwrap();
        // Mailbox messages still reach the actor.
        assert_eq!(remote.ask(Add(5)).await.unwrap(), 5);

        // A body that does not decode is a typed error, and the connection lives on.
        let connection = client.transport().connect(server.local_addr()).await.unwrap();
        let body = rmp_serde::to_vec(&"not a number").unwrap();
        match connection.call("inline", Double::ID, &body, None).await {
            Err(manta_transport::CallError::Remote(error)) => {
                assert_eq!(error.kind, manta_transport::RemoteErrorKind::BadMessage)
            }
            other => panic!("expected BadMessage, got {other:?}"),
        }
        assert_eq!(remote.ask(Double(21)).await.unwrap(), 42);
    });
}

/// Answered from a thread of its own by an answering route; 0 is dropped unanswered.
#[derive(Message, Serialize, Deserialize)]
#[rtype(result = "i64")]
struct Triple(i64);
impl WireMessage for Triple {
    const ID: u32 = 6;
}

impl Handler<Triple> for Counter {
    type Result = i64;
    fn handle(&mut self, _: Triple, _: &mut Context<Self>) -> i64 {
        -1
    }
}

#[test]
fn an_answering_route_replies_from_any_thread_and_a_dropped_reply_is_an_error() {
    let ca = ClusterCa::generate("bus").unwrap();
    let server = node(&ca);
    let client = node(&ca);
    let actor = counter(SpawnOptions::named("answering"));
    let told = Arc::new(AtomicUsize::new(0));
    let seen = told.clone();
    let routes = routes(&actor).inline_answering(move |message: Triple, reply| {
        seen.fetch_add(1, Ordering::SeqCst);
        if message.0 == 0 {
            return drop(reply);
        }
        std::thread::spawn(move || reply.send(message.0 * 3));
    });
    server.register("answering", routes).unwrap();
    let remote: ActorRef<Counter> = client.actor(ActorAddress::new(server.local_addr(), "answering"));
    run(async {
        let answers: Vec<_> = (1..=50).map(|value| remote.ask(Triple(value))).collect();
        for (value, answer) in (1..=50).zip(answers) {
            assert_eq!(answer.await.unwrap(), value * 3);
        }
        match remote.ask(Triple(0)).await {
            Err(AskError::Remote(error)) => {
                assert!(error.message.contains("dropped unanswered"), "{error:?}")
            }
            other => panic!("expected an error answer, got {other:?}"),
        }
        // One-way messages take the same route, with nothing sent back.
        remote.tell(Triple(7)).await.unwrap();
        assert_eq!(remote.ask(Triple(2)).await.unwrap(), 6);
        assert_eq!(told.load(Ordering::SeqCst), 53);
        assert_eq!(remote.ask(Add(1)).await.unwrap(), 1, "the mailbox still works");
    });
}

#[test]
fn an_answering_route_behind_a_deferred_message_still_answers() {
    let ca = ClusterCa::generate("bus").unwrap();
    let server = node(&ca);
    let client = node(&ca);
    let actor = counter(SpawnOptions::named("behind").mailbox_capacity(1));
    let routes = routes(&actor).inline_answering(|message: Triple, reply| {
        std::thread::spawn(move || reply.send(message.0 * 3)).join().unwrap()
    });
    server.register("behind", routes).unwrap();
    let remote: ActorRef<Counter> = client.actor(ActorAddress::new(server.local_addr(), "behind"));
    run(async {
        // The actor is held and its one-place mailbox fills: the next message for it is
        // deferred, and everything after it for the same target waits in order behind it.
        let (release, held) = std::sync::mpsc::channel();
        let local = actor.clone();
        let holding = tokio::spawn(async move { local.ask(Hold(std::sync::Mutex::new(held))).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        for index in 0..3 {
            remote.tell(Record(index)).await.unwrap();
        }
        let tripled = tokio::spawn({
            let remote = remote.clone();
            async move { remote.ask(Triple(5)).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        release.send(()).unwrap();
        holding.await.unwrap().unwrap();
        assert_eq!(tripled.await.unwrap().unwrap(), 15);
        assert_eq!(remote.ask(Log).await.unwrap(), vec![0, 1, 2]);
    });
}

/// Answered only when the waiter's gate opens (a watch, as the raylet's `WatchLease`).
#[derive(Serialize, Deserialize)]
struct WaitForGate;
wire_message!(WaitForGate => bool, id = 7, parks);

struct Gatekeeper {
    gate: Arc<tokio::sync::Notify>,
    /// Waiters whose message the handler has taken (parked on the gate).
    parked: Arc<AtomicUsize>,
    served: u64,
}

impl Actor for Gatekeeper {
    type Context = Context<Self>;
}

impl Handler<WaitForGate> for Gatekeeper {
    type Result = manta_actor::ResponseFuture<bool>;
    fn handle(&mut self, _: WaitForGate, _: &mut Context<Self>) -> Self::Result {
        self.parked.fetch_add(1, Ordering::SeqCst);
        let gate = self.gate.clone();
        Box::pin(async move {
            gate.notified().await;
            true
        })
    }
}

impl Handler<Add> for Gatekeeper {
    type Result = i64;
    fn handle(&mut self, message: Add, _: &mut Context<Self>) -> i64 {
        self.served += 1;
        message.0
    }
}

/// Regression (the 1,024-actor deadlock): waiters parked on an actor held its mailbox places
/// until answered, so once they filled it nothing else (what would end their wait) got in.
#[test]
fn parked_messages_hold_no_mailbox_place_while_they_wait() {
    let gate = Arc::new(tokio::sync::Notify::new());
    let parked = Arc::new(AtomicUsize::new(0));
    let arbiter = start_arbiter("gatekeeper").unwrap();
    let keeper = spawn(&arbiter, SpawnOptions::named("gatekeeper").mailbox_capacity(2), {
        let (gate, parked) = (gate.clone(), parked.clone());
        move || Gatekeeper { gate: gate.clone(), parked: parked.clone(), served: 0 }
    });
    let keeper = ActorRef::local(keeper);
    run(async {
        let waiters: Vec<_> = (0..16)
            .map(|_| {
                let keeper = keeper.clone();
                tokio::spawn(async move { keeper.ask_unbounded(WaitForGate).await })
            })
            .collect();
        until(|| parked.load(Ordering::SeqCst) == 16).await;
        let answer = keeper.ask_timeout(Add(5), Duration::from_secs(30)).await;
        assert_eq!(answer.unwrap(), 5, "16 parked waiters left room for other messages");
        gate.notify_waiters();
        for waiter in waiters {
            assert!(waiter.await.unwrap().unwrap());
        }
    });
}

/// An ask without a deadline still ends when the peer's process goes away.
#[test]
fn an_unbounded_ask_ends_when_the_peer_shuts_down() {
    let ca = ClusterCa::generate("bus").unwrap();
    let server = node(&ca);
    let client = node(&ca);
    let arbiter = start_arbiter("gatekeeper").unwrap();
    let parked = Arc::new(AtomicUsize::new(0));
    let keeper = spawn(&arbiter, SpawnOptions::named("gatekeeper"), {
        let parked = parked.clone();
        move || Gatekeeper { gate: Arc::new(tokio::sync::Notify::new()), parked: parked.clone(), served: 0 }
    });
    server.register("gatekeeper", Routes::new(keeper).message::<WaitForGate>()).unwrap();
    let remote: ActorRef<Gatekeeper> = client.actor(ActorAddress::new(server.local_addr(), "gatekeeper"));
    run(async {
        let waiting = tokio::spawn(async move { remote.ask_unbounded(WaitForGate).await });
        until(|| parked.load(Ordering::SeqCst) == 1).await;
        server.transport().shutdown();
        let ended = tokio::time::timeout(Duration::from_secs(120), waiting).await;
        let outcome = ended.expect("the wait ended with the peer").unwrap();
        assert!(outcome.is_err(), "no answer came: it ended with an error, got {outcome:?}");
    });
}

/// The counter's protocol, as a client names it (no `Counter` type needed).
enum Counted {}
impl manta_actor::Protocol for Counted {
    const NAME: &'static str = "counted";
}
impl manta_actor::Accepts<Add> for Counted {}
impl manta_actor::Accepts<Record> for Counted {}
impl manta_actor::Accepts<Log> for Counted {}

/// Not registered anywhere.
enum Nobody {}
impl manta_actor::Protocol for Nobody {
    const NAME: &'static str = "nobody";
}
impl manta_actor::Accepts<Add> for Nobody {}

#[test]
fn a_service_is_reached_by_protocol_on_this_node_and_on_another() {
    let ca = ClusterCa::generate("bus").unwrap();
    let server = node(&ca);
    let client = node(&ca);
    let actor = counter(SpawnOptions::named("counted"));
    server.register("counted", routes(&actor)).unwrap();
    run(async {
        let local = server.service::<Counted>(server.local_addr());
        assert!(local.is_local());
        assert_eq!(local.ask(Add(2)).await.unwrap(), 2);
        local.tell(Record(5)).await.unwrap();
        local.tell(Record(6)).await.unwrap();
        assert_eq!(local.ask(Log).await.unwrap(), vec![5, 6], "tells arrive in order");

        let remote = client.service::<Counted>(server.local_addr());
        assert!(!remote.is_local());
        assert_eq!(remote.ask(Add(3)).await.unwrap(), 5);
        assert_eq!(remote.ask_unbounded(Add(1)).await.unwrap(), 6);

        let missing = server.service::<Nobody>(server.local_addr());
        assert!(matches!(missing.ask(Add(1)).await, Err(AskError::NoSuchActor { .. })));
        let missing = client.service::<Nobody>(server.local_addr());
        assert!(matches!(missing.ask(Add(1)).await, Err(AskError::NoSuchActor { .. })));
    });
}

/// Waits for `condition`, checking every millisecond, for at most a minute.
async fn until(condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "the condition never held");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
