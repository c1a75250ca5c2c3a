//! The host seam: a target root plus a command runner.
//!
//! Every step acts through a [`Host`]. On a device the root is `/`; in tests it is a temp
//! dir or a Debian chroot. Files are reached only through the handle-based operations of
//! [`fs`] (`Host::read_opt`, `Host::write_atomic`, `Host::create_dir`...), which resolve a
//! target path from an open descriptor of the root, following links themselves *inside* it:
//! a link in the target can never make Cairn read or write outside it. There is no method
//! turning a target path into a host path to open; [`Host::shown`] gives one for messages
//! and commands. Commands that must see the target's binaries run under `chroot` when the
//! root is not `/`.

pub mod accounts;
pub mod fs;
pub mod osrelease;
pub mod runner;
pub mod shadow;
pub mod untar;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

pub use osrelease::OsRelease;
pub use runner::{Cmd, DryRunRunner, Output, RunError, Runner, SystemRunner};

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

    /// The same target seen by a dry run: every command is refused
    /// ([`RunError::DryRun`]) rather than run, whatever this host's runner is.
    pub fn for_dry_run(&self) -> Host {
        Host {
            root: self.root.clone(),
            runner: Arc::new(DryRunRunner),
            os: self.os.clone(),
        }
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
        .any(|dir| self.is_file(&format!("/{dir}/{program}")))
    }
}
