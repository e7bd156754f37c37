//! Structured packet scenarios, for the `process_structured` fuzz target, its seeds and
//! the property tests: bytes decoded into a *sequence of events* (frames from the
//! consumer's hosts and the provider's targets, answers to what the appliance sent, ICMP
//! errors quoting it, ARP, clock jumps, polls, management changes published as new
//! snapshots, usage reports and flow listings), run through one or two real [`Pipeline`]s
//! of the demo topology with the appliance's own frame and checksum code, and checked on
//! every frame that leaves.
//!
//! Random bytes rarely make a valid checksum, so a raw-bytes fuzzer stops at the first
//! check. Here every frame is generated from a description and its checksums are
//! computed (and only spoiled when the description asks for it), addresses and ports are
//! mostly the demo's real ones, and what the appliance sends can be answered, so flows
//! get established, translated both ways, expire and end.
//!
//! # Invariants (a panic when broken)
//!
//! Every frame that leaves the pipeline (a `Tx` verdict, or emitted: ARP, RST, released
//! held packets): has a readable L2 header, the port's source MAC and a destination MAC;
//! belongs to an attachment of its port and VLAN; is ARP from one of the appliance's
//! addresses on that attachment, or IPv4 with a correct header checksum, a source that is
//! an address of the appliance on that attachment (own, an endpoint's, a SNAT address, in
//! any snapshot of the run: the provider never sees a consumer's address, nor the consumer
//! a target's), no larger than the attachment's MTU, with a correct ICMP checksum, and a
//! correct TCP/UDP checksum unless the scenario sent one it spoiled on purpose. A handed-off
//! packet reaches its end within as many hops as there are workers. A packet that crosses
//! from the consumer's side to the provider's goes to a target (`ip:port`) some snapshot
//! of the run had: nobody else in the provider's VPC. Listings and reports
//! come from the worker asked. A state the store accepted always builds a snapshot.
//! `PRIVLINK_SCENARIO_TRACE=1` prints every event and every frame in and out (to triage
//! a crash: `cargo fuzz run process_structured CRASH_FILE`).
//!
//! # Input format
//!
//! Two setup bytes, then [`RECORD`]-byte records, one event each (at most [`MAX_EVENTS`];
//! a trailing partial record is ignored). Multi-byte fields are big-endian.
//!
//! Setup byte 0: bit 0 two workers; bits 1-2 flow capacity (1024, 16, 64, 256); bits 3-4
//! hold queue (256, 8, 1, 0); bit 5 a 4-entry neighbour table; bit 6 the client and the
//! targets are known neighbours from the start (else they must answer ARP). Byte 1: bits
//! 0-1 port MTUs (1500/1500, 9000/1500, 1500/9000, 1280/576); bit 2 MSS clamp on the
//! consumer (1200) and provider (1300) attachments; bit 3 the clock starts at 2^40 ms;
//! bits 4-5 both set: every third packet buffer allocation fails; bit 6 tight
//! per-consumer limits (8 flows and 4 half-open per client, 12 and 6 per endpoint).
//! Workers share one neighbour table, as the daemon's do.
//!
//! A record: `op a b c seq[4] ack[4] len[2] win[2] ip l2 damage x y z p2[2]`. `op % 16`:
//! 0-1 consumer packet, 2 IPv6 consumer packet (`six.rs`), 3 provider packet, 4-6 answer, 7 ICMP error, 8 ARP, 9 and 15
//! clock, 10 poll, 11 management change, 12 replay, 13 report or listing, 14 raw frame
//! (see [`Op`] and the `World` methods for each field's meaning). For frames, `a` bit 7
//! puts the frame in the same burst as the previous one (`process_burst`), bit 6 picks the
//! worker that receives it (RSS).

use std::collections::{HashMap, VecDeque};
use std::sync::OnceLock;

use crossbeam::channel::{Receiver, TryRecvError};
use mgmt::config::Config;
use mgmt::store::{Caller, Store};
use serde_json::{json, Value};

use crate::graph::counters::Counters;
use crate::graph::frame::{Frame, VecFrame};
use crate::graph::{FlowFilter, FlowInfo, FlowQuery, Pipeline, Verdict};
use crate::tables::neighbour::SharedNeighbours;
use crate::tables::snapshot::{Change, Handles, Snapshot};
use crate::wire::arp::ArpPacket;
use crate::wire::ethernet::{EtherType, EthernetFrame};
use crate::wire::icmpv4::Icmpv4Packet;
use crate::wire::ipv4::Ipv4Packet;
use crate::wire::tcp::TcpPacket;
use crate::wire::udp::UdpPacket;
use crate::wire::vlan;

mod check;
pub mod packets;
pub mod seeds;
mod six;
mod tally;
#[cfg(test)]
mod tests;

pub use check::{
    add_owned, add_targets, check_crossing_to_provider, check_leaving, l4_checksum_ok, Owned,
    Strict,
};
use packets::{Eth, Ip, Tcp};
pub use tally::Tally;

/// Bytes per event record.
pub const RECORD: usize = 24;
/// Events per input.
pub const MAX_EVENTS: usize = 256;
/// Frames remembered (sent and received) for answers, errors and replays.
const REMEMBER: usize = 32;
/// Frames one `process_burst` call takes at most.
const BURST_MAX: usize = 32;

/// The appliance's MACs on the consumer and provider ports.
pub const MACS: [[u8; 6]; 2] = [[2, 0, 0, 0, 0, 0xc0], [2, 0, 0, 0, 0, 0xb0]];
/// Port indices.
pub const CONSUMER_PORT: u16 = 0;
pub const PROVIDER_PORT: u16 = 1;
/// The /24s of the consumer VPC (untagged on port 0), the provider VPC (port 1) and a
/// third account's VPC (VLAN [`OTHER_VLAN`] on port 0).
pub const CONSUMER_NET: u32 = 0x0a01_0000;
pub const PROVIDER_NET: u32 = 0x0a02_0000;
pub const OTHER_NET: u32 = 0x0a03_0000;
pub const OTHER_VLAN: u16 = 300;
const BROADCAST: [u8; 6] = [0xff; 6];
const STRANGER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xee];
/// Unix time of the store at clock 0.
const UNIX_EPOCH_OFFSET: u64 = 1_700_000_000;

const SERVICE: &str = "vpce-svc-0d0000000000000d1";
const ENDPOINT: &str = "vpce-0e0000000000000e1";
const CONSUMER_VPC: &str = "vpc-0c0000000000000c1";

/// The demo topology plus a third account's VPC on VLAN 300 of the consumer port with an
/// endpoint of its own, IPv6 on the consumer and provider VPCs (a dual-stack endpoint,
/// NAT66 listeners tcp/443 and udp/9443 of IPv6 targets from `fd00:b1::100`), small
/// Maglev tables (cheap rebuilds) and a short deregistration
/// delay (so draining targets go within a scenario).
pub const CONFIG: &str = r#"
[[ports]]
name = "net_tap0"
[[ports]]
name = "net_tap1"

[[vpcs]]
vpc_id = "vpc-0c0000000000000c1"
account = "111111111111"
port = "net_tap0"
address = "10.1.0.1/24"
address6 = "fd00:c1::1/64"
[[vpcs]]
vpc_id = "vpc-0b0000000000000b1"
account = "222222222222"
port = "net_tap1"
address = "10.2.0.1/24"
address6 = "fd00:b1::1/64"
[[vpcs]]
vpc_id = "vpc-0a0000000000000a1"
account = "333333333333"
port = "net_tap0"
vlan = 300
address = "10.3.0.1/24"

[[accounts]]
id = "111111111111"
name = "consumer"
[[accounts]]
id = "222222222222"
name = "provider"
[[accounts]]
id = "333333333333"
name = "other"

[tables]
maglev_size = 251

[timeouts]
deregistration_delay = 10

[[services]]
id = "vpce-svc-0d0000000000000d1"
owner = "222222222222"
vpc_id = "vpc-0b0000000000000b1"
snat_addresses = ["10.2.0.100", "fd00:b1::100"]
acceptance_required = false
allowed_principals = ["111111111111", "333333333333"]
supported_ip_address_types = ["ipv4", "ipv6"]
[[services.listeners]]
protocol = "tcp"
port = 80
targets = [{ ip = "10.2.0.11", port = 8080 }, { ip = "10.2.0.12", port = 8080 }]
[[services.listeners]]
protocol = "udp"
port = 9000
targets = [{ ip = "10.2.0.11", port = 9000 }, { ip = "10.2.0.12", port = 9000 }]
[[services.listeners]]
protocol = "tcp"
port = 443
targets = [{ ip = "fd00:b1::11", port = 8443 }, { ip = "fd00:b1::12", port = 8443 }]
[[services.listeners]]
protocol = "udp"
port = 9443
targets = [{ ip = "fd00:b1::11", port = 8443 }, { ip = "fd00:b1::12", port = 8443 }]

[[endpoints]]
id = "vpce-0e0000000000000e1"
owner = "111111111111"
vpc_id = "vpc-0c0000000000000c1"
service_id = "vpce-svc-0d0000000000000d1"
ip = "10.1.0.100"
ip_address_type = "dualstack"
ip6 = "fd00:c1::64"
[[endpoints]]
id = "vpce-0e0000000000000e3"
owner = "333333333333"
vpc_id = "vpc-0a0000000000000a1"
service_id = "vpce-svc-0d0000000000000d1"
ip = "10.3.0.100"
"#;

fn base_config() -> Config {
    static CONFIG_PARSED: OnceLock<Config> = OnceLock::new();
    CONFIG_PARSED
        .get_or_init(|| Config::from_toml_str(CONFIG).expect("the scenario configuration"))
        .clone()
}

/// The world a scenario starts from (setup bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setup {
    pub workers: u16,
    pub flow_capacity: usize,
    pub hold_capacity: usize,
    pub neighbour_capacity: usize,
    pub neighbours_known: bool,
    pub mtus: [u16; 2],
    pub mss_clamp: bool,
    pub start_ms: u64,
    pub alloc_fails: bool,
    pub tight_limits: bool,
}

impl Setup {
    pub fn decode(b: [u8; 2]) -> Setup {
        let (s, t) = (b[0], b[1]);
        Setup {
            workers: 1 + u16::from(s & 1),
            flow_capacity: [1024, 16, 64, 256][usize::from((s >> 1) & 3)],
            hold_capacity: [256, 8, 1, 0][usize::from((s >> 3) & 3)],
            neighbour_capacity: if s & 0x20 != 0 { 4 } else { 1024 },
            neighbours_known: s & 0x40 != 0,
            mtus: [[1500, 1500], [9000, 1500], [1500, 9000], [1280, 576]][usize::from(t & 3)],
            mss_clamp: t & 4 != 0,
            start_ms: if t & 8 != 0 { 1 << 40 } else { 0 },
            alloc_fails: t & 0x30 == 0x30,
            tight_limits: t & 0x40 != 0,
        }
    }
}

/// What a record does (`op % 16`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// A fresh packet from a host on the consumer's side.
    Consumer,
    /// A fresh IPv6 packet from a host on the consumer's side.
    Consumer6,
    /// A fresh packet from a host on the provider's side.
    Provider,
    /// The answer of the host a remembered output went to.
    Answer,
    /// An ICMP error about a remembered output.
    IcmpError,
    /// A fresh ARP packet.
    Arp,
    /// The clock moves on (then the store's timers run, then a poll).
    Clock,
    /// The workers' timer work, a few times.
    Poll,
    /// A management change through the store, published as a new snapshot.
    Control,
    /// A remembered input again (a retransmission, or on another worker).
    Replay,
    /// A usage report or a flow listing.
    Report,
    /// The following records' bytes as one frame.
    Raw,
    /// Many new connections or datagrams at once.
    Flood,
}

impl Op {
    pub fn of(op: u8) -> Op {
        match op % 16 {
            0 | 1 => Op::Consumer,
            2 => Op::Consumer6,
            3 => Op::Provider,
            4..=6 => Op::Answer,
            7 => Op::IcmpError,
            8 => Op::Arp,
            9 => Op::Clock,
            15 => Op::Flood,
            10 => Op::Poll,
            11 => Op::Control,
            12 => Op::Replay,
            13 => Op::Report,
            _ => Op::Raw,
        }
    }

    /// The byte [`Op::of`] maps to this op first.
    pub fn code(self) -> u8 {
        match self {
            Op::Consumer => 0,
            Op::Consumer6 => 2,
            Op::Provider => 3,
            Op::Answer => 4,
            Op::IcmpError => 7,
            Op::Arp => 8,
            Op::Clock => 9,
            Op::Poll => 10,
            Op::Control => 11,
            Op::Replay => 12,
            Op::Report => 13,
            Op::Raw => 14,
            Op::Flood => 15,
        }
    }

    fn sends_frames(self) -> bool {
        matches!(
            self,
            Op::Consumer
                | Op::Consumer6
                | Op::Provider
                | Op::Answer
                | Op::IcmpError
                | Op::Arp
                | Op::Replay
                | Op::Raw
                | Op::Flood
        )
    }
}

/// One decoded record; see the `World` methods for what each field means per op.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rec {
    pub op: u8,
    pub a: u8,
    pub b: u8,
    pub c: u8,
    pub seq: u32,
    pub ack: u32,
    pub len: u16,
    pub win: u16,
    pub ip: u8,
    pub l2: u8,
    pub damage: u8,
    pub x: u8,
    pub y: u8,
    pub z: u8,
    pub p2: u16,
}

impl Rec {
    pub fn decode(r: &[u8; RECORD]) -> Rec {
        let u16_at = |i: usize| u16::from_be_bytes([r[i], r[i + 1]]);
        let u32_at = |i: usize| u32::from_be_bytes([r[i], r[i + 1], r[i + 2], r[i + 3]]);
        Rec {
            op: r[0],
            a: r[1],
            b: r[2],
            c: r[3],
            seq: u32_at(4),
            ack: u32_at(8),
            len: u16_at(12),
            win: u16_at(14),
            ip: r[16],
            l2: r[17],
            damage: r[18],
            x: r[19],
            y: r[20],
            z: r[21],
            p2: u16_at(22),
        }
    }

    pub fn encode(&self) -> [u8; RECORD] {
        let mut r = [0u8; RECORD];
        r[0] = self.op;
        r[1] = self.a;
        r[2] = self.b;
        r[3] = self.c;
        r[4..8].copy_from_slice(&self.seq.to_be_bytes());
        r[8..12].copy_from_slice(&self.ack.to_be_bytes());
        r[12..14].copy_from_slice(&self.len.to_be_bytes());
        r[14..16].copy_from_slice(&self.win.to_be_bytes());
        r[16] = self.ip;
        r[17] = self.l2;
        r[18] = self.damage;
        r[19] = self.x;
        r[20] = self.y;
        r[21] = self.z;
        r[22..24].copy_from_slice(&self.p2.to_be_bytes());
        r
    }

    /// A record of `op` with every other field zero (the most common choice of each).
    pub fn new(op: Op) -> Rec {
        Rec {
            op: op.code(),
            ..Rec::default()
        }
    }

    fn batched(&self) -> bool {
        self.a & 0x80 != 0
    }

    /// The damage asked for: only when both top bits are set, so most frames are whole.
    fn damage(&self) -> u8 {
        if self.damage & 0xc0 == 0xc0 {
            self.damage & 0x3f
        } else {
            0
        }
    }

    /// The port pair (x, y) as one number.
    fn xy(&self) -> u16 {
        u16::from_be_bytes([self.x, self.y])
    }
}

/// Payload lengths beyond the directly encoded ones (around MTUs and beyond).
pub const BIG_LENGTHS: [usize; 16] = [
    0, 1, 100, 512, 536, 1000, 1400, 1432, 1452, 1460, 1472, 1480, 1500, 1600, 4000, 8972,
];

/// A payload length: `len` below 0x8000 gives 0..63; with only bit 15 set, the low 11
/// bits exactly (0..2047); with bits 15 and 14 set, one of [`BIG_LENGTHS`].
pub fn payload_len(len: u16) -> usize {
    if len & 0xc000 == 0xc000 {
        BIG_LENGTHS[usize::from(len & 15)]
    } else if len & 0x8000 != 0 {
        usize::from(len & 0x7ff)
    } else {
        usize::from(len & 0x3f)
    }
}

/// The `len` field that encodes `n` bytes exactly, if one does.
pub fn encode_len(n: usize) -> Option<u16> {
    if n < 64 {
        u16::try_from(n).ok()
    } else if n < 2048 {
        u16::try_from(n).ok().map(|v| v | 0x8000)
    } else {
        let i = BIG_LENGTHS.iter().position(|&b| b == n)?;
        u16::try_from(i).ok().map(|v| v | 0xc000)
    }
}

/// TCP option lists (`l2` bits 5-7).
const TCP_OPTIONS: [&[u8]; 8] = [
    &[],
    &[],
    // NOP NOP timestamps, as on Linux data segments.
    &[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0],
    // MSS 1460.
    &[2, 4, 0x05, 0xb4],
    // MSS 536, NOP, window scale 14.
    &[2, 4, 0x02, 0x18, 1, 3, 3, 14],
    // Linux's SYN: MSS 1460, SACK permitted, timestamps, NOP, window scale 7.
    &[
        2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
    ],
    // A zero option length.
    &[2, 0, 0, 0],
    // An option running past the header.
    &[2, 255, 0, 0],
];

/// The index in the TCP option table whose options are closest to `opts` (for seeds).
pub fn tcp_options_index(opts: &[u8]) -> u8 {
    let has = |kind: u8| {
        let mut i = 0;
        while i < opts.len() {
            match opts[i] {
                0 => return false,
                1 => i += 1,
                k if k == kind => return true,
                _ => i += usize::from(opts.get(i + 1).copied().unwrap_or(1).max(2)),
            }
        }
        false
    };
    match (has(2), has(3), has(8)) {
        (true, true, _) => 5,
        (true, false, _) => 3,
        (false, _, true) => 2,
        _ => 0,
    }
}

/// IPv4 options (`ip` bits 3-6).
fn ip_options(i: u8) -> Vec<u8> {
    match i {
        8 => vec![1, 1, 1, 0],
        // Record route with room for one address.
        9 => vec![7, 7, 4, 0, 0, 0, 0],
        // Timestamps, one slot.
        10 => vec![68, 8, 5, 0, 0, 0, 0, 0],
        // Loose and strict source routes via a target.
        11 => vec![131, 7, 4, 10, 2, 0, 11],
        12 => vec![137, 7, 4, 10, 2, 0, 11],
        // Router alert.
        13 => vec![148, 4, 0, 0],
        // Malformed: length 0, and a length running past the header.
        14 => vec![7, 0, 0, 0],
        15 => vec![68, 255, 0, 0],
        _ => Vec::new(),
    }
}

/// Sources no host can have (and one off-link address), picked by `y`.
fn martian(net: u32, y: u8) -> u32 {
    match y % 8 {
        0 => 0,
        1 => 0x7f00_0001,
        2 => 0xe000_0001,
        3 => 0xffff_ffff,
        4 => net | 255,
        5 => net,
        6 => 0xf000_0001,
        _ => 0x0001_0203,
    }
}

/// A host's MAC: locally administered, derived from its attachment's port and address.
pub fn host_mac(port: u16, ip: u32) -> [u8; 6] {
    let [_, b, c, d] = ip.to_be_bytes();
    let p = u8::try_from(port & 0x3f).unwrap_or(0);
    [0x02, 0x10 | p, 0, b, c, d]
}

fn hi16(v: u32) -> u16 {
    let [a, b, _, _] = v.to_be_bytes();
    u16::from_be_bytes([a, b])
}

fn lo16(v: u32) -> u16 {
    let [_, _, c, d] = v.to_be_bytes();
    u16::from_be_bytes([c, d])
}

/// A sequence-number change: mostly none, sometimes one off, or far out of any window.
fn delta(sel: u8, random: u32) -> u32 {
    match sel & 7 {
        4 => 1,
        5 => u32::MAX,
        6 => 0x8000_0000,
        7 => random,
        _ => 0,
    }
}

/// A frame the appliance sent, as read back for answers and errors.
#[derive(Debug, Clone)]
struct Sent {
    port: u16,
    bytes: Vec<u8>,
}

/// A frame fed to a worker.
#[derive(Debug, Clone)]
struct Fed {
    port: u16,
    worker: u16,
    bytes: Vec<u8>,
    clean: bool,
}

/// The fields of a remembered frame that answers need.
#[derive(Debug, Clone)]
struct Read {
    /// The appliance's MAC (the frame's source) and the frame's VLAN tags.
    mac: [u8; 6],
    tags: Vec<(u16, u16)>,
    l3: usize,
    kind: ReadKind,
}

#[derive(Debug, Clone)]
enum ReadKind {
    Arp {
        op: u16,
        spa: u32,
        tpa: u32,
    },
    Ip {
        src: u32,
        dst: u32,
        proto: u8,
        /// Ports (ICMP echo: the identifier both), TCP flags, seq, ack, segment length.
        sport: u16,
        dport: u16,
        flags: u8,
        seq: u32,
        ack: u32,
        seg_len: u32,
        icmp_type: u8,
    },
    Ip6(six::Read6),
}

fn read_frame(bytes: &[u8]) -> Option<Read> {
    let l2 = vlan::l2_header(bytes).ok()?;
    let mac = EthernetFrame::new_checked(bytes).ok()?.src_addr().0;
    let mut tags = Vec::new();
    let mut at = 12;
    while at + 4 <= l2.header_len - 2 {
        let tpid = u16::from_be_bytes([bytes[at], bytes[at + 1]]);
        let tci = u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]);
        tags.push((tpid, tci));
        at += 4;
    }
    let l3 = bytes.get(l2.header_len..)?;
    let kind = match l2.ethertype {
        EtherType::ARP => {
            let a = ArpPacket::new_checked(l3).ok()?;
            ReadKind::Arp {
                op: a.operation().0,
                spa: u32::from_be_bytes(a.source_protocol_addr_bytes()),
                tpa: u32::from_be_bytes(a.target_protocol_addr_bytes()),
            }
        }
        EtherType::IPV4 => {
            let ip = Ipv4Packet::new_checked(l3).ok()?;
            let (src, dst, proto) = (ip.src_addr_u32(), ip.dst_addr_u32(), ip.protocol().0);
            let l4 = ip.payload();
            let (mut sport, mut dport, mut flags, mut seq, mut ack, mut seg_len, mut icmp_type) =
                (0, 0, 0, 0, 0, 0, 0xff);
            match proto {
                6 => {
                    let t = TcpPacket::new_checked(l4).ok()?;
                    (sport, dport, flags) = (t.src_port(), t.dst_port(), t.flags().bits());
                    (seq, ack, seg_len) = (t.seq_number(), t.ack_number(), t.segment_len());
                }
                17 => {
                    let u = UdpPacket::new_checked(l4).ok()?;
                    (sport, dport) = (u.src_port(), u.dst_port());
                }
                1 => {
                    let i = Icmpv4Packet::new_checked(l4).ok()?;
                    icmp_type = i.msg_type().0;
                    (sport, dport) = (i.echo_ident(), i.echo_ident());
                    seq = u32::from(i.echo_seq_no());
                }
                _ => {}
            }
            ReadKind::Ip {
                src,
                dst,
                proto,
                sport,
                dport,
                flags,
                seq,
                ack,
                seg_len,
                icmp_type,
            }
        }
        EtherType::IPV6 => ReadKind::Ip6(six::read6(l3)?),
        _ => return None,
    };
    Some(Read {
        mac,
        tags,
        l3: l2.header_len,
        kind,
    })
}

macro_rules! stats {
    ($($(#[doc = $doc:literal])* $name:ident,)*) => {
        /// What the harness saw, besides the pipeline's own counters.
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub struct Stats {
            $($(#[doc = $doc])* pub $name: u64,)*
        }

        impl Stats {
            /// Named values, in declaration order.
            pub fn named(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($name), self.$name),)*]
            }

            pub fn add(&mut self, o: &Stats) {
                $(self.$name += o.$name;)*
            }
        }
    };
}

stats! {
    /// Records decoded.
    events,
    /// Frames fed to a worker (each frame of a burst counts).
    frames_in,
    /// `process_burst` calls with two frames or more.
    bursts,
    /// Answers built from a remembered output, and ICMP errors quoting one.
    answers,
    icmp_errors_built,
    /// Frames that left (Tx verdicts and emitted frames).
    frames_out,
    /// Tx verdicts that crossed from the consumer port to the provider port (forward
    /// translations) and back (reverse translations), and those that went back out of
    /// the port they came in on (ARP replies, echo replies, RSTs, ICMP errors).
    forward_tx,
    reverse_tx,
    local_tx,
    /// ICMP errors that crossed, each way.
    icmp_to_provider,
    icmp_to_consumer,
    /// Held packets that went out once their next hop resolved: IPv4 packets emitted
    /// while packets (ARP replies) were processed, and those emitted at a timer tick
    /// beyond the RSTs it originated.
    held_released,
    /// RSTs of ended flows emitted by timer work.
    emitted_in_poll,
    /// Packets handed to another worker.
    handoffs,
    /// Snapshots published, and management requests the store refused.
    snapshots,
    changes_refused,
    /// Usage reports taken and flow listings answered.
    reports,
    listings,
    /// Records with nothing to act on (no remembered frame of the kind wanted).
    skipped,
}

struct Burst {
    port: u16,
    worker: u16,
    frames: Vec<VecFrame>,
}

/// One scenario's appliance: pipelines, store, snapshot, clock, memory of frames.
pub struct World {
    setup: Setup,
    config: Config,
    store: Store,
    handles: Handles,
    snap: Snapshot,
    /// The state `snap` enforces.
    in_force: mgmt::model::State,
    generation: u64,
    pipes: Vec<Pipeline<VecFrame>>,
    now_ms: u64,
    outputs: VecDeque<Sent>,
    inputs: VecDeque<Fed>,
    owned: Owned,
    /// Every target of any snapshot of the run.
    targets: Vec<(std::net::IpAddr, u16)>,
    l4_clean: bool,
    reports_queue_full: bool,
    /// `PRIVLINK_SCENARIO_TRACE` set: every event and frame is printed (for triage).
    trace: bool,
    pending: Option<Burst>,
    listings: Vec<(u16, usize, Receiver<Vec<FlowInfo>>)>,
    pub stats: Stats,
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World")
            .field("setup", &self.setup)
            .field("now_ms", &self.now_ms)
            .field("generation", &self.generation)
            .field("pipes", &self.pipes)
            .finish_non_exhaustive()
    }
}

/// Runs a scenario: setup bytes, then records (module docs). Panics if an invariant breaks.
pub fn run(data: &[u8]) -> World {
    let mut setup = [0u8; 2];
    for (s, b) in setup.iter_mut().zip(data) {
        *s = *b;
    }
    let mut w = World::new(Setup::decode(setup));
    let mut records = data.get(2..).unwrap_or(&[]).chunks_exact(RECORD);
    let mut events = 0;
    while events < MAX_EVENTS {
        let Some(chunk) = records.next() else { break };
        let Ok(r) = <&[u8; RECORD]>::try_from(chunk) else {
            break;
        };
        events += 1;
        w.event(&Rec::decode(r), &mut records);
    }
    w.flush();
    w
}

impl World {
    pub fn new(setup: Setup) -> World {
        let mut config = base_config();
        if setup.mss_clamp {
            config.vpcs[0].mss_clamp = Some(1200);
            config.vpcs[1].mss_clamp = Some(1300);
        }
        if setup.neighbours_known {
            // IPv6 targets are known the only way IPv6 neighbours can be from the start.
            config.vpcs[1].static_neighbours6 = six::TARGETS6
                .iter()
                .map(|&ip| mgmt::model::StaticNeighbour6 {
                    ip: std::net::Ipv6Addr::from(ip),
                    mac: mgmt::net::MacAddr(six::host_mac6(PROVIDER_PORT, ip)),
                })
                .collect();
        }
        let (store, _) = Store::new(&config, None).expect("the scenario store");
        let mut handles = Handles::default();
        let snap = Snapshot::build(1, &config, &MACS, &setup.mtus, store.state(), &mut handles)
            .expect("the scenario snapshot");
        let mut settings = crate::daemon::pipeline_settings(&config, setup.workers);
        settings.flow_capacity = setup.flow_capacity;
        settings.hold_capacity = setup.hold_capacity;
        settings.neighbour_capacity = setup.neighbour_capacity;
        settings.flow_hash_seed = 0;
        settings.seed = Some(0x5eed);
        if setup.tight_limits {
            settings.limits = crate::tables::limits::FlowLimits {
                flows_per_endpoint: 12,
                half_open_per_endpoint: 6,
                flows_per_client: 8,
                half_open_per_client: 4,
            };
        }
        let table = SharedNeighbours::new(settings.neighbour_capacity, settings.neighbour_timers);
        let pipes = (0..setup.workers)
            .map(|id| {
                let mut n = 0u32;
                let fails = setup.alloc_fails;
                let alloc = move || {
                    n = n.wrapping_add(1);
                    (!fails || !n.is_multiple_of(3)).then(|| VecFrame::new(&[]))
                };
                let table = table.clone();
                Pipeline::with_neighbour_table(
                    id,
                    settings.clone(),
                    Box::new(alloc),
                    &snap,
                    table.clone(),
                )
            })
            .collect();
        let mut owned = Owned::default();
        add_owned(&snap, &mut owned);
        let mut targets = Vec::new();
        add_targets(&snap, &mut targets);
        let mut w = World {
            setup,
            config,
            in_force: store.state().clone(),
            store,
            handles,
            snap,
            generation: 1,
            pipes,
            now_ms: setup.start_ms,
            outputs: VecDeque::with_capacity(REMEMBER),
            inputs: VecDeque::with_capacity(REMEMBER),
            owned,
            targets,
            l4_clean: true,
            reports_queue_full: false,
            trace: std::env::var_os("PRIVLINK_SCENARIO_TRACE").is_some(),
            pending: None,
            listings: Vec::new(),
            stats: Stats::default(),
        };
        if setup.neighbours_known {
            for (att, ip) in [
                (0u16, CONSUMER_NET | 10),
                (1, PROVIDER_NET | 11),
                (1, PROVIDER_NET | 12),
                (2, OTHER_NET | 10),
            ] {
                let port = w.snap.attachment(att).map_or(0, |a| a.port);
                let news = crate::graph::NeighbourNews {
                    attachment: att,
                    ip,
                    mac: host_mac(port, ip),
                };
                // One table for all workers: learning it once teaches them all.
                w.pipes[0].learn_remote(&w.snap, news, w.now_ms);
            }
        }
        w
    }

    /// The pipelines' counters, summed (with the gauges brought up to date).
    pub fn counters(&mut self) -> Counters {
        let mut total = Counters::default();
        for p in &mut self.pipes {
            p.sync_gauges();
            total.add(p.counters());
        }
        total
    }

    pub fn pipes(&self) -> &[Pipeline<VecFrame>] {
        &self.pipes
    }

    pub fn snapshot(&self) -> &Snapshot {
        &self.snap
    }

    fn unix(&self) -> u64 {
        UNIX_EPOCH_OFFSET + self.now_ms / 1000
    }

    fn worker_of(&self, r: &Rec) -> u16 {
        u16::from((r.a >> 6) & 1) % self.setup.workers
    }

    fn event(&mut self, r: &Rec, more: &mut std::slice::ChunksExact<'_, u8>) {
        self.stats.events += 1;
        let op = Op::of(r.op);
        if self.trace {
            eprintln!("@{} ms {op:?} {r:?}", self.now_ms);
        }
        if !(op.sends_frames() && r.batched()) {
            self.flush();
        }
        match op {
            Op::Consumer => self.fresh(r, false),
            Op::Consumer6 => self.fresh6(r, false),
            // `l2` bits 0-1 (the consumer side's tagging) both set: IPv6 from the
            // provider's VPC.
            Op::Provider if r.l2 & 3 == 3 => self.fresh6(r, true),
            Op::Provider => self.fresh(r, true),
            Op::Answer => self.answer(r),
            Op::IcmpError => self.icmp_error(r),
            Op::Arp => self.arp(r),
            Op::Clock => self.clock(r),
            Op::Poll => {
                for _ in 0..=(r.b % 8) {
                    self.poll();
                }
            }
            Op::Control => self.control(r),
            Op::Replay => self.replay(r),
            Op::Report => self.report(r),
            Op::Raw => self.raw(r, more),
            Op::Flood => self.flood(r),
        }
    }

    /// The port, network and VLAN tags of a fresh frame: the provider port, or the
    /// consumer port untagged, on VLAN 300 (the third VPC) when `l2` bits 0-1 are 2, or
    /// oddly tagged (priority tag, VLAN 4095, an unattached VLAN, QinQ) when they are 3.
    fn side(&self, provider: bool, r: &Rec) -> (u16, u32, Vec<(u16, u16)>) {
        if provider {
            return (PROVIDER_PORT, PROVIDER_NET, Vec::new());
        }
        match r.l2 & 3 {
            2 => (CONSUMER_PORT, OTHER_NET, vec![(0x8100, OTHER_VLAN)]),
            3 => {
                let tags = match r.y % 4 {
                    0 => vec![(0x8100, 0x2000)],
                    1 => vec![(0x8100, 4095)],
                    2 => vec![(0x8100, 5)],
                    _ => vec![(0x88a8, 7), (0x8100, OTHER_VLAN)],
                };
                (CONSUMER_PORT, CONSUMER_NET, tags)
            }
            _ => (CONSUMER_PORT, CONSUMER_NET, Vec::new()),
        }
    }

    /// A fresh IPv4 packet (ops 0-3). `a` bits 0-2 the source and 3-5 the destination:
    /// consumer side sources .10 (three of eight), .11, a martian (`y`), the appliance's
    /// own .1, the endpoint .100, an off-link 192.0.2.`y`; destinations the endpoint .100
    /// (four of eight), .1, .101 (an endpoint a change may create), an unknown .200, the
    /// SNAT address 10.2.0.100. Provider side sources targets .11 (two), .12, .13, a
    /// non-target .50, a martian, the SNAT address .100, .1; destinations the SNAT address
    /// .100 (four), .1, .101, .200, the endpoint 10.1.0.100. `b` bits 0-1 the protocol
    /// (TCP, UDP, ICMP, other = `c`), 2-4 the destination port, 5-7 the source port (see
    /// [`World::ports`]); TCP: `c` flags, `seq`, `ack`, `win`, `l2` bits 5-7 options;
    /// UDP: `l2` bit 3 no checksum; ICMP: [`World::fresh_icmp`]. `len` the payload length
    /// ([`payload_len`]); `ip`, `l2`, `damage`: [`World::send_ip`].
    fn fresh(&mut self, r: &Rec, provider: bool) {
        let (port, net, tags) = self.side(provider, r);
        let host = |i: u8| net | u32::from(i);
        let src = if provider {
            match r.a & 7 {
                0 | 1 => host(11),
                2 => host(12),
                3 => host(13),
                4 => host(50),
                5 => martian(net, r.y),
                6 => host(100),
                _ => host(1),
            }
        } else {
            match r.a & 7 {
                0..=2 => host(10),
                3 => host(11),
                4 => martian(net, r.y),
                5 => host(1),
                6 => host(100),
                _ => 0xc000_0200 | u32::from(r.y),
            }
        };
        let dst = match (r.a >> 3) & 7 {
            0..=3 => host(100),
            4 => host(1),
            5 => host(101),
            6 => host(200),
            _ if provider => CONSUMER_NET | 100,
            _ => PROVIDER_NET | 100,
        };
        let (sport, dport) = self.ports(r, provider, src);
        let len = payload_len(r.len);
        let (proto, l4) = match r.b & 3 {
            0 => (
                6,
                packets::tcp(&fresh_tcp(r, (sport, dport), len), src, dst),
            ),
            1 => (17, packets::udp(sport, dport, len, src, dst, r.l2 & 8 != 0)),
            2 => (1, fresh_icmp(r, src, dst, len)),
            _ => (r.c, vec![0x5a; len]),
        };
        let eth = Eth {
            dst: MACS[usize::from(port)],
            src: host_mac(port, src),
            tags,
        };
        self.send_ip(port, eth, r, Ip::new(src, dst, proto), l4);
    }

    /// Source and destination ports of a fresh TCP/UDP packet. Consumer side: sources
    /// 40000-40003, 40000 + `y`, 0, 53, `x y`; destinations 80 (three), 9000 (two), 81, 0,
    /// `p2`. Provider side: sources 8080 (two), 9000 (two), 80, 0, 53, `x y`; destinations
    /// the SNAT port of the newest packet sent to this source (three of eight; 1024 if
    /// none), 1024 + `y`, 1025, 0, 65535, `p2`.
    fn ports(&self, r: &Rec, provider: bool, src: u32) -> (u16, u16) {
        let s = (r.b >> 5) & 7;
        let d = (r.b >> 2) & 7;
        if provider {
            let sport = [8080, 8080, 9000, 9000, 80, 0, 53, r.xy()][usize::from(s)];
            let dport = match d {
                0..=2 => self.snat_port_towards(src, sport).unwrap_or(1024),
                3 => 1024 + u16::from(r.y),
                4 => 1025,
                5 => 0,
                6 => 65535,
                _ => r.p2,
            };
            (sport, dport)
        } else {
            let sport = [
                40000,
                40001,
                40002,
                40003,
                40000 + u16::from(r.y),
                0,
                53,
                r.xy(),
            ][usize::from(s)];
            let dport = [80, 80, 80, 9000, 9000, 81, 0, r.p2][usize::from(d)];
            (sport, dport)
        }
    }

    /// The source port of the newest packet the appliance sent to `ip:port` on the
    /// provider port (the flow's SNAT port), so a target can talk in a flow it has not
    /// answered yet.
    fn snat_port_towards(&self, ip: u32, port: u16) -> Option<u16> {
        self.outputs.iter().rev().find_map(|s| {
            if s.port != PROVIDER_PORT {
                return None;
            }
            match read_frame(&s.bytes)?.kind {
                ReadKind::Ip {
                    dst,
                    dport,
                    sport,
                    proto: 6 | 17,
                    ..
                } if dst == ip && dport == port => Some(sport),
                _ => None,
            }
        })
    }

    /// Sends an IPv4 packet with `l4` after applying the record's IP and L2 choices: `ip`
    /// bits 0-2 the TTL (64 five times of eight, 1, 0, 2), bits 3-6 the options
    /// ([`ip_options`]: none for 0-7), bit 7 clears DF; `l2` bit 2 pads the frame to 60
    /// bytes (or adds a 4-byte trailer), bit 4 sets DSCP/ECN. `damage` (when its top two
    /// bits are set): bit 0 a wrong IP checksum, 1 a wrong L4 checksum, 2 cuts `x % 64 + 1`
    /// bytes off the end, 3 a fragment (with `y` bit 2 the packet cut in two fragments, see
    /// [`send_fragmented`](Self::send_fragmented); else MF when `y` is odd, an offset when
    /// even), 4 a wrong
    /// destination MAC (broadcast when `y` bit 1 is set), 5 a wrong EtherType or version
    /// (`y % 4`: IPv6, a QinQ tag, 0x1234, IP version 6).
    fn send_ip(&mut self, port: u16, mut eth: Eth, r: &Rec, mut ip: Ip, mut l4: Vec<u8>) {
        let dmg = r.damage();
        ip.ttl = [64, 64, 64, 64, 64, 1, 0, 2][usize::from(r.ip & 7)];
        ip.options = ip_options((r.ip >> 3) & 15);
        ip.df = r.ip & 0x80 == 0;
        if r.l2 & 0x10 != 0 {
            ip.tos = 0xbb;
        }
        let mut clean = true;
        if dmg & 2 != 0 {
            packets::spoil_l4_checksum(ip.proto, &mut l4);
            clean = false;
        }
        if dmg & 8 != 0 && r.y & 4 != 0 && l4.len() > 8 {
            return self.send_fragmented(port, &eth, r, ip, &l4, clean);
        }
        if dmg & 8 != 0 {
            if r.y & 1 != 0 {
                ip.mf = true;
            } else {
                ip.frag_offset = 8 * (1 + u16::from(r.y >> 1));
            }
        }
        let mut pkt = packets::ipv4(&ip, &l4);
        if dmg & 1 != 0 {
            packets::spoil_ip_checksum(&mut pkt);
        }
        let mut ethertype = 0x0800;
        if dmg & 0x10 != 0 {
            eth.dst = if r.y & 2 != 0 {
                BROADCAST
            } else {
                STRANGER_MAC
            };
        }
        if dmg & 0x20 != 0 {
            match r.y % 4 {
                0 => ethertype = 0x86dd,
                1 => eth.tags.insert(0, (0x88a8, 7)),
                2 => ethertype = 0x1234,
                _ => pkt[0] = 0x65,
            }
        }
        let mut f = packets::frame(&eth, ethertype, &pkt);
        if dmg & 4 != 0 {
            let cut = (usize::from(r.x) % 64 + 1).min(f.len() - 1);
            f.truncate(f.len() - cut);
            // Padding may make the cut packet whole again, with zeros where its last
            // bytes were: a wrong L4 checksum.
            clean = false;
        }
        pad(&mut f, r);
        let worker = self.worker_of(r);
        self.enqueue(port, worker, r.batched(), f, clean);
    }

    /// [`send_ip`](Self::send_ip)'s packet as a datagram of two fragments, cut after
    /// `8 * (1 + x % 4)` bytes of `l4` (8 bytes of a TCP header: a tiny first fragment),
    /// with identification `z`; in order, or the second first when `y` bit 3 is set.
    fn send_fragmented(&mut self, port: u16, eth: &Eth, r: &Rec, ip: Ip, l4: &[u8], clean: bool) {
        let cut = (8 * (1 + usize::from(r.x % 4))).min((l4.len() - 1) / 8 * 8);
        let (head, tail) = l4.split_at(cut);
        let mut first = ip.clone();
        (first.ident, first.df, first.mf) = (u16::from(r.z), false, true);
        let mut second = first.clone();
        second.mf = false;
        second.frag_offset = u16::try_from(cut).unwrap_or(8);
        let mut pkts = [packets::ipv4(&first, head), packets::ipv4(&second, tail)];
        if r.y & 8 != 0 {
            pkts.reverse();
        }
        let worker = self.worker_of(r);
        for (i, pkt) in pkts.iter().enumerate() {
            let mut f = packets::frame(eth, 0x0800, pkt);
            pad(&mut f, r);
            self.enqueue(port, worker, i > 0 || r.batched(), f, clean);
        }
    }

    /// The answer of the host a remembered output went to (ops 4-6). `b`: which output
    /// ([`World::pick_output`]). An ARP request is answered with a reply (`c % 8` 0-4;
    /// 5 a broadcast reply, 6 a gratuitous request, 7 a reply with another MAC). A TCP
    /// segment, by `c % 8`: 0 the natural next segment (SYN → SYN-ACK, SYN-ACK → ACK,
    /// FIN → FIN-ACK, else an ACK), 1 the same carrying `len` bytes, 2 ACK+PSH with data,
    /// 3 FIN-ACK, 4 RST, 5 RST-ACK, 6 SYN, 7 flags `x`; SYN-carrying answers start at
    /// `seq`, others at the output's acknowledgement; both numbers are then moved by
    /// [`delta`] (`z` bits 0-2 and 3-5), unless `z` bit 6 asks for `seq` and `ack` as
    /// they are (seeds from captures). UDP is answered with `len` bytes, an echo reply
    /// with the next echo request, anything else with an echo request.
    fn answer(&mut self, r: &Rec) {
        let Some((port, p, _)) = self.pick_output(r.b) else {
            self.stats.skipped += 1;
            return;
        };
        self.stats.answers += 1;
        if let ReadKind::Ip6(p6) = &p.kind {
            return self.answer6(r, port, p6);
        }
        let ReadKind::Ip {
            src,
            dst,
            proto,
            sport,
            dport,
            flags,
            seq,
            ack,
            seg_len,
            icmp_type,
        } = p.kind
        else {
            return self.answer_arp(r, port, &p);
        };
        let eth = Eth {
            dst: p.mac,
            src: host_mac(port, dst),
            tags: p.tags.clone(),
        };
        let len = payload_len(r.len);
        let (proto, l4) = match proto {
            6 => {
                const FIN: u8 = 0x01;
                const SYN: u8 = 0x02;
                const RST: u8 = 0x04;
                const PSH: u8 = 0x08;
                const ACK: u8 = 0x10;
                let natural = if flags & SYN != 0 && flags & ACK == 0 {
                    SYN | ACK
                } else if flags & FIN != 0 {
                    FIN | ACK
                } else {
                    ACK
                };
                let (fl, data) = match r.c % 8 {
                    0 => (natural, 0),
                    1 => (natural, len),
                    2 => (ACK | PSH, len),
                    3 => (FIN | ACK, 0),
                    4 => (RST, 0),
                    5 => (RST | ACK, 0),
                    6 => (SYN, 0),
                    _ => (r.x, len),
                };
                let start = if fl & SYN != 0 || flags & ACK == 0 {
                    r.seq
                } else {
                    ack
                };
                let (seq, ack) = if r.z & 0x40 != 0 {
                    (r.seq, r.ack)
                } else {
                    (
                        start.wrapping_add(delta(r.z, r.seq)),
                        seq.wrapping_add(seg_len)
                            .wrapping_add(delta(r.z >> 3, r.ack)),
                    )
                };
                let t = Tcp {
                    sport: dport,
                    dport: sport,
                    seq,
                    ack,
                    flags: fl,
                    window: r.win,
                    options: TCP_OPTIONS[usize::from(r.l2 >> 5)].to_vec(),
                    payload_len: data,
                };
                (6, packets::tcp(&t, dst, src))
            }
            17 => (17, packets::udp(dport, sport, len, dst, src, r.l2 & 8 != 0)),
            _ if icmp_type == 0 => (
                1,
                packets::echo(true, sport, lo16(seq).wrapping_add(1), len),
            ),
            _ => (1, packets::echo(true, hi16(r.seq), lo16(r.seq), len)),
        };
        self.send_ip(port, eth, r, Ip::new(dst, src, proto), l4);
    }

    fn answer_arp(&mut self, r: &Rec, port: u16, p: &Read) {
        let ReadKind::Arp { op: 1, spa, tpa } = p.kind else {
            self.stats.skipped += 1;
            return;
        };
        let mut mac = host_mac(port, tpa);
        let (op, eth_dst, tha, target) = match r.c % 8 {
            5 => (2, BROADCAST, p.mac, spa),
            6 => (1, BROADCAST, [0; 6], tpa),
            7 => {
                mac[5] ^= 0x80;
                (2, p.mac, p.mac, spa)
            }
            _ => (2, p.mac, p.mac, spa),
        };
        let arp = packets::arp(op, mac, tpa, tha, target);
        let eth = Eth {
            dst: eth_dst,
            src: mac,
            tags: p.tags.clone(),
        };
        let mut f = packets::frame(&eth, 0x0806, &arp);
        pad(&mut f, r);
        let worker = self.worker_of(r);
        self.enqueue(port, worker, r.batched(), f, true);
    }

    /// An output to answer, by `b`: bits 0-4 how many matching outputs back (0: the
    /// newest); bits 5-6 which: any, those sent on the consumer port, on the provider
    /// port, ARP requests; bit 7 (with bits 5-6 = 1 or 2) only UDP, else only TCP.
    fn pick_output(&self, b: u8) -> Option<(u16, Read, &[u8])> {
        let back = usize::from(b & 31);
        let filter = (b >> 5) & 3;
        let proto = if b & 0x80 != 0 { 17 } else { 6 };
        self.outputs
            .iter()
            .rev()
            .filter_map(|s| Some((s.port, read_frame(&s.bytes)?, &s.bytes[..])))
            .filter(|(port, read, _)| match (filter, &read.kind) {
                (0, _) => true,
                (3, ReadKind::Arp { op, .. }) => *op == 1,
                (1 | 2, ReadKind::Ip { proto: p, .. }) => {
                    *port == u16::from(filter - 1) && *p == proto
                }
                (1 | 2, ReadKind::Ip6(s)) => *port == u16::from(filter - 1) && s.proto == proto,
                _ => false,
            })
            .nth(back)
    }

    /// An ICMP error about a remembered IPv4 output (op 7), sent back to its source. `b`:
    /// which output ([`World::pick_output`]); `c` bits 0-1 the reporter (the output's
    /// destination twice, a router .254 on that network, the output's own source), bits
    /// 2-4 type and code (port unreachable twice, fragmentation needed with next-hop MTU
    /// `win`, host unreachable, time exceeded, administratively prohibited, parameter
    /// problem, redirect); `x % 8` how much is quoted (header + 8 bytes for 0-4, all of it
    /// up to 548 bytes, 20 bytes, header + 4 bytes); `x` bit 6 spoils the quoted header's
    /// checksum.
    fn icmp_error(&mut self, r: &Rec) {
        let Some((port, p, bytes)) = self.pick_output(r.b) else {
            self.stats.skipped += 1;
            return;
        };
        if let ReadKind::Ip6(p6) = &p.kind {
            let original = bytes[p.l3..].to_vec();
            return self.icmp_error6(r, port, p6, &original);
        }
        let ReadKind::Ip { src, dst, .. } = p.kind else {
            self.stats.skipped += 1;
            return;
        };
        let original = bytes[p.l3..].to_vec();
        self.stats.icmp_errors_built += 1;
        let reporter = match r.c & 3 {
            0 | 1 => dst,
            2 => (src & 0xffff_ff00) | 254,
            _ => src,
        };
        let header_len = usize::from(original[0] & 0x0f) * 4;
        let quoted = match r.x % 8 {
            0..=4 => header_len + 8,
            5 => 548,
            6 => 20,
            _ => header_len + 4,
        };
        let mut quote = original[..quoted.min(original.len())].to_vec();
        if r.x & 0x40 != 0 {
            packets::spoil_ip_checksum(&mut quote);
        }
        let [mtu_hi, mtu_lo] = r.win.to_be_bytes();
        let (t, code, rest) = match (r.c >> 2) & 7 {
            0 | 1 => (3, 3, [0; 4]),
            2 => (3, 4, [0, 0, mtu_hi, mtu_lo]),
            3 => (3, 1, [0; 4]),
            4 => (11, 0, [0; 4]),
            5 => (3, 13, [0; 4]),
            6 => (12, 0, [20, 0, 0, 0]),
            _ => (5, 1, reporter.to_be_bytes()),
        };
        let msg = packets::icmp(t, code, rest, &quote);
        let eth = Eth {
            dst: p.mac,
            src: host_mac(port, reporter),
            tags: p.tags,
        };
        self.send_ip(port, eth, r, Ip::new(reporter, src, 1), msg);
    }

    /// A fresh ARP packet (op 8). `a` bits 0-1 the side (consumer, VLAN 300, provider
    /// twice), bit 2 a reply (else a request), bits 3-5 the sender (.10, .11, .12, .13,
    /// the appliance's .1, .100, 0.0.0.0, off-link); `b` bits 0-2 the address asked for
    /// (.1, .100, .101, the sender's own: gratuitous, .50, .11, off-link, .1), bits 3-4
    /// the destination MAC (broadcast twice, ours, another), bits 5-7 malformations (none
    /// for 0-4, hardware type 6, protocol length 6, cut to 20 bytes); `c` bits 0-1 the
    /// sender MAC (the host's twice, multicast, zero).
    fn arp(&mut self, r: &Rec) {
        let (port, net, tags) = match r.a & 3 {
            0 => (CONSUMER_PORT, CONSUMER_NET, Vec::new()),
            1 => (CONSUMER_PORT, OTHER_NET, vec![(0x8100, OTHER_VLAN)]),
            _ => (PROVIDER_PORT, PROVIDER_NET, Vec::new()),
        };
        let offlink = 0xc000_0201;
        let sender = match (r.a >> 3) & 7 {
            6 => 0,
            7 => offlink,
            i => net | [10, 11, 12, 13, 1, 100][usize::from(i)],
        };
        let target = match r.b & 7 {
            0 | 7 => net | 1,
            1 => net | 100,
            2 => net | 101,
            3 => sender,
            4 => net | 50,
            5 => net | 11,
            _ => offlink,
        };
        let ours = MACS[usize::from(port)];
        let eth_dst = [BROADCAST, BROADCAST, ours, STRANGER_MAC][usize::from((r.b >> 3) & 3)];
        let sha = [
            host_mac(port, sender),
            host_mac(port, sender),
            [0x01, 0, 0x5e, 0, 0, 1],
            [0; 6],
        ][usize::from(r.c & 3)];
        let reply = r.a & 4 != 0;
        let tha = if reply { ours } else { [0; 6] };
        let mut pkt = packets::arp(if reply { 2 } else { 1 }, sha, sender, tha, target);
        match r.b >> 5 {
            5 => pkt[1] = 6,
            6 => pkt[5] = 6,
            7 => pkt.truncate(20),
            _ => {}
        }
        let eth = Eth {
            dst: eth_dst,
            src: host_mac(port, sender),
            tags,
        };
        let mut f = packets::frame(&eth, 0x0806, &pkt);
        pad(&mut f, r);
        let worker = self.worker_of(r);
        self.enqueue(port, worker, r.batched(), f, true);
    }

    /// The clock moves on (op 9, 15) by `b >> 2` ms, tenths of seconds or seconds (`b`
    /// bits 0-1 = 0, 1, 2), or by a timeout-sized jump (3: 121, 301, 351, 601, 3600, 21,
    /// 5, 1 s); the store's timers run (draining targets go); then every worker polls
    /// unless `c` bit 0 is set (so packets meet expired flows before the timers do).
    fn clock(&mut self, r: &Rec) {
        let n = u64::from(r.b >> 2);
        let ms = match r.b & 3 {
            0 => n,
            1 => n * 100,
            2 => n * 1000,
            _ => [
                121_000, 301_000, 351_000, 601_000, 3_600_000, 21_000, 5_000, 1_000,
            ][usize::from(r.b >> 2) % 8],
        };
        self.now_ms += ms;
        if self.store.tick(self.unix()) {
            self.publish();
        }
        if r.c & 1 == 0 {
            self.poll();
        }
    }

    /// Timer work on every worker, then what the worker loop does after it: emitted frames
    /// leave, news spreads, finished reports are taken (or given back while the
    /// management thread's queue is full) and listings answered.
    fn poll(&mut self) {
        let rsts = self.rsts();
        for p in &mut self.pipes {
            p.poll(&self.snap, self.now_ms);
        }
        self.after(false, rsts);
        for (id, p) in (0u16..).zip(self.pipes.iter_mut()) {
            if let Some(rep) = p.take_report() {
                assert_eq!(rep.worker, id, "a report names the worker that made it");
                if self.reports_queue_full {
                    p.put_back_report(rep);
                } else {
                    self.stats.reports += 1;
                }
            }
        }
        self.check_listings();
    }

    /// A management change (op 11), `b % 16`: reject the endpoint, accept it, deregister
    /// target .11, .12, register both back, register .13 (with `b` bit 4, the IPv6
    /// targets fd00:b1::11 and so on of the NAT66 listeners), move the store's clock an hour
    /// on (draining targets go), admit only 10.1.0.11 by security group, reset the
    /// endpoint's groups and policy, a policy that allows only port 9000, delete the
    /// endpoint, create one at 10.1.0.101, add SNAT address 10.2.0.101, remove the UDP
    /// listener, add it back, revoke the consumer's permission. Then, if the store
    /// changed, a new snapshot is published.
    fn control(&mut self, r: &Rec) {
        let udp_targets =
            json!([{"Id": "10.2.0.11", "Port": 9000}, {"Id": "10.2.0.12", "Port": 9000}]);
        let targets = |ips: &[&str], port: u16| -> Value {
            Value::Array(
                ips.iter()
                    .map(|ip| json!({"Id": ip, "Port": port}))
                    .collect(),
            )
        };
        // `b` bit 4: the NAT66 listeners' IPv6 targets instead (.11 is fd00:b1::11).
        let six = r.b & 0x10 != 0;
        let register = |op: &str, ips: &[&str]| -> Vec<(String, Value)> {
            if six {
                let ips: Vec<String> = ips
                    .iter()
                    .map(|ip| format!("fd00:b1::{}", ip.rsplit('.').next().unwrap_or("0")))
                    .collect();
                let ips: Vec<&str> = ips.iter().map(String::as_str).collect();
                return vec![
                    (
                        op.into(),
                        json!({"ServiceId": SERVICE, "Protocol": "tcp", "Port": 443, "Targets": targets(&ips, 8443)}),
                    ),
                    (
                        op.into(),
                        json!({"ServiceId": SERVICE, "Protocol": "udp", "Port": 9443, "Targets": targets(&ips, 8443)}),
                    ),
                ];
            }
            vec![
                (
                    op.into(),
                    json!({"ServiceId": SERVICE, "Protocol": "tcp", "Port": 80, "Targets": targets(ips, 8080)}),
                ),
                (
                    op.into(),
                    json!({"ServiceId": SERVICE, "Protocol": "udp", "Port": 9000, "Targets": targets(ips, 9000)}),
                ),
            ]
        };
        let one = |op: &str, args: Value| vec![(op.to_owned(), args)];
        let requests: Vec<(String, Value)> = match r.b % 16 {
            0 => one(
                "reject-vpc-endpoint-connections",
                json!({"ServiceId": SERVICE, "VpcEndpointIds": [ENDPOINT]}),
            ),
            1 => one(
                "accept-vpc-endpoint-connections",
                json!({"ServiceId": SERVICE, "VpcEndpointIds": [ENDPOINT]}),
            ),
            2 => register("deregister-targets", &["10.2.0.11"]),
            3 => register("deregister-targets", &["10.2.0.12"]),
            4 => register("register-targets", &["10.2.0.11", "10.2.0.12"]),
            5 => register("register-targets", &["10.2.0.13"]),
            6 => {
                if self.store.tick(self.unix() + 3600) {
                    self.publish();
                }
                return;
            }
            7 => return self.restrict_by_group(),
            8 => {
                let groups: Vec<String> = self
                    .store
                    .state()
                    .endpoints
                    .iter()
                    .filter(|e| e.id.to_string() == ENDPOINT)
                    .flat_map(|e| e.security_group_ids.iter().map(|g| g.to_string()))
                    .collect();
                let mut v = one(
                    "modify-vpc-endpoint",
                    json!({"VpcEndpointId": ENDPOINT, "ResetPolicy": true}),
                );
                if !groups.is_empty() {
                    v.push((
                        "modify-vpc-endpoint".into(),
                        json!({"VpcEndpointId": ENDPOINT, "RemoveSecurityGroupIds": groups}),
                    ));
                }
                v
            }
            9 => one(
                "modify-vpc-endpoint",
                json!({"VpcEndpointId": ENDPOINT, "PolicyDocument": {"Statement": [
                    {"Effect": "Allow", "Principal": "*", "Port": [9000]}]}}),
            ),
            10 => one(
                "delete-vpc-endpoints",
                json!({"VpcEndpointIds": [ENDPOINT]}),
            ),
            11 => one(
                "create-vpc-endpoint",
                json!({"VpcId": CONSUMER_VPC, "IpAddress": "10.1.0.101",
                       "ServiceName": format!("com.privlink.vpce.local.{SERVICE}")}),
            ),
            12 => one(
                "modify-vpc-endpoint-service-configuration",
                json!({"ServiceId": SERVICE, "AddSnatAddresses": ["10.2.0.101"]}),
            ),
            13 => one(
                "modify-vpc-endpoint-service-configuration",
                json!({"ServiceId": SERVICE, "RemoveListeners": [{"Protocol": "udp", "Port": 9000}]}),
            ),
            14 => one(
                "modify-vpc-endpoint-service-configuration",
                json!({"ServiceId": SERVICE, "AddListeners": [{"Protocol": "udp", "Port": 9000, "Targets": udp_targets}]}),
            ),
            _ => one(
                "modify-vpc-endpoint-service-permissions",
                json!({"ServiceId": SERVICE, "RemoveAllowedPrincipals": ["111111111111"]}),
            ),
        };
        let mut changed = false;
        for (op, args) in requests {
            changed |= self.request(&op, &args).is_some();
        }
        if changed {
            self.publish();
        }
    }

    /// One request as the admin; the response if it changed the state.
    fn request(&mut self, op: &str, args: &Value) -> Option<Value> {
        match self.store.handle(&Caller::admin(), op, args, self.unix()) {
            Ok(out) if out.next.is_some() => Some(out.response),
            Ok(_) => None,
            Err(_) => {
                self.stats.changes_refused += 1;
                None
            }
        }
    }

    fn restrict_by_group(&mut self) {
        let Some(created) = self.request(
            "create-security-group",
            &json!({"VpcId": CONSUMER_VPC, "GroupName": format!("g{}", self.generation)}),
        ) else {
            return;
        };
        let Some(group) = created["GroupId"].as_str().map(str::to_owned) else {
            return;
        };
        self.request(
            "authorize-security-group-ingress",
            &json!({"GroupId": group, "IpPermissions": [{"IpProtocol": "tcp", "FromPort": 80,
                    "ToPort": 80, "IpRanges": [{"CidrIp": "10.1.0.11/32"}]}]}),
        );
        self.request(
            "modify-vpc-endpoint",
            &json!({"VpcEndpointId": ENDPOINT, "AddSecurityGroupIds": [group]}),
        );
        self.publish();
    }

    /// Makes the snapshot of the store's state from the one in force and what the change
    /// touched, as the management thread does, checks it against a whole build, and
    /// publishes it.
    fn publish(&mut self) {
        self.generation += 1;
        let state = self.store.state();
        let change = Change::from_touched(&mgmt::store::touched(&self.in_force, state));
        let snap = Snapshot::update(
            &self.snap,
            self.generation,
            &self.config,
            &MACS,
            &self.setup.mtus,
            state,
            &change,
            &mut self.handles,
            &HashMap::new(),
        )
        .unwrap_or_else(|e| panic!("the store accepted a state the data plane cannot build: {e}"));
        let whole = Snapshot::build(
            self.generation,
            &self.config,
            &MACS,
            &self.setup.mtus,
            state,
            &mut self.handles,
        )
        .unwrap_or_else(|e| panic!("a whole build failed where an update did not: {e}"));
        let differences = snap.differences(&whole);
        assert!(
            differences.is_empty(),
            "the snapshot made from the last one ({change:?}) is not the whole build: {differences:#?}"
        );
        self.in_force = state.clone();
        self.snap = snap;
        for p in &mut self.pipes {
            p.on_snapshot(&self.snap);
        }
        add_owned(&self.snap, &mut self.owned);
        add_targets(&self.snap, &mut self.targets);
        self.stats.snapshots += 1;
    }

    /// A remembered input again (op 12): `b` how many back; `c` bit 0 to the other
    /// worker, bit 1 twice in one burst.
    fn replay(&mut self, r: &Rec) {
        let n = self.inputs.len();
        if n == 0 {
            self.stats.skipped += 1;
            return;
        }
        let fed = self.inputs[n - 1 - usize::from(r.b) % n].clone();
        let worker = if r.c & 1 != 0 {
            (fed.worker + 1) % self.setup.workers
        } else {
            fed.worker
        };
        self.enqueue(fed.port, worker, r.batched(), fed.bytes.clone(), fed.clean);
        if r.c & 2 != 0 {
            self.enqueue(fed.port, worker, true, fed.bytes, fed.clean);
        }
    }

    /// Usage and listings (op 13), `b % 4`: every worker is asked for a usage report; the
    /// management thread's report queue fills (`c` bit 0 set) or empties (clear), so polls
    /// give reports back or take them; a listing of every flow, or of the demo endpoints'
    /// flows, of at most `c` flows, on worker `a` bit 0.
    fn report(&mut self, r: &Rec) {
        match r.b % 4 {
            0 => {
                let now = self.now_ms.max(1);
                for p in &mut self.pipes {
                    p.want_report(now);
                }
            }
            1 => self.reports_queue_full = r.c & 1 != 0,
            k => {
                let w = u16::from(r.a & 1) % self.setup.workers;
                let filter = if k == 2 {
                    FlowFilter::All
                } else {
                    FlowFilter::Endpoints(vec![1, 2, 3])
                };
                let max = usize::from(r.c);
                let (tx, rx) = crossbeam::channel::unbounded();
                let q = FlowQuery {
                    filter,
                    max,
                    reply: tx,
                };
                if self.pipes[usize::from(w)].start_listing(q).is_ok() {
                    self.listings.push((w, max, rx));
                }
            }
        }
    }

    fn check_listings(&mut self) {
        let stats = &mut self.stats;
        self.listings.retain(|(w, max, rx)| match rx.try_recv() {
            Ok(list) => {
                assert!(
                    list.len() <= *max,
                    "a listing of {} flows, {max} asked",
                    list.len()
                );
                assert!(
                    list.iter().all(|f| f.worker == *w),
                    "a listing from another worker"
                );
                stats.listings += 1;
                false
            }
            Err(TryRecvError::Empty) => true,
            Err(TryRecvError::Disconnected) => false,
        });
    }

    /// A frame as it is (op 14): its length is `b c` (at most 9216), its bytes the records
    /// that follow; `a` bit 0 the port, bit 1 sets the destination MAC to ours (unless it
    /// is a group address: captures come from appliances with other MACs).
    fn raw(&mut self, r: &Rec, more: &mut std::slice::ChunksExact<'_, u8>) {
        let len = usize::from(u16::from_be_bytes([r.b, r.c])).min(9216);
        let mut bytes = Vec::with_capacity(len + RECORD);
        while bytes.len() < len {
            let Some(chunk) = more.next() else { break };
            bytes.extend_from_slice(chunk);
        }
        bytes.truncate(len);
        let port = u16::from(r.a & 1);
        if r.a & 2 != 0 && bytes.len() >= 6 && bytes[0] & 1 == 0 {
            bytes[..6].copy_from_slice(&MACS[usize::from(port)]);
        }
        let clean = l4_checksum_ok(&bytes);
        let worker = self.worker_of(r);
        self.enqueue(port, worker, r.batched(), bytes, clean);
    }

    /// Many new flows at once (op 15): `b % 64 + 1` TCP SYNs to the endpoint's port 80 (UDP
    /// datagrams to 9000 when `c` bit 0 is set) from source ports 20000 + 64 `x` + i; from
    /// the client .10, or (`c` bit 1) from as many other hosts .20 and up; one burst per
    /// 32 (`c` bit 2) or one frame each; on the worker `a` bit 6 names.
    fn flood(&mut self, r: &Rec) {
        let n = u16::from(r.b % 64) + 1;
        let worker = self.worker_of(r);
        let ep = CONSUMER_NET | 100;
        for i in 0..n {
            let src = if r.c & 2 != 0 {
                CONSUMER_NET | u32::from(20 + i)
            } else {
                CONSUMER_NET | 10
            };
            let sport = 20000 + (u16::from(r.x & 0x3f) << 6) + i;
            let (proto, l4) = if r.c & 1 != 0 {
                (17, packets::udp(sport, 9000, 8, src, ep, false))
            } else {
                let t = Tcp {
                    sport,
                    dport: 80,
                    seq: r.seq.wrapping_add(u32::from(i) << 16),
                    flags: 0x02,
                    window: 64240,
                    options: TCP_OPTIONS[5].to_vec(),
                    ..Tcp::default()
                };
                (6, packets::tcp(&t, src, ep))
            };
            let eth = Eth {
                dst: MACS[0],
                src: host_mac(CONSUMER_PORT, src),
                tags: Vec::new(),
            };
            let f = packets::frame(&eth, 0x0800, &packets::ipv4(&Ip::new(src, ep, proto), &l4));
            self.enqueue(CONSUMER_PORT, worker, r.c & 4 != 0, f, true);
        }
    }

    /// Queues a frame for a worker: it joins the burst being gathered when `batch` (same
    /// port and worker), else the burst so far is processed first.
    fn enqueue(&mut self, port: u16, worker: u16, batch: bool, bytes: Vec<u8>, clean: bool) {
        self.l4_clean &= clean;
        self.stats.frames_in += 1;
        if self.trace {
            eprintln!(
                "  in  port {port} worker {worker}{}: {}",
                if batch { " (burst)" } else { "" },
                hex(&bytes)
            );
        }
        // The worker loop drops what is longer than the port's MTU allows before the
        // pipeline sees it (a tap does not enforce its MTU).
        let tagged = bytes.get(12..14) == Some(&[0x81, 0x00][..]);
        let limit = usize::from(self.setup.mtus[usize::from(port)]) + 14 + 4 * usize::from(tagged);
        if bytes.len() > limit {
            let c = self.pipes[usize::from(worker)].counters_mut();
            c.rx_packets += 1;
            c.rx_bytes += bytes.len() as u64;
            c.drop(crate::graph::counters::DropReason::RxOversize);
            return;
        }
        let frame = VecFrame::new(&bytes);
        if self.inputs.len() == REMEMBER {
            self.inputs.pop_front();
        }
        self.inputs.push_back(Fed {
            port,
            worker,
            bytes,
            clean,
        });
        let joins = batch
            && self.pending.as_ref().is_some_and(|b| {
                b.port == port && b.worker == worker && b.frames.len() < BURST_MAX
            });
        if !joins {
            self.flush();
        }
        match &mut self.pending {
            Some(b) => b.frames.push(frame),
            None => {
                self.pending = Some(Burst {
                    port,
                    worker,
                    frames: vec![frame],
                });
            }
        }
    }

    /// Processes the burst being gathered.
    fn flush(&mut self) {
        let Some(mut b) = self.pending.take() else {
            return;
        };
        let w = usize::from(b.worker);
        let mut verdicts = Vec::with_capacity(b.frames.len());
        if b.frames.len() == 1 {
            let f = b.frames.remove(0);
            verdicts.push(self.pipes[w].process(&self.snap, b.port, f, self.now_ms));
        } else {
            self.stats.bursts += 1;
            self.pipes[w].process_burst(&self.snap, b.port, &mut b.frames, self.now_ms, &mut |v| {
                verdicts.push(v);
            });
            assert!(b.frames.is_empty(), "process_burst leaves no frame behind");
        }
        for v in verdicts {
            self.verdict(v, b.port, b.worker, 0);
        }
        self.after(true, 0);
    }

    fn verdict(&mut self, v: Verdict<VecFrame>, in_port: u16, worker: u16, hops: usize) {
        match v {
            Verdict::Done => {}
            Verdict::Tx(port, f) => {
                let c = self.pipes[usize::from(worker)].counters_mut();
                c.tx_packets += 1;
                c.tx_bytes += f.bytes().len() as u64;
                self.stats.frames_out += 1;
                match (in_port, port) {
                    (CONSUMER_PORT, PROVIDER_PORT) => {
                        check_crossing_to_provider(&self.targets, f.bytes());
                        self.stats.forward_tx += 1;
                    }
                    (PROVIDER_PORT, CONSUMER_PORT) => self.stats.reverse_tx += 1,
                    _ => self.stats.local_tx += 1,
                }
                if in_port != port && is_icmp_error(f.bytes()) {
                    if port == PROVIDER_PORT {
                        self.stats.icmp_to_provider += 1;
                    } else {
                        self.stats.icmp_to_consumer += 1;
                    }
                }
                self.leave(port, f.bytes().to_vec());
            }
            Verdict::Handoff(to, f) => {
                let n = self.pipes.len();
                assert!(
                    usize::from(to) < n && to != worker,
                    "worker {worker} handed a packet to worker {to} (of {n})"
                );
                assert!(
                    hops < n,
                    "a packet handed on {hops} times among {n} workers"
                );
                self.stats.handoffs += 1;
                self.pipes[usize::from(worker)].counters_mut().handoff_out += 1;
                let next = &mut self.pipes[usize::from(to)];
                next.counters_mut().handoff_in += 1;
                let v = next.process_handed_off(&self.snap, in_port, f, self.now_ms);
                let mut released = Vec::new();
                next.process_released(&self.snap, self.now_ms, &mut |v| released.push(v));
                self.verdict(v, in_port, to, hops + 1);
                for v in released {
                    self.verdict(v, in_port, to, hops + 1);
                }
            }
        }
    }

    fn leave(&mut self, port: u16, bytes: Vec<u8>) {
        if self.trace {
            eprintln!("  out port {port}: {}", hex(&bytes));
        }
        let strict = Strict {
            l4_checksums: self.l4_clean,
            mtu: true,
        };
        check_leaving(&self.snap, &self.owned, strict, port, &bytes);
        if self.outputs.len() == REMEMBER {
            self.outputs.pop_front();
        }
        self.outputs.push_back(Sent { port, bytes });
    }

    /// What the workers emitted (ARP, RSTs, released packets) leaves, as the worker loop
    /// sends it. `rx`: after packets were processed (every IPv4 packet emitted then was
    /// held), else after timer work (released at the tick, or RSTs of ended flows:
    /// `rsts_before` is the RST count before the timer work).
    fn after(&mut self, rx: bool, rsts_before: u64) {
        let mut ipv4 = 0;
        for w in 0..self.pipes.len() {
            let out: Vec<(u16, VecFrame)> = self.pipes[w].drain_emitted().collect();
            for (port, f) in out {
                let c = self.pipes[w].counters_mut();
                c.tx_packets += 1;
                c.tx_bytes += f.bytes().len() as u64;
                self.stats.frames_out += 1;
                if is_ipv4(f.bytes()) {
                    ipv4 += 1;
                }
                self.leave(port, f.bytes().to_vec());
            }
        }
        if rx {
            self.stats.held_released += ipv4;
        } else {
            let rsts = self.rsts().saturating_sub(rsts_before).min(ipv4);
            self.stats.emitted_in_poll += rsts;
            self.stats.held_released += ipv4 - rsts;
        }
    }

    fn rsts(&self) -> u64 {
        self.pipes.iter().map(|p| p.counters().rst_sent).sum()
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn is_ipv4(f: &[u8]) -> bool {
    vlan::l2_header(f).is_ok_and(|l2| l2.ethertype == EtherType::IPV4)
}

fn is_icmp_error(f: &[u8]) -> bool {
    let Ok(l2) = vlan::l2_header(f) else {
        return false;
    };
    let Ok(ip) = Ipv4Packet::new_checked(&f[l2.header_len..]) else {
        return false;
    };
    ip.protocol().0 == 1 && matches!(ip.payload().first(), Some(3 | 11 | 12))
}

/// `l2` bit 2: pads a short frame to Ethernet's 60 bytes, or adds a 4-byte trailer.
/// The TCP segment of a fresh packet: `c` flags, `seq`, `ack`, `win`, `l2` bits 5-7
/// the options.
fn fresh_tcp(r: &Rec, (sport, dport): (u16, u16), len: usize) -> Tcp {
    Tcp {
        sport,
        dport,
        seq: r.seq,
        ack: r.ack,
        flags: r.c,
        window: r.win,
        options: TCP_OPTIONS[usize::from(r.l2 >> 5)].to_vec(),
        payload_len: len,
    }
}

fn pad(f: &mut Vec<u8>, r: &Rec) {
    if r.l2 & 4 != 0 {
        if f.len() < 60 {
            f.resize(60, 0);
        } else {
            f.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        }
    }
}

/// A fresh ICMP message (protocol 2 of a fresh packet), by `c % 8`: an echo request
/// (0-2; identifier and sequence from `seq`), an echo reply, errors quoting a packet the
/// destination would have sent to the source (TCP, or UDP when `ack` is odd, ports from
/// `ack`): port unreachable, time exceeded, fragmentation needed (MTU `win`); another
/// type (`c >> 3`: source quench, redirect, router advertisement and solicitation,
/// parameter problem, timestamp, address mask, 255).
fn fresh_icmp(r: &Rec, src: u32, dst: u32, len: usize) -> Vec<u8> {
    let quote_of = || {
        let (sport, dport) = (hi16(r.ack), lo16(r.ack));
        let (proto, l4) = if r.ack & 1 == 0 {
            let t = Tcp {
                sport,
                dport,
                seq: r.seq,
                flags: 0x12,
                ..Tcp::default()
            };
            (6, packets::tcp(&t, dst, src))
        } else {
            (17, packets::udp(sport, dport, 4, dst, src, false))
        };
        let orig = packets::ipv4(&Ip::new(dst, src, proto), &l4);
        orig[..28.min(orig.len())].to_vec()
    };
    let [mtu_hi, mtu_lo] = r.win.to_be_bytes();
    match r.c % 8 {
        0..=2 => packets::echo(true, hi16(r.seq), lo16(r.seq), len),
        3 => packets::echo(false, hi16(r.seq), lo16(r.seq), len),
        4 => packets::icmp(3, 3, [0; 4], &quote_of()),
        5 => packets::icmp(11, 0, [0; 4], &quote_of()),
        6 => packets::icmp(3, 4, [0, 0, mtu_hi, mtu_lo], &quote_of()),
        _ => {
            let t = [4, 5, 9, 10, 12, 13, 17, 255][usize::from(r.c >> 3) % 8];
            packets::icmp(t, 0, [0; 4], &vec![0x5a; len])
        }
    }
}
