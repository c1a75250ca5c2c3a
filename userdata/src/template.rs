//! The hostname templates Kairos documents: `node-{{ trunc 4 .MachineID }}`,
//! `cluster-{{ .Random | trunc 6 }}`.
//!
//! yip renders a step's `hostname` as a Go `text/template` with sprig's functions and the
//! values `.MachineID`, `.Random`, `.UUID` and `.ProtectedID`. Cairn renders the part of that
//! language Kairos and Palette document for host names: the values `.MachineID` (the
//! target's `/etc/machine-id`), `.Random` (32 characters `[0-9a-z]`) and `.UUID` (a random
//! version-4 UUID), piped through or wrapped in `trunc N`, `upper` and `lower`; `{{-`/`-}}`
//! trim the text beside them. Anything else is refused at decode time with a message naming
//! it, so the caller can warn and leave that hostname out rather than set a wrong one.
//!
//! A random value is drawn once: [`HostTemplate::matches`] tells whether a host name is one
//! this template could have produced, and a matching name is kept on later applies (yip
//! draws a new one on every boot, so the name changes every boot).

use std::fmt;

/// A value a hostname template can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateValue {
    /// `.MachineID`: the target's machine id (32 lower-case hex digits).
    MachineId,
    /// `.Random`: 32 random characters from `[0-9a-z]`.
    Random,
    /// `.UUID`: a random version-4 UUID.
    Uuid,
}

impl TemplateValue {
    fn name(self) -> &'static str {
        match self {
            TemplateValue::MachineId => ".MachineID",
            TemplateValue::Random => ".Random",
            TemplateValue::Uuid => ".UUID",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Func {
    Trunc(i64),
    Upper,
    Lower,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Expr {
        value: TemplateValue,
        funcs: Vec<Func>,
    },
}

/// A parsed hostname template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostTemplate {
    parts: Vec<Part>,
}

/// The values a template is rendered with.
#[derive(Debug, Clone, Default)]
pub struct TemplateValues {
    pub machine_id: String,
    pub random: String,
    pub uuid: String,
}

/// Why a template is not rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// Valid Go template syntax Cairn does not render (another value or function).
    #[error("{0} is not rendered by Cairn (it renders .MachineID, .Random and .UUID with trunc, upper and lower)")]
    Unsupported(String),
    /// Not a template Go would accept either.
    #[error("{0}")]
    Syntax(String),
}

impl fmt::Display for HostTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for part in &self.parts {
            match part {
                Part::Text(t) => f.write_str(t)?,
                Part::Expr { value, funcs } => {
                    write!(f, "{{{{ {}", value.name())?;
                    for func in funcs {
                        match func {
                            Func::Trunc(n) => write!(f, " | trunc {n}")?,
                            Func::Upper => f.write_str(" | upper")?,
                            Func::Lower => f.write_str(" | lower")?,
                        }
                    }
                    f.write_str(" }}")?;
                }
            }
        }
        Ok(())
    }
}

/// Does this text contain template actions at all?
pub fn is_template(text: &str) -> bool {
    text.contains("{{")
}

impl HostTemplate {
    /// Parse a template; text without `{{` is one literal part.
    pub fn parse(text: &str) -> Result<HostTemplate, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = text;
        let mut trim_next = false;
        while let Some(start) = rest.find("{{") {
            let mut before = &rest[..start];
            if trim_next {
                before = before.trim_start();
            }
            let after_open = &rest[start + 2..];
            let (trim_prev, body_start) = match after_open.strip_prefix('-') {
                Some(b) if b.starts_with(char::is_whitespace) => (true, b),
                _ => (false, after_open),
            };
            if trim_prev {
                before = before.trim_end();
            }
            if !before.is_empty() {
                parts.push(Part::Text(before.to_string()));
            }
            let end = body_start
                .find("}}")
                .ok_or_else(|| TemplateError::Syntax("`{{` without a closing `}}`".into()))?;
            let mut body = &body_start[..end];
            trim_next = false;
            if let Some(b) = body.strip_suffix('-') {
                if b.ends_with(char::is_whitespace) {
                    body = b;
                    trim_next = true;
                }
            }
            parts.push(expr(body.trim())?);
            rest = &body_start[end + 2..];
        }
        let tail = if trim_next { rest.trim_start() } else { rest };
        if tail.contains("}}") {
            return Err(TemplateError::Syntax("`}}` without an opening `{{`".into()));
        }
        if !tail.is_empty() {
            parts.push(Part::Text(tail.to_string()));
        }
        Ok(HostTemplate { parts })
    }

    /// Whether the template uses `value`.
    pub fn uses(&self, value: TemplateValue) -> bool {
        self.parts
            .iter()
            .any(|p| matches!(p, Part::Expr { value: v, .. } if *v == value))
    }

    /// The name this template gives with `values`.
    pub fn render(&self, values: &TemplateValues) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Expr { value, funcs } => {
                    let v = match value {
                        TemplateValue::MachineId => &values.machine_id,
                        TemplateValue::Random => &values.random,
                        TemplateValue::Uuid => &values.uuid,
                    };
                    out.push_str(&apply(v, funcs));
                }
            }
        }
        out
    }

    /// Whether `name` is a name this template renders to with this `machine_id` and some
    /// random values: then it is kept, so a random part is drawn only once.
    pub fn matches(&self, name: &str, machine_id: &str) -> bool {
        let mut pattern = String::from("^");
        for part in &self.parts {
            match part {
                Part::Text(t) => pattern.push_str(&regex::escape(t)),
                Part::Expr {
                    value: TemplateValue::MachineId,
                    funcs,
                } => pattern.push_str(&regex::escape(&apply(machine_id, funcs))),
                Part::Expr { value, funcs } => {
                    let (mut class, mut len) = match value {
                        TemplateValue::Random => ("0-9a-z", 32usize),
                        _ => ("0-9a-f-", 36usize),
                    };
                    for f in funcs {
                        match f {
                            Func::Trunc(n) => {
                                len = len.min(usize::try_from(n.unsigned_abs()).unwrap_or(len))
                            }
                            Func::Upper if class == "0-9a-z" => class = "0-9A-Z",
                            Func::Upper => class = "0-9A-F-",
                            Func::Lower => {}
                        }
                    }
                    pattern.push_str(&format!("[{class}]{{{len}}}"));
                }
            }
        }
        pattern.push('$');
        regex::Regex::new(&pattern).is_ok_and(|re| re.is_match(name))
    }
}

/// sprig's `trunc`: the first N characters, or with a negative N the last -N.
fn trunc(s: &str, n: i64) -> String {
    let chars: Vec<char> = s.chars().collect();
    let len = chars.len() as i64;
    if n >= 0 && len > n {
        chars[..n as usize].iter().collect()
    } else if n < 0 && len + n > 0 {
        chars[(len + n) as usize..].iter().collect()
    } else {
        s.to_string()
    }
}

fn apply(value: &str, funcs: &[Func]) -> String {
    let mut v = value.to_string();
    for f in funcs {
        v = match f {
            Func::Trunc(n) => trunc(&v, *n),
            Func::Upper => v.to_uppercase(),
            Func::Lower => v.to_lowercase(),
        };
    }
    v
}

/// One action body: a pipeline of commands separated by `|`.
fn expr(body: &str) -> Result<Part, TemplateError> {
    if body.is_empty() {
        return Err(TemplateError::Syntax("an empty `{{ }}`".into()));
    }
    if body.starts_with("/*") {
        return Err(TemplateError::Unsupported("a template comment".into()));
    }
    if body.contains(['(', ')', '"', '`', '$', ':', '=']) {
        return Err(TemplateError::Unsupported(format!("`{{{{ {body} }}}}`")));
    }
    let mut value: Option<TemplateValue> = None;
    let mut funcs = Vec::new();
    for command in body.split('|') {
        let words: Vec<&str> = command.split_whitespace().collect();
        let Some((first, args)) = words.split_first() else {
            return Err(TemplateError::Syntax(format!(
                "an empty command in `{{{{ {body} }}}}`"
            )));
        };
        if first.starts_with('.') {
            if value.is_some() || !args.is_empty() {
                return Err(TemplateError::Syntax(format!(
                    "`{first}` cannot take arguments or follow a `|` in `{{{{ {body} }}}}`"
                )));
            }
            value = Some(field(first)?);
            continue;
        }
        // A function: its own arguments, then the piped value (if any) as the last one.
        let mut operand = None;
        let mut ints = Vec::new();
        for a in args {
            if a.starts_with('.') {
                if value.is_some() || operand.is_some() {
                    return Err(TemplateError::Syntax(format!(
                        "`{first}` is given two values in `{{{{ {body} }}}}`"
                    )));
                }
                operand = Some(field(a)?);
            } else if let Ok(n) = a.parse::<i64>() {
                ints.push(n);
            } else {
                return Err(TemplateError::Unsupported(format!("the argument `{a}`")));
            }
        }
        if !matches!(*first, "trunc" | "upper" | "lower") {
            return Err(TemplateError::Unsupported(format!(
                "the function `{first}`"
            )));
        }
        if let Some(o) = operand {
            value = Some(o);
        }
        if value.is_none() {
            return Err(TemplateError::Syntax(format!(
                "`{first}` has no value to work on in `{{{{ {body} }}}}`"
            )));
        }
        let func = match (*first, ints.as_slice()) {
            ("trunc", [n]) => Func::Trunc(*n),
            ("upper", []) => Func::Upper,
            ("lower", []) => Func::Lower,
            _ => {
                return Err(TemplateError::Syntax(format!(
                    "wrong arguments for `{first}` in `{{{{ {body} }}}}` (write `trunc 4 .MachineID`, `upper .Random`)"
                )))
            }
        };
        funcs.push(func);
    }
    let value =
        value.ok_or_else(|| TemplateError::Syntax(format!("`{{{{ {body} }}}}` has no value")))?;
    Ok(Part::Expr { value, funcs })
}

fn field(name: &str) -> Result<TemplateValue, TemplateError> {
    match name {
        ".MachineID" => Ok(TemplateValue::MachineId),
        ".Random" => Ok(TemplateValue::Random),
        ".UUID" => Ok(TemplateValue::Uuid),
        other => Err(TemplateError::Unsupported(format!("the value `{other}`"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> TemplateValues {
        TemplateValues {
            machine_id: "0123456789abcdef0123456789abcdef".into(),
            random: "abcdefghij0123456789klmnopqrstuv".into(),
            uuid: "6f1c1d2e-0b8a-4f4e-9a3c-1d2e3f4a5b6c".into(),
        }
    }

    #[test]
    fn documented_forms_render() {
        for (t, want) in [
            ("kairos-{{ trunc 4 .MachineID }}", "kairos-0123"),
            ("node-{{ .MachineID | trunc 8 }}", "node-01234567"),
            ("cluster-{{ trunc 6 .Random }}", "cluster-abcdef"),
            ("x-{{- trunc -4 .MachineID -}} -y", "x-cdef-y"),
            ("{{ upper (.UUID) }}", ""),
            ("plain", "plain"),
            ("id-{{ .UUID }}", "id-6f1c1d2e-0b8a-4f4e-9a3c-1d2e3f4a5b6c"),
            ("{{ .Random | trunc 3 | upper }}", "ABC"),
        ] {
            match HostTemplate::parse(t) {
                Ok(tpl) => assert_eq!(tpl.render(&values()), want, "{t}"),
                Err(e) => assert!(want.is_empty(), "{t}: {e}"),
            }
        }
    }

    #[test]
    fn other_constructs_are_named() {
        for (t, names) in [
            ("{{ .ProtectedID }}", ".ProtectedID"),
            ("{{ .Values.node.hostname }}", ".Values"),
            ("{{ randAlpha 4 }}", "randAlpha"),
            ("{{ if .Random }}x{{ end }}", "if"),
            ("{{ printf \"%s\" .Random }}", "printf"),
        ] {
            let e = HostTemplate::parse(t).unwrap_err();
            assert!(e.to_string().contains(names), "{t}: {e}");
        }
        assert!(matches!(
            HostTemplate::parse("a-{{ trunc 4 .MachineID"),
            Err(TemplateError::Syntax(_))
        ));
        assert!(matches!(
            HostTemplate::parse("{{ trunc .MachineID }}"),
            Err(TemplateError::Syntax(_))
        ));
    }

    #[test]
    fn a_drawn_name_is_recognised() {
        let t = HostTemplate::parse("edge-{{ trunc 4 .Random }}-{{ trunc 2 .MachineID }}").unwrap();
        assert!(t.uses(TemplateValue::Random) && t.uses(TemplateValue::MachineId));
        assert!(!t.uses(TemplateValue::Uuid));
        let mid = "0123456789abcdef0123456789abcdef";
        assert!(t.matches("edge-k3x9-01", mid));
        assert!(!t.matches("edge-k3x9-02", mid), "another machine id");
        assert!(!t.matches("edge-k3x-01", mid), "too short");
        assert!(!t.matches("debian", mid));
        let u = HostTemplate::parse("n-{{ .UUID | trunc 8 }}").unwrap();
        assert!(u.matches("n-6f1c1d2e", mid));
    }

    #[test]
    fn sprig_trunc() {
        assert_eq!(trunc("abcdef", 4), "abcd");
        assert_eq!(trunc("abcdef", -2), "ef");
        assert_eq!(trunc("ab", 4), "ab");
        assert_eq!(trunc("ab", -4), "ab");
        assert_eq!(trunc("ab", 0), "");
    }
}
