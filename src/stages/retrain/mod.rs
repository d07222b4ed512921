//! The retrain stage: trains the final network of a genotype from scratch on the training
//! part, selects `best` on the validation part, evaluates the last weights once on the test
//! part, and leaves in the run folder everything needed to rebuild, evaluate and export it.
//!
//! Layout under `exports/<name>/retrain/`:
//! - `model.ron`: the model card (input, width, depth, normalisation, class names, the files
//!   below); `space.ron` (the space, libraries inline) and `genotype.ron` beside it. These
//!   three rebuild the network with nothing else ([`load_model`]);
//! - `last.safetensors`, `best.safetensors`: parameters and BN statistics under their
//!   hierarchical names, after the last epoch and after the epoch with the best validation
//!   accuracy (export uses `last`);
//! - `checkpoint-<epoch>.safetensors` and `state.json`: weights, buffers and momentum after
//!   the last finished epoch, the spec hash and the metrics so far (resume);
//! - `metrics.json`: per epoch, training loss and accuracy, validation loss and accuracy
//!   (epochs that evaluate), learning rate, drop-path probability, seconds and images/s;
//! - `evaluation.json`: the test accuracy, loss, confusion matrix and per-class accuracy of
//!   `last`, evaluated once after the last epoch (nothing is selected on it).
//!
//! Randomness of epoch `e` (shuffle, augmentation, drop-path masks) derives from (seed, e),
//! so a resumed training ends with the same weights as an uninterrupted one on CPU.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::data::{self, BatchConfig, Batcher, Normalize};
use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use crate::nets::average::Ema;
use crate::nets::model::Model;
use crate::nets::train::Evaluation;
use crate::nets::train::{Recipe, Trainer, evaluate};
use crate::run::Resolved;
use crate::run::RunDir;
use crate::run::checkpoint::{self, Kept, StateFile};
use crate::run::hash::retrain_hash;
use crate::run::lock::FileHash;
use crate::run::metrics::Curve;
use crate::run::resolved::{eval_batcher, normalization};
use crate::run::retrain::{
    CARD_VERSION, EpochMetrics, ModelCard, load_model, load_weights, save_weights, weights_path,
};
use crate::space::discrete::Net;
use crate::space::genotype::{self, Genotype};

pub mod pace;

/// Version of `state.json`.
pub const STATE_VERSION: u32 = 2;
/// Checkpoint entries of the weight average: its parameters, its BN statistics, its count
/// of updates.
const EMA_WEIGHTS: &str = "ema.weights";
const EMA_BUFFERS: &str = "ema.buffers";
const EMA_UPDATES: &str = "ema.updates";
/// Drop-path masks draw from this stream of the epoch's generator.
const DROP_PATH_STREAM: u64 = 3;
/// `retrain/state.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    pub spec_hash: String,
    pub epochs_done: usize,
    pub checkpoint: String,
    pub metrics: Vec<EpochMetrics>,
    /// Epoch (0-based) and validation accuracy of `best.safetensors`.
    pub best: Option<(usize, f64)>,
    /// The checkpoints kept, oldest first, with their hashes.
    #[serde(default)]
    pub kept: Vec<Kept>,
    /// `last.safetensors` and `best.safetensors` → their hashes when last written, which
    /// readers check them against ([`crate::run::retrain::verify_model`]).
    #[serde(default)]
    pub weights: BTreeMap<String, FileHash>,
}

impl StateFile for State {
    const VERSION: u32 = STATE_VERSION;
    fn version(&self) -> u32 {
        self.version
    }
    fn spec_hash(&self) -> &str {
        &self.spec_hash
    }
    fn epochs(&self) -> (usize, usize) {
        (self.epochs_done, self.metrics.len())
    }
    fn checkpoint(&self) -> &str {
        &self.checkpoint
    }
    fn kept(&self) -> &[Kept] {
        &self.kept
    }
    fn kept_mut(&mut self) -> &mut Vec<Kept> {
        &mut self.kept
    }
    /// Going back also forgets a best epoch after `epochs_done`: the best of the epochs
    /// before it (the redone epochs find the same again).
    fn set_epochs(&mut self, epochs_done: usize, checkpoint: String) {
        self.epochs_done = epochs_done;
        self.checkpoint = checkpoint;
        self.metrics.truncate(epochs_done);
        if self.best.is_some_and(|(e, _)| e >= epochs_done) {
            self.best = crate::run::retrain::best_epoch(&self.metrics);
        }
    }
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
    /// A budget's seconds for the whole training (its evaluations included): each epoch's
    /// images, and the number of epochs, are fitted to the time left ([`pace`]).
    pub paced: Option<f64>,
}

fn ctx(stage: &str) -> impl Fn(candle_core::Error) -> Error + '_ {
    move |e| Error::Input(format!("{stage}: {}", crate::error::candle_message(&e)))
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
    let searched = RunDir::new(run_dir).genotype();
    if searched.exists() {
        // The derived genotype is read only as the derive stage wrote it.
        crate::run::outputs::verify(run_dir, std::slice::from_ref(&searched)).map_err(
            |e| match e {
                Error::Input(m) => Error::Input(format!(
                    "{m}. To train a genotype of your own, give it with `--genotype FILE`"
                )),
                other => other,
            },
        )?;
        return from(&searched.display().to_string());
    }
    Err(Error::Input(format!(
        "pipeline \"{}\" has no genotype to train: run `nas-pipe search` first (it writes {}), \
         pass --genotype, or set `genotype:` in the pipeline",
        p.spec.name.value,
        searched.display()
    )))
}

/// Images/s of `p`'s retraining of architecture `arch` on `device`, as its epochs run:
/// `steps` steps after one untimed, on `train`'s (the training part's) shuffled and
/// augmented batches at the recipe's batch size (making them timed too), with its auxiliary
/// head and its final drop-path probability.
pub fn calibrate(
    p: &Resolved,
    arch: &genotype::Architecture,
    train: &data::Dataset,
    device: &Device,
    steps: usize,
) -> Result<f64> {
    let Some(spec) = &p.spec.retrain else {
        return Err(Error::Input(
            "calibrating without a `retrain` section".into(),
        ));
    };
    let recipe = Recipe::from_spec(spec)?;
    train.check_input(p.retrain_space.input)?;
    let norm = normalization(p, train)?;
    let batcher = train_batcher(p, train, norm, &recipe)?;
    let net = p.retrain_space.build(arch);
    let model = Model::new(&net, device, p.spec.seed, recipe.auxiliary_weight > 0.0)
        .map_err(ctx("building the network"))?;
    let mut trainer = Trainer::new(model, &recipe).map_err(ctx("building the network"))?;
    let batches = batcher.epoch(0, device);
    let count = batcher.batches_per_epoch().max(1);
    let mut rng = data::rng::derive(p.spec.seed, 0, DROP_PATH_STREAM);
    let mut next = 0;
    crate::nets::timing::rate(device, 1, steps, &mut || {
        let b = batches.batch(next % count)?;
        next += 1;
        let s = trainer.step(
            &b.images,
            &b.labels,
            recipe.rates.lr,
            recipe.drop_path,
            &mut rng,
        )?;
        Ok(s.count)
    })
    .map_err(ctx("calibrating retraining"))
}

/// Retraining's batcher over `train`: shuffled and augmented, with the spec's images per
/// epoch when it has them.
fn train_batcher(
    p: &Resolved,
    train: &data::Dataset,
    norm: Normalize,
    recipe: &Recipe,
) -> Result<Batcher> {
    let Some(spec) = &p.spec.retrain else {
        return Err(Error::Input("no `retrain` section".into()));
    };
    let b = Batcher::new(
        train.clone(),
        train.all(),
        norm,
        BatchConfig {
            batch_size: recipe.batch_size,
            shuffle: true,
            augment: spec.augment,
            seed: p.spec.seed,
            stream: 1,
        },
    )?;
    Ok(match &spec.images {
        Some(n) => b.with_epoch_images(n.value as usize),
        None => b,
    })
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

    let parts = p.load_data(seed)?;
    let (train, val, test) = (parts.train, parts.val, parts.test);
    for d in [&train, &val, &test] {
        d.check_input(space.input)?;
    }
    let norm = normalization(p, &train)?;
    let classes = parts.classes;
    let train_b = train_batcher(p, &train, norm.clone(), &recipe)?;
    let all = val.all();
    let val_b = eval_batcher(val, all, norm.clone(), seed)?;
    let all = test.all();
    let test_b = eval_batcher(test, all, norm.clone(), seed)?;

    let model = Model::new(&net, device, seed, recipe.auxiliary_weight > 0.0)
        .map_err(ctx("building the network"))?;
    let mut trainer = Trainer::new(model, &recipe).map_err(ctx("building the network"))?;

    let dir = RunDir::new(run_dir).retrain();
    let hash = retrain_hash(p, &genotype.0)?;
    let state_path = dir.join(crate::run::dir::model_file::STATE);
    let advice = checkpoint::restart_advice("retrain", &dir);
    // Paced, a training may run more epochs than its spec's.
    let bound = if opts.paced.is_some() {
        usize::MAX
    } else {
        recipe.epochs
    };
    let read = checkpoint::read_state::<State>(&state_path, &hash, "retrain", bound, &advice)?;
    let mut state = match read {
        Some(mut state) => {
            checkpoint::resume(run_dir, &dir, &mut state, &advice, |path| {
                let c = checkpoint::load(path, device)?;
                c.set("weights", &trainer.model.store.params())?;
                c.set("buffers", &trainer.model.store.buffers())?;
                if let Some(ema) = &mut trainer.ema {
                    load_average(&c, ema)?;
                }
                trainer
                    .opt
                    .load_state(&c.group("opt"))
                    .map_err(|e| Error::Input(format!("{}: {e}", c.path.display())))
            })?;
            state
        }
        None => State {
            version: STATE_VERSION,
            spec_hash: hash,
            epochs_done: 0,
            checkpoint: String::new(),
            metrics: Vec::new(),
            best: None,
            kept: Vec::new(),
            weights: BTreeMap::new(),
        },
    };
    // After the state check: a run refused for another spec leaves the folder as it was.
    write_card(p, genotype, &net, &norm, &classes, &dir)?;

    let started = Instant::now();
    let planned = recipe.epochs;
    let pace = opts.paced.map(|seconds| pace::Pace {
        seconds,
        epochs: planned,
        planned: train_b.len(),
        available: train.len(),
        least: recipe.batch_size.min(train.len()),
        val: val_b.len(),
        test: test_b.len(),
        eval_every: recipe.eval_every,
    });
    let next = |done: &[EpochMetrics]| match &pace {
        Some(pace) => pace.next(done),
        None => pace::Next {
            epochs: planned,
            images: train_b.len(),
        },
    };
    let stop = opts.stop_after.unwrap_or(usize::MAX);
    // What the next epoch runs under, while one is left to run.
    let pending = |done: &[EpochMetrics]| {
        let now = next(done);
        (done.len() < now.epochs && done.len() < stop).then_some(now)
    };
    if pending(&state.metrics).is_some() {
        // The test evaluation belongs to the weights this training ends with.
        crate::fsutil::remove_if_exists(&dir.join(crate::run::dir::model_file::EVALUATION))?;
    }
    while let Some(now) = pending(&state.metrics) {
        let epoch = state.metrics.len();
        let t0 = Instant::now();
        let epochs = now.epochs;
        say_paced(pace.as_ref(), &state.metrics, now);
        let train_b = train_b.clone().with_epoch_images(now.images);
        let steps = train_b.batches_per_epoch();
        // The span of the schedule this epoch covers: `epoch..epoch + 1` unless pacing
        // changed the number of epochs.
        let (x0, share) = pace::span(&state.metrics, planned, epochs);
        let as_planned = x0 == epoch as f64 && share == 1.0;
        let drop_path = recipe.drop_path_at_position(x0);
        let mut rng = data::rng::derive(seed, epoch as u64, DROP_PATH_STREAM);
        let lr_at = |step: usize| {
            if as_planned {
                recipe.rates.at_step(epoch * steps + step, steps, planned)
            } else {
                recipe
                    .rates
                    .at(x0 + share * step as f64 / steps as f64, steps, planned)
            }
        };
        let bar = crate::progress::epoch(
            opts.progress,
            train_b.len(),
            crate::run::Stage::Retrain.name(),
            epoch,
            epochs,
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
            let t = Instant::now();
            let e = evaluate(
                trainer.deployed(),
                &val_b,
                device,
                "",
                &classes,
                opts.progress,
            )?;
            Some((e, t.elapsed().as_secs_f64()))
        } else {
            None
        };
        let (eval, eval_seconds) = (eval.as_ref().map(|e| &e.0), eval.as_ref().map(|e| e.1));
        let m = EpochMetrics {
            epoch,
            lr: (lr_at(0), lr_at(steps - 1)),
            drop_path,
            train_loss: loss_sum / n.max(1) as f64,
            train_acc: right as f64 / n.max(1) as f64,
            val_loss: eval.as_ref().map(|e| e.loss),
            val_acc: eval.as_ref().map(|e| e.accuracy),
            seconds,
            images_per_sec: n as f64 / seconds.max(1e-9),
            images: n,
            epochs,
            eval_seconds,
            curve: curve.finish(),
        };
        crate::progress::note(&format!(
            "retrain epoch {}/{epochs}: lr {:.5}→{:.5}, train loss {:.4} acc {:.2}%{}, {}, {} images/s",
            epoch + 1,
            m.lr.0,
            m.lr.1,
            m.train_loss,
            100.0 * m.train_acc,
            match eval {
                Some(e) => format!(", val loss {:.4} acc {:.2}%", e.loss, 100.0 * e.accuracy),
                None => String::new(),
            },
            crate::progress::duration(m.seconds),
            crate::progress::rate_text(m.images_per_sec)
        ));
        let improved = match (eval, state.best) {
            (Some(e), Some((_, best))) => e.accuracy > best,
            (Some(_), None) => true,
            (None, _) => false,
        };
        state.metrics.push(m);
        save_recorded(
            trainer.deployed(),
            &dir,
            crate::run::dir::model_file::LAST,
            &mut state,
        )?;
        if improved && let Some(e) = eval {
            save_recorded(
                trainer.deployed(),
                &dir,
                crate::run::dir::model_file::BEST,
                &mut state,
            )?;
            state.best = Some((epoch, e.accuracy));
        }
        checkpoint::write_json(
            &dir.join(crate::run::dir::model_file::METRICS),
            &state.metrics,
        )?;
        save_checkpoint(&trainer, &dir, &mut state, epoch + 1)?;
    }
    let evaluation = if state.epochs_done >= next(&state.metrics).epochs {
        Some(final_test(
            trainer.deployed(),
            &test_b,
            device,
            &dir,
            &classes,
            opts.progress,
        )?)
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

/// Says a change of pace: epoch `done.len()` runs `now`, other than the epoch before it.
fn say_paced(pace: Option<&pace::Pace>, done: &[EpochMetrics], now: pace::Next) {
    let (Some(pace), Some(last)) = (pace, done.last()) else {
        return;
    };
    let before = pace.ran(last);
    if now == before {
        return;
    }
    let epochs = if now.epochs == before.epochs {
        String::new()
    } else {
        format!(" and {} epochs in all (were {})", now.epochs, before.epochs)
    };
    crate::progress::note(&format!(
        "budget: retraining ran at {} images/s in epoch {}; epochs {}–{} get {} images each (were {}){epochs}, to end within the budget",
        crate::progress::rate_text(last.images_per_sec),
        done.len(),
        done.len() + 1,
        now.epochs,
        crate::space::show::thousands(now.images as u64),
        crate::space::show::thousands(before.images as u64),
    ));
}

/// The one test evaluation, of the last weights (`model` after the last epoch): read back
/// from `evaluation.json` when an earlier run of this training wrote it (a run that trains
/// removes it first), else evaluated and written there.
fn final_test(
    model: &Model,
    test_b: &Batcher,
    device: &Device,
    dir: &Path,
    classes: &[String],
    progress: bool,
) -> Result<Evaluation> {
    let path = dir.join(crate::run::dir::model_file::EVALUATION);
    let earlier = || -> Option<Evaluation> {
        let e: Evaluation = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
        (e.classes == classes).then_some(e)
    };
    if let Some(e) = earlier() {
        return Ok(e);
    }
    let mut e = evaluate(model, test_b, device, "", classes, progress)?;
    e.weights = crate::run::dir::model_file::LAST.into();
    crate::progress::note(&format!(
        "retrain: test loss {:.4} acc {:.2}% ({} test images, {}, evaluated once)",
        e.loss,
        100.0 * e.accuracy,
        e.images,
        e.weights
    ));
    checkpoint::write_json(&path, &e)?;
    Ok(e)
}

/// Writes the weights file `name` of `dir` and records its hash in `state`.
fn save_recorded(model: &Model, dir: &Path, name: &str, state: &mut State) -> Result<()> {
    let path = dir.join(name);
    save_weights(model, &path)?;
    if let Some(h) = FileHash::of(&path)? {
        state.weights.insert(name.to_string(), h);
    }
    Ok(())
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
    if let Some(ema) = &trainer.ema {
        checkpoint::put(&mut tensors, EMA_WEIGHTS, &ema.model().store.params());
        checkpoint::put(&mut tensors, EMA_BUFFERS, &ema.model().store.buffers());
        // f64 holds every count of updates a training reaches exactly.
        let n = Tensor::new(&[ema.updates() as f64], &Device::Cpu)
            .map_err(ctx("keeping the weight average"))?;
        tensors.insert(EMA_UPDATES.into(), n);
    }
    for (n, t) in trainer.opt.state() {
        tensors.insert(format!("opt.{n}"), t);
    }
    checkpoint::commit_epoch(dir, &tensors, state, epochs_done)?;
    Ok(())
}

/// Restores the weight average from a checkpoint written by [`save_checkpoint`].
fn load_average(c: &checkpoint::Loaded, ema: &mut Ema) -> Result<()> {
    c.set(EMA_WEIGHTS, &ema.model().store.params())?;
    c.set(EMA_BUFFERS, &ema.model().store.buffers())?;
    let n = c
        .tensors
        .get(EMA_UPDATES)
        .and_then(|t| t.to_dtype(candle_core::DType::F64).ok())
        .and_then(|t| t.to_vec1::<f64>().ok())
        .and_then(|v| v.first().copied())
        .filter(|n| n.is_finite() && *n >= 0.0 && n.fract() == 0.0);
    let Some(n) = n else {
        return Err(Error::Input(format!(
            "{}: `{EMA_UPDATES}` is missing or not a count of updates",
            c.path.display()
        )));
    };
    ema.resume_at(n as u64);
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
        space: crate::run::dir::model_file::SPACE.into(),
        genotype: crate::run::dir::model_file::GENOTYPE.into(),
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
        &dir.join(crate::run::dir::model_file::SPACE),
        format!(
            "// The space \"{}\" as read from {} (libraries inline).\n{space}\n",
            p.retrain_space.name,
            p.space_path.display()
        )
        .as_bytes(),
    )?;
    write_atomic(
        &dir.join(crate::run::dir::model_file::GENOTYPE),
        genotype.0.to_ron().as_bytes(),
    )?;
    write_atomic(
        &dir.join(crate::run::dir::model_file::CARD),
        format!("{card_text}\n").as_bytes(),
    )
}

/// `nas-pipe eval`: evaluates `weights` (a file in the retrain folder or a path) of the model
/// in `dir` on the pipeline's test part.
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
    let test = p.load_data(p.spec.seed)?.test;
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
