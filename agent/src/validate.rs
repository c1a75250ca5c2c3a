//! Cross-entry checks on a merged configuration: things no single entry can know, such as
//! the same user declared twice with different uids.

use std::collections::HashMap;

use crate::diag::{Diagnostics, Location};
use crate::model::{Action, Config};

pub fn check(config: &Config, diags: &mut Diagnostics) {
    let mut users: HashMap<&str, (Option<u32>, &Location)> = HashMap::new();
    let mut groups: HashMap<&str, (Option<u32>, &Location)> = HashMap::new();
    for stage in &config.stages {
        for step in &stage.steps {
            for action in &step.actions {
                match action {
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
