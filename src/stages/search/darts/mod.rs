//! The search stage: runs DARTS, GDAS or PC-DARTS (the `variant`) over the epochs of a
//! pipeline's `search` section on its data,
//! with a checkpoint after every epoch, resume, progress, per-epoch logs and the history of
//! every edge's op weights; ends by deriving and writing the genotype.
//!
//! Layout under the run folder (`exports/<name>/`):
//! - `search/checkpoint-<epoch>.safetensors`: weights (`weights.*`), BN buffers
//!   (`buffers.*`), architecture weights (`alphas.*`, PC-DARTS's β as `alphas.betas.*`)
//!   and optimizer state (`opt.w.*`, `opt.a.*`) after that epoch;
//! - `search/state.json`: the spec hash, the last finished epoch and its checkpoint file,
//!   per-epoch metrics (with learning curves) and the op-weight history;
//! - `genotype.ron`: the derived architecture, written by [`derive`] once the search is
//!   complete (the pipeline's derive stage).
//!
//! Every epoch's randomness derives from (seed, epoch) (GDAS's noise from (seed, epoch,
//! step)), so a resumed search gives the same result as an uninterrupted one on CPU.

pub mod gdas;
pub mod pc_darts;
pub mod step;

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use candle_core::{Device, Tensor};

use crate::data::{BatchConfig, Batcher, Normalize};
use crate::error::{Error, Result};
use crate::nets::optim::{Adam, LrSchedule, Sgd};
use crate::nets::supernet::{Build, Supernet};
use crate::run::Resolved;
use crate::run::RunDir;
use crate::run::checkpoint::{self};
use crate::run::hash::search_hash;
use crate::run::metrics::Curve;
use crate::run::search::{AlphaSnapshot, EpochMetrics, STATE_VERSION, State};
use crate::space::genotype::{self, Genotype};
use crate::spec::pipeline::{Normalization, Optimizer, Search, Variant};
use crate::stages::search::darts::gdas::Gdas;
use crate::stages::search::darts::pc_darts::PcDarts;
use crate::stages::search::darts::step::{BatchStats, Darts};

/// What a finished search returns.
pub struct Outcome {
    pub genotype: Genotype,
    pub metrics: Vec<EpochMetrics>,
    pub seconds: f64,
}

/// Options that are not part of the spec.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Stop after this many epochs in total (tests simulate a killed run with it).
    pub stop_after: Option<usize>,
    /// Draw a progress bar (when stderr is a terminal).
    pub progress: bool,
    /// ONNX Runtime, for a search with a latency term.
    pub ort: Option<&'static crate::runtime::Runtime>,
}

fn ctx(stage: &str) -> impl Fn(candle_core::Error) -> Error + '_ {
    move |e| Error::Input(format!("{stage}: {}", crate::error::candle_message(&e)))
}

fn sgd(o: &Optimizer, params: Vec<(String, candle_core::Var)>) -> Result<(Sgd, LrSchedule)> {
    match (o, LrSchedule::of(o)) {
        (
            Optimizer::Sgd {
                momentum,
                nesterov,
                weight_decay,
                grad_clip,
                ..
            },
            Some(rates),
        ) => Ok((
            Sgd::new(
                params,
                momentum.value,
                *nesterov,
                weight_decay.value,
                grad_clip.as_ref().map(|c| c.value),
            ),
            rates,
        )),
        _ => Err(Error::Input(
            "the search's `weights` optimizer must be Sgd".into(),
        )),
    }
}

fn adam(o: &Optimizer, params: Vec<(String, candle_core::Var)>) -> Result<Adam> {
    match o {
        Optimizer::Adam {
            lr,
            betas,
            weight_decay,
        } => Ok(Adam::new(params, lr.value, betas.value, weight_decay.value)),
        Optimizer::Sgd { .. } => Err(Error::Input(
            "the search's `arch` optimizer must be Adam".into(),
        )),
    }
}

/// The strategy a search runs: DARTS's state, possibly with a variant's policy around it.
enum Strategy {
    Darts(Darts),
    Gdas(Gdas),
    PcDarts(PcDarts),
}

impl Strategy {
    fn darts(&self) -> &Darts {
        match self {
            Strategy::Darts(d) => d,
            Strategy::Gdas(g) => &g.darts,
            Strategy::PcDarts(p) => &p.darts,
        }
    }

    fn darts_mut(&mut self) -> &mut Darts {
        match self {
            Strategy::Darts(d) => d,
            Strategy::Gdas(g) => &mut g.darts,
            Strategy::PcDarts(p) => &mut p.darts,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn step(
        &mut self,
        xt: &Tensor,
        yt: &Tensor,
        xv: &Tensor,
        yv: &Tensor,
        lr: f64,
        epoch: usize,
        step: usize,
    ) -> candle_core::Result<(BatchStats, BatchStats)> {
        match self {
            Strategy::Darts(d) => d.step(xt, yt, xv, yv, lr),
            Strategy::Gdas(g) => g.step(xt, yt, xv, yv, lr, epoch, step),
            Strategy::PcDarts(p) => p.step(xt, yt, xv, yv, lr, epoch),
        }
    }
}

/// The search network of pipeline `p` (a DARTS-family search) with its optimizers and
/// its variant's policy, without a latency term; with the weights' learning rate, final
/// learning rate and warm-up epochs.
fn strategy(p: &Resolved, device: &Device) -> Result<(Strategy, LrSchedule)> {
    let Some(Search::Darts {
        order,
        epochs,
        weights,
        arch,
        variant,
        ..
    }) = p.spec.search.as_deref()
    else {
        return Err(Error::Input(format!(
            "pipeline \"{}\" has no DARTS-family search",
            p.spec.name.value
        )));
    };
    let seed = p.spec.seed;
    let build = match &variant.value {
        Variant::PcDarts {
            k,
            edge_normalization,
            ..
        } => Build {
            partial_channels: k.value as usize,
            edge_normalization: *edge_normalization,
        },
        Variant::Standard | Variant::Gdas { .. } => Build::default(),
    };
    let net = Supernet::with_build(&p.search_space, device, crate::nn::DTYPE, seed, build)
        .map_err(ctx("building the supernet"))?;
    let (w_opt, rates) = sgd(weights, net.weights.params())?;
    let a_opt = adam(arch, net.alphas.params())?;
    let darts = Darts::new(net, w_opt, a_opt, *order);
    let strategy = match &variant.value {
        Variant::Standard => Strategy::Darts(darts),
        Variant::Gdas { tau_max, tau_min } => Strategy::Gdas(Gdas {
            darts,
            tau_max: tau_max.value,
            tau_min: tau_min.value,
            epochs: epochs.value as usize,
            seed,
        }),
        Variant::PcDarts {
            arch_warmup_epochs, ..
        } => Strategy::PcDarts(PcDarts {
            darts,
            arch_warmup_epochs: arch_warmup_epochs.value as usize,
        }),
    };
    Ok((strategy, rates))
}

/// Images/s of `p`'s search step on `device` (training and architecture batches both
/// counted, as the search's progress counts them) over `steps` steps after one untimed,
/// on random images of the data's shape. Its variant's full step: a
/// PC-DARTS step as in the last epoch.
pub fn calibrate(p: &Resolved, device: &Device, steps: usize) -> Result<f64> {
    let Some(Search::Darts {
        batch_size, epochs, ..
    }) = p.spec.search.as_deref()
    else {
        return Err(Error::Input(
            "calibrating a search that is not DARTS-family".into(),
        ));
    };
    let (mut darts, rates) = strategy(p, device)?;
    let batch = batch_size.value as usize;
    let (x, y) = crate::nets::timing::random_batch(p.search_space.input, batch, device)
        .map_err(ctx("calibrating the search"))?;
    let last = epochs.value.saturating_sub(1) as usize;
    crate::nets::timing::rate(device, 1, steps, &mut || {
        darts
            .step(&x, &y, &x, &y, rates.lr, last, 0)
            .map(|_| 2 * batch)
    })
    .map_err(ctx("calibrating the search"))
}

/// Runs (or resumes) the search of pipeline `p`, writing under `run_dir`.
pub fn run(p: &Resolved, run_dir: &Path, device: &Device, opts: &Options) -> Result<Outcome> {
    let Some(search) = &p.spec.search else {
        return Err(Error::Input(format!(
            "pipeline \"{}\" has no `search` section",
            p.spec.name.value
        )));
    };
    let Search::Darts {
        epochs,
        batch_size,
        train_portion,
        augment,
        images,
        latency,
        ..
    } = &search.value
    else {
        return Err(Error::Input(
            "a multi-trial search runs in crate::stages::search::trials, not here".into(),
        ));
    };
    let epochs = epochs.value as usize;
    let space = &p.search_space;
    let seed = p.spec.seed;

    // The search never sees the validation or test part.
    let train = p.load_data(seed)?.train;
    let train = match images {
        Some(n) => train.first(n.value as usize),
        None => train,
    };
    train.check_input(space.input)?;
    let split = train.split(train_portion.value)?;
    let norm = match &p.spec.normalize.value {
        Normalization::Computed => Normalize::fit(&train, &split.first)?,
        Normalization::Given { mean, std } => Normalize::new(mean.clone(), std.clone())?,
    };
    let cfg = |stream| BatchConfig {
        batch_size: batch_size.value as usize,
        shuffle: true,
        augment: *augment,
        seed,
        stream,
    };
    let train_b = Batcher::new(train.clone(), split.first.clone(), norm.clone(), cfg(1))?;
    let val_b = Batcher::new(train.clone(), split.rest.clone(), norm, cfg(2))?;
    let steps = train_b.batches_per_epoch().min(val_b.batches_per_epoch());

    let (mut darts, rates) = strategy(p, device)?;
    if let Some(l) = latency {
        darts.darts_mut().latency = Some(latency_penalty(
            p,
            l,
            opts.ort,
            &RunDir::new(run_dir).latency_table(),
            device,
        )?);
    }

    let dir = RunDir::new(run_dir).search();
    let hash = search_hash(p)?;
    let state_path = RunDir::new(run_dir).search_state();
    let advice = checkpoint::restart_advice("search", &dir);
    let read = checkpoint::read_state::<State>(&state_path, &hash, "search", epochs, &advice)?;
    let mut state = match read {
        Some(mut state) => {
            checkpoint::resume(run_dir, &dir, &mut state, &advice, |path| {
                load_checkpoint(darts.darts_mut(), path)
            })?;
            state
        }
        None => State {
            version: STATE_VERSION,
            spec_hash: hash,
            epochs_done: 0,
            checkpoint: String::new(),
            metrics: Vec::new(),
            history: Vec::new(),
            kept: Vec::new(),
        },
    };

    let started = Instant::now();
    let last = opts.stop_after.map_or(epochs, |s| s.min(epochs));
    for epoch in state.epochs_done..last {
        let t0 = Instant::now();
        let lr = rates.at_epoch(epoch, epochs);
        let images = (steps * batch_size.value as usize).min(train_b.len())
            + (steps * batch_size.value as usize).min(val_b.len());
        let bar = crate::progress::epoch(
            opts.progress,
            images,
            crate::run::Stage::Search.name(),
            epoch,
            epochs,
        );
        let (tb, vb) = (
            train_b.epoch(epoch as u64, device),
            val_b.epoch(epoch as u64, device),
        );
        let mut sums = [0f64; 4];
        let (mut n_train, mut n_val) = (0usize, 0usize);
        let (mut curve, mut val_curve) = (Curve::new(epoch, steps), Curve::new(epoch, steps));
        for step in 0..steps {
            let t = tb.batch(step).map_err(ctx("making a batch"))?;
            let v = vb.batch(step).map_err(ctx("making a batch"))?;
            let (ts, vs) = darts
                .step(&t.images, &t.labels, &v.images, &v.labels, lr, epoch, step)
                .map_err(ctx("search step"))?;
            if !ts.loss.is_finite() {
                return Err(Error::Input(format!(
                    "the training loss became {} at epoch {epoch}, step {step}; lower the learning rate",
                    ts.loss
                )));
            }
            sums[0] += ts.loss * ts.count as f64;
            sums[1] += ts.correct as f64;
            sums[2] += vs.loss * vs.count as f64;
            sums[3] += vs.correct as f64;
            n_train += ts.count;
            n_val += vs.count;
            curve.add(ts.loss, ts.correct, ts.count);
            val_curve.add(vs.loss, vs.correct, vs.count);
            bar.inc((ts.count + vs.count) as u64);
            bar.set_message(format!("loss {:.3}", sums[0] / n_train as f64));
        }
        bar.finish_and_clear();
        let seconds = t0.elapsed().as_secs_f64();
        let m = EpochMetrics {
            epoch,
            lr,
            train_loss: sums[0] / n_train.max(1) as f64,
            train_acc: sums[1] / n_train.max(1) as f64,
            val_loss: sums[2] / n_val.max(1) as f64,
            val_acc: sums[3] / n_val.max(1) as f64,
            seconds,
            images_per_sec: (n_train + n_val) as f64 / seconds.max(1e-9),
            curve: curve.finish(),
            val_curve: val_curve.finish(),
            expected_latency_ms: match &darts.darts().latency {
                Some(l) => Some(
                    l.expected(&darts.darts().net)
                        .and_then(|e| e.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>())
                        .map_err(ctx("the latency term"))?,
                ),
                None => None,
            },
        };
        crate::progress::note(&format!(
            "search epoch {}/{epochs}: lr {:.5}, train loss {:.4} acc {:.2}%, val loss {:.4} acc {:.2}%, {}, {} images/s{}",
            epoch + 1,
            m.lr,
            m.train_loss,
            100.0 * m.train_acc,
            m.val_loss,
            100.0 * m.val_acc,
            crate::progress::duration(m.seconds),
            crate::progress::rate_text(m.images_per_sec),
            m.expected_latency_ms
                .map_or(String::new(), |l| format!(", expected latency {l:.3} ms"))
        ));
        state.metrics.push(m);
        state.history.push(snapshot(&darts.darts().net, epoch)?);
        save_checkpoint(darts.darts(), &dir, &mut state, epoch + 1)?;
    }
    // Every variant derives from the architecture weights (with PC-DARTS's warm-up covering
    // every epoch, from their initial values).
    let net = &darts.darts().net;
    let genotype = genotype::derive(
        space,
        &net.cell_weights().map_err(ctx("reading alphas"))?,
        &net.slot_weights().map_err(ctx("reading alphas"))?,
    );
    Ok(Outcome {
        genotype,
        metrics: state.metrics,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The expected-latency term of `p`'s search: the per-op table of its search network (read
/// from `table_path` when it was measured on this machine with this plan, else
/// measured and written there) summed per cell type.
fn latency_penalty(
    p: &Resolved,
    term: &crate::spec::pipeline::LatencyTerm,
    ort: Option<&'static crate::runtime::Runtime>,
    table_path: &Path,
    device: &Device,
) -> Result<crate::stages::search::darts::step::LatencyPenalty> {
    let rt = ort.ok_or_else(|| {
        Error::Runtime(
            "the search's latency term measures ops in ONNX Runtime, and none is loaded".into(),
        )
    })?;
    let space = &p.search_space;
    let plan = crate::stages::search::latency::Plan::from(term.timing.value);
    let table = crate::stages::search::latency::Table::for_space(rt, space, &plan, table_path)?;
    let mut cells: Vec<Option<Vec<f32>>> = space
        .cells
        .iter()
        .map(|c| Some(vec![0f32; c.edges.len() * c.candidates.len()]))
        .collect();
    let mut slots: Vec<Option<Vec<f32>>> = space
        .slots
        .iter()
        .map(|s| Some(vec![0f32; s.candidates.len()]))
        .collect();
    for pos in &table.positions {
        match &space.network.layers[pos.layer].kind {
            crate::space::LayerKind::Cell { cell, .. } => {
                let k = space.cells[*cell].candidates.len();
                if let Some(m) = cells[*cell].as_mut() {
                    for (j, ms) in pos.ms.iter().enumerate().take(k) {
                        m[pos.edge * k + j] += *ms as f32;
                    }
                }
            }
            crate::space::LayerKind::Choice { slot, .. } => {
                if let Some(m) = slots[*slot].as_mut() {
                    for (j, ms) in pos.ms.iter().enumerate().take(m.len()) {
                        m[j] += *ms as f32;
                    }
                }
            }
            _ => {}
        }
    }
    let tensor = |v: Vec<f32>, shape: &[usize]| {
        Tensor::from_vec(v, shape, device).map_err(ctx("the latency term"))
    };
    Ok(crate::stages::search::darts::step::LatencyPenalty {
        weight: term.weight.value,
        cells: cells
            .into_iter()
            .zip(&space.cells)
            .map(|(m, c)| {
                m.map(|m| tensor(m, &[c.edges.len(), c.candidates.len()]))
                    .transpose()
            })
            .collect::<Result<_>>()?,
        slots: slots
            .into_iter()
            .zip(&space.slots)
            .map(|(m, s)| m.map(|m| tensor(m, &[s.candidates.len()])).transpose())
            .collect::<Result<_>>()?,
    })
}

fn snapshot(net: &Supernet, epoch: usize) -> Result<AlphaSnapshot> {
    let cells = net.cell_weights().map_err(ctx("reading alphas"))?;
    let edges = net.edge_weights().map_err(ctx("reading alphas"))?;
    Ok(AlphaSnapshot {
        edges: net
            .space
            .cells
            .iter()
            .zip(edges)
            .filter_map(|(c, w)| w.map(|w| (c.name.clone(), w)))
            .collect(),
        epoch,
        cells: net
            .space
            .cells
            .iter()
            .zip(cells)
            .filter_map(|(c, w)| w.map(|w| (c.name.clone(), w)))
            .collect(),
        layers: net.slot_weights().map_err(ctx("reading alphas"))?,
    })
}

fn save_checkpoint(darts: &Darts, dir: &Path, state: &mut State, epochs_done: usize) -> Result<()> {
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    checkpoint::put(&mut tensors, "weights", &darts.net.weights.params());
    checkpoint::put(&mut tensors, "buffers", &darts.net.weights.buffers());
    checkpoint::put(&mut tensors, "alphas", &darts.net.alphas.params());
    for (n, t) in darts.w_opt.state() {
        tensors.insert(format!("opt.w.{n}"), t);
    }
    for (n, t) in darts.a_opt.state().map_err(ctx("saving"))? {
        tensors.insert(format!("opt.a.{n}"), t);
    }
    checkpoint::commit_epoch(dir, &tensors, state, epochs_done)?;
    Ok(())
}

fn load_checkpoint(darts: &mut Darts, path: &Path) -> Result<()> {
    let device = darts.net.weights.device().clone();
    let c = checkpoint::load(path, &device)?;
    c.set("weights", &darts.net.weights.params())?;
    c.set("buffers", &darts.net.weights.buffers())?;
    c.set("alphas", &darts.net.alphas.params())?;
    darts
        .w_opt
        .load_state(&c.group("opt.w"))
        .map_err(|e| Error::Input(format!("{}: {e}", path.display())))?;
    darts
        .a_opt
        .load_state(&c.group("opt.a"))
        .map_err(|e| Error::Input(format!("{}: {e}", path.display())))?;
    Ok(())
}
