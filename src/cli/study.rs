//! `nas-pipe study`: runs multi-trial pipelines with a tabular evaluator over many seeds and
//! prints the returned architectures' scores side by side.

use std::path::PathBuf;

use super::common::print;
use crate::error::{Result, exit};
use crate::spec::Sources;
use crate::stages::search::study;

/// Run a multi-trial pipeline with a tabular evaluator over many seeds and print the
/// returned architecture's scores as mean ± standard deviation: the search signal (the
/// column the strategy selects on) and the report signal (a column it never saw) in
/// separate columns. Several pipelines are compared side by side.
///
/// Writes `<out>/<name>/study.json` per pipeline: per seed the returned architecture
/// (its genotype and NAS-Bench-201 string), its scores and the evaluations spent.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Pipeline files with `search: Trials(evaluator: Tabular(...))`.
    #[arg(required = true)]
    pub pipelines: Vec<PathBuf>,
    /// Seeds: the pipeline's seed, seed + 1, ...
    #[arg(long, default_value_t = 30, value_name = "N")]
    pub seeds: u64,
    /// Evaluations per search, in place of each pipeline's budget.
    #[arg(long, value_name = "N")]
    pub evaluations: Option<usize>,
    /// Where to draw the pipelines' best-so-far curves (search and report signals against
    /// evaluations, mean ± standard error over seeds) as SVG. Default: `<out>/study.svg`.
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// The folder run folders are written under.
    #[arg(long, default_value = "exports", value_name = "DIR")]
    pub out: PathBuf,
}

pub fn run(args: &Args) -> Result<i32> {
    let mut sources = Sources::default();
    let mut studies = Vec::new();
    for file in &args.pipelines {
        let p = crate::pipeline::resolve::load(&mut sources, file)?;
        let s = study::run(&p, args.seeds, args.evaluations, true)?;
        let path = args.out.join(&p.spec.name.value).join("study.json");
        study::write(&s, &path)?;
        studies.push((s, path));
    }
    let mut text = study::table(&studies);
    let path = args
        .plot
        .clone()
        .unwrap_or_else(|| args.out.join("study.svg"));
    let svg = crate::pipeline::study_plot::curves_svg(&studies)?;
    crate::fsutil::write_atomic(&path, svg.as_bytes())?;
    text += &format!("curves: {}\n", path.display());
    print(&text)?;
    Ok(exit::OK)
}
