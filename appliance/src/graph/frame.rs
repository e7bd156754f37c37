//! The one thing the packet path needs from a buffer: its bytes, and room to grow or shrink
//! at either end. Mbufs implement it for the real data path, [`VecFrame`] for tests and
//! benchmarks, so the whole pipeline is exercised without DPDK.

use dpdk_bindings::Mbuf;

/// A packet buffer the pipeline may edit in place.
pub trait Frame {
    /// The packet bytes.
    fn bytes(&self) -> &[u8];
    /// The packet bytes, writable.
    fn bytes_mut(&mut self) -> &mut [u8];
    /// Adds `n` bytes in front (returns false when there is no headroom).
    fn push_front(&mut self, n: usize) -> bool;
    /// Removes `n` bytes from the front (false when shorter than `n`).
    fn pull_front(&mut self, n: usize) -> bool;
    /// Sets the length, growing (zero-filled is not guaranteed) or shrinking at the end
    /// (false when there is no tailroom).
    fn set_len(&mut self, len: usize) -> bool;
    /// The receive-side hash (RSS) if the device computed one; 0 otherwise.
    fn rx_hash(&self) -> u32 {
        0
    }
    /// A word kept with the packet while workers hand it to each other (not sent): the
    /// pipeline marks a packet it passes on in search of its flow's owner. Meaningless
    /// until set.
    fn handoff_tag(&self) -> u32;
    /// Sets [`handoff_tag`](Self::handoff_tag).
    fn set_handoff_tag(&mut self, tag: u32);
    /// Whether [`bytes`](Self::bytes) is the whole packet (a chained mbuf is not: the
    /// pipeline drops those as `multi_segment`).
    fn is_contiguous(&self) -> bool {
        true
    }
}

impl Frame for Mbuf {
    #[inline]
    fn bytes(&self) -> &[u8] {
        self.data()
    }
    #[inline]
    fn bytes_mut(&mut self) -> &mut [u8] {
        self.data_mut()
    }
    #[inline]
    fn push_front(&mut self, n: usize) -> bool {
        self.prepend(n).is_ok()
    }
    #[inline]
    fn pull_front(&mut self, n: usize) -> bool {
        self.adj(n).is_ok()
    }
    #[inline]
    fn set_len(&mut self, len: usize) -> bool {
        Mbuf::set_len(self, len).is_ok()
    }
    #[inline]
    fn rx_hash(&self) -> u32 {
        self.rss_hash()
    }
    #[inline]
    fn is_contiguous(&self) -> bool {
        self.segments() == 1
    }
    #[inline]
    fn handoff_tag(&self) -> u32 {
        self.user_tag()
    }
    #[inline]
    fn set_handoff_tag(&mut self, tag: u32) {
        self.set_user_tag(tag);
    }
}

/// A heap frame with fixed headroom, for tests and benchmarks.
#[derive(Debug, Clone)]
pub struct VecFrame {
    buf: Vec<u8>,
    head: usize,
    len: usize,
    tag: u32,
}

impl VecFrame {
    /// Headroom like DPDK's default mbuf headroom.
    pub const HEADROOM: usize = 128;
    /// Room like a default mbuf's data room.
    pub const ROOM: usize = 2048;

    pub fn new(bytes: &[u8]) -> VecFrame {
        let mut buf = vec![0u8; Self::HEADROOM + Self::ROOM.max(bytes.len())];
        buf[Self::HEADROOM..Self::HEADROOM + bytes.len()].copy_from_slice(bytes);
        VecFrame {
            buf,
            head: Self::HEADROOM,
            len: bytes.len(),
            tag: 0,
        }
    }

    /// Makes this frame hold `bytes` again at the default headroom, reusing its buffer, so
    /// that a benchmark recycling frames counts the pipeline's work and not the allocator's.
    /// Zero-fills only when the buffer must grow.
    pub fn refill(&mut self, bytes: &[u8]) {
        let need = Self::HEADROOM + Self::ROOM.max(bytes.len());
        if self.buf.len() < need {
            self.buf.resize(need, 0);
        }
        self.buf[Self::HEADROOM..Self::HEADROOM + bytes.len()].copy_from_slice(bytes);
        self.head = Self::HEADROOM;
        self.len = bytes.len();
        self.tag = 0;
    }
}

impl Frame for VecFrame {
    fn bytes(&self) -> &[u8] {
        &self.buf[self.head..self.head + self.len]
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.head..self.head + self.len]
    }
    fn push_front(&mut self, n: usize) -> bool {
        if n > self.head {
            return false;
        }
        self.head -= n;
        self.len += n;
        true
    }
    fn pull_front(&mut self, n: usize) -> bool {
        if n > self.len {
            return false;
        }
        self.head += n;
        self.len -= n;
        true
    }
    fn set_len(&mut self, len: usize) -> bool {
        if self.head + len > self.buf.len() {
            return false;
        }
        self.len = len;
        true
    }
    fn handoff_tag(&self) -> u32 {
        self.tag
    }
    fn set_handoff_tag(&mut self, tag: u32) {
        self.tag = tag;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vec_frame_edits_like_an_mbuf() {
        let mut f = VecFrame::new(&[1, 2, 3, 4]);
        assert!(f.push_front(2));
        f.bytes_mut()[..2].copy_from_slice(&[9, 9]);
        assert_eq!(f.bytes(), &[9, 9, 1, 2, 3, 4]);
        assert!(f.pull_front(3));
        assert_eq!(f.bytes(), &[2, 3, 4]);
        assert!(f.set_len(2));
        assert_eq!(f.bytes(), &[2, 3]);
        assert!(!f.pull_front(3));
        assert!(!f.push_front(VecFrame::HEADROOM + 10));
        assert!(!f.set_len(100_000));
    }

    #[test]
    fn a_refilled_frame_is_a_new_one() {
        let mut f = VecFrame::new(&[1, 2, 3, 4]);
        assert!(f.pull_front(1));
        f.set_handoff_tag(7);
        f.refill(&[5, 6]);
        assert_eq!(f.bytes(), &[5, 6]);
        assert_eq!(f.handoff_tag(), 0);
        assert!(f.push_front(VecFrame::HEADROOM));
        assert!(!f.push_front(1));
        let big = vec![9u8; VecFrame::ROOM + 10];
        f.refill(&big);
        assert_eq!(f.bytes(), &big[..]);
    }
}
