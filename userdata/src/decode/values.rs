//! Decoders for the value types user-data is made of: modes, names, paths, owners,
//! file bodies (base64/gzip), PEM certificates and patterns. Each reports at its node.

use std::io::Read;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use regex::Regex;

use super::ctx::{Ctx, DecodeBudget};
use crate::model::{AbsPath, HostnameSpec, HostsLine, Mode, Owner};
use crate::template::{self, HostTemplate, TemplateError, TemplateValues};
use crate::yaml::Node;

/// Largest decoded file body accepted (after gzip), to bound memory on hostile input.
pub const MAX_CONTENT_BYTES: usize = 64 * 1024 * 1024;

/// A permission mode. Unquoted `0644` is octal (as yip and YAML 1.1 read it); a quoted string
/// is octal (cloud-init's `'0644'`); an unquoted number without a leading zero is decimal.
pub fn mode(ctx: &mut Ctx, node: &Node, what: &str) -> Option<Mode> {
    let text = ctx.string(node, what)?;
    let t = text.trim();
    let parsed = if let Some(oct) = t.strip_prefix("0o").or_else(|| t.strip_prefix("0O")) {
        u32::from_str_radix(oct, 8).ok()
    } else if node.is_plain() && !t.starts_with('0') {
        t.parse::<u32>().ok()
    } else {
        u32::from_str_radix(t, 8).ok()
    };
    match parsed {
        Some(m) if m <= 0o7777 => Some(Mode(m)),
        Some(_) | None => {
            ctx.error(
                node,
                format!("{what} `{t}` is not a valid octal mode (0000 to 7777, e.g. '0644')"),
            );
            None
        }
    }
}

/// A user or group name: lower case letters, digits, `_`, `-`, `.`, at most 32 characters,
/// not starting with `-` or a digit-only name; what shadow-utils accept on every distro.
// String error: the validators below return the text of the located diagnostic the
// decoder reports; no caller branches on it.
pub fn valid_account_name(name: &str) -> Result<(), String> {
    let ok_len = !name.is_empty() && name.len() <= 32;
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let body = name.strip_suffix('$').unwrap_or(name);
    let rest_ok = body
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.'));
    if ok_len && first_ok && rest_ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a valid name: use 1-32 lower-case letters, digits, `_`, `-` or `.`, \
             starting with a letter or `_`"
        ))
    }
}

pub fn account_name(ctx: &mut Ctx, node: &Node, what: &str) -> Option<String> {
    let name = ctx.string(node, what)?;
    match valid_account_name(&name) {
        Ok(()) => Some(name),
        Err(e) => {
            ctx.error(node, format!("invalid {what}: {e}"));
            None
        }
    }
}

pub fn abs_path(ctx: &mut Ctx, node: &Node, what: &str) -> Option<AbsPath> {
    let text = ctx.string(node, what)?;
    match AbsPath::parse(&text) {
        Ok(p) => Some(p),
        Err(e) => {
            ctx.error(node, format!("invalid {what}: {e}"));
            None
        }
    }
}

/// A field of a passwd line (gecos, home, shell): `useradd` refuses a `:` (the field
/// separator), a newline or other control characters, so Cairn refuses them at validate.
pub fn passwd_field(ctx: &mut Ctx, node: &Node, what: &str) -> Option<String> {
    if node.is_null() {
        return None;
    }
    let text = ctx.string(node, what)?;
    check_passwd_field(&text)
        .map_err(|e| ctx.error(node, format!("invalid {what}: {e}")))
        .ok()?;
    Some(text)
}

// String error: the diagnostic's text (see `valid_account_name`).
pub fn check_passwd_field(text: &str) -> Result<(), String> {
    if text.contains(':') {
        return Err("`:` separates the fields of /etc/passwd and cannot be part of one".into());
    }
    if text.chars().any(char::is_control) {
        return Err("a newline or control character cannot be part of a /etc/passwd field".into());
    }
    Ok(())
}

/// An owner or group: a numeric id or a valid account name.
pub fn owner(ctx: &mut Ctx, node: &Node, what: &str) -> Option<Owner> {
    let text = ctx.string(node, what)?;
    parse_owner(&text)
        .map_err(|e| ctx.error(node, format!("invalid {what}: {e}")))
        .ok()
}

// String error: the diagnostic's text (see `valid_account_name`).
pub fn parse_owner(text: &str) -> Result<Owner, String> {
    let t = text.trim();
    if let Ok(id) = t.parse::<u32>() {
        return Ok(Owner::Id(id));
    }
    valid_account_name(t)?;
    Ok(Owner::Name(t.to_string()))
}

/// `user[:group]` as cloud-init's `owner:` and yip's `owner_string` write it.
pub fn owner_pair(ctx: &mut Ctx, node: &Node, what: &str) -> Option<(Owner, Option<Owner>)> {
    let text = ctx.string(node, what)?;
    let (u, g) = match text.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (text.as_str(), None),
    };
    let user = parse_owner(u);
    let group = g.map(parse_owner).transpose();
    match (user, group) {
        (Ok(u), Ok(g)) => Some((u, g)),
        (Err(e), _) | (_, Err(e)) => {
            ctx.error(node, format!("invalid {what} `{text}`: {e}"));
            None
        }
    }
}

/// The base64 engine user-data uses: standard alphabet, padding optional, whitespace removed
/// beforehand. Anything else (such as the `...` of a truncated example) is an error.
const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

// String error: the diagnostic's text (see `valid_account_name`).
pub fn decode_base64(text: &str) -> Result<Vec<u8>, String> {
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    B64.decode(compact.as_bytes())
        .map_err(|e| format!("invalid base64: {e}"))
}

#[derive(Debug, thiserror::Error)]
pub enum GunzipError {
    #[error("invalid gzip data: {0}")]
    Invalid(#[from] std::io::Error),
    #[error("gzip data expands beyond {0} bytes; refused")]
    TooLarge(usize),
}

/// Gunzip at most `limit` bytes: the output is cut off (and refused) one byte past the
/// limit, so a gzip bomb costs no more memory than the limit.
pub fn gunzip(data: &[u8], limit: usize) -> Result<Vec<u8>, GunzipError> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)?;
    if out.len() > limit {
        return Err(GunzipError::TooLarge(limit));
    }
    Ok(out)
}

/// A file body: `!!binary` content is base64; then `encoding` is applied.
pub fn content(ctx: &mut Ctx, node: &Node, encoding: Option<(&str, &Node)>) -> Option<Vec<u8>> {
    let text = if node.is_null() {
        String::new()
    } else {
        ctx.string(node, "content")?
    };
    let binary = node.tag.as_deref() == Some("!!binary");
    let mut data = if binary {
        match decode_base64(&text) {
            Ok(d) => d,
            Err(e) => {
                ctx.error(node, format!("!!binary content: {e}"));
                return None;
            }
        }
    } else {
        text.into_bytes()
    };
    let Some((enc, enc_node)) = encoding else {
        return Some(data);
    };
    let (b64, gz) = match enc.to_ascii_lowercase().as_str() {
        "" | "text/plain" | "text" => (false, false),
        "b64" | "base64" => (true, false),
        "gz" | "gzip" => (false, true),
        "gz+b64" | "gz+base64" | "gzip+b64" | "gzip+base64" => (true, true),
        other => {
            ctx.error(
                enc_node,
                format!("unknown encoding `{other}`; use b64, gzip, gz+b64 or text/plain"),
            );
            return None;
        }
    };
    // `!!binary` already base64-decoded the bytes; cloud-init then skips the b64 step.
    if b64 && !binary {
        let text = String::from_utf8_lossy(&data).into_owned();
        data = match decode_base64(&text) {
            Ok(d) => d,
            Err(e) => {
                ctx.error(node, format!("content with encoding `{enc}`: {e}"));
                return None;
            }
        };
    }
    if gz {
        let limit = MAX_CONTENT_BYTES.min(ctx.budget.remaining());
        data = match gunzip(&data, limit) {
            Ok(d) => d,
            Err(GunzipError::TooLarge(_)) if limit < MAX_CONTENT_BYTES => {
                ctx.error(node, over_budget());
                return None;
            }
            Err(e) => {
                ctx.error(node, format!("content with encoding `{enc}`: {e}"));
                return None;
            }
        };
    }
    if data.len() > MAX_CONTENT_BYTES {
        ctx.error(
            node,
            format!("content is larger than {MAX_CONTENT_BYTES} bytes"),
        );
        return None;
    }
    if !ctx.budget.take(data.len()) {
        ctx.error(node, over_budget());
        return None;
    }
    Some(data)
}

fn over_budget() -> String {
    format!(
        "decoded file contents add up to more than {} bytes in this user-data; refused",
        DecodeBudget::LIMIT
    )
}

/// Check PEM text holds one or more CA certificates that parse as X.509, are CAs and are
/// currently valid. Returns a message for the first problem.
// String error: the diagnostic's text (see `valid_account_name`).
pub fn check_ca_pem(pem: &str) -> Result<usize, String> {
    let mut count = 0;
    for block in x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes()) {
        let block = block.map_err(|e| format!("malformed PEM: {e}"))?;
        if block.label != "CERTIFICATE" && block.label != "TRUSTED CERTIFICATE" {
            return Err(format!(
                "PEM block `{}` is not a certificate (expected BEGIN CERTIFICATE)",
                block.label
            ));
        }
        let cert = block
            .parse_x509()
            .map_err(|e| format!("malformed certificate: {e}"))?;
        let is_ca = cert
            .basic_constraints()
            .ok()
            .flatten()
            .is_some_and(|bc| bc.value.ca);
        if !is_ca {
            return Err(format!(
                "certificate `{}` is not a CA (basicConstraints CA:TRUE missing)",
                cert.subject()
            ));
        }
        if !cert.validity().is_valid() {
            return Err(format!(
                "CA certificate `{}` is outside its validity period ({} to {})",
                cert.subject(),
                cert.validity().not_before,
                cert.validity().not_after
            ));
        }
        count += 1;
    }
    if count == 0 {
        let detail = if pem.contains("-----BEGIN") {
            "malformed PEM: the certificate body is not valid base64"
        } else {
            "no PEM certificate found (expected -----BEGIN CERTIFICATE-----)"
        };
        return Err(detail.to_string());
    }
    Ok(count)
}

/// A Go-RE2-style pattern as yip uses for `only_os`, `node`…; Rust's regex has the same
/// syntax family (no look-around), so an invalid pattern here is invalid for yip too.
pub fn pattern(ctx: &mut Ctx, node: &Node, what: &str) -> Option<Regex> {
    let text = ctx.string(node, what)?;
    match Regex::new(&text) {
        Ok(r) => Some(r),
        Err(e) => {
            let first = e.to_string().lines().last().unwrap_or_default().to_string();
            ctx.error(
                node,
                format!("{what} `{text}` is not a valid pattern: {first}"),
            );
            None
        }
    }
}

/// A hostname: RFC 1123 labels, total at most 253 characters.
// String error: the diagnostic's text (see `valid_account_name`).
pub fn valid_hostname(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a valid hostname (letters, digits and `-` in dot-separated labels)"
        ))
    }
}

/// A yip (Kairos) `hostname`: a name, or a Go template Cairn renders when it applies the
/// step (see [`crate::template`]). The name goes on the `127.0.0.1` line of /etc/hosts.
/// A template using something Cairn does not render is warned about and left out (`None`).
pub fn hostname(ctx: &mut Ctx, key: &Node, node: &Node, what: &str) -> Option<HostnameSpec> {
    let text = ctx.string(node, what)?;
    let mut spec = HostnameSpec {
        hostname: text.clone(),
        fqdn: None,
        template: None,
        hosts: HostsLine::Loopback,
        location: ctx.loc(node),
    };
    if !template::is_template(&text) {
        if let Err(e) = valid_hostname(&text) {
            ctx.error(node, e);
            return None;
        }
        return Some(spec);
    }
    match HostTemplate::parse(&text) {
        Ok(t) => {
            // The literal parts must make a valid name with any value.
            let sample = t.render(&TemplateValues {
                machine_id: "0".repeat(32),
                random: "a".repeat(32),
                uuid: "00000000-0000-4000-8000-000000000000".into(),
            });
            if let Err(e) = valid_hostname(&sample) {
                ctx.error(
                    node,
                    format!("the template renders to names like `{sample}`: {e}"),
                );
                return None;
            }
            spec.template = Some(t);
            Some(spec)
        }
        Err(e @ TemplateError::Unsupported(_)) => {
            let name = key.scalar().unwrap_or(what);
            ctx.warning(
                node,
                format!("`{name}` is not set from the template `{text}`: {e}"),
            );
            None
        }
        Err(TemplateError::Syntax(e)) => {
            ctx.error(node, format!("invalid hostname template `{text}`: {e}"));
            None
        }
    }
}

/// A systemd unit name: no path separators, whitespace or shell metacharacters.
// String error: the diagnostic's text (see `valid_account_name`).
pub fn valid_unit_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '-' | '_' | '.' | '@' | '\\'));
    if ok {
        Ok(())
    } else {
        Err(format!("`{name}` is not a valid systemd unit name"))
    }
}

/// A package name (optionally `name=version`): no whitespace, no leading `-`, no shell
/// metacharacters, so it can never be read as an option or a second command.
// String error: the diagnostic's text (see `valid_account_name`).
pub fn valid_package_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && !name.starts_with('-')
        && name.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '-' | '_' | ':' | '~' | '*' | '@')
        });
    if ok {
        Ok(())
    } else {
        Err(format!("`{name}` is not a valid package name"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_account_name("alice").is_ok());
        assert!(valid_account_name("_svc-1.x").is_ok());
        assert!(valid_account_name("machine$").is_ok());
        for bad in ["", "Alice", "-rf", "a b", "a;b", "1abc", &"a".repeat(33)] {
            assert!(valid_account_name(bad).is_err(), "{bad}");
        }
        assert!(valid_hostname("edge-01.example.com").is_ok());
        assert!(valid_hostname("-bad").is_err());
        assert!(valid_unit_name("k3s.service").is_ok());
        assert!(valid_unit_name("a b").is_err());
        assert!(valid_package_name("libstdc++6").is_ok());
        assert!(
            valid_package_name("nginx=1.24").is_err(),
            "versions are split off first"
        );
        assert!(valid_package_name("-oAPT::Get").is_err());
        assert!(valid_package_name("vim;curl").is_err());
    }

    #[test]
    fn base64_rules() {
        assert_eq!(decode_base64("aGVs\nbG8=").unwrap(), b"hello");
        assert_eq!(decode_base64("aGVsbG8").unwrap(), b"hello");
        assert!(decode_base64("aGVsbG8...").is_err());
    }
}
