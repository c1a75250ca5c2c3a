//! Cross-entry checks on a merged configuration: things no single entry can know, such as
//! the same user declared twice with different uids, or one file written twice with
//! different content (which would flip, and report a change, on every apply).

use std::collections::HashMap;

use crate::diag::{Diagnostics, Location};
use crate::model::{Action, Config, FileSpec};

pub fn check(config: &Config, diags: &mut Diagnostics) {
    let mut users: HashMap<&str, (Option<u32>, &Location)> = HashMap::new();
    let mut groups: HashMap<&str, (Option<u32>, &Location)> = HashMap::new();
    let mut files: HashMap<&str, (&FileSpec, &str)> = HashMap::new();
    for stage in &config.stages {
        for step in &stage.steps {
            for action in &step.actions {
                match action {
                    // Steps with conditions may be meant for different machines.
                    Action::Files(specs) if step.conditions.is_empty() => {
                        for f in specs.iter().filter(|f| !f.append) {
                            same_file_twice(diags, &mut files, f, &stage.name);
                        }
                    }
                    Action::Users(specs) => {
                        for u in specs {
                            conflict(
                                diags,
                                &mut users,
                                "user",
                                &u.name,
                                u.uid,
                                &u.location,
                                "uid",
                            );
                        }
                    }
                    Action::Groups(specs) => {
                        for g in specs {
                            conflict(
                                diags,
                                &mut groups,
                                "group",
                                &g.name,
                                g.gid,
                                &g.location,
                                "gid",
                            );
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

fn conflict<'a>(
    diags: &mut Diagnostics,
    seen: &mut HashMap<&'a str, (Option<u32>, &'a Location)>,
    kind: &str,
    name: &'a str,
    id: Option<u32>,
    location: &'a Location,
    id_name: &str,
) {
    match seen.get(name) {
        Some((Some(prev), prev_loc)) if id.is_some_and(|i| i != *prev) => {
            diags.error(
                location.clone(),
                format!(
                    "{kind} `{name}` is declared with {id_name} {} here but {id_name} {prev} at {prev_loc}",
                    id.unwrap_or_default()
                ),
            );
        }
        Some((Some(_), _)) => {}
        _ => {
            seen.insert(name, (id, location));
        }
    }
}

/// The same path written by two unconditional entries with different content, mode or
/// owner: each apply would rewrite it twice and never settle.
fn same_file_twice<'a>(
    diags: &mut Diagnostics,
    seen: &mut HashMap<&'a str, (&'a FileSpec, &'a str)>,
    file: &'a FileSpec,
    stage: &'a str,
) {
    let key = file.path.as_str();
    match seen.get(key) {
        Some((prev, prev_stage)) => {
            let differs = prev.content != file.content
                || format!("{:?}", (&prev.mode, &prev.owner, &prev.group))
                    != format!("{:?}", (&file.mode, &file.owner, &file.group));
            if differs {
                diags.warning(
                    file.location.clone(),
                    format!(
                        "`{key}` is also written at {} (stage {prev_stage}) with other content or \
                         attributes: every apply would rewrite it twice and report a change; keep \
                         one entry, or use `append: true`",
                        prev.location
                    ),
                );
            }
            seen.insert(key, (file, stage));
        }
        None => {
            seen.insert(key, (file, stage));
        }
    }
}
