//! The management plane end to end, driven only through `privlinkctl` as a provider, a
//! consumer and an unrelated account would use it (each a local uid mapped to an account
//! in the configuration), with real traffic through the endpoints it creates.

use std::time::Duration;

use privlink_e2e::{
    Options, Topology, Value, CONSUMER_ACCOUNT, CONSUMER_VPC, ENDPOINT_IP, OTHER_VPC, PROVIDER_VPC,
    UID_CONSUMER, UID_OTHER, UID_PROVIDER,
};

const T: Duration = Duration::from_secs(60);

fn empty_topology() -> Topology {
    Topology::start(Options {
        declare_objects: false,
        ..Options::default()
    })
}

/// The provider creates a service (acceptance required unless `auto`) for both targets.
fn create_service(t: &Topology, acceptance: bool) -> (String, String) {
    let listeners = r#"[{"Protocol":"tcp","Port":80,"Targets":[{"Id":"10.2.0.11","Port":8080},{"Id":"10.2.0.12","Port":8080}]},{"Protocol":"udp","Port":9000,"Targets":[{"Id":"10.2.0.11","Port":9000}]}]"#;
    let flag = if acceptance {
        "--acceptance-required"
    } else {
        "--no-acceptance-required"
    };
    let v = t.ctl_ok(
        UID_PROVIDER,
        &[
            "create-vpc-endpoint-service-configuration",
            "--vpc-id",
            PROVIDER_VPC,
            "--listeners",
            listeners,
            "--snat-addresses",
            privlink_e2e::SNAT_IP,
            flag,
        ],
    );
    let svc = &v["ServiceConfiguration"];
    (
        svc["ServiceId"].as_str().expect("ServiceId").to_owned(),
        svc["ServiceName"].as_str().expect("ServiceName").to_owned(),
    )
}

fn allow(t: &Topology, service_id: &str, account: &str) {
    t.ctl_ok(
        UID_PROVIDER,
        &[
            "modify-vpc-endpoint-service-permissions",
            "--service-id",
            service_id,
            "--add-allowed-principals",
            account,
        ],
    );
}

fn create_endpoint(t: &Topology, name: &str) -> Value {
    t.ctl_ok(
        UID_CONSUMER,
        &[
            "create-vpc-endpoint",
            "--vpc-id",
            CONSUMER_VPC,
            "--service-name",
            name,
            "--ip-address",
            ENDPOINT_IP,
        ],
    )["VpcEndpoint"]
        .clone()
}

fn http_ok(t: &Topology, n: u32) -> u64 {
    let r = t.client(&["http-many", ENDPOINT_IP, "80", &n.to_string()], T);
    r["ok"].as_u64().unwrap_or(0)
}

#[test]
fn acceptance_then_reject_resets_established_connections() {
    let t = empty_topology();
    let (svc, name) = create_service(&t, true);
    allow(&t, &svc, CONSUMER_ACCOUNT);
    let ep = create_endpoint(&t, &name);
    assert_eq!(ep["State"], "pendingAcceptance", "{ep}");
    let ep_id = ep["VpcEndpointId"].as_str().unwrap().to_owned();

    assert_eq!(http_ok(&t, 2), 0, "no traffic before acceptance");
    let s = t.stats();
    assert!(Topology::drops(&s, "endpoint_not_available") >= 1, "{s}");

    let conns = t.ctl_ok(
        UID_PROVIDER,
        &["describe-vpc-endpoint-connections", "--service-id", &svc],
    );
    assert_eq!(
        conns["VpcEndpointConnections"][0]["VpcEndpointId"],
        ep_id.as_str(),
        "{conns}"
    );
    t.ctl_ok(
        UID_PROVIDER,
        &[
            "accept-vpc-endpoint-connections",
            "--service-id",
            &svc,
            "--vpc-endpoint-ids",
            &ep_id,
        ],
    );
    assert_eq!(
        http_ok(&t, 10),
        10,
        "HTTP through the accepted endpoint\n{}",
        t.log()
    );

    // A long-lived connection is running when the provider rejects the endpoint.
    let script = privlink_e2e::support("client.py");
    let child = t.consumer.spawn(
        &[
            "python3",
            "-u",
            &script,
            "keepalive",
            ENDPOINT_IP,
            "80",
            "5",
        ],
        std::process::Stdio::piped(),
    );
    std::thread::sleep(Duration::from_millis(1500));
    t.ctl_ok(
        UID_PROVIDER,
        &[
            "reject-vpc-endpoint-connections",
            "--service-id",
            &svc,
            "--vpc-endpoint-ids",
            &ep_id,
        ],
    );
    let out = child.wait_with_output().expect("keepalive client");
    let r: Value = serde_json::from_slice(&out.stdout).expect("client JSON");
    assert!(
        r["ok"].as_u64().unwrap() >= 3,
        "it worked before the reject: {r}"
    );
    let errors = r["errors"].to_string();
    assert!(
        errors.contains("reset") || errors.contains("Connection") || errors.contains("closed"),
        "the established connection was reset: {r}"
    );
    assert_eq!(http_ok(&t, 2), 0, "new connections fail after the reject");
    let eps = t.ctl_ok(
        UID_CONSUMER,
        &["describe-vpc-endpoints", "--vpc-endpoint-ids", &ep_id],
    );
    assert_eq!(eps["VpcEndpoints"][0]["State"], "rejected", "{eps}");
    let s = t.stats();
    assert!(Topology::drops(&s, "flow_ended") >= 1, "{s}");
}

#[test]
fn only_allowed_principals_connect_and_accounts_stay_apart() {
    let t = empty_topology();
    let (svc, name) = create_service(&t, false);
    // Not yet allowed: the consumer cannot create an endpoint.
    let (ok, _, err) = t.ctl(
        UID_CONSUMER,
        &[
            "create-vpc-endpoint",
            "--vpc-id",
            CONSUMER_VPC,
            "--service-name",
            &name,
        ],
    );
    assert!(
        !ok,
        "a consumer that is not an allowed principal is refused"
    );
    assert!(err.contains("error:"), "{err}");
    allow(&t, &svc, CONSUMER_ACCOUNT);
    let ep = create_endpoint(&t, &name);
    assert_eq!(ep["State"], "available", "acceptance not required: {ep}");
    assert_eq!(http_ok(&t, 5), 5);
    let ep_id = ep["VpcEndpointId"].as_str().unwrap().to_owned();

    // Another account: not allowed on the service, and blind to the others' objects.
    let (ok, _, _) = t.ctl(
        UID_OTHER,
        &[
            "create-vpc-endpoint",
            "--vpc-id",
            OTHER_VPC,
            "--service-name",
            &name,
        ],
    );
    assert!(
        !ok,
        "an account that is not allowed cannot create an endpoint"
    );
    let seen = t.ctl_ok(UID_OTHER, &["describe-vpc-endpoints"]);
    assert_eq!(
        seen["VpcEndpoints"].as_array().map(Vec::len),
        Some(0),
        "{seen}"
    );
    let (ok, _, _) = t.ctl(
        UID_OTHER,
        &["delete-vpc-endpoints", "--vpc-endpoint-ids", &ep_id],
    );
    let still = t.ctl_ok(
        UID_CONSUMER,
        &["describe-vpc-endpoints", "--vpc-endpoint-ids", &ep_id],
    );
    assert_eq!(
        still["VpcEndpoints"].as_array().map(Vec::len),
        Some(1),
        "delete by another account changed nothing (ok={ok})"
    );
    let (ok, _, _) = t.ctl(
        UID_OTHER,
        &[
            "reject-vpc-endpoint-connections",
            "--service-id",
            &svc,
            "--vpc-endpoint-ids",
            &ep_id,
        ],
    );
    assert!(!ok, "only the provider rejects");
    let (ok, _, _) = t.ctl(
        UID_CONSUMER,
        &[
            "delete-vpc-endpoint-service-configurations",
            "--service-ids",
            &svc,
        ],
    );
    let svcs = t.ctl_ok(
        UID_PROVIDER,
        &["describe-vpc-endpoint-service-configurations"],
    );
    assert_eq!(
        svcs["ServiceConfigurations"].as_array().map(Vec::len),
        Some(1),
        "the consumer cannot delete the provider's service (ok={ok})"
    );
    assert_eq!(http_ok(&t, 3), 3, "still serving");
    // Garbage and unknown operations are errors that change nothing.
    let (ok, _, _) = t.ctl(UID_CONSUMER, &["no-such-operation"]);
    assert!(!ok);
}

#[test]
fn security_groups_and_policies_gate_new_connections() {
    let t = empty_topology();
    let (svc, name) = create_service(&t, false);
    allow(&t, &svc, CONSUMER_ACCOUNT);
    let ep = create_endpoint(&t, &name);
    let ep_id = ep["VpcEndpointId"].as_str().unwrap().to_owned();
    let sg = t.ctl_ok(
        UID_CONSUMER,
        &[
            "create-security-group",
            "--vpc-id",
            CONSUMER_VPC,
            "--group-name",
            "web",
            "--description",
            "http from the subnet",
        ],
    )["GroupId"]
        .as_str()
        .unwrap()
        .to_owned();
    let rule =
        r#"[{"IpProtocol":"tcp","FromPort":80,"ToPort":80,"IpRanges":[{"CidrIp":"10.1.0.0/24"}]}]"#;
    t.ctl_ok(
        UID_CONSUMER,
        &[
            "authorize-security-group-ingress",
            "--group-id",
            &sg,
            "--ip-permissions",
            rule,
        ],
    );
    t.ctl_ok(
        UID_CONSUMER,
        &[
            "modify-vpc-endpoint",
            "--vpc-endpoint-id",
            &ep_id,
            "--add-security-group-ids",
            &sg,
        ],
    );
    assert_eq!(http_ok(&t, 3), 3, "port 80 allowed by the group");

    t.ctl_ok(
        UID_CONSUMER,
        &[
            "revoke-security-group-ingress",
            "--group-id",
            &sg,
            "--ip-permissions",
            rule,
        ],
    );
    assert_eq!(http_ok(&t, 2), 0, "rule revoked: new connections stop");
    assert!(Topology::drops(&t.stats(), "security_group") >= 2);
    t.ctl_ok(
        UID_CONSUMER,
        &[
            "authorize-security-group-ingress",
            "--group-id",
            &sg,
            "--ip-permissions",
            rule,
        ],
    );
    assert_eq!(http_ok(&t, 3), 3, "re-allowed");

    let deny = r#"{"Statement":[{"Effect":"Allow","Principal":"*"},{"Effect":"Deny","Principal":"*","SourceCidr":["10.1.0.10/32"]}]}"#;
    t.ctl_ok(
        UID_CONSUMER,
        &[
            "modify-vpc-endpoint",
            "--vpc-endpoint-id",
            &ep_id,
            "--policy-document",
            deny,
        ],
    );
    assert_eq!(http_ok(&t, 2), 0, "the policy denies the client's source");
    assert!(Topology::drops(&t.stats(), "policy") >= 2);
    t.ctl_ok(
        UID_CONSUMER,
        &[
            "modify-vpc-endpoint",
            "--vpc-endpoint-id",
            &ep_id,
            "--reset-policy",
        ],
    );
    assert_eq!(http_ok(&t, 3), 3, "policy reset: allowed again");

    // Operators see the flows and the counters.
    let stats = t.ctl_ok(UID_CONSUMER, &["stats"]);
    assert!(
        stats["Endpoints"][0]["NewFlows"].as_u64().unwrap_or(0) >= 9,
        "{stats}"
    );
    let drops = &stats["Endpoints"][0]["Drops"];
    assert!(
        drops["security_group"].as_u64().unwrap_or(0) >= 2,
        "drops by reason per endpoint: {stats}"
    );
    assert!(drops["policy"].as_u64().unwrap_or(0) >= 2, "{stats}");
    let flows = t.ctl_ok(
        UID_CONSUMER,
        &["flows", "--vpc-endpoint-id", &ep_id, "--max-results", "5"],
    );
    // Each side sees only its own addresses.
    let listed = flows["Flows"].as_array().expect("flows");
    assert!(
        !listed.is_empty(),
        "the last connections are listed: {flows}"
    );
    for f in listed {
        assert!(
            f["Consumer"].is_string() && f["Endpoint"].is_string(),
            "{f}"
        );
        assert!(f.get("Target").is_none() && f.get("Snat").is_none(), "{f}");
    }
    let theirs = t.ctl_ok(UID_PROVIDER, &["flows", "--max-results", "5"]);
    let listed = theirs["Flows"].as_array().expect("flows");
    assert!(!listed.is_empty(), "{theirs}");
    for f in listed {
        assert!(f["Target"].is_string() && f["Snat"].is_string(), "{f}");
        assert!(
            f.get("Consumer").is_none() && f.get("Endpoint").is_none(),
            "{f}"
        );
    }
    let (ok, none, _) = t.ctl(UID_OTHER, &["flows"]);
    assert!(ok && none["Flows"] == serde_json::json!([]), "{none}");
    let health = t.ctl_ok(
        UID_PROVIDER,
        &["describe-target-health", "--service-id", &svc],
    );
    assert_eq!(
        health["TargetHealthDescriptions"].as_array().map(Vec::len),
        Some(3),
        "{health}"
    );
}

#[test]
fn restart_restores_every_object_and_a_corrupt_state_file_stops_the_start() {
    let mut t = empty_topology();
    let (svc, name) = create_service(&t, false);
    allow(&t, &svc, CONSUMER_ACCOUNT);
    let ep = create_endpoint(&t, &name);
    let ep_id = ep["VpcEndpointId"].as_str().unwrap().to_owned();
    assert_eq!(http_ok(&t, 3), 3);

    t.restart();
    let eps = t.ctl_ok(UID_CONSUMER, &["describe-vpc-endpoints"]);
    assert_eq!(
        eps["VpcEndpoints"][0]["VpcEndpointId"],
        ep_id.as_str(),
        "{eps}"
    );
    let svcs = t.ctl_ok(
        UID_PROVIDER,
        &["describe-vpc-endpoint-service-configurations"],
    );
    assert_eq!(
        svcs["ServiceConfigurations"][0]["ServiceId"],
        svc.as_str(),
        "{svcs}"
    );
    assert_eq!(
        http_ok(&t, 5),
        5,
        "HTTP through the endpoint works again after restart\n{}",
        t.log()
    );

    // Truncate the state file: privlinkd refuses to start and leaves it as it is.
    let (clean, _) = t.stop();
    assert!(clean);
    let path = t.dir.join("state").join("state.json");
    let bytes = std::fs::read(&path).expect("state file");
    let cut = &bytes[..bytes.len() / 2];
    std::fs::write(&path, cut).unwrap();
    let log = t.start_expecting_failure();
    assert!(
        log.contains("state"),
        "the error names the state file: {log}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        cut,
        "the corrupt file is kept untouched"
    );

    // A file whose checksum is right but whose objects are not valid (one endpoint twice)
    // is refused too, with a message that names the file and what to do.
    let (_, body) = bytes.split_at(bytes.iter().position(|&b| b == b'\n').unwrap() + 1);
    let mut state: Value = serde_json::from_slice(body).unwrap();
    let first = state["endpoints"][0].clone();
    state["endpoints"].as_array_mut().unwrap().push(first);
    let body = serde_json::to_vec_pretty(&state).unwrap();
    let fnv = body.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let mut file =
        format!("privlink-state v1 len={} fnv1a64={fnv:016x}\n", body.len()).into_bytes();
    file.extend_from_slice(&body);
    std::fs::write(&path, &file).unwrap();
    let log = t.start_expecting_failure();
    assert!(
        log.contains(&path.display().to_string()) && log.contains("move the file aside"),
        "the error names the file and the remedy: {log}"
    );
    assert!(log.contains("twice"), "and the problem: {log}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        file,
        "the file is kept untouched"
    );
}

/// A tmpfs mounted over a directory for the length of a test (unmounted however it ends).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        privlink_e2e::must(&[
            "mount",
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size},mode=0700"),
            "tmpfs",
            &dir.display().to_string(),
        ]);
        Tmpfs(dir.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = privlink_e2e::run(
            &["umount", "-l", &self.0.display().to_string()],
            Duration::from_secs(10),
        );
    }
}

fn groups(t: &Topology) -> Vec<String> {
    t.ctl_ok(UID_CONSUMER, &["describe-security-groups"])["SecurityGroups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["GroupName"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_full_disk_refuses_changes_and_loses_nothing_acknowledged() {
    let mut t = empty_topology();
    let state_dir = t.dir.join("state");
    let _fs = Tmpfs::mount(&state_dir, "256k");
    let create = |t: &Topology, name: &str| {
        t.ctl(
            UID_CONSUMER,
            &[
                "create-security-group",
                "--vpc-id",
                CONSUMER_VPC,
                "--group-name",
                name,
            ],
        )
    };
    let (ok, v, err) = create(&t, "before");
    assert!(ok, "{err}");
    let id = v["GroupId"].as_str().expect("GroupId").to_owned();
    assert!(
        t.log().contains(&format!("op=create-security-group uid={UID_CONSUMER} account={CONSUMER_ACCOUNT} admin=false result=ok objects={id}")),
        "the audit line names the object the change touched:\n{}",
        t.log()
    );
    // Fill the state directory's file system to the last byte.
    let filler = state_dir.join("filler");
    let _ = privlink_e2e::run(
        &[
            "dd",
            "if=/dev/zero",
            &format!("of={}", filler.display()),
            "bs=4k",
        ],
        Duration::from_secs(20),
    );
    let (ok, _, err) = create(&t, "refused");
    assert!(!ok, "a change that cannot be saved is refused");
    assert!(
        err.contains("InternalError") && err.contains("nothing changed"),
        "{err}"
    );
    assert_eq!(groups(&t), vec!["before".to_owned()], "nothing changed");
    assert!(
        !state_dir.join("state.json.tmp").exists(),
        "no partial file holds the space"
    );
    // Space again: changes go on, and a restart has exactly what was acknowledged.
    std::fs::remove_file(&filler).unwrap();
    let (ok, _, err) = create(&t, "after");
    assert!(ok, "{err}");
    t.restart();
    let mut names = groups(&t);
    names.sort();
    assert_eq!(names, vec!["after".to_owned(), "before".to_owned()]);
}

#[test]
fn a_crash_loses_no_acknowledged_change_and_a_torn_record_is_dropped() {
    let mut t = empty_topology();
    let state_dir = t.dir.join("state");
    let create = |t: &Topology, name: &str| {
        t.ctl_ok(
            UID_CONSUMER,
            &[
                "create-security-group",
                "--vpc-id",
                CONSUMER_VPC,
                "--group-name",
                name,
            ],
        );
    };
    let sorted = |t: &Topology| {
        let mut names = groups(t);
        names.sort();
        names
    };
    // The start wrote a checkpoint; changes are journal records after it.
    for name in ["a", "b", "c"] {
        create(&t, name);
    }
    let journal = state_dir.join("state.journal");
    assert!(
        journal.exists(),
        "changes after the checkpoint are journaled"
    );
    t.crash();
    assert!(journal.exists(), "a crash leaves the journal");
    // What a crash in the middle of the next append leaves: part of a record.
    let mut bytes = std::fs::read(&journal).unwrap();
    bytes.extend_from_slice(&[0x40, 0, 0, 0, 0xbf, 0xff, 0xff, 0xff, 1, 0]);
    std::fs::write(&journal, &bytes).unwrap();
    t.start_again();
    assert_eq!(
        sorted(&t),
        ["a", "b", "c"],
        "every acknowledged change:\n{}",
        t.log()
    );
    assert!(
        t.log().contains("cut short by a crash"),
        "the dropped record is logged:\n{}",
        t.log()
    );
    // The next change follows the last good record; a crash keeps it too.
    create(&t, "d");
    t.crash();
    t.start_again();
    assert_eq!(sorted(&t), ["a", "b", "c", "d"], "{}", t.log());
    // A clean stop leaves one checkpoint.
    t.restart();
    assert!(
        !journal.exists(),
        "a clean stop folds the journal into the checkpoint"
    );
    assert_eq!(sorted(&t), ["a", "b", "c", "d"]);
}

#[test]
fn declared_objects_stay_deleted_and_a_reload_revokes_removed_uids() {
    let mut t = Topology::start(Options::default());
    let declared = "vpce-0e0000000000000e1";
    // The consumer deletes the endpoint the file declares, the provider revokes its
    // permission on the declared service.
    t.ctl_ok(
        UID_CONSUMER,
        &["delete-vpc-endpoints", "--vpc-endpoint-ids", declared],
    );
    t.ctl_ok(
        UID_PROVIDER,
        &[
            "modify-vpc-endpoint-service-permissions",
            "--service-id",
            "vpce-svc-0d0000000000000d1",
            "--remove-allowed-principals",
            CONSUMER_ACCOUNT,
        ],
    );
    let state = |t: &Topology| {
        let v = t.ctl_ok(UID_CONSUMER, &["describe-vpc-endpoints"]);
        v["VpcEndpoints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["VpcEndpointId"] == declared)
            .map(|e| e["State"].as_str().unwrap().to_owned())
    };
    let s = state(&t).expect("visible while deleting or deleted");
    assert!(s == "deleting" || s == "deleted", "{s}");
    // Neither a restart nor a reload of the unchanged file brings either back.
    t.restart();
    let opts = t.opts.clone();
    t.reload(opts.clone());
    assert_ne!(state(&t).as_deref(), Some("available"), "{}", t.log());
    let perms = t.ctl_ok(
        UID_PROVIDER,
        &[
            "describe-vpc-endpoint-service-permissions",
            "--service-id",
            "vpce-svc-0d0000000000000d1",
        ],
    );
    assert_eq!(perms["AllowedPrincipals"], serde_json::json!([]), "{perms}");
    assert_eq!(http_ok(&t, 2), 0, "no traffic through the deleted endpoint");

    // A reload that takes the consumer's uid away revokes its access at once, on the
    // connection it already has too (privlinkctl opens one per call; root keeps access).
    t.reload(Options {
        revoke_consumer_uid: true,
        ..opts
    });
    let (ok, _, err) = t.ctl(UID_CONSUMER, &["describe-vpc-endpoints"]);
    assert!(!ok && err.contains("UnauthorizedOperation"), "{err}");
    t.ctl_ok(0, &["describe-vpc-endpoints"]);
    // And a reload of a section that needs a restart is refused, changing nothing.
    let text = std::fs::read_to_string(&t.config_path).unwrap();
    std::fs::write(&t.config_path, text.replace("udp = 30", "udp = 31")).unwrap();
    let pid = t.pid().to_string();
    privlink_e2e::must(&["kill", "-HUP", &pid]);
    t.wait_log(
        "reload refused, nothing changed: [timeouts]",
        Duration::from_secs(10),
    );
}

#[test]
fn deregistered_targets_drain_then_their_flows_end() {
    let t = Topology::start(Options {
        declare_objects: false,
        deregistration_delay: 3.0,
        ..Options::default()
    });
    let (svc, name) = create_service(&t, false);
    allow(&t, &svc, CONSUMER_ACCOUNT);
    create_endpoint(&t, &name);
    let script = privlink_e2e::support("client.py");
    let child = t.consumer.spawn(
        &[
            "python3",
            "-u",
            &script,
            "keepalive",
            ENDPOINT_IP,
            "80",
            "8",
        ],
        std::process::Stdio::piped(),
    );
    std::thread::sleep(Duration::from_millis(1000));
    let targets = r#"[{"Id":"10.2.0.11","Port":8080},{"Id":"10.2.0.12","Port":8080}]"#;
    t.ctl_ok(
        UID_PROVIDER,
        &[
            "deregister-targets",
            "--service-id",
            &svc,
            "--protocol",
            "tcp",
            "--port",
            "80",
            "--targets",
            targets,
        ],
    );
    let health = t.ctl_ok(
        UID_PROVIDER,
        &["describe-target-health", "--service-id", &svc],
    );
    let draining = health["TargetHealthDescriptions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["TargetHealth"]["State"] == "draining")
        .count();
    assert_eq!(draining, 2, "{health}");
    assert_eq!(http_ok(&t, 2), 0, "no new flows to draining targets");
    let out = child.wait_with_output().expect("keepalive client");
    let r: Value = serde_json::from_slice(&out.stdout).expect("client JSON");
    // ~1 s before, ~3 s of draining at 10 requests/s, then the reset.
    assert!(
        r["ok"].as_u64().unwrap() >= 25,
        "the connection kept working while draining: {r}"
    );
    assert!(
        !r["errors"].as_array().unwrap().is_empty(),
        "then it was ended: {r}"
    );
    let s = t.stats();
    assert!(Topology::drops(&s, "flow_ended") >= 1, "{s}");
    assert!(Topology::drops(&s, "no_target") >= 2, "{s}");
}

#[test]
fn connection_limits_and_auto_accept_through_privlinkctl() {
    let t = empty_topology();
    let (svc, name) = create_service(&t, true);
    allow(&t, &svc, CONSUMER_ACCOUNT);
    let limit = format!("{CONSUMER_ACCOUNT}=1");
    t.ctl_ok(
        UID_PROVIDER,
        &[
            "modify-vpc-endpoint-service-configuration",
            "--service-id",
            &svc,
            "--connection-limit",
            &limit,
            "--add-auto-accept-principals",
            CONSUMER_ACCOUNT,
        ],
    );
    // Acceptance is required, but this consumer is auto-accepted: available at once.
    let ep = create_endpoint(&t, &name);
    assert_eq!(ep["State"], "available", "{ep}");
    assert_eq!(
        http_ok(&t, 2),
        2,
        "traffic flows without the provider's answer"
    );

    let second = |ip: &str| {
        t.ctl(
            UID_CONSUMER,
            &[
                "create-vpc-endpoint",
                "--vpc-id",
                CONSUMER_VPC,
                "--service-name",
                &name,
                "--ip-address",
                ip,
            ],
        )
    };
    let (ok, _, err) = second("10.1.0.101");
    assert!(!ok && err.contains("ConnectionLimitExceeded"), "{err}");
    // The consumer cannot lift the provider's limit.
    let (ok, _, err) = t.ctl(
        UID_CONSUMER,
        &[
            "modify-vpc-endpoint-service-configuration",
            "--service-id",
            &svc,
            "--remove-connection-limits",
            CONSUMER_ACCOUNT,
        ],
    );
    assert!(!ok, "{err}");

    t.ctl_ok(
        UID_PROVIDER,
        &[
            "modify-vpc-endpoint-service-configuration",
            "--service-id",
            &svc,
            "--remove-connection-limits",
            CONSUMER_ACCOUNT,
            "--remove-auto-accept-principals",
            CONSUMER_ACCOUNT,
        ],
    );
    let (ok, v, err) = second("10.1.0.101");
    assert!(ok, "{err}");
    assert_eq!(
        v["VpcEndpoint"]["State"], "pendingAcceptance",
        "no longer auto-accepted: {v}"
    );
}

#[test]
fn connection_events_reach_the_endpoints_and_the_services_owners_only() {
    let t = empty_topology();
    let (svc, name) = create_service(&t, true);
    allow(&t, &svc, CONSUMER_ACCOUNT);
    let consumer = t.subscribe(UID_CONSUMER, 3);
    let provider = t.subscribe(UID_PROVIDER, 3);
    let other = t.subscribe(UID_OTHER, 1);
    // Every subscription is in before anything happens (each waited for its own).
    assert_eq!(
        t.log().matches("op=subscribe-events").count(),
        3,
        "{}",
        t.log()
    );
    let ep = create_endpoint(&t, &name);
    let ep_id = ep["VpcEndpointId"].as_str().unwrap().to_owned();
    t.ctl_ok(
        UID_PROVIDER,
        &[
            "accept-vpc-endpoint-connections",
            "--service-id",
            &svc,
            "--vpc-endpoint-ids",
            &ep_id,
        ],
    );
    t.ctl_ok(
        UID_CONSUMER,
        &["delete-vpc-endpoints", "--vpc-endpoint-ids", &ep_id],
    );
    for (who, got) in [
        (
            "consumer",
            privlink_e2e::events_of(consumer, Duration::from_secs(10)),
        ),
        (
            "provider",
            privlink_e2e::events_of(provider, Duration::from_secs(10)),
        ),
    ] {
        let types: Vec<&str> = got
            .iter()
            .map(|e| e["Type"].as_str().unwrap_or("?"))
            .collect();
        assert_eq!(types, ["Connect", "Accept", "Delete"], "{who}: {got:?}");
        for e in &got {
            assert_eq!(e["VpcEndpointId"], ep_id.as_str(), "{who}: {e}");
            assert_eq!(e["ServiceId"], svc.as_str(), "{who}: {e}");
        }
        assert_eq!(got[0]["VpcEndpointState"], "pendingAcceptance", "{got:?}");
        assert_eq!(got[1]["VpcEndpointState"], "available", "{got:?}");
    }
    let seen = privlink_e2e::events_of(other, Duration::from_secs(1));
    assert!(seen.is_empty(), "another account saw {seen:?}");
}
