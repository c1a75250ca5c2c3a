#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The Kairos/Palette corpus (`tests/corpus/kairos/`): every file is read in the dialect its
//! `.expect` sidecar names, validates (or not) as stated, and gives exactly the warnings
//! listed there — no more, no fewer. Its users come out with the meaning the dialect gives
//! them (applying them for real is `agent/tests/accounts.rs`), and a Palette os layer is
//! read as Kairos.

use std::path::{Path, PathBuf};

use cairn_userdata::decode::dialect;
use cairn_userdata::diag::Severity;
use cairn_userdata::load;
use cairn_userdata::model::{Action, Config, Dialect, Password, UserSpec};

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/kairos")
}

#[derive(Debug, Default)]
struct Expect {
    dialect: Option<Dialect>,
    valid: Option<bool>,
    warnings: Vec<(usize, String)>,
    users: Vec<(String, String)>,
    locked: Vec<String>,
    keys: Vec<(String, String)>,
}

fn parse_expect(path: &Path) -> Expect {
    let text = std::fs::read_to_string(path).unwrap();
    let mut e = Expect::default();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (directive, rest) = line.split_once(' ').unwrap_or((line, ""));
        let rest = rest.trim();
        let at = format!("{}:{}", path.display(), i + 1);
        match directive {
            "dialect" => {
                e.dialect = Some(match rest {
                    "kairos" => Dialect::Kairos,
                    "cloud-init" => Dialect::CloudInit,
                    other => panic!("{at}: unknown dialect {other}"),
                })
            }
            "valid" => e.valid = Some(true),
            "invalid" => e.valid = Some(false),
            "warning" => {
                let (n, text) = rest.split_once(' ').expect("warning LINE TEXT");
                e.warnings
                    .push((n.parse().expect("a line number"), text.to_string()));
            }
            "user" => {
                let (n, p) = rest.split_once(' ').expect("user NAME PASSWORD");
                e.users.push((n.to_string(), p.to_string()));
            }
            "locked" => e.locked.push(rest.to_string()),
            "keys" => {
                let (u, s) = rest.split_once(' ').expect("keys USER SOURCE");
                e.keys.push((u.to_string(), s.to_string()));
            }
            // Checked by the agent's apply test.
            "file" | "hosts" => {}
            other => panic!("{at}: unknown directive `{other}`"),
        }
    }
    e
}

/// Every user entry of the configuration with that name.
fn users<'c>(config: &'c Config, name: &str) -> Vec<&'c UserSpec> {
    config
        .stages
        .iter()
        .flat_map(|s| &s.steps)
        .flat_map(|s| &s.actions)
        .filter_map(|a| match a {
            Action::Users(u) => Some(u.iter().filter(|u| u.name == name)),
            _ => None,
        })
        .flatten()
        .collect()
}

/// The key sources meant for `user`, wherever the decoder put them.
fn sources_for(config: &Config, user: &str) -> Vec<String> {
    let mut out = Vec::new();
    for action in config
        .stages
        .iter()
        .flat_map(|s| &s.steps)
        .flat_map(|s| &s.actions)
    {
        match action {
            Action::Users(us) => out.extend(
                us.iter()
                    .filter(|u| u.name == user)
                    .flat_map(|u| u.key_sources.iter().map(|k| k.provider.to_string())),
            ),
            Action::AuthorizedKeys(specs) => out.extend(
                specs
                    .iter()
                    .filter(|s| s.user == user)
                    .flat_map(|s| s.sources.iter().map(|k| k.provider.to_string())),
            ),
            _ => {}
        }
    }
    out
}

#[test]
fn corpus_files_read_as_their_expect_files_say() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 8, "the corpus has {} files", files.len());
    for expect in std::fs::read_dir(corpus_dir()).unwrap() {
        let p = expect.unwrap().path();
        if p.extension().is_some_and(|e| e == "expect") {
            assert!(
                p.with_extension("yaml").is_file(),
                "{} has no .yaml",
                p.display()
            );
        }
    }
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let exp_path = file.with_extension("expect");
        assert!(exp_path.is_file(), "{name} has no .expect sidecar");
        let exp = parse_expect(&exp_path);
        let text = std::fs::read_to_string(file).unwrap();

        let detected = dialect::detect(&text);
        assert_eq!(
            Some(detected.dialect),
            exp.dialect,
            "{name}: read as {:?} ({})",
            detected.dialect,
            detected.reason
        );

        let loaded = load::load(std::slice::from_ref(file), false).unwrap();
        let all: Vec<String> = loaded
            .diags
            .sorted()
            .iter()
            .map(|d| d.to_string())
            .collect();
        assert_eq!(
            Some(!loaded.diags.has_errors()),
            exp.valid,
            "{name}:\n{}",
            all.join("\n")
        );

        // Each warning is listed exactly once, each listed warning exists.
        let warnings: Vec<_> = loaded
            .diags
            .sorted()
            .into_iter()
            .filter(|d| d.severity == Severity::Warning)
            .collect();
        let mut unmatched: Vec<&(usize, String)> = exp.warnings.iter().collect();
        for w in &warnings {
            let pos = unmatched
                .iter()
                .position(|(line, text)| w.location.pos.line == *line && w.message.contains(text));
            match pos {
                Some(i) => {
                    unmatched.remove(i);
                }
                None => panic!("{name}: unexpected warning {w}\nall:\n{}", all.join("\n")),
            }
        }
        assert!(
            unmatched.is_empty(),
            "{name}: expected warnings not given: {unmatched:?}\nall:\n{}",
            all.join("\n")
        );

        for (user, password) in &exp.users {
            let specs = users(&loaded.config, user);
            assert!(!specs.is_empty(), "{name}: no user {user}");
            for u in specs {
                assert!(!u.lock_passwd, "{name}: {user} is locked");
                match &u.password {
                    Some(Password::Plain(p)) => assert_eq!(p, password, "{name}: {user}"),
                    Some(Password::Hashed(h)) => assert!(
                        h.starts_with("$6$"),
                        "{name}: {user} has a hash that is no SHA-512 crypt"
                    ),
                    None => panic!("{name}: {user} has no password"),
                }
            }
        }
        for user in &exp.locked {
            let specs = users(&loaded.config, user);
            assert!(!specs.is_empty(), "{name}: no user {user}");
            assert!(
                specs.iter().all(|u| u.lock_passwd),
                "{name}: {user} not locked"
            );
        }
        for (user, source) in &exp.keys {
            let found = sources_for(&loaded.config, user);
            assert!(
                found.contains(source),
                "{name}: {user} gets {found:?}, not {source}"
            );
        }
    }
}

const PALETTE_OS_LAYER: &str = r#"name: palette-like
layers:
  - os:
      dialect: kairos
      user_data: |
        #cloud-config
        users:
          - name: kairos
            passwd: kairos
"#;

#[test]
fn a_palette_os_layer_is_read_as_kairos() {
    let checked = cairn_userdata::profile::read("p.yaml", PALETTE_OS_LAYER).unwrap();
    assert!(checked.warnings.is_empty(), "{:?}", checked.warnings);
    let u = users(&checked.os, "kairos");
    assert_eq!(u.len(), 1);
    assert!(!u[0].lock_passwd);
    assert!(matches!(&u[0].password, Some(Password::Plain(p)) if p == "kairos"));
    assert_eq!(
        checked.profile.layers[0],
        cairn_proto::profile::Layer::Os(cairn_proto::profile::OsLayer {
            user_data: "#cloud-config\nusers:\n  - name: kairos\n    passwd: kairos\n".into(),
            dialect: Some(Dialect::Kairos),
        })
    );

    // Without `dialect:` an os layer is still Kairos user-data (Palette puts Kairos
    // user-data there): the account is usable, no warning.
    let plain = PALETTE_OS_LAYER.replace("      dialect: kairos\n", "");
    let checked = cairn_userdata::profile::read("p.yaml", &plain).unwrap();
    assert!(checked.warnings.is_empty(), "{:?}", checked.warnings);
    let u = users(&checked.os, "kairos");
    assert!(!u[0].lock_passwd);
    assert!(matches!(&u[0].password, Some(Password::Plain(p)) if p == "kairos"));

    // `dialect: cloud-init` gives cloud-init's meaning: locked, with a warning at its line
    // (line 9 of the profile: the user-data is a `|` block).
    let ci = PALETTE_OS_LAYER.replace("dialect: kairos", "dialect: cloud-init");
    let checked = cairn_userdata::profile::read("p.yaml", &ci).unwrap();
    let u = users(&checked.os, "kairos");
    assert!(u[0].lock_passwd);
    assert_eq!(checked.warnings.len(), 1, "{:?}", checked.warnings);
    let w = &checked.warnings[0];
    assert_eq!(w.location.pos.line, 9, "{w}");
    assert!(w.message.contains("`dialect: kairos` on the layer"), "{w}");

    // The layer and the text contradicting each other is an error.
    let both = PALETTE_OS_LAYER.replace(
        "#cloud-config\n",
        "#cloud-config\n        #cairn-dialect: cloud-init\n",
    );
    let refused = cairn_userdata::profile::read("p.yaml", &both).unwrap_err();
    assert!(refused.to_string().contains("contradicts"), "{refused}");
}
