//! The hub's own certificate authority, so that `cairn-hub serve` is TLS out of the box.
//!
//! On first start without `--tls-cert`, the hub makes a CA (ECDSA P-256, ten years) and a
//! server certificate signed by it (one year) for the names devices use (`--advertise`,
//! the `--listen` address, loopback), in `DATA_DIR/tls/`:
//!
//! ```text
//! ca.crt   the CA certificate; devices pin its SHA-256 (the join string carries it)
//! ca.key   its private key (0600)
//! hub.crt  the server certificate
//! hub.key  its private key (0600)
//! ```
//!
//! Every later start keeps the CA: it is what devices trust, and a new one would cut every
//! device off. The server certificate is issued again only when it is missing or unusable,
//! when the names must change, or within [`RENEW_BEFORE`] of its expiry; a running hub
//! checks that twice a day ([`HubPki::renew_if_due`]) and swaps the certificate without a
//! restart. Files are written atomically (temporary file, fsync, rename, fsync of the
//! directory); keys are created 0600 and never readable by others, not even briefly.
//!
//! What devices need to enrol, the CA and the address to use, is [`Trust`]: `serve` keeps it
//! in `DATA_DIR/join.json` so that `cairn-hub token create` (another process) can print the
//! join string.

use std::collections::BTreeSet;
use std::fmt;
use std::io::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, RwLock};

use base64::Engine as _;
use cairn_proto::join::Join;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;

/// Lifetime of a CA the hub makes.
pub const CA_VALIDITY: time::Duration = time::Duration::days(3653);
/// Lifetime of a server certificate the hub issues.
pub const SERVER_VALIDITY: time::Duration = time::Duration::days(365);
/// A server certificate is issued again when it has less than this left.
pub const RENEW_BEFORE: time::Duration = time::Duration::days(60);
/// How often a running hub checks whether its server certificate is due.
pub const RENEW_CHECK: std::time::Duration = std::time::Duration::from_secs(12 * 3600);
/// Certificates start this long before they are made: a device whose clock is a little
/// behind still accepts them.
const BACKDATE: time::Duration = time::Duration::days(1);
/// Largest certificate or key file read.
const MAX_PEM_BYTES: u64 = 256 * 1024;

/// Why the hub's certificates could not be made, read or written.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("{path}: {why}")]
    Unusable { path: PathBuf, why: String },
    #[error(
        "{cert} exists but its key {key} does not: this hub's CA cannot sign any more. Restore \
         the key from a backup (devices trust this CA), or move {cert} away to make a new CA \
         (every device then needs a new join string)"
    )]
    CaKeyMissing { cert: PathBuf, key: PathBuf },
    #[error("{context}")]
    Generate {
        context: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("setting up TLS with the certificate in {path}")]
    Tls {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> PkiError {
    let context = context.into();
    move |source| PkiError::Io { context, source }
}

fn gen_err(context: &str) -> impl FnOnce(rcgen::Error) -> PkiError + '_ {
    move |source| PkiError::Generate {
        context: context.to_string(),
        source,
    }
}

fn unusable(path: &Path, why: impl Into<String>) -> PkiError {
    PkiError::Unusable {
        path: path.to_owned(),
        why: why.into(),
    }
}

// ----- names ------------------------------------------------------------------------------

/// A host as devices name it: a DNS name or an IP address.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Host {
    Dns(String),
    Ip(IpAddr),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Dns(d) => f.write_str(d),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// `--advertise`: a name or address devices reach the hub at, with the port they use when
/// it is not the `--listen` port (a port forward, a load balancer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertise {
    pub host: Host,
    pub port: Option<u16>,
}

impl FromStr for Advertise {
    type Err = String;

    // String error: clap prints it as the message for a bad `--advertise` value.
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.contains("://") || s.contains('/') {
            return Err(format!(
                "`{s}`: give a host name or an IP address, optionally with :PORT, not a URL"
            ));
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Advertise {
                host: Host::Ip(ip),
                port: None,
            });
        }
        if let Ok(sa) = s.parse::<SocketAddr>() {
            return Ok(Advertise {
                host: Host::Ip(sa.ip()),
                port: Some(sa.port()),
            });
        }
        if let Some(v6) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            let ip = v6
                .parse::<Ipv6Addr>()
                .map_err(|_| format!("`{s}` is not an IPv6 address"))?;
            return Ok(Advertise {
                host: Host::Ip(IpAddr::V6(ip)),
                port: None,
            });
        }
        let (name, port) = match s.rsplit_once(':') {
            Some((n, p)) => {
                let port = p
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("`{s}`: `{p}` is not a port number"))?;
                (n, Some(port))
            }
            None => (s, None),
        };
        let name = dns_name(name).ok_or_else(|| {
            format!(
                "`{s}` is neither an IP address nor a DNS name (letters, digits, `-` and `.`, \
                 at most 253 characters)"
            )
        })?;
        Ok(Advertise {
            host: Host::Dns(name),
            port,
        })
    }
}

/// `name` as a DNS name for a certificate (lower case, no trailing dot), if it is one.
fn dns_name(name: &str) -> Option<String> {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let ok = (1..=253).contains(&name.len())
        && name.split('.').all(label_ok)
        // All-numeric names look like (bad) IPv4 addresses.
        && !name.split('.').all(|l| l.bytes().all(|b| b.is_ascii_digit()));
    ok.then_some(name)
}

/// The names a server certificate is for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    pub dns: BTreeSet<String>,
    pub ips: BTreeSet<IpAddr>,
}

impl Names {
    /// For a hub listening on `listen`, advertised as `advertise`: those names and
    /// addresses, the listen address unless it is a wildcard, and loopback (`localhost`,
    /// 127.0.0.1, ::1) for use on the hub's own machine. With a wildcard listen address and
    /// nothing advertised, `hostname` too: devices can only guess the machine's name.
    pub fn new(listen: SocketAddr, advertise: &[Advertise], hostname: Option<&str>) -> Names {
        let mut n = Names::default();
        n.dns.insert("localhost".into());
        n.ips.insert(IpAddr::V4(Ipv4Addr::LOCALHOST));
        n.ips.insert(IpAddr::V6(Ipv6Addr::LOCALHOST));
        if !listen.ip().is_unspecified() {
            n.ips.insert(listen.ip());
        }
        for a in advertise {
            match &a.host {
                Host::Dns(d) => n.dns.insert(d.clone()),
                Host::Ip(ip) => n.ips.insert(*ip),
            };
        }
        if listen.ip().is_unspecified() && advertise.is_empty() {
            if let Some(h) = hostname.and_then(dns_name) {
                n.dns.insert(h);
            }
        }
        n
    }

    fn sans(&self) -> Result<Vec<SanType>, PkiError> {
        let mut out = Vec::new();
        for d in &self.dns {
            let ia5 = d
                .clone()
                .try_into()
                .map_err(gen_err("a DNS name of the server certificate"))?;
            out.push(SanType::DnsName(ia5));
        }
        out.extend(self.ips.iter().map(|ip| SanType::IpAddress(*ip)));
        Ok(out)
    }
}

impl fmt::Display for Names {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let all: Vec<String> = self
            .dns
            .iter()
            .cloned()
            .chain(self.ips.iter().map(IpAddr::to_string))
            .collect();
        f.write_str(&all.join(", "))
    }
}

/// The URL devices are told to use: the first `--advertise` (its port, else the listen
/// port), else the listen address, else (wildcard listen) the machine's host name.
pub fn endpoint(listen: SocketAddr, advertise: &[Advertise], hostname: Option<&str>) -> String {
    let (host, port) = match advertise.first() {
        Some(a) => (a.host.clone(), a.port.unwrap_or(listen.port())),
        None if !listen.ip().is_unspecified() => (Host::Ip(listen.ip()), listen.port()),
        None => (
            hostname
                .and_then(dns_name)
                .map_or(Host::Dns("localhost".into()), Host::Dns),
            listen.port(),
        ),
    };
    format!("https://{host}:{port}")
}

// ----- what devices trust -------------------------------------------------------------------

/// What a device needs to enrol: the CA to pin and the hub's address. Its `Debug` leaves
/// the pin out (it goes into join strings only).
#[derive(Clone)]
pub struct Trust {
    /// The CA certificate, PEM (what `GET /v1/ca` serves).
    pub ca_pem: String,
    /// SHA-256 of the CA certificate's DER: the pin.
    pub ca_sha256: [u8; 32],
    /// `https://host:port`.
    pub endpoint: String,
}

impl fmt::Debug for Trust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Trust")
            .field("ca_sha256", &"<redacted>")
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct TrustFile {
    endpoint: String,
    ca_pem: String,
}

impl Trust {
    pub fn new(ca_der: &[u8], endpoint: String) -> Trust {
        Trust {
            ca_pem: pem_encode(ca_der),
            ca_sha256: Sha256::digest(ca_der).into(),
            endpoint,
        }
    }

    /// The join string for a registration token.
    pub fn join(&self, token: &str) -> String {
        Join {
            ca_sha256: self.ca_sha256,
            token: token.to_string(),
            endpoint: self.endpoint.clone(),
        }
        .encode()
    }

    /// Where `serve` keeps it in the data directory.
    pub fn file(data_dir: &Path) -> PathBuf {
        data_dir.join("join.json")
    }

    /// Keep it for `cairn-hub token create`.
    pub fn save(&self, data_dir: &Path) -> Result<(), PkiError> {
        create_dir(data_dir, 0o755)?;
        let body = serde_json::to_vec_pretty(&TrustFile {
            endpoint: self.endpoint.clone(),
            ca_pem: self.ca_pem.clone(),
        })
        .map_err(|e| unusable(&Trust::file(data_dir), e.to_string()))?;
        write_atomic(&Trust::file(data_dir), &body, 0o644)
    }

    /// What `serve` last kept in `data_dir`; `None` when it never ran with that directory.
    pub fn load(data_dir: &Path) -> Result<Option<Trust>, PkiError> {
        let path = Trust::file(data_dir);
        let Some(bytes) = read_opt(&path)? else {
            return Ok(None);
        };
        let f: TrustFile =
            serde_json::from_slice(&bytes).map_err(|e| unusable(&path, e.to_string()))?;
        let der = CertificateDer::from_pem_slice(f.ca_pem.as_bytes())
            .map_err(|e| unusable(&path, format!("its CA certificate: {e}")))?;
        Ok(Some(Trust::new(&der, f.endpoint)))
    }
}

/// The CA devices pin when the operator brings the certificates: the first certificate of
/// `ca` when given, else the last one of the chain in `cert` (its root, when the chain
/// file includes it).
pub fn ca_of_chain(cert: &Path, ca: Option<&Path>) -> Result<CertificateDer<'static>, PkiError> {
    let path = ca.unwrap_or(cert);
    let bytes = read_opt(path)?.ok_or_else(|| unusable(path, "no such file"))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| unusable(path, format!("reading PEM certificates: {e}")))?;
    let chosen = if ca.is_some() {
        certs.into_iter().next()
    } else {
        certs.into_iter().last()
    };
    chosen.ok_or_else(|| unusable(path, "holds no certificate"))
}

/// DER as a PEM `CERTIFICATE` block.
pub fn pem_encode(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

// ----- the CA and the server certificate ----------------------------------------------------

struct Served {
    key: Arc<CertifiedKey>,
    not_after: OffsetDateTime,
}

/// The CA and what it signs for.
struct Ca {
    dir: PathBuf,
    names: Names,
    der: CertificateDer<'static>,
    /// The CA as rcgen's issuer (parameters read back from `ca.crt`).
    issuer: rcgen::Certificate,
    key: KeyPair,
    provider: Arc<CryptoProvider>,
}

/// The hub's CA and its current server certificate; also the TLS server's certificate
/// source (see [`HubPki::server_config`]).
pub struct HubPki {
    ca: Ca,
    served: RwLock<Served>,
}

impl fmt::Debug for HubPki {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubPki")
            .field("dir", &self.ca.dir)
            .field("names", &self.ca.names)
            .finish_non_exhaustive()
    }
}

/// What [`HubPki::open`] did, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// A new CA was made (first start).
    pub ca_created: bool,
    /// Why a server certificate was issued; `None` when the stored one was kept.
    pub issued: Option<String>,
    /// Expiry of the server certificate in use.
    pub not_after: OffsetDateTime,
}

impl HubPki {
    /// `DIR/ca.crt`.
    pub fn ca_cert(&self) -> PathBuf {
        self.ca.dir.join("ca.crt")
    }

    /// `DIR/hub.crt`.
    pub fn server_cert(&self) -> PathBuf {
        self.ca.server_cert()
    }

    /// Load the CA from `dir` (making it on first use) and a server certificate for
    /// `names` (reusing the stored one when it is still right).
    pub fn open(dir: &Path, names: Names) -> Result<(HubPki, Opened), PkiError> {
        Self::open_at(dir, names, OffsetDateTime::now_utc())
    }

    fn open_at(
        dir: &Path,
        names: Names,
        now: OffsetDateTime,
    ) -> Result<(HubPki, Opened), PkiError> {
        create_dir(dir, 0o700)?;
        let ca_path = dir.join("ca.crt");
        let key_path = dir.join("ca.key");
        let (der, key, ca_created) = match read_opt(&ca_path)? {
            Some(pem) => {
                let der = CertificateDer::from_pem_slice(&pem)
                    .map_err(|e| unusable(&ca_path, format!("reading the CA certificate: {e}")))?;
                let key_pem = read_opt(&key_path)?.ok_or_else(|| PkiError::CaKeyMissing {
                    cert: ca_path.clone(),
                    key: key_path.clone(),
                })?;
                let key = key_from_pem(&key_path, &key_pem)?;
                check_ca(&ca_path, &der, &key, now)?;
                (der, key, false)
            }
            None => {
                // No CA certificate means no device can have pinned one: a stray key left
                // by an interrupted first start is replaced.
                let (der, key) = make_ca(now)?;
                write_atomic(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
                write_atomic(&ca_path, pem_encode(&der).as_bytes(), 0o644)?;
                (der, key, true)
            }
        };
        let issuer = CertificateParams::from_ca_cert_der(&der)
            .and_then(|p| p.self_signed(&key))
            .map_err(gen_err("reading the hub CA's parameters"))?;
        let ca = Ca {
            dir: dir.to_owned(),
            names,
            der,
            issuer,
            key,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        };
        let (served, issued) = match ca.stored_server_cert(now) {
            Ok(served) => (served, None),
            Err(why) => (ca.issue(now)?, Some(why)),
        };
        let opened = Opened {
            ca_created,
            issued,
            not_after: served.not_after,
        };
        Ok((
            HubPki {
                ca,
                served: RwLock::new(served),
            },
            opened,
        ))
    }

    /// The CA certificate (DER).
    pub fn ca_der(&self) -> &CertificateDer<'static> {
        &self.ca.der
    }

    /// What devices need, for a hub reached at `endpoint`.
    pub fn trust(&self, endpoint: String) -> Trust {
        Trust::new(&self.ca.der, endpoint)
    }

    /// Issue a new server certificate when the current one is within [`RENEW_BEFORE`] of
    /// its expiry. Returns the new expiry when it did.
    pub fn renew_if_due(&self) -> Result<Option<OffsetDateTime>, PkiError> {
        let now = OffsetDateTime::now_utc();
        if self.read_served().not_after - now > RENEW_BEFORE {
            return Ok(None);
        }
        let served = self.ca.issue(now)?;
        let not_after = served.not_after;
        *self.served.write().unwrap_or_else(|e| e.into_inner()) = served;
        Ok(Some(not_after))
    }

    /// A rustls server configuration that serves this hub's current server certificate.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, PkiError> {
        let tls = |source| PkiError::Tls {
            path: self.server_cert(),
            source,
        };
        let mut config = rustls::ServerConfig::builder_with_provider(self.ca.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(tls)?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    fn read_served(&self) -> std::sync::RwLockReadGuard<'_, Served> {
        self.served.read().unwrap_or_else(|e| e.into_inner())
    }
}

impl ResolvesServerCert for HubPki {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.read_served().key.clone())
    }
}

impl Ca {
    fn server_cert(&self) -> PathBuf {
        self.dir.join("hub.crt")
    }

    fn server_key(&self) -> PathBuf {
        self.dir.join("hub.key")
    }

    /// The stored server certificate, if it can be served as is; else why not.
    fn stored_server_cert(&self, now: OffsetDateTime) -> Result<Served, String> {
        let read = |p: &Path| match read_opt(p) {
            Ok(Some(b)) => Ok(b),
            Ok(None) => Err("there was none".to_string()),
            Err(e) => Err(format!("the stored one is unreadable: {e}")),
        };
        let cert_pem = read(&self.server_cert())?;
        let key_pem = read(&self.server_key())?;
        let der = CertificateDer::from_pem_slice(&cert_pem)
            .map_err(|e| format!("the stored one does not parse: {e}"))?;
        let (_, cert) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| format!("the stored one does not parse: {e}"))?;
        let (_, ca) = x509_parser::parse_x509_certificate(&self.der)
            .map_err(|e| format!("the CA does not parse: {e}"))?;
        cert.verify_signature(Some(ca.public_key()))
            .map_err(|_| "the stored one is not signed by this hub's CA".to_string())?;
        let stored = names_of(&cert);
        if stored != self.names {
            return Err(format!(
                "the names changed (it was for {stored}; now {})",
                self.names
            ));
        }
        let not_after = OffsetDateTime::from_unix_timestamp(cert.validity().not_after.timestamp())
            .map_err(|e| format!("its expiry is out of range: {e}"))?;
        if not_after - now <= RENEW_BEFORE {
            return Err(format!("the stored one expires {}", not_after.date()));
        }
        let key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| format!("its key does not parse: {e}"))?;
        let certified = CertifiedKey::from_der(vec![der.clone()], key, &self.provider)
            .map_err(|e| format!("its key does not fit it: {e}"))?;
        Ok(Served {
            key: Arc::new(certified),
            not_after,
        })
    }

    /// Issue a server certificate for the names and write it (key first: a crash between
    /// the two writes leaves a pair that does not match, which the next start replaces).
    fn issue(&self, now: OffsetDateTime) -> Result<Served, PkiError> {
        let key =
            KeyPair::generate().map_err(gen_err("making a key for the server certificate"))?;
        let now = now.replace_nanosecond(0).unwrap_or(now);
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "cairn-hub");
        params.subject_alt_names = self.names.sans()?;
        params.not_before = now - BACKDATE;
        params.not_after = now + SERVER_VALIDITY;
        params.serial_number = Some(random_serial()?);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let not_after = params.not_after;
        let cert = params
            .signed_by(&key, &self.issuer, &self.key)
            .map_err(gen_err("signing the server certificate"))?;
        write_atomic(&self.server_key(), key.serialize_pem().as_bytes(), 0o600)?;
        write_atomic(&self.server_cert(), cert.pem().as_bytes(), 0o644)?;
        let private = PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let certified = CertifiedKey::from_der(vec![cert.der().clone()], private, &self.provider)
            .map_err(|source| PkiError::Tls {
            path: self.server_cert(),
            source,
        })?;
        Ok(Served {
            key: Arc::new(certified),
            not_after,
        })
    }
}

fn make_ca(now: OffsetDateTime) -> Result<(CertificateDer<'static>, KeyPair), PkiError> {
    let key = KeyPair::generate().map_err(gen_err("making the hub CA's key"))?;
    let mut params = CertificateParams::default();
    let mut tag = [0u8; 4];
    getrandom::getrandom(&mut tag).map_err(|e| PkiError::Io {
        context: "reading random bytes from the operating system".into(),
        source: io::Error::other(e.to_string()),
    })?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(
        DnType::CommonName,
        format!("Cairn hub CA {}", hex::encode(tag)),
    );
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - BACKDATE;
    params.not_after = now + CA_VALIDITY;
    params.serial_number = Some(random_serial()?);
    let cert = params
        .self_signed(&key)
        .map_err(gen_err("making the hub CA"))?;
    Ok((cert.der().clone(), key))
}

/// A stored CA must be a CA, match its key, and be within its validity.
fn check_ca(
    path: &Path,
    der: &CertificateDer<'_>,
    key: &KeyPair,
    now: OffsetDateTime,
) -> Result<(), PkiError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| unusable(path, format!("the CA certificate does not parse: {e}")))?;
    let is_ca = cert
        .basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|bc| bc.value.ca);
    if !is_ca {
        return Err(unusable(path, "is not a CA certificate"));
    }
    if cert.public_key().raw != key.public_key_der().as_slice() {
        return Err(unusable(
            path,
            "does not match the key in ca.key next to it; restore the pair from a backup",
        ));
    }
    let not_after = cert.validity().not_after.timestamp();
    if not_after <= now.unix_timestamp() {
        return Err(unusable(
            path,
            format!(
                "the hub CA expired ({}); devices no longer trust it: move the tls directory \
                 away to make a new CA, and give every device a new join string",
                cert.validity().not_after
            ),
        ));
    }
    if not_after - now.unix_timestamp() < 365 * 86_400 {
        tracing::warn!(
            "the hub CA in {} expires {}: plan a new CA and new join strings for the devices",
            path.display(),
            cert.validity().not_after
        );
    }
    Ok(())
}

/// The DNS names and IP addresses a certificate is for.
fn names_of(cert: &x509_parser::certificate::X509Certificate<'_>) -> Names {
    use x509_parser::extensions::GeneralName;
    let mut n = Names::default();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for g in &san.value.general_names {
            match g {
                GeneralName::DNSName(d) => {
                    n.dns.insert(d.to_string());
                }
                GeneralName::IPAddress(b) => {
                    if let Ok(v4) = <[u8; 4]>::try_from(*b) {
                        n.ips.insert(IpAddr::from(v4));
                    } else if let Ok(v6) = <[u8; 16]>::try_from(*b) {
                        n.ips.insert(IpAddr::from(v6));
                    }
                }
                _ => {}
            }
        }
    }
    n
}

fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut b = [0u8; 16];
    getrandom::getrandom(&mut b).map_err(|e| PkiError::Io {
        context: "reading random bytes from the operating system".into(),
        source: io::Error::other(e.to_string()),
    })?;
    b[0] &= 0x7f; // positive
    b[0] |= 0x01; // and 16 bytes long
    Ok(SerialNumber::from(b.to_vec()))
}

fn key_from_pem(path: &Path, pem: &[u8]) -> Result<KeyPair, PkiError> {
    let text = std::str::from_utf8(pem).map_err(|_| unusable(path, "is not a PEM file"))?;
    KeyPair::from_pem(text).map_err(|e| unusable(path, format!("reading the key: {e}")))
}

// ----- files ---------------------------------------------------------------------------------

fn read_opt(path: &Path) -> Result<Option<Vec<u8>>, PkiError> {
    use std::io::Read as _;
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(format!("reading {}", path.display()))(e)),
    };
    let mut buf = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(io_err(format!("reading {}", path.display())))?;
    if buf.len() as u64 > MAX_PEM_BYTES {
        return Err(unusable(
            path,
            format!("is larger than {MAX_PEM_BYTES} bytes; not a certificate or key"),
        ));
    }
    Ok(Some(buf))
}

fn create_dir(dir: &Path, mode: u32) -> Result<(), PkiError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .map_err(io_err(format!("creating {}", dir.display())))
}

/// Replace `path` with `content`: a temporary file in the same directory (created 0600),
/// fsynced, given `mode`, renamed over `path`, then the directory fsynced. A crash leaves
/// the old content or the new, never a torn file.
pub fn write_atomic(path: &Path, content: &[u8], mode: u32) -> Result<(), PkiError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let ctx = || format!("writing {}", path.display());
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(io_err(ctx()))?;
    tmp.write_all(content).map_err(io_err(ctx()))?;
    tmp.as_file().sync_all().map_err(io_err(ctx()))?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io_err(ctx()))?;
    tmp.persist(path).map_err(|e| io_err(ctx())(e.error))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(format!("syncing {}", dir.display())))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn adv(s: &str) -> Advertise {
        s.parse().unwrap()
    }

    #[test]
    fn advertise_takes_names_and_addresses_with_optional_ports() {
        assert_eq!(
            adv("Hub.Example.org."),
            Advertise {
                host: Host::Dns("hub.example.org".into()),
                port: None
            }
        );
        assert_eq!(adv("hub:443").port, Some(443));
        assert_eq!(adv("10.0.0.5").host, Host::Ip("10.0.0.5".parse().unwrap()));
        assert_eq!(adv("10.0.0.5:9443").port, Some(9443));
        assert_eq!(adv("fd00::1").host, Host::Ip("fd00::1".parse().unwrap()));
        assert_eq!(adv("[fd00::1]").port, None);
        assert_eq!(adv("[fd00::1]:8443").port, Some(8443));
        for bad in [
            "https://hub",
            "hub/x",
            "under_score",
            "sp ace",
            "hub:0",
            "hub:port",
            "-hub",
            "1.2.3",
            "",
            "[nope]",
        ] {
            assert!(bad.parse::<Advertise>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_and_endpoint_follow_listen_and_advertise() {
        let any: SocketAddr = "0.0.0.0:8443".parse().unwrap();
        let lo: SocketAddr = "127.0.0.1:9000".parse().unwrap();
        let n = Names::new(lo, &[], Some("box"));
        assert_eq!(n.to_string(), "localhost, 127.0.0.1, ::1");
        assert_eq!(endpoint(lo, &[], Some("box")), "https://127.0.0.1:9000");

        let n = Names::new(any, &[], Some("Edge-Hub"));
        assert!(n.dns.contains("edge-hub"), "{n}");
        assert!(!n.ips.contains(&any.ip()));
        assert_eq!(
            endpoint(any, &[], Some("Edge-Hub")),
            "https://edge-hub:8443"
        );

        let a = [adv("hub.example:443"), adv("fd00::5")];
        let n = Names::new(any, &a, Some("box"));
        assert_eq!(
            n.to_string(),
            "hub.example, localhost, 127.0.0.1, ::1, fd00::5"
        );
        assert_eq!(endpoint(any, &a, None), "https://hub.example:443");
        assert_eq!(
            endpoint(any, &[adv("fd00::5")], None),
            "https://[fd00::5]:8443"
        );
    }

    fn open(dir: &Path, names: &Names, now: OffsetDateTime) -> (HubPki, Opened) {
        HubPki::open_at(dir, names.clone(), now).unwrap()
    }

    #[test]
    fn the_ca_is_kept_and_the_server_certificate_reissued_only_when_needed() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("tls");
        let names = Names::new("127.0.0.1:8443".parse().unwrap(), &[], None);
        let now = OffsetDateTime::now_utc();
        let (pki, first) = open(&dir, &names, now);
        assert!(first.ca_created);
        assert_eq!(first.issued.as_deref(), Some("there was none"));
        for (f, mode) in [
            ("ca.key", 0o600),
            ("hub.key", 0o600),
            ("ca.crt", 0o644),
            ("hub.crt", 0o644),
        ] {
            let m = std::fs::metadata(dir.join(f)).unwrap().permissions().mode();
            assert_eq!(m & 0o777, mode, "{f}");
        }
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let ca = pki.ca_der().clone();
        let crt = std::fs::read(dir.join("hub.crt")).unwrap();
        drop(pki);

        // Same names: nothing new.
        let (pki, again) = open(&dir, &names, now);
        assert!(!again.ca_created);
        assert_eq!(again.issued, None);
        assert_eq!(pki.ca_der(), &ca);
        assert_eq!(std::fs::read(dir.join("hub.crt")).unwrap(), crt);

        // Another name: a new server certificate from the same CA.
        let more = Names::new(
            "127.0.0.1:8443".parse().unwrap(),
            &[adv("hub.example")],
            None,
        );
        let (pki, renamed) = open(&dir, &more, now);
        assert!(renamed.issued.unwrap().contains("names changed"));
        assert_eq!(pki.ca_der(), &ca);
        let new_crt = std::fs::read(dir.join("hub.crt")).unwrap();
        assert_ne!(new_crt, crt);
        let der = CertificateDer::from_pem_slice(&new_crt).unwrap();
        let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert_eq!(names_of(&parsed), more);
        let (_, ca_parsed) = x509_parser::parse_x509_certificate(&ca).unwrap();
        parsed
            .verify_signature(Some(ca_parsed.public_key()))
            .unwrap();

        // Near expiry (11 months on): issued again at start, from the same CA.
        let later = now + time::Duration::days(320);
        let (pki, due) = open(&dir, &more, later);
        assert!(due.issued.unwrap().contains("expires"), "");
        assert_eq!(pki.ca_der(), &ca);
        assert!(due.not_after > later + time::Duration::days(300));

        // A key that does not fit its certificate: issued again.
        std::fs::copy(dir.join("ca.key"), dir.join("hub.key")).unwrap();
        let (_, refit) = open(&dir, &more, now);
        assert!(refit.issued.unwrap().contains("key"));
    }

    #[test]
    fn a_running_hub_renews_its_certificate_before_it_expires() {
        let d = tempfile::tempdir().unwrap();
        let names = Names::new("127.0.0.1:8443".parse().unwrap(), &[], None);
        // Made 340 days ago: 25 days left, within RENEW_BEFORE.
        let then = OffsetDateTime::now_utc() - time::Duration::days(340);
        let (pki, _) = open(d.path(), &names, then);
        let before = std::fs::read(d.path().join("hub.crt")).unwrap();
        let old = pki.read_served().key.clone();
        let renewed = pki.renew_if_due().unwrap().expect("due");
        assert!(renewed > OffsetDateTime::now_utc() + time::Duration::days(300));
        assert!(!Arc::ptr_eq(&old, &pki.read_served().key), "swapped");
        assert_ne!(std::fs::read(d.path().join("hub.crt")).unwrap(), before);
        assert_eq!(pki.renew_if_due().unwrap(), None, "not due again");
    }

    #[test]
    fn a_lost_or_foreign_ca_key_stops_the_hub_instead_of_making_a_new_ca() {
        let d = tempfile::tempdir().unwrap();
        let names = Names::new("127.0.0.1:8443".parse().unwrap(), &[], None);
        let now = OffsetDateTime::now_utc();
        let (pki, _) = open(d.path(), &names, now);
        let ca = std::fs::read(pki.ca_cert()).unwrap();
        drop(pki);
        std::fs::rename(d.path().join("ca.key"), d.path().join("ca.key.bak")).unwrap();
        let e = HubPki::open_at(d.path(), names.clone(), now).unwrap_err();
        assert!(matches!(e, PkiError::CaKeyMissing { .. }), "{e}");
        assert!(e.to_string().contains("ca.key"), "{e}");
        std::fs::copy(d.path().join("hub.key"), d.path().join("ca.key")).unwrap();
        let e = HubPki::open_at(d.path(), names.clone(), now).unwrap_err();
        assert!(e.to_string().contains("does not match the key"), "{e}");
        assert_eq!(std::fs::read(d.path().join("ca.crt")).unwrap(), ca, "kept");
        // A key without a certificate (an interrupted first start) is replaced.
        let fresh = tempfile::tempdir().unwrap();
        std::fs::write(fresh.path().join("ca.key"), "junk").unwrap();
        let (_, o) = open(fresh.path(), &names, now);
        assert!(o.ca_created);
    }

    #[test]
    fn trust_is_kept_for_token_create_and_its_debug_hides_the_pin() {
        let d = tempfile::tempdir().unwrap();
        let names = Names::new("127.0.0.1:8443".parse().unwrap(), &[], None);
        let (pki, _) = open(&d.path().join("tls"), &names, OffsetDateTime::now_utc());
        assert_eq!(Trust::load(d.path()).unwrap().map(|t| t.endpoint), None);
        let t = pki.trust("https://127.0.0.1:8443".into());
        t.save(d.path()).unwrap();
        let back = Trust::load(d.path()).unwrap().unwrap();
        assert_eq!(back.ca_sha256, t.ca_sha256);
        assert_eq!(
            back.ca_sha256,
            <[u8; 32]>::from(Sha256::digest(pki.ca_der().as_ref()))
        );
        assert_eq!(back.endpoint, "https://127.0.0.1:8443");
        let pin = hex::encode(t.ca_sha256);
        assert!(!format!("{t:?}").contains(&pin));
        let join = Join::parse(&t.join("cairn_rt_x")).unwrap();
        assert_eq!(join.ca_sha256, t.ca_sha256);
        assert_eq!(join.token, "cairn_rt_x");
        // The PEM written is the CA certificate.
        assert_eq!(
            CertificateDer::from_pem_slice(back.ca_pem.as_bytes()).unwrap(),
            *pki.ca_der()
        );
    }
}
