//! A cell node's sum under DARTS's drop path, `Σⱼ sⱼ[n] · xⱼ`: each term optionally scaled
//! per sample by constants (the drop-path mask, `1/keep` or 0 per sample), as CPU custom ops:
//! the first two terms in one pass, every further term one `acc + s[n] · x` pass.
//!
//! The composition it replaces (`broadcast_mul` by a mask tensor, then `+`) keeps every
//! scaled term alive until the backward pass ends, and its backward also computes a gradient
//! for the mask, as large as the term, which nothing reads but the gradient store keeps
//! until the pass is over: most of a fifth of a DARTS_V2 retraining step's peak memory. Here
//! the scales are constants of the op, so a node keeps one tensor (its sum) and the backward
//! makes one scaled copy of the output gradient per scaled term (an unscaled term gets the
//! output gradient itself, as with `+`).
//!
//! An unscaled term counts as scaled by 1, which is exact, so the sum is bit for bit the
//! composition's. Off the CPU (and for dtypes other than f32 / f64) the composition runs.

use super::{Real, check_float, check_like, cpu_flat, dispatch2, same_shape, use_cpu_kernel};
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, bail};
use multiversion::multiversion;
use rayon::prelude::*;

/// Per-sample scales of one term: one value per sample of the batch (axis 0).
pub type SampleScales = Vec<f32>;

/// A term of [`scaled_sum`]: a tensor and its per-sample scales (`None`: added as it is).
pub type Term = (Tensor, Option<SampleScales>);

/// `Σⱼ sⱼ[n] · xⱼ` over `terms` (left to right), a term without scales added as it is.
/// Differentiable with respect to every term (first order); the scales are constants.
///
/// # Shapes
/// Every term has one shape `[N, ...]`; each scale vector has `N` values → `[N, ...]`.
///
/// # Errors
/// No terms, terms of differing shapes, dtypes or devices, a non-float dtype, a 0-D term, or
/// a scale vector whose length is not the batch size.
pub fn scaled_sum(terms: &[Term]) -> Result<Tensor> {
    const OP: &str = "scaled_sum";
    let Some((x0, _)) = terms.first() else {
        bail!("{OP}: no terms")
    };
    check_float(OP, x0.dtype())?;
    let Some(&n) = x0.dims().first() else {
        bail!("{OP}: expected a batch axis, got a scalar")
    };
    for (x, s) in terms {
        if x.dims() != x0.dims() {
            bail!("{OP}: terms of shapes {:?} and {:?}", x0.dims(), x.dims())
        }
        check_like(OP, "a term", x, x0)?;
        if let Some(s) = s
            && s.len() != n
        {
            bail!("{OP}: {} scales for a batch of {n}", s.len())
        }
    }
    if terms.iter().all(|(_, s)| s.is_none()) {
        return plain_sum(terms);
    }
    if !use_cpu_kernel(x0) {
        return scaled_sum_reference(terms);
    }
    let mut rest = terms.iter();
    let mut acc = match (rest.next(), rest.next()) {
        (Some((a, sa)), Some((b, sb))) => a.contiguous()?.apply_op2(
            &b.contiguous()?,
            Pair {
                scales: [sa.clone(), sb.clone()],
            },
        )?,
        (Some((a, sa)), None) => a.contiguous()?.apply_op1(Single(sa.clone()))?,
        _ => unreachable!("there is at least one term"),
    };
    for (x, s) in rest {
        acc = acc.apply_op2(
            &x.contiguous()?,
            Pair {
                scales: [None, s.clone()],
            },
        )?;
    }
    Ok(acc)
}

/// The composition of Candle ops that [`scaled_sum`] replaces (and runs off the CPU): each
/// scaled term `broadcast_mul`-ed by its scales as an `[N, 1, ...]` tensor, then `+`.
pub fn scaled_sum_reference(terms: &[Term]) -> Result<Tensor> {
    let scaled = terms
        .iter()
        .map(|(x, s)| {
            let Some(s) = s else { return Ok(x.clone()) };
            let mut dims = vec![1; x.rank()];
            dims[0] = s.len();
            let s = Tensor::from_slice(s, dims, &candle_core::Device::Cpu)?
                .to_dtype(x.dtype())?
                .to_device(x.device())?;
            x.broadcast_mul(&s)
        })
        .collect::<Result<Vec<_>>>()?;
    plain_sum(&scaled.into_iter().map(|x| (x, None)).collect::<Vec<_>>())
}

/// `x₀ + x₁ + …` with Candle's `+`, left to right.
fn plain_sum(terms: &[Term]) -> Result<Tensor> {
    let mut xs = terms.iter().map(|(x, _)| x);
    let first = xs
        .next()
        .ok_or_else(|| candle_core::Error::Msg("scaled_sum: no terms".into()))?;
    xs.try_fold(first.clone(), |acc, x| acc + x)
}

/// The gradient of a term: the output gradient scaled per sample, or itself when unscaled;
/// none for a term that is not part of the autograd graph.
pub(super) fn term_grad(
    x: &Tensor,
    scales: &Option<SampleScales>,
    grad: &Tensor,
) -> Result<Option<Tensor>> {
    if !x.track_op() {
        return Ok(None);
    }
    scale_samples(grad, scales).map(Some)
}

/// `t` scaled per sample by `scales` (not differentiable), or `t` itself when unscaled.
pub(super) fn scale_samples(t: &Tensor, scales: &Option<SampleScales>) -> Result<Tensor> {
    match scales {
        None => Ok(t.clone()),
        Some(_) => t.contiguous()?.apply_op1_no_bwd(&Single(scales.clone())),
    }
}

/// The scale of sample `i` as `T` (1 when unscaled).
pub(super) fn scale_of<T: Real>(scales: &Option<SampleScales>, i: usize) -> T {
    scales
        .as_ref()
        .map_or(T::one(), |s| T::from_f64(f64::from(s[i])))
}

/// `s[n] · x` (one term, or a term's gradient).
struct Single(Option<SampleScales>);

impl CustomOp1 for Single {
    fn name(&self) -> &'static str {
        "kernels-scaled-sum-single"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = match s {
            CpuStorage::F32(_) => self.run::<f32>(s, l)?,
            CpuStorage::F64(_) => self.run::<f64>(s, l)?,
            _ => bail!("{}: expected f32 or f64, got {:?}", self.name(), s.dtype()),
        };
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        term_grad(x, &self.0, grad)
    }
}

impl Single {
    fn run<T: Real>(&self, s: &CpuStorage, l: &Layout) -> Result<CpuStorage> {
        let x = cpu_flat::<T>(self.name(), s, l, l.shape().elem_count())?;
        let per = per_sample(self.name(), l)?;
        let mut y = vec![T::zero(); x.len()];
        y.par_chunks_mut(per)
            .zip(x.par_chunks(per))
            .enumerate()
            .for_each(|(i, (y, x))| scale_plane(y, x, scale_of(&self.0, i)));
        Ok(T::to_cpu_storage_owned(y))
    }
}

/// `sa[n] · a + sb[n] · b` (the first two terms, or the running sum, unscaled, and a term).
struct Pair {
    scales: [Option<SampleScales>; 2],
}

impl CustomOp2 for Pair {
    fn name(&self) -> &'static str {
        "kernels-scaled-sum-pair"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        same_shape(self.name(), ("term", l1), ("term", l2))?;
        let out = dispatch2(
            self.name(),
            s1,
            s2,
            || self.run::<f32>(s1, l1, s2, l2),
            || self.run::<f64>(s1, l1, s2, l2),
        )?;
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let [sa, sb] = &self.scales;
        Ok((term_grad(a, sa, grad)?, term_grad(b, sb, grad)?))
    }
}

impl Pair {
    fn run<T: Real>(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<CpuStorage> {
        let len = l1.shape().elem_count();
        let a = cpu_flat::<T>(self.name(), s1, l1, len)?;
        let b = cpu_flat::<T>(self.name(), s2, l2, len)?;
        let per = per_sample(self.name(), l1)?;
        let [sa, sb] = &self.scales;
        let mut y = vec![T::zero(); len];
        y.par_chunks_mut(per)
            .zip(a.par_chunks(per).zip(b.par_chunks(per)))
            .enumerate()
            .for_each(|(i, (y, (a, b)))| {
                pair_plane(y, a, b, scale_of(sa, i), scale_of(sb, i));
            });
        Ok(T::to_cpu_storage_owned(y))
    }
}

/// Elements per sample (the product of every axis after the first), at least 1.
fn per_sample(op: &str, l: &Layout) -> Result<usize> {
    match l.dims() {
        [] => bail!("{op}: expected a batch axis, got a scalar"),
        [_, rest @ ..] => Ok(rest.iter().product::<usize>().max(1)),
    }
}

/// `y = s · x` over one sample.
#[multiversion(targets = "simd")]
fn scale_plane<T: Real>(y: &mut [T], x: &[T], s: T) {
    for (y, &v) in y.iter_mut().zip(x) {
        *y = v * s;
    }
}

/// `y = a · sa + b · sb` over one sample.
#[multiversion(targets = "simd")]
fn pair_plane<T: Real>(y: &mut [T], a: &[T], b: &[T], sa: T, sb: T) {
    for ((y, &u), &v) in y.iter_mut().zip(a).zip(b) {
        *y = u * sa + v * sb;
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{assert_close, finite_difference_check, forward_grads, uniform};
    use super::*;
    use candle_core::DType;

    /// Scales as the drop path draws them: `1/keep` or 0 per sample.
    fn mask(n: usize, seed: usize) -> SampleScales {
        (0..n)
            .map(|i| {
                if (i + seed).is_multiple_of(3) {
                    0.0
                } else {
                    1.0 / 0.8
                }
            })
            .collect()
    }

    /// Every pattern of scaled and unscaled terms, 1 to 3 terms.
    fn patterns() -> Vec<Vec<bool>> {
        (1..=3)
            .flat_map(|k| {
                (0..1u32 << k).map(move |bits| (0..k).map(|j| bits >> j & 1 == 1).collect())
            })
            .collect()
    }

    fn run(xs: &[Tensor], scaled: &[bool], f: fn(&[Term]) -> Result<Tensor>) -> Result<Tensor> {
        let n = xs[0].dim(0)?;
        let terms: Vec<_> = (xs.iter().zip(scaled).enumerate())
            .map(|(j, (x, &s))| (x.clone(), s.then(|| mask(n, j))))
            .collect();
        f(&terms)
    }

    /// Bit for bit the composition, forward and gradients, for every pattern of scaled terms.
    #[test]
    fn scaled_sum_is_the_composition_exactly() {
        for dtype in [DType::F32, DType::F64] {
            for scaled in patterns() {
                let xs: Vec<Tensor> = (0..scaled.len())
                    .map(|j| uniform(&[5, 3, 4, 2], dtype, 20 + j as u64))
                    .collect();
                let got = forward_grads(&|t: &[Tensor]| run(t, &scaled, scaled_sum), &xs, 3);
                let want = forward_grads(
                    &|t: &[Tensor]| run(t, &scaled, scaled_sum_reference),
                    &xs,
                    3,
                );
                let what = format!("{dtype:?} scaled {scaled:?}");
                assert_close(&got.0, &want.0, 0.0, &format!("forward {what}"));
                for (j, (g, w)) in got.1.iter().zip(&want.1).enumerate() {
                    assert_close(g, w, 0.0, &format!("gradient {j} {what}"));
                }
            }
        }
    }

    #[test]
    fn scaled_sum_finite_differences() {
        for scaled in patterns() {
            let xs: Vec<Tensor> = (0..scaled.len())
                .map(|j| uniform(&[3, 2, 2, 3], DType::F64, 40 + j as u64))
                .collect();
            let f = |t: &[Tensor]| run(t, &scaled, scaled_sum);
            finite_difference_check(&f, &xs, 1e-6, &format!("{scaled:?}"));
        }
    }

    /// A sample scaled by 0 takes the other terms' values only.
    #[test]
    fn a_dropped_sample_contributes_nothing() {
        let x = uniform(&[3, 2, 2, 2], DType::F32, 1);
        let y = uniform(&[3, 2, 2, 2], DType::F32, 2);
        let s = vec![0.0, 2.0, 1.0];
        let out = scaled_sum(&[(x.clone(), Some(s)), (y.clone(), None)]).unwrap();
        let want = (x
            .broadcast_mul(
                &Tensor::new(&[0f32, 2.0, 1.0], x.device())
                    .unwrap()
                    .reshape((3, 1, 1, 1))
                    .unwrap(),
            )
            .unwrap()
            + &y)
            .unwrap();
        assert_close(&out, &want, 0.0, "forward");
        let x0 = out.get(0).unwrap();
        assert_close(&x0, &y.get(0).unwrap(), 0.0, "sample 0 is y's");
    }

    #[test]
    fn scaled_sum_errors() {
        let x = uniform(&[2, 3], DType::F32, 1);
        let e = scaled_sum(&[]).unwrap_err();
        assert!(e.to_string().contains("no terms"), "{e}");
        let e = scaled_sum(&[(x.clone(), Some(vec![1.0; 3]))]).unwrap_err();
        assert!(e.to_string().contains("3 scales for a batch of 2"), "{e}");
        let e =
            scaled_sum(&[(x.clone(), None), (uniform(&[2, 4], DType::F32, 2), None)]).unwrap_err();
        assert!(e.to_string().contains("shapes"), "{e}");
        let e = scaled_sum(&[(x.to_dtype(DType::F64).unwrap(), None), (x, None)]).unwrap_err();
        assert!(e.to_string().contains("dtype"), "{e}");
    }
}
