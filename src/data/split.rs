//! Seeded, stratified carving of a training part into training, validation and test parts.
//!
//! Each class's indices (in data-set order) are shuffled by a generator derived from (seed,
//! class, [`STREAM`]) with the exact draws of [`super::rng`], so the same data, fractions
//! and seed give the same parts on every machine. A class of `n` images gives
//! `round(fraction × n)` images to each carved part, at least one, and keeps at least one
//! for training; a class with too few images for that is an error saying which class and
//! how to get out. Classes with no image at all are left alone. Each part keeps data-set
//! order.

use super::Dataset;
use crate::error::{Error, Result};

/// Separates the split's generators from every other use of the seed.
pub const STREAM: u64 = 0x0073_706c_6974;

/// A part to carve: its name in messages and its fraction of each class.
#[derive(Debug, Clone, Copy)]
pub struct Part {
    pub name: &'static str,
    pub fraction: f64,
}

/// Indices into one data set: the training part and one list per carved part, in the
/// order the parts were asked for. Every list is sorted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Carved {
    pub train: Vec<usize>,
    pub parts: Vec<Vec<usize>>,
}

/// Carves `parts` from `data`, stratified by label and seeded by `seed`. `classes` names
/// the labels in messages. Errors if a fraction is outside (0, 1), the fractions leave no
/// training images, or a class has fewer images than one per part plus one for training.
pub fn stratified(data: &Dataset, parts: &[Part], seed: u64, classes: &[String]) -> Result<Carved> {
    check_fractions(parts)?;
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); data.input().classes as usize];
    for (i, &l) in data.labels().iter().enumerate() {
        by_class[l as usize].push(i);
    }
    let mut carved = Carved {
        train: Vec::new(),
        parts: vec![Vec::new(); parts.len()],
    };
    for (class, mut indices) in by_class.into_iter().enumerate() {
        if indices.is_empty() {
            continue;
        }
        let counts = class_counts(indices.len(), parts)
            .ok_or_else(|| too_few(data, parts, class_name(classes, class), indices.len()))?;
        let mut rng = super::rng::derive(seed, class as u64, STREAM);
        super::rng::shuffle(&mut rng, &mut indices);
        let mut rest = indices.as_slice();
        for (out, k) in carved.parts.iter_mut().zip(counts) {
            out.extend_from_slice(&rest[..k]);
            rest = &rest[k..];
        }
        carved.train.extend_from_slice(rest);
    }
    carved.train.sort_unstable();
    for p in &mut carved.parts {
        p.sort_unstable();
    }
    Ok(carved)
}

/// Each fraction in (0, 1), and their sum below 1.
fn check_fractions(parts: &[Part]) -> Result<()> {
    if let Some(p) = parts
        .iter()
        .find(|p| !(p.fraction.is_finite() && p.fraction > 0.0 && p.fraction < 1.0))
    {
        return Err(Error::Input(format!(
            "the {} fraction must be in (0, 1), got {}",
            p.name, p.fraction
        )));
    }
    let sum: f64 = parts.iter().map(|p| p.fraction).sum();
    if sum >= 1.0 {
        return Err(Error::Input(format!(
            "the split fractions add up to {sum}, leaving no training images; their sum must be \
             below 1"
        )));
    }
    Ok(())
}

/// Images of a class of `n` given to each part: `round(fraction × n)` clamped to at least
/// one, with at least one left for training; `None` if `n` is too small for that.
fn class_counts(n: usize, parts: &[Part]) -> Option<Vec<usize>> {
    if n < parts.len() + 1 {
        return None;
    }
    let mut counts: Vec<usize> = parts
        .iter()
        .map(|p| ((p.fraction * n as f64).round() as usize).max(1))
        .collect();
    // Rounding up several parts can take the last training image: shrink the largest part.
    while counts.iter().sum::<usize>() >= n {
        let largest = (0..counts.len()).max_by_key(|&i| counts[i])?;
        counts[largest] -= 1;
    }
    Some(counts)
}

fn class_name(classes: &[String], class: usize) -> String {
    match classes.get(class) {
        Some(name) => format!("{class} ({name:?})"),
        None => class.to_string(),
    }
}

fn too_few(data: &Dataset, parts: &[Part], class: String, n: usize) -> Error {
    let names: Vec<&str> = parts.iter().map(|p| p.name).collect();
    Error::Input(format!(
        "the data set {} cannot be split: class {class} has {} in its training part, but it needs \
         one for training and one for each of {} (at least {}); give that class more images, \
         raise or remove the data `limit`, or use a data set with its own {} part",
        data.name(),
        super::plural(n as u64, "image"),
        names.join(" and "),
        parts.len() + 1,
        names.join(" and ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::space::Input;

    /// `per_class[c]` images of class `c`, interleaved, each image's pixel its index.
    fn data(per_class: &[usize]) -> Dataset {
        let mut labels = Vec::new();
        let most = per_class.iter().copied().max().unwrap_or(0);
        for i in 0..most {
            for (c, &n) in per_class.iter().enumerate() {
                if i < n {
                    labels.push(c as u32);
                }
            }
        }
        let input = Input {
            channels: 1,
            size: 1,
            classes: per_class.len() as u32,
        };
        let images = (0..labels.len()).map(|i| i as u8).collect();
        Dataset::new("t", input, images, labels).unwrap()
    }

    const VAL: Part = Part {
        name: "validation",
        fraction: 0.1,
    };
    const TEST: Part = Part {
        name: "test",
        fraction: 0.2,
    };

    fn count(d: &Dataset, idx: &[usize], class: u32) -> usize {
        idx.iter().filter(|&&i| d.label(i) == class).count()
    }

    #[test]
    fn proportions_hold_per_class() {
        let d = data(&[100, 50, 30, 7]);
        let c = stratified(&d, &[VAL, TEST], 1, &[]).unwrap();
        // round(0.1 n) and round(0.2 n), at least one each.
        for (class, val, test) in [(0, 10, 20), (1, 5, 10), (2, 3, 6), (3, 1, 1)] {
            assert_eq!(count(&d, &c.parts[0], class), val, "class {class}");
            assert_eq!(count(&d, &c.parts[1], class), test, "class {class}");
        }
        let mut all: Vec<usize> = c
            .train
            .iter()
            .chain(c.parts.concat().iter())
            .copied()
            .collect();
        all.sort_unstable();
        assert_eq!(all, d.all(), "the parts partition the data set");
        assert!(c.train.is_sorted() && c.parts.iter().all(|p| p.is_sorted()));
    }

    #[test]
    fn same_seed_same_split_other_seed_other_split() {
        let d = data(&[60, 60, 60]);
        let a = stratified(&d, &[VAL], 7, &[]).unwrap();
        assert_eq!(a, stratified(&d, &[VAL], 7, &[]).unwrap());
        let b = stratified(&d, &[VAL], 8, &[]).unwrap();
        assert_ne!(a.parts[0], b.parts[0]);
        for class in 0..3 {
            assert_eq!(count(&d, &b.parts[0], class), 6);
        }
    }

    /// Pins the draws: a change of shuffle, generator or stream would move every carved
    /// split, and with it every validation figure recorded so far.
    #[test]
    fn split_is_pinned() {
        let d = data(&[10, 10]);
        let c = stratified(&d, &[VAL], 0, &[]).unwrap();
        // Class 0 holds the even indices, class 1 the odd ones.
        assert_eq!(c.parts[0], [7, 14]);
    }

    #[test]
    fn tiny_classes_are_refused_by_name() {
        let d = data(&[20, 1]);
        let names = vec!["cat".to_string(), "dog".to_string()];
        let e = stratified(&d, &[VAL], 0, &names).unwrap_err().to_string();
        assert!(e.contains("class 1 (\"dog\") has 1 image"), "{e}");
        assert!(e.contains("raise or remove the data `limit`"), "{e}");
        let d = data(&[20, 2]);
        let e = stratified(&d, &[VAL, TEST], 0, &names)
            .unwrap_err()
            .to_string();
        assert!(e.contains("at least 3"), "{e}");
        let c = stratified(&d, &[VAL], 0, &names).unwrap();
        assert_eq!(count(&d, &c.parts[0], 1), 1);
        assert_eq!(count(&d, &c.train, 1), 1);
    }

    #[test]
    fn rounding_up_leaves_a_training_image() {
        let d = data(&[3]);
        let big = Part {
            name: "validation",
            fraction: 0.45,
        };
        let test = Part {
            name: "test",
            fraction: 0.45,
        };
        let c = stratified(&d, &[big, test], 0, &[]).unwrap();
        assert_eq!(
            (c.parts[0].len(), c.parts[1].len(), c.train.len()),
            (1, 1, 1)
        );
    }

    #[test]
    fn bad_fractions_are_refused() {
        let d = data(&[10]);
        for f in [0.0, 1.0, -0.1, f64::NAN] {
            let p = Part {
                name: "validation",
                fraction: f,
            };
            assert!(stratified(&d, &[p], 0, &[]).is_err(), "{f}");
        }
        let half = Part {
            name: "test",
            fraction: 0.5,
        };
        let e = stratified(&d, &[half, half], 0, &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("leaving no training images"), "{e}");
    }
}
