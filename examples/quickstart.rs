//! Manta's quickstart: tasks running in worker processes of this same binary, on the embedded
//! cluster that `manta::init()` starts (no daemon to start by hand).
//!
//! `cargo run --release --example quickstart`

use std::time::Instant;

#[manta::remote]
fn square(x: i64) -> i64 {
    x * x
}

#[manta::remote]
fn where_am_i(label: String) -> (String, u32) {
    (label, std::process::id())
}

#[manta::remote]
fn explode(message: String) -> i64 {
    panic!("{message}")
}

fn main() -> anyhow::Result<()> {
    manta::init_logging();
    // A worker process re-entering this binary serves tasks inside `init` and never returns.
    let _cluster = manta::init()?;

    let started = Instant::now();
    let squares: Vec<manta::ObjectRef<i64>> = (0..20).map(square::remote).collect();
    let total: i64 = squares.iter().map(|square| square.get()).sum::<Result<i64, _>>()?;
    println!("sum of squares 0..20 = {total} ({:?}, tasks in worker processes)", started.elapsed());
    assert_eq!(total, (0..20).map(|x| x * x).sum::<i64>());

    let (label, pid) = where_am_i::remote("hello".to_owned()).get()?;
    println!("{label} from worker pid {pid} (driver pid {})", std::process::id());
    assert_ne!(pid, std::process::id(), "the task ran in another process");

    match explode::remote("on purpose".to_owned()).get() {
        Err(error) => println!("a failing task reports: {error}"),
        Ok(value) => anyhow::bail!("a panicking task returned {value}"),
    }
    Ok(())
}
