#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Nothing a Kairos or Palette configuration says is dropped in silence: every top-level,
//! `install:` and `stylus:` key their documentation describes is either applied (mapped onto
//! a step or a setting, checked here on the decoded configuration) or warned about at its
//! line, by name. docs/user-data.md carries the same table.

use cairn_userdata::decode::{self, KAIROS_KEYS};
use cairn_userdata::diag::{Diagnostics, Severity};
use cairn_userdata::model::{Action, Config, HostsLine};

type Check = fn(&Config) -> bool;

enum Outcome {
    /// Acted on: `check` holds on the decoded configuration and no warning is at the key.
    Applied(Check),
    /// A warning at the key's line that names it.
    Warned,
    /// Read and checked: a bad value is an error at the key (so it is not dropped).
    Checked,
    /// A label with no effect on the system (yip's configuration `name`).
    Label,
}
use Outcome::*;

fn has(c: &Config, f: fn(&Action) -> bool) -> bool {
    c.stages
        .iter()
        .flat_map(|s| &s.steps)
        .flat_map(|s| &s.actions)
        .any(f)
}

fn network_file(c: &Config) -> bool {
    has(
        c,
        |a| matches!(a, Action::Files(f) if f.iter().any(|f| f.path.as_str().starts_with("/etc/systemd/network/10-cairn-"))),
    )
}

/// (key path, its value in YAML flow style, what Cairn does with it).
const TABLE: &[(&str, &str, Outcome)] = &[
    // Top level: what Cairn applies.
    (
        "stages",
        "{boot: [{commands: [\"true\"]}]}",
        Applied(|c| c.stage("boot").is_some()),
    ),
    (
        "users",
        "[{name: op}]",
        Applied(|c| has(c, |a| matches!(a, Action::Users(_)))),
    ),
    (
        "hostname",
        "edge-1",
        Applied(|c| has(c, |a| matches!(a, Action::Hostname(_)))),
    ),
    (
        "ssh_authorized_keys",
        "[\"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq3 a@b\"]",
        Applied(|c| has(c, |a| matches!(a, Action::AuthorizedKeys(_)))),
    ),
    (
        "write_files",
        "[{path: /etc/x, content: x}]",
        Applied(|c| has(c, |a| matches!(a, Action::Files(_)))),
    ),
    (
        "runcmd",
        "[\"true\"]",
        Applied(|c| has(c, |a| matches!(a, Action::Commands(_)))),
    ),
    (
        "install",
        "{device: /dev/vda}",
        Applied(|c| c.install.is_some()),
    ),
    (
        "stylus",
        "{site: {name: store-1}}",
        Applied(|c| c.hub.is_some()),
    ),
    ("name", "my config", Label),
    // Top level: what Kairos reads for itself.
    ("upgrade", "{recovery: true}", Warned),
    ("reset", "{reset-persistent: true}", Warned),
    ("config_url", "https://config.example/node.yaml", Warned),
    ("options", "{timeout: 5}", Warned),
    (
        "bundles",
        "[{targets: [\"run://bundles.example/b:1\"]}]",
        Warned,
    ),
    ("fail_on_bundles_errors", "true", Warned),
    ("grub_options", "{extra_cmdline: quiet}", Warned),
    ("env", "[\"A=1\"]", Warned),
    ("debug", "true", Warned),
    ("strict", "true", Warned),
    ("cloud-init-paths", "[/oem/extra]", Warned),
    ("eject-cd", "true", Warned),
    ("cosign", "true", Warned),
    ("verify", "true", Warned),
    ("cosign-key", "k.pub", Warned),
    ("arch", "amd64", Warned),
    ("squash-compression", "xz", Warned),
    ("squash-no-compression", "true", Warned),
    ("uki-max-entries", "3", Warned),
    ("bind-pcrs", "[\"11\"]", Warned),
    ("bind-public-pcrs", "[\"11\"]", Warned),
    ("logs", "{journal: [k3s]}", Warned),
    (
        "k3s",
        "{enabled: true, args: [\"--disable=traefik\"]}",
        Warned,
    ),
    ("k3s-agent", "{enabled: true}", Warned),
    ("k0s", "{enabled: true}", Warned),
    ("k0s-worker", "{enabled: true}", Warned),
    ("p2p", "{network_token: t}", Warned),
    ("kubevip", "{eip: 10.0.0.1}", Warned),
    ("cluster", "{role: init}", Warned),
    ("phonehome", "{url: https://phone.example}", Warned),
    ("kcrypt", "{challenger: {server: x}}", Warned),
    ("providers", "{paths: [/opt/p]}", Warned),
    ("growpart", "{devices: [/]}", Warned),
    // install:
    (
        "install.device",
        "/dev/vda",
        Applied(|c| {
            c.install
                .as_ref()
                .is_some_and(|i| i.device.as_deref() == Some("/dev/vda"))
        }),
    ),
    (
        "install.reboot",
        "true",
        Applied(|c| c.install.as_ref().is_some_and(|i| i.reboot)),
    ),
    (
        "install.poweroff",
        "true",
        Applied(|c| c.install.as_ref().is_some_and(|i| i.poweroff)),
    ),
    ("install.auto", "true", Warned),
    ("install.no-format", "true", Warned),
    ("install.force", "true", Warned),
    ("install.partitions", "{persistent: {size: 0}}", Warned),
    (
        "install.extra-partitions",
        "[{name: data, size: 100}]",
        Warned,
    ),
    ("install.part-table", "gpt", Warned),
    ("install.bind_mounts", "[/var/lib/wpa]", Warned),
    ("install.ephemeral_mounts", "[/var/cache]", Warned),
    ("install.extra-dirs-rootfs", "[/var/lib/x]", Warned),
    (
        "install.grub_options",
        "{extra_cmdline: \"fips=1\"}",
        Warned,
    ),
    ("install.grub-entry-name", "Edge", Warned),
    ("install.env", "[\"A=1\"]", Warned),
    ("install.image", "docker:quay.io/x:1", Warned),
    ("install.source", "oci:quay.io/x:1", Warned),
    ("install.system", "{size: 3000}", Warned),
    ("install.recovery-system", "{size: 3000}", Warned),
    ("install.passive", "{size: 3000}", Warned),
    ("install.bundles", "[{targets: [b]}]", Warned),
    ("install.skip_copy_kcrypt_plugin", "true", Warned),
    ("install.encrypted_partitions", "[COS_PERSISTENT]", Warned),
    ("install.nousers", "true", Warned),
    ("install.firmware", "efi", Warned),
    ("install.ssh_hardening", "true", Warned),
    ("install.allow-insecure-registries", "true", Warned),
    // stylus:
    (
        "stylus.site",
        "{name: store-1}",
        Applied(|c| {
            c.hub
                .as_ref()
                .is_some_and(|h| h.site.as_deref() == Some("store-1"))
        }),
    ),
    (
        "stylus.users",
        "[{name: op, passwd: op}]",
        Applied(|c| {
            c.stage("boot")
                .is_some_and(|s| s.steps.iter().any(|s| s.name == "stylus.users"))
        }),
    ),
    (
        "stylus.registryCredentials",
        "{domain: r.example, username: u, password: p}",
        Warned,
    ),
    ("stylus.externalRegistries", "{registries: []}", Warned),
    ("stylus.imageRedirectWebhook", "{enable: false}", Warned),
    ("stylus.debug", "true", Warned),
    ("stylus.trace", "true", Warned),
    ("stylus.disablePasswordUpdate", "true", Warned),
    ("stylus.disableTui", "true", Warned),
    ("stylus.includeTui", "true", Warned),
    ("stylus.enableMultiNode", "true", Warned),
    ("stylus.localUI", "{port: 5080}", Warned),
    ("stylus.featureGate", "UserDataForm", Warned),
    ("stylus.installationMode", "airgap", Warned),
    ("stylus.managementMode", "local", Warned),
    ("stylus.path", "/persistent", Warned),
    ("stylus.vip", "{skip: true}", Warned),
    // stylus.site:
    (
        "stylus.site.paletteEndpoint",
        "api.palette.example",
        Applied(|c| {
            c.hub
                .as_ref()
                .is_some_and(|h| h.endpoint.as_deref() == Some("https://api.palette.example"))
        }),
    ),
    (
        "stylus.site.edgeHostToken",
        "tok",
        Applied(|c| c.hub.as_ref().is_some_and(|h| h.token.is_some())),
    ),
    (
        "stylus.site.name",
        "store-1",
        Applied(|c| c.hub.as_ref().is_some_and(|h| h.site.is_some())),
    ),
    (
        "stylus.site.tags",
        "{city: lyon}",
        Applied(|c| c.hub.as_ref().is_some_and(|h| h.tags.len() == 1)),
    ),
    ("stylus.site.caCerts", "[\"not a certificate\"]", Checked),
    (
        "stylus.site.hostName",
        "store-1-node",
        Applied(|c| {
            has(
                c,
                |a| matches!(a, Action::Hostname(h) if h.hosts == HostsLine::Loopback),
            )
        }),
    ),
    (
        "stylus.site.ntpServers",
        "[ntp.example]",
        Applied(|c| has(c, |a| matches!(a, Action::Timesyncd(_)))),
    ),
    (
        "stylus.site.users",
        "[{name: op, passwd: op}]",
        Applied(|c| has(c, |a| matches!(a, Action::Users(u) if !u[0].lock_passwd))),
    ),
    ("stylus.site.projectName", "edge", Warned),
    ("stylus.site.projectUid", "abc", Warned),
    ("stylus.site.prefix", "edge", Warned),
    (
        "stylus.site.deviceUIDPaths",
        "[{name: /sys/class/dmi/id/product_uuid}]",
        Warned,
    ),
    (
        "stylus.site.registrationURL",
        "https://register.example",
        Warned,
    ),
    ("stylus.site.clusterId", "c1", Warned),
    ("stylus.site.clusterName", "c1", Warned),
    ("stylus.site.insecureSkipVerify", "true", Warned),
    ("stylus.site.tagsFromFile", "{fileName: /etc/tags}", Warned),
    (
        "stylus.site.tagsFromScript",
        "{scriptName: /bin/tags}",
        Warned,
    ),
    ("stylus.site.remoteShell", "{disable: true}", Warned),
    // stylus.site.network:
    (
        "stylus.site.network.httpProxy",
        "http://proxy.example:3128",
        Applied(|c| c.hub.as_ref().is_some_and(|h| h.proxy.is_some())),
    ),
    (
        "stylus.site.network.httpsProxy",
        "http://proxy.example:3128",
        Applied(|c| c.hub.as_ref().is_some_and(|h| h.proxy.is_some())),
    ),
    ("stylus.site.network.noProxy", "10.0.0.0/8", Warned),
    (
        "stylus.site.network.nameserver",
        "10.0.0.53",
        Applied(|c| {
            has(
                c,
                |a| matches!(a, Action::Dns(d) if d.nameservers == ["10.0.0.53"]),
            )
        }),
    ),
    (
        "stylus.site.network.interfaces",
        "{enp1s0: {type: static, ipAddress: 10.0.0.5/24, gateway: 10.0.0.1}}",
        Applied(network_file),
    ),
];

/// `#cloud-config` and the path as nested keys, the value on the last: the key is on the
/// line after its parents.
fn document(path: &str, value: &str) -> (String, usize) {
    let mut text = String::from("#cloud-config\n");
    let parts: Vec<&str> = path.split('.').collect();
    for (depth, key) in parts.iter().enumerate() {
        text.push_str(&"  ".repeat(depth));
        if depth + 1 == parts.len() {
            text.push_str(&format!("{key}: {value}\n"));
        } else {
            text.push_str(&format!("{key}:\n"));
        }
    }
    (text, parts.len() + 1)
}

#[test]
fn every_kairos_and_palette_key_is_applied_or_warned_about() {
    let mut failures = Vec::new();
    for (path, value, outcome) in TABLE {
        let (text, line) = document(path, value);
        let mut diags = Diagnostics::default();
        let config = decode::decode_text("t.yaml", &text, &mut diags);
        cairn_userdata::validate::check(&config, &mut diags);
        let key = path.rsplit('.').next().unwrap();
        let at_key: Vec<_> = diags
            .sorted()
            .into_iter()
            .filter(|d| d.location.pos.line == line)
            .collect();
        let warned = at_key
            .iter()
            .any(|d| d.severity == Severity::Warning && d.message.contains(&format!("`{key}`")));
        let errors: Vec<String> = diags.errors().map(ToString::to_string).collect();
        let ok = match outcome {
            Applied(check) => errors.is_empty() && at_key.is_empty() && check(&config),
            Warned => errors.is_empty() && warned,
            Checked => at_key.iter().any(|d| d.severity == Severity::Error),
            Label => diags.is_empty(),
        };
        if !ok {
            let all: Vec<String> = diags.sorted().iter().map(|d| d.to_string()).collect();
            failures.push(format!("{path}:\n{text}{}", all.join("\n")));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn the_table_covers_every_kairos_key_the_decoder_knows() {
    for (k, _) in KAIROS_KEYS {
        assert!(
            TABLE.iter().any(|(p, _, _)| p == k),
            "`{k}` is missing from the table"
        );
    }
}

#[test]
fn k3s_args_become_the_values_of_a_kubernetes_layer() {
    let mut diags = Diagnostics::default();
    decode::decode_text(
        "t.yaml",
        "k3s:\n  enabled: true\n  args:\n    - --disable=traefik\n    - --disable=servicelb\n    - --node-label\n    - site=lyon\n    - --write-kubeconfig-mode=0644\n  env:\n    K3S_TOKEN: x\n",
        &mut diags,
    );
    let w: Vec<String> = diags.warnings().map(|d| d.message.clone()).collect();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("`flavor: k3s`"), "{}", w[0]);
    assert!(
        w[0].contains(r#"values: {"disable":["traefik","servicelb"],"node-label":"site=lyon","write-kubeconfig-mode":"0644"}"#),
        "{}",
        w[0]
    );
    assert!(w[0].contains("`env` has no equivalent"), "{}", w[0]);
    assert!(
        !w[0].contains("K3S_TOKEN"),
        "no value of env is shown: {}",
        w[0]
    );
}

#[test]
fn key_sources_of_users_before_the_network_are_fetched_in_stage_network() {
    let mut diags = Diagnostics::default();
    let config = decode::decode_text(
        "t.yaml",
        "stylus:\n  site:\n    users:\n      - name: op\n        passwd: op\n        ssh_authorized_keys: [github:octo]\n",
        &mut diags,
    );
    let w: Vec<String> = diags.warnings().map(ToString::to_string).collect();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].starts_with("t.yaml:6:") && w[0].contains("stage `network` instead"),
        "{}",
        w[0]
    );
    let network = config.stage("network").expect("a network step");
    assert_eq!(network.steps[0].name, "stylus.site.users (keys)");
    assert!(
        matches!(&network.steps[0].actions[0], Action::AuthorizedKeys(k) if k[0].user == "op" && k[0].sources.len() == 1)
    );
    let boot = config.stage("boot").unwrap();
    assert!(matches!(&boot.steps[0].actions[0], Action::Users(u) if u[0].key_sources.is_empty()));
}
