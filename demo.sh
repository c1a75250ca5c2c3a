#!/usr/bin/env bash
# See Cairn do its main job, on this machine, in two parts (about a minute after the build):
#  1. the stage engine: validate and apply the example user-data (a cloud-config and a
#     Kairos-style stages file) to a throwaway root with live progress, then apply again to
#     show that a second run changes nothing;
#  2. the fleet round trip: start a hub on 127.0.0.1 (TLS with the CA it makes itself),
#     publish a profile and assign it by tag, then run the agent daemon for that root with
#     one join string (hub address, token, pin of the hub's CA): it checks the hub's CA
#     against the pin, registers, fetches its profile, applies it and reports every step,
#     which the hub then shows.
# Needs root (it creates users inside the throwaway root).
#
# usage: ./demo.sh [FILE|DIR ...]   (user-data for part 1; default: examples/)
# CAIRN_DEMO_BUILD=debug uses debug binaries (what the test of this script does: they are
# already built by `cargo test`).
set -euo pipefail
cd "$(dirname "$0")"
if [ "$(id -u)" -ne 0 ]; then
  echo "demo.sh creates users inside a throwaway root with useradd --root: run it as root" >&2
  exit 2
fi
command -v cargo >/dev/null || { echo "cargo is needed: https://rustup.rs" >&2; exit 2; }
inputs=("$@")
[ ${#inputs[@]} -gt 0 ] || inputs=(examples/)
build=${CAIRN_DEMO_BUILD:-release}
case "$build" in
  release) flags=(--release) ;;
  debug) flags=() ;;
  *) echo "CAIRN_DEMO_BUILD is release or debug, not '$build'" >&2; exit 2 ;;
esac
echo "==> building cairn-agent and cairn-hub ($build)"
cargo build "${flags[@]}" --quiet -p cairn-agent -p cairn-hub
target_dir=$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
agent=${target_dir:-$PWD/target}/$build/cairn-agent
hub=${target_dir:-$PWD/target}/$build/cairn-hub
root=$(mktemp -d /tmp/cairn-demo.XXXXXX)
scripts/mini-root.sh "$root" >/dev/null
echo "==> throwaway root: $root"

echo
echo "######## 1. the stage engine ########"
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
echo "######## 2. the fleet: hub, token, profile, agent daemon ########"
hubdir=$root/.demo-hub            # kept beside the root so one rm -rf cleans up everything
mkdir -p "$hubdir" "$root/oem"
agent_pid= hub_pid=
cleanup() {
  [ -z "$agent_pid" ] || kill "$agent_pid" 2>/dev/null || true
  [ -z "$hub_pid" ] || kill "$hub_pid" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null || echo 18443)
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$hubdir/admin-token"
export CAIRN_HUB_DB=$hubdir/hub.db   # its directory is the hub's data directory too
echo "==> cairn-hub serve --listen 127.0.0.1:$port (TLS with its own CA in $hubdir/tls, SQLite $CAIRN_HUB_DB)"
"$hub" serve --listen "127.0.0.1:$port" --admin-token-file "$hubdir/admin-token" \
  --heartbeat-interval 5 2>"$hubdir/hub.log" &
hub_pid=$!
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  kill -0 "$hub_pid" 2>/dev/null || { cat "$hubdir/hub.log" >&2; exit 1; }
  sleep 0.1
done
echo "==> cairn-hub profile upload examples/profile-os.yaml"
"$hub" profile upload examples/profile-os.yaml
echo "==> cairn-hub assign --tag site=demo --profile edge-os"
"$hub" assign --tag site=demo --profile edge-os
echo "==> cairn-hub token create --name demo --expires-in 1h --max-uses 1"
join=$("$hub" --output json token create --name demo --expires-in 1h --max-uses 1 |
  sed -n 's/.*"join": *"\([^"]*\)".*/\1/p')
[ -n "$join" ] || { echo "no join string from cairn-hub token create" >&2; exit 1; }
echo "    (printed once: a join string with the hub's address, the token and the pin of the"
echo "    hub's CA; it is all the device's user-data needs)"
{
  echo "# The device's hub settings, as an installer would put them on the OEM partition."
  echo "cairn:"
  echo "  join: \"$join\""
  echo "  site: shop-demo-01"
  echo "  tags: {site: demo}"
} > "$root/oem/90-hub.yaml"
echo "==> cairn-agent run --root $root   (the daemon, as cairn-agent.service runs it)"
"$agent" run --root "$root" --state-dir "$root/var/lib/cairn" &
agent_pid=$!
status=
for _ in $(seq 120); do
  status=$("$hub" --output json hosts | sed -n 's/.*"status": *"\([a-z_]*\)".*/\1/p' | head -1)
  case "$status" in applied|failed) break ;; esac
  kill -0 "$agent_pid" 2>/dev/null || break
  sleep 0.5
done
sleep 1   # one more heartbeat's worth for the last events to land
echo
echo "==> cairn-hub hosts   (what the operator sees)"
"$hub" hosts
host_id=$("$hub" --output json hosts | sed -n 's/.*"id": *"\(h_[^"]*\)".*/\1/p' | head -1)
if [ -n "$host_id" ]; then
  echo
  echo "==> cairn-hub hosts events $host_id   (the progress the agent reported)"
  "$hub" hosts events "$host_id" | tail -n 20
fi
echo
echo "==> cairn-agent status"
"$agent" status --state-dir "$root/var/lib/cairn" || true
echo
echo "==> what the profile changed in the root"
grep '^shopadmin:' "$root/etc/passwd" || true
cat "$root/etc/motd" "$root/var/lib/site/profile-marker" 2>/dev/null || true
if [ "$status" != applied ]; then
  echo "the host did not reach 'applied' (status: ${status:-none}); hub log: $hubdir/hub.log" >&2
  exit 1
fi
if [ -t 0 ]; then
  echo
  echo "The fleet page: https://127.0.0.1:$port/fleet?token=$(cat "$hubdir/admin-token")"
  echo "(its CA is $hubdir/tls/ca.crt). Press Enter to stop the hub and the agent."
  read -r _
fi
echo
echo "The root stays at $root for you to inspect (rm -rf it when done)."
