# rke2 double: `rke2 server|agent` read /etc/rancher/rke2/config.yaml(.d); `cni:` picks
# the bundled chart and a HelmChartConfig must configure that chart with the cluster's
# pod CIDR. On start it unpacks kubectl into /var/lib/rancher/rke2/bin like RKE2 does.
ME=rke2
CFG=/etc/rancher/rke2
cfg() { yaml_get "$1" $CFG/config.yaml $(ls $CFG/config.yaml.d/*.yaml 2>/dev/null); }

server_main() {
  [ "$DOUBLE_FAIL" = start ] && die "level=fatal msg=\"this double ($DOUBLE_VERSION) is built to fail at start\""
  [ $# -eq 0 ] || die "unexpected arguments \"$*\": settings belong in $CFG/config.yaml.d"
  cidr=$(cfg cluster-cidr); [ -n "$cidr" ] || cidr=10.42.0.0/16
  cni=$(cfg cni); [ -n "$cni" ] || cni=canal
  node=$(cfg node-name); [ -n "$node" ] || node=$(cat /etc/hostname 2>/dev/null || echo localhost)
  case $cni in
    calico) ns=calico-system; ds=calico-node ;;
    cilium) ns=kube-system; ds=cilium ;;
    flannel) ns=kube-flannel; ds=kube-flannel-ds ;;
    canal) ns=kube-system; ds=rke2-canal ;;
    none) ns=; ds= ;;
    *) die "level=fatal msg=\"invalid cni: $cni\"" ;;
  esac
  chart_cidr=
  for f in /var/lib/rancher/rke2/server/manifests/*.yaml; do
    [ -f "$f" ] || continue
    grep -q '^kind: "\?HelmChartConfig"\?$' "$f" || continue
    name=$(sed -n 's/^  name:[[:space:]]*//p' "$f" | head -n 1 | unq)
    [ "$name" = "rke2-$cni" ] || die "level=fatal msg=\"HelmChartConfig $name configures a chart that is not deployed (cni: $cni)\""
    chart_cidr=$(cni_cidr "$f")
  done
  if [ -n "$chart_cidr" ] && [ "$chart_cidr" != "$cidr" ]; then
    die "level=fatal msg=\"rke2-$cni pod CIDR $chart_cidr differs from cluster-cidr $cidr\""
  fi
  mkdir -p /var/lib/rancher/rke2/bin /var/lib/rancher/rke2/server
  cp "$0" /var/lib/rancher/rke2/bin/kubectl && chmod 755 /var/lib/rancher/rke2/bin/kubectl
  write_kubeconfig $CFG/rke2.yaml 6443
  [ -s /var/lib/rancher/rke2/server/node-token ] || echo "K10double::server:fedcba9876543210" > /var/lib/rancher/rke2/server/node-token
  echo "$cidr" > "$STATE/cluster-cidr"
  echo "$DOUBLE_VERSION $DOUBLE_ARCH" > "$STATE/version"
  rm -f "$STATE/apiserver-ready"
  echo $$ > "$STATE/apiserver"
  say "rke2 double $DOUBLE_VERSION ($DOUBLE_ARCH) starting as $node, cni $cni, cluster-cidr $cidr"
  notify_ready
  sleep 0.2
  : > "$STATE/apiserver-ready"
  node_cidr "$cidr" > "$STATE/nodes/$node"
  [ -n "$ds" ] && cni_deploy "$ns" "$ds" "$chart_cidr"
  serve_forever
}

case $(basename "$0") in kubectl) kubectl_main "$@"; exit $? ;; esac
case ${1:-} in
  server) shift; server_main "$@" ;;
  agent) shift; [ "$DOUBLE_FAIL" = start ] && die "built to fail"; notify_ready; serve_forever ;;
  --version|-v|version) echo "rke2 version $DOUBLE_VERSION (test double, $DOUBLE_ARCH)" ;;
  *) die "unknown command \"${1:-}\"" ;;
esac
