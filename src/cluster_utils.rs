//! A cluster of real processes on this host, for tests and experiments (Ray's
//! `ray.cluster_utils.Cluster`): a head and any number of nodes, each started with `manta start`
//! in a session directory of its own (so each is its own node, talking QUIC to the others),
//! added, removed gracefully or killed, and all stopped when the value is dropped.
//!
//! ```no_run
//! use manta::cluster_utils::{Cluster, NodeSpec, Removal};
//!
//! let mut cluster = Cluster::start("manta", NodeSpec::new().num_cpus(1)).unwrap();
//! let other = cluster.add_node(NodeSpec::new().num_cpus(2).resource("other", 4.0)).unwrap();
//! cluster.wait_for_nodes(2, std::time::Duration::from_secs(30)).unwrap();
//! // A driver on the head: MANTA_TEMP_DIR=<cluster.head().root> with MANTA_ADDRESS=auto.
//! cluster.remove_node(&other.id, Removal::Kill).unwrap();
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use manta_transport::NodeId;

/// What a node offers and how it starts.
#[derive(Debug, Clone, Default)]
pub struct NodeSpec {
    num_cpus: Option<usize>,
    resources: Vec<(String, f64)>,
    labels: Vec<(String, String)>,
    args: Vec<String>,
    wrapper: Vec<String>,
}

impl NodeSpec {
    /// A node with the defaults of `manta start`.
    pub fn new() -> Self {
        NodeSpec::default()
    }

    /// CPUs it offers.
    pub fn num_cpus(mut self, cpus: usize) -> Self {
        self.num_cpus = Some(cpus);
        self
    }

    /// A custom resource it offers.
    pub fn resource(mut self, name: &str, amount: f64) -> Self {
        self.resources.push((name.to_owned(), amount));
        self
    }

    /// A label.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.push((key.to_owned(), value.to_owned()));
        self
    }

    /// More `manta start` arguments (`--host`, `--health-check-period-ms`, ...).
    pub fn args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Runs `manta start` through this command (`ip netns exec NAME`, say).
    pub fn wrapped<S: Into<String>>(mut self, wrapper: impl IntoIterator<Item = S>) -> Self {
        self.wrapper = wrapper.into_iter().map(Into::into).collect();
        self
    }

    fn start_args(&self) -> Vec<String> {
        let mut args = self.args.clone();
        if let Some(cpus) = self.num_cpus {
            args.extend(["--num-cpus".to_owned(), cpus.to_string()]);
        }
        if !self.resources.is_empty() {
            let pairs: Vec<String> =
                self.resources.iter().map(|(name, amount)| format!("{name:?}: {amount}")).collect();
            args.extend(["--resources".to_owned(), format!("{{{}}}", pairs.join(", "))]);
        }
        if !self.labels.is_empty() {
            let pairs: Vec<String> =
                self.labels.iter().map(|(key, value)| format!("{key}={value}")).collect();
            args.extend(["--labels".to_owned(), pairs.join(",")]);
        }
        args
    }
}

/// A node of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Its id.
    pub id: NodeId,
    /// Its session root (`MANTA_TEMP_DIR` for a driver on it).
    pub root: PathBuf,
    /// Its raylet's process id.
    pub raylet_pid: u32,
}

/// How a node leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// `manta stop`: its workers end, it deregisters.
    Graceful,
    /// `kill -9` of its raylet (its workers die with it); the GCS finds out by health checks.
    Kill,
}

/// A head and its nodes, each a `manta start` of its own; stopped on drop.
#[derive(Debug)]
pub struct Cluster {
    exe: PathBuf,
    base: PathBuf,
    head: Node,
    nodes: Vec<Node>,
    added: usize,
    address: String,
    token: String,
}

impl Cluster {
    /// Starts a head (the GCS and a node) with the `manta` binary at `exe`, under a fresh
    /// directory of this host's temporary directory.
    pub fn start(exe: impl Into<PathBuf>, head: NodeSpec) -> Result<Cluster, String> {
        let exe = exe.into();
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let serial = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let base = std::env::temp_dir().join(format!("manta-cluster-{}-{serial}", std::process::id()));
        let root = base.join("head");
        let mut args = vec!["--head".to_owned(), "--port".to_owned(), "0".to_owned()];
        args.extend(head.start_args());
        start(&exe, &root, &head.wrapper, &args)?;
        let head = node_at(&root)?;
        let address = session_file(&root, "gcs_address")?;
        let token = session_file(&root, "token")?;
        Ok(Cluster { exe, base, head, nodes: Vec::new(), added: 0, address, token })
    }

    /// The head node (a driver on this host joins it with `MANTA_TEMP_DIR=<root>` and
    /// `MANTA_ADDRESS=auto`).
    pub fn head(&self) -> &Node {
        &self.head
    }

    /// The nodes added and not removed.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The GCS's address.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The cluster's join token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Starts a node that joins the cluster.
    pub fn add_node(&mut self, spec: NodeSpec) -> Result<Node, String> {
        self.added += 1;
        let root = self.base.join(format!("node-{}", self.added));
        let mut args =
            vec!["--address".to_owned(), self.address.clone(), "--token".to_owned(), self.token.clone()];
        args.extend(spec.start_args());
        start(&self.exe, &root, &spec.wrapper, &args)?;
        let node = node_at(&root)?;
        self.nodes.push(node.clone());
        Ok(node)
    }

    /// Removes a node added before.
    pub fn remove_node(&mut self, id: &NodeId, how: Removal) -> Result<(), String> {
        let index =
            self.nodes.iter().position(|node| &node.id == id).ok_or(format!("no node {id} was added"))?;
        let node = self.nodes.remove(index);
        match how {
            Removal::Graceful => stop(&self.exe, &node.root),
            Removal::Kill => {
                // SAFETY: a signal to the raylet this cluster started (its pid file says which).
                if unsafe { libc::kill(node.raylet_pid as libc::pid_t, libc::SIGKILL) } != 0 {
                    return Err(format!(
                        "killing pid {}: {}",
                        node.raylet_pid,
                        std::io::Error::last_os_error()
                    ));
                }
                Ok(())
            }
        }
    }

    /// Waits until the GCS counts `count` alive nodes (the head included).
    pub fn wait_for_nodes(&self, count: usize, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let output = Command::new(&self.exe)
                .arg("status")
                .env("MANTA_TEMP_DIR", &self.head.root)
                .output()
                .map_err(|error| format!("running `manta status`: {error}"))?;
            let status = String::from_utf8_lossy(&output.stdout);
            // "Manta cluster at ADDRESS: N node(s) alive, M dead"
            let alive = status
                .lines()
                .find_map(|line| {
                    line.strip_prefix("Manta cluster at ")?
                        .split(": ")
                        .nth(1)?
                        .split(' ')
                        .next()?
                        .parse()
                        .ok()
                })
                .unwrap_or(0usize);
            if alive == count {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("{alive} alive nodes of {count} after {timeout:?}:\n{status}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in self.nodes.iter().rev().chain([&self.head]) {
            let _ = stop(&self.exe, &node.root);
        }
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

fn start(exe: &Path, root: &Path, wrapper: &[String], args: &[String]) -> Result<(), String> {
    let _ = std::fs::remove_dir_all(root);
    let mut command = match wrapper.split_first() {
        Some((program, wrapper_args)) => {
            let mut command = Command::new(program);
            command.args(wrapper_args).arg(exe);
            command
        }
        None => Command::new(exe),
    };
    let output = command
        .arg("start")
        .args(args)
        .env("MANTA_TEMP_DIR", root)
        .output()
        .map_err(|error| format!("running `manta start`: {error}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("`manta start {}`: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim()))
    }
}

fn stop(exe: &Path, root: &Path) -> Result<(), String> {
    let output = Command::new(exe).arg("stop").env("MANTA_TEMP_DIR", root).output();
    match output {
        Ok(output) if output.status.success() => Ok(()),
        Ok(output) => Err(String::from_utf8_lossy(&output.stderr).trim().to_owned()),
        Err(error) => Err(format!("running `manta stop`: {error}")),
    }
}

fn session_file(root: &Path, name: &str) -> Result<String, String> {
    std::fs::read_to_string(root.join("session_latest").join(name))
        .map(|text| text.trim().to_owned())
        .map_err(|error| format!("reading {name} of {}: {error}", root.display()))
}

/// The node whose session is under `root`: its raylet record's third line is its id.
fn node_at(root: &Path) -> Result<Node, String> {
    let record = session_file(root, "raylet")?;
    let id = record.lines().nth(2).ok_or("the raylet record has no node id")?;
    let id = id.parse().map_err(|error| format!("the raylet record's node id: {error}"))?;
    let raylet_pid = session_file(root, "pids/raylet.pid")?
        .parse()
        .map_err(|error| format!("the raylet's pid file: {error}"))?;
    Ok(Node { id, root: root.to_owned(), raylet_pid })
}
