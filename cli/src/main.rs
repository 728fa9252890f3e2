//! The `manta` command line. So far: `manta microbenchmark`, Ray's microbenchmark with the same
//! figure names, on the embedded cluster (workers are this binary re-executed).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod microbenchmark;

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
}

#[manta::main]
fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Microbenchmark(args) => microbenchmark::command(args),
    }
}
