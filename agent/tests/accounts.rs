#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Account step kinds against a mini root with shadow-utils (`useradd --root`): users,
//! groups, sudo rules and SSH authorized keys, with cloud-init's and yip's semantics.

mod common;

use std::process::Command;

use cairn_proto::EventKind;
use common::{require, TestEnv};

const HASH: &str = "$6$cairnsalt$B2aVdKxIxeN1jXbqAqOVNV3pZtcX5l4v0cKPpqd6s2tUvjMR3lcRlH3fYq0F8Ws6ZMcqO4JXhXrDdg4bfFnw0/";
const KEY1: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq3V0bmp1Q1ZlQk9jYm1wMVExWmxRazlqWW0xd01WRXgg one@test";
const KEY2: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb two@test";

/// shadow-utils on the host (the account tests run them with `--root`).
fn need_shadow_utils() {
    for tool in ["useradd", "groupadd", "usermod"] {
        require(tool);
    }
}

#[test]
fn cloud_init_users_full_entry() {
    need_shadow_utils();
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
    need_shadow_utils();
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
    // Verify the hash with an independent implementation (openssl).
    require("openssl");
    {
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
    need_shadow_utils();
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
    need_shadow_utils();
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
    need_shadow_utils();
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
    need_shadow_utils();
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
    need_shadow_utils();
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
    need_shadow_utils();
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

// ---- Native account writer vs shadow-utils ----------------------------------------------

/// Apply `yaml` with the CLI, `CAIRN_ACCOUNTS=backend` (unset: the default), logging which
/// backend handled each account action. Returns (exit code, stdout, stderr).
fn apply_cli(
    env: &TestEnv,
    name: &str,
    yaml: &str,
    backend: Option<&str>,
) -> (i32, String, String) {
    let f = env.yaml(name, yaml);
    let mut cmd = Command::new(common::bin());
    cmd.args(["apply", "--root"])
        .arg(&env.root)
        .arg(&f)
        .env("CAIRN_LOG", "cairn_agent::steps::users=debug")
        .env_remove("CAIRN_ACCOUNTS");
    if let Some(b) = backend {
        cmd.env("CAIRN_ACCOUNTS", b);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        common::stdout(&out),
        common::stderr(&out),
    )
}

/// The backends that handled the account actions of a run, with the fallback reasons.
fn backends(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|l| l.find("backend=\"").map(|i| l[i..].to_string()))
        .collect()
}

/// Account databases and homes, for comparing roots: (path, mode, uid, gid, content).
fn account_state(env: &TestEnv) -> Vec<(String, u32, u32, u32, String)> {
    let mut out = Vec::new();
    for f in [
        "/etc/passwd",
        "/etc/shadow",
        "/etc/group",
        "/etc/gshadow",
        "/etc/subuid",
        "/etc/subgid",
    ] {
        if env.exists(f) {
            let (mode, uid, gid) = env.meta(f);
            out.push((f.to_string(), mode, uid, gid, env.read(f)));
        }
    }
    for dir in ["/home", "/srv"] {
        if !env.exists(dir) {
            continue;
        }
        for (p, e) in common::snapshot(&env.p(dir)) {
            out.push((
                format!("{dir}/{}", p.display()),
                e.mode,
                e.uid,
                e.gid,
                e.content.clone(),
            ));
        }
    }
    out
}

const PARITY_CREATE: &str = r#"#cloud-config
groups:
  - ops-team: [root]
  - empty-team
users:
  - name: pa
    gecos: Parity A
    primary_group: pa-primary
    groups: [ops-team, fresh-grp]
    lock_passwd: false
    passwd: "$6$abc$hash"
  - name: pb
    no_user_group: true
    shell: /bin/sh
  - name: pc
    system: true
    groups: [empty-team]
  - name: pd
    uid: 4321
    no_create_home: true
    inactive: '10'
    expiredate: '2031-12-31'
  - name: pe
    homedir: /srv/pe-home
    passwd: "$6$abc$hash"
"#;

const PARITY_CONVERGE: &str = r#"#cloud-config
users:
  - name: pa
    gecos: Parity A2
    shell: /bin/sh
    groups: [ops-team, fresh-grp, later-grp]
    lock_passwd: false
    passwd: "$6$def$other"
  - name: pb
    uid: 4400
    primary_group: ops-team
  - name: pe
    homedir: /srv/pe-moved
    lock_passwd: true
"#;

#[test]
fn native_and_shadow_utils_write_the_same_accounts() {
    need_shadow_utils();
    let native = TestEnv::new();
    let tools = TestEnv::new();
    for (name, yaml) in [
        ("create.yaml", PARITY_CREATE),
        ("converge.yaml", PARITY_CONVERGE),
    ] {
        let (code, out, err) = apply_cli(&native, name, yaml, None);
        assert_eq!(code, 0, "{out}\n{err}");
        let used = backends(&err);
        assert!(
            !used.is_empty() && used.iter().all(|b| b.starts_with("backend=\"native\"")),
            "the native writer is the default: {used:?}"
        );
        let (code, out, err) = apply_cli(&tools, name, yaml, Some("shadow-utils"));
        assert_eq!(code, 0, "{out}\n{err}");
        assert!(backends(&err)
            .iter()
            .all(|b| b.contains("reason=CAIRN_ACCOUNTS=shadow-utils")));
        let (a, b) = (account_state(&native), account_state(&tools));
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x, y, "after {name}: left native, right shadow-utils");
        }
        assert_eq!(a.len(), b.len(), "after {name}: {a:?}\n{b:?}");
    }
    assert_eq!(native.passwd("pb").unwrap()[2], "4400");
    assert_eq!(native.shadow_pw("pa").unwrap(), "$6$def$other");
    assert_eq!(native.shadow_pw("pe").unwrap(), "!$6$abc$hash");
    // Converged: nothing left to do for either backend.
    let (_, out, _) = apply_cli(&native, "converge.yaml", PARITY_CONVERGE, None);
    assert!(out.contains("0 step(s) changed"), "{out}");
}

#[test]
fn dry_run_with_the_native_writer_touches_nothing() {
    need_shadow_utils();
    let env = TestEnv::new();
    let before = common::snapshot(&env.root);
    let f = env.yaml("dry.yaml", PARITY_CREATE);
    let out = Command::new(common::bin())
        .args(["apply", "--dry-run", "--root"])
        .arg(&env.root)
        .arg(&f)
        .env_remove("CAIRN_ACCOUNTS")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", common::stderr(&out));
    let text = common::stdout(&out);
    assert!(text.contains("created user pa"), "{text}");
    assert!(
        text.contains("created group fresh-grp for user pa"),
        "{text}"
    );
    common::assert_same(&before, &common::snapshot(&env.root));
    assert!(!env.exists("/etc/.pwd.lock"), "no lock file in a dry run");
}

#[test]
fn the_native_writer_hands_what_it_cannot_match_to_shadow_utils() {
    need_shadow_utils();
    type Setup = fn(&TestEnv);
    let cases: [(&str, Setup); 6] = [
        ("SELinux target", |e| {
            e.write("/etc/selinux/config", "SELINUX=enforcing\n")
        }),
        ("tcb shadow", |e| {
            std::fs::create_dir_all(e.p("/etc/tcb")).unwrap()
        }),
        ("NSS passwd source `ldap`", |e| {
            e.write("/etc/nsswitch.conf", "passwd: files ldap\ngroup: files\n")
        }),
        ("a line shadow-utils reads differently", |e| {
            let text = e.read("/etc/passwd");
            e.write("/etc/passwd", &format!("{text}\n"));
        }),
        ("subdirectories and the target has no /proc", |e| {
            e.write("/etc/skel/.config/app/settings", "x=1\n")
        }),
        ("has hooks to run", |e| {
            std::fs::create_dir_all(e.p("/etc/shadow-maint/useradd-pre.d")).unwrap()
        }),
    ];
    for (reason, setup) in cases {
        let env = TestEnv::new();
        setup(&env);
        let yaml = "#cloud-config\nusers:\n  - name: fallback\n    groups: [fb-grp]\n";
        let (code, out, err) = apply_cli(&env, "fb.yaml", yaml, None);
        assert_eq!(code, 0, "{reason}: {out}\n{err}");
        let used = backends(&err);
        assert!(
            !used.is_empty()
                && used
                    .iter()
                    .all(|b| b.starts_with("backend=\"shadow-utils\"") && b.contains(reason)),
            "{reason}: {used:?}"
        );
        assert!(env.passwd("fallback").is_some(), "{reason}: user created");
        assert!(env.group("fb-grp").unwrap()[3].contains("fallback"));
    }
}

#[test]
fn native_writes_share_the_lock_of_shadow_utils() {
    need_shadow_utils();
    use cairn_agent::host::shadow::lock::PwdLock;
    use cairn_agent::host::Host;
    use std::time::{Duration, Instant};
    let env = TestEnv::new();
    // Our lock holds off useradd (glibc's lckpwdf on the same file) ...
    let held = PwdLock::acquire(&Host::system(&env.root)).unwrap();
    let mut child = Command::new("useradd")
        .arg("--root")
        .arg(&env.root)
        .arg("waiter")
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    assert!(
        child.try_wait().unwrap().is_none(),
        "useradd must wait for the lock"
    );
    drop(held);
    assert!(child.wait().unwrap().success());
    assert!(env.passwd("waiter").is_some());
    // ... and a held lckpwdf-style lock (fcntl, another process) holds off our writes.
    require("python3");
    let lock = env.p("/etc/.pwd.lock");
    let mut holder = Command::new("python3")
        .arg("-c")
        .arg(
            "import fcntl,sys,time\nf=open(sys.argv[1],'w')\nfcntl.lockf(f,fcntl.LOCK_EX)\nprint('held',flush=True)\ntime.sleep(1.5)\n",
        )
        .arg(&lock)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    use std::io::BufRead;
    std::io::BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "held");
    let started = Instant::now();
    let (code, out, err) = apply_cli(
        &env,
        "l.yaml",
        "#cloud-config\nusers:\n  - name: later\n",
        None,
    );
    let waited = started.elapsed();
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(backends(&err)
        .iter()
        .all(|b| b.starts_with("backend=\"native\"")));
    assert!(
        waited >= Duration::from_millis(1000),
        "applied after {waited:?}"
    );
    assert!(env.passwd("later").is_some());
    holder.wait().unwrap();
}
