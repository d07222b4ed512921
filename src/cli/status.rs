//! `nas-pipe status`: says which stages of a run folder are done, stale or missing, and why.

use std::path::PathBuf;

use super::common::{device, print};
use crate::error::{Result, exit};
use crate::space::show;
use crate::spec::Sources;

/// Say which stages of a pipeline's run folder are done, stale or missing, and why.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A pipeline file (`pipelines/*.ron`).
    pub pipeline: PathBuf,
    /// The folder run folders are written under.
    #[arg(long, default_value = "exports", value_name = "DIR")]
    pub out: PathBuf,
    /// The ONNX Runtime shared library (its version is part of the validate and profile keys)
    #[arg(long, value_name = "PATH")]
    pub ort_lib: Option<PathBuf>,
}

pub fn run(args: &Args, flag: Option<crate::device::Choice>) -> Result<i32> {
    let mut sources = Sources::default();
    let p = crate::pipeline::resolve::load(&mut sources, &args.pipeline)?;
    let device = device(&sources, &p, flag)?;
    let run_dir = args.out.join(&p.spec.name.value);
    let r = crate::pipeline::status(&sources, &p, &run_dir, &device, args.ort_lib.as_deref())?;
    print(&table(&r))?;
    Ok(exit::OK)
}

/// `nas-pipe status` as a table.
fn table(r: &crate::pipeline::Report) -> String {
    let mut t = format!("{}\n", r.run_dir.display());
    if let Some(h) = &r.holder {
        t += &format!("in use by {h}\n");
    }
    t += &format!(
        "  {:<9} {:<8} {:<12} {:<20} {:>9}  {}\n",
        "stage", "state", "key", "finished", "seconds", "why"
    );
    for s in &r.stages {
        t += &row(s);
    }
    if !r.stale.is_empty() {
        let total: u64 = r.stale.iter().map(|(_, b)| b).sum();
        t += &format!(
            "{} set aside in {} ({} bytes; moved back when their key returns, safe to delete):\n",
            r.stale.len(),
            r.run_dir.join(crate::run::STALE_DIR).display(),
            show::thousands(total)
        );
        for (name, bytes) in &r.stale {
            t += &format!("  {name} ({} bytes)\n", show::thousands(*bytes));
        }
    }
    t
}

/// One stage's line of the table.
fn row(s: &crate::pipeline::StageStatus) -> String {
    let (key, finished, seconds) = match &s.entry {
        Some(e) => (
            e.key.chars().take(12).collect::<String>(),
            e.finished.clone().unwrap_or_else(|| "-".into()),
            if e.finished.is_some() {
                format!("{:.1}", e.seconds)
            } else {
                "-".into()
            },
        ),
        None => ("-".into(), "-".into(), "-".into()),
    };
    format!(
        "  {:<9} {:<8} {:<12} {:<20} {:>9}  {}\n",
        s.stage.name(),
        s.state.word(),
        key,
        finished,
        seconds,
        s.state.why()
    )
}
