//! A small located YAML tree built from `saphyr-parser` events: the one YAML reader of
//! Cairn, for user-data and for cluster profiles alike.
//!
//! Why not a serde YAML crate: user-data needs *every* problem reported with FILE:LINE:COL
//! (type errors, unknown keys, bad values), not only the first syntax error, and it needs the
//! scalar's style and tag (`0644` unquoted is octal for yip, `!!binary` is base64). A tree of
//! [`Node`]s with positions lets the decoder walk a document once and collect everything.
//!
//! Hostile input is bounded (the `MAX_*` constants): document size, nesting depth, the number of nodes
//! produced and the number of scalar bytes produced. Aliases are expanded, and both budgets
//! count what an alias expands to, so neither an "alias bomb" of many small nodes (billion
//! laughs) nor one alias of a large scalar repeated many times can make the tree outgrow
//! its budget; the refusal names the alias's position.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

use crate::diag::Pos;

/// Largest user-data file accepted.
pub const MAX_DOCUMENT_BYTES: usize = 8 * 1024 * 1024;
/// Deepest nesting accepted.
pub const MAX_DEPTH: usize = 64;
/// Most nodes one document may expand to (aliases included).
pub const MAX_NODES: usize = 250_000;
/// Most scalar bytes one document may expand to (aliases included): twice the largest
/// document, so aliases may repeat at most one document's worth of text.
pub const MAX_EXPANDED_BYTES: usize = 2 * MAX_DOCUMENT_BYTES;

/// One YAML value with the position where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub pos: Pos,
    /// The tag as written, e.g. `!!binary` (`tag:yaml.org,2002:binary` is normalised to it).
    pub tag: Option<String>,
    pub kind: NodeKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    Scalar { value: String, plain: bool },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// The scalar text, if this is a scalar.
    pub fn scalar(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar { value, .. } => Some(value),
            _ => None,
        }
    }

    /// True for an unquoted scalar (whose type YAML infers).
    pub fn is_plain(&self) -> bool {
        matches!(self.kind, NodeKind::Scalar { plain: true, .. })
    }

    /// A plain `~`, `null`, `Null`, `NULL` or empty scalar.
    pub fn is_null(&self) -> bool {
        match &self.kind {
            NodeKind::Scalar { value, plain: true } => {
                self.tag.is_none() && matches!(value.as_str(), "" | "~" | "null" | "Null" | "NULL")
            }
            _ => false,
        }
    }

    /// A short name of the node's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match &self.kind {
            NodeKind::Seq(_) => "a list",
            NodeKind::Map(_) => "a mapping",
            NodeKind::Scalar { .. } if self.is_null() => "null",
            NodeKind::Scalar { .. } => "a scalar",
        }
    }

    /// Look a key up in a mapping (first match).
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.kind {
            NodeKind::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.scalar() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }
}

/// A YAML syntax error or a refused (too large, too deep) document.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct YamlError {
    pub pos: Pos,
    pub message: String,
}

fn pos_of(span: &Span) -> Pos {
    Pos {
        line: span.start.line(),
        col: span.start.col() + 1,
    }
}

/// Parse every document of a YAML stream. An empty stream yields no documents.
pub fn parse(text: &str) -> Result<Vec<Node>, YamlError> {
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(YamlError {
            pos: Pos { line: 1, col: 1 },
            message: format!(
                "document is {} bytes; the limit is {MAX_DOCUMENT_BYTES} bytes",
                text.len()
            ),
        });
    }
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    while let Some(item) = parser.next_event() {
        let (event, span) = item.map_err(|e| YamlError {
            pos: Pos {
                line: e.marker().line(),
                col: e.marker().col() + 1,
            },
            message: format!("YAML syntax: {}", e.info()),
        })?;
        builder.push(event, span)?;
    }
    Ok(builder.documents)
}

/// Every key of a mapping (anywhere in `node`) that repeats an earlier key of the same
/// mapping, with the line of the first one. YAML forbids duplicate keys; merge keys (`<<`)
/// are already resolved, so what remains here was written twice.
pub fn duplicate_keys(node: &Node) -> Vec<(&Node, usize)> {
    let mut out = Vec::new();
    let mut stack = vec![node];
    while let Some(n) = stack.pop() {
        match &n.kind {
            NodeKind::Scalar { .. } => {}
            NodeKind::Seq(items) => stack.extend(items.iter().rev()),
            NodeKind::Map(entries) => {
                let mut seen: HashMap<&str, usize> = HashMap::new();
                for (k, v) in entries {
                    if let Some(key) = k.scalar() {
                        match seen.get(key) {
                            Some(&line) => out.push((k, line)),
                            None => {
                                seen.insert(key, k.pos.line);
                            }
                        }
                    }
                    stack.push(v);
                }
            }
        }
    }
    out.sort_by_key(|(k, _)| k.pos);
    out
}

enum Frame {
    Seq {
        node: Node,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        node: Node,
        anchor: usize,
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
    },
}

/// What a finished node cost, remembered with its anchor so an alias is charged the same.
#[derive(Clone, Copy, Default)]
struct Cost {
    nodes: usize,
    bytes: usize,
}

#[derive(Default)]
struct Builder {
    documents: Vec<Node>,
    stack: Vec<Frame>,
    anchors: HashMap<usize, (Node, Cost)>,
    /// Cost of each open collection so far (parallel to `stack`), so an anchored
    /// collection's cost is known when it ends without walking it again.
    open_costs: Vec<Cost>,
    nodes: usize,
    bytes: usize,
}

fn tag_string(tag: Option<&saphyr_parser::Tag>) -> Option<String> {
    tag.map(|t| {
        if t.handle == "tag:yaml.org,2002:" || t.handle == "!!" {
            format!("!!{}", t.suffix)
        } else {
            format!("{}{}", t.handle, t.suffix)
        }
    })
}

impl Builder {
    fn push(&mut self, event: Event<'_>, span: Span) -> Result<(), YamlError> {
        let pos = pos_of(&span);
        match event {
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentStart(_) => {}
            Event::DocumentEnd => self.anchors.clear(),
            Event::Alias(id) => {
                let (node, cost) = self.anchors.get(&id).cloned().ok_or_else(|| YamlError {
                    pos,
                    message: "alias to an unknown anchor".into(),
                })?;
                self.charge(cost, pos, true)?;
                let node = Node { pos, ..node };
                self.finish(node, 0, cost, pos)?;
            }
            Event::Scalar(value, style, anchor, tag) => {
                let cost = Cost {
                    nodes: 1,
                    bytes: value.len(),
                };
                self.charge(cost, pos, false)?;
                let node = Node {
                    pos,
                    tag: tag_string(tag.as_deref()),
                    kind: NodeKind::Scalar {
                        value: value.into_owned(),
                        plain: style == ScalarStyle::Plain,
                    },
                };
                self.finish(node, anchor, cost, pos)?;
            }
            Event::SequenceStart(anchor, tag) => {
                self.open(pos)?;
                self.stack.push(Frame::Seq {
                    node: Node {
                        pos,
                        tag: tag_string(tag.as_deref()),
                        kind: NodeKind::Seq(Vec::new()),
                    },
                    anchor,
                    items: Vec::new(),
                });
            }
            Event::MappingStart(anchor, tag) => {
                self.open(pos)?;
                self.stack.push(Frame::Map {
                    node: Node {
                        pos,
                        tag: tag_string(tag.as_deref()),
                        kind: NodeKind::Map(Vec::new()),
                    },
                    anchor,
                    entries: Vec::new(),
                    key: None,
                });
            }
            Event::SequenceEnd => match (self.stack.pop(), self.open_costs.pop()) {
                (
                    Some(Frame::Seq {
                        mut node,
                        anchor,
                        items,
                    }),
                    Some(cost),
                ) => {
                    node.kind = NodeKind::Seq(items);
                    self.finish(node, anchor, cost, pos)?;
                }
                _ => return Err(unbalanced(pos)),
            },
            Event::MappingEnd => match (self.stack.pop(), self.open_costs.pop()) {
                (
                    Some(Frame::Map {
                        mut node,
                        anchor,
                        entries,
                        ..
                    }),
                    Some(cost),
                ) => {
                    node.kind = NodeKind::Map(resolve_merge_keys(entries));
                    self.finish(node, anchor, cost, pos)?;
                }
                _ => return Err(unbalanced(pos)),
            },
        }
        Ok(())
    }

    /// A list or mapping starts: one node, one level deeper.
    fn open(&mut self, pos: Pos) -> Result<(), YamlError> {
        self.charge(Cost { nodes: 1, bytes: 0 }, pos, false)?;
        if self.stack.len() >= MAX_DEPTH {
            return Err(YamlError {
                pos,
                message: format!("nesting deeper than {MAX_DEPTH} levels; refused"),
            });
        }
        self.open_costs.push(Cost { nodes: 1, bytes: 0 });
        Ok(())
    }

    /// Count `cost` against the document's budgets (before anything is copied).
    fn charge(&mut self, cost: Cost, pos: Pos, alias: bool) -> Result<(), YamlError> {
        self.nodes += cost.nodes;
        self.bytes += cost.bytes;
        let what = if alias {
            "this alias makes the document expand"
        } else {
            "the document expands"
        };
        if self.nodes > MAX_NODES {
            return Err(YamlError {
                pos,
                message: format!("{what} to more than {MAX_NODES} nodes (an alias bomb?); refused"),
            });
        }
        if self.bytes > MAX_EXPANDED_BYTES {
            return Err(YamlError {
                pos,
                message: format!(
                    "{what} to more than {MAX_EXPANDED_BYTES} bytes of text \
                     (an alias bomb?); refused"
                ),
            });
        }
        Ok(())
    }

    /// A complete node: remember its anchor, then attach it to its parent.
    fn finish(&mut self, node: Node, anchor: usize, cost: Cost, pos: Pos) -> Result<(), YamlError> {
        if let Some(parent) = self.open_costs.last_mut() {
            parent.nodes += cost.nodes;
            parent.bytes += cost.bytes;
        }
        if anchor != 0 {
            self.anchors.insert(anchor, (node.clone(), cost));
        }
        match self.stack.last_mut() {
            None => self.documents.push(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                None => {
                    if !matches!(node.kind, NodeKind::Scalar { .. }) {
                        return Err(YamlError {
                            pos,
                            message: "a mapping key must be a scalar".into(),
                        });
                    }
                    *key = Some(node);
                }
                Some(k) => entries.push((k, node)),
            },
        }
        Ok(())
    }
}

fn unbalanced(pos: Pos) -> YamlError {
    YamlError {
        pos,
        message: "unbalanced YAML events".into(),
    }
}

/// YAML 1.1 merge keys (`<<: *base`), still common in cloud-config: the merged entries
/// come first and explicit keys override them.
fn resolve_merge_keys(entries: Vec<(Node, Node)>) -> Vec<(Node, Node)> {
    if !entries
        .iter()
        .any(|(k, _)| k.is_plain() && k.scalar() == Some("<<"))
    {
        return entries;
    }
    let mut merged: Vec<(Node, Node)> = Vec::new();
    let mut explicit: Vec<(Node, Node)> = Vec::new();
    for (k, v) in entries {
        if k.is_plain() && k.scalar() == Some("<<") {
            let sources = match v.kind {
                NodeKind::Map(_) => vec![v],
                NodeKind::Seq(items) => items,
                NodeKind::Scalar { .. } => {
                    explicit.push((k, v));
                    continue;
                }
            };
            for src in sources {
                if let NodeKind::Map(src_entries) = src.kind {
                    for (sk, sv) in src_entries {
                        if !merged.iter().any(|(mk, _)| mk.scalar() == sk.scalar()) {
                            merged.push((sk, sv));
                        }
                    }
                }
            }
        } else {
            explicit.push((k, v));
        }
    }
    merged.retain(|(mk, _)| !explicit.iter().any(|(ek, _)| ek.scalar() == mk.scalar()));
    merged.extend(explicit);
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_styles_kept() {
        let docs = parse("a:\n  b: 0644\n  c: '0644'\n  d: !!binary aGk=\n").unwrap();
        let root = &docs[0];
        let a = root.get("a").unwrap();
        let b = a.get("b").unwrap();
        assert_eq!(b.pos, Pos { line: 2, col: 6 });
        assert!(b.is_plain());
        assert!(!a.get("c").unwrap().is_plain());
        assert_eq!(a.get("d").unwrap().tag.as_deref(), Some("!!binary"));
    }

    #[test]
    fn syntax_error_has_position() {
        let err = parse("a: [1, 2\nb: c\n").unwrap_err();
        assert!(err.pos.line >= 1, "{err:?}");
        assert!(err.message.starts_with("YAML syntax"));
    }

    #[test]
    fn alias_bomb_is_refused() {
        let mut doc = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..8 {
            let p = i - 1;
            doc.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let err = parse(&doc).unwrap_err();
        assert!(err.message.contains("alias bomb"), "{err:?}");
    }

    #[test]
    fn deep_nesting_is_refused() {
        let doc = "[".repeat(MAX_DEPTH + 5) + &"]".repeat(MAX_DEPTH + 5);
        let err = parse(&doc).unwrap_err();
        assert!(err.message.contains("nesting"), "{err:?}");
    }

    #[test]
    fn merge_keys_apply_with_explicit_override() {
        let docs = parse("base: &b {x: 1, y: 2}\nm:\n  <<: *b\n  y: 3\n").unwrap();
        let m = docs[0].get("m").unwrap();
        assert_eq!(m.get("x").unwrap().scalar(), Some("1"));
        assert_eq!(m.get("y").unwrap().scalar(), Some("3"));
        assert!(m.get("<<").is_none());
    }

    #[test]
    fn multiple_documents() {
        let docs = parse("a: 1\n---\nb: 2\n").unwrap();
        assert_eq!(docs.len(), 2);
        assert!(parse("").unwrap().is_empty());
    }
}
