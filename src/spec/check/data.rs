//! Checks of the `data` and `normalize` sections.

use super::Checker;

/// The largest image side a data set may declare: far beyond what NAS on these machines
/// uses; the memory estimates bound what a given pipeline can afford.
pub const MAX_IMAGE_SIZE: u32 = 4096;
/// The most classes a data set may declare.
pub const MAX_CLASSES: u32 = 100_000;
/// The most bytes of synthetic images (they are generated in memory).
const MAX_SYNTHETIC_BYTES: u64 = 8 << 30;
use crate::error::Result;
use crate::spec::Spanned;
use crate::spec::pipeline::{Data, Normalization, Pipeline};

impl Checker<'_> {
    /// A data set's image limit, and a synthetic set's sizes.
    pub(super) fn data(&self, p: &Pipeline) -> Result<()> {
        if let Data::FashionMnist { limit: Some(l), .. }
        | Data::Mnist { limit: Some(l), .. }
        | Data::Cifar10 { limit: Some(l), .. } = &p.data.value
        {
            self.positive(l, "data limit")?;
        }
        if let Data::Synthetic {
            channels,
            size,
            classes,
            train,
            test,
        } = p.data.value
        {
            for (v, what) in [
                (channels, "channels"),
                (size, "size"),
                (classes, "classes"),
                (train, "train"),
                (test, "test"),
            ] {
                if v == 0 {
                    return Err(self.err(
                        p.data.span,
                        format!("synthetic data: {what} must be at least 1"),
                    ));
                }
            }
            if classes < 2 {
                return Err(self.err(p.data.span, "synthetic data: classes must be at least 2"));
            }
            for (v, max, what) in [
                (channels, 4, "channels"),
                (size, MAX_IMAGE_SIZE, "size"),
                (classes, MAX_CLASSES, "classes"),
            ] {
                if v > max {
                    return Err(self.err(
                        p.data.span,
                        format!("synthetic data: {what} must be at most {max}, got {v}"),
                    ));
                }
            }
            let bytes = (train as u64 + test as u64) * channels as u64 * (size as u64).pow(2);
            if bytes > MAX_SYNTHETIC_BYTES {
                return Err(self.err(
                    p.data.span,
                    format!(
                        "synthetic data: {train} + {test} images of {channels}x{size}x{size} would take {} GiB; at most {} GiB",
                        bytes >> 30,
                        MAX_SYNTHETIC_BYTES >> 30
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The split fractions: each in (0, 1), together leaving training images; and enough
    /// training images for every class to have one in each part (a necessary condition:
    /// the per-class counts are known only once the labels are read).
    pub(super) fn split(&self, p: &Pipeline) -> Result<()> {
        let s = &p.split.value;
        self.unit(&s.validation, "split: validation", true, true)?;
        self.unit(&s.test, "split: test", true, true)?;
        if s.validation.value + s.test.value >= 1.0 {
            let e = self.sources.diag(
                p.split.span,
                format!(
                    "split: validation {} and test {} leave no training images; their sum must be below 1",
                    s.validation.value, s.test.value
                ),
            );
            return Err(e
                .with_help(
                    "lower one of them; the sum is checked even for a data set with a test part of its own",
                )
                .into());
        }
        let classes = p.data.input().classes;
        // Training and validation; every current source has a test part of its own.
        let need = u64::from(classes) * 2;
        let (images, span, what) = match &p.data.value {
            Data::FashionMnist { limit: Some(l), .. }
            | Data::Mnist { limit: Some(l), .. }
            | Data::Cifar10 { limit: Some(l), .. } => (l.value, l.span, "data limit"),
            Data::Synthetic { train, .. } => (*train, p.data.span, "synthetic data: train"),
            _ => return Ok(()),
        };
        if u64::from(images) < need {
            return Err(self.too_few(
                &Spanned {
                    value: images,
                    span,
                },
                what,
                classes,
            ));
        }
        Ok(())
    }

    /// "`what` N leaves some class without a training or validation image".
    fn too_few(&self, v: &Spanned<u32>, what: &str, classes: u32) -> crate::error::Error {
        self.sources
            .diag(
                v.span,
                format!(
                    "{what} {} is too few to split: each of the {classes} classes needs at least one training and one validation image, so at least {} images",
                    v.value,
                    u64::from(classes) * 2
                ),
            )
            .with_help(if what == "data limit" {
                "raise it, or remove `limit` to use every training image"
            } else {
                "raise it"
            })
            .into()
    }

    /// Given means and standard deviations: one per channel, finite, deviations > 0.
    pub(super) fn normalize(&self, p: &Pipeline) -> Result<()> {
        let Normalization::Given { mean, std } = &p.normalize.value else {
            return Ok(());
        };
        let c = p.data.input().channels as usize;
        if mean.len() != c || std.len() != c {
            return Err(self.err(
                p.normalize.span,
                format!(
                    "normalize: give {c} means and {c} standard deviations (one per channel), not {} and {}",
                    mean.len(),
                    std.len()
                ),
            ));
        }
        if std.iter().any(|s| !(s.is_finite() && *s > 0.0)) || mean.iter().any(|m| !m.is_finite()) {
            return Err(self.err(
                p.normalize.span,
                "normalize: means must be finite and standard deviations finite and > 0",
            ));
        }
        Ok(())
    }
}
