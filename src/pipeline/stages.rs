//! The work of the stages that have no module of their own, on a run folder: the derive
//! stage of a pipeline with a fixed genotype, the export of the retrained network, and the
//! profile of the exported model with the pipeline's plan. `nas-pipe run` and the
//! single-stage commands (`export`, `profile PIPELINE`) both call these.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::run::Resolved;
use crate::spec::pipeline;

/// The derive stage of a pipeline that fixes its architecture: writes the pipeline's
/// `genotype` to `<run_dir>/genotype.ron`.
pub fn derive_fixed(p: &Resolved, run_dir: &Path) -> Result<crate::space::genotype::Genotype> {
    let (g, _) = p.genotype.as_ref().ok_or_else(|| {
        Error::Input(format!(
            "pipeline \"{}\" has neither `search` nor `genotype`: there is no architecture to \
             train; add one of them (or use `nas-pipe train --genotype G`)",
            p.spec.name.value
        ))
    })?;
    crate::fsutil::write_atomic(&run_dir.join("genotype.ron"), g.to_ron().as_bytes())?;
    Ok(g.clone())
}

/// The export options of a pipeline: its `export` section, else the defaults.
pub fn export_options(p: &Resolved) -> crate::nets::export::Options {
    match p.spec.export.as_ref().map(|e| &e.value) {
        Some(pipeline::Export::Onnx {
            opset,
            fold_batch_norm,
        }) => crate::nets::export::Options {
            opset: opset.value,
            fold_batch_norm: *fold_batch_norm,
        },
        None => crate::nets::export::Options::default(),
    }
}

/// Rebuilds the retrained network of `run_dir` with `weights` (a file of the retrain folder
/// or a path), exports it with the pipeline's options and writes `run_dir/model.onnx`
/// atomically. Returns the path, the options and the file's size.
pub fn export(
    p: &Resolved,
    run_dir: &Path,
    weights: &str,
) -> Result<(PathBuf, crate::nets::export::Options, usize)> {
    let rdir = run_dir.join("retrain");
    let opts = export_options(p);
    if !rdir.join("model.ron").exists() {
        return Err(Error::Input(format!(
            "{} has no retrained model: run `nas-pipe train` first",
            rdir.display()
        )));
    }
    let trained = crate::run::retrain::load_model(&rdir)?;
    let wpath = crate::run::retrain::weights_path(&rdir, weights);
    let model = crate::nets::model::Model::new(&trained.net, &candle_core::Device::Cpu, 0, false)
        .map_err(|e| {
        Error::Input(format!(
            "building the network: {}",
            crate::error::candle_message(&e)
        ))
    })?;
    crate::run::retrain::load_weights(&model, &wpath)?;
    // The hash the weights were trained under, else the pipeline's as it is now.
    let spec_hash = std::fs::read_to_string(rdir.join("state.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.get("spec_hash")?.as_str().map(String::from));
    let spec_hash = match spec_hash {
        Some(h) => h,
        None => crate::stages::retrain::spec_hash(p, &trained.genotype)?,
    };
    let meta = crate::nets::export::Metadata {
        spec_hash,
        genotype: trained.genotype.to_ron(),
        mean: trained.card.mean.clone(),
        std: trained.card.std.clone(),
        classes: trained.card.classes.clone(),
    };
    let bytes = crate::nets::export::export(&model, &meta, &opts)?;
    let path = run_dir.join("model.onnx");
    crate::fsutil::write_atomic(&path, &bytes).map_err(|e| {
        let _ = std::fs::remove_file(crate::fsutil::temp_path(&path));
        Error::Input(format!(
            "cannot write the ONNX model {}: {e}",
            path.display()
        ))
    })?;
    Ok((path, opts, bytes.len()))
}

/// The profile plan of a pipeline: its `profile` section, else the defaults.
pub fn profile_plan(p: &Resolved) -> crate::run::profile::Plan {
    match &p.spec.profile {
        Some(spec) => crate::run::profile::Plan::from_spec(spec),
        None => crate::run::profile::Plan::default(),
    }
}

/// Profiles `run_dir/model.onnx` with `plan` on `rt`, with the architecture's parameters
/// and MACs from the model card, and writes `profile.json` and `profile.md` into `run_dir`.
pub fn profile(
    run_dir: &Path,
    plan: &crate::run::profile::Plan,
    rt: &'static crate::runtime::Runtime,
) -> Result<crate::run::profile::Report> {
    let onnx = run_dir.join("model.onnx");
    if !onnx.exists() {
        return Err(Error::Input(format!(
            "{} does not exist: run `nas-pipe export` first",
            onnx.display()
        )));
    }
    let card = crate::run::retrain::load_model(&run_dir.join("retrain"))
        .map(|t| t.card)
        .ok();
    let known = crate::stages::profile::Known {
        params: card.as_ref().map(|c| c.params),
        macs: card.as_ref().map(|c| c.macs),
    };
    let report = crate::stages::profile::run(rt, &onnx, plan, known, |_| {})?;
    crate::stages::profile::write(&report, run_dir)?;
    Ok(report)
}

/// The multi-trial search stage: latency measured in ONNX Runtime when the search needs it
/// (one cached file per architecture under `search/latency/`, or predicted from a per-op
/// table measured once, `search/latency-table.json`), and with `export_front` each front
/// point exported and profiled under `search/front/<n>/`.
pub fn trials(
    p: &Resolved,
    run_dir: &Path,
    device: &candle_core::Device,
    ort: &super::Ort,
    opts: &crate::stages::search::trials::Options,
) -> Result<crate::stages::search::trials::Outcome> {
    let plan = crate::stages::search::trials::Plan::of(p)?;
    let Some(pipeline::Search::Trials {
        latency: spec,
        export_front,
        ..
    }) = p.spec.search.as_deref()
    else {
        return Err(Error::Input(
            "the pipeline has no multi-trial search".into(),
        ));
    };
    let rt = || ort.as_ref().map_err(|e| Error::Runtime(e.clone())).copied();
    let dir = run_dir.join("search");
    let mut meter = if plan.needs_latency() {
        Some(OrtLatency {
            rt: rt()?,
            space: &p.search_space,
            space_hash: crate::stages::search::latency::space_hash(&p.space_texts, &p.search_space),
            cpu: crate::runtime::measure::Machine::current().cpu,
            plan: crate::stages::search::latency::Plan::from(spec.timing.value),
            method: spec.method,
            cache: crate::stages::search::latency::Cache::new(dir.join("latency")),
            table_path: dir.join("latency-table.json"),
            table: None,
        })
    } else {
        None
    };
    let mut exporter = if *export_front {
        Some(FrontExporter {
            rt: rt()?,
            options: export_options(p),
            plan: profile_plan(p),
            spec_hash: crate::stages::search::trials::spec_hash(p)?,
        })
    } else {
        None
    };
    crate::stages::search::trials::run(
        p,
        run_dir,
        device,
        meter
            .as_mut()
            .map(|m| m as &mut dyn crate::stages::search::trials::Latency),
        exporter
            .as_mut()
            .map(|x| x as &mut dyn crate::stages::search::trials::Exporter),
        opts,
    )
}

/// Latency in ONNX Runtime: the whole network measured (and cached), or predicted from the
/// per-op table.
struct OrtLatency<'a> {
    rt: &'static crate::runtime::Runtime,
    space: &'a crate::space::Space,
    space_hash: String,
    cpu: String,
    plan: crate::stages::search::latency::Plan,
    method: pipeline::LatencyMethod,
    cache: crate::stages::search::latency::Cache,
    table_path: PathBuf,
    table: Option<crate::stages::search::latency::Table>,
}

impl crate::stages::search::trials::Latency for OrtLatency<'_> {
    fn ms(&mut self, c: &crate::stages::search::evaluator::Candidate) -> Result<f64> {
        match self.method {
            pipeline::LatencyMethod::Measured => {
                let key = crate::stages::search::latency::Key::new(
                    &self.space_hash,
                    &c.genotype,
                    &self.rt.version,
                    &self.cpu,
                    self.plan,
                );
                let (l, _) = self.cache.get_or_measure(&key, || {
                    crate::stages::search::latency::measure(
                        self.rt,
                        self.space,
                        &c.resolved,
                        &self.plan,
                    )
                })?;
                Ok(l.p50)
            }
            pipeline::LatencyMethod::Table => {
                let table = match self.table.take() {
                    Some(t) => t,
                    None => crate::stages::search::latency::Table::for_space(
                        self.rt,
                        self.space,
                        &self.plan,
                        &self.table_path,
                    )?,
                };
                let ms =
                    crate::stages::search::latency::predict(&table, &self.space.build(&c.resolved));
                self.table = Some(table);
                ms
            }
        }
    }
}

/// Exports a front point with the pipeline's export options and profiles it with its
/// profile plan.
struct FrontExporter {
    rt: &'static crate::runtime::Runtime,
    options: crate::nets::export::Options,
    plan: crate::run::profile::Plan,
    spec_hash: String,
}

impl crate::stages::search::trials::Exporter for FrontExporter {
    fn export(
        &mut self,
        point: &crate::run::trials::Point,
        trained: crate::stages::search::evaluator::Trained,
        dir: &Path,
    ) -> Result<f64> {
        let meta = crate::nets::export::Metadata {
            spec_hash: self.spec_hash.clone(),
            genotype: point.genotype.clone(),
            mean: trained.mean,
            std: trained.std,
            classes: trained.classes,
        };
        let bytes = crate::nets::export::export(&trained.model, &meta, &self.options)?;
        let path = dir.join("model.onnx");
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        crate::fsutil::write_atomic(&path, &bytes)?;
        let known = crate::stages::profile::Known {
            params: Some(point.params),
            macs: Some(point.macs),
        };
        let report = crate::stages::profile::run(self.rt, &path, &self.plan, known, |_| {})?;
        crate::stages::profile::write(&report, dir)?;
        report
            .rows
            .first()
            .map(|r| r.latency_ms.p50)
            .ok_or_else(|| Error::Input(format!("{}: the profile has no rows", path.display())))
    }
}
