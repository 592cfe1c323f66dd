//! The generator's world: acquisition channels, the per-line shares the
//! simulation is tuned to, support ticket plans and survey answers.
//!
//! Everything here is a pure function of the random stream it is handed, so
//! it can be reasoned about (and tuned) apart from the scheduling loop.

use super::rng::Rng;
use crate::event::{Priority, SupportAction};

pub(crate) const SEC: i64 = 1000;
pub(crate) const MIN: i64 = 60 * SEC;
pub(crate) const HOUR: i64 = 60 * MIN;
pub(crate) const DAY: i64 = 24 * HOUR;

/// Non-referral signups per day as a share of the day's lines.
pub(crate) const SIGNUPS_PER_LINE: f64 = 0.014;
/// Existing customers (no signup event, channel `unknown`) at the start, per daily line.
pub(crate) const BASELINE_USERS_PER_DAILY_LINE: f64 = 0.6;
/// Lines per customer activity, counting what it leads to (tickets,
/// invitations, surveys) and the noise copies.
pub(crate) const LINES_PER_ACTIVITY: f64 = 1.075;
/// Lines per signup before the user turns customer: the signup, first
/// deposit and trade, a pre-deposit ticket.
pub(crate) const LINES_PER_SIGNUP: f64 = 1.75;
/// Customer actions per session (a session's actions are minutes apart).
pub(crate) const MEAN_SESSION_ACTIONS: f64 = 3.0;
/// Log-uniform range of the time between two actions of a session.
pub(crate) const SESSION_GAP_MS: (i64, i64) = (20 * SEC, 20 * MIN);
/// Event time simulated (without output) before the start, so that the
/// stream starts in the steady state (sessions in progress included).
pub(crate) const WARM_UP_MS: i64 = 20 * MIN;
/// Growth of the signup rate per day.
pub(crate) const SIGNUP_GROWTH_PER_DAY: f64 = 0.005;

/// Probability that a customer's activity day-rate process ends in dormancy,
/// per day: about 20 % of customers go quiet for over 30 days each month.
pub(crate) const DORMANCY_HAZARD_PER_DAY: f64 = 0.0075;
/// Share of dormant customers who come back (reactivation), 31..120 days later.
pub(crate) const REACTIVATION_SHARE: f64 = 0.35;
/// After a rating with csat <= 2, the chance the customer goes dormant
/// (the seeds' "59 % leave after a bad support contact").
pub(crate) const BAD_EXPERIENCE_DORMANCY: f64 = 0.55;

/// Per customer activity: the chance it is followed by a support ticket,
/// an invitation, an NPS survey answer.
pub(crate) const TICKET_PER_ACTIVITY: f64 = 0.012;
pub(crate) const INVITE_PER_ACTIVITY: f64 = 0.008;
pub(crate) const SURVEY_PER_ACTIVITY: f64 = 0.002;
/// Share of invitations that bring a referral signup.
pub(crate) const INVITE_CONVERSION: f64 = 0.25;
/// Share of signups that never deposit but open a ticket (KYC trouble).
pub(crate) const PRE_DEPOSIT_TICKET: f64 = 0.04;

/// Noise, as shares of all lines.
pub(crate) const OUT_OF_ORDER_SHARE: f64 = 0.01;
pub(crate) const DUPLICATE_SHARE: f64 = 0.005;
pub(crate) const INVALID_SHARE: f64 = 0.002;
/// Noise lines trail the newest line by less than this (lateness is 30 s).
pub(crate) const MAX_HOLD_MS: i64 = 25 * SEC;

/// Index of the channel-less pseudo channel (signups without `channel`).
pub(crate) const CH_NONE: u8 = 5;
pub(crate) const CH_REFERRAL: u8 = 4;

/// One acquisition channel and how its users behave.
#[derive(Clone, Debug)]
pub(crate) struct Channel {
    /// The `channel` value; empty for signups that carry none.
    pub(crate) name: String,
    /// Relative share of non-referral signups.
    pub(crate) weight: f64,
    /// Share of signups that ever deposit.
    pub(crate) deposit_conversion: f64,
    /// Share of depositors that trade.
    pub(crate) trader_share: f64,
    /// Target cost per acquisition in USD, 0 for unpaid channels (no `spend`).
    pub(crate) cpa_usd: f64,
    /// Campaign names with their share of the channel's spend and signups.
    pub(crate) campaigns: Vec<(String, f64)>,
}

fn channel(
    name: &str,
    weight: f64,
    conv: f64,
    trader: f64,
    cpa: f64,
    campaigns: &[(&str, f64)],
) -> Channel {
    Channel {
        name: name.to_string(),
        weight,
        deposit_conversion: conv,
        trader_share: trader,
        cpa_usd: cpa,
        campaigns: campaigns.iter().map(|(n, w)| (n.to_string(), *w)).collect(),
    }
}

/// The channel table: indices 0..=5 are fixed (see `CH_*`), long-tail
/// channels follow. Each long-tail channel takes 0.5 % of signups (at most
/// 15 % together) from `organic`.
pub(crate) fn channels(extra: u32) -> Vec<Channel> {
    let extra_each = if extra == 0 {
        0.0
    } else {
        (0.005f64).min(0.15 / f64::from(extra))
    };
    let organic = 0.35 - extra_each * f64::from(extra);
    let mut v = vec![
        channel("organic", organic, 0.40, 0.72, 0.0, &[]),
        channel(
            "paid_search",
            0.25,
            0.30,
            0.70,
            120.0,
            &[("brand_search", 0.55), ("generic_crypto", 0.45)],
        ),
        channel(
            "social",
            0.20,
            0.18,
            0.60,
            200.0,
            &[("x_promo", 0.6), ("creator_q1", 0.4)],
        ),
        channel(
            "affiliate",
            0.12,
            0.35,
            0.78,
            80.0,
            &[("affiliate_network", 1.0)],
        ),
        // Referral signups come from invitations, never from the arrival process.
        channel("referral", 0.0, 0.50, 0.70, 0.0, &[]),
        channel("", 0.08, 0.25, 0.60, 0.0, &[]),
    ];
    for i in 0..extra {
        let name = format!("partner_{:02}", i + 1);
        let campaign = format!("{name}_launch");
        v.push(Channel {
            name,
            weight: extra_each,
            deposit_conversion: 0.22,
            trader_share: 0.6,
            cpa_usd: 150.0,
            campaigns: vec![(campaign, 1.0)],
        });
    }
    v
}

pub(crate) const COUNTRIES: [&str; 12] = [
    "US", "GB", "DE", "FR", "BR", "IN", "NG", "TR", "JP", "KR", "AU", "CA",
];
pub(crate) const COUNTRY_WEIGHTS: [f64; 12] =
    [20.0, 8.0, 9.0, 6.0, 9.0, 12.0, 6.0, 7.0, 6.0, 6.0, 5.0, 6.0];

/// Diurnal (peak 14:00 UTC) and weekly (quieter weekends) activity, max `ACTIVITY_PEAK`.
pub(crate) const ACTIVITY_PEAK: f64 = 1.35;
/// The diurnal factor per minute of the day: `1 + 0.35 cos` peaking at 14:00.
static DIURNAL: std::sync::LazyLock<[f64; 1440]> = std::sync::LazyLock::new(|| {
    std::array::from_fn(|m| {
        1.0 + 0.35 * ((m as f64 / 60.0 - 14.0) / 24.0 * std::f64::consts::TAU).cos()
    })
});

/// The mean of `activity_weight` over a week (5 weekdays at 1, 2 weekend days at 0.85).
pub(crate) const MEAN_ACTIVITY_WEIGHT: f64 = (5.0 + 2.0 * 0.85) / 7.0;
pub(crate) fn activity_weight(t_ms: i64) -> f64 {
    let day = t_ms.div_euclid(DAY);
    let diurnal = DIURNAL[(t_ms.rem_euclid(DAY) / MIN) as usize];
    // 1970-01-01 was a Thursday: day % 7 == 2 is Saturday, 3 Sunday.
    let weekly = if matches!(day.rem_euclid(7), 2 | 3) {
        0.85
    } else {
        1.0
    };
    diurnal * weekly
}

/// How often a ticket gets each priority, in [`Priority::ALL`] order.
const PRIORITY_WEIGHTS: [f64; 4] = [0.25, 0.55, 0.15, 0.05];

/// Default SLA targets (METRICS.md): first response, resolution.
fn targets_ms(p: Priority) -> (i64, i64) {
    match p {
        Priority::Urgent => (15 * MIN, 4 * HOUR),
        Priority::High => (HOUR, 8 * HOUR),
        Priority::Normal => (4 * HOUR, 24 * HOUR),
        Priority::Low => (8 * HOUR, 48 * HOUR),
    }
}

/// Chance of breaching the first-response and the resolution target.
fn breach_chance(p: Priority) -> (f64, f64) {
    match p {
        Priority::Urgent => (0.12, 0.10),
        Priority::High => (0.10, 0.09),
        Priority::Normal => (0.08, 0.08),
        Priority::Low => (0.06, 0.06),
    }
}

pub(crate) const MAX_TICKET_STEPS: usize = 12;

/// A ticket's whole life, planned when it opens so that its SLA outcome is a
/// deliberate draw (mostly met, sometimes breached) rather than an accident.
#[derive(Clone, Debug)]
pub(crate) struct TicketPlan {
    pub(crate) priority: Priority,
    pub(crate) steps: [(i64, SupportAction); MAX_TICKET_STEPS],
    pub(crate) len: u8,
    /// A target was breached or the ticket was reopened: its rating is worse.
    pub(crate) bad_service: bool,
}

impl TicketPlan {
    fn push(&mut self, at: i64, action: SupportAction) -> i64 {
        // Actions of one ticket are at least a second apart and in order.
        let prev = if self.len == 0 {
            i64::MIN
        } else {
            self.steps[self.len as usize - 1].0 + SEC
        };
        let at = at.max(prev);
        self.steps[self.len as usize] = (at, action);
        self.len += 1;
        at
    }
}

pub(crate) fn plan_ticket(rng: &mut Rng, opened: i64) -> TicketPlan {
    let priority = Priority::ALL[rng.weighted(&PRIORITY_WEIGHTS)];
    let (fr_target, res_target) = targets_ms(priority);
    let (fr_breach, res_breach) = breach_chance(priority);
    let mut plan = TicketPlan {
        priority,
        steps: [(0, SupportAction::Opened); MAX_TICKET_STEPS],
        len: 0,
        bad_service: false,
    };
    plan.push(opened, SupportAction::Opened);
    let scale = |target: i64, f: f64| (target as f64 * f) as i64;
    let mut resolved;
    if rng.chance(0.05) {
        // Solved from the help centre before any agent answered.
        resolved = plan.push(
            opened + scale(fr_target, rng.uniform(0.1, 0.9)),
            SupportAction::Resolved,
        );
    } else {
        let first_reply = if rng.chance(fr_breach) {
            plan.bad_service = true;
            scale(fr_target, 1.0 + rng.exp(0.7).min(5.0))
        } else {
            scale(fr_target, rng.log_uniform(0.02, 0.98))
        };
        let mut t = plan.push(opened + first_reply, SupportAction::AgentReplied);
        // Running (unpaused) time from open to resolution.
        let running = if rng.chance(res_breach) {
            plan.bad_service = true;
            scale(res_target, 1.0 + rng.exp(0.6).min(4.0))
        } else {
            scale(res_target, rng.uniform(0.1, 0.97))
        }
        .max(t - opened + 5 * MIN);
        let left = running - (t - opened);
        let mut paused = 0;
        if rng.chance(0.3) {
            let before = (left as f64 * rng.uniform(0.1, 0.6)) as i64;
            let pending_at = plan.push(t + before, SupportAction::Pending);
            paused = rng.log_uniform(10.0 * MIN as f64, DAY as f64) as i64;
            let back = plan.push(pending_at + paused, SupportAction::CustomerReplied);
            let after = ((left - before) as f64 * rng.uniform(0.1, 0.5)) as i64;
            t = plan.push(back + after, SupportAction::AgentReplied);
        } else if rng.chance(0.3) {
            let q = plan.push(
                t + (left as f64 * rng.uniform(0.1, 0.4)) as i64,
                SupportAction::CustomerReplied,
            );
            t = plan.push(
                q + (left as f64 * rng.uniform(0.05, 0.3)) as i64,
                SupportAction::AgentReplied,
            );
        }
        resolved = plan.push(
            (opened + running + paused).max(t + MIN),
            SupportAction::Resolved,
        );
    }
    if rng.chance(0.07) {
        plan.bad_service = true;
        let again = plan.push(
            resolved + rng.log_uniform(HOUR as f64, 3.0 * DAY as f64) as i64,
            SupportAction::Reopened,
        );
        let reply = plan.push(
            again + rng.log_uniform(5.0 * MIN as f64, 4.0 * HOUR as f64) as i64,
            SupportAction::AgentReplied,
        );
        resolved = plan.push(
            reply + rng.log_uniform(30.0 * MIN as f64, DAY as f64) as i64,
            SupportAction::Resolved,
        );
    }
    if rng.chance(0.65) {
        plan.push(
            resolved + rng.log_uniform(5.0 * MIN as f64, DAY as f64) as i64,
            SupportAction::Rated,
        );
    }
    plan
}

/// A survey answer; any part may be missing, never all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Rating {
    pub(crate) csat: Option<u8>,
    pub(crate) ces: Option<u8>,
    pub(crate) nps: Option<u8>,
}

/// The answers to a ticket's satisfaction survey: mostly good, clearly
/// worse after a breach or a reopen; CES and NPS follow CSAT.
pub(crate) fn rate_ticket(rng: &mut Rng, bad_service: bool) -> Rating {
    const GOOD: [f64; 5] = [0.05, 0.06, 0.10, 0.29, 0.50];
    const BAD: [f64; 5] = [0.17, 0.20, 0.20, 0.23, 0.20];
    let csat = 1 + rng.weighted(if bad_service { &BAD } else { &GOOD }) as i64;
    let ces = (1 + (csat - 1) * 3 / 2 + rng.int_in(-1, 1)).clamp(1, 7);
    let nps = match csat {
        5 => rng.int_in(8, 10),
        4 => rng.int_in(6, 9),
        3 => rng.int_in(4, 8),
        2 => rng.int_in(1, 6),
        _ => rng.int_in(0, 4),
    };
    let mut r = Rating {
        csat: rng.chance(0.9).then_some(csat as u8),
        ces: rng.chance(0.6).then_some(ces as u8),
        nps: rng.chance(0.45).then_some(nps as u8),
    };
    if r.csat.is_none() && r.ces.is_none() && r.nps.is_none() {
        r.csat = Some(csat as u8);
    }
    r
}

/// A relationship NPS survey answer (not tied to a ticket): NPS about +20.
pub(crate) fn survey_nps(rng: &mut Rng) -> u8 {
    const W: [f64; 11] = [
        0.02, 0.01, 0.02, 0.03, 0.03, 0.06, 0.08, 0.12, 0.18, 0.20, 0.25,
    ];
    rng.weighted(&W) as u8
}
