//! The validate stage: the exported ONNX model in ONNX Runtime against the retrained Candle
//! model (evaluation mode) on held-out test images. Measures the largest and mean absolute
//! logit difference, top-1 agreement, and both accuracies; the stage fails (exit code 1)
//! when the pipeline's `validate` tolerances are missed. Writes `validation.json` in the run
//! folder. A model whose graph input does not take the retrained network's images is
//! refused before any image is run.

use std::path::{Path, PathBuf};

use candle_core::Device;

use crate::data::{BatchConfig, Batcher, Normalize};
use crate::error::{Error, Result};
use crate::nets::model::{Mode, Model};
use crate::run::Resolved;
use crate::run::RunDir;
use crate::run::validation::Validation;
use crate::runtime::Session;
use crate::spec::space::Input;

/// Images per batch fed to both runtimes.
const BATCH: usize = 50;

/// Compares `onnx` with the weights `weights` of the model in `retrain_dir` on the first
/// `samples` test images of pipeline `p`.
pub fn compare(
    p: &Resolved,
    retrain_dir: &Path,
    weights: &Path,
    onnx: &Path,
    device: &Device,
    ort_lib: Option<&Path>,
) -> Result<Validation> {
    let Some(v) = &p.spec.validate else {
        return Err(Error::Input(format!(
            "pipeline \"{}\" has no `validate` section",
            p.spec.name.value
        )));
    };
    let trained = crate::run::retrain::load_model(retrain_dir)?;
    let model =
        Model::new(&trained.net, device, 0, false).map_err(candle("building the network"))?;
    crate::run::retrain::load_weights(&model, weights)?;
    let test = p.load_data(p.spec.seed)?.test;
    test.check_input(trained.card.input)?;
    let n = v.samples.value as usize;
    if n > test.len() {
        return Err(Error::Input(format!(
            "pipeline \"{}\": `validate: Validate(samples: {n})` asks for more images than the \
             test set's {}; set `samples` to at most {}",
            p.spec.name.value,
            test.len(),
            test.len()
        )));
    }
    let rt = crate::runtime::load(ort_lib)?;
    let mut session = crate::runtime::Session::from_file(rt, onnx, 1)?;
    takes_trained_images(&session, onnx, trained.card.input)?;
    let norm = Normalize::new(trained.card.mean.clone(), trained.card.std.clone())?;
    let batches = Batcher::new(
        test,
        (0..n).collect(),
        norm,
        BatchConfig {
            batch_size: BATCH,
            shuffle: false,
            augment: Default::default(),
            seed: p.spec.seed,
            stream: 0,
        },
    )?;
    let epoch = batches.epoch(0, device);
    let (mut max, mut sum, mut count) = (0f64, 0f64, 0usize);
    let (mut agree, mut ort_right, mut candle_right) = (0usize, 0usize, 0usize);
    for b in 0..epoch.batches() {
        let batch = epoch.batch(b).map_err(candle("making a batch"))?;
        let ours = model
            .forward(&batch.images, Mode::Eval)
            .and_then(|o| o.logits.to_vec2::<f32>())
            .map_err(candle("running the Candle model"))?;
        let images = batch
            .images
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(candle("reading a batch"))?;
        let theirs = session.run(&images, batch.images.dims())?;
        let classes = ours.first().map_or(0, Vec::len);
        if theirs.shape != [batch.size, classes] {
            return Err(Error::Input(format!(
                "{}: ONNX Runtime returned logits of shape {:?}, Candle [{}, {classes}]",
                onnx.display(),
                theirs.shape,
                batch.size
            )));
        }
        let labels = batch
            .labels
            .to_vec1::<u32>()
            .map_err(candle("reading labels"))?;
        for (i, row) in ours.iter().enumerate() {
            let other = &theirs.data[i * classes..(i + 1) * classes];
            for (a, b) in row.iter().zip(other) {
                let d = (*a as f64 - *b as f64).abs();
                let d = if d.is_nan() { f64::INFINITY } else { d };
                max = max.max(d);
                sum += d;
                count += 1;
            }
            let (pa, pb) = (argmax(row), argmax(other));
            agree += usize::from(pa == pb);
            candle_right += usize::from(pa == labels[i] as usize);
            ort_right += usize::from(pb == labels[i] as usize);
        }
    }
    let frac = |k: usize| k as f64 / n.max(1) as f64;
    let top1_agreement = frac(agree);
    Ok(Validation {
        model: onnx.display().to_string(),
        weights: weights.display().to_string(),
        samples: n,
        max_abs_diff: max,
        mean_abs_diff: sum / count.max(1) as f64,
        top1_agreement,
        ort_accuracy: frac(ort_right),
        candle_accuracy: frac(candle_right),
        max_abs_diff_allowed: v.max_abs_diff.value,
        min_top1_agreement: v.min_top1_agreement.value,
        passed: max <= v.max_abs_diff.value && top1_agreement >= v.min_top1_agreement.value,
        ort_version: rt.version.clone(),
    })
}

/// The validate stage of a run folder: `model.onnx` against `retrain/last.safetensors`;
/// writes `validation.json`.
pub fn run(
    p: &Resolved,
    run_dir: &Path,
    device: &Device,
    ort_lib: Option<&Path>,
) -> Result<Validation> {
    let retrain = RunDir::new(run_dir).retrain();
    let onnx: PathBuf = RunDir::new(run_dir).model_onnx();
    if !onnx.exists() {
        return Err(Error::Input(format!(
            "{} does not exist: run `nas-pipe export` first",
            onnx.display()
        )));
    }
    let weights = retrain.join(crate::run::dir::model_file::LAST);
    crate::run::retrain::verify_model(run_dir, &retrain, &weights)?;
    crate::run::outputs::verify(run_dir, std::slice::from_ref(&onnx))?;
    let v = compare(p, &retrain, &weights, &onnx, device, ort_lib)?;
    crate::run::checkpoint::write_json(&RunDir::new(run_dir).validation(), &v)?;
    Ok(v)
}

/// Refuses, before any image is run, a model whose graph input does not take the images the
/// network was retrained on (a model edited or exported from another run).
fn takes_trained_images(session: &Session, onnx: &Path, input: Input) -> Result<()> {
    let (c, s) = (input.channels as usize, input.size as usize);
    match session.refuses_images([c, s, s]) {
        None => Ok(()),
        Some(why) => Err(Error::Data {
            path: onnx.to_path_buf(),
            message: format!(
                "the network was retrained on {c}×{s}×{s} images but {why}\n  = help: \
                 export the model again with `nas-pipe export PIPELINE`"
            ),
        }),
    }
}

fn argmax(xs: &[f32]) -> usize {
    xs.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
            if v > bv { (i, v) } else { (bi, bv) }
        })
        .0
}

fn candle(what: &str) -> impl Fn(candle_core::Error) -> Error + '_ {
    move |e| Error::Input(format!("{what}: {}", crate::error::candle_message(&e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_differences_survive_the_json() {
        let v = Validation {
            model: "m.onnx".into(),
            weights: "w".into(),
            samples: 2,
            max_abs_diff: f64::INFINITY,
            mean_abs_diff: f64::NAN,
            top1_agreement: 0.5,
            ort_accuracy: 0.5,
            candle_accuracy: 0.5,
            max_abs_diff_allowed: 1e-4,
            min_top1_agreement: 0.999,
            passed: false,
            ort_version: "1.32.0".into(),
        };
        let text = serde_json::to_string(&v).unwrap();
        assert!(text.contains("\"max_abs_diff\":null"), "{text}");
        let back: Validation = serde_json::from_str(&text).unwrap();
        assert_eq!(back.max_abs_diff, f64::INFINITY);
        assert_eq!(back.mean_abs_diff, f64::INFINITY);
        let fine = Validation {
            max_abs_diff: 2.5e-7,
            mean_abs_diff: 1e-8,
            ..v
        };
        let back: Validation =
            serde_json::from_str(&serde_json::to_string(&fine).unwrap()).unwrap();
        assert_eq!(back, fine);
    }
}
