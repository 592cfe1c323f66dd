//! Customers: the funnel from signup to first deposit and trade, activity
//! in sessions, what an activity leads to, dormancy and comebacks.

use super::{Generator, Job, LineKey};
use crate::r#gen::model::{self, DAY, HOUR, MIN, SEC};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Step {
    FirstDeposit,
    FirstTrade,
    Active,
}

/// A user with a future (a pending funnel step or activity). Users who will
/// never act again hold no slot.
#[derive(Clone, Copy, Debug)]
pub(super) struct User {
    pub(super) id: u64,
    /// The inviter, rewarded at this user's first deposit; 0 for none.
    pub(super) referrer: u64,
    /// Time of a rating with csat <= 2 not yet acted upon; 0 for none.
    pub(super) bad_at: i64,
    /// Activities per day before the traffic-level multiplier.
    pub(super) rate: f32,
    /// Multiplier on this user's amounts (whales and minnows).
    pub(super) size: f32,
    pub(super) step: Step,
    pub(super) trader: bool,
    /// Dormant: not counted in `active_rate` until the comeback.
    pub(super) dormant: bool,
    /// Actions left in the current session.
    pub(super) session_left: u8,
    /// When the current (or last) session started.
    pub(super) session_began: i64,
}

pub(super) const NO_SLOT: u32 = u32::MAX;
/// Live users are capped so that any traffic level runs in bounded memory;
/// past it, traffic comes from more activity per user instead of more users.
pub(super) const MAX_USERS: usize = 1 << 20;

impl Generator {
    pub(super) fn user_step(&mut self, slot: u32) -> Option<LineKey> {
        let user = self.users[slot as usize];
        if user.dormant {
            self.users[slot as usize].dormant = false;
            self.active_rate += micros(user.rate);
        }
        if user.step == Step::Active && user.bad_at != 0 {
            self.users[slot as usize].bad_at = 0;
            if self.rng.chance(model::BAD_EXPERIENCE_DORMANCY) {
                self.go_dormant(slot, user.bad_at);
                return None;
            }
        }
        let key = LineKey::User(user.id);
        let trade = match user.step {
            Step::FirstDeposit => false,
            Step::FirstTrade => true,
            Step::Active => user.trader && self.rng.chance(0.88),
        };
        if trade {
            self.trade(user);
        } else {
            self.deposit(user);
        }
        let next = match user.step {
            Step::FirstDeposit if user.referrer != 0 => {
                let cents = [1000, 2000, 2500, 5000][self.rng.weighted(&[0.2, 0.4, 0.3, 0.1])];
                let at = self.now + self.log_delay(MIN, 2 * HOUR);
                self.schedule(
                    at,
                    Job::Rewarded {
                        user: user.referrer,
                        cents,
                    },
                );
                user.trader.then_some(Step::FirstTrade)
            }
            Step::FirstDeposit => user.trader.then_some(Step::FirstTrade),
            _ => None,
        };
        self.side_effects(user.id, slot);
        match next {
            Some(step) => {
                self.users[slot as usize].step = step;
                let at = self.now + self.log_delay(MIN, 3 * DAY);
                self.schedule(at, Job::User { slot });
            }
            None => {
                if user.step != Step::Active {
                    // A new customer: this action opens their first session.
                    self.active_rate += micros(user.rate);
                    self.users[slot as usize].session_began = self.now;
                }
                self.users[slot as usize].step = Step::Active;
                self.schedule_activity(slot);
            }
        }
        Some(key)
    }

    pub(super) fn trade(&mut self, user: User) {
        let notional = self
            .rng
            .log_normal(300.0 * f64::from(user.size), 1.2)
            .clamp(5.0, 2_000_000.0);
        let fee_rate = [0.001, 0.0008, 0.0006][self.rng.weighted(&[0.6, 0.25, 0.15])];
        self.begin("trade");
        self.line.id_field("user_id", 'u', user.id);
        self.line
            .cents_field("notional_usd", (notional * 100.0).round() as u64);
        self.line.raw(",\"fee_usd\":");
        self.line
            .fixed((notional * fee_rate * 10_000.0).round() as u64, 4);
        self.end();
    }

    pub(super) fn deposit(&mut self, user: User) {
        let amount = self
            .rng
            .log_normal(250.0 * f64::from(user.size), 1.0)
            .clamp(10.0, 5_000_000.0);
        self.begin("deposit");
        self.line.id_field("user_id", 'u', user.id);
        self.line
            .cents_field("amount_usd", (amount * 100.0).round() as u64);
        self.end();
    }

    /// What an activity may lead to: a support ticket, an invitation, a survey answer.
    pub(super) fn side_effects(&mut self, user: u64, slot: u32) {
        if self.rng.chance(model::TICKET_PER_ACTIVITY) {
            let at = self.now + self.log_delay(MIN, 6 * HOUR);
            self.open_ticket(at, user, slot);
        }
        if self.rng.chance(model::INVITE_PER_ACTIVITY) {
            let converts = self.rng.chance(model::INVITE_CONVERSION);
            let at = self.now + self.log_delay(MIN, HOUR);
            self.schedule(at, Job::Invite { user, converts });
        }
        if self.rng.chance(model::SURVEY_PER_ACTIVITY) {
            let at = self.now + self.log_delay(HOUR, 2 * DAY);
            self.schedule(at, Job::Survey { user });
        }
    }

    /// Schedules the user's next activity, or dormancy (see `DORMANCY_HAZARD_PER_DAY`).
    /// Activity comes in sessions of a few actions minutes apart
    /// (`MEAN_SESSION_ACTIONS`), which is what makes day-over-day retention
    /// lower than a smooth rate would; dormancy starts between sessions.
    pub(super) fn schedule_activity(&mut self, slot: u32) {
        let user = &mut self.users[slot as usize];
        let sessions = f64::from(user.rate) * self.intensity / model::MEAN_SESSION_ACTIONS;
        if user.session_left > 0 {
            user.session_left -= 1;
            let at = self.now + self.in_session_gap(sessions);
            self.schedule(at, Job::User { slot });
            return;
        }
        let began = user.session_began;
        if self
            .rng
            .chance((model::DORMANCY_HAZARD_PER_DAY / sessions).min(0.5))
        {
            self.go_dormant(slot, self.now);
        } else {
            // Session starts, not ends, are the Poisson process: the rate
            // stays what the intensity says however long sessions last.
            let at = self.modulated(began, sessions).max(self.now + SEC);
            let extra = self.session_extra_actions();
            let user = &mut self.users[slot as usize];
            user.session_left = extra;
            user.session_began = at;
            self.schedule(at, Job::User { slot });
        }
    }

    /// Time between two actions of a session; shorter for customers whose
    /// sessions come so often (at high intensity) that they would overlap.
    pub(super) fn in_session_gap(&mut self, sessions_per_day: f64) -> i64 {
        let between_sessions = DAY as f64 / sessions_per_day;
        let scale = (between_sessions / (4.0 * model::SESSION_GAP_MS.1 as f64)).min(1.0);
        let (lo, hi) = model::SESSION_GAP_MS;
        self.rng
            .log_uniform(lo as f64 * scale, hi as f64 * scale)
            .max(1.0) as i64
    }

    /// Actions after a session's first: geometric, mean `MEAN_SESSION_ACTIONS - 1`.
    pub(super) fn session_extra_actions(&mut self) -> u8 {
        let p_more = 1.0 - 1.0 / model::MEAN_SESSION_ACTIONS;
        let mut n = 0;
        while n < 30 && self.rng.chance(p_more) {
            n += 1;
        }
        n
    }

    /// No activity for over 30 days from `since`: back 31..120 days later, or never.
    pub(super) fn go_dormant(&mut self, slot: u32, since: i64) {
        self.active_rate -= micros(self.users[slot as usize].rate);
        self.users[slot as usize].dormant = true;
        if self.rng.chance(model::REACTIVATION_SHARE) {
            let at = (since + self.log_delay(31 * DAY, 120 * DAY)).max(self.now + MIN);
            let user = &mut self.users[slot as usize];
            user.session_began = at;
            user.session_left = 0;
            self.schedule(at, Job::User { slot });
        } else {
            self.free_users.push(slot);
        }
    }

    /// A user with drawn traits; the caller sets `id` and `referrer`.
    pub(super) fn new_user(&mut self, trader: bool, step: Step) -> User {
        let rate = if trader {
            self.rng.log_uniform(0.05, 8.0)
        } else {
            self.rng.log_uniform(0.03, 0.5)
        };
        User {
            id: 0,
            referrer: 0,
            bad_at: 0,
            rate: rate as f32,
            size: self.rng.log_normal(1.0, 0.9) as f32,
            step,
            trader,
            dormant: false,
            session_left: 0,
            session_began: 0,
        }
    }

    pub(super) fn alloc_user(&mut self, user: User) -> Option<u32> {
        if let Some(slot) = self.free_users.pop() {
            self.users[slot as usize] = user;
            Some(slot)
        } else if self.users.len() < MAX_USERS {
            self.users.push(user);
            Some((self.users.len() - 1) as u32)
        } else {
            None
        }
    }
}

pub(super) fn micros(rate: f32) -> i64 {
    (f64::from(rate) * 1e6) as i64
}
