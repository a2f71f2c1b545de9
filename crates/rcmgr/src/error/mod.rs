//! Errors as data: what refused, why, and by how much.
//!
//! A leaf of the crate: it depends only on the vocabulary in [`crate::types`], so every layer
//! can return these errors and none of them is built on a reservation's success path (a
//! refusal travels as a compact hit and becomes an [`Error`] where the public call returns).

mod address;

use std::{fmt, path::PathBuf};

pub use address::{
    AddressRange, AllowlistEntryProblem, InvalidAllowlistEntry, InvalidIpLimits, IpLimitExceeded,
    RateLimited,
};

use crate::types::{Direction, Priority, Resource, ScopeName, name::SpanLevel};

/// Everything that can go wrong in rcmgr.
///
/// A refusal by a limit is [`Error::LimitExceeded`]; its [`LimitExceeded`] payload says which
/// scope asked, which scope refused, the resource and the numbers. `Display` prints go-libp2p's
/// text, so logs grep the same in both worlds:
/// `stream-9: peer:12D3Koo…: cannot reserve inbound stream: resource limit exceeded`.
///
/// ```
/// use rcmgr::{ConcreteLimitConfig, Direction, Resource, ResourceManager};
/// let mut limits = ConcreteLimitConfig::infinite();
/// limits.peer_default.streams_inbound = 0;
/// let rm = ResourceManager::new(limits);
/// let peer = rcmgr::PeerId::random();
/// let err = rm.open_stream(peer, Direction::Inbound).unwrap_err();
/// assert!(err.is_resource_limit_exceeded() && err.is_temporary());
/// let refusal = err.limit_exceeded().unwrap();
/// assert_eq!(refusal.resource(), Resource::StreamsInbound);
/// assert_eq!(refusal.refused_by().to_string(), format!("peer:{peer}"));
/// assert_eq!(err.to_string(), format!("stream-1: peer:{peer}: cannot reserve inbound stream: resource limit exceeded"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A limit refused the reservation; nothing was reserved.
    #[error(transparent)]
    LimitExceeded(Box<LimitExceeded>),
    /// The scope, or one the reservation had to pass through, is closed.
    #[error(transparent)]
    ScopeClosed(Box<ScopeClosed>),
    /// `set_peer` on a connection that already has its peer.
    #[error("connection scope already attached to a peer")]
    ConnAlreadyAttached,
    /// `set_protocol` on a stream that already has its protocol.
    #[error("stream scope already attached to a protocol")]
    StreamAlreadyAttachedToProtocol,
    /// `set_service` on a stream that already has its service.
    #[error("stream scope already attached to a service")]
    StreamAlreadyAttachedToService,
    /// `set_service` on a stream without a protocol.
    #[error("stream scope not attached to a protocol")]
    StreamNotAttachedToProtocol,
    /// A limits configuration could not be read or understood; nothing was applied.
    #[error(transparent)]
    Config(Box<ConfigError>),
    /// `open_connection` refused by a per-IP, subnet or network-prefix connection limit;
    /// nothing was reserved.
    #[error(transparent)]
    IpLimitExceeded(Box<IpLimitExceeded>),
    /// `open_connection` refused by a connection rate limit; nothing was reserved.
    #[error(transparent)]
    RateLimited(Box<RateLimited>),
    /// An allowlist entry that names no network.
    #[error(transparent)]
    InvalidAllowlistEntry(Box<InvalidAllowlistEntry>),
    /// Address-based limits that cannot be enforced as given.
    #[error(transparent)]
    InvalidIpLimits(Box<InvalidIpLimits>),
    /// The trace could not be started: its file cannot be created, or its thread cannot be
    /// started.
    #[error(transparent)]
    Trace(Box<TraceError>),
}

impl Error {
    /// Whether a limit refused: what go's `errors.Is(err, network.ErrResourceLimitExceeded)`
    /// answers, and also true for the per-IP and rate-limit refusals of `open_connection`
    /// (go returns plain errors for those; they are refusals all the same, and callers that
    /// count or log refusals should see them).
    ///
    /// ```
    /// assert!(!rcmgr::Error::ConnAlreadyAttached.is_resource_limit_exceeded());
    /// ```
    pub fn is_resource_limit_exceeded(&self) -> bool {
        matches!(
            self,
            Error::LimitExceeded(_) | Error::IpLimitExceeded(_) | Error::RateLimited(_)
        )
    }

    /// Whether trying again later may succeed: what go's `net.Error.Temporary()` answers. True
    /// for limit refusals, false for misuse and closed scopes.
    ///
    /// Per-IP and rate-limit refusals are temporary too (go's are not, only because they are
    /// built with `errors.New`/`fmt.Errorf`): the count falls as connections close and the
    /// bucket refills with time, exactly like a scope's limit.
    ///
    /// ```
    /// assert!(!rcmgr::Error::StreamNotAttachedToProtocol.is_temporary());
    /// ```
    pub fn is_temporary(&self) -> bool {
        self.is_resource_limit_exceeded()
    }

    /// The details of a limit refusal.
    ///
    /// ```
    /// assert!(rcmgr::Error::ConnAlreadyAttached.limit_exceeded().is_none());
    /// ```
    pub fn limit_exceeded(&self) -> Option<&LimitExceeded> {
        match self {
            Error::LimitExceeded(refusal) => Some(refusal),
            _ => None,
        }
    }

    /// The details of a per-IP, subnet or network-prefix refusal.
    ///
    /// ```
    /// assert!(rcmgr::Error::ConnAlreadyAttached.ip_limit_exceeded().is_none());
    /// ```
    pub fn ip_limit_exceeded(&self) -> Option<&IpLimitExceeded> {
        match self {
            Error::IpLimitExceeded(refusal) => Some(refusal),
            _ => None,
        }
    }

    /// The details of a rate-limit refusal.
    ///
    /// ```
    /// assert!(rcmgr::Error::ConnAlreadyAttached.rate_limited().is_none());
    /// ```
    pub fn rate_limited(&self) -> Option<&RateLimited> {
        match self {
            Error::RateLimited(refusal) => Some(refusal),
            _ => None,
        }
    }

    /// The details of a refused allowlist entry.
    ///
    /// ```
    /// assert!(rcmgr::Error::ConnAlreadyAttached.invalid_allowlist_entry().is_none());
    /// ```
    pub fn invalid_allowlist_entry(&self) -> Option<&InvalidAllowlistEntry> {
        match self {
            Error::InvalidAllowlistEntry(invalid) => Some(invalid),
            _ => None,
        }
    }

    /// The details of a refusal because a scope was closed.
    ///
    /// ```
    /// assert!(rcmgr::Error::ConnAlreadyAttached.scope_closed().is_none());
    /// ```
    pub fn scope_closed(&self) -> Option<&ScopeClosed> {
        match self {
            Error::ScopeClosed(closed) => Some(closed),
            _ => None,
        }
    }

    /// The details of a trace that could not be started.
    ///
    /// ```
    /// assert!(rcmgr::Error::ConnAlreadyAttached.trace().is_none());
    /// ```
    pub fn trace(&self) -> Option<&TraceError> {
        match self {
            Error::Trace(trace) => Some(trace),
            _ => None,
        }
    }

    /// The details of a limits configuration that could not be read or understood.
    ///
    /// ```
    /// let err = rcmgr::PartialLimitConfig::from_json_str(r#"{"System": {"FD": "many"}}"#).unwrap_err();
    /// assert_eq!(err.config().unwrap().path(), "System.FD");
    /// ```
    pub fn config(&self) -> Option<&ConfigError> {
        match self {
            Error::Config(config) => Some(config),
            _ => None,
        }
    }
}

/// A reservation refused by a limit. Nothing was reserved.
///
/// `scope()` is the scope the caller reserved on; `refused_by()` is the scope whose limit
/// refused (the same scope, one of its constraining edges, or a span's owner). See [`Error`]
/// for an example.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitExceeded {
    scope: ScopeName,
    edge: Option<ScopeName>,
    resource: Resource,
    current: u64,
    attempted: u64,
    limit: u64,
    direction: Option<Direction>,
    transfer: bool,
}

impl LimitExceeded {
    /// A refusal of `resource` on `scope` by the limit of `edge` (or of `scope` itself when
    /// `edge` is `None`): `current` was held, `attempted` asked for, `limit` the limit. The
    /// engine builds these; the constructor is public for test doubles and reference
    /// implementations that must return the same values.
    ///
    /// ```
    /// use rcmgr::{LimitExceeded, Resource, ScopeName};
    /// let refusal = LimitExceeded::new(ScopeName::Stream(9), Some(ScopeName::Transient), Resource::Streams, (1, 1, 1));
    /// assert_eq!(refusal.to_string(), "stream-9: transient: cannot reserve stream: resource limit exceeded");
    /// ```
    pub fn new(
        scope: ScopeName,
        edge: Option<ScopeName>,
        resource: Resource,
        (current, attempted, limit): (u64, u64, u64),
    ) -> Self {
        LimitExceeded {
            scope,
            edge,
            resource,
            current,
            attempted,
            limit,
            direction: None,
            transfer: false,
        }
    }

    /// Records the direction of the streams or connections that were asked for.
    ///
    /// ```
    /// use rcmgr::{Direction, LimitExceeded, Resource, ScopeName};
    /// let refusal = LimitExceeded::new(ScopeName::System, None, Resource::StreamsInbound, (1, 1, 1))
    ///     .asked(Some(Direction::Inbound));
    /// assert_eq!(refusal.direction(), Some(Direction::Inbound));
    /// ```
    pub fn asked(mut self, direction: Option<Direction>) -> Self {
        self.direction = direction;
        self
    }

    /// Marks a refusal met while moving a scope's usage to a new parent (`set_peer`,
    /// `set_protocol`, `set_service`): go words those with the parent's name alone.
    ///
    /// ```
    /// use rcmgr::{LimitExceeded, Resource, ScopeName};
    /// let refusal = LimitExceeded::new(ScopeName::Conn(1), Some(ScopeName::Transient), Resource::Conns, (1, 1, 1))
    ///     .in_transfer();
    /// assert_eq!(refusal.to_string(), "transient: cannot reserve connection: resource limit exceeded");
    /// ```
    pub fn in_transfer(mut self) -> Self {
        self.transfer = true;
        self
    }

    /// The scope the reservation was made on.
    pub fn scope(&self) -> &ScopeName {
        &self.scope
    }

    /// The constraining scope that refused, when it was not [`scope`](Self::scope) itself.
    pub fn edge(&self) -> Option<&ScopeName> {
        self.edge.as_ref()
    }

    /// The scope whose limit refused: the edge if there was one, else the scope itself.
    pub fn refused_by(&self) -> &ScopeName {
        self.edge.as_ref().unwrap_or(&self.scope)
    }

    /// The resource that was refused.
    pub fn resource(&self) -> Resource {
        self.resource
    }

    /// How much of the resource the refusing scope held.
    pub fn current(&self) -> u64 {
        self.current
    }

    /// How much was asked for.
    pub fn attempted(&self) -> u64 {
        self.attempted
    }

    /// The refusing scope's limit for the resource.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The direction of the refused stream or connection (`None` for memory, and for a
    /// transfer that moved streams or connections of both directions).
    ///
    /// ```
    /// use rcmgr::{ConcreteLimitConfig, Direction, ResourceManager};
    /// let mut limits = ConcreteLimitConfig::infinite();
    /// limits.system.streams = 0;
    /// let rm = ResourceManager::new(limits);
    /// let err = rm.open_stream(rcmgr::PeerId::random(), Direction::Outbound).unwrap_err();
    /// assert_eq!(err.limit_exceeded().unwrap().direction(), Some(Direction::Outbound));
    /// ```
    pub fn direction(&self) -> Option<Direction> {
        self.direction
    }

    /// The priority of a refused memory reservation.
    pub fn priority(&self) -> Option<Priority> {
        match self.resource {
            Resource::Memory { priority } => Some(priority),
            _ => None,
        }
    }
}

impl fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.transfer {
            write!(f, "{}: ", self.refused_by())?;
        } else {
            write_chain(f, &self.scope, self.edge.as_ref())?;
        }
        if let Some(what) = self.resource.reserve_phrase() {
            write!(f, "cannot reserve {what}: ")?;
        }
        f.write_str("resource limit exceeded")
    }
}

impl std::error::Error for LimitExceeded {}

/// Why a trace could not be started (see [`Error::Trace`]).
///
/// ```
/// let err = rcmgr::ResourceManager::builder(rcmgr::ConcreteLimitConfig::infinite())
///     .trace_file("/nonexistent-directory/trace.json")
///     .build()
///     .unwrap_err();
/// let trace = err.trace().unwrap();
/// assert_eq!(trace.path().unwrap().to_str(), Some("/nonexistent-directory/trace.json"));
/// assert_eq!(trace.kind(), std::io::ErrorKind::NotFound);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceError {
    path: Option<PathBuf>,
    kind: std::io::ErrorKind,
    message: String,
}

impl TraceError {
    // Under loom there is no trace to fail.
    #[cfg_attr(rcmgr_loom, allow(dead_code))]
    pub(crate) fn new(path: Option<PathBuf>, error: &std::io::Error) -> Self {
        TraceError {
            path,
            kind: error.kind(),
            message: error.to_string(),
        }
    }

    /// The trace file, when the problem is with one.
    pub fn path(&self) -> Option<&std::path::Path> {
        self.path.as_deref()
    }

    /// The kind of I/O error.
    pub fn kind(&self) -> std::io::ErrorKind {
        self.kind
    }
}

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(path) => write!(
                f,
                "cannot create the trace file {}: {}",
                path.display(),
                self.message
            ),
            None => write!(f, "cannot start the trace writer: {}", self.message),
        }
    }
}

impl std::error::Error for TraceError {}

/// A reservation or transfer on a closed scope, or through one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopeClosed {
    scope: ScopeName,
    closed: Option<ScopeName>,
}

impl ScopeClosed {
    /// A refusal on `scope` because `closed` (or `scope` itself, when `None`) is closed; public
    /// for test doubles, as [`LimitExceeded::new`] is.
    ///
    /// ```
    /// use rcmgr::{ScopeClosed, ScopeName};
    /// let closed = ScopeClosed::new(ScopeName::Stream(4), None);
    /// assert_eq!(closed.to_string(), "stream-4: resource scope closed");
    /// ```
    pub fn new(scope: ScopeName, closed: Option<ScopeName>) -> Self {
        ScopeClosed { scope, closed }
    }

    /// The scope the caller used.
    pub fn scope(&self) -> &ScopeName {
        &self.scope
    }

    /// The closed scope: the one used, or the owner of a span that outlived it.
    pub fn closed(&self) -> &ScopeName {
        self.closed.as_ref().unwrap_or(&self.scope)
    }
}

impl fmt::Display for ScopeClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_chain(f, &self.scope, self.closed.as_ref())?;
        f.write_str("resource scope closed")
    }
}

impl std::error::Error for ScopeClosed {}

/// A limits configuration that could not be read or understood. Nothing was built or applied.
///
/// It says where: the file (when it came from one), the field path within the JSON document
/// (for example `System.Memory`, or `Protocol["/ipfs/id/1.0.0"].StreamsInbound`; map keys that
/// are not plain words are quoted in brackets), and the line and column (both from 1) where the
/// problem was found: the end of the offending value or the character just after it.
/// `Display` puts it together:
/// `limits configuration at System.FD (line 1, column 24): unknown limit "many", expected …`.
///
/// ```
/// use rcmgr::{ConfigErrorKind, PartialLimitConfig};
/// let err = PartialLimitConfig::from_json_str("{\n  \"System\": {\"Conns\": 1.5}\n}").unwrap_err();
/// let config = err.config().unwrap();
/// assert_eq!(config.kind(), ConfigErrorKind::InvalidValue);
/// assert_eq!((config.path(), config.line(), config.column()), ("System.Conns", 2, 25));
/// assert!(err.to_string().starts_with("limits configuration at System.Conns (line 2, column 25): "));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    file: Option<PathBuf>,
    path: String,
    line: usize,
    column: usize,
    kind: ConfigErrorKind,
    message: String,
}

/// What kind of problem a [`ConfigError`] is.
///
/// ```
/// use rcmgr::{ConfigErrorKind, PartialLimitConfig};
/// let kind = |json| PartialLimitConfig::from_json_str(json).unwrap_err().config().unwrap().kind();
/// assert_eq!(kind("{\"System\": {\"FD\": -3}}"), ConfigErrorKind::InvalidValue);
/// assert_eq!(kind("{\"System\": {"), ConfigErrorKind::UnexpectedEof);
/// assert_eq!(kind("{} {}"), ConfigErrorKind::TrailingCharacters);
/// assert_eq!(kind("{System: {}}"), ConfigErrorKind::Syntax);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConfigErrorKind {
    /// The file or reader could not be read.
    Io(std::io::ErrorKind),
    /// The text is not JSON.
    Syntax,
    /// The JSON is valid but a value is not what that field takes: a wrong type, a number out
    /// of range, a negative count, a bad peer ID.
    InvalidValue,
    /// The text ends before the JSON value does.
    UnexpectedEof,
    /// Something other than whitespace follows the JSON value.
    TrailingCharacters,
}

impl ConfigError {
    pub(crate) fn new(kind: ConfigErrorKind, message: String) -> Self {
        ConfigError {
            file: None,
            path: String::new(),
            line: 0,
            column: 0,
            kind,
            message,
        }
    }

    /// Sets where in the document the problem is.
    pub(crate) fn at(mut self, path: String, line: usize, column: usize) -> Self {
        self.path = path;
        self.line = line;
        self.column = column;
        self
    }

    /// Sets the file the document came from.
    pub(crate) fn in_file(mut self, file: PathBuf) -> Self {
        self.file = Some(file);
        self
    }

    /// The file the configuration was read from, if it came from one.
    pub fn file(&self) -> Option<&std::path::Path> {
        self.file.as_deref()
    }

    /// The path of the offending field, for example `System.Memory`; empty when the problem is
    /// the document as a whole.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The line where the problem was found, from 1; 0 when there is no position (I/O errors).
    pub fn line(&self) -> usize {
        self.line
    }

    /// The column where the problem was found, from 1; 0 when there is no position.
    pub fn column(&self) -> usize {
        self.column
    }

    /// What kind of problem it is.
    pub fn kind(&self) -> ConfigErrorKind {
        self.kind
    }

    /// What is wrong, without the location.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(file) => write!(f, "limits file {}", file.display())?,
            None => f.write_str("limits configuration")?,
        }
        if !self.path.is_empty() {
            write!(f, " at {}", self.path)?;
        }
        if self.line > 0 {
            write!(f, " (line {}, column {})", self.line, self.column)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

impl From<ConfigError> for Error {
    fn from(error: ConfigError) -> Self {
        Error::Config(Box::new(error))
    }
}

/// Writes the scope prefixes go puts before an error: every level of a span chain from
/// `scope` down to `refused_by` (or down to the chain's root when `refused_by` is a constraining
/// edge and not in the chain), then that edge, each followed by ": ".
///
/// go wraps the error once per span level, so the prefixes of a chain of depth `d` are
/// `O(d^2)` characters. Past [`CHAIN_LEVELS_SHOWN`] levels the middle is elided, so that the
/// text of a refusal deep in a span chain stays short; realistic chains print exactly as go's.
fn write_chain(
    f: &mut fmt::Formatter<'_>,
    scope: &ScopeName,
    refused_by: Option<&ScopeName>,
) -> fmt::Result {
    let (base, indices): (&ScopeName, &[u64]) = match scope {
        ScopeName::Span(span) => (span.base(), span.indices()),
        other => (other, &[]),
    };
    let depth = indices.len();
    // The level (span levels above the base) of the refusing scope, if it is in the chain.
    let refusing_level = refused_by.and_then(|refusing| match refusing {
        ScopeName::Span(span) => (span.base() == base
            && span.depth() <= depth
            && span.indices() == &indices[..span.depth()])
            .then(|| span.depth()),
        other => (other == base).then_some(0),
    });
    let lowest = match (refused_by, refusing_level) {
        (None, _) => depth,
        (Some(_), Some(level)) => level,
        (Some(_), None) => 0,
    };
    let levels = depth - lowest + 1;
    let elide = levels > CHAIN_LEVELS_SHOWN;
    let kept = CHAIN_LEVELS_SHOWN / 2;
    for (shown, level) in (lowest..=depth).rev().enumerate() {
        if elide && shown >= kept && shown < levels - kept {
            if shown == kept {
                write!(f, "… {} levels …: ", levels - 2 * kept)?;
            }
            continue;
        }
        write!(
            f,
            "{}: ",
            SpanLevel {
                base,
                indices: &indices[..level]
            }
        )?;
    }
    match (refused_by, refusing_level) {
        (Some(edge), None) => write!(f, "{edge}: "),
        _ => Ok(()),
    }
}

/// How many levels of a span chain an error prints in full (see [`write_chain`]).
const CHAIN_LEVELS_SHOWN: usize = 32;

#[cfg(test)]
mod tests {
    use super::*;

    fn span(owner: ScopeName, index: u64) -> ScopeName {
        ScopeName::span(owner, index)
    }

    fn memory_refusal(scope: ScopeName, edge: Option<ScopeName>) -> String {
        let resource = Resource::Memory {
            priority: Priority::HIGH,
        };
        LimitExceeded::new(scope, edge, resource, (1, 2, 3)).to_string()
    }

    #[test]
    fn chains_print_every_span_level_like_go() {
        let inner = span(span(ScopeName::Conn(3), 1), 2);
        assert_eq!(
            memory_refusal(inner.clone(), Some(ScopeName::Transient)),
            "conn-3.span-1.span-2: conn-3.span-1: conn-3: transient: resource limit exceeded"
        );
        assert_eq!(
            memory_refusal(inner.clone(), Some(span(ScopeName::Conn(3), 1))),
            "conn-3.span-1.span-2: conn-3.span-1: resource limit exceeded"
        );
        assert_eq!(
            memory_refusal(inner, None),
            "conn-3.span-1.span-2: resource limit exceeded"
        );
    }

    #[test]
    fn transfers_are_worded_by_the_refusing_scope_alone() {
        let peer = libp2p_identity::PeerId::random();
        let refusal = LimitExceeded::new(
            ScopeName::Conn(1),
            Some(ScopeName::Peer(peer)),
            Resource::ConnsInbound,
            (8, 1, 8),
        )
        .in_transfer();
        assert_eq!(
            refusal.to_string(),
            format!("peer:{peer}: cannot reserve inbound connection: resource limit exceeded")
        );
        assert_eq!(refusal.scope(), &ScopeName::Conn(1));
    }

    #[test]
    fn closed_owner_is_named_after_the_span() {
        let closed = ScopeClosed::new(span(ScopeName::Stream(4), 1), Some(ScopeName::Stream(4)));
        assert_eq!(
            closed.to_string(),
            "stream-4.span-1: stream-4: resource scope closed"
        );
        let direct = ScopeClosed::new(ScopeName::Conn(2), None);
        assert_eq!(direct.to_string(), "conn-2: resource scope closed");
    }
}
