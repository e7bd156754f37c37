//! One flow's state as the sync link carries it. Node-independent: it names the flow by
//! its two keys (attachment indices come from the configuration order, the same on both
//! nodes), never by the handles or table slots of the node that made it; the receiver
//! finds endpoint, service, listener and target in its own snapshot.

use crate::graph::nat64::Side6;
use crate::tables::flow::FlowKey;

/// What happened to the flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RecordKind {
    /// A new flow, with its translation.
    Create = 1,
    /// Its TCP state (or the acknowledgements a RST would need) changed.
    Update = 2,
    /// It ended (expired, reset, closed, ended by a change).
    End = 3,
    /// A copy of a live flow, for a peer that joins.
    Bulk = 4,
}

impl RecordKind {
    pub const fn from_u8(v: u8) -> Option<RecordKind> {
        match v {
            1 => Some(RecordKind::Create),
            2 => Some(RecordKind::Update),
            3 => Some(RecordKind::End),
            4 => Some(RecordKind::Bulk),
            _ => None,
        }
    }
}

/// One flow event. 54 bytes on the wire ([`FlowRecord::WIRE_LEN`]), 64 more with an IPv6
/// consumer's side ([`FlowRecord::SIDE6_LEN`], flagged in the kind byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowRecord {
    pub kind: RecordKind,
    /// The worker that owns the flow (its SNAT port is from that worker's range).
    pub worker: u8,
    /// `TcpState` as its index (`TcpState::index`); 0 for other protocols.
    pub tcp: u8,
    /// `Flow::wscale`.
    pub wscale: u8,
    /// Consumer-side and provider-side keys: the whole translation.
    pub fwd: FlowKey,
    pub rev: FlowKey,
    pub ack_fwd: u32,
    pub ack_rev: u32,
    pub win_fwd: u16,
    pub win_rev: u16,
    /// How long ago it was created and last seen, ms (clocks of two nodes differ; ages
    /// do not).
    pub age_ms: u32,
    pub idle_ms: u32,
    /// An IPv6 consumer's and its endpoint's addresses, on the records that create a NAT64 flow
    /// (`Create`, `Bulk`): the receiver folds the address under its own seed, so the
    /// forward key's source in this record means nothing to it. (Its `Update` and `End`
    /// records are found by the provider-side key, which both nodes share.)
    pub side6: Option<Side6>,
}

/// The kind byte's flag for a record carrying [`FlowRecord::side6`].
const SIDE6_FLAG: u8 = 0x80;

impl FlowRecord {
    pub const WIRE_LEN: usize = 4 + 2 * KEY_LEN + 4 + 4 + 2 + 2 + 4 + 4;
    /// Consumer address, endpoint address, and a NAT66 flow's target and SNAT address
    /// (zero for NAT64).
    pub const SIDE6_LEN: usize = 4 * 16;

    /// Its length on the wire.
    #[inline]
    pub fn wire_len(&self) -> usize {
        Self::WIRE_LEN
            + if self.side6.is_some() {
                Self::SIDE6_LEN
            } else {
                0
            }
    }

    /// Appends the record to `out`, big-endian.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let kind = self.kind as u8 | if self.side6.is_some() { SIDE6_FLAG } else { 0 };
        out.extend_from_slice(&[kind, self.worker, self.tcp, self.wscale]);
        encode_key(&self.fwd, out);
        encode_key(&self.rev, out);
        out.extend_from_slice(&self.ack_fwd.to_be_bytes());
        out.extend_from_slice(&self.ack_rev.to_be_bytes());
        out.extend_from_slice(&self.win_fwd.to_be_bytes());
        out.extend_from_slice(&self.win_rev.to_be_bytes());
        out.extend_from_slice(&self.age_ms.to_be_bytes());
        out.extend_from_slice(&self.idle_ms.to_be_bytes());
        if let Some(s) = &self.side6 {
            for a in [s.consumer, s.endpoint, s.target, s.snat] {
                out.extend_from_slice(&a.to_be_bytes());
            }
        }
    }

    /// The record at the front of `b` and its length; `None` if it is short, its kind
    /// unknown.
    pub fn decode(b: &[u8]) -> Option<(FlowRecord, usize)> {
        let side6 = match b.first() {
            Some(k) if k & SIDE6_FLAG != 0 => {
                let s = b.get(Self::WIRE_LEN..Self::WIRE_LEN + Self::SIDE6_LEN)?;
                let a = |i: usize| -> Option<u128> {
                    Some(u128::from_be_bytes(s.get(i..i + 16)?.try_into().ok()?))
                };
                Some(Side6 {
                    consumer: a(0)?,
                    endpoint: a(16)?,
                    target: a(32)?,
                    snat: a(48)?,
                })
            }
            _ => None,
        };
        let b = b.get(..Self::WIRE_LEN)?;
        let u32_at = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u16_at = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
        let k = 4 + 2 * KEY_LEN;
        let r = FlowRecord {
            kind: RecordKind::from_u8(b[0] & !SIDE6_FLAG)?,
            worker: b[1],
            tcp: b[2],
            wscale: b[3],
            fwd: decode_key(&b[4..4 + KEY_LEN]),
            rev: decode_key(&b[4 + KEY_LEN..k]),
            ack_fwd: u32_at(k),
            ack_rev: u32_at(k + 4),
            win_fwd: u16_at(k + 8),
            win_rev: u16_at(k + 10),
            age_ms: u32_at(k + 12),
            idle_ms: u32_at(k + 16),
            side6,
        };
        Some((r, r.wire_len()))
    }
}

const KEY_LEN: usize = 15;

fn encode_key(k: &FlowKey, out: &mut Vec<u8>) {
    out.extend_from_slice(&k.src_ip.to_be_bytes());
    out.extend_from_slice(&k.dst_ip.to_be_bytes());
    out.extend_from_slice(&k.src_port.to_be_bytes());
    out.extend_from_slice(&k.dst_port.to_be_bytes());
    out.extend_from_slice(&k.vpc.to_be_bytes());
    out.push(k.proto);
}

fn decode_key(b: &[u8]) -> FlowKey {
    FlowKey {
        src_ip: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        dst_ip: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        src_port: u16::from_be_bytes([b[8], b[9]]),
        dst_port: u16::from_be_bytes([b[10], b[11]]),
        vpc: u16::from_be_bytes([b[12], b[13]]),
        proto: b[14],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(kind: RecordKind) -> FlowRecord {
        FlowRecord {
            kind,
            worker: 3,
            tcp: 2,
            wscale: 0x7f,
            fwd: FlowKey {
                src_ip: 0x0a01_000a,
                dst_ip: 0x0a01_0064,
                src_port: 41000,
                dst_port: 80,
                vpc: 0,
                proto: 6,
            },
            rev: FlowKey {
                src_ip: 0x0a02_000b,
                dst_ip: 0x0a02_0064,
                src_port: 8080,
                dst_port: 20001,
                vpc: 1,
                proto: 6,
            },
            ack_fwd: 5001,
            ack_rev: 1001,
            win_fwd: 512,
            win_rev: 1024,
            age_ms: 12_345,
            idle_ms: 17,
            side6: None,
        }
    }

    fn side() -> Side6 {
        Side6 {
            consumer: 0xfd00_00c1_0000_0000_0000_0000_0000_0010,
            endpoint: 0xfd00_00c1_0000_0000_0000_0000_0000_0064,
            target: 0xfd00_00b1_0000_0000_0000_0000_0000_0011,
            snat: 0xfd00_00b1_0000_0000_0000_0000_0000_0100,
        }
    }

    #[test]
    fn records_round_trip_at_their_wire_length() {
        for kind in [
            RecordKind::Create,
            RecordKind::Update,
            RecordKind::End,
            RecordKind::Bulk,
        ] {
            let r = sample(kind);
            let mut b = Vec::new();
            r.encode(&mut b);
            assert_eq!(b.len(), FlowRecord::WIRE_LEN);
            assert_eq!(FlowRecord::decode(&b), Some((r, FlowRecord::WIRE_LEN)));
            // With an IPv6 consumer's side: 32 bytes more, flagged in the kind byte.
            let r6 = FlowRecord {
                side6: Some(side()),
                ..r
            };
            let mut b = Vec::new();
            r6.encode(&mut b);
            assert_eq!(b.len(), FlowRecord::WIRE_LEN + FlowRecord::SIDE6_LEN);
            assert_eq!(b[0] & 0x80, 0x80);
            assert_eq!(FlowRecord::decode(&b), Some((r6, b.len())));
        }
    }

    #[test]
    fn an_ipv6_side_cut_short_is_refused() {
        let r = FlowRecord {
            side6: Some(side()),
            ..sample(RecordKind::Create)
        };
        let mut b = Vec::new();
        r.encode(&mut b);
        assert_eq!(FlowRecord::decode(&b).map(|(_, n)| n), Some(b.len()));
        for n in [FlowRecord::WIRE_LEN, b.len() - 1] {
            assert_eq!(FlowRecord::decode(&b[..n]), None, "{n} bytes");
        }
    }

    #[test]
    fn short_or_unknown_records_are_refused() {
        let mut b = Vec::new();
        sample(RecordKind::Create).encode(&mut b);
        assert_eq!(FlowRecord::decode(&b[..b.len() - 1]), None);
        b[0] = 9;
        assert_eq!(FlowRecord::decode(&b), None);
    }
}
