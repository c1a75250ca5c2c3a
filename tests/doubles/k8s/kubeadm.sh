# kubeadm double: `kubeadm init|join --config FILE` (v1beta4 only), preflight against a
# running containerd and an existing control plane, then the kubelet-start phase through
# `systemctl restart kubelet` and wait-control-plane, like the real one.
ME=kubeadm

init_main() {
  [ "${1:-}" = --config ] && [ -n "${2:-}" ] || die "the double expects: kubeadm init --config FILE [--upload-certs]"
  f=$2
  [ -f "$f" ] || die "unable to read config from \"$f\": no such file or directory"
  grep -q '^apiVersion: "\?kubeadm.k8s.io/v1beta4' "$f" || die "$f: no kubeadm.k8s.io/v1beta4 configuration"
  grep -q '^kind: "\?InitConfiguration' "$f" || die "$f: no InitConfiguration"
  grep -q '^kind: "\?ClusterConfiguration' "$f" || die "$f: no ClusterConfiguration"
  [ -e /etc/kubernetes/manifests/kube-apiserver.yaml ] && die "[preflight] Some fatal errors occurred:
	[ERROR FileAvailable--etc-kubernetes-manifests-kube-apiserver.yaml]: /etc/kubernetes/manifests/kube-apiserver.yaml already exists"
  systemctl is-active --quiet containerd.service || die "[preflight] Some fatal errors occurred:
	[ERROR CRI]: container runtime is not running: validate service connection: unix:///var/run/containerd/containerd.sock"
  pod=$(sed -n 's/^[[:space:]]*podSubnet:[[:space:]]*//p' "$f" | head -n 1 | unq)
  [ -n "$pod" ] || say "W: no podSubnet: the node gets no pod CIDR"
  node=$(sed -n '/^nodeRegistration:/,/^[a-z]/s/^  name:[[:space:]]*//p' "$f" | head -n 1 | unq)
  [ -n "$node" ] || node=$(cat /etc/hostname 2>/dev/null || echo localhost)
  driver=$(sed -n 's/^cgroupDriver:[[:space:]]*//p' "$f" | head -n 1 | unq)
  [ -n "$driver" ] || driver=systemd
  mkdir -p /etc/kubernetes/manifests /etc/kubernetes/pki /var/lib/kubelet
  for c in kube-apiserver kube-controller-manager kube-scheduler etcd; do
    echo "# static pod $c (double)" > /etc/kubernetes/manifests/$c.yaml
  done
  write_kubeconfig /etc/kubernetes/admin.conf 6443
  write_kubeconfig /etc/kubernetes/super-admin.conf 6443
  write_kubeconfig /etc/kubernetes/kubelet.conf 6443
  printf 'apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\ncgroupDriver: %s\n' "$driver" > /var/lib/kubelet/config.yaml
  echo "KUBELET_KUBEADM_ARGS=\"--container-runtime-endpoint=unix:///var/run/containerd/containerd.sock --hostname-override=$node\"" > /var/lib/kubelet/kubeadm-flags.env
  echo "$pod" > "$STATE/cluster-cidr"
  echo "$DOUBLE_VERSION $DOUBLE_ARCH" > "$STATE/version"
  echo "[kubelet-start] Starting the kubelet"
  systemctl restart kubelet.service || die "[kubelet-start] the kubelet did not start"
  i=0
  while [ ! -f "$STATE/apiserver-ready" ]; do
    i=$((i + 1))
    [ $i -gt 300 ] && die "[wait-control-plane] the API server did not come up: timed out waiting for the condition"
    sleep 0.1
  done
  echo "Your Kubernetes control-plane has initialized successfully!"
}

join_main() {
  [ "${1:-}" = --config ] && [ -n "${2:-}" ] || die "the double expects: kubeadm join --config FILE"
  grep -q '^kind: "\?JoinConfiguration' "$2" || die "$2: no JoinConfiguration"
  grep -q 'token:' "$2" || die "$2: discovery needs a bootstrap token"
  write_kubeconfig /etc/kubernetes/kubelet.conf 6443
  systemctl restart kubelet.service
}

# `kubeadm upgrade apply VERSION --yes`: only to this kubeadm's own version, with the
# control plane up; `kubeadm upgrade node` on other nodes.
upgrade_main() {
  case ${1:-} in
    apply)
      [ "${2:-}" = "$DOUBLE_VERSION" ] || die "[upgrade/version] FATAL: the specified version to upgrade to \"${2:-}\" is not the kubeadm version \"$DOUBLE_VERSION\""
      [ "${3:-}" = --yes ] || die "[upgrade] the double expects --yes (no prompt)"
      api_up || die "[upgrade/health] FATAL: the API server is not reachable"
      echo "$DOUBLE_VERSION upgraded" >> "$STATE/upgrades"
      echo "[upgrade/successful] SUCCESS! Your cluster was upgraded to \"$DOUBLE_VERSION\"." ;;
    node) echo "node $DOUBLE_VERSION" >> "$STATE/upgrades"; echo "[upgrade] The configuration for this node was successfully updated!" ;;
    *) die "unknown command \"upgrade ${1:-}\"" ;;
  esac
}

case ${1:-} in
  init) shift; init_main "$@" ;;
  upgrade) shift; upgrade_main "$@" ;;
  join) shift; join_main "$@" ;;
  version) echo "kubeadm version: &version.Info{GitVersion:\"$DOUBLE_VERSION\"}" ;;
  *) die "unknown command \"${1:-}\" for \"kubeadm\"" ;;
esac
