//! The one place where SQLite and PostgreSQL differ.
//!
//! The store's logic ([`super::sql`]) is written once against this small interface: SQL text
//! with `$1`-style placeholders (both backends accept them), arguments as [`Val`]s, rows read
//! by column name with an explicit type. Connection setup, the transaction opening statement
//! (`BEGIN IMMEDIATE` for SQLite, so a read-then-write transaction never fails with
//! `SQLITE_BUSY_SNAPSHOT`), migrations and error classification live here.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Postgres, Row as _, Sqlite, Transaction};

use crate::error::StoreError;

/// Schema migrations, embedded in the binary; applied at every start (already-applied ones
/// are skipped, a changed one is refused by its checksum). The same SQL serves both backends.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "initial schema",
        include_str!("../../migrations/0001_init.sql"),
    ),
    (
        2,
        "registration key",
        include_str!("../../migrations/0002_registration_key.sql"),
    ),
    (
        4,
        "chart registries",
        include_str!("../../migrations/0004_registries.sql"),
    ),
];

/// How long a writer waits for SQLite's lock held by another process (the admin CLI).
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// A query argument. Nulls carry their type: PostgreSQL needs it.
#[derive(Debug, Clone)]
pub(crate) enum Val {
    I64(i64),
    Text(String),
    OptI64(Option<i64>),
    OptText(Option<String>),
}

impl From<i64> for Val {
    fn from(v: i64) -> Self {
        Val::I64(v)
    }
}
impl From<&str> for Val {
    fn from(v: &str) -> Self {
        Val::Text(v.to_owned())
    }
}
impl From<&String> for Val {
    fn from(v: &String) -> Self {
        Val::Text(v.clone())
    }
}
impl From<String> for Val {
    fn from(v: String) -> Self {
        Val::Text(v)
    }
}
impl From<Option<i64>> for Val {
    fn from(v: Option<i64>) -> Self {
        Val::OptI64(v)
    }
}
impl From<Option<String>> for Val {
    fn from(v: Option<String>) -> Self {
        Val::OptText(v)
    }
}
impl From<Option<&str>> for Val {
    fn from(v: Option<&str>) -> Self {
        Val::OptText(v.map(str::to_owned))
    }
}

/// `args![a, b, c]` builds a `Vec<Val>`.
macro_rules! args {
    ($($v:expr),* $(,)?) => { vec![$($crate::store::db::Val::from($v)),*] };
}
pub(crate) use args;

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// `postgres://` and `postgresql://` URLs are PostgreSQL; `sqlite:` URLs and plain file
    /// paths are SQLite.
    pub fn of(url: &str) -> Backend {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            Backend::Sqlite
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Pool {
    /// One writer connection (SQLite has one writer anyway; queuing in the pool is cheaper
    /// than lock retries) and a few readers, which WAL lets run beside the writer.
    Sqlite {
        write: SqlitePool,
        read: SqlitePool,
        sync: Arc<WalSync>,
    },
    Postgres(PgPool),
}

/// Group commit for SQLite: durability without an fsync per transaction on the writer.
///
/// Connections run with `synchronous = NORMAL`: a commit appends its frames to the WAL
/// without an fsync, so the single writer connection is free again at once. A durable
/// write then calls [`WalSync::after_commit`], which returns once an `fdatasync` of the WAL
/// that *started after this commit finished* has completed: one fsync covers every commit
/// that finished before it began, so concurrent writers share fsyncs instead of queueing
/// for one each. That is the guarantee of `synchronous = FULL` (the WAL is on disk when
/// the answer goes out) at a fraction of the cost. Checkpoints need nothing more: in
/// NORMAL mode SQLite syncs the WAL before a checkpoint and the database file after it.
/// Buffered heartbeats commit without waiting (see `Beats` in `sql.rs`).
#[derive(Debug)]
pub(crate) struct WalSync {
    /// The database's `-wal` file.
    wal: PathBuf,
    /// Commits finished so far; each durable commit takes the next number.
    committed: AtomicU64,
    /// Highest commit number known to be on disk. Held while an fsync runs.
    synced: tokio::sync::Mutex<u64>,
}

impl WalSync {
    fn new(db_file: &Path) -> WalSync {
        let mut wal = db_file.as_os_str().to_owned();
        wal.push("-wal");
        WalSync {
            wal: PathBuf::from(wal),
            committed: AtomicU64::new(0),
            synced: tokio::sync::Mutex::new(0),
        }
    }

    /// Wait until the commit that just finished is on disk.
    pub(crate) async fn after_commit(&self) -> Result<(), sqlx::Error> {
        let mine = self.committed.fetch_add(1, Ordering::SeqCst) + 1;
        let mut synced = self.synced.lock().await;
        if *synced >= mine {
            return Ok(()); // an fsync that started after this commit has completed
        }
        // Every commit numbered up to here finished before this fsync starts.
        let upto = self.committed.load(Ordering::SeqCst);
        let wal = self.wal.clone();
        let done = tokio::task::spawn_blocking(move || match std::fs::File::open(&wal) {
            Ok(f) => f.sync_data(),
            // No WAL file: every connection closed, which checkpoints the WAL into the
            // database file and syncs it (or the database is in memory).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        })
        .await
        .map_err(|e| sqlx::Error::Io(std::io::Error::other(e)))?;
        done.map_err(sqlx::Error::Io)?;
        *synced = upto;
        Ok(())
    }
}

fn sqlite_options(url: &str) -> Result<SqliteConnectOptions, StoreError> {
    let opts = if url.starts_with("sqlite:") {
        SqliteConnectOptions::from_str(url).map_err(|e| StoreError::Database {
            context: format!("parsing SQLite URL `{url}`"),
            source: e,
        })?
    } else {
        SqliteConnectOptions::new().filename(Path::new(url))
    };
    Ok(opts
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // NORMAL, with durability added back by group commit (`WalSync`): an acknowledged
        // event batch must survive a power cut of the hub (the agent deletes it from its
        // spool on the ack), so every durable write waits for an fsync of the WAL — shared
        // with the writes that finished at the same time.
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(SQLITE_BUSY_TIMEOUT)
        .foreign_keys(true))
}

impl Pool {
    /// Open the database named by `url` (creating a SQLite file if missing) and apply
    /// migrations.
    pub(crate) async fn connect(url: &str) -> Result<Pool, StoreError> {
        let pool = match Backend::of(url) {
            Backend::Sqlite => {
                let opts = sqlite_options(url)?;
                let sync = Arc::new(WalSync::new(opts.get_filename()));
                let write = SqlitePoolOptions::new()
                    .max_connections(1)
                    .connect_with(opts.clone())
                    .await
                    .map_err(|e| StoreError::Database {
                        context: format!("opening SQLite database {url}"),
                        source: e,
                    })?;
                migrator()
                    .run(&write)
                    .await
                    .map_err(|e| StoreError::Migrate {
                        context: format!("migrating SQLite database {url}"),
                        source: e,
                    })?;
                sync.after_commit()
                    .await
                    .map_err(|e| StoreError::Database {
                        context: format!("syncing SQLite database {url}"),
                        source: e,
                    })?;
                let read = SqlitePoolOptions::new()
                    .max_connections(4)
                    .connect_with(opts.create_if_missing(false))
                    .await
                    .map_err(|e| StoreError::Database {
                        context: format!("opening SQLite database {url} for reading"),
                        source: e,
                    })?;
                Pool::Sqlite { write, read, sync }
            }
            Backend::Postgres => {
                let opts = PgConnectOptions::from_str(url).map_err(|e| StoreError::Database {
                    context: "parsing the PostgreSQL URL".into(),
                    source: e,
                })?;
                let pool = PgPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_with(opts)
                    .await
                    .map_err(|e| StoreError::Database {
                        context: "connecting to PostgreSQL".into(),
                        source: e,
                    })?;
                migrator()
                    .run(&pool)
                    .await
                    .map_err(|e| StoreError::Migrate {
                        context: "migrating the PostgreSQL database".into(),
                        source: e,
                    })?;
                Pool::Postgres(pool)
            }
        };
        Ok(pool)
    }

    pub(crate) fn backend(&self) -> Backend {
        match self {
            Pool::Sqlite { .. } => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    pub(crate) async fn close(&self) {
        match self {
            Pool::Sqlite { write, read, .. } => {
                read.close().await;
                write.close().await;
            }
            Pool::Postgres(p) => p.close().await,
        }
    }

    /// Start a write transaction.
    pub(crate) async fn begin(&self) -> Result<Tx, sqlx::Error> {
        Ok(match self {
            Pool::Sqlite { write, sync, .. } => {
                Tx::Sqlite(write.begin_with("BEGIN IMMEDIATE").await?, Arc::clone(sync))
            }
            Pool::Postgres(p) => Tx::Pg(p.begin().await?),
        })
    }

    /// Run a read-only query outside a transaction.
    pub(crate) async fn fetch_all(
        &self,
        sql: &str,
        args: Vec<Val>,
    ) -> Result<Vec<Row>, sqlx::Error> {
        Ok(match self {
            Pool::Sqlite { read, .. } => sqlite_query(sql, args)
                .fetch_all(read)
                .await?
                .into_iter()
                .map(Row::Sqlite)
                .collect(),
            Pool::Postgres(p) => pg_query(sql, args)
                .fetch_all(p)
                .await?
                .into_iter()
                .map(Row::Pg)
                .collect(),
        })
    }

    pub(crate) async fn fetch_optional(
        &self,
        sql: &str,
        args: Vec<Val>,
    ) -> Result<Option<Row>, sqlx::Error> {
        Ok(match self {
            Pool::Sqlite { read, .. } => sqlite_query(sql, args)
                .fetch_optional(read)
                .await?
                .map(Row::Sqlite),
            Pool::Postgres(p) => pg_query(sql, args).fetch_optional(p).await?.map(Row::Pg),
        })
    }

    /// Run one writing statement in its own (durable) transaction; returns the rows
    /// affected.
    pub(crate) async fn execute(&self, sql: &str, args: Vec<Val>) -> Result<u64, sqlx::Error> {
        Ok(match self {
            Pool::Sqlite { write, sync, .. } => {
                let n = sqlite_query(sql, args)
                    .execute(write)
                    .await?
                    .rows_affected();
                sync.after_commit().await?;
                n
            }
            Pool::Postgres(p) => pg_query(sql, args).execute(p).await?.rows_affected(),
        })
    }
}

fn migrator() -> Migrator {
    let migrations: Vec<Migration> = MIGRATIONS
        .iter()
        .map(|(version, description, sql)| {
            Migration::new(
                *version,
                Cow::Borrowed(*description),
                MigrationType::Simple,
                Cow::Borrowed(*sql),
                false,
            )
        })
        .collect();
    Migrator {
        migrations: Cow::Owned(migrations),
        ..Migrator::DEFAULT
    }
}

type SqliteQuery<'q> = sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>>;
type PgQuery<'q> = sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>;

fn sqlite_query(sql: &str, args: Vec<Val>) -> SqliteQuery<'_> {
    let mut q = sqlx::query(sql);
    for a in args {
        q = match a {
            Val::I64(v) => q.bind(v),
            Val::Text(v) => q.bind(v),
            Val::OptI64(v) => q.bind(v),
            Val::OptText(v) => q.bind(v),
        };
    }
    q
}

fn pg_query(sql: &str, args: Vec<Val>) -> PgQuery<'_> {
    let mut q = sqlx::query(sql);
    for a in args {
        q = match a {
            Val::I64(v) => q.bind(v),
            Val::Text(v) => q.bind(v),
            Val::OptI64(v) => q.bind(v),
            Val::OptText(v) => q.bind(v),
        };
    }
    q
}

/// An open write transaction. Dropped without [`Tx::commit`], it rolls back.
pub(crate) enum Tx {
    Sqlite(Transaction<'static, Sqlite>, Arc<WalSync>),
    Pg(Transaction<'static, Postgres>),
}

impl Tx {
    pub(crate) async fn fetch_all(
        &mut self,
        sql: &str,
        args: Vec<Val>,
    ) -> Result<Vec<Row>, sqlx::Error> {
        Ok(match self {
            Tx::Sqlite(tx, _) => sqlite_query(sql, args)
                .fetch_all(&mut **tx)
                .await?
                .into_iter()
                .map(Row::Sqlite)
                .collect(),
            Tx::Pg(tx) => pg_query(sql, args)
                .fetch_all(&mut **tx)
                .await?
                .into_iter()
                .map(Row::Pg)
                .collect(),
        })
    }

    pub(crate) async fn fetch_optional(
        &mut self,
        sql: &str,
        args: Vec<Val>,
    ) -> Result<Option<Row>, sqlx::Error> {
        Ok(match self {
            Tx::Sqlite(tx, _) => sqlite_query(sql, args)
                .fetch_optional(&mut **tx)
                .await?
                .map(Row::Sqlite),
            Tx::Pg(tx) => pg_query(sql, args)
                .fetch_optional(&mut **tx)
                .await?
                .map(Row::Pg),
        })
    }

    pub(crate) async fn execute(&mut self, sql: &str, args: Vec<Val>) -> Result<u64, sqlx::Error> {
        Ok(match self {
            Tx::Sqlite(tx, _) => sqlite_query(sql, args)
                .execute(&mut **tx)
                .await?
                .rows_affected(),
            Tx::Pg(tx) => pg_query(sql, args)
                .execute(&mut **tx)
                .await?
                .rows_affected(),
        })
    }

    /// Commit; on return the transaction is on disk.
    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Sqlite(tx, sync) => {
                tx.commit().await?;
                sync.after_commit().await
            }
            Tx::Pg(tx) => tx.commit().await,
        }
    }

    /// Commit without waiting for the disk (SQLite): for what may be lost in a crash, like
    /// heartbeat times. It reaches the disk with the next durable commit or checkpoint.
    pub(crate) async fn commit_relaxed(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Sqlite(tx, _) => tx.commit().await,
            Tx::Pg(tx) => tx.commit().await,
        }
    }
}

/// A result row, read by column name with the type the caller expects.
pub(crate) enum Row {
    Sqlite(SqliteRow),
    Pg(PgRow),
}

impl Row {
    pub(crate) fn i64(&self, col: &str) -> Result<i64, sqlx::Error> {
        match self {
            Row::Sqlite(r) => r.try_get(col),
            Row::Pg(r) => r.try_get(col),
        }
    }

    pub(crate) fn opt_i64(&self, col: &str) -> Result<Option<i64>, sqlx::Error> {
        match self {
            Row::Sqlite(r) => r.try_get(col),
            Row::Pg(r) => r.try_get(col),
        }
    }

    pub(crate) fn text(&self, col: &str) -> Result<String, sqlx::Error> {
        match self {
            Row::Sqlite(r) => r.try_get(col),
            Row::Pg(r) => r.try_get(col),
        }
    }

    pub(crate) fn opt_text(&self, col: &str) -> Result<Option<String>, sqlx::Error> {
        match self {
            Row::Sqlite(r) => r.try_get(col),
            Row::Pg(r) => r.try_get(col),
        }
    }
}

/// Did this statement fail because of a UNIQUE or PRIMARY KEY constraint?
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// Either the pool (reads go to a reader connection) or an open transaction, so helpers
/// that only read can serve both.
pub(crate) enum Conn<'a> {
    Pool(&'a Pool),
    Tx(&'a mut Tx),
}

impl Conn<'_> {
    pub(crate) async fn fetch_optional(
        &mut self,
        sql: &str,
        args: Vec<Val>,
    ) -> Result<Option<Row>, sqlx::Error> {
        match self {
            Conn::Pool(p) => p.fetch_optional(sql, args).await,
            Conn::Tx(tx) => tx.fetch_optional(sql, args).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_commits_share_fsyncs_and_all_return_synced() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let db = dir.path().join("x.db");
        std::fs::write(dir.path().join("x.db-wal"), b"frames").unwrap_or_else(|e| panic!("{e}"));
        let sync = Arc::new(WalSync::new(&db));
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let sync = Arc::clone(&sync);
                tokio::spawn(async move { sync.after_commit().await })
            })
            .collect();
        for t in tasks {
            assert!(matches!(t.await, Ok(Ok(()))));
        }
        // Every commit is covered by a completed fsync.
        assert_eq!(*sync.synced.lock().await, 64);
        assert_eq!(sync.committed.load(Ordering::SeqCst), 64);
        // No WAL file (all connections closed, or in memory): nothing to sync.
        let gone = WalSync::new(&dir.path().join("missing.db"));
        assert!(gone.after_commit().await.is_ok());
    }
}
