//! Start-up with checkpoints on: restore the engine from the newest good
//! checkpoint, by `checkpoint.on_corrupt` (see [`crate::kafka`]).

use crate::checkpoint::{CheckpointError, CheckpointStore, SavedOffset};
use crate::config::{Config, OnCorrupt, StoreKind};
use crate::engine::Engine;
use crate::engine::snapshot::SnapshotError;
use crate::event::time::format_rfc3339;
use crate::telemetry::{self, StartingEmpty};

/// Checkpoints on: the store and the offsets of the restored checkpoint.
pub type Restored = (CheckpointStore, Vec<SavedOffset>);

/// Restores the engine from the newest good checkpoint (checkpoints on).
/// Returns the engine and, with checkpoints on, the store and the restored
/// offsets (empty when starting without a checkpoint). Errors when
/// `checkpoint.on_corrupt = "fail"` and a checkpoint file is refused.
pub fn restore(cfg: &Config) -> anyhow::Result<(Engine, Option<Restored>)> {
    let c = &cfg.checkpoint;
    let prm = cfg.params()?;
    if c.store != StoreKind::Dir || c.dir.is_empty() {
        return Ok((Engine::new(prm), None));
    }
    let store = CheckpointStore::new(&c.dir, c.keep);
    // A file whose engine state does not validate is refused like one with
    // a bad checksum; a snapshot of another `engine.bucket` is a config
    // change, not a bad file (older files would not fit either).
    let fall_back = c.on_corrupt == OnCorrupt::Previous;
    let loaded = store.load_accepting(fall_back, |cp| {
        match Engine::restore(prm.clone(), &cp.engine) {
            Ok(engine) => Ok(Ok((engine, cp.offsets))),
            Err(e @ SnapshotError::BucketChanged { .. }) => Ok(Err(e)),
            Err(e) => Err(CheckpointError::State(e)),
        }
    });
    for (path, e) in &loaded.rejected {
        telemetry::CheckpointRefused { path, error: e }.emit();
    }
    let fail = c.on_corrupt == OnCorrupt::Fail;
    if fail && let Some((path, e)) = loaded.rejected.first() {
        anyhow::bail!(
            "checkpoint {} is unusable ({e}) and checkpoint.on_corrupt = \"fail\"",
            path.display()
        );
    }
    let empty = |why: StartingEmpty<'_>, store: CheckpointStore| {
        why.emit();
        Ok((Engine::new(prm.clone()), Some((store, Vec::new()))))
    };
    if c.on_corrupt == OnCorrupt::Empty
        && let Some((path, e)) = loaded.rejected.first()
    {
        return empty(StartingEmpty::NewestRefused { path, error: e }, store);
    }
    match loaded.checkpoint {
        Some((path, restored)) => match restored {
            Ok((engine, saved)) => {
                let offsets = saved
                    .iter()
                    .map(|o| format!("{}/{}@{}", o.topic, o.partition, o.next_offset))
                    .collect::<Vec<_>>()
                    .join(", ");
                telemetry::CheckpointRestored {
                    path: &path,
                    offsets: &offsets,
                    clock: &engine.clock().map(format_rfc3339).unwrap_or_default(),
                }
                .emit();
                Ok((engine, Some((store, saved))))
            }
            Err(e) => {
                if fail {
                    anyhow::bail!(
                        "checkpoint {} cannot be restored ({e}) and checkpoint.on_corrupt = \"fail\"",
                        path.display()
                    );
                }
                empty(
                    StartingEmpty::NotRestorable {
                        path: &path,
                        error: &e,
                    },
                    store,
                )
            }
        },
        None if !loaded.rejected.is_empty() => {
            let dir = store.dir().to_path_buf();
            empty(
                StartingEmpty::NoneUsable {
                    dir: &dir,
                    refused: loaded.rejected.len(),
                },
                store,
            )
        }
        None => {
            telemetry::NoCheckpointYet { dir: store.dir() }.emit();
            Ok((Engine::new(prm.clone()), Some((store, Vec::new()))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{self, Checkpoint};
    use crate::event::Decoder;

    /// 2026-01-05T10:00:00Z.
    const JAN5_10H: i64 = 1_767_607_200_000;

    fn config(dir: &std::path::Path, on_corrupt: OnCorrupt) -> Config {
        let mut cfg = Config::default();
        cfg.checkpoint.store = StoreKind::Dir;
        cfg.checkpoint.dir = dir.display().to_string();
        cfg.checkpoint.on_corrupt = on_corrupt;
        cfg
    }

    /// Writes a checkpoint of an engine whose clock is `clock`, with input
    /// position `in/0@next_offset`; returns its path.
    fn write(cfg: &Config, clock: i64, next_offset: i64) -> std::path::PathBuf {
        let mut engine = Engine::new(cfg.params().expect("valid config"));
        let d = Decoder::new(&cfg.mapping, 1 << 16, false);
        let msg = format!(
            r#"{{"event_id":"e{clock}","type":"deposit","ts":{clock},"user_id":"u1","amount_usd":1}}"#
        );
        let ev = d.decode(msg.as_bytes(), None).expect("a valid event");
        engine.offer(0, &ev, None);
        let store = CheckpointStore::new(&cfg.checkpoint.dir, cfg.checkpoint.keep);
        let cp = Checkpoint {
            offsets: vec![SavedOffset {
                topic: "in".into(),
                partition: 0,
                next_offset,
            }],
            engine: engine.snapshot(),
        };
        store.write(&cp).expect("checkpoint written").path
    }

    /// A good checkpoint (clock 10:00:00, in/0@42), then a newer one (clock
    /// 10:01:00, in/0@50) whose last byte is flipped.
    fn good_then_corrupt(cfg: &Config) {
        write(cfg, JAN5_10H, 42);
        let newer = write(cfg, JAN5_10H + 60_000, 50);
        let mut bytes = std::fs::read(&newer).expect("readable");
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&newer, bytes).expect("writable");
    }

    fn offsets(restored: &Option<Restored>) -> Vec<i64> {
        let (_, saved) = restored.as_ref().expect("checkpoints on");
        saved.iter().map(|o| o.next_offset).collect()
    }

    #[test]
    fn without_a_checkpoint_dir_the_engine_starts_empty_with_checkpoints_off() {
        let (engine, restored) = restore(&Config::default()).expect("no error");
        assert_eq!(engine.clock(), None);
        assert!(restored.is_none());
    }

    #[test]
    fn an_empty_dir_starts_empty_with_checkpoints_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (engine, restored) = restore(&config(dir.path(), OnCorrupt::Fail)).expect("no error");
        assert_eq!(engine.clock(), None);
        assert!(offsets(&restored).is_empty());
    }

    #[test]
    fn on_corrupt_previous_restores_the_older_good_checkpoint() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = config(dir.path(), OnCorrupt::Previous);
        good_then_corrupt(&cfg);
        let (engine, restored) = restore(&cfg).expect("no error");
        assert_eq!(engine.clock(), Some(JAN5_10H));
        assert_eq!(offsets(&restored), [42]);
    }

    #[test]
    fn on_corrupt_empty_starts_empty_from_the_committed_offsets() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = config(dir.path(), OnCorrupt::Empty);
        good_then_corrupt(&cfg);
        let (engine, restored) = restore(&cfg).expect("no error");
        assert_eq!(engine.clock(), None);
        assert!(offsets(&restored).is_empty());
    }

    /// A newer file whose checksum is right but whose engine state does not
    /// validate (a user index past the users held) is refused like a bad
    /// checksum: `previous` restores the older good one.
    #[test]
    fn a_checkpoint_with_invalid_state_is_refused_like_a_corrupt_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = config(dir.path(), OnCorrupt::Previous);
        write(&cfg, JAN5_10H, 42);
        let newer = write(&cfg, JAN5_10H + 60_000, 50);
        let cp = checkpoint::decode(&std::fs::read(&newer).expect("readable")).expect("good");
        let mut engine = Engine::restore(cfg.params().expect("valid"), &cp.engine).expect("good");
        let tickets = &mut engine.parts.get_mut(&0).expect("partition 0").tickets;
        let i = tickets.intern("t1", JAN5_10H);
        tickets.list[i as usize].user = 5;
        let crafted = Checkpoint {
            offsets: cp.offsets,
            engine: engine.snapshot(),
        };
        std::fs::write(&newer, checkpoint::encode(&crafted)).expect("writable");
        let (engine, restored) = restore(&cfg).expect("no error");
        assert_eq!(engine.clock(), Some(JAN5_10H));
        assert_eq!(offsets(&restored), [42]);
        // `fail` refuses to start, naming the file and what is wrong.
        let cfg = config(dir.path(), OnCorrupt::Fail);
        let e = restore(&cfg).err().expect("an error").to_string();
        assert!(e.contains(&newer.display().to_string()), "{e}");
        assert!(e.contains("ticket's user 5, but only 1 are held"), "{e}");
    }

    #[test]
    fn on_corrupt_fail_refuses_to_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = config(dir.path(), OnCorrupt::Fail);
        good_then_corrupt(&cfg);
        let e = restore(&cfg).err().expect("an error");
        assert!(
            e.to_string().contains("checkpoint.on_corrupt = \"fail\""),
            "{e}"
        );
    }
}
