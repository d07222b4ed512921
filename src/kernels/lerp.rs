//! The weight average's update, in place: `a ← d·a + (1 − d)·b` for a variable `a` and a
//! tensor `b` of its shape. On the CPU (f32, f64, both contiguous) one pass over `a`'s own
//! storage; elsewhere Candle ops and `Var::set`, which allocate a new tensor.

use super::{Real, use_cpu_kernel};
use candle_core::{CpuStorage, InplaceOp2, Layout, Result, Tensor, Var, bail};

/// `a ← d·a + (1 − d)·b`. `a` and `b` must have one shape, dtype and device.
pub fn lerp_into(a: &Var, b: &Tensor, d: f64) -> Result<()> {
    if a.dims() != b.dims() || a.dtype() != b.dtype() {
        bail!(
            "lerp_into: {:?} {:?} against {:?} {:?}",
            a.dims(),
            a.dtype(),
            b.dims(),
            b.dtype()
        )
    }
    let t = a.as_tensor();
    if use_cpu_kernel(t) && t.is_contiguous() && b.is_contiguous() && b.device().is_cpu() {
        return t.inplace_op2(b, &Lerp { d });
    }
    a.set(&(t.affine(d, 0.0)? + b.affine(1.0 - d, 0.0)?)?)
}

struct Lerp {
    d: f64,
}

impl Lerp {
    fn run<T: Real>(&self, a: &mut [T], b: &[T]) {
        let d = T::from_f64(self.d);
        let e = T::from_f64(1.0 - self.d);
        for (a, &b) in a.iter_mut().zip(b) {
            *a = d * *a + e * b;
        }
    }
}

impl InplaceOp2 for Lerp {
    fn name(&self) -> &'static str {
        "kernels-lerp"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let (Some((a0, a1)), Some((b0, b1))) = (l1.contiguous_offsets(), l2.contiguous_offsets())
        else {
            bail!("{}: expected contiguous tensors", self.name())
        };
        match (s1, s2) {
            (CpuStorage::F32(a), CpuStorage::F32(b)) => self.run(&mut a[a0..a1], &b[b0..b1]),
            (CpuStorage::F64(a), CpuStorage::F64(b)) => self.run(&mut a[a0..a1], &b[b0..b1]),
            _ => bail!("{}: expected two f32 or two f64 tensors", self.name()),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn lerp_moves_a_toward_b_in_place() {
        for dtype in [DType::F32, DType::F64] {
            let a = Var::from_tensor(
                &Tensor::new(&[1.0f64, 2.0, -4.0], &Device::Cpu)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap(),
            )
            .unwrap();
            let b = Tensor::new(&[3.0f64, 2.0, 4.0], &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            lerp_into(&a, &b, 0.75).unwrap();
            let got = a.to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap();
            assert_eq!(got, [1.5, 2.0, -2.0]);
            // The composition off the CPU kernel gives the same values.
            let c = Var::from_tensor(&b.affine(0.5, 0.0).unwrap()).unwrap();
            super::super::with_compositions(|| lerp_into(&c, &b, 0.75)).unwrap();
            let got = c.to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap();
            assert_eq!(got, [1.875, 1.25, 2.5]);
        }
    }

    #[test]
    fn lerp_refuses_another_shape() {
        let a = Var::zeros(3, DType::F32, &Device::Cpu).unwrap();
        let b = Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap();
        assert!(lerp_into(&a, &b, 0.5).is_err());
    }
}
