//! The NumPy source (`Data::Npy`): image and label arrays in `.npy` files or `.npz`
//! archives, read with the `npyz` crate (and `zip` for archives).
//!
//! A path is a `.npy` file, or `archive.npz:name` for the array `name` of an archive
//! (`archive.npz` alone when it holds one array). Images are uint8 (0..=255) or float32
//! (0..=1, scaled by 255 and rounded: a value outside, or NaN, is an error naming the file
//! and the element), C order, shaped `[N, H, W]`, or `[N, H, W, C]` / `[N, C, H, W]` by the
//! layout with C = 1 or 3. Labels are `[N]` of any integer type, none negative, each below
//! the class count. Every image goes through [`super::decode::prepare`], so arrays of
//! another size or channel count are resized and converted exactly as image files are.
//! The bytes an array's header declares are checked against the file before anything is
//! allocated.

use std::io::Read;
use std::path::{Path, PathBuf};

use image::DynamicImage;
use npyz::{DType, Order, TypeChar};
use rayon::prelude::*;

use super::{Dataset, data_err};
use crate::error::Result;
use crate::spec::pipeline::{ImageOptions, Layout};
use crate::spec::space::Input;

/// The file of a path (`a.npz:x` → `a.npz`), for messages and keys.
pub fn file_of(base: &Path, spec: &str) -> PathBuf {
    base.join(split(spec).0)
}

/// `a.npz:x` → (`a.npz`, Some(`x`)); `a.npy` → (`a.npy`, None).
fn split(spec: &str) -> (&str, Option<&str>) {
    match spec.rsplit_once(':') {
        Some((file, name)) if file.to_ascii_lowercase().ends_with(".npz") => (file, Some(name)),
        _ => (spec, None),
    }
}

/// An array's shape, element type and bytes.
struct Array {
    /// What messages name: `a.npy` or `a.npz:x`.
    shown: PathBuf,
    shape: Vec<u64>,
    kind: (TypeChar, u64),
    bytes: Vec<u8>,
}

/// Reads one array, checked: C order, a plain numeric type, and as many bytes as the header
/// declares (before they are allocated).
fn read_array(base: &Path, spec: &str) -> Result<Array> {
    let (file, name) = split(spec);
    let path = base.join(file);
    let f = std::fs::File::open(&path)
        .map_err(|e| data_err(&path, format!("cannot open the array file: {e}")))?;
    if name.is_some() || file.to_ascii_lowercase().ends_with(".npz") {
        return read_npz_member(f, &path, name);
    }
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    read_npy(std::io::BufReader::new(f), path, len)
}

/// One array of an `.npz` archive; `None`: the only one.
fn read_npz_member(f: std::fs::File, path: &Path, name: Option<&str>) -> Result<Array> {
    let mut zip = zip::ZipArchive::new(f)
        .map_err(|e| data_err(path, format!("not a readable .npz (zip) archive: {e}")))?;
    let names: Vec<String> = zip
        .file_names()
        .filter_map(|n| n.ok())
        .map(|n| n.trim_end_matches(".npy").to_string())
        .collect();
    let name = match name {
        Some(n) => n.to_string(),
        None if names.len() == 1 => names[0].clone(),
        None => {
            return Err(data_err(
                path,
                format!(
                    "the archive holds {} arrays ({}); name one as `{}:NAME`",
                    names.len(),
                    names.join(", "),
                    path.display()
                ),
            ));
        }
    };
    let shown = PathBuf::from(format!("{}:{name}", path.display()));
    let member = zip.by_name(&format!("{name}.npy")).map_err(|_| {
        data_err(
            &shown,
            format!(
                "no array {name:?} in the archive; it holds {}",
                names.join(", ")
            ),
        )
    })?;
    let len = member.size();
    read_npy(member, shown, len)
}

/// Reads a `.npy` stream of `len` bytes in all.
fn read_npy(mut r: impl Read, shown: PathBuf, len: u64) -> Result<Array> {
    let header = npyz::NpyHeader::from_reader(&mut r)
        .map_err(|e| data_err(&shown, format!("not a readable .npy array: {e}")))?;
    let DType::Plain(ty) = header.dtype() else {
        return Err(data_err(
            &shown,
            "a structured array; expected plain numbers",
        ));
    };
    if header.order() == Order::Fortran {
        return Err(data_err(
            &shown,
            "a Fortran-order array; save it in C order (numpy.ascontiguousarray)",
        ));
    }
    let shape = header.shape().to_vec();
    let need = shape
        .iter()
        .try_fold(ty.size_field(), |a, &d| a.checked_mul(d))
        .filter(|&n| n <= len)
        .ok_or_else(|| {
            data_err(
                &shown,
                format!("the header declares {shape:?} of {ty}, more than the file's {len} bytes"),
            )
        })?;
    let mut bytes = Vec::with_capacity(need as usize);
    r.take(need)
        .read_to_end(&mut bytes)
        .map_err(|e| data_err(&shown, format!("cannot read the array: {e}")))?;
    if (bytes.len() as u64) < need {
        return Err(data_err(
            &shown,
            format!("truncated: {} of {need} data bytes", bytes.len()),
        ));
    }
    if ty.endianness() == npyz::Endianness::Big && ty.size_field() > 1 {
        for chunk in bytes.chunks_exact_mut(ty.size_field() as usize) {
            chunk.reverse();
        }
    }
    Ok(Array {
        shown,
        shape,
        kind: (ty.type_char(), ty.size_field()),
        bytes,
    })
}

/// The arrays of an `Npy` source, as the spec names them (relative to `base`).
#[derive(Debug, Clone, Copy)]
pub struct Paths<'a> {
    pub base: &'a Path,
    pub images: &'a str,
    pub labels: &'a str,
    pub test: Option<(&'a str, &'a str)>,
    pub layout: Layout,
    /// Class names given in the spec.
    pub classes: Option<&'a [String]>,
}

impl Paths<'_> {
    /// The files read, for the data's key.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut v = vec![
            file_of(self.base, self.images),
            file_of(self.base, self.labels),
        ];
        if let Some((i, l)) = self.test {
            v.push(file_of(self.base, i));
            v.push(file_of(self.base, l));
        }
        v
    }
}

/// The class names: the spec's, else `"0"` to the largest training label. Reads the label
/// arrays only.
pub fn classes(p: &Paths) -> Result<Vec<String>> {
    if let Some(c) = p.classes {
        return Ok(c.to_vec());
    }
    let a = read_array(p.base, p.labels)?;
    let labels = labels_of(&a, None)?;
    let max = labels
        .iter()
        .copied()
        .max()
        .ok_or_else(|| data_err(&a.shown, "no labels: the array is empty"))?;
    Ok((0..=max).map(|c| c.to_string()).collect())
}

/// Reads the training pair and the test pair, with `classes.len()` classes.
pub fn read(
    p: &Paths,
    opts: &ImageOptions,
    classes: &[String],
) -> Result<(Dataset, Option<Dataset>)> {
    let n = classes.len() as u32;
    let train = read_pair(p, p.images, p.labels, opts, n, "train")?;
    let test = p
        .test
        .map(|(i, l)| read_pair(p, i, l, opts, n, "test"))
        .transpose()?;
    Ok((train, test))
}

/// One (images, labels) pair as a data set.
fn read_pair(
    p: &Paths,
    images: &str,
    labels: &str,
    opts: &ImageOptions,
    classes: u32,
    part: &str,
) -> Result<Dataset> {
    let l = read_array(p.base, labels)?;
    let labels = labels_of(&l, Some(classes))?;
    let a = read_array(p.base, images)?;
    let (n, c, h, w) = image_shape(&a, p.layout)?;
    if n != labels.len() {
        return Err(data_err(
            &a.shown,
            format!(
                "{n} images, but {} has {} labels",
                l.shown.display(),
                labels.len()
            ),
        ));
    }
    let pixels = to_u8(a)?;
    let per = c * h * w;
    let images: Vec<u8> = (0..n)
        .into_par_iter()
        .flat_map_iter(|i| {
            let img = image_at(&pixels[i * per..(i + 1) * per], c, h, w, p.layout);
            super::decode::prepare(img, opts)
        })
        .collect();
    let input = Input {
        channels: opts.channels.value,
        size: opts.size.value,
        classes,
    };
    Dataset::new(format!("npy {part}"), input, images, labels)
}

/// `[N]` integer labels, none negative and each below `classes` when given.
fn labels_of(a: &Array, classes: Option<u32>) -> Result<Vec<u32>> {
    if a.shape.len() != 1 {
        return Err(data_err(
            &a.shown,
            format!(
                "labels shaped {:?}; expected one dimension [N] (numpy: labels.reshape(-1))",
                a.shape
            ),
        ));
    }
    let size = a.kind.1 as usize;
    let signed = match a.kind.0 {
        TypeChar::Int => true,
        TypeChar::Uint => false,
        _ => {
            return Err(data_err(
                &a.shown,
                format!("labels of type {:?}{size}; expected integers", a.kind.0),
            ));
        }
    };
    if ![1, 2, 4, 8].contains(&size) {
        return Err(data_err(
            &a.shown,
            format!("{size}-byte integers are not read"),
        ));
    }
    a.bytes
        .chunks_exact(size)
        .enumerate()
        .map(|(i, b)| {
            let v = int_le(b, signed);
            match u32::try_from(v) {
                Ok(l) if classes.is_none_or(|c| l < c) => Ok(l),
                _ => Err(data_err(
                    &a.shown,
                    format!(
                        "label {v} at index {i} is out of range{}",
                        classes
                            .map(|c| format!(": there are {c} classes (0..{c})"))
                            .unwrap_or_default()
                    ),
                )),
            }
        })
        .collect()
}

/// A little-endian integer of 1, 2, 4 or 8 bytes, as i128.
fn int_le(b: &[u8], signed: bool) -> i128 {
    let mut buf = [0u8; 16];
    buf[..b.len()].copy_from_slice(b);
    if signed && b[b.len() - 1] & 0x80 != 0 {
        buf[b.len()..].fill(0xff);
    }
    i128::from_le_bytes(buf)
}

/// (N, C, H, W) of an image array.
fn image_shape(a: &Array, layout: Layout) -> Result<(usize, usize, usize, usize)> {
    let s: Vec<usize> = a.shape.iter().map(|&d| d as usize).collect();
    let (n, c, h, w) = match (s.as_slice(), layout) {
        (&[n, h, w], _) => (n, 1, h, w),
        (&[n, h, w, c], Layout::Nhwc) => (n, c, h, w),
        (&[n, c, h, w], Layout::Nchw) => (n, c, h, w),
        _ => {
            return Err(data_err(
                &a.shown,
                format!(
                    "images shaped {:?}; expected [N, H, W] or {}",
                    a.shape,
                    match layout {
                        Layout::Nhwc => "[N, H, W, C] (layout: Nhwc)",
                        Layout::Nchw => "[N, C, H, W] (layout: Nchw)",
                    }
                ),
            ));
        }
    };
    if c != 1 && c != 3 {
        return Err(data_err(
            &a.shown,
            format!(
                "images shaped {:?} have {c} channels by layout {layout:?}; expected 1 or 3 \
                 (is the layout right?)",
                a.shape
            ),
        ));
    }
    if n == 0 || h == 0 || w == 0 {
        return Err(data_err(
            &a.shown,
            format!("no images: shaped {:?}", a.shape),
        ));
    }
    Ok((n, c, h, w))
}

/// The pixels as u8: uint8 as they are, float32 in 0..=1 times 255, rounded.
fn to_u8(a: Array) -> Result<Vec<u8>> {
    match a.kind {
        (TypeChar::Uint, 1) => Ok(a.bytes),
        (TypeChar::Float, 4) => a
            .bytes
            .chunks_exact(4)
            .enumerate()
            .map(|(i, b)| {
                let v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                if (0.0..=1.0).contains(&v) {
                    Ok((v * 255.0).round() as u8)
                } else {
                    Err(data_err(
                        &a.shown,
                        format!(
                            "float32 element {i} is {v}; float32 images must be in 0..=1 \
                             (divide by 255, or save them as uint8)"
                        ),
                    ))
                }
            })
            .collect(),
        (t, size) => Err(data_err(
            &a.shown,
            format!("images of type {t:?}{size}; expected uint8 or float32"),
        )),
    }
}

/// One image of `C×H×W` u8 values in the layout's axis order, as an image.
fn image_at(px: &[u8], c: usize, h: usize, w: usize, layout: Layout) -> DynamicImage {
    let (wu, hu) = (w as u32, h as u32);
    if c == 1 {
        let buf = image::GrayImage::from_raw(wu, hu, px.to_vec()).expect("h*w bytes");
        return DynamicImage::ImageLuma8(buf);
    }
    let hwc = match layout {
        Layout::Nhwc => px.to_vec(),
        Layout::Nchw => {
            let n = h * w;
            (0..n)
                .flat_map(|i| [px[i], px[n + i], px[2 * n + i]])
                .collect()
        }
    };
    DynamicImage::ImageRgb8(image::RgbImage::from_raw(wu, hu, hwc).expect("h*w*3 bytes"))
}
