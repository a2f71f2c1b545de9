//! [`UsageReport`]: what every top-level scope holds against its limits, and the busiest
//! peers, protocols and services, for people to read (go-libp2p#3193, #3197: go has no way to
//! print limits and usage).

use std::fmt;

use crate::{
    limits::BaseLimit,
    types::{ScopeName, ScopeStat},
};

/// One scope's usage beside its limit.
///
/// ```
/// use rcmgr::{BaseLimit, ScopeName, ScopeStat, ScopeUsage};
/// let usage = ScopeUsage {
///     name: ScopeName::System,
///     stat: ScopeStat { streams_inbound: 50, ..Default::default() },
///     limit: BaseLimit { streams_inbound: 100, ..BaseLimit::unlimited() },
/// };
/// assert_eq!(usage.load(), 0.5);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopeUsage {
    /// The scope.
    pub name: ScopeName,
    /// What it holds.
    pub stat: ScopeStat,
    /// The limit in force for it.
    pub limit: BaseLimit,
}

impl ScopeUsage {
    /// The largest share of any of the scope's limits in use: 0.0 is idle, 1.0 is full, and
    /// more than 1.0 means usage above a limit that was lowered. Unlimited resources count as
    /// unused; a zero limit counts as full only when something is held against it.
    pub fn load(&self) -> f64 {
        self.counts()
            .into_iter()
            .chain([(self.stat.memory, self.limit.memory)])
            .map(|(used, limit)| match (used, limit) {
                (0, _) => 0.0,
                (_, limit) if limit >= BaseLimit::UNLIMITED => 0.0,
                (_, 0) => 1.0,
                (used, limit) => used as f64 / limit as f64,
            })
            .fold(0.0, f64::max)
    }

    /// Each count (streams in, out and total, connections in, out and total, file
    /// descriptors) as (used, limit), in the table's column order.
    fn counts(&self) -> [(u64, u64); 7] {
        let (s, l) = (&self.stat, &self.limit);
        [
            (u64::from(s.streams_inbound), l.streams_inbound),
            (u64::from(s.streams_outbound), l.streams_outbound),
            (s.streams(), l.streams),
            (u64::from(s.conns_inbound), l.conns_inbound),
            (u64::from(s.conns_outbound), l.conns_outbound),
            (s.conns(), l.conns),
            (u64::from(s.fd), l.fd),
        ]
    }
}

/// A report of usage against limits: the fixed scopes, and the busiest peers, protocols and
/// services. `Display` prints it as a table; the fields are there for programs.
///
/// ```
/// use rcmgr::{ConcreteLimitConfig, Direction, ResourceManager};
/// let mut limits = ConcreteLimitConfig::infinite();
/// limits.system.streams_inbound = 100;
/// let rm = ResourceManager::new(limits);
/// let _stream = rm.open_stream(rcmgr::PeerId::random(), Direction::Inbound)?;
/// let report = rm.report();
/// assert_eq!(report.scopes[0].stat.streams_inbound, 1);
/// assert_eq!(report.scopes[0].load(), 0.01);
/// assert_eq!(report.peer_count, 1);
/// let text = report.to_string();
/// assert!(text.contains("system") && text.contains("1/100"));
/// # Ok::<(), rcmgr::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct UsageReport {
    /// System, transient, allowlisted system and allowlisted transient, in that order.
    pub scopes: Vec<ScopeUsage>,
    /// The busiest peers, most loaded first (at most [`UsageReport::BUSIEST`]).
    pub peers: Vec<ScopeUsage>,
    /// The busiest protocols, most loaded first (at most [`UsageReport::BUSIEST`]).
    pub protocols: Vec<ScopeUsage>,
    /// The busiest services, most loaded first (at most [`UsageReport::BUSIEST`]).
    pub services: Vec<ScopeUsage>,
    /// How many peer scopes exist.
    pub peer_count: usize,
    /// How many protocol scopes exist.
    pub protocol_count: usize,
    /// How many service scopes exist.
    pub service_count: usize,
}

impl UsageReport {
    /// How many peers, protocols and services a report lists at most.
    pub const BUSIEST: usize = 10;

    /// Keeps the busiest of `all`: the highest load first, then the most streams and
    /// connections, then the most memory.
    pub(crate) fn busiest(mut all: Vec<ScopeUsage>) -> Vec<ScopeUsage> {
        let weight = |u: &ScopeUsage| (u.stat.streams() + u.stat.conns(), u.stat.memory);
        all.sort_by(|a, b| {
            b.load()
                .total_cmp(&a.load())
                .then_with(|| weight(b).cmp(&weight(a)))
        });
        all.truncate(Self::BUSIEST);
        all
    }
}

impl fmt::Display for UsageReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<28}", "scope (used/limit)")?;
        for title in COLUMNS {
            write!(f, " {title:>14}")?;
        }
        writeln!(f, " {:>6}", "load")?;
        for usage in &self.scopes {
            write_row(f, usage)?;
        }
        let groups = [
            ("peers", &self.peers, self.peer_count),
            ("protocols", &self.protocols, self.protocol_count),
            ("services", &self.services, self.service_count),
        ];
        for (title, busiest, count) in groups {
            if count == 0 {
                continue;
            }
            writeln!(f, "busiest {title} ({} of {count}):", busiest.len())?;
            for usage in busiest {
                write_row(f, usage)?;
            }
        }
        Ok(())
    }
}

/// The table's resource columns, in go's field order.
const COLUMNS: [&str; 8] = [
    "streams in",
    "streams out",
    "streams",
    "conns in",
    "conns out",
    "conns",
    "fd",
    "memory",
];

/// One table row: each resource as `used/limit`, the limit `∞` when unlimited.
fn write_row(f: &mut fmt::Formatter<'_>, usage: &ScopeUsage) -> fmt::Result {
    let (s, l) = (&usage.stat, &usage.limit);
    write!(f, "{:<28}", shorten(&usage.name.to_string(), 28))?;
    for (used, limit) in usage.counts() {
        write!(f, " {:>14}", format!("{used}/{}", count(limit)))?;
    }
    let memory = format!("{}/{}", bytes(s.memory), bytes_limit(l.memory));
    writeln!(
        f,
        " {memory:>14} {:>6}",
        format!("{:.0}%", usage.load() * 100.0)
    )
}

fn count(limit: u64) -> String {
    if limit >= BaseLimit::UNLIMITED {
        "∞".to_string()
    } else {
        limit.to_string()
    }
}

fn bytes_limit(limit: u64) -> String {
    if limit >= BaseLimit::UNLIMITED {
        "∞".to_string()
    } else {
        bytes(limit)
    }
}

/// Bytes in the largest binary unit that keeps the number at or above 1, one decimal.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n}B")
    } else {
        format!("{value:.1}{}", UNITS[unit])
    }
}

/// `name` cut to `width` characters with an ellipsis in the middle (peer IDs stay
/// recognisable by both ends).
fn shorten(name: &str, width: usize) -> String {
    let chars: Vec<char> = name.chars().collect();
    if chars.len() <= width {
        return name.to_string();
    }
    let keep = width.saturating_sub(1);
    let head: String = chars[..keep / 2 + keep % 2].iter().collect();
    let tail: String = chars[chars.len() - keep / 2..].iter().collect();
    format!("{head}…{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_use_binary_units() {
        assert_eq!(bytes(0), "0B");
        assert_eq!(bytes(1023), "1023B");
        assert_eq!(bytes(1536), "1.5KiB");
        assert_eq!(bytes(8 << 30), "8.0GiB");
    }

    #[test]
    fn long_names_keep_both_ends() {
        let short = shorten("peer:12D3KooWAbCdEfGhIjKlMnOpQrStUvWxYz", 20);
        assert_eq!(short.chars().count(), 20);
        assert!(short.starts_with("peer:12D3") && short.ends_with("UvWxYz"));
    }

    #[test]
    fn load_ignores_unlimited_and_counts_lowered_limits() {
        let usage = |stat, limit| ScopeUsage {
            name: ScopeName::Transient,
            stat,
            limit,
        };
        let idle = usage(ScopeStat::default(), BaseLimit::block_all());
        assert_eq!(idle.load(), 0.0);
        let held = ScopeStat {
            fd: 3,
            ..ScopeStat::default()
        };
        assert_eq!(usage(held, BaseLimit::unlimited()).load(), 0.0);
        let lowered = BaseLimit {
            fd: 2,
            ..BaseLimit::unlimited()
        };
        assert_eq!(usage(held, lowered).load(), 1.5);
    }
}
