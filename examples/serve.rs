//! Classifies images with a model written by `nas-pipe export`, in ONNX Runtime through the
//! `ort` crate (2.0.0-rc.15, features `load-dynamic` and `ndarray`).
//!
//! The preprocessing is read from the model's metadata: images are uint8, H x W or
//! C x H x W (`input_shape`), scaled to [0, 1] and normalised per channel with `mean` and
//! `std`. The ONNX Runtime library is the file `ORT_DYLIB_PATH` names.
//!
//! ```sh
//! ORT_DYLIB_PATH=/path/to/libonnxruntime.so cargo run --release --example serve -- \
//!     MODEL.onnx --idx-gz t10k-images-idx3-ubyte.gz --count 8
//! ```
//!
//! Prints one line per image: its index, class name and probability, tab-separated.

use std::io::Read as _;

use anyhow::{Context as _, Result, bail};
use ort::session::Session;
use ort::value::TensorRef;

/// The first `count` arrays of a gzipped IDX file of uint8 (MNIST's format), concatenated.
fn read_idx_gz(path: &str, count: usize) -> Result<Vec<u8>> {
    let mut data = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).context(path.to_string())?)
        .read_to_end(&mut data)
        .with_context(|| format!("{path}: not gzip"))?;
    if data.len() < 4 || data[..3] != [0, 0, 8] {
        bail!("{path}: not a gzipped IDX file of uint8");
    }
    let ndim = data[3] as usize;
    let dims: Vec<usize> = (0..ndim)
        .map(|i| u32::from_be_bytes(data[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize)
        .collect();
    let per_image: usize = dims[1..].iter().product();
    let n = count.min(dims[0]);
    let start = 4 + 4 * ndim;
    Ok(data[start..start + n * per_image].to_vec())
}

/// A metadata value: a JSON array stored as a string.
fn meta<T: serde::de::DeserializeOwned>(session: &Session, key: &str) -> Result<T> {
    let text = session
        .metadata()?
        .custom(key)
        .with_context(|| format!("the model has no `{key}` metadata"))?;
    serde_json::from_str(&text).with_context(|| format!("metadata `{key}`: {text}"))
}

/// (class name, probability) of each image; `pixels` holds whole uint8 images, each
/// C x H x W (or H x W for one channel) as the model's `input_shape` says.
fn classify(session: &mut Session, pixels: &[u8]) -> Result<Vec<(String, f32)>> {
    let [c, h, w]: [usize; 3] = meta(session, "input_shape")?;
    let mean: Vec<f32> = meta(session, "mean")?;
    let std: Vec<f32> = meta(session, "std")?;
    let classes: Vec<String> = meta(session, "classes")?;
    // (x / 255 - mean[c]) / std[c], in NCHW order.
    let x: Vec<f32> = pixels
        .iter()
        .enumerate()
        .map(|(i, &p)| {
            let ch = i / (h * w) % c;
            (p as f32 / 255.0 - mean[ch]) / std[ch]
        })
        .collect();
    let n = x.len() / (c * h * w);
    let input = TensorRef::from_array_view(([n, c, h, w], x.as_slice()))?;
    let outputs = session.run(ort::inputs!["input" => input])?;
    let (dims, logits) = outputs["logits"].try_extract_tensor::<f32>()?;
    let rows = logits.chunks(dims[1] as usize);
    Ok(rows
        .map(|row| {
            let best = (0..row.len()).fold(0, |b, j| if row[j] > row[b] { j } else { b });
            let sum: f32 = row.iter().map(|v| (v - row[best]).exp()).sum();
            let name = classes.get(best).cloned().unwrap_or(best.to_string());
            (name, 1.0 / sum)
        })
        .collect())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (model, idx, count) = match args.as_slice() {
        [m, flag, f] if flag == "--idx-gz" => (m, f, 8),
        [m, flag, f, c, n] if flag == "--idx-gz" && c == "--count" => (m, f, n.parse()?),
        _ => bail!("usage: serve MODEL.onnx --idx-gz FILE [--count N]"),
    };
    let lib = std::env::var("ORT_DYLIB_PATH").context("set ORT_DYLIB_PATH")?;
    let env = ort::init_from(&lib)?.with_name("serve").build()?;
    let mut session = Session::builder(&env)?.commit_from_file(model)?;
    let pixels = read_idx_gz(idx, count)?;
    for (i, (name, p)) in classify(&mut session, &pixels)?.iter().enumerate() {
        println!("{i}\t{name}\t{p:.4}");
    }
    Ok(())
}
