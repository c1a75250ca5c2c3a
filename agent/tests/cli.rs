#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The `cairn-agent` binary: JSON event lines, exit codes (0 ok, 1 invalid input or a
//! failed step, 2 usage), refusing invalid input before changing anything, stage selection
//! and help text.

mod common;

use std::path::PathBuf;

use cairn_proto::{Event, EventKind};
use common::{assert_same, cli, snapshot, stderr, stdout, TestEnv};

fn examples() -> Vec<String> {
    let dir = common::repo_dir().join("examples");
    ["user-data.yaml", "stages.yaml"]
        .iter()
        .map(|f| dir.join(f).display().to_string())
        .collect()
}

fn apply_args(env: &TestEnv, extra: &[&str], files: &[String]) -> Vec<String> {
    let mut args = vec![
        "apply".to_string(),
        "--root".into(),
        env.root.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(files.iter().cloned());
    args
}

fn parse_events(text: &str) -> Vec<Event> {
    text.lines()
        .map(|l| {
            serde_json::from_str::<Event>(l)
                .unwrap_or_else(|e| panic!("not an Event JSON line ({e}): {l}"))
        })
        .collect()
}

#[test]
fn json_output_is_one_event_per_line() {
    let env = TestEnv::new();
    let out = cli(apply_args(&env, &["--output", "json"], &examples()));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let events = parse_events(&text);
    assert!(events.len() > 10, "{text}");
    for pair in events.windows(2) {
        assert!(
            pair[1].seq > pair[0].seq,
            "seq strictly increasing: {} then {}",
            pair[0].seq,
            pair[1].seq
        );
    }
    for kind in [
        EventKind::StageStarted,
        EventKind::StepChanged,
        EventKind::StageFinished,
    ] {
        assert!(
            events.iter().any(|e| e.kind == kind),
            "{} present",
            kind.as_str()
        );
    }
    // Every line is an object with the wire spelling of its kind.
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let kind = v["kind"].as_str().unwrap();
        assert!(
            [
                "stage_started",
                "step_changed",
                "step_unchanged",
                "stage_finished"
            ]
            .contains(&kind),
            "{line}"
        );
        assert!(v["time"].as_str().unwrap().ends_with('Z'), "{line}");
    }
    // Step events carry `file:line` of their step.
    let hostname = events
        .iter()
        .find(|e| e.step == "set_hostname")
        .expect("set_hostname event");
    assert!(
        hostname.source.ends_with("examples/user-data.yaml:5"),
        "{}",
        hostname.source
    );
    // Nothing else is printed on stdout in JSON mode.
    assert_eq!(text.lines().count(), events.len());
}

#[test]
fn invalid_user_data_is_refused_and_changes_nothing() {
    let env = TestEnv::new();
    let bad = env.yaml(
        "bad.yaml",
        "#cloud-config\nwrite_files:\n  - path: /etc/ok\n    content: fine\n  - path: relative/path\n    content: x\nruncmd:\n  - touch /should-not-run\n",
    );
    let before = snapshot(&env.root);
    let out = cli(apply_args(&env, &[], &[bad.display().to_string()]));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{}:5:11: error: ", bad.display())),
        "{err}"
    );
    assert!(err.contains("nothing was applied"), "{err}");
    assert_same(&before, &snapshot(&env.root));
}

#[test]
fn a_failing_step_exits_1_naming_file_line_and_step() {
    let env = TestEnv::new();
    let f = env.yaml(
        "fail.yaml",
        "stages:\n  boot:\n    - name: boom\n      commands:\n        - echo broken >&2; exit 3\n  network:\n    - commands: [touch /not-reached]\n",
    );
    let out = cli(apply_args(
        &env,
        &["--output", "json"],
        &[f.display().to_string()],
    ));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{}:3:", f.display())) && err.contains("step `boom` failed"),
        "{err}"
    );
    assert!(err.contains("status 3") && err.contains("broken"), "{err}");
    let events = parse_events(&stdout(&out));
    let failed: Vec<&Event> = events
        .iter()
        .filter(|e| e.kind == EventKind::StepFailed)
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].source, format!("{}:3", f.display()));
    assert!(!events.iter().any(|e| e.stage == "network"));
    assert!(!env.exists("/not-reached"));
}

#[test]
fn unknown_stage_is_a_usage_error() {
    let env = TestEnv::new();
    let before = snapshot(&env.root);
    let out = cli(apply_args(&env, &["--stage", "bogus"], &examples()));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("unknown stage `bogus`"),
        "{}",
        stderr(&out)
    );
    assert_same(&before, &snapshot(&env.root));
    // Other usage errors: a missing root, an unknown flag, no files.
    let missing = env.cfg.join("no-such-root");
    let out = cli([
        "apply".to_string(),
        "--root".into(),
        missing.display().to_string(),
        examples()[0].clone(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        cli(["apply", "--frobnicate", "x.yaml"]).status.code(),
        Some(2)
    );
    assert_eq!(cli(["validate"]).status.code(), Some(2));
}

#[test]
fn stage_selection_runs_only_the_named_stage() {
    let env = TestEnv::new();
    let out = cli(apply_args(
        &env,
        &["--stage", "network", "--output", "json"],
        &examples(),
    ));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let events = parse_events(&stdout(&out));
    assert!(events.iter().all(|e| e.stage == "network"), "{events:?}");
    assert!(env.exists("/etc/systemd/timesyncd.conf.d/10-cairn.conf"));
    assert!(!env.exists("/etc/hostname"), "boot stage did not run");
    // Lifecycle stages run only when named.
    let f = env.yaml(
        "life.yaml",
        "stages:\n  after-install:\n    - files:\n        - path: /etc/installed\n          content: x\n",
    );
    let out = cli(apply_args(&env, &[], &[f.display().to_string()]));
    assert_eq!(out.status.code(), Some(0));
    assert!(!env.exists("/etc/installed"));
    assert!(stdout(&out).contains("not run (name them with --stage): after-install"));
    let out = cli(apply_args(
        &env,
        &["--stage", "after-install"],
        &[f.display().to_string()],
    ));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(env.read("/etc/installed"), "x");
}

#[test]
fn human_output_lists_changes_then_unchanged() {
    let env = TestEnv::new();
    let out = cli(apply_args(&env, &[], &examples()));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("stage boot"), "{text}");
    assert!(text.contains("created /etc/motd"), "{text}");
    assert!(text.contains("changed"), "{text}");
    let out = cli(apply_args(&env, &[], &examples()));
    let text = stdout(&out);
    assert!(text.contains("0 step(s) changed"), "{text}");
    assert!(!text.contains("created "), "{text}");
}

#[test]
fn directories_of_user_data_merge_in_lexical_order() {
    let env = TestEnv::new();
    let dir: PathBuf = env.cfg.join("oem");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("20-second.yaml"),
        "stages:\n  boot:\n    - commands: [\"echo second >> /order.log\"]\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("10-first.yml"),
        "stages:\n  boot:\n    - commands: [\"echo first >> /order.log\"]\n",
    )
    .unwrap();
    std::fs::write(dir.join("ignored.txt"), "not yaml").unwrap();
    let out = cli(apply_args(&env, &[], &[dir.display().to_string()]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(env.read("/order.log"), "first\nsecond\n");
}

#[test]
fn help_mentions_every_subcommand() {
    let out = cli(["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    for sub in ["validate", "apply", "stage"] {
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with(&format!("{sub} "))),
            "`{sub}` in --help:\n{text}"
        );
    }
    let out = cli(["apply", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    for flag in ["--root", "--stage", "--dry-run", "--output"] {
        assert!(text.contains(flag), "{flag} in apply --help:\n{text}");
    }
    for sub in ["validate", "stage"] {
        let out = cli([sub, "--help"]);
        assert_eq!(out.status.code(), Some(0), "{sub} --help");
        assert!(stdout(&out).contains("Usage:"));
    }
}

#[test]
fn stage_subcommand_reads_the_roots_oem_directory() {
    let env = TestEnv::new();
    env.write(
        "/oem/90-site.yaml",
        "stages:\n  network:\n    - files:\n        - path: /etc/from-oem\n          content: oem\n  boot:\n    - files:\n        - path: /etc/boot-only\n          content: boot\n",
    );
    let out = cli([
        "stage",
        "network",
        "--root",
        env.root.to_str().unwrap(),
        "--output",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(env.read("/etc/from-oem"), "oem");
    assert!(!env.exists("/etc/boot-only"), "only the named stage runs");
    let events = parse_events(&stdout(&out));
    assert!(events.iter().all(|e| e.stage == "network"));
}

#[test]
fn a_relative_root_works_for_every_tool() {
    let env = TestEnv::new();
    let f = env.yaml(
        "rel.yaml",
        "#cloud-config\nusers:\n  - name: reluser\n    shell: /bin/sh\nruncmd:\n  - touch /rel-ran\n",
    );
    let out = std::process::Command::new(common::bin())
        .current_dir(env.root.parent().unwrap())
        .args(["apply", "--root", "root"])
        .arg(&f)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        env.passwd("reluser").is_some(),
        "useradd --root got the root"
    );
    assert!(env.exists("/rel-ran"));
}

#[test]
fn a_second_apply_on_the_same_root_is_refused_while_one_runs() {
    let env = common::TestEnv::new();
    let slow = env.yaml(
        "slow.yaml",
        "stages:\n  boot:\n    - name: slow\n      commands:\n        - sleep 2\n",
    );
    let quick = env.yaml(
        "quick.yaml",
        "stages:\n  boot:\n    - files:\n        - path: /etc/q\n          content: q\n",
    );
    let bin = env!("CARGO_BIN_EXE_cairn-agent");
    let mut first = std::process::Command::new(bin)
        .args(["apply", "--root"])
        .arg(env.root.as_path())
        .arg(&slow)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the first apply holds the lock (its command is running).
    let lock = env.root.as_path().join("var/lib/cairn/apply.lock");
    for _ in 0..100 {
        if lock.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let second = std::process::Command::new(bin)
        .args(["apply", "--root"])
        .arg(env.root.as_path())
        .arg(&quick)
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains("another cairn-agent apply is running"),
        "{err}"
    );
    assert!(
        !env.root.as_path().join("etc/q").exists(),
        "the refused apply changed nothing"
    );
    assert!(first.wait().unwrap().success());
    // Once the first one is done, the same apply goes through.
    let third = std::process::Command::new(bin)
        .args(["apply", "--root"])
        .arg(env.root.as_path())
        .arg(&quick)
        .output()
        .unwrap();
    assert!(
        third.status.success(),
        "{}",
        String::from_utf8_lossy(&third.stderr)
    );
    assert!(env.root.as_path().join("etc/q").exists());
}

#[test]
fn completions_and_man_pages_cover_every_subcommand() {
    let subcommands = ["validate", "apply", "stage", "run", "status"];
    let bash = cli(["completions", "bash"]);
    assert!(bash.status.success(), "{}", stderr(&bash));
    let script = stdout(&bash);
    for s in subcommands {
        assert!(script.contains(s), "bash completion lacks `{s}`");
    }
    // The script is valid bash.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cairn-agent.bash");
    std::fs::write(&path, &script).unwrap();
    let check = std::process::Command::new("bash")
        .arg("-n")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    let man = dir.path().join("man");
    let out = cli(["manpages".as_ref(), man.as_os_str()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let top = std::fs::read_to_string(man.join("cairn-agent.1")).unwrap();
    assert!(
        top.starts_with(".ie") || top.contains(".TH cairn-agent 1"),
        "{top}"
    );
    for s in subcommands {
        let page = std::fs::read_to_string(man.join(format!("cairn-agent-{s}.1")))
            .unwrap_or_else(|e| panic!("no man page for `{s}`: {e}"));
        assert!(page.contains(".SH SYNOPSIS"), "cairn-agent-{s}.1: {page}");
    }

    // An unwritable directory is an error naming it, not a panic.
    let blocked = dir.path().join("file");
    std::fs::write(&blocked, "").unwrap();
    let out = cli(["manpages".as_ref(), blocked.join("man").as_os_str()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("writing man pages to"),
        "{}",
        stderr(&out)
    );
}
