//! The multi-trial search's artifacts: every evaluation (`search/trials.json`), the
//! Pareto front (`search/pareto.json`) and, for a search on workers, when each worker
//! evaluated what (`search/workers.json`).

use serde::{Deserialize, Serialize};

/// An architecture as the strategies propose it: one choice per decision.
pub type Arch = Vec<u32>;

/// Version of `pareto.json`. Version 2 came with the zero-cost prior.
pub const VERSION: u32 = 2;

/// Version of `trials.json`: 3 is sealed with a blake3 checksum ([`crate::run::sealed`])
/// and may hold a zero-cost prior (`prior`, each record's `proxies`); an earlier file (no
/// checksum) is refused with the way out, never resumed unchecked.
pub const STATE_VERSION: u32 = 3;

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
    /// Wall time of the proposal: the strategy's ask, then the evaluation (and latency
    /// measurement).
    pub seconds: f64,
    /// Its zero-cost proxies at initialisation, in a search with a `zero_cost` prior.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxies: Option<Proxies>,
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
    /// The zero-cost prior's pool and picks, scored before the first proposal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prior: Option<Prior>,
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

/// A candidate's zero-cost proxies at initialisation (`stages::search::zero_cost`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Proxies {
    /// log |det K| of the ReLU codes' Hamming kernel, mean over the mini-batches.
    pub naswot: f64,
    /// Σ |θ ⊙ ∂R/∂θ| with |θ| and an all-ones input.
    pub synflow: f64,
    /// L2 norm of the loss gradient, mean over the mini-batches.
    pub grad_norm: f64,
}

/// The zero-cost prior's warm start: the pool it scored and what it kept.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Prior {
    /// The proxy that ranked the pool: `naswot`, `synflow` or `grad_norm`.
    pub proxy: String,
    /// The pool in draw order.
    pub pool: Vec<Pooled>,
    /// Indices into `pool` of the architectures the strategy proposed first, best first.
    pub kept: Vec<usize>,
    /// Wall time of drawing and scoring the pool, in seconds.
    pub seconds: f64,
}

/// An architecture of the prior's pool with its proxy score.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Pooled {
    pub arch: Arch,
    pub key: String,
    pub score: f64,
}

/// Spearman's rank correlation of each proxy with the search signal, over the evaluated
/// records that have proxies (repeats counted once).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Correlations {
    /// Records the correlations are over.
    pub over: usize,
    /// `None` with fewer than 3 records or a constant side.
    pub naswot: Option<f64>,
    pub synflow: Option<f64>,
    pub grad_norm: Option<f64>,
}

impl Correlations {
    /// Over `records`; `None` when none has proxies.
    pub fn of(records: &[Record]) -> Option<Correlations> {
        let pairs: Vec<(Proxies, f64)> = records
            .iter()
            .filter(|r| r.evaluated() && !r.repeat)
            .filter_map(|r| Some((r.proxies?, r.accuracy?)))
            .collect();
        if pairs.is_empty() {
            return None;
        }
        let acc: Vec<f64> = pairs.iter().map(|p| p.1).collect();
        let rho = |f: fn(&Proxies) -> f64| {
            let x: Vec<f64> = pairs.iter().map(|p| f(&p.0)).collect();
            spearman(&x, &acc)
        };
        Some(Correlations {
            over: pairs.len(),
            naswot: rho(|p| p.naswot),
            synflow: rho(|p| p.synflow),
            grad_norm: rho(|p| p.grad_norm),
        })
    }

    /// One line: `naswot 0.41, synflow 0.35, grad_norm 0.12 over 24 evaluations`.
    pub fn text(&self) -> String {
        let f = |v: Option<f64>| v.map_or("—".to_string(), |v| format!("{v:.2}"));
        format!(
            "naswot {}, synflow {}, grad_norm {} over {} evaluations",
            f(self.naswot),
            f(self.synflow),
            f(self.grad_norm),
            self.over
        )
    }
}

/// Spearman's rank correlation of `x` and `y` (equal values share their mean rank): the
/// Pearson correlation of the ranks. `None` with fewer than 3 pairs or a constant side.
pub fn spearman(x: &[f64], y: &[f64]) -> Option<f64> {
    (x.len() >= 3)
        .then(|| rank_correlation(x, y))
        .filter(|r| r.is_finite())
}

/// Spearman's rank correlation of paired samples: the Pearson correlation of their
/// [`ranks`]. NaN when the lengths differ, there are fewer than 2 pairs, or one side is
/// constant.
pub fn rank_correlation(a: &[f64], b: &[f64]) -> f64 {
    if a.len() != b.len() || a.len() < 2 {
        return f64::NAN;
    }
    let (ra, rb) = (ranks(a), ranks(b));
    let n = a.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in ra.iter().zip(&rb) {
        let (dx, dy) = (x - ma, y - mb);
        sab += dx * dy;
        saa += dx * dx;
        sbb += dy * dy;
    }
    sab / (saa * sbb).sqrt()
}

/// 1-based ranks of `xs`, ties given the average of the ranks they span (NaN sorts last).
pub fn ranks(xs: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..xs.len()).collect();
    order.sort_by(|&a, &b| xs[a].total_cmp(&xs[b]));
    let mut r = vec![0.0; xs.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && xs[order[j + 1]] == xs[order[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            r[k] = avg;
        }
        i = j + 1;
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Wikipedia's worked example (IQ against hours of television): ρ = −29/165.
    #[test]
    fn spearman_matches_a_hand_example() {
        let iq = [
            106.0, 100.0, 86.0, 101.0, 99.0, 103.0, 97.0, 113.0, 112.0, 110.0,
        ];
        let tv = [7.0, 27.0, 2.0, 50.0, 28.0, 29.0, 20.0, 12.0, 6.0, 17.0];
        let rho = spearman(&iq, &tv).unwrap();
        assert!((rho - (-29.0 / 165.0)).abs() < 1e-12, "{rho}");
        // Ties share their mean rank; a monotone map gives 1; a constant side gives none.
        assert_eq!(ranks(&[3.0, 1.0, 3.0, 2.0]), [3.5, 1.0, 3.5, 2.0]);
        assert!((spearman(&[1.0, 2.0, 3.0], &[10.0, 200.0, 3000.0]).unwrap() - 1.0).abs() < 1e-12);
        assert_eq!(spearman(&[1.0, 1.0, 1.0], &[1.0, 2.0, 3.0]), None);
        assert_eq!(spearman(&[1.0, 2.0], &[1.0, 2.0]), None);
    }
}
