//! The multi-trial search as a run performs it: the search stage composed with ONNX Runtime
//! latency (measured and cached, or predicted from a per-op table) and, with
//! `export_front`, the export and profile of each point of the Pareto front.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::run::Resolved;
use crate::run::RunDir;
use crate::spec::pipeline;

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
    let dir = RunDir::new(run_dir).search();
    let mut meter = if plan.needs_latency() {
        Some(OrtLatency {
            rt: rt()?,
            space: &p.search_space,
            space_hash: crate::stages::search::latency::space_hash(&p.space_texts, &p.search_space),
            cpu: crate::runtime::measure::Machine::current().cpu,
            plan: crate::stages::search::latency::Plan::from(spec.timing.value),
            method: spec.method,
            cache: crate::stages::search::latency::Cache::new(dir.join("latency")),
            table_path: RunDir::new(run_dir).latency_table(),
            table: None,
        })
    } else {
        None
    };
    let mut exporter = if *export_front {
        Some(FrontExporter {
            rt: rt()?,
            options: crate::stages::export::export_options(p),
            plan: crate::stages::profile::plan_of(p),
            spec_hash: crate::run::hash::search_hash(p)?,
            resize: p
                .spec
                .data
                .image_options()
                .map(|o| format!("{:?}", o.value.resize)),
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
    /// The image source's resize policy, recorded in each model's metadata.
    resize: Option<String>,
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
            resize: self.resize.clone(),
        };
        let bytes = crate::nets::export::export(&trained.model, &meta, &self.options)?;
        let path = dir.join(crate::run::dir::MODEL_ONNX);
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
