//! The report at the end of a simulation, and its verdict.

use std::{fmt, time::Duration};

use rcmgr::{PeerId, UsageReport};

use super::{
    attack::{ATTACKER_IPV4, ATTACKER_IPV6_56},
    tally::{Op, Role, Tally},
};
use crate::{
    cli::Attack,
    table::Table,
    units::{Count, Rate},
};

/// The share of their operations honest peers must keep getting for the verdict to say they
/// were served.
pub const HONEST_SERVICE_THRESHOLD: f64 = 0.99;

/// Everything a simulation found.
#[derive(Debug)]
pub struct Outcome {
    /// How many honest peers took part.
    pub peers: usize,
    /// How many threads ran them.
    pub threads: usize,
    /// The attack.
    pub attack: Attack,
    /// The attacker's peer ID, when there was one.
    pub attacker: Option<PeerId>,
    /// How long the peers ran.
    pub elapsed: Duration,
    /// Where the limits came from.
    pub limits: String,
    /// The merged counts of every thread.
    pub tally: Tally,
    /// Peak usage against limits.
    pub peaks: UsageReport,
    /// How many samples the peaks come from.
    pub samples: u64,
    /// How often the samples were taken.
    pub sample_every: Duration,
    /// Whether the system and transient scopes were back to zero once every handle was
    /// dropped.
    pub released: bool,
    /// With a trace: the events it dropped because it could not keep up.
    pub trace_dropped: Option<u64>,
}

/// Whether the honest peers kept being served and the attacker was held by limits of its
/// own.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// There was no attacker.
    NoAttack,
    /// The honest peers were served and the attacker was refused mostly by its own limits.
    Contained,
    /// The honest peers were not served, or the attacker was never refused, or shared limits
    /// refused it more than its own.
    NotContained,
}

impl Outcome {
    /// The share of honest operations that succeeded, or `None` if there were none.
    pub fn honest_success_rate(&self) -> Option<f64> {
        let attempts = self.tally.total_attempts(Role::Honest);
        (attempts > 0).then(|| self.tally.total_successes(Role::Honest) as f64 / attempts as f64)
    }

    /// Whether the honest peers kept getting at least [`HONEST_SERVICE_THRESHOLD`] of their
    /// operations, or `None` if they made none (no honest peers, or no time).
    pub fn honest_served(&self) -> Option<bool> {
        self.honest_success_rate()
            .map(|rate| rate >= HONEST_SERVICE_THRESHOLD)
    }

    /// The verdict on the attack.
    pub fn verdict(&self) -> Verdict {
        if self.attack == Attack::None {
            return Verdict::NoAttack;
        }
        let (shared, own) = self.tally.refusals_by_reach(Role::Attacker);
        if self.honest_served() != Some(false) && own > 0 && own > shared {
            Verdict::Contained
        } else {
            Verdict::NotContained
        }
    }

    fn ops_per_second(&self, count: u64) -> Rate {
        Rate(count as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON))
    }

    fn write_header(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let attacker = match self.attack {
            Attack::None => "no attacker".to_owned(),
            attack => format!("attack {} on a thread of its own", attack.name()),
        };
        writeln!(
            f,
            "rcmgr simulate: {} honest peers on {} thread{}, {attacker}, {:.1} s",
            self.peers,
            self.threads,
            if self.threads == 1 { "" } else { "s" },
            self.elapsed.as_secs_f64()
        )?;
        writeln!(f, "limits: {}", self.limits)?;
        match (self.attack, self.attacker) {
            (Attack::ConnFlood, _) => writeln!(
                f,
                "attacker: one host at {ATTACKER_IPV4} and all over {ATTACKER_IPV6_56}, a fresh peer ID per connection"
            ),
            (Attack::None, _) | (_, None) => Ok(()),
            (_, Some(id)) => writeln!(f, "attacker: peer {id} at {ATTACKER_IPV4}"),
        }
    }

    fn write_throughput(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tally = &self.tally;
        let honest = tally.total_attempts(Role::Honest);
        let attacker = tally.total_attempts(Role::Attacker);
        let mut table = Table::new(["operations", "count", "per second"]);
        let mut line = |who: &str, count: u64| {
            table.row([
                who.to_owned(),
                Count(count).to_string(),
                self.ops_per_second(count).to_string(),
            ]);
        };
        line("all", honest + attacker);
        line("honest peers", honest);
        if self.attack != Attack::None {
            line("attacker", attacker);
        }
        write!(f, "\n{table}")
    }

    fn write_operations(&self, f: &mut fmt::Formatter<'_>, role: Role) -> fmt::Result {
        let tally = &self.tally;
        let title = match role {
            Role::Honest => "honest peers",
            Role::Attacker => "attacker",
        };
        let mut table = Table::new([title, "attempts", "succeeded", "refused", "success"]);
        for op in Op::ALL {
            let (attempts, successes) = (tally.attempts(role, op), tally.successes(role, op));
            if attempts == 0 {
                continue;
            }
            table.row([
                op.name().to_owned(),
                Count(attempts).to_string(),
                Count(successes).to_string(),
                Count(attempts - successes).to_string(),
                percent(successes, attempts),
            ]);
        }
        if table.is_empty() {
            return Ok(());
        }
        write!(f, "\n{table}")?;
        if role == Role::Honest {
            let latencies = tally.latencies();
            if let (Some(p50), Some(p99), Some(max)) = (
                quantile(&latencies, 0.5),
                quantile(&latencies, 0.99),
                latencies.last(),
            ) {
                writeln!(
                    f,
                    "latency of one operation ({} sampled): p50 {}, p99 {}, max {}",
                    Count(latencies.len() as u64),
                    nanos(p50),
                    nanos(p99),
                    nanos(*max)
                )?;
            }
        }
        Ok(())
    }

    fn write_refusals(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut table = Table::new(["refused", "by", "resource", "count"]);
        for ((who, by, what), count) in self.tally.refusals() {
            let reach = if by.is_shared() { "" } else { " (own)" };
            table.row([
                who.to_string(),
                format!("{by}{reach}"),
                what.to_string(),
                Count(*count).to_string(),
            ]);
        }
        writeln!(f, "\nrefusals by scope and resource")?;
        if table.is_empty() {
            writeln!(f, "none")?;
        } else {
            write!(f, "{table}")?;
            writeln!(
                f,
                "(own: a limit only the refused peer reaches: its peer, per-peer, connection \
                 and stream scopes, and its addresses' limits)"
            )?;
        }
        for (text, count) in self.tally.errors() {
            writeln!(f, "unexpected error ({} times): {text}", Count(*count))?;
        }
        Ok(())
    }

    fn write_verdict(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tally = &self.tally;
        let attempts = tally.total_attempts(Role::Honest);
        let refused = attempts - tally.total_successes(Role::Honest);
        writeln!(f, "\nverdict")?;
        match (self.honest_served(), self.honest_success_rate()) {
            (Some(served), Some(rate)) => writeln!(
                f,
                "honest peers served: {}: {:.3}% of their {} operations succeeded, {} refused \
                 (needs {:.0}%)",
                yes_no(served),
                rate * 100.0,
                Count(attempts),
                Count(refused),
                HONEST_SERVICE_THRESHOLD * 100.0
            )?,
            _ => writeln!(f, "honest peers served: no honest operations in this run")?,
        }
        let (shared, own) = tally.refusals_by_reach(Role::Attacker);
        let why = match self.verdict() {
            Verdict::NoAttack => return writeln!(f, "attacker contained: no attacker in this run"),
            Verdict::Contained => "yes",
            Verdict::NotContained => "no",
        };
        let total = shared + own;
        write!(f, "attacker contained: {why}: ")?;
        if total == 0 {
            return writeln!(f, "no limit ever refused it");
        }
        writeln!(
            f,
            "{} of its {} refusals came from limits of its own, {} from limits every peer shares",
            percent(own, total),
            Count(total),
            Count(shared)
        )?;
        if self.honest_served() == Some(false) {
            let mut honest: Vec<_> = tally
                .refusals()
                .iter()
                .filter(|((who, _, _), _)| *who == Role::Honest)
                .collect();
            honest.sort_by(|a, b| b.1.cmp(a.1));
            let refused_by: Vec<String> = honest
                .iter()
                .take(3)
                .map(|((_, by, what), count)| format!("{by} {what} ({})", Count(**count)))
                .collect();
            writeln!(
                f,
                "but the honest peers lost more than {:.0}% of their operations, refused by: {}",
                (1.0 - HONEST_SERVICE_THRESHOLD) * 100.0,
                refused_by.join(", ")
            )?;
        }
        Ok(())
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_header(f)?;
        self.write_throughput(f)?;
        self.write_operations(f, Role::Honest)?;
        if self.attack != Attack::None {
            self.write_operations(f, Role::Attacker)?;
        }
        self.write_refusals(f)?;
        writeln!(
            f,
            "\npeak usage against limits (the highest of {} samples, one every {} ms)",
            self.samples,
            self.sample_every.as_millis()
        )?;
        write!(f, "{}", self.peaks)?;
        writeln!(
            f,
            "\nafter the run: every handle dropped, system and transient back to zero: {}",
            yes_no(self.released)
        )?;
        self.write_verdict(f)
    }
}

fn yes_no(yes: bool) -> &'static str {
    if yes { "yes" } else { "no" }
}

/// `part` of `whole` as a percentage with two decimals.
fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "-".to_owned();
    }
    format!("{:.2}%", part as f64 * 100.0 / whole as f64)
}

/// The value at quantile `q` of sorted `values`.
fn quantile(values: &[u64], q: f64) -> Option<u64> {
    let last = values.len().checked_sub(1)?;
    let index = ((last as f64) * q).round() as usize;
    values.get(index.min(last)).copied()
}

/// Nanoseconds in the unit that reads best.
fn nanos(ns: u64) -> String {
    match ns {
        n if n >= 1_000_000 => format!("{:.1} ms", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1} µs", n as f64 / 1e3),
        n => format!("{n} ns"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_of_sorted_values() {
        let values: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&values, 0.5), Some(51));
        assert_eq!(quantile(&values, 0.99), Some(99));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn durations_and_shares_read_plainly() {
        assert_eq!(nanos(250), "250 ns");
        assert_eq!(nanos(1_500), "1.5 µs");
        assert_eq!(nanos(2_000_000), "2.0 ms");
        assert_eq!(percent(1, 3), "33.33%");
        assert_eq!(percent(0, 0), "-");
    }
}
