//! The run report: reads the artifacts of a run folder (`exports/<name>/`) and renders them
//! into three files there: `report.html` (self-contained: inline CSS and SVG charts, no
//! script, no network reference), `report.md` (the same facts as Markdown tables, no charts)
//! and `summary.json` ([`Summary`], machine-readable).
//!
//! The report reads, never recomputes: no training, no ONNX Runtime. Every artifact is
//! optional (a pipeline may skip the search, validation or profiling); a section renders when
//! its files exist and says what is absent otherwise. A malformed artifact is an error
//! naming the file. The output is a function of the artifacts' bytes only — no wall-clock
//! time (the lock file's times are shown instead), no hash-map order — so regenerating a
//! report from the same artifacts gives byte-identical files.
//!
//! Submodules: `facts` (the tables and numbers both renderings show, as plain text), `charts`
//! (plotters: line charts, heatmaps, bars), `graph` (DOT to SVG with layout-rs, ids made
//! unique per drawing), `html` and `markdown` (the two renderings).

pub(crate) mod charts;
mod facts;
mod graph;
mod html;
mod markdown;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use crate::nets::train::Evaluation;
use crate::run::Stage;
use crate::run::lock::{self, Lock};
use crate::run::retrain::Trained;
use crate::run::validation::Validation;
use crate::space::genotype::Genotype;
use crate::spec::Source;
use crate::spec::pipeline::Pipeline;

/// The files the report reads, relative to the run folder (the pipeline records their
/// hashes as the report stage's inputs). Each is optional. Of `nas-pipe.lock` the report
/// reads every entry but the `report` stage's own, so recording the report stage in the
/// lock does not change the report.
pub const INPUTS: &[&str] = &[
    crate::run::dir::SPEC,
    lock::FILE,
    crate::run::dir::SEARCH_STATE,
    crate::run::dir::TRIALS,
    crate::run::dir::PARETO,
    crate::run::dir::SEARCH_SPACE,
    "genotype.ron",
    crate::run::dir::retrained::CARD,
    crate::run::dir::retrained::SPACE,
    crate::run::dir::retrained::GENOTYPE,
    crate::run::dir::retrained::METRICS,
    crate::run::dir::retrained::EVALUATION,
    crate::run::dir::VALIDATION,
    crate::run::dir::PROFILE_JSON,
    crate::run::dir::PLAN,
];

/// The files the report writes, relative to the run folder.
pub const HTML: &str = crate::run::dir::REPORT_HTML;
pub const MARKDOWN: &str = crate::run::dir::REPORT_MD;
pub const SUMMARY: &str = crate::run::dir::SUMMARY;

/// Version of the `summary.json` layout; bumped when a field changes meaning.
pub const SUMMARY_VERSION: u32 = 2;

/// The paths [`write()`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub html: PathBuf,
    pub md: PathBuf,
    pub summary: PathBuf,
}

/// The report in memory: what [`write()`] puts into the three files (`summary` serialized
/// as pretty JSON with a final newline).
#[derive(Debug, Clone)]
pub struct Rendered {
    pub html: String,
    pub md: String,
    pub summary: Summary,
}

/// `summary.json`: the run's facts and headline numbers, copied from the artifacts (never
/// recomputed). Every section is `None` when its artifact is absent. Fractions are in
/// [0, 1], times in seconds unless a field says milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Summary {
    /// Layout version ([`SUMMARY_VERSION`]).
    pub version: u32,
    /// The pipeline's name: from `pipeline.ron`, else the lock file, else the run folder's.
    pub pipeline: String,
    /// The pipeline's seed (`pipeline.ron`).
    pub seed: Option<u64>,
    /// The nas-pipe version that last wrote the lock file.
    pub nas_pipe_version: Option<String>,
    /// Where the Candle stages computed (the lock's `parts.device` of the first of search
    /// and retrain that has an entry), e.g. `cpu`.
    pub device: Option<String>,
    /// The ONNX Runtime version of the validation, else of the profile.
    pub ort_version: Option<String>,
    /// The machine the profile ran on (CPU model and cores).
    pub machine: Option<crate::runtime::measure::Machine>,
    pub headline: Headline,
    /// Every stage the lock file records, in stage order, but the report's own.
    pub stages: Vec<StageRun>,
    pub search: Option<SearchSummary>,
    /// A multi-trial search (`search/trials.json`, `search/pareto.json`).
    #[serde(default)]
    pub trials: Option<TrialsSummary>,
    /// `genotype.ron` as written.
    pub genotype: Option<String>,
    pub model: Option<ModelSummary>,
    pub retrain: Option<RetrainSummary>,
    pub evaluation: Option<EvaluationSummary>,
    /// `validation.json` as written.
    pub validation: Option<Validation>,
    pub latency: Option<LatencySummary>,
    /// The files of [`INPUTS`] the run folder does not have.
    pub missing: Vec<String>,
    /// A budgeted run: its plan (`plan.json`) against the stages' actual times.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetSummary>,
}

/// A budgeted run's plan and actual times, seconds. Actual times are the lock file's
/// stage times (a resumed stage counts the run that finished it) plus the measuring.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetSummary {
    pub total_s: f64,
    pub planned_s: f64,
    /// `None` until every planned stage has finished.
    pub actual_s: Option<f64>,
    pub calibration_s: f64,
    pub search: Option<BudgetPart>,
    pub retrain: Option<BudgetPart>,
    /// Export, validation, profiling (the report's own time is not known to it).
    pub after: BudgetPart,
}

/// One part of a budget: what was planned and what it took.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetPart {
    /// Epochs and images, for the search and retraining.
    pub epochs: Option<u32>,
    pub images: Option<u32>,
    pub planned_s: f64,
    /// `None` while a stage of it has not finished.
    pub actual_s: Option<f64>,
    /// Retraining's images over all its epochs as they ran (paced to the time left),
    /// when every epoch recorded them, and its epochs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ran_images: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ran_epochs: Option<u32>,
}

/// The numbers at the top of the report. A run that retrains nothing after a multi-trial
/// search shows its returned architecture's figures from `search/trials.json` where the
/// retrained network's would be: the report signal (e.g. a table's test accuracy), the
/// latency the search measured or predicted, its parameters and MACs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Headline {
    /// Test accuracy of the one test evaluation (`retrain/evaluation.json`), else the
    /// returned architecture's report signal. Never a validation figure.
    pub test_accuracy: Option<f64>,
    /// The validation verdict (`validation.json`).
    pub validation_passed: Option<bool>,
    /// Median latency of one image in ms: the profile's batch-1 row with the fewest threads,
    /// else the returned architecture's latency.
    pub latency_p50_ms_batch1: Option<f64>,
    /// Parameters and multiply-adds per image of the final network: the model card's,
    /// else the profile's, else the returned architecture's.
    pub params: Option<u64>,
    pub macs: Option<u64>,
}

/// One stage's record in the lock file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageRun {
    pub stage: Stage,
    pub status: lock::Status,
    /// RFC 3339 UTC.
    pub started: String,
    pub finished: Option<String>,
    /// Wall time of the run that finished the stage.
    pub seconds: f64,
    /// `parts.device`: `cpu`, `cuda:0`, `onnxruntime 1.32.0 cpu`, ...
    pub device: String,
    /// How the outputs came to be when the stage did not compute them.
    pub note: Option<String>,
}

/// The search (`search/state.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchSummary {
    pub epochs: usize,
    /// Sum of the epochs' times.
    pub seconds: f64,
    /// The last epoch's figures.
    pub train_loss: f64,
    pub train_acc: f64,
    pub val_loss: f64,
    pub val_acc: f64,
}

/// A multi-trial search (`search/trials.json`, `search/pareto.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrialsSummary {
    pub strategy: String,
    pub budget: usize,
    pub evaluations: usize,
    /// Proposals a constraint rejected.
    pub rejected: usize,
    /// Proposals whose evaluation failed for good on workers: (number, error).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<(usize, String)>,
    pub finished: bool,
    /// Sum of the proposals' times.
    pub seconds: f64,
    /// The returned architecture: the highest reward.
    pub best: Option<crate::run::trials::Record>,
    /// What the report signal is.
    pub report: String,
    /// The front's objectives and size.
    pub objectives: Vec<String>,
    pub front: usize,
    /// With a zero-cost prior: each proxy's Spearman ρ with the search signal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zero_cost: Option<crate::run::trials::Correlations>,
}

/// The final network (`retrain/model.ron`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSummary {
    pub params: u64,
    pub macs: u64,
    /// Channels, height, width.
    pub input: [u32; 3],
    pub classes: Vec<String>,
    /// Cell width and depth it was trained at (`None`: the space's own).
    pub channels: Option<u32>,
    pub layers: Option<u32>,
}

/// The retraining (`retrain/metrics.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrainSummary {
    pub epochs: usize,
    /// Sum of the epochs' training times.
    pub seconds: f64,
    /// The last epoch's training figures.
    pub train_loss: f64,
    pub train_acc: f64,
    /// The last evaluated epoch (0-based) and its validation figures.
    pub last_val: Option<EpochVal>,
    /// The evaluated epoch with the highest validation accuracy (the first of equals): the
    /// epoch of `best.safetensors`.
    pub best_val: Option<EpochVal>,
}

/// Validation figures of one epoch.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpochVal {
    /// 0-based.
    pub epoch: usize,
    pub loss: f64,
    pub acc: f64,
}

/// The final evaluation (`retrain/evaluation.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluationSummary {
    /// The weights file evaluated.
    pub weights: String,
    pub images: usize,
    pub accuracy: f64,
    pub loss: f64,
    /// Per class in label order.
    pub per_class: Vec<ClassAccuracy>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassAccuracy {
    pub class: String,
    /// Test images of the class (a row sum of the confusion matrix).
    pub images: u64,
    pub accuracy: f64,
}

/// The latency profile (`profile.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencySummary {
    pub ort_version: String,
    pub execution_provider: String,
    /// Bytes of the ONNX file.
    pub model_bytes: u64,
    /// Per batch size × thread count, as measured.
    pub rows: Vec<crate::run::profile::Row>,
}

/// The pipeline spec as the run recorded it.
struct PipelineFile {
    text: String,
    spec: Pipeline,
}

/// Everything the report reads; `None` where the file is absent.
struct Artifacts {
    /// The run folder's name (the pipeline's name when nothing else says it).
    folder_name: String,
    pipeline: Option<PipelineFile>,
    lock: Option<Lock>,
    search: Option<crate::run::search::State>,
    trials: Option<crate::run::trials::State>,
    front: Option<crate::run::trials::Front>,
    /// A search on workers: who evaluated what when (`search/workers.json`).
    timeline: Option<crate::run::trials::Timeline>,
    /// `genotype.ron`'s text (checked to parse as a genotype).
    genotype: Option<String>,
    trained: Option<Trained>,
    /// Without a retrained model: the space a multi-trial search searched
    /// (`search/space.ron`) and the derived genotype resolved in it, for the drawings.
    searched: Option<(crate::space::Space, crate::space::genotype::Architecture)>,
    metrics: Option<Vec<crate::run::retrain::EpochMetrics>>,
    evaluation: Option<Evaluation>,
    validation: Option<Validation>,
    profile: Option<crate::run::profile::Report>,
    /// How many images `skip_unreadable` left out (`data/skipped.json`).
    skipped: Option<usize>,
    /// A budgeted run's plan (`plan.json`).
    plan: Option<crate::run::budget::Plan>,
    /// Files of [`INPUTS`] that are absent.
    missing: Vec<String>,
}

/// The space a multi-trial search wrote (`space_path`) compiled at `input`, and the
/// genotype text (of `genotype_path`) resolved in it.
fn searched_arch(
    space_path: &Path,
    genotype_path: &Path,
    genotype: &str,
    input: Option<crate::spec::space::Input>,
) -> Result<(crate::space::Space, crate::space::genotype::Architecture)> {
    let ov = crate::space::Overrides {
        input,
        ..Default::default()
    };
    let space = crate::space::load(&mut crate::spec::Sources::default(), space_path, None, &ov)?;
    let src = Source::from_text(genotype_path, genotype.to_string());
    let arch = src.parse::<Genotype>()?.resolve(&src, &space)?;
    Ok((space, arch))
}

/// The file's text, `None` when it does not exist.
fn read_text(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// A JSON artifact, `None` when absent; a file that does not parse as `T` is an error
/// naming it and saying what it should hold.
fn read_json<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> Result<Option<T>> {
    let Some(text) = read_text(path)? else {
        return Ok(None);
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| Error::Data {
            path: path.to_path_buf(),
            message: format!("not a valid {what}: {e}"),
        })
}

fn malformed(path: &Path, message: String) -> Error {
    Error::Data {
        path: path.to_path_buf(),
        message,
    }
}

impl Artifacts {
    fn read(run_dir: &Path) -> Result<Artifacts> {
        if !run_dir.is_dir() {
            return Err(Error::Input(format!(
                "{}: not a run folder (no such directory)",
                run_dir.display()
            )));
        }
        let at = |rel: &str| run_dir.join(rel);
        let pipeline = match read_text(&at(crate::run::dir::SPEC))? {
            Some(text) => {
                let spec = Source::from_text(&at(crate::run::dir::SPEC), text.clone()).parse()?;
                Some(PipelineFile { text, spec })
            }
            None => None,
        };
        // The report's own entry is left out: the runner records the report stage in the
        // lock after (and while) writing it, and the report must not depend on that.
        let lock = if at(lock::FILE).exists() {
            let mut lock = Lock::read(run_dir, "")?;
            lock.stages.retain(|e| e.stage != Stage::Report);
            Some(lock)
        } else {
            None
        };
        let search: Option<crate::run::search::State> = read_json(
            &at(crate::run::dir::SEARCH_STATE),
            "search state (search/state.json)",
        )?;
        if let Some(s) = &search {
            check_history(&at(crate::run::dir::SEARCH_STATE), s)?;
        }
        let trials: Option<crate::run::trials::State> = read_json(
            &at(crate::run::dir::TRIALS),
            "search record (search/trials.json)",
        )?;
        let front: Option<crate::run::trials::Front> = read_json(
            &at(crate::run::dir::PARETO),
            "Pareto front (search/pareto.json)",
        )?;
        let timeline: Option<crate::run::trials::Timeline> = read_json(
            &at(crate::run::dir::WORKERS),
            "workers' timeline (search/workers.json)",
        )?;
        let genotype = match read_text(&at("genotype.ron"))? {
            Some(text) => {
                Source::from_text(&at("genotype.ron"), text.clone()).parse::<Genotype>()?;
                Some(text)
            }
            None => None,
        };
        let trained = if at(crate::run::dir::retrained::CARD).exists() {
            Some(crate::run::retrain::load_model(&at("retrain"))?)
        } else {
            None
        };
        let searched = match (&trained, &genotype) {
            (None, Some(g)) if at(crate::run::dir::SEARCH_SPACE).exists() => Some(searched_arch(
                &at(crate::run::dir::SEARCH_SPACE),
                &at("genotype.ron"),
                g,
                pipeline.as_ref().and_then(|p| p.spec.data.input()),
            )?),
            _ => None,
        };
        let metrics = read_json(
            &at(crate::run::dir::retrained::METRICS),
            "list of retraining epochs (retrain/metrics.json)",
        )?;
        let evaluation: Option<Evaluation> = read_json(
            &at(crate::run::dir::retrained::EVALUATION),
            "evaluation (retrain/evaluation.json)",
        )?;
        if let Some(e) = &evaluation {
            check_evaluation(&at(crate::run::dir::retrained::EVALUATION), e)?;
        }
        let validation = read_json(&at(crate::run::dir::VALIDATION), "validation result")?;
        let profile: Option<crate::run::profile::Report> =
            read_json(&at(crate::run::dir::PROFILE_JSON), "profile (profile.json)")?;
        if let Some(p) = &profile
            && p.version != crate::run::profile::SCHEMA_VERSION
        {
            return Err(malformed(
                &at(crate::run::dir::PROFILE_JSON),
                format!(
                    "profile layout version {} is not the {} this build reads",
                    p.version,
                    crate::run::profile::SCHEMA_VERSION
                ),
            ));
        }
        // A search writes either the DARTS-family state or the multi-trial record; the
        // other kind's files are not missing.
        let multi_trial = trials.is_some()
            || pipeline.as_ref().is_some_and(|p| {
                matches!(
                    p.spec.search.as_deref(),
                    Some(crate::spec::pipeline::Search::Trials { .. })
                )
            });
        let other_kind: &[&str] = if multi_trial {
            &[crate::run::dir::SEARCH_STATE]
        } else {
            &[
                crate::run::dir::TRIALS,
                crate::run::dir::PARETO,
                crate::run::dir::SEARCH_SPACE,
            ]
        };
        let budgeted = pipeline.as_ref().is_some_and(|p| p.spec.budget.is_some());
        let missing = INPUTS
            .iter()
            .filter(|f| !at(f).exists() && !other_kind.contains(f))
            .filter(|f| budgeted || **f != crate::run::dir::PLAN)
            .map(|f| f.to_string())
            .collect();
        let skipped = read_json::<Vec<serde_json::Value>>(
            &at(&format!(
                "{}/{}",
                crate::run::dir::DATA,
                crate::data::listing::SKIPPED
            )),
            "list of skipped images (data/skipped.json)",
        )?
        .map(|v| v.len());
        let plan = match crate::run::budget::read(run_dir)? {
            crate::run::budget::Found::None => None,
            crate::run::budget::Found::Plan(p) => Some(*p),
            crate::run::budget::Found::Unusable(why) => {
                return Err(malformed(&at(crate::run::dir::PLAN), why));
            }
        };
        let folder_name = run_dir
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| run_dir.display().to_string());
        Ok(Artifacts {
            folder_name,
            pipeline,
            lock,
            search,
            trials,
            front,
            timeline,
            genotype,
            trained,
            searched,
            metrics,
            evaluation,
            validation,
            profile,
            skipped,
            plan,
            missing,
        })
    }

    fn name(&self) -> String {
        if let Some(p) = &self.pipeline {
            return p.spec.name.value.clone();
        }
        match &self.lock {
            Some(l) if !l.pipeline.is_empty() => l.pipeline.clone(),
            _ => self.folder_name.clone(),
        }
    }

    /// The device of the first Candle stage the lock records.
    fn device(&self) -> Option<String> {
        let lock = self.lock.as_ref()?;
        [Stage::Search, Stage::Retrain]
            .iter()
            .find_map(|&s| lock.get(s).map(|e| e.parts.device.clone()))
    }

    fn ort_version(&self) -> Option<String> {
        self.validation
            .as_ref()
            .map(|v| v.ort_version.clone())
            .or_else(|| self.profile.as_ref().map(|p| p.ort_version.clone()))
    }

    /// The profile row of one image with the fewest threads.
    fn batch1_row(&self) -> Option<&crate::run::profile::Row> {
        self.profile
            .as_ref()?
            .rows
            .iter()
            .filter(|r| r.batch == 1)
            .min_by_key(|r| r.threads)
    }

    /// The multi-trial search's returned architecture, when nothing was retrained: the
    /// headline then shows its figures from the search.
    fn returned(&self) -> Option<&crate::run::trials::Record> {
        if self.trained.is_some() || self.metrics.is_some() {
            return None;
        }
        self.trials.as_ref()?.best()
    }

    fn headline(&self) -> Headline {
        let returned = self.returned();
        Headline {
            test_accuracy: self
                .evaluation
                .as_ref()
                .map(|e| e.accuracy)
                .or_else(|| returned.and_then(|r| r.report)),
            validation_passed: self.validation.as_ref().map(|v| v.passed),
            latency_p50_ms_batch1: self
                .batch1_row()
                .map(|r| r.latency_ms.p50)
                .or_else(|| returned.and_then(|r| r.latency_ms)),
            params: self
                .trained
                .as_ref()
                .map(|t| t.card.params)
                .or_else(|| self.profile.as_ref().and_then(|p| p.model.params))
                .or_else(|| returned.map(|r| r.params)),
            macs: self
                .trained
                .as_ref()
                .map(|t| t.card.macs)
                .or_else(|| self.profile.as_ref().and_then(|p| p.model.macs))
                .or_else(|| returned.map(|r| r.macs)),
        }
    }

    fn summary(&self) -> Summary {
        let stages = self
            .lock
            .as_ref()
            .map(|l| {
                l.stages
                    .iter()
                    .map(|e| StageRun {
                        stage: e.stage,
                        status: e.status,
                        started: e.started.clone(),
                        finished: e.finished.clone(),
                        seconds: e.seconds,
                        device: e.parts.device.clone(),
                        note: e.note.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let search = self.search.as_ref().and_then(|s| {
            let last = s.metrics.last()?;
            Some(SearchSummary {
                epochs: s.metrics.len(),
                seconds: s.metrics.iter().map(|m| m.seconds).sum(),
                train_loss: last.train_loss,
                train_acc: last.train_acc,
                val_loss: last.val_loss,
                val_acc: last.val_acc,
            })
        });
        let model = self.trained.as_ref().map(|t| ModelSummary {
            params: t.card.params,
            macs: t.card.macs,
            input: [t.card.input.channels, t.card.input.size, t.card.input.size],
            classes: t.card.classes.clone(),
            channels: t.card.channels,
            layers: t.card.layers,
        });
        let retrain = self.metrics.as_ref().and_then(|m| {
            let last = m.last()?;
            let vals: Vec<EpochVal> = m
                .iter()
                .filter_map(|e| {
                    Some(EpochVal {
                        epoch: e.epoch,
                        loss: e.val_loss?,
                        acc: e.val_acc?,
                    })
                })
                .collect();
            let best = crate::run::retrain::best_epoch(m)
                .and_then(|(epoch, _)| vals.iter().find(|v| v.epoch == epoch).copied());
            Some(RetrainSummary {
                epochs: m.len(),
                seconds: m.iter().map(|e| e.seconds).sum(),
                train_loss: last.train_loss,
                train_acc: last.train_acc,
                last_val: vals.last().copied(),
                best_val: best,
            })
        });
        let evaluation = self.evaluation.as_ref().map(|e| EvaluationSummary {
            weights: e.weights.clone(),
            images: e.images,
            accuracy: e.accuracy,
            loss: e.loss,
            per_class: e
                .classes
                .iter()
                .enumerate()
                .map(|(k, c)| ClassAccuracy {
                    class: c.clone(),
                    images: e.confusion[k].iter().sum(),
                    accuracy: e.per_class_accuracy[k],
                })
                .collect(),
        });
        let latency = self.profile.as_ref().map(|p| LatencySummary {
            ort_version: p.ort_version.clone(),
            execution_provider: p.execution_provider.clone(),
            model_bytes: p.model.file_bytes,
            rows: p.rows.clone(),
        });
        Summary {
            version: SUMMARY_VERSION,
            pipeline: self.name(),
            seed: self.pipeline.as_ref().map(|p| p.spec.seed),
            nas_pipe_version: self.lock.as_ref().map(|l| l.nas_pipe_version.clone()),
            device: self.device(),
            ort_version: self.ort_version(),
            machine: self.profile.as_ref().map(|p| p.machine.clone()),
            headline: self.headline(),
            stages,
            search,
            trials: self.trials.as_ref().map(|t| TrialsSummary {
                strategy: t.strategy.clone(),
                budget: t.budget,
                evaluations: t.evaluations(),
                rejected: t.records.iter().filter(|r| r.rejected.is_some()).count(),
                failed: t
                    .records
                    .iter()
                    .filter_map(|r| Some((r.n, r.failed.clone()?)))
                    .collect(),
                finished: t.finished,
                seconds: t.records.iter().map(|r| r.seconds).sum(),
                best: t.best().cloned(),
                report: t.report.clone(),
                objectives: self
                    .front
                    .as_ref()
                    .map(|f| f.objectives.clone())
                    .unwrap_or_default(),
                front: self.front.as_ref().map_or(0, |f| f.points.len()),
                zero_cost: crate::run::trials::Correlations::of(&t.records),
            }),
            genotype: self.genotype.clone(),
            model,
            retrain,
            evaluation,
            validation: self.validation.clone(),
            latency,
            missing: self.missing.clone(),
            budget: self.budget(),
        }
    }
}

impl Artifacts {
    /// The stage's finished time from the lock file.
    fn seconds_of(&self, stage: Stage) -> Option<f64> {
        let e = self
            .lock
            .as_ref()?
            .stages
            .iter()
            .find(|e| e.stage == stage)?;
        e.finished.as_ref().map(|_| e.seconds)
    }

    /// The summed finished times of `stages`, `None` if one has not finished.
    fn seconds_of_all(&self, stages: &[Stage]) -> Option<f64> {
        stages.iter().map(|s| self.seconds_of(*s)).sum()
    }

    fn budget(&self) -> Option<BudgetSummary> {
        let plan = self.plan.as_ref()?;
        let has = |s: Stage| {
            self.lock
                .as_ref()
                .is_some_and(|l| l.stages.iter().any(|e| e.stage == s))
        };
        let after: Vec<Stage> = [Stage::Export, Stage::Validate, Stage::Profile]
            .into_iter()
            .filter(|s| has(*s))
            .collect();
        let search = plan.search.map(|p| BudgetPart {
            epochs: Some(p.epochs),
            images: Some(p.images),
            planned_s: p.seconds,
            actual_s: self.seconds_of_all(&[Stage::Search, Stage::Derive]),
            ran_images: None,
            ran_epochs: None,
        });
        let retrain = plan.retrain.map(|p| BudgetPart {
            epochs: Some(p.epochs),
            images: Some(p.images),
            planned_s: p.seconds,
            actual_s: self.seconds_of(Stage::Retrain),
            ran_images: self.metrics.as_ref().and_then(|m| {
                m.iter()
                    .map(|e| (e.images > 0).then_some(e.images as u64))
                    .sum()
            }),
            ran_epochs: self.metrics.as_ref().map(|m| m.len() as u32),
        });
        let after = BudgetPart {
            epochs: None,
            images: None,
            planned_s: plan.after_s,
            actual_s: self.seconds_of_all(&after),
            ran_images: None,
            ran_epochs: None,
        };
        let actual_s = [&search, &retrain]
            .into_iter()
            .flatten()
            .chain([&after])
            .map(|p| p.actual_s)
            .sum::<Option<f64>>()
            .map(|s| s + plan.calibration_s);
        Some(BudgetSummary {
            total_s: plan.total_s,
            planned_s: plan.planned_s(),
            actual_s,
            calibration_s: plan.calibration_s,
            search,
            retrain,
            after,
        })
    }
}

/// Every snapshot of the op-weight history has the shape of the first.
fn check_history(path: &Path, s: &crate::run::search::State) -> Result<()> {
    let Some(first) = s.history.first() else {
        return Ok(());
    };
    let shape = |h: &crate::run::search::AlphaSnapshot| {
        (
            h.cells
                .iter()
                .map(|(n, w)| (n.clone(), w.iter().map(Vec::len).collect::<Vec<_>>()))
                .collect::<Vec<_>>(),
            h.layers.iter().map(Vec::len).collect::<Vec<_>>(),
        )
    };
    let want = shape(first);
    if want.0.iter().any(|(_, w)| w.contains(&0)) || want.1.contains(&0) {
        return Err(malformed(
            path,
            "op-weight history: an edge or layer has no candidates".into(),
        ));
    }
    for h in &s.history[1..] {
        if shape(h) != want {
            return Err(malformed(
                path,
                format!(
                    "op-weight history: the snapshot of epoch {} has another shape than the \
                     first (cells, edges and candidates must stay the same)",
                    h.epoch + 1
                ),
            ));
        }
    }
    Ok(())
}

/// The confusion matrix is classes × classes and there is an accuracy per class.
fn check_evaluation(path: &Path, e: &Evaluation) -> Result<()> {
    let n = e.classes.len();
    if e.confusion.len() != n || e.confusion.iter().any(|r| r.len() != n) {
        return Err(malformed(
            path,
            format!("the confusion matrix is not {n} × {n} ({n} classes are named)"),
        ));
    }
    if e.per_class_accuracy.len() != n {
        return Err(malformed(
            path,
            format!(
                "{} per-class accuracies for {n} classes",
                e.per_class_accuracy.len()
            ),
        ));
    }
    Ok(())
}

/// Reads the artifacts of `run_dir` and renders the report in memory.
pub fn render(run_dir: &Path) -> Result<Rendered> {
    let a = Artifacts::read(run_dir)?;
    let summary = a.summary();
    let html = html::render(&a, &summary)?;
    let md = markdown::render(&a, &summary);
    Ok(Rendered { html, md, summary })
}

/// Reads the artifacts of `run_dir`, renders them and writes `report.html`, `report.md`
/// and `summary.json` there atomically; returns the three paths.
pub fn write(run_dir: &Path) -> Result<Written> {
    let read: Vec<std::path::PathBuf> = INPUTS.iter().map(|f| run_dir.join(f)).collect();
    crate::run::outputs::verify(run_dir, &read)?;
    let r = render(run_dir)?;
    let written = Written {
        html: run_dir.join(HTML),
        md: run_dir.join(MARKDOWN),
        summary: run_dir.join(SUMMARY),
    };
    let mut json =
        serde_json::to_string_pretty(&r.summary).map_err(|e| Error::Input(e.to_string()))?;
    json.push('\n');
    write_atomic(&written.html, r.html.as_bytes())?;
    write_atomic(&written.md, r.md.as_bytes())?;
    write_atomic(&written.summary, json.as_bytes())?;
    Ok(written)
}
