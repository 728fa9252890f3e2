//! The simulation over many seeds: every run must keep the invariants and finish, its tasks
//! settled and its actors alive or dead as the GCS says. A failure prints its seed; `replay`
//! runs one seed given in `MANTA_SIM_SEED`.

use manta_sim::{run, SimConfig};

/// Seeds run on every test run (each a few thousand events; the whole set takes seconds).
const SEEDS: u64 = 300;

#[test]
fn every_seed_keeps_the_invariants_and_settles_every_task() {
    let config = SimConfig::default();
    let (mut finished, mut faults) = (0, 0);
    let (mut alive, mut dead, mut restarts) = (0, 0, 0);
    let (mut answered, mut failed) = (0, 0);
    for seed in 0..SEEDS {
        let report = run(seed, &config).unwrap_or_else(|failure| panic!("{failure}"));
        assert_eq!(
            report.finished + report.failed.values().sum::<usize>(),
            config.submitters * config.tasks_per_submitter
        );
        assert_eq!(report.actors_alive + report.actors_dead, config.actors);
        assert_eq!(
            report.actor_calls_answered + report.actor_calls_failed,
            (config.submitters * config.actors * config.calls_per_actor) as u64
        );
        answered += report.actor_calls_answered;
        failed += report.actor_calls_failed;
        finished += report.finished;
        faults += report.faults;
        alive += report.actors_alive;
        dead += report.actors_dead;
        restarts += report.actor_restarts;
    }
    // The runs did real work and met real faults (a simulation that injects nothing proves
    // nothing).
    assert!(finished > SEEDS as usize * 40, "only {finished} tasks finished");
    assert!(faults > SEEDS, "only {faults} faults injected");
    // Actors lived, died (killed, failed constructors, out of restarts) and restarted.
    assert!(alive > 0 && dead > 0 && restarts > SEEDS / 2, "{alive} alive, {dead} dead, {restarts} restarts");
    // Actor calls were answered, and failed when their actors died.
    assert!(answered > SEEDS * 20 && failed > SEEDS, "{answered} calls answered, {failed} failed");
}

/// A harsh network and crashy workers: more breaks, more retries used up, more actor calls.
#[test]
fn harsh_seeds_still_keep_the_invariants() {
    let config = SimConfig {
        nodes: 3,
        crash_per_mille: 200,
        start_failure_per_mille: 100,
        link_break_per_mille: 50,
        latency_ms: (0, 100),
        calls_per_actor: 20,
        ..SimConfig::default()
    };
    for seed in 1_000..1_100 {
        run(seed, &config).unwrap_or_else(|failure| panic!("{failure}"));
    }
}

/// The same seed gives the same run (hash maps iterate in a different order in every run, so
/// any choice that depends on one shows up here).
#[test]
fn a_seed_replays_exactly() {
    let config = SimConfig { link_break_per_mille: 50, crash_per_mille: 200, ..SimConfig::default() };
    for seed in 0..20 {
        assert_eq!(run(seed, &config).unwrap(), run(seed, &config).unwrap(), "seed {seed}");
    }
}

/// Replays the seed in `MANTA_SIM_SEED` (printed by a failure); does nothing without it.
#[test]
fn replay() {
    let Some(seed) = std::env::var("MANTA_SIM_SEED").ok().and_then(|seed| seed.parse().ok()) else { return };
    match run(seed, &SimConfig::default()) {
        Ok(report) => println!("seed {seed}: {report:?}"),
        Err(failure) => panic!("{failure}"),
    }
}
