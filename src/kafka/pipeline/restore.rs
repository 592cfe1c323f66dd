//! Start-up with checkpoints on: restore the engine from the newest good
//! checkpoint, by `checkpoint.on_corrupt` (see [`crate::kafka`]).

use crate::checkpoint::{CheckpointStore, SavedOffset};
use crate::config::{Config, OnCorrupt};
use crate::engine::Engine;
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
    if c.dir.is_empty() {
        return Ok((Engine::new(cfg), None));
    }
    let store = CheckpointStore::new(&c.dir, c.keep);
    let loaded = match c.on_corrupt {
        OnCorrupt::Previous => store.load_latest(),
        OnCorrupt::Empty | OnCorrupt::Fail => store.load_newest(),
    };
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
        Ok((Engine::new(cfg), Some((store, Vec::new()))))
    };
    if c.on_corrupt == OnCorrupt::Empty
        && let Some((path, e)) = loaded.rejected.first()
    {
        return empty(StartingEmpty::NewestRefused { path, error: e }, store);
    }
    match loaded.checkpoint {
        Some((path, cp)) => match Engine::restore(cfg, &cp.engine) {
            Ok(engine) => {
                let offsets = cp
                    .offsets
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
                Ok((engine, Some((store, cp.offsets))))
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
            Ok((Engine::new(cfg), Some((store, Vec::new()))))
        }
    }
}
