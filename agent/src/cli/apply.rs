//! `cairn-agent apply`: user-data stages, or one cluster profile, applied to a target root.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use cairn_userdata::load;
use cairn_userdata::stages;

use super::validate::is_profile;
use super::{Error, Outcome, Output};
use crate::engine::{self, ApplyOptions};
use crate::events::{Emitter, HumanSink, JsonSink};
use crate::host::Host;
use crate::{kubernetes, profile};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The target root: `/` on a device, a directory or chroot otherwise. Commands run
    /// inside it with chroot; services are enabled, not started.
    #[arg(long, default_value = "/", value_name = "DIR")]
    pub root: PathBuf,
    /// Run only this stage (and its .before/.after); repeatable.
    #[arg(long = "stage", value_name = "NAME")]
    pub stages: Vec<String>,
    /// Print what would change and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Treat unknown keys as errors.
    #[arg(long)]
    pub strict: bool,
    #[arg(long, value_enum, default_value_t = Output::Human)]
    pub output: Output,
    /// Air-gap bundle (directory or .tar) to pre-seed the artifact cache from before a
    /// cluster profile is applied; repeatable.
    #[arg(long = "bundle", value_name = "PATH")]
    pub bundles: Vec<PathBuf>,
    /// The artifact cache a cluster profile's artifacts are fetched into and verified
    /// in before anything is written. [default: /var/lib/cairn/artifacts on `/`; on
    /// another root, its own /var/lib/cairn/artifacts if it has one, else
    /// /var/cache/cairn/artifacts on this machine]
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Chart registries with their credentials, for a cluster profile whose charts name
    /// `registry:` (or an oci:// repo on one): a JSON file shaped like the hub's
    /// `GET /v1/hosts/{id}/registries` answer (`{"registries": [...]}`). Keep it 0600.
    #[arg(long, value_name = "FILE")]
    pub registries: Option<PathBuf>,
    /// User-data files or directories, or one cluster profile (a YAML/JSON document
    /// with `layers:`): it is validated whole for the target (every layer, every
    /// cross-layer rule, artifacts for the target's arch) and its artifacts fetched and
    /// verified before anything is written; then its os layer is applied as user-data
    /// and its kubernetes, cni and addons layers installed phase by phase. On `/`
    /// services are started and readiness awaited; on another root files are installed
    /// and nothing started.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

/// Largest `--registries` file read.
const MAX_REGISTRIES_BYTES: u64 = 1024 * 1024;

fn read_registries(path: &Path) -> Result<Vec<cairn_proto::registry::RegistryAccess>, Error> {
    let bad = |message: String| Error::Registries {
        path: path.to_path_buf(),
        message,
    };
    let f = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    let mut text = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(f, MAX_REGISTRIES_BYTES + 1),
        &mut text,
    )
    .map_err(|e| bad(e.to_string()))?;
    if text.len() as u64 > MAX_REGISTRIES_BYTES {
        return Err(bad(format!("larger than {MAX_REGISTRIES_BYTES} bytes")));
    }
    // Only the position: serde's messages can quote a value, and values here are secrets.
    serde_json::from_slice::<cairn_proto::registry::HostRegistries>(&text)
        .map(|r| r.registries)
        .map_err(|e| {
            bad(format!(
                "not a registries document ({{\"registries\": [{{\"name\", \"kind\", \"url\", …}}]}}) at line {}, column {}",
                e.line(),
                e.column()
            ))
        })
}

/// One cluster profile goes through [`profile`]; anything else is user-data.
pub fn run(args: Args) -> Result<Outcome, Error> {
    match args.files.as_slice() {
        [one] if is_profile(one) => apply_profile(
            &args.root,
            one,
            &args.bundles,
            args.cache,
            args.registries.as_deref(),
            args.dry_run,
            args.output,
        ),
        _ => user_data(
            &args.root,
            &args.files,
            args.stages,
            args.dry_run,
            args.strict,
            args.output,
        ),
    }
}

/// Load, validate and apply user-data `files` to `root` through the engine. Diagnostics go
/// to stderr; with human output, a summary to stdout.
pub fn user_data(
    root: &Path,
    files: &[PathBuf],
    stage_names: Vec<String>,
    dry_run: bool,
    strict: bool,
    output: Output,
) -> Result<Outcome, Error> {
    if let Some(s) = stage_names.iter().find(|s| !stages::is_known(s)) {
        return Err(Error::UnknownStage(s.clone()));
    }
    if !root.is_dir() {
        return Err(Error::RootNotADirectory(root.to_path_buf()));
    }
    let started = Instant::now();
    let loaded = load::load(files, strict)?;
    for d in loaded.diags.sorted() {
        eprintln!("{d}");
    }
    if loaded.diags.has_errors() {
        return Err(Error::InvalidUserData);
    }
    let host = Host::system(root);
    if dry_run && output == Output::Human {
        println!("dry run: nothing will be changed; listing what apply would do");
    }
    let mut emitter = emitter_for(output);
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
        None if outcome.tolerated.is_empty() => Ok(Outcome::Done),
        None => {
            eprintln!(
                "applied with {} best-effort step(s) failed (exit status {})",
                outcome.tolerated.len(),
                super::EXIT_TOLERATED
            );
            Ok(Outcome::Tolerated {
                failed: outcome.tolerated.len(),
            })
        }
        Some(f) => Err(Error::Failed(f)),
    }
}

/// Events on stdout: one JSON object a line, or text (coloured on a terminal).
pub(crate) fn emitter_for(output: Output) -> Emitter {
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
    registries: Option<&Path>,
    dry_run: bool,
    output: Output,
) -> Result<Outcome, Error> {
    if dry_run {
        return Err(Error::DryRunProfile);
    }
    let registries = match registries {
        None => Vec::new(),
        Some(p) => read_registries(p)?,
    };
    if !root.is_dir() {
        return Err(Error::RootNotADirectory(root.to_path_buf()));
    }
    let checked = match load::read_profile(file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return Err(Error::InvalidProfile(file.to_path_buf()));
        }
    };
    for w in &checked.warnings {
        eprintln!("{w}");
    }
    let host = Host::system(root);
    let settings = crate::packs::Settings::load_default()?;
    let plan = match profile::validate_for(
        &checked,
        &profile::Machine::of(&host),
        &settings,
        &registries,
    ) {
        Ok(p) => p,
        Err(invalid) => {
            eprintln!("{invalid}");
            return Err(Error::NotApplicable {
                file: file.to_path_buf(),
                root: root.to_path_buf(),
            });
        }
    };
    let mut opts = profile::ApplyOptions::for_host(&host, profile::HOST_CACHE_DIR);
    opts.install.bundles = bundles.to_vec();
    opts.install.proxy = kubernetes::proxy::Proxy::from_env();
    opts.install.cache_dir = cache;
    let mut emitter = emitter_for(output);
    let started = Instant::now();
    match profile::apply(&plan, &host, &opts, &mut emitter, &mut engine::NoJournal)? {
        profile::Outcome::Applied(a) => {
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
                    "applied with {} best-effort step(s) failed (exit status {})",
                    a.tolerated,
                    super::EXIT_TOLERATED
                );
                return Ok(Outcome::Tolerated {
                    failed: a.tolerated,
                });
            }
            Ok(Outcome::Done)
        }
        // Only a journal stops an apply early; this one has none.
        profile::Outcome::Interrupted => Err(Error::Interrupted),
    }
}
