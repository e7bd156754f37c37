use std::time::Duration;

use serde_json::json;

use super::*;
use crate::model::{
    IngressRule, IpAddressType, IpFamily, Protocol, RuleProtocol, SecurityGroup, StaticNeighbour,
};
use crate::net::IpNet;

const C: &str = "111111111111";
const P: &str = "222222222222";
const O: &str = "333333333333";
const CVPC: &str = "vpc-0c0000000000000c1";
const PVPC: &str = "vpc-0b0000000000000b1";
const OVPC: &str = "vpc-0a0000000000000a1";
const SVC: &str = "vpce-svc-0d0000000000000d1";
const SVC_NAME: &str = "com.privlink.vpce.local.vpce-svc-0d0000000000000d1";
const VPCE: &str = "vpce-0e0000000000000e1";
const NOW: u64 = 1_700_000_000;

fn acct(s: &str) -> AccountId {
    s.parse().unwrap()
}

fn consumer() -> Caller {
    Caller::account(acct(C))
}
fn provider() -> Caller {
    Caller::account(acct(P))
}
fn other() -> Caller {
    Caller::account(acct(O))
}

/// The demo configuration plus a third account with its own VPC (10.3.0.0/24).
/// The embedded default as an IPv4-only appliance (no IPv6 prefix, no dual-stack
/// endpoint; [`dual_config`] adds a prefix), and accounts, uids and a VPC more.
fn config() -> Config {
    let mut c = Config::embedded_default();
    for v in &mut c.vpcs {
        v.address6 = None;
    }
    for e in &mut c.endpoints {
        e.ip_address_type = IpAddressType::Ipv4;
        e.ip6 = None;
    }
    c.services[0].supported_ip_address_types = vec![IpFamily::Ipv4];
    c.accounts[0].uids = vec![1001];
    c.accounts[1].uids = vec![1002];
    c.accounts.push(Account {
        id: acct(O),
        name: "other".into(),
        uids: vec![1003],
    });
    c.vpcs.push(VpcAttachment {
        vpc_id: OVPC.parse().unwrap(),
        account: acct(O),
        port: "net_tap0".into(),
        vlan: Some(100),
        address: Some("10.3.0.1/24".parse().unwrap()),
        gateway: None,
        gateway6: None,
        static_neighbours6: vec![],
        static_neighbours: vec![StaticNeighbour {
            ip: "10.3.0.2".parse().unwrap(),
            mac: "02:00:00:00:00:03".parse().unwrap(),
        }],
        mss_clamp: None,
        address6: None,
    });
    c.validate().unwrap();
    c
}

fn store() -> Store {
    Store::new(&config(), None).unwrap().0
}

fn call(st: &mut Store, caller: &Caller, op: &str, args: Value) -> Result<Outcome, ApiError> {
    st.handle(caller, op, &args, NOW)
}

#[track_caller]
fn ok(st: &mut Store, caller: &Caller, op: &str, args: Value) -> Value {
    match call(st, caller, op, args) {
        Ok(o) => {
            assert!(
                is_mutating(op) || !o.changed(),
                "{op}: reads change nothing"
            );
            o.response
        }
        Err(e) => panic!("{op} failed: {e}"),
    }
}

/// Expects `code`, checks that the state did not change, and returns the message.
#[track_caller]
fn err(st: &mut Store, caller: &Caller, op: &str, args: Value, code: &str) -> String {
    let before = st.state().clone();
    let e = call(st, caller, op, args).expect_err(op);
    assert_eq!(e.code, code, "{op}: {e}");
    assert_eq!(
        st.state(),
        &before,
        "{op}: a failed request changes nothing"
    );
    e.message
}

/// A provider service in the provider VPC, acceptance required, allowing the consumer.
fn new_service(st: &mut Store) -> String {
    let r = ok(
        st,
        &provider(),
        "create-vpc-endpoint-service-configuration",
        json!({
            "VpcId": PVPC,
            "Listeners": [{"Protocol": "tcp", "Port": 443,
                           "Targets": [{"Id": "10.2.0.21", "Port": 8443}]}],
            "AllowedPrincipals": [C],
        }),
    );
    r["ServiceConfiguration"]["ServiceId"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn name_of(id: &str) -> String {
    format!("com.privlink.vpce.local.{id}")
}

fn new_endpoint(st: &mut Store, caller: &Caller, vpc: &str, service: &str) -> Value {
    ok(
        st,
        caller,
        "create-vpc-endpoint",
        json!({"VpcId": vpc, "ServiceName": name_of(service)}),
    )["VpcEndpoint"]
        .clone()
}

fn endpoint_state(st: &Store, id: &str) -> EndpointState {
    st.state().endpoint(id.parse().unwrap()).unwrap().state
}

// --- callers, actions, arguments -------------------------------------------------------

#[test]
fn version_is_for_everyone_and_nothing_else_is_for_unknown_uids() {
    let mut st = store();
    for caller in [Caller::anonymous(), Caller::admin(), consumer()] {
        let v = ok(&mut st, &caller, "version", json!({}));
        assert_eq!(v["Version"], env!("CARGO_PKG_VERSION"));
    }
    err(
        &mut st,
        &Caller::anonymous(),
        "describe-vpc-endpoints",
        json!({}),
        "UnauthorizedOperation",
    );
    err(
        &mut st,
        &consumer(),
        "frobnicate",
        json!({}),
        "InvalidAction",
    );
    err(
        &mut st,
        &Caller::admin(),
        "stats",
        json!({}),
        "InvalidAction",
    );
    err(
        &mut st,
        &Caller::admin(),
        "flows",
        json!(null),
        "InvalidAction",
    );
    err(
        &mut st,
        &consumer(),
        "version",
        json!({"X": 1}),
        "InvalidParameterValue",
    );
}

#[test]
fn callers_from_uids() {
    let st = store();
    assert_eq!(st.caller_for_uid(1001), consumer());
    assert_eq!(st.caller_for_uid(0), Caller::admin());
    assert_eq!(st.caller_for_uid(4242), Caller::anonymous());
}

#[test]
fn operations_table_and_mutating() {
    for &(op, help) in OPERATIONS {
        assert!(!help.is_empty(), "{op}");
    }
    assert!(is_mutating("create-vpc-endpoint"));
    assert!(!is_mutating("describe-vpc-endpoints"));
    assert!(!is_mutating("version"));
    assert!(OPERATIONS.iter().filter(|(op, _)| is_mutating(op)).count() == 15);
}

#[test]
fn malformed_arguments_name_the_key() {
    let mut st = store();
    let m = err(
        &mut st,
        &consumer(),
        "create-vpc-endpoint",
        json!({"ServiceName": SVC_NAME}),
        "MissingParameter",
    );
    assert!(m.contains("VpcId"), "{m}");
    let m = err(
        &mut st,
        &consumer(),
        "create-vpc-endpoint",
        json!({"VpcId": CVPC, "ServiceName": SVC_NAME, "Bogus": 1}),
        "InvalidParameterValue",
    );
    assert!(m.contains("unknown parameter Bogus"), "{m}");
    let m = err(
        &mut st,
        &consumer(),
        "create-vpc-endpoint",
        json!({"VpcId": 7, "ServiceName": SVC_NAME}),
        "InvalidParameterValue",
    );
    assert!(m.contains("VpcId must be a string"), "{m}");
    let m = err(
        &mut st,
        &consumer(),
        "create-vpc-endpoint",
        json!({"VpcId": "vpc-xyz", "ServiceName": SVC_NAME}),
        "InvalidVpcId.Malformed",
    );
    assert!(m.starts_with("VpcId: "), "{m}");
    err(
        &mut st,
        &consumer(),
        "create-vpc-endpoint",
        json!([1]),
        "InvalidParameterValue",
    );
    let m = err(
        &mut st,
        &provider(),
        "create-vpc-endpoint-service-configuration",
        json!({"VpcId": PVPC, "Listeners": [{"Protocol": "tcp", "Port": 0}]}),
        "InvalidParameterValue",
    );
    assert!(m.contains("Listeners[0].Port"), "{m}");
    let m = err(
        &mut st,
        &provider(),
        "create-vpc-endpoint-service-configuration",
        json!({"VpcId": PVPC, "Listeners": [{"Protocol": "tcp", "Port": 80, "Targets": [{"Port": 80}]}]}),
        "MissingParameter",
    );
    assert!(m.contains("Listeners[0].Targets[0].Id"), "{m}");
    err(
        &mut st,
        &provider(),
        "create-vpc-endpoint-service-configuration",
        json!({"VpcId": PVPC}),
        "MissingParameter",
    );
    err(
        &mut st,
        &consumer(),
        "describe-vpc-endpoints",
        json!({"VpcEndpointIds": ["vpce-1"]}),
        "InvalidEndpointId.Malformed",
    );
}

// --- services --------------------------------------------------------------------------

#[test]
fn create_service_allocates_a_snat_address_from_the_top() {
    let mut st = store();
    let r = ok(
        &mut st,
        &provider(),
        "create-vpc-endpoint-service-configuration",
        json!({"VpcId": PVPC, "Listeners": [{"Protocol": "TCP", "Port": 443}]}),
    );
    let s = &r["ServiceConfiguration"];
    let id = s["ServiceId"].as_str().unwrap();
    assert!(id.starts_with("vpce-svc-") && id.len() == 26, "{id}");
    assert_eq!(s["ServiceName"], name_of(id));
    assert_eq!(s["ServiceState"], "Available");
    assert_eq!(s["Owner"], P);
    assert_eq!(s["AcceptanceRequired"], true);
    assert_eq!(s["SnatAddresses"], json!(["10.2.0.254"]));
    assert_eq!(s["Listeners"][0]["Protocol"], "tcp");
    // The next one counts down.
    let r = ok(
        &mut st,
        &provider(),
        "create-vpc-endpoint-service-configuration",
        json!({"VpcId": PVPC, "Listeners": [], "AcceptanceRequired": false}),
    );
    assert_eq!(
        r["ServiceConfiguration"]["SnatAddresses"],
        json!(["10.2.0.253"])
    );
    assert_eq!(st.state().services.len(), 3);
}

#[test]
fn services_are_the_providers_own() {
    let mut st = store();
    // The consumer cannot use the provider's VPC; admin can, for the provider.
    let args = json!({"VpcId": PVPC, "Listeners": []});
    err(
        &mut st,
        &consumer(),
        "create-vpc-endpoint-service-configuration",
        args.clone(),
        "InvalidVpcId.NotFound",
    );
    let r = ok(
        &mut st,
        &Caller::admin(),
        "create-vpc-endpoint-service-configuration",
        args,
    );
    assert_eq!(r["ServiceConfiguration"]["Owner"], P);

    let all = ok(
        &mut st,
        &provider(),
        "describe-vpc-endpoint-service-configurations",
        json!({}),
    );
    assert_eq!(all["ServiceConfigurations"].as_array().unwrap().len(), 2);
    let none = ok(
        &mut st,
        &consumer(),
        "describe-vpc-endpoint-service-configurations",
        json!({}),
    );
    assert_eq!(none["ServiceConfigurations"], json!([]));
    err(
        &mut st,
        &consumer(),
        "describe-vpc-endpoint-service-configurations",
        json!({"ServiceIds": [SVC]}),
        "InvalidVpcEndpointServiceId.NotFound",
    );
    let one = ok(
        &mut st,
        &Caller::admin(),
        "describe-vpc-endpoint-service-configurations",
        json!({"ServiceIds": [SVC]}),
    );
    assert_eq!(one["ServiceConfigurations"][0]["ServiceId"], SVC);
    err(
        &mut st,
        &other(),
        "modify-vpc-endpoint-service-configuration",
        json!({"ServiceId": SVC, "AcceptanceRequired": true}),
        "InvalidVpcEndpointServiceId.NotFound",
    );
    err(
        &mut st,
        &consumer(),
        "register-targets",
        json!({"ServiceId": SVC, "Protocol": "tcp", "Port": 80, "Targets": [{"Id": "10.2.0.30"}]}),
        "InvalidVpcEndpointServiceId.NotFound",
    );
}

#[test]
fn modify_service() {
    let mut st = store();
    let o = call(
        &mut st,
        &provider(),
        "modify-vpc-endpoint-service-configuration",
        json!({"ServiceId": SVC, "AcceptanceRequired": true, "AddSnatAddresses": ["10.2.0.101"],
               "RemoveListeners": [{"Protocol": "udp", "Port": 9000}],
               "AddListeners": [{"Protocol": "udp", "Port": 53, "Targets": [{"Id": "10.2.0.11"}]}]}),
    )
    .unwrap();
    assert!(o.changed());
    assert_eq!(o.response, json!({"Return": true}));
    let s = st.state().service(SVC.parse().unwrap()).unwrap();
    assert!(s.acceptance_required);
    assert_eq!(s.snat_addresses.len(), 2);
    let l = s.listener(Protocol::Udp, 53).unwrap();
    assert_eq!(
        l.targets[0].port, 53,
        "the target port defaults to the listener's"
    );
    assert!(s.listener(Protocol::Udp, 9000).is_none());

    err(
        &mut st,
        &provider(),
        "modify-vpc-endpoint-service-configuration",
        json!({"ServiceId": SVC, "AddListeners": [{"Protocol": "tcp", "Port": 80}]}),
        "DuplicateListener",
    );
    err(
        &mut st,
        &provider(),
        "modify-vpc-endpoint-service-configuration",
        json!({"ServiceId": SVC, "RemoveListeners": [{"Protocol": "tcp", "Port": 81}]}),
        "ListenerNotFound",
    );
    err(
        &mut st,
        &provider(),
        "modify-vpc-endpoint-service-configuration",
        json!({"ServiceId": SVC, "RemoveSnatAddresses": ["10.2.0.100", "10.2.0.101"]}),
        "InvalidParameterValue",
    );
    err(
        &mut st,
        &provider(),
        "modify-vpc-endpoint-service-configuration",
        json!({"ServiceId": SVC, "AddSnatAddresses": ["10.2.0.11"]}),
        "InvalidIpAddress.InUse",
    );
    err(
        &mut st,
        &provider(),
        "modify-vpc-endpoint-service-configuration",
        json!({"ServiceId": SVC, "AddSnatAddresses": ["10.9.0.1"]}),
        "InvalidParameterValue",
    );
    // Nothing to do: unchanged.
    let o = call(
        &mut st,
        &provider(),
        "modify-vpc-endpoint-service-configuration",
        json!({"ServiceId": SVC}),
    )
    .unwrap();
    assert!(!o.changed());
}

/// The first listener of the first service `describe-vpc-endpoint-service-configurations`
/// shows for `id`.
fn described_listener(st: &mut Store, id: &str, j: usize) -> Value {
    ok(
        st,
        &provider(),
        "describe-vpc-endpoint-service-configurations",
        json!({"ServiceIds": [id]}),
    )["ServiceConfigurations"][0]["Listeners"][j]
        .clone()
}

#[test]
fn listener_settings_are_created_described_and_modified() {
    let mut st = store();
    let r = ok(
        &mut st,
        &provider(),
        "create-vpc-endpoint-service-configuration",
        json!({"VpcId": PVPC, "Listeners": [
            {"Protocol": "tcp", "Port": 443, "Targets": [{"Id": "10.2.0.21", "Port": 8443}],
             "HealthCheckProtocol": "HTTP", "HealthCheckPort": 8080, "HealthCheckPath": "/healthz",
             "Matcher": {"HttpCode": "200,302"}, "HealthCheckIntervalSeconds": 10,
             "HealthCheckTimeoutSeconds": 5, "HealthyThresholdCount": 3,
             "UnhealthyThresholdCount": 4, "ConnectionTerminationOnUnhealthy": false,
             "IdleTimeoutSeconds": 600},
            {"Protocol": "udp", "Port": 53, "HealthCheckEnabled": false, "Matcher": "204"},
        ]}),
    );
    let id = r["ServiceConfiguration"]["ServiceId"]
        .as_str()
        .unwrap()
        .to_owned();
    let l = &r["ServiceConfiguration"]["Listeners"][0];
    assert_eq!(
        *l,
        json!({"Protocol": "tcp", "Port": 443,
               "Targets": [{"Id": "10.2.0.21", "Port": 8443, "Weight": 1, "State": "registered"}],
               "HealthCheckEnabled": true, "HealthCheckProtocol": "http", "HealthCheckPort": 8080,
               "HealthCheckPath": "/healthz", "Matcher": "200,302",
               "HealthCheckIntervalSeconds": 10, "HealthCheckTimeoutSeconds": 5,
               "HealthyThresholdCount": 3, "UnhealthyThresholdCount": 4,
               "ConnectionTerminationOnUnhealthy": false, "IdleTimeoutSeconds": 600})
    );
    // What a listener leaves out is the cloud's default; no idle timeout of its own.
    let defaults = json!({"Protocol": "udp", "Port": 53, "Targets": [],
        "HealthCheckEnabled": false, "HealthCheckProtocol": "tcp",
        "HealthCheckPort": "traffic-port", "HealthCheckPath": "/", "Matcher": "204",
        "HealthCheckIntervalSeconds": 30, "HealthCheckTimeoutSeconds": 10,
        "HealthyThresholdCount": 5, "UnhealthyThresholdCount": 2,
        "ConnectionTerminationOnUnhealthy": true});
    assert_eq!(described_listener(&mut st, &id, 1), defaults);
    let s = st.state().service(id.parse().unwrap()).unwrap();
    let l = s.listener(Protocol::Tcp, 443).unwrap();
    assert_eq!(l.matcher.as_str(), "200,302");
    assert!(l.matcher.matches(302) && !l.matcher.matches(301));
    assert_eq!(l.idle_timeout_seconds, Some(600));

    // ModifyListeners changes the keys given and nothing else.
    let o = call(
        &mut st,
        &provider(),
        "modify-vpc-endpoint-service-configuration",
        json!({"ServiceId": id, "ModifyListeners": [
            {"Protocol": "udp", "Port": 53, "HealthCheckEnabled": true, "HealthCheckPort": 8080,
             "HealthCheckIntervalSeconds": 5, "HealthCheckTimeoutSeconds": 2},
            {"Protocol": "tcp", "Port": 443, "HealthCheckPort": "traffic-port",
             "Matcher": "200-299"},
        ]}),
    )
    .unwrap();
    assert!(o.changed());
    assert_eq!(o.touched, vec![id.clone()]);
    let mut expected = defaults;
    expected["HealthCheckEnabled"] = json!(true);
    expected["HealthCheckPort"] = json!(8080);
    expected["HealthCheckIntervalSeconds"] = json!(5);
    expected["HealthCheckTimeoutSeconds"] = json!(2);
    assert_eq!(described_listener(&mut st, &id, 1), expected);
    let tcp = described_listener(&mut st, &id, 0);
    assert_eq!(
        (
            &tcp["HealthCheckPort"],
            &tcp["Matcher"],
            &tcp["HealthCheckPath"]
        ),
        (
            &json!("traffic-port"),
            &json!("200-299"),
            &json!("/healthz")
        )
    );
    // The same values again: nothing changes.
    let o = call(
        &mut st,
        &provider(),
        "modify-vpc-endpoint-service-configuration",
        json!({"ServiceId": id, "ModifyListeners": [
            {"Protocol": "tcp", "Port": 443, "Matcher": "200-299"}]}),
    )
    .unwrap();
    assert!(!o.changed());

    // AddListeners takes the same settings; ModifyListeners can follow it in one request.
    ok(
        &mut st,
        &provider(),
        "modify-vpc-endpoint-service-configuration",
        json!({"ServiceId": id,
               "AddListeners": [{"Protocol": "tcp", "Port": 8443, "HealthCheckProtocol": "http"}],
               "ModifyListeners": [{"Protocol": "tcp", "Port": 8443, "HealthCheckPath": "/up"}]}),
    );
    let l = described_listener(&mut st, &id, 2);
    assert_eq!(
        (&l["HealthCheckProtocol"], &l["HealthCheckPath"]),
        (&json!("http"), &json!("/up"))
    );

    let m = err(
        &mut st,
        &provider(),
        "modify-vpc-endpoint-service-configuration",
        json!({"ServiceId": id, "ModifyListeners": [{"Protocol": "udp", "Port": 54,
                                                     "HealthCheckEnabled": false}]}),
        "ListenerNotFound",
    );
    assert!(m.contains("udp/54"), "{m}");
    // The model's rules on the result: the timeout stays below the interval.
    let m = err(
        &mut st,
        &provider(),
        "modify-vpc-endpoint-service-configuration",
        json!({"ServiceId": id, "ModifyListeners": [{"Protocol": "udp", "Port": 53,
                                                     "HealthCheckTimeoutSeconds": 5}]}),
        "InvalidParameterValue",
    );
    assert!(
        m.contains("health_check_timeout_seconds 5 must be lower than health_check_interval_seconds 5 (the cloud's rule"),
        "{m}"
    );
    let m = err(
        &mut st,
        &provider(),
        "modify-vpc-endpoint-service-configuration",
        json!({"ServiceId": id, "ModifyListeners": [{"Protocol": "tcp", "Port": 443,
                                                     "HealthCheckPath": "/a b"}]}),
        "InvalidParameterValue",
    );
    assert!(
        m.contains("listener tcp/443: health_check_path has byte 0x20"),
        "{m}"
    );

    // describe-target-health says which port each target is checked on.
    let h = ok(
        &mut st,
        &provider(),
        "describe-target-health",
        json!({"ServiceId": id}),
    );
    assert_eq!(
        h["TargetHealthDescriptions"][0]["HealthCheckPort"], 8443,
        "traffic-port: the target's own"
    );
    ok(
        &mut st,
        &provider(),
        "register-targets",
        json!({"ServiceId": id, "Protocol": "udp", "Port": 53, "Targets": [{"Id": "10.2.0.22"}]}),
    );
    let h = ok(
        &mut st,
        &provider(),
        "describe-target-health",
        json!({"ServiceId": id}),
    );
    assert_eq!(h["TargetHealthDescriptions"][1]["HealthCheckPort"], 8080);
}

#[test]
fn listener_settings_are_strict() {
    let mut st = store();
    let create = |listener: Value| {
        json!({"VpcId": PVPC, "Listeners": [
            {"Protocol": "tcp", "Port": 80, "Targets": [{"Id": "10.2.0.30"}]}, listener]})
    };
    for (setting, value, code, message) in [
        (
            "HealthCheckIntervalSeconds",
            json!(4),
            "InvalidParameterValue",
            "Listeners[1].HealthCheckIntervalSeconds must be an integer 5..=300",
        ),
        (
            "HealthCheckTimeoutSeconds",
            json!(121),
            "InvalidParameterValue",
            "Listeners[1].HealthCheckTimeoutSeconds must be an integer 2..=120",
        ),
        (
            "HealthyThresholdCount",
            json!(11),
            "InvalidParameterValue",
            "Listeners[1].HealthyThresholdCount must be an integer 2..=10",
        ),
        (
            "UnhealthyThresholdCount",
            json!("3"),
            "InvalidParameterValue",
            "Listeners[1].UnhealthyThresholdCount must be an integer 2..=10",
        ),
        (
            "IdleTimeoutSeconds",
            json!(59),
            "InvalidParameterValue",
            "Listeners[1].IdleTimeoutSeconds must be an integer 60..=6000",
        ),
        (
            "HealthCheckPort",
            json!(0),
            "InvalidParameterValue",
            "Listeners[1].HealthCheckPort must be an integer 1..=65535",
        ),
        (
            "HealthCheckPort",
            json!("8080"),
            "InvalidParameterValue",
            "Listeners[1].HealthCheckPort must be a port 1..=65535 or \"traffic-port\", not a string",
        ),
        (
            "HealthCheckEnabled",
            json!("true"),
            "InvalidParameterValue",
            "Listeners[1].HealthCheckEnabled must be a JSON boolean (true or false), not a string",
        ),
        (
            "ConnectionTerminationOnUnhealthy",
            json!(1),
            "InvalidParameterValue",
            "Listeners[1].ConnectionTerminationOnUnhealthy must be a JSON boolean (true or false), not a number",
        ),
        (
            "HealthCheckProtocol",
            json!("https"),
            "InvalidParameterValue",
            "Listeners[1].HealthCheckProtocol: invalid health check protocol \"https\": expected \"tcp\" or \"http\"",
        ),
        (
            "HealthCheckPath",
            json!(["/"]),
            "InvalidParameterValue",
            "Listeners[1].HealthCheckPath must be a string, not an array",
        ),
        (
            "Matcher",
            json!("200,300-200"),
            "InvalidParameterValue",
            "Listeners[1].Matcher: invalid matcher \"200,300-200\": \"300-200\": the range ends before it starts",
        ),
        (
            "Matcher",
            json!({"HttpCode": "99"}),
            "InvalidParameterValue",
            "Listeners[1].Matcher.HttpCode: invalid matcher \"99\": \"99\" is not an HTTP status code or range of codes in 200-599",
        ),
        (
            "Matcher",
            json!({"GrpcCode": "12"}),
            "InvalidParameterValue",
            "unknown parameter Listeners[1].Matcher.GrpcCode (expected: HttpCode)",
        ),
        (
            "Matcher",
            json!({}),
            "MissingParameter",
            "the request must contain the parameter Listeners[1].Matcher.HttpCode",
        ),
        (
            "Matcher",
            json!(200),
            "InvalidParameterValue",
            "Listeners[1].Matcher must be HTTP status codes such as \"200-399\", as a string or {\"HttpCode\": \"200-399\"}, not a number",
        ),
    ] {
        let mut listener = json!({"Protocol": "udp", "Port": 53});
        listener[setting] = value;
        let m = err(
            &mut st,
            &provider(),
            "create-vpc-endpoint-service-configuration",
            create(listener),
            code,
        );
        assert_eq!(m, message, "{setting}");
    }
    let m = err(
        &mut st,
        &provider(),
        "create-vpc-endpoint-service-configuration",
        create(json!({"Protocol": "udp", "Port": 53, "HealthCheckIntervalSecond": 10})),
        "InvalidParameterValue",
    );
    assert!(
        m.starts_with("unknown parameter Listeners[1].HealthCheckIntervalSecond (expected: ")
            && m.contains("HealthCheckIntervalSeconds"),
        "{m}"
    );
    // ModifyListeners names listeners and settings, never targets; RemoveListeners only
    // names listeners.
    let m = err(
        &mut st,
        &provider(),
        "modify-vpc-endpoint-service-configuration",
        json!({"ServiceId": SVC, "ModifyListeners": [{"Protocol": "tcp", "Port": 80,
                                                     "Targets": [{"Id": "10.2.0.31"}]}]}),
        "InvalidParameterValue",
    );
    assert!(
        m.starts_with("unknown parameter ModifyListeners[0].Targets"),
        "{m}"
    );
    let m = err(
        &mut st,
        &provider(),
        "modify-vpc-endpoint-service-configuration",
        json!({"ServiceId": SVC, "ModifyListeners": [{"Port": 80, "HealthCheckEnabled": false}]}),
        "MissingParameter",
    );
    assert!(m.contains("ModifyListeners[0].Protocol"), "{m}");
    let m = err(
        &mut st,
        &provider(),
        "modify-vpc-endpoint-service-configuration",
        json!({"ServiceId": SVC, "RemoveListeners": [{"Protocol": "tcp", "Port": 80,
                                                     "HealthCheckEnabled": false}]}),
        "InvalidParameterValue",
    );
    assert_eq!(
        m,
        "unknown parameter RemoveListeners[0].HealthCheckEnabled (expected: Protocol, Port)"
    );
    err(
        &mut st,
        &provider(),
        "modify-vpc-endpoint-service-configuration",
        json!({"ServiceId": SVC, "ModifyListeners": {"Protocol": "tcp", "Port": 80}}),
        "InvalidParameterValue",
    );
}

#[test]
fn service_permissions() {
    let mut st = store();
    let arn = format!("arn:aws:iam::{O}:root");
    ok(
        &mut st,
        &provider(),
        "modify-vpc-endpoint-service-permissions",
        json!({"ServiceId": SVC, "AddAllowedPrincipals": [arn, "*", C]}),
    );
    let r = ok(
        &mut st,
        &provider(),
        "describe-vpc-endpoint-service-permissions",
        json!({"ServiceId": SVC}),
    );
    assert_eq!(
        r["AllowedPrincipals"],
        json!([{"Principal": C, "PrincipalType": "Account"},
               {"Principal": O, "PrincipalType": "Account"},
               {"Principal": "*", "PrincipalType": "All"}])
    );
    ok(
        &mut st,
        &provider(),
        "modify-vpc-endpoint-service-permissions",
        json!({"ServiceId": SVC, "RemoveAllowedPrincipals": ["*", O]}),
    );
    assert_eq!(
        st.state()
            .service(SVC.parse().unwrap())
            .unwrap()
            .allowed_principals,
        vec![Principal::Account(acct(C))]
    );
    err(
        &mut st,
        &provider(),
        "modify-vpc-endpoint-service-permissions",
        json!({"ServiceId": SVC, "RemoveAllowedPrincipals": [O]}),
        "InvalidParameterValue",
    );
    err(
        &mut st,
        &provider(),
        "modify-vpc-endpoint-service-permissions",
        json!({"ServiceId": SVC, "AddAllowedPrincipals": ["12345"]}),
        "InvalidPrincipal",
    );
    err(
        &mut st,
        &consumer(),
        "describe-vpc-endpoint-service-permissions",
        json!({"ServiceId": SVC}),
        "InvalidVpcEndpointServiceId.NotFound",
    );
    let o = call(
        &mut st,
        &provider(),
        "modify-vpc-endpoint-service-permissions",
        json!({"ServiceId": SVC, "AddAllowedPrincipals": [C]}),
    )
    .unwrap();
    assert!(!o.changed(), "adding a present principal changes nothing");
}

#[test]
fn delete_service_is_refused_while_connected() {
    let mut st = store();
    let r = ok(
        &mut st,
        &provider(),
        "delete-vpc-endpoint-service-configurations",
        json!({"ServiceIds": [SVC]}),
    );
    assert_eq!(r["Unsuccessful"][0]["ResourceId"], SVC);
    assert_eq!(r["Unsuccessful"][0]["Error"]["Code"], "ServiceInUse");
    assert!(st.state().service(SVC.parse().unwrap()).is_some());
    ok(
        &mut st,
        &provider(),
        "reject-vpc-endpoint-connections",
        json!({"ServiceId": SVC, "VpcEndpointIds": [VPCE]}),
    );
    let r = ok(
        &mut st,
        &consumer(),
        "delete-vpc-endpoint-service-configurations",
        json!({"ServiceIds": [SVC]}),
    );
    assert_eq!(
        r["Unsuccessful"][0]["Error"]["Code"],
        "InvalidVpcEndpointServiceId.NotFound"
    );
    let r = ok(
        &mut st,
        &provider(),
        "delete-vpc-endpoint-service-configurations",
        json!({"ServiceIds": [SVC]}),
    );
    assert_eq!(r["Unsuccessful"], json!([]));
    assert!(st.state().services.is_empty());
    // The consumer still sees its endpoint, failed, until it deletes it.
    assert_eq!(endpoint_state(&st, VPCE), EndpointState::Failed);
    let r = ok(
        &mut st,
        &consumer(),
        "describe-vpc-endpoints",
        json!({"VpcEndpointIds": [VPCE]}),
    );
    assert_eq!(r["VpcEndpoints"][0]["State"], "failed");
    err(
        &mut st,
        &consumer(),
        "modify-vpc-endpoint",
        json!({"VpcEndpointId": VPCE, "ResetPolicy": true}),
        "IncorrectState",
    );
    ok(
        &mut st,
        &consumer(),
        "delete-vpc-endpoints",
        json!({"VpcEndpointIds": [VPCE]}),
    );
    assert_eq!(endpoint_state(&st, VPCE), EndpointState::Deleting);
}

// --- targets ---------------------------------------------------------------------------

#[test]
fn targets_register_drain_and_expire() {
    let mut st = store();
    let reg = |ip: &str| json!({"ServiceId": SVC, "Protocol": "tcp", "Port": 80, "Targets": [{"Id": ip, "Port": 8080, "Weight": 3}]});
    ok(&mut st, &provider(), "register-targets", reg("10.2.0.13"));
    ok(
        &mut st,
        &provider(),
        "deregister-targets",
        json!({"ServiceId": SVC, "Protocol": "tcp", "Port": 80, "Targets": [{"Id": "10.2.0.11", "Port": 8080}]}),
    );
    let h = ok(
        &mut st,
        &provider(),
        "describe-target-health",
        json!({"ServiceId": SVC}),
    );
    let states: Vec<(String, String)> = h["TargetHealthDescriptions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["Listener"]["Port"] == 80)
        .map(|d| {
            (
                d["Target"]["Id"].as_str().unwrap().to_owned(),
                d["TargetHealth"]["State"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            ("10.2.0.11", "draining"),
            ("10.2.0.12", "registered"),
            ("10.2.0.13", "registered")
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
    let listener = |st: &Store| st.state().services[0].listeners[0].clone();
    assert_eq!(listener(&st).targets[0].deregistered_at, Some(NOW));
    assert_eq!(listener(&st).targets[2].weight, 3);

    // Deregistering again keeps the first start time.
    st.handle(&provider(), "deregister-targets", &json!({"ServiceId": SVC, "Protocol": "tcp", "Port": 80, "Targets": [{"Id": "10.2.0.11", "Port": 8080}]}), NOW + 100).unwrap();
    assert_eq!(listener(&st).targets[0].deregistered_at, Some(NOW));
    assert!(!st.tick(NOW + 299));
    assert!(st.tick(NOW + 300));
    assert_eq!(listener(&st).targets.len(), 2);
    assert!(!st.tick(NOW + 301));

    // Re-registering a draining target makes it registered again.
    ok(
        &mut st,
        &provider(),
        "deregister-targets",
        json!({"ServiceId": SVC, "Protocol": "tcp", "Port": 80, "Targets": [{"Id": "10.2.0.12", "Port": 8080}]}),
    );
    ok(
        &mut st,
        &provider(),
        "register-targets",
        json!({"ServiceId": SVC, "Protocol": "tcp", "Port": 80, "Targets": [{"Id": "10.2.0.12", "Port": 8080}]}),
    );
    let t = &listener(&st).targets[0];
    assert_eq!(
        (t.state, t.deregistered_at, t.weight),
        (TargetState::Registered, None, 1)
    );

    err(
        &mut st,
        &provider(),
        "register-targets",
        json!({"ServiceId": SVC, "Protocol": "tcp", "Port": 81, "Targets": [{"Id": "10.2.0.13"}]}),
        "ListenerNotFound",
    );
    err(
        &mut st,
        &provider(),
        "deregister-targets",
        json!({"ServiceId": SVC, "Protocol": "tcp", "Port": 80, "Targets": [{"Id": "10.2.0.99", "Port": 8080}]}),
        "InvalidTarget",
    );
    err(
        &mut st,
        &provider(),
        "register-targets",
        reg("10.2.0.100"),
        "InvalidIpAddress.InUse",
    );
    err(
        &mut st,
        &provider(),
        "register-targets",
        reg("10.9.0.1"),
        "InvalidParameterValue",
    );
    err(
        &mut st,
        &provider(),
        "register-targets",
        json!({"ServiceId": SVC, "Protocol": "tcp", "Port": 80, "Targets": [{"Id": "10.2.0.14", "Weight": -1}]}),
        "InvalidParameterValue",
    );
}

#[test]
fn target_limit_is_the_maglev_size() {
    let mut c = config();
    c.tables.maglev_size = 3;
    let mut st = Store::new(&c, None).unwrap().0;
    ok(
        &mut st,
        &provider(),
        "register-targets",
        json!({"ServiceId": SVC, "Protocol": "tcp", "Port": 80, "Targets": [{"Id": "10.2.0.11", "Port": 8080, "Weight": 3}]}),
    );
    // Maglev needs more slots than targets: two fit in three slots, a third does not (the
    // store used to accept as many targets as slots, which the snapshot build refuses).
    let m = err(
        &mut st,
        &provider(),
        "register-targets",
        json!({"ServiceId": SVC, "Protocol": "tcp", "Port": 80, "Targets": [{"Id": "10.2.0.13"}]}),
        "TargetLimitExceeded",
    );
    assert!(m.contains("tables.maglev_size"), "{m}");
}

#[test]
fn quotas_refuse_growth_and_change_nothing() {
    let mut c = config();
    c.quotas.endpoints_per_vpc = 2;
    c.quotas.rules_per_security_group = 1;
    c.quotas.security_groups_per_endpoint = 1;
    c.quotas.policy_characters = 120;
    c.quotas.services_per_account = 2;
    c.quotas.listeners_per_service = 2;
    c.quotas.targets_per_listener = 2;
    c.quotas.security_groups_per_account = 2;
    let mut st = Store::new(&c, None).unwrap().0;
    let svc = new_service(&mut st);
    new_endpoint(&mut st, &consumer(), CVPC, &svc);
    err(
        &mut st,
        &consumer(),
        "create-vpc-endpoint",
        json!({"VpcId": CVPC, "ServiceName": name_of(&svc)}),
        "VpcEndpointLimitExceeded",
    );
    err(
        &mut st,
        &provider(),
        "create-vpc-endpoint-service-configuration",
        json!({"VpcId": PVPC, "Listeners": [{"Protocol": "tcp", "Port": 1}]}),
        "VpcEndpointServiceLimitExceeded",
    );
    err(
        &mut st,
        &provider(),
        "modify-vpc-endpoint-service-configuration",
        json!({"ServiceId": SVC, "AddListeners": [{"Protocol": "tcp", "Port": 81}]}),
        "ListenerLimitExceeded",
    );
    err(
        &mut st,
        &provider(),
        "register-targets",
        json!({"ServiceId": SVC, "Protocol": "tcp", "Port": 80, "Targets": [{"Id": "10.2.0.13"}]}),
        "TargetLimitExceeded",
    );
    let g1 = new_group(&mut st, &consumer(), CVPC, "a");
    let g2 = new_group(&mut st, &consumer(), CVPC, "b");
    err(
        &mut st,
        &consumer(),
        "create-security-group",
        json!({"VpcId": CVPC, "GroupName": "c"}),
        "SecurityGroupLimitExceeded",
    );
    let rule = |port: u16| json!({"GroupId": g1, "IpPermissions": [{"IpProtocol": "tcp", "FromPort": port, "ToPort": port, "IpRanges": [{"CidrIp": "10.1.0.0/24"}]}]});
    ok(
        &mut st,
        &consumer(),
        "authorize-security-group-ingress",
        rule(80),
    );
    err(
        &mut st,
        &consumer(),
        "authorize-security-group-ingress",
        rule(81),
        "RulesPerSecurityGroupLimitExceeded",
    );
    err(
        &mut st,
        &consumer(),
        "modify-vpc-endpoint",
        json!({"VpcEndpointId": VPCE, "AddSecurityGroupIds": [g1, g2]}),
        "SecurityGroupsPerInterfaceLimitExceeded",
    );
    let big = json!({"Statement": [{"Effect": "Allow", "Principal": "*", "Sid": "x".repeat(100)}]});
    err(
        &mut st,
        &consumer(),
        "modify-vpc-endpoint",
        json!({"VpcEndpointId": VPCE, "PolicyDocument": big}),
        "PolicySizeLimitExceeded",
    );
    // Lowering a quota below what exists refuses growth only: shrinking is fine.
    let mut lower = c.clone();
    lower.quotas.rules_per_security_group = 1;
    lower.quotas.endpoints_per_vpc = 1;
    let (mut st2, _) = Store::new(&lower, Some(st.state().clone())).unwrap();
    ok(
        &mut st2,
        &consumer(),
        "delete-vpc-endpoints",
        json!({"VpcEndpointIds": [VPCE]}),
    );
}

#[test]
fn strict_types_are_required() {
    let mut st = store();
    for (op, args) in [
        ("delete-vpc-endpoints", json!({"VpcEndpointIds": VPCE})),
        (
            "describe-vpc-endpoints",
            json!({"VpcEndpointIds": {"a": VPCE}}),
        ),
        (
            "modify-vpc-endpoint-service-permissions",
            json!({"ServiceId": SVC, "AddAllowedPrincipals": "*"}),
        ),
        (
            "register-targets",
            json!({"ServiceId": SVC, "Protocol": "tcp", "Port": "80", "Targets": [{"Id": "10.2.0.13"}]}),
        ),
        (
            "register-targets",
            json!({"ServiceId": SVC, "Protocol": "tcp", "Port": 80, "Targets": [{"Id": "10.2.0.13", "Port": "81"}]}),
        ),
        (
            "modify-vpc-endpoint-service-configuration",
            json!({"ServiceId": SVC, "AcceptanceRequired": "true"}),
        ),
        (
            "modify-vpc-endpoint-service-configuration",
            json!({"ServiceId": SVC, "AcceptanceRequired": 1}),
        ),
    ] {
        let caller = if op.contains("service") || op == "register-targets" {
            provider()
        } else {
            consumer()
        };
        let m = err(&mut st, &caller, op, args.clone(), "InvalidParameterValue");
        assert!(
            m.contains("must be a JSON") || m.contains("must be an integer"),
            "{op} {args}: {m}"
        );
    }
}

#[test]
fn client_tokens_make_creates_idempotent() {
    let mut st = store();
    let args = json!({"VpcId": CVPC, "GroupName": "web", "ClientToken": "tok-1"});
    let first = ok(&mut st, &consumer(), "create-security-group", args.clone());
    let groups = st.state().security_groups.len();
    // A retry (say, after a crash between save and answer) gets the same object again.
    let o = call(&mut st, &consumer(), "create-security-group", args).unwrap();
    assert!(!o.changed());
    assert_eq!(o.response, first);
    assert_eq!(st.state().security_groups.len(), groups);
    // Same token, other arguments.
    err(
        &mut st,
        &consumer(),
        "create-security-group",
        json!({"VpcId": CVPC, "GroupName": "other", "ClientToken": "tok-1"}),
        "IdempotentParameterMismatch",
    );
    // Tokens are per account: another account's identical token is its own.
    let svc = new_service(&mut st);
    let ep = json!({"VpcId": CVPC, "ServiceName": name_of(&svc), "ClientToken": "tok-1"});
    err(
        &mut st,
        &consumer(),
        "create-vpc-endpoint",
        ep.clone(),
        "IdempotentParameterMismatch",
    );
    let pep = json!({"VpcId": PVPC, "Listeners": [{"Protocol": "udp", "Port": 53}], "ClientToken": "tok-1"});
    let s1 = ok(
        &mut st,
        &provider(),
        "create-vpc-endpoint-service-configuration",
        pep.clone(),
    );
    let s2 = ok(
        &mut st,
        &provider(),
        "create-vpc-endpoint-service-configuration",
        pep,
    );
    assert_eq!(s1, s2);
    // Persisted with the state, forgotten after a day.
    let back = crate::persist::decode(&crate::persist::encode(st.state())).unwrap();
    assert_eq!(back.client_tokens.len(), 2);
    assert!(st.tick(NOW + CLIENT_TOKEN_SECS));
    assert!(st.state().client_tokens.is_empty());
    // Malformed tokens, and tokens on operations that create nothing.
    for bad in [json!(""), json!(7), json!("x".repeat(65)), json!("tab\t")] {
        err(
            &mut st,
            &consumer(),
            "create-security-group",
            json!({"VpcId": CVPC, "GroupName": "z", "ClientToken": bad}),
            "InvalidParameterValue",
        );
    }
    err(
        &mut st,
        &consumer(),
        "delete-vpc-endpoints",
        json!({"VpcEndpointIds": [VPCE], "ClientToken": "t"}),
        "InvalidParameterValue",
    );
}

#[test]
fn draining_targets_without_a_start_time_start_at_the_first_tick() {
    let mut c = config();
    c.services[0].listeners[0].targets[0].state = TargetState::Draining;
    c.timeouts.deregistration_delay = Duration::from_secs(10);
    let mut st = Store::new(&c, None).unwrap().0;
    assert!(st.tick(NOW));
    assert!(!st.tick(NOW + 9));
    assert!(st.tick(NOW + 10));
    assert_eq!(st.state().services[0].listeners[0].targets.len(), 1);
}

#[test]
fn deregistration_delay_config() {
    let c = Config::embedded_default();
    assert_eq!(c.timeouts.deregistration_delay, Duration::from_secs(300));
    let mut c = config();
    c.timeouts.deregistration_delay = Duration::ZERO;
    c.validate().unwrap();
    c.timeouts.deregistration_delay = Duration::from_secs(3601);
    let e = c.validate().unwrap_err();
    assert_eq!(
        e.path().unwrap().to_string(),
        "timeouts.deregistration_delay"
    );
    assert_eq!(
        e.to_string(),
        "timeouts.deregistration_delay: 3601 is outside 0..=3600"
    );
}

// --- endpoints and connections ---------------------------------------------------------

#[test]
fn endpoint_lifecycle_pending_available_rejected() {
    let mut st = store();
    let svc = new_service(&mut st);
    let e = new_endpoint(&mut st, &consumer(), CVPC, &svc);
    let id = e["VpcEndpointId"].as_str().unwrap().to_owned();
    assert!(id.starts_with("vpce-") && id.len() == 22, "{id}");
    assert_eq!(e["State"], "pendingAcceptance");
    assert_eq!(e["IpAddress"], "10.1.0.2", "lowest free address from .2");
    assert_eq!(e["OwnerId"], C);
    assert_eq!(e["VpcEndpointType"], "Interface");
    assert_eq!(e["ServiceName"], name_of(&svc));
    assert_eq!(e["CreationTimestamp"], "2023-11-14T22:13:20Z");
    assert_eq!(e["Groups"], json!([]));

    // The provider sees the connection; the consumer cannot answer it.
    let conns = ok(
        &mut st,
        &provider(),
        "describe-vpc-endpoint-connections",
        json!({"ServiceId": svc}),
    );
    let list = conns["VpcEndpointConnections"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["VpcEndpointId"], id.as_str());
    assert_eq!(list[0]["VpcEndpointOwner"], C);
    assert_eq!(list[0]["VpcEndpointState"], "pendingAcceptance");
    let all = ok(
        &mut st,
        &provider(),
        "describe-vpc-endpoint-connections",
        json!({}),
    );
    assert_eq!(all["VpcEndpointConnections"].as_array().unwrap().len(), 2);
    let none = ok(
        &mut st,
        &consumer(),
        "describe-vpc-endpoint-connections",
        json!({}),
    );
    assert_eq!(none["VpcEndpointConnections"], json!([]));
    err(
        &mut st,
        &consumer(),
        "accept-vpc-endpoint-connections",
        json!({"ServiceId": svc, "VpcEndpointIds": [id]}),
        "InvalidVpcEndpointServiceId.NotFound",
    );

    let r = ok(
        &mut st,
        &provider(),
        "accept-vpc-endpoint-connections",
        json!({"ServiceId": svc, "VpcEndpointIds": [id, VPCE]}),
    );
    assert_eq!(endpoint_state(&st, &id), EndpointState::Available);
    // VPCE is of another service: not found for this one.
    assert_eq!(r["Unsuccessful"][0]["ResourceId"], VPCE);
    assert_eq!(
        r["Unsuccessful"][0]["Error"]["Code"],
        "InvalidVpcEndpointId.NotFound"
    );

    let r = ok(
        &mut st,
        &provider(),
        "accept-vpc-endpoint-connections",
        json!({"ServiceId": svc, "VpcEndpointIds": [id]}),
    );
    assert_eq!(r["Unsuccessful"][0]["Error"]["Code"], "IncorrectState");
    ok(
        &mut st,
        &provider(),
        "reject-vpc-endpoint-connections",
        json!({"ServiceId": svc, "VpcEndpointIds": [id]}),
    );
    assert_eq!(endpoint_state(&st, &id), EndpointState::Rejected);
    let r = ok(
        &mut st,
        &provider(),
        "accept-vpc-endpoint-connections",
        json!({"ServiceId": svc, "VpcEndpointIds": [id]}),
    );
    assert_eq!(r["Unsuccessful"][0]["Error"]["Code"], "IncorrectState");
    let r = ok(
        &mut st,
        &provider(),
        "reject-vpc-endpoint-connections",
        json!({"ServiceId": svc, "VpcEndpointIds": [id]}),
    );
    assert_eq!(r["Unsuccessful"][0]["Error"]["Code"], "IncorrectState");
    assert_eq!(endpoint_state(&st, &id), EndpointState::Rejected);
    // A rejected endpoint still holds its address: the next one gets .3.
    let e2 = new_endpoint(&mut st, &consumer(), CVPC, &svc);
    assert_eq!(e2["IpAddress"], "10.1.0.3");
}

#[test]
fn who_may_connect() {
    let mut st = store();
    let svc = new_service(&mut st);
    // Another account, in its own VPC, is not an allowed principal.
    let m = err(
        &mut st,
        &other(),
        "create-vpc-endpoint",
        json!({"VpcId": OVPC, "ServiceName": name_of(&svc)}),
        "InvalidServiceName",
    );
    // Exactly as for a service that does not exist: nothing tells them apart.
    let missing = "com.privlink.vpce.local.vpce-svc-0123456789abcdef0";
    let m2 = err(
        &mut st,
        &other(),
        "create-vpc-endpoint",
        json!({"VpcId": OVPC, "ServiceName": missing}),
        "InvalidServiceName",
    );
    assert_eq!(m.replace(&name_of(&svc), missing), m2);
    // Nor may it use the consumer's VPC.
    err(
        &mut st,
        &other(),
        "create-vpc-endpoint",
        json!({"VpcId": CVPC, "ServiceName": name_of(&svc)}),
        "InvalidVpcId.NotFound",
    );
    ok(
        &mut st,
        &provider(),
        "modify-vpc-endpoint-service-permissions",
        json!({"ServiceId": svc, "AddAllowedPrincipals": ["*"]}),
    );
    let e = new_endpoint(&mut st, &other(), OVPC, &svc);
    assert_eq!(
        e["IpAddress"], "10.3.0.3",
        "the static neighbour .2 is skipped"
    );
    assert_eq!(e["State"], "pendingAcceptance");

    // The service owner's own endpoint needs no acceptance.
    let e = new_endpoint(&mut st, &provider(), PVPC, &svc);
    assert_eq!(e["State"], "available");
    assert_eq!(e["IpAddress"], "10.2.0.2");

    // Admin creates for the VPC's owner.
    let e = new_endpoint(&mut st, &Caller::admin(), CVPC, &svc);
    assert_eq!(e["OwnerId"], C);
    assert_eq!(e["State"], "pendingAcceptance");

    err(
        &mut st,
        &consumer(),
        "create-vpc-endpoint",
        json!({"VpcId": CVPC, "ServiceName": name_of("vpce-svc-00000000000000042")}),
        "InvalidServiceName",
    );
    err(
        &mut st,
        &consumer(),
        "create-vpc-endpoint",
        json!({"VpcId": CVPC, "ServiceName": "com.privlink.vpce.us-east-1.vpce-svc-0d0000000000000d1"}),
        "InvalidServiceName",
    );
    err(
        &mut st,
        &consumer(),
        "create-vpc-endpoint",
        json!({"VpcId": CVPC, "ServiceName": "nonsense"}),
        "InvalidServiceName",
    );
    err(
        &mut st,
        &consumer(),
        "create-vpc-endpoint",
        json!({"VpcId": CVPC, "ServiceName": SVC_NAME, "VpcEndpointType": "Gateway"}),
        "InvalidParameterValue",
    );
}

#[test]
fn auto_accepted_accounts_skip_pending_acceptance_but_need_permission() {
    let mut st = store();
    let r = ok(
        &mut st,
        &provider(),
        "create-vpc-endpoint-service-configuration",
        json!({"VpcId": PVPC, "Listeners": [], "AllowedPrincipals": [C],
               "AutoAcceptPrincipals": [C, O, C]}),
    );
    assert_eq!(
        r["ServiceConfiguration"]["AutoAcceptPrincipals"],
        json!([C, O]),
        "repeats dropped, as for AllowedPrincipals"
    );
    assert_eq!(r["ServiceConfiguration"]["ConnectionLimits"], json!([]));
    let svc = r["ServiceConfiguration"]["ServiceId"]
        .as_str()
        .unwrap()
        .to_owned();
    let e = new_endpoint(&mut st, &consumer(), CVPC, &svc);
    assert_eq!(
        e["State"], "available",
        "acceptance required, but auto-accepted"
    );
    // Auto-acceptance grants no permission.
    err(
        &mut st,
        &other(),
        "create-vpc-endpoint",
        json!({"VpcId": OVPC, "ServiceName": name_of(&svc)}),
        "InvalidServiceName",
    );
    ok(
        &mut st,
        &provider(),
        "modify-vpc-endpoint-service-configuration",
        json!({"ServiceId": svc, "RemoveAutoAcceptPrincipals": [C],
               "AddAutoAcceptPrincipals": [O, "*"]}),
    );
    let s = st.state().service(svc.parse().unwrap()).unwrap();
    assert_eq!(
        s.auto_accept_principals,
        vec![Principal::Account(acct(O)), Principal::Any]
    );
    ok(
        &mut st,
        &provider(),
        "modify-vpc-endpoint-service-configuration",
        json!({"ServiceId": svc, "RemoveAutoAcceptPrincipals": ["*"]}),
    );
    let e = new_endpoint(&mut st, &consumer(), CVPC, &svc);
    assert_eq!(e["State"], "pendingAcceptance", "no longer auto-accepted");
    let m = err(
        &mut st,
        &provider(),
        "modify-vpc-endpoint-service-configuration",
        json!({"ServiceId": svc, "RemoveAutoAcceptPrincipals": [C]}),
        "InvalidParameterValue",
    );
    assert_eq!(
        m,
        format!("RemoveAutoAcceptPrincipals: {C} is not an auto-accept principal of service {svc}")
    );
    err(
        &mut st,
        &provider(),
        "modify-vpc-endpoint-service-configuration",
        json!({"ServiceId": svc, "AddAutoAcceptPrincipals": ["12345"]}),
        "InvalidPrincipal",
    );
    // Without acceptance required, everyone allowed is accepted anyway.
    ok(
        &mut st,
        &provider(),
        "modify-vpc-endpoint-service-configuration",
        json!({"ServiceId": svc, "AcceptanceRequired": false,
               "RemoveAutoAcceptPrincipals": [O]}),
    );
    let e = new_endpoint(&mut st, &consumer(), CVPC, &svc);
    assert_eq!(e["State"], "available");
}

#[test]
fn connection_limits_refuse_new_endpoints_only() {
    let mut st = store();
    let r = ok(
        &mut st,
        &provider(),
        "create-vpc-endpoint-service-configuration",
        json!({"VpcId": PVPC, "Listeners": [], "AllowedPrincipals": ["*"],
               "ConnectionLimits": [{"Principal": C, "Limit": 1},
                                    {"Principal": "*", "Limit": 2}]}),
    );
    assert_eq!(
        r["ServiceConfiguration"]["ConnectionLimits"],
        json!([{"Principal": C, "Limit": 1}, {"Principal": "*", "Limit": 2}])
    );
    let svc = r["ServiceConfiguration"]["ServiceId"]
        .as_str()
        .unwrap()
        .to_owned();
    let first = new_endpoint(&mut st, &consumer(), CVPC, &svc);
    let m = err(
        &mut st,
        &consumer(),
        "create-vpc-endpoint",
        json!({"VpcId": CVPC, "ServiceName": name_of(&svc)}),
        "ConnectionLimitExceeded",
    );
    assert_eq!(
        m,
        format!(
            "account {C} may connect at most 1 endpoints to service {svc} and has 1 \
             (pendingAcceptance or available)"
        )
    );
    // The limit is per account: the other account has "*"'s two.
    new_endpoint(&mut st, &other(), OVPC, &svc);
    new_endpoint(&mut st, &other(), OVPC, &svc);
    err(
        &mut st,
        &other(),
        "create-vpc-endpoint",
        json!({"VpcId": OVPC, "ServiceName": name_of(&svc)}),
        "ConnectionLimitExceeded",
    );
    // A rejected endpoint no longer counts; an accepted one still does.
    let first = first["VpcEndpointId"].as_str().unwrap().to_owned();
    ok(
        &mut st,
        &provider(),
        "reject-vpc-endpoint-connections",
        json!({"ServiceId": svc, "VpcEndpointIds": [first]}),
    );
    let second = new_endpoint(&mut st, &consumer(), CVPC, &svc);
    let second = second["VpcEndpointId"].as_str().unwrap().to_owned();
    ok(
        &mut st,
        &provider(),
        "accept-vpc-endpoint-connections",
        json!({"ServiceId": svc, "VpcEndpointIds": [second]}),
    );
    err(
        &mut st,
        &consumer(),
        "create-vpc-endpoint",
        json!({"VpcId": CVPC, "ServiceName": name_of(&svc)}),
        "ConnectionLimitExceeded",
    );
    // Without its own limit the account has "*"'s; a limit added again replaces the
    // account's own, and one lowered below what an account has leaves its endpoints be.
    ok(
        &mut st,
        &provider(),
        "modify-vpc-endpoint-service-configuration",
        json!({"ServiceId": svc, "RemoveConnectionLimits": [C]}),
    );
    new_endpoint(&mut st, &consumer(), CVPC, &svc);
    let before = st.state().endpoints.clone();
    ok(
        &mut st,
        &provider(),
        "modify-vpc-endpoint-service-configuration",
        json!({"ServiceId": svc, "AddConnectionLimits": [{"Principal": "*", "Limit": 0}]}),
    );
    assert_eq!(st.state().endpoints, before, "no endpoint is touched");
    let s = st.state().service(svc.parse().unwrap()).unwrap();
    assert_eq!(s.connection_limits.len(), 1);
    assert_eq!(s.connection_limit(acct(O)), Some(0));
    let m = err(
        &mut st,
        &other(),
        "create-vpc-endpoint",
        json!({"VpcId": OVPC, "ServiceName": name_of(&svc)}),
        "ConnectionLimitExceeded",
    );
    assert!(
        m.contains("at most 0 endpoints") && m.contains("has 2"),
        "{m}"
    );
    // Deleting makes room: a deleting endpoint is not connected.
    ok(
        &mut st,
        &provider(),
        "modify-vpc-endpoint-service-configuration",
        json!({"ServiceId": svc, "AddConnectionLimits": [{"Principal": O, "Limit": 2}]}),
    );
    let theirs: Vec<String> = st
        .state()
        .endpoints
        .iter()
        .filter(|e| e.owner == acct(O))
        .map(|e| e.id.to_string())
        .collect();
    ok(
        &mut st,
        &other(),
        "delete-vpc-endpoints",
        json!({"VpcEndpointIds": [theirs[0]]}),
    );
    new_endpoint(&mut st, &other(), OVPC, &svc);
}

#[test]
fn connection_limit_arguments_are_strict() {
    let mut st = store();
    let modify = |extra: Value| {
        let mut a = json!({"ServiceId": SVC});
        for (k, v) in extra.as_object().unwrap() {
            a[k] = v.clone();
        }
        a
    };
    for (extra, code, message) in [
        (
            json!({"AddConnectionLimits": [{"Principal": C, "Limit": -1}]}),
            "InvalidParameterValue",
            "AddConnectionLimits[0].Limit must be an integer 0..=4294967295".to_owned(),
        ),
        (
            json!({"AddConnectionLimits": [{"Principal": C, "Limit": "2"}]}),
            "InvalidParameterValue",
            "AddConnectionLimits[0].Limit must be an integer 0..=4294967295".to_owned(),
        ),
        (
            json!({"AddConnectionLimits": [{"Principal": C}]}),
            "MissingParameter",
            "the request must contain the parameter AddConnectionLimits[0].Limit".to_owned(),
        ),
        (
            json!({"AddConnectionLimits": [{"Principal": C, "Limit": 1, "Max": 2}]}),
            "InvalidParameterValue",
            "unknown parameter AddConnectionLimits[0].Max (expected: Principal, Limit)".to_owned(),
        ),
        (
            json!({"AddConnectionLimits": [{"Principal": C, "Limit": 1},
                                           {"Principal": format!("arn:aws:iam::{C}:root"), "Limit": 2}]}),
            "InvalidParameterValue",
            format!("AddConnectionLimits[1].Principal: {C} is given a limit twice"),
        ),
        (
            json!({"AddConnectionLimits": {"Principal": C, "Limit": 1}}),
            "InvalidParameterValue",
            "AddConnectionLimits must be a JSON array, not an object".to_owned(),
        ),
        (
            json!({"RemoveConnectionLimits": [C]}),
            "InvalidParameterValue",
            format!("RemoveConnectionLimits: {C} has no connection limit on service {SVC}"),
        ),
        (
            json!({"RemoveConnectionLimits": [{"Principal": C}]}),
            "InvalidParameterValue",
            "RemoveConnectionLimits[0] must be a string".to_owned(),
        ),
        (
            json!({"AddAutoAcceptPrincipals": C}),
            "InvalidParameterValue",
            "AddAutoAcceptPrincipals must be a JSON array, not a string".to_owned(),
        ),
    ] {
        let m = err(
            &mut st,
            &provider(),
            "modify-vpc-endpoint-service-configuration",
            modify(extra.clone()),
            code,
        );
        assert_eq!(m, message, "{extra}");
    }
    let m = err(
        &mut st,
        &provider(),
        "create-vpc-endpoint-service-configuration",
        json!({"VpcId": PVPC, "Listeners": [],
               "ConnectionLimits": [{"Principal": "*", "Limit": 1}, {"Principal": "*", "Limit": 1}]}),
        "InvalidParameterValue",
    );
    assert_eq!(m, "ConnectionLimits[1].Principal: * is given a limit twice");
}

#[test]
fn endpoint_addresses() {
    let mut st = store();
    let e = ok(
        &mut st,
        &consumer(),
        "create-vpc-endpoint",
        json!({"VpcId": CVPC, "ServiceName": SVC_NAME, "IpAddress": "10.1.0.50"}),
    )["VpcEndpoint"]
        .clone();
    assert_eq!(
        e["State"], "available",
        "the demo service needs no acceptance"
    );
    assert_eq!(e["IpAddress"], "10.1.0.50");
    let m = err(
        &mut st,
        &consumer(),
        "create-vpc-endpoint",
        json!({"VpcId": CVPC, "ServiceName": SVC_NAME, "IpAddress": "10.1.0.100"}),
        "InvalidIpAddress.InUse",
    );
    assert!(m.contains(VPCE), "{m}");
    err(
        &mut st,
        &consumer(),
        "create-vpc-endpoint",
        json!({"VpcId": CVPC, "ServiceName": SVC_NAME, "IpAddress": "10.1.0.1"}),
        "InvalidIpAddress.InUse",
    );
    err(
        &mut st,
        &consumer(),
        "create-vpc-endpoint",
        json!({"VpcId": CVPC, "ServiceName": SVC_NAME, "IpAddress": "10.2.0.5"}),
        "InvalidParameterValue",
    );
    err(
        &mut st,
        &consumer(),
        "create-vpc-endpoint",
        json!({"VpcId": CVPC, "ServiceName": SVC_NAME, "IpAddress": "10.1.0.255"}),
        "InvalidParameterValue",
    );
    err(
        &mut st,
        &consumer(),
        "create-vpc-endpoint",
        json!({"VpcId": CVPC, "ServiceName": SVC_NAME, "IpAddress": "10.1.0"}),
        "InvalidParameterValue",
    );
}

#[test]
fn address_pool_exhaustion() {
    let mut c = config();
    c.vpcs[0].address = Some("10.1.0.1/30".parse().unwrap());
    c.endpoints.clear();
    let mut st = Store::new(&c, None).unwrap().0;
    let e = new_endpoint(&mut st, &consumer(), CVPC, SVC);
    assert_eq!(e["IpAddress"], "10.1.0.2");
    err(
        &mut st,
        &consumer(),
        "create-vpc-endpoint",
        json!({"VpcId": CVPC, "ServiceName": SVC_NAME}),
        "InsufficientFreeAddressesInSubnet",
    );
}

#[test]
fn describe_and_filter_endpoints() {
    let mut st = store();
    let svc = new_service(&mut st);
    let e = new_endpoint(&mut st, &consumer(), CVPC, &svc);
    let id = e["VpcEndpointId"].as_str().unwrap();
    let all = ok(&mut st, &consumer(), "describe-vpc-endpoints", json!({}));
    assert_eq!(all["VpcEndpoints"].as_array().unwrap().len(), 2);
    let count = |st: &mut Store, filters: Value| {
        ok(
            st,
            &consumer(),
            "describe-vpc-endpoints",
            json!({"Filters": filters}),
        )["VpcEndpoints"]
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(
        count(
            &mut st,
            json!([{"Name": "vpc-endpoint-state", "Values": ["pendingAcceptance"]}])
        ),
        1
    );
    assert_eq!(
        count(
            &mut st,
            json!([{"Name": "service-name", "Values": [SVC_NAME, name_of(&svc)]}])
        ),
        2
    );
    assert_eq!(
        count(&mut st, json!([{"Name": "vpc-id", "Values": [PVPC]}])),
        0
    );
    assert_eq!(
        count(
            &mut st,
            json!([{"Name": "vpc-endpoint-id", "Values": [id]}, {"Name": "vpc-id", "Values": [CVPC]}])
        ),
        1
    );
    err(
        &mut st,
        &consumer(),
        "describe-vpc-endpoints",
        json!({"Filters": [{"Name": "tag:x", "Values": ["y"]}]}),
        "InvalidParameterValue",
    );
    let one = ok(
        &mut st,
        &consumer(),
        "describe-vpc-endpoints",
        json!({"VpcEndpointIds": [VPCE]}),
    );
    assert_eq!(one["VpcEndpoints"][0]["VpcEndpointId"], VPCE);
    assert!(
        one["VpcEndpoints"][0].get("CreationTimestamp").is_none(),
        "declared: unknown"
    );

    // Others see nothing; admin sees all.
    let none = ok(&mut st, &provider(), "describe-vpc-endpoints", json!({}));
    assert_eq!(none["VpcEndpoints"], json!([]));
    err(
        &mut st,
        &provider(),
        "describe-vpc-endpoints",
        json!({"VpcEndpointIds": [VPCE]}),
        "InvalidVpcEndpointId.NotFound",
    );
    let all = ok(
        &mut st,
        &Caller::admin(),
        "describe-vpc-endpoints",
        json!({}),
    );
    assert_eq!(all["VpcEndpoints"].as_array().unwrap().len(), 2);
}

#[test]
fn delete_endpoints() {
    let mut st = store();
    let r = ok(
        &mut st,
        &provider(),
        "delete-vpc-endpoints",
        json!({"VpcEndpointIds": [VPCE]}),
    );
    assert_eq!(
        r["Unsuccessful"][0]["Error"]["Code"],
        "InvalidVpcEndpointId.NotFound"
    );
    assert_eq!(st.state().endpoints.len(), 1);
    let o = call(
        &mut st,
        &consumer(),
        "delete-vpc-endpoints",
        json!({"VpcEndpointIds": [VPCE]}),
    )
    .unwrap();
    assert!(o.changed());
    assert_eq!(o.response, json!({"Unsuccessful": []}));
    // Deleting, then deleted and visible for an hour, then forgotten.
    assert_eq!(endpoint_state(&st, VPCE), EndpointState::Deleting);
    let again = call(
        &mut st,
        &consumer(),
        "delete-vpc-endpoints",
        json!({"VpcEndpointIds": [VPCE]}),
    )
    .unwrap();
    assert!(!again.changed(), "deleting twice changes nothing");
    assert!(!st.tick(NOW), "deleting for at least a second");
    assert!(st.tick(NOW + 1));
    assert_eq!(endpoint_state(&st, VPCE), EndpointState::Deleted);
    let r = ok(
        &mut st,
        &consumer(),
        "describe-vpc-endpoints",
        json!({"Filters": [{"Name": "vpc-endpoint-state", "Values": ["deleted"]}]}),
    );
    assert_eq!(r["VpcEndpoints"][0]["VpcEndpointId"], VPCE);
    assert!(
        st.prepare_tick(NOW + 2).is_none(),
        "nothing is due while a deleted endpoint waits out its hour"
    );
    assert!(!st.tick(NOW + DELETED_ENDPOINT_SECS - 1));
    assert!(st.tick(NOW + DELETED_ENDPOINT_SECS));
    assert!(st.state().endpoints.is_empty());
    err(
        &mut st,
        &consumer(),
        "delete-vpc-endpoints",
        json!({}),
        "MissingParameter",
    );
}

#[test]
fn endpoint_policies() {
    let mut st = store();
    let doc = json!({"Statement": [{"Effect": "Allow", "Port": 80}]});
    let e = ok(
        &mut st,
        &consumer(),
        "create-vpc-endpoint",
        json!({"VpcId": CVPC, "ServiceName": SVC_NAME, "PolicyDocument": doc.to_string()}),
    )["VpcEndpoint"]
        .clone();
    let id = e["VpcEndpointId"].as_str().unwrap().to_owned();
    let stored: Value = serde_json::from_str(e["PolicyDocument"].as_str().unwrap()).unwrap();
    assert_eq!(stored, doc);
    assert_eq!(
        st.state().endpoint(id.parse().unwrap()).unwrap().policy,
        Some(doc)
    );

    let m = err(
        &mut st,
        &consumer(),
        "create-vpc-endpoint",
        json!({"VpcId": CVPC, "ServiceName": SVC_NAME, "PolicyDocument": {"Statement": [{"Effect": "Maybe"}]}}),
        "InvalidPolicyDocument",
    );
    assert!(m.contains("Statement[0].Effect"), "{m}");
    err(
        &mut st,
        &consumer(),
        "create-vpc-endpoint",
        json!({"VpcId": CVPC, "ServiceName": SVC_NAME, "PolicyDocument": "{not json"}),
        "InvalidPolicyDocument",
    );

    let deny = json!({"Statement": [{"Effect": "Deny", "SourceCidr": "10.1.0.0/25"}, {"Effect": "Allow"}]});
    ok(
        &mut st,
        &consumer(),
        "modify-vpc-endpoint",
        json!({"VpcEndpointId": id, "PolicyDocument": deny}),
    );
    assert_eq!(
        st.state().endpoint(id.parse().unwrap()).unwrap().policy,
        Some(deny)
    );
    err(
        &mut st,
        &consumer(),
        "modify-vpc-endpoint",
        json!({"VpcEndpointId": id, "PolicyDocument": {"Statement": []}, "ResetPolicy": true}),
        "InvalidParameterCombination",
    );
    err(
        &mut st,
        &consumer(),
        "modify-vpc-endpoint",
        json!({"VpcEndpointId": id, "PolicyDocument": {"Statement": 1}}),
        "InvalidPolicyDocument",
    );
    err(
        &mut st,
        &provider(),
        "modify-vpc-endpoint",
        json!({"VpcEndpointId": id, "ResetPolicy": true}),
        "InvalidVpcEndpointId.NotFound",
    );
    ok(
        &mut st,
        &consumer(),
        "modify-vpc-endpoint",
        json!({"VpcEndpointId": id, "ResetPolicy": true}),
    );
    assert_eq!(
        st.state().endpoint(id.parse().unwrap()).unwrap().policy,
        None
    );
}

#[test]
fn invalid_policy_in_state_is_a_model_error() {
    let mut c = config();
    c.endpoints[0].policy = Some(json!({"Statement": [{"Effect": "Allow", "Port": 0}]}));
    let e = Store::new(&c, None).unwrap_err();
    assert_eq!(e.code(), "InvalidPolicyDocument");
    let LoadError::Model(e) = e else {
        panic!("{e}")
    };
    assert_eq!(e.path().to_string(), "endpoints[0].policy");
}

// --- security groups -------------------------------------------------------------------

fn new_group(st: &mut Store, caller: &Caller, vpc: &str, name: &str) -> String {
    ok(
        st,
        caller,
        "create-security-group",
        json!({"VpcId": vpc, "GroupName": name, "Description": "d"}),
    )["GroupId"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn security_groups() {
    let mut st = store();
    let sg = new_group(&mut st, &consumer(), CVPC, "web");
    assert!(sg.starts_with("sg-") && sg.len() == 20, "{sg}");
    err(
        &mut st,
        &consumer(),
        "create-security-group",
        json!({"VpcId": CVPC, "GroupName": "web"}),
        "InvalidGroup.Duplicate",
    );
    err(
        &mut st,
        &provider(),
        "create-security-group",
        json!({"VpcId": CVPC, "GroupName": "x"}),
        "InvalidVpcId.NotFound",
    );
    err(
        &mut st,
        &consumer(),
        "create-security-group",
        json!({"VpcId": CVPC, "GroupName": ""}),
        "InvalidParameterValue",
    );

    let perm = json!({"GroupId": sg, "IpPermissions": [
        {"IpProtocol": "tcp", "FromPort": 80, "ToPort": 443, "IpRanges": [{"CidrIp": "10.1.0.7/24"}, {"CidrIp": "192.168.0.0/16"}]},
        {"IpProtocol": "icmp", "FromPort": -1, "ToPort": -1, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]},
        {"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80, "Ipv6Ranges": [{"CidrIpv6": "fd00:c1::7/64"}]},
    ]});
    ok(
        &mut st,
        &consumer(),
        "authorize-security-group-ingress",
        perm.clone(),
    );
    err(
        &mut st,
        &consumer(),
        "authorize-security-group-ingress",
        perm.clone(),
        "InvalidPermission.Duplicate",
    );
    err(
        &mut st,
        &consumer(),
        "authorize-security-group-ingress",
        json!({"GroupId": sg, "IpPermissions": [{"IpProtocol": "tcp", "IpRanges": [{"CidrIp": "1.0.0.0/8"}]}]}),
        "MissingParameter",
    );
    err(
        &mut st,
        &consumer(),
        "authorize-security-group-ingress",
        json!({"GroupId": sg, "IpPermissions": [{"IpProtocol": "tcp", "FromPort": 9, "ToPort": 8, "IpRanges": [{"CidrIp": "1.0.0.0/8"}]}]}),
        "InvalidParameterValue",
    );
    err(
        &mut st,
        &consumer(),
        "authorize-security-group-ingress",
        json!({"GroupId": sg, "IpPermissions": [{"IpProtocol": "gre", "IpRanges": [{"CidrIp": "1.0.0.0/8"}]}]}),
        "InvalidParameterValue",
    );
    // Each list holds its own family; one of them must name a range.
    for (ranges, code) in [
        (
            json!({"Ipv6Ranges": [{"CidrIpv6": "10.0.0.0/8"}]}),
            "InvalidParameterValue",
        ),
        (
            json!({"IpRanges": [{"CidrIp": "fd00::/8"}]}),
            "InvalidParameterValue",
        ),
        (
            json!({"Ipv6Ranges": [{"CidrIpv6": "fd00::/129"}]}),
            "InvalidParameterValue",
        ),
        (
            json!({"Ipv6Ranges": [{"CidrIp": "fd00::/8"}]}),
            "InvalidParameterValue",
        ),
        (json!({"Ipv6Ranges": []}), "MissingParameter"),
    ] {
        let mut p = json!({"IpProtocol": "-1"});
        p.as_object_mut()
            .unwrap()
            .extend(ranges.as_object().unwrap().clone());
        err(
            &mut st,
            &consumer(),
            "authorize-security-group-ingress",
            json!({"GroupId": sg, "IpPermissions": [p]}),
            code,
        );
    }
    err(
        &mut st,
        &other(),
        "authorize-security-group-ingress",
        json!({"GroupId": sg, "IpPermissions": [{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "1.0.0.0/8"}]}]}),
        "InvalidGroup.NotFound",
    );

    let g = st
        .state()
        .security_group(sg.parse().unwrap())
        .unwrap()
        .clone();
    assert_eq!(g.ingress.len(), 4);
    assert_eq!(
        g.ingress[0].cidr.to_string(),
        "10.1.0.0/24",
        "stored in network form"
    );
    assert_eq!(g.ingress[3].cidr.to_string(), "fd00:c1::/64");
    assert!(g.allows(6, 80, "fd00:c1::9".parse().unwrap()));
    assert!(!g.allows(6, 443, "fd00:c1::9".parse().unwrap()));
    assert!(g.allows(6, 443, "10.1.0.9".parse().unwrap()));
    assert!(!g.allows(6, 444, "10.1.0.9".parse().unwrap()));
    assert!(!g.allows(17, 443, "10.1.0.9".parse().unwrap()));
    assert!(g.allows(1, 0, "8.8.8.8".parse().unwrap()));

    let d = ok(
        &mut st,
        &consumer(),
        "describe-security-groups",
        json!({"GroupIds": [sg]}),
    );
    let gj = &d["SecurityGroups"][0];
    assert_eq!(gj["GroupName"], "web");
    assert_eq!(gj["OwnerId"], C);
    assert_eq!(gj["VpcId"], CVPC);
    assert_eq!(
        gj["IpPermissions"][0],
        json!({"IpProtocol": "tcp", "FromPort": 80, "ToPort": 443, "IpRanges": [{"CidrIp": "10.1.0.0/24"}]})
    );
    assert_eq!(
        gj["IpPermissions"][2],
        json!({"IpProtocol": "icmp", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]})
    );
    let none = ok(&mut st, &provider(), "describe-security-groups", json!({}));
    assert_eq!(none["SecurityGroups"], json!([]));
    err(
        &mut st,
        &provider(),
        "describe-security-groups",
        json!({"GroupIds": [sg]}),
        "InvalidGroup.NotFound",
    );

    // Attach on create and by modify; a group in use cannot be deleted.
    let e = ok(
        &mut st,
        &consumer(),
        "create-vpc-endpoint",
        json!({"VpcId": CVPC, "ServiceName": SVC_NAME, "SecurityGroupIds": [sg, sg]}),
    )["VpcEndpoint"]
        .clone();
    assert_eq!(e["Groups"], json!([{"GroupId": sg}]));
    let eid = e["VpcEndpointId"].as_str().unwrap().to_owned();
    err(
        &mut st,
        &consumer(),
        "delete-security-group",
        json!({"GroupId": sg}),
        "DependencyViolation",
    );
    ok(
        &mut st,
        &consumer(),
        "modify-vpc-endpoint",
        json!({"VpcEndpointId": eid, "RemoveSecurityGroupIds": [sg]}),
    );
    ok(
        &mut st,
        &consumer(),
        "modify-vpc-endpoint",
        json!({"VpcEndpointId": VPCE, "AddSecurityGroupIds": [sg]}),
    );
    err(
        &mut st,
        &consumer(),
        "delete-security-group",
        json!({"GroupId": sg}),
        "DependencyViolation",
    );
    ok(
        &mut st,
        &consumer(),
        "modify-vpc-endpoint",
        json!({"VpcEndpointId": VPCE, "RemoveSecurityGroupIds": [sg]}),
    );
    err(
        &mut st,
        &consumer(),
        "modify-vpc-endpoint",
        json!({"VpcEndpointId": VPCE, "RemoveSecurityGroupIds": [sg]}),
        "InvalidParameterValue",
    );

    // Revoke: a rule that exists, then one that does not.
    let icmp = json!({"GroupId": sg, "IpPermissions": [{"IpProtocol": "icmp", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]});
    ok(
        &mut st,
        &consumer(),
        "revoke-security-group-ingress",
        icmp.clone(),
    );
    err(
        &mut st,
        &consumer(),
        "revoke-security-group-ingress",
        icmp,
        "InvalidPermission.NotFound",
    );

    ok(
        &mut st,
        &consumer(),
        "delete-security-group",
        json!({"GroupId": sg}),
    );
    assert!(st.state().security_groups.is_empty());
    err(
        &mut st,
        &consumer(),
        "delete-security-group",
        json!({"GroupId": sg}),
        "InvalidGroup.NotFound",
    );
}

#[test]
fn groups_of_another_vpc_or_account_cannot_be_attached() {
    let mut st = store();
    let theirs = new_group(&mut st, &other(), OVPC, "theirs");
    err(
        &mut st,
        &consumer(),
        "modify-vpc-endpoint",
        json!({"VpcEndpointId": VPCE, "AddSecurityGroupIds": [theirs]}),
        "InvalidGroup.NotFound",
    );
    // Admin sees every group, but a group must be in the endpoint's VPC.
    let m = err(
        &mut st,
        &Caller::admin(),
        "modify-vpc-endpoint",
        json!({"VpcEndpointId": VPCE, "AddSecurityGroupIds": [theirs]}),
        "InvalidParameterValue",
    );
    assert!(m.contains(OVPC), "{m}");
}

#[test]
fn ingress_rule_matching() {
    let rule = |protocol, from_port, to_port| IngressRule {
        protocol,
        from_port,
        to_port,
        cidr: "10.0.0.0/8".parse::<IpNet>().unwrap(),
    };
    let inside = "10.9.9.9".parse().unwrap();
    let outside = "11.0.0.1".parse().unwrap();
    let tcp = rule(RuleProtocol::Tcp, 80, 80);
    assert!(tcp.matches(6, 80, inside));
    assert!(!tcp.matches(6, 81, inside));
    assert!(!tcp.matches(17, 80, inside));
    assert!(!tcp.matches(6, 80, outside));
    let udp = rule(RuleProtocol::Udp, 1000, 2000);
    assert!(udp.matches(17, 1500, inside) && !udp.matches(17, 999, inside));
    let icmp = rule(RuleProtocol::Icmp, 0, 0);
    assert!(icmp.matches(1, 1234, inside) && !icmp.matches(6, 0, inside));
    let all = rule(RuleProtocol::All, 0, 0);
    assert!(all.matches(47, 9, inside) && !all.matches(47, 9, outside));
    // An IPv6 prefix holds IPv6 sources only, and its icmp is ICMPv6.
    let v6 = IngressRule {
        cidr: "fd00:c1::/64".parse().unwrap(),
        ..rule(RuleProtocol::Icmp, 0, 0)
    };
    let host6: std::net::IpAddr = "fd00:c1::10".parse().unwrap();
    assert!(v6.matches(58, 0, host6) && !v6.matches(1, 0, host6));
    assert!(!v6.matches(58, 0, "fd00:c2::10".parse().unwrap()));
    assert!(!v6.matches(1, 0, inside) && !tcp.matches(6, 80, host6));
    assert_eq!(serde_json::to_string(&RuleProtocol::All).unwrap(), "\"-1\"");
    assert_eq!(
        serde_json::from_str::<RuleProtocol>("\"icmp\"").unwrap(),
        RuleProtocol::Icmp
    );
}

#[test]
fn model_validates_security_groups() {
    let c = config();
    let mut state = c.state();
    let group = SecurityGroup {
        id: "sg-0123456789abcdef0".parse().unwrap(),
        owner: acct(C),
        vpc_id: CVPC.parse().unwrap(),
        name: "a".into(),
        description: String::new(),
        ingress: vec![],
    };
    state.endpoints[0].security_group_ids = vec![group.id];
    let e = state.validate(&c.vpcs).unwrap_err();
    assert_eq!(e.code(), "InvalidGroup.NotFound");
    assert_eq!(e.path().to_string(), "endpoints[0].security_group_ids[0]");
    state.security_groups.push(group.clone());
    state.validate(&c.vpcs).unwrap();

    let mut s = state.clone();
    s.security_groups[0].owner = acct(P);
    assert_eq!(
        s.validate(&c.vpcs).unwrap_err().code(),
        "InvalidVpcId.NotFound"
    );
    let mut s = state.clone();
    s.security_groups.push(group.clone());
    assert_eq!(
        s.validate(&c.vpcs).unwrap_err().code(),
        "InvalidGroup.Duplicate"
    );
    let mut s = state.clone();
    s.security_groups.push(SecurityGroup {
        id: "sg-0123456789abcdef1".parse().unwrap(),
        ..group.clone()
    });
    let e = s.validate(&c.vpcs).unwrap_err();
    assert_eq!(
        (e.code(), e.path().to_string()),
        ("InvalidGroup.Duplicate", "security_groups[1].name".into())
    );
    let mut s = state.clone();
    s.security_groups[0].ingress.push(IngressRule {
        protocol: RuleProtocol::Tcp,
        from_port: 9,
        to_port: 8,
        cidr: "0.0.0.0/0".parse().unwrap(),
    });
    assert_eq!(
        s.validate(&c.vpcs).unwrap_err().to_string(),
        "security group sg-0123456789abcdef0: port range 9-8 is empty"
    );
    let mut s = state.clone();
    s.security_groups[0].vpc_id = PVPC.parse().unwrap();
    s.security_groups[0].owner = acct(P);
    assert_eq!(
        s.validate(&c.vpcs).unwrap_err().code(),
        "InvalidParameterValue"
    );

    // The JSON form round-trips, and old state files without groups still load.
    let text = serde_json::to_string(&state).unwrap();
    assert_eq!(serde_json::from_str::<State>(&text).unwrap(), state);
    let old: State = serde_json::from_str(r#"{"services": [], "endpoints": []}"#).unwrap();
    assert!(old.security_groups.is_empty());
}

// --- construction, persistence merge ----------------------------------------------------

/// A restart: the store saved and loaded again on `config`.
fn restarted(st: &Store, config: &Config) -> Store {
    let bytes = crate::persist::encode(st.state());
    let back = crate::persist::decode(&bytes).unwrap();
    Store::new(config, Some(back)).unwrap().0
}

#[test]
fn the_file_seeds_an_empty_state_only() {
    let c = config();
    let st = Store::new(&c, None).unwrap().0;
    assert_eq!(st.state().services, c.state().services);
    assert_eq!(st.state().endpoints, c.state().endpoints);
    assert_eq!(
        st.state().declared,
        Some(c.declared().into()),
        "the baseline is kept"
    );
    assert_eq!(st.region(), "local");
    assert_eq!(st.attachments().len(), 3);

    // A persisted state that does not fit the configuration is refused.
    let mut bad = c.state();
    bad.endpoints[0].ip = Some("10.1.0.1".parse().unwrap());
    let e = Store::new(&c, Some(bad)).unwrap_err();
    assert_eq!(e.code(), "InvalidIpAddress.InUse");
}

#[test]
fn declared_objects_deleted_or_changed_at_run_time_stay_so_across_restarts() {
    let c = config();
    let mut st = Store::new(&c, None).unwrap().0;
    // The provider takes the consumer off its declared service's principals, and the
    // consumer deletes its declared endpoint.
    ok(
        &mut st,
        &provider(),
        "modify-vpc-endpoint-service-permissions",
        json!({"ServiceId": SVC, "RemoveAllowedPrincipals": [C]}),
    );
    ok(
        &mut st,
        &consumer(),
        "delete-vpc-endpoints",
        json!({"VpcEndpointIds": [VPCE]}),
    );
    assert!(st.tick(NOW + 2));
    assert!(st.tick(NOW + 2 + DELETED_ENDPOINT_SECS));
    assert!(
        st.state().endpoint(VPCE.parse().unwrap()).is_none(),
        "forgotten"
    );
    // Its address is free again and taken by a new endpoint (of another service).
    ok(
        &mut st,
        &provider(),
        "modify-vpc-endpoint-service-permissions",
        json!({"ServiceId": SVC, "AddAllowedPrincipals": [O]}),
    );
    let svc2 = new_service(&mut st);
    ok(
        &mut st,
        &consumer(),
        "create-vpc-endpoint",
        json!({"VpcId": CVPC, "ServiceName": name_of(&svc2), "IpAddress": "10.1.0.100"}),
    );

    // Restart (twice): nothing comes back from the dead, the start does not fail on
    // the reused address, and the permission change holds.
    let st = restarted(&restarted(&st, &c), &c);
    assert!(st.state().endpoint(VPCE.parse().unwrap()).is_none());
    let svc = st.state().service(SVC.parse().unwrap()).unwrap();
    assert_eq!(svc.allowed_principals, vec![Principal::Account(acct(O))]);
}

#[test]
fn a_state_saved_without_a_baseline_is_the_truth() {
    let c = config();
    let mut legacy = c.state();
    legacy.endpoints.clear();
    legacy.services[0].acceptance_required = true;
    let st = Store::new(&c, Some(legacy)).unwrap().0;
    assert!(
        st.state().endpoints.is_empty(),
        "declared objects are not re-added"
    );
    assert!(st.state().services[0].acceptance_required, "persisted wins");
    assert_eq!(st.state().declared, Some(c.declared().into()));
}

#[test]
fn a_reload_applies_only_what_changed_in_the_file() {
    let c = config();
    let mut st = Store::new(&c, None).unwrap().0;
    // A run-time change to the declared service that the file does not touch.
    ok(
        &mut st,
        &provider(),
        "modify-vpc-endpoint-service-configuration",
        json!({"ServiceId": SVC, "AcceptanceRequired": true}),
    );
    let mut next = c.clone();
    // The file adds a security group and an endpoint using it, removes the old endpoint,
    // and drops a target from the service's TCP listener.
    let group: SecurityGroupId = "sg-0a0000000000000a1".parse().unwrap();
    next.security_groups.push(SecurityGroup {
        id: group,
        owner: acct(C),
        vpc_id: CVPC.parse().unwrap(),
        name: "declared".into(),
        description: String::new(),
        ingress: vec![],
    });
    let mut e = next.endpoints[0].clone();
    e.id = "vpce-0f0000000000000f1".parse().unwrap();
    e.ip = Some("10.1.0.101".parse().unwrap());
    e.security_group_ids = vec![group];
    next.endpoints = vec![e];
    next.services[0].listeners[0].targets.truncate(1);
    next.validate().unwrap();

    let (state, notes) = st.prepare_reload(&next, NOW).unwrap();
    let state = state.expect("changes");
    assert_eq!(notes.len(), 4, "{notes:?}");
    st.commit(state);
    let s = st.state();
    assert_eq!(
        s.endpoint(VPCE.parse().unwrap()).unwrap().state,
        EndpointState::Deleting,
        "removed from the file: deleted as the socket would"
    );
    assert_eq!(
        s.endpoint("vpce-0f0000000000000f1".parse().unwrap())
            .unwrap()
            .state,
        EndpointState::Available
    );
    assert!(s.security_group(group).is_some());
    let svc = s.service(SVC.parse().unwrap()).unwrap();
    assert!(
        !svc.acceptance_required,
        "changed in the file: the file's version replaces the run-time one"
    );
    let gone = &svc.listeners[0].targets[1];
    assert_eq!(
        gone.state,
        TargetState::Draining,
        "a vanished target drains"
    );

    // The same file again changes nothing.
    let (state, notes) = st.prepare_reload(&next, NOW).unwrap();
    assert!(state.is_none() && notes.is_empty(), "{notes:?}");

    // A declaration changed in the file for an object deleted at run time is not
    // re-created.
    ok(
        &mut st,
        &consumer(),
        "delete-vpc-endpoints",
        json!({"VpcEndpointIds": ["vpce-0f0000000000000f1"]}),
    );
    assert!(st.tick(NOW + 2));
    assert!(st.tick(NOW + 2 + DELETED_ENDPOINT_SECS));
    let mut again = next.clone();
    again.endpoints[0].security_group_ids.clear();
    let (state, notes) = st.prepare_reload(&again, NOW).unwrap();
    assert!(
        notes.iter().any(|n| n.contains("not re-created")),
        "{notes:?}"
    );
    if let Some(state) = state {
        assert!(state
            .endpoint("vpce-0f0000000000000f1".parse().unwrap())
            .is_none());
    }
}

#[test]
fn a_reload_that_cannot_be_applied_changes_nothing() {
    let c = config();
    let st = Store::new(&c, None).unwrap().0;
    // Removing the declared service while its declared endpoint stays connected.
    let mut next = c.clone();
    next.services.clear();
    let before = st.state().clone();
    let e = st.prepare_reload(&next, NOW).unwrap_err();
    assert_eq!(e.code(), "ServiceInUse", "{e}");
    assert_eq!(st.state(), &before);
}

#[test]
fn changes_survive_a_round_trip_through_json() {
    let mut st = store();
    let svc = new_service(&mut st);
    new_endpoint(&mut st, &consumer(), CVPC, &svc);
    new_group(&mut st, &consumer(), CVPC, "g");
    ok(
        &mut st,
        &provider(),
        "deregister-targets",
        json!({"ServiceId": SVC, "Protocol": "tcp", "Port": 80, "Targets": [{"Id": "10.2.0.11", "Port": 8080}]}),
    );
    let bytes = crate::persist::encode(st.state());
    let back = crate::persist::decode(&bytes).unwrap();
    assert_eq!(&back, st.state());
    let again = Store::new(&config(), Some(back)).unwrap().0;
    assert_eq!(again.state(), st.state());
}

#[test]
fn timestamps() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(NOW), "2023-11-14T22:13:20Z");
    assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
}

#[test]
fn ids_are_random_and_well_formed() {
    let mut ids = IdSource::default();
    let a = ids.next();
    let b = ids.next();
    assert_ne!(a, b);
    assert!(a < 1 << 68 && b < 1 << 68);
}

/// `touched` compared every object with every other (quadratic): with 100k endpoints one
/// change spent minutes there before it could be saved. Now one walk, from both ends.
#[test]
fn touched_costs_one_walk_of_the_objects() {
    let config = Config::embedded_default();
    let mut before = config.state();
    let model = before.endpoints[0].clone();
    let id = |i: u128| crate::model::EndpointId::new(0x1_0000_0000 + i).unwrap();
    for i in 0..100_000 {
        let mut e = model.clone();
        e.id = id(i);
        before.endpoints.push(e);
    }
    let mut after = before.clone();
    let removed = after.endpoints.remove(50_000).id;
    after.endpoints[5].state = EndpointState::Deleting;
    let changed = after.endpoints[5].id;
    let mut new = model.clone();
    new.id = id(200_000);
    after.endpoints.push(new);
    let started = std::time::Instant::now();
    let got = touched(&before, &after);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        got,
        [changed, id(200_000), removed].map(|i| i.to_string()),
        "changed and new in the new order, then the removed"
    );
    assert!(touched(&before, &before).is_empty());
}

/// The demo with an IPv6 prefix on the consumer VPC.
fn dual_config(address6: &str) -> Config {
    let mut c = config();
    c.vpcs[0].address6 = Some(address6.parse().unwrap());
    c.validate().unwrap();
    c
}

#[test]
fn dual_stack_endpoints_get_an_ipv6_address_from_the_vpc_prefix() {
    let mut st = Store::new(&dual_config("fd00:c1::1/64"), None).unwrap().0;
    let create = |ty: &str| json!({"VpcId": CVPC, "ServiceName": SVC_NAME, "IpAddressType": ty});
    // The demo service accepts IPv4 endpoints only.
    let m = err(
        &mut st,
        &consumer(),
        "create-vpc-endpoint",
        create("dualstack"),
        "InvalidParameterValue",
    );
    assert!(m.contains("does not accept dualstack endpoints"), "{m}");
    ok(
        &mut st,
        &provider(),
        "modify-vpc-endpoint-service-configuration",
        json!({"ServiceId": SVC, "AddSupportedIpAddressTypes": ["ipv6"]}),
    );
    let described = ok(
        &mut st,
        &provider(),
        "describe-vpc-endpoint-service-configurations",
        json!({"ServiceIds": [SVC]}),
    );
    assert_eq!(
        described["ServiceConfigurations"][0]["SupportedIpAddressTypes"],
        json!(["ipv4", "ipv6"])
    );
    let e = ok(
        &mut st,
        &consumer(),
        "create-vpc-endpoint",
        create("dualstack"),
    )["VpcEndpoint"]
        .clone();
    assert_eq!(e["IpAddressType"], "dualstack");
    assert_eq!(e["Ipv6Address"], "fd00:c1::2", "the lowest free after ::1");
    assert_eq!(e["IpAddress"], "10.1.0.2");
    let e = ok(
        &mut st,
        &consumer(),
        "create-vpc-endpoint",
        create("DualStack"),
    )["VpcEndpoint"]
        .clone();
    assert_eq!(e["Ipv6Address"], "fd00:c1::3");
    let mut given = create("dualstack");
    given["Ipv6Address"] = json!("fd00:c1::64");
    let e = ok(&mut st, &consumer(), "create-vpc-endpoint", given.clone())["VpcEndpoint"].clone();
    assert_eq!(e["Ipv6Address"], "fd00:c1::64");
    let m = err(
        &mut st,
        &consumer(),
        "create-vpc-endpoint",
        given,
        "InvalidIpAddress.InUse",
    );
    assert!(m.contains("fd00:c1::64 is already in use"), "{m}");
    let plain = new_endpoint(&mut st, &consumer(), CVPC, SVC);
    assert_eq!(plain["IpAddressType"], "ipv4");
    assert!(plain.get("Ipv6Address").is_none());

    let mut outside = create("dualstack");
    outside["Ipv6Address"] = json!("fd00:c2::5");
    err(
        &mut st,
        &consumer(),
        "create-vpc-endpoint",
        outside,
        "InvalidParameterValue",
    );
    let mut wrong = create("ipv4");
    wrong["Ipv6Address"] = json!("fd00:c1::9");
    let m = err(
        &mut st,
        &consumer(),
        "create-vpc-endpoint",
        wrong,
        "InvalidParameterValue",
    );
    assert!(m.starts_with("Ipv6Address:"), "{m}");
    for bad in ["both", "ipv5"] {
        err(
            &mut st,
            &consumer(),
            "create-vpc-endpoint",
            create(bad),
            "InvalidParameterValue",
        );
    }
    // An IPv6 endpoint: an IPv6 address of the prefix, no IPv4 one.
    let v6 = ok(&mut st, &consumer(), "create-vpc-endpoint", create("ipv6"));
    let ep = &v6["VpcEndpoint"];
    assert_eq!(ep["IpAddressType"], "ipv6", "{v6}");
    assert!(ep.get("IpAddress").is_none(), "{v6}");
    assert!(
        ep["Ipv6Address"]
            .as_str()
            .is_some_and(|a| a.starts_with("fd00:c1::")),
        "{v6}"
    );
    let id6 = ep["VpcEndpointId"].as_str().unwrap().to_owned();
    ok(
        &mut st,
        &consumer(),
        "delete-vpc-endpoints",
        json!({"VpcEndpointIds": [id6]}),
    );
    // A family still in use cannot be removed; once unused it can.
    let m = err(
        &mut st,
        &provider(),
        "modify-vpc-endpoint-service-configuration",
        json!({"ServiceId": SVC, "RemoveSupportedIpAddressTypes": ["ipv6"]}),
        "InvalidParameterValue",
    );
    assert!(m.contains("does not accept dualstack endpoints"), "{m}");
    let m = err(
        &mut st,
        &provider(),
        "modify-vpc-endpoint-service-configuration",
        json!({"ServiceId": SVC, "RemoveSupportedIpAddressTypes": ["ipv4", "ipv6"]}),
        "InvalidParameterValue",
    );
    assert!(m.contains("must list ipv4, ipv6 or both"), "{m}");
}

#[test]
fn a_dual_stack_endpoint_needs_an_ipv6_prefix_and_room_in_it() {
    let mut st = store();
    ok(
        &mut st,
        &provider(),
        "modify-vpc-endpoint-service-configuration",
        json!({"ServiceId": SVC, "AddSupportedIpAddressTypes": ["ipv6"]}),
    );
    let m = err(
        &mut st,
        &consumer(),
        "create-vpc-endpoint",
        json!({"VpcId": CVPC, "ServiceName": SVC_NAME, "IpAddressType": "dualstack"}),
        "InvalidParameterValue",
    );
    assert!(m.contains("has no IPv6 prefix"), "{m}");
    // A /126 has hosts ::1 (the appliance), ::2 and ::3.
    let mut st = Store::new(&dual_config("fd00:c1::1/126"), None).unwrap().0;
    ok(
        &mut st,
        &provider(),
        "modify-vpc-endpoint-service-configuration",
        json!({"ServiceId": SVC, "AddSupportedIpAddressTypes": ["ipv6"]}),
    );
    let create = json!({"VpcId": CVPC, "ServiceName": SVC_NAME, "IpAddressType": "dualstack"});
    for want in ["fd00:c1::2", "fd00:c1::3"] {
        let e = ok(&mut st, &consumer(), "create-vpc-endpoint", create.clone());
        assert_eq!(e["VpcEndpoint"]["Ipv6Address"], want);
    }
    err(
        &mut st,
        &consumer(),
        "create-vpc-endpoint",
        create,
        "InsufficientFreeAddressesInSubnet",
    );
    // A created service lists what it was given, in order, once each.
    let r = ok(
        &mut st,
        &provider(),
        "create-vpc-endpoint-service-configuration",
        json!({"VpcId": PVPC, "Listeners": [{"Protocol": "tcp", "Port": 443}],
               "SupportedIpAddressTypes": ["ipv6", "ipv4", "ipv6"]}),
    );
    assert_eq!(
        r["ServiceConfiguration"]["SupportedIpAddressTypes"],
        json!(["ipv4", "ipv6"])
    );
}

#[test]
fn ipv6_targets_get_an_ipv6_snat_address_and_register_like_ipv4_ones() {
    let mut c = config();
    c.vpcs[1].address6 = Some("fd00:b1::1/64".parse().unwrap());
    c.validate().unwrap();
    let mut st = Store::new(&c, None).unwrap().0;
    let r = ok(
        &mut st,
        &provider(),
        "create-vpc-endpoint-service-configuration",
        json!({
            "VpcId": PVPC,
            "Listeners": [{"Protocol": "tcp", "Port": 443,
                           "Targets": [{"Id": "fd00:b1::21", "Port": 8443}]}],
        }),
    );
    let s = &r["ServiceConfiguration"];
    // No SnatAddresses given: one of each family, the IPv6 one the lowest free host.
    assert_eq!(
        s["SnatAddresses"],
        json!(["10.2.0.254", "fd00:b1::2"]),
        "{s}"
    );
    let id = s["ServiceId"].as_str().unwrap().to_owned();
    ok(
        &mut st,
        &provider(),
        "register-targets",
        json!({"ServiceId": id, "Protocol": "tcp", "Port": 443,
               "Targets": [{"Id": "fd00:b1::22", "Port": 8443}]}),
    );
    let h = ok(
        &mut st,
        &provider(),
        "describe-target-health",
        json!({"ServiceId": id}),
    );
    let ids: Vec<&str> = h["TargetHealthDescriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["Target"]["Id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["fd00:b1::21", "fd00:b1::22"], "{h}");
    let m = err(
        &mut st,
        &provider(),
        "register-targets",
        json!({"ServiceId": id, "Protocol": "tcp", "Port": 443,
               "Targets": [{"Id": "10.2.0.23", "Port": 8443}]}),
        "InvalidParameterValue",
    );
    assert!(m.contains("an ipv4 target among ipv6 ones"), "{m}");
    // The last IPv6 SNAT address cannot go while IPv6 targets need it; another can come.
    let m = err(
        &mut st,
        &provider(),
        "modify-vpc-endpoint-service-configuration",
        json!({"ServiceId": id, "RemoveSnatAddresses": ["fd00:b1::2"]}),
        "InvalidParameterValue",
    );
    assert!(
        m.contains("its ipv6 targets need an ipv6 snat address"),
        "{m}"
    );
    ok(
        &mut st,
        &provider(),
        "modify-vpc-endpoint-service-configuration",
        json!({"ServiceId": id, "AddSnatAddresses": ["fd00:b1::3"], "RemoveSnatAddresses": ["fd00:b1::2"]}),
    );
    let m = err(
        &mut st,
        &provider(),
        "modify-vpc-endpoint-service-configuration",
        json!({"ServiceId": id, "AddSnatAddresses": ["fd00:b1::zz"]}),
        "InvalidParameterValue",
    );
    assert!(m.contains("invalid IP address \"fd00:b1::zz\""), "{m}");
}

#[test]
fn an_ipv6_only_vpc_takes_ipv6_endpoints_and_allocates_ipv6_snat_addresses() {
    let mut c = config();
    c.vpcs[0].address = None;
    c.vpcs[0].address6 = Some("fd00:c1::1/64".parse().unwrap());
    c.vpcs[1].address = None;
    c.vpcs[1].address6 = Some("fd00:b1::1/64".parse().unwrap());
    c.services.clear();
    c.endpoints.clear();
    c.validate().unwrap();
    let mut st = Store::new(&c, None).unwrap().0;
    let r = ok(
        &mut st,
        &provider(),
        "create-vpc-endpoint-service-configuration",
        json!({
            "VpcId": PVPC,
            "Listeners": [{"Protocol": "tcp", "Port": 443,
                           "Targets": [{"Id": "fd00:b1::21", "Port": 8443}]}],
            "AllowedPrincipals": [C],
            "AcceptanceRequired": false,
            "SupportedIpAddressTypes": ["ipv6"],
        }),
    );
    let s = &r["ServiceConfiguration"];
    assert_eq!(
        s["SnatAddresses"],
        json!(["fd00:b1::2"]),
        "no IPv4 one: {s}"
    );
    let name = s["ServiceName"].as_str().unwrap().to_owned();
    let create = |ty: &str| json!({"VpcId": CVPC, "ServiceName": name, "IpAddressType": ty});
    let e = ok(&mut st, &consumer(), "create-vpc-endpoint", create("ipv6"))["VpcEndpoint"].clone();
    assert_eq!(e["Ipv6Address"], "fd00:c1::2", "{e}");
    let m = err(
        &mut st,
        &consumer(),
        "create-vpc-endpoint",
        create("ipv4"),
        "InvalidParameterValue",
    );
    assert!(m.contains("has no IPv4 prefix"), "{m}");
}
