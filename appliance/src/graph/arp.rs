//! The ARP node: learns neighbours from ARP that names them sanely (the shared table
//! tells every worker), answers requests for the appliance's addresses, and releases the
//! packets held for a neighbour that answered.

use super::context::Ctx;
use super::dispatch::Next;
use super::*;

impl<F: Frame> Pipeline<F> {
    /// ARP received on the attachment of `ctx`.
    pub(super) fn arp(
        &mut self,
        snap: &Snapshot,
        frame: &mut F,
        ctx: &Ctx,
        now_ms: u64,
    ) -> Result<Next, DropReason> {
        let (att_idx, l2_len) = (ctx.att, ctx.l3);
        let att = snap.attachment(att_idx).ok_or(DropReason::NoAttachment)?;
        let bytes = frame.bytes_mut();
        let payload = bytes.get_mut(l2_len..).ok_or(DropReason::Malformed)?;
        let mut arp = ArpPacket::new_checked(payload).map_err(|_| DropReason::ArpIgnored)?;
        let op = arp.operation();
        let sender_ip = u32::from_be_bytes(arp.source_protocol_addr_bytes());
        let sender_mac = arp.source_hardware_addr();
        let target_ip = u32::from_be_bytes(arp.target_protocol_addr_bytes());
        // Zero and group addresses name no station: nothing to learn, nobody to answer.
        let station = sender_mac.is_unicast() && sender_mac != EthernetAddress::UNSPECIFIED;
        let sane_sender = sender_ip != 0 && att.on_link(sender_ip) && station;
        let asks_us = op == ArpOperation::REQUEST && snap.local(att_idx, target_ip).is_some();
        if station && sender_mac.0 != att.mac && snap.local(att_idx, sender_ip).is_some() {
            // Another station speaks for one of our addresses: an HA peer that is active.
            self.claim_seen(att_idx, sender_mac.0);
        }

        if sane_sender {
            // A request addressed to us is worth learning (the sender talks to us), but
            // its sender is nobody we asked for: it takes only room nobody uses, so
            // senders made up across the prefix cannot evict the neighbours traffic
            // needs. A reply fills the entry our request made (or refreshes a known
            // one), as do other requests; a reply nobody asked for makes none.
            // The table is shared: every worker sees this at its next lookup, and
            // releases what it holds for it at its next tick.
            let learned = if asks_us {
                self.neighbours
                    .learn_unasked(att_idx, sender_ip, sender_mac.0, now_ms)
            } else {
                self.neighbours
                    .confirm(att_idx, sender_ip, sender_mac.0, now_ms)
            };
            if learned.is_usable() {
                self.release_held(snap, att_idx, Hop::V4(sender_ip), sender_mac.0);
            }
        }
        if !asks_us || sender_ip == target_ip || !station || !self.active {
            return if op == ArpOperation::REPLY && sane_sender {
                Ok(Next::Consumed)
            } else {
                Err(DropReason::ArpIgnored)
            };
        }
        arp.make_reply(EthernetAddress(att.mac))
            .map_err(|_| DropReason::Malformed)?;
        l2::set_addresses(frame.bytes_mut(), sender_mac, att.mac);
        // The request may have come unpadded (a kernel's tap); the reply leaves padded,
        // without whatever trailed the request's 28 bytes.
        let end = l2_len + crate::wire::arp::PACKET_LEN;
        if !frame.set_len(end) || !pad_frame(frame, l2_len > ethernet::HEADER_LEN) {
            return Err(DropReason::Malformed);
        }
        self.counters.arp_replies += 1;
        Ok(Next::Tx(att.port))
    }
}
