//! Packet views (placeholder while the wire module is written).
