//! Two nodes in two network namespaces this test creates (`ip netns`, a veth pair, addresses
//! assigned inside them), the link between them slowed and made lossy with `tc netem` (5 ms
//! delay, 1% loss): a 100 MB object crosses it in both directions, bytes checked. Everything
//! between the nodes really crosses an interface, as between hosts. A kernel without netem
//! (this build machine's) gets a rate-limited link instead (`tbf`, 400 Mbit/s), and the test
//! says so. Needs root (CI runs as root); elsewhere it says why and passes without running.
//!
//! One test in this file: a worker (and the driver, run inside a namespace) re-execute this
//! binary.

use std::process::Command;

use manta::cluster_utils::{Cluster, NodeSpec};

/// Sums a large byte array where it runs.
#[manta::remote]
fn weigh(bytes: Vec<u8>) -> u64 {
    bytes.iter().map(|byte| u64::from(*byte)).sum()
}

/// A large value made where the task runs.
#[manta::remote]
fn make(len: usize, fill: u8) -> Vec<u8> {
    vec![fill; len]
}

/// Set for the driver this test runs inside the head's namespace.
const DRIVER: &str = "MANTA_TEST_NETNS_DRIVER";

const BYTES: usize = 100_000_000;

fn run(command: &str, args: &[&str]) -> Result<(), String> {
    let output = Command::new(command).args(args).output().map_err(|error| format!("{command}: {error}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("{command} {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim()))
    }
}

/// Two namespaces joined by a veth pair, removed on drop.
struct Link {
    namespaces: [String; 2],
}

impl Link {
    /// `10.213.<n>.1` and `.2` in namespaces `a` and `b`, the link shaped by `netem` (or, where
    /// the kernel lacks netem, limited to 400 Mbit/s). Returns the link and the shaping used.
    fn create(tag: u32, netem: &[&str]) -> Result<(Link, String), String> {
        let namespaces = [format!("manta-a-{tag}"), format!("manta-b-{tag}")];
        let link = Link { namespaces: namespaces.clone() };
        let [a, b] = &namespaces;
        let (veth_a, veth_b) = (format!("mva{}", tag % 100_000), format!("mvb{}", tag % 100_000));
        let subnet = tag % 250 + 1;
        let mut shaped = format!("netem {}", netem.join(" "));
        run("ip", &["netns", "add", a])?;
        run("ip", &["netns", "add", b])?;
        run("ip", &["link", "add", &veth_a, "type", "veth", "peer", "name", &veth_b])?;
        run("ip", &["link", "set", &veth_a, "netns", a])?;
        run("ip", &["link", "set", &veth_b, "netns", b])?;
        for (namespace, device, host) in [(a, &veth_a, 1), (b, &veth_b, 2)] {
            let address = format!("10.213.{subnet}.{host}/24");
            run("ip", &["-n", namespace, "addr", "add", &address, "dev", device])?;
            run("ip", &["-n", namespace, "link", "set", device, "up"])?;
            run("ip", &["-n", namespace, "link", "set", "lo", "up"])?;
            let qdisc = ["-n", namespace.as_str(), "qdisc", "add", "dev", device.as_str(), "root"];
            if let Err(error) = run("tc", &[&qdisc[..], &["netem"], netem].concat()) {
                if !error.contains("unknown") {
                    return Err(error);
                }
                run(
                    "tc",
                    &[&qdisc[..], &["tbf", "rate", "400mbit", "burst", "256kb", "latency", "50ms"]].concat(),
                )?;
                shaped = format!("tbf rate 400mbit (this kernel has no netem: {error})");
            }
        }
        Ok((link, shaped))
    }

    fn address(&self, host: u8, tag: u32) -> String {
        format!("10.213.{}.{host}", tag % 250 + 1)
    }

    /// `manta start` inside namespace `index`.
    fn inside(&self, index: usize) -> [&str; 4] {
        ["ip", "netns", "exec", &self.namespaces[index]]
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        for namespace in &self.namespaces {
            let _ = run("ip", &["netns", "del", namespace]);
        }
    }
}

#[test]
fn a_large_object_crosses_a_slow_lossy_link_both_ways() {
    if manta::is_worker_process() {
        let _ = manta::init();
        unreachable!("init never returns in a worker");
    }
    if std::env::var_os(DRIVER).is_some() {
        let config = manta::Config { address: Some("auto".to_owned()), ..manta::Config::default() };
        let _driver = manta::init_with(config).unwrap();
        let there = || make::options().resources([("far", 1.0)]);
        // Here to there: an argument pulled across the link.
        let data = manta::put(vec![3u8; BYTES]).unwrap();
        let weighed = weigh::options().resources([("far", 1.0)]).remote(&data).get().unwrap();
        assert_eq!(weighed, 3 * BYTES as u64);
        // There to here: a value made there, read here.
        let made = there().remote(BYTES, 7).get().unwrap();
        assert!(made.len() == BYTES && made.iter().all(|byte| *byte == 7), "the bytes arrived whole");
        println!("netns driver: done");
        std::process::exit(0);
    }
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: network namespaces need root");
        return;
    }
    let tag = std::process::id();
    let link = match Link::create(tag, &["delay", "5ms", "loss", "1%"]) {
        Ok((link, shaped)) => {
            eprintln!("the link between the nodes: {shaped}");
            link
        }
        Err(reason) => {
            eprintln!("skipped: network namespaces are not available here: {reason}");
            return;
        }
    };
    let (head_ip, far_ip) = (link.address(1, tag), link.address(2, tag));
    let head = NodeSpec::new().num_cpus(1).args(["--host", &head_ip]).wrapped(link.inside(0));
    let mut cluster = Cluster::start(env!("CARGO_BIN_EXE_manta"), head).unwrap();
    let far =
        NodeSpec::new().num_cpus(1).resource("far", 2.0).args(["--host", &far_ip]).wrapped(link.inside(1));
    cluster.add_node(far).unwrap();

    let driver = Command::new("ip")
        .args(["netns", "exec", &link.namespaces[0]])
        .arg(std::env::current_exe().unwrap())
        .args(["a_large_object_crosses_a_slow_lossy_link_both_ways", "--exact", "--nocapture"])
        .env(DRIVER, "1")
        .env("MANTA_TEMP_DIR", &cluster.head().root)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&driver.stdout);
    assert!(
        driver.status.success() && said.contains("netns driver: done"),
        "{said}\n{}",
        String::from_utf8_lossy(&driver.stderr)
    );
    // The daemons go before the namespaces they run in.
    drop(cluster);
    drop(link);
}
