//! `nas-pipe validate`: compares the exported ONNX model in ONNX Runtime with the retrained
//! Candle model.

use std::path::{Path, PathBuf};

use super::common::{device, print};
use crate::error::{Result, exit};
use crate::run::RunDir;
use crate::spec::Sources;

/// Compare the exported `<out>/<name>/model.onnx` in ONNX Runtime with the retrained
/// Candle model (evaluation mode) on the pipeline's `validate.samples` first test
/// images: largest and mean absolute logit difference, top-1 agreement, both accuracies.
/// Writes `<out>/<name>/validation.json`; exits with 1 when the pipeline's tolerances
/// are missed.
#[derive(Debug, clap::Args)]
pub struct Args {
    pub pipeline: PathBuf,
    /// Folder holding the run folders
    #[arg(long, default_value = "exports", value_name = "DIR")]
    pub out: PathBuf,
    /// The ONNX Runtime shared library (libonnxruntime.so.1.32.0)
    #[arg(long, value_name = "PATH")]
    pub ort_lib: Option<PathBuf>,
}

pub fn run(args: &Args, flag: Option<crate::device::Choice>) -> Result<i32> {
    let mut sources = Sources::default();
    let p = crate::pipeline::resolve::load(&mut sources, &args.pipeline)?;
    // The data's files, checked before any work, with where to get them.
    crate::data::probe(&p.spec.data, p.data_dir.as_deref())?;
    let device = device(&sources, &p, flag)?;
    let run_dir = args.out.join(&p.spec.name.value);
    let p = p.in_run_folder(&run_dir);
    let _busy = crate::run::busy::acquire(&run_dir, "nas-pipe validate")?;
    let v = super::common::replacing(&run_dir, crate::run::Stage::Validate, || {
        crate::stages::validate::run(&p, &run_dir, &device, args.ort_lib.as_deref())
    })?;
    print(&summary(&v, &run_dir))?;
    if !v.passed {
        return Ok(exit::CHECK_FAILED);
    }
    Ok(exit::OK)
}

/// The comparison's figures against their tolerances, and where they were written.
fn summary(v: &crate::run::validation::Validation, run_dir: &Path) -> String {
    format!(
        "{}: {} on {} test images (ONNX Runtime {} against Candle)\n  \
         max abs logit diff {:.3e} (allowed {:.1e}), mean {:.3e}\n  \
         top-1 agreement {:.2}% (required {:.2}%)\n  \
         accuracy: ONNX Runtime {:.2}%, Candle {:.2}%\nwritten to {}\n",
        v.model,
        if v.passed { "passed" } else { "FAILED" },
        v.samples,
        v.ort_version,
        v.max_abs_diff,
        v.max_abs_diff_allowed,
        v.mean_abs_diff,
        100.0 * v.top1_agreement,
        100.0 * v.min_top1_agreement,
        100.0 * v.ort_accuracy,
        100.0 * v.candle_accuracy,
        RunDir::new(run_dir).validation().display()
    )
}
