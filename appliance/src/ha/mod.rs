//! High availability: an active/standby pair that keeps every established flow when a
//! node dies.
//!
//! - [`record`]: what a worker exports about one flow (creation with its translation,
//!   TCP state change, end, bulk copy), the unit of flow-state sync;
//! - `wire`: the sync link's datagrams (heartbeats, flow batches, acknowledgements, bulk
//!   requests), authenticated with HMAC-SHA256 under the pair's shared key;
//! - `reliable`: sequence numbers, acknowledgements and resends over the sync link;
//! - `role`: which node is active: heartbeats, takeover after missed ones, precedence,
//!   preemption, and the data-path rule that ends a split brain.
//!
//! The sync thread (`daemon::ha`) drives them; workers only push and pop records on
//! lock-free queues.

pub mod link;
pub mod record;
pub mod reliable;
pub mod role;
pub mod wire;
