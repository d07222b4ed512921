//! `nas-pipe export`: exports the retrained network to ONNX.

use std::path::PathBuf;

use super::common::print;
use crate::error::{Result, exit};
use crate::spec::Sources;

/// Export the retrained network to ONNX (the pipeline's `export` section: opset, BN
/// folding) as `<out>/<name>/model.onnx`. The network is rebuilt from the run folder's
/// model card and weights alone; drop path and the auxiliary head are not exported.
#[derive(Debug, clap::Args)]
pub struct Args {
    pub pipeline: PathBuf,
    /// `last.safetensors`, `best.safetensors` (in the retrain folder) or a path
    #[arg(long, default_value = crate::run::dir::model_file::LAST, value_name = "FILE")]
    pub weights: String,
    /// Folder holding the run folders
    #[arg(long, default_value = "exports", value_name = "DIR")]
    pub out: PathBuf,
}

pub fn run(args: &Args) -> Result<i32> {
    let p = crate::pipeline::resolve::load(&mut Sources::default(), &args.pipeline)?;
    let run_dir = args.out.join(&p.spec.name.value);
    let _busy = crate::run::busy::acquire(&run_dir, "nas-pipe export")?;
    let (path, opts, bytes) =
        super::common::replacing(&run_dir, crate::run::Stage::Export, || {
            crate::stages::export::run(&p, &run_dir, &args.weights)
        })?;
    print(&format!(
        "wrote {} ({} bytes, opset {}, BN {})\n",
        path.display(),
        bytes,
        opts.opset,
        if opts.fold_batch_norm {
            "folded"
        } else {
            "as nodes"
        }
    ))?;
    Ok(exit::OK)
}
