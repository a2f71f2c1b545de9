//! [`TraceEvent`]: one line of a trace, in go's schema (`TraceEvt`), with its JSON form.

use std::{fmt, str::FromStr, time::SystemTime};

use serde::{
    Deserialize, Deserializer, Serialize, Serializer, de,
    ser::{SerializeMap, SerializeStruct},
};

use super::time::{format_rfc3339_nanos, parse_rfc3339};
use crate::{
    limits::{BaseLimit, PartialLimitConfig},
    types::{ScopeName, ScopeStat, name::Base58},
};

/// What a [`TraceEvent`] records: go's `TraceEvtTyp`, with go's names on the wire, and one
/// type of rcmgr's own, [`DroppedEvents`](Self::DroppedEvents), which go's readers skip.
///
/// ```
/// use rcmgr::TraceEventType;
/// assert_eq!(TraceEventType::BlockAddStream.as_str(), "block_add_stream");
/// assert_eq!("reserve_memory".parse::<TraceEventType>(), Ok(TraceEventType::ReserveMemory));
/// assert!(TraceEventType::BlockAddConn.is_block());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TraceEventType {
    /// The trace began; carries the limits in force.
    Start,
    /// A scope was created; carries its limit.
    CreateScope,
    /// A scope was closed or collected.
    DestroyScope,
    /// Memory was reserved on a scope.
    ReserveMemory,
    /// A memory reservation was refused by this scope's limit.
    BlockReserveMemory,
    /// Memory was released from a scope.
    ReleaseMemory,
    /// Streams were added to a scope.
    AddStream,
    /// Adding streams was refused by this scope's limit.
    BlockAddStream,
    /// Streams were removed from a scope.
    RemoveStream,
    /// Connections (and file descriptors) were added to a scope.
    AddConn,
    /// Adding connections was refused by this scope's limit.
    BlockAddConn,
    /// Connections (and file descriptors) were removed from a scope.
    RemoveConn,
    /// Not go's: events were lost here because the trace could not keep up
    /// (`"dropped_events"`, with their number in `Dropped`, at the time the first of them was
    /// lost; the gap runs to the next event). go's readers ignore a type they do not know, so
    /// a trace that holds these still reads there, as a partial trace; `rcmgr trace` reports
    /// them and marks the gaps.
    DroppedEvents,
}

impl TraceEventType {
    /// Every event type: go's twelve in go's order, then rcmgr's
    /// [`DroppedEvents`](Self::DroppedEvents).
    pub const ALL: [TraceEventType; 13] = [
        TraceEventType::Start,
        TraceEventType::CreateScope,
        TraceEventType::DestroyScope,
        TraceEventType::ReserveMemory,
        TraceEventType::BlockReserveMemory,
        TraceEventType::ReleaseMemory,
        TraceEventType::AddStream,
        TraceEventType::BlockAddStream,
        TraceEventType::RemoveStream,
        TraceEventType::AddConn,
        TraceEventType::BlockAddConn,
        TraceEventType::RemoveConn,
        TraceEventType::DroppedEvents,
    ];

    /// go's name for the type (`"reserve_memory"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            TraceEventType::Start => "start",
            TraceEventType::CreateScope => "create_scope",
            TraceEventType::DestroyScope => "destroy_scope",
            TraceEventType::ReserveMemory => "reserve_memory",
            TraceEventType::BlockReserveMemory => "block_reserve_memory",
            TraceEventType::ReleaseMemory => "release_memory",
            TraceEventType::AddStream => "add_stream",
            TraceEventType::BlockAddStream => "block_add_stream",
            TraceEventType::RemoveStream => "remove_stream",
            TraceEventType::AddConn => "add_conn",
            TraceEventType::BlockAddConn => "block_add_conn",
            TraceEventType::RemoveConn => "remove_conn",
            TraceEventType::DroppedEvents => "dropped_events",
        }
    }

    /// Whether this is a refusal (`block_*`).
    pub fn is_block(self) -> bool {
        matches!(
            self,
            TraceEventType::BlockReserveMemory
                | TraceEventType::BlockAddStream
                | TraceEventType::BlockAddConn
        )
    }
}

impl fmt::Display for TraceEventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not one of go's trace event types.
///
/// ```
/// assert!("reserve".parse::<rcmgr::TraceEventType>().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownTraceEventType(String);

impl fmt::Display for UnknownTraceEventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown trace event type {:?}", self.0)
    }
}

impl std::error::Error for UnknownTraceEventType {}

impl FromStr for TraceEventType {
    type Err = UnknownTraceEventType;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        TraceEventType::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
            .ok_or_else(|| UnknownTraceEventType(text.to_owned()))
    }
}

/// The limit a [`TraceEvent`] carries: a scope's own limit on `create_scope`, the whole
/// configuration on `start`.
///
/// ```
/// use rcmgr::{BaseLimit, TraceLimit};
/// let limit = TraceLimit::Scope(BaseLimit { streams: 16, ..BaseLimit::block_all() });
/// assert!(matches!(limit, TraceLimit::Scope(l) if l.streams == 16));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TraceLimit {
    /// One scope's limit. On the wire: go's `BaseLimit` JSON, numbers only, zeros left out.
    Scope(BaseLimit),
    /// The limits in force, as a go limits file writes them.
    Config(Box<PartialLimitConfig>),
}

/// One event of a trace (go's `TraceEvt`): what happened to which scope, by how much, and the
/// scope's totals afterwards.
///
/// Its JSON form is go's, field for field: `Time` (RFC 3339 with nanoseconds, in UTC here),
/// `Type`, then, each left out when zero or absent, `Scope` (an object naming the scope's
/// class and ids, see below), `Name` (go's scope name), `Limit`, `Priority`, `Delta` (bytes,
/// or ±file descriptors on connection events), `DeltaIn`, `DeltaOut`, and the totals
/// `Memory`, `StreamsIn`, `StreamsOut`, `ConnsIn`, `ConnsOut`, `FD`. So tools written for
/// go-libp2p's trace files read rcmgr's, and the other way round (`Deserialize` reads go's
/// local-time offsets too).
///
/// One field and one type are rcmgr's own, both skipped by go's readers (go's
/// `encoding/json` ignores unknown fields, and go's consumers switch on the types they know):
/// a `dropped_events` event, with the number of events lost before it in `Dropped`, written
/// where the trace had to drop events, so that a reader knows the trace is partial and where
/// (see [`TraceEventType::DroppedEvents`]).
///
/// The `Scope` object is `{"Class":"system"}`, `{"Class":"conn","Conn":"3"}`,
/// `{"Class":"protocol-peer","Protocol":"/p","Peer":"12D3…"}` and so on. A span's object is
/// its owner's with `"Span"` added, the span numbers from the owner down joined by dots:
/// `{"Class":"system","Span":"1"}` for `system.span-1`, `{"Class":"conn","Conn":"3","Span":"1.2"}`
/// for `conn-3.span-1.span-2`. (go means to do that and does not: its spans of the fixed
/// scopes even stop its trace writer. Reading, the object is ignored: `Name` says it all.)
///
/// ```
/// use rcmgr::{ScopeName, TraceEvent, TraceEventType};
/// let mut event = TraceEvent::new(std::time::UNIX_EPOCH, TraceEventType::AddStream);
/// event.scope = Some(ScopeName::Transient);
/// event.delta_in = 1;
/// event.streams_in = 3;
/// let line = serde_json::to_string(&event)?;
/// assert_eq!(
///     line,
///     r#"{"Time":"1970-01-01T00:00:00Z","Type":"add_stream","Scope":{"Class":"transient"},"Name":"transient","DeltaIn":1,"StreamsIn":3}"#
/// );
/// assert_eq!(serde_json::from_str::<TraceEvent>(&line)?, event);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceEvent {
    /// When it happened (to the trace clock's resolution: see `docs/observability.md`).
    pub time: SystemTime,
    /// What happened.
    pub kind: TraceEventType,
    /// The scope it happened to; `None` only for `start`.
    pub scope: Option<ScopeName>,
    /// The limit: the scope's on `create_scope`, the configuration on `start`.
    pub limit: Option<TraceLimit>,
    /// The priority of a memory reservation (0 when not one).
    pub priority: u8,
    /// Bytes reserved (positive) or released (negative) on memory events; file descriptors
    /// added or removed on connection events.
    pub delta: i64,
    /// Inbound streams or connections added (positive) or removed (negative).
    pub delta_in: i64,
    /// Outbound streams or connections added (positive) or removed (negative).
    pub delta_out: i64,
    /// The scope's memory afterwards (on a block event: what it held when it refused).
    pub memory: i64,
    /// The scope's inbound streams afterwards.
    pub streams_in: i64,
    /// The scope's outbound streams afterwards.
    pub streams_out: i64,
    /// The scope's inbound connections afterwards.
    pub conns_in: i64,
    /// The scope's outbound connections afterwards.
    pub conns_out: i64,
    /// The scope's file descriptors afterwards.
    pub fd: i64,
    /// On a [`DroppedEvents`](TraceEventType::DroppedEvents) event: how many events were
    /// lost since the previous event of the trace (rcmgr's own field, `Dropped`); 0 otherwise.
    pub dropped: u64,
}

impl TraceEvent {
    /// An event of `kind` at `time`, with no scope and every number zero.
    ///
    /// ```
    /// let event = rcmgr::TraceEvent::new(std::time::SystemTime::now(), rcmgr::TraceEventType::Start);
    /// assert!(event.scope.is_none() && event.delta == 0);
    /// ```
    pub fn new(time: SystemTime, kind: TraceEventType) -> Self {
        TraceEvent {
            time,
            kind,
            scope: None,
            limit: None,
            priority: 0,
            delta: 0,
            delta_in: 0,
            delta_out: 0,
            memory: 0,
            streams_in: 0,
            streams_out: 0,
            conns_in: 0,
            conns_out: 0,
            fd: 0,
            dropped: 0,
        }
    }

    /// A [`DroppedEvents`](TraceEventType::DroppedEvents) event at `time`: `dropped` events
    /// were lost before it.
    ///
    /// ```
    /// let event = rcmgr::TraceEvent::dropped_events(std::time::UNIX_EPOCH, 7);
    /// assert_eq!(
    ///     serde_json::to_string(&event)?,
    ///     r#"{"Time":"1970-01-01T00:00:00Z","Type":"dropped_events","Dropped":7}"#
    /// );
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    pub fn dropped_events(time: SystemTime, dropped: u64) -> Self {
        let mut event = TraceEvent::new(time, TraceEventType::DroppedEvents);
        event.dropped = dropped;
        event
    }

    /// The scope's totals after the event, as a [`ScopeStat`]. Only the totals of the
    /// event's own resource are recorded (memory on memory events, streams on stream events,
    /// connections and file descriptors on connection events); the others read as zero.
    ///
    /// ```
    /// let mut event = rcmgr::TraceEvent::new(std::time::SystemTime::now(), rcmgr::TraceEventType::AddConn);
    /// event.conns_in = 2;
    /// event.fd = 2;
    /// assert_eq!(event.totals().conns(), 2);
    /// ```
    pub fn totals(&self) -> ScopeStat {
        let count = |n: i64| u32::try_from(n.max(0)).unwrap_or(u32::MAX);
        ScopeStat {
            streams_inbound: count(self.streams_in),
            streams_outbound: count(self.streams_out),
            conns_inbound: count(self.conns_in),
            conns_outbound: count(self.conns_out),
            fd: count(self.fd),
            memory: self.memory.max(0) as u64,
        }
    }
}

/// go's `BaseLimit` JSON: every field a number, zeros left out.
struct BaseLimitJson<'a>(&'a BaseLimit);

/// A field of a [`BaseLimit`].
type LimitField = fn(&mut BaseLimit) -> &mut u64;

/// go's `BaseLimit` field names, in its order.
const BASE_LIMIT_FIELDS: [(&str, LimitField); 8] = [
    ("Streams", |l| &mut l.streams),
    ("StreamsInbound", |l| &mut l.streams_inbound),
    ("StreamsOutbound", |l| &mut l.streams_outbound),
    ("Conns", |l| &mut l.conns),
    ("ConnsInbound", |l| &mut l.conns_inbound),
    ("ConnsOutbound", |l| &mut l.conns_outbound),
    ("FD", |l| &mut l.fd),
    ("Memory", |l| &mut l.memory),
];

impl Serialize for BaseLimitJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        let mut limit = *self.0;
        for (name, field) in BASE_LIMIT_FIELDS {
            let value = *field(&mut limit);
            if value != 0 {
                map.serialize_entry(name, &value)?;
            }
        }
        map.end()
    }
}

fn base_limit_from_json(value: &serde_json::Value) -> BaseLimit {
    let mut limit = BaseLimit::block_all();
    for (name, field) in BASE_LIMIT_FIELDS {
        if let Some(number) = value.get(name).and_then(serde_json::Value::as_u64) {
            *field(&mut limit) = number;
        }
    }
    limit
}

/// A peer ID serialized as its base58 text, through the names' per-thread cache.
struct PeerText<'a>(&'a libp2p_identity::PeerId);

impl Serialize for PeerText<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&Base58(self.0))
    }
}

/// go's `scopeClass` object for a scope name (see [`TraceEvent`]).
struct ScopeObject<'a>(&'a ScopeName);

impl Serialize for ScopeObject<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (owner, spans) = match self.0 {
            ScopeName::Span(span) => (span.base(), span.indices()),
            other => (other, &[][..]),
        };
        let mut object = serializer.serialize_struct("Scope", 4)?;
        match owner {
            ScopeName::System => object.serialize_field("Class", "system")?,
            ScopeName::Transient => object.serialize_field("Class", "transient")?,
            ScopeName::AllowlistedSystem => object.serialize_field("Class", "allowlistedSystem")?,
            ScopeName::AllowlistedTransient => {
                object.serialize_field("Class", "allowlistedTransient")?
            }
            ScopeName::Conn(n) => {
                object.serialize_field("Class", "conn")?;
                object.serialize_field("Conn", &n.to_string())?;
            }
            ScopeName::Stream(n) => {
                object.serialize_field("Class", "stream")?;
                object.serialize_field("Stream", &n.to_string())?;
            }
            ScopeName::Peer(peer) => {
                object.serialize_field("Class", "peer")?;
                object.serialize_field("Peer", &PeerText(peer))?;
            }
            ScopeName::Service(service) => {
                object.serialize_field("Class", "service")?;
                object.serialize_field("Service", &**service)?;
            }
            ScopeName::ServicePeer { service, peer } => {
                object.serialize_field("Class", "service-peer")?;
                object.serialize_field("Service", &**service)?;
                object.serialize_field("Peer", &PeerText(peer))?;
            }
            ScopeName::Protocol(protocol) => {
                object.serialize_field("Class", "protocol")?;
                object.serialize_field("Protocol", &**protocol)?;
            }
            ScopeName::ProtocolPeer { protocol, peer } => {
                object.serialize_field("Class", "protocol-peer")?;
                object.serialize_field("Protocol", &**protocol)?;
                object.serialize_field("Peer", &PeerText(peer))?;
            }
            // A span's base is never a span.
            ScopeName::Span(_) => object.serialize_field("Class", "span")?,
        }
        if !spans.is_empty() {
            let spans: Vec<String> = spans.iter().map(u64::to_string).collect();
            object.serialize_field("Span", &spans.join("."))?;
        }
        object.end()
    }
}

impl Serialize for TraceEvent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("Time", &format_rfc3339_nanos(self.time))?;
        map.serialize_entry("Type", self.kind.as_str())?;
        if let Some(scope) = &self.scope {
            map.serialize_entry("Scope", &ScopeObject(scope))?;
            map.serialize_entry("Name", &scope.to_string())?;
        }
        match &self.limit {
            Some(TraceLimit::Scope(limit)) => {
                map.serialize_entry("Limit", &BaseLimitJson(limit))?
            }
            Some(TraceLimit::Config(config)) => map.serialize_entry("Limit", config)?,
            None => {}
        }
        if self.priority != 0 {
            map.serialize_entry("Priority", &self.priority)?;
        }
        for (name, value) in [
            ("Delta", self.delta),
            ("DeltaIn", self.delta_in),
            ("DeltaOut", self.delta_out),
            ("Memory", self.memory),
            ("StreamsIn", self.streams_in),
            ("StreamsOut", self.streams_out),
            ("ConnsIn", self.conns_in),
            ("ConnsOut", self.conns_out),
            ("FD", self.fd),
        ] {
            if value != 0 {
                map.serialize_entry(name, &value)?;
            }
        }
        if self.dropped != 0 {
            map.serialize_entry("Dropped", &self.dropped)?;
        }
        map.end()
    }
}

/// A trace line as read, before its fields are checked.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawEvent {
    time: String,
    #[serde(rename = "Type")]
    kind: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    limit: Option<serde_json::Value>,
    #[serde(default)]
    priority: u8,
    #[serde(default)]
    delta: i64,
    #[serde(default)]
    delta_in: i64,
    #[serde(default)]
    delta_out: i64,
    #[serde(default)]
    memory: i64,
    #[serde(default)]
    streams_in: i64,
    #[serde(default)]
    streams_out: i64,
    #[serde(default)]
    conns_in: i64,
    #[serde(default)]
    conns_out: i64,
    #[serde(default, rename = "FD")]
    fd: i64,
    #[serde(default)]
    dropped: u64,
}

impl<'de> Deserialize<'de> for TraceEvent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = RawEvent::deserialize(deserializer)?;
        let time = parse_rfc3339(&raw.time)
            .ok_or_else(|| de::Error::custom(format!("bad Time {:?}", raw.time)))?;
        let kind: TraceEventType = raw.kind.parse().map_err(de::Error::custom)?;
        let scope = match raw.name.as_deref() {
            None | Some("") => None,
            Some(name) => Some(name.parse::<ScopeName>().map_err(de::Error::custom)?),
        };
        let limit = match raw.limit {
            None | Some(serde_json::Value::Null) => None,
            Some(value) if kind == TraceEventType::Start => Some(TraceLimit::Config(Box::new(
                PartialLimitConfig::deserialize(value).map_err(de::Error::custom)?,
            ))),
            Some(value) => Some(TraceLimit::Scope(base_limit_from_json(&value))),
        };
        Ok(TraceEvent {
            time,
            kind,
            scope,
            limit,
            priority: raw.priority,
            delta: raw.delta,
            delta_in: raw.delta_in,
            delta_out: raw.delta_out,
            memory: raw.memory,
            streams_in: raw.streams_in,
            streams_out: raw.streams_out,
            conns_in: raw.conns_in,
            conns_out: raw.conns_out,
            fd: raw.fd,
            dropped: raw.dropped,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn event(kind: TraceEventType, scope: ScopeName) -> TraceEvent {
        let mut event = TraceEvent::new(UNIX_EPOCH + Duration::new(1, 5), kind);
        event.scope = Some(scope);
        event
    }

    #[test]
    fn scope_objects_follow_go_and_spans_of_every_scope_serialize() {
        let peer = libp2p_identity::PeerId::random();
        let span = ScopeName::span;
        let cases = [
            (ScopeName::System, r#"{"Class":"system"}"#.to_owned()),
            (
                ScopeName::Conn(3),
                r#"{"Class":"conn","Conn":"3"}"#.to_owned(),
            ),
            (
                ScopeName::ProtocolPeer {
                    protocol: "/p".into(),
                    peer,
                },
                format!(r#"{{"Class":"protocol-peer","Protocol":"/p","Peer":"{peer}"}}"#),
            ),
            (
                ScopeName::ServicePeer {
                    service: "s".into(),
                    peer,
                },
                format!(r#"{{"Class":"service-peer","Service":"s","Peer":"{peer}"}}"#),
            ),
            (
                span(ScopeName::System, 1),
                r#"{"Class":"system","Span":"1"}"#.to_owned(),
            ),
            (
                span(span(ScopeName::Conn(3), 1), 2),
                r#"{"Class":"conn","Conn":"3","Span":"1.2"}"#.to_owned(),
            ),
        ];
        for (name, object) in cases {
            let json = serde_json::to_string(&ScopeObject(&name)).expect("serializes");
            assert_eq!(json, object);
            let traced = event(TraceEventType::DestroyScope, name);
            let line = serde_json::to_string(&traced).expect("serializes");
            assert_eq!(
                serde_json::from_str::<TraceEvent>(&line).expect("reads"),
                traced
            );
        }
    }

    #[test]
    fn limits_and_numbers_round_trip() {
        let mut create = event(TraceEventType::CreateScope, ScopeName::Stream(9));
        create.limit = Some(TraceLimit::Scope(BaseLimit {
            streams: 2,
            memory: 1 << 20,
            ..BaseLimit::block_all()
        }));
        let line = serde_json::to_string(&create).expect("serializes");
        assert!(
            line.contains(r#""Limit":{"Streams":2,"Memory":1048576}"#),
            "{line}"
        );
        assert_eq!(
            serde_json::from_str::<TraceEvent>(&line).expect("reads"),
            create
        );

        let mut start = TraceEvent::new(UNIX_EPOCH, TraceEventType::Start);
        start.limit = Some(TraceLimit::Config(Box::new(
            crate::ConcreteLimitConfig::infinite().to_partial(),
        )));
        let line = serde_json::to_string(&start).expect("serializes");
        assert_eq!(
            serde_json::from_str::<TraceEvent>(&line).expect("reads"),
            start
        );

        let dropped = TraceEvent::dropped_events(UNIX_EPOCH + Duration::new(2, 0), 123);
        let line = serde_json::to_string(&dropped).expect("serializes");
        assert!(
            line.ends_with(r#""Type":"dropped_events","Dropped":123}"#),
            "{line}"
        );
        assert_eq!(
            serde_json::from_str::<TraceEvent>(&line).expect("reads"),
            dropped
        );

        let mut release = event(TraceEventType::ReleaseMemory, ScopeName::System);
        release.delta = -4096;
        let line = serde_json::to_string(&release).expect("serializes");
        assert!(
            line.ends_with(r#""Name":"system","Delta":-4096}"#),
            "{line}"
        );
    }

    #[test]
    fn go_lines_are_read() {
        let line = r#"{"Time":"2022-05-11T14:07:45.371152+02:00","Type":"reserve_memory","Scope":{"Class":"conn","Conn":"4"},"Name":"conn-4.span-1","Priority":203,"Delta":1024,"Memory":1024}"#;
        let event: TraceEvent = serde_json::from_str(line).expect("reads go's line");
        assert_eq!(event.kind, TraceEventType::ReserveMemory);
        assert_eq!(event.scope.expect("a scope").to_string(), "conn-4.span-1");
        assert_eq!(
            (event.priority, event.delta, event.memory),
            (203, 1024, 1024)
        );
        assert!(serde_json::from_str::<TraceEvent>(r#"{"Time":"x","Type":"start"}"#).is_err());
    }
}
