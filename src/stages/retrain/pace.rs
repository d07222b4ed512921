//! Keeping a budgeted retraining to its time: before each epoch after the first, the
//! images of that epoch are fitted to the time the budget has left, at the rate the last
//! epoch ran. The number of epochs, and so the learning-rate schedule's length in epochs,
//! stays as planned; each epoch keeps its share of the schedule however many images it has.
//!
//! The images of an epoch are a function of the metrics recorded before it and the
//! allowance alone, so a resumed run decides as the uninterrupted one did.

use crate::run::retrain::EpochMetrics;

/// Projected ends this close to the allowance (a fraction of it) keep the images as they
/// are: small misses are not worth a change of pace.
pub const DEAD_BAND: f64 = 0.01;

/// What pacing works with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pace {
    /// Seconds allowed for every epoch's training and evaluation and the test evaluation.
    pub seconds: f64,
    pub epochs: usize,
    /// The plan's images per epoch (the first epoch's).
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

impl Pace {
    /// Images of epoch `done.len()` given the epochs `done` (their recorded images and
    /// times).
    pub fn images(&self, done: &[EpochMetrics]) -> usize {
        let Some(last) = done.last() else {
            return self.planned;
        };
        let current = images_of(last, self.planned);
        let k = done.len();
        if k >= self.epochs || last.seconds <= 0.0 || current == 0 {
            return current;
        }
        let rate = current as f64 / last.seconds;
        let spent: f64 = done
            .iter()
            .map(|m| m.seconds + m.eval_seconds.unwrap_or(0.0))
            .sum();
        let eval = done
            .iter()
            .rev()
            .find_map(|m| m.eval_seconds)
            .unwrap_or(0.0);
        let evals_left = (k..self.epochs)
            .filter(|e| (e + 1) % self.eval_every.max(1) == 0 || e + 1 == self.epochs)
            .count();
        let test = eval * self.test as f64 / self.val.max(1) as f64;
        let left = self.seconds - spent - test - eval * evals_left as f64;
        let epochs_left = (self.epochs - k) as f64;
        let projected = epochs_left * current as f64 / rate;
        if (projected - left).abs() <= DEAD_BAND * self.seconds {
            return current;
        }
        let fit = (left.max(0.0) * rate / epochs_left).floor() as usize;
        fit.clamp(self.least.min(self.available), self.available)
    }
}

/// The images epoch `m` trained on: recorded, or (metrics written before they were) the
/// plan's.
pub fn images_of(m: &EpochMetrics, planned: usize) -> usize {
    if m.images > 0 { m.images } else { planned }
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

    /// An epoch of `images` trained at `rate`, evaluated in `eval` seconds.
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
            eval_seconds: Some(eval),
            curve: Vec::new(),
        }
    }

    #[test]
    fn the_first_epoch_runs_the_plan() {
        assert_eq!(pace().images(&[]), 1000);
    }

    /// 5 epochs of 1000 with 5 s evaluations (10 s for the test) fit 1000 s at 5000/965
    /// images/s; at 5 images/s they take 1035 s, 3.5% over: trimmed to fit.
    #[test]
    fn on_time_keeps_the_images_and_late_trims_them() {
        let p = pace();
        let on_time = [epoch(0, 1000, 5000.0 / 965.0, 5.0)];
        assert_eq!(p.images(&on_time), 1000);
        let late = [epoch(0, 1000, 5.0, 5.0)];
        // Left: 1000 − 205 spent − 10 test − 4 · 5 evaluations = 765 s for 4 epochs at
        // 5 images/s.
        assert_eq!(p.images(&late), (765.0 * 5.0 / 4.0) as usize);
        let run = [epoch(0, 1000, 5.0, 5.0), epoch(1, 956, 5.0, 5.0)];
        // The second epoch ran as fitted: the third keeps its images.
        assert_eq!(p.images(&run), 956);
    }

    #[test]
    fn early_grows_the_images_up_to_the_training_part() {
        let p = pace();
        let fast = [epoch(0, 1000, 10.0, 5.0)];
        // 1000 − 105 − 10 − 20 = 865 s for 4 epochs at 10 images/s.
        assert_eq!(p.images(&fast), 2162);
        let very = [epoch(0, 1000, 100.0, 5.0)];
        assert_eq!(p.images(&very), 5000);
    }

    #[test]
    fn out_of_time_runs_one_batch_an_epoch_and_the_last_epoch_decides_nothing() {
        let p = pace();
        let slow = [epoch(0, 1000, 1.0, 5.0)];
        assert_eq!(p.images(&slow), 64);
        let all: Vec<_> = (0..5).map(|e| epoch(e, 700, 1.0, 5.0)).collect();
        assert_eq!(p.images(&all), 700);
    }

    #[test]
    fn epochs_recorded_without_their_images_count_as_planned() {
        let p = pace();
        let mut old = epoch(0, 1000, 4.0, 5.0);
        old.images = 0;
        // As `late` of a 4-images/s epoch of 1000: 1000 − 255 − 30 = 715 s for 4 epochs.
        assert_eq!(p.images(&[old]), 715);
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
        assert_eq!(p.images(std::slice::from_ref(&first)), 750);
        let mut first = epoch(0, 1000, 5.0, 0.0);
        first.eval_seconds = None;
        let second = epoch(1, 1000, 5.0, 10.0);
        // Left: 1000 − 410 − 20 test − 2 evaluations (epochs 4 and 5) · 10 = 550 s, 3 epochs.
        assert_eq!(p.images(&[first, second]), (550.0 * 5.0 / 3.0) as usize);
    }
}
