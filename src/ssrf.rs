//! The guard against server-side request forgery: which addresses the hub may be asked to
//! call on a customer's behalf (media URLs checked before a reply, outbound webhook
//! endpoints). The internet's addresses are allowed; loopback, private, link-local (where cloud
//! metadata services live), CGNAT and other special ranges are refused unless an operator
//! allow-lists them (an on-premise receiver).
//!
//! A host name is refused when ANY of its addresses is refused, so a name cannot smuggle a
//! private address in beside a public one. Checking a name when it is saved is not enough
//! (its answer may change: DNS rebinding), so the HTTP client of outbound webhooks resolves
//! through [`GuardedResolver`], which applies the same rule at connect time.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// Whether the internet could reach `ip`.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_multicast()
                || a == 0 // "this network" 0/8
                || a >= 240 // reserved 240/4
                || a == 100 && (b & 0xc0) == 64) // CGNAT 100.64/10
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local (and AWS's fd00:ec2::254)
                || (first & 0xffc0) == 0xfe80) // link local
        }
    }
}

/// What an operator allow-listed: host names (exact, case-insensitive), addresses and
/// networks (`10.0.0.0/8`, `fd00::/8`).
#[derive(Debug, Clone, Default)]
pub struct Guard {
    hosts: Vec<String>,
    nets: Vec<(IpAddr, u8)>,
}

impl Guard {
    /// Parses allow-list entries; the error names the entry that is neither a host name nor an
    /// address nor a network.
    pub fn new(entries: &[String]) -> Result<Self, String> {
        let mut guard = Guard::default();
        for entry in entries {
            let entry = entry.trim();
            if let Some((addr, bits)) = entry.split_once('/') {
                let addr: IpAddr = addr
                    .parse()
                    .map_err(|_| format!("{entry:?} is not a network (address/bits)"))?;
                let max = if addr.is_ipv4() { 32 } else { 128 };
                let bits: u8 = bits
                    .parse()
                    .ok()
                    .filter(|b| *b <= max)
                    .ok_or_else(|| format!("{entry:?}: the prefix must be 0 to {max}"))?;
                guard.nets.push((addr, bits));
            } else if let Ok(addr) = entry.trim_matches(['[', ']']).parse::<IpAddr>() {
                guard
                    .nets
                    .push((addr, if addr.is_ipv4() { 32 } else { 128 }));
            } else if !entry.is_empty()
                && entry
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
            {
                guard.hosts.push(entry.to_ascii_lowercase());
            } else {
                return Err(format!(
                    "{entry:?} is not a host name, an address or a network"
                ));
            }
        }
        Ok(guard)
    }

    /// Whether the host name itself is allow-listed (then its addresses are not checked).
    pub fn host_allowed(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.hosts.contains(&host)
    }

    /// Whether the hub may call `ip`.
    pub fn addr_allowed(&self, ip: IpAddr) -> bool {
        is_public(ip)
            || self
                .nets
                .iter()
                .any(|(net, bits)| contains(*net, *bits, ip))
    }

    /// Checks a URL's host: an address literal directly, a name by resolving it. The error is a
    /// sentence for the caller (`points at 10.0.0.1, …`).
    pub async fn check_url(&self, url: &url::Url) -> Result<(), String> {
        let port = url.port_or_known_default().unwrap_or(443);
        match url.host() {
            None => Err("has no host".to_owned()),
            Some(url::Host::Ipv4(ip)) => self.check_addrs([IpAddr::V4(ip)]),
            Some(url::Host::Ipv6(ip)) => self.check_addrs([IpAddr::V6(ip)]),
            Some(url::Host::Domain(name)) => {
                if self.host_allowed(name) {
                    return Ok(());
                }
                let addrs: Vec<IpAddr> = tokio::net::lookup_host((name, port))
                    .await
                    .map_err(|_| "could not be resolved".to_owned())?
                    .map(|a| a.ip())
                    .collect();
                if addrs.is_empty() {
                    return Err("could not be resolved".to_owned());
                }
                self.check_addrs(addrs)
            }
        }
    }

    /// Refuses when any address is not allowed.
    pub fn check_addrs(&self, addrs: impl IntoIterator<Item = IpAddr>) -> Result<(), String> {
        for ip in addrs {
            if !self.addr_allowed(ip) {
                return Err(format!(
                    "points at {ip}, a loopback, private, link-local or reserved address (allow-list it in webhooks_out.allowed_hosts for an on-premise receiver)"
                ));
            }
        }
        Ok(())
    }
}

fn contains(net: IpAddr, bits: u8, ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

/// A resolver for reqwest that answers only with addresses the guard allows: a name with any
/// refused address fails to resolve, so the request never connects.
pub struct GuardedResolver(pub Arc<Guard>);

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.0.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if !guard.host_allowed(&host) {
                guard
                    .check_addrs(addrs.iter().map(SocketAddr::ip))
                    .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { e.into() })?;
            }
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.1.2.3",
            "::1",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn the_allow_list_lifts_only_what_it_names() {
        let none = Guard::default();
        let listed = Guard::new(&[
            "10.0.0.0/8".to_owned(),
            "127.0.0.1".to_owned(),
            "crm.internal".to_owned(),
        ])
        .unwrap();
        for refused in ["127.0.0.1", "169.254.169.254", "10.0.0.1"] {
            let ip: IpAddr = refused.parse().unwrap();
            assert!(none.check_addrs([ip]).is_err(), "{refused}");
        }
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(listed.addr_allowed(ip("10.0.0.1")));
        assert!(listed.addr_allowed(ip("::ffff:10.9.9.9")));
        assert!(listed.addr_allowed(ip("127.0.0.1")));
        assert!(!listed.addr_allowed(ip("127.0.0.2")));
        assert!(!listed.addr_allowed(ip("169.254.169.254")));
        // A name answering a public and a private address is refused.
        assert!(
            none.check_addrs([ip("93.184.216.34"), ip("10.0.0.1")])
                .is_err()
        );
        assert!(listed.host_allowed("CRM.internal."));
        assert!(!listed.host_allowed("internal"));
        assert!(Guard::new(&["10.0.0.0/33".to_owned()]).is_err());
        assert!(Guard::new(&["http://x".to_owned()]).is_err());
    }

    #[tokio::test]
    async fn names_are_resolved_before_they_are_judged() {
        let none = Guard::default();
        for url in [
            "https://127.0.0.1/hook",
            "https://169.254.169.254/latest/meta-data",
            "https://10.0.0.1/",
            "https://localhost/hook",
            "https://[::1]/",
        ] {
            let url = url::Url::parse(url).unwrap();
            assert!(none.check_url(&url).await.is_err(), "{url}");
        }
        let listed = Guard::new(&["localhost".to_owned()]).unwrap();
        let url = url::Url::parse("https://localhost/hook").unwrap();
        assert!(listed.check_url(&url).await.is_ok());
    }
}
