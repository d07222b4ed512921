//! Times forward + backward of each custom CPU kernel in `ops::kernels` against its
//! composition of Candle ops, at DARTS CIFAR sizes (batch 64, C = 16, 32×32, f32).
//!
//! `cargo run --release --example kernels_bench [runs]`: after two warm-up runs, prints the
//! median of `runs` (default 7) timed runs of `Σ f(x)` forward and backward (gradients for
//! the input and, for the convolution, the filters), the ratio reference / custom, and the
//! largest output difference between the two.

use anyhow::Result;
use candle_core::{DType, Device, Tensor, Var};
use nas_pipe::ops::kernels::{
    avg_pool2d, avg_pool2d_reference, depthwise_conv2d, depthwise_conv2d_reference, max_pool2d,
    max_pool2d_reference,
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
    let runs: usize = match std::env::args().nth(1) {
        Some(a) => a.parse()?,
        None => 7,
    };
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
    Ok(())
}
