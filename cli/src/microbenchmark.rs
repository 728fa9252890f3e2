//! `manta microbenchmark`: Ray's microbenchmark (`python/ray/_private/ray_perf.py`), with the same
//! figure names and definitions, plus the extra figures Manta is judged by (cold start, idle
//! footprint, 200 actors, 1 GB put/get, the sync task round trip's median and p99).
//!
//! Every figure runs `repeat` times; the median is reported with the spread. Counts scale with
//! `scale` (1.0 is the real run; CI runs a tiny scale only to check that the code still works).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use manta::{ActorHandle, Buffer, ObjectRef};

mod cluster;

/// What to run.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// Repetitions of each figure (the median is reported).
    pub(crate) repeat: usize,
    /// Multiplies every operation count (1.0: the real run).
    pub(crate) scale: f64,
    /// Only figures whose name contains this.
    pub(crate) filter: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options { repeat: 3, scale: 1.0, filter: None }
    }
}

/// One figure: its name, unit and the value of each repetition.
#[derive(Debug, Clone)]
pub(crate) struct Figure {
    /// Ray's name for it (or Manta's, for the extra figures).
    pub(crate) name: String,
    /// The unit, such as `ops/s`.
    pub(crate) unit: String,
    /// One value per repetition.
    pub(crate) values: Vec<f64>,
    /// Why it was not measured, if it was not.
    pub(crate) skipped: Option<String>,
}

impl Figure {
    /// The median value.
    pub(crate) fn median(&self) -> f64 {
        let mut sorted = self.values.clone();
        sorted.sort_by(f64::total_cmp);
        match sorted.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => sorted[n / 2],
            n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
        }
    }

    /// The smallest and largest values.
    pub(crate) fn spread(&self) -> (f64, f64) {
        let min = self.values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = self.values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (min, max)
    }

    /// `name: value unit (min - max over N runs)`.
    pub(crate) fn line(&self) -> String {
        match &self.skipped {
            Some(reason) => format!("{}: n/a ({reason})", self.name),
            None => {
                let (min, max) = self.spread();
                format!(
                    "{}: {} {} ({} - {} over {} runs)",
                    self.name,
                    number(self.median()),
                    self.unit,
                    number(min),
                    number(max),
                    self.values.len()
                )
            }
        }
    }
}

impl serde::Serialize for Figure {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("name", &self.name)?;
        match &self.skipped {
            Some(reason) => map.serialize_entry("skipped", reason)?,
            None => {
                map.serialize_entry("unit", &self.unit)?;
                map.serialize_entry("median", &self.median())?;
                map.serialize_entry("values", &self.values)?;
            }
        }
        map.end()
    }
}

fn number(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.4}")
    }
}

// ---- the remote functions and actors the figures use ----

/// Ray's `small_value`: returns a small value.
#[manta::remote]
fn small_value() -> u8 {
    0
}

/// Submits `count` tasks and gets them (a client for the multi-client figures).
#[manta::remote]
fn submit_tasks(count: usize) -> usize {
    let refs: Vec<ObjectRef<u8>> = (0..count).map(|_| small_value::remote()).collect();
    manta::get_all(&refs).map_or(0, |values| values.len())
}

/// Calls `count` methods over `actors` round robin and gets them.
#[manta::remote]
fn call_actors(actors: Vec<ActorHandle<Sink>>, count: usize) -> usize {
    let refs: Vec<ObjectRef<u8>> =
        (0..count).map(|index| actors[index % actors.len()].small_value()).collect();
    manta::get_all(&refs).map_or(0, |values| values.len())
}

/// Like `call_actors`, with an object-store argument.
#[manta::remote]
fn call_actors_with_arg(
    actors: Vec<ActorHandle<Sink>>,
    count: usize,
    argument: ObjectRef<Buffer<u8>>,
) -> usize {
    let refs: Vec<ObjectRef<u8>> =
        (0..count).map(|index| actors[index % actors.len()].small_value_arg(&argument)).collect();
    manta::get_all(&refs).map_or(0, |values| values.len())
}

/// Calls `count` async-actor methods over `actors` round robin and gets them.
#[manta::remote]
fn call_async_actors(actors: Vec<ActorHandle<AsyncSink>>, count: usize) -> usize {
    let refs: Vec<ObjectRef<u8>> =
        (0..count).map(|index| actors[index % actors.len()].small_value()).collect();
    manta::get_all(&refs).map_or(0, |values| values.len())
}

/// Puts `count` small objects from a worker.
#[manta::remote]
fn put_small(count: usize) -> usize {
    (0..count).filter(|_| manta::put(0u8).is_ok()).count()
}

/// Puts `count` buffers of `bytes` from a worker.
#[manta::remote]
fn put_large(count: usize, bytes: usize) -> usize {
    let payload = Buffer::from(vec![1u8; bytes]);
    (0..count).filter(|_| manta::put(payload.clone()).is_ok()).count()
}

/// Ray's `Actor` of `ray_perf.py`.
#[manta::actor]
pub(crate) struct Sink;

#[manta::actor]
impl Sink {
    fn new() -> Self {
        Sink
    }

    /// Returns a small value.
    fn small_value(&self) -> u8 {
        0
    }

    /// Returns a small value; takes an argument.
    fn small_value_arg(&self, _argument: Buffer<u8>) -> u8 {
        0
    }
}

/// Ray's `AsyncActor` of `ray_perf.py`.
#[manta::actor]
pub(crate) struct AsyncSink;

#[manta::actor]
impl AsyncSink {
    fn new() -> Self {
        AsyncSink
    }

    /// Returns a small value.
    async fn small_value(&self) -> u8 {
        0
    }

    /// Returns a small value; takes an argument.
    async fn small_value_with_arg(&self, _argument: u64) -> u8 {
        0
    }
}

// ---- measurement ----

struct Runner<'a> {
    options: Options,
    figures: Vec<Figure>,
    /// Prints a figure as it completes.
    report: &'a dyn Fn(&Figure),
}

impl Runner<'_> {
    fn wanted(&self, name: &str) -> bool {
        self.options.filter.as_deref().is_none_or(|filter| name.contains(filter))
    }

    fn count(&self, count: usize) -> usize {
        ((count as f64 * self.options.scale).round() as usize).max(1)
    }

    /// Times `body` (which performs `ops` operations) `repeat` times after one warm-up run;
    /// records operations per second.
    fn rate(&mut self, name: &str, unit: &str, ops: f64, mut body: impl FnMut()) {
        if !self.wanted(name) {
            return;
        }
        body();
        let values = (0..self.options.repeat)
            .map(|_| {
                let started = Instant::now();
                body();
                ops / started.elapsed().as_secs_f64()
            })
            .collect();
        self.push(Figure { name: name.to_owned(), unit: unit.to_owned(), values, skipped: None });
    }

    fn push(&mut self, figure: Figure) {
        (self.report)(&figure);
        self.figures.push(figure);
    }

    fn value(&mut self, name: &str, unit: &str, values: Vec<f64>) {
        self.push(Figure { name: name.to_owned(), unit: unit.to_owned(), values, skipped: None });
    }

    fn skip(&mut self, name: &str, reason: &str) {
        if self.wanted(name) {
            self.push(Figure {
                name: name.to_owned(),
                unit: String::new(),
                values: Vec::new(),
                skipped: Some(reason.to_owned()),
            });
        }
    }
}

fn get<T: serde::de::DeserializeOwned>(reference: &ObjectRef<T>) -> T {
    match reference.get() {
        Ok(value) => value,
        Err(error) => panic!("a benchmark operation failed: {error}"),
    }
}

fn get_all<T: serde::de::DeserializeOwned>(refs: &[ObjectRef<T>]) -> Vec<T> {
    match manta::get_all(refs) {
        Ok(values) => values,
        Err(error) => panic!("a benchmark operation failed: {error}"),
    }
}

/// Runs the microbenchmark on the current cluster (`manta::init` must have run) and returns the
/// figures; each is also handed to `report` as it completes.
pub(crate) fn run(options: Options, report: &dyn Fn(&Figure)) -> Vec<Figure> {
    let mut runner = Runner { options, figures: Vec::new(), report };
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let n_actors = (cpus / 2).max(1);

    // Tasks.
    let n = runner.count(1000);
    runner.rate("single_client_tasks_sync", "ops/s", n as f64, || {
        for _ in 0..n {
            get(&small_value::remote());
        }
    });
    runner.rate("single_client_tasks_async", "ops/s", n as f64, || {
        let refs: Vec<_> = (0..n).map(|_| small_value::remote()).collect();
        get_all(&refs);
    });
    let per_client = runner.count(10_000);
    runner.rate("multi_client_tasks_async", "ops/s", (4 * per_client) as f64, || {
        let clients: Vec<_> = (0..4).map(|_| submit_tasks::remote(per_client)).collect();
        get_all(&clients);
    });
    let batches = runner.count(5);
    runner.rate("single_client_tasks_and_get_batch", "ops/s", batches as f64, || {
        for _ in 0..batches {
            let refs: Vec<_> = (0..1000).map(|_| small_value::remote()).collect();
            get_all(&refs);
        }
    });

    // Actors.
    let sink = Sink::remote().expect("an actor");
    get(&sink.small_value());
    runner.rate("1_1_actor_calls_sync", "ops/s", n as f64, || {
        for _ in 0..n {
            get(&sink.small_value());
        }
    });
    runner.rate("1_1_actor_calls_async", "ops/s", n as f64, || {
        let refs: Vec<_> = (0..n).map(|_| sink.small_value()).collect();
        get_all(&refs);
    });
    let concurrent = Sink::options().max_concurrency(16).remote().expect("an actor");
    runner.rate("1_1_actor_calls_concurrent", "ops/s", n as f64, || {
        let refs: Vec<_> = (0..n).map(|_| concurrent.small_value()).collect();
        get_all(&refs);
    });
    let sinks: Vec<ActorHandle<Sink>> = (0..n_actors).map(|_| Sink::remote().expect("an actor")).collect();
    let calls = runner.count(1000) * n_actors;
    runner.rate("1_n_actor_calls_async", "ops/s", calls as f64, || {
        let refs: Vec<_> = (0..calls).map(|index| sinks[index % sinks.len()].small_value()).collect();
        get_all(&refs);
    });
    let per_task = runner.count(5000);
    runner.rate("n_n_actor_calls_async", "ops/s", (4 * per_task) as f64, || {
        let tasks: Vec<_> = (0..4).map(|_| call_actors::remote(sinks.clone(), per_task)).collect();
        get_all(&tasks);
    });
    let argument = manta::put(Buffer::from(vec![0u8; 1024])).expect("a put");
    runner.rate("n_n_actor_calls_with_arg_async", "ops/s", (4 * per_task) as f64, || {
        let tasks: Vec<_> =
            (0..4).map(|_| call_actors_with_arg::remote(sinks.clone(), per_task, argument.clone())).collect();
        get_all(&tasks);
    });
    let async_sink = AsyncSink::remote().expect("an actor");
    runner.rate("1_1_async_actor_calls_sync", "ops/s", n as f64, || {
        for _ in 0..n {
            get(&async_sink.small_value());
        }
    });
    runner.rate("1_1_async_actor_calls_async", "ops/s", n as f64, || {
        let refs: Vec<_> = (0..n).map(|_| async_sink.small_value()).collect();
        get_all(&refs);
    });
    runner.rate("1_1_async_actor_calls_with_args_async", "ops/s", n as f64, || {
        let refs: Vec<_> = (0..n).map(|index| async_sink.small_value_with_arg(index as u64)).collect();
        get_all(&refs);
    });
    let async_sinks: Vec<ActorHandle<AsyncSink>> =
        (0..n_actors).map(|_| AsyncSink::remote().expect("an actor")).collect();
    runner.rate("1_n_async_actor_calls_async", "ops/s", calls as f64, || {
        let refs: Vec<_> =
            (0..calls).map(|index| async_sinks[index % async_sinks.len()].small_value()).collect();
        get_all(&refs);
    });
    runner.rate("n_n_async_actor_calls_async", "ops/s", (4 * per_task) as f64, || {
        let tasks: Vec<_> =
            (0..4).map(|_| call_async_actors::remote(async_sinks.clone(), per_task)).collect();
        get_all(&tasks);
    });

    // Objects.
    let small = manta::put(0u8).expect("a put");
    let gets = runner.count(10_000);
    runner.rate("single_client_get_calls_Plasma_Store", "ops/s", gets as f64, || {
        for _ in 0..gets {
            get(&small);
        }
    });
    runner.rate("single_client_put_calls_Plasma_Store", "ops/s", gets as f64, || {
        for _ in 0..gets {
            drop(manta::put(0u8).expect("a put"));
        }
    });
    let puts_per_task = runner.count(100);
    runner.rate("multi_client_put_calls_Plasma_Store", "ops/s", (10 * puts_per_task) as f64, || {
        let tasks: Vec<_> = (0..10).map(|_| put_small::remote(puts_per_task)).collect();
        get_all(&tasks);
    });
    let large = ((800usize << 20) as f64 * runner.options.scale.min(1.0)) as usize;
    if runner.wanted("single_client_put_gigabytes") {
        let payload = Buffer::from(vec![1u8; large.max(1)]);
        runner.rate("single_client_put_gigabytes", "GB/s", large as f64 / 1e9, || {
            drop(manta::put(payload.clone()).expect("a put"));
        });
    }
    let chunk = ((80usize << 20) as f64 * runner.options.scale.min(1.0)) as usize;
    runner.rate("multi_client_put_gigabytes", "GB/s", (10 * 10 * chunk) as f64 / 1e9, || {
        let tasks: Vec<_> = (0..10).map(|_| put_large::remote(10, chunk.max(1))).collect();
        get_all(&tasks);
    });
    let refs: Vec<ObjectRef<u8>> =
        (0..runner.count(10_000)).map(|_| manta::put(0u8).expect("a put")).collect();
    let container = manta::put(refs).expect("a put");
    runner.rate("single_client_get_object_containing_10k_refs", "ops/s", 1.0, || {
        drop(get(&container));
    });
    drop(container);
    let waits = runner.count(1000);
    runner.rate("single_client_wait_1k_refs", "ops/s", 1.0, || {
        let mut pending: Vec<_> = (0..waits).map(|_| small_value::remote()).collect();
        while !pending.is_empty() {
            let (_, rest) = manta::wait(&pending, 1, None).expect("a wait");
            pending = rest;
        }
    });
    // Ray's definition: groups of one small bundle created, waited for together, removed.
    let groups = runner.count(100);
    runner.rate("placement_group_create/removal", "ops/s", groups as f64, || {
        let created: Vec<_> = (0..groups)
            .map(|_| {
                manta::placement_group([[("CPU", 0.001)]], manta::PlacementStrategy::StrictPack)
                    .expect("a placement group")
            })
            .collect();
        let ready: Vec<_> = created.iter().map(|group| group.ready().expect("its ready ref")).collect();
        manta::get_all(&ready).expect("every group ready");
        for group in &created {
            manta::remove_placement_group(group).expect("a removal");
        }
    });

    // Extra figures.
    if runner.wanted("task_round_trip") {
        let mut latencies: Vec<f64> = (0..runner.count(2000))
            .map(|_| {
                let started = Instant::now();
                get(&small_value::remote());
                started.elapsed().as_secs_f64() * 1e6
            })
            .collect();
        latencies.sort_by(f64::total_cmp);
        let median = latencies[latencies.len() / 2];
        let p99 = latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)];
        runner.value("task_round_trip_median", "µs", vec![median]);
        runner.value("task_round_trip_p99", "µs", vec![p99]);
    }
    if runner.wanted("put_get_1gb") {
        let gib = ((1usize << 30) as f64 * runner.options.scale.min(1.0)) as usize;
        let payload = Buffer::from(vec![7u8; gib.max(1)]);
        let (mut puts, mut gets) = (Vec::new(), Vec::new());
        for _ in 0..runner.options.repeat {
            let started = Instant::now();
            let reference = manta::put(payload.clone()).expect("a put");
            puts.push(gib as f64 / 1e9 / started.elapsed().as_secs_f64());
            let started = Instant::now();
            let view = get(&reference);
            gets.push(started.elapsed().as_secs_f64() * 1e6);
            assert_eq!(view.len(), payload.len());
        }
        runner.value("put_get_1gb_put", "GB/s", puts);
        runner.value("put_get_1gb_get", "µs", gets);
        // The floor: a plain copy into fresh memory, in the same run.
        let mut copies = Vec::new();
        for _ in 0..runner.options.repeat {
            let started = Instant::now();
            let copy = payload.as_bytes().to_vec();
            copies.push(gib as f64 / 1e9 / started.elapsed().as_secs_f64());
            drop(copy);
        }
        runner.value("memcpy_fresh_1gb", "GB/s", copies);
    }
    if runner.wanted("actors_200") {
        let count = runner.count(200);
        let before = footprint();
        let available_before = mem_available();
        let started = Instant::now();
        let actors: Vec<ActorHandle<Sink>> = (0..count).map(|_| Sink::remote().expect("an actor")).collect();
        let refs: Vec<_> = actors.iter().map(|actor| actor.small_value()).collect();
        get_all(&refs);
        let elapsed = started.elapsed();
        let available_after = mem_available();
        let after = footprint();
        runner.value("actors_200_create_and_call", "s", vec![elapsed.as_secs_f64()]);
        runner.value(
            "actors_200_memory_rss",
            "MiB",
            vec![(after.rss.saturating_sub(before.rss)) as f64 / 1048576.0],
        );
        runner.value(
            "actors_200_memory_uss",
            "MiB",
            vec![(after.uss.saturating_sub(before.uss)) as f64 / 1048576.0],
        );
        runner.value(
            "actors_200_memory_pss",
            "MiB",
            vec![(after.pss.saturating_sub(before.pss)) as f64 / 1048576.0],
        );
        // Ray's definition (bench_i_many_actors.py): the system-wide drop of MemAvailable, which
        // counts shared pages once. Noisy: anything else running on the machine moves it too.
        if let (Some(before), Some(after)) = (available_before, available_after) {
            runner.value(
                "actors_200_memavailable_drop",
                "MiB",
                vec![before.saturating_sub(after) as f64 / 1048576.0],
            );
        }
        for actor in &actors {
            let _ = manta::kill(actor);
        }
    }
    // Only when asked for by name (`--filter actors_10000`): it holds 10,000 processes for
    // minutes, which is no part of Ray's suite.
    if runner.options.filter.is_some() && runner.wanted("actors_10000_create_and_call") {
        // Thousands of live actors at once: each holds a worker process, a lease watch at the
        // raylet and a watch at the actor manager (a deadlock at about 1,024 before they were
        // parked outside the mailboxes).
        let count = runner.count(10_000);
        let started = Instant::now();
        let created: Result<Vec<ActorHandle<Sink>>, _> = (0..count).map(|_| Sink::remote()).collect();
        let outcome = created.map_err(|error| error.to_string()).and_then(|actors| {
            let refs: Vec<_> = actors.iter().map(|actor| actor.small_value()).collect();
            let called = manta::get_all(&refs).map(drop).map_err(|error| error.to_string());
            for actor in &actors {
                let _ = manta::kill(actor);
            }
            called
        });
        match outcome {
            Ok(()) => {
                runner.value("actors_10000_create_and_call", "s", vec![started.elapsed().as_secs_f64()])
            }
            Err(error) => runner.skip("actors_10000_create_and_call", &format!("failed: {error}")),
        }
    }
    runner.figures
}

/// Memory of this process and its descendants, summed.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Footprint {
    /// Resident set size, bytes.
    pub(crate) rss: u64,
    /// Proportional set size (shared pages divided among the processes sharing them), bytes.
    pub(crate) pss: u64,
    /// Unique set size (private pages), bytes.
    pub(crate) uss: u64,
    /// Processes counted.
    pub(crate) processes: usize,
}

/// The memory of this process and every process it started (its workers), from
/// `/proc/<pid>/smaps_rollup`.
pub(crate) fn footprint() -> Footprint {
    let mut parents: BTreeMap<u32, u32> = BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
            // The parent pid is the second field after the parenthesised command name.
            let Some(after) = stat.rfind(')').map(|index| &stat[index + 1..]) else { continue };
            if let Some(parent) = after.split_whitespace().nth(1).and_then(|field| field.parse().ok()) {
                parents.insert(pid, parent);
            }
        }
    }
    let root = std::process::id();
    let mut members = vec![root];
    let mut changed = true;
    while changed {
        changed = false;
        for (pid, parent) in &parents {
            if members.contains(parent) && !members.contains(pid) {
                members.push(*pid);
                changed = true;
            }
        }
    }
    let mut total = Footprint::default();
    for pid in members {
        let Ok(rollup) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) else { continue };
        let field = |name: &str| -> u64 {
            rollup
                .lines()
                .find(|line| line.starts_with(name))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<u64>().ok())
                .map_or(0, |kib| kib * 1024)
        };
        total.rss += field("Rss:");
        total.pss += field("Pss:");
        total.uss += field("Private_Clean:") + field("Private_Dirty:");
        total.processes += 1;
    }
    total
}

/// `MemAvailable` of `/proc/meminfo`, bytes.
fn mem_available() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|line| line.starts_with("MemAvailable:"))?;
    line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kib| kib * 1024)
}

/// The cold-start probe: what a fresh process does between its start and its first task result.
/// `manta microbenchmark` runs itself with `--cold-start-probe` and times it.
pub(crate) fn cold_start_probe() -> Result<(), manta::TaskError> {
    let _cluster = manta::init()
        .map_err(|error| manta::TaskError::unreachable("init", "the embedded cluster", error))?;
    small_value::remote().get()?;
    Ok(())
}

/// Times `repeat` cold starts of `exe --cold-start-probe` (spawn to exit) in milliseconds.
pub(crate) fn cold_starts(exe: &std::path::Path, repeat: usize) -> std::io::Result<Vec<f64>> {
    (0..repeat)
        .map(|_| {
            let started = Instant::now();
            let status = std::process::Command::new(exe)
                .args(["microbenchmark", "--cold-start-probe"])
                .stdout(std::process::Stdio::null())
                .status()?;
            if !status.success() {
                return Err(std::io::Error::other(format!("the probe failed: {status}")));
            }
            Ok(started.elapsed().as_secs_f64() * 1000.0)
        })
        .collect()
}

/// The idle footprint: this process and its workers after `settle`, with the cluster up and
/// its pooled workers started by one task round.
pub(crate) fn idle_footprint(settle: Duration) -> Footprint {
    let refs: Vec<_> = (0..4).map(|_| small_value::remote()).collect();
    let _ = manta::get_all(&refs);
    std::thread::sleep(settle);
    footprint()
}

/// `manta microbenchmark`'s arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Repetitions of each figure; the median is reported with the spread.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    repeat: u32,
    /// Multiplies every operation count (1.0 is the real run; CI runs 0.01 only to check that
    /// the code still works).
    #[arg(long, default_value_t = 1.0, value_parser = positive_scale, allow_negative_numbers = true)]
    scale: f64,
    /// Only the figures whose name contains this text (`actors_10000_create_and_call`, which
    /// holds 10,000 processes for minutes, runs only when a filter names it).
    #[arg(long, value_name = "TEXT")]
    filter: Option<String>,
    /// Print the figures as one JSON array on stdout, at the end, instead of a line each.
    #[arg(long)]
    json: bool,
    /// Skip the cold-start figure (which starts this binary again several times).
    #[arg(long)]
    no_cold_start: bool,
    /// The two-node figures instead: a head and a second node, each started with `manta start`
    /// on this host (QUIC between them), this process the driver on the head.
    #[arg(long)]
    cluster: bool,
    /// Internal: the process the cold-start figure times.
    #[arg(long, hide = true)]
    cold_start_probe: bool,
}

fn positive_scale(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(scale) if scale.is_finite() && scale > 0.0 => Ok(scale),
        _ => Err(format!("{text:?} is not a positive number")),
    }
}

/// Runs `manta microbenchmark`; the exit code: 0, 1 when the cluster or a figure failed, 2 when
/// the filter matches no figure.
pub(crate) fn command(args: Args) -> std::process::ExitCode {
    use std::process::ExitCode;
    if args.cold_start_probe {
        return match cold_start_probe() {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("cold start probe: {error}");
                ExitCode::FAILURE
            }
        };
    }
    let options = Options { repeat: args.repeat as usize, scale: args.scale, filter: args.filter.clone() };
    let report = |figure: &Figure| {
        if !args.json {
            println!("{}", figure.line());
        }
    };
    let mut figures = Vec::new();
    if args.cluster {
        match cluster::run(options.clone(), &report) {
            Ok(measured) => figures = measured,
            Err(error) => {
                eprintln!("manta microbenchmark --cluster: {error}");
                return ExitCode::FAILURE;
            }
        }
        return finish(&args, figures);
    }
    let wanted = |name: &str| options.filter.as_deref().is_none_or(|filter| name.contains(filter));
    if !args.no_cold_start && wanted("cold_start") {
        match std::env::current_exe().and_then(|exe| cold_starts(&exe, options.repeat)) {
            Ok(values) => {
                let figure = Figure {
                    name: "cold_start_to_first_task_result".into(),
                    unit: "ms".into(),
                    values,
                    skipped: None,
                };
                report(&figure);
                figures.push(figure);
            }
            Err(error) => eprintln!("cold start: {error}"),
        }
    }
    if let Err(error) = manta::init() {
        eprintln!("manta microbenchmark: {error}");
        return ExitCode::FAILURE;
    }
    if wanted("idle_footprint") {
        let idle = idle_footprint(Duration::from_millis(300));
        for (name, bytes) in [
            ("idle_footprint_uss", idle.uss),
            ("idle_footprint_pss", idle.pss),
            ("idle_footprint_rss", idle.rss),
        ] {
            let figure = Figure {
                name: name.into(),
                unit: "MiB".into(),
                values: vec![bytes as f64 / 1048576.0],
                skipped: None,
            };
            report(&figure);
            figures.push(figure);
        }
    }
    figures.extend(run(options, &report));
    finish(&args, figures)
}

/// Prints the figures as JSON when asked; the exit code.
fn finish(args: &Args, figures: Vec<Figure>) -> std::process::ExitCode {
    use std::process::ExitCode;
    if figures.is_empty() {
        eprintln!(
            "manta microbenchmark: no figure matches --filter {:?}",
            args.filter.as_deref().unwrap_or_default()
        );
        return ExitCode::from(2);
    }
    if args.json {
        match serde_json::to_string_pretty(&figures) {
            Ok(json) => println!("{json}"),
            Err(error) => {
                eprintln!("manta microbenchmark: {error}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
