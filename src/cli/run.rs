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
}

pub fn run(args: &Args, flag: Option<crate::device::Choice>) -> Result<i32> {
    let mut sources = Sources::default();
    let p = crate::pipeline::resolve::load(&mut sources, &args.pipeline)?;
    fits_memory(&sources, &p, args.ignore_memory)?;
    let device = device(&sources, &p, flag)?;
    let run_dir = args.out.join(&p.spec.name.value);
    let opts = crate::pipeline::Options {
        from: args.from,
        only: args.only,
        force: args.force,
        progress: true,
        ort_lib: args.ort_lib.clone(),
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
        Some(false) => {
            t += &format!(
                "validation FAILED: see {}\n",
                RunDir::new(&o.run_dir).validation().display()
            )
        }
        None => {}
    }
    t += &headline(&o.run_dir);
    let report = o.run_dir.join(crate::stages::report::HTML);
    if report.exists() {
        t += &format!("report: {}\n", report.display());
    }
    t
}

/// The report summary's headline figures as one line, or nothing without a summary.
fn headline(run_dir: &Path) -> String {
    let summary = std::fs::read(run_dir.join(crate::stages::report::SUMMARY))
        .ok()
        .and_then(|b| serde_json::from_slice::<crate::stages::report::Summary>(&b).ok());
    let Some(h) = summary.map(|s| s.headline) else {
        return String::new();
    };
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
