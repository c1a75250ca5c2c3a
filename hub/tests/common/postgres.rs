//! A throw-away PostgreSQL server from Debian's packages, for tests: `initdb` in a temporary
//! directory, listening only on a Unix socket there. One server per test binary, shared by
//! its tests (each gets its own database); a watchdog process stops it and deletes the
//! directory as soon as the test process exits, even if it is killed. As root, the server
//! runs as the `postgres` user (PostgreSQL refuses to run as root).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

pub struct PgServer {
    dir: PathBuf,
    bin: PathBuf,
    run_as: Option<String>,
}

/// Where Debian puts the server binaries (`/usr/lib/postgresql/<major>/bin`), or PATH.
fn find_bin() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists() && p.join("pg_ctl").exists())
        .collect();
    candidates.sort();
    if let Some(newest) = candidates.pop() {
        return Some(newest);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).find(|p| p.join("initdb").exists() && p.join("pg_ctl").exists())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl PgServer {
    /// Start a server; a missing PostgreSQL fails the test (scripts/install-test-deps.sh
    /// installs it).
    pub fn start() -> PgServer {
        let Some(bin) = find_bin() else {
            panic!(
                "PostgreSQL server binaries not found (initdb, pg_ctl): install them with \
                 `apt-get install postgresql` (scripts/install-test-deps.sh does)"
            );
        };
        let dir = tempfile::Builder::new()
            .prefix("cairn-pg-")
            .tempdir()
            .unwrap()
            .keep();
        let run_as = is_root().then(|| "postgres".to_string());
        if let Some(user) = &run_as {
            let status = Command::new("chown")
                .arg(format!("{user}:"))
                .arg(&dir)
                .status()
                .unwrap();
            assert!(
                status.success(),
                "chown of the PostgreSQL test directory failed"
            );
        }
        let server = PgServer { dir, bin, run_as };
        let data = server.data();
        server.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ],
        );
        let opts = format!(
            "-k {} -c listen_addresses='' -c fsync=off -c full_page_writes=off -c max_connections=200",
            server.dir.display()
        );
        let log = server.dir.join("server.log");
        server.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-o",
                &opts,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "start",
            ],
        );
        server.watchdog();
        server
    }

    /// Stop the server and remove its directory once this test process is gone.
    fn watchdog(&self) {
        let stop = format!(
            "{}'{}' -D '{}' -m immediate -w stop",
            match &self.run_as {
                Some(u) => format!("runuser -u {u} -- "),
                None => String::new(),
            },
            self.bin.join("pg_ctl").display(),
            self.data().display()
        );
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {stop} >/dev/null 2>&1; rm -rf '{dir}'",
            pid = std::process::id(),
            dir = self.dir.display()
        );
        // Deliberately not waited for: it must outlive this process (setsid detaches it).
        #[allow(clippy::zombie_processes)]
        Command::new("setsid")
            .args(["sh", "-c", &script])
            .current_dir("/")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("starting the PostgreSQL watchdog");
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let exe = self.bin.join(tool);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.arg("-u").arg(user).arg("--").arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        let out = cmd.args(args).current_dir("/").output().unwrap();
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// URL of the maintenance database.
    pub fn admin_url(&self) -> String {
        self.url("postgres")
    }

    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://postgres@localhost/{db}?host={}",
            socket_dir(&self.dir)
        )
    }

    /// A new, empty database; its URL.
    pub async fn fresh_database(&self) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "cairn_test_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        use sqlx::Connection as _;
        let mut conn = sqlx::PgConnection::connect(&self.admin_url())
            .await
            .unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        self.url(&name)
    }
}

fn socket_dir(p: &Path) -> String {
    // The URL's query value: percent-encode what could break it.
    p.display()
        .to_string()
        .replace('%', "%25")
        .replace('&', "%26")
        .replace(' ', "%20")
}

/// The server shared by this test binary (started on first use).
pub fn shared() -> &'static PgServer {
    static SERVER: OnceLock<PgServer> = OnceLock::new();
    SERVER.get_or_init(PgServer::start)
}
