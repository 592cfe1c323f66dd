//! Support tickets: opened from an activity, then played out step by step
//! from the plan drawn when they open.

use super::customers::NO_SLOT;
use super::{Generator, Job, LineKey};
use crate::event::{Priority, SupportAction};
use crate::r#gen::model::{self, TicketPlan};

pub(super) struct TicketState {
    pub(super) id: u64,
    pub(super) user: u64,
    /// The user's slot when the ticket opened (`NO_SLOT` for none): a bad
    /// rating marks that user if the slot still holds them.
    pub(super) user_slot: u32,
    pub(super) plan: TicketPlan,
    pub(super) pos: u8,
}

impl Generator {
    pub(super) fn open_ticket(&mut self, at: i64, user: u64, user_slot: u32) {
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

    pub(super) fn ticket_step(&mut self, slot: u32) -> LineKey {
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
            SupportAction::Opened if priority != Priority::Normal || self.rng.chance(0.8) => {
                self.line.str_field("priority", priority.as_str());
            }
            SupportAction::Rated => {
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
}
