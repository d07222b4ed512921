//! The export stage: the retrained network rebuilt from the run folder, with its weights,
//! written as `model.onnx` with the pipeline's export options.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::run::Resolved;
use crate::run::RunDir;
use crate::spec::pipeline;

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
pub fn run(
    p: &Resolved,
    run_dir: &Path,
    weights: &str,
) -> Result<(PathBuf, crate::nets::export::Options, usize)> {
    let rdir = RunDir::new(run_dir).retrain();
    let opts = export_options(p);
    if !rdir.join(crate::run::dir::model_file::CARD).exists() {
        return Err(Error::Input(format!(
            "{} has no retrained model: run `nas-pipe train` first",
            rdir.display()
        )));
    }
    let wpath = crate::run::retrain::weights_path(&rdir, weights);
    crate::run::retrain::verify_model(run_dir, &rdir, &wpath)?;
    let trained = crate::run::retrain::load_model(&rdir)?;
    let model = crate::nets::model::Model::new(&trained.net, &candle_core::Device::Cpu, 0, false)
        .map_err(|e| {
        Error::Input(format!(
            "building the network: {}",
            crate::error::candle_message(&e)
        ))
    })?;
    crate::run::retrain::load_weights(&model, &wpath)?;
    // The hash the weights were trained under, else the pipeline's as it is now.
    let spec_hash = std::fs::read_to_string(rdir.join(crate::run::dir::model_file::STATE))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.get("spec_hash")?.as_str().map(String::from));
    let spec_hash = match spec_hash {
        Some(h) => h,
        None => crate::run::hash::retrain_hash(p, &trained.genotype)?,
    };
    let meta = crate::nets::export::Metadata {
        spec_hash,
        genotype: trained.genotype.to_ron(),
        mean: trained.card.mean.clone(),
        std: trained.card.std.clone(),
        classes: trained.card.classes.clone(),
        resize: p
            .spec
            .data
            .image_options()
            .map(|o| format!("{:?}", o.value.resize)),
    };
    let bytes = crate::nets::export::export(&model, &meta, &opts)?;
    let path = RunDir::new(run_dir).model_onnx();
    crate::fsutil::write_atomic(&path, &bytes).map_err(|e| {
        let _ = std::fs::remove_file(crate::fsutil::temp_path(&path));
        Error::Input(format!(
            "cannot write the ONNX model {}: {e}",
            path.display()
        ))
    })?;
    Ok((path, opts, bytes.len()))
}
