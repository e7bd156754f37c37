//! `rte_flow` rules on a port: a pattern of owned item specs and masks and one action,
//! validated and created on a [`Port`]; a created rule lives as long as its [`Flow`]
//! handle, or until [`Port::flush_flows`].
//!
//! [`FlowRule`] is plain Rust data (no pointer, no DPDK call), so the code that decides
//! which rules a port gets can be unit-tested without an EAL; the C structures are built
//! only for the duration of one call, in [`with_raw`].
//!
//! Only what privlink steers with is expressible: Ethernet (any), an 802.1Q VLAN id, an
//! IPv4 or IPv6 destination, a TCP or UDP destination port under a mask, and the QUEUE action.

use std::ffi::{c_void, CStr};
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::ptr::NonNull;
use std::sync::Arc;

use crate::error::DpdkError;
use crate::ffi;
use crate::port::{Port, PortInner, QueueId};

/// The VLAN id bits of a TCI: priority and DEI are never matched.
const VLAN_ID_MASK: u16 = 0x0fff;

/// One item of a rule's pattern, outermost first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlowItem {
    /// Any Ethernet frame (no field matched).
    Eth,
    /// An 802.1Q tag whose VLAN id is `vid`.
    Vlan { vid: u16 },
    /// IPv4 whose destination, under `dst_mask`, is `dst`.
    Ipv4 { dst: Ipv4Addr, dst_mask: u32 },
    /// IPv6 whose destination, under `dst_mask`, is `dst` (extension headers between it
    /// and the L4 item are the driver's to skip or refuse).
    Ipv6 { dst: Ipv6Addr, dst_mask: u128 },
    /// TCP whose destination port, under `dst_mask`, is `dst_port`.
    Tcp { dst_port: u16, dst_mask: u16 },
    /// UDP whose destination port, under `dst_mask`, is `dst_port`.
    Udp { dst_port: u16, dst_mask: u16 },
}

/// What a matching packet gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlowAction {
    /// Received on this RX queue instead of the one RSS would pick.
    Queue(QueueId),
}

/// An ingress rule: a pattern and one action.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FlowRule {
    pattern: Vec<FlowItem>,
    action: FlowAction,
}

impl FlowRule {
    /// A rule matching `pattern` (outermost item first; an empty pattern matches every
    /// packet) with `action`.
    pub fn new(pattern: Vec<FlowItem>, action: FlowAction) -> FlowRule {
        FlowRule { pattern, action }
    }

    pub fn pattern(&self) -> &[FlowItem] {
        &self.pattern
    }

    pub fn action(&self) -> FlowAction {
        self.action
    }
}

/// testpmd's notation, so a logged rule can be pasted into `flow validate 0 ingress …`.
impl fmt::Display for FlowRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("pattern ")?;
        for item in &self.pattern {
            match item {
                FlowItem::Eth => f.write_str("eth")?,
                FlowItem::Vlan { vid } => write!(f, "vlan vid is {vid}")?,
                FlowItem::Ipv4 { dst, dst_mask } => write!(
                    f,
                    "ipv4 dst spec {dst} dst mask {}",
                    Ipv4Addr::from(*dst_mask)
                )?,
                FlowItem::Ipv6 { dst, dst_mask } => write!(
                    f,
                    "ipv6 dst spec {dst} dst mask {}",
                    Ipv6Addr::from(*dst_mask)
                )?,
                FlowItem::Tcp { dst_port, dst_mask } => {
                    write!(f, "tcp dst spec {dst_port} dst mask {dst_mask:#x}")?
                }
                FlowItem::Udp { dst_port, dst_mask } => {
                    write!(f, "udp dst spec {dst_port} dst mask {dst_mask:#x}")?
                }
            }
            f.write_str(" / ")?;
        }
        match self.action {
            FlowAction::Queue(q) => write!(f, "end actions queue index {} / end", q.0),
        }
    }
}

/// A rule created on a port: destroyed when dropped (a failure is logged, since `Drop`
/// cannot return it). Holds the port open, so a rule is never destroyed on a closed port.
#[derive(Debug)]
pub struct Flow {
    port: Arc<PortInner>,
    /// None once [`Port::flush_flows`] destroyed it with the rest of the port's rules.
    raw: Option<NonNull<ffi::rte_flow>>,
}

// SAFETY: an rte_flow handle is an opaque token that the ethdev layer accepts from any
// thread (it serialises flow operations per port itself, or the driver declares them
// thread safe); privlink only ever uses it from the thread that holds the handle.
unsafe impl Send for Flow {}

impl Flow {
    /// Destroys the rule now, reporting a failure (dropping does the same, logging it).
    pub fn destroy(mut self) -> Result<(), DpdkError> {
        match self.raw.take() {
            Some(raw) => destroy(&self.port, raw),
            None => Ok(()),
        }
    }
}

impl Drop for Flow {
    fn drop(&mut self) {
        if let Some(raw) = self.raw.take() {
            if let Err(e) = destroy(&self.port, raw) {
                log::warn!("{e}");
            }
        }
    }
}

fn destroy(port: &PortInner, raw: NonNull<ffi::rte_flow>) -> Result<(), DpdkError> {
    let mut error = ffi::rte_flow_error::default();
    // SAFETY: `raw` came from rte_flow_create on this port, which is still open (the handle
    // holds it), and was not destroyed or flushed since (the handle's Option was Some).
    let rc = unsafe { ffi::rte_flow_destroy(port.id.0, raw.as_ptr(), &mut error) };
    check(rc, &error, || format!("rte_flow_destroy({})", port.name))
}

impl Port {
    /// Asks the device whether it would take `rule`, without creating it. A device may
    /// accept here what [`create_flow`](Self::create_flow) then refuses (net_tap checks
    /// port masks only when it creates), so the answer is a hint, not a promise.
    pub fn validate_flow(&self, rule: &FlowRule) -> Result<(), DpdkError> {
        let mut error = ffi::rte_flow_error::default();
        let rc = with_raw(rule, |attr, pattern, actions| {
            // SAFETY: the port id is configured (self); attr, pattern and actions point to
            // structures with_raw keeps alive until this closure returns, the pattern and
            // the actions each ended by an END entry; error is a valid out-pointer.
            unsafe { ffi::rte_flow_validate(self.id().0, attr, pattern, actions, &mut error) }
        });
        check(rc, &error, || {
            format!("rte_flow_validate({}, {rule})", self.name())
        })
    }

    /// Creates `rule` on the device; it stays until the returned handle is dropped or
    /// destroyed, or the port's rules are flushed.
    pub fn create_flow(&self, rule: &FlowRule) -> Result<Flow, DpdkError> {
        let mut error = ffi::rte_flow_error::default();
        let raw = with_raw(rule, |attr, pattern, actions| {
            // SAFETY: as in validate_flow. DPDK translates the rule into the device's own
            // form during the call and keeps no pointer into these structures after it.
            unsafe { ffi::rte_flow_create(self.id().0, attr, pattern, actions, &mut error) }
        });
        match NonNull::new(raw) {
            Some(raw) => Ok(Flow {
                port: Arc::clone(self.inner()),
                raw: Some(raw),
            }),
            // rte_flow_create reports its errno only through rte_errno.
            None => Err(flow_error(
                rte_errno_or(libc::EINVAL),
                &error,
                format!("rte_flow_create({}, {rule})", self.name()),
            )),
        }
    }

    /// Destroys every rule on the device with one `rte_flow_flush` (privlink's and any
    /// other's), `flows` included: their handles are then spent. When the flush fails,
    /// each of `flows` is destroyed on its own instead, and the flush's error returned.
    pub fn flush_flows(&self, flows: Vec<Flow>) -> Result<(), DpdkError> {
        let mut error = ffi::rte_flow_error::default();
        // SAFETY: configured port id, valid out-pointer.
        let rc = unsafe { ffi::rte_flow_flush(self.id().0, &mut error) };
        let result = check(rc, &error, || format!("rte_flow_flush({})", self.name()));
        for mut f in flows {
            // Rules of another port were not flushed: theirs is a normal drop.
            if result.is_ok() && Arc::ptr_eq(&f.port, self.inner()) {
                f.raw = None;
            }
        }
        result
    }
}

/// Builds the C form of `rule` on the stack and hands `f` pointers to it (attributes,
/// END-terminated pattern, END-terminated actions), valid until `f` returns.
fn with_raw<R>(
    rule: &FlowRule,
    f: impl FnOnce(
        *const ffi::rte_flow_attr,
        *const ffi::rte_flow_item,
        *const ffi::rte_flow_action,
    ) -> R,
) -> R {
    let mut attr = ffi::rte_flow_attr::default();
    attr.set_ingress(1);
    // Specs and masks first, complete: the items then point into this vector, which is
    // not touched again until the call is over.
    let specs: Vec<RawSpec> = rule.pattern.iter().map(RawSpec::of).collect();
    let mut items: Vec<ffi::rte_flow_item> = specs.iter().map(RawSpec::item).collect();
    items.push(ffi::rte_flow_item {
        type_: ffi::RTE_FLOW_ITEM_TYPE_END,
        ..ffi::rte_flow_item::default()
    });
    let queue = match rule.action {
        FlowAction::Queue(q) => ffi::rte_flow_action_queue { index: q.0 },
    };
    let actions = [
        ffi::rte_flow_action {
            type_: ffi::RTE_FLOW_ACTION_TYPE_QUEUE,
            conf: (&queue as *const ffi::rte_flow_action_queue).cast::<c_void>(),
        },
        ffi::rte_flow_action {
            type_: ffi::RTE_FLOW_ACTION_TYPE_END,
            conf: std::ptr::null(),
        },
    ];
    f(&attr, items.as_ptr(), actions.as_ptr())
}

/// One item's spec and mask in DPDK's layout (network byte order).
enum RawSpec {
    Eth,
    Vlan([ffi::rte_flow_item_vlan; 2]),
    Ipv4([ffi::rte_flow_item_ipv4; 2]),
    Ipv6([ffi::rte_flow_item_ipv6; 2]),
    Tcp([ffi::rte_flow_item_tcp; 2]),
    Udp([ffi::rte_flow_item_udp; 2]),
}

impl RawSpec {
    fn of(item: &FlowItem) -> RawSpec {
        match *item {
            FlowItem::Eth => RawSpec::Eth,
            FlowItem::Vlan { vid } => {
                let tci = |v: u16| {
                    let mut it = ffi::rte_flow_item_vlan::default();
                    it.__bindgen_anon_1.hdr = ffi::rte_vlan_hdr {
                        vlan_tci: v.to_be(),
                        eth_proto: 0,
                    };
                    it
                };
                RawSpec::Vlan([tci(vid & VLAN_ID_MASK), tci(VLAN_ID_MASK)])
            }
            FlowItem::Ipv4 { dst, dst_mask } => {
                let v4 = |a: u32| {
                    let mut it = ffi::rte_flow_item_ipv4::default();
                    it.hdr.dst_addr = a.to_be();
                    it
                };
                RawSpec::Ipv4([v4(u32::from(dst) & dst_mask), v4(dst_mask)])
            }
            FlowItem::Ipv6 { dst, dst_mask } => {
                let v6 = |a: u128| {
                    let mut it = ffi::rte_flow_item_ipv6::default();
                    it.hdr.dst_addr = a.to_be_bytes();
                    it
                };
                RawSpec::Ipv6([v6(u128::from(dst) & dst_mask), v6(dst_mask)])
            }
            FlowItem::Tcp { dst_port, dst_mask } => {
                let tcp = |p: u16| {
                    let mut it = ffi::rte_flow_item_tcp::default();
                    it.hdr.dst_port = p.to_be();
                    it
                };
                RawSpec::Tcp([tcp(dst_port & dst_mask), tcp(dst_mask)])
            }
            FlowItem::Udp { dst_port, dst_mask } => {
                let udp = |p: u16| {
                    let mut it = ffi::rte_flow_item_udp::default();
                    it.hdr.dst_port = p.to_be();
                    it
                };
                RawSpec::Udp([udp(dst_port & dst_mask), udp(dst_mask)])
            }
        }
    }

    /// The item pointing at this spec and mask (valid while `self` does not move).
    fn item(&self) -> ffi::rte_flow_item {
        fn pair<T>(t: ffi::rte_flow_item_type, p: &[T; 2]) -> ffi::rte_flow_item {
            ffi::rte_flow_item {
                type_: t,
                spec: (&p[0] as *const T).cast::<c_void>(),
                last: std::ptr::null(),
                mask: (&p[1] as *const T).cast::<c_void>(),
            }
        }
        match self {
            // No spec: any Ethernet header.
            RawSpec::Eth => ffi::rte_flow_item {
                type_: ffi::RTE_FLOW_ITEM_TYPE_ETH,
                ..ffi::rte_flow_item::default()
            },
            RawSpec::Vlan(p) => pair(ffi::RTE_FLOW_ITEM_TYPE_VLAN, p),
            RawSpec::Ipv4(p) => pair(ffi::RTE_FLOW_ITEM_TYPE_IPV4, p),
            RawSpec::Ipv6(p) => pair(ffi::RTE_FLOW_ITEM_TYPE_IPV6, p),
            RawSpec::Tcp(p) => pair(ffi::RTE_FLOW_ITEM_TYPE_TCP, p),
            RawSpec::Udp(p) => pair(ffi::RTE_FLOW_ITEM_TYPE_UDP, p),
        }
    }
}

/// `rte_errno` when the driver set it, else `fallback`.
fn rte_errno_or(fallback: i32) -> i32 {
    // SAFETY: plk_errno reads this thread's rte_errno, always valid.
    match unsafe { ffi::plk_errno() } {
        0 => fallback,
        e => e,
    }
}

fn check(
    rc: i32,
    error: &ffi::rte_flow_error,
    op: impl FnOnce() -> String,
) -> Result<(), DpdkError> {
    if rc < 0 {
        Err(flow_error(rc, error, op()))
    } else {
        Ok(())
    }
}

/// The error of a failed flow call, with the driver's own words when it gave some
/// ("item not supported") after the operation.
fn flow_error(errno: i32, error: &ffi::rte_flow_error, op: String) -> DpdkError {
    let said = if error.message.is_null() {
        None
    } else {
        // SAFETY: a non-null rte_flow_error message is a NUL-terminated string the driver
        // keeps alive (static, or in the device's private data) after the call.
        Some(
            unsafe { CStr::from_ptr(error.message) }
                .to_string_lossy()
                .into_owned(),
        )
    };
    let plain = DpdkError::new(op, errno);
    match said {
        // Drivers often give strerror's own words, which the error prints anyway.
        Some(m) if !m.is_empty() && !plain.to_string().contains(&format!(": {m} (errno")) => {
            DpdkError::new(format!("{}: {m}", plain.op()), errno)
        }
        _ => plain,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(pattern: Vec<FlowItem>) -> FlowRule {
        FlowRule::new(pattern, FlowAction::Queue(QueueId(3)))
    }

    /// The structures are unions and bitfields: bindgen and the C compiler must agree on
    /// where the fields privlink writes are.
    #[test]
    fn flow_layouts_match_c() {
        use std::mem::{offset_of, size_of};
        let c = |v: std::os::raw::c_ulong| usize::try_from(v).unwrap();
        // SAFETY: pure functions returning compile-time constants.
        let got = unsafe {
            [
                c(ffi::plk_sizeof_flow_attr()),
                c(ffi::plk_sizeof_flow_item()),
                c(ffi::plk_sizeof_flow_item_vlan()),
                c(ffi::plk_sizeof_flow_item_ipv4()),
                c(ffi::plk_sizeof_flow_item_tcp()),
                c(ffi::plk_sizeof_flow_item_udp()),
                c(ffi::plk_offsetof_flow_item_ipv4_dst()),
                c(ffi::plk_offsetof_flow_item_tcp_dst()),
                c(ffi::plk_offsetof_flow_item_udp_dst()),
                c(ffi::plk_sizeof_flow_item_ipv6()),
                c(ffi::plk_offsetof_flow_item_ipv6_dst()),
            ]
        };
        let ours = [
            size_of::<ffi::rte_flow_attr>(),
            size_of::<ffi::rte_flow_item>(),
            size_of::<ffi::rte_flow_item_vlan>(),
            size_of::<ffi::rte_flow_item_ipv4>(),
            size_of::<ffi::rte_flow_item_tcp>(),
            size_of::<ffi::rte_flow_item_udp>(),
            offset_of!(ffi::rte_flow_item_ipv4, hdr) + offset_of!(ffi::rte_ipv4_hdr, dst_addr),
            offset_of!(ffi::rte_flow_item_tcp, hdr) + offset_of!(ffi::rte_tcp_hdr, dst_port),
            offset_of!(ffi::rte_flow_item_udp, hdr) + offset_of!(ffi::rte_udp_hdr, dst_port),
            size_of::<ffi::rte_flow_item_ipv6>(),
            offset_of!(ffi::rte_flow_item_ipv6, hdr) + offset_of!(ffi::rte_ipv6_hdr, dst_addr),
        ];
        assert_eq!(ours, got);
    }

    #[test]
    fn specs_are_masked_and_in_network_order() {
        let r = rule(vec![
            FlowItem::Eth,
            FlowItem::Vlan { vid: 0x2123 },
            FlowItem::Ipv4 {
                dst: Ipv4Addr::new(10, 2, 0, 100),
                dst_mask: u32::MAX,
            },
            FlowItem::Tcp {
                dst_port: 0x0407,
                dst_mask: 0x3,
            },
        ]);
        let specs: Vec<RawSpec> = r.pattern.iter().map(RawSpec::of).collect();
        assert!(matches!(specs[0], RawSpec::Eth));
        let RawSpec::Vlan(v) = &specs[1] else {
            panic!("vlan")
        };
        // SAFETY: the test wrote the hdr member of these unions just above (RawSpec::of).
        let (tci, tci_mask) = unsafe {
            (
                v[0].__bindgen_anon_1.hdr.vlan_tci,
                v[1].__bindgen_anon_1.hdr.vlan_tci,
            )
        };
        assert_eq!(u16::from_be(tci), 0x0123, "priority bits dropped");
        assert_eq!(u16::from_be(tci_mask), 0x0fff);
        let RawSpec::Ipv4(ip) = &specs[2] else {
            panic!("ipv4")
        };
        let dst = ip[0].hdr.dst_addr;
        assert_eq!(dst.to_ne_bytes(), [10, 2, 0, 100]);
        let dst_mask = ip[1].hdr.dst_addr;
        assert_eq!(dst_mask, u32::MAX);
        let RawSpec::Tcp(t) = &specs[3] else {
            panic!("tcp")
        };
        assert_eq!(u16::from_be(t[0].hdr.dst_port), 0x3, "spec under its mask");
        assert_eq!(u16::from_be(t[1].hdr.dst_port), 0x3);
    }

    #[test]
    fn ipv6_destinations_are_masked_and_in_network_order() {
        let dst: Ipv6Addr = "fd00:b1::100".parse().unwrap();
        let r = rule(vec![
            FlowItem::Eth,
            FlowItem::Ipv6 {
                dst,
                dst_mask: u128::MAX << 64,
            },
        ]);
        let specs: Vec<RawSpec> = r.pattern.iter().map(RawSpec::of).collect();
        let RawSpec::Ipv6(ip) = &specs[1] else {
            panic!("ipv6")
        };
        assert_eq!(
            ip[0].hdr.dst_addr,
            [0xfd, 0, 0, 0xb1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            "spec under its mask"
        );
        assert_eq!(ip[1].hdr.dst_addr, [[0xff; 8], [0; 8]].concat()[..]);
        assert!(matches!(
            specs[1].item().type_,
            ffi::RTE_FLOW_ITEM_TYPE_IPV6
        ));
        assert_eq!(
            r.to_string(),
            "pattern eth / ipv6 dst spec fd00:b1::100 dst mask ffff:ffff:ffff:ffff:: / end \
             actions queue index 3 / end"
        );
    }

    #[test]
    fn the_raw_pattern_ends_with_end_and_points_at_its_specs() {
        let r = rule(vec![
            FlowItem::Eth,
            FlowItem::Udp {
                dst_port: 1,
                dst_mask: 1,
            },
        ]);
        let seen = with_raw(&r, |attr, pattern, actions| {
            // SAFETY: with_raw keeps these alive during the closure; the pattern has the
            // two items plus END, the actions QUEUE plus END.
            unsafe {
                let items = std::slice::from_raw_parts(pattern, 3);
                let acts = std::slice::from_raw_parts(actions, 2);
                let udp = &*items[1].mask.cast::<ffi::rte_flow_item_udp>();
                let q = &*acts[0].conf.cast::<ffi::rte_flow_action_queue>();
                (
                    (*attr).ingress(),
                    items.iter().map(|i| i.type_).collect::<Vec<_>>(),
                    items[0].spec.is_null(),
                    u16::from_be(udp.hdr.dst_port),
                    acts.iter().map(|a| a.type_).collect::<Vec<_>>(),
                    q.index,
                )
            }
        });
        assert_eq!(
            seen,
            (
                1,
                vec![
                    ffi::RTE_FLOW_ITEM_TYPE_ETH,
                    ffi::RTE_FLOW_ITEM_TYPE_UDP,
                    ffi::RTE_FLOW_ITEM_TYPE_END
                ],
                true,
                1,
                vec![
                    ffi::RTE_FLOW_ACTION_TYPE_QUEUE,
                    ffi::RTE_FLOW_ACTION_TYPE_END
                ],
                3
            )
        );
    }

    #[test]
    fn a_rule_prints_as_testpmd_takes_it() {
        let r = rule(vec![
            FlowItem::Eth,
            FlowItem::Vlan { vid: 300 },
            FlowItem::Ipv4 {
                dst: Ipv4Addr::new(10, 2, 0, 100),
                dst_mask: u32::MAX,
            },
            FlowItem::Tcp {
                dst_port: 1,
                dst_mask: 3,
            },
        ]);
        assert_eq!(
            r.to_string(),
            "pattern eth / vlan vid is 300 / ipv4 dst spec 10.2.0.100 dst mask 255.255.255.255 / \
             tcp dst spec 1 dst mask 0x3 / end actions queue index 3 / end"
        );
    }
}
