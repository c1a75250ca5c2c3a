//! Cairn's installer: builds bootable disk images and hybrid install media with the agent
//! and the site's user-data baked in, writes an image to a disk safely, and replaces the
//! user-data of an existing image or ISO.
//!
//! Disk layout contract (shared by `image`, `install`, `customize` and the agent's
//! `/oem` source): a GPT disk with an EFI system partition, the root filesystem, an OEM
//! partition whose GPT name and FAT label are `CAIRN_OEM` (mounted at `/oem` on the device,
//! holding the user-data files), and a persistent partition.

pub mod customize;
pub mod image;
pub mod install;
pub mod iso;
pub mod oem;
pub mod userdata;
