//! TCP segments (RFC 9293) over IPv4: the header fields flow tracking and NAT read and
//! rewrite, checksums with the IPv4 pseudo-header, and the RST privlink answers with when a
//! segment belongs to no flow.
//!
//! No-panic contract: after [`TcpPacket::new_checked`] succeeds, no accessor or setter
//! panics; it guarantees `20 <= header_len() <= buffer length <= 65535`. The view must
//! cover exactly the segment (the IPv4 payload), since the checksum and the payload length
//! are taken from its end. Options are exposed as bytes and, for the two a SYN carries that
//! matter to a middlebox (MSS, window scale), read and clamped in place
//! ([`TcpPacket::syn_options`], [`TcpPacket::clamp_mss`]).

use core::fmt;
use core::ops::{BitAnd, BitOr, BitOrAssign, Not};
use std::net::Ipv4Addr;

use super::checksum;
use super::ipv4::{IpProtocol, Options};
use super::{Error, Result};

mod field {
    use core::ops::Range;

    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const SEQ_NUM: Range<usize> = 4..8;
    pub const ACK_NUM: Range<usize> = 8..12;
    /// Data offset in the high nibble; the low nibble is reserved (and the NS bit).
    pub const DATA_OFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WIN_SIZE: Range<usize> = 14..16;
    pub const CHECKSUM: Range<usize> = 16..18;
    pub const URGENT: Range<usize> = 18..20;
}

/// The length of a header without options.
pub const HEADER_LEN: usize = field::URGENT.end;
/// The length of a header with the most options the data offset can describe.
pub const MAX_HEADER_LEN: usize = 60;

/// TCP option kinds privlink reads (RFC 9293 §3.2, RFC 7323).
pub mod option {
    pub const END: u8 = 0;
    pub const NOP: u8 = 1;
    /// Maximum segment size, 2 value bytes; only in SYN segments.
    pub const MSS: u8 = 2;
    /// Window scale shift, 1 value byte; only in SYN segments.
    pub const WINDOW_SCALE: u8 = 3;
}

/// The largest window scale shift RFC 7323 §2.3 allows; larger offers are taken as 14.
pub const MAX_WINDOW_SCALE: u8 = 14;

/// What a SYN segment's options announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SynOptions {
    /// The MSS option's value and the offset of that value in the segment.
    pub mss: Option<(u16, usize)>,
    /// The window scale shift offered (capped at [`MAX_WINDOW_SCALE`]).
    pub window_scale: Option<u8>,
}

/// The eight TCP control bits, as a set.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpFlags(u8);

impl TcpFlags {
    pub const FIN: Self = Self(0x01);
    pub const SYN: Self = Self(0x02);
    pub const RST: Self = Self(0x04);
    pub const PSH: Self = Self(0x08);
    pub const ACK: Self = Self(0x10);
    pub const URG: Self = Self(0x20);
    pub const ECE: Self = Self(0x40);
    pub const CWR: Self = Self(0x80);

    const NAMES: [&'static str; 8] = ["FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"];

    #[inline]
    pub const fn empty() -> Self {
        Self(0)
    }

    /// Every bit of the flags byte is a flag, so no value is invalid.
    #[inline]
    pub const fn from_bits(bits: u8) -> Self {
        Self(bits)
    }

    #[inline]
    pub const fn bits(self) -> u8 {
        self.0
    }

    #[inline]
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Every flag of `other` is set.
    #[inline]
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Some flag of `other` is set.
    #[inline]
    pub const fn intersects(self, other: Self) -> bool {
        self.0 & other.0 != 0
    }

    #[inline]
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    #[inline]
    pub fn insert(&mut self, other: Self) {
        self.0 |= other.0;
    }

    #[inline]
    pub fn remove(&mut self, other: Self) {
        self.0 &= !other.0;
    }
}

impl BitOr for TcpFlags {
    type Output = Self;
    #[inline]
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl BitOrAssign for TcpFlags {
    #[inline]
    fn bitor_assign(&mut self, rhs: Self) {
        self.0 |= rhs.0;
    }
}

impl BitAnd for TcpFlags {
    type Output = Self;
    #[inline]
    fn bitand(self, rhs: Self) -> Self {
        Self(self.0 & rhs.0)
    }
}

impl Not for TcpFlags {
    type Output = Self;
    #[inline]
    fn not(self) -> Self {
        Self(!self.0)
    }
}

/// `SYN|ACK`, or `-` for no flags: the form tcpdump users read at a glance.
impl fmt::Debug for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("-");
        }
        let mut first = true;
        for (bit, name) in Self::NAMES.iter().enumerate() {
            if self.0 & (1 << bit) != 0 {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        Ok(())
    }
}

impl fmt::Display for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A view of a TCP segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

/// The segment length as the pseudo-header carries it; clamped for unchecked views, whose
/// checksums are then merely wrong.
#[inline]
fn pseudo_len(len: usize) -> u16 {
    u16::try_from(len).unwrap_or(u16::MAX)
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// A view without any check; accessors may panic on a short buffer.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// A view whose accessors cannot panic.
    ///
    /// [`Error::Truncated`] if the buffer is shorter than 20 bytes or the data offset;
    /// [`Error::Malformed`] if the data offset is below 5 words or the buffer is longer
    /// than IPv4 can carry.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    #[inline]
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let header_len = self.header_len();
        if header_len < HEADER_LEN {
            return Err(Error::Malformed);
        }
        if header_len > len {
            return Err(Error::Truncated);
        }
        if len > usize::from(u16::MAX) {
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
    fn u32_at(&self, at: usize) -> u32 {
        let d = self.buffer.as_ref();
        u32::from_be_bytes([d[at], d[at + 1], d[at + 2], d[at + 3]])
    }

    #[inline]
    pub fn src_port(&self) -> u16 {
        self.u16_at(field::SRC_PORT.start)
    }

    #[inline]
    pub fn dst_port(&self) -> u16 {
        self.u16_at(field::DST_PORT.start)
    }

    /// The sequence number; compare with wrapping arithmetic.
    #[inline]
    pub fn seq_number(&self) -> u32 {
        self.u32_at(field::SEQ_NUM.start)
    }

    /// The acknowledgment number, meaningful only with [`TcpFlags::ACK`].
    #[inline]
    pub fn ack_number(&self) -> u32 {
        self.u32_at(field::ACK_NUM.start)
    }

    /// The header length in bytes, options included: 20..=60 in a checked view.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::DATA_OFF] >> 4) * 4
    }

    #[inline]
    pub fn flags(&self) -> TcpFlags {
        TcpFlags(self.buffer.as_ref()[field::FLAGS])
    }

    #[inline]
    pub fn fin(&self) -> bool {
        self.flags().contains(TcpFlags::FIN)
    }

    #[inline]
    pub fn syn(&self) -> bool {
        self.flags().contains(TcpFlags::SYN)
    }

    #[inline]
    pub fn rst(&self) -> bool {
        self.flags().contains(TcpFlags::RST)
    }

    #[inline]
    pub fn ack(&self) -> bool {
        self.flags().contains(TcpFlags::ACK)
    }

    #[inline]
    pub fn window_len(&self) -> u16 {
        self.u16_at(field::WIN_SIZE.start)
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        self.u16_at(field::CHECKSUM.start)
    }

    #[inline]
    pub fn urgent_at(&self) -> u16 {
        self.u16_at(field::URGENT.start)
    }

    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.header_len()]
    }

    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }

    /// The options one by one (kinds in [`option`]).
    #[inline]
    pub fn options_iter(&self) -> Options<'_> {
        Options::new(self.options())
    }

    /// The MSS and window scale options, as far as the option list can be read (a
    /// malformed list yields what came before the fault). A wrong value length makes an
    /// option count as absent.
    pub fn syn_options(&self) -> SynOptions {
        let mut out = SynOptions::default();
        for o in self.options_iter() {
            let Ok(o) = o else { break };
            match (o.kind, o.data) {
                (option::MSS, &[hi, lo]) => {
                    out.mss = Some((u16::from_be_bytes([hi, lo]), HEADER_LEN + o.offset + 2));
                }
                (option::WINDOW_SCALE, &[shift]) => {
                    out.window_scale = Some(shift.min(MAX_WINDOW_SCALE));
                }
                _ => {}
            }
        }
        out
    }

    /// The sequence space the segment occupies: payload bytes, plus one each for SYN
    /// and FIN.
    #[inline]
    pub fn segment_len(&self) -> u32 {
        let data = u32::try_from(self.payload().len()).unwrap_or(u32::MAX);
        data.saturating_add(u32::from(self.syn()) + u32::from(self.fin()))
    }

    /// The checksum is correct for a segment from `src` to `dst`.
    #[inline]
    pub fn verify_checksum(&self, src: impl Into<Ipv4Addr>, dst: impl Into<Ipv4Addr>) -> bool {
        let d = self.buffer.as_ref();
        let pseudo = checksum::pseudo_header_v4(
            src.into().octets(),
            dst.into().octets(),
            IpProtocol::TCP.0,
            pseudo_len(d.len()),
        );
        checksum::combine(&[pseudo, checksum::data(d)]) == 0xffff
    }
}

impl<'a> TcpPacket<&'a [u8]> {
    /// The payload, borrowed for as long as the buffer rather than the view.
    #[inline]
    pub fn into_payload(self) -> &'a [u8] {
        let hl = self.header_len();
        &self.buffer[hl..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    #[inline]
    fn set_u16_at(&mut self, at: usize, v: u16) {
        self.buffer.as_mut()[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }

    #[inline]
    fn set_u32_at(&mut self, at: usize, v: u32) {
        self.buffer.as_mut()[at..at + 4].copy_from_slice(&v.to_be_bytes());
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
    pub fn set_seq_number(&mut self, v: u32) {
        self.set_u32_at(field::SEQ_NUM.start, v);
    }

    #[inline]
    pub fn set_ack_number(&mut self, v: u32) {
        self.set_u32_at(field::ACK_NUM.start, v);
    }

    /// Sets the data offset from a header length in bytes (a multiple of 4 in 20..=60);
    /// clears the reserved bits.
    #[inline]
    pub fn set_header_len(&mut self, len: u8) {
        self.buffer.as_mut()[field::DATA_OFF] = ((len / 4) & 0x0f) << 4;
    }

    #[inline]
    pub fn set_flags(&mut self, v: TcpFlags) {
        self.buffer.as_mut()[field::FLAGS] = v.0;
    }

    #[inline]
    pub fn set_window_len(&mut self, v: u16) {
        self.set_u16_at(field::WIN_SIZE.start, v);
    }

    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        self.set_u16_at(field::CHECKSUM.start, v);
    }

    #[inline]
    pub fn set_urgent_at(&mut self, v: u16) {
        self.set_u16_at(field::URGENT.start, v);
    }

    /// Computes and stores the checksum for a segment from `src` to `dst`.
    #[inline]
    pub fn fill_checksum(&mut self, src: impl Into<Ipv4Addr>, dst: impl Into<Ipv4Addr>) {
        self.set_checksum(0);
        let c = checksum::l4_checksum_v4(
            src.into().octets(),
            dst.into().octets(),
            IpProtocol::TCP.0,
            self.buffer.as_ref(),
        );
        self.set_checksum(c);
    }

    /// Sets the source port and updates the checksum incrementally.
    #[inline]
    pub fn rewrite_src_port(&mut self, port: u16) {
        let old = self.src_port();
        self.set_src_port(port);
        self.set_checksum(checksum::update_u16(self.checksum(), old, port));
    }

    /// Sets the destination port and updates the checksum incrementally.
    #[inline]
    pub fn rewrite_dst_port(&mut self, port: u16) {
        let old = self.dst_port();
        self.set_dst_port(port);
        self.set_checksum(checksum::update_u16(self.checksum(), old, port));
    }

    /// Updates the checksum for an address of the pseudo-header changing from `old` to
    /// `new` (the IPv4 header's own rewrite is [`super::ipv4::Ipv4Packet::rewrite_src_addr`]).
    #[inline]
    pub fn update_checksum_for_addr(&mut self, old: [u8; 4], new: [u8; 4]) {
        self.set_checksum(checksum::update_u32(self.checksum(), old, new));
    }

    /// Lowers the MSS option to `max` if it announces more, updating the checksum
    /// incrementally; returns whether it changed anything. A segment without the option
    /// is left alone: its peer then assumes 536 (RFC 9293 §3.7.1), below any sane clamp.
    pub fn clamp_mss(&mut self, max: u16) -> bool {
        let Some((mss, at)) = self.syn_options().mss else {
            return false;
        };
        if mss <= max {
            return false;
        }
        self.set_u16_at(at, max);
        // The checksum sums 16-bit words from the start of the segment: a value at an odd
        // offset straddles two of them, which is the same as its byte-swapped self in one.
        let (old, new) = if at % 2 == 0 {
            (mss, max)
        } else {
            (mss.swap_bytes(), max.swap_bytes())
        };
        self.set_checksum(checksum::update_u16(self.checksum(), old, new));
        true
    }

    #[inline]
    pub fn options_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        &mut self.buffer.as_mut()[HEADER_LEN..hl]
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        &mut self.buffer.as_mut()[hl..]
    }
}

/// The checked, owned form of a TCP header without options, for segments privlink
/// originates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TcpRepr {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq_number: u32,
    pub ack_number: u32,
    pub flags: TcpFlags,
    pub window_len: u16,
    pub urgent_at: u16,
}

impl TcpRepr {
    /// The header of a checked segment from `src` to `dst`; [`Error::BadChecksum`] on a
    /// wrong checksum. Options are skipped.
    #[inline]
    pub fn parse<T: AsRef<[u8]>>(
        packet: &TcpPacket<T>,
        src: impl Into<Ipv4Addr>,
        dst: impl Into<Ipv4Addr>,
    ) -> Result<Self> {
        packet.check_len()?;
        if !packet.verify_checksum(src, dst) {
            return Err(Error::BadChecksum);
        }
        Ok(Self::fields(packet))
    }

    /// The header fields of a segment whose length was checked.
    fn fields<T: AsRef<[u8]>>(packet: &TcpPacket<T>) -> Self {
        Self {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
            seq_number: packet.seq_number(),
            ack_number: packet.ack_number(),
            flags: packet.flags(),
            window_len: packet.window_len(),
            urgent_at: packet.urgent_at(),
        }
    }

    /// The RST that answers `incoming` when it belongs to no connection (RFC 9293
    /// §3.10.7.1): if it carries an ACK, `seq = SEG.ACK` and only RST is set; otherwise
    /// `seq = 0`, `ack = SEG.SEQ + SEG.LEN` and RST|ACK are set. Ports are swapped; the
    /// caller swaps the addresses.
    ///
    /// [`Error::Unsupported`] if `incoming` is itself a RST, which is never answered.
    #[inline]
    pub fn rst_reply<T: AsRef<[u8]>>(incoming: &TcpPacket<T>) -> Result<Self> {
        incoming.check_len()?;
        if incoming.rst() {
            return Err(Error::Unsupported);
        }
        let (seq_number, ack_number, flags) = if incoming.ack() {
            (incoming.ack_number(), 0, TcpFlags::RST)
        } else {
            (
                0,
                incoming.seq_number().wrapping_add(incoming.segment_len()),
                TcpFlags::RST | TcpFlags::ACK,
            )
        };
        Ok(Self {
            src_port: incoming.dst_port(),
            dst_port: incoming.src_port(),
            seq_number,
            ack_number,
            flags,
            window_len: 0,
            urgent_at: 0,
        })
    }

    /// The header length [`emit`](Self::emit) writes.
    #[inline]
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes a 20-byte header into the front of `buf` and fills the checksum over it and
    /// the `payload_len` bytes the caller has placed after it. Returns the segment length.
    ///
    /// [`Error::Truncated`] if `buf` cannot hold header and payload, [`Error::Malformed`]
    /// if the segment would exceed 65535 bytes.
    pub fn emit(
        &self,
        buf: &mut [u8],
        src: impl Into<Ipv4Addr>,
        dst: impl Into<Ipv4Addr>,
        payload_len: usize,
    ) -> Result<usize> {
        let len = payload_len
            .checked_add(HEADER_LEN)
            .filter(|&l| l <= usize::from(u16::MAX))
            .ok_or(Error::Malformed)?;
        let buf = buf.get_mut(..len).ok_or(Error::Truncated)?;
        let mut p = TcpPacket::new_unchecked(buf);
        p.set_src_port(self.src_port);
        p.set_dst_port(self.dst_port);
        p.set_seq_number(self.seq_number);
        p.set_ack_number(self.ack_number);
        p.set_header_len(20);
        p.set_flags(self.flags);
        p.set_window_len(self.window_len);
        p.set_urgent_at(self.urgent_at);
        p.fill_checksum(src, dst);
        Ok(len)
    }
}

impl TcpRepr {
    /// [`TcpRepr::parse`] of a segment carried by IPv6 from `src` to `dst`.
    pub fn parse6<T: AsRef<[u8]>>(packet: &TcpPacket<T>, src: u128, dst: u128) -> Result<Self> {
        packet.check_len()?;
        let seg = packet.buffer.as_ref();
        if crate::wire::icmpv6::l4_checksum_v6(src, dst, IpProtocol::TCP.0, seg) != 0 {
            return Err(Error::BadChecksum);
        }
        Ok(Self::fields(packet))
    }

    /// [`TcpRepr::emit`] of a segment carried by IPv6 from `src` to `dst`.
    pub fn emit6(&self, buf: &mut [u8], src: u128, dst: u128, payload_len: usize) -> Result<usize> {
        let len = self.emit(
            buf,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            payload_len,
        )?;
        let mut p = TcpPacket::new_unchecked(&mut buf[..len]);
        p.set_checksum(0);
        let c = crate::wire::icmpv6::l4_checksum_v6(src, dst, IpProtocol::TCP.0, &p.buffer[..]);
        p.set_checksum(c);
        Ok(len)
    }
}

/// Writes into `buf` the RST answering `incoming`, a segment from `incoming_src` to
/// `incoming_dst`, and returns its length (20). See [`TcpRepr::rst_reply`]; the IPv4
/// header (from `incoming_dst` to `incoming_src`) is the caller's.
pub fn emit_rst_reply<T: AsRef<[u8]>>(
    incoming: &TcpPacket<T>,
    incoming_src: impl Into<Ipv4Addr>,
    incoming_dst: impl Into<Ipv4Addr>,
    buf: &mut [u8],
) -> Result<usize> {
    TcpRepr::rst_reply(incoming)?.emit(buf, incoming_dst, incoming_src, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const DST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    /// A Linux SYN 10.0.0.1:40000 → 10.0.0.2:80 with MSS, SACK-permitted, timestamps,
    /// NOP and window scale options (data offset 10), checksum 0x0948.
    const SYN: [u8; 40] = [
        0x9c, 0x40, 0x00, 0x50, 0x6b, 0x8b, 0x45, 0x67, 0x00, 0x00, 0x00, 0x00, 0xa0, 0x02, 0xfa,
        0xf0, 0x09, 0x48, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4, 0x04, 0x02, 0x08, 0x0a, 0x00, 0x01,
        0xe2, 0x40, 0x00, 0x00, 0x00, 0x00, 0x01, 0x03, 0x03, 0x07,
    ];

    /// An ACK|PSH carrying "hello": seq 1000, ack 2000, window 502.
    fn data_segment() -> [u8; 25] {
        let mut s = [0u8; 25];
        s[..20].copy_from_slice(&[
            0x9c, 0x40, 0x00, 0x50, 0x00, 0x00, 0x03, 0xe8, 0x00, 0x00, 0x07, 0xd0, 0x50, 0x18,
            0x01, 0xf6, 0x00, 0x00, 0x00, 0x00,
        ]);
        s[20..].copy_from_slice(b"hello");
        TcpPacket::new_unchecked(&mut s[..]).fill_checksum(SRC, DST);
        s
    }

    #[test]
    fn deconstruct() {
        let p = TcpPacket::new_checked(&SYN[..]).unwrap();
        assert_eq!(p.src_port(), 40000);
        assert_eq!(p.dst_port(), 80);
        assert_eq!(p.seq_number(), 0x6b8b_4567);
        assert_eq!(p.ack_number(), 0);
        assert_eq!(p.header_len(), 40);
        assert_eq!(p.flags(), TcpFlags::SYN);
        assert!(p.syn() && !p.ack() && !p.fin() && !p.rst());
        assert_eq!(p.window_len(), 64240);
        assert_eq!(p.checksum(), 0x0948);
        assert_eq!(p.urgent_at(), 0);
        assert_eq!(p.options().len(), 20);
        assert_eq!(&p.options()[..4], &[0x02, 0x04, 0x05, 0xb4]);
        assert!(p.payload().is_empty());
        assert_eq!(p.segment_len(), 1);
        assert!(p.verify_checksum(SRC, DST));
        assert!(p.verify_checksum(SRC.octets(), DST.octets()));
        assert!(!p.verify_checksum(DST, Ipv4Addr::new(10, 0, 0, 3)));
        assert!(p.into_payload().is_empty());
    }

    #[test]
    fn syn_options_of_a_linux_syn() {
        let p = TcpPacket::new_checked(&SYN[..]).unwrap();
        assert_eq!(
            p.syn_options(),
            SynOptions {
                mss: Some((1460, 22)),
                window_scale: Some(7),
            }
        );
        let kinds: Vec<u8> = p.options_iter().map(|o| o.unwrap().kind).collect();
        assert_eq!(
            kinds,
            [2, 4, 8, 3],
            "MSS, SACK-permitted, timestamps, window scale"
        );
        // No options, and a window scale above 14, which RFC 7323 caps.
        let d = data_segment();
        assert_eq!(
            TcpPacket::new_checked(&d[..]).unwrap().syn_options(),
            SynOptions::default()
        );
        let mut big = SYN;
        big[39] = 15;
        let p = TcpPacket::new_checked(&big[..]).unwrap();
        assert_eq!(p.syn_options().window_scale, Some(14));
    }

    #[test]
    fn syn_options_survive_bad_lists() {
        // MSS with a 3-byte value is not an MSS; a list broken after the MSS keeps it.
        let mut s = SYN;
        s[21] = 0x05;
        let p = TcpPacket::new_checked(&s[..]).unwrap();
        assert_eq!(p.syn_options().mss, None);
        let mut s = SYN;
        s[25] = 0x00; // SACK-permitted with length 0
        let p = TcpPacket::new_checked(&s[..]).unwrap();
        assert_eq!(
            p.syn_options(),
            SynOptions {
                mss: Some((1460, 22)),
                window_scale: None
            }
        );
    }

    #[test]
    fn clamp_mss_lowers_only_and_keeps_the_checksum_right() {
        let mut s = SYN;
        let mut p = TcpPacket::new_checked(&mut s[..]).unwrap();
        assert!(!p.clamp_mss(1460), "equal: unchanged");
        assert!(!p.clamp_mss(9000), "larger: unchanged");
        assert_eq!(s, SYN);
        let mut p = TcpPacket::new_checked(&mut s[..]).unwrap();
        assert!(p.clamp_mss(1200));
        assert_eq!(p.syn_options().mss, Some((1200, 22)));
        assert!(p.verify_checksum(SRC, DST));
        assert_eq!(&s[20..24], &[0x02, 0x04, 0x04, 0xb0]);

        // The MSS value at an odd offset: NOP, MSS, then three NOPs (data offset 7).
        let mut odd = [0u8; 28];
        odd[..20].copy_from_slice(&SYN[..20]);
        odd[12] = 0x70;
        odd[20..].copy_from_slice(&[0x01, 0x02, 0x04, 0x23, 0x28, 0x01, 0x01, 0x01]);
        let mut p = TcpPacket::new_unchecked(&mut odd[..]);
        p.fill_checksum(SRC, DST);
        assert_eq!(p.syn_options().mss, Some((9000, 23)));
        assert!(p.clamp_mss(1400));
        assert_eq!(p.syn_options().mss, Some((1400, 23)));
        assert!(
            p.verify_checksum(SRC, DST),
            "odd offset: byte-swapped update"
        );
        // A segment without the option: nothing to clamp.
        let mut d = data_segment();
        assert!(!TcpPacket::new_checked(&mut d[..]).unwrap().clamp_mss(536));
    }

    #[test]
    fn construct() {
        let mut buf = [0u8; 40];
        buf[20..].copy_from_slice(&SYN[20..]);
        let mut p = TcpPacket::new_unchecked(&mut buf[..]);
        p.set_src_port(40000);
        p.set_dst_port(80);
        p.set_seq_number(0x6b8b_4567);
        p.set_ack_number(0);
        p.set_header_len(40);
        p.set_flags(TcpFlags::SYN);
        p.set_window_len(64240);
        p.set_urgent_at(0);
        p.fill_checksum(SRC, DST);
        assert_eq!(buf, SYN);
    }

    #[test]
    fn parse_emit() {
        let seg = data_segment();
        let p = TcpPacket::new_checked(&seg[..]).unwrap();
        assert_eq!(p.payload(), b"hello");
        assert_eq!(p.segment_len(), 5);
        let repr = TcpRepr::parse(&p, SRC, DST).unwrap();
        assert_eq!(
            repr,
            TcpRepr {
                src_port: 40000,
                dst_port: 80,
                seq_number: 1000,
                ack_number: 2000,
                flags: TcpFlags::ACK | TcpFlags::PSH,
                window_len: 502,
                urgent_at: 0,
            }
        );
        let mut out = [0u8; 25];
        out[20..].copy_from_slice(b"hello");
        assert_eq!(repr.emit(&mut out, SRC, DST, 5), Ok(25));
        assert_eq!(out, seg);
        assert_eq!(repr.emit(&mut out, SRC, DST, 6), Err(Error::Truncated));
        assert_eq!(repr.emit(&mut out, SRC, DST, 65516), Err(Error::Malformed));
        assert_eq!(
            repr.emit(&mut out, SRC, DST, usize::MAX),
            Err(Error::Malformed)
        );
        assert_eq!(
            TcpRepr::parse(&p, Ipv4Addr::new(10, 0, 0, 3), DST),
            Err(Error::BadChecksum)
        );
    }

    #[test]
    fn bad_checksum() {
        let mut seg = data_segment();
        seg[24] ^= 0x20;
        let p = TcpPacket::new_checked(&seg[..]).unwrap();
        assert!(!p.verify_checksum(SRC, DST));
        assert_eq!(TcpRepr::parse(&p, SRC, DST), Err(Error::BadChecksum));
    }

    #[test]
    fn short_at_every_length() {
        for n in 0..40 {
            assert_eq!(
                TcpPacket::new_checked(&SYN[..n]).err(),
                Some(Error::Truncated),
                "length {n}"
            );
        }
    }

    #[test]
    fn bad_data_offset() {
        for off in 0..5u8 {
            let mut seg = data_segment();
            seg[12] = off << 4;
            assert_eq!(
                TcpPacket::new_checked(&seg[..]).err(),
                Some(Error::Malformed),
                "offset {off}"
            );
        }
        let mut seg = data_segment();
        seg[12] = 0xf0; // 60 bytes in 25
        assert_eq!(
            TcpPacket::new_checked(&seg[..]).err(),
            Some(Error::Truncated)
        );
        let mut seg = data_segment();
        seg[12] = 0x60; // 24 bytes in 25: one byte of payload left
        assert_eq!(TcpPacket::new_checked(&seg[..]).unwrap().payload(), b"o");
        let big = vec![0x50u8; 65536];
        assert_eq!(
            TcpPacket::new_checked(&big[..]).err(),
            Some(Error::Malformed)
        );
        assert!(TcpPacket::new_checked(&big[..65535]).is_ok());
    }

    #[test]
    fn nat_rewrites_match_recompute() {
        let mut seg = data_segment();
        let mut p = TcpPacket::new_checked(&mut seg[..]).unwrap();
        let new_src = Ipv4Addr::new(172, 16, 0, 9);
        let new_dst = Ipv4Addr::new(192, 168, 7, 7);
        p.rewrite_src_port(61000);
        p.rewrite_dst_port(8080);
        p.update_checksum_for_addr(SRC.octets(), new_src.octets());
        p.update_checksum_for_addr(DST.octets(), new_dst.octets());
        assert!(p.verify_checksum(new_src, new_dst));
        let c = p.checksum();
        p.fill_checksum(new_src, new_dst);
        assert_eq!(p.checksum(), c);
        assert_eq!((p.src_port(), p.dst_port()), (61000, 8080));
    }

    #[test]
    fn setters() {
        let mut seg = data_segment();
        let mut p = TcpPacket::new_checked(&mut seg[..]).unwrap();
        p.payload_mut()[0] = b'j';
        assert_eq!(p.payload(), b"jello");
        assert!(p.options_mut().is_empty());
        p.set_header_len(24);
        assert_eq!(p.options_mut().len(), 4);
        assert_eq!(p.into_inner().len(), 25);
    }

    #[test]
    fn rst_to_ack_segment() {
        let seg = data_segment();
        let p = TcpPacket::new_checked(&seg[..]).unwrap();
        let mut buf = [0u8; 20];
        assert_eq!(emit_rst_reply(&p, SRC, DST, &mut buf), Ok(20));
        let r = TcpPacket::new_checked(&buf[..]).unwrap();
        assert_eq!((r.src_port(), r.dst_port()), (80, 40000));
        assert_eq!(r.seq_number(), 2000);
        assert_eq!(r.flags(), TcpFlags::RST);
        assert_eq!(r.ack_number(), 0);
        assert_eq!(r.window_len(), 0);
        assert!(r.verify_checksum(DST, SRC));
        assert_eq!(
            emit_rst_reply(&p, SRC, DST, &mut buf[..19]),
            Err(Error::Truncated)
        );
    }

    #[test]
    fn rst_to_syn_and_fin() {
        let p = TcpPacket::new_checked(&SYN[..]).unwrap();
        let r = TcpRepr::rst_reply(&p).unwrap();
        assert_eq!(r.seq_number, 0);
        assert_eq!(r.ack_number, 0x6b8b_4568, "SYN counts one");
        assert_eq!(r.flags, TcpFlags::RST | TcpFlags::ACK);

        // FIN without ACK, 5 data bytes, sequence number about to wrap.
        let mut seg = data_segment();
        let mut p = TcpPacket::new_checked(&mut seg[..]).unwrap();
        p.set_flags(TcpFlags::FIN | TcpFlags::PSH);
        p.set_seq_number(u32::MAX - 2);
        let r = TcpRepr::rst_reply(&p).unwrap();
        assert_eq!(r.ack_number, 3, "5 bytes + FIN, wrapping");
        assert_eq!(r.flags, TcpFlags::RST | TcpFlags::ACK);

        p.set_flags(TcpFlags::RST);
        assert_eq!(TcpRepr::rst_reply(&p), Err(Error::Unsupported));
        p.set_flags(TcpFlags::RST | TcpFlags::ACK);
        let mut buf = [0u8; 20];
        assert_eq!(
            emit_rst_reply(&p, SRC, DST, &mut buf),
            Err(Error::Unsupported)
        );
    }

    #[test]
    fn flags_set() {
        let mut f = TcpFlags::SYN | TcpFlags::ACK;
        assert_eq!(format!("{f:?}"), "SYN|ACK");
        assert_eq!(TcpFlags::empty().to_string(), "-");
        assert_eq!(
            format!("{:?}", TcpFlags::from_bits(0xff)),
            "FIN|SYN|RST|PSH|ACK|URG|ECE|CWR"
        );
        assert!(f.contains(TcpFlags::SYN) && !f.contains(TcpFlags::SYN | TcpFlags::FIN));
        assert!(f.intersects(TcpFlags::SYN | TcpFlags::FIN));
        f.insert(TcpFlags::FIN);
        f.remove(TcpFlags::SYN);
        assert_eq!(f, TcpFlags::FIN.union(TcpFlags::ACK));
        f |= TcpFlags::ECE;
        assert_eq!((f & !TcpFlags::ACK).bits(), 0x41);
        assert!(TcpFlags::default().is_empty());
    }
}
