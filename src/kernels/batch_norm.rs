//! Batch norm in training mode (NCHW, per-channel batch statistics, optional affine weight
//! and bias): the public function, its CPU custom ops, and the composition of Candle ops used
//! elsewhere.
//!
//! The CPU path makes three passes over the input in the forward and two over (input,
//! gradient) in the backward, where the composition makes one per elementary op:
//!
//! * statistics ([`ChannelStats`], no gradient): per channel, the mean, then the biased
//!   variance `Σ(x − mean)² / M` (two passes, f64 accumulators), `M = N·H·W`;
//! * forward ([`Norm`]): `y = (x − mean) · inv_std · weight + bias`, with
//!   `inv_std = 1 / sqrt(var + eps)`;
//! * backward: per channel `Σdy` and `Σdy·x̂` ([`GradSums`], f64 accumulators), which are
//!   also the bias and weight gradients, then in one pass ([`InputGrad`])
//!   `dx = inv_std·weight·(dy − Σdy/M) − (x − mean)·inv_std²·weight·Σ(dy·x̂)/M`, the standard
//!   `dx = inv_std/M · (M·dŷ − Σdŷ − x̂·Σ(dŷ·x̂))` with `dŷ = dy·weight`.
//!
//! The statistics are computed once before the forward op and kept in it (f64), so the
//! backward reuses them. The mean and variance returned are plain tensors (no gradient
//! flows through them, as with the running statistics they feed).

mod add;

pub use add::batch_norm_add_train;

use super::{
    Real, check_float, check_like, cpu_flat, cpu_slice, dispatch2, use_cpu_kernel, written,
};
use candle_core::backend::BackendStorage;
use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor, WithDType,
    bail,
};
use multiversion::multiversion;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Batch norm in training mode: normalises each channel of `x` with the batch's mean and
/// biased variance, `y = (x − mean) / sqrt(var + eps)`, then `· weight` and `+ bias` when
/// given. Differentiable with respect to `x`, `weight` and `bias` (first order).
///
/// Returns `(y, mean, var)`: the batch mean and biased variance per channel, detached.
///
/// # Shapes
/// `x`: `[N, C, H, W]`, `weight`, `bias`: `[C]` → `([N, C, H, W], [C], [C])`.
///
/// # Errors
/// A non-float or non-4-D input, or a weight or bias of the wrong shape, dtype or device.
pub fn batch_norm_train(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    train("batch_norm_train", x, weight, bias, eps, false)
}

/// [`batch_norm_train`] followed by a ReLU, `max(0, y)`, in one op: on the CPU the
/// normalised values before the ReLU are never stored, so the autograd graph keeps one
/// tensor (the output) where the two ops keep two. Same values and gradients as
/// `relu(batch_norm_train(x, ..).0)` with [`super::relu`].
///
/// # Shapes and errors
/// As [`batch_norm_train`].
pub fn batch_norm_relu_train(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    train("batch_norm_relu_train", x, weight, bias, eps, true)
}

fn train(
    op: &str,
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
    relu: bool,
) -> Result<(Tensor, Tensor, Tensor)> {
    let dims = check(op, x, weight, bias)?;
    let (n, c, h, w) = dims;
    if !use_cpu_kernel(x) || n * h * w == 0 {
        let (y, mean, var) = composed(x, weight, bias, eps)?;
        let y = if relu { super::relu(&y)? } else { y };
        return Ok((y, mean, var));
    }
    let x = x.contiguous()?;
    let (op, mean, var) = Norm::of_batch(&x, dims, eps, relu)?;
    let y = if weight.is_none() && bias.is_none() {
        x.apply_op1(op)?
    } else {
        let (weight, bias) = affine(&x, c, weight, bias)?;
        x.apply_op3(&weight, &bias, op)?
    };
    Ok((y, mean, var))
}

/// Batch norm in evaluation mode, with given (running) statistics: `y = (x − mean) /
/// sqrt(var + eps)`, then `· weight` and `+ bias` when given, in one pass on the CPU.
///
/// Not differentiable: on the CPU the result is a constant of the autograd graph, so nothing
/// upstream of it is kept alive for a backward pass (evaluation is never differentiated).
///
/// # Shapes
/// `x`: `[N, C, H, W]`; `mean`, `var`, `weight`, `bias`: `[C]` → `[N, C, H, W]`.
///
/// # Errors
/// As [`batch_norm_train`], and statistics of the wrong shape, dtype or device.
pub fn batch_norm_eval(
    x: &Tensor,
    mean: &Tensor,
    var: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<Tensor> {
    eval("batch_norm_eval", x, [mean, var], weight, bias, eps, false)
}

/// [`batch_norm_eval`] followed by a ReLU, in one pass on the CPU.
///
/// # Shapes and errors
/// As [`batch_norm_eval`].
pub fn batch_norm_relu_eval(
    x: &Tensor,
    mean: &Tensor,
    var: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<Tensor> {
    eval(
        "batch_norm_relu_eval",
        x,
        [mean, var],
        weight,
        bias,
        eps,
        true,
    )
}

fn eval(
    op: &str,
    x: &Tensor,
    [mean, var]: [&Tensor; 2],
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
    relu: bool,
) -> Result<Tensor> {
    let dims = check(op, x, weight, bias)?;
    let c = dims.1;
    for (name, t) in [("mean", mean), ("variance", var)] {
        check_like(op, name, t, x)?;
        if t.dims() != [c] {
            bail!("{op}: the {name} has shape {:?}, expected [{c}]", t.dims())
        }
    }
    if !use_cpu_kernel(x) {
        let y = batch_norm_eval_reference(x, mean, var, weight, bias, eps)?;
        return if relu { super::relu(&y) } else { Ok(y) };
    }
    let f64s = |t: &Tensor| t.to_dtype(DType::F64)?.to_vec1::<f64>();
    let op = Norm {
        dims,
        mean: f64s(mean)?,
        inv_std: f64s(var)?.iter().map(|v| 1.0 / (v + eps).sqrt()).collect(),
        relu,
    };
    let x = x.contiguous()?;
    if weight.is_none() && bias.is_none() {
        return x.apply_op1_no_bwd(&op);
    }
    let (weight, bias) = affine(&x, c, weight, bias)?;
    x.apply_op3_no_bwd(&weight, &bias, &op)
}

/// The affine weight and bias as contiguous `[C]` tensors, ones and zeros for a missing one
/// (the [`Norm`] op takes both or neither).
fn affine(
    x: &Tensor,
    c: usize,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
) -> Result<(Tensor, Tensor)> {
    let weight = match weight {
        Some(t) => t.contiguous()?,
        None => Tensor::ones(c, x.dtype(), x.device())?,
    };
    let bias = match bias {
        Some(t) => t.contiguous()?,
        None => Tensor::zeros(c, x.dtype(), x.device())?,
    };
    Ok((weight, bias))
}

/// [`batch_norm_eval`] as a composition of Candle ops, on any device (differentiable).
pub fn batch_norm_eval_reference(
    x: &Tensor,
    mean: &Tensor,
    var: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<Tensor> {
    let c = x.dim(1)?;
    let mean = mean.reshape((1, c, 1, 1))?;
    let var = var.reshape((1, c, 1, 1))?;
    let mut y = x
        .broadcast_sub(&mean)?
        .broadcast_div(&(var + eps)?.sqrt()?)?;
    if let Some(w) = weight {
        y = y.broadcast_mul(&w.reshape((1, c, 1, 1))?)?;
    }
    if let Some(b) = bias {
        y = y.broadcast_add(&b.reshape((1, c, 1, 1))?)?;
    }
    Ok(y)
}

/// [`batch_norm_train`] as a composition of Candle ops, on any device (the statistics by
/// reducing the contiguous axis first; gradients flow through them too, which gives the same
/// gradients as the closed form).
///
/// # Shapes
/// As [`batch_norm_train`].
pub fn batch_norm_train_reference(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    check("batch_norm_train_reference", x, weight, bias)?;
    composed(x, weight, bias, eps)
}

fn composed(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    let c = x.dim(1)?;
    let mean = channel_mean(x)?;
    let centered = x.broadcast_sub(&mean)?;
    let var = channel_mean(&centered.sqr()?)?;
    let mut y = centered.broadcast_div(&(&var + eps)?.sqrt()?)?;
    if let Some(w) = weight {
        y = y.broadcast_mul(&w.reshape((1, c, 1, 1))?)?;
    }
    if let Some(b) = bias {
        y = y.broadcast_add(&b.reshape((1, c, 1, 1))?)?;
    }
    Ok((y, mean.detach().reshape(c)?, var.detach().reshape(c)?))
}

/// Per-channel mean of [N, C, H, W] as [1, C, 1, 1]: reduces the contiguous last axis
/// first, which Candle's CPU backend does an order of magnitude faster than a reduction
/// over axes (0, 2, 3).
fn channel_mean(x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    x.reshape((n, c, h * w))?
        .mean_keepdim(2)?
        .mean_keepdim(0)?
        .reshape((1, c, 1, 1))
}

type Dims = (usize, usize, usize, usize);

/// Checks the arguments of `op`; returns the input's dims.
fn check(op: &str, x: &Tensor, weight: Option<&Tensor>, bias: Option<&Tensor>) -> Result<Dims> {
    let &[n, c, h, w] = x.dims() else {
        bail!(
            "{op}: expected a 4-D input [N, C, H, W], got shape {:?}",
            x.dims()
        )
    };
    check_float(op, x.dtype())?;
    for (name, t) in [("weight", weight), ("bias", bias)] {
        let Some(t) = t else { continue };
        if t.dims() != [c] {
            bail!("{op}: {name} must have shape [{c}], got {:?}", t.dims())
        }
        check_like(op, name, t, x)?;
    }
    Ok((n, c, h, w))
}

fn f64_of<T: Real>(v: T) -> f64 {
    WithDType::to_f64(v)
}

/// Accumulators per reduction: two AVX-512 registers of f64, independent sums that pipeline.
const LANES: usize = 16;

/// `Σ f(x)` over a slice in f64, with [`LANES`] accumulators.
#[inline(always)]
fn sum_by<T: Real>(xs: &[T], f: impl Fn(f64) -> f64) -> f64 {
    let mut acc = [0.0f64; LANES];
    let chunks = xs.chunks_exact(LANES);
    let rest: f64 = chunks.remainder().iter().map(|&v| f(f64_of(v))).sum();
    for ch in chunks {
        for (a, &v) in acc.iter_mut().zip(ch) {
            *a += f(f64_of(v));
        }
    }
    acc.iter().sum::<f64>() + rest
}

/// `Σx` over one plane.
#[multiversion(targets = "simd")]
fn plane_sum<T: Real>(xs: &[T]) -> f64 {
    sum_by(xs, |v| v)
}

/// `Σ(x − mean)²` over one plane.
#[multiversion(targets = "simd")]
fn plane_centered_squares<T: Real>(xs: &[T], mean: f64) -> f64 {
    sum_by(xs, |v| (v - mean) * (v - mean))
}

/// The `N` planes of channel `ch` in a contiguous `[N, C, H·W]` buffer.
fn channel_planes<T>(v: &[T], dims: Dims, ch: usize) -> impl Iterator<Item = &[T]> {
    let (n, c, h, w) = dims;
    let hw = h * w;
    (0..n).map(move |i| &v[(i * c + ch) * hw..][..hw])
}

/// The batch statistics: `x → [2, C]` in f64, the per-channel mean (row 0) and biased
/// variance (row 1).
struct ChannelStats {
    dims: Dims,
}

impl CustomOp1 for ChannelStats {
    fn name(&self) -> &'static str {
        "kernels-batch-norm-stats"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = match s {
            CpuStorage::F32(_) => self.run::<f32>(s, l)?,
            CpuStorage::F64(_) => self.run::<f64>(s, l)?,
            _ => bail!("{}: expected f32 or f64, got {:?}", self.name(), s.dtype()),
        };
        Ok((CpuStorage::F64(out), Shape::from((2, self.dims.1))))
    }
}

impl ChannelStats {
    fn run<T: Real>(&self, s: &CpuStorage, l: &Layout) -> Result<Vec<f64>> {
        let dims = self.dims;
        let x = cpu_slice::<T>(self.name(), s, l, dims)?;
        let m = (dims.0 * dims.2 * dims.3) as f64;
        let stats: Vec<(f64, f64)> = (0..dims.1)
            .into_par_iter()
            .map(|ch| {
                let planes = || channel_planes(x, dims, ch);
                let mean = planes().map(plane_sum).sum::<f64>() / m;
                let var = planes()
                    .map(|p| plane_centered_squares(p, mean))
                    .sum::<f64>()
                    / m;
                (mean, var)
            })
            .collect();
        let (mean, var): (Vec<f64>, Vec<f64>) = stats.into_iter().unzip();
        Ok([mean, var].concat())
    }
}

/// The normalisation: `x → y` (no affine, [`CustomOp1`]) or `(x, weight, bias) → y`
/// ([`CustomOp3`]), with the batch statistics computed beforehand.
struct Norm {
    dims: Dims,
    mean: Vec<f64>,
    inv_std: Vec<f64>,
    /// `max(0, y)` after the normalisation; the backward then masks the output gradient
    /// by `[y > 0]` (from the op's own output) first.
    relu: bool,
}

impl CustomOp1 for Norm {
    fn name(&self) -> &'static str {
        "kernels-batch-norm"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = match s {
            CpuStorage::F32(_) => {
                let x = cpu_slice::<f32>(CustomOp1::name(self), s, l, self.dims)?;
                f32::to_cpu_storage_owned(self.forward(x, None)?)
            }
            CpuStorage::F64(_) => {
                let x = cpu_slice::<f64>(CustomOp1::name(self), s, l, self.dims)?;
                f64::to_cpu_storage_owned(self.forward(x, None)?)
            }
            _ => bail!(
                "{}: expected f32 or f64, got {:?}",
                CustomOp1::name(self),
                s.dtype()
            ),
        };
        Ok((out, Shape::from(self.dims)))
    }

    fn bwd(&self, x: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (dx, _) = self.backward(x, None, res, grad, true)?;
        Ok(dx)
    }
}

impl CustomOp3 for Norm {
    fn name(&self) -> &'static str {
        "kernels-batch-norm-affine"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let c = self.dims.1;
        let out = match (s1, s2, s3) {
            (CpuStorage::F32(_), CpuStorage::F32(_), CpuStorage::F32(_)) => {
                let x = cpu_slice::<f32>(CustomOp3::name(self), s1, l1, self.dims)?;
                let w = cpu_flat::<f32>(CustomOp3::name(self), s2, l2, c)?;
                let b = cpu_flat::<f32>(CustomOp3::name(self), s3, l3, c)?;
                f32::to_cpu_storage_owned(self.forward(x, Some((w, b)))?)
            }
            (CpuStorage::F64(_), CpuStorage::F64(_), CpuStorage::F64(_)) => {
                let x = cpu_slice::<f64>(CustomOp3::name(self), s1, l1, self.dims)?;
                let w = cpu_flat::<f64>(CustomOp3::name(self), s2, l2, c)?;
                let b = cpu_flat::<f64>(CustomOp3::name(self), s3, l3, c)?;
                f64::to_cpu_storage_owned(self.forward(x, Some((w, b)))?)
            }
            _ => bail!(
                "{}: expected three f32 or three f64 tensors, got {:?}, {:?} and {:?}",
                CustomOp3::name(self),
                s1.dtype(),
                s2.dtype(),
                s3.dtype()
            ),
        };
        Ok((out, Shape::from(self.dims)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, sums) = self.backward(x, Some(weight), res, grad, x.track_op())?;
        let per_channel = |row: &[f64]| Tensor::new(row, x.device())?.to_dtype(x.dtype());
        let dw = weight
            .track_op()
            .then(|| per_channel(&sums[1]))
            .transpose()?;
        let db = bias.track_op().then(|| per_channel(&sums[0])).transpose()?;
        Ok((dx, dw, db))
    }
}

impl Norm {
    /// The normalisation with the statistics of the batch `x` (contiguous, of shape
    /// `dims`), and those statistics as tensors of `x`'s dtype (the mean and the biased
    /// variance per channel).
    fn of_batch(x: &Tensor, dims: Dims, eps: f64, relu: bool) -> Result<(Norm, Tensor, Tensor)> {
        let stats = x.apply_op1_no_bwd(&ChannelStats { dims })?;
        let sv = stats.to_vec2::<f64>()?;
        let op = Norm {
            dims,
            mean: sv[0].clone(),
            inv_std: sv[1].iter().map(|v| 1.0 / (v + eps).sqrt()).collect(),
            relu,
        };
        let stats = stats.to_dtype(x.dtype())?;
        Ok((op, stats.get(0)?, stats.get(1)?))
    }

    /// Per channel `(mean, inv_std·weight, bias)` as `T`: `y = (x − mean)·a + b`.
    fn coefficients<T: Real>(&self, affine: Option<(&[T], &[T])>) -> Vec<(T, T, T)> {
        (0..self.dims.1)
            .map(|ch| {
                let (g, b) = affine.map_or((T::one(), T::zero()), |(w, b)| (w[ch], b[ch]));
                let scale = T::from_f64(self.inv_std[ch] * f64_of(g));
                (T::from_f64(self.mean[ch]), scale, b)
            })
            .collect()
    }

    /// `y = (x − mean)·(inv_std·weight) + bias`, parallel over the (n, c) planes.
    fn forward<T: Real>(&self, x: &[T], affine: Option<(&[T], &[T])>) -> Result<Vec<T>> {
        let (_, c, h, w) = self.dims;
        let coef = self.coefficients(affine);
        let planes = |y: &mut [MaybeUninit<T>]| {
            y.par_chunks_mut(h * w)
                .zip(x.par_chunks(h * w))
                .enumerate()
                .for_each(|(i, (y, x))| {
                    if self.relu {
                        normalize_relu_plane(y, x, coef[i % c])
                    } else {
                        normalize_plane(y, x, coef[i % c])
                    }
                });
            Ok(())
        };
        // SAFETY: `y` and `x` have one length, so every plane of `y` is written whole.
        unsafe { written(x.len(), planes) }
    }

    /// The per-channel sums `[Σdy, Σdy·x̂]` and, when `need_dx`, the input gradient, where
    /// `dy` is `grad` (masked by `[res > 0]` when the op ends in a ReLU).
    fn backward(
        &self,
        x: &Tensor,
        weight: Option<&Tensor>,
        res: &Tensor,
        grad: &Tensor,
        need_dx: bool,
    ) -> Result<(Option<Tensor>, Vec<Vec<f64>>)> {
        let grad = if self.relu {
            super::relu::backward(res, grad)?
        } else {
            grad.contiguous()?
        };
        let (n, c, h, w) = self.dims;
        let sums = x
            .apply_op2_no_bwd(
                &grad,
                &GradSums {
                    dims: self.dims,
                    mean: self.mean.clone(),
                    inv_std: self.inv_std.clone(),
                },
            )?
            .to_vec2::<f64>()?;
        if !need_dx {
            return Ok((None, sums));
        }
        let gamma = match weight {
            Some(t) => t.to_dtype(DType::F64)?.to_vec1::<f64>()?,
            None => vec![1.0; c],
        };
        let m = (n * h * w) as f64;
        let coef = (0..c)
            .map(|ch| {
                let s = self.inv_std[ch];
                Coef {
                    mean: self.mean[ch],
                    mean_dy: sums[0][ch] / m,
                    a: s * gamma[ch],
                    b: -s * s * gamma[ch] * sums[1][ch] / m,
                }
            })
            .collect();
        let dx = grad.apply_op2_no_bwd(
            x,
            &InputGrad {
                dims: self.dims,
                coef,
            },
        )?;
        Ok((Some(dx), sums))
    }
}

/// `(x, grad_out) → [2, C]` in f64: per channel `Σdy` (row 0) and `Σdy·x̂` (row 1), with
/// `x̂ = (x − mean)·inv_std`.
struct GradSums {
    dims: Dims,
    mean: Vec<f64>,
    inv_std: Vec<f64>,
}

impl CustomOp2 for GradSums {
    fn name(&self) -> &'static str {
        "kernels-batch-norm-grad-sums"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let out = dispatch2(
            self.name(),
            s1,
            s2,
            || self.run::<f32>(s1, l1, s2, l2),
            || self.run::<f64>(s1, l1, s2, l2),
        )?;
        Ok((CpuStorage::F64(out), Shape::from((2, self.dims.1))))
    }
}

impl GradSums {
    fn run<T: Real>(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<Vec<f64>> {
        let dims = self.dims;
        let x = cpu_slice::<T>(self.name(), s1, l1, dims)?;
        let grad = cpu_slice::<T>(self.name(), s2, l2, dims)?;
        let sums: Vec<(f64, f64)> = (0..dims.1)
            .into_par_iter()
            .map(|ch| {
                let mu = self.mean[ch];
                let (mut sdy, mut sdyx) = (0.0, 0.0);
                for (x, g) in channel_planes(x, dims, ch).zip(channel_planes(grad, dims, ch)) {
                    let (a, b) = dot_sums(x, g, mu);
                    sdy += a;
                    sdyx += b;
                }
                (sdy, sdyx * self.inv_std[ch])
            })
            .collect();
        let (sdy, sdyx): (Vec<f64>, Vec<f64>) = sums.into_iter().unzip();
        Ok([sdy, sdyx].concat())
    }
}

/// `(Σg, Σg·(x − mu))` over one plane, in f64.
fn dot_sums<T: Real>(x: &[T], g: &[T], mu: f64) -> (f64, f64) {
    (plane_sum(g), plane_centered_dot(x, g, mu))
}

/// `Σg·(x − mu)` over one plane, with [`LANES`] accumulators.
#[multiversion(targets = "simd")]
fn plane_centered_dot<T: Real>(x: &[T], g: &[T], mu: f64) -> f64 {
    let mut acc = [0.0f64; LANES];
    let (xc, gc) = (x.chunks_exact(LANES), g.chunks_exact(LANES));
    let rest: f64 = (xc.remainder().iter().zip(gc.remainder()))
        .map(|(&v, &d)| f64_of(d) * (f64_of(v) - mu))
        .sum();
    for (xs, gs) in xc.zip(gc) {
        for ((a, &v), &d) in acc.iter_mut().zip(xs).zip(gs) {
            *a += f64_of(d) * (f64_of(v) - mu);
        }
    }
    acc.iter().sum::<f64>() + rest
}

/// `y = (x − mu)·a + b` over one plane.
#[multiversion(targets = "simd")]
fn normalize_plane<T: Real>(y: &mut [MaybeUninit<T>], x: &[T], (mu, a, b): (T, T, T)) {
    for (y, &v) in y.iter_mut().zip(x) {
        y.write((v - mu) * a + b);
    }
}

/// `y = max(0, (x − mu)·a + b)` over one plane.
#[multiversion(targets = "simd")]
fn normalize_relu_plane<T: Real>(y: &mut [MaybeUninit<T>], x: &[T], (mu, a, b): (T, T, T)) {
    for (y, &v) in y.iter_mut().zip(x) {
        y.write(num_traits::Float::max((v - mu) * a + b, T::zero()));
    }
}

/// `dx = (dy − mean_dy)·a + (x − mean)·b` over one plane, `coef = [mean, mean_dy, a, b]`.
#[multiversion(targets = "simd")]
fn input_grad_plane<T: Real>(gx: &mut [MaybeUninit<T>], grad: &[T], x: &[T], coef: [T; 4]) {
    let [mu, mdy, a, b] = coef;
    for ((gx, &d), &v) in gx.iter_mut().zip(grad).zip(x) {
        gx.write((d - mdy) * a + (v - mu) * b);
    }
}

/// One channel's input-gradient coefficients: `dx = a·(dy − mean_dy) + b·(x − mean)`.
#[derive(Debug, Clone, Copy)]
struct Coef {
    mean: f64,
    mean_dy: f64,
    a: f64,
    b: f64,
}

/// `(grad_out, x) → grad_x`, one pass parallel over the (n, c) planes.
struct InputGrad {
    dims: Dims,
    coef: Vec<Coef>,
}

impl CustomOp2 for InputGrad {
    fn name(&self) -> &'static str {
        "kernels-batch-norm-input-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let out = dispatch2(
            self.name(),
            s1,
            s2,
            || self.run::<f32>(s1, l1, s2, l2),
            || self.run::<f64>(s1, l1, s2, l2),
        )?;
        Ok((out, Shape::from(self.dims)))
    }
}

impl InputGrad {
    fn run<T: Real>(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<CpuStorage> {
        let (_, c, h, w) = self.dims;
        let grad = cpu_slice::<T>(self.name(), s1, l1, self.dims)?;
        let x = cpu_slice::<T>(self.name(), s2, l2, self.dims)?;
        let coef: Vec<[T; 4]> = self
            .coef
            .iter()
            .map(|k| [k.mean, k.mean_dy, k.a, k.b].map(T::from_f64))
            .collect();
        // SAFETY: `gx`, `grad` and `x` have one length, so every plane of `gx` is written
        // whole.
        let gx = unsafe {
            written(x.len(), |gx| {
                gx.par_chunks_mut(h * w)
                    .zip(grad.par_chunks(h * w).zip(x.par_chunks(h * w)))
                    .enumerate()
                    .for_each(|(i, (gx, (grad, x)))| input_grad_plane(gx, grad, x, coef[i % c]));
                Ok(())
            })
        }?;
        Ok(T::to_cpu_storage_owned(gx))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{
        Kernel, assert_close, finite_difference_check, forward_grads, uniform, values,
    };
    use super::*;

    #[test]
    fn batch_norm_eval_matches_candle() {
        for affine in [false, true] {
            for dtype in [DType::F32, DType::F64] {
                let x = super::super::test_util::uniform(&[3, 5, 4, 6], dtype, 7);
                let mean = super::super::test_util::uniform(&[5], dtype, 8);
                let var = (super::super::test_util::uniform(&[5], dtype, 9)
                    .abs()
                    .unwrap()
                    + 0.1)
                    .unwrap();
                let w = super::super::test_util::uniform(&[5], dtype, 10);
                let b = super::super::test_util::uniform(&[5], dtype, 11);
                let (w, b) = if affine {
                    (Some(&w), Some(&b))
                } else {
                    (None, None)
                };
                let got = batch_norm_eval(&x, &mean, &var, w, b, 1e-5).unwrap();
                let want = batch_norm_eval_reference(&x, &mean, &var, w, b, 1e-5).unwrap();
                let tol = if dtype == DType::F32 { 1e-6 } else { 1e-12 };
                super::super::test_util::assert_close(&got, &want, tol, "eval");
            }
        }
        let x = Tensor::zeros((1, 2, 2, 2), DType::F32, &candle_core::Device::Cpu).unwrap();
        let bad = Tensor::zeros(3, DType::F32, &candle_core::Device::Cpu).unwrap();
        let e = batch_norm_eval(&x, &bad, &bad, None, None, 1e-5).unwrap_err();
        assert!(e.to_string().contains("mean"), "{e}");
    }
    use candle_core::{DType, Device};

    type Bn =
        fn(&Tensor, Option<&Tensor>, Option<&Tensor>, f64) -> Result<(Tensor, Tensor, Tensor)>;

    type EvalFn =
        fn(&Tensor, &Tensor, &Tensor, Option<&Tensor>, Option<&Tensor>, f64) -> Result<Tensor>;

    /// Which of weight and bias are given.
    const AFFINE: [(bool, bool); 4] = [(false, false), (true, true), (true, false), (false, true)];

    /// `bn` applied to `[x, weight?, bias?]` (in that order), returning `y`.
    fn apply(bn: Bn, t: &[Tensor], affine: (bool, bool)) -> Result<Tensor> {
        let mut rest = t[1..].iter();
        let w = if affine.0 { rest.next() } else { None };
        let b = if affine.1 { rest.next() } else { None };
        bn(&t[0], w, b, 1e-5).map(|r| r.0)
    }

    /// `x` (offset and scaled per channel, so the statistics matter), then the weight and
    /// bias asked for.
    fn inputs(dims: &[usize], dtype: DType, affine: (bool, bool), seed: u64) -> Vec<Tensor> {
        let c = dims[1];
        let x = uniform(dims, dtype, seed);
        let scale = (uniform(&[1, c, 1, 1], dtype, seed + 1) + 2.0).unwrap();
        let shift = (uniform(&[1, c, 1, 1], dtype, seed + 2) * 3.0).unwrap();
        let x = x
            .broadcast_mul(&scale)
            .unwrap()
            .broadcast_add(&shift)
            .unwrap();
        let mut v = vec![x];
        if affine.0 {
            v.push((uniform(&[c], dtype, seed + 3) + 1.0).unwrap());
        }
        if affine.1 {
            v.push(uniform(&[c], dtype, seed + 4));
        }
        v
    }

    fn compare(dims: &[usize], dtype: DType, tol: f64) {
        for affine in AFFINE {
            let t = inputs(dims, dtype, affine, 5);
            let what = format!("{dims:?} {dtype:?} affine {affine:?}");
            let got = forward_grads(&|t: &[Tensor]| apply(batch_norm_train, t, affine), &t, 1);
            let want = forward_grads(
                &|t: &[Tensor]| apply(batch_norm_train_reference, t, affine),
                &t,
                1,
            );
            assert_close(&got.0, &want.0, tol, &format!("forward {what}"));
            for (i, (g, w)) in got.1.iter().zip(&want.1).enumerate() {
                assert_close(g, w, tol, &format!("gradient {i} {what}"));
            }
            let (_, m, v) = batch_norm_train(&t[0], None, None, 1e-5).unwrap();
            let (_, rm, rv) = batch_norm_train_reference(&t[0], None, None, 1e-5).unwrap();
            assert_close(&m, &rm, tol, &format!("mean {what}"));
            assert_close(&v, &rv, tol, &format!("var {what}"));
            assert_eq!(m.dims(), [dims[1]]);
        }
    }

    /// The fused op is the two ops it replaces, bit for bit: forward and every gradient, on
    /// the kernel and on the composition, in training and in evaluation mode.
    #[test]
    fn batch_norm_relu_is_relu_after_batch_norm_exactly() {
        let relu_after =
            |t: &[Tensor], affine| super::super::relu(&apply(batch_norm_train, t, affine)?);
        for composed in [false, true] {
            for dtype in [DType::F32, DType::F64] {
                for affine in AFFINE {
                    let t = inputs(&[3, 4, 5, 6], dtype, affine, 13);
                    let run = |f: Kernel| {
                        let go = || forward_grads(f, &t, 2);
                        if composed {
                            crate::kernels::with_compositions(go)
                        } else {
                            go()
                        }
                    };
                    let got = run(&|t: &[Tensor]| apply(batch_norm_relu_train, t, affine));
                    let want = run(&|t: &[Tensor]| relu_after(t, affine));
                    let what = format!("{dtype:?} affine {affine:?} composed {composed}");
                    assert_close(&got.0, &want.0, 0.0, &format!("forward {what}"));
                    assert!(values(&got.0).contains(&0.0), "{what}: no ReLU cut");
                    for (i, (g, w)) in got.1.iter().zip(&want.1).enumerate() {
                        assert_close(g, w, 0.0, &format!("gradient {i} {what}"));
                    }
                    let (_, m, v) = batch_norm_relu_train(&t[0], None, None, 1e-5).unwrap();
                    let (_, rm, rv) = batch_norm_train(&t[0], None, None, 1e-5).unwrap();
                    assert_eq!((values(&m), values(&v)), (values(&rm), values(&rv)));
                    let mut rest = t[1..].iter();
                    let w = if affine.0 { rest.next() } else { None };
                    let b = if affine.1 { rest.next() } else { None };
                    let eval = |f: EvalFn| f(&t[0], &m, &v, w, b, 1e-5).unwrap();
                    let want = super::super::relu(&eval(batch_norm_eval)).unwrap();
                    assert_close(
                        &eval(batch_norm_relu_eval),
                        &want,
                        0.0,
                        &format!("eval {what}"),
                    );
                }
            }
        }
    }

    #[test]
    fn batch_norm_relu_finite_differences() {
        for affine in AFFINE {
            let t = inputs(&[2, 2, 3, 2], DType::F64, affine, 17);
            let f: Kernel = &|t: &[Tensor]| apply(batch_norm_relu_train, t, affine);
            finite_difference_check(f, &t, 1e-6, &format!("affine {affine:?}"));
        }
    }

    #[test]
    fn batch_norm_matches_reference() {
        for dims in [[2, 3, 4, 5], [4, 2, 3, 3], [3, 4, 1, 1], [1, 2, 5, 1]] {
            compare(&dims, DType::F32, 1e-4);
            compare(&dims, DType::F64, 1e-10);
        }
    }

    /// At a realistic size (M = 8192 per channel) the f32 reference accumulates its sums in
    /// f32; the kernel in f64.
    #[test]
    fn batch_norm_matches_reference_at_size() {
        compare(&[8, 4, 32, 32], DType::F32, 1e-4);
    }

    #[test]
    fn batch_norm_finite_differences() {
        for affine in AFFINE {
            for dims in [[2, 2, 3, 2], [3, 1, 1, 2]] {
                let t = inputs(&dims, DType::F64, affine, 7);
                let f: Kernel = &|t: &[Tensor]| apply(batch_norm_train, t, affine);
                finite_difference_check(f, &t, 1e-6, &format!("{dims:?} affine {affine:?}"));
            }
        }
    }

    /// One value per channel (N·H·W = 1): zero variance, `y = bias` (or 0), no gradient to
    /// `x` or the weight, as in the reference.
    #[test]
    fn batch_norm_single_value_per_channel() {
        for dtype in [DType::F32, DType::F64] {
            for affine in AFFINE {
                let t = inputs(&[1, 3, 1, 1], dtype, affine, 9);
                let got = forward_grads(&|t: &[Tensor]| apply(batch_norm_train, t, affine), &t, 1);
                let want = forward_grads(
                    &|t: &[Tensor]| apply(batch_norm_train_reference, t, affine),
                    &t,
                    1,
                );
                assert_close(&got.0, &want.0, 0.0, "forward");
                for (g, w) in got.1.iter().zip(&want.1) {
                    assert_close(g, w, 0.0, "gradient");
                }
                assert!(values(&got.1[0]).iter().all(|&v| v == 0.0));
                let (_, m, v) = batch_norm_train(&t[0], None, None, 1e-5).unwrap();
                assert_eq!(values(&m), values(&t[0]));
                assert_eq!(values(&v), vec![0.0; 3]);
            }
        }
    }

    #[test]
    fn batch_norm_accepts_non_contiguous_input() {
        let base = uniform(&[2, 3, 5, 4], DType::F32, 11);
        let x = base.transpose(2, 3).unwrap();
        assert!(!x.is_contiguous());
        let w = uniform(&[3], DType::F32, 12);
        let b = uniform(&[3], DType::F32, 13);
        let got = batch_norm_train(&x, Some(&w), Some(&b), 1e-5).unwrap();
        let want = batch_norm_train_reference(&x, Some(&w), Some(&b), 1e-5).unwrap();
        assert_close(&got.0, &want.0, 1e-5, "forward");
        assert_close(&got.1, &want.1, 1e-5, "mean");
        assert_close(&got.2, &want.2, 1e-5, "var");
    }

    /// BF16 takes the composition; bad arguments are errors.
    #[test]
    fn batch_norm_other_dtypes_and_errors() {
        let x = uniform(&[2, 3, 4, 4], DType::F32, 1);
        let (y, _, _) =
            batch_norm_train(&x.to_dtype(DType::BF16).unwrap(), None, None, 1e-5).unwrap();
        assert_eq!(y.dtype(), DType::BF16);
        let want = batch_norm_train_reference(&x, None, None, 1e-5).unwrap().0;
        assert_close(&y, &want, 3e-2, "bf16");

        let err = |x: &Tensor, w: Option<&Tensor>| {
            batch_norm_train(x, w, None, 1e-5).unwrap_err().to_string()
        };
        assert!(err(&x.flatten(0, 1).unwrap(), None).contains("4-D"));
        assert!(err(&x, Some(&uniform(&[4], DType::F32, 0))).contains("shape"));
        assert!(err(&x, Some(&uniform(&[3], DType::F64, 0))).contains("dtype"));
        let ints = Tensor::zeros((1, 2, 2, 2), DType::U32, &Device::Cpu).unwrap();
        assert!(err(&ints, None).contains("float"));
    }
}
