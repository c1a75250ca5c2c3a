#!/usr/bin/env bash
# Build a small throwaway target root for demos and temp-dir tests: the host's account
# files and skeleton, an os-release, /bin/sh with the few tools commands use, and their
# shared libraries. Seconds to make, no network, no root filesystem image needed.
#
# usage: scripts/mini-root.sh DIR
set -euo pipefail
dir=${1:?usage: mini-root.sh DIR}
mkdir -p "$dir"/{etc,bin,usr/bin,usr/sbin,tmp,var/lib,root,home,usr/share/zoneinfo/Etc}
chmod 1777 "$dir/tmp"
for f in passwd group shadow gshadow login.defs; do
  [ -e "/etc/$f" ] && cp -p "/etc/$f" "$dir/etc/$f"
done
cp -a /etc/skel "$dir/etc/skel" 2>/dev/null || mkdir -p "$dir/etc/skel"
cat > "$dir/etc/os-release" <<'OS'
PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
ID=debian
OS
echo "127.0.0.1	localhost" > "$dir/etc/hosts"
echo "127.0.1.1	localhost-mini" >> "$dir/etc/hosts"
[ -e /usr/share/zoneinfo/Etc/UTC ] && cp /usr/share/zoneinfo/Etc/UTC "$dir/usr/share/zoneinfo/Etc/UTC"

# /bin/sh and a handful of tools, each with the shared libraries it needs.
copy_bin() {
  local src=$1 dst=$2
  [ -x "$src" ] || return 0
  cp -L "$src" "$dir$dst"
  ldd "$src" 2>/dev/null | grep -o '/[^ ]*' | while read -r lib; do
    [ -e "$dir$lib" ] && continue
    mkdir -p "$dir$(dirname "$lib")"
    cp -L "$lib" "$dir$lib"
  done
}
copy_bin "$(readlink -f /bin/sh)" /bin/sh
for tool in cat echo touch mkdir ls rm true false test printf sleep id; do
  path=$(command -v "$tool" 2>/dev/null || true)
  case "$path" in /*) copy_bin "$path" "/bin/$tool" ;; esac
done
echo "$dir"
