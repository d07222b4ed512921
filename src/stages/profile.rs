//! The profile stage: ONNX Runtime latency and throughput of a model for each batch size ×
//! intra-op thread count of a [`Plan`], with the model's size and the machine it ran on,
//! written atomically as `profile.json` and `profile.md`.
//!
//! Each thread count gets its own session (the count is fixed when a session is built);
//! each batch size then gets `warmup` untimed runs and `runs` timed ones on the same
//! deterministic input. Latency is wall time around one `Session::run` call, output copy
//! included.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use crate::run::RunDir;
use crate::run::profile::{Model, Plan, Report, Row, SCHEMA_VERSION, join};
use crate::runtime::measure::{Latency, Machine, pseudo_random};
use crate::runtime::{self, Runtime, Session, model_file, shape_text};
use crate::space::show::thousands;

/// What to measure. Built once from a pipeline's `profile` section or the command line;
/// Counts the caller knows better than the model file (from the architecture).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Known {
    pub params: Option<u64>,
    pub macs: Option<u64>,
}

/// Profiles the ONNX model at `path` on `rt` following `plan`; `on_row` sees each row as
/// it is measured.
pub fn run(
    rt: &'static Runtime,
    path: &Path,
    plan: &Plan,
    known: Known,
    mut on_row: impl FnMut(&Row),
) -> Result<Report> {
    let bytes = model_file::read(path)?;
    let mut plan = plan.clone();
    let mut notes = Vec::new();
    let mut rows = Vec::new();
    let mut model = None;
    for &threads in &plan.threads.clone() {
        let mut session = Session::from_file(rt, path, threads)?;
        let (sample, batch) = input_shape(path, &session)?;
        if let Some(b) = batch
            && plan.batch_sizes != [b]
        {
            notes.push(format!(
                "the model fixes the batch at {b}; profiled batch {b} instead of {}",
                join(&plan.batch_sizes)
            ));
            plan.batch_sizes = vec![b];
        }
        if model.is_none() {
            let input = &session.inputs()[0];
            model = Some(model_info(path, &bytes, known, input)?);
        }
        for &b in &plan.batch_sizes {
            let mut shape = vec![b];
            shape.extend(&sample);
            let input = pseudo_random(input_elems(path, &shape)?);
            for _ in 0..plan.warmup {
                session.run(&input, &shape)?;
            }
            let mut ms = Vec::with_capacity(plan.runs);
            for _ in 0..plan.runs {
                let t = Instant::now();
                session.run(&input, &shape)?;
                ms.push(t.elapsed().as_secs_f64() * 1e3);
            }
            let latency = Latency::of(&ms);
            let row = Row {
                batch: b,
                threads,
                latency_ms: latency,
                images_per_s: b as f64 / (latency.mean / 1e3),
            };
            on_row(&row);
            rows.push(row);
        }
    }
    notes.dedup();
    let model =
        model.ok_or_else(|| Error::Input("the profile plan has no thread counts".into()))?;
    Ok(Report {
        version: SCHEMA_VERSION,
        model,
        ort_version: rt.version.clone(),
        execution_provider: runtime::EXECUTION_PROVIDER.to_string(),
        machine: Machine::current(),
        plan,
        rows,
        notes,
    })
}

/// The per-image input shape (after the batch dimension) and the batch size the model
/// fixes, if any. The model must have one `f32` input whose other dimensions are fixed.
/// Elements of an input of `shape`, refused before anything is allocated when its f32
/// values alone (the activations will need more) would take more than half of the memory
/// this process may use.
fn input_elems(path: &Path, shape: &[usize]) -> Result<usize> {
    let elems = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    let limit = crate::runtime::measure::memory_limit().unwrap_or(u64::MAX) / 2;
    match elems {
        Some(n) if (n as u64).saturating_mul(4) <= limit => Ok(n),
        _ => Err(Error::Data {
            path: path.to_path_buf(),
            message: format!(
                "an input of shape [{}] needs {} of f32 values, more than half of this machine's memory; profile a smaller batch (--batch-sizes) or a model with a smaller input",
                shape
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                elems.map_or("more than 2^64 bytes".into(), |n| {
                    crate::runtime::measure::human_bytes((n as u64).saturating_mul(4))
                })
            ),
        }),
    }
}

fn input_shape(path: &Path, s: &Session) -> Result<(Vec<usize>, Option<usize>)> {
    let bad = |m: String| Error::Data {
        path: path.to_path_buf(),
        message: m,
    };
    let [input] = s.inputs() else {
        return Err(bad(format!(
            "the model has {} inputs; profile feeds models with exactly one",
            s.inputs().len()
        )));
    };
    if !input.is_f32 {
        return Err(bad(format!(
            "input {:?} holds {}; profile feeds f32",
            input.name, input.element_type
        )));
    }
    let Some((batch, rest)) = input.shape.split_first() else {
        return Err(bad(format!(
            "input {:?} is a scalar; profile needs a batch dimension first",
            input.name
        )));
    };
    let sample: Option<Vec<usize>> = rest.iter().copied().collect();
    let sample = sample.ok_or_else(|| {
        bad(format!(
            "input {:?} has shape {}; only the batch (first) dimension may be dynamic",
            input.name,
            shape_text(&input.shape)
        ))
    })?;
    if *batch == Some(0) {
        return Err(bad(format!("input {:?} has a batch of 0", input.name)));
    }
    Ok((sample, *batch))
}

fn model_info(path: &Path, bytes: &[u8], known: Known, input: &runtime::Input) -> Result<Model> {
    let (params, params_from) = match known.params {
        Some(p) => (Some(p), Some("architecture".to_string())),
        None => {
            let i = model_file::initializers(bytes).map_err(|m| Error::Data {
                path: path.to_path_buf(),
                message: format!("reading the initializers: {m}"),
            })?;
            (Some(i.float_elements), Some("initializers".to_string()))
        }
    };
    Ok(Model {
        path: path.to_path_buf(),
        file_bytes: bytes.len() as u64,
        params,
        params_from,
        macs: known.macs,
        input_name: input.name.clone(),
        input_shape: input.shape.clone(),
    })
}

/// The Markdown report: a header with the model, runtime and machine, then one table row
/// per batch size × thread count.
pub fn markdown(r: &Report) -> String {
    let name = r.model.path.file_name().map_or_else(
        || r.model.path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let mut o = format!("# Profile: {name}\n\n");
    o += &format!(
        "- runtime: ONNX Runtime {}, {}\n",
        r.ort_version, r.execution_provider
    );
    o += &format!("- machine: {}, {} cores\n", r.machine.cpu, r.machine.cores);
    let params = match (r.model.params, &r.model.params_from) {
        (Some(p), Some(from)) => format!("{} params ({from})", thousands(p)),
        (Some(p), None) => format!("{} params", thousands(p)),
        _ => "params unknown".into(),
    };
    let macs = r.model.macs.map_or_else(
        || "MACs unknown".into(),
        |m| format!("{} MACs", thousands(m)),
    );
    o += &format!(
        "- model: {} bytes, {params}, {macs}; input `{}` {}\n",
        thousands(r.model.file_bytes),
        r.model.input_name,
        shape_text(&r.model.input_shape)
    );
    o += &format!(
        "- runs: {} warm-up, {} timed per row\n",
        r.plan.warmup, r.plan.runs
    );
    for n in &r.notes {
        o += &format!("- note: {n}\n");
    }
    o +=
        "\n| batch | threads | mean ms | p50 ms | p90 ms | p99 ms | min ms | max ms | images/s |\n";
    o += "|------:|--------:|--------:|-------:|-------:|-------:|-------:|-------:|---------:|\n";
    for row in &r.rows {
        let l = &row.latency_ms;
        o += &format!(
            "| {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {} |\n",
            row.batch,
            row.threads,
            l.mean,
            l.p50,
            l.p90,
            l.p99,
            l.min,
            l.max,
            crate::progress::rate_text(row.images_per_s)
        );
    }
    o
}

/// Writes `profile.json` and `profile.md` into `dir` (created if needed), each atomically.
/// Returns the two paths.
pub fn write(r: &Report, dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let json = serde_json::to_string_pretty(r)
        .map_err(|e| Error::Input(format!("cannot serialise the profile: {e}")))?;
    let jp = dir.join(crate::run::dir::PROFILE_JSON);
    let mp = dir.join(crate::run::dir::PROFILE_MD);
    write_atomic(&jp, format!("{json}\n").as_bytes())?;
    write_atomic(&mp, markdown(r).as_bytes())?;
    Ok((jp, mp))
}

/// The profile plan of a pipeline: its `profile` section, else the defaults.
pub fn plan_of(p: &crate::run::Resolved) -> crate::run::profile::Plan {
    match &p.spec.profile {
        Some(spec) => crate::run::profile::Plan::from_spec(spec),
        None => crate::run::profile::Plan::default(),
    }
}

/// Profiles `run_dir/model.onnx` with `plan` on `rt`, with the architecture's parameters
/// and MACs from the model card, and writes `profile.json` and `profile.md` into `run_dir`.
pub fn run_folder(
    run_dir: &Path,
    plan: &crate::run::profile::Plan,
    rt: &'static crate::runtime::Runtime,
) -> Result<crate::run::profile::Report> {
    let onnx = RunDir::new(run_dir).model_onnx();
    if !onnx.exists() {
        return Err(Error::Input(format!(
            "{} does not exist: run `nas-pipe export` first",
            onnx.display()
        )));
    }
    let retrain = RunDir::new(run_dir).retrain();
    crate::run::outputs::verify(
        run_dir,
        &[
            onnx.clone(),
            retrain.join(crate::run::dir::model_file::CARD),
        ],
    )?;
    let card = crate::run::retrain::load_model(&retrain)
        .map(|t| t.card)
        .ok();
    let known = Known {
        params: card.as_ref().map(|c| c.params),
        macs: card.as_ref().map(|c| c.macs),
    };
    let report = run(rt, &onnx, plan, known, |_| {})?;
    write(&report, run_dir)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_from_the_smoke_pipeline_and_overrides() {
        let mut sources = crate::spec::Sources::default();
        let (_, p) = sources
            .load::<crate::spec::pipeline::Pipeline>(Path::new("pipelines/smoke.ron"))
            .unwrap();
        let plan = Plan::from_spec(p.profile.as_ref().unwrap());
        assert_eq!(
            plan,
            Plan {
                batch_sizes: vec![1],
                threads: vec![1],
                warmup: 2,
                runs: 10
            }
        );
        let p2 = plan
            .clone()
            .with_overrides(Some(&[1, 32][..]), None, Some(0), None)
            .unwrap();
        assert_eq!(
            (p2.batch_sizes, p2.threads, p2.warmup, p2.runs),
            (vec![1, 32], vec![1], 0, 10)
        );
        assert_eq!(
            plan.clone()
                .with_overrides(Some(&[1, 0][..]), None, None, None)
                .unwrap_err()
                .to_string(),
            "--batch-sizes must be a comma-separated list of numbers ≥ 1, got 1,0"
        );
        assert_eq!(
            plan.with_overrides(None, None, None, Some(0))
                .unwrap_err()
                .to_string(),
            "--runs must be at least 1"
        );
    }

    fn report() -> Report {
        Report {
            version: SCHEMA_VERSION,
            model: Model {
                path: PathBuf::from("exports/x/model.onnx"),
                file_bytes: 1048,
                params: Some(162),
                params_from: Some("initializers".into()),
                macs: None,
                input_name: "input".into(),
                input_shape: vec![None, Some(3), Some(8), Some(8)],
            },
            ort_version: "1.32.0".into(),
            execution_provider: "CPUExecutionProvider".into(),
            machine: Machine {
                cpu: "Test CPU".into(),
                cores: 2,
            },
            plan: Plan {
                batch_sizes: vec![1, 32],
                threads: vec![1],
                warmup: 20,
                runs: 200,
            },
            rows: vec![
                Row {
                    batch: 1,
                    threads: 1,
                    latency_ms: Latency::of(&[0.5, 1.0, 1.5]),
                    images_per_s: 1000.0,
                },
                Row {
                    batch: 32,
                    threads: 1,
                    latency_ms: Latency::of(&[4.0]),
                    images_per_s: 8000.0,
                },
            ],
            notes: vec!["a note".into()],
        }
    }

    #[test]
    fn markdown_table() {
        assert_eq!(
            markdown(&report()),
            "# Profile: model.onnx

- runtime: ONNX Runtime 1.32.0, CPUExecutionProvider
- machine: Test CPU, 2 cores
- model: 1,048 bytes, 162 params (initializers), MACs unknown; input `input` [batch, 3, 8, 8]
- runs: 20 warm-up, 200 timed per row
- note: a note

| batch | threads | mean ms | p50 ms | p90 ms | p99 ms | min ms | max ms | images/s |
|------:|--------:|--------:|-------:|-------:|-------:|-------:|-------:|---------:|
| 1 | 1 | 1.000 | 1.000 | 1.400 | 1.490 | 0.500 | 1.500 | 1,000 |
| 32 | 1 | 4.000 | 4.000 | 4.000 | 4.000 | 4.000 | 4.000 | 8,000 |
"
        );
    }

    #[test]
    fn reports_are_written_atomically_as_json_and_markdown() {
        let tmp = crate::fsutil::TempDir::new("profile");
        let dir = tmp.join("profile");
        let (j, m) = write(&report(), &dir).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&j).unwrap()).unwrap();
        assert_eq!(v["version"], 1);
        assert_eq!(v["model"]["params"], 162);
        assert_eq!(v["model"]["macs"], serde_json::Value::Null);
        assert_eq!(v["model"]["input_shape"][0], serde_json::Value::Null);
        assert_eq!(v["rows"][1]["latency_ms"]["p99"], 4.0);
        assert_eq!(std::fs::read_to_string(&m).unwrap(), markdown(&report()));
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }
}
