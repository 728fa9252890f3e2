//! Where a job's workers start from on this node: the driver's own binary, found by its hash.
//!
//! A driver on a running cluster registers its job with the SHA-256 and length of its
//! executable and its process id. A node on the driver's host starts the job's workers from
//! `/proc/<pid>/exe` (which reaches the running binary even after a rebuild replaced its file)
//! once that file's hash is the one registered. Elsewhere (another host, or a node told to
//! fetch) the binary comes from the node's cache, `<cache>/<sha256>`, checked against its hash
//! each time a job is learnt (a tampered file is removed and fetched again); a missing one is
//! fetched from the driver (`SendBinary`, a bulk stream into the cache, the hash checked before
//! the file is renamed into place). A binary of another platform is refused with the reason.

use std::io::Read as _;
use std::path::PathBuf;

use manta_proto::gcs::wire::JobLaunch;
use manta_proto::JobId;

use crate::service::Launch;

/// SHA-256 of the file at `path`, hex, and its length.
pub fn sha256_of(path: &std::path::Path) -> std::io::Result<(String, u64)> {
    let mut file = std::fs::File::open(path)?;
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buffer = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        len += read as u64;
        context.update(&buffer[..read]);
    }
    Ok((manta_proto::hex::encode(context.finish().as_ref()), len))
}

/// Where a node of a running cluster gets its jobs' binaries.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// The cache of shipped binaries, by SHA-256 (a container image may hold them already).
    pub cache: PathBuf,
    /// Whether a driver on this host is found by its pid (`false`: always the cache, fetched
    /// from the driver when missing, as a node on another host must).
    pub local: bool,
}

/// The largest binary a node takes.
pub const BINARY_BYTES_MAX: u64 = 4 << 30;

/// A SHA-256 as the cache names files: 64 lower-case hex digits (either case taken), or why not.
fn sha256_name(text: &str) -> Result<String, String> {
    manta_proto::hex::decode_array::<32>(text)
        .map(|digest| manta_proto::hex::encode(&digest))
        .ok_or_else(|| format!("{text:?} is not a SHA-256"))
}

/// The cached binary of `launch`, if the cache holds it with the right hash; a file of another
/// hash under its name (tampered, or cut short) is removed, and `Ok(None)` says to fetch it.
pub(crate) fn cached_binary(cache: &std::path::Path, launch: &JobLaunch) -> Result<Option<PathBuf>, String> {
    let wanted = sha256_name(&launch.binary_sha256)?;
    let path = cache.join(&wanted);
    match sha256_of(&path) {
        Ok((sha256, len)) if (&sha256, len) == (&wanted, launch.binary_len) => Ok(Some(path)),
        Ok((sha256, _)) => {
            tracing::warn!(path = %path.display(), %sha256, "a cached binary does not have its hash: removed, fetched again");
            std::fs::remove_file(&path).map_err(|error| format!("removing {}: {error}", path.display()))?;
            Ok(None)
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(format!("reading {}: {error}", path.display())),
    }
}

/// Keeps a shipped binary in `cache` under its hash, once its bytes have that hash: written to
/// a temporary file, made executable by this user only, renamed into place.
pub(crate) fn keep_binary(cache: &std::path::Path, sha256: &str, bytes: &[u8]) -> Result<PathBuf, String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let sha256 = sha256_name(sha256)?;
    let actual = manta_proto::hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
    if actual != sha256 {
        return Err(format!("the binary sent has sha256 {actual}, not {sha256}"));
    }
    std::fs::create_dir_all(cache).map_err(|error| format!("creating {}: {error}", cache.display()))?;
    let path = cache.join(&sha256);
    let temporary = cache.join(format!(".{sha256}.{}.part", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o700)
        .open(&temporary)
        .and_then(|mut file| file.write_all(bytes).and_then(|()| file.sync_all()))
        .and_then(|()| std::fs::rename(&temporary, &path));
    written.map_err(|error| {
        let _ = std::fs::remove_file(&temporary);
        format!("keeping the binary in {}: {error}", cache.display())
    })?;
    Ok(path)
}

/// The launch of `job`'s workers from a binary at `exe` (the cache's).
pub(crate) fn launch_from(exe: PathBuf, launch: JobLaunch) -> Launch {
    Launch {
        name: exe.clone(),
        exe,
        fingerprint: launch.registry_fingerprint,
        env: launch.env,
        output_to: None,
    }
}

/// The launch of `job`'s workers from the driver's binary on this host, if it is here.
pub(crate) fn find_driver_binary(job: JobId, launch: JobLaunch) -> Result<Launch, String> {
    let exe = PathBuf::from(format!("/proc/{}/exe", launch.driver_pid));
    let not_here = |why: String| {
        format!(
            "job {job}'s binary ({} bytes, sha256 {}) is not on this host: {why}",
            launch.binary_len, launch.binary_sha256
        )
    };
    let (sha256, len) = sha256_of(&exe).map_err(|error| not_here(format!("{}: {error}", exe.display())))?;
    if (sha256.as_str(), len) != (launch.binary_sha256.as_str(), launch.binary_len) {
        return Err(not_here(format!("{} is another binary (sha256 {sha256})", exe.display())));
    }
    let name = std::fs::read_link(&exe).unwrap_or_else(|_| exe.clone());
    Ok(Launch { exe, name, fingerprint: launch.registry_fingerprint, env: launch.env, output_to: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_driver_binary_is_found_by_its_hash_and_another_is_refused() {
        let (sha256, len) = sha256_of(std::path::Path::new("/proc/self/exe")).unwrap();
        let launch = |binary_sha256: String| JobLaunch {
            binary_sha256,
            binary_len: len,
            driver_pid: std::process::id(),
            registry_fingerprint: 7,
            env: vec![("K".into(), "V".into())],
            log_to_driver: true,
            platform: String::new(),
        };
        let found = find_driver_binary(JobId(1), launch(sha256.clone())).unwrap();
        assert_eq!(found.exe, PathBuf::from(format!("/proc/{}/exe", std::process::id())));
        assert_eq!((found.fingerprint, found.env.len()), (7, 1));
        let refused = find_driver_binary(JobId(1), launch("0".repeat(64))).unwrap_err();
        assert!(refused.contains("another binary"), "{refused}");
        let gone = JobLaunch { driver_pid: u32::MAX, ..launch(sha256) };
        assert!(find_driver_binary(JobId(1), gone.clone()).unwrap_err().contains("not on this host"));

        // The cache: a binary is kept only with its hash, found again, and a tampered copy is
        // removed (to be fetched again).
        let cache = std::env::temp_dir().join(format!("manta-binaries-{}", std::process::id()));
        let bytes = b"#!/bin/sh\nexit 0\n".to_vec();
        let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
        let hash = manta_proto::hex::encode(digest.as_ref());
        assert!(keep_binary(&cache, &"0".repeat(64), &bytes).unwrap_err().contains("not 0000"));
        assert!(keep_binary(&cache, "../../etc/passwd", &bytes).unwrap_err().contains("not a SHA-256"));
        let kept = keep_binary(&cache, &hash, &bytes).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&kept).unwrap().permissions().mode() & 0o777, 0o700);
        let wanted = JobLaunch { binary_sha256: hash, binary_len: bytes.len() as u64, ..gone };
        assert_eq!(cached_binary(&cache, &wanted).unwrap(), Some(kept.clone()));
        std::fs::write(&kept, b"#!/bin/sh\nexit 1\n").unwrap();
        assert_eq!(cached_binary(&cache, &wanted).unwrap(), None, "tampered: fetch again");
        assert!(!kept.exists(), "the tampered file is gone");
        let _ = std::fs::remove_dir_all(&cache);
        // The empty file's hash, as every SHA-256 gives it.
        let empty = std::env::temp_dir().join(format!("manta-empty-{}", std::process::id()));
        std::fs::write(&empty, b"").unwrap();
        assert_eq!(
            sha256_of(&empty).unwrap(),
            ("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".to_owned(), 0)
        );
        let _ = std::fs::remove_file(&empty);
    }
}
