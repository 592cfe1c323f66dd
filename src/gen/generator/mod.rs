//! The simulation: a discrete-event loop over a priority queue of scheduled
//! per-user, per-ticket and per-campaign jobs, emitting one line per job in
//! event-time order, with noise mixed in on the way out.
//!
//! Memory is bounded by the live population (users with a future, open
//! tickets, jobs in flight), never by the number of lines: the loop only
//! looks forward, and every finished user or ticket gives its slot back.

//!
//! Parts: this file holds the state, its start (warm-up included) and the
//! main loop; `jobs` what each scheduled job writes, `customers` the funnel,
//! sessions and dormancy, `tickets` support tickets, `traffic` the traffic
//! level and its daily and weekly shape, `noise` the held-back and invalid
//! lines.

mod customers;
mod jobs;
mod noise;
mod tickets;
mod traffic;

use std::collections::BinaryHeap;

use super::agenda::{Agenda, Entry};
use super::line::LineBuf;
use super::model::{self, Channel, DAY, HOUR, MIN, SEC};
use super::rng::{Rng, splitmix64};
use customers::{MAX_USERS, Step, User, micros};
use noise::Held;
use tickets::TicketState;

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
            if self.held.peek().is_some_and(|h| h.at <= due) {
                let held = self.held.pop()?.job;
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
