//! What a decoded snapshot must satisfy before an engine runs on it.
//!
//! Snapshots come from files, which a checksum protects from damage but not
//! from being crafted. [`super::snapshot`] refuses bytes it cannot read and
//! indices past their table as it reads; this checks the rest of what the
//! apply, fire and export code later relies on without checking again:
//! every channel id within the registry, every stored time within
//! [`TIME_LIMIT`] (so adding a duration cannot overflow), every count within
//! [`COUNT_LIMIT`] (so counting on or adding partitions up cannot overflow),
//! amounts finite and >= 0, ratings within their scales, forgotten ticket
//! slots blank. A file that fails is refused like a bad checksum.

use super::partition::Partition;
use super::pending::PendingBody;
use crate::event::Ratings;
use crate::state::codec::{
    COUNT_LIMIT, SnapshotError, check_count, check_finite, check_index, check_time,
    check_time_or_never,
};
use crate::state::users::NEVER;

/// Checks one decoded partition, under a registry of `channels` ids.
pub(super) fn partition(p: &Partition, channels: usize) -> Result<(), SnapshotError> {
    let users = &p.users;
    for u in &users.list {
        check_index("user's channel", u.channel() as u64, channels)?;
        check_time_or_never("user signup time", u.signup())?;
        check_time_or_never("user last activity time", u.last_activity())?;
    }
    for c in &users.cold {
        check_index("compacted user's channel", c.channel as u64, channels)?;
    }
    if let Some(last) = users.forgotten_signups.len().checked_sub(1) {
        check_index("forgotten signups' channel", last as u64, channels)?;
    }
    check_count("forgotten users count", users.forgotten)?;
    for &n in &users.forgotten_signups {
        check_count("forgotten signups count", n)?;
    }
    for t in &p.tickets.list {
        check_index("ticket's user", t.user as u64, users.list.len())?;
        for (what, v) in [
            ("ticket opening time", t.opened),
            ("ticket first reply time", t.first_reply),
            ("ticket pending-since time", t.pending_since),
            ("ticket last-seen time", t.last_seen),
        ] {
            check_time_or_never(what, v)?;
        }
        check_time("ticket paused time", t.paused)?;
        if t.is_free() && (t.opened != NEVER || t.open) {
            return Err(SnapshotError::Invalid("forgotten ticket slot"));
        }
    }
    check_count("forgotten tickets count", p.tickets.forgotten)?;
    for &(ts, _) in &p.dedup.order {
        check_time("deduplication event time", ts)?;
    }
    for q in p.pending.iter() {
        check_time("pending event time", q.ts)?;
        match &q.body {
            PendingBody::Signup { channel, .. } => {
                check_index("pending signup's channel", *channel as u64, channels)?;
            }
            PendingBody::Trade { fee, .. } => amount("pending trade fee", *fee)?,
            PendingBody::Reward {
                usd,
                referral_channel,
            } => {
                amount("pending referral reward", *usd)?;
                check_index(
                    "pending reward's channel",
                    *referral_channel as u64,
                    channels,
                )?;
            }
            PendingBody::Spend { channel, usd } => {
                amount("pending spend", *usd)?;
                check_index("pending spend's channel", *channel as u64, channels)?;
            }
            PendingBody::Rated { ratings, .. } => self::ratings(ratings)?,
            PendingBody::Deposit { .. } | PendingBody::Invite | PendingBody::Support { .. } => {}
        }
    }
    for t in p.timers.iter() {
        check_time("timer instant", t.0.instant)?;
    }
    let chan_rings = p.families.acquisition.chan.len();
    if let Some(last) = chan_rings.checked_sub(1) {
        check_index("acquisition channel", last as u64, channels)?;
    }
    check_time("applied-through time", p.applied_through)?;
    check_time("last trim bucket", p.last_trim)?;
    check_time("last sweep day", p.last_sweep_day)?;
    if let Some(c) = p.clock {
        check_time("partition clock", c)?;
    }
    Ok(())
}

/// A money amount of an accepted event: finite and >= 0 (as decoded).
fn amount(what: &'static str, v: f64) -> Result<(), SnapshotError> {
    if check_finite(what, v)? < 0.0 {
        return Err(SnapshotError::OutOfRange {
            what,
            value: v.to_string(),
        });
    }
    Ok(())
}

/// Ratings within their scales (csat 1..=5, ces 1..=7, nps 0..=10).
fn ratings(r: &Ratings) -> Result<(), SnapshotError> {
    for (what, v, lo, hi) in [
        ("pending csat rating", r.csat, 1, 5),
        ("pending ces rating", r.ces, 1, 7),
        ("pending nps rating", r.nps, 0, 10),
    ] {
        if let Some(v) = v
            && !(lo..=hi).contains(&v)
        {
            return Err(SnapshotError::OutOfRange {
                what,
                value: v.to_string(),
            });
        }
    }
    Ok(())
}

/// Sums over every partition that export and the engine's own series add up
/// in integers: each within its limit, so the additions cannot overflow.
pub(super) fn totals<'p>(parts: impl Iterator<Item = &'p Partition>) -> Result<(), SnapshotError> {
    let (mut users, mut tickets, mut took) = (0u128, 0u128, 0u128);
    let mut hist = [0u128; 8];
    for p in parts {
        users += p.users.forgotten as u128;
        tickets += p.tickets.forgotten as u128;
        let s = &p.families.support;
        for (acc, h) in hist.iter_mut().zip(s.fr_hist.iter().chain(&s.res_hist)) {
            *acc += h.count as u128;
        }
        for log in s.fr_times.iter().chain(&s.res_times) {
            took += log
                .iter()
                .map(|&(_, d)| d.unsigned_abs() as u128)
                .sum::<u128>();
        }
    }
    let over = |what, v: u128, limit: u128| {
        if v > limit {
            Err(SnapshotError::OutOfRange {
                what,
                value: v.to_string(),
            })
        } else {
            Ok(())
        }
    };
    over(
        "forgotten users over all partitions",
        users,
        COUNT_LIMIT as u128,
    )?;
    over(
        "forgotten tickets over all partitions",
        tickets,
        COUNT_LIMIT as u128,
    )?;
    for h in hist {
        over(
            "histogram count over all partitions",
            h,
            COUNT_LIMIT as u128,
        )?;
    }
    // The support times of a window are summed in an i64 (ms).
    over("support times over all partitions", took, i64::MAX as u128)?;
    Ok(())
}
