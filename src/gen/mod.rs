//! `cxpulse gen`: a deterministic generator of realistic crypto-exchange
//! traffic, as canonical NDJSON events (EVENTS.md) on stdout or to Kafka.
//!
//! Same seed and arguments give byte-identical output: the only randomness is
//! an in-crate xoshiro256** stream, and the wall clock is read only for
//! `--start now` and for pacing.
//!
//! # Model
//!
//! A discrete-event simulation, forward in event time, over a priority queue
//! of scheduled jobs (a user's next funnel step or action, a ticket's next
//! action, a campaign's daily spend, an invitation, a reward). Memory is
//! bounded by the live population (at most about a million users), never by
//! the number of lines. With the defaults, lines are about 77 % trades, 14 %
//! deposits, 6 % support, 1.7 % signups, 0.8 % referral, a few spend a day.
//!
//! - Existing customers (no signup, channel `unknown`), about 0.6 per line
//!   per day, are active from the start. New users sign up at 1.4 % of the
//!   lines (the rate growing 0.5 %/day) from `organic` 35 %, `paid_search`
//!   25 %, `social` 20 %, `affiliate` 12 % and 8 % with no channel; each
//!   `--extra-channels` channel (`partner_01`, ...) takes 0.5 %. Referral
//!   signups (with `referrer_id`, 80 % without a channel) come from
//!   invitations: 0.8 % of actions send one, a quarter of those convert.
//! - Funnel: 18 % (social) to 50 % (referral) of signups deposit, 5 minutes
//!   to 7 days later; 60-78 % of depositors trade (fee 0.06-0.1 % of
//!   notional). Customers act in sessions of about 3 actions minutes apart,
//!   sessions at log-uniform rates (0.05 to 8 actions a day for traders)
//!   shaped by a diurnal and weekly pattern. They go dormant for over 30
//!   days at 0.75 %/day; 35 % come back 31-120 days later.
//! - Paid channels book daily `spend` per campaign at target CPAs (paid
//!   search $120, social $200, affiliate $80, partners $150); a referred
//!   user's first deposit rewards the inviter $10-50.
//! - 1.2 % of actions lead to a ticket (low 25 %, normal 55 %, high 15 %,
//!   urgent 5 %); 6-12 % breach the first-response target, 6-10 % the
//!   resolution target; 30 % pause in `pending` until `customer_replied`,
//!   7 % are reopened, 65 % are rated (csat, ces, nps; worse after a breach
//!   or reopen: csat share about 0.7, NPS about +10). After a csat of 2 or
//!   less the customer goes dormant with chance 55 %. 0.2 % of actions lead
//!   to an NPS survey answer with `ticket_id` "survey".
//! - Noise: 1 % of lines out of order by 1-25 s, 0.5 % exact duplicates
//!   within 25 s, 0.2 % invalid (not JSON, csat 9, negative amount, missing
//!   `user_id`, bad `ts`). No line trails the newest by 30 s or more.
//!
//! The traffic level (lines per day of event time) is `events / days`, or
//! `--rate` per second (then flat over the day). The population is sized
//! from it and the customers' activity is scaled to hit it, feed-forward
//! from their summed rates.

mod agenda;
mod generator;
mod line;
mod model;
pub(crate) mod rng;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::io::{self, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;

pub use generator::{DEFAULT_START_MS, GenConfig, GenLine, Generator};

/// Command-line arguments of `cxpulse gen`.
#[derive(clap::Args, Debug)]
pub struct GenArgs {
    /// Seed of the random stream: same seed and arguments, same bytes.
    #[arg(long)]
    pub seed: u64,
    /// Exact number of lines to produce, noise included. 0 with --rate: no end.
    #[arg(long)]
    pub events: u64,
    /// Days of event time the lines cover [default: 60].
    #[arg(long, conflicts_with = "rate")]
    pub days: Option<u32>,
    /// Event time of the first line: RFC 3339, or `now` (the wall clock).
    #[arg(long, default_value = "2026-01-01T00:00:00Z")]
    pub start: String,
    /// Long-tail acquisition channels on top of the five named ones.
    #[arg(long, default_value_t = 0)]
    pub extra_channels: u32,
    /// Kafka bootstrap servers (HOST:PORT,...): produce there instead of stdout.
    #[arg(long, requires = "topic")]
    pub brokers: Option<String>,
    /// Kafka topic to produce to.
    #[arg(long, requires = "brokers")]
    pub topic: Option<String>,
    /// Lines per second. Event time then advances at the same pace as the
    /// wall clock (with `--start now` it tracks it), and lines are sent when
    /// their event time comes. 0 = as fast as possible.
    #[arg(long)]
    pub rate: Option<f64>,
}

pub fn main(args: GenArgs) -> anyhow::Result<ExitCode> {
    let start_ms = parse_start(&args.start)?;
    let rate = args.rate.filter(|r| *r > 0.0);
    if let Some(r) = args.rate {
        anyhow::ensure!(
            r.is_finite() && r >= 0.0,
            "--rate must be a number >= 0, got {r}"
        );
    }
    anyhow::ensure!(
        args.events > 0 || rate.is_some(),
        "--events must be > 0 (0 means without end, and needs --rate)"
    );
    let cfg = GenConfig {
        seed: args.seed,
        events: if args.events == 0 {
            u64::MAX
        } else {
            args.events
        },
        days: args.days.unwrap_or(60),
        start_ms,
        extra_channels: args.extra_channels,
    };
    anyhow::ensure!(cfg.days > 0, "--days must be > 0");
    let (generator, pacer) = match rate {
        Some(r) => (Generator::with_rate(&cfg, r), Some(Pacer::new(start_ms))),
        None => (Generator::new(&cfg), None),
    };
    match (args.brokers, args.topic) {
        (Some(brokers), Some(topic)) => produce(generator, &brokers, &topic, pacer),
        _ => {
            let stdout = io::stdout();
            match write_lines(generator, stdout.lock(), pacer.as_ref()) {
                Ok(_) => Ok(ExitCode::SUCCESS),
                // `cxpulse gen ... | head` is a normal way to stop.
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
                Err(e) => Err(e).context("writing to stdout"),
            }
        }
    }
}

/// Writes `cfg.events` lines of NDJSON (each ending in `\n`) to `out`, as
/// fast as it can; returns the number of lines. Buffers internally.
pub fn write_ndjson(cfg: &GenConfig, out: impl Write) -> io::Result<u64> {
    write_lines(Generator::new(cfg), out, None)
}

fn write_lines(
    mut generator: Generator,
    mut out: impl Write,
    pacer: Option<&Pacer>,
) -> io::Result<u64> {
    const CHUNK: usize = 1 << 18;
    let mut chunk = Vec::with_capacity(CHUNK + 4096);
    let mut lines = 0u64;
    loop {
        let before = chunk.len();
        let Some(meta) = generator.next_into(&mut chunk) else {
            break;
        };
        chunk.push(b'\n');
        lines += 1;
        if let Some(wait) = pacer.and_then(|p| p.wait(meta.ts)) {
            // Everything before this line goes out now; the line waits for its time.
            out.write_all(&chunk[..before])?;
            out.flush()?;
            chunk.drain(..before);
            std::thread::sleep(wait);
        }
        if chunk.len() >= CHUNK {
            out.write_all(&chunk)?;
            chunk.clear();
        }
    }
    out.write_all(&chunk)?;
    out.flush()?;
    Ok(lines)
}

fn parse_start(s: &str) -> anyhow::Result<i64> {
    if s.eq_ignore_ascii_case("now") {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .context("system clock before 1970")?;
        return i64::try_from(now.as_millis()).context("system clock out of range");
    }
    let t = chrono::DateTime::parse_from_rfc3339(s).with_context(|| {
        format!("--start: expected RFC 3339 (2026-01-01T00:00:00Z) or `now`, got {s:?}")
    })?;
    Ok(t.timestamp_millis())
}

/// Sends each line when its event time comes, measured from the moment the
/// run started (so with `--start now`, event time tracks the wall clock).
struct Pacer {
    origin: Instant,
    start_ms: i64,
}

impl Pacer {
    fn new(start_ms: i64) -> Pacer {
        Pacer {
            origin: Instant::now(),
            start_ms,
        }
    }

    /// How long to wait before sending a line of event time `ts_ms`, if at all.
    fn wait(&self, ts_ms: i64) -> Option<Duration> {
        let offset = u64::try_from(ts_ms - self.start_ms).unwrap_or(0);
        let due = self.origin + Duration::from_millis(offset);
        due.checked_duration_since(Instant::now())
            .filter(|d| *d >= Duration::from_millis(2))
    }
}

/// Produces the lines to Kafka, keyed as EVENTS.md asks (user, channel for
/// `spend`, none for invalid lines). Delivery: every line is handed to
/// librdkafka and its delivery awaited before exit; failures are counted and
/// make the exit code 1.
fn produce(
    generator: Generator,
    brokers: &str,
    topic: &str,
    pacer: Option<Pacer>,
) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(produce_async(generator, brokers, topic, pacer))
}

async fn produce_async(
    generator: Generator,
    brokers: &str,
    topic: &str,
    pacer: Option<Pacer>,
) -> anyhow::Result<ExitCode> {
    use rdkafka::ClientConfig;
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

    /// Deliveries awaited in order once this many are outstanding: bounds memory.
    const MAX_IN_FLIGHT: usize = 100_000;

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .set("message.timeout.ms", "30000")
        .create()
        .context("creating the Kafka producer")?;
    let began = Instant::now();
    let mut in_flight: VecDeque<DeliveryFuture> = VecDeque::new();
    let (mut sent, mut failed) = (0u64, 0u64);
    let mut settle =
        |result: Result<rdkafka::producer::future_producer::OwnedDeliveryResult, _>| {
            if !matches!(result, Ok(Ok(_))) {
                failed += 1;
            }
        };
    for line in generator {
        if let Some(wait) = pacer.as_ref().and_then(|p| p.wait(line.ts_ms)) {
            tokio::time::sleep(wait).await;
        }
        let mut record = FutureRecord::<str, str>::to(topic).payload(&line.payload);
        if let Some(key) = &line.key {
            record = record.key(key);
        }
        loop {
            match producer.send_result(record) {
                Ok(delivery) => {
                    in_flight.push_back(delivery);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    match in_flight.pop_front() {
                        Some(oldest) => settle(oldest.await),
                        None => tokio::time::sleep(Duration::from_millis(1)).await,
                    }
                }
                Err((e, _)) => return Err(e).context("producing to Kafka"),
            }
        }
        sent += 1;
        while in_flight.len() > MAX_IN_FLIGHT {
            if let Some(oldest) = in_flight.pop_front() {
                settle(oldest.await);
            }
        }
    }
    while let Some(oldest) = in_flight.pop_front() {
        settle(oldest.await);
    }
    producer
        .flush(Duration::from_secs(30))
        .context("flushing the Kafka producer")?;
    let secs = began.elapsed().as_secs_f64();
    eprintln!(
        "cxpulse gen: {sent} lines to {topic} in {secs:.1} s ({:.0} lines/s), {failed} not delivered",
        sent as f64 / secs.max(1e-9)
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
