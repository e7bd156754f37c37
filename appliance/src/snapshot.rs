//! The immutable view of the object model that workers read: attachments, the endpoint
//! index ((VPC, IP, protocol, port) → endpoint, listener, service), local addresses, and
//! per-listener Maglev tables. Built whole by the management thread, published by
//! [`crate::rcu`], never modified after.
//!
//! Attachment indices come from the configuration order and never change while the
//! daemon runs, so flows (which record attachment indices) survive every snapshot swap.

use std::fmt;
use std::net::Ipv4Addr;

use mgmt::config::Config;
use mgmt::model::{EndpointState, Protocol, State, TargetState};

use crate::fasthash::{fast_map, FastMap};
use crate::maglev::{mix64, Maglev, MaglevBackend, MaglevError};
use crate::rcu::Versioned;

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
    pub attachment: u16,
    pub ip: u32,
    pub service: u32,
    /// Only `available` endpoints forward.
    pub forwards: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct TargetView {
    pub ip: u32,
    pub port: u16,
    pub weight: u32,
    pub draining: bool,
}

#[derive(Debug)]
pub struct ListenerView {
    pub proto: u8,
    pub port: u16,
    pub targets: Vec<TargetView>,
    pub maglev: Maglev,
}

#[derive(Debug)]
pub struct ServiceView {
    pub id: String,
    /// The provider VPC's attachment.
    pub attachment: u16,
    pub snat: Vec<u32>,
    pub listeners: Vec<ListenerView>,
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
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::UnknownPort(p) => write!(f, "attachment on unknown port {p}"),
            BuildError::UnknownVpc(v) => write!(f, "no attachment for {v}"),
            BuildError::UnknownService(s) => write!(f, "unknown service {s}"),
            BuildError::Maglev(l, e) => write!(f, "listener {l}: {e:?}"),
            BuildError::TooMany(what) => write!(f, "too many {what}"),
        }
    }
}

impl std::error::Error for BuildError {}

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

/// The stable Maglev identity of a target: its address and port.
pub fn target_key(ip: u32, port: u16) -> u64 {
    mix64((u64::from(ip) << 16) | u64::from(port))
}

impl Snapshot {
    /// Builds generation `generation` from the configuration's attachments, the MACs of the
    /// configured ports (in `[[ports]]` order) and the object `state`.
    pub fn build(
        generation: u64,
        config: &Config,
        port_macs: &[[u8; 6]],
        state: &State,
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
        for s in &state.services {
            let attachment = att_of(&s.vpc_id.to_string())?;
            let sidx =
                u32::try_from(services.len()).map_err(|_| BuildError::TooMany("services"))?;
            let snat: Vec<u32> = s.snat_addresses.iter().copied().map(ip_u32).collect();
            for &ip in &snat {
                locals.insert((attachment, ip), LocalKind::Snat(sidx));
            }
            let mut listeners = Vec::with_capacity(s.listeners.len());
            for l in &s.listeners {
                let targets: Vec<TargetView> = l
                    .targets
                    .iter()
                    .map(|t| TargetView {
                        ip: ip_u32(t.ip),
                        port: t.port,
                        weight: t.weight,
                        draining: t.state == TargetState::Draining,
                    })
                    .collect();
                let backends: Vec<MaglevBackend> = targets
                    .iter()
                    .map(|t| MaglevBackend {
                        key: target_key(t.ip, t.port),
                        weight: if t.draining { 0 } else { t.weight },
                    })
                    .collect();
                let maglev = Maglev::build(&backends, maglev_size).map_err(|e| {
                    BuildError::Maglev(format!("{} {:?}/{}", s.id, l.protocol, l.port), e)
                })?;
                listeners.push(ListenerView {
                    proto: proto_number(l.protocol),
                    port: l.port,
                    targets,
                    maglev,
                });
            }
            services.push(ServiceView {
                id: s.id.to_string(),
                attachment,
                snat,
                listeners,
            });
        }

        let mut endpoints = Vec::with_capacity(state.endpoints.len());
        let mut listener_index = fast_map(state.endpoints.len() * 2);
        for e in &state.endpoints {
            let attachment = att_of(&e.vpc_id.to_string())?;
            let service = state
                .services
                .iter()
                .position(|s| s.id == e.service_id)
                .ok_or_else(|| BuildError::UnknownService(e.service_id.to_string()))?;
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
            endpoints.push(EndpointView {
                id: e.id.to_string(),
                attachment,
                ip,
                service: service32,
                forwards: e.state.forwards(),
            });
        }

        Ok(Snapshot {
            generation,
            attachments,
            ports,
            endpoints,
            services,
            listeners: listener_index,
            locals,
        })
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
