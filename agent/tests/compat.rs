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
