//! What the benches share: this machine's f32 matmul rate, the limit the kernels' and the
//! steps' GFLOP/s are read against.

use std::time::Instant;

use anyhow::Result;
use candle_core::{Device, Tensor};

/// A 1024³ Candle f32 matmul on the calling thread's pool: the median of `runs` after two
/// warm-up runs, as (milliseconds, GFLOP/s).
pub fn matmul_rate(runs: usize) -> Result<(f64, f64)> {
    let m = 1024;
    let a = Tensor::randn(0f32, 1., (m, m), &Device::Cpu)?;
    let b = Tensor::randn(0f32, 1., (m, m), &Device::Cpu)?;
    let mut ms = Vec::with_capacity(runs);
    for i in 0..runs.max(1) + 2 {
        let t = Instant::now();
        a.matmul(&b)?;
        if i >= 2 {
            ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    ms.sort_by(f64::total_cmp);
    let median = ms[ms.len() / 2];
    Ok((median, 2.0 * (m * m * m) as f64 / (median * 1e6)))
}
