//! The `manta` command line. So far: `manta microbenchmark`, Ray's microbenchmark with the same
//! figure names, on the embedded cluster (workers are this binary re-executed).

fn main() {
    // A worker process started by the raylet serves here and never returns.
    manta::enter_worker_if_spawned();
    manta::init_logging();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args.first().map(String::as_str) {
        Some("microbenchmark") => manta::microbenchmark::command(&args[1..]),
        Some("--help" | "-h") | None => {
            println!("usage: manta microbenchmark [--repeat N] [--scale F] [--filter TEXT] [--json] [--no-cold-start]");
            0
        }
        Some(other) => {
            eprintln!("manta: unknown command {other:?} (try `manta microbenchmark`)");
            2
        }
    };
    std::process::exit(code);
}
