//! `nas-pipe report`: rebuilds a run's report from the artifacts in its run folder.

use std::path::PathBuf;

use super::common::print;
use crate::error::{Error, Result, exit};
use crate::spec::Sources;

/// Rebuild a run's report (`report.html`, `report.md`, `summary.json`) from the
/// artifacts in its run folder alone.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A pipeline file (`pipelines/*.ron`) or a run folder (`exports/<name>`).
    pub pipeline: PathBuf,
    /// The folder run folders are written under (for a pipeline file).
    #[arg(long, default_value = "exports", value_name = "DIR")]
    pub out: PathBuf,
}

pub fn run(args: &Args) -> Result<i32> {
    let file = &args.pipeline;
    let run_dir = if file.is_dir() {
        file.clone()
    } else {
        let p = crate::pipeline::resolve::load(&mut Sources::default(), file)?;
        args.out.join(&p.spec.name.value)
    };
    if !run_dir.is_dir() {
        return Err(Error::Input(format!(
            "{} does not exist: run the pipeline first (`nas-pipe run`)",
            run_dir.display()
        )));
    }
    let _busy = crate::run::busy::acquire(&run_dir, "nas-pipe report")?;
    let w = super::common::replacing(&run_dir, crate::run::Stage::Report, || {
        crate::stages::report::write(&run_dir)
    })?;
    print(&format!(
        "wrote {}, {} and {}\n",
        w.html.display(),
        w.md.display(),
        w.summary.display()
    ))?;
    Ok(exit::OK)
}
