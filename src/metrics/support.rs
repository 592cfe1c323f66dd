//! Support and SLAs: tickets opened, first-response and resolution times
//! (histograms and windowed quantiles), breaches and breach ratio, reopened,
//! open, breaching and at-risk tickets.
//!
//! Per partition: openings, decisions (met or breached, by priority and
//! kind) and reopenings per bucket, the recent support times, the all-time
//! histograms; the tickets themselves are the shared [`Tickets`] store.
//! Timers: each target's deadline (the resolution one moves with pauses).

use std::collections::VecDeque;

use hdrhistogram::Histogram;

use super::{Ctx, Due, add_into};
use crate::event::{Millis, Priority, SupportAction};
use crate::export::{Family, Kind, format_value};
use crate::state::codec::{R, SnapshotError, W, check_index, check_time};
use crate::state::histogram::SecondsHistogram;
use crate::state::params::Params;
use crate::state::ring::{Bucket, Ring};
use crate::state::tickets::{Decision, Tickets};
use crate::state::users::{NEVER, UserIdx};

const QUANTILES: [(f64, &str); 3] = [(0.5, "0.5"), (0.9, "0.9"), (0.99, "0.99")];
const KINDS: [SlaKind; 2] = [SlaKind::FirstResponse, SlaKind::Resolution];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SlaKind {
    FirstResponse,
    Resolution,
}

impl SlaKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SlaKind::FirstResponse => "first_response",
            SlaKind::Resolution => "resolution",
        }
    }
}

crate::bucket! {
    /// Support in one bucket; arrays are indexed by `Priority::index()`.
    pub struct SlaBucket {
        pub opened: [f64; 4],
        pub first_response_met: [f64; 4],
        pub first_response_breached: [f64; 4],
        pub resolution_met: [f64; 4],
        pub resolution_breached: [f64; 4],
        /// `reopened` actions.
        pub reopened: f64,
    }
}

impl SlaBucket {
    /// Targets of `kind` decided met or breached, by priority.
    pub fn decided(&self, kind: SlaKind, breached: bool) -> &[f64; 4] {
        match (kind, breached) {
            (SlaKind::FirstResponse, false) => &self.first_response_met,
            (SlaKind::FirstResponse, true) => &self.first_response_breached,
            (SlaKind::Resolution, false) => &self.resolution_met,
            (SlaKind::Resolution, true) => &self.resolution_breached,
        }
    }
}

/// The family's timers: a ticket's deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Timer {
    FirstResponse(u32),
    Resolution(u32),
}

impl Timer {
    pub fn write(&self, w: &mut W) {
        let (tag, t) = match *self {
            Timer::FirstResponse(t) => (0, t),
            Timer::Resolution(t) => (1, t),
        };
        w.u8(tag);
        w.u32(t);
    }

    /// Reads a timer of a partition holding `tickets` ticket slots.
    pub fn read(r: &mut R<'_>, tickets: u32) -> Result<Timer, SnapshotError> {
        let tag = r.u8()?;
        let t = r.u32()?;
        check_index("timer's ticket", t as u64, tickets as usize)?;
        match tag {
            0 => Ok(Timer::FirstResponse(t)),
            1 => Ok(Timer::Resolution(t)),
            _ => Err(SnapshotError::Invalid("timer")),
        }
    }
}

/// Support times whose decision instant (reply or resolution) is recent: `(at, duration)`.
pub type TimeLog = VecDeque<(Millis, Millis)>;

/// One partition's support state.
#[derive(Debug, Default)]
pub struct State {
    pub sla: Ring<SlaBucket>,
    /// By priority index.
    pub fr_times: [TimeLog; 4],
    pub res_times: [TimeLog; 4],
    pub fr_hist: [SecondsHistogram; 4],
    pub res_hist: [SecondsHistogram; 4],
}

/// What a fired deadline changes besides the family's own sums.
#[derive(Debug, Default, PartialEq)]
pub struct Fired {
    /// A later deadline to schedule instead (the clock was paused).
    pub due: Option<Due<Timer>>,
    /// A breach now final (an alert to publish).
    pub breach: Option<SlaKind>,
}

impl State {
    /// A support action at `ts` (bucket `b`) on `ticket`, by `user`: returns
    /// the deadlines to schedule.
    #[allow(clippy::too_many_arguments)]
    pub fn apply(
        &mut self,
        tickets: &mut Tickets,
        user: UserIdx,
        ticket: u32,
        action: SupportAction,
        priority: Option<Priority>,
        ts: Millis,
        b: i64,
        prm: &Params,
    ) -> [Option<Due<Timer>>; 2] {
        if action == SupportAction::Reopened {
            self.sla.at(b).reopened += 1.0;
        }
        let t = &mut tickets.list[ticket as usize];
        if action == SupportAction::Opened {
            // A second `opened` is ignored: the first one stands.
            if t.opened != NEVER {
                return [None, None];
            }
            let p = priority.unwrap_or_default();
            t.opened = ts;
            t.priority = p;
            t.user = user;
            t.open = true;
            let pi = p.index();
            self.sla.at(b).opened[pi] += 1.0;
            return [
                Some(Due {
                    at: ts + prm.fr_target[pi],
                    kind: Timer::FirstResponse(ticket),
                }),
                Some(Due {
                    at: ts + prm.res_target[pi],
                    kind: Timer::Resolution(ticket),
                }),
            ];
        }
        // Actions on a ticket not opened (in event-time order) are ignored.
        if t.opened == NEVER {
            return [None, None];
        }
        let pi = t.priority.index();
        let mut due = None;
        match action {
            SupportAction::AgentReplied => {
                if t.first_reply == NEVER && !t.resolved_ever {
                    t.first_reply = ts;
                    let took = ts - t.opened;
                    self.fr_hist[pi].observe(&prm.hist_bounds, took as f64 / 1000.0);
                    self.fr_times[pi].push_back((ts, took));
                    if t.fr == Decision::Undecided {
                        t.fr = Decision::Met;
                        self.sla.at(b).first_response_met[pi] += 1.0;
                    }
                }
            }
            SupportAction::Pending => {
                if t.open && !t.resolved_ever && t.pending_since == NEVER {
                    t.pending_since = ts;
                }
            }
            SupportAction::CustomerReplied => {
                if t.pending_since != NEVER {
                    t.paused += ts - t.pending_since;
                    t.pending_since = NEVER;
                    if t.res == Decision::Undecided {
                        due = Some(Due {
                            at: t.opened + prm.res_target[pi] + t.paused,
                            kind: Timer::Resolution(ticket),
                        });
                    }
                }
            }
            SupportAction::Resolved => {
                t.open = false;
                if !t.resolved_ever {
                    t.resolved_ever = true;
                    if t.pending_since != NEVER {
                        t.paused += ts - t.pending_since;
                        t.pending_since = NEVER;
                    }
                    let running = ts - t.opened - t.paused;
                    self.res_hist[pi].observe(&prm.hist_bounds, running as f64 / 1000.0);
                    self.res_times[pi].push_back((ts, running));
                    if t.res == Decision::Undecided {
                        t.res = Decision::Met;
                        self.sla.at(b).resolution_met[pi] += 1.0;
                    }
                    if t.fr == Decision::Undecided {
                        t.fr = Decision::Met;
                        self.sla.at(b).first_response_met[pi] += 1.0;
                    }
                }
            }
            SupportAction::Reopened => {
                if !t.open {
                    t.open = true;
                }
            }
            SupportAction::Opened | SupportAction::Rated => {}
        }
        [due, None]
    }

    /// `timer` is due at `at`: decides the target if it is still undecided.
    pub fn fire(&mut self, tickets: &mut Tickets, timer: Timer, at: Millis, prm: &Params) -> Fired {
        let mut fired = Fired::default();
        match timer {
            Timer::FirstResponse(ticket) => {
                let t = &mut tickets.list[ticket as usize];
                if t.fr == Decision::Undecided && t.first_reply == NEVER {
                    t.fr = Decision::Breached;
                    self.sla.at(prm.bucket_of(at)).first_response_breached[t.priority.index()] +=
                        1.0;
                    fired.breach = Some(SlaKind::FirstResponse);
                }
            }
            Timer::Resolution(ticket) => {
                let t = &mut tickets.list[ticket as usize];
                if t.res != Decision::Undecided || t.pending_since != NEVER {
                    // Decided already, or paused: `customer_replied` re-arms it.
                    return fired;
                }
                let due = t.opened + prm.res_target[t.priority.index()] + t.paused;
                if due > at {
                    fired.due = Some(Due {
                        at: due,
                        kind: Timer::Resolution(ticket),
                    });
                } else if due == at {
                    t.res = Decision::Breached;
                    self.sla.at(prm.bucket_of(at)).resolution_breached[t.priority.index()] += 1.0;
                    fired.breach = Some(SlaKind::Resolution);
                }
            }
        }
        fired
    }

    /// Drops history no window reads any more, `latest_bucket` being the newest applied.
    pub fn trim(&mut self, latest_bucket: i64, prm: &Params) {
        self.sla.trim(latest_bucket - prm.keep_buckets);
        let oldest_ms = (latest_bucket + 1) * prm.bucket - prm.max_window - prm.bucket;
        for log in self.fr_times.iter_mut().chain(self.res_times.iter_mut()) {
            while log.front().is_some_and(|&(at, _)| at < oldest_ms) {
                log.pop_front();
            }
        }
    }

    pub fn heap_bytes(&self) -> usize {
        self.sla.heap_bytes()
            + self
                .fr_times
                .iter()
                .chain(self.res_times.iter())
                .map(|l| l.capacity() * 16)
                .sum::<usize>()
    }

    pub fn write(&self, w: &mut W) {
        self.sla.write(w);
        for l in self.fr_times.iter().chain(self.res_times.iter()) {
            w.len(l.len());
            for (a, b) in l {
                w.i64(*a);
                w.i64(*b);
            }
        }
        for h in self.fr_hist.iter().chain(self.res_hist.iter()) {
            h.write(w);
        }
    }

    pub fn read(r: &mut R<'_>) -> Result<State, SnapshotError> {
        let mut s = State {
            sla: Ring::read(r)?,
            ..State::default()
        };
        for l in s.fr_times.iter_mut().chain(s.res_times.iter_mut()) {
            let n = r.len(16)?;
            for _ in 0..n {
                let at = check_time("support time instant", r.i64()?)?;
                // A duration: a difference of event times (their sum over
                // every partition is checked by the engine's restore).
                let took = check_time("support time", r.i64()?)?;
                l.push_back((at, took));
            }
        }
        for h in s.fr_hist.iter_mut().chain(s.res_hist.iter_mut()) {
            *h = SecondsHistogram::read(r)?;
        }
        Ok(s)
    }
}

/// One partition's (or several, merged) support numbers at T.
#[derive(Clone, Debug, PartialEq)]
pub struct Partial {
    /// `[window]`.
    pub sla: Vec<SlaBucket>,
    /// `[window][priority]`: first-response / resolution times (ms) whose
    /// reply / resolution is in the window.
    pub fr_times: Vec<[Vec<Millis>; 4]>,
    pub res_times: Vec<[Vec<Millis>; 4]>,
    /// All time, by priority.
    pub fr_hist: [SecondsHistogram; 4],
    pub res_hist: [SecondsHistogram; 4],
    /// Open tickets at T by priority, and of them past / near a deadline, by kind.
    pub open: [f64; 4],
    pub breaching: [[f64; 2]; 4],
    pub at_risk: [[f64; 2]; 4],
}

/// The durations of `log` whose instant is in `[from_ms, to_ms)`.
fn times_in(log: &TimeLog, from_ms: Millis, to_ms: Millis) -> Vec<Millis> {
    let start = log.partition_point(|&(at, _)| at < from_ms);
    log.range(start..)
        .take_while(|&&(at, _)| at < to_ms)
        .map(|&(_, took)| took)
        .collect()
}

impl Partial {
    pub fn empty(ctx: &Ctx<'_>) -> Partial {
        let nw = ctx.prm.windows.len();
        let hist = SecondsHistogram {
            counts: vec![0; ctx.prm.hist_bounds.len()],
            sum: 0.0,
            count: 0,
        };
        Partial {
            sla: vec![SlaBucket::default(); nw],
            fr_times: vec![Default::default(); nw],
            res_times: vec![Default::default(); nw],
            fr_hist: std::array::from_fn(|_| hist.clone()),
            res_hist: std::array::from_fn(|_| hist.clone()),
            open: [0.0; 4],
            breaching: [[0.0; 2]; 4],
            at_risk: [[0.0; 2]; 4],
        }
    }

    pub fn of(ctx: &Ctx<'_>, s: &State, tickets: &Tickets) -> Partial {
        let mut p = Partial::empty(ctx);
        for (w, win) in ctx.prm.windows.iter().enumerate() {
            let (from, to) = ctx.range(win);
            p.sla[w] = s.sla.sum(from, to);
            let (from_ms, to_ms) = (from * ctx.prm.bucket, to * ctx.prm.bucket);
            p.fr_times[w] = std::array::from_fn(|i| times_in(&s.fr_times[i], from_ms, to_ms));
            p.res_times[w] = std::array::from_fn(|i| times_in(&s.res_times[i], from_ms, to_ms));
        }
        p.fr_hist = s.fr_hist.clone();
        p.res_hist = s.res_hist.clone();
        let t = ctx.t;
        let share = ctx.prm.at_risk_share;
        for tk in &tickets.list {
            if tk.opened == NEVER || !tk.open {
                continue;
            }
            let pi = tk.priority.index();
            p.open[pi] += 1.0;
            let fr_target = ctx.prm.fr_target[pi];
            let res_target = ctx.prm.res_target[pi];
            let elapsed = t - tk.opened;
            let running_end = if tk.pending_since != NEVER {
                tk.pending_since
            } else {
                t
            };
            let running = running_end - tk.opened - tk.paused;
            if tk.first_reply == NEVER && tk.fr != Decision::Met && elapsed >= fr_target {
                p.breaching[pi][0] += 1.0;
            }
            if !tk.resolved_ever && running >= res_target {
                p.breaching[pi][1] += 1.0;
            }
            if tk.fr == Decision::Undecided && elapsed as f64 >= share * fr_target as f64 {
                p.at_risk[pi][0] += 1.0;
            }
            if tk.res == Decision::Undecided && running as f64 >= share * res_target as f64 {
                p.at_risk[pi][1] += 1.0;
            }
        }
        p
    }

    pub fn merge(&mut self, o: &Partial) {
        add_into(&mut self.sla, &o.sla, Bucket::add);
        let times = |a: &mut [Vec<Millis>; 4], x: &[Vec<Millis>; 4]| {
            for (a, x) in a.iter_mut().zip(x) {
                a.extend_from_slice(x);
            }
        };
        add_into(&mut self.fr_times, &o.fr_times, times);
        add_into(&mut self.res_times, &o.res_times, times);
        for (a, x) in self.fr_hist.iter_mut().zip(&o.fr_hist) {
            a.merge(x);
        }
        for (a, x) in self.res_hist.iter_mut().zip(&o.res_hist) {
            a.merge(x);
        }
        for pi in 0..4 {
            self.open[pi] += o.open[pi];
            for k in 0..2 {
                self.breaching[pi][k] += o.breaching[pi][k];
                self.at_risk[pi][k] += o.at_risk[pi][k];
            }
        }
    }

    pub fn write(&self, w: &mut W) {
        super::write_seq(w, &self.sla, |w, b| b.write(w));
        for times in [&self.fr_times, &self.res_times] {
            super::write_seq(w, times, |w, by_priority| {
                for log in by_priority {
                    super::write_seq(w, log, |w, t| w.i64(*t));
                }
            });
        }
        for h in self.fr_hist.iter().chain(&self.res_hist) {
            h.write(w);
        }
        for v in self.open {
            w.f64(v);
        }
        for row in self.breaching.iter().chain(&self.at_risk) {
            for v in row {
                w.f64(*v);
            }
        }
    }

    /// Reads support numbers of `prm`'s windows and histogram bounds.
    pub fn read(r: &mut R<'_>, prm: &Params) -> Result<Partial, SnapshotError> {
        let nw = prm.windows.len();
        let what = "partial's window count";
        let sla = super::read_exact(r, nw, what, SlaBucket::read)?;
        // Support times: each within the time range, their sum within an i64.
        let mut total: u128 = 0;
        let mut times = |r: &mut R<'_>| {
            super::read_exact(r, nw, what, |r| {
                let mut by_priority: [Vec<Millis>; 4] = Default::default();
                for log in by_priority.iter_mut() {
                    let n = r.len(8)?;
                    for _ in 0..n {
                        let t = check_time("partial's support time", r.i64()?)?;
                        total += t.unsigned_abs() as u128;
                        log.push(t);
                    }
                }
                Ok(by_priority)
            })
        };
        let fr_times = times(r)?;
        let res_times = times(r)?;
        if total > i64::MAX as u128 {
            return Err(SnapshotError::OutOfRange {
                what: "partial's support times",
                value: total.to_string(),
            });
        }
        let mut hist = || -> Result<SecondsHistogram, SnapshotError> {
            let h = SecondsHistogram::read(r)?;
            // Empty until the first observation, then one count per bound.
            if !h.counts.is_empty() && h.counts.len() != prm.hist_bounds.len() {
                return Err(SnapshotError::Invalid("partial's histogram bounds"));
            }
            Ok(h)
        };
        let fr_hist = [hist()?, hist()?, hist()?, hist()?];
        let res_hist = [hist()?, hist()?, hist()?, hist()?];
        let mut open = [0.0; 4];
        for v in open.iter_mut() {
            *v = super::read_f64(r)?;
        }
        let mut pairs = [[[0.0; 2]; 4]; 2];
        for row in pairs.iter_mut().flatten() {
            for v in row.iter_mut() {
                *v = super::read_f64(r)?;
            }
        }
        let [breaching, at_risk] = pairs;
        Ok(Partial {
            sla,
            fr_times,
            res_times,
            fr_hist,
            res_hist,
            open,
            breaching,
            at_risk,
        })
    }

    pub fn finish(&self, ctx: &Ctx<'_>, out: &mut Vec<Family>) {
        let g = |name, help| Family::new(name, Kind::Gauge, help);
        let mut opened = g(
            "cxpulse_support_tickets_opened",
            "Tickets opened in the window.",
        );
        let summary = |name, help| Family::new(name, Kind::Summary, help);
        let mut fr_q = summary(
            "cxpulse_support_first_response_quantile_seconds",
            "Nearest-rank quantiles (HdrHistogram, 3 significant digits) of first response times whose reply is in the window.",
        );
        let mut res_q = summary(
            "cxpulse_support_resolution_quantile_seconds",
            "Nearest-rank quantiles (HdrHistogram, 3 significant digits) of resolution times whose resolution is in the window.",
        );
        let mut breaches = g(
            "cxpulse_sla_breaches",
            "SLA breach instants (deadlines passed unmet) in the window.",
        );
        let mut breach_ratio = g(
            "cxpulse_sla_breach_ratio",
            "Breaches / (breaches + targets met), each decided in the window.",
        );
        let mut decisions = g(
            "cxpulse_sla_decisions",
            "Targets decided in the window (breached + met): the denominator of cxpulse_sla_breach_ratio.",
        );
        let mut reopened = g(
            "cxpulse_support_reopened",
            "Reopened actions in the window.",
        );
        for (w, win) in ctx.prm.windows.iter().enumerate() {
            let s = &self.sla[w];
            reopened.push(&[("window", &win.name)], s.reopened);
            for p in Priority::ALL {
                let pl = p.as_str();
                opened.push(
                    &[("window", &win.name), ("priority", pl)],
                    s.opened[p.index()],
                );
                for kind in KINDS {
                    let l = [
                        ("window", win.name.as_str()),
                        ("priority", pl),
                        ("kind", kind.as_str()),
                    ];
                    let b = s.decided(kind, true)[p.index()];
                    let met = s.decided(kind, false)[p.index()];
                    breaches.push(&l, b);
                    decisions.push(&l, b + met);
                    breach_ratio.push_ratio(&l, b, b + met);
                }
                push_quantiles(&mut fr_q, &win.name, pl, &self.fr_times[w][p.index()]);
                push_quantiles(&mut res_q, &win.name, pl, &self.res_times[w][p.index()]);
            }
        }
        let fr_hist = histogram_family(
            ctx,
            "cxpulse_support_first_response_seconds",
            "First response times (opened to first agent reply), all time.",
            &self.fr_hist,
        );
        let res_hist = histogram_family(
            ctx,
            "cxpulse_support_resolution_seconds",
            "Resolution times (running clock, pauses excluded), all time.",
            &self.res_hist,
        );

        let mut open = g(
            "cxpulse_support_open_tickets",
            "Tickets opened and not resolved (or reopened since) at T.",
        );
        let mut breaching = g(
            "cxpulse_support_open_tickets_breaching",
            "Open tickets past a deadline: no first reply and first-response deadline passed; never resolved and resolution deadline passed.",
        );
        let mut at_risk = g(
            "cxpulse_support_tickets_at_risk",
            "Open tickets whose target is undecided and at least sla.at_risk_share of it is used.",
        );
        for p in Priority::ALL {
            let pi = p.index();
            open.push(&[("priority", p.as_str())], self.open[pi]);
            for (k, kind) in KINDS.iter().enumerate() {
                let l = [("priority", p.as_str()), ("kind", kind.as_str())];
                breaching.push(&l, self.breaching[pi][k]);
                at_risk.push(&l, self.at_risk[pi][k]);
            }
        }
        out.extend([
            opened,
            fr_hist,
            res_hist,
            fr_q,
            res_q,
            breaches,
            decisions,
            breach_ratio,
            reopened,
            open,
            breaching,
            at_risk,
        ]);
    }
}

fn push_quantiles(f: &mut Family, window: &str, priority: &str, times: &[Millis]) {
    let Ok(mut h) = Histogram::<u64>::new(3) else {
        return;
    };
    // i128: a sum of durations up to the year 9999 cannot overflow it.
    let mut sum_ms = 0i128;
    for &took in times {
        // Durations are >= 0 by construction (applied in time order).
        let _ = h.record(took.max(0) as u64);
        sum_ms += i128::from(took);
    }
    if h.is_empty() {
        for (_, ql) in QUANTILES {
            f.push_absent(&[("window", window), ("priority", priority), ("quantile", ql)]);
        }
        let l = [("window", window), ("priority", priority)];
        f.push_absent_named(format!("{}_sum", f.name), &l);
        f.push_absent_named(format!("{}_count", f.name), &l);
        return;
    }
    for (q, ql) in QUANTILES {
        let ms = h.value_at_quantile(q);
        f.push(
            &[("window", window), ("priority", priority), ("quantile", ql)],
            ms as f64 / 1000.0,
        );
    }
    let l = [("window", window), ("priority", priority)];
    f.push_named(format!("{}_sum", f.name), &l, sum_ms as f64 / 1000.0);
    f.push_named(format!("{}_count", f.name), &l, h.len() as f64);
}

fn histogram_family(
    ctx: &Ctx<'_>,
    name: &'static str,
    help: &'static str,
    hists: &[SecondsHistogram; 4],
) -> Family {
    let mut f = Family::new(name, Kind::Histogram, help);
    let bounds = &ctx.prm.hist_bounds;
    for p in Priority::ALL {
        let SecondsHistogram { counts, sum, count } = &hists[p.index()];
        let (sum, count) = (*sum, *count);
        let pl = p.as_str();
        for (b, c) in bounds.iter().zip(counts) {
            f.push_named(
                format!("{name}_bucket"),
                &[("priority", pl), ("le", &format_value(*b))],
                *c as f64,
            );
        }
        f.push_named(
            format!("{name}_bucket"),
            &[("priority", pl), ("le", "+Inf")],
            count as f64,
        );
        f.push_named(format!("{name}_sum"), &[("priority", pl)], sum);
        f.push_named(format!("{name}_count"), &[("priority", pl)], count as f64);
    }
    f
}

#[cfg(test)]
mod tests;
