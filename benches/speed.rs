//! nas-pipe's speed and memory next to PyTorch's, row by row: the DARTS search steps, the
//! DARTS_V2 retraining step and inference, ONNX Runtime on nas-pipe's export, and each op's
//! forward + backward. Not a test; run by hand:
//!
//! ```text
//! cargo bench --bench speed -- [--rows SUBSTRING] [--runs N] [--out ours.json]
//!                              [--reference torch.json]
//! ```
//!
//! `--reference` takes the JSON that `benches/reference/torch_bench.py` writes (the same rows,
//! built as in the DARTS reference code, in PyTorch) and prints one table with the ratio
//! nas-pipe / PyTorch per row; `scripts/bench.sh` runs both.
//!
//! Method (the same on both sides): each row runs in a fresh child process (this binary with
//! `--row NAME`) on the machine's cores; one warm-up run, then the median of the timed runs.
//! Peak memory is the growth of the resident set during the runs: VmHWM after them minus
//! VmRSS once the network, its optimizer state and the inputs exist. The ONNX Runtime row
//! times nas-pipe's export and, given the reference's `onnx` file, torch.onnx's export of the
//! same network in one process, alternating run by run: the two files are within a few per
//! cent of each other, well inside what separate runs on a shared machine drift by.
//!
//! Each row also gets nas-pipe's achieved GFLOP/s and its fraction of this machine's f32
//! matmul rate (`common::matmul_rate` on the same threads, measured first): two FLOPs per
//! multiply-add of the network's convolutions and linear layers as `nas-pipe` counts them,
//! three times the forward's for a training step (forward, input and weight gradients).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use candle_core::{Device, Tensor, Var};
use nas_pipe::nets::export::{Metadata, Options, export};
use nas_pipe::nets::model::{Mode, Model};
use nas_pipe::nets::optim::Sgd;
use nas_pipe::nets::supernet::Supernet;
use nas_pipe::nets::train::Recipe;
use nas_pipe::nets::train::Trainer;
use nas_pipe::nn::Store;
use nas_pipe::ops::{BnMode, Op, OpCtx, Shape};
use nas_pipe::runtime::Session;
use nas_pipe::space::genotype::Genotype;
use nas_pipe::space::{self, Overrides, Space};
use nas_pipe::spec::space::{Input, SearchSpace};
use nas_pipe::spec::{Source, Sources};
use nas_pipe::stages::search::darts::step::loss_and_correct;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

/// One measured row, as both sides write it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Measured {
    row: String,
    seconds: f64,
    runs: usize,
    peak_mib: f64,
    /// The reference's time measured in the same process, alternating with ours (the ONNX
    /// Runtime row, on torch.onnx's file); it replaces the reference run's own figure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reference_seconds: Option<f64>,
    /// FLOPs of one run (nas-pipe's side; the same work on both).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    flops: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct Reference {
    torch: String,
    threads: usize,
    rows: Vec<Measured>,
    /// torch.onnx's export of DARTS_V2 (C = 36, 20 layers), for the paired ONNX Runtime row.
    #[serde(default)]
    onnx: Option<std::path::PathBuf>,
}

/// Every row: its name (shared with torch_bench.py) and what it times.
fn rows() -> Vec<(String, String)> {
    let mut r: Vec<(String, String)> = [
        (
            "supernet_cell_b64",
            "search step: 1 DARTS cell, C=16, 32x32, batch 64",
        ),
        (
            "supernet_8_b16",
            "search step: 8-layer search network, C=16, batch 16",
        ),
        (
            "darts_v2_train_b64",
            "retrain step: DARTS_V2, C=16, 8 layers, batch 64",
        ),
        (
            "darts_v2_infer_b64",
            "inference: DARTS_V2, C=16, 8 layers, batch 64",
        ),
        (
            "darts_v2_c36_infer_b1",
            "inference: DARTS_V2, C=36, 20 layers, batch 1",
        ),
        (
            "ort_darts_v2_c36_b1_t1",
            "ONNX Runtime: DARTS_V2 C=36 L=20, batch 1, 1 thread",
        ),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    for s in [1, 2] {
        for (name, _) in op_rows() {
            r.push((
                format!("op_{name}_s{s}"),
                format!("op fwd+bwd: {name}, stride {s}, 64x16x32x32"),
            ));
        }
    }
    r
}

/// The ops timed one by one, by their DARTS names.
fn op_rows() -> Vec<(&'static str, Op)> {
    vec![
        ("none", Op::Zero),
        ("max_pool_3x3", Op::MaxPool { kernel: 3 }),
        ("avg_pool_3x3", Op::AvgPool { kernel: 3 }),
        ("skip_connect", Op::Identity),
        ("sep_conv_3x3", Op::SepConv { kernel: 3 }),
        ("sep_conv_5x5", Op::SepConv { kernel: 5 }),
        (
            "dil_conv_3x3",
            Op::DilConv {
                kernel: 3,
                dilation: 2,
            },
        ),
        (
            "dil_conv_5x5",
            Op::DilConv {
                kernel: 5,
                dilation: 2,
            },
        ),
        ("conv_1x1", Op::ReluConvBn { kernel: 1 }),
        ("conv_3x3", Op::ReluConvBn { kernel: 3 }),
    ]
}

fn default_runs(row: &str) -> usize {
    if row.ends_with("b1") || row.ends_with("t1") {
        300
    } else if row.starts_with("op_") {
        30
    } else {
        5
    }
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The DARTS search space at C = 16, with `layers` cells (the schema's own reductions for 8,
/// none for 1).
fn search_space(layers: usize) -> Result<Space> {
    let mut text = std::fs::read_to_string(root().join("schemas/darts.ron"))?;
    if layers == 1 {
        text = text
            .replace("layers: 8,", "layers: 1,")
            .replace("reductions_at: [Third, TwoThirds],", "reductions_at: [],");
    }
    let mut sources = Sources::default();
    let id = sources.add(Source::from_text(Path::new("bench-space.ron"), text));
    let raw: SearchSpace = sources.parse(id)?;
    Ok(space::compile(&sources, &raw, &Overrides::default())?)
}

/// DARTS_V2 at `channels` and `layers` on 3×32×32, 10 classes.
fn darts_v2(
    channels: u32,
    layers: u32,
) -> Result<(
    Model,
    nas_pipe::space::genotype::Genotype,
    nas_pipe::ops::Cost,
)> {
    let mut sources = Sources::default();
    let ov = Overrides {
        input: Some(Input {
            channels: 3,
            size: 32,
            classes: 10,
        }),
        channels: Some((channels, Default::default())),
        layers: Some((layers, Default::default())),
    };
    let space = space::load(&mut sources, &root().join("schemas/darts.ron"), None, &ov)?;
    let (src, g) = Genotype::from_arg("DARTS_V2", &space)?;
    let net = space.build(&g.resolve(&src, &space)?);
    let cost = net.cost();
    Ok((Model::new(&net, &Device::Cpu, 0, false)?, g, cost))
}

fn labels(batch: usize) -> Result<Tensor> {
    Ok(Tensor::from_vec(
        (0..batch as u32).map(|i| i % 10).collect::<Vec<u32>>(),
        batch,
        &Device::Cpu,
    )?)
}

/// The work of one row: a closure that runs it once, and its FLOPs.
type Work = (Box<dyn FnMut() -> Result<()>>, f64);

/// FLOPs of a forward pass of `macs` multiply-adds per image over `batch` images; three times
/// that when `train` (forward, input gradients, weight gradients).
fn flops(macs: u64, batch: usize, train: bool) -> f64 {
    2.0 * macs as f64 * batch as f64 * if train { 3.0 } else { 1.0 }
}

/// Builds the work of one row. (The ONNX Runtime row is [`ort_row`], which `child` calls
/// instead.)
fn build(row: &str) -> Result<Work> {
    let dev = Device::Cpu;
    match row {
        "supernet_cell_b64" | "supernet_8_b16" => {
            let (layers, batch) = if row == "supernet_cell_b64" {
                (1, 64)
            } else {
                (8, 16)
            };
            let space = search_space(layers)?;
            let net = Supernet::new(&space, &dev, 0)?;
            let work = flops(space.supernet_cost().macs, batch, true);
            let mut opt = Sgd::new(net.weights.params(), 0.9, false, 3e-4, Some(5.0));
            let x = Tensor::randn(0f32, 1f32, (batch, 3, 32, 32), &dev)?;
            let y = labels(batch)?;
            let run = move || {
                let logits = net.forward(&x, true)?;
                let g = loss_and_correct(&logits, &y)?.0.backward()?;
                opt.step(&g, 0.025)?;
                Ok(())
            };
            Ok((Box::new(run), work))
        }
        "darts_v2_train_b64" => {
            let (model, _, cost) = darts_v2(16, 8)?;
            let recipe = Recipe::step_benchmark(64);
            let mut trainer = Trainer::new(model, &recipe)?;
            let x = Tensor::randn(0f32, 1f32, (64, 3, 32, 32), &dev)?;
            let y = labels(64)?;
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
            let run = move || {
                trainer.step(&x, &y, 0.025, 0.2, &mut rng)?;
                Ok(())
            };
            Ok((Box::new(run), flops(cost.macs, 64, true)))
        }
        "darts_v2_infer_b64" | "darts_v2_c36_infer_b1" => {
            let (c, l, b) = if row == "darts_v2_infer_b64" {
                (16, 8, 64)
            } else {
                (36, 20, 1)
            };
            let (model, _, cost) = darts_v2(c, l)?;
            let x = Tensor::randn(0f32, 1f32, (b, 3, 32, 32), &dev)?;
            let run = move || {
                model
                    .forward(&x, Mode::Eval)?
                    .logits
                    .sum_all()?
                    .to_scalar::<f32>()?;
                Ok(())
            };
            Ok((Box::new(run), flops(cost.macs, b, false)))
        }
        _ => {
            let Some(rest) = row.strip_prefix("op_") else {
                bail!("unknown row {row}")
            };
            let (name, stride) = rest.rsplit_once("_s").context("row name")?;
            let stride: usize = stride.parse()?;
            let op = op_rows()
                .into_iter()
                .find(|(n, _)| *n == name)
                .with_context(|| format!("unknown op {name}"))?
                .1;
            let store = Store::new(&dev, 0);
            let bn = BnMode {
                affine: false,
                pool_bn: true,
            };
            let m = op.build(&store.root(), 16, 16, stride, bn)?;
            let ctx = OpCtx {
                input: Shape {
                    c: 16,
                    h: 32,
                    w: 32,
                },
                c_out: 16,
                stride: stride as u32,
                bn,
            };
            let macs = op.apply(&ctx).map_err(anyhow::Error::msg)?.cost.macs;
            let x = Var::from_tensor(&Tensor::randn(0f32, 1f32, (64, 16, 32, 32), &dev)?)?;
            let run = move || {
                let y = m.forward(x.as_tensor(), true)?;
                let _ = y.sum_all()?.backward()?;
                Ok(())
            };
            Ok((Box::new(run), flops(macs, 64, true)))
        }
    }
}

/// ONNX Runtime on nas-pipe's export of DARTS_V2 (C = 36, 20 layers), batch 1, one thread,
/// and, when `theirs` names torch.onnx's export of the same network, on that file too, the
/// two runs alternating so that both see the same machine. Returns the p50 of each and the
/// resident-set growth over the timed runs (after 20 warm-up runs of each session).
fn ort_row(runs: usize, theirs: Option<&Path>) -> Result<(f64, Option<f64>, f64, f64)> {
    let (model, g, cost) = darts_v2(36, 20)?;
    let meta = Metadata {
        spec_hash: "speed-bench".into(),
        genotype: g.to_ron(),
        mean: vec![0.0; 3],
        std: vec![1.0; 3],
        classes: vec![],
        resize: None,
    };
    let bytes = export(&model, &meta, &Options::default())?;
    drop(model);
    let path = std::env::temp_dir().join(format!("speed-bench-{}.onnx", std::process::id()));
    std::fs::write(&path, &bytes)?;
    let rt = nas_pipe::runtime::load(None)?;
    let ours = Session::from_file(rt, &path, 1);
    let _ = std::fs::remove_file(&path);
    let mut sessions = vec![ours?];
    if let Some(t) = theirs {
        sessions.push(Session::from_file(rt, t, 1)?);
    }
    let shape = [1usize, 3, 32, 32];
    let input: Vec<f32> = (0..3 * 32 * 32)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    for s in sessions.iter_mut() {
        for _ in 0..20 {
            s.run(&input, &shape)?;
        }
    }
    let base = status_mib("VmRSS");
    let mut times = vec![Vec::with_capacity(runs); sessions.len()];
    for _ in 0..runs {
        for (s, t) in sessions.iter_mut().zip(times.iter_mut()) {
            let at = Instant::now();
            s.run(&input, &shape)?;
            t.push(at.elapsed().as_secs_f64());
        }
    }
    let mut p50 = times.into_iter().map(|mut t| {
        t.sort_by(f64::total_cmp);
        t[t.len() / 2]
    });
    let ours = p50.next().context("no session")?;
    let work = flops(cost.macs, 1, false);
    Ok((ours, p50.next(), status_mib("VmHWM") - base, work))
}

/// A field of /proc/self/status, in MiB.
fn status_mib(key: &str) -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

fn child(row: &str, runs: usize) -> Result<()> {
    let m = if row == "ort_darts_v2_c36_b1_t1" {
        let theirs = arg("--theirs").map(std::path::PathBuf::from);
        let (seconds, reference_seconds, peak_mib, work) = ort_row(runs, theirs.as_deref())?;
        Measured {
            row: row.into(),
            seconds,
            runs,
            peak_mib,
            reference_seconds,
            flops: Some(work),
        }
    } else {
        let (mut f, work) = build(row)?;
        let base = status_mib("VmRSS");
        f()?;
        let mut ts = Vec::with_capacity(runs);
        for _ in 0..runs {
            let t = Instant::now();
            f()?;
            ts.push(t.elapsed().as_secs_f64());
        }
        ts.sort_by(f64::total_cmp);
        Measured {
            row: row.into(),
            seconds: ts[ts.len() / 2],
            runs,
            peak_mib: status_mib("VmHWM") - base,
            reference_seconds: None,
            flops: Some(work),
        }
    };
    println!("{}", serde_json::to_string(&m)?);
    Ok(())
}

fn arg(name: &str) -> Option<String> {
    std::env::args().skip_while(|a| a != name).nth(1)
}

fn main() -> Result<()> {
    nas_pipe::cli::tune_runtime();
    let runs: Option<usize> = arg("--runs").map(|r| r.parse()).transpose()?;
    if let Some(row) = arg("--row") {
        // On rayon's pool, as `nas-pipe` runs its commands.
        return nas_pipe::cli::on_pool(|| child(&row, runs.unwrap_or_else(|| default_runs(&row))));
    }
    let filter = arg("--rows").unwrap_or_default();
    let reference: Option<Reference> = match arg("--reference") {
        Some(p) => Some(
            serde_json::from_str(&std::fs::read_to_string(&p).with_context(|| p.clone())?)
                .with_context(|| format!("{p}: not torch_bench.py's JSON"))?,
        ),
        None => None,
    };
    let threads = rayon::current_num_threads();
    println!(
        "nas-pipe {} speed benchmark, {threads} threads; median after one warm-up, peak = resident-set growth",
        env!("CARGO_PKG_VERSION")
    );
    if let Some(r) = &reference {
        println!("reference: PyTorch {} on {} threads", r.torch, r.threads);
        if r.threads != threads {
            println!(
                "warning: the reference ran on {} threads, this on {threads}",
                r.threads
            );
        }
    }
    // On rayon's pool, as the rows run.
    let (_, peak) = nas_pipe::cli::on_pool(|| common::matmul_rate(10))?;
    println!("this machine's f32 matmul (1024³, {threads} threads): {peak:.1} GFLOP/s");
    println!();
    println!(
        "| row | nas-pipe ms | PyTorch ms | time ratio | nas-pipe MiB | PyTorch MiB | memory ratio | nas-pipe GFLOP/s | of matmul |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let exe = std::env::current_exe()?;
    let mut ours = Vec::new();
    for (row, what) in rows() {
        if !row.contains(&filter) {
            continue;
        }
        let mut cmd = Command::new(&exe);
        cmd.args(["--bench", "--row", &row]);
        if let Some(n) = runs {
            cmd.args(["--runs", &n.to_string()]);
        }
        if let Some(onnx) = reference.as_ref().and_then(|r| r.onnx.as_ref())
            && row.starts_with("ort_")
        {
            cmd.arg("--theirs").arg(onnx);
        }
        let out = cmd.output()?;
        if !out.status.success() {
            bail!("{row}: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        let text = String::from_utf8(out.stdout)?;
        let m: Measured = serde_json::from_str(text.lines().last().context("no output")?)?;
        let theirs = reference
            .as_ref()
            .and_then(|r| r.rows.iter().find(|t| t.row == row))
            .map(|t| Measured {
                seconds: m.reference_seconds.unwrap_or(t.seconds),
                ..t.clone()
            });
        let theirs = theirs.as_ref();
        let cell = |v: Option<f64>, digits: usize| v.map_or("".into(), |v| format!("{v:.digits$}"));
        let rate = m.flops.filter(|&f| f > 0.0).map(|f| f / m.seconds / 1e9);
        println!(
            "| {what} | {:.2} | {} | {} | {:.1} | {} | {} | {} | {} |",
            m.seconds * 1e3,
            cell(theirs.map(|t| t.seconds * 1e3), 2),
            cell(theirs.map(|t| m.seconds / t.seconds), 2),
            m.peak_mib,
            cell(theirs.map(|t| t.peak_mib), 1),
            cell(theirs.map(|t| m.peak_mib / t.peak_mib), 2),
            cell(rate, 1),
            // The matmul rate is measured on all threads; a one-thread row gets no fraction.
            cell(rate.filter(|_| !row.ends_with("_t1")).map(|r| r / peak), 3),
        );
        ours.push(m);
    }
    if let Some(p) = arg("--out") {
        let tmp = format!("{p}.tmp");
        std::fs::write(&tmp, serde_json::to_string_pretty(&ours)?)?;
        std::fs::rename(&tmp, &p)?;
    }
    Ok(())
}
