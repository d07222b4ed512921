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
        // An image source's classes are known once its files are listed.
        let Some(classes) = p.data.input().map(|i| i.classes) else {
            return Ok(());
        };
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
        if let Some(c) = &o.class_names {
            self.class_list(c, "class_names")?;
        }
        Ok(())
    }

    /// A list of class names (`field` names it in messages): at least 2 (a classifier
    /// needs 2), at most [`MAX_CLASSES`], none empty, none twice.
    fn class_list(&self, c: &Spanned<Vec<String>>, field: &str) -> Result<()> {
        let names = &c.value;
        if names.len() < 2 {
            return Err(self
                .sources
                .diag(
                    c.span,
                    format!(
                        "`{field}` names {} class{}; a classifier needs at least 2",
                        names.len(),
                        if names.len() == 1 { "" } else { "es" }
                    ),
                )
                .with_help(format!(
                    "list every class in label order, or remove `{field}` to take the classes \
                     from the files"
                ))
                .into());
        }
        if names.len() > MAX_CLASSES as usize {
            return Err(self.err(
                c.span,
                format!(
                    "`{field}`: at most {MAX_CLASSES} classes, got {}",
                    names.len()
                ),
            ));
        }
        if let Some(i) = names.iter().position(|n| n.trim().is_empty()) {
            return Err(self.err(c.span, format!("`{field}`: class {i} has an empty name")));
        }
        let mut seen = std::collections::HashMap::new();
        for (i, n) in names.iter().enumerate() {
            if let Some(first) = seen.insert(n.as_str(), i) {
                return Err(self.err(
                    c.span,
                    format!(
                        "`{field}` names {n:?} twice (classes {first} and {i}); each class once"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// An `Npy` source: test images and labels both or neither; `classes` a list of class
    /// names as `class_names` is, and not both of them.
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
        let Some(c) = classes else {
            return Ok(());
        };
        self.class_list(c, "classes")?;
        let declared = p.data.image_options().and_then(|o| o.class_names.as_ref());
        if let Some(d) = declared {
            let at = self.sources.diag(c.span, "");
            return Err(self
                .sources
                .diag(
                    d.span,
                    format!(
                        "Npy data: `class_names` and `classes` (at {}:{}:{}) both name the \
                         classes",
                        at.file, at.line, at.col
                    ),
                )
                .with_help(
                    "keep one of them: `classes` is the older spelling of the image options' \
                     `class_names`",
                )
                .into());
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
