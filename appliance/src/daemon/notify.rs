//! The service manager's notification protocol (`sd_notify(3)`), without libsystemd: one
//! datagram per message to the Unix socket named by `$NOTIFY_SOCKET` (a path, or an
//! abstract name when it starts with `@`). `READY=1` once every worker polls and the
//! management socket listens; `WATCHDOG=1` every half of `$WATCHDOG_USEC` while the worker
//! supervision finds every worker alive, so a privlinkd whose main loop hangs stops
//! feeding it and systemd restarts it (`WatchdogSec=` in `privlinkd.service`);
//! `STOPPING=1` when it begins to stop; `STATUS=` lines say what it is doing.
//!
//! Without `$NOTIFY_SOCKET` (not started by systemd, or `Type=simple`) every call is a
//! no-op. A message that cannot be sent is logged once and otherwise ignored: the service
//! manager is told, never obeyed.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

/// A connection to the service manager, if there is one.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    /// Half of `$WATCHDOG_USEC`, when the watchdog is on for this process.
    watchdog_every: Option<Duration>,
    last_watchdog: Option<Instant>,
    warned: bool,
}

impl Notifier {
    /// The notifier the environment asks for (none when `$NOTIFY_SOCKET` is unset).
    pub fn from_env() -> Notifier {
        let socket = std::env::var_os("NOTIFY_SOCKET");
        let usec = std::env::var("WATCHDOG_USEC").ok();
        let pid = std::env::var("WATCHDOG_PID").ok();
        Self::new(
            socket.as_deref().and_then(|s| s.to_str()),
            usec.as_deref(),
            pid.as_deref(),
        )
    }

    fn new(socket: Option<&str>, watchdog_usec: Option<&str>, watchdog_pid: Option<&str>) -> Self {
        let target = socket.and_then(|s| match address(s) {
            Ok(addr) => match UnixDatagram::unbound() {
                Ok(sock) => Some((sock, addr)),
                Err(e) => {
                    log::warn!("NOTIFY_SOCKET {s}: {e}; not notifying the service manager");
                    None
                }
            },
            Err(e) => {
                log::warn!("NOTIFY_SOCKET {s}: {e}; not notifying the service manager");
                None
            }
        });
        // The watchdog is ours when no pid is named, or ours is.
        let ours = watchdog_pid.is_none_or(|p| p.trim() == std::process::id().to_string());
        let watchdog_every = watchdog_usec
            .and_then(|u| u.trim().parse::<u64>().ok())
            .filter(|&u| u > 0 && ours && target.is_some())
            .map(|u| Duration::from_micros(u / 2));
        Notifier {
            target,
            watchdog_every,
            last_watchdog: None,
            warned: false,
        }
    }

    /// Whether a service manager listens.
    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// The watchdog's interval for this process (half of `$WATCHDOG_USEC`), if on.
    pub fn watchdog_every(&self) -> Option<Duration> {
        self.watchdog_every
    }

    /// Sends one message (`KEY=value` lines).
    pub fn send(&mut self, message: &str) {
        let Some((sock, addr)) = &self.target else {
            return;
        };
        if let Err(e) = sock.send_to_addr(message.as_bytes(), addr) {
            if !self.warned {
                self.warned = true;
                log::warn!("could not notify the service manager ({message:?}): {e}");
            }
        }
    }

    /// Every worker polls and the socket listens.
    pub fn ready(&mut self, status: &str) {
        self.send(&format!(
            "READY=1\nSTATUS={status}\nMAINPID={}",
            std::process::id()
        ));
    }

    /// Called by the main loop after the worker supervision found every worker alive:
    /// feeds the watchdog when half its interval has passed.
    pub fn alive(&mut self, now: Instant) {
        let Some(every) = self.watchdog_every else {
            return;
        };
        if self
            .last_watchdog
            .is_some_and(|t| now.duration_since(t) < every)
        {
            return;
        }
        self.last_watchdog = Some(now);
        self.send("WATCHDOG=1");
    }

    pub fn reloading(&mut self) {
        self.send("RELOADING=1\nSTATUS=reloading the configuration");
    }

    pub fn reloaded(&mut self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={status}"));
    }

    pub fn stopping(&mut self, status: &str) {
        self.send(&format!("STOPPING=1\nSTATUS={status}"));
    }
}

/// The socket address `$NOTIFY_SOCKET` names.
fn address(s: &str) -> std::io::Result<SocketAddr> {
    match s.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes())
        }
        None if s.starts_with('/') => SocketAddr::from_pathname(s),
        None => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "neither an absolute path nor an abstract name (@…)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener() -> (tempdir::Dir, UnixDatagram, String) {
        let dir = tempdir::Dir::new();
        let path = dir.0.join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        (dir, sock, path.to_str().unwrap().to_owned())
    }

    fn recv(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    mod tempdir {
        /// A private directory removed when dropped.
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                use std::sync::atomic::{AtomicU32, Ordering};
                static N: AtomicU32 = AtomicU32::new(0);
                let p = std::env::temp_dir().join(format!(
                    "privlink-notify-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn ready_watchdog_and_stopping_reach_the_socket() {
        let (_dir, sock, path) = listener();
        let mut n = Notifier::new(Some(&path), Some("200000"), None);
        assert_eq!(n.watchdog_every(), Some(Duration::from_millis(100)));
        n.ready("forwarding");
        let m = recv(&sock);
        assert!(m.starts_with("READY=1\nSTATUS=forwarding\nMAINPID="), "{m}");
        let t0 = Instant::now();
        n.alive(t0);
        // Within the interval: nothing more.
        n.alive(t0 + Duration::from_millis(50));
        n.alive(t0 + Duration::from_millis(100));
        n.stopping("bye");
        assert_eq!(recv(&sock), "WATCHDOG=1");
        assert_eq!(recv(&sock), "WATCHDOG=1");
        assert_eq!(recv(&sock), "STOPPING=1\nSTATUS=bye");
    }

    #[test]
    fn abstract_names_and_another_pids_watchdog() {
        let name = format!("privlink-notify-test-{}", std::process::id());
        let addr = address(&format!("@{name}")).unwrap();
        let sock = UnixDatagram::bind_addr(&addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        // WATCHDOG_PID names another process: the watchdog is not ours to feed.
        let mut n = Notifier::new(Some(&format!("@{name}")), Some("200000"), Some("1"));
        assert_eq!(n.watchdog_every(), None);
        n.ready("x");
        assert!(recv(&sock).starts_with("READY=1"));
    }

    #[test]
    fn without_a_socket_nothing_is_sent_and_bad_names_are_refused() {
        let mut n = Notifier::new(None, Some("200000"), None);
        assert!(!n.enabled());
        assert_eq!(n.watchdog_every(), None);
        n.ready("x");
        n.alive(Instant::now());
        assert!(address("relative/path").is_err());
        assert!(!Notifier::new(Some("relative"), None, None).enabled());
    }
}
