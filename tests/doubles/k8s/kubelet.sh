# kubelet double: the flags kubeadm's drop-in and kubeadm-flags.env give it; refuses to run
# without its config (as the real one crash-loops before `kubeadm init`), without the CRI
# socket, or when its cgroup driver is systemd and containerd's runc is not (SystemdCgroup).
# With the control plane's static pod manifests present it stands in for the API server.
ME=kubelet
[ "$DOUBLE_FAIL" = start ] && die "E: this double ($DOUBLE_VERSION) is built to fail at start"
config=; kubeconfig=; endpoint=; node=$(cat /etc/hostname 2>/dev/null || echo localhost)
for a in "$@"; do
  case $a in
    --config=*) config=${a#*=} ;;
    --kubeconfig=*) kubeconfig=${a#*=} ;;
    --bootstrap-kubeconfig=*) ;;
    --container-runtime-endpoint=*) endpoint=${a#*=} ;;
    --hostname-override=*) node=${a#*=} ;;
    --pod-infra-container-image=*|--node-ip=*|--node-labels=*|--register-with-taints=*) ;;
    --version) echo "Kubernetes $DOUBLE_VERSION"; exit 0 ;;
    *) die "unknown flag: $a" ;;
  esac
done
[ -n "$config" ] && [ -f "$config" ] || die "E: failed to load kubelet config file, path: ${config:-none}, error: open ${config:-none}: no such file or directory"
[ -n "$kubeconfig" ] && [ -f "$kubeconfig" ] || die "E: unable to load bootstrap kubeconfig: stat ${kubeconfig:-none}: no such file or directory"
[ -n "$endpoint" ] || die "E: --container-runtime-endpoint is not set"
sock=${endpoint#unix://}
[ -e "$sock" ] || die "E: validate service connection: dial unix $sock: connect: no such file or directory"
driver=$(sed -n 's/^cgroupDriver:[[:space:]]*//p' "$config" | unq)
if [ "$driver" = systemd ]; then
  grep -q 'SystemdCgroup = true' /etc/containerd/config.toml 2>/dev/null || die "E: failed to run Kubelet: misconfiguration: kubelet cgroup driver: \"systemd\" is different from the container runtime's: \"cgroupfs\""
fi
say "kubelet double $DOUBLE_VERSION ($DOUBLE_ARCH) running as $node"
notify_ready
if [ -f /etc/kubernetes/manifests/kube-apiserver.yaml ]; then
  echo $$ > "$STATE/apiserver"
  sleep 0.2
  : > "$STATE/apiserver-ready"
fi
cidr=$(cat "$STATE/cluster-cidr" 2>/dev/null)
if [ -n "$cidr" ]; then node_cidr "$cidr" > "$STATE/nodes/$node"; else : > "$STATE/nodes/$node"; fi
serve_forever
