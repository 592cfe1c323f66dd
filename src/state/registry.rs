//! Channel labels, capped at `max_channels` in order of first appearance.

use std::collections::HashMap;

/// Index of a channel label. 0 = `unknown`, 1 = `other`, then registered values.
pub type ChannelId = u16;
pub const UNKNOWN: ChannelId = 0;
pub const OTHER: ChannelId = 1;

#[derive(Clone, Debug)]
pub struct ChannelRegistry {
    cap: usize,
    names: Vec<String>,
    ids: HashMap<String, ChannelId>,
    /// Whether some value was mapped to `other` because the cap was reached.
    pub overflowed: bool,
}

impl ChannelRegistry {
    pub fn new(cap: usize) -> Self {
        ChannelRegistry {
            cap,
            names: vec!["unknown".into(), "other".into()],
            ids: HashMap::new(),
            overflowed: false,
        }
    }

    /// The label for `value`, registering it while there is room.
    pub fn resolve(&mut self, value: &str) -> ChannelId {
        match value {
            "unknown" => return UNKNOWN,
            "other" => return OTHER,
            _ => {}
        }
        if let Some(&id) = self.ids.get(value) {
            return id;
        }
        if self.ids.len() >= self.cap {
            self.overflowed = true;
            return OTHER;
        }
        let id = self.names.len() as ChannelId;
        self.names.push(value.to_string());
        self.ids.insert(value.to_string(), id);
        id
    }

    pub fn name(&self, id: ChannelId) -> &str {
        &self.names[id as usize]
    }

    /// Registered values in order of first appearance (not `unknown`/`other`).
    pub fn registered(&self) -> impl Iterator<Item = ChannelId> + '_ {
        2..self.names.len() as ChannelId
    }

    pub fn len_with_specials(&self) -> usize {
        self.names.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seventeenth_channel_becomes_other() {
        let mut r = ChannelRegistry::new(16);
        let ids: Vec<_> = (0..17).map(|i| r.resolve(&format!("c{i}"))).collect();
        assert_eq!(ids[0], 2);
        assert_eq!(ids[15], 17);
        assert_eq!(ids[16], OTHER);
        assert!(r.overflowed);
        assert_eq!(r.resolve("c3"), 5);
        assert_eq!(r.name(5), "c3");
    }
}
