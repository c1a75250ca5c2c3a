# helm double: `helm upgrade --install RELEASE CHART [--repo URL] [--version V]
# --namespace NS [--create-namespace] --values FILE --kubeconfig KC`. The release is
# recorded in $STATE/releases/RELEASE; `cilium` brings up the cilium DaemonSet.
ME=helm
[ "${1:-}" = version ] && { echo "version.BuildInfo{Version:\"$DOUBLE_VERSION\"}"; exit 0; }
[ "${1:-}" = upgrade ] && [ "${2:-}" = --install ] || die "the double only knows: helm upgrade --install"
release=$3; chart=$4; shift 4
ns=default; values=; kc=; repo=; version=; create=
while [ $# -gt 0 ]; do
  case $1 in
    --namespace|-n) ns=$2; shift 2 ;;
    --values|-f) values=$2; shift 2 ;;
    --kubeconfig) kc=$2; shift 2 ;;
    --repo) repo=$2; shift 2 ;;
    --version) version=$2; shift 2 ;;
    --create-namespace) create=1; shift ;;
    *) die "Error: unknown flag: $1" ;;
  esac
done
if [ -z "$repo" ]; then
  [ -f "$chart" ] || die "Error: path \"$chart\" not found"
else
  case $repo in https://*|oci://*) ;; *) die "Error: invalid repo URL $repo" ;; esac
fi
[ -n "$kc" ] && [ -f "$kc" ] || die "Error: Kubernetes cluster unreachable: no kubeconfig"
api_up || die "Error: Kubernetes cluster unreachable: connection refused"
[ -z "$values" ] || [ -f "$values" ] || die "Error: open $values: no such file or directory"
mkdir -p "$STATE/releases"
echo "chart=$chart repo=$repo version=$version namespace=$ns create-namespace=$create" > "$STATE/releases/$release"
case $release in
  cilium) cni_deploy "$ns" cilium "$( [ -n "$values" ] && cni_cidr "$values")" ;;
esac
echo "Release \"$release\" has been upgraded. Happy Helming!"
