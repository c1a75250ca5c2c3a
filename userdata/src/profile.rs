//! Reading a cluster profile document (YAML as people write it, or JSON as the hub serves
//! it — JSON is YAML) into a validated [`Profile`], with every problem located as
//! `FILE:LINE:COL`. This is the one profile reader: `cairn-agent apply/validate/plan`, the
//! hub's upload and `cairn-hub` commands all call [`read`], so the device and the hub can
//! never type the same document differently.
//!
//! The text is parsed into the located tree of [`crate::yaml`] (with its budgets), then
//! deserialized *type-driven* by a serde `Deserializer` over that tree: a field declared as a
//! string receives the scalar exactly as written (`version: 3.10` stays `"3.10"`, not the
//! float 3.1), while free-form `values:` get the YAML 1.2 core schema's types (see
//! [`plain_scalar`]). Shape errors (unknown key, wrong type, missing field) carry the position
//! of the node they concern; semantic problems from [`Profile::validate`] are located through
//! their document path; the os layer's user-data is decoded and validated with the same
//! decoder the agent applies, its problems placed on the profile's own lines when the
//! user-data is a `|` block.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use cairn_proto::profile::{Layer, Profile};
use cairn_proto::protocol::Problem;
use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};

use crate::diag::{Diagnostics, Location, Pos, Severity};
use crate::model::{Config, Dialect};
use crate::yaml::{self, Node, NodeKind};

/// One problem in a profile document: where, at which field, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    pub location: Location,
    /// The document path, e.g. `layers[1].kubernetes.role` (empty for the document).
    pub path: String,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        write!(f, "{}: {sev}: {}", self.location, self.message)
    }
}

impl From<&Finding> for Problem {
    fn from(f: &Finding) -> Problem {
        Problem {
            location: f.location.to_string(),
            path: f.path.clone(),
            message: f.message.clone(),
        }
    }
}

/// A profile that passed every check, with what its os layer decodes to and any warnings.
#[derive(Debug, Clone)]
pub struct Checked {
    pub profile: Profile,
    /// The os layer's user-data, decoded and validated (empty without an os layer).
    pub os: Config,
    pub warnings: Vec<Finding>,
    /// Where the profile came from, for locating later findings ([`Checked::finding`]).
    file: Arc<str>,
    /// Every node's position by document path; empty for a profile checked without its
    /// text ([`check`]).
    positions: HashMap<String, Pos>,
}

impl Checked {
    /// Whether the profile has an `os` layer.
    pub fn has_os_layer(&self) -> bool {
        self.profile
            .layers
            .iter()
            .any(|l| matches!(l, Layer::Os(_)))
    }

    /// A finding about the document path `path` (e.g. `layers[1].kubernetes.server`) —
    /// a rule checked after reading, such as the agent's cross-layer rules — located at the
    /// node (or its nearest ancestor) when the profile was read from text, else at the
    /// document with the path in front of the message.
    pub fn finding(&self, severity: Severity, path: &str, message: String) -> Finding {
        let (pos, message) = if self.positions.is_empty() {
            let message = if path.is_empty() {
                message
            } else {
                format!("{path}: {message}")
            };
            (Pos { line: 1, col: 1 }, message)
        } else {
            (locate(&self.positions, path), message)
        };
        Finding {
            severity,
            location: Location::new(&self.file, pos),
            path: path.to_owned(),
            message,
        }
    }
}

/// The errors (and the warnings found beside them) of a refused profile.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", list(.findings))]
pub struct Refused {
    pub findings: Vec<Finding>,
}

fn list(findings: &[Finding]) -> String {
    findings
        .iter()
        .map(Finding::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl Refused {
    pub fn errors(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
    }
}

/// Is this text a cluster profile (one mapping with `layers:`) rather than user-data?
pub fn looks_like_profile(text: &str) -> bool {
    match yaml::parse(text) {
        Ok(docs) => docs.len() == 1 && docs[0].get("layers").is_some(),
        Err(_) => false,
    }
}

/// Read and check a profile. `file` names the document in locations (a path, or `upload`
/// for an HTTP body). Every semantic problem is reported; shape errors stop at the first.
pub fn read(file: &str, text: &str) -> Result<Checked, Refused> {
    let file: Arc<str> = Arc::from(file);
    let at = |pos: Pos, path: &str, message: String| Finding {
        severity: Severity::Error,
        location: Location::new(&file, pos),
        path: path.to_owned(),
        message,
    };
    let one = |f: Finding| Refused { findings: vec![f] };
    let docs = yaml::parse(text).map_err(|e| one(at(e.pos, "", e.message)))?;
    let root = match docs.as_slice() {
        [root] => root,
        [] => {
            return Err(one(at(
                Pos { line: 1, col: 1 },
                "",
                "the document is empty".into(),
            )))
        }
        [_, second, ..] => {
            return Err(one(at(
                second.pos,
                "",
                "a profile file holds one YAML document, this is a second one".into(),
            )))
        }
    };
    if let Some((key, first)) = yaml::duplicate_keys(root).into_iter().next() {
        return Err(one(at(
            key.pos,
            "",
            format!(
                "duplicate key `{}` (first at line {first})",
                key.scalar().unwrap_or_default()
            ),
        )));
    }
    let mut paths = HashMap::new();
    index_paths(root, "", &mut paths);
    let profile: Profile = match serde_path_to_error::deserialize(De(root)) {
        Ok(p) => p,
        Err(e) => {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            let inner = e.into_inner();
            let pos = inner.pos.unwrap_or_else(|| locate(&paths, &path));
            return Err(one(at(pos, &path, inner.message)));
        }
    };
    finish(file, profile, Some((text, root)), paths)
}

/// Check a profile that is already typed (the daemon's copy from the hub, a profile made in
/// code): the checks of [`read`], without positions — a semantic problem is placed at
/// `FILE:1:1` with its document path in front of the message, a problem in the os layer's
/// user-data at its line in the user-data (`FILE#layers[0].os.user_data:LINE:COL`).
pub fn check(file: &str, profile: Profile) -> Result<Checked, Refused> {
    finish(Arc::from(file), profile, None, HashMap::new())
}

/// The semantic checks and the os layer's decoding, shared by [`read`] and [`check`].
fn finish(
    file: Arc<str>,
    profile: Profile,
    source: Option<(&str, &Node)>,
    positions: HashMap<String, Pos>,
) -> Result<Checked, Refused> {
    let mut checked = Checked {
        profile,
        os: Config::default(),
        warnings: Vec::new(),
        file,
        positions,
    };
    let mut findings: Vec<Finding> = checked
        .profile
        .validate()
        .into_iter()
        .map(|p| checked.finding(Severity::Error, &p.path, p.message))
        .collect();
    // The packs' rules: CNI/Kubernetes versions that go together, pod networks a CNI can
    // use, files that could not be verified (cairn_packs::compat).
    if findings.is_empty() {
        for p in cairn_packs::check(&checked.profile) {
            let severity = match p.severity {
                cairn_packs::Severity::Error => Severity::Error,
                cairn_packs::Severity::Warning => Severity::Warning,
            };
            findings.push(checked.finding(severity, &p.path, p.message));
        }
    }
    for (i, layer) in checked.profile.layers.iter().enumerate() {
        if let Layer::Os(layer) = layer {
            let path = format!("layers[{i}].os.user_data");
            let (outer, node) = match source {
                Some((text, root)) => (text, lookup(root, &path)),
                None => ("", None),
            };
            checked.os = check_user_data(
                &checked.file,
                outer,
                node,
                &path,
                &layer.user_data,
                layer.dialect,
                &mut findings,
            );
        }
    }
    if findings.iter().any(|f| f.severity == Severity::Error) {
        return Err(Refused { findings });
    }
    checked.warnings = findings;
    Ok(checked)
}

/// Decode and validate the os layer's user-data with the agent's own decoder, so that a
/// profile the hub accepts is one the device accepts. Positions inside a `|` block map onto
/// the profile's lines; otherwise they are given relative to the user-data text.
fn check_user_data(
    file: &Arc<str>,
    outer: &str,
    node: Option<&Node>,
    path: &str,
    user_data: &str,
    dialect: Option<Dialect>,
    findings: &mut Vec<Finding>,
) -> Config {
    let inner_name = format!("{file}#{path}");
    let mut diags = Diagnostics::new(false);
    let config = crate::decode::decode_text_with(
        &inner_name,
        user_data,
        crate::decode::dialect::Origin::OsLayer(dialect),
        &mut diags,
    );
    crate::validate::check(&config, &mut diags);
    let block = node.and_then(|n| block_indent(outer, n, user_data));
    for d in diags.sorted() {
        let (location, message) = match (node, block) {
            (Some(n), Some(indent)) => (
                Location::new(
                    file,
                    Pos {
                        line: (n.pos.line + d.location.pos.line).saturating_sub(1),
                        col: indent + d.location.pos.col,
                    },
                ),
                d.message.clone(),
            ),
            (Some(n), None) => (
                Location::new(file, n.pos),
                format!(
                    "user_data line {}, column {}: {}",
                    d.location.pos.line, d.location.pos.col, d.message
                ),
            ),
            (None, _) => (d.location.clone(), d.message.clone()),
        };
        findings.push(Finding {
            severity: d.severity,
            location,
            path: path.to_owned(),
            message,
        });
    }
    config
}

/// When the user-data is written as a literal block (`|`), each of its lines is a line of
/// the profile, shifted right by the block's indentation: then the indentation (in columns)
/// so that positions inside the user-data map onto the profile. Checked line by line against
/// the text, so a folded, quoted or otherwise transformed scalar gets `None`.
fn block_indent(outer: &str, node: &Node, user_data: &str) -> Option<usize> {
    let indent = node.pos.col.checked_sub(1)?;
    let mut outer_lines = outer.lines().skip(node.pos.line.checked_sub(1)?);
    for line in user_data.lines() {
        let o = outer_lines.next()?;
        let same = if line.is_empty() {
            o.trim().is_empty()
        } else {
            o.len() >= indent
                && o.as_bytes()[..indent].iter().all(|b| *b == b' ')
                && o.get(indent..) == Some(line)
        };
        if !same {
            return None;
        }
    }
    Some(indent)
}

/// The node at a document path such as `layers[0].os.user_data`.
fn lookup<'a>(root: &'a Node, path: &str) -> Option<&'a Node> {
    let mut node = root;
    for part in path.split('.') {
        let (key, index) = match part.split_once('[') {
            Some((k, i)) => (k, i.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        if !key.is_empty() {
            node = node.get(key)?;
        }
        if let Some(i) = index {
            match &node.kind {
                NodeKind::Seq(items) => node = items.get(i)?,
                _ => return None,
            }
        }
    }
    Some(node)
}

/// Every node's position by document path (`layers[1].kubernetes.flavor`).
fn index_paths(node: &Node, path: &str, out: &mut HashMap<String, Pos>) {
    out.insert(path.to_owned(), node.pos);
    match &node.kind {
        NodeKind::Scalar { .. } => {}
        NodeKind::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                index_paths(item, &format!("{path}[{i}]"), out);
            }
        }
        NodeKind::Map(entries) => {
            for (k, v) in entries {
                if let Some(key) = k.scalar() {
                    let p = if path.is_empty() {
                        key.to_owned()
                    } else {
                        format!("{path}.{key}")
                    };
                    index_paths(v, &p, out);
                }
            }
        }
    }
}

/// Position of `path`, or of its nearest ancestor that has one.
fn locate(paths: &HashMap<String, Pos>, path: &str) -> Pos {
    let mut p = path.to_owned();
    loop {
        if let Some(pos) = paths.get(&p) {
            return *pos;
        }
        match p.rfind(['.', '[']) {
            Some(i) => p.truncate(i),
            None => return paths.get("").copied().unwrap_or(Pos { line: 1, col: 1 }),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Scalars

/// What an untagged plain scalar means in a free-form value, by the YAML 1.2 core schema:
/// `~`/`null`/empty, `true`/`false` (any of the three casings), integers (decimal, `0x`,
/// `0o`), floats (`1.5`, `1e3`, `.inf`, `.nan`); anything else — `yes`, `on`, `010`'s
/// YAML 1.1 octal reading, a version such as `1.2.3` — is text. An integer that does not
/// fit in 64 bits is kept as its exact text rather than rounded. Quoted, block and tagged
/// scalars are always text, exactly as written.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar<'a> {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Text(&'a str),
}

pub fn plain_scalar(node: &Node) -> Scalar<'_> {
    let NodeKind::Scalar { value, plain } = &node.kind else {
        return Scalar::Null;
    };
    if !*plain || node.tag.is_some() {
        return Scalar::Text(value);
    }
    if node.is_null() {
        return Scalar::Null;
    }
    if let Some(b) = plain_bool(value) {
        return Scalar::Bool(b);
    }
    if let Some(n) = plain_int(value) {
        return n.unwrap_or(Scalar::Text(value));
    }
    match plain_float(value) {
        Some(f) => Scalar::Float(f),
        None => Scalar::Text(value),
    }
}

/// `Some(Some(n))` for an integer that fits, `Some(None)` for one that does not.
fn plain_int(value: &str) -> Option<Option<Scalar<'static>>> {
    let (neg, digits) = match value.as_bytes().first() {
        Some(b'-') => (true, &value[1..]),
        Some(b'+') => (false, &value[1..]),
        _ => (false, value),
    };
    let (radix, digits) = if let Some(h) = digits.strip_prefix("0x") {
        (16, h)
    } else if let Some(o) = digits.strip_prefix("0o") {
        (8, o)
    } else {
        (10, digits)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = match u64::from_str_radix(digits, radix) {
        Ok(m) => m,
        Err(_) => return Some(None),
    };
    if neg {
        Some(0i64.checked_sub_unsigned(magnitude).map(Scalar::Int))
    } else {
        Some(Some(match i64::try_from(magnitude) {
            Ok(i) => Scalar::Int(i),
            Err(_) => Scalar::UInt(magnitude),
        }))
    }
}

fn plain_float(value: &str) -> Option<f64> {
    match value {
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => Some(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => Some(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => Some(f64::NAN),
        _ => {
            let looks = value.bytes().any(|b| b.is_ascii_digit())
                && value
                    .bytes()
                    .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'));
            if looks {
                value.parse().ok()
            } else {
                None
            }
        }
    }
}

fn plain_bool(value: &str) -> Option<bool> {
    match value {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------
// A serde Deserializer over the tree

/// A shape error while deserializing, at the node it concerns when known.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DeError {
    pos: Option<Pos>,
    message: String,
}

impl DeError {
    fn at(pos: Pos, message: impl Into<String>) -> Self {
        DeError {
            pos: Some(pos),
            message: message.into(),
        }
    }

    fn or_at(mut self, pos: Pos) -> Self {
        if self.pos.is_none() {
            self.pos = Some(pos);
        }
        self
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError {
            pos: None,
            message: msg.to_string(),
        }
    }
}

struct De<'a>(&'a Node);

fn scalar_type_error(node: &Node, want: &str) -> DeError {
    DeError::at(
        node.pos,
        format!("expected {want}, found {}", node.type_name()),
    )
}

impl<'de> de::Deserializer<'de> for De<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let node = self.0;
        let r = match &node.kind {
            NodeKind::Scalar { .. } => match plain_scalar(node) {
                Scalar::Null => visitor.visit_unit(),
                Scalar::Bool(b) => visitor.visit_bool(b),
                Scalar::Int(i) => visitor.visit_i64(i),
                Scalar::UInt(u) => visitor.visit_u64(u),
                Scalar::Float(f) => visitor.visit_f64(f),
                Scalar::Text(t) => visitor.visit_str(t),
            },
            NodeKind::Seq(items) => visitor.visit_seq(SeqAccess {
                items: items.iter(),
            }),
            NodeKind::Map(entries) => visitor.visit_map(MapAccess {
                entries: entries.iter(),
                value: None,
            }),
        };
        r.map_err(|e| e.or_at(node.pos))
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.0.kind {
            NodeKind::Scalar { value, .. } => match plain_bool(value) {
                Some(b) => visitor.visit_bool(b),
                None => Err(DeError::at(
                    self.0.pos,
                    format!("expected true or false, found `{value}`"),
                )),
            },
            _ => Err(scalar_type_error(self.0, "true or false")),
        }
    }

    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.0.kind {
            NodeKind::Scalar { value, .. } => match value.trim().parse::<u64>() {
                Ok(n) => visitor
                    .visit_u64(n)
                    .map_err(|e: DeError| e.or_at(self.0.pos)),
                Err(_) => Err(DeError::at(
                    self.0.pos,
                    format!("expected a whole number ≥ 0, found `{value}`"),
                )),
            },
            _ => Err(scalar_type_error(self.0, "a whole number")),
        }
    }

    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_u64(visitor)
    }

    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.0.kind {
            NodeKind::Scalar { value, .. } => match plain_int(value.trim()) {
                Some(Some(Scalar::Int(n))) => visitor
                    .visit_i64(n)
                    .map_err(|e: DeError| e.or_at(self.0.pos)),
                _ => Err(DeError::at(
                    self.0.pos,
                    format!("expected a whole number, found `{value}`"),
                )),
            },
            _ => Err(scalar_type_error(self.0, "a whole number")),
        }
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.0.kind {
            NodeKind::Scalar { value, .. } => match plain_float(value.trim()) {
                Some(n) => visitor.visit_f64(n),
                None => Err(DeError::at(
                    self.0.pos,
                    format!("expected a number, found `{value}`"),
                )),
            },
            _ => Err(scalar_type_error(self.0, "a number")),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.0.kind {
            // Type-driven: a string field takes the scalar exactly as written.
            NodeKind::Scalar { value, .. } if !self.0.is_null() => visitor
                .visit_str(value)
                .map_err(|e: DeError| e.or_at(self.0.pos)),
            _ => Err(scalar_type_error(self.0, "a string")),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.0.is_null() {
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.0.kind {
            NodeKind::Seq(items) => visitor
                .visit_seq(SeqAccess {
                    items: items.iter(),
                })
                .map_err(|e| e.or_at(self.0.pos)),
            _ => Err(scalar_type_error(self.0, "a list")),
        }
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.0.kind {
            NodeKind::Map(entries) => visitor
                .visit_map(MapAccess {
                    entries: entries.iter(),
                    value: None,
                })
                .map_err(|e| e.or_at(self.0.pos)),
            _ => Err(scalar_type_error(self.0, "a mapping")),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let node = self.0;
        match &node.kind {
            NodeKind::Scalar { value, .. } => visitor
                .visit_enum(value.as_str().into_deserializer())
                .map_err(|e: DeError| e.or_at(node.pos)),
            NodeKind::Map(entries) if entries.len() == 1 => {
                let (k, v) = &entries[0];
                visitor
                    .visit_enum(EnumAccess { key: k, value: v })
                    .map_err(|e| e.or_at(k.pos))
            }
            _ => Err(DeError::at(
                node.pos,
                format!(
                    "expected one of {} (as a single-key mapping), found {}",
                    variants.join(", "),
                    node.type_name()
                ),
            )),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        i8 i16 i32 i128 u8 u16 u128 f32 char bytes byte_buf unit unit_struct
        newtype_struct tuple tuple_struct
    }
}

struct SeqAccess<'a> {
    items: std::slice::Iter<'a, Node>,
}

impl<'de> de::SeqAccess<'de> for SeqAccess<'_> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        match self.items.next() {
            Some(node) => seed
                .deserialize(De(node))
                .map(Some)
                .map_err(|e| e.or_at(node.pos)),
            None => Ok(None),
        }
    }
}

struct MapAccess<'a> {
    entries: std::slice::Iter<'a, (Node, Node)>,
    value: Option<&'a Node>,
}

impl<'de> de::MapAccess<'de> for MapAccess<'_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        match self.entries.next() {
            Some((k, v)) => {
                self.value = Some(v);
                seed.deserialize(De(k))
                    .map(Some)
                    .map_err(|e| e.or_at(k.pos))
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        match self.value.take() {
            Some(v) => seed.deserialize(De(v)).map_err(|e| e.or_at(v.pos)),
            None => Err(de::Error::custom("a mapping value without its key")),
        }
    }
}

struct EnumAccess<'a> {
    key: &'a Node,
    value: &'a Node,
}

impl<'de, 'a> de::EnumAccess<'de> for EnumAccess<'a> {
    type Error = DeError;
    type Variant = De<'a>;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, De<'a>), DeError> {
        let v = seed
            .deserialize(De(self.key))
            .map_err(|e| e.or_at(self.key.pos))?;
        Ok((v, De(self.value)))
    }
}

impl<'de> de::VariantAccess<'de> for De<'_> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        if self.0.is_null() {
            Ok(())
        } else {
            Err(DeError::at(self.0.pos, "this variant takes no value"))
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DeError> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_seq(self, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_map(self, visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_proto::profile::Layer;

    const GOOD: &str = "\
name: edge-k3s
description: k3s on Debian
layers:
  - os:
      user_data: |
        #cloud-config
        stages:
          boot:
            - files:
                - path: /etc/motd
                  permissions: 0644
                  content: hi
  - kubernetes:
      flavor: k3s
      version: v1.30.4+k3s1
      values:
        write-kubeconfig-mode: 420
        disable: [traefik]
  - cni:
      type: calico
      version: 3.10
      pod_cidr: 10.42.0.0/16
";

    fn errors(text: &str) -> Vec<Finding> {
        match read("p.yaml", text) {
            Ok(c) => panic!("accepted: {:?}", c.profile),
            Err(r) => r.errors().cloned().collect(),
        }
    }

    fn loc(f: &Finding) -> String {
        f.location.to_string()
    }

    #[test]
    fn an_incompatible_cni_kubernetes_pair_is_refused_at_its_line_naming_both() {
        let text = "\
name: x
layers:
  - kubernetes:
      flavor: rke2
      version: v1.28.15+rke2r1
  - cni:
      type: cilium
      version: 1.18.2
";
        let e = errors(text);
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(loc(&e[0]), "p.yaml:8:16", "{e:?}");
        assert_eq!(e[0].path, "layers[1].cni.version");
        assert!(e[0].message.contains("1.18.2"), "{e:?}");
        assert!(e[0].message.contains("v1.28.15+rke2r1"), "{e:?}");
        // The same pair on a newer Kubernetes is fine.
        assert!(read("p.yaml", &text.replace("v1.28.15", "v1.31.4")).is_ok());
    }

    #[test]
    fn a_yaml_profile_loads_type_driven() {
        let p = read("p.yaml", GOOD).unwrap().profile;
        assert_eq!(p.name, "edge-k3s");
        assert_eq!(p.version, 0);
        let Layer::Os(os) = &p.layers[0] else {
            panic!()
        };
        // The user-data text is kept verbatim, unquoted octal and all.
        assert!(
            os.user_data.contains("permissions: 0644\n"),
            "{}",
            os.user_data
        );
        let Layer::Kubernetes(k) = &p.layers[1] else {
            panic!()
        };
        assert_eq!(k.values["write-kubeconfig-mode"], 420);
        assert_eq!(k.values["disable"][0], "traefik");
        let Layer::Cni(c) = &p.layers[2] else {
            panic!()
        };
        // A string field keeps `3.10` as written; a float would have made it 3.1.
        assert_eq!(c.version, "3.10");
    }

    #[test]
    fn free_form_values_follow_the_yaml_core_schema() {
        let text = "\
name: x
layers:
  - kubernetes:
      flavor: k3s
      version: v1.30.4+k3s1
      values:
        hex: 0x10
        octal: 0o17
        float: 1.5
        quoted: \"010\"
        leading_zero: 010
        yes_word: yes
        tilde: ~
        big: 12345678901234567890
        huge: 99999999999999999999
        negative: -9223372036854775808
        tagged: !!str 42
        text: |
          line one
          line two
";
        let p = read("p.yaml", text).unwrap().profile;
        let Layer::Kubernetes(k) = &p.layers[0] else {
            panic!()
        };
        let v = &k.values;
        assert_eq!(v["hex"], 16);
        assert_eq!(v["octal"], 15);
        assert_eq!(v["float"], 1.5);
        assert_eq!(v["quoted"], "010");
        assert_eq!(v["leading_zero"], 10);
        assert_eq!(v["yes_word"], "yes");
        assert!(v["tilde"].is_null());
        assert_eq!(v["big"].as_u64(), Some(12_345_678_901_234_567_890));
        assert_eq!(v["huge"], "99999999999999999999", "never rounded");
        assert_eq!(v["negative"].as_i64(), Some(i64::MIN));
        assert_eq!(v["tagged"], "42");
        assert_eq!(v["text"], "line one\nline two\n");
    }

    #[test]
    fn the_shipped_example_profiles_are_valid() {
        let text = include_str!("../../examples/profile-k3s.yaml");
        let p = read("examples/profile-k3s.yaml", text).unwrap().profile;
        assert_eq!(p.name, "edge-k3s");
        let text = include_str!("../../examples/profile-os.yaml");
        read("examples/profile-os.yaml", text).unwrap();
    }

    #[test]
    fn json_is_accepted_too() {
        let json = r#"{"name": "x", "version": 4, "layers": [{"os": {"user_data": "a: 1"}}]}"#;
        let c = read("p.json", json).unwrap();
        assert_eq!(c.profile.version, 4);
        // `a` is no user-data key: a warning, placed in the user-data.
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        assert!(
            c.warnings[0].message.contains("user_data line 1"),
            "{:?}",
            c.warnings
        );
    }

    #[test]
    fn shape_errors_point_at_the_offending_node() {
        let errs = errors("name: x\nlayers:\n  - kubernetes:\n      flavour: k3s\n");
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(loc(&errs[0]), "p.yaml:4:7", "{errs:?}");
        assert!(errs[0].message.contains("flavour"), "{errs:?}");

        let errs =
            errors("name: x\nlayers:\n  - kubernetes:\n      flavor: k8s\n      version: v1\n");
        assert_eq!(loc(&errs[0]), "p.yaml:4:15", "{errs:?}");
        assert!(errs[0].message.contains("k8s"), "{errs:?}");

        let errs = errors("name: x\nversion: two\nlayers: []\n");
        assert_eq!(loc(&errs[0]), "p.yaml:2:10", "{errs:?}");

        let errs = errors("name: x\nlayers:\n  - os: {}\n");
        assert!(errs[0].message.contains("user_data"), "{errs:?}");
        assert_eq!(loc(&errs[0]), "p.yaml:3:9", "{errs:?}");
    }

    #[test]
    fn semantic_problems_are_all_reported_with_lines() {
        let text = "\
name: Bad_Name
layers:
  - kubernetes:
      flavor: k3s
      version: v1
      role: agent
  - cni:
      type: flannel
      version: '0.25'
      pod_cidr: 10.0.0.0/99
";
        let errs = errors(text);
        let locs: Vec<String> = errs.iter().map(loc).collect();
        assert!(locs.contains(&"p.yaml:1:7".into()), "{errs:?}"); // name
        assert!(locs.contains(&"p.yaml:6:13".into()), "{errs:?}"); // role agent without server
        assert!(locs.contains(&"p.yaml:10:17".into()), "{errs:?}"); // pod_cidr
    }

    #[test]
    fn the_os_layer_is_validated_like_on_the_device_with_profile_lines() {
        let text = "\
name: x
layers:
  - os:
      user_data: |
        #cloud-config
        users:
          - name: Bad Name
        write_files:
          - path: relative/path
";
        let errs = errors(text);
        let locs: Vec<String> = errs.iter().map(loc).collect();
        // Line 7 `- name: Bad Name`, its value at column 19; line 9's path at column 19.
        assert!(locs.contains(&"p.yaml:7:19".into()), "{errs:?}");
        assert!(locs.contains(&"p.yaml:9:19".into()), "{errs:?}");
        assert!(errs.iter().all(|e| e.path == "layers[0].os.user_data"));

        // Broken YAML in a quoted string: located at the string, with its own line/column.
        let errs = errors("name: x\nlayers:\n  - os:\n      user_data: \"a: [1, 2\"\n");
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(loc(&errs[0]), "p.yaml:4:18");
        assert!(errs[0].message.contains("user_data line"), "{errs:?}");
    }

    #[test]
    fn hostile_documents_are_refused() {
        let errs = errors("name: x\nname: y\nlayers: []\n");
        assert!(errs[0].message.contains("duplicate key"), "{errs:?}");
        let bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n\
                    c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n\
                    e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n";
        let errs = errors(bomb);
        assert!(errs[0].message.contains("alias bomb"), "{errs:?}");
        let deep = format!("{}1{}", "[".repeat(100), "]".repeat(100));
        let errs = errors(&deep);
        assert!(errs[0].message.contains("nesting"), "{errs:?}");
        let errs = errors("");
        assert!(errs[0].message.contains("empty"), "{errs:?}");
        let errs = errors("name: x\n---\nname: y\n");
        assert!(errs[0].message.contains("one YAML document"), "{errs:?}");
    }

    #[test]
    fn later_findings_are_located_by_document_path() {
        let c = read("p.yaml", GOOD).unwrap();
        assert!(c.has_os_layer());
        let f = c.finding(Severity::Error, "layers[2].cni.pod_cidr", "overlaps".into());
        assert_eq!(loc(&f), "p.yaml:22:17");
        assert_eq!(f.message, "overlaps");
        // A path the document does not have: its nearest ancestor.
        let f = c.finding(Severity::Error, "layers[1].kubernetes.server", "x".into());
        assert_eq!(loc(&f), "p.yaml:14:7");
    }

    #[test]
    fn a_typed_profile_is_checked_like_a_read_one() {
        let p = read("p.yaml", GOOD).unwrap().profile;
        let c = check("edge@v1", p.clone()).unwrap();
        assert_eq!(c.os.step_count(), 1);
        let f = c.finding(Severity::Error, "layers[2].cni.pod_cidr", "bad".into());
        assert_eq!(loc(&f), "edge@v1:1:1");
        assert_eq!(f.message, "layers[2].cni.pod_cidr: bad");

        let mut bad = p;
        bad.name = "Bad_Name".into();
        if let Layer::Os(os) = &mut bad.layers[0] {
            os.user_data = "stages:\n  bot:\n    - commands: [\"true\"]\n".into();
        }
        let r = check("edge@v1", bad).unwrap_err();
        let errs: Vec<String> = r.errors().map(ToString::to_string).collect();
        assert!(
            errs.iter()
                .any(|e| e.starts_with("edge@v1:1:1: error: name: ")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("edge@v1#layers[0].os.user_data:2:")),
            "{errs:?}"
        );
    }

    #[test]
    fn a_profile_is_told_from_user_data() {
        assert!(looks_like_profile(GOOD));
        assert!(looks_like_profile(r#"{"name": "x", "layers": []}"#));
        assert!(!looks_like_profile("#cloud-config\nusers: []\n"));
    }
}
