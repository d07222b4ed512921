//! The multi-trial search's artifacts: every evaluation (`search/trials.json`), the
//! Pareto front (`search/pareto.json`) and, for a search on workers, when each worker
//! evaluated what (`search/workers.json`).

use serde::{Deserialize, Serialize};

/// An architecture as the strategies propose it: one choice per decision.
pub type Arch = Vec<u32>;

/// Version of `pareto.json`.
pub const VERSION: u32 = 1;

/// Version of `trials.json`: 2 is sealed with a blake3 checksum ([`crate::run::sealed`]);
/// a version 1 file (no checksum) is refused with the way out, never resumed unchecked.
pub const STATE_VERSION: u32 = 2;

/// `search/trials.json` and the previous copy kept beside it (`search/trials.previous.json`).
pub fn kept(run: &crate::run::RunDir) -> crate::run::sealed::Kept {
    crate::run::sealed::Kept {
        run_dir: run.root().to_path_buf(),
        latest: run.trials(),
        previous: run.trials_previous(),
        what: "search record",
        advice: crate::run::checkpoint::restart_advice("search", &run.search()),
    }
}

/// One proposal of the strategy.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    /// 0-based proposal number.
    pub n: usize,
    pub arch: Arch,
    pub key: String,
    /// The genotype's RON text.
    pub genotype: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nb201: Option<String>,
    pub params: u64,
    pub macs: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// The constraint that rejected it (then it was not evaluated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<String>,
    /// Why its evaluation failed for good (a distributed trial after its last attempt); it
    /// was then not evaluated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
    /// The search signal, in [0, 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    /// The report signal, in [0, 1], when the evaluator gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<f64>,
    /// What the strategy was told.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reward: Option<f64>,
    /// Answered from an earlier record of the same architecture.
    #[serde(default)]
    pub repeat: bool,
    /// Wall time of the evaluation (and latency measurement).
    pub seconds: f64,
}

impl Record {
    /// Whether it was scored (or answered from a scored record): neither rejected nor
    /// failed.
    pub fn evaluated(&self) -> bool {
        self.rejected.is_none() && self.failed.is_none()
    }
}

/// `search/trials.json` (sealed: written and read through [`kept`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    pub spec_hash: String,
    pub strategy: String,
    /// What the report signal is.
    pub report: String,
    /// The budget, and whether it is spent (or the time limit reached).
    pub budget: usize,
    pub finished: bool,
    pub records: Vec<Record>,
}

impl State {
    /// Evaluations spent (rejected proposals cost none).
    pub fn evaluations(&self) -> usize {
        self.records.iter().filter(|r| r.evaluated()).count()
    }

    /// The returned architecture: the highest reward, the earliest among equals.
    pub fn best(&self) -> Option<&Record> {
        best(&self.records)
    }
}

/// The record with the highest reward, the earliest among equals.
pub fn best(records: &[Record]) -> Option<&Record> {
    let mut b: Option<&Record> = None;
    for r in records {
        if let Some(x) = r.reward
            && b.is_none_or(|b| x > b.reward.unwrap_or(f64::NEG_INFINITY))
        {
            b = Some(r);
        }
    }
    b
}

/// A point of the Pareto front.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Point {
    pub n: usize,
    pub key: String,
    pub genotype: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nb201: Option<String>,
    pub accuracy: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<f64>,
    pub params: u64,
    pub macs: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// With `export_front`: its folder under `search/front/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export: Option<String>,
    /// With `export_front`: ONNX Runtime's median latency of the exported file at the
    /// profile's first batch size and thread count, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profiled_ms: Option<f64>,
}

/// `search/pareto.json`: the front over accuracy (maximised) and `objectives` (minimised),
/// by accuracy, best first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Front {
    pub version: u32,
    pub objectives: Vec<String>,
    pub report: String,
    pub points: Vec<Point>,
}

/// One evaluation on a worker: the last attempt of trial `n`, in seconds since the first
/// evaluation of the search started.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Span {
    pub n: usize,
    pub attempt: u32,
    pub start: f64,
    pub end: f64,
    /// Whether the trial failed for good.
    #[serde(default)]
    pub failed: bool,
}

/// One worker's evaluations, by start.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WorkerSpans {
    /// `host:pid`.
    pub worker: String,
    pub spans: Vec<Span>,
}

/// `search/workers.json`: the per-worker timeline of a search on workers. Unlike
/// `trials.json` it depends on who ran what when, so it is not part of the search's result.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Timeline {
    pub version: u32,
    /// By worker id.
    pub workers: Vec<WorkerSpans>,
}

impl Timeline {
    /// Seconds from the first start to the last end.
    pub fn span(&self) -> f64 {
        self.spans().map(|s| s.end).fold(0.0, f64::max)
    }

    /// Every span of every worker.
    pub fn spans(&self) -> impl Iterator<Item = &Span> {
        self.workers.iter().flat_map(|w| w.spans.iter())
    }

    /// The fraction of the workers' time (workers × span) spent evaluating.
    pub fn utilisation(&self) -> Option<f64> {
        let total = self.span() * self.workers.len() as f64;
        let busy: f64 = self.spans().map(|s| s.end - s.start).sum();
        (total > 0.0).then(|| busy / total)
    }
}
