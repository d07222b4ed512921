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
    // The data's files, checked before any work, with where to get them.
    crate::data::probe(&p.spec.data, p.data_dir.as_deref())?;
    let device = device(&sources, &p, flag)?;
    let run_dir = args.out.join(&p.spec.name.value);
    let p = p.in_run_folder(&run_dir);
    let rdir = crate::run::RunDir::new(&run_dir).retrain();
    let weights = crate::run::retrain::weights_path(&rdir, &args.weights);
    crate::run::retrain::verify_model(&run_dir, &rdir, &weights)?;
    let e = crate::stages::retrain::eval(&p, &rdir, &args.weights, &device, true)?;
    print(&format!(
        "{}: test accuracy {:.2}% (loss {:.4}) on {} images\n{}\n{}",
        e.weights,
        100.0 * e.accuracy,
        e.loss,
        e.images,
        per_class(&e),
        confusion(&e)
    ))?;
    Ok(exit::OK)
}

/// The confusion matrix: a row per true class, a column per predicted class (numbered as
/// the rows).
fn confusion(e: &crate::nets::train::Evaluation) -> String {
    let width = e
        .confusion
        .iter()
        .flatten()
        .map(|n| n.to_string().len())
        .max()
        .unwrap_or(1)
        .max(e.classes.len().to_string().len());
    let mut o = format!(
        "confusion matrix (rows: true class, columns: predicted)\n{:19}",
        ""
    );
    for k in 0..e.classes.len() {
        o += &format!(" {k:>width$}");
    }
    o += "\n";
    for (k, (c, row)) in e.classes.iter().zip(&e.confusion).enumerate() {
        let name: String = c.chars().take(14).collect();
        o += &format!("  {k:>2} {name:<14}");
        for n in row {
            o += &format!(" {n:>width$}");
        }
        o += "\n";
    }
    o
}
