//! The stages of a run, in run order, and the part of the run folder each one owns.

use serde::{Deserialize, Serialize};

/// A stage of a run, in run order.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
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

    /// The files and folders of the run folder the stage writes, and nothing else does.
    pub fn territory(self) -> &'static [&'static str] {
        match self {
            Stage::Search => &[crate::run::dir::SEARCH],
            Stage::Derive => &[crate::run::dir::GENOTYPE],
            Stage::Retrain => &[crate::run::dir::RETRAIN],
            Stage::Export => &[crate::run::dir::MODEL_ONNX],
            Stage::Validate => &[crate::run::dir::VALIDATION],
            Stage::Profile => &[crate::run::dir::PROFILE_JSON, crate::run::dir::PROFILE_MD],
            Stage::Report => &[
                crate::run::dir::REPORT_HTML,
                crate::run::dir::REPORT_MD,
                crate::run::dir::SUMMARY,
            ],
        }
    }

    /// Whether the stage checkpoints and continues where a killed run stopped.
    pub fn resumes(self) -> bool {
        matches!(self, Stage::Search | Stage::Retrain)
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The resolved spec's file in the run folder.
pub const SPEC_FILE: &str = crate::run::dir::SPEC;
/// Where stale outputs are set aside.
pub const STALE_DIR: &str = crate::run::dir::STALE;
