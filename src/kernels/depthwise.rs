//! Depthwise convolution (NCHW, one square `k`×`k` filter per channel, stride, padding,
//! dilation, no bias): the public function, its CPU custom op (forward and the gradients for
//! both the input and the filters), and the grouped Candle convolution used elsewhere.
//!
//! Every loop is organised per (n, c) plane. At stride 1 each plane runs the vectorised
//! stencil of `stencil.rs` over a zero-padded copy. Otherwise the loops go per (output row,
//! tap): the innermost loop runs over the output columns that the tap reads inside the input
//! (the padding is never materialised), element-wise over two contiguous slices (the input
//! rows are first split into phases, see `Phases`).

use super::stencil::Stencil;
use super::{
    Geometry, Real, check_float, check_like, cpu_slice, dispatch2, par_zeros, use_cpu_kernel,
    zip_with,
};
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

/// Depthwise convolution, PyTorch's `nn.Conv2d(C, C, k, stride, padding, dilation, groups = C,
/// bias = False)` with filters `w`.
///
/// # Shapes
/// `x`: `[N, C, H, W]`, `w`: `[C, 1, k, k]` → `[N, C, Ho, Wo]` with
/// `Ho = (H + 2·padding − dilation·(k − 1) − 1) / stride + 1` (floor), and likewise `Wo`.
///
/// # Errors
/// Non-float or mismatched dtypes or devices, wrong ranks or filter shape, a zero stride or
/// dilation, or a (dilated) window larger than the padded input.
pub fn depthwise_conv2d(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    padding: usize,
    dilation: usize,
) -> Result<Tensor> {
    let g = check("depthwise_conv2d", x, w, stride, padding, dilation)?;
    if use_cpu_kernel(x) {
        x.contiguous()?
            .apply_op2(&w.contiguous()?, DepthwiseConv2d { g })
    } else {
        dense(x, w, &g)
    }
}

/// [`depthwise_conv2d`] as one dense convolution whose filters are block-diagonal (filter c
/// is `w[c]` on input channel c, zero elsewhere), on any device: what runs off the CPU.
/// C times the multiply-adds, but one im2col and one matrix product, forward and backward,
/// where Candle's grouped convolution runs one convolution per channel and keeps every
/// group's output alive for the backward. On a GPU the extra work is cheap and the launches
/// and memory are what count.
///
/// # Shapes
/// As [`depthwise_conv2d`].
pub fn depthwise_conv2d_dense(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    padding: usize,
    dilation: usize,
) -> Result<Tensor> {
    let g = check("depthwise_conv2d_dense", x, w, stride, padding, dilation)?;
    dense(x, w, &g)
}

fn dense(x: &Tensor, w: &Tensor, g: &Geometry) -> Result<Tensor> {
    let eye = Tensor::eye(g.c, w.dtype(), w.device())?.reshape((g.c, g.c, 1, 1))?;
    let filters = w.broadcast_mul(&eye)?;
    x.conv2d(&filters, g.padding, g.stride, g.dilation, 1)
}

/// [`depthwise_conv2d`] as Candle's grouped convolution (`groups = C`), on any device.
///
/// # Shapes
/// As [`depthwise_conv2d`].
pub fn depthwise_conv2d_reference(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    padding: usize,
    dilation: usize,
) -> Result<Tensor> {
    let g = check(
        "depthwise_conv2d_reference",
        x,
        w,
        stride,
        padding,
        dilation,
    )?;
    x.conv2d(w, padding, stride, dilation, g.c)
}

/// Validates the arguments of a depthwise convolution.
fn check(
    op: &str,
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    padding: usize,
    dilation: usize,
) -> Result<Geometry> {
    let &[wc, one, kh, kw] = w.dims() else {
        bail!(
            "{op}: expected 4-D filters [C, 1, k, k], got shape {:?}",
            w.dims()
        )
    };
    if one != 1 || kh != kw {
        bail!(
            "{op}: expected filters [C, 1, k, k], got shape {:?}",
            w.dims()
        )
    }
    let g = Geometry::new(op, x.dims(), kh, stride, padding, dilation)?;
    if wc != g.c {
        bail!(
            "{op}: {wc} filters for an input with {} channels (filters {:?}, input {:?})",
            g.c,
            w.dims(),
            x.dims()
        )
    }
    check_float(op, x.dtype())?;
    check_like(op, "the filter", w, x)?;
    Ok(g)
}

/// The shape of the filters, `[C, 1, k, k]`.
fn filter_dims(g: &Geometry) -> (usize, usize, usize, usize) {
    (g.c, 1, g.kernel, g.kernel)
}

/// The depthwise custom op: `(x, w) → y`; its `bwd` runs [`InputGrad`] and [`FilterGrad`].
struct DepthwiseConv2d {
    g: Geometry,
}

impl CustomOp2 for DepthwiseConv2d {
    fn name(&self) -> &'static str {
        "kernels-depthwise-conv2d"
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
        Ok((out, Shape::from(self.g.out_dims())))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let g = self.g;
        let gx = if x.track_op() {
            Some(grad.apply_op2_no_bwd(w, &InputGrad { g })?)
        } else {
            None
        };
        let gw = if w.track_op() {
            Some(x.apply_op2_no_bwd(&grad, &FilterGrad { g })?)
        } else {
            None
        };
        Ok((gx, gw))
    }
}

impl DepthwiseConv2d {
    fn run<T: Real>(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<CpuStorage> {
        let g = &self.g;
        let x = cpu_slice::<T>(self.name(), s1, l1, g.in_dims())?;
        let filters = cpu_slice::<T>(self.name(), s2, l2, filter_dims(g))?;
        let (k, wi, wo) = (g.kernel, g.w, g.wo);
        let mut out = par_zeros(g.n * g.c * g.out_plane())?;
        if let Some(st) = forward_stencil(g) {
            stencil_planes(&st, x, g.in_plane(), &mut out, g.out_plane(), filters, g.c);
            return Ok(T::to_cpu_storage_owned(out));
        }
        let (cols, phases) = (g.col_taps(), g.phases());
        out.par_chunks_mut(g.out_plane())
            .zip(x.par_chunks(g.in_plane()))
            .enumerate()
            .for_each_init(
                || vec![T::zero(); g.in_plane()],
                |scratch, (plane, (out, x))| {
                    let f = &filters[(plane % g.c) * k * k..][..k * k];
                    let x = phases.split(x, scratch);
                    for (oh, orow) in out.chunks_exact_mut(wo).enumerate() {
                        for i in 0..k {
                            let Some(ih) = g.in_row(oh, i) else { continue };
                            let xrow = &x[ih * wi..(ih + 1) * wi];
                            for (tap, &fv) in cols.iter().zip(&f[i * k..(i + 1) * k]) {
                                let o = &mut orow[tap.outs.clone()];
                                zip_with(o, &xrow[tap.start..], |o, v| *o += fv * v);
                            }
                        }
                    }
                },
            );
        Ok(T::to_cpu_storage_owned(out))
    }
}

/// Gradient for the input: `(grad_y, w) → grad_x` (the transpose of the forward).
struct InputGrad {
    g: Geometry,
}

impl CustomOp2 for InputGrad {
    fn name(&self) -> &'static str {
        "kernels-depthwise-conv2d-input-grad"
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
        Ok((out, Shape::from(self.g.in_dims())))
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
        let g = &self.g;
        let grad = cpu_slice::<T>(self.name(), s1, l1, g.out_dims())?;
        let filters = cpu_slice::<T>(self.name(), s2, l2, filter_dims(g))?;
        let (k, wi, wo) = (g.kernel, g.w, g.wo);
        let mut gx = par_zeros(g.n * g.c * g.in_plane())?;
        if let Some(st) = transposed_stencil(g) {
            let kk = k * k;
            // Each channel's filter reversed in both axes: the transpose of its stencil.
            let reversed: Vec<T> = filters
                .chunks_exact(kk)
                .flat_map(|f| f.iter().rev().copied())
                .collect();
            stencil_planes(
                &st,
                grad,
                g.out_plane(),
                &mut gx,
                g.in_plane(),
                &reversed,
                g.c,
            );
            return Ok(T::to_cpu_storage_owned(gx));
        }
        let (cols, phases) = (g.col_taps(), g.phases());
        gx.par_chunks_mut(g.in_plane())
            .zip(grad.par_chunks(g.out_plane()))
            .enumerate()
            .for_each_init(
                || vec![T::zero(); g.in_plane()],
                |scratch, (plane, (gx, grad))| {
                    let f = &filters[(plane % g.c) * k * k..][..k * k];
                    // Accumulate into the split rows (in place at stride 1).
                    let acc: &mut [T] = if g.stride == 1 {
                        &mut *gx
                    } else {
                        scratch.fill(T::zero());
                        &mut scratch[..]
                    };
                    for (oh, grow) in grad.chunks_exact(wo).enumerate() {
                        for i in 0..k {
                            let Some(ih) = g.in_row(oh, i) else { continue };
                            let arow = &mut acc[ih * wi..(ih + 1) * wi];
                            for (tap, &fv) in cols.iter().zip(&f[i * k..(i + 1) * k]) {
                                let a = &mut arow[tap.start..][..tap.outs.len()];
                                zip_with(a, &grow[tap.outs.clone()], |a, v| *a += fv * v);
                            }
                        }
                    }
                    if g.stride != 1 {
                        phases.unsplit(scratch, gx);
                    }
                },
            );
        Ok(T::to_cpu_storage_owned(gx))
    }
}

/// Gradient for the filters: `(x, grad_y) → grad_w`. Each plane accumulates, per tap, the
/// element-wise products over its output columns (a vectorisable loop), sums them at the
/// end, and the per-plane results are summed over the batch.
struct FilterGrad {
    g: Geometry,
}

impl CustomOp2 for FilterGrad {
    fn name(&self) -> &'static str {
        "kernels-depthwise-conv2d-filter-grad"
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
        Ok((out, Shape::from(filter_dims(&self.g))))
    }
}

impl FilterGrad {
    fn run<T: Real>(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<CpuStorage> {
        let g = &self.g;
        let x = cpu_slice::<T>(self.name(), s1, l1, g.in_dims())?;
        let grad = cpu_slice::<T>(self.name(), s2, l2, g.out_dims())?;
        let (k, wi, wo) = (g.kernel, g.w, g.wo);
        let kk = k * k;
        // Per-plane sums, [N, C, k, k]; reduced over N below.
        let mut partial = vec![T::zero(); g.n * g.c * kk];
        if let Some(st) = forward_stencil(g) {
            partial
                .par_chunks_mut(kk)
                .zip(x.par_chunks(g.in_plane()))
                .zip(grad.par_chunks(g.out_plane()))
                .for_each_init(
                    || st.scratch::<T>(),
                    |(xp, wide), ((partial, x), grad)| {
                        st.pad(x, xp);
                        st.spread(grad, wide);
                        st.filter_grad(wide, xp, partial);
                    },
                );
            return Ok(T::to_cpu_storage_owned(sum_over_batch(&partial, g.c * kk)));
        }
        let (cols, phases) = (g.col_taps(), g.phases());
        partial
            .par_chunks_mut(kk)
            .zip(x.par_chunks(g.in_plane()))
            .zip(grad.par_chunks(g.out_plane()))
            .for_each_init(
                || (vec![T::zero(); kk * wo], vec![T::zero(); g.in_plane()]),
                |(acc, scratch), ((partial, x), grad)| {
                    let x = phases.split(x, scratch);
                    acc.fill(T::zero());
                    for (oh, grow) in grad.chunks_exact(wo).enumerate() {
                        for i in 0..k {
                            let Some(ih) = g.in_row(oh, i) else { continue };
                            let xrow = &x[ih * wi..(ih + 1) * wi];
                            for (j, tap) in cols.iter().enumerate() {
                                let a = &mut acc[(i * k + j) * wo..][tap.outs.clone()];
                                let gr = &grow[tap.outs.clone()];
                                let xs = &xrow[tap.start..][..gr.len()];
                                for ((a, &gv), &xv) in a.iter_mut().zip(gr).zip(xs) {
                                    *a += gv * xv;
                                }
                            }
                        }
                    }
                    for (p, row) in partial.iter_mut().zip(acc.chunks_exact(wo)) {
                        *p = row.iter().fold(T::zero(), |s, &v| s + v);
                    }
                },
            );
        Ok(T::to_cpu_storage_owned(sum_over_batch(&partial, g.c * kk)))
    }
}

/// Runs the stencil `st` over every plane of `input` into `out`, plane `i` with channel
/// `i mod c`'s filter from `filters` (`[C, k·k]`), in parallel over the planes.
fn stencil_planes<T: Real>(
    st: &Stencil,
    input: &[T],
    in_plane: usize,
    out: &mut [T],
    out_plane: usize,
    filters: &[T],
    c: usize,
) {
    let kk = filters.len() / c.max(1);
    out.par_chunks_mut(out_plane)
        .zip(input.par_chunks(in_plane))
        .enumerate()
        .for_each_init(
            || st.scratch::<T>(),
            |(padded, wide), (plane, (out, input))| {
                st.pad(input, padded);
                st.correlate(padded, &filters[(plane % c) * kk..][..kk], wide);
                st.crop(wide, out);
            },
        );
}

/// The per-sample filter gradients `[N, C·k·k]` summed over the batch.
fn sum_over_batch<T: Real>(partial: &[T], per_sample: usize) -> Vec<T> {
    let mut gw = vec![T::zero(); per_sample];
    for batch in partial.chunks_exact(per_sample.max(1)) {
        for (a, &v) in gw.iter_mut().zip(batch) {
            *a += v;
        }
    }
    gw
}

/// The stencil of the forward pass (and of the filter gradient) at stride 1.
fn forward_stencil(g: &Geometry) -> Option<Stencil> {
    (g.stride == 1)
        .then(|| Stencil::new(g.h, g.w, g.kernel, g.dilation, g.padding))
        .flatten()
}

/// The stencil of the input gradient at stride 1: over the output plane, padded by
/// `d·(k − 1) − p` (none when the padding is wider than the window's span).
fn transposed_stencil(g: &Geometry) -> Option<Stencil> {
    let pad = (g.dilation * (g.kernel - 1)).checked_sub(g.padding)?;
    (g.stride == 1)
        .then(|| Stencil::new(g.ho, g.wo, g.kernel, g.dilation, pad))
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{
        Kernel, assert_close, finite_difference_check, forward_grads, uniform, values,
    };
    use super::*;
    use candle_core::{DType, Device, Var};

    type Conv = fn(&Tensor, &Tensor, usize, usize, usize) -> Result<Tensor>;

    /// (kernel, stride, padding, dilation): kernels 3 and 5, strides 1 and 2, dilations 1
    /// and 2, same padding (`dilation·(k − 1) / 2`) and none.
    fn configs() -> Vec<(usize, usize, usize, usize)> {
        let mut v = Vec::new();
        for k in [3, 5] {
            for s in [1, 2] {
                for d in [1, 2] {
                    for p in [d * (k - 1) / 2, 0] {
                        v.push((k, s, p, d));
                    }
                }
            }
        }
        v
    }

    fn run(
        conv: Conv,
        x: &Tensor,
        w: &Tensor,
        cfg: (usize, usize, usize, usize),
    ) -> (Tensor, Vec<Tensor>) {
        let (_, s, p, d) = cfg;
        forward_grads(
            &|t: &[Tensor]| conv(&t[0], &t[1], s, p, d),
            &[x.clone(), w.clone()],
            1,
        )
    }

    /// Square odd and even sizes: Candle's convolution backward (the reference's) sizes
    /// the input gradient from the height alone, so it cannot do non-square inputs whose
    /// two axes need different output padding. Non-square inputs are covered by the
    /// finite-difference check.
    #[test]
    fn depthwise_matches_reference() {
        for cfg in configs() {
            let (k, s, p, d) = cfg;
            for h in [8, 7, 9] {
                if d * (k - 1) + 1 > h + 2 * p {
                    continue;
                }
                let x = uniform(&[2, 3, h, h], DType::F32, 7);
                let w = uniform(&[3, 1, k, k], DType::F32, 8);
                let what = format!("k{k} s{s} p{p} d{d} {h}x{h}");
                let got = run(depthwise_conv2d, &x, &w, cfg);
                let mut wants = vec![(
                    "grouped".to_string(),
                    run(depthwise_conv2d_reference, &x, &w, cfg),
                )];
                // What runs off the CPU, on every test device.
                for dev in crate::device::test_devices() {
                    let (x, w) = (x.to_device(&dev).unwrap(), w.to_device(&dev).unwrap());
                    let name = format!("dense on {}", crate::device::name(&dev));
                    wants.push((name, run(depthwise_conv2d_dense, &x, &w, cfg)));
                }
                for (how, want) in wants {
                    let what = format!("{what} vs {how}");
                    assert_close(&got.0, &want.0, 1e-5, &format!("forward {what}"));
                    assert_close(
                        &got.1[0],
                        &want.1[0],
                        1e-5,
                        &format!("input gradient {what}"),
                    );
                    assert_close(
                        &got.1[1],
                        &want.1[1],
                        1e-5,
                        &format!("filter gradient {what}"),
                    );
                }
            }
        }
    }

    #[test]
    fn depthwise_accepts_non_contiguous_input() {
        let x = uniform(&[2, 3, 9, 9], DType::F32, 3);
        let w = uniform(&[3, 1, 3, 3], DType::F32, 4);
        let conv = |c: Conv| {
            forward_grads(
                &|t: &[Tensor]| c(&t[0].t()?, &t[1].t()?, 2, 2, 2),
                &[x.clone(), w.clone()],
                5,
            )
        };
        let (got, want) = (conv(depthwise_conv2d), conv(depthwise_conv2d_reference));
        assert_close(&got.0, &want.0, 1e-5, "forward");
        assert_close(&got.1[0], &want.1[0], 1e-5, "input gradient");
        assert_close(&got.1[1], &want.1[1], 1e-5, "filter gradient");
    }

    #[test]
    fn depthwise_finite_differences() {
        for (k, s, p, d) in [
            (3, 1, 1, 1),
            (3, 2, 1, 1),
            (3, 1, 2, 2),
            (3, 2, 0, 2),
            (5, 2, 2, 1),
            (5, 1, 4, 2),
        ] {
            let x = uniform(&[2, 2, 5, 6], DType::F64, 1);
            let w = uniform(&[2, 1, k, k], DType::F64, 2);
            let f: Kernel = &|t: &[Tensor]| depthwise_conv2d(&t[0], &t[1], s, p, d);
            finite_difference_check(f, &[x, w], 1e-6, &format!("k{k} s{s} p{p} d{d}"));
        }
    }

    /// Inputs smaller than the window, strides larger than the input, padding wider than the
    /// window (taps that read only padding).
    #[test]
    fn depthwise_on_tiny_inputs() {
        for h in [1, 2, 3] {
            for (k, s, p, d) in [(5, 1, 2, 1), (3, 2, 2, 2), (3, 4, 3, 1), (5, 3, 4, 2)] {
                let x = uniform(&[2, 2, h, h], DType::F64, 1);
                let w = uniform(&[2, 1, k, k], DType::F64, 2);
                let f: Kernel = &|t: &[Tensor]| depthwise_conv2d(&t[0], &t[1], s, p, d);
                finite_difference_check(f, &[x, w], 1e-6, &format!("k{k} s{s} p{p} d{d} {h}x{h}"));
            }
        }
    }

    fn plane(v: &[f64], h: usize, w: usize) -> Tensor {
        Tensor::from_vec(v.to_vec(), (1, 1, h, w), &Device::Cpu).unwrap()
    }

    /// Ones through ones, 3×3, padding 1: each output counts the inputs in its window
    /// (4 / 6 / 9), and by symmetry so do both gradients of the sum. Dilation 2 on 0..25
    /// (5×5), padding 2: the centre sums rows and columns {0, 2, 4} (108), the corner
    /// x[0,0] + x[0,2] + x[2,0] + x[2,2] = 24.
    #[test]
    fn depthwise_by_hand() {
        let xv = Var::from_tensor(&plane(&[1.0; 9], 3, 3)).unwrap();
        let wv = Var::from_tensor(&plane(&[1.0; 9], 3, 3)).unwrap();
        let y = depthwise_conv2d(xv.as_tensor(), wv.as_tensor(), 1, 1, 1).unwrap();
        let counts = vec![4., 6., 4., 6., 9., 6., 4., 6., 4.];
        assert_eq!(values(&y), counts);
        let grads = y.sum_all().unwrap().backward().unwrap();
        assert_eq!(values(grads.get(xv.as_tensor()).unwrap()), counts);
        assert_eq!(values(grads.get(wv.as_tensor()).unwrap()), counts);

        let x = plane(&(0..25).map(f64::from).collect::<Vec<_>>(), 5, 5);
        let y = depthwise_conv2d(&x, &plane(&[1.0; 9], 3, 3), 1, 2, 2).unwrap();
        let y = values(&y);
        assert_eq!((y[12], y[0]), (108.0, 24.0));
        // Stride 2, no padding, 3×3 window at (0, 0) of a 5×5 input with a single 1 filter tap.
        let mut f = [0.0; 9];
        f[5] = 1.0; // tap (1, 2)
        let y = depthwise_conv2d(&x, &plane(&f, 3, 3), 2, 0, 1).unwrap();
        assert_eq!(values(&y), vec![7., 9., 17., 19.]);
    }

    /// Channel c uses filter c only.
    #[test]
    fn channels_use_their_own_filter() {
        let x = Tensor::ones((2, 3, 4, 4), DType::F32, &Device::Cpu).unwrap();
        let w = Tensor::from_vec(vec![1f32, 2., 3.], (3, 1, 1, 1), &Device::Cpu).unwrap();
        let y = depthwise_conv2d(&x, &w, 1, 0, 1).unwrap();
        let v = values(&y);
        for (i, chunk) in v.chunks(16).enumerate() {
            assert!(chunk.iter().all(|&a| a == (i % 3 + 1) as f64), "{i}");
        }
    }

    /// A constant input gets no gradient; the filters still do.
    #[test]
    fn gradient_only_for_tracked_arguments() {
        let x = uniform(&[2, 3, 6, 6], DType::F32, 1);
        let w = Var::from_tensor(&uniform(&[3, 1, 3, 3], DType::F32, 2)).unwrap();
        let y = depthwise_conv2d(&x, w.as_tensor(), 1, 1, 1).unwrap();
        let grads = y.sum_all().unwrap().backward().unwrap();
        assert!(grads.get(&x).is_none());
        let xv = Var::from_tensor(&x).unwrap();
        let y = depthwise_conv2d_reference(xv.as_tensor(), w.as_tensor(), 1, 1, 1).unwrap();
        let want = y.sum_all().unwrap().backward().unwrap();
        assert_close(
            grads.get(w.as_tensor()).unwrap(),
            want.get(w.as_tensor()).unwrap(),
            1e-5,
            "filter gradient",
        );
    }

    #[test]
    fn depthwise_arguments_are_checked() {
        let dev = Device::Cpu;
        let x = uniform(&[1, 2, 5, 5], DType::F32, 0);
        let w = uniform(&[2, 1, 3, 3], DType::F32, 0);
        for conv in [depthwise_conv2d as Conv, depthwise_conv2d_reference] {
            let err =
                |x: &Tensor, w: &Tensor, s, p, d| conv(x, w, s, p, d).unwrap_err().to_string();
            assert!(err(&x.flatten(0, 1).unwrap(), &w, 1, 1, 1).contains("4-D"));
            assert!(err(&x, &w.flatten(0, 1).unwrap(), 1, 1, 1).contains("4-D filters"));
            let w2 = Tensor::zeros((2, 2, 3, 3), DType::F32, &dev).unwrap();
            assert!(err(&x, &w2, 1, 1, 1).contains("[C, 1, k, k]"));
            let w23 = Tensor::zeros((2, 1, 2, 3), DType::F32, &dev).unwrap();
            assert!(err(&x, &w23, 1, 1, 1).contains("[C, 1, k, k]"));
            let w3 = Tensor::zeros((3, 1, 3, 3), DType::F32, &dev).unwrap();
            assert!(err(&x, &w3, 1, 1, 1).contains("channels"));
            assert!(err(&x, &w.to_dtype(DType::F64).unwrap(), 1, 1, 1).contains("dtype"));
            let ints = Tensor::zeros((1, 2, 5, 5), DType::U32, &dev).unwrap();
            let wints = Tensor::zeros((2, 1, 3, 3), DType::U32, &dev).unwrap();
            assert!(err(&ints, &wints, 1, 1, 1).contains("float"));
            assert!(err(&x, &w, 0, 1, 1).contains("stride"));
            assert!(err(&x, &w, 1, 1, 0).contains("dilation"));
            assert!(err(&x, &w, 1, 0, 3).contains("larger"));
        }
    }

    /// F16 on the CPU takes Candle's grouped convolution (BF16 gets Candle's error: its CPU
    /// matmul has no BF16).
    #[test]
    fn half_precision_takes_the_composition() {
        let x = uniform(&[1, 2, 6, 6], DType::F32, 8);
        let w = uniform(&[2, 1, 3, 3], DType::F32, 9);
        let half = depthwise_conv2d(
            &x.to_dtype(DType::F16).unwrap(),
            &w.to_dtype(DType::F16).unwrap(),
            1,
            1,
            1,
        )
        .unwrap();
        assert_eq!(half.dtype(), DType::F16);
        let want = depthwise_conv2d_reference(&x, &w, 1, 1, 1).unwrap();
        assert_close(&half, &want, 1e-2, "f16");
    }
}
