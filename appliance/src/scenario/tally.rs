//! Totals of what the fuzz targets reached, in the pipeline's own counters, written to a
//! file while they run.

use std::path::PathBuf;

use serde_json::{json, Value};

use super::Stats;
use crate::graph::counters::{Counters, DropReason};

/// Totals over many scenarios (or one long-lived world), written as JSON to the file
/// `PRIVLINK_FUZZ_COUNTERS` names every `PRIVLINK_FUZZ_COUNTERS_EVERY` inputs (default
/// 5000) and at least every two seconds: what the fuzz targets reached, in the
/// pipeline's own counters.
#[derive(Debug)]
pub struct Tally {
    path: Option<PathBuf>,
    every: u64,
    inputs: u64,
    counters: Counters,
    stats: Stats,
    /// Per counter name: the inputs after which it was non-zero.
    reaching: Vec<(String, u64)>,
    last_write: std::time::Instant,
}

impl Tally {
    pub fn from_env() -> Tally {
        let path = std::env::var_os("PRIVLINK_FUZZ_COUNTERS").map(PathBuf::from);
        let every = std::env::var("PRIVLINK_FUZZ_COUNTERS_EVERY")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(5000u64)
            .max(1);
        Tally {
            path,
            every,
            inputs: 0,
            counters: Counters::default(),
            stats: Stats::default(),
            reaching: Vec::new(),
            last_write: std::time::Instant::now(),
        }
    }

    /// Whether a file is being written (else nothing needs to be tallied).
    pub fn enabled(&self) -> bool {
        self.path.is_some()
    }

    /// Adds one scenario's counters and statistics.
    pub fn add(&mut self, counters: &Counters, stats: &Stats) {
        self.inputs += 1;
        self.counters.add(counters);
        self.stats.add(stats);
        let named = counters
            .named()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .chain(
                DropReason::ALL
                    .iter()
                    .map(|r| (format!("drop.{}", r.label()), counters.dropped(*r))),
            )
            .chain(
                stats
                    .named()
                    .into_iter()
                    .map(|(k, v)| (format!("harness.{k}"), v)),
            );
        for (i, (name, v)) in named.enumerate() {
            if i >= self.reaching.len() {
                self.reaching.push((name, 0));
            }
            if v > 0 {
                self.reaching[i].1 += 1;
            }
        }
        self.maybe_write();
    }

    /// Sets the totals of a world that lives across inputs (one more input).
    pub fn set(&mut self, counters: &Counters, stats: &Stats) {
        self.inputs += 1;
        self.counters = counters.clone();
        self.stats = stats.clone();
        self.maybe_write();
    }

    fn maybe_write(&mut self) {
        if self.path.is_some()
            && (self.inputs.is_multiple_of(self.every) || self.last_write.elapsed().as_secs() >= 2)
        {
            self.last_write = std::time::Instant::now();
            // A failed write is tried again later; the fuzzer must not stop for it.
            let _ = self.write();
        }
    }

    pub fn to_json(&self) -> Value {
        let mut counters = serde_json::Map::new();
        for (k, v) in self.counters.named() {
            counters.insert(k.into(), v.into());
        }
        let drops: serde_json::Map<String, Value> = DropReason::ALL
            .iter()
            .map(|r| (r.label().to_owned(), self.counters.dropped(*r).into()))
            .collect();
        counters.insert("drops".into(), Value::Object(drops));
        let stats: serde_json::Map<String, Value> = self
            .stats
            .named()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.into()))
            .collect();
        let reaching: serde_json::Map<String, Value> = self
            .reaching
            .iter()
            .map(|(k, v)| (k.clone(), (*v).into()))
            .collect();
        json!({
            "inputs": self.inputs,
            "counters": counters,
            "harness": stats,
            "inputs_reaching": reaching,
        })
    }

    /// Writes the totals (a temporary file renamed over the target, so a reader never
    /// sees half a file).
    pub fn write(&self) -> std::io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let tmp = path.with_extension("tmp");
        let text = serde_json::to_string_pretty(&self.to_json()).unwrap_or_default();
        std::fs::write(&tmp, text + "\n")?;
        std::fs::rename(&tmp, path)
    }
}
