//! `nas-pipe train`: trains a genotype's final network from scratch, selects `best` on the
//! validation part and evaluates the last weights once on the test part.

use std::path::PathBuf;

use super::common::{device, fits_memory, per_class, print};
use crate::error::{Result, exit};
use crate::spec::Sources;
use crate::stages::retrain;

/// Train the final network of a genotype from scratch (the pipeline's `retrain`
/// section), evaluate it on the validation part each epoch (`best.safetensors` is the best
/// of these), evaluate the last weights once on the test part, and write the weights,
/// metrics, confusion matrix and model card to `<out>/<name>/retrain/`. A run that was
/// stopped resumes from its last checkpoint.
#[derive(Debug, clap::Args)]
pub struct Args {
    pub pipeline: PathBuf,
    /// The architecture: a genotype file, a published name (DARTS_V1, DARTS_V2), a DARTS
    /// `Genotype(normal=[...], ...)` string or a NAS-Bench-201 string. Default: the
    /// pipeline's `genotype`, else the genotype the search wrote (`<out>/<name>/genotype.ron`)
    #[arg(long, value_name = "G")]
    pub genotype: Option<String>,
    /// Folder holding the run folders
    #[arg(long, default_value = "exports", value_name = "DIR")]
    pub out: PathBuf,
    /// Stop after this many epochs in total (run again to continue)
    #[arg(long, value_name = "N")]
    pub stop_after: Option<usize>,
    /// Go ahead even when a step's estimated peak memory (see `nas-pipe check`) exceeds
    /// this machine's memory.
    #[arg(long)]
    pub ignore_memory: bool,
}

pub fn run(args: &Args, flag: Option<crate::device::Choice>) -> Result<i32> {
    let mut sources = Sources::default();
    let p = crate::pipeline::resolve::load(&mut sources, &args.pipeline)?;
    // The data's files, checked before any work, with where to get them.
    crate::data::probe(&p.spec.data, p.data_dir.as_deref())?;
    fits_memory(&sources, &p, args.ignore_memory)?;
    let device = device(&sources, &p, flag)?;
    let run_dir = args.out.join(&p.spec.name.value);
    let p = p.in_run_folder(&run_dir);
    let _busy = crate::run::busy::acquire(&run_dir, "nas-pipe train")?;
    let g = retrain::choose_genotype(&p, &run_dir, args.genotype.as_deref())?;
    let opts = retrain::Options {
        stop_after: args.stop_after,
        progress: true,
        paced: None,
    };
    let o = retrain::run(&p, &run_dir, &device, &g, &opts)?;
    print(&summary(&o))?;
    Ok(exit::OK)
}

/// Where training stopped, or the test figures it finished with.
fn summary(o: &retrain::Outcome) -> String {
    match &o.evaluation {
        None => format!(
            "training stopped after epoch {}; run again to resume from {}\n",
            o.metrics.len(),
            o.dir.display()
        ),
        Some(e) => format!(
            "training finished: {} epochs in {:.1}s this run\n{}test accuracy {:.2}% (loss {:.4}) on {} images, {}, evaluated once\n{}weights, metrics and model card in {}\n",
            o.metrics.len(),
            o.seconds,
            best_line(&o.metrics),
            100.0 * e.accuracy,
            e.loss,
            e.images,
            e.weights,
            per_class(e),
            o.dir.display()
        ),
    }
}

/// The epoch `best.safetensors` holds: the first with the highest validation accuracy.
fn best_line(metrics: &[crate::run::retrain::EpochMetrics]) -> String {
    match crate::run::retrain::best_epoch(metrics) {
        Some((epoch, acc)) => format!(
            "best validation accuracy {:.2}% after epoch {} ({})\n",
            100.0 * acc,
            epoch + 1,
            crate::run::dir::model_file::BEST
        ),
        None => String::new(),
    }
}
