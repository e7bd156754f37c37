//! Owned packet buffers.

use std::fmt;
use std::ptr::NonNull;

use crate::error::DpdkError;
use crate::ffi;

/// One owned `rte_mbuf`, freed back to its pool on drop.
///
/// `repr(transparent)` over the pointer so that a `Vec<Mbuf>` is exactly the pointer array
/// DPDK's burst functions read and write: bursts cost no copies or conversions.
#[repr(transparent)]
pub struct Mbuf {
    raw: NonNull<ffi::rte_mbuf>,
}

// SAFETY: an Mbuf is uniquely owned (no aliasing handle exists); moving it to another
// thread moves that ownership, and freeing from any lcore is allowed by DPDK mempools.
unsafe impl Send for Mbuf {}

impl Mbuf {
    /// Takes ownership of a raw mbuf.
    ///
    /// # Safety
    /// `raw` must point to a valid mbuf that nothing else owns or will free.
    #[inline]
    pub unsafe fn from_raw(raw: NonNull<ffi::rte_mbuf>) -> Mbuf {
        Mbuf { raw }
    }

    /// Gives up ownership without freeing.
    #[inline]
    pub fn into_raw(self) -> NonNull<ffi::rte_mbuf> {
        let raw = self.raw;
        std::mem::forget(self);
        raw
    }

    #[inline]
    fn m(&self) -> &ffi::rte_mbuf {
        // SAFETY: we own a valid mbuf for our whole lifetime.
        unsafe { self.raw.as_ref() }
    }

    /// Bytes of packet data in this (first) segment.
    #[inline]
    pub fn data_len(&self) -> usize {
        usize::from(self.m().data_len)
    }

    /// Bytes of packet data over all segments.
    #[inline]
    pub fn pkt_len(&self) -> usize {
        self.m().pkt_len as usize
    }

    /// Number of segments (privlink's own pools produce single-segment packets).
    #[inline]
    pub fn segments(&self) -> u16 {
        self.m().nb_segs
    }

    /// The input port the PMD recorded.
    #[inline]
    pub fn port(&self) -> u16 {
        self.m().port
    }

    /// The RSS hash the NIC computed (valid when the RSS offload flag is set).
    #[inline]
    pub fn rss_hash(&self) -> u32 {
        // SAFETY: reads a field of the mbuf we own.
        unsafe { ffi::plk_mbuf_rss_hash(self.raw.as_ptr()) }
    }

    /// The mbuf's user tag (`hash.usr`): a word the application may keep with a packet
    /// while it owns it. It shares its storage with the RSS hash, so it holds the hash
    /// until [`set_user_tag`](Self::set_user_tag) is called.
    #[inline]
    pub fn user_tag(&self) -> u32 {
        // SAFETY: reads a field of the mbuf we own.
        unsafe { ffi::plk_mbuf_user_tag(self.raw.as_ptr()) }
    }

    /// Sets the user tag (and so overwrites the RSS hash).
    #[inline]
    pub fn set_user_tag(&mut self, tag: u32) {
        // SAFETY: writes a plain field of the mbuf we own exclusively (&mut self).
        unsafe { ffi::plk_mbuf_set_user_tag(self.raw.as_ptr(), tag) }
    }

    /// The offload flags (`RTE_MBUF_F_*`).
    #[inline]
    pub fn offload_flags(&self) -> u64 {
        self.m().ol_flags
    }

    /// Sets the offload flags (e.g. checksum requests before TX).
    #[inline]
    pub fn set_offload_flags(&mut self, flags: u64) {
        // SAFETY: we own the mbuf exclusively (&mut self).
        unsafe { self.raw.as_mut().ol_flags = flags };
    }

    /// The first segment's packet bytes.
    #[inline]
    pub fn data(&self) -> &[u8] {
        let m = self.m();
        // SAFETY: buf_addr + data_off .. + data_len lies inside the mbuf's buffer by the
        // mbuf invariants; the bytes are ours while we own the mbuf.
        unsafe {
            std::slice::from_raw_parts(
                m.buf_addr.cast::<u8>().add(usize::from(m.data_off)),
                usize::from(m.data_len),
            )
        }
    }

    /// The first segment's packet bytes, writable.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        let m = self.m();
        let (addr, off, len) = (m.buf_addr, m.data_off, m.data_len);
        // SAFETY: as in `data`, and &mut self gives exclusive access.
        unsafe {
            std::slice::from_raw_parts_mut(
                addr.cast::<u8>().add(usize::from(off)),
                usize::from(len),
            )
        }
    }

    /// Free bytes before the packet data.
    #[inline]
    pub fn headroom(&self) -> usize {
        // SAFETY: reads fields of the mbuf we own.
        usize::from(unsafe { ffi::plk_pktmbuf_headroom(self.raw.as_ptr()) })
    }

    /// Free bytes after the packet data (last segment).
    #[inline]
    pub fn tailroom(&self) -> usize {
        // SAFETY: reads fields of the mbuf we own.
        usize::from(unsafe { ffi::plk_pktmbuf_tailroom(self.raw.as_ptr()) })
    }

    /// Grows the packet at the front by `len` bytes (e.g. to push a VLAN tag or headers).
    #[inline]
    pub fn prepend(&mut self, len: usize) -> Result<&mut [u8], DpdkError> {
        let l = u16::try_from(len).map_err(|_| DpdkError::invalid("rte_pktmbuf_prepend"))?;
        // SAFETY: we own the mbuf; DPDK checks the headroom and returns NULL if short.
        let p = unsafe { ffi::plk_pktmbuf_prepend(self.raw.as_ptr(), l) };
        if p.is_null() {
            return Err(DpdkError::new("rte_pktmbuf_prepend", libc::ENOSPC));
        }
        Ok(&mut self.data_mut()[..len])
    }

    /// Grows the packet at the end by `len` bytes, returning the new bytes.
    #[inline]
    pub fn append(&mut self, len: usize) -> Result<&mut [u8], DpdkError> {
        let l = u16::try_from(len).map_err(|_| DpdkError::invalid("rte_pktmbuf_append"))?;
        if self.segments() != 1 {
            return Err(DpdkError::new(
                "rte_pktmbuf_append: multi-segment",
                libc::ENOTSUP,
            ));
        }
        // SAFETY: we own the single-segment mbuf; DPDK checks the tailroom.
        let p = unsafe { ffi::plk_pktmbuf_append(self.raw.as_ptr(), l) };
        if p.is_null() {
            return Err(DpdkError::new("rte_pktmbuf_append", libc::ENOSPC));
        }
        let data = self.data_mut();
        let n = data.len();
        Ok(&mut data[n - len..])
    }

    /// Removes `len` bytes from the front (e.g. to pop a VLAN tag).
    #[inline]
    pub fn adj(&mut self, len: usize) -> Result<(), DpdkError> {
        let l = u16::try_from(len).map_err(|_| DpdkError::invalid("rte_pktmbuf_adj"))?;
        // SAFETY: we own the mbuf; DPDK refuses (NULL) when len exceeds the first segment.
        let p = unsafe { ffi::plk_pktmbuf_adj(self.raw.as_ptr(), l) };
        if p.is_null() {
            return Err(DpdkError::new("rte_pktmbuf_adj", libc::EINVAL));
        }
        Ok(())
    }

    /// Removes `len` bytes from the end (e.g. Ethernet padding).
    #[inline]
    pub fn trim(&mut self, len: usize) -> Result<(), DpdkError> {
        let l = u16::try_from(len).map_err(|_| DpdkError::invalid("rte_pktmbuf_trim"))?;
        // SAFETY: we own the mbuf; DPDK refuses (-1) when len exceeds the last segment.
        let rc = unsafe { ffi::plk_pktmbuf_trim(self.raw.as_ptr(), l) };
        if rc != 0 {
            return Err(DpdkError::new("rte_pktmbuf_trim", libc::EINVAL));
        }
        Ok(())
    }

    /// Sets the packet length to `len` bytes, growing or trimming at the end.
    pub fn set_len(&mut self, len: usize) -> Result<(), DpdkError> {
        let cur = self.pkt_len();
        if len > cur {
            self.append(len - cur).map(|_| ())
        } else {
            self.trim(cur - len)
        }
    }
}

impl Drop for Mbuf {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: we own the mbuf and never use the pointer again.
        unsafe { ffi::plk_pktmbuf_free(self.raw.as_ptr()) };
    }
}

impl fmt::Debug for Mbuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mbuf({}B)", self.pkt_len())
    }
}
