//! The Environment Abstraction Layer: initialised once per process, cleaned up last.

use std::ffi::{c_char, c_int, CString};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use crate::error::DpdkError;
use crate::ffi;
use crate::lcore::{LcoreId, SocketId};

const EAL_NEW: u8 = 0;
const EAL_UP: u8 = 1;
const EAL_DOWN: u8 = 2;

/// Process-wide EAL state: DPDK allows exactly one `rte_eal_init` per process, even after
/// `rte_eal_cleanup`.
static EAL_STATE: AtomicU8 = AtomicU8::new(EAL_NEW);
/// Live objects (mempools, ports, rings) created through the EAL. Cleanup waits for zero:
/// tearing the EAL down under a live mempool would leave dangling hugepage memory.
static LIVE_OBJECTS: AtomicUsize = AtomicUsize::new(0);

/// The initialised EAL. Dropping it runs `rte_eal_cleanup` when every mempool, port and ring
/// created through it is gone; otherwise it logs that cleanup is left to process exit.
#[derive(Debug)]
pub struct Eal {
    // Keeps construction private to `init`.
    _private: (),
}

impl Eal {
    /// Initialises the EAL with `args` (without the program name, which is prepended).
    ///
    /// A second call in one process, even after the first `Eal` was dropped, is an error:
    /// DPDK cannot be initialised twice.
    pub fn init<S: AsRef<str>>(args: &[S]) -> Result<Eal, DpdkError> {
        if EAL_STATE
            .compare_exchange(EAL_NEW, EAL_UP, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return Err(DpdkError::new(
                "rte_eal_init: the EAL was already initialised in this process",
                libc::EALREADY,
            ));
        }
        let mut owned = Vec::with_capacity(args.len() + 1);
        owned.push(CString::new("privlink").map_err(|_| DpdkError::invalid("argv[0]"))?);
        for a in args {
            match CString::new(a.as_ref()) {
                Ok(c) => owned.push(c),
                Err(_) => {
                    EAL_STATE.store(EAL_NEW, Ordering::SeqCst);
                    return Err(DpdkError::invalid(format!(
                        "rte_eal_init: argument {:?} contains a NUL byte",
                        a.as_ref()
                    )));
                }
            }
        }
        // rte_eal_init may permute argv; it gets its own array of pointers into `owned`,
        // which outlives the call (and the EAL keeps no reference to it afterwards except
        // through strdup'd copies).
        let mut argv: Vec<*mut c_char> = owned.iter().map(|c| c.as_ptr().cast_mut()).collect();
        let argc = c_int::try_from(argv.len()).map_err(|_| DpdkError::invalid("rte_eal_init"))?;
        // SAFETY: argv holds argc valid NUL-terminated strings that live across the call;
        // EAL_STATE guarantees this is the only rte_eal_init call in the process.
        let rc = unsafe { ffi::rte_eal_init(argc, argv.as_mut_ptr()) };
        if rc < 0 {
            let err = DpdkError::from_rte_errno("rte_eal_init");
            // DPDK refuses any later init after a failed one too ("already called").
            EAL_STATE.store(EAL_DOWN, Ordering::SeqCst);
            return Err(err);
        }
        // The EAL registers its own log stream; keep the strings alive for its lifetime
        // since some versions keep pointers into argv (e.g. for the file prefix).
        std::mem::forget(owned);
        Ok(Eal { _private: () })
    }

    /// The main lcore (the thread that called `init`).
    pub fn main_lcore(&self) -> LcoreId {
        // SAFETY: valid after rte_eal_init, which `self` proves.
        LcoreId(unsafe { ffi::rte_get_main_lcore() })
    }

    /// Whether `lcore` is enabled in this EAL's core mask.
    pub fn lcore_enabled(&self, lcore: LcoreId) -> bool {
        // SAFETY: valid after rte_eal_init; out-of-range ids return 0.
        unsafe { ffi::rte_lcore_is_enabled(lcore.0) != 0 }
    }

    /// The NUMA socket of `lcore`.
    pub fn lcore_socket(&self, lcore: LcoreId) -> SocketId {
        // SAFETY: valid after rte_eal_init; out-of-range ids return a sentinel.
        SocketId(unsafe { ffi::rte_lcore_to_socket_id(lcore.0) })
    }

    /// Number of Ethernet ports the EAL probed.
    pub fn port_count(&self) -> u16 {
        // SAFETY: valid after rte_eal_init.
        unsafe { ffi::rte_eth_dev_count_avail() }
    }
}

impl Drop for Eal {
    fn drop(&mut self) {
        let live = LIVE_OBJECTS.load(Ordering::SeqCst);
        if live != 0 {
            log::warn!("EAL cleanup skipped: {live} DPDK objects still alive; the OS reclaims them at exit");
            return;
        }
        EAL_STATE.store(EAL_DOWN, Ordering::SeqCst);
        // SAFETY: the EAL was initialised and no object created through it remains.
        let rc = unsafe { ffi::rte_eal_cleanup() };
        if rc < 0 {
            log::warn!("{}", DpdkError::new("rte_eal_cleanup", rc));
        }
    }
}

/// Called by an object that must leak (e.g. a pool with mbufs still out): the EAL then
/// never cleans up under it.
pub(crate) fn keep_alive_forever() {
    LIVE_OBJECTS.fetch_add(1, Ordering::SeqCst);
}

/// Held by every object that needs the EAL alive (mempool, port, ring).
#[derive(Debug)]
pub(crate) struct EalToken(());

impl EalToken {
    pub(crate) fn acquire(op: &str) -> Result<EalToken, DpdkError> {
        if EAL_STATE.load(Ordering::SeqCst) != EAL_UP {
            return Err(DpdkError::new(
                format!("{op}: the EAL is not initialised"),
                libc::ENODEV,
            ));
        }
        LIVE_OBJECTS.fetch_add(1, Ordering::SeqCst);
        Ok(EalToken(()))
    }
}

impl Drop for EalToken {
    fn drop(&mut self) {
        LIVE_OBJECTS.fetch_sub(1, Ordering::SeqCst);
    }
}

/// DPDK's packet-capture server in this (primary) process: with it, `dpdk-dumpcap` (a
/// secondary process with the same `--file-prefix`) can capture on any port while the
/// workers forward. Captured packets are copied by RX/TX callbacks that only run while a
/// capture is attached. Uninitialised when dropped, before the EAL is cleaned up.
#[derive(Debug)]
pub struct Pdump {
    _eal: EalToken,
}

impl Pdump {
    /// Starts the capture server (`rte_pdump_init`).
    pub fn init() -> Result<Pdump, DpdkError> {
        let eal = EalToken::acquire("rte_pdump_init")?;
        // SAFETY: the EAL is up (the token says so); rte_pdump_init only registers a
        // multi-process action and allocates its own state.
        let rc = unsafe { ffi::rte_pdump_init() };
        DpdkError::check(|| "rte_pdump_init".to_owned(), rc)?;
        Ok(Pdump { _eal: eal })
    }
}

impl Drop for Pdump {
    fn drop(&mut self) {
        // SAFETY: rte_pdump_init succeeded for this value and the EAL is still up (the
        // token is dropped after this body).
        let rc = unsafe { ffi::rte_pdump_uninit() };
        if rc < 0 {
            log::warn!("{}", DpdkError::new("rte_pdump_uninit", rc));
        }
    }
}
