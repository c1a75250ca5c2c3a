#!/usr/bin/env bash
# See Cairn do its main job: apply the example user-data (a cloud-config and a Kairos-style
# stages file) to a throwaway root, with live progress, then apply again to show that a
# second run changes nothing. Needs root (it creates users inside the throwaway root).
#
# usage: ./demo.sh [FILE|DIR ...]   (default: examples/)
set -euo pipefail
cd "$(dirname "$0")"
if [ "$(id -u)" -ne 0 ]; then
  echo "demo.sh creates users inside a throwaway root with useradd --root: run it as root" >&2
  exit 2
fi
command -v cargo >/dev/null || { echo "cargo is needed: https://rustup.rs" >&2; exit 2; }
inputs=("$@")
[ ${#inputs[@]} -gt 0 ] || inputs=(examples/)
echo "==> building cairn-agent (release)"
cargo build --release --quiet -p cairn-agent
agent=target/release/cairn-agent
root=$(mktemp -d /tmp/cairn-demo.XXXXXX)
scripts/mini-root.sh "$root" >/dev/null
echo "==> throwaway root: $root"
echo "==> cairn-agent validate ${inputs[*]}"
"$agent" validate "${inputs[@]}"
echo
echo "==> cairn-agent apply --root $root ${inputs[*]}"
"$agent" apply --root "$root" "${inputs[@]}"
echo
echo "==> again: a second apply changes nothing"
"$agent" apply --root "$root" "${inputs[@]}"
echo
echo "==> a look inside the root"
grep -E '^(ops|metrics):' "$root/etc/passwd" || true
ls -l "$root/etc/sudoers.d" "$root/home/ops/.ssh" 2>/dev/null || true
cat "$root"/etc/sysctl.d/90-cairn-*.conf 2>/dev/null || true
echo
echo "The root stays at $root for you to inspect (rm -rf it when done)."
