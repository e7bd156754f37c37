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
