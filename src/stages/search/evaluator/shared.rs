//! The weight-sharing evaluator: one supernet trained first by uniform single-path
//! sampling (each step trains the path of one uniformly random architecture; Guo et al.,
//! "Single Path One-Shot NAS", ECCV 2020), then every candidate scored by its own path
//! through those shared weights on held-out training images, with BN on batch statistics
//! (NAS-Bench-201's weight-sharing evaluation). Scoring a candidate costs a few forward
//! passes instead of a training.
//!
//! The trained weights are kept in `<dir>/supernet.safetensors`, so a resumed search does
//! not train them again; a search killed during that training starts it over.

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};

use super::{Candidate, Evaluator, Score, ctx};
use crate::data::{self, Batcher};
use crate::error::{Error, Result};
use crate::nets::optim::Sgd;
use crate::nets::supernet::{Arch, Supernet};
use crate::run::Resolved;
use crate::space::{Candidate as Cand, Space};
use crate::spec::pipeline;
use crate::stages::search::strategy::Decisions;

/// The file the trained supernet is kept in, under the search folder.
pub const FILE: &str = "supernet.safetensors";

pub struct WeightSharing {
    net: Supernet,
    val: Batcher,
    /// Held-out batches each candidate is scored on.
    eval_batches: usize,
    device: Device,
}

/// The single path of candidate `c`: one-hot weights, and each edge runs only its
/// candidate (an edge the architecture does not use runs a `none` candidate, or its first,
/// with weight 0).
pub fn path(space: &Space, c: &Candidate, device: &Device) -> Result<Arch> {
    let used = space.used_cells();
    let mut cells = Vec::new();
    let mut picks = Vec::new();
    for (ci, cell) in space.cells.iter().enumerate() {
        if !used[ci] {
            cells.push(None);
            picks.push(None);
            continue;
        }
        let k = cell.candidates.len();
        let zero = cell
            .candidates
            .iter()
            .position(
                |c| matches!(c, Cand::Op(o) if matches!(space.ops[*o].1, crate::ops::Op::Zero)),
            )
            .unwrap_or(0);
        let mut w = vec![0f32; cell.edges.len() * k];
        let mut pick = vec![zero; cell.edges.len()];
        if let Some(Some(chosen)) = c.resolved.cells.get(ci) {
            for &(e, cand) in chosen {
                let j = cell
                    .candidates
                    .iter()
                    .position(|x| *x == cand)
                    .ok_or_else(|| {
                        Error::Input(format!(
                            "cell {}: a chosen candidate is not on its edges",
                            cell.name
                        ))
                    })?;
                w[e * k + j] = 1.0;
                pick[e] = j;
            }
        }
        cells.push(Some(
            Tensor::from_vec(w, (cell.edges.len(), k), device).map_err(ctx("a path"))?,
        ));
        picks.push(Some(pick));
    }
    let mut slots = Vec::new();
    let mut slot_picks = Vec::new();
    for (i, slot) in space.slots.iter().enumerate() {
        let chosen = c.resolved.slots.get(i).copied();
        let j = chosen
            .and_then(|ch| slot.candidates.iter().position(|x| *x == ch))
            .unwrap_or(0);
        let mut w = vec![0f32; slot.candidates.len()];
        w[j] = 1.0;
        slots.push(Tensor::from_vec(w, slot.candidates.len(), device).map_err(ctx("a path"))?);
        slot_picks.push(Some(j));
    }
    Ok(Arch {
        cells,
        cell_picks: picks,
        slots,
        slot_picks,
        edges: vec![None; space.cells.len()],
    })
}

impl WeightSharing {
    /// Loads the data and the supernet's weights from `dir`, or trains them (with a
    /// progress bar when `progress`) and writes them there; `dir` `None` trains in memory.
    pub fn new(
        p: &Resolved,
        device: &Device,
        dir: Option<PathBuf>,
        progress: bool,
    ) -> Result<WeightSharing> {
        let Some(pipeline::Search::Trials { evaluator, .. }) = p.spec.search.as_deref() else {
            return Err(Error::Input(
                "the pipeline has no multi-trial search".into(),
            ));
        };
        let pipeline::Evaluator::WeightSharing {
            images,
            train_portion,
            epochs,
            batch_size,
            weights,
            augment,
            eval_images,
            ..
        } = &evaluator.value
        else {
            return Err(Error::Input(
                "the pipeline's evaluator is not WeightSharing".into(),
            ));
        };
        let seed = p.spec.seed;
        let space = &p.search_space;
        let split = super::Split::load(
            p,
            images.as_ref(),
            train_portion.value,
            batch_size.value as usize,
            *augment,
        )?;
        let (train_b, val) = (split.train, split.held_out);
        let held_out = val.len();
        let net = Supernet::new(space, device, seed).map_err(ctx("building the supernet"))?;
        let file = dir.as_ref().map(|d| d.join(FILE));
        match &file {
            Some(f) if f.exists() => {
                let c = crate::run::checkpoint::load(f, device)?;
                c.set("weights", &net.weights.params())?;
                c.set("buffers", &net.weights.buffers())?;
            }
            _ => {
                train_supernet(
                    &net,
                    &train_b,
                    weights,
                    epochs.value as usize,
                    seed,
                    device,
                    progress,
                )?;
                if let Some(f) = &file {
                    let mut tensors = std::collections::HashMap::new();
                    crate::run::checkpoint::put(&mut tensors, "weights", &net.weights.params());
                    crate::run::checkpoint::put(&mut tensors, "buffers", &net.weights.buffers());
                    crate::run::checkpoint::save(f, &tensors)?;
                }
            }
        }
        let n = eval_images
            .as_ref()
            .map_or(held_out, |n| (n.value as usize).min(held_out));
        Ok(WeightSharing {
            net,
            val,
            eval_batches: n.div_ceil(crate::nets::train::EVAL_BATCH).max(1),
            device: device.clone(),
        })
    }
}

/// Trains the supernet's weights: each step the path of a uniformly random architecture,
/// drawn from (seed, epoch, step).
fn train_supernet(
    net: &Supernet,
    train: &Batcher,
    opt: &pipeline::Optimizer,
    epochs: usize,
    seed: u64,
    device: &Device,
    progress: bool,
) -> Result<()> {
    let (
        pipeline::Optimizer::Sgd {
            momentum,
            nesterov,
            weight_decay,
            grad_clip,
            ..
        },
        Some(rates),
    ) = (opt, crate::nets::optim::LrSchedule::of(opt))
    else {
        return Err(Error::Input(
            "the weight-sharing evaluator's optimizer must be Sgd".into(),
        ));
    };
    let mut sgd = Sgd::new(
        net.weights.params(),
        momentum.value,
        *nesterov,
        weight_decay.value,
        grad_clip.as_ref().map(|c| c.value),
    );
    let space = &net.space;
    let decisions = Decisions::of(space);
    let steps = train.batches_per_epoch();
    for epoch in 0..epochs {
        let bar = crate::progress::images(
            progress,
            train.len(),
            &format!("supernet {}/{epochs}", epoch + 1),
        );
        let batches = train.epoch(epoch as u64, device);
        for step in 0..steps {
            let b = batches.batch(step).map_err(ctx("making a batch"))?;
            let mut rng = data::rng::derive(seed, epoch as u64, 1000 + step as u64);
            let arch = decisions.random(&mut rng);
            let c = Candidate::new(space, &decisions, arch)?;
            let a = path(space, &c, device)?;
            let logits = net
                .forward_with(&b.images, true, &a)
                .map_err(ctx("training the supernet"))?;
            let loss = candle_nn::loss::cross_entropy(&logits, &b.labels)
                .map_err(ctx("training the supernet"))?;
            let l = loss
                .to_dtype(DType::F64)
                .and_then(|l| l.to_scalar::<f64>())
                .map_err(ctx("training the supernet"))?;
            if !l.is_finite() {
                return Err(Error::Input(format!(
                    "training the supernet: the loss became {l} at epoch {}, step {step}; lower the learning rate",
                    epoch + 1
                )));
            }
            let grads = loss.backward().map_err(ctx("training the supernet"))?;
            let rate = rates.at_step(epoch * steps + step, steps, epochs);
            sgd.step(&grads, rate)
                .map_err(ctx("training the supernet"))?;
            bar.inc(b.size as u64);
            bar.set_message(format!("loss {l:.3}"));
        }
        bar.finish_and_clear();
    }
    Ok(())
}

impl Evaluator for WeightSharing {
    fn evaluate(&mut self, c: &Candidate) -> Result<Score> {
        let a = path(&self.net.space, c, &self.device)?;
        let epoch = self.val.epoch(0, &self.device);
        let (mut right, mut n) = (0usize, 0usize);
        for i in 0..self.eval_batches.min(epoch.batches()) {
            let b = epoch.batch(i).map_err(ctx("making a batch"))?;
            let logits = self
                .net
                .forward_with(&b.images.detach(), true, &a)
                .map_err(ctx("scoring a candidate"))?
                .detach();
            let (_, correct) =
                crate::stages::search::darts::step::loss_and_correct(&logits, &b.labels)
                    .map_err(ctx("scoring a candidate"))?;
            right += correct;
            n += b.size;
        }
        Ok(Score {
            accuracy: right as f64 / n.max(1) as f64,
            report: None,
        })
    }

    fn report_name(&self) -> String {
        "none (weight sharing)".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DARTS path runs two edges per node with weight 1 and every other edge's `none`
    /// with weight 0.
    #[test]
    fn a_darts_path_keeps_two_inputs_per_node() {
        let space = crate::stages::search::strategy::tests::space("schemas/darts.ron");
        let d = Decisions::of(&space);
        let mut rng = crate::stages::search::strategy::rng(4, 0);
        for _ in 0..20 {
            let c = Candidate::new(&space, &d, d.random(&mut rng)).unwrap();
            let a = path(&space, &c, &Device::Cpu).unwrap();
            for (ci, cell) in space.cells.iter().enumerate() {
                let (Some(w), Some(picks)) = (&a.cells[ci], &a.cell_picks[ci]) else {
                    continue;
                };
                let w = w.to_vec2::<f32>().unwrap();
                for node in cell.inputs..cell.states() {
                    let on: Vec<usize> = cell
                        .incoming(node)
                        .filter(|&e| w[e].iter().sum::<f32>() == 1.0)
                        .collect();
                    assert_eq!(on.len(), 2);
                    for e in cell.incoming(node) {
                        let k = picks[e];
                        if on.contains(&e) {
                            assert_eq!(w[e][k], 1.0);
                        } else {
                            assert_eq!(space.candidate_name(cell.candidates[k]), "none");
                        }
                    }
                }
            }
        }
    }
}
