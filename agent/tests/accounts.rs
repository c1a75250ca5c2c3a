#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Account step kinds against a mini root with shadow-utils (`useradd --root`): users,
//! groups, sudo rules and SSH authorized keys, with cloud-init's and yip's semantics.

mod common;

use std::process::Command;

use cairn_proto::EventKind;
use common::{host_has, TestEnv};

const HASH: &str = "$6$cairnsalt$B2aVdKxIxeN1jXbqAqOVNV3pZtcX5l4v0cKPpqd6s2tUvjMR3lcRlH3fYq0F8Ws6ZMcqO4JXhXrDdg4bfFnw0/";
const KEY1: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq3V0bmp1Q1ZlQk9jYm1wMVExWmxRazlqWW0xd01WRXgg one@test";
const KEY2: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb two@test";

fn need_shadow_utils() -> bool {
    let ok = host_has("useradd") && host_has("groupadd") && host_has("usermod");
    if !ok {
        eprintln!("skipping: shadow-utils (useradd, groupadd, usermod) are not on the host");
    }
    ok
}

#[test]
fn cloud_init_users_full_entry() {
    if !need_shadow_utils() {
        return;
    }
    let env = TestEnv::new();
    env.write("/etc/skel/.cairn-skel-marker", "from skel\n");
    let yaml = format!(
        r#"#cloud-config
groups:
  - existing-grp
users:
  - name: alice
    uid: 2001
    gecos: Alice Example
    shell: /bin/sh
    homedir: /home/alice
    primary_group: alice-primary
    groups: [existing-grp, brand-new-grp]
    passwd: "{HASH}"
  - name: unlocked
    lock_passwd: false
    hashed_passwd: "{HASH}"
    shell: /bin/sh
  - name: svc
    system: true
    shell: /usr/sbin/nologin
"#
    );
    let run = env.apply_yaml("users.yaml", &yaml).ok();
    let alice = env.passwd("alice").expect("alice exists");
    assert_eq!(alice[2], "2001");
    assert_eq!(alice[4], "Alice Example");
    assert_eq!(alice[5], "/home/alice");
    assert_eq!(alice[6], "/bin/sh");
    // Primary group created and used.
    let pg = env.group("alice-primary").expect("primary group created");
    assert_eq!(alice[3], pg[2]);
    // Supplementary groups, including one that did not exist before.
    for g in ["existing-grp", "brand-new-grp"] {
        let row = env.group(g).unwrap_or_else(|| panic!("group {g} exists"));
        assert!(
            row[3].split(',').any(|m| m == "alice"),
            "alice in {g}: {row:?}"
        );
    }
    // Home populated from /etc/skel and owned by alice.
    let (uid, gid) = env.ids("alice");
    assert_eq!(env.read("/home/alice/.cairn-skel-marker"), "from skel\n");
    assert_eq!(env.meta("/home/alice/.cairn-skel-marker").1, uid);
    assert_eq!(env.meta("/home/alice").1, uid);
    assert_eq!(env.meta("/home/alice").2, gid);
    // cloud-init: passwd is a hash, lock_passwd defaults to true.
    let pw = env.shadow_pw("alice").unwrap();
    assert!(pw.starts_with('!'), "locked by default: {pw}");
    assert_eq!(pw.trim_start_matches('!'), HASH);
    assert_eq!(env.shadow_pw("unlocked").unwrap(), HASH);
    // System user: low uid, no home directory.
    let svc = env.passwd("svc").expect("svc exists");
    let svc_uid: u32 = svc[2].parse().unwrap();
    assert!(svc_uid < 1000, "system uid: {svc_uid}");
    assert!(
        !env.exists(&svc[5]),
        "no home for a system user ({})",
        svc[5]
    );
    assert_eq!(svc[6], "/usr/sbin/nologin");
    assert_eq!(run.step("users_groups").kind, EventKind::StepChanged);
    // Converged: a second apply changes nothing.
    let again = env.apply_yaml("users.yaml", &yaml).ok();
    assert_eq!(again.outcome.changed, 0, "{}", again.describe());
}

#[test]
fn yip_users_hash_plain_passwords_and_stay_unlocked() {
    if !need_shadow_utils() {
        return;
    }
    let env = TestEnv::new();
    let yaml = r#"stages:
  boot:
    - name: yip users
      users:
        bob:
          passwd: "s3cret pass"
          shell: /bin/sh
          groups: [yipgrp]
        hashed:
          passwd: "$6$abc$xyz"
"#;
    let run = env.apply_yaml("yip.yaml", yaml).ok();
    let pw = env.shadow_pw("bob").expect("bob in shadow");
    assert!(
        pw.starts_with("$6$"),
        "plain text becomes a SHA-512 hash: {pw}"
    );
    assert!(!pw.contains("s3cret"));
    // Verify the hash with an independent implementation when the host has one.
    if host_has("openssl") {
        let parts: Vec<&str> = pw.split('$').collect();
        let (salt, rounds) = if parts[2].starts_with("rounds=") {
            (parts[3], Some(parts[2]))
        } else {
            (parts[2], None)
        };
        if rounds.is_none() {
            let out = Command::new("openssl")
                .args(["passwd", "-6", "-salt", salt, "s3cret pass"])
                .output()
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), pw);
        }
    }
    assert_eq!(
        env.shadow_pw("hashed").unwrap(),
        "$6$abc$xyz",
        "hashes kept as is"
    );
    assert!(env.group("yipgrp").unwrap()[3]
        .split(',')
        .any(|m| m == "bob"));
    assert_eq!(run.step("yip users").kind, EventKind::StepChanged);
    // The existing hash matches the plain password: nothing to change the second time.
    let again = env.apply_yaml("yip.yaml", yaml).ok();
    assert_eq!(again.outcome.changed, 0, "{}", again.describe());
    assert_eq!(env.shadow_pw("bob").unwrap(), pw);
}

#[test]
fn existing_users_are_converged() {
    if !need_shadow_utils() {
        return;
    }
    let env = TestEnv::new();
    let first = format!("#cloud-config\nusers:\n  - name: dave\n    shell: /bin/sh\n    gecos: Old\n    lock_passwd: false\n    passwd: \"{HASH}\"\n");
    env.apply_yaml("u.yaml", &first).ok();
    assert_eq!(env.shadow_pw("dave").unwrap(), HASH, "not locked at first");
    let second = "#cloud-config\nusers:\n  - name: dave\n    shell: /bin/false\n    gecos: New Name\n    groups: [later-grp]\n";
    let run = env.apply_yaml("u.yaml", second).ok();
    let dave = env.passwd("dave").unwrap();
    assert_eq!(dave[4], "New Name");
    assert_eq!(dave[6], "/bin/false");
    assert!(env.group("later-grp").unwrap()[3].contains("dave"));
    assert_eq!(
        env.shadow_pw("dave").unwrap(),
        format!("!{HASH}"),
        "now locked"
    );
    assert!(
        run.changes().contains("updated user dave"),
        "{}",
        run.changes()
    );
}

#[test]
fn groups_with_gid_and_members() {
    if !need_shadow_utils() {
        return;
    }
    let env = TestEnv::new();
    let yaml = r#"stages:
  boot.before:
    - users:
        m1: {shell: /bin/sh}
        m2: {shell: /bin/sh}
  boot:
    - name: groups
      groups:
        builders:
          gid: 3100
          members: [m1, m2]
        plain-grp: {}
"#;
    let run = env.apply_yaml("g.yaml", yaml).ok();
    let row = env.group("builders").expect("builders exists");
    assert_eq!(row[2], "3100");
    let members: Vec<&str> = row[3].split(',').collect();
    assert!(
        members.contains(&"m1") && members.contains(&"m2"),
        "{row:?}"
    );
    assert!(env.group("plain-grp").is_some());
    assert_eq!(run.step("groups").kind, EventKind::StepChanged);
    // cloud-init's list form: `- name: [members]`.
    let ci = "#cloud-config\ngroups:\n  - ci-grp: [m1]\n  - ci-empty\n";
    env.apply_yaml("ci.yaml", ci).ok();
    assert_eq!(env.group("ci-grp").unwrap()[3], "m1");
    assert!(env.group("ci-empty").is_some());
    let again = env.apply_yaml("g.yaml", yaml).ok();
    assert_eq!(again.outcome.changed, 0, "{}", again.describe());
}

#[test]
fn sudo_rules_go_to_a_0440_drop_in() {
    if !need_shadow_utils() {
        return;
    }
    let env = TestEnv::new();
    let yaml = r#"#cloud-config
users:
  - name: ops
    shell: /bin/sh
    sudo: "ALL=(ALL) NOPASSWD:ALL"
  - name: first.last
    shell: /bin/sh
    sudo: ["ALL=(ALL) ALL"]
  - name: ops2
    shell: /bin/sh
    sudo:
      - "ALL=(ALL) ALL"
      - "ALL=(root) NOPASSWD: /usr/bin/systemctl"
"#;
    env.apply_yaml("sudo.yaml", yaml).ok();
    let path = "/etc/sudoers.d/90-cairn-ops";
    assert_eq!(env.meta(path), (0o440, 0, 0));
    let text = env.read(path);
    assert!(
        text.lines().any(|l| l == "ops ALL=(ALL) NOPASSWD:ALL"),
        "{text}"
    );
    let text2 = env.read("/etc/sudoers.d/90-cairn-ops2");
    assert!(text2.lines().any(|l| l == "ops2 ALL=(ALL) ALL"), "{text2}");
    assert!(
        text2
            .lines()
            .any(|l| l == "ops2 ALL=(root) NOPASSWD: /usr/bin/systemctl"),
        "{text2}"
    );
    assert_eq!(env.mode("/etc/sudoers.d/90-cairn-ops2"), 0o440);
    // sudo skips drop-ins whose name contains a dot.
    let dotted = env.read("/etc/sudoers.d/90-cairn-first_last");
    assert!(
        dotted.lines().any(|l| l == "first.last ALL=(ALL) ALL"),
        "{dotted}"
    );
    let again = env.apply_yaml("sudo.yaml", yaml).ok();
    assert_eq!(again.outcome.changed, 0, "{}", again.describe());
}

#[test]
fn ssh_authorized_keys_modes_and_owners() {
    if !need_shadow_utils() {
        return;
    }
    let env = TestEnv::new();
    let yaml = format!(
        r#"#cloud-config
users:
  - name: carol
    shell: /bin/sh
    ssh_authorized_keys:
      - {KEY1}
ssh_authorized_keys:
  - {KEY2}
"#
    );
    env.apply_yaml("keys.yaml", &yaml).ok();
    let (uid, gid) = env.ids("carol");
    assert_eq!(env.meta("/home/carol/.ssh"), (0o700, uid, gid));
    assert_eq!(
        env.meta("/home/carol/.ssh/authorized_keys"),
        (0o600, uid, gid)
    );
    assert_eq!(
        env.read("/home/carol/.ssh/authorized_keys"),
        format!("{KEY1}\n")
    );
    // Top-level keys go to root.
    assert_eq!(env.read("/root/.ssh/authorized_keys"), format!("{KEY2}\n"));
    assert_eq!(env.meta("/root/.ssh"), (0o700, 0, 0));
    assert_eq!(env.meta("/root/.ssh/authorized_keys"), (0o600, 0, 0));
    // yip `authorized_keys:` adds a key and keeps the existing one.
    let yip = format!("stages:\n  network:\n    - name: more keys\n      authorized_keys:\n        carol:\n          - {KEY2}\n");
    let run = env.apply_yaml("more.yaml", &yip).ok();
    assert_eq!(
        env.read("/home/carol/.ssh/authorized_keys"),
        format!("{KEY1}\n{KEY2}\n")
    );
    assert_eq!(
        env.meta("/home/carol/.ssh/authorized_keys"),
        (0o600, uid, gid)
    );
    assert_eq!(run.step("more keys").kind, EventKind::StepChanged);
    let again = env.apply_yaml("more.yaml", &yip).ok();
    assert_eq!(again.step("more keys").kind, EventKind::StepUnchanged);
}

#[test]
fn passwords_never_appear_in_events_or_errors() {
    if !need_shadow_utils() {
        return;
    }
    let env = TestEnv::new();
    let yaml = "stages:\n  boot:\n    - name: pw user\n      users:\n        pwuser:\n          passwd: \"Plain-Secret-42\"\n          shell: /bin/sh\n";
    let run = env.apply_yaml("pw.yaml", yaml).ok();
    let hash = env.shadow_pw("pwuser").unwrap();
    let all = serde_json::to_string(&run.events).unwrap();
    assert!(!all.contains("Plain-Secret-42"), "{all}");
    assert!(!all.contains(&hash), "{all}");
    // A failing useradd (uid 0 is taken) reports the command with the password redacted.
    let bad = "stages:\n  boot:\n    - name: clash\n      users:\n        clash:\n          uid: 0\n          passwd: \"Other-Secret-7\"\n";
    let run = env.apply_yaml("bad.yaml", bad);
    let f = run
        .outcome
        .failed
        .clone()
        .expect("useradd refuses a taken uid");
    assert!(f.message.contains("<redacted>"), "{}", f.message);
    let all = format!(
        "{}{}",
        serde_json::to_string(&run.events).unwrap(),
        f.message
    );
    assert!(!all.contains("Other-Secret-7"), "{all}");
    assert!(!all.contains("$6$"), "no hash in events: {all}");
}

#[test]
fn locked_password_hashes_are_stable() {
    if !need_shadow_utils() {
        return;
    }
    let env = TestEnv::new();
    let yaml = format!(
        r#"#cloud-config
users:
  - name: cilocked
    shell: /bin/sh
    passwd: "!{HASH}"
stages:
  boot:
    - name: yip locked
      users:
        nologin:
          passwd: "!"
          shell: /bin/sh
        lockedhash:
          passwd: "!$6$abc$def"
          shell: /bin/sh
"#
    );
    env.apply_yaml("locked.yaml", &yaml).ok();
    assert_eq!(env.shadow_pw("nologin").unwrap(), "!");
    assert_eq!(env.shadow_pw("lockedhash").unwrap(), "!$6$abc$def");
    let ci = env.shadow_pw("cilocked").unwrap();
    assert!(ci.starts_with('!') && ci.ends_with(HASH), "{ci}");
    // A hash that already carries the lock is not rewritten on every apply.
    let before = (
        env.read("/etc/shadow"),
        std::fs::metadata(env.p("/etc/shadow"))
            .unwrap()
            .modified()
            .unwrap(),
    );
    let again = env.apply_yaml("locked.yaml", &yaml).ok();
    assert_eq!(again.outcome.changed, 0, "{}", again.describe());
    let after = (
        env.read("/etc/shadow"),
        std::fs::metadata(env.p("/etc/shadow"))
            .unwrap()
            .modified()
            .unwrap(),
    );
    assert_eq!(before, after);
}
