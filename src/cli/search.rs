//! `nas-pipe search`: searches a pipeline's space (DARTS-family or multi-trial) and writes
//! the derived genotype.

use std::path::{Path, PathBuf};

use candle_core::Device;

use super::common::{device, fits_memory, print};
use crate::error::{Result, exit};
use crate::run::Resolved;
use crate::run::RunDir;
use crate::spec::Sources;
use crate::spec::pipeline::Search;

/// Search the pipeline's space and write the derived genotype.
///
/// DARTS-family: writes `<out>/<name>/search/` (a checkpoint per epoch, `state.json`
/// with metrics and the op-weight history). Multi-trial (`Trials`): writes
/// `search/trials.json` (every proposal with its scores) and `search/pareto.json`.
/// Both write `<out>/<name>/genotype.ron`. A search that was stopped resumes where it
/// stopped; outputs of a different spec are an error and are left untouched.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A pipeline file (`pipelines/*.ron`).
    pub pipeline: PathBuf,
    /// The folder run folders are written under.
    #[arg(long, default_value = "exports", value_name = "DIR")]
    pub out: PathBuf,
    /// Stop after this many epochs (DARTS) or proposals (Trials) in total (resume later
    /// by running again).
    #[arg(long, value_name = "N")]
    pub stop_after: Option<usize>,
    /// The ONNX Runtime library, for latency objectives (default: search as `nas-pipe
    /// run` does)
    #[arg(long, value_name = "FILE")]
    pub ort_lib: Option<PathBuf>,
    /// Go ahead even when a step's estimated peak memory (see `nas-pipe check`) exceeds
    /// this machine's memory.
    #[arg(long)]
    pub ignore_memory: bool,
    #[command(flatten)]
    pub scale: super::common::ScaleArgs,
}

pub fn run(args: &Args, flag: Option<crate::device::Choice>) -> Result<i32> {
    let mut sources = Sources::default();
    let p = crate::pipeline::resolve::load(&mut sources, &args.pipeline)?;
    if !matches!(p.spec.search.as_deref(), Some(Search::Trials { evaluator, .. })
        if matches!(evaluator.value, crate::spec::pipeline::Evaluator::Tabular { .. }))
    {
        // The data's files, checked before any work, with where to get them.
        crate::data::probe(&p.spec.data, p.data_dir.as_deref())?;
    }
    fits_memory(&sources, &p, args.ignore_memory)?;
    let device = device(&sources, &p, flag)?;
    let run_dir = args.out.join(&p.spec.name.value);
    let p = p.in_run_folder(&run_dir);
    let text = if matches!(p.spec.search.as_deref(), Some(Search::Trials { .. })) {
        trials(args, &p, &run_dir, &device)?
    } else {
        darts(args, &p, &run_dir, &device)?
    };
    print(&text)?;
    Ok(exit::OK)
}

/// A multi-trial search; what it did.
fn trials(args: &Args, p: &Resolved, run_dir: &Path, device: &Device) -> Result<String> {
    let _busy = crate::run::busy::acquire(run_dir, "nas-pipe search")?;
    let ort: crate::pipeline::Ort =
        crate::runtime::load(args.ort_lib.as_deref()).map_err(|e| e.to_string());
    let opts = crate::stages::search::trials::Options {
        stop_after: args.stop_after,
        progress: true,
        scale: args.scale.scale(p, &args.pipeline, &args.out)?,
    };
    let o = crate::pipeline::trials::trials(p, run_dir, device, &ort, &opts)?;
    if !o.state.finished {
        return Ok(format!(
            "search stopped after {} proposals ({} evaluations of {}); run again to resume from {}\n",
            o.state.records.len(),
            o.state.evaluations(),
            o.state.budget,
            RunDir::new(run_dir).search().display()
        ));
    }
    let g = crate::stages::derive::from_trials(p, run_dir)?;
    let prior = o.state.prior.as_ref().map_or(String::new(), |pr| {
        format!(
            "zero-cost prior: {} pool of {} scored in {:.1}s, {} kept\n",
            pr.proxy,
            pr.pool.len(),
            pr.seconds,
            pr.kept.len()
        )
    });
    let rho = crate::run::trials::Correlations::of(&o.state.records).map_or(String::new(), |c| {
        format!("proxies' Spearman ρ with the search signal: {}\n", c.text())
    });
    Ok(format!(
        "search finished: {} evaluations in {:.1}s this run\n{prior}{rho}{}\ngenotype written to {}\n{}",
        o.state.evaluations(),
        o.seconds,
        crate::stages::search::study::summary(&o.state, &o.front),
        RunDir::new(run_dir).genotype().display(),
        g.to_ron()
    ))
}

/// A DARTS-family search; what it did.
fn darts(args: &Args, p: &Resolved, run_dir: &Path, device: &Device) -> Result<String> {
    // Refuses --workers and --storage: only a multi-trial search runs on workers.
    args.scale.scale(p, &args.pipeline, &args.out)?;
    let search = p.spec.search.as_deref();
    let latency = matches!(
        search,
        Some(Search::Darts {
            latency: Some(_),
            ..
        })
    );
    let opts = crate::stages::search::darts::Options {
        stop_after: args.stop_after,
        progress: true,
        ort: if latency {
            Some(crate::runtime::load(args.ort_lib.as_deref())?)
        } else {
            None
        },
    };
    let _busy = crate::run::busy::acquire(run_dir, "nas-pipe search")?;
    let outcome = crate::stages::search::darts::run(p, run_dir, device, &opts)?;
    let done = outcome.metrics.len();
    if let Some(Search::Darts { epochs, .. }) = search
        && done < epochs.value as usize
    {
        return Ok(format!(
            "search stopped after epoch {done} of {}; run again to resume from {}\n",
            epochs.value,
            RunDir::new(run_dir).search().display()
        ));
    }
    let genotype = crate::stages::derive::from_darts(p, run_dir)?;
    Ok(format!(
        "search finished: {} epochs in {:.1}s this run\ngenotype written to {}\n{}",
        done,
        outcome.seconds,
        RunDir::new(run_dir).genotype().display(),
        genotype.to_ron()
    ))
}
