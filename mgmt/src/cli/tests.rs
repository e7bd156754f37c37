//! Argument mapping, rendering and usage errors of privlinkctl (no daemon needed).

use super::*;

fn argv(s: &[&str]) -> Vec<String> {
    s.iter().map(|a| (*a).to_owned()).collect()
}

fn run_args(s: &[&str]) -> Invocation {
    match parse_args(&argv(s), None).unwrap() {
        Command::Run(inv) => inv,
        Command::Help(h) => panic!("unexpected help: {h}"),
    }
}

fn usage(s: &[&str]) -> String {
    parse_args(&argv(s), None).unwrap_err().0
}

fn help_text(s: &[&str]) -> String {
    match parse_args(&argv(s), None).unwrap() {
        Command::Help(h) => h,
        Command::Run(inv) => panic!("not help: {inv:?}"),
    }
}

#[test]
fn pascal_case_of_flags() {
    assert_eq!(pascal_case("vpc-id"), "VpcId");
    assert_eq!(pascal_case("ip-address"), "IpAddress");
    assert_eq!(pascal_case("service-ids"), "ServiceIds");
    assert_eq!(pascal_case("vpc-endpoint-ids"), "VpcEndpointIds");
    assert_eq!(pascal_case("cidr-ip"), "CidrIp");
    assert_eq!(kebab("VpcEndpointIds"), "vpc-endpoint-ids");
}

#[test]
fn every_operation_is_well_formed() {
    let mut names: Vec<&str> = OPERATIONS.iter().map(|o| o.name).collect();
    assert_eq!(names.len(), 25);
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), 25, "duplicate operation");
    for o in OPERATIONS {
        // Each example parses (no socket needed).
        let args: Vec<&str> = o.example.split(' ').collect();
        assert_eq!(args[0], o.name);
        let help = operation_help(o);
        assert!(help.contains(o.example));
        for (flag, _) in o.flags {
            assert!(help.contains(flag), "{} help lacks {flag}", o.name);
        }
    }
    // The examples without quoted JSON parse as they stand.
    for o in OPERATIONS.iter().filter(|o| !o.example.contains('\'')) {
        let args: Vec<&str> = o.example.split(' ').collect();
        run_args(&args);
    }
}

#[test]
fn ip_address_type_flags() {
    let inv = run_args(&[
        "create-vpc-endpoint",
        "--vpc-id",
        "vpc-1",
        "--ip-address-type",
        "dualstack",
        "--ipv6-address",
        "fd00:c1::64",
    ]);
    assert_eq!(
        inv.args,
        json!({"VpcId": "vpc-1", "IpAddressType": "dualstack", "Ipv6Address": "fd00:c1::64"})
    );
    let inv = run_args(&[
        "create-vpc-endpoint-service-configuration",
        "--supported-ip-address-types",
        "ipv4",
        "ipv6",
    ]);
    assert_eq!(
        inv.args,
        json!({"SupportedIpAddressTypes": ["ipv4", "ipv6"]})
    );
    let inv = run_args(&[
        "modify-vpc-endpoint-service-configuration",
        "--service-id",
        "vpce-svc-1",
        "--add-supported-ip-address-types",
        "ipv6",
        "--remove-supported-ip-address-types",
        "ipv4",
    ]);
    assert_eq!(
        inv.args,
        json!({"ServiceId": "vpce-svc-1", "AddSupportedIpAddressTypes": ["ipv6"],
               "RemoveSupportedIpAddressTypes": ["ipv4"]})
    );
}

#[test]
fn generic_mapping() {
    let inv = run_args(&[
        "create-vpc-endpoint",
        "--vpc-id",
        "vpc-1",
        "--service-name=com.amazonaws.vpce.local.vpce-svc-1",
        "--ip-address",
        "10.1.0.10",
        "--security-group-ids",
        "sg-1",
        "sg-2",
        "--security-group-ids",
        "sg-3",
        "--policy-document",
        r#"{"Statement":[]}"#,
    ]);
    assert_eq!(inv.op, "create-vpc-endpoint");
    assert!(!inv.json);
    assert_eq!(
        inv.args,
        json!({
            "VpcId": "vpc-1",
            "ServiceName": "com.amazonaws.vpce.local.vpce-svc-1",
            "IpAddress": "10.1.0.10",
            "SecurityGroupIds": ["sg-1", "sg-2", "sg-3"],
            "PolicyDocument": {"Statement": []},
        })
    );
    // A string stays a string, even when it looks like a number.
    let inv = run_args(&[
        "create-security-group",
        "--group-name",
        "123",
        "--vpc-id",
        "vpc-1",
    ]);
    assert_eq!(inv.args, json!({"GroupName": "123", "VpcId": "vpc-1"}));
    // Policy as plain text.
    let inv = run_args(&[
        "modify-vpc-endpoint",
        "--vpc-endpoint-id",
        "vpce-1",
        "--policy-document",
        "allow-all",
    ]);
    assert_eq!(inv.args["PolicyDocument"], "allow-all");
}

#[test]
fn lists_are_always_arrays_and_json_arrays_splice() {
    let inv = run_args(&[
        "describe-vpc-endpoint-service-configurations",
        "--service-ids",
        "X",
    ]);
    assert_eq!(inv.args, json!({"ServiceIds": ["X"]}));
    let inv = run_args(&[
        "delete-vpc-endpoints",
        "--vpc-endpoint-ids",
        r#"["a","b"]"#,
        "c",
    ]);
    assert_eq!(inv.args, json!({"VpcEndpointIds": ["a", "b", "c"]}));
    let inv = run_args(&["describe-vpc-endpoints"]);
    assert_eq!(inv.args, json!({}));
}

#[test]
fn a_repeated_scalar_flag_becomes_an_array() {
    let inv = run_args(&[
        "describe-target-health",
        "--service-id",
        "a",
        "--service-id",
        "b",
    ]);
    assert_eq!(inv.args, json!({"ServiceId": ["a", "b"]}));
}

#[test]
fn booleans_and_numbers() {
    let base = [
        "create-vpc-endpoint-service-configuration",
        "--vpc-id",
        "vpc-2",
    ];
    let with = |extra: &[&str]| {
        let mut a = base.to_vec();
        a.extend_from_slice(extra);
        run_args(&a).args
    };
    assert_eq!(with(&["--acceptance-required"])["AcceptanceRequired"], true);
    assert_eq!(
        with(&["--acceptance-required", "--json"])["AcceptanceRequired"],
        true
    );
    assert_eq!(
        with(&["--acceptance-required", "false"])["AcceptanceRequired"],
        false
    );
    assert_eq!(
        with(&["--acceptance-required=false"])["AcceptanceRequired"],
        false
    );
    assert_eq!(
        with(&["--no-acceptance-required"])["AcceptanceRequired"],
        false
    );
    assert_eq!(
        with(&["--listeners", r#"[{"Protocol":"tcp","Port":80}]"#])["Listeners"],
        json!([{"Protocol": "tcp", "Port": 80}])
    );
    let inv = run_args(&["flows", "--max-results", "20"]);
    assert_eq!(inv.args, json!({"MaxResults": 20}));
    assert!(usage(&["flows", "--max-results", "many"]).contains("not a number"));
    assert!(usage(&[
        "create-vpc-endpoint-service-configuration",
        "--acceptance-required=maybe"
    ])
    .contains("not true or false"));
    assert!(usage(&[
        "create-vpc-endpoint-service-configuration",
        "--listeners",
        "{oops"
    ])
    .contains("not valid JSON"));
}

#[test]
fn json_from_a_file() {
    let path = std::env::temp_dir().join(format!("plctl-policy-{}.json", std::process::id()));
    std::fs::write(&path, r#"{"Statement":[{"Effect":"Allow"}]}"#).unwrap();
    let arg = format!("file://{}", path.display());
    let inv = run_args(&[
        "modify-vpc-endpoint",
        "--vpc-endpoint-id",
        "vpce-1",
        "--policy-document",
        &arg,
    ]);
    assert_eq!(
        inv.args["PolicyDocument"],
        json!({"Statement": [{"Effect": "Allow"}]})
    );
    std::fs::remove_file(&path).unwrap();
    assert!(usage(&["modify-vpc-endpoint", "--policy-document", &arg]).contains("cannot read"));
}

#[test]
fn target_shorthand() {
    let inv = run_args(&[
        "register-targets",
        "--service-id",
        "vpce-svc-1",
        "--protocol",
        "tcp",
        "--port",
        "80",
        "--target",
        "10.2.0.13:8080",
        "--target",
        "10.2.0.14:8080:3",
        "--target",
        "[fd00:b1::21]:8443:2",
    ]);
    assert_eq!(
        inv.args,
        json!({
            "ServiceId": "vpce-svc-1",
            "Protocol": "tcp",
            "Port": 80,
            "Targets": [
                {"Id": "10.2.0.13", "Port": 8080},
                {"Id": "10.2.0.14", "Port": 8080, "Weight": 3},
                {"Id": "fd00:b1::21", "Port": 8443, "Weight": 2},
            ],
        })
    );
    // Combined with --targets JSON.
    let inv = run_args(&[
        "deregister-targets",
        "--targets",
        r#"[{"Id":"10.2.0.1","Port":1}]"#,
        "--target",
        "10.2.0.2:2",
    ]);
    assert_eq!(
        inv.args["Targets"],
        json!([{"Id": "10.2.0.1", "Port": 1}, {"Id": "10.2.0.2", "Port": 2}])
    );
    for bad in [
        "10.2.0.13",
        ":80",
        "10.2.0.13:http",
        "10.2.0.13:80:x",
        "1.2.3.4:1:2:3",
        "1.2.3.4:70000",
        "fd00::1:80",
        "[fd00::1]",
        "[fd00::1]80",
        "[10.2.0.1]:80",
        "[fd00::1:80",
    ] {
        assert!(
            usage(&["register-targets", "--target", bad]).contains("IP:PORT"),
            "{bad}"
        );
    }
}

#[test]
fn ingress_shorthand() {
    let inv = run_args(&[
        "authorize-security-group-ingress",
        "--group-id",
        "sg-1",
        "--protocol",
        "tcp",
        "--port",
        "80-90",
        "--cidr",
        "10.1.0.0/24",
        "--cidr",
        "10.9.0.0/16",
    ]);
    assert_eq!(
        inv.args,
        json!({
            "GroupId": "sg-1",
            "IpPermissions": [{
                "IpProtocol": "tcp",
                "FromPort": 80,
                "ToPort": 90,
                "IpRanges": [{"CidrIp": "10.1.0.0/24"}, {"CidrIp": "10.9.0.0/16"}],
            }],
        })
    );
    // IPv6 prefixes go in Ipv6Ranges, beside the IPv4 ones.
    let inv = run_args(&[
        "authorize-security-group-ingress",
        "--group-id",
        "sg-1",
        "--protocol",
        "tcp",
        "--port",
        "80",
        "--cidr",
        "fd00:c1::/64",
        "--cidr",
        "10.1.0.0/24",
    ]);
    assert_eq!(
        inv.args["IpPermissions"][0]["Ipv6Ranges"],
        json!([{"CidrIpv6": "fd00:c1::/64"}])
    );
    assert_eq!(
        inv.args["IpPermissions"][0]["IpRanges"],
        json!([{"CidrIp": "10.1.0.0/24"}])
    );
    let inv = run_args(&[
        "revoke-security-group-ingress",
        "--group-id",
        "sg-1",
        "--protocol",
        "udp",
        "--port",
        "53",
        "--cidr",
        "0.0.0.0/0",
    ]);
    assert_eq!(inv.args["IpPermissions"][0]["FromPort"], 53);
    assert_eq!(inv.args["IpPermissions"][0]["ToPort"], 53);
    assert!(usage(&[
        "authorize-security-group-ingress",
        "--port",
        "80",
        "--cidr",
        "10.0.0.0/8"
    ])
    .contains("--protocol"));
    assert!(usage(&["authorize-security-group-ingress", "--protocol", "tcp"]).contains("--cidr"));
    assert!(usage(&[
        "authorize-security-group-ingress",
        "--protocol",
        "tcp",
        "--port",
        "x-1",
        "--cidr",
        "10.0.0.0/8"
    ])
    .contains("N-M"));
    // The raw form still works.
    let inv = run_args(&[
        "authorize-security-group-ingress",
        "--group-id",
        "sg-1",
        "--ip-permissions",
        r#"[{"IpProtocol":"-1"}]"#,
    ]);
    assert_eq!(inv.args["IpPermissions"], json!([{"IpProtocol": "-1"}]));
}

#[test]
fn socket_choice() {
    let socket = |s: &[&str], env: Option<&str>| match parse_args(&argv(s), env).unwrap() {
        Command::Run(inv) => inv.socket,
        Command::Help(_) => unreachable!(),
    };
    assert_eq!(socket(&["stats"], None), PathBuf::from(DEFAULT_SOCKET));
    assert_eq!(
        socket(&["stats"], Some("/tmp/e.sock")),
        PathBuf::from("/tmp/e.sock")
    );
    assert_eq!(
        socket(&["--socket", "/tmp/a.sock", "stats"], Some("/tmp/e.sock")),
        PathBuf::from("/tmp/a.sock")
    );
    assert_eq!(
        socket(&["stats", "--socket=/tmp/b.sock"], None),
        PathBuf::from("/tmp/b.sock")
    );
    assert!(run_args(&["--json", "stats"]).json);
}

#[test]
fn usage_errors() {
    let e = usage(&[
        "create-vpc-endpoint",
        "--vpc-id",
        "vpc-1",
        "--colour",
        "blue",
    ]);
    assert!(
        e.contains("unknown flag --colour for create-vpc-endpoint"),
        "{e}"
    );
    assert!(
        e.contains("--vpc-id") && e.contains("--service-name") && e.contains("--policy-document"),
        "{e}"
    );
    assert!(usage(&["frobnicate"]).contains("unknown operation \"frobnicate\""));
    assert!(usage(&["frobnicate"]).contains("create-vpc-endpoint"));
    assert!(usage(&[]).contains("no operation"));
    assert!(usage(&["--vpc-id", "x", "stats"]).contains("unknown option --vpc-id"));
    assert!(usage(&["create-vpc-endpoint", "--vpc-id"]).contains("--vpc-id needs a value"));
    assert!(
        usage(&["create-vpc-endpoint", "--vpc-id", "--ip-address", "1"]).contains("needs a value")
    );
    assert!(usage(&["create-vpc-endpoint", "--vpc-id", "a", "stray"])
        .contains("unexpected argument \"stray\""));
    assert!(usage(&["version", "--verbose"]).contains("version takes no flags"));
    assert!(usage(&["stats", "--verbose"]).contains("unknown flag --verbose for stats"));
    assert!(usage(&["--output", "yaml", "stats"]).contains("one of json, table, text"));
    assert!(usage(&["create-vpc-endpoint", "--no-vpc-id"]).contains("unknown flag --no-vpc-id"));
    assert!(usage(&[
        "create-vpc-endpoint-service-configuration",
        "--no-acceptance-required=1"
    ])
    .contains("takes no value"));
    assert!(usage(&["--socket"]).contains("--socket needs a value"));
}

#[test]
fn help() {
    let top = help_text(&["--help"]);
    for o in OPERATIONS {
        assert!(top.contains(o.name));
    }
    assert!(top.contains(SOCKET_ENV));
    let h = help_text(&["register-targets", "--help"]);
    assert!(
        h.contains("--target IP:PORT[:WEIGHT]") && h.contains("example:"),
        "{h}"
    );
    let h = help_text(&["create-vpc-endpoint-service-configuration", "-h"]);
    assert!(h.contains("--[no-]acceptance-required"), "{h}");
}

#[test]
fn render_return_and_empty() {
    assert_eq!(render_human(&json!({"Return": true})), "ok\n");
    assert_eq!(render_human(&json!({})), "ok\n");
    assert_eq!(render_human(&json!({"Return": false})), "Return:  false\n");
    assert_eq!(
        render_human(&json!({"VpcEndpoints": []})),
        "VpcEndpoints:  (none)\n"
    );
}

#[test]
fn render_table() {
    let v = json!({"VpcEndpoints": [
        {"VpcEndpointId": "vpce-0123456789abcdef0", "State": "available", "SecurityGroupIds": ["sg-1", "sg-2"], "IpAddress": "10.1.0.10"},
        {"VpcEndpointId": "vpce-1", "State": "pendingAcceptance", "SecurityGroupIds": [], "Policy": {"A": 1}},
    ]});
    let text = render_human(&v);
    let expected = "\
VpcEndpointId           IpAddress  SecurityGroupIds  State              Policy.A
vpce-0123456789abcdef0  10.1.0.10  sg-1,sg-2         available          -
vpce-1                  -          -                 pendingAcceptance  1
";
    assert_eq!(text, expected);
}

#[test]
fn render_object_and_mixed() {
    let v = json!({"ServiceConfiguration": {"ServiceId": "vpce-svc-1", "AcceptanceRequired": false, "SnatAddresses": ["10.2.0.5", "10.2.0.6"], "Listeners": [{"Protocol": "tcp", "Port": 80}]}});
    let text = render_human(&v);
    assert_eq!(
        text,
        "AcceptanceRequired:  false\nServiceId:           vpce-svc-1\nSnatAddresses:       10.2.0.5,10.2.0.6\n\nListeners:\nPort  Protocol\n80    tcp\n"
    );
    let v = json!({"Unsuccessful": [{"ResourceId": "vpce-9", "Error": {"Code": "NotFound"}}], "Count": 1});
    assert_eq!(
        render_human(&v),
        "Count:  1\n\nUnsuccessful:\nResourceId  Error.Code\nvpce-9      NotFound\n"
    );
    assert_eq!(render_human(&json!("v1.2")), "v1.2\n");
    assert_eq!(compact(&json!([{"Id": "a"}, null, 1.5])), "{Id=a},-,1.5");
}

#[test]
fn render_nested_objects_as_columns() {
    // describe-target-health as the daemon answers it: each nested field is a column of
    // its own, identifiers first and the free-text description last.
    let v = json!({"TargetHealthDescriptions": [
        {"Target": {"Id": "10.2.0.11", "Port": 8080, "Weight": 1},
         "Listener": {"Protocol": "tcp", "Port": 80}, "HealthCheckPort": 8080,
         "TargetHealth": {"State": "healthy", "Reason": null, "Description": null,
                          "LastChange": "2026-12-02T09:00:00Z"},
         "ActiveFlows": 3},
        {"Target": {"Id": "10.2.0.12", "Port": 8080, "Weight": 2},
         "Listener": {"Protocol": "tcp", "Port": 80}, "HealthCheckPort": 8080,
         "TargetHealth": {"State": "unhealthy", "Reason": "Target.Timeout",
                          "Description": "Request timed out", "LastChange": "2026-12-02T09:01:30Z"},
         "ActiveFlows": 0},
    ]});
    let expected = "\
Target.Id  ActiveFlows  HealthCheckPort  Listener.Port  Listener.Protocol  Target.Port  Target.Weight  TargetHealth.LastChange  TargetHealth.Reason  TargetHealth.State  TargetHealth.Description
10.2.0.11  3            8080             80             tcp                8080         1              2026-12-02T09:00:00Z     -                    healthy             -
10.2.0.12  0            8080             80             tcp                8080         2              2026-12-02T09:01:30Z     Target.Timeout       unhealthy           Request timed out
";
    assert_eq!(render_human(&v), expected);
    // One level only: deeper objects stay compact, and an empty one is a value.
    assert_eq!(
        table(&[json!({"A": {"B": {"C": 1}}, "E": {}})]),
        "A.B    E\n{C=1}  {}\n"
    );
}

#[test]
fn service_health_check_and_connection_limit_flags() {
    let inv = run_args(&[
        "modify-vpc-endpoint-service-configuration",
        "--service-id",
        "vpce-svc-1",
        "--modify-listeners",
        r#"[{"Protocol":"tcp","Port":80,"HealthCheckPath":"/healthz"}]"#,
        "--add-auto-accept-principals",
        "111111111111",
        "222222222222",
        "--remove-auto-accept-principals",
        "*",
        "--remove-connection-limits",
        "333333333333",
        "--add-connection-limits",
        r#"[{"Principal":"*","Limit":10}]"#,
        "--connection-limit",
        "111111111111=2",
        "--connection-limit=arn:aws:iam::222222222222:root=0",
    ]);
    assert_eq!(
        inv.args,
        json!({
            "ServiceId": "vpce-svc-1",
            "ModifyListeners": [{"Protocol": "tcp", "Port": 80, "HealthCheckPath": "/healthz"}],
            "AddAutoAcceptPrincipals": ["111111111111", "222222222222"],
            "RemoveAutoAcceptPrincipals": ["*"],
            "RemoveConnectionLimits": ["333333333333"],
            "AddConnectionLimits": [
                {"Principal": "*", "Limit": 10},
                {"Principal": "111111111111", "Limit": 2},
                {"Principal": "arn:aws:iam::222222222222:root", "Limit": 0},
            ],
        })
    );
    let inv = run_args(&[
        "create-vpc-endpoint-service-configuration",
        "--vpc-id",
        "vpc-2",
        "--auto-accept-principals",
        "111111111111",
        "--connection-limit",
        "*=5",
    ]);
    assert_eq!(
        inv.args,
        json!({
            "VpcId": "vpc-2",
            "AutoAcceptPrincipals": ["111111111111"],
            "ConnectionLimits": [{"Principal": "*", "Limit": 5}],
        })
    );
    for bad in [
        "111111111111",
        "=3",
        "111111111111=",
        "111111111111=-1",
        "*=x",
    ] {
        assert!(
            usage(&[
                "create-vpc-endpoint-service-configuration",
                "--connection-limit",
                bad
            ])
            .contains("expected ACCOUNT=N (or *=N)"),
            "{bad}"
        );
    }
    assert!(usage(&[
        "modify-vpc-endpoint-service-configuration",
        "--add-connection-limits",
        r#"{"Principal":"*","Limit":1}"#,
        "--connection-limit",
        "*=2",
    ])
    .contains("--add-connection-limits: must be a JSON array"));
    let h = help_text(&["modify-vpc-endpoint-service-configuration", "--help"]);
    assert!(
        h.contains("--connection-limit ACCOUNT|*=N")
            && h.contains("into AddConnectionLimits")
            && h.contains("--modify-listeners JSON"),
        "{h}"
    );
    let h = help_text(&["create-vpc-endpoint-service-configuration", "--help"]);
    assert!(h.contains("into ConnectionLimits"), "{h}");
}

#[test]
fn output_formats_and_watch_flags_parse() {
    let run_with = |s: &[&str]| match parse_args(&argv(s), None).unwrap() {
        Command::Run(inv) => inv,
        Command::Help(h) => panic!("help: {h}"),
    };
    assert_eq!(run_with(&["stats"]).output, Output::Table);
    assert_eq!(
        run_with(&["--output", "text", "stats"]).output,
        Output::Text
    );
    let j = run_with(&["--output=json", "flows"]);
    assert!(j.json && j.output == Output::Json);
    assert_eq!(run_with(&["--json", "stats"]).output, Output::Json);
    let w = run_with(&["stats", "--watch", "0.5", "--count", "2"]);
    assert_eq!(w.args["Watch"], 0.5);
    assert_eq!(w.args["Count"], 2);
    assert!(help_text(&["stats", "--help"]).contains("--watch"));
    assert!(help_text(&["--help"]).contains("--output"));
}

#[test]
fn watch_refuses_too_short_intervals_and_count_alone() {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = run(
        &argv(&["--socket", "/nonexistent", "stats", "--watch", "0"]),
        None,
        &mut out,
        &mut err,
    );
    assert_eq!(code, 2, "{}", String::from_utf8_lossy(&err));
    assert!(String::from_utf8_lossy(&err).contains("at least 0.1"));
    let mut err = Vec::new();
    let code = run(
        &argv(&["--socket", "/nonexistent", "stats", "--count", "2"]),
        None,
        &mut out,
        &mut err,
    );
    assert_eq!(code, 2);
    assert!(String::from_utf8_lossy(&err).contains("--count goes with --watch"));
}
