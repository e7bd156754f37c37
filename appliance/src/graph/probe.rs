//! The workers' side of health checks: the segments the checker queued leave through the
//! output node like any packet the appliance originates (so a probe takes the path
//! traffic takes, through the gateway if the target is behind one), and TCP segments to
//! the appliance's own address on a probe port go back to the checker. A bounded number
//! per poll and non-blocking queues: no probe can hold a worker up.

use std::net::IpAddr;

use super::context::Ctx;
use super::dispatch::Next;
use super::*;
use crate::health::link::{ProbeLink, ProbeReply, PROBE_PORTS, REPLY_PAYLOAD, SENDS_PER_POLL};

impl<F: Frame> Pipeline<F> {
    /// Connects this worker to the health checker.
    pub fn set_probe_link(&mut self, link: ProbeLink) {
        self.probes = Some(link);
    }

    /// Upkeep: sends what the checker queued for this worker, a bounded number per poll.
    pub(super) fn send_probes(&mut self, snap: &Snapshot, now_ms: u64) {
        for _ in 0..SENDS_PER_POLL {
            let Some(seg) = self.probes.as_ref().and_then(|l| l.outgoing.pop()) else {
                return;
            };
            let sent = match (seg.src, seg.dst) {
                (IpAddr::V4(s), IpAddr::V4(d)) => self.send_segment(
                    snap,
                    seg.attachment,
                    (s.into(), d.into()),
                    &seg.tcp,
                    &seg.payload,
                    now_ms,
                ),
                (IpAddr::V6(s), IpAddr::V6(d)) => self.send_segment6(
                    snap,
                    seg.attachment,
                    (s.into(), d.into()),
                    &seg.tcp,
                    &seg.payload,
                    now_ms,
                ),
                _ => Some(Err(DropReason::Malformed)),
            };
            match sent {
                Some(Ok(())) => self.counters.probes_sent += 1,
                Some(Err(reason)) => self.counters.drop(reason),
                None => {}
            }
        }
    }

    /// Whether a packet to our own address is for the checker: TCP to a probe port,
    /// with a checker to take it.
    #[inline]
    pub(super) fn is_probe_reply(&self, ctx: &Ctx) -> bool {
        self.probes.is_some()
            && ctx.proto == PROTO_TCP
            && matches!(ctx.l4, Ok(l4) if PROBE_PORTS.contains(&l4.dport))
    }

    /// The local node's part for probes: a checked segment goes to the checker.
    pub(super) fn probe_reply(
        &mut self,
        snap: &Snapshot,
        frame: &F,
        ctx: &Ctx,
    ) -> Result<Next, DropReason> {
        let (src, dst) = ctx.v4();
        refuse_martian(snap, ctx.att, src)?;
        let seg = frame
            .bytes()
            .get(ctx.l3 + ctx.header_len..ctx.l3 + ctx.total_len)
            .ok_or(DropReason::Malformed)?;
        let tcp = TcpPacket::new_checked(seg).map_err(|_| DropReason::Malformed)?;
        let repr = crate::wire::tcp::TcpRepr::parse(
            &tcp,
            std::net::Ipv4Addr::from(src),
            std::net::Ipv4Addr::from(dst),
        )
        .map_err(|_| DropReason::BadChecksum)?;
        let addrs = (
            IpAddr::V4(std::net::Ipv4Addr::from(src)),
            IpAddr::V4(std::net::Ipv4Addr::from(dst)),
        );
        self.hand_to_checker(ctx.att, addrs, repr, tcp.payload())
    }

    /// An IPv6 TCP segment from `src` to our own `dst` on a probe port (its segment at
    /// `at..end` of the frame): for the checker.
    pub(super) fn probe_reply6(
        &mut self,
        frame: &F,
        att: u16,
        (src, dst): (u128, u128),
        (at, end): (usize, usize),
    ) -> Result<Next, DropReason> {
        let seg = frame.bytes().get(at..end).ok_or(DropReason::Malformed)?;
        let tcp = TcpPacket::new_checked(seg).map_err(|_| DropReason::Malformed)?;
        let repr = crate::wire::tcp::TcpRepr::parse6(&tcp, src, dst)
            .map_err(|_| DropReason::BadChecksum)?;
        let addrs = (
            IpAddr::V6(std::net::Ipv6Addr::from(src)),
            IpAddr::V6(std::net::Ipv6Addr::from(dst)),
        );
        self.hand_to_checker(att, addrs, repr, tcp.payload())
    }

    /// Hands a probe port's segment to the checker.
    fn hand_to_checker(
        &mut self,
        attachment: u16,
        (src, dst): (IpAddr, IpAddr),
        repr: crate::wire::tcp::TcpRepr,
        payload: &[u8],
    ) -> Result<Next, DropReason> {
        let mut head = [0u8; REPLY_PAYLOAD];
        let kept = payload.len().min(REPLY_PAYLOAD);
        head[..kept].copy_from_slice(&payload[..kept]);
        let reply = ProbeReply {
            attachment,
            src,
            dst,
            tcp: repr,
            payload_len: u16::try_from(payload.len()).unwrap_or(u16::MAX),
            head,
        };
        let queue = self.probes.as_ref().ok_or(DropReason::IcmpUnsupported)?;
        if queue.replies.push(reply).is_err() {
            return Err(DropReason::ProbeBacklog);
        }
        self.counters.probe_replies += 1;
        Ok(Next::Consumed)
    }
}
