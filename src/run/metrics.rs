//! Learning curves inside an epoch: the running mean of a step's loss and accuracy, kept as
//! a few points per epoch in the search and retrain state files so that a short run (a few
//! epochs) still draws a curve in the report.

use serde::{Deserialize, Serialize};

/// Points recorded per epoch (fewer when an epoch has fewer steps).
pub const POINTS_PER_EPOCH: usize = 20;

/// The mean loss and accuracy of the steps since the previous point.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    /// Steps done since the start of the stage when the point was taken (1-based: the
    /// point after the first step of the first epoch has `step` 1).
    pub step: usize,
    /// Mean loss per image over the steps the point covers.
    pub loss: f64,
    /// Fraction of those images classified right.
    pub acc: f64,
}

/// Collects the points of one epoch.
#[derive(Debug, Clone)]
pub struct Curve {
    /// Steps per point.
    every: usize,
    /// Steps of earlier epochs.
    offset: usize,
    steps: usize,
    loss_sum: f64,
    right: usize,
    images: usize,
    points: Vec<CurvePoint>,
}

impl Curve {
    /// A curve for epoch `epoch` (0-based) of `steps` steps.
    pub fn new(epoch: usize, steps: usize) -> Curve {
        Curve {
            every: steps.div_ceil(POINTS_PER_EPOCH).max(1),
            offset: epoch * steps,
            steps: 0,
            loss_sum: 0.0,
            right: 0,
            images: 0,
            points: Vec::new(),
        }
    }

    /// Adds a step of `count` images with mean loss `loss`, `correct` of them right.
    pub fn add(&mut self, loss: f64, correct: usize, count: usize) {
        self.steps += 1;
        self.loss_sum += loss * count as f64;
        self.right += correct;
        self.images += count;
        if self.steps.is_multiple_of(self.every) {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.images == 0 {
            return;
        }
        self.points.push(CurvePoint {
            step: self.offset + self.steps,
            loss: self.loss_sum / self.images as f64,
            acc: self.right as f64 / self.images as f64,
        });
        self.loss_sum = 0.0;
        self.right = 0;
        self.images = 0;
    }

    /// The epoch's points; a last partial window becomes a point of its own.
    pub fn finish(mut self) -> Vec<CurvePoint> {
        self.flush();
        self.points
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_average_their_window() {
        // 45 steps: a point every 3 steps, 15 points.
        let mut c = Curve::new(2, 45);
        for s in 0..45 {
            c.add(s as f64, s % 2, 2);
        }
        let p = c.finish();
        assert_eq!(p.len(), 15);
        assert_eq!(p[0].step, 90 + 3);
        assert_eq!(p[0].loss, 1.0); // mean of 0, 1, 2
        assert_eq!(p[0].acc, 1.0 / 6.0); // steps 0..3 have 0 + 1 + 0 right of 6
        assert_eq!(p[14].step, 135);
    }

    #[test]
    fn a_short_epoch_gets_a_point_per_step_and_a_partial_window_counts() {
        let mut c = Curve::new(0, 3);
        for _ in 0..3 {
            c.add(0.5, 1, 1);
        }
        assert_eq!(c.finish().len(), 3);
        // 41 steps: every 3; the 41st step is a window of 2 steps (40, 41).
        let mut c = Curve::new(0, 41);
        for s in 0..41 {
            c.add(s as f64, 0, 1);
        }
        let p = c.finish();
        assert_eq!(p.len(), 14);
        assert_eq!(p[13].step, 41);
        assert_eq!(p[13].loss, 39.5);
    }
}
