//! A turn's partitions applied apart ([`Engine::split`], one thread per
//! partition, [`Engine::join`]) leave the engine as the same messages
//! offered one by one.

use super::partitions::{CFG, lines, text};
use crate::engine::testkit::*;
use crate::engine::{BreachAlert, EventCounts};
use crate::event::Decoder;

/// Messages of one turn of the live loop, at most.
const TURN: usize = 2048;

fn decoder() -> Decoder {
    let c = cfg(CFG);
    Decoder::new(&c.mapping, c.engine.max_message_bytes, false)
}

/// Offers `lines` one by one, in order.
fn serial(lines: &[(u32, String)]) -> Engine {
    let (mut eng, decoder) = (engine(CFG), decoder());
    for (p, l) in lines {
        match decoder.decode(l.as_bytes(), None) {
            Ok(ev) => {
                eng.offer(*p, &ev, None);
            }
            Err(f) => eng.record_invalid(*p, f.event_type),
        }
    }
    eng
}

/// Applies `lines` a turn at a time, each partition of a turn on a thread
/// of its own (in its order), as the live loop does.
fn parallel(lines: &[(u32, String)]) -> (Engine, usize) {
    let (mut eng, decoder) = (engine(CFG), decoder());
    let mut turns_split = 0;
    for turn in lines.chunks(TURN) {
        let mut pids: Vec<u32> = turn.iter().map(|(p, _)| *p).collect();
        pids.sort_unstable();
        pids.dedup();
        let parts = eng.split(&pids).expect("no cap set");
        assert_eq!(parts.len(), pids.len());
        turns_split += usize::from(parts.len() >= 2);
        let decoder = &decoder;
        let done: Vec<_> = std::thread::scope(|s| {
            let threads: Vec<_> = parts
                .into_iter()
                .map(|mut part| {
                    s.spawn(move || {
                        let pid = part.pid();
                        for (_, l) in turn.iter().filter(|(p, _)| *p == pid) {
                            match decoder.decode(l.as_bytes(), None) {
                                Ok(ev) => {
                                    part.offer(&ev, None);
                                }
                                Err(f) => part.record_invalid(f.event_type),
                            }
                        }
                        part.finish()
                    })
                })
                .collect();
            threads
                .into_iter()
                .map(|t| t.join().expect("no panic"))
                .collect()
        });
        eng.join(done);
    }
    (eng, turns_split)
}

/// Alerts in a fixed order, with when they were detected apart.
fn sorted(mut alerts: Vec<BreachAlert>) -> Vec<(BreachAlert, Millis)> {
    alerts.sort_by(|a, b| {
        (&a.ticket_id, a.kind, a.deadline).cmp(&(&b.ticket_id, b.kind, b.deadline))
    });
    alerts
        .into_iter()
        .map(|mut a| {
            let at = a.detected_at;
            a.detected_at = 0;
            (a, at)
        })
        .collect()
}

#[test]
fn partitions_applied_on_threads_of_their_own_equal_the_same_messages_offered_serially() {
    let lines = lines(60_000);
    let mut one = serial(&lines);
    let (mut apart, turns_split) = parallel(&lines);
    // Every turn held all three partitions.
    assert_eq!(turns_split, lines.len().div_ceil(TURN));
    assert_eq!(apart.partitions(), vec![0, 1, 2]);
    assert_eq!(apart.clock(), one.clock());
    let counts: EventCounts = apart.event_counts();
    assert_eq!(counts, one.event_counts());
    assert_eq!(
        Outcome::ALL.iter().map(|o| counts.total(*o)).sum::<u64>(),
        60_000,
        "every message counted once"
    );
    assert!(counts.total(Outcome::Applied) > 50_000);
    assert_eq!(apart.pending_events(), one.pending_events());
    let (a, o) = (text(&apart.families()), text(&one.families()));
    assert!(a.lines().count() > 100, "{a}");
    assert!(a == o, "families differ");
    // Alerts: the same breaches. Each is detected at T as known to its
    // partition's thread: no later than T when offered serially (which
    // knows the other partitions' events offered before), and never before
    // its deadline.
    let (a, o) = (sorted(apart.drain_alerts()), sorted(one.drain_alerts()));
    assert!(!o.is_empty(), "the generated tickets breach SLAs");
    assert_eq!(a.len(), o.len());
    for ((a, at_apart), (o, at_one)) in a.iter().zip(&o) {
        assert_eq!(a, o);
        assert!(
            o.deadline <= *at_apart && at_apart <= at_one,
            "{a:?}: {at_apart} vs {at_one}"
        );
    }
    // And so stays equal at the end of the input.
    apart.finish();
    one.finish();
    assert!(text(&apart.families()) == text(&one.families()));
}

#[test]
fn an_engine_with_a_cap_is_not_split() {
    let mut eng = engine("[engine]\nmax_tracked_users = 1000\n");
    assert!(!eng.splits());
    assert!(eng.split(&[0, 1]).is_none());
    let mut eng = engine(CFG);
    assert!(eng.splits());
    let parts = eng.split(&[2, 0, 2]).expect("no cap");
    let pids: Vec<u32> = parts.iter().map(|p| p.pid()).collect();
    assert_eq!(pids, vec![0, 2], "ascending, repeats ignored");
    drop(parts);
    assert_eq!(eng.partitions(), vec![0, 2], "created when not held");
}
