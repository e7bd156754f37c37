//! The immutable view of the object model that workers read: attachments, the endpoint
//! index ((VPC, IP, protocol, port) → endpoint, listener, service), local addresses, and
//! per-listener Maglev tables. Built whole by the management thread, published by
//! [`crate::tables::snapshot::cell`], never modified after.
//!
//! Attachment indices come from the configuration order and never change while the
//! daemon runs, so flows (which record attachment indices) survive every snapshot swap.

pub mod cell;

use std::fmt;
use std::net::Ipv4Addr;

use std::collections::HashMap;

use mgmt::config::Config;
use mgmt::model::{
    AccountId, EndpointId, EndpointState, HealthCheckProtocol, Listener, Protocol, RuleProtocol,
    Service, ServiceId, State, Target, TargetState,
};
use mgmt::policy::Policy;

use crate::health::{self, TargetKey};
use crate::tables::fasthash::{fast_map, FastMap};
use crate::tables::maglev::{target_key, Maglev, MaglevBackend, MaglevError};
use crate::tables::snapshot::cell::Versioned;

/// The MTU of a port whose MTU is not known: Ethernet's.
pub const DEFAULT_MTU: u16 = 1500;

/// IP protocol numbers the snapshot indexes.
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// One VPC attachment as the data plane needs it.
#[derive(Debug, Clone)]
pub struct AttachmentView {
    pub vpc_id: String,
    /// Port index (order of `[[ports]]`).
    pub port: u16,
    pub vlan: Option<u16>,
    /// The port's MAC: the source of everything we send on this attachment.
    pub mac: [u8; 6],
    /// The appliance's own address here (host byte order).
    pub ip: u32,
    pub mask: u32,
    pub gateway: Option<u32>,
    pub static_neighbours: Vec<(u32, [u8; 6])>,
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

    #[inline]
    pub fn on_link(&self, ip: u32) -> bool {
        ip & self.mask == self.ip & self.mask
    }
}

/// What a local address is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalKind {
    /// The appliance's own address on the attachment.
    Own,
    /// An endpoint's IP (index into `endpoints`).
    Endpoint(u32),
    /// A SNAT address of a service (index into `services`).
    Snat(u32),
}

/// Where a consumer's (VPC, IP, protocol, port) leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerRef {
    pub endpoint: u32,
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
    pub ip: u32,
    pub service: u32,
    /// Only `available` endpoints forward.
    pub forwards: bool,
    /// Ingress rules of the endpoint's security groups; `None` when it has no group (all
    /// traffic admitted).
    pub ingress: Option<Vec<IngressView>>,
    /// The compiled endpoint policy; `None` = allow all.
    pub policy: Option<Policy>,
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
    pub ip: u32,
    pub port: u16,
    pub weight: u32,
    pub draining: bool,
    /// In the listener's Maglev table: it takes new flows (see [`crate::health::tier`]).
    pub routable: bool,
    /// Unhealthy, out of the table, and its listener ends such a target's flows.
    pub ended: bool,
}

#[derive(Debug)]
pub struct ListenerView {
    pub proto: u8,
    pub port: u16,
    pub targets: Vec<TargetView>,
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
    pub listeners: Vec<ListenerView>,
}

impl ServiceView {
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
#[derive(Debug, Clone, Default)]
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
    pub endpoints: Vec<EndpointView>,
    pub services: Vec<ServiceView>,
    listeners: FastMap<(u16, u32, u8, u16), ListenerRef>,
    locals: FastMap<(u16, u32), LocalKind>,
    /// Addresses of endpoints that still hold them but no longer answer (rejected,
    /// deleting, failed): index into `endpoints`. Only stray TCP segments of connections
    /// just ended get something back from them (a RST).
    closed: FastMap<(u16, u32), u32>,
    endpoint_by_handle: FastMap<u32, u32>,
    service_by_handle: FastMap<u32, u32>,
    /// Local addresses to announce with a gratuitous ARP: all of them in a first
    /// snapshot, those new since the last one worker 0 announced in full after
    /// [`Snapshot::announce_beyond`] (the management thread's diff).
    pub announce: Vec<(u16, u32)>,
    /// Every target of every listener and how the health checker treats it.
    pub health_checks: Vec<health::Spec>,
    /// The keys of `locals`, sorted.
    sorted_locals: Vec<(u16, u32)>,
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
    fn endpoint(&mut self, id: EndpointId) -> u32 {
        let next = &mut self.next;
        *self.endpoints.entry(id).or_insert_with(|| {
            *next += 1;
            *next
        })
    }

    fn service(&mut self, id: ServiceId) -> u32 {
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

/// A listener's view: its targets with their place in the Maglev table, which holds the
/// targets of the best health tier present ([`health::tier`]); and its targets' checks
/// into `checks`.
fn listener_view(
    s: &Service,
    l: &Listener,
    (attachment, own): (u16, u32),
    health: &HashMap<TargetKey, health::State>,
    maglev_size: usize,
    checks: &mut Vec<health::Spec>,
) -> Result<ListenerView, BuildError> {
    let proto = proto_number(l.protocol);
    let key = |t: &Target| TargetKey {
        service: s.id,
        proto,
        port: l.port,
        ip: ip_u32(t.ip),
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
        targets.push(TargetView {
            ip: ip_u32(t.ip),
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
                    source: own,
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

impl Snapshot {
    /// Builds generation `generation` from the configuration's attachments, the MACs and
    /// MTUs of the configured ports (in `[[ports]]` order; a port without an MTU gets
    /// [`DEFAULT_MTU`]) and the object `state`.
    /// The snapshot of `state` before any health check: every target still `initial`.
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
        let maglev_size = config.tables.maglev_size as usize;
        let mut ports = vec![PortAttachments::default(); config.ports.len()];
        let mut attachments = Vec::with_capacity(config.vpcs.len());
        let mut locals = fast_map(64);
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
            let ip = ip_u32(a.address.addr());
            locals.insert((idx, ip), LocalKind::Own);
            attachments.push(AttachmentView {
                vpc_id: a.vpc_id.to_string(),
                port: port16,
                vlan: a.vlan,
                mac: port_macs.get(port).copied().unwrap_or([0; 6]),
                ip,
                mask: mask(a.address.prefix_len()),
                gateway: a.gateway.map(ip_u32),
                static_neighbours: a
                    .static_neighbours
                    .iter()
                    .map(|n| (ip_u32(n.ip), n.mac.0))
                    .collect(),
                mtu: port_mtus.get(port).copied().unwrap_or(DEFAULT_MTU),
                mss_clamp: a.mss_clamp,
            });
        }
        let att_of = |vpc: &str| -> Result<u16, BuildError> {
            attachments
                .iter()
                .position(|a| a.vpc_id == vpc)
                .and_then(|i| u16::try_from(i).ok())
                .ok_or_else(|| BuildError::UnknownVpc(vpc.to_owned()))
        };

        let mut services = Vec::with_capacity(state.services.len());
        let mut health_checks = Vec::new();
        let mut service_by_handle = fast_map(state.services.len());
        let mut endpoint_by_handle = fast_map(state.endpoints.len());
        for s in &state.services {
            let attachment = att_of(&s.vpc_id.to_string())?;
            let sidx =
                u32::try_from(services.len()).map_err(|_| BuildError::TooMany("services"))?;
            let snat: Vec<u32> = s.snat_addresses.iter().copied().map(ip_u32).collect();
            for &ip in &snat {
                locals.insert((attachment, ip), LocalKind::Snat(sidx));
            }
            let mut listeners = Vec::with_capacity(s.listeners.len());
            let own = attachments[usize::from(attachment)].ip;
            for l in &s.listeners {
                listeners.push(listener_view(
                    s,
                    l,
                    (attachment, own),
                    health,
                    maglev_size,
                    &mut health_checks,
                )?);
            }
            service_by_handle.insert(handles.service(s.id), sidx);
            services.push(ServiceView {
                id: s.id.to_string(),
                owner: s.owner,
                handle: handles.service(s.id),
                attachment,
                snat,
                listeners,
            });
        }

        let mut endpoints = Vec::with_capacity(state.endpoints.len());
        let mut closed = fast_map(16);
        let mut listener_index = fast_map(state.endpoints.len() * 2);
        for e in &state.endpoints {
            let attachment = att_of(&e.vpc_id.to_string())?;
            let Some(service) = state.services.iter().position(|s| s.id == e.service_id) else {
                // A failed endpoint (its service was deleted), or one on its way out, has
                // nothing to forward to: the data plane does not know it.
                if e.state.needs_service() {
                    return Err(BuildError::UnknownService(e.service_id.to_string()));
                }
                continue;
            };
            let service32 = u32::try_from(service).map_err(|_| BuildError::TooMany("services"))?;
            let eidx =
                u32::try_from(endpoints.len()).map_err(|_| BuildError::TooMany("endpoints"))?;
            let ip = ip_u32(e.ip);
            // The endpoint's interface exists (answers ARP and ping) while it is pending or
            // available; a rejected, failed or deleted one has no address any more.
            let present = matches!(
                e.state,
                EndpointState::Available | EndpointState::PendingAcceptance
            );
            if !present && e.state.holds_address() {
                closed.insert((attachment, ip), eidx);
            }
            if present {
                locals.insert((attachment, ip), LocalKind::Endpoint(eidx));
                for (li, l) in services[service].listeners.iter().enumerate() {
                    let listener =
                        u16::try_from(li).map_err(|_| BuildError::TooMany("listeners"))?;
                    listener_index.insert(
                        (attachment, ip, l.proto, l.port),
                        ListenerRef {
                            endpoint: eidx,
                            service: service32,
                            listener,
                        },
                    );
                }
            }
            let ingress = if e.security_group_ids.is_empty() {
                None
            } else {
                let mut rules = Vec::new();
                for g in &e.security_group_ids {
                    let Some(sg) = state.security_groups.iter().find(|sg| sg.id == *g) else {
                        // Validation guarantees groups exist; a missing one admits nothing.
                        continue;
                    };
                    rules.extend(sg.ingress.iter().map(|r| IngressView {
                        proto: match r.protocol {
                            RuleProtocol::Tcp => PROTO_TCP,
                            RuleProtocol::Udp => PROTO_UDP,
                            RuleProtocol::Icmp => 1,
                            RuleProtocol::All => 0,
                        },
                        from_port: r.from_port,
                        to_port: r.to_port,
                        net: ip_u32(r.cidr.network()),
                        mask: mask(r.cidr.prefix_len()),
                    }));
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
            let handle = handles.endpoint(e.id);
            endpoint_by_handle.insert(handle, eidx);
            endpoints.push(EndpointView {
                id: e.id.to_string(),
                handle,
                owner: e.owner,
                ingress,
                policy,
                attachment,
                ip,
                service: service32,
                forwards: e.state.forwards(),
            });
        }

        let mut sorted_locals: Vec<(u16, u32)> = locals.keys().copied().collect();
        sorted_locals.sort_unstable();
        let announce = sorted_locals.clone();
        Ok(Snapshot {
            sorted_locals,
            generation,
            attachments,
            ports,
            endpoints,
            services,
            listeners: listener_index,
            locals,
            closed,
            announce,
            endpoint_by_handle,
            service_by_handle,
            health_checks,
        })
    }

    /// Keeps in `announce` only the addresses `prev` did not have (computed on the
    /// management thread, so worker 0 never diffs address sets itself).
    pub fn announce_since(&mut self, prev: &Snapshot) {
        self.announce.retain(|k| !prev.locals.contains_key(k));
    }

    /// Keeps in `announce` only the addresses not in `announced` (sorted): those of the
    /// last snapshot whose announcements worker 0 finished.
    pub fn announce_beyond(&mut self, announced: &[(u16, u32)]) {
        self.announce
            .retain(|k| announced.binary_search(k).is_err());
    }

    /// Every local address, sorted (what a completed announcement covered).
    pub fn local_keys(&self) -> Vec<(u16, u32)> {
        self.sorted_locals.clone()
    }

    /// Every local address (attachment, IPv4) in order, for a walk a budget at a time.
    pub fn sorted_locals(&self) -> &[(u16, u32)] {
        &self.sorted_locals
    }

    /// The endpoint with stable handle `h`.
    #[inline]
    pub fn endpoint_by_handle(&self, h: u32) -> Option<&EndpointView> {
        self.endpoints
            .get(*self.endpoint_by_handle.get(&h)? as usize)
    }

    /// The service with stable handle `h`.
    #[inline]
    pub fn service_by_handle(&self, h: u32) -> Option<&ServiceView> {
        self.services.get(*self.service_by_handle.get(&h)? as usize)
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

    /// The endpoint (index into `endpoints`) that holds `ip` on attachment `att` without
    /// answering for it any more (rejected, deleting, failed).
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
