#!/usr/bin/env bash
# Build the cairn-agent and cairn-installer packages (.deb and .rpm) from the static binaries.
#
#   packaging/build-packages.sh                  # both arches, both formats
#   packaging/build-packages.sh --arch x86_64    # one arch (x86_64|amd64, aarch64|arm64)
#   packaging/build-packages.sh --format deb     # one format (deb|rpm)
#   packaging/build-packages.sh --no-build       # use target/dist/<arch>/ as it is
#   packaging/build-packages.sh --out DIR        # default: target/dist/packages
#
# The binaries come from packaging/build-static.sh (run first unless --no-build; cargo makes
# that a no-op when nothing changed). The last lines printed are the paths of the packages
# built, one per line.
#
# What the packages hold (see packaging/README.md):
#   cairn-agent:     /usr/bin/cairn-agent, the units of systemd/ (agent daemon and boot
#                    stages) in /lib/systemd/system (.deb, as debhelper does on bookworm) or
#                    /usr/lib/systemd/system (.rpm), /etc/cairn/agent.yaml (conffile, 0600),
#                    a systemd preset (.rpm), docs in /usr/share/doc/cairn-agent.
#   cairn-installer: /usr/bin/cairn-installer and its docs.
# Maintainer scripts (packaging/deb/, packaging/rpm/cairn.spec.in): units enabled on first
# install (nothing started: the daemon needs user-data first), the daemon restarted on
# upgrade if it was running, stopped and all units disabled on removal; /var/lib/cairn
# (identity, journal) is kept on remove and deleted on purge (.deb; rpm has no purge).
#
# Tools: dpkg-deb (--root-owner-group: no fakeroot needed), rpmbuild (Debian package `rpm`),
# gzip. Environment: CAIRN_PKG_RELEASE (package release, default 1), SOURCE_DATE_EPOCH
# (file dates; default: the last commit's date, so rebuilds are reproducible).
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
die() { echo "build-packages.sh: $*" >&2; exit 1; }

arches=()
formats=()
build=1
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) [ $# -ge 2 ] || die "--arch needs a value"; arches+=("$2"); shift 2 ;;
    --arch=*) arches+=("${1#--arch=}"); shift ;;
    --format) [ $# -ge 2 ] || die "--format needs a value"; formats+=("$2"); shift 2 ;;
    --format=*) formats+=("${1#--format=}"); shift ;;
    --no-build) build=0; shift ;;
    --out) [ $# -ge 2 ] || die "--out needs a directory"; out="$2"; shift 2 ;;
    --out=*) out="${1#--out=}"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "build-packages.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[ ${#arches[@]} -gt 0 ] || arches=(x86_64 aarch64)
[ ${#formats[@]} -gt 0 ] || formats=(deb rpm)
for f in "${formats[@]}"; do
  case "$f" in deb|rpm) ;; *) echo "build-packages.sh: unknown format '$f' (deb or rpm)" >&2; exit 2 ;; esac
done

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
dist="${CAIRN_DIST:-$target_dir/dist}"
out="${out:-$dist/packages}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

version="$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -n1)"
[ -n "$version" ] || die "no version in [workspace.package] of $root/Cargo.toml"
release="${CAIRN_PKG_RELEASE:-1}"
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
  SOURCE_DATE_EPOCH="$(git -C "$root" log -1 --format=%ct 2>/dev/null || date +%s)"
fi
export SOURCE_DATE_EPOCH

need() { command -v "$1" >/dev/null 2>&1 || die "'$1' not found; run scripts/install-test-deps.sh (as root)"; }
for f in "${formats[@]}"; do
  case "$f" in deb) need dpkg-deb ;; rpm) need rpmbuild ;; esac
done
need gzip

normalize() {
  case "$1" in
    x86_64|amd64|x86-64) echo x86_64 ;;
    aarch64|arm64) echo aarch64 ;;
    *) die "unsupported arch '$1' (x86_64 or aarch64)" ;;
  esac
}
norm=()
for a in "${arches[@]}"; do norm+=("$(normalize "$a")"); done

if [ "$build" = 1 ]; then
  args=()
  for a in "${norm[@]}"; do args+=(--arch "$a"); done
  packaging/build-static.sh "${args[@]}" >/dev/null
fi

units=(cairn-agent.service cairn-stage-rootfs.service cairn-stage-initramfs.service
       cairn-stage-fs.service cairn-stage-boot.service cairn-stage-first-boot.service
       cairn-stage-network.service)
for u in "${units[@]}"; do [ -f "systemd/$u" ] || die "systemd/$u is missing"; done

work="$(mktemp -d "${TMPDIR:-/tmp}/cairn-pkg.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# Copy FILE to DEST with MODE, dated SOURCE_DATE_EPOCH (reproducible archives).
put() {
  install -D -m "$3" "$1" "$2"
  touch -h -d "@$SOURCE_DATE_EPOCH" "$2"
}

# The files of one package under $1 (a staging root). $2: package, $3: arch, $4: unit dir.
stage_files() {
  local dest="$1" pkg="$2" arch="$3" unitdir="$4" bin
  bin="$dist/$arch/$pkg"
  [ -x "$bin" ] || die "$bin is missing: run packaging/build-static.sh --arch $arch"
  put "$bin" "$dest/usr/bin/$pkg" 0755
  if [ "$pkg" = cairn-agent ]; then
    for u in "${units[@]}"; do put "systemd/$u" "$dest$unitdir/$u" 0644; done
    put packaging/files/agent.yaml "$dest/etc/cairn/agent.yaml" 0600
    put docs/daemon.md "$dest/usr/share/doc/$pkg/daemon.md" 0644
    put docs/user-data.md "$dest/usr/share/doc/$pkg/user-data.md" 0644
  fi
  put README.md "$dest/usr/share/doc/$pkg/README.md" 0644
  put packaging/README.md "$dest/usr/share/doc/$pkg/PACKAGING.md" 0644
}

summary() {
  case "$1" in
    cairn-agent) echo "Cairn edge-host agent (hub registration, user-data boot stages)" ;;
    cairn-installer) echo "Cairn installer (disk images, install media, writing images to disks)" ;;
  esac
}
description() {
  case "$1" in
    cairn-agent)
      echo "The Cairn agent applies Kairos/cloud-init compatible user-data at boot"
      echo "(systemd units for the rootfs, initramfs, fs, boot, first-boot and network"
      echo "stages) and runs a daemon that registers the host with a Cairn hub,"
      echo "applies the cluster profile the hub assigns and reports progress."
      echo "Static binary, no runtime dependencies." ;;
    cairn-installer)
      echo "cairn-installer builds bootable disk images and install media with the"
      echo "Cairn agent baked in, and writes images to block devices with streaming"
      echo "verification and user-data injection."
      echo "Static binary, no runtime dependencies." ;;
  esac
}

built=()

build_deb() {
  local pkg="$1" arch="$2" debarch tree f
  case "$arch" in x86_64) debarch=amd64 ;; aarch64) debarch=arm64 ;; esac
  tree="$work/deb-$pkg-$debarch"
  rm -rf "$tree"
  stage_files "$tree" "$pkg" "$arch" /lib/systemd/system
  local docdir="$tree/usr/share/doc/$pkg"
  put packaging/deb/copyright "$docdir/copyright" 0644
  put "packaging/deb/lintian/$pkg" "$tree/usr/share/lintian/overrides/$pkg" 0644
  sed -e "s/@PACKAGE@/$pkg/g" -e "s/@VERSION@/$version-$release/g" \
      -e "s/@DATE@/$(date -u -R -d "@$SOURCE_DATE_EPOCH")/g" packaging/deb/changelog.in \
    | gzip -9n > "$docdir/changelog.Debian.gz"
  touch -d "@$SOURCE_DATE_EPOCH" "$docdir/changelog.Debian.gz"
  chmod 0644 "$docdir/changelog.Debian.gz"
  mkdir -p "$tree/DEBIAN"
  {
    echo "Package: $pkg"
    echo "Version: $version-$release"
    echo "Architecture: $debarch"
    echo "Maintainer: Cairn developers <cairn@example.invalid>"
    echo "Installed-Size: $(du -sk --exclude=DEBIAN "$tree" | cut -f1)"
    echo "Section: admin"
    echo "Priority: optional"
    echo "Homepage: https://example.invalid/cairn"
    echo "Description: $(summary "$pkg")"
    description "$pkg" | sed 's/^/ /'
  } > "$tree/DEBIAN/control"
  if [ "$pkg" = cairn-agent ]; then
    echo /etc/cairn/agent.yaml > "$tree/DEBIAN/conffiles"
    for f in postinst prerm postrm; do
      install -m 0755 "packaging/deb/$f" "$tree/DEBIAN/$f"
    done
  fi
  (cd "$tree" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z \
     | xargs -0 md5sum) > "$tree/DEBIAN/md5sums"
  chmod 0644 "$tree/DEBIAN/control" "$tree/DEBIAN/md5sums"
  [ -f "$tree/DEBIAN/conffiles" ] && chmod 0644 "$tree/DEBIAN/conffiles"
  find "$tree" -type d -exec chmod 0755 {} +
  find "$tree" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
  local deb="$out/${pkg}_${version}-${release}_${debarch}.deb"
  dpkg-deb --root-owner-group -Zxz --build "$tree" "$deb.tmp" >/dev/null
  mv -f "$deb.tmp" "$deb"
  built+=("$deb")
}

build_rpm() {
  local pkg="$1" arch="$2" top buildroot
  top="$work/rpm-$pkg-$arch"
  rm -rf "$top"
  mkdir -p "$top"/{BUILD,RPMS,SPECS,SRPMS,BUILDROOT}
  buildroot="$top/stage"
  stage_files "$buildroot" "$pkg" "$arch" /usr/lib/systemd/system
  if [ "$pkg" = cairn-agent ]; then
    put packaging/rpm/80-cairn.preset "$buildroot/usr/lib/systemd/system-preset/80-cairn.preset" 0644
  fi
  local spec="$top/SPECS/$pkg.spec"
  {
    sed -e "s/@PACKAGE@/$pkg/g" -e "s/@VERSION@/$version/g" -e "s/@RELEASE@/$release/g" \
        -e "s/@SUMMARY@/$(summary "$pkg")/g" packaging/rpm/cairn.spec.in
    echo
    echo "%description"
    description "$pkg"
    echo
    if [ "$pkg" = cairn-agent ]; then cat packaging/rpm/agent-scriptlets.spec; fi
    echo
    echo "%files"
    (cd "$buildroot" && find . -type f -printf '%P\n' | sort) | while read -r f; do
      case "$f" in
        etc/cairn/agent.yaml) echo "%config(noreplace) %attr(0600,root,root) /$f" ;;
        usr/share/doc/*) echo "%doc %attr(0644,root,root) /$f" ;;
        usr/bin/*) echo "%attr(0755,root,root) /$f" ;;
        *) echo "%attr(0644,root,root) /$f" ;;
      esac
    done
    if [ "$pkg" = cairn-agent ]; then echo "%dir %attr(0755,root,root) /etc/cairn"; fi
    echo "%dir %attr(0755,root,root) /usr/share/doc/$pkg"
  } > "$spec"
  rpmbuild -bb --quiet --target "$arch-linux" \
    --define "_topdir $top" \
    --define "_rpmdir $top/RPMS" \
    --define "_cairn_stage $buildroot" \
    --define "_build_id_links none" \
    --define "use_source_date_epoch_as_buildtime 1" \
    --define "clamp_mtime_to_source_date_epoch 1" \
    --define "_buildhost cairn-build" \
    --define "_binary_payload w6.xzdio" \
    "$spec" >&2 || die "rpmbuild failed for $pkg ($arch); spec: $spec"
  local rpm
  rpm="$(find "$top/RPMS" -name "$pkg-$version-$release.$arch.rpm" | head -n1)"
  [ -n "$rpm" ] || die "rpmbuild made no $pkg-$version-$release.$arch.rpm (see $top/RPMS)"
  cp "$rpm" "$out/$(basename "$rpm").tmp"
  mv -f "$out/$(basename "$rpm").tmp" "$out/$(basename "$rpm")"
  built+=("$out/$(basename "$rpm")")
}

for arch in "${norm[@]}"; do
  for fmt in "${formats[@]}"; do
    for pkg in cairn-agent cairn-installer; do
      echo "==> $fmt $pkg $version-$release $arch" >&2
      "build_$fmt" "$pkg" "$arch"
    done
  done
done
printf '%s\n' "${built[@]}"
