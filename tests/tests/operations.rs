//! The operator's DPDK tools against a running privlinkd: `dpdk-dumpcap` captures on a
//! port (the daemon runs DPDK's pdump server), and `dpdk-telemetry.py` reads its ports.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use privlink_e2e::{Options, Topology, CONSUMER_CLIENT, ENDPOINT_IP};

const T: Duration = Duration::from_secs(60);

/// The frames of a classic pcap file (LINKTYPE_ETHERNET), any byte order.
fn pcap_frames(bytes: &[u8]) -> Vec<Vec<u8>> {
    assert!(bytes.len() >= 24, "a pcap header: {} bytes", bytes.len());
    let magic = u32::from_le_bytes(bytes[0..4].try_into().unwrap());
    let le = match magic {
        0xa1b2_c3d4 | 0xa1b2_3c4d => true,
        0xd4c3_b2a1 | 0x4d3c_b2a1 => false,
        m => panic!("not a pcap file (magic {m:#x})"),
    };
    let u32_at = |at: usize| {
        let b: [u8; 4] = bytes[at..at + 4].try_into().unwrap();
        if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    };
    assert_eq!(u32_at(20), 1, "LINKTYPE_ETHERNET");
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= bytes.len() {
        let len = u32_at(at + 8) as usize;
        let end = at + 16 + len;
        assert!(end <= bytes.len(), "a record past the end of the file");
        out.push(bytes[at + 16..end].to_vec());
        at = end;
    }
    out
}

/// A TCP segment from `src` to `dst`:`dport` with SYN set, in an untagged IPv4 frame.
fn is_syn(frame: &[u8], src: [u8; 4], dst: [u8; 4], dport: u16) -> bool {
    frame.len() >= 54
        && frame[12..14] == [0x08, 0x00]
        && frame[23] == 6
        && frame[26..30] == src
        && frame[30..34] == dst
        && {
            let ihl = usize::from(frame[14] & 0x0f) * 4;
            let tcp = &frame[14 + ihl..];
            tcp.len() >= 14 && u16::from_be_bytes([tcp[2], tcp[3]]) == dport && tcp[13] & 0x02 != 0
        }
}

fn octets(ip: &str) -> [u8; 4] {
    ip.parse::<std::net::Ipv4Addr>().unwrap().octets()
}

/// Free 2 MB hugepages.
fn free_hugepages() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("HugePages_Free:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// dumpcap attaches only to a primary on hugepages (`scripts/hugepages.sh` reserves them
/// for `make test`); without them, privlinkd says at start that capture is unavailable.
#[test]
fn dumpcap_captures_a_curl_through_the_endpoint() {
    // 256 MB for the topology's EAL, and room to spare for dumpcap's own pool.
    if free_hugepages() < 200 {
        let t = Topology::start(Options::default());
        assert!(
            t.log()
                .contains("packet capture unavailable: dpdk-dumpcap cannot attach"),
            "{}",
            t.log()
        );
        eprintln!("no free hugepages: checked the warning, not a capture");
        return;
    }
    let t = Topology::start(Options {
        hugepages: true,
        ..Options::default()
    });
    let pcap = t.dir.join("consumer.pcap");
    let mut cap = Command::new("dpdk-dumpcap")
        .arg(format!("--file-prefix={}", t.file_prefix()))
        .args(["-i", "0", "-P", "-q", "-a", "duration:30", "-c", "8"])
        .arg("-w")
        .arg(&pcap)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dpdk-dumpcap (package dpdk-dev)");
    // dumpcap writes the file's header once it is attached.
    let end = Instant::now() + Duration::from_secs(15);
    while Instant::now() < end && std::fs::metadata(&pcap).map_or(true, |m| m.len() < 24) {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    let r = t.client(&["http-many", ENDPOINT_IP, "80", "3"], T);
    assert_eq!(r["ok"], 3, "{r}");
    let end = Instant::now() + Duration::from_secs(35);
    let status = loop {
        if let Some(s) = cap.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > end {
            let _ = cap.kill();
            break cap.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut err = String::new();
    if let Some(mut e) = cap.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    assert!(
        status.success(),
        "dpdk-dumpcap: {status}: {err}\n{}",
        t.log()
    );
    let frames = pcap_frames(&std::fs::read(&pcap).unwrap());
    assert!(frames.len() >= 8, "{} frames captured: {err}", frames.len());
    let syns = frames
        .iter()
        .filter(|f| is_syn(f, octets(CONSUMER_CLIENT), octets(ENDPOINT_IP), 80))
        .count();
    assert!(
        syns >= 1,
        "a SYN of the curl to the endpoint among {} frames",
        frames.len()
    );
    // Still forwarding after the capture detached.
    let r = t.client(&["http-many", ENDPOINT_IP, "80", "2"], T);
    assert_eq!(r["ok"], 2, "{r}");
}

#[test]
fn telemetry_reads_the_ports_of_the_daemon() {
    let t = Topology::start(Options::default());
    let mut child = Command::new("dpdk-telemetry.py")
        .args(["-f", t.file_prefix()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dpdk-telemetry.py (package dpdk-dev)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"/ethdev/list\n/ethdev/stats,0\n")
        .unwrap();
    let end = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
    }
    if child.try_wait().unwrap().is_none() {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("\"/ethdev/list\": [0, 1]") || text.contains("\"/ethdev/list\": [\n"),
        "both ports listed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("\"ipackets\""), "port 0's counters: {text}");
}

/// A free TCP port on loopback (the OS's pick).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// `GET /metrics` on `port`: the body.
fn scrape(port: u16) -> String {
    use std::io::Read;
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).expect("the metrics port");
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: privlink\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    body.to_owned()
}

/// The value of the series `name{labels…}` whose labels contain every `want` pair.
fn value(text: &str, name: &str, want: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (series, v) = l.rsplit_once(' ')?;
        let (n, labels) = series.split_once('{').unwrap_or((series, ""));
        let all = want
            .iter()
            .all(|(k, x)| labels.contains(&format!("{k}=\"{x}\"")));
        (n == name && all).then(|| v.parse().ok())?
    })
}

#[test]
fn metrics_count_a_curl_and_the_dashboard_queries_only_what_exists() {
    let port = free_port();
    let t = Topology::start(Options {
        extra_toml: format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n"),
        ..Options::default()
    });
    let before = scrape(port);
    let ep = [("endpoint", "vpce-0e0000000000000e1")];
    let new_before = value(&before, "privlink_endpoint_new_flows_total", &ep)
        .unwrap_or_else(|| panic!("the endpoint's series: {before}"));
    let rx_before = value(
        &before,
        "privlink_worker_rx_packets_total",
        &[("worker", "0")],
    )
    .unwrap();
    let r = t.client(&["http-many", ENDPOINT_IP, "80", "5"], T);
    assert_eq!(r["ok"], 5, "{r}");
    // A datagram to a port the endpoint does not listen on: a drop of the endpoint's.
    let _ = t.client(&["udp", ENDPOINT_IP, "9001", "1"], T);
    // A refused request, counted by its code.
    let _ = t.ctl(
        0,
        &[
            "describe-vpc-endpoints",
            "--vpc-endpoint-ids",
            "vpce-nothere",
        ],
    );
    let after = scrape(port);
    let new_after = value(&after, "privlink_endpoint_new_flows_total", &ep).unwrap();
    assert!(new_after >= new_before + 5.0, "{new_before} -> {new_after}");
    let rx_after = value(
        &after,
        "privlink_worker_rx_packets_total",
        &[("worker", "0")],
    )
    .unwrap();
    assert!(rx_after >= rx_before + 25.0, "{rx_before} -> {rx_after}");
    for (name, labels) in [
        ("privlink_endpoint_bytes_total", &ep[..]),
        (
            "privlink_service_new_flows_total",
            &[("service", "vpce-svc-0d0000000000000d1")][..],
        ),
        (
            "privlink_worker_drops_total",
            &[("reason", "no_listener")][..],
        ),
        (
            "privlink_snat_ports_in_use",
            &[("address", privlink_e2e::SNAT_IP)][..],
        ),
        ("privlink_port_rx_packets_total", &[][..]),
        ("privlink_snapshot_generation", &[][..]),
        (
            "privlink_management_requests_total",
            &[("op", "describe-vpc-endpoints")][..],
        ),
        (
            "privlink_management_request_duration_seconds_count",
            &[][..],
        ),
        (
            "privlink_target_active_flows",
            &[("target", "10.2.0.11:8080")][..],
        ),
    ] {
        assert!(
            value(&after, name, labels).is_some(),
            "{name} {labels:?} in:\n{after}"
        );
    }
    let bytes = value(&after, "privlink_endpoint_bytes_total", &ep).unwrap();
    assert!(bytes > 0.0, "the curl's bytes counted");

    // Every metric the shipped Grafana dashboard queries is served.
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/grafana/privlink.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let mut names = std::collections::BTreeSet::new();
    for p in dash["panels"].as_array().unwrap() {
        for q in p["targets"].as_array().unwrap() {
            let expr = q["expr"].as_str().unwrap();
            let mut rest = expr;
            while let Some(at) = rest.find("privlink_") {
                let tail = &rest[at..];
                let end = tail
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(tail.len());
                names.insert(tail[..end].to_owned());
                rest = &tail[end..];
            }
        }
    }
    assert!(names.len() >= 15, "{names:?}");
    for n in &names {
        // A sample, or at least the family (drops by reason of an endpoint name only
        // reasons that happened).
        let served = after.lines().any(|l| {
            l.starts_with(&format!("{n}{{"))
                || l.starts_with(&format!("{n} "))
                || l.starts_with(&format!("# TYPE {n} "))
        });
        assert!(served, "the dashboard queries {n}, which is not served");
    }
}

#[test]
fn flow_logs_have_a_line_for_an_accepted_and_a_rejected_connection() {
    use privlink_e2e::{CONSUMER_ACCOUNT, PROVIDER_ACCOUNT, SNAT_IP, TARGETS};
    let dir = std::env::temp_dir().join(format!("privlink-flowlogs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("flows.log");
    let t = Topology::start(Options {
        extra_toml: format!(
            "[flow_logs]\npath = \"{}\"\ninterval_s = 1\n",
            path.display()
        ),
        ..Options::default()
    });
    let r = t.client(&["http-many", ENDPOINT_IP, "80", "2"], T);
    assert_eq!(r["ok"], 2, "{r}");
    // A datagram to a port the endpoint does not listen on.
    let _ = t.client(&["udp", ENDPOINT_IP, "9001", "1"], T);
    // Two windows pass, and the writer's cycle.
    std::thread::sleep(Duration::from_millis(2600));
    let text = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some(privlink_flowlog_header()),
        "the header first: {text}"
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(' ').collect()).collect();
    assert!(rows.iter().all(|r| r.len() == 19), "19 fields each: {text}");
    let consumer = rows.iter().find(|r| {
        r[1] == CONSUMER_ACCOUNT
            && r[2] == "vpce-0e0000000000000e1"
            && r[3] == CONSUMER_CLIENT
            && r[4] == ENDPOINT_IP
            && r[6] == "80"
            && r[7] == "6"
            && r[12] == "ACCEPT"
            && r[16] == "ingress"
    });
    let consumer = consumer.unwrap_or_else(|| panic!("the consumer's line of the curl: {text}"));
    assert_eq!(consumer[14], SNAT_IP, "pkt-srcaddr: the translated source");
    assert!(TARGETS.contains(&consumer[15]), "pkt-dstaddr: a target");
    assert!(
        consumer[8].parse::<u64>().unwrap() >= 3,
        "packets: {consumer:?}"
    );
    let provider = rows.iter().find(|r| {
        r[1] == PROVIDER_ACCOUNT
            && r[2] == "vpce-svc-0d0000000000000d1"
            && r[3] == SNAT_IP
            && TARGETS.contains(&r[4])
            && r[6] == "8080"
            && r[16] == "egress"
    });
    assert!(provider.is_some(), "the provider's line: {text}");
    assert!(
        rows.iter()
            .filter(|r| r[1] == PROVIDER_ACCOUNT)
            .all(|r| r[3] != CONSUMER_CLIENT && r[4] != CONSUMER_CLIENT),
        "the provider's lines address the SNAT address, not the client: {text}"
    );
    let reject = rows.iter().find(|r| r[12] == "REJECT");
    let reject = reject.unwrap_or_else(|| panic!("a REJECT line: {text}"));
    assert_eq!(
        (reject[1], reject[3], reject[4], reject[6], reject[7], reject[18]),
        (
            CONSUMER_ACCOUNT,
            CONSUMER_CLIENT,
            ENDPOINT_IP,
            "9001",
            "17",
            "no_listener"
        ),
        "{text}"
    );
}

/// The flow-log file's header (the cloud's field names, then privlink's `reason`).
fn privlink_flowlog_header() -> &'static str {
    "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status pkt-srcaddr pkt-dstaddr flow-direction tcp-flags reason"
}
