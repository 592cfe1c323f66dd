//! `cxpulse demo`: the whole live service on one machine with nothing to
//! install. An embedded Kafka-protocol broker (librdkafka's mock cluster,
//! real protocol over loopback TCP), the generator producing live exchange
//! traffic whose event time tracks the wall clock, the full pipeline
//! ([`crate::run::serve`]), and the live page (`/`) and `/metrics` served.
//! Ctrl-C stops it cleanly.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use tracing::{info, warn};

use crate::config::Config;
use crate::r#gen::{GenConfig, Generator};
use crate::run::{self, Shutdown};
use crate::telemetry;

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Events per second the generator produces (event time tracks the wall clock).
    #[arg(long, default_value_t = 300.0)]
    pub rate: f64,
    /// Seed of the generated traffic.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Address of the live page /, /metrics, /healthz, /readyz [default: http.listen, 127.0.0.1:9464].
    #[arg(long)]
    pub listen: Option<String>,
    /// Partitions of each input topic on the embedded broker.
    #[arg(long, default_value_t = 3)]
    pub partitions: i32,
    /// Optional config file for the engine and pipeline settings; the Kafka
    /// brokers are always the embedded ones.
    #[arg(long, short)]
    pub config: Option<std::path::PathBuf>,
}

pub fn main(args: DemoArgs) -> anyhow::Result<ExitCode> {
    telemetry::init_tracing_with_default("warn,cxpulse=info");
    anyhow::ensure!(
        args.rate.is_finite() && args.rate > 0.0,
        "--rate must be a positive number"
    );
    anyhow::ensure!(args.partitions > 0, "--partitions must be positive");
    let mut cfg = Config::load(args.config.as_deref(), std::env::vars())?;

    // The broker lives on this (main) thread for the whole run: it is not Send.
    let mock = MockCluster::new(1).context("cannot start the embedded Kafka broker")?;
    let brokers = mock.bootstrap_servers();
    cfg.kafka.brokers = brokers.clone();
    if let Some(listen) = &args.listen {
        cfg.http.listen = listen.clone();
    }
    for t in &cfg.kafka.input_topics {
        mock.create_topic(t, args.partitions, 1)
            .with_context(|| format!("cannot create topic {t}"))?;
    }
    let partials = crate::kafka::fleet::partials_topic(&cfg.kafka);
    for t in [
        &cfg.kafka.dead_letter_topic,
        &cfg.kafka.output_topic,
        &cfg.kafka.alerts_topic,
        &partials,
    ] {
        if !t.is_empty() {
            mock.create_topic(t, 1, 1)
                .with_context(|| format!("cannot create topic {t}"))?;
        }
    }
    // Partition state goes to the state store (the default): its topic is
    // made here like the others (the embedded broker is librdkafka's mock
    // cluster, which the store's admin requests cannot rely on).
    if cfg.checkpoint.store == crate::config::StoreKind::Kafka {
        let state = cfg.checkpoint.state_topic(&cfg.kafka.group_id);
        mock.create_topic(&state, cfg.checkpoint.topic_partitions, 1)
            .with_context(|| format!("cannot create topic {state}"))?;
    }
    let input = cfg
        .kafka
        .input_topics
        .first()
        .cloned()
        .context("kafka.input_topics is empty")?;

    let stop = Arc::new(AtomicBool::new(false));
    let produced = Arc::new(AtomicU64::new(0));
    let generator = {
        let (stop, produced) = (stop.clone(), produced.clone());
        let (brokers, topic, rate, seed) = (brokers.clone(), input.clone(), args.rate, args.seed);
        std::thread::Builder::new()
            .name("demo-generator".into())
            .spawn(move || generate(&brokers, &topic, rate, seed, &stop, &produced))
            .context("cannot start the generator thread")?
    };

    let rt = run::runtime()?;
    let lateness = cfg.engine.allowed_lateness;
    let publish = cfg.kafka.publish_interval;
    let output = cfg.kafka.output_topic.clone();
    let result = rt.block_on(async {
        let shutdown = Shutdown::on_signals();
        run::serve(cfg, shutdown, |addr| {
            print_banner(
                &addr.to_string(),
                &brokers,
                &input,
                args.rate,
                lateness,
                publish,
                &output,
            );
        })
        .await
    });
    stop.store(true, Ordering::Relaxed);
    if generator.join().is_err() {
        warn!("the generator thread panicked");
    }
    rt.shutdown_timeout(Duration::from_millis(500));
    info!(
        events = produced.load(Ordering::Relaxed),
        "demo stopped; the embedded broker and its data are gone"
    );
    drop(mock);
    result
}

fn print_banner(
    addr: &str,
    brokers: &str,
    topic: &str,
    rate: f64,
    lateness: crate::config::Dur,
    publish: crate::config::Dur,
    output: &str,
) {
    println!(
        "\ncxpulse demo\n\
         \n  live page                       http://{addr}/   (support wallboard, growth, retention & CX)\
         \n\n  embedded Kafka-protocol broker  {brokers}  (topic `{topic}`)\
         \n  generator                       ~{rate} events/s of exchange traffic, event time = now\
         \n  metrics                         http://{addr}/metrics\
         \n  health / readiness              http://{addr}/healthz   http://{addr}/readyz\
         \n\nWhat to look at (an event's effect shows once {lateness} of allowed lateness has passed):\
         \n  the live page in a browser: http://{addr}/?view=support, ?view=growth, ?view=retention\
         \n  the raw series:\
         \n  curl -s http://{addr}/metrics | grep -E '^cxpulse_(events_total|signups_total|users|active_customers_now|support_open_tickets|csat_ratio|nps)'\
         \n  curl -s http://{addr}/metrics | grep -E '^cxpulse_(consumer_lag|event_to_metric_seconds_(sum|count)|clock_timestamp_seconds|tracked_users)'\
         \n  changed series go to topic `{output}` every {publish}; SLA breaches to the alerts topic.\
         \n\nCtrl-C stops it.\n"
    );
}

/// Produces generated lines to `topic`, each when its event time comes.
fn generate(
    brokers: &str,
    topic: &str,
    rate: f64,
    seed: u64,
    stop: &AtomicBool,
    produced: &AtomicU64,
) {
    let producer: BaseProducer = match ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .create()
    {
        Ok(p) => p,
        Err(e) => {
            warn!(error = %e, "the demo generator cannot create its producer");
            return;
        }
    };
    let start_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let origin = Instant::now();
    let cfg = GenConfig {
        seed,
        events: u64::MAX,
        days: 1,
        start_ms,
        extra_channels: 0,
    };
    for line in Generator::with_rate(&cfg, rate) {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let due = Duration::from_millis((line.ts_ms - start_ms).max(0) as u64);
        while let Some(wait) = due.checked_sub(origin.elapsed()) {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            producer.poll(Duration::ZERO);
            std::thread::sleep(wait.min(Duration::from_millis(100)));
        }
        let mut record = BaseRecord::to(topic).payload(line.payload.as_str());
        if let Some(k) = &line.key {
            record = record.key(k.as_str());
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    producer.poll(Duration::from_millis(50));
                }
                Err((e, _)) => {
                    warn!(error = %e, "demo generator: produce failed");
                    break;
                }
            }
        }
        produced.fetch_add(1, Ordering::Relaxed);
        producer.poll(Duration::ZERO);
    }
    let _ = producer.flush(Duration::from_secs(2));
}
