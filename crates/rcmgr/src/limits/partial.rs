//! [`LimitVal`], [`ResourceLimits`] and [`PartialLimitConfig`]: limits that may leave values to
//! a default, as users write them in limit files.

use std::collections::BTreeMap;

use libp2p_identity::PeerId;

use super::{BaseLimit, ConcreteLimitConfig};

/// One value of a [`ResourceLimits`]: left to the default, unlimited, nothing allowed, or a
/// number. It is go's `LimitVal` and `LimitVal64` in one type: memory is a limit like the others
/// here, and only its JSON form differs (a decimal string, see [`ResourceLimits`]).
///
/// | variant | JSON | [`build`](Self::build) gives |
/// |---|---|---|
/// | `Default` | left out (`"default"` on its own) | the default |
/// | `Unlimited` | `"unlimited"` | [`BaseLimit::UNLIMITED`] |
/// | `BlockAll` | `"blockAll"` (and an explicit `0`) | `0` |
/// | `Value(n)` | `n` | `n` |
///
/// ```
/// use rcmgr::LimitVal;
/// assert_eq!(LimitVal::Default.build(42), 42);
/// assert_eq!(LimitVal::Unlimited.build(42), rcmgr::BaseLimit::UNLIMITED);
/// assert_eq!(LimitVal::BlockAll.build(42), 0);
/// assert_eq!(LimitVal::Value(7).build(42), 7);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum LimitVal {
    /// Take the value from the defaults the configuration is built on.
    #[default]
    Default,
    /// No limit.
    Unlimited,
    /// Nothing allowed: a limit of zero.
    BlockAll,
    /// This limit. `Value(0)` means the same as [`BlockAll`](Self::BlockAll) and values at or
    /// above [`BaseLimit::UNLIMITED`] the same as [`Unlimited`](Self::Unlimited). `Value(0)`
    /// and values above `UNLIMITED` (which go cannot read) are written to JSON as those
    /// markers; everything else as the number.
    Value(u64),
}

impl LimitVal {
    /// The concrete limit this value stands for, with `default` for [`LimitVal::Default`].
    ///
    /// ```
    /// assert_eq!(rcmgr::LimitVal::Value(5).build(9), 5);
    /// ```
    pub const fn build(self, default: u64) -> u64 {
        match self {
            LimitVal::Default => default,
            LimitVal::Unlimited => BaseLimit::UNLIMITED,
            LimitVal::BlockAll => 0,
            LimitVal::Value(value) => value,
        }
    }

    /// The value that stands for the concrete limit `limit`, never `Default`: `0` becomes
    /// `BlockAll`, anything at or above [`BaseLimit::UNLIMITED`] becomes `Unlimited`
    /// (go's `BaseLimit.ToResourceLimits`, field by field).
    ///
    /// ```
    /// use rcmgr::{BaseLimit, LimitVal};
    /// assert_eq!(LimitVal::from_concrete(0), LimitVal::BlockAll);
    /// assert_eq!(LimitVal::from_concrete(BaseLimit::UNLIMITED), LimitVal::Unlimited);
    /// assert_eq!(LimitVal::from_concrete(64), LimitVal::Value(64));
    /// ```
    pub const fn from_concrete(limit: u64) -> Self {
        match limit {
            0 => LimitVal::BlockAll,
            limit if limit >= BaseLimit::UNLIMITED => LimitVal::Unlimited,
            limit => LimitVal::Value(limit),
        }
    }

    /// Whether this is [`LimitVal::Default`].
    ///
    /// ```
    /// assert!(rcmgr::LimitVal::default().is_default());
    /// ```
    pub const fn is_default(self) -> bool {
        matches!(self, LimitVal::Default)
    }

    /// This value, or `fallback` if this one is `Default`.
    const fn or(self, fallback: LimitVal) -> LimitVal {
        match self {
            LimitVal::Default => fallback,
            set => set,
        }
    }

    /// The form this value is written in: `Value(0)` as `BlockAll` (an explicit 0 in a file
    /// reads as that anyway) and values above [`BaseLimit::UNLIMITED`] as `Unlimited` (go
    /// cannot read numbers above `i64::MAX`), so every file rcmgr writes reads back to the
    /// same limits, in rcmgr and in go.
    pub(crate) const fn canonical(self) -> LimitVal {
        match self {
            LimitVal::Value(0) => LimitVal::BlockAll,
            LimitVal::Value(value) if value > BaseLimit::UNLIMITED => LimitVal::Unlimited,
            other => other,
        }
    }
}

/// The limits of one scope as a user writes them: each field may be left to the default
/// (go's `ResourceLimits`). [`build`](Self::build) resolves it against a concrete limit.
///
/// In JSON the fields are named as in go (`Streams`, `StreamsInbound`, `StreamsOutbound`,
/// `Conns`, `ConnsInbound`, `ConnsOutbound`, `FD`, `Memory`); default fields are left out,
/// and `Memory` is written as a decimal string (it is read from a string or a number).
///
/// ```
/// use rcmgr::{BaseLimit, LimitVal, ResourceLimits};
/// let limits = ResourceLimits {
///     streams_inbound: LimitVal::Value(32),
///     memory: LimitVal::Unlimited,
///     ..ResourceLimits::default()
/// };
/// let defaults = BaseLimit { streams_inbound: 8, streams: 64, memory: 1 << 20, ..BaseLimit::block_all() };
/// let built = limits.build(&defaults);
/// assert_eq!((built.streams_inbound, built.streams), (32, 64));
/// assert_eq!(built.memory, BaseLimit::UNLIMITED);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ResourceLimits {
    /// Streams in both directions together.
    pub streams: LimitVal,
    /// Inbound streams.
    pub streams_inbound: LimitVal,
    /// Outbound streams.
    pub streams_outbound: LimitVal,
    /// Connections in both directions together.
    pub conns: LimitVal,
    /// Inbound connections.
    pub conns_inbound: LimitVal,
    /// Outbound connections.
    pub conns_outbound: LimitVal,
    /// File descriptors.
    pub fd: LimitVal,
    /// Memory in bytes.
    pub memory: LimitVal,
}

impl ResourceLimits {
    /// Whether every field is [`LimitVal::Default`].
    ///
    /// ```
    /// assert!(rcmgr::ResourceLimits::default().is_default());
    /// ```
    pub fn is_default(&self) -> bool {
        self.as_array().iter().all(|value| value.is_default())
    }

    /// The concrete limit: each field built with the matching field of `defaults`.
    ///
    /// ```
    /// use rcmgr::{BaseLimit, LimitVal, ResourceLimits};
    /// let limits = ResourceLimits { fd: LimitVal::BlockAll, ..ResourceLimits::default() };
    /// let built = limits.build(&BaseLimit::unlimited());
    /// assert_eq!(built, BaseLimit { fd: 0, ..BaseLimit::unlimited() });
    /// ```
    pub fn build(&self, defaults: &BaseLimit) -> BaseLimit {
        let mut built = defaults.as_array();
        for (slot, value) in built.iter_mut().zip(self.as_array()) {
            *slot = value.build(*slot);
        }
        BaseLimit::from_array(built)
    }

    /// Fills every `Default` field of `self` from `other` (go's `ResourceLimits.Apply`).
    ///
    /// ```
    /// use rcmgr::{LimitVal, ResourceLimits};
    /// let mut mine = ResourceLimits { conns: LimitVal::Value(4), ..ResourceLimits::default() };
    /// let theirs = ResourceLimits { conns: LimitVal::Value(9), fd: LimitVal::BlockAll, ..ResourceLimits::default() };
    /// mine.apply(&theirs);
    /// assert_eq!((mine.conns, mine.fd), (LimitVal::Value(4), LimitVal::BlockAll));
    /// ```
    pub fn apply(&mut self, other: &ResourceLimits) {
        let mut mine = self.as_array();
        for (slot, fallback) in mine.iter_mut().zip(other.as_array()) {
            *slot = slot.or(fallback);
        }
        *self = ResourceLimits::from_array(mine);
    }

    /// The fields in go's order, for code that treats them alike.
    pub(crate) const fn as_array(&self) -> [LimitVal; 8] {
        [
            self.streams,
            self.streams_inbound,
            self.streams_outbound,
            self.conns,
            self.conns_inbound,
            self.conns_outbound,
            self.fd,
            self.memory,
        ]
    }

    /// The inverse of [`as_array`](Self::as_array).
    pub(crate) const fn from_array(values: [LimitVal; 8]) -> Self {
        ResourceLimits {
            streams: values[0],
            streams_inbound: values[1],
            streams_outbound: values[2],
            conns: values[3],
            conns_inbound: values[4],
            conns_outbound: values[5],
            fd: values[6],
            memory: values[7],
        }
    }
}

/// A concrete limit written out in full: `0` as `BlockAll`, unlimited as `Unlimited`, nothing
/// left to a default (go's `BaseLimit.ToResourceLimits`).
///
/// ```
/// use rcmgr::{BaseLimit, LimitVal, ResourceLimits};
/// let limits = ResourceLimits::from(BaseLimit { fd: 16, ..BaseLimit::block_all() });
/// assert_eq!((limits.fd, limits.memory), (LimitVal::Value(16), LimitVal::BlockAll));
/// ```
impl From<BaseLimit> for ResourceLimits {
    fn from(limit: BaseLimit) -> Self {
        ResourceLimits::from_array(limit.as_array().map(LimitVal::from_concrete))
    }
}

/// Limits for some scopes, the rest left to defaults: what a limits file holds (go's
/// `PartialLimitConfig`). [`build`](Self::build) turns it into the [`ConcreteLimitConfig`] a
/// [`ResourceManager`](crate::ResourceManager) enforces; [`apply`](Self::apply) layers two of
/// them. It reads and writes go's JSON format (see [`from_json_str`](Self::from_json_str)).
///
/// The struct is `#[non_exhaustive]`: start from `PartialLimitConfig::default()` and set fields.
///
/// ```
/// use rcmgr::{LimitVal, PartialLimitConfig, ResourceLimits, ScalingLimitConfig};
/// let mut partial = PartialLimitConfig::default();
/// partial.system.conns_inbound = LimitVal::Value(1024);
/// partial.protocol.insert(
///     "/my/app/1.0.0".to_owned(),
///     ResourceLimits { streams: LimitVal::Value(64), ..ResourceLimits::default() },
/// );
/// let defaults = ScalingLimitConfig::default().scale(4 << 30, 4096);
/// let limits = partial.build(&defaults);
/// assert_eq!(limits.system.conns_inbound, 1024);
/// assert_eq!(limits.system.conns_outbound, defaults.system.conns_outbound);
/// assert_eq!(limits.protocol_limits("/my/app/1.0.0").streams, 64);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartialLimitConfig {
    /// The whole node.
    pub system: ResourceLimits,
    /// Connections before their peer is known and streams before their protocol is known.
    pub transient: ResourceLimits,
    /// The whole node, for allowlisted connections.
    pub allowlisted_system: ResourceLimits,
    /// Allowlisted connections before their peer is known.
    pub allowlisted_transient: ResourceLimits,
    /// Each service without an entry in [`service`](Self::service).
    pub service_default: ResourceLimits,
    /// Per-service limits.
    pub service: BTreeMap<String, ResourceLimits>,
    /// Each peer within a service without an entry in [`service_peer`](Self::service_peer).
    pub service_peer_default: ResourceLimits,
    /// Per-service limits for each peer within that service.
    pub service_peer: BTreeMap<String, ResourceLimits>,
    /// Each protocol without an entry in [`protocol`](Self::protocol).
    pub protocol_default: ResourceLimits,
    /// Per-protocol limits.
    pub protocol: BTreeMap<String, ResourceLimits>,
    /// Each peer within a protocol without an entry in [`protocol_peer`](Self::protocol_peer).
    pub protocol_peer_default: ResourceLimits,
    /// Per-protocol limits for each peer within that protocol.
    pub protocol_peer: BTreeMap<String, ResourceLimits>,
    /// Each peer without an entry in [`peer`](Self::peer).
    pub peer_default: ResourceLimits,
    /// Per-peer limits.
    pub peer: BTreeMap<PeerId, ResourceLimits>,
    /// Each connection.
    pub conn: ResourceLimits,
    /// Each stream.
    pub stream: ResourceLimits,
}

impl PartialLimitConfig {
    /// The concrete configuration: every scope built on the same scope of `defaults` (go's
    /// `PartialLimitConfig.Build`).
    ///
    /// A per-key entry (a service, protocol or peer) is built on that key's own entry in
    /// `defaults` when it has one, and otherwise on this configuration's built default for its
    /// kind. Keys only in `defaults` keep their values, even when the default for their kind
    /// changes here.
    ///
    /// ```
    /// use rcmgr::{ConcreteLimitConfig, LimitVal, PartialLimitConfig, ScalingLimitConfig};
    /// let defaults = ScalingLimitConfig::default().with_libp2p_defaults().scale(1 << 30, 1024);
    /// let mut partial = PartialLimitConfig::default();
    /// partial.service_default.memory = LimitVal::Value(1 << 20);
    /// let built = partial.build(&defaults);
    /// assert_eq!(built.service_limits("some.service").memory, 1 << 20);
    /// // libp2p.identify has its own entry in the defaults and keeps it.
    /// assert_eq!(built.service_limits("libp2p.identify"), defaults.service_limits("libp2p.identify"));
    /// ```
    pub fn build(&self, defaults: &ConcreteLimitConfig) -> ConcreteLimitConfig {
        let service_default = self.service_default.build(&defaults.service_default);
        let service_peer_default = self
            .service_peer_default
            .build(&defaults.service_peer_default);
        let protocol_default = self.protocol_default.build(&defaults.protocol_default);
        let protocol_peer_default = self
            .protocol_peer_default
            .build(&defaults.protocol_peer_default);
        let peer_default = self.peer_default.build(&defaults.peer_default);
        ConcreteLimitConfig {
            system: self.system.build(&defaults.system),
            transient: self.transient.build(&defaults.transient),
            allowlisted_system: self.allowlisted_system.build(&defaults.allowlisted_system),
            allowlisted_transient: self
                .allowlisted_transient
                .build(&defaults.allowlisted_transient),
            service: build_each(&self.service, &defaults.service, &service_default),
            service_default,
            service_peer: build_each(
                &self.service_peer,
                &defaults.service_peer,
                &service_peer_default,
            ),
            service_peer_default,
            protocol: build_each(&self.protocol, &defaults.protocol, &protocol_default),
            protocol_default,
            protocol_peer: build_each(
                &self.protocol_peer,
                &defaults.protocol_peer,
                &protocol_peer_default,
            ),
            protocol_peer_default,
            peer: build_each(&self.peer, &defaults.peer, &peer_default),
            peer_default,
            conn: self.conn.build(&defaults.conn),
            stream: self.stream.build(&defaults.stream),
            // go's limit files have no address-based limits: they come from the defaults.
            ip: defaults.ip.clone(),
        }
    }

    /// Fills what this configuration leaves to defaults from `other` (go's
    /// `PartialLimitConfig.Apply`): each fixed scope field by field; each per-key entry of
    /// `self` from `other`'s entry for the same key, or else from this configuration's default
    /// for its kind (already filled); entries only in `other` are copied in.
    ///
    /// ```
    /// use rcmgr::{LimitVal, PartialLimitConfig};
    /// let mut mine = PartialLimitConfig::default();
    /// mine.system.memory = LimitVal::Value(1 << 30);
    /// let mut theirs = PartialLimitConfig::default();
    /// theirs.system.memory = LimitVal::Value(1 << 20);
    /// theirs.system.fd = LimitVal::Value(512);
    /// mine.apply(&theirs);
    /// assert_eq!((mine.system.memory, mine.system.fd), (LimitVal::Value(1 << 30), LimitVal::Value(512)));
    /// ```
    pub fn apply(&mut self, other: &PartialLimitConfig) {
        let fixed = [
            (&mut self.system, &other.system),
            (&mut self.transient, &other.transient),
            (&mut self.allowlisted_system, &other.allowlisted_system),
            (
                &mut self.allowlisted_transient,
                &other.allowlisted_transient,
            ),
            (&mut self.service_default, &other.service_default),
            (&mut self.service_peer_default, &other.service_peer_default),
            (&mut self.protocol_default, &other.protocol_default),
            (
                &mut self.protocol_peer_default,
                &other.protocol_peer_default,
            ),
            (&mut self.peer_default, &other.peer_default),
            (&mut self.conn, &other.conn),
            (&mut self.stream, &other.stream),
        ];
        for (mine, theirs) in fixed {
            mine.apply(theirs);
        }
        apply_each(&mut self.service, &other.service, &self.service_default);
        apply_each(
            &mut self.service_peer,
            &other.service_peer,
            &self.service_peer_default,
        );
        apply_each(&mut self.protocol, &other.protocol, &self.protocol_default);
        apply_each(
            &mut self.protocol_peer,
            &other.protocol_peer,
            &self.protocol_peer_default,
        );
        apply_each(&mut self.peer, &other.peer, &self.peer_default);
    }

    /// The scopes with a fixed name, with their names in go's JSON, in go's declaration order.
    pub(crate) fn fixed_scopes(&self) -> [(&'static str, &ResourceLimits); 11] {
        [
            ("System", &self.system),
            ("Transient", &self.transient),
            ("AllowlistedSystem", &self.allowlisted_system),
            ("AllowlistedTransient", &self.allowlisted_transient),
            ("ServiceDefault", &self.service_default),
            ("ServicePeerDefault", &self.service_peer_default),
            ("ProtocolDefault", &self.protocol_default),
            ("ProtocolPeerDefault", &self.protocol_peer_default),
            ("PeerDefault", &self.peer_default),
            ("Conn", &self.conn),
            ("Stream", &self.stream),
        ]
    }

    /// [`fixed_scopes`](Self::fixed_scopes), to write to.
    pub(crate) fn fixed_scopes_mut(&mut self) -> [(&'static str, &mut ResourceLimits); 11] {
        [
            ("System", &mut self.system),
            ("Transient", &mut self.transient),
            ("AllowlistedSystem", &mut self.allowlisted_system),
            ("AllowlistedTransient", &mut self.allowlisted_transient),
            ("ServiceDefault", &mut self.service_default),
            ("ServicePeerDefault", &mut self.service_peer_default),
            ("ProtocolDefault", &mut self.protocol_default),
            ("ProtocolPeerDefault", &mut self.protocol_peer_default),
            ("PeerDefault", &mut self.peer_default),
            ("Conn", &mut self.conn),
            ("Stream", &mut self.stream),
        ]
    }

    /// The per-key maps whose keys are names, with their names in go's JSON, in go's order.
    pub(crate) fn named_maps(&self) -> [(&'static str, &BTreeMap<String, ResourceLimits>); 4] {
        [
            ("Service", &self.service),
            ("ServicePeer", &self.service_peer),
            ("Protocol", &self.protocol),
            ("ProtocolPeer", &self.protocol_peer),
        ]
    }

    /// [`named_maps`](Self::named_maps), to write to.
    pub(crate) fn named_maps_mut(
        &mut self,
    ) -> [(&'static str, &mut BTreeMap<String, ResourceLimits>); 4] {
        [
            ("Service", &mut self.service),
            ("ServicePeer", &mut self.service_peer),
            ("Protocol", &mut self.protocol),
            ("ProtocolPeer", &mut self.protocol_peer),
        ]
    }
}

/// Builds go's `buildMapWithDefault`: `defaults`' entries, with each defined entry built on
/// its key's entry in `defaults` if there is one and on `built_default` otherwise.
fn build_each<K: Ord + Clone>(
    defined: &BTreeMap<K, ResourceLimits>,
    defaults: &BTreeMap<K, BaseLimit>,
    built_default: &BaseLimit,
) -> BTreeMap<K, BaseLimit> {
    let mut built = defaults.clone();
    for (key, limits) in defined {
        let on = built.get(key).unwrap_or(built_default);
        let limit = limits.build(on);
        built.insert(key.clone(), limit);
    }
    built
}

/// Applies `theirs` to the entries of `mine` as [`PartialLimitConfig::apply`] describes.
fn apply_each<K: Ord + Clone>(
    mine: &mut BTreeMap<K, ResourceLimits>,
    theirs: &BTreeMap<K, ResourceLimits>,
    applied_default: &ResourceLimits,
) {
    for (key, limits) in mine.iter_mut() {
        limits.apply(theirs.get(key).unwrap_or(applied_default));
    }
    for (key, limits) in theirs {
        mine.entry(key.clone()).or_insert(*limits);
    }
}

impl ConcreteLimitConfig {
    /// This configuration written out in full as a [`PartialLimitConfig`], nothing left to a
    /// default: `0` becomes `BlockAll` and unlimited becomes `Unlimited` (go's
    /// `ToPartialLimitConfig`). Building the result on any defaults gives `self` back, except
    /// the address-based limits ([`ip`](ConcreteLimitConfig::ip)), which go's format does not
    /// carry and which the build takes from its defaults.
    ///
    /// ```
    /// use rcmgr::{ConcreteLimitConfig, ScalingLimitConfig};
    /// let limits = ScalingLimitConfig::default().scale(8 << 30, 16384);
    /// let partial = limits.to_partial();
    /// let rebuilt = partial.build(&limits);
    /// assert_eq!(rebuilt, limits);
    /// assert_eq!(partial.build(&ConcreteLimitConfig::infinite()).system, limits.system);
    /// ```
    pub fn to_partial(&self) -> PartialLimitConfig {
        PartialLimitConfig {
            system: self.system.into(),
            transient: self.transient.into(),
            allowlisted_system: self.allowlisted_system.into(),
            allowlisted_transient: self.allowlisted_transient.into(),
            service_default: self.service_default.into(),
            service: written_out_each(&self.service),
            service_peer_default: self.service_peer_default.into(),
            service_peer: written_out_each(&self.service_peer),
            protocol_default: self.protocol_default.into(),
            protocol: written_out_each(&self.protocol),
            protocol_peer_default: self.protocol_peer_default.into(),
            protocol_peer: written_out_each(&self.protocol_peer),
            peer_default: self.peer_default.into(),
            peer: written_out_each(&self.peer),
            conn: self.conn.into(),
            stream: self.stream.into(),
        }
    }
}

/// Each concrete limit of a per-key map as [`ResourceLimits`].
fn written_out_each<K: Ord + Clone>(
    limits: &BTreeMap<K, BaseLimit>,
) -> BTreeMap<K, ResourceLimits> {
    limits
        .iter()
        .map(|(key, limit)| (key.clone(), ResourceLimits::from(*limit)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_form_turns_edge_values_into_markers() {
        assert_eq!(LimitVal::Value(0).canonical(), LimitVal::BlockAll);
        assert_eq!(LimitVal::Value(u64::MAX).canonical(), LimitVal::Unlimited);
        assert_eq!(
            LimitVal::Value(BaseLimit::UNLIMITED).canonical(),
            LimitVal::Value(BaseLimit::UNLIMITED)
        );
        assert_eq!(LimitVal::Default.canonical(), LimitVal::Default);
    }

    #[test]
    fn build_rebases_per_key_entries_on_their_own_default() {
        let mut defaults = ConcreteLimitConfig::infinite();
        defaults.service.insert(
            "known".into(),
            BaseLimit {
                streams: 3,
                ..BaseLimit::block_all()
            },
        );
        let mut partial = PartialLimitConfig::default();
        partial.service_default.streams = LimitVal::Value(10);
        partial.service.insert(
            "known".into(),
            ResourceLimits {
                memory: LimitVal::Value(5),
                ..ResourceLimits::default()
            },
        );
        partial.service.insert(
            "new".into(),
            ResourceLimits {
                memory: LimitVal::Value(6),
                ..ResourceLimits::default()
            },
        );
        let built = partial.build(&defaults);
        let known = built.service["known"];
        assert_eq!((known.streams, known.memory, known.fd), (3, 5, 0));
        let new = built.service["new"];
        assert_eq!((new.streams, new.memory), (10, 6));
        assert_eq!(new.fd, BaseLimit::UNLIMITED);
    }

    #[test]
    fn apply_fills_entries_from_the_other_entry_or_the_applied_default() {
        let mut mine = PartialLimitConfig::default();
        mine.protocol.insert("/a".into(), ResourceLimits::default());
        mine.protocol.insert("/b".into(), ResourceLimits::default());
        let mut theirs = PartialLimitConfig::default();
        theirs.protocol_default.fd = LimitVal::Value(9);
        theirs.protocol.insert(
            "/a".into(),
            ResourceLimits {
                fd: LimitVal::Value(1),
                ..ResourceLimits::default()
            },
        );
        theirs.protocol.insert(
            "/c".into(),
            ResourceLimits {
                fd: LimitVal::Value(2),
                ..ResourceLimits::default()
            },
        );
        mine.apply(&theirs);
        assert_eq!(mine.protocol["/a"].fd, LimitVal::Value(1));
        assert_eq!(mine.protocol["/b"].fd, LimitVal::Value(9));
        assert_eq!(mine.protocol["/c"].fd, LimitVal::Value(2));
        assert_eq!(mine.protocol_default.fd, LimitVal::Value(9));
    }
}
