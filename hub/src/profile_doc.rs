//! Reading a cluster profile document (YAML, or JSON — which is YAML) into a validated
//! [`Profile`], with every problem located as `FILE:LINE:COL`.
//!
//! The text is parsed with `saphyr-parser` into a small tree of located nodes, then
//! deserialized *type-driven* by a serde `Deserializer` over that tree: a field declared as
//! a string receives the scalar exactly as written (`version: 3.10` stays `"3.10"`, not the
//! float 3.1), while free-form `values:` get YAML's core-schema types. Shape errors (unknown
//! key, wrong type, missing field) carry the position of the node they concern; semantic
//! problems from [`Profile::validate`] are located through their document path.
//!
//! Hostile input is bounded: document size, nesting depth and node count (aliases are
//! expanded and counted, so an alias bomb is refused).

use std::collections::HashMap;
use std::fmt;

use cairn_proto::protocol::{Problem, MAX_BODY_BYTES};
use cairn_proto::Profile;
use saphyr_parser::{Event, Parser, ScalarStyle, Span};
use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};

/// Largest profile document accepted (the HTTP body limit).
pub const MAX_PROFILE_BYTES: usize = MAX_BODY_BYTES;
const MAX_DEPTH: usize = 64;
const MAX_NODES: usize = 200_000;

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

#[derive(Debug, Clone)]
struct Node {
    pos: Pos,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    /// `plain` is false for quoted and block scalars and for `!!str`-tagged ones.
    Scalar {
        value: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    fn is_null(&self) -> bool {
        matches!(&self.kind, Kind::Scalar { value, plain: true } if matches!(value.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    fn describe(&self) -> &'static str {
        match &self.kind {
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
            Kind::Scalar { .. } if self.is_null() => "null",
            Kind::Scalar { .. } => "a scalar",
        }
    }
}

/// A located problem while reading the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocError {
    pub pos: Option<Pos>,
    pub message: String,
}

impl DocError {
    fn at(pos: Pos, message: impl Into<String>) -> Self {
        DocError {
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

impl fmt::Display for DocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DocError {}

impl de::Error for DocError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DocError {
            pos: None,
            message: msg.to_string(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Parsing into a located tree

enum Frame {
    Seq(Pos, usize, Vec<Node>),
    Map(Pos, usize, Vec<(Node, Node)>, Option<Node>),
}

struct Builder {
    root: Option<Node>,
    documents: usize,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    nodes: usize,
}

fn count(node: &Node) -> usize {
    match &node.kind {
        Kind::Scalar { .. } => 1,
        Kind::Seq(items) => 1 + items.iter().map(count).sum::<usize>(),
        Kind::Map(entries) => {
            1 + entries
                .iter()
                .map(|(k, v)| count(k) + count(v))
                .sum::<usize>()
        }
    }
}

fn pos_of(span: &Span) -> Pos {
    Pos {
        line: span.start.line(),
        col: span.start.col() + 1,
    }
}

impl Builder {
    fn budget(&mut self, n: usize, pos: Pos) -> Result<(), DocError> {
        self.nodes += n;
        if self.nodes > MAX_NODES {
            return Err(DocError::at(
                pos,
                format!(
                    "the document expands to more than {MAX_NODES} nodes (alias bomb?); refused"
                ),
            ));
        }
        Ok(())
    }

    fn open(&mut self, frame: Frame, pos: Pos) -> Result<(), DocError> {
        self.budget(1, pos)?;
        if self.stack.len() >= MAX_DEPTH {
            return Err(DocError::at(
                pos,
                format!("nesting deeper than {MAX_DEPTH} levels; refused"),
            ));
        }
        self.stack.push(frame);
        Ok(())
    }

    fn finish(&mut self, node: Node, anchor: usize) -> Result<(), DocError> {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => {
                self.documents += 1;
                if self.documents > 1 {
                    return Err(DocError::at(
                        node.pos,
                        "a profile file holds one YAML document, this is a second one",
                    ));
                }
                self.root = Some(node);
            }
            Some(Frame::Seq(_, _, items)) => items.push(node),
            Some(Frame::Map(_, _, entries, key)) => match key.take() {
                None => {
                    let Kind::Scalar { value, .. } = &node.kind else {
                        return Err(DocError::at(node.pos, "a mapping key must be a scalar"));
                    };
                    if let Some((first, _)) = entries.iter().find(
                        |(k, _)| matches!(&k.kind, Kind::Scalar { value: v, .. } if v == value),
                    ) {
                        return Err(DocError::at(
                            node.pos,
                            format!("duplicate key `{value}` (first at line {})", first.pos.line),
                        ));
                    }
                    *key = Some(node);
                }
                Some(k) => entries.push((k, node)),
            },
        }
        Ok(())
    }

    fn push(&mut self, event: Event<'_>, span: Span) -> Result<(), DocError> {
        let pos = pos_of(&span);
        match event {
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart(_)
            | Event::DocumentEnd => {}
            Event::Alias(id) => {
                let node = self
                    .anchors
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| DocError::at(pos, "alias to an unknown anchor"))?;
                self.budget(count(&node), pos)?;
                self.finish(Node { pos, ..node }, 0)?;
            }
            Event::Scalar(value, style, anchor, tag) => {
                self.budget(1, pos)?;
                let forced_str = tag.as_deref().is_some_and(|t| {
                    t.suffix == "str" && (t.handle == "!!" || t.handle == "tag:yaml.org,2002:")
                });
                let node = Node {
                    pos,
                    kind: Kind::Scalar {
                        value: value.into_owned(),
                        plain: style == ScalarStyle::Plain && !forced_str,
                    },
                };
                self.finish(node, anchor)?;
            }
            Event::SequenceStart(anchor, _) => {
                self.open(Frame::Seq(pos, anchor, Vec::new()), pos)?
            }
            Event::MappingStart(anchor, _) => {
                self.open(Frame::Map(pos, anchor, Vec::new(), None), pos)?
            }
            Event::SequenceEnd => match self.stack.pop() {
                Some(Frame::Seq(p, anchor, items)) => self.finish(
                    Node {
                        pos: p,
                        kind: Kind::Seq(items),
                    },
                    anchor,
                )?,
                _ => return Err(DocError::at(pos, "unbalanced YAML events")),
            },
            Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Map(p, anchor, entries, _)) => self.finish(
                    Node {
                        pos: p,
                        kind: Kind::Map(entries),
                    },
                    anchor,
                )?,
                _ => return Err(DocError::at(pos, "unbalanced YAML events")),
            },
        }
        Ok(())
    }
}

fn parse_tree(text: &str) -> Result<Node, DocError> {
    if text.len() > MAX_PROFILE_BYTES {
        return Err(DocError::at(
            Pos { line: 1, col: 1 },
            format!(
                "the document is {} bytes; the limit is {MAX_PROFILE_BYTES}",
                text.len()
            ),
        ));
    }
    let mut b = Builder {
        root: None,
        documents: 0,
        stack: Vec::new(),
        anchors: HashMap::new(),
        nodes: 0,
    };
    let mut parser = Parser::new_from_str(text);
    while let Some(item) = parser.next_event() {
        let (event, span) = item.map_err(|e| {
            DocError::at(
                Pos {
                    line: e.marker().line(),
                    col: e.marker().col() + 1,
                },
                format!("YAML syntax: {}", e.info()),
            )
        })?;
        b.push(event, span)?;
    }
    b.root
        .ok_or_else(|| DocError::at(Pos { line: 1, col: 1 }, "the document is empty"))
}

/// Check that `text` is one or more well-formed YAML documents; the error position is
/// relative to `text`.
fn check_yaml_syntax(text: &str) -> Result<(), DocError> {
    let mut parser = Parser::new_from_str(text);
    while let Some(item) = parser.next_event() {
        if let Err(e) = item {
            return Err(DocError::at(
                Pos {
                    line: e.marker().line(),
                    col: e.marker().col() + 1,
                },
                e.info().to_string(),
            ));
        }
    }
    Ok(())
}

/// Every node's position by document path (`layers[1].kubernetes.flavor`), including the
/// positions of map keys under `path#key` so an unknown key can be pointed at.
fn index_paths(node: &Node, path: &str, out: &mut HashMap<String, Pos>) {
    out.insert(path.to_owned(), node.pos);
    match &node.kind {
        Kind::Scalar { .. } => {}
        Kind::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                index_paths(item, &format!("{path}[{i}]"), out);
            }
        }
        Kind::Map(entries) => {
            for (k, v) in entries {
                if let Kind::Scalar { value, .. } = &k.kind {
                    let p = if path.is_empty() {
                        value.clone()
                    } else {
                        format!("{path}.{value}")
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
        let cut = p.rfind(['.', '[']);
        match cut {
            Some(i) => p.truncate(i),
            None => return paths.get("").copied().unwrap_or(Pos { line: 1, col: 1 }),
        }
    }
}

// ---------------------------------------------------------------------------------------
// A serde Deserializer over the tree

struct De<'a>(&'a Node);

fn scalar_type_error(node: &Node, want: &str) -> DocError {
    DocError::at(
        node.pos,
        format!("expected {want}, found {}", node.describe()),
    )
}

fn plain_int(value: &str) -> Option<i64> {
    let v = value.strip_prefix('+').unwrap_or(value);
    if let Some(hex) = v.strip_prefix("0x") {
        return i64::from_str_radix(hex, 16).ok();
    }
    if let Some(oct) = v.strip_prefix("0o") {
        return i64::from_str_radix(oct, 8).ok();
    }
    if !v.is_empty()
        && v.trim_start_matches('-')
            .bytes()
            .all(|b| b.is_ascii_digit())
    {
        return v.parse().ok();
    }
    None
}

fn plain_float(value: &str) -> Option<f64> {
    match value {
        ".inf" | ".Inf" | ".INF" | "+.inf" => Some(f64::INFINITY),
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

impl<'de> de::Deserializer<'de> for De<'_> {
    type Error = DocError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DocError> {
        let node = self.0;
        let r = match &node.kind {
            Kind::Scalar { value, plain: true } => {
                if node.is_null() {
                    visitor.visit_unit()
                } else if let Some(b) = plain_bool(value) {
                    visitor.visit_bool(b)
                } else if let Some(i) = plain_int(value) {
                    visitor.visit_i64(i)
                } else if let Some(f) = plain_float(value) {
                    visitor.visit_f64(f)
                } else {
                    visitor.visit_str(value)
                }
            }
            Kind::Scalar {
                value,
                plain: false,
            } => visitor.visit_str(value),
            Kind::Seq(items) => visitor.visit_seq(SeqAccess {
                items: items.iter(),
            }),
            Kind::Map(entries) => visitor.visit_map(MapAccess {
                entries: entries.iter(),
                value: None,
            }),
        };
        r.map_err(|e| e.or_at(node.pos))
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DocError> {
        match &self.0.kind {
            Kind::Scalar { value, .. } => match plain_bool(value) {
                Some(b) => visitor.visit_bool(b),
                None => Err(DocError::at(
                    self.0.pos,
                    format!("expected true or false, found `{value}`"),
                )),
            },
            _ => Err(scalar_type_error(self.0, "true or false")),
        }
    }

    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DocError> {
        match &self.0.kind {
            Kind::Scalar { value, .. } => match value.trim().parse::<u64>() {
                Ok(n) => visitor
                    .visit_u64(n)
                    .map_err(|e: DocError| e.or_at(self.0.pos)),
                Err(_) => Err(DocError::at(
                    self.0.pos,
                    format!("expected a whole number ≥ 0, found `{value}`"),
                )),
            },
            _ => Err(scalar_type_error(self.0, "a whole number")),
        }
    }

    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DocError> {
        self.deserialize_u64(visitor)
    }

    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DocError> {
        match &self.0.kind {
            Kind::Scalar { value, .. } => match plain_int(value.trim()) {
                Some(n) => visitor
                    .visit_i64(n)
                    .map_err(|e: DocError| e.or_at(self.0.pos)),
                None => Err(DocError::at(
                    self.0.pos,
                    format!("expected a whole number, found `{value}`"),
                )),
            },
            _ => Err(scalar_type_error(self.0, "a whole number")),
        }
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DocError> {
        match &self.0.kind {
            Kind::Scalar { value, .. } => match plain_float(value.trim()) {
                Some(n) => visitor.visit_f64(n),
                None => Err(DocError::at(
                    self.0.pos,
                    format!("expected a number, found `{value}`"),
                )),
            },
            _ => Err(scalar_type_error(self.0, "a number")),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DocError> {
        match &self.0.kind {
            // Type-driven: a string field takes the scalar exactly as written.
            Kind::Scalar { value, .. } if !self.0.is_null() => visitor
                .visit_str(value)
                .map_err(|e: DocError| e.or_at(self.0.pos)),
            _ => Err(scalar_type_error(self.0, "a string")),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DocError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DocError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DocError> {
        if self.0.is_null() {
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DocError> {
        match &self.0.kind {
            Kind::Seq(items) => visitor
                .visit_seq(SeqAccess {
                    items: items.iter(),
                })
                .map_err(|e| e.or_at(self.0.pos)),
            _ => Err(scalar_type_error(self.0, "a list")),
        }
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DocError> {
        match &self.0.kind {
            Kind::Map(entries) => visitor
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
    ) -> Result<V::Value, DocError> {
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DocError> {
        let node = self.0;
        match &node.kind {
            Kind::Scalar { value, .. } => visitor
                .visit_enum(value.as_str().into_deserializer())
                .map_err(|e: DocError| e.or_at(node.pos)),
            Kind::Map(entries) if entries.len() == 1 => {
                let (k, v) = &entries[0];
                visitor
                    .visit_enum(EnumAccess { key: k, value: v })
                    .map_err(|e| e.or_at(k.pos))
            }
            _ => Err(DocError::at(
                node.pos,
                format!(
                    "expected one of {} (as a single-key mapping), found {}",
                    variants.join(", "),
                    node.describe()
                ),
            )),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DocError> {
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
    type Error = DocError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DocError> {
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
    type Error = DocError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DocError> {
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

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DocError> {
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
    type Error = DocError;
    type Variant = De<'a>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, De<'a>), DocError> {
        let v = seed
            .deserialize(De(self.key))
            .map_err(|e| e.or_at(self.key.pos))?;
        Ok((v, De(self.value)))
    }
}

impl<'de> de::VariantAccess<'de> for De<'_> {
    type Error = DocError;

    fn unit_variant(self) -> Result<(), DocError> {
        if self.0.is_null() {
            Ok(())
        } else {
            Err(DocError::at(self.0.pos, "this variant takes no value"))
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DocError> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, DocError> {
        de::Deserializer::deserialize_seq(self, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DocError> {
        de::Deserializer::deserialize_map(self, visitor)
    }
}

// ---------------------------------------------------------------------------------------

fn problem(file: &str, pos: Pos, path: &str, message: String) -> Problem {
    Problem {
        location: format!("{file}:{}:{}", pos.line, pos.col),
        path: path.to_owned(),
        message,
    }
}

/// Read and validate a profile. `file` names the document in the locations (a path, or
/// `upload` for an HTTP body). Returns every problem found; shape errors stop at the first.
pub fn load_profile(file: &str, text: &str) -> Result<Profile, Vec<Problem>> {
    let root = parse_tree(text).map_err(|e| {
        vec![problem(
            file,
            e.pos.unwrap_or(Pos { line: 1, col: 1 }),
            "",
            e.message,
        )]
    })?;
    let mut paths = HashMap::new();
    index_paths(&root, "", &mut paths);
    let profile: Profile = match serde_path_to_error::deserialize(De(&root)) {
        Ok(p) => p,
        Err(e) => {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            let inner = e.into_inner();
            let pos = inner.pos.unwrap_or_else(|| locate(&paths, &path));
            return Err(vec![problem(file, pos, &path, inner.message)]);
        }
    };
    let mut problems: Vec<Problem> = profile
        .validate()
        .into_iter()
        .map(|p| {
            let pos = locate(&paths, &p.path);
            problem(file, pos, &p.path, p.message)
        })
        .collect();
    // The os layer's user-data is YAML too: catch syntax errors at upload, not on the host.
    for (i, layer) in profile.layers.iter().enumerate() {
        if let cairn_proto::profile::Layer::Os(os) = layer {
            if let Err(e) = check_yaml_syntax(&os.user_data) {
                let path = format!("layers[{i}].os.user_data");
                let pos = locate(&paths, &path);
                let inner = e.pos.unwrap_or_default();
                problems.push(problem(
                    file,
                    pos,
                    &path,
                    format!(
                        "user_data is not valid YAML (its line {}, column {}): {}",
                        inner.line, inner.col, e.message
                    ),
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(profile)
    } else {
        Err(problems)
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

    #[test]
    fn a_yaml_profile_loads_type_driven() {
        let p = load_profile("p.yaml", GOOD).unwrap();
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
    fn the_shipped_example_profile_is_valid() {
        let text = include_str!("../../examples/profile-k3s.yaml");
        let p = load_profile("examples/profile-k3s.yaml", text).unwrap();
        assert_eq!(p.name, "edge-k3s");
        let kinds: Vec<&str> = p.layers.iter().map(Layer::kind).collect();
        assert_eq!(kinds, ["os", "kubernetes", "cni", "addons"]);
    }

    #[test]
    fn json_is_accepted_too() {
        let json = r#"{"name": "x", "version": 4, "layers": [{"os": {"user_data": "a: 1"}}]}"#;
        let p = load_profile("p.json", json).unwrap();
        assert_eq!(p.version, 4);
    }

    #[test]
    fn shape_errors_point_at_the_offending_node() {
        let text = "name: x\nlayers:\n  - kubernetes:\n      flavour: k3s\n";
        let errs = load_profile("p.yaml", text).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].location, "p.yaml:4:7", "{errs:?}");
        assert!(errs[0].message.contains("flavour"), "{errs:?}");

        let text = "name: x\nlayers:\n  - kubernetes:\n      flavor: k8s\n      version: v1\n";
        let errs = load_profile("p.yaml", text).unwrap_err();
        assert_eq!(errs[0].location, "p.yaml:4:15", "{errs:?}");
        assert!(errs[0].message.contains("k8s"), "{errs:?}");

        let text = "name: x\nversion: two\nlayers: []\n";
        let errs = load_profile("p.yaml", text).unwrap_err();
        assert_eq!(errs[0].location, "p.yaml:2:10", "{errs:?}");

        let text = "name: x\nlayers:\n  - os: {}\n";
        let errs = load_profile("p.yaml", text).unwrap_err();
        assert!(errs[0].message.contains("user_data"), "{errs:?}");
        assert_eq!(errs[0].location, "p.yaml:3:9", "{errs:?}");
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
        let errs = load_profile("p.yaml", text).unwrap_err();
        let locs: Vec<&str> = errs.iter().map(|e| e.location.as_str()).collect();
        assert!(locs.contains(&"p.yaml:1:7"), "{errs:?}"); // name
        assert!(locs.contains(&"p.yaml:6:13"), "{errs:?}"); // role agent without server
        assert!(locs.contains(&"p.yaml:10:17"), "{errs:?}"); // pod_cidr
    }

    #[test]
    fn broken_user_data_is_caught_at_upload() {
        let text = "name: x\nlayers:\n  - os:\n      user_data: \"a: [1, 2\"\n";
        let errs = load_profile("p.yaml", text).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].message.contains("user_data is not valid YAML"),
            "{errs:?}"
        );
        assert_eq!(errs[0].location, "p.yaml:4:18");
    }

    #[test]
    fn hostile_documents_are_refused() {
        let errs = load_profile("p.yaml", "name: x\nname: y\nlayers: []\n").unwrap_err();
        assert!(errs[0].message.contains("duplicate key"), "{errs:?}");
        let bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n\
                    c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n\
                    e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: [*e, *e, *e, *e]\n";
        let errs = load_profile("p.yaml", bomb).unwrap_err();
        assert!(errs[0].message.contains("alias bomb"), "{errs:?}");
        let deep = format!("{}1{}", "[".repeat(100), "]".repeat(100));
        let errs = load_profile("p.yaml", &deep).unwrap_err();
        assert!(errs[0].message.contains("nesting"), "{errs:?}");
        let errs = load_profile("p.yaml", "").unwrap_err();
        assert!(errs[0].message.contains("empty"), "{errs:?}");
        let errs = load_profile("p.yaml", "name: x\n---\nname: y\n").unwrap_err();
        assert!(errs[0].message.contains("one YAML document"), "{errs:?}");
    }
}
