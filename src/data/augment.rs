//! Training-time augmentation as in DARTS: random crop after zero padding, random
//! horizontal flip, then (after normalisation) cutout.
//!
//! Order per image: crop the raw image padded with `crop_padding` zero pixels on every side
//! back to its size at a uniformly random offset; flip it left-right with probability 1/2;
//! normalise; zero a `cutout`×`cutout` square (all channels) centred at a uniformly random
//! pixel, clipped at the borders. Zero padding happens on raw pixels (black, which
//! normalises to `-mean / std`), and cutout's zeros are in normalised units, as in the
//! DARTS reference code. For an odd `cutout` the square spans `cutout / 2` pixels before
//! the centre and `cutout / 2` after it; for an even one, one fewer after.
//!
//! The random choices of one image are a [`Draw`]; the functions that apply them are pure.

use rand_chacha::rand_core::RngCore;

use super::Normalize;
use super::rng::below;
use crate::spec::pipeline::Augment;

/// The random choices for one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Draw {
    /// Crop offset in the padded image, `0..=2 * crop_padding`.
    pub dy: usize,
    pub dx: usize,
    /// Flip left-right.
    pub flip: bool,
    /// Cutout centre, `0..size`.
    pub cy: usize,
    pub cx: usize,
}

impl Draw {
    /// Draws the choices in a fixed order (dy, dx, flip, cy, cx), all of them whatever is
    /// enabled, so enabling one augmentation does not change the others' draws.
    pub fn new(rng: &mut impl RngCore, aug: &Augment, size: usize) -> Draw {
        let span = 2 * u64::from(aug.crop_padding) + 1;
        Draw {
            dy: below(rng, span) as usize,
            dx: below(rng, span) as usize,
            flip: below(rng, 2) == 1,
            cy: below(rng, size as u64) as usize,
            cx: below(rng, size as u64) as usize,
        }
    }
}

/// Makes one training image: crop and flip `src` (raw u8 `[C, H, W]`) as `draw` says,
/// normalise into `dst` (f32, same length), then cut out. `tmp` is scratch space. Parts of
/// `draw` that `aug` disables are ignored; crop offsets are clamped to `2 * crop_padding`.
pub fn apply(
    aug: &Augment,
    draw: &Draw,
    size: usize,
    normalize: &Normalize,
    src: &[u8],
    tmp: &mut Vec<u8>,
    dst: &mut [f32],
) {
    let channels = normalize.channels();
    let pad = aug.crop_padding as usize;
    tmp.clear();
    tmp.resize(src.len(), 0);
    crop(
        src,
        channels,
        size,
        pad,
        draw.dy.min(2 * pad),
        draw.dx.min(2 * pad),
        tmp,
    );
    if aug.flip && draw.flip {
        flip(tmp, channels, size);
    }
    normalize.apply(tmp, dst);
    cutout(dst, channels, size, aug.cutout as usize, draw.cy, draw.cx);
}

/// `dst = crop(pad(src, pad), dy, dx)`: the `size`×`size` window at offset (dy, dx) of `src`
/// surrounded by `pad` default (zero) pixels. With `pad = 0` (and so dy = dx = 0) it is a
/// copy.
///
/// # Shapes
///
/// `src` and `dst`: `[channels, size, size]`.
pub fn crop<T: Copy + Default>(
    src: &[T],
    channels: usize,
    size: usize,
    pad: usize,
    dy: usize,
    dx: usize,
    dst: &mut [T],
) {
    for c in 0..channels {
        let plane = &src[c * size * size..(c + 1) * size * size];
        for y in 0..size {
            let row = &mut dst[(c * size + y) * size..(c * size + y + 1) * size];
            let sy = (y + dy).wrapping_sub(pad);
            if sy >= size {
                row.fill(T::default());
                continue;
            }
            for (x, out) in row.iter_mut().enumerate() {
                let sx = (x + dx).wrapping_sub(pad);
                *out = if sx < size {
                    plane[sy * size + sx]
                } else {
                    T::default()
                };
            }
        }
    }
}

/// Flips every row of `img` left-right, in place.
///
/// # Shapes
///
/// `img`: `[channels, size, size]`.
pub fn flip<T>(img: &mut [T], channels: usize, size: usize) {
    for row in img[..channels * size * size].chunks_exact_mut(size) {
        row.reverse();
    }
}

/// Zeroes the `len`×`len` square centred at (cy, cx), clipped at the borders, in every
/// channel. `len = 0` changes nothing.
///
/// # Shapes
///
/// `img`: `[channels, size, size]`.
pub fn cutout(img: &mut [f32], channels: usize, size: usize, len: usize, cy: usize, cx: usize) {
    if len == 0 {
        return;
    }
    let (y0, y1) = cutout_range(cy, len, size);
    let (x0, x1) = cutout_range(cx, len, size);
    for c in 0..channels {
        for y in y0..y1 {
            let row = (c * size + y) * size;
            img[row + x0..row + x1].fill(0.0);
        }
    }
}

/// The clipped half-open range `[centre - len/2, centre - len/2 + len) ∩ [0, size)`.
fn cutout_range(centre: usize, len: usize, size: usize) -> (usize, usize) {
    let lo = centre as isize - (len / 2) as isize;
    let hi = lo + len as isize;
    (
        lo.clamp(0, size as isize) as usize,
        hi.clamp(0, size as isize) as usize,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::rng::derive;

    fn image(channels: usize, size: usize) -> Vec<u8> {
        (0..channels * size * size)
            .map(|i| (i % 251) as u8 + 1)
            .collect()
    }

    #[test]
    fn flip_twice_is_the_identity() {
        let src = image(3, 5);
        let mut img = src.clone();
        flip(&mut img, 3, 5);
        assert_ne!(img, src);
        assert_eq!(&img[..5], &[5, 4, 3, 2, 1]);
        flip(&mut img, 3, 5);
        assert_eq!(img, src);
    }

    #[test]
    fn crop_with_padding_zero_is_the_identity() {
        let src = image(2, 6);
        let mut dst = vec![0; src.len()];
        crop(&src, 2, 6, 0, 0, 0, &mut dst);
        assert_eq!(dst, src);
        // Padding 2 at the centre offset is the identity too.
        crop(&src, 2, 6, 2, 2, 2, &mut dst);
        assert_eq!(dst, src);
    }

    #[test]
    fn crop_shifts_in_zeros() {
        // 1 channel 3×3: 1..=9. Offset (0, 0) with pad 1 shifts down-right by one.
        let src: Vec<u8> = (1..=9).collect();
        let mut dst = vec![0; 9];
        crop(&src, 1, 3, 1, 0, 0, &mut dst);
        assert_eq!(dst, [0, 0, 0, 0, 1, 2, 0, 4, 5]);
        crop(&src, 1, 3, 1, 2, 1, &mut dst);
        assert_eq!(dst, [4, 5, 6, 7, 8, 9, 0, 0, 0]);
        crop(&src, 1, 3, 5, 0, 0, &mut dst);
        assert_eq!(dst, [0; 9]);
    }

    #[test]
    fn cutout_zeroes_exactly_the_clipped_square() {
        let (channels, size) = (2, 7);
        for (len, cy, cx) in [(3, 3, 3), (4, 0, 6), (2, 6, 0), (16, 2, 5), (1, 4, 1)] {
            let mut img = vec![1.0f32; channels * size * size];
            cutout(&mut img, channels, size, len, cy, cx);
            let (lo_y, lo_x) = (
                cy as isize - (len / 2) as isize,
                cx as isize - (len / 2) as isize,
            );
            for c in 0..channels {
                for y in 0..size {
                    for x in 0..size {
                        let (yi, xi) = (y as isize, x as isize);
                        let inside = yi >= lo_y
                            && yi < lo_y + len as isize
                            && xi >= lo_x
                            && xi < lo_x + len as isize;
                        let v = img[(c * size + y) * size + x];
                        assert_eq!(v == 0.0, inside, "len {len} at ({cy}, {cx}): ({y}, {x})");
                    }
                }
            }
        }
        // An unclipped odd square has len² zeros per channel.
        let mut img = vec![1.0f32; size * size];
        cutout(&mut img, 1, size, 3, 3, 3);
        assert_eq!(img.iter().filter(|v| **v == 0.0).count(), 9);
        let mut img = vec![1.0f32; size * size];
        cutout(&mut img, 1, size, 0, 3, 3);
        assert!(img.iter().all(|v| *v == 1.0));
    }

    #[test]
    fn draws_stay_in_range_and_apply_composes() {
        let aug = Augment {
            crop_padding: 2,
            flip: true,
            cutout: 2,
        };
        let mut rng = derive(1, 0, 0);
        let mut flips = 0;
        for _ in 0..200 {
            let d = Draw::new(&mut rng, &aug, 5);
            assert!(d.dy <= 4 && d.dx <= 4 && d.cy < 5 && d.cx < 5);
            flips += usize::from(d.flip);
        }
        assert!((60..140).contains(&flips), "{flips}");

        let src = image(1, 5);
        let draw = Draw {
            dy: 2,
            dx: 2,
            flip: true,
            cy: 0,
            cx: 0,
        };
        let mut tmp = Vec::new();
        let mut out = vec![0f32; 25];
        let id = Normalize::identity(1);
        apply(&aug, &draw, 5, &id, &src, &mut tmp, &mut out);
        let mut expected: Vec<f32> = src.iter().map(|p| f32::from(*p) / 255.0).collect();
        flip(&mut expected, 1, 5);
        expected[0] = 0.0; // the 2×2 square at (0, 0) clipped to its one pixel
        let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6);
        assert!(close(&out, &expected), "{out:?} {expected:?}");
        // Disabled augmentations ignore the draw.
        apply(&Augment::default(), &draw, 5, &id, &src, &mut tmp, &mut out);
        let plain: Vec<f32> = src.iter().map(|p| f32::from(*p) / 255.0).collect();
        assert!(close(&out, &plain), "{out:?} {plain:?}");
    }
}
