//! The retrained model's folder (`retrain/`): its card (`model.ron`: the network and how it
//! was trained), the space and genotype it was built from, its weights, its per-epoch
//! figures and its test evaluation. Read by every stage after retraining.

use crate::run::PIPELINE;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::nets::model::Model;
use crate::run::checkpoint;
use crate::run::lock::FileHash;
use crate::run::metrics::CurvePoint;
use crate::space::Overrides;
use crate::space::discrete::Net;
use crate::space::genotype::{self, Genotype};
use crate::spec::Sources;
use crate::spec::space::Input;

/// Version of `model.ron`.
pub const CARD_VERSION: u32 = 1;

/// One epoch's figures.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EpochMetrics {
    /// 0-based here; written counting from 1, as the log and the report count.
    #[serde(with = "one_based")]
    pub epoch: usize,
    /// Learning rate of the epoch's first and last step.
    pub lr: (f64, f64),
    pub drop_path: f64,
    pub train_loss: f64,
    pub train_acc: f64,
    /// On the validation part, in epochs that evaluate (`best.safetensors` is the epoch
    /// with the highest `val_acc`, the first of equals).
    pub val_loss: Option<f64>,
    pub val_acc: Option<f64>,
    /// Training time of the epoch (evaluation excluded).
    pub seconds: f64,
    pub images_per_sec: f64,
    /// Training images of the epoch (0 in files written before it was recorded).
    #[serde(default)]
    pub images: usize,
    /// The training's epochs when this one ran: the spec's, or as a budget's pacing set
    /// them (0 in files written before it was recorded).
    #[serde(default)]
    pub epochs: usize,
    /// Time of the epoch's validation, in epochs that evaluate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_seconds: Option<f64>,
    /// Training loss and accuracy within the epoch.
    #[serde(default)]
    pub curve: Vec<CurvePoint>,
}

/// An epoch index written counting from 1 (`epoch: 1` is the first epoch).
mod one_based {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(epoch: &usize, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(*epoch as u64 + 1)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
        let n = u64::deserialize(d)?;
        n.checked_sub(1)
            .map(|e| e as usize)
            .ok_or_else(|| serde::de::Error::custom("epochs count from 1; got epoch 0"))
    }
}

/// The epoch `best.safetensors` holds and its validation accuracy: the first epoch with the
/// highest `val_acc`; `None` when no epoch was evaluated.
pub fn best_epoch(metrics: &[EpochMetrics]) -> Option<(usize, f64)> {
    metrics
        .iter()
        .filter_map(|m| Some((m.epoch, m.val_acc?)))
        .fold(None, |b, (e, a)| match b {
            Some((_, ba)) if ba >= a => b,
            _ => Some((e, a)),
        })
}

/// `retrain/model.ron`: what the weights files need to become a network again.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelCard {
    pub version: u32,
    /// The space file (libraries inline), relative to the card.
    pub space: String,
    /// The genotype file, relative to the card.
    pub genotype: String,
    pub input: Input,
    /// Cell width and depth the space is compiled with (`None`: the space's own).
    pub channels: Option<u32>,
    pub layers: Option<u32>,
    /// Per-channel mean and std the images are normalised with (after scaling to [0, 1]).
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// Class names in label order.
    pub classes: Vec<String>,
    /// Parameters and multiply-adds of the network (auxiliary head excluded).
    pub params: u64,
    pub macs: u64,
}

/// Writes the model's parameters and buffers under their own names, the auxiliary head
/// (training only) left out: the deployable network.
pub fn save_weights(model: &Model, path: &Path) -> Result<()> {
    let mut tensors = HashMap::new();
    checkpoint::put(&mut tensors, "", &model.store.params());
    checkpoint::put(&mut tensors, "", &model.store.buffers());
    tensors.retain(|k, _| !k.starts_with("aux."));
    checkpoint::save(path, &tensors)
}

/// Loads a weights file into `model` (built without the auxiliary head): every parameter
/// and buffer must be there with its shape, and nothing else.
pub fn load_weights(model: &Model, path: &Path) -> Result<()> {
    let c = checkpoint::load(path, model.store.device())?;
    let mut vars = model.store.params();
    vars.extend(model.store.buffers());
    c.set_exact(&vars)
}

/// A retrained model read back from its folder.
pub struct Trained {
    pub card: ModelCard,
    pub net: Net,
    pub genotype: Genotype,
    /// The space at the trained size, and the genotype resolved in it.
    pub space: crate::space::Space,
    pub arch: genotype::Architecture,
}

/// Rebuilds the network described by `dir/model.ron` (with its `space.ron` and
/// `genotype.ron`), with nothing else: no pipeline, no original space file.
pub fn load_model(dir: &Path) -> Result<Trained> {
    let mut sources = Sources::default();
    let (_, card): (u32, ModelCard) = sources.load(&dir.join(crate::run::dir::model_file::CARD))?;
    if card.version != CARD_VERSION {
        return Err(Error::Input(format!(
            "{}: model card version {} is not the {CARD_VERSION} this build reads",
            dir.join(crate::run::dir::model_file::CARD).display(),
            card.version
        )));
    }
    let space_path = dir.join(&card.space);
    let ov = Overrides {
        input: Some(card.input),
        channels: card.channels.map(|c| (c, Default::default())),
        layers: card.layers.map(|l| (l, Default::default())),
    };
    let space = crate::space::load(&mut sources, &space_path, None, &ov)?;
    let gpath = dir.join(&card.genotype);
    let (gsrc, genotype) = Genotype::from_arg(&gpath.display().to_string(), &space)?;
    let arch = genotype.resolve(&gsrc, &space)?;
    let net = space.build(&arch);
    Ok(Trained {
        card,
        net,
        genotype,
        space,
        arch,
    })
}

/// Refuses (exit code 2) to read the model in `dir` (the retrain folder of the run folder
/// `run_dir`) with the weights `weights` when the card, space, genotype or weights differ
/// from the hashes the lock file recorded, or the weights from the hash the training
/// recorded in its `state.json` (which covers weights `nas-pipe train` wrote).
pub fn verify_model(run_dir: &Path, dir: &Path, weights: &Path) -> Result<()> {
    use crate::run::dir::model_file::{CARD, GENOTYPE, SPACE};
    let mut files: Vec<PathBuf> = [CARD, SPACE, GENOTYPE]
        .iter()
        .map(|f| dir.join(f))
        .collect();
    files.push(weights.to_path_buf());
    crate::run::outputs::verify(run_dir, &files)?;
    verify_weights(dir, weights)
}

/// The part of the training's `state.json` readers check weights against.
#[derive(Deserialize)]
struct Recorded {
    /// Weights file name → its hash when the training wrote it.
    #[serde(default)]
    weights: BTreeMap<String, FileHash>,
}

/// Refuses weights of the model folder `dir` whose bytes differ from the hash its
/// `state.json` recorded; weights elsewhere, or that it does not record, are not checked.
fn verify_weights(dir: &Path, weights: &Path) -> Result<()> {
    let Some(name) = weights
        .strip_prefix(dir)
        .ok()
        .and_then(|r| r.to_str())
        .map(str::to_string)
    else {
        return Ok(());
    };
    let state = dir.join(crate::run::dir::model_file::STATE);
    let Some(recorded) = std::fs::read(&state)
        .ok()
        .and_then(|b| serde_json::from_slice::<Recorded>(&b).ok())
        .and_then(|r| r.weights.get(&name).cloned())
    else {
        return Ok(());
    };
    match FileHash::of(weights)? {
        Some(now) if now != recorded => Err(Error::Input(format!(
            "{} changed since the training wrote it (blake3 {}…, {} bytes; {} recorded {}…, {} \
             bytes); nothing was read. Restore the file, or train again: `nas-pipe run {PIPELINE} \
             --from retrain` (which keeps {} in {}/), or move that folder away and run \
             `nas-pipe train`",
            weights.display(),
            crate::run::outputs::short(&now.blake3),
            now.bytes,
            state.display(),
            crate::run::outputs::short(&recorded.blake3),
            recorded.bytes,
            dir.display(),
            crate::run::STALE_DIR
        ))),
        _ => Ok(()),
    }
}

/// A `--weights` argument: a path as given when it exists (or is absolute), else a file
/// of the retrain folder `dir` (`last.safetensors`, `best.safetensors`).
pub fn weights_path(dir: &Path, weights: &str) -> PathBuf {
    let given = Path::new(weights);
    if given.is_absolute() || given.exists() {
        given.to_path_buf()
    } else {
        dir.join(weights)
    }
}
