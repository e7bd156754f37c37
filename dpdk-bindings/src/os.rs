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
