//! Seeded inputs and the gradients of a seeded projection, for comparing a kernel with its
//! composition: what the kernel tests and `nas-pipe device-check` share.

use candle_core::{DType, Device, Result, Tensor, Var};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Uniform values in [−1, 1), seeded, on the CPU.
pub fn uniform(dims: &[usize], dtype: DType, seed: u64) -> Result<Tensor> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = dims.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
    Tensor::from_vec(v, dims, &Device::Cpu)?.to_dtype(dtype)
}

/// Pairwise distinct values (a shuffle of `(i − n/2) / 64`), exact in f32, on the CPU: no
/// pooling window has ties and a perturbation below 1/128 keeps every order.
pub fn distinct(dims: &[usize], dtype: DType, seed: u64) -> Result<Tensor> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n: usize = dims.iter().product();
    let mut v: Vec<f64> = (0..n).map(|i| (i as f64 - (n / 2) as f64) / 64.0).collect();
    v.shuffle(&mut rng);
    Tensor::from_vec(v, dims, &Device::Cpu)?.to_dtype(dtype)
}

/// `f(inputs)` and the gradients of `Σ f(inputs) ⊙ r` for every input (each must get one),
/// `r` the [`uniform`] tensor of `seed` and the output's shape, on the output's device.
pub fn forward_grads(
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
    inputs: &[Tensor],
    seed: u64,
) -> Result<(Tensor, Vec<Tensor>)> {
    let vars = inputs
        .iter()
        .map(Var::from_tensor)
        .collect::<Result<Vec<_>>>()?;
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let out = f(&ts)?;
    let r = uniform(out.dims(), out.dtype(), seed)?.to_device(out.device())?;
    let grads = (&out * &r)?.sum_all()?.backward()?;
    let g = ts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            grads
                .get(t)
                .cloned()
                .ok_or_else(|| candle_core::Error::Msg(format!("no gradient for input {i}")))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((out, g))
}
