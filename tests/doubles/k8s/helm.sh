# helm double: `helm upgrade --install RELEASE CHART --namespace NS --values FILE --kubeconfig KC`.
ME=helm
[ "${1:-}" = version ] && { echo "version.BuildInfo{Version:\"$DOUBLE_VERSION\"}"; exit 0; }
[ "${1:-}" = upgrade ] && [ "${2:-}" = --install ] || die "the double only knows: helm upgrade --install"
release=$3; chart=$4; shift 4
ns=default; values=; kc=
while [ $# -gt 0 ]; do
  case $1 in
    --namespace|-n) ns=$2; shift 2 ;;
    --values|-f) values=$2; shift 2 ;;
    --kubeconfig) kc=$2; shift 2 ;;
    *) die "Error: unknown flag: $1" ;;
  esac
done
[ -f "$chart" ] || die "Error: path \"$chart\" not found"
[ -n "$kc" ] && [ -f "$kc" ] || die "Error: Kubernetes cluster unreachable: no kubeconfig"
api_up || die "Error: Kubernetes cluster unreachable: connection refused"
[ -z "$values" ] || [ -f "$values" ] || die "Error: open $values: no such file or directory"
case $release in
  cilium) cni_deploy "$ns" cilium "$( [ -n "$values" ] && cni_cidr "$values")" ;;
esac
echo "Release \"$release\" has been upgraded. Happy Helming!"
