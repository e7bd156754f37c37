//! One error type for every failed DPDK call: the operation and DPDK's errno.

use std::fmt;

use crate::ffi;

/// A DPDK call failed.
///
/// Prints as `<op>: <rte_strerror(errno)> (errno <n>)`, e.g.
/// `rte_eth_dev_configure(port 0): Invalid argument (errno 22)`.
#[derive(Clone, PartialEq, Eq)]
pub struct DpdkError {
    op: String,
    errno: i32,
}

impl DpdkError {
    /// An error for `op` with an explicit errno (DPDK functions that return `-errno`).
    pub fn new(op: impl Into<String>, errno: i32) -> Self {
        DpdkError {
            op: op.into(),
            errno: errno.abs(),
        }
    }

    /// An error for `op` from the calling thread's `rte_errno` (functions that return NULL
    /// or -1 and set `rte_errno`).
    pub fn from_rte_errno(op: impl Into<String>) -> Self {
        // SAFETY: plk_errno reads this thread's rte_errno, always valid.
        let errno = unsafe { ffi::plk_errno() };
        Self::new(op, errno)
    }

    /// A failure detected on the Rust side (bad argument, state), with an errno-like code.
    pub fn invalid(op: impl Into<String>) -> Self {
        Self::new(op, libc::EINVAL)
    }

    /// The errno value (positive).
    pub fn errno(&self) -> i32 {
        self.errno
    }

    /// Whether the device does not have the operation at all (`ENOSYS`: its driver
    /// leaves it out), as opposed to refusing these arguments.
    pub fn not_implemented(&self) -> bool {
        self.errno == libc::ENOSYS
    }

    /// The operation that failed.
    pub fn op(&self) -> &str {
        &self.op
    }

    /// Turns a DPDK `int` return (0 or positive = success, negative = `-errno`) into a result.
    pub fn check(op: impl FnOnce() -> String, rc: i32) -> Result<i32, DpdkError> {
        if rc < 0 {
            Err(DpdkError::new(op(), rc))
        } else {
            Ok(rc)
        }
    }
}

impl fmt::Display for DpdkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // SAFETY: rte_strerror returns a pointer to a static or thread-local NUL-terminated
        // string for any errno value.
        let msg = unsafe { std::ffi::CStr::from_ptr(ffi::rte_strerror(self.errno)) };
        write!(
            f,
            "{}: {} (errno {})",
            self.op,
            msg.to_string_lossy(),
            self.errno
        )
    }
}

impl fmt::Debug for DpdkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for DpdkError {}
