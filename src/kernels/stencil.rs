//! The stride-1 depthwise stencil of one plane: the inner loops of the depthwise
//! convolution's forward, input gradient and filter gradient when the stride is 1.
//!
//! A plane is copied once into a zero-padded buffer `xp` of `hp × wp` values (`hp = h + 2p`,
//! `wp = w + 2p`). Output `(r, c)` of the correlation is then
//! `Σₜ f[t] · xp[q + offₜ]` with `q = r·wp + c` and `offₜ = i·d·wp + j·d` for tap `t = i·k + j`.
//! Computed at every `q` from 0 on, in whole blocks of [`LANES`] (the `wp − wo` columns past
//! each output row and the block's overrun are computed and dropped), each tap is one
//! contiguous run of loads: the loops have no branches and vectorise. They are compiled for
//! AVX-512, AVX2 and the baseline, and the best the CPU has is chosen at run time
//! (`multiversion`).
//!
//! The input gradient of a stride-1 convolution is the same stencil on the gradient with the
//! filter reversed and padding `d·(k − 1) − p`; the filter gradient is, per tap, the dot
//! product of the gradient spread over the `wp`-wide rows with the tap's run of `xp`, a few
//! taps per pass.

use super::Real;
use multiversion::multiversion;

/// Values per block: four AVX-512 registers of f32, whose independent sums hide the add
/// latency.
const LANES: usize = 64;

/// The geometry of one plane's stride-1 stencil, checked once by [`Stencil::new`].
#[derive(Debug, Clone)]
pub(super) struct Stencil {
    h: usize,
    w: usize,
    pad: usize,
    wp: usize,
    ho: usize,
    wo: usize,
    /// `offₜ` per tap, in the filter's row-major order.
    offsets: Vec<usize>,
    /// Output positions computed, whole blocks: `⌈((ho − 1)·wp + wo) / LANES⌉ · LANES`.
    len: usize,
    /// Length of `xp`: `hp·wp` plus the largest tap's overrun of the last block.
    padded: usize,
}

impl Stencil {
    /// A `kernel × kernel` stencil (dilation `dilation`) at stride 1 over an `h × w` plane
    /// padded by `pad`; `None` when the window does not fit the padded plane.
    pub(super) fn new(
        h: usize,
        w: usize,
        kernel: usize,
        dilation: usize,
        pad: usize,
    ) -> Option<Stencil> {
        let span = dilation.checked_mul(kernel.checked_sub(1)?)?;
        let (hp, wp) = (h.checked_add(2 * pad)?, w.checked_add(2 * pad)?);
        if kernel == 0 || hp <= span || wp <= span {
            return None;
        }
        let (ho, wo) = (hp - span, wp - span);
        let offsets: Vec<usize> = (0..kernel * kernel)
            .map(|t| (t / kernel) * dilation * wp + (t % kernel) * dilation)
            .collect();
        let len = ((ho - 1) * wp + wo).div_ceil(LANES) * LANES;
        // The last tap's run of the last block ends here, at or past `hp·wp`.
        let padded = len + offsets.last().copied().unwrap_or(0);
        Some(Stencil {
            h,
            w,
            pad,
            wp,
            ho,
            wo,
            offsets,
            len,
            padded,
        })
    }

    /// The scratch one plane needs: the padded input and the wide output.
    pub(super) fn scratch<T: Real>(&self) -> (Vec<T>, Vec<T>) {
        (vec![T::zero(); self.padded], vec![T::zero(); self.len])
    }

    /// Copies the `h × w` plane `x` into the interior of `xp`, zeroing the border.
    pub(super) fn pad<T: Real>(&self, x: &[T], xp: &mut [T]) {
        xp.fill(T::zero());
        for (r, row) in x.chunks_exact(self.w).take(self.h).enumerate() {
            xp[(r + self.pad) * self.wp + self.pad..][..self.w].copy_from_slice(row);
        }
    }

    /// `wide[q] = Σₜ f[t] · xp[q + offₜ]` for every computed `q`.
    pub(super) fn correlate<T: Real>(&self, xp: &[T], f: &[T], wide: &mut [T]) {
        correlate(&xp[..self.padded], f, &self.offsets, &mut wide[..self.len]);
    }

    /// The `ho × wo` output rows of `wide` into `out`.
    pub(super) fn crop<T: Real>(&self, wide: &[T], out: &mut [T]) {
        for (r, row) in out.chunks_exact_mut(self.wo).take(self.ho).enumerate() {
            row.copy_from_slice(&wide[r * self.wp..][..self.wo]);
        }
    }

    /// Spreads the `ho × wo` plane `g` over `wp`-wide rows in `wide`, zeros elsewhere.
    pub(super) fn spread<T: Real>(&self, g: &[T], wide: &mut [T]) {
        wide.fill(T::zero());
        for (r, row) in g.chunks_exact(self.wo).take(self.ho).enumerate() {
            wide[r * self.wp..][..self.wo].copy_from_slice(row);
        }
    }

    /// `gw[t] += Σ_q wide[q] · xp[q + offₜ]`: the filter gradient of one plane, given its
    /// gradient spread by [`Stencil::spread`] and its padded input.
    pub(super) fn filter_grad<T: Real>(&self, wide: &[T], xp: &[T], gw: &mut [T]) {
        filter_dots(&wide[..self.len], &xp[..self.padded], &self.offsets, gw);
    }
}

#[multiversion(targets = "simd")]
fn correlate<T: Real>(xp: &[T], f: &[T], offsets: &[usize], wide: &mut [T]) {
    for (b, out) in wide.chunks_exact_mut(LANES).enumerate() {
        let q = b * LANES;
        let mut acc = [T::zero(); LANES];
        for (&fv, &off) in f.iter().zip(offsets) {
            let xs = &xp[q + off..q + off + LANES];
            for (a, &v) in acc.iter_mut().zip(xs) {
                *a += fv * v;
            }
        }
        out.copy_from_slice(&acc);
    }
}

/// `gw[t] += Σ_q wide[q] · xp[q + offsets[t]]`, [`GROUP`] taps per pass over `wide`
/// (`wide.len()` a multiple of [`CHUNK`]): each chunk of `wide` is loaded once per group, and
/// each tap keeps one register of sums.
#[multiversion(targets = "simd")]
fn filter_dots<T: Real>(wide: &[T], xp: &[T], offsets: &[usize], gw: &mut [T]) {
    for (gs, offs) in gw.chunks_mut(GROUP).zip(offsets.chunks(GROUP)) {
        // A short last group repeats its last tap; the repeats' sums are dropped.
        let group: [usize; GROUP] = std::array::from_fn(|i| offs[i.min(offs.len() - 1)]);
        for (g, s) in gs.iter_mut().zip(group_dots(wide, xp, group)) {
            *g += s;
        }
    }
}

/// Taps per pass of [`filter_dots`]: a 5×5 filter's row, and a 3×3 filter in two passes.
const GROUP: usize = 5;

/// Values per sum register: one AVX-512 register of f32.
const CHUNK: usize = 16;

#[inline(always)]
fn group_dots<T: Real>(wide: &[T], xp: &[T], offs: [usize; GROUP]) -> [T; GROUP] {
    let mut acc = [[T::zero(); CHUNK]; GROUP];
    for (c, ws) in wide.chunks_exact(CHUNK).enumerate() {
        let q = c * CHUNK;
        for (a, &off) in acc.iter_mut().zip(&offs) {
            let xs = &xp[q + off..][..CHUNK];
            for ((s, &u), &v) in a.iter_mut().zip(ws).zip(xs) {
                *s += u * v;
            }
        }
    }
    acc.map(super::pairwise_sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stencil by its definition, padding read as zeros.
    fn direct(x: &[f64], h: usize, w: usize, f: &[f64], k: usize, d: usize, p: usize) -> Vec<f64> {
        let (ho, wo) = (h + 2 * p - d * (k - 1), w + 2 * p - d * (k - 1));
        let mut out = vec![0.0; ho * wo];
        for r in 0..ho {
            for c in 0..wo {
                for (t, &fv) in f.iter().enumerate() {
                    let (ih, iw) = (r + (t / k) * d, c + (t % k) * d);
                    if ih >= p && iw >= p && ih - p < h && iw - p < w {
                        out[r * wo + c] += fv * x[(ih - p) * w + iw - p];
                    }
                }
            }
        }
        out
    }

    #[test]
    fn stencil_matches_its_definition() {
        for (h, w, k, d, p) in [
            (8, 8, 3, 1, 1),
            (5, 7, 3, 2, 2),
            (32, 32, 5, 1, 2),
            (3, 3, 3, 1, 0),
            (1, 9, 1, 1, 0),
            (4, 4, 5, 2, 4),
        ] {
            let s = Stencil::new(h, w, k, d, p).unwrap();
            let x: Vec<f64> = (0..h * w)
                .map(|i| ((i * 7919) % 23) as f64 - 11.0)
                .collect();
            let f: Vec<f64> = (0..k * k).map(|i| i as f64 * 0.5 - 2.0).collect();
            let (mut xp, mut wide) = s.scratch::<f64>();
            // Whatever a buffer held before (another plane), `pad` overwrites all of it.
            xp.fill(f64::NAN);
            s.pad(&x, &mut xp);
            s.correlate(&xp, &f, &mut wide);
            let mut out = vec![0.0; s.ho * s.wo];
            s.crop(&wide, &mut out);
            assert_eq!(out, direct(&x, h, w, &f, k, d, p), "{h}x{w} k{k} d{d} p{p}");
        }
    }

    #[test]
    fn a_window_larger_than_the_padded_plane_has_no_stencil() {
        assert!(Stencil::new(2, 2, 3, 1, 0).is_none());
        assert!(Stencil::new(4, 4, 3, 2, 0).is_none());
        assert!(Stencil::new(4, 4, 0, 1, 0).is_none());
        assert!(Stencil::new(4, 4, 3, 2, 1).is_some());
    }

    #[test]
    fn filter_gradient_is_the_tap_dot_product() {
        // Tap counts below, at and past the group size, and not multiples of it.
        for (h, w, k, d, p) in [
            (6, 5, 3, 1, 1),
            (9, 7, 5, 2, 4),
            (4, 4, 2, 1, 0),
            (12, 10, 7, 1, 3),
        ] {
            let s = Stencil::new(h, w, k, d, p).unwrap();
            let x: Vec<f64> = (0..h * w).map(|i| (i % 5) as f64 - 2.0).collect();
            let g: Vec<f64> = (0..s.ho * s.wo).map(|i| (i % 3) as f64 + 0.5).collect();
            let (mut xp, mut wide) = s.scratch::<f64>();
            xp.fill(f64::NAN);
            wide.fill(f64::NAN);
            s.pad(&x, &mut xp);
            s.spread(&g, &mut wide);
            let mut gw = vec![1.0; k * k];
            s.filter_grad(&wide, &xp, &mut gw);
            for (t, &got) in gw.iter().enumerate() {
                let mut unit = vec![0.0; k * k];
                unit[t] = 1.0;
                let y = direct(&x, h, w, &unit, k, d, p);
                let want: f64 = 1.0 + y.iter().zip(&g).map(|(a, b)| a * b).sum::<f64>();
                assert!(
                    (got - want).abs() < 1e-9,
                    "k{k} d{d} tap {t}: {got} vs {want}"
                );
            }
        }
    }
}
