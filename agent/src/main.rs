//! `cairn-agent`: parse the command line and dispatch. Logic lives in the library.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use cairn_agent::daemon;
use cairn_agent::engine::{self, ApplyOptions};
use cairn_agent::events::{Emitter, HumanSink, JsonSink};
use cairn_agent::host::Host;
use cairn_agent::kubernetes;
use cairn_agent::profile;
use cairn_proto::profile::Arch;
use cairn_userdata::diag::Severity;
use cairn_userdata::load::{self, DEVICE_SOURCES};
use cairn_userdata::stages;
use clap::{Parser, Subcommand, ValueEnum};

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
        cairn-agent apply --stage boot --output json /oem/"
)]
struct Cli {
    /// More logging on stderr (-v info, -vv debug). CAIRN_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check user-data files and cluster profiles; print every problem as
    /// FILE:LINE:COL: message.
    ///
    /// A file that is a cluster profile (a YAML/JSON document with `layers:`) is checked on
    /// its own, fully: every layer, every cross-layer rule, and the artifacts its flavor,
    /// CNI and add-ons need for each architecture. The other files are user-data, merged in
    /// order. Exit status 0 when valid (warnings allowed), 1 when any error was found.
    Validate {
        /// Treat unknown keys as errors instead of warnings.
        #[arg(long)]
        strict: bool,
        /// Check profiles for this architecture (repeatable); a missing artifact is an
        /// error. [default: amd64 and arm64, where an architecture the profile lists no
        /// artifact for at all is a warning: the profile is not meant for it, or is a
        /// template]
        #[arg(long = "arch", value_enum, value_name = "ARCH")]
        arches: Vec<ArchArg>,
        #[arg(long, value_enum, default_value_t = Output::Human)]
        output: Output,
        /// User-data files, cluster profiles, or directories (their *.yaml files, in
        /// lexical order).
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Plan and apply user-data stages to a target root.
    ///
    /// Without --stage, the boot sequence runs (rootfs, initramfs, fs, boot, first-boot,
    /// network, each with .before/.after). Lifecycle stages (after-install, reconcile,
    /// kubernetes…) run only when named. Invalid input is refused before anything changes.
    Apply {
        /// The target root: `/` on a device, a directory or chroot otherwise. Commands run
        /// inside it with chroot; services are enabled, not started.
        #[arg(long, default_value = "/", value_name = "DIR")]
        root: PathBuf,
        /// Run only this stage (and its .before/.after); repeatable.
        #[arg(long = "stage", value_name = "NAME")]
        stages: Vec<String>,
        /// Print what would change and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Treat unknown keys as errors.
        #[arg(long)]
        strict: bool,
        #[arg(long, value_enum, default_value_t = Output::Human)]
        output: Output,
        /// Air-gap bundle (directory or .tar) to pre-seed the artifact cache from before a
        /// cluster profile is applied; repeatable.
        #[arg(long = "bundle", value_name = "PATH")]
        bundles: Vec<PathBuf>,
        /// The artifact cache a cluster profile's artifacts are fetched into and verified
        /// in before anything is written. [default: /var/lib/cairn/artifacts on `/`; on
        /// another root, its own /var/lib/cairn/artifacts if it has one, else
        /// /var/cache/cairn/artifacts on this machine]
        #[arg(long, value_name = "DIR")]
        cache: Option<PathBuf>,
        /// User-data files or directories, or one cluster profile (a YAML/JSON document
        /// with `layers:`): it is validated whole for the target (every layer, every
        /// cross-layer rule, artifacts for the target's arch) and its artifacts fetched and
        /// verified before anything is written; then its os layer is applied as user-data
        /// and its kubernetes, cni and addons layers installed phase by phase. On `/`
        /// services are started and readiness awaited; on another root files are installed
        /// and nothing started.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Air-gap bundles: every artifact a cluster profile needs, verified by sha256.
    Bundle {
        #[command(subcommand)]
        command: BundleCommand,
    },
    /// Run one stage from the device's user-data (/oem, /usr/local/cloud-config).
    ///
    /// Used by the boot-stage systemd units, e.g. `cairn-agent stage boot`.
    Stage {
        /// Stage name, e.g. initramfs, boot, network.
        name: String,
        #[arg(long, default_value = "/", value_name = "DIR")]
        root: PathBuf,
        #[arg(long, value_enum, default_value_t = Output::Human)]
        output: Output,
    },
    /// The daemon: register with the hub, heartbeat, apply the assigned profile, report.
    ///
    /// Hub settings come from the `cairn:` (or Palette `stylus:`) block of the device's
    /// user-data (/oem, /usr/local/cloud-config under --root) and of --config. Runs until
    /// SIGTERM; the hub being unreachable is never a reason to exit (events are spooled
    /// under --state-dir and delivered later). Supports systemd Type=notify and watchdog.
    Run {
        /// Agent configuration (user-data with a `cairn:` block) [default:
        /// /etc/cairn/agent.yaml, if it exists].
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Identity, journal, event spool and the last profile.
        #[arg(long, default_value = cairn_agent::daemon::DEFAULT_STATE_DIR, value_name = "DIR")]
        state_dir: PathBuf,
        /// The target root profiles are applied to.
        #[arg(long, default_value = "/", value_name = "DIR")]
        root: PathBuf,
        /// How events are printed on stdout (the journal, under systemd).
        #[arg(long, value_enum, default_value_t = Output::Human)]
        output: Output,
        /// Seconds between runs of the applied profile's `reconcile` stage.
        #[arg(long, default_value_t = daemon::DEFAULT_RECONCILE_SECS, value_name = "SECS",
              value_parser = clap::value_parser!(u64).range(1..))]
        reconcile_interval: u64,
    },
    /// What the daemon applied, is applying or failed, and how the hub connection is.
    ///
    /// Reads the state directory; works whether the daemon runs or not. Exit status 1 when
    /// the last apply failed, the hub refuses this host's token or credential, or the hub's
    /// CA does not match the pin of the join string.
    Status {
        #[arg(long, default_value = cairn_agent::daemon::DEFAULT_STATE_DIR, value_name = "DIR")]
        state_dir: PathBuf,
        #[arg(long, value_enum, default_value_t = Output::Human)]
        output: Output,
    },
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

#[derive(Subcommand, Debug)]
enum BundleCommand {
    /// Fetch and verify every artifact of a profile's kubernetes, cni and addons layers and
    /// write them, with a manifest of sha256s, to OUT (a directory, or a .tar file).
    ///
    /// Example: cairn-agent bundle create --arch arm64 --out /media/usb/edge.tar profile.yaml
    Create {
        /// Only these architectures (repeatable) [default: every architecture listed].
        #[arg(long = "arch", value_enum, value_name = "ARCH")]
        arches: Vec<ArchArg>,
        /// Where to write the bundle: a directory, or a file ending in .tar.
        #[arg(long, value_name = "PATH")]
        out: PathBuf,
        /// Artifact cache to fetch through [default: a temporary one].
        #[arg(long, value_name = "DIR")]
        cache: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = Output::Human)]
        output: Output,
        /// The cluster profile (YAML or JSON).
        #[arg(value_name = "PROFILE")]
        profile: PathBuf,
    },
    /// Verify a bundle and copy its artifacts into the device's artifact cache.
    Import {
        /// The target root whose cache (/var/lib/cairn/artifacts) is filled.
        #[arg(long, default_value = "/", value_name = "DIR")]
        root: PathBuf,
        #[arg(value_name = "BUNDLE")]
        bundle: PathBuf,
    },
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum ArchArg {
    Amd64,
    Arm64,
}

impl ArchArg {
    fn arch(self) -> Arch {
        match self {
            ArchArg::Amd64 => Arch::Amd64,
            ArchArg::Arm64 => Arch::Arm64,
        }
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Output {
    Human,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The daemon logs what it does (registration, hub state) by default.
    let daemon = matches!(cli.command, Command::Run { .. });
    init_logging(if daemon {
        cli.verbose.max(1)
    } else {
        cli.verbose
    });
    match cli.command {
        Command::Validate {
            strict,
            arches,
            output,
            files,
        } => validate(&files, strict, &arches, output),
        Command::Apply {
            root,
            stages,
            dry_run,
            strict,
            output,
            bundles,
            cache,
            files,
        } => {
            let profile = match files.as_slice() {
                [one] => is_profile(one),
                _ => false,
            };
            if profile {
                apply_profile(&root, &files[0], &bundles, cache, dry_run, output)
            } else {
                apply(&root, &files, stages, dry_run, strict, output)
            }
        }
        Command::Bundle { command } => bundle(command),
        Command::Stage { name, root, output } => {
            let sources: Vec<PathBuf> = DEVICE_SOURCES
                .iter()
                .map(|s| root.join(s.trim_start_matches('/')))
                .filter(|p| p.is_dir())
                .collect();
            if sources.is_empty() {
                eprintln!("no user-data found under {}", DEVICE_SOURCES.join(", "));
                return ExitCode::SUCCESS;
            }
            apply(&root, &sources, vec![name], false, false, output)
        }
        Command::Run {
            config,
            state_dir,
            root,
            output,
            reconcile_interval,
        } => ExitCode::from(daemon::run(daemon::RunOptions {
            config,
            state_dir,
            root,
            reconcile_every: std::time::Duration::from_secs(reconcile_interval),
            output: match output {
                Output::Human => daemon::EventOutput::Human,
                Output::Json => daemon::EventOutput::Json,
            },
        })),
        Command::Status { state_dir, output } => {
            let state = daemon::store::StateDir::new(state_dir);
            let report = daemon::status::report(&state);
            match output {
                Output::Json => println!("{report}"),
                Output::Human => print!("{}", daemon::status::render(&report)),
            }
            ExitCode::from(daemon::status::exit_code(&report))
        }
        Command::Completions { shell } => {
            cairn_cli::docs::print_completions(<Cli as clap::CommandFactory>::command(), shell);
            ExitCode::SUCCESS
        }
        Command::Manpages { dir } => {
            let written =
                cairn_cli::docs::write_manpages(<Cli as clap::CommandFactory>::command(), &dir);
            match written {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: writing man pages to {}: {e}", dir.display());
                    ExitCode::from(1)
                }
            }
        }
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Is `path` a file holding a cluster profile (rather than user-data)?
fn is_profile(path: &Path) -> bool {
    path.is_file()
        && load::read_text(path).is_ok_and(|t| cairn_userdata::profile::looks_like_profile(&t))
}

/// One line of `validate`'s output.
struct Reported {
    location: String,
    file: String,
    line: usize,
    col: usize,
    severity: Severity,
    message: String,
}

impl Reported {
    fn of(location: &cairn_userdata::diag::Location, severity: Severity, message: &str) -> Self {
        Reported {
            location: location.to_string(),
            file: location.file.to_string(),
            line: location.pos.line,
            col: location.pos.col,
            severity,
            message: message.to_string(),
        }
    }
}

fn validate(files: &[PathBuf], strict: bool, arches: &[ArchArg], output: Output) -> ExitCode {
    let expanded = match load::expand(files) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let (profiles, user_data): (Vec<PathBuf>, Vec<PathBuf>) =
        expanded.into_iter().partition(|f| is_profile(f));
    let mut reported = Vec::new();
    for p in &profiles {
        match check_profile(p, arches) {
            Ok(findings) => reported.extend(
                findings
                    .iter()
                    .map(|f| Reported::of(&f.location, f.severity, &f.message)),
            ),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
        }
    }
    let (steps, stages) = if user_data.is_empty() {
        (0, 0)
    } else {
        let loaded = match load::load(&user_data, strict) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
        };
        reported.extend(
            loaded
                .diags
                .sorted()
                .iter()
                .map(|d| Reported::of(&d.location, d.severity, &d.message)),
        );
        (loaded.config.step_count(), loaded.config.stages.len())
    };
    let errors = reported
        .iter()
        .filter(|r| r.severity == Severity::Error)
        .count();
    if output == Output::Json {
        let items: Vec<serde_json::Value> = reported
            .iter()
            .map(|r| {
                serde_json::json!({
                    "file": r.file,
                    "line": r.line,
                    "col": r.col,
                    "severity": if r.severity == Severity::Error { "error" } else { "warning" },
                    "message": r.message,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(items));
    } else {
        for r in &reported {
            let sev = if r.severity == Severity::Error {
                "error"
            } else {
                "warning"
            };
            println!("{}: {sev}: {}", r.location, r.message);
        }
        let mut what = format!(
            "{} file(s); {steps} step(s) in {stages} stage(s)",
            user_data.len() + profiles.len()
        );
        if !profiles.is_empty() {
            what.push_str(&format!("; {} cluster profile(s)", profiles.len()));
        }
        eprintln!(
            "{}: {errors} error(s), {} warning(s) in {what}",
            if errors == 0 { "valid" } else { "invalid" },
            reported.len() - errors,
        );
    }
    if errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Every problem of one profile file: how it reads, then the rules of `apply` for each
/// architecture. Without `--arch`, an architecture the profile lists no artifact for at
/// all gets its missing artifacts as warnings (the profile is not meant for it, or is a
/// template); with `--arch`, or when the profile lists some artifacts for it, they are
/// errors.
fn check_profile(
    path: &Path,
    arches: &[ArchArg],
) -> Result<Vec<cairn_userdata::profile::Finding>, load::LoadError> {
    let checked = match load::read_profile(path) {
        Ok(c) => c,
        Err(load::ProfileFileError::Refused(r)) => return Ok(r.findings),
        Err(load::ProfileFileError::Read(e)) => return Err(e),
    };
    let explicit = !arches.is_empty();
    let arches: Vec<Arch> = if explicit {
        arches.iter().map(|a| a.arch()).collect()
    } else {
        vec![Arch::Amd64, Arch::Arm64]
    };
    let mut out = checked.warnings.clone();
    for arch in arches {
        let Err(invalid) = profile::validate(&checked, &profile::Machine::of_arch(arch)) else {
            continue;
        };
        let listed = !kubernetes::bundle::profile_artifacts(&checked.profile, &[arch]).is_empty();
        for mut problem in invalid.problems {
            let missing = matches!(
                problem.kind,
                kubernetes::PlanErrorKind::MissingArtifact { .. }
            );
            if missing && !explicit && !listed {
                problem.finding.severity = Severity::Warning;
                problem.finding.message = format!(
                    "{} (the profile lists no artifacts for {}: it cannot be applied to such a machine as it is)",
                    problem.finding.message,
                    kubernetes::arch_name(arch)
                );
            }
            if !out.contains(&problem.finding) {
                out.push(problem.finding);
            }
        }
    }
    Ok(out)
}

fn apply(
    root: &std::path::Path,
    files: &[PathBuf],
    stage_names: Vec<String>,
    dry_run: bool,
    strict: bool,
    output: Output,
) -> ExitCode {
    for s in &stage_names {
        if !stages::is_known(s) {
            eprintln!("error: unknown stage `{s}`");
            return ExitCode::from(2);
        }
    }
    if !root.is_dir() {
        eprintln!("error: target root {} is not a directory", root.display());
        return ExitCode::from(2);
    }
    let started = Instant::now();
    let loaded = match load::load(files, strict) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    for d in loaded.diags.sorted() {
        eprintln!("{d}");
    }
    if loaded.diags.has_errors() {
        eprintln!("error: invalid user-data; nothing was applied");
        return ExitCode::from(1);
    }
    let host = Host::system(root);
    let host_name = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut emitter = Emitter::new(host_name);
    emitter = match output {
        Output::Json => emitter.with_sink(Box::new(JsonSink(std::io::stdout()))),
        Output::Human => {
            if dry_run {
                println!("dry run: nothing will be changed; listing what apply would do");
            }
            let color = std::io::stdout().is_terminal();
            emitter.with_sink(Box::new(HumanSink::new(std::io::stdout(), color)))
        }
    };
    let opts = ApplyOptions {
        stages: stage_names,
        dry_run,
        owner: engine::Owner::UserData,
    };
    let outcome = engine::apply(&loaded.config, &host, &opts, &mut emitter);
    if output == Output::Human {
        if !outcome.not_run.is_empty() {
            println!(
                "not run (name them with --stage): {}",
                outcome.not_run.join(", ")
            );
        }
        let verb = if dry_run { "would change" } else { "changed" };
        println!(
            "{} step(s) {verb}, {} unchanged ({} skipped) in {} ms",
            outcome.changed,
            outcome.unchanged,
            outcome.skipped,
            started.elapsed().as_millis()
        );
    }
    for f in &outcome.tolerated {
        eprintln!(
            "warning: {}: stage {}, best-effort step `{}` failed (the apply went on): {}",
            f.source, f.stage, f.step, f.message
        );
    }
    match outcome.failed {
        None if outcome.tolerated.is_empty() => ExitCode::SUCCESS,
        None => {
            eprintln!(
                "applied with {} best-effort step(s) failed (exit status {EXIT_TOLERATED})",
                outcome.tolerated.len()
            );
            ExitCode::from(EXIT_TOLERATED)
        }
        Some(f) if f.step.is_empty() => {
            eprintln!("error: {}", f.message);
            ExitCode::from(1)
        }
        Some(f) => {
            eprintln!(
                "error: {}: stage {}, step `{}` failed: {}",
                f.source, f.stage, f.step, f.message
            );
            ExitCode::from(1)
        }
    }
}

/// The exit status of an apply that completed but had best-effort steps
/// (`on_failure: continue`) fail: not a success (0), not a stopped apply (1).
const EXIT_TOLERATED: u8 = 4;

fn emitter_for(output: Output) -> Emitter {
    let host_name = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let emitter = Emitter::new(host_name);
    match output {
        Output::Json => emitter.with_sink(Box::new(JsonSink(std::io::stdout()))),
        Output::Human => {
            let color = std::io::stdout().is_terminal();
            emitter.with_sink(Box::new(HumanSink::new(std::io::stdout(), color)))
        }
    }
}

/// `apply PROFILE`: validated whole for the target, artifacts fetched and verified, then
/// the os layer and the Kubernetes phases ([`profile`]). A profile refused at any point
/// before the os layer leaves the root as it was.
fn apply_profile(
    root: &Path,
    file: &Path,
    bundles: &[PathBuf],
    cache: Option<PathBuf>,
    dry_run: bool,
    output: Output,
) -> ExitCode {
    if dry_run {
        eprintln!("error: --dry-run is not supported for cluster profiles yet");
        return ExitCode::from(2);
    }
    if !root.is_dir() {
        eprintln!("error: target root {} is not a directory", root.display());
        return ExitCode::from(2);
    }
    let checked = match load::read_profile(file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            eprintln!(
                "error: {}: invalid profile; nothing was applied",
                file.display()
            );
            return ExitCode::from(1);
        }
    };
    for w in &checked.warnings {
        eprintln!("{w}");
    }
    let host = Host::system(root);
    let plan = match profile::validate(&checked, &profile::Machine::of(&host)) {
        Ok(p) => p,
        Err(invalid) => {
            eprintln!("{invalid}");
            eprintln!(
                "error: {}: the profile cannot be applied to {}; nothing was applied",
                file.display(),
                root.display()
            );
            return ExitCode::from(1);
        }
    };
    let mut opts = profile::ApplyOptions::for_host(&host, profile::HOST_CACHE_DIR);
    opts.install.bundles = bundles.to_vec();
    opts.install.proxy = kubernetes::proxy::Proxy::from_env();
    opts.install.cache_dir = cache;
    let mut emitter = emitter_for(output);
    let started = Instant::now();
    match profile::apply(&plan, &host, &opts, &mut emitter, &mut engine::NoJournal) {
        Ok(profile::Outcome::Applied(a)) => {
            if output == Output::Human {
                let changes = a.kubernetes.as_ref().map_or(0, |r| r.changes.len());
                println!(
                    "profile {} applied to {}: {} step(s) changed, {} unchanged; {changes} Kubernetes change(s) in {} ms",
                    checked.profile.name,
                    root.display(),
                    a.changed - changes,
                    a.unchanged,
                    started.elapsed().as_millis()
                );
            }
            if a.tolerated > 0 {
                eprintln!(
                    "applied with {} best-effort step(s) failed (exit status {EXIT_TOLERATED})",
                    a.tolerated
                );
                return ExitCode::from(EXIT_TOLERATED);
            }
            ExitCode::SUCCESS
        }
        // Only a journal stops an apply early; this one has none.
        Ok(profile::Outcome::Interrupted) => {
            eprintln!("error: the apply was interrupted");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn bundle(command: BundleCommand) -> ExitCode {
    match command {
        BundleCommand::Create {
            arches,
            out,
            cache,
            output,
            profile,
        } => {
            let p = match cairn_userdata::load::read_profile(&profile) {
                Ok(p) => p.profile,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(1);
                }
            };
            let arches: Vec<Arch> = arches.iter().map(|a| a.arch()).collect();
            let tmp = match tempfile::tempdir() {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("error: creating a temporary cache: {e}");
                    return ExitCode::from(1);
                }
            };
            let cache = cairn_agent::artifacts::ArtifactCache::new(
                cache.unwrap_or_else(|| tmp.path().to_path_buf()),
            );
            let mut last = String::new();
            let result = kubernetes::bundle::create(
                &p,
                &arches,
                &cache,
                &out,
                &cairn_agent::artifacts::FetchOptions::default(),
                &mut |a, pr| {
                    if output == Output::Human && a.name != last {
                        last = a.name.clone();
                        eprintln!("fetching {} ({:?}) from {}", a.name, a.arch, a.url);
                    }
                    let _ = pr;
                },
            );
            match result {
                Ok(s) => {
                    match output {
                        Output::Json => println!(
                            "{}",
                            serde_json::json!({"bundle": s.path, "artifacts": s.artifacts, "bytes": s.bytes})
                        ),
                        Output::Human => println!(
                            "bundle {}: {} artifact(s), {} bytes, each verified by sha256",
                            s.path.display(),
                            s.artifacts,
                            s.bytes
                        ),
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(1)
                }
            }
        }
        BundleCommand::Import { root, bundle } => {
            let host = Host::system(&root);
            let cache = match cairn_agent::artifacts::ArtifactCache::in_target(
                &host,
                kubernetes::install::CACHE_DIR,
            ) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: the artifact cache: {e}");
                    return ExitCode::from(1);
                }
            };
            match cairn_agent::artifacts::bundle::import(&cache, &bundle) {
                Ok(n) => {
                    println!(
                        "imported {n} new artifact(s) from {} into {}",
                        bundle.display(),
                        cache.dir().display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: importing {}: {e}", bundle.display());
                    ExitCode::from(1)
                }
            }
        }
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
}
