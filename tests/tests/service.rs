//! privlinkd as a systemd service: the unit `make install` writes passes `systemd-analyze
//! verify`, and privlinkd tells the service manager through `$NOTIFY_SOCKET` that it is
//! ready, feeds the watchdog while its workers are alive, and says when it stops.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use privlink_e2e::{Options, Topology};

/// A private directory, removed when dropped (even when the test fails).
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("privlink-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn the_installed_unit_verifies_and_the_configuration_is_not_overwritten() {
    let d = TempDir::new("install");
    let bin = privlink_e2e::privlinkd();
    let bin_dir = bin.parent().unwrap();
    let install = |what: &str| {
        let out = Command::new("bash")
            .arg(repo().join("scripts/install.sh"))
            .args(["--prefix", &format!("{}/usr", d.0.display())])
            .args(["--sysconfdir", &format!("{}/etc", d.0.display())])
            .args(["--bin-dir", bin_dir.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    install("first install");
    let conf = d.0.join("etc/privlink/privlink.toml");
    let default = Command::new(&bin).arg("--print-default").output().unwrap();
    assert_eq!(std::fs::read(&conf).unwrap(), default.stdout);
    // The operator's file survives a second install.
    std::fs::write(&conf, "# mine\n").unwrap();
    let said = install("second install");
    assert!(said.contains("kept as it is"), "{said}");
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), "# mine\n");

    let unit = d.0.join("etc/systemd/system/privlinkd.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    for want in [
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "LimitMEMLOCK=infinity",
        "CapabilityBoundingSet=",
    ] {
        assert!(text.contains(want), "{want} in the unit:\n{text}");
    }
    assert!(!text.contains('@'), "every placeholder replaced:\n{text}");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("systemd-analyze (package systemd)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {stderr}"
    );
}

/// Every datagram on `sock` until `until` holds (or `limit` passes), in order.
fn messages_until(
    sock: &UnixDatagram,
    limit: Duration,
    mut until: impl FnMut(&[String]) -> bool,
) -> Vec<String> {
    let end = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while Instant::now() < end && !until(&got) {
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    got
}

#[test]
fn readiness_watchdog_and_stopping_go_to_the_notify_socket() {
    let d = TempDir::new("notify");
    let path = d.0.join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut t = Topology::start(Options {
        env: vec![
            ("NOTIFY_SOCKET".into(), path.to_str().unwrap().into()),
            ("WATCHDOG_USEC".into(), "400000".into()),
        ],
        ..Options::default()
    });
    // Ready once, then fed every 0.2 s.
    let got = messages_until(&sock, Duration::from_secs(10), |m| {
        m.iter().filter(|x| *x == "WATCHDOG=1").count() >= 5
    });
    let ready = got
        .iter()
        .position(|m| m.starts_with("READY=1"))
        .unwrap_or_else(|| panic!("READY=1 sent: {got:?}\n{}", t.log()));
    assert!(
        got[ready].contains("STATUS=forwarding with 1 worker(s)"),
        "{got:?}"
    );
    let first_watchdog = got.iter().position(|m| m == "WATCHDOG=1").unwrap();
    assert!(ready < first_watchdog, "ready before the watchdog: {got:?}");
    assert!(
        got.iter().filter(|x| *x == "WATCHDOG=1").count() >= 5,
        "{got:?}"
    );
    // Ready means forwarding: the endpoint answers now.
    assert!(t.ping(privlink_e2e::ENDPOINT_IP, 1), "{}", t.log());
    let (clean, _) = t.stop();
    assert!(clean);
    let got = messages_until(&sock, Duration::from_secs(2), |m| {
        m.iter().any(|x| x.starts_with("STOPPING=1"))
    });
    assert!(
        got.iter().any(|m| m.starts_with("STOPPING=1")),
        "STOPPING=1 sent: {got:?}"
    );
}
