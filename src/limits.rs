//! Admission by count: at most so many of a thing (connections, uploads) in all
//! and from one client, and the descriptor budget that bounds both
//! (docs/limits.md).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use ipnet::IpNet;

use crate::client_ip::canonical;
use crate::config::Limits;
use crate::metrics::Busy;

/// Descriptors kept back from connections and files in flight: listeners, the
/// control socket, the runtime's own, logging, a `files` command's answer.
const RESERVED_DESCRIPTORS: u64 = 64;

/// Raises the soft descriptor limit to the hard one (as Go and nginx's
/// `worker_rlimit_nofile` do) and returns what it now is.
pub fn raise_descriptor_limit() -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let current = limit.current.unwrap_or(u64::MAX);
    // Past 2^20 there is no gain, and select()-era code elsewhere may break.
    let wanted = limit.maximum.unwrap_or(u64::MAX).min(1 << 20);
    if wanted > current {
        let raised = Rlimit {
            current: Some(wanted),
            maximum: limit.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            return wanted;
        }
    }
    current
}

/// The most connections and uploads that `descriptors` can carry: each
/// connection may hold one file open besides its socket, so half of what is
/// left after the reserve goes to connections, and uploads get half of that.
pub fn descriptor_caps(descriptors: u64) -> (usize, usize) {
    let usable = descriptors.saturating_sub(RESERVED_DESCRIPTORS).max(8);
    let connections = usize::try_from(usable / 2).unwrap_or(usize::MAX);
    (connections, (connections / 2).max(1))
}

/// Lowers the connection and upload caps to what the descriptor limit (raised
/// first) can carry, saying so when it does: running out of descriptors fails
/// everyone, a cap refuses only the newest.
pub fn fit_descriptors(limits: &mut Limits) {
    let descriptors = raise_descriptor_limit();
    let (connections, uploads) = descriptor_caps(descriptors);
    if limits.max_connections > connections || limits.max_uploads > uploads {
        tracing::warn!(
            descriptors,
            max_connections = limits.max_connections.min(connections),
            max_uploads = limits.max_uploads.min(uploads),
            "the descriptor limit (ulimit -n, LimitNOFILE=) lowers the connection and upload caps"
        );
    }
    limits.max_connections = limits.max_connections.min(connections);
    limits.max_uploads = limits.max_uploads.min(uploads);
}

/// What a client is counted as: its address, or its /64 for IPv6, since one
/// IPv6 host commonly holds a whole /64. IPv4-mapped IPv6 counts as IPv4.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        v4 => v4,
    }
}

/// Why a gate said no.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The cap for everyone together.
    Total,
    /// The cap for one client.
    Client,
}

impl Full {
    /// Why, for metrics (the same for connections and uploads).
    pub fn busy(self) -> Busy {
        match self {
            Full::Total => Busy::Total,
            Full::Client => Busy::PerClient,
        }
    }
}

/// Counts holders in all and per client, up to two caps.
#[derive(Debug)]
pub struct Gate {
    inner: Mutex<Counts>,
    max_total: usize,
    max_per_client: usize,
    /// Peers that speak for many clients (reverse proxies): not capped as one.
    trusted: Vec<IpNet>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_client: HashMap<IpAddr, usize>,
}

impl Gate {
    pub fn new(max_total: usize, max_per_client: usize, trusted: Vec<IpNet>) -> Arc<Gate> {
        Arc::new(Gate {
            inner: Mutex::default(),
            max_total,
            max_per_client,
            trusted,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Counts> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn max_total(&self) -> usize {
        self.max_total
    }

    /// Holders now.
    pub fn count(&self) -> usize {
        self.lock().total
    }

    /// Admits one holder for `client`, or says which cap it would break.
    /// `room` may make space when everyone together is at the cap (by closing an
    /// idle holder); it is called with the count and says whether it did.
    pub fn enter(
        self: &Arc<Self>,
        client: IpAddr,
        room: impl FnOnce() -> bool,
    ) -> Result<Pass, Full> {
        let client = canonical(client);
        let key = (!self.trusted.iter().any(|n| n.contains(&client))).then(|| client_key(client));
        let mut counts = self.lock();
        if let Some(key) = key
            && counts.per_client.get(&key).copied().unwrap_or(0) >= self.max_per_client
        {
            return Err(Full::Client);
        }
        if counts.total >= self.max_total && !room() {
            return Err(Full::Total);
        }
        counts.total += 1;
        if let Some(key) = key {
            *counts.per_client.entry(key).or_default() += 1;
        }
        Ok(Pass {
            gate: Arc::clone(self),
            key,
        })
    }
}

/// One admitted holder; leaves the gate when dropped.
#[derive(Debug)]
pub struct Pass {
    gate: Arc<Gate>,
    key: Option<IpAddr>,
}

impl Drop for Pass {
    fn drop(&mut self) {
        let mut counts = self.gate.lock();
        counts.total = counts.total.saturating_sub(1);
        if let Some(key) = self.key
            && let Some(n) = counts.per_client.get_mut(&key)
        {
            *n -= 1;
            if *n == 0 {
                counts.per_client.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn caps_in_all_and_per_client() {
        let gate = Gate::new(3, 2, vec!["10.0.0.0/8".parse().expect("net")]);
        let a1 = gate.enter(ip("192.0.2.1"), || false).expect("first");
        let _a2 = gate.enter(ip("192.0.2.1"), || false).expect("second");
        assert_eq!(
            gate.enter(ip("192.0.2.1"), || false).err(),
            Some(Full::Client)
        );
        let _p = gate.enter(ip("10.1.1.1"), || false).expect("proxy");
        assert_eq!(
            gate.enter(ip("10.1.1.1"), || false).err(),
            Some(Full::Total)
        );
        // A holder that makes room lets one more in.
        let _p2 = gate.enter(ip("10.1.1.1"), || true).expect("room made");
        drop(a1);
        assert_eq!(gate.count(), 3);
        assert!(gate.enter(ip("192.0.2.1"), || true).is_ok());
    }

    #[test]
    fn ipv6_counts_per_64() {
        assert_eq!(client_key(ip("2001:db8:1:2:3::4")), ip("2001:db8:1:2::"));
        assert_eq!(client_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        let gate = Gate::new(10, 1, Vec::new());
        let _a = gate.enter(ip("2001:db8::1"), || false).expect("first");
        assert_eq!(
            gate.enter(ip("2001:db8::2"), || false).err(),
            Some(Full::Client)
        );
        assert!(gate.enter(ip("2001:db8:0:1::2"), || false).is_ok());
    }

    #[test]
    fn descriptor_caps_leave_room_for_files() {
        assert_eq!(descriptor_caps(256), (96, 48));
        assert_eq!(descriptor_caps(1024), (480, 240));
        assert_eq!(descriptor_caps(10), (4, 2));
    }
}
