//! Two processes on the actor bus: this program starts a head node (with a fresh cluster CA),
//! re-executes itself as a second process that joins the cluster with a one-time token, and the
//! two exchange asks and tells through the location-transparent actor layer over mTLS QUIC.
//!
//! Run it with `cargo run --release --example bus`; set `MANTA_LOG=info` to see the transport.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use manta::actor::{
    spawn, start_arbiter, wire_message, Actor, ActorAddress, ActorRef, Context, Handler, Node, Routes,
    SpawnOptions, System,
};
use manta::transport::{
    join_blocking, Admission, ClusterCa, NodeId, TokenRegistry, TokenUse, Transport, TransportConfig,
};
use serde::{Deserialize, Serialize};

const ROLE_ENV: &str = "MANTA_BUS_EXAMPLE_ROLE";

/// A counter on the head.
struct Counter(i64);
impl Actor for Counter {
    type Context = Context<Self>;
}

#[derive(Serialize, Deserialize)]
struct Add(i64);
wire_message!(Add => i64, id = 1);
impl Handler<Add> for Counter {
    type Result = i64;
    fn handle(&mut self, message: Add, _: &mut Context<Self>) -> i64 {
        self.0 += message.0;
        self.0
    }
}

/// A greeter in the second process.
struct Greeter {
    greeted: u64,
    shutdown: std::sync::mpsc::Sender<()>,
}
impl Actor for Greeter {
    type Context = Context<Self>;
}

#[derive(Serialize, Deserialize)]
struct Greet(String);
wire_message!(Greet => String, id = 10);
impl Handler<Greet> for Greeter {
    type Result = String;
    fn handle(&mut self, message: Greet, _: &mut Context<Self>) -> String {
        self.greeted += 1;
        format!("hello {} from pid {} (greeting #{})", message.0, std::process::id(), self.greeted)
    }
}

#[derive(Serialize, Deserialize)]
struct Shutdown;
wire_message!(Shutdown => (), id = 11);
impl Handler<Shutdown> for Greeter {
    type Result = ();
    fn handle(&mut self, _: Shutdown, _: &mut Context<Self>) {
        let _ = self.shutdown.send(());
    }
}

fn main() -> anyhow::Result<()> {
    manta::init_logging();
    match std::env::var(ROLE_ENV).as_deref() {
        Ok("peer") => peer(),
        _ => head(),
    }
}

fn head() -> anyhow::Result<()> {
    let ca = Arc::new(ClusterCa::generate("example")?);
    let tokens = Arc::new(TokenRegistry::default());
    let identity = ca.issue(NodeId::random()?)?;
    let node = Node::start(
        Transport::builder(identity).admission(Admission { ca: ca.clone(), tokens: tokens.clone() }),
    )?;
    let arbiter = start_arbiter("head-actors")?;
    let counter = spawn(&arbiter, SpawnOptions::named("counter"), || Counter(0));
    node.register("counter", Routes::new(counter).message::<Add>())?;
    println!("head {} listening on {}", node.node_id(), node.local_addr());

    let token = tokens.create(&ca, TokenUse::OneTime)?;
    let mut child = Command::new(std::env::current_exe()?)
        .env(ROLE_ENV, "peer")
        .env("MANTA_BUS_HEAD", node.local_addr().to_string())
        .env("MANTA_BUS_TOKEN", token.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the second process")?;
    let mut lines = BufReader::new(child.stdout.take().context("child stdout")?).lines();
    let peer_addr = loop {
        let line = lines.next().context("the second process exited before it was ready")??;
        if let Some(addr) = line.strip_prefix("READY ") {
            break addr.parse()?;
        }
        println!("[peer] {line}");
    };
    println!("second process (pid {}) joined and listens on {peer_addr}", child.id());

    let greeter: ActorRef<Greeter> = node.actor(ActorAddress::new(peer_addr, "greeter"));
    let report = System::new().block_on(async {
        println!("{}", greeter.ask(Greet("head".into())).await?);
        let rounds = 2000;
        let started = Instant::now();
        for index in 0..rounds {
            greeter.ask(Greet(format!("#{index}"))).await?;
        }
        let per_ask = started.elapsed() / rounds;
        println!("{rounds} asks across processes: {per_ask:?} per round trip");
        println!("{}", greeter.ask(Greet("again".into())).await?);
        greeter.tell(Shutdown).await?;
        anyhow::Ok(())
    });
    report?;
    for line in lines.map_while(Result::ok) {
        println!("[peer] {line}");
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("the second process failed: {status}");
    }
    println!("second process exited cleanly");
    Ok(())
}

fn peer() -> anyhow::Result<()> {
    let head_addr = std::env::var("MANTA_BUS_HEAD")?.parse()?;
    let token = std::env::var("MANTA_BUS_TOKEN")?.parse()?;
    let identity = join_blocking(head_addr, &token, &TransportConfig::default())?;
    let node = Node::start_local(identity)?;
    let arbiter = start_arbiter("peer-actors")?;
    let (shutdown_tx, shutdown_rx) = std::sync::mpsc::channel();
    let greeter = spawn(&arbiter, SpawnOptions::named("greeter"), move || Greeter {
        greeted: 0,
        shutdown: shutdown_tx.clone(),
    });
    node.register("greeter", Routes::new(greeter).message::<Greet>().message::<Shutdown>())?;

    // The peer calls the head's counter through the same kind of reference.
    let counter: ActorRef<Counter> = node.actor(ActorAddress::new(head_addr, "counter"));
    let total = System::new().block_on(async {
        let mut total = 0;
        for _ in 0..3 {
            total = counter.ask(Add(7)).await?;
        }
        anyhow::Ok(total)
    })?;
    println!("joined as {}; the head's counter is at {total}", node.node_id());
    println!("READY {}", node.local_addr());
    shutdown_rx.recv_timeout(Duration::from_secs(120)).context("no shutdown within 120 s")?;
    println!("shutting down");
    Ok(())
}
