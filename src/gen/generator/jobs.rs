//! Running a scheduled job: what each one writes (signups, spend,
//! referrals, surveys) and the line envelope they share.

use super::customers::{NO_SLOT, Step, User};
use super::{Generator, Job, LineKey};
use crate::r#gen::model::{self, CH_NONE, CH_REFERRAL, DAY, HOUR, MIN};

impl Generator {
    /// Runs a job; when it produces a line, the line is in `self.line` and its key is returned.
    pub(super) fn run(&mut self, job: Job) -> Option<LineKey> {
        match job {
            Job::Arrival => {
                let next = self.next_arrival(self.now);
                self.schedule(next, Job::Arrival);
                let channel = self.rng.weighted(&self.signup_weights) as u8;
                Some(self.signup(channel, 0))
            }
            Job::Spend { channel, campaign } => {
                self.schedule(self.now + DAY, Job::Spend { channel, campaign });
                Some(self.spend(channel, campaign))
            }
            Job::User { slot } => self.user_step(slot),
            Job::Ticket { slot } => Some(self.ticket_step(slot)),
            Job::Invite { user, converts } => {
                if converts {
                    let at = self.now + self.log_delay(2 * HOUR, 5 * DAY);
                    self.schedule(at, Job::ReferralSignup { referrer: user });
                }
                self.begin("referral");
                self.line.id_field("user_id", 'u', user);
                self.line.str_field("action", "invite_sent");
                self.line.id_field("referrer_id", 'u', user);
                self.end();
                Some(LineKey::User(user))
            }
            Job::ReferralSignup { referrer } => Some(self.signup(CH_REFERRAL, referrer)),
            Job::Rewarded { user, cents } => {
                self.begin("referral");
                self.line.id_field("user_id", 'u', user);
                self.line.str_field("action", "rewarded");
                self.line.id_field("referrer_id", 'u', user);
                self.line.cents_field("reward_usd", u64::from(cents));
                self.end();
                Some(LineKey::User(user))
            }
            Job::Survey { user } => {
                let nps = model::survey_nps(&mut self.rng);
                self.begin("support");
                self.line.id_field("user_id", 'u', user);
                self.line.str_field("ticket_id", "survey");
                self.line.str_field("action", "rated");
                self.line.int_field("nps", u64::from(nps));
                self.end();
                Some(LineKey::User(user))
            }
        }
    }

    /// A new user signs up; `channel` drives their behaviour, `referrer` (if
    /// not 0) marks a referral signup, which mostly carries no channel.
    pub(super) fn signup(&mut self, channel: u8, referrer: u64) -> LineKey {
        let id = self.next_user;
        self.next_user += 1;
        let key = LineKey::User(id);
        self.begin("signup");
        self.line.id_field("user_id", 'u', id);
        let ch = &self.channels[channel as usize];
        let named = channel != CH_NONE && (referrer == 0 || self.rng.chance(0.2));
        if named {
            self.line.str_field("channel", &ch.name);
        }
        if !ch.campaigns.is_empty() && self.rng.chance(0.85) {
            let k = self.rng.pick(&ch.campaigns, |c| c.1);
            self.line.str_field("campaign", &ch.campaigns[k].0);
        }
        if referrer != 0 {
            self.line.id_field("referrer_id", 'u', referrer);
        }
        if self.rng.chance(0.9) {
            let c = self.rng.weighted(&model::COUNTRY_WEIGHTS);
            self.line.str_field("country", model::COUNTRIES[c]);
        }
        let ch = &self.channels[channel as usize];
        let (converts, trader) = (ch.deposit_conversion, ch.trader_share);
        let slot = if self.rng.chance(converts) {
            let trader = self.rng.chance(trader);
            let user = User {
                id,
                referrer,
                ..self.new_user(trader, Step::FirstDeposit)
            };
            self.alloc_user(user)
        } else {
            None
        };
        match slot {
            Some(slot) => {
                let at = self.now + self.log_delay(5 * MIN, 7 * DAY);
                self.schedule(at, Job::User { slot });
            }
            None if self.rng.chance(model::PRE_DEPOSIT_TICKET) => {
                let at = self.now + self.log_delay(10 * MIN, 2 * DAY);
                self.open_ticket(at, id, NO_SLOT);
            }
            None => {}
        }
        self.end();
        key
    }

    pub(super) fn spend(&mut self, channel: u8, campaign: u8) -> LineKey {
        let ch = &self.channels[channel as usize];
        let share = ch.weight / self.signup_weights.iter().sum::<f64>();
        let signups_per_day = self.signups_per_day(self.now);
        let acquisitions = signups_per_day * share * ch.deposit_conversion;
        // The day's weekly factor: the weight at the diurnal peak, over the peak.
        let weekly = self.weight(self.now.div_euclid(DAY) * DAY + 14 * HOUR) / self.peak();
        let usd = acquisitions
            * ch.cpa_usd
            * ch.campaigns[campaign as usize].1
            * weekly
            * self.rng.uniform(0.8, 1.2);
        let key = LineKey::Channel(channel);
        self.begin("spend");
        let ch = &self.channels[channel as usize];
        self.line.str_field("channel", &ch.name);
        self.line
            .str_field("campaign", &ch.campaigns[campaign as usize].0);
        self.line
            .cents_field("amount_usd", (usd * 100.0).round() as u64);
        self.end();
        key
    }

    /// Starts a line: `{"event_id":..,"type":..,"ts":..`.
    pub(super) fn begin(&mut self, ty: &str) {
        self.line.start();
        self.line.raw("{\"event_id\":\"e");
        self.line.hex(self.id_tag);
        self.line.raw("-");
        self.line.hex(self.next_event);
        self.next_event += 1;
        self.line.raw("\",\"type\":\"");
        self.line.raw(ty);
        self.line.raw("\",\"ts\":\"");
        self.line.ts(self.now);
        self.line.raw("\"");
    }

    pub(super) fn end(&mut self) {
        self.line.raw("}");
    }
}
