//! ICMPv6 (RFC 4443) and neighbour discovery (RFC 4861): echo, the error messages that
//! quote a packet (packet too big, destination unreachable, time exceeded, parameter
//! problem), and neighbour solicitations and advertisements with their link-layer address
//! options. The checksum covers an IPv6 pseudo-header, so it is verified and filled with
//! the packet's addresses.
//!
//! No-panic contract: after [`Icmpv6Packet::new_checked`] succeeds no accessor or setter
//! panics; [`NdiscRepr::parse`] checks every length it reads (an option of length 0 is
//! malformed: RFC 4861 §4.6 says to discard the packet), and the emit functions check
//! every length they write.

use super::checksum;
use super::ethernet::EthernetAddress;
use super::ipv6::next_header;
use super::{Error, Result};

mod field {
    use core::ops::Range;

    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Range<usize> = 2..4;
    pub const ECHO_IDENT: Range<usize> = 4..6;
    pub const ECHO_SEQNO: Range<usize> = 6..8;
    /// Packet too big: the MTU; parameter problem: the pointer.
    pub const MTU: Range<usize> = 4..8;
    /// Neighbour advertisement: R, S, O flags.
    pub const NA_FLAGS: usize = 4;
    pub const ND_TARGET: Range<usize> = 8..24;
    pub const ND_OPTIONS: usize = 24;
    pub const DATA: usize = 8;
}

/// Type, code, checksum and one 32-bit word.
pub const HEADER_LEN: usize = field::DATA;

/// A neighbour solicitation or advertisement without options.
pub const ND_LEN: usize = field::ND_OPTIONS;

/// An ND message with one link-layer address option (8 bytes for Ethernet).
pub const ND_WITH_LLADDR_LEN: usize = ND_LEN + 8;

/// ICMPv6 message types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Icmpv6Type(pub u8);

impl Icmpv6Type {
    pub const DST_UNREACHABLE: Self = Self(1);
    pub const PACKET_TOO_BIG: Self = Self(2);
    pub const TIME_EXCEEDED: Self = Self(3);
    pub const PARAM_PROBLEM: Self = Self(4);
    pub const ECHO_REQUEST: Self = Self(128);
    pub const ECHO_REPLY: Self = Self(129);
    pub const ROUTER_SOLICIT: Self = Self(133);
    pub const ROUTER_ADVERT: Self = Self(134);
    pub const NEIGHBOR_SOLICIT: Self = Self(135);
    pub const NEIGHBOR_ADVERT: Self = Self(136);
    pub const REDIRECT: Self = Self(137);

    /// An error message (types 0–127): never answered with another error (RFC 4443 §2.4).
    #[inline]
    pub const fn is_error(self) -> bool {
        self.0 < 128
    }
}

/// The ones'-complement sum of the IPv6 pseudo-header (RFC 8200 §8.1).
#[inline]
pub fn pseudo_header_v6(src: u128, dst: u128, next: u8, length: u32) -> u16 {
    let mut words = [0u16; 20];
    for (i, w) in src
        .to_be_bytes()
        .chunks_exact(2)
        .chain(dst.to_be_bytes().chunks_exact(2))
        .enumerate()
    {
        words[i] = u16::from_be_bytes([w[0], w[1]]);
    }
    // Upper-layer length (32 bits) and next header (the last byte of 32 bits).
    // The two halves of the 32-bit length, on purpose.
    #[allow(clippy::cast_possible_truncation)]
    let (hi, lo) = ((length >> 16) as u16, length as u16);
    words[16] = hi;
    words[17] = lo;
    words[19] = u16::from(next);
    checksum::combine(&words)
}

/// The checksum of an upper-layer `segment` (its checksum field zeroed) over IPv6.
#[inline]
pub fn l4_checksum_v6(src: u128, dst: u128, next: u8, segment: &[u8]) -> u16 {
    let len = u32::try_from(segment.len()).unwrap_or(u32::MAX);
    !checksum::combine(&[
        pseudo_header_v6(src, dst, next, len),
        checksum::data(segment),
    ])
}

/// A view of an ICMPv6 message (the whole IPv6 upper-layer payload: the checksum covers
/// all of it).
#[derive(Debug, Clone)]
pub struct Icmpv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv6Packet<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        Icmpv6Packet { buffer }
    }

    /// A view of `buffer` if it holds at least the ICMPv6 header.
    pub fn new_checked(buffer: T) -> Result<Self> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(Self::new_unchecked(buffer))
    }

    #[inline]
    fn u16_at(&self, at: usize) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[at], b[at + 1]])
    }

    pub fn msg_type(&self) -> Icmpv6Type {
        Icmpv6Type(self.buffer.as_ref()[field::TYPE])
    }

    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    pub fn checksum(&self) -> u16 {
        self.u16_at(field::CHECKSUM.start)
    }

    pub fn echo_ident(&self) -> u16 {
        self.u16_at(field::ECHO_IDENT.start)
    }

    pub fn echo_seq_no(&self) -> u16 {
        self.u16_at(field::ECHO_SEQNO.start)
    }

    /// Packet too big: the next hop's MTU (parameter problem: the pointer).
    pub fn mtu(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::MTU];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// What follows the header: an error's quoted packet, an echo's data.
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[field::DATA..]
    }

    /// The message as a whole.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// The checksum is right for a message from `src` to `dst`.
    pub fn verify_checksum(&self, src: u128, dst: u128) -> bool {
        let b = self.buffer.as_ref();
        let len = u32::try_from(b.len()).unwrap_or(u32::MAX);
        checksum::combine(&[
            pseudo_header_v6(src, dst, next_header::ICMPV6, len),
            checksum::data(b),
        ]) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv6Packet<T> {
    pub fn set_msg_type(&mut self, t: Icmpv6Type) {
        self.buffer.as_mut()[field::TYPE] = t.0;
    }

    pub fn set_code(&mut self, c: u8) {
        self.buffer.as_mut()[field::CODE] = c;
    }

    pub fn set_checksum(&mut self, c: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
    }

    pub fn set_mtu(&mut self, mtu: u32) {
        self.buffer.as_mut()[field::MTU].copy_from_slice(&mtu.to_be_bytes());
    }

    /// Computes the checksum for a message from `src` to `dst`.
    pub fn fill_checksum(&mut self, src: u128, dst: u128) {
        self.set_checksum(0);
        let c = l4_checksum_v6(src, dst, next_header::ICMPV6, self.buffer.as_ref());
        self.set_checksum(c);
    }

    /// Turns an echo request into its reply in place (type only; the caller fills the
    /// checksum with the swapped addresses).
    pub fn make_echo_reply(&mut self) {
        self.set_msg_type(Icmpv6Type::ECHO_REPLY);
    }
}

/// A neighbour solicitation or advertisement, as far as privlink uses one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NdiscRepr {
    /// "Who has `target`? Tell `source_lladdr`" (none from an unspecified source: duplicate
    /// address detection).
    Solicit {
        target: u128,
        source_lladdr: Option<EthernetAddress>,
    },
    /// "`target` is at `target_lladdr`".
    Advert {
        router: bool,
        solicited: bool,
        override_: bool,
        target: u128,
        target_lladdr: Option<EthernetAddress>,
    },
}

/// Link-layer address options (RFC 4861 §4.6.1).
const OPT_SOURCE_LLADDR: u8 = 1;
const OPT_TARGET_LLADDR: u8 = 2;

impl NdiscRepr {
    /// Reads a neighbour solicitation or advertisement (code 0). Other types are
    /// [`Error::Unsupported`]; a message too short, with a non-zero code, or with an
    /// option of length 0 or running past the message is [`Error::Malformed`].
    pub fn parse<T: AsRef<[u8]>>(p: &Icmpv6Packet<T>) -> Result<NdiscRepr> {
        let b = p.as_bytes();
        let t = p.msg_type();
        if t != Icmpv6Type::NEIGHBOR_SOLICIT && t != Icmpv6Type::NEIGHBOR_ADVERT {
            return Err(Error::Unsupported);
        }
        if p.code() != 0 || b.len() < ND_LEN {
            return Err(Error::Malformed);
        }
        let mut a = [0u8; 16];
        a.copy_from_slice(&b[field::ND_TARGET]);
        let target = u128::from_be_bytes(a);
        let mut lladdr = None;
        let mut i = field::ND_OPTIONS;
        while i < b.len() {
            let (Some(&kind), Some(&len)) = (b.get(i), b.get(i + 1)) else {
                return Err(Error::Malformed);
            };
            let end = i + 8 * usize::from(len);
            if len == 0 || end > b.len() {
                return Err(Error::Malformed);
            }
            let wanted = if t == Icmpv6Type::NEIGHBOR_SOLICIT {
                OPT_SOURCE_LLADDR
            } else {
                OPT_TARGET_LLADDR
            };
            if kind == wanted && len == 1 {
                let mut mac = [0u8; 6];
                mac.copy_from_slice(&b[i + 2..i + 8]);
                lladdr = Some(EthernetAddress(mac));
            }
            i = end;
        }
        Ok(if t == Icmpv6Type::NEIGHBOR_SOLICIT {
            NdiscRepr::Solicit {
                target,
                source_lladdr: lladdr,
            }
        } else {
            let flags = b[field::NA_FLAGS];
            NdiscRepr::Advert {
                router: flags & 0x80 != 0,
                solicited: flags & 0x40 != 0,
                override_: flags & 0x20 != 0,
                target,
                target_lladdr: lladdr,
            }
        })
    }

    /// Writes the message (with its link-layer address option when it has one) into
    /// `buf`, checksummed for `src` → `dst`; returns its length.
    pub fn emit(&self, buf: &mut [u8], src: u128, dst: u128) -> Result<usize> {
        let (kind, flags, target, lladdr, opt) = match *self {
            NdiscRepr::Solicit {
                target,
                source_lladdr,
            } => (
                Icmpv6Type::NEIGHBOR_SOLICIT,
                0,
                target,
                source_lladdr,
                OPT_SOURCE_LLADDR,
            ),
            NdiscRepr::Advert {
                router,
                solicited,
                override_,
                target,
                target_lladdr,
            } => (
                Icmpv6Type::NEIGHBOR_ADVERT,
                (u8::from(router) << 7) | (u8::from(solicited) << 6) | (u8::from(override_) << 5),
                target,
                target_lladdr,
                OPT_TARGET_LLADDR,
            ),
        };
        let len = if lladdr.is_some() {
            ND_WITH_LLADDR_LEN
        } else {
            ND_LEN
        };
        let out = buf.get_mut(..len).ok_or(Error::Truncated)?;
        out.fill(0);
        out[field::TYPE] = kind.0;
        out[field::NA_FLAGS] = flags;
        out[field::ND_TARGET].copy_from_slice(&target.to_be_bytes());
        if let Some(mac) = lladdr {
            out[ND_LEN] = opt;
            out[ND_LEN + 1] = 1;
            out[ND_LEN + 2..ND_LEN + 8].copy_from_slice(mac.as_bytes());
        }
        Icmpv6Packet::new_unchecked(&mut *out).fill_checksum(src, dst);
        Ok(len)
    }
}

/// The solicited-node multicast address of `addr` (ff02::1:ffXX:XXXX, RFC 4291 §2.7.1):
/// where a neighbour solicitation for it is sent.
#[inline]
pub fn solicited_node(addr: u128) -> u128 {
    0xff02_0000_0000_0000_0000_0001_ff00_0000 | (addr & 0x00ff_ffff)
}

/// The Ethernet multicast address of an IPv6 multicast address (33:33 and its last 32
/// bits, RFC 2464 §7).
#[inline]
pub fn multicast_mac(addr: u128) -> EthernetAddress {
    let b = addr.to_be_bytes();
    EthernetAddress([0x33, 0x33, b[12], b[13], b[14], b[15]])
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use super::*;

    fn a(s: &str) -> u128 {
        u128::from(s.parse::<Ipv6Addr>().unwrap())
    }

    /// A neighbour solicitation from fe80::1 (02:00:00:00:00:01) for 2001:db8::100, to
    /// its solicited-node address (checksum computed apart, by a short Python script).
    const NS: [u8; 32] = [
        135, 0, 0x49, 0x63, 0, 0, 0, 0, //
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00, //
        1, 1, 0x02, 0, 0, 0, 0, 0x01,
    ];

    #[test]
    fn solicitations_parse_and_emit() {
        let (src, dst) = (a("fe80::1"), solicited_node(a("2001:db8::100")));
        assert_eq!(dst, a("ff02::1:ff00:100"));
        let want = NS;
        let p = Icmpv6Packet::new_checked(&want[..]).unwrap();
        assert!(p.verify_checksum(src, dst));
        assert!(!p.verify_checksum(src, a("ff02::1")));
        let repr = NdiscRepr::parse(&p).unwrap();
        assert_eq!(
            repr,
            NdiscRepr::Solicit {
                target: a("2001:db8::100"),
                source_lladdr: Some(EthernetAddress([2, 0, 0, 0, 0, 1])),
            }
        );
        let mut out = [0u8; 40];
        assert_eq!(repr.emit(&mut out, src, dst), Ok(32));
        assert_eq!(&out[..32], &want[..]);
        assert_eq!(repr.emit(&mut out[..31], src, dst), Err(Error::Truncated));
        assert_eq!(multicast_mac(dst).0, [0x33, 0x33, 0xff, 0, 0x01, 0x00]);
    }

    #[test]
    fn advertisements_round_trip() {
        let na = NdiscRepr::Advert {
            router: false,
            solicited: true,
            override_: true,
            target: a("2001:db8::100"),
            target_lladdr: Some(EthernetAddress([2, 0, 0, 0, 0, 0xc0])),
        };
        let (src, dst) = (a("2001:db8::100"), a("fe80::1"));
        let mut out = [0u8; 32];
        assert_eq!(na.emit(&mut out, src, dst), Ok(32));
        assert_eq!(out[4], 0x60);
        let p = Icmpv6Packet::new_checked(&out[..]).unwrap();
        assert!(p.verify_checksum(src, dst));
        assert_eq!(NdiscRepr::parse(&p), Ok(na));
    }

    #[test]
    fn malformed_neighbour_discovery_is_refused() {
        let mut zero_len = NS;
        zero_len[25] = 0;
        let p = Icmpv6Packet::new_checked(&zero_len[..]).unwrap();
        assert_eq!(NdiscRepr::parse(&p), Err(Error::Malformed));
        let mut past = NS;
        past[25] = 2;
        let p = Icmpv6Packet::new_checked(&past[..]).unwrap();
        assert_eq!(NdiscRepr::parse(&p), Err(Error::Malformed));
        let p = Icmpv6Packet::new_checked(&NS[..20]).unwrap();
        assert_eq!(NdiscRepr::parse(&p), Err(Error::Malformed));
        let mut coded = NS;
        coded[1] = 1;
        let p = Icmpv6Packet::new_checked(&coded[..]).unwrap();
        assert_eq!(NdiscRepr::parse(&p), Err(Error::Malformed));
        let echo = [128, 0, 0, 0, 0, 1, 0, 1];
        let p = Icmpv6Packet::new_checked(&echo[..]).unwrap();
        assert_eq!(NdiscRepr::parse(&p), Err(Error::Unsupported));
        assert_eq!(
            Icmpv6Packet::new_checked(&echo[..7]).unwrap_err(),
            Error::Truncated
        );
        // Without options: no link-layer address, still readable.
        let p = Icmpv6Packet::new_checked(&NS[..24]).unwrap();
        assert!(matches!(
            NdiscRepr::parse(&p),
            Ok(NdiscRepr::Solicit {
                source_lladdr: None,
                ..
            })
        ));
    }

    #[test]
    fn echo_and_errors() {
        let (src, dst) = (a("2001:db8::1"), a("2001:db8::100"));
        let mut echo = [128u8, 0, 0, 0, 0x12, 0x34, 0, 7, b'h', b'i'];
        Icmpv6Packet::new_unchecked(&mut echo[..]).fill_checksum(src, dst);
        let mut p = Icmpv6Packet::new_checked(&mut echo[..]).unwrap();
        assert!(p.verify_checksum(src, dst));
        assert_eq!((p.echo_ident(), p.echo_seq_no()), (0x1234, 7));
        assert_eq!(p.data(), b"hi");
        assert!(!p.msg_type().is_error());
        p.make_echo_reply();
        p.fill_checksum(dst, src);
        assert!(p.verify_checksum(dst, src));
        assert_eq!(p.msg_type(), Icmpv6Type::ECHO_REPLY);
        let mut ptb = [2u8, 0, 0, 0, 0, 0, 0, 0];
        Icmpv6Packet::new_unchecked(&mut ptb[..]).set_mtu(1280);
        let p = Icmpv6Packet::new_checked(&ptb[..]).unwrap();
        assert!(p.msg_type().is_error());
        assert_eq!(p.mtu(), 1280);
    }
}
