//! `nas-pipe worker`: evaluates a multi-trial search's trials from its trial ledger.

use std::path::PathBuf;

use super::common::device;
use crate::error::{Error, Result, exit};
use crate::spec::Sources;
use crate::stages::search::ledger::Storage;

/// Evaluate trials of a pipeline's multi-trial search from its trial ledger until the
/// search is finished.
///
/// The worker waits for the proposer (`nas-pipe run PIPELINE --storage URL`) to open the
/// pipeline's study, is refused when its pipeline (spec hash) or nas-pipe version differs
/// from the proposer's, then claims one waiting trial at a time, renews its lease while it
/// evaluates, and writes the result. Run as many as you like, on any machine that reaches
/// the ledger and the run folder (a training evaluator keeps weights there).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A pipeline file (`pipelines/*.ron`), the one the proposer runs.
    pub pipeline: PathBuf,
    /// The folder run folders are written under.
    #[arg(long, default_value = "exports", value_name = "DIR")]
    pub out: PathBuf,
    /// The trial ledger: sqlite:PATH or postgres://USER@HOST[:PORT]/DB (the password from
    /// PGPASSWORD). Default: the pipeline's `storage`, else the run folder's SQLite file.
    #[arg(long, value_name = "URL")]
    pub storage: Option<String>,
    /// Give up (exit 2) after this long with no trial to claim, none running anywhere and
    /// the study unfinished (its proposer has stopped), or with no study to join; 0 waits
    /// for ever.
    #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = idle_timeout)]
    pub idle_timeout: IdleTimeout,
}

/// `--idle-timeout`: how long a worker waits without work; none waits for ever.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IdleTimeout(pub Option<std::time::Duration>);

/// Parses `--idle-timeout`: a duration such as `90s`, `30m` or `2h`; `0` is none.
fn idle_timeout(s: &str) -> std::result::Result<IdleTimeout, String> {
    if s.trim() == "0" {
        return Ok(IdleTimeout(None));
    }
    humantime::parse_duration(s)
        .map(|d| IdleTimeout((!d.is_zero()).then_some(d)))
        .map_err(|e| format!("{e} (write e.g. 90s, 30m or 2h; 0 waits for ever)"))
}

pub fn run(args: &Args, flag: Option<crate::device::Choice>, quiet: bool) -> Result<i32> {
    let mut sources = Sources::default();
    let p = crate::pipeline::resolve::load(&mut sources, &args.pipeline)?;
    let device = device(&sources, &p, flag)?;
    let run_dir = args.out.join(&p.spec.name.value);
    let p = p.in_run_folder(&run_dir);
    let storage = match args.storage.as_ref().or(p.spec.storage.as_ref()) {
        Some(u) => Storage::parse(u)?,
        None => Storage::in_run(&run_dir),
    };
    proposer_folder(&storage)?;
    let (id, _) = crate::stages::search::worker::worker_id();
    let w = crate::stages::search::worker::work(
        &p,
        &run_dir,
        &device,
        &storage,
        args.idle_timeout.0,
        |line| {
            if !quiet {
                eprintln!("worker {id}: {line}");
            }
        },
    )?;
    if !quiet {
        eprintln!(
            "worker {id}: study finished; {} trial(s) done, {} failed attempt(s)",
            w.done, w.failed_attempts
        );
    }
    Ok(exit::OK)
}

/// Refuses a SQLite ledger whose folder does not exist: the proposer creates the ledger
/// and its folder, so a worker waiting there would wait for its idle timeout on a path no
/// proposer uses (a typo, another `--out`). A missing file in an existing folder is waited
/// for: the proposer may start after its workers.
fn proposer_folder(storage: &Storage) -> Result<()> {
    let Storage::Sqlite(path) = storage else {
        return Ok(());
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => return Ok(()),
    };
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::Input(format!(
            "ledger {}: the folder {} does not exist, so no proposer has opened this \
             ledger\n  = help: give the worker the --storage and --out of its proposer \
             (`nas-pipe run PIPELINE --storage URL`), or start the proposer first",
            path.display(),
            dir.display()
        ))),
        _ => Ok(()),
    }
}
