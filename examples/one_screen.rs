//! The README's "In one screen" program, kept here so that CI compiles it (without warnings)
//! and runs it; `tests/tidy.rs` checks that the README shows exactly this code.

// README: begin
#[manta::remote]
fn square(x: i64) -> i64 {
    x * x
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
}

#[manta::main] // a worker re-entering this binary never runs main
fn main() -> anyhow::Result<()> {
    let _cluster = manta::init()?; // the embedded cluster: no daemon to start
    let squares: Vec<manta::ObjectRef<i64>> = (0..20).map(square::remote).collect();
    assert_eq!(manta::get_all(&squares)?.iter().sum::<i64>(), 2470);

    let counter = Counter::options().name("counter").max_restarts(1).remote(100)?;
    assert_eq!(counter.add(&squares[3]).get()?, 109); // a ref argument is resolved first

    let big = manta::put(manta::Buffer::from(vec![0.5f32; 1 << 20]))?;
    let view: manta::Buffer<f32> = big.get()?; // a zero-copy view into shared memory
    assert_eq!(view.len(), 1 << 20);

    let timeout = Some(std::time::Duration::from_secs(10));
    let (ready, pending) = manta::wait(&squares, 5, timeout)?;
    assert_eq!((ready.len(), pending.len()), (5, 15));
    println!("sum of squares, actor, 4 MiB zero-copy object and wait: all as expected");
    Ok(())
}
// README: end
