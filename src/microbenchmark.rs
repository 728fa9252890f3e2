//! `manta microbenchmark`: Ray's microbenchmark (`python/ray/_private/ray_perf.py`), with the same
//! figure names and definitions, plus the extra figures Manta is judged by (cold start, idle
//! footprint, 200 actors, 1 GB put/get, the sync task round trip's median and p99).
//!
//! Every figure runs `repeat` times; the median is reported with the spread. Counts scale with
//! `scale` (1.0 is the real run; CI runs a tiny scale only to check that the code still works).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::{ActorHandle, Buffer, ObjectRef};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Repetitions of each figure (the median is reported).
    pub repeat: usize,
    /// Multiplies every operation count (1.0: the real run).
    pub scale: f64,
    /// Only figures whose name contains this.
    pub filter: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options { repeat: 3, scale: 1.0, filter: None }
    }
}

/// One figure: its name, unit and the value of each repetition.
#[derive(Debug, Clone)]
pub struct Figure {
    /// Ray's name for it (or Manta's, for the extra figures).
    pub name: String,
    /// The unit, such as `ops/s`.
    pub unit: String,
    /// One value per repetition.
    pub values: Vec<f64>,
    /// Why it was not measured, if it was not.
    pub skipped: Option<String>,
}

impl Figure {
    /// The median value.
    pub fn median(&self) -> f64 {
        let mut sorted = self.values.clone();
        sorted.sort_by(f64::total_cmp);
        match sorted.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => sorted[n / 2],
            n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
        }
    }

    /// The smallest and largest values.
    pub fn spread(&self) -> (f64, f64) {
        let min = self.values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = self.values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (min, max)
    }

    /// `name: value unit (min - max over N runs)`.
    pub fn line(&self) -> String {
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

    /// The figure as a JSON object.
    pub fn json(&self) -> String {
        let values: Vec<String> = self.values.iter().map(|value| format!("{value}")).collect();
        match &self.skipped {
            Some(reason) => {
                format!("{{\"name\":\"{}\",\"skipped\":\"{}\"}}", self.name, reason.replace('"', "'"))
            }
            None => format!(
                "{{\"name\":\"{}\",\"unit\":\"{}\",\"median\":{},\"values\":[{}]}}",
                self.name,
                self.unit,
                self.median(),
                values.join(",")
            ),
        }
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
#[crate::remote]
fn small_value() -> u8 {
    0
}

/// Submits `count` tasks and gets them (a client for the multi-client figures).
#[crate::remote]
fn submit_tasks(count: usize) -> usize {
    let refs: Vec<ObjectRef<u8>> = (0..count).map(|_| small_value::remote()).collect();
    crate::get_all(&refs).map_or(0, |values| values.len())
}

/// Calls `count` methods over `actors` round robin and gets them.
#[crate::remote]
fn call_actors(actors: Vec<ActorHandle<Sink>>, count: usize) -> usize {
    let refs: Vec<ObjectRef<u8>> =
        (0..count).map(|index| actors[index % actors.len()].small_value()).collect();
    crate::get_all(&refs).map_or(0, |values| values.len())
}

/// Like `call_actors`, with an object-store argument.
#[crate::remote]
fn call_actors_with_arg(
    actors: Vec<ActorHandle<Sink>>,
    count: usize,
    argument: ObjectRef<Buffer<u8>>,
) -> usize {
    let refs: Vec<ObjectRef<u8>> =
        (0..count).map(|index| actors[index % actors.len()].small_value_arg(&argument)).collect();
    crate::get_all(&refs).map_or(0, |values| values.len())
}

/// Calls `count` async-actor methods over `actors` round robin and gets them.
#[crate::remote]
fn call_async_actors(actors: Vec<ActorHandle<AsyncSink>>, count: usize) -> usize {
    let refs: Vec<ObjectRef<u8>> =
        (0..count).map(|index| actors[index % actors.len()].small_value()).collect();
    crate::get_all(&refs).map_or(0, |values| values.len())
}

/// Puts `count` small objects from a worker.
#[crate::remote]
fn put_small(count: usize) -> usize {
    (0..count).filter(|_| crate::put(0u8).is_ok()).count()
}

/// Puts `count` buffers of `bytes` from a worker.
#[crate::remote]
fn put_large(count: usize, bytes: usize) -> usize {
    let payload = Buffer::from(vec![1u8; bytes]);
    (0..count).filter(|_| crate::put(payload.clone()).is_ok()).count()
}

/// Ray's `Actor` of `ray_perf.py`.
#[crate::actor]
pub struct Sink;

#[crate::actor]
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
#[crate::actor]
pub struct AsyncSink;

#[crate::actor]
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

struct Runner {
    options: Options,
    figures: Vec<Figure>,
}

impl Runner {
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
        eprintln!("{}", figure.line());
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
    match crate::get_all(refs) {
        Ok(values) => values,
        Err(error) => panic!("a benchmark operation failed: {error}"),
    }
}

/// Runs the microbenchmark on the current cluster (`manta::init` must have run) and returns the
/// figures; each is also printed to stderr as it completes.
pub fn run(options: Options) -> Vec<Figure> {
    let mut runner = Runner { options, figures: Vec::new() };
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
    let argument = crate::put(Buffer::from(vec![0u8; 1024])).expect("a put");
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
    let small = crate::put(0u8).expect("a put");
    let gets = runner.count(10_000);
    runner.rate("single_client_get_calls_Plasma_Store", "ops/s", gets as f64, || {
        for _ in 0..gets {
            get(&small);
        }
    });
    runner.rate("single_client_put_calls_Plasma_Store", "ops/s", gets as f64, || {
        for _ in 0..gets {
            drop(crate::put(0u8).expect("a put"));
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
            drop(crate::put(payload.clone()).expect("a put"));
        });
    }
    let chunk = ((80usize << 20) as f64 * runner.options.scale.min(1.0)) as usize;
    runner.rate("multi_client_put_gigabytes", "GB/s", (10 * 10 * chunk) as f64 / 1e9, || {
        let tasks: Vec<_> = (0..10).map(|_| put_large::remote(10, chunk.max(1))).collect();
        get_all(&tasks);
    });
    let refs: Vec<ObjectRef<u8>> =
        (0..runner.count(10_000)).map(|_| crate::put(0u8).expect("a put")).collect();
    let container = crate::put(refs).expect("a put");
    runner.rate("single_client_get_object_containing_10k_refs", "ops/s", 1.0, || {
        drop(get(&container));
    });
    drop(container);
    let waits = runner.count(1000);
    runner.rate("single_client_wait_1k_refs", "ops/s", 1.0, || {
        let mut pending: Vec<_> = (0..waits).map(|_| small_value::remote()).collect();
        while !pending.is_empty() {
            let (_, rest) = crate::wait(&pending, 1, None).expect("a wait");
            pending = rest;
        }
    });
    runner.skip("placement_group_create/removal", "placement groups are not built yet");

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
            let reference = crate::put(payload.clone()).expect("a put");
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
            let _ = crate::kill(actor);
        }
    }
    runner.figures
}

/// Memory of this process and its descendants, summed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Footprint {
    /// Resident set size, bytes.
    pub rss: u64,
    /// Proportional set size (shared pages divided among the processes sharing them), bytes.
    pub pss: u64,
    /// Unique set size (private pages), bytes.
    pub uss: u64,
    /// Processes counted.
    pub processes: usize,
}

/// The memory of this process and every process it started (its workers), from
/// `/proc/<pid>/smaps_rollup`.
pub fn footprint() -> Footprint {
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
pub fn cold_start_probe() -> Result<(), crate::TaskError> {
    let _cluster = crate::init()
        .map_err(|error| crate::TaskError::Runtime { function: "init".into(), message: error.to_string() })?;
    small_value::remote().get()?;
    Ok(())
}

/// Times `repeat` cold starts of `exe --cold-start-probe` (spawn to exit) in milliseconds.
pub fn cold_starts(exe: &std::path::Path, repeat: usize) -> std::io::Result<Vec<f64>> {
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
pub fn idle_footprint(settle: Duration) -> Footprint {
    let refs: Vec<_> = (0..4).map(|_| small_value::remote()).collect();
    let _ = crate::get_all(&refs);
    std::thread::sleep(settle);
    footprint()
}

/// The `microbenchmark` command line (shared by `manta microbenchmark` and
/// `manta-bench microbenchmark`). Returns the process exit code.
///
/// `[--repeat N] [--scale F] [--filter TEXT] [--json] [--no-cold-start]`
pub fn command(args: &[String]) -> i32 {
    let mut options = Options::default();
    let mut json = false;
    let mut cold_start = true;
    let mut arguments = args.iter();
    while let Some(argument) = arguments.next() {
        let mut value =
            |what: &str| arguments.next().cloned().ok_or_else(|| format!("{argument} needs {what}"));
        let parsed: Result<(), String> = match argument.as_str() {
            "--cold-start-probe" => {
                return match cold_start_probe() {
                    Ok(()) => 0,
                    Err(error) => {
                        eprintln!("cold start probe: {error}");
                        1
                    }
                }
            }
            "--repeat" => value("a count").and_then(|text| {
                options.repeat = text.parse().map_err(|_| format!("--repeat {text}: not a count"))?;
                Ok(())
            }),
            "--scale" => value("a factor").and_then(|text| {
                options.scale = text.parse().map_err(|_| format!("--scale {text}: not a number"))?;
                Ok(())
            }),
            "--filter" => value("a name").map(|text| options.filter = Some(text)),
            "--json" => {
                json = true;
                Ok(())
            }
            "--no-cold-start" => {
                cold_start = false;
                Ok(())
            }
            "--help" | "-h" => {
                println!("usage: manta microbenchmark [--repeat N] [--scale F] [--filter TEXT] [--json] [--no-cold-start]");
                return 0;
            }
            other => Err(format!("unknown argument {other}")),
        };
        if let Err(error) = parsed {
            eprintln!("manta microbenchmark: {error}");
            return 2;
        }
    }
    if options.repeat == 0 || options.scale.is_nan() || options.scale <= 0.0 {
        eprintln!("manta microbenchmark: --repeat and --scale must be positive");
        return 2;
    }
    let mut figures = Vec::new();
    let wanted = |name: &str| options.filter.as_deref().is_none_or(|filter| name.contains(filter));
    if cold_start && wanted("cold_start") {
        match std::env::current_exe().and_then(|exe| cold_starts(&exe, options.repeat)) {
            Ok(values) => {
                let figure = Figure {
                    name: "cold_start_to_first_task_result".into(),
                    unit: "ms".into(),
                    values,
                    skipped: None,
                };
                eprintln!("{}", figure.line());
                figures.push(figure);
            }
            Err(error) => eprintln!("cold start: {error}"),
        }
    }
    if let Err(error) = crate::init() {
        eprintln!("manta microbenchmark: {error}");
        return 1;
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
            eprintln!("{} ({} processes)", figure.line(), idle.processes);
            figures.push(figure);
        }
    }
    figures.extend(run(options));
    if json {
        let objects: Vec<String> = figures.iter().map(Figure::json).collect();
        println!("[{}]", objects.join(",\n"));
    } else {
        for figure in &figures {
            println!("{}", figure.line());
        }
    }
    0
}
