//! The runtime under load, as a user drives it: many pipelined calls on one actor (every
//! argument arrives, every answer is right), thousands of live actors (no deadlock when parked
//! watches and lease requests outnumber a mailbox), and huge error messages (a `Failed`, not a
//! worker death). Each test is the regression test of a defect found that way.

use std::sync::OnceLock;

use manta::{Config, ObjectRef, TaskError};

fn cluster() {
    static CLUSTER: OnceLock<manta::Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let config = Config { num_cpus: 2, max_workers: Some(4), max_retries: 1, ..Config::default() };
        manta::init_with(config).unwrap()
    });
}

#[manta::actor]
struct Counter {
    count: u64,
}

#[manta::actor]
impl Counter {
    fn new(start: u64) -> Self {
        Counter { count: start }
    }

    fn add(&mut self, by: u64) -> u64 {
        self.count += by;
        self.count
    }

    fn count(&self) -> u64 {
        self.count
    }

    fn pid(&self) -> u32 {
        std::process::id()
    }
}

/// Regression (data loss): a call sent from the calling thread that found the send queue full
/// was taken back without its arguments when it had no retries left, and failed with
/// `argument 0 is missing`. 100,000 pipelined calls with default options fill the queue often
/// on a fast machine; here the actor's worker is stopped while they are sent, so the socket and
/// then the send queue (8,192 frames) fill on any machine.
#[test]
fn a_hundred_thousand_pipelined_calls_all_arrive_with_their_arguments() {
    cluster();
    const CALLS: u64 = 100_000;
    let counter = Counter::remote(0).unwrap();
    let pid = counter.pid().get().unwrap() as libc::pid_t;
    // SAFETY: signals to the actor's worker process, which this test's cluster started.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let results: Vec<ObjectRef<u64>> = (1..=CALLS).map(|by| counter.add(by)).collect();
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let mut expected = 0;
    for (index, result) in results.iter().enumerate() {
        let by = index as u64 + 1;
        expected += by;
        assert_eq!(result.get().unwrap(), expected, "call {by} of {CALLS}");
    }
    assert_eq!(counter.count().get().unwrap(), CALLS * (CALLS + 1) / 2);
}

#[manta::actor]
struct Echo {
    index: u64,
}

#[manta::actor]
impl Echo {
    fn new(index: u64) -> Self {
        Echo { index }
    }

    fn index(&self) -> u64 {
        self.index
    }
}

/// Regression (deadlock): each live actor keeps a lease watch parked at the raylet and a watch
/// at the actor manager; once they filled a mailbox (1,024 places) new workers could no longer
/// register and every later call hung.
#[test]
fn two_thousand_actors_are_created_and_each_called_once() {
    cluster();
    const ACTORS: u64 = 2_000;
    let actors: Vec<manta::ActorHandle<Echo>> =
        (0..ACTORS).map(|index| Echo::remote(index).unwrap()).collect();
    let answers: Vec<ObjectRef<u64>> = actors.iter().map(|actor| actor.index()).collect();
    let values = manta::get_all(&answers).unwrap();
    assert_eq!(values, (0..ACTORS).collect::<Vec<u64>>());
    for actor in &actors {
        assert!(manta::kill(actor).unwrap());
    }
}

#[manta::remote]
fn fail_with(bytes: usize) -> Result<u64, String> {
    Err(format!("head{}tail", "x".repeat(bytes)))
}

#[manta::remote]
fn panic_with(bytes: usize) -> u64 {
    panic!("head{}tail", "y".repeat(bytes))
}

/// Regression: an error message larger than a frame (16 MiB) was reported as the worker's
/// death and retried; it is the task's failure, with the message cut in the middle.
#[test]
fn an_error_message_larger_than_a_frame_is_a_failure_with_the_message_cut() {
    cluster();
    for result in [fail_with::remote(20 << 20), panic_with::remote(20 << 20)] {
        match result.get() {
            Err(TaskError::Failed { message, .. }) => {
                assert!(message.len() < 1 << 20, "the message was cut: {} bytes", message.len());
                assert!(message.starts_with("head") || message.contains("head"), "{}", &message[..64]);
                assert!(message.contains("tail"), "the end is kept");
                assert!(message.contains("bytes cut"), "says that it was cut");
            }
            other => panic!("expected Failed, got {:?}", other.map_err(|error| error.to_string())),
        }
    }
}
