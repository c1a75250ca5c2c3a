//! `ppa:OWNER/NAME` apt sources: translated to the Launchpad archive line for the target's
//! Ubuntu release, or refused (nothing written) on a target that is not Ubuntu. Written
//! verbatim, such a line would leave apt unable to read its lists, and every later package
//! step would fail.

use super::{files, Changes, StepCx, StepError};
use cairn_userdata::model::{FileSpec, Mode, Owner, PpaSource};

/// Resolve every PPA of the step first: one that cannot be translated fails the step before
/// any source file (or, since this action runs before the step's files, any key) is written.
pub fn ppa_sources(cx: &mut StepCx, ppas: &[PpaSource]) -> Result<Changes, StepError> {
    let os = cx.host.os();
    let mut specs = Vec::with_capacity(ppas.len());
    for ppa in ppas {
        let Some(release) = os.ubuntu_release() else {
            let target = if os.pretty_name.is_empty() {
                if os.id.is_empty() {
                    "a system without os-release".to_string()
                } else {
                    os.id.clone()
                }
            } else {
                os.pretty_name.clone()
            };
            return Err(StepError::msg(format!(
                "{}: apt source `{}` (ppa:{}/{}) is a Launchpad PPA, which is built only for \
                 Ubuntu releases, and the target is {target}; give the archive's own `deb` \
                 line instead. Nothing was written",
                ppa.location, ppa.entry, ppa.owner, ppa.name
            )));
        };
        if !release.chars().all(|c| c.is_ascii_lowercase()) {
            return Err(StepError::msg(format!(
                "{}: apt source `{}` (ppa:{}/{}): the target's Ubuntu release name `{release}` \
                 (os-release VERSION_CODENAME) is not a plain codename. Nothing was written",
                ppa.location, ppa.entry, ppa.owner, ppa.name
            )));
        }
        specs.push(FileSpec {
            path: ppa.path.clone(),
            content: format!("{}\n", ppa.deb_line(release)).into_bytes(),
            mode: Some(Mode(0o644)),
            owner: Some(Owner::Id(0)),
            group: Some(Owner::Id(0)),
            append: false,
            location: ppa.location.clone(),
        });
    }
    files::files(cx, &specs)
}
