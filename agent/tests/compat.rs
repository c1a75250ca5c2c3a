#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Behaviour Kairos/yip and cloud-init configs rely on (issue 15): best-effort steps,
//! idempotence across file entries of one run, and dry runs that run nothing.

mod common;

use cairn_proto::{EventKind, StepFailed};
use common::{cli, stderr, TestEnv};

// ---------------------------------------------------------------------------------------
// best-effort steps (`on_failure: continue`)

/// A step that always fails on an empty root: its owner does not exist.
const FAILING_FILES: &str = "files: [{path: /etc/broken, content: x, owner: no-such-user}]";

#[test]
fn a_best_effort_step_fails_and_later_steps_and_stages_run() {
    let env = TestEnv::empty();
    let yaml = format!(
        "stages:
  boot:
    - name: reload networkd
      on_failure: continue
      {FAILING_FILES}
    - name: after it
      files: [{{path: /etc/after, content: ok}}]
  network:
    - name: later stage
      files: [{{path: /etc/later, content: ok}}]
"
    );
    let run = env.apply_yaml("be.yaml", &yaml);
    assert!(run.outcome.ok(), "{}", run.describe());
    assert_eq!(run.outcome.tolerated.len(), 1, "{}", run.describe());
    assert_eq!(run.outcome.tolerated[0].step, "reload networkd");
    let failed = run.step("reload networkd");
    assert_eq!(failed.kind, EventKind::StepFailed);
    assert!(
        StepFailed::from_data(&failed.data).continued,
        "{}",
        failed.data
    );
    assert_eq!(failed.data["continued"], serde_json::json!(true));
    assert_eq!(env.read("/etc/after"), "ok");
    assert_eq!(env.read("/etc/later"), "ok");
    assert!(!env.exists("/etc/broken"));
}

#[test]
fn fail_fast_stays_the_default() {
    let env = TestEnv::empty();
    let yaml = format!(
        "stages:
  boot:
    - name: breaks
      {FAILING_FILES}
    - name: after it
      files: [{{path: /etc/after, content: ok}}]
"
    );
    let run = env.apply_yaml("ff.yaml", &yaml);
    assert!(!run.outcome.ok());
    assert!(run.outcome.tolerated.is_empty());
    let failed = run.step("breaks");
    assert_eq!(failed.kind, EventKind::StepFailed);
    assert!(!StepFailed::from_data(&failed.data).continued);
    assert_eq!(failed.data["continued"], serde_json::json!(false));
    assert!(!env.exists("/etc/after"));
}

#[test]
fn a_document_switch_makes_its_steps_best_effort_and_a_step_can_opt_out() {
    let env = TestEnv::empty();
    let yaml = format!(
        "#cloud-config
on_failure: continue
stages:
  boot:
    - name: tolerated
      {FAILING_FILES}
    - name: second
      files: [{{path: /etc/second, content: ok}}]
    - name: must stop
      on_failure: stop
      {FAILING_FILES}
    - name: never
      files: [{{path: /etc/never, content: no}}]
"
    );
    let run = env.apply_yaml("doc.yaml", &yaml);
    assert_eq!(run.outcome.tolerated.len(), 1, "{}", run.describe());
    assert_eq!(
        run.outcome.failed.as_ref().map(|f| f.step.as_str()),
        Some("must stop")
    );
    assert_eq!(env.read("/etc/second"), "ok");
    assert!(!env.exists("/etc/never"));
}

#[test]
fn the_document_switch_covers_only_its_own_document() {
    let env = TestEnv::empty();
    let lenient = env.yaml("10-lenient.yaml", "on_failure: continue\nstages: {}\n");
    let strict = env.yaml(
        "20-strict.yaml",
        &format!("stages:\n  boot:\n    - name: strict\n      {FAILING_FILES}\n"),
    );
    let run = common::apply(&env.root, &[lenient, strict], &Default::default());
    assert!(!run.outcome.ok(), "{}", run.describe());
}

#[test]
fn cli_exit_status_says_failures_were_tolerated() {
    let env = TestEnv::empty();
    let f = env.yaml(
        "be.yaml",
        &format!(
            "stages:\n  boot:\n    - name: tolerated\n      on_failure: continue\n      \
             {FAILING_FILES}\n    - name: ok\n      files: [{{path: /etc/ok, content: ok}}]\n"
        ),
    );
    let out = cli([
        "apply".as_ref(),
        "--root".as_ref(),
        env.root.as_os_str(),
        f.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("best-effort"), "{}", stderr(&out));
    assert_eq!(env.read("/etc/ok"), "ok");
}

#[test]
fn validation_refuses_unknown_on_failure_values() {
    let env = TestEnv::empty();
    for yaml in [
        "stages:\n  boot:\n    - name: x\n      on_failure: ignore\n      commands: [\"true\"]\n",
        "on_failure: sometimes\nstages: {}\n",
    ] {
        let f = env.yaml("bad.yaml", yaml);
        let out = cli(["validate".as_ref(), f.as_os_str()]);
        assert_eq!(out.status.code(), Some(1), "{yaml}");
        let err = stderr(&out) + &common::stdout(&out);
        assert!(
            err.contains("on_failure must be `stop` or `continue`"),
            "{err}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// dry run: nothing runs, nothing says "ran"

/// A command runner that records every command it is asked to run (and runs none).
#[derive(Default)]
struct Recorder(std::sync::Mutex<Vec<String>>);

impl cairn_agent::host::Runner for Recorder {
    fn run(
        &self,
        cmd: &cairn_agent::host::Cmd,
    ) -> Result<cairn_agent::host::Output, cairn_agent::host::RunError> {
        self.0.lock().unwrap().push(cmd.display());
        Ok(cairn_agent::host::Output {
            status: 0,
            stdout: Vec::new(),
            stderr: Vec::new(),
        })
    }
}

/// Does `text` contain the word "ran"?
fn says_ran(text: &str) -> bool {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .any(|w| w.eq_ignore_ascii_case("ran"))
}

/// A Debian-looking root with every step kind of the dry-run test in reach.
fn dry_run_root(env: &TestEnv) -> std::path::PathBuf {
    env.write("/etc/os-release", "ID=debian\nVERSION_ID=\"12\"\n");
    env.write(
        "/var/lib/dpkg/status",
        "Package: base-files\nStatus: install ok installed\nVersion: 12.4\n\n",
    );
    env.write("/etc/passwd", "root:x:0:0:root:/root:/bin/sh\n");
    env.write("/etc/group", "root:x:0:\n");
    env.write("/etc/shadow", "root:*:19000:0:99999:7:::\n");
    env.write("/etc/gshadow", "root:*::\n");
    env.write("/usr/share/zoneinfo/Europe/Berlin", "TZif2");
    env.write(
        "/etc/systemd/system/sink.service",
        "[Service]\nExecStart=/bin/true\n",
    );
    env.yaml(
        "all.yaml",
        r#"stages:
  boot:
    - name: guarded
      if: "test -e /etc/never-there"
      files: [{path: /etc/guarded, content: x}]
      commands: ["echo hi >> /log"]
    - name: guarded but settled
      if: "false"
      directories: [{path: /etc}]
    - name: everything
      hostname: dry-host
      dns: {nameservers: [10.0.0.53]}
      environment: {A: "1"}
      sysctl: {vm.swappiness: "10"}
      modules: [overlay]
      timesyncd: {NTP: pool.example}
      timezone: Europe/Berlin
      groups: [{name: ops}]
      users:
        op:
          passwd: op
          groups: [ops]
          sudo: "ALL=(ALL) NOPASSWD:ALL"
          ssh_authorized_keys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl op@x"]
      directories: [{path: /opt/d}]
      files: [{path: /etc/f, content: f}]
      packages: {install: [jq], refresh: true, upgrade: true}
      systemctl: {enable: [sink], mask: [other], start: [sink]}
      commands: ["echo once >> /log", ["/bin/echo", "two"]]
"#,
    )
}

#[test]
fn a_dry_run_executes_nothing_and_never_says_ran() {
    let env = TestEnv::empty();
    let file = dry_run_root(&env);
    let loaded = cairn_userdata::load::load(&[file], false).unwrap();
    assert!(!loaded.diags.has_errors());
    let recorder = std::sync::Arc::new(Recorder::default());
    let host = cairn_agent::host::Host::new(&env.root, recorder.clone());
    let sink = cairn_agent::events::MemorySink::default();
    let mut emitter = cairn_agent::events::Emitter::new("t").with_sink(Box::new(sink.clone()));
    let before = common::snapshot(&env.root);
    let outcome = cairn_agent::engine::apply(
        &loaded.config,
        &host,
        &cairn_agent::engine::ApplyOptions {
            dry_run: true,
            ..Default::default()
        },
        &mut emitter,
    );
    let events = sink.events();
    let described: Vec<String> = events
        .iter()
        .map(|e| format!("{} {} {} {}", e.kind.as_str(), e.step, e.message, e.data))
        .collect();
    let described = described.join("\n");
    assert!(outcome.ok(), "{described}");
    assert_eq!(
        *recorder.0.lock().unwrap(),
        Vec::<String>::new(),
        "a dry run executed commands:\n{described}"
    );
    assert!(
        !events.iter().any(|e| e.kind == EventKind::StepFailed),
        "{described}"
    );
    common::assert_same(&before, &common::snapshot(&env.root));
    assert!(!says_ran(&described), "{described}");
    // The `if:` is reported as something to evaluate; its step as conditional on it.
    let guarded = events
        .iter()
        .find(|e| e.step == "guarded" && e.kind == EventKind::StepChanged)
        .unwrap_or_else(|| panic!("{described}"));
    assert!(
        guarded
            .message
            .contains("would evaluate `if: test -e /etc/never-there`"),
        "{}",
        guarded.message
    );
    assert!(
        guarded.message.contains("would run if"),
        "{}",
        guarded.message
    );
    assert_eq!(guarded.data["would_evaluate"], "test -e /etc/never-there");
    let settled = events
        .iter()
        .find(|e| e.step == "guarded but settled")
        .unwrap();
    assert_eq!(settled.kind, EventKind::StepUnchanged, "{described}");
    assert!(
        settled.message.contains("would evaluate"),
        "{}",
        settled.message
    );
    assert!(outcome
        .changes
        .iter()
        .any(|c| c == "would run `echo once >> /log`"));
}

#[test]
fn the_dry_run_cli_text_never_says_ran() {
    let env = TestEnv::empty();
    let file = dry_run_root(&env);
    let out = cli([
        "apply".as_ref(),
        "--dry-run".as_ref(),
        "--root".as_ref(),
        env.root.as_os_str(),
        file.as_os_str(),
    ]);
    let text = common::stdout(&out) + &stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(!says_ran(&text), "{text}");
    assert!(text.contains("would evaluate `if: false`"), "{text}");
    assert!(text.contains("would run if it succeeds"), "{text}");
    assert!(!env.exists("/log"));
}

// ---------------------------------------------------------------------------------------
// idempotence across the file entries of one run

fn mtime(env: &TestEnv, inside: &str) -> std::time::SystemTime {
    std::fs::metadata(env.p(inside))
        .unwrap()
        .modified()
        .unwrap()
}

fn assert_nothing_changed(run: &common::Run) {
    let changed: Vec<&cairn_proto::Event> = run
        .events
        .iter()
        .filter(|e| e.kind == EventKind::StepChanged)
        .collect();
    assert!(changed.is_empty(), "{}", run.describe());
    assert!(run.outcome.ok(), "{}", run.describe());
}

#[test]
fn a_file_written_then_appended_settles_after_one_apply() {
    let env = TestEnv::empty();
    let yaml = r#"#cloud-config
write_files:
  - path: /etc/app.conf
    content: "base\n"
  - path: /etc/app.conf
    append: true
    content: "extra\n"
  - path: /etc/app.conf
    append: true
    permissions: "0600"
    content: "more\n"
  - path: /etc/split.conf
    content: "now\n"
  - path: /etc/split.conf
    append: true
    defer: true
    content: "deferred\n"
  - path: /etc/replaced.conf
    content: "first\n"
  - path: /etc/replaced.conf
    defer: true
    content: "second\n"
"#;
    let f = env.yaml("wf.yaml", yaml);
    let first = common::apply(&env.root, std::slice::from_ref(&f), &Default::default()).ok();
    assert!(first.outcome.changed > 0);
    let want = [
        ("/etc/app.conf", "base\nextra\nmore\n"),
        ("/etc/split.conf", "now\ndeferred\n"),
        ("/etc/replaced.conf", "second\n"),
    ];
    for (path, content) in want {
        assert_eq!(env.read(path), content, "{path} after 1 apply");
    }
    assert_eq!(env.mode("/etc/app.conf"), 0o600);
    let times: Vec<_> = want.iter().map(|(p, _)| mtime(&env, p)).collect();
    std::thread::sleep(std::time::Duration::from_millis(20));
    for _ in 0..2 {
        let again = common::apply(&env.root, std::slice::from_ref(&f), &Default::default());
        assert_nothing_changed(&again);
    }
    for (i, (path, content)) in want.iter().enumerate() {
        assert_eq!(env.read(path), *content, "{path} after 3 applies");
        assert_eq!(mtime(&env, path), times[i], "{path} was touched");
    }
    assert_eq!(env.mode("/etc/app.conf"), 0o600);
}

#[test]
fn files_entries_of_different_steps_and_stages_settle() {
    let env = TestEnv::empty();
    let yaml = r#"stages:
  boot:
    - name: base
      files:
        - {path: /etc/multi.conf, content: "a\n"}
        - {path: /etc/multi.conf, content: "b\n", append: true}
  network:
    - name: more
      files:
        - {path: /etc/multi.conf, content: "c\n", append: true}
"#;
    let f = env.yaml("multi.yaml", yaml);
    common::apply(&env.root, std::slice::from_ref(&f), &Default::default()).ok();
    assert_eq!(env.read("/etc/multi.conf"), "a\nb\nc\n");
    let before = mtime(&env, "/etc/multi.conf");
    std::thread::sleep(std::time::Duration::from_millis(20));
    let again = common::apply(&env.root, std::slice::from_ref(&f), &Default::default());
    assert_nothing_changed(&again);
    assert_eq!(mtime(&env, "/etc/multi.conf"), before);
    // Drift is repaired: the file ends up as the run leaves it.
    env.write("/etc/multi.conf", "edited\n");
    let repaired = common::apply(&env.root, &[f], &Default::default()).ok();
    assert!(repaired.outcome.changed > 0);
    assert_eq!(env.read("/etc/multi.conf"), "a\nb\nc\n");
}

#[test]
fn a_lone_append_still_converges_on_an_existing_file() {
    let env = TestEnv::empty();
    env.write("/etc/existing.conf", "mine\n");
    let yaml = "stages:\n  boot:\n    - name: add\n      files:\n        - {path: /etc/existing.conf, content: \"added\\n\", append: true}\n";
    let f = env.yaml("a.yaml", yaml);
    let run = common::apply(&env.root, std::slice::from_ref(&f), &Default::default()).ok();
    assert!(
        run.changes()
            .contains("appended 6 bytes to /etc/existing.conf"),
        "{}",
        run.changes()
    );
    assert_eq!(env.read("/etc/existing.conf"), "mine\nadded\n");
    assert_nothing_changed(&common::apply(&env.root, &[f], &Default::default()));
    assert_eq!(env.read("/etc/existing.conf"), "mine\nadded\n");
}
