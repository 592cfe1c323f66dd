//! `cxpulse replay FILE... [--at RFC3339] [--format prometheus|json]`: the
//! engine over NDJSON files (plain or gzip), printing the final series.
//!
//! The files are read in the order given as one stream (one partition), so a
//! user's events may be split across files; lateness and duplicates are judged
//! across the whole stream. With `--partition-per-file`, file i is input
//! partition i instead (a topic dumped per partition), the files merged by
//! event time. At the end the input is complete: every pending effect and
//! every timer with instant <= T is applied.
//!
//! Threads (`read.rs`): reader threads cut the files into chunks of whole
//! lines, decode workers (one per core) decode each chunk into a batch of
//! packed events (`packed.rs`), and this thread applies the batches in file
//! order, so every outcome (lateness, duplicates, the per-file merge) is
//! decided as if one thread read the lines one by one. The output does not
//! depend on the number of cores.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};

use crate::config::Config;
use crate::engine::{Engine, Outcome};
use crate::event::{Decoder, Millis, time};
use crate::export;

mod packed;
mod read;

use packed::Arena;
pub use read::open;
use read::{Decoded, Stream};

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
        engine: &mut engine,
        dead: dead.as_mut(),
        per_file: args.partition_per_file,
    };
    std::thread::scope(|scope| {
        let streams = read::start(scope, &decoder, &args.files, args.partition_per_file);
        if args.partition_per_file {
            replay_per_file(&args.files, streams, &mut sink, bar.as_ref())
        } else {
            replay_streams(&args.files, streams, &mut sink, bar.as_ref())
        }
    })?;
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

/// Where the lines go: the engine, and the dead-letter file if any.
struct Sink<'a> {
    engine: &'a mut Engine,
    dead: Option<&'a mut std::io::BufWriter<File>>,
    /// `--partition-per-file`: dead-letter records name the partition.
    per_file: bool,
}

impl Sink<'_> {
    /// Offers one decoded line of `path` to the engine as an event of `partition`.
    fn feed(
        &mut self,
        partition: u32,
        path: &Path,
        bytes: &[u8],
        decoded: &Decoded,
        arena: &Arena,
    ) -> anyhow::Result<()> {
        let (outcome, reason) = match decoded {
            Decoded::Event(p) => {
                let o = self.engine.offer(partition, &p.unpack(arena), None);
                (o, (o == Outcome::Late).then(|| "late".to_string()))
            }
            Decoded::Invalid(f) => {
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

/// Feeds every line of the files, in order, to the engine (partition 0).
fn replay_streams(
    paths: &[PathBuf],
    streams: Vec<Stream>,
    sink: &mut Sink<'_>,
    bar: Option<&indicatif::ProgressBar>,
) -> anyhow::Result<()> {
    for mut s in streams {
        while s.advance(bar)? {
            if let Some((file, bytes, decoded, arena)) = s.line() {
                sink.feed(0, path_of(paths, file)?, bytes, decoded, arena)?;
            }
        }
    }
    Ok(())
}

fn path_of(paths: &[PathBuf], file: usize) -> anyhow::Result<&Path> {
    paths
        .get(file)
        .map(PathBuf::as_path)
        .ok_or_else(|| anyhow::anyhow!("replay read a file it was not given (index {file})"))
}

/// `--partition-per-file`: file i is input partition i. The files are merged
/// into one stream by event time: the next line offered is always the head
/// line (in file order) with the smallest `ts`, ties going to the earlier
/// file; a line that does not decode takes the `ts` of the line before it in
/// its file, so it goes as soon as it is at the head. Within a file, the
/// order is the file's (docs/semantics.md, "Replay per partition").
fn replay_per_file(
    paths: &[PathBuf],
    mut files: Vec<Stream>,
    sink: &mut Sink<'_>,
    bar: Option<&indicatif::ProgressBar>,
) -> anyhow::Result<()> {
    let Ok(n) = u32::try_from(paths.len()) else {
        bail!("too many files for --partition-per-file");
    };
    // Min-heap of (head line's ts, file index).
    let mut heads = BinaryHeap::with_capacity(paths.len());
    let key = |s: &Stream, prev: Millis| match s.line() {
        Some((_, _, Decoded::Event(p), _)) => p.ts(),
        _ => prev,
    };
    for (i, f) in (0..n).zip(files.iter_mut()) {
        if f.advance(bar)? {
            heads.push(Reverse((key(f, Millis::MIN), i)));
        }
    }
    while let Some(Reverse((k, i))) = heads.pop() {
        let path = path_of(paths, i as usize)?;
        let Some(f) = files.get_mut(i as usize) else {
            bail!("replay lost file {i}");
        };
        if let Some((_, bytes, decoded, arena)) = f.line() {
            sink.feed(i, path, bytes, decoded, arena)?;
        }
        if f.advance(bar)? {
            heads.push(Reverse((key(f, k), i)));
        }
    }
    Ok(())
}
