use super::*;
use crate::testing::{ip, p};

const CONSUMER: &str = "vpc-0c0000000000000c1";
const PROVIDER: &str = "vpc-0b0000000000000b1";
const SERVICE: &str = "vpce-svc-0d0000000000000d1";
const ENDPOINT: &str = "vpce-0e0000000000000e1";

fn attachment(vpc: &str, account: &str, port: &str, address: &str) -> VpcAttachment {
    VpcAttachment {
        vpc_id: p(vpc),
        account: p(account),
        port: port.to_owned(),
        vlan: None,
        address: Some(p(address)),
        gateway: None,
        gateway6: None,
        static_neighbours6: vec![],
        static_neighbours: vec![],
        mss_clamp: None,
        address6: None,
    }
}

/// The demo topology: consumer 10.1.0.0/24 (account 1…), provider 10.2.0.0/24 (2…).
fn attachments() -> Vec<VpcAttachment> {
    vec![
        attachment(CONSUMER, "111111111111", "net_tap0", "10.1.0.1/24"),
        attachment(PROVIDER, "222222222222", "net_tap1", "10.2.0.1/24"),
    ]
}

fn service() -> Service {
    Service {
        id: p(SERVICE),
        owner: p("222222222222"),
        vpc_id: p(PROVIDER),
        listeners: vec![
            Listener::new(
                Protocol::Tcp,
                80,
                vec![
                    Target::new(ip("10.2.0.11"), 8080),
                    Target::new(ip("10.2.0.12"), 8080),
                ],
            ),
            Listener::new(
                Protocol::Udp,
                9000,
                vec![
                    Target::new(ip("10.2.0.11"), 9000),
                    Target::new(ip("10.2.0.12"), 9000),
                ],
            ),
        ],
        snat_addresses: vec![ip("10.2.0.100").into()],
        acceptance_required: false,
        allowed_principals: vec![Principal::Account(p("111111111111"))],
        auto_accept_principals: Vec::new(),
        connection_limits: Vec::new(),
        supported_ip_address_types: vec![IpFamily::Ipv4],
    }
}

fn endpoint() -> Endpoint {
    crate::testing::endpoint(ENDPOINT, CONSUMER, SERVICE, Some(ip("10.1.0.100")))
}

fn state() -> State {
    State {
        services: vec![service()],
        endpoints: vec![endpoint()].into(),
        security_groups: vec![],
        ..State::default()
    }
}

/// Validates, expecting an error with this path, message and code.
fn expect(state: &State, atts: &[VpcAttachment], path: &str, message: &str, code: &str) {
    let e = state.validate(atts).expect_err("must be invalid");
    assert_eq!(e.path().to_string(), path, "{e}");
    assert_eq!(e.to_string(), message);
    assert_eq!(e.code(), code, "{e}");
}

fn expect_attachments(atts: &[VpcAttachment], path: &str, message: &str, code: &str) {
    let e = validate_attachments(atts).expect_err("must be invalid");
    assert_eq!(e.path().to_string(), path, "{e}");
    assert_eq!(e.to_string(), message);
    assert_eq!(e.code(), code, "{e}");
}

// --- values ----------------------------------------------------------------------------

#[test]
fn protocol() {
    assert_eq!(Protocol::Tcp.number(), 6);
    assert_eq!(Protocol::Udp.number(), 17);
    assert_eq!(Protocol::from_number(17), Some(Protocol::Udp));
    assert_eq!(Protocol::from_number(1), None);
    assert_eq!(serde_json::to_string(&Protocol::Tcp).unwrap(), "\"tcp\"");
    assert_eq!(
        serde_json::from_str::<Protocol>("\"udp\"").unwrap(),
        Protocol::Udp
    );
    assert!(serde_json::from_str::<Protocol>("\"TCP\"").is_err());
    assert_eq!(p::<Protocol>("tcp"), Protocol::Tcp);
    assert_eq!(
        "icmp".parse::<Protocol>().unwrap_err().kind(),
        ValueKind::Protocol
    );
}

#[test]
fn endpoint_states() {
    let all = [
        (EndpointState::PendingAcceptance, "pendingAcceptance"),
        (EndpointState::Available, "available"),
        (EndpointState::Rejected, "rejected"),
        (EndpointState::Deleting, "deleting"),
        (EndpointState::Deleted, "deleted"),
        (EndpointState::Failed, "failed"),
    ];
    for (state, text) in all {
        assert_eq!(
            serde_json::to_string(&state).unwrap(),
            format!("\"{text}\"")
        );
        assert_eq!(state.to_string(), text);
        assert_eq!(p::<EndpointState>(text), state);
        assert_eq!(
            state.forwards(),
            state == EndpointState::Available,
            "{text}"
        );
        assert_eq!(
            state.holds_address(),
            state != EndpointState::Deleted,
            "{text}"
        );
    }
    assert!(serde_json::from_str::<EndpointState>("\"pending_acceptance\"").is_err());
}

#[test]
fn targets_and_principals() {
    let t: Target = serde_json::from_str(r#"{"ip": "10.2.0.11", "port": 8080}"#).unwrap();
    assert_eq!(t, Target::new(ip("10.2.0.11"), 8080));
    assert_eq!((t.weight, t.state), (1, TargetState::Registered));
    assert_eq!(t.addr().to_string(), "10.2.0.11:8080");
    assert!(t.takes_new_flows());
    let zero = Target {
        weight: 0,
        ..t.clone()
    };
    assert!(!zero.takes_new_flows());
    let draining: Target =
        serde_json::from_str(r#"{"ip": "10.2.0.11", "port": 1, "state": "draining"}"#).unwrap();
    assert_eq!(draining.state, TargetState::Draining);
    assert!(!draining.takes_new_flows());

    assert_eq!(p::<Principal>("*"), Principal::Any);
    let a: AccountId = p("111111111111");
    assert_eq!(p::<Principal>("111111111111"), Principal::Account(a));
    assert_eq!(serde_json::to_string(&Principal::Any).unwrap(), "\"*\"");
    assert_eq!(
        "**".parse::<Principal>().unwrap_err().kind(),
        ValueKind::Principal
    );
    let s = service();
    assert!(s.allows(a), "allowed principal");
    assert!(s.allows(s.owner), "owner");
    assert!(!s.allows(p("333333333333")));
    assert!(Service {
        allowed_principals: vec![Principal::Any],
        ..service()
    }
    .allows(p("333333333333")));
    assert_eq!(
        s.name("local"),
        "com.privlink.vpce.local.vpce-svc-0d0000000000000d1"
    );
    assert_eq!(s.listener(Protocol::Udp, 9000).unwrap().port, 9000);
    assert!(s.listener(Protocol::Udp, 80).is_none());
}

// --- serde -----------------------------------------------------------------------------

#[test]
fn state_round_trips_through_json() {
    let mut st = state();
    st.endpoints[0].security_group_ids = vec![p("sg-0123456789abcdef0"), p("sg-1a2b3c4d")];
    st.endpoints[0].policy = Some(serde_json::json!({
        "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*"}]
    }));
    st.services[0].listeners[0].targets[1].weight = 0;
    st.services[0].listeners[0].targets[1].state = TargetState::Draining;
    st.services[0].allowed_principals.push(Principal::Any);
    let mut pending = endpoint();
    pending.id = p("vpce-0e0000000000000e2");
    pending.ip = Some(ip("10.1.0.101"));
    pending.state = EndpointState::PendingAcceptance;
    st.endpoints.push(pending);

    let json = serde_json::to_string_pretty(&st).unwrap();
    assert_eq!(serde_json::from_str::<State>(&json).unwrap(), st);
    // The names other tools see.
    for key in [
        "\"snat_addresses\"",
        "\"acceptance_required\"",
        "\"allowed_principals\"",
        "\"service_id\"",
        "\"security_group_ids\"",
        "\"pendingAcceptance\"",
        "\"draining\"",
        "\"vpce-svc-0d0000000000000d1\"",
    ] {
        assert!(json.contains(key), "{key} in {json}");
    }
}

#[test]
fn attachment_and_account_round_trip_through_json() {
    let mut a = attachments().remove(0);
    a.vlan = Some(100);
    a.gateway = Some(ip("10.1.0.254"));
    a.static_neighbours = vec![StaticNeighbour {
        ip: ip("10.1.0.10"),
        mac: p("02:00:00:00:00:01"),
    }];
    let json = serde_json::to_string(&a).unwrap();
    assert!(json.contains(r#""address":"10.1.0.1/24""#), "{json}");
    assert!(json.contains(r#""mac":"02:00:00:00:00:01""#), "{json}");
    assert_eq!(serde_json::from_str::<VpcAttachment>(&json).unwrap(), a);

    let account = Account {
        id: p("111111111111"),
        name: "demo-consumer".into(),
        uids: vec![1001, 1002],
    };
    let json = serde_json::to_string(&account).unwrap();
    assert_eq!(serde_json::from_str::<Account>(&json).unwrap(), account);
    let minimal: Account = serde_json::from_str(r#"{"id": "111111111111"}"#).unwrap();
    assert_eq!((minimal.name.as_str(), minimal.uids.len()), ("", 0));
}

#[test]
fn serde_defaults_and_strictness() {
    let s: Service = serde_json::from_str(&format!(
        r#"{{"id": "{SERVICE}", "owner": "222222222222", "vpc_id": "{PROVIDER}"}}"#
    ))
    .unwrap();
    assert!(s.acceptance_required, "the cloud's default");
    assert!(s.listeners.is_empty() && s.snat_addresses.is_empty());
    assert!(s.allowed_principals.is_empty());

    let e = serde_json::from_str::<Endpoint>(&format!(
        r#"{{"id": "{ENDPOINT}", "owner": "111111111111", "vpc_id": "{CONSUMER}",
            "service_id": "{SERVICE}", "ip": "10.1.0.100", "state": "available",
            "polciy": {{}}}}"#
    ))
    .unwrap_err();
    assert!(e.to_string().contains("unknown field `polciy`"), "{e}");
    let e = serde_json::from_str::<Endpoint>(&format!(
        r#"{{"id": "{ENDPOINT}", "owner": "111111111111", "vpc_id": "vpc-bad",
            "service_id": "{SERVICE}", "ip": "10.1.0.100", "state": "available"}}"#
    ))
    .unwrap_err();
    assert!(e.to_string().contains(r#"invalid vpc id "vpc-bad""#), "{e}");
    assert!(serde_json::from_str::<State>(r#"{"services": [], "x": 1}"#).is_err());
    assert_eq!(
        serde_json::from_str::<State>("{}").unwrap(),
        State::default()
    );
}

#[test]
fn key_paths() {
    let path = KeyPath::item("services", 0)
        .key("listeners")
        .index(1)
        .key("port");
    assert_eq!(path.to_string(), "services[0].listeners[1].port");
    assert_eq!(KeyPath::new().to_string(), "");
    assert_eq!(path.segments().len(), 5);
}

// --- validation ------------------------------------------------------------------------

#[test]
fn demo_state_is_valid() {
    validate_attachments(&attachments()).unwrap();
    state().validate(&attachments()).unwrap();
    State::default().validate(&[]).unwrap();
}

#[test]
fn endpoint_ip_outside_prefix() {
    let mut st = state();
    st.endpoints[0].ip = Some(ip("10.9.0.5"));
    expect(
        &st,
        &attachments(),
        "endpoints[0].ip",
        "endpoint vpce-0e0000000000000e1: ip 10.9.0.5 is outside 10.1.0.0/24 of vpc-0c0000000000000c1",
        "InvalidParameterValue",
    );
}

#[test]
fn endpoint_ip_is_network_or_broadcast() {
    let mut st = state();
    st.endpoints[0].ip = Some(ip("10.1.0.0"));
    expect(
        &st,
        &attachments(),
        "endpoints[0].ip",
        "endpoint vpce-0e0000000000000e1: ip 10.1.0.0 is the network address of 10.1.0.0/24 in vpc-0c0000000000000c1",
        "InvalidParameterValue",
    );
    st.endpoints[0].ip = Some(ip("10.1.0.255"));
    expect(
        &st,
        &attachments(),
        "endpoints[0].ip",
        "endpoint vpce-0e0000000000000e1: ip 10.1.0.255 is the broadcast address of 10.1.0.0/24 in vpc-0c0000000000000c1",
        "InvalidParameterValue",
    );
}

#[test]
fn endpoint_ip_is_the_appliance_address() {
    let mut st = state();
    st.endpoints[0].ip = Some(ip("10.1.0.1"));
    expect(
        &st,
        &attachments(),
        "endpoints[0].ip",
        "endpoint vpce-0e0000000000000e1: ip 10.1.0.1 is already in use in vpc-0c0000000000000c1 by the appliance itself",
        "InvalidIpAddress.InUse",
    );
}

#[test]
fn endpoint_ip_is_the_gateway_or_a_neighbour() {
    let mut atts = attachments();
    atts[0].gateway = Some(ip("10.1.0.254"));
    atts[0].static_neighbours = vec![StaticNeighbour {
        ip: ip("10.1.0.10"),
        mac: p("02:00:00:00:00:01"),
    }];
    let mut st = state();
    st.endpoints[0].ip = Some(ip("10.1.0.254"));
    expect(
        &st,
        &atts,
        "endpoints[0].ip",
        "endpoint vpce-0e0000000000000e1: ip 10.1.0.254 is already in use in vpc-0c0000000000000c1 by the gateway",
        "InvalidIpAddress.InUse",
    );
    st.endpoints[0].ip = Some(ip("10.1.0.10"));
    expect(
        &st,
        &atts,
        "endpoints[0].ip",
        "endpoint vpce-0e0000000000000e1: ip 10.1.0.10 is already in use in vpc-0c0000000000000c1 by a static neighbour",
        "InvalidIpAddress.InUse",
    );
}

#[test]
fn two_endpoints_share_an_ip() {
    let mut st = state();
    let mut second = endpoint();
    second.id = p("vpce-0e0000000000000e2");
    st.endpoints.push(second.clone());
    expect(
        &st,
        &attachments(),
        "endpoints[1].ip",
        "endpoint vpce-0e0000000000000e2: ip 10.1.0.100 is already in use in vpc-0c0000000000000c1 by endpoint vpce-0e0000000000000e1",
        "InvalidIpAddress.InUse",
    );

    // A deleted endpoint holds no address.
    st.endpoints[0].state = EndpointState::Deleted;
    st.validate(&attachments()).unwrap();

    // The same address in another VPC is another address.
    let mut atts = attachments();
    atts.push(attachment(
        "vpc-1a2b3c4d",
        "111111111111",
        "net_tap0",
        "10.1.0.1/24",
    ));
    atts[2].vlan = Some(7);
    let mut st = state();
    second.vpc_id = p("vpc-1a2b3c4d");
    st.endpoints.push(second);
    st.validate(&atts).unwrap();
}

#[test]
fn endpoint_ip_is_a_snat_address() {
    // A consumer endpoint inside the provider VPC itself.
    let mut st = state();
    st.endpoints[0].owner = p("222222222222");
    st.endpoints[0].vpc_id = p(PROVIDER);
    st.endpoints[0].ip = Some(ip("10.2.0.100"));
    expect(
        &st,
        &attachments(),
        "endpoints[0].ip",
        "endpoint vpce-0e0000000000000e1: ip 10.2.0.100 is already in use in vpc-0b0000000000000b1 by service vpce-svc-0d0000000000000d1 as a snat address",
        "InvalidIpAddress.InUse",
    );
    st.endpoints[0].ip = Some(ip("10.2.0.101"));
    st.validate(&attachments()).unwrap();
}

#[test]
fn endpoint_vpc_not_attached() {
    let mut st = state();
    st.endpoints[0].vpc_id = p("vpc-deadbeef");
    expect(
        &st,
        &attachments(),
        "endpoints[0].vpc_id",
        "endpoint vpce-0e0000000000000e1: vpc-deadbeef has no attachment on this appliance",
        "InvalidVpcId.NotFound",
    );
}

#[test]
fn endpoint_owner_does_not_own_vpc() {
    let mut st = state();
    st.endpoints[0].owner = p("222222222222");
    expect(
        &st,
        &attachments(),
        "endpoints[0].owner",
        "endpoint vpce-0e0000000000000e1: owner 222222222222 does not own vpc-0c0000000000000c1 (account 111111111111 does)",
        "InvalidVpcId.NotFound",
    );
}

#[test]
fn endpoint_service_not_found() {
    let mut st = state();
    st.endpoints[0].service_id = p("vpce-svc-0d0000000000000d2");
    expect(
        &st,
        &attachments(),
        "endpoints[0].service_id",
        "endpoint vpce-0e0000000000000e1: service vpce-svc-0d0000000000000d2 does not exist",
        "InvalidServiceId.NotFound",
    );
}

#[test]
fn duplicate_endpoint_id() {
    let mut st = state();
    let mut second = endpoint();
    second.ip = Some(ip("10.1.0.101"));
    st.endpoints.push(second);
    expect(
        &st,
        &attachments(),
        "endpoints[1].id",
        "endpoint vpce-0e0000000000000e1: id declared twice (first at endpoints[0])",
        "InvalidEndpointId.Duplicate",
    );
}

#[test]
fn duplicate_service_id() {
    let mut st = state();
    let mut second = service();
    second.snat_addresses = vec![ip("10.2.0.101").into()];
    st.services.push(second);
    expect(
        &st,
        &attachments(),
        "services[1].id",
        "service vpce-svc-0d0000000000000d1: id declared twice (first at services[0])",
        "InvalidServiceId.Duplicate",
    );
}

#[test]
fn service_vpc_not_attached_or_not_owned() {
    let mut st = state();
    st.services[0].vpc_id = p("vpc-deadbeef");
    expect(
        &st,
        &attachments(),
        "services[0].vpc_id",
        "service vpce-svc-0d0000000000000d1: vpc-deadbeef has no attachment on this appliance",
        "InvalidVpcId.NotFound",
    );
    let mut st = state();
    st.services[0].owner = p("111111111111");
    expect(
        &st,
        &attachments(),
        "services[0].owner",
        "service vpce-svc-0d0000000000000d1: owner 111111111111 does not own vpc-0b0000000000000b1 (account 222222222222 does)",
        "InvalidVpcId.NotFound",
    );
}

#[test]
fn service_without_snat_address() {
    let mut st = state();
    st.services[0].snat_addresses.clear();
    expect(
        &st,
        &attachments(),
        "services[0].snat_addresses",
        "service vpce-svc-0d0000000000000d1: at least one snat address is required",
        "InvalidParameterValue",
    );
}

#[test]
fn snat_address_outside_prefix_or_reserved() {
    let mut st = state();
    st.services[0].snat_addresses.push(ip("10.1.0.100").into());
    expect(
        &st,
        &attachments(),
        "services[0].snat_addresses[1]",
        "service vpce-svc-0d0000000000000d1: snat address 10.1.0.100 is outside 10.2.0.0/24 of vpc-0b0000000000000b1",
        "InvalidParameterValue",
    );
    st.services[0].snat_addresses[1] = ip("10.2.0.255").into();
    expect(
        &st,
        &attachments(),
        "services[0].snat_addresses[1]",
        "service vpce-svc-0d0000000000000d1: snat address 10.2.0.255 is the broadcast address of 10.2.0.0/24 in vpc-0b0000000000000b1",
        "InvalidParameterValue",
    );
}

#[test]
fn snat_address_in_use() {
    let mut st = state();
    st.services[0].snat_addresses = vec![ip("10.2.0.1").into()];
    expect(
        &st,
        &attachments(),
        "services[0].snat_addresses[0]",
        "service vpce-svc-0d0000000000000d1: snat address 10.2.0.1 is already in use in vpc-0b0000000000000b1 by the appliance itself",
        "InvalidIpAddress.InUse",
    );
    // Two services never share a SNAT address: each address the appliance answers for has
    // one owner.
    let mut st = state();
    let mut second = service();
    second.id = p("vpce-svc-0d0000000000000d2");
    st.services.push(second);
    expect(
        &st,
        &attachments(),
        "services[1].snat_addresses[0]",
        "service vpce-svc-0d0000000000000d2: snat address 10.2.0.100 is already in use in vpc-0b0000000000000b1 by service vpce-svc-0d0000000000000d1 as a snat address",
        "InvalidIpAddress.InUse",
    );
}

#[test]
fn listener_port_zero() {
    let mut st = state();
    st.services[0].listeners[1].port = 0;
    expect(
        &st,
        &attachments(),
        "services[0].listeners[1].port",
        "service vpce-svc-0d0000000000000d1 listener udp/0: port must not be 0",
        "InvalidParameterValue",
    );
}

#[test]
fn duplicate_listener() {
    let mut st = state();
    let again = st.services[0].listeners[0].clone();
    st.services[0].listeners.push(again);
    expect(
        &st,
        &attachments(),
        "services[0].listeners[2]",
        "service vpce-svc-0d0000000000000d1 listener tcp/80: declared twice (first at services[0].listeners[0])",
        "DuplicateListener",
    );
    // Same port, other protocol: a different listener.
    st.services[0].listeners[2].protocol = Protocol::Udp;
    st.validate(&attachments()).unwrap();
}

#[test]
fn target_port_zero() {
    let mut st = state();
    st.services[0].listeners[0].targets[1].port = 0;
    expect(
        &st,
        &attachments(),
        "services[0].listeners[0].targets[1].port",
        "service vpce-svc-0d0000000000000d1 listener tcp/80 target 10.2.0.12:0: port must not be 0",
        "InvalidParameterValue",
    );
}

#[test]
fn target_off_link_needs_a_gateway() {
    let mut st = state();
    st.services[0].listeners[0].targets[0].ip = ip("192.168.7.7").into();
    expect(
        &st,
        &attachments(),
        "services[0].listeners[0].targets[0].ip",
        "service vpce-svc-0d0000000000000d1 listener tcp/80 target 192.168.7.7:8080: target 192.168.7.7 is outside 10.2.0.0/24 of vpc-0b0000000000000b1 and the attachment has no gateway",
        "InvalidParameterValue",
    );
    let mut atts = attachments();
    atts[1].gateway = Some(ip("10.2.0.254"));
    st.validate(&atts).unwrap();
}

#[test]
fn target_not_unicast_or_reserved() {
    let mut atts = attachments();
    atts[1].gateway = Some(ip("10.2.0.254"));
    let mut st = state();
    st.services[0].listeners[0].targets[0].ip = ip("224.0.0.1").into();
    expect(
        &st,
        &atts,
        "services[0].listeners[0].targets[0].ip",
        "service vpce-svc-0d0000000000000d1 listener tcp/80 target 224.0.0.1:8080: target 224.0.0.1 is not a unicast host address",
        "InvalidParameterValue",
    );
    st.services[0].listeners[0].targets[0].ip = ip("10.2.0.0").into();
    expect(
        &st,
        &atts,
        "services[0].listeners[0].targets[0].ip",
        "service vpce-svc-0d0000000000000d1 listener tcp/80 target 10.2.0.0:8080: target 10.2.0.0 is the network address of 10.2.0.0/24 in vpc-0b0000000000000b1",
        "InvalidParameterValue",
    );
}

#[test]
fn target_is_an_appliance_address() {
    let mut st = state();
    st.services[0].listeners[1].targets[0].ip = ip("10.2.0.100").into();
    expect(
        &st,
        &attachments(),
        "services[0].listeners[1].targets[0].ip",
        "service vpce-svc-0d0000000000000d1 listener udp/9000 target 10.2.0.100:9000: target 10.2.0.100 is already in use in vpc-0b0000000000000b1 by service vpce-svc-0d0000000000000d1 as a snat address",
        "InvalidIpAddress.InUse",
    );
    // A static neighbour, on the other hand, is a fine target.
    let mut atts = attachments();
    atts[1].static_neighbours = vec![StaticNeighbour {
        ip: ip("10.2.0.11"),
        mac: p("02:00:00:00:00:11"),
    }];
    state().validate(&atts).unwrap();
}

#[test]
fn duplicate_target() {
    let mut st = state();
    st.services[0].listeners[0].targets[1].ip = ip("10.2.0.11").into();
    expect(
        &st,
        &attachments(),
        "services[0].listeners[0].targets[1]",
        "service vpce-svc-0d0000000000000d1 listener tcp/80 target 10.2.0.11:8080: registered twice (first at services[0].listeners[0].targets[0])",
        "InvalidParameterValue",
    );
}

// --- listener settings, service principal lists -----------------------------------------

#[test]
fn listener_health_check_settings_out_of_range() {
    const L: &str = "service vpce-svc-0d0000000000000d1 listener tcp/80";
    /// (key, how to set it, values out of range, values in range, the range).
    type Case = (
        &'static str,
        fn(&mut Listener, u32),
        &'static [u32],
        &'static [u32],
        &'static str,
    );
    let cases: [Case; 5] = [
        (
            "health_check_interval_seconds",
            |l, v| l.health_check_interval_seconds = u16::try_from(v).unwrap(),
            &[4, 301],
            &[11, 300],
            "5..=300",
        ),
        (
            "health_check_timeout_seconds",
            |l, v| l.health_check_timeout_seconds = u16::try_from(v).unwrap(),
            &[0, 1],
            &[2, 29],
            "2..=120",
        ),
        (
            "healthy_threshold_count",
            |l, v| l.healthy_threshold_count = u8::try_from(v).unwrap(),
            &[0, 1, 11],
            &[2, 10],
            "2..=10",
        ),
        (
            "unhealthy_threshold_count",
            |l, v| l.unhealthy_threshold_count = u8::try_from(v).unwrap(),
            &[1, 11, 255],
            &[2, 10],
            "2..=10",
        ),
        (
            "idle_timeout_seconds",
            |l, v| l.idle_timeout_seconds = Some(v),
            &[0, 59, 6001],
            &[60, 6000],
            "60..=6000",
        ),
    ];
    for (key, set, bad, good, range) in cases {
        for &v in bad {
            let mut st = state();
            set(&mut st.services[0].listeners[0], v);
            expect(
                &st,
                &attachments(),
                &format!("services[0].listeners[0].{key}"),
                &format!("{L}: {key} {v} is outside {range}"),
                "InvalidParameterValue",
            );
        }
        for &v in good {
            let mut st = state();
            set(&mut st.services[0].listeners[0], v);
            st.validate(&attachments())
                .unwrap_or_else(|e| panic!("{key} = {v}: {e}"));
        }
    }
    // A timeout above 120 is out of range even below a long interval.
    let mut st = state();
    st.services[0].listeners[0].health_check_interval_seconds = 300;
    st.services[0].listeners[0].health_check_timeout_seconds = 121;
    expect(
        &st,
        &attachments(),
        "services[0].listeners[0].health_check_timeout_seconds",
        &format!("{L}: health_check_timeout_seconds 121 is outside 2..=120"),
        "InvalidParameterValue",
    );
}

#[test]
fn health_check_timeout_below_the_interval() {
    for (interval, timeout) in [(10, 10), (5, 6), (30, 120)] {
        let mut st = state();
        let l = &mut st.services[0].listeners[1];
        l.health_check_interval_seconds = interval;
        l.health_check_timeout_seconds = timeout;
        expect(
            &st,
            &attachments(),
            "services[0].listeners[1].health_check_timeout_seconds",
            &format!(
                "service vpce-svc-0d0000000000000d1 listener udp/9000: \
                 health_check_timeout_seconds {timeout} must be lower than \
                 health_check_interval_seconds {interval} (the cloud's rule: a check times \
                 out before the next one starts)"
            ),
            "InvalidParameterValue",
        );
    }
    let mut st = state();
    st.services[0].listeners[1].health_check_interval_seconds = 5;
    st.services[0].listeners[1].health_check_timeout_seconds = 4;
    st.validate(&attachments()).unwrap();
}

#[test]
fn health_check_port_is_not_zero() {
    let mut st = state();
    st.services[0].listeners[1].health_check_port = Some(0);
    expect(
        &st,
        &attachments(),
        "services[0].listeners[1].health_check_port",
        "service vpce-svc-0d0000000000000d1 listener udp/9000: health_check_port 0 is outside 1..=65535",
        "InvalidParameterValue",
    );
    st.services[0].listeners[1].health_check_port = Some(8080);
    st.validate(&attachments()).unwrap();
}

#[test]
fn health_check_path_fits_an_http_request_line() {
    const L: &str = "service vpce-svc-0d0000000000000d1 listener tcp/80: health_check_path";
    let long = format!("/{}", "a".repeat(1024));
    let cases = [
        ("", "must start with '/'".to_owned()),
        ("health", "must start with '/'".to_owned()),
        (" /x", "must start with '/'".to_owned()),
        (long.as_str(), "is 1025 bytes, longer than 1024".to_owned()),
        (
            "/a b",
            "has byte 0x20 at offset 2: only visible ASCII (0x21..=0x7e) may go into the HTTP request line".to_owned(),
        ),
        (
            "/x\r\nHost: evil",
            "has byte 0x0d at offset 2: only visible ASCII (0x21..=0x7e) may go into the HTTP request line".to_owned(),
        ),
        (
            "/\u{7f}",
            "has byte 0x7f at offset 1: only visible ASCII (0x21..=0x7e) may go into the HTTP request line".to_owned(),
        ),
        (
            "/caf\u{e9}",
            "has byte 0xc3 at offset 4: only visible ASCII (0x21..=0x7e) may go into the HTTP request line".to_owned(),
        ),
    ];
    for (path, problem) in cases {
        let mut st = state();
        st.services[0].listeners[0].health_check_path = path.to_owned();
        expect(
            &st,
            &attachments(),
            "services[0].listeners[0].health_check_path",
            &format!("{L} {problem}"),
            "InvalidParameterValue",
        );
    }
    for path in [
        "/".to_owned(),
        "/healthz?full=1&x=%20~".to_owned(),
        format!("/{}", "a".repeat(1023)),
    ] {
        let mut st = state();
        st.services[0].listeners[0].health_check_path = path.clone();
        st.validate(&attachments())
            .unwrap_or_else(|e| panic!("{path}: {e}"));
    }
}

#[test]
fn principals_listed_once_per_service() {
    let a = Principal::Account(p("111111111111"));
    let b = Principal::Account(p("333333333333"));
    let mut st = state();
    st.services[0].auto_accept_principals = vec![a, Principal::Any, b, Principal::Any];
    expect(
        &st,
        &attachments(),
        "services[0].auto_accept_principals[3]",
        "service vpce-svc-0d0000000000000d1: principal * listed twice (first at services[0].auto_accept_principals[1])",
        "InvalidParameterValue",
    );
    st.services[0].auto_accept_principals.pop();
    st.validate(&attachments()).unwrap();

    let limit = |principal, limit| ConnectionLimit { principal, limit };
    st.services[0].connection_limits = vec![limit(a, 1), limit(Principal::Any, 5), limit(a, 2)];
    expect(
        &st,
        &attachments(),
        "services[0].connection_limits[2].principal",
        "service vpce-svc-0d0000000000000d1: principal 111111111111 listed twice (first at services[0].connection_limits[0])",
        "InvalidParameterValue",
    );
    // An account's own limit beside "*"'s is the point of having both.
    st.services[0].connection_limits.pop();
    st.validate(&attachments()).unwrap();
    assert_eq!(st.services[0].connection_limit(p("111111111111")), Some(1));
    assert_eq!(st.services[0].connection_limit(p("333333333333")), Some(5));
}

// --- attachments -----------------------------------------------------------------------

#[test]
fn attachment_vlan_out_of_range() {
    for vlan in [0, 4095] {
        let mut atts = attachments();
        atts[1].vlan = Some(vlan);
        expect_attachments(
            &atts,
            "vpcs[1].vlan",
            &format!("vpc attachment vpc-0b0000000000000b1: vlan {vlan} is outside 1..=4094"),
            "InvalidParameterValue",
        );
    }
}

#[test]
fn attachment_mss_clamp_out_of_range() {
    for mss in [0, 535, 9001, u16::MAX] {
        let mut atts = attachments();
        atts[0].mss_clamp = Some(mss);
        expect_attachments(
            &atts,
            "vpcs[0].mss_clamp",
            &format!("vpc attachment vpc-0c0000000000000c1: mss_clamp {mss} is outside 536..=9000"),
            "InvalidParameterValue",
        );
    }
    for mss in [536, 1360, 9000] {
        let mut atts = attachments();
        atts[0].mss_clamp = Some(mss);
        validate_attachments(&atts).unwrap();
    }
}

#[test]
fn attachment_duplicate_vpc() {
    let mut atts = attachments();
    atts[1].vpc_id = p(CONSUMER);
    expect_attachments(
        &atts,
        "vpcs[1].vpc_id",
        "vpc attachment vpc-0c0000000000000c1: id declared twice (first at vpcs[0])",
        "InvalidVpcId.Duplicate",
    );
}

#[test]
fn attachment_duplicate_port_and_vlan() {
    let mut atts = attachments();
    atts[1].port = "net_tap0".into();
    expect_attachments(
        &atts,
        "vpcs[1].port",
        "vpc attachment vpc-0b0000000000000b1: port net_tap0 untagged already carries vpc-0c0000000000000c1",
        "InvalidParameterValue",
    );
    atts[0].vlan = Some(100);
    atts[1].vlan = Some(100);
    expect_attachments(
        &atts,
        "vpcs[1].vlan",
        "vpc attachment vpc-0b0000000000000b1: port net_tap0 vlan 100 already carries vpc-0c0000000000000c1",
        "InvalidParameterValue",
    );
    // Tagged and untagged, or two VLANs, on one port are fine.
    atts[1].vlan = Some(200);
    validate_attachments(&atts).unwrap();
    atts[1].vlan = None;
    validate_attachments(&atts).unwrap();
}

#[test]
fn attachment_prefix_too_long() {
    let mut atts = attachments();
    atts[0].address = Some(p("10.1.0.1/31"));
    expect_attachments(
        &atts,
        "vpcs[0].address",
        "vpc attachment vpc-0c0000000000000c1: address 10.1.0.1/31 leaves no room for endpoints (the prefix length must be at most 30)",
        "InvalidParameterValue",
    );
}

#[test]
fn attachment_address_not_a_host() {
    let mut atts = attachments();
    atts[0].address = Some(p("10.1.0.0/24"));
    expect_attachments(
        &atts,
        "vpcs[0].address",
        "vpc attachment vpc-0c0000000000000c1: address 10.1.0.0 is the network address of 10.1.0.0/24 in vpc-0c0000000000000c1",
        "InvalidParameterValue",
    );
    atts[0].address = Some(p("127.0.0.1/8"));
    expect_attachments(
        &atts,
        "vpcs[0].address",
        "vpc attachment vpc-0c0000000000000c1: address 127.0.0.1 is not a unicast host address",
        "InvalidParameterValue",
    );
}

#[test]
fn attachment_gateway_outside_prefix_or_own() {
    let mut atts = attachments();
    atts[0].gateway = Some(ip("10.2.0.254"));
    expect_attachments(
        &atts,
        "vpcs[0].gateway",
        "vpc attachment vpc-0c0000000000000c1: gateway 10.2.0.254 is outside 10.1.0.0/24 of vpc-0c0000000000000c1",
        "InvalidParameterValue",
    );
    atts[0].gateway = Some(ip("10.1.0.1"));
    expect_attachments(
        &atts,
        "vpcs[0].gateway",
        "vpc attachment vpc-0c0000000000000c1: gateway 10.1.0.1 is already in use in vpc-0c0000000000000c1 by the appliance itself",
        "InvalidIpAddress.InUse",
    );
    atts[0].gateway = Some(ip("10.1.0.255"));
    expect_attachments(
        &atts,
        "vpcs[0].gateway",
        "vpc attachment vpc-0c0000000000000c1: gateway 10.1.0.255 is the broadcast address of 10.1.0.0/24 in vpc-0c0000000000000c1",
        "InvalidParameterValue",
    );
}

#[test]
fn attachment_static_neighbours() {
    let n = |ip_: &str, mac: &str| StaticNeighbour {
        ip: ip(ip_),
        mac: p(mac),
    };
    let mut atts = attachments();
    atts[0].gateway = Some(ip("10.1.0.254"));
    // A static entry for the gateway is normal.
    atts[0].static_neighbours = vec![n("10.1.0.254", "02:00:00:00:00:fe")];
    validate_attachments(&atts).unwrap();

    atts[0].static_neighbours = vec![
        n("10.1.0.10", "02:00:00:00:00:01"),
        n("10.3.0.1", "02:00:00:00:00:02"),
    ];
    expect_attachments(
        &atts,
        "vpcs[0].static_neighbours[1].ip",
        "vpc attachment vpc-0c0000000000000c1: static neighbour 10.3.0.1 is outside 10.1.0.0/24 of vpc-0c0000000000000c1",
        "InvalidParameterValue",
    );
    atts[0].static_neighbours[1] = n("10.1.0.10", "02:00:00:00:00:02");
    expect_attachments(
        &atts,
        "vpcs[0].static_neighbours[1].ip",
        "vpc attachment vpc-0c0000000000000c1: static neighbour 10.1.0.10 is already in use in vpc-0c0000000000000c1 by a static neighbour",
        "InvalidIpAddress.InUse",
    );
    atts[0].static_neighbours[1] = n("10.1.0.1", "02:00:00:00:00:02");
    expect_attachments(
        &atts,
        "vpcs[0].static_neighbours[1].ip",
        "vpc attachment vpc-0c0000000000000c1: static neighbour 10.1.0.1 is already in use in vpc-0c0000000000000c1 by the appliance itself",
        "InvalidIpAddress.InUse",
    );
    atts[0].static_neighbours[1] = n("10.1.0.11", "01:00:5e:00:00:01");
    expect_attachments(
        &atts,
        "vpcs[0].static_neighbours[1].mac",
        "vpc attachment vpc-0c0000000000000c1: static neighbour mac 01:00:5e:00:00:01 is not a unicast address",
        "InvalidParameterValue",
    );
}

#[test]
fn error_accessors() {
    let mut st = state();
    st.endpoints[0].ip = Some(ip("10.9.0.5"));
    let e = st.validate(&attachments()).unwrap_err();
    assert_eq!(e.object(), Object::Endpoint(p(ENDPOINT)));
    assert!(matches!(
        e,
        ModelError::OutsidePrefix {
            role: AddressRole::Ip,
            ..
        }
    ));
    let _: &dyn std::error::Error = &e;
}

/// The shortcut of a change of endpoints alone says "valid" exactly when the whole
/// validation does, over random changes of every field an endpoint has (addresses that
/// collide with every kind of holder, owners, services, groups, policies, states, ids).
#[test]
fn endpoint_changes_are_known_valid_exactly_when_they_validate() {
    let mut atts = attachments();
    atts[0].gateway = Some(ip("10.1.0.254"));
    atts[0].static_neighbours = vec![StaticNeighbour {
        ip: ip("10.1.0.253"),
        mac: p("02:00:00:00:00:01"),
    }];
    let group = |id: &str, vpc: &str, owner: &str| SecurityGroup {
        id: p(id),
        owner: p(owner),
        vpc_id: p(vpc),
        name: id.to_owned(),
        description: String::new(),
        ingress: vec![],
    };
    let mut base = state();
    base.security_groups = vec![
        group("sg-00000001", CONSUMER, "111111111111"),
        group("sg-00000002", PROVIDER, "222222222222"),
    ];
    // Deleted endpoints (holding no address) ahead of the others, so that the list spans
    // chunks and the index, of `base`, shares the first with every version made from it.
    let live = base.endpoints.to_vec();
    base.endpoints = (0..CHUNK + 50)
        .map(|k| {
            let mut e = endpoint();
            e.id = p(&format!("vpce-0f{k:015x}"));
            e.state = EndpointState::Deleted;
            e
        })
        .chain(live)
        .collect();
    base.validate(&atts).unwrap();
    let mut index = EndpointIndex::default();
    index.update(&base.endpoints);
    let ips = [
        "10.1.0.100",
        "10.1.0.101",
        "10.1.0.102",
        "10.1.0.1",
        "10.1.0.0",
        "10.1.0.255",
        "10.1.0.254",
        "10.1.0.253",
        "10.2.0.11",
        "10.2.0.100",
        "10.2.0.50",
        "10.9.0.1",
    ];
    let homes = [
        (CONSUMER, "111111111111"),
        (PROVIDER, "222222222222"),
        (CONSUMER, "222222222222"),
    ];
    let states = [
        EndpointState::PendingAcceptance,
        EndpointState::Available,
        EndpointState::Rejected,
        EndpointState::Failed,
        EndpointState::Deleting,
        EndpointState::Deleted,
    ];
    let groups = ["sg-00000001", "sg-00000002", "sg-00000009"];
    let policies = [
        None,
        Some(serde_json::json!({"Statement": [{"Effect": "Allow", "Principal": "*"}]})),
        Some(serde_json::json!({"Statement": 5})),
    ];
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        usize::try_from(seed % n as u64).unwrap()
    };
    let (mut known, mut valid) = (0, 0);
    for _ in 0..4000 {
        let mut st = base.clone();
        // A few valid endpoints to collide with.
        for k in 0..next(4) {
            let mut e = endpoint();
            e.id = p(&format!("vpce-0e00000000000010{k}"));
            e.ip = Some(ip(&format!("10.1.0.{}", 110 + k)));
            st.endpoints.push(e);
        }
        st.validate(&atts).unwrap();
        let mut changed = Vec::new();
        for _ in 0..=next(3) {
            let mut i = next(st.endpoints.len() + 2);
            if i >= st.endpoints.len() || next(4) == 0 {
                let mut e = endpoint();
                e.id = p(&format!("vpce-0e0000000000002{:02}", next(8)));
                st.endpoints.push(e);
                i = st.endpoints.len() - 1;
            }
            changed.push(st.endpoints[i].id);
            if next(10) == 0 && st.endpoints.len() > 1 {
                changed.push(st.endpoints.remove(i).id);
                continue;
            }
            let e = &mut st.endpoints[i];
            match next(7) {
                0 => e.ip = Some(ip(ips[next(ips.len())])),
                1 => {
                    let (vpc, owner) = homes[next(homes.len())];
                    (e.vpc_id, e.owner) = (p(vpc), p(owner));
                }
                2 => {
                    e.service_id = if next(2) == 0 {
                        p(SERVICE)
                    } else {
                        p("vpce-svc-0d00000000000009f")
                    }
                }
                3 => e.state = states[next(states.len())],
                4 => e.security_group_ids = vec![p(groups[next(groups.len())])],
                5 => e.policy = policies[next(policies.len())].clone(),
                _ => e.id = p(&format!("vpce-0e0000000000002{:02}", next(8))),
            }
            changed.push(st.endpoints[i].id);
        }
        let shortcut = st.endpoints_known_valid(&atts, &changed, &index);
        let whole = st.validate(&atts);
        assert_eq!(
            shortcut,
            whole.is_ok(),
            "{whole:?} after changing {changed:?} in {:#?}",
            st.endpoints
        );
        known += usize::from(shortcut);
        valid += usize::from(whole.is_ok());
    }
    assert!(
        known > 400 && valid < 3600,
        "both verdicts seen: {known} of 4000 valid"
    );
}

#[test]
fn a_copy_into_an_old_state_is_the_state() {
    let mut spare = state();
    spare.endpoints.push(endpoint());
    spare.client_tokens.clear();
    let mut source = state();
    source.endpoints[0].ip = Some(ip("10.1.0.77"));
    source.security_groups = vec![SecurityGroup {
        id: p("sg-00000001"),
        owner: p("111111111111"),
        vpc_id: p(CONSUMER),
        name: "g".into(),
        description: String::new(),
        ingress: vec![],
    }];
    source.declared = Some(Default::default());
    spare.clone_from(&source);
    assert_eq!(spare, source);
    assert_eq!(source.clone(), source);
}

#[test]
fn an_attachment_ipv6_address_must_be_one_interfaces() {
    let mut atts = attachments();
    atts[0].address6 = Some(p("fd00:c1::1/64"));
    validate_attachments(&atts).unwrap();
    state().validate(&atts).unwrap();
    for (given, problem) in [
        (
            "ff02::1/64",
            "is not a global or unique-local unicast address",
        ),
        (
            "fe80::1/64",
            "is not a global or unique-local unicast address",
        ),
        (
            "::ffff:10.1.0.1/96",
            "is not a global or unique-local unicast address",
        ),
        (
            "fd00:c1::/64",
            "is its prefix's subnet-router anycast address (all host bits zero)",
        ),
        ("fd00::1/4", "has a prefix length out of 8..=128"),
    ] {
        atts[0].address6 = Some(p(given));
        expect_attachments(
            &atts,
            "vpcs[0].address6",
            &format!("vpc attachment {CONSUMER}: IPv6 address {given} {problem}"),
            "InvalidParameterValue",
        );
    }
    // The one host of a /128 is its own prefix: that is no anycast address.
    atts[0].address6 = Some(p("fd00:c1::1/128"));
    validate_attachments(&atts).unwrap();
}

#[test]
fn an_ipv6_gateway_is_a_link_local_or_on_prefix_neighbour_of_an_ipv6_attachment() {
    let mut atts = attachments();
    atts[0].gateway6 = Some(p("fe80::1"));
    expect_attachments(
        &atts,
        "vpcs[0].gateway6",
        &format!("vpc attachment {CONSUMER}: IPv6 gateway fe80::1 needs the attachment's address6"),
        "InvalidParameterValue",
    );
    atts[0].address6 = Some(p("fd00:c1::1/64"));
    for good in ["fe80::1", "fd00:c1::fe"] {
        atts[0].gateway6 = Some(p(good));
        validate_attachments(&atts).unwrap();
        state().validate(&atts).unwrap();
    }
    for (given, problem) in [
        ("ff02::2", "is not a unicast address"),
        ("::", "is not a unicast address"),
        (
            "fd00:c2::1",
            "is neither link-local nor inside address6's prefix",
        ),
        ("fd00:c1::1", "is the appliance's own address6"),
        (
            "fd00:c1::",
            "is its prefix's subnet-router anycast address (all host bits zero)",
        ),
    ] {
        atts[0].gateway6 = Some(p(given));
        expect_attachments(
            &atts,
            "vpcs[0].gateway6",
            &format!("vpc attachment {CONSUMER}: IPv6 gateway {given} {problem}"),
            "InvalidParameterValue",
        );
    }
    // A dual-stack endpoint cannot take the gateway's address.
    let (st, mut atts) = dual();
    atts[0].gateway6 = Some(p("fd00:c1::64"));
    let err = st.validate(&atts).unwrap_err();
    assert!(err.to_string().contains("fd00:c1::64"), "{err}");
}

#[test]
fn ipv6_static_neighbours_are_checked_like_the_ipv6_gateway() {
    let n = |ip_: &str, mac: &str| StaticNeighbour6 {
        ip: p(ip_),
        mac: mac.parse().unwrap(),
    };
    let mut atts = attachments();
    atts[0].static_neighbours6 = vec![n("fe80::1", "02:00:00:00:00:fe")];
    expect_attachments(
        &atts,
        "vpcs[0].static_neighbours6[0].ip",
        &format!("vpc attachment {CONSUMER}: IPv6 static neighbour fe80::1 needs the attachment's address6"),
        "InvalidParameterValue",
    );
    atts[0].address6 = Some(p("fd00:c1::1/64"));
    atts[0].static_neighbours6 = vec![
        n("fe80::1", "02:00:00:00:00:fe"),
        n("fd00:c1::10", "02:00:00:00:00:10"),
    ];
    validate_attachments(&atts).unwrap();
    for (given, problem) in [
        ("fe80::1", "is listed twice"),
        ("fd00:c1::1", "is the appliance's own address6"),
        (
            "fd00:c2::1",
            "is neither link-local nor inside address6's prefix",
        ),
        ("ff02::1", "is not a unicast address"),
    ] {
        atts[0].static_neighbours6[1] = n(given, "02:00:00:00:00:10");
        expect_attachments(
            &atts,
            "vpcs[0].static_neighbours6[1].ip",
            &format!("vpc attachment {CONSUMER}: IPv6 static neighbour {given} {problem}"),
            "InvalidParameterValue",
        );
    }
    atts[0].static_neighbours6[1] = n("fd00:c1::10", "33:33:00:00:00:01");
    let err = validate_attachments(&atts).unwrap_err();
    assert_eq!(err.path().to_string(), "vpcs[0].static_neighbours6[1].mac");
    // An endpoint cannot take a static neighbour's address.
    let (st, mut atts) = dual();
    atts[0].static_neighbours6 = vec![n("fd00:c1::64", "02:00:00:00:00:10")];
    let err = st.validate(&atts).unwrap_err();
    assert!(err.to_string().contains("fd00:c1::64"), "{err}");
}

// --- IPv6 endpoints --------------------------------------------------------------------

/// The demo state with an IPv6 prefix on the consumer VPC, a service that accepts both
/// families and a dual-stack endpoint.
fn dual() -> (State, Vec<VpcAttachment>) {
    let mut atts = attachments();
    atts[0].address6 = Some(p("fd00:c1::1/64"));
    let mut st = state();
    st.services[0].supported_ip_address_types = vec![IpFamily::Ipv4, IpFamily::Ipv6];
    st.endpoints[0].ip_address_type = IpAddressType::Dualstack;
    st.endpoints[0].ip6 = Some(p("fd00:c1::64"));
    (st, atts)
}

#[test]
fn a_dual_stack_endpoint_in_the_ipv6_prefix_is_valid() {
    let (st, atts) = dual();
    st.validate(&atts).unwrap();
    let json = serde_json::to_value(&st.endpoints[0]).unwrap();
    assert_eq!(json["ip_address_type"], "dualstack");
    assert_eq!(json["ip6"], "fd00:c1::64");
    let back: Endpoint = serde_json::from_value(json).unwrap();
    assert_eq!(back, st.endpoints[0]);
    // The defaults are not written, and a state saved before them reads as IPv4.
    let plain = serde_json::to_value(endpoint()).unwrap();
    assert!(plain.get("ip_address_type").is_none() && plain.get("ip6").is_none());
    let svc = serde_json::to_value(service()).unwrap();
    assert!(svc.get("supported_ip_address_types").is_none());
    let old: Service = serde_json::from_value(svc).unwrap();
    assert_eq!(old.supported_ip_address_types, [IpFamily::Ipv4]);
}

#[test]
fn ipv6_endpoint_addresses_are_checked_like_ipv4_ones() {
    let e = "endpoint vpce-0e0000000000000e1";
    let bad = "InvalidParameterValue";
    let (mut st, atts) = dual();
    st.endpoints[0].ip6 = Some(p("fd00:c2::64"));
    expect(
        &st,
        &atts,
        "endpoints[0].ip6",
        &format!("{e}: ip6 fd00:c2::64 is outside fd00:c1::/64 of {CONSUMER}"),
        bad,
    );
    st.endpoints[0].ip6 = Some(p("fd00:c1::"));
    expect(
        &st,
        &atts,
        "endpoints[0].ip6",
        &format!(
            "{e}: ip6 fd00:c1:: is the subnet-router anycast address of fd00:c1::/64 in {CONSUMER}"
        ),
        bad,
    );
    st.endpoints[0].ip6 = Some(p("fd00:c1::1"));
    expect(
        &st,
        &atts,
        "endpoints[0].ip6",
        &format!("{e}: ip6 fd00:c1::1 is already in use in {CONSUMER} by the appliance itself"),
        "InvalidIpAddress.InUse",
    );
    let (mut st, atts) = dual();
    let mut other = st.endpoints[0].clone();
    other.id = p("vpce-0e0000000000000e2");
    other.ip = Some(ip("10.1.0.101"));
    st.endpoints.push(other.clone());
    expect(
        &st,
        &atts,
        "endpoints[1].ip6",
        &format!(
            "endpoint vpce-0e0000000000000e2: ip6 fd00:c1::64 is already in use in {CONSUMER} by endpoint {ENDPOINT}"
        ),
        "InvalidIpAddress.InUse",
    );
    // A deleted endpoint holds no address.
    st.endpoints[0].state = EndpointState::Deleted;
    st.validate(&atts).unwrap();

    let (mut st, atts) = dual();
    st.endpoints[0].ip6 = None;
    expect(
        &st,
        &atts,
        "endpoints[0].ip_address_type",
        &format!("{e}: ip_address_type dualstack needs an ip6"),
        bad,
    );
    let (mut st, atts) = dual();
    st.endpoints[0].ip_address_type = IpAddressType::Ipv4;
    expect(
        &st,
        &atts,
        "endpoints[0].ip6",
        &format!("{e}: ip_address_type ipv4 has no ip6"),
        bad,
    );
    // An IPv6 endpoint has an ip6 and no ip.
    let (mut st, atts) = dual();
    st.endpoints[0].ip_address_type = IpAddressType::Ipv6;
    expect(
        &st,
        &atts,
        "endpoints[0].ip",
        &format!("{e}: ip_address_type ipv6 has no ip"),
        bad,
    );
    st.endpoints[0].ip = None;
    st.validate(&atts).unwrap();
    let json = serde_json::to_value(&st.endpoints[0]).unwrap();
    assert!(json.get("ip").is_none(), "{json}");
    assert_eq!(json["ip_address_type"], "ipv6");
    st.endpoints[0].ip6 = None;
    expect(
        &st,
        &atts,
        "endpoints[0].ip_address_type",
        &format!("{e}: ip_address_type ipv6 needs an ip6"),
        bad,
    );
    // One without an ip is an IPv6 one.
    let (mut st, atts) = dual();
    st.endpoints[0].ip = None;
    expect(
        &st,
        &atts,
        "endpoints[0].ip_address_type",
        &format!("{e}: ip_address_type dualstack needs an ip"),
        bad,
    );
    let (st, _) = dual();
    expect(
        &st,
        &attachments(),
        "endpoints[0].ip_address_type",
        &format!("{e}: {CONSUMER} has no IPv6 prefix (its attachment has no address6)"),
        bad,
    );
}

#[test]
fn a_service_accepts_only_the_endpoints_of_its_supported_types() {
    let e = "endpoint vpce-0e0000000000000e1";
    let (mut st, atts) = dual();
    st.services[0].supported_ip_address_types = vec![IpFamily::Ipv4];
    expect(
        &st,
        &atts,
        "endpoints[0].ip_address_type",
        &format!("{e}: service {SERVICE} does not accept dualstack endpoints (its supported_ip_address_types: ipv4)"),
        "InvalidParameterValue",
    );
    // An IPv4 endpoint needs ipv4.
    let mut st = state();
    st.services[0].supported_ip_address_types = vec![IpFamily::Ipv6];
    expect(
        &st,
        &attachments(),
        "endpoints[0].ip_address_type",
        &format!("{e}: service {SERVICE} does not accept ipv4 endpoints (its supported_ip_address_types: ipv6)"),
        "InvalidParameterValue",
    );
    // A failed endpoint (its service is gone) is not held to it.
    st.endpoints[0].state = EndpointState::Failed;
    st.validate(&attachments()).unwrap();
    for bad in [vec![], vec![IpFamily::Ipv4, IpFamily::Ipv4]] {
        let mut st = state();
        st.services[0].supported_ip_address_types = bad;
        expect(
            &st,
            &attachments(),
            "services[0].supported_ip_address_types",
            &format!("service {SERVICE}: supported_ip_address_types must list ipv4, ipv6 or both, each once"),
            "InvalidParameterValue",
        );
    }
}

#[test]
fn the_endpoint_shortcut_leaves_ipv6_to_the_whole_validation() {
    let (st, atts) = dual();
    let none = EndpointIndex::default();
    assert!(!st.endpoints_known_valid(&atts, &[p(ENDPOINT)], &none));
    // An IPv4 endpoint of a service that no longer accepts IPv4 is no verdict either.
    let mut st = state();
    assert!(st.endpoints_known_valid(&attachments(), &[p(ENDPOINT)], &none));
    st.services[0].supported_ip_address_types = vec![IpFamily::Ipv6];
    assert!(!st.endpoints_known_valid(&attachments(), &[p(ENDPOINT)], &none));
}

// --- IPv6 targets and SNAT addresses (NAT66) --------------------------------------------

fn ip6(s: &str) -> std::net::IpAddr {
    std::net::IpAddr::V6(s.parse().unwrap())
}

/// The demo state with a provider VPC that has `fd00:b1::1/64` and a listener tcp/443 of
/// IPv6 targets, reached from the IPv6 SNAT address `fd00:b1::100`.
fn nat66() -> (State, Vec<VpcAttachment>) {
    let mut atts = attachments();
    atts[1].address6 = Some(p("fd00:b1::1/64"));
    let mut st = state();
    st.services[0].snat_addresses.push(ip6("fd00:b1::100"));
    st.services[0].listeners.push(Listener::new(
        Protocol::Tcp,
        443,
        vec![
            Target::new(ip6("fd00:b1::11"), 8443),
            Target::new(ip6("fd00:b1::12"), 8443),
        ],
    ));
    (st, atts)
}

#[test]
fn ipv6_targets_with_an_ipv6_snat_address_are_valid() {
    let (st, atts) = nat66();
    st.validate(&atts).unwrap();
    let t = &st.services[0].listeners[2].targets[0];
    assert_eq!(t.family(), IpFamily::Ipv6);
    assert_eq!(t.addr().to_string(), "[fd00:b1::11]:8443");
    // The TOML and JSON form is the plain address, as for IPv4.
    assert_eq!(
        serde_json::to_value(t).unwrap()["ip"],
        serde_json::json!("fd00:b1::11")
    );
}

#[test]
fn ipv6_targets_need_an_ipv6_snat_address_and_ipv4_ones_an_ipv4_one() {
    let (mut st, atts) = nat66();
    st.services[0].snat_addresses.truncate(1);
    expect(
        &st,
        &atts,
        "services[0].listeners[2].targets",
        &format!("service {SERVICE} listener tcp/443: its ipv6 targets need an ipv6 snat address"),
        "InvalidParameterValue",
    );
    let (mut st, atts) = nat66();
    st.services[0].snat_addresses.remove(0);
    expect(
        &st,
        &atts,
        "services[0].listeners[0].targets",
        &format!("service {SERVICE} listener tcp/80: its ipv4 targets need an ipv4 snat address"),
        "InvalidParameterValue",
    );
}

#[test]
fn a_listener_does_not_mix_target_families() {
    let (mut st, atts) = nat66();
    st.services[0].listeners[0]
        .targets
        .push(Target::new(ip6("fd00:b1::13"), 8080));
    expect(
        &st,
        &atts,
        "services[0].listeners[0].targets[2].ip",
        &format!("service {SERVICE} listener tcp/80 target [fd00:b1::13]:8080: an ipv6 target among ipv4 ones (first at services[0].listeners[0].targets[0]): a listener's targets are of one family"),
        "InvalidParameterValue",
    );
}

#[test]
fn ipv6_targets_and_snat_addresses_are_checked_against_the_ipv6_prefix() {
    let target = format!("service {SERVICE} listener tcp/443 target [fd00:b1::11]:8443");
    let invalid = "InvalidParameterValue";
    type Change = dyn Fn(&mut State, &mut Vec<VpcAttachment>);
    let cases: [(&Change, &str, String, &str); 6] = [
        (
            &|_, a| a[1].address6 = None,
            "services[0].snat_addresses[1]",
            format!("service {SERVICE}: {PROVIDER} has no IPv6 prefix (its attachment has no address6)"),
            invalid,
        ),
        (
            &|s, _| s.services[0].snat_addresses[1] = ip6("fd00:b2::100"),
            "services[0].snat_addresses[1]",
            format!("service {SERVICE}: snat address fd00:b2::100 is outside fd00:b1::/64 of {PROVIDER}"),
            invalid,
        ),
        (
            &|s, _| s.services[0].snat_addresses[1] = ip6("fd00:b1::"),
            "services[0].snat_addresses[1]",
            format!("service {SERVICE}: snat address fd00:b1:: is the subnet-router anycast address of fd00:b1::/64 in {PROVIDER}"),
            invalid,
        ),
        (
            &|s, _| s.services[0].listeners[2].targets[0].ip = ip6("fd00:b2::11"),
            "services[0].listeners[2].targets[0].ip",
            format!("{target}: target fd00:b2::11 is outside fd00:b1::/64 of {PROVIDER} and the attachment has no gateway6")
                .replace("fd00:b1::11]", "fd00:b2::11]"),
            invalid,
        ),
        (
            &|s, _| s.services[0].listeners[2].targets[0].ip = ip6("fe80::11"),
            "services[0].listeners[2].targets[0].ip",
            format!("{target}: target fe80::11 is not a unicast host address")
                .replace("fd00:b1::11]", "fe80::11]"),
            invalid,
        ),
        (
            &|s, _| s.services[0].listeners[2].targets[0].ip = ip6("fd00:b1::100"),
            "services[0].listeners[2].targets[0].ip",
            format!("{target}: target fd00:b1::100 is already in use in {PROVIDER} by service {SERVICE} as a snat address")
                .replace("fd00:b1::11]", "fd00:b1::100]"),
            "InvalidIpAddress.InUse",
        ),
    ];
    for (change, path, message, code) in cases {
        let (mut st, mut atts) = nat66();
        change(&mut st, &mut atts);
        expect(&st, &atts, path, &message, code);
    }
    // Off the prefix is fine with a gateway6 to reach it through.
    let (mut st, mut atts) = nat66();
    atts[1].gateway6 = Some("fe80::1".parse().unwrap());
    st.services[0].listeners[2].targets[0].ip = ip6("fd00:b2::11");
    st.validate(&atts).unwrap();
}

#[test]
fn an_ipv6_snat_address_has_one_holder() {
    // An endpoint's ip6 in the provider VPC meeting the SNAT address.
    let (mut st, mut atts) = nat66();
    atts[1].address6 = Some(p("fd00:b1::1/64"));
    let mut e = endpoint();
    e.id = p("vpce-0e0000000000000e2");
    e.vpc_id = p(PROVIDER);
    e.owner = p("222222222222");
    e.ip = Some(ip("10.2.0.50"));
    e.ip_address_type = IpAddressType::Dualstack;
    e.ip6 = Some("fd00:b1::100".parse().unwrap());
    st.services[0].supported_ip_address_types = vec![IpFamily::Ipv4, IpFamily::Ipv6];
    st.services[0]
        .allowed_principals
        .push(Principal::Account(p("222222222222")));
    st.endpoints.push(e);
    expect(
        &st,
        &atts,
        "endpoints[1].ip6",
        &format!("endpoint vpce-0e0000000000000e2: ip6 fd00:b1::100 is already in use in {PROVIDER} by service {SERVICE} as a snat address"),
        "InvalidIpAddress.InUse",
    );
    // And the appliance's own address6 as a SNAT address.
    let (mut st, atts) = nat66();
    st.services[0].snat_addresses[1] = ip6("fd00:b1::1");
    expect(
        &st,
        &atts,
        "services[0].snat_addresses[1]",
        &format!("service {SERVICE}: snat address fd00:b1::1 is already in use in {PROVIDER} by the appliance itself"),
        "InvalidIpAddress.InUse",
    );
}

// --- IPv6-only VPCs ---------------------------------------------------------------------

#[test]
fn an_attachment_may_have_ipv6_instead_of_ipv4() {
    let (mut st, mut atts) = nat66();
    atts[0].address = None;
    atts[0].address6 = Some(p("fd00:c1::1/64"));
    validate_attachments(&atts).unwrap();
    // Its endpoints are IPv6 ones.
    st.services[0].supported_ip_address_types = vec![IpFamily::Ipv4, IpFamily::Ipv6];
    st.endpoints[0].ip = None;
    st.endpoints[0].ip_address_type = IpAddressType::Ipv6;
    st.endpoints[0].ip6 = Some("fd00:c1::64".parse().unwrap());
    st.validate(&atts).unwrap();
    // An IPv4 one has no prefix to be in.
    st.endpoints[0].ip = Some(ip("10.1.0.100"));
    st.endpoints[0].ip_address_type = IpAddressType::Dualstack;
    expect(
        &st,
        &atts,
        "endpoints[0].ip",
        &format!(
            "endpoint {ENDPOINT}: {CONSUMER} has no IPv4 prefix (its attachment has no address)"
        ),
        "InvalidParameterValue",
    );
    // Nor an IPv4 SNAT address or target, in an IPv6-only provider VPC.
    let (mut st, mut atts) = nat66();
    atts[1].address = None;
    st.services[0].snat_addresses.remove(0);
    expect(
        &st,
        &atts,
        "services[0].listeners[0].targets[0].ip",
        &format!("service {SERVICE} listener tcp/80 target 10.2.0.11:8080: {PROVIDER} has no IPv4 prefix (its attachment has no address)"),
        "InvalidParameterValue",
    );
    let (st, mut atts) = nat66();
    atts[1].address = None;
    expect(
        &st,
        &atts,
        "services[0].snat_addresses[0]",
        &format!(
            "service {SERVICE}: {PROVIDER} has no IPv4 prefix (its attachment has no address)"
        ),
        "InvalidParameterValue",
    );
}

#[test]
fn an_attachment_needs_an_address_of_some_family_and_ipv4_neighbours_need_ipv4() {
    let mut atts = attachments();
    atts[0].address = None;
    expect_attachments(
        &atts,
        "vpcs[0].address",
        &format!("vpc attachment {CONSUMER}: an attachment needs an address, an address6 or both"),
        "InvalidParameterValue",
    );
    atts[0].address6 = Some(p("fd00:c1::1/64"));
    atts[0].gateway = Some(ip("10.1.0.254"));
    expect_attachments(
        &atts,
        "vpcs[0].gateway",
        &format!("vpc attachment {CONSUMER}: {CONSUMER} has no IPv4 prefix (its attachment has no address)"),
        "InvalidParameterValue",
    );
    // In TOML, `address` may be left out.
    let a: VpcAttachment = toml::from_str(
        "vpc_id = \"vpc-0c0000000000000c1\"\naccount = \"111111111111\"\nport = \"p\"\naddress6 = \"fd00:c1::1/64\"\n",
    )
    .unwrap();
    assert_eq!((a.address, a.address6), (None, Some(p("fd00:c1::1/64"))));
}
