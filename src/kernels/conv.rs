//! Standard convolution (NCHW input, OIHW filters, groups 1, square `k`×`k` window, stride,
//! padding, dilation, no bias): the public function, its CPU custom op (forward and the
//! gradients for the input and the filters), and Candle's convolution, which runs on other
//! devices and dtypes and is the tests' oracle.
//!
//! Every product is one matrix multiplication per sample, run by the `gemm` crate (the one
//! Candle's CPU matmul uses), except the filter gradient's in f32 on CPUs with AVX-512,
//! which [`RowDots`] sums as its factors lie (`row_dots.rs`). With `col[b]` the `[C_in·k·k, Ho·Wo]` im2col matrix of sample
//! `b` (rows ordered like the filters' `(c_in, i, j)`, padding read as zero) and `W` the
//! filters as a `[C_out, C_in·k·k]` matrix:
//!
//! * forward: `y[b] = W · col[b]`;
//! * filters: `dW = Σ_b dy[b] · col[b]ᵀ`;
//! * input: `dx[b] = col2im(Wᵀ · dy[b])`, the scatter-add transposed to im2col.
//!
//! A 1×1 window at stride 1 without padding has `col[b] = x[b]`: no copy is made, and the
//! input gradient is the product itself. The samples are split across the rayon threads
//! (each multiplication single-threaded) unless there are fewer samples than threads; then
//! the samples run in turn and each multiplication uses all threads. The input gradient is
//! computed only when the input is tracked (a stem's image is not).

use super::row_dots::{self, RowDots};
use super::{
    Geometry, Real, check_float, check_like, cpu_slice, dispatch2, use_cpu_kernel, written, zeroed,
};
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor, bail};
use gemm::Parallelism;
use rayon::prelude::*;
use std::mem::MaybeUninit;
use std::ops::Range;

/// Convolution, PyTorch's `nn.Conv2d(C_in, C_out, k, stride, padding, dilation, bias =
/// False)` with filters `w`.
///
/// # Shapes
/// `x`: `[N, C_in, H, W]`, `w`: `[C_out, C_in, k, k]` → `[N, C_out, Ho, Wo]` with
/// `Ho = (H + 2·padding − dilation·(k − 1) − 1) / stride + 1` (floor), and likewise `Wo`.
///
/// # Errors
/// Non-float or mismatched dtypes or devices, wrong ranks, a non-square window, filters whose
/// input channels differ from the input's, a zero stride or dilation, or a (dilated) window
/// larger than the padded input.
pub fn conv2d(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    padding: usize,
    dilation: usize,
) -> Result<Tensor> {
    let conv = Conv::new("conv2d", x, w, stride, padding, dilation)?;
    if use_cpu_kernel(x) {
        x.contiguous()?.apply_op2(&w.contiguous()?, Conv2d { conv })
    } else {
        x.conv2d(w, padding, stride, dilation, 1)
    }
}

/// [`conv2d`] as Candle's convolution, on any device.
///
/// # Shapes
/// As [`conv2d`].
pub fn conv2d_reference(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    padding: usize,
    dilation: usize,
) -> Result<Tensor> {
    Conv::new("conv2d_reference", x, w, stride, padding, dilation)?;
    x.conv2d(w, padding, stride, dilation, 1)
}

/// The validated shapes of one convolution: the window geometry over the input (whose `c`
/// is `C_in`) and the number of output channels.
#[derive(Debug, Clone, Copy)]
struct Conv {
    g: Geometry,
    c_out: usize,
}

impl Conv {
    /// Validates the arguments of a convolution.
    fn new(
        op: &str,
        x: &Tensor,
        w: &Tensor,
        stride: usize,
        padding: usize,
        dilation: usize,
    ) -> Result<Self> {
        let &[c_out, wc, kh, kw] = w.dims() else {
            bail!(
                "{op}: expected 4-D filters [C_out, C_in, k, k], got shape {:?}",
                w.dims()
            )
        };
        if kh != kw {
            bail!(
                "{op}: expected a square window [C_out, C_in, k, k], got filters {:?}",
                w.dims()
            )
        }
        let g = Geometry::new(op, x.dims(), kh, stride, padding, dilation)?;
        if wc != g.c {
            bail!(
                "{op}: filters for {wc} input channels on an input with {} channels \
                 (filters {:?}, input {:?})",
                g.c,
                w.dims(),
                x.dims()
            )
        }
        check_float(op, x.dtype())?;
        check_like(op, "the filter", w, x)?;
        Ok(Conv { g, c_out })
    }

    fn filter_dims(&self) -> (usize, usize, usize, usize) {
        (self.c_out, self.g.c, self.g.kernel, self.g.kernel)
    }

    fn out_dims(&self) -> (usize, usize, usize, usize) {
        (self.g.n, self.c_out, self.g.ho, self.g.wo)
    }

    /// Rows of the im2col matrix, `C_in·k·k`.
    fn patch(&self) -> usize {
        self.g.c * self.g.kernel * self.g.kernel
    }

    /// Whether `col[b] = x[b]` (a 1×1 window at stride 1 without padding).
    fn direct(&self) -> bool {
        let g = &self.g;
        g.kernel == 1 && g.stride == 1 && g.padding == 0
    }

    /// Elements of one sample's im2col matrix (0 when it is the input itself).
    fn col_len(&self) -> usize {
        if self.direct() {
            0
        } else {
            self.patch() * self.g.out_plane()
        }
    }

    /// How the work is shared among `threads` rayon threads: over the samples, or inside
    /// each multiplication when there are fewer samples than threads.
    fn split(&self) -> (bool, Parallelism) {
        let threads = rayon::current_num_threads();
        if self.g.n >= threads || threads == 1 {
            (true, Parallelism::None)
        } else {
            (false, Parallelism::Rayon(threads))
        }
    }

    /// Per column tap `j`: the output columns that read inside the input, and the input
    /// column the first of them reads.
    fn col_taps(&self) -> Vec<(Range<usize>, usize)> {
        let g = &self.g;
        (0..g.kernel).map(|j| g.taps(g.wo, g.w, j)).collect()
    }

    /// The im2col matrix of one sample `x` (`[C_in, H, W]`): `x` itself when [`Conv::direct`],
    /// else written into `col` (`taps` from [`Conv::col_taps`]).
    fn sample_col<'a, T: Real>(
        &self,
        taps: &[(Range<usize>, usize)],
        x: &'a [T],
        col: &'a mut [T],
    ) -> &'a [T] {
        if self.direct() {
            x
        } else {
            self.im2col(taps, x, col);
            col
        }
    }

    /// Writes the im2col matrix of one sample `x` (`[C_in, H, W]`) into `col`
    /// (`[C_in·k·k, Ho·Wo]`), zeros where the window reads padding.
    fn im2col<T: Real>(&self, taps: &[(Range<usize>, usize)], x: &[T], col: &mut [T]) {
        let g = &self.g;
        let (k, s, wo) = (g.kernel, g.stride, g.wo);
        let mut rows = col.chunks_exact_mut(g.out_plane());
        for plane in x.chunks_exact(g.in_plane()) {
            for i in 0..k {
                for (outs, first) in taps {
                    let Some(row) = rows.next() else { return };
                    for (oh, dst) in row.chunks_exact_mut(wo).enumerate() {
                        let Some(ih) = g.in_row(oh, i) else {
                            dst.fill(T::zero());
                            continue;
                        };
                        let xrow = &plane[ih * g.w..(ih + 1) * g.w];
                        dst[..outs.start].fill(T::zero());
                        dst[outs.end..].fill(T::zero());
                        let dst = &mut dst[outs.clone()];
                        if s == 1 {
                            dst.copy_from_slice(&xrow[*first..first + dst.len()]);
                        } else {
                            for (d, &v) in dst.iter_mut().zip(xrow[*first..].iter().step_by(s)) {
                                *d = v;
                            }
                        }
                    }
                }
            }
        }
    }

    /// Adds the im2col-shaped `col` (`[C_in·k·k, Ho·Wo]`) back onto the input positions each
    /// element was read from, into `dx` (`[C_in, H, W]`): the transpose of [`Conv::im2col`].
    fn col2im<T: Real>(&self, taps: &[(Range<usize>, usize)], col: &[T], dx: &mut [T]) {
        let g = &self.g;
        let (k, s, wo) = (g.kernel, g.stride, g.wo);
        let mut rows = col.chunks_exact(g.out_plane());
        for plane in dx.chunks_exact_mut(g.in_plane()) {
            for i in 0..k {
                for (outs, first) in taps {
                    let Some(row) = rows.next() else { return };
                    for (oh, src) in row.chunks_exact(wo).enumerate() {
                        let Some(ih) = g.in_row(oh, i) else { continue };
                        let xrow = &mut plane[ih * g.w..(ih + 1) * g.w];
                        let src = &src[outs.clone()];
                        if s == 1 {
                            for (d, &v) in xrow[*first..].iter_mut().zip(src) {
                                *d += v;
                            }
                        } else {
                            let dst = xrow[*first..].iter_mut().step_by(s);
                            for (d, &v) in dst.zip(src) {
                                *d += v;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The element types `gemm` multiplies here. `gemm` dispatches on the type at run time and
/// panics on types it lacks, so only these two implement it.
trait GemmReal: Real {}
impl GemmReal for f32 {}
impl GemmReal for f64 {}

/// A `rows`×`cols` matrix inside a slice: element `(i, j)` at `i·rs + j·cs`.
#[derive(Debug, Clone, Copy)]
struct Mat {
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl Mat {
    /// Row-major, contiguous.
    fn rows(rows: usize, cols: usize) -> Self {
        Mat {
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose of the row-major `rows`×`cols` matrix, a `cols`×`rows` view.
    fn transposed(rows: usize, cols: usize) -> Self {
        Mat {
            rows: cols,
            cols: rows,
            rs: 1,
            cs: cols,
        }
    }

    /// Whether every element lies inside a slice of `len` elements.
    fn fits(&self, len: usize) -> bool {
        if self.rows == 0 || self.cols == 0 {
            return true;
        }
        let last = (self.rows - 1)
            .checked_mul(self.rs)
            .zip((self.cols - 1).checked_mul(self.cs))
            .and_then(|(a, b)| a.checked_add(b));
        matches!(last, Some(l) if l < len) && isize::try_from(len).is_ok()
    }
}

/// `dst = lhs · rhs`, or `dst += lhs · rhs` when `accumulate`.
///
/// # Errors
/// Shapes that do not chain, or a view that reaches outside its slice.
#[allow(clippy::too_many_arguments)]
fn matmul<T: GemmReal>(
    dst: &mut [T],
    d: Mat,
    accumulate: bool,
    lhs: &[T],
    l: Mat,
    rhs: &[T],
    r: Mat,
    parallelism: Parallelism,
) -> Result<()> {
    // SAFETY: `gemm_into` writes only values into `dst`, so it stays initialised.
    let dst = unsafe { &mut *(dst as *mut [T] as *mut [MaybeUninit<T>]) };
    gemm_into(dst, d, accumulate, lhs, l, rhs, r, parallelism)
}

/// `dst = lhs · rhs` into a buffer that may be uninitialised, where `d` is row-major and
/// covers all of `dst`: afterwards every element is written.
///
/// # Errors
/// As [`matmul`], and a `d` that does not cover `dst`.
#[allow(clippy::too_many_arguments)]
fn matmul_overwrite<'a, T: GemmReal>(
    dst: &'a mut [MaybeUninit<T>],
    d: Mat,
    lhs: &[T],
    l: Mat,
    rhs: &[T],
    r: Mat,
    parallelism: Parallelism,
) -> Result<&'a mut [T]> {
    if d.rs != d.cols || d.cs != 1 || d.rows * d.cols != dst.len() {
        bail!(
            "conv2d: a product {d:?} that does not cover its {} outputs",
            dst.len()
        )
    }
    gemm_into(dst, d, false, lhs, l, rhs, r, parallelism)?;
    // SAFETY: the row-major `d` addresses every element of `dst`, and the product (with
    // `accumulate` false) wrote each one.
    Ok(unsafe { &mut *(dst as *mut [MaybeUninit<T>] as *mut [T]) })
}

/// The product behind [`matmul`] and [`matmul_overwrite`]: reads `dst` only when
/// `accumulate`, and writes every element the view `d` addresses.
#[allow(clippy::too_many_arguments)]
fn gemm_into<T: GemmReal>(
    dst: &mut [MaybeUninit<T>],
    d: Mat,
    accumulate: bool,
    lhs: &[T],
    l: Mat,
    rhs: &[T],
    r: Mat,
    parallelism: Parallelism,
) -> Result<()> {
    if l.rows != d.rows || r.cols != d.cols || l.cols != r.rows {
        bail!("conv2d: matmul shapes {l:?} · {r:?} → {d:?} do not chain")
    }
    if !(d.fits(dst.len()) && l.fits(lhs.len()) && r.fits(rhs.len())) {
        bail!("conv2d: a matmul view reaches outside its buffer")
    }
    if d.rows == 0 || d.cols == 0 {
        return Ok(());
    }
    if l.cols == 0 {
        if !accumulate {
            dst.fill(MaybeUninit::new(T::zero()));
        }
        return Ok(());
    }
    // SAFETY: `fits` checked that every element each view addresses lies inside its slice
    // (and that the strides fit in isize); `dst` is a unique borrow, so it aliases neither
    // operand; gemm reads `dst` only when `accumulate` (then it is initialised: only
    // `matmul` passes true); T is f32 or f64 (`GemmReal`), which gemm supports.
    unsafe {
        gemm::gemm(
            d.rows,
            d.cols,
            l.cols,
            dst.as_mut_ptr().cast::<T>(),
            d.cs as isize,
            d.rs as isize,
            accumulate,
            lhs.as_ptr(),
            l.cs as isize,
            l.rs as isize,
            rhs.as_ptr(),
            r.cs as isize,
            r.rs as isize,
            T::one(),
            T::one(),
            false,
            false,
            false,
            parallelism,
        );
    }
    Ok(())
}

/// Runs `f(i, chunk_i, scratch)` for every `chunk`-element chunk `chunk_i` of `out` (a
/// sample, or a run of samples), in parallel over the chunks or in turn; `scratch` is a
/// buffer of `scratch` elements that `f` may overwrite, one per rayon job.
fn for_samples<E: Send, T: Real>(
    parallel: bool,
    out: &mut [E],
    chunk: usize,
    scratch: usize,
    f: impl Fn(usize, &mut [E], &mut Vec<T>) -> Result<()> + Sync + Send,
) -> Result<()> {
    if chunk == 0 {
        return Ok(());
    }
    if parallel {
        // One contiguous run of samples per thread, each with one scratch buffer (rayon's
        // per-job `init` would allocate and zero a buffer for every split).
        let samples = out.len() / chunk;
        let per_thread = samples.div_ceil(rayon::current_num_threads()).max(1);
        out.par_chunks_mut(chunk * per_thread)
            .enumerate()
            .try_for_each(|(t, run)| {
                let mut buf = vec![T::zero(); scratch];
                for (i, out) in run.chunks_mut(chunk).enumerate() {
                    f(t * per_thread + i, out, &mut buf)?;
                }
                Ok(())
            })
    } else {
        let mut buf = vec![T::zero(); scratch];
        for (b, out) in out.chunks_mut(chunk).enumerate() {
            f(b, out, &mut buf)?;
        }
        Ok(())
    }
}

/// The convolution custom op: `(x, w) → y`; its `bwd` runs [`InputGrad`] and [`FilterGrad`].
struct Conv2d {
    conv: Conv,
}

impl CustomOp2 for Conv2d {
    fn name(&self) -> &'static str {
        "kernels-conv2d"
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
        Ok((out, Shape::from(self.conv.out_dims())))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let conv = self.conv;
        let gx = if x.track_op() {
            Some(grad.apply_op2_no_bwd(w, &InputGrad { conv })?)
        } else {
            None
        };
        let gw = if w.track_op() {
            Some(x.apply_op2_no_bwd(&grad, &FilterGrad { conv })?)
        } else {
            None
        };
        Ok((gx, gw))
    }
}

impl Conv2d {
    fn run<T: GemmReal>(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<CpuStorage> {
        let c = &self.conv;
        let g = &c.g;
        let x = cpu_slice::<T>(self.name(), s1, l1, g.in_dims())?;
        let w = cpu_slice::<T>(self.name(), s2, l2, c.filter_dims())?;
        let (patch, plane) = (c.patch(), g.out_plane());
        let taps = c.col_taps();
        let (parallel, par) = c.split();
        let products = |y: &mut [MaybeUninit<T>]| {
            for_samples(parallel, y, c.c_out * plane, c.col_len(), |b, y, col| {
                let xb = &x[b * g.c * g.in_plane()..][..g.c * g.in_plane()];
                let col = c.sample_col(&taps, xb, col);
                let (wm, cm) = (Mat::rows(c.c_out, patch), Mat::rows(patch, plane));
                matmul_overwrite(y, Mat::rows(c.c_out, plane), w, wm, col, cm, par).map(|_| ())
            })
        };
        // SAFETY: `for_samples` hands every sample's chunk to the closure, and
        // `matmul_overwrite` writes all of it unless it fails.
        let y = unsafe { written(g.n * c.c_out * plane, products) }?;
        Ok(T::to_cpu_storage_owned(y))
    }
}

/// Gradient for the input: `(grad_y, w) → grad_x`.
struct InputGrad {
    conv: Conv,
}

impl CustomOp2 for InputGrad {
    fn name(&self) -> &'static str {
        "kernels-conv2d-input-grad"
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
        Ok((out, Shape::from(self.conv.g.in_dims())))
    }
}

impl InputGrad {
    fn run<T: GemmReal>(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<CpuStorage> {
        let c = &self.conv;
        let g = &c.g;
        let grad = cpu_slice::<T>(self.name(), s1, l1, c.out_dims())?;
        let w = cpu_slice::<T>(self.name(), s2, l2, c.filter_dims())?;
        let (patch, plane) = (c.patch(), g.out_plane());
        let taps = c.col_taps();
        let (parallel, par) = c.split();
        let wt = Mat::transposed(c.c_out, patch);
        let products = |gx: &mut [MaybeUninit<T>]| {
            for_samples(
                parallel,
                gx,
                g.c * g.in_plane(),
                c.col_len(),
                |b, gx, col| {
                    let gy = &grad[b * c.c_out * plane..][..c.c_out * plane];
                    let gy_m = Mat::rows(c.c_out, plane);
                    if c.direct() {
                        let d = Mat::rows(g.c, plane);
                        return matmul_overwrite(gx, d, w, wt, gy, gy_m, par).map(|_| ());
                    }
                    matmul(col, Mat::rows(patch, plane), false, w, wt, gy, gy_m, par)?;
                    c.col2im(&taps, col, zeroed(gx));
                    Ok(())
                },
            )
        };
        // SAFETY: `for_samples` hands every sample's chunk to the closure, which writes all
        // of it (`matmul_overwrite`, or `zeroed` before `col2im` adds into it) unless it fails.
        let gx = unsafe { written(g.n * g.c * g.in_plane(), products) }?;
        Ok(T::to_cpu_storage_owned(gx))
    }
}

/// Gradient for the filters: `(x, grad_y) → grad_w`. The samples are split into one run
/// per thread; each run accumulates its samples' products into its own `[C_out, C_in·k·k]`
/// sum, and the sums are added at the end.
struct FilterGrad {
    conv: Conv,
}

impl CustomOp2 for FilterGrad {
    fn name(&self) -> &'static str {
        "kernels-conv2d-filter-grad"
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
            || self.run_f32(s1, l1, s2, l2),
            || self.run::<f64>(s1, l1, s2, l2),
        )?;
        Ok((out, Shape::from(self.conv.filter_dims())))
    }
}

impl FilterGrad {
    /// In f32 on CPUs with AVX-512, each run's products are summed by [`RowDots`], which
    /// reads `dy[b]` as it lies; elsewhere by `gemm` ([`FilterGrad::run`]).
    fn run_f32(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<CpuStorage> {
        if !row_dots::avx512() {
            return self.run::<f32>(s1, l1, s2, l2);
        }
        let c = &self.conv;
        let (plane, taps) = (c.g.out_plane(), c.col_taps());
        self.by_runs::<f32>(s1, l1, s2, l2, |samples, sum, col, data| {
            let mut dots = RowDots::new(c.c_out, c.patch())
                .ok_or_else(|| candle_core::Error::Msg("row_dots: no AVX-512".into()))?;
            for b in samples {
                dots.add(data.gy(b), c.sample_col(&taps, data.x(b), col), plane);
            }
            dots.finish(sum);
            Ok(())
        })
    }

    fn run<T: GemmReal>(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<CpuStorage> {
        let c = &self.conv;
        let (patch, plane, taps) = (c.patch(), c.g.out_plane(), c.col_taps());
        let par = c.split().1;
        self.by_runs::<T>(s1, l1, s2, l2, |samples, sum, col, data| {
            for (i, b) in samples.enumerate() {
                matmul(
                    sum,
                    Mat::rows(c.c_out, patch),
                    i > 0,
                    data.gy(b),
                    Mat::rows(c.c_out, plane),
                    c.sample_col(&taps, data.x(b), col),
                    Mat::transposed(patch, plane),
                    par,
                )?;
            }
            Ok(())
        })
    }

    /// Splits the samples into runs, calls `run(samples, sum, col, data)` for each run with
    /// its own `[C_out, C_in·k·k]` block `sum` to overwrite, a scratch `col` for the im2col
    /// matrix and the samples' inputs and output gradients, and adds the blocks.
    fn by_runs<T: Real>(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        run: impl Fn(Range<usize>, &mut [T], &mut [T], &Samples<'_, T>) -> Result<()> + Sync + Send,
    ) -> Result<CpuStorage> {
        let c = &self.conv;
        let g = &c.g;
        let x = cpu_slice::<T>(self.name(), s1, l1, g.in_dims())?;
        let grad = cpu_slice::<T>(self.name(), s2, l2, c.out_dims())?;
        let data = Samples {
            x,
            gy: grad,
            x_len: g.c * g.in_plane(),
            gy_len: c.c_out * g.out_plane(),
        };
        let parallel = c.split().0;
        let runs = if parallel {
            rayon::current_num_threads().min(g.n).max(1)
        } else {
            1
        };
        let per_run = g.n.div_ceil(runs);
        let len = c.c_out * c.patch();
        // Partial sums, one `[C_out, C_in·k·k]` block per run; block 0 receives the total.
        let mut sums = vec![T::zero(); runs * len];
        for_samples(parallel, &mut sums, len, c.col_len(), |r, sum, col| {
            let samples = r * per_run..((r + 1) * per_run).min(g.n);
            run(samples, sum, col, &data)
        })?;
        if len > 0 {
            let (total, rest) = sums.split_at_mut(len);
            for part in rest.chunks_exact(len) {
                for (t, &v) in total.iter_mut().zip(part) {
                    *t += v;
                }
            }
        }
        sums.truncate(len);
        Ok(T::to_cpu_storage_owned(sums))
    }
}

/// A filter gradient's inputs, sample by sample: `x[b]` (`[C_in, H, W]`) and `dy[b]`
/// (`[C_out, Ho, Wo]`).
struct Samples<'a, T> {
    x: &'a [T],
    gy: &'a [T],
    x_len: usize,
    gy_len: usize,
}

impl<'a, T> Samples<'a, T> {
    fn x(&self, b: usize) -> &'a [T] {
        &self.x[b * self.x_len..][..self.x_len]
    }

    fn gy(&self, b: usize) -> &'a [T] {
        &self.gy[b * self.gy_len..][..self.gy_len]
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{
        Kernel, assert_close, finite_difference_check, forward_grads, uniform, values,
    };
    use super::*;
    use candle_core::{DType, Device, Var};

    type ConvFn = fn(&Tensor, &Tensor, usize, usize, usize) -> Result<Tensor>;

    /// (kernel, stride, padding, dilation): 1×1 at strides 1 and 2, 3×3 same-padded at
    /// strides 1 and 2, 3×3 unpadded, 5×5 at dilation 2 (same-padded and not).
    const CONFIGS: [(usize, usize, usize, usize); 8] = [
        (1, 1, 0, 1),
        (1, 2, 0, 1),
        (3, 1, 1, 1),
        (3, 2, 1, 1),
        (3, 1, 0, 1),
        (5, 1, 4, 2),
        (5, 2, 1, 2),
        (1, 1, 1, 1),
    ];

    fn run(
        conv: ConvFn,
        x: &Tensor,
        w: &Tensor,
        (_, s, p, d): (usize, usize, usize, usize),
    ) -> (Tensor, Vec<Tensor>) {
        forward_grads(
            &|t: &[Tensor]| conv(&t[0], &t[1], s, p, d),
            &[x.clone(), w.clone()],
            1,
        )
    }

    /// Output, input gradient and filter gradient against Candle's convolution, in f64 to
    /// 1e−10 and in f32 to 1e−4, on square odd and even sizes (Candle's backward sizes the
    /// input gradient from the height alone; non-square inputs are covered by the
    /// finite-difference check) and at batch sizes below and above the thread count.
    #[test]
    fn conv_matches_reference() {
        for (dtype, tol) in [(DType::F64, 1e-10), (DType::F32, 1e-4)] {
            for cfg in CONFIGS {
                let (k, s, p, d) = cfg;
                for (n, h) in [(3, 8), (1, 7), (4, 9)] {
                    if d * (k - 1) + 1 > h + 2 * p {
                        continue;
                    }
                    let x = uniform(&[n, 3, h, h], dtype, 7);
                    let w = uniform(&[5, 3, k, k], dtype, 8);
                    let what = format!("{dtype:?} k{k} s{s} p{p} d{d} n{n} {h}x{h}");
                    let got = run(conv2d, &x, &w, cfg);
                    for dev in crate::device::test_devices() {
                        let (x, w) = (x.to_device(&dev).unwrap(), w.to_device(&dev).unwrap());
                        let want = run(conv2d_reference, &x, &w, cfg);
                        let what = format!("{what} on {}", crate::device::name(&dev));
                        assert_close(&got.0, &want.0, tol, &format!("forward {what}"));
                        assert_close(&got.1[0], &want.1[0], tol, &format!("input grad {what}"));
                        assert_close(&got.1[1], &want.1[1], tol, &format!("filter grad {what}"));
                    }
                }
            }
        }
    }

    #[test]
    fn conv_accepts_non_contiguous_input() {
        let x = uniform(&[2, 3, 9, 9], DType::F32, 3);
        let w = uniform(&[4, 3, 3, 3], DType::F32, 4);
        let conv = |c: ConvFn| {
            forward_grads(
                &|t: &[Tensor]| c(&t[0].t()?, &t[1].t()?, 2, 1, 1),
                &[x.clone(), w.clone()],
                5,
            )
        };
        let (got, want) = (conv(conv2d), conv(conv2d_reference));
        assert_close(&got.0, &want.0, 1e-5, "forward");
        assert_close(&got.1[0], &want.1[0], 1e-5, "input gradient");
        assert_close(&got.1[1], &want.1[1], 1e-5, "filter gradient");
    }

    /// Non-square inputs, and windows that read only padding.
    #[test]
    fn conv_finite_differences() {
        for (k, s, p, d) in [
            (1, 1, 0, 1),
            (1, 2, 0, 1),
            (3, 1, 1, 1),
            (3, 2, 1, 1),
            (5, 1, 4, 2),
            (3, 3, 3, 1),
        ] {
            let x = uniform(&[2, 2, 5, 6], DType::F64, 1);
            let w = uniform(&[3, 2, k, k], DType::F64, 2);
            let f: Kernel = &|t: &[Tensor]| conv2d(&t[0], &t[1], s, p, d);
            finite_difference_check(f, &[x, w], 1e-6, &format!("k{k} s{s} p{p} d{d}"));
        }
    }

    /// Ones through ones, 3×3, padding 1, one channel in and two out: each output counts
    /// the inputs in its window (4 / 6 / 9), and by symmetry so does the filter gradient;
    /// the input gradient of the sum counts twice (two output channels).
    #[test]
    fn conv_by_hand() {
        let x = Tensor::ones((1, 1, 3, 3), DType::F64, &Device::Cpu).unwrap();
        let w = Tensor::ones((2, 1, 3, 3), DType::F64, &Device::Cpu).unwrap();
        let (xv, wv) = (Var::from_tensor(&x).unwrap(), Var::from_tensor(&w).unwrap());
        let y = conv2d(xv.as_tensor(), wv.as_tensor(), 1, 1, 1).unwrap();
        let counts = vec![4., 6., 4., 6., 9., 6., 4., 6., 4.];
        assert_eq!(values(&y), [counts.clone(), counts.clone()].concat());
        let grads = y.sum_all().unwrap().backward().unwrap();
        let twice: Vec<f64> = counts.iter().map(|c| 2.0 * c).collect();
        assert_eq!(values(grads.get(xv.as_tensor()).unwrap()), twice);
        assert_eq!(
            values(grads.get(wv.as_tensor()).unwrap()),
            [counts.clone(), counts].concat()
        );
    }

    /// A constant input (a stem's image) gets no gradient; the filters still do.
    #[test]
    fn gradient_only_for_tracked_arguments() {
        let x = uniform(&[2, 3, 6, 6], DType::F32, 1);
        let w = Var::from_tensor(&uniform(&[4, 3, 3, 3], DType::F32, 2)).unwrap();
        let y = conv2d(&x, w.as_tensor(), 1, 1, 1).unwrap();
        let grads = y.sum_all().unwrap().backward().unwrap();
        assert!(grads.get(&x).is_none());
        let y = conv2d_reference(&x, w.as_tensor(), 1, 1, 1).unwrap();
        let want = y.sum_all().unwrap().backward().unwrap();
        assert_close(
            grads.get(w.as_tensor()).unwrap(),
            want.get(w.as_tensor()).unwrap(),
            1e-5,
            "filter gradient",
        );
    }

    /// Zero output channels, and a batch of none.
    #[test]
    fn empty_dimensions() {
        let dev = Device::Cpu;
        let w0 = Tensor::zeros((0, 2, 3, 3), DType::F32, &dev).unwrap();
        let y = conv2d(&uniform(&[2, 2, 5, 5], DType::F32, 1), &w0, 1, 1, 1).unwrap();
        assert_eq!(y.dims(), [2, 0, 5, 5]);
        let x0 = Tensor::zeros((0, 2, 5, 5), DType::F32, &dev).unwrap();
        let w = Var::from_tensor(&uniform(&[3, 2, 3, 3], DType::F32, 2)).unwrap();
        let y = conv2d(&x0, w.as_tensor(), 2, 1, 1).unwrap();
        assert_eq!(y.dims(), [0, 3, 3, 3]);
        let grads = y.sum_all().unwrap().backward().unwrap();
        assert_eq!(values(grads.get(w.as_tensor()).unwrap()), vec![0.0; 54]);
    }

    #[test]
    fn conv_arguments_are_checked() {
        let dev = Device::Cpu;
        let x = uniform(&[1, 2, 5, 5], DType::F32, 0);
        let w = uniform(&[4, 2, 3, 3], DType::F32, 0);
        for conv in [conv2d as ConvFn, conv2d_reference] {
            let err =
                |x: &Tensor, w: &Tensor, s, p, d| conv(x, w, s, p, d).unwrap_err().to_string();
            assert!(err(&x.flatten(0, 1).unwrap(), &w, 1, 1, 1).contains("4-D"));
            assert!(err(&x, &w.flatten(0, 1).unwrap(), 1, 1, 1).contains("4-D filters"));
            let w23 = Tensor::zeros((4, 2, 2, 3), DType::F32, &dev).unwrap();
            assert!(err(&x, &w23, 1, 1, 1).contains("square"));
            let w3 = Tensor::zeros((4, 3, 3, 3), DType::F32, &dev).unwrap();
            assert!(err(&x, &w3, 1, 1, 1).contains("channels"));
            assert!(err(&x, &w.to_dtype(DType::F64).unwrap(), 1, 1, 1).contains("dtype"));
            let ints = Tensor::zeros((1, 2, 5, 5), DType::U32, &dev).unwrap();
            let wints = Tensor::zeros((4, 2, 3, 3), DType::U32, &dev).unwrap();
            assert!(err(&ints, &wints, 1, 1, 1).contains("float"));
            assert!(err(&x, &w, 0, 1, 1).contains("stride"));
            assert!(err(&x, &w, 1, 1, 0).contains("dilation"));
            assert!(err(&x, &w, 1, 0, 3).contains("larger"));
        }
    }

    /// F16 on the CPU takes Candle's convolution.
    #[test]
    fn half_precision_takes_the_composition() {
        let x = uniform(&[1, 2, 6, 6], DType::F32, 8);
        let w = uniform(&[3, 2, 3, 3], DType::F32, 9);
        let half = conv2d(
            &x.to_dtype(DType::F16).unwrap(),
            &w.to_dtype(DType::F16).unwrap(),
            1,
            1,
            1,
        )
        .unwrap();
        assert_eq!(half.dtype(), DType::F16);
        let want = conv2d_reference(&x, &w, 1, 1, 1).unwrap();
        assert_close(&half, &want, 2e-2, "f16");
    }
}
