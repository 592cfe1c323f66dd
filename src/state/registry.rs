//! Channel labels of one input partition: the first `max_channels` channel
//! values seen in the partition, each with the partition clock when it was
//! first seen; later values are `other`. Which values become labels over
//! several partitions is decided at export ([`crate::metrics::Partial::finish`]).

use std::collections::HashMap;

use crate::event::Millis;

/// Index of a channel in one partition's registry. 0 = `unknown`, 1 = `other`, then registered values.
pub type ChannelId = u16;
pub const UNKNOWN: ChannelId = 0;
pub const OTHER: ChannelId = 1;

#[derive(Clone, Debug)]
pub struct ChannelRegistry {
    names: Vec<String>,
    /// Per id (specials included, 0 for them): the partition clock when the
    /// value was first seen (the largest event time of the partition then,
    /// so it grows with the registration order).
    first_seen: Vec<Millis>,
    ids: HashMap<String, ChannelId>,
    /// Registered values not listed in `engine.channels`.
    others: usize,
    /// Whether some value was mapped to `other` because the cap was reached.
    pub overflowed: bool,
}

impl Default for ChannelRegistry {
    fn default() -> Self {
        ChannelRegistry {
            names: vec!["unknown".into(), "other".into()],
            first_seen: vec![0, 0],
            ids: HashMap::new(),
            others: 0,
            overflowed: false,
        }
    }
}

impl ChannelRegistry {
    /// The id of `value`, registering it (first seen at `seen`) while there
    /// is room: values `listed` (`engine.channels`) always, the others while
    /// fewer than `max - listed.len()` of them are registered (and never
    /// more than `max` in all).
    #[inline]
    pub fn resolve(
        &mut self,
        value: &str,
        seen: Millis,
        listed: &[String],
        max: usize,
    ) -> ChannelId {
        match value {
            "unknown" => return UNKNOWN,
            "other" => return OTHER,
            _ => {}
        }
        if let Some(&id) = self.ids.get(value) {
            return id;
        }
        self.register(value, seen, listed, max)
    }

    #[cold]
    fn register(&mut self, value: &str, seen: Millis, listed: &[String], max: usize) -> ChannelId {
        let is_listed = listed.iter().any(|l| l == value);
        // Never more than `max` values in all (a config changed since a
        // snapshot cannot make the registry one a restore refuses).
        let full = self.names.len() - 2 >= max
            || (!is_listed && self.others >= max.saturating_sub(listed.len()));
        if full {
            self.overflowed = true;
            return OTHER;
        }
        self.push(value.to_string(), seen, is_listed);
        (self.names.len() - 1) as ChannelId
    }

    fn push(&mut self, value: String, seen: Millis, is_listed: bool) {
        let id = self.names.len() as ChannelId;
        self.ids.insert(value.clone(), id);
        self.names.push(value);
        self.first_seen.push(seen);
        if !is_listed {
            self.others += 1;
        }
    }

    /// Rebuilds a registry from its values in id order (from id 2) and
    /// their first-seen times, as snapshotted; `None` if a value is a
    /// special one, held twice, or there are more than `max` of them.
    pub fn rebuild(
        values: Vec<(String, Millis)>,
        overflowed: bool,
        listed: &[String],
        max: usize,
    ) -> Option<ChannelRegistry> {
        if values.len() > max {
            return None;
        }
        let mut r = ChannelRegistry::default();
        for (name, seen) in values {
            if name == "unknown" || name == "other" || r.ids.contains_key(&name) {
                return None;
            }
            let is_listed = listed.contains(&name);
            r.push(name, seen, is_listed);
        }
        r.overflowed = overflowed;
        Some(r)
    }

    pub fn name(&self, id: ChannelId) -> &str {
        &self.names[id as usize]
    }

    /// When the value of `id` was first seen (0 for `unknown` and `other`).
    pub fn first_seen(&self, id: ChannelId) -> Millis {
        self.first_seen[id as usize]
    }

    /// Registered values in order of first appearance (not `unknown`/`other`).
    pub fn registered(&self) -> impl Iterator<Item = ChannelId> + '_ {
        2..self.names.len() as ChannelId
    }

    pub fn len_with_specials(&self) -> usize {
        self.names.len()
    }

    pub fn heap_bytes(&self) -> usize {
        self.names.iter().map(|n| n.capacity() * 2 + 80).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seventeenth_channel_becomes_other() {
        let mut r = ChannelRegistry::default();
        let ids: Vec<_> = (0..17)
            .map(|i| r.resolve(&format!("c{i}"), 100 + i, &[], 16))
            .collect();
        assert_eq!(ids[0], 2);
        assert_eq!(ids[15], 17);
        assert_eq!(ids[16], OTHER);
        assert!(r.overflowed);
        assert_eq!(r.resolve("c3", 999, &[], 16), 5);
        assert_eq!(r.name(5), "c3");
        assert_eq!(r.first_seen(5), 103);
    }

    #[test]
    fn listed_channels_always_get_a_slot() {
        // max 3, one listed: room for 2 others; the listed one comes last and still registers.
        let listed = ["paid".to_string()];
        let mut r = ChannelRegistry::default();
        assert_eq!(r.resolve("a", 1, &listed, 3), 2);
        assert_eq!(r.resolve("b", 2, &listed, 3), 3);
        assert_eq!(r.resolve("c", 3, &listed, 3), OTHER);
        assert_eq!(r.resolve("paid", 4, &listed, 3), 4);
        assert_eq!(r.len_with_specials(), 5);
        assert!(r.overflowed);
        // Listed after the registry filled up (a config changed since): other.
        let mut full = ChannelRegistry::default();
        assert_eq!(full.resolve("a", 1, &[], 2), 2);
        assert_eq!(full.resolve("b", 1, &[], 2), 3);
        assert_eq!(full.resolve("paid", 2, &listed, 2), OTHER);
    }

    #[test]
    fn rebuild_refuses_specials_repeats_and_too_many() {
        let v = |names: &[&str]| names.iter().map(|n| (n.to_string(), 5)).collect::<Vec<_>>();
        assert!(ChannelRegistry::rebuild(v(&["a", "b"]), false, &[], 2).is_some());
        assert!(ChannelRegistry::rebuild(v(&["a", "b", "c"]), false, &[], 2).is_none());
        assert!(ChannelRegistry::rebuild(v(&["a", "a"]), false, &[], 4).is_none());
        assert!(ChannelRegistry::rebuild(v(&["other"]), false, &[], 4).is_none());
    }
}
