//! [`RateLimit`]: a token bucket's rate and burst, shared by the rate-limit configuration
//! ([`ConnRateLimits`](crate::ConnRateLimits)) and the refusals it causes
//! ([`RateLimited`](crate::RateLimited)).

/// A token bucket: `burst` connections at once, refilled at `rps` connections per second
/// (go's `rate.Limit`).
///
/// [`RateLimit::UNLIMITED`] (an infinite rate) never refuses; it is what go writes as
/// `Limit{}` (RPS 0) in network-prefix and global limits. Any other rate must be positive and
/// finite.
///
/// ```
/// use rcmgr::RateLimit;
/// let per_address = RateLimit { rps: 0.2, burst: 16 };
/// assert!(!per_address.is_unlimited());
/// assert!(RateLimit::UNLIMITED.is_unlimited());
/// ```
#[derive(Clone, Copy, Debug)]
pub struct RateLimit {
    /// Tokens added per second.
    pub rps: f64,
    /// The most tokens the bucket holds: how many connections may come at once.
    pub burst: u32,
}

impl RateLimit {
    /// No limit: every connection is let through.
    pub const UNLIMITED: RateLimit = RateLimit {
        rps: f64::INFINITY,
        burst: 0,
    };

    /// Whether this limit never refuses.
    ///
    /// ```
    /// assert!(!rcmgr::RateLimit { rps: 1.0, burst: 1 }.is_unlimited());
    /// ```
    pub fn is_unlimited(&self) -> bool {
        self.rps == f64::INFINITY
    }

    /// Whether the rate can be enforced: unlimited, or positive and finite.
    pub(crate) fn is_valid(&self) -> bool {
        self.is_unlimited() || (self.rps.is_finite() && self.rps > 0.0)
    }
}

// Compared bit for bit, so that equality is reflexive (an `Eq` that a NaN would break).
impl PartialEq for RateLimit {
    fn eq(&self, other: &Self) -> bool {
        self.rps.to_bits() == other.rps.to_bits() && self.burst == other.burst
    }
}

impl Eq for RateLimit {}
