//! A power-cut harness: a small FUSE filesystem that behaves like a disk
//! behind a volatile page cache.
//!
//! Why hand-written: `kill -9` alone cannot show what a power cut loses,
//! because the kernel's page cache survives the process. This filesystem
//! keeps every file's data written since that inode's last `fsync` /
//! `fdatasync` in its own memory (reads see it, as they would see the page
//! cache) and writes it to the backing folder only when the file is synced.
//! [`PowerCutFs::power_cut`] throws away everything unsynced, data and size
//! changes alike, and mounts a fresh filesystem on the same mountpoint, so no
//! kernel cache of the old mount can mask the loss. It is the model of the
//! LazyFS tool Jepsen uses against databases. Like LazyFS, FUSE never sees
//! `sync_file_range(2)`: a program that only calls that loses its data here,
//! as it can on an SD card after a real power cut.
//!
//! The model, exactly:
//! - File data and file size (growth and truncation) are volatile until the
//!   inode is synced through any of its handles; synced bytes are written to
//!   the backing folder with `pwrite` + `set_len`.
//! - Namespace operations (create, mkdir, rename, unlink, rmdir) and mode
//!   changes go straight to the backing folder: they are durable at once (a
//!   file created and never synced survives a cut empty). `fsyncdir` is
//!   counted but has nothing left to do.
//! - Optionally ([`PowerCutFs::set_torn_writes`]) a cut first writes the first
//!   half of the last page written before it, the way a sector write torn by a
//!   power loss leaves half old, half new data.
//! - Every open and create is answered with `FOPEN_DIRECT_IO` and all
//!   attribute and entry TTLs are zero, so the kernel caches no data and no
//!   sizes between cuts either.
//!
//! Counters (bytes the application wrote, bytes and 4 KiB pages made durable,
//! fsyncs) are kept across cuts for wear figures.
//!
//! Needs root and /dev/fuse (the mount is made with mount(2), no fusermount
//! helper); [`mount_or_skip`] says SKIPPED elsewhere, or fails under
//! IOMT_REQUIRE_ALL=1.

#![allow(dead_code)]

use fuser::{
    FileAttr, FileType, Filesystem, MountOption, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, Request, TimeOrNow,
};
use std::collections::{BTreeMap, HashMap};
use std::ffi::{CString, OsStr};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The page size of the model: the unit a disk (and the page cache) writes.
pub const PAGE: u64 = 4096;
/// Zero: the kernel must ask again for every attribute and name.
const TTL: Duration = Duration::ZERO;

/// What the filesystem saw, summed over every mount since [`PowerCutFs::mount`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Bytes the applications wrote (`write` calls), synced or not.
    pub bytes_written: u64,
    /// Bytes of file data made durable by an fsync (each dirty page counted
    /// once per sync, cut at the end of the file).
    pub bytes_synced: u64,
    /// Dirty 4 KiB pages made durable: what a disk would have written.
    pub pages_synced: u64,
    /// `fsync` + `fdatasync` calls on files (those with nothing dirty included).
    pub fsyncs: u64,
    /// `fsync` calls on directories.
    pub dir_fsyncs: u64,
    /// Power cuts so far.
    pub power_cuts: u64,
    /// Unsynced bytes thrown away by the cuts (dirty pages, cut at the end of
    /// each file).
    pub bytes_lost: u64,
}

impl Counters {
    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &Counters) -> Counters {
        Counters {
            bytes_written: self.bytes_written - earlier.bytes_written,
            bytes_synced: self.bytes_synced - earlier.bytes_synced,
            pages_synced: self.pages_synced - earlier.pages_synced,
            fsyncs: self.fsyncs - earlier.fsyncs,
            dir_fsyncs: self.dir_fsyncs - earlier.dir_fsyncs,
            power_cuts: self.power_cuts - earlier.power_cuts,
            bytes_lost: self.bytes_lost - earlier.bytes_lost,
        }
    }
}

#[derive(Default)]
struct SharedCounters {
    bytes_written: AtomicU64,
    bytes_synced: AtomicU64,
    pages_synced: AtomicU64,
    fsyncs: AtomicU64,
    dir_fsyncs: AtomicU64,
    power_cuts: AtomicU64,
    bytes_lost: AtomicU64,
}

impl SharedCounters {
    fn snapshot(&self) -> Counters {
        Counters {
            bytes_written: self.bytes_written.load(Ordering::Relaxed),
            bytes_synced: self.bytes_synced.load(Ordering::Relaxed),
            pages_synced: self.pages_synced.load(Ordering::Relaxed),
            fsyncs: self.fsyncs.load(Ordering::Relaxed),
            dir_fsyncs: self.dir_fsyncs.load(Ordering::Relaxed),
            power_cuts: self.power_cuts.load(Ordering::Relaxed),
            bytes_lost: self.bytes_lost.load(Ordering::Relaxed),
        }
    }
}

/// The volatile state of one inode: its size and its dirty pages.
struct Dirty {
    /// The size the applications see.
    size: u64,
    /// Bytes of the backing file that are still part of the file: a
    /// truncation below the backing size lowers it, and reads beyond it (not
    /// covered by a dirty page) see zeros.
    durable_len: u64,
    /// Page index -> the page's current content (bytes past `size` are zero).
    pages: BTreeMap<u64, Box<[u8]>>,
}

impl Dirty {
    /// Unsynced bytes, cut at the file's size.
    fn unsynced_bytes(&self) -> u64 {
        self.pages.keys().map(|p| self.size.saturating_sub(p * PAGE).min(PAGE)).sum()
    }
}

struct Handle {
    ino: u64,
    append: bool,
}

/// One mount's state. After a cut it is marked dead and every request still
/// arriving on the old connection fails with EIO.
struct Inner {
    backing: PathBuf,
    /// st_ino of the backing folder, shown to the kernel as FUSE_ROOT_ID.
    root_ino: u64,
    /// inode -> its path in the backing folder (absolute).
    paths: HashMap<u64, PathBuf>,
    /// inode -> the backing file, opened read-write, and how many handles use it.
    files: HashMap<u64, (File, u32)>,
    dirty: HashMap<u64, Dirty>,
    handles: HashMap<u64, Handle>,
    next_fh: u64,
    /// The page written last (inode, page index), for torn writes.
    last_written: Option<(u64, u64)>,
    dead: bool,
}

fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

impl Inner {
    fn new(backing: &Path) -> io::Result<Inner> {
        let root_ino = std::fs::metadata(backing)?.ino();
        let mut paths = HashMap::new();
        paths.insert(fuser::FUSE_ROOT_ID, backing.to_path_buf());
        Ok(Inner {
            backing: backing.to_path_buf(),
            root_ino,
            paths,
            files: HashMap::new(),
            dirty: HashMap::new(),
            handles: HashMap::new(),
            next_fh: 1,
            last_written: None,
            dead: false,
        })
    }

    /// The FUSE inode of a backing st_ino (the root swaps places with 1).
    fn fuse_ino(&self, st_ino: u64) -> u64 {
        if st_ino == self.root_ino {
            fuser::FUSE_ROOT_ID
        } else if st_ino == fuser::FUSE_ROOT_ID {
            self.root_ino
        } else {
            st_ino
        }
    }

    fn path(&self, ino: u64) -> Result<PathBuf, i32> {
        self.paths.get(&ino).cloned().ok_or(libc::ENOENT)
    }

    fn child(&self, parent: u64, name: &OsStr) -> Result<PathBuf, i32> {
        Ok(self.path(parent)?.join(name))
    }

    fn attr_of(&self, meta: &std::fs::Metadata) -> FileAttr {
        let ino = self.fuse_ino(meta.ino());
        let size = self.dirty.get(&ino).map_or(meta.len(), |d| d.size);
        let kind = {
            let t = meta.file_type();
            if t.is_dir() {
                FileType::Directory
            } else if t.is_symlink() {
                FileType::Symlink
            } else {
                FileType::RegularFile
            }
        };
        let time = |s: i64, ns: i64| UNIX_EPOCH + Duration::new(s.max(0) as u64, ns.clamp(0, 999_999_999) as u32);
        FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: time(meta.atime(), meta.atime_nsec()),
            mtime: time(meta.mtime(), meta.mtime_nsec()),
            ctime: time(meta.ctime(), meta.ctime_nsec()),
            crtime: SystemTime::UNIX_EPOCH,
            kind,
            perm: (meta.mode() & 0o7777) as u16,
            nlink: meta.nlink() as u32,
            uid: meta.uid(),
            gid: meta.gid(),
            rdev: meta.rdev() as u32,
            blksize: PAGE as u32,
            flags: 0,
        }
    }

    /// Attributes of an inode: of its open file if it has one (it may be
    /// unlinked), else of its path.
    fn getattr(&self, ino: u64) -> Result<FileAttr, i32> {
        let meta = match self.files.get(&ino) {
            Some((f, _)) => f.metadata(),
            None => std::fs::symlink_metadata(self.path(ino)?),
        };
        meta.map(|m| self.attr_of(&m)).map_err(|e| errno(&e))
    }

    /// Looks `path` up and remembers it as the path of its inode.
    fn entry(&mut self, path: PathBuf) -> Result<FileAttr, i32> {
        let meta = std::fs::symlink_metadata(&path).map_err(|e| errno(&e))?;
        let attr = self.attr_of(&meta);
        self.paths.insert(attr.ino, path);
        Ok(attr)
    }

    /// The inode's backing file, opened (and counted as used) for a handle.
    fn open_file(&mut self, ino: u64) -> Result<(), i32> {
        if let Some((_, refs)) = self.files.get_mut(&ino) {
            *refs += 1;
            return Ok(());
        }
        let path = self.path(ino)?;
        let f = OpenOptions::new().read(true).write(true).open(path).map_err(|e| errno(&e))?;
        self.files.insert(ino, (f, 1));
        Ok(())
    }

    fn new_handle(&mut self, ino: u64, flags: i32) -> u64 {
        let fh = self.next_fh;
        self.next_fh += 1;
        self.handles.insert(fh, Handle { ino, append: flags & libc::O_APPEND != 0 });
        fh
    }

    /// The volatile state of `ino`, created from the backing file's size.
    fn dirty_mut(&mut self, ino: u64) -> Result<&mut Dirty, i32> {
        if !self.dirty.contains_key(&ino) {
            let len = match self.files.get(&ino) {
                Some((f, _)) => f.metadata().map(|m| m.len()),
                None => std::fs::metadata(self.path(ino)?).map(|m| m.len()),
            }
            .map_err(|e| errno(&e))?;
            self.dirty.insert(ino, Dirty { size: len, durable_len: len, pages: BTreeMap::new() });
        }
        Ok(self.dirty.get_mut(&ino).expect("inserted above"))
    }

    fn truncate(&mut self, ino: u64, new_size: u64) -> Result<(), i32> {
        let d = self.dirty_mut(ino)?;
        if new_size < d.size {
            d.pages.retain(|p, _| p * PAGE < new_size);
            if let Some(page) = d.pages.get_mut(&(new_size / PAGE)) {
                page[(new_size % PAGE) as usize..].fill(0);
            }
            d.durable_len = d.durable_len.min(new_size);
        }
        d.size = new_size;
        Ok(())
    }

    fn write(&mut self, ino: u64, offset: u64, data: &[u8]) -> Result<(), i32> {
        if data.is_empty() {
            return Ok(());
        }
        self.dirty_mut(ino)?;
        let Inner { files, dirty, last_written, .. } = self;
        let file = &files.get(&ino).ok_or(libc::EBADF)?.0;
        let d = dirty.get_mut(&ino).expect("created above");
        let end = offset + data.len() as u64;
        let (first, last) = (offset / PAGE, (end - 1) / PAGE);
        for p in first..=last {
            if !d.pages.contains_key(&p) {
                let page = load_page(file, p, d.durable_len).map_err(|e| errno(&e))?;
                d.pages.insert(p, page);
            }
            let page = d.pages.get_mut(&p).expect("present");
            let (ps, pe) = (p * PAGE, p * PAGE + PAGE);
            let (s, e) = (offset.max(ps), end.min(pe));
            page[(s - ps) as usize..(e - ps) as usize].copy_from_slice(&data[(s - offset) as usize..(e - offset) as usize]);
        }
        d.size = d.size.max(end);
        *last_written = Some((ino, last));
        Ok(())
    }

    fn read(&self, ino: u64, offset: u64, len: u64) -> Result<Vec<u8>, i32> {
        let file = &self.files.get(&ino).ok_or(libc::EBADF)?.0;
        let Some(d) = self.dirty.get(&ino) else {
            let mut buf = vec![0u8; len as usize];
            let n = read_full_at(file, &mut buf, offset).map_err(|e| errno(&e))?;
            buf.truncate(n);
            return Ok(buf);
        };
        let end = (offset + len).min(d.size);
        if offset >= end {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; (end - offset) as usize];
        let durable_end = end.min(d.durable_len);
        if offset < durable_end {
            read_full_at(file, &mut buf[..(durable_end - offset) as usize], offset).map_err(|e| errno(&e))?;
        }
        for (p, page) in d.pages.range(offset / PAGE..=(end - 1) / PAGE) {
            let (ps, pe) = (p * PAGE, p * PAGE + PAGE);
            let (s, e) = (offset.max(ps), end.min(pe));
            buf[(s - offset) as usize..(e - offset) as usize].copy_from_slice(&page[(s - ps) as usize..(e - ps) as usize]);
        }
        Ok(buf)
    }

    /// Makes the inode's data and size durable in the backing folder.
    fn sync(&mut self, ino: u64, counters: &SharedCounters) -> Result<(), i32> {
        let Some(d) = self.dirty.remove(&ino) else { return Ok(()) };
        let Some((file, _)) = self.files.get(&ino) else {
            self.dirty.insert(ino, d);
            return Err(libc::EBADF);
        };
        match write_durable(file, &d) {
            Ok((bytes, pages)) => {
                counters.bytes_synced.fetch_add(bytes, Ordering::Relaxed);
                counters.pages_synced.fetch_add(pages, Ordering::Relaxed);
                if self.last_written.is_some_and(|(i, _)| i == ino) {
                    self.last_written = None;
                }
                Ok(())
            }
            Err(e) => {
                self.dirty.insert(ino, d);
                Err(errno(&e))
            }
        }
    }

    /// Forgets the inode's volatile state when nothing can reach it any more
    /// (unlinked or replaced, and no handle open).
    fn forget_if_gone(&mut self, ino: u64) {
        if !self.paths.contains_key(&ino) && !self.files.contains_key(&ino) {
            self.dirty.remove(&ino);
        }
    }

    /// The state thrown away by a power cut: returns the unsynced bytes lost.
    fn cut(&mut self, torn: bool) -> u64 {
        if torn {
            if let Some((ino, p)) = self.last_written {
                if let Some(page) = self.dirty.get(&ino).and_then(|d| d.pages.get(&p).map(|pg| (d.size, pg))) {
                    let (size, page) = page;
                    let n = size.saturating_sub(p * PAGE).min(PAGE / 2) as usize;
                    let target = match self.files.get(&ino) {
                        Some((f, _)) => f.try_clone().ok(),
                        None => self.paths.get(&ino).and_then(|path| OpenOptions::new().write(true).open(path).ok()),
                    };
                    if let Some(f) = target {
                        let _ = f.write_all_at(&page[..n], p * PAGE);
                    }
                }
            }
        }
        let lost = self.dirty.values().map(Dirty::unsynced_bytes).sum();
        self.dirty.clear();
        self.files.clear();
        self.handles.clear();
        self.last_written = None;
        self.dead = true;
        lost
    }
}

/// Reads page `p` of the durable file; bytes at or past `durable_len` are zero.
fn load_page(file: &File, p: u64, durable_len: u64) -> io::Result<Box<[u8]>> {
    let mut page = vec![0u8; PAGE as usize].into_boxed_slice();
    let start = p * PAGE;
    if start < durable_len {
        let n = (durable_len - start).min(PAGE) as usize;
        read_full_at(file, &mut page[..n], start)?;
    }
    Ok(page)
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Writes the dirty state of one inode to its backing file: returns (bytes, pages).
fn write_durable(file: &File, d: &Dirty) -> io::Result<(u64, u64)> {
    let backing_len = file.metadata()?.len();
    if d.durable_len < backing_len {
        file.set_len(d.durable_len)?;
    }
    let (mut bytes, mut pages) = (0, 0);
    for (p, page) in &d.pages {
        let start = p * PAGE;
        if start >= d.size {
            continue;
        }
        let n = (d.size - start).min(PAGE) as usize;
        file.write_all_at(&page[..n], start)?;
        bytes += n as u64;
        pages += 1;
    }
    if file.metadata()?.len() != d.size {
        file.set_len(d.size)?;
    }
    Ok((bytes, pages))
}

/// The filesystem the kernel talks to: one per mount.
struct CutFs {
    inner: Arc<Mutex<Inner>>,
    counters: Arc<SharedCounters>,
    stall: Arc<Stall>,
}

/// The name whose lookup parks the filesystem's only request thread while
/// [`PowerCutFs::stall`] is on.
const STALL_NAME: &str = ".iomt-stall";

/// A hung server: while on, the request thread sits in the lookup of
/// [`STALL_NAME`] (made by the test itself) and reads no other request. The
/// requests of other processes queue in the kernel unanswered; since none of
/// them was read, a process waiting on one can still be killed (as on a hung
/// NFS mount), which a request read and never answered would not allow.
#[derive(Default)]
struct Stall {
    /// (stalled, the request thread is parked)
    state: Mutex<(bool, bool)>,
    changed: std::sync::Condvar,
}

impl Stall {
    /// Called in the lookup of STALL_NAME: waits while stalled.
    fn park(&self) {
        let mut g = self.state.lock().unwrap_or_else(|p| p.into_inner());
        g.1 = true;
        self.changed.notify_all();
        while g.0 {
            g = self.changed.wait(g).unwrap_or_else(|p| p.into_inner());
        }
        g.1 = false;
        self.changed.notify_all();
    }
}

impl CutFs {
    /// The mount's state, or EIO once the mount was cut off.
    fn lock(&self) -> Result<MutexGuard<'_, Inner>, i32> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if g.dead {
            Err(libc::EIO)
        } else {
            Ok(g)
        }
    }
}

macro_rules! try_or_reply {
    ($reply:expr, $e:expr) => {
        match $e {
            Ok(v) => v,
            Err(code) => return $reply.error(code),
        }
    };
}

impl Filesystem for CutFs {
    /// Asks for parallel lookups (`FUSE_PARALLEL_DIROPS`, protocol 7.25, in
    /// the kernel's fuse.h), as network filesystems have: without it the
    /// kernel holds a folder's lock for each lookup in it, so while one
    /// lookup is parked by [`PowerCutFs::stall`] every other lookup in that
    /// folder would wait on the lock, uninterruptibly (a process that cannot
    /// even be killed), instead of waiting for the server's answer, which a
    /// kill ends. A hung NFS or CIFS share behaves like the latter.
    fn init(&mut self, _req: &Request<'_>, config: &mut fuser::KernelConfig) -> Result<(), libc::c_int> {
        const FUSE_PARALLEL_DIROPS: u32 = 1 << 18;
        if let Err(missing) = config.add_capabilities(FUSE_PARALLEL_DIROPS) {
            eprintln!("powercut_fs: the kernel does not offer parallel lookups ({missing:#x}); a stall blocks lookups in its folder uninterruptibly");
        }
        Ok(())
    }

    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        if name == STALL_NAME {
            self.stall.park();
            return reply.error(libc::ENOENT);
        }
        let mut g = try_or_reply!(reply, self.lock());
        let path = try_or_reply!(reply, g.child(parent, name));
        let attr = try_or_reply!(reply, g.entry(path));
        reply.entry(&TTL, &attr, 0);
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        let g = try_or_reply!(reply, self.lock());
        let attr = try_or_reply!(reply, g.getattr(ino));
        reply.attr(&TTL, &attr);
    }

    fn setattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<u64>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<u32>,
        reply: ReplyAttr,
    ) {
        let mut g = try_or_reply!(reply, self.lock());
        if let Some(mode) = mode {
            let path = try_or_reply!(reply, g.path(ino));
            try_or_reply!(reply, std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o7777)).map_err(|e| errno(&e)));
        }
        if let Some(size) = size {
            try_or_reply!(reply, g.truncate(ino, size));
        }
        let attr = try_or_reply!(reply, g.getattr(ino));
        reply.attr(&TTL, &attr);
    }

    fn mkdir(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let mut g = try_or_reply!(reply, self.lock());
        let path = try_or_reply!(reply, g.child(parent, name));
        try_or_reply!(reply, std::fs::create_dir(&path).map_err(|e| errno(&e)));
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & !umask & 0o7777));
        let attr = try_or_reply!(reply, g.entry(path));
        reply.entry(&TTL, &attr, 0);
    }

    fn unlink(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let mut g = try_or_reply!(reply, self.lock());
        let path = try_or_reply!(reply, g.child(parent, name));
        let meta = try_or_reply!(reply, std::fs::symlink_metadata(&path).map_err(|e| errno(&e)));
        try_or_reply!(reply, std::fs::remove_file(&path).map_err(|e| errno(&e)));
        let ino = g.fuse_ino(meta.ino());
        if g.paths.get(&ino) == Some(&path) {
            g.paths.remove(&ino);
        }
        g.forget_if_gone(ino);
        reply.ok();
    }

    fn rmdir(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let mut g = try_or_reply!(reply, self.lock());
        let path = try_or_reply!(reply, g.child(parent, name));
        let meta = try_or_reply!(reply, std::fs::symlink_metadata(&path).map_err(|e| errno(&e)));
        try_or_reply!(reply, std::fs::remove_dir(&path).map_err(|e| errno(&e)));
        let ino = g.fuse_ino(meta.ino());
        g.paths.remove(&ino);
        reply.ok();
    }

    fn rename(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, newparent: u64, newname: &OsStr, flags: u32, reply: ReplyEmpty) {
        if flags != 0 {
            // RENAME_NOREPLACE / RENAME_EXCHANGE: not needed by the gateway.
            return reply.error(libc::EINVAL);
        }
        let mut g = try_or_reply!(reply, self.lock());
        let from = try_or_reply!(reply, g.child(parent, name));
        let to = try_or_reply!(reply, g.child(newparent, newname));
        let replaced = std::fs::symlink_metadata(&to).ok().map(|m| g.fuse_ino(m.ino()));
        try_or_reply!(reply, std::fs::rename(&from, &to).map_err(|e| errno(&e)));
        if let Some(old) = replaced {
            if g.paths.get(&old) == Some(&to) {
                g.paths.remove(&old);
            }
            g.forget_if_gone(old);
        }
        // The moved entry and, for a folder, everything below it.
        for path in g.paths.values_mut() {
            if let Ok(rest) = path.strip_prefix(&from) {
                *path = if rest.as_os_str().is_empty() { to.clone() } else { to.join(rest) };
            }
        }
        reply.ok();
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, flags: i32, reply: ReplyOpen) {
        let mut g = try_or_reply!(reply, self.lock());
        try_or_reply!(reply, g.open_file(ino));
        if flags & libc::O_TRUNC != 0 {
            try_or_reply!(reply, g.truncate(ino, 0));
        }
        let fh = g.new_handle(ino, flags);
        reply.opened(fh, fuser::consts::FOPEN_DIRECT_IO);
    }

    fn create(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, mode: u32, umask: u32, flags: i32, reply: ReplyCreate) {
        let mut g = try_or_reply!(reply, self.lock());
        let path = try_or_reply!(reply, g.child(parent, name));
        let mut opts = OpenOptions::new();
        opts.read(true).write(true).mode(mode & !umask & 0o7777);
        if flags & libc::O_EXCL != 0 {
            opts.create_new(true);
        } else {
            opts.create(true);
        }
        let file = try_or_reply!(reply, opts.open(&path).map_err(|e| errno(&e)));
        let attr = try_or_reply!(reply, g.entry(path));
        match g.files.get_mut(&attr.ino) {
            Some((_, refs)) => *refs += 1,
            None => {
                g.files.insert(attr.ino, (file, 1));
            }
        }
        if flags & libc::O_TRUNC != 0 {
            try_or_reply!(reply, g.truncate(attr.ino, 0));
        }
        let attr = try_or_reply!(reply, g.getattr(attr.ino));
        let fh = g.new_handle(attr.ino, flags);
        reply.created(&TTL, &attr, 0, fh, fuser::consts::FOPEN_DIRECT_IO);
    }

    fn read(&mut self, _req: &Request<'_>, ino: u64, _fh: u64, offset: i64, size: u32, _flags: i32, _lock_owner: Option<u64>, reply: ReplyData) {
        let g = try_or_reply!(reply, self.lock());
        let data = try_or_reply!(reply, g.read(ino, offset.max(0) as u64, size as u64));
        reply.data(&data);
    }

    fn write(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        fh: u64,
        offset: i64,
        data: &[u8],
        _write_flags: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyWrite,
    ) {
        let mut g = try_or_reply!(reply, self.lock());
        let append = g.handles.get(&fh).is_some_and(|h| h.append);
        let offset = if append { try_or_reply!(reply, g.dirty_mut(ino)).size } else { offset.max(0) as u64 };
        try_or_reply!(reply, g.write(ino, offset, data));
        self.counters.bytes_written.fetch_add(data.len() as u64, Ordering::Relaxed);
        reply.written(data.len() as u32);
    }

    fn flush(&mut self, _req: &Request<'_>, _ino: u64, _fh: u64, _lock_owner: u64, reply: ReplyEmpty) {
        // close(2) makes nothing durable.
        reply.ok();
    }

    fn release(&mut self, _req: &Request<'_>, ino: u64, fh: u64, _flags: i32, _lock_owner: Option<u64>, _flush: bool, reply: ReplyEmpty) {
        let mut g = try_or_reply!(reply, self.lock());
        if g.handles.remove(&fh).is_some() {
            if let Some((_, refs)) = g.files.get_mut(&ino) {
                *refs -= 1;
                if *refs == 0 {
                    g.files.remove(&ino);
                }
            }
        }
        g.forget_if_gone(ino);
        reply.ok();
    }

    fn fsync(&mut self, _req: &Request<'_>, ino: u64, _fh: u64, _datasync: bool, reply: ReplyEmpty) {
        let mut g = try_or_reply!(reply, self.lock());
        self.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
        try_or_reply!(reply, g.sync(ino, &self.counters));
        reply.ok();
    }

    fn opendir(&mut self, _req: &Request<'_>, ino: u64, _flags: i32, reply: ReplyOpen) {
        let g = try_or_reply!(reply, self.lock());
        try_or_reply!(reply, g.path(ino));
        reply.opened(0, 0);
    }

    fn readdir(&mut self, _req: &Request<'_>, ino: u64, _fh: u64, offset: i64, mut reply: ReplyDirectory) {
        let g = try_or_reply!(reply, self.lock());
        let path = try_or_reply!(reply, g.path(ino));
        let mut entries = vec![(ino, FileType::Directory, OsStr::new(".").to_os_string())];
        entries.push((fuser::FUSE_ROOT_ID, FileType::Directory, OsStr::new("..").to_os_string()));
        let dir = try_or_reply!(reply, std::fs::read_dir(&path).map_err(|e| errno(&e)));
        for e in dir.flatten() {
            let kind = match e.file_type() {
                Ok(t) if t.is_dir() => FileType::Directory,
                Ok(t) if t.is_symlink() => FileType::Symlink,
                _ => FileType::RegularFile,
            };
            entries.push((g.fuse_ino(std::os::unix::fs::DirEntryExt::ino(&e)), kind, e.file_name()));
        }
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset.max(0) as usize) {
            if reply.add(ino, (i + 1) as i64, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(&mut self, _req: &Request<'_>, _ino: u64, _fh: u64, _datasync: bool, reply: ReplyEmpty) {
        let _g = try_or_reply!(reply, self.lock());
        // Namespace changes are durable at once in this model.
        self.counters.dir_fsyncs.fetch_add(1, Ordering::Relaxed);
        reply.ok();
    }

    fn statfs(&mut self, _req: &Request<'_>, _ino: u64, reply: ReplyStatfs) {
        let g = try_or_reply!(reply, self.lock());
        let Ok(c) = CString::new(g.backing.as_os_str().as_bytes()) else { return reply.error(libc::EINVAL) };
        // SAFETY: statvfs fills the zeroed struct we own from a valid C string.
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
            return reply.error(errno(&io::Error::last_os_error()));
        }
        reply.statfs(
            s.f_blocks as u64,
            s.f_bfree as u64,
            s.f_bavail as u64,
            s.f_files as u64,
            s.f_ffree as u64,
            s.f_bsize as u32,
            s.f_namemax as u32,
            s.f_frsize as u32,
        );
    }

    fn access(&mut self, _req: &Request<'_>, _ino: u64, _mask: i32, reply: ReplyEmpty) {
        reply.ok();
    }
}

/// A mounted power-cut filesystem. Unmounted on drop (also while a test
/// panics); processes that still use it then get errors, never a hang.
pub struct PowerCutFs {
    backing: PathBuf,
    mountpoint: PathBuf,
    counters: Arc<SharedCounters>,
    torn: AtomicBool,
    stall: Arc<Stall>,
    /// The test's own lookup that parks the request thread, while stalled.
    staller: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The live mount: its state and its session thread.
    live: Mutex<Option<(Arc<Mutex<Inner>>, fuser::BackgroundSession)>>,
}

impl PowerCutFs {
    /// Mounts a fresh filesystem on `{root}/mnt`, backed by `{root}/backing`
    /// (both created if missing).
    pub fn mount(root: &Path) -> io::Result<PowerCutFs> {
        let backing = root.join("backing");
        let mountpoint = root.join("mnt");
        std::fs::create_dir_all(&backing)?;
        std::fs::create_dir_all(&mountpoint)?;
        let fs = PowerCutFs {
            backing: backing.canonicalize()?,
            mountpoint: mountpoint.canonicalize()?,
            counters: Arc::new(SharedCounters::default()),
            torn: AtomicBool::new(false),
            stall: Arc::new(Stall::default()),
            staller: Mutex::new(None),
            live: Mutex::new(None),
        };
        fs.mount_fresh()?;
        Ok(fs)
    }

    fn mount_fresh(&self) -> io::Result<()> {
        let inner = Arc::new(Mutex::new(Inner::new(&self.backing)?));
        let fs = CutFs { inner: inner.clone(), counters: self.counters.clone(), stall: self.stall.clone() };
        let options = [MountOption::FSName("iomt-powercut".into()), MountOption::NoAtime];
        let session = fuser::spawn_mount2(fs, &self.mountpoint, &options)?;
        *self.live.lock().unwrap_or_else(|p| p.into_inner()) = Some((inner, session));
        Ok(())
    }

    /// Where the filesystem is mounted.
    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// The backing folder: the "disk" (what survives a cut). Read it only.
    pub fn backing(&self) -> &Path {
        &self.backing
    }

    /// Whether a cut first writes half of the last unsynced page (a torn
    /// sector write).
    pub fn set_torn_writes(&self, on: bool) {
        self.torn.store(on, Ordering::Relaxed);
    }

    /// Hangs the filesystem, as a network share whose server stopped
    /// answering: from now on no request is read, so every operation on it
    /// (open, stat, write, fsync...) blocks until [`PowerCutFs::resume`]. A
    /// process blocked on it can still be killed. Returns once the request
    /// thread is parked.
    pub fn stall(&self) {
        let mut staller = self.staller.lock().unwrap_or_else(|p| p.into_inner());
        if staller.is_some() {
            return;
        }
        self.stall.state.lock().unwrap_or_else(|p| p.into_inner()).0 = true;
        let probe = self.mountpoint.join(STALL_NAME);
        *staller = Some(std::thread::spawn(move || {
            let _ = std::fs::symlink_metadata(probe);
        }));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut g = self.stall.state.lock().unwrap_or_else(|p| p.into_inner());
        while !g.1 {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            assert!(!left.is_zero(), "the FUSE request thread did not park within 10 s");
            g = self.stall.changed.wait_timeout(g, left).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    /// Ends a [`PowerCutFs::stall`]: the queued requests are answered.
    pub fn resume(&self) {
        let staller = self.staller.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.stall.state.lock().unwrap_or_else(|p| p.into_inner()).0 = false;
        self.stall.changed.notify_all();
        if let Some(t) = staller {
            let _ = t.join();
        }
    }

    pub fn counters(&self) -> Counters {
        self.counters.snapshot()
    }

    /// Cuts the power: every unsynced byte and size change is gone, the old
    /// mount is detached (its open files fail from now on) and a fresh
    /// filesystem, which knows only what reached the backing folder, is
    /// mounted in its place. Stop the processes using the mount first (as
    /// the power would). Returns the unsynced bytes thrown away.
    pub fn power_cut(&self) -> io::Result<u64> {
        let lost = self.take_down();
        self.counters.power_cuts.fetch_add(1, Ordering::Relaxed);
        self.counters.bytes_lost.fetch_add(lost, Ordering::Relaxed);
        self.mount_fresh()?;
        Ok(lost)
    }

    /// Discards the live mount's volatile state and unmounts it.
    fn take_down(&self) -> u64 {
        self.resume();
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some((inner, session)) = live else { return 0 };
        let lost = inner.lock().unwrap_or_else(|p| p.into_inner()).cut(self.torn.load(Ordering::Relaxed));
        lazy_unmount(&self.mountpoint);
        // Its Mount finds nothing left to unmount; the session thread ends
        // when the kernel drops the connection (right away when unused).
        drop(session);
        lost
    }
}

impl Drop for PowerCutFs {
    fn drop(&mut self) {
        self.take_down();
    }
}

/// umount2(MNT_DETACH): never fails for a busy mount.
fn lazy_unmount(path: &Path) {
    if let Ok(c) = CString::new(path.as_os_str().as_bytes()) {
        // SAFETY: a valid C string; no memory is shared with the kernel.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

/// Mounts the harness in `{root}`, or returns None after printing why it
/// cannot run here (`SKIPPED: ...`). Under IOMT_REQUIRE_ALL=1 (scripts/test.sh,
/// CI) it fails instead.
pub fn mount_or_skip(test: &str, root: &Path) -> Option<PowerCutFs> {
    // SAFETY: geteuid has no preconditions.
    let why = if unsafe { libc::geteuid() } != 0 {
        "it needs root to mount a FUSE filesystem without fusermount".to_string()
    } else if !Path::new("/dev/fuse").exists() {
        "/dev/fuse is missing (modprobe fuse, or run the container with --device /dev/fuse)".to_string()
    } else {
        match PowerCutFs::mount(root) {
            Ok(fs) => return Some(fs),
            Err(e) => format!("mounting the FUSE harness failed: {e}"),
        }
    };
    super::skip(test, format!("the power-cut harness cannot run: {why}"));
    None
}
