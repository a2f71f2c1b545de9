//! rcmgr's reason inside the errors rust-libp2p reports for a refusal.

use std::io;

use libp2p_swarm::{ConnectionDenied, DialError, ListenError};

/// An error that may hold a refusal by rcmgr: [`refusal_of`] finds it.
///
/// Implemented for what the swarm reports when the [`Behaviour`](crate::Behaviour) refuses a
/// connection ([`ListenError`] in `SwarmEvent::IncomingConnectionError`, [`DialError`] from
/// `Swarm::dial` or in `SwarmEvent::OutgoingConnectionError`, and the [`ConnectionDenied`]
/// inside them), for the I/O errors of streams (an inbound stream refused at its protocol
/// fails the local listener with one), and for [`rcmgr::Error`] itself.
pub trait Refusal {
    /// rcmgr's error, if this error is a refusal by rcmgr.
    fn refusal(&self) -> Option<&rcmgr::Error>;
}

impl Refusal for rcmgr::Error {
    fn refusal(&self) -> Option<&rcmgr::Error> {
        Some(self)
    }
}

impl Refusal for ConnectionDenied {
    fn refusal(&self) -> Option<&rcmgr::Error> {
        self.downcast_ref::<rcmgr::Error>()
    }
}

impl Refusal for ListenError {
    fn refusal(&self) -> Option<&rcmgr::Error> {
        match self {
            ListenError::Denied { cause } => cause.refusal(),
            _ => None,
        }
    }
}

impl Refusal for DialError {
    fn refusal(&self) -> Option<&rcmgr::Error> {
        match self {
            DialError::Denied { cause } => cause.refusal(),
            _ => None,
        }
    }
}

impl Refusal for io::Error {
    fn refusal(&self) -> Option<&rcmgr::Error> {
        self.get_ref()?.downcast_ref::<rcmgr::Error>()
    }
}

/// rcmgr's reason for a refusal, from the error rust-libp2p reported it with; `None` when
/// the error is not a refusal by rcmgr.
///
/// ```no_run
/// use libp2p_swarm::SwarmEvent;
/// # fn on_event<B>(event: SwarmEvent<B>) {
/// match event {
///     SwarmEvent::IncomingConnectionError { error, send_back_addr, .. } => {
///         match rcmgr_libp2p::refusal_of(&error) {
///             Some(refusal) => println!("rcmgr refused {send_back_addr}: {refusal}"),
///             None => println!("{send_back_addr} failed: {error}"),
///         }
///     }
///     SwarmEvent::OutgoingConnectionError { error, .. } => {
///         if let Some(limit) = rcmgr_libp2p::refusal_of(&error).and_then(|r| r.limit_exceeded()) {
///             println!("dial refused by {} ({})", limit.refused_by(), limit.resource());
///         }
///     }
///     _ => {}
/// }
/// # }
/// ```
///
/// ```
/// let error = std::io::Error::other("connection reset");
/// assert!(rcmgr_libp2p::refusal_of(&error).is_none());
/// ```
pub fn refusal_of<E: Refusal + ?Sized>(error: &E) -> Option<&rcmgr::Error> {
    error.refusal()
}
