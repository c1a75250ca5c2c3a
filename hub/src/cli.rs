//! The `cairn-hub` command line: `serve`, and admin commands that act directly on the
//! database named by `--db` (so they work whether or not a hub is running, and are easy to
//! script). Every admin command prints a table, or JSON with `--output json`.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;

use crate::error::StoreError;
use crate::http::{self, ApiConfig, MIN_ADMIN_TOKEN_LEN};
use crate::server;
use crate::store::{
    self, Host, NewToken, ProfileInfo, ProjectRef, Published, Scope, SqlStore, Store, Target,
    TokenInfo,
};

const AFTER_HELP: &str = "\
Examples:
  cairn-hub serve --listen 0.0.0.0:8443 --tls-cert hub.crt --tls-key hub.key \\
      --admin-token-file /etc/cairn-hub/admin-token
  cairn-hub token create --name lab --expires-in 7d --max-uses 10
  cairn-hub profile upload examples/profile-k3s.yaml
  cairn-hub assign --tag site=lab --profile edge-k3s
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
    /// Output of admin commands: human-readable tables, or JSON for scripts.
    #[arg(long, global = true, value_enum, default_value_t = Output::Human)]
    pub output: Output,
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
    /// Serve the /v1 API over HTTPS.
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
    /// Assign a profile to one host or to every host with a tag (replaces the target's
    /// previous assignment).
    Assign(AssignArgs),
    /// Remove the assignment of a host or tag.
    Unassign(UnassignArgs),
    /// List hosts (default), or show, remove or read the events of one.
    Hosts(HostsArgs),
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
    /// PEM certificate chain of the hub (server certificate first).
    #[arg(long, requires = "tls_key", required_unless_present = "insecure_http")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of the certificate.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP instead of TLS. For local tests only: refused unless --listen is a
    /// loopback address.
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
    pub insecure_http: bool,
    /// File holding the admin token for /v1/admin (at least 16 characters). Without it and
    /// without CAIRN_HUB_ADMIN_TOKEN, the admin API is disabled.
    #[arg(long)]
    pub admin_token_file: Option<PathBuf>,
    /// Heartbeat period asked of agents, in seconds.
    #[arg(long, default_value_t = cairn_proto::protocol::DEFAULT_HEARTBEAT_SECS,
          value_parser = clap::value_parser!(u64).range(5..=3600))]
    pub heartbeat_interval: u64,
    /// Most connections served at once; more wait to be accepted.
    #[arg(long, default_value_t = 16384)]
    pub max_connections: usize,
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
        Command::Serve(args) => serve(&cli.db, args).await,
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
            let result = admin(&store, cli.output, command).await;
            store.close().await;
            result
        }
    }
}

/// A database URL without its password, for messages.
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some((creds, host)) = rest.split_once('@') {
            let user = creds.split(':').next().unwrap_or("");
            return format!("{scheme}://{user}:***@{host}");
        }
    }
    url.to_owned()
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

async fn serve(db_url: &str, args: ServeArgs) -> anyhow::Result<()> {
    let tls = match (&args.tls_cert, &args.tls_key, args.insecure_http) {
        (Some(cert), Some(key), false) => Some(server::tls_config(cert, key)?),
        (None, None, true) => {
            if !server::insecure_allowed(&args.listen) {
                bail!(
                    "--insecure-http serves plain HTTP and is for local tests only: listen on a \
                     loopback address (127.0.0.1 or ::1), not {}",
                    args.listen
                );
            }
            tracing::warn!("serving PLAIN HTTP (--insecure-http): credentials cross the wire unencrypted; local tests only");
            None
        }
        _ => bail!("give --tls-cert and --tls-key, or --insecure-http for a local test"),
    };
    let admin_token = read_admin_token(args.admin_token_file.as_deref())?;
    if admin_token.is_none() {
        tracing::info!(
            "no admin token: /v1/admin is disabled (admin commands still work on the database)"
        );
    }
    let store = SqlStore::open(db_url)
        .await
        .with_context(|| format!("opening the database {}", redact_url(db_url)))?;
    let app = http::router(
        store.clone(),
        ApiConfig {
            admin_token,
            heartbeat_interval_secs: args.heartbeat_interval,
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
    server::serve(
        listener,
        tls,
        app,
        args.max_connections,
        server::shutdown_signal(),
    )
    .await?;
    store.close().await;
    Ok(())
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

async fn admin(store: &SqlStore, output: Output, command: Command) -> anyhow::Result<()> {
    let json = output == Output::Json;
    match command {
        Command::Serve(_) | Command::Completions { .. } | Command::Manpages { .. } => {
            bail!("not an admin command")
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
            if json {
                print_json(&created)?;
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
            let visible = filter.filter();
            let tenant = if visible.is_none() {
                Some(filter.tenant.as_str())
            } else {
                None
            };
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
            let done = store
                .assign(&a.scope.project_ref(), &target, &a.profile, a.version)
                .await?;
            if json {
                print_json(&done)?;
            } else {
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
    fn serve_requires_tls_or_an_explicit_insecure_flag() {
        assert!(Cli::try_parse_from(["cairn-hub", "serve"]).is_err());
        assert!(Cli::try_parse_from(["cairn-hub", "serve", "--tls-cert", "c"]).is_err());
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
    fn urls_are_redacted_and_tables_aligned() {
        assert_eq!(
            redact_url("postgres://u:secret@db/x"),
            "postgres://u:***@db/x"
        );
        assert_eq!(redact_url("hub.db"), "hub.db");
        let t = table(&["A", "BB"], &[vec!["xxx".into(), "y".into()]]);
        assert_eq!(t, "A    BB\nxxx  y\n");
    }
}
