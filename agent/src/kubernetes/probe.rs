//! Readiness probes, done the way an operator would by hand: the flavor's own `kubectl`
//! with the flavor's admin kubeconfig, run inside the target (`kubectl get --raw /readyz`,
//! `kubectl get node NAME -o json`, `kubectl get daemonset -o json`), and the service
//! manager's view (`systemctl is-active`, `journalctl -u`). Going through kubectl rather
//! than talking HTTPS ourselves means the kubeconfig the flavor wrote is exercised exactly
//! as a person would use it, with its CA and client certificate.

use std::time::Duration;

use cairn_proto::profile::CniType;
use serde_json::Value;

use super::{CniDelivery, Plan};
use crate::host::{Cmd, Host};

/// How long one probe command may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(20);

/// The flavor's kubectl, as argv: k3s's multi-call binary, RKE2's kubectl (which RKE2
/// unpacks into its data dir on start, not on PATH), kubeadm's `kubectl` artifact.
pub fn kubectl(plan: &Plan) -> Vec<String> {
    plan.distribution().kubectl()
}

/// A kubectl command with the plan's admin kubeconfig.
pub fn kubectl_cmd(plan: &Plan, args: &[&str]) -> Cmd {
    let argv = kubectl(plan);
    let mut cmd = Cmd::new(argv[0].clone()).args(argv[1..].iter().cloned());
    if let Some(kc) = &plan.kubeconfig {
        cmd = cmd.arg("--kubeconfig").arg(kc.clone());
    }
    cmd.args(args.iter().copied()).timeout(PROBE_TIMEOUT)
}

/// One probe's answer: ready, or what was seen instead (kept for the timeout message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Ready(String),
    NotYet(String),
}

/// Why a probe command gave no answer (shown as what was seen last).
#[derive(Debug, thiserror::Error)]
enum ProbeError {
    #[error("exit status {status}: {tail}")]
    Exit { status: i32, tail: String },
    #[error(transparent)]
    Run(#[from] crate::host::RunError),
}

fn run(host: &Host, cmd: Cmd) -> Result<String, ProbeError> {
    let out = host.run_in_target(cmd)?;
    if out.status == 0 {
        return Ok(out.stdout_str());
    }
    let mut tail = crate::host::runner::tail(&out.stderr);
    if tail.is_empty() {
        tail = crate::host::runner::tail(&out.stdout);
    }
    Err(ProbeError::Exit {
        status: out.status,
        tail,
    })
}

/// `kubectl get --raw /readyz` answers `ok`.
pub fn api_ready(host: &Host, plan: &Plan) -> Seen {
    match run(host, kubectl_cmd(plan, &["get", "--raw", "/readyz"])) {
        Ok(out) if out.trim() == "ok" => Seen::Ready("/readyz: ok".into()),
        Ok(out) => Seen::NotYet(format!("/readyz answered `{}`", out.trim())),
        Err(e) => Seen::NotYet(format!("/readyz: {e}")),
    }
}

/// The node's `Ready` condition is `True`; otherwise the conditions are what was seen.
pub fn node_ready(host: &Host, plan: &Plan, node: &str) -> Seen {
    let out = match run(
        host,
        kubectl_cmd(plan, &["get", "node", node, "-o", "json"]),
    ) {
        Ok(o) => o,
        Err(e) => return Seen::NotYet(format!("node {node}: {e}")),
    };
    let v: Value = match serde_json::from_str(&out) {
        Ok(v) => v,
        Err(e) => return Seen::NotYet(format!("node {node}: unreadable JSON from kubectl: {e}")),
    };
    let conditions = v
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let summary: Vec<String> = conditions
        .iter()
        .map(|c| {
            let s = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            let mut line = format!("{}={}", s("type"), s("status"));
            let (reason, msg) = (s("reason"), s("message"));
            if !reason.is_empty() {
                line.push_str(&format!(" ({reason})"));
            }
            if !msg.is_empty() {
                line.push_str(&format!(": {msg}"));
            }
            line
        })
        .collect();
    let ready = conditions.iter().any(|c| {
        c.get("type").and_then(Value::as_str) == Some("Ready")
            && c.get("status").and_then(Value::as_str) == Some("True")
    });
    let text = if summary.is_empty() {
        format!("node {node}: no conditions reported yet")
    } else {
        format!("node {node} conditions: {}", summary.join("; "))
    };
    if ready {
        Seen::Ready(text)
    } else {
        Seen::NotYet(text)
    }
}

/// The DaemonSet that carries the CNI, as (namespace, name); `None` when the CNI runs
/// inside the distribution (k3s Flannel), where the node's `Ready` and its pod CIDR are
/// the signal.
pub fn cni_daemonset(plan: &Plan) -> Option<(&'static str, &'static str)> {
    if matches!(plan.cni_delivery, CniDelivery::Embedded) {
        return None;
    }
    Some(match plan.cni {
        CniType::Calico => ("calico-system", "calico-node"),
        CniType::Cilium => ("kube-system", "cilium"),
        CniType::Flannel => ("kube-flannel", "kube-flannel-ds"),
    })
}

/// The CNI is rolled out: its DaemonSet has every scheduled pod ready and updated, or,
/// for an embedded CNI, the node has a pod CIDR inside the plan's pod network.
pub fn cni_ready(host: &Host, plan: &Plan, node: &str) -> Seen {
    let Some((ns, name)) = cni_daemonset(plan) else {
        let out = match run(
            host,
            kubectl_cmd(plan, &["get", "node", node, "-o", "json"]),
        ) {
            Ok(o) => o,
            Err(e) => return Seen::NotYet(format!("node {node}: {e}")),
        };
        let v: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
        let cidr = v
            .pointer("/spec/podCIDR")
            .and_then(Value::as_str)
            .unwrap_or("");
        if cidr.is_empty() {
            return Seen::NotYet(format!("node {node} has no pod CIDR yet"));
        }
        let inside = match (
            super::render::Cidr::parse(cidr),
            super::render::Cidr::parse(&super::first_cidr(&plan.pod_cidr)),
        ) {
            (Ok(a), Ok(b)) => a.overlaps(&b),
            _ => false,
        };
        return if inside {
            Seen::Ready(format!("node {node} pod CIDR {cidr}"))
        } else {
            Seen::NotYet(format!(
                "node {node} pod CIDR {cidr} is outside the pod network {}",
                plan.pod_cidr
            ))
        };
    };
    let out = match run(
        host,
        kubectl_cmd(plan, &["get", "daemonset", name, "-n", ns, "-o", "json"]),
    ) {
        Ok(o) => o,
        Err(e) => return Seen::NotYet(format!("daemonset {ns}/{name}: {e}")),
    };
    let v: Value = match serde_json::from_str(&out) {
        Ok(v) => v,
        Err(e) => return Seen::NotYet(format!("daemonset {ns}/{name}: unreadable JSON: {e}")),
    };
    let n = |k: &str| v.pointer(&format!("/status/{k}")).and_then(Value::as_u64);
    let desired = n("desiredNumberScheduled").unwrap_or(0);
    let ready = n("numberReady").unwrap_or(0);
    let updated = n("updatedNumberScheduled").unwrap_or(ready);
    let text = format!("daemonset {ns}/{name}: {ready}/{desired} ready, {updated} updated");
    if desired > 0 && ready == desired && updated == desired {
        Seen::Ready(text)
    } else {
        Seen::NotYet(text)
    }
}

/// Is the unit active (`systemctl is-active --quiet`)?
pub fn is_active(host: &Host, unit: &str) -> bool {
    host.run_in_target(Cmd::new("systemctl").args(["is-active", "--quiet", unit]))
        .is_ok_and(|o| o.status == 0)
}

/// The last lines the unit logged (`journalctl -u UNIT -n 20`), for error messages.
pub fn log_tail(host: &Host, unit: &str) -> String {
    let cmd = Cmd::new("journalctl")
        .args(["-u", unit, "-n", "20", "--no-pager", "-o", "cat"])
        .timeout(Duration::from_secs(10));
    match host.run_in_target(cmd) {
        Ok(o) => {
            let t = crate::host::runner::tail(&o.stdout);
            if t.is_empty() {
                "(no log lines)".into()
            } else {
                t
            }
        }
        Err(e) => format!("(no log: {e})"),
    }
}
