//! Manta: Ray, rebuilt in Rust. Stateless tasks, stateful actors and immutable objects over a
//! cluster whose every component is an actor talking over mutually authenticated QUIC.
//!
//! This crate is the user-facing facade. Today it offers the foundation:
//! - [`actor`]: the location-transparent actor bus (spawn, supervise, register, ask/tell).
//! - [`init`], [`remote`], [`ObjectRef`]: tasks. `init()` starts the embedded cluster (GCS,
//!   raylet and transport inside the driver; workers are this binary re-executed), and
//!   `f::remote(args)` runs a `#[manta::remote]` function in a worker process.
//! - [`transport`]: cluster identities, join tokens and the QUIC transport under the bus.
//! - [`init_logging`]: the logging set-up every Manta process shares.

pub use manta_actor as actor;
pub use manta_macros::remote;
pub use manta_transport as transport;
pub use manta_worker::registry;
pub use manta_worker::{init, init_with, Cluster, Config, InitError, ObjectRef, TaskError};

/// What `#[manta::remote]` expands to refers to; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use inventory;
    pub use manta_worker::registry::{decode_arguments, encode_output, InvokeError, RemoteFunction};
    pub use manta_worker::submit;
}

/// The environment variable holding the log filter, in `tracing-subscriber`'s `EnvFilter`
/// syntax (for example `MANTA_LOG=info,manta_transport=debug`). Unset means `warn`.
pub const LOG_ENV: &str = "MANTA_LOG";

/// Installs Manta's log subscriber: lines on stderr, each with the time and the process id (so
/// the interleaved output of a cluster's processes can be told apart), filtered by
/// [`LOG_ENV`]. Does nothing if a global subscriber is already installed. A filter that does not
/// parse falls back to `warn` and says so.
pub fn init_logging() {
    use tracing_subscriber::EnvFilter;

    let (filter, bad_filter) = match std::env::var(LOG_ENV) {
        Ok(text) => match EnvFilter::try_new(&text) {
            Ok(filter) => (filter, None),
            Err(error) => (EnvFilter::new("warn"), Some((text, error))),
        },
        Err(_) => (EnvFilter::new("warn"), None),
    };
    let installed = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_timer(TimeAndPid)
        .with_thread_names(true)
        .try_init()
        .is_ok();
    if let (true, Some((text, error))) = (installed, bad_filter) {
        tracing::warn!(filter = %text, %error, "{LOG_ENV} does not parse; logging at warn");
    }
}

/// Formats each line's prefix as `<UTC time> pid=<pid>`.
struct TimeAndPid;

impl tracing_subscriber::fmt::time::FormatTime for TimeAndPid {
    fn format_time(&self, writer: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        tracing_subscriber::fmt::time::SystemTime.format_time(writer)?;
        write!(writer, " pid={}", std::process::id())
    }
}
