//! Counts over a state's endpoints, kept from version to version.
//!
//! What a change among up to a million endpoints asks of all of them: is this id taken,
//! does another endpoint hold this address, how many live endpoints has this VPC, where
//! is endpoint X, which endpoints are being deleted, which is the lowest free address.
//! [`EndpointIndex`] answers for the endpoint list it last indexed, and for any other
//! list from what the two do not share ([`Chunked::unshared`]), so that a change that
//! wrote one chunk reads one chunk, not the list.

use std::collections::BTreeMap;
use std::hash::Hash;
use std::net::Ipv4Addr;

use super::chunked::{Chunked, Place};
use super::objects::{Endpoint, EndpointState};
use crate::fasthash::FastMap;
use crate::ids::{EndpointId, VpcId};

/// What an [`EndpointIndex`] counts endpoints by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointKey {
    /// Endpoints of this id (one in a valid state).
    Id(EndpointId),
    /// Endpoints holding this IPv4 address in this VPC (one in a valid state).
    Address(VpcId, Ipv4Addr),
    /// Live (not `deleted`) endpoints in this VPC: what the endpoints-per-VPC quota counts.
    Live(VpcId),
}

impl EndpointKey {
    fn matches(self, e: &Endpoint) -> bool {
        match self {
            Self::Id(id) => e.id == id,
            Self::Address(vpc, ip) => address(e) == Some((vpc, ip)),
            Self::Live(vpc) => e.vpc_id == vpc && live(e),
        }
    }
}

fn live(e: &Endpoint) -> bool {
    e.state != EndpointState::Deleted
}

fn ending(e: &Endpoint) -> bool {
    matches!(e.state, EndpointState::Deleting | EndpointState::Deleted)
}

fn address(e: &Endpoint) -> Option<(VpcId, Ipv4Addr)> {
    e.ip.filter(|_| e.state.holds_address())
        .map(|ip| (e.vpc_id, ip))
}

/// Endpoint counts by id, held address and VPC of the list indexed last, kept with that
/// list (a copy that shares its chunks).
#[derive(Debug, Default, Clone)]
pub struct EndpointIndex {
    of: Chunked<Endpoint>,
    ids: FastMap<EndpointId, u32>,
    addresses: FastMap<(VpcId, Ipv4Addr), u32>,
    live: FastMap<VpcId, u32>,
    /// The `deleting` and `deleted` endpoints (what the store's tick looks at).
    ending: FastMap<EndpointId, u32>,
    /// Where each endpoint lies in the chunks of `of` (absent for an id that `of` holds
    /// twice, which no valid state does, once one of the two went).
    places: FastMap<EndpointId, Place>,
    /// The held IPv4 addresses of each VPC as maximal runs, first → last: the lowest free
    /// address is found by jumping over runs, not by asking of every address (endpoints
    /// created without one fill a VPC from its bottom up).
    runs: BTreeMap<(VpcId, u32), u32>,
}

/// Adds `by` to `k`'s count, dropping counts that reach zero.
fn tally<K: Hash + Eq>(map: &mut FastMap<K, u32>, k: K, by: i64) {
    // The counts are of real lists: taking out what was put in never goes below zero.
    let was = map.get(&k).copied().unwrap_or(0);
    match u32::try_from(i64::from(was) + by) {
        Ok(n) if n > 0 => {
            map.insert(k, n);
        }
        _ => {
            map.remove(&k);
        }
    }
}

impl EndpointIndex {
    /// Brings the index to `list`, reading only what `list` does not share with the list
    /// indexed last.
    pub fn update(&mut self, list: &Chunked<Endpoint>) {
        let (was, is) = self.of.unshared(list);
        let old = std::mem::take(&mut self.of);
        for e in old.iter_range(was) {
            self.count(e, -1);
            self.places.remove(&e.id);
        }
        for (place, e) in list.iter_placed(is) {
            self.count(e, 1);
            self.places.insert(e.id, place);
        }
        self.of = list.clone();
    }

    fn count(&mut self, e: &Endpoint, by: i64) {
        tally(&mut self.ids, e.id, by);
        if let Some(a) = address(e) {
            let was = self.addresses.contains_key(&a);
            tally(&mut self.addresses, a, by);
            match (was, self.addresses.contains_key(&a)) {
                (false, true) => self.hold(a.0, u32::from(a.1)),
                (true, false) => self.release(a.0, u32::from(a.1)),
                _ => {}
            }
        }
        if live(e) {
            tally(&mut self.live, e.vpc_id, by);
        }
        if ending(e) {
            tally(&mut self.ending, e.id, by);
        }
    }

    /// `ip` of `vpc` is now held: it joins the runs either side of it.
    fn hold(&mut self, vpc: VpcId, ip: u32) {
        let (mut first, mut last) = (ip, ip);
        if let Some((&(v, s), &e)) = self.runs.range(..=(vpc, ip)).next_back() {
            if v == vpc && u64::from(e) + 1 >= u64::from(ip) {
                if e >= ip {
                    return;
                }
                first = s;
                self.runs.remove(&(v, s));
            }
        }
        if let Some(after) = ip.checked_add(1) {
            if let Some(e) = self.runs.remove(&(vpc, after)) {
                last = e;
            }
        }
        self.runs.insert((vpc, first), last);
    }

    /// `ip` of `vpc` is no longer held: its run splits around it.
    fn release(&mut self, vpc: VpcId, ip: u32) {
        let Some((&(v, s), &e)) = self.runs.range(..=(vpc, ip)).next_back() else {
            return;
        };
        if v != vpc || e < ip {
            return;
        }
        self.runs.remove(&(v, s));
        if s < ip {
            self.runs.insert((v, s), ip - 1);
        }
        if ip < e {
            self.runs.insert((v, ip + 1), e);
        }
    }

    /// The last address of the run of held addresses (in the indexed list) that holds
    /// `ip`, if one does.
    fn run_end(&self, vpc: VpcId, ip: u32) -> Option<u32> {
        let (&(v, _), &e) = self.runs.range(..=(vpc, ip)).next_back()?;
        (v == vpc && e >= ip).then_some(e)
    }

    /// The positions in `list` of its `deleting` and `deleted` endpoints, in order: those
    /// the index has, found again, and those where `list` differs from the indexed list.
    pub fn ending_in(&self, list: &Chunked<Endpoint>) -> Vec<usize> {
        let (_, is) = self.of.unshared(list);
        // Outside `is`, `list` holds what the index does at the places it has (every
        // endpoint has one in a list without twice the same id).
        let at = list.locator();
        let mut out: Vec<usize> = (self.ending.keys())
            .filter_map(|id| {
                let i = at(*self.places.get(id)?)?;
                let here = list.get(i).is_some_and(|e| e.id == *id && ending(e));
                (here && !is.contains(&i)).then_some(i)
            })
            .collect();
        let start = is.start;
        out.extend(
            (list.iter_range(is).enumerate())
                .filter(|(_, e)| ending(e))
                .map(|(j, _)| start + j),
        );
        out.sort_unstable();
        out
    }

    /// The endpoints of `key` in the list indexed last.
    pub fn indexed(&self, key: EndpointKey) -> usize {
        let n = match key {
            EndpointKey::Id(id) => self.ids.get(&id),
            EndpointKey::Address(vpc, ip) => self.addresses.get(&(vpc, ip)),
            EndpointKey::Live(vpc) => self.live.get(&vpc),
        };
        n.map_or(0, |&n| n as usize)
    }

    /// The endpoints of `key` in `list`: those of the list indexed last, corrected by what
    /// the two do not share. Exact for any list; cheap for one that shares most chunks.
    pub fn count_in(&self, list: &Chunked<Endpoint>, key: EndpointKey) -> usize {
        self.view(list).count(key)
    }

    /// [`count_in`](Self::count_in) `list` for many keys: what `list` does not share with
    /// the indexed list is found once.
    pub fn view<'a>(&'a self, list: &'a Chunked<Endpoint>) -> IndexView<'a> {
        let (was, is) = self.of.unshared(list);
        IndexView {
            index: self,
            gone: self.of.iter_range(was).collect(),
            new: list.iter_range(is).collect(),
        }
    }

    /// The position of endpoint `id` in `list` (of one of them, in a list that has it twice):
    /// a look where `list` differs from the list indexed last, then at the place the
    /// index has for it; a walk of the list only when the index holds the id twice.
    pub fn position(&self, list: &Chunked<Endpoint>, id: EndpointId) -> Option<usize> {
        let (_, is) = self.of.unshared(list);
        let start = is.start;
        if let Some(i) = list.iter_range(is).position(|e| e.id == id) {
            return Some(start + i);
        }
        // Elsewhere `list` holds what the index does, at the same places.
        self.ids.get(&id)?;
        let at = (self.places.get(&id).and_then(|&p| list.position_of(p)))
            .filter(|&i| list.get(i).is_some_and(|e| e.id == id));
        at.or_else(|| list.iter().position(|e| e.id == id))
    }

    /// The positions in `list` where it may differ from the list indexed last: every
    /// endpoint that is not the same at the same place in both lies there.
    pub fn differing(&self, list: &Chunked<Endpoint>) -> std::ops::Range<usize> {
        self.of.unshared(list).1
    }
}

/// An [`EndpointIndex`] corrected to another list ([`EndpointIndex::view`]).
#[derive(Debug)]
pub struct IndexView<'a> {
    index: &'a EndpointIndex,
    gone: Vec<&'a Endpoint>,
    new: Vec<&'a Endpoint>,
}

impl IndexView<'_> {
    /// The endpoints of `key` in the list of the view.
    pub fn count(&self, key: EndpointKey) -> usize {
        let matching = |list: &[&Endpoint]| list.iter().filter(|e| key.matches(e)).count();
        (self.index.indexed(key) + matching(&self.new)).saturating_sub(matching(&self.gone))
    }

    /// The lowest IPv4 address of `vpc` in `from..=to` that no endpoint of the view's list
    /// holds and `used` does not name: runs of addresses the indexed list holds are jumped
    /// over (but for those the view's list freed), so a VPC filled from its bottom costs a
    /// look or two, not one per held address.
    pub fn lowest_free(
        &self,
        vpc: VpcId,
        (from, to): (Ipv4Addr, Ipv4Addr),
        used: impl Fn(Ipv4Addr) -> bool,
    ) -> Option<Ipv4Addr> {
        let mut freed: Vec<u32> = (self.gone.iter())
            .filter_map(|e| address(e))
            .filter(|&(v, ip)| v == vpc && self.count(EndpointKey::Address(v, ip)) == 0)
            .map(|(_, ip)| u32::from(ip))
            .collect();
        freed.sort_unstable();
        let free = |a: u32| {
            let ip = Ipv4Addr::from(a);
            self.count(EndpointKey::Address(vpc, ip)) == 0 && !used(ip)
        };
        let (mut a, to) = (u32::from(from), u32::from(to));
        while a <= to {
            match self.index.run_end(vpc, a) {
                Some(end) => {
                    // Held in the indexed list up to `end`: only an address the view's
                    // list freed there can be free.
                    let start = freed.partition_point(|&f| f < a);
                    let mut within = freed[start..].iter().take_while(|&&f| f <= end);
                    if let Some(&f) = within.find(|&&f| free(f)) {
                        return (f <= to).then(|| Ipv4Addr::from(f));
                    }
                    a = end.checked_add(1)?;
                }
                None if free(a) => return Some(Ipv4Addr::from(a)),
                None => a = a.checked_add(1)?,
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::p;

    fn endpoint(n: u32) -> Endpoint {
        crate::testing::endpoint(
            &format!("vpce-0{n:016x}"),
            &format!("vpc-0{:016x}", n % 5),
            "vpce-svc-0d0000000000000d1",
            Some(Ipv4Addr::from(0x0a00_0000 + n % 2900)),
        )
    }

    /// Every key the list has, and some it has not.
    fn keys(list: &Chunked<Endpoint>) -> Vec<EndpointKey> {
        let mut out = vec![
            EndpointKey::Id(p("vpce-0ffffffffffffffff")),
            EndpointKey::Live(p("vpc-0000000000000000a")),
        ];
        for e in list.iter() {
            out.push(EndpointKey::Id(e.id));
            out.push(EndpointKey::Live(e.vpc_id));
            out.extend(e.ip.map(|ip| EndpointKey::Address(e.vpc_id, ip)));
        }
        out
    }

    fn fresh(list: &Chunked<Endpoint>, key: EndpointKey) -> usize {
        list.iter().filter(|e| key.matches(e)).count()
    }

    #[test]
    fn counts_kept_from_version_to_version_are_those_of_a_fresh_count() {
        let mut list: Chunked<Endpoint> = (0..3000).map(endpoint).collect();
        let mut index = EndpointIndex::default();
        index.update(&list);
        // Every kind of edit the store makes, each on a copy of the version indexed
        // last, across chunk boundaries; one version in seven not indexed, so that the
        // next is two changes away.
        for step in 0..40u32 {
            let mut next = list.clone();
            let at = (step as usize * 613) % next.len();
            match step % 7 {
                0 => next[at].state = EndpointState::Deleted,
                6 => next[at].state = EndpointState::Deleting,
                1 => {
                    next.remove(at);
                }
                2 => next.push(endpoint(10_000 + step)),
                3 => next[at].vpc_id = p("vpc-0000000000000000a"),
                4 => next[at].ip = Some(Ipv4Addr::new(192, 0, 2, 1)),
                _ => next.retain(|e| e.id != list[at].id && e.id != list[(at + 1) % 3000].id),
            }
            for key in keys(&next).into_iter().step_by(41) {
                assert_eq!(
                    index.count_in(&next, key),
                    fresh(&next, key),
                    "step {step}: {key:?}"
                );
                if let EndpointKey::Id(id) = key {
                    let at = next.iter().position(|e| e.id == id);
                    assert_eq!(index.position(&next, id), at, "step {step}: {id}");
                }
            }
            let want: Vec<usize> = (next.iter().enumerate())
                .filter(|(_, e)| ending(e))
                .map(|(i, _)| i)
                .collect();
            assert_eq!(index.ending_in(&next), want, "step {step}");
            // The endpoints of the chunks written to, and those after a removal.
            for i in [at.saturating_sub(1), at, at + 1, at + 600, next.len() - 1] {
                if let Some(e) = next.get(i) {
                    assert_eq!(index.position(&next, e.id), Some(i), "step {step}: {i}");
                }
            }
            if step % 7 != 6 {
                index.update(&next);
                for key in keys(&next).into_iter().step_by(43) {
                    assert_eq!(
                        index.indexed(key),
                        fresh(&next, key),
                        "step {step}: {key:?}"
                    );
                }
            }
            list = next;
        }
        // A list that shares nothing with the one indexed.
        let other: Chunked<Endpoint> = (0..700).map(endpoint).collect();
        for key in keys(&other).into_iter().step_by(13) {
            assert_eq!(index.count_in(&other, key), fresh(&other, key), "{key:?}");
        }
        index.update(&other);
        for key in keys(&other).into_iter().step_by(13) {
            assert_eq!(index.indexed(key), fresh(&other, key), "{key:?}");
        }
    }

    /// The lowest free address found by jumping over runs is the one a walk of every
    /// address finds, for the indexed list and for versions that freed, took and moved
    /// addresses since, with other users' addresses in the way.
    #[test]
    fn the_lowest_free_address_is_the_first_a_walk_finds() {
        let vpc: VpcId = p("vpc-00000000000000000");
        let at = |n: u32| Some(Ipv4Addr::from(0x0a00_0000 + n));
        // Addresses .2 to .1801 held but for a few holes, two VPCs mixed.
        let mut list: Chunked<Endpoint> = (0..1800u32)
            .filter(|n| !matches!(n, 300 | 301 | 1200))
            .map(|n| {
                let mut e = endpoint(n);
                (e.vpc_id, e.ip) = (vpc, at(n + 2));
                e
            })
            .chain((0..50).map(|n| endpoint(5000 + n)))
            .collect();
        let mut index = EndpointIndex::default();
        index.update(&list);
        let walk = |list: &Chunked<Endpoint>, from: u32, used: &dyn Fn(Ipv4Addr) -> bool| {
            let held: std::collections::HashSet<Ipv4Addr> = (list.iter())
                .filter_map(address)
                .filter(|a| a.0 == vpc)
                .map(|a| a.1)
                .collect();
            (from..=4000)
                .map(|n| Ipv4Addr::from(0x0a00_0000 + n))
                .find(|ip| !used(*ip) && !held.contains(ip))
        };
        let range = |from: u32| {
            (
                Ipv4Addr::from(0x0a00_0000 + from),
                Ipv4Addr::from(0x0a00_0000 + 4000),
            )
        };
        let others = |ip: Ipv4Addr| ip == Ipv4Addr::new(10, 0, 1, 46); // .302
        for step in 0..8u32 {
            let mut next = list.clone();
            match step % 4 {
                // Free one inside a run, take a hole, move one, delete one.
                0 => next[(step * 97) as usize % 1700].ip = None,
                1 => next.push({
                    let mut e = endpoint(9000 + step);
                    (e.vpc_id, e.ip) = (vpc, at(302 + step));
                    e
                }),
                2 => next[(step * 31) as usize % 1700].ip = at(3000 + step),
                _ => next[(step * 53) as usize % 1700].state = EndpointState::Deleted,
            }
            for from in [2, 302, 1199, 1900] {
                let view = index.view(&next);
                assert_eq!(
                    view.lowest_free(vpc, range(from), others),
                    walk(&next, from, &others),
                    "step {step}, from {from}"
                );
            }
            if step % 3 != 2 {
                index.update(&next);
                let view = index.view(&next);
                assert_eq!(
                    view.lowest_free(vpc, range(2), |_| false),
                    walk(&next, 2, &|_| false)
                );
            }
            list = next;
        }
        // None left in a range that is all held (no step touched .1000-.1100).
        let view = index.view(&list);
        let held = (
            Ipv4Addr::from(0x0a00_0000 + 1000),
            Ipv4Addr::from(0x0a00_0000 + 1100),
        );
        assert_eq!(view.lowest_free(vpc, held, |_| false), None);
    }
}
