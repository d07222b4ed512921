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
use crate::spec::pipeline::{Data, ImageOptions, Normalization, Pipeline};

impl Checker<'_> {
    /// A data set's image limit, and a synthetic set's sizes.
    pub(super) fn data(&self, p: &Pipeline) -> Result<()> {
        if let Data::FashionMnist { limit: Some(l), .. }
        | Data::Mnist { limit: Some(l), .. }
        | Data::Cifar10 { limit: Some(l), .. } = &p.data.value
        {
            self.positive(l, "data limit")?;
        }
        if let Some(image) = p.data.image_options() {
            self.image_options(image)?;
        }
        if let Data::Npy {
            test_images,
            test_labels,
            classes,
            ..
        } = &p.data.value
        {
            self.npy(
                p,
                test_images.is_some(),
                test_labels.is_some(),
                classes.as_ref(),
            )?;
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

    /// The options every image source shares: a size within bounds, 1 or 3 channels, a
    /// positive limit.
    fn image_options(&self, o: &Spanned<ImageOptions>) -> Result<()> {
        let size = &o.size;
        if size.value == 0 || size.value > MAX_IMAGE_SIZE {
            return Err(self.err(
                size.span,
                format!(
                    "image size must be in 1..={MAX_IMAGE_SIZE}, got {}",
                    size.value
                ),
            ));
        }
        let ch = &o.channels;
        if ch.value != 1 && ch.value != 3 {
            // A default has no place in the file: point at the options.
            let span = if ch.span == Default::default() {
                o.span
            } else {
                ch.span
            };
            return Err(self.err(
                span,
                format!(
                    "channels must be 1 (grayscale) or 3 (RGB), got {}",
                    ch.value
                ),
            ));
        }
        if let Some(l) = &o.limit {
            self.positive(l, "image limit")?;
        }
        Ok(())
    }

    /// An `Npy` source: test images and labels both or neither; class names distinct.
    fn npy(
        &self,
        p: &Pipeline,
        images: bool,
        labels: bool,
        classes: Option<&Spanned<Vec<String>>>,
    ) -> Result<()> {
        if images != labels {
            return Err(self.err(
                p.data.span,
                "Npy data: give both `test_images` and `test_labels`, or neither",
            ));
        }
        if let Some(c) = classes {
            let mut sorted = c.value.clone();
            sorted.sort();
            sorted.dedup();
            if c.value.len() < 2 || sorted.len() != c.value.len() {
                return Err(self.err(
                    c.span,
                    "Npy data: `classes` must name at least 2 classes, each once",
                ));
            }
            if c.value.len() > MAX_CLASSES as usize {
                return Err(self.err(c.span, format!("at most {MAX_CLASSES} classes")));
            }
        }
        Ok(())
    }

    /// Given means and standard deviations: one per channel, finite, deviations > 0.
    pub(super) fn normalize(&self, p: &Pipeline) -> Result<()> {
        let Normalization::Given { mean, std } = &p.normalize.value else {
            return Ok(());
        };
        let c = p.data.shape().0 as usize;
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
