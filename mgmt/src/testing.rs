//! What the unit tests of several modules share: values written in their text form, as the
//! configuration file and the socket spell them, so a test reads like the documents it checks.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// `s` parsed as a `T`; panics (failing the test) when it does not parse.
pub(crate) fn p<T: FromStr>(s: &str) -> T
where
    T::Err: fmt::Debug,
{
    s.parse().unwrap()
}

/// `s` parsed as an IPv4 address.
pub(crate) fn ip(s: &str) -> Ipv4Addr {
    p(s)
}

/// An `available` IPv4 endpoint of account 111111111111 with no groups and no policy.
pub(crate) fn endpoint(
    id: &str,
    vpc: &str,
    service: &str,
    ip: Option<Ipv4Addr>,
) -> crate::model::Endpoint {
    crate::model::Endpoint {
        id: p(id),
        owner: p("111111111111"),
        vpc_id: p(vpc),
        service_id: p(service),
        ip,
        ip_address_type: crate::model::IpAddressType::Ipv4,
        ip6: None,
        state: crate::model::EndpointState::Available,
        security_group_ids: vec![],
        policy: None,
        created_at: 0,
        deleted_at: None,
    }
}
