//! `nas-pipe eval`: evaluates retrained weights on the pipeline's test set.

use std::path::PathBuf;

use super::common::{device, per_class, print};
use crate::error::{Result, exit};
use crate::spec::Sources;

/// Evaluate retrained weights on the pipeline's test set: accuracy, loss, per-class
/// accuracy and the confusion matrix. The network is rebuilt from the run folder's model
/// card alone.
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

pub fn run(args: &Args, flag: Option<crate::device::Choice>) -> Result<i32> {
    let mut sources = Sources::default();
    let p = crate::pipeline::resolve::load(&mut sources, &args.pipeline)?;
    let device = device(&sources, &p, flag)?;
    let run_dir = args.out.join(&p.spec.name.value);
    let rdir = crate::run::RunDir::new(&run_dir).retrain();
    let weights = crate::run::retrain::weights_path(&rdir, &args.weights);
    crate::run::retrain::verify_model(&run_dir, &rdir, &weights)?;
    let e = crate::stages::retrain::eval(&p, &rdir, &args.weights, &device, true)?;
    print(&format!(
        "{}: test accuracy {:.2}% (loss {:.4}) on {} images\n{}",
        e.weights,
        100.0 * e.accuracy,
        e.loss,
        e.images,
        per_class(&e)
    ))?;
    Ok(exit::OK)
}
