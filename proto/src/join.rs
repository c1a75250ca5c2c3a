//! The join string: everything a device needs to enrol with a hub, on one line.
//!
//! ```text
//! cairn1:<pin>:<token>@<endpoint>
//! cairn1:9f86d081…0a08:cairn_rt_AbCd…wXyZ@https://hub.example:8443
//! ```
//!
//! * `cairn1:` names the format (version 1).
//! * `<pin>`: the SHA-256 of the hub CA certificate (its DER bytes), 64 hex digits. The agent
//!   fetches the CA from `GET /v1/ca`, checks it against the pin before it sends anything
//!   secret, and from then on trusts that CA and nothing else for the hub.
//! * `<token>`: the registration token (no `:`, `@`, space or control character).
//! * `<endpoint>`: the hub's `https://host[:port]` URL, without user info.
//!
//! `cairn-hub token create` prints it; the agent reads it from `cairn.join` in user-data. The
//! string holds a secret, so [`Join`]'s `Debug` hides the token and the pin, and no
//! [`JoinError`] message repeats any part of the string it refused.

use std::fmt;

/// The format tag the string starts with.
pub const PREFIX: &str = "cairn1:";
/// Longest join string accepted (a token is ~50 characters and an endpoint rarely 100).
pub const MAX_LEN: usize = 2048;
/// Longest token accepted inside a join string.
pub const MAX_TOKEN_LEN: usize = 256;

/// A parsed join string.
#[derive(Clone, PartialEq, Eq)]
pub struct Join {
    /// SHA-256 of the hub CA certificate's DER encoding.
    pub ca_sha256: [u8; 32],
    /// The registration token.
    pub token: String,
    /// `https://host[:port][/prefix]`, without a trailing slash.
    pub endpoint: String,
}

/// Why a string is not a usable join string. Messages never quote the string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    #[error("a join string is at most {max} characters long")]
    TooLong { max: usize },
    #[error(
        "not a join string: it must look like `cairn1:<CA sha256>:<token>@https://hub:port` \
         (as printed by `cairn-hub token create`)"
    )]
    Format,
    #[error("the CA pin of the join string must be 64 hexadecimal digits (a SHA-256)")]
    Pin,
    #[error(
        "the token of the join string is empty, longer than {MAX_TOKEN_LEN} characters, or \
         holds a space, `:`, `@` or a control character"
    )]
    Token,
    #[error("the endpoint of the join string must be an https:// URL")]
    NotHttps,
    #[error("the endpoint of the join string {0}")]
    Endpoint(&'static str),
}

impl Join {
    /// Parse a join string (surrounding white space is ignored).
    pub fn parse(s: &str) -> Result<Join, JoinError> {
        let s = s.trim();
        if s.len() > MAX_LEN {
            return Err(JoinError::TooLong { max: MAX_LEN });
        }
        let rest = s.strip_prefix(PREFIX).ok_or(JoinError::Format)?;
        let (pin, rest) = rest.split_once(':').ok_or(JoinError::Format)?;
        let (token, endpoint) = rest.split_once('@').ok_or(JoinError::Format)?;
        let ca_sha256 = parse_pin(pin)?;
        check_token(token)?;
        let endpoint = check_endpoint(endpoint)?;
        Ok(Join {
            ca_sha256,
            token: token.to_string(),
            endpoint,
        })
    }

    /// The join string itself. It holds the token: print it only where a secret may go.
    pub fn encode(&self) -> String {
        format!(
            "{PREFIX}{}:{}@{}",
            hex::encode(self.ca_sha256),
            self.token,
            self.endpoint
        )
    }
}

impl fmt::Debug for Join {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Join")
            .field("ca_sha256", &"<redacted>")
            .field("token", &"<redacted>")
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

fn parse_pin(pin: &str) -> Result<[u8; 32], JoinError> {
    let mut out = [0u8; 32];
    if pin.len() != 64 {
        return Err(JoinError::Pin);
    }
    hex::decode_to_slice(pin, &mut out).map_err(|_| JoinError::Pin)?;
    Ok(out)
}

fn check_token(token: &str) -> Result<(), JoinError> {
    let bad = |c: char| c.is_whitespace() || c.is_control() || c == ':' || c == '@';
    if token.is_empty() || token.len() > MAX_TOKEN_LEN || token.chars().any(bad) {
        return Err(JoinError::Token);
    }
    Ok(())
}

fn check_endpoint(endpoint: &str) -> Result<String, JoinError> {
    let rest = endpoint
        .strip_prefix("https://")
        .ok_or(JoinError::NotHttps)?;
    if endpoint
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(JoinError::Endpoint("must not contain spaces"));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err(JoinError::Endpoint("must not carry user info (`user@`)"));
    }
    if authority.is_empty() || authority.starts_with(':') {
        return Err(JoinError::Endpoint("has no host"));
    }
    if rest.contains(['?', '#']) {
        return Err(JoinError::Endpoint("must not have a query or fragment"));
    }
    Ok(endpoint.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const PIN: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn round_trip() {
        let s = format!("{PREFIX}{PIN}:cairn_rt_Ab-c_d@https://hub.example:8443/");
        let j = Join::parse(&format!("  {s}\n")).unwrap();
        assert_eq!(hex::encode(j.ca_sha256), PIN);
        assert_eq!(j.token, "cairn_rt_Ab-c_d");
        assert_eq!(j.endpoint, "https://hub.example:8443");
        assert_eq!(j.encode(), s.trim_end_matches('/'));
        assert_eq!(Join::parse(&j.encode()).unwrap(), j);
        // Upper-case hex is the same pin.
        let upper = format!("{PREFIX}{}:t@https://[fd00::1]:8443", PIN.to_uppercase());
        let j = Join::parse(&upper).unwrap();
        assert_eq!(hex::encode(j.ca_sha256), PIN);
        assert_eq!(j.endpoint, "https://[fd00::1]:8443");
    }

    #[test]
    fn refusals_name_the_problem_and_never_the_string() {
        let cases = [
            (format!("{PIN}:secret-tok@https://h"), JoinError::Format),
            (format!("K10{PIN}::secret-tok@https://h"), JoinError::Format),
            (format!("{PREFIX}{PIN}:secret-tok"), JoinError::Format),
            (format!("{PREFIX}abc:secret-tok@https://h"), JoinError::Pin),
            (
                format!("{PREFIX}{}zz:secret-tok@https://h", &PIN[..62]),
                JoinError::Pin,
            ),
            (format!("{PREFIX}{PIN}:@https://h"), JoinError::Token),
            (
                format!("{PREFIX}{PIN}:secret tok@https://h"),
                JoinError::Token,
            ),
            (
                format!("{PREFIX}{PIN}:secret-tok@http://h:8443"),
                JoinError::NotHttps,
            ),
            (
                format!("{PREFIX}{PIN}:secret-tok@https://u@h"),
                JoinError::Endpoint("must not carry user info (`user@`)"),
            ),
            (
                format!("{PREFIX}{PIN}:secret-tok@https://:8443"),
                JoinError::Endpoint("has no host"),
            ),
            (
                format!("{PREFIX}{PIN}:secret-tok@https://h/?x=1"),
                JoinError::Endpoint("must not have a query or fragment"),
            ),
            (
                format!("{PREFIX}{PIN}:{}@https://h", "t".repeat(300)),
                JoinError::Token,
            ),
            (
                format!("{PREFIX}{PIN}:t@https://{}", "h".repeat(3000)),
                JoinError::TooLong { max: MAX_LEN },
            ),
        ];
        for (s, want) in cases {
            let e = Join::parse(&s).unwrap_err();
            assert_eq!(e, want, "{s}");
            let m = e.to_string();
            assert!(!m.contains("secret") && !m.contains(&PIN[..16]), "{m}");
        }
    }

    #[test]
    fn debug_hides_the_token_and_the_pin() {
        let j = Join::parse(&format!("{PREFIX}{PIN}:secret-tok@https://h")).unwrap();
        let d = format!("{j:?}");
        assert!(!d.contains("secret-tok") && !d.contains(&PIN[..16]), "{d}");
        assert!(d.contains("https://h"), "{d}");
    }
}
