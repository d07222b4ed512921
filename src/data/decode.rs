//! Decoding and preparing images: the one definition of what an image file becomes before a
//! network sees it, shared by every image source (and by inference on images).
//!
//! Owns [`prepare`] (channels, resize, u8 `[C, H, W]`), [`decode_file`] (any format the
//! `image` crate reads here: PNG, JPEG, BMP, WebP, GIF's first frame) and [`decode_all`],
//! which decodes a list of files in parallel with a progress bar and either stops at the
//! first unreadable file (an error naming it) or skips it and says so.

use std::path::{Path, PathBuf};

use image::imageops::{self, FilterType};
use image::{DynamicImage, GenericImageView, ImageBuffer, Pixel};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::data_err;
use crate::error::{Error, Result};
use crate::spec::pipeline::{ImageOptions, Resize};

/// The resampling filter of every resize: Catmull-Rom (bicubic), whose support widens with
/// the scale so that shrinking averages rather than aliases.
pub const FILTER: FilterType = FilterType::CatmullRom;

/// Brings one decoded image to what the network sees: `opts.channels` channels (RGB to
/// grayscale by ITU-R BT.601 luma, grayscale to RGB by repetition, alpha dropped, 16-bit
/// and float images scaled to 8 bits), then `opts.size`×`opts.size` by `opts.resize`.
///
/// # Shapes
///
/// Returns u8 `[C, H, W]` (planes, row-major), `C = opts.channels`, `H = W = opts.size`.
pub fn prepare(img: DynamicImage, opts: &ImageOptions) -> Vec<u8> {
    let size = opts.size.value;
    if opts.channels.value == 1 {
        let gray = fit(to_gray(img), size, opts.resize);
        gray.into_raw()
    } else {
        let rgb = fit(img.into_rgb8(), size, opts.resize);
        planes(&rgb)
    }
}

/// Resizes `img` to `size`×`size`: the centre square then a resize (`Crop`), or a resize of
/// the whole image (`Stretch`). An image already that size is returned as it is.
fn fit<P>(img: ImageBuffer<P, Vec<u8>>, size: u32, resize: Resize) -> ImageBuffer<P, Vec<u8>>
where
    P: Pixel<Subpixel = u8> + 'static,
{
    let (w, h) = img.dimensions();
    if w == size && h == size {
        return img;
    }
    match resize {
        Resize::Stretch => imageops::resize(&img, size, size, FILTER),
        Resize::Crop => {
            let side = w.min(h);
            let square = img.view((w - side) / 2, (h - side) / 2, side, side);
            if side == size {
                square.to_image()
            } else {
                imageops::resize(&*square, size, size, FILTER)
            }
        }
    }
}

/// A grey image as it is (8 bits), a colour image by BT.601 luma with Pillow's rounding
/// (`L = (19595 R + 38470 G + 7471 B + 2^15) >> 16`), so that Pillow's `convert("L")` gives
/// the same bytes.
fn to_gray(img: DynamicImage) -> image::GrayImage {
    use DynamicImage::*;
    match img {
        ImageLuma8(_) | ImageLumaA8(_) | ImageLuma16(_) | ImageLumaA16(_) => img.into_luma8(),
        colour => {
            let rgb = colour.into_rgb8();
            let (w, h) = rgb.dimensions();
            let px = rgb
                .as_raw()
                .chunks_exact(3)
                .map(|p| {
                    let l = 19595 * p[0] as u32 + 38470 * p[1] as u32 + 7471 * p[2] as u32;
                    ((l + (1 << 15)) >> 16) as u8
                })
                .collect();
            image::GrayImage::from_raw(w, h, px).expect("one byte per pixel")
        }
    }
}

/// An interleaved RGB image as three planes: u8 `[3, H, W]`.
fn planes(rgb: &image::RgbImage) -> Vec<u8> {
    let n = (rgb.width() * rgb.height()) as usize;
    let mut out = vec![0u8; 3 * n];
    for (i, px) in rgb.as_raw().chunks_exact(3).enumerate() {
        out[i] = px[0];
        out[n + i] = px[1];
        out[2 * n + i] = px[2];
    }
    out
}

/// Decodes one image file, its format known from its first bytes (not its name). Errors
/// name the file and say what is wrong (not a regular file, empty, unreadable, unknown
/// format, truncated, too large).
pub fn decode_file(path: &Path) -> Result<DynamicImage> {
    if crate::fsutil::regular_file(path, "an image")?.len() == 0 {
        return Err(data_err(path, "not an image: the file is empty"));
    }
    let file = std::fs::File::open(path)
        .map_err(|e| data_err(path, format!("cannot open the image: {e}")))?;
    let reader = image::ImageReader::new(std::io::BufReader::new(file))
        .with_guessed_format()
        .map_err(|e| data_err(path, format!("cannot read the image: {e}")))?;
    if reader.format().is_none() {
        return Err(data_err(
            path,
            "not an image in a format this build reads (PNG, JPEG, BMP, WebP, GIF)",
        ));
    }
    reader
        .decode()
        .map_err(|e| data_err(path, format!("cannot decode the image: {e}")))
}

/// One image to decode: its file and, for a manifest, the 1-based row that names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub path: PathBuf,
    pub label: u32,
    pub row: Option<usize>,
}

/// A file left out under `skip_unreadable`, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    pub path: PathBuf,
    /// The manifest row that names the file, 1-based.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row: Option<usize>,
    /// The element of an array file (an `Npy` source's image or label), 0-based.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    pub reason: String,
}

/// What [`decode_all`] made of a list of files.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// u8 `[N, C, H, W]` of the images kept, in the list's order.
    pub images: Vec<u8>,
    /// Their labels.
    pub labels: Vec<u32>,
    /// The files left out (only under `skip_unreadable`).
    pub skipped: Vec<Skipped>,
}

/// Decodes and prepares `items` in parallel (rayon's threads), with a progress bar labelled
/// `what`. Without `opts.skip_unreadable`, the first unreadable file in list order is an
/// error naming it (and its manifest row); with it, such files are left out and listed.
pub fn decode_all(items: &[Item], opts: &ImageOptions, what: &str, show: bool) -> Result<Decoded> {
    let bar = crate::progress::images(show, items.len(), what);
    let results: Vec<Result<Vec<u8>>> = items
        .par_iter()
        .map(|item| {
            let out = decode_file(&item.path).map(|img| prepare(img, opts));
            bar.inc(1);
            out
        })
        .collect();
    bar.finish_and_clear();
    let per = (opts.channels.value * opts.size.value * opts.size.value) as usize;
    let mut decoded = Decoded {
        images: Vec::with_capacity(per * items.len()),
        labels: Vec::with_capacity(items.len()),
        skipped: Vec::new(),
    };
    for (item, result) in items.iter().zip(results) {
        match result {
            Ok(pixels) => {
                decoded.images.extend_from_slice(&pixels);
                decoded.labels.push(item.label);
            }
            Err(e) if opts.skip_unreadable => decoded.skipped.push(Skipped {
                path: item.path.clone(),
                row: item.row,
                index: None,
                reason: reason(&e),
            }),
            Err(e) => return Err(with_row(e, item.row)),
        }
    }
    Ok(decoded)
}

/// The message of an error about a file, without the file.
fn reason(e: &Error) -> String {
    match e {
        Error::Data { message, .. } => message.clone(),
        Error::Io { source, .. } => source.to_string(),
        other => other.to_string(),
    }
}

/// Adds the manifest row that named the file to an error about it (a data error, or an
/// I/O one such as a path that is not a regular file), and the way out.
fn with_row(e: Error, row: Option<usize>) -> Error {
    let (path, message) = match e {
        Error::Data { path, message } => (path, message),
        Error::Io { path, source } => (path, source.to_string()),
        other => return other,
    };
    let at = row
        .map(|r| format!(" (manifest row {r})"))
        .unwrap_or_default();
    Error::Data {
        path,
        message: format!(
            "{message}{at}\n  = help: fix or remove the file, or set \
             `skip_unreadable: true` in the data's `image` options to skip such files"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Spanned;

    pub(crate) fn opts(size: u32, channels: u32, resize: Resize) -> ImageOptions {
        ImageOptions {
            size: Spanned::unspanned(size),
            channels: Spanned::unspanned(channels),
            resize,
            limit: None,
            skip_unreadable: false,
            class_names: None,
        }
    }

    #[test]
    fn gray_of_the_right_size_is_kept_exactly() {
        let px: Vec<u8> = (0..16).map(|i| i * 10).collect();
        let img = DynamicImage::ImageLuma8(image::GrayImage::from_raw(4, 4, px.clone()).unwrap());
        assert_eq!(prepare(img, &opts(4, 1, Resize::Crop)), px);
    }

    #[test]
    fn rgb_becomes_planes_and_gray_is_repeated() {
        let img = image::RgbImage::from_raw(2, 1, vec![1, 2, 3, 4, 5, 6]).unwrap();
        let out = prepare(DynamicImage::ImageRgb8(img), &opts(0, 3, Resize::Crop));
        assert_eq!(out, Vec::<u8>::new(), "size 0 gives no pixels");
        let img = image::RgbImage::from_raw(1, 1, vec![1, 2, 3]).unwrap();
        assert_eq!(
            prepare(DynamicImage::ImageRgb8(img), &opts(1, 3, Resize::Crop)),
            vec![1, 2, 3]
        );
        let img = image::RgbImage::from_raw(2, 2, (1..=12).collect()).unwrap();
        assert_eq!(
            prepare(DynamicImage::ImageRgb8(img), &opts(2, 3, Resize::Crop)),
            vec![1, 4, 7, 10, 2, 5, 8, 11, 3, 6, 9, 12]
        );
        let img = image::RgbImage::from_raw(1, 1, vec![220, 30, 30]).unwrap();
        // Pillow: (19595·220 + 38470·30 + 7471·30 + 32768) >> 16 = 87.
        assert_eq!(
            prepare(DynamicImage::ImageRgb8(img), &opts(1, 1, Resize::Crop)),
            vec![87]
        );
        let gray = image::GrayImage::from_raw(1, 1, vec![77]).unwrap();
        assert_eq!(
            prepare(DynamicImage::ImageLuma8(gray), &opts(1, 3, Resize::Crop)),
            vec![77, 77, 77]
        );
    }

    #[test]
    fn crop_takes_the_centre_and_stretch_the_whole() {
        // 3 wide, 1 high: left black, centre 200, right white.
        let img = image::GrayImage::from_raw(3, 1, vec![0, 200, 255]).unwrap();
        let crop = prepare(
            DynamicImage::ImageLuma8(img.clone()),
            &opts(1, 1, Resize::Crop),
        );
        assert_eq!(crop, vec![200]);
        let stretch = prepare(DynamicImage::ImageLuma8(img), &opts(1, 1, Resize::Stretch));
        assert_eq!(stretch.len(), 1);
        assert!(
            stretch[0] != 200,
            "stretch averages the whole row: {stretch:?}"
        );
        // A flat image stays flat under any resize.
        let flat = image::RgbImage::from_pixel(37, 23, image::Rgb([10, 20, 30]));
        for r in [Resize::Crop, Resize::Stretch] {
            let out = prepare(DynamicImage::ImageRgb8(flat.clone()), &opts(8, 3, r));
            assert_eq!(out.len(), 3 * 64);
            assert!(out[..64].iter().all(|&v| v == 10), "{r:?}");
            assert!(out[128..].iter().all(|&v| v == 30), "{r:?}");
        }
    }

    #[test]
    fn unreadable_files_name_themselves_or_are_skipped() {
        let dir = crate::fsutil::TempDir::new("decode");
        let good = dir.0.join("a.png");
        image::GrayImage::from_pixel(3, 3, image::Luma([9]))
            .save(&good)
            .unwrap();
        let bad = dir.0.join("b.png");
        let bytes = std::fs::read(&good).unwrap();
        std::fs::write(&bad, &bytes[..bytes.len() / 2]).unwrap();
        let text = dir.0.join("c.png");
        std::fs::write(&text, "not an image").unwrap();
        let items: Vec<Item> = [&good, &bad, &text]
            .iter()
            .enumerate()
            .map(|(i, p)| Item {
                path: p.to_path_buf(),
                label: i as u32,
                row: Some(i + 2),
            })
            .collect();
        let mut o = opts(3, 1, Resize::Crop);
        let e = decode_all(&items, &o, "t", false).unwrap_err().to_string();
        assert!(e.contains("b.png") && e.contains("row 3"), "{e}");
        o.skip_unreadable = true;
        let d = decode_all(&items, &o, "t", false).unwrap();
        assert_eq!(d.labels, vec![0]);
        assert_eq!(d.images, vec![9; 9]);
        assert_eq!(d.skipped.len(), 2);
        assert_eq!(d.skipped[1].path, text);
        // Known from its first bytes, not its name: not a PNG that fails to decode.
        assert!(
            d.skipped[1].reason.contains("not an image in a format"),
            "{:?}",
            d.skipped
        );
        assert!(
            d.skipped[0].reason.contains("cannot decode"),
            "{:?}",
            d.skipped
        );
    }
}
