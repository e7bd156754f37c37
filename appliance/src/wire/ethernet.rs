//! Ethernet II frames: destination, source, EtherType, payload.
//!
//! No-panic contract: after [`EthernetFrame::new_checked`] succeeds, no accessor or setter
//! panics. [`EthernetFrame::new_unchecked`] skips the length check; its accessors panic on a
//! buffer shorter than [`HEADER_LEN`]. The frame check sequence is not part of the view
//! (NICs strip it), and an 802.1Q tag is left in the payload for [`super::vlan`].

use core::fmt;
use core::str::FromStr;

use super::{Error, Result};

/// A 48-bit Ethernet (MAC) address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct EthernetAddress(pub [u8; 6]);

impl EthernetAddress {
    /// ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: Self = Self([0xff; 6]);
    /// 00:00:00:00:00:00, which ARP requests carry as the unknown target.
    pub const UNSPECIFIED: Self = Self([0; 6]);

    /// The address from the first six bytes of `bytes`, or `None` if there are fewer.
    #[inline]
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let b: [u8; 6] = bytes.get(..6)?.try_into().ok()?;
        Some(Self(b))
    }

    /// The six bytes in wire order.
    #[inline]
    pub const fn as_bytes(&self) -> &[u8; 6] {
        &self.0
    }

    /// Every bit set.
    #[inline]
    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }

    /// The I/G bit is set (broadcast is a multicast address too).
    #[inline]
    pub const fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// Neither multicast nor broadcast.
    #[inline]
    pub const fn is_unicast(&self) -> bool {
        !self.is_multicast()
    }

    /// The U/L bit is set: the address was assigned locally, not by a vendor.
    #[inline]
    pub const fn is_local(&self) -> bool {
        self.0[0] & 0x02 != 0
    }
}

impl fmt::Display for EthernetAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for EthernetAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for EthernetAddress {
    type Err = Error;

    /// Parses `aa:bb:cc:dd:ee:ff` (or with `-`), two hex digits per byte; anything else is
    /// [`Error::Malformed`].
    fn from_str(s: &str) -> Result<Self> {
        let b = s.as_bytes();
        if b.len() != 17 {
            return Err(Error::Malformed);
        }
        let sep = b[2];
        if sep != b':' && sep != b'-' {
            return Err(Error::Malformed);
        }
        let mut out = [0u8; 6];
        for (i, byte) in out.iter_mut().enumerate() {
            let at = i * 3;
            if i > 0 && b[at - 1] != sep {
                return Err(Error::Malformed);
            }
            let hex = s.get(at..at + 2).ok_or(Error::Malformed)?;
            // from_str_radix would accept a leading '+'; only hex digits are allowed here.
            if !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(Error::Malformed);
            }
            *byte = u8::from_str_radix(hex, 16).map_err(|_| Error::Malformed)?;
        }
        Ok(Self(out))
    }
}

impl From<[u8; 6]> for EthernetAddress {
    fn from(b: [u8; 6]) -> Self {
        Self(b)
    }
}

/// The EtherType field. Unknown values are kept, not rejected: the caller counts them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EtherType(pub u16);

impl EtherType {
    pub const IPV4: Self = Self(0x0800);
    pub const ARP: Self = Self(0x0806);
    /// 802.1Q customer VLAN tag.
    pub const VLAN: Self = Self(0x8100);
    /// 802.1ad service VLAN tag (the outer tag of QinQ).
    pub const QINQ: Self = Self(0x88a8);
    pub const IPV6: Self = Self(0x86dd);

    /// A VLAN tag of either kind follows instead of the payload.
    #[inline]
    pub const fn is_vlan_tag(self) -> bool {
        self.0 == Self::VLAN.0 || self.0 == Self::QINQ.0
    }
}

impl From<u16> for EtherType {
    fn from(v: u16) -> Self {
        Self(v)
    }
}

impl From<EtherType> for u16 {
    fn from(v: EtherType) -> Self {
        v.0
    }
}

impl fmt::Debug for EtherType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::IPV4 => f.write_str("Ipv4"),
            Self::ARP => f.write_str("Arp"),
            Self::VLAN => f.write_str("Vlan"),
            Self::QINQ => f.write_str("QinQ"),
            Self::IPV6 => f.write_str("Ipv6"),
            Self(v) => write!(f, "0x{v:04x}"),
        }
    }
}

impl fmt::Display for EtherType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

mod field {
    use core::ops::Range;

    pub const DESTINATION: Range<usize> = 0..6;
    pub const SOURCE: Range<usize> = 6..12;
    pub const ETHERTYPE: Range<usize> = 12..14;
    pub const PAYLOAD: usize = 14;
}

/// The length of an Ethernet II header.
pub const HEADER_LEN: usize = field::PAYLOAD;

/// A view of an Ethernet II frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// A view without any check; accessors may panic on a short buffer.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// A view whose accessors cannot panic, or [`Error::Truncated`] if the buffer is
    /// shorter than the header.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let frame = Self::new_unchecked(buffer);
        frame.check_len()?;
        Ok(frame)
    }

    /// Checks that the header fits in the buffer.
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    /// The underlying buffer.
    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Always [`HEADER_LEN`]; VLAN tags are part of the payload.
    #[inline]
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    #[inline]
    pub fn dst_addr(&self) -> EthernetAddress {
        let d = self.buffer.as_ref();
        let mut a = [0u8; 6];
        a.copy_from_slice(&d[field::DESTINATION]);
        EthernetAddress(a)
    }

    #[inline]
    pub fn src_addr(&self) -> EthernetAddress {
        let d = self.buffer.as_ref();
        let mut a = [0u8; 6];
        a.copy_from_slice(&d[field::SOURCE]);
        EthernetAddress(a)
    }

    #[inline]
    pub fn ethertype(&self) -> EtherType {
        let d = self.buffer.as_ref();
        EtherType(u16::from_be_bytes([
            d[field::ETHERTYPE.start],
            d[field::ETHERTYPE.start + 1],
        ]))
    }

    /// Everything after the 14-byte header, including any VLAN tag and Ethernet padding.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }
}

impl<'a> EthernetFrame<&'a [u8]> {
    /// The payload, borrowed for as long as the buffer rather than the view.
    #[inline]
    pub fn into_payload(self) -> &'a [u8] {
        &self.buffer[field::PAYLOAD..]
    }
}

impl<'a> EthernetFrame<&'a mut [u8]> {
    /// The payload, mutably borrowed for as long as the buffer.
    #[inline]
    pub fn into_payload_mut(self) -> &'a mut [u8] {
        &mut self.buffer[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    #[inline]
    pub fn set_dst_addr(&mut self, addr: EthernetAddress) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&addr.0);
    }

    #[inline]
    pub fn set_src_addr(&mut self, addr: EthernetAddress) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&addr.0);
    }

    #[inline]
    pub fn set_ethertype(&mut self, ethertype: EtherType) {
        self.buffer.as_mut()[field::ETHERTYPE].copy_from_slice(&ethertype.0.to_be_bytes());
    }

    /// Swaps source and destination, the first step of answering a frame in place.
    #[inline]
    pub fn swap_addrs(&mut self) {
        let (dst, src) = (self.dst_addr(), self.src_addr());
        self.set_dst_addr(src);
        self.set_src_addr(dst);
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD..]
    }
}

/// The checked, owned form of an Ethernet II header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EthernetRepr {
    pub src_addr: EthernetAddress,
    pub dst_addr: EthernetAddress,
    pub ethertype: EtherType,
}

impl EthernetRepr {
    /// The header of a checked frame. Cannot fail today; returns `Result` like every other
    /// `parse` so callers need not change if validation is added.
    #[inline]
    pub fn parse<T: AsRef<[u8]>>(frame: &EthernetFrame<T>) -> Result<Self> {
        frame.check_len()?;
        Ok(Self {
            src_addr: frame.src_addr(),
            dst_addr: frame.dst_addr(),
            ethertype: frame.ethertype(),
        })
    }

    /// The number of bytes [`emit`](Self::emit) writes.
    #[inline]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header into the front of `buf` and returns its length, or
    /// [`Error::Truncated`] if `buf` is too short.
    #[inline]
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        let mut frame = EthernetFrame::new_checked(buf)?;
        frame.set_dst_addr(self.dst_addr);
        frame.set_src_addr(self.src_addr);
        frame.set_ethertype(self.ethertype);
        Ok(HEADER_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Broadcast ARP request from 52:54:00:12:34:56, with 18 bytes of Ethernet padding
    // trimmed to the 28-byte ARP body.
    pub(crate) const FRAME: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x08, 0x06, 0x00,
        0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x0a, 0x00,
        0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x02,
    ];

    #[test]
    fn deconstruct() {
        let frame = EthernetFrame::new_checked(&FRAME[..]).unwrap();
        assert_eq!(frame.dst_addr(), EthernetAddress::BROADCAST);
        assert_eq!(
            frame.src_addr(),
            EthernetAddress([0x52, 0x54, 0x00, 0x12, 0x34, 0x56])
        );
        assert_eq!(frame.ethertype(), EtherType::ARP);
        assert_eq!(frame.payload(), &FRAME[14..]);
        assert_eq!(frame.header_len(), 14);
        assert_eq!(frame.into_payload().len(), 28);
    }

    #[test]
    fn construct() {
        let mut buf = [0u8; 42];
        buf[14..].copy_from_slice(&FRAME[14..]);
        let mut frame = EthernetFrame::new_checked(&mut buf[..]).unwrap();
        frame.set_dst_addr(EthernetAddress::BROADCAST);
        frame.set_src_addr(EthernetAddress([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]));
        frame.set_ethertype(EtherType::ARP);
        assert_eq!(frame.payload_mut().len(), 28);
        assert_eq!(buf, FRAME);
    }

    #[test]
    fn swap() {
        let mut buf = FRAME;
        let mut frame = EthernetFrame::new_checked(&mut buf[..]).unwrap();
        frame.swap_addrs();
        assert_eq!(frame.src_addr(), EthernetAddress::BROADCAST);
        assert_eq!(frame.dst_addr().0, [0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
    }

    #[test]
    fn parse_emit() {
        let frame = EthernetFrame::new_checked(&FRAME[..]).unwrap();
        let repr = EthernetRepr::parse(&frame).unwrap();
        let mut buf = [0u8; 14];
        assert_eq!(repr.emit(&mut buf), Ok(14));
        assert_eq!(buf, FRAME[..14]);
        assert_eq!(repr.emit(&mut buf[..13]), Err(Error::Truncated));
    }

    #[test]
    fn short_at_every_length() {
        for n in 0..HEADER_LEN {
            assert_eq!(
                EthernetFrame::new_checked(&FRAME[..n]).err(),
                Some(Error::Truncated),
                "length {n}"
            );
        }
        let frame = EthernetFrame::new_checked(&FRAME[..HEADER_LEN]).unwrap();
        assert!(frame.payload().is_empty());
    }

    #[test]
    fn address_text() {
        let a: EthernetAddress = "02:00:5e:10:AB:ff".parse().unwrap();
        assert_eq!(a.0, [0x02, 0x00, 0x5e, 0x10, 0xab, 0xff]);
        assert_eq!(a.to_string(), "02:00:5e:10:ab:ff");
        assert_eq!(format!("{a:?}"), "02:00:5e:10:ab:ff");
        assert_eq!("02-00-5e-10-ab-ff".parse(), Ok(a));
        for bad in [
            "",
            "02:00:5e:10:ab",
            "02:00:5e:10:ab:ff:",
            "02:00:5e:10:ab-ff",
            "02:00:5e:10:ab:fg",
            "+2:00:5e:10:ab:ff",
            "02.00.5e.10.ab.ff",
            "0200:5e:10:ab:ff0",
            "é2:00:5e:10:ab:f",
        ] {
            assert_eq!(
                bad.parse::<EthernetAddress>(),
                Err(Error::Malformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn address_kinds() {
        assert!(EthernetAddress::BROADCAST.is_broadcast());
        assert!(EthernetAddress::BROADCAST.is_multicast());
        let mcast = EthernetAddress([0x01, 0x00, 0x5e, 0, 0, 1]);
        assert!(mcast.is_multicast() && !mcast.is_broadcast() && !mcast.is_unicast());
        let local = EthernetAddress([0x02, 0, 0, 0, 0, 1]);
        assert!(local.is_unicast() && local.is_local());
        assert_eq!(EthernetAddress::from_bytes(&FRAME[6..]).unwrap().0[0], 0x52);
        assert_eq!(EthernetAddress::from_bytes(&FRAME[..5]), None);
    }

    #[test]
    fn ethertype_names() {
        assert_eq!(format!("{:?}", EtherType::IPV4), "Ipv4");
        assert_eq!(format!("{}", EtherType(0x1234)), "0x1234");
        assert!(EtherType::QINQ.is_vlan_tag() && EtherType::VLAN.is_vlan_tag());
        assert!(!EtherType::IPV6.is_vlan_tag());
        assert_eq!(u16::from(EtherType::from(0x0806)), 0x0806);
    }
}
