//! Which limits a command works with: go-libp2p's default limits plus its service limits,
//! scaled to this machine or to the sizes given, with a limits file over them.

use std::{
    fmt,
    path::{Path, PathBuf},
};

use rcmgr::{BaseLimit, ConcreteLimitConfig, PartialLimitConfig, ScalingLimitConfig};

use crate::units::{ByteSize, Count};

/// Where one input of the scaling came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The command line.
    Given,
    /// This machine, as `autoscale` reads it.
    Machine,
}

/// The memory and file descriptors the default limits are scaled for (the inputs of go's
/// `Scale`): given on the command line, or what `autoscale` reads from this machine (1/8 of
/// its memory, 1/2 of its soft file descriptor limit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sizing {
    /// Memory for the node, in bytes. At or below 128 MiB every amount gives the base limits.
    pub memory: u64,
    /// Where `memory` came from.
    pub memory_origin: Origin,
    /// File descriptors for the node. At or below 256 every count gives the base limits.
    pub fds: u64,
    /// Where `fds` came from.
    pub fds_origin: Origin,
}

/// Memory at or below this gives the base limits (go's scaling threshold, 128 MiB).
const BASE_MEMORY: u64 = 128 << 20;

/// File descriptors at or below this give the base limits (the default system scope's base).
const BASE_FDS: u64 = 256;

impl Sizing {
    /// The sizes given, and this machine's for those not given.
    ///
    /// ```
    /// use rcmgr_cli::{sizing::{Origin, Sizing}, units::ByteSize};
    /// let sizing = Sizing::resolve(Some(ByteSize::new(8 << 30)), Some(16384));
    /// assert_eq!((sizing.memory, sizing.fds), (8 << 30, 16384));
    /// assert_eq!(Sizing::resolve(None, Some(1024)).memory_origin, Origin::Machine);
    /// ```
    pub fn resolve(memory: Option<ByteSize>, fds: Option<u64>) -> Self {
        let (machine_memory, machine_fds) = match (memory, fds) {
            (Some(_), Some(_)) => (0, 0),
            _ => machine_inputs(),
        };
        let pick = |given: Option<u64>, machine| match given {
            Some(value) => (value, Origin::Given),
            None => (machine, Origin::Machine),
        };
        let (memory, memory_origin) = pick(memory.map(ByteSize::bytes), machine_memory);
        let (fds, fds_origin) = pick(fds, machine_fds);
        Sizing {
            memory,
            memory_origin,
            fds,
            fds_origin,
        }
    }

    /// go's default limits plus go-libp2p's service limits (what `libp2p.New` uses), scaled
    /// for these sizes.
    ///
    /// ```
    /// use rcmgr_cli::{sizing::Sizing, units::ByteSize};
    /// let limits = Sizing::resolve(Some(ByteSize::new(8 << 30)), Some(16384)).default_limits();
    /// assert_eq!(limits.system.conns_inbound, 576);
    /// assert_eq!(limits.service_limits("libp2p.identify").streams, 128 + 8 * 128);
    /// ```
    pub fn default_limits(&self) -> ConcreteLimitConfig {
        let scaling = ScalingLimitConfig::default().with_libp2p_defaults();
        if self.memory_origin == Origin::Machine && self.fds_origin == Origin::Machine {
            // Exactly what a node on this machine gets, whatever the inputs read back as.
            scaling.autoscale()
        } else {
            scaling.scale(self.memory, self.fds)
        }
    }
}

impl fmt::Display for Sizing {
    /// `3.0 GiB of memory (1/8 of this machine's) and 524,288 file descriptors (1/2 of the
    /// soft limit)`, saying where the base limits apply.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.memory <= BASE_MEMORY, self.memory_origin) {
            (true, Origin::Machine) => {
                f.write_str("128 MiB of memory or less (the base limits)")?
            }
            (true, Origin::Given) => write!(
                f,
                "{} of memory (128 MiB or less: the base limits)",
                ByteSize::new(self.memory)
            )?,
            (false, _) => write!(f, "{} of memory", ByteSize::new(self.memory))?,
        }
        if self.memory_origin == Origin::Machine {
            f.write_str(" (1/8 of this machine's)")?;
        }
        match (self.fds <= BASE_FDS, self.fds_origin) {
            _ if self.fds >= BaseLimit::UNLIMITED => {
                f.write_str(" and unlimited file descriptors")?
            }
            (true, Origin::Machine) => {
                f.write_str(" and 256 file descriptors or fewer (the base limits)")?
            }
            (true, Origin::Given) => write!(
                f,
                " and {} file descriptors (256 or fewer: the base limits)",
                Count(self.fds)
            )?,
            (false, _) => write!(f, " and {} file descriptors", Count(self.fds))?,
        }
        if self.fds_origin == Origin::Machine {
            f.write_str(" (1/2 of the soft limit)")?;
        }
        Ok(())
    }
}

/// The memory and file descriptor counts `autoscale` scales by on this machine.
///
/// rcmgr does not expose them, so they are read back from the autoscaled default system
/// scope: it grows by exactly 1 GiB of memory per GiB (so its memory above the 128 MiB base is
/// the input in whole MiB, all that scaling uses) and takes the whole descriptor count. An
/// input at or below the scaling threshold reads back as the threshold's own value, which
/// gives the same limits.
fn machine_inputs() -> (u64, u64) {
    let scaling = ScalingLimitConfig::default();
    let system = scaling.autoscale().system;
    let base = scaling.system.base;
    let per_gib = scaling.system.increase.memory.max(1);
    let grown_mib =
        u128::from(system.memory.saturating_sub(base.memory)) * 1024 / u128::from(per_gib);
    let memory = u64::try_from(grown_mib << 20).unwrap_or(u64::MAX);
    let fds = if system.fd > base.fd { system.fd } else { 0 };
    (memory, fds)
}

/// The limits a command works with: the defaults for a [`Sizing`], and a limits file over
/// them (built on them as go's `NewLimiterFromJSON` builds a file on its defaults).
#[derive(Clone, Debug)]
pub struct LimitsSource {
    /// What the defaults are scaled for.
    pub sizing: Sizing,
    /// The limits file, when one was given.
    pub file: Option<(PathBuf, PartialLimitConfig)>,
}

impl LimitsSource {
    /// The defaults for `sizing`, and the limits file at `config` if given.
    ///
    /// # Errors
    ///
    /// The file's error (naming the file, field, line and column) when it cannot be read or
    /// is not a limits file.
    pub fn load(sizing: Sizing, config: Option<&Path>) -> Result<Self, rcmgr::Error> {
        let file = match config {
            Some(path) => Some((
                path.to_path_buf(),
                PartialLimitConfig::from_json_file(path)?,
            )),
            None => None,
        };
        Ok(LimitsSource { sizing, file })
    }

    /// What the file wrote (nothing when there is no file).
    pub fn written(&self) -> PartialLimitConfig {
        self.file
            .as_ref()
            .map(|(_, partial)| partial.clone())
            .unwrap_or_default()
    }

    /// The concrete limits: the defaults, with the file built over them.
    pub fn build(&self) -> ConcreteLimitConfig {
        let defaults = self.sizing.default_limits();
        match &self.file {
            Some((_, partial)) => partial.build(&defaults),
            None => defaults,
        }
    }

    /// Where the limits come from, in one line.
    pub fn describe(&self) -> String {
        let mut text = format!(
            "go-libp2p's default limits and service limits for {}",
            self.sizing
        );
        if let Some((path, _)) = &self.file {
            text.push_str(&format!(", with {} over them", path.display()));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_inputs_give_back_the_autoscaled_limits() {
        let (memory, fds) = machine_inputs();
        let scaling = ScalingLimitConfig::default().with_libp2p_defaults();
        assert_eq!(scaling.scale(memory, fds), scaling.autoscale());
    }

    #[test]
    fn read_back_inverts_the_default_system_scaling() {
        // The read-back relies on these two facts of go's defaults.
        let system = ScalingLimitConfig::default().system;
        assert_eq!(system.increase.memory, 1 << 30);
        assert_eq!(system.increase.fd_fraction, 1.0);
    }

    #[test]
    fn one_size_given_takes_the_other_from_the_machine() {
        let sizing = Sizing::resolve(Some(ByteSize::new(4 << 30)), None);
        assert_eq!(
            (sizing.memory_origin, sizing.fds_origin),
            (Origin::Given, Origin::Machine)
        );
        let limits = sizing.default_limits();
        assert_eq!(limits.system.memory, (128 << 20) + (4 << 30));
    }

    #[test]
    fn sizing_says_where_each_input_came_from() {
        let given = Sizing::resolve(Some(ByteSize::new(8 << 30)), Some(16384));
        assert_eq!(
            given.to_string(),
            "8.0 GiB of memory and 16,384 file descriptors"
        );
        let small = Sizing {
            memory: 64 << 20,
            ..given
        };
        assert!(small.to_string().contains("base limits"));
    }
}
