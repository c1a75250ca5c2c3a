# k3s double: `k3s server|agent` read /etc/rancher/k3s/config.yaml(.d) — flags on the
# command line are refused, Cairn's contract is config files only — and `k3s kubectl`.
ME=k3s
CFG=/etc/rancher/k3s
cfg() { yaml_get "$1" $CFG/config.yaml $(ls $CFG/config.yaml.d/*.yaml 2>/dev/null); }

server_main() {
  [ "$DOUBLE_FAIL" = start ] && die "level=fatal msg=\"starting kubernetes: this double ($DOUBLE_VERSION) is built to fail at start\""
  [ $# -eq 0 ] || die "unexpected arguments \"$*\": settings belong in $CFG/config.yaml.d"
  cidr=$(cfg cluster-cidr); [ -n "$cidr" ] || cidr=10.42.0.0/16
  backend=$(cfg flannel-backend); [ -n "$backend" ] || backend=vxlan
  netpol=$(cfg disable-network-policy)
  node=$(cfg node-name); [ -n "$node" ] || node=$(cat /etc/hostname 2>/dev/null || echo localhost)
  tf=$(cfg token-file)
  if [ -n "$tf" ]; then [ -s "$tf" ] || die "token-file $tf is missing or empty"; fi
  case $backend in none|vxlan|host-gw|wireguard-native) ;; *) die "invalid flannel backend: $backend" ;; esac
  cni=; ns=; ds=; chart_cidr=
  for f in /var/lib/rancher/k3s/server/manifests/*.yaml; do
    [ -f "$f" ] || continue
    grep -q '^kind: "\?HelmChart"\?$' "$f" || continue
    case $(sed -n 's/^  chart:[[:space:]]*//p' "$f" | head -n 1 | unq) in
      tigera-operator) cni=calico; ns=calico-system; ds=calico-node ;;
      cilium) cni=cilium; ns=kube-system; ds=cilium ;;
      *) continue ;;
    esac
    chart_cidr=$(cni_cidr "$f")
  done
  if [ -n "$cni" ]; then
    [ "$backend" = none ] || die "level=fatal msg=\"$cni is deployed from the manifests directory but flannel-backend is $backend: set flannel-backend: none\""
    [ "$netpol" = true ] || die "level=fatal msg=\"disable-network-policy must be true when Flannel is replaced by $cni\""
    if [ -n "$chart_cidr" ] && [ "$chart_cidr" != "$cidr" ]; then
      die "level=fatal msg=\"the $cni pod CIDR $chart_cidr differs from cluster-cidr $cidr\""
    fi
  fi
  mkdir -p /var/lib/rancher/k3s/server
  write_kubeconfig $CFG/k3s.yaml 6443
  [ -s /var/lib/rancher/k3s/server/node-token ] || echo "K10double::server:0123456789abcdef" > /var/lib/rancher/k3s/server/node-token
  echo "$cidr" > "$STATE/cluster-cidr"
  echo "$DOUBLE_VERSION $DOUBLE_ARCH" > "$STATE/version"
  rm -f "$STATE/apiserver-ready"
  echo $$ > "$STATE/apiserver"
  say "k3s double $DOUBLE_VERSION ($DOUBLE_ARCH) starting as $node, cluster-cidr $cidr"
  [ -n "${HTTPS_PROXY:-}" ] && say "using proxy $HTTPS_PROXY (NO_PROXY=${NO_PROXY:-})"
  if [ -f $CFG/registries.yaml ]; then say "registries: $(grep -c endpoint $CFG/registries.yaml) mirror endpoint(s)"; fi
  notify_ready
  sleep 0.2
  : > "$STATE/apiserver-ready"
  node_cidr "$cidr" > "$STATE/nodes/$node"
  if [ -n "$cni" ]; then
    cni_deploy "$ns" "$ds" "$chart_cidr"
  elif [ "$backend" != none ]; then
    : > "$STATE/cni-ready"
  else
    say "flannel-backend is none and no CNI is deployed: the node stays NotReady"
  fi
  serve_forever
}

agent_main() {
  [ "$DOUBLE_FAIL" = start ] && die "level=fatal msg=\"this double is built to fail at start\""
  [ $# -eq 0 ] || die "unexpected arguments \"$*\""
  server=$(cfg server); tf=$(cfg token-file); tok=$(cfg token)
  [ -n "$server" ] || die "level=fatal msg=\"--server is required for an agent\""
  [ -n "$tok" ] || { [ -n "$tf" ] && [ -s "$tf" ]; } || die "level=fatal msg=\"--token or --token-file is required\""
  say "k3s agent double joining $server"
  notify_ready
  serve_forever
}

case $(basename "$0") in kubectl) kubectl_main "$@"; exit $? ;; esac
case ${1:-} in
  server) shift; server_main "$@" ;;
  agent) shift; agent_main "$@" ;;
  kubectl) shift; kubectl_main "$@" ;;
  --version|-v|version) echo "k3s version $DOUBLE_VERSION (test double, $DOUBLE_ARCH)" ;;
  *) die "unknown command \"${1:-}\"" ;;
esac
