//! Manta's quickstart: tasks, an actor, objects and `wait`, all running in worker processes of
//! this same binary, on the embedded cluster that `manta::init()` starts (no daemon to start).
//!
//! `cargo run --release --example quickstart`

use std::time::{Duration, Instant};

#[manta::remote]
fn square(x: i64) -> i64 {
    x * x
}

#[manta::remote]
fn where_am_i(label: String) -> (String, u32) {
    (label, std::process::id())
}

/// Sums a vector that arrives as a resolved `ObjectRef` argument.
#[manta::remote]
fn total(values: manta::Buffer<f32>) -> f64 {
    values.iter().map(|value| f64::from(*value)).sum()
}

#[manta::remote]
fn checked_sqrt(x: f64) -> Result<f64, String> {
    if x < 0.0 {
        Err(format!("cannot take the square root of {x}"))
    } else {
        Ok(x.sqrt())
    }
}

#[manta::remote]
fn sleepy(millis: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(millis));
    millis
}

#[manta::actor]
struct Counter {
    count: i64,
}

#[manta::actor]
impl Counter {
    fn new(start: i64) -> Self {
        Counter { count: start }
    }

    fn add(&mut self, by: i64) -> i64 {
        self.count += by;
        self.count
    }

    fn pid(&self) -> u32 {
        std::process::id()
    }
}

#[manta::main]
fn main() -> anyhow::Result<()> {
    manta::init_logging();
    let _cluster = manta::init()?;
    let driver = std::process::id();

    // Tasks.
    let started = Instant::now();
    let squares: Vec<manta::ObjectRef<i64>> = (0..20).map(square::remote).collect();
    let sum: i64 = manta::get_all(&squares)?.into_iter().sum();
    println!("tasks:   sum of squares 0..20 = {sum} ({:?}, in worker processes)", started.elapsed());
    assert_eq!(sum, (0..20).map(|x| x * x).sum::<i64>());
    let (label, pid) = where_am_i::remote("hello".to_owned()).get()?;
    println!("tasks:   {label} from worker pid {pid} (driver pid {driver})");
    assert_ne!(pid, driver, "the task ran in another process");

    // An actor: state kept between calls, calls in order.
    let counter = Counter::remote(100)?;
    let results: Vec<_> = (1..=5).map(|by| counter.add(by)).collect();
    let counts = manta::get_all(&results)?;
    println!("actor:   counter went {counts:?} in worker pid {}", counter.pid().get()?);
    assert_eq!(counts, vec![101, 103, 106, 110, 115]);
    // A task's result passed to the actor: resolved before the call runs.
    assert_eq!(counter.add(square::remote(3)).get()?, 124);

    // Objects: a large buffer put once into shared memory, passed by reference.
    let values = manta::put(manta::Buffer::from(vec![0.5f32; 1 << 20]))?;
    let view = values.get()?;
    println!(
        "objects: put 4 MiB; get is a zero-copy view into shared memory: {}",
        manta::is_in_object_store(view.as_bytes())
    );
    assert_eq!(total::remote(&values).get()?, (1 << 20) as f64 * 0.5);

    // wait: the first two of three to finish.
    let naps = vec![sleepy::remote(300), sleepy::remote(10), sleepy::remote(20)];
    let (ready, pending) = manta::wait(&naps, 2, Some(Duration::from_secs(30)))?;
    println!("wait:    {} ready, {} pending", ready.len(), pending.len());
    assert_eq!(manta::get_all(&ready)?.iter().sum::<u64>(), 30);

    // Errors say what failed, where.
    match checked_sqrt::remote(-4.0).get() {
        Err(error) => println!("errors:  (a deliberate failure) {error}"),
        Ok(value) => anyhow::bail!("sqrt(-4) returned {value}"),
    }
    Ok(())
}
