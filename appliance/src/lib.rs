//! The privlink data plane: packet views, lookup, Maglev, NAT and flows, workers, and the
//! `privlinkd` daemon around them.
//!
//! Everything between receiving a burst and transmitting it ([`pipeline`] and what it
//! uses) is pure Rust over byte slices, unit-tested and benchmarked without DPDK; only
//! [`worker`] and [`daemon`] touch DPDK, through the safe `dpdk-bindings` crate.
#![deny(unsafe_code)]

pub mod control;
pub mod counters;
pub mod daemon;
pub mod fasthash;
pub mod flow;
pub mod frame;
pub mod limits;
pub mod maglev;
pub mod neighbour;
pub mod pipeline;
pub mod preflight;
pub mod rcu;
#[doc(hidden)]
pub mod scenario;
pub mod snapshot;
pub mod snat;
pub mod supervisor;
pub mod wire;
pub mod worker;
