//! `nas-pipe profile`: measures an ONNX model's (or a pipeline's exported model's) latency
//! and throughput on ONNX Runtime, prints the table, and writes `profile.json` and
//! `profile.md` into the run folder (a pipeline) or where `--out` says (a model file).

use std::path::PathBuf;

use super::common::print;
use crate::error::{Error, Result, exit};
use crate::run::RunDir;
use crate::run::profile::Plan;
use crate::run::profile::Report;
use crate::spec::Sources;
use crate::stages::profile::Known;

/// Measure an ONNX model's latency and throughput on ONNX Runtime (CPU) for each batch
/// size × intra-op thread count and print the table; with --out, also write
/// `profile.json` and `profile.md` there. Nothing is written beside the model.
///
/// Given a pipeline (`.ron`), profiles its exported `<out>/<name>/model.onnx` with the
/// pipeline's `profile` plan (the flags override it), adds the architecture's
/// parameters and MACs from the model card, and writes into the run folder.
///
/// The input shape is read from the model's first input: its batch (first) dimension
/// may be dynamic; a fixed one is the only batch size profiled. ONNX Runtime is loaded
/// from --ort-lib, else ORT_DYLIB_PATH, else the onnxruntime Python package (.venv/,
/// then python3), else the system library path.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// An ONNX model file with one f32 input, or a pipeline file (`.ron`).
    pub model: PathBuf,
    /// Batch sizes, comma-separated [default: 1,32]
    #[arg(long, value_name = "N,..", value_delimiter = ',')]
    pub batch_sizes: Option<Vec<usize>>,
    /// Intra-op thread counts, comma-separated [default: 1]
    #[arg(long, value_name = "N,..", value_delimiter = ',')]
    pub threads: Option<Vec<usize>>,
    /// Untimed runs before the timed ones [default: 20]
    #[arg(long, value_name = "N")]
    pub warmup: Option<usize>,
    /// Timed runs per batch size and thread count [default: 200]
    #[arg(long, value_name = "N")]
    pub runs: Option<usize>,
    /// The ONNX Runtime shared library (libonnxruntime.so.1.32.0)
    #[arg(long, value_name = "PATH")]
    pub ort_lib: Option<PathBuf>,
    /// Folder to write profile.json and profile.md in [default: none, only print]; for a
    /// pipeline, the folder holding the run folders [default: exports]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

pub fn run(args: &Args) -> Result<i32> {
    let is_pipeline = args.model.extension().is_some_and(|e| e == "ron");
    let (report, dir) = if is_pipeline {
        let (r, d) = profile_pipeline(args)?;
        (r, Some(d))
    } else {
        profile_file(args)?
    };
    let mut text = format!("{}\n", crate::stages::profile::markdown(&report));
    if let Some(dir) = dir {
        text += &format!(
            "written to {} and {}\n",
            dir.join(crate::run::dir::PROFILE_JSON).display(),
            dir.join(crate::run::dir::PROFILE_MD).display()
        );
    }
    print(&text)?;
    Ok(exit::OK)
}

/// The flags' overrides of `plan`.
fn with_flags(plan: Plan, args: &Args) -> Result<Plan> {
    plan.with_overrides(
        args.batch_sizes.as_deref(),
        args.threads.as_deref(),
        args.warmup,
        args.runs,
    )
}

/// A pipeline profiles its exported model with its own plan, into its run folder.
fn profile_pipeline(args: &Args) -> Result<(Report, PathBuf)> {
    let p = crate::pipeline::resolve::load(&mut Sources::default(), &args.model)?;
    let run_dir = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("exports"))
        .join(&p.spec.name.value);
    let plan = with_flags(crate::stages::profile::plan_of(&p), args)?;
    let _busy = crate::run::busy::acquire(&run_dir, "nas-pipe profile")?;
    let onnx = RunDir::new(&run_dir).model_onnx();
    if !onnx.exists() {
        return Err(Error::Input(format!(
            "{} does not exist: run `nas-pipe export` first",
            onnx.display()
        )));
    }
    // The file is checked before the library is looked for.
    crate::runtime::model_file::read(&onnx)?;
    let rt = crate::runtime::load(args.ort_lib.as_deref())?;
    let report = super::common::replacing(&run_dir, crate::run::Stage::Profile, || {
        crate::stages::profile::run_folder(&run_dir, &plan, rt)
    })?;
    Ok((report, run_dir))
}

/// An ONNX file is profiled with the default plan; the report is written into `--out`
/// when given, and nowhere else.
fn profile_file(args: &Args) -> Result<(Report, Option<PathBuf>)> {
    let model = &args.model;
    let plan = with_flags(Plan::default(), args)?;
    crate::runtime::model_file::read(model)?;
    let rt = crate::runtime::load(args.ort_lib.as_deref())?;
    let report = crate::stages::profile::run(rt, model, &plan, Known::default(), |_| {})?;
    if let Some(dir) = &args.out {
        crate::stages::profile::write(&report, dir)?;
    }
    Ok((report, args.out.clone()))
}
