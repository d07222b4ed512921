//! Fast CPU kernels for the ops of DARTS-style networks: max and average pooling with
//! padding, depthwise (optionally dilated) and standard convolution, ReLU, and batch norm in
//! training mode.
//!
//! Candle's CPU path splits a grouped convolution into one convolution per channel and has
//! neither a padding argument nor a backward (when kernel ≠ stride) for its pools; its
//! standard convolution always computes the input gradient, by a direct transposed
//! convolution, and the filter gradient by a convolution of the batch. Each op here is
//! therefore a Candle custom op with its own CPU forward and backward, parallel over the
//! (n, c) planes (over the samples for the standard convolution).
//!
//! On other devices (CUDA), and for dtypes other than f32 / f64, the same function runs a
//! composition of stock Candle ops chosen to be a few large kernel launches whatever the
//! size: the pools gather all `kernel²` windows with two `index_select`s and reduce them, the
//! depthwise convolution is one dense convolution with block-diagonal filters (a matrix
//! product), the rest are Candle's convolution, `relu` and element-wise arithmetic. The
//! tests compare the CPU kernels with these compositions on every device in
//! [`crate::device::test_devices`]; [`with_compositions`] makes the CPU take them too.
//!
//! This file owns what the kernels share: the validated window geometry ([`Geometry`]), the
//! per-axis tap ranges that keep the inner loops branch-free, and access to CPU storage.
//! `pool.rs` owns the pools, `depthwise.rs` the depthwise convolution (`stencil.rs` its
//! vectorised stride-1 loops), `conv.rs` the
//! standard convolution (im2col and matrix products; `row_dots.rs` its filter gradient's
//! products on AVX-512), `relu.rs` the ReLU and
//! `batch_norm.rs` the training-mode batch norm (alone or with the ReLU after it),
//! `scaled_sum.rs` a cell node's sum under drop path and `weighted_sum.rs` the mixed edge's
//! `Σ pₖ · xₖ` (the element-wise ops: there Candle's CPU backend spends one pass and one
//! allocation per elementary op, forward and backward, and keeps every intermediate alive),
//! `lerp.rs` the weight average's in-place update.
//!
//! Semantics are PyTorch's: `nn.MaxPool2d(k, s, p)`, `nn.AvgPool2d(k, s, p,
//! count_include_pad = False)`, `nn.Conv2d(C, C, k, s, p, dilation, groups = C, bias =
//! False)` and `nn.Conv2d(C_in, C_out, k, s, p, dilation, bias = False)`, with the output size `floor((H + 2·p − d·(k − 1) − 1) / s) + 1` along each axis.
//! Gradients are first order only (the backward passes are not themselves differentiable).

mod batch_norm;
mod conv;
mod depthwise;
mod lerp;
mod pool;
pub mod probe;
mod relu;
mod row_dots;
mod scaled_sum;
mod stencil;
mod weighted_sum;

pub use batch_norm::{
    batch_norm_add_train, batch_norm_eval, batch_norm_eval_reference, batch_norm_relu_eval,
    batch_norm_relu_train, batch_norm_train, batch_norm_train_reference,
};
pub use conv::{conv2d, conv2d_reference};
pub use depthwise::{depthwise_conv2d, depthwise_conv2d_dense, depthwise_conv2d_reference};
pub use lerp::lerp_into;
pub use pool::{avg_pool2d, avg_pool2d_reference, max_pool2d, max_pool2d_reference};
pub use relu::relu;
pub use scaled_sum::{SampleScales, Term, scaled_sum, scaled_sum_reference};
pub use weighted_sum::{weighted_sum, weighted_sum_reference};

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Layout, Result, Tensor, WithDType, bail};
use rayon::prelude::*;
use std::mem::MaybeUninit;
use std::ops::Range;

/// The element types the CPU loops run on (f32 and f64).
trait Real: WithDType + num_traits::Float {}
impl<T: WithDType + num_traits::Float> Real for T {}

/// A kernel's output of `len` values, written by `fill` into a buffer that is not zeroed
/// first (zeroing every output before a kernel overwrote it was about 9 % of a retraining
/// step, in `memset`).
///
/// # Safety
/// Unless it returns an error, `fill` writes every element of the slice it is given.
unsafe fn written<T: Real>(
    len: usize,
    fill: impl FnOnce(&mut [MaybeUninit<T>]) -> Result<()>,
) -> Result<Vec<T>> {
    let mut v = Vec::with_capacity(len);
    fill(&mut v.spare_capacity_mut()[..len])?;
    // SAFETY: by the caller's contract, `fill` initialised all `len` values.
    unsafe { v.set_len(len) };
    Ok(v)
}

/// `len` zeros, written in parallel: outputs that a kernel adds into. A serial
/// `vec![0; len]` (a `memset` on the calling thread while the other threads wait) was 3.5 %
/// of the default job's retraining.
fn par_zeros<T: Real>(len: usize) -> Result<Vec<T>> {
    const CHUNK: usize = 1 << 14;
    if len < 4 * CHUNK {
        return Ok(vec![T::zero(); len]);
    }
    // SAFETY: the chunks cover the buffer, and each is zeroed.
    unsafe {
        written(len, |buf| {
            buf.par_chunks_mut(CHUNK).for_each(|c| {
                zeroed(c);
            });
            Ok(())
        })
    }
}

/// `buf` set to zeros, as initialised values.
fn zeroed<T: Real>(buf: &mut [MaybeUninit<T>]) -> &mut [T] {
    buf.fill(MaybeUninit::new(T::zero()));
    // SAFETY: every element was just written, and `MaybeUninit<T>` has `T`'s layout.
    unsafe { &mut *(buf as *mut [MaybeUninit<T>] as *mut [T]) }
}

/// The sum of `acc` added in halves (`acc[i] += acc[i + n/2]` until one is left): vector adds
/// and a few shuffles rather than a chain of `N` dependent scalar adds.
#[inline(always)]
fn pairwise_sum<T: Real, const N: usize>(mut acc: [T; N]) -> T {
    const { assert!(N.is_power_of_two()) };
    let mut n = N;
    while n > 1 {
        n /= 2;
        let (lo, hi) = acc.split_at_mut(n);
        for (a, &b) in lo.iter_mut().zip(&hi[..n]) {
            *a += b;
        }
    }
    acc[0]
}

/// The window geometry of one call, checked once: an NCHW input, a square `kernel`, and the
/// output size it gives. Every later index computation relies on these checks (nonzero
/// sizes, a window that fits in the padded input, no overflow).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Geometry {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    dilation: usize,
    ho: usize,
    wo: usize,
}

impl Geometry {
    /// Checks the arguments of `op` on an input of shape `dims`.
    fn new(
        op: &str,
        dims: &[usize],
        kernel: usize,
        stride: usize,
        padding: usize,
        dilation: usize,
    ) -> Result<Self> {
        let &[n, c, h, w] = dims else {
            bail!("{op}: expected a 4-D input [N, C, H, W], got shape {dims:?}")
        };
        if kernel == 0 {
            bail!("{op}: kernel must be ≥ 1, got 0")
        }
        if stride == 0 {
            bail!("{op}: stride must be ≥ 1, got 0")
        }
        if dilation == 0 {
            bail!("{op}: dilation must be ≥ 1, got 0")
        }
        if h == 0 || w == 0 {
            bail!("{op}: the input's spatial size must be nonzero, got {h}x{w}")
        }
        let overflow = || candle_core::Error::Msg(format!("{op}: window sizes overflow"));
        let reach = (kernel - 1)
            .checked_mul(dilation)
            .and_then(|r| r.checked_add(1))
            .ok_or_else(overflow)?;
        let pad2 = padding.checked_mul(2).ok_or_else(overflow)?;
        let ph = h.checked_add(pad2).ok_or_else(overflow)?;
        let pw = w.checked_add(pad2).ok_or_else(overflow)?;
        if ph < reach || pw < reach {
            bail!(
                "{op}: the {kernel}x{kernel} window (dilation {dilation}) is larger than the \
                 padded input ({h}x{w} with padding {padding})"
            )
        }
        Ok(Geometry {
            n,
            c,
            h,
            w,
            kernel,
            stride,
            padding,
            dilation,
            ho: (ph - reach) / stride + 1,
            wo: (pw - reach) / stride + 1,
        })
    }

    /// Like [`Geometry::new`] for a pool (dilation 1), which also needs `padding ≤ kernel / 2`
    /// so that every window holds at least one input element (PyTorch's rule), and planes of
    /// fewer than 2³² elements (the max-pool backward keeps positions as u32).
    fn pool(
        op: &str,
        dims: &[usize],
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Result<Self> {
        let g = Geometry::new(op, dims, kernel, stride, padding, 1)?;
        if padding > kernel / 2 {
            bail!("{op}: padding must be at most half the kernel ({kernel} / 2), got {padding}")
        }
        if u32::try_from(g.h.max(g.w)).is_err() {
            bail!(
                "{op}: spatial size {}x{} too large (at most 2³² − 1)",
                g.h,
                g.w
            )
        }
        Ok(g)
    }

    fn in_dims(&self) -> (usize, usize, usize, usize) {
        (self.n, self.c, self.h, self.w)
    }

    fn out_dims(&self) -> (usize, usize, usize, usize) {
        (self.n, self.c, self.ho, self.wo)
    }

    fn in_plane(&self) -> usize {
        self.h * self.w
    }

    fn out_plane(&self) -> usize {
        self.ho * self.wo
    }

    /// Along an axis with `out_len` outputs over `in_len` inputs: the outputs `o` whose tap
    /// `t` lands inside the input, and the input index of the first of them (0 when there
    /// are none). Output `o` reads input `o·stride + t·dilation − padding`; consecutive
    /// outputs in the range read inputs `stride` apart.
    fn taps(&self, out_len: usize, in_len: usize, t: usize) -> (Range<usize>, usize) {
        let (s, p) = (self.stride, self.padding);
        let a = t * self.dilation;
        let lo = if a >= p { 0 } else { (p - a).div_ceil(s) };
        let hi = if in_len + p > a {
            out_len.min((in_len + p - a).div_ceil(s))
        } else {
            0
        };
        if lo >= hi {
            return (0..0, 0);
        }
        (lo..hi, lo * s + a - p)
    }

    /// The column taps ([`Tap`]) of the kernel, computed once per call so that the row loops
    /// do no divisions.
    fn col_taps(&self) -> Vec<Tap> {
        let phases = Phases::new(self.w, self.stride);
        (0..self.kernel)
            .map(|t| {
                let (outs, first) = self.taps(self.wo, self.w, t);
                Tap {
                    start: if outs.is_empty() { 0 } else { phases.at(first) },
                    outs,
                    first,
                }
            })
            .collect()
    }

    /// How input rows are split into phases for this stride.
    fn phases(&self) -> Phases {
        Phases::new(self.w, self.stride)
    }

    /// The input row read by output row `oh` at tap `t`, if it is not padding.
    fn in_row(&self, oh: usize, t: usize) -> Option<usize> {
        (oh * self.stride + t * self.dilation)
            .checked_sub(self.padding)
            .filter(|&i| i < self.h)
    }

    /// The inputs `[start, end)` covered by the window of output `o` along an axis of
    /// `in_len` inputs, padding excluded (dilation 1).
    fn window(&self, o: usize, in_len: usize) -> Range<usize> {
        let start = o * self.stride;
        let end = start + self.kernel;
        start.max(self.padding) - self.padding..end.min(in_len + self.padding) - self.padding
    }
}

/// Errors unless `dtype` is a float type.
fn check_float(op: &str, dtype: DType) -> Result<()> {
    if !dtype.is_float() {
        bail!("{op}: expected a float tensor, got {dtype:?}")
    }
    Ok(())
}

/// Runs `f32_run` or `f64_run` according to the element type of the two storages, which
/// must match.
pub(super) fn dispatch2<R>(
    name: &str,
    s1: &CpuStorage,
    s2: &CpuStorage,
    f32_run: impl FnOnce() -> Result<R>,
    f64_run: impl FnOnce() -> Result<R>,
) -> Result<R> {
    match (s1, s2) {
        (CpuStorage::F32(_), CpuStorage::F32(_)) => f32_run(),
        (CpuStorage::F64(_), CpuStorage::F64(_)) => f64_run(),
        _ => bail!(
            "{name}: expected two f32 or two f64 tensors, got {:?} and {:?}",
            s1.dtype(),
            s2.dtype()
        ),
    }
}

/// Errors unless the operands `a` and `b` of `op` (named for the message) have one shape.
fn same_shape(op: &str, a: (&str, &Layout), b: (&str, &Layout)) -> Result<()> {
    if a.1.shape() != b.1.shape() {
        bail!(
            "{op}: {} {:?} and {} {:?} differ in shape",
            a.0,
            a.1.dims(),
            b.0,
            b.1.dims()
        )
    }
    Ok(())
}

/// Errors unless `t` (the argument called `name`) has the input `x`'s dtype and device.
fn check_like(op: &str, name: &str, t: &Tensor, x: &Tensor) -> Result<()> {
    if t.dtype() != x.dtype() {
        bail!(
            "{op}: {name} has dtype {:?}, the input {:?}",
            t.dtype(),
            x.dtype()
        )
    }
    if !t.device().same_device(x.device()) {
        bail!("{op}: {name} is on another device than the input")
    }
    Ok(())
}

/// The custom CPU kernels run on f32 and f64 CPU tensors (unless [`with_compositions`] is
/// running); everything else takes the composition of Candle ops.
fn use_cpu_kernel(x: &Tensor) -> bool {
    x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64) && !composing()
}

thread_local! {
    static COMPOSED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this thread is inside [`with_compositions`].
pub fn composing() -> bool {
    COMPOSED.with(|c| c.get())
}

/// Runs `f` with every op on this thread taking the composition of Candle ops that runs off
/// the CPU (on CUDA), even on CPU tensors: what the CPU-only tests and `nas-pipe
/// device-check` compare the CPU kernels with.
pub fn with_compositions<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            COMPOSED.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(COMPOSED.with(|c| c.replace(true)));
    f()
}

/// The elements of a contiguous CPU tensor of shape `dims`, as `T`.
fn cpu_slice<'a, T: Real>(
    op: &str,
    storage: &'a CpuStorage,
    layout: &Layout,
    dims: (usize, usize, usize, usize),
) -> Result<&'a [T]> {
    let (a, b, c, d) = dims;
    if layout.dims() != [a, b, c, d] {
        bail!(
            "{op}: expected shape {:?}, got {:?}",
            [a, b, c, d],
            layout.dims()
        )
    }
    let Some((start, end)) = layout.contiguous_offsets() else {
        bail!("{op}: expected a contiguous tensor")
    };
    Ok(&T::cpu_storage_as_slice(storage)?[start..end])
}

/// The `len` elements of a contiguous CPU tensor (any shape), as `T`.
fn cpu_flat<'a, T: Real>(
    op: &str,
    storage: &'a CpuStorage,
    layout: &Layout,
    len: usize,
) -> Result<&'a [T]> {
    if layout.shape().elem_count() != len {
        bail!(
            "{op}: expected {len} elements, got shape {:?}",
            layout.dims()
        )
    }
    let Some((start, end)) = layout.contiguous_offsets() else {
        bail!("{op}: expected a contiguous tensor")
    };
    Ok(&T::cpu_storage_as_slice(storage)?[start..end])
}

/// One column tap of the kernel: output columns `outs` read input columns `first`,
/// `first + stride`, ..., which lie contiguously from `start` in the row split into phases.
#[derive(Debug, Clone)]
struct Tap {
    outs: Range<usize>,
    first: usize,
    start: usize,
}

/// Rows of `len` elements split into their `stride` phases, laid end to end: phase `r`
/// holds elements `r, r + s, r + 2s, ...`. A strided run of a row is a contiguous run of the
/// split row, so that the inner loops stay element-wise over slices (and vectorise) at
/// stride 2. At stride 1 the split is the identity and no copy is made.
#[derive(Debug, Clone)]
struct Phases {
    len: usize,
    stride: usize,
    offsets: Vec<usize>,
}

impl Phases {
    fn new(len: usize, stride: usize) -> Self {
        let mut offsets = Vec::with_capacity(stride.min(len));
        let mut at = 0;
        for r in 0..stride.min(len) {
            offsets.push(at);
            at += (len - r).div_ceil(stride);
        }
        Phases {
            len,
            stride,
            offsets,
        }
    }

    /// Where element `i < len` of a row lies in the split row.
    fn at(&self, i: usize) -> usize {
        self.offsets[i % self.stride] + i / self.stride
    }

    /// The rows of `plane`, split; `scratch` holds them unless the stride is 1.
    fn split<'a, T: Copy>(&self, plane: &'a [T], scratch: &'a mut [T]) -> &'a [T] {
        if self.stride == 1 {
            return plane;
        }
        if self.stride == 2 && self.len >= 2 {
            self.split_pairs(plane, scratch);
            return scratch;
        }
        for (src, dst) in plane
            .chunks_exact(self.len)
            .zip(scratch.chunks_exact_mut(self.len))
        {
            for (r, &off) in self.offsets.iter().enumerate() {
                let phase = src[r..].iter().step_by(self.stride);
                for (d, &v) in dst[off..].iter_mut().zip(phase) {
                    *d = v;
                }
            }
        }
        scratch
    }

    /// [`Phases::split`] at stride 2 (rows of two or more): each row's pairs de-interleaved
    /// in one pass, the even elements first.
    fn split_pairs<T: Copy>(&self, plane: &[T], scratch: &mut [T]) {
        let evens = self.offsets[1];
        for (src, dst) in plane
            .chunks_exact(self.len)
            .zip(scratch.chunks_exact_mut(self.len))
        {
            let (even, odd) = dst.split_at_mut(evens);
            for ((pair, e), o) in src.chunks_exact(2).zip(even.iter_mut()).zip(odd) {
                *e = pair[0];
                *o = pair[1];
            }
            if self.len % 2 == 1 {
                even[evens - 1] = src[self.len - 1];
            }
        }
    }

    /// The inverse of [`Phases::split`]: writes the split rows `split` back into `plane`.
    fn unsplit<T: Copy>(&self, split: &[T], plane: &mut [T]) {
        for (src, dst) in split
            .chunks_exact(self.len)
            .zip(plane.chunks_exact_mut(self.len))
        {
            for (r, &off) in self.offsets.iter().enumerate() {
                let phase = dst[r..].iter_mut().step_by(self.stride);
                for (d, &v) in phase.zip(&src[off..]) {
                    *d = v;
                }
            }
        }
    }
}

/// `f(&mut acc[i], src[i])` for every `i < acc.len()`: an element-wise loop over two
/// slices, which the compiler vectorises.
#[inline(always)]
fn zip_with<T: Copy>(acc: &mut [T], src: &[T], mut f: impl FnMut(&mut T, T)) {
    let src = &src[..acc.len()];
    for (a, &v) in acc.iter_mut().zip(src) {
        f(a, v);
    }
}

/// Helpers shared by the kernel tests: seeded inputs, comparisons, autograd and
/// finite-difference gradients.
#[cfg(test)]
mod test_util {
    use candle_core::{DType, Device, Result, Tensor};

    /// A kernel (or its reference) applied to its inputs.
    pub type Kernel<'a> = &'a dyn Fn(&[Tensor]) -> Result<Tensor>;

    /// [`super::probe::uniform`], unwrapped.
    pub fn uniform(dims: &[usize], dtype: DType, seed: u64) -> Tensor {
        super::probe::uniform(dims, dtype, seed).unwrap()
    }

    /// [`super::probe::distinct`], unwrapped.
    pub fn distinct(dims: &[usize], dtype: DType, seed: u64) -> Tensor {
        super::probe::distinct(dims, dtype, seed).unwrap()
    }

    /// The elements of `t` in row-major order, as f64.
    pub fn values(t: &Tensor) -> Vec<f64> {
        t.flatten_all()
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    /// Equal shapes and `|got − want| ≤ tol · (1 + |want|)` element-wise.
    pub fn assert_close(got: &Tensor, want: &Tensor, tol: f64, what: &str) {
        assert_eq!(got.dims(), want.dims(), "{what}: shapes");
        for (i, (a, b)) in values(got).iter().zip(values(want)).enumerate() {
            assert!(
                (a - b).abs() <= tol * (1.0 + b.abs()),
                "{what}: element {i}: got {a}, want {b}"
            );
        }
    }

    /// [`super::probe::forward_grads`], unwrapped.
    pub fn forward_grads(f: Kernel, inputs: &[Tensor], seed: u64) -> (Tensor, Vec<Tensor>) {
        super::probe::forward_grads(f, inputs, seed).unwrap()
    }

    /// Compares the autograd gradients of `Σ f(inputs) ⊙ r` (f64 inputs) with central
    /// differences (ε = 1e−6) for every element of every input, to `tol` relative to
    /// `max(1, |gradient|)`.
    pub fn finite_difference_check(f: Kernel, inputs: &[Tensor], tol: f64, what: &str) {
        let seed = 99;
        let (out, grads) = forward_grads(f, inputs, seed);
        let r = uniform(out.dims(), DType::F64, seed);
        let loss = |ts: &[Tensor]| -> f64 {
            (f(ts).unwrap() * &r)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar()
                .unwrap()
        };
        let eps = 1e-6;
        for (a, grad) in grads.iter().enumerate() {
            let base = values(&inputs[a]);
            for (e, analytic) in values(grad).into_iter().enumerate() {
                let at = |delta: f64| {
                    let mut v = base.clone();
                    v[e] += delta;
                    let mut ts = inputs.to_vec();
                    ts[a] = Tensor::from_vec(v, inputs[a].dims(), &Device::Cpu).unwrap();
                    loss(&ts)
                };
                let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
                assert!(
                    (numeric - analytic).abs() <= tol * analytic.abs().max(1.0),
                    "{what}: input {a} element {e}: autograd {analytic}, finite difference {numeric}"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geom(h: usize, k: usize, s: usize, p: usize, d: usize) -> Geometry {
        Geometry::new("t", &[1, 1, h, h], k, s, p, d).unwrap()
    }

    /// `taps` agrees with the direct definition for every tap and output.
    #[test]
    fn taps_match_the_definition() {
        for h in 1..9 {
            for k in 1..6 {
                for s in 1..4 {
                    for d in 1..3 {
                        for p in 0..5 {
                            let Ok(g) = Geometry::new("t", &[1, 1, h, h], k, s, p, d) else {
                                continue;
                            };
                            for t in 0..k {
                                let (r, base) = g.taps(g.ho, g.h, t);
                                for o in 0..g.ho {
                                    let i = (o * s + t * d) as isize - p as isize;
                                    let inside = i >= 0 && i < h as isize;
                                    assert_eq!(r.contains(&o), inside, "h{h} k{k} s{s} d{d} p{p}");
                                    assert_eq!(g.in_row(o, t).is_some(), inside);
                                    if inside {
                                        let expect = base + (o - r.start) * s;
                                        assert_eq!(i as usize, expect);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn phases_split_and_unsplit() {
        for len in 1..8 {
            for stride in 1..5 {
                let ph = Phases::new(len, stride);
                let row: Vec<usize> = (0..2 * len).collect();
                let mut scratch = vec![0; 2 * len];
                let split = ph.split(&row, &mut scratch).to_vec();
                for r in 0..2 {
                    for i in 0..len {
                        assert_eq!(split[r * len + ph.at(i)], row[r * len + i]);
                    }
                    // A strided run is contiguous in the split row.
                    for first in 0..len {
                        let run: Vec<usize> = (first..len).step_by(stride).collect();
                        let at = ph.at(first);
                        assert_eq!(
                            split[r * len + at..][..run.len()],
                            run.iter().map(|i| i + r * len).collect::<Vec<_>>()[..]
                        );
                    }
                }
                let mut back = vec![0; 2 * len];
                ph.unsplit(&split, &mut back);
                assert_eq!(back, row);
            }
        }
    }

    #[test]
    fn output_sizes() {
        assert_eq!(geom(32, 3, 2, 1, 1).ho, 16);
        assert_eq!(geom(32, 3, 1, 2, 2).ho, 32);
        assert_eq!(geom(7, 5, 2, 2, 1).ho, 4);
        assert_eq!(geom(5, 5, 1, 0, 1).ho, 1);
    }

    #[test]
    fn bad_geometry_is_an_error() {
        let e = |dims: &[usize], k, s, p, d| {
            Geometry::new("op", dims, k, s, p, d)
                .unwrap_err()
                .to_string()
        };
        assert!(e(&[1, 1, 4], 3, 1, 1, 1).contains("4-D"));
        assert!(e(&[1, 1, 4, 4], 0, 1, 1, 1).contains("kernel"));
        assert!(e(&[1, 1, 4, 4], 3, 0, 1, 1).contains("stride"));
        assert!(e(&[1, 1, 4, 4], 3, 1, 1, 0).contains("dilation"));
        assert!(e(&[1, 1, 0, 4], 3, 1, 1, 1).contains("nonzero"));
        assert!(e(&[1, 1, 2, 4], 3, 1, 0, 1).contains("larger"));
        assert!(e(&[1, 1, 4, 4], 3, 1, 0, 2).contains("larger"));
        assert!(e(&[1, 1, 4, 4], 3, 1, usize::MAX / 2 + 1, 1).contains("overflow"));
        assert!(e(&[1, 1, 4, 4], usize::MAX, 1, 0, 2).contains("overflow"));
        let p = Geometry::pool("op", &[1, 1, 4, 4], 3, 1, 2).unwrap_err();
        assert!(p.to_string().contains("half"), "{p}");
    }
}
