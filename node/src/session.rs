//! A host's session directories: where the daemons that `manta start` runs keep their logs,
//! pid files, addresses and credentials, and where a local driver or `manta status` finds them.
//!
//! The root is `$MANTA_TEMP_DIR`, else `<tmp>/manta-<uid>`, made readable by this user only.
//! Each `manta start` makes `session_<seconds>_<pid>` in it and points `session_latest` at the
//! newest. A file is written under a temporary name and renamed into place, so a reader sees it
//! whole or not at all.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// The environment variable naming the root of the session directories.
pub const TEMP_DIR_ENV: &str = "MANTA_TEMP_DIR";

/// The link to the newest session in the root.
pub const LATEST: &str = "session_latest";

/// The session file holding the GCS's address.
pub const GCS_ADDRESS: &str = "gcs_address";
/// The session file holding the cluster's join token.
pub const TOKEN: &str = "token";
/// The session file describing its raylet (see [`RayletRecord`]).
pub const RAYLET: &str = "raylet";

/// A session's node, as its raylet records it for local drivers: one line each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RayletRecord {
    /// The raylet's transport address.
    pub address: std::net::SocketAddr,
    /// Where its store is mapped from.
    pub store_path: PathBuf,
    /// The node's id.
    pub node_id: manta_proto::NodeId,
}

/// A session directory could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// A file or directory operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The root has no session (nothing was started on this host).
    #[error("no Manta session in {0} (start one with `manta start --head`)")]
    NoSession(PathBuf),
    /// A session file is missing (its daemon is not running, or never started).
    #[error("{0} is missing (is this session's node running?)")]
    Missing(PathBuf),
    /// A session file holds something else than expected.
    #[error("{path}: {reason}")]
    Bad {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SessionError + '_ {
    move |source| SessionError::Io { path: path.to_owned(), source }
}

/// The root of this host's session directories for this user.
pub fn root() -> PathBuf {
    match std::env::var_os(TEMP_DIR_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        // SAFETY: getuid has no preconditions and cannot fail.
        _ => std::env::temp_dir().join(format!("manta-{}", unsafe { libc::getuid() })),
    }
}

/// One session directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    dir: PathBuf,
}

impl Session {
    /// Makes a new session under `root` (created 0700 if missing); once its daemons are up,
    /// [`Session::mark_latest`] makes it the one local drivers and `manta status` find.
    pub fn create(root: &Path) -> Result<Session, SessionError> {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(root).map_err(io(root))?;
        // An existing root made by someone else's umask: this user's only.
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700)).map_err(io(root))?;
        let seconds = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs());
        let dir = root.join(format!("session_{seconds}_{}", std::process::id()));
        for sub in [dir.clone(), dir.join("logs"), dir.join("pids")] {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&sub).map_err(io(&sub))?;
        }
        Ok(Session { dir })
    }

    /// Points `session_latest` at this session.
    pub fn mark_latest(&self) -> Result<(), SessionError> {
        let root = self.dir.parent().unwrap_or(Path::new("/"));
        let latest = root.join(LATEST);
        let staged = root.join(format!(".{LATEST}.{}", std::process::id()));
        let _ = std::fs::remove_file(&staged);
        std::os::unix::fs::symlink(self.dir.file_name().unwrap_or_default(), &staged).map_err(io(&staged))?;
        std::fs::rename(&staged, &latest).map_err(io(&latest))
    }

    /// The session at `dir` (as a daemon is told it).
    pub fn open(dir: &Path) -> Result<Session, SessionError> {
        if !dir.is_dir() {
            return Err(SessionError::NoSession(dir.to_owned()));
        }
        Ok(Session { dir: dir.to_owned() })
    }

    /// The newest session under `root`.
    pub fn latest(root: &Path) -> Result<Session, SessionError> {
        let link = root.join(LATEST);
        match std::fs::read_link(&link) {
            Ok(target) => Session::open(&root.join(target)),
            Err(_) => Err(SessionError::NoSession(root.to_owned())),
        }
    }

    /// Every session under `root`, oldest first.
    pub fn all(root: &Path) -> Vec<Session> {
        let Ok(entries) = std::fs::read_dir(root) else { return Vec::new() };
        let mut sessions: Vec<Session> = entries
            .filter_map(Result::ok)
            .filter(|entry| entry.file_name().to_string_lossy().starts_with("session_"))
            .filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_dir()))
            .map(|entry| Session { dir: entry.path() })
            .collect();
        sessions.sort_by(|a, b| a.dir.cmp(&b.dir));
        sessions
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where daemon `name` writes its standard output and error.
    pub fn log_paths(&self, name: &str) -> (PathBuf, PathBuf) {
        let logs = self.dir.join("logs");
        (logs.join(format!("{name}.out")), logs.join(format!("{name}.err")))
    }

    /// Writes `contents` to `name` in the session (mode 0600), whole or not at all.
    pub fn write(&self, name: &str, contents: &str) -> Result<(), SessionError> {
        let path = self.dir.join(name);
        let staged = self.dir.join(format!(".{}.{}", name.replace('/', "_"), std::process::id()));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&staged)
            .map_err(io(&staged))?;
        file.write_all(contents.as_bytes()).map_err(io(&staged))?;
        file.sync_all().map_err(io(&staged))?;
        std::fs::rename(&staged, &path).map_err(io(&path))
    }

    /// The contents of `name` in the session, if it exists.
    pub fn read(&self, name: &str) -> Result<Option<String>, SessionError> {
        let path = self.dir.join(name);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(SessionError::Io { path, source }),
        }
    }

    /// The contents of `name`, trimmed; missing is an error.
    pub fn required(&self, name: &str) -> Result<String, SessionError> {
        match self.read(name)? {
            Some(text) => Ok(text.trim().to_owned()),
            None => Err(SessionError::Missing(self.dir.join(name))),
        }
    }

    /// The GCS's address, as the session recorded it.
    pub fn gcs_address(&self) -> Result<std::net::SocketAddr, SessionError> {
        let text = self.required(GCS_ADDRESS)?;
        text.parse().map_err(|_| self.bad(GCS_ADDRESS, format!("not an address: {text:?}")))
    }

    /// Records the session's raylet.
    pub fn write_raylet(&self, record: &RayletRecord) -> Result<(), SessionError> {
        let RayletRecord { address, store_path, node_id } = record;
        self.write(RAYLET, &format!("{address}\n{}\n{node_id}\n", store_path.display()))
    }

    /// The session's raylet, as it recorded itself.
    pub fn raylet(&self) -> Result<RayletRecord, SessionError> {
        let text = self.required(RAYLET)?;
        let mut lines = text.lines();
        let mut next = |what: &str| lines.next().ok_or_else(|| self.bad(RAYLET, format!("no {what}")));
        let address = next("address")?;
        let address =
            address.parse().map_err(|_| self.bad(RAYLET, format!("not an address: {address:?}")))?;
        let store_path = PathBuf::from(next("store path")?);
        let node_id = next("node id")?;
        let node_id = node_id.parse().map_err(|_| self.bad(RAYLET, format!("not a node id: {node_id:?}")))?;
        Ok(RayletRecord { address, store_path, node_id })
    }

    fn bad(&self, name: &str, reason: String) -> SessionError {
        SessionError::Bad { path: self.dir.join(name), reason }
    }

    /// Removes `name` from the session (gone already is fine).
    pub fn remove(&self, name: &str) {
        let _ = std::fs::remove_file(self.dir.join(name));
    }

    /// Records this process as daemon `name` (`pids/<name>.pid`).
    pub fn write_pid(&self, name: &str) -> Result<(), SessionError> {
        self.write(&format!("pids/{name}.pid"), &std::process::id().to_string())
    }

    /// The daemons recorded in the session: (name, pid).
    pub fn pids(&self) -> Result<Vec<(String, u32)>, SessionError> {
        let dir = self.dir.join("pids");
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(SessionError::Io { path: dir, source }),
        };
        let mut pids = Vec::new();
        for entry in entries.filter_map(Result::ok) {
            let file = entry.file_name().to_string_lossy().into_owned();
            let Some(name) = file.strip_suffix(".pid") else { continue };
            let text = std::fs::read_to_string(entry.path()).map_err(io(&entry.path()))?;
            let pid = text.trim().parse().map_err(|_| SessionError::Bad {
                path: entry.path(),
                reason: format!("not a process id: {text:?}"),
            })?;
            pids.push((name.to_owned(), pid));
        }
        pids.sort();
        Ok(pids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_private_and_the_latest_is_found() {
        let root = std::env::temp_dir().join(format!("manta-session-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        assert!(matches!(Session::latest(&root), Err(SessionError::NoSession(_))));
        let first = Session::create(&root).unwrap();
        assert_eq!(std::fs::metadata(&root).unwrap().permissions().mode() & 0o777, 0o700);
        assert!(Session::latest(&root).is_err(), "not the latest until its daemons are up");
        first.mark_latest().unwrap();
        assert_eq!(Session::latest(&root).unwrap(), first);
        first.write("token", "secret").unwrap();
        assert_eq!(std::fs::metadata(first.dir().join("token")).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(first.read("token").unwrap().as_deref(), Some("secret"));
        assert_eq!(first.read("missing").unwrap(), None);
        assert!(matches!(first.raylet(), Err(SessionError::Missing(_))));
        let record = RayletRecord {
            address: "127.0.0.1:7000".parse().unwrap(),
            store_path: PathBuf::from("/proc/1/fd/3"),
            node_id: manta_proto::NodeId([5; 16]),
        };
        first.write_raylet(&record).unwrap();
        assert_eq!(first.raylet().unwrap(), record);
        first.write(RAYLET, "not an address\n").unwrap();
        assert!(matches!(first.raylet(), Err(SessionError::Bad { .. })));
        first.write_pid("gcs").unwrap();
        assert_eq!(first.pids().unwrap(), vec![("gcs".to_owned(), std::process::id())]);
        std::fs::write(first.dir().join("pids/bad.pid"), "x").unwrap();
        assert!(matches!(first.pids(), Err(SessionError::Bad { .. })));
        assert_eq!(Session::all(&root), vec![first]);
        let _ = std::fs::remove_dir_all(&root);
    }
}
