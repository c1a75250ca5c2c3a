//! Cairn's installer: builds bootable disk images and hybrid install media with the agent
//! and the site's user-data baked in, writes an image to a disk safely, and replaces the
//! user-data of an existing image or ISO. The command line is [`cli`]: one module per
//! subcommand; the binary only parses, logs and exits.
//!
//! Disk layout contract (shared by `image`, `install`, `customize` and the agent's
//! `/oem` source; details and sizes in docs/installer.md). GPT, 1 MiB aligned, in order:
//!
//! 1. `CAIRN_ESP`: EFI system partition, FAT32 labelled `CAIRN_ESP`: systemd-boot as
//!    `EFI/BOOT/BOOT{X64,AA64}.EFI`, `cairn/vmlinuz`, `cairn/initrd.img`,
//!    `loader/entries/cairn.conf` (`root=LABEL=CAIRN_ROOT`); mounted at `/boot/efi`.
//! 2. `CAIRN_OEM` ([`oem::OEM_LABEL`]): basic-data partition, FAT labelled `CAIRN_OEM`,
//!    mounted at `/oem`; holds the user-data as `NN-<name>.yaml` in merge order.
//! 3. `CAIRN_PERSISTENT`: ext4 labelled `CAIRN_PERSISTENT`, mounted at `/usr/local`.
//! 4. `CAIRN_ROOT`: the root file system, ext4 labelled `CAIRN_ROOT`, GPT type = the
//!    Discoverable Partitions root type of the arch; **last**, so `systemd-repart` grows it
//!    to the end of the disk on boot and `systemd-growfs` grows the file system.
//!
//! Partitions are found by GPT name ([`oem::find_partition`]) and mounted by label, never by
//! number or device name.

pub mod cli;
pub mod customize;
pub mod image;
pub mod install;
pub mod iso;
pub mod oem;
pub mod userdata;
