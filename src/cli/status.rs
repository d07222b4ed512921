//! `nas-pipe status`: says which stages of a run folder are done, stale or missing, and why.

use std::path::PathBuf;

use super::common::{device, print};
use crate::error::{Result, exit};
use crate::run::RunDir;
use crate::space::show;
use crate::spec::Sources;
use crate::stages::search::ledger::{self, Storage};
use crate::stages::search::worker::Snapshot;

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
    /// The trial ledger of a search run on workers (default: the pipeline's `storage`, else
    /// the run folder's `ledger.sqlite` when there is one): trials by state, workers with
    /// their last heartbeat, throughput and ETA, failed trials.
    #[arg(long, value_name = "URL")]
    pub storage: Option<String>,
}

pub fn run(args: &Args, flag: Option<crate::device::Choice>) -> Result<i32> {
    let mut sources = Sources::default();
    let p = crate::pipeline::resolve::load(&mut sources, &args.pipeline)?;
    let device = device(&sources, &p, flag)?;
    let run_dir = args.out.join(&p.spec.name.value);
    let r = crate::pipeline::status(&sources, &p, &run_dir, &device, args.ort_lib.as_deref())?;
    print(&table(&r))?;
    let storage = match args.storage.as_ref().or(p.spec.storage.as_ref()) {
        Some(u) => Some(Storage::parse(u)?),
        None => {
            Some(Storage::in_run(&run_dir)).filter(|_| RunDir::new(&run_dir).ledger().is_file())
        }
    };
    if let Some(s) = storage {
        let budget = std::fs::read(RunDir::new(&run_dir).trials())
            .ok()
            .and_then(|b| serde_json::from_slice::<crate::run::trials::State>(&b).ok())
            .map(|t| (t.budget, t.evaluations()));
        let text = match Snapshot::read(&s, &p.spec.name.value)? {
            Some(snap) => ledger_table(&s, &snap, budget),
            None => format!("ledger {s}: no study \"{}\" yet\n", p.spec.name.value),
        };
        print(&text)?;
    }
    Ok(exit::OK)
}

/// The ledger part of `nas-pipe status`; `budget` is the search's (budget, evaluations
/// recorded).
fn ledger_table(s: &Storage, snap: &Snapshot, budget: Option<(usize, usize)>) -> String {
    let st = &snap.study;
    let mut t = format!(
        "ledger {s}: study \"{}\" ({}), lease {}s, {} attempt(s) at most\n",
        st.name,
        if st.finished { "finished" } else { "open" },
        st.lease_s,
        st.max_attempts
    );
    let c = ledger::counts(&snap.trials);
    let by_state: Vec<String> = ledger::State::ALL
        .iter()
        .zip(c)
        .map(|(s, n)| format!("{} {n}", s.as_str()))
        .collect();
    t += &format!("  trials: {}\n", by_state.join(", "));
    if let Some(rate) = snap.throughput() {
        t += &format!("  throughput: {:.2} trials/s", rate);
        if let Some((budget, done)) = budget.filter(|_| !st.finished) {
            let left = budget.saturating_sub(done.max(c[ledger::State::Done as usize]));
            t += &format!(", ETA {:.0}s for {left} more", left as f64 / rate);
        }
        t += "\n";
    }
    t += &format!("  workers: {}\n", snap.workers.len());
    for w in &snap.workers {
        t += &format!(
            "    {:<28} last heartbeat {:>7.1}s ago, {} done\n",
            w.id,
            (snap.now - w.last_seen).max(0.0),
            w.done
        );
    }
    for tr in snap
        .trials
        .iter()
        .filter(|t| t.state == ledger::State::Failed)
    {
        t += &format!(
            "  failed trial {} (generation {}, {} attempt(s)): {}\n",
            tr.id,
            tr.generation,
            tr.attempt,
            tr.error.as_deref().unwrap_or("")
        );
    }
    t
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
