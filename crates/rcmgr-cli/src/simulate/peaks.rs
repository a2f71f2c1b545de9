//! Peak usage against limits: the highest of each resource of each fixed scope, and the
//! busiest peers, protocols and services at their busiest, over the samples of a run.

use std::collections::BTreeMap;

use rcmgr::{ScopeStat, ScopeUsage, UsageReport};

/// How many of the busiest peers, protocols and services a report shows.
const BUSIEST: usize = UsageReport::BUSIEST;
/// How many named scopes of each kind are remembered between samples; the least busy are
/// forgotten past that.
const REMEMBERED: usize = 8 * BUSIEST;

/// Peaks over the samples of a run.
#[derive(Debug, Default)]
pub struct Peaks {
    scopes: Vec<ScopeUsage>,
    peers: BTreeMap<String, ScopeUsage>,
    protocols: BTreeMap<String, ScopeUsage>,
    services: BTreeMap<String, ScopeUsage>,
    peer_count: usize,
    protocol_count: usize,
    service_count: usize,
    samples: u64,
}

impl Peaks {
    /// Takes one sample into account.
    pub fn record(&mut self, sample: UsageReport) {
        self.samples += 1;
        if self.scopes.len() == sample.scopes.len() {
            for (peak, now) in self.scopes.iter_mut().zip(sample.scopes) {
                peak.stat = highest(&peak.stat, &now.stat);
                peak.limit = now.limit;
            }
        } else {
            self.scopes = sample.scopes;
        }
        for (kept, busiest) in [
            (&mut self.peers, sample.peers),
            (&mut self.protocols, sample.protocols),
            (&mut self.services, sample.services),
        ] {
            for usage in busiest {
                let name = usage.name.to_string();
                let busier = kept
                    .get(&name)
                    .is_none_or(|known| usage.load() > known.load());
                if busier {
                    kept.insert(name, usage);
                }
            }
            forget_least_busy(kept);
        }
        self.peer_count = self.peer_count.max(sample.peer_count);
        self.protocol_count = self.protocol_count.max(sample.protocol_count);
        self.service_count = self.service_count.max(sample.service_count);
    }

    /// How many samples were taken.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// The peaks as a usage report: each resource of each fixed scope at its highest, the
    /// busiest named scopes at their busiest, and the most scopes of each kind seen at once.
    pub fn report(&self) -> UsageReport {
        UsageReport {
            scopes: self.scopes.clone(),
            peers: busiest(&self.peers),
            protocols: busiest(&self.protocols),
            services: busiest(&self.services),
            peer_count: self.peer_count,
            protocol_count: self.protocol_count,
            service_count: self.service_count,
        }
    }
}

/// Each resource at the higher of the two.
fn highest(a: &ScopeStat, b: &ScopeStat) -> ScopeStat {
    ScopeStat {
        streams_inbound: a.streams_inbound.max(b.streams_inbound),
        streams_outbound: a.streams_outbound.max(b.streams_outbound),
        conns_inbound: a.conns_inbound.max(b.conns_inbound),
        conns_outbound: a.conns_outbound.max(b.conns_outbound),
        fd: a.fd.max(b.fd),
        memory: a.memory.max(b.memory),
    }
}

/// The kept scopes, busiest first.
fn by_load(kept: &BTreeMap<String, ScopeUsage>) -> Vec<ScopeUsage> {
    let mut all: Vec<ScopeUsage> = kept.values().cloned().collect();
    all.sort_by(|a, b| b.load().total_cmp(&a.load()));
    all
}

fn busiest(kept: &BTreeMap<String, ScopeUsage>) -> Vec<ScopeUsage> {
    let mut all = by_load(kept);
    all.truncate(BUSIEST);
    all
}

fn forget_least_busy(kept: &mut BTreeMap<String, ScopeUsage>) {
    if kept.len() > REMEMBERED {
        let keep: Vec<ScopeUsage> = by_load(kept).into_iter().take(REMEMBERED / 2).collect();
        kept.clear();
        kept.extend(keep.into_iter().map(|u| (u.name.to_string(), u)));
    }
}

#[cfg(test)]
mod tests {
    use rcmgr::{BaseLimit, ScopeName};

    use super::*;

    fn usage(name: ScopeName, streams_inbound: u32) -> ScopeUsage {
        ScopeUsage {
            name,
            stat: ScopeStat {
                streams_inbound,
                ..ScopeStat::default()
            },
            limit: BaseLimit {
                streams_inbound: 100,
                ..BaseLimit::unlimited()
            },
        }
    }

    fn sample(system: u32, protocol: u32) -> UsageReport {
        UsageReport {
            scopes: vec![usage(ScopeName::System, system)],
            peers: vec![],
            protocols: vec![usage(ScopeName::Protocol("/p".into()), protocol)],
            services: vec![],
            peer_count: 0,
            protocol_count: 1,
            service_count: 0,
        }
    }

    #[test]
    fn peaks_keep_the_highest_of_every_sample() {
        let mut peaks = Peaks::default();
        peaks.record(sample(10, 50));
        peaks.record(sample(30, 20));
        peaks.record(sample(20, 40));
        let report = peaks.report();
        assert_eq!(report.scopes[0].stat.streams_inbound, 30);
        assert_eq!(report.protocols[0].stat.streams_inbound, 50);
        assert_eq!(peaks.samples(), 3);
    }
}
