use std::collections::BTreeSet;
use std::path::PathBuf;

use super::validate::is_prime;
use super::*;
use crate::model::{
    EndpointState, HealthCheckProtocol, IpAddressType, IpFamily, Listener, Principal, Protocol,
    Target, ValueKind,
};
use crate::testing::{ip, p};

/// Validates `config`, expecting an error at `path` whose message is exactly `message`
/// (the full Display, `<path>: <problem>`).
fn expect(config: &Config, path: &str, problem: &str) {
    let e = config.validate().expect_err("must be invalid");
    assert_eq!(
        e.path().map(ToString::to_string).as_deref(),
        Some(path),
        "{e}"
    );
    assert_eq!(e.to_string(), format!("{path}: {problem}"));
}

/// Parses `text`, expecting a syntax/type error whose message contains every `part`.
fn expect_syntax(text: &str, parts: &[&str]) {
    let e = Config::from_toml_str(text).expect_err("must not parse");
    assert!(matches!(e, ConfigError::Syntax { .. }), "{e}");
    let msg = e.to_string();
    for part in parts {
        assert!(msg.contains(part), "{part:?} not in:\n{msg}");
    }
}

fn demo() -> Config {
    Config::embedded_default()
}

// --- the embedded default ----------------------------------------------------------------

/// The demo topology, spelt out value by value: a contract other tools rely on.
/// The demo listeners' checks: quicker than the cloud's defaults, so a demo target that
/// stops answering is out within 10 s and back within 10 s.
fn demo_checks(l: Listener) -> Listener {
    Listener {
        health_check_interval_seconds: 5,
        health_check_timeout_seconds: 2,
        healthy_threshold_count: 2,
        unhealthy_threshold_count: 2,
        ..l
    }
}

fn expected_default() -> Config {
    let target = |s: &str, port| Target::new(ip(s), port);
    Config {
        eal: EalConfig {
            args: [
                "-l",
                "0,1",
                "--no-pci",
                "--vdev=net_tap0,iface=plc0",
                "--vdev=net_tap1,iface=plp0",
            ]
            .map(String::from)
            .to_vec(),
            no_huge_fallback: true,
        },
        workers: WorkersConfig {
            lcores: vec![1],
            burst: 32,
            idle_sleep_us: 50,
            stall_timeout_ms: 1000,
        },
        ports: vec![PortConfig::new("net_tap0"), PortConfig::new("net_tap1")],
        vpcs: vec![
            VpcAttachment {
                vpc_id: p("vpc-0c0000000000000c1"),
                account: p("111111111111"),
                port: "net_tap0".into(),
                vlan: None,
                address: Some(p("10.1.0.1/24")),
                gateway: None,
                gateway6: None,
                static_neighbours6: vec![],
                static_neighbours: vec![],
                mss_clamp: None,
                address6: Some("fd00:c1::1/64".parse().unwrap()),
            },
            VpcAttachment {
                vpc_id: p("vpc-0b0000000000000b1"),
                account: p("222222222222"),
                port: "net_tap1".into(),
                vlan: None,
                address: Some(p("10.2.0.1/24")),
                gateway: None,
                gateway6: None,
                static_neighbours6: vec![],
                static_neighbours: vec![],
                mss_clamp: None,
                address6: None,
            },
        ],
        accounts: vec![
            Account {
                id: p("111111111111"),
                name: "demo-consumer".into(),
                uids: vec![],
            },
            Account {
                id: p("222222222222"),
                name: "demo-provider".into(),
                uids: vec![],
            },
        ],
        mgmt: MgmtConfig {
            socket: "/run/privlink/privlink.sock".into(),
            socket_mode: FileMode::new(0o660).unwrap(),
            socket_group: None,
            max_connections: 64,
            max_connections_per_uid: 8,
            state_dir: "/var/lib/privlink".into(),
            region: "local".into(),
            stats_file: None,
            stats_log: None,
            stats_interval_ms: 1000,
        },
        tables: TablesConfig::default(),
        timeouts: TimeoutsConfig::default(),
        quotas: QuotasConfig::default(),
        limits: LimitsConfig::default(),
        services: vec![Service {
            id: p("vpce-svc-0d0000000000000d1"),
            owner: p("222222222222"),
            vpc_id: p("vpc-0b0000000000000b1"),
            listeners: vec![
                Listener {
                    health_check_protocol: HealthCheckProtocol::Http,
                    health_check_path: "/health".into(),
                    ..demo_checks(Listener::new(
                        Protocol::Tcp,
                        80,
                        vec![target("10.2.0.11", 8080), target("10.2.0.12", 8080)],
                    ))
                },
                Listener {
                    health_check_port: Some(8080),
                    ..demo_checks(Listener::new(
                        Protocol::Udp,
                        9000,
                        vec![target("10.2.0.11", 9000), target("10.2.0.12", 9000)],
                    ))
                },
            ],
            snat_addresses: vec![ip("10.2.0.100").into()],
            acceptance_required: false,
            allowed_principals: vec![Principal::Account(p("111111111111"))],
            auto_accept_principals: Vec::new(),
            connection_limits: Vec::new(),
            supported_ip_address_types: vec![IpFamily::Ipv4, IpFamily::Ipv6],
        }],
        endpoints: vec![EndpointConfig {
            id: p("vpce-0e0000000000000e1"),
            owner: p("111111111111"),
            vpc_id: p("vpc-0c0000000000000c1"),
            service_id: Some(p("vpce-svc-0d0000000000000d1")),
            service_name: None,
            ip: Some(ip("10.1.0.100")),
            ip_address_type: IpAddressType::Dualstack,
            ip6: Some(p("fd00:c1::64")),
            state: EndpointState::Available,
            security_group_ids: vec![],
            policy: None,
        }],
        security_groups: vec![],
        ha: None,
        cluster: None,
        metrics: Some(MetricsConfig {
            listen: "127.0.0.1:9469".parse().unwrap(),
        }),
        flow_logs: Some(FlowLogsConfig::default()),
    }
}

#[test]
fn embedded_default_parses_and_validates() {
    let c = Config::from_toml_str(DEFAULT_TOML).unwrap();
    c.validate().unwrap();
    assert_eq!(c, Config::embedded_default());
}

#[test]
fn embedded_default_values() {
    let c = demo();
    assert_eq!(c, expected_default());
    // The ids are of the long (17 hex digit) form.
    assert!(c.vpcs.iter().all(|v| v.vpc_id.is_long()));
    assert_eq!(
        c.services[0].name(&c.mgmt.region),
        "com.privlink.vpce.local.vpce-svc-0d0000000000000d1"
    );
    assert_eq!(c.mgmt.socket_mode.bits(), 0o660);
    assert_eq!(c.timeouts.arp_retry, Duration::from_secs(1));
    let eal = c.eal.lcores().unwrap();
    assert_eq!(eal.main, 0);
    assert_eq!(eal.enabled, Some(BTreeSet::from([0, 1])));
}

#[test]
fn state_is_the_declared_objects() {
    let c = demo();
    let st = c.state();
    assert_eq!(st.services, c.services);
    assert_eq!(st.endpoints.len(), 1);
    let e = &st.endpoints[0];
    assert_eq!(e.id.to_string(), "vpce-0e0000000000000e1");
    assert_eq!(e.service_id.to_string(), "vpce-svc-0d0000000000000d1");
    assert_eq!(e.ip, Some(ip("10.1.0.100")));
    assert!(e.state.forwards());
    st.validate(&c.vpcs).unwrap();
}

#[test]
fn lookups() {
    let c = demo();
    assert_eq!(c.port("net_tap1").unwrap().name, "net_tap1");
    assert!(c.port("net_tap2").is_none());
    assert_eq!(
        c.attachment(p("vpc-0b0000000000000b1")).unwrap().address,
        Some(p("10.2.0.1/24"))
    );
    let mut c = c;
    c.accounts[1].uids = vec![1002];
    assert_eq!(c.account_for_uid(1002).unwrap().name, "demo-provider");
    assert!(c.account_for_uid(0).is_none());
}

#[test]
fn round_trips_through_toml_and_json() {
    let mut c = demo();
    c.timeouts.arp_retry = Duration::from_millis(250);
    c.ports[0].mtu = Some(1500);
    c.vpcs[0].vlan = Some(100);
    c.vpcs[0].gateway = Some(ip("10.1.0.254"));
    c.endpoints[0].policy = Some(serde_json::json!({"Statement": [{"Effect": "Allow"}]}));
    c.endpoints[0].security_group_ids = vec![p("sg-1a2b3c4d")];
    c.security_groups = vec![crate::model::SecurityGroup {
        id: p("sg-1a2b3c4d"),
        owner: p("111111111111"),
        vpc_id: p("vpc-0c0000000000000c1"),
        name: "web".into(),
        description: "from the file".into(),
        ingress: vec![crate::model::IngressRule {
            protocol: crate::model::RuleProtocol::Tcp,
            from_port: 80,
            to_port: 80,
            cidr: p("10.1.0.0/24"),
        }],
    }];
    c.validate().unwrap();
    let text = toml::to_string(&c).unwrap();
    assert_eq!(Config::from_toml_str(&text).unwrap(), c, "{text}");
    let json = serde_json::to_string(&c).unwrap();
    assert_eq!(serde_json::from_str::<Config>(&json).unwrap(), c);
}

// --- parsing -------------------------------------------------------------------------------

#[test]
fn empty_file_gets_every_default() {
    let c = Config::from_toml_str("").unwrap();
    assert_eq!(c, Config::default());
    assert_eq!(c.eal.args, Vec::<String>::new());
    assert!(c.eal.no_huge_fallback);
    assert_eq!(c.workers.lcores, [1]);
    assert_eq!((c.workers.burst, c.workers.idle_sleep_us), (32, 0));
    assert!(c.ports.is_empty() && c.vpcs.is_empty() && c.accounts.is_empty());
    assert_eq!(c.mgmt.socket, Path::new("/run/privlink/privlink.sock"));
    assert_eq!(c.mgmt.socket_mode.to_string(), "0660");
    assert_eq!(c.mgmt.state_dir, Path::new("/var/lib/privlink"));
    assert_eq!(c.mgmt.region, "local");
    let t = &c.tables;
    assert_eq!(
        (
            t.flows_per_worker,
            t.neighbours,
            t.arp_pending_packets,
            t.maglev_size
        ),
        (262_144, 4096, 256, 65_537)
    );
    let t = &c.timeouts;
    let secs = |d: Duration| d.as_secs_f64();
    assert_eq!(
        [
            secs(t.tcp_established),
            secs(t.tcp_syn),
            secs(t.tcp_closing),
            secs(t.tcp_closed),
            secs(t.udp),
            secs(t.icmp),
            secs(t.arp_retry),
            secs(t.neighbour_ttl)
        ],
        [350.0, 20.0, 60.0, 5.0, 120.0, 30.0, 1.0, 600.0]
    );
    assert_eq!(t.arp_tries, 3);
}

#[test]
fn partial_sections_get_defaults() {
    let c = Config::from_toml_str(
        r#"
        [workers]
        burst = 64
        [[ports]]
        name = "net_ring0"
        [[accounts]]
        id = "111111111111"
        [[vpcs]]
        vpc_id = "vpc-1a2b3c4d"
        account = "111111111111"
        port = "net_ring0"
        address = "10.1.0.1/24"
        [timeouts]
        udp = 2.5
        "#,
    )
    .unwrap();
    assert_eq!(c.workers.burst, 64);
    assert_eq!(
        c.workers.lcores,
        [1],
        "other keys of a section keep defaults"
    );
    assert_eq!(c.ports[0], PortConfig::new("net_ring0"));
    assert!(c.ports[0].promiscuous && c.ports[0].rx_desc == 1024 && c.ports[0].mtu.is_none());
    assert_eq!(c.accounts[0].name, "");
    assert_eq!(c.vpcs[0].vlan, None);
    assert_eq!(c.vpcs[0].static_neighbours, vec![]);
    assert_eq!(c.timeouts.udp, Duration::from_millis(2500));
    assert_eq!(c.timeouts.tcp_syn, Duration::from_secs(20));
}

#[test]
fn declared_objects_get_defaults() {
    let text = DEFAULT_TOML.replace("state = \"available\"", "")
        + "\n[[services]]\nid = \"vpce-svc-0d0000000000000d2\"\nowner = \"222222222222\"\n\
           vpc_id = \"vpc-0b0000000000000b1\"\nsnat_addresses = [\"10.2.0.101\"]\n";
    let c = Config::from_toml_str(&text).unwrap();
    assert_eq!(c.endpoints[0].state, EndpointState::Available);
    let s = &c.services[1];
    assert!(s.acceptance_required && s.listeners.is_empty() && s.allowed_principals.is_empty());
}

#[test]
fn a_dual_stack_endpoint_is_declared_with_its_ipv6_address() {
    let text = DEFAULT_TOML
        .replace("# address6 = ", "address6 = ")
        .replace(
            "# supported_ip_address_types = ",
            "supported_ip_address_types = ",
        )
        .replace("# ip_address_type = ", "ip_address_type = ")
        .replace("# ip6 = ", "ip6 = ");
    let c = Config::from_toml_str(&text).unwrap();
    assert_eq!(
        c.services[0].supported_ip_address_types,
        [IpFamily::Ipv4, IpFamily::Ipv6]
    );
    let e = c.endpoints[0].to_endpoint().unwrap();
    assert_eq!(e.ip_address_type, IpAddressType::Dualstack);
    assert_eq!(e.ip6, Some(p("fd00:c1::64")));
    // Without the service's ipv6 the declaration is refused, by its path.
    let refused = text.replace("supported_ip_address_types = [\"ipv4\", \"ipv6\"]", "");
    let e = Config::from_toml_str(&refused).expect_err("must be invalid");
    assert_eq!(
        e.path().map(ToString::to_string).as_deref(),
        Some("endpoints[0].ip_address_type"),
        "{e}"
    );
    expect_syntax(
        &text.replace(
            "ip_address_type = \"dualstack\"",
            "ip_address_type = \"both\"",
        ),
        &["unknown variant `both`"],
    );
    // An IPv6 endpoint declares no ip; one that does is refused by its path.
    let v6 = text.replace(
        "ip_address_type = \"dualstack\"",
        "ip_address_type = \"ipv6\"",
    );
    let e = Config::from_toml_str(&v6).expect_err("an ip for an ipv6 endpoint");
    assert_eq!(
        e.path().map(ToString::to_string).as_deref(),
        Some("endpoints[0].ip"),
        "{e}"
    );
    let c = Config::from_toml_str(&v6.replace("ip = \"10.1.0.100\"", "")).unwrap();
    let e = c.endpoints[0].to_endpoint().unwrap();
    assert_eq!((e.ip, e.ip6), (None, Some(p("fd00:c1::64"))));
}

#[test]
fn unknown_keys_are_rejected() {
    expect_syntax("colour = \"blue\"\n", &["unknown field `colour`"]);
    expect_syntax(
        "[workers]\nburts = 3\n",
        &["line 2", "burts = 3", "unknown field `burts`", "`burst`"],
    );
    expect_syntax(
        "[[ports]]\nname = \"p\"\nmtuu = 1500\n",
        &["unknown field `mtuu`"],
    );
    expect_syntax(
        &DEFAULT_TOML.replace(
            "{ ip = \"10.2.0.12\", port = 8080 }",
            "{ ip = \"10.2.0.12\", port = 8080, wieght = 2 }",
        ),
        &["unknown field `wieght`", "`weight`"],
    );
    expect_syntax(
        &DEFAULT_TOML.replace("ip = \"10.1.0.100\"", "ip = \"10.1.0.100\"\nsubnet = \"x\""),
        &["unknown field `subnet`"],
    );
}

#[test]
fn syntax_and_type_errors_name_the_line() {
    expect_syntax("[workers\n", &["line 1"]);
    expect_syntax("[workers]\nburst = \"32\"\n", &["line 2", "invalid type"]);
    expect_syntax("[[ports]]\nmtu = 1500\n", &["missing field `name`"]);
    expect_syntax(
        "[timeouts]\nudp = -1\n",
        &["line 2", "non-negative number of seconds"],
    );
    expect_syntax("[workers]\nburst = 70000\n", &["line 2"]);
}

#[test]
fn malformed_values_are_rejected_with_their_expected_form() {
    let cases = [
        (
            "vpc_id = \"vpc-0c0000000000000c1\"",
            "vpc_id = \"vpc-0c00\"",
            "invalid vpc id \"vpc-0c00\"",
        ),
        (
            "account = \"111111111111\"",
            "account = \"11111111111\"",
            "invalid account id",
        ),
        (
            "account = \"111111111111\"",
            "account = 111111111111",
            "12-digit account id string",
        ),
        (
            "address = \"10.1.0.1/24\"",
            "address = \"10.1.0.1\"",
            "invalid address/prefix",
        ),
        (
            "socket_mode = \"0660\"",
            "socket_mode = \"0999\"",
            "invalid file mode \"0999\"",
        ),
        (
            "socket_mode = \"0660\"",
            "socket_mode = \"1777\"",
            "invalid file mode",
        ),
        (
            "protocol = \"udp\"",
            "protocol = \"icmp\"",
            "unknown variant `icmp`",
        ),
        (
            "state = \"available\"",
            "state = \"Available\"",
            "unknown variant `Available`",
        ),
        (
            "allowed_principals = [\"111111111111\"]",
            "allowed_principals = [\"all\"]",
            "invalid principal",
        ),
        (
            "snat_addresses = [\"10.2.0.100\"]",
            "snat_addresses = [\"10.2.0.300\"]",
            "invalid IP address syntax",
        ),
        (
            "service_id = \"vpce-svc-0d0000000000000d1\"",
            "service_name = \"com.privlink.vpce.local.vpce-svc-x\"",
            "invalid service name",
        ),
        (
            "# static_neighbours = [{ ip = \"10.1.0.10\", mac = \"02:00:00:00:00:01\" }]",
            "static_neighbours = [{ ip = \"10.1.0.10\", mac = \"02:00:00:00:00\" }]",
            "invalid mac address",
        ),
    ];
    for (from, to, message) in cases {
        assert!(DEFAULT_TOML.contains(from), "{from}");
        expect_syntax(&DEFAULT_TOML.replacen(from, to, 1), &[message]);
    }
}

#[test]
fn timeouts_accept_fractions() {
    let c = Config::from_toml_str("[timeouts]\narp_retry = 0.25\ntcp_closed = 1\n").unwrap();
    assert_eq!(c.timeouts.arp_retry, Duration::from_millis(250));
    assert_eq!(c.timeouts.tcp_closed, Duration::from_secs(1));
}

#[test]
fn load_names_the_file() {
    let dir = std::env::temp_dir().join(format!("privlink-mgmt-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.toml");
    std::fs::write(&good, DEFAULT_TOML).unwrap();
    assert_eq!(Config::load(&good).unwrap(), demo());

    let bad = dir.join("bad.toml");
    std::fs::write(&bad, DEFAULT_TOML.replace("10.1.0.100", "10.9.0.5")).unwrap();
    let e = Config::load(&bad).unwrap_err();
    assert_eq!(e.file(), Some(bad.as_path()));
    assert_eq!(
        e.to_string(),
        format!(
            "{}: endpoints[0].ip: endpoint vpce-0e0000000000000e1: ip 10.9.0.5 is outside \
             10.1.0.0/24 of vpc-0c0000000000000c1",
            bad.display()
        )
    );

    let typo = dir.join("typo.toml");
    std::fs::write(&typo, "[mgmt]\nsockt = \"/x\"\n").unwrap();
    let e = Config::load(&typo).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("{}: TOML parse error at line 2", typo.display())),
        "{e}"
    );

    let missing = dir.join("missing.toml");
    let e = Config::load(&missing).unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }));
    assert!(
        e.to_string()
            .starts_with(&format!("{}: cannot read: ", missing.display())),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

// --- validation, one test per check --------------------------------------------------------

#[test]
fn eal_args_unreadable() {
    let mut c = demo();
    c.eal.args[1] = "0,,1".into();
    expect(&c, "eal.args[1]", "\"0,,1\": cannot read this lcore list");
}

#[test]
fn workers_lcores_empty() {
    let mut c = demo();
    c.workers.lcores.clear();
    expect(
        &c,
        "workers.lcores",
        "at least one worker lcore is required",
    );
}

#[test]
fn workers_lcore_duplicate() {
    let mut c = demo();
    c.eal.args[1] = "0-2".into();
    c.workers.lcores = vec![1, 2, 1];
    expect(&c, "workers.lcores[2]", "lcore 1 is listed twice");
}

#[test]
fn workers_lcore_is_main() {
    let mut c = demo();
    c.workers.lcores = vec![0];
    expect(
        &c,
        "workers.lcores[0]",
        "lcore 0 is the EAL main lcore; workers run on the other EAL lcores",
    );
    // Without -l, EAL's main lcore is 0 as well.
    c.eal.args.drain(..2);
    expect(
        &c,
        "workers.lcores[0]",
        "lcore 0 is the EAL main lcore; workers run on the other EAL lcores",
    );
}

#[test]
fn workers_lcore_not_in_eal() {
    let mut c = demo();
    c.workers.lcores = vec![1, 2];
    expect(
        &c,
        "workers.lcores[1]",
        "lcore 2 is not among the EAL lcores 0,1",
    );
}

#[test]
fn workers_lcore_too_large() {
    let mut c = demo();
    c.eal.args.drain(..2);
    c.workers.lcores = vec![1, 5000];
    expect(&c, "workers.lcores[1]", "5000 is outside 0..=1023");
}

#[test]
fn workers_burst_out_of_range() {
    let mut c = demo();
    c.workers.burst = 0;
    expect(&c, "workers.burst", "0 is outside 1..=512");
    c.workers.burst = 513;
    expect(&c, "workers.burst", "513 is outside 1..=512");
}

#[test]
fn mgmt_stats_interval_out_of_range() {
    let mut c = demo();
    c.mgmt.stats_interval_ms = 9;
    expect(&c, "mgmt.stats_interval_ms", "9 is outside 10..=60000");
    c.mgmt.stats_interval_ms = 60_001;
    expect(&c, "mgmt.stats_interval_ms", "60001 is outside 10..=60000");
    c.mgmt.stats_interval_ms = 10;
    c.mgmt.stats_log = Some(std::path::PathBuf::new());
    expect(&c, "mgmt.stats_log", "must not be empty");
}

#[test]
fn workers_idle_sleep_out_of_range() {
    let mut c = demo();
    c.workers.idle_sleep_us = 2_000_000;
    expect(
        &c,
        "workers.idle_sleep_us",
        "2000000 is outside 0..=1000000",
    );
}

#[test]
fn flows_per_worker_is_bounded_by_what_a_flow_table_holds() {
    let mut c = demo();
    c.tables.flows_per_worker = (1 << 30) + 1;
    expect(
        &c,
        "tables.flows_per_worker",
        "1073741825 is outside 1024..=1073741824",
    );
    c.tables.flows_per_worker = 1 << 30;
    assert!(c.validate().is_ok());
}

#[test]
fn workers_stall_timeout_must_exceed_idle_sleep() {
    let mut c = demo();
    c.workers.stall_timeout_ms = 5;
    expect(&c, "workers.stall_timeout_ms", "5 is outside 10..=3600000");
    c.workers.stall_timeout_ms = 200;
    c.workers.idle_sleep_us = 200_000;
    expect(
        &c,
        "workers.stall_timeout_ms",
        "200 ms is not more than workers.idle_sleep_us (200000 µs): an idle worker would look stalled",
    );
    c.workers.stall_timeout_ms = 201;
    assert!(c.validate().is_ok());
    let parsed = Config::from_toml_str("[workers]\nstall_timeout_ms = 2500\n").unwrap();
    assert_eq!(parsed.workers.stall_timeout_ms, 2500);
    assert_eq!(Config::embedded_default().workers.stall_timeout_ms, 1000);
}

#[test]
fn port_name_empty() {
    let mut c = demo();
    c.ports[1].name.clear();
    expect(&c, "ports[1].name", "must not be empty");
}

#[test]
fn port_name_duplicate() {
    let mut c = demo();
    c.ports[1].name = "net_tap0".into();
    expect(
        &c,
        "ports[1].name",
        "port net_tap0 is declared twice (first at ports[0])",
    );
}

#[test]
fn port_mtu_out_of_range() {
    let mut c = demo();
    c.ports[0].mtu = Some(67);
    expect(&c, "ports[0].mtu", "67 is outside 68..=9702");
    c.ports[0].mtu = Some(9000);
    c.validate().unwrap();
}

#[test]
fn port_descriptors_not_power_of_two() {
    let mut c = demo();
    c.ports[1].rx_desc = 1000;
    expect(&c, "ports[1].rx_desc", "1000 is not a power of two");
    c.ports[1].rx_desc = 512;
    c.ports[1].tx_desc = 0;
    expect(&c, "ports[1].tx_desc", "0 is not a power of two");
}

#[test]
fn account_duplicate() {
    let mut c = demo();
    c.accounts[1].id = p("111111111111");
    expect(
        &c,
        "accounts[1].id",
        "account 111111111111 is declared twice (first at accounts[0])",
    );
}

#[test]
fn account_uid_duplicate() {
    let mut c = demo();
    c.accounts[0].uids = vec![1001];
    c.accounts[1].uids = vec![1002, 1001];
    expect(
        &c,
        "accounts[1].uids[1]",
        "uid 1001 already acts as account 111111111111",
    );
}

#[test]
fn vpc_unknown_port() {
    let mut c = demo();
    c.vpcs[1].port = "net_tap9".into();
    expect(&c, "vpcs[1].port", "no [[ports]] entry is named net_tap9");
}

#[test]
fn vpc_unknown_account() {
    let mut c = demo();
    c.vpcs[1].account = p("333333333333");
    expect(
        &c,
        "vpcs[1].account",
        "account 333333333333 is not declared in [[accounts]]",
    );
}

#[test]
fn vpc_attachment_rules_apply() {
    let mut c = demo();
    c.vpcs[1].gateway = Some(ip("10.1.0.254"));
    expect(
        &c,
        "vpcs[1].gateway",
        "vpc attachment vpc-0b0000000000000b1: gateway 10.1.0.254 is outside 10.2.0.0/24 of \
         vpc-0b0000000000000b1",
    );
    let mut c = demo();
    c.vpcs[1].vlan = Some(4095);
    expect(
        &c,
        "vpcs[1].vlan",
        "vpc attachment vpc-0b0000000000000b1: vlan 4095 is outside 1..=4094",
    );
    for mss in [0, 535, 9001] {
        let mut c = demo();
        c.vpcs[1].mss_clamp = Some(mss);
        expect(
            &c,
            "vpcs[1].mss_clamp",
            &format!("vpc attachment vpc-0b0000000000000b1: mss_clamp {mss} is outside 536..=9000"),
        );
    }
    let mut c = demo();
    c.vpcs[1].mss_clamp = Some(536);
    c.vpcs[0].mss_clamp = Some(9000);
    c.validate().unwrap();
    let mut c = demo();
    c.vpcs[1].vpc_id = c.vpcs[0].vpc_id;
    expect(
        &c,
        "vpcs[1].vpc_id",
        "vpc attachment vpc-0c0000000000000c1: id declared twice (first at vpcs[0])",
    );
    let mut c = demo();
    c.vpcs[1].port = "net_tap0".into();
    expect(
        &c,
        "vpcs[1].port",
        "vpc attachment vpc-0b0000000000000b1: port net_tap0 untagged already carries \
         vpc-0c0000000000000c1",
    );
    let mut c = demo();
    c.vpcs[0].address = Some(p("10.1.0.1/31"));
    expect(
        &c,
        "vpcs[0].address",
        "vpc attachment vpc-0c0000000000000c1: address 10.1.0.1/31 leaves no room for \
         endpoints (the prefix length must be at most 30)",
    );
}

#[test]
fn mgmt_socket_empty_or_too_long() {
    let mut c = demo();
    c.mgmt.socket = PathBuf::new();
    expect(&c, "mgmt.socket", "must not be empty");
    c.mgmt.socket = PathBuf::from(format!("/run/{}", "s".repeat(103)));
    expect(
        &c,
        "mgmt.socket",
        "the path is 108 bytes; a Unix socket path holds at most 107",
    );
    c.mgmt.socket = PathBuf::from(format!("/run/{}", "s".repeat(102)));
    c.validate().unwrap();
}

#[test]
fn mgmt_state_dir_empty() {
    let mut c = demo();
    c.mgmt.state_dir = PathBuf::new();
    expect(&c, "mgmt.state_dir", "must not be empty");
}

#[test]
fn mgmt_region_invalid() {
    let mut c = demo();
    c.mgmt.region = "US_East".into();
    expect(
        &c,
        "mgmt.region",
        "invalid region \"US_East\": expected 1 to 32 of a-z, 0-9 and '-', not starting or \
         ending with '-'",
    );
}

#[test]
fn tables_flows_too_small() {
    let mut c = demo();
    c.tables.flows_per_worker = 1023;
    expect(
        &c,
        "tables.flows_per_worker",
        "1023 is outside 1024..=1073741824",
    );
}

#[test]
fn tables_snat_quarantine_range() {
    let mut c = demo();
    assert_eq!(c.tables.snat_quarantine, 262_144);
    c.tables.snat_quarantine = 1000;
    expect(
        &c,
        "tables.snat_quarantine",
        "1000 is outside 1024..=67108864",
    );
    c.tables.snat_quarantine = 1 << 27;
    expect(
        &c,
        "tables.snat_quarantine",
        "134217728 is outside 1024..=67108864",
    );
}

#[test]
fn flow_logs_settings() {
    let c = Config::from_toml_str("[flow_logs]\npath = \"/tmp/f.log\"\n").unwrap();
    let f = c.flow_logs.unwrap();
    assert_eq!((f.interval_s, f.max_bytes), (60, 100 << 20));
    let e = Config::from_toml_str("[flow_logs]\ninterval_s = 0\n").unwrap_err();
    assert!(
        e.to_string()
            .contains("flow_logs.interval_s: 0 is outside 1..=600"),
        "{e}"
    );
    let e = Config::from_toml_str("[flow_logs]\nmax_bytes = 10\n").unwrap_err();
    assert!(e.to_string().contains("flow_logs.max_bytes"), "{e}");
}

#[test]
fn fragment_settings_ranges() {
    let mut c = demo();
    assert_eq!(
        (c.tables.fragment_datagrams, c.tables.fragments_held),
        (4096, 256)
    );
    assert_eq!(c.timeouts.fragment, Duration::from_secs(1));
    c.tables.fragment_datagrams = 15;
    expect(
        &c,
        "tables.fragment_datagrams",
        "15 is outside 16..=1048576",
    );
    c.tables.fragment_datagrams = 16;
    c.tables.fragments_held = 65_537;
    expect(&c, "tables.fragments_held", "65537 is outside 0..=65536");
    c.tables.fragments_held = 0;
    c.validate().unwrap();
    let c = Config::from_toml_str("[timeouts]\nfragment = 0.005\n").unwrap_err();
    assert!(
        c.to_string()
            .contains("timeouts.fragment: 0.005 s is outside [0.01, 60] seconds"),
        "{c}"
    );
    let c = Config::from_toml_str("[timeouts]\nfragment = 0.5\n").unwrap();
    assert_eq!(c.timeouts.fragment, Duration::from_millis(500));
}

#[test]
fn limits_defaults_and_endpoint_shares() {
    let c = Config::from_toml_str("").unwrap();
    let l = &c.limits;
    assert_eq!(
        (l.flows_per_client, l.half_open_per_client()),
        (65_536, 4096)
    );
    // Three quarters and half of the flow tables: 262144 flows x 1 worker.
    let capacity = 262_144;
    assert_eq!(l.flows_per_endpoint(capacity), 196_608);
    assert_eq!(l.half_open_per_endpoint(capacity), 131_072);
    // An explicit endpoint flow limit caps the half-open default with it.
    let c = Config::from_toml_str("[limits]\nflows_per_endpoint = 1000\n").unwrap();
    assert_eq!(c.limits.half_open_per_endpoint(capacity), 1000);
    // Likewise for clients.
    let c = Config::from_toml_str("[limits]\nflows_per_client = 256\n").unwrap();
    assert_eq!(c.limits.half_open_per_client(), 256);
    let c = Config::from_toml_str(
        "[limits]\nflows_per_client = 0\nhalf_open_per_client = 0\nflows_per_endpoint = 0\nhalf_open_per_endpoint = 0\n",
    )
    .unwrap();
    assert_eq!(c.limits.flows_per_endpoint(capacity), 0, "0 = no limit");
    assert_eq!(c.limits.half_open_per_endpoint(capacity), 0);
    assert_eq!(c.limits.half_open_per_client(), 0);
    expect_syntax("[limits]\nflows_per_clients = 3\n", &["flows_per_clients"]);
}

#[test]
fn limits_half_open_above_flows() {
    let mut c = demo();
    c.validate().unwrap();
    c.limits.half_open_per_client = Some(70_000);
    expect(
        &c,
        "limits.half_open_per_client",
        "70000 is above limits.flows_per_client (65536)",
    );
    c.limits.flows_per_client = 0; // no flow limit: any half-open limit is fine
    c.validate().unwrap();
    c.limits.flows_per_endpoint = Some(10_000);
    c.limits.half_open_per_endpoint = Some(10_001);
    expect(
        &c,
        "limits.half_open_per_endpoint",
        "10001 is above limits.flows_per_endpoint (10000)",
    );
    c.limits.half_open_per_endpoint = None;
    c.validate().unwrap();
}

#[test]
fn tables_neighbours_too_small() {
    let mut c = demo();
    c.tables.neighbours = 0;
    expect(&c, "tables.neighbours", "0 is outside 16..=4294967295");
}

#[test]
fn tables_maglev_size_not_prime() {
    let mut c = demo();
    c.tables.maglev_size = 65_536;
    expect(&c, "tables.maglev_size", "65536 is not prime");
    c.tables.maglev_size = 1;
    expect(&c, "tables.maglev_size", "1 is not prime");
    // Two targets per listener in the demo: Maglev needs more slots than targets.
    for prime in [3, 251, 65_537, 4_294_967_291] {
        c.tables.maglev_size = prime;
        c.validate().unwrap();
    }
}

#[test]
fn tables_maglev_size_below_target_count() {
    let mut c = demo();
    c.tables.maglev_size = 3;
    c.services[0].listeners[1].targets.extend([
        Target::new(ip("10.2.0.13"), 9000),
        Target::new(ip("10.2.0.14"), 9000),
    ]);
    expect(
        &c,
        "services[0].listeners[1].targets",
        "targets of service vpce-svc-0d0000000000000d1 listener udp/9000: 4 would exceed \
         the limit of 2 (tables.maglev_size - 1)",
    );
    // As many targets as slots is one too many (Maglev refuses it at build time).
    c.services[0].listeners[1].targets.truncate(3);
    c.tables.maglev_size = 3;
    expect(
        &c,
        "services[0].listeners[1].targets",
        "targets of service vpce-svc-0d0000000000000d1 listener udp/9000: 3 would exceed \
         the limit of 2 (tables.maglev_size - 1)",
    );
    c.tables.maglev_size = 5;
    c.validate().unwrap();
}

#[test]
fn quotas_bound_the_declared_objects() {
    let mut c = demo();
    c.quotas.targets_per_listener = 1;
    expect(
        &c,
        "services[0].listeners[0].targets",
        "targets of service vpce-svc-0d0000000000000d1 listener tcp/80: 2 would exceed \
         the limit of 1 (quotas.targets_per_listener)",
    );
    let mut c = demo();
    c.quotas.endpoints_per_vpc = 0;
    expect(&c, "quotas.endpoints_per_vpc", "0 is outside 1..=1000000");
}

#[test]
fn timeouts_zero_or_too_long() {
    let mut c = demo();
    c.timeouts.tcp_closed = Duration::ZERO;
    expect(
        &c,
        "timeouts.tcp_closed",
        "0 s is outside (0, 604800] seconds",
    );
    let mut c = demo();
    c.timeouts.neighbour_ttl = Duration::from_secs(604_801);
    expect(
        &c,
        "timeouts.neighbour_ttl",
        "604801 s is outside (0, 604800] seconds",
    );
}

#[test]
fn timeouts_arp_tries_out_of_range() {
    let mut c = demo();
    c.timeouts.arp_tries = 0;
    expect(&c, "timeouts.arp_tries", "0 is outside 1..=100");
}

#[test]
fn endpoint_without_service() {
    let mut c = demo();
    c.endpoints[0].service_id = None;
    expect(
        &c,
        "endpoints[0]",
        "an endpoint needs service_id or service_name",
    );
    assert!(c.state().endpoints.is_empty(), "left out of the state");
}

#[test]
fn endpoint_by_service_name() {
    let text = DEFAULT_TOML.replace("service_id = \"vpce-svc-0d0000000000000d1\"\n#", "#");
    let text = text.replace("# or: service_name", "service_name");
    let c = Config::from_toml_str(&text).unwrap();
    assert_eq!(c.endpoints[0].service_id, None);
    assert_eq!(c.state(), demo().state());
}

#[test]
fn endpoint_service_id_and_name_disagree() {
    let mut c = demo();
    c.endpoints[0].service_name = Some(p("com.privlink.vpce.local.vpce-svc-0d0000000000000d2"));
    expect(
        &c,
        "endpoints[0].service_name",
        "service_id vpce-svc-0d0000000000000d1 and service_name \
         com.privlink.vpce.local.vpce-svc-0d0000000000000d2 name different services",
    );
    c.endpoints[0].service_name = Some(p("com.privlink.vpce.local.vpce-svc-0d0000000000000d1"));
    c.validate().unwrap();
}

#[test]
fn endpoint_service_name_in_another_region() {
    let mut c = demo();
    c.endpoints[0].service_id = None;
    c.endpoints[0].service_name = Some(p("com.privlink.vpce.us-east-1.vpce-svc-0d0000000000000d1"));
    expect(
        &c,
        "endpoints[0].service_name",
        "service name com.privlink.vpce.us-east-1.vpce-svc-0d0000000000000d1 is for region \
         us-east-1; this appliance serves region local (mgmt.region)",
    );
}

#[test]
fn declared_objects_follow_the_model_rules() {
    let mut c = demo();
    c.endpoints[0].ip = Some(ip("10.9.0.5"));
    expect(
        &c,
        "endpoints[0].ip",
        "endpoint vpce-0e0000000000000e1: ip 10.9.0.5 is outside 10.1.0.0/24 of \
         vpc-0c0000000000000c1",
    );
    let e = c.validate().unwrap_err();
    match e.problem() {
        Some(ConfigProblem::Model(m)) => assert_eq!(m.code(), "InvalidParameterValue"),
        other => panic!("{other:?}"),
    }
    assert!(std::error::Error::source(&e).is_some());

    let mut c = demo();
    c.services[0].snat_addresses.clear();
    expect(
        &c,
        "services[0].snat_addresses",
        "service vpce-svc-0d0000000000000d1: at least one snat address is required",
    );
    let mut c = demo();
    c.endpoints[0].ip = Some(ip("10.1.0.1"));
    expect(
        &c,
        "endpoints[0].ip",
        "endpoint vpce-0e0000000000000e1: ip 10.1.0.1 is already in use in \
         vpc-0c0000000000000c1 by the appliance itself",
    );
    let mut c = demo();
    c.services[0].listeners[0].targets[0].ip = ip("10.3.0.1").into();
    expect(
        &c,
        "services[0].listeners[0].targets[0].ip",
        "service vpce-svc-0d0000000000000d1 listener tcp/80 target 10.3.0.1:8080: target \
         10.3.0.1 is outside 10.2.0.0/24 of vpc-0b0000000000000b1 and the attachment has no \
         gateway",
    );
}

#[test]
fn declared_listener_settings_and_principal_lists_name_their_key() {
    let text = DEFAULT_TOML.replace(
        "port = 9000\n",
        "port = 9000\nhealth_check_path = \"/a b\"\n",
    );
    let e = Config::from_toml_str(&text).unwrap_err();
    assert_eq!(
        e.to_string(),
        "services[0].listeners[1].health_check_path: service vpce-svc-0d0000000000000d1 \
         listener udp/9000: health_check_path has byte 0x20 at offset 2: only visible ASCII \
         (0x21..=0x7e) may go into the HTTP request line"
    );
    let mut c = demo();
    c.services[0].listeners[0].health_check_timeout_seconds = 5;
    expect(
        &c,
        "services[0].listeners[0].health_check_timeout_seconds",
        "service vpce-svc-0d0000000000000d1 listener tcp/80: health_check_timeout_seconds 5 \
         must be lower than health_check_interval_seconds 5 (the cloud's rule: a check times \
         out before the next one starts)",
    );
    let mut c = demo();
    c.services[0].auto_accept_principals = vec![Principal::Any, Principal::Any];
    expect(
        &c,
        "services[0].auto_accept_principals[1]",
        "service vpce-svc-0d0000000000000d1: principal * listed twice (first at \
         services[0].auto_accept_principals[0])",
    );
}

#[test]
fn file_mode() {
    assert_eq!(p::<FileMode>("0660").bits(), 0o660);
    assert_eq!(p::<FileMode>("600").to_string(), "0600");
    assert_eq!(p::<FileMode>("0").to_string(), "0000");
    for bad in ["", "0o660", "0888", "1777", "00660", "-660", "rw"] {
        assert_eq!(
            bad.parse::<FileMode>().unwrap_err().kind(),
            ValueKind::FileMode,
            "{bad}"
        );
    }
    assert!(FileMode::new(0o1000).is_none());
}

#[test]
fn primes() {
    let small: Vec<u32> = (0..30).filter(|&n| is_prime(n)).collect();
    assert_eq!(small, [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]);
    assert!(is_prime(65_537) && !is_prime(65_535) && is_prime(u32::MAX - 4));
}

/// The layout documented for users (the issue's example), placeholders filled in.
#[test]
fn documented_example_parses() {
    let c = Config::from_toml_str(
        r#"
[eal]
args = ["--no-pci", "--vdev=net_tap0,iface=dtap0", "--vdev=net_tap1,iface=dtap1"]
no_huge_fallback = true

[workers]
lcores = [1]
burst = 32
idle_sleep_us = 0

[[ports]]
name = "net_tap0"
mtu = 1500
rx_desc = 1024
tx_desc = 1024
promiscuous = true

[[vpcs]]
vpc_id = "vpc-0c0000000000000c1"
account = "111111111111"
port = "net_tap0"
vlan = 100
address = "10.1.0.1/24"
gateway = "10.1.0.254"
static_neighbours = [{ ip = "10.1.0.10", mac = "02:00:00:00:00:01" }]
mss_clamp = 1360

[[accounts]]
id = "111111111111"
name = "demo-consumer"
uids = [1001]

[mgmt]
socket = "/run/privlink/privlink.sock"
socket_mode = "0660"
state_dir = "/var/lib/privlink"
region = "local"

[tables]
flows_per_worker = 262144
neighbours = 4096
arp_pending_packets = 256
maglev_size = 65537

[timeouts]
tcp_established = 350
tcp_syn = 20
tcp_closing = 60
tcp_closed = 5
udp = 120
icmp = 30
arp_retry = 1.0
arp_tries = 3
neighbour_ttl = 600
"#,
    )
    .unwrap();
    let v = &c.vpcs[0];
    assert_eq!((v.vlan, v.gateway), (Some(100), Some(ip("10.1.0.254"))));
    assert_eq!(v.static_neighbours[0].mac.octets(), [2, 0, 0, 0, 0, 1]);
    assert_eq!(v.mss_clamp, Some(1360));
    assert_eq!(c.account_for_uid(1001).unwrap().id, p("111111111111"));
    assert_eq!(c.ports[0].mtu, Some(1500));
}

const HA: &str = r#"
[ha]
node = "a"
key = "00112233445566778899aabbccddeeff"
nodes = [
    { name = "a", sync = "127.0.0.1:7411", priority = 200 },
    { name = "b", sync = "127.0.0.1:7412" },
]
"#;

#[test]
fn ha_section_parses_with_defaults() {
    let c = Config::from_toml_str(&format!("{DEFAULT_TOML}{HA}")).unwrap();
    let ha = c.ha.as_ref().unwrap();
    assert_eq!(ha.me(), Some(0));
    assert_eq!(
        (ha.heartbeat_ms, ha.dead_after, ha.preempt),
        (100, 3, false)
    );
    assert_eq!(ha.nodes[1].priority, 100);
    assert_eq!(ha.key_bytes().unwrap().len(), 16);
    assert!(Config::embedded_default().ha.is_none());
}

#[test]
fn ha_section_errors_name_the_key() {
    let good = Config::from_toml_str(&format!("{DEFAULT_TOML}{HA}")).unwrap();
    let with = |f: &dyn Fn(&mut HaConfig)| {
        let mut c = good.clone();
        f(c.ha.as_mut().unwrap());
        c
    };
    expect_part(
        &with(&|h| h.nodes.truncate(1)),
        "ha.nodes",
        "an HA pair has exactly two nodes, not 1",
    );
    expect_part(
        &with(&|h| h.node = Some("c".into())),
        "ha.node",
        "\"c\" is not one of ha.nodes",
    );
    expect_part(
        &with(&|h| h.nodes[1].name = "a".into()),
        "ha.nodes[1].name",
        "listed twice",
    );
    expect_part(
        &with(&|h| h.nodes[1].sync = h.nodes[0].sync),
        "ha.nodes[1].sync",
        "same sync address",
    );
    expect_part(
        &with(&|h| h.key = Some("abc".into())),
        "ha.key",
        "at least 32",
    );
    expect_part(
        &with(&|h| h.key = Some("zz112233445566778899aabbccddeeff".into())),
        "ha.key",
        "hex digits only",
    );
    expect_part(
        &with(&|h| h.key_file = Some("/k".into())),
        "ha.key",
        "exactly one of key and key_file",
    );
    expect_part(
        &with(&|h| h.heartbeat_ms = 5),
        "ha.heartbeat_ms",
        "5 is outside 10..=10000",
    );
    expect_part(
        &with(&|h| h.dead_after = 1),
        "ha.dead_after",
        "1 is outside 2..=100",
    );
}

/// As [`expect`], the problem's message containing `part`.
fn expect_part(config: &Config, path: &str, part: &str) {
    let e = config.validate().expect_err("must be invalid");
    assert_eq!(
        e.path().map(ToString::to_string).as_deref(),
        Some(path),
        "{e}"
    );
    assert!(e.to_string().contains(part), "{e}");
}

const CLUSTER: &str = r#"
[cluster]
etcd = ["http://127.0.0.1:2379", "http://10.0.0.2:2379/"]
"#;

#[test]
fn cluster_section_parses_with_defaults() {
    let c = Config::from_toml_str(&format!("{DEFAULT_TOML}{CLUSTER}")).unwrap();
    let cl = c.cluster.as_ref().unwrap();
    assert_eq!(
        (
            cl.prefix.as_str(),
            cl.timeout_ms,
            cl.max_txn_ops,
            cl.node.as_deref()
        ),
        ("/privlink/", 2000, 128, None)
    );
    assert!(Config::embedded_default().cluster.is_none());
}

#[test]
fn cluster_section_errors_name_the_key() {
    let good = Config::from_toml_str(&format!("{DEFAULT_TOML}{CLUSTER}")).unwrap();
    let with = |f: &dyn Fn(&mut crate::config::ClusterConfig)| {
        let mut c = good.clone();
        f(c.cluster.as_mut().unwrap());
        c
    };
    expect_part(&with(&|c| c.etcd.clear()), "cluster.etcd", "empty");
    expect_part(
        &with(&|c| c.etcd[1] = "https://10.0.0.2:2379".into()),
        "cluster.etcd[1]",
        "https is not supported",
    );
    expect_part(
        &with(&|c| c.etcd[0] = "http://127.0.0.1".into()),
        "cluster.etcd[0]",
        "has no port",
    );
    expect_part(
        &with(&|c| c.etcd[0] = "http://127.0.0.1:2379/v3".into()),
        "cluster.etcd[0]",
        "not an http://host:port URL",
    );
    expect_part(
        &with(&|c| c.etcd[0] = "127.0.0.1:2379".into()),
        "cluster.etcd[0]",
        "not an http://host:port URL",
    );
    for bad in ["privlink/", "/privlink", "/", "/a//b/", "/with space/"] {
        expect_part(
            &with(&|c| c.prefix = bad.into()),
            "cluster.prefix",
            "is not a key prefix",
        );
    }
    expect_part(
        &with(&|c| c.timeout_ms = 50),
        "cluster.timeout_ms",
        "50 is outside 100..=60000",
    );
    expect_part(
        &with(&|c| c.node = Some(String::new())),
        "cluster.node",
        "is not a node name",
    );
    expect_part(
        &with(&|c| c.max_txn_ops = 1),
        "cluster.max_txn_ops",
        "1 is outside",
    );
}
