//! The tables the packet path reads and writes. The snapshot is the management thread's
//! immutable view of the object model, swapped whole; everything else is owned by one
//! worker (or, for neighbours, shared behind a sequence lock) and sized at start.

pub mod fasthash;
pub mod flow;
pub mod fragments;
pub mod limits;
pub mod maglev;
pub mod neighbour;
pub mod snapshot;
pub mod snat;
pub mod vhash;
