use std::sync::atomic::AtomicUsize;
use std::sync::Barrier;

use proptest::prelude::*;

use super::*;

const MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
#[allow(clippy::cast_possible_truncation)]
const WAYS32: u32 = WAYS as u32;

#[test]
fn resolve_request_pending_then_known() {
    let mut n = Neighbours::new(16, NeighbourTimers::default());
    assert_eq!(n.resolve(0, 7, 0), Resolution::Request);
    assert_eq!(n.resolve(0, 7, 10), Resolution::Pending);
    assert_eq!(n.learn(0, 7, MAC, 20), Learned::New);
    assert_eq!(n.resolve(0, 7, 30), Resolution::Known(MAC));
    assert_eq!(n.learn(0, 7, MAC, 40), Learned::Confirmed);
    // Another attachment is another neighbour.
    assert_eq!(n.resolve(1, 7, 30), Resolution::Request);
}

#[test]
fn retries_are_bounded_then_failed_then_retried_later() {
    let t = NeighbourTimers {
        retry_ms: 100,
        tries: 3,
        ttl_ms: 1000,
        failed_hold_ms: 500,
    };
    let mut n = Neighbours::new(16, t);
    assert_eq!(n.resolve(0, 9, 0), Resolution::Request);
    let (mut sent, mut failed_at) = (0, None);
    for now in (0..=750).step_by(50) {
        match n.resolve(0, 9, now) {
            Resolution::Request => sent += 1,
            Resolution::Failed => {
                failed_at.get_or_insert(now);
            }
            Resolution::Pending => {}
            other => panic!("{other:?} at {now}"),
        }
    }
    assert_eq!(sent, 2, "three tries in all: the first plus two retries");
    assert_eq!(failed_at, Some(300), "the third try went unanswered");
    assert_eq!(n.resolve(0, 9, 700), Resolution::Failed);
    assert_eq!(n.resolve(0, 9, 2000), Resolution::Request);
}

#[test]
fn stale_entries_keep_working_while_refreshed_once() {
    let t = NeighbourTimers {
        ttl_ms: 100,
        retry_ms: 20,
        ..NeighbourTimers::default()
    };
    let table = Arc::new(NeighbourTable::new(16, t));
    let mut a = Neighbours::shared(Arc::clone(&table));
    let mut b = Neighbours::shared(Arc::clone(&table));
    a.learn(0, 1, MAC, 0);
    assert_eq!(a.resolve(0, 1, 150), Resolution::Refresh(MAC));
    assert_eq!(
        b.resolve(0, 1, 151),
        Resolution::Known(MAC),
        "the other worker keeps the MAC and does not ask again"
    );
    assert_eq!(a.get(0, 1), Some(MAC));
    assert_eq!(a.resolve(0, 1, 160), Resolution::Known(MAC));
    // Unanswered for one retry interval: asked again, once.
    assert_eq!(b.resolve(0, 1, 175), Resolution::Refresh(MAC));
    assert_eq!(a.resolve(0, 1, 176), Resolution::Known(MAC));
}

#[test]
fn confirm_does_not_create_and_static_is_permanent() {
    let mut n = Neighbours::new(16, NeighbourTimers::default());
    assert_eq!(n.confirm(0, 3, MAC, 0), Learned::Untracked);
    assert_eq!(n.get(0, 3), None);
    n.add_static(0, 4, MAC);
    assert_eq!(n.learn(0, 4, [9; 6], 0), Learned::Static);
    assert_eq!(n.resolve(0, 4, u64::MAX / 2), Resolution::Known(MAC));
}

#[test]
fn full_set_evicts_the_least_recently_used_never_static() {
    let t = NeighbourTimers::default();
    let table = NeighbourTable::new(WAYS, t);
    assert_eq!(table.capacity(), WAYS, "one set");
    table.add_static(0, 100, MAC);
    for ip in 1..WAYS32 {
        assert_eq!(table.learn(0, ip, MAC, u64::from(ip)), Learned::New);
    }
    // Use all but neighbour 3 recently.
    for ip in 1..WAYS32 {
        if ip != 3 {
            assert!(table.known(0, ip, 1000).is_some());
        }
    }
    let v = table.version();
    assert_eq!(table.learn(0, 50, MAC, 1001), Learned::New);
    assert_eq!(table.get(0, 3), None, "the least recently used went");
    assert!(table.version() > v, "workers drop their cached copy of it");
    assert_eq!(table.get(0, 100), Some(MAC), "static entries stay");
    for ip in (1..WAYS32).filter(|&ip| ip != 3) {
        assert_eq!(table.get(0, ip), Some(MAC));
    }
    assert_eq!(table.len(), WAYS);
    // A set of nothing but static entries refuses new neighbours.
    let full = NeighbourTable::new(WAYS, t);
    for ip in 0..WAYS32 {
        assert!(full.add_static(0, ip, MAC));
    }
    assert_eq!(full.learn(0, 99, MAC, 0), Learned::NoRoom);
    assert_eq!(full.resolve(0, 99, 0), Resolution::Failed);
}

#[test]
fn cache_never_hides_a_changed_mac() {
    let table = Arc::new(NeighbourTable::new(16, NeighbourTimers::default()));
    let mut a = Neighbours::shared(Arc::clone(&table));
    let mut b = Neighbours::shared(Arc::clone(&table));
    a.learn(0, 5, MAC, 0);
    assert_eq!(b.resolve(0, 5, 1), Resolution::Known(MAC));
    assert_eq!(b.resolve(0, 5, 2), Resolution::Known(MAC), "from the cache");
    // Another worker learns a new MAC: b sees it after its next sync (once per poll).
    assert_eq!(a.learn(0, 5, [7; 6], 3), Learned::Changed);
    b.sync();
    assert_eq!(b.resolve(0, 5, 4), Resolution::Known([7; 6]));
    // Another attachment with the same IP is another neighbour, cached or not.
    assert_eq!(b.resolve(1, 5, 5), Resolution::Request);
}

#[test]
fn a_busy_set_defers_the_learned_mac_instead_of_losing_it() {
    let table = Arc::new(NeighbourTable::new(16, NeighbourTimers::default()));
    let mut n = Neighbours::shared(Arc::clone(&table));
    assert_eq!(n.resolve(0, 8, 0), Resolution::Request);
    let set = table.set_of(key_of(0, 8u32));
    let guard = set.lock().expect("free set");
    assert_eq!(n.learn(0, 8, MAC, 1), Learned::Busy);
    let mut released = Vec::new();
    n.retry_deferred(2, |a, ip, m| released.push((a, ip, m)));
    assert!(released.is_empty(), "still busy: kept");
    drop(guard);
    n.retry_deferred(3, |a, ip, m| released.push((a, ip, m)));
    assert_eq!(released, vec![(0, 8, MAC)]);
    assert_eq!(n.resolve(0, 8, 4), Resolution::Known(MAC));
    released.clear();
    n.retry_deferred(5, |a, ip, m| released.push((a, ip, m)));
    assert!(released.is_empty(), "written once");
}

/// A MAC that names its neighbour and a version: a torn read would mix two.
fn mac_of(ip: u32, version: u8) -> [u8; 6] {
    let b = ip.to_le_bytes();
    let check = b[0] ^ b[1] ^ b[2] ^ b[3] ^ version ^ 0x5a;
    [2, b[0], b[1], version, check, b[2]]
}

fn mac_matches(ip: u32, mac: [u8; 6]) -> bool {
    let b = ip.to_le_bytes();
    mac[0] == 2
        && mac[1] == b[0]
        && mac[5] == b[2]
        && mac[4] == b[0] ^ b[1] ^ b[2] ^ b[3] ^ mac[3] ^ 0x5a
}

/// Threads learning, resolving, confirming and evicting on one small table at once: no
/// reader ever sees a MAC that was not written for the neighbour it asked about, and after
/// the writers stop, every neighbour's last learned MAC is the one in the table. (With the
/// sequence check of `Set::read` removed, it failed 7 runs in 9 on a 2-CPU machine.)
#[test]
fn concurrent_workers_never_see_torn_or_foreign_entries() {
    const THREADS: u32 = 3;
    const FOR: std::time::Duration = std::time::Duration::from_millis(400);
    let t = NeighbourTimers {
        retry_ms: 5,
        tries: 3,
        ttl_ms: 50,
        failed_hold_ms: 10,
    };
    // Two sets of 8 ways for 64 neighbours: nearly every write evicts someone.
    let table = Arc::new(NeighbourTable::new(16, t));
    let start = Arc::new(Barrier::new(THREADS as usize));
    let handles: Vec<_> = (0..THREADS)
        .map(|id| {
            let (table, start) = (Arc::clone(&table), Arc::clone(&start));
            std::thread::spawn(move || {
                let mut n = Neighbours::shared(table);
                let mut rng = 0x1234_5678u32 ^ id.wrapping_mul(0x9E37_79B9);
                let (mut bad, mut rounds) = (0u64, 0u64);
                start.wait();
                let begin = std::time::Instant::now();
                while begin.elapsed() < FOR {
                    for _ in 0..256 {
                        rng ^= rng << 13;
                        rng ^= rng >> 17;
                        rng ^= rng << 5;
                        let ip = rng % 64;
                        let now = rounds / 8;
                        let version = u8::try_from(rounds % 251).unwrap_or(0);
                        rounds += 1;
                        match rng >> 29 {
                            0..=2 => {
                                n.learn(0, ip, mac_of(ip, version), now);
                            }
                            3 => {
                                n.confirm(0, ip, mac_of(ip, version), now);
                            }
                            _ => {}
                        }
                        n.sync();
                        match n.resolve(0, ip, now) {
                            Resolution::Known(m) | Resolution::Refresh(m)
                                if !mac_matches(ip, m) =>
                            {
                                bad += 1;
                            }
                            _ => {}
                        }
                        if n.get(0, ip).is_some_and(|m| !mac_matches(ip, m)) {
                            bad += 1;
                        }
                    }
                }
                n.retry_deferred(rounds, |_, _, _| {});
                (bad, rounds)
            })
        })
        .collect();
    for h in handles {
        let (bad, rounds) = h.join().expect("thread");
        assert_eq!(bad, 0, "torn or foreign MACs seen in {rounds} rounds");
        assert!(rounds > 10_000);
    }
    assert!(table.len() <= table.capacity());
    // Each neighbour is in at most one way.
    for set in table.sets.iter() {
        let keys: Vec<u64> = set
            .keys
            .iter()
            .map(|k| k.load(Ordering::Relaxed))
            .filter(|&k| k != 0)
            .collect();
        let mut dedup = keys.clone();
        dedup.sort_unstable();
        dedup.dedup();
        assert_eq!(keys.len(), dedup.len(), "a neighbour stored twice");
    }
    // Quiescent: the last word written is what everyone reads.
    let mut n = Neighbours::shared(Arc::clone(&table));
    for ip in 0..64 {
        n.learn(0, ip, mac_of(ip, 7), 1 << 40);
        assert_eq!(n.get(0, ip), Some(mac_of(ip, 7)));
    }
}

/// Workers racing to resolve the same unknown next hop: exactly one sends the request;
/// racing on the same stale one: exactly one sends the refresh.
#[test]
fn one_request_and_one_refresh_per_next_hop_whatever_the_race() {
    const THREADS: usize = 4;
    const HOPS: u32 = 300;
    let t = NeighbourTimers {
        retry_ms: 1000,
        tries: 3,
        ttl_ms: 100,
        failed_hold_ms: 3000,
    };
    let table = Arc::new(NeighbourTable::new(4096, t));
    let barrier = Arc::new(Barrier::new(THREADS));
    let requests = Arc::new(AtomicUsize::new(0));
    let refreshes = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..THREADS)
        .map(|id| {
            let (table, barrier) = (Arc::clone(&table), Arc::clone(&barrier));
            let (requests, refreshes) = (Arc::clone(&requests), Arc::clone(&refreshes));
            std::thread::spawn(move || {
                let mut n = Neighbours::shared(table);
                for ip in 0..HOPS {
                    barrier.wait();
                    if n.resolve(0, ip, 0) == Resolution::Request {
                        requests.fetch_add(1, Ordering::Relaxed);
                    }
                    barrier.wait();
                    // Thread 0 plays the ARP reply; then all race past the TTL.
                    if id == 0 {
                        n.learn(0, ip, MAC, 1);
                    }
                    barrier.wait();
                    n.sync();
                    if let Resolution::Refresh(_) = n.resolve(0, ip, 500) {
                        refreshes.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("thread");
    }
    assert_eq!(requests.load(Ordering::Relaxed), HOPS as usize);
    assert_eq!(refreshes.load(Ordering::Relaxed), HOPS as usize);
}

#[derive(Debug, Clone)]
enum Op {
    Learn(u32, u8),
    Confirm(u32, u8),
    Resolve(u32),
    Static(u32),
    Tick(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u32..40, any::<u8>()).prop_map(|(ip, v)| Op::Learn(ip, v)),
        (0u32..40, any::<u8>()).prop_map(|(ip, v)| Op::Confirm(ip, v)),
        (0u32..40).prop_map(Op::Resolve),
        (0u32..40).prop_map(Op::Static),
        any::<u16>().prop_map(Op::Tick),
    ]
}

proptest! {
    /// Any sequence of operations on a small table (16 ways for 40 neighbours): a MAC
    /// just learned is the one resolved, static entries never leave or change, no
    /// neighbour is stored twice, the table never grows past its capacity.
    #[test]
    fn table_invariants_hold_for_any_sequence(ops in proptest::collection::vec(op(), 1..200)) {
        let t = NeighbourTimers { retry_ms: 10, tries: 2, ttl_ms: 500, failed_hold_ms: 30 };
        let table = Arc::new(NeighbourTable::new(16, t));
        let mut n = Neighbours::shared(Arc::clone(&table));
        let mut statics: std::collections::HashMap<u32, [u8; 6]> = Default::default();
        let mut now = 0u64;
        for op in ops {
            match op {
                Op::Learn(ip, v) => {
                    let mac = mac_of(ip, v);
                    let l = n.learn(0, ip, mac, now);
                    n.sync();
                    match statics.get(&ip) {
                        Some(&s) => {
                            prop_assert_eq!(l, Learned::Static);
                            prop_assert_eq!(n.resolve(0, ip, now), Resolution::Known(s));
                        }
                        None if l == Learned::NoRoom => {}
                        None => prop_assert_eq!(n.resolve(0, ip, now), Resolution::Known(mac)),
                    }
                }
                Op::Confirm(ip, v) => {
                    n.confirm(0, ip, mac_of(ip, v), now);
                }
                Op::Resolve(ip) => {
                    n.sync();
                    let r = n.resolve(0, ip, now);
                    if let Some(&s) = statics.get(&ip) {
                        prop_assert_eq!(r, Resolution::Known(s));
                    }
                    if let Resolution::Known(m) | Resolution::Refresh(m) = r {
                        prop_assert!(statics.get(&ip) == Some(&m) || mac_matches(ip, m));
                    }
                }
                Op::Static(ip) => {
                    let mac = [4, 0, 0, 0, 0, u8::try_from(ip).unwrap_or(0)];
                    if n.table().add_static(0, ip, mac) {
                        statics.insert(ip, mac);
                    }
                    n.sync();
                }
                Op::Tick(ms) => now += u64::from(ms % 200),
            }
            for (&ip, &mac) in &statics {
                prop_assert_eq!(table.get(0, ip), Some(mac));
            }
            prop_assert!(table.len() <= table.capacity());
            for set in table.sets.iter() {
                let mut keys: Vec<u64> = set.keys.iter().map(|k| k.load(Ordering::Relaxed)).filter(|&k| k != 0).collect();
                let all = keys.len();
                keys.sort_unstable();
                keys.dedup();
                prop_assert_eq!(all, keys.len());
            }
        }
    }
}

#[test]
fn ipv6_neighbours_are_keyed_by_the_whole_address_and_attachment() {
    let mut n = Neighbours6::new(16, NeighbourTimers::default());
    let host: u128 = 0xfd00_00c1_0000_0000_0000_0000_0000_0010;
    // Addresses that agree in either half, or the same address on another attachment,
    // are other neighbours: nothing is compared by a hash.
    let same_low = host ^ (1 << 100);
    let same_high = host ^ 1;
    assert_eq!(n.resolve(0, host, 0), Resolution::Request);
    assert_eq!(n.learn(0, host, MAC, 1), Learned::New);
    assert_eq!(n.resolve(0, host, 2), Resolution::Known(MAC));
    for (att, ip) in [(0, same_low), (0, same_high), (1, host)] {
        assert_eq!(n.get(att, ip), None, "{att} {ip:x}");
        assert_eq!(n.resolve(att, ip, 3), Resolution::Request, "{att} {ip:x}");
    }
    let other = [2, 0, 0, 0, 0, 2];
    assert_eq!(n.learn(0, same_low, other, 4), Learned::New);
    assert_eq!(n.get(0, host), Some(MAC));
    assert_eq!(n.get(0, same_low), Some(other));
    // An unsolicited confirmation creates nothing.
    assert_eq!(n.confirm(0, 0xfd00 << 112, MAC, 5), Learned::Untracked);
    assert_eq!(n.len(), 4, "three asked for, one learned besides");
}

proptest! {
    /// The IPv6 table answers like a map of (attachment, address) to the last MAC
    /// learned, for any addresses (collisions of the set choice included).
    #[test]
    fn ipv6_table_is_a_map(ops in proptest::collection::vec((0u16..3, any::<u128>(), any::<u8>()), 1..100)) {
        let t = NeighbourTable6::new(4096, NeighbourTimers::default());
        let mut model = std::collections::HashMap::new();
        for (att, ip, m) in ops {
            let mac = [2, 0, 0, 0, 0, m];
            prop_assert!(t.learn(att, ip, mac, 0).is_usable());
            model.insert((att, ip), mac);
        }
        for ((att, ip), mac) in model {
            prop_assert_eq!(t.get(att, ip), Some(mac));
        }
    }
}

#[test]
fn what_nobody_asked_takes_only_free_or_failed_ways() {
    // Eight ways: one set.
    let t = NeighbourTable6::new(WAYS, NeighbourTimers::default());
    let ip = |i: u128| (0xfd00 << 112) | i;
    for i in 0..WAYS as u128 {
        assert_eq!(t.learn(0, ip(i), MAC, 0), Learned::New);
    }
    // A solicitation's made-up source evicts nobody...
    assert_eq!(t.learn_unasked(0, ip(100), MAC, 1), Learned::NoRoom);
    assert!((0..WAYS as u128).all(|i| t.get(0, ip(i)) == Some(MAC)));
    // ...but updates one already there.
    assert_eq!(
        t.learn_unasked(0, ip(3), [2, 0, 0, 0, 0, 9], 2),
        Learned::Changed
    );
    // A failed neighbour's way is free to take.
    let t = NeighbourTable6::new(WAYS, NeighbourTimers::default());
    for i in 0..WAYS as u128 - 1 {
        t.learn(0, ip(i), MAC, 0);
    }
    let timers = t.timers();
    let mut now = 0;
    assert_eq!(t.resolve(0, ip(50), now), Resolution::Request);
    while t.resolve(0, ip(50), now) != Resolution::Failed {
        now += timers.retry_ms;
    }
    assert_eq!(t.learn_unasked(0, ip(101), MAC, now), Learned::New);
    // What we asked for may evict the least recently used.
    assert_eq!(t.learn(0, ip(102), MAC, now), Learned::New);
}

#[test]
fn ipv6_keys_are_the_same_exactly_when_equal() {
    let keys = [
        <u128 as NeighbourAddr>::key(1, 0xfd00_0000_0000_0000_0000_0000_0000_0001),
        <u128 as NeighbourAddr>::key(2, 0xfd00_0000_0000_0000_0000_0000_0000_0001),
        <u128 as NeighbourAddr>::key(1, 0xfd00_0000_0000_0000_0000_0000_0000_0002),
        <u128 as NeighbourAddr>::key(1, 0xfe80_0000_0000_0000_0000_0000_0000_0001),
        [0; 3],
    ];
    for a in keys {
        for b in keys {
            assert_eq!(<u128 as NeighbourAddr>::same(a, b), a == b, "{a:?} {b:?}");
        }
    }
}
