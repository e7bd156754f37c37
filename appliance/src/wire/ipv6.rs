//! IPv6 (RFC 8200): the fixed header, and a bounded walk over the extension headers that
//! may follow it (hop-by-hop, routing, fragment, destination options) down to the upper
//! layer.
//!
//! No-panic contract: after [`Ipv6Packet::new_checked`] succeeds, no accessor, setter or
//! [`payload`](Ipv6Packet::payload) panics. [`walk_extensions`] reads only within the
//! slice it is given and stops after [`MAX_EXTENSIONS`] headers, so a chain of thousands
//! of empty headers costs the same as a long packet of anything else.
//!
//! What the walk reports, the graph decides: an unknown extension header (AH, ESP,
//! mobility, HIP, shim6, the experimental values) is [`Error::Unsupported`], a routing
//! header with segments left or a hop-by-hop option the appliance may not skip is
//! reported for the graph to drop (a middlebox that forwards what it cannot read would
//! let through what it cannot check).

use core::fmt;
use std::net::Ipv6Addr;

use super::{Error, Result};

mod field {
    use core::ops::Range;

    pub const VER_TC_FLOW: Range<usize> = 0..4;
    pub const PAYLOAD_LEN: Range<usize> = 4..6;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC_ADDR: Range<usize> = 8..24;
    pub const DST_ADDR: Range<usize> = 24..40;
}

/// The fixed IPv6 header.
pub const HEADER_LEN: usize = 40;

/// Extension headers [`walk_extensions`] follows before it gives up: more than any real
/// packet carries (RFC 8200's recommended order has at most six).
pub const MAX_EXTENSIONS: usize = 8;

/// The length of the fragment header (RFC 8200 §4.5).
pub const FRAGMENT_HEADER_LEN: usize = 8;

/// IPv6 next-header values.
pub mod next_header {
    pub const HOP_BY_HOP: u8 = 0;
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ROUTING: u8 = 43;
    pub const FRAGMENT: u8 = 44;
    pub const ESP: u8 = 50;
    pub const AH: u8 = 51;
    pub const ICMPV6: u8 = 58;
    pub const NO_NEXT: u8 = 59;
    pub const DEST_OPTIONS: u8 = 60;
}

/// A read-only or read-write view of an IPv6 packet.
#[derive(Debug, Clone)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// A view without checks (for buffers the caller built).
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv6Packet { buffer }
    }

    /// A view of `buffer` if it holds a whole IPv6 header of version 6 and the payload it
    /// declares (later bytes are Ethernet padding). A payload length of 0 with bytes after
    /// the header (a jumbogram, RFC 2675) is unsupported.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        let len = p.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if p.version() != 6 {
            return Err(Error::Malformed);
        }
        let payload = usize::from(p.payload_len());
        if HEADER_LEN + payload > len {
            return Err(Error::Truncated);
        }
        if payload == 0 && p.next_header() == next_header::HOP_BY_HOP && len > HEADER_LEN {
            return Err(Error::Unsupported);
        }
        Ok(p)
    }

    #[inline]
    fn bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    #[inline]
    fn word0(&self) -> u32 {
        let b = self.bytes();
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    #[inline]
    pub fn version(&self) -> u8 {
        self.bytes()[0] >> 4
    }

    /// The traffic class (DSCP and ECN, as IPv4's TOS byte).
    #[inline]
    pub fn traffic_class(&self) -> u8 {
        // Bits 4..12 of the first word.
        #[allow(clippy::cast_possible_truncation)]
        let tc = (self.word0() >> 20) as u8;
        tc
    }

    #[inline]
    pub fn flow_label(&self) -> u32 {
        self.word0() & 0x000f_ffff
    }

    #[inline]
    pub fn payload_len(&self) -> u16 {
        let b = self.bytes();
        u16::from_be_bytes([b[field::PAYLOAD_LEN.start], b[field::PAYLOAD_LEN.start + 1]])
    }

    #[inline]
    pub fn next_header(&self) -> u8 {
        self.bytes()[field::NEXT_HEADER]
    }

    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.bytes()[field::HOP_LIMIT]
    }

    #[inline]
    pub fn src_addr_u128(&self) -> u128 {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.bytes()[field::SRC_ADDR]);
        u128::from_be_bytes(a)
    }

    #[inline]
    pub fn dst_addr_u128(&self) -> u128 {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.bytes()[field::DST_ADDR]);
        u128::from_be_bytes(a)
    }

    pub fn src_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.src_addr_u128())
    }

    pub fn dst_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.dst_addr_u128())
    }

    /// The packet's length: header and declared payload.
    #[inline]
    pub fn total_len(&self) -> usize {
        HEADER_LEN + usize::from(self.payload_len())
    }

    /// What follows the fixed header, up to the declared payload length.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let end = self.total_len().min(self.bytes().len());
        &self.bytes()[HEADER_LEN.min(end)..end]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    #[inline]
    fn bytes_mut(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }

    /// Version, traffic class and flow label in one word.
    pub fn set_version_class_label(&mut self, traffic_class: u8, flow_label: u32) {
        let w = (6u32 << 28) | (u32::from(traffic_class) << 20) | (flow_label & 0x000f_ffff);
        self.bytes_mut()[field::VER_TC_FLOW].copy_from_slice(&w.to_be_bytes());
    }

    pub fn set_payload_len(&mut self, len: u16) {
        self.bytes_mut()[field::PAYLOAD_LEN].copy_from_slice(&len.to_be_bytes());
    }

    pub fn set_next_header(&mut self, v: u8) {
        self.bytes_mut()[field::NEXT_HEADER] = v;
    }

    pub fn set_hop_limit(&mut self, v: u8) {
        self.bytes_mut()[field::HOP_LIMIT] = v;
    }

    pub fn set_src_addr_u128(&mut self, a: u128) {
        self.bytes_mut()[field::SRC_ADDR].copy_from_slice(&a.to_be_bytes());
    }

    pub fn set_dst_addr_u128(&mut self, a: u128) {
        self.bytes_mut()[field::DST_ADDR].copy_from_slice(&a.to_be_bytes());
    }

    /// What follows the fixed header, writable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = self.total_len().min(self.bytes().len());
        &mut self.bytes_mut()[HEADER_LEN.min(end)..end]
    }
}

impl<T: AsRef<[u8]>> fmt::Display for Ipv6Packet<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "IPv6 {} -> {} next={} hop_limit={} len={}",
            self.src_addr(),
            self.dst_addr(),
            self.next_header(),
            self.hop_limit(),
            self.payload_len()
        )
    }
}

/// The fixed header of a packet the appliance writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Repr {
    pub src_addr: u128,
    pub dst_addr: u128,
    pub next_header: u8,
    pub payload_len: u16,
    pub hop_limit: u8,
}

impl Ipv6Repr {
    pub fn parse<T: AsRef<[u8]>>(p: &Ipv6Packet<T>) -> Ipv6Repr {
        Ipv6Repr {
            src_addr: p.src_addr_u128(),
            dst_addr: p.dst_addr_u128(),
            next_header: p.next_header(),
            payload_len: p.payload_len(),
            hop_limit: p.hop_limit(),
        }
    }

    /// Writes the header (traffic class and flow label 0) at the front of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        let h = buf.get_mut(..HEADER_LEN).ok_or(Error::Truncated)?;
        let mut p = Ipv6Packet::new_unchecked(h);
        p.set_version_class_label(0, 0);
        p.set_payload_len(self.payload_len);
        p.set_next_header(self.next_header);
        p.set_hop_limit(self.hop_limit);
        p.set_src_addr_u128(self.src_addr);
        p.set_dst_addr_u128(self.dst_addr);
        Ok(HEADER_LEN)
    }
}

/// A fragment header's facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragmentHeader {
    /// Offset of the fragment's data in the datagram's fragmentable part, in bytes.
    pub offset: u16,
    /// More fragments follow.
    pub more: bool,
    pub id: u32,
    /// Where the fragment header starts, from the start of the IPv6 payload.
    pub at: usize,
}

impl FragmentHeader {
    /// An atomic fragment (offset 0, no more): a whole datagram that carries a fragment
    /// header, processed as if it had none (RFC 6946).
    #[inline]
    pub fn is_atomic(&self) -> bool {
        self.offset == 0 && !self.more
    }
}

/// What a hop-by-hop or destination options header holds, as far as a router cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionsVerdict {
    /// Padding, router alert, or unknown options whose type says "skip" (RFC 8200 §4.2).
    Harmless,
    /// An unknown option whose type says the packet is to be discarded.
    Discard,
    /// Option lengths that run past the header.
    Malformed,
}

/// What lies between the fixed header and the upper layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extensions {
    /// The upper-layer protocol (TCP, UDP, ICMPv6, 59 for none, or any other).
    pub protocol: u8,
    /// Where the upper-layer header starts, from the start of the IPv6 payload.
    pub l4_at: usize,
    /// The fragment header, if there is one.
    pub fragment: Option<FragmentHeader>,
    /// A routing header with segments left: the sender picks the path (the graph drops
    /// it, as it drops IPv4 source routes).
    pub source_route: bool,
    /// The hop-by-hop options, when there are some.
    pub hop_by_hop: Option<OptionsVerdict>,
    /// Extension headers walked.
    pub count: u8,
}

/// Walks the extension headers of an IPv6 payload whose first header is `first`, down to
/// the upper layer, reading at most [`MAX_EXTENSIONS`] of them. Errors: a header running
/// past `payload`, hop-by-hop anywhere but first, more than [`MAX_EXTENSIONS`], two
/// fragment headers ([`Error::Malformed`]); an extension header privlink does not know
/// (AH, ESP, mobility, …: [`Error::Unsupported`]). After a fragment header that is not the
/// first fragment's, the walk stops there: what follows is the middle of the datagram.
#[inline]
pub fn walk_extensions(first: u8, payload: &[u8]) -> Result<Extensions> {
    // The common case, an upper layer right after the fixed header, without the walk.
    if matches!(first, 6 | 17 | next_header::ICMPV6) {
        return Ok(Extensions::none(first));
    }
    walk_extension_chain(first, payload)
}

impl Extensions {
    /// No extension header: `protocol` right after the fixed header.
    pub fn none(protocol: u8) -> Extensions {
        Extensions {
            protocol,
            l4_at: 0,
            fragment: None,
            source_route: false,
            hop_by_hop: None,
            count: 0,
        }
    }
}

/// [`walk_extensions`] past its common case.
fn walk_extension_chain(first: u8, payload: &[u8]) -> Result<Extensions> {
    let mut ext = Extensions::none(first);
    loop {
        let at = ext.l4_at;
        let nh = ext.protocol;
        let len = match nh {
            next_header::HOP_BY_HOP | next_header::DEST_OPTIONS | next_header::ROUTING => {
                if nh == next_header::HOP_BY_HOP && ext.count != 0 {
                    return Err(Error::Malformed);
                }
                let h = payload.get(at..at + 2).ok_or(Error::Truncated)?;
                let len = 8 + 8 * usize::from(h[1]);
                let body = payload.get(at..at + len).ok_or(Error::Truncated)?;
                match nh {
                    next_header::HOP_BY_HOP => ext.hop_by_hop = Some(judge_options(&body[2..])),
                    // Routing: type, segments left.
                    next_header::ROUTING => ext.source_route |= body[3] != 0,
                    _ => {}
                }
                len
            }
            next_header::FRAGMENT => {
                if ext.fragment.is_some() {
                    return Err(Error::Malformed);
                }
                let h = payload
                    .get(at..at + FRAGMENT_HEADER_LEN)
                    .ok_or(Error::Truncated)?;
                let off_m = u16::from_be_bytes([h[2], h[3]]);
                let f = FragmentHeader {
                    offset: off_m & 0xfff8,
                    more: off_m & 1 != 0,
                    id: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
                    at,
                };
                ext.fragment = Some(f);
                if f.offset != 0 {
                    // It counts as a header walked: a ninth one here is one too many,
                    // as anywhere else.
                    if usize::from(ext.count) >= MAX_EXTENSIONS {
                        return Err(Error::Malformed);
                    }
                    // A later fragment: its next header names the first fragment's upper
                    // layer, whose header is not here.
                    ext.protocol = h[0];
                    ext.l4_at = at + FRAGMENT_HEADER_LEN;
                    ext.count += 1;
                    return Ok(ext);
                }
                FRAGMENT_HEADER_LEN
            }
            next_header::ESP | next_header::AH | 135 | 139 | 140 | 253 | 254 => {
                return Err(Error::Unsupported)
            }
            _ => return Ok(ext),
        };
        if usize::from(ext.count) >= MAX_EXTENSIONS {
            return Err(Error::Malformed);
        }
        ext.protocol = payload.get(at).copied().ok_or(Error::Truncated)?;
        ext.l4_at = at + len;
        ext.count += 1;
    }
}

/// Judges the TLV options of a hop-by-hop (or destination options) header, `bytes` being
/// what follows its next-header and length bytes.
pub fn judge_options(bytes: &[u8]) -> OptionsVerdict {
    let mut i = 0;
    let mut verdict = OptionsVerdict::Harmless;
    while let Some(&kind) = bytes.get(i) {
        if kind == 0 {
            // Pad1: a single byte.
            i += 1;
            continue;
        }
        let Some(&len) = bytes.get(i + 1) else {
            return OptionsVerdict::Malformed;
        };
        let end = i + 2 + usize::from(len);
        if end > bytes.len() {
            return OptionsVerdict::Malformed;
        }
        // PadN (1) and router alert (5) are known; an unknown one's two high bits say
        // what to do: 00 skip it, anything else discard the packet.
        if kind != 1 && kind != 5 && kind >> 6 != 0 {
            verdict = OptionsVerdict::Discard;
        }
        i = end;
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2001:db8::1 -> 2001:db8::2, UDP, 12 bytes of payload, hop limit 64, traffic class
    /// 0xb8, flow label 0x12345.
    const PACKET: [u8; 52] = [
        0x6b, 0x81, 0x23, 0x45, 0x00, 0x0c, 0x11, 0x40, //
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, //
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, //
        0x9c, 0x40, 0x23, 0x28, 0x00, 0x0c, 0x00, 0x00, b'p', b'i', b'n', b'g',
    ];

    #[test]
    fn deconstruct() {
        let p = Ipv6Packet::new_checked(&PACKET[..]).unwrap();
        assert_eq!(p.version(), 6);
        assert_eq!(p.traffic_class(), 0xb8);
        assert_eq!(p.flow_label(), 0x12345);
        assert_eq!(p.payload_len(), 12);
        assert_eq!(p.next_header(), next_header::UDP);
        assert_eq!(p.hop_limit(), 64);
        assert_eq!(p.src_addr(), "2001:db8::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.dst_addr(), "2001:db8::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.payload(), &PACKET[40..]);
        assert_eq!(p.total_len(), 52);
    }

    #[test]
    fn construct_and_emit() {
        let mut buf = PACKET;
        let mut p = Ipv6Packet::new_unchecked(&mut buf[..]);
        p.set_version_class_label(0xb8, 0x12345);
        p.set_hop_limit(64);
        assert_eq!(buf, PACKET);
        let repr = Ipv6Repr::parse(&Ipv6Packet::new_checked(&PACKET[..]).unwrap());
        let mut out = [0u8; 40];
        assert_eq!(repr.emit(&mut out), Ok(40));
        assert_eq!(&out[4..], &PACKET[4..40]);
        assert_eq!(out[0] >> 4, 6);
        assert_eq!(repr.emit(&mut out[..39]), Err(Error::Truncated));
    }

    #[test]
    fn malformed_headers() {
        assert_eq!(
            Ipv6Packet::new_checked(&PACKET[..39]).unwrap_err(),
            Error::Truncated
        );
        let mut v4 = PACKET;
        v4[0] = 0x45;
        assert_eq!(
            Ipv6Packet::new_checked(&v4[..]).unwrap_err(),
            Error::Malformed
        );
        // A payload length past the buffer.
        let mut long = PACKET;
        long[5] = 13;
        assert_eq!(
            Ipv6Packet::new_checked(&long[..]).unwrap_err(),
            Error::Truncated
        );
        // Padding after the payload is allowed and not part of it.
        let mut padded = PACKET.to_vec();
        padded.extend_from_slice(&[0; 8]);
        let p = Ipv6Packet::new_checked(&padded[..]).unwrap();
        assert_eq!(p.payload().len(), 12);
        // A jumbogram.
        let mut jumbo = PACKET;
        jumbo[4..7].copy_from_slice(&[0, 0, next_header::HOP_BY_HOP]);
        assert_eq!(
            Ipv6Packet::new_checked(&jumbo[..]).unwrap_err(),
            Error::Unsupported
        );
    }

    /// Hop-by-hop (router alert), destination options (PadN), fragment (first), UDP.
    const CHAIN: [u8; 32] = [
        60, 0, 5, 2, 0, 0, 1,
        0, // hop-by-hop → destination options: router alert, Pad1, PadN
        44, 0, 1, 4, 0, 0, 0, 0, // destination options → fragment: PadN of 4
        17, 0, 0x00, 0x01, 0xde, 0xad, 0xbe, 0xef, // fragment → UDP: offset 0, M, id
        0x9c, 0x40, 0x23, 0x28, 0x0f, 0xa8, 0x00, 0x00, // UDP header of a longer datagram
    ];

    #[test]
    fn walks_extension_headers_to_the_upper_layer() {
        let e = walk_extensions(next_header::HOP_BY_HOP, &CHAIN).unwrap();
        assert_eq!(e.protocol, next_header::UDP);
        assert_eq!(e.l4_at, 24);
        assert_eq!(e.count, 3);
        assert_eq!(e.hop_by_hop, Some(OptionsVerdict::Harmless));
        assert!(!e.source_route);
        let f = e.fragment.unwrap();
        assert_eq!((f.offset, f.more, f.id, f.at), (0, true, 0xdead_beef, 16));
        assert!(!f.is_atomic());
        // No extension header at all.
        let e = walk_extensions(next_header::TCP, &[]).unwrap();
        assert_eq!((e.protocol, e.l4_at, e.count), (next_header::TCP, 0, 0));
    }

    #[test]
    fn a_later_fragment_stops_the_walk() {
        let later = [17, 0, 0x05, 0xc8, 0, 0, 0, 9, 0xaa, 0xbb];
        let e = walk_extensions(next_header::FRAGMENT, &later).unwrap();
        let f = e.fragment.unwrap();
        assert_eq!((f.offset, f.more, f.id), (1480, false, 9));
        assert_eq!((e.protocol, e.l4_at), (next_header::UDP, 8));
    }

    #[test]
    fn broken_chains_are_refused() {
        // Truncated in the middle of a header.
        assert_eq!(
            walk_extensions(next_header::HOP_BY_HOP, &CHAIN[..12]),
            Err(Error::Truncated)
        );
        // Hop-by-hop after another header.
        let mut late_hbh = CHAIN;
        late_hbh[0] = 0;
        assert_eq!(
            walk_extensions(next_header::HOP_BY_HOP, &late_hbh),
            Err(Error::Malformed)
        );
        // Two fragment headers.
        let twice = [44, 0, 0, 1, 0, 0, 0, 1, 17, 0, 0, 1, 0, 0, 0, 1];
        assert_eq!(
            walk_extensions(next_header::FRAGMENT, &twice),
            Err(Error::Malformed)
        );
        // A chain longer than any real packet: destination options, again and again.
        let long: Vec<u8> = (0..MAX_EXTENSIONS + 1)
            .flat_map(|_| [60, 0, 1, 4, 0, 0, 0, 0])
            .collect();
        assert_eq!(
            walk_extensions(next_header::DEST_OPTIONS, &long),
            Err(Error::Malformed)
        );
        // The most headers there may be, the last of them a later fragment's: one too
        // many (the walk once returned it with a count of 9).
        let mut chain: Vec<u8> = (0..MAX_EXTENSIONS)
            .flat_map(|_| [60, 0, 1, 4, 0, 0, 0, 0])
            .collect();
        let last = chain.len() - 8;
        chain[last] = next_header::FRAGMENT;
        chain.extend_from_slice(&[17, 0, 0, 8, 0, 0, 0, 2]);
        assert_eq!(
            walk_extensions(next_header::DEST_OPTIONS, &chain),
            Err(Error::Malformed)
        );
        // One header fewer before it: the later fragment is the eighth, fine.
        let ok = &chain[8..];
        let e = walk_extensions(next_header::DEST_OPTIONS, ok).unwrap();
        assert_eq!(usize::from(e.count), MAX_EXTENSIONS);
        // ESP and AH.
        assert_eq!(walk_extensions(50, &[0; 16]), Err(Error::Unsupported));
        assert_eq!(walk_extensions(51, &[0; 16]), Err(Error::Unsupported));
    }

    #[test]
    fn routing_headers_with_segments_left_are_source_routes() {
        // Routing header type 4 (segment routing), 2 segments left.
        let mut rh = [0u8; 24];
        rh[..4].copy_from_slice(&[6, 2, 4, 2]);
        let e = walk_extensions(next_header::ROUTING, &rh).unwrap();
        assert!(e.source_route);
        assert_eq!((e.protocol, e.l4_at), (next_header::TCP, 24));
        rh[3] = 0;
        assert!(
            !walk_extensions(next_header::ROUTING, &rh)
                .unwrap()
                .source_route
        );
    }

    #[test]
    fn options_are_judged_by_their_type() {
        assert_eq!(judge_options(&[0, 1, 2, 0, 0, 0]), OptionsVerdict::Harmless);
        // Unknown, "skip" (00xxxxxx).
        assert_eq!(judge_options(&[0x1e, 2, 0, 0]), OptionsVerdict::Harmless);
        // Unknown, "discard" (01xxxxxx), and "discard, send ICMP" (10xxxxxx).
        assert_eq!(judge_options(&[0x5e, 2, 0, 0]), OptionsVerdict::Discard);
        assert_eq!(judge_options(&[0x9e, 0]), OptionsVerdict::Discard);
        // A length running past the header; a type without its length.
        assert_eq!(judge_options(&[1, 5, 0, 0]), OptionsVerdict::Malformed);
        assert_eq!(judge_options(&[0, 0, 1]), OptionsVerdict::Malformed);
    }
}
