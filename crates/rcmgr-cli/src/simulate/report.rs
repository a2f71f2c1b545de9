//! The report at the end of a simulation, and its verdict.

use std::{fmt, time::Duration};

use rcmgr::{PeerId, UsageReport};

use super::{
    attack::{ATTACKER_IPV4, ATTACKER_IPV6_56},
    tally::{Op, Role, Tally},
};
use crate::{
    cli::Attack,
    error::Status,
    table::Table,
    units::{Count, Percent, Rate},
};

/// The share of their operations, in percent, honest peers must keep getting for the verdict
/// to say they were served.
pub const HONEST_SERVICE_PERCENT: u64 = 99;

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
    /// The honest operations that succeeded and those attempted.
    pub fn honest_successes(&self) -> (u64, u64) {
        (
            self.tally.total_successes(Role::Honest),
            self.tally.total_attempts(Role::Honest),
        )
    }

    /// Whether the honest peers kept getting at least [`HONEST_SERVICE_PERCENT`] of their
    /// operations (exactly, in integers), or `None` if they made none (no honest peers, or no
    /// time).
    pub fn honest_served(&self) -> Option<bool> {
        let (successes, attempts) = self.honest_successes();
        (attempts > 0).then(|| {
            u128::from(successes) * 100 >= u128::from(attempts) * u128::from(HONEST_SERVICE_PERCENT)
        })
    }

    /// The exit status of `rcmgr simulate`: [`Status::Ok`] when no verdict is no (a verdict
    /// that does not apply, with no attacker or no honest operation, is not a no), else
    /// [`Status::Warnings`] (exit status 1).
    pub fn status(&self) -> Status {
        let honest_failed = self.honest_served() == Some(false);
        if honest_failed || self.verdict() == Verdict::NotContained {
            Status::Warnings
        } else {
            Status::Ok
        }
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
                Percent::of(successes, attempts, 2).to_string(),
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
        let (successes, attempts) = self.honest_successes();
        writeln!(f, "\nverdict")?;
        match self.honest_served() {
            Some(served) => writeln!(
                f,
                "honest peers served: {}: {} of their {} operations succeeded, {} refused \
                 (needs {HONEST_SERVICE_PERCENT}%)",
                yes_no(served),
                Percent::of(successes, attempts, 3),
                Count(attempts),
                Count(attempts - successes),
            )?,
            None => writeln!(f, "honest peers served: no honest operations in this run")?,
        }
        let (shared, own) = self.tally.refusals_by_reach(Role::Attacker);
        let total = shared + own;
        let refusals = format!(
            "limits of its own refused it {}, limits every peer shares {} ({} from its own)",
            times(own),
            times(shared),
            Percent::of(own, total, 2)
        );
        match self.verdict() {
            Verdict::NoAttack => writeln!(f, "attacker contained: no attacker in this run"),
            Verdict::Contained => writeln!(f, "attacker contained: yes: {refusals}"),
            Verdict::NotContained if self.honest_served() == Some(false) => writeln!(
                f,
                "attacker contained: no: the honest peers were not served: they lost more than \
                 {}% of their operations, refused by: {}; {refusals}",
                100 - HONEST_SERVICE_PERCENT,
                self.honest_refusers().join(", ")
            ),
            Verdict::NotContained if total == 0 => {
                writeln!(f, "attacker contained: no: no limit ever refused it")
            }
            Verdict::NotContained => writeln!(
                f,
                "attacker contained: no: limits every peer shares refused it {}, {} limits of its \
                 own ({}: {} from its own)",
                times(shared),
                if shared == own {
                    "as often as"
                } else {
                    "more often than"
                },
                times(own),
                Percent::of(own, total, 2)
            ),
        }
    }

    /// The three scopes and resources that refused honest peers most, with their counts.
    fn honest_refusers(&self) -> Vec<String> {
        let mut honest: Vec<_> = self
            .tally
            .refusals()
            .iter()
            .filter(|((who, _, _), _)| *who == Role::Honest)
            .collect();
        honest.sort_by(|a, b| b.1.cmp(a.1));
        let refusers: Vec<String> = honest
            .iter()
            .take(3)
            .map(|((_, by, what), count)| format!("{by} {what} ({})", Count(**count)))
            .collect();
        if refusers.is_empty() {
            // Refusals the tally could not attribute: their errors are listed above.
            vec!["errors other than limits (listed above)".to_owned()]
        } else {
            refusers
        }
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

/// `n` times, in words.
fn times(n: u64) -> String {
    match n {
        1 => "once".to_owned(),
        n => format!("{} times", Count(n)),
    }
}

fn yes_no(yes: bool) -> &'static str {
    if yes { "yes" } else { "no" }
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

    /// An outcome whose honest peers made `honest` operations, `honest_refused` of them
    /// refused, and whose attacker was refused `own` times by its own peer scope and `shared`
    /// times by the system scope.
    fn outcome(honest: u64, honest_refused: u64, own: u64, shared: u64) -> Outcome {
        use rcmgr::{ConcreteLimitConfig, Direction, ResourceManager};
        let mut limits = ConcreteLimitConfig::infinite();
        limits.peer_default.streams_inbound = 0;
        limits.system.streams_outbound = 0;
        let rm = ResourceManager::new(limits);
        let peer = rcmgr::PeerId::from_bytes(&[0, 2, 1, 2]).expect("an identity peer ID");
        let own_error = rm
            .open_stream(peer, Direction::Inbound)
            .expect_err("refused");
        let shared_error = rm
            .open_stream(peer, Direction::Outbound)
            .expect_err("refused");
        let mut tally = Tally::default();
        for i in 0..honest {
            let _ = tally.call(Role::Honest, Op::SetPeer, || {
                if i < honest_refused {
                    Err(own_error.clone())
                } else {
                    Ok(())
                }
            });
        }
        for (count, error) in [(own, &own_error), (shared, &shared_error)] {
            for _ in 0..count {
                let _ = tally.call(Role::Attacker, Op::OpenStream, || {
                    Err::<(), _>(error.clone())
                });
            }
        }
        Outcome {
            peers: 1,
            threads: 1,
            attack: Attack::StreamFlood,
            attacker: None,
            elapsed: Duration::from_secs(1),
            limits: String::new(),
            tally,
            peaks: super::super::Peaks::default().report(),
            samples: 0,
            sample_every: Duration::from_millis(100),
            released: true,
            trace_dropped: None,
        }
    }

    fn verdict_lines(outcome: &Outcome) -> Vec<String> {
        outcome
            .to_string()
            .lines()
            .skip_while(|line| *line != "verdict")
            .skip(1)
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn verdicts_never_contradict_their_figures() {
        // Two shared refusals among 400,000: contained, and not "100%" from its own limits.
        let mostly_own = outcome(1_000, 0, 399_998, 2);
        assert_eq!(mostly_own.status(), Status::Ok);
        assert_eq!(
            verdict_lines(&mostly_own),
            [
                "honest peers served: yes: 100% of their 1,000 operations succeeded, 0 refused (needs 99%)",
                "attacker contained: yes: limits of its own refused it 399,998 times, limits every peer shares 2 times (99.99% from its own)",
            ]
        );
        // Honest peers below the threshold: no, with the reason, whatever the attacker's split.
        let starved = outcome(1_000, 11, 399_998, 2);
        assert_eq!(starved.status(), Status::Warnings);
        let lines = verdict_lines(&starved);
        assert_eq!(
            lines[0],
            "honest peers served: no: 98.900% of their 1,000 operations succeeded, 11 refused (needs 99%)"
        );
        assert!(
            lines[1].starts_with(
                "attacker contained: no: the honest peers were not served: they lost more than 1% of their operations"
            ),
            "{}",
            lines[1]
        );
        // Exactly at the threshold is served; one refusal short of all is not shown as 100%.
        assert_eq!(outcome(1_000, 10, 5, 0).status(), Status::Ok);
        let one_short = verdict_lines(&outcome(100_000, 1, 5, 0));
        assert!(
            one_short[0].contains(": 99.999% of their 100,000"),
            "{}",
            one_short[0]
        );
        // Shared limits refusing as often as its own: not contained, and said so.
        let shared = verdict_lines(&outcome(10, 0, 3, 3));
        assert_eq!(
            shared[1],
            "attacker contained: no: limits every peer shares refused it 3 times, as often as limits of its own (3 times: 50.00% from its own)"
        );
        assert_eq!(outcome(10, 0, 3, 3).status(), Status::Warnings);
        let never = verdict_lines(&outcome(10, 0, 0, 0));
        assert_eq!(never[1], "attacker contained: no: no limit ever refused it");
    }

    #[test]
    fn durations_and_shares_read_plainly() {
        assert_eq!(nanos(250), "250 ns");
        assert_eq!(nanos(1_500), "1.5 µs");
        assert_eq!(nanos(2_000_000), "2.0 ms");
    }
}
