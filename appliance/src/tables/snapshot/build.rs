//! Making a snapshot: whole ([`Snapshot::build`]) or from the version in force and what a
//! change touched ([`Snapshot::update`]). A whole build is an update of nothing in which
//! everything changed, so both go through the same steps and cannot disagree on what an
//! object becomes; the equivalence tests check it over sequences of changes.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use mgmt::config::Config;
use mgmt::model::{
    Chunked, Endpoint, EndpointId, EndpointState, HealthCheckProtocol, Listener, RuleProtocol,
    SecurityGroupId, Service, ServiceId, State, Target, TargetState, VpcId,
};
use mgmt::net::IpNet;
use mgmt::policy::Policy;

use super::shards::ShardKey;
use super::{
    proto_number, AttachmentView, BuildError, EndpointView, Handles, IngressView, IngressView6,
    ListenerRef, ListenerView, LocalKind, PortAttachments, ServiceView, ShardedMap, Snapshot,
    TargetView, DEFAULT_MTU, PROTO_TCP, PROTO_UDP,
};
use crate::graph::nat64::{fold_snat6, fold_target6};
use crate::health::{self, TargetKey};
use crate::tables::fasthash::fast_map;
use crate::tables::maglev::{target_key, Maglev, MaglevBackend};

/// What a change touched, as the store names it ([`mgmt::store::touched`]): the objects
/// whose views are made again; every other view is the previous version's, shared.
#[derive(Debug, Clone, Default)]
pub struct Change {
    everything: bool,
    all_services: bool,
    services: HashSet<ServiceId>,
    endpoints: HashSet<EndpointId>,
    groups: HashSet<SecurityGroupId>,
}

impl Change {
    /// Nothing is taken from the previous version.
    pub fn everything() -> Change {
        Change {
            everything: true,
            ..Change::default()
        }
    }

    /// The targets' health changed: every service's view is made again (its Maglev
    /// tables follow health); endpoints are kept.
    pub fn health() -> Change {
        Change {
            all_services: true,
            ..Change::default()
        }
    }

    /// From the ids of the services, endpoints and security groups a change touched. An
    /// id of no known kind cannot be placed, so it makes everything again.
    pub fn from_touched(ids: &[String]) -> Change {
        let mut c = Change::default();
        for id in ids {
            if let Ok(s) = id.parse::<ServiceId>() {
                c.services.insert(s);
            } else if let Ok(e) = id.parse::<EndpointId>() {
                c.endpoints.insert(e);
            } else if let Ok(g) = id.parse::<SecurityGroupId>() {
                c.groups.insert(g);
            } else {
                log::warn!("snapshot: a change touched {id:?}, of no known kind; building whole");
                return Change::everything();
            }
        }
        c
    }
}

impl Snapshot {
    /// Builds generation `generation` from the configuration's attachments, the MACs and
    /// MTUs of the configured ports (in `[[ports]]` order; a port without an MTU gets
    /// [`DEFAULT_MTU`]) and the object `state`, before any health check: every target
    /// still `initial`.
    pub fn build(
        generation: u64,
        config: &Config,
        port_macs: &[[u8; 6]],
        port_mtus: &[u16],
        state: &State,
        handles: &mut Handles,
    ) -> Result<Snapshot, BuildError> {
        Self::build_with_health(
            generation,
            config,
            port_macs,
            port_mtus,
            state,
            handles,
            &HashMap::new(),
        )
    }

    /// The snapshot of `state` with the targets' health (a target not in `health` is
    /// `initial`).
    pub fn build_with_health(
        generation: u64,
        config: &Config,
        port_macs: &[[u8; 6]],
        port_mtus: &[u16],
        state: &State,
        handles: &mut Handles,
        health: &HashMap<TargetKey, health::State>,
    ) -> Result<Snapshot, BuildError> {
        Self::update(
            &Snapshot::nothing(),
            generation,
            config,
            port_macs,
            port_mtus,
            state,
            &Change::everything(),
            handles,
            health,
        )
    }

    /// The version before the first: no attachment, no object.
    fn nothing() -> Snapshot {
        Snapshot {
            generation: 0,
            attachments: Vec::new(),
            ports: Vec::new(),
            endpoints: ShardedMap::default(),
            services: Vec::new(),
            service_by_handle: fast_map(0),
            listeners: ShardedMap::default(),
            locals: ShardedMap::default(),
            locals6: ShardedMap::default(),
            closed: ShardedMap::default(),
            announce: Vec::new(),
            announce6: Vec::new(),
            health_checks: Vec::new(),
            base: None,
            sorted_locals: Chunked::new(),
            sorted_locals6: Chunked::new(),
            made_from: Chunked::new(),
        }
    }

    /// The snapshot of `state`, made from `prev` (the version in force, built from the
    /// state before the change) by making again only what `change` touched and sharing
    /// the rest. The result equals [`Snapshot::build_with_health`] of `state` except in
    /// `announce`, which holds the local addresses `prev` did not have. A change of the
    /// attachments (a new configuration) builds whole.
    #[allow(clippy::too_many_arguments)]
    pub fn update(
        prev: &Snapshot,
        generation: u64,
        config: &Config,
        port_macs: &[[u8; 6]],
        port_mtus: &[u16],
        state: &State,
        change: &Change,
        handles: &mut Handles,
        health: &HashMap<TargetKey, health::State>,
    ) -> Result<Snapshot, BuildError> {
        Build {
            generation,
            config,
            port_macs,
            port_mtus,
            state,
            health,
        }
        .make(prev, change, handles)
    }
}

struct Build<'a> {
    generation: u64,
    config: &'a Config,
    port_macs: &'a [[u8; 6]],
    port_mtus: &'a [u16],
    state: &'a State,
    health: &'a HashMap<TargetKey, health::State>,
}

/// The endpoint-sized maps being made, and the local addresses whose presence may have
/// changed on the way.
struct Maps {
    endpoints: ShardedMap<u32, Arc<EndpointView>>,
    listeners: ShardedMap<(u16, u32, u8, u16), ListenerRef>,
    locals: ShardedMap<(u16, u32), LocalKind>,
    locals6: ShardedMap<(u16, u128), LocalKind>,
    closed: ShardedMap<(u16, u32), u32>,
    churn: Vec<(u16, u32)>,
    churn6: Vec<(u16, u128)>,
}

impl Maps {
    fn put_local6(&mut self, k: (u16, u128), v: LocalKind) {
        self.locals6.insert(k, v);
        self.churn6.push(k);
    }

    fn put_local(&mut self, k: (u16, u32), v: LocalKind) {
        self.locals.insert(k, v);
        self.churn.push(k);
    }

    /// Takes out the local `k` if it is still `v` (another object may hold it now).
    fn drop_local(&mut self, k: (u16, u32), v: LocalKind) {
        if self.locals.remove_if(&k, |x| *x == v) {
            self.churn.push(k);
        }
    }

    /// Takes out the IPv6 local `k` if it is still `v`.
    fn drop_local6(&mut self, k: (u16, u128), v: LocalKind) {
        if self.locals6.remove_if(&k, |x| *x == v) {
            self.churn6.push(k);
        }
    }

    /// Takes out everything endpoint `h` put in, as `prev` has it.
    fn drop_endpoint(&mut self, prev: &Snapshot, h: u32) {
        let Some(v) = self.endpoints.remove(&h) else {
            return;
        };
        let at = (v.attachment, v.ip);
        self.drop_local(at, LocalKind::Endpoint(h));
        if let Some(ip6) = v.ip6 {
            self.drop_local6((v.attachment, ip6), LocalKind::Endpoint(h));
        }
        self.closed.remove_if(&at, |x| *x == h);
        if let Some(s) = prev.service_by_handle(v.service) {
            for l in &s.listeners {
                self.listeners
                    .remove_if(&(at.0, at.1, l.proto, l.port), |r| r.endpoint == h);
            }
        }
    }
}

impl Build<'_> {
    fn make(
        &self,
        prev: &Snapshot,
        change: &Change,
        handles: &mut Handles,
    ) -> Result<Snapshot, BuildError> {
        let (attachments, ports) = self.attachments()?;
        let prev = Some(prev)
            .filter(|p| !change.everything && p.attachments == attachments && p.ports == ports);
        let vpcs: Vec<(VpcId, u16)> = self
            .config
            .vpcs
            .iter()
            .zip(0u16..)
            .map(|(a, i)| (a.vpc_id, i))
            .collect();
        let att_of = |vpc: &VpcId| -> Result<u16, BuildError> {
            vpcs.iter()
                .find(|(v, _)| v == vpc)
                .map(|(_, i)| *i)
                .ok_or_else(|| BuildError::UnknownVpc(vpc.to_string()))
        };
        let n = self.state.endpoints.len();
        let mut maps = match prev {
            Some(p) => Maps {
                endpoints: p.endpoints.clone(),
                listeners: p.listeners.clone(),
                locals: p.locals.clone(),
                locals6: p.locals6.clone(),
                closed: p.closed.clone(),
                churn: Vec::new(),
                churn6: Vec::new(),
            },
            None => {
                let mut m = Maps {
                    endpoints: ShardedMap::with_capacity(n),
                    listeners: ShardedMap::with_capacity(n * 2),
                    locals: ShardedMap::with_capacity(n + attachments.len()),
                    locals6: ShardedMap::with_capacity(attachments.len()),
                    closed: ShardedMap::with_capacity(16),
                    churn: Vec::new(),
                    churn6: Vec::new(),
                };
                for (a, i) in attachments.iter().zip(0u16..) {
                    if a.has_ipv4() {
                        m.locals.insert((i, a.ip), LocalKind::Own);
                    }
                    if let Some(ip6) = a.ip6 {
                        m.locals6.insert((i, ip6), LocalKind::Own);
                    }
                }
                m
            }
        };

        // Services: a touched one is made again, the others are the previous Arcs.
        // `relisten`: services whose endpoints' entries must be made again (their
        // listeners moved, or they came or went).
        let maglev_size = self.config.tables.maglev_size as usize;
        let mut services = Vec::with_capacity(self.state.services.len());
        let mut service_by_handle = fast_map(self.state.services.len());
        let mut relisten: HashSet<u32> = HashSet::new();
        for s in &self.state.services {
            let handle = handles.service(s.id);
            let old = prev.and_then(|p| p.service_arc(handle));
            let view = match old {
                Some(old) if !change.all_services && !change.services.contains(&s.id) => {
                    Arc::clone(old)
                }
                _ => {
                    let attachment = att_of(&s.vpc_id)?;
                    let a = &attachments[usize::from(attachment)];
                    let own = (attachment, a.ip, a.ip6);
                    let v = Arc::new(self.service_view(s, handle, own, maglev_size)?);
                    match old {
                        Some(old) => {
                            let places = |v: &ServiceView| -> Vec<(u8, u16)> {
                                v.listeners.iter().map(|l| (l.proto, l.port)).collect()
                            };
                            if old.attachment != v.attachment || places(old) != places(&v) {
                                relisten.insert(handle);
                            }
                            for &ip in &old.snat {
                                if old.attachment != v.attachment || !v.snat.contains(&ip) {
                                    maps.drop_local((old.attachment, ip), LocalKind::Snat(handle));
                                }
                            }
                            for &(fold, ip) in &old.snat6 {
                                if old.attachment != v.attachment || !v.snat6.contains(&(fold, ip))
                                {
                                    maps.drop_local6((old.attachment, ip), LocalKind::Snat(handle));
                                }
                            }
                        }
                        None if prev.is_some() => {
                            relisten.insert(handle);
                        }
                        None => {}
                    }
                    for &ip in &v.snat {
                        maps.put_local((v.attachment, ip), LocalKind::Snat(handle));
                    }
                    for &(_, ip) in &v.snat6 {
                        maps.put_local6((v.attachment, ip), LocalKind::Snat(handle));
                    }
                    v
                }
            };
            let idx = u32::try_from(services.len()).map_err(|_| BuildError::TooMany("services"))?;
            service_by_handle.insert(handle, idx);
            services.push(view);
        }
        if let Some(p) = prev {
            for old in &p.services {
                if !service_by_handle.contains_key(&old.handle) {
                    for &ip in &old.snat {
                        maps.drop_local((old.attachment, ip), LocalKind::Snat(old.handle));
                    }
                    for &(_, ip) in &old.snat6 {
                        maps.drop_local6((old.attachment, ip), LocalKind::Snat(old.handle));
                    }
                    relisten.insert(old.handle);
                }
            }
        }

        // Endpoints: the entries of those a change reaches are taken out as the previous
        // version has them, then put in from the state.
        let fresh: Vec<&Endpoint> = match prev {
            None => self.state.endpoints.iter().collect(),
            Some(p) => {
                let wide = !relisten.is_empty() || !change.groups.is_empty();
                let reached = |e: &Endpoint| {
                    change.endpoints.contains(&e.id)
                        || (wide
                            && (handles
                                .service_handle(&e.service_id)
                                .is_some_and(|h| relisten.contains(&h))
                                || e.security_group_ids
                                    .iter()
                                    .any(|g| change.groups.contains(g))))
                };
                let (fresh, mut redo): (Vec<&Endpoint>, Vec<u32>) = if wide {
                    let named = change.endpoints.iter();
                    (
                        self.state.endpoints.iter().filter(|e| reached(e)).collect(),
                        named.filter_map(|id| handles.endpoint_handle(id)).collect(),
                    )
                } else {
                    // Only named endpoints, and only where the list differs from the one
                    // `p` was made from: one that is the same at the same place in both
                    // has the entries it had (a million endpoints, one chunk read).
                    let (was, is) = p.made_from.unshared(&self.state.endpoints);
                    let named = |e: &&Endpoint| change.endpoints.contains(&e.id);
                    (
                        self.state.endpoints.iter_range(is).filter(named).collect(),
                        (p.made_from.iter_range(was).filter(named))
                            .filter_map(|e| handles.endpoint_handle(&e.id))
                            .collect(),
                    )
                };
                redo.extend(fresh.iter().filter_map(|e| handles.endpoint_handle(&e.id)));
                if !relisten.is_empty() {
                    redo.extend(
                        p.endpoints
                            .values()
                            .filter(|v| relisten.contains(&v.service))
                            .map(|v| v.handle),
                    );
                }
                redo.sort_unstable();
                redo.dedup();
                for h in redo {
                    maps.drop_endpoint(p, h);
                }
                fresh
            }
        };
        for e in fresh {
            self.put_endpoint(
                e,
                &att_of,
                &services,
                &service_by_handle,
                handles,
                &mut maps,
            )?;
        }

        let (sorted_locals, announce) = settle(
            prev.map(|p| (&p.locals, &p.sorted_locals)),
            &maps.locals,
            &mut maps.churn,
        );
        let (sorted_locals6, announce6) = settle(
            prev.map(|p| (&p.locals6, &p.sorted_locals6)),
            &maps.locals6,
            &mut maps.churn6,
        );
        let health_checks = services
            .iter()
            .flat_map(|s| s.checks.iter().cloned())
            .collect();
        Ok(Snapshot {
            generation: self.generation,
            attachments,
            ports,
            endpoints: maps.endpoints,
            services,
            service_by_handle,
            listeners: maps.listeners,
            locals: maps.locals,
            locals6: maps.locals6,
            closed: maps.closed,
            announce,
            announce6,
            health_checks,
            base: prev.map(|p| p.generation),
            sorted_locals,
            sorted_locals6,
            made_from: self.state.endpoints.clone(),
        })
    }

    fn attachments(&self) -> Result<(Vec<AttachmentView>, Vec<PortAttachments>), BuildError> {
        let config = self.config;
        let mut ports = vec![PortAttachments::default(); config.ports.len()];
        let mut attachments = Vec::with_capacity(config.vpcs.len());
        for a in &config.vpcs {
            let port = config
                .ports
                .iter()
                .position(|p| p.name == a.port)
                .ok_or_else(|| BuildError::UnknownPort(a.port.clone()))?;
            let idx =
                u16::try_from(attachments.len()).map_err(|_| BuildError::TooMany("attachments"))?;
            let port16 = u16::try_from(port).map_err(|_| BuildError::TooMany("ports"))?;
            match a.vlan {
                None => ports[port].untagged = Some(idx),
                Some(v) => ports[port].tagged.push((v, idx)),
            }
            attachments.push(AttachmentView {
                vpc_id: a.vpc_id.to_string(),
                port: port16,
                vlan: a.vlan,
                mac: self.port_macs.get(port).copied().unwrap_or([0; 6]),
                // An IPv6-only VPC: no address of ours (0.0.0.0, in no local map) and a
                // host mask, so no IPv4 destination but 0.0.0.0 is on-link and, without a
                // gateway, none has a next hop.
                ip: a.address.map_or(0, |n| ip_u32(n.addr())),
                ip6: a.address6.map(|n| u128::from(n.addr())),
                mask: a.address.map_or(u32::MAX, |n| mask(n.prefix_len())),
                mask6: a.address6.map_or(0, |n| n.mask()),
                gateway: a.gateway.map(ip_u32),
                gateway6: a.gateway6.map(u128::from),
                static_neighbours: a
                    .static_neighbours
                    .iter()
                    .map(|n| (ip_u32(n.ip), n.mac.0))
                    .collect(),
                static_neighbours6: a
                    .static_neighbours6
                    .iter()
                    .map(|n| (u128::from(n.ip), n.mac.0))
                    .collect(),
                mtu: self.port_mtus.get(port).copied().unwrap_or(DEFAULT_MTU),
                mss_clamp: a.mss_clamp,
            });
        }
        Ok((attachments, ports))
    }

    fn service_view(
        &self,
        s: &Service,
        handle: u32,
        (attachment, own, own6): (u16, u32, Option<u128>),
        maglev_size: usize,
    ) -> Result<ServiceView, BuildError> {
        let mut checks = Vec::new();
        let mut listeners = Vec::with_capacity(s.listeners.len());
        for l in &s.listeners {
            listeners.push(listener_view(
                s,
                l,
                (attachment, own, own6),
                self.health,
                maglev_size,
                &mut checks,
            )?);
        }
        Ok(ServiceView {
            id: s.id.to_string(),
            owner: s.owner,
            handle,
            attachment,
            snat: s
                .snat_addresses
                .iter()
                .filter_map(|a| mgmt::net::ipv4_of(*a))
                .map(ip_u32)
                .collect(),
            snat6: s
                .snat_addresses
                .iter()
                .filter_map(|a| mgmt::net::ipv6_of(*a))
                .map(|a| (fold_snat6(u128::from(a)), u128::from(a)))
                .collect(),
            listeners,
            checks,
        })
    }

    /// Puts endpoint `e`'s view and entries in.
    fn put_endpoint(
        &self,
        e: &Endpoint,
        att_of: &impl Fn(&VpcId) -> Result<u16, BuildError>,
        services: &[Arc<ServiceView>],
        service_by_handle: &crate::tables::fasthash::FastMap<u32, u32>,
        handles: &mut Handles,
        maps: &mut Maps,
    ) -> Result<(), BuildError> {
        let attachment = att_of(&e.vpc_id)?;
        let Some(service) = handles
            .service_handle(&e.service_id)
            .and_then(|h| service_by_handle.get(&h))
            .map(|&i| &services[i as usize])
        else {
            // A failed endpoint (its service was deleted), or one on its way out, has
            // nothing to forward to: the data plane does not know it.
            if e.state.needs_service() {
                return Err(BuildError::UnknownService(e.service_id.to_string()));
            }
            return Ok(());
        };
        let handle = handles.endpoint(e.id);
        // An IPv6 endpoint's flows are keyed as those of its IPv4 twin would be (NAT64):
        // by a stand-in address no packet carries, which no IPv4 packet reaches (it is
        // in no local map) and which stays the same for the endpoint's life.
        let ip = match e.ip {
            Some(ip) => ip_u32(ip),
            None => {
                super::ipv6_only_stand_in(handle).ok_or(BuildError::TooMany("endpoint handles"))?
            }
        };
        let has_ipv4 = e.ip.is_some();
        // The endpoint's interface exists (answers ARP and ping) while it is pending or
        // available; a rejected, failed or deleted one has no address any more.
        let present = matches!(
            e.state,
            EndpointState::Available | EndpointState::PendingAcceptance
        );
        if !present && e.state.holds_address() && has_ipv4 {
            maps.closed.insert((attachment, ip), handle);
        }
        let ip6 = e.ip6.map(u128::from);
        if present {
            if has_ipv4 {
                maps.put_local((attachment, ip), LocalKind::Endpoint(handle));
            }
            if let Some(ip6) = ip6 {
                maps.put_local6((attachment, ip6), LocalKind::Endpoint(handle));
            }
            for (l, listener) in service.listeners.iter().zip(0u16..) {
                maps.listeners.insert(
                    (attachment, ip, l.proto, l.port),
                    ListenerRef {
                        endpoint: handle,
                        service: service.handle,
                        listener,
                    },
                );
            }
        }
        let mut ingress6 = Vec::new();
        let ingress = if e.security_group_ids.is_empty() {
            None
        } else {
            let mut rules = Vec::new();
            for g in &e.security_group_ids {
                let Some(sg) = self.state.security_groups.iter().find(|sg| sg.id == *g) else {
                    // Validation guarantees groups exist; a missing one admits nothing.
                    continue;
                };
                for r in &sg.ingress {
                    let proto = |icmp: u8| match r.protocol {
                        RuleProtocol::Tcp => PROTO_TCP,
                        RuleProtocol::Udp => PROTO_UDP,
                        RuleProtocol::Icmp => icmp,
                        RuleProtocol::All => 0,
                    };
                    match r.cidr {
                        IpNet::V4(c) => rules.push(IngressView {
                            proto: proto(1),
                            from_port: r.from_port,
                            to_port: r.to_port,
                            net: ip_u32(c.network()),
                            mask: mask(c.prefix_len()),
                        }),
                        IpNet::V6(c) => ingress6.push(IngressView6 {
                            proto: proto(58),
                            from_port: r.from_port,
                            to_port: r.to_port,
                            net: u128::from(c.network()),
                            mask: c.mask(),
                        }),
                    }
                }
            }
            Some(rules)
        };
        let policy = match &e.policy {
            None => None,
            Some(doc) => Some(
                Policy::parse(doc)
                    .map_err(|err| BuildError::Policy(e.id.to_string(), err.to_string()))?,
            ),
        };
        maps.endpoints.insert(
            handle,
            Arc::new(EndpointView {
                id: e.id.to_string(),
                handle,
                owner: e.owner,
                ingress,
                ingress6,
                policy,
                attachment,
                ip,
                ip6,
                service: service.handle,
                forwards: e.state.forwards(),
            }),
        );
        Ok(())
    }
}

/// The sorted keys of the local addresses `now` and those of them to announce: all of
/// them without a version before; else those `churn` (the keys whose presence may have
/// changed) says `prev` did not have, the sorted list made from `prev`'s by putting in
/// and taking out what came and went (copying the chunks they fall in; the rest shared).
#[allow(clippy::type_complexity)]
fn settle<K: ShardKey + Copy + Ord + std::hash::Hash>(
    prev: Option<(&ShardedMap<K, LocalKind>, &Chunked<K>)>,
    now: &ShardedMap<K, LocalKind>,
    churn: &mut Vec<K>,
) -> (Chunked<K>, Vec<K>) {
    let Some((before, sorted)) = prev else {
        let mut all: Vec<K> = now.keys().copied().collect();
        all.sort_unstable();
        return (Chunked::from(all.clone()), all);
    };
    churn.sort_unstable();
    churn.dedup();
    let mut out = sorted.clone();
    let mut added = Vec::new();
    for k in churn.iter() {
        match (before.contains_key(k), now.contains_key(k)) {
            (false, true) => {
                added.push(*k);
                out.insert(out.partition_point(|x| x < k), *k);
            }
            (true, false) => {
                let i = out.partition_point(|x| x < k);
                if out.get(i) == Some(k) {
                    out.remove(i);
                }
            }
            _ => {}
        }
    }
    (out, added)
}

/// A listener's view: its targets with their place in the Maglev table, which holds the
/// targets of the best health tier present ([`health::tier`]); and its targets' checks
/// into `checks`.
fn listener_view(
    s: &Service,
    l: &Listener,
    (attachment, own, own6): (u16, u32, Option<u128>),
    health: &HashMap<TargetKey, health::State>,
    maglev_size: usize,
    checks: &mut Vec<health::Spec>,
) -> Result<ListenerView, BuildError> {
    let proto = proto_number(l.protocol);
    let key = |t: &Target| TargetKey {
        service: s.id,
        proto,
        port: l.port,
        ip: t.ip,
        target_port: t.port,
    };
    let state_of = |t: &Target| -> health::State {
        if t.state == TargetState::Draining {
            health::State::Draining
        } else if t.weight == 0 {
            health::State::Unused
        } else if !l.health_check_enabled {
            health::State::Unavailable
        } else {
            match health.get(&key(t)) {
                // Checked states only: a stale draining/unused entry means initial.
                Some(s @ (health::State::Healthy | health::State::Unhealthy)) => *s,
                _ => health::State::Initial,
            }
        }
    };
    let best = l
        .targets
        .iter()
        .filter_map(|t| health::tier(state_of(t)))
        .min();
    let kind = match l.health_check_protocol {
        HealthCheckProtocol::Tcp => None,
        HealthCheckProtocol::Http => Some(l.matcher.clone()),
    };
    let mut targets = Vec::with_capacity(l.targets.len());
    for t in &l.targets {
        let state = state_of(t);
        let routable = best.is_some() && health::tier(state) == best;
        let (ip, ip6) = match t.ip {
            IpAddr::V4(a) => (ip_u32(a), None),
            IpAddr::V6(a) => (fold_target6(u128::from(a)), Some(u128::from(a))),
        };
        targets.push(TargetView {
            ip,
            ip6,
            port: t.port,
            weight: t.weight,
            draining: t.state == TargetState::Draining,
            routable,
            ended: state == health::State::Unhealthy
                && !routable
                && l.connection_termination_on_unhealthy,
        });
        let mode = match state {
            health::State::Draining => health::Mode::Draining,
            health::State::Unused => health::Mode::Unused,
            health::State::Unavailable => health::Mode::Disabled,
            _ => {
                let port = l.health_check_port.unwrap_or(t.port);
                health::Mode::Check(health::Check {
                    attachment,
                    source: match t.ip {
                        IpAddr::V4(_) => IpAddr::V4(own.into()),
                        // Validation saw to the attachment's IPv6 address.
                        IpAddr::V6(_) => IpAddr::V6(own6.unwrap_or(0).into()),
                    },
                    port,
                    interval_ms: u64::from(l.health_check_interval_seconds) * 1000,
                    timeout_ms: u64::from(l.health_check_timeout_seconds) * 1000,
                    healthy: l.healthy_threshold_count,
                    unhealthy: l.unhealthy_threshold_count,
                    kind: match &kind {
                        None => health::probe::Kind::Tcp,
                        Some(matcher) => health::probe::Kind::Http {
                            request: health::probe::http_request(&l.health_check_path, t.ip, port),
                            matcher: matcher.clone(),
                        },
                    },
                })
            }
        };
        checks.push(health::Spec { key: key(t), mode });
    }
    let backends: Vec<MaglevBackend> = targets
        .iter()
        .map(|t| MaglevBackend {
            key: target_key(t.ip, t.port),
            weight: if t.routable { t.weight } else { 0 },
        })
        .collect();
    let maglev = Maglev::build(&backends, maglev_size)
        .map_err(|e| BuildError::Maglev(format!("{} {:?}/{}", s.id, l.protocol, l.port), e))?;
    Ok(ListenerView {
        proto,
        port: l.port,
        ipv6: l.targets.first().is_some_and(|t| t.ip.is_ipv6()),
        targets,
        maglev,
        idle_s: l
            .idle_timeout_seconds
            .map_or(0, |v| u16::try_from(v).unwrap_or(u16::MAX)),
    })
}

fn ip_u32(ip: Ipv4Addr) -> u32 {
    u32::from(ip)
}

fn mask(prefix_len: u8) -> u32 {
    if prefix_len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix_len.min(32)))
    }
}
