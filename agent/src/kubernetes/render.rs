//! Small, dependency-free renderers: JSON values as block YAML, CIDR parsing and overlap.

use std::net::IpAddr;

use serde_json::Value;

/// Render a JSON value as a block-style YAML document (ends with a newline).
///
/// Strings are always double-quoted with JSON escapes (valid YAML), so values such as
/// `on`, `0644` or `1.30` never change type on the way through a YAML 1.1 reader.
pub fn yaml(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(m) if !m.is_empty() => map_body(&mut out, m, 0),
        Value::Array(a) if !a.is_empty() => seq_body(&mut out, a, 0),
        other => {
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
    out
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => Value::String(s.clone()).to_string(),
        Value::Array(a) if a.is_empty() => "[]".into(),
        Value::Object(m) if m.is_empty() => "{}".into(),
        // Callers only pass scalars or empty collections here.
        other => other.to_string(),
    }
}

fn key(k: &str) -> String {
    let plain = !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
        && !k.starts_with(['-', '.'])
        && !matches!(
            k.to_ascii_lowercase().as_str(),
            "y" | "n" | "yes" | "no" | "on" | "off" | "true" | "false" | "null" | "~"
        )
        && k.parse::<f64>().is_err();
    if plain {
        k.to_string()
    } else {
        Value::String(k.to_string()).to_string()
    }
}

fn is_block(v: &Value) -> bool {
    matches!(v, Value::Object(m) if !m.is_empty()) || matches!(v, Value::Array(a) if !a.is_empty())
}

fn map_body(out: &mut String, m: &serde_json::Map<String, Value>, indent: usize) {
    let pad = " ".repeat(indent);
    for (k, v) in m {
        out.push_str(&pad);
        out.push_str(&key(k));
        out.push(':');
        match v {
            Value::Object(inner) if !inner.is_empty() => {
                out.push('\n');
                map_body(out, inner, indent + 2);
            }
            Value::Array(items) if !items.is_empty() => {
                out.push('\n');
                seq_body(out, items, indent);
            }
            other => {
                out.push(' ');
                out.push_str(&scalar(other));
                out.push('\n');
            }
        }
    }
}

fn seq_body(out: &mut String, a: &[Value], indent: usize) {
    let pad = " ".repeat(indent);
    for v in a {
        out.push_str(&pad);
        out.push('-');
        if is_block(v) {
            // Render the item at indent+2, then fold its first line onto the dash.
            let mut inner = String::new();
            match v {
                Value::Object(m) => map_body(&mut inner, m, indent + 2),
                Value::Array(items) => seq_body(&mut inner, items, indent + 2),
                _ => {}
            }
            out.push(' ');
            out.push_str(&inner[indent + 2..]);
        } else {
            out.push(' ');
            out.push_str(&scalar(v));
            out.push('\n');
        }
    }
}

/// A `|-` block scalar holding `text`, indented by `indent` spaces (for `valuesContent`).
pub fn indent_block(text: &str, indent: usize) -> String {
    let pad = " ".repeat(indent);
    text.lines()
        .map(|l| {
            if l.is_empty() {
                "\n".to_string()
            } else {
                format!("{pad}{l}\n")
            }
        })
        .collect()
}

/// Deep-merge `over` into `base` (mappings merge key by key; anything else replaces).
pub fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) if !o.is_null() => *b = o.clone(),
        _ => {}
    }
}

/// One parsed CIDR: the network as a 128-bit number (IPv4 mapped into the low 32 bits,
/// with a family flag) and its prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    v6: bool,
    addr: u128,
    len: u8,
}

/// Why a network is not a CIDR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("the CIDR is empty")]
    Empty,
    #[error("`{0}` is not a CIDR such as 10.42.0.0/16")]
    Shape(String),
    #[error("`{addr}` in `{cidr}` is not an IP address")]
    Address { addr: String, cidr: String },
    #[error("`{len}` in `{cidr}` is not a prefix length")]
    Length { len: String, cidr: String },
    #[error("prefix length {len} in `{cidr}` is longer than {max}")]
    TooLong { len: u8, cidr: String, max: u8 },
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, CidrError> {
        let (a, l) = s
            .trim()
            .split_once('/')
            .ok_or_else(|| CidrError::Shape(s.to_string()))?;
        let ip: IpAddr = a.parse().map_err(|_| CidrError::Address {
            addr: a.to_string(),
            cidr: s.to_string(),
        })?;
        let len: u8 = l.parse().map_err(|_| CidrError::Length {
            len: l.to_string(),
            cidr: s.to_string(),
        })?;
        let (v6, addr, max) = match ip {
            IpAddr::V4(v4) => (false, u128::from(u32::from(v4)), 32u8),
            IpAddr::V6(v6) => (true, u128::from(v6), 128u8),
        };
        if len > max {
            return Err(CidrError::TooLong {
                len,
                cidr: s.to_string(),
                max,
            });
        }
        Ok(Cidr { v6, addr, len })
    }

    fn mask(&self) -> u128 {
        let bits = if self.v6 { 128 } else { 32 };
        if self.len == 0 {
            0
        } else {
            let all: u128 = if self.v6 {
                u128::MAX
            } else {
                u128::from(u32::MAX)
            };
            (all >> (bits - u32::from(self.len))) << (bits - u32::from(self.len))
        }
    }

    /// Do the two networks share any address?
    pub fn overlaps(&self, other: &Cidr) -> bool {
        if self.v6 != other.v6 {
            return false;
        }
        let shorter = if self.len <= other.len { self } else { other };
        let m = shorter.mask();
        self.addr & m == other.addr & m
    }
}

/// Parse a comma-separated list of CIDRs (dual-stack `10.42.0.0/16,fd00:42::/56`).
pub fn cidr_list(s: &str) -> Result<Vec<Cidr>, CidrError> {
    if s.trim().is_empty() {
        return Err(CidrError::Empty);
    }
    s.split(',').map(Cidr::parse).collect()
}
