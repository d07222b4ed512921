//! The retrain stage: trains the final network of a genotype from scratch on the full
//! training set, evaluates it on the test set, and leaves in the run folder everything
//! needed to rebuild, evaluate and export it.
//!
//! Layout under `exports/<name>/retrain/`:
//! - `model.ron`: the model card (input, width, depth, normalisation, class names, the files
//!   below); `space.ron` (the space, libraries inline) and `genotype.ron` beside it. These
//!   three rebuild the network with nothing else ([`load_model`]);
//! - `last.safetensors`, `best.safetensors`: parameters and BN statistics under their
//!   hierarchical names, after the last epoch and after the epoch with the best test
//!   accuracy (selected on the test set: informational, export uses `last`);
//! - `checkpoint-<epoch>.safetensors` and `state.json`: weights, buffers and momentum after
//!   the last finished epoch, the spec hash and the metrics so far (resume);
//! - `metrics.json`: per epoch, loss, accuracy, learning rate, drop-path probability,
//!   seconds and images/s;
//! - `evaluation.json`: the final test accuracy, loss, confusion matrix and per-class
//!   accuracy of `last`.
//!
//! Randomness of epoch `e` (shuffle, augmentation, drop-path masks) derives from (seed, e),
//! so a resumed training ends with the same weights as an uninterrupted one on CPU.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::data::{self, BatchConfig, Batcher, Dataset, Normalize};
use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use crate::nets::model::{Mode, Model};
use crate::nets::optim::{self, Sgd};
use crate::run::Resolved;
use crate::run::checkpoint::{self, StateFile};
use crate::run::metrics::{Curve, CurvePoint};
use crate::space::Overrides;
use crate::space::discrete::Net;
use crate::space::genotype::{self, Genotype};
use crate::spec::Sources;
use crate::spec::pipeline::{Normalization, Optimizer, Retrain};
use crate::spec::space::Input;

/// Version of `state.json`.
pub const STATE_VERSION: u32 = 1;
/// Version of `model.ron`.
pub const CARD_VERSION: u32 = 1;
/// Drop-path masks draw from this stream of the epoch's generator.
const DROP_PATH_STREAM: u64 = 3;
/// Images per batch when evaluating (the result does not depend on it).
/// Images per batch when evaluating.
pub const EVAL_BATCH: usize = 64;

/// One epoch's figures.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EpochMetrics {
    pub epoch: usize,
    /// Learning rate of the epoch's first and last step.
    pub lr: (f64, f64),
    pub drop_path: f64,
    pub train_loss: f64,
    pub train_acc: f64,
    /// On the test set, in epochs that evaluate.
    pub test_loss: Option<f64>,
    pub test_acc: Option<f64>,
    /// Training time of the epoch (evaluation excluded).
    pub seconds: f64,
    pub images_per_sec: f64,
    /// Training loss and accuracy within the epoch.
    #[serde(default)]
    pub curve: Vec<CurvePoint>,
}

/// `retrain/state.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    pub spec_hash: String,
    pub epochs_done: usize,
    pub checkpoint: String,
    pub metrics: Vec<EpochMetrics>,
    /// Epoch (0-based) and test accuracy of `best.safetensors`.
    pub best: Option<(usize, f64)>,
}

impl StateFile for State {
    const VERSION: u32 = STATE_VERSION;
    fn version(&self) -> u32 {
        self.version
    }
    fn spec_hash(&self) -> &str {
        &self.spec_hash
    }
    fn advance(&mut self, epochs_done: usize, checkpoint: String) -> String {
        self.epochs_done = epochs_done;
        std::mem::replace(&mut self.checkpoint, checkpoint)
    }
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

/// A test-set evaluation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Evaluation {
    /// The weights file evaluated.
    pub weights: String,
    pub images: usize,
    pub loss: f64,
    pub accuracy: f64,
    pub classes: Vec<String>,
    /// `confusion[true][predicted]`.
    pub confusion: Vec<Vec<u64>>,
    pub per_class_accuracy: Vec<f64>,
}

/// What a finished training returns.
pub struct Outcome {
    pub metrics: Vec<EpochMetrics>,
    pub evaluation: Option<Evaluation>,
    pub seconds: f64,
    pub dir: PathBuf,
}

/// Options that are not part of the spec.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Stop after this many epochs in total (tests simulate a killed run with it).
    pub stop_after: Option<usize>,
    /// Draw a progress bar (when stderr is a terminal).
    pub progress: bool,
}

/// The retraining recipe, read off a pipeline's `retrain` section.
#[derive(Debug, Clone)]
pub struct Recipe {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub lr_min: f64,
    pub momentum: f64,
    pub nesterov: bool,
    pub weight_decay: f64,
    pub grad_clip: Option<f64>,
    pub warmup_epochs: usize,
    pub auxiliary_weight: f64,
    pub drop_path: f64,
    pub label_smoothing: f64,
    pub eval_every: usize,
}

impl Recipe {
    /// The recipe whose training step `cargo bench --bench speed` and `nas-pipe
    /// device-check` time: DARTS's (SGD lr 0.025, momentum 0.9, weight decay 3e-4, gradient
    /// clip 5, drop path 0.2), one epoch, no auxiliary head.
    pub fn step_benchmark(batch_size: usize) -> Recipe {
        Recipe {
            epochs: 1,
            batch_size,
            lr: 0.025,
            lr_min: 0.0,
            momentum: 0.9,
            nesterov: false,
            weight_decay: 3e-4,
            grad_clip: Some(5.0),
            warmup_epochs: 0,
            auxiliary_weight: 0.0,
            drop_path: 0.2,
            label_smoothing: 0.0,
            eval_every: 1,
        }
    }

    pub fn from_spec(r: &Retrain) -> Result<Recipe> {
        let Optimizer::Sgd {
            lr,
            lr_min,
            momentum,
            nesterov,
            weight_decay,
            grad_clip,
            warmup_epochs,
        } = &r.optimizer.value
        else {
            return Err(Error::Input(
                "the retrain optimizer must be Sgd (Adam is for architecture weights)".into(),
            ));
        };
        Ok(Recipe {
            epochs: r.epochs.value as usize,
            batch_size: r.batch_size.value as usize,
            lr: lr.value,
            lr_min: lr_min.value,
            momentum: momentum.value,
            nesterov: *nesterov,
            weight_decay: weight_decay.value,
            grad_clip: grad_clip.as_ref().map(|c| c.value),
            warmup_epochs: *warmup_epochs as usize,
            auxiliary_weight: r.auxiliary_weight.value,
            drop_path: r.drop_path.value,
            label_smoothing: r.label_smoothing.value,
            eval_every: r.eval_every.value as usize,
        })
    }

    /// Drop-path probability in `epoch` (0-based): DARTS's ramp `p · epoch / epochs`.
    pub fn drop_path_at(&self, epoch: usize) -> f64 {
        self.drop_path * epoch as f64 / self.epochs.max(1) as f64
    }
}

/// Mean cross-entropy of `logits` [N, K] against `labels` [N] (u32) with label smoothing
/// `eps`: (1 − eps) · NLL + eps · mean over classes of −log p (PyTorch's
/// `CrossEntropyLoss(label_smoothing = eps)`).
pub fn cross_entropy(logits: &Tensor, labels: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    let logp = candle_nn::ops::log_softmax(logits, 1)?;
    let nll = logp
        .gather(&labels.unsqueeze(1)?, 1)?
        .squeeze(1)?
        .neg()?
        .mean_all()?;
    if eps == 0.0 {
        return Ok(nll);
    }
    let uniform = logp.mean(1)?.neg()?.mean_all()?;
    nll.affine(1.0 - eps, 0.0)? + uniform.affine(eps, 0.0)?
}

fn scalar(t: &Tensor) -> candle_core::Result<f64> {
    t.to_dtype(DType::F64)?.to_scalar::<f64>()
}

/// One step's figures.
#[derive(Debug, Clone, Copy)]
pub struct StepStats {
    /// Loss of the main head (the auxiliary head's is added for the gradient only).
    pub loss: f64,
    pub correct: usize,
    pub count: usize,
}

/// A model with its optimizer and loss settings: one training step at a time.
pub struct Trainer {
    pub model: Model,
    pub opt: Sgd,
    pub auxiliary_weight: f64,
    pub label_smoothing: f64,
}

impl Trainer {
    pub fn new(model: Model, recipe: &Recipe) -> Trainer {
        let opt = Sgd::new(
            model.store.params(),
            recipe.momentum,
            recipe.nesterov,
            recipe.weight_decay,
            recipe.grad_clip,
        );
        Trainer {
            model,
            opt,
            auxiliary_weight: recipe.auxiliary_weight,
            label_smoothing: recipe.label_smoothing,
        }
    }

    /// Forward in training mode, backward, one SGD step at `lr`.
    pub fn step(
        &mut self,
        images: &Tensor,
        labels: &Tensor,
        lr: f64,
        drop_path: f64,
        rng: &mut ChaCha8Rng,
    ) -> candle_core::Result<StepStats> {
        let out = self.model.forward(images, Mode::Train { drop_path, rng })?;
        let main = cross_entropy(&out.logits, labels, self.label_smoothing)?;
        let loss = match &out.aux {
            Some(aux) if self.auxiliary_weight > 0.0 => {
                (&main
                    + cross_entropy(aux, labels, self.label_smoothing)?
                        .affine(self.auxiliary_weight, 0.0)?)?
            }
            _ => main.clone(),
        };
        let grads = loss.backward()?;
        self.opt.step(&grads, lr)?;
        Ok(StepStats {
            loss: scalar(&main)?,
            correct: correct(&out.logits, labels)?,
            count: images.dim(0)?,
        })
    }
}

fn correct(logits: &Tensor, labels: &Tensor) -> candle_core::Result<usize> {
    Ok(logits
        .argmax(1)?
        .eq(labels)?
        .to_dtype(DType::U32)?
        .sum_all()?
        .to_scalar::<u32>()? as usize)
}

/// Evaluates `model` (eval mode) on every image of `test`, with a progress bar when
/// `progress`.
pub fn evaluate(
    model: &Model,
    test: &Batcher,
    device: &Device,
    weights: &str,
    classes: &[String],
    progress: bool,
) -> Result<Evaluation> {
    let bar = crate::progress::images(progress, test.len(), "evaluate");
    let k = classes.len();
    let mut confusion = vec![vec![0u64; k]; k];
    let (mut loss_sum, mut n) = (0f64, 0usize);
    let epoch = test.epoch(0, device);
    for b in 0..epoch.batches() {
        let batch = epoch.batch(b).map_err(ctx("making a batch"))?;
        let logits = model
            .forward(&batch.images, Mode::Eval)
            .map_err(ctx("evaluating"))?
            .logits;
        let loss = cross_entropy(&logits, &batch.labels, 0.0)
            .and_then(|l| scalar(&l))
            .map_err(ctx("evaluating"))?;
        let pred = logits
            .argmax(1)
            .and_then(|p| p.to_vec1::<u32>())
            .map_err(ctx("evaluating"))?;
        let truth = batch.labels.to_vec1::<u32>().map_err(ctx("evaluating"))?;
        for (&t, &p) in truth.iter().zip(&pred) {
            if let Some(row) = confusion.get_mut(t as usize)
                && let Some(cell) = row.get_mut(p as usize)
            {
                *cell += 1;
            }
        }
        loss_sum += loss * batch.size as f64;
        n += batch.size;
        bar.inc(batch.size as u64);
    }
    bar.finish_and_clear();
    let right: u64 = (0..k).map(|i| confusion[i][i]).sum();
    let per_class_accuracy = confusion
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let total: u64 = row.iter().sum();
            if total == 0 {
                0.0
            } else {
                row[i] as f64 / total as f64
            }
        })
        .collect();
    Ok(Evaluation {
        weights: weights.to_string(),
        images: n,
        loss: loss_sum / n.max(1) as f64,
        accuracy: right as f64 / n.max(1) as f64,
        classes: classes.to_vec(),
        confusion,
        per_class_accuracy,
    })
}

fn ctx(stage: &str) -> impl Fn(candle_core::Error) -> Error + '_ {
    move |e| Error::Input(format!("{stage}: {}", crate::error::candle_message(&e)))
}

/// A hash of everything that determines the retraining's result: the build's version, the
/// retrain, data and normalisation sections, the seed, the space's text and the genotype.
pub fn spec_hash(p: &Resolved, genotype: &Genotype) -> Result<String> {
    let mut h = blake3::Hasher::new();
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    let spec = ron::to_string(&(&p.spec.retrain, &p.spec.data, &p.spec.normalize))
        .map_err(|e| Error::Input(e.to_string()))?;
    h.update(spec.as_bytes());
    h.update(&p.spec.seed.to_le_bytes());
    for text in &p.space_texts {
        h.update(&(text.len() as u64).to_le_bytes());
        h.update(text.as_bytes());
    }
    h.update(genotype.to_ron().as_bytes());
    Ok(h.finalize().to_hex().to_string())
}

/// The genotype to retrain: `arg` (a `--genotype` argument) if given, else the pipeline's
/// `genotype`, else the one the search wrote to `<run_dir>/genotype.ron`.
pub fn choose_genotype(
    p: &Resolved,
    run_dir: &Path,
    arg: Option<&str>,
) -> Result<(Genotype, genotype::Architecture)> {
    let space = &p.retrain_space;
    let from = |arg: &str| -> Result<(Genotype, genotype::Architecture)> {
        let (src, g) = Genotype::from_arg(arg, space)?;
        let r = g.resolve(&src, space)?;
        Ok((g, r))
    };
    if let Some(a) = arg {
        return from(a);
    }
    if let Some((g, r)) = &p.genotype {
        return Ok((g.clone(), r.clone()));
    }
    let searched = run_dir.join("genotype.ron");
    if searched.exists() {
        return from(&searched.display().to_string());
    }
    Err(Error::Input(format!(
        "pipeline \"{}\" has no genotype to train: run `nas-pipe search` first (it writes {}), \
         pass --genotype, or set `genotype:` in the pipeline",
        p.spec.name.value,
        searched.display()
    )))
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

/// Runs (or resumes) the retraining of `genotype` under pipeline `p`, writing under
/// `run_dir/retrain`.
pub fn run(
    p: &Resolved,
    run_dir: &Path,
    device: &Device,
    genotype: &(Genotype, genotype::Architecture),
    opts: &Options,
) -> Result<Outcome> {
    let Some(spec) = &p.spec.retrain else {
        return Err(Error::Input(format!(
            "pipeline \"{}\" has no `retrain` section",
            p.spec.name.value
        )));
    };
    let recipe = Recipe::from_spec(spec)?;
    let seed = p.spec.seed;
    let space = &p.retrain_space;
    let net = space.build(&genotype.1);

    let (train, test) = data::load(&p.spec.data, p.data_dir.as_deref(), seed)?;
    train.check_input(space.input)?;
    test.check_input(space.input)?;
    let norm = normalization(p, &train)?;
    let classes = data::class_names(&p.spec.data.value);
    let train_b = Batcher::new(
        train.clone(),
        train.all(),
        norm.clone(),
        BatchConfig {
            batch_size: recipe.batch_size,
            shuffle: true,
            augment: spec.augment,
            seed,
            stream: 1,
        },
    )?;
    let all = test.all();
    let test_b = eval_batcher(test, all, norm.clone(), seed)?;

    let model = Model::new(&net, device, seed, recipe.auxiliary_weight > 0.0)
        .map_err(ctx("building the network"))?;
    let mut trainer = Trainer::new(model, &recipe);

    let dir = run_dir.join("retrain");
    let hash = spec_hash(p, &genotype.0)?;
    let state_path = dir.join("state.json");
    let mut state = match checkpoint::read_state::<State>(&state_path, &hash, "retrain", &dir)? {
        Some(state) => {
            let c = checkpoint::load(&dir.join(&state.checkpoint), device)?;
            c.set("weights", &trainer.model.store.params())?;
            c.set("buffers", &trainer.model.store.buffers())?;
            trainer
                .opt
                .load_state(&c.group("opt"))
                .map_err(|e| Error::Input(format!("{}: {e}", c.path.display())))?;
            state
        }
        None => State {
            version: STATE_VERSION,
            spec_hash: hash,
            epochs_done: 0,
            checkpoint: String::new(),
            metrics: Vec::new(),
            best: None,
        },
    };
    // After the state check: a run refused for another spec leaves the folder as it was.
    write_card(p, genotype, &net, &norm, &classes, &dir)?;

    let started = Instant::now();
    let epochs = recipe.epochs;
    let steps = train_b.batches_per_epoch();
    let last = opts.stop_after.map_or(epochs, |s| s.min(epochs));
    // The evaluation of the last epoch, when this run made it (the final evaluation reuses it).
    let mut final_eval = None;
    for epoch in state.epochs_done..last {
        let t0 = Instant::now();
        let drop_path = recipe.drop_path_at(epoch);
        let mut rng = data::rng::derive(seed, epoch as u64, DROP_PATH_STREAM);
        let lr_at = |step: usize| {
            optim::cosine_step(
                recipe.lr,
                recipe.lr_min,
                epoch * steps + step,
                steps,
                epochs,
                recipe.warmup_epochs,
            )
        };
        let bar = crate::progress::images(
            opts.progress,
            train_b.len(),
            &format!("retrain {}/{epochs}", epoch + 1),
        );
        let batches = train_b.epoch(epoch as u64, device);
        let (mut loss_sum, mut right, mut n) = (0f64, 0usize, 0usize);
        let mut curve = Curve::new(epoch, steps);
        for step in 0..steps {
            let b = batches.batch(step).map_err(ctx("making a batch"))?;
            let s = trainer
                .step(&b.images, &b.labels, lr_at(step), drop_path, &mut rng)
                .map_err(ctx("training step"))?;
            if !s.loss.is_finite() {
                return Err(Error::Input(format!(
                    "the training loss became {} at epoch {}, step {step}; lower the learning rate",
                    s.loss,
                    epoch + 1
                )));
            }
            loss_sum += s.loss * s.count as f64;
            right += s.correct;
            n += s.count;
            curve.add(s.loss, s.correct, s.count);
            bar.inc(s.count as u64);
            bar.set_message(format!(
                "loss {:.3} acc {:.1}%",
                loss_sum / n as f64,
                100.0 * right as f64 / n as f64
            ));
        }
        bar.finish_and_clear();
        let seconds = t0.elapsed().as_secs_f64();
        let evaluate_now = (epoch + 1) % recipe.eval_every.max(1) == 0 || epoch + 1 == epochs;
        let eval = if evaluate_now {
            Some(evaluate(
                &trainer.model,
                &test_b,
                device,
                "",
                &classes,
                opts.progress,
            )?)
        } else {
            None
        };
        let m = EpochMetrics {
            epoch,
            lr: (lr_at(0), lr_at(steps - 1)),
            drop_path,
            train_loss: loss_sum / n.max(1) as f64,
            train_acc: right as f64 / n.max(1) as f64,
            test_loss: eval.as_ref().map(|e| e.loss),
            test_acc: eval.as_ref().map(|e| e.accuracy),
            seconds,
            images_per_sec: n as f64 / seconds.max(1e-9),
            curve: curve.finish(),
        };
        eprintln!(
            "retrain epoch {}/{epochs}: lr {:.5}→{:.5}, train loss {:.4} acc {:.2}%{}, {:.1}s, {:.1} images/s",
            epoch + 1,
            m.lr.0,
            m.lr.1,
            m.train_loss,
            100.0 * m.train_acc,
            match &eval {
                Some(e) => format!(", test loss {:.4} acc {:.2}%", e.loss, 100.0 * e.accuracy),
                None => String::new(),
            },
            m.seconds,
            m.images_per_sec
        );
        let improved = match (&eval, state.best) {
            (Some(e), Some((_, best))) => e.accuracy > best,
            (Some(_), None) => true,
            (None, _) => false,
        };
        state.metrics.push(m);
        save_weights(&trainer.model, &dir.join("last.safetensors"))?;
        if improved && let Some(e) = &eval {
            save_weights(&trainer.model, &dir.join("best.safetensors"))?;
            state.best = Some((epoch, e.accuracy));
        }
        checkpoint::write_json(&dir.join("metrics.json"), &state.metrics)?;
        save_checkpoint(&trainer, &dir, &mut state, epoch + 1)?;
        if epoch + 1 == epochs {
            final_eval = eval;
        }
    }
    let evaluation = if state.epochs_done == epochs {
        // A training finished by an earlier run has its evaluation on disk already.
        let earlier = || -> Option<Evaluation> {
            let e: Evaluation =
                serde_json::from_slice(&std::fs::read(dir.join("evaluation.json")).ok()?).ok()?;
            (e.classes == classes).then_some(e)
        };
        let mut e = match final_eval.or_else(earlier) {
            Some(e) => e,
            None => evaluate(&trainer.model, &test_b, device, "", &classes, opts.progress)?,
        };
        e.weights = "last.safetensors".into();
        checkpoint::write_json(&dir.join("evaluation.json"), &e)?;
        Some(e)
    } else {
        None
    };
    Ok(Outcome {
        metrics: state.metrics,
        evaluation,
        seconds: started.elapsed().as_secs_f64(),
        dir,
    })
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

fn save_checkpoint(
    trainer: &Trainer,
    dir: &Path,
    state: &mut State,
    epochs_done: usize,
) -> Result<()> {
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    checkpoint::put(&mut tensors, "weights", &trainer.model.store.params());
    checkpoint::put(&mut tensors, "buffers", &trainer.model.store.buffers());
    for (n, t) in trainer.opt.state() {
        tensors.insert(format!("opt.{n}"), t);
    }
    checkpoint::commit_epoch(dir, &tensors, state, epochs_done)?;
    Ok(())
}

fn write_card(
    p: &Resolved,
    genotype: &(Genotype, genotype::Architecture),
    net: &Net,
    norm: &Normalize,
    classes: &[String],
    dir: &Path,
) -> Result<()> {
    let ron_cfg = ron::ser::PrettyConfig::default()
        .struct_names(true)
        .extensions(ron::extensions::Extensions::IMPLICIT_SOME);
    let space = ron::ser::to_string_pretty(&p.space_raw, ron_cfg.clone())
        .map_err(|e| Error::Input(format!("writing the space: {e}")))?;
    let retrain = p.spec.retrain.as_ref();
    let cost = net.cost();
    let card = ModelCard {
        version: CARD_VERSION,
        space: "space.ron".into(),
        genotype: "genotype.ron".into(),
        input: p.retrain_space.input,
        channels: retrain.and_then(|r| r.channels.as_ref().map(|c| c.value)),
        layers: retrain.and_then(|r| r.layers.as_ref().map(|l| l.value)),
        mean: norm.mean().to_vec(),
        std: norm.std().to_vec(),
        classes: classes.to_vec(),
        params: cost.params,
        macs: cost.macs,
    };
    let card_text = ron::ser::to_string_pretty(&card, ron_cfg)
        .map_err(|e| Error::Input(format!("writing the model card: {e}")))?;
    write_atomic(
        &dir.join("space.ron"),
        format!(
            "// The space \"{}\" as read from {} (libraries inline).\n{space}\n",
            p.retrain_space.name,
            p.space_path.display()
        )
        .as_bytes(),
    )?;
    write_atomic(&dir.join("genotype.ron"), genotype.0.to_ron().as_bytes())?;
    write_atomic(&dir.join("model.ron"), format!("{card_text}\n").as_bytes())
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
    let (_, card): (u32, ModelCard) = sources.load(&dir.join("model.ron"))?;
    if card.version != CARD_VERSION {
        return Err(Error::Input(format!(
            "{}: model card version {} is not the {CARD_VERSION} this build reads",
            dir.join("model.ron").display(),
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

/// `nas-pipe eval`: evaluates `weights` (a file in the retrain folder or a path) of the model
/// in `dir` on the pipeline's test set.
pub fn eval(
    p: &Resolved,
    dir: &Path,
    weights: &str,
    device: &Device,
    progress: bool,
) -> Result<Evaluation> {
    let trained = load_model(dir)?;
    let path = weights_path(dir, weights);
    let model = Model::new(&trained.net, device, 0, false).map_err(ctx("building the network"))?;
    load_weights(&model, &path)?;
    let (_, test) = data::load(&p.spec.data, p.data_dir.as_deref(), p.spec.seed)?;
    test.check_input(trained.card.input)?;
    let norm = Normalize::new(trained.card.mean.clone(), trained.card.std.clone())?;
    let all = test.all();
    let test_b = eval_batcher(test, all, norm, p.spec.seed)?;
    evaluate(
        &model,
        &test_b,
        device,
        &path.display().to_string(),
        &trained.card.classes,
        progress,
    )
}
