#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Idempotence and dry runs: applying the same user-data twice changes nothing the second
//! time (events all `step_unchanged`, every file's bytes, mode, owner and mtime kept), and
//! `--dry-run` leaves a root byte for byte identical while listing what it would do.

mod common;

use std::path::PathBuf;

use cairn_agent::engine::ApplyOptions;
use cairn_proto::EventKind;
use common::{
    apply, assert_same, cli, host_has, indent, serve, sha256_hex, snapshot, stdout, TestEnv,
};

fn examples() -> Vec<PathBuf> {
    let dir = common::repo_dir().join("examples");
    let files = vec![dir.join("user-data.yaml"), dir.join("stages.yaml")];
    for f in &files {
        assert!(f.is_file(), "missing example {}", f.display());
    }
    files
}

/// The examples plus a file using every other step kind, with the fakes they need put in
/// the root (apt-get, update-ca-certificates, a unit file) and a local HTTP
/// server for the download.
fn kitchen_sink(env: &TestEnv) -> Vec<PathBuf> {
    // A fake apt-get that logs its argv and records what it "installed" in dpkg's status.
    env.script(
        "/usr/bin/apt-get",
        r#"#!/bin/sh
echo "$*" >> /apt-get.log
pkgs=
for a in "$@"; do
  if [ -n "$pkgs" ]; then
    printf 'Package: %s\nStatus: install ok installed\nVersion: 1\n\n' "$a" >> /var/lib/dpkg/status
  fi
  [ "$a" = "--" ] && pkgs=1
done
exit 0
"#,
    );
    env.write(
        "/var/lib/dpkg/status",
        "Package: base-files\nStatus: install ok installed\nVersion: 12.4\n\n",
    );
    env.write("/var/lib/apt/lists/deb_Release", "fresh lists");
    env.script(
        "/usr/sbin/update-ca-certificates",
        "#!/bin/sh\necho ran >> /update-ca.log\n",
    );
    env.write("/etc/environment", "KEEP=1\n");
    let body = b"artifact\n".to_vec();
    let (base, _) = serve("/artifact", body.clone());
    let mut extra = format!(
        r#"stages:
  boot:
    - name: everything else
      downloads:
        - url: {base}/artifact
          path: /opt/artifact
          sha256: {}
      dns:
        nameservers: [10.0.0.53]
      modules: [overlay]
      packages:
        install: [base-files, jq]
      commands:
        - echo once >> /commands.log
"#,
        sha256_hex(&body)
    );
    if host_has("systemctl") {
        env.write(
            "/etc/systemd/system/sink.service",
            "[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n",
        );
        extra.push_str(
            "      systemctl:\n        enable: [sink]\n        overrides:\n          - service: sink\n            content: \"[Service]\\nNice=5\\n\"\n",
        );
    }
    if let Some(pem) = ca_pem(env) {
        extra.push_str(&format!(
            "      certificates:\n        - |\n{}\n",
            indent(pem.trim_end(), 10)
        ));
    }
    let mut files = examples();
    files.push(env.yaml("zz-extra.yaml", &extra));
    files
}

fn ca_pem(env: &TestEnv) -> Option<String> {
    if !host_has("openssl") {
        eprintln!("note: no openssl on the host; certificates left out of the kitchen sink");
        return None;
    }
    let crt = env.cfg.join("ca.crt");
    let out = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=test-ca"])
        .args(["-addext", "basicConstraints=critical,CA:TRUE"])
        .arg("-keyout")
        .arg(env.cfg.join("ca.key"))
        .arg("-out")
        .arg(&crt)
        .output()
        .unwrap();
    assert!(out.status.success());
    Some(std::fs::read_to_string(crt).unwrap())
}

fn assert_all_unchanged(run: &common::Run) {
    assert!(run.outcome.ok(), "{:?}", run.outcome.failed);
    assert_eq!(run.outcome.changed, 0, "{}", run.describe());
    assert!(run.outcome.changes.is_empty(), "{:?}", run.outcome.changes);
    let steps: Vec<_> = run
        .events
        .iter()
        .filter(|e| !matches!(e.kind, EventKind::StageStarted | EventKind::StageFinished))
        .collect();
    assert!(!steps.is_empty());
    for e in steps {
        assert_eq!(
            e.kind,
            EventKind::StepUnchanged,
            "{} {}: {}",
            e.step,
            e.message,
            e.data
        );
    }
}

#[test]
fn examples_apply_twice_second_run_changes_nothing() {
    let env = TestEnv::new();
    let files = examples();
    let first = apply(&env.root, &files, &ApplyOptions::default()).ok();
    assert!(first.outcome.changed >= 8, "{}", first.describe());
    assert!(env.passwd("ops").is_some());
    assert_eq!(env.read("/var/lib/site-provisioned"), "provisioned\n");
    let before = snapshot(&env.root);
    let second = apply(&env.root, &files, &ApplyOptions::default());
    assert_all_unchanged(&second);
    assert_same(&before, &snapshot(&env.root));
}

#[test]
fn every_step_kind_applies_twice_without_changes() {
    let env = TestEnv::new();
    let files = kitchen_sink(&env);
    let first = apply(&env.root, &files, &ApplyOptions::default()).ok();
    assert_eq!(env.read("/commands.log"), "once\n");
    assert!(env.read("/apt-get.log").contains("install -- jq"));
    assert_eq!(env.read("/opt/artifact"), "artifact\n");
    assert!(first.outcome.changed > 0);
    let before = snapshot(&env.root);
    let second = apply(&env.root, &files, &ApplyOptions::default());
    assert_all_unchanged(&second);
    assert_same(&before, &snapshot(&env.root));
    assert_eq!(env.read("/commands.log"), "once\n");
}

fn dry_run_cli(env: &TestEnv, files: &[PathBuf]) -> String {
    let mut args = vec![
        "apply".to_string(),
        "--dry-run".into(),
        "--root".into(),
        env.root.display().to_string(),
    ];
    args.extend(files.iter().map(|f| f.display().to_string()));
    let out = cli(&args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stdout(&out),
        common::stderr(&out)
    );
    stdout(&out)
}

#[test]
fn dry_run_on_a_fresh_root_changes_nothing_and_lists_the_changes() {
    let env = TestEnv::new();
    let files = kitchen_sink(&env);
    let before = snapshot(&env.root);
    let out = dry_run_cli(&env, &files);
    assert_same(&before, &snapshot(&env.root));
    for expected in [
        "dry run",
        "created /etc/motd",
        "created /etc/cairn/site.env",
        "created user ops",
        "created group edge-ops",
        "created /etc/hostname",
        "linked /etc/localtime",
        "downloaded http://",
        "installed jq",
        "would run `echo once >> /commands.log`",
        "would change",
    ] {
        assert!(out.contains(expected), "`{expected}` missing from:\n{out}");
    }
    assert!(!out.contains("installed base-files"), "{out}");
}

#[test]
fn dry_run_library_reports_changes_without_making_them() {
    let env = TestEnv::new();
    let files = examples();
    let before = snapshot(&env.root);
    let run = apply(
        &env.root,
        &files,
        &ApplyOptions {
            dry_run: true,
            ..Default::default()
        },
    )
    .ok();
    assert_same(&before, &snapshot(&env.root));
    assert!(run.outcome.changed >= 8, "{}", run.describe());
    let changed = run
        .events
        .iter()
        .find(|e| e.kind == EventKind::StepChanged)
        .unwrap();
    assert_eq!(changed.data["dry_run"], true);
}

#[test]
fn dry_run_on_an_applied_root_changes_nothing_and_reports_nothing() {
    let env = TestEnv::new();
    let files = kitchen_sink(&env);
    apply(&env.root, &files, &ApplyOptions::default()).ok();
    let before = snapshot(&env.root);
    let out = dry_run_cli(&env, &files);
    assert_same(&before, &snapshot(&env.root));
    assert!(out.contains("0 step(s) would change"), "{out}");
    assert!(!out.contains("created "), "{out}");
}
