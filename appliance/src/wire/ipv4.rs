//! IPv4 headers (RFC 791): the view every translated packet is read and rewritten through.
//!
//! No-panic contract: after [`Ipv4Packet::new_checked`] succeeds, no accessor or setter
//! panics. It guarantees `20 <= header_len() <= total_len() <= buffer length`, so the
//! payload ends at `total_len` and Ethernet padding after it is never seen.
//! [`Ipv4Packet::new_checked_quote`] relaxes only the last bound, for the truncated copy of a
//! packet inside an ICMP error; the same accessors stay panic-free there and the payload is
//! the bytes that were quoted. Setters that change lengths can break these invariants;
//! re-check before trusting them.
//!
//! The header checksum is not verified by `new_checked`: the caller decides when to pay for
//! [`Ipv4Packet::verify_checksum`].

use core::fmt;
use std::net::Ipv4Addr;

use super::checksum;
use super::{Error, Result};

mod field {
    use core::ops::Range;

    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const LENGTH: Range<usize> = 2..4;
    pub const IDENT: Range<usize> = 4..6;
    pub const FLG_OFF: Range<usize> = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Range<usize> = 10..12;
    pub const SRC_ADDR: Range<usize> = 12..16;
    pub const DST_ADDR: Range<usize> = 16..20;
}

/// The length of a header without options.
pub const HEADER_LEN: usize = field::DST_ADDR.end;
/// The length of a header with the most options IHL can describe.
pub const MAX_HEADER_LEN: usize = 60;

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const OFFSET_MASK: u16 = 0x1fff;

/// The protocol field. Unknown values are kept, not rejected: the caller counts them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpProtocol(pub u8);

impl IpProtocol {
    pub const ICMP: Self = Self(1);
    pub const TCP: Self = Self(6);
    pub const UDP: Self = Self(17);
}

impl fmt::Debug for IpProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::ICMP => f.write_str("Icmp"),
            Self::TCP => f.write_str("Tcp"),
            Self::UDP => f.write_str("Udp"),
            Self(v) => write!(f, "IpProtocol({v})"),
        }
    }
}

impl fmt::Display for IpProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl From<u8> for IpProtocol {
    fn from(v: u8) -> Self {
        Self(v)
    }
}

impl From<IpProtocol> for u8 {
    fn from(v: IpProtocol) -> Self {
        v.0
    }
}

/// IPv4 option types (RFC 791 §3.1, IANA "IP Option Numbers"), copied flag included.
pub mod option {
    /// End of option list: the rest of the option bytes is padding.
    pub const END: u8 = 0;
    /// No operation: one byte of alignment.
    pub const NOP: u8 = 1;
    /// Record route: harmless, forwarded as it is.
    pub const RECORD_ROUTE: u8 = 7;
    /// Internet timestamp: harmless, forwarded as it is.
    pub const TIMESTAMP: u8 = 68;
    /// Loose source and record route: the sender chooses the path (RFC 7126 §4.3: drop).
    pub const LSRR: u8 = 131;
    /// Strict source and record route (RFC 7126 §4.4: drop).
    pub const SSRR: u8 = 137;
    /// Router alert (RFC 2113): harmless.
    pub const ROUTER_ALERT: u8 = 148;
}

/// One option of a header's option list: its type, where its type byte is (offset into
/// the option bytes) and its value (the bytes after type and length).
///
/// TCP options (RFC 9293 §3.1) have the same layout, so [`Options`] walks them too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionTlv<'a> {
    pub kind: u8,
    pub offset: usize,
    pub data: &'a [u8],
}

/// The options of a list in type-length-value form (IPv4, TCP): every option but
/// end-of-list and no-operation has a length byte counting type, length and value. Stops
/// at end-of-list; no-operation bytes are skipped.
///
/// A length below 2 or running past the list yields one [`Error::Malformed`], then
/// nothing: after a bad length nothing further can be found reliably.
#[derive(Debug, Clone)]
pub struct Options<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Options<'a> {
    /// The options in `bytes` (the option area of a header, padding included).
    #[inline]
    pub fn new(bytes: &'a [u8]) -> Options<'a> {
        Options { bytes, at: 0 }
    }
}

impl<'a> Iterator for Options<'a> {
    type Item = Result<OptionTlv<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let offset = self.at;
            let kind = *self.bytes.get(offset)?;
            match kind {
                option::END => {
                    self.at = self.bytes.len();
                    return None;
                }
                option::NOP => self.at += 1,
                _ => {
                    let len = self.bytes.get(offset + 1).map(|&l| usize::from(l));
                    let data = len
                        .filter(|&l| l >= 2)
                        .and_then(|l| self.bytes.get(offset + 2..offset + l));
                    let Some(data) = data else {
                        self.at = self.bytes.len();
                        return Some(Err(Error::Malformed));
                    };
                    self.at = offset + 2 + data.len();
                    return Some(Ok(OptionTlv { kind, offset, data }));
                }
            }
        }
    }
}

/// What is wrong with an IPv4 option list, if anything, by RFC 7126's advice to routers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionsVerdict {
    /// No option or only harmless ones (record route, timestamp, router alert, unknown
    /// types with a sound length): forward.
    Harmless,
    /// A length of 0 or 1, or one that runs past the header.
    Malformed,
    /// Loose or strict source routing: the sender would choose the path through us.
    SourceRoute,
}

/// Judges the option bytes of an IPv4 header (see [`OptionsVerdict`]).
pub fn judge_options(bytes: &[u8]) -> OptionsVerdict {
    for o in Options::new(bytes) {
        match o {
            Err(_) => return OptionsVerdict::Malformed,
            Ok(o) if o.kind == option::LSRR || o.kind == option::SSRR => {
                return OptionsVerdict::SourceRoute
            }
            Ok(_) => {}
        }
    }
    OptionsVerdict::Harmless
}

/// A view of an IPv4 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

#[inline]
fn addr_at(d: &[u8], at: usize) -> [u8; 4] {
    [d[at], d[at + 1], d[at + 2], d[at + 3]]
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// A view without any check; accessors may panic on a short buffer.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// A view whose accessors cannot panic.
    ///
    /// [`Error::Truncated`] if the buffer is shorter than 20 bytes, the IHL or the total
    /// length; [`Error::Malformed`] if the version is not 4, IHL < 5, or the total length
    /// is shorter than the header.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Like [`new_checked`](Self::new_checked), but the total length may exceed the buffer:
    /// for the copy of an original packet quoted in an ICMP error, which carries its header
    /// and only the first bytes of its payload.
    #[inline]
    pub fn new_checked_quote(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_header()?;
        Ok(packet)
    }

    /// The checks of [`new_checked`](Self::new_checked).
    #[inline]
    pub fn check_len(&self) -> Result<()> {
        self.check_header()?;
        if usize::from(self.total_len()) > self.buffer.as_ref().len() {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    fn check_header(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if self.version() != 4 {
            return Err(Error::Malformed);
        }
        let header_len = self.header_len();
        if header_len < HEADER_LEN {
            return Err(Error::Malformed);
        }
        if header_len > len {
            return Err(Error::Truncated);
        }
        if usize::from(self.total_len()) < header_len {
            return Err(Error::Malformed);
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
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// The IHL field, in 32-bit words.
    #[inline]
    pub fn ihl(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] & 0x0f
    }

    /// The header length in bytes, options included: 20..=60 in a checked view.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.ihl()) * 4
    }

    #[inline]
    pub fn dscp(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] >> 2
    }

    #[inline]
    pub fn ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] & 0x03
    }

    /// The total length field: header plus payload, in bytes.
    #[inline]
    pub fn total_len(&self) -> u16 {
        self.u16_at(field::LENGTH.start)
    }

    #[inline]
    pub fn ident(&self) -> u16 {
        self.u16_at(field::IDENT.start)
    }

    #[inline]
    pub fn dont_frag(&self) -> bool {
        self.u16_at(field::FLG_OFF.start) & FLAG_DF != 0
    }

    #[inline]
    pub fn more_frags(&self) -> bool {
        self.u16_at(field::FLG_OFF.start) & FLAG_MF != 0
    }

    /// The fragment offset in bytes (the field counts 8-byte units).
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        (self.u16_at(field::FLG_OFF.start) & OFFSET_MASK) << 3
    }

    /// Part of a fragmented datagram: MF set or a non-zero offset. privlink does not
    /// reassemble; a non-first fragment carries no ports.
    #[inline]
    pub fn is_fragment(&self) -> bool {
        self.u16_at(field::FLG_OFF.start) & (FLAG_MF | OFFSET_MASK) != 0
    }

    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    #[inline]
    pub fn protocol(&self) -> IpProtocol {
        IpProtocol(self.buffer.as_ref()[field::PROTOCOL])
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        self.u16_at(field::CHECKSUM.start)
    }

    #[inline]
    pub fn src_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.src_addr_bytes())
    }

    #[inline]
    pub fn dst_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.dst_addr_bytes())
    }

    /// The source address in wire order, for table lookups without conversion.
    #[inline]
    pub fn src_addr_bytes(&self) -> [u8; 4] {
        addr_at(self.buffer.as_ref(), field::SRC_ADDR.start)
    }

    #[inline]
    pub fn dst_addr_bytes(&self) -> [u8; 4] {
        addr_at(self.buffer.as_ref(), field::DST_ADDR.start)
    }

    /// The source address as a host-order integer (10.0.0.1 is 0x0a000001).
    #[inline]
    pub fn src_addr_u32(&self) -> u32 {
        u32::from_be_bytes(self.src_addr_bytes())
    }

    #[inline]
    pub fn dst_addr_u32(&self) -> u32 {
        u32::from_be_bytes(self.dst_addr_bytes())
    }

    /// The header checksum is correct (the header sums to 0xFFFF).
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        // The option-less header (nearly every packet) as five fixed words: a third of
        // the instructions of the general sum, on every packet the appliance receives.
        if let Some(h) = self.header().first_chunk::<HEADER_LEN>() {
            if self.header_len() == HEADER_LEN {
                return checksum::fixed_header_sum(h) == 0xffff;
            }
        }
        checksum::data(self.header()) == 0xffff
    }

    /// The header, options included.
    #[inline]
    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.header_len()]
    }

    /// The option bytes between the fixed header and the payload.
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.header_len()]
    }

    /// The options one by one (see [`Options`]).
    #[inline]
    pub fn options_iter(&self) -> Options<'_> {
        Options::new(self.options())
    }

    /// The payload: from the end of the header to the total length, or to the end of the
    /// buffer in a quote view.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let (start, end) = self.payload_range();
        &self.buffer.as_ref()[start..end]
    }

    #[inline]
    fn payload_range(&self) -> (usize, usize) {
        // `min` is a no-op for a `new_checked` view and bounds a quote view.
        let end = usize::from(self.total_len()).min(self.buffer.as_ref().len());
        (self.header_len(), end)
    }
}

impl<'a> Ipv4Packet<&'a [u8]> {
    /// The payload, borrowed for as long as the buffer rather than the view.
    #[inline]
    pub fn into_payload(self) -> &'a [u8] {
        let (start, end) = self.payload_range();
        &self.buffer[start..end]
    }
}

impl<'a> Ipv4Packet<&'a mut [u8]> {
    /// The payload, mutably borrowed for as long as the buffer.
    #[inline]
    pub fn into_payload_mut(self) -> &'a mut [u8] {
        let (start, end) = self.payload_range();
        &mut self.buffer[start..end]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    #[inline]
    fn set_u16_at(&mut self, at: usize, v: u16) {
        self.buffer.as_mut()[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the version; bits above the low four are ignored.
    #[inline]
    pub fn set_version(&mut self, v: u8) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0x0f) | (v << 4);
    }

    /// Sets IHL from a header length in bytes; it should be a multiple of 4 in 20..=60.
    #[inline]
    pub fn set_header_len(&mut self, len: u8) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0xf0) | ((len / 4) & 0x0f);
    }

    #[inline]
    pub fn set_dscp(&mut self, v: u8) {
        let b = &mut self.buffer.as_mut()[field::DSCP_ECN];
        *b = (*b & 0x03) | (v << 2);
    }

    #[inline]
    pub fn set_ecn(&mut self, v: u8) {
        let b = &mut self.buffer.as_mut()[field::DSCP_ECN];
        *b = (*b & 0xfc) | (v & 0x03);
    }

    #[inline]
    pub fn set_total_len(&mut self, v: u16) {
        self.set_u16_at(field::LENGTH.start, v);
    }

    #[inline]
    pub fn set_ident(&mut self, v: u16) {
        self.set_u16_at(field::IDENT.start, v);
    }

    #[inline]
    pub fn set_dont_frag(&mut self, v: bool) {
        let w = self.u16_at(field::FLG_OFF.start);
        self.set_u16_at(
            field::FLG_OFF.start,
            if v { w | FLAG_DF } else { w & !FLAG_DF },
        );
    }

    #[inline]
    pub fn set_more_frags(&mut self, v: bool) {
        let w = self.u16_at(field::FLG_OFF.start);
        self.set_u16_at(
            field::FLG_OFF.start,
            if v { w | FLAG_MF } else { w & !FLAG_MF },
        );
    }

    /// Sets the fragment offset from a byte count; the low three bits are dropped.
    #[inline]
    pub fn set_frag_offset(&mut self, bytes: u16) {
        let w = self.u16_at(field::FLG_OFF.start);
        self.set_u16_at(field::FLG_OFF.start, (w & !OFFSET_MASK) | (bytes >> 3));
    }

    #[inline]
    pub fn set_ttl(&mut self, v: u8) {
        self.buffer.as_mut()[field::TTL] = v;
    }

    #[inline]
    pub fn set_protocol(&mut self, v: IpProtocol) {
        self.buffer.as_mut()[field::PROTOCOL] = v.0;
    }

    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        self.set_u16_at(field::CHECKSUM.start, v);
    }

    #[inline]
    pub fn set_src_addr(&mut self, v: Ipv4Addr) {
        self.set_src_addr_bytes(v.octets());
    }

    #[inline]
    pub fn set_dst_addr(&mut self, v: Ipv4Addr) {
        self.set_dst_addr_bytes(v.octets());
    }

    #[inline]
    pub fn set_src_addr_bytes(&mut self, v: [u8; 4]) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&v);
    }

    #[inline]
    pub fn set_dst_addr_bytes(&mut self, v: [u8; 4]) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&v);
    }

    /// Computes and stores the header checksum.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = !checksum::data(self.header());
        self.set_checksum(c);
    }

    /// Sets the source address and updates the header checksum incrementally (RFC 1624).
    /// The TCP/UDP checksum covers the address too: the caller updates it with the old
    /// and new address.
    #[inline]
    pub fn rewrite_src_addr(&mut self, new: [u8; 4]) {
        let old = self.src_addr_bytes();
        self.set_src_addr_bytes(new);
        self.set_checksum(checksum::update_u32(self.checksum(), old, new));
    }

    /// [`rewrite_src_addr`](Self::rewrite_src_addr) for the destination.
    #[inline]
    pub fn rewrite_dst_addr(&mut self, new: [u8; 4]) {
        let old = self.dst_addr_bytes();
        self.set_dst_addr_bytes(new);
        self.set_checksum(checksum::update_u32(self.checksum(), old, new));
    }

    /// Decrements the TTL and updates the checksum incrementally; returns the new TTL.
    /// A TTL of 0 stays 0. A forwarder drops the packet (and answers with ICMP time
    /// exceeded) when this returns 0.
    #[inline]
    pub fn decrement_ttl(&mut self) -> u8 {
        let ttl = self.ttl();
        if ttl == 0 {
            return 0;
        }
        let proto = self.buffer.as_ref()[field::PROTOCOL];
        self.set_ttl(ttl - 1);
        let old = u16::from_be_bytes([ttl, proto]);
        let new = u16::from_be_bytes([ttl - 1, proto]);
        self.set_checksum(checksum::update_u16(self.checksum(), old, new));
        ttl - 1
    }

    /// The header, options included, for in-place edits.
    #[inline]
    pub fn header_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        &mut self.buffer.as_mut()[..hl]
    }

    #[inline]
    pub fn options_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        &mut self.buffer.as_mut()[HEADER_LEN..hl]
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (start, end) = self.payload_range();
        &mut self.buffer.as_mut()[start..end]
    }
}

/// The checked, owned form of an IPv4 header without options, for the packets privlink
/// originates (ICMP errors, TCP resets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Repr {
    pub src_addr: Ipv4Addr,
    pub dst_addr: Ipv4Addr,
    pub protocol: IpProtocol,
    pub payload_len: usize,
    pub ttl: u8,
}

impl Ipv4Repr {
    /// The fields of a checked packet.
    ///
    /// [`Error::BadChecksum`] if the header checksum is wrong, [`Error::Unsupported`] for a
    /// fragment (the repr cannot describe one). Options are skipped.
    #[inline]
    pub fn parse<T: AsRef<[u8]>>(packet: &Ipv4Packet<T>) -> Result<Self> {
        packet.check_len()?;
        if !packet.verify_checksum() {
            return Err(Error::BadChecksum);
        }
        if packet.is_fragment() {
            return Err(Error::Unsupported);
        }
        Ok(Self {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            protocol: packet.protocol(),
            payload_len: packet.payload().len(),
            ttl: packet.ttl(),
        })
    }

    /// The header length [`emit`](Self::emit) writes.
    #[inline]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes a 20-byte header (DF set, ident 0, DSCP/ECN 0) with its checksum into the
    /// front of `buf` and returns 20. The payload is the caller's to place after it.
    ///
    /// [`Error::Truncated`] if `buf` is shorter than 20 bytes, [`Error::Malformed`] if the
    /// total length would exceed 65535.
    #[inline]
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        let total = self
            .payload_len
            .checked_add(HEADER_LEN)
            .and_then(|t| u16::try_from(t).ok())
            .ok_or(Error::Malformed)?;
        let buf = buf.get_mut(..HEADER_LEN).ok_or(Error::Truncated)?;
        let mut p = Ipv4Packet::new_unchecked(buf);
        p.buffer[field::VER_IHL] = 0x45;
        p.buffer[field::DSCP_ECN] = 0;
        p.set_total_len(total);
        p.set_ident(0);
        // DF: privlink never fragments what it originates (its packets are small).
        p.set_u16_at(field::FLG_OFF.start, FLAG_DF);
        p.set_ttl(self.ttl);
        p.set_protocol(self.protocol);
        p.set_src_addr(self.src_addr);
        p.set_dst_addr(self.dst_addr);
        p.fill_checksum();
        Ok(HEADER_LEN)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A UDP/IPv4 packet 192.168.0.1 → 192.168.0.199, 115 bytes, header checksum 0xb861
    /// (the Wikipedia worked example), followed by 95 payload bytes of 0x00 and 3 bytes of
    /// Ethernet padding.
    pub(crate) fn sample() -> [u8; 118] {
        let mut p = [0u8; 118];
        p[..20].copy_from_slice(&[
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ]);
        p[20] = 0xaa;
        p[115..].copy_from_slice(&[0xee; 3]);
        p
    }

    #[test]
    fn deconstruct() {
        let buf = sample();
        let p = Ipv4Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.ihl(), 5);
        assert_eq!(p.header_len(), 20);
        assert_eq!((p.dscp(), p.ecn()), (0, 0));
        assert_eq!(p.total_len(), 115);
        assert_eq!(p.ident(), 0);
        assert!(p.dont_frag() && !p.more_frags());
        assert_eq!(p.frag_offset(), 0);
        assert!(!p.is_fragment());
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), IpProtocol::UDP);
        assert_eq!(p.checksum(), 0xb861);
        assert!(p.verify_checksum());
        assert_eq!(p.src_addr(), Ipv4Addr::new(192, 168, 0, 1));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(192, 168, 0, 199));
        assert_eq!(p.src_addr_bytes(), [192, 168, 0, 1]);
        assert_eq!(p.src_addr_u32(), 0xc0a8_0001);
        assert_eq!(p.dst_addr_u32(), 0xc0a8_00c7);
        assert!(p.options().is_empty());
        // The payload stops at total_len: the padding is not part of it.
        assert_eq!(p.payload().len(), 95);
        assert_eq!(p.payload()[0], 0xaa);
        assert_eq!(p.header().len(), 20);
        assert_eq!(p.into_payload().len(), 95);
    }

    #[test]
    fn construct() {
        let mut buf = [0u8; 20];
        let mut p = Ipv4Packet::new_unchecked(&mut buf[..]);
        p.set_version(4);
        p.set_header_len(20);
        p.set_dscp(0);
        p.set_ecn(0);
        p.set_total_len(115);
        p.set_ident(0);
        p.set_dont_frag(true);
        p.set_more_frags(false);
        p.set_frag_offset(0);
        p.set_ttl(64);
        p.set_protocol(IpProtocol::UDP);
        p.set_src_addr(Ipv4Addr::new(192, 168, 0, 1));
        p.set_dst_addr(Ipv4Addr::new(192, 168, 0, 199));
        p.fill_checksum();
        assert_eq!(buf[..], sample()[..20]);
    }

    #[test]
    fn field_setters() {
        let mut buf = sample();
        let mut p = Ipv4Packet::new_checked(&mut buf[..]).unwrap();
        p.set_dscp(46);
        p.set_ecn(3);
        assert_eq!((p.dscp(), p.ecn()), (46, 3));
        p.set_ecn(1);
        assert_eq!((p.dscp(), p.ecn()), (46, 1));
        p.set_more_frags(true);
        p.set_frag_offset(1480);
        assert!(p.more_frags() && p.dont_frag() && p.is_fragment());
        assert_eq!(p.frag_offset(), 1480);
        p.set_more_frags(false);
        assert!(p.is_fragment(), "last fragment: offset only");
        p.set_frag_offset(0);
        p.set_dont_frag(false);
        assert!(!p.is_fragment() && !p.dont_frag());
        p.set_src_addr_bytes([10, 0, 0, 1]);
        p.set_dst_addr_bytes([10, 0, 0, 2]);
        assert_eq!(p.src_addr_u32(), 0x0a00_0001);
        assert_eq!(p.dst_addr(), Ipv4Addr::new(10, 0, 0, 2));
        p.payload_mut()[0] = 0x55;
        assert_eq!(p.payload()[0], 0x55);
        assert_eq!(p.header_mut().len(), 20);
        assert!(p.options_mut().is_empty());
        assert_eq!(p.into_inner().len(), 118);
    }

    #[test]
    fn options() {
        // IHL 6: one 4-byte option (router alert, RFC 2113) between header and payload.
        let mut buf = [0u8; 28];
        buf[..20].copy_from_slice(&sample()[..20]);
        buf[0] = 0x46;
        buf[2..4].copy_from_slice(&28u16.to_be_bytes());
        buf[20..24].copy_from_slice(&[0x94, 0x04, 0x00, 0x00]);
        let mut p = Ipv4Packet::new_checked(&mut buf[..]).unwrap();
        p.fill_checksum();
        assert!(p.verify_checksum());
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.options(), &[0x94, 0x04, 0x00, 0x00]);
        assert_eq!(p.payload().len(), 4);
        assert_eq!(p.into_payload_mut().len(), 4);
    }

    /// A 20-byte header followed by `options` (a multiple of 4 bytes).
    fn with_options(options: &[u8]) -> Vec<u8> {
        let mut buf = sample()[..20].to_vec();
        buf.extend_from_slice(options);
        buf[0] = 0x40 | u8::try_from(buf.len() / 4).unwrap();
        let total = u16::try_from(buf.len()).unwrap();
        buf[2..4].copy_from_slice(&total.to_be_bytes());
        buf
    }

    #[test]
    fn options_iterate_in_order_skipping_nops() {
        // NOP, record route (len 7: pointer 4, one empty slot), router alert, end, padding.
        let buf = with_options(&[
            0x01, 0x07, 0x07, 0x04, 0, 0, 0, 0, 0x94, 0x04, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff,
        ]);
        let p = Ipv4Packet::new_checked(&buf[..]).unwrap();
        let got: Vec<OptionTlv> = p.options_iter().map(Result::unwrap).collect();
        assert_eq!(
            got,
            [
                OptionTlv {
                    kind: option::RECORD_ROUTE,
                    offset: 1,
                    data: &[0x04, 0, 0, 0, 0]
                },
                OptionTlv {
                    kind: option::ROUTER_ALERT,
                    offset: 8,
                    data: &[0, 0]
                },
            ],
            "stops at end-of-list: the 0xff padding after it is not read"
        );
        assert_eq!(judge_options(p.options()), OptionsVerdict::Harmless);
        assert_eq!(judge_options(&[]), OptionsVerdict::Harmless);
        assert_eq!(judge_options(&[1, 1, 1, 0]), OptionsVerdict::Harmless);
        // A timestamp (len 4: pointer 5, overflow/flags 0) and an unknown type, sound.
        assert_eq!(
            judge_options(&[68, 4, 5, 0, 0x5e, 2, 1, 0]),
            OptionsVerdict::Harmless
        );
    }

    #[test]
    fn malformed_option_lengths() {
        for (bytes, what) in [
            (&[0x07, 0x00, 0, 0][..], "length 0"),
            (&[0x07, 0x01, 0, 0][..], "length 1"),
            (&[0x07, 0xff, 0, 0][..], "length 255"),
            (&[0x01, 0x01, 0x01, 0x94][..], "no length byte at the end"),
            (&[0x94, 0x05, 0, 0][..], "one byte past the header"),
            (
                &[0x01, 0x07, 0x08, 0x04, 0, 0, 0, 0][..],
                "record route past the end",
            ),
        ] {
            let mut it = Options::new(bytes);
            assert_eq!(
                it.find(Result::is_err),
                Some(Err(Error::Malformed)),
                "{what}"
            );
            assert_eq!(it.next(), None, "{what}: nothing after a bad length");
            assert_eq!(judge_options(bytes), OptionsVerdict::Malformed, "{what}");
        }
        // Exactly filling the area is fine.
        assert_eq!(
            Options::new(&[0x94, 0x04, 0, 0]).collect::<Vec<_>>(),
            [Ok(OptionTlv {
                kind: option::ROUTER_ALERT,
                offset: 0,
                data: &[0, 0]
            })]
        );
    }

    #[test]
    fn source_routes_are_found_anywhere_in_the_list() {
        // LSRR with one hop (len 7, pointer 4, 10.9.9.9), after a NOP.
        let lsrr = [0x01, 0x83, 0x07, 0x04, 10, 9, 9, 9];
        assert_eq!(judge_options(&lsrr), OptionsVerdict::SourceRoute);
        // SSRR after a router alert.
        let ssrr = [0x94, 0x04, 0, 0, 0x89, 0x07, 0x04, 10, 9, 9, 9, 0];
        assert_eq!(judge_options(&ssrr), OptionsVerdict::SourceRoute);
        // A malformed option before a source route: malformed wins (nothing after it is
        // trustworthy).
        assert_eq!(
            judge_options(&[0x07, 0x00, 0x83, 0x07, 0x04, 10, 9, 9]),
            OptionsVerdict::Malformed
        );
        let buf = with_options(&lsrr);
        let p = Ipv4Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(p.options_iter().next().unwrap().unwrap().kind, option::LSRR);
    }

    #[test]
    fn parse_emit() {
        let buf = sample();
        let repr = Ipv4Repr::parse(&Ipv4Packet::new_checked(&buf[..]).unwrap()).unwrap();
        assert_eq!(
            repr,
            Ipv4Repr {
                src_addr: Ipv4Addr::new(192, 168, 0, 1),
                dst_addr: Ipv4Addr::new(192, 168, 0, 199),
                protocol: IpProtocol::UDP,
                payload_len: 95,
                ttl: 64,
            }
        );
        let mut out = [0u8; 20];
        assert_eq!(repr.emit(&mut out), Ok(20));
        assert_eq!(out[..], buf[..20]);
        assert_eq!(repr.emit(&mut out[..19]), Err(Error::Truncated));
        let huge = Ipv4Repr {
            payload_len: 65516,
            ..repr
        };
        assert_eq!(huge.emit(&mut out), Err(Error::Malformed));
        let max = Ipv4Repr {
            payload_len: 65515,
            ..repr
        };
        assert_eq!(max.emit(&mut out), Ok(20));
        let overflow = Ipv4Repr {
            payload_len: usize::MAX,
            ..repr
        };
        assert_eq!(overflow.emit(&mut out), Err(Error::Malformed));
    }

    #[test]
    fn parse_rejects_bad_checksum_and_fragments() {
        let mut buf = sample();
        buf[11] ^= 1;
        let p = Ipv4Packet::new_checked(&buf[..]).unwrap();
        assert!(!p.verify_checksum());
        assert_eq!(Ipv4Repr::parse(&p), Err(Error::BadChecksum));

        let mut buf = sample();
        let mut p = Ipv4Packet::new_checked(&mut buf[..]).unwrap();
        p.set_more_frags(true);
        p.fill_checksum();
        assert_eq!(Ipv4Repr::parse(&p), Err(Error::Unsupported));
    }

    #[test]
    fn short_at_every_length() {
        let buf = sample();
        for n in 0..115 {
            assert_eq!(
                Ipv4Packet::new_checked(&buf[..n]).err(),
                Some(Error::Truncated),
                "length {n}"
            );
        }
        assert!(Ipv4Packet::new_checked(&buf[..115]).is_ok());
    }

    #[test]
    fn malformed_shapes() {
        // Version 6 in an IPv4 view.
        let mut buf = sample();
        buf[0] = 0x65;
        assert_eq!(
            Ipv4Packet::new_checked(&buf[..]).err(),
            Some(Error::Malformed)
        );
        // IHL below 5.
        for ihl in 0..5u8 {
            let mut buf = sample();
            buf[0] = 0x40 | ihl;
            assert_eq!(
                Ipv4Packet::new_checked(&buf[..]).err(),
                Some(Error::Malformed),
                "ihl {ihl}"
            );
        }
        // IHL beyond the buffer: 15 words = 60 bytes in a 40-byte buffer.
        let mut buf = sample();
        buf[0] = 0x4f;
        assert_eq!(
            Ipv4Packet::new_checked(&buf[..40]).err(),
            Some(Error::Truncated)
        );
        // Total length shorter than the header.
        let mut buf = sample();
        buf[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(
            Ipv4Packet::new_checked(&buf[..]).err(),
            Some(Error::Malformed)
        );
        let mut buf = sample();
        buf[0] = 0x46;
        buf[2..4].copy_from_slice(&20u16.to_be_bytes());
        assert_eq!(
            Ipv4Packet::new_checked(&buf[..]).err(),
            Some(Error::Malformed)
        );
        // Total length beyond the buffer.
        let mut buf = sample();
        buf[2..4].copy_from_slice(&119u16.to_be_bytes());
        assert_eq!(
            Ipv4Packet::new_checked(&buf[..]).err(),
            Some(Error::Truncated)
        );
        // A header-only packet is fine and has an empty payload.
        let mut buf = sample();
        buf[2..4].copy_from_slice(&20u16.to_be_bytes());
        let p = Ipv4Packet::new_checked(&buf[..]).unwrap();
        assert!(p.payload().is_empty());
    }

    #[test]
    fn quote_view() {
        // A quote: header and 8 payload bytes of a 115-byte packet.
        let buf = sample();
        assert_eq!(
            Ipv4Packet::new_checked(&buf[..28]).err(),
            Some(Error::Truncated)
        );
        let q = Ipv4Packet::new_checked_quote(&buf[..28]).unwrap();
        assert_eq!(q.total_len(), 115);
        assert_eq!(q.payload().len(), 8);
        assert_eq!(q.into_payload().len(), 8);
        assert!(q.verify_checksum());
        // Header-only quotes are fine; quotes shorter than the header are not.
        assert!(Ipv4Packet::new_checked_quote(&buf[..20]).is_ok());
        assert_eq!(
            Ipv4Packet::new_checked_quote(&buf[..19]).err(),
            Some(Error::Truncated)
        );
    }

    #[test]
    fn incremental_rewrites() {
        let mut buf = sample();
        let mut p = Ipv4Packet::new_checked(&mut buf[..]).unwrap();
        p.rewrite_src_addr([10, 1, 2, 3]);
        p.rewrite_dst_addr([172, 16, 254, 1]);
        assert!(p.verify_checksum());
        assert_eq!(p.decrement_ttl(), 63);
        assert!(p.verify_checksum());
        let c = p.checksum();
        p.fill_checksum();
        assert_eq!(p.checksum(), c, "incremental equals full");
        p.set_ttl(1);
        p.fill_checksum();
        assert_eq!(p.decrement_ttl(), 0);
        assert!(p.verify_checksum());
        assert_eq!(p.decrement_ttl(), 0);
        assert_eq!(p.ttl(), 0);
        assert!(p.verify_checksum());
    }

    #[test]
    fn protocol_names() {
        assert_eq!(format!("{:?}", IpProtocol::TCP), "Tcp");
        assert_eq!(IpProtocol::ICMP.to_string(), "Icmp");
        assert_eq!(format!("{}", IpProtocol(47)), "IpProtocol(47)");
        assert_eq!(u8::from(IpProtocol::from(17)), 17);
    }
}
