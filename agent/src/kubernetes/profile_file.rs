//! Reading a cluster profile from a file (`cairn-agent apply PROFILE`, `bundle create`):
//! JSON as the hub serves it, or YAML as people write it (examples/profile-k3s.yaml).
//! YAML plain scalars become booleans, nulls and integers where they read as such and
//! strings otherwise (so `version: v1.31.4+k3s1` or `pod_cidr: 10.42.0.0/16` stay text);
//! the result is checked with [`Profile::validate`].

use std::path::Path;

use cairn_proto::profile::Profile;
use serde_json::Value;

use crate::yaml::{self, Node, NodeKind};

/// Is this document a cluster profile (a mapping with `layers:`) rather than user-data?
pub fn looks_like_profile(text: &str) -> bool {
    if text.trim_start().starts_with('{') {
        return serde_json::from_str::<Value>(text)
            .ok()
            .and_then(|v| v.get("layers").cloned())
            .is_some();
    }
    match yaml::parse(text) {
        Ok(docs) => docs.len() == 1 && docs[0].get("layers").is_some(),
        Err(_) => false,
    }
}

/// Load and validate a profile file; errors name the file (and the field).
pub fn load(path: &Path) -> Result<Profile, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("reading the profile {}: {e}", path.display()))?;
    parse(&path.display().to_string(), &text)
}

pub fn parse(name: &str, text: &str) -> Result<Profile, String> {
    let value: Value = if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|e| format!("{name}: {e}"))?
    } else {
        let docs = yaml::parse(text)
            .map_err(|e| format!("{name}:{}:{}: {}", e.pos.line, e.pos.col, e.message))?;
        match docs.as_slice() {
            [one] => to_json(one),
            _ => return Err(format!("{name}: a profile is exactly one YAML document")),
        }
    };
    let profile: Profile =
        serde_json::from_value(value).map_err(|e| format!("{name}: not a cluster profile: {e}"))?;
    let problems = profile.validate();
    if !problems.is_empty() {
        let list: Vec<String> = problems
            .iter()
            .map(|p| format!("{name}: {}: {}", p.path, p.message))
            .collect();
        return Err(list.join("\n"));
    }
    Ok(profile)
}

fn to_json(n: &Node) -> Value {
    match &n.kind {
        NodeKind::Scalar { value, plain } => {
            if !*plain || n.tag.is_some() {
                return Value::String(value.clone());
            }
            if n.is_null() {
                return Value::Null;
            }
            match value.as_str() {
                "true" | "True" | "TRUE" => return Value::Bool(true),
                "false" | "False" | "FALSE" => return Value::Bool(false),
                _ => {}
            }
            if let Ok(i) = value.parse::<i64>() {
                return Value::from(i);
            }
            Value::String(value.clone())
        }
        NodeKind::Seq(items) => Value::Array(items.iter().map(to_json).collect()),
        NodeKind::Map(entries) => {
            let mut m = serde_json::Map::new();
            for (k, v) in entries {
                let key = k.scalar().map(str::to_string).unwrap_or_default();
                m.insert(key, to_json(v));
            }
            Value::Object(m)
        }
    }
}
