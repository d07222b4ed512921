//! The whole pipeline's ETA: from the progress of the stage running now (its epoch, its
//! measured rate), the seconds left to the end of the pipeline. Shown after each epoch
//! bar's own ETA (`pipeline ETA …`) and as `pipeline_eta_s` in `--json` progress events
//! ([`crate::progress::Outlook`]).
//!
//! During the search, retraining runs at the search's measured images/s scaled by the
//! networks' cost per image ([`Work::retrain_speedup`]: the search step's multiply-adds
//! over the retrained network's); once retraining runs, at its own measured rate. The
//! stages after retraining get a fixed allowance. A multi-trial search's bar counts
//! evaluations: with a training evaluator each is so many training images of the trial
//! network ([`Work::search_item_images`]), so retraining is scaled the same way; with a
//! tabular or weight-sharing evaluator nothing measured predicts retraining, and the
//! pipeline ETA is shown only when no retraining follows.

use crate::progress::Tick;
use crate::run::{Resolved, Stage};
use crate::spec::pipeline::{Data, Evaluator, Order, Search, Variant};

/// Seconds allowed for each stage after retraining (export, validate, profile, report):
/// each takes seconds on the networks nas-pipe trains.
pub const SMALL_STAGE_S: f64 = 5.0;

/// An evaluation pass (forward only) runs this many times faster per image than a
/// training step (forward and backward).
pub const EVAL_SPEEDUP: f64 = 3.0;

/// The work of a pipeline that the estimate needs, from its spec.
#[derive(Debug, Clone, PartialEq)]
pub struct Work {
    /// Retraining; `None` without it.
    pub retrain: Option<RetrainWork>,
    /// Retraining's images/s over the search's, before retraining is measured.
    pub retrain_speedup: f64,
    /// Training images (of the search's network) one item of the search's bar stands for:
    /// 1 for a DARTS search (its bar counts images), an evaluation's training for a
    /// multi-trial search with a training evaluator; `None` when unknown.
    pub search_item_images: Option<f64>,
    /// Seconds for the stages after retraining.
    pub after_s: f64,
}

/// Retraining's work.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetrainWork {
    pub epochs: usize,
    /// Training images per epoch.
    pub images: u64,
    /// Validation images evaluated over the whole training (every `eval_every` epochs).
    pub eval_images: u64,
}

/// Seconds left to the end of the pipeline after `tick` (a search or retrain epoch bar),
/// `None` when the tick has no rate yet or comes from another bar.
pub fn left(work: &Work, tick: &Tick) -> Option<f64> {
    if !(tick.rate.is_finite() && tick.rate > 0.0) {
        return None;
    }
    let epochs_after = tick.place.epochs.saturating_sub(tick.place.epoch + 1) as f64;
    let this_stage = tick.left_s + epochs_after * tick.total as f64 / tick.rate;
    let stage = Stage::ALL
        .into_iter()
        .find(|s| s.name() == tick.place.stage)?;
    match stage {
        Stage::Search => {
            let retrain = match work.retrain {
                None => 0.0,
                Some(r) => r.seconds(tick.rate * work.search_item_images? * work.retrain_speedup),
            };
            Some(this_stage + retrain + work.after_s)
        }
        Stage::Retrain => {
            let r = work.retrain?;
            // Evaluations still to come, as a share of the whole training's.
            let evals = r.eval_images as f64 * (r.epochs.saturating_sub(tick.place.epoch)) as f64
                / r.epochs.max(1) as f64;
            Some(this_stage + evals / (EVAL_SPEEDUP * tick.rate) + work.after_s)
        }
        _ => None,
    }
}

impl RetrainWork {
    /// Seconds of the whole training, evaluations included, at `rate` training images/s.
    pub fn seconds(&self, rate: f64) -> f64 {
        (self.epochs as f64 * self.images as f64 + self.eval_images as f64 / EVAL_SPEEDUP) / rate
    }
}

impl Work {
    /// The work of pipeline `p`, from its spec and the networks' counts.
    pub fn of(p: &Resolved) -> Work {
        let s = &p.spec;
        let retrain = s.retrain.as_ref().map(|r| {
            let epochs = r.epochs.value as usize;
            let part = train_images(p).unwrap_or(0);
            let images = r.images.as_ref().map_or(part, |n| part.min(n.value.into()));
            let val = (part as f64 * s.split.validation.value).round() as u64;
            let evaluations = epochs.div_ceil(r.eval_every.value.max(1) as usize).max(1);
            RetrainWork {
                epochs,
                images,
                eval_images: val * evaluations as u64,
            }
        });
        let after = [
            s.export.is_some(),
            s.validate.is_some(),
            s.profile.is_some(),
            true,
        ];
        Work {
            retrain,
            retrain_speedup: retrain_speedup(p),
            search_item_images: search_item_images(p),
            after_s: SMALL_STAGE_S * after.iter().filter(|x| **x).count() as f64,
        }
    }
}

/// The training part's images, estimated without reading them: the data set's training
/// images (after `limit`) less the carved validation (and test) fractions; `None` when
/// only reading the files would tell (NumPy arrays).
pub fn train_images(p: &Resolved) -> Option<u64> {
    let data = &p.spec.data.value;
    let (n, own_test) = match data {
        Data::Synthetic { train, .. } => (*train as u64, true),
        _ => {
            let found = crate::data::probe(data, p.data_dir.as_deref()).ok()??;
            let limit = match data {
                Data::FashionMnist { limit, .. }
                | Data::Mnist { limit, .. }
                | Data::Cifar10 { limit, .. } => limit.as_ref().map(|l| l.value as usize),
                _ => None,
            };
            (
                found.train.min(limit.unwrap_or(usize::MAX)) as u64,
                found.test > 0,
            )
        }
    };
    let mut keep = 1.0 - p.spec.split.validation.value;
    if !own_test {
        keep -= p.spec.split.test.value;
    }
    Some((n as f64 * keep).round() as u64)
}

/// Training images one item of the search's progress bar stands for
/// ([`Work::search_item_images`]): for a trial trained by a `Train` evaluator, its epochs
/// over its training images plus its held-out images at evaluation speed.
pub fn search_item_images(p: &Resolved) -> Option<f64> {
    match p.spec.search.as_deref()? {
        Search::Darts { .. } => Some(1.0),
        Search::Trials { evaluator, .. } => match &evaluator.value {
            Evaluator::Train {
                images,
                train_portion,
                recipe,
            } => {
                let part = train_images(p)? as f64;
                let n = images
                    .as_ref()
                    .map_or(part, |i| part.min(f64::from(i.value)));
                let train = (n * train_portion.value).floor();
                Some(f64::from(recipe.epochs.value) * train + (n - train) / EVAL_SPEEDUP)
            }
            _ => None,
        },
    }
}

/// Retraining's images/s over the search's, from multiply-adds per image: a search step
/// runs the supernet (every candidate; twice over for the second order; a sampled op per
/// edge for GDAS, 1/k of the channels for PC-DARTS), retraining one architecture (the
/// fixed genotype's, else the geometric mean of the space's smallest and largest; a
/// multi-trial search's trial networks likewise, at the evaluator's size).
pub fn retrain_speedup(p: &Resolved) -> f64 {
    let retrain = match &p.genotype {
        Some((_, arch)) => p.retrain_space.discrete_cost(arch).macs as f64,
        None => {
            let r = p.retrain_space.cost_range();
            ((r.min.macs as f64) * (r.max.macs as f64)).sqrt()
        }
    };
    let search = match p.spec.search.as_deref() {
        Some(Search::Darts { order, variant, .. }) => {
            let supernet = p.search_space.supernet_cost().macs as f64;
            let per_step = match &variant.value {
                Variant::Standard => supernet,
                Variant::PcDarts { k, .. } => supernet / k.value.max(1) as f64,
                Variant::Gdas { .. } => {
                    let r = p.search_space.cost_range();
                    ((r.min.macs as f64) * (r.max.macs as f64)).sqrt()
                }
            };
            match order {
                Order::First => per_step,
                Order::Second => 2.0 * per_step,
            }
        }
        Some(Search::Trials { .. }) => {
            let r = p.search_space.cost_range();
            ((r.min.macs as f64) * (r.max.macs as f64)).sqrt()
        }
        None => retrain,
    };
    if retrain > 0.0 && search > 0.0 {
        search / retrain
    } else {
        1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::Place;

    fn work() -> Work {
        Work {
            retrain: Some(RetrainWork {
                epochs: 2,
                images: 1000,
                eval_images: 200,
            }),
            retrain_speedup: 4.0,
            search_item_images: Some(1.0),
            after_s: 10.0,
        }
    }

    fn tick(stage: &'static str, epoch: usize, epochs: usize, rate: f64, left_s: f64) -> Tick {
        Tick {
            place: Place {
                stage,
                epoch,
                epochs,
            },
            total: 100,
            rate,
            left_s,
        }
    }

    /// In the search's first epoch: the rest of it, two more epochs at the measured rate,
    /// retraining at four times that rate (2 × 1000 images plus 200 evaluated at three
    /// times the speed), and the allowance.
    #[test]
    fn during_the_search_retraining_is_scaled_from_the_search_rate() {
        let t = tick("search", 0, 3, 10.0, 5.0);
        let retrain = (2000.0 + 200.0 / 3.0) / 40.0;
        let want = 5.0 + 2.0 * 100.0 / 10.0 + retrain + 10.0;
        assert!((left(&work(), &t).unwrap() - want).abs() < 1e-9);
    }

    /// In retraining's last epoch only its rest, the last evaluation and the allowance.
    #[test]
    fn during_retraining_its_own_rate_counts() {
        let t = tick("retrain", 1, 2, 50.0, 2.0);
        let want = 2.0 + 100.0 / (3.0 * 50.0) + 10.0;
        assert!((left(&work(), &t).unwrap() - want).abs() < 1e-9);
    }

    #[test]
    fn no_rate_or_another_bar_gives_none() {
        assert_eq!(left(&work(), &tick("search", 0, 3, 0.0, 0.0)), None);
        assert_eq!(left(&work(), &tick("evaluate", 0, 1, 5.0, 1.0)), None);
        let no_retrain = Work {
            retrain: None,
            ..work()
        };
        assert_eq!(left(&no_retrain, &tick("retrain", 0, 1, 5.0, 1.0)), None);
        // A search with nothing after it but the allowance.
        let t = tick("search", 2, 3, 10.0, 1.0);
        assert_eq!(left(&no_retrain, &t), Some(11.0));
    }

    /// A multi-trial search's bar (one "epoch" of evaluations): an evaluation trains 50
    /// images, so 0.5 evaluations/s is 25 images/s of the trial network, and retraining runs
    /// at four times that; with no such measure (a tabular evaluator) there is no estimate
    /// while retraining follows.
    #[test]
    fn a_multi_trial_search_scales_retraining_from_its_evaluations() {
        let w = Work {
            search_item_images: Some(50.0),
            ..work()
        };
        let t = tick("search", 0, 1, 0.5, 30.0);
        let retrain = (2000.0 + 200.0 / 3.0) / 100.0;
        let want = 30.0 + retrain + 10.0;
        assert!((left(&w, &t).unwrap() - want).abs() < 1e-9);
        let tabular = Work {
            search_item_images: None,
            ..work()
        };
        assert_eq!(left(&tabular, &t), None);
        let alone = Work {
            retrain: None,
            ..tabular
        };
        assert_eq!(left(&alone, &t), Some(40.0));
    }

    /// The estimate falls as the work is done at a steady rate.
    #[test]
    fn the_estimate_falls_as_epochs_finish() {
        let w = work();
        let a = left(&w, &tick("search", 0, 3, 10.0, 9.0)).unwrap();
        let b = left(&w, &tick("search", 1, 3, 10.0, 9.0)).unwrap();
        let c = left(&w, &tick("retrain", 0, 2, 40.0, 20.0)).unwrap();
        assert!(a > b && b > c, "{a} {b} {c}");
    }
}
