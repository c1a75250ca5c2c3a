//! Copies the image stream onto the target as fast as `dd oflag=direct`: a reader thread
//! reads, decompresses and hashes into 4 MiB aligned buffers while this thread writes them
//! with O_DIRECT (page-cache bypass; the tail that is not a whole logical block is written
//! after clearing O_DIRECT), opens a disk with O_EXCL (the kernel refuses it while mounted or
//! held), and syncs before returning. [`wipe`] destroys both partition tables of a target
//! left half-written, so it never boots a corrupt image.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Instant;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};

use super::progress::Progress;
use super::safety::{Target, TargetKind};
use super::source::Tally;

/// Size of one write.
pub const CHUNK: usize = 4 << 20;
/// Buffer alignment for O_DIRECT (covers 512 and 4096-byte logical blocks).
const ALIGN: usize = 4096;
/// Buffers in flight between the reader and the writer.
const DEPTH: usize = 3;

/// Errors while writing.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{0} is busy: mounted, or held by the kernel (swap, device-mapper, RAID); nothing was written")]
    Busy(PathBuf),
    #[error("opening {0} for writing: {1}")]
    Open(PathBuf, io::Error),
    #[error("reading the image after {at} bytes: {err}")]
    Read { at: u64, err: io::Error },
    #[error("writing {path} at byte {offset}: {err}")]
    Write {
        path: PathBuf,
        offset: u64,
        err: io::Error,
    },
    #[error("the image is larger than {path} ({size} bytes)")]
    TooSmall { path: PathBuf, size: u64 },
    #[error("flushing {0} to the device: {1}")]
    Sync(PathBuf, io::Error),
}

impl WriteError {
    /// Did anything reach the target before the failure?
    pub fn wrote_something(&self) -> bool {
        matches!(
            self,
            Self::Read { .. } | Self::Write { .. } | Self::TooSmall { .. } | Self::Sync(..)
        )
    }
}

/// What the write did.
#[derive(Debug, Clone, Copy)]
pub struct Written {
    pub bytes: u64,
    pub seconds: f64,
    /// Whether O_DIRECT was used (false where the target does not support it, e.g. tmpfs).
    pub direct: bool,
}

struct Buf {
    v: Vec<u8>,
    off: usize,
}

impl Buf {
    fn new() -> Self {
        let v = vec![0u8; CHUNK + ALIGN];
        let off = v.as_ptr().align_offset(ALIGN).min(ALIGN);
        Self { v, off }
    }
    fn full(&mut self) -> &mut [u8] {
        &mut self.v[self.off..self.off + CHUNK]
    }
    fn data(&self, n: usize) -> &[u8] {
        &self.v[self.off..self.off + n]
    }
}

fn open(target: &Target, direct: bool, exclusive: bool) -> io::Result<File> {
    let mut flags = OFlag::empty();
    if direct {
        flags |= OFlag::O_DIRECT;
    }
    let mut opts = OpenOptions::new();
    opts.write(true);
    match target.kind {
        TargetKind::Disk { .. } => {
            if exclusive {
                flags |= OFlag::O_EXCL;
            }
        }
        TargetKind::File => {
            opts.create(true);
        }
    }
    opts.custom_flags(flags.bits()).open(&target.path)
}

/// Open the target: O_DIRECT when it supports it, exclusive unless `force`.
fn open_target(target: &Target, force: bool) -> Result<(File, bool), WriteError> {
    let path = || target.path.clone();
    match open(target, true, !force) {
        Ok(f) => Ok((f, true)),
        Err(e) if e.raw_os_error() == Some(Errno::EBUSY as i32) => Err(WriteError::Busy(path())),
        Err(e) if e.raw_os_error() == Some(Errno::EINVAL as i32) => open(target, false, !force)
            .map(|f| (f, false))
            .map_err(|e| {
                if e.raw_os_error() == Some(Errno::EBUSY as i32) {
                    WriteError::Busy(path())
                } else {
                    WriteError::Open(path(), e)
                }
            }),
        Err(e) => Err(WriteError::Open(path(), e)),
    }
}

fn clear_direct(file: &File) -> io::Result<()> {
    let fd = file.as_raw_fd();
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags - OFlag::O_DIRECT))?;
    Ok(())
}

/// Fill `buf` as far as the stream allows; 0 only at its end.
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Write the whole stream to the target from byte 0 and sync it.
pub fn write(
    target: &Target,
    mut reader: Box<dyn Read + Send>,
    tally: &Tally,
    progress: &mut Progress,
    force: bool,
) -> Result<Written, WriteError> {
    let (file, mut direct) = open_target(target, force)?;
    let used_direct = direct;
    let (size, block) = match target.kind {
        TargetKind::Disk {
            size,
            logical_block,
            ..
        } => (Some(size), logical_block.max(1) as usize),
        TargetKind::File => (None, 512),
    };
    let started = Instant::now();

    let (full_tx, full_rx) = mpsc::sync_channel::<(Buf, usize)>(DEPTH);
    let (free_tx, free_rx) = mpsc::channel::<Buf>();
    for _ in 0..DEPTH + 2 {
        let _ = free_tx.send(Buf::new());
    }
    let reader_thread = std::thread::spawn(move || -> Result<(), (u64, io::Error)> {
        let mut at = 0u64;
        while let Ok(mut b) = free_rx.recv() {
            let n = read_full(&mut *reader, b.full()).map_err(|e| (at, e))?;
            if n == 0 {
                break;
            }
            at += n as u64;
            if full_tx.send((b, n)).is_err() || n < CHUNK {
                break;
            }
        }
        Ok(())
    });

    let mut off = 0u64;
    let mut result = Ok(());
    for (b, n) in full_rx.iter() {
        if let Some(size) = size {
            if off + n as u64 > size {
                result = Err(WriteError::TooSmall {
                    path: target.path.clone(),
                    size,
                });
                break;
            }
        }
        let data = b.data(n);
        let write_err = |offset, err| WriteError::Write {
            path: target.path.clone(),
            offset,
            err,
        };
        let r = if direct && n % block != 0 {
            let aligned = n - n % block;
            file.write_all_at(&data[..aligned], off)
                .map_err(|e| write_err(off, e))
                .and_then(|()| clear_direct(&file).map_err(|e| write_err(off, e)))
                .and_then(|()| {
                    direct = false;
                    file.write_all_at(&data[aligned..], off + aligned as u64)
                        .map_err(|e| write_err(off + aligned as u64, e))
                })
        } else {
            file.write_all_at(data, off).map_err(|e| write_err(off, e))
        };
        if let Err(e) = r {
            result = Err(e);
            break;
        }
        off += n as u64;
        progress.update(tally.bytes());
        let _ = free_tx.send(b);
    }
    drop(full_rx);
    drop(free_tx);
    let read_result = reader_thread
        .join()
        .unwrap_or_else(|_| Err((off, io::Error::other("the reader thread panicked"))));
    result?;
    if let Err((at, err)) = read_result {
        return Err(WriteError::Read { at, err });
    }
    if let TargetKind::File = target.kind {
        file.set_len(off)
            .map_err(|e| WriteError::Sync(target.path.clone(), e))?;
    }
    file.sync_all()
        .map_err(|e| WriteError::Sync(target.path.clone(), e))?;
    progress.finish(tally.bytes());
    Ok(Written {
        bytes: off,
        seconds: started.elapsed().as_secs_f64(),
        direct: used_direct,
    })
}

/// Zero the first and last MiB of what was written and of the device (both GPT headers and
/// the protective MBR), so a half-written or corrupt image is never booted or mounted.
pub fn wipe(target: &Target, written: u64) -> io::Result<()> {
    let file = open(target, false, false)?;
    const MIB: u64 = 1 << 20;
    let zeros = vec![0u8; MIB as usize];
    let mut ranges = vec![0u64, written.saturating_sub(MIB)];
    if let TargetKind::Disk { size, .. } = target.kind {
        ranges.push(size.saturating_sub(MIB));
    }
    for start in ranges {
        let len = match target.kind {
            TargetKind::Disk { size, .. } => MIB.min(size.saturating_sub(start)),
            TargetKind::File => MIB.min(written.saturating_sub(start)),
        };
        file.write_all_at(&zeros[..len as usize], start)?;
    }
    file.sync_all()
}
