//! `manta start`, `manta stop`, `manta status`, and the daemons `manta start` runs (`manta gcs`,
//! `manta raylet`, hidden commands of the same binary). See docs/decisions/cluster.md.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::Args;
use manta::transport::JoinToken;
use manta_node::cluster::{ClusterClient, GcsDaemon, RayletDaemon};
use manta_node::session::{self, RayletRecord, Session, GCS_ADDRESS, RAYLET, TOKEN};
use manta_node::NodeConfig;

/// How long `manta start` waits for a daemon to be ready.
const READY_WAIT: Duration = Duration::from_secs(60);

/// How long `manta stop` waits for a daemon to end after SIGTERM before it sends SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// `manta start`'s options.
#[derive(Debug, Args)]
pub(crate) struct StartArgs {
    /// Start a new cluster: its GCS and this host's node.
    #[arg(long, conflicts_with_all = ["address", "token"])]
    head: bool,
    /// Join the cluster whose GCS is at HOST:PORT (printed by `manta start --head`).
    #[arg(long, value_name = "HOST:PORT", requires = "token")]
    address: Option<SocketAddr>,
    /// The cluster's join token (printed by `manta start --head`).
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
    /// The address this host's daemons listen on.
    #[arg(long, value_name = "IP", default_value = "127.0.0.1")]
    host: IpAddr,
    /// The GCS's port (with --head; 0: any free port).
    #[arg(long, default_value_t = 6379)]
    port: u16,
    /// Keep the GCS's tables on disk in DIR (with --head; created if missing), so that a GCS
    /// started again on DIR finds them; without it they live in the GCS's memory.
    #[arg(long, value_name = "DIR")]
    storage: Option<PathBuf>,
    /// Start only the GCS, in this host's running session (with --head and --storage): after
    /// the GCS died, the same cluster comes back (its tables, identity and address), and its
    /// nodes reconnect by themselves.
    #[arg(long)]
    gcs_only: bool,
    #[command(flatten)]
    health: HealthArgs,
    #[command(flatten)]
    node: NodeArgs,
}

/// How the GCS checks its nodes (with --head; Ray's `health_check_*` settings).
#[derive(Debug, Clone, Args)]
pub(crate) struct HealthArgs {
    /// Between two health checks of a node, ms.
    #[arg(long, value_name = "MS", default_value_t = 3_000, value_parser = clap::value_parser!(u64).range(1..))]
    health_check_period_ms: u64,
    /// How long one health check may take, ms.
    #[arg(long, value_name = "MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    health_check_timeout_ms: u64,
    /// Health checks missed in a row that make a node dead.
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    health_check_failure_threshold: u32,
}

impl HealthArgs {
    fn to_args(&self) -> Vec<String> {
        vec![
            "--health-check-period-ms".to_owned(),
            self.health_check_period_ms.to_string(),
            "--health-check-timeout-ms".to_owned(),
            self.health_check_timeout_ms.to_string(),
            "--health-check-failure-threshold".to_owned(),
            self.health_check_failure_threshold.to_string(),
        ]
    }

    fn checks(&self) -> manta_node::cluster::HealthChecks {
        let period = Duration::from_millis(self.health_check_period_ms);
        manta_node::cluster::HealthChecks {
            // Ray waits 5 s before the first round; never longer than a period here.
            initial_delay: period.min(Duration::from_secs(5)),
            period,
            timeout: Duration::from_millis(self.health_check_timeout_ms),
            failure_threshold: self.health_check_failure_threshold,
        }
    }
}

/// What a node offers (`manta start` and `manta raylet`).
#[derive(Debug, Clone, Args)]
pub(crate) struct NodeArgs {
    /// CPUs this node offers (default: the machine's).
    #[arg(long, value_name = "N")]
    num_cpus: Option<usize>,
    /// GPUs this node offers.
    #[arg(long, value_name = "N", default_value_t = 0)]
    num_gpus: usize,
    /// Custom resources, as JSON: '{"name": amount, ...}'.
    #[arg(long, value_name = "JSON")]
    resources: Option<String>,
    /// Bytes of shared memory for the object store (default: 30% of the available memory).
    #[arg(long, value_name = "BYTES")]
    object_store_memory: Option<u64>,
    /// Labels of this node, for label scheduling: k=v,k2=v2.
    #[arg(long, value_name = "K=V,...")]
    labels: Option<String>,
    /// The node leaves the cluster (its daemon ends) once the GCS has not checked its health
    /// for this long, ms (Ray's `gcs_rpc_server_reconnect_timeout_s`: 60 s).
    #[arg(long, value_name = "MS", default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(1..))]
    gcs_timeout_ms: u64,
    /// Where the node keeps the drivers' binaries it was sent, by SHA-256 (default: the
    /// session's `binaries/`); a container image can hold them there already.
    #[arg(long, value_name = "DIR")]
    binary_cache: Option<PathBuf>,
    /// Fetch every job's binary from its driver (or the cache), as a node on another host
    /// must, even when the driver runs on this host.
    #[arg(long)]
    fetch_binaries: bool,
    /// The scheduling policy, by name: hybrid (Ray's default), binpack (fewest nodes busy),
    /// locality (where the arguments' bytes are), or one registered in this binary.
    #[arg(long, value_name = "NAME", default_value = "hybrid")]
    scheduler: String,
}

impl NodeArgs {
    /// The arguments as `manta raylet` takes them.
    fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            "--num-gpus".to_owned(),
            self.num_gpus.to_string(),
            "--gcs-timeout-ms".to_owned(),
            self.gcs_timeout_ms.to_string(),
            "--scheduler".to_owned(),
            self.scheduler.clone(),
        ];
        if self.fetch_binaries {
            args.push("--fetch-binaries".to_owned());
        }
        let optional = [
            ("--binary-cache", self.binary_cache.as_ref().map(|dir| dir.display().to_string())),
            ("--num-cpus", self.num_cpus.map(|cpus| cpus.to_string())),
            ("--resources", self.resources.clone()),
            ("--object-store-memory", self.object_store_memory.map(|bytes| bytes.to_string())),
            ("--labels", self.labels.clone()),
        ];
        for (flag, value) in optional {
            if let Some(value) = value {
                args.extend([flag.to_owned(), value]);
            }
        }
        args
    }

    /// The node's configuration and labels, or what is wrong with the flags.
    fn parse(&self) -> Result<(NodeConfig, Vec<(String, String)>), String> {
        let resources = match &self.resources {
            None => Vec::new(),
            Some(json) => {
                let map: std::collections::BTreeMap<String, f64> = serde_json::from_str(json)
                    .map_err(|error| format!("--resources is not a JSON object of numbers: {error}"))?;
                if let Some((name, amount)) =
                    map.iter().find(|(_, amount)| !amount.is_finite() || **amount < 0.0)
                {
                    return Err(format!("--resources: {name} must be a number of at least 0, got {amount}"));
                }
                map.into_iter().collect()
            }
        };
        let labels = match &self.labels {
            None => Vec::new(),
            Some(text) => text
                .split(',')
                .filter(|pair| !pair.trim().is_empty())
                .map(|pair| match pair.split_once('=') {
                    Some((key, value)) if !key.trim().is_empty() => {
                        Ok((key.trim().to_owned(), value.trim().to_owned()))
                    }
                    _ => Err(format!("--labels: {pair:?} is not key=value")),
                })
                .collect::<Result<_, _>>()?,
        };
        let num_cpus = self
            .num_cpus
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |cpus| cpus.get()));
        let object_store_bytes = match self.object_store_memory {
            Some(0) => return Err("--object-store-memory must be above 0".to_owned()),
            Some(bytes) => bytes,
            None => available_memory().map_or(1 << 30, |bytes| bytes / 10 * 3),
        };
        manta::scheduling::policy_named(&self.scheduler).map_err(|error| format!("--scheduler: {error}"))?;
        let config = NodeConfig {
            num_cpus,
            num_gpus: self.num_gpus,
            resources,
            object_store_bytes,
            object_slots: 65_536,
            scheduler: self.scheduler.clone(),
        };
        Ok((config, labels))
    }
}

/// `MemAvailable` from /proc/meminfo, in bytes.
fn available_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|line| line.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `manta start`: starts this host's daemons in the background.
pub(crate) fn start(args: StartArgs) -> ExitCode {
    exit(start_daemons(&args), "start")
}

fn start_daemons(args: &StartArgs) -> Result<(), String> {
    if !args.head && args.address.is_none() {
        return Err(
            "say --head to start a cluster, or --address HOST:PORT --token TOKEN to join one".to_owned()
        );
    }
    if args.storage.is_some() && !args.head {
        return Err(
            "--storage keeps the GCS's tables: it goes with --head (a joining node has no GCS)".to_owned()
        );
    }
    if args.gcs_only && !(args.head && args.storage.is_some()) {
        return Err(
            "--gcs-only restarts a GCS on its tables: it goes with --head and --storage DIR".to_owned()
        );
    }
    // Checked here, not in a daemon's log.
    args.node.parse()?;
    let session = if args.gcs_only {
        // The newest of this host's sessions that ran a GCS, which must have ended.
        let ran_gcs = |session: &Session| {
            session
                .pids()
                .ok()
                .and_then(|pids| pids.into_iter().find(|(name, _)| name == "gcs").map(|(_, pid)| pid))
        };
        let sessions = Session::all(&session::root());
        let (session, pid) = sessions
            .into_iter()
            .rev()
            .find_map(|session| ran_gcs(&session).map(|pid| (session, pid)))
            .ok_or("no session of this host ran a GCS: start the cluster with --head first")?;
        if is_daemon_of(pid, &session) {
            return Err(format!(
                "the GCS of session {} is running (pid {pid}): --gcs-only starts one that died",
                session.dir().display()
            ));
        }
        // Its presence says the new GCS is ready: the old one's must go first.
        session.remove(GCS_ADDRESS);
        session
    } else {
        Session::create(&session::root()).map_err(|error| error.to_string())?
    };
    let dir = session.dir().display().to_string();
    let (gcs_address, token) = match args.address {
        Some(address) => {
            let token = args.token.clone().unwrap_or_default();
            token.parse::<JoinToken>().map_err(|error| format!("--token: {error}"))?;
            session.write(GCS_ADDRESS, &address.to_string()).map_err(|error| error.to_string())?;
            session.write(TOKEN, &token).map_err(|error| error.to_string())?;
            (address, token)
        }
        None => {
            let bind = SocketAddr::new(args.host, args.port).to_string();
            let mut gcs_args =
                vec!["gcs".to_owned(), "--session".to_owned(), dir.clone(), "--bind".to_owned(), bind];
            gcs_args.extend(args.health.to_args());
            gcs_args.extend(["--scheduler".to_owned(), args.node.scheduler.clone()]);
            if let Some(storage) = &args.storage {
                let storage = std::path::absolute(storage).map_err(|error| format!("--storage: {error}"))?;
                gcs_args.extend(["--storage".to_owned(), storage.display().to_string()]);
            }
            let gcs_args: Vec<&str> = gcs_args.iter().map(String::as_str).collect();
            let mut gcs = spawn_daemon(&session, "gcs", &gcs_args)?;
            wait_ready(&session, "gcs", &mut gcs, GCS_ADDRESS)?;
            (session.gcs_address().map_err(|error| error.to_string())?, read(&session, TOKEN)?)
        }
    };
    if args.gcs_only {
        println!("Started the GCS of the Manta cluster at {gcs_address} again, on its tables.");
        return Ok(());
    }
    let mut raylet_args = vec![
        "raylet".to_owned(),
        "--session".to_owned(),
        dir.clone(),
        "--address".to_owned(),
        gcs_address.to_string(),
        "--host".to_owned(),
        args.host.to_string(),
    ];
    raylet_args.extend(args.node.to_args());
    let raylet_args: Vec<&str> = raylet_args.iter().map(String::as_str).collect();
    let mut raylet = spawn_daemon(&session, "raylet", &raylet_args)?;
    wait_ready(&session, "raylet", &mut raylet, RAYLET)?;
    let node_id = session.raylet().map_err(|error| error.to_string())?.node_id;
    session.mark_latest().map_err(|error| error.to_string())?;
    if args.head {
        println!("Started a Manta cluster. GCS at {gcs_address}; this host's node {node_id}.");
        println!("Session directory: {dir}");
        println!();
        println!("To add a node:    manta start --address {gcs_address} --token {token}");
        println!("To see the nodes: manta status");
        println!("To run a driver:  MANTA_ADDRESS=auto <your program>   (on this host)");
        println!("To stop:          manta stop   (on each host)");
    } else {
        println!("Joined the Manta cluster at {gcs_address} as node {node_id}.");
        println!("Session directory: {dir}");
        println!("To stop: manta stop");
    }
    Ok(())
}

fn read(session: &Session, name: &str) -> Result<String, String> {
    session.required(name).map_err(|error| error.to_string())
}

/// Starts `manta <args>` as a daemon of `session` (its own session id, no terminal, output to
/// the session's logs).
fn spawn_daemon(session: &Session, name: &str, args: &[&str]) -> Result<std::process::Child, String> {
    let exe = std::env::current_exe().map_err(|error| format!("finding this executable: {error}"))?;
    let (out, err) = session.log_paths(name);
    let open =
        |path: &Path| std::fs::File::create(path).map_err(|error| format!("{}: {error}", path.display()));
    let mut command = std::process::Command::new(exe);
    command.args(args).stdin(Stdio::null()).stdout(open(&out)?).stderr(open(&err)?);
    use std::os::unix::process::CommandExt as _;
    // SAFETY: between fork and exec the closure calls only setsid, which is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.spawn().map_err(|error| format!("starting the {name} daemon: {error}"))
}

/// Waits until daemon `name` wrote `file`, or says why it never will.
fn wait_ready(
    session: &Session,
    name: &str,
    child: &mut std::process::Child,
    file: &str,
) -> Result<(), String> {
    let deadline = Instant::now() + READY_WAIT;
    loop {
        if matches!(session.read(file), Ok(Some(_))) {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            let (_, err) = session.log_paths(name);
            let last = std::fs::read_to_string(&err).unwrap_or_default();
            let last = last.lines().rev().find(|line| !line.trim().is_empty()).unwrap_or("").to_owned();
            return Err(format!("the {name} daemon ended ({status}): {last}"));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the {name} daemon was not ready within {READY_WAIT:?} (see {})",
                err_log(session, name)
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn err_log(session: &Session, name: &str) -> String {
    session.log_paths(name).1.display().to_string()
}

/// `manta gcs`'s options (started by `manta start --head`).
#[derive(Debug, Args)]
pub(crate) struct GcsArgs {
    /// The session directory.
    #[arg(long)]
    session: PathBuf,
    /// The address to listen on.
    #[arg(long)]
    bind: SocketAddr,
    #[command(flatten)]
    health: HealthArgs,
    /// The scheduling policy that places placement groups' bundles.
    #[arg(long, value_name = "NAME", default_value = "hybrid")]
    scheduler: String,
    /// Keep the tables on disk in DIR.
    #[arg(long, value_name = "DIR")]
    storage: Option<PathBuf>,
}

/// `manta gcs`: the GCS daemon; serves until SIGTERM or SIGINT.
pub(crate) fn gcs(args: GcsArgs) -> ExitCode {
    manta::init_logging();
    let run = || -> Result<(), String> {
        let session = Session::open(&args.session).map_err(|error| error.to_string())?;
        let daemon =
            GcsDaemon::start(args.bind, args.health.checks(), &args.scheduler, args.storage.as_deref())
                .map_err(|error| error.to_string())?;
        session.write_pid("gcs").map_err(|error| error.to_string())?;
        session.write(TOKEN, &daemon.token.to_string()).map_err(|error| error.to_string())?;
        // Last: its presence says the daemon is ready.
        session.write(GCS_ADDRESS, &daemon.address().to_string()).map_err(|error| error.to_string())?;
        wait_for_termination();
        session.remove("pids/gcs.pid");
        Ok(())
    };
    exit(run(), "gcs")
}

/// `manta raylet`'s options (started by `manta start`).
#[derive(Debug, Args)]
pub(crate) struct RayletArgs {
    /// The session directory (holds the token).
    #[arg(long)]
    session: PathBuf,
    /// The GCS's address.
    #[arg(long)]
    address: SocketAddr,
    /// The address to listen on.
    #[arg(long)]
    host: IpAddr,
    #[command(flatten)]
    node: NodeArgs,
}

/// `manta raylet`: a node's daemon; serves until SIGTERM or SIGINT, then leaves the cluster.
pub(crate) fn raylet(args: RayletArgs) -> ExitCode {
    manta::init_logging();
    let run = || -> Result<(), String> {
        let session = Session::open(&args.session).map_err(|error| error.to_string())?;
        let token: JoinToken =
            read(&session, TOKEN)?.parse().map_err(|error| format!("the session's token: {error}"))?;
        let (config, labels) = args.node.parse()?;
        let gcs_timeout = Duration::from_millis(args.node.gcs_timeout_ms);
        let binaries = manta_node::cluster::Binaries {
            cache: args.node.binary_cache.clone().unwrap_or_else(|| session.dir().join("binaries")),
            local: !args.node.fetch_binaries,
        };
        let gcs = (args.address, gcs_timeout);
        let daemon = RayletDaemon::start(gcs, &token, args.host, (&config, binaries), labels)
            .map_err(|error| error.to_string())?;
        session.write_pid("raylet").map_err(|error| error.to_string())?;
        let address = daemon.node.local_addr();
        let record =
            RayletRecord { address, store_path: daemon.store_path.clone(), node_id: daemon.info.node_id };
        session.write_raylet(&record).map_err(|error| error.to_string())?;
        wait_for_termination();
        if let Err(error) = daemon.deregister("stopped by manta stop") {
            eprintln!("manta raylet: leaving the cluster: {error}");
        }
        session.remove(RAYLET);
        session.remove("pids/raylet.pid");
        Ok(())
    };
    exit(run(), "raylet")
}

fn exit(outcome: Result<(), String>, name: &str) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(reason) => {
            eprintln!("manta {name}: {reason}");
            ExitCode::FAILURE
        }
    }
}

/// Blocks until SIGTERM or SIGINT arrives.
fn wait_for_termination() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
    let Ok(runtime) = runtime else {
        // No runtime: the process can still be stopped (SIGTERM's default ends it).
        loop {
            std::thread::park();
        }
    };
    runtime.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(mut terminate), Ok(mut interrupt)) => {
                tokio::select! {
                    _ = terminate.recv() => {}
                    _ = interrupt.recv() => {}
                }
            }
            _ => std::future::pending::<()>().await,
        }
    });
}

/// `manta stop`'s options.
#[derive(Debug, Args)]
pub(crate) struct StopArgs {
    /// Send SIGKILL at once instead of letting the daemons leave the cluster.
    #[arg(long)]
    force: bool,
}

/// `manta stop`: stops every daemon of this host's sessions.
pub(crate) fn stop(args: StopArgs) -> ExitCode {
    let root = session::root();
    let mut daemons = Vec::new();
    for session in Session::all(&root) {
        let pids = match session.pids() {
            Ok(pids) => pids,
            Err(error) => {
                eprintln!("manta stop: {error}");
                continue;
            }
        };
        for (name, pid) in pids {
            if is_daemon_of(pid, &session) {
                daemons.push((session.clone(), name, pid));
            } else {
                // Gone (or the id now names another process): the record is stale.
                session.remove(&format!("pids/{name}.pid"));
            }
        }
    }
    if daemons.is_empty() {
        println!("No Manta daemons are running on this host.");
        return ExitCode::SUCCESS;
    }
    let signal = if args.force { libc::SIGKILL } else { libc::SIGTERM };
    for (_, _, pid) in &daemons {
        // SAFETY: a signal to a process this user started (checked by its command line).
        unsafe { libc::kill(*pid as libc::pid_t, signal) };
    }
    let deadline = Instant::now() + STOP_GRACE;
    while daemons.iter().any(|(session, _, pid)| is_daemon_of(*pid, session)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut killed = 0;
    for (session, name, pid) in &daemons {
        if is_daemon_of(*pid, session) {
            // SAFETY: as above.
            unsafe { libc::kill(*pid as libc::pid_t, libc::SIGKILL) };
            killed += 1;
        }
        session.remove(&format!("pids/{name}.pid"));
    }
    let count = daemons.len();
    match killed {
        0 => println!("Stopped {count} Manta daemon{}.", if count == 1 { "" } else { "s" }),
        _ => println!("Stopped {count} Manta daemons ({killed} killed after {STOP_GRACE:?})."),
    }
    ExitCode::SUCCESS
}

/// Whether `pid` is alive and is a daemon of `session` (its command line names the session).
fn is_daemon_of(pid: u32, session: &Session) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')));
    let dir = session.dir().as_os_str().as_encoded_bytes();
    !zombie && cmdline.split(|byte| *byte == 0).any(|arg| arg == dir)
}

/// `manta status`'s options.
#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// The GCS's address (default: this host's newest session).
    #[arg(long, value_name = "HOST:PORT", requires = "token")]
    address: Option<SocketAddr>,
    /// The cluster's join token (default: this host's newest session).
    #[arg(long)]
    token: Option<String>,
}

/// `manta status`: the cluster's nodes and resources.
pub(crate) fn status(args: StatusArgs) -> ExitCode {
    exit(print_status(&args), "status")
}

fn print_status(args: &StatusArgs) -> Result<(), String> {
    let (address, token) = match (&args.address, &args.token) {
        (Some(address), Some(token)) => (*address, token.clone()),
        _ => {
            let session = Session::latest(&session::root()).map_err(|error| error.to_string())?;
            // Stopped here: say so now, not after a connection attempt's timeout.
            let pids = session.pids().map_err(|error| error.to_string())?;
            if !pids.iter().any(|(_, pid)| is_daemon_of(*pid, &session)) {
                return Err(format!(
                    "this host's Manta daemons are not running (session {}); start them with `manta start`",
                    session.dir().display()
                ));
            }
            (session.gcs_address().map_err(|error| error.to_string())?, read(&session, TOKEN)?)
        }
    };
    let token: JoinToken = token.parse().map_err(|error| format!("the token: {error}"))?;
    let client = ClusterClient::connect(address, &token).map_err(|error| error.to_string())?;
    let mut nodes = client.view().map_err(|error| error.to_string())?;
    // Alive first, then by registration order as the GCS keeps them.
    nodes.sort_by_key(|node| node.state != manta_node::NodeState::Alive);
    let alive: Vec<_> = nodes.iter().filter(|node| node.state == manta_node::NodeState::Alive).collect();
    println!("Manta cluster at {address}: {} node(s) alive, {} dead", alive.len(), nodes.len() - alive.len());
    println!();
    println!("{:<34} {:<22} {:<6} {:<30} LABELS", "NODE", "ADDRESS", "STATE", "RESOURCES (USED/TOTAL)");
    let mut used_in_all: std::collections::BTreeMap<String, (f64, f64)> = std::collections::BTreeMap::new();
    for node in &nodes {
        let alive = node.state == manta_node::NodeState::Alive;
        let usage = usage(&node.total, &node.available);
        if alive {
            for (name, used, total) in &usage {
                let entry = used_in_all.entry(name.clone()).or_default();
                entry.0 += used;
                entry.1 += total;
            }
        }
        let labels: Vec<String> = node.labels.iter().map(|(key, value)| format!("{key}={value}")).collect();
        println!(
            "{:<34} {:<22} {:<6} {:<30} {}",
            node.node_id.to_string(),
            node.address,
            if alive { "alive" } else { "dead" },
            usage
                .iter()
                .map(|(name, used, total)| format!("{name} {used}/{total}"))
                .collect::<Vec<_>>()
                .join(", "),
            labels.join(",")
        );
    }
    // Why the dead died, from the node table.
    for node in client.nodes().map_err(|error| error.to_string())? {
        if let Some(cause) = &node.death_cause {
            println!("{} died: {cause}", node.node_id);
        }
    }
    println!();
    let totals: Vec<String> =
        used_in_all.iter().map(|(name, (used, total))| format!("{name} {used}/{total}")).collect();
    println!("Resources in use (alive nodes): {}", totals.join(", "));
    let mut pending: std::collections::BTreeMap<&str, u32> = std::collections::BTreeMap::new();
    for node in &alive {
        for (demand, count) in &node.pending {
            *pending.entry(demand.as_str()).or_default() += count;
        }
    }
    let pending: Vec<String> =
        pending.iter().map(|(demand, count)| format!("{count}x {{{demand}}}")).collect();
    println!("Pending demand: {}", if pending.is_empty() { "none".to_owned() } else { pending.join(", ") });
    let mut actors: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    for actor in client.actors().map_err(|error| error.to_string())? {
        *actors.entry(format!("{:?}", actor.state)).or_default() += 1;
    }
    let actors: Vec<String> = actors.iter().map(|(state, count)| format!("{count} {state}")).collect();
    println!("Actors: {}", if actors.is_empty() { "none".to_owned() } else { actors.join(", ") });
    Ok(())
}

/// (name, used, total) for each resource a node offers.
fn usage(total: &[(String, f64)], available: &[(String, f64)]) -> Vec<(String, f64, f64)> {
    total
        .iter()
        .map(|(name, total)| {
            let free = available.iter().find(|(other, _)| other == name).map_or(0.0, |(_, free)| *free);
            (name.clone(), (total - free).max(0.0), *total)
        })
        .collect()
}
