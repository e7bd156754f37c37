//! Flows: one translated connection each (consumer 5-tuple, chosen target, SNAT `ip:port`,
//! TCP state, last-seen time), kept in a per-worker [`FlowTable`].
//!
//! This module owns the flow record, its two lookup keys, the idle timeouts and TCP
//! tracking ([`tcp`]). It never allocates after [`FlowTable::with_capacity`], never locks,
//! never uses atomics: each worker owns its table outright, and replies that arrive on
//! another worker's queue are handed to the owner rather than looked up here.
//!
//! Ids the caller stores in a flow (`service`, `listener`, `target`, `endpoint`) refer to
//! the snapshot whose number is `generation`; this module never interprets them.

mod table;
pub mod tcp;

pub use table::{FlowTable, TableFull, MAX_CAPACITY};
pub use tcp::{TcpFlags, TcpState};

use crate::tables::maglev::mix64;
use crate::tables::vhash::VectorHash;

/// IP protocol number of ICMP.
pub const PROTO_ICMP: u8 = 1;
/// IP protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const PROTO_UDP: u8 = 17;

/// What identifies one direction of a flow as its packets arrive.
///
/// A flow is found by two keys: its *forward* key, as the consumer's packets arrive
/// (`vpc` = consumer VPC, `src` = consumer `ip:port`, `dst` = endpoint `ip:port`), and its
/// *reverse* key, as the target's replies arrive (`vpc` = provider VPC, `src` = target
/// `ip:port`, `dst` = SNAT `ip:port`). IPs are in host byte order
/// (`u32::from_be_bytes` of the wire bytes). For ICMP echo the ports hold the echo
/// identifier.
///
/// 16 bytes (one byte of padding).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(C)]
pub struct FlowKey {
    /// Source address.
    pub src_ip: u32,
    /// Destination address.
    pub dst_ip: u32,
    /// Source port (or ICMP echo identifier).
    pub src_port: u16,
    /// Destination port (or ICMP echo identifier).
    pub dst_port: u16,
    /// Index of the VPC attachment the packet arrived on.
    pub vpc: u16,
    /// IP protocol number ([`PROTO_TCP`], [`PROTO_UDP`], [`PROTO_ICMP`]).
    pub proto: u8,
}

/// Added to the first word so an all-zero key does not hit `mix64`'s fixed point at 0.
const KEY_HASH_K: u64 = 0x9e37_79b9_7f4a_7c15;

impl FlowKey {
    /// The key's 120 bits packed into two words.
    #[inline(always)]
    fn words(&self) -> (u64, u64) {
        let a = (u64::from(self.src_ip) << 32) | u64::from(self.dst_ip);
        let b = (u64::from(self.src_port) << 48)
            | (u64::from(self.dst_port) << 32)
            | (u64::from(self.vpc) << 16)
            | u64::from(self.proto);
        (a, b)
    }

    /// An unkeyed, deterministic hash of the key ([`hash_with_seed`](Self::hash_with_seed)
    /// with seed 0). The pipeline picks targets with the daemon's per-start seed instead,
    /// so a client that knows this function still cannot aim at one target.
    ///
    /// Every bit of the result depends on every bit of the key (two rounds of the
    /// splitmix64 finaliser, [`mix64`]). Measured: ~2.4 ns (~6 cycles at 2.6 GHz),
    /// `cargo bench -p appliance --bench flow`.
    #[inline]
    pub fn hash(&self) -> u64 {
        self.hash_with_seed(0)
    }

    /// The hash under a secret `seed`. Maglev picks with one seed per start shared by all
    /// workers, so that a client who knows [`FlowKey::hash`] cannot choose source ports
    /// that all reach one target. (The flow table indexes with [`FlowKey::index_hash`].)
    #[inline(always)]
    pub fn hash_with_seed(&self, seed: u64) -> u64 {
        let (a, b) = self.words();
        // Mixing `a` under the seed first means the value `b` is xored into is unknown to
        // anyone without the seed, so varying `b` (ports) cannot aim at a bucket.
        mix64(mix64(a ^ seed ^ KEY_HASH_K) ^ b)
    }

    /// The flow table's index hash under its secret keys: bits 32..63 of the vector hash
    /// of the key's four 32-bit words (`vhash`: strongly universal, so a consumer who
    /// does not know the keys cannot choose source ports that crowd one chain), in the low
    /// half, where the table's mask takes the bucket from. Four independent multiplies:
    /// the chain head's load waits for one of them, not for the two chained rounds of
    /// [`hash_with_seed`](Self::hash_with_seed).
    #[inline(always)]
    pub fn index_hash(&self, keys: &VectorHash) -> u64 {
        let x = [
            self.src_ip,
            self.dst_ip,
            (u32::from(self.src_port) << 16) | u32::from(self.dst_port),
            (u32::from(self.vpc) << 8) | u32::from(self.proto),
        ];
        keys.hash(x) >> 32
    }
}

/// What flow tracking reads from a TCP segment: its flags, acknowledgement number and
/// window field (unscaled).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpSeen {
    pub flags: TcpFlags,
    pub ack: u32,
    pub window: u16,
}

/// A window scale nibble of [`Flow::wscale`] meaning "no option seen".
const NO_WSCALE: u8 = 0xf;

/// Index of a flow in its [`FlowTable`] (the slot number). Valid until the flow is
/// removed; after that [`FlowTable::get`] returns `None` until a later insert reuses the
/// slot, so do not keep ids across inserts.
pub type FlowId = u32;

/// One translated connection.
///
/// Times are milliseconds on the worker's monotonic clock (any epoch, e.g. since start);
/// idle expiry compares `last_seen_ms` with the `now_ms` given to the table.
///
/// 104 bytes, laid out (`repr(C)`) for the flow table's cache lines: the keys first,
/// where lookups look, then everything a packet of the flow reads or updates (the
/// hot part: time, counters, TCP state and windows, 72 bytes from the start), then the
/// acknowledgement numbers (TCP only), then what only the flow's creation, end and
/// reports read (ids, the queue link, the creation time). With the table's 8 bytes of
/// links before it the hot part is 80 bytes, which two cache lines always hold at the
/// slot's 16-byte alignment; see the table's module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Flow {
    /// Consumer-side key. Do not change it through [`FlowTable::get_mut`]: the table
    /// indexes the flow by it (a changed key makes the flow unreachable by lookups and
    /// turns its removal into a full scan).
    pub fwd: FlowKey,
    /// Provider-side key; same caution as `fwd`.
    pub rev: FlowKey,
    /// Last packet in either direction, ms.
    pub last_seen_ms: u64,
    /// Packets consumer → provider (wrapping).
    pub packets_fwd: u32,
    /// Packets provider → consumer (wrapping).
    pub packets_rev: u32,
    /// IP bytes consumer → provider.
    pub bytes_fwd: u64,
    /// IP bytes provider → consumer.
    pub bytes_rev: u64,
    /// TCP state; meaningless for other protocols.
    pub tcp: TcpState,
    /// The window scale shifts the SYNs offered (RFC 7323): the consumer's in the low
    /// nibble, the provider's in the high one, 0xF for none.
    pub wscale: u8,
    /// The consumer's last window field (unscaled), at least 1; 0 = none seen yet. With
    /// `ack_fwd`, the consumer's receive window: where a RST towards it must fall.
    pub win_fwd: u16,
    /// The target's last window field, as `win_fwd`.
    pub win_rev: u16,
    /// The service's listener (caller's index).
    pub listener: u16,
    /// The last acknowledgement number the consumer sent (TCP): its next expected sequence
    /// number, which a RST towards the consumer must carry to be accepted (RFC 5961).
    pub ack_fwd: u32,
    /// The last acknowledgement number the provider's target sent (TCP).
    pub ack_rev: u32,
    /// The endpoint service (its stable handle).
    pub service: u32,
    /// The chosen target (its index in the listener when the flow was made).
    pub target: u16,
    /// The listener's idle timeout for this flow (established TCP, UDP), seconds; 0 =
    /// the global one.
    pub idle_s: u16,
    /// The interface endpoint the consumer used (its stable handle).
    pub endpoint: u32,
    /// The table's link in its queue of half-open flows (in what was padding, so the flow
    /// stays 104 bytes). Not part of the flow's value.
    queue: QueueLink,
    /// First packet, ms.
    pub created_ms: u64,
}

impl Flow {
    /// A flow seen first at `now_ms`, with zero ids and counters and TCP state `SynSent`
    /// (the state of a flow created by a connection request).
    pub fn new(fwd: FlowKey, rev: FlowKey, now_ms: u64) -> Flow {
        Flow {
            fwd,
            rev,
            service: 0,
            target: 0,
            idle_s: 0,
            endpoint: 0,
            listener: 0,
            tcp: TcpState::SynSent,
            wscale: NO_WSCALE << 4 | NO_WSCALE,
            win_fwd: 0,
            win_rev: 0,
            queue: QueueLink::NOT_QUEUED,
            last_seen_ms: now_ms,
            created_ms: now_ms,
            packets_fwd: 0,
            packets_rev: 0,
            ack_fwd: 0,
            ack_rev: 0,
            bytes_fwd: 0,
            bytes_rev: 0,
        }
    }

    /// Records one packet of `bytes` in direction `from_consumer` at `now_ms`.
    #[inline]
    pub fn touch(&mut self, now_ms: u64, from_consumer: bool, bytes: u32) {
        self.last_seen_ms = now_ms;
        if from_consumer {
            self.packets_fwd = self.packets_fwd.wrapping_add(1);
            self.bytes_fwd = self.bytes_fwd.wrapping_add(u64::from(bytes));
        } else {
            self.packets_rev = self.packets_rev.wrapping_add(1);
            self.bytes_rev = self.bytes_rev.wrapping_add(u64::from(bytes));
        }
    }

    /// One packet of this flow: [`touch`](Self::touch), and for TCP the state machine
    /// and the last acknowledgement and window of that side.
    ///
    /// True when the flow entered or left half-open ([`is_half_open`](Self::is_half_open)):
    /// the worker's per-consumer gauges follow it. Established flows pay one compare.
    #[inline]
    pub fn record(
        &mut self,
        now_ms: u64,
        from_consumer: bool,
        bytes: u32,
        tcp: Option<TcpSeen>,
    ) -> bool {
        self.touch(now_ms, from_consumer, bytes);
        let Some(t) = tcp else {
            return false;
        };
        let before = self.tcp;
        self.tcp = self.tcp.advance(from_consumer, t.flags);
        if t.flags.ack() {
            // A zero window is kept as 1: 0 means "not seen yet".
            let window = t.window.max(1);
            if from_consumer {
                self.ack_fwd = t.ack;
                self.win_fwd = window;
            } else {
                self.ack_rev = t.ack;
                self.win_rev = window;
            }
        }
        self.tcp != before && before.is_half_open() != self.tcp.is_half_open()
    }

    /// A TCP flow whose handshake has not completed (`SynSent`, `SynReceived`): what a SYN
    /// flood fills a table with, and what the table evicts first under pressure.
    #[inline]
    pub fn is_half_open(&self) -> bool {
        self.fwd.proto == PROTO_TCP && self.tcp.is_half_open()
    }

    /// Notes the window scale shift a SYN from this side offered (None: no option).
    #[inline]
    pub fn note_window_scale(&mut self, from_consumer: bool, shift: Option<u8>) {
        let nibble = shift.map_or(NO_WSCALE, |s| s.min(14));
        self.wscale = if from_consumer {
            (self.wscale & 0xf0) | nibble
        } else {
            (self.wscale & 0x0f) | nibble << 4
        };
    }

    /// Whether a RST with sequence number `seq` from the consumer (`from_consumer`) or
    /// the target falls in the receiver's window (RFC 5961 §3): from the receiver's last
    /// acknowledgement to that plus its window, scaled when both SYNs offered scaling
    /// (RFC 7323 §2.2). A receiver that has not acknowledged anything yet (a half-open
    /// flow: the answer to a SYN) accepts any RST, as before tracking existed.
    ///
    /// Liberal where it must guess: the last acknowledgement seen may lag the receiver's
    /// (in-flight data only moves it forward, into the window), and a SYN's unscaled
    /// window is scaled like later ones.
    #[inline]
    pub fn rst_in_window(&self, from_consumer: bool, seq: u32) -> bool {
        let (ack, window) = if from_consumer {
            (self.ack_rev, self.win_rev)
        } else {
            (self.ack_fwd, self.win_fwd)
        };
        if window == 0 {
            return true;
        }
        let (consumer, provider) = (self.wscale & 0x0f, self.wscale >> 4);
        let shift = if consumer == NO_WSCALE || provider == NO_WSCALE {
            0
        } else if from_consumer {
            provider
        } else {
            consumer
        };
        seq.wrapping_sub(ack) <= u32::from(window) << shift
    }

    /// Idle time after which this flow expires: by TCP state for TCP, `udp_ms` for UDP,
    /// `icmp_ms` for ICMP, and `udp_ms` for any other protocol; the listener's idle
    /// timeout (`idle_s`), when it has one, replaces `tcp_established_ms` and `udp_ms`.
    #[inline]
    pub fn timeout_ms(&self, timeouts: &Timeouts) -> u64 {
        let idle = |global: u64| {
            if self.idle_s == 0 {
                global
            } else {
                u64::from(self.idle_s) * 1000
            }
        };
        match self.fwd.proto {
            PROTO_TCP if self.tcp == TcpState::Established => idle(timeouts.tcp_established_ms),
            PROTO_TCP => self.tcp.timeout_ms(timeouts),
            PROTO_ICMP => timeouts.icmp_ms,
            _ => idle(timeouts.udp_ms),
        }
    }

    /// True when the flow has been idle for at least its timeout at `now_ms`. A clock
    /// that went backwards counts as no idle time.
    #[inline]
    pub fn is_expired(&self, now_ms: u64, timeouts: &Timeouts) -> bool {
        now_ms.saturating_sub(self.last_seen_ms) >= self.timeout_ms(timeouts)
    }
}

/// A flow's place in its table's queue of half-open flows: the next slot in the queue (31
/// bits, slot numbers are below 2^30) and whether the place was taken for the flow now in
/// the slot (`CURRENT`) or for an earlier flow of the same slot. Owned by
/// [`FlowTable`]; compares equal to any other, so flows compare by what they say about
/// the connection.
#[derive(Debug, Clone, Copy)]
struct QueueLink(u32);

impl QueueLink {
    /// The place is the flow's own, not a previous flow's of the slot.
    const CURRENT: u32 = 1 << 31;
    const NEXT: u32 = !Self::CURRENT;
    /// Last in the queue.
    const END: u32 = Self::NEXT;
    /// Not in the queue.
    const NOT_QUEUED: QueueLink = QueueLink(Self::NEXT - 1);

    #[inline]
    fn queued(self) -> bool {
        self.0 & Self::NEXT != Self::NOT_QUEUED.0
    }

    #[inline]
    fn current(self) -> bool {
        self.0 & Self::CURRENT != 0
    }

    /// The next slot, or `u32::MAX` at the end (an out-of-range slot number).
    #[inline]
    fn next(self) -> u32 {
        match self.0 & Self::NEXT {
            Self::END => u32::MAX,
            n => n,
        }
    }

    /// Last in the queue, for the flow now in the slot.
    #[inline]
    fn last() -> QueueLink {
        QueueLink(Self::CURRENT | Self::END)
    }

    #[inline]
    fn with_next(self, next: u32) -> QueueLink {
        let next = if next == u32::MAX { Self::END } else { next };
        QueueLink((self.0 & Self::CURRENT) | (next & Self::NEXT))
    }

    #[inline]
    fn not_current(self) -> QueueLink {
        QueueLink(self.0 & Self::NEXT)
    }
}

impl PartialEq for QueueLink {
    fn eq(&self, _: &QueueLink) -> bool {
        true
    }
}

impl Eq for QueueLink {}

/// Idle timeouts, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Half-open TCP (`SynSent`, `SynReceived`).
    pub tcp_syn_ms: u64,
    /// Established TCP.
    pub tcp_established_ms: u64,
    /// TCP with a FIN seen (`FinWait`, `Closing`).
    pub tcp_closing_ms: u64,
    /// Finished TCP (`TimeWait`, `Closed` after RST).
    pub tcp_closed_ms: u64,
    /// UDP (and protocols without their own).
    pub udp_ms: u64,
    /// ICMP echo.
    pub icmp_ms: u64,
}

impl Default for Timeouts {
    /// Values chosen to behave like the cloud service and to err on the side of keeping
    /// legitimate connections:
    ///
    /// - `tcp_established_ms` = 350 s: the cloud load balancers' documented TCP idle
    ///   timeout, which clients already tune keepalives against.
    /// - `tcp_syn_ms` = 20 s: covers a client's SYN retransmissions at 1, 3, 7 and 15 s;
    ///   a later retransmission simply creates a fresh flow. Short because half-open flows
    ///   are what a SYN flood fills the table with.
    /// - `tcp_closing_ms` = 120 s: after one FIN the other side may legitimately keep
    ///   sending for long (half-close, e.g. `ssh host cmd < /dev/null`); Linux conntrack
    ///   uses 120 s for FIN_WAIT too. Refreshed by every packet, so it only bounds idleness.
    /// - `tcp_closed_ms` = 10 s: after both FINs and an ACK, or an RST, the flow only needs
    ///   to pass retransmitted FINs/ACKs and in-flight segments (a few RTOs); conntrack's
    ///   CLOSE is 10 s. A consumer SYN reopens the 5-tuple at once anyway.
    /// - `udp_ms` = 120 s: the cloud's UDP flow idle timeout.
    /// - `icmp_ms` = 30 s: echo sessions are short; `ping` sends every second.
    fn default() -> Timeouts {
        Timeouts {
            tcp_syn_ms: 20_000,
            tcp_established_ms: 350_000,
            tcp_closing_ms: 120_000,
            tcp_closed_ms: 10_000,
            udp_ms: 120_000,
            icmp_ms: 30_000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn key(i: u32) -> FlowKey {
        FlowKey {
            vpc: 1,
            proto: PROTO_TCP,
            src_ip: 0x0a00_0000 | (i >> 16),
            dst_ip: 0x0a01_0005,
            src_port: u16::try_from(i & 0xffff).unwrap(),
            dst_port: 443,
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(std::mem::size_of::<FlowKey>(), 16);
        assert_eq!(std::mem::size_of::<Flow>(), 104);
    }

    #[test]
    fn hash_depends_on_every_field() {
        let k = key(7);
        let variants = [
            FlowKey { vpc: 2, ..k },
            FlowKey {
                proto: PROTO_UDP,
                ..k
            },
            FlowKey {
                src_ip: k.src_ip ^ 1,
                ..k
            },
            FlowKey {
                dst_ip: k.dst_ip ^ 1,
                ..k
            },
            FlowKey {
                src_port: k.src_port ^ 1,
                ..k
            },
            FlowKey {
                dst_port: k.dst_port ^ 1,
                ..k
            },
        ];
        for v in variants {
            assert_ne!(v.hash(), k.hash(), "{v:?}");
        }
        assert_ne!(FlowKey::default().hash(), 0);
        assert_eq!(k.hash(), key(7).hash());
        assert_ne!(k.hash_with_seed(1), k.hash_with_seed(2));
    }

    #[test]
    fn hash_low_bits_are_uniform() {
        // 2^16 sequential source ports into 1024 buckets (64 expected in each): the
        // chi-squared statistic of a uniform hash is 1023 +- 45 (df = 1023).
        let mut buckets = [0u32; 1024];
        for i in 0..65536 {
            buckets[usize::try_from(key(i).hash() & 1023).unwrap()] += 1;
        }
        let chi2: f64 = buckets
            .iter()
            .map(|&n| (f64::from(n) - 64.0).powi(2) / 64.0)
            .sum();
        assert!(chi2 < 1023.0 + 5.0 * 45.0, "chi2 {chi2}");
        let (min, max) = (buckets.iter().min().unwrap(), buckets.iter().max().unwrap());
        assert!(*min > 25 && *max < 110, "min {min} max {max}");
        // And no full 64-bit collisions among 1M keys.
        let set: HashSet<u64> = (0..1 << 20).map(|i| key(i).hash()).collect();
        assert_eq!(set.len(), 1 << 20);
    }

    #[test]
    fn avalanche() {
        // Flipping any input bit flips each output bit about half the time.
        let mut flips = [0u32; 64];
        let n = 2000;
        for i in 0..n {
            let k = key(i * 7919);
            let h = k.hash();
            let k2 = FlowKey {
                src_port: k.src_port ^ (1 << (i % 16)),
                ..k
            };
            let d = h ^ k2.hash();
            for (b, f) in flips.iter_mut().enumerate() {
                *f += u32::from(d >> b & 1 == 1);
            }
        }
        for (b, &f) in flips.iter().enumerate() {
            assert!((800..1200).contains(&f), "bit {b}: {f}/{n}");
        }
    }

    fn seen(flags: TcpFlags, ack: u32, window: u16) -> Option<TcpSeen> {
        Some(TcpSeen { flags, ack, window })
    }

    #[test]
    fn rst_window_follows_acks_windows_and_scaling() {
        let mut f = Flow::new(key(1), key(2), 0);
        // Half-open: nobody acknowledged anything yet, so any RST is taken.
        assert!(f.rst_in_window(true, 12345) && f.rst_in_window(false, 999));
        f.note_window_scale(true, Some(7));
        f.record(1, true, 60, seen(TcpFlags::SYN, 0, 64240));
        // The target's SYN-ACK: it expects 1001 next, window 1000, scale 2.
        f.note_window_scale(false, Some(2));
        f.record(2, false, 60, seen(TcpFlags::SYN_ACK, 1001, 1000));
        // Towards the target: 1001 ..= 1001 + 1000 << 2.
        assert!(f.rst_in_window(true, 1001));
        assert!(f.rst_in_window(true, 1001 + 4000));
        assert!(!f.rst_in_window(true, 1001 + 4001));
        assert!(!f.rst_in_window(true, 1000), "just before the window");
        assert!(!f.rst_in_window(true, 1001 ^ 0x8000_0000));
        // Towards the consumer: nothing acknowledged by it yet.
        assert!(f.rst_in_window(false, 7));
        f.record(3, true, 40, seen(TcpFlags::ACK, 5001, 500));
        assert!(f.rst_in_window(false, 5001 + (500 << 7)));
        assert!(!f.rst_in_window(false, 5001 + (500 << 7) + 1));
        // Across the sequence wrap.
        f.record(4, true, 40, seen(TcpFlags::ACK, u32::MAX - 10, 500));
        assert!(f.rst_in_window(false, 5));
        assert!(!f.rst_in_window(false, u32::MAX - 11));
        // A zero window: only the next expected sequence number (and one scaled unit).
        f.record(5, true, 40, seen(TcpFlags::ACK, 100, 0));
        assert!(f.rst_in_window(false, 100));
        assert!(!f.rst_in_window(false, 100 + (1 << 7) + 1));
        // Scaling needs both sides' offers: without the target's, windows are unscaled.
        f.note_window_scale(false, None);
        f.record(6, true, 40, seen(TcpFlags::ACK, 100, 500));
        assert!(f.rst_in_window(false, 600));
        assert!(!f.rst_in_window(false, 601));
        // Segments without ACK leave what was recorded.
        f.record(7, true, 40, seen(TcpFlags::RST, 0, 0));
        assert_eq!((f.ack_fwd, f.win_fwd), (100, 500));
    }

    /// `record` says when a flow enters or leaves half-open, and only then: the
    /// per-consumer gauges move on exactly those packets.
    #[test]
    fn record_reports_half_open_changes() {
        let mut f = Flow::new(key(1), key(2), 0);
        assert!(f.is_half_open());
        let ack = seen(TcpFlags::ACK, 1, 1000);
        assert!(
            !f.record(1, true, 40, seen(TcpFlags::SYN, 0, 0)),
            "SYN again"
        );
        assert!(
            !f.record(1, false, 40, seen(TcpFlags::SYN_ACK, 1, 1000)),
            "SynReceived"
        );
        assert!(f.is_half_open());
        assert!(f.record(2, true, 40, ack), "handshake done");
        assert!(!f.is_half_open());
        assert!(!f.record(3, true, 40, ack), "established stays");
        assert!(!f.record(3, true, 40, seen(TcpFlags::FIN_ACK, 1, 1000)));
        // A reset half-open flow leaves half-open too.
        let mut g = Flow::new(key(3), key(4), 0);
        assert!(g.record(1, false, 40, seen(TcpFlags::RST, 0, 0)));
        // UDP flows are never half-open, whatever their (unused) TCP state says.
        let mut u = Flow::new(key(5), key(6), 0);
        u.fwd.proto = PROTO_UDP;
        assert!(!u.is_half_open());
        assert!(!u.record(1, true, 40, None));
    }

    #[test]
    fn touch_counts_and_timeouts_by_protocol() {
        let t = Timeouts::default();
        let mut f = Flow::new(key(1), key(2), 1000);
        f.touch(1500, true, 60);
        f.touch(1600, false, 1500);
        f.touch(1700, true, 40);
        assert_eq!((f.packets_fwd, f.bytes_fwd), (2, 100));
        assert_eq!((f.packets_rev, f.bytes_rev), (1, 1500));
        assert_eq!((f.created_ms, f.last_seen_ms), (1000, 1700));

        assert_eq!(f.timeout_ms(&t), t.tcp_syn_ms);
        f.tcp = TcpState::Established;
        assert_eq!(f.timeout_ms(&t), 350_000);
        assert!(!f.is_expired(1700 + 349_999, &t));
        assert!(f.is_expired(1700 + 350_000, &t));
        assert!(!f.is_expired(0, &t), "clock went backwards");
        f.fwd.proto = PROTO_UDP;
        assert_eq!(f.timeout_ms(&t), t.udp_ms);
        f.fwd.proto = PROTO_ICMP;
        assert_eq!(f.timeout_ms(&t), t.icmp_ms);
        f.fwd.proto = 47; // GRE: treated like UDP
        assert_eq!(f.timeout_ms(&t), t.udp_ms);
    }
}
