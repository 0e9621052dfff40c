//! The client address for the failed-authorisation log line: the TCP peer, or what
//! a trusted reverse proxy says in `X-Forwarded-For` / `Forwarded` when the peer is
//! one of `trusted_proxies`.

use std::net::IpAddr;

use http::HeaderMap;
use ipnet::IpNet;

pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(&canonical(*ip)));
    if !is_trusted(&peer) {
        return canonical(peer);
    }
    // Walk the chain from the nearest hop back; the first untrusted hop is the client.
    let mut chain: Vec<IpAddr> = forwarded_for(headers);
    chain.reverse();
    chain
        .into_iter()
        .map(canonical)
        .find(|ip| !is_trusted(ip))
        .unwrap_or(canonical(peer))
}

/// IPv4-mapped IPv6 addresses as the IPv4 addresses they are.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Addresses in the order the proxies appended them: `X-Forwarded-For` if present,
/// else `Forwarded`. nginx, Caddy and HAProxy append the peer to
/// `X-Forwarded-For` but pass a client's own `Forwarded` on untouched, so
/// preferring `Forwarded` would let a client pick the address that gets banned.
fn forwarded_for(headers: &HeaderMap) -> Vec<IpAddr> {
    let xff: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| parse_node(s.trim()))
        .collect();
    if !xff.is_empty() {
        return xff;
    }
    headers
        .get_all(http::header::FORWARDED)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .flat_map(|element| element.split(';'))
        .filter_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            k.eq_ignore_ascii_case("for").then(|| parse_node(v))?
        })
        .collect()
}

/// `1.2.3.4`, `"[2001:db8::1]:4711"`, `1.2.3.4:80`.
fn parse_node(v: &str) -> Option<IpAddr> {
    let v = v.trim().trim_matches('"');
    if let Some(rest) = v.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    v.parse()
        .ok()
        .or_else(|| v.rsplit_once(':').and_then(|(h, _)| h.parse().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn untrusted_peer_is_the_client() {
        let h = headers(&[("x-forwarded-for", "203.0.113.9")]);
        let peer: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(client_ip(peer, &h, &[]), peer);
    }

    #[test]
    fn trusted_proxy_chain() {
        let trusted = [
            "127.0.0.0/8".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ];
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        let h = headers(&[("x-forwarded-for", "198.51.100.7, 203.0.113.9, 10.1.2.3")]);
        assert_eq!(client_ip(peer, &h, &trusted).to_string(), "203.0.113.9");
        let h = headers(&[("forwarded", "for=\"[2001:db8::1]:4711\";proto=https")]);
        assert_eq!(client_ip(peer, &h, &trusted).to_string(), "2001:db8::1");
        let h = headers(&[]);
        assert_eq!(client_ip(peer, &h, &trusted), peer);
        // A client's own Forwarded cannot outvote what the proxy appended.
        let h = headers(&[
            ("forwarded", "for=192.0.2.66"),
            ("x-forwarded-for", "203.0.113.9"),
        ]);
        assert_eq!(client_ip(peer, &h, &trusted).to_string(), "203.0.113.9");
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        let h = headers(&[("x-forwarded-for", "192.0.2.1:5000")]);
        assert_eq!(client_ip(mapped, &h, &trusted).to_string(), "192.0.2.1");
    }
}
