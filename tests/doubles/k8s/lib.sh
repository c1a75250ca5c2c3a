# ---- shared part of the Kubernetes test doubles (tests/doubles/k8s/README.md) ----
# Cluster state the doubles share lives in $STATE inside the target root:
#   apiserver (pid) · apiserver-ready · cluster-cidr · nodes/NAME (its pod CIDR) ·
#   ds/NS__NAME (`ready` or `crash: why`) · cni-ready · crd-installations
STATE=/var/lib/k8s-double
mkdir -p "$STATE/nodes" "$STATE/ds" 2>/dev/null

say() { printf '%s\n' "$*" >&2; }
die() { say "$ME: $*"; exit 1; }
unq() { sed -e 's/^"\(.*\)"$/\1/' -e "s/^'\(.*\)'\$/\1/"; }

# yaml_get KEY FILE...: a top-level `KEY: value`, the last file that sets it wins.
yaml_get() {
  _k=$1; shift; _v=
  for _f in "$@"; do
    [ -f "$_f" ] || continue
    _x=$(sed -n "s/^$_k:[[:space:]]*//p" "$_f" | tail -n 1 | unq)
    [ -n "$_x" ] && _v=$_x
  done
  printf '%s' "$_v"
}

# The first pod CIDR a CNI's values/manifest asks for (Calico pool, Cilium cluster
# pool, Flannel Network/podCidr); empty when it takes the node's podCIDR.
cni_cidr() {
  { sed -n 's/^[[:space:]-]*cidr:[[:space:]]*//p' "$1"
    grep -A1 'clusterPoolIPv4PodCIDRList' "$1" | sed -n 's/^[[:space:]]*-[[:space:]]*//p'
    sed -n 's/^[[:space:]]*podCidr:[[:space:]]*//p' "$1"
    sed -n 's/.*"Network":[[:space:]]*"\([^"]*\)".*/\1/p' "$1"
  } | unq | head -n 1
}

notify_ready() { [ -n "${NOTIFY_SOCKET:-}" ] && : > "$NOTIFY_SOCKET"; return 0; }

api_up() {
  [ -f "$STATE/apiserver" ] && kill -0 "$(cat "$STATE/apiserver")" 2>/dev/null
}

node_cidr() { printf '%s\n' "$1" | sed 's#/[0-9]*$#/24#'; }

# cni_deploy NS NAME CIDR: the CNI's DaemonSet comes up — or crash-loops when the pool
# it was given is not the cluster's pod CIDR.
cni_deploy() {
  _want=$(cat "$STATE/cluster-cidr" 2>/dev/null)
  if [ -n "$3" ] && [ "$3" != "$_want" ]; then
    echo "crash: pod CIDR $3 is not the cluster's $_want" > "$STATE/ds/$1__$2"
    say "$2: pod CIDR $3 is not the cluster's $_want"
    return 0
  fi
  echo ready > "$STATE/ds/$1__$2"
  : > "$STATE/cni-ready"
}

write_kubeconfig() {
  mkdir -p "$(dirname "$1")"
  umask 077
  cat > "$1" <<KC
apiVersion: v1
kind: Config
clusters:
- cluster:
    certificate-authority-data: ZG91YmxlLWNh
    server: https://127.0.0.1:$2
  name: default
contexts:
- context:
    cluster: default
    user: default
  name: default
current-context: default
users:
- name: default
  user:
    client-certificate-data: ZG91YmxlLWNlcnQ=
    client-key-data: ZG91YmxlLWtleQ==
KC
  chmod 600 "$1"
}

node_json() {
  _cidr=$(cat "$STATE/nodes/$1")
  if [ -f "$STATE/cni-ready" ]; then
    _st=True; _reason=KubeletReady; _msg="kubelet is posting ready status"
  else
    _st=False; _reason=KubeletNotReady
    _msg="container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized"
  fi
  cat <<NJ
{"apiVersion":"v1","kind":"Node","metadata":{"name":"$1"},"spec":{"podCIDR":"$_cidr"},
 "status":{"conditions":[{"type":"MemoryPressure","status":"False","reason":"KubeletHasSufficientMemory","message":"kubelet has sufficient memory available"},
 {"type":"Ready","status":"$_st","reason":"$_reason","message":"$_msg"}]}}
NJ
}

ds_json() {
  _s=$(cat "$STATE/ds/$1__$2")
  _r=0; [ "$_s" = ready ] && _r=1
  cat <<DJ
{"apiVersion":"apps/v1","kind":"DaemonSet","metadata":{"name":"$2","namespace":"$1"},
 "status":{"desiredNumberScheduled":1,"currentNumberScheduled":1,"numberReady":$_r,"updatedNumberScheduled":1,"numberAvailable":$_r}}
DJ
}

kubectl_apply() {
  [ -f "$1" ] || die "error: the path \"$1\" does not exist"
  grep -q '^kind:' "$1" || die "error: error validating \"$1\": error validating data: kind not set"
  mkdir -p "$STATE/applied"
  cp "$1" "$STATE/applied/$(basename "$1")"
  echo "$1" >> "$STATE/apply.log"
  if grep -q 'installations.operator.tigera.io' "$1"; then
    : > "$STATE/crd-installations"
    echo "customresourcedefinition.apiextensions.k8s.io/installations.operator.tigera.io serverside-applied"
    echo "deployment.apps/tigera-operator serverside-applied"
  fi
  if grep -q '^kind: "\?Installation"\?$' "$1"; then
    [ -f "$STATE/crd-installations" ] || die "resource mapping not found for name: \"default\" namespace: \"\" from \"$1\": no matches for kind \"Installation\" in version \"operator.tigera.io/v1\"
ensure CRDs are installed first"
    cni_deploy calico-system calico-node "$(cni_cidr "$1")"
    echo "installation.operator.tigera.io/default serverside-applied"
  fi
  if grep -q 'kube-flannel-cfg' "$1"; then
    cni_deploy kube-flannel kube-flannel-ds "$(cni_cidr "$1")"
    echo "daemonset.apps/kube-flannel-ds serverside-applied"
  fi
}

kubectl_main() {
  ME=kubectl
  _kc=${KUBECONFIG:-}; _ns=default; _out=; _raw=; _files=; _verb=; _kind=; _name=
  while [ $# -gt 0 ]; do
    case $1 in
      --kubeconfig) _kc=$2; shift 2 ;;
      --kubeconfig=*) _kc=${1#*=}; shift ;;
      -n|--namespace) _ns=$2; shift 2 ;;
      -o|--output) _out=$2; shift 2 ;;
      --raw) _raw=$2; shift 2 ;;
      -f|--filename) _files="$_files $2"; shift 2 ;;
      --server-side|--force-conflicts) shift ;;
      -*) die "error: unknown flag: $1" ;;
      *) if [ -z "$_verb" ]; then _verb=$1; elif [ -z "$_kind" ]; then _kind=$1; else _name=$1; fi; shift ;;
    esac
  done
  [ "$_verb" = version ] && { echo "Client Version: $DOUBLE_VERSION"; return 0; }
  [ -n "$_kc" ] || die "The connection to the server localhost:8080 was refused - did you specify the right host or port?"
  [ -f "$_kc" ] || die "error: stat $_kc: no such file or directory"
  grep -q '^    server: https://' "$_kc" || die "error: $_kc: invalid configuration: no server found for cluster"
  api_up || die "The connection to the server 127.0.0.1:6443 was refused - did you specify the right host or port?"
  case $_verb in
    get)
      if [ -n "$_raw" ]; then
        [ "$_raw" = /readyz ] || die "Error from server (NotFound): the server could not find the requested resource"
        [ -f "$STATE/apiserver-ready" ] || { echo "[-]etcd failed: reason withheld"; die "readyz check failed"; }
        echo ok; return 0
      fi
      [ "$_out" = json ] || die "the double only answers -o json"
      case $_kind in
        node|nodes|no)
          [ -f "$STATE/nodes/$_name" ] || die "Error from server (NotFound): nodes \"$_name\" not found"
          node_json "$_name" ;;
        daemonset|daemonsets|ds)
          [ -f "$STATE/ds/${_ns}__$_name" ] || die "Error from server (NotFound): daemonsets.apps \"$_name\" not found"
          ds_json "$_ns" "$_name" ;;
        *) die "error: the server doesn't have a resource type \"$_kind\"" ;;
      esac ;;
    apply|create)
      [ -n "$_files" ] || die "error: must specify one of -f and -k"
      for _f in $_files; do kubectl_apply "$_f" || return 1; done ;;
    *) die "unknown command \"$_verb\" for \"kubectl\"" ;;
  esac
}

# Keep running until stopped; state that says "the API answers" goes with the process.
serve_forever() {
  trap 'rm -f "$STATE/apiserver" "$STATE/apiserver-ready"; exit 0' TERM INT
  while :; do sleep 1; done
}
# ---- end of the shared part ----
