//! Where mail for a domain goes (RFC 5321 §5.1, RFC 7505): a pure function of the MX answer.
//!
//! Invariants: a null MX is a permanent refusal, never a fallback to the domain's address; a
//! failed lookup is never read as "no MX" (that would deliver to the wrong host); exchanges
//! come out in preference order, each once.

use crate::ports::{DnsError, MxRecord};

/// The hosts to try, in order, for one recipient domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Try these hosts in order (exchanges by preference, or the domain itself when it has no
    /// MX records: the implicit MX).
    Hosts(Vec<String>),
    /// The domain publishes a null MX (`0 .`): it accepts no mail. Permanent.
    NullMx,
    /// The domain does not exist. Permanent.
    NoSuchDomain,
    /// The MX lookup failed: try again later.
    Unknown(String),
}

/// The route for `domain` given the MX lookup's result and whether the domain itself has an
/// address (asked only when there are no MX records).
pub fn route(domain: &str, mx: Result<Vec<MxRecord>, DnsError>, domain_has_address: impl FnOnce() -> bool) -> Route {
    match mx {
        Ok(records) if !records.is_empty() => {
            // RFC 7505: a single record with exchange "." means no mail, whatever else.
            if records.iter().any(|r| r.exchange == "." || r.exchange.is_empty()) {
                return Route::NullMx;
            }
            let mut records = records;
            // Stable: equal preferences keep the resolver's order (which rotates them).
            records.sort_by_key(|r| r.preference);
            let mut hosts: Vec<String> = Vec::with_capacity(records.len());
            for r in records {
                let h = r.exchange.trim_end_matches('.').to_ascii_lowercase();
                if !hosts.contains(&h) {
                    hosts.push(h);
                }
            }
            Route::Hosts(hosts)
        }
        Ok(_) | Err(DnsError::NotFound { .. }) => {
            // No MX: the domain itself is the implicit MX, if it has an address (§5.1).
            if domain_has_address() { Route::Hosts(vec![domain.to_ascii_lowercase()]) } else { Route::NoSuchDomain }
        }
        Err(DnsError::Failed { message, .. }) => Route::Unknown(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mx(p: u16, h: &str) -> MxRecord {
        MxRecord { preference: p, exchange: h.into() }
    }

    #[test]
    fn exchanges_in_preference_order_each_once() {
        let r = route(
            "example.com",
            Ok(vec![mx(20, "b.example.com."), mx(10, "A.example.com"), mx(30, "a.example.com")]),
            unreachable_address_question,
        );
        assert_eq!(r, Route::Hosts(vec!["a.example.com".into(), "b.example.com".into()]));
    }

    #[test]
    fn a_null_mx_refuses_mail_and_never_falls_back() {
        assert_eq!(route("example.com", Ok(vec![mx(0, ".")]), || true), Route::NullMx);
    }

    #[test]
    fn no_mx_falls_back_to_the_domain_only_if_it_has_an_address() {
        let not_found = || Err(DnsError::NotFound { name: "example.com".into(), rtype: "MX" });
        assert_eq!(route("Example.com", not_found(), || true), Route::Hosts(vec!["example.com".into()]));
        assert_eq!(route("example.com", not_found(), || false), Route::NoSuchDomain);
        assert_eq!(route("example.com", Ok(vec![]), || true), Route::Hosts(vec!["example.com".into()]));
    }

    #[test]
    fn a_failed_lookup_is_not_an_absent_mx() {
        let failed = Err(DnsError::Failed { name: "example.com".into(), rtype: "MX", message: "timeout".into() });
        assert_eq!(route("example.com", failed, || true), Route::Unknown("timeout".into()));
    }

    #[allow(clippy::panic)]
    fn unreachable_address_question() -> bool {
        panic!("the domain's address is only asked when it has no MX")
    }
}
