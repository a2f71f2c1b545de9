//! The allowlist: networks (optionally tied to one peer) whose connections may use the
//! allowlisted system and transient scopes when the normal ones are full, and which are
//! counted per network rather than per subnet; and trusted peers, whose connections may use
//! the allowlisted scopes from any address.
//!
//! # Synchronization
//!
//! Readers load the current [`AllowTable`] from a `LimitSlot` (an `ArcSwap`): no lock, no
//! reference count in normal builds. Writers serialize on a mutex, copy the table, change the
//! copy and store it; a reader sees either the old table or the new one, whole. Beside the
//! table, an atomic count of its entries lets the open path skip the table entirely while the
//! allowlist is empty; it is stored (Release) after the table, so a reader that sees a
//! non-zero count (Acquire) then loads that table or a newer one.

use std::{
    collections::{HashMap, HashSet},
    fmt,
    net::IpAddr,
    sync::{Arc as TableArc, Mutex},
};

use ipnet::IpNet;
use libp2p_identity::PeerId;
use multiaddr::{Multiaddr, Protocol};

use super::{endpoint_ip, table::NetTable};
use crate::{
    error::{AllowlistEntryProblem, Error, InvalidAllowlistEntry},
    sync::{Arc, AtomicU64, LimitSlot, Ordering},
};

/// One allowlist entry: a network, and the peer it is reserved for if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    network: IpNet,
    peer: Option<PeerId>,
}

impl Entry {
    /// Reads an entry as go's `toIPNet` does: the last `/ip4` or `/ip6`, the `/ipcidr` and the
    /// `/p2p` components, wherever they are, stopping once all three have been seen.
    fn parse(entry: &Multiaddr) -> Result<Entry, Error> {
        let invalid = |problem| {
            Error::InvalidAllowlistEntry(Box::new(InvalidAllowlistEntry::new(
                entry.clone(),
                problem,
            )))
        };
        let (mut ip, mut cidr, mut peer) = (None, None, None);
        for component in entry.iter() {
            match component {
                Protocol::Ip4(addr) => ip = Some(IpAddr::V4(addr)),
                Protocol::Ip6(addr) => ip = Some(IpAddr::V6(addr)),
                Protocol::Ipcidr(length) => cidr = Some(length),
                Protocol::P2p(id) => peer = Some(id),
                _ => {}
            }
            if ip.is_some() && cidr.is_some() && peer.is_some() {
                break;
            }
        }
        let ip = ip.ok_or_else(|| invalid(AllowlistEntryProblem::MissingIp))?;
        let host_bits = if ip.is_ipv4() { 32 } else { 128 };
        let length = cidr.unwrap_or(host_bits);
        let network = IpNet::new(ip, length)
            .map_err(|_| {
                invalid(AllowlistEntryProblem::PrefixTooLong {
                    length,
                    max: host_bits,
                })
            })?
            .trunc();
        Ok(Entry { network, peer })
    }
}

/// What lookups read: the networks with how many entries name each (go keeps duplicates, and
/// `remove` takes one away).
#[derive(Clone, Debug)]
pub(crate) struct AllowTable {
    /// Entries without a peer.
    general: NetTable<u32>,
    /// Each peer's entries, shared between copies of the table until a change to that peer's
    /// entries copies them: a change costs in proportion to the general entries and that
    /// peer's, not to every peer's.
    peers: HashMap<PeerId, TableArc<NetTable<u32>>>,
    /// Every entry, general and peer-specific: what `allowed` and the per-IP counting ask.
    any: NetTable<u32>,
    /// How many address entries there are, duplicates included.
    entries: u64,
    /// Trusted peers: allowed whatever their address (see [`Allowlist::add_peer`]).
    trusted: HashSet<PeerId>,
}

impl AllowTable {
    fn new() -> Self {
        AllowTable {
            general: NetTable::new(),
            peers: HashMap::new(),
            any: NetTable::new(),
            entries: 0,
            trusted: HashSet::new(),
        }
    }

    fn add(&mut self, entry: Entry) {
        let list = match entry.peer {
            Some(peer) => TableArc::make_mut(
                self.peers
                    .entry(peer)
                    .or_insert_with(|| TableArc::new(NetTable::new())),
            ),
            None => &mut self.general,
        };
        *list.get_or_insert(entry.network, || 0) += 1;
        *self.any.get_or_insert(entry.network, || 0) += 1;
        self.entries += 1;
    }

    /// Takes one entry equal to `entry` away; says whether there was one.
    fn remove(&mut self, entry: Entry) -> bool {
        let list = match entry.peer {
            Some(peer) => match self.peers.get_mut(&peer) {
                Some(list) => TableArc::make_mut(list),
                None => return false,
            },
            None => &mut self.general,
        };
        if !take_one(list, entry.network) {
            return false;
        }
        take_one(&mut self.any, entry.network);
        self.entries -= 1;
        if let Some(peer) = entry.peer
            && self.peers.get(&peer).is_some_and(|list| list.is_empty())
        {
            self.peers.remove(&peer);
        }
        true
    }

    /// The most specific allowlisted network (general or of any peer) that contains `ip`.
    #[inline]
    pub(crate) fn network_of(&self, ip: IpAddr) -> Option<IpNet> {
        self.any.longest_match(ip).map(|(network, _)| network)
    }

    /// Whether `ip` is in a general entry or in one of `peer`'s.
    fn allows_peer(&self, peer: &PeerId, ip: IpAddr) -> bool {
        self.general.longest_match(ip).is_some()
            || self
                .peers
                .get(peer)
                .is_some_and(|list| list.longest_match(ip).is_some())
    }
}

/// Decrements the count of `network`, removing it at zero; false if it was absent.
fn take_one(table: &mut NetTable<u32>, network: IpNet) -> bool {
    let Some(count) = table.get_mut(network) else {
        return false;
    };
    *count = count.saturating_sub(1);
    if *count == 0 {
        table.remove(network);
    }
    true
}

/// The allowlist of a [`ResourceManager`](crate::ResourceManager) (go's `Allowlist`), from
/// [`ResourceManager::allowlist`](crate::ResourceManager::allowlist); a cheap handle that can
/// be kept and changed at any time, also while connections are being opened.
///
/// An entry is a multiaddr with an `/ip4` or `/ip6` component, optionally an `/ipcidr` (host
/// bits are ignored: `/ip4/1.2.3.4/ipcidr/24` is `1.2.3.0/24`), and optionally a `/p2p`
/// component that reserves the entry for one peer. Other components are ignored, so a
/// peer's full address (`/ip4/1.2.3.4/tcp/4001/p2p/<id>`) is an entry.
///
/// What an entry does, as in go:
/// - a connection whose normal reservation is refused (the system or transient scope is
///   full) and whose address is in any entry is opened in the allowlisted system and
///   transient scopes instead;
/// - when `set_peer` then names a peer that no general entry and none of that peer's entries
///   allow, the connection moves back to the normal scopes (and fails if they are full);
/// - an address in any entry, general or peer-specific, is counted against its allowlisted
///   network rather than its subnets (see [`IpLimits`](crate::IpLimits)): the per-IP limits
///   are lifted for it.
///
/// A peer can also be trusted by its id alone, whatever its address
/// ([`add_peer`](Self::add_peer)), for peers whose addresses are not known in advance: see
/// there for what that does and does not lift.
///
/// Lookups take no lock and cost a few hash probes, however many entries there are; changes
/// copy the table, so they cost in proportion to its size.
///
/// ```
/// use rcmgr::{ConcreteLimitConfig, ResourceManager};
/// let rm = ResourceManager::new(ConcreteLimitConfig::infinite());
/// let allowlist = rm.allowlist();
/// let peer = rcmgr::PeerId::random();
/// allowlist.add(&"/ip4/192.0.2.0/ipcidr/24".parse()?)?;
/// allowlist.add(&format!("/ip6/2001:db8::1/p2p/{peer}").parse()?)?;
///
/// assert!(allowlist.allowed(&"/ip4/192.0.2.99/tcp/4001".parse()?));
/// assert!(allowlist.allowed(&"/ip6/2001:db8::1/udp/1/quic-v1".parse()?));
/// assert!(allowlist.allowed_peer_and_multiaddr(peer, &"/ip6/2001:db8::1/tcp/1".parse()?));
/// assert!(!allowlist.allowed_peer_and_multiaddr(rcmgr::PeerId::random(), &"/ip6/2001:db8::1/tcp/1".parse()?));
///
/// assert!(allowlist.remove(&"/ip4/192.0.2.0/ipcidr/24".parse()?)?);
/// assert!(!allowlist.allowed(&"/ip4/192.0.2.99/tcp/4001".parse()?));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Allowlist {
    shared: Arc<Shared>,
}

struct Shared {
    table: LimitSlot<AllowTable>,
    /// The address entries of the table last stored (see the module docs).
    entries: AtomicU64,
    /// The trusted peers of the table last stored, stored and loaded as `entries` is.
    trusted: AtomicU64,
    /// Serializes writers: each copies the table, changes the copy and stores it.
    edits: Mutex<()>,
}

impl fmt::Debug for Allowlist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Allowlist").finish_non_exhaustive()
    }
}

impl Allowlist {
    pub(crate) fn new() -> Self {
        Allowlist {
            shared: Arc::new(Shared {
                table: LimitSlot::new(Arc::new(AllowTable::new())),
                entries: AtomicU64::new(0),
                trusted: AtomicU64::new(0),
                edits: Mutex::new(()),
            }),
        }
    }

    /// Adds an entry. Adding the same entry twice keeps two (as go does): it takes two
    /// [`remove`](Self::remove)s to take it away.
    ///
    /// Errors with [`Error::InvalidAllowlistEntry`] if the entry has no `/ip4` or `/ip6`
    /// component or an `/ipcidr` longer than its address; the allowlist is then unchanged.
    ///
    /// ```
    /// # let rm = rcmgr::ResourceManager::new(rcmgr::ConcreteLimitConfig::infinite());
    /// let err = rm.allowlist().add(&format!("/p2p/{}", rcmgr::PeerId::random()).parse()?).unwrap_err();
    /// assert!(err.to_string().ends_with("missing ip address"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn add(&self, entry: &Multiaddr) -> Result<(), Error> {
        self.add_all(std::iter::once(entry))
    }

    /// Adds every entry, or none of them if one is invalid. One copy of the table for all.
    pub(crate) fn add_all<'a>(
        &self,
        entries: impl IntoIterator<Item = &'a Multiaddr>,
    ) -> Result<(), Error> {
        let parsed = entries
            .into_iter()
            .map(Entry::parse)
            .collect::<Result<Vec<_>, _>>()?;
        self.edit(|table| {
            for entry in parsed {
                table.add(entry);
            }
        });
        Ok(())
    }

    /// Removes one entry equal to `entry` (same network after masking, same peer or none);
    /// returns whether there was one. go returns no such answer and also succeeds when
    /// nothing matched.
    ///
    /// ```
    /// # let rm = rcmgr::ResourceManager::new(rcmgr::ConcreteLimitConfig::infinite());
    /// let entry = "/ip4/10.0.0.1".parse()?;
    /// rm.allowlist().add(&entry)?;
    /// rm.allowlist().add(&entry)?;
    /// assert!(rm.allowlist().remove(&entry)?);
    /// assert!(rm.allowlist().allowed(&entry));
    /// assert!(rm.allowlist().remove(&entry)?);
    /// assert!(!rm.allowlist().remove(&entry)?);
    /// assert!(!rm.allowlist().allowed(&entry));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn remove(&self, entry: &Multiaddr) -> Result<bool, Error> {
        let entry = Entry::parse(entry)?;
        Ok(self.edit(|table| table.remove(entry)))
    }

    /// Whether the endpoint's IP is in any entry, general or reserved for any peer (go's
    /// `Allowed`). An endpoint without a leading IP (`/dns4/…`, `/unix/…`, a relayed address
    /// without the relay's IP) is never allowed.
    ///
    /// ```
    /// # let rm = rcmgr::ResourceManager::new(rcmgr::ConcreteLimitConfig::infinite());
    /// rm.allowlist().add(&"/ip4/0.0.0.0/ipcidr/0".parse()?)?;
    /// assert!(rm.allowlist().allowed(&"/ip4/203.0.113.9/tcp/1".parse()?));
    /// assert!(!rm.allowlist().allowed(&"/dns4/example.com/tcp/1".parse()?));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn allowed(&self, endpoint: &Multiaddr) -> bool {
        endpoint_ip(endpoint).is_some_and(|ip| self.network_of(ip).is_some())
    }

    /// Whether the endpoint's IP is in a general entry or in one of `peer`'s entries (go's
    /// `AllowedPeerAndMultiaddr`).
    ///
    /// ```
    /// # let rm = rcmgr::ResourceManager::new(rcmgr::ConcreteLimitConfig::infinite());
    /// let peer = rcmgr::PeerId::random();
    /// rm.allowlist().add(&format!("/ip4/0.0.0.0/ipcidr/0/p2p/{peer}").parse()?)?;
    /// let endpoint = "/ip4/198.51.100.1/tcp/1".parse()?;
    /// assert!(rm.allowlist().allowed_peer_and_multiaddr(peer, &endpoint));
    /// assert!(!rm.allowlist().allowed_peer_and_multiaddr(rcmgr::PeerId::random(), &endpoint));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn allowed_peer_and_multiaddr(&self, peer: PeerId, endpoint: &Multiaddr) -> bool {
        endpoint_ip(endpoint)
            .is_some_and(|ip| self.shared.table.with(|table| table.allows_peer(&peer, ip)))
    }

    /// The most specific allowlisted network that contains `ip`.
    #[inline]
    pub(crate) fn network_of(&self, ip: IpAddr) -> Option<IpNet> {
        // Ordering: Acquire — pairs with the Release store in `edit` (see the module docs).
        if self.shared.entries.load(Ordering::Acquire) == 0 {
            return None;
        }
        self.shared.table.with(|table| table.network_of(ip))
    }

    /// Trusts `peer` whatever its address: returns whether it was not trusted yet (a peer is
    /// trusted once however often it is added). The allowlist's answer to rust-libp2p's
    /// "bypass limits for this peer id" (libp2p/rust-libp2p#5605), with the allowlisted
    /// scopes as its limits, as for address entries:
    ///
    /// - While at least one peer is trusted, a connection whose normal reservation is refused
    ///   (the system or transient scope is full) is opened in the allowlisted system and
    ///   transient scopes whatever its address, as an allowlisted address is: its peer is not
    ///   known before the security handshake, and it may be a trusted one. If the allowlisted
    ///   scopes refuse too, the error is the normal scopes' refusal (unless the address
    ///   itself is allowlisted).
    /// - [`set_peer`](crate::ConnectionScope::set_peer) then keeps a trusted peer's
    ///   connection in the allowlisted scopes, and moves any other peer's connection (unless
    ///   an address entry allows it) back to the normal scopes, which, being full, refuse it.
    /// - A connection the normal scopes admit stays in them, trusted or not.
    ///
    /// What it does not lift: the peer's own scope (its connection, stream and memory
    /// limits, which a peer limit in the configuration can raise), the per-IP and subnet
    /// limits and rate limits (they are checked before the peer is known), and stream limits
    /// (the allowlisted scopes hold connections only, as in go). The allowlisted transient
    /// scope is shared, while the normal scopes are full, by every connection whose handshake
    /// has not finished: its connection limit bounds how many handshakes can wait there.
    ///
    /// ```
    /// use rcmgr::{ConcreteLimitConfig, Direction, ResourceManager};
    /// let mut limits = ConcreteLimitConfig::infinite();
    /// limits.system.conns_inbound = 0; // the normal scopes are full
    /// let rm = ResourceManager::new(limits);
    /// let trusted = rcmgr::PeerId::random();
    /// assert!(rm.allowlist().add_peer(trusted));
    ///
    /// let mut conn = rm.open_connection(Direction::Inbound, true, &"/ip4/203.0.113.5/tcp/1".parse()?)?;
    /// conn.set_peer(trusted)?;
    /// assert!(conn.is_allowlisted());
    ///
    /// let mut other = rm.open_connection(Direction::Inbound, true, &"/ip4/203.0.113.6/tcp/1".parse()?)?;
    /// assert!(other.set_peer(rcmgr::PeerId::random()).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn add_peer(&self, peer: PeerId) -> bool {
        self.edit(|table| table.trusted.insert(peer))
    }

    /// Stops trusting `peer` ([`add_peer`](Self::add_peer)); returns whether it was trusted.
    /// Connections already opened keep the scopes they are in.
    ///
    /// ```
    /// # let rm = rcmgr::ResourceManager::new(rcmgr::ConcreteLimitConfig::infinite());
    /// let peer = rcmgr::PeerId::random();
    /// rm.allowlist().add_peer(peer);
    /// assert!(rm.allowlist().remove_peer(&peer));
    /// assert!(!rm.allowlist().remove_peer(&peer));
    /// assert!(!rm.allowlist().allowed_peer(&peer));
    /// ```
    pub fn remove_peer(&self, peer: &PeerId) -> bool {
        self.edit(|table| table.trusted.remove(peer))
    }

    /// Whether `peer` is trusted by its id ([`add_peer`](Self::add_peer)). Address entries
    /// that name a peer do not make it trusted: they allow it from their networks only
    /// ([`allowed_peer_and_multiaddr`](Self::allowed_peer_and_multiaddr)).
    ///
    /// ```
    /// # let rm = rcmgr::ResourceManager::new(rcmgr::ConcreteLimitConfig::infinite());
    /// let peer = rcmgr::PeerId::random();
    /// rm.allowlist().add(&format!("/ip4/192.0.2.1/p2p/{peer}").parse()?)?;
    /// assert!(!rm.allowlist().allowed_peer(&peer));
    /// rm.allowlist().add_peer(peer);
    /// assert!(rm.allowlist().allowed_peer(&peer));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn allowed_peer(&self, peer: &PeerId) -> bool {
        self.has_trusted_peers() && self.shared.table.with(|table| table.trusted.contains(peer))
    }

    /// The trusted peers, in no particular order.
    ///
    /// ```
    /// # let rm = rcmgr::ResourceManager::new(rcmgr::ConcreteLimitConfig::infinite());
    /// let peer = rcmgr::PeerId::random();
    /// rm.allowlist().add_peer(peer);
    /// assert_eq!(rm.allowlist().peers(), vec![peer]);
    /// ```
    pub fn peers(&self) -> Vec<PeerId> {
        self.shared
            .table
            .with(|table| table.trusted.iter().copied().collect())
    }

    /// Whether any peer is trusted: then a connection of any address may be one of theirs.
    #[inline]
    pub(crate) fn has_trusted_peers(&self) -> bool {
        // Ordering: Acquire — pairs with the Release store in `edit` (see the module docs).
        self.shared.trusted.load(Ordering::Acquire) != 0
    }

    fn edit<R>(&self, change: impl FnOnce(&mut AllowTable) -> R) -> R {
        let _writer = self.shared.edits.lock().unwrap_or_else(|e| e.into_inner());
        let mut table = AllowTable::clone(&self.shared.table.load_full());
        let result = change(&mut table);
        let entries = table.entries;
        let trusted = table.trusted.len() as u64;
        self.shared.table.store(Arc::new(table));
        // Ordering: Release — publishes the table stored above to `network_of`'s Acquire load.
        self.shared.entries.store(entries, Ordering::Release);
        // Ordering: Release — publishes the table stored above to `has_trusted_peers`' Acquire
        // load.
        self.shared.trusted.store(trusted, Ordering::Release);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(s: &str) -> Entry {
        Entry::parse(&s.parse().expect("a valid multiaddr")).expect("a valid entry")
    }

    #[test]
    fn entries_are_read_as_go_reads_them() {
        assert_eq!(
            entry("/ip4/1.2.3.4").network,
            "1.2.3.4/32".parse().expect("net")
        );
        assert_eq!(
            entry("/ip4/1.2.3.4/ipcidr/24").network,
            "1.2.3.0/24".parse().expect("net")
        );
        assert_eq!(entry("/ip6/2001:db8::1").network.prefix_len(), 128);
        // The last IP wins, unless all three components were already seen.
        assert_eq!(
            entry("/ip4/1.1.1.1/tcp/1/ip4/2.2.2.2").network,
            "2.2.2.2/32".parse().expect("net")
        );
        let peer = PeerId::random();
        let first = entry(&format!("/ip4/1.1.1.1/ipcidr/8/p2p/{peer}/ip4/2.2.2.2"));
        assert_eq!(first.network, "1.0.0.0/8".parse().expect("net"));
        assert_eq!(first.peer, Some(peer));
    }
}
