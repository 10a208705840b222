//! How a client's address is counted by the per-address limits (the HTTP rate limits, the
//! inbound listener's connections and messages per address).

use std::net::{IpAddr, Ipv6Addr};

/// The network a client address is limited as: an IPv4 address alone (an IPv4-mapped IPv6
/// address is its IPv4 address), an IPv6 address by its /64.
///
/// Why /64: one host or one customer line usually holds a whole /64 (RFC 6177's smallest
/// end-site assignment), so a limit on single IPv6 addresses is one a client can step around
/// by rotating the low 64 bits, as often as it likes.
pub fn client_network(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::from([0u8; 4]))
    }

    #[test]
    fn ipv6_addresses_count_by_their_64_and_ipv4_by_themselves() {
        assert_eq!(client_network(ip("2001:db8:1:2::1")), ip("2001:db8:1:2::"));
        assert_eq!(client_network(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")), ip("2001:db8:1:2::"));
        assert_ne!(client_network(ip("2001:db8:1:3::1")), client_network(ip("2001:db8:1:2::1")));
        assert_eq!(client_network(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_ne!(client_network(ip("192.0.2.8")), client_network(ip("192.0.2.7")));
        assert_eq!(client_network(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(client_network(ip("::1")), ip("::"));
    }
}
