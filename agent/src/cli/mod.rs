//! The `cairn-agent` command line as a library: the argument definitions ([`Cli`],
//! [`Command`]), one module per subcommand, each with `run(args) -> Result<Outcome, Error>`,
//! and the one mapping from a result to the process's exit status ([`exit_code`]). The
//! binary only parses, sets up logging, calls [`run`] and exits with [`exit_code`].
//!
//! Subcommands print what they report (on stdout, or stderr for diagnostics) themselves; an
//! [`Error`] is printed once, by the binary, as `error: MESSAGE`.

use std::path::PathBuf;

use cairn_proto::profile::Arch;
use clap::{Parser, Subcommand, ValueEnum};

pub mod apply;
pub mod bundle;
pub mod daemon;
pub mod plan;
pub mod stage;
pub mod status;
pub mod validate;

/// The exit status of an apply that completed but had best-effort steps
/// (`on_failure: continue`) fail: not a success (0), not a stopped apply (1).
pub const EXIT_TOLERATED: u8 = 4;

/// The exit statuses, as `--help` shows them. Keep in step with [`exit_code`].
const EXIT_STATUS: &str = "\
Exit status:
  0  done: valid, applied, or nothing to do
  1  invalid input, refused or failed (validate: errors found; status: the last apply
     failed or the hub refuses this host)
  2  usage error: bad arguments, an unknown stage, a target root that is not a directory
  4  apply/stage completed, but best-effort steps (`on_failure: continue`) failed
`run` exits 0 when stopped by SIGTERM, 1 when it cannot start, 2 on a usage error.";

#[derive(Parser, Debug)]
#[command(
    name = "cairn-agent",
    version,
    about = "Cairn's edge-host agent: validate and apply user-data stages",
    long_about = "Cairn's edge-host agent.\n\n\
        User-data is YAML: Kairos/Palette `stages:` documents and cloud-init `#cloud-config`\n\
        documents are both accepted, merged in the order given.\n\n\
        Examples:\n  \
        cairn-agent validate user-data.yaml\n  \
        cairn-agent apply --root /tmp/root --dry-run user-data.yaml\n  \
        cairn-agent apply --stage boot --output json /oem/",
    after_long_help = EXIT_STATUS
)]
pub struct Cli {
    /// More logging on stderr (-v info, -vv debug). CAIRN_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// How much to log by default (CAIRN_LOG overrides): `-v` count, at least 1 for the
    /// daemon, which logs what it does (registration, hub state) by default.
    pub fn verbosity(&self) -> u8 {
        match self.command {
            Command::Run(_) => self.verbose.max(1),
            _ => self.verbose,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check user-data files and cluster profiles; print every problem as
    /// FILE:LINE:COL: message.
    ///
    /// A file that is a cluster profile (a YAML/JSON document with `layers:`) is checked on
    /// its own, fully: every layer, every cross-layer rule, and the artifacts its flavor,
    /// CNI and add-ons need for each architecture. The other files are user-data, merged in
    /// order. Exit status 0 when valid (warnings allowed), 1 when any error was found.
    Validate(validate::Args),
    /// Plan and apply user-data stages to a target root.
    ///
    /// Without --stage, the boot sequence runs (rootfs, initramfs, fs, boot, first-boot,
    /// network, each with .before/.after). Lifecycle stages (after-install, reconcile,
    /// kubernetes…) run only when named. Invalid input is refused before anything changes.
    Apply(apply::Args),
    /// List every file a cluster profile's apply fetches — pack files resolved by version
    /// and files listed in the profile — from where, and how each is verified (mirrors
    /// from /etc/cairn/packs.json). Reads nothing else; exit status 1 when the profile
    /// cannot be applied.
    Plan(plan::Args),
    /// Air-gap bundles: every artifact a cluster profile needs, verified by sha256.
    Bundle {
        #[command(subcommand)]
        command: bundle::BundleCommand,
    },
    /// Run one stage from the device's user-data (/oem, /usr/local/cloud-config).
    ///
    /// Used by the boot-stage systemd units, e.g. `cairn-agent stage boot`.
    Stage(stage::Args),
    /// The daemon: register with the hub, heartbeat, apply the assigned profile, report.
    ///
    /// Hub settings come from the `cairn:` (or Palette `stylus:`) block of the device's
    /// user-data (/oem, /usr/local/cloud-config under --root) and of --config. Runs until
    /// SIGTERM; the hub being unreachable is never a reason to exit (events are spooled
    /// under --state-dir and delivered later). Supports systemd Type=notify and watchdog.
    Run(daemon::Args),
    /// What the daemon applied, is applying or failed, and how the hub connection is.
    ///
    /// Reads the state directory; works whether the daemon runs or not. Exit status 1 when
    /// the last apply failed, the hub refuses this host's token or credential, or the hub's
    /// CA does not match the pin of the join string.
    Status(status::Args),
    /// Print a shell completion script: `cairn-agent completions bash >
    /// /usr/share/bash-completion/completions/cairn-agent` (also zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write man pages (cairn-agent.1 and one per subcommand) into DIR.
    Manpages {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

/// `--arch` values.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum ArchArg {
    Amd64,
    Arm64,
}

impl ArchArg {
    pub fn arch(self) -> Arch {
        match self {
            ArchArg::Amd64 => Arch::Amd64,
            ArchArg::Arm64 => Arch::Arm64,
        }
    }
}

/// `--output` values: text for people, or JSON for programs.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Human,
    Json,
}

/// How a subcommand that ran to its end turned out (what it reports is printed already).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Valid, applied, written, or nothing to do.
    Done,
    /// `validate` found this many errors (each printed).
    Invalid { errors: usize },
    /// `status` read the state: the last apply failed or the hub refuses this host.
    Unhealthy,
    /// `run`: the daemon stopped with this exit status (it reports why itself).
    Stopped { code: u8 },
    /// `apply`/`stage` completed, but this many best-effort steps (`on_failure: continue`)
    /// failed (each printed as a warning).
    Tolerated { failed: usize },
}

/// Why a subcommand did not do what was asked. Each is printed once as `error: MESSAGE`;
/// [`Error::is_usage`] tells the usage errors (exit 2) from the others (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown stage `{0}`")]
    UnknownStage(String),
    #[error("target root {} is not a directory", .0.display())]
    RootNotADirectory(PathBuf),
    #[error("--dry-run is not supported for cluster profiles yet")]
    DryRunProfile,
    #[error(transparent)]
    Load(#[from] cairn_userdata::load::LoadError),
    /// The diagnostics were printed before.
    #[error("invalid user-data; nothing was applied")]
    InvalidUserData,
    #[error("{}", crate::profile::describe_failure(.0))]
    Failed(crate::engine::Failure),
    /// The problems were printed before.
    #[error("{}: invalid profile; nothing was applied", .0.display())]
    InvalidProfile(PathBuf),
    /// The problems were printed before.
    #[error("{}: the profile cannot be applied to {}; nothing was applied", file.display(), root.display())]
    NotApplicable { file: PathBuf, root: PathBuf },
    #[error("the apply was interrupted")]
    Interrupted,
    #[error(transparent)]
    Profile(#[from] crate::profile::ApplyError),
    #[error(transparent)]
    ReadProfile(#[from] cairn_userdata::load::ProfileFileError),
    #[error(transparent)]
    Bundle(#[from] crate::kubernetes::bundle::BundleError),
    #[error("creating a temporary cache: {0}")]
    TempCache(std::io::Error),
    #[error("the artifact cache: {0}")]
    Cache(crate::artifacts::ArtifactError),
    #[error("importing {}: {source}", bundle.display())]
    Import {
        bundle: PathBuf,
        source: crate::artifacts::ArtifactError,
    },
    #[error(transparent)]
    Packs(#[from] crate::packs::ResolveError),
    #[error("--registries {}: {message}", path.display())]
    Registries { path: PathBuf, message: String },
    #[error("pack settings: {0}")]
    PackSettings(#[from] crate::packs::SettingsError),
    #[error("printing JSON: {0}")]
    Json(serde_json::Error),
    #[error("writing man pages to {}: {source}", dir.display())]
    Manpages {
        dir: PathBuf,
        source: std::io::Error,
    },
}

impl Error {
    /// A usage error: the command line asks for something that cannot be (exit 2).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            Error::UnknownStage(_) | Error::RootNotADirectory(_) | Error::DryRunProfile
        )
    }
}

/// Run a parsed command line.
pub fn run(cli: Cli) -> Result<Outcome, Error> {
    match cli.command {
        Command::Validate(args) => validate::run(args),
        Command::Apply(args) => apply::run(args),
        Command::Plan(args) => plan::run(args),
        Command::Bundle { command } => bundle::run(command),
        Command::Stage(args) => stage::run(args),
        Command::Run(args) => daemon::run(args),
        Command::Status(args) => status::run(args),
        Command::Completions { shell } => {
            cairn_cli::docs::print_completions(<Cli as clap::CommandFactory>::command(), shell);
            Ok(Outcome::Done)
        }
        Command::Manpages { dir } => {
            cairn_cli::docs::write_manpages(<Cli as clap::CommandFactory>::command(), &dir)
                .map_err(|source| Error::Manpages { dir, source })?;
            Ok(Outcome::Done)
        }
    }
}

/// The exit status of a result: the one mapping of `cairn-agent` (documented in `--help`,
/// see `EXIT_STATUS`). Argument errors found by clap exit 2 before [`run`].
pub fn exit_code(result: &Result<Outcome, Error>) -> u8 {
    match result {
        Ok(Outcome::Done) => 0,
        Ok(Outcome::Invalid { .. } | Outcome::Unhealthy) => 1,
        Ok(Outcome::Stopped { code }) => *code,
        Ok(Outcome::Tolerated { .. }) => EXIT_TOLERATED,
        Err(e) if e.is_usage() => 2,
        Err(_) => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn usage_errors_exit_2_and_other_errors_1() {
        assert_eq!(exit_code(&Ok(Outcome::Done)), 0);
        assert_eq!(exit_code(&Ok(Outcome::Invalid { errors: 3 })), 1);
        assert_eq!(exit_code(&Ok(Outcome::Unhealthy)), 1);
        assert_eq!(exit_code(&Ok(Outcome::Stopped { code: 2 })), 2);
        assert_eq!(exit_code(&Err(Error::UnknownStage("x".into()))), 2);
        assert_eq!(exit_code(&Err(Error::RootNotADirectory("/x".into()))), 2);
        assert_eq!(exit_code(&Err(Error::DryRunProfile)), 2);
        assert_eq!(exit_code(&Err(Error::InvalidUserData)), 1);
        assert_eq!(exit_code(&Err(Error::Interrupted)), 1);
    }
}
