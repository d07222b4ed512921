//! `nas-pipe predict`: classifies image files with an exported model.

use std::path::PathBuf;

use super::common::print;
use crate::error::{Result, exit};
use crate::stages::predict::{self, Prediction, Preprocess};

/// Classify images with a model `nas-pipe export` wrote: each image is decoded, brought to
/// the model's input size and channels and normalised exactly as in training (read from the
/// model's metadata), run on ONNX Runtime, and its top classes printed, one line per image:
/// the path, then `class probability` pairs, tab-separated. With --json, one JSON object
/// per image on stdout.
///
/// A folder is searched recursively for PNG, JPEG, BMP, WebP and GIF files; a file named
/// directly is read whatever its name. ONNX Runtime is found as for `profile`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The ONNX model (`exports/<name>/model.onnx`)
    pub model: PathBuf,
    /// Image files or folders of images
    #[arg(required = true, value_name = "IMAGE|DIR")]
    pub images: Vec<PathBuf>,
    /// Classes printed per image
    #[arg(long, default_value_t = 1, value_name = "K",
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub top: u32,
    /// Images per ONNX Runtime run (a model whose graph fixes its batch size runs that many)
    #[arg(long, default_value_t = 32, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub batch: u32,
    /// Intra-op threads of ONNX Runtime
    #[arg(long, default_value_t = 1, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: u32,
    /// The ONNX Runtime shared library (libonnxruntime.so.1.32.0)
    #[arg(long, value_name = "PATH")]
    pub ort_lib: Option<PathBuf>,
}

pub fn run(args: &Args) -> Result<i32> {
    let images = predict::images_in(&args.images)?;
    let rt = crate::runtime::load(args.ort_lib.as_deref())?;
    let mut session = crate::runtime::Session::from_file(rt, &args.model, args.threads as usize)?;
    let pre = Preprocess::of(&session, &args.model)?;
    let bar = crate::progress::count(
        images.len() > args.batch as usize,
        images.len() as u64,
        "predict",
        "image",
    );
    let found = predict::predict(
        &mut session,
        &pre,
        &images,
        args.top as usize,
        args.batch as usize,
        |n| bar.inc(n as u64),
    )?;
    bar.finish_and_clear();
    let text: String = found
        .iter()
        .map(|p| {
            if crate::progress::json() {
                json_line(&pre, p)
            } else {
                text_line(&pre, p)
            }
        })
        .collect();
    print(&text)?;
    Ok(exit::OK)
}

/// `path<TAB>class 97.12%<TAB>class 2.31%`.
fn text_line(pre: &Preprocess, p: &Prediction) -> String {
    let mut line = p.image.display().to_string();
    for &(k, prob) in &p.top {
        line += &format!("\t{} {:.2}%", pre.class_name(k), 100.0 * prob);
    }
    line + "\n"
}

/// `{"image": path, "top": [{"class": name, "index": k, "probability": p}, ...]}`.
fn json_line(pre: &Preprocess, p: &Prediction) -> String {
    let top: Vec<serde_json::Value> = p
        .top
        .iter()
        .map(|&(k, prob)| {
            serde_json::json!({"class": pre.class_name(k), "index": k, "probability": prob})
        })
        .collect();
    let line = serde_json::json!({"image": p.image.display().to_string(), "top": top});
    format!("{line}\n")
}
