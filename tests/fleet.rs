//! A fleet of three `cxpulse run` instances in one consumer group on a
//! 6-partition topic, against a real Kafka-protocol broker (tansu), under
//! live generated traffic (`cxpulse gen --rate ... --start now --brokers
//! ...`), with state in Kafka (the default `[checkpoint] store`):
//!
//! start one, add a second and a third, SIGKILL one and start it again,
//! SIGTERM another and start it again (dynamic membership: see [`config`]).
//! Then:
//!
//! - **never double counted**: at every scrape, the applied events summed
//!   over the instances never exceed the events produced so far (the
//!   topic's end offsets, read after the scrapes), nor does any
//!   instance's exceed what was produced on the partitions it says it
//!   exports (`cxpulse_partition_owned`); once a rebalance has settled, every
//!   partition is exported by exactly one instance;
//! - **fleet equals truth**: when traffic has stopped, everything is applied
//!   and the three instances report the same clock T (idle instances follow
//!   the wall clock in whole seconds) and T is past the last event time by
//!   `allowed_lateness` (every effect applied), every additive series summed
//!   over the instances, and the output topic folded by key (every series,
//!   ratios and quantiles too: the fleet totals published by the owner of
//!   partition 0), equal `cxpulse replay --partition-per-file --at T` over the topic dumped
//!   one file per partition.
//!
//! Run time: about two minutes (traffic at 250 events/s for as long as the
//! moves take, then `allowed_lateness` for the last effects).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{
    CxConfig, CxRun, Produced, Tansu, applied_events, compare_values, cxpulse_command,
    dump_partitions, events_seen, fold_output, free_addr, is_additive, is_pipeline, log_dir,
    owned_partitions, scrape_at_equal_clocks, series_key, sum_series, tail, unique_name, values,
};
use cxpulse::event::time::format_rfc3339;

const TOPIC: &str = "events";
const PARTITIONS: i32 = 6;
const OUTPUT: &str = "metrics-out";
const GROUP: &str = "fleet";
/// Instances (slots: a restarted instance takes its slot's name).
const NAMES: [&str; 3] = ["cxpulse-0", "cxpulse-1", "cxpulse-2"];
/// Generated events per second (`cxpulse gen --rate`).
const RATE: &str = "250";
/// `engine.allowed_lateness` (the default) in seconds.
const LATENESS_S: u64 = 30;
/// How long a rebalance may take to settle (joins, restores, catch-up).
const SETTLE: Duration = Duration::from_secs(60);
/// Pause between two scrape rounds.
const ROUND_PAUSE: Duration = Duration::from_millis(250);

/// The config of every instance (and of the replay): [`CxConfig::live`]
/// (T follows the wall clock after 2 s idle, publishing and committing every
/// second) with the default `allowed_lateness` (30 s: the generator's
/// out-of-order lines are applied, and a backlog after a move is never
/// judged against a clock the wall clock moved; docs/semantics.md "A fleet
/// of instances"), a quick group join (session timeout 6 s), the default
/// `cooperative-sticky` assignor, state snapshotted to Kafka every 2 s (the
/// default store).
///
/// Dynamic group membership, unlike the deploys (which set
/// `kafka.group_instance_id` from the pod name): tansu 0.6 does not start a
/// new generation when a static member rejoins in the second round of a
/// cooperative rebalance (docs/semantics.md, "Tansu and static
/// membership"). So here every restart moves partitions: a SIGTERM leaves
/// the group (revoke: final snapshots), a SIGKILL's partitions move to the
/// others after the session timeout (from their last periodic snapshots),
/// and each restarted instance takes some back.
fn config(brokers: &str, listen: &str) -> CxConfig {
    CxConfig::live(brokers, GROUP, listen)
        .allowed_lateness(&format!("{LATENESS_S}s"))
        .quick_group_join()
        .set("checkpoint", "interval", "2s")
}

/// `cxpulse gen` producing live traffic to the topic; killed on drop.
struct Traffic {
    child: Child,
    log: PathBuf,
}

impl Traffic {
    fn start(brokers: &str) -> Traffic {
        let log = log_dir().join(format!("{}.log", unique_name("fleet-gen")));
        let f = File::create(&log).expect("create gen log");
        let child = cxpulse_command()
            .args(["gen", "--seed", "10", "--events", "0", "--rate", RATE])
            .args(["--start", "now", "--brokers", brokers, "--topic", TOPIC])
            .stdin(Stdio::null())
            .stdout(f.try_clone().expect("log fd"))
            .stderr(f)
            .spawn()
            .expect("spawn cxpulse gen");
        Traffic { child, log }
    }

    /// Stops the generator (what it produced stays: the topic is the truth).
    fn stop(&mut self) {
        if let Ok(Some(st)) = self.child.try_wait() {
            panic!(
                "cxpulse gen exited early ({st}):\n{}",
                tail(&self.log, 2000)
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the scrape rounds saw.
#[derive(Default, Debug)]
struct Stats {
    rounds: usize,
    /// Rounds whose instances exported disjoint partition sets: the applied
    /// sums were checked against the produced events.
    checked: usize,
    /// Rounds scraped in the middle of a handover (a partition in two
    /// instances' scrapes, taken a few milliseconds apart): not checked.
    overlapping: usize,
    /// The largest fleet applied / produced seen in a checked round.
    max_ratio: f64,
}

/// Three instance slots, the records produced so far, the checks of every round.
struct Fleet {
    brokers: String,
    dir: PathBuf,
    runs: Vec<Option<CxRun>>,
    produced: Produced,
    stats: Stats,
    started: Instant,
}

impl Fleet {
    fn new(brokers: &str, dir: &Path) -> Fleet {
        Fleet {
            brokers: brokers.to_string(),
            dir: dir.to_path_buf(),
            runs: NAMES.iter().map(|_| None).collect(),
            produced: Produced::new(brokers, TOPIC, PARTITIONS),
            stats: Stats::default(),
            started: Instant::now(),
        }
    }

    fn say(&self, what: &str) {
        eprintln!(
            "fleet: {:6.1}s {what}",
            self.started.elapsed().as_secs_f64()
        );
    }

    /// Starts instance `i` (a new HTTP port each time) and waits for
    /// `/healthz`.
    fn start(&mut self, i: usize) {
        assert!(self.runs[i].is_none(), "{} runs already", NAMES[i]);
        let listen = free_addr();
        let cfg =
            config(&self.brokers, &listen).write(&self.dir.join(format!("{}.toml", NAMES[i])));
        let log = log_dir().join(format!("{}.log", unique_name(NAMES[i])));
        self.say(&format!(
            "start {} on {listen}, log {}",
            NAMES[i],
            log.display()
        ));
        let run = CxRun::spawn(&cfg, log, &listen).healthy_within(Duration::from_secs(30));
        self.runs[i] = Some(run);
    }

    fn run(&self, i: usize) -> &CxRun {
        self.runs[i]
            .as_ref()
            .unwrap_or_else(|| panic!("{} is not running", NAMES[i]))
    }

    fn kill9(&mut self, i: usize) {
        self.say(&format!("SIGKILL {}", NAMES[i]));
        let mut run = self.runs[i].take().expect("running");
        run.kill9();
    }

    fn sigterm(&mut self, i: usize) {
        self.say(&format!("SIGTERM {}", NAMES[i]));
        let mut run = self.runs[i].take().expect("running");
        let code = run.sigterm();
        assert_eq!(
            code,
            Some(0),
            "{} did not exit 0 on SIGTERM\n{}",
            NAMES[i],
            run.log_tail()
        );
    }

    /// The running instances' logs (tails), for failure messages.
    fn logs(&self) -> String {
        self.runs
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                let r = r.as_ref()?;
                Some(format!(
                    "--- {} ({}) ---\n{}",
                    NAMES[i],
                    r.log.display(),
                    r.log_tail()
                ))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// One scrape of every running instance, then the records produced, and
    /// the double-counting checks. Returns (instance, `/metrics`) pairs.
    fn round(&mut self) -> Vec<(usize, String)> {
        let texts: Vec<(usize, String)> = self
            .runs
            .iter()
            .enumerate()
            .filter_map(|(i, r)| Some((i, r.as_ref()?.metrics())))
            .collect();
        let produced = self.produced.now();
        self.stats.rounds += 1;
        let owned: Vec<BTreeSet<u32>> = texts.iter().map(|(_, t)| owned_partitions(t)).collect();
        let mut seen = BTreeSet::new();
        let disjoint = owned.iter().flatten().all(|p| seen.insert(*p));
        if !disjoint {
            self.stats.overlapping += 1;
            return texts;
        }
        self.stats.checked += 1;
        let total: i64 = produced.iter().sum();
        let mut fleet = 0.0;
        for ((i, text), parts) in texts.iter().zip(&owned) {
            let applied = applied_events(text);
            let mine: i64 = parts
                .iter()
                .map(|p| produced.get(*p as usize).copied().unwrap_or(0))
                .sum();
            assert!(
                applied <= mine as f64,
                "{} reports {applied} applied events, but only {mine} were produced on the \
                 partitions it exports {parts:?} (records per partition {produced:?})\n{}",
                NAMES[*i],
                self.logs()
            );
            fleet += applied;
        }
        assert!(
            fleet <= total as f64,
            "the instances report {fleet} applied events in all, {total} were produced \
             (owned {owned:?})\n{}",
            self.logs()
        );
        if total > 0 {
            self.stats.max_ratio = self.stats.max_ratio.max(fleet / total as f64);
        }
        texts
    }

    /// Scrape rounds until `done` holds for one; panics after `timeout`.
    fn rounds_until(
        &mut self,
        what: &str,
        timeout: Duration,
        mut done: impl FnMut(&Fleet, &[(usize, String)]) -> bool,
    ) -> Vec<(usize, String)> {
        let deadline = Instant::now() + timeout;
        loop {
            let texts = self.round();
            if done(self, &texts) {
                return texts;
            }
            if Instant::now() > deadline {
                let owned: Vec<(&str, BTreeSet<u32>)> = texts
                    .iter()
                    .map(|(i, t)| (NAMES[*i], owned_partitions(t)))
                    .collect();
                panic!(
                    "timed out after {timeout:?} waiting for {what}; exported partitions \
                     {owned:?}\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(ROUND_PAUSE);
        }
    }

    /// Waits until the rebalance has settled: every running instance is
    /// ready (no partition restoring) and exports at least one partition,
    /// and every partition is exported by exactly one instance. Returns the
    /// partitions each exports.
    fn settle(&mut self, what: &str) -> BTreeMap<usize, BTreeSet<u32>> {
        let texts = self.rounds_until(what, SETTLE, |f, texts| {
            let all: Vec<u32> = texts
                .iter()
                .flat_map(|(_, t)| owned_partitions(t))
                .collect();
            let want: Vec<u32> = (0..PARTITIONS as u32).collect();
            let mut sorted = all.clone();
            sorted.sort_unstable();
            sorted == want
                && texts
                    .iter()
                    .all(|(i, t)| !owned_partitions(t).is_empty() && f.run(*i).ready().0 == 200)
        });
        let owners: BTreeMap<usize, BTreeSet<u32>> = texts
            .iter()
            .map(|(i, t)| (*i, owned_partitions(t)))
            .collect();
        self.say(&format!("settled ({what}): {owners:?}"));
        owners
    }

    /// Scrape rounds for `d` (traffic flowing).
    fn keep_scraping(&mut self, d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until {
            self.round();
            std::thread::sleep(ROUND_PAUSE);
        }
    }
}

/// `cxpulse replay --quiet --partition-per-file --at T --config CFG FILES`:
/// (stdout, stderr); panics unless it succeeds.
fn replay_at(cfg: &Path, files: &[PathBuf], t_ms: i64) -> (String, String) {
    let out = cxpulse_command()
        .args(["replay", "--quiet", "--partition-per-file", "--config"])
        .arg(cfg)
        .args(["--at", &format_rfc3339(t_ms)])
        .args(files)
        .output()
        .expect("run cxpulse replay");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "replay failed: {stderr}");
    (stdout, stderr)
}

#[test]
fn three_instances_under_rebalances_and_kills_publish_exactly_the_replay_of_the_topic() {
    let broker = Tansu::start();
    broker.create_topics(&[
        (TOPIC, PARTITIONS),
        ("dead-letter", 1),
        (OUTPUT, 1),
        ("alerts", 1),
    ]);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut fleet = Fleet::new(&broker.addr, dir.path());
    let mut traffic = Traffic::start(&broker.addr);
    fleet.say(&format!(
        "traffic at {RATE} events/s, log {}",
        traffic.log.display()
    ));

    // One instance takes every partition and applies events.
    fleet.start(0);
    fleet.settle("cxpulse-0 alone");
    fleet.rounds_until("cxpulse-0 applies events", SETTLE, |_, t| {
        t.iter().any(|(_, m)| applied_events(m) > 0.0)
    });
    // A second, then a third: cooperative rebalances move partitions, and
    // their state with them.
    fleet.start(1);
    fleet.settle("cxpulse-0 and -1");
    fleet.start(2);
    let before_kill = fleet.settle("three instances");
    // SIGKILL cxpulse-1 once it has snapshotted its partitions, a moment
    // later (events after its last snapshot), and start it again: after the
    // session timeout its partitions move on from their last snapshots plus
    // the input since.
    fleet.rounds_until("a state snapshot of cxpulse-1", SETTLE, |_, t| {
        t.iter().any(|(i, m)| {
            *i == 1
                && values(m).iter().any(|(s, v)| {
                    s.starts_with("cxpulse_state_saves_total{") && s.contains("\"ok\"") && *v > 0.0
                })
        })
    });
    fleet.keep_scraping(Duration::from_millis(700));
    fleet.kill9(1);
    fleet.keep_scraping(Duration::from_millis(500));
    fleet.start(1);
    let after_kill = fleet.settle("cxpulse-1 after SIGKILL");
    eprintln!(
        "fleet: cxpulse-1 exported {:?} before the kill, {:?} after",
        before_kill.get(&1),
        after_kill.get(&1)
    );
    // SIGTERM cxpulse-2 (a clean stop: final snapshots) and start it again.
    fleet.sigterm(2);
    fleet.keep_scraping(Duration::from_millis(500));
    fleet.start(2);
    fleet.settle("cxpulse-2 after SIGTERM");
    fleet.keep_scraping(Duration::from_secs(2));
    traffic.stop();
    // Every event time is at most the wall clock when it was sent.
    let stopped_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64();
    let produced = fleet.produced.total();
    fleet.say(&format!("traffic stopped: {produced} records on {TOPIC}"));
    assert!(produced >= 2000, "only {produced} events produced");

    // Everything handled (each message has exactly one outcome).
    fleet.rounds_until("every produced event handled", SETTLE, |_, t| {
        let seen: f64 = t.iter().map(|(_, m)| events_seen(m)).sum();
        seen == produced as f64
    });
    let final_owners = fleet.settle("quiescence");
    assert_eq!(final_owners.len(), 3);
    let runs: Vec<&CxRun> = (0..3).map(|i| fleet.run(i)).collect();
    // Every effect applied: T past the last event time by allowed_lateness
    // (replay applies every pending effect at the end of input).
    let not_before = stopped_at + LATENESS_S as f64 + 1.0;
    let (t, texts) = scrape_at_equal_clocks(&runs, not_before, Duration::from_secs(60));
    let t_ms = (t * 1000.0).round() as i64;
    fleet.say(&format!("all three at T = {}", format_rfc3339(t_ms)));
    let s = &fleet.stats;
    eprintln!(
        "fleet: {} scrape rounds, {} checked (applied <= produced), {} mid-handover; \
         largest fleet applied/produced {:.4}",
        s.rounds, s.checked, s.overlapping, s.max_ratio
    );
    assert!(s.checked >= 20, "only {} checked rounds", s.checked);

    // The truth: the topic dumped one file per partition, replayed at T.
    let (files, per_partition) = dump_partitions(&broker.addr, TOPIC, PARTITIONS, dir.path());
    assert_eq!(per_partition.iter().sum::<usize>() as i64, produced);
    assert!(
        per_partition.iter().all(|n| *n > 0),
        "a partition got nothing: {per_partition:?}"
    );
    let replay_cfg = config(&broker.addr, &free_addr()).write(&dir.path().join("replay.toml"));
    let (truth, summary) = replay_at(&replay_cfg, &files, t_ms);
    eprintln!("fleet: per partition {per_partition:?}; {}", summary.trim());

    // Additive series: summed over the instances = the replay.
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let fleet_sums = sum_series(&texts, is_additive);
    let truth_sums = sum_series(&[truth.as_str()], is_additive);
    assert!(
        truth_sums.len() >= 50,
        "only {} additive series in the replay",
        truth_sums.len()
    );
    let applied = |m: &BTreeMap<String, f64>| -> f64 {
        m.iter()
            .filter(|(k, _)| {
                k.starts_with("cxpulse_events_total{") && k.contains("outcome=\"applied\"")
            })
            .map(|(_, v)| v)
            .sum()
    };
    eprintln!(
        "fleet: applied {} over the instances, {} in the replay; {} additive series",
        applied(&fleet_sums),
        applied(&truth_sums),
        truth_sums.len()
    );
    let d = compare_values(&fleet_sums, &truth_sums, true, 30);
    assert!(
        d.is_empty(),
        "additive series summed over the instances (left) differ from the replay of the \
         topic at T (right):\n{}",
        d.join("\n")
    );

    // The output topic folded by key: the fleet totals, every engine series,
    // equal the replay at the T they state. The folder publishes every
    // second, so read again while a publication is half-read.
    // Each partition's contribution is taken at its instance's T, and idle
    // instances tick each second at their own phase: retry until one fold
    // has every contribution at one T.
    let mut attempt = 0;
    loop {
        attempt += 1;
        let records = broker.consume_all(OUTPUT, 1, Duration::from_secs(20));
        let folded = fold_output(&records);
        let out_t = folded
            .values()
            .map(|v| v.as_of)
            .max()
            .expect("the output topic holds series");
        let got: BTreeMap<String, f64> = folded
            .iter()
            .filter(|(k, _)| !is_pipeline(k))
            .map(|(k, v)| (k.clone(), v.value))
            .collect();
        let (truth_out, _) = replay_at(&replay_cfg, &files, out_t);
        let want: BTreeMap<String, f64> = values(&truth_out)
            .into_iter()
            .filter(|(s, _)| !is_pipeline(s))
            .map(|(s, v)| (series_key(&s), v))
            .collect();
        let d = compare_values(&got, &want, false, 30);
        if d.is_empty() {
            eprintln!(
                "fleet: output topic: {} records, {} series folded, equal to the replay at {} \
                 (read {attempt} time(s))",
                records.len(),
                got.len(),
                format_rfc3339(out_t)
            );
            assert!(
                got.len() >= 100,
                "only {} series on the output topic",
                got.len()
            );
            break;
        }
        assert!(
            attempt < 10,
            "the output topic folded by key (left, {} series) differs from the replay at its \
             T {} (right, {} series):\n{}",
            got.len(),
            format_rfc3339(out_t),
            want.len(),
            d.join("\n")
        );
        eprintln!(
            "fleet: output topic read {attempt}: {} series differ from the replay at {} \
             (a fold of contributions at two T?), e.g. {}",
            d.len(),
            format_rfc3339(out_t),
            d[0]
        );
        std::thread::sleep(Duration::from_millis(1300));
    }
}
