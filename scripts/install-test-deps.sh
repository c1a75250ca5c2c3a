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
  util-linux      # prlimit: hub/tests/conn_limits.rs runs the hub under a 1024 open-files limit
  gcc-aarch64-linux-gnu  # packaging/build-static.sh: compiles ring's C for aarch64-unknown-linux-musl
  libc6-dev-arm64-cross  # its <stdint.h> etc. (only a Recommends of the compiler, so named here)
  qemu-user-static       # runs the aarch64 static binaries (--version check, packaging tests)
  file                   # packaging tests: binaries are static
  rpm                    # packaging/build-packages.sh: rpmbuild; tests install with rpm --root
  lintian                # packaging tests: the .deb packages are lintian-clean
  fdisk                  # installer tests: sfdisk builds and reads GPT test disks
  dosfstools             # installer: mkfs.vfat for the CAIRN_OEM partition
  mtools                 # installer: mcopy/mdir/mtype into FAT images without mounting
  zstd                   # installer tests: compressed images; the ISO's embedded disk image
  xorriso                # installer: the hybrid install ISO
  busybox-static         # installer: the install ISO's live environment (static /bin/busybox)
  qemu-system-x86        # ISO and boot tests (x86_64 guest, -accel tcg)
  ovmf                   # UEFI firmware for the x86_64 VM tests
  qemu-system-arm        # boot tests: the aarch64 guest (-M virt -cpu max)
  qemu-efi-aarch64       # AAVMF UEFI firmware for the aarch64 VM test
  qemu-utils             # installer: qemu-img (qcow2 images, customize of qcow2)
  fakeroot               # installer: unprivileged `image` from a root tarball
  binfmt-support         # os image recipe: the arm64 root is built through qemu-user-static
  arch-test              # mmdebstrap checks a foreign architecture can run before building it
)
find_missing() {
  missing=()
  for p in "${needed[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
}
find_missing
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing packages ${missing[*]}: run this script as root" >&2
    exit 1
  fi
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Installing can remove a package that was there: a backported qemu-utils is removed when
  # the distribution's qemu-system-* comes in (they must be the same QEMU version). Put back
  # whatever went, in the version that fits what is installed now.
  find_missing
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing again (removed by the first install): ${missing[*]}"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    find_missing
    if [ ${#missing[@]} -gt 0 ]; then
      echo "could not install: ${missing[*]}" >&2
      exit 1
    fi
  fi
fi
# Rust targets for the static (musl) release binaries (packaging/build-static.sh).
if command -v rustup >/dev/null 2>&1; then
  for t in x86_64-unknown-linux-musl aarch64-unknown-linux-musl; do
    rustup target list --installed | grep -qx "$t" || rustup target add "$t"
  done
fi
