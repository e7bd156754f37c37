//! The fast hasher of the per-worker maps keyed by integers (neighbours, local addresses,
//! listeners): the management crate's, which validation uses too.

pub use mgmt::fasthash::{fast_map, FastHasher, FastMap};
