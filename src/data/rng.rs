//! Seeded random generators derived from (seed, epoch, stream, ...) and exact bounded draws.
//!
//! Nothing random is ever saved: a generator is rebuilt from the values that identify its
//! use, so epoch `e`'s shuffle and augmentation are the same whether or not the process
//! restarted before it. Draws use only ChaCha8's output words (stable by specification) and
//! the arithmetic here, not `rand`'s distribution code, so results do not depend on the
//! `rand` version.

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

/// Mixes any number of 64-bit values into one, with SplitMix64's finaliser after each
/// value. Different lengths or orders give unrelated results.
pub fn mix(parts: &[u64]) -> u64 {
    let mut h = splitmix(0x6e61_732d_7069_7065 ^ parts.len() as u64);
    for &p in parts {
        h = splitmix(h ^ p);
    }
    h
}

/// The generator of one (seed, epoch, stream): `ChaCha8Rng::seed_from_u64(mix([seed,
/// epoch, stream]))`. Give each consumer of randomness its own stream id.
pub fn derive(seed: u64, epoch: u64, stream: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(mix(&[seed, epoch, stream]))
}

/// A uniform integer in `0..n` (Lemire's multiply-and-reject method, unbiased). Returns 0
/// when `n` is 0.
pub fn below(rng: &mut impl RngCore, n: u64) -> u64 {
    if n == 0 {
        return 0;
    }
    let mut m = u128::from(rng.next_u64()) * u128::from(n);
    if (m as u64) < n {
        let threshold = n.wrapping_neg() % n;
        while (m as u64) < threshold {
            m = u128::from(rng.next_u64()) * u128::from(n);
        }
    }
    (m >> 64) as u64
}

/// Shuffles `items` in place (Fisher–Yates with [`below`]).
pub fn shuffle<T>(rng: &mut impl RngCore, items: &mut [T]) {
    for i in (1..items.len()).rev() {
        let j = below(rng, i as u64 + 1) as usize;
        items.swap(i, j);
    }
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_separates_parts() {
        assert_ne!(mix(&[1, 2]), mix(&[2, 1]));
        assert_ne!(mix(&[0]), mix(&[0, 0]));
        assert_eq!(mix(&[3, 4, 5]), mix(&[3, 4, 5]));
    }

    #[test]
    fn derive_is_a_pure_function() {
        let a: Vec<u64> = (0..4).map(|_| derive(1, 2, 3).next_u64()).collect();
        assert!(a.iter().all(|x| *x == a[0]));
        assert_ne!(derive(1, 2, 3).next_u64(), derive(1, 3, 3).next_u64());
        assert_ne!(derive(1, 2, 3).next_u64(), derive(1, 2, 4).next_u64());
    }

    #[test]
    fn below_is_in_range_and_roughly_uniform() {
        let mut rng = derive(0, 0, 0);
        let mut counts = [0u32; 7];
        for _ in 0..70_000 {
            counts[below(&mut rng, 7) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (9_000..11_000).contains(&c)),
            "{counts:?}"
        );
        assert_eq!(below(&mut rng, 1), 0);
        assert_eq!(below(&mut rng, 0), 0);
    }

    #[test]
    fn shuffle_is_a_permutation() {
        let mut v: Vec<u32> = (0..100).collect();
        shuffle(&mut derive(5, 0, 0), &mut v);
        assert_ne!(v, (0..100).collect::<Vec<_>>());
        v.sort();
        assert_eq!(v, (0..100).collect::<Vec<_>>());
    }
}
