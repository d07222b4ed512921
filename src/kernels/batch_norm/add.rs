//! Batch norm in training mode added into a running sum, `acc·sa[n] + BN(z)·sb[n]`, as one
//! CPU custom op: a cell node's sum whose term ends in a BN. The autograd graph then keeps
//! the sum and the BN's input, which the BN's backward needs anyway, but not the BN's
//! output, which nothing's backward reads. Same values and gradients, bit for bit, as
//! [`scaled_sum`] over `acc` and [`super::batch_norm_train`]'s output.

use super::super::scaled_sum::{scale_of, scale_samples, term_grad};
use super::super::{Real, SampleScales, Term, check_like, cpu_flat, cpu_slice, dispatch2};
use super::super::{scaled_sum, use_cpu_kernel, written};
use super::{Dims, Norm, affine, check};
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, bail};
use multiversion::multiversion;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// `acc·sa + batch_norm_train(z, weight, bias, eps).0 · sb`, `acc = (tensor, sa)` and `sb`
/// per-sample scales (`None`: 1). Differentiable with respect to `z`, `acc`, `weight` and
/// `bias` (first order); the scales are constants.
///
/// Returns `(y, mean, var)`: the sum, and `z`'s batch mean and biased variance per channel,
/// detached.
///
/// # Shapes
/// `z`, `acc.0`: `[N, C, H, W]`; `weight`, `bias`: `[C]`; scales: `N` values.
///
/// # Errors
/// As [`super::batch_norm_train`], and an `acc` of another shape, dtype or device than `z`,
/// or scales whose length is not `N`.
pub fn batch_norm_add_train(
    z: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
    acc: &Term,
    sb: Option<&SampleScales>,
) -> Result<(Tensor, Tensor, Tensor)> {
    const OP: &str = "batch_norm_add_train";
    let dims = check(OP, z, weight, bias)?;
    let (n, c, h, w) = dims;
    let (acc, sa) = acc;
    if acc.dims() != z.dims() {
        bail!(
            "{OP}: a sum of shape {:?} for an input of {:?}",
            acc.dims(),
            z.dims()
        )
    }
    check_like(OP, "the sum", acc, z)?;
    for s in [sa.as_ref(), sb].into_iter().flatten() {
        if s.len() != n {
            bail!("{OP}: {} scales for a batch of {n}", s.len())
        }
    }
    if !use_cpu_kernel(z) || n * h * w == 0 {
        let (y, mean, var) = super::batch_norm_train(z, weight, bias, eps)?;
        let terms = [(acc.clone(), sa.clone()), (y, sb.cloned())];
        return Ok((scaled_sum(&terms)?, mean, var));
    }
    let z = z.contiguous()?;
    let (norm, mean, var) = Norm::of_batch(&z, dims, eps, false)?;
    let op = NormAdd {
        norm,
        scales: [sa.clone(), sb.cloned()],
    };
    let acc = acc.contiguous()?;
    let y = if weight.is_none() && bias.is_none() {
        z.apply_op2(&acc, op)?
    } else {
        let (weight, bias) = affine(&z, c, weight, bias)?;
        z.apply_op3(&acc, &Tensor::stack(&[&weight, &bias], 0)?, op)?
    };
    Ok((y, mean, var))
}

/// `(z, acc) → acc·sa + norm(z)·sb` ([`CustomOp2`]), or with the affine weight and bias
/// stacked as a `[2, C]` third input ([`CustomOp3`]).
struct NormAdd {
    norm: Norm,
    /// `[sa, sb]`: the sum's and the normalised term's per-sample scales.
    scales: [Option<SampleScales>; 2],
}

impl CustomOp2 for NormAdd {
    fn name(&self) -> &'static str {
        "kernels-batch-norm-add"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let out = dispatch2(
            CustomOp2::name(self),
            s1,
            s2,
            || self.run::<f32>(s1, l1, s2, l2, None),
            || self.run::<f64>(s1, l1, s2, l2, None),
        )?;
        Ok((out, Shape::from(self.norm.dims)))
    }

    fn bwd(
        &self,
        z: &Tensor,
        acc: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dy = scale_samples(grad, &self.scales[1])?;
        let (dz, _) = self.norm.backward(z, None, res, &dy, z.track_op())?;
        Ok((dz, term_grad(acc, &self.scales[0], grad)?))
    }
}

impl CustomOp3 for NormAdd {
    fn name(&self) -> &'static str {
        "kernels-batch-norm-add-affine"
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
        let out = dispatch2(
            CustomOp3::name(self),
            s1,
            s2,
            || self.run_affine::<f32>(s1, l1, s2, l2, (s3, l3)),
            || self.run_affine::<f64>(s1, l1, s2, l2, (s3, l3)),
        )?;
        Ok((out, Shape::from(self.norm.dims)))
    }

    fn bwd(
        &self,
        z: &Tensor,
        acc: &Tensor,
        wb: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dy = scale_samples(grad, &self.scales[1])?;
        let weight = wb.get(0)?;
        let (dz, sums) = self
            .norm
            .backward(z, Some(&weight), res, &dy, z.track_op())?;
        let dwb = match wb.track_op() {
            true => {
                let c = self.norm.dims.1;
                let rows = [sums[1].as_slice(), sums[0].as_slice()].concat();
                Some(Tensor::from_vec(rows, (2, c), z.device())?.to_dtype(z.dtype())?)
            }
            false => None,
        };
        Ok((dz, term_grad(acc, &self.scales[0], grad)?, dwb))
    }
}

impl NormAdd {
    /// [`NormAdd::run`] with the weight and bias read from the `[2, C]` storage `wb`.
    fn run_affine<T: Real>(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        (s3, l3): (&CpuStorage, &Layout),
    ) -> Result<CpuStorage> {
        let c = self.norm.dims.1;
        let wb = cpu_flat::<T>("kernels-batch-norm-add-affine", s3, l3, 2 * c)?;
        self.run(s1, l1, s2, l2, Some(wb.split_at(c)))
    }

    fn run<T: Real>(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        affine: Option<(&[T], &[T])>,
    ) -> Result<CpuStorage> {
        let dims: Dims = self.norm.dims;
        let (_, c, h, w) = dims;
        let z = cpu_slice::<T>("kernels-batch-norm-add", s1, l1, dims)?;
        let acc = cpu_slice::<T>("kernels-batch-norm-add", s2, l2, dims)?;
        let coef = self.norm.coefficients(affine);
        let [sa, sb] = &self.scales;
        let planes = |y: &mut [MaybeUninit<T>]| {
            y.par_chunks_mut(h * w)
                .zip(acc.par_chunks(h * w).zip(z.par_chunks(h * w)))
                .enumerate()
                .for_each(|(i, (y, (acc, z)))| {
                    let (ta, tb) = (scale_of(sa, i / c), scale_of(sb, i / c));
                    add_normalized_plane(y, acc, z, (ta, tb), coef[i % c]);
                });
            Ok(())
        };
        // SAFETY: `y`, `acc` and `z` have one length, so every plane of `y` is written whole.
        let y = unsafe { written(z.len(), planes) }?;
        Ok(T::to_cpu_storage_owned(y))
    }
}

/// `y = acc·sa + ((z − mu)·a + b)·sb` over one plane.
#[multiversion(targets = "simd")]
fn add_normalized_plane<T: Real>(
    y: &mut [MaybeUninit<T>],
    acc: &[T],
    z: &[T],
    (sa, sb): (T, T),
    (mu, a, b): (T, T, T),
) {
    for ((y, &u), &v) in y.iter_mut().zip(acc).zip(z) {
        y.write(u * sa + ((v - mu) * a + b) * sb);
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::test_util::{
        Kernel, assert_close, finite_difference_check, forward_grads, uniform, values,
    };
    use super::*;
    use candle_core::DType;

    /// Which of weight and bias are given.
    const AFFINE: [(bool, bool); 4] = [(false, false), (true, true), (true, false), (false, true)];

    fn mask(n: usize, seed: usize) -> SampleScales {
        (0..n)
            .map(|i| {
                if (i + seed).is_multiple_of(3) {
                    0.0
                } else {
                    1.25
                }
            })
            .collect()
    }

    /// `[z, acc, weight?, bias?]`, `z` offset and scaled per channel.
    fn inputs(dims: &[usize], dtype: DType, affine: (bool, bool), seed: u64) -> Vec<Tensor> {
        let c = dims[1];
        let scale = (uniform(&[1, c, 1, 1], dtype, seed + 1) + 2.0).unwrap();
        let z = uniform(dims, dtype, seed).broadcast_mul(&scale).unwrap();
        let mut v = vec![z, uniform(dims, dtype, seed + 2)];
        if affine.0 {
            v.push((uniform(&[c], dtype, seed + 3) + 1.0).unwrap());
        }
        if affine.1 {
            v.push(uniform(&[c], dtype, seed + 4));
        }
        v
    }

    type Scales = [Option<SampleScales>; 2];

    /// The fused op on `t` (`[z, acc, weight?, bias?]`).
    fn fused(t: &[Tensor], affine: (bool, bool), s: &Scales) -> Result<Tensor> {
        let mut rest = t[2..].iter();
        let w = if affine.0 { rest.next() } else { None };
        let b = if affine.1 { rest.next() } else { None };
        let acc = (t[1].clone(), s[0].clone());
        Ok(batch_norm_add_train(&t[0], w, b, 1e-5, &acc, s[1].as_ref())?.0)
    }

    /// The two ops it replaces.
    fn separate(t: &[Tensor], affine: (bool, bool), s: &Scales) -> Result<Tensor> {
        let mut rest = t[2..].iter();
        let w = if affine.0 { rest.next() } else { None };
        let b = if affine.1 { rest.next() } else { None };
        let y = super::super::batch_norm_train(&t[0], w, b, 1e-5)?.0;
        scaled_sum(&[(t[1].clone(), s[0].clone()), (y, s[1].clone())])
    }

    fn all_scales(n: usize) -> Vec<Scales> {
        let some = |k| Some(mask(n, k));
        vec![
            [None, None],
            [some(0), None],
            [None, some(1)],
            [some(2), some(0)],
        ]
    }

    /// Bit for bit the BN then the scaled sum: forward, every gradient, the statistics; on
    /// the kernel and on the composition.
    #[test]
    fn batch_norm_add_is_the_two_ops_exactly() {
        for composed in [false, true] {
            for dtype in [DType::F32, DType::F64] {
                for affine in AFFINE {
                    for s in all_scales(4) {
                        let t = inputs(&[4, 3, 5, 6], dtype, affine, 31);
                        let run = |f: Kernel| {
                            let go = || forward_grads(f, &t, 4);
                            if composed {
                                crate::kernels::with_compositions(go)
                            } else {
                                go()
                            }
                        };
                        let got = run(&|t: &[Tensor]| fused(t, affine, &s));
                        let want = run(&|t: &[Tensor]| separate(t, affine, &s));
                        let what = format!("{dtype:?} {affine:?} {s:?} composed {composed}");
                        assert_close(&got.0, &want.0, 0.0, &format!("forward {what}"));
                        for (i, (g, w)) in got.1.iter().zip(&want.1).enumerate() {
                            assert_close(g, w, 0.0, &format!("gradient {i} {what}"));
                        }
                        let acc = (t[1].clone(), s[0].clone());
                        let (_, m, v) =
                            batch_norm_add_train(&t[0], None, None, 1e-5, &acc, None).unwrap();
                        let (_, rm, rv) =
                            super::super::batch_norm_train(&t[0], None, None, 1e-5).unwrap();
                        assert_eq!((values(&m), values(&v)), (values(&rm), values(&rv)));
                    }
                }
            }
        }
    }

    #[test]
    fn batch_norm_add_finite_differences() {
        for affine in AFFINE {
            for s in all_scales(3) {
                let t = inputs(&[3, 2, 2, 3], DType::F64, affine, 37);
                let f = |t: &[Tensor]| fused(t, affine, &s);
                finite_difference_check(&f, &t, 1e-6, &format!("{affine:?} {s:?}"));
            }
        }
    }

    #[test]
    fn batch_norm_add_errors() {
        let z = uniform(&[2, 3, 2, 2], DType::F32, 1);
        let bad = (uniform(&[2, 3, 2, 1], DType::F32, 2), None);
        let e = batch_norm_add_train(&z, None, None, 1e-5, &bad, None).unwrap_err();
        assert!(e.to_string().contains("a sum of shape"), "{e}");
        let acc = (z.clone(), Some(vec![1.0; 3]));
        let e = batch_norm_add_train(&z, None, None, 1e-5, &acc, None).unwrap_err();
        assert!(e.to_string().contains("3 scales for a batch of 2"), "{e}");
        let acc = (z.to_dtype(DType::F64).unwrap(), None);
        let e = batch_norm_add_train(&z, None, None, 1e-5, &acc, None).unwrap_err();
        assert!(e.to_string().contains("dtype"), "{e}");
    }
}
