//! ReLU as a CPU custom op: forward `max(0, x)` and backward `grad · [y > 0]`, both one
//! element-wise pass parallel over chunks, each compiled per CPU (`multiversion`). Candle's own `relu` runs its forward and, in the
//! backward, a comparison, a cast and a multiplication, each a separate pass with its own
//! allocation.
//!
//! NaN maps to 0 (as Candle's `relu`, `f32::max(NaN, 0) = 0`) and gets no gradient. At
//! exactly 0 the gradient is 0 (PyTorch's rule; Candle's own `relu` passes it, `x ≥ 0`).

use super::{Real, check_float, cpu_flat, dispatch2, same_shape, use_cpu_kernel, written};
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, bail};
use multiversion::multiversion;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Elements per parallel task.
const CHUNK: usize = 1 << 14;

/// ReLU, `max(0, x)`, with gradient `[x > 0]`.
///
/// # Shapes
/// Any shape, unchanged.
///
/// # Errors
/// A non-float input.
pub fn relu(x: &Tensor) -> Result<Tensor> {
    check_float("relu", x.dtype())?;
    if use_cpu_kernel(x) {
        x.contiguous()?.apply_op1(Relu)
    } else {
        x.relu()
    }
}

/// The ReLU custom op; its `bwd` runs [`ReluBackward`] on the output.
struct Relu;

impl CustomOp1 for Relu {
    fn name(&self) -> &'static str {
        "kernels-relu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = match s {
            CpuStorage::F32(_) => fwd::<f32>(self.name(), s, l)?,
            CpuStorage::F64(_) => fwd::<f64>(self.name(), s, l)?,
            _ => bail!("{}: expected f32 or f64, got {:?}", self.name(), s.dtype()),
        };
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        backward(res, grad).map(Some)
    }
}

/// The gradient through a ReLU from its output `y`: `grad · [y > 0]`, one pass on the CPU
/// (not differentiable).
pub(super) fn backward(y: &Tensor, grad: &Tensor) -> Result<Tensor> {
    y.contiguous()?
        .apply_op2_no_bwd(&grad.contiguous()?, &ReluBackward)
}

fn fwd<T: Real>(op: &str, s: &CpuStorage, l: &Layout) -> Result<CpuStorage> {
    let x = cpu_flat::<T>(op, s, l, l.shape().elem_count())?;
    // SAFETY: `y` and `x` have one length, so the chunks pair up and each chunk of `y` is
    // written whole.
    let y = unsafe {
        written(x.len(), |y| {
            y.par_chunks_mut(CHUNK)
                .zip(x.par_chunks(CHUNK))
                .for_each(|(y, x)| forward_chunk(y, x));
            Ok(())
        })
    }?;
    Ok(T::to_cpu_storage_owned(y))
}

/// `y = max(x, 0)` over one chunk.
#[multiversion(targets = "simd")]
fn forward_chunk<T: Real>(y: &mut [MaybeUninit<T>], x: &[T]) {
    for (y, &v) in y.iter_mut().zip(x) {
        y.write(num_traits::Float::max(v, T::zero()));
    }
}

/// `gx = grad · [y > 0]` over one chunk.
#[multiversion(targets = "simd")]
fn backward_chunk<T: Real>(gx: &mut [MaybeUninit<T>], y: &[T], grad: &[T]) {
    for ((gx, &y), &g) in gx.iter_mut().zip(y).zip(grad) {
        gx.write(if y > T::zero() { g } else { T::zero() });
    }
}

/// ReLU backward: `(y, grad_out) → grad_out · [y > 0]`.
struct ReluBackward;

impl CustomOp2 for ReluBackward {
    fn name(&self) -> &'static str {
        "kernels-relu-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        same_shape(self.name(), ("output", l1), ("gradient", l2))?;
        let out = dispatch2(
            self.name(),
            s1,
            s2,
            || self.run::<f32>(s1, l1, s2, l2),
            || self.run::<f64>(s1, l1, s2, l2),
        )?;
        Ok((out, l1.shape().clone()))
    }
}

impl ReluBackward {
    fn run<T: Real>(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<CpuStorage> {
        let n = l1.shape().elem_count();
        let y = cpu_flat::<T>(self.name(), s1, l1, n)?;
        let grad = cpu_flat::<T>(self.name(), s2, l2, n)?;
        // SAFETY: `gx`, `y` and `grad` have `n` values each, so every chunk of `gx` is
        // written whole.
        let gx = unsafe {
            written(n, |gx| {
                gx.par_chunks_mut(CHUNK)
                    .zip(y.par_chunks(CHUNK).zip(grad.par_chunks(CHUNK)))
                    .for_each(|(gx, (y, grad))| backward_chunk(gx, y, grad));
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
    use candle_core::{DType, Device, Var};

    #[test]
    fn relu_matches_candle() {
        for dims in [vec![2, 3, 7, 5], vec![CHUNK + 17], vec![3, 1]] {
            for dtype in [DType::F32, DType::F64] {
                let x = uniform(&dims, dtype, 3);
                let got = forward_grads(&|t: &[Tensor]| relu(&t[0]), std::slice::from_ref(&x), 1);
                let want = forward_grads(&|t: &[Tensor]| t[0].relu(), &[x], 1);
                assert_close(&got.0, &want.0, 0.0, &format!("forward {dims:?}"));
                assert_close(&got.1[0], &want.1[0], 0.0, &format!("gradient {dims:?}"));
            }
        }
    }

    /// Finite differences in f64, with the inputs kept at least 0.01 from the kink at 0.
    #[test]
    fn relu_finite_differences() {
        let u = uniform(&[2, 3, 4, 5], DType::F64, 5);
        let x = (u.sign().unwrap() * 0.01 + &u).unwrap();
        assert!(values(&x).iter().all(|v| v.abs() >= 0.01));
        let f: Kernel = &|t: &[Tensor]| relu(&t[0]);
        finite_difference_check(f, &[x], 1e-6, "relu");
    }

    #[test]
    fn relu_at_zero_nan_and_non_contiguous() {
        let x = Tensor::new(&[-1.0f64, 0.0, f64::NAN, 2.0], &Device::Cpu).unwrap();
        let v = Var::from_tensor(&x).unwrap();
        let y = relu(v.as_tensor()).unwrap();
        assert_eq!(values(&y), vec![0.0, 0.0, 0.0, 2.0]);
        let g = y.sum_all().unwrap().backward().unwrap();
        assert_eq!(
            values(g.get(v.as_tensor()).unwrap()),
            vec![0.0, 0.0, 0.0, 1.0]
        );

        let base = uniform(&[3, 4, 5], DType::F32, 2);
        let t = base.transpose(0, 2).unwrap();
        assert!(!t.is_contiguous());
        assert_close(&relu(&t).unwrap(), &t.relu().unwrap(), 0.0, "transposed");
    }

    #[test]
    fn relu_other_dtypes() {
        let x = uniform(&[2, 3], DType::F32, 1);
        let half = relu(&x.to_dtype(DType::BF16).unwrap()).unwrap();
        assert_eq!(half.dtype(), DType::BF16);
        assert_close(&half, &x.relu().unwrap(), 1e-2, "bf16");
        let ints = Tensor::zeros(3, DType::U32, &Device::Cpu).unwrap();
        assert!(relu(&ints).unwrap_err().to_string().contains("float"));
    }
}
