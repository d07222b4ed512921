//! Per-channel normalisation: `x = (pixel / 255 - mean[c]) / std[c]`.
//!
//! The statistics are in units of pixel / 255 (so CIFAR-10's are the familiar
//! `mean = [0.4914, 0.4822, 0.4465]`, `std = [0.2470, 0.2435, 0.2616]`), either given or
//! computed from a split of the training set (population standard deviation over every
//! pixel of every image in the split, computed from exact integer sums). The batcher applies
//! them when it makes a batch; the stored images stay raw.

use serde::{Deserialize, Serialize};

use super::Dataset;
use crate::error::{Error, Result};

/// Per-channel mean and standard deviation, in units of pixel / 255.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Normalize {
    mean: Vec<f32>,
    std: Vec<f32>,
}

impl Normalize {
    /// Given statistics; one mean and one positive, finite std per channel.
    pub fn new(mean: Vec<f32>, std: Vec<f32>) -> Result<Normalize> {
        if mean.is_empty() || mean.len() != std.len() {
            return Err(Error::Input(format!(
                "normalisation needs one mean and one std per channel, got {} and {}",
                mean.len(),
                std.len()
            )));
        }
        if let Some(m) = mean.iter().find(|m| !m.is_finite()) {
            return Err(Error::Input(format!(
                "normalisation mean must be finite, got {m}"
            )));
        }
        if let Some(s) = std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(Error::Input(format!(
                "normalisation std must be a finite number > 0, got {s}"
            )));
        }
        Ok(Normalize { mean, std })
    }

    /// Mean 0 and std 1: pixels are only scaled to 0..=1.
    pub fn identity(channels: usize) -> Normalize {
        Normalize {
            mean: vec![0.0; channels],
            std: vec![1.0; channels],
        }
    }

    /// The statistics of the images `indices` of `data`. A channel that is constant over
    /// them gets std 1 (it is only centred). Errors if `indices` is empty or out of range.
    pub fn fit(data: &Dataset, indices: &[usize]) -> Result<Normalize> {
        if indices.is_empty() {
            return Err(Error::Input(format!(
                "cannot compute normalisation statistics of no images of {}",
                data.name()
            )));
        }
        if let Some(i) = indices.iter().find(|&&i| i >= data.len()) {
            return Err(Error::Input(format!(
                "index {i} is out of range for the {} images of {}",
                data.len(),
                data.name()
            )));
        }
        let channels = data.input().channels as usize;
        let hw = data.image_len() / channels;
        let mut sum = vec![0u64; channels];
        let mut squares = vec![0u64; channels];
        for &i in indices {
            for (c, plane) in data.image(i).chunks_exact(hw).enumerate() {
                for &p in plane {
                    sum[c] += u64::from(p);
                    squares[c] += u64::from(p) * u64::from(p);
                }
            }
        }
        let n = (indices.len() * hw) as f64;
        let mut mean = Vec::with_capacity(channels);
        let mut std = Vec::with_capacity(channels);
        for c in 0..channels {
            let m = sum[c] as f64 / n;
            let var = (squares[c] as f64 / n - m * m).max(0.0);
            mean.push((m / 255.0) as f32);
            let s = (var.sqrt() / 255.0) as f32;
            std.push(if s > 1e-6 { s } else { 1.0 });
        }
        Ok(Normalize { mean, std })
    }

    /// Per-channel means.
    pub fn mean(&self) -> &[f32] {
        &self.mean
    }

    /// Per-channel standard deviations.
    pub fn std(&self) -> &[f32] {
        &self.std
    }

    pub fn channels(&self) -> usize {
        self.mean.len()
    }

    /// Writes the normalised image `src` (u8 `[C, H, W]`) into `dst` (f32, same length).
    /// `src` must have [`Self::channels`] planes.
    pub fn apply(&self, src: &[u8], dst: &mut [f32]) {
        let hw = src.len() / self.channels().max(1);
        for (c, (s, d)) in src.chunks(hw).zip(dst.chunks_mut(hw)).enumerate() {
            let scale = 1.0 / (255.0 * self.std[c]);
            let shift = -self.mean[c] / self.std[c];
            for (x, y) in s.iter().zip(d) {
                *y = f32::from(*x) * scale + shift;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::space::Input;

    fn data() -> Dataset {
        let input = Input {
            channels: 2,
            size: 2,
            classes: 2,
        };
        // Channel 0 varies, channel 1 is constant 51 (0.2).
        let images = vec![
            0, 255, 0, 255, 51, 51, 51, 51, 255, 255, 0, 0, 51, 51, 51, 51,
        ];
        Dataset::new("t", input, images, vec![0, 1]).unwrap()
    }

    #[test]
    fn fit_computes_hand_derived_statistics() {
        let n = Normalize::fit(&data(), &[0, 1]).unwrap();
        assert!((n.mean()[0] - 0.5).abs() < 1e-6);
        assert!((n.std()[0] - 0.5).abs() < 1e-6);
        assert!((n.mean()[1] - 0.2).abs() < 1e-6);
        assert_eq!(n.std()[1], 1.0);
        let mut out = [0f32; 8];
        n.apply(data().image(0), &mut out);
        assert_eq!(&out[..4], &[-1.0, 1.0, -1.0, 1.0]);
        assert!(out[4..].iter().all(|x| x.abs() < 1e-6));
    }

    #[test]
    fn bad_arguments_are_errors() {
        assert!(Normalize::fit(&data(), &[]).is_err());
        assert!(Normalize::fit(&data(), &[2]).is_err());
        assert!(Normalize::new(vec![0.5], vec![0.0]).is_err());
        assert!(Normalize::new(vec![0.5, 0.5], vec![1.0]).is_err());
        assert!(Normalize::new(vec![f32::NAN], vec![1.0]).is_err());
        let id = Normalize::identity(1);
        let mut out = [0f32; 2];
        id.apply(&[0, 255], &mut out);
        assert_eq!(out, [0.0, 1.0]);
    }
}
