//! Keeping a budgeted retraining to its time: before each epoch after the first, the
//! epoch's images (and, when even the whole training part per epoch would leave time over,
//! the number of epochs) are fitted to the time the budget has left, at the rate the last
//! epoch ran. A few steps measured before the first epoch do not hold for an hour: the
//! machine's speed drifts, and the first steps of a fresh network run slower or faster than
//! its epochs.
//!
//! The learning-rate schedule keeps its length in the planned epochs: each epoch covers a
//! span of it ([`span`]), the whole rest of it shared evenly among the epochs left whenever
//! their number changes, so the cosine still ends at its floor after the last step.
//!
//! What an epoch runs is a function of the metrics recorded before it and the allowance
//! alone, so a resumed run decides as the uninterrupted one did from the same epochs.

use crate::run::retrain::EpochMetrics;

/// Projected ends this close to the allowance (a fraction of it) keep the images as they
/// are: small misses are not worth a change of pace.
pub const DEAD_BAND: f64 = 0.01;

/// What pacing works with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pace {
    /// Seconds allowed for every epoch's training and evaluation and the test evaluation.
    pub seconds: f64,
    /// The plan's epochs (the schedule's length) and images per epoch.
    pub epochs: usize,
    pub planned: usize,
    /// The training part's images (the most an epoch can have).
    pub available: usize,
    /// The fewest an epoch can have (one batch).
    pub least: usize,
    /// Validation and test images, for the cost of the test evaluation.
    pub val: usize,
    pub test: usize,
    pub eval_every: usize,
}

/// What the next epoch runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Next {
    /// The training's epochs, this one's included.
    pub epochs: usize,
    pub images: usize,
}

impl Pace {
    /// What epoch `done.len()` runs given the epochs `done` (their recorded images, epochs
    /// and times): the plan first; then the images that fit the time left at the last
    /// epoch's rate over the epochs planned so far, and more epochs only when those would
    /// need more images than the training part has. Once `done` holds every epoch, `Next`
    /// says the last epoch's figures (nothing is left to run).
    pub fn next(&self, done: &[EpochMetrics]) -> Next {
        let Some(last) = done.last() else {
            return Next {
                epochs: self.epochs,
                images: self.planned,
            };
        };
        let now = self.ran(last);
        let k = done.len();
        if k >= now.epochs || last.seconds <= 0.0 || now.images == 0 {
            return now;
        }
        let rate = now.images as f64 / last.seconds;
        let spent: f64 = done
            .iter()
            .map(|m| m.seconds + m.eval_seconds.unwrap_or(0.0))
            .sum();
        let eval = done
            .iter()
            .rev()
            .find_map(|m| m.eval_seconds)
            .unwrap_or(0.0);
        let test = eval * self.test as f64 / self.val.max(1) as f64;
        let every = self.eval_every.max(1);
        // Seconds left for training the epochs up to `total`.
        let left = |total: usize| {
            let evals = (k..total).filter(|e| (e + 1) % every == 0 || e + 1 == total);
            self.seconds - spent - test - eval * evals.count() as f64
        };
        let fit = |total: usize| left(total).max(0.0) * rate / (total - k) as f64;
        let projected = (now.epochs - k) as f64 * now.images as f64 / rate;
        if (projected - left(now.epochs)).abs() <= DEAD_BAND * self.seconds {
            return now;
        }
        let mut total = now.epochs;
        while fit(total) > self.available as f64 && total < k + MAX_MORE {
            total += 1;
        }
        Next {
            epochs: total,
            images: (fit(total).floor() as usize)
                .clamp(self.least.min(self.available), self.available),
        }
    }
}

impl Pace {
    /// What epoch `m` ran under (the plan's figures where `m` predates recording them).
    pub fn ran(&self, m: &EpochMetrics) -> Next {
        Next {
            epochs: epochs_of(m, self.epochs),
            images: images_of(m, self.planned),
        }
    }
}

/// The most epochs pacing adds at once.
const MAX_MORE: usize = 10_000;

/// The images epoch `m` trained on: recorded, or (metrics written before they were) the
/// plan's.
fn images_of(m: &EpochMetrics, planned: usize) -> usize {
    if m.images > 0 { m.images } else { planned }
}

/// The training's epochs when epoch `m` ran: recorded, or the plan's.
fn epochs_of(m: &EpochMetrics, planned: usize) -> usize {
    if m.epochs > 0 { m.epochs } else { planned }
}

/// The span of the schedule (in planned epochs, `0..planned`) that epoch `done.len()`
/// covers when the training has `epochs` epochs: its start, and its length. Each epoch
/// takes an even share of what the epochs before it left; without a change of epochs, epoch
/// `k` covers exactly `k..k + 1`.
pub fn span(done: &[EpochMetrics], planned: usize, epochs: usize) -> (f64, f64) {
    let whole = planned as f64;
    let share =
        |start: f64, k: usize, total: usize| (whole - start) / (total.max(k + 1) - k) as f64;
    let start = done.iter().enumerate().fold(0.0, |start, (k, m)| {
        start + share(start, k, epochs_of(m, planned))
    });
    (start, share(start, done.len(), epochs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pace() -> Pace {
        Pace {
            seconds: 1000.0,
            epochs: 5,
            planned: 1000,
            available: 5000,
            least: 64,
            val: 100,
            test: 200,
            eval_every: 1,
        }
    }

    /// An epoch of `images` trained at `rate`, evaluated in `eval` seconds, of 5 epochs.
    fn epoch(e: usize, images: usize, rate: f64, eval: f64) -> EpochMetrics {
        EpochMetrics {
            epoch: e,
            lr: (0.1, 0.1),
            drop_path: 0.0,
            train_loss: 1.0,
            train_acc: 0.5,
            val_loss: Some(1.0),
            val_acc: Some(0.5),
            seconds: images as f64 / rate,
            images_per_sec: rate,
            images,
            epochs: 5,
            eval_seconds: Some(eval),
            curve: Vec::new(),
        }
    }

    fn next(epochs: usize, images: usize) -> Next {
        Next { epochs, images }
    }

    #[test]
    fn the_first_epoch_runs_the_plan() {
        assert_eq!(pace().next(&[]), next(5, 1000));
    }

    /// 5 epochs of 1000 with 5 s evaluations (10 s for the test) fit 1000 s at 5000/965
    /// images/s; at 5 images/s they take 1035 s, 3.5% over: trimmed to fit.
    #[test]
    fn on_time_keeps_the_images_and_late_trims_them() {
        let p = pace();
        let on_time = [epoch(0, 1000, 5000.0 / 965.0, 5.0)];
        assert_eq!(p.next(&on_time), next(5, 1000));
        let late = [epoch(0, 1000, 5.0, 5.0)];
        // Left: 1000 − 205 spent − 10 test − 4 · 5 evaluations = 765 s for 4 epochs at
        // 5 images/s.
        assert_eq!(p.next(&late), next(5, (765.0 * 5.0 / 4.0) as usize));
        let run = [epoch(0, 1000, 5.0, 5.0), epoch(1, 956, 5.0, 5.0)];
        // The second epoch ran as fitted: the third keeps its images.
        assert_eq!(p.next(&run), next(5, 956));
    }

    /// Ahead of time: more images per epoch, then more epochs once an epoch would need
    /// more than the training part.
    #[test]
    fn early_grows_the_images_then_the_epochs() {
        let p = pace();
        let fast = [epoch(0, 1000, 10.0, 5.0)];
        // 1000 − 105 − 10 − 20 = 865 s for 4 epochs at 10 images/s.
        assert_eq!(p.next(&fast), next(5, 2162));
        // At 100 images/s, 18 more epochs of 4,916: (1000 − 15 − 10 − 18 · 5) · 100 / 18.
        // 17 would need 5,235 each.
        let very = [epoch(0, 1000, 100.0, 5.0)];
        assert_eq!(p.next(&very), next(19, 4916));
        // Epochs run under 19 keep it.
        let mut ran = very.to_vec();
        let mut second = epoch(1, 4916, 100.0, 5.0);
        second.epochs = 19;
        ran.push(second);
        assert_eq!(p.next(&ran).epochs, 19);
    }

    #[test]
    fn out_of_time_runs_one_batch_an_epoch_and_a_finished_training_decides_nothing() {
        let p = pace();
        let slow = [epoch(0, 1000, 1.0, 5.0)];
        assert_eq!(p.next(&slow), next(5, 64));
        let all: Vec<_> = (0..5).map(|e| epoch(e, 700, 1.0, 5.0)).collect();
        assert_eq!(p.next(&all), next(5, 700));
    }

    #[test]
    fn epochs_recorded_without_their_images_or_epochs_count_as_planned() {
        let p = pace();
        let mut old = epoch(0, 1000, 4.0, 5.0);
        old.images = 0;
        old.epochs = 0;
        // As `late` of a 4-images/s epoch of 1000: 1000 − 255 − 30 = 715 s for 4 epochs.
        assert_eq!(p.next(&[old]), next(5, 715));
    }

    /// Epochs that do not evaluate cost no evaluation: with evaluation every 2 epochs,
    /// epochs 2 and 4 (0-based 1, 3) and the last evaluate.
    #[test]
    fn only_evaluating_epochs_are_charged_an_evaluation() {
        let p = Pace {
            eval_every: 2,
            ..pace()
        };
        let mut first = epoch(0, 1000, 4.0, 0.0);
        first.eval_seconds = None;
        // No evaluation timed yet: none is charged. 750 s left for 4 epochs at 4 images/s.
        assert_eq!(p.next(std::slice::from_ref(&first)), next(5, 750));
        let mut first = epoch(0, 1000, 5.0, 0.0);
        first.eval_seconds = None;
        let second = epoch(1, 1000, 5.0, 10.0);
        // Left: 1000 − 410 − 20 test − 2 evaluations (epochs 4 and 5) · 10 = 550 s, 3 epochs.
        assert_eq!(
            p.next(&[first, second]),
            next(5, (550.0 * 5.0 / 3.0) as usize)
        );
    }

    /// Without a change of epochs epoch k spans k..k+1 exactly; after one, the epochs left
    /// share the rest evenly and the last ends at the plan's end.
    #[test]
    fn the_schedule_spans_its_planned_length() {
        let ran = |epochs: &[usize]| -> Vec<EpochMetrics> {
            epochs
                .iter()
                .enumerate()
                .map(|(k, &n)| {
                    let mut m = epoch(k, 1000, 5.0, 1.0);
                    m.epochs = n;
                    m
                })
                .collect()
        };
        assert_eq!(span(&[], 5, 5), (0.0, 1.0));
        assert_eq!(span(&ran(&[5, 5, 5]), 5, 5), (3.0, 1.0));
        // Epoch 1 of 5, then 9 in all: 8 share the other 4 planned epochs.
        assert_eq!(span(&ran(&[5]), 5, 9), (1.0, 0.5));
        let (start, len) = span(&ran(&[5, 9, 9, 9, 9, 9, 9, 9]), 5, 9);
        assert!((start + len - 5.0).abs() < 1e-12, "{start} {len}");
        assert!((len - 0.5).abs() < 1e-12, "{len}");
    }
}
