//! The batcher: seeded, resumable epochs of candle tensors over an index list.
//!
//! An epoch is a fixed order of the index list (shuffled or not) cut into batches of
//! `batch_size`; the last batch holds the remainder when the list does not divide evenly
//! (it is kept, never dropped), so every index appears exactly once per epoch. A batch
//! copies, augments and normalises only its own images.
//!
//! Randomness is a pure function of (seed, epoch, stream): the shuffle of epoch `e` comes
//! from [`rng::derive`]`(seed, e, stream)`, and the augmentation of its batch `b` from a
//! generator seeded with a mix of (seed, e, stream, b). Epoch `e`'s batches are therefore
//! identical whether or not the process restarted before it, and any batch can be made on
//! its own ([`Epoch::batch`]). Consumers that share a seed (say the weight and the
//! architecture steps of a search) must use different `stream` ids.

use std::sync::Arc;

use candle_core::{Device, Tensor};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;

use super::augment::{self, Draw};
use super::rng::{self, mix};
use super::{Dataset, Normalize};
use crate::error::{Error, Result};
use crate::spec::pipeline::Augment;

/// Separates augmentation generators from shuffle generators.
const AUGMENT_TAG: u64 = 0x0061_7567_6d65_6e74;

/// How a [`Batcher`] cuts and randomises epochs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchConfig {
    /// Images per batch (the last batch of an epoch may have fewer). At least 1.
    pub batch_size: usize,
    /// Shuffle the index list each epoch; otherwise batches follow its order.
    pub shuffle: bool,
    /// Augmentation; `Augment::default()` is none (evaluation).
    pub augment: Augment,
    pub seed: u64,
    /// Distinguishes consumers of the same seed.
    pub stream: u64,
}

/// One batch.
///
/// # Shapes
///
/// `images`: f32 `[size, C, H, W]`, normalised; `labels`: u32 `[size]`.
#[derive(Debug, Clone)]
pub struct Batch {
    pub images: Tensor,
    pub labels: Tensor,
    /// The number of images: `batch_size`, or fewer for an epoch's last batch.
    pub size: usize,
    /// The data set indices of the images, in batch order.
    pub indices: Vec<usize>,
}

/// Makes epochs of batches from an index list into a shared [`Dataset`].
#[derive(Debug, Clone)]
pub struct Batcher {
    data: Dataset,
    indices: Arc<[usize]>,
    normalize: Normalize,
    config: BatchConfig,
    /// Images per epoch: the first this many of each epoch's order; all when `None`.
    per_epoch: Option<usize>,
}

impl Batcher {
    /// A batcher over `indices` of `data` (cloning a data set shares its images). Errors if
    /// the batch size is 0, the list is empty, an index is out of range, or `normalize` has
    /// the wrong number of channels.
    pub fn new(
        data: Dataset,
        indices: Vec<usize>,
        normalize: Normalize,
        config: BatchConfig,
    ) -> Result<Batcher> {
        if config.batch_size == 0 {
            return Err(Error::Input("the batch size must be at least 1".into()));
        }
        if indices.is_empty() {
            return Err(Error::Input(format!(
                "no images of {} to make batches of",
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
        if normalize.channels() != data.input().channels as usize {
            return Err(Error::Input(format!(
                "normalisation has {} channels but {} has {}",
                normalize.channels(),
                data.name(),
                data.input().channels
            )));
        }
        Ok(Batcher {
            data,
            indices: indices.into(),
            normalize,
            config,
            per_epoch: None,
        })
    }

    /// This batcher with epochs of the first `n` images of each epoch's order (all of them
    /// when there are fewer); `n` ≥ 1.
    pub fn with_epoch_images(mut self, n: usize) -> Batcher {
        self.per_epoch = Some(n.max(1));
        self
    }

    /// The number of images per epoch.
    pub fn len(&self) -> usize {
        self.per_epoch
            .map_or(self.indices.len(), |n| n.min(self.indices.len()))
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Batches per epoch: `ceil(len / batch_size)` (the last may be partial).
    pub fn batches_per_epoch(&self) -> usize {
        self.len().div_ceil(self.config.batch_size)
    }

    pub fn config(&self) -> &BatchConfig {
        &self.config
    }

    pub fn data(&self) -> &Dataset {
        &self.data
    }

    pub fn normalize(&self) -> &Normalize {
        &self.normalize
    }

    /// The order of the index list in `epoch`: its first [`Self::len`] entries.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let mut order = self.indices.to_vec();
        if self.config.shuffle {
            let mut rng = rng::derive(self.config.seed, epoch, self.config.stream);
            rng::shuffle(&mut rng, &mut order);
        }
        order.truncate(self.len());
        order
    }

    /// Epoch `epoch` (any number; epochs need not be visited in order), its tensors made on
    /// `device`.
    pub fn epoch<'a>(&'a self, epoch: u64, device: &'a Device) -> Epoch<'a> {
        Epoch {
            batcher: self,
            device,
            epoch,
            order: self.order(epoch),
            next: 0,
        }
    }
}

/// The batches of one epoch, in order; also addressable one by one.
#[derive(Debug)]
pub struct Epoch<'a> {
    batcher: &'a Batcher,
    device: &'a Device,
    epoch: u64,
    order: Vec<usize>,
    next: usize,
}

impl Epoch<'_> {
    /// The number of batches.
    pub fn batches(&self) -> usize {
        self.batcher.batches_per_epoch()
    }

    /// Batch `b` of this epoch (the same as the iterator's `b`-th item). For `b` at or
    /// beyond [`Self::batches`] the batch is empty (size 0).
    pub fn batch(&self, b: usize) -> candle_core::Result<Batch> {
        let bs = self.batcher.config.batch_size;
        let start = (b.saturating_mul(bs)).min(self.order.len());
        let end = (start + bs).min(self.order.len());
        let indices = self.order[start..end].to_vec();
        let data = &self.batcher.data;
        let input = data.input();
        let (channels, size) = (input.channels as usize, input.size as usize);
        let per = data.image_len();
        let aug = &self.batcher.config.augment;
        let augmenting = *aug != Augment::default();
        let mut rng = ChaCha8Rng::seed_from_u64(mix(&[
            self.batcher.config.seed,
            self.epoch,
            self.batcher.config.stream,
            AUGMENT_TAG,
            b as u64,
        ]));
        let mut images = vec![0f32; indices.len() * per];
        let mut tmp = Vec::new();
        for (&i, dst) in indices.iter().zip(images.chunks_exact_mut(per)) {
            if augmenting {
                let draw = Draw::new(&mut rng, aug, size);
                let normalize = &self.batcher.normalize;
                augment::apply(aug, &draw, size, normalize, data.image(i), &mut tmp, dst);
            } else {
                self.batcher.normalize.apply(data.image(i), dst);
            }
        }
        let labels: Vec<u32> = indices.iter().map(|&i| data.label(i)).collect();
        let n = indices.len();
        Ok(Batch {
            images: Tensor::from_vec(images, (n, channels, size, size), self.device)?,
            labels: Tensor::from_vec(labels, n, self.device)?,
            size: n,
            indices,
        })
    }
}

impl Iterator for Epoch<'_> {
    type Item = candle_core::Result<Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.batches() {
            return None;
        }
        let b = self.batch(self.next);
        self.next += 1;
        Some(b)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.batches() - self.next;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Epoch<'_> {}

#[cfg(test)]
mod tests {
    use candle_core::DType;

    use super::*;
    use crate::data::synthetic;
    use crate::spec::space::Input;

    const INPUT: Input = Input {
        channels: 3,
        size: 8,
        classes: 4,
    };

    fn data() -> Dataset {
        synthetic::generate(INPUT, 50, 10, 1).unwrap().0
    }

    fn config(batch_size: usize, shuffle: bool, augment: Augment) -> BatchConfig {
        BatchConfig {
            batch_size,
            shuffle,
            augment,
            seed: 42,
            stream: 0,
        }
    }

    fn batcher(indices: Vec<usize>, c: BatchConfig) -> Batcher {
        let d = data();
        let n = Normalize::fit(&d, &indices).unwrap();
        Batcher::new(d, indices, n, c).unwrap()
    }

    const AUG: Augment = Augment {
        crop_padding: 2,
        flip: true,
        cutout: 3,
    };

    fn all(b: &Batcher, epoch: u64) -> Vec<Batch> {
        b.epoch(epoch, &Device::Cpu)
            .collect::<candle_core::Result<_>>()
            .unwrap()
    }

    fn pixels(batches: &[Batch]) -> Vec<f32> {
        batches
            .iter()
            .flat_map(|b| b.images.flatten_all().unwrap().to_vec1::<f32>().unwrap())
            .collect()
    }

    #[test]
    fn every_index_once_per_epoch_and_the_last_batch_kept() {
        let indices: Vec<usize> = (5..35).collect();
        let b = batcher(indices.clone(), config(8, true, AUG));
        assert_eq!(b.batches_per_epoch(), 4);
        for epoch in 0..3 {
            let batches = all(&b, epoch);
            let sizes: Vec<usize> = batches.iter().map(|x| x.size).collect();
            assert_eq!(sizes, [8, 8, 8, 6]);
            let mut seen: Vec<usize> = batches.iter().flat_map(|x| x.indices.clone()).collect();
            seen.sort();
            assert_eq!(seen, indices);
        }
    }

    /// Epochs of fewer images take the head of the full epoch's order, so each epoch sees a
    /// different subset and over many epochs every image.
    #[test]
    fn epochs_of_fewer_images_are_the_head_of_each_order() {
        let indices: Vec<usize> = (0..30).collect();
        let full = batcher(indices.clone(), config(8, true, AUG));
        let part = full.clone().with_epoch_images(12);
        assert_eq!((part.len(), part.batches_per_epoch()), (12, 2));
        let mut seen = std::collections::BTreeSet::new();
        for epoch in 0..16 {
            let got: Vec<usize> = all(&part, epoch)
                .iter()
                .flat_map(|b| b.indices.clone())
                .collect();
            assert_eq!(got, full.order(epoch)[..12]);
            seen.extend(got);
        }
        assert_eq!(seen.len(), 30);
        // More than there are: all of them.
        assert_eq!(full.with_epoch_images(100).len(), 30);
    }

    #[test]
    fn same_seed_and_epoch_give_the_same_batches_after_a_restart() {
        let indices: Vec<usize> = (0..40).collect();
        let first = batcher(indices.clone(), config(16, true, AUG));
        let e3 = all(&first, 3);
        // A fresh batcher (a restarted process) that never saw epochs 0..3.
        let restarted = batcher(indices.clone(), config(16, true, AUG));
        let again = all(&restarted, 3);
        assert_eq!(
            e3.iter().map(|b| &b.indices).collect::<Vec<_>>(),
            again.iter().map(|b| &b.indices).collect::<Vec<_>>()
        );
        assert_eq!(pixels(&e3), pixels(&again));
        // Random access gives the iterator's batches.
        let epoch = restarted.epoch(3, &Device::Cpu);
        assert_eq!(epoch.batch(2).unwrap().indices, e3[2].indices);
        // Another epoch, another order; another stream, another order.
        let e4 = all(&first, 4);
        assert_ne!(e3[0].indices, e4[0].indices);
        let other = batcher(
            indices,
            BatchConfig {
                stream: 1,
                ..config(16, true, AUG)
            },
        );
        assert_ne!(all(&other, 3)[0].indices, e3[0].indices);
    }

    #[test]
    fn without_shuffle_batches_follow_the_list() {
        let b = batcher(vec![9, 3, 7, 1, 0], config(2, false, Augment::default()));
        let order: Vec<Vec<usize>> = all(&b, 5).into_iter().map(|x| x.indices).collect();
        assert_eq!(order, [vec![9, 3], vec![7, 1], vec![0]]);
        // No augmentation: the same images every epoch.
        assert_eq!(pixels(&all(&b, 0)), pixels(&all(&b, 1)));
    }

    #[test]
    fn shapes_dtypes_and_labels() {
        let b = batcher((0..20).collect(), config(8, true, AUG));
        let batches = all(&b, 0);
        let last = &batches[2];
        assert_eq!(last.images.dims(), &[4, 3, 8, 8]);
        assert_eq!(last.images.dtype(), DType::F32);
        assert_eq!(last.labels.dims(), &[4]);
        assert_eq!(last.labels.dtype(), DType::U32);
        let labels = last.labels.to_vec1::<u32>().unwrap();
        let expected: Vec<u32> = last.indices.iter().map(|&i| b.data().label(i)).collect();
        assert_eq!(labels, expected);
        assert_eq!(b.epoch(0, &Device::Cpu).len(), 3);
    }

    #[test]
    fn unaugmented_batches_are_the_normalised_images() {
        let b = batcher((0..6).collect(), config(6, false, Augment::default()));
        let got = pixels(&all(&b, 0));
        let mut want = vec![0f32; 6 * 192];
        for (i, dst) in want.chunks_exact_mut(192).enumerate() {
            b.normalize().apply(b.data().image(i), dst);
        }
        assert_eq!(got, want);
    }

    /// Normalising with the statistics of a split gives that split mean 0 and std 1 per
    /// channel.
    #[test]
    fn normalised_split_has_zero_mean_and_unit_std() {
        let d = data();
        let split = d.split(0.6).unwrap();
        assert_eq!((split.first.len(), split.rest.len()), (30, 20));
        let n = Normalize::fit(&d, &split.first).unwrap();
        let b = Batcher::new(d, split.first, n, config(7, true, Augment::default())).unwrap();
        let mut sums = [0f64; 3];
        let mut squares = [0f64; 3];
        let mut count = 0f64;
        for batch in all(&b, 0) {
            let v = batch.images.to_vec3::<f32>();
            assert!(v.is_err(), "images are 4-d");
            let x = batch
                .images
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            for (k, p) in x.iter().enumerate() {
                let c = (k / 64) % 3;
                sums[c] += f64::from(*p);
                squares[c] += f64::from(*p).powi(2);
            }
            count += (batch.size * 64) as f64;
        }
        for c in 0..3 {
            let mean = sums[c] / count;
            let std = (squares[c] / count - mean * mean).sqrt();
            assert!(mean.abs() < 1e-4, "channel {c} mean {mean}");
            assert!((std - 1.0).abs() < 1e-4, "channel {c} std {std}");
        }
    }

    #[test]
    fn bad_arguments_are_errors() {
        let d = data();
        let n = Normalize::identity(3);
        let c = config(4, false, Augment::default());
        assert!(Batcher::new(d.clone(), vec![], n.clone(), c).is_err());
        assert!(Batcher::new(d.clone(), vec![50], n.clone(), c).is_err());
        assert!(Batcher::new(d.clone(), vec![0], Normalize::identity(1), c).is_err());
        let zero = BatchConfig { batch_size: 0, ..c };
        assert!(Batcher::new(d, vec![0], n, zero).is_err());
    }
}
