#!/usr/bin/env bash
# Builds, once and cached, the Debian bookworm root that Cairn's tests
# extract and chroot into. See tests/support/README.md.
#
#   tests/support/debian-root.sh [CACHE_DIR]
#
# CACHE_DIR defaults to ${CAIRN_TEST_CACHE:-/var/tmp/cairn-test-cache}.
# Writes CACHE_DIR/debian-bookworm.tar and prints its path as the last line
# of stdout (all other output goes to stderr). Must run as root.
#
# Environment knobs (optional):
#   CAIRN_DEBIAN_MIRROR           default http://deb.debian.org/debian
#   CAIRN_DEBIAN_SECURITY_MIRROR  default http://deb.debian.org/debian-security
#   CAIRN_DEBIAN_ROOT_REBUILD=1   ignore the cache and rebuild
set -euo pipefail

SUITE=bookworm
MIRROR=${CAIRN_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SEC_MIRROR=${CAIRN_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
# Packages on top of variant "apt" (Essential:yes + apt). Their dependencies
# (not Recommends) come along: python3 and cloud-init's python3-* deps,
# login/passwd tooling, etc.
INCLUDE=passwd,adduser,sudo,ca-certificates,systemd,procps,kmod,cloud-init,netbase

SCRIPT=$(readlink -f "${BASH_SOURCE[0]}")

log() { printf 'debian-root: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------------------
# Customize stage: run by mmdebstrap as `debian-root.sh __customize ROOT`
# (mmdebstrap has /proc, /sys and /dev mounted in ROOT at this point).
# ---------------------------------------------------------------------------
# Keep PATH working at every moment (the diverted files are Essential).
divert() {
    local root=$1 path=$2
    cp -a "$root$path" "$root$path.distrib"
    chroot "$root" dpkg-divert --quiet --local --no-rename \
        --divert "$path.distrib" --add "$path"
}

customize() {
    local root=$1
    [[ -d $root/etc ]] || die "customize: $root is not a root"

    # Name resolution and a sane /etc/hosts (mmdebstrap leaves none).
    # Test harnesses should still copy the *current* host resolv.conf in after
    # extracting, since the cached tarball may come from another network.
    rm -f "$root/etc/resolv.conf"
    if [[ -s /etc/resolv.conf ]]; then
        cat /etc/resolv.conf >"$root/etc/resolv.conf"
    else
        : >"$root/etc/resolv.conf"
    fi
    chmod 0644 "$root/etc/resolv.conf"
    printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' \
        >"$root/etc/hosts"
    echo cairn-test >"$root/etc/hostname"

    # Never start daemons from maintainer scripts inside the chroot.
    printf '#!/bin/sh\n# cairn test root: never start services in a chroot\nexit 101\n' \
        >"$root/usr/sbin/policy-rc.d"
    chmod 0755 "$root/usr/sbin/policy-rc.d"

    # cloud-init runs `service NAME restart` (no systemd as PID 1) and
    # `hostname NAME`. In a plain chroot both act on the HOST (a real
    # chronyd gets started; the host's kernel hostname changes). Divert them
    # to stubs that only log what would have been done.
    divert "$root" /usr/sbin/service
    cat >"$root/usr/sbin/service" <<'EOF'
#!/bin/sh
# cairn test root stub (real one: /usr/sbin/service.distrib).
echo "service $*" >>/var/log/cairn-service.log
exit 0
EOF
    chmod 0755 "$root/usr/sbin/service"

    divert "$root" /bin/hostname
    cat >"$root/bin/hostname" <<'EOF'
#!/bin/sh
# cairn test root stub (real one: /bin/hostname.distrib). Reading the
# hostname works as usual; setting it is only logged, never applied, because
# the kernel hostname is shared with the host.
for a in "$@"; do
    case $a in
        -F|--file|-b|--boot) set=1 ;;
        -*) ;;
        *) set=1 ;;
    esac
done
if [ -n "${set:-}" ]; then
    echo "hostname $*" >>/var/log/cairn-hostname.log
    exit 0
fi
exec /bin/hostname.distrib "$@"
EOF
    chmod 0755 "$root/bin/hostname"

    # cloud-init: no cloud, no network config, no distro default user unless
    # the document says `users: [default, ...]`.
    cat >"$root/etc/cloud/cloud.cfg.d/90-cairn-test.cfg" <<'EOF'
# cairn test root: run cloud-init modules by hand with
#   cloud-init --file DOC single --name MODULE --frequency always
datasource_list: [ None ]
# /etc/cloud/cloud.cfg says `users: [default]`, which would create the
# `debian` user whenever users_groups runs on a document without `users:`.
users: []
network: {config: disabled}
# keep the seeded instance (/var/lib/cloud/instance -> iid-datasource-none)
manual_cache_clean: true
EOF

    # Seed cloud-init's instance state once (dirs, obj.pkl, the
    # /var/lib/cloud/instance symlink) without running any module. Without
    # this, `single` deletes /var/lib/cloud/instance, set_hostname fails
    # (no /var/lib/cloud/data) and scripts_user never finds runcmd's script.
    printf 'cloud_init_modules: []\n' >"$root/tmp/cairn-seed.cfg"
    if ! chroot "$root" cloud-init --file /tmp/cairn-seed.cfg init >"$root/tmp/cairn-seed.log" 2>&1; then
        cat "$root/tmp/cairn-seed.log" >&2
        die "customize: cloud-init init failed"
    fi
    rm -f "$root/tmp/cairn-seed.cfg" "$root/tmp/cairn-seed.log"
    # (the symlink is absolute: resolve it relative to $root)
    [[ $(readlink "$root/var/lib/cloud/instance") == /var/lib/cloud/instances/iid-datasource-none &&
        -e $root/var/lib/cloud/instances/iid-datasource-none/obj.pkl ]] ||
        die "customize: cloud-init seeding did not create the instance"
    # Drop the traces of the seeding run.
    rm -rf "$root/run/cloud-init"
    rm -f "$root"/var/log/cloud-init.log "$root"/var/log/cloud-init-output.log
    rm -f "$root/var/lib/cloud/data/status.json" "$root/var/lib/cloud/data/result.json"
    if chroot "$root" getent passwd debian >/dev/null; then
        die "customize: cloud-init created the default user"
    fi

    # Smaller tarball.
    rm -rf "$root"/var/cache/apt/*.bin "$root"/var/cache/debconf/*-old \
        "$root"/var/lib/dpkg/*-old "$root"/var/log/apt/* "$root"/var/log/dpkg.log
    find "$root/tmp" "$root/var/tmp" -mindepth 1 -delete
}

if [[ ${1:-} == __customize ]]; then
    customize "$2"
    exit 0
fi

# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------
CACHE_DIR=${1:-${CAIRN_TEST_CACHE:-/var/tmp/cairn-test-cache}}
OUT=$CACHE_DIR/debian-$SUITE.tar
KEY_FILE=$OUT.key
LOCK=$CACHE_DIR/.debian-$SUITE.lock
KEY=$(sha256sum "$SCRIPT" | cut -d' ' -f1)

# Cache hit: the tarball exists and is newer than this script, or was built
# by a script with identical content (a fresh git clone gives the script a
# new mtime, which alone would force a rebuild on every CI run).
fresh() {
    [[ ${CAIRN_DEBIAN_ROOT_REBUILD:-0} != 1 ]] || return 1
    [[ -s $OUT ]] || return 1
    [[ $OUT -nt $SCRIPT ]] && return 0
    [[ -f $KEY_FILE && $(<"$KEY_FILE") == "$KEY" ]]
}

if fresh; then
    printf '%s\n' "$OUT"
    exit 0
fi

[[ $EUID -eq 0 ]] || die "must run as root (mmdebstrap --mode=root, chroot)"

mkdir -p "$CACHE_DIR"
exec 9>"$LOCK"
if ! flock -n 9; then
    log "another process is building $OUT; waiting for it"
    flock 9
fi
# Someone else may have built it while we waited.
if fresh; then
    printf '%s\n' "$OUT"
    exit 0
fi

# Host prerequisites. flock/sha256sum/tar/readlink are from Essential packages.
install_prereqs() {
    local pkgs=()
    command -v mmdebstrap >/dev/null || pkgs+=(mmdebstrap)
    command -v mount >/dev/null || pkgs+=(mount)
    command -v gpg >/dev/null || pkgs+=(gpg) # mmdebstrap: signed-by detection
    [[ -e /usr/share/keyrings/debian-archive-keyring.gpg ]] || pkgs+=(debian-archive-keyring)
    ((${#pkgs[@]})) || return 0
    log "installing host packages: ${pkgs[*]}"
    local apt=(apt-get -y -q -o DPkg::Lock::Timeout=600 install --no-install-recommends)
    if ! DEBIAN_FRONTEND=noninteractive "${apt[@]}" "${pkgs[@]}" >&2; then
        log "install failed; running apt-get update and retrying"
        apt-get -q -o DPkg::Lock::Timeout=600 update >&2
        DEBIAN_FRONTEND=noninteractive "${apt[@]}" "${pkgs[@]}" >&2
    fi
}
install_prereqs

TMP_OUT=$CACHE_DIR/.debian-$SUITE.tar.tmp.$$
cleanup() { rm -f "$TMP_OUT" "$TMP_OUT.key"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log "building $OUT (takes about a minute)"
start=$SECONDS
mmdebstrap \
    --mode=root \
    --variant=apt \
    --format=tar \
    --include="$INCLUDE" \
    --aptopt='Acquire::Languages "none"' \
    --aptopt='Acquire::GzipIndexes "true"' \
    --aptopt='APT::Install-Recommends "false"' \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    --skip=cleanup/apt/lists \
    --customize-hook="bash '$SCRIPT' __customize \"\$1\"" \
    "$SUITE" "$TMP_OUT" \
    "deb $MIRROR $SUITE main" \
    "deb $MIRROR $SUITE-updates main" \
    "deb $SEC_MIRROR $SUITE-security main" >&2

[[ -s $TMP_OUT ]] || die "mmdebstrap produced no tarball"
printf '%s\n' "$KEY" >"$TMP_OUT.key"
mv -f "$TMP_OUT" "$OUT"
mv -f "$TMP_OUT.key" "$KEY_FILE"
log "built $OUT ($(du -h "$OUT" | cut -f1)) in $((SECONDS - start))s"
printf '%s\n' "$OUT"
