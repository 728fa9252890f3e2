//! Worker output to the driver (Ray's `log_to_driver`): a worker of a running cluster's job
//! writes into pipes its raylet reads; each line is kept in the raylet's own log and sent, in
//! batches, to the job's driver, which prints it on its stderr with its origin: the worker's
//! node and pid, and what it ran, which the worker tells in lines of its own
//! ([`OUTPUT_ORIGIN_MARK`], Ray's `:task_name:` lines) that are not forwarded. Sending is
//! best effort and bounded: a slow or gone driver loses lines, never stalls the worker.

use std::os::fd::OwnedFd;
use std::time::Duration;

use manta_actor::ServiceRef;
use manta_proto::worker::{Owner, WorkerOutput, OUTPUT_ORIGIN_MARK};
use manta_proto::NodeId;
use tokio::io::AsyncBufReadExt as _;

/// Lines sent to the driver at once at most.
const BATCH_LINES: usize = 256;

/// How long a line waits for others to share its message.
const BATCH_WAIT: Duration = Duration::from_millis(20);

/// The longest origin kept, in characters (a worker names what it runs; it cannot fill
/// every forwarded message with it).
const ORIGIN_MAX: usize = 128;

/// The longest line carried whole (a longer one is cut, and says so).
const LINE_MAX: usize = 16 * 1024;

/// Reads `stream` (a worker's stdout, or its stderr) line by line until the worker closes it,
/// and forwards the lines to `driver`.
pub(crate) async fn forward(
    stream: OwnedFd,
    stderr: bool,
    (node_id, pid): (NodeId, u32),
    driver: ServiceRef<Owner>,
) {
    let receiver = match tokio::net::unix::pipe::Receiver::from_owned_fd(stream) {
        Ok(receiver) => receiver,
        Err(error) => {
            tracing::warn!(pid, %error, "a worker's output cannot be read");
            return;
        }
    };
    let mut lines = tokio::io::BufReader::new(receiver).lines();
    let mut batch = Vec::new();
    let mut origin = String::new();
    let from = (node_id, pid, stderr);
    loop {
        let next = if batch.is_empty() {
            lines.next_line().await
        } else {
            match tokio::time::timeout(BATCH_WAIT, lines.next_line()).await {
                Ok(next) => next,
                Err(_) => {
                    send(&driver, from, origin.clone(), std::mem::take(&mut batch));
                    continue;
                }
            }
        };
        match next {
            Ok(Some(line)) if line.starts_with(OUTPUT_ORIGIN_MARK) => {
                // The lines so far came from what ran before.
                if !batch.is_empty() {
                    send(&driver, from, origin.clone(), std::mem::take(&mut batch));
                }
                origin = line[OUTPUT_ORIGIN_MARK.len()..].chars().take(ORIGIN_MAX).collect();
            }
            Ok(Some(mut line)) => {
                // Kept in this node's log too.
                eprintln!("[worker pid={pid} {origin}] {line}");
                if line.len() > LINE_MAX {
                    let mut cut = LINE_MAX;
                    while !line.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    let length = line.len();
                    line.truncate(cut);
                    line.push_str(&format!(" [... cut, {length} bytes in all]"));
                }
                batch.push(line);
                if batch.len() >= BATCH_LINES {
                    send(&driver, from, origin.clone(), std::mem::take(&mut batch));
                }
            }
            // The worker is gone (or wrote bytes that are not text: then its output ends here).
            Ok(None) | Err(_) => break,
        }
    }
    if !batch.is_empty() {
        send(&driver, from, origin, batch);
    }
}

fn send(
    driver: &ServiceRef<Owner>,
    (node_id, pid, stderr): (NodeId, u32, bool),
    origin: String,
    lines: Vec<String>,
) {
    let driver = driver.clone();
    tokio::spawn(async move {
        let _ = driver.tell(WorkerOutput { node_id, pid, stderr, origin, lines }).await;
    });
}
