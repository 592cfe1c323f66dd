//! Crafted checkpoint files: a real snapshot of a busy engine with one
//! reference or number made wrong, framed with a correct checksum, so that
//! only the engine's validation can catch it. Each is refused with the
//! error naming what is wrong; none panics.

use std::cmp::Reverse;

use crate::checkpoint::{self, Checkpoint};
use crate::engine::partition::{Partition, Timer, TimerKind};
use crate::engine::pending::{Pending, PendingBody};
use crate::engine::testkit::*;
use crate::event::Decoder;
use crate::state::codec::SnapshotError;

const CFG: &str = "[engine]\nwindows = [\"1h\", \"24h\", \"7d\"]\n[churn]\ninactivity = \"3d\"\n";

/// 30,000 generated events over 80 days on three partitions (by user, as
/// Kafka keys would), not finished: users (some compacted), tickets held
/// and forgotten, timers and pending events on every partition.
pub(crate) fn busy_engine() -> Engine {
    let c = cfg(CFG);
    let decoder = Decoder::new(&c.mapping, c.engine.max_message_bytes, false);
    let mut eng = Engine::new(c.params().expect("valid config"));
    let lines = crate::r#gen::Generator::new(&crate::r#gen::GenConfig {
        seed: 11,
        events: 30_000,
        days: 80,
        ..Default::default()
    });
    for l in lines {
        match decoder.decode(l.payload.as_bytes(), None) {
            Ok(ev) => {
                let key = ev.user_id.as_deref().unwrap_or("");
                let partition = (xxhash_rust::xxh3::xxh3_64(key.as_bytes()) % 3) as u32;
                eng.offer(partition, &ev, None);
            }
            Err(f) => eng.record_invalid(0, f.event_type),
        }
    }
    // And on each partition, a ticket opened at the end (still pending).
    let t = eng.clock().expect("a clock");
    for partition in 0..3u32 {
        let ev = |id: String, body| Event {
            event_id: Cow::Owned(id),
            ts: t,
            user_id: Some(Cow::Owned(format!("late-{partition}"))),
            body,
        };
        let opened = support(&format!("t-{partition}"), SupportAction::Opened, None);
        eng.offer(
            partition,
            &ev(format!("s{partition}"), signup(None, None)),
            None,
        );
        eng.offer(partition, &ev(format!("o{partition}"), opened), None);
    }
    eng
}

/// The engine state of a checkpoint file made of `eng`, read back through
/// the file format (so the checksum is right) and restored.
fn through_a_file(eng: &Engine) -> Result<Engine, SnapshotError> {
    let file = checkpoint::encode(&Checkpoint {
        offsets: Vec::new(),
        engine: eng.snapshot(),
    });
    let cp = checkpoint::decode(&file).expect("the checksum is right");
    Engine::restore(cfg(CFG).params().expect("valid config"), &cp.engine)
}

/// Restores `good`, applies `edit` to partition 0, and writes and reads the
/// file again: the error it is refused with.
fn refused(good: &[u8], edit: impl FnOnce(&mut Partition, &mut Engine)) -> SnapshotError {
    let mut eng = Engine::restore(cfg(CFG).params().unwrap(), good).expect("the good file");
    let mut p = eng.parts.remove(&0).expect("partition 0");
    edit(&mut p, &mut eng);
    eng.parts.insert(0, p);
    through_a_file(&eng).err().expect("refused")
}

/// A change made to a restored engine (and its partition 0) before writing it.
type Edit = dyn FnOnce(&mut Partition, &mut Engine);

fn in_p0(error: SnapshotError) -> SnapshotError {
    SnapshotError::InPartition {
        partition: 0,
        error: Box::new(error),
    }
}

fn dangling(what: &'static str, index: u64, len: usize) -> SnapshotError {
    in_p0(SnapshotError::Dangling {
        what,
        index,
        len: len as u64,
    })
}

fn out_of_range(what: &'static str, value: &str) -> SnapshotError {
    in_p0(SnapshotError::OutOfRange {
        what,
        value: value.to_string(),
    })
}

#[test]
fn every_kind_of_bad_reference_is_refused_with_its_error() {
    let eng = busy_engine();
    // The engine is busy in every way a snapshot can refer to.
    assert_eq!(eng.parts.len(), 3);
    for p in eng.parts.values() {
        assert!(p.users.cold_len() > 0, "compacted users");
        assert!(!p.tickets.is_empty(), "tickets held");
        assert!(p.tickets.forgotten > 0, "forgotten tickets");
        assert!(p.timers_len() > 0 && p.pending_len() > 0);
    }
    let good = eng.snapshot();
    let restored = through_a_file(&eng).expect("the real file is accepted");
    assert_eq!(restored.snapshot(), good);
    let p0 = &eng.parts[&0];
    let (users, tickets) = (p0.users.list.len(), p0.tickets.list.len());
    let channels = p0.registry.len_with_specials();
    let pending = |body| {
        move |p: &mut Partition, _: &mut Engine| {
            p.push(Pending {
                ts: BASE,
                seq: 1,
                body,
            })
        }
    };
    let timer = |instant, kind| {
        move |p: &mut Partition, _: &mut Engine| p.timers.push(Reverse(Timer { instant, kind }))
    };
    let big = users as u32 + 7;
    let cases: Vec<(SnapshotError, Box<Edit>)> = vec![
        (
            dangling("user's channel", 999, channels),
            Box::new(|p, _| p.users.list[0].set_channel(999)),
        ),
        (
            dangling("compacted user's channel", 998, channels),
            Box::new(|p, _| p.users.cold[0].channel = 998),
        ),
        (
            dangling("forgotten signups' channel", channels as u64, channels),
            Box::new(move |p, _| p.users.forgotten_signups = vec![1; channels + 1]),
        ),
        (
            dangling("ticket's user", big as u64, users),
            Box::new(move |p, _| p.tickets.list[0].user = big),
        ),
        (
            dangling("pending event's user", big as u64, users),
            Box::new(pending(PendingBody::Deposit { user: big })),
        ),
        (
            dangling("pending event's ticket", tickets as u64, tickets),
            Box::new(pending(PendingBody::Support {
                user: 0,
                ticket: tickets as u32,
                action: SupportAction::AgentReplied,
                priority: None,
            })),
        ),
        (
            dangling("pending signup's channel", 300, channels),
            Box::new(pending(PendingBody::Signup {
                user: 0,
                channel: 300,
                referred: false,
            })),
        ),
        (
            dangling("pending spend's channel", 301, channels),
            Box::new(pending(PendingBody::Spend {
                channel: 301,
                usd: 1.0,
            })),
        ),
        (
            out_of_range("pending trade fee", "NaN"),
            Box::new(pending(PendingBody::Trade {
                user: 0,
                fee: f64::NAN,
            })),
        ),
        (
            out_of_range("pending csat rating", "9"),
            Box::new(pending(PendingBody::Rated {
                user: 0,
                ratings: Ratings {
                    csat: Some(9),
                    ces: None,
                    nps: None,
                },
            })),
        ),
        (
            dangling("timer's user", big as u64, users),
            Box::new(timer(
                BASE,
                TimerKind::PostSupport {
                    user: big,
                    negative: true,
                },
            )),
        ),
        (
            dangling("timer's ticket", tickets as u64 + 1, tickets),
            Box::new(timer(BASE, TimerKind::Resolution(tickets as u32 + 1))),
        ),
        (
            out_of_range("timer instant", &i64::MAX.to_string()),
            Box::new(timer(
                i64::MAX,
                TimerKind::PostSupport {
                    user: 0,
                    negative: false,
                },
            )),
        ),
        (
            in_p0(SnapshotError::Dangling {
                what: "user id ending at arena byte",
                index: p0.users.arena.len() as u64 + 3,
                len: p0.users.arena.len() as u64,
            }),
            Box::new(|p, _| {
                let u = &mut p.users.list[0];
                (u.id_off, u.id_len) = (p.users.arena.len() as u32 - 2, 5);
            }),
        ),
        (
            in_p0(SnapshotError::Invalid("user id held twice")),
            Box::new(|p, _| {
                let live: Vec<usize> = (0..p.users.list.len())
                    .filter(|&i| !p.users.list[i].has(crate::state::users::F_FREE))
                    .take(2)
                    .collect();
                let (off, len) = (p.users.list[live[0]].id_off, p.users.list[live[0]].id_len);
                (p.users.list[live[1]].id_off, p.users.list[live[1]].id_len) = (off, len);
            }),
        ),
        (
            in_p0(SnapshotError::Invalid("ticket id held twice")),
            Box::new(|p, _| {
                let live: Vec<usize> = (0..p.tickets.list.len())
                    .filter(|&i| !p.tickets.list[i].is_free())
                    .take(2)
                    .collect();
                p.tickets.list[live[1]].id = p.tickets.list[live[0]].id.clone();
            }),
        ),
        (
            in_p0(SnapshotError::Invalid("forgotten ticket slot")),
            Box::new(|p, _| {
                // A forgotten slot (last seen NEVER) that still says open.
                let mut t = p.tickets.list[0].clone();
                (t.last_seen, t.open) = (crate::state::users::NEVER, true);
                p.tickets.list.push(t);
            }),
        ),
        (
            // One ms after the last event time a user can hold (9999-12-31T23:59:59.999Z).
            out_of_range("user signup time", "253402300800000"),
            Box::new(|p, _| p.users.list[0].set_signup(253_402_300_800_000)),
        ),
        (
            out_of_range("ticket paused time", &(1i64 << 60).to_string()),
            Box::new(|p, _| p.tickets.list[0].paused = 1 << 60),
        ),
        (
            out_of_range("bucket sum", "inf"),
            Box::new(|p, _| p.families.surveys.ring.at(10).csat_n = f64::INFINITY),
        ),
        (
            out_of_range("bucket index", &(1i64 << 53).to_string()),
            Box::new(|p, _| p.families.retention.churn.at(1 << 53).churned = 1.0),
        ),
        (
            dangling("acquisition channel", channels as u64, channels),
            Box::new(move |p, _| {
                p.families.acquisition.spend(channels as u16, 5, 1.0);
            }),
        ),
        (
            in_p0(SnapshotError::Invalid("histogram bucket above its count")),
            Box::new(|p, _| {
                let h = &mut p.families.support.fr_hist[1];
                h.counts = vec![h.count + 1];
            }),
        ),
        (
            out_of_range("histogram count", &u64::MAX.to_string()),
            Box::new(|p, _| p.families.support.res_hist[0].count = u64::MAX),
        ),
        (
            out_of_range("forgotten users count", &u64::MAX.to_string()),
            Box::new(|p, _| p.users.forgotten = u64::MAX),
        ),
        (
            out_of_range("last trim bucket", &i64::MAX.to_string()),
            Box::new(|p, _| p.last_trim = i64::MAX),
        ),
        (
            out_of_range("partition clock", &i64::MIN.to_string()),
            Box::new(|p, _| p.clock = Some(i64::MIN)),
        ),
        (
            in_p0(SnapshotError::OutOfRange {
                what: "event count",
                value: u64::MAX.to_string(),
            }),
            Box::new(|p, _| p.counts.counts[0][0] = u64::MAX),
        ),
        (
            SnapshotError::OutOfRange {
                what: "clock",
                value: (-(1i64 << 62)).to_string(),
            },
            Box::new(|_, e| e.clock = Some(-(1 << 62))),
        ),
    ];
    let n = cases.len();
    for (i, (want, edit)) in cases.into_iter().enumerate() {
        assert_eq!(refused(&good, edit), want, "case {i} of {n}");
    }
}

#[test]
fn counts_that_would_overflow_only_when_partitions_add_up_are_refused() {
    let eng = busy_engine();
    let good = eng.snapshot();
    let mut e = Engine::restore(cfg(CFG).params().unwrap(), &good).unwrap();
    // Each partition's count is within the limit; their sum is not.
    for p in e.parts.values_mut() {
        p.tickets.forgotten = 1 << 52;
    }
    assert_eq!(
        through_a_file(&e).err(),
        Some(SnapshotError::OutOfRange {
            what: "forgotten tickets over all partitions",
            value: (3u64 << 52).to_string(),
        })
    );
}

#[test]
fn errors_name_indices_never_ids() {
    let e = in_p0(SnapshotError::Dangling {
        what: "ticket's user",
        index: 12,
        len: 10,
    });
    assert_eq!(
        e.to_string(),
        "in the state of engine partition 0: snapshot holds a ticket's user 12, but only 10 are held"
    );
}
