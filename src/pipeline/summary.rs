//! One line per finished stage, read back from what the stage wrote in the run folder: the
//! search's last scores, the derived cells, the test accuracy, the model's size, the
//! validation verdict, the batch-1 latency. Printed after `[i/n] stage: done in …`, and,
//! for a multi-trial search, the returned architecture printed by `nas-pipe run` at the end.

use std::path::Path;

use serde::de::DeserializeOwned;

use crate::run::{Resolved, RunDir, Stage};
use crate::space::genotype::Genotype;

/// The summary of `stage` from the run folder's files; `None` when they cannot be read
/// (the line is then left out, never an error).
pub fn of(p: &Resolved, run_dir: &Path, stage: Stage) -> Option<String> {
    let run = RunDir::new(run_dir);
    match stage {
        Stage::Search => search(&run),
        Stage::Derive => {
            let g: Genotype = crate::spec::Source::read(&run.genotype())
                .ok()?
                .parse()
                .ok()?;
            Some(cells(p, &g))
        }
        Stage::Retrain => {
            let e: crate::nets::train::Evaluation = json(&run.model().evaluation())?;
            Some(format!(
                "test accuracy {:.2}% on {} images",
                100.0 * e.accuracy,
                crate::progress::grouped(e.images as u64)
            ))
        }
        Stage::Export => {
            let bytes = std::fs::metadata(run.model_onnx()).ok()?.len();
            Some(format!("{} ({})", run.model_onnx().display(), size(bytes)))
        }
        Stage::Validate => {
            let v: crate::run::validation::Validation = json(&run.validation())?;
            Some(format!(
                "{}: largest logit difference {:.1e} (allowed {:.0e}), top-1 agreement {:.2}% on {} images",
                if v.passed { "passed" } else { "FAILED" },
                v.max_abs_diff,
                v.max_abs_diff_allowed,
                100.0 * v.top1_agreement,
                crate::progress::grouped(v.samples as u64)
            ))
        }
        Stage::Profile => {
            let r: crate::run::profile::Report = json(&run.profile_json())?;
            let row = r.rows.iter().min_by_key(|row| (row.batch, row.threads))?;
            Some(format!(
                "batch {} on {} thread{}: p50 {:.3} ms, {} images/s",
                row.batch,
                row.threads,
                if row.threads == 1 { "" } else { "s" },
                row.latency_ms.p50,
                crate::progress::rate_text(row.images_per_s)
            ))
        }
        Stage::Report => Some(run.report_html().display().to_string()),
    }
}

/// The search's outcome: the last epoch's validation accuracy (DARTS family), or the
/// evaluations spent and the best score (multi-trial).
fn search(run: &RunDir) -> Option<String> {
    if let Some(s) = json::<crate::run::search::State>(&run.search_state()) {
        let m = s.metrics.last()?;
        return Some(format!(
            "{} epoch{}, last val acc {:.2}% (train {:.2}%)",
            s.epochs_done,
            if s.epochs_done == 1 { "" } else { "s" },
            100.0 * m.val_acc,
            100.0 * m.train_acc
        ));
    }
    let s: crate::run::trials::State = json(&run.trials())?;
    let best = s.best()?;
    let rho = crate::run::trials::Correlations::of(&s.records).map_or(String::new(), |c| {
        format!("; zero-cost proxies' Spearman ρ: {}", c.text())
    });
    Some(format!(
        "{} evaluations, best search score {:.2}%{rho}",
        s.evaluations(),
        100.0 * best.accuracy?
    ))
}

/// The cells of `g`, one `name: op(input) + op(input) | …` group per cell type (nodes
/// separated by `|`), the NAS-Bench-201 string where the space has one, and the layers of a
/// chain.
pub fn cells(p: &Resolved, g: &Genotype) -> String {
    if let Some(s) = crate::space::genotype::nb201_string(&p.search_space, g) {
        return s;
    }
    let mut parts: Vec<String> = g
        .cells
        .0
        .iter()
        .map(|(name, nodes)| {
            let nodes: Vec<String> = nodes
                .iter()
                .map(|pairs| {
                    let ops: Vec<String> = pairs
                        .iter()
                        .map(|pr| format!("{}({})", pr.0, pr.1))
                        .collect();
                    ops.join(" + ")
                })
                .collect();
            format!("{}: {}", name.value, nodes.join(" | "))
        })
        .collect();
    if !g.layers.is_empty() {
        let layers: Vec<&str> = g.layers.iter().map(|l| l.value.as_str()).collect();
        parts.push(format!("layers: {}", layers.join(", ")));
    }
    parts.join("; ")
}

/// A file size: `1,048 bytes`, `1.2 MB`.
fn size(bytes: u64) -> String {
    if bytes < 1_000_000 {
        format!("{} bytes", crate::progress::grouped(bytes))
    } else {
        format!("{:.1} MB", bytes as f64 / 1e6)
    }
}

fn json<T: DeserializeOwned>(path: &Path) -> Option<T> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}
