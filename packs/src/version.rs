//! Version strings as the projects write them.

/// `major.minor.patch` of a version such as `v1.31.4+k3s1`, `3.29.1`, `v0.26.2`; the
/// `v` prefix and anything after `+` or `-` are ignored; a missing patch is 0.
pub fn semver(v: &str) -> Option<(u32, u32, u32)> {
    let v = v.trim();
    let v = v.strip_prefix('v').unwrap_or(v);
    let core = v.split(['+', '-']).next().unwrap_or(v);
    let mut parts = core.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    let patch = match parts.next() {
        Some(p) => p.parse().ok()?,
        None => 0,
    };
    if parts.next().is_some() {
        return None;
    }
    Some((major, minor, patch))
}

/// The Kubernetes minor (`1.31` → `(1, 31)`) of a flavor's version: k3s `v1.31.4+k3s1`,
/// RKE2 `v1.31.4+rke2r1` and kubeadm `v1.31.4` all carry it first.
pub fn kubernetes_minor(v: &str) -> Option<(u32, u32)> {
    semver(v).map(|(a, b, _)| (a, b))
}

/// `v` with a leading `v` (GitHub tags of runc, CNI plugins, crictl, Helm, Calico).
pub fn with_v(v: &str) -> String {
    let v = v.trim();
    if v.starts_with('v') {
        v.to_string()
    } else {
        format!("v{v}")
    }
}

/// `v` without a leading `v` (containerd's file names, Cilium's charts).
pub fn without_v(v: &str) -> String {
    let v = v.trim();
    v.strip_prefix('v').unwrap_or(v).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_as_projects_write_them() {
        assert_eq!(semver("v1.31.4+k3s1"), Some((1, 31, 4)));
        assert_eq!(semver("v1.30.8+rke2r1"), Some((1, 30, 8)));
        assert_eq!(semver("3.29.1"), Some((3, 29, 1)));
        assert_eq!(semver("1.17.0-rc.1"), Some((1, 17, 0)));
        assert_eq!(semver("1.16"), Some((1, 16, 0)));
        assert_eq!(semver("latest"), None);
        assert_eq!(semver("1.2.3.4"), None);
        assert_eq!(kubernetes_minor("v1.31.4"), Some((1, 31)));
        assert_eq!(with_v("1.2.3"), "v1.2.3");
        assert_eq!(without_v("v1.7.24"), "1.7.24");
    }
}
