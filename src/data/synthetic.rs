//! The synthetic data set for tests: random images whose labels are learnable.
//!
//! Each class has a fixed colour (one level per channel, 48..=207) and a fixed ±32 pattern
//! per pixel; an image of that class is colour + pattern + uniform noise in -32..=32,
//! clamped to 0..=255 and stored as u8 like the real sets. The colour alone makes classes
//! separable after global average pooling; the pattern rewards spatial features. Labels are
//! uniform over the classes. Everything is a function of the seed: the patterns, the
//! training set and the test set each come from their own derived generator, so the test
//! set does not depend on the training set's size.

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

use super::rng::{below, mix};
use super::{Dataset, image_len};
use crate::error::{Error, Result};
use crate::spec::space::Input;

/// The most pixel bytes (training and test together) a synthetic set may have: 2 GiB.
pub const MAX_BYTES: u64 = 1 << 31;

/// Separates the generators of this module from every other use of the seed.
const TAG: u64 = 0x7379_6e74_6865_7469;

/// The class prototypes: per class, a colour per channel and a ±1 sign per pixel.
struct Prototypes {
    colour: Vec<i32>,
    sign: Vec<i32>,
}

/// Generates (train, test) with `train` and `test` images of the given shape.
pub fn generate(input: Input, train: usize, test: usize, seed: u64) -> Result<(Dataset, Dataset)> {
    let per = image_len(input) as u64;
    if per == 0 || input.classes == 0 || train == 0 || test == 0 {
        return Err(Error::Input(format!(
            "synthetic data needs at least one channel, pixel, class, training and test image; \
             got {}×{}×{}, {} classes, {train} training and {test} test images",
            input.channels, input.size, input.size, input.classes
        )));
    }
    let total = (train as u64)
        .checked_add(test as u64)
        .and_then(|n| n.checked_mul(per));
    if total.is_none_or(|t| t > MAX_BYTES) {
        return Err(Error::Input(format!(
            "synthetic data of {} + {} images of {}×{}×{} is more than {} bytes",
            train, test, input.channels, input.size, input.size, MAX_BYTES
        )));
    }
    let per = per as usize;
    let mut rng = ChaCha8Rng::seed_from_u64(mix(&[seed, TAG, 0]));
    let classes = input.classes as usize;
    let hw = per / input.channels as usize;
    let protos = Prototypes {
        colour: (0..classes * input.channels as usize)
            .map(|_| 48 + below(&mut rng, 160) as i32)
            .collect(),
        sign: (0..classes * per)
            .map(|_| if rng.next_u32() & 1 == 1 { 1 } else { -1 })
            .collect(),
    };
    let make = |n: usize, stream: u64, name: &str| {
        let mut rng = ChaCha8Rng::seed_from_u64(mix(&[seed, TAG, stream]));
        let mut images = Vec::with_capacity(n * per);
        let mut labels = Vec::with_capacity(n);
        for _ in 0..n {
            let class = below(&mut rng, classes as u64) as usize;
            labels.push(class as u32);
            for p in 0..per {
                let colour = protos.colour[class * input.channels as usize + p / hw];
                let noise = below(&mut rng, 65) as i32 - 32;
                let v = colour + 32 * protos.sign[class * per + p] + noise;
                images.push(v.clamp(0, 255) as u8);
            }
        }
        Dataset::new(name, input, images, labels)
    };
    Ok((
        make(train, 1, "synthetic train")?,
        make(test, 2, "synthetic test")?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const INPUT: Input = Input {
        channels: 3,
        size: 8,
        classes: 4,
    };

    #[test]
    fn is_deterministic_for_a_seed() {
        let (a, b) = generate(INPUT, 50, 20, 3).unwrap();
        let (c, d) = generate(INPUT, 50, 20, 3).unwrap();
        assert_eq!((a.images(), a.labels()), (c.images(), c.labels()));
        assert_eq!((b.images(), b.labels()), (d.images(), d.labels()));
        let (e, _) = generate(INPUT, 50, 20, 4).unwrap();
        assert_ne!(a.images(), e.images());
        // The test set does not depend on the training set's size.
        let (_, f) = generate(INPUT, 7, 20, 3).unwrap();
        assert_eq!(b.images(), f.images());
        assert_eq!(a.input(), INPUT);
        assert_eq!(a.len(), 50);
    }

    /// A nearest-class-mean classifier fitted on the training set labels the test set far
    /// better than chance.
    #[test]
    fn labels_are_learnable() {
        let (train, test) = generate(INPUT, 400, 200, 11).unwrap();
        let per = train.image_len();
        let k = INPUT.classes as usize;
        let mut sums = vec![0f64; k * per];
        let mut counts = vec![0usize; k];
        for i in 0..train.len() {
            let c = train.label(i) as usize;
            counts[c] += 1;
            for (s, p) in sums[c * per..(c + 1) * per].iter_mut().zip(train.image(i)) {
                *s += f64::from(*p);
            }
        }
        assert!(counts.iter().all(|&c| c > 50), "unbalanced: {counts:?}");
        let correct = (0..test.len())
            .filter(|&i| {
                let dist = |c: usize| -> f64 {
                    test.image(i)
                        .iter()
                        .zip(&sums[c * per..(c + 1) * per])
                        .map(|(p, s)| (f64::from(*p) - s / counts[c] as f64).powi(2))
                        .sum()
                };
                let best = (0..k)
                    .min_by(|a, b| dist(*a).total_cmp(&dist(*b)))
                    .unwrap_or(0);
                best as u32 == test.label(i)
            })
            .count();
        let accuracy = correct as f64 / test.len() as f64;
        assert!(accuracy > 0.9, "nearest class mean: {accuracy}");
    }

    #[test]
    fn refuses_empty_and_huge_sets() {
        assert!(generate(INPUT, 0, 1, 0).is_err());
        let big = Input {
            channels: 3,
            size: 4096,
            classes: 10,
        };
        let e = generate(big, 1000, 1000, 0).unwrap_err().to_string();
        assert!(e.contains("more than"), "{e}");
    }
}
