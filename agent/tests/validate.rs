#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `cairn-agent validate`: every problem printed as `FILE:LINE:COL: severity: message`,
//! all of them (not only the first), exit 1 on errors, 0 on warnings only (1 with --strict),
//! and the cloud-init corpus validating as expected.

mod common;

use std::path::{Path, PathBuf};

use common::{cli, stderr, stdout, TestEnv};

struct Validation {
    code: i32,
    lines: Vec<String>,
    stderr: String,
}

impl Validation {
    fn errors(&self) -> Vec<&String> {
        self.lines
            .iter()
            .filter(|l| l.contains(": error: "))
            .collect()
    }

    fn warnings(&self) -> Vec<&String> {
        self.lines
            .iter()
            .filter(|l| l.contains(": warning: "))
            .collect()
    }

    /// The one line that starts with `prefix` (a `FILE:LINE:COL: severity:` prefix).
    fn line(&self, prefix: &str) -> &String {
        let found: Vec<&String> = self
            .lines
            .iter()
            .filter(|l| l.starts_with(prefix))
            .collect();
        assert_eq!(
            found.len(),
            1,
            "expected one line starting with `{prefix}` in:\n{}",
            self.lines.join("\n")
        );
        found[0]
    }
}

fn validate(files: &[&Path], strict: bool) -> Validation {
    let mut args: Vec<String> = vec!["validate".into()];
    if strict {
        args.push("--strict".into());
    }
    args.extend(files.iter().map(|f| f.display().to_string()));
    let out = cli(&args);
    Validation {
        code: out.status.code().expect("exit code"),
        lines: stdout(&out).lines().map(str::to_string).collect(),
        stderr: stderr(&out),
    }
}

const MANY_ERRORS: &str = r#"#cloud-config
stages:
  boto:
    - name: typo stage
  boot:
    - name: wrong types
      files: "not a list"
    - name: bad file entries
      files:
        - path: /etc/bad-mode
          permissions: "0888"
          content: x
        - path: etc/relative
          content: x
        - path: /etc/../shadow
          content: x
        - path: /etc/bad-b64
          encoding: b64
          content: "not*base64!"
        - path: /etc/bad-gz
          encoding: gz+b64
          content: aGVsbG8gd29ybGQ=
    - name: bad names
      users:
        Bad_User:
          uid: twelve
      groups:
        - "Bad Group"
    - name: bad pem
      certificates:
        - |
          -----BEGIN CERTIFICATE-----
          bm90IGEgY2VydA==!!
          -----END CERTIFICATE-----
"#;

#[test]
fn every_error_of_a_file_is_printed_with_its_location() {
    let env = TestEnv::empty();
    let f = env.yaml("many.yaml", MANY_ERRORS);
    let v = validate(&[&f], false);
    assert_eq!(v.code, 1, "{}", v.stderr);
    let file = f.display().to_string();
    let expect = [
        ("3:3", "unknown stage `boto`; did you mean `boot`?"),
        ("7:14", "files must be a list"),
        ("11:24", "permissions `0888` is not a valid octal mode"),
        ("13:17", "`etc/relative` is relative"),
        ("15:17", "contains `..`"),
        ("19:20", "invalid base64"),
        ("22:20", "invalid gzip"),
        ("25:9", "invalid user name: `Bad_User`"),
        (
            "26:16",
            "uid must be a non-negative integer, found `twelve`",
        ),
        ("28:11", "invalid group name: `Bad Group`"),
        ("32:11", "malformed PEM"),
    ];
    for (at, message) in expect {
        let line = v.line(&format!("{file}:{at}: error: "));
        assert!(line.contains(message), "{line} should say {message}");
    }
    assert_eq!(
        v.errors().len(),
        expect.len(),
        "exactly these errors:\n{}",
        v.lines.join("\n")
    );
    assert!(
        v.stderr.contains(&format!("{} error(s)", expect.len())),
        "{}",
        v.stderr
    );
}

#[test]
fn type_mismatch_is_located_at_the_value() {
    let env = TestEnv::empty();
    let f = env.yaml(
        "types.yaml",
        "#cloud-config\nusers:\n  - name: ok\n    lock_passwd: maybe\nwrite_files: {path: /x}\nruncmd: echo\n",
    );
    let v = validate(&[&f], false);
    assert_eq!(v.code, 1);
    let file = f.display().to_string();
    assert!(v
        .line(&format!("{file}:4:18: error: "))
        .contains("lock_passwd must be true or false, found `maybe`"));
    assert!(v
        .line(&format!("{file}:5:14: error: "))
        .contains("write_files must be a list, found a mapping"));
    assert!(v
        .line(&format!("{file}:6:9: error: "))
        .contains("runcmd must be a list"));
    assert_eq!(v.errors().len(), 3, "{}", v.lines.join("\n"));
}

#[test]
fn conflicting_uid_across_two_files() {
    let env = TestEnv::empty();
    let a = env.yaml(
        "a.yaml",
        "#cloud-config\nusers:\n  - name: dup\n    uid: 2001\n",
    );
    let b = env.yaml(
        "b.yaml",
        "stages:\n  boot:\n    - users:\n        dup:\n          uid: 2002\n",
    );
    let v = validate(&[&a, &b], false);
    assert_eq!(v.code, 1);
    let line = v.line(&format!("{}:4:9: error: ", b.display()));
    assert!(
        line.contains("user `dup` is declared with uid 2002"),
        "{line}"
    );
    assert!(
        line.contains(&format!("uid 2001 at {}:3:", a.display())),
        "names the other declaration: {line}"
    );
    assert_eq!(v.errors().len(), 1);
    // The same uid twice is no conflict.
    let c = env.yaml(
        "c.yaml",
        "stages:\n  boot:\n    - users:\n        dup:\n          uid: 2001\n",
    );
    assert_eq!(validate(&[&a, &c], false).code, 0);
}

#[test]
fn unknown_key_is_a_warning_unless_strict() {
    let env = TestEnv::empty();
    let f = env.yaml(
        "w.yaml",
        "#cloud-config\nwrite_files:\n  - path: /etc/x\n    content: hi\n    permision: '0600'\n",
    );
    let v = validate(&[&f], false);
    assert_eq!(v.code, 0, "warnings alone are valid");
    let prefix = format!("{}:5:5: warning: ", f.display());
    assert!(v
        .line(&prefix)
        .contains("unknown key `permision` in a file entry; did you mean `permissions`?"));
    assert!(v.errors().is_empty());
    assert_eq!(v.warnings().len(), 1);
    let v = validate(&[&f], true);
    assert_eq!(v.code, 1, "--strict turns unknown keys into errors");
    assert!(v
        .line(&format!("{}:5:5: error: ", f.display()))
        .contains("unknown key `permision`"));
}

#[test]
fn unknown_top_level_key_and_stage_suggestions() {
    let env = TestEnv::empty();
    let f = env.yaml(
        "s.yaml",
        "stages:\n  netwrok:\n    - commands: [true]\n  kubernetes.afterr:\n    - commands: [true]\nwrite_file: []\n",
    );
    let v = validate(&[&f], false);
    assert_eq!(v.code, 1);
    let file = f.display().to_string();
    assert!(v
        .line(&format!("{file}:2:3: error: "))
        .contains("did you mean `network`?"));
    assert!(v
        .line(&format!("{file}:4:3: error: "))
        .contains("unknown stage `kubernetes.afterr`"));
    assert!(v
        .line(&format!("{file}:6:1: warning: "))
        .contains("did you mean `write_files`?"));
}

#[test]
fn sudo_true_is_refused_not_written_as_a_rule() {
    let env = TestEnv::empty();
    let f = env.yaml(
        "sudo.yaml",
        "#cloud-config\nusers:\n  - name: ops\n    sudo: true\n  - name: ok\n    sudo: false\n",
    );
    let v = validate(&[&f], false);
    assert_eq!(v.code, 1);
    assert!(v
        .line(&format!("{}:4:11: error: ", f.display()))
        .contains("sudo must be a rule"));
    assert_eq!(v.errors().len(), 1, "`sudo: false` is fine");
}

#[test]
fn conflicting_gid_and_missing_file() {
    let env = TestEnv::empty();
    let f = env.yaml(
        "g.yaml",
        "#cloud-config\ngroups:\n  - ops: {gid: 3000}\nstages:\n  boot:\n    - groups:\n        ops: {gid: 3001}\n",
    );
    let v = validate(&[&f], false);
    assert_eq!(v.code, 1);
    // One declaration is reported, naming the other.
    let line = v.line(&format!("{}:3:5: error: ", f.display()));
    assert!(
        line.contains("group `ops` is declared with gid 3000")
            && line.contains(&format!("gid 3001 at {}:7:9", f.display())),
        "{line}"
    );
    assert_eq!(v.errors().len(), 1);
    let missing = env.cfg.join("missing.yaml");
    let v = validate(&[&missing], false);
    assert_eq!(v.code, 1);
    assert!(v.stderr.contains("missing.yaml"), "{}", v.stderr);
}

#[test]
fn yaml_syntax_errors_are_located_and_other_files_still_checked() {
    let env = TestEnv::empty();
    let a = env.yaml(
        "a-syntax.yaml",
        "#cloud-config\nusers:\n  - name: a\n    gecos: \"unterminated\n",
    );
    let b = env.yaml(
        "b-mode.yaml",
        "stages:\n  boot:\n    - directories:\n        - path: /d\n          permissions: 9999\n",
    );
    let v = validate(&[&a, &b], false);
    assert_eq!(v.code, 1);
    assert!(v
        .line(&format!("{}:4:12: error: ", a.display()))
        .contains("YAML syntax"));
    assert!(v
        .line(&format!("{}:5:24: error: ", b.display()))
        .contains("not a valid octal mode"));
    assert_eq!(v.errors().len(), 2);
}

#[test]
fn json_output_lists_diagnostics() {
    let env = TestEnv::empty();
    let f = env.yaml(
        "j.yaml",
        "stages:\n  boot:\n    - files:\n        - path: rel\n",
    );
    let out = cli(["validate", "--output", "json", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).expect("JSON array");
    let items = v.as_array().expect("array");
    assert_eq!(items.len(), 1, "{v}");
    assert_eq!(items[0]["line"], 4);
    assert_eq!(items[0]["col"], 17);
    assert_eq!(items[0]["severity"], "error");
    assert_eq!(items[0]["file"], f.display().to_string());
}

/// cloud-init's own example documents, kept in the repository (see its SOURCE.md).
fn corpus_dir() -> PathBuf {
    common::manifest_dir().join("tests/corpus/cloud-init")
}

fn error_lines(v: &Validation) -> Vec<usize> {
    v.errors()
        .iter()
        .map(|l| {
            // FILE:LINE:COL: error: …  (FILE has no colon here)
            let mut parts = l.split(':');
            parts.next();
            parts.next().unwrap().parse::<usize>().unwrap()
        })
        .collect()
}

#[test]
fn cloud_init_corpus_validates() {
    let dir = corpus_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "corpus looks incomplete: {files:?}");
    let mut seen_special = 0;
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let v = validate(&[f], false);
        let lines = error_lines(&v);
        for l in v.errors() {
            assert!(
                l.starts_with(&format!("{}:", f.display())),
                "error names its file: {l}"
            );
        }
        match name.as_str() {
            "write-files.yaml" => {
                seen_special += 1;
                assert_eq!(v.code, 1, "{name}");
                assert_eq!(lines, vec![12, 21], "{name}:\n{}", v.lines.join("\n"));
            }
            "ca-certs.yaml" => {
                seen_special += 1;
                assert_eq!(v.code, 1, "{name}");
                assert!(!lines.is_empty(), "{name}");
                assert!(
                    lines.iter().all(|l| (24..=31).contains(l)),
                    "{name}: errors outside 24-31:\n{}",
                    v.lines.join("\n")
                );
            }
            _ => {
                assert_eq!(
                    v.code,
                    0,
                    "{name} should validate:\n{}\n{}",
                    v.lines.join("\n"),
                    v.stderr
                );
                assert!(lines.is_empty(), "{name}: {:?}", v.errors());
            }
        }
    }
    assert_eq!(
        seen_special, 2,
        "write-files.yaml and ca-certs.yaml are in the corpus"
    );
}

#[test]
fn the_same_file_written_twice_differently_is_a_warning() {
    let env = TestEnv::empty();
    let a = env.yaml(
        "a.yaml",
        "#cloud-config\nwrite_files:\n  - path: /etc/motd\n    content: one\n",
    );
    let b = env.yaml(
        "b.yaml",
        "stages:\n  boot:\n    - files:\n        - path: /etc/motd\n          content: two\n    \
         - only_arch: arm64\n      files:\n        - path: /etc/motd\n          content: three\n    \
         - files:\n        - path: /etc/issue\n          content: same\n        - path: /etc/issue\n          content: same\n        - path: /etc/motd\n          content: more\n          append: true\n",
    );
    let v = validate(&[&a, &b], false);
    assert_eq!(v.code, 0, "a warning, not an error");
    assert_eq!(v.warnings().len(), 1, "{:?}", v.warnings());
    let line = v.line(&format!("{}:4:11: warning: ", b.display()));
    assert!(
        line.contains(&format!(
            "`/etc/motd` is also written at {}:3:5",
            a.display()
        )),
        "{line}"
    );
}

#[test]
fn a_join_string_validates_and_is_never_printed() {
    let pin = "5a7c3e1f".repeat(8);
    let token = "cairn_rt_CanaryToken0123456789abcdefghijklmnopqrst";
    let env = TestEnv::empty();
    let good = env.yaml(
        "join.yaml",
        &format!(
            "#cloud-config\ncairn:\n  join: \"cairn1:{pin}:{token}@https://hub.example:8443\"\n  \
             site: edge-1\n"
        ),
    );
    let v = validate(&[&good], true);
    assert_eq!(v.code, 0, "{}\n{}", v.lines.join("\n"), v.stderr);
    // Mistakes are located and explained without quoting the string.
    let short_pin = env.yaml(
        "short-pin.yaml",
        &format!(
            "cairn:\n  join: \"cairn1:{}:{token}@https://hub.example\"\n",
            &pin[..60]
        ),
    );
    let http = env.yaml(
        "http.yaml",
        &format!("cairn:\n  join: \"cairn1:{pin}:{token}@http://hub.example\"\n"),
    );
    let both = env.yaml(
        "both.yaml",
        &format!(
            "cairn:\n  endpoint: https://hub.example\n  join: \"cairn1:{pin}:{token}@https://h\"\n"
        ),
    );
    let bad = [short_pin.as_path(), http.as_path(), both.as_path()];
    let v = validate(&bad, false);
    assert_eq!(v.code, 1);
    for (file, at, message) in [
        (&short_pin, "2:9", "64 hexadecimal digits"),
        (&http, "2:9", "must be an https:// URL"),
        (&both, "3:9", "remove `endpoint`, `token` and `ca_certs`"),
    ] {
        let line = v.line(&format!("{}:{at}: error: ", file.display()));
        assert!(line.contains(message), "{line} should say {message}");
    }
    // JSON output too.
    let mut args = vec!["validate".to_string(), "--output".into(), "json".into()];
    args.extend(bad.iter().map(|f| f.display().to_string()));
    let json = cli(&args);
    for out in [
        v.lines.join("\n"),
        v.stderr.clone(),
        stdout(&json),
        stderr(&json),
    ] {
        assert!(!out.contains(token), "the token was printed:\n{out}");
        assert!(!out.contains(&pin[..16]), "the pin was printed:\n{out}");
    }
}

/// `cairn-agent validate examples/` — the first command of the demo — tells the cluster
/// profiles in the directory from user-data and checks them as profiles: no "unknown key
/// `layers`", every rule of `apply`. The example profiles name versions only: the packs
/// catalog completes them for both arches, so no finding is about artifacts.
#[test]
fn the_examples_validate_with_their_profiles_checked_as_profiles() {
    let dir = common::repo_dir().join("examples");
    let v = validate(&[&dir], false);
    let all = format!("{}\n{}", v.lines.join("\n"), v.stderr);
    assert_eq!(v.code, 0, "{all}");
    assert!(!all.contains("unknown key `layers`"), "{all}");
    assert!(all.contains("4 cluster profile(s)"), "{all}");
    assert!(!all.contains("artifact"), "{all}");
    assert!(v.errors().is_empty(), "{all}");
}

const BAD_PROFILE: &str = "\
name: edge
layers:
  - kubernetes:
      flavor: k3s
      version: v1.31.4+k3s1
      values:
        service-cidr: 10.42.0.0/24
      artifacts:
        - name: k3s
          arch: amd64
          url: https://example.org/k3s
          sha256: 0000000000000000000000000000000000000000000000000000000000000000
  - cni:
      type: calico
      version: v3.29.1
      pod_cidr: 10.42.0.0/16
";

/// A profile that reads fine but breaks a rule between its layers is refused at the line
/// and column of the field at fault, the way `apply` would refuse it.
#[test]
fn a_profile_breaking_a_cross_layer_rule_is_refused_at_its_line_and_column() {
    let env = TestEnv::empty();
    let f = env.yaml("bad-profile.yaml", BAD_PROFILE);
    let v = validate(&[&f], false);
    assert_eq!(v.code, 1, "{:?}\n{}", v.lines, v.stderr);
    let line = v.line(&format!("{}:16:17: error: ", f.display()));
    assert!(
        line.contains("overlaps the service network 10.42.0.0/24"),
        "{line}"
    );
    // Reported once, not once per architecture checked.
    assert_eq!(v.errors().len(), 1, "{:?}", v.lines);

    // A shape error keeps its own position.
    let g = env.yaml(
        "typo.yaml",
        "name: edge\nlayers:\n  - kubernetes:\n      flavour: k3s\n",
    );
    let v = validate(&[&g], false);
    assert_eq!(v.code, 1);
    assert!(v
        .line(&format!("{}:4:7: error: ", g.display()))
        .contains("flavour"));
}

/// With `--arch`, a file that architecture needs and nothing can verify is an error (the
/// profile is checked as `apply` would check it on such a machine); without, an
/// architecture the profile lists no files for gets it as a warning (the profile is not
/// meant for it). Calico's operator manifest is published without a checksum: this profile
/// lists it, pinned, for amd64 only; kubeadm's own files come from the packs catalog.
#[test]
fn validate_arch_makes_a_missing_artifact_an_error() {
    let env = TestEnv::empty();
    let f = env.yaml(
        "p.yaml",
        "name: edge\nlayers:\n  - kubernetes:\n      flavor: kubeadm\n      version: v1.31.4\n  - cni:\n      type: calico\n      version: v3.29.1\n      pod_cidr: 10.244.0.0/16\n      artifacts:\n        - name: tigera-operator\n          arch: amd64\n          url: https://example.org/tigera-operator.yaml\n          sha256: 0000000000000000000000000000000000000000000000000000000000000000\n",
    );
    let v = validate(&[&f], false);
    assert_eq!(v.code, 0, "{:?}\n{}", v.lines, v.stderr);
    assert_eq!(v.warnings().len(), 1, "arm64 is not listed: {:?}", v.lines);
    assert!(v.warnings()[0].contains("tigera-operator") && v.warnings()[0].contains("arm64"));
    let out = cli(["validate", "--arch", "arm64", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    let prefix = format!("{}:7:7: error: ", f.display());
    assert!(
        text.lines().any(|l| l.starts_with(&prefix)
            && l.contains(
                "`tigera-operator.yaml` of calico v3.29.1 is published without a checksum"
            )),
        "{text}"
    );
    let out = cli(["validate", "--arch", "amd64", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}

#[test]
fn the_dialect_is_detected_and_can_be_overridden() {
    let env = TestEnv::empty();
    let users = "users:\n  - name: kairos\n    passwd: kairos\n";
    // Nothing Kairos-like: cloud-init, and the plain passwd is warned about at its line.
    let plain = env.yaml("plain.yaml", &format!("#cloud-config\n{users}"));
    let v = validate(&[&plain], false);
    assert_eq!(v.code, 0, "a warning, not an error: {}", v.lines.join("\n"));
    let line = v.line(&format!("{}:4:13: warning: ", plain.display()));
    assert!(line.contains("`passwd` is not a crypt(3) hash"), "{line}");
    assert!(line.contains("#cairn-dialect: kairos"), "{line}");
    assert_eq!(v.warnings().len(), 1);
    // A Kairos key decides it: no warning.
    let kairos = env.yaml(
        "kairos.yaml",
        &format!("#cloud-config\n{users}install:\n  reboot: true\n"),
    );
    let v = validate(&[&kairos], false);
    assert_eq!(
        (v.code, v.warnings().len()),
        (0, 0),
        "{}",
        v.lines.join("\n")
    );
    // So does the override line.
    let forced = env.yaml(
        "forced.yaml",
        &format!("#cloud-config\n#cairn-dialect: kairos\n{users}"),
    );
    let v = validate(&[&forced], false);
    assert_eq!(
        (v.code, v.warnings().len()),
        (0, 0),
        "{}",
        v.lines.join("\n")
    );
    // And the other way round: a Kairos file forced to cloud-init gets the warning back.
    let back = env.yaml(
        "back.yaml",
        &format!("#cloud-config\n#cairn-dialect: cloud-init\n{users}install:\n  reboot: true\n"),
    );
    let v = validate(&[&back], false);
    assert_eq!(v.warnings().len(), 1, "{}", v.lines.join("\n"));
    // A dialect Cairn does not know is an error at its line.
    let typo = env.yaml(
        "typo.yaml",
        &format!("#cloud-config\n#cairn-dialect: yip\n{users}"),
    );
    let v = validate(&[&typo], false);
    assert_eq!(v.code, 1);
    assert!(v
        .line(&format!("{}:2:1: error: ", typo.display()))
        .contains("unknown dialect `yip`"));
}

#[test]
fn kairos_only_constructs_do_not_refuse_the_file() {
    let env = TestEnv::empty();
    let f = env.yaml(
        "k.yaml",
        "#cloud-config\nhostname: n-{{ .ProtectedID }}\nusers:\n  - name: kairos\n    passwd: kairos\n    ssh_authorized_keys: [github:someone, gitlab:other]\nstages:\n  provider-kairos.bootstrap.after.k3s-ready:\n    - commands: [\"true\"]\n  boot:\n    - files:\n        - path: /etc/motd\n          content: hi\n          ownerstring: \"\"\ninstall:\n  reboot: true\n  poweroff: true\n",
    );
    let v = validate(&[&f], false);
    assert_eq!(v.code, 0, "{}", v.lines.join("\n"));
    let file = f.display().to_string();
    assert!(v
        .line(&format!("{file}:2:11: warning: "))
        .contains("`hostname` is not set from the template"));
    assert!(v
        .line(&format!("{file}:8:3: warning: "))
        .contains("stage `provider-kairos.bootstrap.after.k3s-ready` is not run by Cairn"));
    assert!(v
        .line(&format!("{file}:17:3: warning: "))
        .contains("the host reboots"));
    assert_eq!(v.warnings().len(), 3, "{}", v.lines.join("\n"));
}

/// A self-signed certificate: a CA or not, valid from `from` for `days` days.
fn cert_pem(ca: bool, from: time::OffsetDateTime, days: i64) -> String {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, "cairn-test");
    if ca {
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    }
    p.not_before = from;
    p.not_after = from + time::Duration::days(days);
    p.self_signed(&key).unwrap().pem()
}

#[test]
fn a_non_ca_an_expired_ca_and_a_future_ca_are_refused_and_the_trust_store_is_untouched() {
    // reliability §5 #31 (malformed PEM: `every_error_of_a_file_is_printed_with_its_location`).
    let now = time::OffsetDateTime::now_utc();
    let cases = [
        (
            "not a CA",
            cert_pem(false, now - time::Duration::days(1), 30),
            "is not a CA",
        ),
        (
            "expired",
            cert_pem(true, now - time::Duration::days(60), 30),
            "outside its validity period",
        ),
        (
            "not yet valid",
            cert_pem(true, now + time::Duration::days(30), 30),
            "outside its validity period",
        ),
    ];
    let good = cert_pem(true, now - time::Duration::days(1), 30);
    for (what, pem, message) in cases {
        let env = TestEnv::new();
        let yaml = format!(
            "stages:\n  boot:\n    - name: trust\n      certificates:\n        - |\n{}\n        - |\n{}\n",
            common::indent(&good, 10),
            common::indent(&pem, 10)
        );
        let f = env.yaml("ca.yaml", &yaml);
        let v = validate(&[&f], false);
        assert_eq!(v.code, 1, "{what}: {}", v.stderr);
        let errors = v.errors();
        assert_eq!(errors.len(), 1, "{what}: {errors:?}");
        // Located at the second certificate's text (after the good one and its `- |`).
        let at = format!("{}:{}:", f.display(), 7 + good.lines().count());
        assert!(
            errors[0].starts_with(&at) && errors[0].contains(message),
            "{what}: {} (expected at {at})",
            errors[0]
        );
        // Applying the same file refuses it before any step: the trust store (the whole
        // root) is unchanged, the good certificate beside it included.
        let before = common::snapshot(&env.root);
        let out = cli([
            "apply".to_string(),
            "--root".into(),
            env.root.display().to_string(),
            f.display().to_string(),
        ]);
        assert_eq!(out.status.code(), Some(1), "{what}: {}", stderr(&out));
        common::assert_same(&before, &common::snapshot(&env.root));
    }
}

#[test]
fn option_like_or_shell_package_names_and_urls_with_a_newline_are_refused_at_their_line() {
    // reliability §5 #29; packages that pass are given after `--` (see steps.rs).
    let env = TestEnv::empty();
    let sha = "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881";
    let f = env.yaml(
        "p.yaml",
        &format!(
            "#cloud-config\npackages:\n  - \"-oAPT::Get::AllowUnauthenticated=true\"\n  - \"vim; curl x|sh\"\n  - ok-pkg\nstages:\n  boot:\n    - name: dl\n      downloads:\n        - url: \"https://example.com/a\\nHost: evil\"\n          path: /opt/a\n          sha256: \"{sha}\"\n"
        ),
    );
    let v = validate(&[&f], false);
    assert_eq!(v.code, 1, "{}", v.stderr);
    let file = f.display().to_string();
    for (at, message) in [
        ("3:5", "is not a valid package name"),
        ("4:5", "`vim; curl x|sh` is not a valid package name"),
        (
            "10:16",
            "url `https://example.com/a\\nHost: evil` must be an http:// or https:// URL",
        ),
    ] {
        let line = v.line(&format!("{file}:{at}: error: "));
        assert!(line.contains(message), "{line} should say {message}");
    }
    assert!(v.stderr.contains("3 error(s)"), "{}", v.stderr);
}
