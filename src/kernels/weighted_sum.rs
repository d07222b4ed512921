//! The mixed edge's weighted sum `Σⱼ p[kⱼ] · xⱼ` as a chain of CPU custom ops: the first
//! term one scaling pass, every further term one fused `acc + p[k] · x` pass.
//!
//! Candle's composition (`broadcast_mul`, then `+`) makes two tensors per term, the product
//! and the partial sum, and the autograd graph keeps both alive until the backward pass
//! ends; here each term makes one (its partial sum), and the backward of a term is one
//! scaling pass for `x` and one dot product for `p` (the partial sum's gradient is the
//! output gradient itself, passed on without a copy).
//!
//! The dot products that give `p`'s gradient are summed in f64 over fixed chunks, in chunk
//! order, so the result does not depend on how the threads are scheduled. Every loop is
//! compiled per CPU (`multiversion`).

use super::{Real, check_like, cpu_flat, dispatch2, same_shape, use_cpu_kernel};
use candle_core::backend::BackendStorage;
use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor, bail,
};
use multiversion::multiversion;
use rayon::prelude::*;

/// Elements per parallel task.
const CHUNK: usize = 1 << 14;

/// `Σⱼ p[ks[j]] · xs[j]`, with gradients for every `xs[j]` and for `p`.
///
/// # Shapes
/// `xs`: one or more tensors of one shape; `p`: [K] with every `ks[j] < K` → the shape of
/// `xs[0]`.
///
/// # Errors
/// No terms, `xs` and `ks` of different lengths, differing shapes, dtypes or devices, `p` not
/// a vector, an index out of range, or a non-float dtype.
pub fn weighted_sum(xs: &[Tensor], p: &Tensor, ks: &[usize]) -> Result<Tensor> {
    const OP: &str = "weighted_sum";
    let Some(x0) = xs.first() else {
        bail!("{OP}: no terms")
    };
    if xs.len() != ks.len() {
        bail!("{OP}: {} terms but {} weight indices", xs.len(), ks.len())
    }
    if !x0.dtype().is_float() {
        bail!("{OP}: expected float tensors, got {:?}", x0.dtype())
    }
    let &[k_len] = p.dims() else {
        bail!(
            "{OP}: the weights must be a vector, got shape {:?}",
            p.dims()
        )
    };
    check_like(OP, "the weights", p, x0)?;
    for (x, &k) in xs.iter().zip(ks) {
        if x.dims() != x0.dims() {
            bail!("{OP}: terms of shapes {:?} and {:?}", x0.dims(), x.dims())
        }
        check_like(OP, "a term", x, x0)?;
        if k >= k_len {
            bail!("{OP}: weight index {k} out of range for {k_len} weights")
        }
    }
    if !use_cpu_kernel(x0) {
        return weighted_sum_reference(xs, p, ks);
    }
    let p = p.contiguous()?;
    let mut acc = x0.contiguous()?.apply_op2(&p, Scale { k: ks[0] })?;
    for (x, &k) in xs.iter().zip(ks).skip(1) {
        acc = acc.apply_op3(&x.contiguous()?, &p, Axpy { k })?;
    }
    Ok(acc)
}

/// The composition of Candle ops that [`weighted_sum`] replaces (and runs off the CPU).
pub fn weighted_sum_reference(xs: &[Tensor], p: &Tensor, ks: &[usize]) -> Result<Tensor> {
    let mut sum: Option<Tensor> = None;
    for (x, &k) in xs.iter().zip(ks) {
        let y = x.broadcast_mul(&p.get(k)?)?;
        sum = Some(match sum {
            None => y,
            Some(s) => (s + y)?,
        });
    }
    sum.ok_or_else(|| candle_core::Error::Msg("weighted_sum: no terms".into()))
}

/// `p[k]` as f64 (the weights are a small contiguous vector).
fn weight_at(p: &Tensor, k: usize) -> Result<f64> {
    p.get(k)?.to_dtype(DType::F64)?.to_scalar::<f64>()
}

/// The element `k` of the CPU vector `p`.
fn weight_of<T: Real>(op: &str, p: &CpuStorage, l: &Layout, k: usize) -> Result<T> {
    let v = cpu_flat::<T>(op, p, l, l.shape().elem_count())?;
    v.get(k)
        .copied()
        .ok_or_else(|| candle_core::Error::Msg(format!("{op}: weight index {k} out of range")))
}

/// Gradients of a term `w · x` (w = p[k]) for the output gradient `grad`: `w · grad` for `x`
/// and, for `p`, a [K] vector holding `⟨grad, x⟩` at `k` and zeros elsewhere.
fn term_grads(x: &Tensor, p: &Tensor, k: usize, grad: &Tensor) -> Result<(Tensor, Tensor)> {
    let grad = grad.contiguous()?;
    let dx = grad.apply_op1_no_bwd(&Scaled(weight_at(p, k)?))?;
    let dp = grad.apply_op2_no_bwd(
        &x.contiguous()?,
        &OneHotDot {
            k,
            len: p.elem_count(),
        },
    )?;
    Ok((dx, dp))
}

/// `p[k] · x` (the first term).
struct Scale {
    k: usize,
}

impl CustomOp2 for Scale {
    fn name(&self) -> &'static str {
        "kernels-weighted-sum-scale"
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
            || {
                let w = weight_of::<f32>(self.name(), s2, l2, self.k)?;
                scaled::<f32>(self.name(), s1, l1, w)
            },
            || {
                let w = weight_of::<f64>(self.name(), s2, l2, self.k)?;
                scaled::<f64>(self.name(), s1, l1, w)
            },
        )?;
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        p: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dp) = term_grads(x, p, self.k, grad)?;
        Ok((Some(dx), Some(dp)))
    }
}

/// `acc + p[k] · x` (every further term).
struct Axpy {
    k: usize,
}

impl CustomOp3 for Axpy {
    fn name(&self) -> &'static str {
        "kernels-weighted-sum-axpy"
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
        same_shape(self.name(), ("sum", l1), ("term", l2))?;
        let out = dispatch2(
            self.name(),
            s1,
            s2,
            || self.run::<f32>(s1, l1, s2, l2, s3, l3),
            || self.run::<f64>(s1, l1, s2, l2, s3, l3),
        )?;
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        _acc: &Tensor,
        x: &Tensor,
        p: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dp) = term_grads(x, p, self.k, grad)?;
        Ok((Some(grad.clone()), Some(dx), Some(dp)))
    }
}

impl Axpy {
    fn run<T: Real>(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<CpuStorage> {
        let n = l1.shape().elem_count();
        let acc = cpu_flat::<T>(self.name(), s1, l1, n)?;
        let x = cpu_flat::<T>(self.name(), s2, l2, n)?;
        let w = weight_of::<T>(self.name(), s3, l3, self.k)?;
        let mut y = vec![T::zero(); n];
        y.par_chunks_mut(CHUNK)
            .zip(acc.par_chunks(CHUNK).zip(x.par_chunks(CHUNK)))
            .for_each(|(y, (acc, x))| axpy_chunk(y, acc, x, w));
        Ok(T::to_cpu_storage_owned(y))
    }
}

/// `y = acc + w · x` over one chunk.
#[multiversion(targets = "simd")]
fn axpy_chunk<T: Real>(y: &mut [T], acc: &[T], x: &[T], w: T) {
    for ((y, &a), &v) in y.iter_mut().zip(acc).zip(x) {
        *y = a + w * v;
    }
}

/// `y = w · x` over one chunk.
#[multiversion(targets = "simd")]
fn scale_chunk<T: Real>(y: &mut [T], x: &[T], w: T) {
    for (y, &v) in y.iter_mut().zip(x) {
        *y = w * v;
    }
}

/// `Σ g·x` over one chunk, in f64 with [`LANES`] accumulators (a fixed order).
#[multiversion(targets = "simd")]
fn dot_chunk<T: Real>(g: &[T], x: &[T]) -> f64 {
    let mut acc = [0.0f64; LANES];
    let (gc, xc) = (g.chunks_exact(LANES), x.chunks_exact(LANES));
    let rest: f64 = (gc.remainder().iter().zip(xc.remainder()))
        .map(|(&a, &b)| (a * b).to_f64())
        .sum();
    for (gs, xs) in gc.zip(xc) {
        for ((s, &a), &b) in acc.iter_mut().zip(gs).zip(xs) {
            *s += (a * b).to_f64();
        }
    }
    acc.iter().sum::<f64>() + rest
}

/// Accumulators of [`dot_chunk`]: two AVX-512 registers of f64.
const LANES: usize = 16;

/// `w · x` for a contiguous CPU tensor.
fn scaled<T: Real>(op: &str, s: &CpuStorage, l: &Layout, w: T) -> Result<CpuStorage> {
    let x = cpu_flat::<T>(op, s, l, l.shape().elem_count())?;
    let mut y = vec![T::zero(); x.len()];
    y.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(y, x)| scale_chunk(y, x, w));
    Ok(T::to_cpu_storage_owned(y))
}

/// `w · x` without a backward (the gradient of a term with respect to its input).
struct Scaled(f64);

impl CustomOp1 for Scaled {
    fn name(&self) -> &'static str {
        "kernels-weighted-sum-scaled"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = match s {
            CpuStorage::F32(_) => scaled::<f32>(self.name(), s, l, self.0 as f32)?,
            CpuStorage::F64(_) => scaled::<f64>(self.name(), s, l, self.0)?,
            _ => bail!("{}: expected f32 or f64, got {:?}", self.name(), s.dtype()),
        };
        Ok((out, l.shape().clone()))
    }
}

/// `(grad, x) → [K]` holding `⟨grad, x⟩` at `k`, zeros elsewhere (a weight's gradient).
struct OneHotDot {
    k: usize,
    len: usize,
}

impl CustomOp2 for OneHotDot {
    fn name(&self) -> &'static str {
        "kernels-weighted-sum-dot"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        same_shape(self.name(), ("gradient", l1), ("term", l2))?;
        let out = dispatch2(
            self.name(),
            s1,
            s2,
            || self.run::<f32>(s1, l1, s2, l2),
            || self.run::<f64>(s1, l1, s2, l2),
        )?;
        Ok((out, Shape::from(self.len)))
    }
}

impl OneHotDot {
    fn run<T: Real>(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<CpuStorage> {
        let n = l1.shape().elem_count();
        let g = cpu_flat::<T>(self.name(), s1, l1, n)?;
        let x = cpu_flat::<T>(self.name(), s2, l2, n)?;
        let partial: Vec<f64> = g
            .par_chunks(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .map(|(g, x)| dot_chunk(g, x))
            .collect();
        let mut out = vec![T::zero(); self.len];
        out[self.k] = T::from_f64(partial.iter().sum::<f64>());
        Ok(T::to_cpu_storage_owned(out))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{
        Kernel, assert_close, finite_difference_check, forward_grads, uniform,
    };
    use super::*;
    use candle_core::Device;

    fn inputs(dims: &[usize], terms: usize, k_len: usize, dtype: DType) -> Vec<Tensor> {
        let mut v: Vec<Tensor> = (0..terms)
            .map(|j| uniform(dims, dtype, 10 + j as u64))
            .collect();
        v.push(uniform(&[k_len], dtype, 3));
        v
    }

    #[test]
    fn weighted_sum_matches_candle() {
        let ks = [0usize, 2, 3, 5, 6, 7, 1];
        for dims in [vec![2, 3, 7, 5], vec![CHUNK + 17], vec![4, 16, 8, 8]] {
            for terms in [1, 2, 7] {
                for dtype in [DType::F32, DType::F64] {
                    let t = inputs(&dims, terms, 8, dtype);
                    let ks = &ks[..terms];
                    let f: Kernel = &|t: &[Tensor]| weighted_sum(&t[..terms], &t[terms], ks);
                    let r: Kernel =
                        &|t: &[Tensor]| weighted_sum_reference(&t[..terms], &t[terms], ks);
                    let got = forward_grads(f, &t, 1);
                    let want = forward_grads(r, &t, 1);
                    let tol = if dtype == DType::F32 { 1e-5 } else { 1e-12 };
                    let what = format!("{dims:?}, {terms} terms, {dtype:?}");
                    assert_close(&got.0, &want.0, tol, &format!("forward {what}"));
                    for (a, (g, w)) in got.1.iter().zip(&want.1).enumerate() {
                        // The weight gradient sums over every element.
                        let tol = if a == terms { tol * 100.0 } else { tol };
                        assert_close(g, w, tol, &format!("gradient {a} {what}"));
                    }
                }
            }
        }
    }

    #[test]
    fn weighted_sum_finite_differences() {
        let t = inputs(&[2, 3, 4, 5], 3, 4, DType::F64);
        let f: Kernel = &|t: &[Tensor]| weighted_sum(&t[..3], &t[3], &[3, 0, 2]);
        finite_difference_check(f, &t, 1e-6, "weighted_sum");
    }

    /// A repeated weight index accumulates both terms' contributions to that weight.
    #[test]
    fn weighted_sum_repeated_index_and_errors() {
        let t = inputs(&[3, 5], 2, 2, DType::F64);
        let f: Kernel = &|t: &[Tensor]| weighted_sum(&t[..2], &t[2], &[1, 1]);
        let r: Kernel = &|t: &[Tensor]| weighted_sum_reference(&t[..2], &t[2], &[1, 1]);
        let (got, want) = (forward_grads(f, &t, 2), forward_grads(r, &t, 2));
        assert_close(&got.1[2], &want.1[2], 1e-12, "repeated index");

        let p = Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap();
        let x = Tensor::zeros((2, 2), DType::F32, &Device::Cpu).unwrap();
        let y = Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap();
        let err = |r: Result<Tensor>| r.unwrap_err().to_string();
        assert!(err(weighted_sum(&[], &p, &[])).contains("no terms"));
        assert!(err(weighted_sum(std::slice::from_ref(&x), &p, &[2])).contains("out of range"));
        assert!(err(weighted_sum(&[x.clone(), y], &p, &[0, 1])).contains("shapes"));
        assert!(err(weighted_sum(std::slice::from_ref(&x), &p, &[0, 1])).contains("indices"));
        assert!(err(weighted_sum(std::slice::from_ref(&x), &x, &[0])).contains("vector"));
        let p64 = p.to_dtype(DType::F64).unwrap();
        assert!(err(weighted_sum(&[x], &p64, &[0])).contains("dtype"));
    }
}
