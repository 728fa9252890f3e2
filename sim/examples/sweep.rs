//! Runs many seeds of the simulation and prints a summary: `cargo run --release -p manta-sim
//! --example sweep -- [SEEDS] [FIRST]`. Stops at the first broken invariant, with its seed.

fn main() {
    let mut args = std::env::args().skip(1);
    let seeds: u64 = args.next().and_then(|text| text.parse().ok()).unwrap_or(10_000);
    let first: u64 = args.next().and_then(|text| text.parse().ok()).unwrap_or(0);
    let configs = [
        ("default", manta_sim::SimConfig::default()),
        (
            "harsh",
            manta_sim::SimConfig {
                nodes: 3,
                crash_per_mille: 200,
                start_failure_per_mille: 100,
                link_break_per_mille: 50,
                latency_ms: (0, 100),
                ..manta_sim::SimConfig::default()
            },
        ),
    ];
    for (name, config) in configs {
        let started = std::time::Instant::now();
        let (mut events, mut finished, mut failed, mut faults) = (0, 0, 0, 0);
        let (mut alive, mut dead, mut restarts, mut discarded) = (0, 0, 0, 0);
        let (mut answered, mut calls_failed) = (0, 0);
        let mut kinds = std::collections::BTreeMap::<String, usize>::new();
        for seed in first..first + seeds {
            match manta_sim::run(seed, &config) {
                Ok(report) => {
                    events += report.events;
                    finished += report.finished;
                    failed += report.failed.values().sum::<usize>();
                    faults += report.faults;
                    alive += report.actors_alive;
                    dead += report.actors_dead;
                    restarts += report.actor_restarts;
                    discarded += report.discarded;
                    answered += report.actor_calls_answered;
                    calls_failed += report.actor_calls_failed;
                    for (kind, count) in report.failed {
                        *kinds.entry(kind).or_default() += count;
                    }
                }
                Err(failure) => {
                    eprintln!("{failure}");
                    std::process::exit(1);
                }
            }
        }
        println!(
            "{name}: {seeds} seeds, {events} events, {finished} tasks finished, {failed} failed, {faults} faults, \
             actors {alive} alive / {dead} dead after {restarts} restarts, {discarded} late replies discarded, \
             actor calls {answered} answered / {calls_failed} failed, in {:.1?}\n  failures by kind: {kinds:?}",
            started.elapsed()
        );
    }
}
