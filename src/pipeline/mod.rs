//! The staged run of a pipeline (`nas-pipe run`): the stages in order, their cache keys,
//! the run folder and its lock file, resume after a crash, and `nas-pipe status`.

pub mod lock;

use serde::{Deserialize, Serialize};

/// A stage of a run, in run order.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Weight-sharing search of the architecture weights (`search/`).
    Search,
    /// The discrete genotype, from the search's architecture weights or the pipeline's
    /// fixed `genotype` (`genotype.ron`).
    Derive,
    /// The final network trained from scratch (`retrain/`).
    Retrain,
    /// The ONNX model (`model.onnx`).
    Export,
    /// ONNX Runtime against Candle on held-out images (`validation.json`).
    Validate,
    /// ONNX Runtime latency and throughput (`profile.json`, `profile.md`).
    Profile,
    /// The report (`report.html`, `report.md`, `summary.json`).
    Report,
}

impl Stage {
    pub const ALL: [Stage; 7] = [
        Stage::Search,
        Stage::Derive,
        Stage::Retrain,
        Stage::Export,
        Stage::Validate,
        Stage::Profile,
        Stage::Report,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Search => "search",
            Stage::Derive => "derive",
            Stage::Retrain => "retrain",
            Stage::Export => "export",
            Stage::Validate => "validate",
            Stage::Profile => "profile",
            Stage::Report => "report",
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
