//! Evaluators: how a multi-trial search scores a candidate architecture, separate from the
//! strategies that propose them.
//!
//! - [`Tabular`]: a lookup in a benchmark table ([`Table`]), for studying
//!   strategies in seconds;
//! - [`Train`]: a short training from scratch on the pipeline's data (a proxy budget),
//!   scored on held-out training images; its weights are kept so that the Pareto front can
//!   be exported;
//! - [`shared::WeightSharing`]: one supernet trained by single-path sampling, each
//!   candidate scored by its path through the shared weights.
//!
//! Each gives a search signal (`accuracy`, in [0, 1]) and, where it has one, a report
//! signal the search never sees (a table's test column; the test-set accuracy).

pub mod shared;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::Device;

use crate::data::{self, BatchConfig, Batcher};
use crate::error::{Error, Result};
use crate::nets::model::Model;
use crate::nets::train::Recipe;
use crate::nets::train::Trainer;
use crate::run::Resolved;
use crate::space::Space;
use crate::space::genotype::{self, Genotype};
use crate::spec::pipeline;
use crate::stages::search::strategy::Arch;

pub use crate::data::Table;

/// A discrete architecture of a space, in every form the search needs.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub arch: Arch,
    pub genotype: Genotype,
    pub resolved: genotype::Architecture,
    /// The genotype's RON text hashed (16 hex digits): one key per architecture.
    pub key: String,
    /// Its NAS-Bench-201 string, in an NB201-shaped space.
    pub nb201: Option<String>,
}

impl Candidate {
    /// The candidate of `arch` in `space`.
    pub fn new(
        space: &Space,
        decisions: &crate::stages::search::strategy::Decisions,
        arch: Arch,
    ) -> Result<Candidate> {
        let genotype = decisions.genotype(space, &arch);
        let text = genotype.to_ron();
        let src = crate::spec::Source::from_text(Path::new("candidate"), text.clone());
        let resolved = genotype.resolve(&src, space)?;
        let key = blake3::hash(text.as_bytes()).to_hex()[..16].to_string();
        let nb201 = genotype::nb201_string(space, &genotype);
        Ok(Candidate {
            arch,
            genotype,
            resolved,
            key,
            nb201,
        })
    }
}

/// What an evaluation gives.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    /// The search signal, in [0, 1].
    pub accuracy: f64,
    /// The report signal, in [0, 1], when the evaluation gives it.
    pub report: Option<f64>,
}

/// Scores candidates.
pub trait Evaluator {
    fn evaluate(&mut self, c: &Candidate) -> Result<Score>;

    /// The report signal of an evaluated candidate that [`Evaluator::evaluate`] left out
    /// (the test-set accuracy of a trained one); `None` when there is none.
    fn report(&mut self, _c: &Candidate) -> Result<Option<f64>> {
        Ok(None)
    }

    /// The weights an evaluation trained, when it keeps them.
    fn weights(&self, _c: &Candidate) -> Option<PathBuf> {
        None
    }

    /// An evaluated candidate's trained network on the CPU, with what an exported file
    /// records about its input (normalisation and class names), when the evaluation kept
    /// its weights.
    fn trained(&self, _c: &Candidate) -> Result<Option<Trained>> {
        Ok(None)
    }

    /// What the report signal is, for tables.
    fn report_name(&self) -> String;
}

/// A trained candidate network, ready to export.
pub struct Trained {
    pub model: Model,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    pub classes: Vec<String>,
}

/// A table lookup: the search sees column `select`, the report column `report`.
pub struct Tabular {
    pub table: Arc<Table>,
    select: usize,
    report: usize,
    report_name: String,
}

impl Tabular {
    /// Errors name the table and list its columns when one is missing.
    pub fn new(table: Arc<Table>, select: &str, report: &str) -> Result<Tabular> {
        let col = |name: &str| {
            table.column(name).ok_or_else(|| {
                Error::Input(format!(
                    "{}: no column {name:?}; the table has {}",
                    table.path.display(),
                    table.columns.join(", ")
                ))
            })
        };
        Ok(Tabular {
            select: col(select)?,
            report: col(report)?,
            report_name: report.to_string(),
            table,
        })
    }
}

impl Evaluator for Tabular {
    fn evaluate(&mut self, c: &Candidate) -> Result<Score> {
        let arch = c.nb201.as_deref().ok_or_else(|| {
            Error::Input(
                "a tabular evaluator needs a space with NAS-Bench-201 strings (one cell type, \
                 one input, every edge kept)"
                    .into(),
            )
        })?;
        let row = self.table.row(arch).ok_or_else(|| {
            Error::Input(format!(
                "{}: architecture {arch} is not in the table",
                self.table.path.display()
            ))
        })?;
        let v = self.table.value(row, self.select);
        if !v.is_finite() {
            return Err(Error::Input(format!(
                "{}: architecture {arch} has no number in the searched column",
                self.table.path.display()
            )));
        }
        let r = self.table.value(row, self.report);
        Ok(Score {
            accuracy: v / 100.0,
            report: r.is_finite().then_some(r / 100.0),
        })
    }

    fn report_name(&self) -> String {
        self.report_name.clone()
    }
}

/// Short training from scratch: each candidate trained with the proxy recipe on the first
/// `train_portion` of the training images, scored on the rest; test-set accuracy on demand.
pub struct Train {
    space: Space,
    recipe: Recipe,
    device: Device,
    seed: u64,
    train: Batcher,
    val: Batcher,
    test: Batcher,
    classes: Vec<String>,
    norm: crate::data::Normalize,
    /// Where weights are kept (`<dir>/<key>.safetensors`); none keeps nothing.
    dir: Option<PathBuf>,
}

/// An evaluator's share of the data: the first `images` images of the training part (the
/// validation part carved off before), split by order into shuffled, augmented training
/// batches and unshuffled held-out batches, both normalised as the pipeline says; and the
/// test set.
pub(crate) struct Split {
    pub train: Batcher,
    pub held_out: Batcher,
    pub test: crate::data::Dataset,
    pub norm: crate::data::Normalize,
}

impl Split {
    pub(crate) fn load(
        p: &Resolved,
        images: Option<&crate::spec::Spanned<u32>>,
        portion: f64,
        batch_size: usize,
        augment: pipeline::Augment,
    ) -> Result<Split> {
        let seed = p.spec.seed;
        // The held-out part comes from the training part only: the validation part is
        // retraining's, the test part is evaluated only on demand.
        let parts = p.load_data(seed)?;
        let (train, test) = (parts.train, parts.test);
        let train = match images {
            Some(n) => train.first(n.value as usize),
            None => train,
        };
        train.check_input(p.search_space.input)?;
        test.check_input(p.search_space.input)?;
        let split = train.split(portion)?;
        let norm = crate::run::resolved::normalization(p, &train)?;
        let train_b = Batcher::new(
            train.clone(),
            split.first,
            norm.clone(),
            BatchConfig {
                batch_size,
                shuffle: true,
                augment,
                seed,
                stream: 1,
            },
        )?;
        let held_out = crate::run::resolved::eval_batcher(train, split.rest, norm.clone(), seed)?;
        Ok(Split {
            train: train_b,
            held_out,
            test,
            norm,
        })
    }
}

impl Train {
    /// Loads the pipeline's data for the evaluator of its `search` section.
    pub fn new(p: &Resolved, device: &Device, dir: Option<PathBuf>) -> Result<Train> {
        let Some(pipeline::Search::Trials { evaluator, .. }) = p.spec.search.as_deref() else {
            return Err(Error::Input(
                "the pipeline has no multi-trial search".into(),
            ));
        };
        let pipeline::Evaluator::Train {
            images,
            train_portion,
            recipe,
        } = &evaluator.value
        else {
            return Err(Error::Input("the pipeline's evaluator is not Train".into()));
        };
        let seed = p.spec.seed;
        let r = Recipe::from_spec(recipe)?;
        let split = Split::load(
            p,
            images.as_ref(),
            train_portion.value,
            r.batch_size,
            recipe.augment,
        )?;
        let all = split.test.all();
        let test = crate::run::resolved::eval_batcher(split.test, all, split.norm.clone(), seed)?;
        Ok(Train {
            space: p.search_space.clone(),
            recipe: r,
            device: device.clone(),
            seed,
            train: split.train,
            val: split.held_out,
            test,
            classes: p.classes.clone(),
            norm: split.norm,
            dir,
        })
    }

    fn model(&self, c: &Candidate) -> Result<Model> {
        let net = self.space.build(&c.resolved);
        Model::new(&net, &self.device, self.seed, false).map_err(ctx("building the network"))
    }
}

pub(crate) fn ctx(what: &str) -> impl Fn(candle_core::Error) -> Error + '_ {
    move |e| Error::Input(format!("{what}: {}", crate::error::candle_message(&e)))
}

impl Evaluator for Train {
    fn evaluate(&mut self, c: &Candidate) -> Result<Score> {
        let model = self.model(c)?;
        let mut trainer = Trainer::new(model, &self.recipe).map_err(ctx("building the trainer"))?;
        let epochs = self.recipe.epochs;
        let steps = self.train.batches_per_epoch();
        for epoch in 0..epochs {
            let mut rng = data::rng::derive(self.seed, epoch as u64, 7);
            let batches = self.train.epoch(epoch as u64, &self.device);
            for step in 0..steps {
                let b = batches.batch(step).map_err(ctx("making a batch"))?;
                let lr = self
                    .recipe
                    .rates
                    .at_step(epoch * steps + step, steps, epochs);
                let s = trainer
                    .step(
                        &b.images,
                        &b.labels,
                        lr,
                        self.recipe.drop_path_at(epoch),
                        &mut rng,
                    )
                    .map_err(ctx("training a candidate"))?;
                if !s.loss.is_finite() {
                    return Err(Error::Input(format!(
                        "training candidate {}: the loss became {} at epoch {}, step {step}; lower the evaluator's learning rate",
                        c.key,
                        s.loss,
                        epoch + 1
                    )));
                }
            }
        }
        let e = crate::nets::train::evaluate(
            trainer.deployed(),
            &self.val,
            &self.device,
            "proxy",
            &self.classes,
            false,
        )?;
        if let Some(dir) = &self.dir {
            crate::run::retrain::save_weights(
                trainer.deployed(),
                &dir.join(format!("{}.safetensors", c.key)),
            )?;
        }
        Ok(Score {
            accuracy: e.accuracy,
            report: None,
        })
    }

    fn report(&mut self, c: &Candidate) -> Result<Option<f64>> {
        let Some(path) = self.weights(c) else {
            return Ok(None);
        };
        let model = self.model(c)?;
        crate::run::retrain::load_weights(&model, &path)?;
        let e = crate::nets::train::evaluate(
            &model,
            &self.test,
            &self.device,
            "proxy",
            &self.classes,
            false,
        )?;
        Ok(Some(e.accuracy))
    }

    fn weights(&self, c: &Candidate) -> Option<PathBuf> {
        let p = self.dir.as_ref()?.join(format!("{}.safetensors", c.key));
        p.exists().then_some(p)
    }

    fn trained(&self, c: &Candidate) -> Result<Option<Trained>> {
        let Some(path) = self.weights(c) else {
            return Ok(None);
        };
        let net = self.space.build(&c.resolved);
        let model = Model::new(&net, &Device::Cpu, self.seed, false)
            .map_err(ctx("building the network"))?;
        crate::run::retrain::load_weights(&model, &path)?;
        Ok(Some(Trained {
            model,
            mean: self.norm.mean().to_vec(),
            std: self.norm.std().to_vec(),
            classes: self.classes.clone(),
        }))
    }

    fn report_name(&self) -> String {
        "test accuracy".into()
    }
}
