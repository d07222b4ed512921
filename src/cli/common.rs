//! What several commands share: telling a space file from a pipeline file, choosing the
//! device, printing to stdout, per-class accuracy lines.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::spec::{Sources, Span};

/// What kind of spec a file holds, from its leading struct name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Space,
    Pipeline,
}

/// Looks at the first identifier after comments and attributes.
pub fn kind_of(sources: &mut Sources, path: &Path) -> Result<Kind> {
    let src = crate::spec::Source::read(path)?;
    let text = src.text.clone();
    let id = sources.add(src);
    let rest = skip_preamble(&text);
    let at = text.len() - rest.len();
    let word: String = rest
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    match word.as_str() {
        "SearchSpace" => Ok(Kind::Space),
        "Pipeline" => Ok(Kind::Pipeline),
        _ => Err(sources
            .diag(
                Span {
                    file: id,
                    start: at,
                    end: at + word.len().max(1),
                },
                "expected a search space `SearchSpace(...)` or a pipeline `Pipeline(...)`",
            )
            .into()),
    }
}

/// The text after leading whitespace, comments and inner attributes (`#![...]`).
fn skip_preamble(text: &str) -> &str {
    let mut rest = text;
    loop {
        let t = rest.trim_start();
        if let Some(r) = t.strip_prefix("//") {
            rest = r.split_once('\n').map_or("", |(_, r)| r);
        } else if let Some(r) = t.strip_prefix("/*") {
            rest = r.split_once("*/").map_or("", |(_, r)| r);
        } else if let Some(r) = t.strip_prefix("#![") {
            rest = r.split_once(']').map_or("", |(_, r)| r);
        } else {
            return t;
        }
    }
}

/// The device a pipeline runs on: `--device` when given, else the pipeline's `device`.
/// An unusable choice is an error at the flag or at the pipeline's `device` line.
pub fn device(
    sources: &Sources,
    p: &crate::run::Resolved,
    flag: Option<crate::device::Choice>,
) -> Result<candle_core::Device> {
    match flag {
        Some(choice) => {
            crate::device::select(choice).map_err(|e| Error::Input(format!("--device: {e}")))
        }
        None => crate::device::select(p.spec.device.value).map_err(|e| {
            sources
                .diag(p.spec.device.span, e)
                .with_help("`--device cpu` runs it on the CPU without editing the file")
                .into()
        }),
    }
}

/// Runs `write`, a single-stage command's work that rewrites `stage`'s outputs in the run
/// folder `run_dir` (which the caller holds): a copy of the outputs goes to
/// `stale/<stage>-replaced/` first and is kept, with a line saying so, when they changed;
/// a lock entry that no longer describes them is removed.
pub fn replacing<T>(
    run_dir: &Path,
    stage: crate::run::Stage,
    write: impl FnOnce() -> Result<T>,
) -> Result<T> {
    let copy = crate::run::outputs::copy_aside(run_dir, stage, "replaced")?;
    let result = write();
    if let Some(d) = copy
        && crate::run::outputs::keep_if_different(run_dir, stage, &d)?
    {
        crate::progress::note(&format!(
            "the previous {stage} outputs are kept in {}",
            d.display()
        ));
    }
    let value = result?;
    crate::run::outputs::forget_if_replaced(run_dir, stage)?;
    Ok(value)
}

/// Per-class accuracy, one line each.
pub fn per_class(e: &crate::nets::train::Evaluation) -> String {
    e.classes
        .iter()
        .zip(&e.per_class_accuracy)
        .map(|(c, a)| format!("  {c:<14} {:6.2}%\n", 100.0 * a))
        .collect()
}

/// Writes `text` to stdout; see [`write_out`].
/// Refuses a pipeline one of whose steps is estimated to need more memory than this
/// machine has, unless `ignore`: the error points at the batch size.
pub fn fits_memory(sources: &Sources, p: &crate::run::Resolved, ignore: bool) -> Result<()> {
    if ignore {
        return Ok(());
    }
    let estimates = crate::pipeline::memory::estimates(p);
    crate::pipeline::memory::refuse_oversized(
        sources,
        &estimates,
        crate::runtime::measure::memory_limit(),
    )
}

pub fn print(text: &str) -> Result<()> {
    write_out(&mut std::io::stdout().lock(), text)
}

/// Writes `text` to `out`. A closed pipe (`| head`) is not an error.
pub fn write_out(out: &mut impl std::io::Write, text: &str) -> Result<()> {
    match out.write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Error::Io {
            path: PathBuf::from("<stdout>"),
            source: e,
        }),
        Ok(()) => Ok(()),
    }
}

/// The options that put a multi-trial search on workers (`run` and `search`).
#[derive(Debug, Clone, clap::Args)]
pub struct ScaleArgs {
    /// Evaluate on N worker processes started on this machine, through the trial ledger
    /// (by default `ledger.sqlite` in the run folder). With --storage and N = 0, only
    /// workers started elsewhere (`nas-pipe worker`) evaluate.
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// The trial ledger: sqlite:PATH or postgres://USER@HOST[:PORT]/DB (the password from
    /// PGPASSWORD). Default: the pipeline's `storage`, else the run folder's SQLite file.
    #[arg(long, value_name = "URL")]
    pub storage: Option<String>,
    /// Seconds a running trial keeps its worker without a heartbeat; then it is claimed
    /// again.
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    pub lease: f64,
    /// Attempts (errors or lost workers) after which a trial is marked failed.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_attempts: u32,
}

impl ScaleArgs {
    /// The ledger settings, when the search runs on workers; the local workers run
    /// `nas-pipe worker PIPELINE --out OUT --storage URL`.
    pub fn scale(
        &self,
        p: &crate::run::Resolved,
        pipeline: &Path,
        out: &Path,
    ) -> Result<Option<crate::stages::search::worker::Scale>> {
        use crate::stages::search::ledger::Storage;
        let url = self.storage.clone().or_else(|| p.spec.storage.clone());
        if self.workers.is_none() && url.is_none() {
            return Ok(None);
        }
        crate::stages::search::worker::check_distributable(p)?;
        if !(self.lease.is_finite() && self.lease > 0.0) {
            return Err(Error::Input(format!(
                "--lease {} is not a positive number of seconds",
                self.lease
            )));
        }
        let run_dir = out.join(&p.spec.name.value);
        let storage = match &url {
            Some(u) => Storage::parse(u)?,
            None => Storage::in_run(&run_dir),
        };
        let count = self.workers.unwrap_or(0);
        let local = (count > 0)
            .then(|| worker_command(pipeline, out, &storage))
            .transpose()?
            .map(|command| crate::stages::search::worker::LocalWorkers { count, command });
        Ok(Some(crate::stages::search::worker::Scale {
            storage,
            lease_s: self.lease,
            max_attempts: self.max_attempts,
            local,
        }))
    }
}

/// `nas-pipe --quiet worker PIPELINE --out OUT --storage URL`, with this executable.
fn worker_command(
    pipeline: &Path,
    out: &Path,
    storage: &crate::stages::search::ledger::Storage,
) -> Result<Vec<std::ffi::OsString>> {
    let exe = std::env::current_exe().map_err(|source| Error::Io {
        path: "/proc/self/exe".into(),
        source,
    })?;
    Ok(vec![
        exe.into(),
        "--quiet".into(),
        "worker".into(),
        pipeline.into(),
        "--out".into(),
        out.into(),
        "--storage".into(),
        storage.to_string().into(),
    ])
}
