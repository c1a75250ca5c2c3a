//! Step kinds: one module per kind of change, all applied through [`apply_action`].
//!
//! Every kind follows the same contract: look at the target, work out what differs, and
//! (unless `dry_run`) change only that, returning one human line per change. An empty list
//! means "unchanged", which is how a second apply reports zero changes. To add a kind:
//! a model variant in `model.rs`, a decoder arm, a module here and one line in the `match`.

mod apt;
mod certificates;
mod commands;
mod files;
pub use files::RunFiles;
pub mod keys;
mod packages;
mod system;
pub use system::{owned_drop_in, sweep_drop_ins};
mod users;

use crate::host::accounts::Accounts;
use crate::host::fs::FsError;
use crate::host::{Host, RunError};
use crate::state::State;
use cairn_userdata::model::{Action, Frequency, KeySourceSettings, Owner};

pub use certificates::trust_store_for;
pub use packages::{backend_for, PackageBackend};

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Keys(#[from] keys::KeyFetchError),
    #[error("{0}")]
    Failed(String),
}

impl StepError {
    pub fn msg(m: impl Into<String>) -> Self {
        StepError::Failed(m.into())
    }
}

pub type Changes = Vec<String>;

/// What a step's actions see: the target, the mode, and Cairn's state.
pub struct StepCx<'a> {
    pub host: &'a Host,
    pub dry_run: bool,
    pub state: &'a mut State,
    /// A stable key for this step (stage, name, content digest), for run-once records.
    pub step_key: String,
    /// What the step's drop-in files (sysctl, modules) are named after: `stage/step`, with
    /// the apply's owner in front where it has one (`engine::Owner`).
    pub drop_in_key: String,
    pub frequency: Frequency,
    pub boot_id: String,
    /// Where `github:`/`gitlab:` SSH keys are fetched from (`cairn.key_sources`).
    pub key_sources: &'a KeySourceSettings,
    /// The file entries of the whole apply ([`RunFiles`]) and this step's position in it:
    /// a path is compared with its final content across the run.
    pub run_files: Option<&'a RunFiles<'a>>,
    pub step_index: usize,
    accounts: Option<Accounts>,
}

impl<'a> StepCx<'a> {
    pub fn new(
        host: &'a Host,
        dry_run: bool,
        state: &'a mut State,
        step_key: String,
        frequency: Frequency,
        boot_id: String,
    ) -> Self {
        StepCx {
            host,
            dry_run,
            state,
            drop_in_key: step_key.clone(),
            step_key,
            frequency,
            boot_id,
            key_sources: &cairn_userdata::model::NO_KEY_SOURCES,
            run_files: None,
            step_index: 0,
            accounts: None,
        }
    }

    /// The target's accounts (cached until [`StepCx::accounts_changed`]).
    pub fn accounts(&mut self) -> &Accounts {
        let host = self.host;
        self.accounts.get_or_insert_with(|| Accounts::read(host))
    }

    pub fn accounts_changed(&mut self) {
        self.accounts = None;
    }

    /// Resolve an owner/group pair to ids in the target. `Ok(None)` in dry-run when a name
    /// does not exist yet (it may be created by an earlier action of the same run).
    pub fn resolve_ids(
        &mut self,
        owner: Option<&Owner>,
        group: Option<&Owner>,
    ) -> Result<Option<(u32, u32)>, StepError> {
        let dry = self.dry_run;
        let accounts = self.accounts();
        let uid = match owner {
            None => Some(0),
            Some(Owner::Id(id)) => Some(*id),
            Some(Owner::Name(n)) => accounts.user(n).map(|u| u.uid),
        };
        let gid = match group {
            Some(Owner::Id(id)) => Some(*id),
            Some(Owner::Name(n)) => accounts.group(n).map(|g| g.gid),
            // cloud-init's `owner: user` alone means group root (like chown user).
            None => Some(0),
        };
        match (uid, gid) {
            (Some(u), Some(g)) => Ok(Some((u, g))),
            _ if dry => Ok(None),
            (None, _) => Err(StepError::msg(format!(
                "owner `{}` does not exist in the target",
                owner.map(ToString::to_string).unwrap_or_default()
            ))),
            (_, None) => Err(StepError::msg(format!(
                "group `{}` does not exist in the target",
                group.map(ToString::to_string).unwrap_or_default()
            ))),
        }
    }
}

/// Apply one action, returning the changes made (or that would be made, in dry-run).
pub fn apply_action(action: &Action, cx: &mut StepCx) -> Result<Changes, StepError> {
    match action {
        Action::Hostname(spec) => system::hostname(cx, spec),
        Action::Groups(specs) => users::groups(cx, specs),
        Action::Users(specs) => users::users(cx, specs),
        Action::AuthorizedKeys(specs) => users::authorized_keys(cx, specs),
        Action::Directories(specs) => files::directories(cx, specs),
        Action::AptPpa(ppas) => apt::ppa_sources(cx, ppas),
        Action::Files(specs) => files::files(cx, specs),
        Action::Downloads(specs) => files::downloads(cx, specs),
        Action::Certificates(spec) => certificates::apply(cx, spec),
        Action::Dns(spec) => system::dns(cx, spec),
        Action::Environment(spec) => system::environment(cx, spec),
        Action::Sysctl(kvs) => system::sysctl(cx, kvs),
        Action::Modules(mods) => system::modules(cx, mods),
        Action::Timesyncd(kvs) => system::timesyncd(cx, kvs),
        Action::Timezone(tz) => system::timezone(cx, tz),
        Action::Packages(spec) => packages::apply(cx, spec),
        Action::Systemctl(spec) => system::systemctl(cx, spec),
        Action::Commands(cmds) => commands::apply(cx, cmds),
    }
}

/// How a file in the target differs from what a step wants there.
pub struct FileDelta {
    /// The file's path in the target.
    pub real: String,
    /// The change line to report.
    pub change: String,
    /// Only mode and/or owner differ: fix them in place, no rewrite.
    pub content_same: bool,
    pub mode_same: bool,
    pub owner_same: bool,
}

/// Compare `path` in the target with the wanted content, mode and owner; `None` when it
/// already matches. A directory in the way is an error. An unknown owner (`None`: in a
/// dry run, an account an earlier step would create) never matches.
pub fn file_delta(
    cx: &StepCx,
    path: &cairn_userdata::model::AbsPath,
    content: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> Result<Option<FileDelta>, StepError> {
    let real = path.as_str().to_string();
    let meta = cx.host.meta(&real)?;
    if meta.as_ref().is_some_and(|m| m.is_dir) {
        return Err(StepError::msg(format!("{path} is a directory, not a file")));
    }
    let current = cx.host.read_opt(&real)?;
    let content_same = current.as_deref() == Some(content);
    let mode_same = meta.as_ref().is_some_and(|m| m.mode == mode);
    let owner_same = meta.as_ref().is_some_and(|m| Some((m.uid, m.gid)) == owner);
    if content_same && mode_same && owner_same {
        return Ok(None);
    }
    let change = if current.is_none() {
        format!("created {path} ({} bytes, mode {mode:04o})", content.len())
    } else if !content_same {
        format!("rewrote {path} ({} bytes, mode {mode:04o})", content.len())
    } else if !mode_same {
        format!("changed mode of {path} to {mode:04o}")
    } else {
        format!("changed owner of {path}")
    };
    Ok(Some(FileDelta {
        real,
        change,
        content_same,
        mode_same,
        owner_same,
    }))
}

impl FileDelta {
    /// Fix mode and owner in place; only for a delta whose content is the same.
    pub fn fix_attributes(
        &self,
        host: &crate::host::Host,
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> Result<(), StepError> {
        if !self.mode_same {
            host.set_mode(&self.real, mode)?;
        }
        if let (Some((uid, gid)), false) = (owner, self.owner_same) {
            host.set_owner(&self.real, uid, gid)?;
        }
        Ok(())
    }
}

/// [`converge_file`] with the write queued in `batch` (mode and owner alone are fixed at
/// once). The same path queued twice is written before it is compared again.
pub fn converge_queued(
    cx: &StepCx,
    batch: &mut crate::host::fs::WriteBatch,
    path: &cairn_userdata::model::AbsPath,
    content: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> Result<Option<String>, StepError> {
    if batch.holds(path.as_str()) {
        batch.commit(cx.host)?;
    }
    let Some(delta) = file_delta(cx, path, content, mode, owner)? else {
        return Ok(None);
    };
    if !cx.dry_run {
        if delta.content_same {
            delta.fix_attributes(cx.host, mode, owner)?;
        } else {
            batch.push(cx.host, &delta.real, content.to_vec(), mode, owner)?;
        }
    }
    Ok(Some(delta.change))
}

/// Write `content` to `path` in the target if it differs (content, mode or owner), the
/// building block most kinds share. Returns the change line, if any.
pub fn converge_file(
    cx: &mut StepCx,
    path: &cairn_userdata::model::AbsPath,
    content: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> Result<Option<String>, StepError> {
    let Some(delta) = file_delta(cx, path, content, mode, owner)? else {
        return Ok(None);
    };
    if !cx.dry_run {
        if delta.content_same {
            delta.fix_attributes(cx.host, mode, owner)?;
        } else {
            cx.host.write_atomic(&delta.real, content, mode, owner)?;
        }
    }
    Ok(Some(delta.change))
}
