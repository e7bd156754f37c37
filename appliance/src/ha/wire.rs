//! The sync link's datagrams, authenticated with HMAC-SHA256 under the pair's shared key.
//!
//! ```text
//!  0      4   5    6    7          15                       len-32      len
//!  +------+---+----+----+----------+--------- ... ----------+-----------+
//!  | PLHA | 1 |kind|node|   boot   |  body (by kind)         |  tag (32) |
//!  +------+---+----+----+----------+--------- ... ----------+-----------+
//! ```
//!
//! Big-endian throughout. `node` is the sender's index in the configured node list,
//! `boot` a random number the sender draws at its start; the tag is HMAC-SHA256 over every
//! byte before it. Bodies ([`Message`]), each of a fixed length but `Flows`:
//! - `Heartbeat`: counter u64, role u8 (1 active, 2 standby), priority u8, acked u64,
//!   in_sync u8 (0 or 1): 19 bytes;
//! - `Flows`: seq u64, count u16, then `count` [`FlowRecord`]s of
//!   [`FlowRecord::WIRE_LEN`] bytes (or [`FlowRecord::SIDE6_LEN`] more, an IPv6
//!   consumer's): at most [`MAX_RECORDS`] and [`RECORD_BYTES`], so the datagram fits
//!   [`MAX_DATAGRAM`];
//! - `Ack`: acked u64, has_nack u8 (0 or 1), nack u64 (0 without one): 17 bytes;
//! - `BulkRequest`: empty; `BulkDone` and `Resync`: seq u64.
//!
//! # What decoding guarantees
//!
//! [`decode`] never panics, on any bytes. It checks the length, the magic and the version
//! (cheap, and the answer a mismatched peer wants in a counter), then the tag, in constant
//! time, and only then looks at the kind and the body: nothing of an unauthenticated body
//! is parsed. A datagram that decodes was made by a holder of the key, but not necessarily
//! just now nor by the peer: the key is shared, so a node's own datagram reflected back
//! verifies too ([`decode_from`] refuses another index than the peer's), and an old one
//! replayed verifies as well (the heartbeat counter, the boot and the flow seq are what
//! [`super::role`] and [`super::reliable`] refuse replays by).
//!
//! This module does no I/O and decides nothing: it builds and checks bytes.

use core::fmt;
use core::ops::Range;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::record::FlowRecord;
use super::role::Role;

type HmacSha256 = Hmac<Sha256>;

pub const MAGIC: [u8; 4] = *b"PLHA";
/// 2: an IPv6 consumer's side is 32 bytes (its MAC is resolved by neighbour discovery);
/// 3: 64, with a NAT66 flow's target and SNAT address.
pub const VERSION: u8 = 3;
/// Magic, version, kind, node, boot.
pub const HEADER_LEN: usize = field::BODY;
pub const TAG_LEN: usize = 32;
/// The largest datagram sent or accepted: under any path MTU of 1500 with room for a
/// tunnel or two (IPv4 + UDP take 28).
pub const MAX_DATAGRAM: usize = 1400;
/// The most flow records one `Flows` datagram carries: 24 of 54 bytes.
pub const MAX_RECORDS: usize =
    (MAX_DATAGRAM - HEADER_LEN - field::flows::RECORDS - TAG_LEN) / FlowRecord::WIRE_LEN;
/// The bytes of records one `Flows` datagram carries at most (fewer records when some
/// carry an IPv6 side).
pub const RECORD_BYTES: usize = MAX_RECORDS * FlowRecord::WIRE_LEN;

/// Offsets: of the header in the datagram, of each body's fields in the body.
mod field {
    use core::ops::Range;

    pub const MAGIC: Range<usize> = 0..4;
    pub const VERSION: usize = 4;
    pub const KIND: usize = 5;
    pub const NODE: usize = 6;
    pub const BOOT: Range<usize> = 7..15;
    pub const BODY: usize = 15;

    pub mod heartbeat {
        use core::ops::Range;
        pub const COUNTER: Range<usize> = 0..8;
        pub const ROLE: usize = 8;
        pub const PRIORITY: usize = 9;
        pub const ACKED: Range<usize> = 10..18;
        pub const IN_SYNC: usize = 18;
        pub const LEN: usize = 19;
    }

    pub mod flows {
        use core::ops::Range;
        pub const SEQ: Range<usize> = 0..8;
        pub const COUNT: Range<usize> = 8..10;
        pub const RECORDS: usize = 10;
    }

    pub mod ack {
        use core::ops::Range;
        pub const ACKED: Range<usize> = 0..8;
        pub const HAS_NACK: usize = 8;
        pub const NACK: Range<usize> = 9..17;
        pub const LEN: usize = 17;
    }

    /// `BulkDone` and `Resync`.
    pub mod seq {
        use core::ops::Range;
        pub const SEQ: Range<usize> = 0..8;
        pub const LEN: usize = 8;
    }
}

/// A datagram's kind, its byte on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    Heartbeat = 1,
    Flows = 2,
    Ack = 3,
    BulkRequest = 4,
    BulkDone = 5,
    Resync = 6,
}

impl Kind {
    pub const fn from_u8(v: u8) -> Option<Kind> {
        match v {
            1 => Some(Kind::Heartbeat),
            2 => Some(Kind::Flows),
            3 => Some(Kind::Ack),
            4 => Some(Kind::BulkRequest),
            5 => Some(Kind::BulkDone),
            6 => Some(Kind::Resync),
            _ => None,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Heartbeat => "heartbeat",
            Kind::Flows => "flows",
            Kind::Ack => "ack",
            Kind::BulkRequest => "bulk request",
            Kind::BulkDone => "bulk done",
            Kind::Resync => "resync",
        }
    }
}

/// Who sent a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header {
    /// The sender's index in the configured node list.
    pub node: u8,
    /// Random per process start of the sender.
    pub boot: u64,
}

/// A datagram's body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Once per heartbeat interval, both ways.
    Heartbeat {
        /// Increments per heartbeat of this boot (a replay repeats an old one).
        counter: u64,
        role: Role,
        priority: u8,
        /// The highest contiguous flow seq received from the peer.
        acked: u64,
        /// The sender holds a complete copy of the peer's flows.
        in_sync: bool,
    },
    /// One datagram of the sender's flow stream.
    Flows { seq: u64, records: Vec<FlowRecord> },
    /// The receiver's progress; `nack`: the seq it expected when it saw a later one.
    Ack { acked: u64, nack: Option<u64> },
    /// The sender wants a full copy of the receiver's flows.
    BulkRequest,
    /// The full copy ends with this flow seq.
    BulkDone { seq: u64 },
    /// The sender's stream goes on at `seq`: what the receiver expected below it is not
    /// coming (the sender's queue overflowed, or it was reset for a new receiver boot).
    Resync { seq: u64 },
}

impl Message {
    pub fn kind(&self) -> Kind {
        match self {
            Message::Heartbeat { .. } => Kind::Heartbeat,
            Message::Flows { .. } => Kind::Flows,
            Message::Ack { .. } => Kind::Ack,
            Message::BulkRequest => Kind::BulkRequest,
            Message::BulkDone { .. } => Kind::BulkDone,
            Message::Resync { .. } => Kind::Resync,
        }
    }

    /// Its datagram's length, header and tag included.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN
            + TAG_LEN
            + match self {
                Message::Heartbeat { .. } => field::heartbeat::LEN,
                Message::Flows { records, .. } => {
                    field::flows::RECORDS + records.iter().map(FlowRecord::wire_len).sum::<usize>()
                }
                Message::Ack { .. } => field::ack::LEN,
                Message::BulkRequest => 0,
                Message::BulkDone { .. } | Message::Resync { .. } => field::seq::LEN,
            }
    }
}

/// Why a datagram was refused. `Copy`, allocation-free; [`WireError::index`] is a dense
/// counter index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WireError {
    /// "datagram of N bytes is shorter than a header and a tag"
    Short { len: usize },
    /// "datagram of N bytes is longer than 1400"
    TooLong { len: usize },
    /// "not a sync datagram (bad magic)"
    BadMagic,
    /// "sync protocol version N, this node speaks 2"
    BadVersion(u8),
    /// "bad authentication tag (wrong key, or altered)"
    BadTag,
    /// "unknown datagram kind N"
    UnknownKind(u8),
    /// "malformed KIND body": a length or a field value that kind does not allow.
    Malformed(Kind),
    /// "flows datagram claims N records, at most 24 fit"
    TooMany { count: u16 },
    /// "flow record N of the datagram is malformed" (an unknown record kind)
    BadRecord { index: u16 },
    /// "datagram from node N, not the peer": reflected, or a misconfigured third node.
    WrongNode { node: u8 },
}

impl WireError {
    pub const COUNT: usize = 10;

    pub const fn index(self) -> usize {
        match self {
            WireError::Short { .. } => 0,
            WireError::TooLong { .. } => 1,
            WireError::BadMagic => 2,
            WireError::BadVersion(_) => 3,
            WireError::BadTag => 4,
            WireError::UnknownKind(_) => 5,
            WireError::Malformed(_) => 6,
            WireError::TooMany { .. } => 7,
            WireError::BadRecord { .. } => 8,
            WireError::WrongNode { .. } => 9,
        }
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            WireError::Short { len } => {
                write!(
                    f,
                    "datagram of {len} bytes is shorter than a header and a tag"
                )
            }
            WireError::TooLong { len } => {
                write!(f, "datagram of {len} bytes is longer than {MAX_DATAGRAM}")
            }
            WireError::BadMagic => f.write_str("not a sync datagram (bad magic)"),
            WireError::BadVersion(v) => {
                write!(f, "sync protocol version {v}, this node speaks {VERSION}")
            }
            WireError::BadTag => f.write_str("bad authentication tag (wrong key, or altered)"),
            WireError::UnknownKind(k) => write!(f, "unknown datagram kind {k}"),
            WireError::Malformed(k) => write!(f, "malformed {} body", k.as_str()),
            WireError::TooMany { count } => {
                write!(
                    f,
                    "flows datagram claims {count} records, at most {MAX_RECORDS} fit"
                )
            }
            WireError::BadRecord { index } => {
                write!(f, "flow record {index} of the datagram is malformed")
            }
            WireError::WrongNode { node } => write!(f, "datagram from node {node}, not the peer"),
        }
    }
}

impl std::error::Error for WireError {}

/// HMAC under `key`.
fn keyed(key: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length (a longer one is hashed, a shorter one padded), and
    // `hmac` never returns its `InvalidLength` for it.
    HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length")
}

/// The datagram for `msg` from `hdr`, tagged under `key`.
///
/// A `Flows` message with more than [`MAX_RECORDS`] records (build them with
/// [`FlowsBuilder`]) makes a datagram longer than [`MAX_DATAGRAM`], which [`decode`]
/// refuses.
pub fn encode(msg: &Message, hdr: &Header, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.encoded_len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&[VERSION, msg.kind() as u8, hdr.node]);
    out.extend_from_slice(&hdr.boot.to_be_bytes());
    match msg {
        Message::Heartbeat {
            counter,
            role,
            priority,
            acked,
            in_sync,
        } => {
            out.extend_from_slice(&counter.to_be_bytes());
            out.extend_from_slice(&[role_to_u8(*role), *priority]);
            out.extend_from_slice(&acked.to_be_bytes());
            out.push(u8::from(*in_sync));
        }
        Message::Flows { seq, records } => {
            out.extend_from_slice(&seq.to_be_bytes());
            let count = u16::try_from(records.len()).unwrap_or(u16::MAX);
            out.extend_from_slice(&count.to_be_bytes());
            for r in records {
                r.encode(&mut out);
            }
        }
        Message::Ack { acked, nack } => {
            out.extend_from_slice(&acked.to_be_bytes());
            out.push(u8::from(nack.is_some()));
            out.extend_from_slice(&nack.unwrap_or(0).to_be_bytes());
        }
        Message::BulkRequest => {}
        Message::BulkDone { seq } | Message::Resync { seq } => {
            out.extend_from_slice(&seq.to_be_bytes());
        }
    }
    let tag = keyed(key).chain_update(&out).finalize().into_bytes();
    out.extend_from_slice(&tag);
    out
}

/// Checks and parses a datagram. See the module doc for the order of the checks.
pub fn decode(buf: &[u8], key: &[u8]) -> Result<(Header, Message), WireError> {
    let len = buf.len();
    if len < HEADER_LEN + TAG_LEN {
        return Err(WireError::Short { len });
    }
    if len > MAX_DATAGRAM {
        return Err(WireError::TooLong { len });
    }
    let (signed, tag) = buf.split_at(len - TAG_LEN);
    if signed.get(field::MAGIC) != Some(&MAGIC[..]) {
        return Err(WireError::BadMagic);
    }
    let version = byte(signed, field::VERSION).ok_or(WireError::Short { len })?;
    if version != VERSION {
        return Err(WireError::BadVersion(version));
    }
    keyed(key)
        .chain_update(signed)
        .verify_slice(tag)
        .map_err(|_| WireError::BadTag)?;

    let kind_byte = byte(signed, field::KIND).ok_or(WireError::Short { len })?;
    let kind = Kind::from_u8(kind_byte).ok_or(WireError::UnknownKind(kind_byte))?;
    let hdr = Header {
        node: byte(signed, field::NODE).ok_or(WireError::Short { len })?,
        boot: be_u64(signed, field::BOOT).ok_or(WireError::Short { len })?,
    };
    let body = signed.get(field::BODY..).unwrap_or(&[]);
    Ok((hdr, parse_body(kind, body)?))
}

/// [`decode`], refusing a datagram whose `node` is not `peer`.
pub fn decode_from(buf: &[u8], key: &[u8], peer: u8) -> Result<(Header, Message), WireError> {
    let (hdr, msg) = decode(buf, key)?;
    if hdr.node != peer {
        return Err(WireError::WrongNode { node: hdr.node });
    }
    Ok((hdr, msg))
}

fn parse_body(kind: Kind, b: &[u8]) -> Result<Message, WireError> {
    let bad = WireError::Malformed(kind);
    let exact = |len: usize| if b.len() == len { Ok(()) } else { Err(bad) };
    match kind {
        Kind::Heartbeat => {
            use field::heartbeat as f;
            exact(f::LEN)?;
            Ok(Message::Heartbeat {
                counter: be_u64(b, f::COUNTER).ok_or(bad)?,
                role: byte(b, f::ROLE).and_then(role_from_u8).ok_or(bad)?,
                priority: byte(b, f::PRIORITY).ok_or(bad)?,
                acked: be_u64(b, f::ACKED).ok_or(bad)?,
                in_sync: byte(b, f::IN_SYNC).and_then(bool_from_u8).ok_or(bad)?,
            })
        }
        Kind::Flows => {
            use field::flows as f;
            let seq = be_u64(b, f::SEQ).ok_or(bad)?;
            let count = b
                .get(f::COUNT)
                .and_then(|c| <[u8; 2]>::try_from(c).ok())
                .map(u16::from_be_bytes)
                .ok_or(bad)?;
            if usize::from(count) > MAX_RECORDS {
                return Err(WireError::TooMany { count });
            }
            let bytes = b.get(f::RECORDS..).unwrap_or(&[]);
            if bytes.len() > RECORD_BYTES {
                return Err(bad);
            }
            let mut records = Vec::with_capacity(usize::from(count));
            let mut at = 0;
            for index in 0..count {
                let (r, len) = bytes
                    .get(at..)
                    .and_then(FlowRecord::decode)
                    .ok_or(WireError::BadRecord { index })?;
                records.push(r);
                at += len;
            }
            if at != bytes.len() {
                return Err(bad);
            }
            Ok(Message::Flows { seq, records })
        }
        Kind::Ack => {
            use field::ack as f;
            exact(f::LEN)?;
            let acked = be_u64(b, f::ACKED).ok_or(bad)?;
            let nack = be_u64(b, f::NACK).ok_or(bad)?;
            let nack = match byte(b, f::HAS_NACK) {
                Some(1) => Some(nack),
                Some(0) if nack == 0 => None,
                _ => return Err(bad),
            };
            Ok(Message::Ack { acked, nack })
        }
        Kind::BulkRequest => exact(0).map(|()| Message::BulkRequest),
        Kind::BulkDone | Kind::Resync => {
            exact(field::seq::LEN)?;
            let seq = be_u64(b, field::seq::SEQ).ok_or(bad)?;
            Ok(if kind == Kind::BulkDone {
                Message::BulkDone { seq }
            } else {
                Message::Resync { seq }
            })
        }
    }
}

fn byte(b: &[u8], at: usize) -> Option<u8> {
    b.get(at).copied()
}

fn be_u64(b: &[u8], at: Range<usize>) -> Option<u64> {
    let bytes: [u8; 8] = b.get(at)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

fn role_to_u8(role: Role) -> u8 {
    match role {
        Role::Active => 1,
        Role::Standby => 2,
    }
}

fn role_from_u8(v: u8) -> Option<Role> {
    match v {
        1 => Some(Role::Active),
        2 => Some(Role::Standby),
        _ => None,
    }
}

fn bool_from_u8(v: u8) -> Option<bool> {
    match v {
        0 => Some(false),
        1 => Some(true),
        _ => None,
    }
}

/// Packs records into `Flows` batches of at most [`MAX_RECORDS`] and [`RECORD_BYTES`],
/// as they come.
#[derive(Debug, Default)]
pub struct FlowsBuilder {
    records: Vec<FlowRecord>,
    bytes: usize,
}

impl FlowsBuilder {
    pub fn new() -> FlowsBuilder {
        FlowsBuilder::default()
    }

    /// Adds `record`; returns a full batch if there is one (the builder starts a new
    /// one): the batch before `record` if it did not fit, or the batch it filled.
    pub fn push(&mut self, record: FlowRecord) -> Option<Vec<FlowRecord>> {
        let before = (self.bytes + record.wire_len() > RECORD_BYTES).then(|| self.take_all());
        self.bytes += record.wire_len();
        self.records.push(record);
        let full =
            self.records.len() >= MAX_RECORDS || self.bytes + FlowRecord::WIRE_LEN > RECORD_BYTES;
        before.or_else(|| full.then(|| self.take_all()))
    }

    /// The batch so far, if it has any record: at the end of a poll, send what there is.
    pub fn flush(&mut self) -> Option<Vec<FlowRecord>> {
        (!self.records.is_empty()).then(|| self.take_all())
    }

    fn take_all(&mut self) -> Vec<FlowRecord> {
        self.bytes = 0;
        core::mem::replace(&mut self.records, Vec::with_capacity(MAX_RECORDS))
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ha::reliable::sample_record;
    use proptest::prelude::*;

    const KEY: &[u8] = b"the pair's shared key, 32 bytes!";
    const HDR: Header = Header {
        node: 1,
        boot: 0x0102_0304_0506_0708,
    };

    fn every_kind() -> Vec<Message> {
        vec![
            Message::Heartbeat {
                counter: 42,
                role: Role::Active,
                priority: 200,
                acked: 7,
                in_sync: true,
            },
            Message::Flows {
                seq: 9,
                records: (0..3).map(sample_record).collect(),
            },
            Message::Flows {
                seq: 10,
                records: Vec::new(),
            },
            Message::Ack {
                acked: 5,
                nack: Some(6),
            },
            Message::Ack {
                acked: 5,
                nack: None,
            },
            Message::BulkRequest,
            Message::BulkDone { seq: 77 },
            Message::Resync { seq: 78 },
        ]
    }

    /// Re-tags `buf` after a test changed it, so the body check is reached.
    fn retag(buf: &mut Vec<u8>) {
        buf.truncate(buf.len() - TAG_LEN);
        let tag = keyed(KEY).chain_update(&buf[..]).finalize().into_bytes();
        buf.extend_from_slice(&tag);
    }

    #[test]
    fn hmac_sha256_matches_rfc_4231_test_case_2() {
        let tag = keyed(b"Jefe")
            .chain_update(b"what do ya want for nothing?")
            .finalize()
            .into_bytes();
        let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn a_heartbeat_deconstructs_to_its_fields() {
        let msg = Message::Heartbeat {
            counter: 0x1112_1314_1516_1718,
            role: Role::Standby,
            priority: 0x99,
            acked: 0x2122_2324_2526_2728,
            in_sync: true,
        };
        let b = encode(&msg, &HDR, KEY);
        let expected_signed: &[u8] = &[
            b'P', b'L', b'H', b'A', 3, 1, 1, // magic, version, kind, node
            1, 2, 3, 4, 5, 6, 7, 8, // boot
            0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, // counter
            2, 0x99, // role, priority
            0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, // acked
            1,    // in_sync
        ];
        assert_eq!(&b[..b.len() - TAG_LEN], expected_signed);
        assert_eq!(b.len(), msg.encoded_len());
        assert_eq!(decode(&b, KEY), Ok((HDR, msg)));
    }

    #[test]
    fn an_ack_deconstructs_to_its_fields() {
        let b = encode(
            &Message::Ack {
                acked: 3,
                nack: Some(4),
            },
            &HDR,
            KEY,
        );
        assert_eq!(b[field::KIND], Kind::Ack as u8);
        assert_eq!(
            &b[HEADER_LEN..b.len() - TAG_LEN],
            &[0, 0, 0, 0, 0, 0, 0, 3, 1, 0, 0, 0, 0, 0, 0, 0, 4]
        );
    }

    #[test]
    fn every_kind_round_trips() {
        for msg in every_kind() {
            let b = encode(&msg, &HDR, KEY);
            assert_eq!(b.len(), msg.encoded_len(), "{msg:?}");
            assert_eq!(decode(&b, KEY), Ok((HDR, msg.clone())));
            assert_eq!(decode_from(&b, KEY, 1), Ok((HDR, msg)));
        }
    }

    #[test]
    fn a_datagram_from_another_node_is_refused_by_decode_from() {
        let b = encode(&Message::BulkRequest, &HDR, KEY);
        assert_eq!(
            decode_from(&b, KEY, 0),
            Err(WireError::WrongNode { node: 1 })
        );
    }

    #[test]
    fn short_long_magic_version_and_tag_are_checked() {
        let good = encode(&Message::BulkRequest, &HDR, KEY);
        assert_eq!(good.len(), HEADER_LEN + TAG_LEN);
        assert_eq!(
            decode(&good[..good.len() - 1], KEY),
            Err(WireError::Short { len: 46 })
        );
        assert_eq!(decode(&[], KEY), Err(WireError::Short { len: 0 }));
        let long = vec![0; MAX_DATAGRAM + 1];
        assert_eq!(decode(&long, KEY), Err(WireError::TooLong { len: 1401 }));

        let mut b = good.clone();
        b[0] = b'X';
        assert_eq!(decode(&b, KEY), Err(WireError::BadMagic));
        let mut b = good.clone();
        b[field::VERSION] = 1;
        assert_eq!(decode(&b, KEY), Err(WireError::BadVersion(1)));
        let mut b = good.clone();
        *b.last_mut().unwrap() ^= 1;
        assert_eq!(decode(&b, KEY), Err(WireError::BadTag));
        assert_eq!(decode(&good, b"another key"), Err(WireError::BadTag));
        // An empty key is a key like any other, and not the configured one.
        assert_eq!(decode(&good, b""), Err(WireError::BadTag));
    }

    #[test]
    fn every_way_a_body_can_be_malformed() {
        type Spoil = Box<dyn Fn(&mut Vec<u8>)>;
        let cases: Vec<(Message, Spoil, WireError)> = vec![
            (
                Message::BulkRequest,
                Box::new(|b| b[field::KIND] = 9),
                WireError::UnknownKind(9),
            ),
            (
                Message::BulkRequest,
                Box::new(|b| b.insert(HEADER_LEN, 0)),
                WireError::Malformed(Kind::BulkRequest),
            ),
            (
                every_kind()[0].clone(),
                Box::new(|b| b[HEADER_LEN + field::heartbeat::ROLE] = 3),
                WireError::Malformed(Kind::Heartbeat),
            ),
            (
                every_kind()[0].clone(),
                Box::new(|b| b[HEADER_LEN + field::heartbeat::IN_SYNC] = 2),
                WireError::Malformed(Kind::Heartbeat),
            ),
            (
                every_kind()[0].clone(),
                Box::new(|b| {
                    b.remove(HEADER_LEN);
                }),
                WireError::Malformed(Kind::Heartbeat),
            ),
            (
                every_kind()[3].clone(),
                Box::new(|b| b[HEADER_LEN + field::ack::HAS_NACK] = 2),
                WireError::Malformed(Kind::Ack),
            ),
            (
                every_kind()[4].clone(),
                Box::new(|b| b[HEADER_LEN + field::ack::NACK.end - 1] = 1),
                WireError::Malformed(Kind::Ack),
            ),
            (
                Message::BulkDone { seq: 1 },
                Box::new(|b| b.insert(HEADER_LEN, 0)),
                WireError::Malformed(Kind::BulkDone),
            ),
            (
                Message::Resync { seq: 1 },
                Box::new(|b| {
                    b.remove(HEADER_LEN);
                }),
                WireError::Malformed(Kind::Resync),
            ),
            (
                every_kind()[1].clone(),
                // A count of 2 over 3 records.
                Box::new(|b| b[HEADER_LEN + field::flows::COUNT.end - 1] = 2),
                WireError::Malformed(Kind::Flows),
            ),
            (
                every_kind()[1].clone(),
                Box::new(|b| b[HEADER_LEN + field::flows::COUNT.end - 1] = 25),
                WireError::TooMany { count: 25 },
            ),
            (
                every_kind()[1].clone(),
                // The second record's kind byte.
                Box::new(|b| b[HEADER_LEN + field::flows::RECORDS + FlowRecord::WIRE_LEN] = 0),
                WireError::BadRecord { index: 1 },
            ),
            (
                every_kind()[2].clone(),
                Box::new(|b| {
                    b.truncate(HEADER_LEN + 9);
                    b.extend_from_slice(&[0; TAG_LEN]);
                }),
                WireError::Malformed(Kind::Flows),
            ),
        ];
        for (msg, spoil, err) in cases {
            let mut b = encode(&msg, &HDR, KEY);
            spoil(&mut b);
            retag(&mut b);
            assert_eq!(decode(&b, KEY), Err(err), "{msg:?}");
        }
    }

    #[test]
    fn the_builder_packs_what_fits_in_a_datagram() {
        assert_eq!(MAX_RECORDS, 24);
        let mut builder = FlowsBuilder::new();
        let mut batches = Vec::new();
        for n in 0..50 {
            batches.extend(builder.push(sample_record(n)));
        }
        assert_eq!(builder.len(), 50 - 2 * MAX_RECORDS);
        batches.extend(builder.flush());
        assert!(builder.is_empty());
        assert_eq!(builder.flush(), None);
        let lens: Vec<usize> = batches.iter().map(Vec::len).collect();
        assert_eq!(lens, vec![MAX_RECORDS, MAX_RECORDS, 50 - 2 * MAX_RECORDS]);
        assert_eq!(
            batches.concat(),
            (0..50).map(sample_record).collect::<Vec<_>>()
        );

        let full = Message::Flows {
            seq: u64::MAX,
            records: batches[0].clone(),
        };
        let b = encode(&full, &HDR, KEY);
        assert!(b.len() <= MAX_DATAGRAM);
        assert_eq!(decode(&b, KEY), Ok((HDR, full)));
        // One more would not fit.
        let over = Message::Flows {
            seq: 1,
            records: (0..).take(MAX_RECORDS + 1).map(sample_record).collect(),
        };
        assert!(over.encoded_len() > MAX_DATAGRAM);
        assert_eq!(
            decode(&encode(&over, &HDR, KEY), KEY),
            Err(WireError::TooLong {
                len: over.encoded_len()
            })
        );
    }

    /// Records with an IPv6 consumer's side are longer: a datagram holds fewer, each
    /// batch still fits, and they decode back, mixed with plain ones, in order.
    #[test]
    fn records_with_an_ipv6_side_are_packed_by_their_bytes() {
        let with6 = |n: u32| FlowRecord {
            side6: n.is_multiple_of(2).then_some(crate::graph::nat64::Side6 {
                consumer: u128::from(n) << 64 | 0x10,
                endpoint: 0xfd00 << 112 | 0x64,
                target: if n.is_multiple_of(3) {
                    0
                } else {
                    0xfd01 << 112 | 0x11
                },
                snat: if n.is_multiple_of(3) {
                    0
                } else {
                    0xfd01 << 112 | 0x100
                },
            }),
            ..sample_record(n)
        };
        let mut builder = FlowsBuilder::new();
        let mut batches = Vec::new();
        for n in 0..60 {
            batches.extend(builder.push(with6(n)));
        }
        batches.extend(builder.flush());
        assert_eq!(
            batches.concat(),
            (0..60).map(with6).collect::<Vec<_>>(),
            "every record once, in order"
        );
        assert!(batches[0].len() < MAX_RECORDS, "fewer of the longer ones");
        for (i, records) in batches.into_iter().enumerate() {
            let msg = Message::Flows {
                seq: i as u64,
                records,
            };
            let b = encode(&msg, &HDR, KEY);
            assert!(b.len() <= MAX_DATAGRAM, "batch {i}: {} bytes", b.len());
            assert_eq!(b.len(), msg.encoded_len());
            assert_eq!(decode(&b, KEY), Ok((HDR, msg)));
        }
        // A count that disagrees with the bytes is refused.
        let msg = Message::Flows {
            seq: 9,
            records: (0..3).map(with6).collect(),
        };
        let mut b = encode(&msg, &HDR, KEY);
        let at = HEADER_LEN + field::flows::COUNT.start;
        b[at + 1] = 2;
        retag(&mut b);
        assert!(decode(&b, KEY).is_err());
    }

    #[test]
    fn error_indices_are_dense_and_messages_say_what() {
        let all = [
            WireError::Short { len: 3 },
            WireError::TooLong { len: 2000 },
            WireError::BadMagic,
            WireError::BadVersion(2),
            WireError::BadTag,
            WireError::UnknownKind(9),
            WireError::Malformed(Kind::Ack),
            WireError::TooMany { count: 30 },
            WireError::BadRecord { index: 4 },
            WireError::WrongNode { node: 0 },
        ];
        let mut seen: Vec<usize> = all.iter().map(|e| e.index()).collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..WireError::COUNT).collect::<Vec<_>>());
        assert_eq!(
            WireError::Malformed(Kind::Ack).to_string(),
            "malformed ack body"
        );
        assert_eq!(
            WireError::TooMany { count: 30 }.to_string(),
            "flows datagram claims 30 records, at most 24 fit"
        );
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        let role = prop_oneof![Just(Role::Active), Just(Role::Standby)];
        prop_oneof![
            (any::<u64>(), role, any::<u8>(), any::<u64>(), any::<bool>()).prop_map(
                |(counter, role, priority, acked, in_sync)| Message::Heartbeat {
                    counter,
                    role,
                    priority,
                    acked,
                    in_sync
                }
            ),
            (
                any::<u64>(),
                prop::collection::vec(any::<u32>(), 0..=MAX_RECORDS)
            )
                .prop_map(|(seq, ns)| Message::Flows {
                    seq,
                    records: ns.into_iter().map(sample_record).collect()
                }),
            (any::<u64>(), any::<Option<u64>>())
                .prop_map(|(acked, nack)| Message::Ack { acked, nack }),
            Just(Message::BulkRequest),
            any::<u64>().prop_map(|seq| Message::BulkDone { seq }),
            any::<u64>().prop_map(|seq| Message::Resync { seq }),
        ]
    }

    fn arb_header() -> impl Strategy<Value = Header> {
        (any::<u8>(), any::<u64>()).prop_map(|(node, boot)| Header { node, boot })
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..1600)) {
            let _ = decode(&bytes, KEY);
        }

        /// Structure-aware: a real header, any body, tagged, so the body parser is reached.
        #[test]
        fn tagged_random_bodies_never_panic(
            kind in 0u8..8,
            body in prop::collection::vec(any::<u8>(), 0..1400),
        ) {
            let mut b = MAGIC.to_vec();
            b.extend_from_slice(&[VERSION, kind, 0]);
            b.extend_from_slice(&[0; 8]);
            b.extend_from_slice(&body);
            b.extend_from_slice(&[0; TAG_LEN]);
            retag(&mut b);
            let _ = decode(&b, KEY);
        }

        #[test]
        fn messages_round_trip(msg in arb_message(), hdr in arb_header()) {
            let b = encode(&msg, &hdr, KEY);
            prop_assert!(b.len() <= MAX_DATAGRAM);
            prop_assert_eq!(decode(&b, KEY), Ok((hdr, msg)));
        }

        #[test]
        fn every_truncation_fails(msg in arb_message(), cut in any::<prop::sample::Index>()) {
            let b = encode(&msg, &HDR, KEY);
            let cut = cut.index(b.len());
            prop_assert!(decode(&b[..cut], KEY).is_err());
        }

        #[test]
        fn a_flipped_bit_anywhere_fails(msg in arb_message(), at in any::<prop::sample::Index>(), bit in 0u8..8) {
            let mut b = encode(&msg, &HDR, KEY);
            let at = at.index(b.len());
            b[at] ^= 1 << bit;
            let got = decode(&b, KEY);
            if at < field::VERSION {
                prop_assert_eq!(got, Err(WireError::BadMagic));
            } else if at == field::VERSION {
                prop_assert_eq!(got, Err(WireError::BadVersion(VERSION ^ (1 << bit))));
            } else {
                prop_assert_eq!(got, Err(WireError::BadTag));
            }
        }

        #[test]
        fn a_wrong_key_fails(msg in arb_message(), key in prop::collection::vec(any::<u8>(), 0..80)) {
            prop_assume!(key != KEY);
            prop_assert_eq!(decode(&encode(&msg, &HDR, KEY), &key), Err(WireError::BadTag));
        }
    }
}
