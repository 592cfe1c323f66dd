//! Durable checkpoints: engine state plus the input offsets it covers.
//!
//! File format (little-endian), version 4 (3 had one channel registry and
//! event counts per engine, not per partition, and no per-partition
//! snapshots; 2 had the engine's bucket rings as positional columns; 1 had
//! no compacted users, ticket last-seen times or sweep day):
//!
//! ```text
//! magic    8 bytes  "CXPCKPT\0"
//! version  u32      4
//! reserved u32      0
//! length   u64      bytes of the body
//! checksum u64      XXH3-64 of the body
//! body:    offsets count u64, then per offset: topic (u64 length + bytes),
//!          partition i32, next offset i64; then the engine snapshot bytes
//! ```
//!
//! Files are written atomically: a temporary file in the same directory,
//! fsync, rename to `checkpoint-<seq>.ckpt`, fsync of the directory. The
//! body is streamed into the temporary file ([`CheckpointStore::write_streamed`]:
//! the engine snapshot is encoded through a bounded buffer, never whole in
//! memory), its length and checksum computed on the way, and the header
//! written at offset 0 last. The
//! newest `keep` files are kept. Loading tries the newest first and falls
//! back to older ones; every file it refuses is reported with the reason
//! (truncated, checksum mismatch, another format version, bad magic, not a
//! regular file, and, from the caller, engine state that does not validate),
//! and none of them is ever loaded.
//!
//! The files hold user and ticket ids: they are created mode 0600, the
//! directory (when cxpulse creates it) 0700. The temporary file is created
//! exclusively (`O_CREAT|O_EXCL|O_NOFOLLOW`): a file or symlink planted at
//! its name is never written through (a stale one is unlinked, which never
//! follows a link, and creation retried once). Files are opened for reading
//! without following symlinks, and only regular files are read (a FIFO
//! cannot hang the start).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::state::codec::Summed;

pub const MAGIC: [u8; 8] = *b"CXPCKPT\0";
pub const VERSION: u32 = 4;
const HEADER: usize = 8 + 4 + 4 + 8 + 8;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("not a cxpulse checkpoint (bad magic)")]
    BadMagic,
    #[error("checkpoint format version {0} is not supported (this build reads {VERSION})")]
    UnsupportedVersion(u32),
    #[error("checkpoint is truncated ({have} of {want} bytes)")]
    Truncated { have: usize, want: usize },
    #[error("checkpoint checksum mismatch (corrupt)")]
    ChecksumMismatch,
    #[error("checkpoint body is malformed: {0}")]
    Malformed(&'static str),
    #[error("not a regular file")]
    NotAFile,
    #[error("checkpoint engine state is invalid: {0}")]
    State(#[from] crate::state::codec::SnapshotError),
    #[error("checkpoint I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Where a partition's consumption resumes: the next offset to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedOffset {
    pub topic: String,
    pub partition: i32,
    pub next_offset: i64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    pub offsets: Vec<SavedOffset>,
    /// [`crate::engine::Engine::snapshot`] bytes.
    pub engine: Vec<u8>,
}

pub fn encode(cp: &Checkpoint) -> Vec<u8> {
    let mut body = encode_offsets(&cp.offsets);
    body.extend_from_slice(&cp.engine);
    let mut out = Vec::with_capacity(HEADER + body.len());
    out.extend_from_slice(&header(
        body.len() as u64,
        xxhash_rust::xxh3::xxh3_64(&body),
    ));
    out.extend_from_slice(&body);
    out
}

/// The body's offsets section.
fn encode_offsets(offsets: &[SavedOffset]) -> Vec<u8> {
    let mut body =
        Vec::with_capacity(8 + offsets.iter().map(|o| 20 + o.topic.len()).sum::<usize>());
    body.extend_from_slice(&(offsets.len() as u64).to_le_bytes());
    for o in offsets {
        body.extend_from_slice(&(o.topic.len() as u64).to_le_bytes());
        body.extend_from_slice(o.topic.as_bytes());
        body.extend_from_slice(&o.partition.to_le_bytes());
        body.extend_from_slice(&o.next_offset.to_le_bytes());
    }
    body
}

/// The header of a body of `len` bytes whose XXH3-64 is `checksum`.
fn header(len: u64, checksum: u64) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&len.to_le_bytes());
    h[24..32].copy_from_slice(&checksum.to_le_bytes());
    h
}

pub fn decode(bytes: &[u8]) -> Result<Checkpoint, CheckpointError> {
    if bytes.len() < 8 || bytes[..8] != MAGIC {
        return Err(CheckpointError::BadMagic);
    }
    if bytes.len() < HEADER {
        return Err(CheckpointError::Truncated {
            have: bytes.len(),
            want: HEADER,
        });
    }
    let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap_or([0; 4]));
    let u64_at = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().unwrap_or([0; 8]));
    let version = u32_at(8);
    if version != VERSION {
        return Err(CheckpointError::UnsupportedVersion(version));
    }
    let len = u64_at(16) as usize;
    let want = HEADER.saturating_add(len);
    if bytes.len() < want {
        return Err(CheckpointError::Truncated {
            have: bytes.len(),
            want,
        });
    }
    if bytes.len() > want {
        return Err(CheckpointError::Malformed("bytes after the body"));
    }
    let body = &bytes[HEADER..];
    if xxhash_rust::xxh3::xxh3_64(body) != u64_at(24) {
        return Err(CheckpointError::ChecksumMismatch);
    }
    let mut at = 0usize;
    let mut take = |n: usize| -> Result<&[u8], CheckpointError> {
        let s = body
            .get(at..at.saturating_add(n))
            .ok_or(CheckpointError::Malformed("offsets section"))?;
        at += n;
        Ok(s)
    };
    let count = u64::from_le_bytes(take(8)?.try_into().unwrap_or([0; 8]));
    let mut offsets = Vec::new();
    for _ in 0..count {
        let tl = u64::from_le_bytes(take(8)?.try_into().unwrap_or([0; 8])) as usize;
        let topic = String::from_utf8(take(tl)?.to_vec())
            .map_err(|_| CheckpointError::Malformed("topic name"))?;
        let partition = i32::from_le_bytes(take(4)?.try_into().unwrap_or([0; 4]));
        let next_offset = i64::from_le_bytes(take(8)?.try_into().unwrap_or([0; 8]));
        offsets.push(SavedOffset {
            topic,
            partition,
            next_offset,
        });
    }
    Ok(Checkpoint {
        offsets,
        engine: body[at..].to_vec(),
    })
}

/// A directory of checkpoint files.
#[derive(Clone, Debug)]
pub struct CheckpointStore {
    dir: PathBuf,
    keep: usize,
}

/// What a write did, for metrics and logs.
#[derive(Clone, Debug)]
pub struct Written {
    pub path: PathBuf,
    pub bytes: usize,
}

/// The newest loadable checkpoint (or what was made of it, see
/// [`CheckpointStore::load_accepting`]) and every newer file that was refused.
#[derive(Debug)]
pub struct Loaded<T = Checkpoint> {
    pub checkpoint: Option<(PathBuf, T)>,
    pub rejected: Vec<(PathBuf, CheckpointError)>,
}

impl CheckpointStore {
    pub fn new(dir: impl Into<PathBuf>, keep: usize) -> CheckpointStore {
        CheckpointStore {
            dir: dir.into(),
            keep: keep.max(1),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn io(path: &Path) -> impl FnOnce(io::Error) -> CheckpointError + '_ {
        move |source| CheckpointError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Checkpoint files, newest first (by sequence number in the name).
    pub fn files(&self) -> Vec<(u64, PathBuf)> {
        let mut v: Vec<(u64, PathBuf)> = fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                let seq = name
                    .strip_prefix("checkpoint-")?
                    .strip_suffix(".ckpt")?
                    .parse()
                    .ok()?;
                Some((seq, e.path()))
            })
            .collect();
        v.sort_by_key(|e| std::cmp::Reverse(e.0));
        v
    }

    /// Writes a new checkpoint atomically and prunes old ones.
    pub fn write(&self, cp: &Checkpoint) -> Result<Written, CheckpointError> {
        self.write_streamed(&cp.offsets, |out| out.write_all(&cp.engine))
    }

    /// Like [`Self::write`], the engine snapshot bytes written by `engine`
    /// into the temporary file as they are encoded (e.g.
    /// [`crate::engine::snapshot::FrozenEngine::write_to`]): the body's
    /// length and checksum are computed on the way and the header is
    /// written at offset 0 afterwards. On any error (of `engine` too) the
    /// temporary file is removed and no checkpoint file is left; the error
    /// names the checkpoint's path.
    pub fn write_streamed(
        &self,
        offsets: &[SavedOffset],
        engine: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> Result<Written, CheckpointError> {
        if !self.dir.is_dir() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.dir)
                .map_err(Self::io(&self.dir))?;
        }
        let seq = self.files().first().map_or(1, |(s, _)| s + 1);
        let path = self.dir.join(format!("checkpoint-{seq:020}.ckpt"));
        let tmp = self.dir.join(format!(".checkpoint-{seq:020}.tmp"));
        let result = (|| {
            let mut f = create_private(&tmp)?;
            f.write_all(&[0u8; HEADER])?;
            let mut body = Summed::new(&mut f);
            body.write_all(&encode_offsets(offsets))?;
            engine(&mut body)?;
            let (len, sum) = (body.len(), body.digest());
            f.write_all_at(&header(len, sum), 0)?;
            f.sync_all()?;
            drop(f);
            fs::rename(&tmp, &path)?;
            File::open(&self.dir)?.sync_all()?;
            Ok(HEADER + len as usize)
        })();
        let bytes = match result {
            Ok(n) => n,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(Self::io(&path)(e));
            }
        };
        for (_, old) in self.files().into_iter().skip(self.keep) {
            let _ = fs::remove_file(old);
        }
        Ok(Written { path, bytes })
    }

    /// The newest checkpoint that reads back intact.
    pub fn load_latest(&self) -> Loaded {
        self.load(true)
    }

    /// The newest checkpoint if it is good, without reading older files
    /// (`on_corrupt = "empty"` or `"fail"`: they would not be used).
    pub fn load_newest(&self) -> Loaded {
        self.load(false)
    }

    fn load(&self, fall_back: bool) -> Loaded {
        self.load_accepting(fall_back, Ok)
    }

    /// Like [`Self::load_latest`] (`fall_back`) or [`Self::load_newest`],
    /// each checkpoint that reads back intact also passed to `accept` (the
    /// engine's restore, which validates the state): a file it refuses is
    /// refused like one with a bad checksum.
    pub fn load_accepting<T>(
        &self,
        fall_back: bool,
        mut accept: impl FnMut(Checkpoint) -> Result<T, CheckpointError>,
    ) -> Loaded<T> {
        let mut out = Loaded {
            checkpoint: None,
            rejected: Vec::new(),
        };
        for (_, path) in self.files() {
            if !fall_back && !out.rejected.is_empty() {
                break;
            }
            let read = read_regular(&path)
                .and_then(|b| decode(&b))
                .and_then(&mut accept);
            match read {
                Ok(cp) => {
                    out.checkpoint = Some((path, cp));
                    break;
                }
                Err(e) => out.rejected.push((path, e)),
            }
        }
        out
    }
}

/// Creates `path` for writing, mode 0600, exclusively and without following
/// a symlink. Something already there (a temporary file left by a crash, or
/// planted) is unlinked (never followed) and creation retried once.
fn create_private(path: &Path) -> io::Result<File> {
    let open = || {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
    };
    match open() {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            fs::remove_file(path)?;
            open()
        }
        r => r,
    }
}

/// The bytes of `path` if it is a regular file (not through a symlink, and
/// not a FIFO or device, whose read could block or never end).
fn read_regular(path: &Path) -> Result<Vec<u8>, CheckpointError> {
    let io = CheckpointStore::io;
    let mut f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => CheckpointError::NotAFile,
            _ => io(path)(e),
        })?;
    if !f.metadata().map_err(io(path))?.is_file() {
        return Err(CheckpointError::NotAFile);
    }
    let mut b = Vec::new();
    f.read_to_end(&mut b).map_err(io(path))?;
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: u8) -> Checkpoint {
        Checkpoint {
            offsets: vec![
                SavedOffset {
                    topic: "events".into(),
                    partition: 0,
                    next_offset: 100 + n as i64,
                },
                SavedOffset {
                    topic: "events".into(),
                    partition: 1,
                    next_offset: 7,
                },
            ],
            engine: vec![n; 1000],
        }
    }

    #[test]
    fn round_trips() {
        let cp = sample(3);
        assert_eq!(decode(&encode(&cp)).unwrap(), cp);
    }

    #[test]
    fn truncated_flipped_and_other_version_are_detected() {
        let bytes = encode(&sample(1));
        for cut in [0, 5, HEADER - 1, HEADER, bytes.len() - 1] {
            assert!(decode(&bytes[..cut]).is_err(), "cut {cut}");
        }
        assert!(matches!(
            decode(&bytes[..bytes.len() - 10]),
            Err(CheckpointError::Truncated { .. })
        ));
        for i in [HEADER, HEADER + 20, bytes.len() - 1] {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            assert!(
                matches!(decode(&b), Err(CheckpointError::ChecksumMismatch)),
                "flip at {i}"
            );
        }
        let mut b = bytes.clone();
        // Versions 1 to 3, the formats before compaction, before the
        // per-family state and before per-partition state, and a future version 5.
        for v in [1u32, 2, 3, 5] {
            b[8..12].copy_from_slice(&v.to_le_bytes());
            assert!(matches!(
                decode(&b),
                Err(CheckpointError::UnsupportedVersion(x)) if x == v
            ));
        }
        let mut b = bytes;
        b[0] = b'X';
        assert!(matches!(decode(&b), Err(CheckpointError::BadMagic)));
    }

    #[test]
    fn store_keeps_the_newest_and_falls_back_past_corrupt_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::new(dir.path(), 2);
        for n in 1..=3 {
            store.write(&sample(n)).unwrap();
        }
        let files = store.files();
        assert_eq!(files.len(), 2);
        assert_eq!(files[0].0, 3);
        let loaded = store.load_latest();
        assert_eq!(loaded.checkpoint.unwrap().1, sample(3));
        assert!(loaded.rejected.is_empty());
        // Corrupt the newest: the previous good one is loaded, the bad one reported.
        let mut b = fs::read(&files[0].1).unwrap();
        let last = b.len() - 1;
        b[last] ^= 0xff;
        fs::write(&files[0].1, b).unwrap();
        let loaded = store.load_latest();
        assert_eq!(loaded.checkpoint.unwrap().1, sample(2));
        assert_eq!(loaded.rejected.len(), 1);
        assert!(matches!(
            loaded.rejected[0].1,
            CheckpointError::ChecksumMismatch
        ));
        // Without falling back (on_corrupt = empty / fail), the good older file is not used.
        let newest = store.load_newest();
        assert!(newest.checkpoint.is_none());
        assert_eq!(newest.rejected.len(), 1);
    }

    fn mode(p: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn files_are_private_and_a_created_directory_too() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("state").join("cxpulse");
        let store = CheckpointStore::new(&sub, 2);
        let w = store.write(&sample(1)).unwrap();
        assert_eq!(mode(&w.path), 0o600);
        assert_eq!(mode(&sub), 0o700);
        assert_eq!(mode(&dir.path().join("state")), 0o700);
        // An existing directory keeps its mode (an operator's choice).
        let open = tempfile::tempdir().unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(open.path(), fs::Permissions::from_mode(0o750)).unwrap();
        let w = CheckpointStore::new(open.path(), 2)
            .write(&sample(2))
            .unwrap();
        assert_eq!((mode(open.path()), mode(&w.path)), (0o750, 0o600));
    }

    #[test]
    fn a_symlink_planted_at_the_temporary_name_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::new(dir.path(), 5);
        store.write(&sample(1)).unwrap();
        // The next write uses sequence 2: plant links at its temporary name
        // (to a file the attacker wants overwritten) and at its final name.
        let target = dir.path().join("victim");
        fs::write(&target, b"precious").unwrap();
        let tmp = dir.path().join(format!(".checkpoint-{:020}.tmp", 2));
        std::os::unix::fs::symlink(&target, &tmp).unwrap();
        let fin = dir.path().join(format!("checkpoint-{:020}.ckpt", 2));
        let before = mode(&target);
        let w = store.write(&sample(2)).unwrap();
        assert_eq!(w.path, fin);
        assert_eq!(fs::read(&target).unwrap(), b"precious");
        assert_eq!(mode(&target), before);
        assert!(fs::symlink_metadata(&fin).unwrap().file_type().is_file());
        assert!(fs::symlink_metadata(&tmp).is_err(), "the link is gone");
        assert_eq!(decode(&fs::read(&fin).unwrap()).unwrap(), sample(2));
    }

    #[test]
    fn only_regular_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::new(dir.path(), 5);
        store.write(&sample(1)).unwrap();
        // A newer "checkpoint" that is a symlink to a good file elsewhere,
        // and a newer still that is a FIFO (a read would block forever).
        let elsewhere = tempfile::tempdir().unwrap();
        let good = elsewhere.path().join("good.ckpt");
        fs::write(&good, encode(&sample(9))).unwrap();
        let link = dir.path().join(format!("checkpoint-{:020}.ckpt", 2));
        std::os::unix::fs::symlink(&good, &link).unwrap();
        let fifo = dir.path().join(format!("checkpoint-{:020}.ckpt", 3));
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let loaded = store.load_latest();
        assert_eq!(loaded.checkpoint.unwrap().1, sample(1));
        let refused: Vec<_> = loaded
            .rejected
            .iter()
            .map(|(p, e)| (p, e.to_string()))
            .collect();
        assert_eq!(
            refused,
            [
                (&fifo, "not a regular file".to_string()),
                (&link, "not a regular file".to_string())
            ]
        );
    }

    #[test]
    fn a_file_the_caller_refuses_is_refused_like_a_bad_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::new(dir.path(), 5);
        for n in 1..=3 {
            store.write(&sample(n)).unwrap();
        }
        let bad = crate::state::codec::SnapshotError::Invalid("test");
        let accept = |cp: Checkpoint| match cp.engine[0] {
            3 => Err(CheckpointError::State(bad.clone())),
            n => Ok(n),
        };
        let loaded = store.load_accepting(true, accept);
        assert_eq!(loaded.checkpoint.as_ref().map(|c| c.1), Some(2));
        assert_eq!(loaded.rejected.len(), 1);
        assert_eq!(
            loaded.rejected[0].1.to_string(),
            "checkpoint engine state is invalid: snapshot holds an invalid test"
        );
        // Without falling back, nothing is loaded.
        assert!(store.load_accepting(false, accept).checkpoint.is_none());
    }

    /// A write failing midway (the disk full after 3 MB of the body) leaves
    /// no checkpoint file and no temporary file behind, and its error names
    /// the checkpoint's path and the cause; the previous checkpoint stays
    /// the newest, and the next write takes the same sequence number.
    #[test]
    fn a_write_failing_midway_leaves_no_file_behind() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::new(dir.path(), 5);
        store.write(&sample(1)).unwrap();
        let listing = || {
            let mut v: Vec<String> = fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        let before = listing();
        let failed = store.write_streamed(&sample(2).offsets, |out| {
            for _ in 0..3 {
                out.write_all(&[7u8; 1 << 20])?;
            }
            Err(io::Error::from_raw_os_error(libc::ENOSPC))
        });
        let e = failed.expect_err("the write fails");
        let path = dir.path().join(format!("checkpoint-{:020}.ckpt", 2));
        assert!(matches!(&e, CheckpointError::Io { path: p, .. } if *p == path));
        let msg = e.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("No space left on device"), "{msg}");
        assert_eq!(listing(), before);
        assert_eq!(store.load_latest().checkpoint.unwrap().1, sample(1));
        assert_eq!(store.write(&sample(3)).unwrap().path, path);
    }

    #[test]
    fn an_unwritable_directory_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        fs::write(&file, b"x").unwrap();
        let store = CheckpointStore::new(&file, 2);
        assert!(matches!(
            store.write(&sample(1)),
            Err(CheckpointError::Io { .. })
        ));
        assert!(store.load_latest().checkpoint.is_none());
    }
}
