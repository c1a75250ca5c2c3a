#![allow(clippy::unwrap_used, clippy::expect_used)]
//! cloud-init `apt: sources:` with `ppa:OWNER/NAME` (issue 15 item 6): never written
//! verbatim; on Ubuntu the Launchpad archive line for the target's release, anywhere else a
//! step failure naming the entry with nothing written. OWNER/NAME checked at validation.

mod common;

use cairn_proto::EventKind;
use common::{cli, snapshot, stdout, TestEnv};

const KEY: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n          mQINBGZ0ZXN0\n          -----END PGP PUBLIC KEY BLOCK-----";

fn user_data(source: &str) -> String {
    format!(
        "#cloud-config
apt:
  sources:
    tools.list:
      source: \"{source}\"
      key: |
          {KEY}
    plain.list:
      source: \"deb https://example.org/apt stable main\"
"
    )
}

fn env_with_os_release(os_release: &str) -> TestEnv {
    let env = TestEnv::empty();
    env.write("/etc/os-release", os_release);
    env.write(
        "/etc/apt/sources.list.d/existing.list",
        "deb https://deb.example/ x main\n",
    );
    env
}

#[test]
fn a_ppa_source_becomes_the_launchpad_line_for_the_ubuntu_release() {
    let env = env_with_os_release(
        "NAME=\"Ubuntu\"\nID=ubuntu\nID_LIKE=debian\nVERSION_ID=\"24.04\"\nVERSION_CODENAME=noble\nUBUNTU_CODENAME=noble\n",
    );
    let yaml = user_data("ppa:deadsnakes/nightly");
    env.apply_yaml("ppa.yaml", &yaml).ok();
    assert_eq!(
        env.read("/etc/apt/sources.list.d/tools.list"),
        "deb https://ppa.launchpadcontent.net/deadsnakes/nightly/ubuntu noble main\n"
    );
    assert!(env
        .read("/etc/apt/trusted.gpg.d/tools.asc")
        .starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----"));
    assert_eq!(
        env.read("/etc/apt/sources.list.d/plain.list"),
        "deb https://example.org/apt stable main\n"
    );
    assert_eq!(env.mode("/etc/apt/sources.list.d/tools.list"), 0o644);
    // Converged: a second apply changes nothing.
    let again = env.apply_yaml("ppa.yaml", &yaml).ok();
    assert!(again.outcome.changes.is_empty(), "{}", again.changes());
}

#[test]
fn a_ppa_owner_alone_means_its_ppa_archive_and_a_derivative_uses_ubuntu_codename() {
    let env = env_with_os_release(
        "NAME=\"Linux Mint\"\nID=linuxmint\nID_LIKE=\"ubuntu debian\"\nVERSION_CODENAME=wilma\nUBUNTU_CODENAME=noble\n",
    );
    env.apply_yaml("ppa.yaml", &user_data("ppa:git-core")).ok();
    assert_eq!(
        env.read("/etc/apt/sources.list.d/tools.list"),
        "deb https://ppa.launchpadcontent.net/git-core/ppa/ubuntu noble main\n"
    );
}

#[test]
fn a_ppa_source_is_refused_on_debian_and_nothing_is_written() {
    let env = env_with_os_release(
        "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\nVERSION_CODENAME=bookworm\n",
    );
    let before = snapshot(&env.p("/etc"));
    let run = env.apply_yaml("ppa.yaml", &user_data("ppa:deadsnakes/nightly"));
    assert!(!run.outcome.ok(), "{}", run.describe());
    let failed = run.step("apt_configure");
    assert_eq!(failed.kind, EventKind::StepFailed, "{}", run.describe());
    for needle in [
        "`tools.list`",
        "ppa:deadsnakes/nightly",
        "Debian GNU/Linux 12",
        "ppa.yaml:5:",
    ] {
        assert!(
            failed.message.contains(needle),
            "`{needle}` not in: {}",
            failed.message
        );
    }
    // Not the PPA line, not its key, not the other source of the step: /etc is as it was
    // (the apply lock under /var/lib/cairn is the only new file).
    let after = snapshot(&env.p("/etc"));
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "{}",
        run.describe()
    );
    common::assert_same(&before, &after);
    assert!(!env.exists("/etc/apt/sources.list.d/tools.list"));
}

#[test]
fn a_ppa_source_is_refused_without_os_release() {
    let env = TestEnv::empty();
    let run = env.apply_yaml("ppa.yaml", &user_data("ppa:deadsnakes/nightly"));
    assert!(!run.outcome.ok());
    assert_eq!(run.step("apt_configure").kind, EventKind::StepFailed);
    assert!(!env.exists("/etc/apt/sources.list.d/tools.list"));
    assert!(!env.exists("/etc/apt/trusted.gpg.d/tools.asc"));
}

#[test]
fn a_malformed_ppa_is_a_validation_error_at_its_location() {
    for (source, what) in [
        ("ppa:DeadSnakes/nightly", "owner `DeadSnakes`"),
        ("ppa:/nightly", "owner ``"),
        ("ppa:deadsnakes/", "archive name ``"),
        ("ppa:deadsnakes/night ly", "archive name `night ly`"),
        ("ppa:a/b/c", "archive name `b/c`"),
    ] {
        let env = TestEnv::empty();
        let f = env.yaml("bad.yaml", &user_data(source));
        let out = cli(["validate".to_string(), f.display().to_string()]);
        let text = stdout(&out);
        assert_eq!(out.status.code(), Some(1), "{source}: {text}");
        let prefix = format!("{}:5:15: error: ", f.display());
        let line = text
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("{source}: no error at 5:15 in:\n{text}"));
        assert!(line.contains(what), "{source}: {line}");
    }
}

#[test]
fn a_ppa_without_a_key_validates_with_a_warning() {
    let env = TestEnv::empty();
    let f = env.yaml(
        "nokey.yaml",
        "#cloud-config\napt:\n  sources:\n    tools:\n      source: ppa:deadsnakes/nightly\n",
    );
    let out = cli(["validate".to_string(), f.display().to_string()]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains(": warning: ") && l.contains("signing key")),
        "{text}"
    );
}
