//! `manta-bench`: measures the actor bus across two processes on loopback, next to a raw quinn
//! ping-pong measured in the same run as the floor.
//!
//! `cargo run --release -p manta-bench -- bus [--rounds N] [--messages N] [--repeat N] [--quic-only]`
//! `cargo run --release -p manta-bench -- bulk [--bytes N] [--repeat N]`: raw quinn's bulk
//! throughput on loopback, the floor of transfers between nodes.
//!
//! Ray's microbenchmark figures are `manta microbenchmark` (the `manta-cli` package), which
//! `bench/compare-ray` runs side by side with Ray.
//!
//! Every figure is printed as `name: value unit` with the spread over the repeated runs.

mod bulk;
mod bus;
mod stats;

fn main() -> anyhow::Result<()> {
    manta::init_logging();
    if std::env::var(bus::SERVER_ROLE_ENV).is_ok() {
        return bus::serve();
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("bus") | None => bus::run(&bus::Options::parse(&args[args.len().min(1)..])?),
        Some("bulk") => bulk::run(&bulk::Options::parse(&args[1..])?),
        Some(other) => {
            anyhow::bail!("unknown benchmark {other:?}; available: bus, bulk (and `manta microbenchmark`)")
        }
    }
}
