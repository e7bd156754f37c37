//! `[cluster]` end to end: the object model in etcd (a private etcd on loopback that each
//! test starts and stops), shared by the two nodes of an HA pair. A change through one
//! node's socket is in force on the other's data plane within a second; concurrent
//! changes through both lose nothing and duplicate nothing; with etcd down, changes are
//! refused, forwarding goes on and a restarted node comes up from its cache; a
//! three-member etcd loses a member and changes keep working. Run as root, one at a time
//! (`make test`).

use std::time::{Duration, Instant};

use privlink_e2e::{
    Etcd, Node, Options, Pair, Topology, Value, CONSUMER_VPC, ENDPOINT_IP, UID_CONSUMER,
    UID_PROVIDER,
};

const T: Duration = Duration::from_secs(60);
/// The target of issue 13: a change through one node is in force on the others within
/// this.
const IN_FORCE_WITHIN: Duration = Duration::from_secs(1);
/// The log line a cluster node writes once watched changes are in its data plane.
const LOG_IN_FORCE: &str = "cluster: revision";
const SECOND_ENDPOINT_IP: &str = "10.1.0.101";
const RULE: &str =
    r#"[{"IpProtocol":"tcp","FromPort":80,"ToPort":80,"IpRanges":[{"CidrIp":"10.1.0.0/24"}]}]"#;

fn cluster_options(etcd: &Etcd) -> Options {
    Options {
        extra_toml: etcd.cluster_toml("/privlink-e2e/"),
        ..Options::default()
    }
}

/// `privlinkctl` through `node` that must succeed.
fn ok(p: &Pair, node: Node, uid: u32, args: &[&str]) -> Value {
    let (ok, v, err) = p.ctl(node, uid, args);
    assert!(
        ok,
        "privlinkctl {args:?} through node {} failed: {err}\n{v}\n{}",
        node.name(),
        p.logs()
    );
    v
}

fn http_ok(p: &Pair, ip: &str, n: u32) -> u64 {
    let r = p.client(&["http-many", ip, "80", &n.to_string()], T);
    r["ok"].as_u64().unwrap_or(0)
}

/// `create-vpc-endpoint` of the consumer through `node` (with a ClientToken when given).
fn create_endpoint(
    p: &Pair,
    node: Node,
    service: &str,
    ip: &str,
    token: Option<&str>,
) -> (bool, Value, String) {
    let mut args = vec![
        "create-vpc-endpoint",
        "--vpc-id",
        CONSUMER_VPC,
        "--service-name",
        service,
        "--ip-address",
        ip,
    ];
    if let Some(t) = token {
        args.extend(["--client-token", t]);
    }
    p.ctl(node, UID_CONSUMER, &args)
}

/// `create-security-group` of the consumer through `node`.
fn create_group(p: &Pair, node: Node, name: &str) -> (bool, Value, String) {
    p.ctl(
        node,
        UID_CONSUMER,
        &[
            "create-security-group",
            "--vpc-id",
            CONSUMER_VPC,
            "--group-name",
            name,
            "--description",
            "made by the cluster tests",
        ],
    )
}

/// [`create_group`] that must succeed: the group's id.
fn group(p: &Pair, node: Node, name: &str) -> String {
    let (done, v, err) = create_group(p, node, name);
    assert!(
        done,
        "group {name} through node {}: {err}\n{}",
        node.name(),
        p.logs()
    );
    v["GroupId"].as_str().unwrap_or_default().to_owned()
}

fn service_name(p: &Pair, node: Node) -> String {
    let v = ok(
        p,
        node,
        UID_PROVIDER,
        &["describe-vpc-endpoint-service-configurations"],
    );
    v["ServiceConfigurations"][0]["ServiceName"]
        .as_str()
        .unwrap_or_else(|| panic!("no service: {v}"))
        .to_owned()
}

/// Runs `change` through `from` and measures how long after its acknowledgement `to`
/// logged the new revision in force.
fn change_in_force(p: &mut Pair, from: Node, to: Node, what: &str, change: impl FnOnce(&Pair)) {
    let mark = p.log_mark(to);
    change(p);
    let acked = Instant::now();
    p.wait_log_since(to, mark, LOG_IN_FORCE, Duration::from_secs(10));
    let took = acked.elapsed();
    eprintln!(
        "{what}: acknowledged by node {}, in force on node {}'s data plane {:.0} ms later",
        from.name(),
        to.name(),
        took.as_secs_f64() * 1000.0
    );
    assert!(
        took <= IN_FORCE_WITHIN,
        "{what}: in force on node {} {took:?} after the acknowledgement (at most {IN_FORCE_WITHIN:?})\n{}",
        to.name(),
        p.logs()
    );
}

#[test]
fn a_change_through_one_node_is_in_force_on_the_other_within_a_second() {
    let etcd = Etcd::start(1);
    let mut p = Pair::start(cluster_options(&etcd));
    // Node a applied the file's declarations to etcd at its start; b found them there.
    assert_eq!(http_ok(&p, ENDPOINT_IP, 3), 3, "{}", p.logs());
    let name = service_name(&p, Node::B);

    let mut ep = String::new();
    change_in_force(&mut p, Node::B, Node::A, "create an endpoint", |p| {
        let (done, v, err) = create_endpoint(p, Node::B, &name, SECOND_ENDPOINT_IP, None);
        assert!(done, "{err}\n{}", p.logs());
        ep = v["VpcEndpoint"]["VpcEndpointId"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
    });
    assert_eq!(
        http_ok(&p, SECOND_ENDPOINT_IP, 3),
        3,
        "node a (active) serves the endpoint created through b\n{}",
        p.logs()
    );
    let seen = ok(&p, Node::A, UID_CONSUMER, &["describe-vpc-endpoints"]);
    assert_eq!(
        seen["VpcEndpoints"].as_array().map(Vec::len),
        Some(2),
        "{seen}"
    );

    let sg = group(&p, Node::B, "web");
    ok(
        &p,
        Node::B,
        UID_CONSUMER,
        &[
            "authorize-security-group-ingress",
            "--group-id",
            &sg,
            "--ip-permissions",
            RULE,
        ],
    );
    ok(
        &p,
        Node::B,
        UID_CONSUMER,
        &[
            "modify-vpc-endpoint",
            "--vpc-endpoint-id",
            &ep,
            "--add-security-group-ids",
            &sg,
        ],
    );
    // Settle: a's data plane has the group before the rule goes.
    let end = Instant::now() + Duration::from_secs(5);
    while http_ok(&p, SECOND_ENDPOINT_IP, 1) != 1 {
        assert!(
            Instant::now() < end,
            "the group's rule allows port 80\n{}",
            p.logs()
        );
    }
    change_in_force(
        &mut p,
        Node::B,
        Node::A,
        "revoke a security-group rule",
        |p| {
            ok(
                p,
                Node::B,
                UID_CONSUMER,
                &[
                    "revoke-security-group-ingress",
                    "--group-id",
                    &sg,
                    "--ip-permissions",
                    RULE,
                ],
            );
        },
    );
    assert_eq!(
        http_ok(&p, SECOND_ENDPOINT_IP, 2),
        0,
        "the rule revoked through b stops new connections through a\n{}",
        p.logs()
    );
    let s = p.stats(Node::A);
    assert!(Topology::drops(&s, "security_group") >= 2, "{s}");
}

/// The security group's rules as (protocol, from port) pairs, sorted.
fn rules(p: &Pair, node: Node, sg: &str) -> Vec<(String, i64)> {
    let v = ok(
        p,
        node,
        UID_CONSUMER,
        &["describe-security-groups", "--group-ids", sg],
    );
    let mut out: Vec<(String, i64)> = v["SecurityGroups"][0]["IpPermissions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|r| {
            (
                r["IpProtocol"].as_str().unwrap_or("").to_owned(),
                r["FromPort"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn concurrent_changes_through_both_nodes_lose_and_duplicate_nothing() {
    let etcd = Etcd::start(1);
    let p = Pair::start(cluster_options(&etcd));
    let sg = group(&p, Node::A, "many");
    const EACH: i64 = 12;
    let conflicts = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        for (node, base) in [(Node::A, 1000), (Node::B, 2000)] {
            let (p, sg, conflicts) = (&p, &sg, &conflicts);
            s.spawn(move || {
                for i in 0..EACH {
                    let rule = format!(
                        r#"[{{"IpProtocol":"tcp","FromPort":{port},"ToPort":{port},"IpRanges":[{{"CidrIp":"10.1.0.0/24"}}]}}]"#,
                        port = base + i
                    );
                    let args = ["authorize-security-group-ingress", "--group-id", sg,
                                "--ip-permissions", &rule];
                    // A conflict after the node's own retries is an answer the client may
                    // get; it sends again.
                    let mut tries = 0;
                    loop {
                        let (done, v, err) = p.ctl(node, UID_CONSUMER, &args);
                        if done {
                            break;
                        }
                        tries += 1;
                        assert!(
                            err.contains("ConcurrentModification") && tries < 5,
                            "rule {} through node {}: {err}\n{v}",
                            base + i,
                            node.name()
                        );
                        conflicts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let want: Vec<(String, i64)> = (0..EACH)
        .flat_map(|i| [("tcp".to_owned(), 1000 + i), ("tcp".to_owned(), 2000 + i)])
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    // Both nodes converge on every rule, each once.
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let (a, b) = (rules(&p, Node::A, &sg), rules(&p, Node::B, &sg));
        if a == want && b == want {
            break;
        }
        assert!(
            Instant::now() < end,
            "rules on a {a:?}, on b {b:?}, want {want:?}\n{}",
            p.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "{} rules through two nodes at once: all there once each on both nodes; the nodes \
         validated {} changes again after losing the race to etcd; {} conflict answers resent",
        2 * EACH,
        p.logs().matches("validating again").count(),
        conflicts.load(std::sync::atomic::Ordering::Relaxed)
    );

    // One ClientToken through both nodes at once: one endpoint, one answer.
    let name = service_name(&p, Node::A);
    let answers: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = [Node::A, Node::B]
            .into_iter()
            .map(|node| {
                let (p, name) = (&p, &name);
                s.spawn(move || {
                    let (done, v, err) = create_endpoint(
                        p,
                        node,
                        name,
                        SECOND_ENDPOINT_IP,
                        Some("same-token-both-nodes"),
                    );
                    assert!(done, "node {}: {err}", node.name());
                    v["VpcEndpoint"]["VpcEndpointId"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned()
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("client thread"))
            .collect()
    });
    assert_eq!(
        answers[0], answers[1],
        "one endpoint for one token: {answers:?}"
    );
    let eps = ok(&p, Node::B, UID_CONSUMER, &["describe-vpc-endpoints"]);
    let with_ip = eps["VpcEndpoints"]
        .as_array()
        .map(|v| {
            v.iter()
                .filter(|e| e.to_string().contains(SECOND_ENDPOINT_IP))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(with_ip, 1, "{eps}");
}

/// Waits until `node`'s answers say they may be stale (or not), at most 10 s.
fn wait_stale(p: &Pair, node: Node, stale: bool) -> Value {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let v = ok(p, node, UID_CONSUMER, &["describe-vpc-endpoints"]);
        if (v["StateMayBeStale"] == true) == stale {
            return v;
        }
        assert!(
            Instant::now() < end,
            "node {}: StateMayBeStale is not {stale}: {v}\n{}",
            node.name(),
            p.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn with_etcd_down_changes_are_refused_forwarding_goes_on_and_a_restart_uses_the_cache() {
    let mut etcd = Etcd::start(1);
    let mut p = Pair::start(cluster_options(&etcd));
    assert_eq!(http_ok(&p, ENDPOINT_IP, 2), 2, "{}", p.logs());
    etcd.kill_member(0);

    for node in [Node::A, Node::B] {
        let (done, v, err) = create_group(&p, node, "refused");
        assert!(
            !done,
            "a change with etcd down was acknowledged by {}: {v}",
            node.name()
        );
        assert!(
            err.contains("ServiceUnavailable"),
            "node {}: {err}",
            node.name()
        );
    }
    let v = wait_stale(&p, Node::A, true);
    eprintln!(
        "etcd down: node a answers from its last state: {}",
        v["StaleReason"]
    );
    assert_eq!(v["VpcEndpoints"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(
        http_ok(&p, ENDPOINT_IP, 3),
        3,
        "forwarding goes on with etcd down\n{}",
        p.logs()
    );

    // A node restarted while etcd is away starts from its cache.
    p.stop(Node::B);
    p.restart(Node::B);
    p.wait_standby_with_peer(Node::B);
    assert!(
        p.log(Node::B).contains("starting from the local cache"),
        "{}",
        p.log(Node::B)
    );
    let v = wait_stale(&p, Node::B, true);
    assert_eq!(
        v["VpcEndpoints"].as_array().map(Vec::len),
        Some(1),
        "node b's cache holds the endpoint: {v}"
    );
    let (done, _, err) = create_group(&p, Node::B, "refused-too");
    assert!(!done && err.contains("ServiceUnavailable"), "{err}");

    etcd.start_member(0);
    etcd.wait_healthy(Duration::from_secs(30));
    // Changes work again once the nodes see etcd back (the watch retries within 2 s).
    let end = Instant::now() + Duration::from_secs(15);
    let sg = loop {
        let (done, v, err) = create_group(&p, Node::B, "after");
        if done {
            break v["GroupId"].as_str().unwrap_or_default().to_owned();
        }
        assert!(
            Instant::now() < end,
            "changes still refused after etcd came back: {err}\n{}",
            p.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    wait_stale(&p, Node::A, false);
    wait_stale(&p, Node::B, false);
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let a = ok(&p, Node::A, UID_CONSUMER, &["describe-security-groups"]);
        let b = ok(&p, Node::B, UID_CONSUMER, &["describe-security-groups"]);
        if a == b && a.to_string().contains(&sg) {
            assert!(
                !a.to_string().contains("refused"),
                "a refused change was made: {a}"
            );
            break;
        }
        assert!(Instant::now() < end, "the nodes disagree: a {a}\nb {b}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_three_member_etcd_loses_a_member_and_changes_keep_working() {
    let mut etcd = Etcd::start(3);
    let p = Pair::start(cluster_options(&etcd));
    // The first member is the one the nodes talk to first (and, started first, most
    // likely the leader: the others elect a new one).
    etcd.kill_member(0);
    let killed = Instant::now();
    etcd.wait_healthy(Duration::from_secs(30));
    eprintln!(
        "member 0 killed: the other two answer again after {:.0} ms",
        killed.elapsed().as_secs_f64() * 1000.0
    );
    for (i, node) in [Node::A, Node::B, Node::A].into_iter().enumerate() {
        let started = Instant::now();
        let (done, v, err) = create_group(&p, node, &format!("g{i}"));
        assert!(
            done,
            "a change through node {} with one of three members down: {err}\n{v}\n{}",
            node.name(),
            p.logs()
        );
        eprintln!(
            "change {i} through node {} with member 0 down: {:.0} ms",
            node.name(),
            started.elapsed().as_secs_f64() * 1000.0
        );
    }
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let a = ok(&p, Node::A, UID_CONSUMER, &["describe-security-groups"]);
        let b = ok(&p, Node::B, UID_CONSUMER, &["describe-security-groups"]);
        let n = a["SecurityGroups"].as_array().map(Vec::len);
        if a == b && n == Some(3) {
            break;
        }
        assert!(Instant::now() < end, "a {a}\nb {b}\n{}", etcd.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_etcd_client_pages_guards_and_sees_compaction() {
    use mgmt::cluster::etcd::{self, EtcdError, Op};
    let e = Etcd::start(1);
    let c = etcd::Etcd::new(&e.urls(), Duration::from_secs(5));
    let n = usize::try_from(etcd::PAGE).expect("a page fits") + 250;
    let key = |i: usize| format!("/p/k{i:06}").into_bytes();
    let mut guard = 0;
    for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
        let mut ops: Vec<Op> = chunk
            .iter()
            .map(|&i| Op::Put(key(i), vec![b'v'; 10]))
            .collect();
        ops.push(Op::Put(b"/p/commit".to_vec(), b"{}".to_vec()));
        let t = c.txn_if_unmodified(b"/p/commit", guard, &ops).expect("txn");
        assert!(t.succeeded, "{t:?}");
        guard = t.revision;
    }
    // A write outside the prefix is not loaded.
    c.put(b"/q/other", b"x").expect("put");
    let loaded = c.load_prefix(b"/p/").expect("load");
    assert_eq!(loaded.kvs.len(), n + 1, "every key, over two pages");
    assert!(loaded.kvs.windows(2).all(|w| w[0].key < w[1].key));
    // A stale guard: refused, with where the guard is now.
    let t = c
        .txn_if_unmodified(b"/p/commit", guard - 1, &[Op::Delete(key(0))])
        .expect("txn");
    assert!(!t.succeeded);
    assert_eq!(t.guard_revision, guard);
    assert_eq!(c.mod_revision(b"/p/commit").expect("range"), guard);
    // Watching from a compacted revision says so (the node then loads everything).
    let out = privlink_e2e::run(
        &[
            "curl",
            "-sf",
            "-X",
            "POST",
            "-d",
            &format!(r#"{{"revision":"{guard}"}}"#),
            &format!("{}/v3/kv/compaction", e.urls()[0]),
        ],
        Duration::from_secs(10),
    );
    assert!(out.status.success(), "{out:?}");
    match c.watch(b"/p/", 2, Duration::from_secs(5)) {
        Err(EtcdError::Compacted(r)) => assert_eq!(r, guard),
        Ok(mut w) => match w.next_events() {
            Err(etcd::WatchError::Etcd(EtcdError::Compacted(r))) => assert_eq!(r, guard),
            other => panic!("{other:?}"),
        },
        Err(other) => panic!("{other:?}"),
    }
}

#[test]
fn quotas_hold_for_the_fleet_when_both_nodes_create_at_once() {
    let etcd = Etcd::start(1);
    // The declared endpoint and two more: four created at once through two nodes, two
    // must be refused.
    let mut opts = cluster_options(&etcd);
    opts.extra_toml
        .push_str("\n[quotas]\nendpoints_per_vpc = 3\n");
    let p = Pair::start(opts);
    let name = service_name(&p, Node::A);
    let results: Vec<(bool, String)> = std::thread::scope(|s| {
        let hs: Vec<_> = [
            (Node::A, "10.1.0.101"),
            (Node::B, "10.1.0.102"),
            (Node::A, "10.1.0.103"),
            (Node::B, "10.1.0.104"),
        ]
        .into_iter()
        .map(|(node, ip)| {
            let (p, name) = (&p, &name);
            s.spawn(move || {
                let (done, _, err) = create_endpoint(p, node, name, ip, None);
                (done, err)
            })
        })
        .collect();
        hs.into_iter()
            .map(|h| h.join().expect("client thread"))
            .collect()
    });
    let made = results.iter().filter(|(done, _)| *done).count();
    assert_eq!(made, 2, "two of four fit the fleet's quota: {results:?}");
    for (done, err) in &results {
        assert!(*done || err.contains("VpcEndpointLimitExceeded"), "{err}");
    }
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let n = |node| {
            ok(&p, node, UID_CONSUMER, &["describe-vpc-endpoints"])["VpcEndpoints"]
                .as_array()
                .map(Vec::len)
        };
        if n(Node::A) == Some(3) && n(Node::B) == Some(3) {
            break;
        }
        assert!(
            Instant::now() < end,
            "both nodes hold 3 endpoints\n{}",
            p.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_key_privlink_cannot_read_stops_changes_until_it_is_removed() {
    use mgmt::cluster::etcd::{self, Op};
    let etcd = Etcd::start(1);
    let p = Pair::start(cluster_options(&etcd));
    let c = etcd::Etcd::new(&etcd.urls(), Duration::from_secs(5));
    // A good group and a bad key written by someone else in one transaction: the node
    // must not apply the one and skip the other.
    let template = group(&p, Node::A, "template");
    let groups = c
        .load_prefix(b"/privlink-e2e/security-groups/")
        .expect("load");
    let value = String::from_utf8(groups.kvs[0].value.clone()).expect("utf-8");
    let smuggled_id = "sg-0fedcba987654321f";
    let smuggled = value
        .replace(&template, smuggled_id)
        .replace("\"template\"", "\"smuggled\"");
    assert_ne!(smuggled, value);
    let key = "/privlink-e2e/security-groups/sg-0123456789abcdef0";
    let guard = c.mod_revision(b"/privlink-e2e/commit").expect("commit");
    let t = c
        .txn_if_unmodified(
            b"/privlink-e2e/commit",
            guard,
            &[
                Op::Put(
                    format!("/privlink-e2e/security-groups/{smuggled_id}").into_bytes(),
                    smuggled.into_bytes(),
                ),
                Op::Put(key.as_bytes().to_vec(), b"not an object".to_vec()),
            ],
        )
        .expect("txn");
    assert!(t.succeeded);
    // The node refuses changes (it cannot tell what the fleet's state is) and says why;
    // it keeps forwarding with what it has.
    // (A change may still get in before the node sees the key: each try has its own name.)
    let end = Instant::now() + Duration::from_secs(10);
    let mut attempt = 0;
    let (refused, err) = loop {
        attempt += 1;
        let name = format!("while-broken-{attempt}");
        let (done, _, err) = create_group(&p, Node::A, &name);
        if !done {
            break (name, err);
        }
        assert!(
            Instant::now() < end,
            "changes still accepted with a bad key\n{}",
            p.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        err.contains("ServiceUnavailable") && err.contains(key),
        "the refusal names the key: {err}"
    );
    let v = wait_stale(&p, Node::A, true);
    assert!(v["StaleReason"].to_string().contains(key), "{v}");
    assert_eq!(http_ok(&p, ENDPOINT_IP, 2), 2, "{}", p.logs());
    // (A change may have got in before the node saw the key: the guard as it is now.)
    let guard = c.mod_revision(b"/privlink-e2e/commit").expect("commit");
    let t = c
        .txn_if_unmodified(
            b"/privlink-e2e/commit",
            guard,
            &[Op::Delete(key.as_bytes().to_vec())],
        )
        .expect("txn");
    assert!(t.succeeded, "{t:?}");
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        let (done, _, err) = create_group(&p, Node::A, "fixed");
        if done {
            break;
        }
        assert!(
            Instant::now() < end,
            "changes refused after the key went: {err}\n{}",
            p.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_stale(&p, Node::B, false);
    let groups = ok(&p, Node::B, UID_CONSUMER, &["describe-security-groups"]);
    assert!(
        !groups.to_string().contains(&format!("\"{refused}\"")),
        "{groups}"
    );
    assert!(groups.to_string().contains("fixed"), "{groups}");
    assert!(
        groups.to_string().contains(smuggled_id),
        "the good object of the bad transaction is there too: {groups}"
    );
}
