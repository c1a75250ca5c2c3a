#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The storage suite against SQLite (a fresh file per test), plus what only SQLite has:
//! WAL, migrations applied at start and re-applied harmlessly, secrets never on disk.

mod common;

use cairn_hub::store::Backend;
use cairn_hub::{SqlStore, Store};

async fn fresh() -> Option<(SqlStore, tempfile::TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    let store = SqlStore::open(dir.path().join("hub.db").to_str().unwrap())
        .await
        .unwrap();
    assert_eq!(store.backend(), Backend::Sqlite);
    Some((store, dir))
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
