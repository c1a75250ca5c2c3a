//! `cairn-agent bundle create|import`: air-gap bundles of a profile's artifacts.

use std::path::PathBuf;

use cairn_proto::profile::Arch;

use super::{ArchArg, Error, Outcome, Output};
use crate::artifacts::{self, ArtifactCache, FetchOptions};
use crate::host::Host;
use crate::kubernetes;

#[derive(clap::Subcommand, Debug)]
pub enum BundleCommand {
    /// Fetch and verify every artifact of a profile's kubernetes, cni and addons layers —
    /// those listed and those its packs resolve by version — and write them, with a
    /// manifest of URLs and sha256s, to OUT (a directory, or a .tar file).
    ///
    /// Example: cairn-agent bundle create --arch arm64 --out /media/usb/edge.tar profile.yaml
    Create(CreateArgs),
    /// Verify a bundle and copy its artifacts into the device's artifact cache.
    Import(ImportArgs),
}

#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// Only these architectures (repeatable) [default: every architecture the profile lists
    /// files for; amd64 and arm64 when it lists none (a profile named by versions)].
    #[arg(long = "arch", value_enum, value_name = "ARCH")]
    pub arches: Vec<ArchArg>,
    /// Where to write the bundle: a directory, or a file ending in .tar.
    #[arg(long, value_name = "PATH")]
    pub out: PathBuf,
    /// Artifact cache to fetch through [default: a temporary one].
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Output::Human)]
    pub output: Output,
    /// The cluster profile (YAML or JSON).
    #[arg(value_name = "PROFILE")]
    pub profile: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// The target root whose cache (/var/lib/cairn/artifacts) is filled.
    #[arg(long, default_value = "/", value_name = "DIR")]
    pub root: PathBuf,
    #[arg(value_name = "BUNDLE")]
    pub bundle: PathBuf,
}

pub fn run(command: BundleCommand) -> Result<Outcome, Error> {
    match command {
        BundleCommand::Create(args) => create(args),
        BundleCommand::Import(args) => import(args),
    }
}

/// Fetch (through the cache) and write every artifact of the profile for the architectures.
pub fn create(args: CreateArgs) -> Result<Outcome, Error> {
    let p = cairn_userdata::load::read_profile(&args.profile)?.profile;
    let mut arches: Vec<Arch> = args.arches.iter().map(|a| a.arch()).collect();
    // Pack files (a layer named by version) for the arches asked for, or for the arches the
    // profile lists files for, or for every arch when it lists none.
    let pack_arches: Vec<Arch> = if !arches.is_empty() {
        arches.clone()
    } else {
        let mut listed: Vec<Arch> = kubernetes::bundle::profile_artifacts(&p, &[])
            .iter()
            .map(|a| a.arch)
            .collect();
        listed.sort_by_key(|a| a.as_str());
        listed.dedup();
        if listed.is_empty() {
            vec![Arch::Amd64, Arch::Arm64]
        } else {
            listed
        }
    };
    let settings = crate::packs::Settings::load_default()?;
    let mut fetch = FetchOptions::default();
    fetch.ca_certs.extend(settings.ca_certs.iter().cloned());
    let p = crate::packs::resolve_profile(&p, &pack_arches, &settings, &fetch)?;
    if arches.is_empty() {
        arches = pack_arches;
    }
    let tmp = tempfile::tempdir().map_err(Error::TempCache)?;
    let cache = ArtifactCache::new(args.cache.unwrap_or_else(|| tmp.path().to_path_buf()));
    let output = args.output;
    let mut last = String::new();
    let s = kubernetes::bundle::create(
        &p,
        &arches,
        &cache,
        &args.out,
        &fetch,
        &mut |a, _progress| {
            if output == Output::Human && a.name != last {
                last = a.name.clone();
                eprintln!("fetching {} ({:?}) from {}", a.name, a.arch, a.url);
            }
        },
    )?;
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
    Ok(Outcome::Done)
}

/// Verify a bundle and copy what is new into the target's artifact cache.
pub fn import(args: ImportArgs) -> Result<Outcome, Error> {
    let host = Host::system(&args.root);
    let cache =
        ArtifactCache::in_target(&host, kubernetes::install::CACHE_DIR).map_err(Error::Cache)?;
    let n = artifacts::bundle::import(&cache, &args.bundle).map_err(|source| Error::Import {
        bundle: args.bundle.clone(),
        source,
    })?;
    println!(
        "imported {n} new artifact(s) from {} into {}",
        args.bundle.display(),
        cache.dir().display()
    );
    Ok(Outcome::Done)
}
