//! `nas-pipe study`: a multi-trial pipeline with a tabular evaluator run over many seeds,
//! in memory, and summarised the way NAS-Bench-201 compares strategies: the returned
//! architecture (the best by the search signal) scored by the report signal it never saw,
//! mean ± standard deviation over seeds, with the anytime curves (mean ± standard error of
//! the best-so-far signals after each evaluation) and the wall time per proposal.
//! `study.json` keeps every seed's pick so any other table can re-score it; it holds no
//! timings, so one study run twice writes the same file.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use crate::run::Resolved;
use crate::run::trials::Front;
use crate::run::trials::State;
use crate::spec::pipeline::{Evaluator, Search};
use crate::stages::search::trials::{self, Plan};

/// Version of `study.json`.
pub const VERSION: u32 = 2;

/// One seed's search.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Seed {
    pub seed: u64,
    pub key: String,
    pub genotype: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nb201: Option<String>,
    /// The returned architecture's search and report signals, in percent.
    pub search: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<f64>,
    pub evaluations: usize,
    /// The evaluation (1-based) that found it.
    pub found_at: usize,
}

/// Mean, sample standard deviation and standard error of the mean.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Stats {
    pub n: usize,
    pub mean: f64,
    pub std: f64,
    pub se: f64,
}

impl Stats {
    pub fn of(xs: &[f64]) -> Stats {
        let n = xs.len();
        let mean = xs.iter().sum::<f64>() / n.max(1) as f64;
        let var = if n > 1 {
            xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64
        } else {
            0.0
        };
        Stats {
            n,
            mean,
            std: var.sqrt(),
            se: var.sqrt() / (n.max(1) as f64).sqrt(),
        }
    }
}

/// `study.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Study {
    pub version: u32,
    pub pipeline: String,
    pub strategy: String,
    pub table: String,
    /// The column the strategy selects on, and the one it reports.
    pub search_column: String,
    pub report_column: String,
    pub budget: usize,
    pub search: Stats,
    pub report: Option<Stats>,
    /// Mean over seeds of the best-so-far architecture's report signal after each
    /// evaluation (percent): the anytime curve.
    pub curve: Vec<f64>,
    /// The standard error over seeds of each point of `curve`.
    pub curve_se: Vec<f64>,
    /// The best-so-far search signal after each evaluation (percent): mean over seeds and
    /// its standard error.
    pub search_curve: Vec<f64>,
    pub search_curve_se: Vec<f64>,
    pub seeds: Vec<Seed>,
    /// Wall time per proposal (strategy, cost, table lookup), over every proposal of every
    /// seed; not written.
    #[serde(skip)]
    pub timing: Timing,
}

/// Wall time per proposal, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timing {
    pub mean_ms: f64,
    pub max_ms: f64,
}

/// Per evaluation k, the mean and standard error over seeds of `curves[seed][k]`, up to
/// the shortest curve.
fn band(curves: &[Vec<f64>]) -> (Vec<f64>, Vec<f64>) {
    let len = curves.iter().map(Vec::len).min().unwrap_or(0);
    (0..len)
        .map(|k| {
            let st = Stats::of(&curves.iter().map(|c| c[k]).collect::<Vec<_>>());
            (st.mean, st.se)
        })
        .unzip()
}

/// Runs pipeline `p` with seeds `p.seed .. p.seed + seeds`, with `evaluations` in place of
/// the pipeline's budget when given.
pub fn run(p: &Resolved, seeds: u64, evaluations: Option<usize>, progress: bool) -> Result<Study> {
    let Some(Search::Trials { evaluator, .. }) = p.spec.search.as_deref() else {
        return Err(Error::Input(format!(
            "{}: `nas-pipe study` needs a multi-trial search (`search: Trials(...)`)",
            p.spec.name.value
        )));
    };
    let Evaluator::Tabular {
        table,
        select,
        report,
    } = &evaluator.value
    else {
        return Err(Error::Input(format!(
            "{}: `nas-pipe study` runs pipelines with a tabular evaluator; this one trains \
             every candidate, which over many seeds takes days: use `nas-pipe run`",
            p.spec.name.value
        )));
    };
    if seeds == 0 {
        return Err(Error::Input("--seeds must be at least 1".into()));
    }
    let mut base = Plan::of(p)?;
    if let Some(n) = evaluations {
        if n == 0 {
            return Err(Error::Input("--evaluations must be at least 1".into()));
        }
        base.budget = n;
    }
    if base.needs_latency() {
        return Err(Error::Input(format!(
            "{}: a study does not measure latency; remove latency from the objectives, reward \
             and constraints",
            p.spec.name.value
        )));
    }
    let bar = crate::progress::count(progress, seeds, "study", "seed");
    let mut out = Vec::new();
    let mut curves: Vec<Vec<f64>> = Vec::new();
    let mut search_curves: Vec<Vec<f64>> = Vec::new();
    let (mut proposals, mut seconds, mut max_ms) = (0usize, 0f64, 0f64);
    // A table lookup keeps no state between seeds.
    let mut ev = trials::evaluator(p, &candle_core::Device::Cpu, None, false)?;
    for i in 0..seeds {
        let seed = p.spec.seed.wrapping_add(i);
        let plan = Plan {
            seed,
            ..base.clone()
        };
        let (records, _) = trials::search(
            &plan,
            &mut trials::InProcess(ev.as_mut()),
            None,
            Vec::new(),
            None,
            |_| Ok(()),
            |_, _| {},
        )?;
        let evaluated: Vec<&crate::run::trials::Record> =
            records.iter().filter(|r| r.evaluated()).collect();
        let b = crate::run::trials::best(&records)
            .ok_or_else(|| Error::Input("no architecture was evaluated".into()))?;
        for r in &records {
            proposals += 1;
            seconds += r.seconds;
            max_ms = max_ms.max(1e3 * r.seconds);
        }
        let (curve, search_curve) = best_so_far(&evaluated);
        curves.push(curve);
        search_curves.push(search_curve);
        out.push(Seed {
            seed,
            key: b.key.clone(),
            genotype: b.genotype.clone(),
            nb201: b.nb201.clone(),
            search: 100.0 * b.accuracy.unwrap_or(0.0),
            report: b.report.map(|r| 100.0 * r),
            evaluations: evaluated.len(),
            found_at: evaluated
                .iter()
                .position(|r| r.n == b.n)
                .map_or(0, |i| i + 1),
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    let (curve, curve_se) = band(&curves);
    let (search_curve, search_curve_se) = band(&search_curves);
    let reports: Vec<f64> = out.iter().filter_map(|s| s.report).collect();
    Ok(Study {
        version: VERSION,
        pipeline: p.spec.name.value.clone(),
        strategy: trials::strategy_name(base.strategy).into(),
        table: table.value.clone(),
        search_column: select.value.clone(),
        report_column: report.value.clone(),
        budget: base.budget,
        search: Stats::of(&out.iter().map(|s| s.search).collect::<Vec<_>>()),
        report: (reports.len() == out.len()).then(|| Stats::of(&reports)),
        curve,
        curve_se,
        search_curve,
        search_curve_se,
        seeds: out,
        timing: Timing {
            mean_ms: 1e3 * seconds / proposals.max(1) as f64,
            max_ms,
        },
    })
}

/// The best-so-far architecture's report and search signals (percent) after each
/// evaluation; the best is the first with the highest reward.
fn best_so_far(evaluated: &[&crate::run::trials::Record]) -> (Vec<f64>, Vec<f64>) {
    let mut best: Option<&crate::run::trials::Record> = None;
    evaluated
        .iter()
        .map(|r| {
            if best.is_none_or(|x| r.reward > x.reward) {
                best = Some(r);
            }
            let pct = |v: Option<f64>| v.map_or(f64::NAN, |v| 100.0 * v);
            (
                pct(best.and_then(|x| x.report)),
                pct(best.and_then(|x| x.accuracy)),
            )
        })
        .unzip()
}

/// Writes `study.json` atomically.
pub fn write(s: &Study, path: &Path) -> Result<()> {
    let text = serde_json::to_vec_pretty(s).map_err(|e| Error::Input(e.to_string()))?;
    write_atomic(path, &text)
}

fn pm(s: &Stats) -> String {
    format!("{:.2} ± {:.2} (s.e. {:.2})", s.mean, s.std, s.se)
}

/// `a − b` of two independent means, ± the standard error of the difference, and the
/// difference in standard errors.
fn diff(a: &Stats, b: &Stats) -> String {
    let d = a.mean - b.mean;
    let se = (a.se.powi(2) + b.se.powi(2)).sqrt();
    let z = if se > 0.0 { d / se } else { 0.0 };
    format!("{d:+.2} ± {se:.2} ({z:.1} s.e.)")
}

/// The studies side by side, then each one's difference from the first in the search and
/// report signals, with the standard error of the difference.
pub fn table(studies: &[(Study, std::path::PathBuf)]) -> String {
    let mut t = String::new();
    let Some((first, _)) = studies.first() else {
        return t;
    };
    t.push_str(&format!(
        "{:<24} {:<10} {:>5} {:>6}  {:<30} {:<30} {:>17}\n",
        "pipeline",
        "strategy",
        "seeds",
        "evals",
        format!("{} (search)", first.search_column),
        format!("{} (report)", first.report_column),
        "ms/proposal (max)"
    ));
    for (s, _) in studies {
        t.push_str(&format!(
            "{:<24} {:<10} {:>5} {:>6}  {:<30} {:<30} {:>17}\n",
            s.pipeline,
            s.strategy,
            s.search.n,
            s.budget,
            pm(&s.search),
            s.report.as_ref().map_or("-".into(), pm),
            format!("{:.2} ({:.1})", s.timing.mean_ms, s.timing.max_ms)
        ));
    }
    for (s, _) in &studies[1..] {
        let mut parts = vec![format!("search {}", diff(&s.search, &first.search))];
        if let (Some(r), Some(r0)) = (&s.report, &first.report) {
            parts.push(format!("report {}", diff(r, r0)));
        }
        t.push_str(&format!(
            "{} − {}: {} (± s.e. of the difference)\n",
            s.pipeline,
            first.pipeline,
            parts.join(", ")
        ));
    }
    for (s, path) in studies {
        t.push_str(&format!("{}: {}\n", s.pipeline, path.display()));
    }
    t
}

/// A finished search in a few lines: the returned architecture and the front's size.
pub fn summary(s: &State, f: &Front) -> String {
    let Some(b) = s.best() else {
        return "no architecture was evaluated".into();
    };
    let arch = b.nb201.clone().unwrap_or_else(|| b.key.clone());
    let report = b.report.map_or(String::new(), |r| {
        format!(", {} {:.2}%", s.report, 100.0 * r)
    });
    format!(
        "returned {arch}: search signal {:.2}%{report}, {} params, {} MACs{}\nPareto front: {} points over {}",
        100.0 * b.accuracy.unwrap_or(0.0),
        b.params,
        b.macs,
        b.latency_ms
            .map_or(String::new(), |l| format!(", {l:.3} ms")),
        f.points.len(),
        f.objectives.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_are_the_sample_ones() {
        let s = Stats::of(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(s.mean, 2.5);
        assert!((s.std - 1.2909944487358056).abs() < 1e-12);
        assert!((s.se - s.std / 2.0).abs() < 1e-12);
        assert_eq!(Stats::of(&[5.0]).std, 0.0);
    }
}
