//! Two OS processes on loopback exchanging asks and tells through the actor layer.
//!
//! The test re-executes its own binary as the second process (the same way Manta will start
//! worker processes from the driver's binary): `peer_process` is an ignored test that the child
//! runs with `--ignored --exact`, with its role given by environment variables.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use manta::actor::{
    spawn, start_arbiter, wire_message, Actor, ActorAddress, ActorRef, AskError, Context, Handler,
    MessageResult, Node, Routes, SpawnOptions, System,
};
use manta::transport::{
    join_blocking, Admission, ClusterCa, JoinError, JoinRefusal, NodeId, TokenRegistry, TokenUse, Transport,
    TransportConfig,
};
use serde::{Deserialize, Serialize};

const HEAD_ENV: &str = "MANTA_TEST_PEER_HEAD";
const TOKEN_ENV: &str = "MANTA_TEST_PEER_TOKEN";

/// An append-only journal: tells append, asks read, `Fail` panics.
struct Journal {
    entries: Vec<u64>,
    pid: u32,
}
impl Actor for Journal {
    type Context = Context<Self>;
}

#[derive(Serialize, Deserialize)]
struct Append(u64);
wire_message!(Append => (), id = 1);

#[derive(Serialize, Deserialize)]
struct Read;
wire_message!(Read => (u32, Vec<u64>), id = 2);

#[derive(Serialize, Deserialize)]
struct Fail;
wire_message!(Fail => (), id = 3);

/// Tells the peer to call back into the head's journal `count` times, then report.
#[derive(Serialize, Deserialize)]
struct CallBack {
    head: String,
    count: u64,
}
wire_message!(CallBack => u64, id = 4);

impl Handler<Append> for Journal {
    type Result = ();
    fn handle(&mut self, message: Append, _: &mut Context<Self>) {
        self.entries.push(message.0);
    }
}
impl Handler<Read> for Journal {
    type Result = MessageResult<Read>;
    fn handle(&mut self, _: Read, _: &mut Context<Self>) -> Self::Result {
        MessageResult((self.pid, self.entries.clone()))
    }
}
impl Handler<Fail> for Journal {
    type Result = ();
    fn handle(&mut self, _: Fail, _: &mut Context<Self>) {
        panic!("journal asked to fail");
    }
}

fn journal_routes(node: &Node) -> Routes<Journal> {
    let arbiter = node.arbiter().clone();
    let journal = spawn(&arbiter, SpawnOptions::named("journal").max_restarts(2), || Journal {
        entries: Vec::new(),
        pid: std::process::id(),
    });
    Routes::new(journal).message::<Append>().message::<Read>().message::<Fail>()
}

/// The peer's caller actor: calls the head's journal from the peer process.
struct Caller {
    node: Node,
}
impl Actor for Caller {
    type Context = Context<Self>;
}
impl Handler<CallBack> for Caller {
    type Result = manta::actor::ResponseFuture<u64>;
    fn handle(&mut self, message: CallBack, _: &mut Context<Self>) -> Self::Result {
        let head = message.head.parse().expect("the head sends a valid address");
        let journal: ActorRef<Journal> = self.node.actor(ActorAddress::new(head, "journal"));
        Box::pin(async move {
            for index in 0..message.count {
                journal.tell(Append(1_000 + index)).await.expect("tell to the head");
            }
            journal.ask(Read).await.expect("ask the head").1.len() as u64
        })
    }
}

#[test]
#[ignore = "the second process of two_processes_exchange_asks_and_tells; not a test on its own"]
fn peer_process() {
    manta::init_logging();
    let head: SocketAddr =
        std::env::var(HEAD_ENV).expect("run by two_processes_exchange_asks_and_tells").parse().unwrap();
    let token = std::env::var(TOKEN_ENV).unwrap().parse().unwrap();
    let identity = join_blocking(head, &token, &TransportConfig::default()).expect("join the head");
    let node = Node::start_local(identity).unwrap();
    node.register("journal", journal_routes(&node)).unwrap();
    let caller_node = node.clone();
    let worker = start_arbiter("peer-caller").unwrap();
    let caller = spawn(&worker, SpawnOptions::named("caller"), move || Caller { node: caller_node.clone() });
    node.register("caller", Routes::new(caller).message::<CallBack>()).unwrap();
    // Written to the stdout handle, not with println!, which the test harness may capture.
    let mut stdout = std::io::stdout();
    writeln!(stdout, "READY {} {}", node.node_id(), node.local_addr()).unwrap();
    stdout.flush().unwrap();
    // Serve until the head closes our stdin.
    let mut line = String::new();
    while std::io::stdin().read_line(&mut line).unwrap_or(0) > 0 {}
}

struct Peer {
    child: Child,
    node_id: NodeId,
    addr: SocketAddr,
}

impl Drop for Peer {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
    }
}

fn start_peer(head: SocketAddr, token: &str) -> Peer {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "peer_process", "--nocapture", "--test-threads=1"])
        .env(HEAD_ENV, head.to_string())
        .env(TOKEN_ENV, token)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let ready = loop {
        let line = lines.next().expect("the peer exited before it was ready").unwrap();
        // The harness may have started the line with "test peer_process ... ".
        if let Some(at) = line.find("READY ") {
            break line[at + "READY ".len()..].to_owned();
        }
    };
    // Keep draining the child's output so it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    let mut fields = ready.split_whitespace();
    let node_id = fields.next().unwrap().parse().unwrap();
    let addr = fields.next().unwrap().parse().unwrap();
    Peer { child, node_id, addr }
}

#[test]
fn two_processes_exchange_asks_and_tells() {
    manta::init_logging();
    let ca = Arc::new(ClusterCa::generate("two-processes").unwrap());
    let tokens = Arc::new(TokenRegistry::default());
    let head = Node::start(
        Transport::builder(ca.issue(NodeId::random().unwrap()).unwrap())
            .admission(Admission { ca: ca.clone(), tokens: tokens.clone() }),
    )
    .unwrap();
    head.register("journal", journal_routes(&head)).unwrap();
    let token = tokens.create(&ca, TokenUse::OneTime).unwrap();
    let peer = start_peer(head.local_addr(), &token.to_string());
    assert_ne!(peer.node_id, head.node_id());

    let journal: ActorRef<Journal> = head.actor(ActorAddress::new(peer.addr, "journal"));
    let caller: ActorRef<Caller> = head.actor(ActorAddress::new(peer.addr, "caller"));
    let own: ActorRef<Journal> = head.actor(ActorAddress::new(head.local_addr(), "journal"));
    assert!(!journal.is_local());
    assert!(own.is_local());
    System::new().block_on(async {
        for index in 0..500 {
            journal.tell(Append(index)).await.unwrap();
        }
        let (pid, entries) = journal.ask(Read).await.unwrap();
        assert_eq!(pid, peer.child.id(), "the journal lives in the other process");
        assert_ne!(pid, std::process::id());
        assert_eq!(entries, (0..500).collect::<Vec<_>>(), "tells arrive in order");

        // The peer calls back into this process through its own references.
        let seen = caller.ask(CallBack { head: head.local_addr().to_string(), count: 50 }).await.unwrap();
        assert_eq!(seen, 50);
        let (pid, entries) = own.ask(Read).await.unwrap();
        assert_eq!(pid, std::process::id());
        assert_eq!(entries, (1_000..1_050).collect::<Vec<_>>());

        // A panic in the other process is a typed error here, and the actor comes back empty.
        match journal.ask(Fail).await {
            Err(AskError::ActorDied { cause, .. }) => {
                assert!(cause.contains("journal asked to fail"), "{cause}")
            }
            other => panic!("expected ActorDied, got {other:?}"),
        }
        assert_eq!(journal.ask(Read).await.unwrap().1, Vec::<u64>::new());
    });

    // The one-time token is spent: nobody else joins with it.
    let reuse = join_blocking(head.local_addr(), &token, &TransportConfig::default());
    assert!(matches!(reuse, Err(JoinError::Refused(JoinRefusal::TokenInvalid))), "{reuse:?}");
}
