//! What [`ScalingLimitConfig::autoscale`](super::ScalingLimitConfig::autoscale) reads from the
//! machine, and how it turns that into the inputs of `scale`.

use super::BaseLimit;

/// The process's soft file descriptor limit, as far as it can be known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FdSoftLimit {
    /// At most this many descriptors.
    Limited(u64),
    /// The system sets no limit (an infinite `RLIMIT_NOFILE`, or Windows).
    Unlimited,
    /// The limit could not be read, or this system has none we know how to read.
    Unknown,
}

/// The machine as `autoscale` sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Machine {
    /// Physical memory in bytes; 0 when it could not be read.
    pub(crate) physical_memory: u64,
    /// The memory limit of the process's cgroup, when it has one.
    pub(crate) cgroup_memory_limit: Option<u64>,
    /// The soft `RLIMIT_NOFILE`.
    pub(crate) fd_soft_limit: FdSoftLimit,
}

impl Machine {
    /// Reads this machine.
    pub(crate) fn detect() -> Self {
        Machine {
            physical_memory: physical_memory(),
            cgroup_memory_limit: cgroup_memory_limit(),
            fd_soft_limit: fd_soft_limit(),
        }
    }

    /// The memory and file descriptor counts to scale by: 1/8 of the usable memory (the lower
    /// of physical memory and the cgroup limit) and 1/2 of the soft descriptor limit, as in go;
    /// an unlimited descriptor limit counts as [`BaseLimit::UNLIMITED`] and an unknown one as 0.
    pub(crate) fn scale_inputs(&self) -> (u64, u64) {
        let usable_memory = match self.cgroup_memory_limit {
            Some(limit) => limit.min(self.physical_memory),
            None => self.physical_memory,
        };
        let fds = match self.fd_soft_limit {
            FdSoftLimit::Limited(limit) => limit,
            FdSoftLimit::Unlimited => BaseLimit::UNLIMITED,
            FdSoftLimit::Unknown => 0,
        };
        (usable_memory / 8, fds / 2)
    }
}

/// Physical memory in bytes, 0 if unknown.
fn physical_memory() -> u64 {
    let mut system = sysinfo::System::new();
    system.refresh_memory_specifics(sysinfo::MemoryRefreshKind::nothing().with_ram());
    system.total_memory()
}

/// The cgroup memory limit of this process (v2 `memory.max`, else v1 `memory.limit_in_bytes`),
/// when the process runs in one that has a limit.
#[cfg(target_os = "linux")]
fn cgroup_memory_limit() -> Option<u64> {
    const CGROUP_V2: &str = "/sys/fs/cgroup/memory.max";
    const CGROUP_V1: &str = "/sys/fs/cgroup/memory/memory.limit_in_bytes";
    [CGROUP_V2, CGROUP_V1]
        .iter()
        .find_map(|path| std::fs::read_to_string(path).ok())
        .and_then(|content| parse_cgroup_memory_limit(&content))
}

/// Only Linux has cgroups.
#[cfg(not(target_os = "linux"))]
fn cgroup_memory_limit() -> Option<u64> {
    None
}

/// A cgroup memory limit file's content: a number of bytes, or `max` (cgroup v2) for none.
/// cgroup v1 writes a huge number for none, which physical memory then undercuts.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn parse_cgroup_memory_limit(content: &str) -> Option<u64> {
    content.trim().parse().ok()
}

/// The soft `RLIMIT_NOFILE`.
#[cfg(unix)]
fn fd_soft_limit() -> FdSoftLimit {
    match rlimit::Resource::NOFILE.get_soft() {
        Ok(rlimit::INFINITY) => FdSoftLimit::Unlimited,
        Ok(limit) => FdSoftLimit::Limited(limit),
        Err(error) => {
            tracing::warn!(%error, "cannot read RLIMIT_NOFILE: file descriptor limits stay at their base");
            FdSoftLimit::Unknown
        }
    }
}

/// Windows has no per-process descriptor limit of this kind; go counts it as unlimited.
#[cfg(windows)]
fn fd_soft_limit() -> FdSoftLimit {
    FdSoftLimit::Unlimited
}

/// Elsewhere the limit is unknown and the base limits apply, as in go.
#[cfg(not(any(unix, windows)))]
fn fd_soft_limit() -> FdSoftLimit {
    tracing::warn!(
        "file descriptor limit unknown on this system: file descriptor limits stay at their base"
    );
    FdSoftLimit::Unknown
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine(memory: u64, cgroup: Option<u64>, fds: FdSoftLimit) -> Machine {
        Machine {
            physical_memory: memory,
            cgroup_memory_limit: cgroup,
            fd_soft_limit: fds,
        }
    }

    #[test]
    fn an_eighth_of_memory_and_half_the_descriptors() {
        let inputs = machine(16 << 30, None, FdSoftLimit::Limited(1024)).scale_inputs();
        assert_eq!(inputs, (2 << 30, 512));
    }

    #[test]
    fn a_lower_cgroup_limit_wins() {
        let inputs = machine(64 << 30, Some(4 << 30), FdSoftLimit::Limited(7)).scale_inputs();
        assert_eq!(inputs, (512 << 20, 3));
        // cgroup v1 without a limit: a huge page-aligned number, undercut by physical memory.
        let v1_unlimited = Some(0x7FFF_FFFF_FFFF_F000);
        let inputs = machine(8 << 30, v1_unlimited, FdSoftLimit::Limited(0)).scale_inputs();
        assert_eq!(inputs, (1 << 30, 0));
    }

    #[test]
    fn unknown_inputs_give_the_base_limits_and_unlimited_descriptors_scale_all_the_way() {
        assert_eq!(
            machine(0, None, FdSoftLimit::Unknown).scale_inputs(),
            (0, 0)
        );
        let (_, fds) = machine(0, None, FdSoftLimit::Unlimited).scale_inputs();
        assert_eq!(fds, BaseLimit::UNLIMITED / 2);
    }

    #[test]
    fn cgroup_files_are_bytes_or_max() {
        assert_eq!(parse_cgroup_memory_limit("max\n"), None);
        assert_eq!(parse_cgroup_memory_limit("1073741824\n"), Some(1 << 30));
        assert_eq!(parse_cgroup_memory_limit(""), None);
    }

    #[test]
    fn detection_does_not_fail_here() {
        let detected = Machine::detect();
        assert!(detected.physical_memory > 0);
        #[cfg(unix)]
        assert_ne!(detected.fd_soft_limit, FdSoftLimit::Unknown);
    }
}
