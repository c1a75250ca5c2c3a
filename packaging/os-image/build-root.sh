#!/usr/bin/env bash
# Cairn OS image recipe: a Debian bookworm root file system (tarball) for x86_64 or aarch64
# with the kernel, systemd, containerd, a UEFI boot loader (systemd-boot), the static
# cairn-agent and its units enabled. `cairn-installer image --rootfs TAR` turns it into a
# bootable disk. See packaging/os-image/README.md.
#
#   build-root.sh --arch x86_64|aarch64 --out TAR [--agent BIN] [--units DIR]
#                 [--initramfs most|targeted] [--serial-autologin] [--cache-dir DIR]
#
# Two layers, so a new agent build does not re-run mmdebstrap:
#   1. the Debian base (packages + configuration in this script), cached in CACHE_DIR as
#      os-base-ARCH-KEY.tar, KEY = sha256 of this script's base part and --initramfs;
#   2. the Cairn layer (agent binary, units and their enablement links, optional serial
#      autologin for tests), appended to a copy of the base: a few seconds.
# Must run as root (mmdebstrap --mode=root). aarch64 on an x86_64 host runs through
# qemu-user-static + binfmt_misc (installed/registered here if missing).
set -euo pipefail

SCRIPT=$(readlink -f "${BASH_SOURCE[0]}")
HERE=$(dirname "$SCRIPT")
REPO=$(readlink -f "$HERE/../..")
SUITE=bookworm
MIRROR=${CAIRN_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SEC_MIRROR=${CAIRN_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}

log() { printf 'build-root: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
    cat <<'USAGE'
Usage: build-root.sh --arch x86_64|aarch64 --out TAR [options]

Builds a Debian bookworm root tarball for a Cairn disk image:
kernel + initramfs, systemd (networkd DHCP on every wired NIC, repart + growfs to grow the
root partition on first boot), containerd, systemd-boot's EFI binary, /oem mounted from
LABEL=CAIRN_OEM, the persistent partition (LABEL=CAIRN_PERSISTENT) on /usr/local, the serial
console, and the static cairn-agent with cairn-agent.service and the boot-stage units enabled.

Options:
  --arch ARCH          x86_64 or aarch64
  --out TAR            where to write the root tarball (atomically)
  --agent BIN          static cairn-agent binary (default: target/dist/ARCH/cairn-agent,
                       else target/ARCH-unknown-linux-musl/release/cairn-agent)
  --units DIR          directory of systemd units to install (default: systemd/ of the repo)
  --initramfs MODE     kernel modules in the initramfs: `most` (Debian's default, any
                       hardware Debian boots) or `targeted` (virtio, NVMe, SATA, USB and
                       SD/eMMC storage, ext4, vfat: VMs and common edge boxes; a smaller
                       initramfs, generated in about a minute instead of ten under
                       qemu-user emulation). Default: most
  --serial-autologin   log root in automatically on the serial console (test images only!)
  --cache-dir DIR      where the Debian base layer is cached
                       (default: ${CAIRN_TEST_CACHE:-/var/tmp/cairn-test-cache})
  -h, --help           this help

Example:
  sudo packaging/os-image/build-root.sh --arch x86_64 --out /tmp/root.tar
  cairn-installer image --arch x86_64 --rootfs /tmp/root.tar --user-data site.yaml --out edge.img
USAGE
}

# ---------------------------------------------------------------------------
# Customize hook: `build-root.sh __customize ARCH ROOT` (run by mmdebstrap).
# ---------------------------------------------------------------------------
customize() {
    local arch=$1 initramfs=$2 root=$3
    [[ -d $root/etc ]] || die "customize: $root is not a root"
    local console
    case $arch in x86_64) console=ttyS0 ;; aarch64) console=ttyAMA0 ;; esac

    echo cairn >"$root/etc/hostname"
    printf '127.0.0.1\tlocalhost\n127.0.1.1\tcairn\n::1\tlocalhost ip6-localhost ip6-loopback\n' \
        >"$root/etc/hosts"
    # Empty machine-id: systemd generates one on first boot (each device its own).
    : >"$root/etc/machine-id"
    rm -f "$root/var/lib/dbus/machine-id"

    # Mounts. The root file system grows on first boot (cairn-growfs-root.service after
    # systemd-repart has grown the partition, see repart.d below).
    mkdir -p "$root/oem" "$root/boot/efi"
    cat >"$root/etc/fstab" <<'FSTAB'
# Cairn disk layout (cairn-installer image): see docs/installer.md
LABEL=CAIRN_ROOT        /           ext4  defaults                                0 1
LABEL=CAIRN_ESP         /boot/efi   vfat  umask=0077,nofail                       0 2
LABEL=CAIRN_OEM         /oem        vfat  umask=0077,nofail                       0 2
LABEL=CAIRN_PERSISTENT  /usr/local  ext4  defaults,nofail                         0 2
FSTAB

    # First boot: systemd-repart grows the root partition (the last one on the disk) to
    # the end of the disk; systemd-growfs then grows ext4 online.
    mkdir -p "$root/etc/repart.d"
    cat >"$root/etc/repart.d/50-root.conf" <<'REPART'
# Grow the root partition (matched by its GPT type) into the free space at the end of
# the disk on boot. Nothing else is created or changed.
[Partition]
Type=root
REPART

    # A raw image written to a bigger disk (dd, install, a resized VM disk) keeps its backup
    # GPT header where the image ended, and systemd-repart 252 grows nothing past it: move
    # the header to the end of the disk first (a no-op once it is there).
    mkdir -p "$root/usr/libexec/cairn"
    cat >"$root/usr/libexec/cairn/gpt-backup-to-end" <<'SH'
#!/bin/sh
# Cairn OS image: move the backup GPT header of the root disk to the end of the disk when
# the image was written to a bigger one, so systemd-repart can grow the root partition.
set -eu
src=$(findmnt -n -o SOURCE /)
disk=$(lsblk -n -d -o PKNAME "$src")
[ -n "$disk" ] || { echo "no parent disk for $src; nothing to do"; exit 0; }
dev=/dev/$disk
sector=$(blockdev --getss "$dev")
last=$(( $(blockdev --getsize64 "$dev") / sector - 1 ))
# The primary header is LBA 1; its AlternateLBA field (the backup header) is at byte 32.
alt=$(od -A n -t u8 -j $(( sector + 32 )) -N 8 "$dev" | tr -d ' ')
if [ "$alt" = "$last" ]; then
    exit 0
fi
echo "$dev: backup GPT header at LBA $alt, the disk ends at LBA $last: moving it to the end"
exec sfdisk --no-reread --no-tell-kernel --relocate gpt-bak-std "$dev"
SH
    chmod 0755 "$root/usr/libexec/cairn/gpt-backup-to-end"
    cat >"$root/etc/systemd/system/cairn-gpt-backup-to-end.service" <<'UNIT'
[Unit]
Description=Cairn: move the backup GPT header to the end of the root disk
Documentation=file:/usr/libexec/cairn/gpt-backup-to-end
DefaultDependencies=no
# Before systemd-repart grows the root partition into the space this makes usable.
Before=systemd-repart.service shutdown.target
Conflicts=shutdown.target
ConditionVirtualization=!container

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/libexec/cairn/gpt-backup-to-end

[Install]
WantedBy=sysinit.target
UNIT
    # Then grow ext4 online into the grown partition. (x-systemd.growfs in fstab does
    # nothing for / in systemd 252 when the initramfs, not systemd, mounted the root.)
    cat >"$root/etc/systemd/system/cairn-growfs-root.service" <<'UNIT'
[Unit]
Description=Cairn: grow the root file system to fill its partition
Documentation=man:systemd-growfs(8)
DefaultDependencies=no
After=systemd-repart.service systemd-remount-fs.service
Before=sysinit.target shutdown.target
Conflicts=shutdown.target
ConditionVirtualization=!container

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/lib/systemd/systemd-growfs /

[Install]
WantedBy=sysinit.target
UNIT
    chroot "$root" systemctl enable cairn-gpt-backup-to-end.service cairn-growfs-root.service >&2

    # Network: DHCP on every wired interface.
    mkdir -p "$root/etc/systemd/network"
    cat >"$root/etc/systemd/network/80-cairn-dhcp.network" <<'NET'
[Match]
Name=en* eth*

[Network]
DHCP=yes
NET
    chroot "$root" systemctl enable systemd-networkd.service systemd-networkd-wait-online.service >&2
    # Only one interface needs to be up for network-online.target.
    mkdir -p "$root/etc/systemd/system/systemd-networkd-wait-online.service.d"
    cat >"$root/etc/systemd/system/systemd-networkd-wait-online.service.d/any.conf" <<'WAIT'
[Service]
ExecStart=
ExecStart=/lib/systemd/systemd-networkd-wait-online --any --timeout=60
WAIT

    # Serial console: the loader entry passes console=...; make sure a getty runs there.
    chroot "$root" systemctl enable "serial-getty@$console.service" >&2

    generate_initramfs "$arch" "$initramfs" "$root"

    # Smaller image.
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin "$root"/var/lib/apt/lists/* \
        "$root"/var/cache/debconf/*-old "$root"/var/lib/dpkg/*-old \
        "$root"/var/log/apt/* "$root"/var/log/dpkg.log
    find "$root/tmp" "$root/var/tmp" -mindepth 1 -delete
}

# Essential hook: `build-root.sh __defer_initramfs ROOT` (run by mmdebstrap after the
# Essential packages, before the kernel). The kernel's postinst and initramfs-tools' trigger
# would each generate the initramfs (twice in all, each run spawning a few processes per
# module: minutes natively, tens of minutes under qemu-user). update-initramfs is diverted
# to a no-op until the customize hook generates it once, with the final configuration.
defer_initramfs() {
    local root=$1
    chroot "$root" dpkg-divert --quiet --local --rename \
        --divert /usr/sbin/update-initramfs.cairn-deferred --add /usr/sbin/update-initramfs
    printf '#!/bin/sh\n# build-root.sh: deferred; the customize hook generates the initramfs once.\nexit 0\n' \
        >"$root/usr/sbin/update-initramfs"
    chmod 0755 "$root/usr/sbin/update-initramfs"
}

# The storage and file-system drivers of `--initramfs targeted`, per arch: enough to find
# and mount the root on a VM (virtio), a PC or server (NVMe, AHCI, USB) or an arm64 board
# (SD/eMMC, platform USB). Everything else loads from the root file system via udev.
targeted_modules() {
    local common="virtio_pci virtio_blk virtio_scsi nvme ahci sd_mod usb_storage uas xhci_pci ehci_pci mmc_block ext4 vfat nls_cp437 nls_ascii"
    case $1 in
        x86_64) echo "$common sdhci_pci sdhci_acpi" ;;
        aarch64) echo "$common virtio_mmio xhci_plat_hcd ehci_platform sdhci_of_arasan sdhci_iproc dw_mmc_rockchip" ;;
    esac
}

generate_initramfs() {
    local arch=$1 mode=$2 root=$3
    if [[ $mode == targeted ]]; then
        mkdir -p "$root/etc/initramfs-tools/conf.d" "$root/etc/initramfs-tools/hooks"
        cat >"$root/etc/initramfs-tools/conf.d/cairn-modules.conf" <<'CONF'
# Cairn OS image (build-root.sh --initramfs targeted): only the modules the
# cairn-modules hook lists; see /etc/initramfs-tools/hooks/cairn-modules.
MODULES=list
CONF
        cat >"$root/etc/initramfs-tools/hooks/cairn-modules" <<HOOK
#!/bin/sh
# Cairn OS image (build-root.sh --initramfs targeted): the storage and file-system
# drivers that find and mount the root. Add a module here (or to
# /etc/initramfs-tools/modules) and run update-initramfs -u for other hardware.
PREREQ=""
prereqs() { echo "\$PREREQ"; }
case \$1 in prereqs) prereqs; exit 0 ;; esac
. /usr/share/initramfs-tools/hook-functions
manual_add_modules $(targeted_modules "$arch")
HOOK
        chmod 0755 "$root/etc/initramfs-tools/hooks/cairn-modules"
    fi
    rm -f "$root/usr/sbin/update-initramfs"
    chroot "$root" dpkg-divert --quiet --local --rename --remove /usr/sbin/update-initramfs
    [[ -x $root/usr/sbin/update-initramfs ]] || die "update-initramfs missing after the diversion"
    local start=$SECONDS
    chroot "$root" update-initramfs -c -k all >&2
    compgen -G "$root/boot/initrd.img-*" >/dev/null || die "no initramfs was generated"
    log "initramfs ($mode) generated in $((SECONDS - start))s: $(du -h "$root"/boot/initrd.img-* | cut -f1 | tr '\n' ' ')"
}

if [[ ${1:-} == __customize ]]; then
    customize "$2" "$3" "$4"
    exit 0
fi
if [[ ${1:-} == __defer_initramfs ]]; then
    defer_initramfs "$2"
    exit 0
fi

# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------
ARCH= OUT= AGENT= UNITS=$REPO/systemd AUTOLOGIN=0 INITRAMFS=most
CACHE_DIR=${CAIRN_TEST_CACHE:-/var/tmp/cairn-test-cache}
while (($#)); do
    case $1 in
        --arch) ARCH=${2:?--arch needs a value}; shift 2 ;;
        --out) OUT=${2:?--out needs a value}; shift 2 ;;
        --agent) AGENT=${2:?--agent needs a value}; shift 2 ;;
        --units) UNITS=${2:?--units needs a value}; shift 2 ;;
        --initramfs) INITRAMFS=${2:?--initramfs needs a value}; shift 2 ;;
        --serial-autologin) AUTOLOGIN=1; shift ;;
        --cache-dir) CACHE_DIR=${2:?--cache-dir needs a value}; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done
case $ARCH in
    x86_64) DEB_ARCH=amd64 KERNEL=linux-image-amd64 CONSOLE=ttyS0 ;;
    aarch64) DEB_ARCH=arm64 KERNEL=linux-image-arm64 CONSOLE=ttyAMA0 ;;
    '') usage >&2; die "--arch is required" ;;
    *) die "--arch must be x86_64 or aarch64, not '$ARCH'" ;;
esac
[[ -n $OUT ]] || { usage >&2; die "--out is required"; }
case $INITRAMFS in most|targeted) ;; *) die "--initramfs must be most or targeted, not '$INITRAMFS'" ;; esac
if [[ -z $AGENT ]]; then
    for c in "$REPO/target/dist/$ARCH/cairn-agent" \
        "$REPO/target/$ARCH-unknown-linux-musl/release/cairn-agent"; do
        [[ -x $c ]] && { AGENT=$c; break; }
    done
    [[ -n $AGENT ]] || die "no static agent found: build it (packaging/build-static.sh, or cargo build --release --target $ARCH-unknown-linux-musl -p cairn-agent) or pass --agent"
fi
[[ -x $AGENT ]] || die "agent binary $AGENT is missing or not executable"
[[ -f $UNITS/cairn-agent.service ]] || die "$UNITS/cairn-agent.service not found (--units)"
[[ $EUID -eq 0 ]] || die "must run as root (mmdebstrap --mode=root)"

# Host prerequisites.
need=()
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
[[ -e /usr/share/keyrings/debian-archive-keyring.gpg ]] || need+=(debian-archive-keyring)
if [[ $ARCH != $(uname -m) ]]; then
    command -v "qemu-$ARCH-static" >/dev/null || need+=(qemu-user-static binfmt-support)
fi
if ((${#need[@]})); then
    log "installing host packages: ${need[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get -y -q -o DPkg::Lock::Timeout=600 install \
        --no-install-recommends "${need[@]}" >&2
fi
if [[ $ARCH != $(uname -m) ]]; then
    [[ -e /proc/sys/fs/binfmt_misc/register ]] ||
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    [[ -e /proc/sys/fs/binfmt_misc/qemu-$ARCH ]] ||
        update-binfmts --enable "qemu-$ARCH" >&2 ||
        die "cannot register qemu-$ARCH with binfmt_misc"
fi

# ---- layer 1: the Debian base, cached ------------------------------------------------
mkdir -p "$CACHE_DIR"
# The key covers the base recipe only (everything above the layer-2 marker) and the
# initramfs mode, so changes to the Cairn layer do not rebuild the base.
KEY=$({ sed '/^# ---- layer 2/,$d' "$SCRIPT"; echo "initramfs=$INITRAMFS"; } | sha256sum | cut -c1-16)
BASE=$CACHE_DIR/os-base-$ARCH-$INITRAMFS-$KEY.tar
exec 9>"$CACHE_DIR/.os-base-$ARCH.lock"
if ! flock -n 9; then
    log "another process is building the $ARCH base; waiting for it"
    flock 9
fi
# Holding the lock: leftovers of killed builds are nobody's.
rm -f "$CACHE_DIR/os-base-$ARCH-"*.tar.tmp.*
if [[ ! -s $BASE ]]; then
    INCLUDE=systemd,systemd-sysv,udev,dbus,$KERNEL,initramfs-tools,systemd-boot-efi
    INCLUDE+=,containerd,e2fsprogs,dosfstools,fdisk,kmod,iproute2,ca-certificates,sudo,passwd,procps
    # busybox-static: a rescue shell on the device, and the live environment of the install
    # ISO for this arch (`cairn-installer iso` takes it from this root).
    INCLUDE+=,busybox-static
    TMP_BASE=$BASE.tmp.$$
    trap 'rm -f "$TMP_BASE"' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    log "building the Debian $SUITE $DEB_ARCH base (mmdebstrap; a few minutes, longer under emulation)"
    start=$SECONDS
    mmdebstrap \
        --mode=root \
        --variant=apt \
        --arch="$DEB_ARCH" \
        --format=tar \
        --include="$INCLUDE" \
        --aptopt='Acquire::Languages "none"' \
        --aptopt='APT::Install-Recommends "false"' \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/info/*' \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --dpkgopt='path-include=/usr/share/locale/locale.alias' \
        --dpkgopt='path-exclude=/lib/modules/*/kernel/sound/*' \
        --dpkgopt='path-exclude=/lib/modules/*/kernel/drivers/media/*' \
        --dpkgopt='path-exclude=/lib/modules/*/kernel/drivers/gpu/*' \
        --dpkgopt='path-exclude=/lib/modules/*/kernel/drivers/infiniband/*' \
        --dpkgopt='path-exclude=/lib/modules/*/kernel/drivers/staging/*' \
        --dpkgopt='path-exclude=/lib/modules/*/kernel/drivers/iio/*' \
        --dpkgopt='path-exclude=/lib/modules/*/kernel/drivers/net/wireless/*' \
        --essential-hook="bash '$SCRIPT' __defer_initramfs \"\$1\"" \
        --customize-hook="bash '$SCRIPT' __customize '$ARCH' '$INITRAMFS' \"\$1\"" \
        "$SUITE" "$TMP_BASE" \
        "deb $MIRROR $SUITE main" \
        "deb $MIRROR $SUITE-updates main" \
        "deb $SEC_MIRROR $SUITE-security main" >&2
    [[ -s $TMP_BASE ]] || die "mmdebstrap produced no tarball"
    mv -f "$TMP_BASE" "$BASE"
    trap - EXIT
    log "built $BASE ($(du -h "$BASE" | cut -f1)) in $((SECONDS - start))s"
    # Older bases of this arch and initramfs mode are stale (the recipe changed).
    find "$CACHE_DIR" -maxdepth 1 -name "os-base-$ARCH-$INITRAMFS-*.tar" ! -name "$(basename "$BASE")" -delete
    # So are those of the layout before the mode was part of the name.
    find "$CACHE_DIR" -maxdepth 1 -regex ".*/os-base-$ARCH-[0-9a-f]+\.tar" -delete
fi
exec 9>&-

# ---- layer 2: the Cairn layer, appended to a copy --------------------------------------
LAYER=$(mktemp -d)
TMP_OUT=$OUT.tmp.$$
trap 'rm -rf "$LAYER" "$TMP_OUT"' EXIT
install -D -m 0755 "$AGENT" "$LAYER/usr/bin/cairn-agent"
mkdir -p "$LAYER/usr/lib/systemd/system" "$LAYER/etc/systemd/system" "$LAYER/etc/cairn"
shopt -s nullglob
for unit in "$UNITS"/cairn-*.service "$UNITS"/cairn-*.target "$UNITS"/cairn-*.timer; do
    name=$(basename "$unit")
    install -m 0644 "$unit" "$LAYER/usr/lib/systemd/system/$name"
    # Enable as `systemctl enable` would: a link in every WantedBy/RequiredBy .wants dir.
    while read -r target; do
        for t in $target; do
            mkdir -p "$LAYER/etc/systemd/system/$t.wants"
            ln -sf "/usr/lib/systemd/system/$name" "$LAYER/etc/systemd/system/$t.wants/$name"
        done
    done < <(sed -n 's/^\(WantedBy\|RequiredBy\)=//p' "$unit")
done
# Boot-stage reports: each boot-stage unit also records its events (JSON lines) in
# /run/cairn/boot-stages.jsonl, which the daemon forwards to the hub when it starts
# (agent/src/daemon/boot_stages.rs). Errors still reach the journal and the console.
for unit in "$UNITS"/cairn-stage-*.service; do
    name=$(basename "$unit")
    exec_line=$(sed -n 's|^ExecStart=\(/usr/bin/cairn-agent stage [a-z-]*\)[[:space:]]*$|\1|p' "$unit")
    [[ -n $exec_line ]] || continue
    mkdir -p "$LAYER/etc/systemd/system/$name.d"
    cat >"$LAYER/etc/systemd/system/$name.d/10-cairn-report.conf" <<DROPIN
# Record this stage's events for the hub (cairn-agent run forwards them at start).
[Service]
ExecStart=
ExecStart=/bin/sh -c 'mkdir -p /run/cairn && exec $exec_line --output json >>/run/cairn/boot-stages.jsonl'
DROPIN
done
if ((AUTOLOGIN)); then
    mkdir -p "$LAYER/etc/systemd/system/serial-getty@$CONSOLE.service.d"
    cat >"$LAYER/etc/systemd/system/serial-getty@$CONSOLE.service.d/autologin.conf" <<AUTO
# TEST IMAGE ONLY (build-root.sh --serial-autologin): root logs in on the serial console.
[Service]
ExecStart=
ExecStart=-/sbin/agetty --autologin root --noclear --keep-baud 115200,57600,38400,9600 - \$TERM
AUTO
fi
cp "$BASE" "$TMP_OUT"
(cd "$LAYER" && tar --append --file="$TMP_OUT" --owner=0 --group=0 --numeric-owner \
    --no-recursion $(find . -mindepth 1 | sort))
sync "$TMP_OUT"
mv -f "$TMP_OUT" "$OUT"
log "wrote $OUT ($(du -h "$OUT" | cut -f1)); base $(basename "$BASE"), agent $AGENT"
printf '%s\n' "$OUT"
