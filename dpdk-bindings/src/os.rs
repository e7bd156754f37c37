//! Operating-system calls privlink needs that `std` does not offer safely.
//!
//! This is not DPDK, but it is FFI: `dpdk-bindings` is the workspace's one crate allowed
//! `unsafe`, so the few raw libc calls the management plane needs live here too, behind
//! safe functions, instead of lifting `#![deny(unsafe_code)]` in `mgmt` or `appliance`.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

/// The effective uid of the process at the other end of a connected Unix stream socket,
/// as the kernel recorded it at `connect` (`SO_PEERCRED`). The management socket maps it to
/// an account; the peer cannot forge it.
pub fn peer_uid(stream: &UnixStream) -> io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::ucred>())
        .map_err(|_| io::Error::other("ucred size does not fit socklen_t"))?;
    // SAFETY: the fd is a live socket borrowed from `stream` for the whole call; `cred` is
    // a writable `ucred` and `len` holds exactly its size, so the kernel writes at most
    // `len` bytes into memory we own.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            std::ptr::addr_of_mut!(cred).cast::<libc::c_void>(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if usize::try_from(len).ok() != Some(std::mem::size_of::<libc::ucred>()) {
        return Err(io::Error::other("SO_PEERCRED returned a short ucred"));
    }
    Ok(cred.uid)
}

#[cfg(test)]
mod tests {
    use super::peer_uid;
    use std::os::unix::net::UnixStream;

    #[test]
    fn peer_of_a_socket_pair_is_ourselves() {
        let (a, b) = UnixStream::pair().unwrap();
        let out = std::process::Command::new("id").arg("-u").output().unwrap();
        let me: u32 = String::from_utf8(out.stdout)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(peer_uid(&a).unwrap(), me);
        assert_eq!(peer_uid(&b).unwrap(), me);
    }
}

/// Size of a transparent huge page on x86_64 (PMD level).
const HUGE_PAGE: usize = 2 << 20;

/// Asks the kernel to back the whole 2 MiB pages inside `memory` with transparent huge
/// pages (`madvise(MADV_HUGEPAGE)`), before they are first written: big tables probed at
/// random (the flow table) then cost one TLB entry per 2 MiB instead of per 4 KiB.
/// Returns how many bytes were advised (0 when `memory` holds no whole huge page).
///
/// Only a hint: with THP disabled (`never`) or no huge page free, the kernel uses small
/// pages and nothing else changes. Contents are never touched, hence the
/// `MaybeUninit` slice (`Vec::spare_capacity_mut`).
pub fn advise_huge_pages<T>(memory: &mut [std::mem::MaybeUninit<T>]) -> io::Result<usize> {
    let start = memory.as_mut_ptr().addr();
    let end = start + std::mem::size_of_val(memory);
    let first = start.next_multiple_of(HUGE_PAGE);
    let last = end - end % HUGE_PAGE;
    if last <= first {
        return Ok(0);
    }
    let len = last - first;
    // SAFETY: [first, last) lies inside `memory`, which we borrow mutably for the call, and
    // is page-aligned; MADV_HUGEPAGE changes only how the kernel backs these pages, never
    // their contents or mapping, so no Rust-visible memory changes.
    let rc = unsafe {
        libc::madvise(
            memory
                .as_mut_ptr()
                .cast::<u8>()
                .add(first - start)
                .cast::<libc::c_void>(),
            len,
            libc::MADV_HUGEPAGE,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(len)
}

#[cfg(test)]
mod huge_page_tests {
    use super::*;

    #[test]
    fn advises_only_whole_huge_pages_inside_the_slice() {
        let mut v: Vec<u64> = Vec::with_capacity(3 * HUGE_PAGE / 8);
        let n = advise_huge_pages(v.spare_capacity_mut()).expect("madvise");
        // At least one whole 2 MiB page lies in 6 MiB, whatever the alignment.
        assert!(n >= HUGE_PAGE && n.is_multiple_of(HUGE_PAGE), "{n}");
        let mut small: Vec<u64> = Vec::with_capacity(16);
        assert_eq!(
            advise_huge_pages(small.spare_capacity_mut()).expect("tiny"),
            0
        );
        v.resize(3 * HUGE_PAGE / 8, 7);
        assert!(v.iter().all(|&x| x == 7));
    }
}
