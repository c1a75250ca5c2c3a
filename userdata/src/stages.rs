//! Stage names: which exist, their canonical order, and which run by default.
//!
//! Kairos-compatible names (each also with `.before`/`.after`), plus Cairn's Kubernetes
//! stages. `apply` runs the boot sequence by default; lifecycle hooks (install, upgrade,
//! reset, reconcile, Kubernetes) run only when named with `--stage`.

use crate::model::Frequency;

/// Base stage names in canonical order.
pub const BASE_ORDER: &[&str] = &[
    "rootfs",
    "initramfs",
    "fs",
    "boot",
    "first-boot",
    "network",
    "kubernetes",
    "cni",
    "profile.applied",
    "reconcile",
    "kairos-install.pre",
    "before-install",
    "after-install-chroot",
    "after-install",
    "kairos-install.after",
    "before-upgrade",
    "after-upgrade-chroot",
    "after-upgrade",
    "before-reset",
    "after-reset-chroot",
    "after-reset",
];

/// Base stages that `apply` runs when no `--stage` is given.
pub const DEFAULT_BASES: &[&str] = &["rootfs", "initramfs", "fs", "boot", "first-boot", "network"];

fn split(name: &str) -> (&str, u8) {
    if let Some(b) = name.strip_suffix(".before") {
        (b, 0)
    } else if let Some(b) = name.strip_suffix(".after") {
        // `kairos-install.after` is itself a base name.
        if BASE_ORDER.contains(&name) {
            (name, 1)
        } else {
            (b, 2)
        }
    } else {
        (name, 1)
    }
}

/// Is this a stage name Cairn knows (with optional `.before`/`.after`)?
pub fn is_known(name: &str) -> bool {
    BASE_ORDER.contains(&name) || BASE_ORDER.contains(&split(name).0)
}

/// Stages Kairos runs that Cairn has no moment for, with what runs them there: provider
/// hooks (`provider-kairos.bootstrap.after.<role>`, `<provider>.<stage>`), the agent's
/// bootstrap event and the trusted-boot install/upgrade/reset hooks (each also with
/// `.before`/`.after`). A step there is skipped with a warning, never an error: the rest of
/// the file still applies.
pub fn kairos_only(name: &str) -> Option<&'static str> {
    let base = split(name).0;
    if base.starts_with("provider-") && base.contains('.') {
        Some(
            "Kairos runs it from a provider plugin during its own cluster bootstrap; Cairn \
             installs Kubernetes from a cluster profile, and its closest stage is \
             `kubernetes.after`",
        )
    } else if base.starts_with("kairos-agent.") {
        Some("the Kairos agent runs it on its own bootstrap and phone-home events")
    } else if base.starts_with("kairos-uki-") || base.starts_with("kairos-") {
        Some("Kairos runs it from its own installer and trusted-boot upgrades")
    } else {
        None
    }
}

/// Stages that run before the network is up on a device (`rootfs` … `first-boot`).
pub fn before_network(name: &str) -> bool {
    let base = split(name).0;
    DEFAULT_BASES.contains(&base) && base != "network"
}

/// Sort key: base position, then before/main/after.
pub fn order_key(name: &str) -> (usize, u8) {
    let (base, phase) = split(name);
    let pos = BASE_ORDER
        .iter()
        .position(|b| *b == base)
        .unwrap_or(BASE_ORDER.len());
    (pos, phase)
}

pub fn runs_by_default(name: &str) -> bool {
    DEFAULT_BASES.contains(&split(name).0)
}

/// Every known name, for suggestions.
pub fn all_names() -> Vec<String> {
    let mut out = Vec::new();
    for b in BASE_ORDER {
        out.push(b.to_string());
        out.push(format!("{b}.before"));
        out.push(format!("{b}.after"));
    }
    out
}

/// How often commands of a step in this stage run unless the step says otherwise:
/// boot-sequence stages re-run their commands on every boot (yip's behaviour), `reconcile`
/// on every run, and lifecycle stages once.
pub fn default_frequency(stage: &str) -> Frequency {
    let base = split(stage).0;
    if base == "reconcile" {
        Frequency::Always
    } else if DEFAULT_BASES.contains(&base) && base != "first-boot" {
        Frequency::PerBoot
    } else {
        Frequency::Once
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_order() {
        assert!(is_known("boot.after"));
        assert!(is_known("kairos-install.after"));
        assert!(is_known("kairos-install.after.after"));
        assert!(is_known("kubernetes.before"));
        assert!(!is_known("bot"));
        assert!(order_key("boot.before") < order_key("boot"));
        assert!(order_key("boot") < order_key("boot.after"));
        assert!(order_key("boot.after") < order_key("network.before"));
        assert!(order_key("initramfs") < order_key("boot"));
        assert!(runs_by_default("network.after"));
        assert!(!runs_by_default("after-install"));
        assert_eq!(default_frequency("reconcile"), Frequency::Always);
        assert_eq!(default_frequency("boot"), Frequency::PerBoot);
        assert_eq!(default_frequency("after-install"), Frequency::Once);
    }

    #[test]
    fn kairos_only_stages() {
        for n in [
            "provider-kairos.bootstrap.after.k3s-ready",
            "provider-kairos.bootstrap.before.worker",
            "provider-rke2.bootstrap.after",
            "kairos-agent.bootstrap",
            "kairos-agent.bootstrap.after",
            "kairos-uki-install.pre",
            "kairos-uki-upgrade.after.before",
        ] {
            assert!(!is_known(n) && kairos_only(n).is_some(), "{n}");
        }
        for n in ["bot", "provider", "network.later", "kubernetes.after"] {
            assert!(kairos_only(n).is_none(), "{n}");
        }
        assert!(before_network("initramfs.before") && before_network("boot"));
        assert!(!before_network("network") && !before_network("reconcile"));
    }
}
