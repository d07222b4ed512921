//! `nas-pipe device-check`: one device against the CPU, in one go, from the binary alone
//! (the spaces it needs are compiled in; nothing is read or downloaded).
//!
//! - **Parity**: every CPU kernel, every op of the [`Op`] vocabulary at strides 1 and 2
//!   (training-mode BN), a DARTS supernet and a discrete DARTS_V2 network, each forward and
//!   backward on the CPU (with the CPU kernels) and on the device, with the same inputs and
//!   weights; the largest absolute difference of the output and of any gradient, against a
//!   tolerance relative to the values' size. On the CPU itself the device side runs with
//!   [`kernels::with_compositions`], so that the check compares the CPU kernels with what
//!   runs on CUDA.
//! - **Timing**: a DARTS search step (the supernet at C = 16, 8 cells, forward, backward and
//!   SGD, batch 16 and 64) and a DARTS_V2 retraining step (C = 16, 8 cells, batch 64), the
//!   median of repeated runs after warm-up, on the device and on the CPU.
//!
//! [`Report`] is what `--json` writes.

use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use rand::SeedableRng;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::kernels;
use crate::nets::model::{Mode, Model};
use crate::nets::optim::Sgd;
use crate::nets::supernet::Supernet;
use crate::nets::train::Recipe;
use crate::nets::train::Trainer;
use crate::nn::Store;
use crate::ops::{BnMode, Op};
use crate::space::genotype::Genotype;
use crate::space::{self, Overrides, Space};
use crate::spec::space::{Input, SearchSpace};
use crate::spec::{Source, Sources};

/// The DARTS space, compiled into the binary so that the check needs no files.
const DARTS: &str = include_str!("../../schemas/darts.ron");

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Timed runs per step; 0 skips the timings.
    pub repeats: usize,
    /// Untimed runs before them.
    pub warmup: usize,
    /// Time the steps on the CPU too.
    pub cpu_timing: bool,
}

/// One parity row: the largest absolute differences between the CPU and the device.
#[derive(Debug, Clone, Serialize)]
pub struct Parity {
    pub name: String,
    /// max |device − cpu| over the output.
    pub forward: f64,
    /// max |device − cpu| over every gradient.
    pub gradients: f64,
    /// The gradient (or `forward`) where the relative difference is largest.
    pub worst: String,
    /// Each difference may be at most `tolerance · max(1, max |cpu value|)` of its tensor.
    pub tolerance: f64,
    pub ok: bool,
}

/// One timed step: median seconds on the device and (when timed) on the CPU.
#[derive(Debug, Clone, Serialize)]
pub struct Timing {
    pub name: String,
    pub what: String,
    pub device_seconds: Option<f64>,
    pub cpu_seconds: Option<f64>,
    /// cpu_seconds / device_seconds.
    pub speedup: Option<f64>,
    pub runs: usize,
    pub warmup: usize,
    /// Why a side has no time.
    pub error: Option<String>,
}

/// Everything the check found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub nas_pipe: String,
    pub device: String,
    pub cpu: String,
    /// The compute capability the binary's CUDA kernels are for.
    pub kernels_for: Option<String>,
    pub parity: Vec<Parity>,
    pub timings: Vec<Timing>,
    /// Every parity row within tolerance and every step timed.
    pub ok: bool,
    pub seconds: f64,
}

/// Named tensors a case computes: the output first, then the gradients.
type Named = Vec<(String, Tensor)>;
type Run = Box<dyn Fn(&Device) -> candle_core::Result<Named>>;

/// One parity case.
struct Case {
    name: String,
    tolerance: f64,
    run: Run,
}

/// Runs the check of `device`, printing each row as it is done through `line`.
pub fn run(device: &Device, opts: &Options, mut line: impl FnMut(&str)) -> Result<Report> {
    let start = Instant::now();
    let fail = |what: &str| {
        let what = what.to_string();
        move |e: candle_core::Error| Error::Runtime(format!("device-check: {what}: {e}"))
    };
    line(&format!(
        "device-check: {} against {}",
        crate::device::describe(device),
        crate::device::describe(&Device::Cpu)
    ));
    line(&format!(
        "{:<46} {:>10} {:>10} {:>8}  worst",
        "parity (max |device − cpu|)", "forward", "gradients", ""
    ));
    // A case or step that fails (an error, or a panic inside Candle) is recorded and the
    // check goes on, so that one run on a borrowed GPU reports every row.
    let mut parity = Vec::new();
    for case in cases().map_err(fail("building the cases"))? {
        let p = match guarded(|| compare(&case, device)) {
            Ok(p) => p,
            Err(e) => Parity {
                name: case.name.clone(),
                forward: f64::NAN,
                gradients: f64::NAN,
                worst: format!("error: {e}"),
                tolerance: case.tolerance,
                ok: false,
            },
        };
        line(&format!(
            "{:<46} {:>10.2e} {:>10.2e} {:>8}  {}",
            p.name,
            p.forward,
            p.gradients,
            if p.ok { "ok" } else { "FAILED" },
            p.worst
        ));
        parity.push(p);
    }
    let mut timings = Vec::new();
    if opts.repeats > 0 {
        line(&format!(
            "{:<46} {:>10} {:>10} {:>8}",
            "timing (median seconds)", "device", "cpu", "speedup"
        ));
        for (name, what, build) in steps() {
            let warmup = opts.warmup;
            let t = |dev: &Device| {
                guarded(|| {
                    let mut step = build(dev)?;
                    crate::nets::timing::median_seconds(dev, warmup, opts.repeats, &mut *step)
                })
            };
            let mut errors = Vec::new();
            let mut keep = |r: std::result::Result<f64, String>, on: &str| {
                r.map_err(|e| errors.push(format!("on {on}: {e}"))).ok()
            };
            let device_seconds = keep(t(device), "the device");
            let cpu_seconds = if opts.cpu_timing {
                keep(t(&Device::Cpu), "the cpu")
            } else {
                None
            };
            let speedup = cpu_seconds.zip(device_seconds).map(|(c, d)| c / d);
            let secs = |s: Option<f64>| s.map_or("-".into(), |s| format!("{s:.4}"));
            line(&format!(
                "{:<46} {:>10} {:>10} {:>8}  {}",
                name,
                secs(device_seconds),
                secs(cpu_seconds),
                speedup.map_or("-".into(), |s| format!("{s:.1}x")),
                errors.join("; ")
            ));
            timings.push(Timing {
                name: name.into(),
                what: what.into(),
                device_seconds,
                cpu_seconds,
                speedup,
                runs: opts.repeats,
                warmup,
                error: (!errors.is_empty()).then(|| errors.join("; ")),
            });
        }
    }
    let ok = parity.iter().all(|p| p.ok) && timings.iter().all(|t| t.error.is_none());
    Ok(Report {
        nas_pipe: env!("CARGO_PKG_VERSION").into(),
        device: crate::device::describe(device),
        cpu: crate::device::describe(&Device::Cpu),
        kernels_for: crate::device::built_compute_cap().map(String::from),
        parity,
        timings,
        ok,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// `f`, with an error or a panic turned into its message.
fn guarded<T>(f: impl FnOnce() -> candle_core::Result<T>) -> std::result::Result<T, String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(p) => Err(format!(
            "panicked: {}",
            p.downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| p.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)")
        )),
    }
}

/// Writes `report` as pretty JSON to `path` (through a temporary file).
pub fn write_json(report: &Report, path: &Path) -> Result<()> {
    let text = serde_json::to_string_pretty(report)
        .map_err(|e| Error::Runtime(format!("device-check: JSON: {e}")))?;
    crate::fsutil::write_atomic(path, format!("{text}\n").as_bytes())
}

/// The case on the CPU (CPU kernels) and on `device` (its own path; the compositions when
/// `device` is the CPU), compared tensor by tensor.
fn compare(case: &Case, device: &Device) -> candle_core::Result<Parity> {
    let want = (case.run)(&Device::Cpu)?;
    let got = if device.is_cpu() {
        kernels::with_compositions(|| (case.run)(device))?
    } else {
        (case.run)(device)?
    };
    if want.len() != got.len() {
        candle_core::bail!(
            "{} tensors on the CPU, {} on the device",
            want.len(),
            got.len()
        )
    }
    let (mut forward, mut gradients) = (0f64, 0f64);
    let (mut worst, mut worst_ratio, mut ok) = (String::new(), -1f64, true);
    for (i, ((name, w), (_, g))) in want.iter().zip(&got).enumerate() {
        let (w, g) = (host(w)?, host(g)?);
        if w.len() != g.len() {
            candle_core::bail!(
                "{name}: {} values on the CPU, {} on the device",
                w.len(),
                g.len()
            )
        }
        let scale = w.iter().fold(1f64, |m, v| m.max(v.abs()));
        let diff = w
            .iter()
            .zip(&g)
            .map(|(a, b)| {
                if a.is_nan() && b.is_nan() {
                    0.0
                } else {
                    (a - b).abs()
                }
            })
            .fold(0f64, |m, d| {
                if d.is_nan() || m.is_nan() {
                    f64::NAN
                } else {
                    m.max(d)
                }
            });
        let ratio = if diff.is_nan() {
            f64::INFINITY
        } else {
            diff / scale
        };
        ok &= ratio <= case.tolerance;
        if ratio > worst_ratio {
            (worst, worst_ratio) = (name.clone(), ratio);
        }
        if i == 0 {
            forward = diff;
        } else {
            gradients = gradients.max(diff);
        }
    }
    Ok(Parity {
        name: case.name.clone(),
        forward,
        gradients,
        worst,
        tolerance: case.tolerance,
        ok,
    })
}

fn host(t: &Tensor) -> candle_core::Result<Vec<f64>> {
    t.to_device(&Device::Cpu)?
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()
}

/// Seeded uniform values in [−1, 1) on the CPU, f32.
fn uniform(dims: &[usize], seed: u64) -> candle_core::Result<Tensor> {
    kernels::probe::uniform(dims, DType::F32, seed)
}

/// Pairwise distinct values (no ties in any pooling window), f32.
fn distinct(dims: &[usize], seed: u64) -> candle_core::Result<Tensor> {
    kernels::probe::distinct(dims, DType::F32, seed)
}

/// `f` of the CPU `inputs` moved to `dev`, and the gradients of `Σ f ⊙ r` (r seeded) with
/// respect to each input.
fn with_grads(
    dev: &Device,
    inputs: &[Tensor],
    f: impl Fn(&[Tensor]) -> candle_core::Result<Tensor>,
) -> candle_core::Result<Named> {
    let on_dev = inputs
        .iter()
        .map(|t| t.to_device(dev))
        .collect::<candle_core::Result<Vec<_>>>()?;
    let (out, grads) = kernels::probe::forward_grads(f, &on_dev, 99)?;
    let mut named = vec![("forward".to_string(), out)];
    named.extend(
        grads
            .into_iter()
            .enumerate()
            .map(|(i, g)| (format!("input {i}"), g)),
    );
    Ok(named)
}

/// Every parity case: the kernels, the ops, and two whole networks.
fn cases() -> candle_core::Result<Vec<Case>> {
    let mut v: Vec<Case> = Vec::new();
    let mut kernel = |name: String, inputs: Vec<Tensor>, f: Run2| {
        v.push(Case {
            name,
            tolerance: 1e-5,
            run: Box::new(move |dev| with_grads(dev, &inputs, |t| f(t))),
        });
    };
    type Run2 = Box<dyn Fn(&[Tensor]) -> candle_core::Result<Tensor>>;
    for (k, s) in [(3, 1), (3, 2), (5, 1)] {
        let p = k / 2;
        kernel(
            format!("kernel max_pool2d k{k} s{s} p{p}"),
            vec![distinct(&[4, 8, 12, 12], 1)?],
            Box::new(move |t| kernels::max_pool2d(&t[0], k, s, p)),
        );
        kernel(
            format!("kernel avg_pool2d k{k} s{s} p{p}"),
            vec![uniform(&[4, 8, 12, 12], 2)?],
            Box::new(move |t| kernels::avg_pool2d(&t[0], k, s, p)),
        );
    }
    for (k, s, d) in [
        (3, 1, 1),
        (3, 2, 1),
        (5, 1, 1),
        (5, 2, 1),
        (3, 1, 2),
        (5, 2, 2),
    ] {
        let p = d * (k - 1) / 2;
        kernel(
            format!("kernel depthwise k{k} s{s} d{d}"),
            vec![uniform(&[4, 8, 12, 12], 3)?, uniform(&[8, 1, k, k], 4)?],
            Box::new(move |t| kernels::depthwise_conv2d(&t[0], &t[1], s, p, d)),
        );
    }
    for (k, s) in [(1, 1), (1, 2), (3, 1), (3, 2)] {
        kernel(
            format!("kernel conv2d k{k} s{s}"),
            vec![uniform(&[4, 8, 12, 12], 5)?, uniform(&[6, 8, k, k], 6)?],
            Box::new(move |t| kernels::conv2d(&t[0], &t[1], s, k / 2, 1)),
        );
    }
    kernel(
        "kernel relu".into(),
        vec![uniform(&[4, 8, 12, 12], 7)?],
        Box::new(|t| kernels::relu(&t[0])),
    );
    kernel(
        "kernel batch_norm train".into(),
        vec![
            uniform(&[4, 8, 12, 12], 8)?,
            uniform(&[8], 9)?,
            uniform(&[8], 10)?,
        ],
        Box::new(|t| Ok(kernels::batch_norm_train(&t[0], Some(&t[1]), Some(&t[2]), 1e-5)?.0)),
    );
    kernel(
        "kernel weighted_sum".into(),
        vec![
            uniform(&[4, 8, 12, 12], 16)?,
            uniform(&[4, 8, 12, 12], 17)?,
            uniform(&[4, 8, 12, 12], 18)?,
            uniform(&[5], 19)?,
        ],
        Box::new(|t| kernels::weighted_sum(&t[..3], &t[3], &[0, 3, 4])),
    );
    // Evaluation-mode BN is not differentiated: the output only.
    let bn_eval = [
        uniform(&[4, 8, 12, 12], 11)?,
        uniform(&[8], 12)?,
        uniform(&[8], 13)?,
        uniform(&[8], 14)?,
        (uniform(&[8], 15)?.abs()? + 0.5)?,
    ];
    v.push(Case {
        name: "kernel batch_norm eval".into(),
        tolerance: 1e-5,
        run: Box::new(move |dev| {
            let t = bn_eval
                .iter()
                .map(|t| t.to_device(dev))
                .collect::<candle_core::Result<Vec<_>>>()?;
            let y = kernels::batch_norm_eval(&t[0], &t[3], &t[4], Some(&t[1]), Some(&t[2]), 1e-5)?;
            Ok(vec![("forward".into(), y)])
        }),
    });
    for &op in Op::ALL {
        for stride in [1usize, 2] {
            v.push(Case {
                name: format!("op {} s{stride}", op.describe()),
                tolerance: 1e-4,
                run: Box::new(move |dev| op_case(op, stride, dev)),
            });
        }
    }
    v.push(Case {
        name: "network DARTS supernet (C=8, 5 cells)".into(),
        tolerance: 1e-3,
        run: Box::new(supernet_case),
    });
    v.push(Case {
        name: "network DARTS_V2 (C=8, 5 cells, drop path 0.2)".into(),
        tolerance: 1e-3,
        run: Box::new(model_case),
    });
    Ok(v)
}

/// One op at `stride`, 8 → 8 channels, BN in training mode with affine parameters, pools
/// followed by BN as in the supernet: the output and the gradients of the input and of
/// every parameter.
fn op_case(op: Op, stride: usize, dev: &Device) -> candle_core::Result<Named> {
    let store = Store::with_dtype(dev, DType::F32, 3);
    let bn = BnMode {
        affine: true,
        pool_bn: true,
    };
    let m = op
        .build(&store.root(), 8, 8, stride, bn)
        .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    let x = Var::from_tensor(&uniform(&[4, 8, 12, 12], 21)?.to_device(dev)?)?;
    let y = m.forward(x.as_tensor(), true)?;
    let r = uniform(y.dims(), 99)?.to_device(dev)?;
    let grads = (&y * &r)?.sum_all()?.backward()?;
    let mut named = vec![("forward".to_string(), y)];
    let mut vars = vec![("input".to_string(), x)];
    vars.extend(store.params());
    for (name, v) in vars {
        if let Some(g) = grads.get(v.as_tensor()) {
            named.push((name, g.clone()));
        }
    }
    Ok(named)
}

/// The gradients of `loss` for every parameter of `stores`, after the named `logits`.
fn loss_grads(logits: Tensor, loss: &Tensor, stores: &[&Store]) -> candle_core::Result<Named> {
    let grads = loss.backward()?;
    let mut named = vec![("logits".to_string(), logits)];
    for store in stores {
        for (name, v) in store.params() {
            if let Some(g) = grads.get(v.as_tensor()) {
                named.push((name, g.clone()));
            }
        }
    }
    Ok(named)
}

fn labels(n: usize, dev: &Device) -> candle_core::Result<Tensor> {
    Tensor::from_vec((0..n as u32).map(|i| i % 10).collect::<Vec<_>>(), n, dev)
}

fn supernet_case(dev: &Device) -> candle_core::Result<Named> {
    let space = darts_space(8, 5, 16).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    let net = Supernet::new(&space, dev, 0)?;
    let x = uniform(&[4, 3, 16, 16], 31)?.to_device(dev)?;
    let logits = net.forward(&x, true)?;
    let (loss, _) =
        crate::stages::search::darts::step::loss_and_correct(&logits, &labels(4, dev)?)?;
    loss_grads(logits, &loss, &[&net.weights, &net.alphas])
}

fn model_case(dev: &Device) -> candle_core::Result<Named> {
    let model = darts_v2(8, 5, 16, dev).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    let x = uniform(&[4, 3, 16, 16], 32)?.to_device(dev)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let out = model.forward(
        &x,
        Mode::Train {
            drop_path: 0.2,
            rng: &mut rng,
        },
    )?;
    let loss = crate::nets::train::cross_entropy(&out.logits, &labels(4, dev)?, 0.0)?;
    loss_grads(out.logits, &loss, &[&model.store])
}

/// The DARTS space at `channels` and `layers` cells on 3×`size`×`size` images, 10 classes.
fn darts_space(channels: u32, layers: u32, size: u32) -> Result<Space> {
    let mut sources = Sources::default();
    let id = sources.add(Source::from_text(
        Path::new("schemas/darts.ron"),
        DARTS.into(),
    ));
    let raw: SearchSpace = sources.parse(id)?;
    let ov = Overrides {
        input: Some(Input {
            channels: 3,
            size,
            classes: 10,
        }),
        channels: Some((channels, Default::default())),
        layers: Some((layers, Default::default())),
    };
    space::compile(&sources, &raw, &ov)
}

/// DARTS_V2 in [`darts_space`], on `dev`, seed 0.
fn darts_v2(channels: u32, layers: u32, size: u32, dev: &Device) -> Result<Model> {
    let space = darts_space(channels, layers, size)?;
    let (src, g) = Genotype::from_arg("DARTS_V2", &space)?;
    let net = space.build(&g.resolve(&src, &space)?);
    Model::new(&net, dev, 0, false)
        .map_err(|e| Error::Runtime(format!("device-check: building DARTS_V2: {e}")))
}

type Step = Box<dyn FnMut() -> candle_core::Result<()>>;
type StepBuilder = Box<dyn Fn(&Device) -> candle_core::Result<Step>>;

/// The timed steps: (name, description, builder).
fn steps() -> Vec<(&'static str, &'static str, StepBuilder)> {
    let search = |batch: usize| -> StepBuilder {
        Box::new(move |dev: &Device| {
            let space =
                darts_space(16, 8, 32).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
            let net = Supernet::new(&space, dev, 0)?;
            let mut opt = Sgd::new(net.weights.params(), 0.9, false, 3e-4, Some(5.0));
            let x = uniform(&[batch, 3, 32, 32], 41)?.to_device(dev)?;
            let y = labels(batch, dev)?;
            Ok(Box::new(move || {
                let logits = net.forward(&x, true)?;
                let g = crate::stages::search::darts::step::loss_and_correct(&logits, &y)?
                    .0
                    .backward()?;
                opt.step(&g, 0.025)
            }) as Step)
        })
    };
    let retrain: StepBuilder = Box::new(|dev: &Device| {
        let model = darts_v2(16, 8, 32, dev).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let recipe = Recipe::step_benchmark(64);
        let mut trainer = Trainer::new(model, &recipe)?;
        let x = uniform(&[64, 3, 32, 32], 42)?.to_device(dev)?;
        let y = labels(64, dev)?;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        Ok(Box::new(move || {
            trainer.step(&x, &y, 0.025, 0.2, &mut rng)?;
            Ok(())
        }) as Step)
    });
    vec![
        (
            "search step, batch 16",
            "DARTS supernet C=16, 8 cells, 3x32x32: forward, backward, SGD",
            search(16),
        ),
        (
            "search step, batch 64",
            "DARTS supernet C=16, 8 cells, 3x32x32: forward, backward, SGD",
            search(64),
        ),
        (
            "retrain step, batch 64",
            "DARTS_V2 C=16, 8 cells, 3x32x32, drop path 0.2: forward, backward, SGD",
            retrain,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CPU kernels agree with the compositions that run off the CPU on every test device
    /// (on a CPU-only machine: the CPU running the compositions), every row.
    #[test]
    fn every_case_agrees_on_every_test_device() {
        for dev in crate::device::test_devices() {
            let r = run(
                &dev,
                &Options {
                    repeats: 0,
                    warmup: 0,
                    cpu_timing: false,
                },
                |_| {},
            )
            .unwrap();
            let bad: Vec<_> = r.parity.iter().filter(|p| !p.ok).collect();
            assert!(bad.is_empty(), "{}: {bad:#?}", crate::device::name(&dev));
            assert!(r.ok);
            // Every op at both strides, every kernel family, both networks.
            assert_eq!(
                r.parity
                    .iter()
                    .filter(|p| p.name.starts_with("op "))
                    .count(),
                2 * Op::ALL.len()
            );
            for family in [
                "max_pool2d",
                "avg_pool2d",
                "depthwise",
                "conv2d",
                "relu",
                "batch_norm",
                "weighted_sum",
                "supernet",
                "DARTS_V2",
            ] {
                assert!(r.parity.iter().any(|p| p.name.contains(family)), "{family}");
            }
        }
    }

    #[test]
    fn errors_and_panics_become_messages() {
        assert_eq!(guarded(|| Ok(1)), Ok(1));
        let e = guarded::<()>(|| candle_core::bail!("boom")).unwrap_err();
        assert!(e.contains("boom"), "{e}");
        let e = guarded::<()>(|| panic!("inside candle")).unwrap_err();
        assert_eq!(e, "panicked: inside candle");
    }

    /// A difference beyond the tolerance fails the row and names the tensor.
    #[test]
    fn a_difference_fails_the_row() {
        let case = Case {
            name: "off".into(),
            tolerance: 1e-5,
            run: Box::new(|dev| {
                let x = uniform(&[3, 3], 1)?.to_device(dev)?;
                let scale = if kernels::composing() { 2.0 } else { 1.0 };
                let g = (x.ones_like()? * scale)?;
                Ok(vec![("forward".into(), x), ("w".into(), g)])
            }),
        };
        let p = compare(&case, &Device::Cpu).unwrap();
        assert!(!p.ok);
        assert_eq!(p.worst, "w");
        assert_eq!(p.forward, 0.0);
        assert_eq!(p.gradients, 1.0);
    }
}
