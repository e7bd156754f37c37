//! Network values that more than one part of the management plane reads: an IPv4 and an
//! IPv6 prefix, an Ethernet address, and what counts as one host's address.
//!
//! The model (attachments, security group rules) and endpoint policies (`SourceCidr`) both
//! need them, so they live below both: this module must never depend on `model` or
//! `policy`, which is what keeps those two from importing each other.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::ids::{serde_as_string, ParseError, ValueKind};

/// An IPv4 address with a prefix length: the appliance's own address in a VPC and the
/// prefix (subnet) it is on. Text form `10.1.0.1/24`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Net {
    addr: Ipv4Addr,
    prefix_len: u8,
}

impl Ipv4Net {
    /// `addr/prefix_len`, if `prefix_len <= 32`.
    pub const fn new(addr: Ipv4Addr, prefix_len: u8) -> Option<Self> {
        if prefix_len <= 32 {
            Some(Self { addr, prefix_len })
        } else {
            None
        }
    }

    /// The address (for an attachment: the appliance's own address).
    pub const fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The prefix length, 0..=32.
    pub const fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// The netmask, e.g. 255.255.255.0 for /24.
    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.mask())
    }

    fn mask(&self) -> u32 {
        // /0 would shift by 32, which `checked_shl` refuses: the mask is then empty.
        u32::MAX
            .checked_shl(32 - u32::from(self.prefix_len))
            .unwrap_or(0)
    }

    /// The network address (all host bits clear).
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    /// The broadcast address (all host bits set).
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }

    /// Whether `ip` lies inside the prefix (network and broadcast included).
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        (u32::from(ip) ^ u32::from(self.addr)) & self.mask() == 0
    }

    /// The prefix itself, `10.1.0.0/24` for `10.1.0.1/24`.
    pub fn trunc(&self) -> Self {
        Self {
            addr: self.network(),
            prefix_len: self.prefix_len,
        }
    }
}

impl FromStr for Ipv4Net {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let err = || ParseError::new(ValueKind::Ipv4Net, s);
        let (addr, len) = s.split_once('/').ok_or_else(err)?;
        if len.is_empty() || len.len() > 2 || !len.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        let addr = addr.parse().map_err(|_| err())?;
        let len = len.parse().map_err(|_| err())?;
        Self::new(addr, len).ok_or_else(err)
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl fmt::Debug for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

serde_as_string!(Ipv4Net, "an address/prefix string like \"10.1.0.1/24\"");

/// An IPv6 address with a prefix length: the appliance's own IPv6 address in a VPC and
/// the prefix it is on. Text form `fd00:c1::1/64` (printed in RFC 5952's form).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv6Net {
    addr: Ipv6Addr,
    prefix_len: u8,
}

impl Ipv6Net {
    /// `addr/prefix_len`, if `prefix_len <= 128`.
    pub const fn new(addr: Ipv6Addr, prefix_len: u8) -> Option<Self> {
        if prefix_len <= 128 {
            Some(Self { addr, prefix_len })
        } else {
            None
        }
    }

    /// The address.
    pub const fn addr(&self) -> Ipv6Addr {
        self.addr
    }

    /// The prefix length, 0..=128.
    pub const fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// The prefix as a mask over the address's bits.
    pub fn mask(&self) -> u128 {
        u128::MAX
            .checked_shl(128 - u32::from(self.prefix_len))
            .unwrap_or(0)
    }

    /// The prefix's first address (all host bits clear: the subnet-router anycast
    /// address, RFC 4291 §2.6.1).
    pub fn network(&self) -> Ipv6Addr {
        Ipv6Addr::from(u128::from(self.addr) & self.mask())
    }

    /// Whether `ip` lies inside the prefix.
    pub fn contains(&self, ip: Ipv6Addr) -> bool {
        (u128::from(ip) ^ u128::from(self.addr)) & self.mask() == 0
    }

    /// The prefix itself, `fd00:c1::/64` for `fd00:c1::1/64`.
    pub fn trunc(&self) -> Self {
        Self {
            addr: self.network(),
            prefix_len: self.prefix_len,
        }
    }
}

impl FromStr for Ipv6Net {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let err = || ParseError::new(ValueKind::Ipv6Net, s);
        let (addr, len) = s.split_once('/').ok_or_else(err)?;
        if len.is_empty() || len.len() > 3 || !len.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        let addr = addr.parse().map_err(|_| err())?;
        let len = len.parse().map_err(|_| err())?;
        Self::new(addr, len).ok_or_else(err)
    }
}

impl fmt::Display for Ipv6Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl fmt::Debug for Ipv6Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

serde_as_string!(
    Ipv6Net,
    "an IPv6 address/prefix string like \"fd00:c1::1/64\""
);

/// A prefix of either IP version (a security-group rule's or a policy's source).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpNet {
    V4(Ipv4Net),
    V6(Ipv6Net),
}

impl IpNet {
    /// The same prefix in network form (host bits cleared).
    pub fn trunc(&self) -> Self {
        match self {
            IpNet::V4(n) => IpNet::V4(n.trunc()),
            IpNet::V6(n) => IpNet::V6(n.trunc()),
        }
    }

    /// Whether `ip` is in it (never for an address of the other version).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        match (self, ip) {
            (IpNet::V4(n), std::net::IpAddr::V4(a)) => n.contains(a),
            (IpNet::V6(n), std::net::IpAddr::V6(a)) => n.contains(a),
            _ => false,
        }
    }
}

impl FromStr for IpNet {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let err = |_| ParseError::new(ValueKind::IpNet, s);
        if s.contains(':') {
            s.parse().map(IpNet::V6).map_err(err)
        } else {
            s.parse().map(IpNet::V4).map_err(err)
        }
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpNet::V4(n) => fmt::Display::fmt(n, f),
            IpNet::V6(n) => fmt::Display::fmt(n, f),
        }
    }
}

impl fmt::Debug for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

serde_as_string!(
    IpNet,
    "an address/prefix string like \"10.1.0.0/24\" or \"fd00:c1::/64\""
);

impl From<Ipv4Net> for IpNet {
    fn from(n: Ipv4Net) -> IpNet {
        IpNet::V4(n)
    }
}

/// `ip` if it is IPv4.
pub fn ipv4_of(ip: IpAddr) -> Option<Ipv4Addr> {
    match ip {
        IpAddr::V4(ip) => Some(ip),
        IpAddr::V6(_) => None,
    }
}

/// `ip` if it is IPv6.
pub fn ipv6_of(ip: IpAddr) -> Option<Ipv6Addr> {
    match ip {
        IpAddr::V6(ip) => Some(ip),
        IpAddr::V4(_) => None,
    }
}

/// Whether `ip` can be one interface's own address: global or unique-local unicast, not
/// unspecified, loopback, multicast, link-local (every interface has its own, made from
/// its MAC), nor an IPv4-mapped or -compatible address.
pub fn is_unicast_host_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || s[0] & 0xffc0 == 0xfe80
        || (s[0..5] == [0; 5] && (s[5] == 0xffff || s[5] == 0)))
}

/// An Ethernet address. Text form `02:00:00:00:00:01` (upper case accepted, lower printed).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// The six octets.
    pub const fn octets(self) -> [u8; 6] {
        self.0
    }

    /// Whether this is one station's address: neither group (multicast or broadcast) nor
    /// all zeros.
    pub const fn is_unicast(self) -> bool {
        let o = self.0;
        o[0] & 1 == 0
            && !(o[0] == 0 && o[1] == 0 && o[2] == 0 && o[3] == 0 && o[4] == 0 && o[5] == 0)
    }
}

impl FromStr for MacAddr {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let err = || ParseError::new(ValueKind::MacAddr, s);
        let mut octets = [0u8; 6];
        let mut parts = s.split(':');
        for o in &mut octets {
            let p = parts.next().ok_or_else(err)?;
            if p.len() != 2 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(err());
            }
            *o = u8::from_str_radix(p, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(Self(octets))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            o[0], o[1], o[2], o[3], o[4], o[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

serde_as_string!(MacAddr, "a mac address string like \"02:00:00:00:00:01\"");

/// Whether `ip` can be one host's address: not unspecified, loopback, multicast or the
/// limited broadcast address.
pub fn is_unicast_host(ip: Ipv4Addr) -> bool {
    !(ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() || ip.is_broadcast())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{ip, p};

    #[test]
    fn ipv6_net() {
        let n: Ipv6Net = p("fd00:c1::1/64");
        assert_eq!(n.addr(), "fd00:c1::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(n.prefix_len(), 64);
        assert_eq!(n.to_string(), "fd00:c1::1/64");
        assert_eq!(n.trunc().to_string(), "fd00:c1::/64");
        assert!(n.contains("fd00:c1::ffff:1".parse().unwrap()));
        assert!(!n.contains("fd00:c2::1".parse().unwrap()));
        // Printed the RFC 5952 way, whatever way it was written.
        assert_eq!(
            p::<Ipv6Net>("FD00:00C1:0:0::0001/64").to_string(),
            "fd00:c1::1/64"
        );
        let all: Ipv6Net = p("::/0");
        assert!(all.contains("ffff::1".parse().unwrap()));
        let host: Ipv6Net = p("fd00::7/128");
        assert_eq!(host.network(), host.addr());
        assert!(Ipv6Net::new(Ipv6Addr::LOCALHOST, 129).is_none());
        for s in [
            "fd00::1",
            "fd00::1/",
            "fd00::1/129",
            "fd00::1/0064",
            "fd00::1/+8",
            "/64",
            "10.1.0.1/24",
            "fd00:::1/64",
        ] {
            let e = s.parse::<Ipv6Net>().unwrap_err();
            assert_eq!(e.kind(), ValueKind::Ipv6Net, "{s}");
        }
        for (ip, host) in [
            ("fd00:c1::1", true),
            ("2001:db8::1", true),
            ("::", false),
            ("::1", false),
            ("ff02::1", false),
            ("fe80::1", false),
            ("febf::1", false),
            ("::ffff:10.1.0.1", false),
            ("::10.1.0.1", false),
        ] {
            assert_eq!(is_unicast_host_v6(ip.parse().unwrap()), host, "{ip}");
        }
    }

    #[test]
    fn ipv4_net() {
        let n: Ipv4Net = p("10.1.0.1/24");
        assert_eq!((n.addr(), n.prefix_len()), (ip("10.1.0.1"), 24));
        assert_eq!(n.to_string(), "10.1.0.1/24");
        assert_eq!(n.network(), ip("10.1.0.0"));
        assert_eq!(n.broadcast(), ip("10.1.0.255"));
        assert_eq!(n.netmask(), ip("255.255.255.0"));
        assert_eq!(n.trunc().to_string(), "10.1.0.0/24");
        assert!(n.contains(ip("10.1.0.0")) && n.contains(ip("10.1.0.255")));
        assert!(!n.contains(ip("10.1.1.0")) && !n.contains(ip("10.0.255.255")));

        let all: Ipv4Net = p("0.0.0.0/0");
        assert!(all.contains(ip("255.255.255.255")));
        assert_eq!(all.broadcast(), ip("255.255.255.255"));
        let host: Ipv4Net = p("10.1.0.7/32");
        assert!(host.contains(ip("10.1.0.7")) && !host.contains(ip("10.1.0.6")));
        assert_eq!(
            (host.network(), host.broadcast()),
            (ip("10.1.0.7"), ip("10.1.0.7"))
        );
        assert!(Ipv4Net::new(ip("10.0.0.1"), 33).is_none());

        for s in [
            "10.1.0.1",
            "10.1.0.1/",
            "10.1.0.1/33",
            "10.1.0.1/+8",
            "10.1.0.1/024",
            "10.1.0/24",
            "10.1.0.01/24",
            "/24",
            "10.1.0.1/24/1",
        ] {
            let e = s.parse::<Ipv4Net>().expect_err(s);
            assert_eq!(e.kind(), ValueKind::Ipv4Net);
        }
        assert_eq!(
            serde_json::to_string(&n).unwrap(),
            "\"10.1.0.1/24\"",
            "text form in JSON"
        );
    }

    #[test]
    fn mac_addr() {
        let m: MacAddr = p("02:00:00:00:00:01");
        assert_eq!(m.octets(), [2, 0, 0, 0, 0, 1]);
        assert!(m.is_unicast());
        assert_eq!(
            p::<MacAddr>("AA:BB:CC:DD:EE:FF").to_string(),
            "aa:bb:cc:dd:ee:ff"
        );
        assert!(!p::<MacAddr>("01:00:5e:00:00:01").is_unicast());
        assert!(!p::<MacAddr>("ff:ff:ff:ff:ff:ff").is_unicast());
        assert!(!p::<MacAddr>("00:00:00:00:00:00").is_unicast());
        for s in [
            "",
            "02:00:00:00:00",
            "02:00:00:00:00:01:02",
            "02-00-00-00-00-01",
            "2:00:00:00:00:01",
            "02:00:00:00:00:0g",
            "020000000001",
            "02:00:00:00:00:+1",
        ] {
            assert_eq!(
                s.parse::<MacAddr>().unwrap_err().kind(),
                ValueKind::MacAddr,
                "{s}"
            );
        }
    }
}
