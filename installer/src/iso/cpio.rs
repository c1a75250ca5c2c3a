//! A minimal writer of the `newc` cpio format the kernel unpacks as an initramfs
//! (see the kernel's Documentation/driver-api/early-userspace/buffer-format.rst): directories,
//! regular files and symlinks, owned by root, in the order added.

use std::io::{self, Write};

/// Builds an archive in memory.
#[derive(Default)]
pub struct Archive {
    out: Vec<u8>,
    ino: u32,
}

impl Archive {
    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.ino += 1;
        let name = name.trim_start_matches('/');
        let fields = [
            self.ino,
            mode,
            0, // uid
            0, // gid
            if mode & 0o170000 == 0o040000 { 2 } else { 1 },
            0, // mtime: reproducible
            data.len() as u32,
            0,
            0,
            0,
            0,
            name.len() as u32 + 1,
            0,
        ];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while self.out.len() % 4 != 0 {
            self.out.push(0);
        }
    }

    /// A directory (0755).
    pub fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, &[]);
    }

    /// A regular file with permission bits `perm`.
    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, 0o100000 | (perm & 0o7777), data);
    }

    /// A symbolic link `name` → `target`.
    pub fn symlink(&mut self, name: &str, target: &str) {
        self.entry(name, 0o120777, target.as_bytes());
    }

    /// Finish the archive (trailer) and write it gzip-compressed.
    pub fn finish_gz(mut self, w: impl Write) -> io::Result<()> {
        self.entry("TRAILER!!!", 0, &[]);
        let mut gz = flate2::write::GzEncoder::new(w, flate2::Compression::fast());
        gz.write_all(&self.out)?;
        gz.finish()?.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_newc_and_aligned() {
        let mut a = Archive::default();
        a.dir("bin");
        a.file("init", 0o755, b"#!/bin/sh\n");
        a.symlink("bin/sh", "busybox");
        let mut raw = Vec::new();
        a.finish_gz(&mut raw).unwrap();
        let mut d = flate2::read::GzDecoder::new(&raw[..]);
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut d, &mut bytes).unwrap();
        assert!(bytes.starts_with(b"070701"));
        assert_eq!(bytes.len() % 4, 0);
        // The file's mode and size fields.
        let init = bytes.windows(5).position(|w| w == b"init\0").unwrap();
        let hdr = &bytes[init - 110..init];
        assert_eq!(&hdr[14..22], b"000081ed");
        assert_eq!(&hdr[54..62], b"0000000a");
        assert!(bytes.windows(11).any(|w| w == b"TRAILER!!!\0"));
    }
}
