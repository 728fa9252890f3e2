//! Where a job's workers start from on this node: the driver's own binary, found by its hash.
//!
//! A driver on a running cluster registers its job with the SHA-256 and length of its
//! executable and its process id. A node on the driver's host starts the job's workers from
//! `/proc/<pid>/exe` (which reaches the running binary even after a rebuild replaced its file)
//! once that file's hash is the one registered; anything else (another host, another binary
//! under that pid) is refused with the reason. Shipping the binary to other hosts comes next
//! (docs/decisions/cluster.md).

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
    let hex = context.finish().as_ref().iter().map(|byte| format!("{byte:02x}")).collect();
    Ok((hex, len))
}

/// The launch of `job`'s workers from the driver's binary on this host, if it is here.
pub(crate) fn find_driver_binary(job: JobId, launch: JobLaunch) -> Result<Launch, String> {
    let exe = PathBuf::from(format!("/proc/{}/exe", launch.driver_pid));
    let not_here = |why: String| {
        format!(
            "job {job}'s binary ({} bytes, sha256 {}) is not on this node: {why} (a node on another host than the driver's cannot start its workers yet)",
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
        };
        let found = find_driver_binary(JobId(1), launch(sha256.clone())).unwrap();
        assert_eq!(found.exe, PathBuf::from(format!("/proc/{}/exe", std::process::id())));
        assert_eq!((found.fingerprint, found.env.len()), (7, 1));
        let refused = find_driver_binary(JobId(1), launch("0".repeat(64))).unwrap_err();
        assert!(refused.contains("another binary"), "{refused}");
        let gone = JobLaunch { driver_pid: u32::MAX, ..launch(sha256) };
        assert!(find_driver_binary(JobId(1), gone).unwrap_err().contains("not on this node"));
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
