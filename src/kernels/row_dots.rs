//! Products `a · bᵀ` of two row-major matrices that share their contiguous axis, summed over
//! several pairs: `out[i][j] = Σ_pairs Σ_q a[i][q] · b[j][q]`, in f32 on CPUs with AVX-512.
//!
//! A convolution's filter gradient is this sum over the samples (`dy[s] · col[s]ᵀ`, both
//! factors channel-major with the output plane contiguous). `gemm` wants its left factor
//! contiguous along the rows instead and repacks `dy[s]` for every sample, which cost more
//! than the products themselves (12.7 % of a DARTS_V2 retraining step against 6 % in its
//! kernels). Here the products are taken as they lie: tiles of 4×4 rows, each pair of rows
//! with one AVX-512 register of [`LANES`] partial sums that lives in a register across the
//! tile's pass and in memory across pairs ([`RowDots::add`]); the lanes are summed once at
//! the end ([`RowDots::finish`]). Lane `l` sums the `q ≡ l (mod LANES)` in order, a product
//! then a sum (no fused multiply-add), so [`RowDots::add_reference`], the same arithmetic
//! one lane at a time, gives the same bits. Without AVX-512 ([`RowDots::new`] is `None`) the
//! caller keeps to `gemm`.

use super::pairwise_sum;

/// Partial sums per output: one AVX-512 register of f32.
const LANES: usize = 16;

/// Rows of `a` and of `b` per tile: 16 registers of sums and 8 of loaded rows.
const TILE: usize = 4;

/// The running sums of `Σ a · bᵀ` over the pairs added so far, for an `m`×`n` result.
pub(super) struct RowDots {
    m: usize,
    n: usize,
    /// `LANES` partial sums per output `(i, j)`, at `i·n + j`.
    sums: Vec<[f32; LANES]>,
}

impl RowDots {
    /// Zero sums for an `m`×`n` result, or `None` when this CPU lacks AVX-512.
    pub(super) fn new(m: usize, n: usize) -> Option<Self> {
        avx512().then(|| RowDots {
            m,
            n,
            sums: vec![[0.0; LANES]; m * n],
        })
    }

    /// Adds `a · bᵀ`, `a` being `m`×`k` and `b` `n`×`k`, both row-major and contiguous.
    ///
    /// # Panics
    /// If `a` or `b` is shorter than its `m·k` or `n·k` elements.
    pub(super) fn add(&mut self, a: &[f32], b: &[f32], k: usize) {
        let (m, n) = (self.m, self.n);
        assert!(
            a.len() >= m * k && b.len() >= n * k,
            "row_dots: short factor"
        );
        if k == 0 || m == 0 || n == 0 {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `new` returned `Some` only where the CPU has AVX-512F, and the lengths
        // were checked above.
        unsafe {
            avx512::add_tiles(a, m, b, n, k, &mut self.sums)
        }
    }

    /// [`RowDots::add`] one lane at a time: the definition the vector loop must match bit
    /// for bit.
    #[cfg(test)]
    fn add_reference(&mut self, a: &[f32], b: &[f32], k: usize) {
        for i in 0..self.m {
            for j in 0..self.n {
                let s = &mut self.sums[i * self.n + j];
                for q in 0..k {
                    s[q % LANES] += a[i * k + q] * b[j * k + q];
                }
            }
        }
    }

    /// Writes the `m`×`n` result, row-major, into `out[..m·n]`.
    pub(super) fn finish(&self, out: &mut [f32]) {
        for (o, s) in out.iter_mut().zip(&self.sums) {
            *o = pairwise_sum(*s);
        }
    }
}

/// Whether this CPU runs the AVX-512 loop, i.e. whether [`RowDots::new`] gives `Some`.
pub(super) fn avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{LANES, TILE};
    use std::arch::x86_64::{
        __m512, _mm512_add_ps, _mm512_loadu_ps, _mm512_maskz_loadu_ps, _mm512_mul_ps,
        _mm512_setzero_ps, _mm512_storeu_ps,
    };

    /// [`super::RowDots::add`] over all 4×4 tiles. A last tile that runs past `m` (or `n`)
    /// repeats the last row, and the repeats' sums are dropped.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `a` holds `m·k` values and `b` `n·k`, `sums` `m·n` registers,
    /// and `m`, `n`, `k` are nonzero.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn add_tiles(
        a: &[f32],
        m: usize,
        b: &[f32],
        n: usize,
        k: usize,
        sums: &mut [[f32; LANES]],
    ) {
        for i0 in (0..m).step_by(TILE) {
            let rows: [&[f32]; TILE] = std::array::from_fn(|t| &a[(i0 + t).min(m - 1) * k..][..k]);
            for j0 in (0..n).step_by(TILE) {
                let cols: [&[f32]; TILE] =
                    std::array::from_fn(|u| &b[(j0 + u).min(n - 1) * k..][..k]);
                let at = |t: usize, u: usize| (i0 + t).min(m - 1) * n + (j0 + u).min(n - 1);
                let mut acc = [[_mm512_setzero_ps(); TILE]; TILE];
                for (t, row) in acc.iter_mut().enumerate() {
                    for (u, s) in row.iter_mut().enumerate() {
                        *s = load(&sums[at(t, u)]);
                    }
                }
                // SAFETY: each row holds `k` values (sliced above).
                unsafe { tile(&rows, &cols, k, &mut acc) };
                for (t, row) in acc.iter().enumerate() {
                    for (u, s) in row.iter().enumerate() {
                        if i0 + t < m && j0 + u < n {
                            // SAFETY: `sums[at(t, u)]` holds `LANES` floats.
                            unsafe { _mm512_storeu_ps(sums[at(t, u)].as_mut_ptr(), *s) };
                        }
                    }
                }
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    fn load(v: &[f32; LANES]) -> __m512 {
        // SAFETY: `v` holds `LANES` floats.
        unsafe { _mm512_loadu_ps(v.as_ptr()) }
    }

    /// `acc[t][u] += a[t][q..q+16] · b[u][q..q+16]` for every run of 16 `q`, the last run
    /// masked to the `k` values there are (masked lanes read as zero).
    ///
    /// # Safety
    /// Every row of `a` and `b` holds at least `k` values.
    #[target_feature(enable = "avx512f")]
    unsafe fn tile(
        a: &[&[f32]; TILE],
        b: &[&[f32]; TILE],
        k: usize,
        acc: &mut [[__m512; TILE]; TILE],
    ) {
        let (pa, pb) = (a.map(|r| r.as_ptr()), b.map(|r| r.as_ptr()));
        let full = k - k % LANES;
        let (mut va, mut vb) = ([_mm512_setzero_ps(); TILE], [_mm512_setzero_ps(); TILE]);
        let mut q = 0;
        while q < full {
            // SAFETY (both loops): q + 16 ≤ full ≤ k.
            for (v, &p) in va.iter_mut().zip(&pa) {
                *v = unsafe { _mm512_loadu_ps(p.add(q)) };
            }
            for (v, &p) in vb.iter_mut().zip(&pb) {
                *v = unsafe { _mm512_loadu_ps(p.add(q)) };
            }
            step(acc, &va, &vb);
            q += LANES;
        }
        if full < k {
            let mask = (1u16 << (k - full)) - 1;
            // SAFETY (both loops): the mask selects the k − full < 16 values from `full` on,
            // which lie inside each row; masked-out lanes are neither read nor faulted on.
            for (v, &p) in va.iter_mut().zip(&pa) {
                *v = unsafe { _mm512_maskz_loadu_ps(mask, p.add(full)) };
            }
            for (v, &p) in vb.iter_mut().zip(&pb) {
                *v = unsafe { _mm512_maskz_loadu_ps(mask, p.add(full)) };
            }
            step(acc, &va, &vb);
        }
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    fn step(acc: &mut [[__m512; TILE]; TILE], a: &[__m512; TILE], b: &[__m512; TILE]) {
        for (row, &va) in acc.iter_mut().zip(a) {
            for (s, &vb) in row.iter_mut().zip(b) {
                *s = _mm512_add_ps(*s, _mm512_mul_ps(va, vb));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..len)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Sums over three pairs equal the lane-at-a-time definition bit for bit, and the plain
    /// double-precision sum to f32 rounding, on sizes that are and are not multiples of the
    /// tile and of the register (`k` below one register included).
    #[test]
    fn sums_of_products_match_the_definition() {
        let Some(_) = RowDots::new(1, 1) else {
            eprintln!("row_dots: this CPU lacks AVX-512; the filter gradient keeps to gemm");
            return;
        };
        let sizes = [
            (4, 4, 16),
            (16, 16, 1024),
            (5, 3, 49),
            (1, 7, 196),
            (9, 27, 15),
            (3, 1, 1),
        ];
        for (m, n, k) in sizes {
            let pairs: Vec<(Vec<f32>, Vec<f32>)> = (0..3)
                .map(|p| (pseudo(m * k, 2 * p), pseudo(n * k, 2 * p + 1)))
                .collect();
            let (mut fast, mut slow) = (RowDots::new(m, n).unwrap(), RowDots::new(m, n).unwrap());
            for (a, b) in &pairs {
                fast.add(a, b, k);
                slow.add_reference(a, b, k);
            }
            let (mut got, mut want) = (vec![f32::NAN; m * n], vec![f32::NAN; m * n]);
            fast.finish(&mut got);
            slow.finish(&mut want);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(
                    g.to_bits(),
                    w.to_bits(),
                    "{m}x{n}x{k}, output {i}: {g} vs {w}"
                );
                let (r, c) = (i / n, i % n);
                let exact: f64 = pairs
                    .iter()
                    .flat_map(|(a, b)| {
                        (0..k).map(move |q| a[r * k + q] as f64 * b[c * k + q] as f64)
                    })
                    .sum();
                assert!(
                    (exact - *g as f64).abs() <= 1e-5 * (3 * k) as f64,
                    "{m}x{n}x{k}: {g} vs {exact}"
                );
            }
        }
    }
}
