//! The datagrams whose fragments are on their way through one worker: virtual reassembly
//! (VPP's "shallow" reassembly). Nothing is put back together. The first fragment carries
//! the ports, so it finds or creates the flow like any packet, and its datagram's entry
//! here remembers those ports; every other fragment of the datagram, keyed by (attachment,
//! addresses, protocol, identification), gets them from the entry and the same
//! translation.
//!
//! What the entry also keeps is which bytes of the datagram passed, as a few sorted
//! spans, so that the attacks reassembly is known for are refused here and not left to
//! the target: a fragment overlapping one already seen (RFC 5722's rule for IPv6, applied
//! to IPv4 too: teardrop, and rewriting a header the appliance already checked), one
//! reaching past 65,535 bytes or past the end the last fragment set (ping of death), and a
//! datagram in more pieces than [`MAX_SPANS`] holes allow. A refused datagram stays
//! refused until its entry times out: the rest of its fragments are dropped with the same
//! reason, since the target could never rebuild it.
//!
//! A datagram's entry is freed as soon as every byte of it passed; one whose fragments
//! stop coming is reused once [`Datagrams::timeout_ms`] have passed since its first
//! fragment. The table never grows: buckets of [`WAYS`] entries under a hash seeded per
//! start, so no sender can aim its datagrams at one bucket; a bucket whose entries are all
//! live refuses a new datagram (`fragment_table_full`).
//!
//! Generic over the address, for IPv4 (`u32`) now and IPv6 (`u128`, a 32-bit
//! identification) next.

use crate::tables::maglev::mix64;

/// Entries per bucket.
pub const WAYS: usize = 4;

/// Separate runs of bytes a datagram may have passed at once: fragments that arrive in
/// order keep one (each extends it), and each hole an out-of-order arrival leaves opens
/// another. Legitimate datagrams (a few fragments) never need more.
pub const MAX_SPANS: usize = 8;

/// The largest IP datagram payload a fragment may reach into (the total length field's
/// range, less the smallest header): beyond it, the datagram cannot exist.
pub const MAX_DATAGRAM: u32 = 65_535 - 20;

/// Which datagram a fragment belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DatagramKey<A> {
    pub src: A,
    pub dst: A,
    /// IPv4's 16-bit identification (IPv6's fragment header has 32 bits).
    pub id: u32,
    /// The attachment it arrived on.
    pub att: u16,
    pub proto: u8,
}

/// An address the table can hash.
pub trait Address: Copy + Eq + Default {
    /// The address folded into 64 bits for hashing.
    fn fold(self) -> u64;
}

impl Address for u32 {
    #[inline]
    fn fold(self) -> u64 {
        u64::from(self)
    }
}

impl Address for u128 {
    #[inline]
    fn fold(self) -> u64 {
        // Truncations on purpose: both halves are mixed in.
        #[allow(clippy::cast_possible_truncation)]
        let (hi, lo) = ((self >> 64) as u64, self as u64);
        hi.rotate_left(29) ^ lo
    }
}

impl<A: Address> DatagramKey<A> {
    /// The key's hash under `seed`.
    #[inline]
    fn hash(&self, seed: u64) -> u64 {
        let a = mix64(seed ^ self.src.fold());
        let b = mix64(a ^ self.dst.fold().rotate_left(17));
        mix64(b ^ (u64::from(self.id) << 24) ^ (u64::from(self.att) << 8) ^ u64::from(self.proto))
    }
}

/// Where one fragment sits in its datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    /// Offset of its payload in the datagram, in bytes (a multiple of 8).
    pub offset: u16,
    /// Length of its payload (what follows the IP header) in bytes.
    pub len: u16,
    /// More fragments follow (the MF flag): the datagram does not end with this one.
    pub more: bool,
}

/// Why a fragment is refused; each is a drop reason of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// It overlaps bytes of its datagram already seen (or repeats them).
    Overlap,
    /// It reaches past 65,535 bytes, past the end the last fragment set, or sets an end
    /// before bytes already seen.
    TooBig,
    /// Its datagram would need more than [`MAX_SPANS`] separate runs of bytes.
    TooMany,
    /// A fragment other than the last whose length is not a multiple of 8, or one without
    /// any payload: no sender makes those.
    Malformed,
    /// Its bucket holds live datagrams only.
    TableFull,
}

/// The ports of a datagram: (source, destination), as its first fragment carries them.
pub type Ports = (u16, u16);

#[derive(Debug, Clone, Copy, Default)]
struct Entry<A> {
    key: DatagramKey<A>,
    used: bool,
    since_ms: u64,
    ports: Option<Ports>,
    /// The datagram's payload length, once its last fragment (MF clear) was seen.
    end: Option<u32>,
    /// Byte runs seen, sorted, neither overlapping nor touching: `[start, end)`.
    spans: [(u32, u32); MAX_SPANS],
    n_spans: u8,
    refused: Option<Refused>,
}

impl<A> Entry<A> {
    fn spans(&self) -> &[(u32, u32)] {
        &self.spans[..usize::from(self.n_spans).min(MAX_SPANS)]
    }
}

/// One worker's datagrams in flight.
#[derive(Debug)]
pub struct Datagrams<A> {
    entries: Box<[Entry<A>]>,
    /// Buckets - 1 (a power of two).
    mask: usize,
    timeout_ms: u64,
    seed: u64,
}

/// What [`Datagrams::observe`] learned of a fragment's datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Its ports are known (this is the first fragment, or the first came before).
    Ports(Ports),
    /// Its first fragment has not been seen yet.
    WaitingForFirst,
}

impl<A: Address> Datagrams<A> {
    /// A table for about `capacity` datagrams at once (rounded up to whole buckets, a
    /// power of two of them), each kept at most `timeout_ms` after its first fragment.
    pub fn new(capacity: usize, timeout_ms: u64, seed: u64) -> Self {
        let buckets = capacity.div_ceil(WAYS).max(1).next_power_of_two();
        Datagrams {
            entries: vec![Entry::default(); buckets * WAYS].into_boxed_slice(),
            mask: buckets - 1,
            timeout_ms,
            seed,
        }
    }

    /// How long a datagram's entry lives after its first fragment.
    pub fn timeout_ms(&self) -> u64 {
        self.timeout_ms
    }

    /// Datagrams in flight (entries used and not timed out) at `now_ms`.
    pub fn in_flight(&self, now_ms: u64) -> usize {
        self.entries
            .iter()
            .filter(|e| e.used && !self.timed_out(e, now_ms))
            .count()
    }

    #[inline]
    fn timed_out(&self, e: &Entry<A>, now_ms: u64) -> bool {
        now_ms.saturating_sub(e.since_ms) >= self.timeout_ms
    }

    /// Records fragment `piece` of datagram `key` seen at `now_ms`, with `ports` when it
    /// is the first fragment (offset 0, its L4 header read). Returns the datagram's ports
    /// if known; refuses the fragment (and, for overlaps and sizes, its datagram) as the
    /// module docs say. The datagram's entry is freed once all of it passed.
    pub fn observe(
        &mut self,
        key: &DatagramKey<A>,
        piece: Piece,
        ports: Option<Ports>,
        now_ms: u64,
    ) -> Result<Seen, Refused> {
        let start = u32::from(piece.offset);
        let end = start + u32::from(piece.len);
        if piece.len == 0 || (piece.more && !piece.len.is_multiple_of(8)) {
            return Err(Refused::Malformed);
        }
        let i = self.slot(key, now_ms).ok_or(Refused::TableFull)?;
        let Some(e) = self.entries.get_mut(i) else {
            return Err(Refused::TableFull);
        };
        if let Some(r) = e.refused {
            return Err(r);
        }
        let verdict = Self::admit(e, start, end, piece.more);
        if let Err(r) = verdict {
            e.refused = Some(r);
            return Err(r);
        }
        if let Some(p) = ports {
            e.ports = Some(p);
        }
        let seen = match e.ports {
            Some(p) => Seen::Ports(p),
            None => Seen::WaitingForFirst,
        };
        if e.end.is_some_and(|end| e.spans() == [(0, end)]) {
            e.used = false;
        }
        Ok(seen)
    }

    /// Adds `[start, end)` to the entry's spans, after the checks of the module docs.
    fn admit(e: &mut Entry<A>, start: u32, end: u32, more: bool) -> Result<(), Refused> {
        if end > MAX_DATAGRAM || e.end.is_some_and(|last| end > last) {
            return Err(Refused::TooBig);
        }
        if !more {
            // The last fragment: nothing may lie beyond it, and there is only one end.
            let beyond = e.spans().last().is_some_and(|s| s.1 > end);
            if beyond || e.end.is_some_and(|last| last != end) {
                return Err(Refused::TooBig);
            }
        }
        let spans = e.spans();
        if spans.iter().any(|s| s.0 < end && start < s.1) {
            return Err(Refused::Overlap);
        }
        let n = spans.len();
        // Spans never touch, so at most one ends where this piece starts (just before it)
        // and one starts where it ends (just after).
        let left = spans.iter().position(|s| s.1 == start);
        let right = spans.iter().position(|s| s.0 == end);
        match (left, right) {
            (Some(l), Some(r)) => {
                // Fills a hole: the two spans become one.
                e.spans[l].1 = e.spans[r].1;
                e.spans.copy_within(r + 1..n, r);
                e.n_spans -= 1;
            }
            (Some(l), None) => e.spans[l].1 = end,
            (None, Some(r)) => e.spans[r].0 = start,
            (None, None) => {
                if n >= MAX_SPANS {
                    return Err(Refused::TooMany);
                }
                let pos = spans.partition_point(|s| s.0 < start);
                e.spans.copy_within(pos..n, pos + 1);
                e.spans[pos] = (start, end);
                e.n_spans += 1;
            }
        }
        if !more {
            e.end = Some(end);
        }
        Ok(())
    }

    /// The entry of `key`, or a free (or timed-out) one claimed for it in its bucket.
    fn slot(&mut self, key: &DatagramKey<A>, now_ms: u64) -> Option<usize> {
        // The low bits pick the bucket: truncation on purpose.
        #[allow(clippy::cast_possible_truncation)]
        let base = (key.hash(self.seed) as usize & self.mask) * WAYS;
        let mut free = None;
        for i in base..base + WAYS {
            let e = self.entries.get(i)?;
            let live = e.used && !self.timed_out(e, now_ms);
            if live && e.key == *key {
                return Some(i);
            }
            if !live && free.is_none() {
                free = Some(i);
            }
        }
        let i = free?;
        let e = self.entries.get_mut(i)?;
        *e = Entry {
            key: *key,
            used: true,
            since_ms: now_ms,
            ..Entry::default()
        };
        Some(i)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn key(id: u32) -> DatagramKey<u32> {
        DatagramKey {
            src: 0x0a01_000a,
            dst: 0x0a01_0064,
            id,
            att: 0,
            proto: 17,
        }
    }

    fn piece(offset: u16, len: u16, more: bool) -> Piece {
        Piece { offset, len, more }
    }

    const PORTS: Ports = (40000, 9000);

    #[test]
    fn in_order_fragments_get_the_first_ones_ports_and_free_the_entry() {
        let mut d = Datagrams::<u32>::new(64, 1000, 7);
        let k = key(1);
        assert_eq!(
            d.observe(&k, piece(0, 1480, true), Some(PORTS), 0),
            Ok(Seen::Ports(PORTS))
        );
        assert_eq!(
            d.observe(&k, piece(1480, 1480, true), None, 1),
            Ok(Seen::Ports(PORTS))
        );
        assert_eq!(d.in_flight(1), 1);
        assert_eq!(
            d.observe(&k, piece(2960, 1048, false), None, 2),
            Ok(Seen::Ports(PORTS))
        );
        assert_eq!(d.in_flight(2), 0, "complete: freed");
    }

    #[test]
    fn fragments_before_the_first_wait_and_the_first_completes_them() {
        let mut d = Datagrams::<u32>::new(64, 1000, 7);
        let k = key(2);
        assert_eq!(
            d.observe(&k, piece(2960, 1048, false), None, 0),
            Ok(Seen::WaitingForFirst)
        );
        assert_eq!(
            d.observe(&k, piece(1480, 1480, true), None, 0),
            Ok(Seen::WaitingForFirst)
        );
        assert_eq!(
            d.observe(&k, piece(0, 1480, true), Some(PORTS), 0),
            Ok(Seen::Ports(PORTS))
        );
        assert_eq!(d.in_flight(0), 0);
    }

    #[test]
    fn overlaps_and_duplicates_refuse_the_datagram() {
        let mut d = Datagrams::<u32>::new(64, 1000, 7);
        let k = key(3);
        d.observe(&k, piece(0, 1480, true), Some(PORTS), 0).unwrap();
        // Reaches 8 bytes back into the first fragment: a rewrite of the UDP header.
        assert_eq!(
            d.observe(&k, piece(1472, 1480, true), None, 0),
            Err(Refused::Overlap)
        );
        // The datagram stays refused, even for a fragment that would have fit.
        assert_eq!(
            d.observe(&k, piece(1480, 1480, false), None, 0),
            Err(Refused::Overlap)
        );
        let k = key(4);
        d.observe(&k, piece(0, 1480, true), Some(PORTS), 0).unwrap();
        assert_eq!(
            d.observe(&k, piece(0, 1480, true), Some(PORTS), 0),
            Err(Refused::Overlap),
            "a repeated fragment is an overlap"
        );
    }

    #[test]
    fn sizes_past_the_datagram_are_refused() {
        let mut d = Datagrams::<u32>::new(64, 1000, 7);
        // Ping of death: the last fragment ends past 65,535 bytes.
        assert_eq!(
            d.observe(&key(5), piece(65_528, 100, false), None, 0),
            Err(Refused::TooBig)
        );
        // Past the end the last fragment set.
        let k = key(6);
        d.observe(&k, piece(1480, 100, false), None, 0).unwrap();
        assert_eq!(
            d.observe(&k, piece(1584, 8, true), None, 0),
            Err(Refused::TooBig)
        );
        // A second, different end; an end before bytes already seen.
        let k = key(7);
        d.observe(&k, piece(800, 80, true), None, 0).unwrap();
        assert_eq!(
            d.observe(&k, piece(0, 400, false), None, 0),
            Err(Refused::TooBig)
        );
        // Lengths no sender makes.
        assert_eq!(
            d.observe(&key(8), piece(0, 13, true), None, 0),
            Err(Refused::Malformed)
        );
        assert_eq!(
            d.observe(&key(9), piece(8, 0, false), None, 0),
            Err(Refused::Malformed)
        );
    }

    #[test]
    fn too_many_holes_refuse_the_datagram() {
        let mut d = Datagrams::<u32>::new(64, 1000, 7);
        let k = key(10);
        for i in 0..8u16 {
            assert_eq!(MAX_SPANS, 8);
            d.observe(&k, piece(16 * i + 8, 8, true), None, 0).unwrap();
        }
        assert_eq!(
            d.observe(&k, piece(16 * 20, 8, true), None, 0),
            Err(Refused::TooMany)
        );
    }

    #[test]
    fn a_full_bucket_refuses_until_its_datagrams_time_out() {
        // One bucket.
        let mut d = Datagrams::<u32>::new(WAYS, 100, 7);
        for id in 0..4u32 {
            assert_eq!(WAYS, 4);
            d.observe(&key(id), piece(0, 8, true), Some(PORTS), 0)
                .unwrap();
        }
        assert_eq!(
            d.observe(&key(99), piece(0, 8, true), Some(PORTS), 50),
            Err(Refused::TableFull)
        );
        assert_eq!(
            d.observe(&key(99), piece(0, 8, true), Some(PORTS), 100),
            Ok(Seen::Ports(PORTS))
        );
        // A timed-out datagram starts again: its ports are forgotten.
        assert_eq!(
            d.observe(&key(1), piece(8, 8, true), None, 100),
            Ok(Seen::WaitingForFirst)
        );
    }

    proptest! {
        /// Any split of a datagram into 8-byte-aligned fragments, in any order, is
        /// admitted whole and frees its entry; the ports reach every fragment that comes
        /// after the first.
        #[test]
        fn any_order_of_a_clean_split_is_admitted(
            cuts in proptest::collection::btree_set(1u16..500, 0..7),
            tail in 1u16..8,
            order in any::<u64>(),
        ) {
            let mut bounds: Vec<u16> = cuts.into_iter().map(|c| c * 8).collect();
            bounds.insert(0, 0);
            let end = 500 * 8 + tail;
            bounds.push(end);
            let mut pieces: Vec<Piece> = bounds
                .windows(2)
                .map(|w| piece(w[0], w[1] - w[0], w[1] != end))
                .collect();
            let mut x = order;
            for i in (1..pieces.len()).rev() {
                x = mix64(x);
                pieces.swap(i, usize::try_from(x % (i as u64 + 1)).unwrap());
            }
            let mut d = Datagrams::<u32>::new(8, 1000, 1);
            let k = key(11);
            let mut first_seen = false;
            for p in &pieces {
                let ports = (p.offset == 0).then_some(PORTS);
                first_seen |= ports.is_some();
                let seen = d.observe(&k, *p, ports, 0);
                let want = if first_seen { Seen::Ports(PORTS) } else { Seen::WaitingForFirst };
                prop_assert_eq!(seen, Ok(want));
            }
            prop_assert_eq!(d.in_flight(0), 0);
        }
    }
}
