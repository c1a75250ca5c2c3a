#!/usr/bin/env bash
# Build static (musl) release binaries of cairn-agent and cairn-installer.
#
#   packaging/build-static.sh                 # both arches
#   packaging/build-static.sh --arch aarch64  # one arch (x86_64 | aarch64; amd64/arm64 accepted)
#   packaging/build-static.sh --check         # also verify: static, and `--version` runs
#                                             # (aarch64 under qemu-aarch64-static)
#
# Output (stable paths other scripts and tests rely on):
#   target/dist/x86_64/cairn-agent   target/dist/x86_64/cairn-installer
#   target/dist/aarch64/cairn-agent  target/dist/aarch64/cairn-installer
# The last lines printed are those paths, one per line, so callers can capture them.
#
# How: `cargo build --release --target <arch>-unknown-linux-musl`, linked by rustc's own
# rust-lld against the Rust toolchain's self-contained musl (no musl-gcc needed). The only
# C in the dependency tree is `ring`'s; it is compiled by the host gcc (x86_64) or Debian's
# gcc-aarch64-linux-gnu (aarch64): ring's C is freestanding, so glibc-targeting compilers
# are fine for objects linked against musl. Cargo skips the build when nothing changed;
# the copy into target/dist is skipped when the file is identical.
#
# Needs: rustup targets x86_64-unknown-linux-musl and aarch64-unknown-linux-musl, and
# gcc-aarch64-linux-gnu (scripts/install-test-deps.sh installs all of them).
# Environment: CARGO_TARGET_DIR is honoured (dist goes under it); CAIRN_DIST overrides the
# dist directory.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }

arches=()
check=0
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) [ $# -ge 2 ] || { echo "build-static.sh: --arch needs a value (x86_64 or aarch64)" >&2; exit 2; }
            arches+=("$2"); shift 2 ;;
    --arch=*) arches+=("${1#--arch=}"); shift ;;
    --check) check=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "build-static.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[ ${#arches[@]} -gt 0 ] || arches=(x86_64 aarch64)

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
dist="${CAIRN_DIST:-$target_dir/dist}"
bins=(cairn-agent cairn-installer)

normalize() {
  case "$1" in
    x86_64|amd64|x86-64) echo x86_64 ;;
    aarch64|arm64) echo aarch64 ;;
    *) echo "build-static.sh: unsupported arch '$1' (x86_64 or aarch64)" >&2; return 2 ;;
  esac
}

need() {
  command -v "$1" >/dev/null 2>&1 || {
    echo "build-static.sh: '$1' not found; run scripts/install-test-deps.sh (as root) first" >&2
    exit 1
  }
}

outputs=()
for a in "${arches[@]}"; do
  arch="$(normalize "$a")"
  triple="$arch-unknown-linux-musl"
  tvar="$(echo "$triple" | tr 'a-z-' 'A-Z_')"
  if ! rustup target list --installed 2>/dev/null | grep -qx "$triple"; then
    echo "build-static.sh: Rust target $triple is not installed: rustup target add $triple" >&2
    exit 1
  fi
  case "$arch" in
    x86_64) cc=gcc ;;
    aarch64) cc=aarch64-linux-gnu-gcc ;;
  esac
  need "$cc"
  echo "==> building ${bins[*]} for $triple" >&2
  start=$(date +%s)
  # Per-target settings only: the host build (tests, other engineers) is not invalidated.
  env "CARGO_TARGET_${tvar}_LINKER=rust-lld" \
      "CC_${triple//-/_}=$cc" "AR_${triple//-/_}=${cc%gcc}ar" \
      cargo build --release --locked --target "$triple" -p cairn-agent -p cairn-installer >&2
  echo "    cargo finished in $(( $(date +%s) - start )) s" >&2
  mkdir -p "$dist/$arch"
  for b in "${bins[@]}"; do
    src="$target_dir/$triple/release/$b"
    dst="$dist/$arch/$b"
    if ! cmp -s "$src" "$dst" 2>/dev/null; then
      cp "$src" "$dst.tmp.$$"
      sync "$dst.tmp.$$"
      mv -f "$dst.tmp.$$" "$dst"
    fi
    if [ "$check" = 1 ]; then
      desc="$(file -b "$dst")"
      case "$desc" in
        *"statically linked"*|*"static-pie linked"*) ;;
        *) echo "build-static.sh: $dst is not static: $desc" >&2; exit 1 ;;
      esac
      if [ "$arch" = aarch64 ] && [ "$(uname -m)" != aarch64 ]; then
        need qemu-aarch64-static
        ver="$(qemu-aarch64-static "$dst" --version)"
      else
        ver="$("$dst" --version)"
      fi
      echo "    ok: $dst: $ver, $(stat -c %s "$dst") bytes, $(echo "$desc" | grep -o "stat[a-z-]* linked")" >&2
    fi
    outputs+=("$dst")
  done
done
printf '%s\n' "${outputs[@]}"
