//! IEEE 802.1Q VLAN tags, and the L2 classification every received frame goes through.
//!
//! A tag is the 4 bytes after an Ethernet header whose EtherType is 0x8100: the TCI
//! (priority, drop-eligible bit, VLAN id) and the inner EtherType. [`VlanTag`] views those
//! 4 bytes and what follows; [`l2_header`] finds the L3 header of a whole frame.
//!
//! privlink binds one VPC attachment to a port or to one VLAN on it, so it accepts untagged
//! and single-tagged frames only: a second tag (QinQ, 802.1ad) is [`Error::Unsupported`].
//!
//! No-panic contract: after [`VlanTag::new_checked`] succeeds, no accessor or setter
//! panics; [`l2_header`], [`strip_tag`] and [`push_tag`] never panic on any input.

use super::ethernet::{self, EtherType};
use super::{Error, Result};

mod field {
    use core::ops::Range;

    pub const TCI: Range<usize> = 0..2;
    pub const ETHERTYPE: Range<usize> = 2..4;
    pub const PAYLOAD: usize = 4;
}

/// The length of one 802.1Q tag.
pub const TAG_LEN: usize = field::PAYLOAD;

/// The largest VLAN id a frame may carry; 4095 is reserved.
pub const MAX_VID: u16 = 4094;

const VID_MASK: u16 = 0x0fff;
const DEI_BIT: u16 = 0x1000;

/// A view of an 802.1Q tag and the payload after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VlanTag<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VlanTag<T> {
    /// A view without any check; accessors may panic on a short buffer.
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// A view whose accessors cannot panic, or [`Error::Truncated`].
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self> {
        let tag = Self::new_unchecked(buffer);
        tag.check_len()?;
        Ok(tag)
    }

    #[inline]
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < TAG_LEN {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The whole tag control information word.
    #[inline]
    pub fn tci(&self) -> u16 {
        let d = self.buffer.as_ref();
        u16::from_be_bytes([d[field::TCI.start], d[field::TCI.start + 1]])
    }

    /// Priority code point, 0..=7.
    #[inline]
    pub fn pcp(&self) -> u8 {
        self.buffer.as_ref()[field::TCI.start] >> 5
    }

    /// Drop eligible indicator.
    #[inline]
    pub fn dei(&self) -> bool {
        self.tci() & DEI_BIT != 0
    }

    /// VLAN identifier, 0..=4095 (0 means "priority tag only", 4095 is reserved).
    #[inline]
    pub fn vid(&self) -> u16 {
        self.tci() & VID_MASK
    }

    /// The EtherType of what follows the tag.
    #[inline]
    pub fn ethertype(&self) -> EtherType {
        let d = self.buffer.as_ref();
        EtherType(u16::from_be_bytes([
            d[field::ETHERTYPE.start],
            d[field::ETHERTYPE.start + 1],
        ]))
    }

    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VlanTag<T> {
    #[inline]
    pub fn set_tci(&mut self, tci: u16) {
        self.buffer.as_mut()[field::TCI].copy_from_slice(&tci.to_be_bytes());
    }

    /// Sets the priority; bits above the low three are ignored.
    #[inline]
    pub fn set_pcp(&mut self, pcp: u8) {
        let tci = (self.tci() & 0x1fff) | (u16::from(pcp & 0x07) << 13);
        self.set_tci(tci);
    }

    #[inline]
    pub fn set_dei(&mut self, dei: bool) {
        let tci = if dei {
            self.tci() | DEI_BIT
        } else {
            self.tci() & !DEI_BIT
        };
        self.set_tci(tci);
    }

    /// Sets the VLAN id; bits above the low twelve are ignored.
    #[inline]
    pub fn set_vid(&mut self, vid: u16) {
        self.set_tci((self.tci() & !VID_MASK) | (vid & VID_MASK));
    }

    #[inline]
    pub fn set_ethertype(&mut self, ethertype: EtherType) {
        self.buffer.as_mut()[field::ETHERTYPE].copy_from_slice(&ethertype.0.to_be_bytes());
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD..]
    }
}

/// The checked, owned form of an 802.1Q tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VlanRepr {
    pub pcp: u8,
    pub dei: bool,
    pub vid: u16,
    pub ethertype: EtherType,
}

impl VlanRepr {
    /// The tag's fields; [`Error::Malformed`] for the reserved VLAN id 4095.
    #[inline]
    pub fn parse<T: AsRef<[u8]>>(tag: &VlanTag<T>) -> Result<Self> {
        tag.check_len()?;
        if tag.vid() > MAX_VID {
            return Err(Error::Malformed);
        }
        Ok(Self {
            pcp: tag.pcp(),
            dei: tag.dei(),
            vid: tag.vid(),
            ethertype: tag.ethertype(),
        })
    }

    /// The TCI word these fields make; out-of-range fields are masked.
    #[inline]
    pub fn tci(&self) -> u16 {
        (u16::from(self.pcp & 0x07) << 13)
            | if self.dei { DEI_BIT } else { 0 }
            | (self.vid & VID_MASK)
    }

    #[inline]
    pub const fn buffer_len(&self) -> usize {
        TAG_LEN
    }

    /// Writes the 4-byte tag into the front of `buf` and returns its length;
    /// [`Error::Truncated`] if `buf` is too short, [`Error::Malformed`] if a field is out of
    /// range.
    #[inline]
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        if self.pcp > 7 || self.vid > MAX_VID {
            return Err(Error::Malformed);
        }
        let mut tag = VlanTag::new_checked(buf)?;
        tag.set_tci(self.tci());
        tag.set_ethertype(self.ethertype);
        Ok(TAG_LEN)
    }
}

/// Where a frame's L3 header starts and which VLAN it came on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct L2Header {
    /// Bytes before the L3 header: 14 untagged, 18 with one tag.
    pub header_len: usize,
    /// The VLAN id, or `None` for an untagged or priority-tagged (VID 0) frame.
    pub vlan_id: Option<u16>,
    /// The EtherType of the L3 header (the inner one for a tagged frame).
    pub ethertype: EtherType,
}

/// Classifies the L2 header of a whole frame.
///
/// Errors: [`Error::Truncated`] if the frame is shorter than its header(s),
/// [`Error::Unsupported`] for an 802.1ad outer tag or a second tag (QinQ),
/// [`Error::Malformed`] for the reserved VLAN id 4095.
#[inline]
pub fn l2_header(frame: &[u8]) -> Result<L2Header> {
    let eth = ethernet::EthernetFrame::new_checked(frame)?;
    let outer = eth.ethertype();
    if outer == EtherType::QINQ {
        return Err(Error::Unsupported);
    }
    if outer != EtherType::VLAN {
        return Ok(L2Header {
            header_len: ethernet::HEADER_LEN,
            vlan_id: None,
            ethertype: outer,
        });
    }
    let tag = VlanTag::new_checked(eth.into_payload())?;
    let inner = tag.ethertype();
    if inner.is_vlan_tag() {
        return Err(Error::Unsupported);
    }
    let vid = tag.vid();
    if vid > MAX_VID {
        return Err(Error::Malformed);
    }
    Ok(L2Header {
        header_len: ethernet::HEADER_LEN + TAG_LEN,
        vlan_id: if vid == 0 { None } else { Some(vid) },
        ethertype: inner,
    })
}

/// Removes a single 802.1Q tag in place by moving the two MAC addresses 4 bytes later.
///
/// Returns the offset at which the untagged frame now starts (4), for the caller to trim
/// from the front of its buffer. [`Error::Truncated`] if `frame` has no complete tag,
/// [`Error::Malformed`] if it is not tagged with 0x8100.
#[inline]
pub fn strip_tag(frame: &mut [u8]) -> Result<usize> {
    if frame.len() < ethernet::HEADER_LEN + TAG_LEN {
        return Err(Error::Truncated);
    }
    if ethernet::EthernetFrame::new_unchecked(&*frame).ethertype() != EtherType::VLAN {
        return Err(Error::Malformed);
    }
    frame.copy_within(0..12, TAG_LEN);
    Ok(TAG_LEN)
}

/// Inserts an 802.1Q tag in place. `buf` holds 4 bytes of headroom followed by an
/// untagged frame; afterwards `buf` is the tagged frame.
///
/// [`Error::Truncated`] if `buf` cannot hold headroom plus an Ethernet header.
#[inline]
pub fn push_tag(buf: &mut [u8], tag: &VlanRepr) -> Result<()> {
    if buf.len() < TAG_LEN + ethernet::HEADER_LEN {
        return Err(Error::Truncated);
    }
    if tag.pcp > 7 || tag.vid > MAX_VID {
        return Err(Error::Malformed);
    }
    // The untagged frame's EtherType (at 4+12) lands at 16, exactly where a tag's inner
    // EtherType lives, so only the MACs move and the TPID/TCI are written between them.
    buf.copy_within(TAG_LEN..TAG_LEN + 12, 0);
    buf[12..14].copy_from_slice(&EtherType::VLAN.0.to_be_bytes());
    buf[14..16].copy_from_slice(&tag.tci().to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // A tagged IPv4 frame header: VLAN 100, PCP 5, DEI 0, then the first IPv4 byte.
    const TAGGED: [u8; 19] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x81, 0x00, 0xa0,
        0x64, 0x08, 0x00, 0x45,
    ];

    #[test]
    fn deconstruct() {
        let tag = VlanTag::new_checked(&TAGGED[14..]).unwrap();
        assert_eq!(tag.pcp(), 5);
        assert!(!tag.dei());
        assert_eq!(tag.vid(), 100);
        assert_eq!(tag.tci(), 0xa064);
        assert_eq!(tag.ethertype(), EtherType::IPV4);
        assert_eq!(tag.payload(), &[0x45]);
    }

    #[test]
    fn construct() {
        let mut buf = [0u8; 5];
        let mut tag = VlanTag::new_checked(&mut buf[..]).unwrap();
        tag.set_vid(0xf064); // high bits ignored
        tag.set_pcp(0xfd); // only the low 3 bits count
        tag.set_dei(true);
        tag.set_dei(false);
        tag.set_ethertype(EtherType::IPV4);
        tag.payload_mut()[0] = 0x45;
        assert_eq!(buf, TAGGED[14..]);
        let mut tag = VlanTag::new_checked(&mut buf[..]).unwrap();
        tag.set_dei(true);
        assert_eq!(tag.tci(), 0xb064);
        assert_eq!(tag.into_inner().len(), 5);
    }

    #[test]
    fn parse_emit() {
        let repr = VlanRepr::parse(&VlanTag::new_checked(&TAGGED[14..]).unwrap()).unwrap();
        assert_eq!(
            repr,
            VlanRepr {
                pcp: 5,
                dei: false,
                vid: 100,
                ethertype: EtherType::IPV4
            }
        );
        let mut buf = [0u8; 4];
        assert_eq!(repr.emit(&mut buf), Ok(4));
        assert_eq!(buf, TAGGED[14..18]);
        assert_eq!(repr.emit(&mut buf[..3]), Err(Error::Truncated));
        let bad = VlanRepr { vid: 4095, ..repr };
        assert_eq!(bad.emit(&mut buf), Err(Error::Malformed));
        let bad = VlanRepr { pcp: 8, ..repr };
        assert_eq!(bad.emit(&mut buf), Err(Error::Malformed));
        let reserved = [0x0f, 0xff, 0x08, 0x00];
        assert_eq!(
            VlanRepr::parse(&VlanTag::new_unchecked(&reserved[..])),
            Err(Error::Malformed)
        );
    }

    #[test]
    fn short_at_every_length() {
        for n in 0..TAG_LEN {
            assert_eq!(
                VlanTag::new_checked(&TAGGED[14..14 + n]).err(),
                Some(Error::Truncated)
            );
        }
        for n in 0..18 {
            assert_eq!(l2_header(&TAGGED[..n]), Err(Error::Truncated), "length {n}");
        }
    }

    #[test]
    fn classify() {
        assert_eq!(
            l2_header(&TAGGED),
            Ok(L2Header {
                header_len: 18,
                vlan_id: Some(100),
                ethertype: EtherType::IPV4
            })
        );
        let mut untagged = [0u8; 14];
        untagged[12] = 0x08;
        untagged[13] = 0x06;
        assert_eq!(
            l2_header(&untagged),
            Ok(L2Header {
                header_len: 14,
                vlan_id: None,
                ethertype: EtherType::ARP
            })
        );
        let mut prio = TAGGED;
        prio[14] = 0xa0;
        prio[15] = 0x00;
        assert_eq!(l2_header(&prio).unwrap().vlan_id, None);
        assert_eq!(l2_header(&prio).unwrap().header_len, 18);
        let mut reserved = TAGGED;
        reserved[14] = 0x0f;
        reserved[15] = 0xff;
        assert_eq!(l2_header(&reserved), Err(Error::Malformed));
    }

    #[test]
    fn qinq_is_unsupported() {
        // 802.1ad outer tag.
        let mut frame = TAGGED;
        frame[12] = 0x88;
        frame[13] = 0xa8;
        assert_eq!(l2_header(&frame), Err(Error::Unsupported));
        // Two 802.1Q tags.
        let mut frame = TAGGED;
        frame[16] = 0x81;
        frame[17] = 0x00;
        assert_eq!(l2_header(&frame), Err(Error::Unsupported));
        // 802.1Q outer, 802.1ad inner.
        frame[16] = 0x88;
        frame[17] = 0xa8;
        assert_eq!(l2_header(&frame), Err(Error::Unsupported));
    }

    #[test]
    fn strip_and_push() {
        let mut frame = TAGGED;
        assert_eq!(strip_tag(&mut frame), Ok(4));
        let untagged = &frame[4..];
        assert_eq!(&untagged[..12], &TAGGED[..12]);
        assert_eq!(&untagged[12..14], &[0x08, 0x00]);
        assert_eq!(untagged[14], 0x45);
        let repr = VlanRepr {
            pcp: 5,
            dei: false,
            vid: 100,
            ethertype: EtherType::IPV4,
        };
        assert_eq!(push_tag(&mut frame, &repr), Ok(()));
        assert_eq!(frame, TAGGED);

        let mut short = [0u8; 17];
        assert_eq!(strip_tag(&mut short), Err(Error::Truncated));
        let mut untagged = [0u8; 18];
        assert_eq!(strip_tag(&mut untagged), Err(Error::Malformed));
        assert_eq!(push_tag(&mut short[..17], &repr), Err(Error::Truncated));
        let bad = VlanRepr { vid: 4095, ..repr };
        assert_eq!(push_tag(&mut frame, &bad), Err(Error::Malformed));
    }
}
