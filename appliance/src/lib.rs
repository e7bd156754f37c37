//! The privlink data plane, laid out the way a packet meets it:
//!
//! - [`wire`]: checked views of packet headers (no panics on any input);
//! - [`graph`]: the packet path of one worker, pure Rust over [`graph::frame::Frame`]s;
//! - [`tables`]: what the packet path looks things up in: the published snapshot of the
//!   object model, the flow table, neighbours, SNAT ports, Maglev, per-consumer limits;
//! - [`health`]: target health checks: the checker (probes, thresholds, states) that
//!   decides which targets take new flows, and its link to the workers;
//! - [`ha`]: the active/standby pair: flow-state sync records, the sync link, roles;
//! - [`daemon`]: `privlinkd` itself: EAL and ports, worker threads and their supervision,
//!   the management API that turns requests into published snapshots.
//!
//! Everything in `wire`, `graph` and `tables` is pure Rust over byte slices, unit-tested
//! and benchmarked without DPDK; only [`daemon`] touches DPDK, through the safe
//! `dpdk-bindings` crate.
#![deny(unsafe_code)]

pub mod daemon;
pub mod graph;
pub mod ha;
pub mod health;
#[doc(hidden)]
pub mod scenario;
pub mod tables;
pub mod wire;
