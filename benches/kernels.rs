//! Times forward + backward of each custom CPU kernel in `ops::kernels` against its
//! composition of Candle ops, at DARTS CIFAR sizes (batch 64, C = 16, 32×32, f32).
//!
//! `cargo bench --bench kernels -- [runs] [conv]`: after two warm-up runs, prints the
//! median of `runs` (default 7) timed runs of `Σ f(x)` forward and backward (gradients for
//! the input and, for the convolution, the filters), the ratio reference / custom, and the
//! largest output difference between the two.
//!
//! A second table does the same for the standard convolutions of a DARTS step (batch 64,
//! f32; `conv` prints only this table): the difference there is the largest over the output
//! and the gradients of `max |custom − reference| / max |reference|`, and the rates count 2
//! flops per multiply-add of the forward and of each gradient the custom op computes (Candle
//! computes the input gradient even when it is not needed, so its rate is understated where
//! `dx` is `no`). They are printed beside this machine's f32 matmul rate (a 1024³ Candle
//! matmul).

mod common;

use anyhow::Result;
use candle_core::{DType, Device, Tensor, Var};
use nas_pipe::kernels::{
    avg_pool2d, avg_pool2d_reference, conv2d, conv2d_reference, depthwise_conv2d,
    depthwise_conv2d_reference, max_pool2d, max_pool2d_reference,
};
use std::time::Instant;

type Op = fn(&Tensor, &Tensor, usize, usize, usize, usize) -> candle_core::Result<Tensor>;

/// One benchmark row: the op's name, its custom and reference forms, kernel, stride, dilation.
struct Case {
    name: &'static str,
    fast: Op,
    reference: Op,
    kernel: usize,
    stride: usize,
    dilation: usize,
}

fn main() -> Result<()> {
    nas_pipe::cli::tune_runtime();
    // `cargo bench` passes `--bench`; the positional arguments are the rest.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let runs: usize = match args.first() {
        Some(a) => a.parse()?,
        None => 7,
    };
    if args.get(1).map(String::as_str) == Some("conv") {
        return conv_table(runs);
    }
    let dev = Device::Cpu;
    let (n, c, h) = (64, 16, 32);
    let x = Var::from_tensor(&Tensor::randn(0f32, 1., (n, c, h, h), &dev)?)?;

    let max: (Op, Op) = (
        |x, _, k, s, p, _| max_pool2d(x, k, s, p),
        |x, _, k, s, p, _| max_pool2d_reference(x, k, s, p),
    );
    let avg: (Op, Op) = (
        |x, _, k, s, p, _| avg_pool2d(x, k, s, p),
        |x, _, k, s, p, _| avg_pool2d_reference(x, k, s, p),
    );
    let dw: (Op, Op) = (
        |x, w, _, s, p, d| depthwise_conv2d(x, w, s, p, d),
        |x, w, _, s, p, d| depthwise_conv2d_reference(x, w, s, p, d),
    );
    let mut cases = Vec::new();
    for (name, (fast, reference), dilations) in [
        ("max_pool2d", max, &[1][..]),
        ("avg_pool2d", avg, &[1][..]),
        ("depthwise_conv2d", dw, &[1, 2][..]),
    ] {
        for &dilation in dilations {
            for kernel in [3, 5] {
                for stride in [1, 2] {
                    cases.push(Case {
                        name,
                        fast,
                        reference,
                        kernel,
                        stride,
                        dilation,
                    });
                }
            }
        }
    }

    println!(
        "x: [{n}, {c}, {h}, {h}] f32, forward + backward, median of {runs} runs after 2 warm-up runs, {} rayon threads",
        rayon::current_num_threads()
    );
    println!(
        "{:<18} {:>2} {:>2} {:>2} {:>2} {:>12} {:>14} {:>8} {:>10}",
        "op", "k", "s", "p", "d", "custom (ms)", "reference (ms)", "ratio", "max |diff|"
    );
    for case in &cases {
        let (k, s, d) = (case.kernel, case.stride, case.dilation);
        let p = d * (k - 1) / 2;
        let w = Var::from_tensor(&Tensor::randn(0f32, 1., (c, 1, k, k), &dev)?)?;
        let time = |f: Op| -> Result<(f64, Tensor)> {
            let mut times = Vec::with_capacity(runs);
            let mut out = None;
            for i in 0..runs + 2 {
                let start = Instant::now();
                let y = f(x.as_tensor(), w.as_tensor(), k, s, p, d)?;
                let grads = y.sum_all()?.backward()?;
                anyhow::ensure!(grads.get(x.as_tensor()).is_some(), "no input gradient");
                let elapsed = start.elapsed().as_secs_f64() * 1e3;
                if i >= 2 {
                    times.push(elapsed);
                }
                out = Some(y);
            }
            times.sort_by(f64::total_cmp);
            let y = out.ok_or_else(|| anyhow::anyhow!("no run"))?;
            Ok((times[times.len() / 2], y))
        };
        let (fast_ms, fast_y) = time(case.fast)?;
        let (ref_ms, ref_y) = time(case.reference)?;
        let diff: f32 = (fast_y - ref_y)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_dtype(DType::F32)?
            .to_scalar()?;
        println!(
            "{:<18} {:>2} {:>2} {:>2} {:>2} {:>12.2} {:>14.2} {:>7.1}x {:>10.1e}",
            case.name,
            k,
            s,
            p,
            d,
            fast_ms,
            ref_ms,
            ref_ms / fast_ms,
            diff
        );
    }
    conv_table(runs)
}

/// The median of `runs` timed calls of `f` after two warm-up calls, in ms, and the last
/// call's result.
fn median_ms<R>(runs: usize, mut f: impl FnMut() -> Result<R>) -> Result<(f64, R)> {
    let mut times = Vec::with_capacity(runs);
    let mut out = None;
    for i in 0..runs + 2 {
        let start = Instant::now();
        let r = f()?;
        if i >= 2 {
            times.push(start.elapsed().as_secs_f64() * 1e3);
        }
        out = Some(r);
    }
    times.sort_by(f64::total_cmp);
    let r = out.ok_or_else(|| anyhow::anyhow!("no run"))?;
    Ok((times[times.len() / 2], r))
}

/// One convolution row: what it is in a DARTS network, channels in and out, input size,
/// kernel, stride, padding, and whether the input needs a gradient (not for the stem).
struct ConvCase {
    name: &'static str,
    c_in: usize,
    c_out: usize,
    h: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    input_grad: bool,
}

const CONV_CASES: [ConvCase; 6] = [
    ConvCase {
        name: "pointwise",
        c_in: 16,
        c_out: 16,
        h: 32,
        kernel: 1,
        stride: 1,
        padding: 0,
        input_grad: true,
    },
    ConvCase {
        name: "pointwise",
        c_in: 32,
        c_out: 32,
        h: 16,
        kernel: 1,
        stride: 1,
        padding: 0,
        input_grad: true,
    },
    ConvCase {
        name: "pointwise",
        c_in: 64,
        c_out: 64,
        h: 8,
        kernel: 1,
        stride: 1,
        padding: 0,
        input_grad: true,
    },
    ConvCase {
        name: "stem",
        c_in: 3,
        c_out: 48,
        h: 32,
        kernel: 3,
        stride: 1,
        padding: 1,
        input_grad: false,
    },
    ConvCase {
        name: "fact. reduce",
        c_in: 16,
        c_out: 8,
        h: 32,
        kernel: 1,
        stride: 2,
        padding: 0,
        input_grad: true,
    },
    ConvCase {
        name: "relu-conv-bn",
        c_in: 16,
        c_out: 16,
        h: 32,
        kernel: 3,
        stride: 1,
        padding: 1,
        input_grad: true,
    },
];

fn conv_table(runs: usize) -> Result<()> {
    let dev = Device::Cpu;
    let (mm_ms, peak) = common::matmul_rate(runs)?;
    println!();
    println!("f32 matmul 1024x1024x1024: {mm_ms:.2} ms, {peak:.1} GFLOP/s");
    println!(
        "{:<13} {:>3} {:>3} {:>3} {:>2} {:>2} {:>2} {:>6} {:>12} {:>14} {:>8} {:>12} {:>9} {:>9}",
        "conv2d",
        "in",
        "out",
        "h",
        "k",
        "s",
        "p",
        "dx",
        "custom (ms)",
        "reference (ms)",
        "ratio",
        "max rel diff",
        "GFLOP/s",
        "ref GF/s"
    );
    let n = 64;
    for case in &CONV_CASES {
        let (k, s, p) = (case.kernel, case.stride, case.padding);
        let x = Tensor::randn(0f32, 1., (n, case.c_in, case.h, case.h), &dev)?;
        let xv = Var::from_tensor(&x)?;
        let x = if case.input_grad { xv.as_tensor() } else { &x };
        let scale = (2.0 / (case.c_in * k * k) as f32).sqrt();
        let w = Var::from_tensor(
            &(Tensor::randn(0f32, 1., (case.c_out, case.c_in, k, k), &dev)? * scale as f64)?,
        )?;
        let run = |f: fn(&Tensor, &Tensor, usize, usize, usize) -> candle_core::Result<Tensor>| {
            median_ms(runs, || {
                let y = f(x, w.as_tensor(), s, p, 1)?;
                let grads = y.sum_all()?.backward()?;
                let gw = grads
                    .get(w.as_tensor())
                    .ok_or_else(|| anyhow::anyhow!("no filter gradient"))?
                    .clone();
                let mut outs = vec![y, gw];
                if case.input_grad {
                    let gx = grads
                        .get(x)
                        .ok_or_else(|| anyhow::anyhow!("no input gradient"))?;
                    outs.push(gx.clone());
                }
                Ok(outs)
            })
        };
        let (fast_ms, fast) = run(conv2d)?;
        let (ref_ms, reference) = run(conv2d_reference)?;
        let mut diff = 0f32;
        for (a, b) in fast.iter().zip(&reference) {
            let d: f32 = (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar()?;
            let scale: f32 = b.abs()?.flatten_all()?.max(0)?.to_scalar()?;
            diff = diff.max(d / scale.max(f32::MIN_POSITIVE));
        }
        let ho = (case.h + 2 * p - k) / s + 1;
        let macs = (n * case.c_out * ho * ho * case.c_in * k * k) as f64;
        let products = if case.input_grad { 3.0 } else { 2.0 };
        let gflop = 2.0 * macs * products / 1e9;
        println!(
            "{:<13} {:>3} {:>3} {:>3} {:>2} {:>2} {:>2} {:>6} {:>12.2} {:>14.2} {:>7.1}x {:>12.1e} {:>9.1} {:>9.1}",
            case.name,
            case.c_in,
            case.c_out,
            case.h,
            k,
            s,
            p,
            if case.input_grad { "yes" } else { "no" },
            fast_ms,
            ref_ms,
            ref_ms / fast_ms,
            diff,
            gflop / (fast_ms * 1e-3),
            gflop / (ref_ms * 1e-3),
        );
    }
    Ok(())
}
