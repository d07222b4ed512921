//! One training step and one evaluation pass of a network: the loss (cross entropy with
//! label smoothing), the optimizer step under a recipe, accuracy counts. Shared by
//! retraining, the training evaluator of multi-trial search and the speed checks.

use candle_core::{DType, Device, Tensor};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::data::Batcher;
use crate::error::{Error, Result};
use crate::nets::average::Ema;
use crate::nets::model::{Mode, Model};
use crate::nets::optim::{LrSchedule, Sgd};
use crate::spec::pipeline::{Optimizer, Retrain, Schedule};

/// Images per batch when evaluating (the result does not depend on it).
/// Images per batch when evaluating.
pub const EVAL_BATCH: usize = 64;

/// The retraining recipe, read off a pipeline's `retrain` section.
#[derive(Debug, Clone)]
pub struct Recipe {
    pub epochs: usize,
    pub batch_size: usize,
    /// The learning rate, step by step.
    pub rates: LrSchedule,
    pub momentum: f64,
    pub nesterov: bool,
    pub weight_decay: f64,
    pub grad_clip: Option<f64>,
    pub auxiliary_weight: f64,
    pub drop_path: f64,
    pub label_smoothing: f64,
    pub eval_every: usize,
    /// The weight average's decay, when the recipe keeps one.
    pub ema: Option<f64>,
}

impl Recipe {
    /// The recipe whose training step `cargo bench --bench speed` and `nas-pipe
    /// device-check` time: DARTS's (SGD lr 0.025, momentum 0.9, weight decay 3e-4, gradient
    /// clip 5, drop path 0.2), one epoch, no auxiliary head.
    pub fn step_benchmark(batch_size: usize) -> Recipe {
        Recipe {
            epochs: 1,
            batch_size,
            rates: LrSchedule {
                lr: 0.025,
                lr_min: 0.0,
                warmup: 0,
                shape: Schedule::Cosine,
            },
            momentum: 0.9,
            nesterov: false,
            weight_decay: 3e-4,
            grad_clip: Some(5.0),
            auxiliary_weight: 0.0,
            drop_path: 0.2,
            label_smoothing: 0.0,
            eval_every: 1,
            ema: None,
        }
    }

    pub fn from_spec(r: &Retrain) -> Result<Recipe> {
        let (
            Some(rates),
            Optimizer::Sgd {
                momentum,
                nesterov,
                weight_decay,
                grad_clip,
                ..
            },
        ) = (LrSchedule::of(&r.optimizer.value), &r.optimizer.value)
        else {
            return Err(Error::Input(
                "the retrain optimizer must be Sgd (Adam is for architecture weights)".into(),
            ));
        };
        Ok(Recipe {
            epochs: r.epochs.value as usize,
            batch_size: r.batch_size.value as usize,
            rates,
            momentum: momentum.value,
            nesterov: *nesterov,
            weight_decay: weight_decay.value,
            grad_clip: grad_clip.as_ref().map(|c| c.value),
            auxiliary_weight: r.auxiliary_weight.value,
            drop_path: r.drop_path.value,
            label_smoothing: r.label_smoothing.value,
            eval_every: r.eval_every.value as usize,
            ema: r.ema.as_ref().map(|d| d.value),
        })
    }

    /// Drop-path probability in `epoch` (0-based): DARTS's ramp `p · epoch / epochs`.
    pub fn drop_path_at(&self, epoch: usize) -> f64 {
        self.drop_path_at_position(epoch as f64)
    }

    /// The drop-path probability at `x` epochs into the schedule (a paced epoch's start).
    pub fn drop_path_at_position(&self, x: f64) -> f64 {
        self.drop_path * x / self.epochs.max(1) as f64
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
    /// The weight average, updated after every step, when the recipe keeps one.
    pub ema: Option<Ema>,
}

impl Trainer {
    /// Trains `model` under `recipe` (with the weight average it asks for).
    pub fn new(model: Model, recipe: &Recipe) -> candle_core::Result<Trainer> {
        let opt = Sgd::new(
            model.store.params(),
            recipe.momentum,
            recipe.nesterov,
            recipe.weight_decay,
            recipe.grad_clip,
        );
        let ema = match recipe.ema {
            Some(decay) => Some(Ema::new(&model, decay)?),
            None => None,
        };
        Ok(Trainer {
            model,
            opt,
            auxiliary_weight: recipe.auxiliary_weight,
            label_smoothing: recipe.label_smoothing,
            ema,
        })
    }

    /// The model to evaluate, keep and export: the weight average when there is one, else
    /// the trained weights.
    pub fn deployed(&self) -> &Model {
        self.ema.as_ref().map_or(&self.model, Ema::model)
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
        if let Some(ema) = &mut self.ema {
            ema.update()?;
        }
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

fn ctx(stage: &str) -> impl Fn(candle_core::Error) -> Error + '_ {
    move |e| Error::Input(format!("{stage}: {}", crate::error::candle_message(&e)))
}
