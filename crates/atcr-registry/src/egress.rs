//! Where the registry may send requests on a user's behalf.
//!
//! A DID document names its PDS, and whoever controls the document chooses
//! that URL: logging in with a handle, or co-signing, would otherwise make
//! the registry POST to any address (SSRF), loopback and the cloud metadata
//! service included. Remote PDS endpoints must therefore be `https` (plain
//! `http` only with `identity.allow_plain_http`) and resolve to public
//! addresses, unless an address is in `registry.remote_pds_allow`.
//!
//! Names are checked in the HTTP client's resolver, so the address checked is
//! the address connected to (no DNS rebinding between check and use); IP
//! literals, which the client does not resolve, by [`Egress::check_url`].

use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use url::Url;

/// The egress rules.
#[derive(Debug, Clone, Default)]
pub struct Egress {
    /// Accept `http://` PDS endpoints.
    pub allow_plain_http: bool,
    /// Networks allowed although not public.
    pub allow: Vec<IpNet>,
    /// Host names never filtered (the registry's own public host name).
    pub allow_hosts: Vec<String>,
    /// Origins always allowed (the registry's own, `scheme://host:port`).
    pub allow_origins: Vec<String>,
}

/// Parses networks (`10.0.0.0/8`) and single addresses (`127.0.0.1`).
pub fn parse_networks(list: &[String]) -> Result<Vec<IpNet>, String> {
    list.iter()
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("{s:?} is not an address or a network (a.b.c.d/n)"))
        })
        .collect()
}

impl Egress {
    /// Whether a connection to `ip` is allowed.
    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.allow.iter().any(|n| n.contains(&ip)) || is_public(ip)
    }

    /// Whether `host` is never filtered (the registry's own name).
    pub fn allows_host(&self, host: &str) -> bool {
        self.allow_hosts
            .iter()
            .any(|h| h.eq_ignore_ascii_case(host))
    }

    /// Checks a URL's scheme and, for an IP literal, its address.
    pub fn check_url(&self, url: &Url) -> Result<(), String> {
        if self
            .allow_origins
            .contains(&url.origin().ascii_serialization())
        {
            return Ok(());
        }
        let ip = match url.host() {
            Some(url::Host::Ipv4(a)) => Some(IpAddr::V4(a)),
            Some(url::Host::Ipv6(a)) => Some(IpAddr::V6(a)),
            Some(url::Host::Domain(_)) => None,
            None => return Err("a PDS endpoint without a host".into()),
        };
        // An address of an explicitly allowed network may be spoken to in
        // plain http (a PDS on the LAN); anything else needs https.
        let listed = ip.is_some_and(|ip| self.allow.iter().any(|n| n.contains(&ip)));
        match url.scheme() {
            "https" => {}
            "http" if self.allow_plain_http || listed => {}
            s => {
                return Err(format!(
                    "{s}:// PDS endpoints are not allowed (identity.allow_plain_http)"
                ));
            }
        }
        match ip {
            Some(ip) if !self.allows_ip(ip) => Err(format!(
                "{ip} is not a public address (registry.remote_pds_allow)"
            )),
            _ => Ok(()),
        }
    }

    /// A DNS resolver for the HTTP client that drops disallowed addresses.
    pub fn resolver(self: &Arc<Self>) -> Arc<Resolver> {
        Arc::new(Resolver(self.clone()))
    }
}

/// Public unicast: not loopback, private, link-local, shared (CGNAT),
/// unspecified, multicast, broadcast, documentation or unique-local.
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            !(a.is_loopback()
                || a.is_private()
                || a.is_link_local()
                || a.is_unspecified()
                || a.is_multicast()
                || a.is_broadcast()
                || a.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || o[0] >= 240)
        }
        IpAddr::V6(a) => {
            let s = a.segments();
            !(a.is_loopback()
                || a.is_unspecified()
                || a.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || s[0] == 0x2001 && s[1] == 0x0db8)
        }
    }
}

/// The HTTP client's resolver: the system's, minus disallowed addresses.
pub struct Resolver(Arc<Egress>);

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let egress = self.0.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let own = egress.allows_host(&host);
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = all
                .iter()
                .copied()
                .filter(|a| own || egress.allows_ip(a.ip()))
                .collect();
            if allowed.is_empty() {
                let e: Box<dyn std::error::Error + Send + Sync> =
                    format!("{host} resolves to no public address (registry.remote_pds_allow)")
                        .into();
                return Err(e);
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_special_addresses_are_refused_unless_allowed() {
        let e = Egress::default();
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "224.0.0.1",
        ] {
            assert!(!e.allows_ip(bad.parse().unwrap()), "{bad}");
        }
        for good in ["1.1.1.1", "2606:4700::1111"] {
            assert!(e.allows_ip(good.parse().unwrap()), "{good}");
        }
        let e = Egress {
            allow: vec!["127.0.0.0/8".parse().unwrap()],
            ..Egress::default()
        };
        assert!(e.allows_ip("127.0.0.1".parse().unwrap()));
        // An allowed network may be spoken to in plain http; a name needs https.
        assert!(e.check_url(&"http://127.0.0.1:1/".parse().unwrap()).is_ok());
        assert!(
            e.check_url(&"http://pds.example/".parse().unwrap())
                .is_err()
        );
        assert!(
            e.check_url(&"https://pds.example/".parse().unwrap())
                .is_ok()
        );
        assert!(
            e.check_url(&"https://127.0.0.1:1/".parse().unwrap())
                .is_ok()
        );
        assert!(e.check_url(&"https://10.0.0.1/".parse().unwrap()).is_err());
    }
}
