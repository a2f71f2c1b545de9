//! [`ScopeName`]: which scope, in go's naming scheme.
//!
//! A span's name is flat ([`SpanName`]: the scope at the root of its owner chain and the span
//! numbers from there), so that building, printing, comparing, cloning, parsing and dropping
//! the name of a span nested to any depth is a loop, never a recursion.

#[cfg(not(rcmgr_loom))]
use std::cell::RefCell;
use std::{fmt, str::FromStr, sync::Arc};

use libp2p_identity::PeerId;

/// The name of a scope. `Display` prints go's names (`system`, `peer:<id>`,
/// `protocol:<p>.peer:<id>`, `conn-7`, `stream-9`, `<owner>.span-<k>`, ...), so logs and
/// dashboards read the same as go-libp2p's. Names are built on demand and cost nothing while
/// the scope works.
///
/// ```
/// use rcmgr::ScopeName;
/// let name = ScopeName::span(ScopeName::span(ScopeName::Conn(7), 1), 2);
/// assert_eq!(name.to_string(), "conn-7.span-1.span-2");
/// assert!(name.is_span());
/// assert_eq!(name.owner(), Some(ScopeName::span(ScopeName::Conn(7), 1)));
/// assert_eq!(ScopeName::Protocol("/ipfs/ping/1.0.0".into()).to_string(), "protocol:/ipfs/ping/1.0.0");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ScopeName {
    /// `system`.
    System,
    /// `transient`.
    Transient,
    /// `allowlistedSystem`.
    AllowlistedSystem,
    /// `allowlistedTransient`.
    AllowlistedTransient,
    /// `service:<name>`.
    Service(Arc<str>),
    /// `service:<name>.peer:<id>`.
    ServicePeer {
        /// The service.
        service: Arc<str>,
        /// The peer.
        peer: PeerId,
    },
    /// `protocol:<id>`.
    Protocol(Arc<str>),
    /// `protocol:<id>.peer:<id>`.
    ProtocolPeer {
        /// The protocol.
        protocol: Arc<str>,
        /// The peer.
        peer: PeerId,
    },
    /// `peer:<id>`.
    Peer(PeerId),
    /// `conn-<n>`.
    Conn(u64),
    /// `stream-<n>`.
    Stream(u64),
    /// `<owner>.span-<index>`: a span, with the whole chain of owners down to the scope it
    /// grew from.
    Span(SpanName),
}

/// The name of a span: the scope at the root of its owner chain (never itself a span) and the
/// number of each span on the way, from that scope outwards. `conn-7.span-1.span-2` is the
/// span numbered 2 among the spans of `conn-7.span-1`.
///
/// ```
/// use rcmgr::{ScopeName, SpanName};
/// let inner = SpanName::new(ScopeName::span(ScopeName::Stream(4), 1), 3);
/// assert_eq!(inner.base(), &ScopeName::Stream(4));
/// assert_eq!(inner.indices(), [1, 3]);
/// assert_eq!((inner.index(), inner.depth()), (3, 2));
/// assert_eq!(inner.owner().to_string(), "stream-4.span-1");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SpanName {
    /// Never a span: [`SpanName::new`] flattens span owners.
    base: Box<ScopeName>,
    /// At least one number.
    indices: Vec<u64>,
}

impl SpanName {
    /// The span numbered `index` among the spans of `owner`.
    pub fn new(owner: ScopeName, index: u64) -> Self {
        match owner {
            ScopeName::Span(mut span) => {
                span.indices.push(index);
                span
            }
            base => SpanName {
                base: Box::new(base),
                indices: vec![index],
            },
        }
    }

    /// The scope at the root of the owner chain: the connection, stream, peer, ... the first
    /// span was begun on.
    pub fn base(&self) -> &ScopeName {
        &self.base
    }

    /// The span numbers from [`base`](Self::base) outwards; the last is this span's.
    pub fn indices(&self) -> &[u64] {
        &self.indices
    }

    /// This span's number among its owner's spans (from 1).
    pub fn index(&self) -> u64 {
        self.indices.last().copied().unwrap_or_default()
    }

    /// How many span levels the name has (1 for a span of a non-span scope).
    pub fn depth(&self) -> usize {
        self.indices.len()
    }

    /// The scope this span was begun on.
    pub fn owner(&self) -> ScopeName {
        match self.indices.split_last() {
            Some((_, [])) | None => (*self.base).clone(),
            Some((_, outer)) => ScopeName::Span(SpanName {
                base: self.base.clone(),
                indices: outer.to_vec(),
            }),
        }
    }

    /// The name of the level `levels` span levels above the base (0: the base itself), for
    /// printing without building it.
    pub(crate) fn level(&self, levels: usize) -> SpanLevel<'_> {
        SpanLevel {
            base: &self.base,
            indices: &self.indices[..levels.min(self.indices.len())],
        }
    }
}

/// One level of a span chain, as [`SpanName::level`] prints it.
pub(crate) struct SpanLevel<'a> {
    pub(crate) base: &'a ScopeName,
    pub(crate) indices: &'a [u64],
}

impl fmt::Display for SpanLevel<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.base.fmt(f)?;
        for index in self.indices {
            write!(f, ".span-{index}")?;
        }
        Ok(())
    }
}

impl fmt::Display for SpanName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.level(self.indices.len()).fmt(f)
    }
}

impl ScopeName {
    /// The name of the span numbered `index` among the spans of `owner`.
    ///
    /// ```
    /// let name = rcmgr::ScopeName::span(rcmgr::ScopeName::System, 1);
    /// assert_eq!(name.to_string(), "system.span-1");
    /// ```
    pub fn span(owner: ScopeName, index: u64) -> ScopeName {
        ScopeName::Span(SpanName::new(owner, index))
    }

    /// Whether this is a span (go's `IsSpan`).
    ///
    /// ```
    /// assert!(!rcmgr::ScopeName::System.is_span());
    /// ```
    pub fn is_span(&self) -> bool {
        matches!(self, ScopeName::Span(_))
    }

    /// The peer this scope belongs to, for peer, service-peer and protocol-peer scopes.
    ///
    /// ```
    /// let peer = rcmgr::PeerId::random();
    /// assert_eq!(rcmgr::ScopeName::Peer(peer).peer(), Some(&peer));
    /// ```
    pub fn peer(&self) -> Option<&PeerId> {
        match self {
            ScopeName::Peer(peer)
            | ScopeName::ServicePeer { peer, .. }
            | ScopeName::ProtocolPeer { peer, .. } => Some(peer),
            _ => None,
        }
    }

    /// The protocol of a protocol or protocol-peer scope.
    ///
    /// ```
    /// let name = rcmgr::ScopeName::Protocol("/x".into());
    /// assert_eq!(name.protocol(), Some("/x"));
    /// ```
    pub fn protocol(&self) -> Option<&str> {
        match self {
            ScopeName::Protocol(protocol) | ScopeName::ProtocolPeer { protocol, .. } => {
                Some(protocol)
            }
            _ => None,
        }
    }

    /// The service of a service or service-peer scope.
    ///
    /// ```
    /// let name = rcmgr::ScopeName::Service("libp2p.ping".into());
    /// assert_eq!(name.service(), Some("libp2p.ping"));
    /// ```
    pub fn service(&self) -> Option<&str> {
        match self {
            ScopeName::Service(service) | ScopeName::ServicePeer { service, .. } => Some(service),
            _ => None,
        }
    }

    /// The owner of a span (a new name: a span's name is flat, see [`SpanName`]).
    ///
    /// ```
    /// use rcmgr::ScopeName;
    /// let span = ScopeName::span(ScopeName::System, 1);
    /// assert_eq!(span.owner(), Some(ScopeName::System));
    /// assert_eq!(ScopeName::System.owner(), None);
    /// ```
    pub fn owner(&self) -> Option<ScopeName> {
        match self {
            ScopeName::Span(span) => Some(span.owner()),
            _ => None,
        }
    }

    /// The scope at the root of a span's owner chain, or the scope itself for any other scope.
    ///
    /// ```
    /// use rcmgr::ScopeName;
    /// let span = ScopeName::span(ScopeName::span(ScopeName::Conn(2), 1), 1);
    /// assert_eq!(span.base(), &ScopeName::Conn(2));
    /// assert_eq!(ScopeName::Conn(2).base(), &ScopeName::Conn(2));
    /// ```
    pub fn base(&self) -> &ScopeName {
        match self {
            ScopeName::Span(span) => span.base(),
            other => other,
        }
    }
}

impl fmt::Display for ScopeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScopeName::System => f.write_str("system"),
            ScopeName::Transient => f.write_str("transient"),
            ScopeName::AllowlistedSystem => f.write_str("allowlistedSystem"),
            ScopeName::AllowlistedTransient => f.write_str("allowlistedTransient"),
            ScopeName::Service(service) => write!(f, "service:{service}"),
            ScopeName::ServicePeer { service, peer } => {
                write!(f, "service:{service}.peer:{}", Base58(peer))
            }
            ScopeName::Protocol(protocol) => write!(f, "protocol:{protocol}"),
            ScopeName::ProtocolPeer { protocol, peer } => {
                write!(f, "protocol:{protocol}.peer:{}", Base58(peer))
            }
            ScopeName::Peer(peer) => write!(f, "peer:{}", Base58(peer)),
            ScopeName::Conn(n) => write!(f, "conn-{n}"),
            ScopeName::Stream(n) => write!(f, "stream-{n}"),
            ScopeName::Span(span) => span.fmt(f),
        }
    }
}

/// A peer ID as `Display` prints it (base58), from a small per-thread cache of recent peers.
///
/// Base58 costs time quadratic in the length: printing a 38-byte peer ID takes thousands of
/// instructions, and a trace writes two per event (the name and the scope object), mostly for
/// the few peers that are busy. The cache is direct-mapped on the last byte of the ID's digest
/// (a public key or a hash of one: evenly spread), so a lookup is one comparison.
pub(crate) struct Base58<'a>(pub(crate) &'a PeerId);

/// Slots in each thread's cache of peer IDs' text.
#[cfg_attr(rcmgr_loom, allow(dead_code))]
const RECENT_PEERS: usize = 64;

// Like the crate's other per-thread caches, compiled out under loom: loom runs every modelled
// thread on one OS thread, so a std thread-local would be shared by all of them.
#[cfg(not(rcmgr_loom))]
thread_local! {
    /// The slots, a peer and its base58 text in each. Empty until the thread first prints a
    /// peer, then on the heap.
    static RECENT_PEER_TEXT: RefCell<Vec<PeerText>> = const { RefCell::new(Vec::new()) };
}

/// A slot of the cache: a peer and its base58 text.
#[cfg(not(rcmgr_loom))]
type PeerText = Option<(PeerId, Box<str>)>;

impl fmt::Display for Base58<'_> {
    #[cfg(rcmgr_loom)]
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.to_base58())
    }

    #[cfg(not(rcmgr_loom))]
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let peer = self.0;
        let digest = peer.as_ref().digest();
        let slot = usize::from(digest.last().copied().unwrap_or(0)) % RECENT_PEERS;
        let cached = RECENT_PEER_TEXT.try_with(|recent| {
            // Not borrowed unless a formatter re-entered this (it does not); then print
            // without the cache.
            let mut recent = recent.try_borrow_mut().ok()?;
            if recent.is_empty() {
                recent.resize_with(RECENT_PEERS, || None);
            }
            let entry = recent.get_mut(slot)?;
            if entry.as_ref().is_none_or(|(cached, _)| cached != peer) {
                *entry = Some((*peer, peer.to_base58().into_boxed_str()));
            }
            let (_, text) = entry.as_ref()?;
            Some(f.write_str(text))
        });
        match cached {
            Ok(Some(written)) => written,
            _ => f.write_str(&peer.to_base58()),
        }
    }
}

/// A string that is not a scope name in go's scheme.
///
/// ```
/// assert!("nowhere".parse::<rcmgr::ScopeName>().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidScopeName(String);

impl fmt::Display for InvalidScopeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A name can be any length (a trace line names whatever it names): quote a bounded
        // part of it.
        const SHOWN: usize = 120;
        match self.0.char_indices().nth(SHOWN) {
            Some((end, _)) => write!(
                f,
                "not a scope name: {:?}… ({} bytes)",
                &self.0[..end],
                self.0.len()
            ),
            None => write!(f, "not a scope name: {:?}", self.0),
        }
    }
}

impl std::error::Error for InvalidScopeName {}

/// Reads go's scope names back (`system`, `peer:<id>`, `protocol:<p>.peer:<id>`, `conn-7`,
/// `<owner>.span-<k>`, ...), as traces and logs write them. Span levels are read in a loop,
/// so a name nested to any depth parses in time and stack linear in its length.
///
/// A protocol or service name may itself contain `.peer:` or `.span-`: the text is read from
/// its end, so a suffix is taken as a span only if a number follows `.span-`, and as a peer
/// only if a valid peer ID follows `.peer:`.
///
/// ```
/// use rcmgr::ScopeName;
/// let peer = rcmgr::PeerId::random();
/// let name: ScopeName = format!("protocol:/ipfs/ping/1.0.0.peer:{peer}.span-2").parse()?;
/// assert_eq!(name.owner(), Some(ScopeName::ProtocolPeer { protocol: "/ipfs/ping/1.0.0".into(), peer }));
/// assert_eq!("conn-7".parse::<ScopeName>()?, ScopeName::Conn(7));
/// # Ok::<(), rcmgr::InvalidScopeName>(())
/// ```
impl FromStr for ScopeName {
    type Err = InvalidScopeName;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidScopeName(text.to_owned());
        let mut base = text;
        let mut indices = Vec::new();
        while let Some((owner, index)) = base.rsplit_once(".span-")
            && let Ok(index) = index.parse::<u64>()
        {
            indices.push(index);
            base = owner;
        }
        let base = parse_base(base).ok_or_else(invalid)?;
        if indices.is_empty() {
            return Ok(base);
        }
        indices.reverse();
        Ok(ScopeName::Span(SpanName {
            base: Box::new(base),
            indices,
        }))
    }
}

/// A name that is not a span's.
fn parse_base(text: &str) -> Option<ScopeName> {
    let with_peer = |rest: &str| -> (Arc<str>, Option<PeerId>) {
        match rest.rsplit_once(".peer:") {
            Some((group, peer)) => match peer.parse::<PeerId>() {
                Ok(peer) => (Arc::from(group), Some(peer)),
                Err(_) => (Arc::from(rest), None),
            },
            None => (Arc::from(rest), None),
        }
    };
    Some(match text {
        "system" => ScopeName::System,
        "transient" => ScopeName::Transient,
        "allowlistedSystem" => ScopeName::AllowlistedSystem,
        "allowlistedTransient" => ScopeName::AllowlistedTransient,
        _ => {
            if let Some(n) = text.strip_prefix("conn-") {
                ScopeName::Conn(n.parse().ok()?)
            } else if let Some(n) = text.strip_prefix("stream-") {
                ScopeName::Stream(n.parse().ok()?)
            } else if let Some(peer) = text.strip_prefix("peer:") {
                ScopeName::Peer(peer.parse().ok()?)
            } else if let Some(rest) = text.strip_prefix("protocol:") {
                match with_peer(rest) {
                    (protocol, Some(peer)) => ScopeName::ProtocolPeer { protocol, peer },
                    (protocol, None) => ScopeName::Protocol(protocol),
                }
            } else if let Some(rest) = text.strip_prefix("service:") {
                match with_peer(rest) {
                    (service, Some(peer)) => ScopeName::ServicePeer { service, peer },
                    (service, None) => ScopeName::Service(service),
                }
            } else {
                return None;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_peer_text_is_always_the_peers_own() {
        // More peers than slots, so slots are shared and overwritten; each is printed several
        // times in an order that alternates peers sharing a slot.
        let peers: Vec<PeerId> = (0..4 * RECENT_PEERS).map(|_| PeerId::random()).collect();
        for _round in 0..3 {
            for peer in peers.iter().chain(peers.iter().rev()) {
                assert_eq!(Base58(peer).to_string(), peer.to_base58());
                assert_eq!(
                    ScopeName::ProtocolPeer {
                        protocol: "/p".into(),
                        peer: *peer
                    }
                    .to_string(),
                    format!("protocol:/p.peer:{}", peer.to_base58())
                );
            }
        }
    }

    #[test]
    fn spans_nested_two_hundred_thousand_deep_print_parse_and_drop_in_a_loop() {
        let depth = 200_000;
        let mut text = String::from("conn-1");
        for index in 1..=depth {
            text.push_str(".span-");
            text.push_str(&index.to_string());
        }
        let name: ScopeName = text.parse().expect("a deep span name parses");
        let ScopeName::Span(span) = &name else {
            panic!("a span");
        };
        assert_eq!(span.depth(), depth as usize);
        assert_eq!(span.base(), &ScopeName::Conn(1));
        assert_eq!(name.to_string(), text);
        assert_eq!(name.clone(), name);
        drop(name);
    }

    #[test]
    fn span_suffixes_without_numbers_belong_to_the_base() {
        let name: ScopeName = "protocol:/x.span-y.span-3".parse().expect("parses");
        assert_eq!(
            name,
            ScopeName::span(ScopeName::Protocol("/x.span-y".into()), 3)
        );
        assert!("nowhere.span-1".parse::<ScopeName>().is_err());
    }
}
