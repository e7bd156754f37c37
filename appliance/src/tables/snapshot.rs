//! The immutable view of the object model that workers read: attachments, the endpoint
//! index ((VPC, IP, protocol, port) → endpoint, listener, service), local addresses, and
//! per-listener Maglev tables. Built by the management thread ([`build`]), published by
//! [`crate::tables::snapshot::cell`], never modified after.
//!
//! A change costs what it changes: a new version is made from the last one, sharing
//! with it every shard of the endpoint-sized maps ([`shards`]) and every service view a
//! change did not touch, so workers still see one whole version while the management
//! thread copies a few hundred entries instead of rebuilding 100k.
//!
//! Endpoints and services are found by their handles ([`Handles`]: stable, never
//! reused), never by a position that a deletion would shift. Attachment indices come
//! from the configuration order and never change while the daemon runs, so flows (which
//! record attachment indices and handles) survive every snapshot swap.

mod build;
pub mod cell;
pub mod shards;
#[cfg(test)]
mod tests;

pub use build::Change;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use mgmt::model::{AccountId, Chunked, EndpointId, Protocol, ServiceId};
use mgmt::policy::Policy;

use crate::health;
use crate::tables::fasthash::FastMap;
use crate::tables::maglev::{Maglev, MaglevError};
use crate::tables::snapshot::cell::Versioned;
use crate::tables::snapshot::shards::ShardedMap;

/// The MTU of a port whose MTU is not known: Ethernet's.
pub const DEFAULT_MTU: u16 = 1500;

/// IP protocol numbers the snapshot indexes.
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// One VPC attachment as the data plane needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct AttachmentView {
    pub vpc_id: String,
    /// Port index (order of `[[ports]]`).
    pub port: u16,
    pub vlan: Option<u16>,
    /// The port's MAC: the source of everything we send on this attachment.
    pub mac: [u8; 6],
    /// The appliance's own address here (host byte order).
    pub ip: u32,
    /// The appliance's own IPv6 address here, if the VPC has one.
    pub ip6: Option<u128>,
    pub mask: u32,
    /// The mask of `ip6`'s prefix (0 without one).
    pub mask6: u128,
    pub gateway: Option<u32>,
    /// The IPv6 next hop for addresses off `ip6`'s prefix.
    pub gateway6: Option<u128>,
    pub static_neighbours: Vec<(u32, [u8; 6])>,
    pub static_neighbours6: Vec<(u128, [u8; 6])>,
    /// The port's MTU: no IP packet larger than this leaves on the attachment.
    pub mtu: u16,
    /// What TCP SYNs crossing the attachment have their MSS option lowered to, if anything.
    pub mss_clamp: Option<u16>,
}

impl AttachmentView {
    /// The next hop towards `dst`: itself when on-link, else the gateway.
    #[inline]
    pub fn next_hop(&self, dst: u32) -> Option<u32> {
        if dst & self.mask == self.ip & self.mask {
            Some(dst)
        } else {
            self.gateway
        }
    }

    /// Whether the VPC has IPv4 here (an IPv6-only one has no address of ours, 0).
    #[inline]
    pub fn has_ipv4(&self) -> bool {
        self.ip != 0
    }

    #[inline]
    pub fn on_link(&self, ip: u32) -> bool {
        ip & self.mask == self.ip & self.mask
    }

    /// The next hop towards IPv6 `dst`: itself when inside the attachment's IPv6
    /// prefix, else the IPv6 gateway; none without an IPv6 address.
    #[inline]
    pub fn next_hop6(&self, dst: u128) -> Option<u128> {
        let own = self.ip6?;
        if dst & self.mask6 == own & self.mask6 {
            Some(dst)
        } else {
            self.gateway6
        }
    }
}

/// The first stand-in address of IPv6 endpoints: 240.0.0.0/4, reserved, never a
/// destination an IPv4 packet may have here.
pub const IPV6_ONLY_BASE: u32 = 0xF000_0000;

/// The stand-in IPv4 address of the IPv6 endpoint of handle `handle` (see
/// [`EndpointView::ip`]); none past 2^28 handles.
pub fn ipv6_only_stand_in(handle: u32) -> Option<u32> {
    (handle < 1 << 28).then_some(IPV6_ONLY_BASE | handle)
}

/// Target `ip` as flow keys and the Maglev table carry it: IPv4 as it is, IPv6 folded
/// ([`crate::graph::nat64::fold_target6`]).
pub fn target_ip_key(ip: std::net::IpAddr) -> u32 {
    match ip {
        std::net::IpAddr::V4(a) => u32::from(a),
        std::net::IpAddr::V6(a) => crate::graph::nat64::fold_target6(u128::from(a)),
    }
}

/// What a local address is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalKind {
    /// The appliance's own address on the attachment.
    Own,
    /// An endpoint's IP (the endpoint's handle).
    Endpoint(u32),
    /// A SNAT address of a service (the service's handle).
    Snat(u32),
}

/// Where a consumer's (VPC, IP, protocol, port) leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerRef {
    /// The endpoint's handle.
    pub endpoint: u32,
    /// The service's handle.
    pub service: u32,
    pub listener: u16,
}

#[derive(Debug, Clone)]
pub struct EndpointView {
    pub id: String,
    /// Stable across snapshots (see [`Handles`]); flows record it.
    pub handle: u32,
    pub owner: AccountId,
    pub attachment: u16,
    /// Its IPv4 address; for an IPv6 endpoint, a stand-in in 240.0.0.0/4 that only its
    /// flows' keys carry ([`ipv6_only_stand_in`]).
    pub ip: u32,
    /// A dual-stack or IPv6 endpoint's IPv6 address.
    pub ip6: Option<u128>,
    /// The service's handle.
    pub service: u32,
    /// Only `available` endpoints forward.
    pub forwards: bool,
    /// Ingress rules of the endpoint's security groups with IPv4 prefixes; `None` when
    /// it has no group (all traffic admitted).
    pub ingress: Option<Vec<IngressView>>,
    /// Those with IPv6 prefixes (for IPv6 consumers; looked at only when `ingress` is
    /// `Some`).
    pub ingress6: Vec<IngressView6>,
    /// The compiled endpoint policy; `None` = allow all.
    pub policy: Option<Policy>,
}

impl EndpointView {
    /// [`EndpointView::admits`] for a new flow from IPv6 source `src` (ICMPv6 is
    /// protocol 58): the groups' rules with IPv6 prefixes, and the policy's.
    #[inline]
    pub fn admits_ipv6(&self, src: u128, proto: u8, dst_port: u16) -> Result<(), Refusal> {
        if self.ingress.is_some()
            && !self
                .ingress6
                .iter()
                .any(|r| r.matches(src, proto, dst_port))
        {
            return Err(Refusal::SecurityGroup);
        }
        match &self.policy {
            Some(p) if !p.allows_ipv6(self.owner, src, proto, dst_port) => Err(Refusal::Policy),
            _ => Ok(()),
        }
    }
}

/// One compiled security-group ingress rule with an IPv6 prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngressView6 {
    /// IP protocol number (58 for `icmp`), or 0 for all protocols.
    pub proto: u8,
    pub from_port: u16,
    pub to_port: u16,
    pub net: u128,
    pub mask: u128,
}

impl IngressView6 {
    #[inline]
    fn matches(&self, src: u128, proto: u8, dst_port: u16) -> bool {
        src & self.mask == self.net
            && (self.proto == 0
                || (self.proto == proto
                    && (proto == 58 || (self.from_port..=self.to_port).contains(&dst_port))))
    }
}

/// One compiled security-group ingress rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngressView {
    /// IP protocol number, or 0 for all protocols.
    pub proto: u8,
    pub from_port: u16,
    pub to_port: u16,
    pub net: u32,
    pub mask: u32,
}

impl IngressView {
    #[inline]
    fn matches(&self, src: u32, proto: u8, dst_port: u16) -> bool {
        src & self.mask == self.net
            && (self.proto == 0
                || (self.proto == proto
                    && (proto == 1 || (self.from_port..=self.to_port).contains(&dst_port))))
    }
}

/// Why a new flow is refused by the endpoint's access rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    SecurityGroup,
    Policy,
}

impl EndpointView {
    /// Whether a new flow from `src` to `proto`/`dst_port` is admitted: some ingress rule
    /// of its security groups matches (stateful: replies never ask), and the endpoint
    /// policy allows the consumer account (an explicit deny wins).
    #[inline]
    pub fn admits(&self, src: u32, proto: u8, dst_port: u16) -> Result<(), Refusal> {
        if let Some(rules) = &self.ingress {
            if !rules.iter().any(|r| r.matches(src, proto, dst_port)) {
                return Err(Refusal::SecurityGroup);
            }
        }
        if let Some(p) = &self.policy {
            if !p.allows(self.owner, std::net::Ipv4Addr::from(src), proto, dst_port) {
                return Err(Refusal::Policy);
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
pub struct TargetView {
    /// Its IPv4 address; an IPv6 target's fold ([`crate::graph::nat64::fold_target6`]),
    /// which flow keys and the Maglev table carry.
    pub ip: u32,
    /// An IPv6 target's address.
    pub ip6: Option<u128>,
    pub port: u16,
    pub weight: u32,
    pub draining: bool,
    /// In the listener's Maglev table: it takes new flows (see [`crate::health::tier`]).
    pub routable: bool,
    /// Unhealthy, out of the table, and its listener ends such a target's flows.
    pub ended: bool,
}

impl TargetView {
    /// Its real address.
    pub fn addr(&self) -> std::net::IpAddr {
        match self.ip6 {
            Some(a) => std::net::Ipv6Addr::from(a).into(),
            None => std::net::Ipv4Addr::from(self.ip).into(),
        }
    }
}

#[derive(Debug)]
pub struct ListenerView {
    pub proto: u8,
    pub port: u16,
    pub targets: Vec<TargetView>,
    /// Its targets are IPv6 (a listener's are of one family): only IPv6 consumers reach
    /// them (NAT66).
    pub ipv6: bool,
    pub maglev: Maglev,
    /// The listener's idle timeout for its flows, seconds; 0 = the global one.
    pub idle_s: u16,
}

#[derive(Debug)]
pub struct ServiceView {
    pub id: String,
    /// The provider account (what events and metrics name).
    pub owner: mgmt::model::AccountId,
    /// Stable across snapshots (see [`Handles`]); flows record it.
    pub handle: u32,
    /// The provider VPC's attachment.
    pub attachment: u16,
    pub snat: Vec<u32>,
    /// Its IPv6 SNAT addresses: each one's fold ([`crate::graph::nat64::fold_snat6`]) and
    /// the address.
    pub snat6: Vec<(u32, u128)>,
    pub listeners: Vec<ListenerView>,
    /// Its targets and how the health checker treats each.
    pub checks: Vec<health::Spec>,
}

impl ServiceView {
    /// The address a flow key's provider-side address `ip` (a target's or a SNAT
    /// address's, IPv4 or an IPv6 one's fold) stands for.
    pub fn provider_address(&self, ip: u32) -> std::net::IpAddr {
        let target = self
            .listeners
            .iter()
            .flat_map(|l| l.targets.iter())
            .find(|t| t.ip == ip && t.ip6.is_some());
        if let Some(t) = target {
            return t.addr();
        }
        match self.snat6.iter().find(|(fold, _)| *fold == ip) {
            Some(&(_, a)) => std::net::Ipv6Addr::from(a).into(),
            None => std::net::Ipv4Addr::from(ip).into(),
        }
    }

    /// Whether the listener `proto`/`port` still has target `ip:port` (registered or
    /// draining) and does not end its flows for being unhealthy: a flow whose target is
    /// gone is ended.
    #[inline]
    pub fn has_target(&self, proto: u8, port: u16, ip: u32, target_port: u16) -> bool {
        self.listeners
            .iter()
            .filter(|l| l.proto == proto && l.port == port)
            .any(|l| {
                l.targets
                    .iter()
                    .any(|t| t.ip == ip && t.port == target_port && !t.ended)
            })
    }
}

/// The attachments of one port: untagged and by VLAN id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PortAttachments {
    pub untagged: Option<u16>,
    pub tagged: Vec<(u16, u16)>,
}

/// One whole version of what the data plane serves.
#[derive(Debug)]
pub struct Snapshot {
    pub generation: u64,
    pub attachments: Vec<AttachmentView>,
    pub ports: Vec<PortAttachments>,
    /// By handle.
    endpoints: ShardedMap<u32, Arc<EndpointView>>,
    /// In the state's order.
    services: Vec<Arc<ServiceView>>,
    /// Handle → index in `services`.
    service_by_handle: FastMap<u32, u32>,
    listeners: ShardedMap<(u16, u32, u8, u16), ListenerRef>,
    locals: ShardedMap<(u16, u32), LocalKind>,
    /// The IPv6 addresses the appliance answers neighbour discovery and echo for: its own
    /// on each attachment that has one, and dual-stack endpoints'.
    locals6: ShardedMap<(u16, u128), LocalKind>,
    /// Addresses of endpoints that still hold them but no longer answer (rejected,
    /// deleting, failed): the endpoint's handle. Only stray TCP segments of connections
    /// just ended get something back from them (a RST).
    closed: ShardedMap<(u16, u32), u32>,
    /// Local addresses to announce with a gratuitous ARP: all of them in a first
    /// snapshot, those new since the version it was made from otherwise (the management
    /// thread widens that with [`Snapshot::announce_beyond`]).
    pub announce: Vec<(u16, u32)>,
    /// IPv6 local addresses to announce with an unsolicited neighbour advertisement, as
    /// `announce`.
    pub announce6: Vec<(u16, u128)>,
    /// Every target of every listener and how the health checker treats it.
    pub health_checks: Vec<health::Spec>,
    /// The generation this one was made from ([`Snapshot::update`]); `None` when it was
    /// built whole.
    pub base: Option<u64>,
    /// The keys of `locals`, sorted; in chunks that the versions share (a change copies
    /// the chunk an address comes or goes in, not a list of a million).
    sorted_locals: Chunked<(u16, u32)>,
    /// The keys of `locals6`, sorted, as `sorted_locals`.
    sorted_locals6: Chunked<(u16, u128)>,
    /// The endpoint list of the state this was made from (sharing its chunks): the next
    /// version reads only the endpoints that differ from it.
    made_from: Chunked<mgmt::model::Endpoint>,
}

/// Stable small numbers for endpoints and services, kept by the management thread across
/// snapshots: a flow records them, so after any number of snapshot swaps it can still ask
/// "does my endpoint still exist and admit me?". Handles are never reused.
#[derive(Debug, Default)]
pub struct Handles {
    endpoints: HashMap<EndpointId, u32>,
    services: HashMap<ServiceId, u32>,
    next: u32,
}

impl Handles {
    pub(crate) fn endpoint(&mut self, id: EndpointId) -> u32 {
        let next = &mut self.next;
        *self.endpoints.entry(id).or_insert_with(|| {
            *next += 1;
            *next
        })
    }

    pub(crate) fn service(&mut self, id: ServiceId) -> u32 {
        let next = &mut self.next;
        *self.services.entry(id).or_insert_with(|| {
            *next += 1;
            *next
        })
    }

    /// The handle of endpoint `id`, if it ever had one.
    pub fn endpoint_handle(&self, id: &EndpointId) -> Option<u32> {
        self.endpoints.get(id).copied()
    }

    /// The handle of service `id`, if it ever had one.
    pub fn service_handle(&self, id: &ServiceId) -> Option<u32> {
        self.services.get(id).copied()
    }
}

impl Versioned for Snapshot {
    fn generation(&self) -> u64 {
        self.generation
    }
}

/// Why a snapshot could not be built (the model was validated before, so these are
/// internal inconsistencies or limits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildError {
    /// An attachment names a port that is not configured.
    UnknownPort(String),
    /// An object names a VPC without attachment.
    UnknownVpc(String),
    /// An endpoint names a service that does not exist.
    UnknownService(String),
    /// Maglev could not be built for a listener.
    Maglev(String, MaglevError),
    /// More objects than the data plane's indices hold.
    TooMany(&'static str),
    /// An endpoint policy does not compile.
    Policy(String, String),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::UnknownPort(p) => write!(f, "attachment on unknown port {p}"),
            BuildError::UnknownVpc(v) => write!(f, "no attachment for {v}"),
            BuildError::UnknownService(s) => write!(f, "unknown service {s}"),
            BuildError::Maglev(l, e) => write!(f, "listener {l}: {e:?}"),
            BuildError::TooMany(what) => write!(f, "too many {what}"),
            BuildError::Policy(e, err) => write!(f, "endpoint {e}: policy: {err}"),
        }
    }
}

impl std::error::Error for BuildError {}

impl Snapshot {
    /// Adds to the announcement lists those of `keys` and `keys6` that are still local
    /// addresses here (what versions between the one worker 0 finished announcing and
    /// `base` added).
    pub fn announce_also(&mut self, keys: &[(u16, u32)], keys6: &[(u16, u128)]) {
        fn also<K: Copy + Ord>(list: &mut Vec<K>, keys: &[K], present: impl Fn(&K) -> bool) {
            list.extend(keys.iter().filter(|k| present(k)));
            list.sort_unstable();
            list.dedup();
        }
        also(&mut self.announce, keys, |k| self.locals.contains_key(k));
        also(&mut self.announce6, keys6, |k| self.locals6.contains_key(k));
    }

    /// Makes the announcement lists every local address (nothing is known of what was
    /// announced).
    pub fn announce_all(&mut self) {
        self.announce = self.sorted_locals.to_vec();
        self.announce6 = self.sorted_locals6.to_vec();
    }

    /// Every local address (attachment, IPv4) in order, for a walk a budget at a time.
    pub fn sorted_locals(&self) -> &Chunked<(u16, u32)> {
        &self.sorted_locals
    }

    /// Every local IPv6 address (attachment, address) in order, as [`Self::sorted_locals`].
    pub fn sorted_locals6(&self) -> &Chunked<(u16, u128)> {
        &self.sorted_locals6
    }

    /// The endpoint with stable handle `h`.
    #[inline]
    pub fn endpoint_by_handle(&self, h: u32) -> Option<&EndpointView> {
        self.endpoints.get(&h).map(|e| &**e)
    }

    fn service_arc(&self, h: u32) -> Option<&Arc<ServiceView>> {
        self.services.get(*self.service_by_handle.get(&h)? as usize)
    }

    /// The service with stable handle `h`.
    #[inline]
    pub fn service_by_handle(&self, h: u32) -> Option<&ServiceView> {
        self.service_position(h).and_then(|i| self.service_at(i))
    }

    /// Where the service with stable handle `h` sits in this snapshot: for
    /// [`service_at`](Self::service_at) within the same snapshot, without the lookup.
    #[inline]
    pub fn service_position(&self, h: u32) -> Option<u32> {
        self.service_by_handle.get(&h).copied()
    }

    /// The service at position `i` of this snapshot ([`service_position`](Self::service_position)).
    #[inline]
    pub fn service_at(&self, i: u32) -> Option<&ServiceView> {
        self.services.get(i as usize).map(|s| &**s)
    }

    /// Every endpoint the data plane knows, in no particular order.
    pub fn endpoints(&self) -> impl Iterator<Item = &EndpointView> + '_ {
        self.endpoints.values().map(|e| &**e)
    }

    /// How many shards of the endpoint map this version shares with `other`.
    pub fn endpoint_shards_shared_with(&self, other: &Snapshot) -> usize {
        self.endpoints.shared_with(&other.endpoints)
    }

    pub fn endpoint_count(&self) -> usize {
        self.endpoints.len()
    }

    /// Every service, in the state's order.
    pub fn services(&self) -> impl Iterator<Item = &ServiceView> + '_ {
        self.services.iter().map(|s| &**s)
    }

    pub fn service_count(&self) -> usize {
        self.services.len()
    }

    /// The attachment a frame received on `port` with `vlan` belongs to.
    #[inline]
    pub fn attachment_of(&self, port: u16, vlan: Option<u16>) -> Option<u16> {
        let p = self.ports.get(usize::from(port))?;
        match vlan {
            None => p.untagged,
            Some(v) => p.tagged.iter().find(|(id, _)| *id == v).map(|(_, a)| *a),
        }
    }

    #[inline]
    pub fn attachment(&self, idx: u16) -> Option<&AttachmentView> {
        self.attachments.get(usize::from(idx))
    }

    /// What `ip` is on attachment `att`, if it is one of ours.
    #[inline]
    pub fn local(&self, att: u16, ip: u32) -> Option<LocalKind> {
        self.locals.get(&(att, ip)).copied()
    }

    /// What IPv6 address `ip` is on attachment `att`, if it is one of ours.
    #[inline]
    pub fn local6(&self, att: u16, ip: u128) -> Option<LocalKind> {
        self.locals6.get(&(att, ip)).copied()
    }

    /// The endpoint (its handle) that holds `ip` on attachment `att` without answering for
    /// it any more (rejected, deleting, failed).
    #[inline]
    pub fn closed_endpoint(&self, att: u16, ip: u32) -> Option<u32> {
        self.closed.get(&(att, ip)).copied()
    }

    /// The endpoint listener for a consumer's destination.
    #[inline]
    pub fn listener(&self, att: u16, ip: u32, proto: u8, port: u16) -> Option<ListenerRef> {
        self.listeners.get(&(att, ip, proto, port)).copied()
    }

    /// Every local address (attachment, ip), for gratuitous ARP.
    pub fn local_addresses(&self) -> impl Iterator<Item = (u16, u32)> + '_ {
        self.locals.keys().copied()
    }

    /// Every IPv6 address the appliance answers for, by attachment, and what it is.
    pub fn local_addresses6(&self) -> impl Iterator<Item = (u16, u128, LocalKind)> + '_ {
        self.locals6.iter().map(|(&(att, ip), &k)| (att, ip, k))
    }
}

impl Snapshot {
    /// How `self` differs from `other` in what it serves (everything but the generation,
    /// its base and the announcement list), each difference named: how the tests and the
    /// fuzzer check that a snapshot made from the last one is the whole build.
    pub fn differences(&self, other: &Snapshot) -> Vec<String> {
        fn sorted<K: Ord + fmt::Debug, V: fmt::Debug>(
            it: impl Iterator<Item = (K, V)>,
        ) -> Vec<String> {
            let mut v: Vec<(K, V)> = it.collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v.iter().map(|e| format!("{e:?}")).collect()
        }
        fn service(s: &ServiceView) -> String {
            let listeners: Vec<String> = s
                .listeners
                .iter()
                .map(|l| {
                    let picks: Vec<Option<u16>> = (0..64u64)
                        .map(|i| l.maglev.pick(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
                        .collect();
                    format!("{l:?} {picks:?}")
                })
                .collect();
            format!(
                "{} {} {} {} {:?} {:?} {listeners:?} {:?}",
                s.id, s.owner, s.handle, s.attachment, s.snat, s.snat6, s.checks
            )
        }
        let mut out = Vec::new();
        let mut compare = |what: &str, a: Vec<String>, b: Vec<String>| {
            if a != b {
                let only_a: Vec<&String> = a.iter().filter(|x| !b.contains(x)).collect();
                let only_b: Vec<&String> = b.iter().filter(|x| !a.contains(x)).collect();
                out.push(format!(
                    "{what}: only here {only_a:?}, only there {only_b:?}"
                ));
            }
        };
        let one = |x: &dyn fmt::Debug| vec![format!("{x:?}")];
        compare(
            "attachments",
            one(&self.attachments),
            one(&other.attachments),
        );
        compare("ports", one(&self.ports), one(&other.ports));
        compare(
            "endpoints",
            sorted(self.endpoints.iter().map(|(k, v)| (*k, format!("{v:?}")))),
            sorted(other.endpoints.iter().map(|(k, v)| (*k, format!("{v:?}")))),
        );
        compare(
            "services",
            self.services.iter().map(|s| service(s)).collect(),
            other.services.iter().map(|s| service(s)).collect(),
        );
        compare(
            "service handles",
            sorted(self.service_by_handle.iter().map(|(k, v)| (*k, *v))),
            sorted(other.service_by_handle.iter().map(|(k, v)| (*k, *v))),
        );
        compare(
            "listeners",
            sorted(self.listeners.iter().map(|(k, v)| (*k, *v))),
            sorted(other.listeners.iter().map(|(k, v)| (*k, *v))),
        );
        compare(
            "locals",
            sorted(self.locals.iter().map(|(k, v)| (*k, *v))),
            sorted(other.locals.iter().map(|(k, v)| (*k, *v))),
        );
        compare(
            "locals6",
            sorted(self.locals6.iter().map(|(k, v)| (*k, *v))),
            sorted(other.locals6.iter().map(|(k, v)| (*k, *v))),
        );
        compare(
            "sorted locals6",
            one(&self.sorted_locals6),
            one(&other.sorted_locals6),
        );
        compare(
            "closed",
            sorted(self.closed.iter().map(|(k, v)| (*k, *v))),
            sorted(other.closed.iter().map(|(k, v)| (*k, *v))),
        );
        compare(
            "sorted locals",
            one(&self.sorted_locals),
            one(&other.sorted_locals),
        );
        compare(
            "health checks",
            one(&self.health_checks),
            one(&other.health_checks),
        );
        compare(
            "sizes",
            one(&(
                self.endpoints.len(),
                self.listeners.len(),
                self.locals.len(),
            )),
            one(&(
                other.endpoints.len(),
                other.listeners.len(),
                other.locals.len(),
            )),
        );
        out
    }
}

pub fn proto_number(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => PROTO_TCP,
        Protocol::Udp => PROTO_UDP,
    }
}

/// Parses "aa:bb:cc:dd:ee:ff".
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in out.iter_mut() {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}
