//! `cxpulse replay FILE... [--at RFC3339] [--format prometheus|json]`: the
//! engine over NDJSON files (plain or gzip), printing the final series.
//!
//! The files are read in the order given as one stream (one partition), so a
//! user's events may be split across files; lateness and duplicates are judged
//! across the whole stream. With `--partition-per-file`, file i is input
//! partition i instead (a topic dumped per partition), the files merged by
//! event time. At the end the input is complete: every pending effect and
//! every timer with instant <= T is applied.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};

use crate::config::Config;
use crate::engine::{Engine, Outcome};
use crate::event::{Decoder, Millis, time};
use crate::export;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Prometheus,
    Json,
}

#[derive(clap::Args, Debug)]
pub struct ReplayArgs {
    /// NDJSON files, one event per line; `.gz` (or gzip magic) is decompressed.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Advance T to this instant at the end of input (must not be before the last event).
    #[arg(long)]
    pub at: Option<String>,
    /// Output format of the final series.
    #[arg(long, value_enum, default_value = "prometheus")]
    pub format: Format,
    /// Config file (defaults apply when absent); CXPULSE__* environment overrides apply.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Also write every invalid or late line, with its reason, as NDJSON to this file.
    #[arg(long)]
    pub dead_letter: Option<PathBuf>,
    /// Do not draw the progress bar even on a terminal.
    #[arg(long)]
    pub quiet: bool,
    /// Treat file i as input partition i (lateness and duplicates judged per
    /// file, as for live partitions), merging the files by event time; print
    /// the merged series, as a live run over those partitions exports them.
    #[arg(long)]
    pub partition_per_file: bool,
}

/// Summary of a replay.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub applied: u64,
    pub invalid: u64,
    pub late: u64,
    pub duplicate: u64,
}

pub fn main(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(args.config.as_deref(), std::env::vars())?;
    let at = match &args.at {
        Some(s) => Some(
            time::parse_rfc3339(s)
                .with_context(|| format!("--at `{s}` is not an RFC 3339 date-time"))?,
        ),
        None => None,
    };
    let mut dead = match &args.dead_letter {
        Some(p) => Some(std::io::BufWriter::new(
            File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        )),
        None => None,
    };
    let total_bytes: u64 = args
        .files
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    let bar = (!args.quiet && std::io::stderr().is_terminal()).then(|| {
        let b = indicatif::ProgressBar::new(total_bytes);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {bytes}/{total_bytes} {bar:40} {eta} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let mut engine = Engine::new(cfg.params()?);
    // Replay holds its input partitions from the start: 0 (one stream), or
    // one per file (so partition 0 brings acquisition.baseline_users even
    // to an empty input replayed `--at` some time).
    let held = if args.partition_per_file {
        u32::try_from(args.files.len()).unwrap_or(0)
    } else {
        1
    };
    for p in 0..held {
        engine.ensure_partition(p);
    }
    let decoder = Decoder::new(&cfg.mapping, cfg.engine.max_message_bytes, false);
    let mut sink = Sink {
        decoder: &decoder,
        engine: &mut engine,
        dead: dead.as_mut(),
        per_file: args.partition_per_file,
    };
    if args.partition_per_file {
        replay_per_file(&args.files, &mut sink, bar.as_ref())?;
    } else {
        for path in &args.files {
            replay_file(path, &mut sink, bar.as_ref())?;
        }
    }
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    if let Some(d) = dead.as_mut() {
        d.flush()?;
    }
    if let Some(at) = at {
        if let Some(t) = engine.clock()
            && at < t
        {
            bail!(
                "--at {} is before the last applied event time {}",
                time::format_rfc3339(at),
                time::format_rfc3339(t)
            );
        }
        engine.advance_to(at);
    }
    engine.finish();
    let s = summary(&engine);
    eprintln!(
        "replay: applied {}, invalid {}, late {}, duplicate {}{}",
        s.applied,
        s.invalid,
        s.late,
        s.duplicate,
        engine
            .clock()
            .map(|t| format!(", T = {}", time::format_rfc3339(t)))
            .unwrap_or_default()
    );
    let families = engine.families();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match args.format {
        Format::Prometheus => out.write_all(export::to_prometheus_text(&families).as_bytes())?,
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, &export::to_json(&families))?;
            out.write_all(b"\n")?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

pub fn summary(engine: &Engine) -> Summary {
    let c = engine.event_counts();
    Summary {
        applied: c.total(Outcome::Applied),
        invalid: c.total(Outcome::Invalid),
        late: c.total(Outcome::Late),
        duplicate: c.total(Outcome::Duplicate),
    }
}

/// Opens a file, decompressing gzip (detected by its magic bytes).
pub fn open(path: &Path) -> anyhow::Result<Box<dyn BufRead>> {
    let mut f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut magic = [0u8; 2];
    let n = f.read(&mut magic)?;
    let f = File::open(path)?;
    if n == 2 && magic == [0x1f, 0x8b] {
        Ok(Box::new(BufReader::with_capacity(
            1 << 20,
            flate2::read::MultiGzDecoder::new(f),
        )))
    } else {
        Ok(Box::new(BufReader::with_capacity(1 << 20, f)))
    }
}

/// The non-blank lines of one input file, without their line endings.
struct Lines {
    path: PathBuf,
    reader: Box<dyn BufRead>,
    buf: Vec<u8>,
    len: usize,
    since_tick: u64,
}

impl Lines {
    fn open(path: &Path) -> anyhow::Result<Lines> {
        Ok(Lines {
            path: path.to_path_buf(),
            reader: open(path)?,
            buf: Vec::with_capacity(4096),
            len: 0,
            since_tick: 0,
        })
    }

    /// Reads the next non-blank line ([`Lines::line`]); `false` at the end.
    fn advance(&mut self, bar: Option<&indicatif::ProgressBar>) -> anyhow::Result<bool> {
        loop {
            self.buf.clear();
            let n = self
                .reader
                .read_until(b'\n', &mut self.buf)
                .with_context(|| format!("reading {}", self.path.display()))?;
            if n == 0 {
                if let Some(b) = bar {
                    b.inc(self.since_tick);
                }
                self.since_tick = 0;
                return Ok(false);
            }
            self.since_tick += n as u64;
            if self.since_tick > (1 << 20) {
                if let Some(b) = bar {
                    b.inc(self.since_tick);
                }
                self.since_tick = 0;
            }
            let mut bytes = &self.buf[..];
            while let [rest @ .., b'\n' | b'\r'] = bytes {
                bytes = rest;
            }
            if !bytes.iter().all(|b| b.is_ascii_whitespace()) {
                self.len = bytes.len();
                return Ok(true);
            }
        }
    }

    fn line(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Where the lines go: the engine, and the dead-letter file if any.
struct Sink<'a> {
    decoder: &'a Decoder,
    engine: &'a mut Engine,
    dead: Option<&'a mut std::io::BufWriter<File>>,
    /// `--partition-per-file`: dead-letter records name the partition.
    per_file: bool,
}

impl Sink<'_> {
    /// Offers one line of `path` to the engine as an event of `partition`.
    fn feed(&mut self, partition: u32, path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
        let (outcome, reason) = match self.decoder.decode(bytes, None) {
            Ok(ev) => {
                let o = self.engine.offer(partition, &ev, None);
                (o, (o == Outcome::Late).then(|| "late".to_string()))
            }
            Err(f) => {
                self.engine.record_invalid(partition, f.event_type);
                (
                    Outcome::Invalid,
                    Some(format!("{}: {}", f.error.reason(), f.error)),
                )
            }
        };
        if let (Some(d), Some(reason)) = (self.dead.as_deref_mut(), reason) {
            let mut rec = serde_json::json!({
                "outcome": outcome.as_str(),
                "reason": reason,
                "file": path.display().to_string(),
                "line": String::from_utf8_lossy(bytes),
            });
            if self.per_file {
                rec["partition"] = partition.into();
            }
            serde_json::to_writer(&mut *d, &rec)?;
            d.write_all(b"\n")?;
        }
        Ok(())
    }
}

/// Feeds every line of one file to the engine (partition 0).
fn replay_file(
    path: &Path,
    sink: &mut Sink<'_>,
    bar: Option<&indicatif::ProgressBar>,
) -> anyhow::Result<()> {
    let mut lines = Lines::open(path)?;
    while lines.advance(bar)? {
        sink.feed(0, path, lines.line())?;
    }
    Ok(())
}

/// `--partition-per-file`: file i is input partition i. The files are merged
/// into one stream by event time: the next line offered is always the head
/// line (in file order) with the smallest `ts`, ties going to the earlier
/// file; a line that does not decode takes the `ts` of the line before it in
/// its file, so it goes as soon as it is at the head. Within a file, the
/// order is the file's (docs/semantics.md, "Replay per partition").
fn replay_per_file(
    paths: &[PathBuf],
    sink: &mut Sink<'_>,
    bar: Option<&indicatif::ProgressBar>,
) -> anyhow::Result<()> {
    let Ok(n) = u32::try_from(paths.len()) else {
        bail!("too many files for --partition-per-file");
    };
    let mut files = paths
        .iter()
        .map(|p| Lines::open(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // Min-heap of (head line's ts, file index).
    let mut heads = BinaryHeap::with_capacity(paths.len());
    let key = |decoder: &Decoder, line: &[u8], prev: Millis| {
        decoder.decode(line, None).map_or(prev, |ev| ev.ts)
    };
    for (i, f) in (0..n).zip(files.iter_mut()) {
        if f.advance(bar)? {
            let k = key(sink.decoder, f.line(), Millis::MIN);
            heads.push(Reverse((k, i)));
        }
    }
    while let Some(Reverse((k, i))) = heads.pop() {
        let f = &mut files[i as usize];
        sink.feed(i, &paths[i as usize], f.line())?;
        if f.advance(bar)? {
            heads.push(Reverse((key(sink.decoder, f.line(), k), i)));
        }
    }
    Ok(())
}
