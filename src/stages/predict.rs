//! Inference on image files with an exported model: the preprocessing its metadata
//! records, applied exactly as training applied it, then ONNX Runtime.
//!
//! Owns [`Preprocess`] (read from a model's `metadata_props`: input shape, mean and std,
//! class names, resize policy; the input shape checked once against the graph's input),
//! [`images_in`] (the image files named by paths and folders) and [`predict`] (decode,
//! prepare, normalise, batch, run, softmax, top K). Decoding and resizing are
//! [`crate::data::decode`]'s, the same functions the image sources use.

use std::path::{Path, PathBuf};

use crate::data::{Normalize, decode};
use crate::error::{Error, Result};
use crate::runtime::Session;
use crate::spec::pipeline::{ImageOptions, Resize};
use crate::spec::{MAX_IMAGE_SIZE, Spanned};

/// File extensions a folder is searched for (a file named directly is read whatever its
/// name: the format is known from its first bytes).
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "bmp", "webp", "gif"];

/// What an image becomes before the model sees it, as the model's metadata records it.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocess {
    pub channels: u32,
    pub size: u32,
    /// The model's mean and std, applied as training applies them.
    pub norm: Normalize,
    /// One per logit, in label order; empty when the model records none.
    pub classes: Vec<String>,
    pub resize: Resize,
}

impl Preprocess {
    /// Reads the preprocessing from the metadata of `session`'s model (`model` names it in
    /// errors). A model without nas-pipe's metadata is refused with what is missing, and so
    /// is one whose `input_shape` metadata its graph's input does not take
    /// ([`Session::refuses_images`]): the check is made here, before any image is decoded.
    pub fn of(session: &Session, model: &Path) -> Result<Preprocess> {
        let get = |key: &str| -> Result<String> {
            session.metadata(key).ok_or_else(|| {
                data_err(
                    model,
                    format!(
                        "the model records no `{key}` metadata; `nas-pipe predict` reads the \
                         preprocessing from a model `nas-pipe export` wrote"
                    ),
                )
            })
        };
        let parse = |key: &str, text: String| -> Result<serde_json::Value> {
            serde_json::from_str(&text)
                .map_err(|e| data_err(model, format!("its `{key}` metadata is not JSON: {e}")))
        };
        let floats = |key: &str| -> Result<Vec<f32>> {
            serde_json::from_value(parse(key, get(key)?)?).map_err(|e| {
                data_err(
                    model,
                    format!("its `{key}` metadata is not a list of numbers: {e}"),
                )
            })
        };
        let shape: Vec<u32> = serde_json::from_value(parse("input_shape", get("input_shape")?)?)
            .map_err(|e| data_err(model, format!("its `input_shape` is not [C, H, W]: {e}")))?;
        let (channels, size) = image_input(session, model, &shape)?;
        let norm = Normalize::new(floats("mean")?, floats("std")?)
            .map_err(|e| data_err(model, format!("its mean and std: {e}")))?;
        if norm.channels() != channels as usize {
            return Err(data_err(
                model,
                format!("its mean and std do not have one value per channel ({channels})"),
            ));
        }
        let classes = match session.metadata("classes") {
            Some(t) => serde_json::from_value(parse("classes", t)?).map_err(|e| {
                data_err(
                    model,
                    format!("its `classes` metadata is not a list of names: {e}"),
                )
            })?,
            None => Vec::new(),
        };
        let resize = match session.metadata("resize").as_deref() {
            None | Some("Crop") => Resize::Crop,
            Some("Stretch") => Resize::Stretch,
            Some(other) => {
                return Err(data_err(
                    model,
                    format!("its `resize` metadata {other:?} is neither Crop nor Stretch"),
                ));
            }
        };
        Ok(Preprocess {
            channels,
            size,
            norm,
            classes,
            resize,
        })
    }

    /// The image options [`decode::prepare`] takes for this model.
    fn options(&self) -> ImageOptions {
        ImageOptions {
            size: Spanned::unspanned(self.size),
            channels: Spanned::unspanned(self.channels),
            resize: self.resize,
            limit: None,
            skip_unreadable: false,
            class_names: None,
        }
    }

    /// One decoded image as the model's input: f32 `[C, H, W]`, normalised.
    pub fn apply(&self, img: image::DynamicImage) -> Vec<f32> {
        let pixels = decode::prepare(img, &self.options());
        let mut x = vec![0.0; pixels.len()];
        self.norm.apply(&pixels, &mut x);
        x
    }

    /// The name of class `k` (its index when the model records no names).
    pub fn class_name(&self, k: usize) -> String {
        self.classes
            .get(k)
            .cloned()
            .unwrap_or_else(|| k.to_string())
    }
}

/// The channels and size of the images the model takes: its `input_shape` metadata
/// `shape` must be a square image of 1 or 3 channels that the graph's input takes.
fn image_input(session: &Session, model: &Path, shape: &[u32]) -> Result<(u32, u32)> {
    let [channels, h, w] = shape[..] else {
        return Err(data_err(
            model,
            format!("its `input_shape` {shape:?} is not [C, H, W]"),
        ));
    };
    if h != w || !(channels == 1 || channels == 3) || !(1..=MAX_IMAGE_SIZE).contains(&h) {
        return Err(data_err(
            model,
            format!(
                "its input {channels}×{h}×{w} is not a square image of 1 or 3 channels and \
                 at most {MAX_IMAGE_SIZE}×{MAX_IMAGE_SIZE} pixels; the model was not written \
                 by `nas-pipe export`, or was edited"
            ),
        ));
    }
    let chw = [channels, h, w].map(|d| d as usize);
    if let Some(why) = session.refuses_images(chw) {
        return Err(data_err(
            model,
            format!(
                "its `input_shape` metadata is {shape:?} but {why}; the metadata and the \
                 graph disagree, so the model was edited or not written by nas-pipe\n  \
                 = help: export the model again from its pipeline with `nas-pipe export PIPELINE`"
            ),
        ));
    }
    Ok((channels, h))
}

/// The image files `paths` name: a file as it is, a folder searched recursively for files
/// with an image extension (sorted by path). Errors name a path that does not exist or a
/// folder with no image in it.
pub fn images_in(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        if !meta.is_dir() {
            out.push(path.clone());
            continue;
        }
        let before = out.len();
        walk(path, &mut out)?;
        if out.len() == before {
            return Err(data_err(
                path,
                format!(
                    "no image files in this folder (looked for {})",
                    IMAGE_EXTENSIONS.join(", ")
                ),
            ));
        }
        out[before..].sort();
    }
    Ok(out)
}

/// Appends the image files under `dir`, recursively (symbolic links to folders are not
/// followed, so a link cycle cannot loop).
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let io = |source| Error::Io {
        path: dir.to_path_buf(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let path = entry.path();
        let kind = entry.file_type().map_err(io)?;
        if kind.is_dir() {
            walk(&path, out)?;
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        {
            out.push(path);
        }
    }
    Ok(())
}

/// One image's result: the `top` classes by probability, most probable first.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    pub image: PathBuf,
    /// (class index, probability), at most K of them.
    pub top: Vec<(usize, f32)>,
}

/// Classifies `images` in batches of `batch`: each is decoded, prepared and normalised as
/// `pre` says, and the model's logits turned into the `top` most probable classes.
/// `done(n)` is called after each batch with the images it held. An unreadable image is an
/// error naming it.
///
/// A model whose graph fixes its batch size ([`Session::fixed_batch`]) takes exactly that
/// many images per run, whatever `batch` says: the images go in runs of that size and the
/// last run is filled up with zero images whose logits are dropped. An exported classifier
/// treats every image of a batch on its own (batch norm in inference mode), so the filling
/// changes no real image's logits.
pub fn predict(
    session: &mut Session,
    pre: &Preprocess,
    images: &[PathBuf],
    top: usize,
    batch: usize,
    mut done: impl FnMut(usize),
) -> Result<Vec<Prediction>> {
    let fixed = session.fixed_batch();
    let mut out = Vec::with_capacity(images.len());
    for chunk in images.chunks(fixed.unwrap_or(batch.max(1))) {
        let rows = fixed.unwrap_or(chunk.len());
        let (logits, classes) = run_images(session, pre, chunk, rows)?;
        for (path, row) in chunk.iter().zip(logits.chunks_exact(classes)) {
            out.push(Prediction {
                image: path.clone(),
                top: top_k(&softmax(row), top),
            });
        }
        done(chunk.len());
    }
    Ok(out)
}

/// Runs `images` (at most `rows` of them) as one batch of `rows`, zero images after them,
/// and returns the row-major `[rows, classes]` logits and `classes`.
fn run_images(
    session: &mut Session,
    pre: &Preprocess,
    images: &[PathBuf],
    rows: usize,
) -> Result<(Vec<f32>, usize)> {
    let per = (pre.channels * pre.size * pre.size) as usize;
    let mut input = Vec::with_capacity(rows * per);
    for path in images {
        input.extend(pre.apply(decode::decode_file(path)?));
    }
    input.resize(rows * per, 0.0);
    let shape = [
        rows,
        pre.channels as usize,
        pre.size as usize,
        pre.size as usize,
    ];
    let logits = session.run(&input, &shape)?;
    let classes = logits.shape.get(1).copied().unwrap_or(0);
    if logits.shape.len() != 2 || logits.shape[0] != rows || classes == 0 {
        return Err(Error::Runtime(format!(
            "the model returned logits of shape {:?} for a batch of {rows}",
            logits.shape
        )));
    }
    Ok((logits.data, classes))
}

/// Probabilities from logits, computed stably (the largest logit subtracted first).
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|&l| (l - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.iter().map(|e| e / sum).collect()
}

/// The `k` largest probabilities with their indices, largest first; ties keep the lower
/// index first, as argmax does.
pub fn top_k(probs: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut ranked: Vec<(usize, f32)> = probs.iter().copied().enumerate().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked.truncate(k);
    ranked
}

fn data_err(path: &Path, message: impl Into<String>) -> Error {
    Error::Data {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_and_top_k_rank_classes() {
        let p = softmax(&[1.0, 3.0, 3.0, -1000.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert_eq!(p[3], 0.0);
        let top = top_k(&p, 2);
        assert_eq!(
            (top[0].0, top[1].0),
            (1, 2),
            "ties keep the lower index first"
        );
        assert_eq!(top_k(&p, 10).len(), 4);
    }

    #[test]
    fn folders_are_searched_for_images_in_order() {
        let tmp = crate::fsutil::TempDir::new("predict");
        let dir = tmp.join("predict");
        std::fs::create_dir_all(dir.join("b")).unwrap();
        for f in ["b/2.PNG", "a.jpg", "notes.txt", "c.webp"] {
            std::fs::write(dir.join(f), b"x").unwrap();
        }
        let found = images_in(std::slice::from_ref(&dir)).unwrap();
        let names: Vec<_> = found
            .iter()
            .map(|p| p.strip_prefix(&dir).unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a.jpg", "b/2.PNG", "c.webp"]);
        std::fs::create_dir_all(dir.join("empty")).unwrap();
        let e = images_in(&[dir.join("empty")]).unwrap_err().to_string();
        assert!(e.contains("no image files in this folder"), "{e}");
        let e = images_in(&[dir.join("missing.png")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.png"), "{e}");
    }
}
