//! The client address behind trusted proxies. Fields, one a line: the TCP peer,
//! the trusted CIDRs (comma-separated), then header lines (`x-forwarded-for: ...`,
//! `forwarded: ...`).
//!
//! The answer is the peer unless the peer is trusted; otherwise it is an address
//! written in the headers that is not itself trusted, or the peer when every hop
//! is; never an IPv4-mapped IPv6 address (fail2ban would not match it).

use std::net::IpAddr;

use ipnet::IpNet;
use upslot::client_ip::client_ip;

use crate::input::{fields, headers, text};

pub fn check(data: &[u8]) {
    let mut f = fields(data);
    let Some(peer) = f
        .next()
        .and_then(text)
        .and_then(|s| s.trim().parse::<IpAddr>().ok())
    else {
        return;
    };
    let trusted: Vec<IpNet> = f
        .next()
        .and_then(text)
        .unwrap_or("")
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let map = headers(f);
    let got = client_ip(peer, &map, &trusted);
    let peer = canonical(peer);
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(&ip));
    assert_eq!(got, canonical(got), "{got} is IPv4-mapped");
    if !is_trusted(peer) {
        assert_eq!(got, peer, "an untrusted peer's headers were believed");
        return;
    }
    if got != peer {
        assert!(!is_trusted(got), "{got} is a trusted proxy, not the client");
        let written: Vec<IpAddr> = map
            .iter()
            .filter(|(name, _)| *name == "x-forwarded-for" || *name == "forwarded")
            .filter_map(|(_, v)| v.to_str().ok())
            .flat_map(candidates)
            .collect();
        assert!(
            written.contains(&got),
            "{got} is written nowhere in {map:?}"
        );
    }
    // With every address trusted, no header can name anyone but the peer.
    let everyone: [IpNet; 2] = [
        "0.0.0.0/0".parse().expect("CIDR"),
        "::/0".parse().expect("CIDR"),
    ];
    assert_eq!(client_ip(peer, &map, &everyone), peer);
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Every address a header value could be read to hold, however it is split.
fn candidates(value: &str) -> Vec<IpAddr> {
    value
        .split(|c: char| matches!(c, ',' | ';' | '"' | '[' | ']' | '=') || c.is_whitespace())
        .flat_map(|word| {
            let host = word.rsplit_once(':').map(|(h, _)| h);
            [word.parse().ok(), host.and_then(|h| h.parse().ok())]
        })
        .flatten()
        .map(canonical)
        .collect()
}
