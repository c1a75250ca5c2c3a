//! `cairn-hub pack sync` and `cairn-hub mirror import|gc|status`: the mirror's admin
//! commands, acting on the database and the data directory directly (like every admin
//! command), so a sync can run while the hub serves.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};

use super::{Mirror, MirrorConfig, PackSettings, DEFAULT_MAX_BYTES};
use crate::store::{SqlStore, Store};

/// The mirror's settings, shared by `serve` and the mirror commands.
#[derive(Debug, Clone, Args)]
pub struct MirrorArgs {
    /// Most bytes the artifact mirror (`<data dir>/mirror`) may hold; files no published
    /// profile references are removed first when it is full.
    #[arg(long, global = true, env = "CAIRN_HUB_MIRROR_MAX_BYTES", value_name = "BYTES",
          default_value_t = DEFAULT_MAX_BYTES)]
    pub mirror_max_bytes: u64,
    /// Pack settings (JSON, the agent's /etc/cairn/packs.json format): mirrors of the
    /// upstream release layouts and their CA certificates, used when the hub resolves and
    /// downloads pack files. Default: `<data dir>/packs.json` when it exists, else upstream.
    #[arg(
        long,
        global = true,
        env = "CAIRN_HUB_PACKS_SETTINGS",
        value_name = "FILE"
    )]
    pub packs_settings: Option<PathBuf>,
}

impl MirrorArgs {
    /// The mirror in `data_dir` with these settings.
    pub fn open(&self, data_dir: &Path) -> anyhow::Result<Mirror> {
        let settings = match &self.packs_settings {
            Some(p) => PackSettings::load(p)?,
            None => {
                let p = data_dir.join("packs.json");
                if p.exists() {
                    PackSettings::load(&p)?
                } else {
                    PackSettings::default()
                }
            }
        };
        Ok(Mirror::open(MirrorConfig::new(
            data_dir,
            self.mirror_max_bytes,
            settings,
        ))?)
    }
}

#[derive(Debug, Subcommand)]
pub enum PackCmd {
    /// Pre-fetch every artifact of a published profile into the hub's mirror, for amd64 and
    /// arm64: the files it lists and its packs' files (checksum files read now, so devices
    /// with no internet can install it). Progress on stderr.
    Sync {
        /// The profile's name.
        profile: String,
        /// Tenant the profile belongs to.
        #[arg(long, default_value = "default")]
        tenant: String,
        /// Version (default: the latest).
        #[arg(long)]
        version: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
pub enum MirrorCmd {
    /// Import an air-gap bundle (directory or .tar with manifest.json, from `cairn-agent
    /// bundle create`) into the mirror: for a hub with no internet.
    Import {
        #[arg(value_name = "BUNDLE")]
        bundle: PathBuf,
    },
    /// Remove the files no published profile references any more (the latest version of
    /// each profile, and versions assignments pin, are kept).
    Gc,
    /// Bytes held and the bound.
    Status,
}

fn need_dir(data_dir: Option<&Path>) -> anyhow::Result<&Path> {
    match data_dir {
        Some(d) => Ok(d),
        None => bail!(
            "the artifact mirror lives in the hub's data directory: give --data-dir (or use a \
             SQLite database file, whose directory is the default)"
        ),
    }
}

/// `cairn-hub pack …`.
pub async fn pack(
    store: &SqlStore,
    json: bool,
    data_dir: Option<&Path>,
    args: &MirrorArgs,
    cmd: PackCmd,
) -> anyhow::Result<()> {
    let mirror = args.open(need_dir(data_dir)?)?;
    match cmd {
        PackCmd::Sync {
            profile,
            tenant,
            version,
        } => {
            let rec = store.get_profile(&tenant, &profile, version).await?;
            let p: cairn_proto::profile::Profile = serde_json::from_str(&rec.body)
                .with_context(|| format!("profile {profile} does not parse"))?;
            let mut progress = |a: &cairn_proto::protocol::MirroredArtifact, what: &str| {
                eprintln!(
                    "{what:<12} {} ({}) {} sha256:{}",
                    a.name,
                    a.arch.as_str(),
                    a.url,
                    a.sha256
                );
            };
            let report = mirror
                .sync(&p, store, &mut progress)
                .await
                .with_context(|| format!("syncing {profile} v{}", rec.info.version))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "{profile} v{}: {} file(s) downloaded ({} bytes), {} already held; the \
                     mirror holds {} bytes",
                    rec.info.version,
                    report.added,
                    report.bytes_added,
                    report.present,
                    report.bytes_used
                );
            }
        }
    }
    Ok(())
}

/// `cairn-hub mirror …`.
pub async fn mirror(
    store: &SqlStore,
    json: bool,
    data_dir: Option<&Path>,
    args: &MirrorArgs,
    cmd: MirrorCmd,
) -> anyhow::Result<()> {
    let mirror = args.open(need_dir(data_dir)?)?;
    let report = match cmd {
        MirrorCmd::Import { bundle } => mirror
            .import_bundle(&bundle)
            .await
            .with_context(|| format!("importing {}", bundle.display()))?,
        MirrorCmd::Gc => mirror.gc(store).await?,
        MirrorCmd::Status => super::Report {
            bytes_used: mirror.used(),
            ..super::Report::default()
        },
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "added {} ({} bytes), already held {}, removed {} ({} bytes); holding {} of {} bytes",
            report.added,
            report.bytes_added,
            report.present,
            report.removed,
            report.bytes_removed,
            report.bytes_used,
            args.mirror_max_bytes
        );
    }
    Ok(())
}
