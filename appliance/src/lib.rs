//! The privlink data plane: packet views, lookup, Maglev, NAT and flows, workers.
#![deny(unsafe_code)]

pub mod wire;
