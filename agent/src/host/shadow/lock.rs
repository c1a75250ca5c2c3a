//! The lock every shadow-utils tool takes before touching the databases: glibc's
//! `lckpwdf()`, an fcntl write lock on `/etc/.pwd.lock` (created 0600), waited for up to 15
//! seconds. Holding it means no `useradd`/`usermod`/`groupadd`/`vipw`/`systemd-sysusers`
//! can interleave with our read-modify-write.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg};
use nix::libc;

use crate::host::Host;

/// Released (closed) on drop.
#[derive(Debug)]
pub struct PwdLock {
    _file: File,
}

fn flock(kind: libc::c_int) -> libc::flock {
    libc::flock {
        l_type: kind as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    }
}

/// Why `/etc/.pwd.lock` was not taken.
#[derive(Debug, thiserror::Error)]
pub enum PwdLockError {
    #[error(transparent)]
    Open(#[from] crate::host::fs::FsError),
    #[error("locking {}: {source}", path.display())]
    Lock {
        path: std::path::PathBuf,
        #[source]
        source: nix::errno::Errno,
    },
}

impl PwdLock {
    /// Take the lock in the target, waiting like lckpwdf (15 s).
    pub fn acquire(host: &Host) -> Result<PwdLock, PwdLockError> {
        let file = host.open_rw("/etc/.pwd.lock", 0o600)?;
        let lock = flock(libc::F_WRLCK);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match fcntl(file.as_raw_fd(), FcntlArg::F_SETLK(&lock)) {
                Ok(_) => return Ok(PwdLock { _file: file }),
                Err(nix::errno::Errno::EACCES | nix::errno::Errno::EAGAIN)
                    if Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(source) => {
                    return Err(PwdLockError::Lock {
                        path: host.shown("/etc/.pwd.lock"),
                        source,
                    })
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_file_is_created_0600_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        let host = Host::system(dir.path());
        let held = PwdLock::acquire(&host).unwrap();
        // (fcntl locks conflict only across processes: agent/tests/accounts.rs checks that.)
        let path = dir.path().join("etc/.pwd.lock");
        assert!(path.exists());
        let meta = std::fs::metadata(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        drop(held);
        PwdLock::acquire(&host).unwrap();
    }
}
