//! The staged run of a pipeline (`nas-pipe run`, `nas-pipe status`): which stages a
//! pipeline has and in what order, their cache keys, the run folder and its lock file,
//! resume after a crash, and setting aside the outputs a changed spec makes stale.
//!
//! The run folder `exports/<name>/` holds:
//! - `pipeline.ron`: the resolved spec (every default written out) of the last run;
//! - `nas-pipe.lock`: per stage its cache key and the hashes of its inputs and outputs
//!   ([`lock`]);
//! - `.nas-pipe.busy`: the lock that keeps a second process out ([`busy`]);
//! - each stage's outputs ([`Stage::territory`]);
//! - `stale/<stage>-<key>/`: outputs set aside before their stage runs again (its key
//!   changed, it was forced, or an output was edited or damaged), with their lock entry; a
//!   later run whose key matches one moves it back instead of recomputing. Delete the
//!   folder freely ([`crate::run::outputs`]).
//!
//! A stage's key hashes its resolved spec sections (and the space files it reads), the keys
//! of the stages it depends on, nas-pipe's version and the device. A stage is skipped only
//! when its entry is finished under the key the spec gives now and every output and every
//! input still has its recorded hash. Search and retrain checkpoint every epoch, so a run
//! killed in the middle continues from the last checkpoint when started again and, on CPU,
//! ends with the same files as an uninterrupted one.

pub mod budget;
pub mod device_check;
pub mod eta;
pub mod fuzz;
pub mod memory;
pub mod resolve;
pub mod study_plot;
pub mod summary;
pub mod trials;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::run::Resolved;
use crate::run::RunDir;
use crate::run::hash::hash_parts;
use crate::run::outputs::{hash_files, is_temp, set_aside, short, territory_files};
use crate::run::{SPEC_FILE, STALE_DIR, Stage, lock};
use crate::spec::Sources;
use crate::spec::pipeline::Search;
use lock::{Entry, FileHash, KeyParts, Lock, Status};

/// Files of the retrained model that later stages read.
const RETRAINED: [&str; 4] = [
    crate::run::dir::retrained::CARD,
    crate::run::dir::retrained::SPACE,
    crate::run::dir::retrained::GENOTYPE,
    crate::run::dir::retrained::LAST,
];

/// A stage of this pipeline with its cache key.
#[derive(Debug, Clone)]
pub struct Planned {
    pub stage: Stage,
    /// The stages whose outputs this one reads.
    pub upstream: Vec<Stage>,
    /// Files of upstream stages it reads, relative to the run folder.
    pub inputs: Vec<String>,
    /// The key and its parts; `Err` says why it cannot be computed here (ONNX Runtime
    /// missing, or an upstream key that cannot be).
    pub key: std::result::Result<(String, KeyParts), String>,
}

/// What the ONNX Runtime stages run on: the loaded library, or why there is none.
pub type Ort = std::result::Result<&'static crate::runtime::Runtime, String>;

fn ron_text<T: Serialize>(v: &T) -> Result<String> {
    ron::to_string(v).map_err(|e| Error::Input(format!("serialising the spec: {e}")))
}

/// The stages pipeline `p` has, in order, with their keys. Errors (pointing into the
/// pipeline file) when a stage lacks what it needs: retraining without an architecture,
/// export without retraining, validation or profiling without export.
pub fn plan(
    sources: &Sources,
    p: &Resolved,
    device: &candle_core::Device,
    ort: &Ort,
) -> Result<Vec<Planned>> {
    let s = &p.spec;
    let needs = |span, what: &str| -> Error { sources.diag(span, what.to_string()).into() };
    if let Some(r) = &s.retrain
        && s.search.is_none()
        && s.genotype.is_none()
    {
        return Err(needs(
            r.span,
            "the retrain stage needs an architecture: add a `search` section or a `genotype`",
        ));
    }
    if let Some(e) = &s.export
        && s.retrain.is_none()
    {
        return Err(needs(
            e.span,
            "the export stage needs a `retrain` section (it exports the retrained network)",
        ));
    }
    for (span, what) in [
        (s.validate.as_ref().map(|v| v.span), "validate"),
        (s.profile.as_ref().map(|v| v.span), "profile"),
    ] {
        if let Some(span) = span
            && s.export.is_none()
        {
            return Err(needs(
                span,
                &format!(
                    "the {what} stage needs the exported model: add `export: Onnx()` to the pipeline"
                ),
            ));
        }
    }

    let dev = crate::device::name(device);
    let ort_device = |profile: bool| -> std::result::Result<String, String> {
        let rt = ort.as_ref().map_err(|e| e.clone())?;
        Ok(if profile {
            let m = crate::runtime::measure::Machine::current();
            format!(
                "onnxruntime {} on {} ({} cores)",
                rt.version, m.cpu, m.cores
            )
        } else {
            format!("{dev} + onnxruntime {}", rt.version)
        })
    };
    let h = |parts: &[&[u8]]| hash_parts(parts);
    let data = h(&[ron_text(&(&s.data, &s.normalize))?.as_bytes()]);
    let split = h(&[ron_text(&s.split)?.as_bytes()]);
    let seed = h(&[&s.seed.to_le_bytes()]);
    let space = {
        let texts: Vec<&[u8]> = p.space_texts.iter().map(|t| t.as_bytes()).collect();
        hash_parts(&texts)
    };
    // An image source's files (list, sizes, times): beside `data` wherever it is, and
    // absent for the built-in sets, whose files the data section names.
    let files = p.data_key.clone();
    let sections = |v: &[(&str, &String)]| -> BTreeMap<String, String> {
        let with_files = v.iter().any(|(k, _)| *k == "data") && !files.is_empty();
        v.iter()
            .map(|(k, x)| (k.to_string(), (*x).clone()))
            .chain(with_files.then(|| ("data files".to_string(), files.clone())))
            .collect()
    };

    // (stage, upstream, inputs, section hashes, device)
    type Row = (
        Stage,
        Vec<Stage>,
        Vec<String>,
        BTreeMap<String, String>,
        std::result::Result<String, String>,
    );
    let mut rows: Vec<Row> = Vec::new();
    if let Some(search) = &s.search {
        let own = h(&[ron_text(search)?.as_bytes()]);
        let sec = sections(&[
            ("search", &own),
            ("data", &data),
            ("split", &split),
            ("seed", &seed),
            ("space", &space),
        ]);
        // A search that measures latency depends on the runtime and the machine too.
        let measures = match &search.value {
            Search::Darts { latency, .. } => latency.is_some(),
            Search::Trials { .. } => {
                crate::stages::search::trials::Plan::of(p).is_ok_and(|t| t.needs_latency())
            }
        };
        let device = if measures {
            ort_device(true).map(|o| format!("{dev} + {o}"))
        } else {
            Ok(dev.clone())
        };
        rows.push((Stage::Search, vec![], vec![], sec, device));
    }
    if s.search.is_some() || s.genotype.is_some() {
        let (upstream, inputs, sec) = match &p.genotype {
            Some((g, _)) if s.search.is_none() => {
                let g = h(&[g.to_ron().as_bytes()]);
                (
                    vec![],
                    vec![],
                    sections(&[("genotype", &g), ("space", &space)]),
                )
            }
            _ => (
                vec![Stage::Search],
                vec![crate::run::dir::SEARCH_STATE.to_string()],
                sections(&[("space", &space)]),
            ),
        };
        rows.push((Stage::Derive, upstream, inputs, sec, Ok("none".into())));
    }
    if let Some(r) = &s.retrain {
        let own = h(&[ron_text(r)?.as_bytes()]);
        let sec = sections(&[
            ("retrain", &own),
            ("data", &data),
            ("split", &split),
            ("seed", &seed),
            ("space", &space),
        ]);
        rows.push((
            Stage::Retrain,
            vec![Stage::Derive],
            vec!["genotype.ron".into()],
            sec,
            Ok(dev.clone()),
        ));
    }
    if s.export.is_some() {
        let own = h(&[ron_text(&s.export)?.as_bytes()]);
        rows.push((
            Stage::Export,
            vec![Stage::Retrain],
            RETRAINED.iter().map(|f| f.to_string()).collect(),
            sections(&[("export", &own)]),
            Ok("cpu".into()),
        ));
    }
    if let Some(v) = &s.validate {
        let own = h(&[ron_text(v)?.as_bytes()]);
        let mut inputs = vec![crate::run::dir::MODEL_ONNX.to_string()];
        inputs.extend(RETRAINED.iter().map(|f| f.to_string()));
        rows.push((
            Stage::Validate,
            vec![Stage::Export],
            inputs,
            sections(&[("validate", &own), ("data", &data), ("seed", &seed)]),
            ort_device(false),
        ));
    }
    if let Some(pr) = &s.profile {
        let own = h(&[ron_text(pr)?.as_bytes()]);
        rows.push((
            Stage::Profile,
            vec![Stage::Export],
            vec![
                crate::run::dir::MODEL_ONNX.into(),
                crate::run::dir::retrained::CARD.into(),
            ],
            sections(&[("profile", &own)]),
            ort_device(true),
        ));
    }
    let all: Vec<Stage> = rows.iter().map(|r| r.0).collect();
    let whole = h(&[s.to_ron().as_bytes()]);
    let report_inputs = crate::stages::report::INPUTS
        .iter()
        .filter(|f| **f != lock::FILE)
        .map(|f| f.to_string())
        .collect();
    rows.push((
        Stage::Report,
        all,
        report_inputs,
        sections(&[("spec", &whole)]),
        Ok("none".into()),
    ));

    let mut keys: BTreeMap<Stage, std::result::Result<String, String>> = BTreeMap::new();
    let mut planned = Vec::new();
    for (stage, upstream, inputs, sections, device) in rows {
        let key = (|| {
            let device = device.map_err(|e| {
                // The loader's first attempt, e.g. "--ort-lib (/x.so): no such file".
                let tried = e.lines().nth(1).map_or("", str::trim);
                format!("its key names the ONNX Runtime version, and none loads: {tried}")
            })?;
            let mut up = BTreeMap::new();
            for u in &upstream {
                match &keys[u] {
                    Ok(k) => {
                        up.insert(u.name().to_string(), k.clone());
                    }
                    Err(_) => return Err(format!("its key includes {u}'s, which is unknown")),
                }
            }
            let parts = KeyParts {
                sections,
                version: env!("CARGO_PKG_VERSION").to_string(),
                device,
                upstream: up,
            };
            Ok((key_of(stage, &parts), parts))
        })();
        keys.insert(
            stage,
            key.as_ref().map(|k| k.0.clone()).map_err(Clone::clone),
        );
        planned.push(Planned {
            stage,
            upstream,
            inputs,
            key,
        });
    }
    Ok(planned)
}

/// A stage's cache key from its parts.
pub fn key_of(stage: Stage, parts: &KeyParts) -> String {
    let mut v: Vec<&[u8]> = vec![
        b"nas-pipe stage key 1",
        stage.name().as_bytes(),
        parts.version.as_bytes(),
        parts.device.as_bytes(),
    ];
    for (k, x) in &parts.sections {
        v.push(b"section");
        v.push(k.as_bytes());
        v.push(x.as_bytes());
    }
    for (k, u) in &parts.upstream {
        v.push(b"upstream");
        v.push(k.as_bytes());
        v.push(u.as_bytes());
    }
    hash_parts(&v)
}

/// Where a stage stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Finished under the current key, outputs and inputs as recorded: skipped.
    Done,
    /// Never run (or run only by a single-stage command, outside the lock).
    Missing(String),
    /// Must run again; why.
    Stale(String),
    /// The key cannot be computed here; why.
    Unknown(String),
    /// Being computed now by the process that holds the run folder.
    Running(String),
}

impl State {
    pub fn word(&self) -> &'static str {
        match self {
            State::Done => "done",
            State::Missing(_) => "missing",
            State::Stale(_) => "stale",
            State::Unknown(_) => "unknown",
            State::Running(_) => "running",
        }
    }

    pub fn why(&self) -> &str {
        match self {
            State::Done => "",
            State::Missing(w) | State::Stale(w) | State::Unknown(w) | State::Running(w) => w,
        }
    }
}

/// Why `entry` was made under other parts than `now`.
fn key_change(entry: &Entry, now: &KeyParts) -> String {
    let was = &entry.parts;
    let mut why = Vec::new();
    let names: std::collections::BTreeSet<&String> =
        was.sections.keys().chain(now.sections.keys()).collect();
    let changed: Vec<&str> = names
        .into_iter()
        .filter(|k| was.sections.get(*k) != now.sections.get(*k))
        .map(|k| match k.as_str() {
            "data" => "the data (or normalize) section",
            "data files" => "the data's files",
            "seed" => "the seed",
            "split" => "the split section",
            "space" => "the space files",
            "genotype" => "the genotype",
            "spec" => "the resolved spec",
            "search" => "the search section",
            "retrain" => "the retrain section",
            "export" => "the export section",
            "validate" => "the validate section",
            "profile" => "the profile section",
            other => other,
        })
        .collect();
    if !changed.is_empty() {
        why.push(format!("{} changed", changed.join(", ")));
    }
    if was.version != now.version {
        why.push(format!("nas-pipe {} → {}", was.version, now.version));
    }
    if was.device != now.device {
        why.push(format!("device {} → {}", was.device, now.device));
    }
    let changed: Vec<&str> = now
        .upstream
        .iter()
        .filter(|(k, v)| was.upstream.get(*k) != Some(v))
        .map(|(k, _)| k.as_str())
        .collect();
    if !changed.is_empty() {
        why.push(format!("upstream {} changed", changed.join(", ")));
    }
    if why.is_empty() {
        "its key changed".into()
    } else {
        why.join("; ")
    }
}

/// Epochs finished and planned, from a search or retrain state file, for messages.
fn progress_of(run_dir: &Path, stage: Stage) -> Option<usize> {
    let file = match stage {
        Stage::Search => crate::run::dir::SEARCH_STATE,
        Stage::Retrain => crate::run::dir::retrained::STATE,
        _ => return None,
    };
    let text = std::fs::read_to_string(run_dir.join(file)).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.get("epochs_done")?.as_u64().map(|n| n as usize)
}

/// Where `planned` stands, given the lock and the files of the run folder.
pub fn assess(run_dir: &Path, lock: &Lock, planned: &Planned) -> Result<State> {
    let (key, parts) = match &planned.key {
        Ok(k) => k,
        Err(why) => return Ok(State::Unknown(why.clone())),
    };
    let Some(entry) = lock.get(planned.stage) else {
        return Ok(State::Missing("not run yet".into()));
    };
    if &entry.key != key {
        return Ok(State::Stale(key_change(entry, parts)));
    }
    if entry.status == Status::Running {
        let how = match (planned.stage.resumes(), progress_of(run_dir, planned.stage)) {
            (true, Some(n)) if n > 0 => {
                format!("interrupted after epoch {n}; the next run continues from that checkpoint")
            }
            (true, _) => "interrupted before its first checkpoint".into(),
            (false, _) => "interrupted; the next run does it again".into(),
        };
        return Ok(State::Stale(format!("started {} and {how}", entry.started)));
    }
    for (f, h) in &entry.outputs {
        match FileHash::of(&run_dir.join(f))? {
            None => return Ok(State::Stale(format!("output {f} is missing"))),
            Some(now) if &now != h => {
                return Ok(State::Stale(format!(
                    "output {f} changed after the stage wrote it"
                )));
            }
            Some(_) => {}
        }
    }
    for (f, h) in &entry.inputs {
        match FileHash::of(&run_dir.join(f))? {
            None => return Ok(State::Stale(format!("input {f} is missing"))),
            Some(now) if &now != h => {
                return Ok(State::Stale(format!(
                    "input {f} changed since the stage read it"
                )));
            }
            Some(_) => {}
        }
    }
    Ok(State::Done)
}

/// Options of `nas-pipe run` that are not part of the spec.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Run this stage and every later one, whatever the cache says.
    pub from: Option<Stage>,
    /// Run only this stage, whatever the cache says (its upstream must be done).
    pub only: Option<Stage>,
    /// Run every stage, whatever the cache says.
    pub force: bool,
    /// Draw progress bars.
    pub progress: bool,
    /// The ONNX Runtime library (`--ort-lib`).
    pub ort_lib: Option<PathBuf>,
    /// A multi-trial search evaluates on workers through this trial ledger.
    pub scale: Option<crate::stages::search::worker::Scale>,
}

/// What a run did with a stage.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Done already: skipped.
    Cached,
    /// Its outputs were moved back from `stale/`.
    Restored(PathBuf),
    /// Computed (resumed from a checkpoint when one was there), in seconds.
    Ran(f64),
    /// Not selected by `--only` / `--from`.
    Skipped,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub run_dir: PathBuf,
    pub stages: Vec<(Stage, Action)>,
    /// Outputs set aside under `stale/` in this run.
    pub set_aside: Vec<PathBuf>,
    /// The validation verdict, when the pipeline validates (`false`: tolerances missed).
    pub validation_passed: Option<bool>,
}

fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// Runs pipeline `p` in `run_dir`: every stage that is not done, in order.
pub fn run(
    sources: &Sources,
    p: &Resolved,
    run_dir: &Path,
    device: &candle_core::Device,
    opts: &Options,
) -> Result<Outcome> {
    let needs_ort = p.spec.validate.is_some() || p.spec.profile.is_some();
    let ort: Ort = if needs_ort {
        crate::runtime::load(opts.ort_lib.as_deref()).map_err(|e| e.to_string())
    } else {
        Err("the pipeline has no validate or profile stage".into())
    };
    let planned = plan(sources, p, device, &ort)?;
    // A source without a test part of its own (found.test == 0) has one carved later.
    if reads_images_now(run_dir, p, &planned, opts)?
        && let Some(found) = crate::data::probe(&p.spec.data, p.data_dir.as_deref())?
        && found.test > 0
    {
        resolve::samples_fit(sources, &p.spec, found.test)?;
    }
    if needs_ort && let Err(e) = &ort {
        return Err(Error::Runtime(format!(
            "{e}\nthe pipeline's validate and profile stages need ONNX Runtime; nothing was run"
        )));
    }
    for sel in [opts.only, opts.from].into_iter().flatten() {
        if !planned.iter().any(|s| s.stage == sel) {
            return Err(Error::Input(format!(
                "pipeline \"{}\" has no {sel} stage; its stages are {}",
                p.spec.name.value,
                planned
                    .iter()
                    .map(|s| s.stage.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    if p.spec.budget.is_none() {
        check_selections(run_dir, p, &planned, opts)?;
    }
    // Everything above is checked before the folder is touched.
    let _busy = crate::run::busy::acquire(run_dir, &format!("nas-pipe run {}", p.spec.name.value))?;
    let mut p = p.in_run_folder(run_dir);
    let mut planned = planned;
    let mut budget = None;
    if p.spec.budget.is_some() {
        let replan = opts.force && opts.only.is_none() && opts.from.is_none();
        let b = budget::prepare(&p, run_dir, device, replan)?;
        crate::progress::note(&budget::describe(&b));
        p = budget::apply(&p, &b);
        planned = plan(sources, &p, device, &ort)?;
        check_selections(run_dir, &p, &planned, opts)?;
        budget = Some(b);
    }
    remove_temp_files(run_dir)?;
    let mut outlook = eta_outlook(&p);
    let mut lock = open_lock(run_dir, &p.spec.name.value, opts.force)?;
    write_spec(run_dir, &p)?;

    let mut outcome = Outcome {
        run_dir: run_dir.to_path_buf(),
        stages: Vec::new(),
        set_aside: Vec::new(),
        validation_passed: None,
    };
    let total = planned.len();
    let selected = |stage: Stage| match (opts.only, opts.from) {
        (Some(o), _) => stage == o,
        (None, Some(f)) => stage >= f,
        (None, None) => true,
    };
    for i in 0..total {
        // A budget's provisional retraining is made final when retraining is to run.
        if planned[i].stage == Stage::Retrain
            && selected(Stage::Retrain)
            && let Some(b) = budget.as_mut()
            && b.retrain.is_some_and(|r| !r.measured)
        {
            let arch = crate::stages::retrain::choose_genotype(&p, run_dir, None)?.1;
            let spent = b.calibration_s
                + planned[..i]
                    .iter()
                    .filter_map(|u| lock.get(u.stage))
                    .map(|e| e.seconds)
                    .sum::<f64>();
            budget::finalize_retrain(&p, b, &arch, spent, run_dir, device)?;
            p = budget::apply(&p, b);
            planned = plan(sources, &p, device, &ort)?;
            write_spec(run_dir, &p)?;
            drop(outlook);
            outlook = eta_outlook(&p);
        }
        let st = &planned[i];
        let stage = st.stage;
        let forced =
            opts.force || opts.only == Some(stage) || opts.from.is_some_and(|f| stage >= f);
        let selected = selected(stage);
        let state = assess(run_dir, &lock, st)?;
        let (key, parts) = st.key.clone().map_err(Error::Runtime)?;
        if !selected {
            check_selected_inputs(run_dir, &lock, &planned, st, opts)?;
            outcome.stages.push((stage, Action::Skipped));
            continue;
        }
        let head = format!("[{}/{total}] {stage}", i + 1);
        if state == State::Done && !forced {
            let text = format!("{head}: cached (key {})", short(&key));
            crate::progress::stage(stage.name(), "cached", None, &text);
            outcome.stages.push((stage, Action::Cached));
            note_validation(run_dir, stage, &mut outcome);
            continue;
        }
        // Set aside what is there before anything replaces it: always, except the
        // checkpoints a resuming stage continues from.
        let entry = lock.get(stage).cloned();
        let resumable = stage.resumes()
            && entry
                .as_ref()
                .is_some_and(|e| e.key == key && e.status == Status::Running);
        // Checkpoints no lock entry describes (a single-stage command's) are resumed too:
        // their state file names the spec they were made under.
        let in_place = resumable || (stage.resumes() && entry.is_none());
        let set_aside = if forced || !in_place {
            set_aside(run_dir, stage, entry.as_ref())?
        } else {
            None
        };
        if set_aside.is_some() {
            lock.remove(stage);
        }
        if !forced
            && !resumable
            && stage.territory().iter().all(|t| !run_dir.join(t).exists())
            && let Some((restored, from)) = restore(run_dir, stage, &key, &st.inputs)?
        {
            let text = format!(
                "{head}: restored from {} (made under this key before)",
                from.display()
            );
            crate::progress::stage(stage.name(), "restored", None, &text);
            outcome.set_aside.extend(set_aside);
            let mut e = restored;
            e.note = Some(format!("restored from {}", from.display()));
            lock.set(e);
            lock.write(run_dir)?;
            outcome.stages.push((stage, Action::Restored(from)));
            note_validation(run_dir, stage, &mut outcome);
            continue;
        }
        let why = if forced && state == State::Done {
            "forced".to_string()
        } else {
            state.why().to_string()
        };
        let text = format!("{head}: running (key {}): {why}", short(&key));
        crate::progress::stage(stage.name(), "running", None, &text);
        let started = match &entry {
            Some(e) if resumable => e.started.clone(),
            _ => now(),
        };
        lock.set(Entry {
            stage,
            key: key.clone(),
            parts: parts.clone(),
            status: Status::Running,
            started: started.clone(),
            finished: None,
            seconds: 0.0,
            inputs: BTreeMap::new(),
            outputs: BTreeMap::new(),
            note: None,
        });
        lock.write(run_dir)?;
        let t0 = Instant::now();
        let paced = budget.as_ref().and_then(|b| b.retrain).map(|r| r.seconds);
        execute(stage, &p, run_dir, device, &ort, opts, paced)?;
        let seconds = t0.elapsed().as_secs_f64();
        let outputs = hash_files(run_dir, &territory_files(run_dir, stage)?)?;
        let inputs = hash_files(run_dir, &st.inputs)?;
        // Outputs set aside that came out byte for byte the same again keep nothing.
        if let Some(d) = set_aside
            && crate::run::outputs::keep_if_different(run_dir, stage, &d)?
        {
            crate::progress::note(&format!(
                "{head}: the previous outputs are kept in {}",
                d.display()
            ));
            outcome.set_aside.push(d);
        }
        lock.set(Entry {
            stage,
            key,
            parts,
            status: Status::Done,
            started,
            finished: Some(now()),
            seconds,
            inputs,
            outputs,
            note: None,
        });
        lock.write(run_dir)?;
        let text = format!(
            "{head}: done in {}{}",
            crate::progress::duration(seconds),
            summary::of(&p, run_dir, stage).map_or(String::new(), |s| format!(": {s}"))
        );
        crate::progress::stage(stage.name(), "done", Some(seconds), &text);
        outcome.stages.push((stage, Action::Ran(seconds)));
        note_validation(run_dir, stage, &mut outcome);
    }
    Ok(outcome)
}

/// Writes `p`'s resolved spec as the run folder's `pipeline.ron`.
fn write_spec(run_dir: &Path, p: &Resolved) -> Result<()> {
    crate::fsutil::write_atomic(
        &run_dir.join(SPEC_FILE),
        format!("{}\n", p.spec.to_ron()).as_bytes(),
    )
}

/// Sets the process-wide pipeline ETA for `p`'s work.
fn eta_outlook(p: &Resolved) -> crate::progress::OutlookGuard {
    let work = eta::Work::of(p);
    crate::progress::outlook(Box::new(move |t| eta::left(&work, t)))
}

/// With `--only` or `--from`: the stages before the selected ones are done (their inputs
/// are there as recorded).
fn check_selections(
    run_dir: &Path,
    p: &Resolved,
    planned: &[Planned],
    opts: &Options,
) -> Result<()> {
    if opts.only.is_none() && opts.from.is_none() {
        return Ok(());
    }
    let lock = Lock::read(run_dir, &p.spec.name.value)?;
    for st in planned {
        check_selected_inputs(run_dir, &lock, planned, st, opts)?;
    }
    Ok(())
}

/// The run folder's lock; with `--force`, a damaged one is set aside (said in one line)
/// and a new one begun.
fn open_lock(run_dir: &Path, pipeline: &str, force: bool) -> Result<Lock> {
    if !force {
        return Lock::read(run_dir, pipeline);
    }
    let (lock, kept) = Lock::read_or_set_aside(run_dir, pipeline)?;
    if let Some(d) = kept {
        crate::progress::note(&format!(
            "{}: damaged; kept in {} and begun anew",
            run_dir.join(lock::FILE).display(),
            d.display()
        ));
    }
    Ok(lock)
}

/// Whether a stage that reads the data set's images will run: one selected and forced, or
/// not done.
fn reads_images_now(
    run_dir: &Path,
    p: &Resolved,
    planned: &[Planned],
    opts: &Options,
) -> Result<bool> {
    // A lock that cannot be read: the stages will run (or the run will say why not).
    let Ok(lock) = Lock::read(run_dir, &p.spec.name.value) else {
        return Ok(true);
    };
    for st in planned.iter().filter(|st| p.reads_images_in(st.stage)) {
        let selected =
            opts.only.is_none_or(|o| o == st.stage) && opts.from.is_none_or(|f| st.stage >= f);
        let forced = opts.force || opts.only.is_some() || opts.from.is_some();
        if selected && (forced || assess(run_dir, &lock, st)? != State::Done) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// With `--only` or `--from`, a stage that is not selected but whose outputs the selected
/// ones read must be done.
fn check_selected_inputs(
    run_dir: &Path,
    lock: &Lock,
    planned: &[Planned],
    st: &Planned,
    opts: &Options,
) -> Result<()> {
    let needed = match (opts.only, opts.from) {
        (Some(o), _) => upstream_of(planned, o).contains(&st.stage),
        (None, Some(f)) => st.stage < f,
        (None, None) => false,
    };
    if !needed {
        return Ok(());
    }
    let state = assess(run_dir, lock, st)?;
    if state == State::Done {
        return Ok(());
    }
    let flag = if opts.only.is_some() {
        "--only"
    } else {
        "--from"
    };
    Err(Error::Input(format!(
        "{} is {} ({}), and the stages {flag} selects need its outputs; run without {flag} first",
        st.stage,
        state.word(),
        state.why()
    )))
}

/// Every stage `stage` reads from, directly or not.
fn upstream_of(planned: &[Planned], stage: Stage) -> std::collections::BTreeSet<Stage> {
    let mut out = std::collections::BTreeSet::new();
    let mut todo = vec![stage];
    while let Some(s) = todo.pop() {
        if let Some(p) = planned.iter().find(|p| p.stage == s) {
            for &u in &p.upstream {
                if out.insert(u) {
                    todo.push(u);
                }
            }
        }
    }
    out
}

fn note_validation(run_dir: &Path, stage: Stage, outcome: &mut Outcome) {
    if stage != Stage::Validate {
        return;
    }
    outcome.validation_passed = std::fs::read(RunDir::new(run_dir).validation())
        .ok()
        .and_then(|b| serde_json::from_slice::<crate::run::validation::Validation>(&b).ok())
        .map(|v| v.passed);
}

/// Does the work of one stage; `paced`: a budget's seconds for retraining.
fn execute(
    stage: Stage,
    p: &Resolved,
    run_dir: &Path,
    device: &candle_core::Device,
    ort: &Ort,
    opts: &Options,
    paced: Option<f64>,
) -> Result<()> {
    let rt = || ort.as_ref().map_err(|e| Error::Runtime(e.clone())).copied();
    match stage {
        Stage::Search => {
            if matches!(p.spec.search.as_deref(), Some(Search::Trials { .. })) {
                let o = crate::stages::search::trials::Options {
                    stop_after: None,
                    progress: opts.progress,
                    scale: opts.scale.clone(),
                };
                trials::trials(p, run_dir, device, ort, &o)?;
            } else {
                let o = crate::stages::search::darts::Options {
                    stop_after: None,
                    progress: opts.progress,
                    ort: ort.as_ref().ok().copied(),
                };
                crate::stages::search::darts::run(p, run_dir, device, &o)?;
            }
        }
        Stage::Derive => match p.spec.search.as_deref() {
            Some(Search::Darts { .. }) => {
                crate::stages::derive::from_darts(p, run_dir)?;
            }
            Some(Search::Trials { .. }) => {
                crate::stages::derive::from_trials(p, run_dir)?;
            }
            None => {
                crate::stages::derive::fixed(p, run_dir)?;
            }
        },
        Stage::Retrain => {
            let g = RunDir::new(run_dir).genotype();
            let g = crate::stages::retrain::choose_genotype(
                p,
                run_dir,
                Some(&g.display().to_string()),
            )?;
            let o = crate::stages::retrain::Options {
                stop_after: None,
                progress: opts.progress,
                paced,
            };
            crate::stages::retrain::run(p, run_dir, device, &g, &o)?;
        }
        Stage::Export => {
            crate::stages::export::run(p, run_dir, crate::run::dir::model_file::LAST)?;
        }
        Stage::Validate => {
            crate::stages::validate::run(p, run_dir, device, Some(&rt()?.path))?;
        }
        Stage::Profile => {
            crate::stages::profile::run_folder(
                run_dir,
                &crate::stages::profile::plan_of(p),
                rt()?,
            )?;
        }
        Stage::Report => {
            crate::stages::report::write(run_dir)?;
        }
    }
    Ok(())
}

/// Removes the temp files a killed process left (the caller holds the run folder).
fn remove_temp_files(run_dir: &Path) -> Result<()> {
    fn visit(dir: &Path) -> Result<()> {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return Ok(());
        };
        for e in rd.flatten() {
            let path = e.path();
            if e.file_name() == STALE_DIR {
                continue;
            }
            if path.is_dir() {
                visit(&path)?;
            } else if is_temp(&path) {
                std::fs::remove_file(&path).map_err(|source| Error::Io { path, source })?;
            }
        }
        Ok(())
    }
    visit(run_dir)
}

/// Looks in `stale/` for the stage's outputs made under `key`, finished, intact, and made
/// from the inputs the run folder holds now; moves them back and returns their entry.
fn restore(
    run_dir: &Path,
    stage: Stage,
    key: &str,
    inputs: &[String],
) -> Result<Option<(Entry, PathBuf)>> {
    let stale = run_dir.join(STALE_DIR);
    let Ok(rd) = std::fs::read_dir(&stale) else {
        return Ok(None);
    };
    let prefix = format!("{stage}-{}", short(key));
    let mut dirs: Vec<PathBuf> = rd
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect();
    dirs.sort();
    'dirs: for dir in dirs {
        let Ok(bytes) = std::fs::read(dir.join("entry.json")) else {
            continue;
        };
        let Ok(entry) = serde_json::from_slice::<Entry>(&bytes) else {
            continue;
        };
        if entry.key != key || entry.stage != stage || entry.status != Status::Done {
            continue;
        }
        for (f, h) in &entry.outputs {
            if FileHash::of(&dir.join(f))?.as_ref() != Some(h) {
                continue 'dirs;
            }
        }
        let now = hash_files(run_dir, inputs)?;
        if now != entry.inputs {
            continue;
        }
        for t in stage.territory() {
            let from = dir.join(t);
            if from.exists() {
                let to = run_dir.join(t);
                std::fs::rename(&from, &to).map_err(|source| Error::Io { path: to, source })?;
            }
        }
        let _ = std::fs::remove_file(dir.join("entry.json"));
        let _ = std::fs::remove_dir_all(&dir);
        return Ok(Some((entry, dir)));
    }
    Ok(None)
}

/// One line of `nas-pipe status`.
#[derive(Debug, Clone)]
pub struct StageStatus {
    pub stage: Stage,
    pub state: State,
    pub entry: Option<Entry>,
}

/// `nas-pipe status`: where every stage of `p` stands in `run_dir`, who holds the folder,
/// and what `stale/` keeps.
pub struct Report {
    pub run_dir: PathBuf,
    pub stages: Vec<StageStatus>,
    pub holder: Option<String>,
    /// Folders under `stale/` and their sizes in bytes.
    pub stale: Vec<(String, u64)>,
}

/// Assesses every stage of `p` without changing anything.
pub fn status(
    sources: &Sources,
    p: &Resolved,
    run_dir: &Path,
    device: &candle_core::Device,
    ort_lib: Option<&Path>,
) -> Result<Report> {
    let ort: Ort = if p.spec.validate.is_some() || p.spec.profile.is_some() {
        crate::runtime::load(ort_lib).map_err(|e| e.to_string())
    } else {
        Err("not needed".into())
    };
    let p = &budget::as_planned(p, run_dir, device)?;
    let planned = plan(sources, p, device, &ort)?;
    let lock = Lock::read(run_dir, &p.spec.name.value)?;
    let holder = crate::run::busy::holder(run_dir);
    let mut stages = Vec::new();
    let mut blocked: Option<Stage> = None;
    for st in &planned {
        let mut state = assess(run_dir, &lock, st)?;
        if let (Some(h), Some(e)) = (&holder, lock.get(st.stage))
            && e.status == Status::Running
        {
            state = State::Running(format!("started {} by {h}", e.started));
        }
        if state == State::Done
            && let Some(b) = st.upstream.iter().find(|u| {
                stages
                    .iter()
                    .any(|s: &StageStatus| s.stage == **u && s.state != State::Done)
            })
        {
            state = State::Stale(format!("{b} runs first; reruns if {b}'s outputs change"));
        }
        if state != State::Done && blocked.is_none() {
            blocked = Some(st.stage);
        }
        stages.push(StageStatus {
            stage: st.stage,
            state,
            entry: lock.get(st.stage).cloned(),
        });
    }
    let mut stale = Vec::new();
    if let Ok(rd) = std::fs::read_dir(run_dir.join(STALE_DIR)) {
        for e in rd.flatten() {
            stale.push((
                e.file_name().to_string_lossy().into_owned(),
                size_of(&e.path()),
            ));
        }
    }
    stale.sort();
    Ok(Report {
        run_dir: run_dir.to_path_buf(),
        stages,
        holder,
        stale,
    })
}

fn size_of(path: &Path) -> u64 {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::read_dir(path)
            .map(|rd| rd.flatten().map(|e| size_of(&e.path())).sum())
            .unwrap_or(0),
        Ok(m) => m.len(),
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_change_with_each_part() {
        let parts = KeyParts {
            sections: BTreeMap::from([("retrain".to_string(), "s".to_string())]),
            version: "0.1.0".into(),
            device: "cpu".into(),
            upstream: BTreeMap::from([("derive".to_string(), "k".to_string())]),
        };
        let k = key_of(Stage::Retrain, &parts);
        assert_ne!(k, key_of(Stage::Export, &parts));
        let mut other = parts.clone();
        other.device = "cuda:0".into();
        assert_ne!(k, key_of(Stage::Retrain, &other));
        let mut other = parts.clone();
        other.upstream.insert("derive".into(), "k2".into());
        assert_ne!(k, key_of(Stage::Retrain, &other));
        let mut other = parts.clone();
        other.sections.insert("seed".into(), "1".into());
        assert_ne!(k, key_of(Stage::Retrain, &other));
        assert_eq!(k, key_of(Stage::Retrain, &parts.clone()));
    }

    /// The evaluator trains and scores on the training part only: its training and
    /// held-out images together are the data set's training images less the validation
    /// part, whatever the validation fraction.
    #[test]
    fn held_out_images_come_from_the_training_part_only() {
        let dir = crate::fsutil::TempDir::new("evaluator-split");
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        for (validation, carved) in [(0.1, 8), (0.25, 20)] {
            let text = format!(
                r#"Pipeline(
    name: "e",
    seed: 3,
    data: Synthetic(channels: 3, size: 8, classes: 4, train: 80, test: 32),
    split: (validation: {validation}),
    space: "{}",
    search: Trials(
        strategy: Random,
        evaluator: Train(train_portion: 0.5, recipe: Retrain(epochs: 1, batch_size: 16,
            optimizer: Sgd(lr: 0.05))),
        evaluations: 1,
    ),
)"#,
                root.join("schemas/nas-bench-201.ron").display()
            );
            let path = dir.0.join("e.ron");
            std::fs::write(&path, text).unwrap();
            let p = super::resolve::load(&mut crate::spec::Sources::default(), &path).unwrap();
            let s = crate::stages::search::evaluator::Split::load(
                &p,
                None,
                0.5,
                16,
                crate::spec::pipeline::Augment::default(),
            )
            .unwrap();
            let parts = crate::data::splits(&p.spec.data, None, 3, &p.spec.split).unwrap();
            // Each class of about 20 images gives round(fraction × n) to validation.
            assert!(
                (carved - 2..=carved + 2).contains(&parts.val.len()),
                "{validation}: {}",
                parts.val.len()
            );
            assert_eq!(s.train.len() + s.held_out.len(), 80 - parts.val.len());
            assert_eq!(s.test.len(), 32);
        }
    }
}
