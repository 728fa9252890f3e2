//! `manta sim`: a workload on a simulated cluster (thousands of nodes, one thread, one seed)
//! through the same scheduling cores the daemons run, under one policy or several side by
//! side. See `sim/src/scale.rs` for what it drives and checks.

use std::process::ExitCode;
use std::time::Instant;

use manta_sim::scale::{simulate, Outcome, ScaleConfig};
use manta_sim::workload::Workload;

/// What `manta sim` takes.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Nodes in the cluster (the built-in workload; ignored with --workload).
    #[arg(long, default_value_t = 1_000)]
    nodes: usize,
    /// CPUs per node (the built-in workload).
    #[arg(long, default_value_t = 8)]
    cpus: u64,
    /// Tasks to run (the built-in workload: one CPU each, 100 ms to 1 s, submitted in the
    /// first second; a tenth SPREAD, a tenth reading a 16 MB argument).
    #[arg(long, default_value_t = 100_000)]
    tasks: usize,
    /// Drivers submitting them (the built-in workload).
    #[arg(long, default_value_t = 100)]
    drivers: usize,
    /// A workload description file instead of the built-in workload (the format is in
    /// sim/src/workload.rs: nodes, drivers, tasks, group, actors, join, kill, partition,
    /// network, sync).
    #[arg(long)]
    workload: Option<std::path::PathBuf>,
    /// The scheduling policy, by its registered name.
    #[arg(long, default_value = "hybrid")]
    policy: String,
    /// Several policies, comma-separated, side by side on the same workload and seed.
    #[arg(long, value_delimiter = ',')]
    compare: Vec<String>,
    /// The seed of every random choice (the same seed gives the same digest).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print each outcome as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub(crate) fn command(args: Args) -> ExitCode {
    let workload = match &args.workload {
        Some(path) => {
            let text = match std::fs::read_to_string(path) {
                Ok(text) => text,
                Err(error) => {
                    eprintln!("manta sim: cannot read {}: {error}", path.display());
                    return ExitCode::from(2);
                }
            };
            match Workload::parse(&text) {
                Ok(workload) => workload,
                Err(error) => {
                    eprintln!("manta sim: {}: {error}", path.display());
                    return ExitCode::from(2);
                }
            }
        }
        None => {
            if args.nodes == 0 || args.cpus == 0 || args.drivers == 0 {
                eprintln!("manta sim: --nodes, --cpus and --drivers must be positive");
                return ExitCode::from(2);
            }
            Workload::uniform(args.nodes, args.cpus, args.tasks, args.drivers)
        }
    };
    let policies = if args.compare.is_empty() { vec![args.policy.clone()] } else { args.compare.clone() };
    let names = manta::scheduling::policy_names();
    if let Some(unknown) = policies.iter().find(|policy| !names.contains(&policy.as_str())) {
        eprintln!("manta sim: no policy is registered as {unknown:?} (registered: {})", names.join(", "));
        return ExitCode::from(2);
    }
    if !args.json {
        println!(
            "workload: {} nodes, {} drivers, {} tasks in {} batches, {} groups, {} actors, {} cluster events; seed {}",
            workload.initial_nodes(),
            workload.drivers,
            workload.task_count(),
            workload.tasks.len(),
            workload.groups.len(),
            workload.actors.iter().map(|batch| batch.count).sum::<usize>(),
            workload.events.len(),
            args.seed
        );
    }
    let mut outcomes = Vec::new();
    for policy in &policies {
        let config = ScaleConfig { policy: policy.clone(), seed: args.seed, ..ScaleConfig::default() };
        let started = Instant::now();
        match simulate(&workload, &config) {
            Ok(outcome) => {
                let wall = started.elapsed().as_secs_f64();
                if args.json {
                    println!("{}", json(&outcome, wall));
                } else if policies.len() == 1 {
                    print_one(&outcome, wall);
                }
                outcomes.push((outcome, wall));
            }
            Err(failure) => {
                eprintln!("manta sim: {failure}");
                return ExitCode::FAILURE;
            }
        }
    }
    if policies.len() > 1 && !args.json {
        print_side_by_side(&outcomes);
    }
    ExitCode::SUCCESS
}

/// Utilisation over the run in ten buckets, as a line of bars.
fn sparkline(samples: &[f64]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    if samples.is_empty() {
        return String::new();
    }
    let buckets = samples.len().min(20);
    (0..buckets)
        .map(|bucket| {
            let from = bucket * samples.len() / buckets;
            let to = ((bucket + 1) * samples.len() / buckets).max(from + 1);
            let mean = samples[from..to].iter().sum::<f64>() / (to - from) as f64;
            BARS[((mean * 7.0).round() as usize).min(7)]
        })
        .collect()
}

fn rows(outcome: &Outcome, wall: f64) -> Vec<(String, String)> {
    let (used, fewest, median, most) = outcome.spread();
    let tasks = outcome.finished + outcome.failed.values().sum::<usize>();
    let mut rows = vec![
        ("wall time".into(), format!("{wall:.2} s")),
        ("simulated tasks per second".into(), format!("{:.0}", tasks as f64 / wall.max(1e-9))),
        ("events".into(), outcome.events.to_string()),
        ("makespan".into(), format!("{:.2} s", outcome.makespan_ms as f64 / 1_000.0)),
        ("finished".into(), outcome.finished.to_string()),
        (
            "failed".into(),
            if outcome.failed.is_empty() {
                "0".into()
            } else {
                outcome
                    .failed
                    .iter()
                    .map(|(why, count)| format!("{count} {why}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        ),
        ("CPU utilisation (mean)".into(), format!("{:.1}%", outcome.mean_utilisation() * 100.0)),
        ("CPU utilisation over time".into(), sparkline(&outcome.utilisation)),
        (
            "tasks per node (used/min/median/max)".into(),
            format!("{used}/{fewest}/{median}/{most} of {}", outcome.nodes),
        ),
        ("argument bytes read remotely".into(), format!("{:.1} GB", outcome.remote_bytes as f64 / 1e9)),
        ("spillbacks".into(), outcome.spillbacks.to_string()),
    ];
    for shape in &outcome.queueing {
        rows.push((
            format!("queueing p50/p99: {}", shape.shape),
            format!("{} / {} ms", shape.p50_ms, shape.p99_ms),
        ));
    }
    if outcome.groups_created + outcome.groups_pending > 0 {
        rows.push((
            "groups created (pending); p50/p99".into(),
            format!(
                "{} ({}); {} / {} ms",
                outcome.groups_created,
                outcome.groups_pending,
                outcome.group_latency_ms.0,
                outcome.group_latency_ms.1
            ),
        ));
    }
    if outcome.actors_completed + outcome.actors_failed.values().sum::<usize>() > 0 {
        rows.push((
            "actors completed (failed, restarts)".into(),
            format!(
                "{} ({}, {})",
                outcome.actors_completed,
                outcome.actors_failed.values().sum::<usize>(),
                outcome.actor_restarts
            ),
        ));
    }
    rows.push(("digest".into(), format!("{:016x}", outcome.digest)));
    rows
}

fn print_one(outcome: &Outcome, wall: f64) {
    println!("policy {}:", outcome.policy);
    let rows = rows(outcome, wall);
    let width = rows.iter().map(|(name, _)| name.chars().count()).max().unwrap_or(0);
    for (name, value) in rows {
        println!("  {name:<width$}  {value}");
    }
}

fn print_side_by_side(outcomes: &[(Outcome, f64)]) {
    let tables: Vec<Vec<(String, String)>> =
        outcomes.iter().map(|(outcome, wall)| rows(outcome, *wall)).collect();
    let width = tables[0].iter().map(|(name, _)| name.chars().count()).max().unwrap_or(0);
    let column = tables
        .iter()
        .flat_map(|table| table.iter().map(|(_, value)| value.chars().count()))
        .chain(outcomes.iter().map(|(outcome, _)| outcome.policy.len()))
        .max()
        .unwrap_or(0);
    print!("  {:<width$}", "");
    for (outcome, _) in outcomes {
        print!("  {:>column$}", outcome.policy);
    }
    println!();
    for (row, (name, _)) in tables[0].iter().enumerate() {
        print!("  {name:<width$}");
        for table in &tables {
            let value = table.get(row).map_or("", |(_, value)| value.as_str());
            print!("  {value:>column$}");
        }
        println!();
    }
}

fn json(outcome: &Outcome, wall: f64) -> serde_json::Value {
    let (used, fewest, median, most) = outcome.spread();
    serde_json::json!({
        "policy": outcome.policy,
        "seed": outcome.seed,
        "wall_seconds": wall,
        "events": outcome.events,
        "nodes": outcome.nodes,
        "finished": outcome.finished,
        "failed": outcome.failed,
        "makespan_ms": outcome.makespan_ms,
        "mean_utilisation": outcome.mean_utilisation(),
        "utilisation": outcome.utilisation,
        "queueing": outcome.queueing.iter().map(|shape| serde_json::json!({
            "shape": shape.shape, "tasks": shape.tasks, "p50_ms": shape.p50_ms, "p99_ms": shape.p99_ms,
        })).collect::<Vec<_>>(),
        "tasks_per_node": {"used": used, "min": fewest, "median": median, "max": most},
        "remote_bytes": outcome.remote_bytes,
        "spillbacks": outcome.spillbacks,
        "groups_created": outcome.groups_created,
        "groups_pending": outcome.groups_pending,
        "group_latency_ms": [outcome.group_latency_ms.0, outcome.group_latency_ms.1],
        "actors_completed": outcome.actors_completed,
        "actors_failed": outcome.actors_failed,
        "actor_restarts": outcome.actor_restarts,
        "digest": format!("{:016x}", outcome.digest),
    })
}
