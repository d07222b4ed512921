//! Max and average pooling (NCHW, square window, padding): the public functions, their CPU
//! custom ops (forward and backward), and the composition of Candle ops used elsewhere.
//!
//! Max pooling pads with −∞, so padding never wins; its gradient goes to the first maximum of
//! each window in row-major order (NaN counts as a maximum), as in PyTorch. Average pooling
//! leaves the padding out of the average (`count_include_pad = false`).
//!
//! Both pools are separable, and the CPU kernels use that: a pass along the rows reduces
//! each input row to `wo` columns, a second pass reduces `kernel` of those rows per output
//! row. Both passes (and the backward passes, which follow the same plan) are element-wise
//! loops over contiguous slices; at stride > 1 the input rows are first split into phases
//! (see `Phases`).

use super::{
    Geometry, Real, check_float, cpu_slice, dispatch2, par_zeros, use_cpu_kernel, zip_with,
};
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

/// Max pooling over `kernel`×`kernel` windows, PyTorch's `nn.MaxPool2d(kernel, stride,
/// padding)`. Padding is −∞, so it never wins; the gradient goes to the first maximum of each
/// window (row-major).
///
/// # Shapes
/// `x`: `[N, C, H, W]` → `[N, C, Ho, Wo]` with `Ho = (H + 2·padding − kernel) / stride + 1`
/// (floor), and likewise `Wo`.
///
/// # Errors
/// A non-float or non-4-D input, a zero kernel or stride, `padding > kernel / 2`, or a window
/// larger than the padded input.
pub fn max_pool2d(x: &Tensor, kernel: usize, stride: usize, padding: usize) -> Result<Tensor> {
    let g = Geometry::pool("max_pool2d", x.dims(), kernel, stride, padding)?;
    check_float("max_pool2d", x.dtype())?;
    if use_cpu_kernel(x) {
        x.contiguous()?.apply_op1(Pool2d { kind: Kind::Max, g })
    } else {
        max_pool_composed(x, &g)
    }
}

/// Average pooling over `kernel`×`kernel` windows with the padding left out of the average,
/// PyTorch's `nn.AvgPool2d(kernel, stride, padding, count_include_pad = False)`.
///
/// # Shapes
/// As [`max_pool2d`].
///
/// # Errors
/// As [`max_pool2d`].
pub fn avg_pool2d(x: &Tensor, kernel: usize, stride: usize, padding: usize) -> Result<Tensor> {
    let g = Geometry::pool("avg_pool2d", x.dims(), kernel, stride, padding)?;
    check_float("avg_pool2d", x.dtype())?;
    if use_cpu_kernel(x) {
        x.contiguous()?.apply_op1(Pool2d { kind: Kind::Avg, g })
    } else {
        avg_pool_composed(x, &g)
    }
}

/// [`max_pool2d`] as a composition of Candle ops, on any device: pad with −∞, gather the
/// `kernel²` windows of the padded input and take their maximum. Candle's own `max_pool2d`
/// is not used because it has no backward when kernel ≠ stride. Gradients equal
/// [`max_pool2d`]'s where each window's maximum is unique (tied maxima each get it).
///
/// # Shapes
/// As [`max_pool2d`].
pub fn max_pool2d_reference(
    x: &Tensor,
    kernel: usize,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    let g = Geometry::pool("max_pool2d_reference", x.dims(), kernel, stride, padding)?;
    check_float("max_pool2d_reference", x.dtype())?;
    max_pool_composed(x, &g)
}

/// [`avg_pool2d`] as a composition of Candle ops, on any device: pad with zeros, sum the
/// `kernel²` windows, and divide by the map of valid-element counts.
///
/// # Shapes
/// As [`max_pool2d`].
pub fn avg_pool2d_reference(
    x: &Tensor,
    kernel: usize,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    let g = Geometry::pool("avg_pool2d_reference", x.dims(), kernel, stride, padding)?;
    check_float("avg_pool2d_reference", x.dtype())?;
    avg_pool_composed(x, &g)
}

fn max_pool_composed(x: &Tensor, g: &Geometry) -> Result<Tensor> {
    windows(&pad_const(x, g.padding, f64::NEG_INFINITY)?, g)?
        .max(4)?
        .max(2)
}

fn avg_pool_composed(x: &Tensor, g: &Geometry) -> Result<Tensor> {
    let p = g.padding;
    let xp = x.pad_with_zeros(2, p, p)?.pad_with_zeros(3, p, p)?;
    let sum = windows(&xp, g)?.sum((2, 4))?;
    let (rows, cols) = (counts(g, g.ho, g.h), counts(g, g.wo, g.w));
    let divisor: Vec<f64> = rows
        .iter()
        .flat_map(|&r| cols.iter().map(move |&c| (r * c) as f64))
        .collect();
    let divisor = Tensor::from_vec(divisor, (1, 1, g.ho, g.wo), x.device())?.to_dtype(x.dtype())?;
    sum.broadcast_div(&divisor)
}

/// `x` with `p` elements of `value` added on each side of both spatial axes.
fn pad_const(x: &Tensor, p: usize, value: f64) -> Result<Tensor> {
    if p == 0 {
        return Ok(x.clone());
    }
    let (n, c, h, w) = x.dims4()?;
    let side = |shape: (usize, usize, usize, usize)| {
        Tensor::full(value, shape, x.device())?.to_dtype(x.dtype())
    };
    let x = Tensor::cat(&[side((n, c, h, p))?, x.clone(), side((n, c, h, p))?], 3)?;
    let w = w + 2 * p;
    Tensor::cat(&[side((n, c, p, w))?, x, side((n, c, p, w))?], 2)
}

/// All `kernel²` windows of the padded input `xp` `[N, C, Hp, Wp]` as one tensor
/// `[N, C, k, Ho, k, Wo]`, `out[n, c, i, o, j, q] = xp[n, c, o·s + i·d, q·s + j·d]`: one
/// `index_select` per spatial axis (tap-major indices), so that a pool is a handful of kernel
/// launches on a GPU whatever its size, and its backward two `index_add`s.
fn windows(xp: &Tensor, g: &Geometry) -> Result<Tensor> {
    let xp = xp.contiguous()?;
    let (n, c, _, _) = xp.dims4()?;
    let index = |out_len: usize| -> Result<Tensor> {
        let idx = (0..g.kernel)
            .flat_map(|t| (0..out_len).map(move |o| o * g.stride + t * g.dilation))
            .map(u32::try_from)
            .collect::<std::result::Result<Vec<u32>, _>>()
            .map_err(|_| candle_core::Error::Msg("window index exceeds u32".into()))?;
        Tensor::from_vec(idx, g.kernel * out_len, xp.device())
    };
    xp.index_select(&index(g.ho)?, 2)?
        .index_select(&index(g.wo)?, 3)?
        .reshape((n, c, g.kernel, g.ho, g.kernel, g.wo))
}

/// The number of valid (non-padding) inputs in each output's window along one axis.
fn counts(g: &Geometry, out_len: usize, in_len: usize) -> Vec<usize> {
    (0..out_len).map(|o| g.window(o, in_len).len()).collect()
}

/// Which pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Max,
    Avg,
}

/// The pooling custom op (forward on CPU; its `bwd` runs [`MaxPoolBackward`] or
/// [`AvgPoolBackward`]).
struct Pool2d {
    kind: Kind,
    g: Geometry,
}

impl CustomOp1 for Pool2d {
    fn name(&self) -> &'static str {
        match self.kind {
            Kind::Max => "kernels-max-pool2d",
            Kind::Avg => "kernels-avg-pool2d",
        }
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = match s {
            CpuStorage::F32(_) => self.fwd::<f32>(s, l)?,
            CpuStorage::F64(_) => self.fwd::<f64>(s, l)?,
            _ => bail!("{}: expected f32 or f64, got {:?}", self.name(), s.dtype()),
        };
        Ok((out, Shape::from(self.g.out_dims())))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let grad = grad.contiguous()?;
        let g = self.g;
        let gx = match self.kind {
            Kind::Max => x.apply_op2_no_bwd(&grad, &MaxPoolBackward { g })?,
            Kind::Avg => grad.apply_op1_no_bwd(&AvgPoolBackward { g })?,
        };
        Ok(Some(gx))
    }
}

impl Pool2d {
    fn fwd<T: Real>(&self, s: &CpuStorage, l: &Layout) -> Result<CpuStorage> {
        let g = &self.g;
        let x = cpu_slice::<T>(self.name(), s, l, g.in_dims())?;
        let mut out = par_zeros(g.n * g.c * g.out_plane())?;
        match self.kind {
            Kind::Max => pool_planes(g, x, &mut out, T::neg_infinity(), max_into),
            Kind::Avg => {
                pool_planes(g, x, &mut out, T::zero(), |a: &mut T, v| *a += v);
                let inv_rows = inverse_counts::<T>(g, g.ho, g.h);
                let inv_cols = inverse_counts::<T>(g, g.wo, g.w);
                out.par_chunks_mut(g.out_plane()).for_each(|plane| {
                    for (row, &ir) in plane.chunks_exact_mut(g.wo).zip(&inv_rows) {
                        for (o, &ic) in row.iter_mut().zip(&inv_cols) {
                            *o *= ir * ic;
                        }
                    }
                });
            }
        }
        Ok(T::to_cpu_storage_owned(out))
    }
}

/// Whether a scan for the maximum moves to `v` from `best`: strictly larger, or NaN
/// (PyTorch's rule; the first maximum and the last NaN win).
#[inline(always)]
fn takes<T: Real>(v: T, best: T) -> bool {
    (v > best) | v.is_nan()
}

/// `a = max(a, v)` by [`takes`]; the store is unconditional so that loops vectorise.
#[inline(always)]
fn max_into<T: Real>(a: &mut T, v: T) {
    *a = if takes(v, *a) { v } else { *a };
}

/// `1 / count` for each output along one axis.
fn inverse_counts<T: Real>(g: &Geometry, out_len: usize, in_len: usize) -> Vec<T> {
    counts(g, out_len, in_len)
        .into_iter()
        .map(|c| T::from_f64(1.0 / c as f64))
        .collect()
}

/// Reduces every plane of `x` into `out` with `combine`, separably: each input row to `wo`
/// columns (padding taps skipped, accumulators start at `init`), then `kernel` of those rows
/// per output row.
fn pool_planes<T: Real>(
    g: &Geometry,
    x: &[T],
    out: &mut [T],
    init: T,
    combine: impl Fn(&mut T, T) + Sync,
) {
    let (w, wo) = (g.w, g.wo);
    let (cols, phases) = (g.col_taps(), g.phases());
    out.par_chunks_mut(g.out_plane())
        .zip(x.par_chunks(g.in_plane()))
        .for_each_init(
            || (vec![init; g.h * wo], vec![init; g.in_plane()]),
            |(rows, scratch), (out, x)| {
                let x = phases.split(x, scratch);
                for (r, xr) in rows.chunks_exact_mut(wo).zip(x.chunks_exact(w)) {
                    r.fill(init);
                    for tap in &cols {
                        zip_with(&mut r[tap.outs.clone()], &xr[tap.start..], &combine);
                    }
                }
                for (oh, o) in out.chunks_exact_mut(wo).enumerate() {
                    o.fill(init);
                    for i in 0..g.kernel {
                        if let Some(ih) = g.in_row(oh, i) {
                            let r = &rows[ih * wo..(ih + 1) * wo];
                            for (a, &v) in o.iter_mut().zip(r) {
                                combine(a, v);
                            }
                        }
                    }
                }
            },
        );
}

/// Max-pool backward: `(x, grad_out) → grad_x`, each window's gradient to its first maximum.
struct MaxPoolBackward {
    g: Geometry,
}

impl CustomOp2 for MaxPoolBackward {
    fn name(&self) -> &'static str {
        "kernels-max-pool2d-backward"
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

impl MaxPoolBackward {
    /// Finds each window's maximum separably, like the forward, carrying its position: per
    /// input row, the maximum of each output's columns and its column (scanning left to
    /// right); then per output, the maximum over its rows (top to bottom). Both scans use
    /// [`takes`], so the position is the first maximum in row-major order (the last NaN),
    /// and starts at the window's first valid element as in PyTorch.
    fn run<T: Real>(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<CpuStorage> {
        let g = &self.g;
        let (w, wo) = (g.w, g.wo);
        let x = cpu_slice::<T>(self.name(), s1, l1, g.in_dims())?;
        let grad = cpu_slice::<T>(self.name(), s2, l2, g.out_dims())?;
        let (cols, phases) = (g.col_taps(), g.phases());
        // Positions in the plane are u32 so that they share vector lanes with f32 values
        // (`Geometry::pool` bounds the plane size).
        let first_col: Vec<u32> = (0..wo).map(|ow| g.window(ow, w).start as u32).collect();
        let mut gx = par_zeros(x.len())?;
        gx.par_chunks_mut(g.in_plane())
            .zip(x.par_chunks(g.in_plane()))
            .zip(grad.par_chunks(g.out_plane()))
            .for_each_init(
                || {
                    let row_max = vec![T::zero(); g.h * wo];
                    let row_pos = vec![0u32; g.h * wo];
                    let (best, best_pos) = (vec![T::zero(); wo], vec![0u32; wo]);
                    let scratch = vec![T::zero(); g.in_plane()];
                    (row_max, row_pos, best, best_pos, scratch)
                },
                |(row_max, row_pos, best, best_pos, scratch), ((gx, x), grad)| {
                    let x = phases.split(x, scratch);
                    let rows = row_max
                        .chunks_exact_mut(wo)
                        .zip(row_pos.chunks_exact_mut(wo));
                    for (ih, ((m, p), xr)) in rows.zip(x.chunks_exact(w)).enumerate() {
                        let row_start = (ih * w) as u32;
                        m.fill(T::neg_infinity());
                        for (p, &c) in p.iter_mut().zip(&first_col) {
                            *p = row_start + c;
                        }
                        for tap in &cols {
                            let (m, p) = (&mut m[tap.outs.clone()], &mut p[tap.outs.clone()]);
                            let at = row_start + tap.first as u32;
                            scan(m, p, &xr[tap.start..], at, g.stride as u32);
                        }
                    }
                    for (oh, gr) in grad.chunks_exact(wo).enumerate() {
                        let rows = g.window(oh, g.h);
                        best.fill(T::neg_infinity());
                        best_pos.copy_from_slice(&row_pos[rows.start * wo..][..wo]);
                        for ih in rows {
                            let m = &row_max[ih * wo..][..wo];
                            let p = &row_pos[ih * wo..][..wo];
                            merge(best, best_pos, m, p);
                        }
                        for (&p, &v) in best_pos.iter().zip(gr) {
                            gx[p as usize] += v;
                        }
                    }
                },
            );
        Ok(T::to_cpu_storage_owned(gx))
    }
}

/// One tap of the row scan: for each output `i`, moves to `xs[i]` (at plane position
/// `at + i·step`) when [`takes`] says so.
#[inline(always)]
fn scan<T: Real>(max: &mut [T], pos: &mut [u32], xs: &[T], at: u32, step: u32) {
    let mut at = at;
    let xs = &xs[..max.len()];
    for ((m, p), &v) in max.iter_mut().zip(pos.iter_mut()).zip(xs) {
        let keep = u32::from(takes(v, *m)).wrapping_sub(1); // all ones: keep
        *p = (*p & keep) | (at & !keep);
        max_into(m, v);
        at += step;
    }
}

/// One row of the column scan: for each output `i`, moves to the row's maximum `max[i]`
/// (at `pos[i]`) when [`takes`] says so.
#[inline(always)]
fn merge<T: Real>(best: &mut [T], best_pos: &mut [u32], max: &[T], pos: &[u32]) {
    for ((b, bp), (&v, &p)) in best
        .iter_mut()
        .zip(best_pos.iter_mut())
        .zip(max.iter().zip(pos))
    {
        let keep = u32::from(takes(v, *b)).wrapping_sub(1); // all ones: keep
        *bp = (*bp & keep) | (p & !keep);
        max_into(b, v);
    }
}

/// Average-pool backward: `grad_out → grad_x`, each output's gradient spread over the valid
/// elements of its window, divided by their count (the transpose of the forward's passes).
struct AvgPoolBackward {
    g: Geometry,
}

impl CustomOp1 for AvgPoolBackward {
    fn name(&self) -> &'static str {
        "kernels-avg-pool2d-backward"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = match s {
            CpuStorage::F32(_) => self.run::<f32>(s, l)?,
            CpuStorage::F64(_) => self.run::<f64>(s, l)?,
            _ => bail!("{}: expected f32 or f64, got {:?}", self.name(), s.dtype()),
        };
        Ok((out, Shape::from(self.g.in_dims())))
    }
}

impl AvgPoolBackward {
    fn run<T: Real>(&self, s: &CpuStorage, l: &Layout) -> Result<CpuStorage> {
        let g = &self.g;
        let (w, wo) = (g.w, g.wo);
        let grad = cpu_slice::<T>(self.name(), s, l, g.out_dims())?;
        let inv_rows = inverse_counts::<T>(g, g.ho, g.h);
        let inv_cols = inverse_counts::<T>(g, g.wo, g.w);
        let (cols, phases) = (g.col_taps(), g.phases());
        let mut gx = par_zeros(g.n * g.c * g.in_plane())?;
        gx.par_chunks_mut(g.in_plane())
            .zip(grad.par_chunks(g.out_plane()))
            .for_each_init(
                || {
                    let scratch = vec![T::zero(); g.in_plane()];
                    (vec![T::zero(); wo], vec![T::zero(); g.h * wo], scratch)
                },
                |(scaled, rows, scratch), (gx, grad)| {
                    // Transpose of the row pass: rows[ih] = Σ over output rows reading ih.
                    rows.fill(T::zero());
                    for (oh, gr) in grad.chunks_exact(wo).enumerate() {
                        for ((sc, &v), &ic) in scaled.iter_mut().zip(gr).zip(&inv_cols) {
                            *sc = v * (inv_rows[oh] * ic);
                        }
                        for i in 0..g.kernel {
                            if let Some(ih) = g.in_row(oh, i) {
                                let r = &mut rows[ih * wo..(ih + 1) * wo];
                                for (a, &v) in r.iter_mut().zip(scaled.iter()) {
                                    *a += v;
                                }
                            }
                        }
                    }
                    // Transpose of the column pass, into the split rows (in place at stride 1).
                    let acc: &mut [T] = if g.stride == 1 {
                        &mut *gx
                    } else {
                        scratch.fill(T::zero());
                        &mut scratch[..]
                    };
                    for (a, r) in acc.chunks_exact_mut(w).zip(rows.chunks_exact(wo)) {
                        for tap in &cols {
                            let a = &mut a[tap.start..][..tap.outs.len()];
                            zip_with(a, &r[tap.outs.clone()], |a, v| *a += v);
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

#[cfg(test)]
mod tests {
    use super::super::test_util::{
        Kernel, assert_close, distinct, finite_difference_check, forward_grads, uniform, values,
    };
    use super::*;
    use candle_core::{DType, Device, Var};

    type Pool = fn(&Tensor, usize, usize, usize) -> Result<Tensor>;

    /// (kernel, stride, padding) for the comparisons with the reference: kernels 3 and 5,
    /// strides 1 and 2, same padding and none.
    fn configs() -> Vec<(usize, usize, usize)> {
        let mut v = Vec::new();
        for k in [3, 5] {
            for s in [1, 2] {
                for p in [k / 2, 0] {
                    v.push((k, s, p));
                }
            }
        }
        v
    }

    /// Odd, even and non-square spatial sizes.
    const SIZES: [(usize, usize); 3] = [(8, 8), (7, 7), (9, 6)];

    fn compare_with_reference(fast: Pool, reference: Pool, max: bool) {
        for (k, s, p) in configs() {
            for (h, w) in SIZES {
                let dims = [2, 3, h, w];
                let x = if max {
                    distinct(&dims, DType::F32, 7)
                } else {
                    uniform(&dims, DType::F32, 7)
                };
                let what = format!("k{k} s{s} p{p} {h}x{w}");
                let got = forward_grads(
                    &|t: &[Tensor]| fast(&t[0], k, s, p),
                    std::slice::from_ref(&x),
                    1,
                );
                // The composition (what runs off the CPU) on every test device.
                for dev in crate::device::test_devices() {
                    let x = x.to_device(&dev).unwrap();
                    let want = forward_grads(&|t: &[Tensor]| reference(&t[0], k, s, p), &[x], 1);
                    let what = format!("{what} on {}", crate::device::name(&dev));
                    assert_close(&got.0, &want.0, 1e-5, &format!("forward {what}"));
                    assert_close(&got.1[0], &want.1[0], 1e-5, &format!("gradient {what}"));
                }
            }
        }
    }

    #[test]
    fn max_pool_matches_reference() {
        compare_with_reference(max_pool2d, max_pool2d_reference, true);
    }

    #[test]
    fn avg_pool_matches_reference() {
        compare_with_reference(avg_pool2d, avg_pool2d_reference, false);
    }

    /// Inputs smaller than the window, where some taps read only padding for every output
    /// (and strides larger than the input).
    #[test]
    fn pools_on_tiny_inputs() {
        for (h, w) in [(1, 1), (1, 2), (2, 1), (2, 3)] {
            for (k, s, p) in [(5, 1, 2), (5, 2, 2), (3, 3, 1), (4, 5, 2)] {
                let x = distinct(&[2, 2, h, w], DType::F32, 9);
                for (fast, reference) in [
                    (max_pool2d as Pool, max_pool2d_reference as Pool),
                    (avg_pool2d, avg_pool2d_reference),
                ] {
                    let what = format!("k{k} s{s} p{p} {h}x{w}");
                    let x = [x.clone()];
                    let got = forward_grads(&|t: &[Tensor]| fast(&t[0], k, s, p), &x, 1);
                    let want = forward_grads(&|t: &[Tensor]| reference(&t[0], k, s, p), &x, 1);
                    assert_close(&got.0, &want.0, 1e-6, &format!("forward {what}"));
                    assert_close(&got.1[0], &want.1[0], 1e-6, &format!("gradient {what}"));
                }
            }
        }
    }

    /// The reference itself agrees with Candle's pooling where that applies (no padding for
    /// the average; for the max, Candle's pool on an input padded with −∞ by hand).
    #[test]
    fn reference_matches_candle_pooling() {
        let x = uniform(&[2, 3, 9, 8], DType::F32, 3);
        for (k, s) in [(3, 1), (3, 2), (5, 2), (2, 2)] {
            let candle_avg = x.avg_pool2d_with_stride(k, s).unwrap();
            let ours = avg_pool2d_reference(&x, k, s, 0).unwrap();
            assert_close(&ours, &candle_avg, 1e-6, &format!("avg k{k} s{s}"));
            let p = k / 2;
            let padded = pad_const(&x, p, f64::NEG_INFINITY).unwrap();
            let candle_max = padded.max_pool2d_with_stride(k, s).unwrap();
            let ours = max_pool2d_reference(&x, k, s, p).unwrap();
            assert_close(&ours, &candle_max, 0.0, &format!("max k{k} s{s}"));
        }
    }

    #[test]
    fn pools_accept_non_contiguous_input() {
        let base = uniform(&[2, 3, 6, 9], DType::F32, 11);
        let x = base.transpose(2, 3).unwrap();
        assert!(!x.is_contiguous());
        for (fast, reference) in [
            (max_pool2d as Pool, max_pool2d_reference as Pool),
            (avg_pool2d, avg_pool2d_reference),
        ] {
            let got = forward_grads(
                &|t: &[Tensor]| fast(&t[0].t()?, 3, 2, 1),
                std::slice::from_ref(&base),
                2,
            );
            let want = forward_grads(
                &|t: &[Tensor]| reference(&t[0].t()?, 3, 2, 1),
                std::slice::from_ref(&base),
                2,
            );
            assert_close(&got.0, &want.0, 1e-5, "forward");
            assert_close(&got.1[0], &want.1[0], 1e-5, "gradient");
            let direct = fast(&x, 3, 2, 1).unwrap();
            assert_close(&direct, &got.0, 0.0, "direct");
        }
    }

    /// (kernel, stride, padding) for the finite-difference checks, including kernel = stride.
    const FD_CONFIGS: [(usize, usize, usize); 5] =
        [(3, 1, 1), (3, 2, 1), (5, 2, 2), (5, 1, 0), (2, 2, 0)];

    #[test]
    fn max_pool_finite_differences() {
        for (k, s, p) in FD_CONFIGS {
            let x = distinct(&[2, 2, 5, 6], DType::F64, 5);
            let f: Kernel = &|t: &[Tensor]| max_pool2d(&t[0], k, s, p);
            finite_difference_check(f, &[x], 1e-6, &format!("max k{k} s{s} p{p}"));
        }
    }

    #[test]
    fn avg_pool_finite_differences() {
        for (k, s, p) in FD_CONFIGS {
            let x = uniform(&[2, 2, 5, 6], DType::F64, 5);
            let f: Kernel = &|t: &[Tensor]| avg_pool2d(&t[0], k, s, p);
            finite_difference_check(f, &[x], 1e-6, &format!("avg k{k} s{s} p{p}"));
        }
    }

    fn plane(v: &[f64], h: usize, w: usize) -> Tensor {
        Tensor::from_vec(v.to_vec(), (1, 1, h, w), &Device::Cpu).unwrap()
    }

    /// Output and gradient of `Σ pool(x)` for an f64 plane.
    fn pool_and_grad(pool: Pool, x: &Tensor, k: usize, s: usize, p: usize) -> (Vec<f64>, Vec<f64>) {
        let v = Var::from_tensor(x).unwrap();
        let y = pool(v.as_tensor(), k, s, p).unwrap();
        let grads = y.sum_all().unwrap().backward().unwrap();
        (values(&y), values(grads.get(v.as_tensor()).unwrap()))
    }

    /// Padding is left out of the average: a 3×3 window over a 3×3 input of ones gives ones,
    /// and the gradient of the sum at an input is Σ 1/count over the windows holding it
    /// (corner: 1/4 + 2·1/6 + 1/9 = 25/36; edge: 2·1/4 + 3·1/6 + 1/9 = 10/9; centre:
    /// 4·1/4 + 4·1/6 + 1/9 = 16/9).
    #[test]
    fn avg_pool_excludes_padding_by_hand() {
        let (y, g) = pool_and_grad(avg_pool2d, &plane(&[1.0; 9], 3, 3), 3, 1, 1);
        assert_eq!(y, vec![1.0; 9]);
        let (c, e, m) = (25.0 / 36.0, 10.0 / 9.0, 16.0 / 9.0);
        let want = [c, e, c, e, m, e, c, e, c];
        for (a, b) in g.iter().zip(want) {
            assert!((a - b).abs() < 1e-12, "{g:?}");
        }
        // 1..9: corner = mean(1, 2, 4, 5), edge = mean(1..6), centre = mean(1..9).
        let x = plane(&[1., 2., 3., 4., 5., 6., 7., 8., 9.], 3, 3);
        let (y, _) = pool_and_grad(avg_pool2d, &x, 3, 1, 1);
        assert_eq!(y[0], 3.0);
        assert_eq!(y[1], 3.5);
        assert_eq!(y[4], 5.0);
        // Every window of a 2×2 input covers all of it: 2.5, not 10 / 9.
        let (y, g) = pool_and_grad(avg_pool2d, &plane(&[1., 2., 3., 4.], 2, 2), 3, 1, 1);
        assert_eq!(y, vec![2.5; 4]);
        assert_eq!(g, vec![1.0; 4]);
        // Stride 2 with padding on a 4×4 input of ones: still ones.
        let (y, _) = pool_and_grad(avg_pool2d, &plane(&[1.0; 16], 4, 4), 3, 2, 1);
        assert_eq!(y, vec![1.0; 4]);
    }

    /// The padding (−∞) never wins, even when every input is negative.
    #[test]
    fn max_pool_padding_never_wins() {
        let (y, _) = pool_and_grad(max_pool2d, &plane(&[-3.0; 9], 3, 3), 3, 1, 1);
        assert_eq!(y, vec![-3.0; 9]);
        let x = (uniform(&[2, 3, 7, 7], DType::F32, 4) - 2.0).unwrap();
        for (k, s, p) in configs() {
            let y = max_pool2d(&x, k, s, p).unwrap();
            assert!(values(&y).iter().all(|&v| v < -0.9), "k{k} s{s} p{p}");
        }
        let x = plane(&(0..16).map(|i| i as f64).collect::<Vec<_>>(), 4, 4);
        let (y, _) = pool_and_grad(max_pool2d, &x, 2, 2, 0);
        assert_eq!(y, vec![5., 7., 13., 15.]);
        // −(0..16): windows {0,1}², {0,1}×{1,2,3}, {1,2,3}×{0,1}, {1,2,3}² hold the
        // smallest magnitudes 0, 1, 4, 5.
        let (y, _) = pool_and_grad(max_pool2d, &(x * -1.0).unwrap(), 3, 2, 1);
        assert_eq!(y, vec![0., -1., -4., -5.]);
    }

    /// On ties the gradient goes to the first maximum of each window (row-major), as in
    /// PyTorch. 3×3 ones, 3×3 windows, stride 1, padding 1: output (oh, ow)'s first valid
    /// element is (max(oh − 1, 0), max(ow − 1, 0)).
    #[test]
    fn max_pool_gradient_goes_to_first_maximum() {
        let (y, g) = pool_and_grad(max_pool2d, &plane(&[1.0; 9], 3, 3), 3, 1, 1);
        assert_eq!(y, vec![1.0; 9]);
        assert_eq!(g, vec![4., 2., 0., 2., 1., 0., 0., 0., 0.]);
        let (_, g) = pool_and_grad(max_pool2d, &plane(&[1.0; 16], 4, 4), 2, 2, 0);
        assert_eq!(
            g,
            vec![
                1., 0., 1., 0., 0., 0., 0., 0., 1., 0., 1., 0., 0., 0., 0., 0.
            ]
        );
    }

    /// NaN propagates through max pooling and takes the gradient (PyTorch's rule).
    #[test]
    fn max_pool_propagates_nan() {
        let mut v = vec![0.0; 16];
        v[5] = f64::NAN;
        v[6] = 7.0;
        let (y, g) = pool_and_grad(max_pool2d, &plane(&v, 4, 4), 2, 2, 0);
        assert!(y[0].is_nan() && y[1] == 7.0 && y[2] == 0.0, "{y:?}");
        assert_eq!((g[5], g[6], g[0]), (1.0, 1.0, 0.0));
    }

    #[test]
    fn pool_arguments_are_checked() {
        let x = uniform(&[1, 2, 5, 5], DType::F32, 0);
        for pool in [
            max_pool2d as Pool,
            avg_pool2d,
            max_pool2d_reference,
            avg_pool2d_reference,
        ] {
            let err = |x: &Tensor, k, s, p| pool(x, k, s, p).unwrap_err().to_string();
            assert!(err(&x.flatten(0, 1).unwrap(), 3, 1, 1).contains("4-D"));
            assert!(err(&x, 0, 1, 0).contains("kernel"));
            assert!(err(&x, 3, 0, 1).contains("stride"));
            assert!(err(&x, 7, 1, 0).contains("larger"));
            assert!(err(&x, 3, 1, 2).contains("half"));
            let ints = Tensor::zeros((1, 2, 5, 5), DType::U32, &Device::Cpu).unwrap();
            assert!(err(&ints, 3, 1, 1).contains("float"));
        }
    }

    /// F16 / BF16 on the CPU take the composition of Candle ops.
    #[test]
    fn half_precision_takes_the_composition() {
        let x = uniform(&[1, 2, 6, 6], DType::F32, 8);
        for (fast, reference) in [
            (max_pool2d as Pool, max_pool2d_reference as Pool),
            (avg_pool2d, avg_pool2d_reference),
        ] {
            let half = fast(&x.to_dtype(DType::BF16).unwrap(), 3, 1, 1).unwrap();
            assert_eq!(half.dtype(), DType::BF16);
            let want = reference(&x, 3, 1, 1).unwrap();
            assert_close(&half, &want, 1e-2, "bf16");
        }
    }
}
