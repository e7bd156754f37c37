//! L2: the input side reads Ethernet and VLAN headers ([`super::context::parse_l2`]); the
//! output node and the helpers here are the only writers of Ethernet headers: the
//! header of an attachment in front of a routed packet, a reply's turned-around header,
//! and the headers of what the appliance originates.

use super::dispatch::Next;
use super::*;

/// The shortest Ethernet frame without FCS (IEEE 802.3 §3.2.8): what the appliance pads
/// the frames it originates to (plus the tag on a VLAN, so the frame stays long enough
/// when a switch strips it).
pub(super) const MIN_FRAME_LEN: usize = 60;

impl<F: Frame> Pipeline<F> {
    /// The L2 output node: puts the header of attachment `att` in front of the packet at
    /// `l3`, with the next hop's MAC as destination, or holds the packet while the next
    /// hop resolves. Always inlined, for the reason [`rewrite`](Self::rewrite) is.
    #[inline(always)]
    pub(super) fn route(
        &mut self,
        snap: &Snapshot,
        att_idx: u16,
        dst: u32,
        frame: &mut F,
        l3: usize,
        now_ms: u64,
    ) -> Result<Next, DropReason> {
        let att = snap.attachment(att_idx).ok_or(DropReason::NoAttachment)?;
        // Translations check the MTU before they rewrite (so a DF packet can be answered);
        // this catches what they cannot answer for, such as a long translated ICMP error.
        if frame.bytes().len().saturating_sub(l3) > usize::from(att.mtu) {
            return Err(DropReason::TooBig);
        }
        let next_hop = att.next_hop(dst).ok_or(DropReason::NeighbourUnresolved)?;
        fit_l2(frame, l3, att)?;
        let (mac, next) = match self.neighbours.resolve(att_idx, next_hop, now_ms) {
            Resolution::Known(mac) => (EthernetAddress(mac), Next::Tx(att.port)),
            Resolution::Refresh(mac) => {
                self.request(att, Hop::V4(next_hop), now_ms);
                (EthernetAddress(mac), Next::Tx(att.port))
            }
            // Held: the destination is written when the next hop answers.
            Resolution::Request => {
                self.request(att, Hop::V4(next_hop), now_ms);
                (EthernetAddress::UNSPECIFIED, Next::Hold(att_idx, next_hop))
            }
            Resolution::Pending => (EthernetAddress::UNSPECIFIED, Next::Hold(att_idx, next_hop)),
            Resolution::Failed => return Err(DropReason::NeighbourUnresolved),
        };
        write_l2(frame.bytes_mut(), att, mac, EtherType::IPV4);
        Ok(next)
    }

    /// The IPv6 side of [`route`](Self::route): puts the header of attachment `att_idx`
    /// in front of the IPv6 packet at `l3` (its size already checked against the MTU by
    /// the caller), with the MAC of the next hop towards `dst`, or holds the packet while
    /// neighbour discovery resolves it.
    pub(super) fn route6(
        &mut self,
        att: &AttachmentView,
        att_idx: u16,
        dst: u128,
        frame: &mut F,
        l3: usize,
        now_ms: u64,
    ) -> Result<Next, DropReason> {
        let (mac, next) = self.next_hop6(att, att_idx, dst, now_ms)?;
        fit_l2(frame, l3, att)?;
        write_l2(frame.bytes_mut(), att, mac, EtherType::IPV6);
        Ok(next)
    }

    /// The MAC of the next hop towards IPv6 `dst` on `att` and where the frame goes:
    /// out of its port, or held (destination unspecified until the neighbour answers;
    /// a solicitation is sent by whoever claimed it). Always inlined: its result is too
    /// big for registers, and read back through memory it stalled its callers.
    #[inline(always)]
    pub(super) fn next_hop6(
        &mut self,
        att: &AttachmentView,
        att_idx: u16,
        dst: u128,
        now_ms: u64,
    ) -> Result<(EthernetAddress, Next), DropReason> {
        let hop = att.next_hop6(dst).ok_or(DropReason::NeighbourUnresolved)?;
        let slot = u32::try_from(self.hops6.len()).map_err(|_| DropReason::NeighbourUnresolved)?;
        let held = Next::Hold6(att_idx, slot);
        let known = |mac| (EthernetAddress(mac), Next::Tx(att.port));
        Ok(match self.neighbours6.resolve(att_idx, hop, now_ms) {
            Resolution::Known(mac) => known(mac),
            Resolution::Refresh(mac) => {
                self.send_solicit(att, hop);
                known(mac)
            }
            Resolution::Request => {
                self.send_solicit(att, hop);
                self.hops6.push(hop);
                (EthernetAddress::UNSPECIFIED, held)
            }
            Resolution::Pending => {
                self.hops6.push(hop);
                (EthernetAddress::UNSPECIFIED, held)
            }
            Resolution::Failed => return Err(DropReason::NeighbourUnresolved),
        })
    }

    /// Asks for `next_hop`'s MAC on `att`: ARP, or a neighbour solicitation.
    pub(super) fn request(&mut self, att: &AttachmentView, next_hop: Hop, now_ms: u64) {
        match next_hop {
            Hop::V4(ip) => self.send_arp(
                att,
                ArpOperation::REQUEST,
                att.ip,
                ip,
                EthernetAddress::BROADCAST,
                now_ms,
            ),
            Hop::V6(ip) => self.send_solicit(att, ip),
        }
    }
}

/// Makes room in front of the L3 packet at `l3` for the L2 header of attachment `att`
/// (with or without its VLAN tag); the header itself is written by [`write_l2`].
#[inline]
pub(super) fn fit_l2<F: Frame>(
    frame: &mut F,
    l3: usize,
    att: &AttachmentView,
) -> Result<(), DropReason> {
    let want = ethernet::HEADER_LEN + if att.vlan.is_some() { vlan::TAG_LEN } else { 0 };
    if want > l3 {
        if !frame.push_front(want - l3) {
            return Err(DropReason::Malformed);
        }
    } else if want < l3 && !frame.pull_front(l3 - want) {
        return Err(DropReason::Malformed);
    }
    Ok(())
}

/// Writes an Ethernet (and 802.1Q when the attachment has a VLAN) header at the front.
#[inline]
pub(super) fn write_l2(
    bytes: &mut [u8],
    att: &AttachmentView,
    dst: EthernetAddress,
    ethertype: EtherType,
) {
    let mut eth = EthernetFrame::new_unchecked(&mut *bytes);
    eth.set_dst_addr(dst);
    eth.set_src_addr(EthernetAddress(att.mac));
    match att.vlan {
        None => eth.set_ethertype(ethertype),
        Some(vid) => {
            eth.set_ethertype(EtherType::VLAN);
            let mut tag = vlan::VlanTag::new_unchecked(&mut bytes[ethernet::HEADER_LEN..]);
            tag.set_tci(vid);
            tag.set_ethertype(ethertype);
        }
    }
}

/// Fills in the destination of a frame whose L2 header was written without one (a packet
/// held while its next hop resolved).
#[inline]
pub(super) fn set_destination(bytes: &mut [u8], mac: [u8; 6]) {
    if bytes.len() >= ethernet::HEADER_LEN {
        EthernetFrame::new_unchecked(bytes).set_dst_addr(EthernetAddress(mac));
    }
}

/// Addresses a frame from `src` (our MAC) to `dst`, its L2 header otherwise kept.
#[inline]
pub(super) fn set_addresses(bytes: &mut [u8], dst: EthernetAddress, src: [u8; 6]) {
    if bytes.len() >= ethernet::HEADER_LEN {
        let mut eth = EthernetFrame::new_unchecked(bytes);
        eth.set_dst_addr(dst);
        eth.set_src_addr(EthernetAddress(src));
    }
}

/// Turns the L2 header around for a reply on the same attachment.
#[inline]
pub(super) fn reply_l2(bytes: &mut [u8], our_mac: [u8; 6]) {
    let mut eth = EthernetFrame::new_unchecked(bytes);
    let peer = eth.src_addr();
    eth.set_dst_addr(peer);
    eth.set_src_addr(EthernetAddress(our_mac));
}

/// Pads a frame the appliance originates with zeros to the shortest Ethernet frame
/// ([`MIN_FRAME_LEN`], plus the tag when `tagged`); false if it cannot grow.
pub(super) fn pad_frame<F: Frame>(frame: &mut F, tagged: bool) -> bool {
    let min = MIN_FRAME_LEN + if tagged { vlan::TAG_LEN } else { 0 };
    let len = frame.bytes().len();
    if len >= min {
        return true;
    }
    if !frame.set_len(min) {
        return false;
    }
    frame.bytes_mut()[len..].fill(0);
    true
}
