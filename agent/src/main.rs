//! `cairn-agent`: parse the command line and dispatch. Logic lives in the library.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use cairn_agent::daemon;
use cairn_agent::engine::{self, ApplyOptions};
use cairn_agent::events::{Emitter, HumanSink, JsonSink};
use cairn_agent::host::Host;
use cairn_agent::kubernetes;
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
    /// Check user-data files; print every problem as FILE:LINE:COL: message.
    ///
    /// Exit status 0 when valid (warnings allowed), 1 when any error was found.
    Validate {
        /// Treat unknown keys as errors instead of warnings.
        #[arg(long)]
        strict: bool,
        #[arg(long, value_enum, default_value_t = Output::Human)]
        output: Output,
        /// User-data files or directories (their *.yaml files, in lexical order).
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
        /// User-data files or directories, or one cluster profile (a YAML/JSON document
        /// with `layers:`): its os layer is applied as user-data, then its kubernetes,
        /// cni and addons layers are installed phase by phase. On `/` services are started
        /// and readiness awaited; on another root files are installed and nothing started.
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
        arches: Vec<BundleArch>,
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
enum BundleArch {
    Amd64,
    Arm64,
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
            output,
            files,
        } => validate(&files, strict, output),
        Command::Apply {
            root,
            stages,
            dry_run,
            strict,
            output,
            bundles,
            files,
        } => {
            let profile = match files.as_slice() {
                [one] if one.is_file() => std::fs::read_to_string(one)
                    .is_ok_and(|t| cairn_userdata::profile::looks_like_profile(&t)),
                _ => false,
            };
            if profile {
                apply_profile(&root, &files[0], &bundles, dry_run, output)
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

fn validate(files: &[PathBuf], strict: bool, output: Output) -> ExitCode {
    let loaded = match load::load(files, strict) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let diags = loaded.diags.sorted();
    if output == Output::Json {
        let items: Vec<serde_json::Value> = diags
            .iter()
            .map(|d| {
                serde_json::json!({
                    "file": d.location.file.as_ref(),
                    "line": d.location.pos.line,
                    "col": d.location.pos.col,
                    "severity": if d.severity == Severity::Error { "error" } else { "warning" },
                    "message": d.message,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(items));
    } else {
        for d in &diags {
            println!("{d}");
        }
        let errors = loaded.diags.errors().count();
        let warnings = loaded.diags.warnings().count();
        eprintln!(
            "{}: {} error(s), {} warning(s) in {} file(s); {} step(s) in {} stage(s)",
            if errors == 0 { "valid" } else { "invalid" },
            errors,
            warnings,
            loaded.files.len(),
            loaded.config.step_count(),
            loaded.config.stages.len(),
        );
    }
    if loaded.diags.has_errors() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
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
    match outcome.failed {
        None => ExitCode::SUCCESS,
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

/// `apply PROFILE`: the os layer through the stage engine, then the Kubernetes layers.
fn apply_profile(
    root: &std::path::Path,
    file: &std::path::Path,
    bundles: &[PathBuf],
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
    let profile = match cairn_userdata::load::read_profile(file) {
        Ok(p) => p.profile,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let host = Host::system(root);
    let mut emitter = emitter_for(output);
    let started = Instant::now();
    for layer in &profile.layers {
        if let cairn_proto::profile::Layer::Os(os) = layer {
            let dir = match tempfile::tempdir() {
                Ok(d) => d,
                Err(e) => {
                    eprintln!("error: creating a temp dir for the os layer: {e}");
                    return ExitCode::from(1);
                }
            };
            let ud = dir.path().join(format!("{}-os.yaml", profile.name));
            if let Err(e) = std::fs::write(&ud, &os.user_data) {
                eprintln!("error: writing {}: {e}", ud.display());
                return ExitCode::from(1);
            }
            let loaded = match load::load(&[ud], false) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("error: {}: os layer: {e}", file.display());
                    return ExitCode::from(1);
                }
            };
            if loaded.diags.has_errors() {
                for d in loaded.diags.sorted() {
                    eprintln!("{d}");
                }
                eprintln!("error: the os layer is invalid user-data; nothing was applied");
                return ExitCode::from(1);
            }
            let outcome = engine::apply(
                &loaded.config,
                &host,
                &ApplyOptions {
                    owner: engine::Owner::Profile,
                    ..Default::default()
                },
                &mut emitter,
            );
            if let Some(f) = outcome.failed {
                eprintln!(
                    "error: os layer: stage {}, step `{}` failed: {}",
                    f.stage, f.step, f.message
                );
                return ExitCode::from(1);
            }
        }
    }
    let opts = kubernetes::install::InstallOptions {
        start: host.is_live(),
        bundles: bundles.to_vec(),
        proxy: kubernetes::proxy::Proxy::from_env(),
        ..Default::default()
    };
    match kubernetes::install::install_profile(&profile, &host, &opts, &mut emitter) {
        Ok(report) => {
            if output == Output::Human {
                let changes = report.as_ref().map_or(0, |r| r.changes.len());
                println!(
                    "profile {} applied to {}: {changes} Kubernetes change(s) in {} ms",
                    profile.name,
                    root.display(),
                    started.elapsed().as_millis()
                );
            }
            ExitCode::SUCCESS
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
            let arches: Vec<cairn_proto::profile::Arch> = arches
                .iter()
                .map(|a| match a {
                    BundleArch::Amd64 => cairn_proto::profile::Arch::Amd64,
                    BundleArch::Arm64 => cairn_proto::profile::Arch::Arm64,
                })
                .collect();
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
