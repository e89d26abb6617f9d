//! What memory the process may get, and allocations that fail in one line instead of aborting.
//!
//! Under Linux overcommit an allocation larger than a cgroup's `memory.max` succeeds and the
//! process is killed later, when it touches the pages; an allocation over `RLIMIT_AS` fails, and
//! Rust's infallible allocation then aborts the process. So a run compares its planned total
//! with what the process may get before it allocates anything ([`check_plan`]), and allocates
//! everything sized by the plan with [`try_zeroed`], which returns an error.
use std::collections::TryReserveError;
use std::fs;

use crate::error::CliError;
use crate::size::format_size;

/// A limit on the memory of this process: what it is (in words) and the bytes left under it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limit {
    /// What sets it, e.g. `the cgroup's memory.max (4.0 GiB, 1.2 GiB in use)`.
    pub what: String,
    /// Bytes this process may still take under it.
    pub left: u64,
}

/// Limits at or above this are "unlimited" (cgroup v1 writes `PAGE_COUNTER_MAX` pages).
const UNLIMITED: u64 = 1 << 60;

fn read_u64(path: &str) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The `kB` value of `key` in a `/proc` file of `Key: value kB` lines, in bytes.
fn proc_kb(file: &str, key: &str) -> Option<u64> {
    let text = fs::read_to_string(file).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kb: u64 = line[key.len()..].split_whitespace().next()?.parse().ok()?;
    Some(kb.saturating_mul(1024))
}

/// `RLIMIT_AS` (the address space; `ulimit -v`) less the address space already mapped.
fn address_space() -> Option<Limit> {
    let limits = fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max address space"))?;
    let soft: u64 = line
        .trim_start_matches("Max address space")
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let mapped = proc_kb("/proc/self/status", "VmSize:").unwrap_or(0);
    Some(Limit {
        what: format!(
            "the address-space limit (ulimit -v: {}, {} mapped)",
            format_size(soft),
            format_size(mapped)
        ),
        left: soft.saturating_sub(mapped),
    })
}

/// The memory limit of this process's cgroup (v2 `memory.max`, or v1
/// `memory.limit_in_bytes`) less what the cgroup uses.
fn cgroup() -> Option<Limit> {
    let own = fs::read_to_string("/proc/self/cgroup").ok()?;
    let mut candidates = Vec::new();
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let path = path.trim_end_matches('/');
        if controllers.is_empty() {
            for base in [format!("/sys/fs/cgroup{path}"), "/sys/fs/cgroup".into()] {
                candidates.push((
                    format!("{base}/memory.max"),
                    format!("{base}/memory.current"),
                    "memory.max",
                ));
            }
        } else if controllers.split(',').any(|c| c == "memory") {
            for base in [
                format!("/sys/fs/cgroup/memory{path}"),
                "/sys/fs/cgroup/memory".into(),
            ] {
                candidates.push((
                    format!("{base}/memory.limit_in_bytes"),
                    format!("{base}/memory.usage_in_bytes"),
                    "memory.limit_in_bytes",
                ));
            }
        }
    }
    candidates.into_iter().find_map(|(max, current, name)| {
        let limit = read_u64(&max)?;
        (limit < UNLIMITED).then(|| {
            let used = read_u64(&current).unwrap_or(0);
            Limit {
                what: format!(
                    "the cgroup's {name} ({}, {} in use)",
                    format_size(limit),
                    format_size(used)
                ),
                left: limit.saturating_sub(used),
            }
        })
    })
}

/// The hard limits on this process's memory that apply (the address space, the cgroup), the
/// tightest first.
pub fn limits() -> Vec<Limit> {
    let mut v: Vec<Limit> = [address_space(), cgroup()]
        .into_iter()
        .flatten()
        .filter(|l| l.left < UNLIMITED)
        .collect();
    v.sort_by_key(|l| l.left);
    v
}

/// The memory the kernel says could be given without swapping (`MemAvailable`).
pub fn available() -> Option<u64> {
    proc_kb("/proc/meminfo", "MemAvailable:")
}

/// Refuse a run whose planned total `total` (bytes) is over a hard limit of this process
/// ([`limits`]), or over what the machine has available, swap included (`MemAvailable` +
/// `SwapFree`: beyond it, zeroing the arena would get the process killed): one line naming
/// `flag` (the budget flag whose value it is, as `--budget 16.0 GiB`). Over `MemAvailable`
/// only, the warning to print is returned.
pub fn check_plan(flag: &str, total: u64) -> Result<Option<String>, CliError> {
    let over = |what: String, left: u64| {
        CliError::Usage(format!(
            "{flag}: the run plans {} in all, more than this process may get: {what} leaves {}; \
             lower the budget or raise the limit",
            format_size(total),
            format_size(left)
        ))
    };
    if let Some(l) = limits().into_iter().find(|l| total > l.left) {
        return Err(over(l.what, l.left));
    }
    let Some(avail) = available() else {
        return Ok(None);
    };
    let swap = proc_kb("/proc/meminfo", "SwapFree:").unwrap_or(0);
    if total > avail.saturating_add(swap) {
        return Err(over(
            format!(
                "the machine's available memory ({} MemAvailable + {} SwapFree)",
                format_size(avail),
                format_size(swap)
            ),
            avail.saturating_add(swap),
        ));
    }
    Ok((total > avail).then(|| {
        format!(
            "warning: the run plans {} in all; the machine has {} available (MemAvailable): \
             it will swap",
            format_size(total),
            format_size(avail)
        )
    }))
}

/// `n` zeros, or the error when they cannot be allocated (instead of an abort).
pub fn try_zeroed<T: Clone + Default>(n: usize) -> Result<Vec<T>, TryReserveError> {
    let mut v = Vec::new();
    v.try_reserve_exact(n)?;
    v.resize(n, T::default());
    Ok(v)
}

/// [`try_zeroed`] of `n` elements for `what`, its failure as one line naming `flag` (as
/// `--budget 16.0 GiB: cannot allocate the arena (16.0 GiB): memory allocation failed`).
pub fn alloc<T: Clone + Default>(flag: &str, what: &str, n: usize) -> Result<Vec<T>, CliError> {
    try_zeroed(n).map_err(|e| {
        let bytes = (n as u64).saturating_mul(std::mem::size_of::<T>() as u64);
        CliError::Usage(format!(
            "{flag}: cannot allocate {what} ({}): {e}",
            format_size(bytes)
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_allocation_too_large_is_an_error_not_an_abort() {
        let e = alloc::<f32>("--budget 1.0 EiB", "the arena", usize::MAX / 8).unwrap_err();
        let m = e.to_string();
        assert!(
            m.starts_with("--budget 1.0 EiB: cannot allocate the arena ("),
            "{m}"
        );
        assert_eq!(e.exit_code(), 2);
        assert_eq!(try_zeroed::<u8>(5).unwrap(), vec![0; 5]);
    }

    #[test]
    fn a_plan_over_a_limit_is_refused() {
        if let Some(l) = limits().first() {
            let m = check_plan("--budget", l.left + 1).unwrap_err().to_string();
            assert!(m.contains(&l.what), "{m}");
        }
        // No machine has an exbibyte.
        let m = check_plan("--budget 1.0 EiB", 1 << 60)
            .unwrap_err()
            .to_string();
        assert!(m.starts_with("--budget 1.0 EiB: the run plans "), "{m}");
        assert_eq!(check_plan("--budget", 1).unwrap(), None);
    }
}
