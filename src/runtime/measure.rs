//! Latency figures of repeated runs (percentiles), the machine they ran on, and the
//! deterministic input they run on.

use serde::{Deserialize, Serialize};

/// Latency statistics over the timed runs, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub min: f64,
    pub max: f64,
}

impl Latency {
    /// Statistics of `samples` (ms, any order, at least one). Percentiles interpolate
    /// linearly between the two nearest ranks (NumPy's default).
    pub fn of(samples: &[f64]) -> Latency {
        let mut s = samples.to_vec();
        s.sort_by(f64::total_cmp);
        let mean = s.iter().sum::<f64>() / s.len().max(1) as f64;
        Latency {
            mean,
            p50: percentile(&s, 50.0),
            p90: percentile(&s, 90.0),
            p99: percentile(&s, 99.0),
            min: s.first().copied().unwrap_or(f64::NAN),
            max: s.last().copied().unwrap_or(f64::NAN),
        }
    }
}

/// The `p`-th percentile (0–100) of ascending `sorted`, interpolating linearly between
/// ranks: rank `p / 100 · (n − 1)`. NaN for an empty slice.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        1 => sorted[0],
        n => {
            let rank = (p / 100.0).clamp(0.0, 1.0) * (n - 1) as f64;
            let lo = rank.floor() as usize;
            let hi = (lo + 1).min(n - 1);
            sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64)
        }
    }
}

/// The machine the profile ran on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    /// `model name` from `/proc/cpuinfo`, or `unknown`.
    pub cpu: String,
    /// CPUs this process may run on.
    pub cores: usize,
}

impl Machine {
    pub fn current() -> Machine {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|t| cpu_model(&t))
            .unwrap_or_else(|| "unknown".into());
        Machine {
            cpu,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// `bytes` as "1.2 GiB", "340 MiB".
pub fn human_bytes(bytes: u64) -> String {
    const GIB: f64 = (1u64 << 30) as f64;
    const MIB: f64 = (1u64 << 20) as f64;
    let b = bytes as f64;
    if b >= 1024.0 * GIB {
        format!("{:.1} TiB", b / GIB / 1024.0)
    } else if b >= GIB {
        format!("{:.1} GiB", b / GIB)
    } else {
        format!("{:.0} MiB", (b / MIB).max(1.0))
    }
}

/// The environment variable that sets the memory budget [`memory_limit`] returns, in MiB
/// (a share of a machine used by others; tests).
pub const MEMORY_ENV: &str = "NAS_PIPE_MEMORY_MIB";

/// The memory this process may use: [`MEMORY_ENV`] when set to a number, else the
/// machine's (`MemTotal` of `/proc/meminfo`) or its cgroup's limit
/// (`/sys/fs/cgroup/memory.max`), whichever is smaller; `None` where neither can be read.
pub fn memory_limit() -> Option<u64> {
    if let Some(mib) = std::env::var(MEMORY_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        return Some(mib.saturating_mul(1 << 20));
    }
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| meminfo_total(&t));
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok());
    match (total, cgroup) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// `MemTotal` of a `/proc/meminfo` text, in bytes.
pub fn meminfo_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// The first `model name` line of a `/proc/cpuinfo` text.
pub fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == "model name").then(|| v.trim().to_string())
    })
}

/// `n` values in [-1, 1) from a fixed linear congruential sequence: the same input every
/// time, with no zeros or denormals to flatter the kernels.
pub(crate) fn pseudo_random(n: usize) -> Vec<f32> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_total_in_bytes() {
        let t = "MemTotal:       24576000 kB\nMemFree:  1000 kB\n";
        assert_eq!(meminfo_total(t), Some(24576000 * 1024));
        assert_eq!(meminfo_total("MemFree: 1 kB\n"), None);
    }

    #[test]
    fn percentiles_interpolate_between_ranks() {
        let s: Vec<f64> = (1..=10).map(f64::from).collect();
        // rank = p/100 · 9: p50 → 4.5 → between 5 and 6; p90 → 8.1 → 9.1; p99 → 8.91 → 9.91.
        assert_eq!(percentile(&s, 50.0), 5.5);
        assert!((percentile(&s, 90.0) - 9.1).abs() < 1e-12);
        assert!((percentile(&s, 99.0) - 9.91).abs() < 1e-12);
        assert_eq!(percentile(&s, 0.0), 1.0);
        assert_eq!(percentile(&s, 100.0), 10.0);
        assert_eq!(percentile(&[3.0], 90.0), 3.0);
        assert!(percentile(&[], 50.0).is_nan());
    }

    #[test]
    fn latency_statistics_ignore_sample_order() {
        let l = Latency::of(&[4.0, 1.0, 3.0, 2.0]);
        // Sorted 1, 2, 3, 4: rank p/100 · 3, so p90 → 2.7 → 3.7 and p99 → 2.97 → 3.97.
        let got = [l.mean, l.p50, l.p90, l.p99, l.min, l.max];
        let want = [2.5, 2.5, 3.7, 3.97, 1.0, 4.0];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-12, "{got:?} != {want:?}");
        }
    }

    #[test]
    fn cpu_model_is_read_from_cpuinfo() {
        let text = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\nmodel name\t: other\n";
        assert_eq!(
            cpu_model(text).as_deref(),
            Some("Intel(R) Xeon(R) CPU @ 2.20GHz")
        );
        assert_eq!(cpu_model("processor : 0\n"), None);
    }
}
