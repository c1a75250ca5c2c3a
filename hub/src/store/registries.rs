//! Registry rows (migration 0004): the SQL behind the registry methods of [`super::Store`].
//! Credentials arrive and leave sealed; this module never sees them in clear.

use cairn_proto::registry::RegistryKind;

use super::db::{args, is_unique_violation, Conn, Pool, Row};
use super::sql::{project_ids, tenant_id};
use super::{now, NewRegistry, ProjectRef, RegistryInfo, RegistryRecord, Scope};
use crate::error::{db, StoreError};

const SELECT: &str = "SELECT r.id, r.name, r.kind, r.url, r.ca_pem, r.sealed, r.created_at, \
     r.project_id, t.name AS tenant_name, p.name AS project_name \
     FROM registries r JOIN tenants t ON t.id = r.tenant_id \
     LEFT JOIN projects p ON p.id = r.project_id";

fn kind_of(s: &str, id: &str) -> Result<RegistryKind, StoreError> {
    match s {
        "helm" => Ok(RegistryKind::Helm),
        "oci" => Ok(RegistryKind::Oci),
        other => Err(StoreError::Internal(format!(
            "registry {id} has an unknown kind `{other}` (a newer hub's database?)"
        ))),
    }
}

fn from_row(r: &Row) -> Result<RegistryRecord, StoreError> {
    let ctx = || db("reading a registry row");
    let id = r.text("id").map_err(ctx())?;
    let ca_pem = r.opt_text("ca_pem").map_err(ctx())?;
    let sealed = r.opt_text("sealed").map_err(ctx())?;
    Ok(RegistryRecord {
        info: RegistryInfo {
            kind: kind_of(&r.text("kind").map_err(ctx())?, &id)?,
            tenant: r.text("tenant_name").map_err(ctx())?,
            project: r.opt_text("project_name").map_err(ctx())?,
            name: r.text("name").map_err(ctx())?,
            url: r.text("url").map_err(ctx())?,
            has_ca: ca_pem.is_some(),
            has_credentials: sealed.is_some(),
            created_at: r.i64("created_at").map_err(ctx())?,
            id,
        },
        ca_pem,
        sealed,
    })
}

async fn scope_ids(pool: &Pool, scope: &Scope) -> Result<(String, Option<String>), StoreError> {
    Ok(match scope {
        Scope::Tenant(t) => (tenant_id(&mut Conn::Pool(pool), t).await?, None),
        Scope::Project(p) => {
            let (t, p) = project_ids(&mut Conn::Pool(pool), p).await?;
            (t, Some(p))
        }
    })
}

fn scope_name(scope: &Scope) -> String {
    match scope {
        Scope::Tenant(t) => format!("tenant {t}"),
        Scope::Project(p) => format!("project {p}"),
    }
}

pub(super) async fn create(pool: &Pool, new: &NewRegistry) -> Result<RegistryInfo, StoreError> {
    let (tid, pid) = scope_ids(pool, &new.scope).await?;
    let created_at = now();
    let scope_key = pid.clone().unwrap_or_default();
    pool.execute(
        "INSERT INTO registries (id, tenant_id, project_id, scope_key, name, kind, url, ca_pem, \
         sealed, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        args![
            &new.id,
            tid,
            pid,
            scope_key,
            &new.name,
            new.kind.as_str(),
            &new.url,
            new.ca_pem.clone(),
            new.sealed.clone(),
            created_at
        ],
    )
    .await
    .map_err(|e| {
        if is_unique_violation(&e) {
            StoreError::Conflict(format!(
                "{} already has a registry named `{}`: delete it first to replace it",
                scope_name(&new.scope),
                new.name
            ))
        } else {
            db(format!("creating registry {}", new.name))(e)
        }
    })?;
    Ok(RegistryInfo {
        id: new.id.clone(),
        tenant: new.scope.tenant().to_string(),
        project: match &new.scope {
            Scope::Tenant(_) => None,
            Scope::Project(p) => Some(p.project.clone()),
        },
        name: new.name.clone(),
        kind: new.kind,
        url: new.url.clone(),
        has_ca: new.ca_pem.is_some(),
        has_credentials: new.sealed.is_some(),
        created_at,
    })
}

pub(super) async fn list(
    pool: &Pool,
    tenant: Option<&str>,
    visible_to: Option<&ProjectRef>,
) -> Result<Vec<RegistryInfo>, StoreError> {
    let rows = match visible_to {
        Some(p) => {
            let (tid, pid) = project_ids(&mut Conn::Pool(pool), p).await?;
            pool.fetch_all(
                &format!(
                    "{SELECT} WHERE r.tenant_id = $1 AND (r.project_id IS NULL OR r.project_id = $2) \
                     ORDER BY t.name, r.name, r.scope_key"
                ),
                args![tid, pid],
            )
            .await
        }
        None => {
            pool.fetch_all(
                &format!("{SELECT} WHERE ($1 IS NULL OR t.name = $1) ORDER BY t.name, r.name, r.scope_key"),
                args![tenant.map(str::to_string)],
            )
            .await
        }
    }
    .map_err(db("listing registries"))?;
    rows.iter().map(|r| from_row(r).map(|x| x.info)).collect()
}

pub(super) async fn delete(
    pool: &Pool,
    scope: &Scope,
    name: &str,
) -> Result<RegistryInfo, StoreError> {
    let (tid, pid) = scope_ids(pool, scope).await?;
    let scope_key = pid.unwrap_or_default();
    let row = pool
        .fetch_optional(
            &format!("{SELECT} WHERE r.tenant_id = $1 AND r.scope_key = $2 AND r.name = $3"),
            args![&tid, &scope_key, name],
        )
        .await
        .map_err(db(format!("reading registry {name}")))?
        .ok_or_else(|| {
            StoreError::NotFound(format!(
                "{} has no registry named `{name}`",
                scope_name(scope)
            ))
        })?;
    let rec = from_row(&row)?;
    pool.execute("DELETE FROM registries WHERE id = $1", args![&rec.info.id])
        .await
        .map_err(db(format!("deleting registry {name}")))?;
    Ok(rec.info)
}

pub(super) async fn for_host(
    pool: &Pool,
    host_id: &str,
) -> Result<Vec<RegistryRecord>, StoreError> {
    let row = pool
        .fetch_optional(
            "SELECT h.project_id, p.tenant_id FROM hosts h JOIN projects p ON p.id = h.project_id \
             WHERE h.id = $1",
            args![host_id],
        )
        .await
        .map_err(db(format!("reading host {host_id}")))?
        .ok_or_else(|| StoreError::NotFound(format!("there is no host `{host_id}`")))?;
    let ctx = || db(format!("reading host {host_id}"));
    let pid = row.text("project_id").map_err(ctx())?;
    let tid = row.text("tenant_id").map_err(ctx())?;
    let rows = pool
        .fetch_all(
            &format!(
                "{SELECT} WHERE r.tenant_id = $1 AND (r.project_id IS NULL OR r.project_id = $2) \
                 ORDER BY r.name, CASE WHEN r.project_id IS NULL THEN 1 ELSE 0 END"
            ),
            args![tid, pid],
        )
        .await
        .map_err(db(format!("reading the registries of host {host_id}")))?;
    let mut out: Vec<RegistryRecord> = Vec::new();
    for r in &rows {
        let rec = from_row(r)?;
        // Ordered project scope first within a name: the first of each name wins.
        if out.last().is_some_and(|l| l.info.name == rec.info.name) {
            continue;
        }
        out.push(rec);
    }
    Ok(out)
}
