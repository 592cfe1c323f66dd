//! Support and SLAs: tickets opened, first-response and resolution times
//! (histograms and windowed quantiles), breaches and breach ratio, reopened,
//! open, breaching and at-risk tickets.

use hdrhistogram::Histogram;

use super::Ctx;
use crate::engine::SlaKind;
use crate::engine::partition::MISC_REOPENED;
use crate::engine::partition::{SLA_OPENED, SecondsHistogram, TimeLog, sla_decision};
use crate::engine::tickets::Decision;
use crate::engine::users::NEVER;
use crate::event::Priority;
use crate::export::{Family, Kind, format_value};

const QUANTILES: [(f64, &str); 3] = [(0.5, "0.5"), (0.9, "0.9"), (0.99, "0.99")];
const KINDS: [SlaKind; 2] = [SlaKind::FirstResponse, SlaKind::Resolution];

pub fn export(ctx: &Ctx<'_>, out: &mut Vec<Family>) {
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
    for win in &ctx.prm.windows {
        let (from, to) = ctx.range(win);
        let s = ctx.sum(from, to, |p| &p.sla);
        let m = ctx.sum(from, to, |p| &p.misc);
        reopened.push(&[("window", &win.name)], m[MISC_REOPENED]);
        let (from_ms, to_ms) = (from * ctx.prm.bucket, to * ctx.prm.bucket);
        for p in Priority::ALL {
            let pl = p.as_str();
            opened.push(
                &[("window", &win.name), ("priority", pl)],
                s[SLA_OPENED + p.index()],
            );
            for kind in KINDS {
                let l = [
                    ("window", win.name.as_str()),
                    ("priority", pl),
                    ("kind", kind.as_str()),
                ];
                let b = s[sla_decision(p, kind, true)];
                let met = s[sla_decision(p, kind, false)];
                breaches.push(&l, b);
                decisions.push(&l, b + met);
                breach_ratio.push_ratio(&l, b, b + met);
            }
            let logs = |f: fn(&crate::engine::partition::Partition) -> &[TimeLog; 4]| {
                ctx.parts.iter().map(move |part| &f(part)[p.index()])
            };
            push_quantiles(
                &mut fr_q,
                &win.name,
                pl,
                logs(|x| &x.fr_times),
                from_ms,
                to_ms,
            );
            push_quantiles(
                &mut res_q,
                &win.name,
                pl,
                logs(|x| &x.res_times),
                from_ms,
                to_ms,
            );
        }
    }
    let fr_hist = histogram_family(
        ctx,
        "cxpulse_support_first_response_seconds",
        "First response times (opened to first agent reply), all time.",
        |p| &p.fr_hist,
    );
    let res_hist = histogram_family(
        ctx,
        "cxpulse_support_resolution_seconds",
        "Resolution times (running clock, pauses excluded), all time.",
        |p| &p.res_hist,
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
    let mut n_open = [0.0; 4];
    let mut n_breaching = [[0.0; 2]; 4];
    let mut n_risk = [[0.0; 2]; 4];
    let t = ctx.t;
    for part in &ctx.parts {
        for tk in &part.tickets.list {
            if tk.opened == NEVER || !tk.open {
                continue;
            }
            let pi = tk.priority.index();
            n_open[pi] += 1.0;
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
                n_breaching[pi][0] += 1.0;
            }
            if !tk.resolved_ever && running >= res_target {
                n_breaching[pi][1] += 1.0;
            }
            let share = ctx.prm.at_risk_share;
            if tk.fr == Decision::Undecided && elapsed as f64 >= share * fr_target as f64 {
                n_risk[pi][0] += 1.0;
            }
            if tk.res == Decision::Undecided && running as f64 >= share * res_target as f64 {
                n_risk[pi][1] += 1.0;
            }
        }
    }
    for p in Priority::ALL {
        let pi = p.index();
        open.push(&[("priority", p.as_str())], n_open[pi]);
        for (k, kind) in KINDS.iter().enumerate() {
            let l = [("priority", p.as_str()), ("kind", kind.as_str())];
            breaching.push(&l, n_breaching[pi][k]);
            at_risk.push(&l, n_risk[pi][k]);
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

fn push_quantiles<'a>(
    f: &mut Family,
    window: &str,
    priority: &str,
    logs: impl Iterator<Item = &'a TimeLog>,
    from_ms: i64,
    to_ms: i64,
) {
    let Ok(mut h) = Histogram::<u64>::new(3) else {
        return;
    };
    let mut sum_ms = 0i64;
    for log in logs {
        let start = log.partition_point(|&(at, _)| at < from_ms);
        for &(at, took) in log.range(start..) {
            if at >= to_ms {
                break;
            }
            // Durations are >= 0 by construction (applied in time order).
            let _ = h.record(took.max(0) as u64);
            sum_ms += took;
        }
    }
    if h.is_empty() {
        for (_, ql) in QUANTILES {
            f.push_absent(&[("window", window), ("priority", priority), ("quantile", ql)]);
        }
        let l = [("window", window), ("priority", priority)];
        f.push_named(format!("{}_sum", f.name), &l, f64::NAN);
        f.push_named(format!("{}_count", f.name), &l, f64::NAN);
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
    pick: fn(&crate::engine::partition::Partition) -> &[SecondsHistogram; 4],
) -> Family {
    let mut f = Family::new(name, Kind::Histogram, help);
    let bounds = &ctx.prm.hist_bounds;
    for p in Priority::ALL {
        let mut counts = vec![0u64; bounds.len()];
        let (mut sum, mut count) = (0.0, 0u64);
        for part in &ctx.parts {
            let h = &pick(part)[p.index()];
            for (c, x) in counts.iter_mut().zip(&h.counts) {
                *c += x;
            }
            sum += h.sum;
            count += h.count;
        }
        let pl = p.as_str();
        for (b, c) in bounds.iter().zip(&counts) {
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
