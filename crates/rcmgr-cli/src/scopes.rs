//! The scopes of a limits configuration as rows to print and check: each named the way go's
//! limit files name it, with its concrete limit and what a file wrote for it.

use std::fmt;

use rcmgr::{BaseLimit, ConcreteLimitConfig, LimitVal, PartialLimitConfig, PeerId, ResourceLimits};

use crate::units::ByteSize;

/// One scope of a limits configuration, named as in go's JSON limit files.
///
/// ```
/// use rcmgr_cli::scopes::ScopePath;
/// assert_eq!(ScopePath::PeerDefault.to_string(), "PeerDefault");
/// assert_eq!(ScopePath::Protocol("/ipfs/ping/1.0.0".into()).to_string(), r#"Protocol["/ipfs/ping/1.0.0"]"#);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScopePath {
    /// `System`.
    System,
    /// `Transient`.
    Transient,
    /// `AllowlistedSystem`.
    AllowlistedSystem,
    /// `AllowlistedTransient`.
    AllowlistedTransient,
    /// `ServiceDefault`.
    ServiceDefault,
    /// An entry of `Service`.
    Service(String),
    /// `ServicePeerDefault`.
    ServicePeerDefault,
    /// An entry of `ServicePeer`.
    ServicePeer(String),
    /// `ProtocolDefault`.
    ProtocolDefault,
    /// An entry of `Protocol`.
    Protocol(String),
    /// `ProtocolPeerDefault`.
    ProtocolPeerDefault,
    /// An entry of `ProtocolPeer`.
    ProtocolPeer(String),
    /// `PeerDefault`.
    PeerDefault,
    /// An entry of `Peer`.
    Peer(PeerId),
    /// `Conn`.
    Conn,
    /// `Stream`.
    Stream,
}

impl ScopePath {
    /// The scope every reservation in this one also counts against, when that one has a limit
    /// of its own: the system scope for most, the allowlisted system scope for the allowlisted
    /// transient scope, and the service or protocol for their per-peer scopes. `None` for the
    /// system scopes.
    ///
    /// ```
    /// use rcmgr_cli::scopes::ScopePath;
    /// assert_eq!(ScopePath::PeerDefault.parent(), Some(ScopePath::System));
    /// assert_eq!(ScopePath::ProtocolPeer("/p".into()).parent(), Some(ScopePath::Protocol("/p".into())));
    /// assert_eq!(ScopePath::System.parent(), None);
    /// ```
    pub fn parent(&self) -> Option<ScopePath> {
        match self {
            ScopePath::System | ScopePath::AllowlistedSystem => None,
            ScopePath::AllowlistedTransient => Some(ScopePath::AllowlistedSystem),
            ScopePath::ServicePeerDefault => Some(ScopePath::ServiceDefault),
            ScopePath::ServicePeer(name) => Some(ScopePath::Service(name.clone())),
            ScopePath::ProtocolPeerDefault => Some(ScopePath::ProtocolDefault),
            ScopePath::ProtocolPeer(name) => Some(ScopePath::Protocol(name.clone())),
            _ => Some(ScopePath::System),
        }
    }

    /// The limit this scope gets from `limits`.
    ///
    /// ```
    /// use rcmgr_cli::scopes::ScopePath;
    /// let limits = rcmgr::ScalingLimitConfig::default().with_libp2p_defaults().scale(1 << 30, 1024);
    /// let ping = ScopePath::Protocol("/ipfs/ping/1.0.0".into());
    /// assert_eq!(ping.limit_in(&limits), limits.protocol_limits("/ipfs/ping/1.0.0"));
    /// assert_eq!(ScopePath::Conn.limit_in(&limits), limits.conn);
    /// ```
    pub fn limit_in(&self, limits: &ConcreteLimitConfig) -> BaseLimit {
        match self {
            ScopePath::System => limits.system,
            ScopePath::Transient => limits.transient,
            ScopePath::AllowlistedSystem => limits.allowlisted_system,
            ScopePath::AllowlistedTransient => limits.allowlisted_transient,
            ScopePath::ServiceDefault => limits.service_default,
            ScopePath::Service(name) => limits.service_limits(name),
            ScopePath::ServicePeerDefault => limits.service_peer_default,
            ScopePath::ServicePeer(name) => limits.service_peer_limits(name),
            ScopePath::ProtocolDefault => limits.protocol_default,
            ScopePath::Protocol(name) => limits.protocol_limits(name),
            ScopePath::ProtocolPeerDefault => limits.protocol_peer_default,
            ScopePath::ProtocolPeer(name) => limits.protocol_peer_limits(name),
            ScopePath::PeerDefault => limits.peer_default,
            ScopePath::Peer(peer) => limits.peer_limits(peer),
            ScopePath::Conn => limits.conn,
            ScopePath::Stream => limits.stream,
        }
    }

    /// Whether streams are counted in this scope (and so its memory should hold at least one
    /// stream's worth).
    pub fn holds_streams(&self) -> bool {
        !matches!(
            self,
            ScopePath::Conn | ScopePath::AllowlistedSystem | ScopePath::AllowlistedTransient
        )
    }
}

impl fmt::Display for ScopePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScopePath::System => f.write_str("System"),
            ScopePath::Transient => f.write_str("Transient"),
            ScopePath::AllowlistedSystem => f.write_str("AllowlistedSystem"),
            ScopePath::AllowlistedTransient => f.write_str("AllowlistedTransient"),
            ScopePath::ServiceDefault => f.write_str("ServiceDefault"),
            ScopePath::Service(name) => write!(f, "Service[{name:?}]"),
            ScopePath::ServicePeerDefault => f.write_str("ServicePeerDefault"),
            ScopePath::ServicePeer(name) => write!(f, "ServicePeer[{name:?}]"),
            ScopePath::ProtocolDefault => f.write_str("ProtocolDefault"),
            ScopePath::Protocol(name) => write!(f, "Protocol[{name:?}]"),
            ScopePath::ProtocolPeerDefault => f.write_str("ProtocolPeerDefault"),
            ScopePath::ProtocolPeer(name) => write!(f, "ProtocolPeer[{name:?}]"),
            ScopePath::PeerDefault => f.write_str("PeerDefault"),
            ScopePath::Peer(peer) => write!(f, "Peer[\"{peer}\"]"),
            ScopePath::Conn => f.write_str("Conn"),
            ScopePath::Stream => f.write_str("Stream"),
        }
    }
}

/// One limit of a scope, named as in go's JSON limit files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Field {
    /// `Streams`: streams in both directions.
    Streams,
    /// `StreamsInbound`.
    StreamsInbound,
    /// `StreamsOutbound`.
    StreamsOutbound,
    /// `Conns`: connections in both directions.
    Conns,
    /// `ConnsInbound`.
    ConnsInbound,
    /// `ConnsOutbound`.
    ConnsOutbound,
    /// `FD`: file descriptors.
    Fd,
    /// `Memory`, in bytes.
    Memory,
}

impl Field {
    /// Every field, in go's JSON order.
    pub const ALL: [Field; 8] = [
        Field::Streams,
        Field::StreamsInbound,
        Field::StreamsOutbound,
        Field::Conns,
        Field::ConnsInbound,
        Field::ConnsOutbound,
        Field::Fd,
        Field::Memory,
    ];

    /// The field's name in go's JSON.
    pub const fn json_name(self) -> &'static str {
        match self {
            Field::Streams => "Streams",
            Field::StreamsInbound => "StreamsInbound",
            Field::StreamsOutbound => "StreamsOutbound",
            Field::Conns => "Conns",
            Field::ConnsInbound => "ConnsInbound",
            Field::ConnsOutbound => "ConnsOutbound",
            Field::Fd => "FD",
            Field::Memory => "Memory",
        }
    }

    /// The field of a concrete limit.
    pub const fn of(self, limit: &BaseLimit) -> u64 {
        match self {
            Field::Streams => limit.streams,
            Field::StreamsInbound => limit.streams_inbound,
            Field::StreamsOutbound => limit.streams_outbound,
            Field::Conns => limit.conns,
            Field::ConnsInbound => limit.conns_inbound,
            Field::ConnsOutbound => limit.conns_outbound,
            Field::Fd => limit.fd,
            Field::Memory => limit.memory,
        }
    }

    /// The field as a file wrote it.
    pub const fn written(self, limits: &ResourceLimits) -> LimitVal {
        match self {
            Field::Streams => limits.streams,
            Field::StreamsInbound => limits.streams_inbound,
            Field::StreamsOutbound => limits.streams_outbound,
            Field::Conns => limits.conns,
            Field::ConnsInbound => limits.conns_inbound,
            Field::ConnsOutbound => limits.conns_outbound,
            Field::Fd => limits.fd,
            Field::Memory => limits.memory,
        }
    }

    /// The total this per-direction field is part of (`Streams` for `StreamsInbound`), or
    /// `None` for totals, file descriptors and memory.
    pub const fn total(self) -> Option<Field> {
        match self {
            Field::StreamsInbound | Field::StreamsOutbound => Some(Field::Streams),
            Field::ConnsInbound | Field::ConnsOutbound => Some(Field::Conns),
            _ => None,
        }
    }

    /// A value of this field for people: `unlimited`, `blockAll`, a size for memory, else
    /// the number.
    ///
    /// ```
    /// use rcmgr_cli::scopes::Field;
    /// assert_eq!(Field::Memory.show(16 << 20), "16.0 MiB");
    /// assert_eq!(Field::Conns.show(0), "blockAll");
    /// assert_eq!(Field::Fd.show(rcmgr::BaseLimit::UNLIMITED), "unlimited");
    /// assert_eq!(Field::Streams.show(512), "512");
    /// ```
    pub fn show(self, value: u64) -> String {
        match value {
            0 => "blockAll".to_owned(),
            v if v >= BaseLimit::UNLIMITED => "unlimited".to_owned(),
            v if self == Field::Memory => ByteSize::new(v).to_string(),
            v => v.to_string(),
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.json_name())
    }
}

/// One scope: its concrete limit and what a limits file wrote for it (all default when the
/// file does not name it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopeLimits {
    /// Which scope.
    pub path: ScopePath,
    /// The limit in force.
    pub built: BaseLimit,
    /// What the file wrote.
    pub written: ResourceLimits,
}

impl ScopeLimits {
    /// Whether the file wrote `field` for this scope.
    pub fn wrote(&self, field: Field) -> bool {
        !field.written(&self.written).is_default()
    }

    /// Whether the file wrote anything for this scope.
    pub fn is_written(&self) -> bool {
        !self.written.is_default()
    }
}

/// Every scope of `built`, in go's order (the fixed scopes with each kind's entries after its
/// default), beside what `written` says for it.
///
/// ```
/// use rcmgr::{PartialLimitConfig, ScalingLimitConfig};
/// use rcmgr_cli::scopes::{scopes, ScopePath};
/// let built = ScalingLimitConfig::default().with_libp2p_defaults().scale(1 << 30, 1024);
/// let all = scopes(&built, &PartialLimitConfig::default());
/// assert_eq!(all[0].path, ScopePath::System);
/// assert!(all.iter().any(|s| s.path == ScopePath::Service("libp2p.identify".into())));
/// assert_eq!(all.last().unwrap().path, ScopePath::Stream);
/// ```
pub fn scopes(built: &ConcreteLimitConfig, written: &PartialLimitConfig) -> Vec<ScopeLimits> {
    let fixed = |path, built: &BaseLimit, written: &ResourceLimits| ScopeLimits {
        path,
        built: *built,
        written: *written,
    };
    let mut all = vec![
        fixed(ScopePath::System, &built.system, &written.system),
        fixed(ScopePath::Transient, &built.transient, &written.transient),
        fixed(
            ScopePath::AllowlistedSystem,
            &built.allowlisted_system,
            &written.allowlisted_system,
        ),
        fixed(
            ScopePath::AllowlistedTransient,
            &built.allowlisted_transient,
            &written.allowlisted_transient,
        ),
    ];
    let named = [
        (
            ScopePath::ServiceDefault,
            &built.service_default,
            &written.service_default,
            &built.service,
            &written.service,
            ScopePath::Service as fn(String) -> ScopePath,
        ),
        (
            ScopePath::ServicePeerDefault,
            &built.service_peer_default,
            &written.service_peer_default,
            &built.service_peer,
            &written.service_peer,
            ScopePath::ServicePeer,
        ),
        (
            ScopePath::ProtocolDefault,
            &built.protocol_default,
            &written.protocol_default,
            &built.protocol,
            &written.protocol,
            ScopePath::Protocol,
        ),
        (
            ScopePath::ProtocolPeerDefault,
            &built.protocol_peer_default,
            &written.protocol_peer_default,
            &built.protocol_peer,
            &written.protocol_peer,
            ScopePath::ProtocolPeer,
        ),
    ];
    for (default_path, built_default, written_default, built_map, written_map, entry) in named {
        all.push(fixed(default_path, built_default, written_default));
        for (name, limit) in built_map {
            let written = written_map.get(name).copied().unwrap_or_default();
            all.push(fixed(entry(name.clone()), limit, &written));
        }
    }
    all.push(fixed(
        ScopePath::PeerDefault,
        &built.peer_default,
        &written.peer_default,
    ));
    for (peer, limit) in &built.peer {
        let written = written.peer.get(peer).copied().unwrap_or_default();
        all.push(fixed(ScopePath::Peer(*peer), limit, &written));
    }
    all.push(fixed(ScopePath::Conn, &built.conn, &written.conn));
    all.push(fixed(ScopePath::Stream, &built.stream, &written.stream));
    all
}

/// The scopes a limits file writes something for, with what it writes, in go's order (the
/// fixed scopes with each kind's entries after its default), one at a time: nothing is built
/// or copied, however large the file.
///
/// ```
/// use rcmgr::PartialLimitConfig;
/// use rcmgr_cli::scopes::{written_scopes, ScopePath};
/// let file = PartialLimitConfig::from_json_str(r#"{"Protocol": {"/p": {"FD": 1}}, "System": {"FD": 2}}"#)?;
/// let paths: Vec<ScopePath> = written_scopes(&file).map(|(path, _)| path).collect();
/// assert_eq!(paths, [ScopePath::System, ScopePath::Protocol("/p".into())]);
/// # Ok::<(), rcmgr::Error>(())
/// ```
pub fn written_scopes(
    written: &PartialLimitConfig,
) -> impl Iterator<Item = (ScopePath, &ResourceLimits)> {
    fn fixed(path: ScopePath, limits: &ResourceLimits) -> Option<(ScopePath, &ResourceLimits)> {
        (!limits.is_default()).then_some((path, limits))
    }
    let head = [
        fixed(ScopePath::System, &written.system),
        fixed(ScopePath::Transient, &written.transient),
        fixed(ScopePath::AllowlistedSystem, &written.allowlisted_system),
        fixed(
            ScopePath::AllowlistedTransient,
            &written.allowlisted_transient,
        ),
    ];
    type Entry = fn(String) -> ScopePath;
    let named: [(
        ScopePath,
        &ResourceLimits,
        &std::collections::BTreeMap<String, ResourceLimits>,
        Entry,
    ); 4] = [
        (
            ScopePath::ServiceDefault,
            &written.service_default,
            &written.service,
            ScopePath::Service,
        ),
        (
            ScopePath::ServicePeerDefault,
            &written.service_peer_default,
            &written.service_peer,
            ScopePath::ServicePeer,
        ),
        (
            ScopePath::ProtocolDefault,
            &written.protocol_default,
            &written.protocol,
            ScopePath::Protocol,
        ),
        (
            ScopePath::ProtocolPeerDefault,
            &written.protocol_peer_default,
            &written.protocol_peer,
            ScopePath::ProtocolPeer,
        ),
    ];
    let maps = named
        .into_iter()
        .flat_map(move |(default, limits, map, entry)| {
            fixed(default, limits).into_iter().chain(
                map.iter()
                    .filter(|(_, limits)| !limits.is_default())
                    .map(move |(name, limits)| (entry(name.clone()), limits)),
            )
        });
    let peers = fixed(ScopePath::PeerDefault, &written.peer_default)
        .into_iter()
        .chain(
            written
                .peer
                .iter()
                .filter(|(_, limits)| !limits.is_default())
                .map(|(peer, limits)| (ScopePath::Peer(*peer), limits)),
        );
    let tail = [
        fixed(ScopePath::Conn, &written.conn),
        fixed(ScopePath::Stream, &written.stream),
    ];
    head.into_iter()
        .flatten()
        .chain(maps)
        .chain(peers)
        .chain(tail.into_iter().flatten())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scope_of_a_file_is_listed_with_what_it_wrote() -> Result<(), rcmgr::Error> {
        let written = PartialLimitConfig::from_json_str(
            r#"{"Protocol": {"/my/app": {"StreamsInbound": 7}}, "Conn": {"Memory": "1024"}}"#,
        )?;
        let built = written.build(&ConcreteLimitConfig::infinite());
        let all = scopes(&built, &written);
        let app = all
            .iter()
            .find(|s| s.path == ScopePath::Protocol("/my/app".into()))
            .expect("the file's protocol is listed");
        assert_eq!(app.built.streams_inbound, 7);
        assert!(app.wrote(Field::StreamsInbound) && !app.wrote(Field::Streams));
        let conn = all
            .iter()
            .find(|s| s.path == ScopePath::Conn)
            .expect("conn");
        assert!(conn.is_written() && conn.wrote(Field::Memory));
        assert_eq!(all.iter().filter(|s| s.is_written()).count(), 2);
        Ok(())
    }

    #[test]
    fn fields_read_the_matching_limit() {
        let limit = BaseLimit {
            streams: 1,
            streams_inbound: 2,
            streams_outbound: 3,
            conns: 4,
            conns_inbound: 5,
            conns_outbound: 6,
            fd: 7,
            memory: 8,
        };
        let values: Vec<u64> = Field::ALL.iter().map(|f| f.of(&limit)).collect();
        assert_eq!(values, [1, 2, 3, 4, 5, 6, 7, 8]);
        let written = ResourceLimits::from(limit);
        for field in Field::ALL {
            assert_eq!(field.written(&written), LimitVal::Value(field.of(&limit)));
        }
    }
}
