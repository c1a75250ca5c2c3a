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

// ---------------------------------------------------------------------------------------
// Kairos/Palette user-data: accounts usable the way Kairos leaves them, SSH keys fetched from
// `github:`/`gitlab:` sources over verified TLS (a loopback server with a test CA stands in
// for GitHub and GitLab), and the corpus in userdata/tests/corpus/kairos applied for real.

mod keyserver {
    use std::io::{Read, Write};
    use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    /// An HTTPS server on 127.0.0.1 serving fixed bodies by path, with its own test CA.
    pub struct KeyServer {
        pub base: String,
        pub ca_pem: String,
        pub requests: Arc<Mutex<Vec<String>>>,
    }

    fn pki() -> (String, Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, SanType,
        };
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.distinguished_name
            .push(DnType::CommonName, "Cairn key-source test CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        p.distinguished_name.push(DnType::CommonName, "keys.test");
        let cert = p.signed_by(&key, &ca_cert, &ca_key).unwrap();
        (
            ca_cert.pem(),
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
    }

    pub fn start(files: Vec<(String, String)>) -> KeyServer {
        let (ca_pem, chain, key) = pki();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .unwrap(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("https://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&requests);
        let files = Arc::new(files);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (config, files, seen) =
                    (Arc::clone(&config), Arc::clone(&files), Arc::clone(&seen));
                std::thread::spawn(move || serve(config, stream, &files, &seen));
            }
        });
        KeyServer {
            base,
            ca_pem,
            requests,
        }
    }

    fn serve(
        config: Arc<rustls::ServerConfig>,
        stream: TcpStream,
        files: &[(String, String)],
        seen: &Mutex<Vec<String>>,
    ) {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let Ok(conn) = rustls::ServerConnection::new(config) else {
            return;
        };
        let mut tls = rustls::StreamOwned::new(conn, stream);
        let mut req = Vec::new();
        let mut buf = [0u8; 1024];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
            match tls.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => req.extend_from_slice(&buf[..n]),
            }
        }
        let text = String::from_utf8_lossy(&req);
        let path = text.split_whitespace().nth(1).unwrap_or("").to_string();
        seen.lock().unwrap().push(path.clone());
        let (status, body) = match files.iter().find(|(p, _)| *p == path) {
            Some((_, b)) => ("200 OK", b.clone()),
            None => ("404 Not Found", "Not Found".to_string()),
        };
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = tls.write_all(head.as_bytes());
        let _ = tls.write_all(body.as_bytes());
        tls.conn.send_close_notify();
        let _ = tls.flush();
    }
}

/// The keys the test server publishes for the corpus's accounts.
const GH_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGhHaXRodWJLZXlGb3JDYWlyblRlc3RVc2VyMDAwMDAw gh@test";
const GL_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGxHaXRsYWJLZXlGb3JDYWlyblRlc3RVc2VyMDAwMDAw gl@test";

fn key_server() -> keyserver::KeyServer {
    keyserver::start(vec![
        ("/gh/cairn-test-user.keys".into(), format!("{GH_KEY}\n")),
        ("/gl/cairn-lab-user.keys".into(), format!("{GL_KEY}\n\n")),
        ("/gh/html-user.keys".into(), "<html>sign in</html>\n".into()),
    ])
}

/// `cairn:` with key sources pointing at the test server (and trusting its CA).
fn cairn_block(server: &keyserver::KeyServer, with_ca: bool) -> String {
    let mut s = format!(
        "cairn:\n  key_sources:\n    github: {}/gh\n    gitlab: {}/gl\n",
        server.base, server.base
    );
    if with_ca {
        s.push_str("    ca_certs:\n      - |\n");
        s.push_str(&common::indent(&server.ca_pem, 8));
        s.push('\n');
    }
    s
}

const MACHINE_ID: &str = "0123456789abcdef0123456789abcdef";

/// Does `password` verify against the shadow field `field` (an unlocked SHA-512 hash)?
fn logs_in(field: &str, password: &str) -> bool {
    !field.starts_with('!') && sha_crypt::sha512_check(password, field).is_ok()
}

#[test]
fn the_palette_quick_start_user_can_log_in() {
    let env = TestEnv::new();
    env.write("/etc/machine-id", &format!("{MACHINE_ID}\n"));
    let server = key_server();
    let yaml = format!(
        "#cloud-config\nhostname: kairos-{{{{ trunc 4 .MachineID }}}}\nusers:\n  - name: kairos\n    passwd: kairos\n    groups: [admin]\n    ssh_authorized_keys:\n      - github:cairn-test-user\n{}",
        cairn_block(&server, true)
    );
    let run = env.apply_yaml("quick.yaml", &yaml).ok();
    let pw = env.shadow_pw("kairos").expect("kairos in shadow");
    assert!(logs_in(&pw, "kairos"), "`kairos` logs in: {pw}");
    let admin = env.group("admin").expect("group admin");
    assert!(admin[3].split(',').any(|m| m == "kairos"), "{admin:?}");
    let keys = env.read("/home/kairos/.ssh/authorized_keys");
    assert_eq!(keys, format!("{GH_KEY}\n"));
    let (uid, gid) = env.ids("kairos");
    assert_eq!(
        env.meta("/home/kairos/.ssh/authorized_keys"),
        (0o600, uid, gid)
    );
    assert_eq!(env.read("/etc/hostname"), "kairos-0123\n");
    // The keys were fetched in stage network, after the user was created in boot.
    let fetch = run.step("ssh_import_keys");
    assert_eq!(fetch.stage, "network");
    assert_eq!(fetch.kind, EventKind::StepChanged);
    assert_eq!(
        server.requests.lock().unwrap().as_slice(),
        ["/gh/cairn-test-user.keys"]
    );
    // Converged: fetched again, nothing to change.
    let again = env.apply_yaml("quick.yaml", &yaml).ok();
    assert_eq!(again.outcome.changed, 0, "{}", again.describe());
}

#[test]
fn key_sources_offline_fail_their_step_not_the_validation() {
    let env = TestEnv::new();
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let yaml = format!(
        "#cloud-config\nusers:\n  - name: kairos\n    passwd: kairos\n    ssh_authorized_keys: [github:cairn-test-user]\ncairn:\n  key_sources:\n    github: https://127.0.0.1:{port}/gh\n"
    );
    let f = env.yaml("offline.yaml", &yaml);
    let loaded = cairn_userdata::load::load(std::slice::from_ref(&f), false).unwrap();
    assert!(!loaded.diags.has_errors(), "{:?}", loaded.diags.sorted());
    let run = common::apply(&env.root, &[f], &Default::default());
    let failed = run.outcome.failed.clone().expect("the key fetch fails");
    assert_eq!(
        (failed.stage.as_str(), failed.step.as_str()),
        ("network", "ssh_import_keys")
    );
    assert!(
        failed.message.contains("github:cairn-test-user")
            && failed
                .message
                .contains(&format!("https://127.0.0.1:{port}/gh/cairn-test-user.keys")),
        "{}",
        failed.message
    );
    // The account itself was created in stage boot and is usable.
    assert!(logs_in(&env.shadow_pw("kairos").unwrap(), "kairos"));
    assert_eq!(run.step("users_groups").kind, EventKind::StepChanged);
}

#[test]
fn key_sources_are_fetched_over_verified_tls_only() {
    let env = TestEnv::new();
    let server = key_server();
    // The server's CA is not trusted: the fetch is refused, nothing is written.
    let yaml = format!(
        "stages:\n  network:\n    - name: keys\n      authorized_keys:\n        root: [github:cairn-test-user]\n{}",
        cairn_block(&server, false)
    );
    let run = env.apply_yaml("untrusted.yaml", &yaml);
    let failed = run
        .outcome
        .failed
        .clone()
        .expect("an untrusted server is refused");
    assert_eq!(failed.step, "keys");
    assert!(failed.message.contains("certificate"), "{}", failed.message);
    assert!(!env.exists("/root/.ssh/authorized_keys"));
    // A server answering something that is not a key list adds nothing.
    let yaml = format!(
        "stages:\n  network:\n    - name: keys\n      authorized_keys:\n        root: [github:html-user, github:cairn-test-user]\n{}",
        cairn_block(&server, true)
    );
    let run = env.apply_yaml("html.yaml", &yaml);
    let failed = run.outcome.failed.clone().expect("HTML is not a key list");
    assert!(failed.message.contains("line 1 of"), "{}", failed.message);
    assert!(!env.exists("/root/.ssh/authorized_keys"));
    // Trusted, and keys in a stage before the network are moved to stage network.
    let yaml = format!(
        "stages:\n  boot:\n    - name: keys\n      authorized_keys:\n        root: [gitlab:cairn-lab-user]\n{}",
        cairn_block(&server, true)
    );
    let run = env.apply_yaml("boot.yaml", &yaml).ok();
    assert_eq!(run.step("keys (keys)").stage, "network");
    assert_eq!(
        env.read("/root/.ssh/authorized_keys"),
        format!("{GL_KEY}\n")
    );
}

/// What the agent checks of a corpus `.expect` file (the rest is userdata's test).
#[derive(Default)]
struct Applied {
    users: Vec<(String, String)>,
    locked: Vec<String>,
    keys: Vec<(String, String)>,
    files: Vec<(String, String)>,
    hosts: Vec<String>,
}

fn applied_expectations(path: &std::path::Path) -> Applied {
    let mut a = Applied::default();
    for line in std::fs::read_to_string(path).unwrap().lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (directive, rest) = line.split_once(' ').unwrap_or((line, ""));
        let pair = || {
            let (x, y) = rest.split_once(' ').expect("two arguments");
            (x.to_string(), y.to_string())
        };
        match directive {
            "user" => a.users.push(pair()),
            "locked" => a.locked.push(rest.to_string()),
            "keys" => a.keys.push(pair()),
            "file" => a.files.push(pair()),
            "hosts" => a.hosts.push(rest.to_string()),
            "dialect" | "valid" | "invalid" | "warning" => {}
            other => panic!("{}: unknown directive `{other}`", path.display()),
        }
    }
    a
}

fn words(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn kairos_corpus_applies_as_expected() {
    use cairn_agent::engine::{self, ApplyOptions};
    use cairn_agent::events::{Emitter, MemorySink};
    use cairn_agent::host::Host;
    use cairn_userdata::model::KeySourceSettings;

    let dir = common::repo_dir().join("userdata/tests/corpus/kairos");
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 8, "{} corpus files", files.len());
    let server = key_server();
    let mut checked_logins = 0;
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let exp = applied_expectations(&file.with_extension("expect"));
        let env = TestEnv::new();
        env.write("/etc/machine-id", &format!("{MACHINE_ID}\n"));
        let mut loaded = cairn_userdata::load::load(std::slice::from_ref(file), false).unwrap();
        assert!(
            !loaded.diags.has_errors(),
            "{name}: {:?}",
            loaded.diags.sorted()
        );
        loaded
            .config
            .hub
            .get_or_insert_with(Default::default)
            .key_sources = KeySourceSettings {
            github: Some(format!("{}/gh", server.base)),
            gitlab: Some(format!("{}/gl", server.base)),
            ca_certs: vec![server.ca_pem.clone()],
        };
        let sink = MemorySink::default();
        let mut emitter = Emitter::new("test-host").with_sink(Box::new(sink.clone()));
        let outcome = engine::apply(
            &loaded.config,
            &Host::system(&env.root),
            &ApplyOptions::default(),
            &mut emitter,
        );
        assert!(outcome.ok(), "{name}: {:?}", outcome.failed);
        for (user, password) in &exp.users {
            let pw = env
                .shadow_pw(user)
                .unwrap_or_else(|| panic!("{name}: no {user} in shadow"));
            assert!(
                logs_in(&pw, password),
                "{name}: {user} cannot log in with {password}: {pw}"
            );
            checked_logins += 1;
        }
        for user in &exp.locked {
            let pw = env
                .shadow_pw(user)
                .unwrap_or_else(|| panic!("{name}: no {user}"));
            assert!(pw.starts_with('!'), "{name}: {user} is not locked: {pw}");
        }
        for (user, source) in &exp.keys {
            let row = env.passwd(user).unwrap();
            let home = &row[5];
            let keys = env.read(&format!("{home}/.ssh/authorized_keys"));
            let want = if source.starts_with("github:") {
                GH_KEY
            } else {
                GL_KEY
            };
            assert!(
                keys.contains(want),
                "{name}: {user} lacks the key of {source}: {keys}"
            );
        }
        for (path, text) in &exp.files {
            let body = env.read(path);
            assert!(
                body.contains(text.as_str()),
                "{name}: {path} lacks `{text}`:\n{body}"
            );
        }
        let hosts = env.read("/etc/hosts");
        for prefix in &exp.hosts {
            assert!(
                hosts.lines().any(|l| words(l).starts_with(&words(prefix))),
                "{name}: no hosts line `{prefix}`:\n{hosts}"
            );
        }
    }
    assert!(checked_logins >= 7, "{checked_logins} logins checked");
}
