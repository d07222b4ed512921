//! `nas-pipe run`: runs a pipeline's stages in order, skipping those that are done, and
//! prints what each stage did.

use std::path::{Path, PathBuf};

use super::common::{device, fits_memory, print};
use crate::error::{Result, exit};
use crate::pipeline::{Action, Outcome};
use crate::run::RunDir;
use crate::space::show;
use crate::spec::Sources;

/// Run a pipeline's stages in order (search, derive, retrain, export, validate,
/// profile, report) in `<out>/<name>/`, skipping every stage that is done.
///
/// A stage is done when the lock file (`nas-pipe.lock`) records it finished under the
/// cache key the spec gives now (a hash of its resolved spec sections, the keys of the
/// stages before it, nas-pipe's version and the device) and its outputs and inputs still
/// have their recorded hashes. Outputs a stage replaces are set aside in `stale/` and
/// moved back when their key comes back. A run that was killed continues from the last
/// checkpoint. Exits with 1 when validation misses its tolerances.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A pipeline file (`pipelines/*.ron`).
    pub pipeline: PathBuf,
    /// The folder run folders are written under.
    #[arg(long, default_value = "exports", value_name = "DIR")]
    pub out: PathBuf,
    /// Run this stage and every later one, even when done (the earlier ones must be done).
    #[arg(long, value_name = "STAGE", conflicts_with = "only")]
    pub from: Option<crate::run::Stage>,
    /// Run only this stage, even when done (the stages it reads must be done).
    #[arg(long, value_name = "STAGE")]
    pub only: Option<crate::run::Stage>,
    /// Run every stage (or every selected one), even when done.
    #[arg(long)]
    pub force: bool,
    /// The ONNX Runtime shared library (libonnxruntime.so.1.32.0)
    #[arg(long, value_name = "PATH")]
    pub ort_lib: Option<PathBuf>,
    /// Go ahead even when a step's estimated peak memory (see `nas-pipe check`) exceeds
    /// this machine's memory.
    #[arg(long)]
    pub ignore_memory: bool,
    /// A wall-clock budget for the whole run (`1h`, `90min`, `1h 30m`): the search's and
    /// retraining's epochs and images are planned to fit it from throughput measured on
    /// this machine. Replaces the pipeline's `budget` total.
    #[arg(long, value_name = "DURATION")]
    pub budget: Option<String>,
    #[command(flatten)]
    pub scale: super::common::ScaleArgs,
}

pub fn run(args: &Args, flag: Option<crate::device::Choice>) -> Result<i32> {
    let mut sources = Sources::default();
    let p = crate::pipeline::resolve::load(&mut sources, &args.pipeline)?;
    let p = match &args.budget {
        Some(total) => crate::pipeline::budget::with_total(&p, total)?,
        None => p,
    };
    fits_memory(&sources, &p, args.ignore_memory)?;
    let device = device(&sources, &p, flag)?;
    let run_dir = args.out.join(&p.spec.name.value);
    let opts = crate::pipeline::Options {
        from: args.from,
        only: args.only,
        force: args.force,
        progress: true,
        ort_lib: args.ort_lib.clone(),
        scale: args.scale.scale(&p, &args.pipeline, &args.out)?,
    };
    let o = crate::pipeline::run(&sources, &p, &run_dir, &device, &opts)?;
    print(&summary(&o))?;
    if o.validation_passed == Some(false) {
        return Ok(exit::CHECK_FAILED);
    }
    Ok(exit::OK)
}

/// What `nas-pipe run` did, a line per stage, and where the results are.
fn summary(o: &Outcome) -> String {
    let mut t = format!("{}:\n", o.run_dir.display());
    for (stage, action) in &o.stages {
        let what = match action {
            Action::Cached => "cached".to_string(),
            Action::Restored(from) => format!("restored from {}", from.display()),
            Action::Ran(s) => format!("ran in {s:.1}s"),
            Action::Skipped => "not selected".to_string(),
        };
        t += &format!("  {:<9} {what}\n", stage.name());
    }
    for d in &o.set_aside {
        t += &format!("previous outputs set aside in {}\n", d.display());
    }
    match o.validation_passed {
        Some(true) => t += "validation passed\n",
        Some(false) => t += &validation_failure(&o.run_dir),
        None => {}
    }
    t += &headline(&o.run_dir);
    let report = o.run_dir.join(crate::stages::report::HTML);
    if report.exists() {
        t += &format!("report: {}\n", report.display());
    }
    t
}

/// What validation missed, with the figures and their tolerances, and where they are.
fn validation_failure(run_dir: &Path) -> String {
    let path = RunDir::new(run_dir).validation();
    let v = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice::<crate::run::validation::Validation>(&b).ok());
    let mut missed = Vec::new();
    if let Some(v) = &v {
        // A NaN difference is a miss.
        if v.max_abs_diff.is_nan() || v.max_abs_diff > v.max_abs_diff_allowed {
            missed.push(format!(
                "largest logit difference {:.3e} > allowed {:.1e}",
                v.max_abs_diff, v.max_abs_diff_allowed
            ));
        }
        if v.top1_agreement < v.min_top1_agreement {
            missed.push(format!(
                "top-1 agreement {:.2}% < required {:.2}%",
                100.0 * v.top1_agreement,
                100.0 * v.min_top1_agreement
            ));
        }
        missed.push(format!("on {} test images", v.samples));
    }
    missed.push(format!("see {}", path.display()));
    format!("validation FAILED: {}\n", missed.join(", "))
}

/// The report summary's headline figures as one line (after a multi-trial search, the
/// returned architecture first), or nothing without a summary.
fn headline(run_dir: &Path) -> String {
    let summary = std::fs::read(run_dir.join(crate::stages::report::SUMMARY))
        .ok()
        .and_then(|b| serde_json::from_slice::<crate::stages::report::Summary>(&b).ok());
    let Some(s) = summary else {
        return String::new();
    };
    let Some(tr) = &s.trials else {
        return figures(&s.headline);
    };
    let mut t = returned(run_dir, tr);
    // Without a retrained model the headline repeats the returned architecture's figures.
    if s.model.is_some() {
        t += &figures(&s.headline);
    }
    t
}

/// The architecture a multi-trial search returned: its string, its genotype file, its
/// scores and cost, and the size of the front.
fn returned(run_dir: &Path, t: &crate::stages::report::TrialsSummary) -> String {
    let Some(b) = &t.best else {
        return String::new();
    };
    let mut o = String::from("returned architecture:");
    if let Some(s) = &b.nb201 {
        o += &format!(" {s}");
    }
    o += &format!(
        "\n  genotype  {}\n",
        RunDir::new(run_dir).genotype().display()
    );
    let mut scores = Vec::new();
    if let Some(a) = b.accuracy {
        scores.push(format!("search {:.2}%", 100.0 * a));
    }
    if let Some(r) = b.report {
        scores.push(format!("{} {:.2}%", t.report, 100.0 * r));
    }
    if !scores.is_empty() {
        o += &format!("  scores    {}\n", scores.join(", "));
    }
    let mut cost = vec![
        format!("{} params", show::thousands(b.params)),
        format!("{} MACs", show::thousands(b.macs)),
    ];
    if let Some(l) = b.latency_ms {
        cost.push(format!("{l:.3} ms"));
    }
    o += &format!("  cost      {}\n", cost.join(", "));
    o += &format!(
        "  front     {} architecture{} over {} ({})\n",
        t.front,
        if t.front == 1 { "" } else { "s" },
        t.objectives.join(", "),
        RunDir::new(run_dir).pareto().display()
    );
    o
}

/// The headline figures as one line, or nothing when there are none.
fn figures(h: &crate::stages::report::Headline) -> String {
    let mut facts = Vec::new();
    if let Some(a) = h.test_accuracy {
        facts.push(format!("test accuracy {:.2}%", 100.0 * a));
    }
    if let Some(l) = h.latency_p50_ms_batch1 {
        facts.push(format!("batch-1 p50 latency {l:.3} ms"));
    }
    if let Some(n) = h.params {
        facts.push(format!("{} params", show::thousands(n)));
    }
    if let Some(n) = h.macs {
        facts.push(format!("{} MACs per image", show::thousands(n)));
    }
    if facts.is_empty() {
        return String::new();
    }
    format!("{}\n", facts.join(", "))
}
