//! The simulation: a discrete-event loop over a priority queue of scheduled
//! per-user, per-ticket and per-campaign jobs, emitting one line per job in
//! event-time order, with noise mixed in on the way out.
//!
//! Memory is bounded by the live population (users with a future, open
//! tickets, jobs in flight), never by the number of lines: the loop only
//! looks forward, and every finished user or ticket gives its slot back.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::agenda::{Agenda, Entry};
use super::line::LineBuf;
use super::model::{self, Action, CH_NONE, CH_REFERRAL, Channel, DAY, HOUR, MIN, SEC, TicketPlan};
use super::rng::{Rng, splitmix64};

/// What to generate. `events / days` sets the traffic level (lines per day),
/// and the population is sized from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenConfig {
    /// Same seed and config, byte-identical output.
    pub seed: u64,
    /// Exact number of lines produced, noise included.
    pub events: u64,
    /// The event-time span those lines cover (approximately: the traffic
    /// level is steered toward `events / days` lines per day).
    pub days: u32,
    /// Event time of the first line, Unix epoch milliseconds.
    pub start_ms: i64,
    /// Long-tail acquisition channels (`partner_01`, ...) on top of the five
    /// named ones: 12 or more push the channel count past the 16-label cap.
    pub extra_channels: u32,
}

/// 2026-01-01T00:00:00Z.
pub const DEFAULT_START_MS: i64 = 1_767_225_600_000;

impl Default for GenConfig {
    fn default() -> GenConfig {
        GenConfig {
            seed: 1,
            events: 100_000,
            days: 60,
            start_ms: DEFAULT_START_MS,
            extra_channels: 0,
        }
    }
}

/// One generated line: the Kafka key, the intended event time and the JSON
/// text (no trailing newline).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenLine {
    /// `user_id` for user events, the channel for `spend`, `None` for invalid lines.
    pub key: Option<String>,
    /// The line's event time; for an invalid line, the time it was emitted at.
    pub ts_ms: i64,
    pub payload: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LineKey {
    None,
    User(u64),
    Channel(u8),
}

/// Which kind of deliberate noise a line is (tests check the shares).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Noise {
    Clean,
    /// Held back and emitted up to `MAX_HOLD_MS` after lines newer than it.
    OutOfOrder,
    /// A second copy of an already emitted line.
    Duplicate,
    /// Not valid per EVENTS.md (not JSON, out of range, missing field, bad ts).
    Invalid,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct LineMeta {
    pub(crate) ts: i64,
    pub(crate) key: LineKey,
    #[cfg_attr(not(test), allow(dead_code))] // checked by the tests
    pub(crate) noise: Noise,
}

#[derive(Clone, Copy, Debug)]
enum Job {
    /// The next non-referral signup (a Poisson process).
    Arrival,
    /// A campaign's daily marketing spend.
    Spend {
        channel: u8,
        campaign: u8,
    },
    /// A user's next funnel step or activity.
    User {
        slot: u32,
    },
    /// A ticket's next planned action.
    Ticket {
        slot: u32,
    },
    Invite {
        user: u64,
        converts: bool,
    },
    ReferralSignup {
        referrer: u64,
    },
    Rewarded {
        user: u64,
        cents: u32,
    },
    Survey {
        user: u64,
    },
}

/// A finished line waiting for its release time (out-of-order, duplicate and
/// invalid lines); earliest release pops first.
struct Held {
    release: i64,
    seq: u64,
    meta: LineMeta,
    payload: Vec<u8>,
}

impl Ord for Held {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.release, other.seq).cmp(&(self.release, self.seq))
    }
}
impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        (self.release, self.seq) == (other.release, other.seq)
    }
}
impl Eq for Held {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    FirstDeposit,
    FirstTrade,
    Active,
}

/// A user with a future (a pending funnel step or activity). Users who will
/// never act again hold no slot.
#[derive(Clone, Copy, Debug)]
struct User {
    id: u64,
    /// The inviter, rewarded at this user's first deposit; 0 for none.
    referrer: u64,
    /// Time of a rating with csat <= 2 not yet acted upon; 0 for none.
    bad_at: i64,
    /// Activities per day before the traffic-level multiplier.
    rate: f32,
    /// Multiplier on this user's amounts (whales and minnows).
    size: f32,
    step: Step,
    trader: bool,
    /// Dormant: not counted in `active_rate` until the comeback.
    dormant: bool,
    /// Actions left in the current session.
    session_left: u8,
    /// When the current (or last) session started.
    session_began: i64,
}

struct TicketState {
    id: u64,
    user: u64,
    /// The user's slot when the ticket opened (`NO_SLOT` for none): a bad
    /// rating marks that user if the slot still holds them.
    user_slot: u32,
    plan: TicketPlan,
    pos: u8,
}

const NO_SLOT: u32 = u32::MAX;
/// Live users are capped so that any traffic level runs in bounded memory;
/// past it, traffic comes from more activity per user instead of more users.
const MAX_USERS: usize = 1 << 20;

/// The generator. Iterate for [`GenLine`]s, or use [`super::write_ndjson`].
pub struct Generator {
    rng: Rng,
    /// Lines still to emit.
    remaining: u64,
    start: i64,
    lines_per_day: f64,
    now: i64,
    seq: u64,
    agenda: Agenda<Job>,
    held: BinaryHeap<Held>,
    users: Vec<User>,
    free_users: Vec<u32>,
    tickets: Vec<TicketState>,
    free_tickets: Vec<u32>,
    channels: Vec<Channel>,
    signup_weights: Vec<f64>,
    next_user: u64,
    next_ticket: u64,
    next_event: u64,
    /// Distinguishes the event ids of different seeds.
    id_tag: u64,
    /// Multiplier on every customer's activity rate, steered so that the
    /// lines per day follow `lines_per_day` (see `steer`).
    intensity: f64,
    /// Sum of the base activity rates of active customers (millionths per
    /// day, an integer so that adding and removing a user is exact).
    active_rate: i64,
    /// Event time between two steering steps.
    steer_every: i64,
    next_steer: i64,
    /// No diurnal or weekly pattern (live use at a fixed rate).
    flat: bool,
    line: LineBuf,
    /// Reused by the `Iterator` implementation.
    scratch: Vec<u8>,
}

impl Generator {
    /// `cfg.events` lines over about `cfg.days` days.
    pub fn new(cfg: &GenConfig) -> Generator {
        let lines_per_day = cfg.events as f64 / f64::from(cfg.days.max(1));
        Generator::build(cfg, lines_per_day, false)
    }

    /// `cfg.events` lines at about `lines_per_sec` lines per second of event
    /// time (`cfg.days` is ignored): for live use, where event time should
    /// track the wall clock. Activity is flat over the day, so the rate is
    /// steady. `cfg.events == u64::MAX` never ends.
    pub fn with_rate(cfg: &GenConfig, lines_per_sec: f64) -> Generator {
        Generator::build(cfg, lines_per_sec * 86_400.0, true)
    }

    fn build(cfg: &GenConfig, lines_per_day: f64, flat: bool) -> Generator {
        let lines_per_day = lines_per_day.max(1.0);
        let channels = model::channels(cfg.extra_channels);
        let signup_weights = channels.iter().map(|c| c.weight).collect();
        let mut tag_state = cfg.seed;
        let wanted_baseline = (model::BASELINE_USERS_PER_DAILY_LINE * lines_per_day).max(1.0);
        let baseline = wanted_baseline.min((MAX_USERS / 2) as f64).round() as u64;
        // Agenda buckets of about a thousand jobs.
        let bucket_width = ((DAY as f64 * 1000.0 / lines_per_day) as i64).clamp(SEC, HOUR);
        // Steer about every 5000 lines, between once a minute and once an hour.
        let steer_every = ((DAY as f64 * 5000.0 / lines_per_day) as i64).clamp(MIN, HOUR);
        let mut g = Generator {
            rng: Rng::new(cfg.seed),
            remaining: cfg.events,
            start: cfg.start_ms,
            lines_per_day,
            now: cfg.start_ms,
            seq: 0,
            agenda: Agenda::new(bucket_width, cfg.start_ms - model::WARM_UP_MS),
            held: BinaryHeap::new(),
            users: Vec::new(),
            free_users: Vec::new(),
            tickets: Vec::new(),
            free_tickets: Vec::new(),
            channels,
            signup_weights,
            next_user: 1,
            next_ticket: 1,
            next_event: 1,
            id_tag: splitmix64(&mut tag_state) & 0xffff,
            intensity: 1.0,
            active_rate: 0,
            steer_every,
            next_steer: cfg.start_ms + steer_every,
            flat,
            line: LineBuf::new(),
            scratch: Vec::new(),
        };
        // Existing customers: no signup event, channel `unknown`, already active.
        let mut existing = Vec::new();
        for _ in 0..baseline {
            let trader = g.rng.chance(0.8);
            let user = g.new_user(trader, Step::Active);
            let id = g.next_user;
            g.next_user += 1;
            if let Some(slot) = g.alloc_user(User { id, ..user }) {
                g.active_rate += micros(user.rate);
                existing.push(slot);
            }
        }
        g.set_intensity();
        // Start in the steady state, with sessions in progress. Session
        // starts are nearly a Poisson process, so the last one before the
        // warm-up was about an exponential time earlier and what is left of
        // it comes first; the warm-up, simulated without output, then
        // corrects what that approximation misses.
        let warm_from = cfg.start_ms - model::WARM_UP_MS;
        g.now = warm_from;
        for slot in existing {
            let sessions =
                f64::from(g.users[slot as usize].rate) * g.intensity / model::MEAN_SESSION_ACTIONS;
            let began = warm_from - g.rng.exp(DAY as f64 / sessions) as i64;
            let (mut at, mut left) = (began, g.session_extra_actions());
            while at < warm_from && left > 0 {
                at += g.in_session_gap(sessions);
                left -= 1;
            }
            let (began, at, left) = if at >= warm_from {
                (began, at, left)
            } else {
                let next = g.modulated(warm_from, sessions);
                (next, next, g.session_extra_actions())
            };
            let user = &mut g.users[slot as usize];
            user.session_began = began;
            user.session_left = left;
            g.schedule(at, Job::User { slot });
        }
        while g.agenda.next_at().0.is_some_and(|at| at < cfg.start_ms) {
            if let Some(Entry {
                at,
                job: Job::User { slot },
                ..
            }) = g.agenda.pop()
            {
                g.now = at;
                g.schedule_activity(slot);
            }
        }
        g.now = cfg.start_ms;
        let first = g.next_arrival(cfg.start_ms);
        g.schedule(first, Job::Arrival);
        for (c, ch) in g.channels.clone().iter().enumerate() {
            if ch.cpa_usd > 0.0 {
                for k in 0..ch.campaigns.len() {
                    let at = cfg.start_ms + 5 * MIN + c as i64 * 3 * MIN + k as i64 * MIN;
                    g.schedule(
                        at,
                        Job::Spend {
                            channel: c as u8,
                            campaign: k as u8,
                        },
                    );
                }
            }
        }
        g
    }

    /// Appends the next line (without newline) to `out`; `None` once the
    /// requested number of lines has been produced.
    pub(crate) fn next_into(&mut self, out: &mut Vec<u8>) -> Option<LineMeta> {
        if self.remaining == 0 {
            return None;
        }
        // Lines are written straight into the caller's buffer.
        std::mem::swap(&mut self.line.bytes, out);
        let meta = self.next_line();
        std::mem::swap(&mut self.line.bytes, out);
        meta
    }

    fn next_line(&mut self) -> Option<LineMeta> {
        loop {
            let (due, loaded) = self.agenda.next_at();
            let due = due.unwrap_or(i64::MAX);
            if loaded {
                self.warm_users();
            }
            if self.held.peek().is_some_and(|h| h.release <= due) {
                let held = self.held.pop()?;
                self.line.bytes.extend_from_slice(&held.payload);
                return Some(self.count(held.meta));
            }
            let sched = self.agenda.pop()?;
            self.now = sched.at;
            if self.now >= self.next_steer {
                self.steer();
            }
            let Some(key) = self.run(sched.job) else {
                continue;
            };
            let meta = LineMeta {
                ts: self.now,
                key,
                noise: Noise::Clean,
            };
            if self.rng.chance(model::INVALID_SHARE) {
                self.hold_invalid(key);
            }
            if self.rng.chance(model::OUT_OF_ORDER_SHARE) {
                let release = self.now + self.rng.int_in(SEC, model::MAX_HOLD_MS);
                let payload = self.line.written().to_vec();
                self.line.discard();
                self.hold(
                    release,
                    LineMeta {
                        noise: Noise::OutOfOrder,
                        ..meta
                    },
                    payload,
                );
                continue;
            }
            if self.rng.chance(model::DUPLICATE_SHARE) {
                let release = self.now + self.rng.int_in(50, model::MAX_HOLD_MS);
                let payload = self.line.written().to_vec();
                self.hold(
                    release,
                    LineMeta {
                        noise: Noise::Duplicate,
                        ..meta
                    },
                    payload,
                );
            }
            return Some(self.count(meta));
        }
    }

    /// Reads the users the new bucket's jobs will need, all at once: the
    /// loads are independent, so their cache misses overlap instead of
    /// stalling one job at a time (a third of the time on large populations).
    fn warm_users(&self) {
        let mut acc = 0u64;
        for job in self.agenda.near_jobs() {
            if let Job::User { slot } = job {
                acc = acc.wrapping_add(self.users[*slot as usize].id);
            }
        }
        std::hint::black_box(acc);
    }

    fn count(&mut self, meta: LineMeta) -> LineMeta {
        self.remaining -= 1;
        meta
    }

    fn schedule(&mut self, at: i64, job: Job) {
        self.seq += 1;
        let at = at.max(self.now);
        self.agenda.push(Entry {
            at,
            seq: self.seq,
            job,
        });
    }

    fn hold(&mut self, release: i64, meta: LineMeta, payload: Vec<u8>) {
        self.seq += 1;
        self.held.push(Held {
            release,
            seq: self.seq,
            meta,
            payload,
        });
    }

    /// Keeps lines per day at the target, feed-forward: the intensity that
    /// gives the target from the active customers' summed rates (see
    /// `set_intensity`), so it follows churn and growth without lag. There
    /// is deliberately no feedback from the lines emitted: the response to
    /// the intensity lags by up to days (casual customers' next sessions),
    /// and feedback through such a lag oscillates.
    fn steer(&mut self) {
        while self.next_steer <= self.now {
            self.next_steer += self.steer_every;
        }
        self.set_intensity();
    }

    fn set_intensity(&mut self) {
        let mean_weight = if self.flat {
            1.0
        } else {
            model::MEAN_ACTIVITY_WEIGHT
        };
        let from_signups = self.signups_per_day(self.now) * model::LINES_PER_SIGNUP;
        let wanted = (self.lines_per_day - from_signups).max(0.1 * self.lines_per_day);
        // What an activity leads to (tickets, invitations, surveys) follows
        // minutes to days later: right after the start, only part of it has
        // begun, roughly log-uniformly in the time since (1 minute to 2 days).
        let minutes = ((self.now - self.start) as f64 / MIN as f64).max(1.0);
        let started = (minutes.ln() / (2.0 * 24.0 * 60.0f64).ln()).min(1.0);
        let per_activity = 1.0 + (model::LINES_PER_ACTIVITY - 1.0) * started;
        let per_unit = self.active_rate.max(1) as f64 / 1e6 * per_activity * mean_weight;
        self.intensity = (wanted / per_unit).clamp(1e-3, 1e5);
    }

    // ---- jobs -----------------------------------------------------------

    /// Runs a job; when it produces a line, the line is in `self.line` and its key is returned.
    fn run(&mut self, job: Job) -> Option<LineKey> {
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
    fn signup(&mut self, channel: u8, referrer: u64) -> LineKey {
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

    fn spend(&mut self, channel: u8, campaign: u8) -> LineKey {
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

    fn user_step(&mut self, slot: u32) -> Option<LineKey> {
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

    fn trade(&mut self, user: User) {
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

    fn deposit(&mut self, user: User) {
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
    fn side_effects(&mut self, user: u64, slot: u32) {
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
    fn schedule_activity(&mut self, slot: u32) {
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

    /// Time between two actions of a session.
    /// Time between two actions of a session; shorter for customers whose
    /// sessions come so often (at high intensity) that they would overlap.
    fn in_session_gap(&mut self, sessions_per_day: f64) -> i64 {
        let between_sessions = DAY as f64 / sessions_per_day;
        let scale = (between_sessions / (4.0 * model::SESSION_GAP_MS.1 as f64)).min(1.0);
        let (lo, hi) = model::SESSION_GAP_MS;
        self.rng
            .log_uniform(lo as f64 * scale, hi as f64 * scale)
            .max(1.0) as i64
    }

    /// Actions after a session's first: geometric, mean `MEAN_SESSION_ACTIONS - 1`.
    fn session_extra_actions(&mut self) -> u8 {
        let p_more = 1.0 - 1.0 / model::MEAN_SESSION_ACTIONS;
        let mut n = 0;
        while n < 30 && self.rng.chance(p_more) {
            n += 1;
        }
        n
    }

    /// No activity for over 30 days from `since`: back 31..120 days later, or never.
    fn go_dormant(&mut self, slot: u32, since: i64) {
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

    fn open_ticket(&mut self, at: i64, user: u64, user_slot: u32) {
        let ticket = TicketState {
            id: self.next_ticket,
            user,
            user_slot,
            plan: model::plan_ticket(&mut self.rng, at.max(self.now)),
            pos: 0,
        };
        self.next_ticket += 1;
        let first = ticket.plan.steps[0].0;
        let slot = match self.free_tickets.pop() {
            Some(slot) => {
                self.tickets[slot as usize] = ticket;
                slot
            }
            None => {
                self.tickets.push(ticket);
                (self.tickets.len() - 1) as u32
            }
        };
        self.schedule(first, Job::Ticket { slot });
    }

    fn ticket_step(&mut self, slot: u32) -> LineKey {
        let t = &self.tickets[slot as usize];
        let (id, user, user_slot, pos) = (t.id, t.user, t.user_slot, t.pos as usize);
        let (priority, bad_service, len) =
            (t.plan.priority, t.plan.bad_service, t.plan.len as usize);
        let action = t.plan.steps[pos].1;
        let key = LineKey::User(user);
        self.begin("support");
        self.line.id_field("user_id", 'u', user);
        self.line.id_field("ticket_id", 't', id);
        self.line.str_field("action", action.as_str());
        match action {
            // `priority` absent means normal: leave it out now and then.
            Action::Opened if priority != model::Priority::Normal || self.rng.chance(0.8) => {
                self.line.str_field("priority", priority.as_str());
            }
            Action::Rated => {
                let r = model::rate_ticket(&mut self.rng, bad_service);
                for (name, v) in [("csat", r.csat), ("ces", r.ces), ("nps", r.nps)] {
                    if let Some(v) = v {
                        self.line.int_field(name, u64::from(v));
                    }
                }
                if r.csat.is_some_and(|c| c <= 2)
                    && user_slot != NO_SLOT
                    && self
                        .users
                        .get(user_slot as usize)
                        .is_some_and(|u| u.id == user)
                {
                    self.users[user_slot as usize].bad_at = self.now;
                }
            }
            _ => {}
        }
        if pos + 1 < len {
            self.tickets[slot as usize].pos += 1;
            let at = self.tickets[slot as usize].plan.steps[pos + 1].0;
            self.schedule(at, Job::Ticket { slot });
        } else {
            self.free_tickets.push(slot);
        }
        self.end();
        key
    }

    // ---- helpers --------------------------------------------------------

    /// A user with drawn traits; the caller sets `id` and `referrer`.
    fn new_user(&mut self, trader: bool, step: Step) -> User {
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

    fn alloc_user(&mut self, user: User) -> Option<u32> {
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

    fn signups_per_day(&self, at: i64) -> f64 {
        let days = (at - self.start) as f64 / DAY as f64;
        model::SIGNUPS_PER_LINE
            * self.lines_per_day
            * (1.0 + model::SIGNUP_GROWTH_PER_DAY * days.max(0.0))
    }

    fn next_arrival(&mut self, from: i64) -> i64 {
        let rate = self.signups_per_day(from);
        self.modulated(from, rate)
    }

    /// The next event of a Poisson process of `rate_per_day` (on average)
    /// shaped by the diurnal and weekly pattern (thinning).
    fn modulated(&mut self, from: i64, rate_per_day: f64) -> i64 {
        let peak = self.peak();
        let mean = DAY as f64 / (rate_per_day * peak);
        let mut t = from;
        loop {
            t += (self.rng.exp(mean) as i64).max(1);
            if self.flat || self.rng.f64() * peak < self.weight(t) {
                return t;
            }
        }
    }

    fn weight(&self, t: i64) -> f64 {
        if self.flat {
            1.0
        } else {
            model::activity_weight(t)
        }
    }

    fn peak(&self) -> f64 {
        if self.flat { 1.0 } else { model::ACTIVITY_PEAK }
    }

    fn log_delay(&mut self, lo: i64, hi: i64) -> i64 {
        self.rng.log_uniform(lo as f64, hi as f64) as i64
    }

    /// Starts a line: `{"event_id":..,"type":..,"ts":..`.
    fn begin(&mut self, ty: &str) {
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

    fn end(&mut self) {
        self.line.raw("}");
    }

    /// Queues an invalid line at the current time, one of the ways
    /// EVENTS.md names, for the user of the line just made (if any).
    fn hold_invalid(&mut self, key: LineKey) {
        const BAD_TS: [&str; 3] = ["2026-13-45T25:61:00Z", "yesterday", "1767225600000ms"];
        let user = match key {
            LineKey::User(u) => u,
            _ => 1,
        };
        let mut b = LineBuf::new();
        b.raw("{\"event_id\":\"x");
        b.hex(self.id_tag);
        b.raw("-");
        b.hex(self.next_event);
        self.next_event += 1;
        let kind = self.rng.below(5);
        b.raw(match kind {
            0 | 2 => "\",\"type\":\"deposit\",\"ts\":\"",
            1 => "\",\"type\":\"support\",\"ts\":\"",
            _ => "\",\"type\":\"trade\",\"ts\":\"",
        });
        if kind == 4 {
            b.raw(BAD_TS[self.rng.below(3) as usize]);
        } else {
            b.ts(self.now);
        }
        b.raw("\"");
        if kind != 3 {
            b.id_field("user_id", 'u', user);
        }
        match kind {
            // Cut off mid-number: not JSON.
            0 => b.raw(",\"amount_usd\":12"),
            1 => {
                b.id_field("ticket_id", 't', self.next_ticket.saturating_sub(1).max(1));
                b.raw(",\"action\":\"rated\",\"csat\":9}");
            }
            2 => b.raw(",\"amount_usd\":-42.50}"),
            // 3: no user_id; 4: a ts that is not a time.
            _ => b.raw(",\"notional_usd\":100.00,\"fee_usd\":0.1000}"),
        }
        let meta = LineMeta {
            ts: self.now,
            key: LineKey::None,
            noise: Noise::Invalid,
        };
        self.hold(self.now, meta, b.bytes);
    }

    fn key_string(&self, key: LineKey) -> Option<String> {
        match key {
            LineKey::None => None,
            LineKey::User(u) => Some(format!("u{u}")),
            LineKey::Channel(c) => Some(self.channels[c as usize].name.clone()),
        }
    }
}

impl Iterator for Generator {
    type Item = GenLine;

    fn next(&mut self) -> Option<GenLine> {
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        let meta = self.next_into(&mut buf);
        let line = meta.map(|m| GenLine {
            key: self.key_string(m.key),
            ts_ms: m.ts,
            payload: String::from_utf8_lossy(&buf).into_owned(),
        });
        self.scratch = buf;
        line
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = usize::try_from(self.remaining).unwrap_or(usize::MAX);
        (n, usize::try_from(self.remaining).ok())
    }
}

fn micros(rate: f32) -> i64 {
    (f64::from(rate) * 1e6) as i64
}
