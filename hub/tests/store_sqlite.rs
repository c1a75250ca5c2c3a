#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The storage suite against SQLite (a fresh file per test), plus what only SQLite has:
//! WAL, migrations applied at start and re-applied harmlessly, secrets never on disk.

mod common;

use cairn_hub::store::Backend;
use cairn_hub::{SqlStore, Store};

async fn fresh() -> (SqlStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqlStore::open(dir.path().join("hub.db").to_str().unwrap())
        .await
        .unwrap();
    assert_eq!(store.backend(), Backend::Sqlite);
    (store, dir)
}

storage_suite!(fresh);

#[tokio::test]
async fn sqlite_file_uses_wal_migrates_once_and_never_holds_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hub.db");
    let url = path.to_str().unwrap();
    let store = SqlStore::open(url).await.unwrap();
    let p = common::default_project();
    let token = common::token(&store, &p, None).await;
    let reg = store
        .register_host(&common::registration(&token, "edge-1", &[]))
        .await
        .unwrap();
    let key = common::registration_key();
    let keyed = store
        .register_host(&common::keyed_registration(&token, "edge-2", &key))
        .await
        .unwrap();
    // WAL: the write-ahead log file exists beside the database while it is open.
    assert!(
        dir.path().join("hub.db-wal").exists(),
        "no WAL file: journal mode is not WAL"
    );
    // Neither secret is stored anywhere in the files, only their hashes.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend(std::fs::read(dir.path().join("hub.db-wal")).unwrap());
    let text = String::from_utf8_lossy(&bytes);
    let body = |s: &str| s.split_at(9).1.to_owned(); // without the cairn_xx_ prefix
    assert!(
        !text.contains(&body(&token)),
        "the token secret is stored in clear"
    );
    assert!(
        !text.contains(&body(&reg.credential)),
        "the host credential is stored in clear"
    );
    assert!(
        !text.contains(&body(&key)),
        "the registration key is stored in clear"
    );
    assert!(
        !text.contains(&body(&keyed.credential)),
        "the credential derived from the registration key is stored in clear"
    );
    assert!(text.contains(&cairn_hub::secret::sha256_hex(&token)));
    store.close().await;

    // Re-opening applies no migration twice and keeps the data (also from a sqlite: URL).
    let again = SqlStore::open(&format!("sqlite://{url}")).await.unwrap();
    let hosts = again.list_hosts(None).await.unwrap();
    assert_eq!(hosts.len(), 2);
    assert_eq!(hosts[0].name, "edge-1");
    again
        .authenticate_host(&reg.host.id, &reg.credential)
        .await
        .unwrap();
    // A retry after a restart of the hub still gets the same identity.
    let retried = again
        .register_host(&common::keyed_registration(&token, "edge-2", &key))
        .await
        .unwrap();
    assert_eq!(retried.credential, keyed.credential);
    again.close().await;
}

#[tokio::test]
async fn an_unusable_database_path_is_a_clear_error() {
    let err = SqlStore::open("/nonexistent-dir/for/sure/hub.db")
        .await
        .unwrap_err();
    let text = format!("{err}");
    assert!(text.contains("/nonexistent-dir/for/sure/hub.db"), "{text}");
    assert_eq!(err.code(), "internal");
}

/// A database made before registration keys existed (schema version 1 only, with a token and
/// a host registered then) is migrated at start: the old host keeps working, the old token
/// registers keyed hosts, and their retries are recognised.
#[tokio::test]
async fn a_database_from_before_registration_keys_is_migrated() {
    use cairn_hub::secret::sha256_hex;
    use sqlx::migrate::{Migration, MigrationType, Migrator};
    use std::borrow::Cow;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hub.db");
    let url = path.to_str().unwrap();
    {
        let opts = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(opts).await.unwrap();
        let v1 = Migrator {
            migrations: Cow::Owned(vec![Migration::new(
                1,
                Cow::Borrowed("initial schema"),
                MigrationType::Simple,
                Cow::Borrowed(include_str!("../migrations/0001_init.sql")),
                false,
            )]),
            ..Migrator::DEFAULT
        };
        v1.run(&pool).await.unwrap();
        sqlx::query(
            "INSERT INTO registration_tokens (id, project_id, name, secret_sha256, hint, created_at) \
             VALUES ('rt_old', 'p_default', 'old', $1, 'cairn_rt_…', 0)",
        )
        .bind(sha256_hex("cairn_rt_old-token"))
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO hosts (id, project_id, name, tags, inventory, status, credential_sha256, \
             token_id, registered_at, last_seen) \
             VALUES ('h_old', 'p_default', 'old-host', '{}', '{}', 'registered', $1, 'rt_old', 0, 0)",
        )
        .bind(sha256_hex("cairn_hc_old-credential"))
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    }
    let store = SqlStore::open(url).await.unwrap();
    let old = store
        .authenticate_host("h_old", "cairn_hc_old-credential")
        .await
        .unwrap();
    assert_eq!(old.name, "old-host");
    let key = common::registration_key();
    let reg = common::keyed_registration("cairn_rt_old-token", "new-host", &key);
    let first = store.register_host(&reg).await.unwrap();
    let again = store.register_host(&reg).await.unwrap();
    assert!(again.repeated);
    assert_eq!(again.credential, first.credential);
    // The old host's name is still taken for a keyed registration.
    assert!(matches!(
        store
            .register_host(&common::keyed_registration(
                "cairn_rt_old-token",
                "old-host",
                &key
            ))
            .await,
        Err(cairn_hub::StoreError::Conflict(_))
    ));
    store.close().await;
}
