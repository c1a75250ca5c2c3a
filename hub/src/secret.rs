//! Identifiers, secrets and their hashes.
//!
//! Secrets (registration tokens, host credentials) are 256 random bits, base64url, with a
//! recognisable prefix (`cairn_rt_`, `cairn_hc_`) so secret scanners and people can tell
//! them apart. The database keeps only their SHA-256: a stolen database does not let anyone
//! register or impersonate a host. A high-entropy secret needs no slow password hash.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::error::StoreError;

/// Prefix of registration-token secrets.
pub const TOKEN_PREFIX: &str = "cairn_rt_";
/// Prefix of host credentials.
pub const CREDENTIAL_PREFIX: &str = "cairn_hc_";

fn random<const N: usize>() -> Result<[u8; N], StoreError> {
    let mut buf = [0u8; N];
    getrandom::getrandom(&mut buf).map_err(|e| StoreError::Random(e.to_string()))?;
    Ok(buf)
}

/// A new identifier: `prefix` followed by 80 random bits in hex, e.g. `h_3f9a…`.
pub fn new_id(prefix: &str) -> Result<String, StoreError> {
    Ok(format!("{prefix}{}", hex::encode(random::<10>()?)))
}

/// A new secret: `prefix` followed by 256 random bits, base64url without padding.
pub fn new_secret(prefix: &str) -> Result<String, StoreError> {
    let bytes = random::<32>()?;
    Ok(format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// The credential of a host registered with a registration key: HMAC-SHA256 keyed with the
/// registration key over a random per-host salt, base64url, with the credential prefix.
///
/// The same key and salt always give the same credential, so a retried registration can be
/// answered with the credential the first answer carried, while the database keeps only
/// hashes: neither the salt (stored) nor the key (only its SHA-256 is stored) gives it alone.
pub fn derive_credential(registration_key: &str, salt: &str) -> Result<String, StoreError> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(registration_key.as_bytes())
        .map_err(|e| StoreError::Internal(format!("deriving a host credential: {e}")))?;
    mac.update(b"cairn host credential v1\0");
    mac.update(salt.as_bytes());
    Ok(format!(
        "{CREDENTIAL_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    ))
}

/// A new random salt for [`derive_credential`]: 256 bits in hex.
pub fn new_salt() -> Result<String, StoreError> {
    Ok(hex::encode(random::<32>()?))
}

/// Lower-case hex SHA-256 of `s`.
pub fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// What operators see of a secret: its first and last four characters after the prefix.
pub fn hint(secret: &str, prefix: &str) -> String {
    let body = secret.strip_prefix(prefix).unwrap_or(secret);
    let chars: Vec<char> = body.chars().collect();
    if chars.len() < 12 {
        return format!("{prefix}…");
    }
    let head: String = chars[..4].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{prefix}{head}…{tail}")
}

/// Compare two byte strings in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_random_prefixed_and_hinted() {
        let a = new_secret(TOKEN_PREFIX).unwrap();
        let b = new_secret(TOKEN_PREFIX).unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX));
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 43);
        let h = hint(&a, TOKEN_PREFIX);
        assert!(h.starts_with(&a[..TOKEN_PREFIX.len() + 4]), "{h}");
        assert!(h.ends_with(&a[a.len() - 4..]), "{h}");
        assert!(h.len() < a.len());
        assert_eq!(sha256_hex("abc").len(), 64);
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(new_id("h_").unwrap().starts_with("h_"));
        assert_eq!(new_id("h_").unwrap().len(), 22);
    }

    #[test]
    fn derived_credentials_depend_on_key_and_salt_only() {
        let key = format!("cairn_rk_{}", "k".repeat(43));
        let salt = new_salt().unwrap();
        let a = derive_credential(&key, &salt).unwrap();
        assert_eq!(a, derive_credential(&key, &salt).unwrap());
        assert!(a.starts_with(CREDENTIAL_PREFIX));
        assert_eq!(a.len(), CREDENTIAL_PREFIX.len() + 43);
        assert_ne!(a, derive_credential(&key, &new_salt().unwrap()).unwrap());
        let other = format!("cairn_rk_{}", "j".repeat(43));
        assert_ne!(a, derive_credential(&other, &salt).unwrap());
        assert!(!a.contains(&key[9..]) && !a.contains(&salt));
    }

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
