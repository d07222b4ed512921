//! Distributed multi-trial search over a [`ledger`](super::ledger): the worker loop
//! (`nas-pipe worker`) and the proposer's side ([`LedgerRunner`], the
//! [`Runner`](super::trials::Runner) that queues a generation's trials and waits for their
//! results).
//!
//! A worker admits itself to the pipeline's study (same spec hash and nas-pipe version),
//! then claims trials one at a time, evaluates each with the pipeline's evaluator while a
//! thread renews its lease every quarter of the lease, and writes the result (or the error)
//! back. It exits once the study is finished and nothing is left to claim, and gives up
//! (an error) when it has been idle for its idle timeout with the study unfinished and no
//! trial running anywhere: the proposer has stopped.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use super::ledger::{self, Ledger, NewTrial, Outcome, State, Storage, Study};
use super::trials::{Evaluated, Runner};
use crate::error::{Error, Result};
use crate::run::Resolved;
use crate::spec::pipeline::{Evaluator as EvaluatorSpec, Search};
use crate::stages::search::evaluator::Candidate;
use crate::stages::search::strategy::{Arch, Decisions};

/// How often an idle worker or a waiting proposer looks at the ledger again.
pub const POLL: Duration = Duration::from_millis(50);

/// The nas-pipe version a study records and a worker must match.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The ledger settings of a distributed search.
#[derive(Debug, Clone)]
pub struct Scale {
    pub storage: Storage,
    /// Seconds without a heartbeat after which a running trial is claimed again.
    pub lease_s: f64,
    /// Attempts after which a trial is `failed`.
    pub max_attempts: u32,
    /// Worker processes the proposer starts on this machine (none: workers are started
    /// elsewhere, by a cluster's scheduler).
    pub local: Option<LocalWorkers>,
}

/// Worker processes to start: `count` times `command` (the program, then its arguments).
#[derive(Debug, Clone)]
pub struct LocalWorkers {
    pub count: usize,
    pub command: Vec<std::ffi::OsString>,
}

/// Seconds a finished study's local workers get to exit before they are killed.
const REAP: Duration = Duration::from_secs(30);

/// Started worker processes; dropped, it kills those still running.
pub struct Children(Vec<std::process::Child>);

impl LocalWorkers {
    pub fn spawn(&self) -> Result<Children> {
        let (program, args) = self
            .command
            .split_first()
            .ok_or_else(|| Error::Input("no worker command".into()))?;
        let mut out = Children(Vec::new());
        for _ in 0..self.count {
            let child = std::process::Command::new(program)
                .args(args)
                .stdin(std::process::Stdio::null())
                .spawn()
                .map_err(|source| Error::Io {
                    path: program.into(),
                    source,
                })?;
            out.0.push(child);
        }
        Ok(out)
    }
}

impl Children {
    /// An error when a worker exited with an error (its message is on stderr) or none is
    /// left while trials wait.
    fn check(&mut self) -> Result<()> {
        for c in &mut self.0 {
            if let Ok(Some(st)) = c.try_wait()
                && !st.success()
            {
                return Err(Error::Input(format!(
                    "local worker {} exited with {st}; its error is above",
                    c.id()
                )));
            }
        }
        Ok(())
    }

    /// Waits up to [`REAP`] for every worker to exit, then kills the rest.
    fn reap(&mut self) {
        let end = Instant::now() + REAP;
        while Instant::now() < end && self.0.iter_mut().any(|c| matches!(c.try_wait(), Ok(None))) {
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            if matches!(c.try_wait(), Ok(None)) {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
    }
}

/// Refuses what a distributed search cannot do: a weight-sharing evaluator trains one
/// supernet that every evaluation reads, so its workers would each train (and overwrite)
/// it.
pub fn check_distributable(p: &Resolved) -> Result<()> {
    match p.spec.search.as_deref() {
        Some(Search::Trials { evaluator, .. })
            if matches!(evaluator.value, EvaluatorSpec::WeightSharing { .. }) =>
        {
            Err(Error::Input(
                "a weight-sharing evaluator cannot run on workers (each would train the \
                 supernet): run it without --workers/--storage"
                    .into(),
            ))
        }
        Some(Search::Trials { .. }) => Ok(()),
        _ => Err(Error::Input(format!(
            "pipeline \"{}\" has no multi-trial search (`search: Trials(...)`): only those \
             run on workers",
            p.spec.name.value
        ))),
    }
}

/// This process's worker id: `host:pid`.
pub fn worker_id() -> (String, String) {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into `buf`.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let host = if ok {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        "unknown".to_string()
    };
    let id = format!("{host}:{}", std::process::id());
    (id, host)
}

/// What a worker did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Worked {
    pub done: usize,
    pub failed_attempts: usize,
}

/// Waits for the study of pipeline `p` in `storage`, admits this worker, and evaluates
/// trials until the study is finished and nothing is waiting. `log` gets a line per trial.
/// `idle` (none: for ever) bounds how long the worker waits with nothing to claim while no
/// trial runs anywhere and the study is unfinished, or for the study to open.
pub fn work(
    p: &Resolved,
    run_dir: &std::path::Path,
    device: &candle_core::Device,
    storage: &Storage,
    idle: Option<Duration>,
    mut log: impl FnMut(&str),
) -> Result<Worked> {
    check_distributable(p)?;
    let name = p.spec.name.value.clone();
    let hash = crate::run::hash::search_hash(p)?;
    let mut l = storage.open()?;
    let study = wait_for_study(l.as_mut(), &name, idle, &mut log)?;
    study.admit(&hash, VERSION)?;
    let weights = crate::run::RunDir::new(run_dir).search().join("weights");
    let mut ev = super::trials::evaluator(p, device, Some(weights), false)?;
    let decisions = Decisions::of(&p.search_space);
    let (id, host) = worker_id();
    l.register(
        &name,
        &ledger::Worker {
            id: id.clone(),
            host,
            pid: std::process::id(),
            started: 0.0,
            last_seen: 0.0,
            done: 0,
        },
    )?;
    let beat = Heartbeat::start(storage.clone(), name.clone(), id.clone(), study.lease_s)?;
    let mut worked = Worked::default();
    let mut active = Instant::now();
    loop {
        let Some(claim) = l.claim(&name, &id)? else {
            let s = l
                .study(&name)?
                .ok_or_else(|| Error::Input(format!("the study \"{name}\" left the ledger")))?;
            s.admit(&hash, VERSION)?;
            if s.finished && nothing_waiting(&l.trials(&name, None)?) {
                break;
            }
            if let Some(limit) = idle.filter(|&d| active.elapsed() >= d) {
                // Other workers' running trials mean the proposer is waiting for them.
                let running = l.trials(&name, None)?;
                if !running.iter().any(|t| t.state == State::Running) {
                    return Err(proposer_gone(&name, limit));
                }
                active = Instant::now();
            }
            std::thread::sleep(POLL);
            continue;
        };
        beat.holding(Some(claim.id));
        let t0 = Instant::now();
        let outcome = evaluate(&p.search_space, &decisions, ev.as_mut(), &claim.proposal);
        beat.holding(None);
        match outcome {
            Ok(score) => {
                let o = Outcome {
                    accuracy: score.accuracy,
                    report: score.report,
                    seconds: t0.elapsed().as_secs_f64(),
                };
                let text = serde_json::to_string(&o).map_err(|e| Error::Input(e.to_string()))?;
                l.complete(&name, &id, claim.id, &text)?;
                worked.done += 1;
                log(&format!("trial {} done: {:.4}", claim.id, o.accuracy));
            }
            Err(e) => {
                l.fail(&name, &id, claim.id, &e.to_string())?;
                worked.failed_attempts += 1;
                log(&format!(
                    "trial {} attempt {} failed: {e}",
                    claim.id, claim.attempt
                ));
            }
        }
        active = Instant::now();
    }
    drop(beat);
    Ok(worked)
}

fn nothing_waiting(trials: &[ledger::Trial]) -> bool {
    trials
        .iter()
        .all(|t| matches!(t.state, State::Done | State::Failed))
}

/// The error of a worker that waited `limit` for work from a proposer that is not there.
fn proposer_gone(name: &str, limit: Duration) -> Error {
    Error::Input(format!(
        "no trial of study \"{name}\" to claim or running for {}, and the study is not \
         finished: its proposer (`nas-pipe run PIPELINE` with the same storage) is not \
         running. Start it (it resumes from the ledger) and then the workers, or give \
         --idle-timeout a longer time (0: wait for ever)",
        humantime::format_duration(limit)
    ))
}

fn wait_for_study(
    l: &mut dyn Ledger,
    name: &str,
    idle: Option<Duration>,
    log: &mut impl FnMut(&str),
) -> Result<Study> {
    let mut said = false;
    let t0 = Instant::now();
    loop {
        if let Some(s) = l.study(name)? {
            return Ok(s);
        }
        if let Some(limit) = idle.filter(|&d| t0.elapsed() >= d) {
            return Err(proposer_gone(name, limit));
        }
        if !said {
            log(&format!(
                "waiting for the proposer to open study \"{name}\""
            ));
            said = true;
        }
        std::thread::sleep(POLL * 10);
    }
}

fn evaluate(
    space: &crate::space::Space,
    decisions: &Decisions,
    ev: &mut dyn super::evaluator::Evaluator,
    proposal: &str,
) -> Result<super::evaluator::Score> {
    let arch: Arch = serde_json::from_str(proposal).map_err(|e| {
        Error::Input(format!(
            "the ledger holds a proposal that is not an architecture: {e}"
        ))
    })?;
    if !decisions.valid(&arch) {
        return Err(Error::Input(format!(
            "the ledger's proposal {proposal} is not an architecture of this space"
        )));
    }
    let c = Candidate::new(space, decisions, arch)?;
    ev.evaluate(&c)
}

/// The thread that renews a worker's lease: every quarter lease it heartbeats the trial it
/// holds (if any) over its own connection.
struct Heartbeat {
    stop: Arc<AtomicBool>,
    /// The trial held, or -1.
    trial: Arc<AtomicI64>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Heartbeat {
    fn start(storage: Storage, study: String, worker: String, lease_s: f64) -> Result<Heartbeat> {
        let mut l = storage.open()?;
        let stop = Arc::new(AtomicBool::new(false));
        let trial = Arc::new(AtomicI64::new(-1));
        let every = Duration::from_secs_f64((lease_s / 4.0).max(0.01));
        let (s, t) = (stop.clone(), trial.clone());
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let held = t.load(Ordering::SeqCst);
                let held = (held >= 0).then_some(held as u64);
                if let Err(e) = l.heartbeat(&study, &worker, held) {
                    eprintln!("nas-pipe worker: heartbeat: {e}");
                }
                sleep_until(every, &s);
            }
        });
        Ok(Heartbeat {
            stop,
            trial,
            handle: Some(handle),
        })
    }

    fn holding(&self, trial: Option<u64>) {
        self.trial
            .store(trial.map_or(-1, |t| t as i64), Ordering::SeqCst);
    }
}

impl Drop for Heartbeat {
    /// Stops the thread (on every path out of [`work`], errors included) and waits for it.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Sleeps `d` in short steps, returning early once `stop` is set.
fn sleep_until(d: Duration, stop: &AtomicBool) {
    let end = Instant::now() + d;
    while Instant::now() < end && !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(10).min(d));
    }
}

/// The proposer's side: queues a generation's trials in the ledger and waits until each
/// is done or failed, checking while it waits that its local workers (if it started any)
/// have not failed.
pub struct LedgerRunner {
    ledger: Box<dyn Ledger>,
    study: String,
    children: Option<Children>,
}

impl LedgerRunner {
    /// Opens the study of pipeline `p` (taking it over from another spec's search).
    pub fn open(p: &Resolved, scale: &Scale) -> Result<LedgerRunner> {
        check_distributable(p)?;
        let mut l = scale.storage.open()?;
        let study = Study {
            name: p.spec.name.value.clone(),
            spec_hash: crate::run::hash::search_hash(p)?,
            version: VERSION.to_string(),
            lease_s: scale.lease_s,
            max_attempts: scale.max_attempts,
            finished: false,
        };
        l.open_study(&study)?;
        let children = scale.local.as_ref().map(LocalWorkers::spawn).transpose()?;
        Ok(LedgerRunner {
            ledger: l,
            study: study.name,
            children,
        })
    }

    /// Ends the proposer's part: writes the workers' timeline to `timeline`; a finished
    /// search marks the study finished (its workers exit, local ones are waited for); a
    /// stopped one just stops its local workers.
    pub fn close(mut self, finished: bool, timeline: &std::path::Path) -> Result<()> {
        let t = timeline_of(&self.ledger.trials(&self.study, None)?);
        let text = serde_json::to_vec_pretty(&t).map_err(|e| Error::Input(e.to_string()))?;
        crate::fsutil::write_atomic(timeline, &text)?;
        if finished {
            self.ledger.finish_study(&self.study)?;
            if let Some(c) = self.children.as_mut() {
                c.reap();
            }
        }
        Ok(())
    }
}

impl Runner for LedgerRunner {
    fn run(&mut self, generation: u64, batch: &[(usize, &Candidate)]) -> Result<Vec<Evaluated>> {
        let trials: Vec<NewTrial> = batch
            .iter()
            .enumerate()
            .map(|(i, (id, c))| NewTrial {
                id: *id as u64,
                generation,
                index: i as u64,
                proposal: serde_json::to_string(&c.arch).unwrap_or_default(),
            })
            .collect();
        self.ledger.submit(&self.study, &trials)?;
        loop {
            let rows = self.ledger.trials(&self.study, Some(generation))?;
            let answers: Option<Vec<Evaluated>> = trials
                .iter()
                .map(|t| rows.iter().find(|r| r.id == t.id).and_then(answer))
                .collect();
            if let Some(a) = answers {
                return Ok(a);
            }
            if let Some(c) = self.children.as_mut() {
                c.check()?;
            }
            std::thread::sleep(POLL);
        }
    }
}

/// Who evaluated which trial when: the last attempt of every done or failed trial, in
/// seconds since the first start.
pub fn timeline_of(trials: &[ledger::Trial]) -> crate::run::trials::Timeline {
    use crate::run::trials::{Span, Timeline, WorkerSpans};
    let ended: Vec<(&ledger::Trial, &str, f64, f64)> = trials
        .iter()
        .filter(|t| matches!(t.state, State::Done | State::Failed))
        .filter_map(|t| Some((t, t.worker.as_deref()?, t.started?, t.finished?)))
        .collect();
    let t0 = ended.iter().map(|e| e.2).fold(f64::INFINITY, f64::min);
    let mut workers: Vec<WorkerSpans> = Vec::new();
    for (t, w, start, end) in ended {
        let span = Span {
            n: t.id as usize,
            attempt: t.attempt,
            start: start - t0,
            end: (end - t0).max(start - t0),
            failed: t.state == State::Failed,
        };
        match workers.iter_mut().find(|x| x.worker == w) {
            Some(x) => x.spans.push(span),
            None => workers.push(WorkerSpans {
                worker: w.to_string(),
                spans: vec![span],
            }),
        }
    }
    workers.sort_by(|a, b| a.worker.cmp(&b.worker));
    for w in &mut workers {
        w.spans.sort_by(|a, b| a.start.total_cmp(&b.start));
    }
    Timeline {
        version: crate::run::trials::VERSION,
        workers,
    }
}

/// A finished trial's answer; `None` while it is waiting or running.
fn answer(t: &ledger::Trial) -> Option<Evaluated> {
    match t.state {
        State::Done => Some(
            match serde_json::from_str::<Outcome>(t.result.as_deref().unwrap_or("")) {
                Ok(o) => Evaluated::Score {
                    accuracy: o.accuracy,
                    report: o.report,
                    seconds: o.seconds,
                },
                Err(e) => Evaluated::Failed(format!("its result in the ledger is unreadable: {e}")),
            },
        ),
        State::Failed => Some(Evaluated::Failed(format!(
            "failed after {} attempt(s): {}",
            t.attempt,
            t.error.as_deref().unwrap_or("no error recorded")
        ))),
        State::Waiting | State::Running => None,
    }
}

/// The ledger of a study as `nas-pipe status` shows it.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub study: Study,
    pub trials: Vec<ledger::Trial>,
    pub workers: Vec<ledger::Worker>,
    /// The database's clock now.
    pub now: f64,
}

impl Snapshot {
    /// The study of pipeline `name` in `storage`, if it has one.
    pub fn read(storage: &Storage, name: &str) -> Result<Option<Snapshot>> {
        let mut l = storage.open()?;
        let Some(study) = l.study(name)? else {
            return Ok(None);
        };
        Ok(Some(Snapshot {
            trials: l.trials(name, None)?,
            workers: l.workers(name)?,
            now: l.now()?,
            study,
        }))
    }

    /// Done trials per second, over the span from the first start to the last finish.
    pub fn throughput(&self) -> Option<f64> {
        let done = self.trials.iter().filter(|t| t.state == State::Done);
        let first = done.clone().filter_map(|t| t.started).reduce(f64::min)?;
        let last = done.clone().filter_map(|t| t.finished).reduce(f64::max)?;
        let n = done.count();
        (last > first && n > 1).then(|| n as f64 / (last - first))
    }
}
