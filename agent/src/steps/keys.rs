//! SSH keys named by where they are published — `github:NAME`, `gitlab:NAME`, an
//! `https://` URL — fetched when their step runs, as yip does, but over verified TLS (the
//! system's roots plus `cairn.key_sources.ca_certs`), within a size budget, with a few
//! retries; every line must be an SSH public key or nothing is added.

use std::io::Read;
use std::time::Duration;

use cairn_userdata::decode::is_ssh_public_key;
use cairn_userdata::model::{redact_url, KeySource, KeySourceSettings};

/// Largest key list accepted from one source.
pub const MAX_KEYS_BYTES: u64 = 256 * 1024;
/// Tries per source (a refused connection or a 5xx is tried again, a 404 is not).
const ATTEMPTS: u32 = 3;
const BACKOFF: Duration = Duration::from_millis(500);

/// Why the keys of a source were not obtained.
#[derive(Debug, thiserror::Error)]
pub enum KeyFetchError {
    #[error("fetching the SSH keys of {entry} from {url}: {reason}")]
    Fetch {
        entry: String,
        url: String,
        reason: String,
    },
    #[error("the SSH keys of {entry} ({url}) are larger than {limit} bytes; refused")]
    TooLarge {
        entry: String,
        url: String,
        limit: u64,
    },
    #[error("{url} (for {entry}) lists no SSH public key")]
    NoKeys { entry: String, url: String },
    #[error("line {line} of {url} (for {entry}) is not an SSH public key; no key of it was added")]
    NotAKey {
        entry: String,
        url: String,
        line: usize,
    },
    #[error("cairn.key_sources.ca_certs: {0}")]
    Ca(String),
}

/// The URL `source` is fetched from under `settings` (it may hold credentials: show it
/// with [`redact_url`]).
pub fn url_of(source: &KeySource, settings: &KeySourceSettings) -> String {
    settings.url_of(&source.provider)
}

fn client(settings: &KeySourceSettings) -> Result<reqwest::blocking::Client, KeyFetchError> {
    let mut b = reqwest::blocking::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .https_only(true);
    for pem in &settings.ca_certs {
        let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
            .map_err(|e| KeyFetchError::Ca(e.to_string()))?;
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    b.build()
        .map_err(|e| KeyFetchError::Ca(format!("building the HTTPS client: {e}")))
}

/// Fetch the keys of `source`: one public key per non-empty line.
pub fn fetch(
    source: &KeySource,
    settings: &KeySourceSettings,
) -> Result<Vec<String>, KeyFetchError> {
    let entry = source.provider.to_string();
    let url = url_of(source, settings);
    // What messages show: without any `user:password@` of the URL.
    let shown = redact_url(&url);
    let client = client(settings)?;
    let fail = |reason: String| KeyFetchError::Fetch {
        entry: entry.clone(),
        url: shown.clone(),
        reason,
    };
    let mut last = String::new();
    let mut delay = BACKOFF;
    for attempt in 1..=ATTEMPTS {
        if attempt > 1 {
            std::thread::sleep(delay);
            delay *= 2;
        }
        let resp = match client.get(&url).send() {
            Ok(r) => r,
            Err(e) => {
                // reqwest's messages carry the URL; show it without credentials.
                last = error_chain(&e.without_url());
                continue;
            }
        };
        let status = resp.status();
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            last = format!("the server answered {status}");
            continue;
        }
        if !status.is_success() {
            return Err(fail(format!("the server answered {status}")));
        }
        let mut body = Vec::new();
        if let Err(e) = resp.take(MAX_KEYS_BYTES + 1).read_to_end(&mut body) {
            last = format!("reading the answer: {e}");
            continue;
        }
        if body.len() as u64 > MAX_KEYS_BYTES {
            return Err(KeyFetchError::TooLarge {
                entry,
                url: shown,
                limit: MAX_KEYS_BYTES,
            });
        }
        return parse(&entry, &shown, &String::from_utf8_lossy(&body));
    }
    Err(fail(format!("{last} (after {ATTEMPTS} attempts)")))
}

/// The keys of an answer: every non-empty line must be a public key.
fn parse(entry: &str, url: &str, body: &str) -> Result<Vec<String>, KeyFetchError> {
    let mut keys = Vec::new();
    for (i, line) in body.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if !is_ssh_public_key(line) {
            return Err(KeyFetchError::NotAKey {
                entry: entry.to_string(),
                url: url.to_string(),
                line: i + 1,
            });
        }
        keys.push(line.to_string());
    }
    if keys.is_empty() {
        return Err(KeyFetchError::NoKeys {
            entry: entry.to_string(),
            url: url.to_string(),
        });
    }
    Ok(keys)
}

/// An error with its causes (reqwest's own message hides why a connection failed).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !out.contains(&m) {
            out.push_str(": ");
            out.push_str(&m);
        }
        cur = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_userdata::diag::{Location, Pos};
    use cairn_userdata::model::KeyProvider;

    fn source(p: KeyProvider) -> KeySource {
        KeySource {
            provider: p,
            location: Location::new(&std::sync::Arc::from("f"), Pos { line: 1, col: 1 }),
        }
    }

    #[test]
    fn urls_follow_the_settings() {
        let none = KeySourceSettings::default();
        let gh = source(KeyProvider::GitHub("octo".into()));
        let gl = source(KeyProvider::GitLab("lab".into()));
        assert_eq!(url_of(&gh, &none), "https://github.com/octo.keys");
        assert_eq!(url_of(&gl, &none), "https://gitlab.com/lab.keys");
        let set = KeySourceSettings {
            github: Some("https://127.0.0.1:8443/gh/".into()),
            ..Default::default()
        };
        assert_eq!(url_of(&gh, &set), "https://127.0.0.1:8443/gh/octo.keys");
        assert_eq!(url_of(&gl, &set), "https://gitlab.com/lab.keys");
    }

    #[test]
    fn answers_are_checked_line_by_line() {
        let k = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq3 a@b";
        assert_eq!(parse("e", "u", &format!("{k}\n\n{k}\n")).unwrap().len(), 2);
        assert!(matches!(
            parse("e", "u", "\n"),
            Err(KeyFetchError::NoKeys { .. })
        ));
        let e = parse("e", "u", &format!("{k}\n<html>captive portal</html>\n")).unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
    }
}
