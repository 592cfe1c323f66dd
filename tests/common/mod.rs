//! Shared harness for integration tests and benches: a real Kafka-compatible
//! broker (tansu, in-memory storage) on a loopback port, `cxpulse run` as a
//! child process, Prometheus text, generated input, and one builder for
//! cxpulse config files.
//!
//! Use it from an integration test file with `mod common;`, from a bench
//! with `#[path = "../tests/common/mod.rs"] mod common;`. Every public item
//! of the modules is also reachable as `common::NAME`.
//!
//! - [`broker`]: [`Tansu`] (start, topics, produce, consume, pause, restart),
//!   [`OffsetReader`] (a group's committed offsets), [`send`];
//! - [`process`]: [`CxRun`] (`cxpulse run` as a child), [`free_port`],
//!   [`free_addr`], [`http_get`], [`spawn_watchdog`], [`signal`], logs;
//! - [`prom`]: Prometheus text ([`series`], [`value`], [`sum`],
//!   [`engine_series`], [`series_key`], [`differences`], ...);
//! - [`input`]: [`SplitMix`], [`generated`] lines of `cxpulse gen`'s model;
//! - [`config`]: [`CxConfig`], the config file builder;
//! - [`fleet`]: several instances in one group: a topic dumped per
//!   partition ([`dump_partitions`]), the records so far ([`Produced`]), [`sum_series`],
//!   [`owned_partitions`], [`fold_output`], [`scrape_at_equal_clocks`];
//! - [`browser`]: [`Browser`], headless chromium over the DevTools pipe
//!   (DOM, console errors, screenshots);
//! - [`tools`]: where `cxpulse`, tansu, promtool, Prometheus and the deploy
//!   validators are.
//!
//! Tools are found through environment variables that `scripts/setup-tools.sh`
//! writes to `.tools/env` (`scripts/test.sh` sources it):
//! `CXPULSE_TANSU_BIN`, `CXPULSE_PROMTOOL`, ... A test that needs a tool and
//! cannot find it panics: it fails, it never skips.
#![allow(dead_code, unused_imports)]

pub mod broker;
pub mod browser;
pub mod config;
pub mod fleet;
pub mod input;
pub mod process;
pub mod prom;
pub mod secure;
pub mod tools;
pub mod web;

pub use broker::*;
pub use browser::*;
pub use config::*;
pub use fleet::*;
pub use input::*;
pub use process::*;
pub use prom::*;
pub use tools::*;
