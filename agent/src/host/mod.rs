//! The host seam: a target root plus a command runner.
//!
//! Every step acts through a [`Host`]. On a device the root is `/`; in tests it is a temp
//! dir or a Debian chroot. Paths are resolved *inside* the root (symlinks included, so a
//! link in the target can never make Cairn write outside it), and commands that must see
//! the target's binaries run under `chroot` when the root is not `/`.

pub mod accounts;
pub mod fs;
pub mod osrelease;
pub mod runner;
pub mod shadow;

use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, OnceLock};

pub use osrelease::OsRelease;
pub use runner::{Cmd, Output, RunError, Runner, SystemRunner};

use cairn_userdata::model::AbsPath;

pub struct Host {
    root: PathBuf,
    runner: Arc<dyn Runner>,
    os: OnceLock<OsRelease>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host").field("root", &self.root).finish()
    }
}

impl Host {
    pub fn new(root: impl Into<PathBuf>, runner: Arc<dyn Runner>) -> Self {
        let root = root.into();
        // Tools given the root (`useradd --root`, `systemctl --root`) need it absolute.
        let root = std::path::absolute(&root).unwrap_or(root);
        Host {
            root,
            runner,
            os: OnceLock::new(),
        }
    }

    /// A host with the real process runner.
    pub fn system(root: impl Into<PathBuf>) -> Self {
        Host::new(root, Arc::new(SystemRunner))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// True when acting on the running system (root is `/`): services may be started and
    /// kernel settings applied live.
    pub fn is_live(&self) -> bool {
        self.root == Path::new("/")
    }

    pub fn runner(&self) -> &dyn Runner {
        self.runner.as_ref()
    }

    /// The target's os-release (read once).
    pub fn os(&self) -> &OsRelease {
        self.os.get_or_init(|| OsRelease::read(self))
    }

    /// Resolve a target path to a host path, following symlinks as if chrooted into the
    /// root: an absolute link target is taken relative to the root and `..` never climbs
    /// above it. Missing components are fine (the result may not exist yet).
    pub fn path(&self, p: &AbsPath) -> PathBuf {
        self.resolve(p.as_str())
    }

    pub fn path_str(&self, p: &str) -> PathBuf {
        self.resolve(p)
    }

    fn resolve(&self, p: &str) -> PathBuf {
        if self.is_live() {
            return PathBuf::from(p);
        }
        let mut pending: Vec<String> = components(p);
        pending.reverse();
        let mut resolved: Vec<String> = Vec::new();
        let mut hops = 0;
        while let Some(part) = pending.pop() {
            if part == ".." {
                resolved.pop();
                continue;
            }
            let candidate = self.root.join(resolved.join("/")).join(&part);
            match std::fs::read_link(&candidate) {
                Ok(target) if hops < 40 => {
                    hops += 1;
                    let t = target.to_string_lossy().into_owned();
                    if t.starts_with('/') {
                        resolved.clear();
                    }
                    let mut more = components(&t);
                    more.reverse();
                    pending.extend(more);
                }
                _ => resolved.push(part),
            }
        }
        self.root.join(resolved.join("/"))
    }

    /// Run a command inside the target (chrooted when the root is not `/`), failing on a
    /// non-zero exit.
    pub fn check_in_target(&self, cmd: Cmd) -> Result<Output, RunError> {
        let cmd = self.in_target(cmd);
        self.runner.check(&cmd)
    }

    /// Run a command inside the target, returning its output whatever the exit status.
    pub fn run_in_target(&self, cmd: Cmd) -> Result<Output, RunError> {
        let cmd = self.in_target(cmd);
        self.runner.run(&cmd)
    }

    fn in_target(&self, cmd: Cmd) -> Cmd {
        if self.is_live() {
            cmd
        } else {
            cmd.in_chroot(&self.root)
        }
    }

    /// Does the target have this program on its standard PATH?
    pub fn target_has(&self, program: &str) -> bool {
        [
            "usr/local/sbin",
            "usr/local/bin",
            "usr/sbin",
            "usr/bin",
            "sbin",
            "bin",
        ]
        .iter()
        .any(|dir| {
            let p = self.path_str(&format!("/{dir}/{program}"));
            p.is_file()
        })
    }
}

fn components(p: &str) -> Vec<String> {
    Path::new(p)
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            Component::ParentDir => Some("..".to_string()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("real/etc")).unwrap();
        std::os::unix::fs::symlink("/real/etc", root.join("etc")).unwrap();
        std::os::unix::fs::symlink("../../../../../../tmp", root.join("real/etc/escape")).unwrap();
        let host = Host::system(root);
        let p = host.path(&AbsPath::parse("/etc/hostname").unwrap());
        assert_eq!(p, root.join("real/etc/hostname"));
        let p = host.path(&AbsPath::parse("/etc/escape/x").unwrap());
        assert_eq!(
            p,
            root.join("tmp/x"),
            "a climbing link stays inside the root"
        );
    }
}
