#!/usr/bin/env bash
# Make a test root that can "run" Kubernetes doubles: scripts/mini-root.sh, plus the tools
# the doubles use (with their libraries) and the service-manager doubles (systemctl,
# journalctl, modprobe). The agent's code is unchanged: it runs `systemctl` and `kubectl`
# inside the root with chroot, as it runs them on `/` on a device.
#
# usage: tests/doubles/k8s/prepare-root.sh DIR
set -euo pipefail
dir=${1:?usage: prepare-root.sh DIR}
here=$(cd "$(dirname "$0")" && pwd)
"$here/../../../scripts/mini-root.sh" "$dir" > /dev/null
mkdir -p "$dir"/{run,sbin,usr/local/bin,var/log,etc/systemd/system}
[ -e "$dir/var/run" ] || ln -s ../run "$dir/var/run"
mkdir -p "$dir/dev"
[ -e "$dir/dev/null" ] || mknod -m 0666 "$dir/dev/null" c 1 3
echo "node-1" > "$dir/etc/hostname"
copy_bin() {
  local src=$1 dst=$2
  cp -L "$src" "$dir$dst"
  ldd "$src" 2>/dev/null | grep -o '/[^ ]*' | while read -r lib; do
    [ -e "$dir$lib" ] && continue
    mkdir -p "$dir$(dirname "$lib")"
    cp -L "$lib" "$dir$lib"
  done
}
for tool in grep sed head tail cp chmod setsid basename dirname ln mv tr wc sort cat env; do
  path=$(command -v "$tool")
  [ -e "$dir/bin/$tool" ] || copy_bin "$path" "/bin/$tool"
done
install -m 0755 "$here/systemctl.sh" "$dir/usr/bin/systemctl"
install -m 0755 "$here/journalctl.sh" "$dir/usr/bin/journalctl"
install -m 0755 "$here/modprobe.sh" "$dir/sbin/modprobe"
echo "$dir"
