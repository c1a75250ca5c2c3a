#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The same storage suite as `store_sqlite.rs`, against a real PostgreSQL started from
//! Debian's packages in a temporary directory (Unix socket only); each test gets its own
//! database. Without PostgreSQL installed this fails (scripts/install-test-deps.sh installs it).

mod common;

use cairn_hub::store::Backend;
use cairn_hub::SqlStore;

async fn fresh() -> (SqlStore, ()) {
    let server = common::postgres::shared();
    let url = server.fresh_database().await;
    let store = SqlStore::open(&url).await.unwrap();
    assert_eq!(store.backend(), Backend::Postgres);
    (store, ())
}

storage_suite!(fresh);

#[tokio::test]
async fn postgres_migrations_apply_once() {
    let server = common::postgres::shared();
    let url = server.fresh_database().await;
    let first = SqlStore::open(&url).await.unwrap();
    first.close().await;
    // A second hub on the same database finds the schema in place.
    let second = SqlStore::open(&url).await.unwrap();
    use cairn_hub::Store as _;
    assert_eq!(second.list_tenants().await.unwrap().len(), 1);
    second.close().await;
}
