//! ARP (RFC 826) for Ethernet and IPv4, the only combination privlink resolves.
//!
//! The appliance answers requests for its endpoint and SNAT addresses and asks for next-hop
//! MACs; anything other than hardware type 1 / protocol 0x0800 / lengths 6 and 4 is
//! [`Error::Unsupported`] and must be dropped, never answered.
//!
//! No-panic contract: after [`ArpPacket::new_checked`] succeeds, no accessor or setter
//! panics. Trailing bytes (Ethernet padding) are ignored.

use core::fmt;
use std::net::Ipv4Addr;

use super::ethernet::{EtherType, EthernetAddress};
use super::{Error, Result};

mod field {
    use core::ops::Range;

    pub const HTYPE: Range<usize> = 0..2;
    pub const PTYPE: Range<usize> = 2..4;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: Range<usize> = 6..8;
    pub const SHA: Range<usize> = 8..14;
    pub const SPA: Range<usize> = 14..18;
    pub const THA: Range<usize> = 18..24;
    pub const TPA: Range<usize> = 24..28;
    pub const END: usize = 28;
}

/// The length of an Ethernet/IPv4 ARP packet.
pub const PACKET_LEN: usize = field::END;

/// Hardware type "Ethernet".
pub const HTYPE_ETHERNET: u16 = 1;

/// The ARP operation. Values other than request and reply are kept, not rejected.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ArpOperation(pub u16);

impl ArpOperation {
    pub const REQUEST: Self = Self(1);
    pub const REPLY: Self = Self(2);
}

impl fmt::Debug for ArpOperation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::REQUEST => f.write_str("Request"),
            Self::REPLY => f.write_str("Reply"),
            Self(v) => write!(f, "ArpOperation({v})"),
        }
    }
}

impl From<u16> for ArpOperation {
    fn from(v: u16) -> Self {
        Self(v)
    }
}

impl From<ArpOperation> for u16 {
    fn from(v: ArpOperation) -> Self {
        v.0
    }
}

/// A view of an Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

#[inline]
fn u16_at(d: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([d[at], d[at + 1]])
}

#[inline]
fn ipv4_at(d: &[u8], at: usize) -> [u8; 4] {
    [d[at], d[at + 1], d[at + 2], d[at + 3]]
}

#[inline]
fn mac_at(d: &[u8], at: usize) -> EthernetAddress {
    EthernetAddress([d[at], d[at + 1], d[at + 2], d[at + 3], d[at + 4], d[at + 5]])
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// A view without any check; accessors may panic on a short buffer.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// A view whose accessors cannot panic.
    ///
    /// [`Error::Truncated`] if the fixed part or the addresses do not fit,
    /// [`Error::Unsupported`] if the hardware/protocol types or lengths are not
    /// Ethernet/IPv4.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks the types, then that the addresses fit.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let d = self.buffer.as_ref();
        if d.len() < field::OPER.start {
            return Err(Error::Truncated);
        }
        if self.hardware_type() != HTYPE_ETHERNET
            || self.protocol_type() != EtherType::IPV4
            || self.hardware_len() != 6
            || self.protocol_len() != 4
        {
            return Err(Error::Unsupported);
        }
        if d.len() < field::END {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn hardware_type(&self) -> u16 {
        u16_at(self.buffer.as_ref(), field::HTYPE.start)
    }

    #[inline]
    pub fn protocol_type(&self) -> EtherType {
        EtherType(u16_at(self.buffer.as_ref(), field::PTYPE.start))
    }

    #[inline]
    pub fn hardware_len(&self) -> u8 {
        self.buffer.as_ref()[field::HLEN]
    }

    #[inline]
    pub fn protocol_len(&self) -> u8 {
        self.buffer.as_ref()[field::PLEN]
    }

    #[inline]
    pub fn operation(&self) -> ArpOperation {
        ArpOperation(u16_at(self.buffer.as_ref(), field::OPER.start))
    }

    #[inline]
    pub fn source_hardware_addr(&self) -> EthernetAddress {
        mac_at(self.buffer.as_ref(), field::SHA.start)
    }

    #[inline]
    pub fn source_protocol_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.source_protocol_addr_bytes())
    }

    #[inline]
    pub fn source_protocol_addr_bytes(&self) -> [u8; 4] {
        ipv4_at(self.buffer.as_ref(), field::SPA.start)
    }

    #[inline]
    pub fn target_hardware_addr(&self) -> EthernetAddress {
        mac_at(self.buffer.as_ref(), field::THA.start)
    }

    #[inline]
    pub fn target_protocol_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.target_protocol_addr_bytes())
    }

    #[inline]
    pub fn target_protocol_addr_bytes(&self) -> [u8; 4] {
        ipv4_at(self.buffer.as_ref(), field::TPA.start)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    #[inline]
    pub fn set_hardware_type(&mut self, v: u16) {
        self.buffer.as_mut()[field::HTYPE].copy_from_slice(&v.to_be_bytes());
    }

    #[inline]
    pub fn set_protocol_type(&mut self, v: EtherType) {
        self.buffer.as_mut()[field::PTYPE].copy_from_slice(&v.0.to_be_bytes());
    }

    #[inline]
    pub fn set_hardware_len(&mut self, v: u8) {
        self.buffer.as_mut()[field::HLEN] = v;
    }

    #[inline]
    pub fn set_protocol_len(&mut self, v: u8) {
        self.buffer.as_mut()[field::PLEN] = v;
    }

    #[inline]
    pub fn set_operation(&mut self, v: ArpOperation) {
        self.buffer.as_mut()[field::OPER].copy_from_slice(&v.0.to_be_bytes());
    }

    #[inline]
    pub fn set_source_hardware_addr(&mut self, v: EthernetAddress) {
        self.buffer.as_mut()[field::SHA].copy_from_slice(&v.0);
    }

    #[inline]
    pub fn set_source_protocol_addr(&mut self, v: Ipv4Addr) {
        self.buffer.as_mut()[field::SPA].copy_from_slice(&v.octets());
    }

    #[inline]
    pub fn set_target_hardware_addr(&mut self, v: EthernetAddress) {
        self.buffer.as_mut()[field::THA].copy_from_slice(&v.0);
    }

    #[inline]
    pub fn set_target_protocol_addr(&mut self, v: Ipv4Addr) {
        self.buffer.as_mut()[field::TPA].copy_from_slice(&v.octets());
    }

    /// Turns a request into the reply from `our_hw_addr` in place: the requester becomes
    /// the target and we answer for the address it asked about. The Ethernet header is the
    /// caller's (swap it, source `our_hw_addr`).
    ///
    /// [`Error::Unsupported`] if this is not a request.
    #[inline]
    pub fn make_reply(&mut self, our_hw_addr: EthernetAddress) -> Result<()> {
        if self.operation() != ArpOperation::REQUEST {
            return Err(Error::Unsupported);
        }
        let (sha, spa, tpa) = (
            self.source_hardware_addr(),
            self.source_protocol_addr(),
            self.target_protocol_addr(),
        );
        self.set_operation(ArpOperation::REPLY);
        self.set_target_hardware_addr(sha);
        self.set_target_protocol_addr(spa);
        self.set_source_hardware_addr(our_hw_addr);
        self.set_source_protocol_addr(tpa);
        Ok(())
    }
}

/// The checked, owned form of an Ethernet/IPv4 ARP request or reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ArpRepr {
    pub operation: ArpOperation,
    pub source_hardware_addr: EthernetAddress,
    pub source_protocol_addr: Ipv4Addr,
    pub target_hardware_addr: EthernetAddress,
    pub target_protocol_addr: Ipv4Addr,
}

impl ArpRepr {
    /// A request from `source` asking who has `target_protocol_addr`.
    #[inline]
    pub const fn request(
        source_hardware_addr: EthernetAddress,
        source_protocol_addr: Ipv4Addr,
        target_protocol_addr: Ipv4Addr,
    ) -> Self {
        Self {
            operation: ArpOperation::REQUEST,
            source_hardware_addr,
            source_protocol_addr,
            target_hardware_addr: EthernetAddress::UNSPECIFIED,
            target_protocol_addr,
        }
    }

    /// The reply to `request` from the owner of its target address, `our_hw_addr`.
    ///
    /// [`Error::Unsupported`] if `request` is not a request.
    #[inline]
    pub fn reply_to(request: &Self, our_hw_addr: EthernetAddress) -> Result<Self> {
        if request.operation != ArpOperation::REQUEST {
            return Err(Error::Unsupported);
        }
        Ok(Self {
            operation: ArpOperation::REPLY,
            source_hardware_addr: our_hw_addr,
            source_protocol_addr: request.target_protocol_addr,
            target_hardware_addr: request.source_hardware_addr,
            target_protocol_addr: request.source_protocol_addr,
        })
    }

    /// The fields of a checked packet; [`Error::Unsupported`] for operations other than
    /// request and reply.
    #[inline]
    pub fn parse<T: AsRef<[u8]>>(packet: &ArpPacket<T>) -> Result<Self> {
        packet.check_len()?;
        let operation = packet.operation();
        if operation != ArpOperation::REQUEST && operation != ArpOperation::REPLY {
            return Err(Error::Unsupported);
        }
        Ok(Self {
            operation,
            source_hardware_addr: packet.source_hardware_addr(),
            source_protocol_addr: packet.source_protocol_addr(),
            target_hardware_addr: packet.target_hardware_addr(),
            target_protocol_addr: packet.target_protocol_addr(),
        })
    }

    #[inline]
    pub const fn buffer_len(&self) -> usize {
        PACKET_LEN
    }

    /// Writes the packet into the front of `buf` and returns its length, or
    /// [`Error::Truncated`].
    #[inline]
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        let buf = buf.get_mut(..PACKET_LEN).ok_or(Error::Truncated)?;
        let mut p = ArpPacket::new_unchecked(buf);
        p.set_hardware_type(HTYPE_ETHERNET);
        p.set_protocol_type(EtherType::IPV4);
        p.set_hardware_len(6);
        p.set_protocol_len(4);
        p.set_operation(self.operation);
        p.set_source_hardware_addr(self.source_hardware_addr);
        p.set_source_protocol_addr(self.source_protocol_addr);
        p.set_target_hardware_addr(self.target_hardware_addr);
        p.set_target_protocol_addr(self.target_protocol_addr);
        Ok(PACKET_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Who has 10.0.0.2? Tell 10.0.0.1 (52:54:00:12:34:56).
    const REQUEST: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x0a,
        0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x02,
    ];
    // 10.0.0.2 is at 02:00:00:00:00:02.
    const REPLY: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x0a,
        0x00, 0x00, 0x02, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x0a, 0x00, 0x00, 0x01,
    ];
    const MAC1: EthernetAddress = EthernetAddress([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
    const MAC2: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x02]);
    const IP1: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const IP2: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    #[test]
    fn deconstruct() {
        let p = ArpPacket::new_checked(&REQUEST[..]).unwrap();
        assert_eq!(p.hardware_type(), 1);
        assert_eq!(p.protocol_type(), EtherType::IPV4);
        assert_eq!((p.hardware_len(), p.protocol_len()), (6, 4));
        assert_eq!(p.operation(), ArpOperation::REQUEST);
        assert_eq!(p.source_hardware_addr(), MAC1);
        assert_eq!(p.source_protocol_addr(), IP1);
        assert_eq!(p.source_protocol_addr_bytes(), [10, 0, 0, 1]);
        assert_eq!(p.target_hardware_addr(), EthernetAddress::UNSPECIFIED);
        assert_eq!(p.target_protocol_addr(), IP2);
        assert_eq!(p.target_protocol_addr_bytes(), [10, 0, 0, 2]);
    }

    #[test]
    fn padded_frame_body() {
        // Ethernet pads an ARP frame to 60 bytes; the view ignores the tail.
        let mut padded = [0u8; 46];
        padded[..28].copy_from_slice(&REQUEST);
        let p = ArpPacket::new_checked(&padded[..]).unwrap();
        assert_eq!(ArpRepr::parse(&p).unwrap().target_protocol_addr, IP2);
    }

    #[test]
    fn construct() {
        let mut buf = [0xa5u8; 28];
        let mut p = ArpPacket::new_unchecked(&mut buf[..]);
        p.set_hardware_type(1);
        p.set_protocol_type(EtherType::IPV4);
        p.set_hardware_len(6);
        p.set_protocol_len(4);
        p.set_operation(ArpOperation::REQUEST);
        p.set_source_hardware_addr(MAC1);
        p.set_source_protocol_addr(IP1);
        p.set_target_hardware_addr(EthernetAddress::UNSPECIFIED);
        p.set_target_protocol_addr(IP2);
        assert_eq!(buf, REQUEST);
    }

    #[test]
    fn parse_emit() {
        let repr = ArpRepr::parse(&ArpPacket::new_checked(&REQUEST[..]).unwrap()).unwrap();
        assert_eq!(repr, ArpRepr::request(MAC1, IP1, IP2));
        let mut buf = [0u8; 28];
        assert_eq!(repr.emit(&mut buf), Ok(28));
        assert_eq!(buf, REQUEST);
        assert_eq!(repr.emit(&mut buf[..27]), Err(Error::Truncated));
        assert_eq!(repr.buffer_len(), 28);
    }

    #[test]
    fn reply() {
        let request = ArpRepr::request(MAC1, IP1, IP2);
        let reply = ArpRepr::reply_to(&request, MAC2).unwrap();
        let mut buf = [0u8; 28];
        reply.emit(&mut buf).unwrap();
        assert_eq!(buf, REPLY);
        assert_eq!(ArpRepr::reply_to(&reply, MAC2), Err(Error::Unsupported));

        let mut in_place = REQUEST;
        let mut p = ArpPacket::new_checked(&mut in_place[..]).unwrap();
        p.make_reply(MAC2).unwrap();
        assert_eq!(p.make_reply(MAC2), Err(Error::Unsupported));
        assert_eq!(in_place, REPLY);
    }

    #[test]
    fn unknown_operation() {
        let mut buf = REQUEST;
        buf[7] = 9;
        let p = ArpPacket::new_checked(&buf[..]).unwrap();
        assert_eq!(format!("{:?}", p.operation()), "ArpOperation(9)");
        assert_eq!(ArpRepr::parse(&p), Err(Error::Unsupported));
    }

    #[test]
    fn short_at_every_length() {
        for n in 0..28 {
            assert_eq!(
                ArpPacket::new_checked(&REQUEST[..n]).err(),
                Some(Error::Truncated),
                "length {n}"
            );
        }
    }

    #[test]
    fn wrong_types_are_unsupported() {
        for (at, value) in [(1, 6), (3, 0xdd), (2, 0x86), (4, 8), (5, 16)] {
            let mut buf = REQUEST;
            buf[at] = value;
            assert_eq!(
                ArpPacket::new_checked(&buf[..]).err(),
                Some(Error::Unsupported),
                "byte {at} = {value}"
            );
            // Judged unsupported before the length: a short IPv6 ARP is not "truncated".
            assert_eq!(
                ArpPacket::new_checked(&buf[..8]).err(),
                Some(Error::Unsupported)
            );
        }
    }
}
