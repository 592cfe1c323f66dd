//! Events of fleet totals (see `docs/fleet.md`): the partials topic, the
//! folding duty, records refused on the partials topic, and totals held back.

use std::time::Duration;

use tracing::{info, warn};

use super::{RATE_LIMIT, metrics};

/// A record on the partials topic was skipped: not a partial this version
/// can read. Counted by reason; logged (at most once a minute per reason and
/// key), without the record's value.
pub struct PartialRefused<'a> {
    /// Short stable code: `bad_key`, `unknown_topic`, `bad_magic`,
    /// `bad_version`, `truncated`, `undecodable`, `stale_epoch` (an older
    /// ownership epoch than the partial kept: a zombie's).
    pub reason: &'a str,
    /// The record's key as text (lossy), its partition and offset.
    pub key: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub detail: &'a dyn std::fmt::Display,
}

impl PartialRefused<'_> {
    pub fn emit(self) {
        metrics()
            .fleet_partials_refused
            .with_label_values(&[self.reason])
            .inc();
        let key = format!("partials-refused/{}/{}", self.reason, self.key);
        if RATE_LIMIT.allow(&key, Duration::from_secs(60)) {
            warn!(
                reason = self.reason,
                key = self.key,
                partition = self.partition,
                offset = self.offset,
                detail = %self.detail,
                "a record on the partials topic was skipped (not counted into the fleet totals)"
            );
        }
    }
}

/// This instance took up or gave up the folding duty (it owns input
/// partition 0 of the first input topic, or no longer does).
pub struct FolderDuty<'a> {
    pub active: bool,
    pub partials_topic: &'a str,
}

impl FolderDuty<'_> {
    pub fn emit(self) {
        metrics().fleet_folder.set(i64::from(self.active));
        if self.active {
            info!(
                partials_topic = self.partials_topic,
                "this instance now publishes the fleet totals (it owns input partition 0)"
            );
        } else {
            info!(
                partials_topic = self.partials_topic,
                "this instance no longer publishes the fleet totals"
            );
        }
    }
}

/// The folder could not publish totals this interval (a partition without a
/// partial yet, the partials topic not read to its end yet, the input
/// topics' partition counts unknown, or a fold refused).
pub struct TotalsHeldBack<'a> {
    pub why: &'a str,
    /// Input partitions with no partial (0 when that is not why).
    pub missing: usize,
}

impl TotalsHeldBack<'_> {
    pub fn emit(self) {
        metrics().fleet_partitions_missing.set(self.missing as i64);
        if RATE_LIMIT.allow("fleet-totals-held-back", Duration::from_secs(30)) {
            info!(
                why = self.why,
                missing = self.missing,
                "fleet totals not published this interval"
            );
        }
    }
}

/// The folder published totals: every expected partition had a partial.
pub struct TotalsFolded {
    pub partitions: usize,
    /// Newest minus oldest T of the partials folded, ms.
    pub spread_ms: i64,
}

impl TotalsFolded {
    pub fn emit(self) {
        let m = metrics();
        m.fleet_partitions_missing.set(0);
        m.fleet_partials_spread_seconds
            .set(self.spread_ms.max(0) as f64 / 1000.0);
        tracing::debug!(
            partitions = self.partitions,
            spread_ms = self.spread_ms,
            "fleet totals folded"
        );
    }
}

/// The partials topic could not be created or checked, or its consumer
/// failed; retried.
pub struct PartialsTopicTrouble<'a> {
    pub what: &'a str,
    pub topic: &'a str,
    pub error: &'a dyn std::fmt::Display,
}

impl PartialsTopicTrouble<'_> {
    pub fn emit(self) {
        let key = format!("partials-topic/{}", self.what);
        if RATE_LIMIT.allow(&key, Duration::from_secs(30)) {
            warn!(
                what = self.what,
                topic = self.topic,
                error = %self.error,
                "partials topic trouble; retrying"
            );
        }
    }
}

/// The partials topic was created (it was missing).
pub struct PartialsTopicCreated<'a> {
    pub topic: &'a str,
}

impl PartialsTopicCreated<'_> {
    pub fn emit(self) {
        info!(topic = self.topic, "partials topic created");
    }
}
