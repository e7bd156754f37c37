//! UDP datagrams (RFC 768) over IPv4: ports, length, and the optional checksum.
//!
//! A checksum of 0 means the sender computed none. privlink must keep it 0 through NAT
//! (a rewritten 0 would become a checksum the receiver rejects), and a computed 0 is sent
//! as 0xFFFF; [`UdpPacket::rewrite_src_port`] and friends follow both rules.
//!
//! No-panic contract: after [`UdpPacket::new_checked`] succeeds, no accessor or setter
//! panics; it guarantees `8 <= len() <= buffer length`, and the payload ends at `len()`.

use std::net::Ipv4Addr;

use super::checksum;
use super::ipv4::IpProtocol;
use super::{Error, Result};

mod field {
    use core::ops::Range;

    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const LENGTH: Range<usize> = 4..6;
    pub const CHECKSUM: Range<usize> = 6..8;
    pub const PAYLOAD: usize = 8;
}

/// The length of a UDP header.
pub const HEADER_LEN: usize = field::PAYLOAD;

/// A view of a UDP datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// A view without any check; accessors may panic on a short buffer.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// A view whose accessors cannot panic.
    ///
    /// [`Error::Truncated`] if the buffer is shorter than 8 bytes or the length field;
    /// [`Error::Malformed`] if the length field is below 8.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let buf_len = self.buffer.as_ref().len();
        if buf_len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let len = usize::from(self.len());
        if len < HEADER_LEN {
            return Err(Error::Malformed);
        }
        if len > buf_len {
            return Err(Error::Truncated);
        }
        Ok(())
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
    pub fn src_port(&self) -> u16 {
        self.u16_at(field::SRC_PORT.start)
    }

    #[inline]
    pub fn dst_port(&self) -> u16 {
        self.u16_at(field::DST_PORT.start)
    }

    /// The length field: header plus payload.
    #[inline]
    #[allow(clippy::len_without_is_empty)] // a datagram is never empty: it has a header
    pub fn len(&self) -> u16 {
        self.u16_at(field::LENGTH.start)
    }

    /// The checksum field; 0 means none was sent.
    #[inline]
    pub fn checksum(&self) -> u16 {
        self.u16_at(field::CHECKSUM.start)
    }

    /// Bytes covered by the length field, which the checksum covers too.
    #[inline]
    fn datagram(&self) -> &[u8] {
        &self.buffer.as_ref()[..usize::from(self.len())]
    }

    /// The checksum is absent (0) or correct for a datagram from `src` to `dst`.
    #[inline]
    pub fn verify_checksum(&self, src: impl Into<Ipv4Addr>, dst: impl Into<Ipv4Addr>) -> bool {
        if self.checksum() == 0 {
            return true;
        }
        let pseudo = checksum::pseudo_header_v4(
            src.into().octets(),
            dst.into().octets(),
            IpProtocol::UDP.0,
            self.len(),
        );
        checksum::combine(&[pseudo, checksum::data(self.datagram())]) == 0xffff
    }

    /// The payload, ending at the length field (later bytes are IP or Ethernet padding).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..usize::from(self.len())]
    }
}

/// The ports of the UDP header that starts a datagram's first fragment: its length field
/// counts the whole datagram, which the fragment does not hold, so no [`UdpPacket`] view
/// (whose payload ends at that length) can be made of it. Checks that the header is whole
/// and its length field at least a header.
pub fn first_fragment_ports(buffer: &[u8]) -> Result<(u16, u16)> {
    let h = buffer.get(..HEADER_LEN).ok_or(Error::Truncated)?;
    let at = |i: usize| u16::from_be_bytes([h[i], h[i + 1]]);
    if usize::from(at(field::LENGTH.start)) < HEADER_LEN {
        return Err(Error::Malformed);
    }
    Ok((at(field::SRC_PORT.start), at(field::DST_PORT.start)))
}

impl<'a> UdpPacket<&'a [u8]> {
    /// The payload, borrowed for as long as the buffer rather than the view.
    #[inline]
    pub fn into_payload(self) -> &'a [u8] {
        let len = usize::from(self.len());
        &self.buffer[field::PAYLOAD..len]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    #[inline]
    fn set_u16_at(&mut self, at: usize, v: u16) {
        self.buffer.as_mut()[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }

    #[inline]
    pub fn set_src_port(&mut self, v: u16) {
        self.set_u16_at(field::SRC_PORT.start, v);
    }

    #[inline]
    pub fn set_dst_port(&mut self, v: u16) {
        self.set_u16_at(field::DST_PORT.start, v);
    }

    #[inline]
    pub fn set_len(&mut self, v: u16) {
        self.set_u16_at(field::LENGTH.start, v);
    }

    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        self.set_u16_at(field::CHECKSUM.start, v);
    }

    /// Computes and stores the checksum for a datagram from `src` to `dst`, sending a
    /// computed 0 as 0xFFFF.
    #[inline]
    pub fn fill_checksum(&mut self, src: impl Into<Ipv4Addr>, dst: impl Into<Ipv4Addr>) {
        self.set_checksum(0);
        let c = checksum::l4_checksum_v4(
            src.into().octets(),
            dst.into().octets(),
            IpProtocol::UDP.0,
            self.datagram(),
        );
        self.set_checksum(checksum::udp_nonzero(c));
    }

    /// Sets the source port, updating a present checksum incrementally.
    #[inline]
    pub fn rewrite_src_port(&mut self, port: u16) {
        let old = self.src_port();
        self.set_src_port(port);
        self.set_checksum(checksum::update_udp_u16(self.checksum(), old, port));
    }

    /// Sets the destination port, updating a present checksum incrementally.
    #[inline]
    pub fn rewrite_dst_port(&mut self, port: u16) {
        let old = self.dst_port();
        self.set_dst_port(port);
        self.set_checksum(checksum::update_udp_u16(self.checksum(), old, port));
    }

    /// Updates a present checksum for a pseudo-header address changing from `old` to
    /// `new`.
    #[inline]
    pub fn update_checksum_for_addr(&mut self, old: [u8; 4], new: [u8; 4]) {
        self.set_checksum(checksum::update_udp_u32(self.checksum(), old, new));
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let len = usize::from(self.len());
        &mut self.buffer.as_mut()[field::PAYLOAD..len]
    }
}

/// The checked, owned form of a UDP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UdpRepr {
    pub src_port: u16,
    pub dst_port: u16,
}

impl UdpRepr {
    /// The header of a checked datagram from `src` to `dst`; [`Error::BadChecksum`] if a
    /// checksum is present and wrong.
    #[inline]
    pub fn parse<T: AsRef<[u8]>>(
        packet: &UdpPacket<T>,
        src: impl Into<Ipv4Addr>,
        dst: impl Into<Ipv4Addr>,
    ) -> Result<Self> {
        packet.check_len()?;
        if !packet.verify_checksum(src, dst) {
            return Err(Error::BadChecksum);
        }
        Ok(Self {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
        })
    }

    #[inline]
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the 8-byte header into the front of `buf`, with the length and a checksum
    /// over the `payload_len` bytes the caller has placed after it. Returns the datagram
    /// length.
    ///
    /// [`Error::Truncated`] if `buf` cannot hold header and payload, [`Error::Malformed`]
    /// if the datagram would exceed 65535 bytes.
    pub fn emit(
        &self,
        buf: &mut [u8],
        src: impl Into<Ipv4Addr>,
        dst: impl Into<Ipv4Addr>,
        payload_len: usize,
    ) -> Result<usize> {
        let len = payload_len
            .checked_add(HEADER_LEN)
            .and_then(|l| u16::try_from(l).ok())
            .ok_or(Error::Malformed)?;
        let buf = buf.get_mut(..usize::from(len)).ok_or(Error::Truncated)?;
        let mut p = UdpPacket::new_unchecked(buf);
        p.set_src_port(self.src_port);
        p.set_dst_port(self.dst_port);
        p.set_len(len);
        p.fill_checksum(src, dst);
        Ok(usize::from(len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 1);
    const DST: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 199);

    /// A DNS-port datagram 192.168.0.1:53 → 192.168.0.199:40000 carrying "hello" with
    /// checksum 0x9d73, then 3 bytes of padding.
    const DATAGRAM: [u8; 16] = [
        0x00, 0x35, 0x9c, 0x40, 0x00, 0x0d, 0x9d, 0x73, 0x68, 0x65, 0x6c, 0x6c, 0x6f, 0xee, 0xee,
        0xee,
    ];

    #[test]
    fn deconstruct() {
        let p = UdpPacket::new_checked(&DATAGRAM[..]).unwrap();
        assert_eq!(p.src_port(), 53);
        assert_eq!(p.dst_port(), 40000);
        assert_eq!(p.len(), 13);
        assert_eq!(p.checksum(), 0x9d73);
        assert_eq!(p.payload(), b"hello");
        assert!(p.verify_checksum(SRC, DST));
        assert!(!p.verify_checksum(SRC, Ipv4Addr::new(192, 168, 0, 198)));
        assert_eq!(p.into_payload(), b"hello");
    }

    #[test]
    fn first_fragment_ports_read_the_header_alone() {
        // The header of a 4008-byte datagram, and 8 bytes of its payload.
        let mut first = [0u8; 16];
        first[..8].copy_from_slice(&[0x9c, 0x40, 0x23, 0x28, 0x0f, 0xa8, 0x12, 0x34]);
        assert_eq!(first_fragment_ports(&first), Ok((40000, 9000)));
        assert!(
            UdpPacket::new_checked(&first[..]).is_err(),
            "no whole view of it"
        );
        assert_eq!(first_fragment_ports(&first[..7]), Err(Error::Truncated));
        first[4..6].copy_from_slice(&[0, 7]);
        assert_eq!(first_fragment_ports(&first), Err(Error::Malformed));
    }

    #[test]
    fn construct() {
        let mut buf = [0xeeu8; 16];
        buf[8..13].copy_from_slice(b"hello");
        let mut p = UdpPacket::new_unchecked(&mut buf[..]);
        p.set_src_port(53);
        p.set_dst_port(40000);
        p.set_len(13);
        p.fill_checksum(SRC, DST);
        assert_eq!(buf, DATAGRAM);
    }

    #[test]
    fn parse_emit() {
        let p = UdpPacket::new_checked(&DATAGRAM[..]).unwrap();
        let repr = UdpRepr::parse(&p, SRC, DST).unwrap();
        assert_eq!(
            repr,
            UdpRepr {
                src_port: 53,
                dst_port: 40000
            }
        );
        let mut buf = [0xeeu8; 16];
        buf[8..13].copy_from_slice(b"hello");
        assert_eq!(repr.emit(&mut buf, SRC, DST, 5), Ok(13));
        assert_eq!(buf, DATAGRAM);
        assert_eq!(repr.emit(&mut buf, SRC, DST, 9), Err(Error::Truncated));
        assert_eq!(repr.emit(&mut buf, SRC, DST, 65528), Err(Error::Malformed));
        assert_eq!(
            repr.emit(&mut buf, SRC, DST, usize::MAX),
            Err(Error::Malformed)
        );
        assert_eq!(repr.header_len(), 8);
    }

    #[test]
    fn bad_checksum() {
        let mut buf = DATAGRAM;
        buf[8] ^= 1;
        let p = UdpPacket::new_checked(&buf[..]).unwrap();
        assert_eq!(UdpRepr::parse(&p, SRC, DST), Err(Error::BadChecksum));
        // Padding is not covered.
        let mut buf = DATAGRAM;
        buf[15] ^= 1;
        assert!(UdpPacket::new_checked(&buf[..])
            .unwrap()
            .verify_checksum(SRC, DST));
    }

    #[test]
    fn zero_checksum_means_none() {
        let mut buf = DATAGRAM;
        buf[6] = 0;
        buf[7] = 0;
        let mut p = UdpPacket::new_checked(&mut buf[..]).unwrap();
        assert!(p.verify_checksum(SRC, DST));
        p.rewrite_src_port(1);
        p.rewrite_dst_port(2);
        p.update_checksum_for_addr(SRC.octets(), [1, 2, 3, 4]);
        assert_eq!(p.checksum(), 0, "stays absent through NAT");
    }

    #[test]
    fn computed_zero_is_sent_as_ffff() {
        // Choose the first payload word so the datagram sums to 0xFFFF: checksum 0.
        let mut buf = [0u8; 10];
        buf[4..6].copy_from_slice(&10u16.to_be_bytes());
        let partial = checksum::l4_checksum_v4(SRC.octets(), DST.octets(), 17, &buf);
        buf[8..10].copy_from_slice(&partial.to_be_bytes());
        assert_eq!(
            checksum::l4_checksum_v4(SRC.octets(), DST.octets(), 17, &buf),
            0
        );
        let mut p = UdpPacket::new_checked(&mut buf[..]).unwrap();
        p.fill_checksum(SRC, DST);
        assert_eq!(p.checksum(), 0xffff);
        assert!(p.verify_checksum(SRC, DST));
        // And an incremental update that lands on 0 is sent as 0xFFFF too.
        p.rewrite_src_port(1);
        p.rewrite_src_port(0);
        assert_eq!(p.checksum(), 0xffff);
    }

    #[test]
    fn nat_rewrites_match_recompute() {
        let mut buf = DATAGRAM;
        let mut p = UdpPacket::new_checked(&mut buf[..]).unwrap();
        let (ns, nd) = ([10, 9, 8, 7], [172, 31, 0, 1]);
        p.rewrite_src_port(5353);
        p.rewrite_dst_port(61001);
        p.update_checksum_for_addr(SRC.octets(), ns);
        p.update_checksum_for_addr(DST.octets(), nd);
        assert!(p.verify_checksum(ns, nd));
        let c = p.checksum();
        p.fill_checksum(ns, nd);
        assert_eq!(p.checksum(), c);
        p.payload_mut()[0] = b'j';
        assert_eq!(p.payload(), b"jello");
        assert_eq!(p.into_inner().len(), 16);
    }

    #[test]
    fn short_at_every_length() {
        for n in 0..13 {
            assert_eq!(
                UdpPacket::new_checked(&DATAGRAM[..n]).err(),
                Some(Error::Truncated),
                "length {n}"
            );
        }
        assert!(UdpPacket::new_checked(&DATAGRAM[..13]).is_ok());
    }

    #[test]
    fn length_out_of_range() {
        for len in 0..8u16 {
            let mut buf = DATAGRAM;
            buf[4..6].copy_from_slice(&len.to_be_bytes());
            assert_eq!(
                UdpPacket::new_checked(&buf[..]).err(),
                Some(Error::Malformed),
                "length {len}"
            );
        }
        let mut buf = DATAGRAM;
        buf[4..6].copy_from_slice(&17u16.to_be_bytes());
        assert_eq!(
            UdpPacket::new_checked(&buf[..]).err(),
            Some(Error::Truncated)
        );
        buf[4..6].copy_from_slice(&8u16.to_be_bytes());
        assert!(UdpPacket::new_checked(&buf[..])
            .unwrap()
            .payload()
            .is_empty());
    }
}
