//! The `cairn-hub` command line: `serve`, and admin commands that act directly on the
//! database named by `--db` (so they work whether or not a hub is running, and are easy to
//! script). Every admin command prints a table, or JSON with `--output json`.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;

use crate::error::StoreError;
use crate::http::{self, ApiConfig, MIN_ADMIN_TOKEN_LEN};
use crate::pki::{self, Advertise, HubPki, Names, Trust};
use crate::server;
use crate::store::{
    self, Host, NewToken, ProfileInfo, ProjectRef, Published, Scope, SqlStore, Store, Target,
    TokenInfo,
};
use cairn_cli::report::{error_chain, redact_url};

const AFTER_HELP: &str = "\
Examples:
  cairn-hub serve --listen 0.0.0.0:8443 --advertise hub.example.org \\
      --admin-token-file /etc/cairn-hub/admin-token
  cairn-hub token create --name lab --expires-in 7d --max-uses 10   # prints the join string
  cairn-hub profile upload examples/profile-k3s.yaml
  cairn-hub assign --tag site=lab --profile edge-k3s
  cairn-hub pack sync edge-k3s            # pre-fetch its artifacts into the hub's mirror
  cairn-hub hosts --output json

Admin commands open the database directly (SQLite file or postgres:// URL), so run them
on the hub's machine, or use the same commands over HTTP under /v1/admin (docs/protocol.md).
Exit status: 0 done, 1 refused or invalid input, 2 usage error, 3 database unreachable.";

/// Cairn's reference hub: edge hosts register with a token, receive the cluster profile an
/// operator assigned to them, and report progress.
#[derive(Debug, Parser)]
#[command(name = "cairn-hub", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// Database: a SQLite file path (created if missing) or a postgres:// URL.
    #[arg(
        long,
        global = true,
        env = "CAIRN_HUB_DB",
        default_value = "cairn-hub.db"
    )]
    pub db: String,
    /// Where `serve` keeps the hub's own CA and certificates (`tls/`) and what devices need
    /// to join (`join.json`, read by `token create`). Default: the SQLite database's
    /// directory; required with PostgreSQL unless --tls-cert is given.
    #[arg(long, global = true, env = "CAIRN_HUB_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Output of admin commands: human-readable tables, or JSON for scripts.
    #[arg(long, global = true, value_enum, default_value_t = Output::Human)]
    pub output: Output,
    #[command(flatten)]
    pub mirror: crate::mirror::cli::MirrorArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the /v1 API over HTTPS (with the hub's own CA unless --tls-cert is given).
    Serve(ServeArgs),
    /// Create or list tenants (a tenant holds projects and tenant-wide profiles).
    #[command(subcommand)]
    Tenant(TenantCmd),
    /// Create or list projects (a project holds tokens, hosts and its own profiles).
    #[command(subcommand)]
    Project(ProjectCmd),
    /// Create, list or revoke registration tokens.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Upload (publish), list or show cluster profiles.
    #[command(subcommand)]
    Profile(ProfileCmd),
    /// Create, list or delete chart registries (Helm repositories, OCI registries) and
    /// their credentials, which are encrypted with the hub's registry key.
    #[command(subcommand)]
    Registry(RegistryCmd),
    /// Assign a profile to one host or to every host with a tag (replaces the target's
    /// previous assignment).
    Assign(AssignArgs),
    /// Remove the assignment of a host or tag.
    Unassign(UnassignArgs),
    /// List hosts (default), or show, remove or read the events of one.
    Hosts(HostsArgs),
    /// Pre-fetch a published profile's artifacts into the hub's mirror (`pack sync`).
    #[command(subcommand)]
    Pack(crate::mirror::cli::PackCmd),
    /// The artifact mirror: import an air-gap bundle, garbage-collect, show usage.
    #[command(subcommand)]
    Mirror(crate::mirror::cli::MirrorCmd),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write man pages (cairn-hub.1 and one per subcommand) into DIR.
    Manpages {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on. Use 0.0.0.0:8443 (or [::]:8443) to serve the network.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
    /// A DNS name or IP address devices reach the hub at, optionally with :PORT when it is
    /// not the --listen port. Repeatable. The hub's certificate is made for every one (and
    /// the --listen address, and loopback); join strings name the first.
    #[arg(long, value_name = "NAME|IP[:PORT]", value_parser = clap::value_parser!(Advertise))]
    pub advertise: Vec<Advertise>,
    /// Your own PEM certificate chain for the hub (server certificate first) instead of the
    /// hub's own CA.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// With --tls-cert: the PEM CA certificate devices pin (join strings carry its SHA-256;
    /// GET /v1/ca serves it). Default: the last certificate of --tls-cert.
    #[arg(long, requires = "tls_cert", value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Serve plain HTTP instead of TLS. For local tests only: refused unless --listen is a
    /// loopback address.
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key", "ca", "advertise"])]
    pub insecure_http: bool,
    /// File holding the admin token for /v1/admin (at least 16 characters). Without it and
    /// without CAIRN_HUB_ADMIN_TOKEN, the admin API is disabled.
    #[arg(long)]
    pub admin_token_file: Option<PathBuf>,
    /// Heartbeat period asked of agents, in seconds.
    #[arg(long, default_value_t = cairn_proto::protocol::DEFAULT_HEARTBEAT_SECS,
          value_parser = clap::value_parser!(u64).range(5..=3600))]
    pub heartbeat_interval: u64,
    /// Most connections open at once. When reached, the connection waiting longest for its
    /// first request, else the one idle longest, is closed to admit a new one. Default: the
    /// open-files limit (raised to its hard limit at start) minus 128 descriptors kept for
    /// the database and files, at most 16384.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: Option<u64>,
    /// Most connections open at once from one client address (an IPv6 /64 counts as one);
    /// 0 for no cap. Raise it when many hosts share an address (NAT, a TCP load balancer).
    #[arg(long, default_value_t = server::DEFAULT_MAX_CONNECTIONS_PER_IP)]
    pub max_connections_per_ip: usize,
    /// Time allowed for the TLS handshake (90s, 2m, or seconds).
    #[arg(long, value_name = "DURATION", value_parser = parse_timeout,
          default_value_t = server::HANDSHAKE_TIMEOUT.as_secs())]
    pub tls_handshake_timeout: u64,
    /// Time allowed after the handshake for the first request's headers (and for those of
    /// each later HTTP/1.1 request).
    #[arg(long, value_name = "DURATION", value_parser = parse_timeout,
          default_value_t = server::HEADER_TIMEOUT.as_secs())]
    pub header_timeout: u64,
    /// A connection with no open request is closed after this long.
    #[arg(long, value_name = "DURATION", value_parser = parse_timeout,
          default_value_t = server::IDLE_TIMEOUT.as_secs())]
    pub idle_timeout: u64,
    /// Longest time a request may take, body upload included (then 408).
    #[arg(long, value_name = "DURATION", value_parser = parse_timeout,
          default_value_t = http::REQUEST_TIMEOUT.as_secs())]
    pub request_timeout: u64,
    /// HTTP/2: send a PING after this long without a frame from the client.
    #[arg(long, value_name = "DURATION", value_parser = parse_timeout,
          default_value_t = server::H2_KEEPALIVE_INTERVAL.as_secs())]
    pub h2_keepalive_interval: u64,
    /// HTTP/2: close the connection when a PING is not acknowledged within this (also the
    /// time a client gets to finish a graceful close).
    #[arg(long, value_name = "DURATION", value_parser = parse_timeout,
          default_value_t = server::H2_KEEPALIVE_TIMEOUT.as_secs())]
    pub h2_keepalive_timeout: u64,
}

/// A timeout flag: a duration from 1 second to 1 hour, in seconds.
fn parse_timeout(s: &str) -> Result<u64, String> {
    match parse_duration(s)? {
        0 => Err("a timeout must be at least 1 second".into()),
        n if n > 3600 => Err(format!("`{s}` is longer than the 1 hour a timeout may be")),
        n => Ok(n),
    }
}

/// `--tenant` and `--project`, defaulting to `default`.
#[derive(Debug, Clone, Args)]
pub struct ProjectArgs {
    /// Tenant of the project.
    #[arg(long, default_value = "default")]
    pub tenant: String,
    /// Project (a fresh hub has tenant `default` with project `default`).
    #[arg(long, default_value = "default")]
    pub project: String,
}

impl ProjectArgs {
    fn project_ref(&self) -> ProjectRef {
        ProjectRef::new(&self.tenant, &self.project)
    }
}

/// Optional `--tenant`/`--project` filter for listings.
#[derive(Debug, Clone, Args)]
pub struct FilterArgs {
    /// Tenant of --project.
    #[arg(long, default_value = "default")]
    pub tenant: String,
    /// Only this project (default: every project).
    #[arg(long)]
    pub project: Option<String>,
}

impl FilterArgs {
    fn filter(&self) -> Option<ProjectRef> {
        self.project
            .as_ref()
            .map(|p| ProjectRef::new(&self.tenant, p))
    }

    /// What a `list` asks the store for: the tenant's objects, or those visible to a project.
    fn scope(&self) -> (Option<&str>, Option<ProjectRef>) {
        let visible = self.filter();
        let tenant = visible.is_none().then_some(self.tenant.as_str());
        (tenant, visible)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RegistryKindArg {
    /// A Helm chart repository (index.yaml over HTTP(S)); basic auth.
    Helm,
    /// An OCI registry (charts as OCI artifacts, container images); token or basic auth.
    Oci,
}

#[derive(Debug, Subcommand)]
pub enum RegistryCmd {
    /// Create a registry. Without --project it belongs to the tenant (every project sees
    /// it); a project's registry hides a tenant's of the same name. Secrets are read from
    /// files, never from the command line, and are shown by no command afterwards.
    Create {
        /// The name charts use in `registry: NAME`.
        name: String,
        #[arg(long, value_enum)]
        kind: RegistryKindArg,
        /// Helm: the repository URL. OCI: the registry's base URL, https://HOST[:PORT].
        #[arg(long)]
        url: String,
        /// PEM file of the CA(s) that sign the registry's certificate, when not a public CA.
        #[arg(long, value_name = "FILE")]
        ca: Option<PathBuf>,
        /// Basic auth user name (with --password-file).
        #[arg(long)]
        username: Option<String>,
        /// File holding the basic auth password (a trailing newline is ignored).
        #[arg(long, value_name = "FILE", requires = "username")]
        password_file: Option<PathBuf>,
        /// File holding an OCI registry token.
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
        #[command(flatten)]
        scope: FilterArgs,
    },
    /// List registries (never their credentials: `has_credentials` says whether they have some).
    List {
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Delete a registry of the tenant (or, with --project, of the project).
    Delete {
        name: String,
        #[command(flatten)]
        scope: FilterArgs,
    },
}

fn read_secret_file(path: &Path, what: &str) -> anyhow::Result<String> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("reading the {what} file {}", path.display()))?;
    if meta.len() > 8192 {
        bail!("the {what} file {} is larger than 8 KiB", path.display());
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the {what} file {}", path.display()))?;
    let text = text.strip_suffix('\n').unwrap_or(&text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    if text.is_empty() {
        bail!("the {what} file {} is empty", path.display());
    }
    Ok(text.to_string())
}

fn registry_rows(rs: &[store::RegistryInfo]) -> String {
    let rows: Vec<Vec<String>> = rs
        .iter()
        .map(|r| {
            vec![
                r.tenant.clone(),
                r.project.clone().unwrap_or_else(|| "(tenant)".into()),
                r.name.clone(),
                r.kind.as_str().into(),
                r.url.clone(),
                if r.has_credentials { "yes" } else { "no" }.into(),
                if r.has_ca { "yes" } else { "no" }.into(),
            ]
        })
        .collect();
    table(
        &[
            "TENANT",
            "PROJECT",
            "NAME",
            "KIND",
            "URL",
            "CREDENTIALS",
            "CA",
        ],
        &rows,
    )
}

#[derive(Debug, Subcommand)]
pub enum TenantCmd {
    /// Create a tenant (lower-case letters, digits and `-`).
    Create { name: String },
    /// List tenants.
    List,
}

#[derive(Debug, Subcommand)]
pub enum ProjectCmd {
    /// Create a project in a tenant.
    Create {
        name: String,
        /// Tenant to create it in.
        #[arg(long, default_value = "default")]
        tenant: String,
    },
    /// List projects.
    List {
        /// Only this tenant's projects.
        #[arg(long)]
        tenant: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Create a token and print its secret (shown once; the hub keeps only a hash).
    Create {
        #[command(flatten)]
        scope: ProjectArgs,
        /// A label, e.g. the site the token is for.
        #[arg(long, default_value = "")]
        name: String,
        /// Lifetime, e.g. 90m, 12h, 7d, 2w (default: never expires).
        #[arg(long, value_parser = parse_duration)]
        expires_in: Option<u64>,
        /// How many hosts may register with it (default: unlimited).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        max_uses: Option<u32>,
    },
    /// List tokens with their state (active, expired, revoked, used_up).
    List {
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Revoke a token by id: it registers no more hosts (registered hosts are unaffected).
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
pub enum ProfileCmd {
    /// Validate and publish a profile file (YAML or JSON). Without --project it is published
    /// at tenant scope, visible to every project. A version in the file must be higher than
    /// the published ones; without one the next version is used. Re-uploading unchanged
    /// content is a no-op.
    Upload {
        /// The profile document, e.g. examples/profile-k3s.yaml.
        file: PathBuf,
        /// Tenant to publish in.
        #[arg(long, default_value = "default")]
        tenant: String,
        /// Publish at this project's scope (visible to it only).
        #[arg(long)]
        project: Option<String>,
    },
    /// List every version; with --project, those visible to that project.
    List {
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Print a profile version as JSON (default: the latest).
    Show {
        name: String,
        /// Tenant the profile belongs to.
        #[arg(long, default_value = "default")]
        tenant: String,
        /// Version to show (default: the latest).
        #[arg(long)]
        version: Option<u64>,
    },
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("target").required(true).args(["host", "tag"]))]
pub struct AssignArgs {
    #[command(flatten)]
    pub scope: ProjectArgs,
    /// The host, by id or by name.
    #[arg(long)]
    pub host: Option<String>,
    /// Every host whose tag KEY has VALUE, as KEY=VALUE. A host's own assignment wins over
    /// tag assignments; among tags, the newest assignment wins.
    #[arg(long, value_name = "KEY=VALUE")]
    pub tag: Option<String>,
    /// Profile name; it must be visible to the project.
    #[arg(long)]
    pub profile: String,
    /// Pin this version (default: follow the latest published version).
    #[arg(long)]
    pub version: Option<u64>,
    /// Attach an add-on profile (one with only an `addons` layer) on top, as NAME@VERSION
    /// (or NAME: its latest); repeatable, installed in the order given after the profile's
    /// own add-ons. Without it, the target has no add-on profiles.
    #[arg(long = "addons", value_name = "NAME@VERSION")]
    pub addons: Vec<String>,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("target").required(true).args(["host", "tag"]))]
pub struct UnassignArgs {
    #[command(flatten)]
    pub scope: ProjectArgs,
    /// The host, by id or by name.
    #[arg(long)]
    pub host: Option<String>,
    /// The tag selector the assignment was made for.
    #[arg(long, value_name = "KEY=VALUE")]
    pub tag: Option<String>,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct HostsArgs {
    #[command(subcommand)]
    pub command: Option<HostsCmd>,
    #[command(flatten)]
    pub filter: FilterArgs,
}

#[derive(Debug, Subcommand)]
pub enum HostsCmd {
    /// List hosts (the default).
    List {
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// One host in full: inventory, tags, status, last error.
    Show { id: String },
    /// A host's events in seq order.
    Events {
        id: String,
        /// Only events with a larger seq.
        #[arg(long, default_value_t = 0)]
        after: u64,
        #[arg(long, default_value_t = 1000)]
        limit: u32,
    },
    /// Delete a host, its events and assignment; its credential stops working.
    Remove { id: String },
}

/// `90s`, `15m`, `12h`, `7d`, `2w`, or plain seconds.
// String error: a clap value parser; clap shows the text under the option's name.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration such as 90m, 12h or 7d"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => {
            return Err(format!(
                "`{s}`: unknown unit `{unit}` (use s, m, h, d or w)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{s}` is too long"))
}

/// Exit status for an error: 3 when the database could not be reached, 1 otherwise.
pub fn exit_code(err: &anyhow::Error) -> ExitCode {
    let unreachable = err.chain().any(|e| {
        matches!(
            e.downcast_ref::<StoreError>(),
            Some(StoreError::Database {
                source: sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Tls(_),
                ..
            })
        )
    });
    if unreachable {
        ExitCode::from(3)
    } else {
        ExitCode::from(1)
    }
}

/// Run a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(&cli.db, cli.data_dir, &cli.mirror, args).await,
        Command::Pack(cmd) => {
            let store = SqlStore::open(&cli.db)
                .await
                .with_context(|| format!("opening the database {}", redact_url(&cli.db)))?;
            let data_dir = data_dir(&cli.db, cli.data_dir);
            let json = cli.output == Output::Json;
            let result =
                crate::mirror::cli::pack(&store, json, data_dir.as_deref(), &cli.mirror, cmd).await;
            store.close().await;
            result
        }
        Command::Mirror(cmd) => {
            let store = SqlStore::open(&cli.db)
                .await
                .with_context(|| format!("opening the database {}", redact_url(&cli.db)))?;
            let data_dir = data_dir(&cli.db, cli.data_dir);
            let json = cli.output == Output::Json;
            let result =
                crate::mirror::cli::mirror(&store, json, data_dir.as_deref(), &cli.mirror, cmd)
                    .await;
            store.close().await;
            result
        }
        Command::Completions { shell } => {
            cairn_cli::docs::print_completions(<Cli as clap::CommandFactory>::command(), shell);
            Ok(())
        }
        Command::Manpages { dir } => {
            cairn_cli::docs::write_manpages(<Cli as clap::CommandFactory>::command(), &dir)
                .with_context(|| format!("writing man pages to {}", dir.display()))
        }
        command => {
            let store = SqlStore::open(&cli.db)
                .await
                .with_context(|| format!("opening the database {}", redact_url(&cli.db)))?;
            let data_dir = data_dir(&cli.db, cli.data_dir);
            let result = admin(&store, cli.output, data_dir.as_deref(), command).await;
            store.close().await;
            result
        }
    }
}

/// The data directory: `--data-dir`, else the directory of a SQLite database file.
pub fn data_dir(db_url: &str, given: Option<PathBuf>) -> Option<PathBuf> {
    if given.is_some() {
        return given;
    }
    if db_url.starts_with("postgres://") || db_url.starts_with("postgresql://") {
        return None;
    }
    let path = db_url
        .strip_prefix("sqlite://")
        .or_else(|| db_url.strip_prefix("sqlite:"))
        .unwrap_or(db_url);
    let path = path.split('?').next().unwrap_or(path);
    if path.is_empty() || path == ":memory:" {
        return None;
    }
    match Path::new(path).parent() {
        Some(p) if !p.as_os_str().is_empty() => Some(p.to_owned()),
        _ => Some(PathBuf::from(".")),
    }
}

fn read_admin_token(file: Option<&Path>) -> anyhow::Result<Option<String>> {
    let token = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the admin token from {}", path.display()))?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt as _;
                if let Ok(meta) = std::fs::metadata(path) {
                    if meta.permissions().mode() & 0o077 != 0 {
                        tracing::warn!(
                            "{} is readable by group or others; chmod 600 it",
                            path.display()
                        );
                    }
                }
            }
            Some(text.trim().to_owned())
        }
        None => std::env::var("CAIRN_HUB_ADMIN_TOKEN")
            .ok()
            .map(|t| t.trim().to_owned()),
    };
    if let Some(t) = &token {
        if t.chars().count() < MIN_ADMIN_TOKEN_LEN {
            bail!("the admin token must have at least {MIN_ADMIN_TOKEN_LEN} characters");
        }
    }
    Ok(token)
}

/// TLS for `serve`: the operator's certificate or the hub's own CA; what devices pin; the
/// hub's CA when it is the hub's own (for renewals).
type ServeTls = (
    Option<std::sync::Arc<rustls::ServerConfig>>,
    Option<Trust>,
    Option<std::sync::Arc<HubPki>>,
);

fn serve_tls(args: &ServeArgs, data_dir: Option<&Path>) -> anyhow::Result<ServeTls> {
    let hostname = nix::unistd::gethostname()
        .ok()
        .map(|h| h.to_string_lossy().into_owned());
    let endpoint = pki::endpoint(args.listen, &args.advertise, hostname.as_deref());
    if args.listen.ip().is_unspecified() && args.advertise.is_empty() && !args.insecure_http {
        tracing::warn!(
            "no --advertise: devices are told to reach this hub at {endpoint}; give \
             --advertise NAME or IP (repeatable) for the names they use"
        );
    }
    Ok(match (&args.tls_cert, &args.tls_key, args.insecure_http) {
        (Some(cert), Some(key), false) => {
            let config = server::tls_config(cert, key)?;
            let ca = pki::ca_of_chain(cert, args.ca.as_deref())?;
            (Some(config), Some(Trust::new(&ca, endpoint)), None)
        }
        (None, None, false) => {
            let Some(dir) = data_dir else {
                bail!(
                    "the hub keeps its own CA in a data directory: give --data-dir (or \
                     CAIRN_HUB_DATA_DIR), or your own certificate with --tls-cert and --tls-key"
                );
            };
            let tls_dir = dir.join("tls");
            let names = Names::new(args.listen, &args.advertise, hostname.as_deref());
            let (ca, opened) = HubPki::open(&tls_dir, names.clone())?;
            if opened.ca_created {
                tracing::info!(
                    "made this hub's CA in {} (ten years; back up ca.crt and ca.key: devices \
                     pin this CA through the join string `cairn-hub token create` prints)",
                    tls_dir.display()
                );
            }
            match &opened.issued {
                Some(why) => tracing::info!(
                    "issued a server certificate for {names}, valid until {} ({why})",
                    opened.not_after.date()
                ),
                None => tracing::info!(
                    "server certificate for {names}, valid until {}",
                    opened.not_after.date()
                ),
            }
            let ca = std::sync::Arc::new(ca);
            let config = ca.server_config()?;
            let trust = ca.trust(endpoint);
            (Some(config), Some(trust), Some(ca))
        }
        (None, None, true) => {
            if !server::insecure_allowed(&args.listen) {
                bail!(
                    "--insecure-http serves plain HTTP and is for local tests only: listen on a \
                     loopback address (127.0.0.1 or ::1), not {}",
                    args.listen
                );
            }
            tracing::warn!("serving PLAIN HTTP (--insecure-http): credentials cross the wire unencrypted; local tests only");
            (None, None, None)
        }
        _ => bail!("give both --tls-cert and --tls-key, or neither (the hub's own CA)"),
    })
}

/// Check the hub's own server certificate twice a day; a new one is served at once.
async fn renew_certificates(ca: std::sync::Arc<HubPki>) {
    loop {
        tokio::time::sleep(pki::RENEW_CHECK).await;
        let ca = ca.clone();
        match tokio::task::spawn_blocking(move || ca.renew_if_due()).await {
            Ok(Ok(Some(until))) => tracing::info!(
                "issued a new server certificate, valid until {}",
                until.date()
            ),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => tracing::error!(
                "renewing the server certificate: {:#}",
                anyhow::Error::from(e)
            ),
            Err(e) => tracing::error!("renewing the server certificate: {e}"),
        }
    }
}

async fn serve(
    db_url: &str,
    data_dir: Option<PathBuf>,
    mirror_args: &crate::mirror::cli::MirrorArgs,
    args: ServeArgs,
) -> anyhow::Result<()> {
    // Before anything opens files: each connection is a file descriptor.
    let nofile = match server::raise_fd_limit() {
        Ok(l) => {
            tracing::info!(
                "open-files limit (RLIMIT_NOFILE): soft {} raised to {} (hard {})",
                l.soft_before,
                l.soft,
                l.hard
            );
            l.soft
        }
        Err(e) => {
            tracing::warn!("{}; the connection cap assumes 1024", error_chain(&e));
            1024
        }
    };
    let limits = limits(&args, nofile);
    let data_dir = self::data_dir(db_url, data_dir);
    let (tls, trust, own_ca) = serve_tls(&args, data_dir.as_deref())?;
    if let (Some(t), Some(dir)) = (&trust, &data_dir) {
        // For `cairn-hub token create`; the hub serves without it.
        if let Err(e) = t.save(dir) {
            tracing::warn!(
                "{:#}; `cairn-hub token create` will print no join string",
                anyhow::Error::from(e)
            );
        }
    }
    let admin_token = read_admin_token(args.admin_token_file.as_deref())?;
    if admin_token.is_none() {
        tracing::info!(
            "no admin token: /v1/admin is disabled (admin commands still work on the database)"
        );
    }
    let registry_keys = match data_dir.as_deref() {
        Some(dir) => Some(std::sync::Arc::new(
            crate::registry::Keyring::load_or_create(dir)?,
        )),
        None => {
            tracing::info!("no data directory: registries with credentials are unavailable");
            None
        }
    };
    let store = SqlStore::open(db_url)
        .await
        .with_context(|| format!("opening the database {}", redact_url(db_url)))?;
    let mirror = match &data_dir {
        Some(dir) => {
            let m = mirror_args
                .open(dir)
                .context("opening the artifact mirror")?;
            tracing::info!(
                "artifact mirror in {} ({} of {} bytes held)",
                m.dir().display(),
                m.used(),
                mirror_args.mirror_max_bytes
            );
            Some(std::sync::Arc::new(m))
        }
        None => {
            tracing::info!("no data directory: no artifact mirror");
            None
        }
    };
    let app = http::router(
        store.clone(),
        ApiConfig {
            mirror,
            admin_token,
            heartbeat_interval_secs: args.heartbeat_interval,
            request_timeout: Duration::from_secs(args.request_timeout),
            trust,
            registry_keys,
        },
    );
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(
        "cairn-hub {} serving {scheme}://{} with {:?} database {}",
        env!("CARGO_PKG_VERSION"),
        args.listen,
        store.backend(),
        redact_url(db_url)
    );
    let per_address = match limits.max_connections_per_ip {
        0 => "no per-address cap".to_owned(),
        n => format!("{n} per address"),
    };
    tracing::info!(
        "at most {} connections ({per_address}); timeouts: TLS handshake {} s, headers {} s, \
         idle {} s, request {} s, HTTP/2 keep-alive every {} s (answer within {} s)",
        limits.max_connections,
        args.tls_handshake_timeout,
        args.header_timeout,
        args.idle_timeout,
        args.request_timeout,
        args.h2_keepalive_interval,
        args.h2_keepalive_timeout,
    );
    let renewer = own_ca.map(|ca| tokio::spawn(renew_certificates(ca)));
    let served = server::serve(listener, tls, app, &limits, server::shutdown_signal()).await;
    if let Some(r) = renewer {
        r.abort();
    }
    served?;
    store.close().await;
    Ok(())
}

/// The server's limits from the flags, the connection cap sized from the open-files limit
/// `nofile` unless given.
fn limits(args: &ServeArgs, nofile: u64) -> server::Limits {
    let max_connections = match args.max_connections {
        Some(n) => {
            let fit = server::connections_that_fit(nofile);
            if n > fit {
                tracing::warn!(
                    "--max-connections {n} leaves too few file descriptors under the open-files \
                     limit ({nofile}): connections may be refused with EMFILE; {fit} would fit"
                );
            }
            usize::try_from(n).unwrap_or(usize::MAX)
        }
        None => server::default_max_connections(nofile),
    };
    server::Limits {
        max_connections,
        max_connections_per_ip: args.max_connections_per_ip,
        handshake_timeout: Duration::from_secs(args.tls_handshake_timeout),
        header_timeout: Duration::from_secs(args.header_timeout),
        idle_timeout: Duration::from_secs(args.idle_timeout),
        h2_keepalive_interval: Duration::from_secs(args.h2_keepalive_interval),
        h2_keepalive_timeout: Duration::from_secs(args.h2_keepalive_timeout),
        ..server::Limits::default()
    }
}

fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!(
        "{}",
        serde_json::to_string_pretty(value).context("encoding the output as JSON")?
    );
    Ok(())
}

/// A plain text table with a header row, columns padded to their widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                let w = widths.get(i).copied().unwrap_or(0);
                let _ = write!(s, "{c:<w$}  ");
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.to_owned()
    }
}

fn ago(t: store::Timestamp) -> String {
    let secs = store::now().saturating_sub(t).max(0);
    match secs {
        0..=119 => format!("{secs}s ago"),
        120..=7199 => format!("{}m ago", secs / 60),
        7200..=172_799 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

fn token_rows(tokens: &[TokenInfo]) -> String {
    let rows: Vec<Vec<String>> = tokens
        .iter()
        .map(|t| {
            vec![
                t.id.clone(),
                format!("{}/{}", t.tenant, t.project),
                or_dash(&t.name),
                t.hint.clone(),
                format!("{:?}", t.state).to_lowercase(),
                match t.max_uses {
                    Some(m) => format!("{}/{m}", t.uses),
                    None => format!("{}", t.uses),
                },
                t.expires_at
                    .map(store::rfc3339)
                    .unwrap_or_else(|| "never".into()),
            ]
        })
        .collect();
    table(
        &[
            "ID", "PROJECT", "NAME", "SECRET", "STATE", "USES", "EXPIRES",
        ],
        &rows,
    )
}

fn profile_rows(profiles: &[ProfileInfo]) -> String {
    let rows: Vec<Vec<String>> = profiles
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                p.version.to_string(),
                match &p.project {
                    Some(proj) => format!("project {}/{proj}", p.tenant),
                    None => format!("tenant {}", p.tenant),
                },
                p.sha256[..12.min(p.sha256.len())].to_owned(),
                store::rfc3339(p.created_at),
            ]
        })
        .collect();
    table(&["NAME", "VERSION", "SCOPE", "SHA256", "PUBLISHED"], &rows)
}

fn host_rows(hosts: &[Host]) -> String {
    let rows: Vec<Vec<String>> = hosts
        .iter()
        .map(|h| {
            let at = match (h.current_stage.as_str(), h.current_step.as_str()) {
                ("", "") => "-".to_owned(),
                (stage, "") => stage.to_owned(),
                (stage, step) => format!("{stage}/{step}"),
            };
            vec![
                h.id.clone(),
                h.name.clone(),
                format!("{}/{}", h.tenant, h.project),
                h.status.to_string(),
                at,
                match (&h.applied_profile, h.applied_version) {
                    (Some(n), Some(v)) => format!("{n} v{v}"),
                    (Some(n), None) => n.clone(),
                    (None, Some(v)) => format!("v{v}"),
                    (None, None) => "-".into(),
                },
                ago(h.last_seen),
                or_dash(&h.last_error),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "NAME",
            "PROJECT",
            "STATUS",
            "AT",
            "APPLIED",
            "SEEN",
            "LAST ERROR",
        ],
        &rows,
    )
}

fn target_text(t: &Target) -> String {
    match t {
        Target::Host(h) => format!("host {h}"),
        Target::Tag { key, value } => format!("tag {key}={value}"),
    }
}

fn target_of(host: Option<String>, tag: Option<String>) -> anyhow::Result<Target> {
    match (host, tag) {
        (Some(h), None) => Ok(Target::Host(h)),
        (None, Some(t)) => http::parse_tag(&t).map_err(anyhow::Error::msg),
        _ => bail!("give exactly one of --host and --tag"),
    }
}

async fn admin(
    store: &SqlStore,
    output: Output,
    data_dir: Option<&Path>,
    command: Command,
) -> anyhow::Result<()> {
    let json = output == Output::Json;
    match command {
        Command::Serve(_)
        | Command::Completions { .. }
        | Command::Manpages { .. }
        | Command::Pack(_)
        | Command::Mirror(_) => {
            bail!("not an admin command")
        }
        Command::Registry(RegistryCmd::Create {
            name,
            kind,
            url,
            ca,
            username,
            password_file,
            token_file,
            scope,
        }) => {
            let ca_pem = match &ca {
                Some(p) => {
                    let meta = std::fs::metadata(p)
                        .with_context(|| format!("reading the CA file {}", p.display()))?;
                    if meta.len() > crate::registry::MAX_CA_BYTES as u64 {
                        bail!("the CA file {} is larger than 64 KiB", p.display());
                    }
                    Some(
                        std::fs::read_to_string(p)
                            .with_context(|| format!("reading the CA file {}", p.display()))?,
                    )
                }
                None => None,
            };
            let password = password_file
                .as_deref()
                .map(|p| read_secret_file(p, "password"))
                .transpose()?;
            if username.is_some() && password.is_none() {
                bail!("--username needs --password-file");
            }
            let token = token_file
                .as_deref()
                .map(|p| read_secret_file(p, "token"))
                .transpose()?;
            let spec = crate::registry::RegistrySpec {
                scope: match scope.filter() {
                    Some(p) => Scope::Project(p),
                    None => Scope::Tenant(scope.tenant.clone()),
                },
                name,
                kind: match kind {
                    RegistryKindArg::Helm => cairn_proto::registry::RegistryKind::Helm,
                    RegistryKindArg::Oci => cairn_proto::registry::RegistryKind::Oci,
                },
                url,
                ca_pem,
                credentials: crate::registry::Credentials {
                    username,
                    password,
                    token,
                },
            };
            let keys = if spec.credentials.is_empty() {
                None
            } else {
                Some(crate::registry::keyring(data_dir)?)
            };
            let info = http::registries::create_registry(store, keys.as_ref(), &spec).await?;
            if json {
                print_json(&info)?;
            } else {
                println!(
                    "Created {} registry {} in {}{} ({}){}.",
                    info.kind.as_str(),
                    info.name,
                    info.tenant,
                    info.project
                        .as_deref()
                        .map(|p| format!("/{p}"))
                        .unwrap_or_default(),
                    info.id,
                    if info.has_credentials {
                        ", credentials encrypted"
                    } else {
                        ""
                    }
                );
            }
        }
        Command::Registry(RegistryCmd::List { filter }) => {
            let (tenant, visible) = filter.scope();
            let rs = store.list_registries(tenant, visible.as_ref()).await?;
            if json {
                print_json(&rs)?;
            } else {
                print!("{}", registry_rows(&rs));
            }
        }
        Command::Registry(RegistryCmd::Delete { name, scope }) => {
            let scope = match scope.filter() {
                Some(p) => Scope::Project(p),
                None => Scope::Tenant(scope.tenant.clone()),
            };
            let info = store.delete_registry(&scope, &name).await?;
            if json {
                print_json(&info)?;
            } else {
                println!("Deleted registry {} ({}).", info.name, info.id);
            }
        }
        Command::Tenant(TenantCmd::Create { name }) => {
            let t = store.create_tenant(&name).await?;
            if json {
                print_json(&t)?;
            } else {
                println!("Created tenant {} ({}).", t.name, t.id);
            }
        }
        Command::Tenant(TenantCmd::List) => {
            let ts = store.list_tenants().await?;
            if json {
                print_json(&ts)?;
            } else {
                let rows: Vec<Vec<String>> = ts
                    .iter()
                    .map(|t| vec![t.name.clone(), t.id.clone(), store::rfc3339(t.created_at)])
                    .collect();
                print!("{}", table(&["NAME", "ID", "CREATED"], &rows));
            }
        }
        Command::Project(ProjectCmd::Create { name, tenant }) => {
            let p = store.create_project(&ProjectRef::new(tenant, name)).await?;
            if json {
                print_json(&p)?;
            } else {
                println!("Created project {}/{} ({}).", p.tenant, p.name, p.id);
            }
        }
        Command::Project(ProjectCmd::List { tenant }) => {
            let ps = store.list_projects(tenant.as_deref()).await?;
            if json {
                print_json(&ps)?;
            } else {
                let rows: Vec<Vec<String>> = ps
                    .iter()
                    .map(|p| vec![p.tenant.clone(), p.name.clone(), p.id.clone()])
                    .collect();
                print!("{}", table(&["TENANT", "PROJECT", "ID"], &rows));
            }
        }
        Command::Token(TokenCmd::Create {
            scope,
            name,
            expires_in,
            max_uses,
        }) => {
            let expires_at = http::expiry_from_lifetime(expires_in).map_err(anyhow::Error::msg)?;
            let created = store
                .create_token(&NewToken {
                    project: scope.project_ref(),
                    name,
                    expires_at,
                    max_uses,
                })
                .await?;
            let join = match data_dir.map(Trust::load).transpose() {
                Ok(Some(Some(t))) => Some(t.join(&created.token)),
                Ok(_) => {
                    eprintln!(
                        "note: no join string: {}; run `cairn-hub serve` once with the same \
                         --data-dir (it records the hub's CA and address there)",
                        match data_dir {
                            Some(d) => format!("{} does not exist", Trust::file(d).display()),
                            None => "no --data-dir".into(),
                        }
                    );
                    None
                }
                Err(e) => {
                    eprintln!("note: no join string: {:#}", anyhow::Error::from(e));
                    None
                }
            };
            if json {
                print_json(&http::WithJoin {
                    created: &created,
                    join,
                })?;
            } else {
                let i = &created.info;
                println!(
                    "Created registration token {} for project {}/{} (expires: {}; max uses: {}).",
                    i.id,
                    i.tenant,
                    i.project,
                    i.expires_at
                        .map(store::rfc3339)
                        .unwrap_or_else(|| "never".into()),
                    i.max_uses
                        .map(|m| m.to_string())
                        .unwrap_or_else(|| "unlimited".into()),
                );
                println!(
                    "The secret is shown only now; put it in the hosts' user-data (cairn.token):"
                );
                println!("{}", created.token);
                if let Some(j) = join {
                    println!(
                        "Or give the hosts this join string, which also names the hub and pins \
                         its CA (cairn.join, instead of endpoint, token and ca_certs):"
                    );
                    println!("{j}");
                }
            }
        }
        Command::Token(TokenCmd::List { filter }) => {
            let ts = store.list_tokens(filter.filter().as_ref()).await?;
            if json {
                print_json(&ts)?;
            } else {
                print!("{}", token_rows(&ts));
            }
        }
        Command::Token(TokenCmd::Revoke { id }) => {
            let t = store.revoke_token(&id).await?;
            if json {
                print_json(&t)?;
            } else {
                println!("Revoked registration token {} ({}).", t.id, t.hint);
            }
        }
        Command::Profile(ProfileCmd::Upload {
            file,
            tenant,
            project,
        }) => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let name = file.display().to_string();
            let profile = match cairn_userdata::profile::read(&name, &text) {
                Ok(checked) => {
                    for w in &checked.warnings {
                        eprintln!("{w}");
                    }
                    checked.profile
                }
                Err(refused) => {
                    for f in &refused.findings {
                        eprintln!("{f}");
                    }
                    bail!(
                        "{name}: the profile has {} problem(s); nothing was published",
                        refused.errors().count()
                    );
                }
            };
            let scope = match project {
                Some(p) => Scope::Project(ProjectRef::new(tenant, p)),
                None => Scope::Tenant(tenant),
            };
            let published = store.publish_profile(&scope, &profile).await?;
            if json {
                #[derive(Serialize)]
                struct Answer<'a> {
                    #[serde(flatten)]
                    info: &'a ProfileInfo,
                    created: bool,
                }
                print_json(&Answer {
                    info: published.info(),
                    created: matches!(published, Published::Created(_)),
                })?;
            } else {
                let i = published.info();
                let scope_text = match &i.project {
                    Some(p) => format!("project {}/{p}", i.tenant),
                    None => format!("tenant {} (every project)", i.tenant),
                };
                match published {
                    Published::Created(_) => {
                        println!("Published profile {} version {} at {scope_text}.", i.name, i.version)
                    }
                    Published::Unchanged(_) => println!(
                        "Profile {} version {} is already published with this content; nothing changed.",
                        i.name, i.version
                    ),
                }
            }
        }
        Command::Profile(ProfileCmd::List { filter }) => {
            let (tenant, visible) = filter.scope();
            let ps = store.list_profiles(tenant, visible.as_ref()).await?;
            if json {
                print_json(&ps)?;
            } else {
                print!("{}", profile_rows(&ps));
            }
        }
        Command::Profile(ProfileCmd::Show {
            name,
            tenant,
            version,
        }) => {
            let rec = store.get_profile(&tenant, &name, version).await?;
            let body: serde_json::Value = serde_json::from_str(&rec.body)
                .with_context(|| format!("parsing the stored body of profile {name}"))?;
            print_json(&body)?;
        }
        Command::Assign(a) => {
            let target = target_of(a.host, a.tag)?;
            let addons = a
                .addons
                .iter()
                .map(|s| store::parse_addon_ref(s))
                .collect::<Result<Vec<_>, _>>()?;
            store
                .check_addons(&a.scope.project_ref(), &a.profile, a.version, &addons)
                .await?;
            let done = store
                .assign(&a.scope.project_ref(), &target, &a.profile, a.version)
                .await?;
            store
                .attach_addons(&a.scope.project_ref(), &target, &addons)
                .await?;
            if json {
                let mut v = serde_json::to_value(&done)?;
                v["addons"] = serde_json::to_value(&addons)?;
                print_json(&v)?;
            } else {
                if !addons.is_empty() {
                    let list: Vec<String> = addons.iter().map(ToString::to_string).collect();
                    println!("Attached add-on profiles {}.", list.join(", "));
                }
                println!(
                    "Assigned profile {} ({}) to {} in project {}/{}.",
                    done.profile,
                    done.version
                        .map(|v| format!("version {v}"))
                        .unwrap_or_else(|| "latest version".into()),
                    target_text(&done.target),
                    done.tenant,
                    done.project
                );
            }
        }
        Command::Unassign(a) => {
            let target = target_of(a.host, a.tag)?;
            let removed = store.unassign(&a.scope.project_ref(), &target).await?;
            if json {
                print_json(&serde_json::json!({ "removed": removed }))?;
            } else if removed {
                println!("Removed the assignment of {}.", target_text(&target));
            } else {
                bail!("{} has no assignment", target_text(&target));
            }
        }
        Command::Hosts(h) => match h.command {
            None => list_hosts(store, json, &h.filter).await?,
            Some(HostsCmd::List { filter }) => list_hosts(store, json, &filter).await?,
            Some(HostsCmd::Show { id }) => {
                let host = store.get_host(&id, None).await?;
                if json {
                    print_json(&host)?;
                } else {
                    print!("{}", host_rows(std::slice::from_ref(&host)));
                    println!(
                        "tags: {}",
                        serde_json::to_string(&host.tags).unwrap_or_default()
                    );
                    println!(
                        "inventory: {}",
                        serde_json::to_string_pretty(&host.inventory).unwrap_or_default()
                    );
                }
            }
            Some(HostsCmd::Events { id, after, limit }) => {
                store.get_host(&id, None).await?;
                let events = store.list_events(&id, after, limit).await?;
                if json {
                    print_json(&events)?;
                } else {
                    let rows: Vec<Vec<String>> = events
                        .iter()
                        .map(|e| {
                            let ev = &e.event;
                            vec![
                                ev.seq.to_string(),
                                ev.time.clone(),
                                ev.kind.as_str().to_owned(),
                                or_dash(&ev.stage),
                                or_dash(&ev.step),
                                or_dash(&ev.message),
                            ]
                        })
                        .collect();
                    print!(
                        "{}",
                        table(&["SEQ", "TIME", "KIND", "STAGE", "STEP", "MESSAGE"], &rows)
                    );
                }
            }
            Some(HostsCmd::Remove { id }) => {
                let host = store.remove_host(&id).await?;
                if json {
                    print_json(&host)?;
                } else {
                    println!(
                        "Removed host {} ({}); its credential no longer works.",
                        host.name, host.id
                    );
                }
            }
        },
    }
    Ok(())
}

async fn list_hosts(store: &SqlStore, json: bool, filter: &FilterArgs) -> anyhow::Result<()> {
    let hosts = store.list_hosts(filter.filter().as_ref()).await?;
    if json {
        print_json(&hosts)
    } else {
        print!("{}", host_rows(&hosts));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90"), Ok(90));
        assert_eq!(parse_duration("15m"), Ok(900));
        assert_eq!(parse_duration("12h"), Ok(43_200));
        assert_eq!(parse_duration("7d"), Ok(604_800));
        assert_eq!(parse_duration("2w"), Ok(1_209_600));
        assert!(parse_duration("7y").is_err());
        assert!(parse_duration("d").is_err());
        assert!(parse_duration("99999999999999999999w").is_err());
    }

    #[test]
    fn serve_flags_default_to_the_documented_limits() {
        let Cli {
            command: Command::Serve(args),
            ..
        } = Cli::try_parse_from(["cairn-hub", "serve", "--insecure-http"]).unwrap()
        else {
            panic!("not serve");
        };
        assert_eq!(args.max_connections, None);
        assert_eq!(args.request_timeout, 30);
        let l = limits(&args, 1024);
        assert_eq!(
            l,
            server::Limits {
                max_connections: 896,
                ..server::Limits::default()
            }
        );
        assert_eq!(limits(&args, 1 << 20).max_connections, 16_384);

        let Cli {
            command: Command::Serve(args),
            ..
        } = Cli::try_parse_from([
            "cairn-hub",
            "serve",
            "--insecure-http",
            "--max-connections",
            "5000",
            "--max-connections-per-ip",
            "0",
            "--header-timeout",
            "2",
            "--idle-timeout",
            "1m",
            "--request-timeout",
            "3s",
        ])
        .unwrap()
        else {
            panic!("not serve");
        };
        let l = limits(&args, 1024);
        assert_eq!(l.max_connections, 5000, "given: kept, with a warning");
        assert_eq!(l.max_connections_per_ip, 0);
        assert_eq!(l.header_timeout, Duration::from_secs(2));
        assert_eq!(l.idle_timeout, Duration::from_secs(60));
        assert_eq!(args.request_timeout, 3);
        for bad in ["0", "2h", "soon"] {
            assert!(
                Cli::try_parse_from([
                    "cairn-hub",
                    "serve",
                    "--insecure-http",
                    "--idle-timeout",
                    bad
                ])
                .is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn serve_takes_its_own_ca_your_certificate_or_an_explicit_insecure_flag() {
        assert!(Cli::try_parse_from(["cairn-hub", "serve"]).is_ok());
        assert!(Cli::try_parse_from(["cairn-hub", "serve", "--tls-cert", "c"]).is_err());
        assert!(Cli::try_parse_from(["cairn-hub", "serve", "--ca", "c"]).is_err());
        assert!(Cli::try_parse_from([
            "cairn-hub",
            "serve",
            "--insecure-http",
            "--advertise",
            "hub"
        ])
        .is_err());
        let cli = Cli::try_parse_from([
            "cairn-hub",
            "serve",
            "--advertise",
            "hub.example:443",
            "--advertise",
            "10.0.0.5",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(args.advertise.len(), 2);
        assert!(Cli::try_parse_from(["cairn-hub", "serve", "--advertise", "https://x"]).is_err());
        assert!(Cli::try_parse_from([
            "cairn-hub",
            "serve",
            "--insecure-http",
            "--tls-cert",
            "c",
            "--tls-key",
            "k"
        ])
        .is_err());
        assert!(
            Cli::try_parse_from(["cairn-hub", "serve", "--tls-cert", "c", "--tls-key", "k"])
                .is_ok()
        );
        assert!(Cli::try_parse_from(["cairn-hub", "serve", "--insecure-http"]).is_ok());
        assert!(!server::insecure_allowed(&"0.0.0.0:8443".parse().unwrap()));
        assert!(server::insecure_allowed(&"127.0.0.1:8443".parse().unwrap()));
        assert!(server::insecure_allowed(&"[::1]:8443".parse().unwrap()));
    }

    #[test]
    fn assign_needs_exactly_one_target() {
        assert!(Cli::try_parse_from(["cairn-hub", "assign", "--profile", "p"]).is_err());
        assert!(Cli::try_parse_from([
            "cairn-hub",
            "assign",
            "--profile",
            "p",
            "--host",
            "h",
            "--tag",
            "a=b"
        ])
        .is_err());
        assert!(
            Cli::try_parse_from(["cairn-hub", "assign", "--profile", "p", "--tag", "a=b"]).is_ok()
        );
    }

    #[test]
    fn the_data_dir_defaults_to_the_sqlite_database_directory() {
        let d = |db: &str| data_dir(db, None).map(|p| p.display().to_string());
        assert_eq!(d("cairn-hub.db").as_deref(), Some("."));
        assert_eq!(
            d("/var/lib/cairn-hub/hub.db").as_deref(),
            Some("/var/lib/cairn-hub")
        );
        assert_eq!(
            d("sqlite:///srv/h/hub.db?mode=rwc").as_deref(),
            Some("/srv/h")
        );
        assert_eq!(d("sqlite::memory:"), None);
        assert_eq!(d("postgres://u@db/x"), None);
        assert_eq!(
            data_dir("postgres://u@db/x", Some("/srv".into())),
            Some(PathBuf::from("/srv"))
        );
    }

    #[test]
    fn urls_are_redacted_and_tables_aligned() {
        let t = table(&["A", "BB"], &[vec!["xxx".into(), "y".into()]]);
        assert_eq!(t, "A    BB\nxxx  y\n");
    }
}
