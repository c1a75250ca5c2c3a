//! CNI values and manifests, each with the one pod CIDR of the plan (§4.4–4.5).
//!
//! * Calico (tigera-operator chart or `Installation` resource): the first IP pool is the
//!   pod CIDR; pools given in `values` must use it too.
//! * Cilium: `ipam.mode: kubernetes` (use each Node's podCIDR, allocated from the flavor's
//!   cluster CIDR); if `values` choose `cluster-pool`, the pool list is set to the pod CIDR.
//! * Flannel: `net-conf.json` `Network` is the pod CIDR.

use cairn_proto::profile::{CniLayer, CniType};
use serde_json::{json, Value};

use super::render::{self, indent_block};
use super::{first_cidr, same_cidr, PlanError};

fn user_values(cni: &CniLayer) -> Result<Value, PlanError> {
    match &cni.values {
        Value::Null => Ok(json!({})),
        v @ Value::Object(_) => Ok(v.clone()),
        _ => Err(PlanError::new("cni.values", "values must be a mapping")),
    }
}

/// Calico `installation` values (tigera-operator chart / rke2-calico / `Installation.spec`).
fn calico_installation(
    cni: &CniLayer,
    pod_cidr: &str,
    ip_forwarding: bool,
) -> Result<Value, PlanError> {
    let user = user_values(cni)?;
    let cidr = first_cidr(pod_cidr);
    let mut base = json!({
        "installation": {
            "cni": {"type": "Calico"},
            "calicoNetwork": {
                "ipPools": [{
                    "cidr": cidr,
                    "encapsulation": "VXLANCrossSubnet",
                    "natOutgoing": "Enabled",
                    "nodeSelector": "all()",
                }],
            },
        },
    });
    if ip_forwarding {
        // k3s: Calico's CNI config needs container IP forwarding (k3s docs, §4.1).
        base["installation"]["calicoNetwork"]["containerIPForwarding"] = json!("Enabled");
    }
    if let Some(pools) = user.pointer("/installation/calicoNetwork/ipPools") {
        let Some(list) = pools.as_array() else {
            return Err(PlanError::new(
                "cni.values.installation.calicoNetwork.ipPools",
                "ipPools must be a list",
            ));
        };
        for (i, p) in list.iter().enumerate() {
            let c = p.get("cidr").and_then(Value::as_str).unwrap_or("");
            if !same_cidr(c, &cidr) {
                return Err(PlanError::new(
                    format!("cni.values.installation.calicoNetwork.ipPools[{i}].cidr"),
                    format!("the Calico IP pool `{c}` differs from the pod network {cidr} (cni.pod_cidr)"),
                ));
            }
        }
    }
    render::merge(&mut base, &user);
    Ok(base)
}

/// Cilium chart values (upstream `cilium` and `rke2-cilium` share the shape).
fn cilium_values(cni: &CniLayer, pod_cidr: &str) -> Result<Value, PlanError> {
    let user = user_values(cni)?;
    let mode = user
        .pointer("/ipam/mode")
        .and_then(Value::as_str)
        .unwrap_or("kubernetes")
        .to_string();
    let mut base = json!({"ipam": {"mode": mode}});
    match mode.as_str() {
        "kubernetes" => {}
        "cluster-pool" => {
            let cidr = first_cidr(pod_cidr);
            if let Some(list) = user.pointer("/ipam/operator/clusterPoolIPv4PodCIDRList") {
                let ok = list
                    .as_array()
                    .is_some_and(|l| l.iter().all(|c| c.as_str().is_some_and(|c| same_cidr(c, &cidr))));
                if !ok {
                    return Err(PlanError::new(
                        "cni.values.ipam.operator.clusterPoolIPv4PodCIDRList",
                        format!("the Cilium cluster pool must be the pod network {cidr} (cni.pod_cidr)"),
                    ));
                }
            }
            base["ipam"]["operator"] = json!({"clusterPoolIPv4PodCIDRList": [cidr]});
        }
        other => {
            return Err(PlanError::new(
                "cni.values.ipam.mode",
                format!("ipam.mode `{other}` cannot be kept consistent with the pod network; use `kubernetes` or `cluster-pool`"),
            ))
        }
    }
    let mut out = user;
    render::merge(&mut out, &base);
    Ok(out)
}

/// Flannel's backend from `values.backend` (default `vxlan`); other keys are refused.
pub fn flannel_backend(cni: &CniLayer, allowed: &[&str]) -> Result<String, PlanError> {
    let user = user_values(cni)?;
    let mut backend = "vxlan".to_string();
    if let Value::Object(m) = &user {
        for (k, v) in m {
            match (k.as_str(), v) {
                ("backend", Value::String(s)) => backend = s.clone(),
                (k, _) if allowed.contains(&k) => {}
                (k, _) => {
                    let mut keys = vec!["backend"];
                    keys.extend_from_slice(allowed);
                    return Err(PlanError::new(
                        format!("cni.values.{k}"),
                        format!("unknown Flannel value; known: {}", keys.join(", ")),
                    ));
                }
            }
        }
    }
    if !matches!(backend.as_str(), "vxlan" | "host-gw" | "wireguard-native") {
        return Err(PlanError::new(
            "cni.values.backend",
            format!("Flannel backend `{backend}` is not one of vxlan, host-gw, wireguard-native"),
        ));
    }
    Ok(backend)
}

/// Helm values for the CNI chart (upstream or RKE2's `rke2-<cni>`, same shapes), the pod
/// CIDR enforced.
pub fn chart_values(
    cni: &CniLayer,
    pod_cidr: &str,
    ip_forwarding: bool,
) -> Result<Value, PlanError> {
    match cni.cni {
        CniType::Calico => calico_installation(cni, pod_cidr, ip_forwarding),
        CniType::Cilium => cilium_values(cni, pod_cidr),
        CniType::Flannel => {
            let backend = flannel_backend(cni, &[])?;
            // rke2-flannel and the upstream flannel chart: `podCidr` feeds net-conf.json.
            Ok(json!({
                "podCidr": first_cidr(pod_cidr),
                "flannel": {"backend": backend},
            }))
        }
    }
}

/// A `helm.cattle.io/v1` resource (`HelmChart` or `HelmChartConfig`) with `valuesContent`.
pub fn helm_resource(kind: &str, name: &str, spec: &Value, values: &Value) -> String {
    let mut head = json!({
        "apiVersion": "helm.cattle.io/v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": "kube-system"},
    });
    let mut text = String::from(super::HEADER);
    let mut spec = spec.clone();
    if spec.as_object().is_some_and(|m| m.is_empty()) {
        spec = json!({});
    }
    head["spec"] = spec;
    // serde_json maps are sorted, so `spec` is the last key and `valuesContent` appended
    // below lands inside it.
    let mut body = render::yaml(&head);
    if body.ends_with("spec: {}\n") {
        body.truncate(body.len() - "spec: {}\n".len());
        body.push_str("spec:\n");
    }
    text.push_str(&body);
    text.push_str("  valuesContent: |-\n");
    text.push_str(&indent_block(render::yaml(values).trim_end(), 4));
    text
}

/// The k3s `HelmChart` for Calico or Cilium (Flannel is built into k3s).
pub fn k3s_helm_chart(cni: &CniLayer, values: &Value) -> (String, String) {
    let version = cni.version.trim();
    let (name, spec) = match cni.cni {
        CniType::Calico => (
            "tigera-operator",
            json!({
                "repo": "https://docs.tigera.io/calico/charts",
                "chart": "tigera-operator",
                "version": version,
                "targetNamespace": "tigera-operator",
                "createNamespace": true,
                "bootstrap": true,
            }),
        ),
        _ => (
            "cilium",
            json!({
                "repo": "https://helm.cilium.io/",
                "chart": "cilium",
                "version": version.trim_start_matches('v'),
                "targetNamespace": "kube-system",
                "bootstrap": true,
            }),
        ),
    };
    (
        name.to_string(),
        helm_resource("HelmChart", name, &spec, values),
    )
}

/// Calico's `custom-resources.yaml` for the operator: `Installation` + `APIServer`.
pub fn calico_custom_resources(installation: &Value) -> String {
    let spec = installation
        .get("installation")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let inst = json!({
        "apiVersion": "operator.tigera.io/v1",
        "kind": "Installation",
        "metadata": {"name": "default"},
        "spec": spec,
    });
    let api = json!({
        "apiVersion": "operator.tigera.io/v1",
        "kind": "APIServer",
        "metadata": {"name": "default"},
        "spec": {},
    });
    format!(
        "{}{}---\n{}",
        super::HEADER,
        render::yaml(&inst),
        render::yaml(&api)
    )
}

/// The standalone Flannel manifest (kube-flannel.yml) with `net-conf.json` on the pod CIDR.
pub fn flannel_manifest(cni: &CniLayer, pod_cidr: &str) -> Result<String, PlanError> {
    let backend = flannel_backend(cni, &["cniPluginVersion", "registry"])?;
    let user = user_values(cni)?;
    let plugin = user
        .get("cniPluginVersion")
        .and_then(Value::as_str)
        .unwrap_or("v1.5.1-flannel2");
    let registry = user
        .get("registry")
        .and_then(Value::as_str)
        .unwrap_or("ghcr.io/flannel-io");
    let version = cni.version.trim();
    let net_conf = serde_json::to_string_pretty(&json!({
        "Network": first_cidr(pod_cidr),
        "EnableNFTables": false,
        "Backend": {"Type": backend},
    }))
    .unwrap_or_default();
    let cni_conf = serde_json::to_string_pretty(&json!({
        "name": "cbr0",
        "cniVersion": "0.3.1",
        "plugins": [
            {"type": "flannel", "delegate": {"hairpinMode": true, "isDefaultGateway": true}},
            {"type": "portmap", "capabilities": {"portMappings": true}},
        ],
    }))
    .unwrap_or_default();
    Ok(format!(
        r#"{header}apiVersion: v1
kind: Namespace
metadata:
  name: kube-flannel
  labels:
    k8s-app: flannel
    pod-security.kubernetes.io/enforce: privileged
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: flannel
  namespace: kube-flannel
  labels:
    k8s-app: flannel
---
kind: ClusterRole
apiVersion: rbac.authorization.k8s.io/v1
metadata:
  name: flannel
  labels:
    k8s-app: flannel
rules:
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get"]
- apiGroups: [""]
  resources: ["nodes"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["nodes/status"]
  verbs: ["patch"]
---
kind: ClusterRoleBinding
apiVersion: rbac.authorization.k8s.io/v1
metadata:
  name: flannel
  labels:
    k8s-app: flannel
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: flannel
subjects:
- kind: ServiceAccount
  name: flannel
  namespace: kube-flannel
---
kind: ConfigMap
apiVersion: v1
metadata:
  name: kube-flannel-cfg
  namespace: kube-flannel
  labels:
    tier: node
    k8s-app: flannel
    app: flannel
data:
  cni-conf.json: |
{cni_conf}  net-conf.json: |
{net_conf}---
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: kube-flannel-ds
  namespace: kube-flannel
  labels:
    tier: node
    app: flannel
    k8s-app: flannel
spec:
  selector:
    matchLabels:
      app: flannel
  template:
    metadata:
      labels:
        tier: node
        app: flannel
    spec:
      affinity:
        nodeAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            nodeSelectorTerms:
            - matchExpressions:
              - key: kubernetes.io/os
                operator: In
                values: ["linux"]
      hostNetwork: true
      priorityClassName: system-node-critical
      tolerations:
      - operator: Exists
        effect: NoSchedule
      serviceAccountName: flannel
      initContainers:
      - name: install-cni-plugin
        image: {registry}/flannel-cni-plugin:{plugin}
        command: ["cp"]
        args: ["-f", "/flannel", "/opt/cni/bin/flannel"]
        volumeMounts:
        - name: cni-plugin
          mountPath: /opt/cni/bin
      - name: install-cni
        image: {registry}/flannel:{version}
        command: ["cp"]
        args: ["-f", "/etc/kube-flannel/cni-conf.json", "/etc/cni/net.d/10-flannel.conflist"]
        volumeMounts:
        - name: cni
          mountPath: /etc/cni/net.d
        - name: flannel-cfg
          mountPath: /etc/kube-flannel/
      containers:
      - name: kube-flannel
        image: {registry}/flannel:{version}
        command: ["/opt/bin/flanneld"]
        args: ["--ip-masq", "--kube-subnet-mgr"]
        resources:
          requests:
            cpu: "100m"
            memory: "50Mi"
        securityContext:
          privileged: false
          capabilities:
            add: ["NET_ADMIN", "NET_RAW"]
        env:
        - name: POD_NAME
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
        - name: POD_NAMESPACE
          valueFrom:
            fieldRef:
              fieldPath: metadata.namespace
        - name: EVENT_QUEUE_DEPTH
          value: "5000"
        volumeMounts:
        - name: run
          mountPath: /run/flannel
        - name: flannel-cfg
          mountPath: /etc/kube-flannel/
        - name: xtables-lock
          mountPath: /run/xtables.lock
      volumes:
      - name: run
        hostPath:
          path: /run/flannel
      - name: cni-plugin
        hostPath:
          path: /opt/cni/bin
      - name: cni
        hostPath:
          path: /etc/cni/net.d
      - name: flannel-cfg
        configMap:
          name: kube-flannel-cfg
      - name: xtables-lock
        hostPath:
          path: /run/xtables.lock
          type: FileOrCreate
"#,
        header = super::HEADER,
        cni_conf = indent_block(&cni_conf, 4),
        net_conf = indent_block(&net_conf, 4),
    ))
}
