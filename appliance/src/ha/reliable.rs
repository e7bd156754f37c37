//! Sequence numbers, acknowledgements and resends over the sync link: conntrackd's FTFW
//! idea, cut to what a pair needs.
//!
//! Each node runs a [`Sender`] for its own flows and a [`Receiver`] for the peer's. Every
//! `Flows` datagram gets the next sequence number of the sender's stream; the receiver
//! applies them strictly in order (it buffers nothing out of order), acknowledges the
//! highest one applied (in its heartbeats and in `Ack`s), and on a gap sends an `Ack` with
//! a NACK naming the seq it expected. The sender keeps what is unacknowledged, resends
//! from the NACKed seq on, and resends on its own what stays unacknowledged longer than
//! the retransmission timeout (a lost tail, or a lost NACK).
//!
//! Pure: no sockets, no threads; time is `now_ms`. The sync thread owns one of each and
//! does the I/O.
//!
//! # Where a stream starts
//!
//! A stream is one sender boot talking to one receiver boot.
//! - A sender numbers from [`FIRST_SEQ`] at its start and never reuses a seq in its boot.
//! - A receiver that sees a sender boot for the first time (its own start, or the sender
//!   restarted) expects [`FIRST_SEQ`]. Taking the first seq it happens to see instead
//!   would silently lose a new boot's first datagram if that one were lost or overtaken;
//!   expecting 1 turns the loss into a gap and a NACK like any other.
//! - A sender that sees a *new receiver* boot (the peer restarted) calls
//!   [`Sender::reset`]: it forgets what it held for the dead process and tells the new one
//!   where its stream stands with a `Resync { seq }` datagram ("the records before `seq`
//!   are not coming: expect `seq`"). If that datagram is lost, the receiver's first gap
//!   NACKs a seq the sender no longer has, and [`Sender::on_nack`] asks for the `Resync`
//!   again.
//! - The same `Resync` covers an overflow of the sender's queue: records were dropped
//!   unacknowledged, the receiver skips the hole and counts itself out of sync.
//!
//! # In sync
//!
//! [`Receiver::in_sync`] says whether the receiver holds a complete copy of the sender's
//! flows: after a bulk copy (the sender sends its whole table after a `BulkRequest`, then
//! `BulkDone { seq }` naming the copy's last seq, and the receiver is in sync once it has
//! applied that seq), or when the sender restarted (a new process has no flows but the
//! ones its new stream carries). A fresh receiver and a `Resync` make it out of sync.
//!
//! # What the sync thread does
//!
//! On each authenticated datagram from the peer's index, first its boot: keep a
//! [`PeerBoot`]; drop datagrams of a [`BootSeen::Retired`] boot; on
//! [`BootSeen::Restarted`] call [`Sender::reset`] and send `Resync` with what it returns
//! (not on [`BootSeen::First`]: the peer already follows this boot's stream from 1). Then:
//! - `Heartbeat { acked, .. }` → [`Sender::on_ack`];
//! - `Flows { seq, .. }` → [`Receiver::on_flows`]: apply on [`Verdict::Apply`], send
//!   `Ack { acked, nack: Some(expected) }` on [`Verdict::Gap`];
//! - `Ack { acked, nack }` → [`Sender::on_ack`], then [`Sender::on_nack`] if a NACK:
//!   send its `Resync` first, then its datagrams;
//! - `Resync` → [`Receiver::on_resync`]; `BulkDone` → [`Receiver::on_bulk_done`];
//! - `BulkRequest` → unless a copy is under way, push the whole table (`Bulk` records)
//!   through the [`Sender`], then send `BulkDone { seq: sender.last_seq() }`, repeated
//!   with each heartbeat until the peer's heartbeat says `in_sync`.
//!
//! On its timer: send what [`Sender::due`] returns; if [`Sender::take_overflow`], send
//! `Resync { seq: sender.resume_seq() }`; send an `Ack` when [`Receiver::acked`] moved;
//! send a `BulkRequest` every few seconds while not [`Receiver::in_sync`]. The request is
//! the one thing that starts a copy, so one loss never starts two. A copy under way when
//! the sender overflows or resets is abandoned without its `BulkDone`: its first records
//! are gone, and the `BulkDone` would vouch for them (the receiver only refuses a
//! `BulkDone` below its last `Resync`, which an abandoned copy's would not be). The
//! peer's next request starts a new copy.

use std::collections::VecDeque;

use super::record::FlowRecord;

/// The first seq of every sender boot.
pub const FIRST_SEQ: u64 = 1;

/// At most this many datagrams from one [`Sender::due`] call (~90 KB), so a long queue
/// is resent in bursts the socket buffer takes, not all at once.
pub const RESEND_BURST: usize = 64;

/// A datagram's worth of records with its seq.
pub type Datagram = (u64, Vec<FlowRecord>);

/// How many boots a [`PeerBoot`] remembers the peer has left behind.
const RETIRED_BOOTS: usize = 8;

/// The peer's boots as seen in its datagrams' headers: the current one, and the last few
/// it left behind, whose datagrams (late, or replayed) must not be taken for a restart.
#[derive(Debug, Clone, Default)]
pub struct PeerBoot {
    current: Option<u64>,
    retired: [Option<u64>; RETIRED_BOOTS],
    next_slot: usize,
}

/// What a datagram's boot says about the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootSeen {
    /// The first boot heard since this node started.
    First,
    /// The boot heard last.
    Current,
    /// A boot not heard before: the peer restarted.
    Restarted,
    /// A boot the peer left behind: drop the datagram.
    Retired,
}

impl PeerBoot {
    pub fn new() -> PeerBoot {
        PeerBoot::default()
    }

    pub fn observe(&mut self, boot: u64) -> BootSeen {
        match self.current {
            None => {
                self.current = Some(boot);
                BootSeen::First
            }
            Some(c) if c == boot => BootSeen::Current,
            Some(_) if self.retired.contains(&Some(boot)) => BootSeen::Retired,
            Some(old) => {
                if let Some(slot) = self.retired.get_mut(self.next_slot) {
                    *slot = Some(old);
                }
                self.next_slot = (self.next_slot + 1) % RETIRED_BOOTS;
                self.current = Some(boot);
                BootSeen::Restarted
            }
        }
    }

    pub fn current(&self) -> Option<u64> {
        self.current
    }
}

/// A datagram sent and not yet acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub seq: u64,
    pub records: Vec<FlowRecord>,
    /// When it was last sent.
    pub sent_ms: u64,
    /// How often it was sent again.
    pub resends: u32,
}

/// What to send after a NACK.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resend {
    /// `Some(seq)`: the NACKed seq is gone (dropped on overflow or reset); send
    /// `Resync { seq }` before the datagrams.
    pub resync: Option<u64>,
    /// Everything held from the NACKed seq on, with original seqs, in order.
    pub datagrams: Vec<Datagram>,
}

/// The sending side of one node's stream.
#[derive(Debug, Clone)]
pub struct Sender {
    next_seq: u64,
    unacked: VecDeque<Pending>,
    /// In datagrams.
    capacity: usize,
    rto_ms: u64,
    /// The highest seq dropped without an acknowledgement (0: none): a NACK at or below it
    /// cannot be answered with records, only with a `Resync`.
    lost_through: u64,
    overflowed: bool,
}

impl Sender {
    /// A resend waits `rto_ms << min(resends, MAX_BACKOFF_SHIFT)`, so a dead peer costs
    /// a trickle, not a stream.
    const MAX_BACKOFF_SHIFT: u32 = 4;

    /// `capacity` datagrams (at least 1) wait for an acknowledgement, each resent after
    /// `rto_ms` (at least 1) without one.
    pub fn new(capacity: usize, rto_ms: u64) -> Sender {
        let capacity = capacity.max(1);
        Sender {
            next_seq: FIRST_SEQ,
            unacked: VecDeque::with_capacity(capacity.min(4096)),
            capacity,
            rto_ms: rto_ms.max(1),
            lost_through: 0,
            overflowed: false,
        }
    }

    /// Gives `records` (one datagram's worth: `wire::FlowsBuilder` makes them) the next
    /// seq and keeps them until acknowledged; the caller sends them now. If the queue is
    /// full the oldest is dropped and [`overflowed`](Self::overflowed) becomes true.
    pub fn push(&mut self, records: Vec<FlowRecord>, now_ms: u64) -> u64 {
        if self.unacked.len() >= self.capacity {
            if let Some(dropped) = self.unacked.pop_front() {
                self.lost_through = self.lost_through.max(dropped.seq);
                self.overflowed = true;
            }
        }
        let seq = self.next_seq;
        self.next_seq = self.next_seq.saturating_add(1);
        self.unacked.push_back(Pending {
            seq,
            records,
            sent_ms: now_ms,
            resends: 0,
        });
        seq
    }

    /// The receiver has applied everything up to `acked`: forget it.
    pub fn on_ack(&mut self, acked: u64) {
        while self.unacked.front().is_some_and(|p| p.seq <= acked) {
            self.unacked.pop_front();
        }
    }

    /// The receiver expected `from` and saw a later seq: it has everything before `from`;
    /// resend everything held from `from` on (go-back-N: it kept nothing after the gap).
    pub fn on_nack(&mut self, from: u64, now_ms: u64) -> Resend {
        self.on_ack(from.saturating_sub(1));
        let resync = (from <= self.lost_through).then(|| self.resume_seq());
        let datagrams = self
            .unacked
            .iter_mut()
            .filter(|p| p.seq >= from)
            .map(|p| resent(p, now_ms))
            .collect();
        Resend { resync, datagrams }
    }

    /// What has waited longer than its timeout since it was last sent, oldest first, at
    /// most [`RESEND_BURST`]; each is marked sent again now.
    pub fn due(&mut self, now_ms: u64) -> Vec<Datagram> {
        let rto = self.rto_ms;
        self.unacked
            .iter_mut()
            .filter(|p| {
                let timeout = rto.saturating_mul(1 << p.resends.min(Self::MAX_BACKOFF_SHIFT));
                now_ms.saturating_sub(p.sent_ms) >= timeout
            })
            .take(RESEND_BURST)
            .map(|p| resent(p, now_ms))
            .collect()
    }

    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// Whether the queue overflowed since the last call: if so, send
    /// `Resync { seq: self.resume_seq() }` (the peer then asks for a bulk copy).
    pub fn take_overflow(&mut self) -> bool {
        core::mem::take(&mut self.overflowed)
    }

    /// The peer restarted: what was held was for the dead process. Forgets it and returns
    /// the seq to announce in `Resync` (the stream goes on; seqs are never reused in a
    /// boot, so nothing of the old stream can pass for the new).
    pub fn reset(&mut self) -> u64 {
        self.lost_through = self.next_seq.saturating_sub(1);
        self.unacked.clear();
        self.overflowed = false;
        self.next_seq
    }

    /// The lowest seq the receiver can still get: the oldest held, or the next.
    pub fn resume_seq(&self) -> u64 {
        self.unacked.front().map_or(self.next_seq, |p| p.seq)
    }

    /// The seq the next [`push`](Self::push) gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The seq of the last push (0 before any), for `BulkDone`.
    pub fn last_seq(&self) -> u64 {
        self.next_seq.saturating_sub(1)
    }

    /// Datagrams awaiting an acknowledgement.
    pub fn in_flight(&self) -> usize {
        self.unacked.len()
    }
}

fn resent(p: &mut Pending, now_ms: u64) -> Datagram {
    p.sent_ms = now_ms;
    p.resends = p.resends.saturating_add(1);
    (p.seq, p.records.clone())
}

/// What to do with a received `Flows` datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The next in order: apply its records.
    Apply,
    /// Already applied (a resend, or a copy): ignore.
    Duplicate,
    /// Past a seq not yet received: drop it and send a NACK for `expected`.
    Gap { expected: u64 },
    /// Past the same gap, in the same sending pass as a datagram already NACKed: drop it,
    /// no new NACK (one per pass, not one per datagram).
    Ahead,
    /// Of a boot the sender has left behind: ignore.
    Stale,
}

/// The receiving side of the peer's stream.
#[derive(Debug, Clone)]
pub struct Receiver {
    peer: PeerBoot,
    expected: u64,
    /// The highest seq dropped past the current gap since the last NACK; a seq at or below
    /// it means the sender started a new pass (its resends), worth a new NACK.
    nack_mark: Option<u64>,
    /// No `BulkDone` below it counts (the last `Resync`'s seq).
    floor: u64,
    /// In sync once [`acked`](Self::acked) reaches it.
    complete_at: Option<u64>,
}

impl Default for Receiver {
    fn default() -> Receiver {
        Receiver::new()
    }
}

impl Receiver {
    /// Expects [`FIRST_SEQ`] of whatever boot comes first; out of sync.
    pub fn new() -> Receiver {
        Receiver {
            peer: PeerBoot::new(),
            expected: FIRST_SEQ,
            nack_mark: None,
            floor: FIRST_SEQ,
            complete_at: None,
        }
    }

    /// Follows the sender's boot; false for a retired one.
    fn follow(&mut self, boot: u64) -> bool {
        let seen = self.peer.observe(boot);
        match seen {
            BootSeen::Current => true,
            BootSeen::Retired => false,
            BootSeen::First | BootSeen::Restarted => {
                self.expected = FIRST_SEQ;
                self.nack_mark = None;
                self.floor = FIRST_SEQ;
                // A restarted sender has no flows but those its new stream will carry.
                self.complete_at = (seen == BootSeen::Restarted).then_some(0);
                true
            }
        }
    }

    /// A `Flows` datagram with `seq` from the sender's `boot`.
    pub fn on_flows(&mut self, boot: u64, seq: u64) -> Verdict {
        if !self.follow(boot) {
            return Verdict::Stale;
        }
        if seq < self.expected {
            return Verdict::Duplicate;
        }
        if seq == self.expected {
            self.expected = self.expected.saturating_add(1);
            self.nack_mark = None;
            return Verdict::Apply;
        }
        let new_pass = match self.nack_mark {
            None => true,
            Some(mark) => seq <= mark,
        };
        self.nack_mark = Some(seq);
        if new_pass {
            Verdict::Gap {
                expected: self.expected,
            }
        } else {
            Verdict::Ahead
        }
    }

    /// A `Resync { seq }`: the records before `seq` are not coming. Returns whether it
    /// moved the expectation (a stale one, at or below it, does not); if it did, the
    /// receiver is out of sync until a bulk copy.
    pub fn on_resync(&mut self, boot: u64, seq: u64) -> bool {
        if !self.follow(boot) || seq <= self.expected {
            return false;
        }
        self.expected = seq;
        self.nack_mark = None;
        self.floor = seq;
        self.complete_at = None;
        true
    }

    /// A `BulkDone { seq }`: the sender's bulk copy ends with `seq`. One that ends below
    /// the last `Resync` is from a copy that overflowed, and does not count.
    pub fn on_bulk_done(&mut self, boot: u64, seq: u64) {
        if self.follow(boot) && seq >= self.floor {
            self.complete_at = Some(seq);
        }
    }

    /// The highest seq applied, every one before it applied too (0: none).
    pub fn acked(&self) -> u64 {
        self.expected.saturating_sub(1)
    }

    /// The seq applied next.
    pub fn expected(&self) -> u64 {
        self.expected
    }

    /// Whether this node holds a complete copy of the sender's flows.
    pub fn in_sync(&self) -> bool {
        self.complete_at.is_some_and(|s| self.acked() >= s)
    }

    pub fn peer_boot(&self) -> Option<u64> {
        self.peer.current()
    }
}

/// A record that differs with `n` in every field that can, for tests here and in
/// `wire`.
#[cfg(test)]
pub(crate) fn sample_record(n: u32) -> FlowRecord {
    use super::record::RecordKind;
    use crate::tables::flow::FlowKey;
    let kinds = [
        RecordKind::Create,
        RecordKind::Update,
        RecordKind::End,
        RecordKind::Bulk,
    ];
    let [b0, b1, b2, b3] = n.to_be_bytes();
    let key = |base: u32| FlowKey {
        src_ip: base ^ n,
        dst_ip: base.rotate_left(8) ^ n,
        src_port: u16::from_be_bytes([b2, b3]),
        dst_port: u16::from_be_bytes([b0, b1]) ^ 80,
        vpc: u16::from(b3),
        proto: [6, 17, 1][usize::from(b3) % 3],
    };
    FlowRecord {
        kind: kinds[usize::from(b3) % kinds.len()],
        worker: b2,
        tcp: b1,
        wscale: b0,
        fwd: key(0x0a01_0000),
        rev: key(0x0a02_0000),
        ack_fwd: n.wrapping_mul(3),
        ack_rev: n.wrapping_mul(5),
        win_fwd: u16::from_be_bytes([b3, b2]),
        win_rev: u16::from_be_bytes([b1, b3]),
        age_ms: n.rotate_left(16),
        idle_ms: n / 7,
        side6: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RTO: u64 = 50;
    const BOOT_A: u64 = 0xa;
    const BOOT_B: u64 = 0xb;

    fn batch(seq_hint: u32) -> Vec<FlowRecord> {
        vec![sample_record(seq_hint), sample_record(seq_hint + 1000)]
    }

    /// A sender of `capacity` that pushed `n` batches at time 0 (seqs 1..=n).
    fn pushed(capacity: usize, n: u32) -> Sender {
        let mut s = Sender::new(capacity, RTO);
        for i in 0..n {
            s.push(batch(i), 0);
        }
        s
    }

    fn seqs(d: &[Datagram]) -> Vec<u64> {
        d.iter().map(|(s, _)| *s).collect()
    }

    #[test]
    fn peer_boots_first_current_restarted_retired() {
        let mut p = PeerBoot::new();
        assert_eq!(p.observe(1), BootSeen::First);
        assert_eq!(p.observe(1), BootSeen::Current);
        assert_eq!(p.observe(2), BootSeen::Restarted);
        assert_eq!(p.observe(1), BootSeen::Retired);
        assert_eq!(p.observe(2), BootSeen::Current);
        // It remembers RETIRED_BOOTS of them, the oldest forgotten first.
        for b in 3..3 + RETIRED_BOOTS as u64 {
            assert_eq!(p.observe(b), BootSeen::Restarted);
        }
        assert_eq!(p.current(), Some(2 + RETIRED_BOOTS as u64));
        assert_eq!(p.observe(1), BootSeen::Restarted);
        assert_eq!(p.observe(3), BootSeen::Retired);
    }

    #[test]
    fn in_order_datagrams_apply_and_acks_free_the_queue() {
        let mut s = Sender::new(16, RTO);
        let mut r = Receiver::new();
        for i in 0..5 {
            let seq = s.push(batch(i), 0);
            assert_eq!(seq, FIRST_SEQ + u64::from(i));
            assert_eq!(r.on_flows(BOOT_A, seq), Verdict::Apply);
        }
        assert_eq!(r.acked(), 5);
        assert_eq!(s.in_flight(), 5);
        s.on_ack(3);
        assert_eq!(s.in_flight(), 2);
        assert_eq!(s.resume_seq(), 4);
        s.on_ack(r.acked());
        assert_eq!(s.in_flight(), 0);
        assert_eq!(s.due(1_000), vec![]);
    }

    #[test]
    fn one_lost_datagram_gap_nack_resend_in_order_again() {
        let mut s = pushed(16, 5);
        let mut r = Receiver::new();
        // seq 2 is lost.
        assert_eq!(r.on_flows(BOOT_A, 1), Verdict::Apply);
        assert_eq!(r.on_flows(BOOT_A, 3), Verdict::Gap { expected: 2 });
        // Further datagrams of the same pass: no NACK storm.
        assert_eq!(r.on_flows(BOOT_A, 4), Verdict::Ahead);
        assert_eq!(r.on_flows(BOOT_A, 5), Verdict::Ahead);
        let resend = s.on_nack(2, 10);
        assert_eq!(resend.resync, None);
        assert_eq!(seqs(&resend.datagrams), vec![2, 3, 4, 5]);
        assert_eq!(resend.datagrams[0].1, batch(1));
        // seq 1 was implied acknowledged by the NACK.
        assert_eq!(s.in_flight(), 4);
        for (seq, _) in &resend.datagrams {
            assert_eq!(r.on_flows(BOOT_A, *seq), Verdict::Apply);
        }
        assert_eq!(r.acked(), 5);
        // Resent at 10: not due again before 10 + 2 × RTO (backoff).
        assert_eq!(s.due(10 + RTO), vec![]);
    }

    #[test]
    fn a_resend_pass_that_loses_the_gap_again_is_nacked_again() {
        let mut s = pushed(16, 4);
        let mut r = Receiver::new();
        assert_eq!(r.on_flows(BOOT_A, 2), Verdict::Gap { expected: 1 });
        assert_eq!(r.on_flows(BOOT_A, 3), Verdict::Ahead);
        // The resend of 1 is lost too; 2 comes again: a new pass, a new NACK.
        let resend = s.on_nack(1, 5);
        assert_eq!(seqs(&resend.datagrams), vec![1, 2, 3, 4]);
        assert_eq!(r.on_flows(BOOT_A, 2), Verdict::Gap { expected: 1 });
        assert_eq!(r.on_flows(BOOT_A, 3), Verdict::Ahead);
    }

    #[test]
    fn duplicates_are_ignored() {
        let mut r = Receiver::new();
        assert_eq!(r.on_flows(BOOT_A, 1), Verdict::Apply);
        assert_eq!(r.on_flows(BOOT_A, 2), Verdict::Apply);
        assert_eq!(r.on_flows(BOOT_A, 1), Verdict::Duplicate);
        assert_eq!(r.on_flows(BOOT_A, 2), Verdict::Duplicate);
        assert_eq!(r.acked(), 2);
    }

    #[test]
    fn a_lost_tail_is_resent_after_the_rto_with_backoff() {
        let mut s = Sender::new(16, RTO);
        s.push(batch(0), 0);
        s.push(batch(1), 20);
        assert_eq!(s.due(RTO - 1), vec![]);
        assert_eq!(seqs(&s.due(RTO)), vec![1]);
        assert_eq!(seqs(&s.due(RTO + 20)), vec![2]);
        // Second resend after 2 × RTO, then 4 ×, … up to 16 ×.
        assert_eq!(s.due(RTO + 2 * RTO - 1), vec![]);
        assert_eq!(seqs(&s.due(3 * RTO + 20)), vec![1, 2]);
        let mut t = 3 * RTO + 20;
        for _ in 0..10 {
            t += 16 * RTO;
            assert_eq!(seqs(&s.due(t)), vec![1, 2]);
        }
    }

    #[test]
    fn due_resends_in_bursts() {
        let mut s = Sender::new(1_000, RTO);
        for i in 0..200 {
            s.push(batch(i), 0);
        }
        let first = s.due(RTO);
        assert_eq!(first.len(), RESEND_BURST);
        assert_eq!(first[0].0, 1);
        let second = s.due(RTO + 1);
        assert_eq!(second[0].0, 1 + RESEND_BURST as u64);
    }

    #[test]
    fn an_overflow_drops_the_oldest_flags_and_answers_their_nack_with_a_resync() {
        let mut s = pushed(3, 3);
        let mut r = Receiver::new();
        assert!(!s.overflowed());
        s.push(batch(3), 0);
        s.push(batch(4), 0);
        assert!(s.overflowed());
        assert_eq!(s.in_flight(), 3);
        assert_eq!(s.resume_seq(), 3);
        assert!(s.take_overflow());
        assert!(!s.take_overflow());
        // The receiver got nothing; its NACK of 1 can only be answered with a Resync.
        assert_eq!(r.on_flows(BOOT_A, 5), Verdict::Gap { expected: 1 });
        let resend = s.on_nack(1, 10);
        assert_eq!(resend.resync, Some(3));
        assert_eq!(seqs(&resend.datagrams), vec![3, 4, 5]);
        assert!(r.on_resync(BOOT_A, 3));
        assert!(!r.in_sync());
        for (seq, _) in &resend.datagrams {
            assert_eq!(r.on_flows(BOOT_A, *seq), Verdict::Apply);
        }
        // A BulkDone from before the Resync does not count; the next copy's does.
        r.on_bulk_done(BOOT_A, 2);
        assert!(!r.in_sync());
        r.on_bulk_done(BOOT_A, 6);
        assert!(!r.in_sync());
        s.push(batch(5), 20);
        assert_eq!(r.on_flows(BOOT_A, 6), Verdict::Apply);
        assert!(r.in_sync());
        // A NACK above the hole needs no Resync.
        assert_eq!(s.on_nack(6, 30).resync, None);
    }

    #[test]
    fn a_stale_resync_is_ignored() {
        let mut r = Receiver::new();
        for seq in 1..=4 {
            r.on_flows(BOOT_A, seq);
        }
        assert!(!r.on_resync(BOOT_A, 3));
        assert!(!r.on_resync(BOOT_A, 5));
        assert_eq!(r.expected(), 5);
    }

    #[test]
    fn a_sender_restart_is_followed() {
        let mut r = Receiver::new();
        for seq in 1..=3 {
            assert_eq!(r.on_flows(BOOT_A, seq), Verdict::Apply);
        }
        assert!(!r.in_sync());
        r.on_bulk_done(BOOT_A, 3);
        assert!(r.in_sync());
        // The sender restarts: its new boot starts at 1, and a new process's whole table
        // is what its stream carries, so the receiver is in sync.
        let boot2 = BOOT_A + 1;
        assert_eq!(r.on_flows(boot2, 2), Verdict::Gap { expected: 1 });
        assert_eq!(r.acked(), 0);
        assert_eq!(r.on_flows(boot2, 1), Verdict::Apply);
        assert_eq!(r.on_flows(boot2, 2), Verdict::Apply);
        assert!(r.in_sync());
        assert_eq!(r.peer_boot(), Some(boot2));
        // A late datagram of the old boot is stale, not a restart.
        assert_eq!(r.on_flows(BOOT_A, 4), Verdict::Stale);
        assert_eq!(r.on_flows(boot2, 3), Verdict::Apply);
    }

    #[test]
    fn a_receiver_restart_is_met_with_reset_and_resync() {
        let mut s = pushed(16, 4);
        s.on_ack(2);
        // The peer restarted (the sync thread saw its new boot): forget, announce 5.
        let resync = s.reset();
        assert_eq!(resync, 5);
        assert_eq!(s.in_flight(), 0);
        let mut r = Receiver::new();
        assert_eq!(s.push(batch(9), 5), 5);
        // The Resync arrives: the new receiver follows from 5, out of sync.
        assert!(r.on_resync(BOOT_A, resync));
        assert_eq!(r.on_flows(BOOT_A, 5), Verdict::Apply);
        assert!(!r.in_sync());
        // Had it been lost, the NACK of 1 would ask for it again.
        let mut r2 = Receiver::new();
        assert_eq!(r2.on_flows(BOOT_A, 5), Verdict::Gap { expected: 1 });
        assert_eq!(s.on_nack(1, 6).resync, Some(5));
    }

    #[test]
    fn a_retired_boot_cannot_move_the_receiver() {
        let mut r = Receiver::new();
        r.on_flows(BOOT_A, 1);
        r.on_flows(BOOT_B, 1);
        assert!(!r.on_resync(BOOT_A, 100));
        r.on_bulk_done(BOOT_A, 100);
        assert_eq!(r.expected(), 2);
        assert!(r.in_sync());
    }

    #[test]
    fn degenerate_arguments_never_panic() {
        let mut s = Sender::new(0, 0);
        s.push(Vec::new(), u64::MAX);
        s.push(Vec::new(), 0);
        assert_eq!(s.in_flight(), 1);
        let _ = s.due(u64::MAX);
        let _ = s.due(0);
        let _ = s.on_nack(0, 0);
        let _ = s.on_nack(u64::MAX, u64::MAX);
        s.on_ack(u64::MAX);
        let mut r = Receiver::new();
        let _ = r.on_flows(0, u64::MAX);
        let _ = r.on_flows(0, 0);
        let _ = r.on_resync(0, u64::MAX);
        let _ = r.on_flows(0, u64::MAX);
        r.on_bulk_done(0, u64::MAX);
        let _ = (r.acked(), r.in_sync());
    }

    mod stateful {
        //! A sender and a receiver over a link that loses, duplicates and reorders, on a
        //! fake clock. Invariants: the receiver applies seqs exactly once each, in order,
        //! and what it applies is what was pushed under that seq; once the link heals,
        //! everything pushed is applied and the sender's queue empties.

        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            Push,
            /// Deliver the datagram at this place in the air (modulo), or lose it.
            Deliver(usize, bool),
            /// Deliver a copy and keep the original in the air.
            Duplicate(usize),
            Tick(u64),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                3 => Just(Op::Push),
                4 => (any::<usize>(), prop::bool::weighted(0.8)).prop_map(|(i, k)| Op::Deliver(i, k)),
                1 => any::<usize>().prop_map(Op::Duplicate),
                2 => (1u64..120).prop_map(Op::Tick),
            ]
        }

        /// What crosses the link, either way.
        #[derive(Debug, Clone)]
        enum InAir {
            Flows(Datagram),
            Ack { acked: u64, nack: Option<u64> },
        }

        struct World {
            s: Sender,
            r: Receiver,
            air: Vec<InAir>,
            now: u64,
            pushed: Vec<Vec<FlowRecord>>,
            applied: Vec<u64>,
        }

        impl World {
            fn deliver(&mut self, m: InAir) {
                match m {
                    InAir::Flows((seq, records)) => match self.r.on_flows(BOOT_A, seq) {
                        Verdict::Apply => {
                            let i = usize::try_from(seq - FIRST_SEQ).unwrap();
                            assert_eq!(records, self.pushed[i], "seq {seq} carries its records");
                            self.applied.push(seq);
                            self.air.push(InAir::Ack {
                                acked: self.r.acked(),
                                nack: None,
                            });
                        }
                        Verdict::Gap { expected } => self.air.push(InAir::Ack {
                            acked: self.r.acked(),
                            nack: Some(expected),
                        }),
                        Verdict::Duplicate | Verdict::Ahead => {}
                        Verdict::Stale => panic!("one boot only"),
                    },
                    InAir::Ack { acked, nack } => {
                        self.s.on_ack(acked);
                        if let Some(from) = nack {
                            let resend = self.s.on_nack(from, self.now);
                            assert_eq!(resend.resync, None, "nothing dropped");
                            self.air
                                .extend(resend.datagrams.into_iter().map(InAir::Flows));
                        }
                    }
                }
            }

            /// Time passes: the receiver's heartbeat carries its acked, the sender resends
            /// what is due.
            fn tick(&mut self, dt: u64) {
                self.now += dt;
                self.air.push(InAir::Ack {
                    acked: self.r.acked(),
                    nack: None,
                });
                let due = self.s.due(self.now);
                self.air.extend(due.into_iter().map(InAir::Flows));
            }
        }

        proptest! {
            #[test]
            fn every_seq_is_applied_once_in_order(ops in prop::collection::vec(op(), 1..300)) {
                let mut w = World {
                    s: Sender::new(100_000, RTO),
                    r: Receiver::new(),
                    air: Vec::new(),
                    now: 0,
                    pushed: Vec::new(),
                    applied: Vec::new(),
                };
                for op in ops {
                    match op {
                        Op::Push => {
                            #[allow(clippy::cast_possible_truncation)]
                            let records = batch(w.pushed.len() as u32);
                            w.pushed.push(records.clone());
                            let seq = w.s.push(records.clone(), w.now);
                            w.air.push(InAir::Flows((seq, records)));
                        }
                        Op::Deliver(i, keep) if !w.air.is_empty() => {
                            let m = w.air.remove(i % w.air.len());
                            if keep {
                                w.deliver(m);
                            }
                        }
                        Op::Duplicate(i) if !w.air.is_empty() => {
                            let m = w.air[i % w.air.len()].clone();
                            w.deliver(m);
                        }
                        Op::Tick(dt) => w.tick(dt),
                        Op::Deliver(..) | Op::Duplicate(_) => {}
                    }
                    let expect: Vec<u64> = (FIRST_SEQ..FIRST_SEQ + w.applied.len() as u64).collect();
                    prop_assert_eq!(&w.applied, &expect);
                }
                // The link heals: deliver everything in order, tick until quiet.
                for _ in 0..10_000 {
                    if w.air.is_empty() {
                        if w.s.in_flight() == 0 {
                            break;
                        }
                        w.tick(RTO);
                    } else {
                        let m = w.air.remove(0);
                        w.deliver(m);
                    }
                }
                prop_assert_eq!(w.applied.len(), w.pushed.len());
                prop_assert_eq!(w.s.in_flight(), 0);
            }
        }
    }
}
