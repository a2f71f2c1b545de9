//! The constraining edges of a scope: which parents a reservation on it must also pass.
//!
//! Every parent a scope can have is one of nine kinds, and go walks them in one fixed order
//! whatever the scope (`[peer, transient, system]` for a new stream,
//! `[peer, protocol-peer, service-peer, protocol, service, system]` for a stream with a
//! service, `[peer, allowlistedSystem]` for an allowlisted connection with a peer, ...). So a
//! scope's edges are a 9-bit set over [`Edge`], iterated in declaration order, and the set lives
//! in the scope's memory word (see [`counters`](crate::counters)).

/// One kind of parent, in go's walk order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Edge {
    Peer,
    ProtocolPeer,
    ServicePeer,
    Protocol,
    Service,
    Transient,
    System,
    AllowlistedTransient,
    AllowlistedSystem,
}

impl Edge {
    const ALL: [Edge; 9] = [
        Edge::Peer,
        Edge::ProtocolPeer,
        Edge::ServicePeer,
        Edge::Protocol,
        Edge::Service,
        Edge::Transient,
        Edge::System,
        Edge::AllowlistedTransient,
        Edge::AllowlistedSystem,
    ];

    const fn bit(self) -> u16 {
        1 << self as u8
    }
}

/// A set of [`Edge`]s.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct EdgeSet(u16);

impl EdgeSet {
    /// How many bits the set needs.
    pub(crate) const BITS: u32 = 9;
    pub(crate) const NONE: EdgeSet = EdgeSet(0);

    pub(crate) const fn from_bits(bits: u16) -> Self {
        EdgeSet(bits & ((1 << Self::BITS) - 1))
    }

    pub(crate) const fn bits(self) -> u16 {
        self.0
    }

    pub(crate) const fn of(edges: &[Edge]) -> Self {
        let mut bits = 0;
        let mut i = 0;
        while i < edges.len() {
            bits |= edges[i].bit();
            i += 1;
        }
        EdgeSet(bits)
    }

    pub(crate) const fn with(self, edge: Edge) -> Self {
        EdgeSet(self.0 | edge.bit())
    }

    pub(crate) const fn without(self, edge: Edge) -> Self {
        EdgeSet(self.0 & !edge.bit())
    }

    pub(crate) const fn contains(self, edge: Edge) -> bool {
        self.0 & edge.bit() != 0
    }

    /// The edges in go's walk order.
    #[inline]
    pub(crate) fn iter(self) -> EdgeIter {
        EdgeIter(self.0)
    }

    /// The first `n` edges in walk order.
    pub(crate) fn first(self, n: usize) -> EdgeSet {
        self.iter().take(n).fold(EdgeSet::NONE, EdgeSet::with)
    }
}

/// The edges of a set in walk order (lowest bit first), from either end.
#[derive(Clone, Copy, Debug)]
pub(crate) struct EdgeIter(u16);

impl Iterator for EdgeIter {
    type Item = Edge;

    #[inline]
    fn next(&mut self) -> Option<Edge> {
        if self.0 == 0 {
            return None;
        }
        let index = self.0.trailing_zeros() as usize;
        self.0 &= self.0 - 1;
        Edge::ALL.get(index).copied()
    }
}

impl DoubleEndedIterator for EdgeIter {
    #[inline]
    fn next_back(&mut self) -> Option<Edge> {
        if self.0 == 0 {
            return None;
        }
        let index = (u16::BITS - 1 - self.0.leading_zeros()) as usize;
        self.0 &= !(1 << index);
        Edge::ALL.get(index).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iteration_follows_go_walk_order_whatever_the_insertion_order() {
        let stream = EdgeSet::NONE
            .with(Edge::System)
            .with(Edge::Service)
            .with(Edge::Peer)
            .with(Edge::Protocol)
            .with(Edge::ServicePeer)
            .with(Edge::ProtocolPeer);
        assert_eq!(
            stream.iter().collect::<Vec<_>>(),
            [
                Edge::Peer,
                Edge::ProtocolPeer,
                Edge::ServicePeer,
                Edge::Protocol,
                Edge::Service,
                Edge::System
            ]
        );
        let conn = EdgeSet::of(&[Edge::AllowlistedSystem, Edge::Peer]);
        assert_eq!(
            conn.iter().rev().collect::<Vec<_>>(),
            [Edge::AllowlistedSystem, Edge::Peer]
        );
        assert_eq!(conn.first(1), EdgeSet::of(&[Edge::Peer]));
        assert_eq!(
            conn.without(Edge::Peer),
            EdgeSet::of(&[Edge::AllowlistedSystem])
        );
    }
}
