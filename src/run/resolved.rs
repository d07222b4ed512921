//! The resolved pipeline: what `crate::pipeline::resolve` makes of a checked spec and every
//! stage reads.

use std::path::PathBuf;

use crate::data::{BatchConfig, Batcher, Dataset, Normalize};
use crate::error::Result;
use crate::nets::train::EVAL_BATCH;
use crate::space::Space;
use crate::space::genotype::{Architecture, Genotype};
use crate::spec::pipeline::{Normalization, Pipeline};
use crate::spec::space::SearchSpace;

/// A pipeline after its one validation step: values checked, paths resolved, the space
/// compiled at the search and retrain sizes, a fixed genotype resolved.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The spec with every default filled in.
    pub spec: Pipeline,
    /// The pipeline file's id in the sources.
    pub file: u32,
    /// The folder of the pipeline file, which relative paths in it are relative to.
    pub dir: PathBuf,
    /// A tabular evaluator's table, loaded and checked against the space.
    pub table: Option<std::sync::Arc<crate::data::Table>>,
    pub space_path: PathBuf,
    /// The data directory of a built-in set, resolved against the pipeline's folder; the
    /// pipeline's folder for the image sources, whose paths are relative to it; none for
    /// synthetic data.
    pub data_dir: Option<PathBuf>,
    /// The input the data gives (channels, size, classes): from the spec, or for the image
    /// sources from a listing of their files.
    pub input: crate::spec::space::Input,
    /// The class names, in label order.
    pub classes: Vec<String>,
    /// A key of the data's files (list, sizes, modification times) for the image sources;
    /// empty for the built-in sets. Part of the stage keys.
    pub data_key: String,
    /// The run folder's `data/` folder (decoded-image cache, skipped files), once a run
    /// has a folder.
    pub data_folder: Option<PathBuf>,
    /// The space at the search network's size.
    pub search_space: Space,
    /// The space at the retrained network's size.
    pub retrain_space: Space,
    /// The fixed architecture, when the pipeline gives one.
    pub genotype: Option<(Genotype, Architecture)>,
    /// The text of every file the space was read from (the space and the libraries it
    /// includes), for cache keys.
    pub space_texts: Vec<String>,
    /// The space as read, libraries included inline: written beside retrained weights so
    /// that the model can be rebuilt from the run folder alone.
    pub space_raw: SearchSpace,
}

impl Resolved {
    /// Whether `stage` reads the data set's images ([`reads_images_in`]).
    pub fn reads_images_in(&self, stage: crate::run::Stage) -> bool {
        reads_images_in(&self.spec, stage)
    }

    /// The pipeline's data as its three parts ([`crate::data::split_source`]), read with
    /// `seed`: an image source is decoded once and then loaded from the cache in the run
    /// folder's `data/` (when the run has a folder), its skipped files listed there.
    pub fn load_data(&self, seed: u64) -> Result<crate::data::Splits> {
        let opts = crate::data::ReadOptions {
            folder: self.data_folder.clone(),
            progress: true,
        };
        let source =
            crate::data::read_with(&self.spec.data, self.data_dir.as_deref(), seed, &opts)?;
        crate::data::split_source(source, seed, &self.spec.split)
    }

    /// This pipeline working in the run folder `run_dir`: its image sources are cached in
    /// `run_dir/data/` ([`Self::load_data`]). Every command that works in a run folder
    /// (`run` and each single-stage command) goes through it, so they share one cache.
    pub fn in_run_folder(&self, run_dir: &std::path::Path) -> Resolved {
        Resolved {
            data_folder: Some(crate::run::RunDir::new(run_dir).data()),
            ..self.clone()
        }
    }

    /// Whether any stage reads the data set's images.
    pub fn reads_images(&self) -> bool {
        reads_images(&self.spec)
    }
}

/// Whether `stage` of `spec` reads the data set's images: a DARTS search, a multi-trial
/// search that trains, retraining and validation do; a tabular search reads none.
pub fn reads_images_in(spec: &Pipeline, stage: crate::run::Stage) -> bool {
    use crate::run::Stage;
    use crate::spec::pipeline::{Evaluator, Search};
    match stage {
        Stage::Search => match spec.search.as_deref() {
            Some(Search::Darts { .. }) => true,
            Some(Search::Trials { evaluator, .. }) => {
                !matches!(evaluator.value, Evaluator::Tabular { .. })
            }
            None => false,
        },
        Stage::Retrain => spec.retrain.is_some(),
        Stage::Validate => spec.validate.is_some(),
        _ => false,
    }
}

/// Whether any stage of `spec` reads the data set's images.
pub fn reads_images(spec: &Pipeline) -> bool {
    crate::run::Stage::ALL
        .into_iter()
        .any(|s| reads_images_in(spec, s))
}

/// The normalisation the pipeline declares, fitted on `train` when computed.
pub fn normalization(p: &Resolved, train: &Dataset) -> Result<Normalize> {
    match &p.spec.normalize.value {
        Normalization::Computed => Normalize::fit(train, &train.all()),
        Normalization::Given { mean, std } => Normalize::new(mean.clone(), std.clone()),
    }
}

/// Unshuffled, unaugmented batches of `indices` of `data`, for evaluation.
pub fn eval_batcher(
    data: Dataset,
    indices: Vec<usize>,
    norm: Normalize,
    seed: u64,
) -> Result<Batcher> {
    Batcher::new(
        data,
        indices,
        norm,
        BatchConfig {
            batch_size: EVAL_BATCH,
            shuffle: false,
            augment: Default::default(),
            seed,
            stream: 0,
        },
    )
}
