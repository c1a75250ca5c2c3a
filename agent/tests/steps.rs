#![allow(clippy::unwrap_used, clippy::expect_used)]
//! One test (or a few) per step kind against a temp-dir target root: files, directories,
//! downloads, commands, system settings, units, packages, certificates and conditions.
//! Account kinds (users, groups, sudo, SSH keys) are in `accounts.rs`.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Command;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use cairn_agent::engine::ApplyOptions;
use cairn_proto::EventKind;
use common::{apply, indent, require, serve, sha256_hex, temp_leftovers, TestEnv};

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

// ---------------------------------------------------------------------------------------
// files

#[test]
fn files_decode_every_encoding_and_create_parents() {
    let env = TestEnv::empty();
    let b64_body = B64.encode(b"base64 body\n");
    let gz_binary = B64.encode(gzip(b"gzip body\n"));
    let gz_b64 = B64.encode(gzip(b"gz+b64 body\n"));
    let raw = B64.encode([0u8, 1, 2, 0xfe, 0xff]);
    let yaml = format!(
        r#"#cloud-config
write_files:
  - path: /etc/deep/er/plain.txt
    content: |
      plain body
  - path: /etc/enc/b64.txt
    encoding: b64
    content: {b64_body}
  - path: /etc/enc/gzip.txt
    encoding: gzip
    content: !!binary |
      {gz_binary}
  - path: /etc/enc/gzb64.txt
    encoding: gz+b64
    content: {gz_b64}
  - path: /etc/enc/raw.bin
    content: !!binary {raw}
  - path: /etc/enc/quoted-mode
    permissions: '0600'
    content: secret
"#
    );
    let run = env.apply_yaml("files.yaml", &yaml).ok();
    assert_eq!(env.read("/etc/deep/er/plain.txt"), "plain body\n");
    assert_eq!(env.read("/etc/enc/b64.txt"), "base64 body\n");
    assert_eq!(env.read("/etc/enc/gzip.txt"), "gzip body\n");
    assert_eq!(env.read("/etc/enc/gzb64.txt"), "gz+b64 body\n");
    assert_eq!(
        std::fs::read(env.p("/etc/enc/raw.bin")).unwrap(),
        vec![0u8, 1, 2, 0xfe, 0xff]
    );
    // cloud-init defaults: 0644 root:root; parents created 0755.
    assert_eq!(env.meta("/etc/deep/er/plain.txt"), (0o644, 0, 0));
    assert_eq!(env.mode("/etc/deep"), 0o755);
    assert_eq!(env.mode("/etc/deep/er"), 0o755);
    assert_eq!(env.mode("/etc/enc/quoted-mode"), 0o600);
    assert_eq!(run.step("write_files").kind, EventKind::StepChanged);
    assert!(
        temp_leftovers(&env.root).is_empty(),
        "{:?}",
        temp_leftovers(&env.root)
    );
}

#[test]
fn files_yip_modes_and_owners_by_name_and_id() {
    let env = TestEnv::new();
    let yaml = r#"stages:
  boot:
    - name: owned files
      groups:
        fgroup: {gid: 4101}
      users:
        fowner:
          uid: 4100
          shell: /bin/sh
      files:
        - path: /srv/unquoted-octal
          permissions: 0640
          content: a
        - path: /srv/unquoted-0644
          permissions: 0644
          content: a
        - path: /srv/decimal
          permissions: 420
          content: b
        - path: /srv/default-mode
          content: c
        - path: /srv/by-name
          owner: fowner
          group: fgroup
          content: d
        - path: /srv/by-id
          owner: 4242
          group: 4343
          permissions: 0600
          content: e
        - path: /srv/owner-string
          owner_string: "fowner:fgroup"
          content: f
        - path: /srv/ownerstring
          ownerstring: "fowner:fgroup"
          content: g
"#;
    env.apply_yaml("owners.yaml", yaml).ok();
    assert_eq!(env.ids("fowner").0, 4100);
    assert_eq!(env.gid("fgroup"), 4101);
    // yip reads unquoted 0640 as octal, not decimal 640.
    assert_eq!(env.mode("/srv/unquoted-octal"), 0o640);
    assert_eq!(
        env.mode("/srv/unquoted-0644"),
        0o644,
        "not decimal 644 (0o1204)"
    );
    assert_eq!(env.mode("/srv/decimal"), 0o644, "420 decimal is 0644");
    // yip writes 0000 without permissions; Cairn writes 0644.
    assert_eq!(env.mode("/srv/default-mode"), 0o644);
    assert_eq!(env.meta("/srv/by-name"), (0o644, 4100, 4101));
    assert_eq!(env.meta("/srv/by-id"), (0o600, 4242, 4343));
    assert_eq!(env.meta("/srv/owner-string"), (0o644, 4100, 4101));
    assert_eq!(env.meta("/srv/ownerstring"), (0o644, 4100, 4101));
    assert_eq!(env.read("/srv/ownerstring"), "g");
    assert!(temp_leftovers(&env.root).is_empty());
}

#[test]
fn files_cloud_init_owner_user_colon_group() {
    let env = TestEnv::new();
    // write_files runs before users_groups in cloud-init, so the owner must exist: create
    // it in an earlier stage.
    env.yaml(
        "10-user.yaml",
        "stages:\n  boot.before:\n    - users:\n        wfowner:\n          uid: 4200\n",
    );
    env.yaml(
        "20-files.yaml",
        "#cloud-config\nwrite_files:\n  - path: /etc/wf-owned\n    owner: wfowner:wfowner\n    content: x\n",
    );
    common::apply(
        &env.root,
        std::slice::from_ref(&env.cfg),
        &Default::default(),
    )
    .ok();
    let (uid, gid) = env.ids("wfowner");
    assert_eq!(uid, 4200);
    assert_eq!(env.meta("/etc/wf-owned"), (0o644, uid, gid));
}

#[test]
fn files_append_only_once_and_fix_meta() {
    let env = TestEnv::empty();
    env.write("/etc/appended.conf", "first line\n");
    let yaml = r#"stages:
  boot:
    - name: append
      files:
        - path: /etc/appended.conf
          append: true
          permissions: 0600
          content: "appended line\n"
"#;
    let run = env.apply_yaml("append.yaml", yaml).ok();
    assert_eq!(run.step("append").kind, EventKind::StepChanged);
    assert_eq!(
        env.read("/etc/appended.conf"),
        "first line\nappended line\n"
    );
    assert_eq!(env.mode("/etc/appended.conf"), 0o600);
    let again = env.apply_yaml("append.yaml", yaml).ok();
    assert_eq!(
        env.read("/etc/appended.conf"),
        "first line\nappended line\n",
        "a second apply must not append again"
    );
    assert_eq!(again.step("append").kind, EventKind::StepUnchanged);
    assert_eq!(again.outcome.changed, 0);
}

#[test]
fn files_replace_atomically_and_converge_mode() {
    let env = TestEnv::empty();
    env.write("/etc/app/app.conf", "old content\n");
    std::fs::set_permissions(
        env.p("/etc/app/app.conf"),
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .unwrap();
    let ino_before = std::os::unix::fs::MetadataExt::ino(
        &std::fs::metadata(env.p("/etc/app/app.conf")).unwrap(),
    );
    let yaml = "stages:\n  boot:\n    - name: conf\n      files:\n        - path: /etc/app/app.conf\n          permissions: 0640\n          content: \"new content\\n\"\n";
    let run = env.apply_yaml("conf.yaml", yaml).ok();
    assert_eq!(env.read("/etc/app/app.conf"), "new content\n");
    assert_eq!(env.mode("/etc/app/app.conf"), 0o640);
    let ino_after = std::os::unix::fs::MetadataExt::ino(
        &std::fs::metadata(env.p("/etc/app/app.conf")).unwrap(),
    );
    assert_ne!(
        ino_before, ino_after,
        "content is replaced by rename (a new inode), not rewritten in place"
    );
    assert!(run.changes().contains("rewrote /etc/app/app.conf"));
    let names: Vec<String> = std::fs::read_dir(env.p("/etc/app"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["app.conf".to_string()], "no temp file left");
    // Only the mode differs now: changed without rewriting the content.
    std::fs::set_permissions(
        env.p("/etc/app/app.conf"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let run = env.apply_yaml("conf.yaml", yaml).ok();
    assert_eq!(env.mode("/etc/app/app.conf"), 0o640);
    assert!(
        run.changes().contains("changed mode of /etc/app/app.conf"),
        "{}",
        run.changes()
    );
}

#[test]
fn files_of_a_failing_step_are_not_half_written() {
    let env = TestEnv::empty();
    env.write("/etc/passwd", "root:x:0:0:root:/root:/bin/sh\n");
    env.write("/etc/group", "root:x:0:\n");
    env.write("/etc/app/a.conf", "old a\n");
    let yaml = r#"stages:
  boot:
    - name: app config
      files:
        - path: /etc/app/a.conf
          content: "new a\n"
        - path: /etc/app/b.conf
          content: "new b\n"
          owner_string: nobody-here
"#;
    let run = env.apply_yaml("f.yaml", yaml);
    assert!(!run.outcome.ok());
    assert!(run.describe().contains("nobody-here"), "{}", run.describe());
    assert_eq!(
        env.read("/etc/app/a.conf"),
        "old a\n",
        "a.conf was replaced"
    );
    assert!(!env.exists("/etc/app/b.conf"));
    assert_eq!(temp_leftovers(&env.root), Vec::<String>::new());
}

/// A tmpfs mounted on the root for the test's duration (ENOSPC on demand).
struct SmallFs(std::path::PathBuf);

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_fails_the_step_and_keeps_the_old_files() {
    let env = TestEnv::empty();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "cairn-enospc"])
        .arg(&env.root)
        .status()
        .unwrap();
    assert!(mounted.success(), "mounting a tmpfs needs root");
    let _guard = SmallFs(env.root.clone());
    env.write("/etc/app/small.conf", "old small\n");
    env.write("/etc/app/other.conf", "old other\n");
    let big = "x".repeat(400 * 1024);
    let yaml = format!(
        "stages:\n  boot:\n    - name: fill\n      files:\n        - path: /etc/app/other.conf\n          content: \"new other\\n\"\n        - path: /etc/app/small.conf\n          content: {big}\n"
    );
    let f = env.cfg.join("full.yaml");
    std::fs::write(&f, yaml).unwrap();
    let run = apply(&env.root, &[f], &ApplyOptions::default());
    assert!(!run.outcome.ok());
    let failure = run.outcome.failed.clone().unwrap();
    assert_eq!(failure.step, "fill");
    assert!(
        failure.message.contains("No space left on device")
            && failure.message.contains("small.conf"),
        "{failure:?}"
    );
    assert_eq!(env.read("/etc/app/small.conf"), "old small\n");
    assert_eq!(env.read("/etc/app/other.conf"), "old other\n");
    assert_eq!(temp_leftovers(&env.root), Vec::<std::path::PathBuf>::new());
}

#[test]
fn files_through_a_symlink_stay_inside_the_root() {
    let env = TestEnv::empty();
    std::fs::create_dir_all(env.p("/etc")).unwrap();
    // An absolute link inside the target must resolve inside the root, not on the host.
    std::os::unix::fs::symlink(
        "/run/cairn-it-escape/target.conf",
        env.p("/etc/linked.conf"),
    )
    .unwrap();
    let yaml = "stages:\n  boot:\n    - files:\n        - path: /etc/linked.conf\n          content: inside\n";
    env.apply_yaml("link.yaml", yaml).ok();
    assert_eq!(env.read("/run/cairn-it-escape/target.conf"), "inside");
    assert!(!Path::new("/run/cairn-it-escape").exists());
}

// ---------------------------------------------------------------------------------------
// directories

#[test]
fn directories_created_with_mode_owner_and_parents() {
    let env = TestEnv::empty();
    std::fs::create_dir_all(env.p("/srv/existing")).unwrap();
    std::fs::set_permissions(
        env.p("/srv/existing"),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let yaml = r#"stages:
  boot:
    - name: dirs
      directories:
        - path: /srv/a/b/c
          permissions: 0750
          owner: 4300
          group: 4301
        - path: /srv/existing
          permissions: 0700
        - path: /srv/default
"#;
    let run = env.apply_yaml("dirs.yaml", yaml).ok();
    assert_eq!(env.meta("/srv/a/b/c"), (0o750, 4300, 4301));
    assert!(std::fs::metadata(env.p("/srv/a/b/c")).unwrap().is_dir());
    assert_eq!(env.meta("/srv/a/b"), (0o755, 0, 0), "parents are 0755 root");
    assert_eq!(env.mode("/srv/existing"), 0o700);
    assert_eq!(env.mode("/srv/default"), 0o755);
    assert_eq!(run.step("dirs").kind, EventKind::StepChanged);
    let again = env.apply_yaml("dirs.yaml", yaml).ok();
    assert_eq!(again.step("dirs").kind, EventKind::StepUnchanged);
}

#[test]
fn directories_refuse_to_replace_a_file() {
    let env = TestEnv::empty();
    env.write("/srv/file", "x");
    let yaml = "stages:\n  boot:\n    - name: dir over file\n      directories:\n        - path: /srv/file\n";
    let run = env.apply_yaml("d.yaml", yaml);
    let f = run.outcome.failed.expect("the step fails");
    assert!(f.message.contains("not a directory"), "{}", f.message);
    assert_eq!(env.read("/srv/file"), "x");
}

// ---------------------------------------------------------------------------------------
// downloads

#[test]
fn downloads_fetch_verify_and_install() {
    let env = TestEnv::empty();
    let body = b"downloaded artifact bytes\n".repeat(100);
    let (base, hits) = serve("/artifact.bin", body.clone());
    let digest = sha256_hex(&body);
    let yaml = format!(
        r#"stages:
  boot:
    - name: fetch
      downloads:
        - url: {base}/artifact.bin
          path: /opt/bin/artifact
          sha256: {digest}
          permissions: 0755
          owner: 4400
          group: 4401
"#
    );
    let run = env.apply_yaml("dl.yaml", &yaml).ok();
    assert_eq!(std::fs::read(env.p("/opt/bin/artifact")).unwrap(), body);
    assert_eq!(env.meta("/opt/bin/artifact"), (0o755, 4400, 4401));
    assert_eq!(run.step("fetch").kind, EventKind::StepChanged);
    assert!(temp_leftovers(&env.root).is_empty());
    let served = hits.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(served, 1);
    // The file matches its digest: a second apply does not fetch again.
    let again = env.apply_yaml("dl.yaml", &yaml).ok();
    assert_eq!(again.step("fetch").kind, EventKind::StepUnchanged);
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[test]
fn downloads_with_wrong_sha256_fail_and_leave_nothing() {
    let env = TestEnv::empty();
    let body = b"the real bytes".to_vec();
    let (base, _) = serve("/file", body.clone());
    let wrong = "0".repeat(64);
    let yaml = format!(
        r#"stages:
  boot:
    - name: bad digest
      downloads:
        - url: {base}/file
          path: /opt/file
          sha256: {wrong}
    - name: later step
      files:
        - path: /etc/later
          content: x
"#
    );
    let run = env.apply_yaml("dl.yaml", &yaml);
    let f = run.outcome.failed.clone().expect("the step must fail");
    assert_eq!(f.step, "bad digest");
    assert!(
        f.message.contains(&wrong),
        "expected digest named: {}",
        f.message
    );
    assert!(
        f.message.contains(&sha256_hex(&body)),
        "actual digest named: {}",
        f.message
    );
    assert!(!env.exists("/opt/file"), "nothing at the path");
    assert!(temp_leftovers(&env.root).is_empty(), "no temp file left");
    assert!(!env.exists("/etc/later"), "the stage stopped");
    assert_eq!(run.step("bad digest").kind, EventKind::StepFailed);
}

// ---------------------------------------------------------------------------------------
// commands

#[test]
fn commands_run_inside_the_root_as_shell_strings_and_argv_lists() {
    let env = TestEnv::new();
    let yaml = r#"stages:
  boot:
    - name: cmds
      commands:
        - "echo one > /cmd-shell.txt && echo two >> /cmd-shell.txt"
        - ["/bin/touch", "/literal; not a shell"]
"#;
    let run = env.apply_yaml("cmds.yaml", yaml).ok();
    assert_eq!(
        env.read("/cmd-shell.txt"),
        "one\ntwo\n",
        "string runs under sh -c"
    );
    assert!(
        env.exists("/literal; not a shell"),
        "a list is exec'd as argv, no shell parsing"
    );
    assert!(
        !Path::new("/cmd-shell.txt").exists(),
        "ran in the root, not on the host"
    );
    assert_eq!(run.step("cmds").kind, EventKind::StepChanged);
}

#[test]
fn failing_command_stops_its_stage_and_later_stages() {
    let env = TestEnv::new();
    let file = env.yaml(
        "fail.yaml",
        r#"stages:
  boot:
    - name: before
      commands:
        - echo ran > /before.txt
    - name: breaks
      commands:
        - echo first-ok
        - echo the-stderr-tail >&2; exit 7
    - name: after in same stage
      commands:
        - touch /same-stage.txt
  network:
    - name: later stage
      commands:
        - touch /later-stage.txt
"#,
    );
    let run = common::apply(&env.root, std::slice::from_ref(&file), &Default::default());
    let f = run.outcome.failed.clone().expect("the run fails");
    assert_eq!(f.stage, "boot");
    assert_eq!(f.step, "breaks");
    // The step is at line 6 of the file (its `- name:`).
    assert!(
        f.source.starts_with(&format!("{}:6:", file.display())),
        "{}",
        f.source
    );
    assert!(f.message.contains("status 7"), "{}", f.message);
    assert!(f.message.contains("the-stderr-tail"), "{}", f.message);
    assert!(
        f.message.contains("line 9"),
        "names the command's line: {}",
        f.message
    );
    assert!(env.exists("/before.txt"));
    assert!(!env.exists("/same-stage.txt"), "later steps do not run");
    assert!(!env.exists("/later-stage.txt"), "later stages do not run");
    let failed = run.step("breaks");
    assert_eq!(failed.kind, EventKind::StepFailed);
    assert_eq!(failed.source, format!("{}:6", file.display()));
    assert!(run.step_events("after in same stage").is_empty());
    assert!(
        !run.events.iter().any(|e| e.stage == "network"),
        "no event of a later stage:\n{}",
        run.describe()
    );
    // The failed stage is still closed with its counts.
    let finished = run
        .events
        .iter()
        .find(|e| e.kind == EventKind::StageFinished && e.stage == "boot")
        .expect("stage_finished for boot");
    assert_eq!(finished.data["failed"], 1);
}

#[test]
fn commands_follow_their_frequency() {
    let env = TestEnv::new();
    let yaml = r#"stages:
  boot:
    - name: per boot
      commands:
        - echo x >> /per-boot.log
    - name: always
      frequency: always
      commands:
        - echo x >> /always.log
"#;
    env.apply_yaml("freq.yaml", yaml).ok();
    let again = env.apply_yaml("freq.yaml", yaml).ok();
    assert_eq!(
        env.read("/per-boot.log"),
        "x\n",
        "boot-stage commands run once per boot"
    );
    assert_eq!(env.read("/always.log"), "x\nx\n");
    assert_eq!(again.step("per boot").kind, EventKind::StepUnchanged);
    assert_eq!(again.step("always").kind, EventKind::StepChanged);
}

#[test]
fn stages_run_in_canonical_order_whatever_the_document_order() {
    let env = TestEnv::new();
    let step = |s: &str| format!("  {s}:\n    - commands: [\"echo {s} >> /order.log\"]\n");
    let mut yaml = String::from("stages:\n");
    for s in [
        "network.after",
        "network",
        "boot.after",
        "boot",
        "boot.before",
        "initramfs",
        "rootfs",
        "network.before",
        "fs",
    ] {
        yaml += &step(s);
    }
    env.apply_yaml("order.yaml", &yaml).ok();
    assert_eq!(
        env.read("/order.log"),
        "rootfs\ninitramfs\nfs\nboot.before\nboot\nboot.after\nnetwork.before\nnetwork\nnetwork.after\n"
    );
}

#[test]
fn a_fixed_failure_resumes_without_rerunning_completed_commands() {
    let env = TestEnv::new();
    let yaml = r#"stages:
  after-install:
    - name: a
      commands: ["echo a >> /resume.log"]
    - name: b
      commands: ["[ -e /fixed ] || exit 1", "echo b >> /resume.log"]
"#;
    let f = env.yaml("resume.yaml", yaml);
    let opts = ApplyOptions {
        stages: vec!["after-install".into()],
        dry_run: false,
        ..Default::default()
    };
    let run = common::apply(&env.root, std::slice::from_ref(&f), &opts);
    assert_eq!(run.outcome.failed.expect("b fails").step, "b");
    assert_eq!(env.read("/resume.log"), "a\n");
    env.write("/fixed", "");
    let run = common::apply(&env.root, std::slice::from_ref(&f), &opts).ok();
    assert_eq!(env.read("/resume.log"), "a\nb\n", "a is not run again");
    assert_eq!(run.step("a").kind, EventKind::StepUnchanged);
    assert_eq!(run.step("b").kind, EventKind::StepChanged);
    let run = common::apply(&env.root, &[f], &opts).ok();
    assert_eq!(run.outcome.changed, 0);
    assert_eq!(env.read("/resume.log"), "a\nb\n");
}

#[test]
fn cloud_init_bootcmd_runcmd_and_deferred_files() {
    let env = TestEnv::new();
    let yaml = r#"#cloud-config
bootcmd:
  - echo boot >> /bootcmd.log
runcmd:
  - [sh, -c, "if [ -e /etc/deferred ]; then echo seen; else echo absent; fi >> /runcmd.log"]
write_files:
  - path: /etc/deferred
    content: "deferred\n"
    defer: true
  - path: /etc/now
    content: now
"#;
    let run = env.apply_yaml("ci.yaml", yaml).ok();
    assert_eq!(env.read("/bootcmd.log"), "boot\n");
    assert_eq!(env.read("/etc/now"), "now");
    assert!(env.exists("/etc/deferred"));
    // Deferred files are written after runcmd, as cloud-init does (runcmd saw no file).
    assert_eq!(env.read("/runcmd.log"), "absent\n");
    let names: Vec<&str> = run
        .events
        .iter()
        .filter(|e| e.kind == EventKind::StepChanged)
        .map(|e| e.step.as_str())
        .collect();
    assert_eq!(
        names,
        vec!["bootcmd", "write_files", "runcmd", "write_files_deferred"]
    );
    let again = env.apply_yaml("ci.yaml", yaml).ok();
    assert_eq!(again.outcome.changed, 0, "{}", again.describe());
    assert_eq!(env.read("/bootcmd.log"), "boot\n");
}

// ---------------------------------------------------------------------------------------
// conditions

#[test]
fn conditions_skip_or_run_steps() {
    let env = TestEnv::new();
    let mk = |name: &str, cond: &str| {
        format!(
            "    - name: {name}\n{cond}      files:\n        - path: /cond/{name}\n          content: x\n"
        )
    };
    // A marker only the root has: `if` must be evaluated inside the root.
    env.write("/only-in-root.marker", "x");
    let mut yaml = String::from("stages:\n  boot:\n");
    yaml += &mk("if-true", "      if: \"[ -e /only-in-root.marker ]\"\n");
    yaml += &mk("if-false", "      if: \"[ -e /no/such/file ]\"\n");
    yaml += &mk("os-match", "      only_os: \"Debian GNU/Linux 12.*\"\n");
    yaml += &mk("os-other", "      only_os: \"Alpine.*\"\n");
    yaml += &mk("os-version", "      only_os_version: \"^12$\"\n");
    yaml += &mk(
        "any-one-exists",
        "      if_files:\n        any: [/nope, /etc/os-release]\n",
    );
    yaml += &mk(
        "all-one-missing",
        "      if_files:\n        all: [/etc/os-release, /nope]\n",
    );
    yaml += &mk(
        "none-but-exists",
        "      if_files:\n        none: [/etc/os-release]\n",
    );
    yaml += &mk("none-absent", "      if_files:\n        none: [/nope]\n");
    let run = env.apply_yaml("cond.yaml", &yaml).ok();
    for ran in [
        "if-true",
        "os-match",
        "os-version",
        "any-one-exists",
        "none-absent",
    ] {
        assert_eq!(run.step(ran).kind, EventKind::StepChanged, "{ran}");
        assert!(env.exists(&format!("/cond/{ran}")), "{ran} ran");
    }
    for skipped in ["if-false", "os-other", "all-one-missing", "none-but-exists"] {
        assert!(run.skipped(skipped), "{skipped} reported as skipped");
        assert!(
            run.step(skipped).message.starts_with("skipped: "),
            "{}",
            run.step(skipped).message
        );
        assert!(
            !env.exists(&format!("/cond/{skipped}")),
            "{skipped} did not run"
        );
    }
    assert_eq!(run.outcome.skipped, 4);
    // Skipped steps count as unchanged, in the outcome as in stage_finished.
    assert_eq!(run.outcome.unchanged, 4);
    assert_eq!(run.outcome.changed, 5);
    let finished = run
        .events
        .iter()
        .find(|e| e.kind == EventKind::StageFinished)
        .unwrap();
    assert_eq!(finished.data["unchanged"], 4);
    assert_eq!(finished.data["changed"], 5);
    assert!(run.step("os-other").message.contains("Debian GNU/Linux 12"));
}

// ---------------------------------------------------------------------------------------
// system settings

#[test]
fn sysctl_and_modules_write_drop_ins() {
    let env = TestEnv::empty();
    let yaml = r#"stages:
  boot:
    - name: k8s net
      sysctl:
        net.ipv4.ip_forward: "1"
        net.bridge.bridge-nf-call-iptables: 1
      modules:
        - br_netfilter
        - nf_conntrack hashsize=1024
"#;
    let run = env.apply_yaml("k.yaml", yaml).ok();
    let only = |dir: &str, prefix: &str| {
        let names: Vec<String> = std::fs::read_dir(env.p(dir))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(prefix) && n.ends_with(".conf"))
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        format!("{dir}/{}", names[0])
    };
    let sysctl = only("/etc/sysctl.d", "90-cairn-");
    let text = env.read(&sysctl);
    assert!(text.contains("net.ipv4.ip_forward = 1\n"), "{text}");
    assert!(
        text.contains("net.bridge.bridge-nf-call-iptables = 1\n"),
        "{text}"
    );
    assert_eq!(env.meta(&sysctl), (0o644, 0, 0));
    let modules = only("/etc/modules-load.d", "cairn-");
    assert_eq!(
        env.read(&modules),
        "# Written by Cairn from user-data\nbr_netfilter\nnf_conntrack\n"
    );
    assert_eq!(
        env.read("/etc/modprobe.d/cairn-nf_conntrack.conf"),
        "options nf_conntrack hashsize=1024\n"
    );
    assert_eq!(run.step("k8s net").kind, EventKind::StepChanged);
    let again = env.apply_yaml("k.yaml", yaml).ok();
    assert_eq!(again.outcome.changed, 0);
}

#[test]
fn hostname_writes_etc_hostname_and_the_hosts_line() {
    let env = TestEnv::new();
    let run = env
        .apply_yaml(
            "h.yaml",
            "#cloud-config\nhostname: node7\nfqdn: node7.example.com\n",
        )
        .ok();
    assert_eq!(env.read("/etc/hostname"), "node7\n");
    let hosts = env.read("/etc/hosts");
    assert!(
        hosts
            .lines()
            .any(|l| l == "127.0.1.1\tnode7.example.com node7"),
        "{hosts}"
    );
    assert!(
        hosts.lines().any(|l| l == "127.0.0.1\tlocalhost"),
        "{hosts}"
    );
    assert_eq!(
        hosts.lines().filter(|l| l.starts_with("127.0.1.1")).count(),
        1
    );
    assert_eq!(run.step("set_hostname").kind, EventKind::StepChanged);
    // Kairos-style stage step.
    env.apply_yaml("h2.yaml", "stages:\n  boot:\n    - hostname: edge-9\n")
        .ok();
    assert_eq!(env.read("/etc/hostname"), "edge-9\n");
    assert!(env.read("/etc/hosts").contains("127.0.1.1\tedge-9\n"));
}

#[test]
fn hosts_line_follows_the_dialect() {
    // Kairos (yip): the 127.0.0.1 line carries the name; a Debian 127.0.1.1 line the image
    // already has is kept in step rather than left naming the old host.
    let env = TestEnv::new();
    let run = env
        .apply_yaml(
            "k.yaml",
            "#cloud-config\n#cairn-dialect: kairos\nhostname: k-node\n",
        )
        .ok();
    assert_eq!(env.read("/etc/hostname"), "k-node\n");
    assert_eq!(
        env.read("/etc/hosts"),
        "127.0.0.1\tlocalhost k-node\n127.0.1.1\tk-node\n"
    );
    assert_eq!(run.step("set_hostname").kind, EventKind::StepChanged);
    let again = env
        .apply_yaml(
            "k.yaml",
            "#cloud-config\n#cairn-dialect: kairos\nhostname: k-node\n",
        )
        .ok();
    assert_eq!(again.outcome.changed, 0, "{}", again.describe());

    // cloud-init: a 127.0.1.1 line, added after 127.0.0.1 when the image has none; the
    // 127.0.0.1 line is left alone.
    let env = TestEnv::new();
    env.write(
        "/etc/hosts",
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n",
    );
    env.apply_yaml(
        "c.yaml",
        "#cloud-config\nhostname: c-node\nfqdn: c-node.example.org\n",
    )
    .ok();
    assert_eq!(
        env.read("/etc/hosts"),
        "127.0.0.1\tlocalhost\n127.0.1.1\tc-node.example.org c-node\n::1\tlocalhost ip6-localhost\n"
    );

    // Kairos with no /etc/hosts at all: the file is made, and a name is in it.
    let env = TestEnv::new();
    std::fs::remove_file(env.p("/etc/hosts")).unwrap();
    env.apply_yaml(
        "k.yaml",
        "stages:\n  initramfs:\n    - hostname: bare-node\n",
    )
    .ok();
    assert_eq!(env.read("/etc/hosts"), "127.0.0.1\tlocalhost bare-node\n");
    assert_eq!(env.mode("/etc/hosts"), 0o644);

    // A yip stage step keeps the other localhost aliases of the line, drops the old name,
    // and leaves comments and other lines as they were.
    let env = TestEnv::new();
    env.write(
        "/etc/hosts",
        "# static table\n127.0.0.1 localhost localhost.localdomain old-name\n10.0.0.9 nas\n",
    );
    env.apply_yaml("s.yaml", "stages:\n  boot:\n    - hostname: new-name\n")
        .ok();
    assert_eq!(
        env.read("/etc/hosts"),
        "# static table\n127.0.0.1\tlocalhost localhost.localdomain new-name\n10.0.0.9 nas\n"
    );

    // cloud-init with no /etc/hosts: both lines are written.
    let env = TestEnv::new();
    std::fs::remove_file(env.p("/etc/hosts")).unwrap();
    env.apply_yaml("c.yaml", "#cloud-config\nhostname: c2\n")
        .ok();
    assert_eq!(
        env.read("/etc/hosts"),
        "127.0.0.1\tlocalhost\n127.0.1.1\tc2\n"
    );
}

#[test]
fn hostname_templates_are_rendered_and_a_drawn_name_is_kept() {
    let env = TestEnv::new();
    env.write("/etc/machine-id", "0123456789abcdef0123456789abcdef\n");
    env.apply_yaml(
        "m.yaml",
        "#cloud-config\nhostname: edge-{{ trunc 4 .MachineID }}\n",
    )
    .ok();
    assert_eq!(env.read("/etc/hostname"), "edge-0123\n");
    assert!(env
        .read("/etc/hosts")
        .contains("127.0.0.1\tlocalhost edge-0123\n"));

    // `.Random` is drawn once: a name the template could have made is kept.
    let yaml =
        "stages:\n  boot:\n    - name: random name\n      hostname: node-{{ .Random | trunc 6 }}\n";
    env.apply_yaml("r.yaml", yaml).ok();
    let first = env.read("/etc/hostname");
    assert!(
        regex::Regex::new(r"^node-[0-9a-z]{6}\n$")
            .unwrap()
            .is_match(&first),
        "{first:?}"
    );
    let again = env.apply_yaml("r.yaml", yaml).ok();
    assert_eq!(env.read("/etc/hostname"), first);
    assert_eq!(again.step("random name").kind, EventKind::StepUnchanged);

    // No machine id yet: the step fails saying so.
    let env = TestEnv::new();
    env.write("/etc/machine-id", "uninitialized\n");
    let run = env.apply_yaml(
        "m.yaml",
        "stages:\n  boot:\n    - name: by machine id\n      hostname: n-{{ .MachineID }}\n",
    );
    let failed = run.outcome.failed.expect("no machine id");
    assert!(failed.message.contains("machine id"), "{}", failed.message);
    assert!(!env.exists("/etc/hostname"));
}

#[test]
fn a_renamed_or_removed_step_leaves_no_drop_in_behind() {
    let env = TestEnv::empty();
    let v1 = r#"stages:
  boot:
    - name: k8s net
      sysctl: {net.ipv4.ip_forward: "1"}
      modules: [br_netfilter]
  network:
    - name: other
      sysctl: {vm.swappiness: "10"}
"#;
    env.apply_yaml("v.yaml", v1).ok();
    assert!(env.exists("/etc/sysctl.d/90-cairn-boot-k8s-net.conf"));
    assert!(env.exists("/etc/modules-load.d/cairn-boot-k8s-net.conf"));
    // A file of the admin's own, named like ours but not written by Cairn, is never touched.
    env.write(
        "/etc/sysctl.d/90-cairn-boot-mine.conf",
        "vm.overcommit_memory = 1\n",
    );

    // The step is renamed and loses its modules.
    let v2 = r#"stages:
  boot:
    - name: kubernetes networking
      sysctl: {net.ipv4.ip_forward: "1"}
  network:
    - name: other
      sysctl: {vm.swappiness: "10"}
"#;
    // A dry run says what would go, and removes nothing.
    let dry = apply(
        &env.root,
        &[env.yaml("v.yaml", v2)],
        &ApplyOptions {
            dry_run: true,
            ..Default::default()
        },
    );
    assert!(dry
        .outcome
        .changes
        .iter()
        .any(|c| c.contains("removed /etc/sysctl.d/90-cairn-boot-k8s-net.conf")));
    assert!(env.exists("/etc/sysctl.d/90-cairn-boot-k8s-net.conf"));

    let run = env.apply_yaml("v.yaml", v2).ok();
    assert!(!env.exists("/etc/sysctl.d/90-cairn-boot-k8s-net.conf"));
    assert!(!env.exists("/etc/modules-load.d/cairn-boot-k8s-net.conf"));
    assert!(env.exists("/etc/sysctl.d/90-cairn-boot-kubernetes-networking.conf"));
    assert!(env.exists("/etc/sysctl.d/90-cairn-network-other.conf"));
    assert!(env.exists("/etc/sysctl.d/90-cairn-boot-mine.conf"));
    let sweep = run.step("remove stale drop-ins");
    assert_eq!(sweep.kind, EventKind::StepChanged);
    assert_eq!(sweep.stage, "boot");

    // Settled: nothing more to remove. Running only `network` keeps boot's drop-ins.
    let again = env.apply_yaml("v.yaml", v2).ok();
    assert_eq!(again.outcome.changed, 0, "{}", again.describe());
    let only_network = apply(
        &env.root,
        &[env.yaml(
            "n.yaml",
            "stages:\n  network:\n    - name: other\n      sysctl: {vm.swappiness: \"10\"}\n",
        )],
        &ApplyOptions {
            stages: vec!["network".into()],
            ..Default::default()
        },
    )
    .ok();
    assert_eq!(only_network.outcome.changed, 0);
    assert!(env.exists("/etc/sysctl.d/90-cairn-boot-kubernetes-networking.conf"));

    // A stage whose steps are all gone loses its drop-ins too.
    env.apply_yaml(
        "v.yaml",
        "stages:\n  boot:\n    - name: motd\n      files: [{path: /etc/motd, content: hi}]\n",
    )
    .ok();
    assert!(!env.exists("/etc/sysctl.d/90-cairn-boot-kubernetes-networking.conf"));
}

#[test]
fn a_stage_removed_from_the_user_data_takes_its_drop_ins_along() {
    let env = TestEnv::empty();
    env.apply_yaml(
        "v.yaml",
        "stages:\n  boot:\n    - name: net\n      sysctl: {net.ipv4.ip_forward: \"1\"}\n  network.after:\n    - name: swap\n      sysctl: {vm.swappiness: \"10\"}\n      modules: [dummy]\n",
    )
    .ok();
    assert!(env.exists("/etc/sysctl.d/90-cairn-network-after-swap.conf"));
    assert!(env.exists("/etc/modules-load.d/cairn-network-after-swap.conf"));

    // Running only `boot` leaves network.after alone: it was not asked for.
    let v2 = "stages:\n  boot:\n    - name: net\n      sysctl: {net.ipv4.ip_forward: \"1\"}\n";
    let only_boot = apply(
        &env.root,
        &[env.yaml("v.yaml", v2)],
        &ApplyOptions {
            stages: vec!["boot".into()],
            ..Default::default()
        },
    )
    .ok();
    assert_eq!(only_boot.outcome.changed, 0, "{}", only_boot.describe());
    assert!(env.exists("/etc/sysctl.d/90-cairn-network-after-swap.conf"));

    // The whole boot sequence: network.after is gone from the user-data, so are its files.
    let run = env.apply_yaml("v.yaml", v2).ok();
    assert!(!env.exists("/etc/sysctl.d/90-cairn-network-after-swap.conf"));
    assert!(!env.exists("/etc/modules-load.d/cairn-network-after-swap.conf"));
    assert!(env.exists("/etc/sysctl.d/90-cairn-boot-net.conf"));
    let sweep = run.step("remove stale drop-ins");
    assert_eq!(sweep.kind, EventKind::StepChanged);
    assert_eq!(sweep.stage, "network.after");
    assert!(run
        .events
        .iter()
        .any(|e| e.kind == EventKind::StageFinished && e.stage == "network.after"));
    let again = env.apply_yaml("v.yaml", v2).ok();
    assert_eq!(again.outcome.changed, 0, "{}", again.describe());
}

#[test]
fn the_profile_and_the_device_user_data_keep_their_own_drop_ins() {
    use cairn_agent::engine::Owner;
    let env = TestEnv::empty();
    // The same step name in the device's user-data and in the hub's profile.
    let device = env.yaml(
        "oem.yaml",
        "stages:\n  boot:\n    - name: kernel\n      sysctl: {vm.swappiness: \"10\"}\n",
    );
    let profile = env.yaml(
        "profile-os.yaml",
        "stages:\n  boot:\n    - name: kernel\n      sysctl: {net.ipv4.ip_forward: \"1\"}\n",
    );
    let as_profile = ApplyOptions {
        owner: Owner::Profile,
        ..Default::default()
    };
    apply(
        &env.root,
        std::slice::from_ref(&device),
        &ApplyOptions::default(),
    )
    .ok();
    let p = apply(&env.root, std::slice::from_ref(&profile), &as_profile).ok();
    assert!(
        !p.changes().contains("removed"),
        "the profile removed the device's settings:\n{}",
        p.describe()
    );
    let device_file = "/etc/sysctl.d/90-cairn-boot-kernel.conf";
    let profile_file = "/etc/sysctl.d/90-cairn-profile-boot-kernel.conf";
    assert!(env.read(device_file).contains("vm.swappiness = 10"));
    assert!(env.read(profile_file).contains("net.ipv4.ip_forward = 1"));

    // Alternating applies (boot units, then the daemon) settle: neither rewrites the other.
    for _ in 0..2 {
        let d = apply(
            &env.root,
            std::slice::from_ref(&device),
            &ApplyOptions::default(),
        )
        .ok();
        assert_eq!(d.outcome.changed, 0, "{}", d.describe());
        let p = apply(&env.root, std::slice::from_ref(&profile), &as_profile).ok();
        assert_eq!(p.outcome.changed, 0, "{}", p.describe());
    }

    // A new profile version without the step removes the profile's file only.
    let v2 = env.yaml(
        "profile-os.yaml",
        "stages:\n  boot:\n    - name: motd\n      files: [{path: /etc/motd, content: hi}]\n",
    );
    apply(&env.root, &[v2], &as_profile).ok();
    assert!(!env.exists(profile_file));
    assert!(env.exists(device_file));
}

#[test]
fn dns_writes_resolv_conf() {
    let env = TestEnv::empty();
    let yaml = r#"stages:
  network:
    - name: dns
      dns:
        nameservers: [10.0.0.53, 1.1.1.1]
        search: [site.example, example.com]
        options: [rotate, "timeout:2"]
"#;
    env.apply_yaml("dns.yaml", yaml).ok();
    assert_eq!(
        env.read("/etc/resolv.conf"),
        "# Written by Cairn\nnameserver 10.0.0.53\nnameserver 1.1.1.1\nsearch site.example example.com\noptions rotate timeout:2\n"
    );
    assert_eq!(env.meta("/etc/resolv.conf"), (0o644, 0, 0));
}

#[test]
fn dns_goes_to_systemd_resolved_when_it_owns_resolv_conf() {
    let env = TestEnv::empty();
    std::fs::create_dir_all(env.root.join("etc")).unwrap();
    std::os::unix::fs::symlink(
        "../run/systemd/resolve/stub-resolv.conf",
        env.root.join("etc/resolv.conf"),
    )
    .unwrap();
    let yaml = r#"stages:
  network:
    - name: dns
      dns:
        nameservers: [10.0.0.53, 1.1.1.1]
        search: [site.example]
"#;
    let run = env.apply_yaml("dns.yaml", yaml).ok();
    assert_eq!(
        env.read("/etc/systemd/resolved.conf.d/10-cairn-dns.conf"),
        "# Written by Cairn from user-data (dns:)\n[Resolve]\nDNS=10.0.0.53 1.1.1.1\nDomains=site.example\n"
    );
    // The link and resolved's own file are left alone.
    assert!(std::fs::symlink_metadata(env.root.join("etc/resolv.conf"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(!env.exists("/run/systemd/resolve/stub-resolv.conf"));
    assert!(
        run.describe().contains("systemd-resolved"),
        "{}",
        run.describe()
    );
    // Idempotent.
    let again = env.apply_yaml("dns.yaml", yaml).ok();
    assert!(
        again
            .events
            .iter()
            .all(|e| e.kind != EventKind::StepChanged),
        "{}",
        again.describe()
    );

    // resolv.conf options have no resolved equivalent: refused, naming them.
    let yaml = r#"stages:
  network:
    - name: dns
      dns:
        nameservers: [10.0.0.53]
        options: [rotate]
"#;
    let run = env.apply_yaml("dns2.yaml", yaml);
    assert!(!run.outcome.ok());
    assert!(
        run.describe().contains("`options` (rotate)"),
        "{}",
        run.describe()
    );
}

#[test]
fn environment_merges_and_keeps_other_lines() {
    let env = TestEnv::empty();
    env.write(
        "/etc/environment",
        "PATH=\"/usr/local/bin:/usr/bin:/bin\"\n# a comment\nKEEP=me\nexport MODE=old\n",
    );
    let yaml = r#"stages:
  boot:
    - name: env
      environment:
        MODE: new
        GREETING: hello world
"#;
    env.apply_yaml("env.yaml", yaml).ok();
    assert_eq!(
        env.read("/etc/environment"),
        "PATH=\"/usr/local/bin:/usr/bin:/bin\"\n# a comment\nKEEP=me\nMODE=new\nGREETING=\"hello world\"\n"
    );
    let again = env.apply_yaml("env.yaml", yaml).ok();
    assert_eq!(again.outcome.changed, 0);
    // environment_file sends the variables elsewhere.
    env.apply_yaml(
        "env2.yaml",
        "stages:\n  boot:\n    - environment_file: /etc/app.env\n      environment:\n        A: b\n",
    )
    .ok();
    assert_eq!(env.read("/etc/app.env"), "A=b\n");
}

#[test]
fn timesyncd_from_stages_and_cloud_init_ntp() {
    let env = TestEnv::empty();
    let yaml = r#"stages:
  network:
    - timesyncd:
        NTP: "0.pool.example.org 1.pool.example.org"
        FallbackNTP: time.example.org
"#;
    env.apply_yaml("t.yaml", yaml).ok();
    let path = "/etc/systemd/timesyncd.conf.d/10-cairn.conf";
    assert_eq!(
        env.read(path),
        "# Written by Cairn from user-data\n[Time]\nNTP=0.pool.example.org 1.pool.example.org\nFallbackNTP=time.example.org\n"
    );
    let env = TestEnv::empty();
    env.apply_yaml(
        "ntp.yaml",
        "#cloud-config\nntp:\n  servers: [ntp1.example.org]\n  pools: [pool.example.org]\n",
    )
    .ok();
    let text = env.read(path);
    assert!(text.contains("[Time]\n"), "{text}");
    let ntp = text
        .lines()
        .find(|l| l.starts_with("NTP="))
        .expect("NTP line");
    assert!(
        ntp.contains("ntp1.example.org") && ntp.contains("pool.example.org"),
        "{ntp}"
    );
}

#[test]
fn timezone_links_localtime_and_writes_etc_timezone() {
    let env = TestEnv::empty();
    env.write(
        "/etc/os-release",
        "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n",
    );
    env.write("/usr/share/zoneinfo/Europe/Berlin", "TZif-fake");
    let run = env
        .apply_yaml("tz.yaml", "#cloud-config\ntimezone: Europe/Berlin\n")
        .ok();
    assert_eq!(env.read("/etc/timezone"), "Europe/Berlin\n");
    assert_eq!(
        std::fs::read_link(env.p("/etc/localtime")).unwrap(),
        Path::new("/usr/share/zoneinfo/Europe/Berlin")
    );
    assert_eq!(run.step("timezone").kind, EventKind::StepChanged);
    let again = env
        .apply_yaml("tz.yaml", "#cloud-config\ntimezone: Europe/Berlin\n")
        .ok();
    assert_eq!(again.outcome.changed, 0);
    // A zone the target does not have fails the step, naming it.
    let run = env.apply_yaml(
        "tz2.yaml",
        "stages:\n  boot:\n    - timezone: Mars/Olympus\n",
    );
    let f = run.outcome.failed.expect("missing zone fails");
    assert!(f.message.contains("Mars/Olympus"), "{}", f.message);
}

// ---------------------------------------------------------------------------------------
// systemctl

#[test]
fn systemctl_overrides_and_enable_by_symlink() {
    require("systemctl");
    let env = TestEnv::empty();
    env.write(
        "/etc/systemd/system/cairn-it.service",
        "[Unit]\nDescription=test\n[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n",
    );
    let yaml = r#"stages:
  boot:
    - name: units
      systemctl:
        enable: [cairn-it]
        overrides:
          - service: cairn-it
            name: limits
            content: |
              [Service]
              LimitNOFILE=4096
"#;
    let run = env.apply_yaml("u.yaml", yaml).ok();
    assert_eq!(
        env.read("/etc/systemd/system/cairn-it.service.d/limits.conf"),
        "[Service]\nLimitNOFILE=4096\n"
    );
    let wants = env.p("/etc/systemd/system/multi-user.target.wants/cairn-it.service");
    let link = std::fs::read_link(&wants).expect("the wants symlink exists");
    assert_eq!(link, Path::new("/etc/systemd/system/cairn-it.service"));
    assert!(
        run.changes().contains("enabled cairn-it.service"),
        "{}",
        run.changes()
    );
    let again = env.apply_yaml("u.yaml", yaml).ok();
    assert_eq!(again.step("units").kind, EventKind::StepUnchanged);
}

#[test]
fn systemctl_disable_and_mask_including_units_without_a_file() {
    require("systemctl");
    let env = TestEnv::empty();
    let unit = "[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n";
    env.write("/usr/lib/systemd/system/was-on.service", unit);
    env.write("/usr/lib/systemd/system/to-mask.service", unit);
    std::fs::create_dir_all(env.p("/etc/systemd/system/multi-user.target.wants")).unwrap();
    std::os::unix::fs::symlink(
        "/usr/lib/systemd/system/was-on.service",
        env.p("/etc/systemd/system/multi-user.target.wants/was-on.service"),
    )
    .unwrap();
    let yaml = r#"stages:
  boot:
    - name: units
      systemctl:
        disable: [was-on, never-installed]
        mask: [to-mask, not-installed-yet.service]
"#;
    let run = env.apply_yaml("u.yaml", yaml).ok();
    assert!(!env.exists("/etc/systemd/system/multi-user.target.wants/was-on.service"));
    for masked in ["to-mask.service", "not-installed-yet.service"] {
        let link = std::fs::read_link(env.p(&format!("/etc/systemd/system/{masked}")))
            .unwrap_or_else(|e| panic!("{masked} masked: {e}"));
        assert_eq!(link, Path::new("/dev/null"));
    }
    let changes = run.changes();
    assert!(changes.contains("disabled was-on.service"), "{changes}");
    assert!(changes.contains("masked to-mask.service"), "{changes}");
    assert!(
        !changes.contains("never-installed"),
        "nothing to disable: {changes}"
    );
    let again = env.apply_yaml("u.yaml", yaml).ok();
    assert_eq!(again.step("units").kind, EventKind::StepUnchanged);
    // Enabling a unit that does not exist is an error that names it.
    let run = env.apply_yaml(
        "e.yaml",
        "stages:\n  boot:\n    - systemctl:\n        enable: [ghost]\n",
    );
    let f = run.outcome.failed.expect("enabling a missing unit fails");
    assert!(f.message.contains("ghost.service"), "{}", f.message);
}

// ---------------------------------------------------------------------------------------
// packages

const FAKE_APT: &str = r#"#!/bin/sh
# Fake apt-get: logs its environment and argv, one invocation per line.
echo "DEBIAN_FRONTEND=$DEBIAN_FRONTEND ARGV: $*" >> /apt-get.log
for a in "$@"; do
  if [ "$a" = update ]; then
    mkdir -p /var/lib/apt/lists
    touch /var/lib/apt/lists/fake_dists_stable_Packages
  fi
done
exit 0
"#;

fn apt_lines(env: &TestEnv) -> Vec<String> {
    if !env.exists("/apt-get.log") {
        return Vec::new();
    }
    env.read("/apt-get.log")
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn packages_install_only_what_is_missing() {
    let env = TestEnv::new();
    env.script("/usr/bin/apt-get", FAKE_APT);
    env.write(
        "/var/lib/dpkg/status",
        "Package: hello\nStatus: install ok installed\nVersion: 2.10-3\n\n",
    );
    let yaml = "#cloud-config\npackages:\n  - hello\n  - curl\n";
    let run = env.apply_yaml("p.yaml", yaml).ok();
    let lines = apt_lines(&env);
    let install: Vec<&String> = lines.iter().filter(|l| l.contains(" install ")).collect();
    assert_eq!(install.len(), 1, "{lines:?}");
    let line = install[0];
    assert!(
        line.starts_with("DEBIAN_FRONTEND=noninteractive "),
        "{line}"
    );
    assert!(line.contains("DPkg::Lock::Timeout="), "{line}");
    let after_dashes = line.split(" -- ").nth(1).expect("packages after --");
    assert_eq!(after_dashes, "curl", "only the missing package: {line}");
    assert!(
        lines.iter().any(|l| l.ends_with(" update")),
        "lists refreshed first: {lines:?}"
    );
    assert!(
        run.changes().contains("installed curl"),
        "{}",
        run.changes()
    );
    // Now curl is installed and the lists are fresh: nothing runs.
    let mut status = env.read("/var/lib/dpkg/status");
    status.push_str("Package: curl\nStatus: install ok installed\nVersion: 7.88\n\n");
    env.write("/var/lib/dpkg/status", &status);
    let before = lines.len();
    let again = env.apply_yaml("p.yaml", yaml).ok();
    assert_eq!(apt_lines(&env).len(), before, "{:?}", apt_lines(&env));
    assert_eq!(again.outcome.changed, 0);
}

#[test]
fn packages_in_stages_remove_only_installed() {
    let env = TestEnv::new();
    env.script("/usr/bin/apt-get", FAKE_APT);
    env.write(
        "/var/lib/dpkg/status",
        "Package: nano\nStatus: install ok installed\nVersion: 7.2\n\n",
    );
    std::fs::create_dir_all(env.p("/var/lib/apt/lists")).unwrap();
    env.write("/var/lib/apt/lists/x_Release", "fresh");
    let yaml =
        "stages:\n  boot:\n    - packages:\n        install: [nano]\n        remove: [nano, vim]\n";
    env.apply_yaml("p.yaml", yaml).ok();
    let lines = apt_lines(&env);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains(" remove -- nano"), "{}", lines[0]);
    assert!(!lines[0].contains("vim"));
}

#[test]
fn packages_wait_for_a_held_package_manager_lock() {
    let env = TestEnv::new();
    // apt-get that reports a held dpkg lock twice, then succeeds.
    env.script(
        "/usr/bin/apt-get",
        "#!/bin/sh\nn=$(cat /apt-tries || echo 0)\nn=$((n+1))\necho $n > /apt-tries\n\
         if [ $n -le 2 ]; then echo 'E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 4242 (unattended-upgr)' >&2; exit 100; fi\n\
         echo \"$*\" >> /apt.log\n",
    );
    env.write("/var/lib/dpkg/status", "");
    std::fs::create_dir_all(env.p("/var/lib/apt/lists")).unwrap();
    env.write("/var/lib/apt/lists/x_Release", "fresh");
    let run = env
        .apply_yaml(
            "p.yaml",
            "stages:\n  boot:\n    - packages:\n        install: [curl]\n",
        )
        .ok();
    assert_eq!(
        env.read("/apt-tries").trim(),
        "3",
        "retried until the lock was free"
    );
    assert!(env.read("/apt.log").contains("install -- curl"));
    assert!(
        run.changes().contains("installed curl"),
        "{}",
        run.changes()
    );
}

// ---------------------------------------------------------------------------------------
// certificates

fn make_ca(dir: &Path) -> Option<String> {
    require("openssl");
    let key = dir.join("ca.key");
    let crt = dir.join("ca.crt");
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=test-ca"])
        .args(["-addext", "basicConstraints=critical,CA:TRUE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .output()
        .expect("running openssl");
    assert!(
        out.status.success(),
        "openssl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(std::fs::read_to_string(crt).unwrap())
}

#[test]
fn certificates_land_in_the_trust_store_and_the_tool_runs_once() {
    let env = TestEnv::new();
    let Some(pem) = make_ca(&env.cfg) else {
        panic!("openssl could not make a test CA");
    };
    env.script(
        "/usr/sbin/update-ca-certificates",
        "#!/bin/sh\necho \"ran $*\" >> /update-ca.log\n",
    );
    let yaml = format!(
        "#cloud-config\nca_certs:\n  trusted:\n    - |\n{}\n",
        indent(pem.trim_end(), 6)
    );
    let run = env.apply_yaml("ca.yaml", &yaml).ok();
    let installed = env.read("/usr/local/share/ca-certificates/cairn-ca-1.crt");
    assert_eq!(installed.trim(), pem.trim());
    assert_eq!(
        env.meta("/usr/local/share/ca-certificates/cairn-ca-1.crt"),
        (0o644, 0, 0)
    );
    assert_eq!(env.read("/update-ca.log"), "ran \n", "the tool ran once");
    assert!(run.changes().contains("rebuilt"), "{}", run.changes());
    let again = env.apply_yaml("ca.yaml", &yaml).ok();
    assert_eq!(env.read("/update-ca.log"), "ran \n", "not run again");
    assert_eq!(again.outcome.changed, 0);
}

#[test]
fn downloads_with_timeout_zero_have_no_time_limit() {
    let env = TestEnv::empty();
    let body = b"slow bytes".to_vec();
    let (base, hits) = common::serve_slow(
        "/slow",
        body.clone(),
        std::time::Duration::from_millis(1300),
    );
    // yip: `timeout: 0` means no limit (not one second).
    let yaml = format!(
        "stages:\n  boot:\n    - name: slow\n      downloads:\n        - url: {base}/slow\n          path: /opt/slow\n          timeout: 0\n          sha256: {}\n",
        sha256_hex(&body)
    );
    env.apply_yaml("slow.yaml", &yaml).ok();
    assert_eq!(std::fs::read(env.p("/opt/slow")).unwrap(), body);
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[test]
fn downloads_that_fail_report_why_and_leave_nothing() {
    let env = TestEnv::empty();
    let (base, hits) = serve("/exists", b"x".to_vec());
    let yaml = format!(
        "stages:\n  boot:\n    - name: missing\n      downloads:\n        - url: {base}/missing\n          path: /opt/missing\n          sha256: {}\n",
        "a".repeat(64)
    );
    let run = env.apply_yaml("dl.yaml", &yaml);
    let f = run.outcome.failed.expect("the step fails");
    assert!(f.message.contains("404"), "{}", f.message);
    // A 404 will not fix itself: not retried (network errors and 5xx are, see artifacts.rs).
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(!env.exists("/opt/missing"));
    assert!(temp_leftovers(&env.root).is_empty());
}

#[test]
fn certificates_no_longer_listed_are_removed_and_defaults_disabled() {
    let env = TestEnv::new();
    let Some(pem) = make_ca(&env.cfg) else {
        panic!("openssl could not make a test CA");
    };
    env.script(
        "/usr/sbin/update-ca-certificates",
        "#!/bin/sh\necho \"ran $*\" >> /update-ca.log\n",
    );
    env.write(
        "/etc/ca-certificates.conf",
        "# comment\nmozilla/Some_CA.crt\n!mozilla/Already_Off.crt\n",
    );
    let two = format!(
        "#cloud-config\nca_certs:\n  trusted:\n    - |\n{0}\n    - |\n{0}\n",
        indent(pem.trim_end(), 6)
    );
    env.apply_yaml("ca.yaml", &two).ok();
    assert!(env.exists("/usr/local/share/ca-certificates/cairn-ca-2.crt"));
    let one = format!(
        "#cloud-config\nca_certs:\n  remove_defaults: true\n  trusted:\n    - |\n{}\n",
        indent(pem.trim_end(), 6)
    );
    let run = env.apply_yaml("ca.yaml", &one).ok();
    assert!(env.exists("/usr/local/share/ca-certificates/cairn-ca-1.crt"));
    assert!(
        !env.exists("/usr/local/share/ca-certificates/cairn-ca-2.crt"),
        "a certificate no longer listed is removed"
    );
    assert_eq!(
        env.read("/etc/ca-certificates.conf"),
        "# comment\n!mozilla/Some_CA.crt\n!mozilla/Already_Off.crt\n"
    );
    assert_eq!(env.read("/update-ca.log"), "ran \nran \n");
    assert!(run
        .changes()
        .contains("removed /usr/local/share/ca-certificates/cairn-ca-2.crt"));
}

#[test]
fn certificates_without_the_distro_tool_fail_clearly() {
    let env = TestEnv::new();
    let Some(pem) = make_ca(&env.cfg) else {
        panic!("openssl could not make a test CA");
    };
    let yaml = format!(
        "stages:\n  boot:\n    - name: ca\n      certificates:\n        - |\n{}\n",
        indent(pem.trim_end(), 10)
    );
    let run = env.apply_yaml("ca.yaml", &yaml);
    let f = run
        .outcome
        .failed
        .expect("fails without update-ca-certificates");
    assert!(
        f.message.contains("update-ca-certificates"),
        "{}",
        f.message
    );
}
