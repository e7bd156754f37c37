//! ICMPv4 (RFC 792): echo, and the error messages that quote a packet privlink forwarded.
//!
//! The appliance answers pings to endpoint addresses in place
//! ([`Icmpv4Packet::make_echo_reply`]), originates time-exceeded and destination-unreachable
//! errors ([`emit_time_exceeded`], [`emit_dst_unreachable`]), and translates errors coming
//! back from targets, which means rewriting the quoted header through
//! [`Icmpv4Packet::quote_mut`].
//!
//! No-panic contract: after [`Icmpv4Packet::new_checked`] succeeds, no accessor or setter
//! panics; [`Icmpv4Packet::quote`] validates the quoted header on every call, and the emit
//! functions check every length they write. The view covers exactly the ICMP message (an
//! IPv4 payload), because the checksum covers all of it.

use core::fmt;

use super::checksum;
use super::ipv4::{IpProtocol, Ipv4Packet};
use super::{Error, Result};

mod field {
    use core::ops::Range;

    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Range<usize> = 2..4;
    pub const ECHO_IDENT: Range<usize> = 4..6;
    pub const ECHO_SEQNO: Range<usize> = 6..8;
    /// RFC 1191: the low half of the "unused" word of a fragmentation-needed message.
    pub const NEXT_HOP_MTU: Range<usize> = 6..8;
    pub const REST_OF_HEADER: Range<usize> = 4..8;
    pub const DATA: usize = 8;
}

/// The length of the ICMP header (type, code, checksum, and one 32-bit word).
pub const HEADER_LEN: usize = field::DATA;

/// The bytes of the original payload an error quotes after its IP header (RFC 792).
pub const QUOTE_PAYLOAD_LEN: usize = 8;

/// The ICMP message type. Unknown values are kept, not rejected.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Icmpv4Type(pub u8);

impl Icmpv4Type {
    pub const ECHO_REPLY: Self = Self(0);
    pub const DST_UNREACHABLE: Self = Self(3);
    pub const SOURCE_QUENCH: Self = Self(4);
    pub const REDIRECT: Self = Self(5);
    pub const ECHO_REQUEST: Self = Self(8);
    pub const TIME_EXCEEDED: Self = Self(11);
    pub const PARAM_PROBLEM: Self = Self(12);

    /// An error message, which quotes the packet that caused it and must never be
    /// answered with another error (RFC 1122 §3.2.2).
    #[inline]
    pub const fn is_error(self) -> bool {
        matches!(self.0, 3 | 4 | 5 | 11 | 12)
    }
}

impl fmt::Debug for Icmpv4Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::ECHO_REPLY => f.write_str("EchoReply"),
            Self::DST_UNREACHABLE => f.write_str("DstUnreachable"),
            Self::SOURCE_QUENCH => f.write_str("SourceQuench"),
            Self::REDIRECT => f.write_str("Redirect"),
            Self::ECHO_REQUEST => f.write_str("EchoRequest"),
            Self::TIME_EXCEEDED => f.write_str("TimeExceeded"),
            Self::PARAM_PROBLEM => f.write_str("ParamProblem"),
            Self(v) => write!(f, "Icmpv4Type({v})"),
        }
    }
}

impl From<u8> for Icmpv4Type {
    fn from(v: u8) -> Self {
        Self(v)
    }
}

impl From<Icmpv4Type> for u8 {
    fn from(v: Icmpv4Type) -> Self {
        v.0
    }
}

/// Destination-unreachable codes privlink sends or translates.
pub mod unreachable {
    pub const NET: u8 = 0;
    pub const HOST: u8 = 1;
    pub const PROTOCOL: u8 = 2;
    pub const PORT: u8 = 3;
    /// Fragmentation needed and DF set; carries the next-hop MTU (RFC 1191).
    pub const FRAG_NEEDED: u8 = 4;
    /// Communication administratively prohibited (RFC 1812), for policy denials.
    pub const ADMIN_PROHIBITED: u8 = 13;
}

/// Time-exceeded codes.
pub mod time_exceeded {
    pub const TTL: u8 = 0;
    pub const REASSEMBLY: u8 = 1;
}

/// A view of an ICMPv4 message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Icmpv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv4Packet<T> {
    /// A view without any check; accessors may panic on a short buffer.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// A view whose accessors cannot panic, or [`Error::Truncated`] below 8 bytes.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    #[inline]
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    fn u16_at(&self, at: usize) -> u16 {
        let d = self.buffer.as_ref();
        u16::from_be_bytes([d[at], d[at + 1]])
    }

    #[inline]
    pub fn msg_type(&self) -> Icmpv4Type {
        Icmpv4Type(self.buffer.as_ref()[field::TYPE])
    }

    #[inline]
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        self.u16_at(field::CHECKSUM.start)
    }

    /// The identifier of an echo request or reply.
    #[inline]
    pub fn echo_ident(&self) -> u16 {
        self.u16_at(field::ECHO_IDENT.start)
    }

    /// The sequence number of an echo request or reply.
    #[inline]
    pub fn echo_seq_no(&self) -> u16 {
        self.u16_at(field::ECHO_SEQNO.start)
    }

    /// The next-hop MTU of a fragmentation-needed message (0 from pre-RFC 1191 routers).
    #[inline]
    pub fn next_hop_mtu(&self) -> u16 {
        self.u16_at(field::NEXT_HOP_MTU.start)
    }

    /// The 32-bit word after the checksum, whatever the type makes of it.
    #[inline]
    pub fn rest_of_header(&self) -> [u8; 4] {
        let d = self.buffer.as_ref();
        let r = field::REST_OF_HEADER.start;
        [d[r], d[r + 1], d[r + 2], d[r + 3]]
    }

    #[inline]
    pub fn is_error(&self) -> bool {
        self.msg_type().is_error()
    }

    /// The checksum over the whole message is correct.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::data(self.buffer.as_ref()) == 0xffff
    }

    /// Everything after the 8-byte header: echo data, or an error's quote.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::DATA..]
    }

    /// The quoted original packet of an error message: its IPv4 header and the first bytes
    /// of its payload (usually 8, enough for TCP/UDP ports).
    ///
    /// [`Error::Unsupported`] if this is not an error message; the quote's own errors
    /// (see [`Ipv4Packet::new_checked_quote`]) otherwise.
    #[inline]
    pub fn quote(&self) -> Result<Ipv4Packet<&[u8]>> {
        if !self.is_error() {
            return Err(Error::Unsupported);
        }
        Ipv4Packet::new_checked_quote(self.payload())
    }
}

impl<'a> Icmpv4Packet<&'a [u8]> {
    /// The payload, borrowed for as long as the buffer rather than the view.
    #[inline]
    pub fn into_payload(self) -> &'a [u8] {
        &self.buffer[field::DATA..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv4Packet<T> {
    #[inline]
    fn set_u16_at(&mut self, at: usize, v: u16) {
        self.buffer.as_mut()[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }

    #[inline]
    pub fn set_msg_type(&mut self, v: Icmpv4Type) {
        self.buffer.as_mut()[field::TYPE] = v.0;
    }

    #[inline]
    pub fn set_code(&mut self, v: u8) {
        self.buffer.as_mut()[field::CODE] = v;
    }

    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        self.set_u16_at(field::CHECKSUM.start, v);
    }

    #[inline]
    pub fn set_echo_ident(&mut self, v: u16) {
        self.set_u16_at(field::ECHO_IDENT.start, v);
    }

    #[inline]
    pub fn set_echo_seq_no(&mut self, v: u16) {
        self.set_u16_at(field::ECHO_SEQNO.start, v);
    }

    #[inline]
    pub fn set_next_hop_mtu(&mut self, v: u16) {
        self.set_u16_at(field::NEXT_HOP_MTU.start, v);
    }

    #[inline]
    pub fn set_rest_of_header(&mut self, v: [u8; 4]) {
        self.buffer.as_mut()[field::REST_OF_HEADER].copy_from_slice(&v);
    }

    /// Computes and stores the checksum over the whole message.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = !checksum::data(self.buffer.as_ref());
        self.set_checksum(c);
    }

    /// Turns an echo request into its reply in place: only the type changes, and the
    /// checksum is updated incrementally (a bad checksum stays bad, so verify first if it
    /// matters). The IP layer's part is to swap source and destination, which leaves the
    /// IPv4 header checksum unchanged.
    ///
    /// [`Error::Unsupported`] if this is not an echo request.
    #[inline]
    pub fn make_echo_reply(&mut self) -> Result<()> {
        if self.msg_type() != Icmpv4Type::ECHO_REQUEST {
            return Err(Error::Unsupported);
        }
        let code = self.code();
        let old = u16::from_be_bytes([Icmpv4Type::ECHO_REQUEST.0, code]);
        let new = u16::from_be_bytes([Icmpv4Type::ECHO_REPLY.0, code]);
        self.set_msg_type(Icmpv4Type::ECHO_REPLY);
        let c = checksum::update_u16(self.checksum(), old, new);
        // ICMP has no pseudo-header, so a reply can be all zeros (ident 0, seq 0, no data),
        // and then only 0xFFFF verifies. For any other message 0xFFFF and 0x0000 are the
        // same ones'-complement value, so 0xFFFF is always right.
        self.set_checksum(if c == 0 { 0xffff } else { c });
        Ok(())
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::DATA..]
    }

    /// [`quote`](Self::quote), writable: for translating the addresses and ports of a
    /// packet quoted by an error coming back through the appliance. Fix the quoted
    /// header's checksum, then this message's ([`fill_checksum`](Self::fill_checksum)).
    #[inline]
    pub fn quote_mut(&mut self) -> Result<Ipv4Packet<&mut [u8]>> {
        if !self.is_error() {
            return Err(Error::Unsupported);
        }
        Ipv4Packet::new_checked_quote(self.payload_mut())
    }
}

/// The checked, owned form of the ICMP messages privlink handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Icmpv4Repr<'a> {
    EchoRequest {
        ident: u16,
        seq_no: u16,
        data: &'a [u8],
    },
    EchoReply {
        ident: u16,
        seq_no: u16,
        data: &'a [u8],
    },
    /// `quote` is the original IPv4 header and the start of its payload.
    DstUnreachable {
        code: u8,
        /// Meaningful for [`unreachable::FRAG_NEEDED`] only; 0 otherwise.
        next_hop_mtu: u16,
        quote: &'a [u8],
    },
    TimeExceeded {
        code: u8,
        quote: &'a [u8],
    },
}

impl<'a> Icmpv4Repr<'a> {
    /// The message in a checked packet.
    ///
    /// [`Error::BadChecksum`] on a wrong checksum, [`Error::Unsupported`] for other types,
    /// [`Error::Malformed`] for an error whose quote is not an IPv4 header.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Icmpv4Packet<&'a T>) -> Result<Self> {
        packet.check_len()?;
        if !packet.verify_checksum() {
            return Err(Error::BadChecksum);
        }
        // Through `&'a T` so the repr borrows the buffer, not the view.
        let buffer: &'a T = packet.buffer;
        let data = &buffer.as_ref()[field::DATA..];
        match packet.msg_type() {
            Icmpv4Type::ECHO_REQUEST => Ok(Self::EchoRequest {
                ident: packet.echo_ident(),
                seq_no: packet.echo_seq_no(),
                data,
            }),
            Icmpv4Type::ECHO_REPLY => Ok(Self::EchoReply {
                ident: packet.echo_ident(),
                seq_no: packet.echo_seq_no(),
                data,
            }),
            Icmpv4Type::DST_UNREACHABLE => {
                Ipv4Packet::new_checked_quote(data).map_err(|_| Error::Malformed)?;
                Ok(Self::DstUnreachable {
                    code: packet.code(),
                    next_hop_mtu: if packet.code() == unreachable::FRAG_NEEDED {
                        packet.next_hop_mtu()
                    } else {
                        0
                    },
                    quote: data,
                })
            }
            Icmpv4Type::TIME_EXCEEDED => {
                Ipv4Packet::new_checked_quote(data).map_err(|_| Error::Malformed)?;
                Ok(Self::TimeExceeded {
                    code: packet.code(),
                    quote: data,
                })
            }
            _ => Err(Error::Unsupported),
        }
    }

    /// The length [`emit`](Self::emit) writes.
    #[inline]
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN
            + match self {
                Self::EchoRequest { data, .. } | Self::EchoReply { data, .. } => data.len(),
                Self::DstUnreachable { quote, .. } | Self::TimeExceeded { quote, .. } => {
                    quote.len()
                }
            }
    }

    /// Writes the whole message with its checksum into the front of `buf` and returns its
    /// length, or [`Error::Truncated`].
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        let len = self.buffer_len();
        let buf = buf.get_mut(..len).ok_or(Error::Truncated)?;
        let (msg_type, code, rest, body) = match *self {
            Self::EchoRequest {
                ident,
                seq_no,
                data,
            } => (Icmpv4Type::ECHO_REQUEST, 0, echo_word(ident, seq_no), data),
            Self::EchoReply {
                ident,
                seq_no,
                data,
            } => (Icmpv4Type::ECHO_REPLY, 0, echo_word(ident, seq_no), data),
            Self::DstUnreachable {
                code,
                next_hop_mtu,
                quote,
            } => {
                let [hi, lo] = next_hop_mtu.to_be_bytes();
                (Icmpv4Type::DST_UNREACHABLE, code, [0, 0, hi, lo], quote)
            }
            Self::TimeExceeded { code, quote } => (Icmpv4Type::TIME_EXCEEDED, code, [0; 4], quote),
        };
        buf[field::DATA..].copy_from_slice(body);
        let mut p = Icmpv4Packet::new_unchecked(buf);
        p.set_msg_type(msg_type);
        p.set_code(code);
        p.set_rest_of_header(rest);
        p.fill_checksum();
        Ok(len)
    }
}

#[inline]
fn echo_word(ident: u16, seq_no: u16) -> [u8; 4] {
    let [a, b] = ident.to_be_bytes();
    let [c, d] = seq_no.to_be_bytes();
    [a, b, c, d]
}

/// The part of `original` (an IPv4 packet) an error about it quotes: the header and up to
/// 8 payload bytes.
///
/// [`Error::Unsupported`] where RFC 1122 §3.2.2 forbids an error: the original is itself
/// an ICMP error (or an ICMP message too short to tell), a non-initial fragment, sent to a
/// broadcast or multicast address, or from an address that is not one host (0/8, 127/8,
/// 224/3 and up). Errors of the original's header otherwise.
pub fn quote_of(original: &[u8]) -> Result<&[u8]> {
    let ip = Ipv4Packet::new_checked_quote(original)?;
    if ip.frag_offset() != 0 {
        return Err(Error::Unsupported);
    }
    let dst = ip.dst_addr();
    if dst.is_broadcast() || dst.is_multicast() {
        return Err(Error::Unsupported);
    }
    let src = ip.src_addr_bytes();
    if src[0] == 0 || src[0] == 127 || src[0] >= 224 {
        return Err(Error::Unsupported);
    }
    let header_len = ip.header_len();
    let payload = ip.into_payload();
    if ip_is_icmp_error(ip.protocol(), payload) {
        return Err(Error::Unsupported);
    }
    let len = header_len + payload.len().min(QUOTE_PAYLOAD_LEN);
    original.get(..len).ok_or(Error::Truncated)
}

#[inline]
fn ip_is_icmp_error(protocol: IpProtocol, payload: &[u8]) -> bool {
    protocol == IpProtocol::ICMP
        && match payload.first() {
            Some(&t) => Icmpv4Type(t).is_error(),
            None => true,
        }
}

/// Writes a time-exceeded message quoting `original` into `buf` and returns its length.
/// The IPv4 header around it is the caller's (from the appliance's address to the
/// original's source). Errors: those of [`quote_of`], or [`Error::Truncated`] if `buf`
/// is too short.
pub fn emit_time_exceeded(buf: &mut [u8], code: u8, original: &[u8]) -> Result<usize> {
    let quote = quote_of(original)?;
    Icmpv4Repr::TimeExceeded { code, quote }.emit(buf)
}

/// Writes a destination-unreachable message quoting `original` into `buf` and returns
/// its length. `next_hop_mtu` is sent for [`unreachable::FRAG_NEEDED`] only. Errors as
/// [`emit_time_exceeded`].
pub fn emit_dst_unreachable(
    buf: &mut [u8],
    code: u8,
    next_hop_mtu: u16,
    original: &[u8],
) -> Result<usize> {
    let quote = quote_of(original)?;
    let next_hop_mtu = if code == unreachable::FRAG_NEEDED {
        next_hop_mtu
    } else {
        0
    };
    Icmpv4Repr::DstUnreachable {
        code,
        next_hop_mtu,
        quote,
    }
    .emit(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo request: ident 0x1234, seq 1, 8 data bytes "abcdefgh".
    const ECHO_REQUEST: [u8; 16] = [
        0x08, 0x00, 0x54, 0x35, 0x12, 0x34, 0x00, 0x01, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67,
        0x68,
    ];
    const ECHO_REPLY: [u8; 16] = [
        0x00, 0x00, 0x5c, 0x35, 0x12, 0x34, 0x00, 0x01, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67,
        0x68,
    ];

    /// A TCP SYN from 10.0.0.1:40000 to 10.0.0.2:80, TTL 1: the packet an error quotes.
    fn original() -> [u8; 40] {
        let mut p = [
            0x45, 0x00, 0x00, 0x28, 0x00, 0x01, 0x40, 0x00, 0x01, 0x06, 0x00, 0x00, 0x0a, 0x00,
            0x00, 0x01, 0x0a, 0x00, 0x00, 0x02, 0x9c, 0x40, 0x00, 0x50, 0x00, 0x00, 0x00, 0x64,
            0x00, 0x00, 0x00, 0x00, 0x50, 0x02, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00,
        ];
        Ipv4Packet::new_unchecked(&mut p[..]).fill_checksum();
        p
    }

    #[test]
    fn echo_deconstruct() {
        let p = Icmpv4Packet::new_checked(&ECHO_REQUEST[..]).unwrap();
        assert_eq!(p.msg_type(), Icmpv4Type::ECHO_REQUEST);
        assert_eq!(p.code(), 0);
        assert_eq!(p.checksum(), 0x5435);
        assert!(p.verify_checksum());
        assert_eq!(p.echo_ident(), 0x1234);
        assert_eq!(p.echo_seq_no(), 1);
        assert_eq!(p.rest_of_header(), [0x12, 0x34, 0x00, 0x01]);
        assert_eq!(p.payload(), b"abcdefgh");
        assert!(!p.is_error());
        assert_eq!(p.quote().err(), Some(Error::Unsupported));
        assert_eq!(p.into_payload().len(), 8);
    }

    #[test]
    fn echo_construct() {
        let mut buf = [0u8; 16];
        buf[8..].copy_from_slice(b"abcdefgh");
        let mut p = Icmpv4Packet::new_checked(&mut buf[..]).unwrap();
        p.set_msg_type(Icmpv4Type::ECHO_REQUEST);
        p.set_code(0);
        p.set_echo_ident(0x1234);
        p.set_echo_seq_no(1);
        p.fill_checksum();
        assert_eq!(buf, ECHO_REQUEST);
    }

    #[test]
    fn echo_reply_in_place() {
        let mut buf = ECHO_REQUEST;
        let mut p = Icmpv4Packet::new_checked(&mut buf[..]).unwrap();
        p.make_echo_reply().unwrap();
        assert!(p.verify_checksum());
        assert_eq!(p.make_echo_reply(), Err(Error::Unsupported));
        assert_eq!(buf, ECHO_REPLY);
    }

    #[test]
    fn all_zero_echo_reply_verifies() {
        let mut buf = [0x08, 0x00, 0xf7, 0xff, 0, 0, 0, 0];
        let mut p = Icmpv4Packet::new_checked(&mut buf[..]).unwrap();
        assert!(p.verify_checksum());
        p.make_echo_reply().unwrap();
        assert!(p.verify_checksum());
        assert_eq!(p.checksum(), 0xffff);
    }

    #[test]
    fn echo_parse_emit() {
        let p = Icmpv4Packet::new_checked(&ECHO_REQUEST[..]).unwrap();
        let repr = Icmpv4Repr::parse(&p).unwrap();
        assert_eq!(
            repr,
            Icmpv4Repr::EchoRequest {
                ident: 0x1234,
                seq_no: 1,
                data: b"abcdefgh"
            }
        );
        let mut buf = [0u8; 16];
        assert_eq!(repr.emit(&mut buf), Ok(16));
        assert_eq!(buf, ECHO_REQUEST);
        assert_eq!(repr.emit(&mut buf[..15]), Err(Error::Truncated));
        let reply = Icmpv4Repr::EchoReply {
            ident: 0x1234,
            seq_no: 1,
            data: b"abcdefgh",
        };
        reply.emit(&mut buf).unwrap();
        assert_eq!(buf, ECHO_REPLY);
        assert_eq!(
            Icmpv4Repr::parse(&Icmpv4Packet::new_checked(&ECHO_REPLY[..]).unwrap()),
            Ok(reply)
        );
    }

    #[test]
    fn bad_checksum_and_unknown_type() {
        let mut buf = ECHO_REQUEST;
        buf[15] ^= 0x01;
        let p = Icmpv4Packet::new_checked(&buf[..]).unwrap();
        assert!(!p.verify_checksum());
        assert_eq!(Icmpv4Repr::parse(&p), Err(Error::BadChecksum));

        let mut buf = ECHO_REQUEST;
        buf[0] = 13; // timestamp
        let mut p = Icmpv4Packet::new_checked(&mut buf[..]).unwrap();
        p.fill_checksum();
        assert_eq!(format!("{:?}", p.msg_type()), "Icmpv4Type(13)");
        let p = Icmpv4Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(Icmpv4Repr::parse(&p), Err(Error::Unsupported));
    }

    #[test]
    fn short_at_every_length() {
        for n in 0..HEADER_LEN {
            assert_eq!(
                Icmpv4Packet::new_checked(&ECHO_REQUEST[..n]).err(),
                Some(Error::Truncated)
            );
        }
        assert!(Icmpv4Packet::new_checked(&ECHO_REQUEST[..8])
            .unwrap()
            .payload()
            .is_empty());
    }

    #[test]
    fn time_exceeded() {
        let orig = original();
        let mut buf = [0u8; 64];
        let n = emit_time_exceeded(&mut buf, time_exceeded::TTL, &orig).unwrap();
        assert_eq!(n, 8 + 20 + 8);
        let p = Icmpv4Packet::new_checked(&buf[..n]).unwrap();
        assert_eq!(p.msg_type(), Icmpv4Type::TIME_EXCEEDED);
        assert!(p.is_error() && p.verify_checksum());
        assert_eq!(p.rest_of_header(), [0; 4]);
        let q = p.quote().unwrap();
        assert_eq!(q.src_addr_bytes(), [10, 0, 0, 1]);
        assert_eq!(q.total_len(), 40);
        assert_eq!(q.protocol(), IpProtocol::TCP);
        assert_eq!(q.payload(), &orig[20..28]);
        assert_eq!(
            Icmpv4Repr::parse(&p),
            Ok(Icmpv4Repr::TimeExceeded {
                code: 0,
                quote: &orig[..28]
            })
        );
        assert_eq!(
            emit_time_exceeded(&mut buf[..35], 0, &orig),
            Err(Error::Truncated)
        );
    }

    #[test]
    fn frag_needed() {
        let orig = original();
        let mut buf = [0u8; 64];
        let n = emit_dst_unreachable(&mut buf, unreachable::FRAG_NEEDED, 1400, &orig).unwrap();
        let p = Icmpv4Packet::new_checked(&buf[..n]).unwrap();
        assert_eq!(p.msg_type(), Icmpv4Type::DST_UNREACHABLE);
        assert_eq!(p.code(), 4);
        assert_eq!(p.next_hop_mtu(), 1400);
        assert!(p.verify_checksum());
        assert_eq!(
            Icmpv4Repr::parse(&p),
            Ok(Icmpv4Repr::DstUnreachable {
                code: 4,
                next_hop_mtu: 1400,
                quote: &orig[..28]
            })
        );
        // The MTU is only sent with code 4.
        let n = emit_dst_unreachable(&mut buf, unreachable::PORT, 1400, &orig).unwrap();
        let p = Icmpv4Packet::new_checked(&buf[..n]).unwrap();
        assert_eq!(p.next_hop_mtu(), 0);
    }

    #[test]
    fn translate_quote_in_place() {
        let orig = original();
        let mut buf = [0u8; 36];
        emit_time_exceeded(&mut buf, 0, &orig).unwrap();
        let mut p = Icmpv4Packet::new_checked(&mut buf[..]).unwrap();
        {
            let mut q = p.quote_mut().unwrap();
            q.rewrite_src_addr([192, 168, 1, 1]);
            assert!(q.verify_checksum());
            q.into_payload_mut()[0..2].copy_from_slice(&1234u16.to_be_bytes());
        }
        p.fill_checksum();
        assert!(p.verify_checksum());
        assert_eq!(p.quote().unwrap().src_addr_bytes(), [192, 168, 1, 1]);
        assert_eq!(&p.quote().unwrap().payload()[..2], &1234u16.to_be_bytes());
        let mut echo = ECHO_REQUEST;
        let mut e = Icmpv4Packet::new_checked(&mut echo[..]).unwrap();
        assert_eq!(e.quote_mut().err(), Some(Error::Unsupported));
    }

    #[test]
    fn short_original_quotes_what_there_is() {
        // A UDP packet with a 4-byte payload (ports only, a truncated header).
        let mut orig = [0u8; 24];
        orig[..20].copy_from_slice(&original()[..20]);
        orig[2..4].copy_from_slice(&24u16.to_be_bytes());
        orig[9] = 17;
        let mut buf = [0u8; 64];
        let n = emit_dst_unreachable(&mut buf, unreachable::PORT, 0, &orig).unwrap();
        assert_eq!(n, 8 + 24);
    }

    #[test]
    fn errors_never_answer_errors() {
        let mut buf = [0u8; 64];
        // An ICMP error as the original.
        let mut te = [0u8; 36];
        emit_time_exceeded(&mut te, 0, &original()).unwrap();
        let mut orig = [0u8; 56];
        orig[..20].copy_from_slice(&original()[..20]);
        orig[2..4].copy_from_slice(&56u16.to_be_bytes());
        orig[9] = 1;
        orig[20..].copy_from_slice(&te);
        assert_eq!(
            emit_time_exceeded(&mut buf, 0, &orig),
            Err(Error::Unsupported)
        );
        // An echo request as the original is fine.
        orig[20..36].copy_from_slice(&ECHO_REQUEST);
        assert!(emit_time_exceeded(&mut buf, 0, &orig).is_ok());
        // An ICMP original without even a type byte.
        orig[2..4].copy_from_slice(&20u16.to_be_bytes());
        assert_eq!(
            emit_time_exceeded(&mut buf, 0, &orig[..20]),
            Err(Error::Unsupported)
        );
        // A non-initial fragment.
        let mut frag = original();
        frag[6..8].copy_from_slice(&0x00b9u16.to_be_bytes());
        assert_eq!(
            emit_time_exceeded(&mut buf, 0, &frag),
            Err(Error::Unsupported)
        );
        // Broadcast and multicast destinations; sources that are not one host.
        for (at, addr) in [
            (16, [255, 255, 255, 255]),
            (16, [224, 0, 0, 1]),
            (12, [0, 0, 0, 0]),
            (12, [127, 0, 0, 1]),
            (12, [239, 1, 1, 1]),
            (12, [240, 0, 0, 1]),
        ] {
            let mut o = original();
            o[at..at + 4].copy_from_slice(&addr);
            assert_eq!(
                emit_dst_unreachable(&mut buf, 1, 0, &o),
                Err(Error::Unsupported),
                "{addr:?}"
            );
        }
        // A garbage original.
        assert_eq!(
            emit_time_exceeded(&mut buf, 0, &[0x45; 10]),
            Err(Error::Truncated)
        );
        assert_eq!(
            emit_time_exceeded(&mut buf, 0, &[0x60; 40]),
            Err(Error::Malformed)
        );
    }

    #[test]
    fn malformed_quote() {
        let mut buf = [0u8; 16];
        buf[0] = 3;
        buf[8] = 0x45; // a quote too short for its header
        let mut p = Icmpv4Packet::new_checked(&mut buf[..]).unwrap();
        p.fill_checksum();
        assert_eq!(p.quote().err(), Some(Error::Truncated));
        let p = Icmpv4Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(Icmpv4Repr::parse(&p), Err(Error::Malformed));
        buf[0] = 11;
        let mut p = Icmpv4Packet::new_checked(&mut buf[..]).unwrap();
        p.fill_checksum();
        let p = Icmpv4Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(Icmpv4Repr::parse(&p), Err(Error::Malformed));
    }
}
