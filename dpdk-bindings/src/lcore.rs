//! Logical cores: ids, and running a closure on an EAL worker lcore.

use std::ffi::{c_int, c_void};
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

use crate::error::DpdkError;
use crate::ffi;

/// An EAL logical core id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LcoreId(pub u32);

impl fmt::Debug for LcoreId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "lcore{}", self.0)
    }
}

/// A NUMA socket id.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SocketId(pub u32);

impl SocketId {
    /// "Any socket" (`SOCKET_ID_ANY`).
    pub const ANY: SocketId = SocketId(u32::MAX);

    pub(crate) fn as_c_int(self) -> c_int {
        // SOCKET_ID_ANY is -1 in C; the rest are small.
        c_int::try_from(self.0).unwrap_or(-1)
    }
}

impl fmt::Debug for SocketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == SocketId::ANY {
            write!(f, "socket-any")
        } else {
            write!(f, "socket{}", self.0)
        }
    }
}

/// The lcore of the calling thread (`None` for threads the EAL does not know).
pub fn current() -> Option<LcoreId> {
    // SAFETY: reads a thread-local set by the EAL; valid on any thread.
    let id = unsafe { ffi::plk_lcore_id() };
    (id != u32::MAX).then_some(LcoreId(id))
}

type Slot<T> = Arc<Mutex<Option<std::thread::Result<T>>>>;

/// A closure running on a worker lcore. `join` waits for it and returns its result.
#[derive(Debug)]
#[must_use = "a launched lcore must be joined"]
pub struct LaunchHandle<T> {
    lcore: LcoreId,
    slot: Slot<T>,
    joined: bool,
}

struct Job(Box<dyn FnOnce() + Send>);

extern "C" fn trampoline(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the Box<Job> leaked by `launch` for exactly this call; ownership
    // comes back here once.
    let job = unsafe { Box::from_raw(arg.cast::<Job>()) };
    (job.0)();
    0
}

/// Runs `f` on the EAL worker lcore `lcore` (which must be idle), returning a handle to
/// join it. A panic inside `f` is caught and returned by `join`, never unwound into C.
pub fn launch<T, F>(lcore: LcoreId, f: F) -> Result<LaunchHandle<T>, DpdkError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let slot: Slot<T> = Arc::new(Mutex::new(None));
    let out = Arc::clone(&slot);
    let job = Box::new(Job(Box::new(move || {
        let r = catch_unwind(AssertUnwindSafe(f));
        if let Ok(mut s) = out.lock() {
            *s = Some(r);
        }
    })));
    let arg = Box::into_raw(job).cast::<c_void>();
    // SAFETY: trampoline matches lcore_function_t and takes ownership of `arg` when it
    // runs; rte_eal_remote_launch validates the lcore id and state.
    let rc = unsafe { ffi::rte_eal_remote_launch(Some(trampoline), arg, lcore.0) };
    if rc < 0 {
        // SAFETY: the launch failed, so the trampoline never ran and never will: the Box
        // is still ours to free.
        drop(unsafe { Box::from_raw(arg.cast::<Job>()) });
        return Err(DpdkError::new(
            format!("rte_eal_remote_launch({lcore:?})"),
            rc,
        ));
    }
    Ok(LaunchHandle {
        lcore,
        slot,
        joined: false,
    })
}

impl<T> LaunchHandle<T> {
    /// The lcore the closure runs on.
    pub fn lcore(&self) -> LcoreId {
        self.lcore
    }

    /// Whether the closure has returned (or panicked), without waiting: lets a supervisor
    /// notice a worker that ended early, and join only what will not block.
    pub fn is_finished(&self) -> bool {
        self.slot.lock().map(|s| s.is_some()).unwrap_or(true)
    }

    /// Waits until the closure returns. `Err` carries the panic payload if it panicked.
    pub fn join(mut self) -> std::thread::Result<T> {
        self.wait();
        let taken = self.slot.lock().ok().and_then(|mut s| s.take());
        taken.unwrap_or_else(|| Err(Box::new("lcore job produced no result")))
    }

    fn wait(&mut self) {
        if !self.joined {
            // SAFETY: waits for the job we launched on this lcore; no memory is shared
            // with C beyond what the trampoline owns.
            unsafe { ffi::rte_eal_wait_lcore(self.lcore.0) };
            self.joined = true;
        }
    }
}

impl<T> Drop for LaunchHandle<T> {
    fn drop(&mut self) {
        // The lcore must be back in WAIT state before anything it uses is torn down.
        self.wait();
    }
}
