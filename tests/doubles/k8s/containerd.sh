# containerd double: reads /etc/containerd/config.toml (must exist and say version 2 or 3)
# and opens its socket.
ME=containerd
[ "${1:-}" = --version ] && { echo "containerd $DOUBLE_VERSION"; exit 0; }
c=/etc/containerd/config.toml
[ -f "$c" ] || die "failed to load TOML: open $c: no such file or directory"
grep -Eq '^version = (2|3)' "$c" || die "$c: unsupported config version"
mkdir -p /run/containerd
: > /run/containerd/containerd.sock
say "containerd double $DOUBLE_VERSION ($DOUBLE_ARCH) serving /run/containerd/containerd.sock"
notify_ready
trap 'rm -f /run/containerd/containerd.sock; exit 0' TERM INT
while :; do sleep 1; done
