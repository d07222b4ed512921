//! The multi-trial search stage (`search: Trials(...)`): a strategy proposes architectures,
//! the cheap objectives (parameters, MACs, latency) are computed and the constraints
//! applied, the evaluator scores the survivors, and the strategy is told each reward.
//!
//! Layout under the run folder:
//! - `search/trials.json` ([`State`]): the spec hash and every proposal in order, with its
//!   genotype, objectives, scores (with a zero-cost prior, its proxies) and the constraint
//!   that rejected it, if one did; with a zero-cost prior, the pool it scored and the
//!   architectures it kept; rewritten (atomically, sealed with a blake3 checksum) after
//!   every evaluation, the copy before it kept as `search/trials.previous.json`: a damaged
//!   record is moved to `stale/damaged-trials.json/` and the search resumes from the
//!   previous copy, with a warning ([`crate::run::sealed`]);
//! - `search/pareto.json` ([`Front`]): the non-dominated evaluated architectures over
//!   accuracy and the pipeline's objectives;
//! - `search/weights/<key>.safetensors`: weights a training evaluator produced;
//! - `search/front/<n>/`: with `export_front`, each front point's `model.onnx`,
//!   `profile.json` and `profile.md`;
//! - `search/latency.json`: measured latencies per architecture (a cache).
//!
//! Resume: a strategy is a deterministic function of its seed and the rewards it was told,
//! so a resumed search replays the record (asking the strategy again, checking it proposes
//! the recorded architecture, and telling it the recorded reward) and continues; it ends
//! with the same record as an uninterrupted run. A repeated architecture is answered from
//! the record and still counts as an evaluation. A zero-cost prior's pool is scored once,
//! before the first proposal, and recorded: a resumed search warm-starts the strategy from
//! the record.

use std::path::Path;
use std::time::Instant;

use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use crate::run::Resolved;
use crate::run::RunDir;
use crate::run::hash::search_hash;
use crate::run::trials::{Front, Point, Record, STATE_VERSION, State, VERSION, best};
use crate::space::Space;
use crate::spec::pipeline::{Constraint, Objective, Reward, Search};
use crate::stages::search::evaluator::{Candidate, Evaluator, Score};
use crate::stages::search::strategy::{self, Arch, Decisions};
use crate::stages::search::zero_cost::{self, Scorer};

/// The objective's value of a record, minimised.
fn objective_value(r: &Record, o: Objective) -> Option<f64> {
    match o {
        Objective::Latency => r.latency_ms,
        Objective::Params => Some(r.params as f64),
        Objective::Macs => Some(r.macs as f64),
    }
}

pub fn objective_name(o: Objective) -> &'static str {
    match o {
        Objective::Latency => "latency_ms",
        Objective::Params => "params",
        Objective::Macs => "macs",
    }
}

/// The evaluated records no other evaluated record dominates (at least as good in every
/// objective and better in one), one per architecture, by accuracy, best first.
pub fn pareto(records: &[Record], objectives: &[Objective]) -> Vec<Record> {
    let mut seen = std::collections::HashSet::new();
    let pts: Vec<(&Record, Vec<f64>)> = records
        .iter()
        .filter(|r| r.evaluated() && !r.repeat && seen.insert(r.key.clone()))
        .filter_map(|r| {
            let mut v = vec![-r.accuracy?];
            for &o in objectives {
                v.push(objective_value(r, o)?);
            }
            Some((r, v))
        })
        .collect();
    let dominates = |a: &[f64], b: &[f64]| {
        a.iter().zip(b).all(|(x, y)| x <= y) && a.iter().zip(b).any(|(x, y)| x < y)
    };
    let mut front: Vec<Record> = pts
        .iter()
        .filter(|(_, v)| !pts.iter().any(|(_, w)| dominates(w, v)))
        .map(|(r, _)| (*r).clone())
        .collect();
    front.sort_by(|a, b| {
        b.accuracy
            .unwrap_or(0.0)
            .total_cmp(&a.accuracy.unwrap_or(0.0))
            .then(a.n.cmp(&b.n))
    });
    front
}

/// Measures a candidate's latency in ms.
pub trait Latency {
    fn ms(&mut self, c: &Candidate) -> Result<f64>;
}

/// Exports and profiles a trained front point into `dir`; returns the profiled median
/// latency in ms.
pub trait Exporter {
    fn export(
        &mut self,
        point: &Point,
        trained: crate::stages::search::evaluator::Trained,
        dir: &Path,
    ) -> Result<f64>;
}

/// The parts of a `Trials` section the loop needs.
#[derive(Clone)]
pub struct Plan<'a> {
    pub space: &'a Space,
    pub strategy: &'a crate::spec::pipeline::Strategy,
    pub budget: usize,
    pub seconds: Option<f64>,
    pub reward: &'a Reward,
    pub objectives: &'a [Objective],
    pub constraints: Vec<Constraint>,
    pub seed: u64,
    /// Proposals per generation (at least 1).
    pub generation: usize,
    /// The strategy's first proposals (a zero-cost prior's picks; empty for none).
    pub initial: Vec<Arch>,
    /// Scores every evaluated candidate's zero-cost proxies (with a prior).
    pub proxies: Option<&'a Scorer>,
}

impl<'a> Plan<'a> {
    /// The plan of pipeline `p`'s multi-trial search.
    pub fn of(p: &'a Resolved) -> Result<Plan<'a>> {
        let Some(Search::Trials {
            strategy,
            evaluations,
            seconds,
            reward,
            objectives,
            constraints,
            generation,
            ..
        }) = p.spec.search.as_deref()
        else {
            return Err(Error::Input(format!(
                "pipeline \"{}\" has no multi-trial search (`search: Trials(...)`)",
                p.spec.name.value
            )));
        };
        Ok(Plan {
            space: &p.search_space,
            strategy,
            budget: evaluations.value as usize,
            seconds: seconds.as_ref().map(|s| s.value),
            reward,
            objectives,
            constraints: constraints.iter().map(|c| c.value.clone()).collect(),
            seed: p.spec.seed,
            generation: generation.as_ref().map_or(1, |g| g.value.max(1) as usize),
            initial: Vec::new(),
            proxies: None,
        })
    }

    /// Whether anything needs latency.
    pub fn needs_latency(&self) -> bool {
        self.objectives.contains(&Objective::Latency)
            || matches!(self.reward, Reward::MnasNet { .. })
            || self
                .constraints
                .iter()
                .any(|c| matches!(c, Constraint::MaxLatencyMs(_)))
    }

    fn reward(&self, accuracy: f64, latency: Option<f64>) -> f64 {
        match (self.reward, latency) {
            (Reward::MnasNet { target_ms, w }, Some(l)) => {
                accuracy * (l / target_ms.value).powf(w.value)
            }
            _ => accuracy,
        }
    }
}

/// Consecutive rejected proposals after which the search gives up.
pub const MAX_REJECTED_IN_A_ROW: usize = 10_000;

/// What a [`Runner`] gives for one candidate.
#[derive(Debug, Clone, PartialEq)]
pub enum Evaluated {
    /// Scored, with the evaluation's wall time in seconds.
    Score {
        accuracy: f64,
        report: Option<f64>,
        seconds: f64,
    },
    /// Failed for good (a distributed trial after its last attempt), with the error.
    Failed(String),
}

/// Evaluates a generation's candidates: in this process ([`InProcess`]) or on workers
/// through the trial ledger (`worker::LedgerRunner`). The answer of a candidate depends on
/// the candidate alone, never on the order or the place it was evaluated in.
pub trait Runner {
    /// The answers for `batch` (trial id, candidate), in its order.
    fn run(&mut self, generation: u64, batch: &[(usize, &Candidate)]) -> Result<Vec<Evaluated>>;
}

/// Evaluates in this process, one candidate after another; an evaluation error ends the
/// search.
pub struct InProcess<'a>(pub &'a mut dyn Evaluator);

impl Runner for InProcess<'_> {
    fn run(&mut self, _generation: u64, batch: &[(usize, &Candidate)]) -> Result<Vec<Evaluated>> {
        batch
            .iter()
            .map(|(_, c)| {
                let t0 = Instant::now();
                let Score { accuracy, report } = self.0.evaluate(c)?;
                Ok(Evaluated::Score {
                    accuracy,
                    report,
                    seconds: t0.elapsed().as_secs_f64(),
                })
            })
            .collect()
    }
}

/// Runs the loop in generations of [`Plan::generation`] proposals: the strategy is asked
/// for a whole generation, the generation's new candidates are evaluated (by `runner`,
/// in any order), and the strategy is told their rewards in proposal order; so the
/// proposals depend on the results of earlier generations only, and a generation of 1 is
/// the ask-evaluate-tell loop. Proposals `records` holds (a resumed search) are answered
/// from it, after checking the strategy proposes them again. Stops when the budget is
/// spent, the time limit is reached or there are `limit` proposals, calling `after` with
/// the record after every generation. `progress` gets the evaluations spent and the best
/// search signal so far. Returns the record and whether the search ended by its own rules
/// (budget or time), not by `limit`.
pub fn search(
    plan: &Plan,
    runner: &mut dyn Runner,
    mut latency: Option<&mut dyn Latency>,
    old: Vec<Record>,
    limit: Option<usize>,
    mut after: impl FnMut(&[Record]) -> Result<()>,
    mut progress: impl FnMut(usize, f64),
) -> Result<(Vec<Record>, bool)> {
    let decisions = Decisions::of(plan.space);
    if decisions.is_empty() {
        return Err(Error::Input(format!(
            "the space \"{}\" has nothing to search: no cell edges or searchable layers",
            plan.space.name
        )));
    }
    let mut strategy = strategy::build(
        plan.strategy,
        decisions.clone(),
        plan.seed,
        plan.initial.clone(),
    );
    let mut t = Tally::default();
    let mut records: Vec<Record> = Vec::new();
    let spent_before: f64 = old.iter().map(|r| r.seconds).sum();
    let started = Instant::now();
    progress(0, 0.0);
    let mut generation = 0u64;
    while t.evaluated < plan.budget {
        let pos = records.len();
        let replaying = pos < old.len();
        if !replaying && limit.is_some_and(|l| pos >= l) {
            return Ok((records, false));
        }
        if !replaying
            && let Some(limit) = plan.seconds
            && spent_before + started.elapsed().as_secs_f64() >= limit
        {
            break;
        }
        let mut n = plan.generation.min(plan.budget - t.evaluated);
        if let Some(l) = limit.filter(|_| !replaying) {
            n = n.min(l - pos);
        }
        let mut proposals = Vec::with_capacity(n);
        let mut asking = Vec::with_capacity(n);
        for i in 0..n {
            let t0 = Instant::now();
            let arch = strategy.ask();
            asking.push(t0.elapsed().as_secs_f64());
            proposals.push(match old.get(pos + i) {
                Some(r) => replayed(r, arch)?,
                None => Proposal::New(Box::new(Candidate::new(plan.space, &decisions, arch)?)),
            });
        }
        let mut proposals = answer(plan, runner, &mut latency, &records, generation, proposals)?;
        // A new record's wall time starts with its ask; a recorded one keeps its own.
        for (r, s) in proposals.iter_mut().zip(asking) {
            if r.n >= old.len() {
                r.seconds += s;
            }
        }
        for r in proposals {
            strategy.tell(r.reward);
            t.count(&r)?;
            records.push(r);
        }
        generation += 1;
        if records.len() > old.len() {
            after(&records)?;
        }
        progress(
            t.evaluated,
            best(&records).and_then(|b| b.accuracy).unwrap_or(0.0),
        );
    }
    // Spent budget or time: either way the search is over.
    Ok((records, true))
}

/// A proposal of a generation: answered by the record, or new.
enum Proposal {
    Recorded(Box<Record>),
    New(Box<Candidate>),
}

/// The recorded proposal `r`, once the strategy proposed it again as `arch`.
fn replayed(r: &Record, arch: Arch) -> Result<Proposal> {
    if arch != r.arch {
        return Err(Error::Input(format!(
            "the search record does not replay: proposal {} was {:?} and the strategy now \
             proposes {:?}; the record was written by another build or spec: delete the \
             search folder to start over",
            r.n, r.arch, arch
        )));
    }
    Ok(Proposal::Recorded(Box::new(r.clone())))
}

/// What the loop counts: evaluations, and proposals rejected (or failed) in a row.
#[derive(Default)]
struct Tally {
    evaluated: usize,
    rejected_in_a_row: usize,
}

impl Tally {
    fn count(&mut self, r: &Record) -> Result<()> {
        if r.evaluated() {
            self.evaluated += 1;
            self.rejected_in_a_row = 0;
            return Ok(());
        }
        self.rejected_in_a_row += 1;
        if self.rejected_in_a_row >= MAX_REJECTED_IN_A_ROW {
            return Err(Error::Input(format!(
                "the constraints rejected {MAX_REJECTED_IN_A_ROW} proposals in a row (the \
                 last: {}); loosen them",
                r.rejected.as_deref().or(r.failed.as_deref()).unwrap_or("")
            )));
        }
        Ok(())
    }
}

/// The records of generation `generation`, whose first proposal is number
/// `earlier.len()`: recorded ones as they are; a new one that repeats an evaluated
/// architecture (earlier, or earlier in the generation) answered from it; the others
/// checked against the constraints (latency measured when needed) and the survivors
/// evaluated by `runner`.
fn answer(
    plan: &Plan,
    runner: &mut dyn Runner,
    latency: &mut Option<&mut dyn Latency>,
    earlier: &[Record],
    generation: u64,
    proposals: Vec<Proposal>,
) -> Result<Vec<Record>> {
    let mut out: Vec<Record> = Vec::with_capacity(proposals.len());
    let mut todo: Vec<(usize, Candidate)> = Vec::new();
    // New repeats of an architecture evaluated in this generation: (repeat, first).
    let mut echoes: Vec<(usize, usize)> = Vec::new();
    for p in proposals {
        let t0 = Instant::now();
        let c = match p {
            Proposal::Recorded(r) => {
                out.push(*r);
                continue;
            }
            Proposal::New(c) => *c,
        };
        let mut r = fresh(plan, earlier.len() + out.len(), &c);
        let first = earlier
            .iter()
            .chain(&out)
            .find(|e| e.key == r.key && e.evaluated() && !e.repeat);
        let pending = todo.iter().find(|(_, p)| p.key == c.key).map(|(i, _)| *i);
        if let Some(f) = first {
            copy_answer(f, &mut r);
            r.repeat = true;
        } else if let Some(f) = pending {
            echoes.push((out.len(), f));
            r.repeat = true;
        } else {
            r.rejected = check(&plan.constraints, &r, None);
            if r.rejected.is_none() && plan.needs_latency() {
                let l = latency.as_deref_mut().ok_or_else(|| {
                    Error::Input("this search needs latency and has no way to measure it".into())
                })?;
                r.latency_ms = Some(l.ms(&c)?);
                r.rejected = check(&plan.constraints, &r, r.latency_ms);
            }
            if r.rejected.is_none() {
                todo.push((out.len(), c));
            }
        }
        r.seconds = t0.elapsed().as_secs_f64();
        out.push(r);
    }
    let batch: Vec<(usize, &Candidate)> = todo.iter().map(|(i, c)| (out[*i].n, c)).collect();
    let answers = if batch.is_empty() {
        Vec::new()
    } else {
        runner.run(generation, &batch)?
    };
    for ((i, c), a) in todo.iter().zip(answers) {
        let r = &mut out[*i];
        match a {
            Evaluated::Score {
                accuracy,
                report,
                seconds,
            } => {
                r.proxies = plan.proxies.map(|s| s.proxies(c)).transpose()?;
                r.accuracy = Some(accuracy);
                r.report = report;
                r.reward = Some(plan.reward(accuracy, r.latency_ms));
                r.seconds += seconds;
            }
            Evaluated::Failed(e) => r.failed = Some(e),
        }
    }
    for (i, f) in echoes {
        let first = out[f].clone();
        copy_answer(&first, &mut out[i]);
    }
    Ok(out)
}

/// A new proposal's record before its evaluation.
fn fresh(plan: &Plan, n: usize, c: &Candidate) -> Record {
    let cost = plan.space.discrete_cost(&c.resolved);
    Record {
        n,
        arch: c.arch.clone(),
        key: c.key.clone(),
        genotype: c.genotype.to_ron(),
        nb201: c.nb201.clone(),
        params: cost.params,
        macs: cost.macs,
        latency_ms: None,
        rejected: None,
        failed: None,
        accuracy: None,
        report: None,
        reward: None,
        repeat: false,
        seconds: 0.0,
        proxies: None,
    }
}

/// A repeat's answer: its first record's (a failed first record leaves it failed).
fn copy_answer(first: &Record, r: &mut Record) {
    r.latency_ms = first.latency_ms;
    r.accuracy = first.accuracy;
    r.report = first.report;
    r.reward = first.reward;
    r.failed = first.failed.clone();
    r.proxies = first.proxies;
}

/// The first constraint `r` breaks, as text; latency is checked only once it is known.
fn check(constraints: &[Constraint], r: &Record, latency: Option<f64>) -> Option<String> {
    constraints.iter().find_map(|c| match *c {
        Constraint::MaxParams(n) if r.params > n => {
            Some(format!("{} parameters > MaxParams({n})", r.params))
        }
        Constraint::MaxMacs(n) if r.macs > n => Some(format!("{} MACs > MaxMacs({n})", r.macs)),
        Constraint::MaxLatencyMs(ms) => match latency {
            Some(l) if l > ms => Some(format!("{l:.3} ms > MaxLatencyMs({ms})")),
            _ => None,
        },
        _ => None,
    })
}

/// What a finished (or stopped) multi-trial search returns.
pub struct Outcome {
    pub state: State,
    pub front: Front,
    pub seconds: f64,
}

/// Options that are not part of the spec.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Stop after this many proposals in total (tests simulate a killed run with it).
    pub stop_after: Option<usize>,
    pub progress: bool,
    /// Evaluate on workers through a trial ledger instead of in this process.
    pub scale: Option<crate::stages::search::worker::Scale>,
}

/// The evaluator pipeline `p` names: a training one keeps each candidate's weights under
/// `weights`, a weight-sharing one its supernet's.
pub fn evaluator(
    p: &Resolved,
    device: &candle_core::Device,
    weights: Option<std::path::PathBuf>,
    progress: bool,
) -> Result<Box<dyn Evaluator>> {
    let Some(Search::Trials { evaluator, .. }) = p.spec.search.as_deref() else {
        return Err(Error::Input(
            "the pipeline has no multi-trial search".into(),
        ));
    };
    Ok(match &evaluator.value {
        crate::spec::pipeline::Evaluator::Tabular { select, report, .. } => {
            let table = p.table.clone().ok_or_else(|| {
                Error::Input("the tabular evaluator's table was not loaded".into())
            })?;
            Box::new(crate::stages::search::evaluator::Tabular::new(
                table, select, report,
            )?)
        }
        crate::spec::pipeline::Evaluator::Train { .. } => Box::new(
            crate::stages::search::evaluator::Train::new(p, device, weights)?,
        ),
        crate::spec::pipeline::Evaluator::WeightSharing { .. } => Box::new(
            crate::stages::search::evaluator::shared::WeightSharing::new(
                p, device, weights, progress,
            )?,
        ),
    })
}

/// Runs (or resumes) the multi-trial search of `p` under `run_dir/search`.
pub fn run(
    p: &Resolved,
    run_dir: &Path,
    device: &candle_core::Device,
    latency: Option<&mut dyn Latency>,
    exporter: Option<&mut dyn Exporter>,
    opts: &Options,
) -> Result<Outcome> {
    let plan = Plan::of(p)?;
    let dir = RunDir::new(run_dir).search();
    let hash = search_hash(p)?;
    let record = crate::run::trials::kept(&RunDir::new(run_dir));
    let old: Option<State> = record
        .read::<State>(STATE_VERSION)?
        .filter(|s| s.spec_hash == hash);
    if old.is_none() && dir.exists() {
        // Another spec's (or a DARTS search's) outputs: the pipeline runner sets stale
        // folders aside before this runs; a single-stage command refuses to mix them.
        if std::fs::read_dir(&dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(false)
        {
            return Err(Error::Input(format!(
                "{} holds a search written for a different spec (or another kind of search); \
                 move it away or delete it to start over",
                dir.display()
            )));
        }
    }
    std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
        path: dir.clone(),
        source,
    })?;
    let state0 = State {
        version: STATE_VERSION,
        spec_hash: hash,
        strategy: strategy_name(plan.strategy).into(),
        report: String::new(),
        budget: plan.budget,
        finished: false,
        prior: None,
        records: Vec::new(),
    };
    if old.is_none() {
        // Claims the folder for this spec before the evaluator writes into it.
        record.write(&state0)?;
    }
    write_space(p, &RunDir::new(run_dir).search_space())?;
    let weights = match p.spec.search.as_deref() {
        Some(Search::Trials { evaluator: e, .. })
            if matches!(
                e.value,
                crate::spec::pipeline::Evaluator::WeightSharing { .. }
            ) =>
        {
            dir.clone()
        }
        _ => dir.join("weights"),
    };
    let mut ev = evaluator(p, device, Some(weights), opts.progress)?;
    let mut state = old.unwrap_or(state0);
    state.version = STATE_VERSION;
    state.report = ev.report_name();
    let started = Instant::now();
    let bar =
        crate::progress::stage_count(opts.progress, plan.budget as u64, "search", "evaluation");
    let write = |s: &State| -> Result<()> { record.write(s) };
    if !state.finished {
        let scorer = Scorer::new(p, device)?;
        if let Some(s) = &scorer
            && state.prior.is_none()
        {
            let decisions = Decisions::of(plan.space);
            state.prior = Some(zero_cost::pool(s, plan.space, &decisions, plan.seed)?);
            write(&state)?;
        }
        let plan = Plan {
            initial: state
                .prior
                .as_ref()
                .map(zero_cost::kept)
                .unwrap_or_default(),
            proxies: scorer.as_ref(),
            ..plan.clone()
        };
        let mut snapshot = state.clone();
        let records = std::mem::take(&mut state.records);
        let mut ledger = opts
            .scale
            .as_ref()
            .map(|s| crate::stages::search::worker::LedgerRunner::open(p, s))
            .transpose()?;
        let mut local = InProcess(ev.as_mut());
        let runner: &mut dyn Runner = match ledger.as_mut() {
            Some(l) => l,
            None => &mut local,
        };
        let (records, finished) = search(
            &plan,
            runner,
            latency,
            records,
            opts.stop_after,
            |rs| {
                snapshot.records = rs.to_vec();
                write(&snapshot)
            },
            |n, best| {
                bar.set_position(n as u64);
                bar.set_message(format!("best {:.2}%", 100.0 * best));
            },
        )?;
        state.records = records;
        state.finished = finished;
        write(&state)?;
        if let Some(l) = ledger {
            l.close(finished, &RunDir::new(run_dir).workers())?;
        }
    }
    bar.finish_and_clear();
    if !state.finished {
        return Ok(Outcome {
            front: front(&state, &plan, Vec::new()),
            state,
            seconds: started.elapsed().as_secs_f64(),
        });
    }
    let decisions = Decisions::of(plan.space);
    let mut pts = pareto(&state.records, plan.objectives);
    // The report signal of the front, where the evaluator computes it on demand.
    for r in &mut pts {
        if r.report.is_none() {
            let c = Candidate::new(plan.space, &decisions, r.arch.clone())?;
            r.report = ev.report(&c)?;
        }
    }
    let mut f = front(&state, &plan, pts);
    if let Some(x) = exporter {
        for (i, pt) in f.points.iter_mut().enumerate() {
            let rec = state
                .records
                .iter()
                .find(|r| r.n == pt.n)
                .ok_or_else(|| Error::Input(format!("front point {} has no record", pt.n)))?;
            let c = Candidate::new(plan.space, &decisions, rec.arch.clone())?;
            let trained = ev.trained(&c)?.ok_or_else(|| {
                Error::Input(format!(
                    "front point {} ({}) has no trained weights to export: `export_front` \
                     needs an evaluator that trains (`Train`)",
                    pt.n + 1,
                    pt.key
                ))
            })?;
            let rel = format!("front/{i}");
            pt.profiled_ms = Some(x.export(pt, trained, &dir.join(&rel))?);
            pt.export = Some(format!("search/{rel}"));
        }
    }
    let text = serde_json::to_vec_pretty(&f).map_err(|e| Error::Input(e.to_string()))?;
    write_atomic(&RunDir::new(run_dir).pareto(), &text)?;
    Ok(Outcome {
        state,
        front: f,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Writes the space as read, libraries inline, to `path` (`search/space.ron`).
fn write_space(p: &Resolved, path: &Path) -> Result<()> {
    let cfg = ron::ser::PrettyConfig::default()
        .struct_names(true)
        .extensions(ron::extensions::Extensions::IMPLICIT_SOME);
    let text = ron::ser::to_string_pretty(&p.space_raw, cfg)
        .map_err(|e| Error::Input(format!("writing the space: {e}")))?;
    write_atomic(path, format!("{text}\n").as_bytes())
}

fn front(s: &State, plan: &Plan, pts: Vec<Record>) -> Front {
    Front {
        version: VERSION,
        objectives: std::iter::once("accuracy")
            .chain(plan.objectives.iter().map(|&o| objective_name(o)))
            .map(String::from)
            .collect(),
        report: s.report.clone(),
        points: pts
            .into_iter()
            .map(|r| Point {
                n: r.n,
                key: r.key,
                genotype: r.genotype,
                nb201: r.nb201,
                accuracy: r.accuracy.unwrap_or(0.0),
                report: r.report,
                params: r.params,
                macs: r.macs,
                latency_ms: r.latency_ms,
                export: None,
                profiled_ms: None,
            })
            .collect(),
    }
}

pub fn strategy_name(s: &crate::spec::pipeline::Strategy) -> &'static str {
    use crate::spec::pipeline::Strategy as S;
    match s {
        S::Random => "random",
        S::Evolution { .. } => "evolution",
        S::Reinforce { .. } => "reinforce",
        S::Local { .. } => "local",
        S::Predictor { .. } => "predictor",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(n: usize, acc: Option<f64>, params: u64, lat: Option<f64>) -> Record {
        Record {
            n,
            arch: vec![n as u32],
            key: format!("k{n}"),
            genotype: String::new(),
            nb201: None,
            params,
            macs: 2 * params,
            latency_ms: lat,
            rejected: acc.is_none().then(|| "over".into()),
            failed: None,
            accuracy: acc,
            report: None,
            reward: acc,
            repeat: false,
            seconds: 0.0,
            proxies: None,
        }
    }

    #[test]
    fn the_front_keeps_exactly_the_non_dominated_evaluated_records() {
        let rs = vec![
            rec(0, Some(0.9), 100, Some(2.0)),
            rec(1, Some(0.8), 50, Some(1.0)),
            rec(2, Some(0.8), 60, Some(1.0)), // dominated by 1
            rec(3, Some(0.95), 200, Some(3.0)),
            rec(4, None, 10, Some(0.1)), // rejected: never on the front
            rec(5, Some(0.7), 40, Some(1.5)), // fewest params among the evaluated
            rec(6, Some(0.9), 100, Some(2.0)), // equal to 0: both stay (neither dominates)
        ];
        let f = pareto(&rs, &[Objective::Latency, Objective::Params]);
        let ns: Vec<usize> = f.iter().map(|r| r.n).collect();
        assert_eq!(ns, [3, 0, 6, 1, 5]);
        // Over accuracy alone the front is the most accurate record.
        let f = pareto(&rs, &[]);
        assert_eq!(f.iter().map(|r| r.n).collect::<Vec<_>>(), [3]);
        assert_eq!(best(&rs).unwrap().n, 3);
    }

    #[test]
    fn constraints_and_rewards() {
        let r = rec(0, Some(0.9), 100, None);
        let cs = [Constraint::MaxParams(99), Constraint::MaxLatencyMs(1.0)];
        assert!(check(&cs, &r, None).unwrap().contains("MaxParams(99)"));
        let cs = [Constraint::MaxParams(100), Constraint::MaxLatencyMs(1.0)];
        assert_eq!(check(&cs, &r, None), None, "latency is checked once known");
        assert!(check(&cs, &r, Some(1.5)).unwrap().contains("MaxLatencyMs"));
        assert!(check(&[Constraint::MaxMacs(199)], &r, None).is_some());

        let space = crate::stages::search::strategy::tests::space("schemas/nas-bench-201.ron");
        let strategy = crate::spec::pipeline::Strategy::Random;
        let mnas = Reward::MnasNet {
            target_ms: crate::spec::Spanned::unspanned(2.0),
            w: crate::spec::Spanned::unspanned(-0.07),
        };
        let plan = Plan {
            space: &space,
            strategy: &strategy,
            budget: 1,
            seconds: None,
            reward: &mnas,
            objectives: &[],
            constraints: Vec::new(),
            seed: 0,
            generation: 1,
            initial: Vec::new(),
            proxies: None,
        };
        assert!(plan.needs_latency());
        assert_eq!(plan.reward(0.8, Some(2.0)), 0.8);
        assert!((plan.reward(0.8, Some(4.0)) - 0.8 * 2f64.powf(-0.07)).abs() < 1e-12);
        assert!(plan.reward(0.8, Some(1.0)) > 0.8);
    }
}
