#!/usr/bin/env bash
# Install the system packages Cairn's tests use, on a Debian/Ubuntu machine (as root).
# Idempotent: only missing packages are installed, and `apt-get update` runs only then.
set -euo pipefail
needed=(
  mmdebstrap      # builds the cached Debian test root (real apt, useradd, cloud-init)
  openssl         # makes test CA certificates
  ca-certificates
  systemd         # `systemctl --root` enables units inside a target root
  passwd          # useradd/groupadd --root
  sudo            # visudo checks sudoers drop-ins
  e2fsprogs
  postgresql      # the hub's storage suite runs against a real PostgreSQL (hub/tests/store_postgres.rs)
  chromium        # the hub's fleet page is tested in headless Chromium (hub/tests/fleet_page.rs)
)
missing=()
for p in "${needed[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing packages ${missing[*]}: run this script as root" >&2
    exit 1
  fi
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
