//! `profile.json`: latency and throughput per batch size and thread count, the model's
//! size, and the machine it ran on.

use std::path::PathBuf;

use crate::error::{Error, Result};

use serde::{Deserialize, Serialize};

use crate::runtime::measure::{Latency, Machine};

/// Version of the `profile.json` layout; bumped when a field changes meaning.
pub const SCHEMA_VERSION: u32 = 1;

/// One batch size × thread count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub batch: usize,
    pub threads: usize,
    /// Per run, in milliseconds.
    pub latency_ms: Latency,
    /// Images per second at the mean latency: `batch / mean`.
    pub images_per_s: f64,
}

/// The model profiled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Model {
    pub path: PathBuf,
    pub file_bytes: u64,
    /// Parameters: given by the caller, else the floating-point initializer elements.
    pub params: Option<u64>,
    /// `"architecture"` (given) or `"initializers"` (read from the file).
    pub params_from: Option<String>,
    /// Multiply-adds per image, when the caller knows them.
    pub macs: Option<u64>,
    pub input_name: String,
    /// The input shape with the batch dimension first; `None` where the model leaves it
    /// dynamic.
    pub input_shape: Vec<Option<usize>>,
}

/// Everything `profile.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub version: u32,
    pub model: Model,
    pub ort_version: String,
    pub execution_provider: String,
    pub machine: Machine,
    pub plan: Plan,
    pub rows: Vec<Row>,
    /// Remarks on how the plan was applied (a batch size fixed by the model).
    pub notes: Vec<String>,
}

/// every field is valid (non-empty lists of values ≥ 1, `runs` ≥ 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Images per run.
    pub batch_sizes: Vec<usize>,
    /// Intra-op thread counts.
    pub threads: Vec<usize>,
    /// Untimed runs before the timed ones, per batch size and thread count.
    pub warmup: usize,
    /// Timed runs, per batch size and thread count.
    pub runs: usize,
}

impl Default for Plan {
    /// The pipeline's defaults: batch sizes [1, 32], 1 thread, 20 warm-up and 200 timed runs.
    fn default() -> Self {
        Plan {
            batch_sizes: vec![1, 32],
            threads: vec![1],
            warmup: 20,
            runs: 200,
        }
    }
}

impl Plan {
    /// The plan of a validated pipeline's `profile` section.
    pub fn from_spec(p: &crate::spec::pipeline::Profile) -> Plan {
        Plan {
            batch_sizes: p.batch_sizes.iter().map(|&b| b as usize).collect(),
            threads: p.threads.iter().map(|&t| t as usize).collect(),
            warmup: p.warmup as usize,
            runs: p.runs.value as usize,
        }
    }

    /// `self` with the given command-line values in place of its own, checked.
    pub fn with_overrides(
        mut self,
        batch_sizes: Option<&[usize]>,
        threads: Option<&[usize]>,
        warmup: Option<usize>,
        runs: Option<usize>,
    ) -> Result<Plan> {
        for (list, flag) in [(batch_sizes, "--batch-sizes"), (threads, "--threads")] {
            if let Some(l) = list
                && (l.is_empty() || l.contains(&0))
            {
                return Err(Error::Input(format!(
                    "{flag} must be a comma-separated list of numbers ≥ 1, got {}",
                    join(l)
                )));
            }
        }
        if runs == Some(0) {
            return Err(Error::Input("--runs must be at least 1".into()));
        }
        use crate::spec::pipeline::{MAX_BATCH, MAX_RUNS, MAX_THREADS};
        for (list, flag, max, why) in [
            (
                batch_sizes,
                "--batch-sizes",
                MAX_BATCH,
                "larger batches are not latency measurements",
            ),
            (
                threads,
                "--threads",
                MAX_THREADS,
                "more threads than any machine's cores only add contention",
            ),
        ] {
            if let Some(&v) = list.and_then(|l| l.iter().find(|&&v| v > max as usize)) {
                return Err(Error::Input(format!(
                    "{flag}: {v} is more than the allowed {max} ({why})"
                )));
            }
        }
        for (v, flag) in [(warmup, "--warmup"), (runs, "--runs")] {
            if v.is_some_and(|v| v > MAX_RUNS as usize) {
                return Err(Error::Input(format!("{flag} must be at most {MAX_RUNS}")));
            }
        }
        if let Some(b) = batch_sizes {
            self.batch_sizes = b.to_vec();
        }
        if let Some(t) = threads {
            self.threads = t.to_vec();
        }
        self.warmup = warmup.unwrap_or(self.warmup);
        self.runs = runs.unwrap_or(self.runs);
        Ok(self)
    }
}

/// `[1, 8]` as `1,8`.
pub fn join(v: &[usize]) -> String {
    v.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(",")
}
