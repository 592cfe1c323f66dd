//! The test harness of the engine and metric family tests: a config from
//! TOML, events offered one by one, series looked up by name and labels.
//! Values in the tests are computed by hand from METRICS.md.

pub(crate) use std::borrow::Cow;

pub(crate) use crate::config::Config;
pub(crate) use crate::engine::{Engine, Outcome};
pub(crate) use crate::event::{
    Event, EventBody, Millis, Priority, Ratings, ReferralAction, SupportAction,
};
pub(crate) use crate::export::Family;

/// 2026-01-01T00:00:00Z.
pub(crate) const BASE: Millis = 1_767_225_600_000;
pub(crate) const MIN: Millis = 60_000;
pub(crate) const HOUR: Millis = 3_600_000;
pub(crate) const DAY: Millis = 86_400_000;

pub(crate) fn cfg(toml: &str) -> Config {
    Config::from_toml_str(toml, "test.toml", std::iter::empty()).expect("valid test config")
}

pub(crate) fn engine(toml: &str) -> Engine {
    Engine::new(cfg(toml).params().expect("valid test config"))
}

pub(crate) struct E<'a> {
    pub(crate) eng: &'a mut Engine,
    pub(crate) n: u64,
}

impl E<'_> {
    pub(crate) fn offer(
        &mut self,
        ts: Millis,
        user: Option<&str>,
        body: EventBody<'static>,
    ) -> Outcome {
        self.n += 1;
        let id = format!("e{}", self.n);
        self.offer_id(&id, ts, user, body)
    }

    pub(crate) fn offer_id(
        &mut self,
        id: &str,
        ts: Millis,
        user: Option<&str>,
        body: EventBody<'static>,
    ) -> Outcome {
        let ev = Event {
            event_id: Cow::Owned(id.to_string()),
            ts,
            user_id: user.map(|u| Cow::Owned(u.to_string())),
            body,
        };
        self.eng.offer(0, &ev, None)
    }
}

pub(crate) fn signup(channel: Option<&str>, referrer: Option<&str>) -> EventBody<'static> {
    EventBody::Signup {
        channel: channel.map(|c| Cow::Owned(c.to_string())),
        campaign: None,
        referrer_id: referrer.map(|c| Cow::Owned(c.to_string())),
        country: None,
    }
}

pub(crate) fn deposit() -> EventBody<'static> {
    EventBody::Deposit { amount_usd: 100.0 }
}

pub(crate) fn trade(fee: f64) -> EventBody<'static> {
    EventBody::Trade {
        notional_usd: fee * 1000.0,
        fee_usd: fee,
    }
}

pub(crate) fn spend(channel: &str, usd: f64) -> EventBody<'static> {
    EventBody::Spend {
        channel: Cow::Owned(channel.to_string()),
        amount_usd: usd,
    }
}

pub(crate) fn support(
    ticket: &str,
    action: SupportAction,
    priority: Option<Priority>,
) -> EventBody<'static> {
    EventBody::Support {
        ticket_id: Cow::Owned(ticket.to_string()),
        action,
        priority,
        ratings: Ratings::default(),
    }
}

pub(crate) fn rated(csat: Option<u8>, ces: Option<u8>, nps: Option<u8>) -> EventBody<'static> {
    EventBody::Support {
        ticket_id: Cow::Borrowed("survey"),
        action: SupportAction::Rated,
        priority: None,
        ratings: Ratings { csat, ces, nps },
    }
}

pub(crate) fn value(fams: &[Family], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    fams.iter()
        .flat_map(|f| f.samples.iter())
        .find(|s| {
            s.name == name
                && s.labels.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(a, b)| a == k && b == v))
        })
        .map(|s| s.value)
}

pub(crate) fn v(fams: &[Family], name: &str, labels: &[(&str, &str)]) -> f64 {
    value(fams, name, labels).unwrap_or_else(|| panic!("series {name}{labels:?} is absent"))
}

pub(crate) const ZERO_LATENESS: &str =
    "[engine]\nallowed_lateness = \"0s\"\nwindows = [\"1h\", \"24h\"]\n";
