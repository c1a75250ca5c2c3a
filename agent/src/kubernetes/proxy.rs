//! An HTTP(S) proxy for the node's services, the way the distributions take it: k3s and
//! RKE2 read `HTTP_PROXY`/`HTTPS_PROXY`/`NO_PROXY` from their unit's env file (k3s's
//! install script copies them there), kubeadm's containerd from a systemd drop-in.
//! `NO_PROXY` always gets what must never go through the proxy: loopback, the pod and
//! service networks, the cluster's service domains and the node itself — otherwise pulls
//! work but in-cluster traffic breaks (the provider-rke2 rule, reference/k8s-install.md).

use super::{file, Plan};

/// Proxy settings, usually the agent's own environment ([`Proxy::from_env`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Proxy {
    pub http: Option<String>,
    pub https: Option<String>,
    pub no_proxy: Vec<String>,
}

impl Proxy {
    /// `HTTP_PROXY`/`HTTPS_PROXY`/`NO_PROXY` (or their lower-case spellings); `None`
    /// when neither proxy is set.
    pub fn from_env() -> Option<Proxy> {
        Proxy::from_lookup(&|k| std::env::var(k).ok())
    }

    pub fn from_lookup(get: &dyn Fn(&str) -> Option<String>) -> Option<Proxy> {
        let var = |a: &str, b: &str| get(a).or_else(|| get(b)).filter(|v| !v.trim().is_empty());
        let http = var("HTTP_PROXY", "http_proxy");
        let https = var("HTTPS_PROXY", "https_proxy");
        if http.is_none() && https.is_none() {
            return None;
        }
        let no_proxy = var("NO_PROXY", "no_proxy")
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        Some(Proxy {
            http,
            https,
            no_proxy,
        })
    }

    /// The complete `NO_PROXY` for a plan: the configured entries, then loopback, the
    /// pod and service networks, the service domains and the node name; each once.
    pub fn no_proxy_for(&self, plan: &Plan) -> String {
        let mut out: Vec<String> = Vec::new();
        let mut add = |s: &str| {
            let s = s.trim();
            if !s.is_empty() && !out.iter().any(|o| o == s) {
                out.push(s.to_string());
            }
        };
        for e in &self.no_proxy {
            add(e);
        }
        for e in ["127.0.0.1", "localhost", "::1"] {
            add(e);
        }
        for c in plan.pod_cidr.split(',').chain(plan.service_cidr.split(',')) {
            add(c);
        }
        for e in [
            ".svc",
            ".svc.cluster",
            ".svc.cluster.local",
            ".cluster.local",
        ] {
            add(e);
        }
        add(&plan.node_name);
        out.join(",")
    }

    fn env_lines(&self, plan: &Plan) -> String {
        let mut s = String::new();
        if let Some(h) = &self.http {
            s.push_str(&format!("HTTP_PROXY={h}\n"));
        }
        if let Some(h) = &self.https {
            s.push_str(&format!("HTTPS_PROXY={h}\n"));
        }
        s.push_str(&format!("NO_PROXY={}\n", self.no_proxy_for(plan)));
        s
    }
}

/// Put the proxy into the plan's service environment, the way its flavor takes it
/// ([`super::Distribution::apply_proxy`]).
pub fn apply(plan: &mut Plan, proxy: &Proxy) {
    let env = proxy.env_lines(plan);
    plan.distribution().apply_proxy(plan, &env);
}

/// k3s/RKE2: append the lines to the service's env file (`<service>.service.env`, or
/// RKE2's `<service>.env`) already in the plan.
pub(crate) fn append_to_env_file(plan: &mut Plan, env: &str) {
    let suffix = format!("{}.service.env", plan.service);
    let rke2_env = format!("/{}.env", plan.service);
    for f in plan.files.iter_mut() {
        if f.path.ends_with(&suffix) || f.path.ends_with(&rke2_env) {
            if !f.content.is_empty() && !f.content.ends_with('\n') {
                f.content.push('\n');
            }
            f.content.push_str(env);
        }
    }
}

/// kubeadm: an `http-proxy.conf` systemd drop-in with the lines as `Environment=` for
/// each unit.
pub(crate) fn systemd_dropins(plan: &mut Plan, env: &str, units: &[&str]) {
    let mut dropin = String::from("[Service]\n");
    for line in env.lines() {
        dropin.push_str(&format!("Environment=\"{line}\"\n"));
    }
    for unit in units {
        plan.files.push(file(
            &format!("/etc/systemd/system/{unit}.service.d/http-proxy.conf"),
            dropin.clone(),
            0o644,
        ));
    }
}
