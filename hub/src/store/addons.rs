//! Add-on profiles attached to assignments (migration 0004), and the profile a host is
//! served with them: its infrastructure profile with `addon_profiles` filled in order.

use cairn_proto::profile::AttachedAddons;
use cairn_proto::{profile::Layer, Profile};
use serde::{Deserialize, Serialize};

use super::db::{args, Conn, Pool};
use super::sql::{host_in_project, profile_from_row, project_ids, target_key, PROFILE_SELECT};
use super::{ProfileRecord, ProjectRef, Target};
use crate::error::{db, StoreError};
use crate::secret;

/// One attached add-on profile: a name and a pinned version (`None`: the latest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddonRef {
    pub name: String,
    pub version: Option<u64>,
}

impl std::fmt::Display for AddonRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.version {
            Some(v) => write!(f, "{}@{v}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// `NAME` or `NAME@VERSION`.
pub fn parse_addon_ref(s: &str) -> Result<AddonRef, StoreError> {
    let (name, version) = match s.split_once('@') {
        Some((n, v)) => (
            n,
            Some(v.parse::<u64>().map_err(|_| {
                StoreError::Invalid(format!("`{s}`: the version after `@` is a number"))
            })?),
        ),
        None => (s, None),
    };
    cairn_proto::profile::check_name(name).map_err(|e| StoreError::Invalid(e.to_string()))?;
    Ok(AddonRef {
        name: name.to_string(),
        version,
    })
}

async fn visible_profile(
    c: &mut Conn<'_>,
    tid: &str,
    pid: &str,
    name: &str,
    version: Option<u64>,
) -> Result<Option<ProfileRecord>, StoreError> {
    let sql = format!(
        "{PROFILE_SELECT} WHERE pr.tenant_id = $1 AND pr.name = $2 \
         AND (pr.project_id IS NULL OR pr.project_id = $3) AND ($4 IS NULL OR pr.version = $4) \
         ORDER BY pr.version DESC LIMIT 1"
    );
    let version = version.and_then(|v| i64::try_from(v).ok());
    match c
        .fetch_optional(&sql, args![tid, name, pid, version])
        .await
        .map_err(db(format!("reading profile {name}")))?
    {
        Some(r) => Ok(Some(profile_from_row(&r)?)),
        None => Ok(None),
    }
}

fn parse(record: &ProfileRecord) -> Result<Profile, StoreError> {
    serde_json::from_str(&record.body).map_err(|source| StoreError::Corrupt {
        context: format!(
            "parsing the stored profile {} v{}",
            record.info.name, record.info.version
        ),
        source,
    })
}

/// Attach add-on profiles (in order) to the target's existing assignment; `[]` detaches.
/// Each must be an add-on profile visible to the project, and together with the
/// assignment's profile they must merge (no release, manifest or artifact twice).
pub(super) async fn attach(
    pool: &Pool,
    project: &ProjectRef,
    target: &Target,
    addons: &[AddonRef],
) -> Result<(), StoreError> {
    let mut c = Conn::Pool(pool);
    let (tid, pid) = project_ids(&mut c, project).await?;
    let host_id = match target {
        Target::Host(h) => Some(host_in_project(&mut c, &pid, project, h).await?),
        Target::Tag { .. } => None,
    };
    let key = target_key(host_id.as_deref(), target);
    let row = c
        .fetch_optional(
            "SELECT profile_name, profile_version FROM assignments WHERE project_id = $1 AND target = $2",
            args![&pid, &key],
        )
        .await
        .map_err(db("reading the assignment"))?
        .ok_or_else(|| {
            StoreError::NotFound(format!(
                "the target has no assignment in project {project}: assign a profile first"
            ))
        })?;
    let name = row
        .text("profile_name")
        .map_err(db("reading the assignment"))?;
    let version = row
        .opt_i64("profile_version")
        .map_err(db("reading the assignment"))?
        .and_then(|v| u64::try_from(v).ok());
    combine(&mut c, &tid, &pid, project, &name, version, addons).await?;
    let text = serde_json::to_string(addons)
        .map_err(|e| StoreError::Internal(format!("writing the add-on list: {e}")))?;
    pool.execute(
        "UPDATE assignments SET addons = $1 WHERE project_id = $2 AND target = $3",
        args![text, &pid, &key],
    )
    .await
    .map_err(db("attaching add-on profiles"))?;
    Ok(())
}

/// Check that `addons` are add-on profiles visible to the project that combine with
/// profile `name` (`version`, or its latest): what [`attach`] checks, before an assignment
/// is changed.
pub(super) async fn check(
    pool: &Pool,
    project: &ProjectRef,
    name: &str,
    version: Option<u64>,
    addons: &[AddonRef],
) -> Result<(), StoreError> {
    let mut c = Conn::Pool(pool);
    let (tid, pid) = project_ids(&mut c, project).await?;
    combine(&mut c, &tid, &pid, project, name, version, addons).await
}

async fn combine(
    c: &mut Conn<'_>,
    tid: &str,
    pid: &str,
    project: &ProjectRef,
    name: &str,
    version: Option<u64>,
    addons: &[AddonRef],
) -> Result<(), StoreError> {
    let mut attached = Vec::new();
    for a in addons {
        let rec = visible_profile(c, tid, pid, &a.name, a.version)
            .await?
            .ok_or_else(|| {
                StoreError::NotFound(format!(
                    "no add-on profile `{a}` is visible to project {project}"
                ))
            })?;
        let p = parse(&rec)?;
        let Some(layer) = single_addons(&p) else {
            return Err(StoreError::Invalid(format!(
                "profile `{}` v{} is not an add-on profile (one with only an `addons` layer)",
                rec.info.name, rec.info.version
            )));
        };
        attached.push(AttachedAddons {
            name: rec.info.name.clone(),
            version: rec.info.version,
            addons: layer.clone(),
        });
    }
    // The combination must merge now (versions that follow the latest are checked again
    // whenever the host is served).
    if let Some(base) = visible_profile(c, tid, pid, name, version).await? {
        let mut p = parse(&base)?;
        if p.is_addon_profile() && !addons.is_empty() {
            return Err(StoreError::Invalid(format!(
                "profile `{name}` is an add-on profile: attach add-ons to an infrastructure profile"
            )));
        }
        p.addon_profiles = attached;
        if let Err(e) = p.merged_addons() {
            return Err(StoreError::Invalid(format!(
                "these add-on profiles do not combine with profile {name}: {}",
                e.message
            )));
        }
    }
    Ok(())
}

fn single_addons(p: &Profile) -> Option<&cairn_proto::profile::AddonsLayer> {
    match p.layers.as_slice() {
        [Layer::Addons(a)] if p.addon_profiles.is_empty() => Some(a),
        _ => None,
    }
}

/// The record a host is served: `record` itself without attachments; otherwise its
/// profile with `addon_profiles` filled (each resolved now: a name without a version is its
/// latest), as canonical JSON whose SHA-256 is the served ETag, so attaching, detaching or
/// publishing a followed add-on version changes what the host fetches.
pub(super) async fn compose(
    pool: &Pool,
    tid: &str,
    pid: &str,
    record: ProfileRecord,
    addons: Option<String>,
) -> Result<ProfileRecord, StoreError> {
    let list: Vec<AddonRef> = match addons.as_deref() {
        None | Some("") => return Ok(record),
        Some(t) => serde_json::from_str(t).map_err(|source| StoreError::Corrupt {
            context: "parsing an assignment's add-on list".into(),
            source,
        })?,
    };
    if list.is_empty() {
        return Ok(record);
    }
    let mut c = Conn::Pool(pool);
    let mut profile = parse(&record)?;
    for a in &list {
        // An add-on profile removed or replaced by a non-add-on version is left out (and
        // logged); the rest is still served.
        let Some(rec) = visible_profile(&mut c, tid, pid, &a.name, a.version).await? else {
            tracing::warn!(addon = %a, "an attached add-on profile is no longer visible; left out");
            continue;
        };
        let p = parse(&rec)?;
        match single_addons(&p) {
            Some(layer) => profile.addon_profiles.push(AttachedAddons {
                name: rec.info.name.clone(),
                version: rec.info.version,
                addons: layer.clone(),
            }),
            None => {
                tracing::warn!(addon = %a, "an attached profile is not an add-on profile; left out")
            }
        }
    }
    let body = serde_json::to_string(&profile)
        .map_err(|e| StoreError::Internal(format!("serializing a profile: {e}")))?;
    let mut info = record.info;
    info.sha256 = secret::sha256_hex(&body);
    Ok(ProfileRecord { info, body })
}
