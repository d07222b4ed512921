//! `nas-pipe check`: validates a space or pipeline file and prints its resolved summary.

use std::path::{Path, PathBuf};

use super::common::{Kind, kind_of, print};
use crate::error::{Result, exit};
use crate::pipeline::memory;
use crate::space::{self, Overrides, show};
use crate::spec::Sources;

/// Validate a search space or pipeline file and print the resolved summary: ops, cells,
/// number of architectures, parameters and multiply-adds of the weight-sharing network
/// and their range over the discrete architectures.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A search space (`schemas/*.ron`) or pipeline (`pipelines/*.ron`) file.
    pub file: PathBuf,
    /// Print `ok` even when a step's estimated peak memory exceeds
    /// this machine's memory.
    #[arg(long)]
    pub ignore_memory: bool,
}

pub fn run(args: &Args) -> Result<i32> {
    let mut sources = Sources::default();
    let file = &args.file;
    let text = match kind_of(&mut sources, file)? {
        Kind::Space => {
            let space = space::load(&mut sources, file, None, &Overrides::default())?;
            format!("{}: ok\n{}", file.display(), show::summary(&space))
        }
        Kind::Pipeline => check_pipeline(&mut sources, file, args.ignore_memory)?,
    };
    print(&text)?;
    Ok(exit::OK)
}

/// The summary of a pipeline: its resolved spec, its space file and networks.
fn check_pipeline(sources: &mut Sources, file: &Path, ignore_memory: bool) -> Result<String> {
    let p = crate::pipeline::resolve::load(sources, file)?;
    let estimates = memory::estimates(&p);
    let machine = crate::runtime::measure::memory_limit();
    if !ignore_memory {
        memory::refuse_oversized(sources, &estimates, machine)?;
    }
    let data = data_line(sources, &p)?;
    let resolved = p.spec.to_ron();
    let mut o = format!(
        "{}: ok\n{data}\nresolved spec:\n{resolved}\n\n",
        file.display()
    );
    if let Some(b) = &p.spec.budget {
        o += &format!(
            "budget: {} (the search's share {}); `nas-pipe run` measures this machine's throughput on these networks, then plans the search's and retraining's epochs and images to fit and keeps the plan in the run folder (plan.json)\n\n",
            b.total.value, b.search.value
        );
    }
    o += &format!("space file: {}\n\n", p.space_path.display());
    if p.spec.search.is_some() {
        o += "search network\n";
        o += &show::summary(&p.search_space);
        o += "\n";
    }
    o += "retrained network\n";
    o += &show::summary(&p.retrain_space);
    if let Some((_, arch)) = &p.genotype {
        let c = p.retrain_space.discrete_cost(arch);
        o += &format!(
            "\nfixed genotype: {} params, {} MACs\n",
            show::thousands(c.params),
            show::thousands(c.macs)
        );
    }
    o += "\n";
    o += &memory::summary(&estimates, machine);
    Ok(o)
}

/// The data lines: the input and classes the data gives (for the image sources, from a
/// listing of their files), when a stage reads them where the files are and how many
/// images they hold, and how the parts the source lacks are carved. Errors, naming the
/// file, when they are missing or wrong, or when validation asks for more test images than
/// the source's test part has.
fn data_line(sources: &Sources, p: &crate::run::Resolved) -> Result<String> {
    let i = p.input;
    let mut o = format!(
        "input {}×{}×{}, {} classes ({})\n",
        i.channels,
        i.size,
        i.size,
        i.classes,
        class_preview(&p.classes)
    );
    if !p.reads_images() {
        return Ok(o + &unread_line(&p.spec.data));
    }
    if let Some(f) = crate::data::probe(&p.spec.data, p.data_dir.as_deref())? {
        let train = show::thousands(f.train as u64);
        let counts = if f.test > 0 {
            crate::pipeline::resolve::samples_fit(sources, &p.spec, f.test)?;
            format!(
                "{train} training and {} test images",
                show::thousands(f.test as u64)
            )
        } else {
            format!("{train} training images and no test part (carved from them)")
        };
        o += &format!("data: {}: {counts}\n", f.dir.display());
    }
    Ok(o + &split_line(&p.spec))
}

/// The data line of a pipeline no stage of which reads images (a tabular search, nothing
/// retrained or validated): its files are not checked, and a built-in data set's folder
/// need not exist; an image source is still listed for its classes unless it declares
/// them (`class_names`).
fn unread_line(data: &crate::spec::pipeline::Data) -> String {
    let why = "no stage of this pipeline reads images";
    match data {
        crate::spec::pipeline::Data::Synthetic { .. } => {
            format!("data: not generated: {why}\n")
        }
        _ if data.input().is_some() => {
            format!("data: not needed: {why}, so its files are neither read nor checked\n")
        }
        _ => format!("data: listed for its classes only: {why}\n"),
    }
}

/// How the parts a data set lacks are carved from its training part.
fn split_line(spec: &crate::spec::pipeline::Pipeline) -> String {
    let pct = |f: f64| format!("{}%", (f * 1000.0).round() / 10.0);
    format!(
        "split: validation {} of each class of the training part{}, test the data set's own \
         part (else {} of each class), stratified and seeded by `seed` ({})\n",
        pct(spec.split.validation.value),
        if crate::data::has_limit(&spec.data) {
            " after `limit`"
        } else {
            ""
        },
        pct(spec.split.test.value),
        spec.seed
    )
}

/// `a, b, c`, or the first ten and how many more.
fn class_preview(classes: &[String]) -> String {
    const SHOWN: usize = 10;
    if classes.len() <= SHOWN {
        return classes.join(", ");
    }
    format!(
        "{}, ... and {} more",
        classes[..SHOWN].join(", "),
        classes.len() - SHOWN
    )
}
