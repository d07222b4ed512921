//! The run folder's layout: every artifact's path relative to the run folder, named once
//! here, and [`RunDir`], whose methods give each artifact's path in one run folder. The
//! retrained model's folder has its own layout, [`ModelDir`], because multi-trial
//! evaluators keep trained networks in the same form elsewhere.

use std::path::{Path, PathBuf};

/// Defines each artifact once: a constant with its path relative to the run folder, and a
/// [`RunDir`] method with its path in a run folder.
macro_rules! artifacts {
    ($($(#[$doc:meta])* $method:ident, $konst:ident = $path:literal;)*) => {
        $($(#[$doc])* pub const $konst: &str = $path;)*
        impl RunDir {
            $($(#[$doc])* pub fn $method(&self) -> PathBuf {
                self.0.join($konst)
            })*
        }
    };
}

/// A run folder, `exports/<name>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir(PathBuf);

impl RunDir {
    pub fn new(root: impl Into<PathBuf>) -> RunDir {
        RunDir(root.into())
    }

    /// The run folder itself.
    pub fn root(&self) -> &Path {
        &self.0
    }

    /// The retrained model's folder.
    pub fn model(&self) -> ModelDir {
        ModelDir::new(self.retrain())
    }
}

artifacts! {
    /// The resolved spec (every default written out) of the last run.
    spec, SPEC = "pipeline.ron";
    /// Per stage its cache key and the hashes of its inputs and outputs.
    lock, LOCK = "nas-pipe.lock";
    /// The lock that keeps a second writer out.
    busy, BUSY = ".nas-pipe.busy";
    /// Outputs set aside when their stage had to run again.
    stale, STALE = "stale";
    /// A budgeted run's plan ([`crate::run::budget`]).
    plan, PLAN = "plan.json";
    /// The trial ledger of a distributed multi-trial search (SQLite; beside the search
    /// folder so that setting a stale search aside never moves a file workers hold open).
    ledger, LEDGER = "ledger.sqlite";
    /// The search stage's folder.
    search, SEARCH = "search";
    /// The DARTS-family search's state, per-epoch figures and architecture weights.
    search_state, SEARCH_STATE = "search/state.json";
    /// The multi-trial search's evaluations.
    trials, TRIALS = "search/trials.json";
    /// The multi-trial search's evaluations as of the write before the last, to resume
    /// from when `search/trials.json` is damaged.
    trials_previous, TRIALS_PREVIOUS = "search/trials.previous.json";
    /// The multi-trial search's Pareto front.
    pareto, PARETO = "search/pareto.json";
    /// When each worker of a search on workers evaluated which trial.
    workers, WORKERS = "search/workers.json";
    /// The space a multi-trial search searched, libraries inline, so that the report can
    /// draw the returned architecture from the run folder alone.
    search_space, SEARCH_SPACE = "search/space.ron";
    /// Measured latencies of whole architectures, one file each.
    latency_cache, LATENCY_CACHE = "search/latency";
    /// The per-op latency table of a search space.
    latency_table, LATENCY_TABLE = "search/latency-table.json";
    /// The multi-trial search's supernet (weight-sharing evaluator).
    supernet, SUPERNET = "search/supernet.safetensors";
    /// The exported and profiled points of the front.
    front, FRONT = "search/front";
    /// The image sources' decoded-image cache (`data/cache/`) and skipped files
    /// (`data/skipped.json`).
    data, DATA = "data";
    /// The derived architecture.
    genotype, GENOTYPE = "genotype.ron";
    /// The retraining stage's folder ([`ModelDir`]).
    retrain, RETRAIN = "retrain";
    /// The exported model.
    model_onnx, MODEL_ONNX = "model.onnx";
    /// ONNX Runtime against Candle.
    validation, VALIDATION = "validation.json";
    /// Latency and throughput, as JSON and as Markdown.
    profile_json, PROFILE_JSON = "profile.json";
    profile_md, PROFILE_MD = "profile.md";
    /// The report, as HTML, as Markdown, and its numbers as JSON.
    report_html, REPORT_HTML = "report.html";
    report_md, REPORT_MD = "report.md";
    summary, SUMMARY = "summary.json";
}

/// A trained model's folder (a run's `retrain/`): its card, the space and genotype it was
/// built from, its weights, its state, per-epoch figures and evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelDir(PathBuf);

/// Defines each file of a model folder once: a constant with its name and a [`ModelDir`]
/// method with its path.
macro_rules! model_files {
    ($($(#[$doc:meta])* $method:ident, $konst:ident = $path:literal;)*) => {
        /// The files of a [`ModelDir`], by name.
        pub mod model_file {
            $($(#[$doc])* pub const $konst: &str = $path;)*
        }
        /// The files of the run's retrained model, relative to the run folder.
        pub mod retrained {
            $($(#[$doc])* pub const $konst: &str = concat!("retrain/", $path);)*
        }
        impl ModelDir {
            $($(#[$doc])* pub fn $method(&self) -> PathBuf {
                self.0.join(model_file::$konst)
            })*
        }
    };
}

impl ModelDir {
    pub fn new(root: impl Into<PathBuf>) -> ModelDir {
        ModelDir(root.into())
    }

    /// The folder itself.
    pub fn root(&self) -> &Path {
        &self.0
    }

    /// Weights given by name: a file of this folder, or any other path.
    pub fn weights(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

model_files! {
    /// The model card: the network and how it was trained.
    card, CARD = "model.ron";
    /// The space the network was built from, libraries inline.
    space, SPACE = "space.ron";
    /// The architecture.
    genotype, GENOTYPE = "genotype.ron";
    /// The training state (epochs done, the checkpoint).
    state, STATE = "state.json";
    /// Per-epoch figures.
    metrics, METRICS = "metrics.json";
    /// The test-set evaluation.
    evaluation, EVALUATION = "evaluation.json";
    /// The weights after the last epoch.
    last, LAST = "last.safetensors";
    /// The weights of the epoch with the best held-out accuracy.
    best, BEST = "best.safetensors";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retrained_files_are_the_model_folder_inside_the_run_folder() {
        let run = RunDir::new("exports/x");
        for (rel, path) in [
            (retrained::CARD, run.model().card()),
            (retrained::LAST, run.model().last()),
            (retrained::EVALUATION, run.model().evaluation()),
        ] {
            assert_eq!(run.root().join(rel), path);
        }
        assert_eq!(run.model().root(), run.retrain());
    }
}
