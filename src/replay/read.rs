//! Reading and decoding off the applying thread.
//!
//! A reader thread per [`Stream`] reads its files in chunks that end at a
//! line end and hands each chunk to a pool of decode workers (one per core);
//! each worker splits its chunk into lines and decodes them into a [`Batch`].
//! The stream gives the batches back in file order, so the thread that owns
//! the engine sees exactly the lines it would have read itself, already
//! decoded: lateness and duplicates are still decided in file order, on that
//! thread, while reading and decoding run on the other cores.
//!
//! In flight per stream: at most [`DEPTH`] chunks plus the one being
//! applied. When the applying thread stops early (an error), dropping the
//! streams stops the readers, and the workers with them.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::Scope;

use anyhow::{Context, anyhow};

use super::packed::{Arena, Packed};
use crate::event::{DecodeFailure, Decoder};

/// Bytes a reader reads per chunk (a longer line makes a longer chunk).
const CHUNK_BYTES: usize = 1 << 20;
/// The smallest chunk, when many `--partition-per-file` streams share memory.
const MIN_CHUNK_BYTES: usize = 64 << 10;
/// Chunks a stream has read ahead of the line being applied.
const DEPTH: usize = 4;

/// Opens a file for reading, decompressing gzip (detected by its magic bytes).
pub fn open(path: &Path) -> anyhow::Result<Box<dyn Read>> {
    let mut f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut magic = [0u8; 2];
    let n = f.read(&mut magic)?;
    let f = File::open(path)?;
    if n == 2 && magic == [0x1f, 0x8b] {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(f)))
    } else {
        Ok(Box::new(f))
    }
}

/// One decoded line.
#[derive(Debug)]
pub(crate) enum Decoded {
    Event(Packed),
    Invalid(DecodeFailure),
}

#[derive(Debug)]
struct Line {
    start: usize,
    end: usize,
    decoded: Decoded,
}

/// The non-blank lines of one chunk of a file, decoded.
#[derive(Debug)]
struct Batch {
    /// Index of the file (in the paths given to [`start`]).
    file: usize,
    /// Bytes of the file the chunk covers (the progress bar counts these).
    bytes: u64,
    chunk: Vec<u8>,
    lines: Vec<Line>,
    arena: Arena,
}

/// A chunk for a decode worker, and where its batch goes.
struct Job {
    file: usize,
    chunk: Vec<u8>,
    /// Emptied buffers of an applied batch, to fill again.
    reuse: Option<(Vec<Line>, Arena)>,
    reply: SyncSender<Batch>,
}

/// Applied batches, handed back to the readers and workers to fill again:
/// their buffers are large, and allocating them afresh for every chunk costs
/// page faults (the kernel's time) all through the run.
type Spares = Arc<Mutex<Vec<Batch>>>;

/// Batches kept for reuse, at most.
const SPARES: usize = 2 * DEPTH;

fn take_spare(spares: &Spares) -> Option<Batch> {
    spares.lock().ok()?.pop()
}

/// The decoded, non-blank lines of some files, in order.
pub(crate) struct Stream {
    order: Receiver<anyhow::Result<Receiver<Batch>>>,
    spares: Spares,
    batch: Option<Batch>,
    /// Index in `batch.lines` of the current line; `next` of the one after.
    cur: usize,
    next: usize,
}

impl Stream {
    /// Moves to the next non-blank line; `false` at the end of the stream.
    /// An error (a file that cannot be opened or read) ends the stream.
    pub(crate) fn advance(&mut self, bar: Option<&indicatif::ProgressBar>) -> anyhow::Result<bool> {
        loop {
            if let Some(b) = &self.batch
                && self.next < b.lines.len()
            {
                self.cur = self.next;
                self.next += 1;
                return Ok(true);
            }
            if let Some(done) = self.batch.take()
                && let Ok(mut spares) = self.spares.lock()
                && spares.len() < SPARES
            {
                spares.push(done);
            }
            let reply = match self.order.recv() {
                Err(_) => return Ok(false),
                Ok(r) => r?,
            };
            let batch = reply
                .recv()
                .map_err(|_| anyhow!("a replay decode worker stopped"))?;
            if let Some(bar) = bar {
                bar.inc(batch.bytes);
            }
            self.batch = Some(batch);
            self.next = 0;
        }
    }

    /// The current line: its file's index, its bytes (without the line end),
    /// and what it decoded to with the arena its strings are in. `None`
    /// before the first [`Stream::advance`] and after the last.
    pub(crate) fn line(&self) -> Option<(usize, &[u8], &Decoded, &Arena)> {
        let b = self.batch.as_ref()?;
        let l = b.lines.get(self.cur)?;
        Some((b.file, b.chunk.get(l.start..l.end)?, &l.decoded, &b.arena))
    }
}

/// Starts reading `paths` on threads of `scope`: one stream of all files in
/// order, or with `per_file` one stream per file. The decode workers (one
/// per core) are shared by the streams.
pub(crate) fn start<'scope>(
    scope: &'scope Scope<'scope, '_>,
    decoder: &'scope Decoder,
    paths: &[PathBuf],
    per_file: bool,
) -> Vec<Stream> {
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
    let jobs_rx = Arc::new(Mutex::new(jobs_rx));
    for _ in 0..workers {
        let jobs = Arc::clone(&jobs_rx);
        scope.spawn(move || work(decoder, &jobs));
    }
    let groups: Vec<Vec<(usize, PathBuf)>> = if per_file {
        paths.iter().cloned().enumerate().map(|f| vec![f]).collect()
    } else {
        vec![paths.iter().cloned().enumerate().collect()]
    };
    let chunk_bytes = (CHUNK_BYTES / groups.len().max(1)).max(MIN_CHUNK_BYTES);
    groups
        .into_iter()
        .map(|files| {
            let (order_tx, order) = mpsc::sync_channel(DEPTH);
            let jobs = jobs_tx.clone();
            let spares = Spares::default();
            let reader = Reader {
                chunk_bytes,
                jobs,
                order: order_tx,
                spares: Arc::clone(&spares),
            };
            scope.spawn(move || reader.read(&files));
            Stream {
                order,
                spares,
                batch: None,
                cur: 0,
                next: 0,
            }
        })
        .collect()
}

/// A decode worker: takes jobs until every reader is done.
fn work(decoder: &Decoder, jobs: &Mutex<Receiver<Job>>) {
    loop {
        let job = {
            let Ok(rx) = jobs.lock() else { return };
            match rx.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        let batch = decode(decoder, job.file, job.chunk, job.reuse);
        // The stream is gone if the replay stopped early: nothing to do.
        let _ = job.reply.send(batch);
    }
}

/// Splits a chunk into its non-blank lines and decodes them.
/// `reuse`: empty buffers to fill (else new ones).
fn decode(
    decoder: &Decoder,
    file: usize,
    chunk: Vec<u8>,
    reuse: Option<(Vec<Line>, Arena)>,
) -> Batch {
    let (mut lines, mut arena) = reuse.unwrap_or_else(|| {
        (
            Vec::with_capacity(chunk.len() / 128 + 1),
            Arena::with_capacity(chunk.len() / 4),
        )
    });
    let mut start = 0;
    while start < chunk.len() {
        let rest = &chunk[start..];
        let len = find_newline(rest).unwrap_or(rest.len());
        let next = start + len + 1;
        let mut bytes = &rest[..len];
        while let [head @ .., b'\n' | b'\r'] = bytes {
            bytes = head;
        }
        if !bytes.iter().all(|b| b.is_ascii_whitespace()) {
            let decoded = match decoder.decode(bytes, None) {
                Ok(ev) => Decoded::Event(Packed::pack(&ev, &mut arena)),
                Err(f) => Decoded::Invalid(f),
            };
            lines.push(Line {
                start,
                end: start + bytes.len(),
                decoded,
            });
        }
        start = next;
    }
    Batch {
        file,
        bytes: chunk.len() as u64,
        chunk,
        lines,
        arena,
    }
}

/// The index of the first `\n` in `s`, eight bytes at a time.
fn find_newline(s: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const NL: u64 = u64::from_ne_bytes([b'\n'; 8]);
    let mut words = s.chunks_exact(8);
    let mut at = 0;
    for w in &mut words {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        // A zero byte of x is a `\n` of w; the lowest flagged byte is exact
        // (only bytes above a zero byte can be flagged falsely).
        let x = u64::from_le_bytes(b) ^ NL;
        let found = x.wrapping_sub(ONES) & !x & HIGHS;
        if found != 0 {
            return Some(at + (found.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    words
        .remainder()
        .iter()
        .position(|&b| b == b'\n')
        .map(|i| at + i)
}

/// A reader: reads its files in order, in chunks that end at a line end (or
/// at the end of a file), and queues each for decoding.
struct Reader {
    chunk_bytes: usize,
    jobs: Sender<Job>,
    order: SyncSender<anyhow::Result<Receiver<Batch>>>,
    spares: Spares,
}

impl Reader {
    /// Reads `files`; stops at the first error, which it passes on in place
    /// of the next chunk, or when the stream is gone.
    fn read(&self, files: &[(usize, PathBuf)]) {
        for (file, path) in files {
            match self.read_file(*file, path) {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => {
                    let _ = self.order.send(Err(e));
                    return;
                }
            }
        }
    }

    /// `false` if the stream is gone.
    fn read_file(&self, file: usize, path: &Path) -> anyhow::Result<bool> {
        let mut r = open(path)?;
        let mut carry: Vec<u8> = Vec::new();
        loop {
            let spare = take_spare(&self.spares);
            let (mut buf, reuse) = match spare {
                Some(mut b) => {
                    b.chunk.clear();
                    b.lines.clear();
                    b.arena.clear();
                    (b.chunk, Some((b.lines, b.arena)))
                }
                None => (Vec::new(), None),
            };
            // A line longer than the chunk doubles the chunk until it fits.
            buf.reserve(self.chunk_bytes.max(carry.len() * 2));
            buf.append(&mut carry);
            let want = buf.capacity() - buf.len();
            let n = (&mut r)
                .take(want as u64)
                .read_to_end(&mut buf)
                .with_context(|| format!("reading {}", path.display()))?;
            if n == 0 {
                // The end of the file: what is left is its last line.
                return Ok(buf.is_empty() || self.send(file, buf, reuse));
            }
            match buf.iter().rposition(|&b| b == b'\n') {
                Some(i) => {
                    carry = buf.split_off(i + 1);
                    if !self.send(file, buf, reuse) {
                        return Ok(false);
                    }
                }
                None => carry = buf,
            }
        }
    }

    /// Queues a chunk; `false` if the stream is gone.
    fn send(&self, file: usize, chunk: Vec<u8>, reuse: Option<(Vec<Line>, Arena)>) -> bool {
        let (reply, rx) = mpsc::sync_channel(1);
        let job = Job {
            file,
            chunk,
            reuse,
            reply,
        };
        self.jobs.send(job).is_ok() && self.order.send(Ok(rx)).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Mapping;

    fn decoder() -> Decoder {
        Decoder::new(&Mapping::default(), 300, false)
    }

    fn fixture(name: &str) -> Vec<u8> {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/replay")
            .join(name);
        std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    /// Lines that decode, and lines that fail in each way the parser can
    /// fail (escapes, a lone surrogate, a raw control character, trailing
    /// bytes, too large, not an object, not UTF-8).
    fn mixed_lines() -> Vec<Vec<u8>> {
        let mut lines: Vec<Vec<u8>> = [fixture("small.ndjson"), fixture("poison.ndjson")]
            .concat()
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect();
        for l in [
            r#"{"event_id":"e\u00e9\n","type":"deposit","ts":5,"user_id":"\"q\"","amount_usd":1}"#,
            r#"{"event_id":"e2","type":"deposit","ts":5,"user_id":"\ud800","amount_usd":1}"#,
            "{\"event_id\":\"e\u{1}\",\"type\":\"deposit\",\"ts\":5,\"user_id\":\"u\",\"amount_usd\":1}",
            r#"{"event_id":"e3","type":"deposit","ts":5,"user_id":"u","amount_usd":1} x"#,
            r#"{"event_id":"e4","type":"deposit","ts":5,"user_id":"é","amount_usd":1,"pad":"............................................................................................................................................................................................................................................................................................"}"#,
            r#"[1,2]"#,
            r#"{"event_id":"e5","type":"nope","ts":5}"#,
            r#"{"event_id":"e6","type":"spend","ts":"2026-03-01T12:00:30Z","channel":"é","amount_usd":2}"#,
        ] {
            lines.push(l.as_bytes().to_vec());
        }
        lines.push(b"{\"event_id\":\"e7\",\"type\":\"deposit\",\"ts\":5,\"user_id\":\"\xff\",\"amount_usd\":1}".to_vec());
        lines.push(b"{\"event_id\":\"e8\",\"type\":\"deposit\",\"ts\":5,\"user_id\":\"u\",\"amount_usd\":1,\"x\":\"\xc3\"}".to_vec());
        lines
    }

    /// A chunk split by the workers: blank lines and line ends dropped, every
    /// line decoded as the decoder decodes it alone, strings through the arena
    /// (the second time round, the first batch's buffers).
    #[test]
    fn a_chunk_decodes_line_by_line_as_the_decoder_does() {
        let d = decoder();
        let lines = mixed_lines();
        let mut reuse = None;
        for (name, sep) in [
            ("lf", &b"\n"[..]),
            ("crlf with blank lines", &b"\r\n \t\r\n\n"[..]),
        ] {
            let mut chunk = lines.join(sep);
            chunk.extend_from_slice(b"\r\n\n");
            let batch = decode(&d, 3, chunk.clone(), reuse.take());
            assert_eq!((batch.file, batch.bytes), (3, chunk.len() as u64));
            assert_eq!(batch.lines.len(), lines.len(), "{name}");
            for (got, want) in batch.lines.iter().zip(&lines) {
                assert_eq!(&batch.chunk[got.start..got.end], &want[..], "{name}");
                match (&got.decoded, d.decode(want, None)) {
                    (Decoded::Event(p), Ok(ev)) => assert_eq!(p.unpack(&batch.arena), ev),
                    (Decoded::Invalid(f), Err(e)) => assert_eq!(f, &e),
                    (got, want) => panic!("{name}: {got:?} but alone {want:?}"),
                }
            }
            // The second chunk goes into the first one's buffers, emptied.
            let (mut l, mut a) = (batch.lines, batch.arena);
            l.clear();
            a.clear();
            reuse = Some((l, a));
        }
    }

    /// Every line of the files comes out of the streams once, in order, whole:
    /// a line longer than a chunk, a last line without a line end, a gzip
    /// file, one stream or one per file; a file that is missing is an error.
    #[test]
    fn streams_give_every_line_of_their_files_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ev = |i: usize| {
            format!(
                r#"{{"event_id":"e{i}","type":"deposit","ts":{i},"user_id":"u{i}","amount_usd":1}}"#
            )
        };
        let long = format!("{{\"pad\":\"{}\"}}", "x".repeat(CHUNK_BYTES * 5 / 2));
        let a: Vec<String> = (0..30_000).map(ev).chain([long]).collect();
        let b: Vec<String> = (0..3).map(|i| ev(100 + i)).collect();
        let (pa, pb) = (dir.path().join("a.ndjson"), dir.path().join("b.ndjson.gz"));
        std::fs::write(&pa, a.join("\n") + "\n").expect("write a");
        let mut gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&pb).expect("create b"),
            flate2::Compression::fast(),
        );
        std::io::Write::write_all(&mut gz, b.join("\r\n\n").as_bytes()).expect("write b");
        gz.finish().expect("finish b");
        let d = decoder();
        let lines_of = |s: &mut Stream| -> anyhow::Result<Vec<(usize, String, bool)>> {
            let mut v = Vec::new();
            while s.advance(None)? {
                let (file, bytes, decoded, _) = s.line().expect("a current line");
                let valid = matches!(decoded, Decoded::Event(_));
                v.push((file, String::from_utf8_lossy(bytes).into_owned(), valid));
            }
            Ok(v)
        };
        let want = |file: usize, lines: &[String]| -> Vec<(usize, String, bool)> {
            // Only the long line is invalid (too large, and not an event).
            lines
                .iter()
                .map(|l| (file, l.clone(), !l.starts_with("{\"pad")))
                .collect()
        };
        let paths = [pa.clone(), pb.clone()];
        std::thread::scope(|scope| {
            let mut one = start(scope, &d, &paths, false);
            assert_eq!(one.len(), 1);
            let got = lines_of(&mut one[0]).expect("no error");
            assert_eq!(got.len(), a.len() + b.len());
            assert_eq!(got, [want(0, &a), want(1, &b)].concat());
        });
        std::thread::scope(|scope| {
            let mut two = start(scope, &d, &paths, true);
            assert_eq!(two.len(), 2);
            assert_eq!(lines_of(&mut two[1]).expect("no error"), want(1, &b));
            assert_eq!(lines_of(&mut two[0]).expect("no error"), want(0, &a));
        });
        let missing = [pb.clone(), dir.path().join("missing.ndjson")];
        std::thread::scope(|scope| {
            let mut s = start(scope, &d, &missing, false);
            let err = lines_of(&mut s[0]).expect_err("the second file is missing");
            assert!(err.to_string().starts_with("cannot open "), "{err:#}");
        });
    }

    #[test]
    fn find_newline_finds_the_first_one_at_every_position() {
        for len in 0..40 {
            for at in 0..len {
                let mut s = vec![b'a'; len];
                s[at] = b'\n';
                if at + 3 < len {
                    s[at + 3] = b'\n';
                }
                assert_eq!(find_newline(&s), Some(at), "len {len} at {at}");
            }
            assert_eq!(find_newline(&vec![b'x'; len]), None);
        }
        // Bytes next to `\n` in value (0x0b, 0x09) and above 0x80 are not it.
        assert_eq!(find_newline(b"\x0b\x09\x8a\xff\x0a\x0b"), Some(4));
    }
}
