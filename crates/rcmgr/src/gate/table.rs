//! Longest-prefix lookup over a set of networks: one hash table per address family keyed by
//! (prefix length, network bits), and a bit set of the lengths in use. A lookup truncates the
//! address to each length in use, longest first, and probes once per length: its cost follows
//! the number of distinct lengths (a handful in practice), not the number of networks.

use std::{
    collections::HashMap,
    hash::{BuildHasher, Hasher},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// A set of prefix lengths, 0 to 128.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct LengthSet([u64; 3]);

impl LengthSet {
    pub(crate) const EMPTY: LengthSet = LengthSet([0; 3]);

    pub(crate) fn insert(&mut self, length: u8) {
        let (word, bit) = Self::position(length);
        self.0[word] |= 1 << bit;
    }

    pub(crate) fn remove(&mut self, length: u8) {
        let (word, bit) = Self::position(length);
        self.0[word] &= !(1 << bit);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0 == [0; 3]
    }

    /// The lengths, longest first.
    pub(crate) fn longest_first(self) -> impl Iterator<Item = u8> {
        let mut words = self.0;
        let mut word = words.len();
        std::iter::from_fn(move || {
            loop {
                let bits = words.get(word.checked_sub(1)?)?;
                if *bits == 0 {
                    word -= 1;
                    continue;
                }
                let bit = 63 - bits.leading_zeros();
                words[word - 1] &= !(1u64 << bit);
                // At most 2 * 64 + 63, which fits: only lengths up to 128 are ever inserted.
                return u8::try_from((word - 1) * 64 + bit as usize).ok();
            }
        })
    }

    fn position(length: u8) -> (usize, u32) {
        let length = length.min(128);
        (usize::from(length / 64), u32::from(length % 64))
    }
}

/// A hasher seeded at random per table, for keys that are prefix bits. The tables hold
/// networks the operator configured, so an attacker who picks the addresses looked up cannot
/// make them collide; a random seed keeps even that from being planned offline.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Seeded {
    seed: u64,
}

impl Seeded {
    pub(crate) fn random() -> Self {
        Seeded {
            seed: std::hash::RandomState::new().hash_one(0x5eed_u64),
        }
    }
}

impl BuildHasher for Seeded {
    type Hasher = SeededHasher;

    fn build_hasher(&self) -> SeededHasher {
        SeededHasher { state: self.seed }
    }
}

/// Folds words in with a multiply and finishes with a full avalanche, so both the high bits
/// (hashbrown's control bytes) and the low bits (its bucket index) are well mixed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SeededHasher {
    state: u64,
}

impl SeededHasher {
    const MULTIPLIER: u64 = 0x9e37_79b9_7f4a_7c15;

    #[inline]
    fn mix(&mut self, word: u64) {
        self.state = (self.state ^ word)
            .wrapping_mul(Self::MULTIPLIER)
            .rotate_left(29);
    }
}

impl Hasher for SeededHasher {
    #[inline]
    fn finish(&self) -> u64 {
        // MurmurHash3's 64-bit finalizer.
        let mut h = self.state;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.mix(u64::from(n));
    }

    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.mix(u64::from(n));
    }

    #[inline]
    fn write_u128(&mut self, n: u128) {
        self.mix(n as u64);
        self.mix((n >> 64) as u64);
    }
}

/// Up to how many networks a family's lookup scans a list rather than probing the hash table
/// once per length: a handful of masks and compares cost less than one hash and probe.
const FEW_NETWORKS: usize = 8;

/// The networks of one address family, with a value each.
#[derive(Clone, Debug)]
struct FamilyTable<A, V> {
    lengths: LengthSet,
    networks: HashMap<(u8, A), V, Seeded>,
    /// While there are at most [`FEW_NETWORKS`] networks, their keys, longest first (what a
    /// lookup scans); empty otherwise.
    few: Vec<(u8, A)>,
}

impl<A: Copy + Eq + std::hash::Hash, V> FamilyTable<A, V> {
    fn new(hasher: Seeded) -> Self {
        FamilyTable {
            lengths: LengthSet::EMPTY,
            networks: HashMap::with_hasher(hasher),
            few: Vec::new(),
        }
    }

    #[inline]
    fn longest_match(&self, truncate: impl Fn(u8) -> A) -> Option<(u8, &V)> {
        if self.networks.len() <= FEW_NETWORKS {
            let &(length, bits) = self
                .few
                .iter()
                .find(|&&(length, bits)| truncate(length) == bits)?;
            return self
                .networks
                .get(&(length, bits))
                .map(|value| (length, value));
        }
        self.lengths.longest_first().find_map(|length| {
            self.networks
                .get(&(length, truncate(length)))
                .map(|value| (length, value))
        })
    }

    fn get_or_insert(&mut self, length: u8, bits: A, value: impl FnOnce() -> V) -> &mut V {
        self.lengths.insert(length);
        if !self.networks.contains_key(&(length, bits)) {
            if self.networks.len() < FEW_NETWORKS {
                self.few.push((length, bits));
                self.few
                    .sort_by_key(|&(length, _)| std::cmp::Reverse(length));
            } else {
                self.few.clear();
            }
        }
        self.networks.entry((length, bits)).or_insert_with(value)
    }

    fn remove(&mut self, length: u8, bits: A) -> Option<V> {
        let removed = self.networks.remove(&(length, bits))?;
        if !self.networks.keys().any(|(other, _)| *other == length) {
            self.lengths.remove(length);
        }
        self.list_few();
        Some(removed)
    }

    /// Lists the keys in [`few`](Self::few) if there are few enough.
    fn list_few(&mut self) {
        self.few.clear();
        if self.networks.len() <= FEW_NETWORKS {
            self.few.extend(self.networks.keys().copied());
            self.few
                .sort_by_key(|&(length, _)| std::cmp::Reverse(length));
        }
    }
}

/// Networks of both families, each with a value, and longest-prefix lookup.
#[derive(Clone, Debug)]
pub(crate) struct NetTable<V> {
    v4: FamilyTable<u32, V>,
    v6: FamilyTable<u128, V>,
}

impl<V> NetTable<V> {
    pub(crate) fn new() -> Self {
        let hasher = Seeded::random();
        NetTable {
            v4: FamilyTable::new(hasher),
            v6: FamilyTable::new(hasher),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.v4.lengths.is_empty() && self.v6.lengths.is_empty()
    }

    /// The most specific network that contains `ip`, with its value.
    #[inline]
    pub(crate) fn longest_match(&self, ip: IpAddr) -> Option<(IpNet, &V)> {
        match ip {
            IpAddr::V4(ip) => {
                let bits = u32::from(ip);
                let (length, value) = self.v4.longest_match(|length| mask_v4(bits, length))?;
                let network = Ipv4Net::new_assert(Ipv4Addr::from(mask_v4(bits, length)), length);
                Some((IpNet::V4(network), value))
            }
            IpAddr::V6(ip) => {
                let bits = u128::from(ip);
                let (length, value) = self.v6.longest_match(|length| mask_v6(bits, length))?;
                let network = Ipv6Net::new_assert(Ipv6Addr::from(mask_v6(bits, length)), length);
                Some((IpNet::V6(network), value))
            }
        }
    }

    /// The value of exactly `network` (host bits ignored), inserted with `value()` if absent.
    pub(crate) fn get_or_insert(&mut self, network: IpNet, value: impl FnOnce() -> V) -> &mut V {
        match network.trunc() {
            IpNet::V4(net) => {
                self.v4
                    .get_or_insert(net.prefix_len(), u32::from(net.network()), value)
            }
            IpNet::V6(net) => {
                self.v6
                    .get_or_insert(net.prefix_len(), u128::from(net.network()), value)
            }
        }
    }

    /// Removes exactly `network` (host bits ignored).
    pub(crate) fn remove(&mut self, network: IpNet) -> Option<V> {
        match network.trunc() {
            IpNet::V4(net) => self.v4.remove(net.prefix_len(), u32::from(net.network())),
            IpNet::V6(net) => self.v6.remove(net.prefix_len(), u128::from(net.network())),
        }
    }

    /// The value of exactly `network` (host bits ignored), mutably.
    pub(crate) fn get_mut(&mut self, network: IpNet) -> Option<&mut V> {
        match network.trunc() {
            IpNet::V4(net) => self
                .v4
                .networks
                .get_mut(&(net.prefix_len(), u32::from(net.network()))),
            IpNet::V6(net) => self
                .v6
                .networks
                .get_mut(&(net.prefix_len(), u128::from(net.network()))),
        }
    }
}

/// Feeds a network to a hasher in two words (the address bits, then its length, family and a
/// caller's `tag`), rather than the half-dozen small writes the derived `Hash` of `IpNet`
/// makes: the sharded maps keyed by networks hash with SipHash, whose cost follows the number
/// of writes.
#[inline]
pub(crate) fn hash_network<H: Hasher>(network: &IpNet, tag: u8, state: &mut H) {
    let shape = |family: u64| u64::from(network.prefix_len()) | family << 8 | u64::from(tag) << 16;
    match network {
        // One word: the address and its shape side by side.
        IpNet::V4(net) => state.write_u64(u64::from(u32::from(net.addr())) << 32 | shape(4)),
        IpNet::V6(net) => {
            let bits = u128::from(net.addr());
            state.write_u64((bits >> 64) as u64);
            state.write_u64(bits as u64);
            state.write_u64(shape(6));
        }
    }
}

/// A network as a key of a sharded map (see [`hash_network`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct NetKey(pub(crate) IpNet);

impl std::hash::Hash for NetKey {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_network(&self.0, 0, state);
    }
}

/// The first `length` bits of an IPv4 address.
#[inline]
pub(crate) fn mask_v4(bits: u32, length: u8) -> u32 {
    match length {
        0 => 0,
        1..=31 => bits & (u32::MAX << (32 - u32::from(length))),
        _ => bits,
    }
}

/// The first `length` bits of an IPv6 address.
#[inline]
pub(crate) fn mask_v6(bits: u128, length: u8) -> u128 {
    match length {
        0 => 0,
        1..=127 => bits & (u128::MAX << (128 - u32::from(length))),
        _ => bits,
    }
}

/// Whether the truncated `network` contains `ip` (never across families): `ipnet`'s
/// `contains` as two masks and a compare, for the lookups made on every connection.
#[inline]
pub(crate) fn truncated_contains(network: &IpNet, ip: IpAddr) -> bool {
    match (network, ip) {
        (IpNet::V4(net), IpAddr::V4(ip)) => {
            mask_v4(u32::from(ip), net.prefix_len()) == u32::from(net.network())
        }
        (IpNet::V6(net), IpAddr::V6(ip)) => {
            mask_v6(u128::from(ip), net.prefix_len()) == u128::from(net.network())
        }
        _ => false,
    }
}

/// The subnet of `length` bits that contains `ip` (lengths past the family's bits are taken
/// as the whole address).
#[inline]
pub(crate) fn subnet_of(ip: IpAddr, length: u8) -> IpNet {
    match ip {
        IpAddr::V4(ip) => {
            let length = length.min(32);
            let network = Ipv4Addr::from(mask_v4(u32::from(ip), length));
            IpNet::V4(Ipv4Net::new_assert(network, length))
        }
        IpAddr::V6(ip) => {
            let length = length.min(128);
            let network = Ipv6Addr::from(mask_v6(u128::from(ip), length));
            IpNet::V6(Ipv6Net::new_assert(network, length))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().expect("a valid network")
    }

    #[test]
    fn lengths_iterate_longest_first_across_words() {
        let mut set = LengthSet::EMPTY;
        for length in [0, 8, 63, 64, 127, 128, 32] {
            set.insert(length);
        }
        assert_eq!(
            set.longest_first().collect::<Vec<_>>(),
            [128, 127, 64, 63, 32, 8, 0]
        );
        set.remove(64);
        assert_eq!(set.longest_first().nth(2), Some(63));
    }

    #[test]
    fn the_most_specific_network_wins_and_removal_updates_the_lengths() {
        let mut table = NetTable::new();
        *table.get_or_insert(net("10.0.0.0/8"), || 0) = 8;
        *table.get_or_insert(net("10.1.2.3/24"), || 0) = 24;
        *table.get_or_insert(net("2001:db8::/32"), || 0) = 32;
        let ip: IpAddr = "10.1.2.200".parse().expect("ip");
        assert_eq!(table.longest_match(ip), Some((net("10.1.2.0/24"), &24)));
        let other: IpAddr = "10.9.0.1".parse().expect("ip");
        assert_eq!(table.longest_match(other), Some((net("10.0.0.0/8"), &8)));
        let v6: IpAddr = "2001:db8::1".parse().expect("ip");
        assert_eq!(table.longest_match(v6), Some((net("2001:db8::/32"), &32)));
        assert_eq!(table.remove(net("10.1.2.0/24")), Some(24));
        assert_eq!(table.longest_match(ip), Some((net("10.0.0.0/8"), &8)));
        assert_eq!(table.remove(net("10.0.0.0/8")), Some(8));
        assert!(table.longest_match(ip).is_none());
        assert!(!table.is_empty());
        assert_eq!(table.remove(net("2001:db8::/32")), Some(32));
        assert!(table.is_empty());
    }

    #[test]
    fn masks_cover_the_edges() {
        assert_eq!(mask_v4(0xffff_ffff, 0), 0);
        assert_eq!(mask_v4(0xffff_ffff, 1), 0x8000_0000);
        assert_eq!(mask_v4(0x0a01_0203, 32), 0x0a01_0203);
        assert_eq!(mask_v6(u128::MAX, 128), u128::MAX);
        assert_eq!(mask_v6(u128::MAX, 127), u128::MAX - 1);
        assert_eq!(
            subnet_of("2001:db8:1:2::1".parse().expect("ip"), 48),
            net("2001:db8:1::/48")
        );
    }

    #[test]
    fn few_and_many_networks_give_the_same_longest_match() {
        let networks: Vec<IpNet> = (0..20u8)
            .map(|i| net(&format!("10.{i}.0.0/{}", 8 + i)).trunc())
            .chain(["10.128.0.0/9", "0.0.0.0/0", "2001:db8::/32", "::/0"].map(net))
            .collect();
        let ips: Vec<IpAddr> = [
            "10.0.0.1",
            "10.3.0.1",
            "10.19.1.1",
            "11.0.0.1",
            "2001:db8::1",
            "::2",
        ]
        .map(|ip| ip.parse().expect("ip"))
        .to_vec();
        let brute = |present: &[IpNet], ip: IpAddr| {
            present
                .iter()
                .filter(|network| network.contains(&ip))
                .max_by_key(|network| network.prefix_len())
                .copied()
        };
        let mut table = NetTable::new();
        let mut present = Vec::new();
        for network in &networks {
            table.get_or_insert(*network, || ());
            present.push(*network);
            for &ip in &ips {
                assert_eq!(table.longest_match(ip).map(|(n, _)| n), brute(&present, ip));
            }
        }
        while let Some(network) = present.pop() {
            assert_eq!(table.remove(network), Some(()));
            for &ip in &ips {
                assert_eq!(table.longest_match(ip).map(|(n, _)| n), brute(&present, ip));
            }
        }
        assert!(table.is_empty());
    }

    #[test]
    fn containment_agrees_with_ipnet() {
        let networks = [
            "0.0.0.0/0",
            "10.0.0.0/8",
            "10.1.2.3/32",
            "::/0",
            "2001:db8::/33",
            "::1/128",
        ];
        let ips = [
            "10.1.2.3",
            "10.1.2.4",
            "11.0.0.0",
            "::1",
            "2001:db8:7fff::1",
            "2001:db8:8000::1",
        ];
        for network in networks {
            let network = net(network).trunc();
            for ip in ips {
                let ip: IpAddr = ip.parse().expect("ip");
                assert_eq!(
                    truncated_contains(&network, ip),
                    network.contains(&ip),
                    "{network} {ip}"
                );
            }
        }
    }
}
