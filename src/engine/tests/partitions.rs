//! The input partition as the unit of state: a partition's snapshot moves
//! it between engines, dropping it removes its series, and the fleet fold
//! of partials equals one engine holding every partition.

use super::snapshot_files::busy_engine;
use crate::engine::fold_partials;
use crate::engine::testkit::*;
use crate::event::Decoder;
use crate::export::to_prometheus_text;
use crate::state::codec::SnapshotError;

pub(super) const CFG: &str = "[engine]\nwindows = [\"1h\", \"24h\", \"7d\"]\n[churn]\ninactivity = \"3d\"\n[acquisition]\nbaseline_users = 1000\n";

pub(super) fn text(f: &[Family]) -> String {
    to_prometheus_text(f)
}

/// Every line that differs (at most 5), for a readable failure.
fn first_diffs(a: &str, b: &str) -> Vec<(String, String)> {
    a.lines()
        .zip(b.lines())
        .filter(|(x, y)| x != y)
        .take(5)
        .map(|(x, y)| (x.to_string(), y.to_string()))
        .collect()
}

fn assert_same(got: &str, want: &str) {
    assert!(
        got == want,
        "first differences (got, want): {:#?}; lines {} vs {}",
        first_diffs(got, want),
        got.lines().count(),
        want.lines().count()
    );
}

/// Generated lines, each with its partition (by user, as Kafka keys would).
pub(super) fn lines(events: u64) -> Vec<(u32, String)> {
    let g = crate::r#gen::Generator::new(&crate::r#gen::GenConfig {
        seed: 5,
        events,
        days: 20,
        ..Default::default()
    });
    g.map(|l| {
        let key = l.key.clone().unwrap_or_default();
        let p = (xxhash_rust::xxh3::xxh3_64(key.as_bytes()) % 3) as u32;
        (p, l.payload)
    })
    .collect()
}

fn feed(engines: &mut [(&mut Engine, &[u32])], lines: &[(u32, String)]) {
    let c = cfg(CFG);
    let decoder = Decoder::new(&c.mapping, c.engine.max_message_bytes, false);
    for (p, l) in lines {
        let Some((eng, _)) = engines.iter_mut().find(|(_, held)| held.contains(p)) else {
            continue;
        };
        match decoder.decode(l.as_bytes(), None) {
            Ok(ev) => {
                eng.offer(*p, &ev, None);
            }
            Err(f) => eng.record_invalid(*p, f.event_type),
        }
    }
}

fn fold(engines: &[&Engine], t: Millis) -> Vec<Family> {
    let prm = cfg(CFG).params().unwrap();
    let mut parts: Vec<(u32, Vec<u8>)> = engines.iter().flat_map(|e| e.partials()).collect();
    parts.sort_by_key(|p| p.0);
    let refs: Vec<(u32, &[u8])> = parts.iter().map(|(p, b)| (*p, b.as_slice())).collect();
    fold_partials(&prm, t, &refs).expect("partials fold")
}

#[test]
fn a_partition_snapshot_round_trips_and_equals_an_engine_that_never_moved_it() {
    let eng = busy_engine();
    assert_eq!(eng.partitions(), vec![0, 1, 2]);
    let mut moved =
        engine("[engine]\nwindows = [\"1h\", \"24h\", \"7d\"]\n[churn]\ninactivity = \"3d\"\n");
    for p in eng.partitions() {
        let bytes = eng.snapshot_partition(p).expect("held");
        moved.restore_partition(p, &bytes).expect("restores");
        // A restored partition snapshots to the same bytes.
        assert_eq!(moved.snapshot_partition(p), Some(bytes));
    }
    assert_eq!(moved.clock(), eng.clock());
    assert_same(&text(&moved.families()), &text(&eng.families()));
    assert_eq!(eng.snapshot_partition(7), None);
}

#[test]
fn moving_partition_1_between_engines_keeps_the_folded_series() {
    let all = lines(24_000);
    let (a, b) = all.split_at(13_000);
    let prm = || cfg(CFG).params().unwrap();
    // One engine with everything.
    let mut whole = Engine::new(prm());
    feed(&mut [(&mut whole, &[0, 1, 2])], &all);
    // X holds everything, then partition 1 moves to Y halfway.
    let mut x = Engine::new(prm());
    let mut y = Engine::new(prm());
    feed(&mut [(&mut x, &[0, 1, 2])], a);
    let bytes = x.snapshot_partition(1).expect("held");
    y.restore_partition(1, &bytes).expect("restores");
    assert!(x.drop_partition(1));
    assert_eq!((x.partitions(), y.partitions()), (vec![0, 2], vec![1]));
    feed(&mut [(&mut x, &[0, 2]), (&mut y, &[1])], b);
    // The same T everywhere (idle instances follow the wall clock together).
    let t = whole.clock().expect("a clock");
    for e in [&mut whole, &mut x, &mut y] {
        e.advance_to(t);
        e.finish();
    }
    let want = whole.families();
    assert_same(&text(&fold(&[&x, &y], t)), &text(&want));
    // Baseline users once (through partition 0), plus every signup.
    let signed_up = v(&want, "cxpulse_users", &[]) - 1000.0;
    assert!(signed_up > 300.0, "{signed_up}");
    let total: f64 = ["organic", "paid_search", "social", "referral", "unknown"]
        .iter()
        .filter_map(|c| value(&want, "cxpulse_signups_total", &[("channel", c)]))
        .sum();
    assert!(total <= signed_up, "{total} {signed_up}");
}

#[test]
fn fold_of_partials_equals_families_for_every_state_series() {
    let mut eng = Engine::new(cfg(CFG).params().unwrap());
    feed(&mut [(&mut eng, &[0, 1, 2])], &lines(9_000));
    let t = eng.clock().expect("a clock");
    let fam = eng.families();
    assert_same(&text(&fold(&[&eng], t)), &text(&fam));
    // cxpulse_users adds acquisition.baseline_users once, not once per partition.
    assert_eq!(eng.partitions(), vec![0, 1, 2]);
    let signups = |f: &[Family]| -> f64 {
        f.iter()
            .filter(|f| f.name == "cxpulse_signups_total")
            .flat_map(|f| f.samples.iter())
            .map(|s| s.value)
            .sum()
    };
    assert!(signups(&fam) > 100.0);
    assert_eq!(v(&fam, "cxpulse_users", &[]), 1000.0 + signups(&fam));
    // Without partition 0, no baseline.
    let mut no_p0 = Engine::new(cfg(CFG).params().unwrap());
    for p in [1, 2] {
        no_p0
            .restore_partition(p, &eng.snapshot_partition(p).unwrap())
            .unwrap();
    }
    let f = no_p0.families();
    assert_eq!(v(&f, "cxpulse_users", &[]), signups(&f));
}

#[test]
fn drop_partition_removes_its_series() {
    let mut eng = busy_engine();
    let c1 = {
        let mut only =
            engine("[engine]\nwindows = [\"1h\", \"24h\", \"7d\"]\n[churn]\ninactivity = \"3d\"\n");
        only.restore_partition(1, &eng.snapshot_partition(1).unwrap())
            .unwrap();
        only.event_counts()
    };
    let before = eng.event_counts();
    assert!(eng.drop_partition(1));
    assert!(!eng.drop_partition(1));
    assert_eq!(eng.partitions(), vec![0, 2]);
    let after = eng.event_counts();
    assert!(c1.total(Outcome::Applied) > 1000);
    assert_eq!(
        after.total(Outcome::Applied),
        before.total(Outcome::Applied) - c1.total(Outcome::Applied)
    );
    let f = eng.families();
    let applied: f64 = f
        .iter()
        .filter(|f| f.name == "cxpulse_events_total")
        .flat_map(|f| f.samples.iter())
        .filter(|s| {
            s.labels
                .iter()
                .any(|(k, v)| k == "outcome" && v == "applied")
        })
        .map(|s| s.value)
        .sum();
    assert_eq!(applied, after.total(Outcome::Applied) as f64);
    // Every series is that of an engine that only ever held 0 and 2.
    let mut kept =
        engine("[engine]\nwindows = [\"1h\", \"24h\", \"7d\"]\n[churn]\ninactivity = \"3d\"\n");
    for p in [0, 2] {
        kept.restore_partition(p, &eng.snapshot_partition(p).unwrap())
            .unwrap();
    }
    kept.advance_to(eng.clock().unwrap());
    // Its timers no longer fire: finishing fires only those of 0 and 2.
    eng.finish();
    kept.finish();
    assert_same(&text(&eng.families()), &text(&kept.families()));
    assert_eq!(eng.partitions(), vec![0, 2]);
}

/// Signups of `channel` by `user` in `partition` at `ts`.
fn signup_at(eng: &mut Engine, partition: u32, ts: Millis, user: &str, channel: &str) {
    let ev = Event {
        event_id: Cow::Owned(format!("{user}-{channel}")),
        ts,
        user_id: Some(Cow::Owned(user.to_string())),
        body: signup(Some(channel), None),
    };
    assert_eq!(eng.offer(partition, &ev, None), Outcome::Applied);
}

/// p0 sees a (T+0), b (T+3m); p1 sees c (T+1m), d (T+2m), e (T+4m);
/// with max_channels = 2 the labels are a and c, then `other` (b, d, e).
fn channel_events(engines: &mut [&mut Engine], split: bool) {
    let plan: [(u32, Millis, &str, &str); 5] = [
        (0, 0, "u1", "a"),
        (1, MIN, "u2", "c"),
        (1, 2 * MIN, "u3", "d"),
        (0, 3 * MIN, "u4", "b"),
        (1, 4 * MIN, "u5", "e"),
    ];
    for (p, dt, u, c) in plan {
        let i = if split { p as usize } else { 0 };
        signup_at(engines[i], p, BASE + dt, u, c);
    }
}

#[test]
fn channel_labels_agree_across_a_split_beyond_max_channels() {
    let toml = "[engine]\nmax_channels = 2\nwindows = [\"1h\"]\nallowed_lateness = \"0s\"\n";
    let prm = cfg(toml).params().unwrap();
    let mut one = engine(toml);
    channel_events(&mut [&mut one], false);
    let (mut x, mut y) = (engine(toml), engine(toml));
    channel_events(&mut [&mut x, &mut y], true);
    let t = BASE + 4 * MIN;
    for e in [&mut one, &mut x, &mut y] {
        e.advance_to(t);
        e.finish();
    }
    let mut parts = x.partials();
    parts.extend(y.partials());
    let refs: Vec<(u32, &[u8])> = parts.iter().map(|(p, b)| (*p, b.as_slice())).collect();
    let split = fold_partials(&prm, t, &refs).unwrap();
    let want = one.families();
    assert_same(&text(&split), &text(&want));
    let total = |f: &[Family], c: &str| value(f, "cxpulse_signups_total", &[("channel", c)]);
    assert_eq!(total(&want, "a"), Some(1.0));
    assert_eq!(total(&want, "c"), Some(1.0));
    assert_eq!(total(&want, "other"), Some(3.0));
    assert_eq!(total(&want, "b"), None);
    assert_eq!(total(&want, "d"), None);
    // The same events in one partition (one stream in time order): the
    // registry keeps a and c, folds d, b, e into other: the same series.
    let mut stream = engine(toml);
    for (dt, u, c) in [
        (0, "u1", "a"),
        (MIN, "u2", "c"),
        (2 * MIN, "u3", "d"),
        (3 * MIN, "u4", "b"),
        (4 * MIN, "u5", "e"),
    ] {
        signup_at(&mut stream, 0, BASE + dt, u, c);
    }
    stream.advance_to(t);
    stream.finish();
    assert_same(&text(&stream.families()), &text(&want));
}

#[test]
fn listed_channels_come_first() {
    let toml = "[engine]\nmax_channels = 2\nchannels = [\"e\"]\nwindows = [\"1h\"]\nallowed_lateness = \"0s\"\n";
    let mut one = engine(toml);
    channel_events(&mut [&mut one], false);
    one.finish();
    let f = one.families();
    let total = |c: &str| value(&f, "cxpulse_signups_total", &[("channel", c)]);
    // e is listed; then the earliest seen, a; the rest (c, d, b) is other.
    assert_eq!(
        (total("e"), total("a"), total("other")),
        (Some(1.0), Some(1.0), Some(3.0))
    );
    assert_eq!(total("c"), None);
    let labels: Vec<&str> = f
        .iter()
        .find(|f| f.name == "cxpulse_signups_total")
        .unwrap()
        .samples
        .iter()
        .flat_map(|s| s.labels.iter().map(|(_, v)| v.as_str()))
        .collect();
    assert_eq!(labels, ["e", "a", "other"]);
}

#[test]
fn corrupt_partials_and_partition_snapshots_are_refused_never_a_panic() {
    let prm = cfg(CFG).params().unwrap();
    let mut eng = Engine::new(cfg(CFG).params().unwrap());
    feed(&mut [(&mut eng, &[0, 1, 2])], &lines(3_000));
    let t = eng.clock().unwrap();
    let parts = eng.partials();
    let good = &parts[1].1;
    for cut in [0, 3, 5, 13, good.len() / 2, good.len() - 1] {
        let err = fold_partials(&prm, t, &[(1, &good[..cut])]).unwrap_err();
        assert!(
            matches!(err, SnapshotError::InPartition { partition: 1, .. }),
            "{err}"
        );
    }
    let mut longer = good.clone();
    longer.push(0);
    assert!(fold_partials(&prm, t, &[(1, &longer)]).is_err());
    let mut bad_magic = good.clone();
    bad_magic[0] ^= 0xff;
    assert_eq!(
        fold_partials(&prm, t, &[(1, &bad_magic)])
            .unwrap_err()
            .to_string(),
        "in the state of engine partition 1: snapshot holds an invalid partial's magic"
    );
    assert!(fold_partials(&prm, t, &[(1, good), (1, good)]).is_err());
    // Every single-byte flip: refused or accepted, never a panic.
    for i in 0..good.len() {
        let mut b = good.clone();
        b[i] ^= 0x5a;
        let _ = fold_partials(&prm, t, &[(1, &b)]);
    }
    let other = cfg("[engine]\nbucket = \"5m\"\nwindows = [\"1h\", \"24h\", \"7d\"]\n")
        .params()
        .unwrap();
    assert!(fold_partials(&other, t, &[(1, good)]).is_err());

    let snap = eng.snapshot_partition(2).unwrap();
    let before = text(&eng.families());
    for cut in [0, 4, 5, 13, snap.len() / 3, snap.len() - 1] {
        let err = eng.restore_partition(2, &snap[..cut]).unwrap_err();
        assert!(
            matches!(err, SnapshotError::InPartition { partition: 2, .. }),
            "{err}"
        );
    }
    for i in (0..snap.len()).step_by(snap.len() / 500 + 1) {
        let mut b = snap.clone();
        b[i] ^= 0x5a;
        let mut e = Engine::new(cfg(CFG).params().unwrap());
        if e.restore_partition(2, &b).is_ok() {
            let _ = e.families();
        }
    }
    // On Err nothing changed.
    assert_eq!(text(&eng.families()), before);
    let mut other_engine = Engine::new(other);
    assert!(matches!(
        other_engine.restore_partition(2, &snap),
        Err(SnapshotError::InPartition { partition: 2, error }) if matches!(*error, SnapshotError::BucketChanged { .. })
    ));
    assert!(other_engine.partitions().is_empty());
}
