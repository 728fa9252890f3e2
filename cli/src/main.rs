//! The `manta` command line: `manta start`, `stop` and `status` (a cluster of daemons, started
//! in the background; see docs/decisions/cluster.md), `manta microbenchmark`, Ray's
//! microbenchmark with the same figure names, on the embedded cluster, and `manta sim`, a
//! workload on a simulated cluster of thousands of nodes.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cluster;
mod microbenchmark;
mod sim;

/// Manta: Ray, rebuilt in Rust.
#[derive(Debug, Parser)]
#[command(
    name = "manta",
    version,
    about = "Manta: Ray, rebuilt in Rust. Tasks, actors and objects over a cluster.",
    arg_required_else_help = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Ray's microbenchmark (same figure names and definitions) plus Manta's extra figures, on
    /// the embedded cluster. Each figure is printed once, as it completes.
    Microbenchmark(microbenchmark::Args),
    /// Start this host's Manta daemons in the background: a new cluster (--head) or a node that
    /// joins one (--address, --token).
    Start(cluster::StartArgs),
    /// Stop this host's Manta daemons (and their workers).
    Stop(cluster::StopArgs),
    /// The cluster's nodes and resources.
    Status(cluster::StatusArgs),
    /// A workload on a simulated cluster of thousands of nodes (one thread, one seed), through
    /// the same scheduling cores the daemons run; --compare puts policies side by side.
    Sim(sim::Args),
    /// The GCS daemon (started by `manta start --head`).
    #[command(hide = true)]
    Gcs(cluster::GcsArgs),
    /// A node's daemon (started by `manta start`).
    #[command(hide = true)]
    Raylet(cluster::RayletArgs),
}

#[manta::main]
fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Microbenchmark(args) => microbenchmark::command(args),
        Command::Start(args) => cluster::start(args),
        Command::Stop(args) => cluster::stop(args),
        Command::Status(args) => cluster::status(args),
        Command::Sim(args) => {
            // `manta sim ... | head` ends quietly when the reader goes (the default for a
            // printing command; it opens no socket whose peer could close on it).
            // SAFETY: signal(2) sets the process-wide disposition of one signal; no memory is involved.
            unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
            sim::command(args)
        }
        Command::Gcs(args) => cluster::gcs(args),
        Command::Raylet(args) => cluster::raylet(args),
    }
}
