//! Transport settings: every limit is named, with its unit last.

use std::time::Duration;

/// Limits and timings of a [`crate::Transport`]. The defaults suit a LAN cluster.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// Largest frame accepted or sent, in bytes; a larger one closes the connection.
    pub frame_bytes_max: usize,
    /// Largest bulk body accepted on one bulk stream, in bytes.
    pub bulk_bytes_max: u64,
    /// Default deadline of a call when the caller gives none.
    pub call_timeout: Duration,
    /// Deadline for a peer to complete the hello/ack or join exchange.
    pub handshake_timeout: Duration,
    /// Dial attempts before `connect` gives up.
    pub connect_attempts_max: u32,
    /// First wait between dial attempts; doubles up to `reconnect_backoff_max`.
    pub reconnect_backoff_initial: Duration,
    /// Longest wait between dial attempts.
    pub reconnect_backoff_max: Duration,
    /// Frames queued for one connection's writer before senders wait (backpressure).
    pub send_queue_frames_max: usize,
    /// Requests and one-way messages from one connection being handled at once; when all are
    /// busy the connection stops reading, and QUIC flow control slows the sender.
    pub inflight_dispatch_max: usize,
    /// Concurrent bulk streams a peer may open on one connection.
    pub bulk_streams_max: u32,
    /// Interval of QUIC keep-alives.
    pub keep_alive_interval: Duration,
    /// A connection silent for this long is closed.
    pub idle_timeout: Duration,
    /// Serve and prefer the local channel (a Unix socket, see `local.rs`) for peers on this
    /// host that run as the same user; `false` makes every connection QUIC with mutual TLS.
    pub local_channel: bool,
    /// The group of processes the local channel joins (a node of a cluster: its raylet, its
    /// workers and its drivers): only peers of the same scope meet over it, so that processes
    /// of two nodes on one host still talk QUIC, as nodes on two hosts would. `None`: this
    /// user's processes on this host (the embedded default). At most 32 ASCII letters, digits,
    /// `-` or `_`; any other value turns the local channel off, with a warning.
    pub local_scope: Option<String>,
}

impl TransportConfig {
    /// The settings of a running cluster's processes, in `local_scope`: a peer that vanished
    /// without closing (its process killed, its host gone) is found within 8 s by keep-alives
    /// each second, which ends the calls, leases and watches waiting on a dead node (Ray's gRPC
    /// keep-alives play this part). The defaults' 30 s suit one host, where the local channel
    /// sees a dead peer at once.
    pub fn cluster(local_scope: Option<String>) -> Self {
        TransportConfig {
            keep_alive_interval: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(8),
            local_scope,
            ..TransportConfig::default()
        }
    }
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            frame_bytes_max: 16 * 1024 * 1024,
            bulk_bytes_max: 1 << 40,
            call_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            connect_attempts_max: 5,
            reconnect_backoff_initial: Duration::from_millis(50),
            reconnect_backoff_max: Duration::from_secs(2),
            send_queue_frames_max: 8192,
            inflight_dispatch_max: 4096,
            bulk_streams_max: 256,
            keep_alive_interval: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            local_channel: true,
            local_scope: None,
        }
    }
}
